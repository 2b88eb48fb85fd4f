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
//! It also enforces `max-header-size`, which hyper's `max_buf_size` does not (a head that
//! arrives in one read is accepted whatever its length): a head longer than the limit is cut
//! where the limit ends, so hyper holds a full buffer without a complete head and answers 431.
//!
//! The grammar followed is hyper's own (httparse for heads, hyper's chunked decoder for bodies),
//! so that request boundaries agree with hyper's on every stream hyper accepts. A stream hyper
//! rejects ends the connection anyway, so what the guard thinks of it does not matter; whenever
//! the guard does not understand something it goes passive and never looks again.
//!
//! Cost: no allocation, no copying; head bytes are looked at once (header values other than
//! Content-Length and Transfer-Encoding are skipped a word at a time), body bytes are skipped by
//! counting.

use rproxy_shared::token::is_tchar;

/// Replaces the final `\n` of an ambiguous head. NUL fails httparse both after `\r` (an empty
/// line must be `\r\n`) and at the start of a line (after a bare-`\n` empty line, where it would
/// start a header name); it is rejected even where httparse is told to skip invalid header lines.
/// A letter would not do for heads ending in `\n\n`: the spoiled head could continue into the
/// body (`X` + `-Evil: 1\r\n\r\n`) and parse again.
const SPOIL: u8 = 0;

/// Largest Content-Length hyper accepts (`DecodedLength::MAX_LEN`).
const MAX_CONTENT_LENGTH: u64 = u64::MAX - 2;

