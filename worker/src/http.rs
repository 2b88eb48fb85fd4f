//! The HTTP stage: HTTP/1.1 with hyper on a client stream, whatever the stream is (plain TCP
//! today, TLS later), with the client write-timeout and the framing guard under hyper
//! (`TimedIo`), and each request handed to [`crate::forward::handle`]. On a server with
//! `passthrough` rules, a connection's first request head is read by [`crate::passthrough`]
//! first: hyper cannot hand over the raw bytes after a head without a `101`.

use std::rc::Rc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

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
    let svc = service_fn(move |req| handle(req, Rc::clone(&conn)));
    let _ = http
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}
