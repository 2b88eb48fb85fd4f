//! In-process harness for the worker pipeline: a worker's stages (accept -> HTTP -> route ->
//! forward -> pool -> respond) on a loopback listener, without forking or the master, so a stage
//! can be tested in milliseconds against a small origin started by the same test.
//!
//! Clients: [`roundtrip`] (raw bytes, for framing edge cases) and [`send`] (hyper's client).
//! Use inside a `LocalSet` (every worker task is `spawn_local`):
//! ```ignore
//! LocalSet::new().run_until(async {
//!     let origin = testing::echo_origin().await;
//!     let proxy = testing::start(&testing::flat(origin)).await;
//!     let resp = testing::roundtrip(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
//! }).await;
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rproxy_shared::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::server::ServerCtx;
use crate::state::WorkerState;

/// Load `toml` (without `user`/`group`: the current user's are put first, so validation finds
/// them) through the same loader and validation as the master.
pub fn config(toml: &str) -> Config {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap();
    let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
        .unwrap()
        .unwrap();
    // Workers may not run as root (DESIGN 11): root's tests name nobody, which is never used
    // since these workers are not forked.
    let (user, group) = if user.uid.is_root() {
        ("nobody".to_string(), "nogroup".to_string())
    } else {
        (user.name, group.name)
    };
    let text = format!("user = \"{user}\"\ngroup = \"{group}\"\n{toml}");
    let path = std::env::temp_dir().join(format!(
        "rproxy-worker-test-{}-{}.toml",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    let loaded = rproxy_shared::load::load(&path);
    let _ = std::fs::remove_file(&path);
    loaded.unwrap_or_else(|e| panic!("test configuration: {e}"))
}

/// A flat server in front of one downstream.
pub fn flat(origin: SocketAddr) -> Config {
    config(&format!(
        "[[server]]\nport = 8080\n[[server.downstream]]\naddr = \"{}\"\nport = {}\nconnections = 1\n",
        origin.ip(),
        origin.port()
    ))
}

/// A worker serving `config.server[0]` on a fresh loopback port.
pub struct Proxy {
    pub addr: SocketAddr,
    pub state: Rc<WorkerState>,
}

/// Start the stages of server 0 of `config` as a worker does, on 127.0.0.1:0.
pub async fn start(config: &Config) -> Proxy {
    let state = WorkerState::new(Arc::new(config.clone()), Vec::new(), false, Vec::new());
    let server = ServerCtx::start(config, 0, &state).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = crate::net::TcpListener::from_std(listener).unwrap();
    tokio::task::spawn_local(crate::accept::accept(listener, server, None));
    Proxy { addr, state }
}

/// Send `raw` on a new connection and read until the proxy closes it (at most 5 s).
pub async fn roundtrip(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the proxy did not close the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Read from `s` until `n` responses (counted by status line) have arrived, the last one whole
/// (the echo origin's bodies end in `http`); at most 5 s per read.
pub async fn read_responses(s: &mut TcpStream, n: usize) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&out).matches("HTTP/1.1 ").count() < n || !out.ends_with(b"http")
    {
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no response within 5 s")
            .unwrap();
        assert!(r > 0, "closed: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..r]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Send `reqs` one after the other on one keep-alive connection with hyper's client; the
/// responses with their whole bodies.
pub async fn send(addr: SocketAddr, reqs: Vec<Request<String>>) -> Vec<Response<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::task::spawn_local(conn);
    let mut out = Vec::new();
    for req in reqs {
        let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
            .await
            .expect("no response within 5 s")
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        out.push(Response::from_parts(parts, body));
    }
    out
}

/// An origin answering every request with `200` and the forwarding headers it received:
/// `<request target> xff=<X-Forwarded-For>;xfp=<X-Forwarded-Proto>`.
pub async fn echo_origin() -> SocketAddr {
    async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .map_or("", |v| v.to_str().unwrap_or("?"))
                .to_owned()
        };
        let body = format!(
            "{} xff={};xfp={}",
            req.uri(),
            h("x-forwarded-for"),
            h("x-forwarded-proto")
        );
        Ok(Response::new(Full::new(Bytes::from(body))))
    }
    origin(|stream| async move {
        let svc = hyper::service::service_fn(echo);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

/// An origin that reads a request head and closes the connection without answering.
pub async fn broken_origin() -> SocketAddr {
    origin(|mut stream| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}

/// Accept on 127.0.0.1:0 and run `conn` on each connection.
async fn origin<F, Fut>(conn: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::task::spawn_local(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::task::spawn_local(conn(stream));
        }
    });
    addr
}

#[cfg(test)]
mod tests {
    use tokio::task::LocalSet;

    use super::*;

    fn status(resp: &str) -> &str {
        resp.get(9..12).unwrap_or(resp)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn proxied_get_carries_forwarding_headers() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&flat(echo_origin().await)).await;
                let resp = roundtrip(
                    proxy.addr,
                    b"GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\
                      X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
                )
                .await;
                assert_eq!(status(&resp), "200", "{resp}");
                assert!(
                    resp.ends_with("\r\n\r\n/x xff=127.0.0.1;xfp=http"),
                    "{resp}"
                );
                assert_eq!(proxy.state.requests.get(), 1);
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn keep_alive_client_and_absolute_form_target() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&flat(echo_origin().await)).await;
                let get = |uri: &str| {
                    Request::get(uri)
                        .header("host", "a")
                        .body(String::new())
                        .unwrap()
                };
                let resps = send(proxy.addr, vec![get("/one"), get("http://a/two")]).await;
                let bodies: Vec<&[u8]> = resps.iter().map(|r| &r.body()[..]).collect();
                assert_eq!(
                    bodies,
                    [
                        &b"/one xff=127.0.0.1;xfp=http"[..],
                        b"/two xff=127.0.0.1;xfp=http"
                    ]
                );
                assert_eq!(proxy.state.requests.get(), 2);
                assert_eq!(proxy.state.conns.get(), 1, "one client connection");
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn broken_downstream_connection_is_502() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&flat(broken_origin().await)).await;
                let resp = roundtrip(
                    proxy.addr,
                    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                )
                .await;
                assert_eq!(status(&resp), "502", "{resp}");
                assert!(resp.ends_with("\r\n\r\n502 Bad Gateway\n"), "{resp}");
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn content_length_with_transfer_encoding_is_400() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&flat(echo_origin().await)).await;
                // Keep-alive asked for: the 400 must close the connection anyway.
                let resp = roundtrip(
                    proxy.addr,
                    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
                      Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                )
                .await;
                assert_eq!(status(&resp), "400", "{resp}");
                assert_eq!(proxy.state.requests.get(), 0, "reached the service");
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn transfer_encoding_other_than_chunked_is_our_400() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&flat(echo_origin().await)).await;
                let resp = roundtrip(
                    proxy.addr,
                    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                      0\r\n\r\n",
                )
                .await;
                assert_eq!(status(&resp), "400", "{resp}");
                assert!(resp.contains("\r\nconnection: close\r\n"), "{resp}");
                assert!(resp.ends_with("\r\n\r\n400 Bad Request\n"), "{resp}");
            })
            .await;
    }
}

/// Counts this thread's allocations, to prove a hot path makes none (the route lookup, the
/// HTTP/1 codec). One global allocator for the whole test binary.
pub mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        pub static ALLOCS: Cell<usize> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: every call is passed on to `System` unchanged; counting touches only a
    // const-initialised thread-local `Cell`, which never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: the caller's contract is `System.alloc`'s.
            unsafe { System.alloc(l) }
        }

        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: `p` came from `System.alloc` with layout `l`.
            unsafe { System.dealloc(p, l) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    pub fn count() -> usize {
        ALLOCS.with(Cell::get)
    }
}
