//! The HTTP/1 head tokenizer: request line or status line, then header lines, as byte spans
//! of the buffer. It accepts and refuses exactly what `httparse` 1.10 does with its default
//! configuration (no obs-fold, no space before a colon, no multiple spaces in the start line,
//! bare LF allowed as a line end), down to which error and where a head is incomplete: the
//! tests below and the `scan` fuzz target compare the two on every input they make.
//!
//! Why not `httparse` itself: callgrind put it at ~22 % of the worker's instructions per
//! proxied request (~1,750 of 7,590 for a small response through nginx's five headers): its
//! byte cursor steps one byte at a time through macros with a bounds check each, calls through
//! a runtime SIMD dispatch per header value, and hands out `&str`/`&[u8]` pairs that
//! [`super::head`] turned back into offsets. Here names, values, targets and reason phrases
//! are scanned 16 bytes at a time (SSE2, which every x86_64 has), then 8 (SWAR on a `u64`),
//! and the spans go straight into the caller's index. Measured with `bench/callgrind.sh`
//! (instructions per proxied request, whole worker): /small x 64 connections 7,590 -> 6,977,
//! /small x 256 8,500 -> 7,877, /big x 256 10,421 -> 9,675 (then 6,806, 7,705 and 9,519 with
//! the 16-byte windows at a buffer's end, `window16`, and the clock's nanoseconds; 6,654, 7,520
//! and 9,181 with the shortcut for the usual header line, `usual_line`).

// tchar (RFC 9110 5.6.2): what header names and methods are made of.
use rproxy_shared::token::TCHAR as TOKEN;

use super::head::{HeaderSpan, Span};

/// Why a head is refused; the variants are `httparse::Error`'s, for the same inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    HeaderName,
    HeaderValue,
    NewLine,
    Status,
    Token,
    Version,
    TooManyHeaders,
}

impl ScanError {
    /// For the debug log.
    pub fn describe(self) -> &'static str {
        match self {
            ScanError::HeaderName => "invalid header name",
            ScanError::HeaderValue => "invalid header value (or obs-fold)",
            ScanError::NewLine => "invalid line ending",
            ScanError::Status => "invalid status",
            ScanError::Token => "invalid token",
            ScanError::Version => "invalid HTTP version",
            ScanError::TooManyHeaders => "too many headers",
        }
    }
}

/// `Ok(None)`: the head is incomplete (read more).
pub type Scanned<T> = Result<Option<T>, ScanError>;

/// A complete request head's start line; its header lines went to the caller's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine {
    /// Bytes of the whole head, leading empty lines and the final empty line included.
    pub len: usize,
    pub method: Span,
    pub target: Span,
    pub minor: u8,
}

/// A complete response head's status line; its header lines went to the caller's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine {
    pub len: usize,
    pub minor: u8,
    /// Three digits, 000 to 999 (the caller refuses below 100).
    pub status: u16,
    /// Empty (`Span::default()`) when absent, empty, or holding obs-text (bytes >= 0x80), as
    /// `httparse` gives `""` for those.
    pub reason: Span,
}

/// The bytes being read and the position of the next one. `next` answers `None` at the end of
/// the buffer: every caller turns that into "incomplete" (`?` in a function returning
/// `Option`), as `httparse`'s `next!` does.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }
}

/// Scan a request head at the start of `buf`, its header lines into `headers` (cleared
/// first; at most `max_headers`, or [`ScanError::TooManyHeaders`]).
pub fn request(
    buf: &[u8],
    headers: &mut Vec<HeaderSpan>,
    max_headers: usize,
) -> Scanned<RequestLine> {
    headers.clear();
    let mut c = Cursor { buf, at: 0 };
    let Some(line) = request_line(&mut c)? else {
        return Ok(None);
    };
    let Some(len) = header_lines(buf, c.at, headers, max_headers)? else {
        return Ok(None);
    };
    Ok(Some(RequestLine { len, ..line }))
}

/// Scan a response head at the start of `buf` (as [`request`]).
pub fn response(
    buf: &[u8],
    headers: &mut Vec<HeaderSpan>,
    max_headers: usize,
) -> Scanned<StatusLine> {
    headers.clear();
    let mut c = Cursor { buf, at: 0 };
    let Some(line) = status_line(&mut c)? else {
        return Ok(None);
    };
    let Some(len) = header_lines(buf, c.at, headers, max_headers)? else {
        return Ok(None);
    };
    Ok(Some(StatusLine { len, ..line }))
}

