//! One request's way through a worker, as a sequence of named steps: route -> [`check`] ->
//! [`rewrite`] -> [`set_headers`] -> [`exchange`] (pool, send, response, or a tunnel after
//! `101 Switching Protocols`) -> respond -> log. A step that fails returns a [`ProxyError`];
//! the status is decided in `error.rs`.

use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::{PrereadError, ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::http::Conn;
use crate::pool::{Pool, Used};
use crate::route::Route;
use crate::tls::ConnInfo;
use crate::{head, headers, respond, rewrite};

/// A failed step, and the downstream connection it had reached (for the log).
type Failed = (ProxyError, Option<Used>);

/// hyper's service for one request.
pub async fn handle(
    mut req: Request<Incoming>,
    conn: Rc<Conn>,
) -> Result<Response<ProxyBody>, Infallible> {
    let state = &conn.server.state;
    state.requests.set(state.requests.get() + 1);
    let timer = crate::metrics::RequestTimer::start(conn.server.index);
    let mut last = respond::upgrade_asked(&req);
    if let Err(e) = head::check(&mut req) {
        let resp = refuse(&req, &conn, e);
        timer.done(0, Some(resp.status().as_u16()));
        return Ok(resp);
    }
    let host = req
        .headers()
        .get(HOST)
        .map(|h| h.as_bytes())
        .or_else(|| req.uri().host().map(str::as_bytes));
    let routes = &conn.server.routes;
    let route = match routes.lookup(conn.info.sni(), host, req.uri().path()) {
        Ok(route) => route,
        Err(log) => {
            if let Some(l) = &conn.write_limit {
                l.set(routes.connection_timeouts().write);
            }
            let entry = log.map(|l| (l, l.begin(&req)));
            let resp = ProxyError::NotFound.into_response(conn.info.peer, None);
            timer.done(0, Some(resp.status().as_u16()));
            if let Some((l, entry)) = entry {
                l.finish(&entry, &conn.info, None, &resp, None);
            }
            return Ok(respond::finish(resp, state.draining() || last));
        }
    };
    if let Some(l) = &conn.write_limit {
        // hyper writes one response at a time: this one is written under its rule's limit.
        l.set(route.timeouts.write);
    }
    // A tunnel starts only on a connection's first request (`passthrough.rs`); this one is
    // forwarded as HTTP and the client's next connection tunnels.
    last |= route.passthrough;
    let entry = route.log.as_ref().map(|l| l.begin(&req));
    let result = if route.no_downstreams {
        Err((ProxyError::NotFound, None))
    } else {
        forward(req, &conn.server.pool, route, &conn.info).await
    };
    let (mut resp, used) = match result {
        Ok((resp, used)) => (resp, Some(used)),
        Err((e, used)) => (e.into_response(conn.info.peer, used.map(|u| u.addr)), used),
    };
    timer.done(route.metrics_rule, Some(resp.status().as_u16()));
    if let (Some(log), Some(entry)) = (&route.log, &entry) {
        log.finish(entry, &conn.info, route.name(), &resp, used);
    }
    for name in route.strip.iter() {
        resp.headers_mut().remove(name);
    }
    Ok(respond::finish(resp, state.draining() || last))
}

/// rproxy's answer to a request refused before routing (its Host cannot be trusted to pick a
/// route): logged in the connection's default access log; the connection closes.
fn refuse(req: &Request<Incoming>, conn: &Conn, e: ProxyError) -> Response<ProxyBody> {
    let log = conn.server.routes.server_log();
    let entry = log.map(|l| l.begin(req));
    let resp = e.into_response(conn.info.peer, None);
    if let (Some(log), Some(entry)) = (log, &entry) {
        log.finish(entry, &conn.info, None, &resp, None);
    }
    respond::finish(resp, true)
}

async fn forward(
    req: Request<Incoming>,
    pool: &Rc<Pool>,
    route: &Route,
    conn: &ConnInfo,
) -> Result<(Response<ProxyBody>, Used), Failed> {
    let mut req = check(req, route.timeouts.read)
        .await
        .map_err(|e| (e, None))?;
    rewrite(&mut req, route).map_err(|e| (e, None))?;
    let client_upgrade = set_headers(&mut req, route, conn);
    exchange(req, client_upgrade, pool, route).await
}

/// Framing hyper accepts but a proxy must not forward (request smuggling): Transfer-Encoding
/// other than a single `chunked` (with or without Content-Length), differing Content-Lengths.
/// The body is read ahead here (up to `body::PREREAD`, each read within the client
/// `read-timeout`): nothing is forwarded before a chunked body's first chunk proved
/// well-formed, and no pooled connection waits for a client that announced a body and is slow
/// to send it.
async fn check(
    req: Request<Incoming>,
    read_timeout: Option<Duration>,
) -> Result<Request<RequestBody>, ProxyError> {
    let h = req.headers();
    let mut te = h.get_all(TRANSFER_ENCODING).iter();
    if let Some(v) = te.next() {
        if h.contains_key(CONTENT_LENGTH) {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if te.next().is_some() || !v.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(ProxyError::BadRequest(
                "Transfer-Encoding other than chunked",
            ));
        }
    }
    let mut cl = h.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = cl.next() {
        if cl.any(|v| v != first) {
            return Err(ProxyError::BadRequest("differing Content-Length values"));
        }
    }
    let (parts, body) = req.into_parts();
    let body = match RequestBody::preread(body, read_timeout).await {
        Ok(b) => b,
        Err(PrereadError::Body(e)) => return Err(ProxyError::BadBody(e)),
        Err(PrereadError::Timeout) => return Err(ProxyError::ClientBodyTimeout),
    };
    Ok(Request::from_parts(parts, body))
}

/// The request line for the downstream: origin-form, rewritten by the route's first matching
/// rule, HTTP/1.1.
fn rewrite(req: &mut Request<RequestBody>, route: &Route) -> Result<(), ProxyError> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match rewrite::rewrite(route.rewrites(), pq) {
        Some(p) => *req.uri_mut() = Uri::try_from(p).map_err(|_| ProxyError::BadRewrite)?,
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
    Ok(())
}

/// Hop-by-hop headers out (any upgrade but WebSocket with them), names with `_` out, forged
/// forwarding headers out, ours in (`headers.rs`). Returns the client side of a WebSocket
/// upgrade when the request asks for one.
fn set_headers(
    req: &mut Request<RequestBody>,
    route: &Route,
    conn: &ConnInfo,
) -> Option<OnUpgrade> {
    let upgrade = headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut *req));
    headers::strip_hop_by_hop(req.headers_mut(), upgrade);
    headers::drop_underscored(req.headers_mut());
    headers::set_forwarding(
        req.headers_mut(),
        &route.headers,
        &conn.forwarded,
        conn.scheme.as_str(),
        &route.extension_names,
    );
    if let Some(tls) = &conn.tls {
        tls.add_headers(req.headers_mut(), &route.headers, &route.extension_names);
    }
    client_upgrade
}

