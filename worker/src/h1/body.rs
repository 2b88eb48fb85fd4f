//! Reading a message body out of a connection's buffer, whatever its framing, one data slice
//! at a time: the slices point into the buffer (nothing is copied), and the buffer is refilled
//! from the socket only when every byte in it has been used, so a body of any size passes
//! through one bounded buffer and a slow reader on the other side pauses this one.

use std::io;
use std::ops::Range;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncRead;

use crate::h1::buffers;
use crate::h1::chunked::{ChunkError, Decoder};
use crate::h1::head::{ReqBody, RespBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Length,
    Chunked,
    /// Until the peer closes (responses only).
    Close,
    Done,
}

/// Why a body could not be read to its end.
#[derive(Debug)]
pub enum BodyError {
    /// The peer closed before the body ended.
    Eof,
    Chunk(ChunkError),
    Io(io::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Eof => f.write_str("closed before the body ended"),
            BodyError::Chunk(e) => e.fmt(f),
            BodyError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BodyError {}

/// What [`BodyReader::step`] found in the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body data at this range of the buffer.
    Data(Range<usize>),
    /// The body ended; bytes from [`BodyReader::pos`] on belong to the next message.
    Done,
    /// Every buffered byte is used: read more.
    NeedMore,
}

/// The body of one message, read from a buffer that starts with its head.
#[derive(Debug, Clone)]
pub struct BodyReader {
    kind: Kind,
    remaining: u64,
    dec: Decoder,
    /// The first byte of the buffer not used yet.
    pub pos: usize,
}

impl BodyReader {
    /// A request body starting at `pos` (just after its head).
    pub fn request(body: ReqBody, pos: usize) -> BodyReader {
        match body {
            ReqBody::None => Self::new(Kind::Done, 0, pos),
            ReqBody::Length(n) => Self::new(Kind::Length, n, pos),
            ReqBody::Chunked => Self::new(Kind::Chunked, 0, pos),
        }
    }

    /// A response body starting at `pos`.
    pub fn response(body: RespBody, pos: usize) -> BodyReader {
        match body {
            RespBody::None => Self::new(Kind::Done, 0, pos),
            RespBody::Length(n) => Self::new(Kind::Length, n, pos),
            RespBody::Chunked => Self::new(Kind::Chunked, 0, pos),
            RespBody::Close => Self::new(Kind::Close, 0, pos),
        }
    }

    fn new(kind: Kind, remaining: u64, pos: usize) -> BodyReader {
        BodyReader {
            kind,
            remaining,
            dec: Decoder::new(),
            pos,
        }
    }

    pub fn is_done(&self) -> bool {
        self.kind == Kind::Done
    }

    /// What is left of a body of known length (`None`: another framing, or it ended).
    pub fn length_left(&self) -> Option<u64> {
        (self.kind == Kind::Length).then_some(self.remaining)
    }

    /// `n` bytes of a body of known length went to the peer without passing through the
    /// buffer (spliced); `n` is at most [`BodyReader::length_left`].
    pub fn skip(&mut self, n: u64) {
        if self.kind == Kind::Length {
            self.remaining -= n.min(self.remaining);
            if self.remaining == 0 {
                self.kind = Kind::Done;
            }
        }
    }

    /// Unused bytes are in the buffer.
    pub fn buffered(&self, buf: &[u8]) -> bool {
        self.pos < buf.len()
    }

    /// The next piece of the body from what `buf` holds, without reading.
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, BodyError> {
        loop {
            let avail = buf.len().saturating_sub(self.pos);
            match self.kind {
                Kind::Done => return Ok(Step::Done),
                Kind::Length => {
                    if avail == 0 {
                        return Ok(Step::NeedMore);
                    }
                    let n = (avail as u64).min(self.remaining) as usize;
                    let r = self.pos..self.pos + n;
                    self.pos += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.kind = Kind::Done;
                    }
                    return Ok(Step::Data(r));
                }
                Kind::Close => {
                    if avail == 0 {
                        return Ok(Step::NeedMore);
                    }
                    let r = self.pos..buf.len();
                    self.pos = buf.len();
                    return Ok(Step::Data(r));
                }
                Kind::Chunked => {
                    if avail == 0 {
                        return Ok(Step::NeedMore);
                    }
                    let d = self
                        .dec
                        .decode(&buf[self.pos..])
                        .map_err(BodyError::Chunk)?;
                    let r = self.pos + d.data.start..self.pos + d.data.end;
                    self.pos += d.consumed;
                    if d.done {
                        self.kind = Kind::Done;
                    }
                    if !r.is_empty() {
                        return Ok(Step::Data(r));
                    }
                }
            }
        }
    }