/// `Ok(None)` out of a step that found the end of the buffer.
macro_rules! more {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

/// RFC 9112 2.2: empty lines (CRLF or bare LF) before the start line are skipped; a CR must
/// be followed by LF.
#[inline(always)]
fn skip_empty_lines(c: &mut Cursor<'_>) -> Scanned<()> {
    loop {
        match c.buf.get(c.at) {
            Some(b'\r') => {
                c.at += 1;
                if more!(c.next()) != b'\n' {
                    return Err(ScanError::NewLine);
                }
            }
            Some(b'\n') => c.at += 1,
            Some(_) => return Ok(Some(())),
            None => return Ok(None),
        }
    }
}

/// CRLF or a bare LF ending a line, `err` for anything else.
#[inline(always)]
fn line_end(c: &mut Cursor<'_>, err: ScanError) -> Scanned<()> {
    match more!(c.next()) {
        b'\r' if more!(c.next()) == b'\n' => Ok(Some(())),
        b'\n' => Ok(Some(())),
        _ => Err(err),
    }
}

/// `HTTP/1.0` or `HTTP/1.1`: the minor version. Fewer than 8 bytes left: incomplete if they
/// could still become one, else the error.
#[inline(always)]
fn version(c: &mut Cursor<'_>) -> Scanned<u8> {
    let rest = &c.buf[c.at..];
    // One 8-byte comparison each, not eight byte comparisons.
    const V11: u64 = u64::from_le_bytes(*b"HTTP/1.1");
    const V10: u64 = u64::from_le_bytes(*b"HTTP/1.0");
    match rest.first_chunk::<8>().map(|v| u64::from_le_bytes(*v)) {
        Some(V11) => {
            c.at += 8;
            Ok(Some(1))
        }
        Some(V10) => {
            c.at += 8;
            Ok(Some(0))
        }
        Some(_) => Err(ScanError::Version),
        None if b"HTTP/1.".starts_with(&rest[..rest.len().min(7)]) => Ok(None),
        None => Err(ScanError::Version),
    }
}

fn request_line(c: &mut Cursor<'_>) -> Scanned<RequestLine> {
    more!(skip_empty_lines(c)?);
    // method: a token, then one space.
    let m_start = c.at;
    if !TOKEN[usize::from(more!(c.next()))] {
        return Err(ScanError::Token);
    }
    loop {
        let b = more!(c.next());
        if b == b' ' {
            break;
        }
        if !TOKEN[usize::from(b)] {
            return Err(ScanError::Token);
        }
    }
    let method = span(m_start, c.at - 1);
    // target: visible ASCII or bytes >= 0x80 (valid UTF-8 as a whole), then one space.
    let t_start = c.at;
    let t_end = run_end::<Visible<0x21>>(c.buf, c.at);
    c.at = t_end;
    if more!(c.next()) != b' ' || t_end == t_start {
        return Err(ScanError::Token);
    }
    let t = &c.buf[t_start..t_end];
    if !t.is_ascii() && std::str::from_utf8(t).is_err() {
        return Err(ScanError::Token);
    }
    let target = span(t_start, t_end);
    let minor = more!(version(c)?);
    more!(line_end(c, ScanError::NewLine)?);
    Ok(Some(RequestLine {
        len: c.at,
        method,
        target,
        minor,
    }))
}

fn status_line(c: &mut Cursor<'_>) -> Scanned<StatusLine> {
    more!(skip_empty_lines(c)?);
    let minor = more!(version(c)?);
    if more!(c.next()) != b' ' {
        return Err(ScanError::Version);
    }
    let mut status = 0u16;
    for _ in 0..3 {
        let d = more!(c.next());
        if !d.is_ascii_digit() {
            return Err(ScanError::Status);
        }
        status = status * 10 + u16::from(d - b'0');
    }
    let mut reason = Span::default();
    match more!(c.next()) {
        b' ' => {
            // reason-phrase = *( HTAB / SP / VCHAR / obs-text ), to the line's end.
            let start = c.at;
            let end = skip_text(c.buf, c.at);
            c.at = end;
            let len = match more!(c.next()) {
                b'\r' if more!(c.next()) == b'\n' => 2,
                b'\n' => 1,
                _ => return Err(ScanError::Status),
            };
            if end > start && c.buf[start..end].is_ascii() {
                reason = span(start, c.at - len);
            }
        }
        b'\r' if more!(c.next()) == b'\n' => {}
        b'\n' => {}
        _ => return Err(ScanError::Status),
    }
    Ok(Some(StatusLine {
        len: c.at,
        minor,
        status,
        reason,
    }))
}

/// Header lines up to and including the empty line that ends the head: the head's length.
/// The position is a local, not a [`Cursor`]: written through `&mut`, it was stored to memory
/// on every byte of every name.
fn header_lines(
    buf: &[u8],
    mut at: usize,
    headers: &mut Vec<HeaderSpan>,
    max_headers: usize,
) -> Scanned<usize> {
    // The byte at `i`, or "incomplete".
    macro_rules! byte {
        ($i:expr) => {
            more!(buf.get($i).copied())
        };
    }
    loop {
        if let Some((header, next)) = usual_line(buf, at) {
            add(headers, max_headers, header)?;
            at = next;
            continue;
        }
        let n_start = at;
        let b = byte!(at);
        if b == b'\r' || b == b'\n' {
            if b == b'\r' && byte!(at + 1) != b'\n' {
                return Err(ScanError::NewLine);
            }
            return Ok(Some(at + if b == b'\r' { 2 } else { 1 }));
        }
        if !TOKEN[usize::from(b)] {
            return Err(ScanError::HeaderName);
        }
        // name: tokens up to the colon (no space before it).
        at = skip_name(buf, at + 1);
        if byte!(at) != b':' {
            return Err(ScanError::HeaderName);
        }
        let name = span(n_start, at);
        at += 1;
        // Spaces and tabs after the colon, then the value to the line's end (none: an empty
        // value where the spaces end).
        let mut b = byte!(at);
        while b == b' ' || b == b'\t' {
            at += 1;
            b = byte!(at);
        }
        let v_start = at;
        let mut v_end = at;
        if !(b == b'\r' || b == b'\n') {
            if is_ctl(b) {
                return Err(ScanError::HeaderValue);
            }
            at = skip_text(buf, at + 1);
            v_end = at;
            // The value starts with a byte other than space or tab: trimming stops there.
            while matches!(buf[v_end - 1], b' ' | b'\t') {
                v_end -= 1;
            }
            b = byte!(at);
        }
        at += 1;
        match b {
            b'\r' if byte!(at) == b'\n' => at += 1,
            b'\n' => {}
            _ => return Err(ScanError::HeaderValue),
        }
        add(
            headers,
            max_headers,
            HeaderSpan {
                name,
                value: span(v_start, v_end),
            },
        )?;
    }
}

/// A header line checked whole goes into the index, unless it already holds `max_headers`.
#[inline(always)]
fn add(
    headers: &mut Vec<HeaderSpan>,
    max_headers: usize,
    header: HeaderSpan,
) -> Result<(), ScanError> {
    if headers.len() == max_headers {
        return Err(ScanError::TooManyHeaders);
    }
    headers.push(header);
    Ok(())
}

/// A complete, valid header line of the shape nearly all are (`Name: value` ending in CRLF
/// or LF: a name of letters, digits and dashes, one space after the colon, a value with no
/// tab and no trailing space) at `at`: its spans and where the next line starts. `None` for
/// anything else (other name bytes, no or more spaces, an empty value, a tab, the end of the
/// head, an error, the end of the buffer): [`header_lines`]' general steps decide those.
/// It accepts only lines the general steps accept, with the same spans, in fewer
/// instructions: no tchar table, no loops over spaces, tabs or a trailing run of blanks.
#[inline(always)]
fn usual_line(buf: &[u8], at: usize) -> Option<(HeaderSpan, usize)> {
    let colon = run_end::<AlnumDash>(buf, at);
    let v_start = colon + 2;
    match buf.get(colon..v_start + 1)? {
        // The value's first byte: neither a second space (nor a tab, a control character,
        // CR or LF: all stops of the value's class).
        [b':', b' ', first] if colon > at && *first != b' ' && !Visible::<0x20>::stops(*first) => {}
        _ => return None,
    }
    let end = run_end::<Visible<0x20>>(buf, v_start + 1);
    let next = match buf.get(end..)? {
        [b'\r', b'\n', ..] => end + 2,
        [b'\n', ..] => end + 1,
        _ => return None,
    };
    if buf[end - 1] == b' ' {
        return None;
    }
    Some((
        HeaderSpan {
            name: span(at, colon),
            value: span(v_start, end),
        },
        next,
    ))
}

fn span(start: usize, end: usize) -> Span {
    Span {
        start: start as u32,
        end: end as u32,
    }
}

/// From `at`, the end of the run of header-name bytes (tchar).
#[inline(always)]
fn skip_name(buf: &[u8], at: usize) -> usize {
    let mut at = run_end::<AlnumDash>(buf, at);
    // The usual stop is the colon; another tchar (`_`, `.`, ...) goes on byte by byte.
    while buf.get(at).is_some_and(|&b| TOKEN[usize::from(b)]) {
        at += 1;
    }
    at
}

/// From `at`, the end of the run of header-value (or reason-phrase) bytes: HTAB, SP, VCHAR
/// and obs-text. Tabs are rare: the fast test stops at them and steps over.
#[inline(always)]
fn skip_text(buf: &[u8], mut at: usize) -> usize {
    loop {
        at = run_end::<Visible<0x20>>(buf, at);
        if buf.get(at) != Some(&b'\t') {
            return at;
        }
        at += 1;
    }
}

/// A control character other than HTAB, or DEL: what header values and the reason phrase
/// cannot hold.
#[inline(always)]
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A class of bytes a run is made of, tested 16 bytes at a time (SSE2, part of every x86_64),
/// 8 at a time (SWAR on a `u64`: the tail, and other architectures) or one at a time (the
/// last bytes of the buffer). Each answers exactly, per byte, so the lowest stop is the
/// first byte outside the class.
pub(super) trait Class {
    /// Bit i set: byte i is outside the class.
    #[cfg(target_arch = "x86_64")]
    fn stops16(v: std::arch::x86_64::__m128i) -> u32;
    /// The high bit of byte i (little-endian) set: byte i is outside the class.
    fn stops8(x: u64) -> u64;
    fn stops(b: u8) -> bool;
}

/// Bytes >= `MIN` (at most 0x80) other than DEL: 0x20 for header values (no control
/// characters; HTAB is stepped over by the caller), 0x21 for a request target (no space).
struct Visible<const MIN: u8>;

/// ASCII letters, digits and `-`: what nearly every header name is made of.
struct AlnumDash;

pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
pub(super) const HIGH: u64 = 0x8080_8080_8080_8080;

/// Per byte of `x` (each below 0x80): the high bit set iff the byte is >= `c`. No carry
/// crosses a byte, unlike the classic "has a zero byte" trick: every byte's answer is exact.
#[inline(always)]
pub(super) fn ge7(x: u64, c: u8) -> u64 {
    x + ONES * u64::from(0x80 - c)
}

/// Per byte of `x` (each below 0x80): the high bit set iff the byte is `c`.
#[inline(always)]
pub(super) fn eq7(x: u64, c: u8) -> u64 {
    let d = x ^ (ONES * u64::from(c));
    !((d + !HIGH) | d) & HIGH
}

impl<const MIN: u8> Class for Visible<MIN> {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn stops16(v: std::arch::x86_64::__m128i) -> u32 {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of every x86_64 CPU (the target's baseline features).
        unsafe {
            // Unsigned `v < MIN` is `min(v, MIN - 1) == v`.
            let below = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8((MIN - 1) as i8)), v);
            let del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
            _mm_movemask_epi8(_mm_or_si128(below, del)) as u32
        }
    }

    #[inline(always)]
    fn stops8(x: u64) -> u64 {
        // A byte with its high bit set (>= 0x80) is neither below `MIN` nor DEL.
        let low = x & !HIGH;
        (!ge7(low, MIN) | eq7(low, 0x7f)) & !x & HIGH
    }

    #[inline(always)]
    fn stops(b: u8) -> bool {
        b < MIN || b == 0x7f
    }
}

