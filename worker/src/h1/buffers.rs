//! The worker's free list of I/O buffers (nginx's way): a connection takes a buffer when it has
//! bytes to read or write and gives it back as soon as it is drained, so a keep-alive
//! connection idle between requests holds none. The list is per worker thread (no lock) and
//! bounded: after a spike the buffers beyond [`KEEP`] go back to the allocator (and, with
//! `memtrim-sz`, to the kernel).

use std::cell::RefCell;
use std::time::Duration;

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

/// Free buffers kept for reuse, of each capacity; more are freed.
pub const KEEP: usize = 64;

/// The free lists in one thread-local: a [`Bufs`] is taken and given back with one access.
struct Free {
    data: Vec<Vec<u8>>,
    heads: Vec<Vec<u8>>,
    spans: Vec<Vec<HeaderSpan>>,
}

impl Free {
    fn take(&mut self) -> Vec<u8> {
        self.data.pop().unwrap_or_else(|| Vec::with_capacity(SIZE))
    }

    fn take_head(&mut self) -> Vec<u8> {
        self.heads.pop().unwrap_or_else(|| Vec::with_capacity(HEAD))
    }

    /// Either size; a buffer that grew is freed.
    fn give(&mut self, mut buf: Vec<u8>) {
        let list = match buf.capacity() {
            SIZE => &mut self.data,
            HEAD => &mut self.heads,
            _ => return,
        };
        if list.len() < KEEP {
            buf.clear();
            list.push(buf);
        }
    }

    fn take_spans(&mut self) -> Vec<HeaderSpan> {
        self.spans
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(MAX_HEADERS))
    }

    fn give_spans(&mut self, mut spans: Vec<HeaderSpan>) {
        if spans.capacity() >= MAX_HEADERS && self.spans.len() < KEEP {
            spans.clear();
            self.spans.push(spans);
        }
    }
}

thread_local! {
    static FREE: RefCell<Free> = const {
        RefCell::new(Free {
            data: Vec::new(),
            heads: Vec::new(),
            spans: Vec::new(),
        })
    };
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
    FREE.with_borrow(|f| f.data.len() + f.heads.len())
}

/// Give the free list's buffers back to the allocator and free heap pages back to the kernel
/// (`malloc_trim(0)`, which also releases free pages inside the heap, not only at its top).
pub fn trim() {
    FREE.with_borrow_mut(|f| {
        f.data = Vec::new();
        f.heads = Vec::new();
        f.spans = Vec::new();
    });
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often [`trimmer`] looks at the connection count.
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
}
