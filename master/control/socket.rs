//! The control socket as a file: created 0600 (its directory 0755 when missing), a stale one
//! from a crashed master replaced only when nothing answers on it, and unlinked at exit only
//! while it is still ours (another master, after an upgrade, may own that path by then).

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    connect, getsockopt, socket, sockopt::PeerCredentials, AddressFamily, SockFlag, SockType,
    UnixAddr,
};
use nix::sys::stat::{umask, Mode};

/// A bound control socket and the inode it made, so that it unlinks only its own file.
pub struct Bound {
    pub listener: UnixListener,
    pub path: PathBuf,
    inode: (u64, u64),
    /// Whether dropping this removes the file (not once it was handed to a new master).
    owns_file: bool,
}

impl Bound {
    /// The socket a binary upgrade's old master handed over, listening at `path`. The file
    /// stays the old master's until [`Bound::own_file`] (the upgrade committed): a new master
    /// that fails before must not remove it under the old one.
    pub fn adopt(path: &Path, fd: std::os::fd::OwnedFd) -> Result<Bound, String> {
        let fail = |why: String| format!("control-socket {}: inherited: {why}", path.display());
        let listener = UnixListener::from(fd);
        let local = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        if local.as_pathname() != Some(path) {
            return Err(fail(format!("the socket is bound to {local:?}")));
        }
        Bound::new(listener, path, false).map_err(fail)
    }

    /// `listener`, non-blocking, bound at `path` (whose inode it records).
    fn new(listener: UnixListener, path: &Path, owns_file: bool) -> Result<Bound, String> {
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let m = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
        Ok(Bound {
            listener,
            path: path.to_path_buf(),
            inode: (m.dev(), m.ino()),
            owns_file,
        })
    }

    /// From now on, dropping this removes the file (the new master of a committed upgrade).
    pub fn own_file(&mut self) {
        self.owns_file = true;
    }

    /// Close this master's copy without removing the file: the new master of an upgrade
    /// listens on the same socket.
    pub fn release(mut self) {
        self.owns_file = false;
    }
}

/// Bind `path` for the master. Errors say which key and why, for the start-up report.
pub fn bind(path: &Path) -> Result<Bound, String> {
    let fail = |why: String| format!("control-socket {}: {why}", path.display());
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .and_then(|()| {
                    // Whatever the umask: `rproxy ctl` of the master's user must reach it.
                    std::fs::set_permissions(
                        dir,
                        std::os::unix::fs::PermissionsExt::from_mode(0o755),
                    )
                });
            made.map_err(|e| fail(format!("cannot create directory {}: {e}", dir.display())))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match answers(path) {
            Ok(true) => {
                return Err(fail(
                    "another process answers on it (is rproxy already running?)".into(),
                ))
            }
            Ok(false) => {
                std::fs::remove_file(path)
                    .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
                rproxy_shared::info!("removed a stale control socket {}", path.display());
            }
            Err(e) => return Err(fail(format!("exists and cannot be checked: {e}"))),
        },
        Ok(_) => return Err(fail("exists and is not a socket".into())),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    // bind(2) creates the file with the umask's mode: 0600 from the start, no window in which
    // another user could connect. The master is single-threaded, so nothing else sees it.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(|e| fail(e.to_string()))?;
    Bound::new(listener, path, true).map_err(fail)
}

/// Whether a process listens on the socket at `path`. The connection attempt never blocks: a
/// listener whose backlog is full (a wedged master) counts as answering.
fn answers(path: &Path) -> Result<bool, Errno> {
    let s = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    match connect(std::os::fd::AsRawFd::as_raw_fd(&s), &addr) {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Ok(true),
        Err(Errno::ECONNREFUSED) => Ok(false),
        Err(e) => Err(e),
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let ours = self.owns_file
            && std::fs::symlink_metadata(&self.path)
                .is_ok_and(|m| (m.dev(), m.ino()) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Who is on the other end of a control connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub pid: i32,
}

/// The connecting process's credentials, as the kernel recorded them at `connect(2)`.
pub fn peer(s: &impl AsFd) -> Result<Peer, String> {
    let c = getsockopt(s, PeerCredentials).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    Ok(Peer {
        uid: c.uid(),
        pid: c.pid(),
    })
}

/// Root and the master's own user may use the socket (the file's mode already keeps others
/// out; this holds even if someone loosens it).
pub fn allowed(p: Peer) -> bool {
    p.uid == 0 || p.uid == nix::unistd::geteuid().as_raw()
}
