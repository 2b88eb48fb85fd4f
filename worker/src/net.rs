//! The worker's TCP sockets (clients and downstreams) and their readiness: one epoll instance
//! of the worker's own, edge-triggered like tokio's, with each socket's readiness and wakers
//! in plain cells (a worker is one thread). Its descriptor sits in tokio's poller; the
//! worker's loop ([`drive`], polled by the worker's main future: [`hosting`]) takes its
//! events when tokio says it has some, wakes the tasks waiting on those sockets, and polls the
//! plain connections' tasks ([`crate::conn_tasks`]).
//!
//! Why not tokio's `TcpStream`: its readiness is made for many threads. Each readiness check
//! and each wake-up takes atomics and a mutex, and its driver finds each event's socket in a
//! shared slab; on a small keep-alive request (four readiness checks, two wake-ups) that was
//! about 750 instructions and a dozen locked operations, a tenth of rproxy's user-space CPU
//! per request (bench/callgrind.sh). Here a check is a cell read, and tokio's own poller
//! sees one descriptor, ready once per turn whatever the number of events behind it. The
//! price is a second `epoll_wait` per wake-up (tokio's, then ours): two per request on a lone
//! connection (measured with `wrk -c1`: CPU per request +2 %, p99 no worse). Under load it
//! is less than one per turn: a turn that took several events is followed by up to
//! [`BUSY_ROUNDS`] more, their events taken straight from our instance, without going back
//! through tokio's poller and scheduler (at 64 busy connections 0.19-0.25 `epoll_wait` per
//! request instead of 0.24-0.27, a count that moves from run to run; user-space CPU per
//! request ~6 % lower).
//!
//! Same contract as tokio's: readiness is cached and cleared by the read or write that finds
//! the socket drained (`WouldBlock`, or a short read or write of a future: on epoll that
//! proves it; not a vectored write's nor a `try_*`'s, as in tokio);
//! "closed" and error states stay; one waker per direction (the last one to wait); the
//! cooperative budget is taken by the future-based reads and writes, not by `try_*`.
//! Tasks, timers and everything else stay tokio's.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

const READABLE: u8 = 1;
const READ_CLOSED: u8 = 2;
const WRITABLE: u8 = 4;
const WRITE_CLOSED: u8 = 8;

/// Events taken per `epoll_wait`.
const BATCH: usize = 256;

/// A turn that took at least this many events is followed by another, its events taken
/// straight from the instance (more came while it ran, under load), up to [`BUSY_ROUNDS`]
/// times, before the loop goes back to tokio.
const BUSY: usize = 4;
const BUSY_ROUNDS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

impl Dir {
    fn of(interest: Interest) -> Dir {
        if interest.is_writable() {
            Dir::Write
        } else {
            Dir::Read
        }
    }

    /// The readiness bits that let an attempt in this direction go ahead.
    fn ready_mask(self) -> u8 {
        match self {
            Dir::Read => READABLE | READ_CLOSED,
            Dir::Write => WRITABLE | WRITE_CLOSED,
        }
    }

    /// The bit a drained socket clears (closed states stay).
    fn clear_mask(self) -> u8 {
        match self {
            Dir::Read => READABLE,
            Dir::Write => WRITABLE,
        }
    }
}

