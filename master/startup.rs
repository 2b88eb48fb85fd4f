//! One-time process set-up of the master: file limit, daemon mode, pid file, error log.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{
    chown, dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid, ForkResult, Gid, Uid,
};
use rproxy_shared::config::Config;

/// RLIMIT_NOFILE to `max-nofile`; when the hard limit is lower and we cannot raise it, go as
/// high as allowed and say so.
pub fn raise_nofile(want: u64) {
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return;
    }
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            let soft = want.min(hard);
            let _ = setrlimit(Resource::RLIMIT_NOFILE, soft, hard);
            rproxy_shared::warn!(
                "max-nofile {want}: the hard limit is {hard}, using {soft} descriptors"
            );
        }
        Err(e) => rproxy_shared::warn!("getrlimit(RLIMIT_NOFILE): {e}"),
    }
}

/// `mallopt(M_TRIM_THRESHOLD)` when `memtrim-sz` > 0 (inherited by workers).
pub fn memtrim(threshold: Option<libc::c_int>) {
    if let Some(v) = threshold {
        // SAFETY: mallopt only tunes glibc's allocator.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, v) };
    }
}

/// Classic double fork: the parent returns to the shell, the daemon has no terminal.
pub fn daemonize() -> Result<(), String> {
    // SAFETY: the master is single-threaded at this point.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: as above.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    let _ = std::env::set_current_dir("/");
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    dup2_stdin(&null).map_err(|e| format!("dup2 /dev/null: {e}"))?;
    dup2_stdout(&null).map_err(|e| format!("dup2 /dev/null: {e}"))?;
    // stderr stays as it is when `error-log` already replaced it with a file.
    if !has_error_log_file() {
        dup2_stderr(&null).map_err(|e| format!("dup2 /dev/null: {e}"))?;
    }
    Ok(())
}

/// Set once descriptor 2 is a log file, so daemon mode does not send it to /dev/null.
static ERROR_LOG_FILE: AtomicBool = AtomicBool::new(false);

fn has_error_log_file() -> bool {
    ERROR_LOG_FILE.load(Ordering::Relaxed)
}

/// Point descriptor 2 at `path` (created owned by the worker identity so workers may write to
/// it after a reopen too). Used at start-up and on SIGUSR1.
pub fn open_error_log(path: Option<&Path>, owner: Option<(Uid, Gid)>) -> Result<(), String> {
    let Some(path) = path else {
        return Ok(());
    };
    let f = open_log(path, owner)?;
    dup2_stderr(&f).map_err(|e| format!("dup2 {}: {e}", path.display()))?;
    ERROR_LOG_FILE.store(true, Ordering::Relaxed);
    Ok(())
}

/// Open a log file for appending as the master (root), and make it owned by the workers'
/// user so it looks like theirs to logrotate's `create`.
pub fn open_log(path: &Path, owner: Option<(Uid, Gid)>) -> Result<std::fs::File, String> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if let Some((u, g)) = owner {
        if Uid::effective().is_root() {
            chown(path, Some(u), Some(g))
                .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
        }
    }
    Ok(f)
}

/// Open every access-log file of `config`, in `access_log_paths()` order (what workers expect).
pub fn open_access_logs(
    config: &Config,
    owner: Option<(Uid, Gid)>,
) -> Result<Vec<OwnedFd>, String> {
    config
        .access_log_paths()
        .iter()
        .map(|p| open_log(p, owner).map(OwnedFd::from))
        .collect()
}

/// Write our PID; the file is removed at exit.
pub fn write_pid_file(path: &Path) -> Result<(), String> {
    let mut f =
        std::fs::File::create(path).map_err(|e| format!("pid-file {}: {e}", path.display()))?;
    writeln!(f, "{}", std::process::id()).map_err(|e| format!("pid-file {}: {e}", path.display()))
}

pub fn remove_pid_file(path: &Path) {
    let _ = std::fs::remove_file(path);
}
