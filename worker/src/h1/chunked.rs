//! The chunked transfer coding (RFC 9112 7.1): an incremental decoder that finds the data in
//! a buffer without copying it (the caller forwards the data slices and re-frames them), and
//! the chunk-size line the encoder writes.
//!
//! Strict where a proxy must be: CRLF line ends only (a bare LF is refused), hex sizes of at
//! most 16 digits and at most `i64::MAX` (nginx's limit: a downstream doing signed arithmetic
//! must not read `ffffffffffffffff` as -1), bounded chunk extensions and trailers (which are
//! read and dropped, as hyper's client does not forward them either).

/// Bytes of chunk extensions allowed on one size line.
pub const MAX_EXTENSION: usize = 4096;

/// Bytes of trailer section allowed (it is read and dropped).
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Largest chunk size accepted.
pub const MAX_CHUNK: u64 = i64::MAX as u64;

/// Why a chunked body is refused (400 from a client, 502 from a downstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Not a hex size, a size above [`MAX_CHUNK`], or more than 16 digits.
    Size,
    /// A line not ended by CRLF, or data not followed by CRLF.
    LineEnd,
    /// Extensions longer than [`MAX_EXTENSION`] or trailers longer than [`MAX_TRAILERS`].
    TooLong,
    /// A control byte in an extension or a trailer line.
    Invalid,
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChunkError::Size => "invalid chunk size",
            ChunkError::LineEnd => "chunk line not ended by CRLF",
            ChunkError::TooLong => "chunk extension or trailers too long",
            ChunkError::Invalid => "invalid byte in a chunk extension or trailer",
        })
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a size line (no digit yet).
    SizeStart,
    /// In the hex digits.
    Size,
    /// After the digits: spaces/tabs (before `;` or CR), as hyper and nginx allow.
    SizeWs,
    /// In `;ext...` up to CR.
    Extension,
    /// Saw CR of the size line.
    SizeLf,
    /// In the data of a chunk.
    Data,
    /// Expect CR after data.
    DataCr,
    /// Expect LF after data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// In a trailer line.
    Trailer,
    /// Saw CR of a trailer line.
    TrailerLf,
    /// Saw CR of the final empty line.
    EndLf,
    Done,
}

/// Decodes one chunked body, fed in pieces as they arrive.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// Size being parsed, then data bytes left in the current chunk.
    remaining: u64,
    digits: u8,
    /// Extension or trailer bytes seen (for the limits).
    extra: usize,
    trailers: usize,
}

