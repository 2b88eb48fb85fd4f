//! One request's way through a worker, in order: framing checks -> route -> rewrite ->
//! headers -> a pooled downstream connection -> send -> response headers -> streamed body
//! (or a tunnel after `101 Switching Protocols`) -> access log. Failures are classified once,
//! here, into the statuses of DESIGN section 8.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rproxy_shared::config::{Config, Server};
use rproxy_shared::logformat::Record;

use crate::access_log::{AccessLog, Headers};
use crate::body::{ProxyBody, RequestBody};
use crate::headers;
use crate::pool::{NoConnection, Pool, Route};
use crate::rewrite::rewrite;
use crate::state::WorkerState;

/// Attempts on fresh connections for a request that could not even be written.
const MAX_ATTEMPTS: usize = 3;

/// Everything a connection of one `[[server]]` needs, built once per worker.
pub struct ServerCtx {
    pub config: Arc<Config>,
    pub index: usize,
    pub pool: Rc<Pool>,
    /// Flat form: all enabled downstreams of the server.
    pub route: Rc<Route>,
    pub state: Rc<WorkerState>,
    pub log: Option<Rc<AccessLog>>,
    /// Configured x509-extension header names: stripped from clients' requests.
    pub extension_names: Vec<HeaderName>,
}

impl ServerCtx {
    pub fn cfg(&self) -> &Server {
        &self.config.servers[self.index]
    }
}

/// One client connection.
pub struct ConnCtx {
    pub server: Rc<ServerCtx>,
    pub peer: SocketAddr,
    pub forwarded: headers::Peer,
}

/// The downstream side of an exchange, for the log.
#[derive(Clone, Copy)]
struct Used {
    addr: SocketAddr,
    local_port: Option<u16>,
}

pub async fn handle(
    req: Request<Incoming>,
    conn: Rc<ConnCtx>,
) -> Result<Response<ProxyBody>, Infallible> {
    let s = &conn.server;
    s.state.requests.set(s.state.requests.get() + 1);
    let logged = s.log.as_ref().map(|l| {
        (
            req.method().clone(),
            req.uri().clone(),
            req.version(),
            l.snapshot(req.headers()),
        )
    });
    // hyper keeps reading after a request it could have upgraded (CONNECT, or Upgrade on
    // HTTP/1.1) without 101; the framing guard stopped watching at that request, so the
    // connection ends with this response.
    let upgrade_asked = req.method() == Method::CONNECT
        || (req.version() == Version::HTTP_11 && req.headers().contains_key(UPGRADE));
    let (mut resp, used) = forward(req, &conn).await;
    if let (Some(l), Some((method, uri, version, snap))) = (&s.log, &logged) {
        let lookup = l.lookup(snap);
        let resp_headers = Headers(resp.headers());
        l.write(&Record {
            src: Some(conn.peer.ip()),
            proxy: used.map(|u| u.addr),
            ts: SystemTime::now(),
            method: Some(method.as_str()),
            uri: Some(
                uri.path_and_query()
                    .map_or(uri.path(), |p| p.as_str())
                    .as_bytes(),
            ),
            proto: Some(version_str(*version)),
            status: Some(resp.status().as_u16()),
            ds_sport: used.and_then(|u| u.local_port),
            us_sport: Some(conn.peer.port()),
            rule: None,
            req_headers: Some(&lookup),
            resp_headers: Some(&resp_headers),
        });
    }
    if (s.state.draining() || upgrade_asked) && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Draining (DESIGN section 3) or an unanswered upgrade: this response is the last.
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

async fn forward(req: Request<Incoming>, conn: &ConnCtx) -> (Response<ProxyBody>, Option<Used>) {
    let s = &*conn.server;
    let cfg = s.cfg();
    if let Err(why) = check_framing(&req) {
        rproxy_shared::debug!("400 for {}: {why}", conn.peer);
        return (bad_request(), None);
    }
    let chunked = req.headers().contains_key(TRANSFER_ENCODING);
    let (parts, mut body) = req.into_parts();
    let body = if chunked {
        // Nothing is forwarded before the first chunk proved well-formed.
        match body.frame().await {
            Some(Err(e)) => {
                rproxy_shared::debug!("400 for {}: {e}", conn.peer);
                return (bad_request(), None);
            }
            first => RequestBody::Peeked(first.and_then(Result::ok), body),
        }
    } else {
        RequestBody::Direct(body)
    };
    let mut req = Request::from_parts(parts, body);

    // Origin-form for the downstream, rewritten by the first matching rule.
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let rewritten = rewrite(cfg.rewrites.iter().map(|r| (&r.src, r.dst.as_str())), pq);
    match rewritten {
        Some(p) => match Uri::try_from(p) {
            Ok(u) => *req.uri_mut() = u,
            Err(_) => return (status(StatusCode::BAD_REQUEST), None),
        },
        None if req.uri().scheme().is_some() => {
            let u = req
                .uri()
                .path_and_query()
                .cloned()
                .map(Uri::from)
                .unwrap_or_else(|| Uri::from_static("/"));
            *req.uri_mut() = u;
        }
        None => {}
    }
    *req.version_mut() = Version::HTTP_11;

    let upgrade = headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    headers::strip_hop_by_hop(req.headers_mut(), upgrade);
    headers::set_forwarding(
        req.headers_mut(),
        &cfg.headers,
        &conn.forwarded,
        "http",
        &s.extension_names,
    );

    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut lease = match s.pool.acquire(&s.route).await {
            Ok(l) => l,
            Err(e) => {
                rproxy_shared::debug!("503: {e:?}");
                return (status(StatusCode::SERVICE_UNAVAILABLE), None);
            }
        };
        let used = Used {
            addr: lease.downstream().addr,
            local_port: lease.local_port(),
        };
        let Some(sender) = lease.sender() else {
            continue;
        };
        if sender.ready().await.is_err() {
            // Closed under us before anything was written: another connection may do.
            if attempts >= MAX_ATTEMPTS {
                return (status(StatusCode::BAD_GATEWAY), Some(used));
            }
            continue;
        }
        lease.start_clock();
        let read_timeout = lease.downstream().read_timeout;
        let Some(sender) = lease.sender() else {
            continue;
        };
        let fut = sender.try_send_request(req);
        let result = match read_timeout {
            Some(d) => match tokio::time::timeout(d, fut).await {
                Ok(r) => r,
                Err(_) => return (status(StatusCode::GATEWAY_TIMEOUT), Some(used)),
            },
            None => fut.await,
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                Some(r) if attempts < MAX_ATTEMPTS => {
                    req = r;
                    continue;
                }
                _ => {
                    let code = classify(e.error());
                    rproxy_shared::debug!("{code} from {}: {}", used.addr, e.error());
                    return (status(code), Some(used));
                }
            },
        };
        lease.record_response();

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client) = client_upgrade {
                let downstream = hyper::upgrade::on(&mut resp);
                tokio::task::spawn_local(tunnel(client, downstream));
                // The downstream connection now belongs to the tunnel.
                drop(lease);
                let (parts, _) = resp.into_parts();
                return (Response::from_parts(parts, ProxyBody::empty()), Some(used));
            }
        }
        let (mut parts, body) = resp.into_parts();
        // hyper answers an HTTP/1.0 client in 1.0 itself; an old downstream must not
        // downgrade an HTTP/1.1 client (and its keep-alive).
        parts.version = Version::HTTP_11;
        headers::strip_hop_by_hop(&mut parts.headers, false);
        let body = ProxyBody::downstream(body, lease, read_timeout);
        return (Response::from_parts(parts, body), Some(used));
    }
}

