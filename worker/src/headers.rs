//! Request and response header rules (DESIGN section 7): hop-by-hop headers never cross the
//! proxy, and every header rproxy can produce is removed from what the client sent before
//! rproxy adds its own, so a client cannot forge X-Forwarded-For, X-Forwarded-Proto or X-SSL-*.

use std::net::IpAddr;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use rproxy_shared::cidr::{self, Cidr};
use rproxy_shared::config::Headers;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Remove hop-by-hop headers (RFC 9110 7.6.1): the fixed set and whatever `Connection` names,
/// except `Host`, which no `Connection` can name away. With `keep_upgrade`, `Upgrade:
/// websocket` (only that token) and `Connection: upgrade` stay for a protocol switch.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    if h.contains_key(CONNECTION) {
        // Rare path: names listed in Connection are removed too.
        let listed: Vec<HeaderName> = h
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| n != HOST && !(keep_upgrade && n == UPGRADE))
            .collect();
        for n in listed {
            h.remove(n);
        }
        h.remove(CONNECTION);
    }
    for n in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
    ] {
        h.remove(n);
    }
    if keep_upgrade {
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    } else {
        h.remove(UPGRADE);
    }
}

/// Remove request headers whose name has `_` (nginx's `underscores_in_headers off`): a
/// CGI-style downstream maps `-` and `_` alike, so `X_Forwarded_For` would read as our
/// `X-Forwarded-For`.
pub fn drop_underscored(h: &mut HeaderMap) {
    if h.keys().any(|k| k.as_str().contains('_')) {
        // Rare path.
        let names: Vec<HeaderName> = h
            .keys()
            .filter(|k| k.as_str().contains('_'))
            .cloned()
            .collect();
        for n in names {
            h.remove(n);
        }
    }
}

/// What the forwarding headers need to know about a client connection, computed once when it
/// is accepted (so the per-request work is a reference-count increment, not a format).
pub struct Peer {
    /// The client address (an IPv4-mapped IPv6 address as IPv4).
    pub ip: IpAddr,
    /// `ip` as text, inline (no allocation per connection): the longest IPv6 text is 45 bytes.
    text: [u8; 46],
    len: u8,
    /// Whether `ip` is in `trusted-proxies`.
    pub trusted: bool,
}

impl Peer {
    pub fn new(ip: IpAddr, trusted: &[Cidr]) -> Peer {
        use std::io::Write;
        let ip = cidr::unmap(ip);
        let mut text = [0u8; 46];
        let mut w = &mut text[..];
        let _ = write!(w, "{ip}");
        let len = (46 - w.len()) as u8;
        Peer {
            ip,
            text,
            len,
            trusted: trusted.iter().any(|c| c.contains(ip)),
        }
    }

    /// `ip` as the X-Forwarded-For value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }

    /// `ip` as a header value (HTTP/2 requests, which go through a header map).
    pub fn value(&self) -> HeaderValue {
        HeaderValue::from_bytes(self.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// Remove every header rproxy may produce, then add the ones `cfg` turns on.
/// `extension_names` are the configured x509-extension header names (lowercase).
pub fn set_forwarding(
    h: &mut HeaderMap,
    cfg: &Headers,
    peer: &Peer,
    proto: &'static str,
    extension_names: &[HeaderName],
) {
    let chain = if peer.trusted && h.contains_key(&X_FORWARDED_FOR) {
        // A proxy we trust: keep what it says and append the peer.
        let prior: Vec<&str> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if prior.is_empty() {
            None
        } else {
            HeaderValue::from_str(&format!("{}, {}", prior.join(", "), peer.ip)).ok()
        }
    } else {
        None
    };
    h.remove(&X_FORWARDED_FOR);
    h.remove(&X_FORWARDED_PROTO);
    for n in extension_names {
        h.remove(n);
    }
    if h.keys().any(|k| k.as_str().starts_with("x-ssl-")) {
        let ssl: Vec<HeaderName> = h
            .keys()
            .filter(|k| k.as_str().starts_with("x-ssl-"))
            .cloned()
            .collect();
        for n in ssl {
            h.remove(n);
        }
    }
    if cfg.x_forwarded_for {
        let v = chain.unwrap_or_else(|| peer.value());
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    if cfg.x_forwarded_proto {
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn peer_text() {
        let p = Peer::new("::ffff:10.1.2.3".parse().unwrap(), &[]);
        assert_eq!(p.as_bytes(), b"10.1.2.3");
        let long: IpAddr = "1234:5678:9abc:def0:1234:5678:9abc:def0".parse().unwrap();
        assert_eq!(Peer::new(long, &[]).as_bytes(), long.to_string().as_bytes());
    }

    #[test]
    fn hop_by_hop_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("host", "a"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("host"));
    }

    #[test]
    fn upgrade_kept_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn only_websocket_upgrades_and_host_stays() {
        let mut h = map(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "WebSocket, h2c")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        let mut h = map(&[("connection", "Host, close"), ("host", "a")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["host"], "a");
    }

    #[test]
    fn underscored_names_dropped() {
        let mut h = map(&[("x_forwarded_for", "6.6.6.6"), ("x-a", "1"), ("a_b", "2")]);
        drop_underscored(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-a"));
    }

    #[test]
    fn forged_headers_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-ssl-subject", "/CN=admin"),
            ("x-client-oid", "evil"),
        ]);
        let ext = [HeaderName::from_static("x-client-oid")];
        set_forwarding(
            &mut h,
            &Headers::default(),
            &Peer::new("10.0.0.1".parse().unwrap(), &[]),
            "http",
            &ext,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key("x-ssl-subject"));
        assert!(!h.contains_key("x-client-oid"));
    }

    #[test]
    fn trusted_proxy_chain_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        set_forwarding(
            &mut h,
            &Headers::default(),
            &Peer::new("10.0.0.1".parse().unwrap(), &trusted),
            "http",
            &[],
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
    }

    #[test]
    fn flags_off_still_strip() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6")]);
        let cfg = Headers {
            x_forwarded_for: false,
            x_forwarded_proto: false,
            ..Headers::default()
        };
        set_forwarding(
            &mut h,
            &cfg,
            &Peer::new("::1".parse().unwrap(), &[]),
            "http",
            &[],
        );
        assert!(h.is_empty());
    }
}
