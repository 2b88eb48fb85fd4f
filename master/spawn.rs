//! Forking one worker: the channel, then in the child everything that must happen before it
//! may touch the network (DESIGN section 3): signal mask reset, its generation's error log on
//! descriptor 2, closing what it must not hold, privilege drop, no new privileges, process name; then the worker crate takes over and never returns here.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{fork, ForkResult, Pid};
use rproxy_shared::channel::{self, MasterEnd, WorkerEnd};

use crate::generation::Generation;

/// Fork the worker of `slot` of `generation`, on `listeners` (`(server index, listener)` for
/// each server of its configuration). Returns its PID and the master's end of its channel.
pub fn spawn(
    generation: &Generation,
    slot: usize,
    listeners: &[(usize, BorrowedFd<'_>)],
) -> Result<(Pid, MasterEnd), String> {
    let (master_end, worker_end) = channel::pair().map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: the master is single-threaded, so the child starts from a consistent state.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { child } => Ok((child, master_end)),
        ForkResult::Child => {
            let code = child_main(generation, slot, listeners, worker_end);
            // _exit: never run the master's destructors or flush its buffers a second time.
            // SAFETY: ends this (child) process; nothing of the master's state is used again.
            unsafe { libc::_exit(code) }
        }
    }
}

fn child_main(
    generation: &Generation,
    slot: usize,
    listeners: &[(usize, BorrowedFd<'_>)],
    chan: WorkerEnd,
) -> i32 {
    rproxy_shared::errlog::set_worker();
    // The master blocks its signals for signalfd; a worker must see SIGTERM and friends.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);

    #[cfg(feature = "test-faults")]
    if let Some(path) = std::env::var_os("RPROXY_TEST_FAULT_FILE") {
        // Test-only fault injection: a worker that dies at start-up while this file exists.
        if std::path::Path::new(&path).exists() {
            return 3;
        }
    }

    if let Some(f) = &generation.error_log {
        if let Err(e) = nix::unistd::dup2_stderr(f) {
            rproxy_shared::error!("worker (slot {slot}): cannot use its error log: {e}");
            return 2;
        }
    }
    let mut keep: Vec<RawFd> = vec![0, 1, 2, chan.as_raw_fd()];
    keep.extend(listeners.iter().map(|(_, fd)| fd.as_raw_fd()));
    keep.extend(generation.log_files.iter().map(|f| f.as_raw_fd()));
    if let Err(e) = close_all_but(&mut keep) {
        rproxy_shared::error!("worker (slot {slot}): cannot close inherited descriptors: {e}");
        return 2;
    }

    if let Err(e) = generation.identity.drop_to() {
        rproxy_shared::error!("cannot drop privileges: {e}");
        return 2;
    }
    // No exec'd program (none today; a library might) can gain privileges through set-uid bits
    // or file capabilities.
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        rproxy_shared::error!("prctl(PR_SET_NO_NEW_PRIVS): {e}");
        return 2;
    }
    // The name is cosmetic (ps, top): a failure is not worth refusing to serve.
    let _ = nix::sys::prctl::set_name(c"rproxy-worker");

    let listeners = listeners
        .iter()
        .map(|(i, fd)| (*i, adopt(fd.as_raw_fd())))
        .collect();
    let log_files = generation
        .log_files
        .iter()
        .map(|f| adopt(f.as_raw_fd()))
        .collect();
    rproxy_worker::run(rproxy_worker::WorkerArgs {
        config: Arc::clone(&generation.config),
        generation: generation.id,
        listeners,
        log_files,
        tls: generation.tls.clone(),
        channel: chan,
        hold_accept: generation.hold_accept,
        admin: generation.admin.clone(),
    })
}

/// Ownership of an inherited descriptor for the worker, which will close it when done.
fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` is open (it was kept by `close_all_but`) and now ours alone: the master's
    // `OwnedFd` for it in this address space (in `Listeners` or the generation) is never
    // dropped or used, because the child ends with `_exit`.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Close every descriptor above 2 except `keep`: the other workers' channels, listeners the
/// worker's configuration does not use, the master's signalfd. A descriptor left open here
/// would leak a privileged resource into an unprivileged process, so an error is fatal.
fn close_all_but(keep: &mut Vec<RawFd>) -> std::io::Result<()> {
    keep.sort_unstable();
    keep.dedup();
    let mut from: libc::c_uint = 0;
    for &k in keep.iter() {
        let k = k as libc::c_uint;
        if k > from {
            close_range(from, k - 1)?;
        }
        from = k + 1;
    }
    close_range(from, libc::c_uint::MAX)
}

fn close_range(first: libc::c_uint, last: libc::c_uint) -> std::io::Result<()> {
    // SAFETY: closes descriptors of this (child) process only; the `OwnedFd`s of the master
    // that refer to them are never dropped or used for I/O here (the child `_exit`s).
    if unsafe { libc::close_range(first, last, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
