//! The master's loop: one `poll()` over a signalfd and every worker channel, with a 100 ms tick
//! for timers. It owns the generations of workers (one serving, up to two draining, at most one
//! starting during a reload), replaces crashed and hung workers with bounded back-off, and turns
//! signals into reload, log reopen, graceful and fast stop.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rproxy_shared::channel::{self, ToMaster, ToWorker, MAX_MSG};
use rproxy_shared::config::Config;
use rproxy_shared::{error, info, warn};

use crate::listeners::Listeners;
use crate::notify;
use crate::privileges::Identity;
use crate::spawn::{spawn, Inherit};
use crate::startup;

/// A worker that starts after this long without dying again counts as healthy: the next
/// crash of its slot is replaced at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Cap of the crash back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Grace on top of `heartbeat-timeout` for a worker that has not said Ready yet: a loaded
/// 2-core machine can take a while to schedule a fresh process.
const START_GRACE: Duration = Duration::from_secs(5);
/// After a fast stop, how long workers get before SIGKILL.
const FAST_STOP: Duration = Duration::from_millis(1500);
const TICK_MS: i32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GenState {
    /// Forked by a reload, not all Ready yet; the previous generation still serves.
    Starting,
    Active,
    Draining {
        deadline: Instant,
    },
}

struct Slot {
    /// Consecutive fast deaths, for the back-off.
    failures: u32,
    respawn_at: Option<Instant>,
}

struct Generation {
    id: u64,
    config: Arc<Config>,
    identity: Identity,
    log_files: Vec<OwnedFd>,
    slots: Vec<Slot>,
    state: GenState,
    started: Instant,
}

struct Worker {
    pid: Pid,
    gen: u64,
    slot: usize,
    chan: OwnedFd,
    chan_open: bool,
    started: Instant,
    ready: bool,
    last_beat: Instant,
    draining: bool,
    killed: bool,
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Graceful { deadline: Instant },
    Fast { deadline: Instant },
}

pub struct Master {
    config_path: PathBuf,
    listeners: Listeners,
    gens: Vec<Generation>,
    workers: Vec<Worker>,
    next_gen: u64,
    /// The generation receiving new connections.
    current: u64,
    reload_queued: bool,
    stop: Option<Stop>,
    announced_ready: bool,
    killed_all: bool,
    /// Workers that have not yet confirmed the last log reopen.
    reopen_pending: usize,
    sigfd: SignalFd,
}

impl Master {
    /// Block the signals we serve through the signalfd. Call before binding or forking.
    pub fn new(config_path: PathBuf) -> Result<Master, String> {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGHUP,
            Signal::SIGUSR1,
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
        Ok(Master {
            config_path,
            listeners: Listeners::default(),
            gens: Vec::new(),
            workers: Vec::new(),
            next_gen: 1,
            current: 0,
            reload_queued: false,
            stop: None,
            announced_ready: false,
            killed_all: false,
            reopen_pending: 0,
            sigfd,
        })
    }

    /// Bind, fork the first generation and supervise until stopped.
    pub fn run(mut self, config: Config) -> Result<(), String> {
        let config = Arc::new(config);
        self.listeners.bind_for(&config)?;
        let id = self.start_generation(config, GenState::Active)?;
        self.current = id;
        self.serve();
        Ok(())
    }

    fn serve(&mut self) {
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        loop {
            pfds.clear();
            pfds.push(pollfd(self.sigfd.as_raw_fd()));
            for w in self.workers.iter().filter(|w| w.chan_open) {
                pfds.push(pollfd(w.chan.as_raw_fd()));
            }
            // SAFETY: pfds is a valid array of pollfd for the duration of the call.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, TICK_MS) };
            if n < 0 && Errno::last() != Errno::EINTR {
                error!("poll: {}", Errno::last());
            }
            if n > 0 {
                if pfds[0].revents != 0 {
                    self.read_signals();
                }
                let ready: Vec<RawFd> = pfds[1..]
                    .iter()
                    .filter(|p| p.revents != 0)
                    .map(|p| p.fd)
                    .collect();
                for fd in ready {
                    self.read_channel(fd);
                }
            }
            self.reap();
            if self.timers() {
                return;
            }
        }
    }