#[derive(Default)]
struct Slot {
    /// Bumped when the slot is freed: an event already taken for the socket that held it is
    /// told from one for the socket that holds it now (the epoll token carries it).
    generation: u32,
    ready: u8,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// One worker thread's epoll instance and what it knows of each socket in it.
pub struct Reactor {
    /// In tokio's poller, which says when it has events.
    poller: AsyncFd<EpollFd>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    /// The driving task is alive (it is not once the runtime that ran it is gone: tests).
    driven: Cell<bool>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
    /// The worker's loop when a [`hosting`] future polls it (the worker's main future), instead
    /// of a task of its own.
    static HOSTED: RefCell<Option<Pin<Box<dyn Future<Output = ()>>>>> = const { RefCell::new(None) };
    static HOSTING: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

/// Run `main` (the worker's main future, which its `LocalSet` polls before each batch of its
/// tasks) with the worker's loop polled first in each of its polls: no tokio task around the
/// loop, so a turn costs no task harness or `LocalSet` schedule (~320 instructions a turn,
/// bench/callgrind.sh; a lone connection's request is two turns). Where nothing hosts it
/// (tests, tools), the loop is a task of its own.
pub async fn hosting<F: Future>(main: F) -> F::Output {
    let mut main = std::pin::pin!(main);
    let out = std::future::poll_fn(|cx| {
        HOSTING.with(|h| {
            let mut h = h.borrow_mut();
            if !h.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *h = Some(cx.waker().clone());
            }
        });
        let fut = HOSTED.with(|h| h.borrow_mut().take());
        if let Some(mut fut) = fut {
            if fut.as_mut().poll(cx).is_pending() {
                HOSTED.with(|h| *h.borrow_mut() = Some(fut));
            }
        }
        main.as_mut().poll(cx)
    })
    .await;
    HOSTING.with(|h| h.borrow_mut().take());
    HOSTED.with(|h| h.borrow_mut().take());
    out
}

impl Reactor {
    /// This thread's reactor; the first call (or the first after its runtime ended) creates
    /// it and starts the worker's loop ([`drive`]): in [`hosting`]'s future when there is one,
    /// else as a task on the current `LocalSet`.
    fn current() -> io::Result<Rc<Reactor>> {
        CURRENT.with(|c| {
            let mut c = c.borrow_mut();
            if let Some(r) = c.as_ref().filter(|r| r.driven.get()) {
                return Ok(Rc::clone(r));
            }
            let r = Rc::new(Reactor {
                poller: EpollFd::new_in_tokio()?,
                slots: RefCell::new(Vec::new()),
                free: RefCell::new(Vec::new()),
                driven: Cell::new(true),
            });
            if let Some(host) = HOSTING.with(|h| h.borrow().clone()) {
                let fut: Pin<Box<dyn Future<Output = ()>>> = Box::pin(drive(Rc::clone(&r)));
                HOSTED.with(|h| *h.borrow_mut() = Some(fut));
                host.wake();
            } else {
                tokio::task::spawn_local(drive(Rc::clone(&r)));
            }
            *c = Some(Rc::clone(&r));
            Ok(r)
        })
    }

    fn epoll(&self) -> &Epoll {
        &self.poller.get_ref().0
    }

