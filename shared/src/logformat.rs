//! Access-log format compiler and renderer (DESIGN.md section 9).
//!
//! A `format` string from `[server.logging]` / `[server.vhost.logging]` is
//! compiled once, at configuration load, into a [`LogFormat`]: a list of
//! literal byte runs and variable slots. Unknown variables are rejected then,
//! so a typo is a configuration error instead of a silently wrong log.
//!
//! Rendering happens once per request on the proxy's hot path, so
//! [`LogFormat::render`] appends into a caller-provided `Vec<u8>` and performs
//! no heap allocation of its own (the caller's buffer may grow, and is meant
//! to be reused). The `{TS}` text is cached per thread and per unix second,
//! so `localtime_r` runs at most once per second per thread.
//!
//! Client-controlled text (URI, method, protocol, headers, ...) is data: it
//! is copied byte for byte, never interpreted as a format, and escaped in
//! nginx's `escape=default` style (`\xHH` for control bytes, DEL, `"`, `\`
//! and bytes >= 0x80) so that one request is always exactly one line.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

/// Read access to a header map, so this crate can look headers up without
/// depending on the `http` crate (the worker implements it for its own map).
///
/// Contract: `name` is always ASCII lowercase (the format compiler lowercases
/// `{US_HDR}:'Name'` / `{DS_HDR}:'Name'` once, and `{UA}`, `{REF}`, `{HOST}`
/// ask for `user-agent`, `referer`, `host`). Implementations must match it
/// case-insensitively against the stored names (or store names lowercased,
/// as `http::HeaderMap` does). When a header occurs more than once, the
/// implementation decides which value to return (the first one is the
/// conventional choice). The returned bytes are logged escaped.
pub trait HeaderLookup {
    /// Value of header `name` (ASCII lowercase), or `None` when absent.
    fn get(&self, name: &str) -> Option<&[u8]>;
}

/// What one request contributes to its log line.
///
/// Every field is borrowed from the request/connection state so building a
/// `Record` costs nothing; a field the request does not have is `None` and
/// renders as `-`. Empty text values (empty URI, empty header value, ...)
/// also render as `-` so every field of a line is non-empty and
/// whitespace-separated parsers keep their column count.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    /// `{SRC}`: client IP address.
    pub src: Option<IpAddr>,
    /// `{PROXY}`: downstream (backend) address used, `ip:port` or `[v6]:port`.
    pub proxy: Option<SocketAddr>,
    /// `{TS}`: when the request was serviced, printed in local time as
    /// `%d/%b/%Y:%H:%M:%S %z`.
    pub ts: SystemTime,
    /// `{METH}`: request method.
    pub method: Option<&'a str>,
    /// `{URI}`: request target, bytes as received.
    pub uri: Option<&'a [u8]>,
    /// `{PROTO}`: protocol, e.g. `HTTP/1.1`.
    pub proto: Option<&'a str>,
    /// `{STATUS}`: response status code.
    pub status: Option<u16>,
    /// `{DS_SPORT}`: local (source) port of the connection to the downstream.
    pub ds_sport: Option<u16>,
    /// `{US_SPORT}`: the client's source port.
    pub us_sport: Option<u16>,
    /// `{RULE}`: name of the rule that routed the request.
    pub rule: Option<&'a str>,
    /// Request headers: `{UA}` (User-Agent), `{REF}` (Referer), `{HOST}`
    /// (Host) and `{US_HDR}:'name'`. `None` = no headers (all print `-`).
    pub req_headers: Option<&'a dyn HeaderLookup>,
    /// Response headers: `{DS_HDR}:'name'`. `None` = no response (e.g. the
    /// downstream never answered), all print `-`.
    pub resp_headers: Option<&'a dyn HeaderLookup>,
}

impl<'a> Record<'a> {
    /// A record with only the timestamp set, for struct-update syntax:
    /// `Record { status: Some(200), ..Record::new(now) }`.
    pub fn new(ts: SystemTime) -> Self {
        Record {
            src: None,
            proxy: None,
            ts,
            method: None,
            uri: None,
            proto: None,
            status: None,
            ds_sport: None,
            us_sport: None,
            rule: None,
            req_headers: None,
            resp_headers: None,
        }
    }
}

/// One compiled element of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Box<[u8]>),
    Src,
    Proxy,
    Ts,
    Ua,
    Meth,
    Uri,
    Proto,
    Status,
    Ref,
    Host,
    DsSport,
    UsSport,
    Rule,
    /// Request header, name already lowercased.
    ReqHdr(Box<str>),
    /// Response header, name already lowercased.
    RespHdr(Box<str>),
}

