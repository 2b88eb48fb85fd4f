//! Hot binary upgrade (SIGUSR2, or `rproxy ctl upgrade`; DESIGN section 12).
//!
//! The old master (O) forks and execs the binary it was started from (the path of
//! `/proc/self/exe` resolved once at start-up, so after a package replaced
//! `/usr/sbin/rproxy` it is the new file; never a path from a signal or a socket) with the
//! same arguments (the configuration path made absolute) and `RPROXY_UPGRADE_FD` naming its
//! end of a socketpair. Over it O sends the manifest (`handover.rs`): every listener, the TLS
//! session cache and ticket key ring, the locked pid file. The new master (N) loads its
//! configuration with the same code as start-up, adopts the listeners (checked with
//! `getsockname`; addresses new to its configuration are bound fresh), maps the TLS state,
//! and forks workers that hold their listeners without accepting. When they are all Ready,
//! N says `ready`; O writes N's PID into the pid file, tells systemd `MAINPID=N` + `READY=1`
//! (it is still the main PID, the only one `NotifyAccess=main` listens to), waits for the
//! barrier, goes quiet, and says `commit`. N's workers start accepting, N closes the
//! inherited listeners its configuration does not use and says `accepting`; then (or 2 s
//! after the commit at most) O drains its workers like a graceful stop (without
//! `STOPPING=1`, never respawning), closes its own copies of the listeners and exits.
//!
//! Before the commit nothing of O changed: its workers accept throughout (no listener is
//! closed, so no SYN meets a closed port) and N's workers have accepted nothing. Any failure
//! (exec, a configuration N refuses, workers dying before Ready, N exiting, no `ready`
//! within [`TIMEOUT`], O being stopped) kills N, whose held workers then exit on their
//! channel's end-of-file, and O logs why, tells systemd `READY=1` again and serves on.
//!
//! N is O's child until O exits (then the kernel re-parents it). O's reaping knows N's PID
//! and never counts it as a worker; nothing kills N when O exits (no `PR_SET_PDEATHSIG`).
//!
//! # For the control socket (`rproxy ctl upgrade --wait`)
//! [`Master::start_upgrade`] starts an upgrade and returns its attempt number, or refuses
//! (one already running, a reload in progress, stopping, this master already handed over).
//! The supervisor loop decides it later; poll [`Master::upgrade_outcome`] with that number
//! from the loop's tick: `None` while undecided, then [`Outcome::Committed`] (the new
//! master's PID: this master is now draining and will exit) or [`Outcome::Failed`] (the
//! reason; this master serves on). After a commit the old master's control socket should
//! answer `--wait` and then stop taking commands (the new master serves them).

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{fork, ForkResult, Pid};
use rproxy_shared::channel::ToWorker;
use rproxy_shared::{error, info, warn};

use crate::generation::GenState;
use crate::handover::{self, FromNew, Incoming, Item};
use crate::notify;
use crate::stop::Stop;
use crate::supervisor::Master;

/// How long the new master may take to have every worker Ready.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// How long the old master's workers keep accepting after the commit at most, waiting for
/// the new master to say its workers accept.
const ACCEPT_WAIT: Duration = Duration::from_secs(2);
/// How long the old master waits for systemd to confirm the MAINPID hand-off.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// How an upgrade ended, for whoever started it (`rproxy ctl upgrade --wait`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new master (this PID) serves; this one drains and exits.
    Committed { new_pid: u32 },
    /// The new binary never took over; this master serves on, its workers untouched.
    Failed(String),
}

/// The upgrade side of a master.
pub struct Upgrade {
    /// The binary to exec, resolved at start-up.
    exe: PathBuf,
    /// Its arguments: ours, with the configuration path made absolute.
    argv: Vec<OsString>,
    state: State,
    attempts: u64,
    outcome: Option<(u64, Outcome)>,
    /// In a new master until the old one commits: the old master's PID.
    awaiting_commit: Option<u32>,
    /// The new master already said `ready`.
    said_ready: bool,
}

