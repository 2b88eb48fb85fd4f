//! `passthrough` rules (RProxy 2.x): after the request head is forwarded, raw bytes both ways
//! until either side closes, with no `101` needed and nothing parsed after the head.
//!
//! On a server that has passthrough rules (and only there: the flat and ordinary routed paths
//! never come here), this stage reads the first request head of each connection itself,
//! routes it, and either tunnels or hands the bytes it read to the HTTP/1 codec. The tunnel is
//! therefore a
//! property of a connection's first request; a later request on a keep-alive connection that
//! matches a passthrough rule is forwarded as HTTP and its connection closes after it, so the
//! client's next connection tunnels (see `forward::handle`).

use std::io;
use std::rc::Rc;

use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ProxyError;
use crate::http::Conn;
use crate::route::Route;
use crate::{headers, rewrite};

/// Headers read in a passthrough head; a head with more goes to the codec (which answers it).
const MAX_HEADERS: usize = 100;

/// Read the first request head of `stream`; tunnel it when it routes to a passthrough rule
/// (`None`: the connection is done), else give the stream and the bytes read back for the
/// HTTP/1 codec. A client that sends no complete head within the server's read-timeout, or
/// closes, is dropped here as the codec would drop it.
pub async fn first_request<S>(mut stream: S, conn: &Rc<Conn>) -> Option<(S, Vec<u8>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max = conn.server.max_head;
    let mut buf = Vec::with_capacity(max.min(4096));
    let read = read_head(&mut stream, &mut buf, max);
    let complete = match conn.server.routes.connection_timeouts().read {
        Some(limit) => tokio::time::timeout(limit, read).await.ok()?,
        None => read.await,
    };
    if !complete.ok()? {
        return None;
    }
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut raw);
    let (end, route) = match parsed.parse(&buf) {
        Ok(httparse::Status::Complete(end)) => match route_of(&parsed, conn) {
            Some(route) => (end, route),
            None => return Some((stream, buf)),
        },
        // Incomplete (too large) or malformed: the codec gives the answer.
        _ => return Some((stream, buf)),
    };
    let mut head = match client_head(&parsed) {
        Ok(h) => h,
        Err(e) => {
            answer(&mut stream, e.status()).await;
            return None;
        }
    };
    let log = route.log.as_ref().map(|l| (l, l.begin(&head)));
    if let Err(e) = for_downstream(&mut head, route, conn) {
        let code = answer(&mut stream, e.status()).await;
        if let Some((l, entry)) = log {
            l.finish_tunnel(&entry, &conn.info, route.name(), None, Some(code));
        }
        return None;
    }
    let (used, status) = tunnel(&mut stream, head, &buf[end..], route, conn).await;
    if let Some((l, entry)) = log {
        l.finish_tunnel(&entry, &conn.info, route.name(), used, status);
    }
    None
}

/// Read until the end of a head, or `max` bytes; `false` when the client closed first.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<bool> {
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= max {
            return Ok(true);
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Ok(false);
        }
    }
}

/// The route of a parsed head when it is a passthrough rule's.
fn route_of<'c>(req: &httparse::Request<'_, '_>, conn: &'c Conn) -> Option<&'c Route> {
    let target = req.path?;
    if !target.starts_with('/') {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value);
    let route = conn
        .server
        .routes
        .lookup(conn.info.sni(), host, path)
        .ok()?;
    route.passthrough.then_some(route)
}

/// The client's head by the rules of every request (DESIGN section 7): HTTP/1.1, exactly one
/// Host, names with `_` dropped.
fn client_head(req: &httparse::Request<'_, '_>) -> Result<Request<()>, ProxyError> {
    let bad = ProxyError::BadRequest;
    if req.version != Some(1) {
        return Err(bad("passthrough needs HTTP/1.1"));
    }
    let mut h = HeaderMap::with_capacity(req.headers.len() + 2);
    for hd in req.headers.iter() {
        if hd.name.contains('_') {
            continue;
        }
        let name = HeaderName::from_bytes(hd.name.as_bytes()).map_err(|_| bad("header name"))?;
        let value = HeaderValue::from_bytes(hd.value).map_err(|_| bad("header value"))?;
        h.append(name, value);
    }
    if h.get_all(http::header::HOST).iter().count() != 1 {
        return Err(bad("missing or repeated Host"));
    }
    let mut out = Request::new(());
    *out.method_mut() = req
        .method
        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
        .ok_or(bad("method"))?;
    *out.uri_mut() = Uri::try_from(req.path.unwrap_or("/")).map_err(|_| bad("request target"))?;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = h;
    Ok(out)
}

