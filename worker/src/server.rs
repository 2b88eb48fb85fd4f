//! Accepting client connections on an inherited listener and serving HTTP/1.1 on each.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rproxy_shared::{error, warn};
use tokio::net::{TcpListener, TcpStream};

use crate::headers::Peer;
use crate::proxy::{handle, ConnCtx, ServerCtx};
use crate::state::ConnGuard;
use crate::timed_io::TimedIo;

/// Accept until draining starts, then close this worker's copy of the listener (the socket
/// itself stays open in the master and the other workers).
pub async fn accept_loop(listener: OwnedFd, server: Rc<ServerCtx>) {
    let std_listener = std::net::TcpListener::from(listener);
    let listener = match std_listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(std_listener))
    {
        Ok(l) => l,
        Err(e) => {
            error!("cannot adopt listener of server[{}]: {e}", server.index);
            return;
        }
    };
    let http = builder(&server);
    let mut drain = server.state.drain_signal();
    loop {
        tokio::select! {
            biased;
            _ = drain.wait_for(|d| *d) => return,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    // Counted from the accept, so a drain starting before the task first runs
                    // still waits for this connection.
                    let guard = server.state.conn_opened();
                    let forwarded = Peer::new(peer.ip(), &server.cfg().trusted_proxies);
                    let ctx = Rc::new(ConnCtx { server: Rc::clone(&server), peer, forwarded });
                    tokio::task::spawn_local(serve(stream, ctx, http.clone(), guard));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("accept on server[{}]: {e}", server.index);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

fn builder(server: &ServerCtx) -> http1::Builder {
    let cfg = server.cfg();
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .keep_alive(true)
        // Header read and idle keep-alive wait; hyper applies it to both (0 = none).
        .header_read_timeout(cfg.read_timeout)
        // Request line + headers larger than this get 431 from hyper.
        // (The framing guard in `serve` is given the same limit.)
        .max_buf_size(cfg.max_header_size);
    b
}

async fn serve(stream: TcpStream, ctx: Rc<ConnCtx>, http: http1::Builder, _guard: ConnGuard) {
    let _ = stream.set_nodelay(true);
    let write_timeout = ctx.server.cfg().write_timeout;
    let max_head = ctx.server.cfg().max_header_size;
    let io = TokioIo::new(TimedIo::new(stream, write_timeout).with_framing_guard(max_head));
    let svc = service_fn(move |req| handle(req, Rc::clone(&ctx)));
    let _ = http.serve_connection(io, svc).with_upgrades().await;
}
