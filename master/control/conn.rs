//! One control connection inside the master's poll loop: read one request line (bounded in
//! size and time), wait while the master works on it (reload --wait, acknowledgements), write
//! the reply without blocking, close. Nothing here blocks: every read and write is on a
//! non-blocking socket, and a peer that stalls only loses its own connection at its deadline.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::protocol::{self, ParseError, Parsed, Status, MAX_REQUEST};
use super::socket::Peer;

/// Time a peer has to send its request, and again to read its reply.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Reading,
    /// The request is with the master; the reply comes with [`Conn::respond`].
    Waiting,
    Writing,
    /// Finished (or given up on): dropped, which closes it.
    Done,
}

/// What a readable connection produced.
pub enum Input {
    /// Nothing complete yet.
    More,
    /// A whole request, now waiting for its reply.
    Request(Parsed),
    /// A bad request: the connection is already answering with `usage`.
    Refused,
}

pub struct Conn {
    pub id: u64,
    stream: UnixStream,
    pub peer: Peer,
    /// Passed the peer check; a refused peer gets `permission denied` for its request.
    pub allowed: bool,
    buf: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    deadline: Instant,
    pub state: State,
}

impl Conn {
    pub fn new(id: u64, stream: UnixStream, peer: Peer, allowed: bool, now: Instant) -> Conn {
        Conn {
            id,
            stream,
            peer,
            allowed,
            buf: Vec::new(),
            out: Vec::new(),
            written: 0,
            deadline: now + DEADLINE,
            state: State::Reading,
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Read what is there, up to the longest request line.
    pub fn on_readable(&mut self, now: Instant) -> Input {
        if self.state != State::Reading {
            return Input::More;
        }
        let mut chunk = [0u8; 1024];
        let mut eof = false;
        loop {
            // One request line and its `\r\n`, never more: what a peer sends beyond that is
            // never read, so a flood costs the master nothing.
            let room = (MAX_REQUEST + 2).saturating_sub(self.buf.len());
            if room == 0 {
                break;
            }
            let want = room.min(chunk.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if chunk[..n].contains(&b'\n') {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.state = State::Done;
                    return Input::More;
                }
            }
        }
        let parsed = match protocol::line(&self.buf, eof) {
            Ok(None) => return Input::More,
            Ok(Some(line)) => protocol::parse(line),
            Err(ParseError::Empty) if self.buf.is_empty() => {
                // Connected and left without a word.
                self.state = State::Done;
                return Input::More;
            }
            Err(e) => Err(e),
        };
        self.buf = Vec::new();
        match parsed {
            Ok(p) => {
                self.state = State::Waiting;
                Input::Request(p)
            }
            Err(e) => {
                self.respond(
                    protocol::reply(Status::Usage, &format!("{e}\n{}", protocol::USAGE)),
                    now,
                );
                Input::Refused
            }
        }
    }

    /// Queue the reply bytes and start writing them.
    pub fn respond(&mut self, bytes: Vec<u8>, now: Instant) {
        if self.state == State::Done {
            return;
        }
        self.out = bytes;
        self.written = 0;
        self.state = State::Writing;
        self.deadline = now + DEADLINE;
        self.on_writable();
    }

    pub fn on_writable(&mut self) {
        while self.state == State::Writing {
            if self.written == self.out.len() {
                self.discard_input();
                self.state = State::Done;
                return;
            }
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => self.state = State::Done,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => self.state = State::Done,
            }
        }
    }

    /// Read and drop what the peer sent after its request line (an HTTP client's headers), a
    /// bounded amount: closing a Unix socket with unread bytes makes the peer's next read fail
    /// with a reset instead of the end of the reply.
    fn discard_input(&mut self) {
        let mut chunk = [0u8; 4096];
        for _ in 0..16 {
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// The peer hung up or the socket failed: nobody to answer any more.
    pub fn on_hangup(&mut self) {
        self.state = State::Done;
    }

    /// Give up on a peer too slow to send its request or read its reply. A connection whose
    /// request is with the master waits for the master: those waits have their own bounds.
    pub fn check_deadline(&mut self, now: Instant) {
        if matches!(self.state, State::Reading | State::Writing) && now >= self.deadline {
            self.state = State::Done;
        }
    }
}
