//! The response body rproxy sends to a client: either its own short text (errors) or the
//! downstream's body streamed through. Streaming is pull-based: hyper asks for the next chunk
//! only when the client socket has room, and only then do we read from the downstream, so a
//! slow client pauses the downstream instead of growing a buffer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::pool::Lease;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub enum ProxyBody {
    Full(Option<Bytes>),
    Downstream(Streamed),
}

impl ProxyBody {
    pub fn text(s: &'static str) -> ProxyBody {
        ProxyBody::Full(Some(Bytes::from_static(s.as_bytes())))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    /// The downstream's body; the connection goes back to the pool when it has been read to
    /// the end, and is closed if the body is abandoned half-way.
    pub fn downstream(inner: Incoming, lease: Lease, read_timeout: Option<Duration>) -> ProxyBody {
        ProxyBody::Downstream(Streamed {
            inner,
            lease: Some(lease),
            read_timeout: read_timeout.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
        })
    }
}

pub struct Streamed {
    inner: Incoming,
    lease: Option<Lease>,
    /// Downstream `read-timeout` between chunks.
    read_timeout: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl Streamed {
    fn finish(&mut self) {
        if let Some(l) = self.lease.take() {
            l.release();
        }
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        // A body without content (HEAD, 204, 304) may never be polled: still reusable.
        if self.inner.is_end_stream() {
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
                let r = Pin::new(&mut s.inner).poll_frame(cx);
                match r {
                    Poll::Ready(None) => {
                        s.finish();
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some((d, t)) = &mut s.read_timeout {
                            t.as_mut().reset(Instant::now() + *d);
                        }
                        if s.inner.is_end_stream() {
                            s.finish();
                        }
                        Poll::Ready(Some(Ok(f)))
                    }
                    // The lease is dropped with the body: the broken connection is closed,
                    // and hyper cuts the client connection (never a patched response).
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                    Poll::Pending => {
                        if let Some((_, t)) = &mut s.read_timeout {
                            if t.as_mut().poll(cx).is_ready() {
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
            ProxyBody::Downstream(s) => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Downstream(s) => s.inner.size_hint(),
        }
    }
}

/// The request body sent to a downstream: the client's, possibly with its first frame already
/// read (a chunked body is checked up to its first chunk before anything is forwarded, so a
/// malformed chunk size gets a 400 instead of reaching the downstream).
pub enum RequestBody {
    Direct(Incoming),
    Peeked(Option<Frame<Bytes>>, Incoming),
    /// A rule's `upstream-read-timeout`: each piece of the body must arrive within it. Boxed:
    /// only requests of such rules pay for the timer.
    Timed(Box<RequestBody>, Duration, Pin<Box<Sleep>>),
}

impl RequestBody {
    /// `self`, failing with [`ClientReadTimeout`] when the client sends nothing for `limit`.
    pub fn timed(self, limit: Duration) -> RequestBody {
        RequestBody::Timed(Box::new(self), limit, Box::pin(tokio::time::sleep(limit)))
    }
}

/// The client stalled its request body longer than the rule's `upstream-read-timeout`.
#[derive(Debug)]
pub struct ClientReadTimeout;

impl std::fmt::Display for ClientReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client request body read timed out")
    }
}

impl std::error::Error for ClientReadTimeout {}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Direct(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Peeked(first, rest) => match first.take() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None => Pin::new(rest).poll_frame(cx).map_err(Into::into),
            },
            RequestBody::Timed(inner, limit, timer) => {
                match Pin::new(&mut **inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(f))) => {
                        timer.as_mut().reset(Instant::now() + *limit);
                        Poll::Ready(Some(Ok(f)))
                    }
                    Poll::Pending if timer.as_mut().poll(cx).is_ready() => {
                        Poll::Ready(Some(Err(ClientReadTimeout.into())))
                    }
                    r => r,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Direct(b) => b.is_end_stream(),
            RequestBody::Peeked(first, rest) => first.is_none() && rest.is_end_stream(),
            RequestBody::Timed(inner, _, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Direct(b) => b.size_hint(),
            RequestBody::Peeked(None, rest) => rest.size_hint(),
            RequestBody::Peeked(Some(_), _) => SizeHint::default(),
            RequestBody::Timed(inner, _, _) => inner.size_hint(),
        }
    }
}
