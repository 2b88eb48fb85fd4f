//! Request framing that hyper accepts but a proxy must refuse (request smuggling), caught in the
//! client's byte stream before hyper parses it.
//!
//! hyper's HTTP/1 server quietly resolves a request carrying both `Content-Length` and
//! `Transfer-Encoding: chunked` (it drops Content-Length, decodes chunked and closes after the
//! response), and removes Content-Length before the service sees the request, so the service
//! cannot tell. [`FramingGuard`] follows the stream request by request (head, then body by
//! Content-Length or by chunked framing, then the next head) and, for such a head, overwrites the
//! last byte of its terminating empty line so that hyper's parser rejects the head: hyper then
//! answers `400 Bad Request` and closes, and nothing reaches the downstream.
//!
//! The grammar followed is hyper's own (httparse for heads, hyper's chunked decoder for bodies),
//! so that request boundaries agree with hyper's on every stream hyper accepts. A stream hyper
//! rejects ends the connection anyway, so what the guard thinks of it does not matter; whenever
//! the guard does not understand something it goes passive and never looks again.
//!
//! Cost: no allocation, no copying; head bytes are looked at once (header values other than
//! Content-Length and Transfer-Encoding are skipped a word at a time), body bytes are skipped by
//! counting.

/// Replaces the final `\n` of an ambiguous head. NUL fails httparse both after `\r` (an empty
/// line must be `\r\n`) and at the start of a line (after a bare-`\n` empty line, where it would
/// start a header name); it is rejected even where httparse is told to skip invalid header lines.
/// A letter would not do for heads ending in `\n\n`: the spoiled head could continue into the
/// body (`X` + `-Evil: 1\r\n\r\n`) and parse again.
const SPOIL: u8 = 0;

/// Largest Content-Length hyper accepts (`DecodedLength::MAX_LEN`).
const MAX_CONTENT_LENGTH: u64 = u64::MAX - 2;

/// Case matters for methods: `connect` is an extension method, not a tunnel.
const CONNECT: &[u8] = b"CONNECT";
const HTTP_1_0: &[u8] = b"HTTP/1.0";
const HTTP_1_1: &[u8] = b"HTTP/1.1";

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const UPGRADE: &[u8] = b"upgrade";
/// Header names of interest, by bit in [`Head::names`].
const NAMES: [&[u8]; 3] = [CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE];
const ALL_NAMES: u8 = 0b111;
const CL_BIT: u8 = 1;
const TE_BIT: u8 = 2;
const UPGRADE_BIT: u8 = 4;

/// Watches the bytes a client sends on one connection, request by request, and spoils the head
/// of a request that hyper would accept but a proxy must refuse, so that hyper itself answers
/// 400 and closes the connection.
///
/// Refused (spoiled): a head with both `Content-Length` and `Transfer-Encoding` (any values, any
/// order, also a name followed by whitespace before its colon), or with more than one
/// `Transfer-Encoding` line.
///
/// Passive from then on (hyper rejects it, or the rest of the connection may be a tunnel):
/// a malformed request line or header line, a bad or conflicting Content-Length, a
/// Transfer-Encoding not ending in `chunked` (or on HTTP/1.0), a bad chunk, a head longer than
/// `max_head`, and a request hyper may upgrade (method `CONNECT`, or an `Upgrade` header on
/// HTTP/1.1 — hyper's own rule).
pub struct FramingGuard {
    max_head: usize,
    mode: Mode,
    head: Head,
}

impl FramingGuard {
    /// `max_head`: bytes of request line + headers beyond which we stop tracking (hyper answers 431).
    ///
    /// Leading empty lines count, as they do in hyper's buffer. Pass hyper's `max_buf_size` (or
    /// more): a head hyper accepts must never be longer than this.
    pub fn new(max_head: usize) -> FramingGuard {
        FramingGuard {
            max_head,
            mode: Mode::Head,
            head: Head::NEW,
        }
    }

    /// Inspect `buf`, the bytes just read from the client, in stream order (called once per read,
    /// consecutive calls continue the same stream). When a complete request head in the stream is
    /// ambiguous, overwrite (in `buf`) the final '\n' of that head's terminating "\r\n\r\n" with a
    /// byte that makes the head unparsable (NUL, see [`SPOIL`]), so hyper's parser fails -> 400.
    /// A head ending in a bare-`\n` empty line, which hyper accepts too, has its final `\n`
    /// spoiled the same way.
    pub fn inspect(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() {
            i = match self.mode {
                Mode::Passive => return,
                Mode::Head => self.scan_head(buf, i),
                Mode::Length(n) => {
                    let avail = (buf.len() - i) as u64;
                    if n > avail {
                        self.mode = Mode::Length(n - avail);
                        buf.len()
                    } else {
                        self.start_head();
                        // n <= avail, which is a usize.
                        i + n as usize
                    }
                }
                Mode::Chunked(c) => self.scan_chunked(buf, i, c),
            };
        }
    }

    fn start_head(&mut self) {
        self.mode = Mode::Head;
        self.head = Head::NEW;
    }

    /// Continue the head from `buf[start..]`; returns where to continue.
    fn scan_head(&mut self, buf: &mut [u8], start: usize) -> usize {
        let budget = self.max_head.saturating_sub(self.head.len);
        let end = start + (buf.len() - start).min(budget);
        match self.head.scan(&buf[start..end]) {
            Scan::More => {
                self.head.len += end - start;
                if end < buf.len() {
                    // The head goes on beyond max_head: hyper answers 431.
                    self.mode = Mode::Passive;
                }
                end
            }
            Scan::Passive => {
                self.mode = Mode::Passive;
                buf.len()
            }
            Scan::Done(p) => {
                let last = start + p;
                self.end_head(buf, last);
                last + 1
            }
        }
    }

