//! Request and response heads scanned ([`super::scan`]) into a compact index over the bytes
//! (no copy, no allocation: the caller lends the header index, which lives in the connection's
//! pooled buffers), plus the framing verdict of RFC 9112 6 and DESIGN sections 7 and 8, decided
//! here and nowhere else: Content-Length, chunked, close-delimited or no body; the `Connection`
//! tokens; a WebSocket upgrade; `Expect: 100-continue`; the Host and the request-target form.
//!
//! Stricter than hyper where a proxy must be (request smuggling): a request with both
//! `Content-Length` and `Transfer-Encoding`, a `Transfer-Encoding` other than one `chunked`,
//! differing or list-valued `Content-Length`, obs-fold, a missing, repeated or invalid `Host`
//! are refused (400) instead of resolved.

use std::ops::Range;

use super::scan::{self, ScanError, Scanned};

/// Header lines a head may have; more is answered like a head that is too large (431, as hyper
/// does with its own limit of 100).
pub const MAX_HEADERS: usize = 100;

/// Largest `Content-Length` accepted (a signed 64-bit offset, as nginx): a downstream doing
/// signed arithmetic must not read a huge value as negative.
pub const MAX_CONTENT_LENGTH: u64 = i64::MAX as u64;

/// A byte range in the buffer a head was parsed from. `u32`: a head is at most
/// `max-header-size` bytes, far below 4 GiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes of this span in `buf` (the buffer the head was parsed from).
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    pub fn range(&self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One header line: its name and its value (without surrounding whitespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
}

/// How a request's body is framed (RFC 9112 6.3; a request is never close-delimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqBody {
    /// No body (no Content-Length and no Transfer-Encoding, or `Content-Length: 0`).
    None,
    /// Exactly this many bytes follow the head (never 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`: decode with [`crate::h1::chunked::Decoder`].
    Chunked,
}

/// How a response's body is framed (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespBody {
    /// No body: the request was HEAD, or the status is 1xx, 204 or 304 (whatever the headers
    /// say), or `Content-Length: 0`.
    None,
    /// Exactly this many bytes (never 0).
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked` (a Content-Length beside it is ignored and must
    /// not be forwarded).
    Chunked,
    /// Until the downstream closes: no framing header, or a Transfer-Encoding not ending in
    /// `chunked`. The connection cannot be reused.
    Close,
}

/// Why a head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Longer than the limit, or more than [`MAX_HEADERS`] lines: 431 for a request.
    TooLarge,
    /// Not HTTP/1.x, or framing a proxy must not pass on: 400 for a request, 502 for a
    /// response. The text is for the debug log.
    Malformed(&'static str),
    /// A request whose request line and framing are sound but whose target or Host DESIGN
    /// section 7 refuses: 400 and close, like `Malformed`, but the request line is known (for
    /// the access log) and the header index is filled.
    Refused {
        why: &'static str,
        method: Span,
        target: Span,
    },
}

/// What the `Connection` header (every line of it) says, and what it names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Some token other than these three: a header name to strip as hop-by-hop.
    pub other: bool,
}

/// The request-target form (RFC 9112 3.2), as DESIGN section 7 accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `/path?query`.
    Origin,
    /// `http://authority/path?query` (or https): the authority is the Host; `path` is what goes
    /// to the downstream (empty means `/`).
    Absolute { authority: Span, path: Span },
    /// `*`, for OPTIONS only.
    Asterisk,
}

/// A parsed request head: spans index the buffer it was parsed from; header lines are in the
/// `Vec<HeaderSpan>` lent to [`parse_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, leading empty lines and the final empty line included: the body (or
    /// the next request) starts here.
    pub len: usize,
    pub method: Span,
    pub target: Span,
    /// 0 or 1 (HTTP/1.0 or HTTP/1.1).
    pub minor: u8,
    pub body: ReqBody,
    pub conn: ConnTokens,
    /// `Upgrade` lists `websocket` and `Connection` lists `upgrade` (the only switch passed).
    pub websocket: bool,
    /// Some `Upgrade` header is present.
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// `CONNECT` (case-sensitive): answered 405, no target or Host checks were made.
    pub connect: bool,
    pub form: Target,
    /// The Host to route by: the authority of an absolute-form target, else the one Host
    /// header (`None`: HTTP/1.0 without Host).
    pub host: Option<Span>,
}