enum State {
    Idle,
    /// O: a new master was forked and has not said `ready` yet.
    Waiting {
        attempt: u64,
        child: Pid,
        link: OwnedFd,
        deadline: Instant,
    },
    /// O: committed; the new master serves and this one drains. Until the new master says
    /// its workers accept (`link` still open, at most until `drain_by`), ours accept too, so
    /// there is no instant when nobody takes connections from the queue.
    HandedOver {
        new_pid: u32,
        link: Option<OwnedFd>,
        drain_by: Instant,
    },
}

/// The pid file of this master (a second descriptor of the locked file), for the hand-over.
static PID_FILE: Mutex<Option<(PathBuf, std::fs::File)>> = Mutex::new(None);

/// Called by `startup::write_pid_file`: the file a binary upgrade hands over and rewrites.
pub fn remember_pid_file(path: &Path, file: &std::fs::File) {
    if let Ok(dup) = file.try_clone() {
        *PID_FILE.lock().unwrap_or_else(|p| p.into_inner()) = Some((path.to_path_buf(), dup));
    }
}

impl Upgrade {
    /// Fix the binary and arguments of a later upgrade, and, when this process is itself the
    /// new master of an upgrade, receive what the old one handed over (before anything of
    /// start-up needs it). Call before daemonizing (the working directory changes).
    pub fn new(config_path: &Path) -> Result<Upgrade, String> {
        let exe = std::fs::read_link("/proc/self/exe")
            .map(strip_deleted)
            .map_err(|e| format!("/proc/self/exe: {e}"))?;
        let config = std::path::absolute(config_path)
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
        let argv = with_config(std::env::args_os().collect(), &config);
        let awaiting_commit = handover::receive()?;
        #[cfg(feature = "test-faults")]
        if awaiting_commit.is_some() {
            hang_while_fault_file();
        }
        if awaiting_commit.is_some() {
            // Not the main PID yet: systemd hears from the old master until the commit.
            notify::set_enabled(false);
        }
        Ok(Upgrade {
            exe,
            argv,
            state: State::Idle,
            attempts: 0,
            outcome: None,
            awaiting_commit,
            said_ready: false,
        })
    }

    /// The socketpair and the exec of a new master.
    fn prepare(&self) -> Result<(OwnedFd, OwnedFd, Exec), String> {
        let (link, child_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        let exec = Exec::new(&self.exe, &self.argv, child_end.as_raw_fd())?;
        Ok((link, child_end, exec))
    }

    /// A new master whose workers must hold until the commit.
    pub fn holds_accept(&self) -> bool {
        self.awaiting_commit.is_some()
    }

    /// An upgrade is under way on either side: reloads wait for its end.
    pub fn busy(&self) -> bool {
        self.awaiting_commit.is_some() || matches!(self.state, State::Waiting { .. })
    }
}

impl Master {
    /// Start a binary upgrade (SIGUSR2 or the control socket). Returns the attempt number to
    /// pass to [`Master::upgrade_outcome`]; an error says why none was started (nothing
    /// changed then).
    pub fn start_upgrade(&mut self) -> Result<u64, String> {
        self.check_can_upgrade()?;
        notify::reloading();
        info!("upgrade: starting {}", self.upgrade.exe.display());
        let (link, child_end, exec) = match self.upgrade.prepare() {
            Ok(p) => p,
            Err(e) => return Err(self.upgrade_not_started(e)),
        };
        // SAFETY: the master is single-threaded; the child only execs (or reports and exits).
        let child = match unsafe { fork() } {
            Err(e) => return Err(self.upgrade_not_started(format!("fork: {e}"))),
            Ok(ForkResult::Child) => exec.run(child_end),
            Ok(ForkResult::Parent { child }) => child,
        };
        drop(child_end);
        let attempt = self.upgrade.attempts + 1;
        self.upgrade.attempts = attempt;
        let items = self.handover_items();
        if let Err(e) = handover::send_manifest(
            link.as_fd(),
            std::process::id(),
            &items,
            self.handover_admin().as_deref(),
        ) {
            let _ = kill(child, Signal::SIGKILL);
            self.upgrade_failed(attempt, format!("sending the manifest: {e}"));
            return Ok(attempt);
        }
        info!(
            "upgrade: new master {child} started with {} handed-over descriptor(s)",
            items.len()
        );
        self.upgrade.state = State::Waiting {
            attempt,
            child,
            link,
            deadline: Instant::now() + timeout(),
        };
        Ok(attempt)
    }

