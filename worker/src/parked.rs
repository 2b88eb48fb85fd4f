//! The idle set: plain keep-alive connections that have had nothing to say for
//! [`PARK_AFTER`] leave their task and the worker's poller, and wait here as a descriptor and
//! a few words each, polled by one task through an epoll instance of their own, until their
//! client sends again (then they get a task back) or their `read-timeout` ends (then they are
//! closed, as an idle task would have been).
//!
//! Why: a task per idle connection costs its future, its task slot and the socket's slot in
//! the worker's poller (about 1 KiB together); a front proxy holds tens of thousands of idle
//! keep-alive connections, nginx about 0.7-0.9 KiB each. Why not at once after a response:
//! parking and resuming take four `epoll_ctl` calls; a client that sends its next request
//! within `PARK_AFTER` (any busy client) never pays them. The wait for `PARK_AFTER` shares
//! its timer with the `read-timeout` wait it replaces, so requests that keep coming cost
//! nothing more.
//!
//! A parked connection still counts as open (drain waits for it, as for an idle task; the
//! metrics' open gauge keeps it) and keeps its `read-timeout` deadline.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Duration;

use nix::sys::epoll::{EpollEvent, EpollFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::http::{self, Conn};
use crate::metrics::{OpenConn, ParkedConn};
use crate::net::EpollFd;
use crate::server::ServerCtx;
use crate::state::ConnGuard;
use crate::tls::ConnInfo;

/// How long a plain keep-alive connection waits for its next request in its own task before
/// it is parked.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// Events taken from the idle set's epoll per `epoll_wait`.
const BATCH: usize = 64;

/// One parked connection: all it keeps, inline in the set's slot array. What it had besides
/// (its task, its `Conn`, its slot in the poller) is freed, so whole heap pages of it can
/// go back to the system (the worker's trimmer does that when many connections park at once).
struct Parked {
    socket: std::net::TcpStream,
    server: Rc<ServerCtx>,
    info: ConnInfo,
    /// Its next request head is due by then (`read-timeout`); `None`: no limit.
    deadline: Option<Instant>,
    guard: ConnGuard,
    open: OpenConn,
    /// Counted in the parked gauge while in the set.
    _parked: ParkedConn,
}

/// A worker's idle set (one per worker; see the module comment).
pub struct IdleSet {
    /// Created with the first parked connection (a worker without plain listeners never
    /// needs it); `None` until then.
    epoll: RefCell<Option<Rc<AsyncFd<EpollFd>>>>,
    /// Parked connections by slot; the slot number is the epoll token.
    slots: RefCell<Vec<Option<Parked>>>,
    free: RefCell<Vec<u32>>,
    /// `(deadline, slot)` of the parked connections that have one.
    deadlines: RefCell<BTreeSet<(Instant, u32)>>,
    /// A connection was parked with a deadline earlier than the one the task sleeps to.
    sooner: Notify,
}

impl Default for IdleSet {
    fn default() -> Self {
        IdleSet {
            epoll: RefCell::new(None),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            deadlines: RefCell::new(BTreeSet::new()),
            sooner: Notify::new(),
        }
    }
}

impl IdleSet {
    /// Connections parked now.
    pub fn len(&self) -> usize {
        self.slots.borrow().len() - self.free.borrow().len()
    }

    /// Close every parked connection (the worker is exiting; also breaks the `Rc` cycle
    /// through their guards).
    pub fn clear(&self) {
        let parked = std::mem::take(&mut *self.slots.borrow_mut());
        self.free.borrow_mut().clear();
        self.deadlines.borrow_mut().clear();
        drop(parked);
    }

    /// The epoll instance, created (and its task started) on first use.
    fn epoll(&self) -> Option<Rc<AsyncFd<EpollFd>>> {
        if let Some(e) = &*self.epoll.borrow() {
            return Some(Rc::clone(e));
        }
        match EpollFd::new_in_tokio() {
            Ok(e) => {
                let e = Rc::new(e);
                *self.epoll.borrow_mut() = Some(Rc::clone(&e));
                Some(e)
            }
            Err(e) => {
                rproxy_shared::error!("cannot create the idle connections' epoll: {e}");
                None
            }
        }
    }
}

/// Park an idle plain connection (its task ends after this). When the idle set cannot take
/// it, the connection is closed, as when its `read-timeout` ends.
pub fn park(
    socket: std::net::TcpStream,
    conn: Rc<Conn>,
    deadline: Option<Instant>,
    guard: ConnGuard,
    open: OpenConn,
) {
    let Ok(Conn { server, info, .. }) = Rc::try_unwrap(conn) else {
        rproxy_shared::debug!("an idle connection still shared: closed instead of parked");
        return;
    };
    let state = Rc::clone(&server.state);
    let index = server.index;
    let set = &state.idle;
    let first = set.epoll.borrow().is_none();
    let Some(epoll) = set.epoll() else {
        return;
    };
    if first {
        tokio::task::spawn_local(run(Rc::clone(&state), Rc::clone(&epoll)));
    }
    let slot = match set.free.borrow_mut().pop() {
        Some(s) => s,
        None => {
            let mut slots = set.slots.borrow_mut();
            let Ok(s) = u32::try_from(slots.len()) else {
                return;
            };
            slots.push(None);
            s
        }
    };
    // Level-triggered: bytes that arrived before this call wake it at once.
    let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, slot.into());
    if let Err(e) = epoll.get_ref().0.add(socket.as_fd(), event) {
        rproxy_shared::debug!("cannot park an idle connection: {e}");
        set.free.borrow_mut().push(slot);
        return;
    }
    if let Some(d) = deadline {
        let mut deadlines = set.deadlines.borrow_mut();
        let sooner = deadlines.first().is_none_or(|(first, _)| d < *first);
        deadlines.insert((d, slot));
        if sooner {
            set.sooner.notify_one();
        }
    }
    set.slots.borrow_mut()[slot as usize] = Some(Parked {
        socket,
        server,
        info,
        deadline,
        guard,
        open,
        _parked: crate::metrics::parked(index),
    });
}

