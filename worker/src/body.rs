//! Bodies for hyper's HTTP/2 server. The response body rproxy sends to an HTTP/2 client:
//! either its own short text (errors) or the downstream's body streamed through, read by the
//! HTTP/1 codec from the leased connection. Streaming is pull-based: hyper asks for the next
//! chunk only when the client stream has room, and only then do we read from the downstream,
//! so a slow client pauses the downstream instead of growing a buffer. And the request body an
//! HTTP/2 client sends, read ahead a little before a downstream connection is leased.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::h1::upstream::DsResponse;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub enum ProxyBody {
    Full(Option<Bytes>),
    /// Boxed: an error response stays small.
    Downstream(Box<Streamed>),
}

impl ProxyBody {
    pub fn text(s: &'static str) -> ProxyBody {
        ProxyBody::Full(Some(Bytes::from_static(s.as_bytes())))
    }

    /// The downstream's body; the connection goes back to the pool when it has been read to
    /// the end, and is closed if the body is abandoned half-way.
    pub fn downstream(mut resp: DsResponse) -> ProxyBody {
        resp.lease.streaming();
        let read_timeout = resp
            .read_timeout
            .map(|d| (d, Box::pin(tokio::time::sleep(d))));
        ProxyBody::Downstream(Box::new(Streamed {
            resp: Some(resp),
            read_timeout,
        }))
    }
}

pub struct Streamed {
    /// `None` once the body ended (the connection went back to the pool).
    resp: Option<DsResponse>,
    /// Downstream `read-timeout` between chunks.
    read_timeout: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl Streamed {
    fn finish(&mut self) {
        if let Some(mut r) = self.resp.take() {
            r.finish();
        }
    }

    fn ended(&self) -> bool {
        self.resp.as_ref().is_none_or(|r| r.body.is_done())
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        // A body without content (HEAD, 204, 304) may never be polled: still reusable.
        if self.ended() {
            self.finish();
        }
    }
}

#[derive(Debug)]
struct ReadTimeout;

impl std::fmt::Display for ReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("downstream read timed out")
    }
}

impl std::error::Error for ReadTimeout {}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Downstream(s) => {
                let Some(resp) = s.resp.as_mut() else {
                    return Poll::Ready(None);
                };
                let r = match resp.lease.io() {
                    Some(io) => resp.body.poll_next(cx, io, &mut resp.bufs.data),
                    None => return Poll::Ready(None),
                };
                match r {
                    Poll::Ready(Ok(None)) => {
                        s.finish();
                        Poll::Ready(None)
                    }
                    Poll::Ready(Ok(Some(range))) => {
                        if let Some((d, t)) = &mut s.read_timeout {
                            t.as_mut().reset(Instant::now() + *d);
                        }
                        let data = Bytes::copy_from_slice(&resp.bufs.data[range]);
                        if resp.body.is_done() {
                            s.finish();
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    // The lease is dropped with the body: the broken connection is closed,
                    // and hyper resets the client's stream (never a patched response).
                    Poll::Ready(Err(e)) => {
                        s.resp = None;
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Pending => {
                        if let Some((_, t)) = &mut s.read_timeout {
                            if t.as_mut().poll(cx).is_ready() {
                                s.resp = None;
                                return Poll::Ready(Some(Err(ReadTimeout.into())));
                            }
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Downstream(s) => s.ended(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Downstream(s) if s.ended() => SizeHint::with_exact(0),
            ProxyBody::Downstream(_) => SizeHint::default(),
        }
    }
}

/// The request body sent to a downstream: what was read from the client before a connection
/// was leased ([`RequestBody::preread`]), then the rest of the client's body as it arrives,
/// with the client `read-timeout` between reads.
pub struct RequestBody {
    /// The first frame read ahead, then the others: a body that came in one frame (most small
    /// ones) allocates nothing here.
    first: Option<Frame<Bytes>>,
    more: VecDeque<Frame<Bytes>>,
    rest: Incoming,
    read_timeout: Option<Duration>,
    /// Created the first time the client makes us wait, re-armed after that.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

/// The client paused mid-body longer than its `read-timeout`.
#[derive(Debug)]
pub struct ClientBodyTimeout;

impl std::fmt::Display for ClientBodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client read-timeout in the request body")
    }
}

impl std::error::Error for ClientBodyTimeout {}

/// Why a body could not be read ahead.
pub enum PrereadError {
    /// Malformed or the client went away.
    Body(hyper::Error),
    Timeout,
}

/// How much of a request body is read before a downstream connection is leased: a client that
/// announces a body and sends none (or drips it) holds no pooled connection meanwhile.
pub const PREREAD: usize = crate::h1::conn::PREREAD;

impl RequestBody {
    /// Read `body` until it ends, [`PREREAD`] bytes are in, or (a chunked body) its first data;
    /// each read waits at most `read_timeout`. A body with nothing to read costs nothing.
    pub async fn preread(
        mut rest: Incoming,
        read_timeout: Option<Duration>,
    ) -> Result<RequestBody, PrereadError> {
        let mut first = None;
        let mut more = VecDeque::new();
        let mut len = 0;
        while len < PREREAD && !rest.is_end_stream() {
            let next = rest.frame();
            let frame = match read_timeout {
                Some(d) => tokio::time::timeout(d, next)
                    .await
                    .map_err(|_| PrereadError::Timeout)?,
                None => next.await,
            };
            match frame {
                None => break,
                Some(Err(e)) => return Err(PrereadError::Body(e)),
                Some(Ok(f)) => {
                    len += f.data_ref().map_or(0, Bytes::len);
                    if first.is_none() {
                        first = Some(f);
                    } else {
                        more.push_back(f);
                    }
                }
            }
        }
        Ok(RequestBody {
            first,
            more,
            rest,
            read_timeout,
            timer: None,
            armed: false,
        })
    }

    /// The client kept us waiting: arm the timer (once per wait); true when it expired.
    fn waited_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(limit) = self.read_timeout else {
            return false;
        };
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + limit;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(f) = this.first.take().or_else(|| this.more.pop_front()) {
            return Poll::Ready(Some(Ok(f)));
        }
        match Pin::new(&mut this.rest).poll_frame(cx) {
            Poll::Pending => {
                if this.waited_too_long(cx) {
                    // The downstream connection, mid-request, is discarded with this error;
                    // the client gets 408 and is closed (`ProxyError::ClientBodyTimeout`).
                    return Poll::Ready(Some(Err(ClientBodyTimeout.into())));
                }
                Poll::Pending
            }
            r => {
                this.armed = false;
                r.map(|f| f.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.more.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self
            .first
            .iter()
            .chain(&self.more)
            .map(|f| f.data_ref().map_or(0, |d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(ahead));
        if let Some(u) = rest.upper() {
            hint.set_upper(u.saturating_add(ahead));
        }
        hint
    }
}