/// Largest chunk size accepted (nginx's: a signed 64-bit offset). hyper takes any size that fits
/// a u64 (`ffffffffffffffff`), which a downstream doing signed arithmetic may read as -1.
const MAX_CHUNK: u64 = i64::MAX as u64;

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
/// Cut (see [`Verdict`]): a head longer than `max_head` (hyper then holds `max_head` bytes of an
/// unfinished head: 431), a chunk size above [`MAX_CHUNK`] (the body read fails).
///
/// Passive from then on (hyper rejects it, or the rest of the connection may be a tunnel):
/// a malformed request line or header line, a bad or conflicting Content-Length, a
/// Transfer-Encoding not ending in `chunked` (or on HTTP/1.0), a bad chunk, and a request hyper
/// may upgrade (method `CONNECT`, or an `Upgrade` header on HTTP/1.1 — hyper's own rule). A
/// head that hyper could still accept is never left unwatched.
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
    ///
    /// The verdict says how much of `buf` hyper may see; once it is not [`Verdict::Pass`] every
    /// later call refuses everything.
    pub fn inspect(&mut self, buf: &mut [u8]) -> Verdict {
        let mut i = 0;
        while i < buf.len() {
            i = match self.mode {
                Mode::Passive => return Verdict::Pass,
                Mode::Refused(why) => return Verdict::Cut { keep: 0, why },
                Mode::Head => match self.scan_head(buf, i) {
                    Ok(next) => next,
                    Err(keep) => {
                        return self.cut(keep, Cut::HeadTooLarge);
                    }
                },
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
                Mode::Chunked(c) => match self.scan_chunked(buf, i, c) {
                    Ok(next) => next,
                    Err(keep) => return self.cut(keep, Cut::ChunkTooLarge),
                },
            };
        }
        Verdict::Pass
    }

    fn cut(&mut self, keep: usize, why: Cut) -> Verdict {
        self.mode = Mode::Refused(why);
        Verdict::Cut { keep, why }
    }

    fn start_head(&mut self) {
        self.mode = Mode::Head;
        self.head = Head::NEW;
    }

    /// Continue the head from `buf[start..]`; returns where to continue, or `Err(keep)` when
    /// the head goes on beyond `max_head` and only `buf[..keep]` may reach hyper.
    fn scan_head(&mut self, buf: &mut [u8], start: usize) -> Result<usize, usize> {
        let budget = self.max_head.saturating_sub(self.head.len);
        let end = start + (buf.len() - start).min(budget);
        match self.head.scan(&buf[start..end]) {
            Scan::More => {
                self.head.len += end - start;
                if end < buf.len() {
                    // Whatever follows, this head is too long: hyper must never complete it.
                    return Err(end);
                }
                Ok(end)
            }
            Scan::Passive => {
                self.mode = Mode::Passive;
                Ok(buf.len())
            }
            Scan::Done(p) => {
                let last = start + p;
                self.end_head(buf, last);
                Ok(last + 1)
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
    /// returns where to continue, or `Err(keep)` for a chunk size above [`MAX_CHUNK`] whose
    /// digits start at `buf[keep]` or earlier.
    fn scan_chunked(&mut self, buf: &[u8], mut i: usize, mut c: Chunk) -> Result<usize, usize> {
        while i < buf.len() {
            let b = buf[i];
            c = match c {
                Chunk::Data(n) => {
                    let avail = (buf.len() - i) as u64;
                    if n > avail {
                        self.mode = Mode::Chunked(Chunk::Data(n - avail));
                        return Ok(buf.len());
                    }
                    i += n as usize;
                    c = Chunk::DataCr;
                    continue;
                }
                Chunk::Start => match hex(b) {
                    Some(v) => Chunk::Size(v),
                    None => return Ok(self.passive(buf)),
                },
                Chunk::Size(n) => match hex(b) {
                    Some(v) => match n.checked_mul(16).and_then(|n| n.checked_add(v)) {
                        Some(n) if n <= MAX_CHUNK => Chunk::Size(n),
                        _ => return Err(i),
                    },
                    None => match b {
                        b' ' | b'\t' => Chunk::SizeLws(n),
                        b';' => Chunk::Ext(n),
                        b'\r' => Chunk::SizeLf(n),
                        _ => return Ok(self.passive(buf)),
                    },
                },
                Chunk::SizeLws(n) => match b {
                    b' ' | b'\t' => Chunk::SizeLws(n),
                    b';' => Chunk::Ext(n),
                    b'\r' => Chunk::SizeLf(n),
                    _ => return Ok(self.passive(buf)),
                },
                Chunk::Ext(n) => match buf[i..].iter().position(|&b| b == b'\r' || b == b'\n') {
                    None => {
                        self.mode = Mode::Chunked(Chunk::Ext(n));
                        return Ok(buf.len());
                    }
                    Some(p) => {
                        i += p;
                        if buf[i] == b'\n' {
                            // hyper refuses a bare LF in an extension.
                            return Ok(self.passive(buf));
                        }
                        Chunk::SizeLf(n)
                    }
                },
                Chunk::SizeLf(n) => match b {
                    b'\n' if n == 0 => Chunk::EndCr,
                    b'\n' => Chunk::Data(n),
                    _ => return Ok(self.passive(buf)),
                },
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    _ => return Ok(self.passive(buf)),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::Start,
                    _ => return Ok(self.passive(buf)),
                },
                // After the last chunk: either the final CRLF or a trailer line.
                Chunk::EndCr => match b {
                    b'\r' => Chunk::EndLf,
                    _ => Chunk::Trailer,
                },
                Chunk::Trailer => match find(b'\r', &buf[i..]) {
                    None => {
                        self.mode = Mode::Chunked(Chunk::Trailer);
                        return Ok(buf.len());
                    }
                    Some(p) => {
                        i += p;
                        Chunk::TrailerLf
                    }
                },
                Chunk::TrailerLf => match b {
                    b'\n' => Chunk::EndCr,
                    _ => return Ok(self.passive(buf)),
                },
                Chunk::EndLf => match b {
                    b'\n' => {
                        self.start_head();
                        return Ok(i + 1);
                    }
                    _ => return Ok(self.passive(buf)),
                },
            };
            i += 1;
        }
        self.mode = Mode::Chunked(c);
        Ok(i)
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
    /// The stream was cut: nothing more reaches hyper.
    Refused(Cut),
}

/// What the reader under hyper does with the bytes just inspected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand them all to hyper (possibly with a spoiled head).
    Pass,
    /// Hand over only `buf[..keep]`; every later read fails with `why`.
    Cut { keep: usize, why: Cut },
}

/// Why a client stream was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The kept bytes complete `max_head` bytes of a head that goes on: hyper, holding a full
    /// buffer and no complete head, answers 431 without reading again. Nothing after them may
    /// reach hyper (it could complete the head).
    HeadTooLarge,
    /// A chunk size above [`MAX_CHUNK`]: the kept bytes end before it, so hyper parses the head
    /// and the body read fails (400 before anything is forwarded, or the request is cut).
    ChunkTooLarge,
}

impl Cut {
    pub fn message(self) -> &'static str {
        match self {
            Cut::HeadTooLarge => "request head larger than max-header-size",
            Cut::ChunkTooLarge => "chunk size too large",
        }
    }
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
                    _ if is_tchar(b) => {
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
                    let run = s[i..].iter().position(|&b| !is_tchar(b));
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
                    _ if is_tchar(b) => {
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
                    let run = s[i..].iter().position(|&b| !is_tchar(b));
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
mod tests;