/// Forged forwarding headers out and ours in, the rule's rewrite. Hop-by-hop headers stay:
/// the tunnel is end to end (a WebSocket needs its `Upgrade`).
fn for_downstream(head: &mut Request<()>, route: &Route, conn: &Conn) -> Result<(), ProxyError> {
    headers::set_forwarding(
        head.headers_mut(),
        &route.headers,
        &conn.info.forwarded,
        conn.info.scheme.as_str(),
        &route.extension_names,
    );
    let pq = head.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Some(t) = rewrite::rewrite(route.rewrites(), pq) {
        *head.uri_mut() = Uri::try_from(t).map_err(|_| ProxyError::BadRewrite)?;
    }
    Ok(())
}

/// Forward `head` and the bytes read after it on a downstream socket of the rule, then copy
/// both ways until either side closes. For the log: the downstream used, and the status when
/// rproxy answered itself instead of tunnelling.
async fn tunnel<S>(
    client: &mut S,
    head: Request<()>,
    after: &[u8],
    route: &Route,
    conn: &Conn,
) -> (Option<crate::pool::Used>, Option<StatusCode>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if route.no_downstreams {
        return (
            None,
            Some(answer(client, ProxyError::NotFound.status()).await),
        );
    }
    let (mut ds, used, _slot) = match conn.server.pool.tunnel(&route.members).await {
        Ok(t) => t,
        Err((e, used)) => return (used, Some(answer(client, e.status()).await)),
    };
    let mut out = Vec::with_capacity(512 + after.len());
    out.extend_from_slice(head.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.uri().to_string().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(after);
    if ds.write_all(&out).await.is_err() {
        return (
            Some(used),
            Some(answer(client, StatusCode::BAD_GATEWAY).await),
        );
    }
    drop(out);
    let _ = tokio::io::copy_bidirectional(client, &mut ds).await;
    (Some(used), None)
}

/// rproxy's own answer before a tunnel started; the connection ends with it.
async fn answer<S: AsyncWrite + Unpin>(client: &mut S, code: StatusCode) -> StatusCode {
    let reason = code.canonical_reason().unwrap_or("");
    let text = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{} {reason}\n",
        code.as_u16(),
        code.as_str().len() + reason.len() + 2,
        code.as_u16()
    );
    let _ = client.write_all(text.as_bytes()).await;
    let _ = client.shutdown().await;
    code
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::task::LocalSet;

    use crate::testing::{config, echo_origin, roundtrip, start};

    fn routed(origin: std::net::SocketAddr) -> rproxy_shared::config::Config {
        config(&format!(
            "[[server]]\nport = 8080\n[[server.downstream]]\nname = \"o\"\naddr = \"{}\"\nport = {}\nconnections = 1\n\
             [[server.vhost]]\nname = \"*\"\n\
             [[server.vhost.rule]]\nuri-match = \"/none\"\ndownstreams = []\npassthrough = true\n\
             [[server.vhost.rule]]\nuri-gmatch = \"/tunnel*\"\ndownstreams = [\"o\"]\npassthrough = true\n\
             [[server.vhost.rule]]\nuri-gmatch = \"/*\"\ndownstreams = [\"o\"]\n",
            origin.ip(),
            origin.port()
        ))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_head_in_pieces_is_routed_once_complete() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&routed(echo_origin().await)).await;
                let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                for piece in [
                    &b"GET /pla"[..],
                    b"in HTTP/1.1\r\nHo",
                    b"st: a\r\nConnection: close\r\n\r\n",
                ] {
                    s.write_all(piece).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                assert!(out.starts_with("HTTP/1.1 200"), "{out}");
                assert!(out.ends_with("/plain xff=127.0.0.1;xfp=http"), "{out}");
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rproxy_answers_before_a_tunnel_starts() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&routed(echo_origin().await)).await;
                // A passthrough rule without downstreams: 404, and the connection ends.
                let r = roundtrip(proxy.addr, b"GET /none HTTP/1.1\r\nHost: a\r\n\r\nraw").await;
                assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
                assert!(r.ends_with("\r\n\r\n404 Not Found\n"), "{r}");
                // Two Host headers: 400 (the usual head rules apply to tunnels too).
                let r = roundtrip(
                    proxy.addr,
                    b"GET /tunnel HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                )
                .await;
                assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
                // Not a passthrough rule: the codec gets the bytes, pipelined request included.
                let r = roundtrip(
                    proxy.addr,
                    b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                )
                .await;
                assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 2, "{r}");
            })
            .await;
    }
}
