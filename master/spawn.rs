//! Forking one worker: the channel, then in the child everything that must happen before it
//! may touch the network (DESIGN section 3): signal mask reset, closing what it must not hold,
//! privilege drop, process name; then the worker crate takes over and never returns here.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{fork, ForkResult, Pid};
use rproxy_shared::channel;
use rproxy_shared::config::Config;

use crate::privileges::Identity;

/// What a new worker inherits.
pub struct Inherit<'a> {
    pub config: &'a Arc<Config>,
    pub generation: u64,
    pub identity: Identity,
    /// `(server index, listener)` for each server of `config`.
    pub listeners: &'a [(usize, RawFd)],
    /// Access-log files in `config.access_log_paths()` order.
    pub log_files: &'a [RawFd],
}

/// Fork a worker. Returns its PID and the master's end of its channel.
pub fn spawn(inherit: &Inherit<'_>) -> Result<(Pid, OwnedFd), String> {
    let (master_end, worker_end) = channel::pair().map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: the master is single-threaded, so the child starts from a consistent state.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { child } => Ok((child, master_end)),
        ForkResult::Child => {
            let code = child_main(inherit, worker_end);
            // _exit: never run the master's destructors or flush its buffers a second time.
            // SAFETY: terminating the child process.
            unsafe { libc::_exit(code) }
        }
    }
}

fn child_main(inherit: &Inherit<'_>, chan: OwnedFd) -> i32 {
    rproxy_shared::errlog::set_worker();
    // The master blocks its signals for signalfd; a worker must see SIGTERM and friends.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);

    if let Some(path) = std::env::var_os("RPROXY_TEST_FAULT_FILE") {
        // Test-only fault injection: a worker that dies at start-up while this file exists.
        if std::path::Path::new(&path).exists() {
            return 3;
        }
    }

    let mut keep: Vec<RawFd> = vec![0, 1, 2, chan.as_raw_fd()];
    keep.extend(inherit.listeners.iter().map(|(_, fd)| *fd));
    keep.extend(inherit.log_files.iter().copied());
    close_all_but(&mut keep);

    if let Err(e) = inherit.identity.drop_to() {
        rproxy_shared::error!("cannot drop privileges: {e}");
        return 2;
    }
    set_name("rproxy-worker");

    // SAFETY (all three): these descriptors were inherited and are now ours alone; the
    // master's copies in this address space are never dropped because we `_exit`.
    let listeners = inherit
        .listeners
        .iter()
        .map(|(i, fd)| (*i, unsafe { OwnedFd::from_raw_fd(*fd) }))
        .collect();
    let log_files = inherit
        .log_files
        .iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect();
    rproxy_worker::run(rproxy_worker::WorkerArgs {
        config: Arc::clone(inherit.config),
        generation: inherit.generation,
        listeners,
        log_files,
        channel: chan,
    })
}

/// Close every descriptor above 2 except `keep`: the other workers' channels, listeners the
/// worker's configuration does not use, the master's signalfd.
fn close_all_but(keep: &mut Vec<RawFd>) {
    keep.sort_unstable();
    keep.dedup();
    let mut from: libc::c_uint = 0;
    for &k in keep.iter() {
        let k = k as libc::c_uint;
        if k > from {
            // SAFETY: closes a range of descriptors of this (child) process.
            unsafe { libc::close_range(from, k - 1, 0) };
        }
        from = k + 1;
    }
    unsafe { libc::close_range(from, libc::c_uint::MAX, 0) };
}

fn set_name(name: &str) {
    if let Ok(c) = CString::new(name) {
        // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated string.
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
}
