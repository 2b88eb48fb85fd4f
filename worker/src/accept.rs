//! The accept stage: take connections from an inherited listener until draining starts, count
//! each one at once (the drain waits for it), and hand it on to TLS (on a `[server.ssl]`
//! listener) and HTTP (HTTP/2 when ALPN chose it) on its own task.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use rproxy_shared::{error, warn};

use crate::metrics::{self, Counted, OpenConn};
use crate::net::{TcpListener, TcpStream};
use crate::server::ServerCtx;
use crate::state::ConnGuard;
use crate::tls::Acceptor;
use crate::{http, tls};

/// Adopt a listener the master bound, then [`accept`] on it.
pub async fn accept_loop(listener: OwnedFd, server: Rc<ServerCtx>, tls: Option<Rc<Acceptor>>) {
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
    accept(listener, server, tls).await;
}

/// Accept until draining starts, then close this worker's copy of the listener (the socket
/// itself stays open in the master and the other workers).
pub async fn accept(listener: TcpListener, server: Rc<ServerCtx>, tls: Option<Rc<Acceptor>>) {
    let mut drain = server.state.drain_signal();
    // A new master's worker holds its listener until the upgrade commits; a drain meanwhile
    // (the upgrade failed, or a stop) ends it without a single accept.
    let mut allowed = server.state.accept_signal();
    tokio::select! {
        biased;
        _ = drain.wait_for(|d| *d) => return,
        r = allowed.wait_for(|a| *a) => if r.is_err() { return },
    }
    loop {
        tokio::select! {
            biased;
            _ = drain.wait_for(|d| *d) => return,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    // Counted from the accept, so a drain starting before the task first runs
                    // still waits for this connection.
                    let guard = server.state.conn_opened();
                    let _ = stream.set_nodelay(true);
                    if let Some(tls) = &tls {
                        let (tls, server) = (Rc::clone(tls), Rc::clone(&server));
                        let open = metrics::conn_opened(server.index);
                        tokio::task::spawn_local(secure(tls, stream, peer, server, guard, open));
                        continue;
                    }
                    let info = tls::plain(peer, &server.trusted);
                    let conn = Rc::new(http::Conn::new(Rc::clone(&server), info));
                    let open = metrics::conn_opened(server.index);
                    crate::conn_tasks::spawn(http::serve_plain(stream, conn, guard, open, None));
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

/// The TLS stage, then HTTP/2 or HTTP/1.1 as ALPN chose. The connection counts (for drain)
/// from its accept, handshake included.
///
/// `_open` (the metrics' count) is an argument rather than a wrapping future: a future that
/// awaits another holds it twice over (its argument and its awaitee), which made every TLS
/// connection's task 1.9 KiB instead of 1 KiB.
async fn secure(
    tls: Rc<Acceptor>,
    stream: TcpStream,
    peer: SocketAddr,
    server: Rc<ServerCtx>,
    guard: ConnGuard,
    _open: OpenConn,
) {
    // Boxed, and freed after the handshake: a task's size is that of its largest state, and
    // a keep-alive connection lives in the HTTP state (likewise HTTP/2's larger one).
    let shaken = Box::pin(tls.handshake(stream, peer, &server.trusted)).await;
    metrics::tls_handshake(server.index, shaken.as_ref().map(|(s, ..)| s.resumed()));
    let Some((stream, info, h2)) = shaken else {
        return;
    };
    let stream = Counted::new(stream, server.index);
    let conn = Rc::new(http::Conn::new(server, info));
    if h2 {
        Box::pin(http::serve_h2(stream, conn, guard)).await;
    } else {
        // A TLS stream is never parked: this ends with the connection.
        let _ = http::serve(stream, &conn, None).await;
        drop(guard);
    }
}
