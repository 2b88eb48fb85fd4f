//! The HTTP stage: HTTP/1.1 with hyper on a client stream, whatever the stream is (plain TCP
//! today, TLS later), with the client write-timeout and the framing guard under hyper
//! (`TimedIo`), and each request handed to [`crate::forward::handle`].

use std::rc::Rc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::forward::handle;
use crate::server::ServerCtx;
use crate::state::ConnGuard;
use crate::timed_io::TimedIo;
use crate::tls::ConnInfo;

/// One client connection, as the request stages see it.
pub struct Conn {
    pub server: Rc<ServerCtx>,
    pub info: ConnInfo,
}

/// hyper's settings for the connections of `server`, built once per listener.
pub fn builder(server: &ServerCtx) -> http1::Builder {
    let timeouts = server.routes.connection_default().timeouts;
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
    let write_timeout = conn.server.routes.connection_default().timeouts.write;
    let max_head = conn.server.max_head;
    let io = TokioIo::new(TimedIo::new(stream, write_timeout).with_framing_guard(max_head));
    let svc = service_fn({
        let conn = Rc::clone(&conn);
        move |req| handle(req, Rc::clone(&conn))
    });
    if let Err(e) = http.serve_connection(io, svc).with_upgrades().await {
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
    if let Some(log) = &conn.server.routes.connection_default().log {
        log.refused(&conn.info, status);
    }
}
