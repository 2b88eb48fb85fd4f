//! The master<->worker channel: one `AF_UNIX` `SOCK_SEQPACKET` socketpair per worker, so every
//! message keeps its boundaries, with file descriptors passed by `SCM_RIGHTS` (log reopen).
//! Both sides encode and decode here, so they cannot disagree about a message, and each end is
//! a [`Channel`] that owns its descriptor: nobody can write to a channel number after it was
//! closed (and perhaps reused by another socket).

#![deny(clippy::undocumented_unsafe_blocks)]

use std::io::{IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use self::wire::Message;

/// Largest encoded message: a metrics update of [`MAX_METRICS`] values fits (a worker sends
/// several when more changed, see `worker/src/metrics.rs`).
const MAX_MSG: usize = 16 * 1024;
/// Most `(series, value)` pairs in one [`ToMaster::Metrics`] message.
pub const MAX_METRICS: usize = (MAX_MSG - 5) / 12;
/// Most descriptors one message may carry (one per log file of a worker).
const MAX_FDS: usize = 64;

/// What a worker tells the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMaster {
    /// Listeners adopted, runtime up: the worker can take traffic.
    Ready,
    /// Sent every second; a worker silent for `heartbeat-timeout` is killed and replaced.
    Heartbeat(Heartbeat),
    /// The new log descriptors are in use and the old ones flushed and closed.
    LogsReopened,
    /// The worker is leaving on its own (drained or stopped).
    Exiting,
    /// Metrics that changed since the last update (see [`MetricsUpdate`]).
    Metrics(MetricsUpdate),
    /// Answer to [`ToWorker::SetAdmin`] number `seq`: applied, or refused (`ok == false`: no
    /// such server or downstream in this worker's configuration).
    AdminApplied { seq: u32, ok: bool },
}

/// Current values of some of a worker's metrics: cumulative counters and gauges, numbered by
/// `rproxy_shared::metrics::Layout` of the worker's configuration. At most [`MAX_METRICS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsUpdate {
    /// `Layout::len()` of the sender's configuration: the master refuses an update numbered
    /// for another layout.
    pub layout_len: u32,
    pub values: Vec<(u32, u64)>,
}

/// An operator's state for one downstream (`rproxy ctl set downstream`, HAProxy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminState {
    /// In rotation (the default).
    Ready,
    /// No new request; in-flight ones finish, pooled connections stay established.
    Drain,
    /// No new request; in-flight ones finish, idle pooled connections are closed and none is
    /// opened again until `ready`.
    Maint,
}

impl AdminState {
    /// The word `ctl` and `show downstreams` use.
    pub fn name(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    fn code(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        }
    }

    fn from_code(c: u8) -> Option<AdminState> {
        match c {
            0 => Some(AdminState::Ready),
            1 => Some(AdminState::Drain),
            2 => Some(AdminState::Maint),
            _ => None,
        }
    }
}

/// Counters a worker reports with each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Client connections open now.
    pub connections: u64,
    /// Requests handled since the worker started.
    pub requests: u64,
    /// Downstreams with at least one established connection.
    pub downstreams_up: u32,
    /// Enabled downstreams.
    pub downstreams_total: u32,
}

/// What the master tells a worker.
#[derive(Debug)]
pub enum ToWorker {
    /// Stop accepting, finish in-flight requests, close keep-alive connections after their
    /// next response, exit when idle or at `shutdown-timeout`.
    Drain,
    /// Close everything and exit now.
    Stop,
    /// Freshly opened log files to put in place of the worker's own.
    ReopenLogs(LogFiles),
    /// Start accepting: sent to the workers of a new master once a binary upgrade commits
    /// (they were forked holding their listeners without accepting).
    Accept,
    /// Put downstream `downstream` of server `server` (indices in the worker's own
    /// configuration, which the master knows per generation) in `state`; answered with
    /// [`ToMaster::AdminApplied`] carrying `seq`.
    SetAdmin {
        seq: u32,
        server: u32,
        downstream: u32,
        state: AdminState,
    },
}