/// Take a connection out of the set (without touching the epoll instance).
fn unpark(set: &IdleSet, slot: u32) -> Option<Parked> {
    let p = set.slots.borrow_mut().get_mut(slot as usize)?.take()?;
    if let Some(d) = p.deadline {
        set.deadlines.borrow_mut().remove(&(d, slot));
    }
    set.free.borrow_mut().push(slot);
    Some(p)
}

/// The idle set's task: resume the connections whose clients send, close those whose
/// deadline passed.
async fn run(state: Rc<crate::state::WorkerState>, epoll: Rc<AsyncFd<EpollFd>>) {
    let set = &state.idle;
    let mut events = [EpollEvent::empty(); BATCH];
    loop {
        let next = set.deadlines.borrow().first().map(|(d, _)| *d);
        let sleep = async {
            match next {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ready = epoll.readable() => {
                let Ok(mut guard) = ready else {
                    return fail(set, "its readiness failed");
                };
                let got = guard.try_io(|e| {
                    let n = e.get_ref().0.wait(&mut events, 0u8).map_err(std::io::Error::from)?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::WouldBlock.into());
                    }
                    Ok(n)
                });
                let n = match got {
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Ok(Err(e)) => return fail(set, &format!("epoll_wait: {e}")),
                    Err(_would_block) => continue,
                };
                for ev in &events[..n] {
                    let Ok(slot) = u32::try_from(ev.data()) else { continue };
                    let Some(p) = unpark(set, slot) else { continue };
                    // Out of this epoll before the runtime's takes it (a closed descriptor
                    // would leave it here anyway, but this one lives on).
                    if let Err(e) = epoll.get_ref().0.delete(p.socket.as_fd()) {
                        rproxy_shared::debug!("unparking a connection: {e}");
                        continue;
                    }
                    resume(p);
                }
            }
            _ = sleep => {
                let now = Instant::now();
                loop {
                    let due = set.deadlines.borrow().first().copied().filter(|(d, _)| *d <= now);
                    let Some((_, slot)) = due else { break };
                    // Dropped: closed, uncounted; the descriptor leaves the epoll with it.
                    drop(unpark(set, slot));
                }
            }
            _ = set.sooner.notified() => {}
        }
    }
}

/// The idle set's epoll instance failed: close what it holds and drop it, so that the next
/// connection to park makes a new one (with a task of its own) rather than waiting forever.
fn fail(set: &IdleSet, why: &str) {
    rproxy_shared::error!("the idle connections' epoll failed ({why}): closing them");
    *set.epoll.borrow_mut() = None;
    set.clear();
}

