//! Worker-wide state: counters for heartbeats, the drain switch, and when to exit.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use rproxy_shared::channel::{AdminState, LogFiles, WorkerEnd};
use rproxy_shared::config::Config;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::pool::Pool;

/// "The worker is done": set once, awaited by the worker's main future only. Not a `Notify`:
/// the `LocalSet` polls its main future each time any task of the worker wakes (twice per
/// keep-alive request), and polling a waiting `Notified` takes a lock each time (callgrind:
/// ~330 instructions per request); this is a flag check.
#[derive(Default)]
struct Done {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Done {
    fn set(&self) {
        self.set.set(true);
        let waiting = self.waker.borrow_mut().take();
        if let Some(w) = waiting {
            w.wake();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.set.get() {
            return Poll::Ready(());
        }
        let mut w = self.waker.borrow_mut();
        if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *w = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

pub struct WorkerState {
    pub config: Arc<Config>,
    /// Client connections open now.
    pub conns: Cell<u64>,
    /// Requests received since start.
    pub requests: Cell<u64>,
    draining: Cell<bool>,
    drain_tx: watch::Sender<bool>,
    /// False while a binary upgrade has not committed: listeners adopted, nothing accepted.
    accept_tx: watch::Sender<bool>,
    done: Done,
    pub pools: RefCell<Vec<Rc<Pool>>>,
    pub access_logs: RefCell<Vec<Rc<AccessLog>>>,
    /// The channel to the master while the master is there: set by the control task, taken
    /// when the master is gone (then nothing is ever sent again) or for the last word at exit.
    pub channel: RefCell<Option<Rc<AsyncFd<WorkerEnd>>>>,
    /// The inherited access-log descriptors; a reopen `dup2`s new files onto these numbers.
    pub log_files: Vec<OwnedFd>,
    /// `(server, downstream, state)` set by the operator before this worker was forked:
    /// applied to each pool before it opens a connection.
    pub admin_at_start: Vec<(usize, usize, AdminState)>,
    /// Plain keep-alive connections idle long enough to leave their task.
    pub idle: crate::parked::IdleSet,
}

impl WorkerState {
    /// `hold_accept`: forked by a new master during a binary upgrade; accept only after
    /// [`WorkerState::allow_accept`].
    pub fn new(
        config: Arc<Config>,
        log_files: Vec<OwnedFd>,
        hold_accept: bool,
        admin_at_start: Vec<(usize, usize, AdminState)>,
    ) -> Rc<WorkerState> {
        let (drain_tx, _) = watch::channel(false);
        let (accept_tx, _) = watch::channel(!hold_accept);
        Rc::new(WorkerState {
            config,
            conns: Cell::new(0),
            requests: Cell::new(0),
            draining: Cell::new(false),
            drain_tx,
            accept_tx,
            done: Done::default(),
            pools: RefCell::new(Vec::new()),
            access_logs: RefCell::new(Vec::new()),
            channel: RefCell::new(None),
            idle: crate::parked::IdleSet::default(),
            log_files,
            admin_at_start,
        })
    }

    /// Apply the operator's `state` to downstream `downstream` of server `server`; false when
    /// this worker's configuration has no such pair.
    pub fn set_admin(&self, server: usize, downstream: usize, state: AdminState) -> bool {
        self.pools
            .borrow()
            .iter()
            .find(|p| p.server == server)
            .is_some_and(|p| p.set_admin(downstream, state))
    }

    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Resolves when draining starts (for the accept loops).
    pub fn drain_signal(&self) -> watch::Receiver<bool> {
        self.drain_tx.subscribe()
    }

    /// Resolves once accepting is allowed (at once, unless held for an upgrade's commit).
    pub fn accept_signal(&self) -> watch::Receiver<bool> {
        self.accept_tx.subscribe()
    }

    /// The upgrade committed: the accept loops start.
    pub fn allow_accept(&self) {
        let _ = self.accept_tx.send(true);
    }

    /// Stop accepting; keep-alive connections close after their next response; exit when
    /// the last connection is gone or at `shutdown-timeout`.
    pub fn start_drain(self: &Rc<Self>) {
        if self.draining.replace(true) {
            return;
        }
        let _ = self.drain_tx.send(true);
        if self.conns.get() == 0 {
            self.done.set();
        }
        let me = Rc::clone(self);
        let limit = self.config.shutdown_timeout;
        tokio::task::spawn_local(async move {
            tokio::time::sleep(limit).await;
            rproxy_shared::warn!(
                "shutdown-timeout: closing {} connections still open",
                me.conns.get()
            );
            me.done.set();
        });
    }

    /// Exit now (fast stop).
    pub fn stop(&self) {
        self.done.set();
    }

    pub async fn wait_done(&self) {
        std::future::poll_fn(|cx| self.done.poll(cx)).await
    }

    pub fn conn_opened(self: &Rc<Self>) -> ConnGuard {
        self.conns.set(self.conns.get() + 1);
        ConnGuard(Rc::clone(self))
    }

    /// Put freshly opened log files in place of the old ones (same descriptor numbers, so
    /// every writer follows): each access log onto its own, the error log onto descriptor 2.
    pub fn reopen_logs(&self, files: LogFiles) {
        if files.access_logs.len() != self.log_files.len() {
            rproxy_shared::error!(
                "the master sent {} access-log files for {}",
                files.access_logs.len(),
                self.log_files.len()
            );
        }
        for (new, old) in files.access_logs.iter().zip(&self.log_files) {
            // SAFETY: dup2 atomically replaces a descriptor this process owns (`old` stays
            // owned by `log_files` and now refers to the new file).
            if unsafe { libc::dup2(new.as_raw_fd(), old.as_raw_fd()) } < 0 {
                rproxy_shared::error!(
                    "reopening log descriptor {}: {}",
                    old.as_raw_fd(),
                    std::io::Error::last_os_error()
                );
            }
        }
        if let Some(error_log) = &files.error_log {
            if let Err(e) = nix::unistd::dup2_stderr(error_log) {
                rproxy_shared::error!("reopening log descriptor 2: {e}");
            }
        }
    }
}

/// Counts a client connection for as long as it lives.
pub struct ConnGuard(Rc<WorkerState>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let s = &self.0;
        s.conns.set(s.conns.get() - 1);
        if s.draining.get() && s.conns.get() == 0 {
            s.done.set();
        }
    }
}

#[cfg(test)]
mod admin_tests {
    use std::time::Duration;

    use rproxy_shared::channel::AdminState;
    use tokio::task::LocalSet;

    use crate::testing::{broken_origin, config, echo_origin, roundtrip, start};

    /// `GET /` on a new connection: the status code.
    async fn status(addr: std::net::SocketAddr) -> String {
        let r = roundtrip(
            addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        r.get(9..12).unwrap_or("").to_string()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn out_of_rotation_members_get_no_request() {
        LocalSet::new()
            .run_until(async {
                // `good` answers 200; `bad` closes without an answer (502), so any request
                // that reaches `bad` shows.
                let (good, bad) = (echo_origin().await, broken_origin().await);
                let cfg = config(&format!(
                    "[[server]]\nport = 8080\nlb-method = \"roundrobin\"\npending-timeout = 1\n\
                     [[server.downstream]]\nname = \"good\"\naddr = \"{}\"\nport = {}\nconnections = 2\n\
                     [[server.downstream]]\nname = \"bad\"\naddr = \"{}\"\nport = {}\nconnections = 2\n",
                    good.ip(),
                    good.port(),
                    bad.ip(),
                    bad.port()
                ));
                let proxy = start(&cfg).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut seen = Vec::new();
                for _ in 0..4 {
                    seen.push(status(proxy.addr).await);
                }
                assert!(seen.iter().any(|s| s == "502"), "bad is in rotation: {seen:?}");

                for state in [AdminState::Maint, AdminState::Drain] {
                    assert!(proxy.state.set_admin(0, 1, state));
                    for _ in 0..6 {
                        assert_eq!(status(proxy.addr).await, "200", "{state:?}");
                    }
                }
                // Every member out: 503 at once, as when all are down.
                assert!(proxy.state.set_admin(0, 0, AdminState::Maint));
                let t = std::time::Instant::now();
                assert_eq!(status(proxy.addr).await, "503");
                assert!(t.elapsed() < Duration::from_millis(900));
                // Back from maint: connections are opened again, then it serves.
                assert!(proxy.state.set_admin(0, 0, AdminState::Ready));
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(status(proxy.addr).await, "200");
                // No such server or downstream: refused, nothing changes.
                assert!(!proxy.state.set_admin(0, 7, AdminState::Maint));
                assert!(!proxy.state.set_admin(3, 0, AdminState::Maint));
                assert_eq!(status(proxy.addr).await, "200");
            })
            .await;
    }
}
