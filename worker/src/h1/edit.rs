//! The heads rproxy writes, built from the bytes it read (no header map): the request for the
//! downstream (DESIGN section 7: hop-by-hop headers out, names with `_` out, every header
//! rproxy can produce out, then ours in; the route's rewrite applied to the target) and the
//! response for the client (hop-by-hop out, the route's `strip-headers` out, our framing and
//! `Connection` in). Header lines that pass are copied as they came (name case included).
//! Pure: appends to a caller's buffer, allocates nothing once that buffer has grown.

use http::HeaderName;

use crate::h1::head::{eq_lower, tokens, HeaderSpan, ResponseHead};

/// Headers that never cross a proxy (RFC 9110 7.6.1), besides what `Connection` names.
#[cfg(test)]
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// Whether `name` is one of [`HOP_BY_HOP`]; dispatched on the length first, as most names
/// are none of them (one comparison instead of seven per header line).
fn hop_by_hop(name: &[u8]) -> bool {
    match name.len() {
        2 => eq_lower(name, b"te"),
        7 => eq_lower(name, b"trailer") || eq_lower(name, b"upgrade"),
        10 => eq_lower(name, b"connection") || eq_lower(name, b"keep-alive"),
        16 => eq_lower(name, b"proxy-connection"),
        17 => eq_lower(name, b"transfer-encoding"),
        _ => false,
    }
}

/// Header lines passed on, copied from the bytes read: consecutive lines the peer wrote
/// exactly as [`line`] would (`name: value\r\n`, the usual case) go out as one copy of their
/// bytes instead of four pieces each.
struct Verbatim<'a> {
    buf: &'a [u8],
    /// The run of such lines not yet copied: `buf[start..end]`.
    start: usize,
    end: usize,
}

impl<'a> Verbatim<'a> {
    fn new(buf: &'a [u8]) -> Verbatim<'a> {
        Verbatim {
            buf,
            start: 0,
            end: 0,
        }
    }

    /// Pass on header line `h`. Inline, the usual case (the line follows the run, as
    /// written) is a few comparisons and a store; the rest is out of line.
    #[inline(always)]
    fn keep(&mut self, out: &mut Vec<u8>, h: &HeaderSpan) {
        let (n, v) = (h.name.range(), h.value.range());
        if n.start == self.end
            && v.start == n.end + 2
            && self.buf.get(n.end..v.start) == Some(b": ")
            && self.buf.get(v.end..v.end + 2) == Some(b"\r\n")
        {
            self.end = v.end + 2;
        } else {
            self.keep_apart(out, h);
        }
    }

    #[inline(never)]
    fn keep_apart(&mut self, out: &mut Vec<u8>, h: &HeaderSpan) {
        let (n, v) = (h.name.range(), h.value.range());
        let as_written = v.start == n.end + 2
            && self.buf.get(n.end..v.start) == Some(b": ")
            && self.buf.get(v.end..v.end + 2) == Some(b"\r\n");
        if !as_written {
            self.flush(out);
            line(out, &self.buf[n], &self.buf[v]);
            return;
        }
        if n.start != self.end {
            // A line was left out (or rewritten) before this one: a new run.
            self.flush(out);
            self.start = n.start;
        }
        self.end = v.end + 2;
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        if self.end > self.start {
            out.extend_from_slice(&self.buf[self.start..self.end]);
        }
        self.start = self.end;
    }
}

/// How the forwarded request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// What the forwarded request head says besides the client's own header lines.
pub struct RequestEdit<'a> {
    pub method: &'a [u8],
    /// The request-target to send (rewritten, or origin-form of an absolute-form target).
    pub target: &'a [u8],
    /// `Some`: the Host to send instead of the client's Host lines (absolute-form target).
    pub host: Option<&'a [u8]>,
    /// Keep `Connection: upgrade` + `Upgrade: websocket` (a WebSocket handshake).
    pub websocket: bool,
    pub framing: Framing,
    /// The client address for X-Forwarded-For (`None`: flag off).
    pub xff: Option<&'a [u8]>,
    /// Append the client's own X-Forwarded-For chain before `xff` (the peer is a trusted
    /// proxy).
    pub xff_chain: bool,
    /// X-Forwarded-Proto (`None`: flag off).
    pub xfp: Option<&'a [u8]>,
    /// Configured x509-extension header names (lowercase): always removed from the client's.
    pub extension_names: &'a [HeaderName],
    /// A `Connection` line names some header ([`crate::h1::head::ConnTokens::other`]): only
    /// then is each line looked up among the names.
    pub connection_names: bool,
}

