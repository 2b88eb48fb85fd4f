//! The worker's free list of I/O buffers (nginx's way): a connection takes a buffer when it has
//! bytes to read or write and gives it back as soon as it is drained, so a keep-alive
//! connection idle between requests holds none. The list is per worker thread (no lock) and
//! bounded twice: never more than [`KEEP`] buffers of each size, and buffers that sat unused
//! for a whole [`TRIM_EVERY`] go back to the allocator ([`decay`]); after a spike of
//! connections, heap pages go back to the kernel ([`trimmer`]).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};

use crate::h1::head::{HeaderSpan, MAX_HEADERS};

/// Capacity of a buffer: two TLS records, several small heads, a useful piece of a body. 32 KiB
/// rather than 16: a 64 KiB response is relayed in about half the system calls (bench/, /big),
/// and only connections with a request in progress hold one.
pub const SIZE: usize = 32 * 1024;

/// Capacity of a buffer for a head: a client's first read (most request heads fit, and a
/// request waiting for a downstream connection holds it), a bodyless forwarded request head,
/// the response head on its way to the client (with small bodies gathered in it; a larger body
/// piece goes out beside it in one `writev`). A request in flight thus holds 4 + 4 KiB before
/// its response, not 2 x 32.
pub const HEAD: usize = 4 * 1024;

/// Free buffers kept for reuse, at most, of each capacity; more are freed. As many as the
/// requests in flight at once under steady load: a list too short for them sends each request
/// to `malloc` for buffers larger than its per-thread cache takes (~750 instructions per
/// request at 64 connections with a list of 64, bench/callgrind.sh). [`decay`] gives back
/// what a quieter load leaves unused.
pub const KEEP: usize = 1024;

/// Buffers of each capacity [`decay`] leaves in the list, unused or not.
const FLOOR: usize = 16;

/// One free list, bounded by [`KEEP`], with what [`decay`] needs to know.
struct List<T> {
    items: Vec<T>,
    /// The shortest the list was since the last [`decay`]: that many sat unused throughout.
    low: usize,
}

impl<T> List<T> {
    const fn new() -> List<T> {
        List {
            items: Vec::new(),
            low: 0,
        }
    }

    fn pop(&mut self, make: impl FnOnce() -> T) -> T {
        let item = self.items.pop();
        self.low = self.low.min(self.items.len());
        item.unwrap_or_else(make)
    }

    fn push(&mut self, item: T) {
        if self.items.len() < KEEP {
            self.items.push(item);
        }
    }

    /// Free what sat unused since the last call, down to [`FLOOR`].
    fn decay(&mut self) {
        let spare = self.low.saturating_sub(FLOOR).min(self.items.len());
        self.items.truncate(self.items.len() - spare);
        if self.items.capacity() > 2 * self.items.len().max(FLOOR) {
            self.items.shrink_to(self.items.len().max(FLOOR));
        }
        self.low = self.items.len();
    }
}

/// The free lists in one thread-local: a [`Bufs`] is taken and given back with one access.
struct Free {
    data: List<Vec<u8>>,
    heads: List<Vec<u8>>,
    spans: List<Vec<HeaderSpan>>,
}

impl Free {
    const fn new() -> Free {
        Free {
            data: List::new(),
            heads: List::new(),
            spans: List::new(),
        }
    }

    fn take(&mut self) -> Vec<u8> {
        self.data.pop(|| Vec::with_capacity(SIZE))
    }

    fn take_head(&mut self) -> Vec<u8> {
        self.heads.pop(|| Vec::with_capacity(HEAD))
    }

    /// Either size; a buffer that grew is freed.
    fn give(&mut self, mut buf: Vec<u8>) {
        let list = match buf.capacity() {
            SIZE => &mut self.data,
            HEAD => &mut self.heads,
            _ => return,
        };
        buf.clear();
        list.push(buf);
    }

    fn take_spans(&mut self) -> Vec<HeaderSpan> {
        self.spans.pop(|| Vec::with_capacity(MAX_HEADERS))
    }

    fn give_spans(&mut self, mut spans: Vec<HeaderSpan>) {
        if spans.capacity() >= MAX_HEADERS {
            spans.clear();
            self.spans.push(spans);
        }
    }

    fn decay(&mut self) {
        self.data.decay();
        self.heads.decay();
        self.spans.decay();
    }
}

thread_local! {
    static FREE: RefCell<Free> = const { RefCell::new(Free::new()) };
}

/// An empty buffer of at least [`SIZE`] bytes of capacity.
pub fn take() -> Vec<u8> {
    FREE.with_borrow_mut(Free::take)
}

/// An empty buffer of at least [`HEAD`] bytes of capacity.
pub fn take_head() -> Vec<u8> {
    FREE.with_borrow_mut(Free::take_head)
}

/// Give `buf` back (either size). A buffer that grew (a large head, a read-ahead body) is freed
/// rather than kept, so the lists never pin more than `KEEP` x (`SIZE` + `HEAD`) bytes.
pub fn give(buf: Vec<u8>) {
    FREE.with_borrow_mut(|f| f.give(buf));
}