/// The log files of one reopen. On the wire the message states how many access logs it carries
/// and whether the error log follows them, and a receiver refuses a message whose attached
/// descriptors do not add up, so no side relies on a convention about their order.
#[derive(Debug, Default)]
pub struct LogFiles {
    /// One per access log, in `Config::access_log_paths()` order.
    pub access_logs: Vec<OwnedFd>,
    /// The error log, when the configuration has one (it goes onto descriptor 2).
    pub error_log: Option<OwnedFd>,
}

/// What [`Channel::recv`] found.
#[derive(Debug)]
pub enum Received<M> {
    /// One whole message.
    Message(M),
    /// A message this side cannot decode (unknown type, bad length, descriptors that do not
    /// match); it was dropped, with any descriptors it carried.
    Unknown,
    /// The peer closed its end: it exited, or is exiting.
    Closed,
    /// Nothing to read now (the channel is non-blocking).
    Empty,
}

/// One end of a master<->worker socketpair: sends `S`, receives `R`. It owns the descriptor, so
/// once the end is dropped nothing can write to that descriptor number again.
pub struct Channel<S, R> {
    fd: OwnedFd,
    messages: PhantomData<fn(&S) -> R>,
}

/// The master's end of a worker's channel.
pub type MasterEnd = Channel<ToWorker, ToMaster>;
/// A worker's end of its channel.
pub type WorkerEnd = Channel<ToMaster, ToWorker>;

/// A connected pair: `(master end, worker end)`, both non-blocking and close-on-exec.
pub fn pair() -> nix::Result<(MasterEnd, WorkerEnd)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    Ok((Channel::new(a), Channel::new(b)))
}

impl<S: Message, R: Message> Channel<S, R> {
    fn new(fd: OwnedFd) -> Self {
        Channel {
            fd,
            messages: PhantomData,
        }
    }

    /// Send one message (with its descriptors, if it carries any).
    pub fn send(&self, m: &S) -> nix::Result<()> {
        let mut buf = [0u8; MAX_MSG];
        let (n, fds) = m.encode(&mut buf);
        if fds.len() > MAX_FDS {
            return Err(Errno::E2BIG);
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let iov = [IoSlice::new(&buf[..n])];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(Errno::EINTR) => continue,
                r => return r.map(|_| ()),
            }
        }
    }

    /// Receive one message, if one is waiting.
    pub fn recv(&self) -> nix::Result<Received<R>> {
        let mut buf = [0u8; MAX_MSG];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(Received::Empty),
                r => break r?,
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(list) = c {
                // SAFETY: the kernel just installed these descriptors in our table for us, and
                // nothing else refers to them.
                fds.extend(list.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        let (n, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_CTRUNC));
        if n == 0 && fds.is_empty() {
            return Ok(Received::Closed);
        }
        if truncated {
            return Ok(Received::Unknown);
        }
        Ok(R::decode(&buf[..n], fds).map_or(Received::Unknown, Received::Message))
    }
}

impl<S, R> AsFd for Channel<S, R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl<S, R> AsRawFd for Channel<S, R> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The wire format. The trait is public only so it can bound [`Channel`]'s methods; it lives
/// in a private module so no other crate can implement or call it.
mod wire {
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

    use super::{
        AdminState, Heartbeat, LogFiles, MetricsUpdate, ToMaster, ToWorker, MAX_METRICS, MAX_MSG,
    };

    const T_READY: u8 = 1;
    const T_HEARTBEAT: u8 = 2;
    const T_LOGS_REOPENED: u8 = 3;
    const T_EXITING: u8 = 4;
    // 5 is `AdminApplied` (the control socket's acknowledgement).
    const T_ADMIN_APPLIED: u8 = 5;
    const T_METRICS: u8 = 6;
    const T_DRAIN: u8 = 10;
    const T_STOP: u8 = 11;
    const T_REOPEN: u8 = 12;
    const T_ACCEPT: u8 = 13;
    const T_SET_ADMIN: u8 = 14;

