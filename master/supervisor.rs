//! The master's loop: one `poll()` over a signalfd and every worker channel, with a 100 ms tick
//! for timers. It owns the generations of workers (one serving, up to two draining, at most one
//! starting during a reload) and turns signals into reload (`reload.rs`), log reopen
//! (`reopen.rs`), graceful and fast stop (`stop.rs`); crashed and hung workers are replaced
//! by `health.rs`.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rproxy_shared::channel::{Received, ToMaster};
use rproxy_shared::config::Config;
use rproxy_shared::{error, info, warn};

use crate::control::Control;
use crate::generation::{GenState, Generation, Worker, WorkerState};
use crate::listeners::Listeners;
use crate::notify;
use crate::stop::Stop;

const TICK_MS: u16 = 100;

/// Workers of the first generation dying before Ready this many times in a row (with no worker
/// ever Ready) make start-up fail: exit 1 instead of respawning forever (DESIGN section 3).
/// With the back-off (0, 200, 400, 800 ms) that is about 1.5 s plus the workers' own start.
const MAX_STARTUP_DEATHS: u32 = 5;

/// Everything the master process supervises; driven by [`Master::run`] until it stops.
pub struct Master {
    pub(crate) config_path: PathBuf,
    pub(crate) listeners: Listeners,
    /// Oldest first; each owns its workers.
    pub(crate) gens: Vec<Generation>,
    next_gen: u64,
    /// The generation receiving new connections.
    pub(crate) current: u64,
    pub(crate) reload_queued: bool,
    pub(crate) stop: Option<Stop>,
    pub(crate) announced_ready: bool,
    pub(crate) killed_all: bool,
    /// Workers that have not yet confirmed the last log reopen.
    pub(crate) reopen_pending: usize,
    /// Consecutive deaths before Ready while no worker was ever Ready.
    startup_deaths: u32,
    /// Set when start-up failed: the loop ends and `run` returns it.
    pub(crate) failed: Option<String>,
    sigfd: SignalFd,
    /// The workers' reports summed (`metrics.rs`), served on `metrics-listen` (`scrape.rs`).
    pub(crate) metrics: crate::metrics::Metrics,
    pub(crate) scrape: crate::scrape::Scrape,
    /// Hot binary upgrade, either side (`upgrade.rs`).
    pub(crate) upgrade: crate::upgrade::Upgrade,
    /// The control socket and what its connections wait for (`control/`).
    pub(crate) control: Control,
}