    /// How attempt `attempt` ended; `None` while it runs (or for an unknown attempt).
    // For the control socket's `upgrade --wait`, merged from another branch.
    #[allow(dead_code)]
    pub fn upgrade_outcome(&self, attempt: u64) -> Option<&Outcome> {
        match &self.upgrade.outcome {
            Some((a, o)) if *a == attempt => Some(o),
            _ => None,
        }
    }

    /// SIGUSR2.
    pub(crate) fn upgrade_on_signal(&mut self) {
        if let Err(e) = self.start_upgrade() {
            warn!("upgrade (SIGUSR2) refused: {e}");
        }
    }

    fn check_can_upgrade(&self) -> Result<(), String> {
        if self.stop.is_some() {
            return Err("the master is stopping".into());
        }
        match &self.upgrade.state {
            State::Waiting { child, .. } => {
                return Err(format!("an upgrade is in progress (new master {child})"))
            }
            State::HandedOver { new_pid, .. } => {
                return Err(format!(
                    "this master already handed over to master {new_pid}"
                ))
            }
            State::Idle => {}
        }
        if self.upgrade.awaiting_commit.is_some() {
            return Err("this master is itself starting from an upgrade".into());
        }
        if !self.announced_ready {
            return Err("the master is not serving yet".into());
        }
        if self.gens.iter().any(|g| g.state == GenState::Starting) {
            return Err("a reload is in progress".into());
        }
        Ok(())
    }

    /// An upgrade that could not even start: logged, systemd told we serve on.
    fn upgrade_not_started(&mut self, why: String) -> String {
        error!("upgrade failed: {why}; this master keeps serving");
        notify::status("upgrade failed: previous binary serving");
        notify::ready("serving");
        why
    }

    /// Every descriptor the new master needs: listeners, TLS state, the pid file.
    fn handover_items(&self) -> Vec<(Item, std::os::fd::BorrowedFd<'_>)> {
        let mut items: Vec<(Item, std::os::fd::BorrowedFd<'_>)> = self
            .listeners
            .all()
            .map(|(a, fd)| (Item::Listener(a), fd))
            .collect();
        if let Some(fd) = crate::tls::session_cache_fd() {
            items.push((Item::SessionCache, fd));
        }
        if let Some(fd) = crate::ticket_keys::fd() {
            items.push((Item::TicketKeys, fd));
        }
        let guard = PID_FILE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((path, file)) = guard.as_ref() {
            // SAFETY: the descriptor lives in a static that is never cleared, so it outlives
            // this borrow (the lock guard is released at the end of this function).
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(file.as_raw_fd()) };
            items.push((Item::PidFile(path.clone()), fd));
        }
        if let Some(b) = &self.control.bound {
            items.push((Item::ControlSocket(b.path.clone()), b.listener.as_fd()));
        }
        if let Some((addr, fd)) = self.scrape.listener() {
            items.push((Item::MetricsListener(addr), fd));
        }
        items
    }

    /// The operator's downstream states, for the new master.
    fn handover_admin(&self) -> Option<String> {
        let states: Vec<(String, String, rproxy_shared::channel::AdminState)> = self
            .control
            .admin
            .iter()
            .map(|((server, name), state)| (server.clone(), name.clone(), *state))
            .collect();
        handover::admin_message(&states)
    }