    pub trait Message: Sized {
        /// The bytes into `buf` (returns their length) and the descriptors to attach.
        fn encode(&self, buf: &mut [u8; MAX_MSG]) -> (usize, Vec<BorrowedFd<'_>>);
        /// `None` when the bytes are not a message or the descriptors do not match it.
        fn decode(b: &[u8], fds: Vec<OwnedFd>) -> Option<Self>;
    }

    impl Message for ToMaster {
        fn encode(&self, buf: &mut [u8; MAX_MSG]) -> (usize, Vec<BorrowedFd<'_>>) {
            let n = match self {
                ToMaster::Ready => {
                    buf[0] = T_READY;
                    1
                }
                ToMaster::LogsReopened => {
                    buf[0] = T_LOGS_REOPENED;
                    1
                }
                ToMaster::Exiting => {
                    buf[0] = T_EXITING;
                    1
                }
                ToMaster::Heartbeat(h) => {
                    buf[0] = T_HEARTBEAT;
                    buf[1..9].copy_from_slice(&h.connections.to_le_bytes());
                    buf[9..17].copy_from_slice(&h.requests.to_le_bytes());
                    buf[17..21].copy_from_slice(&h.downstreams_up.to_le_bytes());
                    buf[21..25].copy_from_slice(&h.downstreams_total.to_le_bytes());
                    25
                }
                ToMaster::Metrics(m) => encode_metrics(m, buf),
                ToMaster::AdminApplied { seq, ok } => {
                    buf[0] = T_ADMIN_APPLIED;
                    buf[1..5].copy_from_slice(&seq.to_le_bytes());
                    buf[5] = u8::from(*ok);
                    6
                }
            };
            (n, Vec::new())
        }

        fn decode(b: &[u8], fds: Vec<OwnedFd>) -> Option<ToMaster> {
            if !fds.is_empty() {
                return None;
            }
            match *b.first()? {
                T_READY if b.len() == 1 => Some(ToMaster::Ready),
                T_LOGS_REOPENED if b.len() == 1 => Some(ToMaster::LogsReopened),
                T_EXITING if b.len() == 1 => Some(ToMaster::Exiting),
                T_HEARTBEAT if b.len() == 25 => Some(ToMaster::Heartbeat(Heartbeat {
                    connections: u64::from_le_bytes(b[1..9].try_into().ok()?),
                    requests: u64::from_le_bytes(b[9..17].try_into().ok()?),
                    downstreams_up: u32::from_le_bytes(b[17..21].try_into().ok()?),
                    downstreams_total: u32::from_le_bytes(b[21..25].try_into().ok()?),
                })),
                T_METRICS => decode_metrics(&b[1..]).map(ToMaster::Metrics),
                T_ADMIN_APPLIED if b.len() == 6 && b[5] <= 1 => Some(ToMaster::AdminApplied {
                    seq: u32::from_le_bytes(b[1..5].try_into().ok()?),
                    ok: b[5] == 1,
                }),
                _ => None,
            }
        }
    }

    /// `[T_METRICS, layout_len u32, (series u32, value u64)...]`, little-endian. Values past
    /// [`MAX_METRICS`] are not sent (the worker never gives more).
    fn encode_metrics(m: &MetricsUpdate, buf: &mut [u8; MAX_MSG]) -> usize {
        buf[0] = T_METRICS;
        buf[1..5].copy_from_slice(&m.layout_len.to_le_bytes());
        let mut n = 5;
        for (id, v) in m.values.iter().take(MAX_METRICS) {
            buf[n..n + 4].copy_from_slice(&id.to_le_bytes());
            buf[n + 4..n + 12].copy_from_slice(&v.to_le_bytes());
            n += 12;
        }
        n
    }

