//! The hand-over of a hot binary upgrade (`upgrade.rs` drives it): what the old master gives
//! the new one over the socketpair the new one inherits, and the few messages they exchange
//! afterwards.
//!
//! The socketpair is `AF_UNIX` `SOCK_SEQPACKET` (message boundaries kept); its end in the new
//! master is named by `RPROXY_UPGRADE_FD` and is the only descriptor it inherits besides 0-2.
//! Old -> new, right after the fork (a versioned text manifest, descriptors by `SCM_RIGHTS`):
//! ```text
//! rproxy-upgrade 1\nold-pid 1234\n         the version line first: anything else is refused
//! fds\nlistener 127.0.0.1:8080\nsession-cache\nticket-keys\npid-file /run/rproxy.pid\n
//!                                         one line per attached descriptor, in order; at most
//!                                         BATCH per message, as many messages as needed
//! end                                     the manifest is complete
//! ```
//! New -> old: `ready <pid> <1 if it took over the pid file, else 0>` once its workers are
//! Ready (holding, not accepting), or `failed <reason>` before it exits. Old -> new: `commit`;
//! new -> old: `accepting` once its workers were told to accept (the old workers drain then,
//! so some worker accepts at every instant).
//! Nothing in the manifest is trusted: each listener is checked with `getsockname` and
//! `SO_ACCEPTCONN` (`Listeners::adopt`), each shared region by its stamp (`shm.rs`).
//!
//! In the new master, what was received waits here until the part of start-up that needs it
//! takes it (listeners: `Master::run`; TLS state: `tls.rs`, `ticket_keys.rs`; the pid file:
//! `startup::write_pid_file`).

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use rproxy_shared::channel::AdminState;

/// The environment variable naming the new master's end of the socketpair.
pub const ENV: &str = "RPROXY_UPGRADE_FD";
/// The manifest version this binary writes and reads. A new binary that cannot read the old
/// one's says so (`failed`) and the old master keeps serving.
pub const VERSION: u32 = 1;
/// Descriptors per message (the kernel's SCM_MAX_FD is 253).
const BATCH: usize = 200;
/// Largest message.
const MAX_MSG: usize = 64 * 1024;
/// How long the new master waits for each part of the manifest.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// What one handed-over descriptor is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A listening TCP socket bound to this address.
    Listener(SocketAddr),
    /// The TLS session cache region (`session_cache.rs`).
    SessionCache,
    /// The ticket key ring (`ticket_keys.rs`).
    TicketKeys,
    /// The locked pid file at this path: the lock belongs to the open file, so the new master
    /// holding it keeps the file locked after the old one exits.
    PidFile(PathBuf),
    /// The control socket listening at this path: `rproxy ctl` never finds it missing or
    /// answered by nobody, and the new master does not refuse it as another master's.
    ControlSocket(PathBuf),
    /// The `metrics-listen` socket bound to this address (a fresh bind would find it in use).
    MetricsListener(SocketAddr),
}

impl Item {
    fn line(&self) -> Option<String> {
        Some(match self {
            Item::Listener(a) => format!("listener {a}"),
            Item::SessionCache => "session-cache".into(),
            Item::TicketKeys => "ticket-keys".into(),
            Item::PidFile(p) => format!("pid-file {}", one_line(p)?),
            Item::ControlSocket(p) => format!("control-socket {}", one_line(p)?),
            Item::MetricsListener(a) => format!("metrics-listener {a}"),
        })
    }

    fn parse(line: &str) -> Result<Item, String> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match (word, rest) {
            ("listener", a) => a
                .parse()
                .map(Item::Listener)
                .map_err(|_| format!("bad listener address {a:?}")),
            ("session-cache", "") => Ok(Item::SessionCache),
            ("ticket-keys", "") => Ok(Item::TicketKeys),
            ("pid-file", p) if !p.is_empty() => Ok(Item::PidFile(PathBuf::from(p))),
            ("control-socket", p) if !p.is_empty() => Ok(Item::ControlSocket(PathBuf::from(p))),
            ("metrics-listener", a) => a
                .parse()
                .map(Item::MetricsListener)
                .map_err(|_| format!("bad metrics listener address {a:?}")),
            _ => Err(format!("unknown manifest line {line:?}")),
        }
    }
}

/// A path as one manifest line, or `None` (not sent) when it cannot be one.
fn one_line(p: &Path) -> Option<&str> {
    p.to_str().filter(|s| !s.contains('\n'))
}

