//! Log reopen (SIGUSR1, for logrotate): the master opens every log file again as root (owned
//! by the worker user) and sends each worker its generation's files over its channel; the
//! workers put them in place of their old descriptors.

use std::os::fd::OwnedFd;

use rproxy_shared::channel::{LogFiles, ToWorker};
use rproxy_shared::{error, info};

use crate::startup;
use crate::supervisor::Master;

impl Master {
    pub(crate) fn reopen_logs(&mut self) {
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
            let access_logs = match startup::open_access_logs(&g.config, owner) {
                Ok(f) => f,
                Err(e) => {
                    error!("reopening access logs of generation {}: {e}", g.id);
                    continue;
                }
            };
            let error_log = match g
                .config
                .error_log
                .as_deref()
                .map(|p| startup::open_log(p, owner))
            {
                None => None,
                Some(Ok(f)) => Some(OwnedFd::from(f)),
                Some(Err(e)) => {
                    error!("reopening the error log for generation {}: {e}", g.id);
                    None
                }
            };
            let message = ToWorker::ReopenLogs(LogFiles {
                access_logs,
                error_log,
            });
            for w in &g.workers {
                let Some(chan) = &w.channel else {
                    continue;
                };
                match chan.send(&message) {
                    Ok(()) => self.reopen_pending += 1,
                    Err(e) => error!("sending log files to worker {}: {e}", w.pid),
                }
            }
            // Workers forked from now on inherit the new files.
            if let ToWorker::ReopenLogs(files) = message {
                g.log_files = files.access_logs;
                if files.error_log.is_some() {
                    g.error_log = files.error_log;
                }
            }
        }
    }
}