    fn decode_metrics(b: &[u8]) -> Option<MetricsUpdate> {
        let (len, rest) = b.split_first_chunk::<4>()?;
        if rest.len() % 12 != 0 {
            return None;
        }
        let values = rest
            .chunks_exact(12)
            .map(|c| {
                let (id, v) = c.split_at(4);
                Some((
                    u32::from_le_bytes(id.try_into().ok()?),
                    u64::from_le_bytes(v.try_into().ok()?),
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(MetricsUpdate {
            layout_len: u32::from_le_bytes(*len),
            values,
        })
    }

    impl Message for ToWorker {
        /// `ReopenLogs` is `[T_REOPEN, access-log count, 1 if the error log follows]`, with
        /// the access logs attached in order, then the error log.
        fn encode(&self, buf: &mut [u8; MAX_MSG]) -> (usize, Vec<BorrowedFd<'_>>) {
            match self {
                ToWorker::Drain => {
                    buf[0] = T_DRAIN;
                    (1, Vec::new())
                }
                ToWorker::Stop => {
                    buf[0] = T_STOP;
                    (1, Vec::new())
                }
                ToWorker::Accept => {
                    buf[0] = T_ACCEPT;
                    (1, Vec::new())
                }
                ToWorker::ReopenLogs(files) => {
                    buf[0] = T_REOPEN;
                    // More than MAX_FDS descriptors are refused by `send` before this matters.
                    buf[1] = u8::try_from(files.access_logs.len()).unwrap_or(u8::MAX);
                    buf[2] = u8::from(files.error_log.is_some());
                    let fds = files
                        .access_logs
                        .iter()
                        .chain(&files.error_log)
                        .map(|f| f.as_fd())
                        .collect();
                    (3, fds)
                }
                ToWorker::SetAdmin {
                    seq,
                    server,
                    downstream,
                    state,
                } => {
                    buf[0] = T_SET_ADMIN;
                    buf[1..5].copy_from_slice(&seq.to_le_bytes());
                    buf[5..9].copy_from_slice(&server.to_le_bytes());
                    buf[9..13].copy_from_slice(&downstream.to_le_bytes());
                    buf[13] = state.code();
                    (14, Vec::new())
                }
            }
        }

        fn decode(b: &[u8], mut fds: Vec<OwnedFd>) -> Option<ToWorker> {
            match b {
                [T_DRAIN] if fds.is_empty() => Some(ToWorker::Drain),
                [T_STOP] if fds.is_empty() => Some(ToWorker::Stop),
                [T_ACCEPT] if fds.is_empty() => Some(ToWorker::Accept),
                &[T_REOPEN, access, error @ (0 | 1)]
                    if fds.len() == usize::from(access) + usize::from(error) =>
                {
                    let error_log = if error == 1 { fds.pop() } else { None };
                    Some(ToWorker::ReopenLogs(LogFiles {
                        access_logs: fds,
                        error_log,
                    }))
                }
                [T_SET_ADMIN, rest @ ..] if rest.len() == 13 && fds.is_empty() => {
                    let word = |i: usize| rest[i..i + 4].try_into().ok().map(u32::from_le_bytes);
                    Some(ToWorker::SetAdmin {
                        seq: word(0)?,
                        server: word(4)?,
                        downstream: word(8)?,
                        state: AdminState::from_code(rest[12])?,
                    })
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn messages_to_the_master_round_trip() {
        let (master, worker) = pair().unwrap();
        let all = [
            ToMaster::Ready,
            ToMaster::Exiting,
            ToMaster::LogsReopened,
            ToMaster::Heartbeat(Heartbeat {
                connections: 7,
                requests: u64::MAX - 3,
                downstreams_up: 2,
                downstreams_total: 3,
            }),
            ToMaster::Metrics(MetricsUpdate::default()),
            ToMaster::Metrics(MetricsUpdate {
                layout_len: 99,
                values: (0..MAX_METRICS as u32)
                    .map(|i| (i, u64::MAX - u64::from(i)))
                    .collect(),
            }),
            ToMaster::AdminApplied { seq: 7, ok: true },
            ToMaster::AdminApplied {
                seq: u32::MAX,
                ok: false,
            },
        ];
        for m in &all {
            worker.send(m).unwrap();
        }
        for m in &all {
            assert!(matches!(master.recv().unwrap(), Received::Message(r) if r == *m));
        }
        assert!(matches!(master.recv().unwrap(), Received::Empty));
        drop(worker);
        assert!(matches!(master.recv().unwrap(), Received::Closed));
    }

    #[test]
    fn orders_and_log_files_reach_the_worker() {
        let (master, worker) = pair().unwrap();
        master.send(&ToWorker::Drain).unwrap();
        master.send(&ToWorker::Stop).unwrap();
        master.send(&ToWorker::Accept).unwrap();
        for (access, error) in [(2, true), (3, false), (0, true), (0, false)] {
            let files = LogFiles {
                access_logs: (0..access).map(|_| null()).collect(),
                error_log: error.then(null),
            };
            master.send(&ToWorker::ReopenLogs(files)).unwrap();
        }
        assert!(matches!(
            worker.recv().unwrap(),
            Received::Message(ToWorker::Drain)
        ));
        assert!(matches!(
            worker.recv().unwrap(),
            Received::Message(ToWorker::Stop)
        ));
        assert!(matches!(
            worker.recv().unwrap(),
            Received::Message(ToWorker::Accept)
        ));
        for (access, error) in [(2, true), (3, false), (0, true), (0, false)] {
            match worker.recv().unwrap() {
                Received::Message(ToWorker::ReopenLogs(f)) => {
                    assert_eq!(f.access_logs.len(), access);
                    assert_eq!(f.error_log.is_some(), error);
                }
                other => panic!("expected ReopenLogs, got {other:?}"),
            }
        }
        drop(master);
        assert!(matches!(worker.recv().unwrap(), Received::Closed));
    }

    #[test]
    fn admin_states_reach_the_worker() {
        let (master, worker) = pair().unwrap();
        let states = [AdminState::Ready, AdminState::Drain, AdminState::Maint];
        for (i, state) in states.into_iter().enumerate() {
            let m = ToWorker::SetAdmin {
                seq: 40 + i as u32,
                server: 3,
                downstream: u32::MAX - i as u32,
                state,
            };
            master.send(&m).unwrap();
        }
        for (i, want) in states.into_iter().enumerate() {
            match worker.recv().unwrap() {
                Received::Message(ToWorker::SetAdmin {
                    seq,
                    server,
                    downstream,
                    state,
                }) => {
                    assert_eq!(seq, 40 + i as u32);
                    assert_eq!(server, 3);
                    assert_eq!(downstream, u32::MAX - i as u32);
                    assert_eq!(state, want);
                }
                other => panic!("expected SetAdmin, got {other:?}"),
            }
        }
        // An unknown state code is not a message.
        let mut bad = [0u8; 14];
        bad[0] = 13;
        bad[13] = 9;
        assert!(ToWorker::decode(&bad, vec![]).is_none());
        assert!(ToMaster::decode(&[5, 1, 0, 0, 0, 2], vec![]).is_none());
    }

    #[test]
    fn refuses_what_does_not_add_up() {
        let raw = |bytes: &[u8], fds: Vec<OwnedFd>| ToWorker::decode(bytes, fds);
        // Two access logs announced, one descriptor attached.
        assert!(raw(&[wire_reopen(), 2, 0], vec![null()]).is_none());
        // An error log announced, none attached.
        assert!(raw(&[wire_reopen(), 0, 1], vec![]).is_none());
        // Descriptors on a message that carries none.
        assert!(raw(&[10], vec![null()]).is_none());
        assert!(raw(&[], vec![]).is_none());
        assert!(ToMaster::decode(&[99], vec![]).is_none());
        assert!(ToMaster::decode(&[2, 1], vec![]).is_none());
        // A metrics update cut inside a value, or without its layout length.
        assert!(ToMaster::decode(&[6, 1, 0, 0, 0, 1, 2, 3], vec![]).is_none());
        assert!(ToMaster::decode(&[6, 1], vec![]).is_none());
    }

    /// The first byte of an encoded `ReopenLogs`.
    fn wire_reopen() -> u8 {
        let mut buf = [0u8; MAX_MSG];
        ToWorker::ReopenLogs(LogFiles::default()).encode(&mut buf);
        buf[0]
    }
}