/// The message that carries the operator's downstream states (`rproxy ctl set downstream`),
/// one `STATE SERVER NAME` line each (NAME last: it may hold spaces), so a downstream taken out
/// of rotation stays out across the upgrade.
pub fn admin_message(states: &[(String, String, AdminState)]) -> Option<String> {
    let mut text = String::from("admin\n");
    for (server, name, state) in states {
        if server.contains([' ', '\n']) || name.contains('\n') {
            continue;
        }
        text.push_str(&format!("{} {server} {name}\n", state.name()));
    }
    (text.len() > "admin\n".len()).then_some(text)
}

/// The states of an `admin` message.
pub fn parse_admin(text: &str) -> Result<Vec<(String, String, AdminState)>, String> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut parts = line.splitn(3, ' ');
        let (Some(state), Some(server), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("bad admin line {line:?}"));
        };
        let state = match state {
            "ready" => AdminState::Ready,
            "drain" => AdminState::Drain,
            "maint" => AdminState::Maint,
            _ => return Err(format!("bad admin state in {line:?}")),
        };
        out.push((server.to_string(), name.to_string(), state));
    }
    Ok(out)
}

/// The first message: version and the old master's PID.
pub fn hello(old_pid: u32) -> String {
    format!("rproxy-upgrade {VERSION}\nold-pid {old_pid}\n")
}

/// The old master's PID from the first message, or why this binary cannot go on.
pub fn parse_hello(text: &str) -> Result<u32, String> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let version = first
        .strip_prefix("rproxy-upgrade ")
        .ok_or_else(|| format!("not an rproxy upgrade manifest: {first:?}"))?;
    if version != VERSION.to_string() {
        return Err(format!(
            "manifest version {version} is not supported by this binary (it reads version \
             {VERSION})"
        ));
    }
    lines
        .find_map(|l| l.strip_prefix("old-pid "))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| "the manifest has no old-pid".into())
}

/// One batch message's items, in attachment order.
pub fn parse_batch(text: &str) -> Result<Vec<Item>, String> {
    let mut lines = text.lines();
    if lines.next() != Some("fds") {
        return Err(format!("expected a descriptor batch, got {text:?}"));
    }
    lines.map(Item::parse).collect()
}

/// What the new master tells the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromNew {
    /// Every worker is Ready and holding; `pid_file`: it took over the pid file.
    Ready { pid: u32, pid_file: bool },
    /// It could not start; it exits.
    Failed(String),
}

impl FromNew {
    pub fn encode(&self) -> String {
        match self {
            FromNew::Ready { pid, pid_file } => format!("ready {pid} {}", u8::from(*pid_file)),
            FromNew::Failed(why) => format!("failed {why}"),
        }
    }

    pub fn parse(text: &str) -> Option<FromNew> {
        if let Some(why) = text.strip_prefix("failed ") {
            return Some(FromNew::Failed(why.to_string()));
        }
        let mut w = text.strip_prefix("ready ")?.split(' ');
        let pid = w.next()?.parse().ok()?;
        let pid_file = match w.next()? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        w.next()
            .is_none()
            .then_some(FromNew::Ready { pid, pid_file })
    }
}

/// The word the old master sends when it has handed the service over.
pub const COMMIT: &str = "commit";
/// The new master's answer once its workers were told to accept: the old one's drain now.
pub const ACCEPTING: &str = "accepting";

// ---------------------------------------------------------------------------------------------
// Sending and receiving on the socketpair.

/// Send one message with `fds` attached (blocking: the socket has room for a manifest).
pub fn send(link: BorrowedFd<'_>, text: &str, fds: &[RawFd]) -> Result<(), String> {
    let iov = [IoSlice::new(text.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(link.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("upgrade channel: {e}")),
            Ok(_) => return Ok(()),
        }
    }
}