    fn register(&self, fd: BorrowedFd<'_>) -> io::Result<u32> {
        let index = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot::default());
                u32::try_from(slots.len() - 1).map_err(|_| io::Error::other("too many sockets"))?
            }
        };
        let generation = self.slots.borrow()[index as usize].generation;
        let event = EpollEvent::new(
            EpollFlags::EPOLLIN
                | EpollFlags::EPOLLOUT
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLET,
            (u64::from(generation) << 32) | u64::from(index),
        );
        if let Err(e) = self.epoll().add(fd, event) {
            self.release(index);
            return Err(e.into());
        }
        Ok(index)
    }

    fn deregister(&self, index: u32, fd: BorrowedFd<'_>) -> io::Result<()> {
        let r = self.epoll().delete(fd);
        self.release(index);
        Ok(r?)
    }

    /// Free a slot. The socket itself is not taken out of the epoll set: closing it does that
    /// (it is never duplicated), one `epoll_ctl` fewer per connection.
    fn release(&self, index: u32) {
        let (reader, writer) = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[index as usize];
            s.generation = s.generation.wrapping_add(1);
            s.ready = 0;
            (s.reader.take(), s.writer.take())
        };
        // Dropped outside the borrow: a waker's drop may run arbitrary code.
        drop((reader, writer));
        self.free.borrow_mut().push(index);
    }

    fn poll_ready(&self, index: u32, dir: Dir, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut slots = self.slots.borrow_mut();
        let s = &mut slots[index as usize];
        if s.ready & dir.ready_mask() != 0 {
            return Poll::Ready(Ok(()));
        }
        let w = match dir {
            Dir::Read => &mut s.reader,
            Dir::Write => &mut s.writer,
        };
        match w {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => {
                let old = w.replace(cx.waker().clone());
                drop(slots);
                drop(old);
            }
        }
        Poll::Pending
    }

    fn is_ready(&self, index: u32, dir: Dir) -> bool {
        self.slots.borrow()[index as usize].ready & dir.ready_mask() != 0
    }

    fn clear(&self, index: u32, dir: Dir) {
        self.slots.borrow_mut()[index as usize].ready &= !dir.clear_mask();
    }

    /// Take the events ready now (no wait) and wake whom they concern; how many there were.
    fn take_events(&self, events: &mut [EpollEvent], wake: &mut Vec<Waker>) -> io::Result<usize> {
        let n = loop {
            match self.epoll().wait(events, 0u8) {
                Ok(n) => break n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        };
        self.dispatch(&events[..n], wake);
        Ok(n)
    }

    /// Like [`Reactor::take_events`], while tokio's poller says the instance has events
    /// (`Ok(0)` and the loop's waker registered when it does not).
    fn take_announced(
        &self,
        cx: &mut Context<'_>,
        events: &mut [EpollEvent],
        wake: &mut Vec<Waker>,
    ) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            let mut guard = match self.poller.poll_read_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Ok(taken),
            };
            let n = self.take_events(events, wake)?;
            taken += n;
            if n < BATCH {
                // Then polled again: `Pending`, with the loop's waker registered.
                guard.clear_ready();
            }
        }
    }

    /// Record the events `epoll_wait` returned, then wake whom they concern (the wakers are
    /// collected first in `wake`, so none runs while the slots are borrowed).
    fn dispatch(&self, events: &[EpollEvent], wake: &mut Vec<Waker>) {
        let mut slots = self.slots.borrow_mut();
        for ev in events {
            let token = ev.data();
            let Some(s) = slots.get_mut(token as u32 as usize) else {
                continue;
            };
            if s.generation != (token >> 32) as u32 {
                continue;
            }
            let e = ev.events();
            let mut ready = 0;
            if e.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLPRI) {
                ready |= READABLE;
            }
            if e.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLERR) {
                ready |= READ_CLOSED;
            }
            if e.contains(EpollFlags::EPOLLOUT) {
                ready |= WRITABLE;
            }
            if e.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
                ready |= WRITE_CLOSED;
            }
            s.ready |= ready;
            if ready & Dir::Read.ready_mask() != 0 {
                wake.extend(s.reader.take());
            }
            if ready & Dir::Write.ready_mask() != 0 {
                wake.extend(s.writer.take());
            }
        }
        drop(slots);
        for w in wake.drain(..) {
            w.wake();
        }
    }
}

/// An epoll instance of the worker's own (this reactor's, the idle set's), for tokio's
/// poller.
pub struct EpollFd(pub Epoll);

impl EpollFd {
    /// A new instance, registered in tokio's poller for readability.
    pub fn new_in_tokio() -> io::Result<AsyncFd<EpollFd>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // SAFETY: the `EpollFd` owns its descriptor and never replaces it, so the descriptor
        // stays open and the same for as long as the `AsyncFd` that owns it lives.
        Ok(unsafe { AsyncFd::register_with_interest(EpollFd(epoll), Interest::READABLE) }?)
    }
}

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

