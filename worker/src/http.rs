//! The HTTP stage: HTTP/1.1 with rproxy's own codec ([`crate::h1::conn`]) on a client stream,
//! whatever the stream is (plain TCP or TLS). On a server with `passthrough` rules, a
//! connection's first request head is read by [`crate::passthrough`] first. HTTP/2 (TLS
//! clients that chose `h2` by ALPN) is hyper's HTTP/2 server on this worker's `LocalSet`,
//! handing its requests to [`crate::forward::handle`], so they reach the same downstream pool
//! under the same header rules.

use std::rc::Rc;

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};

use http::header::HOST;
use http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::ProxyBody;
use crate::forward::handle;
use crate::h1::conn::{ReadReady, Served};
use crate::metrics::{Counted, OpenConn};
use crate::net::TcpStream;
use crate::server::ServerCtx;
use crate::state::ConnGuard;
use crate::timed_io::{TimedIo, WriteLimit};
use crate::tls::ConnInfo;
use crate::{h1, parked, passthrough};

/// One client connection, as the request stages see it.
pub struct Conn {
    pub server: Rc<ServerCtx>,
    pub info: ConnInfo,
    /// The client write timeout of the response being written, when a rule of the server
    /// overrides it (`None` otherwise: the server's, fixed for the connection).
    pub write_limit: Option<WriteLimit>,
}

impl Conn {
    pub fn new(server: Rc<ServerCtx>, info: ConnInfo) -> Conn {
        let write_limit = server
            .routes
            .any_write_override()
            .then(|| WriteLimit::new(server.routes.connection_timeouts().write));
        Conn {
            server,
            info,
            write_limit,
        }
    }
}

/// Serve HTTP/1.1 on `stream` until either side closes, or (plain TCP) until it has been idle
/// long enough to be parked: then it is handed back with its deadline ([`h1::conn::Served`]).
/// `resumed`: the connection comes back from the idle set (its first request is behind it).
pub async fn serve<S>(
    stream: S,
    conn: &Rc<Conn>,
    resumed: Option<Option<tokio::time::Instant>>,
) -> Served<S>
where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin,
{
    let (stream, first) = if resumed.is_none() && conn.server.routes.any_passthrough() {
        // Boxed, and freed once the first head is read: its state (a header array) would
        // otherwise be part of every connection's task for the connection's life.
        match Box::pin(passthrough::first_request(stream, conn)).await {
            Some(rest) => rest,
            None => return Served::Closed,
        }
    } else {
        (stream, Vec::new())
    };
    // One call site: a second would add a second codec state to every connection's task.
    h1::conn::serve(stream, Rc::clone(conn), first, resumed).await
}

/// A plain TCP client connection's task, from its accept (`resumed` `None`) or from the idle
/// set: HTTP/1.1 until it closes or is parked ([`crate::parked`]).
pub async fn serve_plain(
    stream: TcpStream,
    conn: Rc<Conn>,
    guard: ConnGuard,
    open: OpenConn,
    resumed: Option<Option<tokio::time::Instant>>,
) {
    let stream = Counted::new(stream, conn.server.index);
    if let Served::Idle(stream, deadline) = serve(stream, &conn, resumed).await {
        if let Some(socket) = stream.into_parked() {
            parked::park(socket, conn, deadline, guard, open);
        }
    }
}

/// Streams one HTTP/2 client may have open at once.
const MAX_STREAMS: u32 = 100;

/// Serve HTTP/2 on `stream` until either side closes. When the worker drains, or when the
/// connection has had no stream for a whole `read-timeout`, the client gets GOAWAY and the
/// streams in flight finish.
pub async fn serve_h2<S>(stream: S, conn: Rc<Conn>, _guard: ConnGuard)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let timeouts = conn.server.routes.connection_timeouts();
    let io = TokioIo::new(TimedIo::new(stream, timeouts.write));
    let mut b = http2::Builder::new(LocalExec);
    b.timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(conn.server.max_head).unwrap_or(u32::MAX));
    let mut drain = conn.server.state.drain_signal();
    let activity = Rc::new(Activity::default());
    let (c, a) = (Rc::clone(&conn), Rc::clone(&activity));
    let svc = service_fn(move |mut req: Request<Incoming>| {
        host_from_authority(&mut req);
        let stream = StreamGuard::new(&a);
        let fut = handle(req, Rc::clone(&c));
        async move {
            let resp = fut.await?;
            Ok::<_, Infallible>(resp.map(|body| Tracked {
                body,
                _stream: stream,
            }))
        }
    });
    let h2 = b.serve_connection(io, svc);
    tokio::pin!(h2);
    // hyper's HTTP/2 server has no idle timeout: without one, a client that opens a
    // connection and goes quiet (or never sends a request) would hold it forever.
    let mut seen = activity.started.get();
    let idle = loop {
        tokio::select! {
            _ = h2.as_mut() => return,
            _ = drain.wait_for(|d| *d) => break false,
            _ = idle_tick(timeouts.read) => {
                let started = activity.started.get();
                if activity.open.get() == 0 && started == seen {
                    break true;
                }
                seen = started;
            }
        }
    };
    h2.as_mut().graceful_shutdown();
    if idle {
        // A graceful close waits for the client's PING answer; a silent client gets one more
        // `read-timeout`, then the connection is dropped (it has no stream to lose).
        tokio::select! {
            _ = h2.as_mut() => {}
            _ = idle_tick(timeouts.read) => {}
        }
    } else {
        // Draining: streams in flight finish; `shutdown-timeout` bounds the worker.
        let _ = h2.await;
    }
}

/// One `read-timeout` (forever when it is 0).
async fn idle_tick(read: Option<Duration>) {
    match read {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The streams of one HTTP/2 connection: open ones (request received, response body not
/// finished) and how many ever started. Idle = none open and none started for a whole
/// `read-timeout`.
#[derive(Default)]
struct Activity {
    open: Cell<usize>,
    started: Cell<u64>,
}

/// One open stream; moved into the response body, so it ends when the body is done or
/// dropped (also when the client resets the stream before the response).
struct StreamGuard(Rc<Activity>);

impl StreamGuard {
    fn new(a: &Rc<Activity>) -> StreamGuard {
        a.open.set(a.open.get() + 1);
        a.started.set(a.started.get() + 1);
        StreamGuard(Rc::clone(a))
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// A response body that keeps its stream counted as open until it is done.
struct Tracked {
    body: ProxyBody,
    _stream: StreamGuard,
}

impl Body for Tracked {
    type Data = <ProxyBody as Body>::Data;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// HTTP/2 carries the host in `:authority`; the route lookup and the HTTP/1.1 downstream read
/// `Host`.
fn host_from_authority(req: &mut Request<Incoming>) {
    if req.headers().contains_key(HOST) {
        return;
    }
    let Some(a) = req.uri().authority() else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(a.as_str()) {
        req.headers_mut().insert(HOST, v);
    }
}

/// hyper's HTTP/2 tasks (one per stream) run on the worker's current-thread `LocalSet`, so
/// they need not be `Send`.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}