    /// The head ends with `buf[last]`, the final `\n` of its empty line.
    fn end_head(&mut self, buf: &mut [u8], last: usize) {
        let h = &self.head;
        if (h.cl_lines > 0 && h.te_lines > 0) || h.te_lines > 1 {
            buf[last] = SPOIL;
            // hyper rejects the head and closes: nothing after it matters.
            self.mode = Mode::Passive;
            return;
        }
        self.mode = if h.invalid || h.upgrade {
            Mode::Passive
        } else if h.te_lines == 1 {
            if h.te_chunked && h.http11 {
                Mode::Chunked(Chunk::Start)
            } else {
                Mode::Passive
            }
        } else if h.cl_lines > 0 {
            match h.cl {
                Some(n) if !h.cl_bad => {
                    if n == 0 {
                        Mode::Head
                    } else {
                        Mode::Length(n)
                    }
                }
                _ => Mode::Passive,
            }
        } else {
            Mode::Head
        };
        if self.mode == Mode::Head {
            self.head = Head::NEW;
        }
    }

    /// Continue a chunked body (hyper's `ChunkedState` machine) from `buf[i..]` in state `c`;
    /// returns where to continue.
    fn scan_chunked(&mut self, buf: &[u8], mut i: usize, mut c: Chunk) -> usize {
        while i < buf.len() {
            let b = buf[i];
            c = match c {
                Chunk::Data(n) => {
                    let avail = (buf.len() - i) as u64;
                    if n > avail {
                        self.mode = Mode::Chunked(Chunk::Data(n - avail));
                        return buf.len();
                    }
                    i += n as usize;
                    c = Chunk::DataCr;
                    continue;
                }
                Chunk::Start => match hex(b) {
                    Some(v) => Chunk::Size(v),
                    None => return self.passive(buf),
                },
                Chunk::Size(n) => match hex(b) {
                    Some(v) => match n.checked_mul(16).and_then(|n| n.checked_add(v)) {
                        Some(n) => Chunk::Size(n),
                        None => return self.passive(buf),
                    },
                    None => match b {
                        b' ' | b'\t' => Chunk::SizeLws(n),
                        b';' => Chunk::Ext(n),
                        b'\r' => Chunk::SizeLf(n),
                        _ => return self.passive(buf),
                    },
                },
                Chunk::SizeLws(n) => match b {
                    b' ' | b'\t' => Chunk::SizeLws(n),
                    b';' => Chunk::Ext(n),
                    b'\r' => Chunk::SizeLf(n),
                    _ => return self.passive(buf),
                },
                Chunk::Ext(n) => match buf[i..].iter().position(|&b| b == b'\r' || b == b'\n') {
                    None => {
                        self.mode = Mode::Chunked(Chunk::Ext(n));
                        return buf.len();
                    }
                    Some(p) => {
                        i += p;
                        if buf[i] == b'\n' {
                            // hyper refuses a bare LF in an extension.
                            return self.passive(buf);
                        }
                        Chunk::SizeLf(n)
                    }
                },
                Chunk::SizeLf(n) => match b {
                    b'\n' if n == 0 => Chunk::EndCr,
                    b'\n' => Chunk::Data(n),
                    _ => return self.passive(buf),
                },
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    _ => return self.passive(buf),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::Start,
                    _ => return self.passive(buf),
                },
                // After the last chunk: either the final CRLF or a trailer line.
                Chunk::EndCr => match b {
                    b'\r' => Chunk::EndLf,
                    _ => Chunk::Trailer,
                },
                Chunk::Trailer => match find(b'\r', &buf[i..]) {
                    None => {
                        self.mode = Mode::Chunked(Chunk::Trailer);
                        return buf.len();
                    }
                    Some(p) => {
                        i += p;
                        Chunk::TrailerLf
                    }
                },
                Chunk::TrailerLf => match b {
                    b'\n' => Chunk::EndCr,
                    _ => return self.passive(buf),
                },
                Chunk::EndLf => match b {
                    b'\n' => {
                        self.start_head();
                        return i + 1;
                    }
                    _ => return self.passive(buf),
                },
            };
            i += 1;
        }
        self.mode = Mode::Chunked(c);
        i
    }

    fn passive(&mut self, buf: &[u8]) -> usize {
        self.mode = Mode::Passive;
        buf.len()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// In a request head (or before one).
    Head,
    /// In a body with this many bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Never look again.
    Passive,
}

/// hyper's chunked decoder states; sizes are the current chunk's (left, for `Data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Ext(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

enum Scan {
    /// All given bytes belong to the head, which goes on.
    More,
    /// The head ends with the byte at this index.
    Done(usize),
    Passive,
}

/// Where in a head the next byte falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// Before the request line, where hyper skips empty lines.
    Lead,
    LeadCr,
    Method,
    TargetFirst,
    Target,
    /// Index into `HTTP/1.x`.
    Version(u8),
    VersionEnd,
    RequestLineCr,
    /// Start of a header line or of the final empty line.
    LineStart,
    EndCr,
    Name,
    /// Whitespace between a header name and its colon (hyper refuses it).
    NameWs,
    /// The rest of a header line of no interest.
    Skip,
    ClValue,
    TeValue,
}