impl RequestHead {
    /// Whether the client wants the connection kept after this exchange (HTTP/1.1 unless
    /// `close`; HTTP/1.0 only with `keep-alive`).
    pub fn keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.conn.keep_alive && !self.conn.close
        } else {
            !self.conn.close
        }
    }
}

/// A parsed response head; header lines are in the `Vec<HeaderSpan>` lent to
/// [`parse_response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub minor: u8,
    /// The reason phrase (may be empty).
    pub reason: Span,
    pub body: RespBody,
    pub conn: ConnTokens,
    /// A `Transfer-Encoding` header was present (so a `Content-Length` must not be forwarded).
    pub has_te: bool,
}

impl ResponseHead {
    /// 1xx other than 101: an interim response to skip (the final one follows).
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// Whether the downstream keeps the connection open after this response (its body read to
    /// the end).
    pub fn reusable(&self) -> bool {
        let open = if self.minor == 0 {
            self.conn.keep_alive && !self.conn.close
        } else {
            !self.conn.close
        };
        open && self.body != RespBody::Close
    }
}

/// The length of a complete head from the scanner's verdict on `have` bytes, `None` while it
/// is incomplete and `max` is not reached; the errors both kinds of head share.
fn head_len<T>(
    scanned: Scanned<T>,
    len: impl FnOnce(&T) -> usize,
    have: usize,
    max: usize,
) -> Result<Option<T>, HeadError> {
    match scanned {
        Ok(Some(line)) if len(&line) > max => Err(HeadError::TooLarge),
        Ok(Some(line)) => Ok(Some(line)),
        Ok(None) if have >= max => Err(HeadError::TooLarge),
        Ok(None) => Ok(None),
        Err(ScanError::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(e.describe())),
    }
}

/// Parse a request head at the start of `buf`. `Ok(None)`: incomplete, read more (unless `buf`
/// already holds `max` bytes: then it is [`HeadError::TooLarge`]). `headers` is cleared and
/// filled with the header lines; its capacity is kept between calls (no allocation once it
/// has grown to [`MAX_HEADERS`]).
pub fn parse_request(
    buf: &[u8],
    max: usize,
    headers: &mut Vec<HeaderSpan>,
) -> Result<Option<RequestHead>, HeadError> {
    let scanned = scan::request(buf, headers, MAX_HEADERS);
    let Some(line) = head_len(scanned, |l| l.len, buf.len(), max)? else {
        return Ok(None);
    };
    let f = Fields::scan::<true>(buf, headers)?;
    let method_b = line.method.of(buf);
    let minor = line.minor;
    let connect = method_b == b"CONNECT";
    let body = match (f.te, f.cl) {
        (Some(_), Some(_)) => {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (Some(te), None) => {
            if f.te_lines > 1 || !te.of(buf).eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::Malformed("Transfer-Encoding other than chunked"));
            }
            if minor == 0 {
                return Err(HeadError::Malformed("Transfer-Encoding on HTTP/1.0"));
            }
            ReqBody::Chunked
        }
        (None, Some(0)) | (None, None) => ReqBody::None,
        (None, Some(n)) => ReqBody::Length(n),
    };
    let target_span = line.target;
    let mut head = RequestHead {
        len: line.len,
        method: line.method,
        target: target_span,
        minor,
        body,
        conn: f.conn,
        websocket: f.upgrade_websocket && f.conn.upgrade,
        upgrade: f.upgrade,
        expect_continue: f.expect_continue,
        connect,
        form: Target::Origin,
        host: None,
    };
    if connect {
        return Ok(Some(head));
    }
    let refuse = |why| HeadError::Refused {
        why,
        method: head.method,
        target: head.target,
    };
    head.form = target_form(buf, target_span, method_b).map_err(refuse)?;
    head.host = match head.form {
        Target::Absolute { authority, .. } => Some(authority),
        _ => match (f.hosts, f.host) {
            (0, _) if minor == 1 => return Err(refuse("HTTP/1.1 request without Host")),
            (0, _) => None,
            (1, Some(h)) if valid_host_at(buf, h) => Some(h),
            (1, _) => return Err(refuse("invalid Host")),
            _ => return Err(refuse("more than one Host")),
        },
    };
    Ok(Some(head))
}

