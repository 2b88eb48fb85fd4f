//! systemd notification (Type=notify). Only the master notifies; outside systemd
//! (no NOTIFY_SOCKET) every call is a no-op.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// False while this master must say nothing to systemd: the new master of a binary upgrade
/// until it commits (it is not the main PID yet, so systemd would refuse it anyway), and the
/// old one once it handed over (it must not send STOPPING=1 as it exits).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Stop (false) or resume (true) sending notifications from this process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() || !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        rproxy_shared::warn!("sd_notify failed: {e}");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// A binary upgrade commits: `MAINPID=<new>` and `READY=1` in one datagram (systemd applies
/// MAINPID first, so this is one atomic hand-off). Only the current main PID may send it
/// (`NotifyAccess=main`): the old master, before it goes quiet.
pub fn hand_over(new_pid: u32, status: &str) {
    send(&[
        NotifyState::MainPid(new_pid),
        NotifyState::Ready,
        NotifyState::Status(status),
    ]);
}

/// `sd_notify_barrier()`: returns once systemd has processed every message sent before (or
/// after `timeout`). systemd closes the pipe end it receives with `BARRIER=1` after the
/// messages queued before it; the old master waits for that before it lets the new one
/// serve, so the MAINPID hand-off cannot be overtaken by its own exit.
pub fn barrier(timeout: Duration) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = try_barrier(&path, timeout) {
        rproxy_shared::warn!("sd_notify barrier: {e}");
    }
}

fn try_barrier(path: &std::ffi::OsStr, timeout: Duration) -> Result<(), String> {
    use std::io::IoSlice;
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::ffi::OsStrExt;

    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{
        sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
    };

    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name),
        None => UnixAddr::new(bytes),
    }
    .map_err(|e| format!("NOTIFY_SOCKET: {e}"))?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let (rx, tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let fds = [tx.as_raw_fd()];
    sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(b"BARRIER=1")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        Some(&addr),
    )
    .map_err(|e| format!("sendmsg: {e}"))?;
    drop(tx);
    let mut pfd = [PollFd::new(rx.as_fd(), PollFlags::POLLIN)];
    let ms =
        PollTimeout::try_from(timeout.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::NONE);
    match poll(&mut pfd, ms) {
        Ok(0) => Err(format!("no answer in {} ms", timeout.as_millis())),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("poll: {e}")),
    }
}

/// Whether we run under systemd (then we never daemonize: systemd tracks the main PID).
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some() || std::env::var_os("INVOCATION_ID").is_some()
}