/// Progress and findings in the current head; plain data, reset per head.
#[derive(Clone, Copy)]
struct Head {
    at: At,
    /// Bytes of this head before the current read.
    len: usize,
    method_len: usize,
    /// The method so far is a prefix of `CONNECT`.
    connect: bool,
    http11: bool,
    name_len: usize,
    /// Bits of [`NAMES`] the header name so far is a prefix of (ASCII case-insensitive).
    names: u8,
    /// hyper would refuse this head; it is spoiled if ambiguous, else the guard goes passive.
    invalid: bool,
    /// hyper's `wants_upgrade`: after it the connection may become a tunnel.
    upgrade: bool,
    cl_lines: u8,
    cl: Option<u64>,
    cl_bad: bool,
    te_lines: u8,
    /// The (last) Transfer-Encoding line ends in `chunked`.
    te_chunked: bool,
    // Content-Length value being read: 0 before digits, 1 in digits, 2 after.
    val: u64,
    val_phase: u8,
    val_bad: bool,
    // Transfer-Encoding value being read: the current list element matches `chunked` up to
    // `te_idx`, `te_ok` until a mismatch, `te_tail` once whitespace followed it.
    te_idx: u8,
    te_ok: bool,
    te_tail: bool,
}

impl Head {
    const NEW: Head = Head {
        at: At::Lead,
        len: 0,
        method_len: 0,
        connect: true,
        http11: false,
        name_len: 0,
        names: 0,
        invalid: false,
        upgrade: false,
        cl_lines: 0,
        cl: None,
        cl_bad: false,
        te_lines: 0,
        te_chunked: false,
        val: 0,
        val_phase: 0,
        val_bad: false,
        te_idx: 0,
        te_ok: false,
        te_tail: false,
    };

    /// Continue with `s`, the next bytes of the stream (at most what is left of `max_head`).
    fn scan(&mut self, s: &[u8]) -> Scan {
        let mut i = 0;
        while i < s.len() {
            let b = s[i];
            match self.at {
                At::Lead => match b {
                    b'\n' => {}
                    b'\r' => self.at = At::LeadCr,
                    _ if is_token(b) => {
                        self.at = At::Method;
                        // The method, this byte included, is read as a whole below.
                        continue;
                    }
                    _ => return Scan::Passive,
                },
                At::LeadCr => match b {
                    b'\n' => self.at = At::Lead,
                    _ => return Scan::Passive,
                },
                At::Method => {
                    let run = s[i..].iter().position(|&b| !is_token(b));
                    let run = run.unwrap_or(s.len() - i);
                    self.method_part(&s[i..i + run]);
                    i += run;
                    match s.get(i) {
                        None => return Scan::More,
                        Some(b' ') => {
                            self.upgrade = self.connect && self.method_len == CONNECT.len();
                            self.at = At::TargetFirst;
                        }
                        Some(_) => return Scan::Passive,
                    }
                }
                At::TargetFirst => match b {
                    _ if is_uri(b) => self.at = At::Target,
                    _ => return Scan::Passive,
                },
                At::Target => match s[i..].iter().position(|&b| !is_uri(b)) {
                    None => return Scan::More,
                    Some(p) => {
                        i += p;
                        if s[i] != b' ' {
                            return Scan::Passive;
                        }
                        self.at = At::Version(0);
                    }
                },
                At::Version(0) if s.len() - i >= HTTP_1_1.len() => {
                    // Whole version at once.
                    let v = &s[i..i + HTTP_1_1.len()];
                    if v == HTTP_1_1 {
                        self.http11 = true;
                    } else if v == HTTP_1_0 {
                        self.http11 = false;
                    } else {
                        return Scan::Passive;
                    }
                    i += HTTP_1_1.len() - 1;
                    self.at = At::VersionEnd;
                }
                At::Version(k) => {
                    const HTTP_1: &[u8] = b"HTTP/1.";
                    if let Some(&want) = HTTP_1.get(k as usize) {
                        if b != want {
                            return Scan::Passive;
                        }
                        self.at = At::Version(k + 1);
                    } else {
                        match b {
                            b'0' => self.http11 = false,
                            b'1' => self.http11 = true,
                            _ => return Scan::Passive,
                        }
                        self.at = At::VersionEnd;
                    }
                }
                At::VersionEnd => match b {
                    b'\r' => self.at = At::RequestLineCr,
                    b'\n' => self.at = At::LineStart,
                    _ => return Scan::Passive,
                },
                At::RequestLineCr => match b {
                    b'\n' => self.at = At::LineStart,
                    _ => return Scan::Passive,
                },
                At::LineStart => match b {
                    b'\r' => self.at = At::EndCr,
                    b'\n' => return Scan::Done(i),
                    _ if is_token(b) => {
                        self.names = ALL_NAMES;
                        self.name_len = 0;
                        self.at = At::Name;
                        // The name, this byte included, is read as a whole below.
                        continue;
                    }
                    // Folded lines and whitespace before a name: hyper refuses them.
                    _ => return Scan::Passive,
                },
                At::EndCr => match b {
                    b'\n' => return Scan::Done(i),
                    _ => return Scan::Passive,
                },
                At::Name => {
                    let run = s[i..].iter().position(|&b| !is_token(b));
                    let run = run.unwrap_or(s.len() - i);
                    self.name_part(&s[i..i + run]);
                    i += run;
                    match s.get(i) {
                        None => return Scan::More,
                        Some(b':') => self.value_start(),
                        Some(b' ' | b'\t') => {
                            self.invalid = true;
                            self.at = At::NameWs;
                        }
                        Some(_) => return Scan::Passive,
                    }
                }
                At::NameWs => match b {
                    b' ' | b'\t' => {}
                    b':' => self.value_start(),
                    _ => return Scan::Passive,
                },
                At::Skip => match find(b'\n', &s[i..]) {
                    None => return Scan::More,
                    Some(p) => {
                        i += p;
                        self.at = At::LineStart;
                    }
                },
                At::ClValue => self.cl_byte(b),
                At::TeValue => self.te_byte(b),
            }
            i += 1;
        }
        Scan::More
    }

