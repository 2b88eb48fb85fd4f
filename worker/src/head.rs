//! The request-head checks hyper leaves to us (DESIGN sections 7 and 8), run before the route
//! is looked up, because the route is chosen by the Host these checks settle: the method
//! (`CONNECT` is never forwarded), the request-target form, and exactly one valid `Host`.
//!
//! Target forms (RFC 9112 3.2): origin-form (`/path?q`) passes; absolute-form (`http://a/b`,
//! `https://...`) passes and its authority becomes the `Host` (RFC 9112 3.2.2: a Host header
//! beside it is ignored); asterisk-form passes for `OPTIONS` only and goes to the downstream as
//! `OPTIONS *`; authority-form (`evil:80`) outside `CONNECT`, any other scheme, userinfo
//! (`http://u@a/`) and anything else (`abc`) are 400.
//!
//! Only the absolute-form path allocates (the new Host value); everything else borrows.

use http::header::HOST;
use http::{HeaderValue, Method, Request, Version};

use crate::error::ProxyError;
use crate::h1::head::valid_host;

/// Refuse what must not be forwarded, and set `Host` from an absolute-form target.
pub fn check<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    let uri = req.uri();
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(ProxyError::BadRequest(
                "request target scheme not http or https",
            ));
        }
        let host = match uri.authority() {
            Some(a) if valid_host(a.as_str().as_bytes()) => a.as_str(),
            _ => {
                return Err(ProxyError::BadRequest(
                    "invalid authority in the request target",
                ))
            }
        };
        let value = HeaderValue::from_str(host)
            .map_err(|_| ProxyError::BadRequest("invalid authority in the request target"))?;
        let h = req.headers_mut();
        h.remove(HOST);
        h.insert(HOST, value);
        return Ok(());
    }
    if uri.authority().is_some() {
        return Err(ProxyError::BadRequest(
            "authority-form target outside CONNECT",
        ));
    }
    let path = uri.path();
    if !(path.starts_with('/') || (path == "*" && req.method() == Method::OPTIONS)) {
        return Err(ProxyError::BadRequest("request target not in origin form"));
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("HTTP/1.1 request without Host"))
        }
        (Some(_), Some(_)) => Err(ProxyError::BadRequest("more than one Host")),
        (Some(h), None) if !valid_host(h.as_bytes()) => Err(ProxyError::BadRequest("invalid Host")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, version: Version, hosts: &[&[u8]]) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .uri(target)
            .version(version);
        for h in hosts {
            b = b.header(HOST, HeaderValue::from_bytes(h).unwrap());
        }
        b.body(()).unwrap()
    }

    fn status(r: &mut Request<()>) -> u16 {
        match check(r) {
            Ok(()) => 200,
            Err(e) => e.status().as_u16(),
        }
    }

    #[test]
    fn host_rules() {
        let v11 = Version::HTTP_11;
        assert_eq!(status(&mut req("GET", "/", v11, &[b"a.test:80"])), 200);
        assert_eq!(status(&mut req("GET", "/", v11, &[b"[::1]:8080"])), 200);
        assert_eq!(status(&mut req("GET", "/", v11, &[])), 400);
        assert_eq!(status(&mut req("GET", "/", v11, &[b"a", b"b"])), 400);
        assert_eq!(status(&mut req("GET", "/", v11, &[b"a b/c@d"])), 400);
        assert_eq!(status(&mut req("GET", "/", v11, &[b"u@a"])), 400);
        assert_eq!(status(&mut req("GET", "/", v11, &[b""])), 400);
        // HTTP/1.0 needs no Host, but one it sends must be valid.
        assert_eq!(status(&mut req("GET", "/", Version::HTTP_10, &[])), 200);
        assert_eq!(
            status(&mut req("GET", "/", Version::HTTP_10, &[b"a/b"])),
            400
        );
    }

    #[test]
    fn target_forms() {
        let v11 = Version::HTTP_11;
        let mut r = req("GET", "http://a.test:81/b?c", v11, &[b"x", b"y"]);
        assert_eq!(status(&mut r), 200);
        let hosts: Vec<_> = r.headers().get_all(HOST).iter().collect();
        assert_eq!(hosts, ["a.test:81"]);
        assert_eq!(status(&mut req("GET", "https://a/", v11, &[])), 200);
        assert_eq!(status(&mut req("GET", "ftp://a/b", v11, &[b"a"])), 400);
        assert_eq!(status(&mut req("GET", "http://u:p@a/b", v11, &[b"a"])), 400);
        assert_eq!(status(&mut req("GET", "abc", v11, &[b"a"])), 400);
        assert_eq!(status(&mut req("GET", "evil:80", v11, &[b"a"])), 400);
        assert_eq!(status(&mut req("GET", "*", v11, &[b"a"])), 400);
        assert_eq!(status(&mut req("OPTIONS", "*", v11, &[b"a"])), 200);
        assert_eq!(status(&mut req("CONNECT", "evil:80", v11, &[b"a"])), 405);
        // `connect` is an extension method, not a tunnel.
        assert_eq!(status(&mut req("connect", "/", v11, &[b"a"])), 200);
    }
}
