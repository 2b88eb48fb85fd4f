//! rproxy's worker process: tokio runtime, accept, HTTP server, downstream pools, access log,
//! heartbeats. Entered once per worker, right after fork and privilege drop, by [`run`].
//!
//! A worker is one thread running a current-thread tokio runtime (like an nginx worker): no
//! locks or atomics on the request path, and the kernel spreads connections over workers.

#![deny(clippy::undocumented_unsafe_blocks)]

mod access_log;
mod body;
mod control;
mod framing;
mod headers;
pub mod lb;
mod pool;
mod proxy;
pub mod rewrite;
mod server;
mod state;
mod timed_io;

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;

use http::HeaderName;
use rproxy_shared::config::Config;
use rproxy_shared::errlog::{self, Level};

use crate::access_log::AccessLog;
use crate::pool::{Pool, Route};
use crate::proxy::ServerCtx;
use crate::state::WorkerState;

/// What the master hands a new worker.
pub struct WorkerArgs {
    pub config: Arc<Config>,
    pub generation: u64,
    /// `(server index, listening socket)`.
    pub listeners: Vec<(usize, OwnedFd)>,
    /// Access-log files in `config.access_log_paths()` order.
    pub log_files: Vec<OwnedFd>,
    pub channel: OwnedFd,
}

/// Serve until drained or stopped; returns the process exit status.
pub fn run(args: WorkerArgs) -> i32 {
    errlog::set_level(Level::parse(&args.config.log_level).unwrap_or(Level::Info));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            rproxy_shared::error!("cannot start the worker runtime: {e}");
            return 1;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(args))
}

async fn serve(args: WorkerArgs) -> i32 {
    let WorkerArgs {
        config,
        generation,
        listeners,
        log_files,
        channel,
    } = args;
    let state = WorkerState::new(Arc::clone(&config), log_files);
    for (index, listener) in listeners {
        let cfg = &config.server[index];
        let pool = Pool::new(cfg);
        pool.start();
        state.pools.borrow_mut().push(Rc::clone(&pool));
        let members = cfg
            .downstream
            .iter()
            .enumerate()
            .filter(|(_, d)| d.enabled)
            .map(|(i, _)| i)
            .collect();
        let log = AccessLog::new(&config, cfg.logging.as_ref(), &state);
        if let Some(l) = &log {
            state.access_logs.borrow_mut().push(Rc::clone(l));
        }
        let extension_names = cfg
            .headers
            .x509_extension
            .iter()
            .filter_map(|x| HeaderName::from_bytes(x.name.to_ascii_lowercase().as_bytes()).ok())
            .collect();
        let ctx = Rc::new(ServerCtx {
            config: Arc::clone(&config),
            index,
            pool,
            route: Rc::new(Route::new(members, cfg.lb_method)),
            state: Rc::clone(&state),
            log,
            extension_names,
        });
        tokio::task::spawn_local(server::accept_loop(listener, ctx));
    }
    tokio::task::spawn_local(access_log::flusher(Rc::clone(&state)));
    tokio::task::spawn_local(control::run(Rc::clone(&state), channel));
    rproxy_shared::debug!("generation {generation} worker serving");
    state.wait_done().await;
    access_log::flush_all(&state);
    control::say_exiting(&state);
    0
}