impl Class for AlnumDash {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn stops16(v: std::arch::x86_64::__m128i) -> u32 {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of every x86_64 CPU (the target's baseline features).
        unsafe {
            // Unsigned `lo <= x <= hi` is `min(max(x, lo), hi) == x`.
            let within = |x: __m128i, lo: u8, hi: u8| {
                let lo = _mm_set1_epi8(lo as i8);
                let hi = _mm_set1_epi8(hi as i8);
                _mm_cmpeq_epi8(_mm_min_epu8(_mm_max_epu8(x, lo), hi), x)
            };
            // Letters fold to lowercase with 0x20; nothing else lands in a..z.
            let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
            let ok = _mm_or_si128(
                _mm_or_si128(within(folded, b'a', b'z'), within(v, b'0', b'9')),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'-' as i8)),
            );
            !(_mm_movemask_epi8(ok) as u32) & 0xffff
        }
    }

    #[inline(always)]
    fn stops8(x: u64) -> u64 {
        let low = x & !HIGH;
        let folded = low | (ONES * 0x20);
        let letter = ge7(folded, b'a') & !ge7(folded, b'z' + 1);
        let digit = ge7(low, b'0') & !ge7(low, b'9' + 1);
        !((letter | digit | eq7(low, b'-')) & !x) & HIGH
    }

    #[inline(always)]
    fn stops(b: u8) -> bool {
        !(b.is_ascii_alphanumeric() || b == b'-')
    }
}