/// A compiled access-log format: parse the configured string once, then
/// render many lines cheaply.
///
/// Syntax: `{SRC}` `{PROXY}` `{TS}` `{UA}` `{METH}` `{URI}` `{PROTO}`
/// `{STATUS}` `{REF}` `{HOST}` `{DS_SPORT}` `{US_SPORT}` `{RULE}`
/// `{US_HDR}:'name'` `{DS_HDR}:'name'`. Any other `{NAME}` where NAME is
/// one or more of `A-Z` / `_` is an error; every other byte (including a
/// `{` or `}` that does not form such a variable, and lowercase `{name}`)
/// is literal text, copied unescaped since it comes from the configuration.
#[derive(Debug, Clone)]
pub struct LogFormat {
    pieces: Box<[Piece]>,
    req_headers: bool,
    resp_headers: bool,
}

impl LogFormat {
    /// Compiles `format`. The error names the offending variable and the
    /// 0-based byte offset of its `{`, e.g.
    /// `unknown variable {FOO} at byte 12`, so it can be shown to the
    /// operator as a configuration error.
    pub fn compile(format: &str) -> Result<LogFormat, String> {
        let b = format.as_bytes();
        let mut pieces = Vec::new();
        let mut lit: Vec<u8> = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'{' {
                if let Some(n) = var_name_len(&b[i + 1..]) {
                    let name = &format[i + 1..i + 1 + n];
                    let after = i + n + 2; // past the closing '}'
                    let (piece, next) = match name {
                        "SRC" => (Piece::Src, after),
                        "PROXY" => (Piece::Proxy, after),
                        "TS" => (Piece::Ts, after),
                        "UA" => (Piece::Ua, after),
                        "METH" => (Piece::Meth, after),
                        "URI" => (Piece::Uri, after),
                        "PROTO" => (Piece::Proto, after),
                        "STATUS" => (Piece::Status, after),
                        "REF" => (Piece::Ref, after),
                        "HOST" => (Piece::Host, after),
                        "DS_SPORT" => (Piece::DsSport, after),
                        "US_SPORT" => (Piece::UsSport, after),
                        "RULE" => (Piece::Rule, after),
                        "US_HDR" | "DS_HDR" => {
                            let (hdr, next) = parse_header_name(format, name, i, after)?;
                            let piece = if name == "US_HDR" {
                                Piece::ReqHdr(hdr)
                            } else {
                                Piece::RespHdr(hdr)
                            };
                            (piece, next)
                        }
                        _ => return Err(format!("unknown variable {{{name}}} at byte {i}")),
                    };
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit).into_boxed_slice()));
                    }
                    pieces.push(piece);
                    i = next;
                    continue;
                }
            }
            lit.push(b[i]);
            i += 1;
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit.into_boxed_slice()));
        }
        let req_headers = pieces
            .iter()
            .any(|p| matches!(p, Piece::Ua | Piece::Ref | Piece::Host | Piece::ReqHdr(_)));
        let resp_headers = pieces.iter().any(|p| matches!(p, Piece::RespHdr(_)));
        Ok(LogFormat {
            pieces: pieces.into_boxed_slice(),
            req_headers,
            resp_headers,
        })
    }

    /// Appends one log line for `rec` to `out`, including the trailing
    /// `'\n'`. Nothing already in `out` is touched, so several lines can be
    /// batched into one write. Allocates nothing except by growing `out`.
    pub fn render(&self, rec: &Record<'_>, out: &mut Vec<u8>) {
        for piece in self.pieces.iter() {
            match piece {
                Piece::Lit(s) => out.extend_from_slice(s),
                Piece::Src => match rec.src {
                    // Writing to a Vec<u8> cannot fail.
                    Some(ip) => {
                        let _ = write!(out, "{ip}");
                    }
                    None => out.push(b'-'),
                },
                Piece::Proxy => match rec.proxy {
                    Some(sa) => {
                        let _ = write!(out, "{sa}");
                    }
                    None => out.push(b'-'),
                },
                Piece::Ts => push_ts(out, rec.ts),
                Piece::Ua => push_text(out, req_header(rec, "user-agent")),
                Piece::Meth => push_text(out, rec.method.map(str::as_bytes)),
                Piece::Uri => push_text(out, rec.uri),
                Piece::Proto => push_text(out, rec.proto.map(str::as_bytes)),
                Piece::Status => push_num(out, rec.status),
                Piece::Ref => push_text(out, req_header(rec, "referer")),
                Piece::Host => push_text(out, req_header(rec, "host")),
                Piece::DsSport => push_num(out, rec.ds_sport),
                Piece::UsSport => push_num(out, rec.us_sport),
                Piece::Rule => push_text(out, rec.rule.map(str::as_bytes)),
                Piece::ReqHdr(name) => push_text(out, req_header(rec, name)),
                Piece::RespHdr(name) => push_text(out, rec.resp_headers.and_then(|h| h.get(name))),
            }
        }
        out.push(b'\n');
    }

    /// True if the format prints any response header (`{DS_HDR}`), so the
    /// caller can skip building `resp_headers` otherwise.
    /// Lowercase names of the request headers this format prints (`{UA}`, `{REF}`, `{HOST}`,
    /// `{US_HDR}`), so a caller can keep just those values once the request is forwarded.
    pub fn request_header_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.pieces.iter() {
            let n = match p {
                Piece::Ua => "user-agent",
                Piece::Ref => "referer",
                Piece::Host => "host",
                Piece::ReqHdr(n) => n,
                _ => continue,
            };
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
        out
    }

    pub fn uses_response_headers(&self) -> bool {
        self.resp_headers
    }

    /// True if the format prints any request header (`{UA}`, `{REF}`,
    /// `{HOST}`, `{US_HDR}`), so the caller can skip keeping the request
    /// headers alive until logging otherwise.
    pub fn uses_request_headers(&self) -> bool {
        self.req_headers
    }
}

