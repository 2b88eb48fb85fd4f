//! One HTTP/2 request's way through a worker, as a sequence of named steps: route ->
//! [`check`] -> [`rewrite`] -> [`set_headers`] -> [`exchange`] (the head serialized for the
//! HTTP/1.1 downstream, then the same exchange on the same pool as HTTP/1 clients:
//! `h1::upstream`) -> respond -> log. A step that fails returns a [`ProxyError`]; the status is
//! decided in `error.rs`. HTTP/1.1 clients take the same steps in `h1::conn`, on bytes.

use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use crate::body::{PrereadError, ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::h1::buffers;
use crate::h1::chunked;
use crate::h1::edit;
use crate::h1::upstream::{self, BodyPump, DsResponse, Failed};
use crate::http::Conn;
use crate::pool::{DsIo, Pool, Used};
use crate::route::Route;
use crate::tls::ConnInfo;
use crate::{head, headers, respond, rewrite};

/// hyper's service for one request.
pub async fn handle(
    mut req: Request<Incoming>,
    conn: Rc<Conn>,
) -> Result<Response<ProxyBody>, Infallible> {
    let state = &conn.server.state;
    state.requests.set(state.requests.get() + 1);
    let mut last = respond::upgrade_asked(&req);
    if let Err(e) = head::check(&mut req) {
        return Ok(refuse(&req, &conn, e));
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
    set_headers(&mut req, route, conn);
    exchange(req, pool, route).await
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
        Err(PrereadError::Body(e)) => return Err(ProxyError::BadBody(e.to_string())),
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

/// Hop-by-hop headers out (HTTP/2 has no protocol switch to keep), names with `_` out,
/// forged forwarding headers out, ours in (`headers.rs`).
fn set_headers(req: &mut Request<RequestBody>, route: &Route, conn: &ConnInfo) {
    headers::strip_hop_by_hop(req.headers_mut(), false);
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
}

/// The request head as HTTP/1.1 bytes, the body through the same exchange as HTTP/1 clients,
/// and the downstream's response rebuilt for hyper, its body streamed from the leased
/// connection.
async fn exchange(
    req: Request<RequestBody>,
    pool: &Rc<Pool>,
    route: &Route,
) -> Result<(Response<ProxyBody>, Used), Failed> {
    let (parts, body) = req.into_parts();
    let mut out = buffers::take();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        edit::line(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    // HTTP/2 frames its body itself: without a Content-Length, HTTP/1.1 needs chunked.
    let chunked =
        !parts.headers.contains_key(CONTENT_LENGTH) && !http_body::Body::is_end_stream(&body);
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let mut pump = H2Pump { body, chunked };
    let head_request = parts.method == Method::HEAD;
    let result = upstream::exchange(pool, &route.members, &out, &mut pump, head_request).await;
    buffers::give(out);
    let resp = result?;
    let used = resp.used();
    if resp.head.status == 101 {
        // HTTP/2 has no protocol switch: a 101 is one the client never asked for.
        return Err((ProxyError::UnrequestedSwitch, Some(used)));
    }
    let response = response_of(&resp).map_err(|e| (e, Some(used)))?;
    Ok((response.map(|()| ProxyBody::downstream(resp)), used))
}

/// The downstream's response head as hyper's: hop-by-hop headers out, and a Content-Length
/// beside Transfer-Encoding (RFC 9112 6.3).
fn response_of(resp: &DsResponse) -> Result<Response<()>, ProxyError> {
    let bad = || ProxyError::Downstream("response header not valid for HTTP/2", None);
    let buf = &resp.bufs.data;
    let mut h = HeaderMap::with_capacity(resp.bufs.spans.len());
    for s in &resp.bufs.spans {
        let name = HeaderName::from_bytes(s.name.of(buf)).map_err(|_| bad())?;
        let value = HeaderValue::from_bytes(s.value.of(buf)).map_err(|_| bad())?;
        h.append(name, value);
    }
    if resp.head.has_te {
        h.remove(CONTENT_LENGTH);
    }
    headers::strip_hop_by_hop(&mut h, false);
    let mut r = Response::new(());
    *r.status_mut() = http::StatusCode::from_u16(resp.head.status).map_err(|_| bad())?;
    *r.headers_mut() = h;
    Ok(r)
}

/// An HTTP/2 request body for the HTTP/1.1 downstream (chunked when it has no length).
struct H2Pump {
    body: RequestBody,
    chunked: bool,
}

impl BodyPump for H2Pump {
    async fn pump(&mut self, ds: &mut DsIo) -> Result<(), ProxyError> {
        let to_ds = |e| ProxyError::downstream("writing the request body", e);
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<crate::body::ClientBodyTimeout>() {
                    ProxyError::ClientBodyTimeout
                } else {
                    ProxyError::BadBody(e.to_string())
                }
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if self.chunked {
                let mut line = [0; 18];
                ds.write_all(chunked::size_line(data.len(), &mut line))
                    .await
                    .map_err(to_ds)?;
                ds.write_all(&data).await.map_err(to_ds)?;
                ds.write_all(chunked::CHUNK_END).await.map_err(to_ds)?;
            } else {
                ds.write_all(&data).await.map_err(to_ds)?;
            }
        }
        if self.chunked {
            ds.write_all(chunked::LAST_CHUNK).await.map_err(to_ds)?;
        }
        Ok(())
    }
}