/// What ends the request line rproxy writes.
const REQUEST_VERSION: &[u8] = b" HTTP/1.1\r\n";

/// Where in `buf` the client's request line is, if it is exactly the one rproxy would write:
/// `e`'s method and target are the client's own bytes (not rewritten), one space apart, then
/// ` HTTP/1.1` (an HTTP/1.0 request line is rewritten).
fn written_request_line(buf: &[u8], e: &RequestEdit<'_>) -> Option<std::ops::Range<usize>> {
    let offset = |part: &[u8]| {
        let (p, b) = (part.as_ptr() as usize, buf.as_ptr() as usize);
        (p >= b && p + part.len() <= b + buf.len()).then(|| p - b)
    };
    let method = offset(e.method)?;
    let target = offset(e.target)?;
    let target_end = target + e.target.len();
    let end = target_end + REQUEST_VERSION.len();
    (target == method + e.method.len() + 1
        && buf.get(target - 1) == Some(&b' ')
        && buf.get(target_end..end) == Some(REQUEST_VERSION))
    .then_some(method..end)
}

/// Append the head of the request for the downstream to `out`: request line, the client's
/// header lines that may pass, then rproxy's; `extra` adds more lines (the X-SSL-* headers of
/// a TLS client) before the final empty line.
pub fn request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    spans: &[HeaderSpan],
    e: &RequestEdit<'_>,
    extra: impl FnOnce(&mut Vec<u8>),
) {
    let mut kept = Verbatim::new(buf);
    match written_request_line(buf, e) {
        // Already what would be written: it starts the first run of bytes copied as they are.
        Some(line) => (kept.start, kept.end) = (line.start, line.end),
        None => {
            out.extend_from_slice(e.method);
            out.push(b' ');
            out.extend_from_slice(e.target);
            out.extend_from_slice(REQUEST_VERSION);
        }
    }
    for h in spans {
        if !drop_request_header(h.name.of(buf), buf, spans, e) {
            kept.keep(out, h);
        }
    }
    kept.flush(out);
    if let Some(xff) = e.xff {
        out.extend_from_slice(b"X-Forwarded-For: ");
        if e.xff_chain {
            // A proxy we trust: keep what it says and append the peer.
            for h in spans {
                if h.name.of(buf).eq_ignore_ascii_case(b"x-forwarded-for") {
                    for v in tokens(h.value.of(buf)) {
                        out.extend_from_slice(v);
                        out.extend_from_slice(b", ");
                    }
                }
            }
        }
        out.extend_from_slice(xff);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(host) = e.host {
        line(out, b"Host", host);
    }
    match e.framing {
        Framing::None => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    if e.websocket {
        out.extend_from_slice(b"Connection: upgrade\r\nUpgrade: websocket\r\n");
    }
    match e.xfp {
        None => {}
        // Whole lines of known length: copied inline, not in four calls.
        Some(b"http") => out.extend_from_slice(b"X-Forwarded-Proto: http\r\n"),
        Some(b"https") => out.extend_from_slice(b"X-Forwarded-Proto: https\r\n"),
        Some(p) => line(out, b"X-Forwarded-Proto", p),
    }
    extra(out);
    out.extend_from_slice(b"\r\n");
}

/// Whether `name` is named by a `Connection` line (a hop-by-hop header of its own).
fn listed_in_connection(name: &[u8], buf: &[u8], spans: &[HeaderSpan]) -> bool {
    spans
        .iter()
        .filter(|h| h.name.of(buf).eq_ignore_ascii_case(b"connection"))
        .any(|h| tokens(h.value.of(buf)).any(|t| t.eq_ignore_ascii_case(name)))
}

fn drop_request_header(name: &[u8], buf: &[u8], spans: &[HeaderSpan], e: &RequestEdit<'_>) -> bool {
    // By length first: most names are none of these.
    let ours = match name.len() {
        // No Connection can name Host away.
        4 if eq_lower(name, b"host") => return e.host.is_some(),
        // rproxy answered `100 Continue` itself and sends the body at once.
        6 => eq_lower(name, b"expect"),
        14 => eq_lower(name, b"content-length"),
        15 => eq_lower(name, b"x-forwarded-for"),
        17 => eq_lower(name, b"x-forwarded-proto"),
        _ => false,
    };
    if ours
        || hop_by_hop(name)
        || name.contains(&b'_')
        || (name.len() > 6 && name[..6].eq_ignore_ascii_case(b"x-ssl-"))
        || e.extension_names
            .iter()
            .any(|n| eq_lower(name, n.as_str().as_bytes()))
    {
        return true;
    }
    e.connection_names && listed_in_connection(name, buf, spans)
}

/// What the client is told about the connection after this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConn {
    /// HTTP/1.1 default: nothing to say.
    Persistent,
    /// `Connection: keep-alive` (an HTTP/1.0 client that asked for it).
    KeepAlive,
    /// `Connection: close`: the connection ends after this response.
    Close,
}

/// Append the head of the response for the client: status line (HTTP/1.1, the downstream's
/// code and reason), the downstream's header lines except hop-by-hop ones (all kept for a
/// `101`), `strip` names and a Content-Length beside Transfer-Encoding; then
/// `Transfer-Encoding: chunked` when `chunked` (rproxy re-frames the body), and `conn`.
pub fn response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    spans: &[HeaderSpan],
    strip: &[HeaderName],
    chunked: bool,
    conn: ClientConn,
) {
    let mut kept = Verbatim::new(buf);
    let reason = head.reason.range();
    if head.minor == 1
        && !reason.is_empty()
        && reason.start == STATUS_PREFIX
        && buf.starts_with(b"HTTP/1.1 ")
        && buf[STATUS_PREFIX - 1] == b' '
        && buf.get(reason.end..reason.end + 2) == Some(b"\r\n")
    {
        // Already what `status_line` would write (the tokenizer read the code as exactly three
        // digits, and the code is at least 100): it starts the first run.
        kept.end = reason.end + 2;
    } else {
        status_line(out, head.status, &buf[reason]);
    }
    let switching = head.status == 101;
    for h in spans {
        let name = h.name.of(buf);
        let hop = !switching
            && (hop_by_hop(name)
                || (head.conn.other
                    && !eq_lower(name, b"host")
                    && listed_in_connection(name, buf, spans)));
        if hop
            || (head.has_te && eq_lower(name, b"content-length"))
            || strip.iter().any(|n| eq_lower(name, n.as_str().as_bytes()))
        {
            continue;
        }
        kept.keep(out, h);
    }
    kept.flush(out);
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    connection(out, conn);
    out.extend_from_slice(b"\r\n");
}