/// Length of `NAME` if `s` starts with `NAME}` where NAME is `[A-Z_]+`.
fn var_name_len(s: &[u8]) -> Option<usize> {
    let n = s
        .iter()
        .take_while(|&&c| c.is_ascii_uppercase() || c == b'_')
        .count();
    (n > 0 && s.get(n) == Some(&b'}')).then_some(n)
}

/// Parses the `:'name'` that must follow `{US_HDR}` / `{DS_HDR}`.
/// `var_at` is the offset of the `{`, `after` the offset just past its `}`.
/// Returns the lowercased name and the offset just past the closing quote.
fn parse_header_name(
    format: &str,
    var: &str,
    var_at: usize,
    after: usize,
) -> Result<(Box<str>, usize), String> {
    let rest = &format[after..];
    let Some(quoted) = rest.strip_prefix(":'") else {
        return Err(format!(
            "{{{var}}} at byte {var_at} must be followed by :'header-name'"
        ));
    };
    let Some(end) = quoted.find('\'') else {
        return Err(format!(
            "unterminated header name after {{{var}}} at byte {var_at}: missing closing '"
        ));
    };
    let name = &quoted[..end];
    if name.is_empty() {
        return Err(format!(
            "empty header name in {{{var}}}:'' at byte {var_at}"
        ));
    }
    if let Some(c) = name.chars().find(|&c| !is_tchar(c)) {
        return Err(format!(
            "invalid character {c:?} in header name '{name}' of {{{var}}} at byte {var_at}"
        ));
    }
    Ok((
        name.to_ascii_lowercase().into_boxed_str(),
        after + 2 + end + 1,
    ))
}

/// RFC 9110 `tchar`: what a header field name may contain. A name with any
/// other character could never match, so it is rejected at compile time.
fn is_tchar(c: char) -> bool {
    u8::try_from(c).is_ok_and(crate::token::is_tchar)
}

fn req_header<'a>(rec: &Record<'a>, name: &str) -> Option<&'a [u8]> {
    rec.req_headers.and_then(|h| h.get(name))
}

/// Bytes that must not appear raw in a log line (nginx `escape=default`).
const ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i == 0x7f || i == b'"' as usize || i == b'\\' as usize || i >= 0x80;
        i += 1;
    }
    t
};

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends client-controlled text escaped; `None` and empty print `-`.
fn push_text(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(s) if !s.is_empty() => push_escaped(out, s),
        _ => out.push(b'-'),
    }
}

fn push_escaped(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        if ESCAPE[usize::from(b)] {
            out.extend_from_slice(&s[start..i]);
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            start = i + 1;
        }
    }
    out.extend_from_slice(&s[start..]);
}

fn push_num(out: &mut Vec<u8>, v: Option<u16>) {
    match v {
        Some(n) => {
            let mut buf = [0u8; 20];
            let len = fmt_u64(u64::from(n), 1, &mut buf);
            out.extend_from_slice(&buf[buf.len() - len..]);
        }
        None => out.push(b'-'),
    }
}

/// Writes `n` right-aligned at the end of `buf`, zero-padded to `min_width`
/// (at most `buf.len()`), and returns how many bytes were used.
fn fmt_u64(mut n: u64, min_width: usize, buf: &mut [u8; 20]) -> usize {
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    while buf.len() - pos < min_width && pos > 0 {
        pos -= 1;
        buf[pos] = b'0';
    }
    buf.len() - pos
}

/// Room for the longest `{TS}` text (`tm_year` can in theory be any `int`).
const TS_MAX: usize = 64;