    /// The next piece of the body (`None`: it ended), reading into `buf` when everything in it
    /// is used (which empties it first: the head it started with is gone then).
    pub fn poll_next<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut R,
        buf: &mut Vec<u8>,
    ) -> Poll<Result<Option<Range<usize>>, BodyError>> {
        loop {
            match self.step(buf)? {
                Step::Data(r) => return Poll::Ready(Ok(Some(r))),
                Step::Done => return Poll::Ready(Ok(None)),
                Step::NeedMore => {
                    buf.clear();
                    self.pos = 0;
                    if buf.capacity() < buffers::SIZE {
                        // A head buffer (4 KiB) met a body: a full-size one from the free
                        // list instead of growing this one (which the list would not take back).
                        buffers::give(std::mem::replace(buf, buffers::take()));
                    }
                    let n = ready!(buffers::poll_read_into(io, cx, buf)).map_err(BodyError::Io)?;
                    if n == 0 {
                        if self.kind == Kind::Close {
                            self.kind = Kind::Done;
                            return Poll::Ready(Ok(None));
                        }
                        return Poll::Ready(Err(BodyError::Eof));
                    }
                }
            }
        }
    }

    /// [`BodyReader::poll_next`] as a future.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Range<usize>>, BodyError> {
        std::future::poll_fn(|cx| self.poll_next(cx, io, buf)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut BodyReader, buf: &[u8]) -> (Vec<u8>, Step) {
        let mut out = Vec::new();
        loop {
            match r.step(buf).unwrap() {
                Step::Data(range) => out.extend_from_slice(&buf[range]),
                s => return (out, s),
            }
        }
    }

    #[test]
    fn framings() {
        let buf = b"HEADhelloNEXT";
        let mut r = BodyReader::request(ReqBody::Length(5), 4);
        assert_eq!(drain(&mut r, buf), (b"hello".to_vec(), Step::Done));
        assert_eq!(r.pos, 9);
        let buf = b"HEAD5\r\nhello\r\n0\r\n\r\nNEXT";
        let mut r = BodyReader::request(ReqBody::Chunked, 4);
        assert_eq!(drain(&mut r, buf), (b"hello".to_vec(), Step::Done));
        assert_eq!(&buf[r.pos..], b"NEXT");
        let mut r = BodyReader::response(RespBody::Close, 4);
        assert_eq!(drain(&mut r, buf).1, Step::NeedMore);
        assert!(!r.is_done());
        let mut r = BodyReader::response(RespBody::None, 4);
        assert_eq!(drain(&mut r, buf), (Vec::new(), Step::Done));
        let mut r = BodyReader::request(ReqBody::Length(50), 4);
        assert_eq!(drain(&mut r, buf).1, Step::NeedMore);
    }

    #[tokio::test]
    async fn reads_through_one_buffer() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = format!("{:x}\r\n", body.len()).into_bytes();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut io = &wire[..];
        let mut buf = Vec::with_capacity(buffers::SIZE);
        let mut r = BodyReader::request(ReqBody::Chunked, 0);
        let mut out = Vec::new();
        while let Some(range) = r.next(&mut io, &mut buf).await.unwrap() {
            out.extend_from_slice(&buf[range]);
        }
        assert_eq!(out, body);
        assert!(buf.capacity() <= 2 * buffers::SIZE);
        let mut io = &b"abc"[..];
        let mut r = BodyReader::request(ReqBody::Length(5), 0);
        buf.clear();
        assert!(r.next(&mut io, &mut buf).await.unwrap().is_some());
        assert!(matches!(
            r.next(&mut io, &mut buf).await,
            Err(BodyError::Eof)
        ));
    }
}
