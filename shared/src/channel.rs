//! The master<->worker channel: one `AF_UNIX` `SOCK_SEQPACKET` socketpair per worker, so every
//! message keeps its boundaries, with file descriptors passed by `SCM_RIGHTS` (log reopen).
//! Both sides encode and decode here, so they cannot disagree about a message.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

/// Largest encoded message.
pub const MAX_MSG: usize = 64;
/// Most descriptors one message may carry (one per log file of a worker).
pub const MAX_FDS: usize = 64;

/// What a worker tells the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToMaster {
    /// Listeners adopted, runtime up: the worker can take traffic.
    Ready,
    /// Sent every second; a worker silent for `heartbeat-timeout` is killed and replaced.
    Heartbeat(Heartbeat),
    /// The new log descriptors are in use and the old ones flushed and closed.
    LogsReopened,
    /// The worker is leaving on its own (drained, or lost the master).
    Exiting,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToWorker {
    /// Stop accepting, finish in-flight requests, close keep-alive connections after their
    /// next response, exit when idle or at `shutdown-timeout`.
    Drain,
    /// Close everything and exit now.
    Stop,
    /// The attached descriptors replace the worker's log files, in configuration order.
    ReopenLogs,
}

const T_READY: u8 = 1;
const T_HEARTBEAT: u8 = 2;
const T_LOGS_REOPENED: u8 = 3;
const T_EXITING: u8 = 4;
const T_DRAIN: u8 = 10;
const T_STOP: u8 = 11;
const T_REOPEN: u8 = 12;

impl ToMaster {
    pub fn encode(&self, buf: &mut [u8; MAX_MSG]) -> usize {
        match self {
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
        }
    }

    pub fn decode(b: &[u8]) -> Option<ToMaster> {
        match *b.first()? {
            T_READY => Some(ToMaster::Ready),
            T_LOGS_REOPENED => Some(ToMaster::LogsReopened),
            T_EXITING => Some(ToMaster::Exiting),
            T_HEARTBEAT if b.len() == 25 => Some(ToMaster::Heartbeat(Heartbeat {
                connections: u64::from_le_bytes(b[1..9].try_into().ok()?),
                requests: u64::from_le_bytes(b[9..17].try_into().ok()?),
                downstreams_up: u32::from_le_bytes(b[17..21].try_into().ok()?),
                downstreams_total: u32::from_le_bytes(b[21..25].try_into().ok()?),
            })),
            _ => None,
        }
    }
}

impl ToWorker {
    pub fn encode(&self) -> u8 {
        match self {
            ToWorker::Drain => T_DRAIN,
            ToWorker::Stop => T_STOP,
            ToWorker::ReopenLogs => T_REOPEN,
        }
    }

    pub fn decode(b: &[u8]) -> Option<ToWorker> {
        match b {
            [T_DRAIN] => Some(ToWorker::Drain),
            [T_STOP] => Some(ToWorker::Stop),
            [T_REOPEN] => Some(ToWorker::ReopenLogs),
            _ => None,
        }
    }
}

/// A connected pair: `(master end, worker end)`. The master end is non-blocking.
pub fn pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    nix::fcntl::fcntl(
        &a,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok((a, b))
}

/// Send one message, with descriptors attached when `fds` is not empty.
pub fn send(fd: RawFd, msg: &[u8], fds: &[RawFd]) -> nix::Result<()> {
    let iov = [IoSlice::new(msg)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map(|_| ()),
        }
    }
}

/// Receive one message into `buf`; attached descriptors are appended to `fds`.
/// `Ok(0)` means the peer closed its end.
pub fn recv(fd: RawFd, buf: &mut [u8; MAX_MSG], fds: &mut Vec<OwnedFd>) -> nix::Result<usize> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r?,
        }
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(list) = c {
                // SAFETY: the kernel just installed these descriptors in our table for us.
                fds.extend(list.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
    }
    Ok(msg.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn round_trip() {
        let mut b = [0u8; MAX_MSG];
        for m in [
            ToMaster::Ready,
            ToMaster::Exiting,
            ToMaster::LogsReopened,
            ToMaster::Heartbeat(Heartbeat {
                connections: 7,
                requests: u64::MAX - 3,
                downstreams_up: 2,
                downstreams_total: 3,
            }),
        ] {
            let n = m.encode(&mut b);
            assert_eq!(ToMaster::decode(&b[..n]), Some(m));
        }
        for m in [ToWorker::Drain, ToWorker::Stop, ToWorker::ReopenLogs] {
            assert_eq!(ToWorker::decode(&[m.encode()]), Some(m));
        }
        assert_eq!(ToMaster::decode(&[99]), None);
        assert_eq!(ToMaster::decode(&[T_HEARTBEAT, 1]), None);
        assert_eq!(ToWorker::decode(&[]), None);
    }

    #[test]
    fn passes_descriptors() {
        let (a, b) = pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        send(b.as_raw_fd(), &[T_REOPEN], &[file.as_raw_fd()]).unwrap();
        let mut buf = [0u8; MAX_MSG];
        let mut fds = Vec::new();
        let n = recv(a.as_raw_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!(ToWorker::decode(&buf[..n]), Some(ToWorker::ReopenLogs));
        assert_eq!(fds.len(), 1);
        drop(b);
        assert_eq!(recv(a.as_raw_fd(), &mut buf, &mut fds).unwrap(), 0);
    }
}