    /// From the loop's tick: the old master reads the new one's word and watches the
    /// deadline; the new master waits for `commit`.
    pub(crate) fn upgrade_tick(&mut self, now: Instant) {
        if self.upgrade.awaiting_commit.is_some() {
            self.await_commit();
            return;
        }
        if matches!(self.upgrade.state, State::HandedOver { .. }) {
            self.await_accepting(now);
            return;
        }
        let State::Waiting {
            attempt,
            child,
            link,
            deadline,
        } = &self.upgrade.state
        else {
            return;
        };
        let (attempt, child) = (*attempt, *child);
        #[cfg(feature = "test-faults")]
        if commit_held() {
            return;
        }
        match handover::recv(link.as_fd(), None) {
            Ok(Incoming::Message(text, _)) => match FromNew::parse(&text) {
                Some(FromNew::Ready { pid, pid_file }) if pid == child.as_raw() as u32 => {
                    self.commit(attempt, child, pid_file)
                }
                Some(FromNew::Failed(why)) => {
                    let _ = kill(child, Signal::SIGKILL);
                    self.upgrade_failed(attempt, format!("the new master refused: {why}"));
                }
                _ => {
                    let _ = kill(child, Signal::SIGKILL);
                    self.upgrade_failed(
                        attempt,
                        format!("the new master said something unexpected: {text:?}"),
                    );
                }
            },
            Ok(Incoming::Nothing) if now >= *deadline => {
                let _ = kill(child, Signal::SIGKILL);
                self.upgrade_failed(
                    attempt,
                    format!(
                        "the new master was not ready within {} s: killed",
                        timeout().as_secs()
                    ),
                );
            }
            Ok(Incoming::Nothing) => {}
            // The child's exit, reaped by the loop, says more.
            Ok(Incoming::Closed) => {}
            Err(e) => {
                let _ = kill(child, Signal::SIGKILL);
                self.upgrade_failed(attempt, e);
            }
        }
    }

    /// A child of this master exited: true when it was a new master of an upgrade (never a
    /// worker, whatever its PID looks like to the worker bookkeeping).
    pub(crate) fn upgrade_child_exited(&mut self, pid: Pid, how: &str) -> bool {
        match &self.upgrade.state {
            State::Waiting {
                attempt,
                child,
                link,
                ..
            } if *child == pid => {
                let attempt = *attempt;
                // Its last word, when it managed to say why.
                let why = match handover::recv(link.as_fd(), None) {
                    Ok(Incoming::Message(t, _)) => match FromNew::parse(&t) {
                        Some(FromNew::Failed(why)) => format!("{why} (it {how})"),
                        _ => format!("the new master {how}"),
                    },
                    _ => format!("the new master {how} before it was ready"),
                };
                self.upgrade_failed(attempt, why);
                true
            }
            State::HandedOver { new_pid, .. } if *new_pid == pid.as_raw() as u32 => {
                warn!("master {pid} (the upgrade's new master) {how}");
                true
            }
            _ => false,
        }
    }

    /// A stop while a new master is starting: it is killed first (the service is ours).
    pub(crate) fn abort_upgrade(&mut self, why: &str) {
        if let State::Waiting { attempt, child, .. } = &self.upgrade.state {
            let (attempt, child) = (*attempt, *child);
            let _ = kill(child, Signal::SIGKILL);
            error!("upgrade aborted: {why}; new master {child} killed");
            self.upgrade.state = State::Idle;
            self.upgrade.outcome = Some((attempt, Outcome::Failed(format!("aborted: {why}"))));
        }
    }

    fn upgrade_failed(&mut self, attempt: u64, why: String) {
        error!("upgrade failed: {why}; this master keeps serving with its workers");
        notify::status("upgrade failed: previous binary serving");
        notify::ready("serving");
        self.upgrade.state = State::Idle;
        self.upgrade.outcome = Some((attempt, Outcome::Failed(why)));
        if std::mem::take(&mut self.reload_queued) {
            self.reload();
        }
    }