/// The whole manifest: hello, batches of descriptors, end.
pub fn send_manifest(
    link: BorrowedFd<'_>,
    old_pid: u32,
    items: &[(Item, BorrowedFd<'_>)],
    admin: Option<&str>,
) -> Result<(), String> {
    send(link, &hello(old_pid), &[])?;
    let lines: Vec<(String, RawFd)> = items
        .iter()
        .filter_map(|(i, fd)| i.line().map(|l| (l, fd.as_raw_fd())))
        .collect();
    for chunk in lines.chunks(BATCH) {
        let mut text = String::from("fds\n");
        for (l, _) in chunk {
            text.push_str(l);
            text.push('\n');
        }
        let fds: Vec<RawFd> = chunk.iter().map(|(_, fd)| *fd).collect();
        send(link, &text, &fds)?;
    }
    if let Some(text) = admin {
        send(link, text, &[])?;
    }
    send(link, "end", &[])
}

/// What a receive found.
#[derive(Debug)]
pub enum Incoming {
    Message(String, Vec<OwnedFd>),
    /// Nothing waiting (non-blocking receive only).
    Nothing,
    /// The other side closed its end (exited).
    Closed,
}

/// Receive one message; `wait`: how long to block for it (`None`: do not block).
pub fn recv(link: BorrowedFd<'_>, wait: Option<Duration>) -> Result<Incoming, String> {
    if let Some(t) = wait {
        let mut pfd = [PollFd::new(link, PollFlags::POLLIN)];
        let ms =
            PollTimeout::try_from(t.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::NONE);
        match poll(&mut pfd, ms) {
            Ok(0) => return Err(format!("upgrade channel: nothing for {} s", t.as_secs())),
            Ok(_) => {}
            Err(e) => return Err(format!("upgrade channel: poll: {e}")),
        }
    }
    let mut buf = vec![0u8; MAX_MSG];
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut reset_seen = false;
    let msg = loop {
        match recvmsg::<()>(
            link.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(Incoming::Nothing),
            // The peer closed with our manifest unread: the kernel reports that once, before
            // whatever the peer sent last (its `failed` reason), which is still queued.
            Err(Errno::ECONNRESET) if !reset_seen => reset_seen = true,
            Err(Errno::ECONNRESET) => return Ok(Incoming::Closed),
            Err(e) => return Err(format!("upgrade channel: {e}")),
            Ok(m) => break m,
        }
    };
    let mut fds = Vec::new();
    let cmsgs = msg.cmsgs().map_err(|e| format!("upgrade channel: {e}"))?;
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(list) = c {
            // SAFETY: the kernel just installed these descriptors for us; nothing else owns them.
            fds.extend(list.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) || msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err("upgrade channel: a message was truncated".into());
    }
    let n = msg.bytes;
    if n == 0 && fds.is_empty() {
        return Ok(Incoming::Closed);
    }
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    Ok(Incoming::Message(text, fds))
}

// ---------------------------------------------------------------------------------------------
// The new master's side: what it inherited, until start-up takes it.

/// What the old master handed over, waiting to be taken.
#[derive(Default)]
struct Inherited {
    listeners: Vec<(SocketAddr, OwnedFd)>,
    session_cache: Option<OwnedFd>,
    ticket_keys: Option<OwnedFd>,
    pid_file: Option<(PathBuf, OwnedFd)>,
    control_socket: Option<(PathBuf, OwnedFd)>,
    metrics_listener: Option<(SocketAddr, OwnedFd)>,
    admin: Vec<(String, String, AdminState)>,
    /// Whether `take_pid_file` gave the pid file to start-up (told to the old master).
    took_pid_file: bool,
}

static INHERITED: Mutex<Option<Inherited>> = Mutex::new(None);

/// The new master's end of the socketpair and the old master's PID, from the environment
/// (read once; the variable is removed so nothing forked later sees it).
fn link() -> Option<&'static (OwnedFd, u32)> {
    static LINK: OnceLock<Option<(OwnedFd, u32)>> = OnceLock::new();
    LINK.get_or_init(|| {
        let raw: RawFd = std::env::var(ENV).ok()?.parse().ok()?;
        std::env::remove_var(ENV);
        // SAFETY: F_GETFD only checks that the number is an open descriptor.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            return None;
        }
        // SAFETY: the old master put this descriptor here for us alone, and this OnceLock
        // takes it once; close-on-exec again so no later upgrade child inherits it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        // SAFETY: getppid cannot fail. The old master is our parent until it exits, and it
        // cannot exit before it commits (it waits for us), so this is its PID.
        let old = unsafe { libc::getppid() } as u32;
        Some((fd, old))
    })
    .as_ref()
}

/// Whether this process is the new master of a binary upgrade.
pub fn is_new_master() -> bool {
    link().is_some()
}

/// The new master's channel to the old one.
pub fn new_side_link() -> Option<BorrowedFd<'static>> {
    use std::os::fd::AsFd;
    link().map(|(fd, _)| fd.as_fd())
}

