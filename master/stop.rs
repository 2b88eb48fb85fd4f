//! Graceful (QUIT) and fast (TERM, INT) stop: every worker is told to leave, and whatever is
//! still running at the deadline is killed; the master exits once no worker is left.

use std::time::{Duration, Instant};

use rproxy_shared::channel::ToWorker;
use rproxy_shared::{info, warn};

use crate::notify;
use crate::supervisor::Master;

/// After a fast stop, how long workers get before SIGKILL.
const FAST_STOP: Duration = Duration::from_millis(1500);

/// A stop in progress, and when the workers still running get SIGKILL.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    Graceful { deadline: Instant },
    Fast { deadline: Instant },
}

impl Master {
    /// How long the slowest generation's workers may take to drain (`shutdown-timeout`).
    pub(crate) fn longest_shutdown_timeout(&self) -> Duration {
        self.gens
            .iter()
            .map(|g| g.shutdown_timeout())
            .max()
            .unwrap_or(Duration::from_secs(30))
    }

    pub(crate) fn graceful_stop(&mut self) {
        if self.stop.is_some() {
            return;
        }
        self.abort_upgrade("graceful stop");
        notify::stopping();
        let timeout = self.longest_shutdown_timeout();
        info!(
            "graceful stop: draining {} workers (up to {} s)",
            self.workers().count(),
            timeout.as_secs()
        );
        self.stop = Some(Stop::Graceful {
            deadline: Instant::now() + timeout + Duration::from_secs(1),
        });
        for w in self.workers_mut().filter(|w| !w.is_draining()) {
            w.tell_to_leave(&ToWorker::Drain);
        }
    }

    pub(crate) fn fast_stop(&mut self) {
        if matches!(self.stop, Some(Stop::Fast { .. })) {
            return;
        }
        self.abort_upgrade("fast stop");
        notify::stopping();
        info!("fast stop");
        self.stop = Some(Stop::Fast {
            deadline: Instant::now() + FAST_STOP,
        });
        for w in self.workers_mut() {
            w.tell_to_leave(&ToWorker::Stop);
        }
    }

    /// While stopping: true once every worker is gone; kills the rest at the deadline.
    pub(crate) fn stop_timers(&mut self, now: Instant) -> bool {
        let Some(Stop::Graceful { deadline } | Stop::Fast { deadline }) = self.stop else {
            return false;
        };
        if self.workers().next().is_none() {
            return true;
        }
        if now >= deadline && !self.killed_all {
            warn!("workers still running at the stop deadline: killing them");
            for g in &mut self.gens {
                g.kill_all();
            }
            self.killed_all = true;
        }
        false
    }
}
