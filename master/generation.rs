//! A generation: the workers forked from one configuration, with everything they were forked
//! with. A reload makes a new generation beside the serving one; the old one drains away with
//! its own configuration and files, so nothing of a generation outlives its last worker.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use openssl::ssl::SslContext;
use rproxy_shared::channel::{AdminState, MasterEnd, ToWorker};
use rproxy_shared::config::Config;
use rproxy_shared::warn;

use crate::privileges::Identity;
use crate::spawn::spawn;
use crate::startup;

/// Where a generation is between its fork and its last worker's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenState {
    /// Forked by a reload, not all Ready yet; the previous generation still serves.
    Starting,
    /// Serving: the generation new connections go to.
    Active,
    /// Told to drain (or given up on): its workers are never replaced, and those left at
    /// `deadline` are killed.
    Draining { deadline: Instant },
}

/// One worker position of a generation, which outlives the workers that fill it.
pub struct Slot {
    /// Consecutive fast deaths, for the back-off.
    pub failures: u32,
    pub respawn_at: Option<Instant>,
}

/// The workers of one configuration and what they were forked with, kept together so that
/// replacing a worker uses its own generation's config and files, never the newest ones.
pub struct Generation {
    pub id: u64,
    pub config: Arc<Config>,
    pub identity: Identity,
    /// Access-log files in `config.access_log_paths()` order; workers forked from now on
    /// inherit these (a log reopen replaces them).
    pub log_files: Vec<OwnedFd>,
    /// `error-log` of `config`, put on descriptor 2 of each worker it forks: a reload that
    /// changes the path gives the new workers the new file (the master's own descriptor 2 is
    /// switched only after the new generation exists).
    pub error_log: Option<OwnedFd>,
    /// The TLS context of each server (`None` for plain ones), built from `config` with the
    /// keys read as root; workers inherit them by fork. A reload builds new ones (re-reading
    /// every certificate, key and CRL) while the old generation drains with its own.
    pub tls: Vec<Option<SslContext>>,
    pub state: GenState,
    /// Forked by a new master during a binary upgrade: its workers hold their listeners
    /// without accepting until the upgrade commits (`upgrade.rs` sends them `Accept`).
    pub hold_accept: bool,
    pub started: Instant,
    pub slots: Vec<Slot>,
    pub workers: Vec<Worker>,
    /// The operator's downstream states (`rproxy ctl set downstream`) as indices into
    /// `config`: every worker forked for this generation starts with them.
    pub admin: Vec<(usize, usize, AdminState)>,
}

/// Where a worker is in its life, as far as the master knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Forked, has not said Ready: gets a start-up grace on top of `heartbeat-timeout`.
    Starting,
    /// Said Ready; serving.
    Ready,
    /// Told to Drain or Stop: its exit is expected and never replaced.
    Draining,
    /// SIGKILLed by the master; `draining` when it had been told to leave before.
    Killed { draining: bool },
}

/// One forked worker process, as its master sees it.
pub struct Worker {
    pub pid: Pid,
    pub slot: usize,
    /// `None` once the worker closed its end (it is exiting): nothing is read or sent any more.
    pub channel: Option<MasterEnd>,
    pub state: WorkerState,
    pub started: Instant,
    /// When it said Ready; a worker that never did counts as a start-up failure when it dies.
    pub ready_at: Option<Instant>,
    pub last_beat: Instant,
}

impl Worker {
    /// Told to leave (its exit is expected), killed or not.
    pub fn is_draining(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Draining | WorkerState::Killed { draining: true }
        )
    }

    pub fn is_killed(&self) -> bool {
        matches!(self.state, WorkerState::Killed { .. })
    }

    /// Send `m` if the channel is still open.
    pub fn send(&self, m: &ToWorker) {
        if let Some(chan) = &self.channel {
            if let Err(e) = chan.send(m) {
                warn!("sending {m:?} to worker {}: {e}", self.pid);
            }
        }
    }

    /// Send Drain or Stop: from now on the worker is leaving.
    pub fn tell_to_leave(&mut self, m: &ToWorker) {
        self.send(m);
        self.state = match self.state {
            WorkerState::Killed { .. } => WorkerState::Killed { draining: true },
            _ => WorkerState::Draining,
        };
    }

    /// SIGKILL; the exit is handled when reaped, like any other.
    pub fn kill(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        self.state = WorkerState::Killed {
            draining: self.is_draining(),
        };
    }
}

impl Generation {
    /// Open the generation's log files and resolve its identity; no worker yet.
    pub fn new(id: u64, config: Arc<Config>, state: GenState) -> Result<Generation, String> {
        let identity = Identity::resolve(&config.user, &config.group)?;
        if !identity.switch {
            warn!(
                "not running as root: workers keep this user instead of `{}`",
                config.user
            );
        }
        let log_files = startup::open_access_logs(&config, identity.owner())?;
        let error_log = match config.error_log.as_deref() {
            Some(p) => Some(OwnedFd::from(startup::open_log(p, identity.owner())?)),
            None => None,
        };
        let tls = crate::tls::build(&config)?;
        for w in crate::tls::expiry_warnings(&config) {
            warn!("{w}");
        }
        let slots = (0..config.workers)
            .map(|_| Slot {
                failures: 0,
                respawn_at: None,
            })
            .collect();
        Ok(Generation {
            id,
            config,
            identity,
            log_files,
            error_log,
            tls,
            state,
            hold_accept: false,
            started: Instant::now(),
            slots,
            workers: Vec::new(),
            admin: Vec::new(),
        })
    }

    pub fn is_draining(&self) -> bool {
        matches!(self.state, GenState::Draining { .. })
    }

    /// Silence after which a worker of this generation counts as hung.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.config.heartbeat_timeout
    }

    /// How long this generation's workers may take to drain.
    pub fn shutdown_timeout(&self) -> Duration {
        self.config.shutdown_timeout
    }

    /// Fork the worker of `slot` on `listeners` (`(server index, listener)` of this config).
    pub fn spawn_worker(
        &mut self,
        slot: usize,
        listeners: &[(usize, BorrowedFd<'_>)],
    ) -> Result<(), String> {
        let (pid, channel) = spawn(self, slot, listeners)?;
        rproxy_shared::debug!("started worker {pid} (generation {}, slot {slot})", self.id);
        let now = Instant::now();
        self.workers.push(Worker {
            pid,
            slot,
            channel: Some(channel),
            state: WorkerState::Starting,
            started: now,
            ready_at: None,
            last_beat: now,
        });
        Ok(())
    }

    /// Every slot has a worker that said Ready and was not killed.
    pub fn all_ready(&self) -> bool {
        (0..self.slots.len()).all(|s| {
            self.workers
                .iter()
                .any(|w| w.slot == s && w.ready_at.is_some() && !w.is_killed())
        })
    }

    /// SIGKILL every worker (a generation given up on, or a stop past its deadline).
    pub fn kill_all(&mut self) {
        for w in &mut self.workers {
            w.kill();
        }
    }
}
