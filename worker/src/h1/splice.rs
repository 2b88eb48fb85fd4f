//! The rest of a response body of known length (what the first read, with the head, did not
//! bring), from a downstream socket to a plain TCP client, moved by the kernel through a pipe
//! (`splice(2)`, HAProxy's way) instead of being copied into and out of a buffer of ours: the
//! pages move, no byte is copied on this side. Measured here (bench/README.md): a 64 KiB
//! response 16 % less CPU. The pipe holds at most [`PIPE`] bytes in flight: a slow client
//! still pauses the downstream, as with a buffer.
//!
//! Why not from the first byte (a small head buffer, everything after it spliced): a 10 KB
//! response then took 4 system calls instead of 2, 27 us of CPU instead of 21.
//!
//! Pipes come from a per-worker free list; one that still holds bytes (the relay failed
//! half-way) is closed, never reused.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::Interest;

use crate::net::TcpStream;

/// Bodies (what is left of them after the bytes read with the head) at least this long are
/// spliced; shorter ones cost less through the buffer they are already in.
pub const MIN: u64 = 16 * 1024;

/// Bytes asked of one `splice` (Linux's default pipe capacity).
const PIPE: usize = 64 * 1024;

/// Free pipes kept for reuse.
const KEEP: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    /// Cleared the first time the kernel refuses to splice these sockets: copy from then on.
    static WORKS: Cell<bool> = const { Cell::new(true) };
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn take() -> io::Result<Pipe> {
        if let Some(p) = FREE.with(|f| f.borrow_mut().pop()) {
            return Ok(p);
        }
        let mut fds = [0; 2];
        // SAFETY: `fds` is two ints, as pipe2 requires; on success both are new descriptors
        // owned by nothing else.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above: pipe2 succeeded, the descriptors are open and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write })
    }

    /// Back to the free list: only empty pipes.
    fn give(self) {
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < KEEP {
                f.push(self);
            }
        });
    }
}

/// Whether splicing is worth trying (the kernel has not refused it yet).
pub fn available() -> bool {
    WORKS.with(Cell::get)
}

/// One `splice` between two descriptors, non-blocking.
fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (borrowed from owners
    // that outlive it); null offsets are what splice takes for pipes and sockets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// What [`relay`] ended with.
pub enum Spliced {
    /// The head and the whole body went to the client.
    Done,
    /// The kernel refused before any byte moved, the head's included: relay them by copying
    /// instead.
    Unsupported,
    /// Either side failed or timed out after the response had started: cut it.
    Failed(io::Error),
}

async fn with_limit<T>(
    limit: Option<Duration>,
    what: &'static str,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match limit {
        Some(d) => crate::clock::timeout(d, f)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, what))?,
        None => f.await,
    }
}

/// Send `head` (both parts, in order) to `client`; `more`: with `MSG_MORE`, for bytes spliced
/// right after it.
async fn send_head(
    client: &TcpStream,
    head: &mut [&[u8]; 2],
    more: bool,
    write_timeout: Option<Duration>,
    moved: &mut impl FnMut(usize),
) -> io::Result<()> {
    while !head[0].is_empty() || !head[1].is_empty() {
        let bufs = [io::IoSlice::new(head[0]), io::IoSlice::new(head[1])];
        let send = || client.send_vectored(&bufs, more);
        // A head usually goes whole into the socket's buffer: then no future and no timer
        // (a timeout's timer costs ~200 instructions to make, bench/callgrind.sh).
        let n = match client.try_io(Interest::WRITABLE, send) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                with_limit(
                    write_timeout,
                    "write timed out",
                    client.async_io(Interest::WRITABLE, send),
                )
                .await?
            }
            r => r?,
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        moved(n);
        match n.checked_sub(head[0].len()) {
            None => head[0] = &head[0][n..],
            Some(m) => *head = [&[], &head[1][m..]],
        }
    }
    Ok(())
}

