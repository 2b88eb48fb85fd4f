//! A socket whose writes fail with `TimedOut` once they have been blocked for longer than the
//! write timeout: RProxy's `write-timeout` on both sides, at the I/O layer (the HTTP/1 codec
//! and hyper's HTTP/2 write through it); the timer is allocated the first time a write blocks
//! and only re-armed after that.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::h1::conn::ReadReady;
use crate::net::TcpStream;

/// A client connection's write timeout that the request stage sets per response (a rule's
/// `upstream-write-timeout`). Shared with the socket under hyper, which must be `Send` (an
/// upgraded stream is handed over as one), hence an atomic; one per connection, and only on
/// servers with such a rule.
#[derive(Clone)]
pub struct WriteLimit(Arc<AtomicU64>);

impl WriteLimit {
    const NONE: u64 = u64::MAX;

    pub fn new(limit: Option<Duration>) -> WriteLimit {
        let l = WriteLimit(Arc::new(AtomicU64::new(Self::NONE)));
        l.set(limit);
        l
    }

    pub fn set(&self, limit: Option<Duration>) {
        let ms = limit.map_or(Self::NONE, |d| {
            u64::try_from(d.as_millis()).unwrap_or(Self::NONE - 1)
        });
        self.0.store(ms, Ordering::Relaxed);
    }

    fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            Self::NONE => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// `S` is a downstream `TcpStream`, or whatever stream a client connection is by the time it
/// reaches the HTTP stage (plain TCP today, TLS later).
pub struct TimedIo<S = TcpStream> {
    inner: S,
    write_timeout: Option<Duration>,
    /// Replaces `write_timeout` when set (client connections of servers with rule overrides).
    limit: Option<WriteLimit>,
    /// Armed while a write is blocked.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<S> TimedIo<S> {
    /// `None`: writes may block forever.
    pub fn new(inner: S, write_timeout: Option<Duration>) -> TimedIo<S> {
        TimedIo {
            inner,
            write_timeout,
            limit: None,
            timer: None,
            armed: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream back (a blocked write's timer, if any, is dropped).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Take the write timeout from `limit`, which the request stage may change per response.
    pub fn with_write_limit(mut self, limit: WriteLimit) -> TimedIo<S> {
        self.limit = Some(limit);
        self
    }

    /// How long a blocked write may wait now (for writes that bypass this wrapper: splice).
    pub fn write_limit(&self) -> Option<Duration> {
        match &self.limit {
            Some(l) => l.get(),
            None => self.write_timeout,
        }
    }

    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let current = self.write_limit();
        let Some(limit) = current else {
            return Poll::Pending;
        };
        let deadline = Instant::now() + limit;
        if !self.armed {
            self.armed = true;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = match &mut self.timer {
            Some(t) => t.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if expired {
            self.armed = false;
            Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "write timed out"))
        } else {
            Poll::Pending
        }
    }

    fn progressed(&mut self) {
        self.armed = false;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: ReadReady> ReadReady for TimedIo<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }

    fn tcp(&self) -> Option<&TcpStream> {
        self.inner.tcp()
    }

    fn hold<F: std::future::Future>(busy: F) -> impl std::future::Future<Output = F::Output> {
        S::hold(busy)
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.try_write(buf);
        if matches!(r, Ok(n) if n > 0) {
            self.progressed();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.blocked(cx).map(Err),
            r => {
                self.progressed();
                r
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.blocked(cx).map(Err),
            r => {
                self.progressed();
                r
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