/// In the new master: read the whole manifest (blocking, bounded) and keep what it carries
/// for start-up. Returns the old master's PID; `Ok(None)` when this is no upgrade.
pub fn receive() -> Result<Option<u32>, String> {
    let Some((fd, parent)) = link() else {
        return Ok(None);
    };
    use std::os::fd::AsFd;
    let fd = fd.as_fd();
    let first = match recv(fd, Some(RECV_TIMEOUT))? {
        Incoming::Message(t, _) => t,
        _ => return Err("upgrade: the old master closed the channel".into()),
    };
    let old_pid = parse_hello(&first).map_err(|e| format!("upgrade: {e}"))?;
    if old_pid != *parent {
        return Err(format!(
            "upgrade: the manifest is from pid {old_pid}, our parent is {parent}"
        ));
    }
    let mut got = Inherited::default();
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (text, fds) = match recv(fd, Some(left.max(Duration::from_millis(1))))? {
            Incoming::Message(t, f) => (t, f),
            _ => return Err("upgrade: the old master closed the channel".into()),
        };
        if text == "end" {
            break;
        }
        if text.starts_with("admin\n") && fds.is_empty() {
            got.admin = parse_admin(&text).map_err(|e| format!("upgrade: {e}"))?;
            continue;
        }
        let items = parse_batch(&text).map_err(|e| format!("upgrade: {e}"))?;
        if items.len() != fds.len() {
            return Err(format!(
                "upgrade: {} descriptors announced, {} received",
                items.len(),
                fds.len()
            ));
        }
        for (item, fd) in items.into_iter().zip(fds) {
            match item {
                Item::Listener(a) => got.listeners.push((a, fd)),
                Item::SessionCache => got.session_cache = Some(fd),
                Item::TicketKeys => got.ticket_keys = Some(fd),
                Item::PidFile(p) => got.pid_file = Some((p, fd)),
                Item::ControlSocket(p) => got.control_socket = Some((p, fd)),
                Item::MetricsListener(a) => got.metrics_listener = Some((a, fd)),
            }
        }
    }
    rproxy_shared::info!(
        "upgrade: master {old_pid} handed over {} listener(s){}{}",
        got.listeners.len(),
        if got.session_cache.is_some() {
            ", the TLS session cache"
        } else {
            ""
        },
        if got.ticket_keys.is_some() {
            ", the ticket keys"
        } else {
            ""
        },
    );
    *lock() = Some(got);
    Ok(Some(old_pid))
}

fn lock() -> std::sync::MutexGuard<'static, Option<Inherited>> {
    INHERITED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The inherited listeners `(address in the manifest, socket)`, once.
pub fn take_listeners() -> Vec<(SocketAddr, OwnedFd)> {
    lock()
        .as_mut()
        .map(|i| std::mem::take(&mut i.listeners))
        .unwrap_or_default()
}

/// The inherited TLS session cache region, once.
pub fn take_session_cache() -> Option<OwnedFd> {
    lock().as_mut()?.session_cache.take()
}

/// The inherited ticket key ring, once.
pub fn take_ticket_keys() -> Option<OwnedFd> {
    lock().as_mut()?.ticket_keys.take()
}

/// The old master's control socket, when it listens at `path` (the configuration kept it).
pub fn take_control_socket(path: &Path) -> Option<OwnedFd> {
    let mut guard = lock();
    let inh = guard.as_mut()?;
    match inh.control_socket.take()? {
        (p, fd) if p == path => Some(fd),
        _ => None,
    }
}

/// The old master's metrics listener, when it is bound to `addr`.
pub fn take_metrics_listener(addr: SocketAddr) -> Option<OwnedFd> {
    let mut guard = lock();
    let inh = guard.as_mut()?;
    match inh.metrics_listener.take()? {
        (a, fd) if a == addr => Some(fd),
        _ => None,
    }
}

/// The operator's downstream states the old master had, once.
pub fn take_admin() -> Vec<(String, String, AdminState)> {
    lock()
        .as_mut()
        .map(|i| std::mem::take(&mut i.admin))
        .unwrap_or_default()
}

