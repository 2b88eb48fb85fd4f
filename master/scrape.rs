//! `metrics-listen`: the master serves `GET /metrics` on a TCP address from its own poll loop.
//! Everything is non-blocking and bounded, so a scraper can never stall the supervisor: at most
//! [`MAX_CONNS`] connections at once (more wait in the kernel's backlog), a request head of at
//! most `MAX_REQUEST` bytes ([`crate::scrape_request`]), [`DEADLINE`] per connection from
//! accept to the last byte written, one request per connection (`Connection: close`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use rproxy_shared::{info, warn};

use crate::scrape_request::{self, Verdict, MAX_REQUEST};

/// Scrape connections served at once.
pub const MAX_CONNS: usize = 8;
/// From accept to the last byte of the answer.
pub const DEADLINE: Duration = Duration::from_secs(2);

struct Conn {
    stream: TcpStream,
    deadline: Instant,
    /// The request head read so far (reading), then unused.
    req: Vec<u8>,
    /// The answer and how much of it is written, once the request was judged.
    out: Option<(Vec<u8>, usize)>,
}

/// The metrics listener and its connections.
#[derive(Default)]
pub struct Scrape {
    listener: Option<(SocketAddr, TcpListener)>,
    conns: Vec<Conn>,
}

impl Scrape {
    /// Listen on `addr` (`None`: stop listening), keeping the socket already bound when the
    /// address did not change. Called at start and on reload, as root.
    pub fn rebind(&mut self, addr: Option<SocketAddr>) -> Result<(), String> {
        if self.listener.as_ref().map(|(a, _)| *a) == addr {
            return Ok(());
        }
        let Some(addr) = addr else {
            if let Some((old, _)) = self.listener.take() {
                info!("metrics: no longer listening on {old}");
            }
            return Ok(());
        };
        // A binary upgrade's new master takes the old one's socket (a bind would find the
        // address in use). std's listener sets SO_REUSEADDR (a restart does not wait for
        // TIME_WAIT) and close-on-exec.
        let l = match crate::handover::take_metrics_listener(addr) {
            Some(fd) => Ok(TcpListener::from(fd)),
            None => TcpListener::bind(addr),
        }
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("metrics-listen {addr}: cannot listen: {e}"))?;
        if !addr.ip().is_loopback() {
            warn!(
                "metrics-listen {addr} is not a loopback address: anyone who can reach it sees \
                 the metrics (names of servers, rules and downstreams)"
            );
        }
        info!("metrics: serving GET /metrics on {addr}");
        self.listener = Some((addr, l));
        Ok(())
    }

    /// The listener, for a binary upgrade's hand-over.
    pub fn listener(&self) -> Option<(SocketAddr, std::os::fd::BorrowedFd<'_>)> {
        use std::os::fd::AsFd;
        self.listener.as_ref().map(|(a, l)| (*a, l.as_fd()))
    }

    /// Stop serving (after an upgrade committed: the new master serves the same socket, and
    /// scrapes must not alternate between two masters' totals).
    pub fn release(&mut self) {
        self.listener = None;
        self.conns.clear();
    }

    /// The descriptors to watch: the listener while a connection slot is free, and each
    /// connection for reading or writing.
    pub fn poll_fds<'a>(&'a self, pfds: &mut Vec<PollFd<'a>>) {
        if let Some((_, l)) = &self.listener {
            if self.conns.len() < MAX_CONNS {
                pfds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
        }
        for c in &self.conns {
            let want = if c.out.is_some() {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            pfds.push(PollFd::new(c.stream.as_fd(), want));
        }
    }

    /// Accept, read, answer and write what can be done now without blocking; drop
    /// connections past their deadline. `render` makes the metrics text when a request for
    /// it is complete.
    pub fn service(&mut self, mut render: impl FnMut() -> String) {
        let now = Instant::now();
        self.accept(now);
        self.conns.retain_mut(|c| {
            if now >= c.deadline {
                return false;
            }
            if c.out.is_none() {
                match read(c) {
                    Step::Wait => return true,
                    Step::Close => return false,
                    Step::Answer(v) => c.out = Some((answer(v, &mut render), 0)),
                }
            }
            write(c)
        });
    }

    fn accept(&mut self, now: Instant) {
        let Some((_, l)) = &self.listener else {
            return;
        };
        while self.conns.len() < MAX_CONNS {
            match l.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.conns.push(Conn {
                        stream,
                        deadline: now + DEADLINE,
                        req: Vec::new(),
                        out: None,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: try again at the next wake-up.
                    warn!("metrics: accept: {e}");
                    return;
                }
            }
        }
    }
}

enum Step {
    Wait,
    Close,
    Answer(Verdict),
}

/// Read what is there; judge the head once complete (or too large).
fn read(c: &mut Conn) -> Step {
    let mut buf = [0u8; 2048];
    loop {
        let room = (MAX_REQUEST + 4).saturating_sub(c.req.len()).min(buf.len());
        if room == 0 {
            return Step::Answer(Verdict::BadRequest);
        }
        match c.stream.read(&mut buf[..room]) {
            Ok(0) => return Step::Close,
            Ok(n) => {
                c.req.extend_from_slice(&buf[..n]);
                match scrape_request::parse(&c.req) {
                    Verdict::Incomplete => continue,
                    v => return Step::Answer(v),
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Wait,
            Err(_) => return Step::Close,
        }
    }
}

fn answer(v: Verdict, render: &mut impl FnMut() -> String) -> Vec<u8> {
    let (status, ctype, body) = match v {
        Verdict::Metrics => ("200 OK", crate::metrics::CONTENT_TYPE, render()),
        v => {
            let (status, body) = v.error_answer();
            (status, "text/plain; charset=utf-8", body.to_string())
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Write what the socket takes now; `false` when the connection is done (or broken).
fn write(c: &mut Conn) -> bool {
    let Some((out, done)) = &mut c.out else {
        return true;
    };
    while *done < out.len() {
        match c.stream.write(&out[*done..]) {
            Ok(0) => return false,
            Ok(n) => *done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    // Everything written: close (the client reads to EOF).
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn drive(s: &mut Scrape, until: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !until() && Instant::now() < end {
            s.service(|| "m 1\n".to_string());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn answers_while_a_silent_client_holds_a_slot_then_drops_it() {
        let mut s = Scrape::default();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Port 0 is refused by validation; bind a free port by hand for the test.
        let probe = TcpListener::bind(addr).unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        s.rebind(Some(addr)).unwrap();
        let silent = TcpStream::connect(addr).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        c.set_nonblocking(true).unwrap();
        let got = std::cell::RefCell::new(Vec::new());
        drive(&mut s, || {
            let mut b = [0u8; 512];
            match (&c).read(&mut b) {
                Ok(0) => true,
                Ok(n) => {
                    got.borrow_mut().extend_from_slice(&b[..n]);
                    false
                }
                Err(_) => false,
            }
        });
        let text = String::from_utf8(got.into_inner()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("version=0.0.4"), "{text}");
        assert!(text.ends_with("\r\n\r\nm 1\n"), "{text}");
        assert_eq!(s.conns.len(), 1, "the silent one is still there");
        let t0 = Instant::now();
        drive(&mut s, || s_is_empty(&silent));
        assert!(t0.elapsed() < DEADLINE + Duration::from_secs(1));
    }

    /// The server closed its side of `c`.
    fn s_is_empty(c: &TcpStream) -> bool {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        matches!((&*c).read(&mut b), Ok(0))
    }
}
