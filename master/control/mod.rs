//! The master's control socket (DESIGN section 12): `protocol` (the request language, pure),
//! `conn` (one connection's state machine), `exec` (what each command does to the master),
//! `socket` (the file, peer credentials), `client` (`rproxy ctl`). The supervisor's poll loop
//! adds [`Control::poll_fds`] to its own descriptors and hands their events back to
//! [`crate::supervisor::Master::serve_control`].
//!
//! Bounds: [`MAX_CONNS`] connections at once (more are closed at once), one request line of
//! [`protocol::MAX_REQUEST`] bytes per connection, [`conn::DEADLINE`] to send it and again to
//! read the reply; waits on the master ([`Wait`]) are bounded by the reload's own time-out and
//! [`ACK_TIMEOUT`].

pub mod client;
pub mod conn;
mod exec;
pub mod protocol;
pub mod socket;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::PollFlags;
use nix::unistd::Pid;
use rproxy_shared::channel::AdminState;

use self::conn::Conn;
use self::socket::Bound;

/// Connections served at once; one more is accepted and closed at once.
pub const MAX_CONNS: usize = 16;
/// How long `set downstream` waits for every worker's acknowledgement.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection whose request is with the master waits for.
pub enum Wait {
    /// The reload numbered `seq` (see [`Control::reloads_started`]) to serve or fail.
    Reload { seq: u64 },
    /// Acknowledgements of `SetAdmin` number `seq`.
    Acks { seq: u32 },
    /// Binary upgrade attempt `attempt` (`Master::start_upgrade`) to commit or fail.
    Upgrade { attempt: u64 },
}

/// A `set downstream` sent to workers, waiting for their acknowledgements.
pub struct Pending {
    pub seq: u32,
    /// What was set, for the reply.
    pub what: String,
    /// Workers that have not answered.
    pub waiting: Vec<Pid>,
    pub applied: Vec<Pid>,
    /// Workers whose configuration had no such downstream.
    pub refused: Vec<Pid>,
    pub deadline: Instant,
}

/// The result of a reload, for `show info` and `reload --wait`.
#[derive(Clone)]
pub struct ReloadResult {
    pub at: SystemTime,
    /// The validation (or start-up) errors when it failed.
    pub errors: Option<Vec<String>>,
}

/// The control socket's state in the master.
pub struct Control {
    pub bound: Option<Bound>,
    pub conns: Vec<Conn>,
    next_conn: u64,
    /// Connections waiting on the master: `(connection id, what for)`.
    pub waits: Vec<(u64, Wait)>,
    /// The operator's downstream states, by `(server addr:port, downstream name)`: kept across
    /// reloads by name, given to every worker forked from now on. `ready` removes an entry.
    pub admin: BTreeMap<(String, String), AdminState>,
    pub pending: Vec<Pending>,
    next_seq: u32,
    /// Reloads begun and finished (a reload queued behind another begins when that one ends).
    pub reloads_started: u64,
    pub reloads_done: u64,
    pub last_reload: Option<ReloadResult>,
    pub started: Instant,
    pub started_wall: SystemTime,
}

impl Control {
    pub fn new(bound: Option<Bound>) -> Control {
        Control {
            bound,
            conns: Vec::new(),
            next_conn: 1,
            waits: Vec::new(),
            admin: BTreeMap::new(),
            pending: Vec::new(),
            next_seq: 1,
            reloads_started: 0,
            reloads_done: 0,
            last_reload: None,
            started: Instant::now(),
            started_wall: SystemTime::now(),
        }
    }

    /// The descriptors to poll, in the order [`crate::supervisor::Master::serve_control`]
    /// expects their events back: the listener (if any), then each connection.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut v = Vec::with_capacity(self.conns.len() + 1);
        if let Some(b) = &self.bound {
            v.push((b.listener.as_fd(), PollFlags::POLLIN));
        }
        for c in &self.conns {
            let flags = match c.state {
                conn::State::Reading => PollFlags::POLLIN,
                conn::State::Writing => PollFlags::POLLOUT,
                // Only hang-ups and errors, which poll reports unasked.
                conn::State::Waiting | conn::State::Done => PollFlags::empty(),
            };
            v.push((c.stream().as_fd(), flags));
        }
        v
    }

    fn next_conn_id(&mut self) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        id
    }

    pub fn next_seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        s
    }

    pub fn conn_mut(&mut self, id: u64) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    /// Answer connection `id` (if it is still there) and stop waiting for it.
    pub fn answer(&mut self, id: u64, bytes: Vec<u8>) {
        self.waits.retain(|(c, _)| *c != id);
        if let Some(c) = self.conn_mut(id) {
            c.respond(bytes, Instant::now());
        }
    }

    /// Drop finished connections and waits whose connection is gone.
    pub fn sweep(&mut self, now: Instant) {
        for c in &mut self.conns {
            c.check_deadline(now);
        }
        self.conns.retain(|c| c.state != conn::State::Done);
        let live: Vec<u64> = self.conns.iter().map(|c| c.id).collect();
        self.waits.retain(|(id, _)| live.contains(id));
    }
}