/// The old master's locked pid file, when it is the file at `path` (the same inode): the new
/// master shares its lock and leaves the content to the old one, which writes the new PID
/// at commit.
pub fn take_pid_file(path: &Path) -> Option<OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    let mut guard = lock();
    let inh = guard.as_mut()?;
    let (p, fd) = inh.pid_file.take()?;
    let on_disk = std::fs::symlink_metadata(path).ok()?;
    let file = std::fs::File::from(fd);
    let held = file.metadata().ok()?;
    if p != path || on_disk.ino() != held.ino() || on_disk.dev() != held.dev() {
        return None;
    }
    inh.took_pid_file = true;
    Some(OwnedFd::from(file))
}

/// After the commit: close what the new configuration did not take (a pid file at another
/// path, TLS state of a configuration without TLS). A later reload that needs TLS state
/// makes it fresh.
pub fn discard_unused() {
    if let Some(i) = lock().as_mut() {
        i.listeners.clear();
        i.session_cache = None;
        i.ticket_keys = None;
        i.pid_file = None;
        i.control_socket = None;
        i.metrics_listener = None;
    }
}

/// Whether start-up took over the old master's pid file.
pub fn took_pid_file() -> bool {
    lock().as_ref().is_some_and(|i| i.took_pid_file)
}

/// In the new master: tell the old one why start-up failed (it logs it and keeps serving).
/// A no-op in any other process.
pub fn report_failure(why: &str) {
    if let Some(fd) = new_side_link() {
        let _ = send(fd, &FromNew::Failed(why.replace('\n', " ")).encode(), &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_unknown_lines_are_refused() {
        let items = [
            Item::Listener("127.0.0.1:8080".parse().unwrap()),
            Item::Listener("[::1]:443".parse().unwrap()),
            Item::SessionCache,
            Item::TicketKeys,
            Item::PidFile("/run/rproxy dir/rproxy.pid".into()),
        ];
        let mut text = String::from("fds\n");
        for i in &items {
            text.push_str(&i.line().unwrap());
            text.push('\n');
        }
        assert_eq!(parse_batch(&text).unwrap(), items);
        assert!(parse_batch("fds\nsomething-new\n").is_err());
        assert!(parse_batch("listener 1.2.3.4:5\n").is_err());
        assert!(Item::PidFile("/a\nb".into()).line().is_none());
    }

    #[test]
    fn versions_other_than_ours_are_refused() {
        assert_eq!(parse_hello(&hello(42)).unwrap(), 42);
        assert!(parse_hello("rproxy-upgrade 2\nold-pid 1\n")
            .unwrap_err()
            .contains("version 2"));
        assert!(parse_hello("hello\n").is_err());
        assert!(parse_hello("rproxy-upgrade 1\n").is_err());
    }

    #[test]
    fn replies_round_trip() {
        for m in [
            FromNew::Ready {
                pid: 7,
                pid_file: true,
            },
            FromNew::Ready {
                pid: 8,
                pid_file: false,
            },
            FromNew::Failed("config: bad key".into()),
        ] {
            assert_eq!(FromNew::parse(&m.encode()), Some(m));
        }
        assert_eq!(FromNew::parse("ready x 1"), None);
        assert_eq!(FromNew::parse("ready 1 2"), None);
        assert_eq!(FromNew::parse("nonsense"), None);
    }

    /// A manifest larger than one batch arrives whole, descriptors in order.
    #[test]
    fn manifest_batches_keep_descriptors_in_order() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsFd;
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let files: Vec<std::fs::File> = (0..BATCH + 5)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let items: Vec<(Item, BorrowedFd<'_>)> = files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let addr = SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
                (Item::Listener(addr), f.as_fd())
            })
            .collect();
        // The receiver drains concurrently: the socket buffer need not hold it all.
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let first = match recv(b.as_fd(), Some(Duration::from_secs(5))).unwrap() {
                Incoming::Message(t, _) => t,
                other => panic!("{other:?}"),
            };
            assert_eq!(parse_hello(&first).unwrap(), 99);
            loop {
                match recv(b.as_fd(), Some(Duration::from_secs(5))).unwrap() {
                    Incoming::Message(t, _) if t == "end" => break,
                    Incoming::Message(t, fds) => {
                        let items = parse_batch(&t).unwrap();
                        assert_eq!(items.len(), fds.len());
                        got.extend(items);
                    }
                    other => panic!("{other:?}"),
                }
            }
            got
        });
        send_manifest(a.as_fd(), 99, &items, None).unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got.len(), BATCH + 5);
        assert_eq!(got[BATCH + 4], items[BATCH + 4].0);
    }
}