    /// O: the new master is ready. Hand the service over and retire.
    fn commit(&mut self, attempt: u64, child: Pid, took_pid_file: bool) {
        let new_pid = child.as_raw() as u32;
        info!("upgrade: new master {new_pid} is ready; committing");
        if took_pid_file {
            write_pid(new_pid);
        }
        notify::hand_over(new_pid, &format!("serving (upgraded: master {new_pid})"));
        notify::barrier(BARRIER_TIMEOUT);
        // From here systemd follows the new master; this one must say nothing more.
        notify::set_enabled(false);
        let State::Waiting { link, .. } = std::mem::replace(&mut self.upgrade.state, State::Idle)
        else {
            return;
        };
        let link = match handover::send(link.as_fd(), handover::COMMIT, &[]) {
            Ok(()) => Some(link),
            Err(e) => {
                // The new master died within this instant: systemd already follows it, so
                // the service is restarted by `Restart=`; nothing this master can do is better.
                error!("upgrade: telling master {new_pid} to commit: {e}");
                None
            }
        };
        self.upgrade.state = State::HandedOver {
            new_pid,
            link,
            drain_by: Instant::now() + ACCEPT_WAIT,
        };
        self.upgrade.outcome = Some((attempt, Outcome::Committed { new_pid }));
        // The new master serves `rproxy ctl` and scrapes from now on, on the same sockets;
        // connections this one accepted (an `upgrade --wait`) are still answered.
        if let Some(b) = self.control.bound.take() {
            b.release();
        }
        self.scrape.release();
        self.retire(new_pid);
    }

    /// O after the commit: from now on a graceful stop that says nothing to systemd and never
    /// respawns; the workers are told to drain once the new ones accept ([`Self::drain_old`]).
    fn retire(&mut self, new_pid: u32) {
        let timeout = self.longest_shutdown_timeout();
        self.stop = Some(Stop::Graceful {
            deadline: Instant::now() + ACCEPT_WAIT + timeout + Duration::from_secs(1),
        });
        info!(
            "upgrade committed: master {new_pid} serves; this master ({}) drains {} worker(s) \
             and exits",
            std::process::id(),
            self.workers().count()
        );
    }

    /// O: the new master's workers accept (or it went quiet past `drain_by`): ours drain, our
    /// copies of the listeners close.
    fn await_accepting(&mut self, now: Instant) {
        let State::HandedOver {
            link: Some(link),
            drain_by,
            ..
        } = &self.upgrade.state
        else {
            return;
        };
        let done = match handover::recv(link.as_fd(), None) {
            Ok(Incoming::Nothing) => now >= *drain_by,
            // `accepting`, the new master gone, or anything else: nothing to wait for.
            _ => true,
        };
        if done {
            if let State::HandedOver { link, .. } = &mut self.upgrade.state {
                *link = None;
            }
            self.drain_old();
        }
    }

    fn drain_old(&mut self) {
        let now = Instant::now();
        for g in &mut self.gens {
            if !g.is_draining() {
                g.state = GenState::Draining {
                    deadline: now + g.shutdown_timeout(),
                };
            }
            for w in g.workers.iter_mut().filter(|w| !w.is_draining()) {
                w.tell_to_leave(&ToWorker::Drain);
            }
        }
        self.listeners.close_all();
    }

    /// N: the first generation is Ready (holding): tell the old master.
    pub(crate) fn tell_old_master_ready(&mut self) {
        if self.upgrade.awaiting_commit.is_none() || self.upgrade.said_ready {
            return;
        }
        let Some(link) = handover::new_side_link() else {
            return;
        };
        let msg = FromNew::Ready {
            pid: std::process::id(),
            pid_file: handover::took_pid_file(),
        };
        match handover::send(link, &msg.encode(), &[]) {
            Ok(()) => {
                self.upgrade.said_ready = true;
                info!("upgrade: workers ready (not accepting yet); waiting for the commit");
            }
            Err(e) => self.failed = Some(format!("upgrade: telling the old master: {e}")),
        }
    }