/// Bytes of `HTTP/1.1 200 ` before a reason phrase.
const STATUS_PREFIX: usize = 13;

/// `HTTP/1.1 {code} {reason}\r\n`; an empty reason gets the standard one.
pub fn status_line(out: &mut Vec<u8>, code: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    decimal(out, u64::from(code));
    out.push(b' ');
    if reason.is_empty() {
        let std = http::StatusCode::from_u16(code)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("");
        out.extend_from_slice(std.as_bytes());
    } else {
        out.extend_from_slice(reason);
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Connection` line for `conn` (none for a persistent HTTP/1.1 connection).
pub fn connection(out: &mut Vec<u8>, conn: ClientConn) {
    match conn {
        ClientConn::Persistent => {}
        ClientConn::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
        ClientConn::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
}

/// One `name: value` line.
pub fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, without allocating.
pub fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::head::{parse_request, parse_response};

    fn edit<'a>(target: &'a [u8], framing: Framing) -> RequestEdit<'a> {
        RequestEdit {
            method: b"GET",
            target,
            host: None,
            websocket: false,
            framing,
            xff: Some(b"10.0.0.1"),
            xff_chain: false,
            xfp: Some(b"http"),
            extension_names: &[],
            connection_names: false,
        }
    }

    fn forward(raw: &[u8], e: &RequestEdit<'_>) -> String {
        let mut spans = Vec::new();
        let h = parse_request(raw, 65536, &mut spans).unwrap().unwrap();
        let e = RequestEdit {
            connection_names: h.conn.other,
            ..*e
        };
        let mut out = Vec::new();
        request_head(&mut out, raw, &spans, &e, |_| {});
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_request_line_is_copied_only_when_it_is_what_rproxy_writes() {
        // method, target, version; the method and target taken from the client's bytes, as
        // `forwarded_head` does unless it rewrites.
        let cases: [(&[u8], &str); 5] = [
            (
                b"GET /a?b HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n",
                "GET /a?b HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n",
            ),
            (
                b"\r\nPUT /p HTTP/1.1\r\nHost: a\r\n\r\n",
                "PUT /p HTTP/1.1\r\nHost: a\r\n",
            ),
            // HTTP/1.0 goes out as HTTP/1.1.
            (
                b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n",
                "GET /a HTTP/1.1\r\nHost: a\r\n",
            ),
            (
                b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
                "OPTIONS * HTTP/1.1\r\nHost: a\r\n",
            ),
            // A hop-by-hop line right after the request line: the line is still kept.
            (
                b"GET / HTTP/1.1\r\nTE: x\r\nHost: a\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\n",
            ),
        ];
        for (raw, want) in cases {
            let mut spans = Vec::new();
            let h = parse_request(raw, 65536, &mut spans).unwrap().unwrap();
            let mut e = edit(h.target.of(raw), Framing::None);
            e.method = h.method.of(raw);
            e.xff = None;
            e.xfp = None;
            let http10 = raw.windows(8).any(|w| w == b"HTTP/1.0");
            assert_eq!(written_request_line(raw, &e).is_some(), !http10);
            let mut out = Vec::new();
            request_head(&mut out, raw, &spans, &e, |_| {});
            assert_eq!(String::from_utf8(out).unwrap(), format!("{want}\r\n"));
            // A rewritten target (not the client's bytes) is written out.
            let mut out = Vec::new();
            e.target = b"/new";
            request_head(&mut out, raw, &spans, &e, |_| {});
            let line = format!("{} /new HTTP/1.1\r\n", String::from_utf8_lossy(e.method));
            assert!(String::from_utf8(out).unwrap().starts_with(&line));
        }
    }

    #[test]
    fn hop_by_hop_forged_and_underscored_headers_go() {
        let raw = b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, Host\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-SSL-Subject: /CN=admin\r\nx_forwarded_for: 6\r\nX-Client-Oid: evil\r\nExpect: 100-continue\r\nX-Keep: yes\r\n\r\n";
        let ext = [HeaderName::from_static("x-client-oid")];
        let mut e = edit(b"/b", Framing::None);
        e.extension_names = &ext;
        assert_eq!(
            forward(raw, &e),
            "GET /b HTTP/1.1\r\nHost: a\r\nX-Keep: yes\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn host_framing_websocket_and_chain() {
        let raw = b"POST http://t.test:81/x HTTP/1.1\r\nHost: other\r\nContent-Length: 3\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, \r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let mut e = edit(b"/x", Framing::Length(3));
        e.method = b"POST";
        e.host = Some(b"t.test:81");
        e.websocket = true;
        e.xff_chain = true;
        e.xfp = None;
        assert_eq!(
            forward(raw, &e),
            "POST /x HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\nHost: t.test:81\r\nContent-Length: 3\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut e = edit(b"/", Framing::Chunked);
        e.xff = None;
        e.xfp = None;
        assert_eq!(
            forward(raw, &e),
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    fn respond(raw: &[u8], strip: &[HeaderName], chunked: bool, conn: ClientConn) -> String {
        let mut spans = Vec::new();
        let h = parse_response(raw, 65536, false, &mut spans)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        response_head(&mut out, raw, &h, &spans, strip, chunked, conn);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn response_heads() {
        let raw = b"HTTP/1.1 200 Fine\r\nServer: origin\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nX-Keep: 1\r\n\r\n";
        let strip = [HeaderName::from_static("server")];
        assert_eq!(
            respond(raw, &strip, true, ClientConn::Close),
            "HTTP/1.1 200 Fine\r\nX-Keep: 1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let raw = b"HTTP/1.1 101 \r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n";
        assert_eq!(
            respond(raw, &[], false, ClientConn::Persistent),
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n"
        );
    }

    /// Lines copied in runs come out exactly as if each were written with `line`, whatever
    /// the downstream's spacing, line ends, version or reason.
    #[test]
    fn verbatim_runs_match_line_by_line_output() {
        let heads: [&[u8]; 7] = [
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nConnection: keep-alive\r\nC: 3\r\n\r\n",
            b"\r\nHTTP/1.1 200 OK\r\nA: 1\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nA: 1\r\nConnection: keep-alive\r\n\r\n",
            b"HTTP/1.1 204 \r\nA:1\r\nB:  2\r\nC: 3 \r\nD: 4\nE: 5\r\nF: \r\nG:\r\n\r\n",
            b"HTTP/1.1 404 Not Here\nA: 1\nB: 2\n\n",
            b"HTTP/1.1 200 OK\r\nServer: o\r\nA: 1\r\nConnection: x-hop\r\nX-Hop: 1\r\nB: 2\r\n\r\n",
            b"HTTP/1.1 599 \xff\r\nA: \xfe\r\n\r\n",
        ];
        let strip = [HeaderName::from_static("server")];
        for raw in heads {
            let mut spans = Vec::new();
            let h = parse_response(raw, 65536, false, &mut spans)
                .unwrap()
                .unwrap();
            let mut got = Vec::new();
            response_head(&mut got, raw, &h, &spans, &strip, false, ClientConn::Close);
            let mut want = Vec::new();
            status_line(&mut want, h.status, h.reason.of(raw));
            for s in &spans {
                let name = s.name.of(raw);
                let hop = hop_by_hop(name)
                    || (h.conn.other && listed_in_connection(name, raw, &spans))
                    || name.eq_ignore_ascii_case(b"server");
                if !hop {
                    line(&mut want, name, s.value.of(raw));
                }
            }
            connection(&mut want, ClientConn::Close);
            want.extend_from_slice(b"\r\n");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn hop_by_hop_names_by_length() {
        for n in HOP_BY_HOP {
            assert!(hop_by_hop(n));
            assert!(hop_by_hop(&n.to_ascii_uppercase()));
        }
        for n in [
            &b"host"[..],
            b"tee",
            b"upgrades",
            b"x-connection",
            b"",
            b"content-length",
        ] {
            assert!(!hop_by_hop(n), "{}", String::from_utf8_lossy(n));
        }
    }

    #[test]
    fn decimals() {
        let mut out = Vec::new();
        decimal(&mut out, 0);
        out.push(b' ');
        decimal(&mut out, u64::MAX);
        assert_eq!(out, b"0 18446744073709551615");
    }
}