/// Parse a response head at the start of `buf`, for a request whose method was HEAD when
/// `head_request` (its response has no body whatever the headers say). `Ok(None)`: read more
/// (unless `buf` holds `max` bytes: [`HeadError::TooLarge`]).
pub fn parse_response(
    buf: &[u8],
    max: usize,
    head_request: bool,
    headers: &mut Vec<HeaderSpan>,
) -> Result<Option<ResponseHead>, HeadError> {
    let scanned = scan::response(buf, headers, MAX_HEADERS);
    let Some(line) = head_len(scanned, |l| l.len, buf.len(), max)? else {
        return Ok(None);
    };
    let (status, minor) = (line.status, line.minor);
    // RFC 9110 15: three digits, the first 1-5 (hyper takes up to 999; so do we).
    if status < 100 {
        return Err(HeadError::Malformed("status code below 100"));
    }
    let f = Fields::scan::<false>(buf, headers)?;
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    if minor == 0 && f.te.is_some() && !no_body {
        // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (as
        // hyper, ignored where the response has no body anyway).
        return Err(HeadError::Malformed(
            "Transfer-Encoding in an HTTP/1.0 response",
        ));
    }
    let body = if no_body {
        RespBody::None
    } else if f.te_last.is_some() {
        if f.te_last_chunked {
            RespBody::Chunked
        } else {
            RespBody::Close
        }
    } else {
        match f.cl {
            Some(0) => RespBody::None,
            Some(n) => RespBody::Length(n),
            None => RespBody::Close,
        }
    };
    Ok(Some(ResponseHead {
        len: line.len,
        status,
        minor,
        reason: line.reason,
        body,
        conn: f.conn,
        has_te: f.te.is_some(),
    }))
}

/// What the framing and routing rules need from the header lines, in one pass.
#[derive(Default)]
struct Fields {
    cl: Option<u64>,
    te: Option<Span>,
    te_lines: usize,
    /// The last Transfer-Encoding line, and whether its last coding is `chunked`.
    te_last: Option<Span>,
    te_last_chunked: bool,
    hosts: usize,
    host: Option<Span>,
    conn: ConnTokens,
    upgrade: bool,
    upgrade_websocket: bool,
    expect_continue: bool,
}

impl Fields {
    /// Inlined into both parsers: returned by value, `Fields` was copied on every head.
    /// `REQUEST`: look for the request-only fields too (Host, Expect, Upgrade).
    #[inline(always)]
    fn scan<const REQUEST: bool>(buf: &[u8], headers: &[HeaderSpan]) -> Result<Fields, HeadError> {
        let mut f = Fields::default();
        for h in headers {
            // Dispatch on the length first (most lines are none of these); the bytes are
            // sliced out only for a line that may be one.
            let name = || h.name.of(buf);
            let value = || h.value.of(buf);
            match h.name.end - h.name.start {
                4 if REQUEST && eq_lower(name(), b"host") => {
                    f.hosts += 1;
                    f.host = Some(h.value);
                }
                6 if REQUEST && eq_lower(name(), b"expect") => {
                    f.expect_continue |= eq_lower(value(), b"100-continue");
                }
                7 if REQUEST && eq_lower(name(), b"upgrade") => {
                    f.upgrade = true;
                    f.upgrade_websocket |= tokens(value()).any(|t| eq_lower(t, b"websocket"));
                }
                10 if eq_lower(name(), b"connection") => {
                    for t in tokens(value()) {
                        if eq_lower(t, b"close") {
                            f.conn.close = true;
                        } else if eq_lower(t, b"keep-alive") {
                            f.conn.keep_alive = true;
                        } else if eq_lower(t, b"upgrade") {
                            f.conn.upgrade = true;
                        } else {
                            f.conn.other = true;
                        }
                    }
                }
                14 if eq_lower(name(), b"content-length") => {
                    let n = content_length(value())?;
                    if f.cl.is_some_and(|prev| prev != n) {
                        return Err(HeadError::Malformed("differing Content-Length values"));
                    }
                    f.cl = Some(n);
                }
                17 if eq_lower(name(), b"transfer-encoding") => {
                    f.te_lines += 1;
                    let span = h.value;
                    f.te.get_or_insert(span);
                    f.te_last = Some(span);
                    f.te_last_chunked = tokens(value())
                        .last()
                        .is_some_and(|t| eq_lower(t, b"chunked"));
                }
                _ => {}
            }
        }
        Ok(f)
    }
}

