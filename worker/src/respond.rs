//! The respond stage for HTTP/2 clients: what every response goes through on its way out,
//! whether it came from a downstream or from rproxy itself (HTTP/1.1 clients: `h1::conn`).

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};

use crate::body::ProxyBody;

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
