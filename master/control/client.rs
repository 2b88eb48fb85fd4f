//! `rproxy ctl`: one request to the master's control socket, its reply on stdout (ok) or
//! stderr (error, usage). Exit status: 0 ok, 1 the command failed (a reload refused, a
//! worker that did not confirm), 2 usage or no master to talk to.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::protocol::{self, Command, Parsed, Status};

/// Longest wait for a reply: `reload --wait` and `upgrade --wait` last until the new workers
/// are ready (bounded by the master: heartbeat-timeout plus a grace); anything else is quick.
const WAIT_LONG: Duration = Duration::from_secs(600);
const WAIT_SHORT: Duration = Duration::from_secs(30);

/// Run `words` against the master of `config` (or at `socket`).
pub fn run(config: &Path, socket: Option<PathBuf>, words: &[String]) -> ExitCode {
    let line = words.join(" ");
    let command = match protocol::parse(line.as_bytes()) {
        Ok(Parsed::Line(r)) => r.command,
        Ok(Parsed::Http(_)) => return usage("an HTTP request line is for scrapers, not ctl"),
        Err(e) => return usage(&e.to_string()),
    };
    let path = match socket {
        Some(p) => p,
        None => match rproxy_shared::load::control_socket(config) {
            Ok(Some(p)) => p,
            Ok(None) => {
                eprintln!(
                    "rproxy ctl: {} disables the control socket (control-socket = \"\")",
                    config.display()
                );
                return ExitCode::from(2);
            }
            Err(e) => {
                let p = PathBuf::from(rproxy_shared::schema::DEFAULT_CONTROL_SOCKET);
                eprintln!(
                    "rproxy ctl: warning: cannot read control-socket ({e}); trying {}",
                    p.display()
                );
                p
            }
        },
    };
    let waits = matches!(
        command,
        Command::Reload { wait: true } | Command::Upgrade { wait: true }
    );
    match exchange(&path, &line, if waits { WAIT_LONG } else { WAIT_SHORT }) {
        Ok(reply) => report(&reply),
        Err(e) => {
            eprintln!("rproxy ctl: {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("rproxy ctl: {why}\ncommands:\n{}", protocol::USAGE);
    ExitCode::from(2)
}

/// Connect without hanging on a master that accepts nothing (its backlog full): retried for
/// a few seconds, then an error.
fn connect(path: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(path).map_err(std::io::Error::from)?;
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => {
                let s = UnixStream::from(fd);
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(nix::errno::Errno::EAGAIN) if std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the master accepts no connection (its queue is full)",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn exchange(path: &Path, line: &str, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(WAIT_SHORT))?;
    let mut request = line.as_bytes().to_vec();
    request.push(b'\n');
    match s.write_all(&request) {
        // The master answered and closed before reading (a refused peer): its reply is
        // still there to read.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) => {}
        r => r?,
    }
    let mut reply = Vec::new();
    // The master closes the connection after its reply. A reset after some of it arrived
    // (the master closed with bytes of ours unread) still leaves the whole reply.
    match s.read_to_end(&mut reply) {
        Ok(_) => Ok(reply),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !reply.is_empty() => Ok(reply),
        Err(e) => Err(e),
    }
}

fn report(reply: &[u8]) -> ExitCode {
    if reply.is_empty() {
        // Past the connection limit, or the master is stopping.
        eprintln!("rproxy ctl: the master closed the connection without a reply");
        return ExitCode::from(1);
    }
    let Some((status, body)) = protocol::parse_reply(reply) else {
        eprintln!("rproxy ctl: the master's reply has no status line");
        std::io::stderr().write_all(reply).ok();
        return ExitCode::from(1);
    };
    let (code, out): (u8, Box<dyn Write>) = match status {
        Status::Ok => (0, Box::new(std::io::stdout())),
        Status::Error => (1, Box::new(std::io::stderr())),
        Status::Usage => (2, Box::new(std::io::stderr())),
    };
    let mut out = out;
    let _ = out.write_all(body);
    if !body.is_empty() && !body.ends_with(b"\n") {
        let _ = out.write_all(b"\n");
    }
    ExitCode::from(code)
}