/// What one [`Decoder::decode`] call found in its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used up (framing and data); the next call starts after them.
    pub consumed: usize,
    /// Where chunk data is in the input (empty when none was found in this call); it always
    /// ends at `consumed`.
    pub data: std::ops::Range<usize>,
    /// The body ended (last chunk and trailers read); bytes after `consumed` are the next
    /// message.
    pub done: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            state: State::SizeStart,
            remaining: 0,
            digits: 0,
            extra: 0,
            trailers: 0,
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the decoder is at a chunk boundary, or done: no partial chunk is pending.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::SizeStart | State::Done)
    }

    /// Decode from `input` until one run of data is found, the body ends, or the input is used
    /// up. Call again with the rest of the input (`input[consumed..]`) and with more bytes as
    /// they arrive. `consumed == 0` without `done` means: nothing more can be decoded from
    /// this input (only possible for an empty input).
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let n = avail.min(self.remaining) as usize;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded {
                        consumed: i + n,
                        data: i..i + n,
                        done: false,
                    });
                }
                State::SizeStart | State::Size => match (hex(b), b) {
                    (Some(d), _) => {
                        if self.state == State::SizeStart {
                            self.remaining = 0;
                            self.digits = 0;
                            self.state = State::Size;
                        }
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(ChunkError::Size);
                        }
                        self.remaining = (self.remaining << 4) | u64::from(d);
                        if self.remaining > MAX_CHUNK {
                            return Err(ChunkError::Size);
                        }
                    }
                    _ if self.state == State::SizeStart => return Err(ChunkError::Size),
                    (_, b' ' | b'\t') => self.state = State::SizeWs,
                    (_, b';') => self.start_extension(),
                    (_, b'\r') => self.state = State::SizeLf,
                    _ => return Err(ChunkError::Size),
                },
                State::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => self.start_extension(),
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(ChunkError::Size),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' => self.more_extension()?,
                    0..=0x1f | 0x7f => return Err(ChunkError::Invalid),
                    _ => self.more_extension()?,
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::LineEnd);
                    }
                    self.state = if self.remaining == 0 {
                        self.trailers = 0;
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::LineEnd);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::LineEnd);
                    }
                    self.state = State::SizeStart;
                }
                State::TrailerStart => {
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else {
                        self.state = State::Trailer;
                        self.trailer_byte(b)?;
                    }
                }
                State::Trailer => {
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    } else {
                        self.trailer_byte(b)?;
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::LineEnd);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::LineEnd);
                    }
                    self.state = State::Done;
                    return Ok(Decoded {
                        consumed: i + 1,
                        data: i + 1..i + 1,
                        done: true,
                    });
                }
            }
            i += 1;
        }
        Ok(Decoded {
            consumed: i,
            data: i..i,
            done: self.state == State::Done,
        })
    }

    fn start_extension(&mut self) {
        self.state = State::Extension;
        self.extra = 1;
    }

    fn more_extension(&mut self) -> Result<(), ChunkError> {
        self.extra += 1;
        if self.extra > MAX_EXTENSION {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }

    fn trailer_byte(&mut self, b: u8) -> Result<(), ChunkError> {
        if b == b'\n' {
            return Err(ChunkError::LineEnd);
        }
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            return Err(ChunkError::Invalid);
        }
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The size line of a chunk of `len` bytes (`len` > 0): `{hex}\r\n`, written into `out`
/// (no allocation); returns the bytes to send before the data. The data is followed by
/// [`CHUNK_END`].
pub fn size_line(len: usize, out: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut k = 0;
    loop {
        digits[k] = HEX[n & 0xf];
        k += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for j in 0..k {
        out[j] = digits[k - 1 - j];
    }
    out[k] = b'\r';
    out[k + 1] = b'\n';
    &out[..k + 2]
}

/// What follows the data of each chunk.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk and an empty trailer section: the end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` fed in pieces of `step` bytes; the data and where the body ended.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<usize>), ChunkError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let mut piece = pos;
            while piece < end {
                let r = d.decode(&input[piece..end])?;
                out.extend_from_slice(&input[piece..end][r.data.clone()]);
                piece += r.consumed;
                if r.done {
                    return Ok((out, Some(piece)));
                }
                if r.consumed == 0 {
                    break;
                }
            }
            pos = end;
        }
        Ok((out, None))
    }

    #[test]
    fn decodes_at_every_split() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\nA \t\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (data, end) = run(body, step).unwrap();
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert_eq!(end, Some(body.len() - 4), "step {step}");
        }
    }

    #[test]
    fn data_slices_point_into_the_input() {
        let mut d = Decoder::new();
        let input = b"3\r\nabc\r\n0\r\n\r\n";
        let r = d.decode(input).unwrap();
        assert_eq!(&input[r.data.clone()], b"abc");
        assert_eq!(r.consumed, 6);
        let r = d.decode(&input[6..]).unwrap();
        assert!(r.done && r.data.is_empty());
        assert_eq!(6 + r.consumed, input.len());
        assert!(d.is_done());
    }

    #[test]
    fn refuses_what_a_proxy_must_not_pass() {
        let cases: [(&[u8], ChunkError); 10] = [
            (b"\r\n", ChunkError::Size),
            (b"x\r\n", ChunkError::Size),
            (b"-1\r\n", ChunkError::Size),
            (b"10000000000000000\r\n", ChunkError::Size),
            (b"8000000000000000\r\n", ChunkError::Size),
            (b"5\nhello", ChunkError::Size),
            (b"5\r\nhelloX", ChunkError::LineEnd),
            (b"5\r\nhello\n", ChunkError::LineEnd),
            (b"1;a\x00b\r\n", ChunkError::Invalid),
            (b"0\r\nX: 1\n", ChunkError::LineEnd),
        ];
        for (input, want) in cases {
            assert_eq!(
                run(input, input.len()),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut long = b"1;".to_vec();
        long.resize(MAX_EXTENSION + 10, b'a');
        assert_eq!(run(&long, 7), Err(ChunkError::TooLong));
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-Trailer: 12345\r\n");
        }
        assert_eq!(run(&trailers, 100), Err(ChunkError::TooLong));
    }

    #[test]
    fn largest_size_is_accepted() {
        let mut d = Decoder::new();
        let r = d.decode(b"7fffffffffffffff\r\nab").unwrap();
        assert_eq!(r.data, 18..20);
        assert!(!d.at_boundary());
    }

    #[test]
    fn size_lines() {
        let mut out = [0; 18];
        assert_eq!(size_line(1, &mut out), b"1\r\n");
        assert_eq!(size_line(255, &mut out), b"ff\r\n");
        assert_eq!(size_line(65536, &mut out), b"10000\r\n");
        assert_eq!(size_line(usize::MAX, &mut out), b"ffffffffffffffff\r\n");
    }
}