/// Whether every byte of `buf[range]` is of class `C`. A range of at most 16 bytes within a
/// buffer of 16 or more (a Host value within its head) is tested in one 16-byte window of the
/// buffer: one SSE2 test instead of two 8-byte ones.
#[inline(always)]
pub(super) fn all_of<C: Class>(buf: &[u8], range: std::ops::Range<usize>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if range.len() <= 16 && range.end <= buf.len() {
        if let Some(stops) = window16::<C>(buf, range.start) {
            return stops & ((1u32 << range.len()) - 1) == 0;
        }
    }
    let len = range.len();
    buf.get(range).is_some_and(|r| run_end::<C>(r, 0) == len)
}

/// The stops of class `C` (bit i: byte `at + i`) in the 16 bytes from `at`, or, nearer the end
/// of `buf`, in its last 16 bytes shifted so that bit 0 is still byte `at` (the bits past the
/// end are 0). `None` when `buf` is shorter than 16 bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn window16<C: Class>(buf: &[u8], at: usize) -> Option<u32> {
    let from = at.min(buf.len().checked_sub(16)?);
    let chunk = buf.get(from..)?.first_chunk::<16>()?;
    // SAFETY: `chunk` is 16 readable bytes; `loadu` has no alignment requirement.
    let v = unsafe { std::arch::x86_64::_mm_loadu_si128(chunk.as_ptr().cast()) };
    Some(C::stops16(v) >> (at - from))
}