/// A Content-Length value: digits only (no sign, no list, no space inside), at most
/// [`MAX_CONTENT_LENGTH`].
fn content_length(v: &[u8]) -> Result<u64, HeadError> {
    let bad = HeadError::Malformed("invalid Content-Length");
    if v.is_empty() || v.len() > 19 {
        return Err(bad);
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(bad);
        }
        n = n * 10 + u64::from(b - b'0');
    }
    if n > MAX_CONTENT_LENGTH {
        return Err(bad);
    }
    Ok(n)
}

/// `s.eq_ignore_ascii_case(lower)` where `lower` is written in lowercase ASCII (a header
/// name or token rproxy knows), comparing 8 bytes at a time: the names and tokens looked
/// for in every head (`content-length`, `connection`, `keep-alive`, ...) are mostly longer
/// than 8 bytes, and the byte-wise comparison was the larger part of scanning a head.
#[inline(always)]
pub fn eq_lower(s: &[u8], lower: &[u8]) -> bool {
    debug_assert!(!lower
        .iter()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii()));
    let n = s.len();
    if n != lower.len() {
        return false;
    }
    // Where `y` has a letter, `x` may differ from it by the case bit (0x20) only.
    let same = |x: u64, y: u64| x | letters(y) == y;
    // Windows of 8 (or, below 8 bytes, 4) bytes; the last one overlaps the one before it
    // rather than leaving a tail to compare byte by byte.
    let word = |b: &[u8], at: usize, w: usize| -> u64 {
        match (w, b.get(at..)) {
            (8, Some(r)) => r.first_chunk::<8>().map_or(0, |c| u64::from_le_bytes(*c)),
            (_, Some(r)) => r
                .first_chunk::<4>()
                .map_or(0, |c| u64::from(u32::from_le_bytes(*c))),
            _ => 0,
        }
    };
    let w = match n {
        8.. => 8,
        4..8 => 4,
        _ => return s.eq_ignore_ascii_case(lower),
    };
    let mut at = 0;
    loop {
        let i = at.min(n - w);
        if !same(word(s, i, w), word(lower, i, w)) {
            return false;
        }
        if i == n - w {
            return true;
        }
        at += w;
    }
}

/// 0x20 in each byte of `y` (ASCII: every byte below 0x80) that is a lowercase letter.
fn letters(y: u64) -> u64 {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const fn each(b: u8) -> u64 {
        u64::from_le_bytes([b; 8])
    }
    // A byte below 0x80 plus (0x80 - c) has its high bit set iff it is >= c; no carry leaves
    // a byte.
    let ge_a = y.wrapping_add(each(0x80 - b'a')) & HIGH;
    let gt_z = y.wrapping_add(each(0x80 - b'z' - 1)) & HIGH;
    (ge_a & !gt_z) >> 2
}