/// One read into the spare capacity of `buf` (grown if it has none), appended: tokio's
/// `read_buf` without its `BufMut` layer (a capacity check, a slice conversion and an
/// assertion per read; ~50 instructions, bench/callgrind.sh).
pub fn poll_read_into<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut Vec<u8>,
) -> Poll<io::Result<usize>> {
    if buf.len() == buf.capacity() {
        buf.reserve(64);
    }
    let len = buf.len();
    let mut spare = ReadBuf::uninit(buf.spare_capacity_mut());
    ready!(Pin::new(io).poll_read(cx, &mut spare))?;
    let n = spare.filled().len();
    // SAFETY: the reader initialised (filled) these `n` bytes of the spare capacity.
    unsafe { buf.set_len(len + n) };
    Poll::Ready(Ok(n))
}

/// [`poll_read_into`] as a future (a plain `poll_fn`: an `async fn` around it was one more
/// state machine to enter per read).
pub fn read_into<'a, R: AsyncRead + Unpin>(
    io: &'a mut R,
    buf: &'a mut Vec<u8>,
) -> impl Future<Output = io::Result<usize>> + 'a {
    poll_fn(move |cx| poll_read_into(io, cx, buf))
}

/// A byte buffer and a header index from the free list, given back when dropped.
pub struct Bufs {
    pub data: Vec<u8>,
    pub spans: Vec<HeaderSpan>,
}

impl Bufs {
    pub fn take() -> Bufs {
        FREE.with_borrow_mut(|f| Bufs {
            data: f.take(),
            spans: f.take_spans(),
        })
    }

    /// Keep `data` (bytes already read) and add a header index.
    pub fn with(data: Vec<u8>) -> Bufs {
        Bufs {
            data,
            spans: FREE.with_borrow_mut(Free::take_spans),
        }
    }
}

impl Drop for Bufs {
    fn drop(&mut self) {
        let (data, spans) = (
            std::mem::take(&mut self.data),
            std::mem::take(&mut self.spans),
        );
        FREE.with_borrow_mut(|f| {
            f.give(data);
            f.give_spans(spans);
        });
    }
}

/// Free buffers held by this worker (for tests and diagnostics).
#[cfg(test)]
pub fn free_count() -> usize {
    FREE.with_borrow(|f| f.data.items.len() + f.heads.items.len())
}

/// Give the free list's buffers back to the allocator and free heap pages back to the kernel
/// (`malloc_trim(0)`, which also releases free pages inside the heap, not only at its top).
pub fn trim() {
    FREE.with_borrow_mut(|f| *f = Free::new());
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Give back the free buffers that no connection took since the last call (beyond a few):
/// under steady load the lists hold what the requests in flight need, and no more for long.
pub fn decay() {
    FREE.with_borrow_mut(Free::decay);
}

/// How often [`trimmer`] looks at the connection count and the free lists decay.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// A spike is over when the connections fell by at least this many, to at most half the peak.
const SPIKE: u64 = 256;

/// Return memory to the kernel after a spike of connections ends (their task states, socket
/// wrappers and buffers were freed, but glibc keeps freed heap pages mapped): a worker's RSS
/// comes back near its idle size instead of staying at its peak. `conns` counts the
/// connections that hold a task: connections parked in the idle set ([`crate::parked`]) left
/// theirs, so many parking at once is a fall too.
pub async fn trimmer(conns: impl Fn() -> u64) {
    let mut peak = 0;
    loop {
        tokio::time::sleep(TRIM_EVERY).await;
        decay();
        let now = conns();
        peak = peak.max(now);
        if peak >= now + SPIKE && now <= peak / 2 {
            trim();
            rproxy_shared::debug!("connections fell from {peak} to {now}: memory trimmed");
            peak = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_and_bounded() {
        let a = take();
        assert!(a.capacity() >= SIZE);
        let ptr = a.as_ptr();
        give(a);
        let b = take();
        assert_eq!(b.as_ptr(), ptr);
        let mut grown = b;
        grown.reserve(SIZE * 2);
        give(grown);
        let before = free_count();
        let many: Vec<_> = (0..KEEP + 10).map(|_| take()).collect();
        for b in many {
            give(b);
        }
        assert_eq!(free_count(), KEEP.max(before));
    }

    #[test]
    fn unused_buffers_decay_down_to_the_floor() {
        let heads = || FREE.with_borrow(|f| f.heads.items.len());
        let many: Vec<_> = (0..100).map(|_| take_head()).collect();
        for b in many {
            give(b);
        }
        assert_eq!(heads(), 100);
        // The first decay only starts the count: the list was empty while the 100 were out.
        decay();
        assert_eq!(heads(), 100);
        // 10 in use at most in this period: 90 sat unused, all but the floor go.
        let some: Vec<_> = (0..10).map(|_| take_head()).collect();
        for b in some {
            give(b);
        }
        decay();
        assert_eq!(heads(), 100 - (90 - FLOOR));
        // Nothing taken: down to the floor, and no lower.
        decay();
        assert_eq!(heads(), FLOOR);
        decay();
        assert_eq!(heads(), FLOOR);
    }
}