/// A pooled connection of the route, the request, the response head; then the body streamed
/// back, or both sockets joined after `101 Switching Protocols` the client asked for.
async fn exchange(
    req: Request<RequestBody>,
    client_upgrade: Option<OnUpgrade>,
    pool: &Rc<Pool>,
    route: &Route,
) -> Result<(Response<ProxyBody>, Used), Failed> {
    let (mut resp, lease) = pool.send(&route.members, req).await?;
    let used = lease.used();
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            // Dropping the lease closes the connection the downstream meant to switch.
            return Err((ProxyError::UnrequestedSwitch, Some(used)));
        };
        let downstream = hyper::upgrade::on(&mut resp);
        tokio::task::spawn_local(tunnel(client, downstream));
        // The downstream connection now belongs to the tunnel.
        drop(lease);
        let (parts, _) = resp.into_parts();
        return Ok((Response::from_parts(parts, ProxyBody::empty()), used));
    }
    let read_timeout = lease.downstream().read_timeout;
    Ok((respond::downstream(resp, lease, read_timeout), used))
}

/// Raw bytes both ways after a protocol switch, until either side closes.
async fn tunnel(client: OnUpgrade, downstream: OnUpgrade) {
    let (Ok(c), Ok(d)) = tokio::join!(client, downstream) else {
        return;
    };
    let mut c = TokioIo::new(c);
    let mut d = TokioIo::new(d);
    let _ = tokio::io::copy_bidirectional(&mut c, &mut d).await;
}