impl Master {
    /// Block the signals we serve through the signalfd. Call before binding or forking.
    pub fn new(config_path: PathBuf) -> Result<Master, String> {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGHUP,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGQUIT,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGCHLD,
        ] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| format!("sigprocmask: {e}"))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {e}"))?;
        let upgrade = crate::upgrade::Upgrade::new(&config_path)?;
        Ok(Master {
            config_path,
            listeners: Listeners::default(),
            gens: Vec::new(),
            next_gen: 1,
            current: 0,
            reload_queued: false,
            stop: None,
            announced_ready: false,
            killed_all: false,
            reopen_pending: 0,
            startup_deaths: 0,
            failed: None,
            sigfd,
            metrics: Default::default(),
            scrape: Default::default(),
            upgrade,
            control: Control::new(None),
        })
    }

    /// Bind, fork the first generation and supervise until stopped.
    pub fn run(mut self, config: Config) -> Result<(), String> {
        let config = Arc::new(config);
        self.adopt_inherited_listeners()?;
        self.listeners.bind_for(&config)?;
        self.scrape.rebind(config.metrics_listen)?;
        if let Some(p) = &config.control_socket {
            self.control.bound = Some(match crate::handover::take_control_socket(p) {
                Some(fd) => crate::control::socket::Bound::adopt(p, fd)?,
                None => crate::control::socket::bind(p)?,
            });
        }
        // A binary upgrade's new master keeps the operator's downstream states.
        for (server, name, state) in crate::handover::take_admin() {
            if state != rproxy_shared::channel::AdminState::Ready {
                self.control.admin.insert((server, name), state);
            }
        }
        let id = match self.start_generation(config, GenState::Active) {
            Ok(id) => id,
            Err(e) => {
                self.kill_everything();
                return Err(e);
            }
        };
        self.current = id;
        self.serve();
        match self.failed.take() {
            Some(e) => {
                self.kill_everything();
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Start-up failed: no worker may outlive the master.
    fn kill_everything(&mut self) {
        for g in &mut self.gens {
            g.kill_all();
            for w in &g.workers {
                let _ = waitpid(w.pid, None);
            }
            g.workers.clear();
        }
    }

    fn serve(&mut self) {
        loop {
            let (signalled, readable, control) = self.wait();
            if signalled {
                self.read_signals();
            }
            for pid in readable {
                self.read_channel(pid);
            }
            self.reap();
            self.serve_control(&control);
            self.scrape
                .service(|| crate::metrics::render(&mut self.metrics));
            if self.failed.is_some() || self.timers() {
                return;
            }
        }
    }

    /// One `poll()`: whether the signalfd is readable, the workers whose channel is, and the
    /// events of the control socket's descriptors (see `Control::poll_fds`).
    fn wait(&self) -> (bool, Vec<Pid>, Vec<PollFlags>) {
        let mut pids = Vec::new();
        let mut pfds = vec![PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN)];
        for w in self.workers() {
            if let Some(chan) = &w.channel {
                pfds.push(PollFd::new(chan.as_fd(), PollFlags::POLLIN));
                pids.push(w.pid);
            }
        }
        let control_at = pfds.len();
        // A binary upgrade's new master answers `rproxy ctl` only once it serves (commit).
        if !self.upgrade.holds_accept() {
            for (fd, flags) in self.control.poll_fds() {
                pfds.push(PollFd::new(fd, flags));
            }
        }
        let control_end = pfds.len();
        let nothing = |_: &[PollFd<'_>]| vec![PollFlags::empty(); control_end - control_at];
        // The metrics listener's connections last: its `service` tries them all each turn.
        self.scrape.poll_fds(&mut pfds);
        match poll(&mut pfds, PollTimeout::from(TICK_MS)) {
            Ok(n) if n > 0 => {}
            Ok(_) | Err(Errno::EINTR) => return (false, Vec::new(), nothing(&pfds)),
            Err(e) => {
                error!("poll: {e}");
                return (false, Vec::new(), nothing(&pfds));
            }
        }
        // Any event counts: a hang-up or error is read (as a closed channel) like data.
        let has_event = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
        let signalled = has_event(&pfds[0]);
        let readable = pfds[1..control_at]
            .iter()
            .zip(pids)
            .filter(|(p, _)| has_event(p))
            .map(|(_, pid)| pid)
            .collect();
        let control = pfds[control_at..control_end]
            .iter()
            .map(|p| p.revents().unwrap_or(PollFlags::empty()))
            .collect();
        (signalled, readable, control)
    }

    fn read_signals(&mut self) {
        loop {
            match self.sigfd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => self.reload(),
                    Ok(Signal::SIGUSR1) => self.reopen_logs(),
                    Ok(Signal::SIGUSR2) => self.upgrade_on_signal(),
                    Ok(Signal::SIGQUIT) => self.graceful_stop(),
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => self.fast_stop(),
                    _ => {} // SIGCHLD: reaped after every wake-up anyway.
                },
                Ok(None) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    error!("reading signalfd: {e}");
                    return;
                }
            }
        }
    }

    fn read_channel(&mut self, pid: Pid) {
        loop {
            let Some((gi, wi)) = self.find(pid) else {
                return;
            };
            let w = &mut self.gens[gi].workers[wi];
            let Some(chan) = &w.channel else {
                return;
            };
            match chan.recv() {
                Ok(Received::Message(m)) => self.on_message(gi, wi, m),
                Ok(Received::Unknown) => warn!("worker {pid}: unknown message"),
                Ok(Received::Empty) => return,
                Ok(Received::Closed) => {
                    // The worker is gone or going: its exit is handled when reaped.
                    w.channel = None;
                    return;
                }
                Err(e) => {
                    warn!("worker {pid} channel: {e}");
                    w.channel = None;
                    return;
                }
            }
        }
    }

    fn on_message(&mut self, gi: usize, wi: usize, m: ToMaster) {
        let now = Instant::now();
        let g = &mut self.gens[gi];
        let w = &mut g.workers[wi];
        match m {
            ToMaster::Ready => {
                w.ready_at = Some(now);
                w.last_beat = now;
                if w.state == WorkerState::Starting {
                    w.state = WorkerState::Ready;
                }
                rproxy_shared::debug!("worker {} (generation {}) ready", w.pid, g.id);
                self.check_generation_ready(gi);
            }
            // A heartbeat proves liveness; the metrics come in their own messages.
            ToMaster::Heartbeat(_) => w.last_beat = now,
            ToMaster::Metrics(m) => self.metrics.update(w.pid.as_raw(), g.id, &g.config, &m),
            ToMaster::LogsReopened => {
                rproxy_shared::debug!("worker {} reopened its logs", w.pid);
                self.reopen_pending = self.reopen_pending.saturating_sub(1);
                if self.reopen_pending == 0 {
                    info!("log files reopened by every worker");
                }
            }
            ToMaster::AdminApplied { seq, ok } => {
                let pid = w.pid;
                self.control_ack(pid, seq, ok);
            }
            ToMaster::Exiting => {
                // Informational: whether the exit is replaced depends on why it happened
                // (drain or stop asked by us, or not), decided when it is reaped.
                rproxy_shared::debug!("worker {} exiting", w.pid);
            }
        }
    }

    /// A generation is ready when every slot has a Ready worker.
    fn check_generation_ready(&mut self, gi: usize) {
        let g = &self.gens[gi];
        if !g.all_ready() {
            return;
        }
        match g.state {
            GenState::Starting => self.promote(g.id),
            GenState::Active if !self.announced_ready => {
                self.announced_ready = true;
                let n = g.slots.len();
                info!(
                    "rproxy {} started: {n} workers ready",
                    env!("CARGO_PKG_VERSION")
                );
                notify::ready(&format!("serving with {n} workers"));
                crate::startup::report_ready();
                self.tell_old_master_ready();
            }
            _ => {}
        }
    }

    /// Open a new generation's files and fork all its workers.
    pub(crate) fn start_generation(
        &mut self,
        config: Arc<Config>,
        state: GenState,
    ) -> Result<u64, String> {
        let id = self.next_gen;
        let mut g = Generation::new(id, config, state)?;
        g.hold_accept = self.upgrade.holds_accept();
        g.admin = self.admin_states(&g.config);
        self.next_gen += 1;
        let listeners = self.listeners.for_config(&g.config);
        // Pushed even when a fork fails, so the workers already forked are supervised.
        let result = (0..g.slots.len()).try_for_each(|slot| g.spawn_worker(slot, &listeners));
        self.gens.push(g);
        result.map(|()| id)
    }

    /// Fork a replacement for `slot` of generation `gi`.
    pub(crate) fn respawn(&mut self, gi: usize, slot: usize) -> Result<(), String> {
        let g = &mut self.gens[gi];
        let listeners = self.listeners.for_config(&g.config);
        g.spawn_worker(slot, &listeners)
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.on_exit(pid, format!("exited with status {code}"), code == 0)
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.on_exit(pid, format!("killed by signal {sig}"), false)
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    error!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, how: String, clean: bool) {
        if self.upgrade_child_exited(pid, &how) {
            return;
        }
        // What it sent just before it died (its last metrics, `Exiting`) may still be unread.
        self.read_channel(pid);
        let Some((gi, wi)) = self.find(pid) else {
            return;
        };
        let stopping = self.stop.is_some();
        let g = &mut self.gens[gi];
        let w = g.workers.swap_remove(wi);
        self.metrics.worker_gone(pid.as_raw());
        if w.is_draining() || stopping || g.is_draining() {
            if clean || w.is_draining() {
                info!("worker {pid} (generation {}) {how}", g.id);
            } else {
                warn!("worker {pid} (generation {}) {how} while draining", g.id);
            }
        } else if !self.announced_ready && w.ready_at.is_none() {
            self.startup_deaths += 1;
            if self.startup_deaths >= MAX_STARTUP_DEATHS {
                self.failed = Some(format!(
                    "workers died {} times in a row before they were ready (last: {how}): \
                     giving up",
                    self.startup_deaths
                ));
                return;
            }
            crate::health::schedule_replacement(g, &w, &how);
        } else {
            crate::metrics::worker_restarted();
            crate::health::schedule_replacement(g, &w, &how);
        }
        self.finish_generations();
    }

    /// Forget draining generations with no worker left.
    fn finish_generations(&mut self) {
        self.gens.retain(|g| {
            let done = g.is_draining() && g.workers.is_empty();
            if done {
                info!("generation {} finished draining", g.id);
            }
            !done
        });
    }

    /// Periodic work. Returns true when the master should exit.
    fn timers(&mut self) -> bool {
        let now = Instant::now();
        self.upgrade_tick(now);
        if self.stop.is_some() {
            return self.stop_timers(now);
        }
        self.kill_hung(now);
        self.respawn_due(now);
        self.give_up_stuck_reload(now);
        self.kill_late_drainers(now);
        // A new master of a binary upgrade shares the old one's key ring: only one writes it.
        if !self.upgrade.holds_accept() {
            crate::ticket_keys::rotate_if_due();
        }
        false
    }

    /// `(generation index, worker index)` of a worker.
    fn find(&self, pid: Pid) -> Option<(usize, usize)> {
        self.gens.iter().enumerate().find_map(|(gi, g)| {
            g.workers
                .iter()
                .position(|w| w.pid == pid)
                .map(|wi| (gi, wi))
        })
    }

    /// Every worker of every generation.
    pub(crate) fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.gens.iter().flat_map(|g| &g.workers)
    }

    pub(crate) fn workers_mut(&mut self) -> impl Iterator<Item = &mut Worker> {
        self.gens.iter_mut().flat_map(|g| &mut g.workers)
    }
}
