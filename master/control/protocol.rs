//! The control socket's language (DESIGN section 12), as pure functions over bytes: no I/O,
//! no state, only `std`, so the fuzz target (`fuzz/fuzz_targets/control_request.rs`) includes
//! this file as it is (`#[path]`), and `rproxy ctl` checks a command with the same parser
//! before it connects.
//!
//! A request is one line of printable ASCII (at most [`MAX_REQUEST`] bytes, ended by `\n`,
//! an optional `\r` before it, or by the end of the stream), words separated by blanks:
//!
//! ```text
//! show info|workers|downstreams [--json]
//! set downstream SERVER/NAME ready|drain|maint
//! reload [--wait]
//! reopen
//! upgrade [--wait]
//! metrics
//! ```
//!
//! `GET /metrics HTTP/1.x` (an HTTP request line) is recognised too, so a scraper can read
//! the socket; its answer is an HTTP response. Every other answer is a status line, `ok`,
//! `error` (the command was understood and failed) or `usage` (it was not understood), then
//! the body; the master closes the connection after it, which ends the reply.

/// Longest request line, in bytes, not counting its `\n`.
pub const MAX_REQUEST: usize = 4096;

/// The commands, one line each, for `usage` replies and `rproxy ctl --help`.
pub const USAGE: &str = "\
show info [--json]          version, pid, uptime, generation, workers, last reload
show workers [--json]       every worker: pid, generation, state, slot, started, heartbeat
show downstreams [--json]   every downstream of the serving configuration and its state
set downstream SERVER/NAME ready|drain|maint
                            SERVER is the listener's addr:port, NAME the downstream's name
reload [--wait]             reload the configuration; --wait: until it serves or failed
reopen                      reopen every log file (as SIGUSR1)
upgrade [--wait]            hot binary upgrade
metrics                     Prometheus text (also GET /metrics over HTTP)";

/// An operator's state for a downstream (HAProxy's `set server ... state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Ready,
    Drain,
    Maint,
}

/// What the master is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    ShowInfo,
    ShowWorkers,
    ShowDownstreams,
    /// `server` is a listener's `addr:port` as `show downstreams` prints it.
    SetDownstream {
        server: String,
        name: String,
        state: Admin,
    },
    Reload {
        wait: bool,
    },
    Reopen,
    Upgrade {
        wait: bool,
    },
    Metrics,
}

impl Command {
    /// Commands that change the daemon: logged with the peer's uid and pid.
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Command::SetDownstream { .. }
                | Command::Reload { .. }
                | Command::Reopen
                | Command::Upgrade { .. }
        )
    }
}

/// One line request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    /// `--json`: the body is one JSON document (show commands only).
    pub json: bool,
}

/// What an HTTP request line on the socket asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// `GET` or `HEAD` of `/metrics` (a query string is ignored).
    Metrics { head: bool },
    /// `GET`/`HEAD` of any other path: 404.
    NotFound,
    /// Any other method: 405.
    MethodNotAllowed,
}

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Line(Request),
    Http(Http),
}

/// Why a line is not a request; the text goes back in a `usage` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    TooLong,
    /// A byte other than printable ASCII, space or tab.
    NotText,
    Unknown(String),
    /// The command is known, its arguments are not.
    Arguments(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Empty => write!(f, "empty request"),
            ParseError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            ParseError::NotText => write!(f, "request is not printable ASCII text"),
            ParseError::Unknown(w) => write!(f, "unknown command `{w}`"),
            ParseError::Arguments(usage) => write!(f, "usage: {usage}"),
        }
    }
}

/// Where the request line ends in `buf`: `Some(line)` (without `\n` or `\r\n`) once a `\n` is
/// there, or `at_eof` and something was sent; `Err(TooLong)` when it cannot fit.
pub fn line(buf: &[u8], at_eof: bool) -> Result<Option<&[u8]>, ParseError> {
    let end = match buf.iter().position(|&b| b == b'\n') {
        Some(n) => n,
        // Room for a `\r` that may end a line of the longest length.
        None if buf.len() > MAX_REQUEST + 1 => return Err(ParseError::TooLong),
        None if at_eof && !buf.is_empty() => buf.len(),
        None if at_eof => return Err(ParseError::Empty),
        None => return Ok(None),
    };
    if end > MAX_REQUEST + 1 {
        return Err(ParseError::TooLong);
    }
    let l = &buf[..end];
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    if l.len() > MAX_REQUEST {
        return Err(ParseError::TooLong);
    }
    Ok(Some(l))
}

