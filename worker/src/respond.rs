//! The respond stage: what every response to a client goes through on its way out, whether it
//! came from a downstream or from rproxy itself.

use std::time::Duration;

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::headers;
use crate::pool::Lease;

/// A downstream's response for the client: hop-by-hop headers removed, its body streamed from
/// the leased connection (returned to the pool when the body ends).
pub fn downstream(
    resp: Response<Incoming>,
    lease: Lease,
    read_timeout: Option<Duration>,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    // hyper answers an HTTP/1.0 client in 1.0 itself; an old downstream must not downgrade an
    // HTTP/1.1 client (and its keep-alive).
    parts.version = Version::HTTP_11;
    if parts.headers.contains_key(TRANSFER_ENCODING) {
        // hyper decoded by Transfer-Encoding; a Content-Length left beside it would frame the
        // re-encoded body for the client and cut it short (RFC 9112 6.3).
        parts.headers.remove(CONTENT_LENGTH);
    }
    headers::strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, ProxyBody::downstream(body, lease, read_timeout))
}

/// hyper keeps reading after a request it could have upgraded (CONNECT, or Upgrade on
/// HTTP/1.1) without 101; the framing guard stopped watching at that request, so the
/// connection must end with its response.
pub fn upgrade_asked<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        || (req.version() == Version::HTTP_11 && req.headers().contains_key(UPGRADE))
}

/// The last touch before hyper writes `resp`: when `last` (draining, DESIGN section 3, or an
/// unanswered upgrade) the connection closes after it, unless it switched protocols.
pub fn finish(mut resp: Response<ProxyBody>, last: bool) -> Response<ProxyBody> {
    if last && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