/// Raw bytes both ways after a protocol switch, until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, downstream: hyper::upgrade::OnUpgrade) {
    let (Ok(c), Ok(d)) = tokio::join!(client, downstream) else {
        return;
    };
    let mut c = TokioIo::new(c);
    let mut d = TokioIo::new(d);
    let _ = tokio::io::copy_bidirectional(&mut c, &mut d).await;
}

/// Framing hyper accepts but a proxy must not forward (request smuggling): Content-Length
/// together with Transfer-Encoding, and any Transfer-Encoding other than a single `chunked`.
fn check_framing(req: &Request<Incoming>) -> Result<(), &'static str> {
    let h = req.headers();
    let mut te = h.get_all(TRANSFER_ENCODING).iter();
    if let Some(v) = te.next() {
        if h.contains_key(CONTENT_LENGTH) {
            return Err("both Content-Length and Transfer-Encoding");
        }
        if te.next().is_some() || !v.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err("Transfer-Encoding other than chunked");
        }
    }
    let mut cl = h.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = cl.next() {
        if cl.any(|v| v != first) {
            return Err("differing Content-Length values");
        }
    }
    Ok(())
}

/// Write timeouts toward the downstream are 503 (RProxy); everything else broken is 502.
fn classify(e: &hyper::Error) -> StatusCode {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        }
        src = s.source();
    }
    StatusCode::BAD_GATEWAY
}

/// 400 for a request we will not forward; the connection closes after it.
fn bad_request() -> Response<ProxyBody> {
    let mut r = status(StatusCode::BAD_REQUEST);
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A response of rproxy's own.
pub fn status(code: StatusCode) -> Response<ProxyBody> {
    let text: &'static str = match code {
        StatusCode::BAD_REQUEST => "400 Bad Request\n",
        StatusCode::NOT_FOUND => "404 Not Found\n",
        StatusCode::BAD_GATEWAY => "502 Bad Gateway\n",
        StatusCode::SERVICE_UNAVAILABLE => "503 Service Unavailable\n",
        StatusCode::GATEWAY_TIMEOUT => "504 Gateway Timeout\n",
        _ => "error\n",
    };
    let mut r = Response::new(ProxyBody::text(text));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

impl std::fmt::Display for NoConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoConnection::AllDown => "every downstream is down",
            NoConnection::QueueFull => "max-pending requests already waiting",
            NoConnection::Timeout => "pending-timeout expired",
        })
    }
}