/// Parse one request line (as [`line`] returns it).
pub fn parse(line: &[u8]) -> Result<Parsed, ParseError> {
    if line.len() > MAX_REQUEST {
        return Err(ParseError::TooLong);
    }
    if !line
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(ParseError::NotText);
    }
    // Only printable ASCII is left, so this cannot fail.
    let text = std::str::from_utf8(line).map_err(|_| ParseError::NotText)?;
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    let Some((&first, rest)) = words.split_first() else {
        return Err(ParseError::Empty);
    };
    if let [target, version] = rest {
        if version.starts_with("HTTP/1.") && target.starts_with('/') {
            return Ok(Parsed::Http(http(first, target)));
        }
    }
    let json = rest.contains(&"--json");
    let args: Vec<&str> = rest.iter().copied().filter(|w| *w != "--json").collect();
    let command = match first {
        "show" => match args.as_slice() {
            ["info"] => Command::ShowInfo,
            ["workers"] => Command::ShowWorkers,
            ["downstreams"] => Command::ShowDownstreams,
            _ => {
                return Err(ParseError::Arguments(
                    "show info|workers|downstreams [--json]",
                ))
            }
        },
        _ if json => return Err(ParseError::Arguments("--json goes with show commands")),
        "set" => set(&args)?,
        "reload" => Command::Reload {
            wait: wait_flag(&args, "reload [--wait]")?,
        },
        "upgrade" => Command::Upgrade {
            wait: wait_flag(&args, "upgrade [--wait]")?,
        },
        "reopen" if args.is_empty() => Command::Reopen,
        "reopen" => return Err(ParseError::Arguments("reopen")),
        "metrics" if args.is_empty() => Command::Metrics,
        "metrics" => return Err(ParseError::Arguments("metrics")),
        other => return Err(ParseError::Unknown(shorten(other))),
    };
    Ok(Parsed::Line(Request { command, json }))
}

fn http(method: &str, target: &str) -> Http {
    let path = target.split('?').next().unwrap_or(target);
    match method {
        "GET" | "HEAD" if path == "/metrics" => Http::Metrics {
            head: method == "HEAD",
        },
        "GET" | "HEAD" => Http::NotFound,
        _ => Http::MethodNotAllowed,
    }
}

fn wait_flag(args: &[&str], usage: &'static str) -> Result<bool, ParseError> {
    match args {
        [] => Ok(false),
        ["--wait"] => Ok(true),
        _ => Err(ParseError::Arguments(usage)),
    }
}

fn set(args: &[&str]) -> Result<Command, ParseError> {
    const USAGE: &str = "set downstream SERVER/NAME ready|drain|maint";
    let ["downstream", target, state] = args else {
        return Err(ParseError::Arguments(USAGE));
    };
    let state = match *state {
        "ready" => Admin::Ready,
        "drain" => Admin::Drain,
        "maint" => Admin::Maint,
        _ => return Err(ParseError::Arguments(USAGE)),
    };
    // The server is an address with a port, which has no `/`; a name may have one.
    let Some((server, name)) = target.split_once('/') else {
        return Err(ParseError::Arguments(USAGE));
    };
    if server.is_empty() || name.is_empty() {
        return Err(ParseError::Arguments(USAGE));
    }
    Ok(Command::SetDownstream {
        server: server.to_string(),
        name: name.to_string(),
        state,
    })
}

/// A word echoed in an error, cut so a reply never grows with the request.
fn shorten(w: &str) -> String {
    match w.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &w[..i]),
        None => w.to_string(),
    }
}

/// A reply's status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Understood, and failed (`rproxy ctl` exits 1).
    Error,
    /// Not understood (`rproxy ctl` exits 2).
    Usage,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Usage => "usage",
        }
    }
}

/// The bytes of a line reply: the status line, then `body` ending with a newline.
pub fn reply(status: Status, body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(status.word().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body.as_bytes());
    if !body.is_empty() && !body.ends_with('\n') {
        out.push(b'\n');
    }
    out
}