    /// N: `commit` starts our workers accepting; the old master going away first ends us.
    fn await_commit(&mut self) {
        let Some(link) = handover::new_side_link() else {
            return;
        };
        match handover::recv(link, None) {
            Ok(Incoming::Nothing) => {}
            Ok(Incoming::Message(t, _)) if t == handover::COMMIT => self.committed(),
            Ok(Incoming::Message(t, _)) => {
                self.failed = Some(format!(
                    "upgrade: unexpected word from the old master: {t:?}"
                ))
            }
            Ok(Incoming::Closed) => {
                self.failed = Some("upgrade: the old master went away before it committed".into())
            }
            Err(e) => self.failed = Some(e),
        }
    }

    /// N: the service is ours.
    fn committed(&mut self) {
        let old = self.upgrade.awaiting_commit.take().unwrap_or(0);
        notify::set_enabled(true);
        for g in &mut self.gens {
            g.hold_accept = false;
        }
        for w in self.workers() {
            w.send(&ToWorker::Accept);
        }
        if let Some(link) = handover::new_side_link() {
            // The old master's workers drain once ours accept.
            let _ = handover::send(link, handover::ACCEPTING, &[]);
        }
        self.close_unused_listeners();
        handover::discard_unused();
        // The control socket file is ours now: removed at our exit, not at a failed one.
        if let Some(b) = &mut self.control.bound {
            b.own_file();
        }
        info!("upgrade committed: this master serves; master {old} drains and exits");
        if std::mem::take(&mut self.reload_queued) {
            self.reload();
        }
    }

    /// N, before the first generation: take the listeners the old master handed over.
    pub(crate) fn adopt_inherited_listeners(&mut self) -> Result<(), String> {
        for (addr, fd) in handover::take_listeners() {
            self.listeners
                .adopt(addr, fd)
                .map_err(|e| format!("upgrade: {e}"))?;
        }
        Ok(())
    }
}

/// O at commit: the pid file (whose lock the new master shares) names the new master.
fn write_pid(pid: u32) {
    let guard = PID_FILE.lock().unwrap_or_else(|p| p.into_inner());
    let Some((path, file)) = guard.as_ref() else {
        return;
    };
    let text = format!("{pid}\n");
    if let Err(e) = file
        .set_len(0)
        .and_then(|()| file.write_all_at(text.as_bytes(), 0))
    {
        error!("upgrade: writing {pid} into {}: {e}", path.display());
    }
}

/// `UPGRADE` [`TIMEOUT`], or a test's shorter one (`test-faults` builds only).
fn timeout() -> Duration {
    #[cfg(feature = "test-faults")]
    if let Some(ms) = std::env::var("RPROXY_TEST_UPGRADE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_millis(ms);
    }
    TIMEOUT
}

/// Test-only fault injection: a new master that hangs (at most a minute) while the file named
/// by `RPROXY_TEST_UPGRADE_HANG_FILE` exists, so the old master's deadline is what ends it.
#[cfg(feature = "test-faults")]
fn hang_while_fault_file() {
    let Some(path) = std::env::var_os("RPROXY_TEST_UPGRADE_HANG_FILE") else {
        return;
    };
    let end = Instant::now() + Duration::from_secs(60);
    while Path::new(&path).exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Test-only: the old master leaves the new one's `ready` unread (no commit, no deadline)
/// while the file named by `RPROXY_TEST_UPGRADE_HOLD_COMMIT_FILE` exists, so a test can see
/// the new workers holding their listeners without accepting.
#[cfg(feature = "test-faults")]
fn commit_held() -> bool {
    std::env::var_os("RPROXY_TEST_UPGRADE_HOLD_COMMIT_FILE").is_some_and(|p| Path::new(&p).exists())
}

/// `/proc/self/exe` of a binary that was replaced reads "... (deleted)".
fn strip_deleted(p: PathBuf) -> PathBuf {
    match p.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
        Some(b) => PathBuf::from(OsString::from_vec(b.to_vec())),
        None => p,
    }
}

/// `args` with the value of `-c`/`--config` replaced by `config` (absolute: a daemon's
/// working directory is `/`), or `-c config` added when it was not given.
fn with_config(args: Vec<OsString>, config: &Path) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut it = args.into_iter();
    let mut found = false;
    if let Some(first) = it.next() {
        out.push(first);
    }
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        if b == b"-c" || b == b"--config" {
            out.push(a);
            let _ = it.next();
            out.push(config.as_os_str().to_owned());
            found = true;
        } else if b.starts_with(b"--config=") {
            let mut v = OsString::from("--config=");
            v.push(config.as_os_str());
            out.push(v);
            found = true;
        } else if b.starts_with(b"-c") && !b.starts_with(b"--") {
            out.push("-c".into());
            out.push(config.as_os_str().to_owned());
            found = true;
        } else {
            out.push(a);
        }
    }
    if !found {
        out.push("-c".into());
        out.push(config.as_os_str().to_owned());
    }
    out
}