    /// The next piece `part` of the method.
    fn method_part(&mut self, part: &[u8]) {
        let at = self.method_len..self.method_len + part.len();
        self.connect = self.connect && CONNECT.get(at) == Some(part);
        self.method_len += part.len();
    }

    /// The next piece `part` of a header name.
    fn name_part(&mut self, part: &[u8]) {
        if self.names != 0 {
            let at = self.name_len..self.name_len + part.len();
            for (k, name) in NAMES.iter().enumerate() {
                if !name
                    .get(at.clone())
                    .is_some_and(|n| n.eq_ignore_ascii_case(part))
                {
                    self.names &= !(1 << k);
                }
            }
        }
        self.name_len += part.len();
    }

    /// After the colon of a header line.
    fn value_start(&mut self) {
        let full = |bit: u8, name: &[u8]| self.names & bit != 0 && self.name_len == name.len();
        if full(CL_BIT, CONTENT_LENGTH) {
            self.cl_lines = self.cl_lines.saturating_add(1);
            self.val = 0;
            self.val_phase = 0;
            self.val_bad = false;
            self.at = At::ClValue;
        } else if full(TE_BIT, TRANSFER_ENCODING) {
            self.te_lines = self.te_lines.saturating_add(1);
            self.te_idx = 0;
            self.te_ok = true;
            self.te_tail = false;
            self.at = At::TeValue;
        } else {
            if full(UPGRADE_BIT, UPGRADE) {
                // hyper: `wants_upgrade = is_http_11`, whatever the value.
                self.upgrade = self.http11;
            }
            self.at = At::Skip;
        }
    }

    /// Content-Length value: digits between optional whitespace, as hyper's `from_digits` on
    /// the value httparse trimmed. Repeated lines must agree.
    fn cl_byte(&mut self, b: u8) {
        match b {
            b'\n' => {
                if self.val_bad || self.val_phase == 0 || self.val > MAX_CONTENT_LENGTH {
                    self.cl_bad = true;
                } else {
                    match self.cl {
                        Some(prev) if prev != self.val => self.cl_bad = true,
                        _ => self.cl = Some(self.val),
                    }
                }
                self.at = At::LineStart;
            }
            b'0'..=b'9' if self.val_phase < 2 => {
                self.val_phase = 1;
                match self
                    .val
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                {
                    Some(v) => self.val = v,
                    None => self.val_bad = true,
                }
            }
            b' ' | b'\t' | b'\r' => {
                if self.val_phase == 1 {
                    self.val_phase = 2;
                }
            }
            _ => self.val_bad = true,
        }
    }

    /// Transfer-Encoding value: whether its last comma-separated element, trimmed, is
    /// `chunked` in any case (hyper's `is_chunked_`).
    fn te_byte(&mut self, b: u8) {
        const CHUNKED: &[u8] = b"chunked";
        match b {
            b'\n' => {
                self.te_chunked = self.te_ok && self.te_idx as usize == CHUNKED.len();
                self.at = At::LineStart;
            }
            b',' => {
                self.te_idx = 0;
                self.te_ok = true;
                self.te_tail = false;
            }
            b' ' | b'\t' | b'\r' => {
                if self.te_idx > 0 {
                    self.te_tail = true;
                }
            }
            _ => {
                if !self.te_tail
                    && CHUNKED.get(self.te_idx as usize) == Some(&b.to_ascii_lowercase())
                {
                    self.te_idx += 1;
                } else {
                    self.te_ok = false;
                }
            }
        }
    }
}

/// RFC 9110 token characters (httparse's header-name and method set).
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

