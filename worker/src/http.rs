//! The HTTP stage: HTTP/1.1 with hyper on a client stream, whatever the stream is (plain TCP
//! or TLS), with the client write-timeout and the framing guard under hyper (`TimedIo`), and
//! each request handed to [`crate::forward::handle`]. On a server with `passthrough` rules, a
//! connection's first request head is read by [`crate::passthrough`] first: hyper cannot hand
//! over the raw bytes after a head without a `101`. HTTP/2 (TLS clients that chose `h2` by
//! ALPN) is hyper's HTTP/2 server on this worker's `LocalSet`, handing its requests to the same
//! `handle`, so they reach the HTTP/1.1 downstreams under the same header rules.

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
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::ProxyBody;
use crate::forward::handle;
use crate::passthrough;
use crate::server::ServerCtx;
use crate::state::ConnGuard;
use crate::timed_io::{TimedIo, WriteLimit};
use crate::tls::ConnInfo;

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

/// hyper's settings for the connections of `server`, built once per listener.
pub fn builder(server: &ServerCtx) -> http1::Builder {
    let timeouts = server.routes.connection_timeouts();
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .keep_alive(true)
        // Header read and idle keep-alive wait; hyper applies it to both.
        .header_read_timeout(timeouts.read)
        // Request line + headers larger than this get 431 from hyper.
        // (The framing guard in `serve` is given the same limit.)
        .max_buf_size(server.max_head);
    b
}

/// Serve HTTP/1.1 on `stream` until either side closes. `Send` because hyper hands an upgraded
/// stream (WebSocket tunnels) over as a `Send` object.
pub async fn serve<S>(stream: S, conn: Rc<Conn>, http: http1::Builder, _guard: ConnGuard)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if conn.server.routes.any_passthrough() {
        if let Some(rest) = passthrough::first_request(stream, &conn).await {
            serve_http(rest, conn, http).await;
        }
    } else {
        serve_http(stream, conn, http).await;
    }
}

async fn serve_http<S>(stream: S, conn: Rc<Conn>, http: http1::Builder)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let write_timeout = conn.server.routes.connection_timeouts().write;
    let max_head = conn.server.max_head;
    let mut io = TimedIo::new(stream, write_timeout).with_framing_guard(max_head);
    if let Some(l) = &conn.write_limit {
        io = io.with_write_limit(l.clone());
    }
    let svc = service_fn({
        let conn = Rc::clone(&conn);
        move |req| handle(req, Rc::clone(&conn))
    });
    if let Err(e) = http
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await
    {
        log_refused(&conn, &e);
    }
}

/// hyper answers a head it cannot parse (400) or that is too large (431) itself, without
/// calling the service: such requests get their access-log line here. A connection that ends
/// mid-head without an answer (timeout, reset) gets none.
fn log_refused(conn: &Conn, e: &hyper::Error) {
    let status = if e.is_parse_too_large() {
        431
    } else if e.is_parse() {
        400
    } else {
        return;
    };
    crate::metrics::refused(conn.server.index, status);
    if let Some(log) = conn.server.routes.server_log() {
        log.refused(&conn.info, status);
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