/// The comma-separated tokens of a list-valued header, trimmed, empty ones skipped.
pub fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// The request-target forms DESIGN section 7 lets through.
fn target_form(buf: &[u8], target: Span, method: &[u8]) -> Result<Target, &'static str> {
    let t = target.of(buf);
    if t.first() == Some(&b'/') {
        return Ok(Target::Origin);
    }
    if t == b"*" {
        return if method == b"OPTIONS" {
            Ok(Target::Asterisk)
        } else {
            Err("request target not in origin form")
        };
    }
    let Some(colon) = t.iter().position(|&b| b == b':') else {
        return Err("request target not in origin form");
    };
    let scheme = &t[..colon];
    let rest = &t[colon..];
    if !rest.starts_with(b"://") {
        // `evil:80` (authority-form) or `abc:def`.
        return Err("authority-form target outside CONNECT");
    }
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return Err("request target scheme not http or https");
    }
    let auth_start = target.start as usize + colon + 3;
    let after = &buf[auth_start..target.end as usize];
    let auth_len = after
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(after.len());
    let authority = Span {
        start: auth_start as u32,
        end: (auth_start + auth_len) as u32,
    };
    if !valid_host_at(buf, authority) {
        return Err("invalid authority in the request target");
    }
    let path = Span {
        start: authority.end,
        end: target.end,
    };
    if path.of(buf).first().is_some_and(|&b| b != b'/') {
        // `http://a?x`: the query without a path: origin-form needs the `/`.
        return Err("request target not in origin form");
    }
    Ok(Target::Absolute { authority, path })
}

/// A Host (or target authority) a downstream and a log reader will split as we do: not empty,
/// and none of what ends or splits an authority (whitespace and controls, `/`, `\\`, `?`, `#`)
/// or brings userinfo (`@`). Like nginx, other bytes pass (`{`, `%`, non-ASCII): they are data
/// to a downstream, and the access log escapes them.
pub fn valid_host(v: &[u8]) -> bool {
    valid_host_at(
        v,
        Span {
            start: 0,
            end: v.len() as u32,
        },
    )
}

/// [`valid_host`] on `host` within the head `buf`: a Host of up to 16 bytes is tested in one
/// 16-byte window of the head (`scan::all_of`).
fn valid_host_at(buf: &[u8], host: Span) -> bool {
    !host.is_empty() && scan::all_of::<HostByte>(buf, host.range())
}

/// The bytes [`valid_host`] lets through, tested as many at a time as [`scan::run_end`] can.
struct HostByte;