/// Send `head` (the response head and what of the body came with it, both parts in order;
/// may be empty), then move exactly `len` body bytes from `ds` to `client`, at most `ahead`
/// bytes (the downstream's `high-watermark`, and never more than a pipe holds) in flight.
/// Each wait for the downstream is bounded by `read_timeout` (its `read-timeout`), each wait
/// for the client by `write_timeout`; `moved` is called with each piece the client took
/// (for the metrics).
///
/// When the downstream already has the body's next bytes, the head is sent with `MSG_MORE`
/// after they are in the pipe and leaves with them (the splice to the client, without
/// `SPLICE_F_MORE`, pushes): the client is woken once per response instead of twice. That
/// counts for more than the system call on a busy machine: each wake-up of a client on the
/// worker's CPU tends to preempt the worker, and the connections behind it wait
/// (bench/README.md, "p99 at 64 KiB x 64 connections": preemptions of the worker 0.30 ->
/// 0.16-0.20 per request, CPU per request and p99 7-9 % lower). When it does not have them
/// yet, the head goes at once, alone: never held while the downstream pauses.
#[allow(clippy::too_many_arguments)]
pub async fn relay(
    ds: &TcpStream,
    client: &TcpStream,
    head: [&[u8]; 2],
    len: u64,
    ahead: usize,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    mut moved: impl FnMut(usize),
) -> Spliced {
    let pipe = match Pipe::take() {
        Ok(p) => p,
        Err(e) => {
            rproxy_shared::debug!("no pipe to splice through: {e}");
            return Spliced::Unsupported;
        }
    };
    let (from, to) = (ds.as_raw_fd(), client.as_raw_fd());
    let (pr, pw) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    let mut head = head;
    let mut left = len;
    // The head went alone: the body can no longer be left to the caller to copy.
    let mut head_sent = false;
    while left > 0 {
        let want = left.min(ahead.clamp(1, PIPE) as u64) as usize;
        let head_left = !head[0].is_empty() || !head[1].is_empty();
        let filled = if head_left {
            match ds.try_io(Interest::READABLE, || splice(from, pw, want)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    head_sent = true;
                    if let Err(e) =
                        send_head(client, &mut head, false, write_timeout, &mut moved).await
                    {
                        return Spliced::Failed(e);
                    }
                    continue;
                }
                r => r,
            }
        } else {
            with_limit(
                read_timeout,
                "downstream read-timeout",
                ds.async_io(Interest::READABLE, || splice(from, pw, want)),
            )
            .await
        };
        let mut in_pipe = match filled {
            Ok(0) => {
                return Spliced::Failed(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "downstream closed before the body ended",
                ))
            }
            Ok(n) => n,
            // Refused before any byte of the body moved.
            Err(e) if left == len && e.raw_os_error() == Some(libc::EINVAL) => {
                WORKS.with(|w| w.set(false));
                rproxy_shared::warn!("splice(2) refused ({e}): response bodies are copied");
                pipe.give();
                return if head_sent {
                    Spliced::Failed(e)
                } else {
                    Spliced::Unsupported
                };
            }
            Err(e) => return Spliced::Failed(e),
        };
        left -= in_pipe as u64;
        if head_left {
            if let Err(e) = send_head(client, &mut head, true, write_timeout, &mut moved).await {
                return Spliced::Failed(e);
            }
        }
        while in_pipe > 0 {
            let sent = with_limit(
                write_timeout,
                "write timed out",
                client.async_io(Interest::WRITABLE, || splice(pr, to, in_pipe)),
            )
            .await;
            match sent {
                Ok(0) => {
                    return Spliced::Failed(io::Error::from(io::ErrorKind::WriteZero));
                }
                Ok(n) => {
                    in_pipe -= n;
                    moved(n);
                }
                Err(e) => return Spliced::Failed(e),
            }
        }
    }
    pipe.give();
    Spliced::Done
}

/// Free pipes now (tests).
#[cfg(test)]
pub fn free_count() -> usize {
    FREE.with(|f| f.borrow().len())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::LocalSet;

    use crate::testing::{flat, start};

    /// An origin that answers every request on a connection with `len` bytes of a pattern and
    /// a Content-Length of `len`, but closes after sending `cut` of them when `cut < len`.
    async fn origin(len: usize, cut: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::task::spawn_local(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::task::spawn_local(async move {
                    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    loop {
                        head.clear();
                        while !head.ends_with(b"\r\n\r\n") {
                            if s.read(&mut b).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(b[0]);
                        }
                        let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                        if s.write_all(h.as_bytes()).await.is_err()
                            || s.write_all(&body[..cut.min(len)]).await.is_err()
                        {
                            return;
                        }
                        if cut < len {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Read one response of `len` body bytes (by Content-Length) from `s`.
    async fn response(s: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("stalled")
                .unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                if got.len() >= end + 4 + len {
                    return got.split_off(end + 4);
                }
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn large_bodies_are_spliced_whole_and_in_order_on_keep_alive() {
        LocalSet::new()
            .run_until(async {
                let len = 3 * 1024 * 1024 + 17;
                let proxy = start(&flat(origin(len, len).await)).await;
                let want: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let before = super::free_count();
                let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                for _ in 0..3 {
                    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
                        .await
                        .unwrap();
                    let body = response(&mut s, len).await;
                    assert_eq!(body.len(), len);
                    assert!(body == want, "body differs");
                }
                // The splice path ran (its pipe is back on the free list, empty).
                assert_eq!(super::free_count(), before.max(1));
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_cut_by_the_downstream_is_cut_for_the_client() {
        LocalSet::new()
            .run_until(async {
                let (len, cut) = (1024 * 1024, 300 * 1024);
                let proxy = start(&flat(origin(len, cut).await)).await;
                let before = super::free_count();
                let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
                    .await
                    .unwrap();
                let mut got = Vec::new();
                tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
                    .await
                    .expect("the client connection was not closed")
                    .unwrap();
                let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                assert!(got.starts_with(b"HTTP/1.1 200"));
                assert_eq!(
                    got.len() - end,
                    cut,
                    "the client got what the downstream sent"
                );
                // Nothing of a failed relay is reused.
                assert_eq!(super::free_count(), before);
            })
            .await;
    }
}