#[inline]
fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// httparse's request-target bytes.
#[inline]
fn is_uri(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

#[inline]
fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Index of the first `needle` in `hay`, eight bytes at a time.
#[inline]
fn find(needle: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut off = 0;
    for word in hay.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let x = u64::from_ne_bytes(w) ^ pattern;
        // Non-zero iff some byte of x is zero, i.e. some byte of the word is `needle`.
        if x.wrapping_sub(LO) & !x & HI != 0 {
            break;
        }
        off += 8;
    }
    hay[off..]
        .iter()
        .position(|&b| b == needle)
        .map(|p| off + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    /// Feed `chunks` as consecutive reads; the stream as hyper would see it.
    fn feed_with(g: &mut FramingGuard, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            let mut v = c.to_vec();
            g.inspect(&mut v);
            out.extend_from_slice(&v);
        }
        out
    }

    fn feed(chunks: &[&[u8]]) -> Vec<u8> {
        feed_with(&mut FramingGuard::new(MAX), chunks)
    }

    fn changed(input: &[u8], out: &[u8]) -> Vec<usize> {
        assert_eq!(input.len(), out.len());
        (0..input.len()).filter(|&i| input[i] != out[i]).collect()
    }

    /// Changed positions when `input` arrives in one read, byte by byte, and split in two at
    /// every position: all must agree. Returns them.
    fn spoiled(input: &[u8]) -> Vec<usize> {
        let whole = changed(input, &feed(&[input]));
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(changed(input, &feed(&bytes)), whole, "byte by byte");
        for k in 0..=input.len() {
            let (a, b) = input.split_at(k);
            assert_eq!(changed(input, &feed(&[a, b])), whole, "split at {k}");
        }
        for &v in &whole {
            assert_eq!(feed(&[input])[v], SPOIL);
        }
        whole
    }

    /// Index of the final `\n` of the `nth` (0-based) `\r\n\r\n` in `s`.
    fn head_end(s: &[u8], nth: usize) -> usize {
        s.windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"\r\n\r\n")
            .nth(nth)
            .map(|(i, _)| i + 3)
            .expect("terminator")
    }

    fn mode_after(input: &[u8]) -> Mode {
        let mut g = FramingGuard::new(MAX);
        feed_with(&mut g, &[input]);
        g.mode
    }

    const CL_TE: &[u8] = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn clean_get() {
        let s = b"GET / HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
        assert!(spoiled(s).is_empty());
        assert_eq!(mode_after(s), Mode::Head);
    }

    #[test]
    fn content_length_body_then_next_request() {
        // The body looks like an ambiguous head: it must be skipped, not parsed.
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut s =
            format!("POST /u HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        s.extend_from_slice(body);
        s.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        assert!(spoiled(&s).is_empty());
        assert_eq!(mode_after(&s), Mode::Head);
        let mut t = s.clone();
        t.extend_from_slice(CL_TE);
        assert_eq!(spoiled(&t), vec![s.len() + head_end(CL_TE, 0)]);
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let s: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;name=val;x=\"q\"\r\nhello\r\n\
            A \t;ext\r\n\r\n\r\n\r\n\r\n\r\n\r\n\
            0;last\r\nX-Trailer: 1\r\nOther: a\tb\r\n\r\n";
        assert!(spoiled(s).is_empty());
        assert_eq!(mode_after(s), Mode::Head);
        let mut t = s.to_vec();
        t.extend_from_slice(CL_TE);
        assert_eq!(spoiled(&t), vec![s.len() + head_end(CL_TE, 0)]);
    }

    #[test]
    fn chunked_without_trailers_and_uppercase_hex() {
        let s: &[u8] = b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, Chunked \r\n\r\n\
            1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n";
        let mut t = s.to_vec();
        t.extend_from_slice(CL_TE);
        assert_eq!(spoiled(&t), vec![s.len() + head_end(CL_TE, 0)]);
    }

    #[test]
    fn pipelined_clean_then_ambiguous() {
        let first: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut s = first.to_vec();
        s.extend_from_slice(CL_TE);
        assert_eq!(spoiled(&s), vec![first.len() + head_end(CL_TE, 0)]);
    }

    #[test]
    fn cl_and_te_in_both_orders() {
        let a = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let b = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(spoiled(a), vec![a.len() - 1]);
        assert_eq!(spoiled(b), vec![b.len() - 1]);
        // Any values, even ones hyper refuses on their own.
        let c = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: x\r\n\r\n";
        assert_eq!(spoiled(c), vec![c.len() - 1]);
        let d = b"POST / HTTP/1.1\r\nContent-Length:\r\nTransfer-Encoding:\r\n\r\n";
        assert_eq!(spoiled(d), vec![d.len() - 1]);
    }

    #[test]
    fn whitespace_before_colon() {
        let a = b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(spoiled(a), vec![a.len() - 1]);
        let b = b"POST / HTTP/1.1\r\nContent-Length\t: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(spoiled(b), vec![b.len() - 1]);
        // Alone, hyper refuses such a head itself.
        let c = b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n";
        assert!(spoiled(c).is_empty());
        assert_eq!(mode_after(c), Mode::Passive);
    }

    #[test]
    fn duplicate_transfer_encoding() {
        let a =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(spoiled(a), vec![a.len() - 1]);
        let b = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nX: y\r\n\
            transfer-encoding: chunked\r\n\r\n";
        assert_eq!(spoiled(b), vec![b.len() - 1]);
    }

    #[test]
    fn split_at_every_position_still_detected() {
        // `spoiled` feeds byte by byte and at every two-way split.
        let mut s = b"\r\nGET /a?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".to_vec();
        let first = s.len();
        s.extend_from_slice(CL_TE);
        assert_eq!(spoiled(&s), vec![first + head_end(CL_TE, 0)]);
        // Three-way splits around the terminator.
        let end = first + head_end(CL_TE, 0);
        for a in end - 6..=end {
            for b in a..=end {
                let out = feed(&[&s[..a], &s[a..b], &s[b..]]);
                assert_eq!(changed(&s, &out), vec![end], "splits {a} {b}");
            }
        }
    }

    #[test]
    fn body_split_across_reads() {
        let s: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789\
            POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            4\r\nabcd\r\n3;e=1\r\nxyz\r\n0\r\nT: 1\r\n\r\n";
        let mut t = s.to_vec();
        t.extend_from_slice(CL_TE);
        let want = vec![s.len() + head_end(CL_TE, 0)];
        assert_eq!(spoiled(&t), want);
        // Irregular read sizes.
        for size in 2..40 {
            let parts: Vec<&[u8]> = t.chunks(size).collect();
            assert_eq!(changed(&t, &feed(&parts)), want, "reads of {size}");
        }
    }

    #[test]
    fn upgrade_goes_passive() {
        let up = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let mut s = up.to_vec();
        s.extend_from_slice(CL_TE);
        // Passive for good: if the upgrade is refused (no 101), hyper keeps the connection and
        // a later ambiguous request gets through; closing such connections is up to the caller.
        assert!(spoiled(&s).is_empty());
        assert_eq!(mode_after(up), Mode::Passive);
        let connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
        assert_eq!(mode_after(connect), Mode::Passive);
        // Neither is a tunnel for hyper: an `Upgrade` on HTTP/1.0, and `connect` in lower case.
        let old = b"GET / HTTP/1.0\r\nUpgrade: x\r\n\r\n";
        assert_eq!(mode_after(old), Mode::Head);
        let lower = b"connect / HTTP/1.1\r\n\r\n";
        assert_eq!(mode_after(lower), Mode::Head);
    }

    #[test]
    fn garbage_goes_passive_untouched() {
        let cases: &[&[u8]] = &[
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET /\r\n\r\n",
            b" GET / HTTP/1.1\r\n\r\n",
            b"\r\rGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad(name): 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nH: 1\r\n\rX",
        ];
        for &c in cases {
            let mut s = c.to_vec();
            s.extend_from_slice(CL_TE);
            assert!(spoiled(&s).is_empty(), "{:?}", String::from_utf8_lossy(c));
            assert_eq!(
                mode_after(c),
                Mode::Passive,
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn not_understood_framing_goes_passive() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nx\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 2\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
        ];
        for &c in cases {
            assert_eq!(
                mode_after(c),
                Mode::Passive,
                "{:?}",
                String::from_utf8_lossy(c)
            );
            let mut s = c.to_vec();
            s.extend_from_slice(CL_TE);
            assert!(spoiled(&s).is_empty(), "{:?}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn repeated_equal_content_length_is_tracked() {
        let s: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length:\t3 \r\n\r\nabc";
        assert_eq!(mode_after(s), Mode::Head);
        let mut t = s.to_vec();
        t.extend_from_slice(CL_TE);
        assert_eq!(spoiled(&t), vec![s.len() + head_end(CL_TE, 0)]);
    }

    #[test]
    fn head_over_max_goes_passive() {
        let mut s = b"GET / HTTP/1.1\r\nX: ".to_vec();
        s.resize(200, b'a');
        s.extend_from_slice(b"\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut g = FramingGuard::new(100);
        let out = feed_with(&mut g, &[&s]);
        assert_eq!(out, s);
        assert_eq!(g.mode, Mode::Passive);
        // Exactly max_head bytes is still a head.
        let mut g = FramingGuard::new(s.len());
        assert_eq!(changed(&s, &feed_with(&mut g, &[&s])), vec![s.len() - 1]);
        let mut g = FramingGuard::new(s.len() - 1);
        assert!(changed(&s, &feed_with(&mut g, &[&s[..50], &s[50..]])).is_empty());
        // Leading empty lines count, as in hyper's buffer.
        let get = b"GET / HTTP/1.1\r\n\r\n";
        let mut g = FramingGuard::new(get.len() + 1);
        feed_with(&mut g, &[b"\r\n", get]);
        assert_eq!(g.mode, Mode::Passive);
    }

    #[test]
    fn leading_empty_lines() {
        let mut s = b"\r\n\r\n\nGET / HTTP/1.1\r\n\r\n\r\n".to_vec();
        let first = s.len();
        s.extend_from_slice(CL_TE);
        assert_eq!(spoiled(&s), vec![first + head_end(CL_TE, 0)]);
        // And after a body.
        let mut t = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\r\n\r\n".to_vec();
        let first = t.len();
        t.extend_from_slice(CL_TE);
        assert_eq!(spoiled(&t), vec![first + head_end(CL_TE, 0)]);
    }

    #[test]
    fn name_case_does_not_matter() {
        for (cl, te) in [
            ("content-length", "transfer-encoding"),
            ("CONTENT-LENGTH", "TRANSFER-ENCODING"),
            ("Content-length", "tRANSFER-eNCODING"),
        ] {
            let s = format!("POST / HTTP/1.1\r\n{cl}: 1\r\n{te}: CHUNKED\r\n\r\n").into_bytes();
            assert_eq!(spoiled(&s), vec![s.len() - 1], "{cl} {te}");
        }
        // Near misses are ordinary headers.
        let s = b"POST / HTTP/1.1\r\nContent-Lengths: 1\r\nTransfer-Encodin: chunked\r\n\
            Content-Type: a\r\nTransfer: b\r\nUpgrade-Insecure-Requests: 1\r\n\r\n";
        assert!(spoiled(s).is_empty());
        assert_eq!(mode_after(s), Mode::Head);
    }

    #[test]
    fn bare_lf_heads() {
        // httparse accepts `\n` line ends; the final `\n` is spoiled all the same.
        let a =
            b"POST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n-Evil: 1\r\n\r\n";
        let end = a.windows(2).position(|w| w == b"\n\n").unwrap() + 1;
        assert_eq!(spoiled(a), vec![end]);
        let b = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\n";
        assert_eq!(spoiled(b), vec![b.len() - 1]);
        let c = b"GET / HTTP/1.1\nHost: a\n\nPOST / HTTP/1.1\nContent-Length: 1\n\nx";
        assert!(spoiled(c).is_empty());
        assert_eq!(mode_after(c), Mode::Head);
    }

    /// 1000 clean requests of four kinds, pipelined.
    fn thousand_requests() -> Vec<u8> {
        let mut s = Vec::new();
        for i in 0..1000 {
            match i % 4 {
                0 => s.extend_from_slice(
                    format!("GET /item/{i}?q=x HTTP/1.1\r\nHost: h\r\nUser-Agent: t/1.0\r\n\r\n")
                        .as_bytes(),
                ),
                1 => {
                    let body = "x".repeat(i % 97);
                    s.extend_from_slice(
                        format!(
                            "POST /p HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                }
                2 => s.extend_from_slice(
                    b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3;e\r\nabc\r\n0\r\nT: 1\r\n\r\n",
                ),
                _ => s.extend_from_slice(b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            }
        }
        s
    }

    #[test]
    fn thousand_pipelined_clean_requests_unchanged() {
        let s = thousand_requests();
        let mut g = FramingGuard::new(MAX);
        assert_eq!(feed_with(&mut g, &[&s]), s);
        assert_eq!(g.mode, Mode::Head);
        // Same stream in reads of varying size.
        let mut g = FramingGuard::new(MAX);
        let mut parts = Vec::new();
        let (mut at, mut n) = (0, 1usize);
        while at < s.len() {
            let len = (n * 7919 % 1500 + 1).min(s.len() - at);
            parts.push(&s[at..at + len]);
            at += len;
            n += 1;
        }
        assert_eq!(feed_with(&mut g, &parts), s);
        assert_eq!(g.mode, Mode::Head);
    }

    #[test]
    fn find_matches_naive() {
        let hay: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        for start in 0..40 {
            for needle in [b'\n', b'\r', 0, 0xff, 0x80, b'a'] {
                let h = &hay[start..];
                assert_eq!(find(needle, h), h.iter().position(|&b| b == needle));
            }
        }
    }

    /// What hyper's server makes of `input` after the guard: the response bytes and the number
    /// of requests that reached the service.
    fn through_hyper(input: &[u8]) -> (String, usize) {
        let mut bytes = input.to_vec();
        FramingGuard::new(MAX).inspect(&mut bytes);
        let (resp, served) = hyper_serve(&bytes);
        (resp, served.len())
    }

    /// The same without the guard.
    fn through_hyper_unguarded(input: &[u8]) -> (String, usize) {
        let (resp, served) = hyper_serve(input);
        (resp, served.len())
    }

    /// hyper's HTTP/1 server on `bytes` as they are: its response bytes and the target of each
    /// request that reached the service.
    fn hyper_serve(bytes: &[u8]) -> (String, Vec<String>) {
        use std::cell::RefCell;
        use std::convert::Infallible;
        use std::rc::Rc;

        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let bytes = bytes.to_vec();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let served = Rc::new(RefCell::new(Vec::new()));
            let log = Rc::clone(&served);
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let log = Rc::clone(&log);
                async move {
                    let target = req.uri().to_string();
                    let _ = req.into_body().collect().await;
                    log.borrow_mut().push(target);
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            // half_close: the client shuts its side down once everything is sent.
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(TokioIo::new(server), svc);
            let talk = async move {
                client.write_all(&bytes).await.unwrap();
                client.shutdown().await.unwrap();
                let mut out = Vec::new();
                let _ = client.read_to_end(&mut out).await;
                out
            };
            let (_, out) = tokio::join!(conn, talk);
            let served = served.borrow().clone();
            (String::from_utf8_lossy(&out).into_owned(), served)
        })
    }

    #[test]
    fn hyper_refuses_spoiled_heads() {
        // Without the guard hyper takes it: the reason for this module.
        let (resp, n) = through_hyper_unguarded(CL_TE);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert_eq!(n, 1);

        let (resp, n) = through_hyper(CL_TE);
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert_eq!(n, 0);

        // A bare-`\n` head whose body would complete a header name after a letter.
        let lf =
            b"POST / HTTP/1.1\nContent-Length: 12\nTransfer-Encoding: chunked\n\n-Evil: 1\r\n\r\n";
        assert_eq!(through_hyper_unguarded(lf).1, 1);
        let (resp, n) = through_hyper(lf);
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert_eq!(n, 0);
    }

    #[test]
    fn hyper_serves_the_thousand() {
        let (resp, n) = through_hyper(&thousand_requests());
        assert_eq!(n, 1000);
        assert_eq!(resp.matches(" 200 OK\r\n").count(), 1000);
    }

    #[test]
    fn hyper_agrees_on_boundaries() {
        let clean: &[u8] = b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\r\n\
            POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;x=y\r\nhello\r\n0\r\nTrailer: t\r\n\r\n\
            GET /d HTTP/1.1\nHost: a\n\n\
            POST /e HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n";
        let (resp, n) = through_hyper(clean);
        assert_eq!(n, 5, "{resp}");
        assert_eq!(resp.matches("HTTP/1.1 200").count(), 5, "{resp}");

        let mut s = clean.to_vec();
        s.extend_from_slice(CL_TE);
        let (resp, n) = through_hyper(&s);
        assert_eq!(n, 5, "{resp}");
        assert!(resp.contains("HTTP/1.1 400"), "{resp}");
    }

    /// xorshift64*: deterministic randomness for the generated streams.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn one_in(&mut self, n: usize) -> bool {
            self.below(n) == 0
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }

        /// `name` in random letter case.
        fn case(&mut self, name: &str) -> String {
            name.chars()
                .map(|c| {
                    if self.one_in(2) {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        }

        /// Body bytes, with line ends and request-looking text mixed in.
        fn body(&mut self, len: usize) -> Vec<u8> {
            let mut b = Vec::with_capacity(len);
            while b.len() < len {
                match self.below(6) {
                    0 => b.extend_from_slice(b"\r\n"),
                    1 => b.extend_from_slice(b"\n\n"),
                    2 => b.extend_from_slice(CL_TE),
                    3 => b.extend_from_slice(b"0\r\n\r\n"),
                    _ => b.push(self.next() as u8),
                }
            }
            b.truncate(len);
            b
        }
    }

    /// One request that hyper accepts; `evil` ones carry CL+TE or two TE lines (and a chunked
    /// body, as hyper reads them).
    fn random_request(rng: &mut Rng, target: &str, evil: bool) -> Vec<u8> {
        let nl = if rng.one_in(5) { "\n" } else { "\r\n" };
        let mut head = String::new();
        for _ in 0..rng.below(3) {
            head += rng.pick(&["\r\n", "\n"]);
        }
        let method = rng.pick(&["GET", "POST", "PUT", "DELETE", "OPTIONS", "X-CUSTOM"]);
        head += &format!("{method} {target} HTTP/1.1{nl}");
        let mut lines: Vec<String> = Vec::new();
        for _ in 0..rng.below(6) {
            let (name, value) = match rng.below(8) {
                0 => ("Host", "example.com"),
                1 => ("Content-Type", "text/plain; charset=utf-8"),
                2 => ("Content-Lengths", "3"),
                3 => ("Transfer", "chunked"),
                4 => ("Upgrade-Insecure-Requests", "1"),
                5 => ("X-Transfer-Encoding", "chunked"),
                6 => ("Cookie", "a=1; b=\"two\"; c=Content-Length: 4"),
                _ => ("Te", "trailers"),
            };
            let ws = rng.pick(&["", " ", "\t", "  "]);
            lines.push(format!(
                "{}:{ws}{value}{}",
                rng.case(name),
                rng.pick(&["", " "])
            ));
        }
        let chunked = evil || rng.one_in(3);
        let mut body = Vec::new();
        if chunked {
            let te = rng.pick(&["chunked", "CHUNKED", "gzip, chunked", "br,chunked"]);
            lines.push(format!("{}: {te}", rng.case("transfer-encoding")));
            if evil {
                let extra = if rng.one_in(2) {
                    format!("{}: {}", rng.case("content-length"), rng.below(100))
                } else {
                    format!("{}: chunked", rng.case("transfer-encoding"))
                };
                lines.push(extra);
            }
            for _ in 0..rng.below(4) {
                let n = 1 + rng.below(40);
                let ext = rng.pick(&["", ";a=b", " ;x", "\t; q=\"v\""]);
                body.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                body.extend(rng.body(n));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(rng.pick(&["0\r\n", "000;end\r\n"]).as_bytes());
            if rng.one_in(2) {
                body.extend_from_slice(b"Trailer-One: 1\r\nX: Content-Length: 5\r\n");
            }
            body.extend_from_slice(b"\r\n");
        } else if rng.one_in(2) {
            let n = rng.below(60);
            lines.push(format!("{}: {n}", rng.case("content-length")));
            body = rng.body(n);
        }
        // Shuffle so framing headers land anywhere.
        for k in (1..lines.len()).rev() {
            let j = rng.below(k + 1);
            lines.swap(k, j);
        }
        for l in &lines {
            head += l;
            head += nl;
        }
        head += rng.pick(&["\r\n", "\n"]);
        let mut req = head.into_bytes();
        req.extend(body);
        req
    }

    #[test]
    fn generated_streams_agree_with_hyper() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..1000 {
            let count = 1 + rng.below(8);
            let evil_at = if rng.one_in(2) {
                Some(rng.below(count))
            } else {
                None
            };
            let mut stream = Vec::new();
            for k in 0..count {
                let evil = evil_at == Some(k);
                stream.extend(random_request(&mut rng, &format!("/r{round}/{k}"), evil));
            }
            let ctx = String::from_utf8_lossy(&stream).into_owned();

            // Unguarded, hyper takes every request up to the evil one included (and closes after
            // it if it had CL+TE).
            let (_, served) = hyper_serve(&stream);
            let upto = evil_at.map_or(count, |e| e + 1);
            assert!(served.len() >= upto, "{ctx:?}");
            for (k, t) in served.iter().enumerate() {
                assert_eq!(*t, format!("/r{round}/{k}"), "{ctx:?}");
            }

            let mut guarded = stream.clone();
            FramingGuard::new(MAX).inspect(&mut guarded);
            let mut parts = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let n = (1 + rng.below(64)).min(stream.len() - at);
                parts.push(&stream[at..at + n]);
                at += n;
            }
            assert_eq!(feed(&parts), guarded, "{ctx:?}");

            let spoiled = changed(&stream, &guarded);
            let (resp, served) = hyper_serve(&guarded);
            let want: Vec<String> = (0..evil_at.unwrap_or(count))
                .map(|k| format!("/r{round}/{k}"))
                .collect();
            assert_eq!(served, want, "{ctx:?}");
            match evil_at {
                None => assert!(spoiled.is_empty(), "{ctx:?}"),
                Some(_) => {
                    assert_eq!(spoiled.len(), 1, "{ctx:?}");
                    assert!(resp.contains("HTTP/1.1 400 Bad Request"), "{resp}");
                }
            }
        }
    }
}