/// The worker's loop (see [`hosting`] for who polls it): when tokio finds the reactor's epoll
/// instance readable, take every event and wake whom they concern, then poll the plain
/// connections' tasks ([`crate::conn_tasks`]) that are due, those just woken included. One
/// future for both: a turn costs at most one wake-up and one poll in tokio, not two. Ends with
/// the runtime (or on an error `epoll_wait` should never give; then the next socket made gets
/// a new reactor).
async fn drive(reactor: Rc<Reactor>) {
    let r = &*reactor;
    struct Alive<'a>(&'a Reactor);
    impl Drop for Alive<'_> {
        fn drop(&mut self) {
            self.0.driven.set(false);
            crate::conn_tasks::shutdown();
        }
    }
    let _alive = Alive(r);
    let mut events = vec![EpollEvent::empty(); BATCH];
    let mut wake = Vec::with_capacity(BATCH);
    let mut failed = None;
    poll_fn(|cx| {
        let mut rounds = 0;
        loop {
            let mut got = 0;
            let ran_out = crate::conn_tasks::turn(cx, |cx| {
                // After the first round, straight to the instance: tokio's readiness was
                // cleared then, and what came since is in our instance only.
                let taken = if rounds == 0 {
                    r.take_announced(cx, &mut events, &mut wake)
                } else {
                    r.take_events(&mut events, &mut wake)
                };
                match taken {
                    Ok(n) => got = n,
                    Err(e) => failed = Some(e),
                }
            });
            if failed.is_some() || ran_out || got < BUSY || rounds == BUSY_ROUNDS {
                break;
            }
            rounds += 1;
            crate::clock::new_turn();
        }
        match failed.take() {
            Some(e) => {
                rproxy_shared::error!("the worker's socket poller failed: {e}");
                Poll::Ready(())
            }
            None => Poll::Pending,
        }
    })
    .await
}

/// Make sure this thread has its reactor and loop (for tasks spawned before any socket).
pub fn driven() -> io::Result<()> {
    Reactor::current().map(drop)
}

/// A TCP socket of the worker, its readiness kept by the thread's [`Reactor`]. The API is
/// the part of tokio's `TcpStream` rproxy uses.
pub struct TcpStream {
    io: std::net::TcpStream,
    reactor: Rc<Reactor>,
    slot: u32,
}

impl TcpStream {
    /// Adopt a connected socket that is already non-blocking (as tokio's `from_std`
    /// requires; a parked connection's socket is).
    pub fn from_std(io: std::net::TcpStream) -> io::Result<TcpStream> {
        let reactor = Reactor::current()?;
        let slot = reactor.register(io.as_fd())?;
        Ok(TcpStream { io, reactor, slot })
    }

