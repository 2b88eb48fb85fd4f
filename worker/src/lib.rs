//! rproxy's worker process: tokio runtime, accept, HTTP server, routes, downstream pools,
//! access log, heartbeats. Entered once per worker, right after fork and privilege drop, by [`run`].
//!
//! A worker is one thread running a current-thread tokio runtime (like an nginx worker), and
//! the kernel spreads connections over workers. So the request path takes no lock and no
//! atomic of its own; on a plain connection tokio's are paid per turn of the worker rather
//! than per request: its sockets' readiness (`net`) and its task (`conn_tasks`) are the
//! worker's, in plain cells.
//!
//! The files follow the life of a connection (DESIGN section 2): `accept` -> `tls` -> `http`
//! -> `h1::conn` (HTTP/1.1 on rproxy's own codec: `h1::head` parses and frames, `route`,
//! `h1::edit` writes the forwarded head, `h1::upstream` runs the exchange on a `pool` lease,
//! `h1::body` relays bodies) -> `access_log`. HTTP/2 clients: `http::serve_h2` (hyper) ->
//! `head` (method, target, Host) -> `route` -> `forward` -> the same `h1::upstream` exchange ->
//! `respond` -> `access_log`. Failures are `error::ProxyError`, classified once. `server` builds what the
//! stages share, once per `[[server]]`.

#![deny(clippy::undocumented_unsafe_blocks)]

mod accept;
mod access_log;
mod body;
mod clock;
mod conn_tasks;
mod control;
mod error;
mod forward;
pub mod h1;
mod handoff;
mod head;
mod headers;
mod http;
mod lb;
mod metrics;
mod net;
mod parked;
mod passthrough;
mod pool;
mod respond;
mod rewrite;
mod route;
mod server;
mod state;
#[cfg(test)]
mod testing;
mod timed_io;
mod tls;

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;

use openssl::ssl::SslContext;
use rproxy_shared::channel::{AdminState, WorkerEnd};
use rproxy_shared::config::Config;
use rproxy_shared::errlog;

use crate::server::ServerCtx;
use crate::state::WorkerState;

/// What the master hands a new worker.
pub struct WorkerArgs {
    pub config: Arc<Config>,
    pub generation: u64,
    /// `(server index, listening socket)`.
    pub listeners: Vec<(usize, OwnedFd)>,
    /// Access-log files in `config.access_log_paths()` order.
    pub log_files: Vec<OwnedFd>,
    /// The TLS context of each server in `config.servers` order (`None`: plain), built by the
    /// master before fork.
    pub tls: Vec<Option<SslContext>>,
    pub channel: WorkerEnd,
    /// Forked by a new master during a binary upgrade: say Ready with the listeners adopted,
    /// accept only once the master sends `Accept` (the upgrade committed).
    pub hold_accept: bool,
    /// `(server index, downstream index, state)` for downstreams an operator took out of
    /// rotation (`rproxy ctl set downstream`), in force from the worker's first request.
    pub admin: Vec<(usize, usize, AdminState)>,
}

/// Serve until drained or stopped; returns the process exit status.
pub fn run(args: WorkerArgs) -> i32 {
    errlog::set_level(args.config.log_level);
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
    local.block_on(&rt, clock::marking_turns(net::hosting(serve(args))))
}

async fn serve(args: WorkerArgs) -> i32 {
    let WorkerArgs {
        config,
        generation,
        listeners,
        log_files,
        tls,
        channel,
        hold_accept,
        admin,
    } = args;
    let state = WorkerState::new(Arc::clone(&config), log_files, hold_accept, admin);
    metrics::init(&config);
    for (index, listener) in listeners {
        let server = match ServerCtx::start(&config, index, &state) {
            Ok(s) => s,
            Err(e) => {
                rproxy_shared::error!("{e}");
                return 1;
            }
        };
        let tls = tls
            .get(index)
            .cloned()
            .flatten()
            .map(|ctx| Rc::new(tls::Acceptor::new(ctx, &config.servers[index])));
        tokio::task::spawn_local(accept::accept_loop(listener, server, tls));
    }
    tokio::task::spawn_local(access_log::flusher(Rc::clone(&state)));
    let counted = Rc::clone(&state);
    tokio::task::spawn_local(h1::buffers::trimmer(move || {
        counted
            .conns
            .get()
            .saturating_sub(counted.idle.len() as u64)
    }));
    tokio::task::spawn_local(control::run(Rc::clone(&state), channel));
    rproxy_shared::debug!("generation {generation} worker serving");
    state.wait_done().await;
    state.idle.clear();
    access_log::flush_all(&state);
    control::say_exiting(&state);
    0
}
