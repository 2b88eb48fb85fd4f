//! One-time process set-up of the master: file limit, daemon mode (and the pipe that tells the
//! starting process how the start went), pid file, error log; and the files the master opens as
//! root (DESIGN section 11).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{
    dup2_stderr, dup2_stdin, dup2_stdout, fchown, fork, pipe, setsid, ForkResult, Gid, Uid,
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

/// The daemon's end of the pipe to the process that started it (daemon mode only).
static STARTER: Mutex<Option<File>> = Mutex::new(None);

/// Classic double fork: the daemon has no terminal. The starting process waits on a pipe until
/// the daemon says it is ready ([`report_ready`]: exit 0) or failed ([`report_failure`]: the
/// message on its stderr, exit 1), so a start-up error is never lost behind an exit status 0;
/// a daemon that dies before either also makes it exit 1.
pub fn daemonize() -> Result<(), String> {
    // The new master of a binary upgrade is the child of a daemon already: forking away
    // would look to the old master like the new one exiting.
    if crate::handover::is_new_master() {
        return Ok(());
    }
    let (rx, tx) = pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the master is single-threaded at this point.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => {
            drop(tx);
            std::process::exit(wait_for_daemon(File::from(rx)))
        }
        ForkResult::Child => drop(rx),
    }
    setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: as above.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    *STARTER.lock().unwrap_or_else(|p| p.into_inner()) = Some(File::from(tx));
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

/// The starting process: `R` is ready (0); `E` + message is a failure (1), as is an end of
/// file before either (the daemon died).
fn wait_for_daemon(mut rx: File) -> i32 {
    let mut msg = Vec::new();
    let _ = rx.read_to_end(&mut msg);
    match msg.split_first() {
        Some((b'R', _)) => 0,
        Some((b'E', text)) => {
            eprintln!("rproxy: {}", String::from_utf8_lossy(text));
            1
        }
        _ => {
            eprintln!("rproxy: the daemon exited before it was ready (see the error log)");
            1
        }
    }
}

fn tell_starter(msg: &[u8]) {
    if let Some(mut f) = STARTER.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = f.write_all(msg);
    }
}

/// Every worker of the first generation is ready: the starting process may exit 0.
pub fn report_ready() {
    tell_starter(b"R");
}

/// Start-up failed: the starting process prints `why` and exits 1.
pub fn report_failure(why: &str) {
    crate::handover::report_failure(why);
    let mut msg = Vec::with_capacity(why.len() + 1);
    msg.push(b'E');
    msg.extend_from_slice(why.as_bytes());
    tell_starter(&msg);
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

/// Open a log file for appending as the master (root), and make it owned by the workers' user
/// so it looks like theirs to logrotate's `create`. DESIGN section 11 (nginx CVE-2016-1247: a
/// worker user who can write the log directory must not get a root-only file chowned to it):
/// the last component is never followed (`O_NOFOLLOW`), the file must be regular (checked on
/// the descriptor; `O_NONBLOCK` so that a FIFO planted there cannot block the open), and the
/// ownership is changed through the descriptor, never by path. Created 0640.
pub fn open_log(path: &Path, owner: Option<(Uid, Gid)>) -> Result<File, String> {
    let f = open_regular(
        OpenOptions::new().append(true).create(true).mode(0o640),
        path,
    )?;
    if let Some((u, g)) = owner {
        if Uid::effective().is_root() {
            fchown(f.as_fd(), Some(u), Some(g))
                .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
        }
    }
    Ok(f)
}

/// `opts` + `O_NOFOLLOW | O_NONBLOCK` on `path`, refused unless it is a regular file.
fn open_regular(opts: &mut OpenOptions, path: &Path) -> Result<File, String> {
    let f = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!(
                "{} is a symbolic link: refused (the master opens files without following links)",
                path.display()
            ),
            _ => format!("cannot open {}: {e}", path.display()),
        })?;
    let m = f
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if !m.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
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

/// The pid file, locked (`flock`) for as long as the master runs: a second master on the same
/// file is refused instead of overwriting it. Dropping it releases the lock; [`PidFile::remove`]
/// also removes the file.
pub struct PidFile {
    lock: Flock<File>,
}

/// Write our PID into `path` (0644, `O_NOFOLLOW`, regular file, exclusive lock). The new
/// master of a binary upgrade takes the old one's open file instead (same lock; the old
/// master writes the new PID into it when it commits).
pub fn write_pid_file(path: &Path) -> Result<PidFile, String> {
    if let Some(fd) = crate::handover::take_pid_file(path) {
        let lock = Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| format!("pid-file {}: {e}", path.display()))?;
        crate::upgrade::remember_pid_file(path, &lock);
        return Ok(PidFile { lock });
    }
    let f = open_regular(
        OpenOptions::new().write(true).create(true).mode(0o644),
        path,
    )
    .map_err(|e| format!("pid-file: {e}"))?;
    let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| format!("pid-file {}: {e} (another rproxy holds it)", path.display()))?;
    let mut f: &File = &lock;
    let ctx = |e: std::io::Error| format!("pid-file {}: {e}", path.display());
    f.set_len(0).map_err(ctx)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(ctx)?;
    writeln!(f, "{}", std::process::id()).map_err(ctx)?;
    crate::upgrade::remember_pid_file(path, &lock);
    Ok(PidFile { lock })
}

impl PidFile {
    /// Remove the file, if it is still the one we locked and names us, then release the
    /// lock. A file naming another PID was handed over in a binary upgrade (to the new master
    /// after a commit, or back to the old one when this new master failed): the lock belongs
    /// to the open file both share, so it is left held and the file in place.
    pub fn remove(self, path: &Path) {
        let same_file = match (std::fs::symlink_metadata(path), self.lock.metadata()) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        let mut content = String::new();
        let _ = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .and_then(|mut f| f.read_to_string(&mut content));
        if content.trim() != std::process::id().to_string() {
            // Dropping the Flock would unlock the shared open file: close without unlocking.
            std::mem::forget(self.lock);
            return;
        }
        if same_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Warn when group or others may write the configuration file: whoever can write it controls
/// what the root master opens and runs as (DESIGN section 11).
pub fn check_config_mode(path: &Path) {
    if let Ok(m) = std::fs::metadata(path) {
        if m.mode() & 0o022 != 0 {
            eprintln!(
                "rproxy: {}: warning: group or others can write this configuration (mode {:o})",
                path.display(),
                m.mode() & 0o7777
            );
        }
    }
}