/// Everything `execve` needs, built before the fork.
struct Exec {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl Exec {
    fn new(exe: &Path, argv: &[OsString], child_fd: i32) -> Result<Exec, String> {
        let c = |b: &[u8]| CString::new(b).map_err(|_| "a NUL byte in an argument".to_string());
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os() {
            if k == handover::ENV {
                continue;
            }
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            env.push(c(&kv)?);
        }
        env.push(c(format!("{}={child_fd}", handover::ENV).as_bytes())?);
        Ok(Exec {
            path: c(exe.as_os_str().as_bytes())?,
            argv: argv
                .iter()
                .map(|a| c(a.as_bytes()))
                .collect::<Result<_, _>>()?,
            env,
        })
    }

    /// In the forked child: become the new binary, or report why not and exit 127.
    fn run(self, child_end: OwnedFd) -> ! {
        // The master blocks its signals for the signalfd; the new binary sets up its own.
        let _ =
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        let keep = child_end.as_raw_fd() as libc::c_uint;
        // Nothing but the channel (and 0-2) may cross exec. Everything the master opens is
        // close-on-exec already; this also covers what a library might have opened.
        // SAFETY: only sets flags on descriptors of this (child) process.
        unsafe {
            libc::close_range(
                3,
                keep.saturating_sub(1),
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            );
            libc::close_range(
                keep + 1,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            );
        }
        let _ = nix::fcntl::fcntl(
            &child_end,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
        let e = nix::unistd::execve(&self.path, &self.argv, &self.env).unwrap_err();
        let msg = format!(
            "upgrade: cannot execute {}: {e}",
            self.path.to_string_lossy()
        );
        let _ = handover::send(
            child_end.as_fd(),
            &FromNew::Failed(msg.clone()).encode(),
            &[],
        );
        let _ = writeln!(std::io::stderr(), "rproxy: {msg}");
        // SAFETY: ends the forked child without running the master's destructors.
        unsafe { libc::_exit(127) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_config_argument_becomes_absolute() {
        let abs = Path::new("/etc/rproxy/x.toml");
        assert_eq!(
            with_config(v(&["rproxy", "-f", "-c", "x.toml"]), abs),
            v(&["rproxy", "-f", "-c", "/etc/rproxy/x.toml"])
        );
        assert_eq!(
            with_config(v(&["rproxy", "--config=x.toml", "-f"]), abs),
            v(&["rproxy", "--config=/etc/rproxy/x.toml", "-f"])
        );
        assert_eq!(
            with_config(v(&["rproxy", "-cx.toml"]), abs),
            v(&["rproxy", "-c", "/etc/rproxy/x.toml"])
        );
        assert_eq!(
            with_config(v(&["rproxy", "-f"]), abs),
            v(&["rproxy", "-f", "-c", "/etc/rproxy/x.toml"])
        );
    }

    #[test]
    fn a_replaced_binary_is_found_by_its_path() {
        assert_eq!(
            strip_deleted(PathBuf::from("/usr/sbin/rproxy (deleted)")),
            PathBuf::from("/usr/sbin/rproxy")
        );
        assert_eq!(
            strip_deleted(PathBuf::from("/usr/sbin/rproxy")),
            PathBuf::from("/usr/sbin/rproxy")
        );
    }
}