/// From `at`, the end of the run of bytes of class `C`.
#[inline(always)]
pub(super) fn run_end<C: Class>(buf: &[u8], mut at: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    while let Some(chunk) = buf.get(at..).and_then(|r| r.first_chunk::<16>()) {
        // SAFETY: `chunk` is 16 readable bytes; `loadu` has no alignment requirement.
        let v = unsafe { std::arch::x86_64::_mm_loadu_si128(chunk.as_ptr().cast()) };
        let stop = C::stops16(v);
        if stop != 0 {
            return at + stop.trailing_zeros() as usize;
        }
        at += 16;
    }
    // Fewer than 16 bytes left: the buffer's last 16, the ones already passed shifted out.
    #[cfg(target_arch = "x86_64")]
    if at < buf.len() {
        if let Some(stops) = window16::<C>(buf, at) {
            return at + (stops.trailing_zeros() as usize).min(buf.len() - at);
        }
    }
    while let Some(chunk) = buf.get(at..).and_then(|r| r.first_chunk::<8>()) {
        let stop = C::stops8(u64::from_le_bytes(*chunk));
        if stop != 0 {
            return at + (stop.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    // Fewer than 8 bytes left: the buffer's last 8, the ones already passed shifted out.
    let left = buf.len() - at;
    if left > 0 {
        if let Some(last) = buf.last_chunk::<8>() {
            let stop = C::stops8(u64::from_le_bytes(*last)) >> (8 * (8 - left));
            return at + (stop.trailing_zeros() / 8).min(left as u32) as usize;
        }
    }
    while buf.get(at).is_some_and(|&b| !C::stops(b)) {
        at += 1;
    }
    at
}

/// `httparse` as the reference this scanner is held to (unit tests below, and the `scan`
/// fuzz target): not used by the daemon.
#[doc(hidden)]
pub mod oracle {
    use super::*;

    /// The header limit of the comparisons ([`super::super::head::MAX_HEADERS`]).
    pub const MAX: usize = super::super::head::MAX_HEADERS;

    /// What `httparse` says about `buf`, in this module's terms.
    fn httparse_request(buf: &[u8]) -> (Scanned<RequestLine>, Vec<HeaderSpan>) {
        let mut raw = vec![httparse::EMPTY_HEADER; MAX];
        let mut req = httparse::Request::new(&mut raw);
        let r = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => Ok(Some(RequestLine {
                len,
                method: within(buf, req.method.unwrap_or_default().as_bytes()),
                target: within(buf, req.path.unwrap_or_default().as_bytes()),
                minor: req.version.unwrap_or(9),
            })),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(error(e)),
        };
        let spans = match r {
            Ok(Some(_)) => req.headers.iter().map(|h| span_of(buf, h)).collect(),
            _ => Vec::new(),
        };
        (r, spans)
    }

    fn httparse_response(buf: &[u8]) -> (Scanned<StatusLine>, Vec<HeaderSpan>) {
        let mut raw = vec![httparse::EMPTY_HEADER; MAX];
        let mut resp = httparse::Response::new(&mut raw);
        let r = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => Ok(Some(StatusLine {
                len,
                minor: resp.version.unwrap_or(9),
                status: resp.code.unwrap_or(0),
                reason: match resp.reason {
                    Some(r) if !r.is_empty() => within(buf, r.as_bytes()),
                    _ => Span::default(),
                },
            })),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(error(e)),
        };
        let spans = match r {
            Ok(Some(_)) => resp.headers.iter().map(|h| span_of(buf, h)).collect(),
            _ => Vec::new(),
        };
        (r, spans)
    }

    fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    fn span_of(buf: &[u8], h: &httparse::Header<'_>) -> HeaderSpan {
        HeaderSpan {
            name: within(buf, h.name.as_bytes()),
            value: within(buf, h.value),
        }
    }

    fn error(e: httparse::Error) -> ScanError {
        match e {
            httparse::Error::HeaderName => ScanError::HeaderName,
            httparse::Error::HeaderValue => ScanError::HeaderValue,
            httparse::Error::NewLine => ScanError::NewLine,
            httparse::Error::Status => ScanError::Status,
            httparse::Error::Token => ScanError::Token,
            httparse::Error::Version => ScanError::Version,
            httparse::Error::TooManyHeaders => ScanError::TooManyHeaders,
        }
    }

    /// Both scanners on `buf`, as a request and as a response: the same verdict and, for a
    /// complete head, the same spans; else what differs.
    pub fn compare(buf: &[u8]) -> Result<(), String> {
        let mut hs = Vec::new();
        let ours = request(buf, &mut hs, MAX);
        let (theirs, their_hs) = httparse_request(buf);
        if ours != theirs || (matches!(ours, Ok(Some(_))) && hs != their_hs) {
            return Err(format!(
                "request {:?}: ours {ours:?} {hs:?}, httparse {theirs:?} {their_hs:?}",
                String::from_utf8_lossy(buf)
            ));
        }
        let ours = response(buf, &mut hs, MAX);
        let (theirs, their_hs) = httparse_response(buf);
        if ours != theirs || (matches!(ours, Ok(Some(_))) && hs != their_hs) {
            return Err(format!(
                "response {:?}: ours {ours:?} {hs:?}, httparse {theirs:?} {their_hs:?}",
                String::from_utf8_lossy(buf)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::oracle::MAX;
    use super::*;

    fn same(buf: &[u8]) {
        if let Err(e) = oracle::compare(buf) {
            panic!("{e}");
        }
    }

    fn seeds() -> Vec<Vec<u8>> {
        let mut s: Vec<Vec<u8>> = [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"\r\n\nPOST /x?y=1 HTTP/1.0\nContent-Length: 3\nX: \t v \t\n\nabc",
            b"OPTIONS * HTTP/1.1\r\nHost:\r\nEmpty:   \r\nTab:\tv\tw\t\r\n\r\n",
            b"GET http://a.test/\xc3\xa9 HTTP/1.1\r\nHost: a.test\r\nX-Long: 0123456789abcdefghijklmnopqrstuvwxyz0123456789\r\n\r\n",
            b"M-S.E~A|R*C^H /%7e HTTP/1.1\r\nObs: \x80\xff text\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 08:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 65536\r\nConnection: keep-alive\r\nETag: \"5f-6\"\r\nAccept-Ranges: bytes\r\n\r\n",
            b"HTTP/1.0 404\r\n\r\n",
            b"HTTP/1.1 200 \r\nA: b\n\n",
            b"HTTP/1.1 599 Wh\xe9t \t ok\r\nX:y\r\n\r\n",
            b"\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nFold: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nName : v\r\n\r\n",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        // At, over and under the header limit.
        for n in [MAX - 1, MAX, MAX + 1] {
            let mut h = b"GET / HTTP/1.1\r\n".to_vec();
            let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..n {
                h.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
                r.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
            }
            h.extend_from_slice(b"\r\n");
            r.extend_from_slice(b"\r\n");
            s.push(h);
            s.push(r);
        }
        s
    }

    /// Bytes at the edges of every class the scanners tell apart.
    const EDGES: &[u8] = &[
        0x00, 0x08, b'\t', b'\n', 0x0b, b'\r', 0x1f, b' ', b'!', b'"', b'(', b',', b'/', b'1',
        b':', b';', b'@', b'H', b'[', b'\\', b'a', b'{', b'|', b'~', 0x7f, 0x80, 0xc3, 0xff,
    ];

    #[test]
    fn every_prefix_of_every_seed_as_httparse() {
        for s in seeds() {
            for k in 0..=s.len() {
                same(&s[..k]);
            }
        }
    }

    #[test]
    fn every_byte_of_every_seed_changed_as_httparse() {
        for s in seeds().iter().filter(|s| s.len() < 400) {
            let mut m = s.clone();
            for i in 0..s.len() {
                for &b in EDGES {
                    m[i] = b;
                    same(&m);
                    // Incomplete just after the change: the verdict on a partial head.
                    same(&m[..=i]);
                }
                m[i] = s[i];
            }
        }
    }

    #[test]
    fn random_heads_as_httparse() {
        // xorshift: a fixed sequence, so a failure repeats.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let parts: &[&[u8]] = &[
            b"GET ",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/1.",
            b" ",
            b"\r\n",
            b"\n",
            b"\r",
            b"/",
            b"Host",
            b":",
            b": ",
            b"\t",
            b"value",
            b"200",
            b" OK",
            b"\x80",
            b"\xc3\xa9",
            b"\x7f",
            b"\x00",
            b"0123456789abcdef0123456789abcdef",
            b"X-Y",
            b"HTTP/1.1 ",
        ];
        let mut buf = Vec::new();
        for _ in 0..200_000 {
            buf.clear();
            let n = 1 + rnd() % 16;
            for _ in 0..n {
                buf.extend_from_slice(parts[(rnd() % parts.len() as u64) as usize]);
            }
            same(&buf);
        }
    }

    /// Every byte value at every position of a run, for each class: the 16-byte, 8-byte and
    /// byte-wise tests stop at the same byte, and the name scan where the token table says.
    #[test]
    fn runs_end_where_a_byte_loop_says() {
        fn check<C: Class>(name: &str) {
            for stop in 0..=255u8 {
                for len in [5, 8, 13, 16, 21, 24, 31, 40] {
                    for pos in 0..len {
                        let mut v = vec![b'a'; len];
                        v[pos] = stop;
                        let want = v.iter().position(|&b| C::stops(b)).unwrap_or(len);
                        assert_eq!(
                            run_end::<C>(&v, 0),
                            want,
                            "{name}: {stop:#x} at {pos} of {len}"
                        );
                        if let Some(c) = v[pos / 8 * 8..].first_chunk::<8>() {
                            let fast = C::stops8(u64::from_le_bytes(*c)) != 0;
                            assert_eq!(fast, C::stops(stop), "{name} SWAR: {stop:#x}");
                        }
                    }
                }
            }
        }
        check::<Visible<0x20>>("value");
        check::<Visible<0x21>>("target");
        check::<AlnumDash>("name");
        for b in 0..=255u8 {
            assert_eq!(Visible::<0x20>::stops(b), is_ctl(b) || b == b'\t', "{b:#x}");
            assert_eq!(
                AlnumDash::stops(b),
                !(b.is_ascii_alphanumeric() || b == b'-')
            );
            let mut v = b"Content-Type-0123456789xyz".to_vec();
            v[13] = b;
            let want = v
                .iter()
                .position(|&b| !TOKEN[usize::from(b)])
                .unwrap_or(v.len());
            assert_eq!(skip_name(&v, 0), want, "{b:#x}");
        }
    }
}
