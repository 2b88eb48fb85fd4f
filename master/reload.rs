//! Reload (SIGHUP, DESIGN section 3): load and validate the file with the same code as `-t`;
//! bind the listeners new to it, fork a new generation while the old one serves on; when every
//! new worker is Ready, the new generation takes over, the older ones drain, and listeners no
//! configuration uses any more are closed. Any failure leaves the master as it was.

use std::sync::Arc;
use std::time::Instant;

use rproxy_shared::channel::ToWorker;
use rproxy_shared::config::Config;
use rproxy_shared::{error, info, warn};

use crate::generation::GenState;
use crate::health::START_GRACE;
use crate::notify;
use crate::privileges::Identity;
use crate::startup;
use crate::supervisor::Master;

impl Master {
    pub(crate) fn reload(&mut self) {
        if self.stop.is_some() {
            return;
        }
        if self.gens.iter().any(|g| g.state == GenState::Starting) || self.upgrade.busy() {
            // One reload (or upgrade) at a time; this one runs when the current one is done.
            self.reload_queued = true;
            return;
        }
        notify::reloading();
        self.reload_begun();
        info!("reloading {}", self.config_path.display());
        let config = match rproxy_shared::load::load(&self.config_path) {
            Ok(c) => c,
            Err(errs) => {
                for e in &errs.0 {
                    error!("reload failed: {e}");
                }
                reload_failed(&format!("{} error(s) in the configuration", errs.0.len()));
                self.reload_finished(Some(errs.0.iter().map(|e| e.to_string()).collect()));
                return;
            }
        };
        let config = Arc::new(config);
        // Before anything else changes: a metrics address that cannot be bound fails the
        // reload. (If the new generation then fails, metrics stay on the new address.)
        if let Err(e) = self.scrape.rebind(config.metrics_listen) {
            reload_failed(&e);
            return;
        }
        let result = self
            .listeners
            .bind_for(&config)
            .and_then(|()| self.start_generation(Arc::clone(&config), GenState::Starting));
        if let Err(e) = result {
            // Listeners bound for the failed configuration alone are closed again.
            self.close_unused_listeners();
            reload_failed(&e);
            self.reload_finished(Some(vec![e]));
            return;
        }
        // Only once the new generation exists: a failed reload leaves the master as it was.
        if let Err(e) = apply_globals(&config) {
            warn!("reload: {e}");
        }
    }

    /// The new generation is Ready: it takes over, the others drain.
    pub(crate) fn promote(&mut self, id: u64) {
        let now = Instant::now();
        let old = self.current;
        self.current = id;
        crate::metrics::reload_done(true);
        let mut draining: Vec<usize> = Vec::new();
        for (gi, g) in self.gens.iter_mut().enumerate() {
            if g.id == id {
                g.state = GenState::Active;
            } else if g.state == GenState::Active {
                g.state = GenState::Draining {
                    deadline: now + g.shutdown_timeout(),
                };
            }
            if g.is_draining() {
                draining.push(gi);
            }
            if g.id != id {
                for w in g.workers.iter_mut().filter(|w| !w.is_draining()) {
                    w.tell_to_leave(&ToWorker::Drain);
                }
            }
        }
        // At most two old generations drain at once (`gens` is oldest first): kill the oldest
        // beyond that.
        while draining.len() > 2 {
            let oldest = &mut self.gens[draining.remove(0)];
            warn!(
                "a third generation would be draining: killing generation {}",
                oldest.id
            );
            oldest.kill_all();
        }
        self.close_unused_listeners();
        info!("reload complete: generation {id} serving, generation {old} draining");
        notify::status(&format!("serving (generation {id})"));
        notify::ready("serving");
        self.reload_finished(None);
        self.after_reload();
    }

    fn after_reload(&mut self) {
        if std::mem::take(&mut self.reload_queued) {
            self.reload();
        }
    }

    /// A reload whose generation never became ready: give up on it, keep the old one.
    pub(crate) fn give_up_stuck_reload(&mut self, now: Instant) {
        let stuck: Vec<u64> = self
            .gens
            .iter()
            .filter(|g| {
                g.state == GenState::Starting
                    && now.duration_since(g.started) > g.heartbeat_timeout() + START_GRACE * 2
            })
            .map(|g| g.id)
            .collect();
        for id in stuck {
            self.abandon_generation(id);
            let why = format!("the workers of generation {id} did not become ready");
            reload_failed(&why);
            self.reload_finished(Some(vec![why]));
            self.after_reload();
        }
    }

    /// Draining generations past shutdown-timeout: their remaining workers are killed.
    pub(crate) fn kill_late_drainers(&mut self, now: Instant) {
        for g in &mut self.gens {
            let GenState::Draining { deadline } = g.state else {
                continue;
            };
            if now < deadline {
                continue;
            }
            for w in g.workers.iter_mut().filter(|w| !w.is_killed()) {
                warn!(
                    "worker {} (generation {}) still draining at shutdown-timeout: killing it",
                    w.pid, g.id
                );
                w.kill();
            }
        }
    }

    fn abandon_generation(&mut self, id: u64) {
        for g in self.gens.iter_mut().filter(|g| g.id == id) {
            g.kill_all();
            // Reaped like a draining generation, never respawned.
            g.state = GenState::Draining {
                deadline: Instant::now(),
            };
        }
        self.close_unused_listeners();
    }

    /// Listeners only the serving (or starting) configuration may keep. Draining workers hold
    /// their own copies until they stop accepting, so a removed port closes as they drain.
    pub(crate) fn close_unused_listeners(&mut self) {
        let live = self
            .gens
            .iter()
            .filter(|g| !g.is_draining())
            .map(|g| g.config.as_ref());
        for addr in self.listeners.retain(live) {
            info!("closed listener {addr}");
        }
    }
}

fn reload_failed(why: &str) {
    crate::metrics::reload_done(false);
    error!("reload failed: {why}; the previous configuration keeps serving");
    notify::status("reload failed: previous configuration serving");
    notify::ready("serving");
}

/// Global settings that take effect in the master itself.
fn apply_globals(config: &Config) -> Result<(), String> {
    rproxy_shared::errlog::set_level(config.log_level);
    let identity = Identity::resolve(&config.user, &config.group)?;
    startup::open_error_log(config.error_log.as_deref(), identity.owner())?;
    startup::memtrim(config.memtrim);
    Ok(())
}