    /// Connect to `addr` without blocking the thread.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )?;
        match socket.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let stream = Self::from_std(socket.into())?;
        poll_fn(|cx| stream.poll_write_ready(cx)).await?;
        if let Some(e) = stream.io.take_error()? {
            return Err(e);
        }
        Ok(stream)
    }

    /// Take the socket back out of the reactor (it stays non-blocking).
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again; each field is read out once.
        let (io, reactor) = unsafe { (std::ptr::read(&this.io), std::ptr::read(&this.reactor)) };
        reactor.deregister(this.slot, io.as_fd())?;
        Ok(io)
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.reactor.poll_ready(self.slot, Dir::Read, cx)
    }

    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.reactor.poll_ready(self.slot, Dir::Write, cx)
    }

    /// Read what is there now: `WouldBlock` without a system call when the socket is not
    /// known readable (as tokio's: an idle pooled connection is checked so before each use),
    /// or with the readiness cleared when nothing is there.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_io(Interest::READABLE, || (&self.io).read(buf))
    }

    /// Write what the socket takes now: `WouldBlock` without a system call when it is not
    /// known writable, or with the readiness cleared when it takes nothing.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_io(Interest::WRITABLE, || (&self.io).write(buf))
    }

    /// Run `f` (a non-blocking operation on this socket) now when the socket is known ready
    /// for `interest`, else `WouldBlock` without a system call; a `WouldBlock` from `f` clears
    /// the readiness (tokio's `try_io`).
    pub fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        let dir = Dir::of(interest);
        if !self.reactor.is_ready(self.slot, dir) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let r = f();
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.reactor.clear(self.slot, dir);
        }
        r
    }

    /// One `sendmsg` of `bufs`, with `MSG_MORE` when `more`: the kernel then holds a last
    /// partial segment until the next send without it, so that what follows leaves in the
    /// same segments. The operation for [`TcpStream::async_io`].
    pub fn send_vectored(&self, bufs: &[io::IoSlice<'_>], more: bool) -> io::Result<usize> {
        let flags = if more {
            libc::MSG_MORE | libc::MSG_NOSIGNAL
        } else {
            libc::MSG_NOSIGNAL
        };
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` (std guarantees it on Unix); the
        // header points at `bufs`, which outlive the call, and names no address or control
        // data.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len() as _;
            libc::sendmsg(self.io.as_raw_fd(), &msg, flags)
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Run `f` (a non-blocking operation on this socket) once it is ready for `interest`,
    /// until it does not say `WouldBlock`.
    pub async fn async_io<R>(
        &self,
        interest: Interest,
        mut f: impl FnMut() -> io::Result<R>,
    ) -> io::Result<R> {
        let dir = Dir::of(interest);
        poll_fn(|cx| {
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            loop {
                ready!(self.reactor.poll_ready(self.slot, dir, cx))?;
                match f() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.reactor.clear(self.slot, dir);
                    }
                    r => {
                        coop.made_progress();
                        return Poll::Ready(r);
                    }
                }
            }
        })
        .await
    }

    /// Ready for a read (tests).
    #[cfg(test)]
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_read_ready(cx)).await
    }

    /// Ready for a write (tests).
    #[cfg(test)]
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.io.set_nodelay(on)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    #[cfg(test)]
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    /// One attempt of a read or write future, and what it shows about the socket recorded:
    /// a short transfer shows the socket drained (read) or full (write) on epoll, and clears
    /// the readiness, as tokio's reads and writes do (not [`TcpStream::try_io`], as not its
    /// `try_*`). A writer that goes on to wait then waits for the kernel's next "writable",
    /// which comes only once a good part of the buffer is free; a `try_write` after a short
    /// one is still offered to the socket, which may take a little more.
    fn attempt(
        &self,
        dir: Dir,
        op: impl FnOnce() -> io::Result<usize>,
        len: usize,
    ) -> io::Result<usize> {
        let r = op();
        match &r {
            Ok(n) if *n < len && *n > 0 => self.reactor.clear(self.slot, dir),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.reactor.clear(self.slot, dir),
            _ => {}
        }
        r
    }

    /// A read or write future's step: wait for readiness, then try, until the socket says
    /// something other than `WouldBlock`. `len`: what `op` asks to move (a shorter transfer
    /// clears the readiness; 0: never).
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
        mut op: impl FnMut() -> io::Result<usize>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            ready!(self.reactor.poll_ready(self.slot, dir, cx))?;
            match self.attempt(dir, &mut op, len) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => {
                    coop.made_progress();
                    return Poll::Ready(r);
                }
            }
        }
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.reactor.release(self.slot);
    }
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("fd", &self.io.as_raw_fd())
            .finish()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the socket read (`recv`) only writes into the unfilled part and never reads
        // it, and only the `n` bytes it reports are marked filled (as tokio's own read does).
        let unfilled = unsafe { buf.unfilled_mut() };
        let (ptr, len) = (unfilled.as_mut_ptr().cast::<u8>(), unfilled.len());
        let n = ready!(self.poll_io(
            cx,
            Dir::Read,
            || {
                // SAFETY: `ptr` and `len` describe the unfilled part of `buf`, which outlives
                // this call.
                (&self.io).read(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
            },
            len
        ))?;
        // SAFETY: the kernel initialised the first `n` bytes of the unfilled part.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, Dir::Write, || (&self.io).write(buf), buf.len())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(
            cx,
            Dir::Write,
            || (&self.io).write_vectored(bufs),
            // Not judged by its length, as tokio's vectored write is not: the next attempt
            // is made rather than waiting for the kernel's next "writable".
            0,
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.shutdown(std::net::Shutdown::Write))
    }
}

/// A listening socket the worker accepts on, its readiness kept by tokio (one accept per
/// connection: nothing to save there); the accepted sockets are made non-blocking by the
/// accept itself and go to the [`Reactor`].
pub struct TcpListener {
    io: AsyncFd<std::net::TcpListener>,
}

impl TcpListener {
    pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(true)?;
        // SAFETY: the `AsyncFd` owns the listener, so its descriptor stays open as long.
        let io = unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(TcpListener { io })
    }

    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            let mut guard = self.io.readable().await?;
            let got = guard.try_io(|l| {
                SockRef::from(l.get_ref()).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            });
            match got {
                Ok(Ok((socket, addr))) => {
                    let peer = addr
                        .as_socket()
                        .ok_or_else(|| io::Error::other("accepted a socket that is not TCP/IP"))?;
                    return Ok((TcpStream::from_std(socket.into())?, peer));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::LocalSet;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let l = TcpListener::from_std(l).unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(Duration::from_secs(5), f)
    }

    /// Bytes both ways, a wait woken by the peer's write, EOF; a refused connect is an error;
    /// a socket taken out and adopted again goes on; a slot freed and reused does not get
    /// its former socket's events (the generation in the token).
    #[tokio::test(flavor = "current_thread")]
    async fn sockets_wait_wake_and_reuse_slots() {
        LocalSet::new()
            .run_until(async {
                let (mut a, mut b) = pair().await;
                let reader = async {
                    let mut got = [0u8; 5];
                    within(b.read_exact(&mut got)).await.unwrap().unwrap();
                    got
                };
                let writer = async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    a.write_all(b"hello").await.unwrap();
                };
                let (got, ()) = tokio::join!(reader, writer);
                assert_eq!(&got, b"hello");
                // Nothing there: `try_read` says so (the readiness is cleared)...
                let mut buf = [0u8; 8];
                assert_eq!(
                    b.try_read(&mut buf).unwrap_err().kind(),
                    io::ErrorKind::WouldBlock
                );
                // ...and a socket taken out and adopted again still works.
                // (Its readiness is learnt anew, from the event its registration brings.)
                let a = TcpStream::from_std(a.into_std().unwrap()).unwrap();
                within(a.writable()).await.unwrap().unwrap();
                assert_eq!(a.try_write(b"x").unwrap(), 1);
                within(b.readable()).await.unwrap().unwrap();
                assert_eq!(b.try_read(&mut buf).unwrap(), 1);
                // Close one end: EOF on the other.
                let freed = a.slot;
                drop(a);
                let mut rest = Vec::new();
                within(b.read_to_end(&mut rest)).await.unwrap().unwrap();
                assert!(rest.is_empty());
                // The freed slot goes to the next socket, with a new generation; it waits for
                // its own bytes only.
                let (c, mut d) = pair().await;
                assert!(c.slot == freed || d.slot == freed);
                let mut one = [0u8; 1];
                let early = tokio::time::timeout(Duration::from_millis(50), d.read(&mut one));
                assert!(early.await.is_err(), "woken with nothing to read");
                assert_eq!(c.try_write(b"y").unwrap(), 1);
                assert_eq!(within(d.read(&mut one)).await.unwrap().unwrap(), 1);
                drop((b, c));
                // A refused connect: nothing listens on a port just freed.
                let port = {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    l.local_addr().unwrap()
                };
                let e = within(TcpStream::connect(port)).await.unwrap().unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
            })
            .await;
    }
}