/// Caches the formatted local-time text of one unix second, because
/// `localtime_r` (time zone rules, DST) is far more expensive than copying
/// 26 bytes and a busy proxy logs many requests per second.
///
/// `render` uses one per thread internally; it is public for callers that
/// want the same timestamp text elsewhere (e.g. error logs). It is not
/// shared between threads: each thread that formats should own one.
#[derive(Debug, Clone)]
pub struct TsCache {
    /// Unix second the text belongs to; meaningless while `len == 0`.
    sec: i64,
    len: usize,
    buf: [u8; TS_MAX],
}

impl Default for TsCache {
    fn default() -> Self {
        Self::new()
    }
}

impl TsCache {
    /// An empty cache; the first `get` fills it.
    pub const fn new() -> Self {
        TsCache {
            sec: 0,
            len: 0,
            buf: [0; TS_MAX],
        }
    }

    /// `ts` formatted as `%d/%b/%Y:%H:%M:%S %z` in local time, e.g.
    /// `28/Nov/2026:17:30:00 +0000`, or `-` if the C library cannot convert
    /// it. Calls `localtime_r` only when the unix second changed since the
    /// previous call.
    pub fn get(&mut self, ts: SystemTime) -> &[u8] {
        let sec = unix_secs(ts);
        if self.len == 0 || self.sec != sec {
            self.len = format_local(sec, &mut self.buf);
            self.sec = sec;
        }
        &self.buf[..self.len]
    }
}

thread_local! {
    static TS_CACHE: RefCell<TsCache> = const { RefCell::new(TsCache::new()) };
}

#[cfg(test)]
thread_local! {
    /// How often this thread called `localtime_r` (tests of the cache).
    static LOCALTIME_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn push_ts(out: &mut Vec<u8>, ts: SystemTime) {
    let done = TS_CACHE
        .try_with(|c| match c.try_borrow_mut() {
            Ok(mut cache) => {
                out.extend_from_slice(cache.get(ts));
                true
            }
            Err(_) => false,
        })
        .unwrap_or(false);
    if !done {
        // Thread-local storage is being torn down (or re-entered): format
        // without the cache rather than panic.
        let mut cache = TsCache::new();
        out.extend_from_slice(cache.get(ts));
    }
}

/// Seconds since the epoch, rounded down (also for times before 1970).
fn unix_secs(ts: SystemTime) -> i64 {
    match ts.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -s - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// Formats unix second `sec` in local time into `buf`; returns the length.
fn format_local(sec: i64, buf: &mut [u8; TS_MAX]) -> usize {
    #[cfg(test)]
    LOCALTIME_CALLS.with(|c| c.set(c.get() + 1));

    let Some(tm) = crate::localtime::local_tm(sec) else {
        buf[0] = b'-';
        return 1;
    };
    format_tm(&tm, buf)
}

/// Bounded writer over the timestamp buffer; drops what does not fit
/// instead of panicking (cannot happen for values `localtime_r` returns).
struct TsWriter<'b> {
    buf: &'b mut [u8; TS_MAX],
    len: usize,
}

impl TsWriter<'_> {
    fn bytes(&mut self, s: &[u8]) {
        for &b in s {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn num(&mut self, n: u64, min_width: usize) {
        let mut tmp = [0u8; 20];
        let len = fmt_u64(n, min_width, &mut tmp);
        self.bytes(&tmp[tmp.len() - len..]);
    }
}

/// `%d/%b/%Y:%H:%M:%S %z` from a broken-down time, with English month names
/// whatever the locale. Separate from `format_local` so it can be tested
/// with any UTC offset regardless of the machine's time zone.
fn format_tm(tm: &libc::tm, buf: &mut [u8; TS_MAX]) -> usize {
    let mut w = TsWriter { buf, len: 0 };
    let unsigned = |v: libc::c_int| u64::try_from(v).unwrap_or(0);
    w.num(unsigned(tm.tm_mday), 2);
    w.bytes(b"/");
    w.bytes(crate::localtime::month(tm).as_bytes());
    w.bytes(b"/");
    let year = i64::from(tm.tm_year) + 1900;
    if year < 0 {
        w.bytes(b"-");
    }
    w.num(year.unsigned_abs(), 4);
    w.bytes(b":");
    w.num(unsigned(tm.tm_hour), 2);
    w.bytes(b":");
    w.num(unsigned(tm.tm_min), 2);
    w.bytes(b":");
    w.num(unsigned(tm.tm_sec), 2);
    #[allow(clippy::useless_conversion)] // c_long is i32 on 32-bit targets
    let off = i64::from(tm.tm_gmtoff);
    w.bytes(if off < 0 { b" -" } else { b" +" });
    let off = off.unsigned_abs();
    w.num(off / 3600, 2);
    w.num(off % 3600 / 60, 2);
    w.len
}

#[cfg(test)]
mod tests;