    fn read_signals(&mut self) {
        loop {
            match self.sigfd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => self.reload(),
                    Ok(Signal::SIGUSR1) => self.reopen_logs(),
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

    fn read_channel(&mut self, fd: RawFd) {
        let Some(wi) = self.workers.iter().position(|w| w.chan.as_raw_fd() == fd) else {
            return;
        };
        let mut buf = [0u8; MAX_MSG];
        let mut fds = Vec::new();
        loop {
            match channel::recv(fd, &mut buf, &mut fds) {
                Ok(0) => {
                    // The worker is gone or going: its exit is handled when reaped.
                    self.workers[wi].chan_open = false;
                    return;
                }
                Ok(n) => match ToMaster::decode(&buf[..n]) {
                    Some(m) => self.on_message(wi, m),
                    None => warn!("worker {}: unknown message", self.workers[wi].pid),
                },
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    warn!("worker {} channel: {e}", self.workers[wi].pid);
                    self.workers[wi].chan_open = false;
                    return;
                }
            }
        }
    }

    fn on_message(&mut self, wi: usize, m: ToMaster) {
        let now = Instant::now();
        let w = &mut self.workers[wi];
        match m {
            ToMaster::Ready => {
                w.ready = true;
                w.last_beat = now;
                let gen = w.gen;
                rproxy_shared::debug!("worker {} (generation {gen}) ready", w.pid);
                self.check_generation_ready(gen);
            }
            // The counters are not used by the master yet: a heartbeat proves liveness.
            ToMaster::Heartbeat(_) => w.last_beat = now,
            ToMaster::LogsReopened => {
                rproxy_shared::debug!("worker {} reopened its logs", w.pid);
                self.reopen_pending = self.reopen_pending.saturating_sub(1);
                if self.reopen_pending == 0 {
                    info!("log files reopened by every worker");
                }
            }
            ToMaster::Exiting => {
                // Informational: whether the exit is replaced depends on why it happened
                // (drain or stop asked by us, or not), decided when it is reaped.
                rproxy_shared::debug!("worker {} exiting", w.pid);
            }
        }
    }

    /// A generation is ready when every slot has a Ready worker.
    fn check_generation_ready(&mut self, id: u64) {
        let Some(g) = self.gens.iter().find(|g| g.id == id) else {
            return;
        };
        let ready = (0..g.slots.len()).all(|s| {
            self.workers
                .iter()
                .any(|w| w.gen == id && w.slot == s && w.ready && !w.killed)
        });
        if !ready {
            return;
        }
        match g.state {
            GenState::Starting => self.promote(id),
            GenState::Active if !self.announced_ready => {
                self.announced_ready = true;
                let n = g.slots.len();
                info!(
                    "rproxy {} started: {n} workers ready",
                    env!("CARGO_PKG_VERSION")
                );
                notify::ready(&format!("serving with {n} workers"));
            }
            _ => {}
        }
    }

    fn start_generation(&mut self, config: Arc<Config>, state: GenState) -> Result<u64, String> {
        let identity = Identity::resolve(&config.user, &config.group)?;
        if !identity.switch {
            warn!(
                "not running as root: workers keep this user instead of `{}`",
                config.user
            );
        }
        let log_files = startup::open_access_logs(&config, identity.owner())?;
        let id = self.next_gen;
        self.next_gen += 1;
        let slots = (0..config.workers)
            .map(|_| Slot {
                failures: 0,
                respawn_at: None,
            })
            .collect();
        self.gens.push(Generation {
            id,
            config,
            identity,
            log_files,
            slots,
            state,
            started: Instant::now(),
        });
        let count = self.gens.last().map_or(0, |g| g.slots.len());
        for slot in 0..count {
            self.spawn_worker(id, slot)?;
        }
        Ok(id)
    }

    fn spawn_worker(&mut self, gen: u64, slot: usize) -> Result<(), String> {
        let Some(g) = self.gens.iter().find(|g| g.id == gen) else {
            return Err(format!("generation {gen} is gone"));
        };
        let listeners = self.listeners.for_config(&g.config);
        let log_files: Vec<RawFd> = g.log_files.iter().map(|f| f.as_raw_fd()).collect();
        let (pid, chan) = spawn(&Inherit {
            config: &g.config,
            generation: gen,
            identity: g.identity,
            listeners: &listeners,
            log_files: &log_files,
        })?;
        rproxy_shared::debug!("started worker {pid} (generation {gen}, slot {slot})");
        let now = Instant::now();
        self.workers.push(Worker {
            pid,
            gen,
            slot,
            chan,
            chan_open: true,
            started: now,
            ready: false,
            last_beat: now,
            draining: false,
            killed: false,
        });
        Ok(())
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
        let Some(wi) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        let w = self.workers.swap_remove(wi);
        let Some(gi) = self.gens.iter().position(|g| g.id == w.gen) else {
            return;
        };
        let expected = w.draining || self.stop.is_some();
        let state = self.gens[gi].state;
        if expected || matches!(state, GenState::Draining { .. }) {
            if clean || w.draining {
                info!("worker {pid} (generation {}) {how}", w.gen);
            } else {
                warn!("worker {pid} (generation {}) {how} while draining", w.gen);
            }
        } else {
            // A serving (or starting) worker died: replace it, backing off if it keeps dying.
            let now = Instant::now();
            let g = &mut self.gens[gi];
            let slot = &mut g.slots[w.slot];
            if !w.ready || now.duration_since(w.started) < HEALTHY_AFTER {
                slot.failures += 1;
            } else {
                slot.failures = 0;
            }
            let delay = backoff(slot.failures);
            slot.respawn_at = Some(now + delay);
            let what = if w.killed { "was killed" } else { "died" };
            error!(
                "worker {pid} (generation {}, slot {}) {what}: {how}; replacing it in {} ms",
                w.gen,
                w.slot,
                delay.as_millis()
            );
        }
        self.finish_generations();
    }

    /// Forget draining generations with no worker left.
    fn finish_generations(&mut self) {
        let workers = &self.workers;
        self.gens.retain(|g| {
            let done = matches!(g.state, GenState::Draining { .. })
                && !workers.iter().any(|w| w.gen == g.id);
            if done {
                info!("generation {} finished draining", g.id);
            }
            !done
        });
    }

    /// Periodic work. Returns true when the master should exit.
    fn timers(&mut self) -> bool {
        let now = Instant::now();
        if let Some(stop) = self.stop {
            if self.workers.is_empty() {
                return true;
            }
            let deadline = match stop {
                Stop::Graceful { deadline } | Stop::Fast { deadline } => deadline,
            };
            if now >= deadline && !self.killed_all {
                warn!("workers still running at the stop deadline: killing them");
                for w in &mut self.workers {
                    let _ = kill(w.pid, Signal::SIGKILL);
                    w.killed = true;
                }
                self.killed_all = true;
            }
            return false;
        }

        // Hung workers: silent for heartbeat-timeout (or never Ready in time).
        for w in &mut self.workers {
            if w.killed {
                continue;
            }
            let Some(g) = self.gens.iter().find(|g| g.id == w.gen) else {
                continue;
            };
            let hb = g.config.heartbeat_timeout;
            let silent = now.duration_since(w.last_beat);
            let hung = if w.ready {
                silent > hb
            } else {
                silent > hb + START_GRACE
            };
            if hung {
                error!(
                    "worker {} (generation {}) sent no heartbeat for {} s: killing it",
                    w.pid,
                    w.gen,
                    silent.as_secs()
                );
                let _ = kill(w.pid, Signal::SIGKILL);
                w.killed = true;
            }
        }

        // Respawns whose back-off expired.
        let mut due = Vec::new();
        for g in &mut self.gens {
            if matches!(g.state, GenState::Draining { .. }) {
                continue;
            }
            for (i, s) in g.slots.iter_mut().enumerate() {
                if s.respawn_at.is_some_and(|t| t <= now) {
                    s.respawn_at = None;
                    due.push((g.id, i));
                }
            }
        }
        for (gen, slot) in due {
            if let Err(e) = self.spawn_worker(gen, slot) {
                error!("cannot start a worker: {e}");
                if let Some(g) = self.gens.iter_mut().find(|g| g.id == gen) {
                    g.slots[slot].failures += 1;
                    g.slots[slot].respawn_at = Some(now + backoff(g.slots[slot].failures));
                }
            }
        }

        // A reload whose generation never became ready: give up on it, keep the old one.
        let stuck: Vec<u64> = self
            .gens
            .iter()
            .filter(|g| {
                g.state == GenState::Starting
                    && now.duration_since(g.started) > g.config.heartbeat_timeout + START_GRACE * 2
            })
            .map(|g| g.id)
            .collect();
        for id in stuck {
            self.abandon_generation(id);
            self.reload_failed(&format!(
                "the workers of generation {id} did not become ready"
            ));
            self.after_reload();
        }

        // Draining generations past shutdown-timeout.
        for g in &self.gens {
            if let GenState::Draining { deadline } = g.state {
                if now >= deadline {
                    for w in self
                        .workers
                        .iter_mut()
                        .filter(|w| w.gen == g.id && !w.killed)
                    {
                        warn!(
                            "worker {} (generation {}) still draining at shutdown-timeout: killing it",
                            w.pid, w.gen
                        );
                        let _ = kill(w.pid, Signal::SIGKILL);
                        w.killed = true;
                    }
                }
            }
        }
        false
    }

    fn reload(&mut self) {
        if self.stop.is_some() {
            return;
        }
        if self.gens.iter().any(|g| g.state == GenState::Starting) {
            // One reload at a time; this one runs when the current one is done.
            self.reload_queued = true;
            return;
        }
        notify::reloading();
        info!("reloading {}", self.config_path.display());
        let config = match rproxy_shared::load::load(&self.config_path) {
            Ok(c) => c,
            Err(errs) => {
                for e in &errs.0 {
                    error!("reload failed: {e}");
                }
                self.reload_failed(&format!("{} error(s) in the configuration", errs.0.len()));
                return;
            }
        };
        if let Some(u) = config.unsupported().first() {
            self.reload_failed(&format!("{}: {u}", self.config_path.display()));
            return;
        }
        let config = Arc::new(config);
        let result = self
            .listeners
            .bind_for(&config)
            .and_then(|()| self.start_generation(Arc::clone(&config), GenState::Starting));
        if let Err(e) = result {
            // Listeners bound for the failed configuration alone are closed again.
            self.close_unused_listeners();
            self.reload_failed(&e);
            return;
        }
        // Only once the new generation exists: a failed reload leaves the master as it was.
        if let Err(e) = self.apply_globals(&config) {
            warn!("reload: {e}");
        }
    }

    fn reload_failed(&self, why: &str) {
        error!("reload failed: {why}; the previous configuration keeps serving");
        notify::status("reload failed: previous configuration serving");
        notify::ready("serving");
    }

    /// Global settings that take effect in the master itself.
    fn apply_globals(&self, config: &Config) -> Result<(), String> {
        rproxy_shared::errlog::set_level(config.log_level);
        let identity = Identity::resolve(&config.user, &config.group)?;
        startup::open_error_log(config.error_log.as_deref(), identity.owner())?;
        startup::memtrim(config.memtrim);
        Ok(())
    }

    /// The new generation is Ready: it takes over, the others drain.
    fn promote(&mut self, id: u64) {
        let now = Instant::now();
        let old = self.current;
        self.current = id;
        let mut draining: Vec<u64> = Vec::new();
        for g in &mut self.gens {
            if g.id == id {
                g.state = GenState::Active;
            } else if g.state == GenState::Active {
                g.state = GenState::Draining {
                    deadline: now + g.config.shutdown_timeout,
                };
            }
            if matches!(g.state, GenState::Draining { .. }) {
                draining.push(g.id);
            }
        }
        for w in &mut self.workers {
            if w.gen != id && !w.draining {
                send(w, ToWorker::Drain);
                w.draining = true;
            }
        }
        // At most two old generations drain at once: kill the oldest beyond that.
        draining.sort_unstable();
        while draining.len() > 2 {
            let oldest = draining.remove(0);
            warn!("a third generation would be draining: killing generation {oldest}");
            for w in self.workers.iter_mut().filter(|w| w.gen == oldest) {
                let _ = kill(w.pid, Signal::SIGKILL);
                w.killed = true;
            }
        }
        self.close_unused_listeners();
        info!("reload complete: generation {id} serving, generation {old} draining");
        notify::status(&format!("serving (generation {id})"));
        notify::ready("serving");
        self.after_reload();
    }

    fn after_reload(&mut self) {
        if std::mem::take(&mut self.reload_queued) {
            self.reload();
        }
    }

    fn abandon_generation(&mut self, id: u64) {
        for w in self.workers.iter_mut().filter(|w| w.gen == id) {
            let _ = kill(w.pid, Signal::SIGKILL);
            w.killed = true;
        }
        for g in &mut self.gens {
            if g.id == id {
                // Reaped like a draining generation, never respawned.
                g.state = GenState::Draining {
                    deadline: Instant::now(),
                };
            }
        }
        self.close_unused_listeners();
    }

    /// Listeners only the serving (or starting) configuration may keep. Draining workers hold
    /// their own copies until they stop accepting, so a removed port closes as they drain.
    fn close_unused_listeners(&mut self) {
        let live = self
            .gens
            .iter()
            .filter(|g| !matches!(g.state, GenState::Draining { .. }))
            .map(|g| g.config.as_ref());
        for addr in self.listeners.retain(live) {
            info!("closed listener {addr}");
        }
    }

    fn reopen_logs(&mut self) {
        info!("reopening log files");
        self.reopen_pending = 0;
        if let Some(g) = self.gens.iter().find(|g| g.id == self.current) {
            if let Err(e) =
                startup::open_error_log(g.config.error_log.as_deref(), g.identity.owner())
            {
                error!("reopening the error log: {e}");
            }
        }
        for g in &mut self.gens {
            let owner = g.identity.owner();
            let files = match startup::open_access_logs(&g.config, owner) {
                Ok(f) => f,
                Err(e) => {
                    error!("reopening access logs of generation {}: {e}", g.id);
                    continue;
                }
            };
            let mut raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
            // The error log goes last; the worker dup2s it onto its descriptor 2.
            let error_log = match g
                .config
                .error_log
                .as_deref()
                .map(|p| startup::open_log(p, owner))
            {
                None => None,
                Some(Ok(f)) => Some(f),
                Some(Err(e)) => {
                    error!("reopening the error log for generation {}: {e}", g.id);
                    None
                }
            };
            if let Some(f) = &error_log {
                raw.push(f.as_raw_fd());
            }
            for w in self.workers.iter().filter(|w| w.gen == g.id && w.chan_open) {
                match channel::send(w.chan.as_raw_fd(), &[ToWorker::ReopenLogs.encode()], &raw) {
                    Ok(()) => self.reopen_pending += 1,
                    Err(e) => error!("sending log files to worker {}: {e}", w.pid),
                }
            }
            // Workers forked from now on inherit the new files.
            g.log_files = files;
        }
    }

    fn graceful_stop(&mut self) {
        if matches!(
            self.stop,
            Some(Stop::Graceful { .. }) | Some(Stop::Fast { .. })
        ) {
            return;
        }
        notify::stopping();
        let timeout = self
            .gens
            .iter()
            .map(|g| g.config.shutdown_timeout)
            .max()
            .unwrap_or(Duration::from_secs(30));
        info!(
            "graceful stop: draining {} workers (up to {} s)",
            self.workers.len(),
            timeout.as_secs()
        );
        self.stop = Some(Stop::Graceful {
            deadline: Instant::now() + timeout + Duration::from_secs(1),
        });
        for w in &mut self.workers {
            if !w.draining {
                send(w, ToWorker::Drain);
                w.draining = true;
            }
        }
    }

    fn fast_stop(&mut self) {
        if matches!(self.stop, Some(Stop::Fast { .. })) {
            return;
        }
        notify::stopping();
        info!("fast stop");
        self.stop = Some(Stop::Fast {
            deadline: Instant::now() + FAST_STOP,
        });
        for w in &mut self.workers {
            send(w, ToWorker::Stop);
            w.draining = true;
        }
    }
}

fn send(w: &Worker, m: ToWorker) {
    if !w.chan_open {
        return;
    }
    if let Err(e) = channel::send(w.chan.as_raw_fd(), &[m.encode()], &[]) {
        warn!("sending {m:?} to worker {}: {e}", w.pid);
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// 0 for a first crash, then 200 ms doubling to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1u64 << (failures - 1).min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(50), Duration::from_secs(10));
    }
}