/// The status and body of a whole reply (as read until the master closed); `None` when it
/// does not start with a status line.
pub fn parse_reply(bytes: &[u8]) -> Option<(Status, &[u8])> {
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    let status = match &bytes[..nl] {
        b"ok" => Status::Ok,
        b"error" => Status::Error,
        b"usage" => Status::Usage,
        _ => return None,
    };
    Some((status, &bytes[nl + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Result<Parsed, ParseError> {
        parse(s.as_bytes())
    }

    fn req(command: Command, json: bool) -> Result<Parsed, ParseError> {
        Ok(Parsed::Line(Request { command, json }))
    }

    #[test]
    fn commands() {
        assert_eq!(cmd("show info"), req(Command::ShowInfo, false));
        assert_eq!(
            cmd("  show\tworkers --json "),
            req(Command::ShowWorkers, true)
        );
        assert_eq!(
            cmd("show --json downstreams"),
            req(Command::ShowDownstreams, true)
        );
        assert_eq!(
            cmd("set downstream 127.0.0.1:8080/app1 maint"),
            req(
                Command::SetDownstream {
                    server: "127.0.0.1:8080".into(),
                    name: "app1".into(),
                    state: Admin::Maint
                },
                false
            )
        );
        assert_eq!(
            cmd("set downstream [::1]:80/a/b ready"),
            req(
                Command::SetDownstream {
                    server: "[::1]:80".into(),
                    name: "a/b".into(),
                    state: Admin::Ready
                },
                false
            )
        );
        assert_eq!(
            cmd("reload --wait"),
            req(Command::Reload { wait: true }, false)
        );
        assert_eq!(cmd("reload"), req(Command::Reload { wait: false }, false));
        assert_eq!(cmd("upgrade"), req(Command::Upgrade { wait: false }, false));
        assert_eq!(cmd("reopen"), req(Command::Reopen, false));
        assert_eq!(cmd("metrics"), req(Command::Metrics, false));
    }

    #[test]
    fn http_request_lines() {
        assert_eq!(
            cmd("GET /metrics HTTP/1.1"),
            Ok(Parsed::Http(Http::Metrics { head: false }))
        );
        assert_eq!(
            cmd("HEAD /metrics?x=1 HTTP/1.0"),
            Ok(Parsed::Http(Http::Metrics { head: true }))
        );
        assert_eq!(cmd("GET / HTTP/1.1"), Ok(Parsed::Http(Http::NotFound)));
        assert_eq!(
            cmd("POST /metrics HTTP/1.1"),
            Ok(Parsed::Http(Http::MethodNotAllowed))
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(cmd(""), Err(ParseError::Empty));
        assert_eq!(cmd("   "), Err(ParseError::Empty));
        assert_eq!(cmd("show info\0"), Err(ParseError::NotText));
        assert_eq!(parse("show é".as_bytes()), Err(ParseError::NotText));
        assert!(matches!(cmd("frobnicate"), Err(ParseError::Unknown(_))));
        let long = "x".repeat(500);
        match cmd(&long) {
            Err(ParseError::Unknown(w)) => assert!(w.len() < 50),
            other => panic!("{other:?}"),
        }
        for bad in [
            "show",
            "show everything",
            "show info workers",
            "set downstream x maint",
            "set downstream /x maint",
            "set downstream a:1/ maint",
            "set downstream a:1/x up",
            "set server a:1/x ready",
            "reload now",
            "reload --json",
            "reopen logs",
            "metrics --json",
        ] {
            assert!(
                matches!(cmd(bad), Err(ParseError::Arguments(_))),
                "{bad}: {:?}",
                cmd(bad)
            );
        }
        assert_eq!(
            parse(&vec![b'a'; MAX_REQUEST + 1]),
            Err(ParseError::TooLong)
        );
    }

    #[test]
    fn line_framing() {
        assert_eq!(line(b"show info", false), Ok(None));
        assert_eq!(line(b"show info", true), Ok(Some(&b"show info"[..])));
        assert_eq!(
            line(b"show info\r\nmore", false),
            Ok(Some(&b"show info"[..]))
        );
        assert_eq!(line(b"", true), Err(ParseError::Empty));
        assert_eq!(line(&vec![b'a'; MAX_REQUEST], false), Ok(None));
        assert_eq!(
            line(&vec![b'a'; MAX_REQUEST + 2], false),
            Err(ParseError::TooLong)
        );
        assert_eq!(
            line(&vec![b'a'; MAX_REQUEST + 1], true),
            Err(ParseError::TooLong)
        );
        let mut exact = vec![b'a'; MAX_REQUEST];
        exact.extend_from_slice(b"\r\n");
        assert_eq!(
            line(&exact, false).map(|l| l.map(<[u8]>::len)),
            Ok(Some(MAX_REQUEST))
        );
    }

    #[test]
    fn replies_round_trip() {
        for (s, body) in [
            (Status::Ok, "a\nb"),
            (Status::Error, "failed\n"),
            (Status::Usage, ""),
        ] {
            let bytes = reply(s, body);
            let (got, b) = parse_reply(&bytes).unwrap();
            assert_eq!(got, s);
            assert_eq!(
                b.strip_suffix(b"\n").unwrap_or(b),
                body.trim_end().as_bytes()
            );
        }
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n").is_none());
        assert!(parse_reply(b"ok").is_none());
    }
}