impl scan::Class for HostByte {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn stops16(v: std::arch::x86_64::__m128i) -> u32 {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of every x86_64 CPU (the target's baseline features).
        unsafe {
            let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
            // Unsigned `v <= 0x20` is `min(v, 0x20) == v`.
            let ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x20)), v);
            let a = _mm_or_si128(
                _mm_or_si128(eq(0x7f), eq(b'/')),
                _mm_or_si128(eq(b'\\'), eq(b'?')),
            );
            let b = _mm_or_si128(_mm_or_si128(eq(b'#'), eq(b'@')), ctl);
            _mm_movemask_epi8(_mm_or_si128(a, b)) as u32
        }
    }

    #[inline(always)]
    fn stops8(x: u64) -> u64 {
        let low = x & !scan::HIGH;
        let eq = |c| scan::eq7(low, c);
        let hit = !scan::ge7(low, 0x21)
            | eq(0x7f)
            | eq(b'/')
            | eq(b'\\')
            | eq(b'?')
            | eq(b'#')
            | eq(b'@');
        // Bytes >= 0x80 pass.
        hit & !x & scan::HIGH
    }

    #[inline(always)]
    fn stops(b: u8) -> bool {
        b <= b' ' || matches!(b, 0x7f | b'/' | b'\\' | b'?' | b'#' | b'@')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65536;

    #[test]
    fn host_bytes() {
        // Every byte at every position of hosts tested 16, 8 and 1 byte(s) at a time.
        for b in 0..=255u8 {
            let bad = b <= b' ' || matches!(b, 0x7f | b'/' | b'\\' | b'?' | b'#' | b'@');
            for len in [3, 8, 13, 16, 21, 40] {
                for pos in 0..len {
                    let mut h = vec![b'a'; len];
                    h[pos] = b;
                    assert_eq!(valid_host(&h), !bad, "{b:#x} at {pos} of {len}");
                    // Within a head: refused bytes after the range do not count.
                    let mut buf = h.clone();
                    buf.extend_from_slice(b"\r\n/@ \x00?#\\\x7f\r\n\r\n/////////");
                    assert_eq!(
                        scan::all_of::<HostByte>(&buf, 0..len),
                        !bad,
                        "{b:#x} at {pos} of {len}"
                    );
                }
            }
        }
        assert!(!valid_host(b""));
        assert!(
            valid_host(b"127.0.0.1:8080")
                && valid_host(b"[::1]:80")
                && valid_host(b"\xc3\xa9.test")
        );
    }

    /// `eq_lower` answers as `eq_ignore_ascii_case` for every name and token it is used with,
    /// against case changes and every single-byte change (the bytes next to letters under the
    /// case bit: `@`, `[`, `` ` ``, `{`; controls; non-ASCII).
    #[test]
    fn eq_lower_is_eq_ignore_ascii_case() {
        let words: [&[u8]; 16] = [
            b"te",
            b"host",
            b"close",
            b"expect",
            b"chunked",
            b"upgrade",
            b"trailer",
            b"websocket",
            b"connection",
            b"keep-alive",
            b"100-continue",
            b"content-length",
            b"x-forwarded-for",
            b"proxy-connection",
            b"transfer-encoding",
            b"x-forwarded-proto",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for w in words {
            assert!(eq_lower(w, w));
            assert!(eq_lower(&w.to_ascii_uppercase(), w));
            assert!(!eq_lower(&w[1..], w));
            for i in 0..w.len() {
                for b in 0..=255u8 {
                    let mut v = w.to_vec();
                    // Random case elsewhere.
                    for c in v.iter_mut() {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x & 1 == 1 {
                            *c = c.to_ascii_uppercase();
                        }
                    }
                    v[i] = b;
                    assert_eq!(eq_lower(&v, w), v.eq_ignore_ascii_case(w), "{v:?} {w:?}");
                }
            }
        }
    }

    fn req(s: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        parse_request(s, MAX, &mut Vec::new())
    }

    fn bad(s: &[u8]) -> &'static str {
        match req(s) {
            Err(HeadError::Malformed(why) | HeadError::Refused { why, .. }) => why,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(s)),
        }
    }

    fn ok(s: &[u8]) -> RequestHead {
        match req(s) {
            Ok(Some(h)) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(s)),
        }
    }

    #[test]
    fn simple_request_indexes_the_bytes() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: x.test\r\nX-A:  1 \r\n\r\nNEXT";
        let mut hs = Vec::new();
        let h = parse_request(raw, MAX, &mut hs).unwrap().unwrap();
        assert_eq!(h.len, raw.len() - 4);
        assert_eq!(h.method.of(raw), b"GET");
        assert_eq!(h.target.of(raw), b"/a?b");
        assert_eq!(h.minor, 1);
        assert_eq!(h.body, ReqBody::None);
        assert_eq!(h.form, Target::Origin);
        assert_eq!(h.host.unwrap().of(raw), b"x.test");
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[1].name.of(raw), b"X-A");
        assert_eq!(hs[1].value.of(raw), b"1");
        assert!(h.keep_alive());
    }

    #[test]
    fn incomplete_and_too_large() {
        assert_eq!(req(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let mut long = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        long.resize(100, b'a');
        assert_eq!(
            parse_request(&long, 100, &mut Vec::new()),
            Err(HeadError::TooLarge)
        );
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request(&long, 100, &mut Vec::new()),
            Err(HeadError::TooLarge)
        );
        assert!(parse_request(&long, long.len(), &mut Vec::new()).is_ok());
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(req(&many), Err(HeadError::TooLarge));
    }

    #[test]
    fn framing() {
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").body,
            ReqBody::Length(5)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").body,
            ReqBody::None
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n")
                .body,
            ReqBody::Length(5)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").body,
            ReqBody::Chunked
        );
        for attack in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        ] {
            bad(attack);
        }
    }

    #[test]
    fn host_rules() {
        bad(b"GET / HTTP/1.1\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nHost: a b/c@d\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
        assert_eq!(ok(b"GET / HTTP/1.0\r\n\r\n").host, None);
        bad(b"GET / HTTP/1.0\r\nHost: a/b\r\n\r\n");
        let raw = b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n";
        assert_eq!(ok(raw).host.unwrap().of(raw), b"[::1]:8080");
    }

    #[test]
    fn target_forms() {
        let raw = b"GET http://a.test:81/b?c HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n";
        let h = ok(raw);
        assert_eq!(h.host.unwrap().of(raw), b"a.test:81");
        let Target::Absolute { path, .. } = h.form else {
            panic!("{:?}", h.form)
        };
        assert_eq!(path.of(raw), b"/b?c");
        let raw = b"GET HTTPS://a HTTP/1.1\r\n\r\n";
        let Target::Absolute { path, .. } = ok(raw).form else {
            panic!()
        };
        assert!(path.is_empty());
        bad(b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n");
        bad(b"GET http://u:p@a/b HTTP/1.1\r\nHost: a\r\n\r\n");
        bad(b"GET abc HTTP/1.1\r\nHost: a\r\n\r\n");
        bad(b"GET evil:80 HTTP/1.1\r\nHost: a\r\n\r\n");
        bad(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").form,
            Target::Asterisk
        );
        let h = ok(b"CONNECT evil:80 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(h.connect);
        // `connect` is an extension method, not a tunnel.
        assert!(!ok(b"connect / HTTP/1.1\r\nHost: a\r\n\r\n").connect);
    }

    #[test]
    fn connection_upgrade_expect() {
        let h = ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, x-secret\r\nUpgrade: WebSocket\r\nExpect: 100-Continue\r\n\r\n");
        assert!(h.websocket && h.upgrade && h.expect_continue);
        assert!(h.conn.upgrade && h.conn.other && !h.conn.close);
        let h = ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n");
        assert!(!h.websocket && h.upgrade);
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
    }

    #[test]
    fn leading_empty_lines_and_bare_lf() {
        let raw = b"\r\n\r\nGET / HTTP/1.1\nHost: a\n\n";
        let h = ok(raw);
        assert_eq!(h.len, raw.len());
        assert_eq!(h.method.of(raw), b"GET");
    }

    fn resp(s: &[u8], head: bool) -> Result<Option<ResponseHead>, HeadError> {
        parse_response(s, MAX, head, &mut Vec::new())
    }

    #[test]
    fn faulty_response_heads_are_refused() {
        let bad = |s: &[u8]| matches!(resp(s, false), Err(HeadError::Malformed(_)));
        assert!(bad(b"HTTP/1.1 050 Odd\r\nContent-Length: 0\r\n\r\n"));
        assert!(bad(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        // Without a body the framing does not matter (as hyper).
        assert!(resp(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            true
        )
        .is_ok());
        assert!(resp(b"HTTP/1.1 100 Continue\r\n\r\n", false).is_ok());
    }

    #[test]
    fn response_framing() {
        let r = |s: &[u8]| resp(s, false).unwrap().unwrap();
        assert_eq!(
            r(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n").body,
            RespBody::Length(3)
        );
        let h = r(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.body, RespBody::Chunked);
        assert!(h.has_te && h.reusable());
        let h = r(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.body, RespBody::Close);
        assert!(!h.reusable());
        assert_eq!(r(b"HTTP/1.1 200 OK\r\n\r\n").body, RespBody::Close);
        assert_eq!(
            r(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n").body,
            RespBody::None
        );
        assert_eq!(
            r(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n").body,
            RespBody::None
        );
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true)
                .unwrap()
                .unwrap()
                .body,
            RespBody::None
        );
        let h = r(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(h.is_interim());
        assert!(!r(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_interim());
        assert!(!r(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").reusable());
        assert!(
            r(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n").reusable()
        );
        assert!(
            !r(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n").reusable()
        );
        let raw = b"HTTP/1.1 404 Not There\r\n\r\n";
        assert_eq!(r(raw).reason.of(raw), b"Not There");
        assert!(resp(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
        assert!(resp(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", false).is_err());
        assert!(resp(b"SSH-2.0-OpenSSH\r\n\r\n", false).is_err());
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\n", false), Ok(None));
    }
}