/// Give a connection whose client sent something its task back.
fn resume(p: Parked) {
    let Parked {
        socket,
        server,
        info,
        deadline,
        guard,
        open,
        ..
    } = p;
    match crate::net::TcpStream::from_std(socket) {
        Ok(stream) => {
            let conn = Rc::new(Conn::new(server, info));
            crate::conn_tasks::spawn(http::serve_plain(stream, conn, guard, open, Some(deadline)));
        }
        Err(e) => rproxy_shared::debug!("cannot resume a parked connection: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::task::LocalSet;

    use super::PARK_AFTER;
    use crate::testing::{config, echo_origin, flat, read_responses, start};

    /// One request on `s`, its whole response.
    async fn get(s: &mut TcpStream, path: &str) -> String {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        read_responses(s, 1).await
    }

    /// A worker in front of the echo origin, its server's `read-timeout` `secs`.
    async fn with_read_timeout(secs: u32) -> crate::testing::Proxy {
        let origin = echo_origin().await;
        let cfg = config(&format!(
            "[[server]]\nport = 8080\nread-timeout = {secs}\n\
             [[server.downstream]]\naddr = \"{}\"\nport = {}\n",
            origin.ip(),
            origin.port()
        ));
        start(&cfg).await
    }

    /// Bytes of the next read on `s` (0: closed, or reset), which must come within `secs`.
    async fn next_read(s: &mut TcpStream, secs: u64, why: &str) -> usize {
        let mut b = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(secs), s.read(&mut b))
            .await
            .expect(why)
            .unwrap_or(0)
    }

    async fn settle() {
        tokio::time::sleep(PARK_AFTER + Duration::from_millis(300)).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn idle_connections_are_parked_and_resumed_when_their_client_sends() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&flat(echo_origin().await)).await;
                let mut conns = Vec::new();
                for i in 0..10 {
                    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                    assert!(get(&mut s, &format!("/a{i}"))
                        .await
                        .starts_with("HTTP/1.1 200"));
                    conns.push(s);
                }
                assert_eq!(proxy.state.idle.len(), 0, "parked before PARK_AFTER");
                settle().await;
                assert_eq!(proxy.state.idle.len(), 10);
                assert_eq!(
                    proxy.state.conns.get(),
                    10,
                    "parked connections count as open"
                );
                // Each comes back on its next request, and is parked again after it.
                for (i, s) in conns.iter_mut().enumerate() {
                    let r = get(s, &format!("/b{i}")).await;
                    assert!(
                        r.starts_with("HTTP/1.1 200") && r.contains(&format!("/b{i} ")),
                        "{r}"
                    );
                }
                assert_eq!(proxy.state.idle.len(), 0);
                settle().await;
                assert_eq!(proxy.state.idle.len(), 10);
                // Pipelined requests sent to a parked connection are all answered.
                let s = &mut conns[0];
                s.write_all(
                    b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n",
                )
                .await
                .unwrap();
                let out = read_responses(s, 2).await;
                assert!(
                    out.find("/p1 ").unwrap() < out.find("/p2 ").unwrap(),
                    "{out}"
                );
                // A client that closes its parked connection: gone from the set and the count.
                drop(conns.split_off(5));
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(proxy.state.idle.len(), 4);
                assert_eq!(proxy.state.conns.get(), 5);
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_parked_connection_is_closed_at_its_read_timeout() {
        LocalSet::new()
            .run_until(async {
                let proxy = with_read_timeout(2).await;
                let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                let t0 = tokio::time::Instant::now();
                get(&mut s, "/t").await;
                settle().await;
                assert_eq!(proxy.state.idle.len(), 1);
                // Parked, its deadline runs on: closed 2 s after its last response.
                let n = next_read(&mut s, 5, "a parked connection outlived its read-timeout").await;
                let waited = t0.elapsed();
                assert_eq!(n, 0);
                assert!(
                    waited >= Duration::from_millis(1900) && waited < Duration::from_millis(3500),
                    "{waited:?}"
                );
                assert_eq!(proxy.state.idle.len(), 0);
                assert_eq!(proxy.state.conns.get(), 0);
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_read_timeout_shorter_than_park_after_closes_without_parking() {
        LocalSet::new()
            .run_until(async {
                let proxy = with_read_timeout(1).await;
                let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                get(&mut s, "/t").await;
                let n = next_read(&mut s, 3, "not closed at read-timeout").await;
                assert_eq!(n, 0);
                assert_eq!(proxy.state.idle.len(), 0);
            })
            .await;
    }
}
