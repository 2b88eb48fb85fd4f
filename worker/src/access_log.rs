//! The log stage: access log writers (DESIGN section 9).
//!
//! File logs: lines are rendered into a per-section buffer and written with one `write(2)`
//! when the buffer passes 32 KiB, every 200 ms, before a log reopen and at exit, so a busy
//! worker does not pay a syscall per request. The file is `O_APPEND` and each write holds whole
//! lines, so workers sharing a file never interleave partial lines. The descriptor number is
//! fixed for the worker's life: a reopen `dup2`s the new file onto it (see `state.rs`).
//!
//! Syslog: one RFC 3164 datagram per request to `syslog-socket`, reconnecting when the socket
//! was recreated (the `syslog` crate cannot, and cannot take a socket path per section).

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use nix::errno::Errno;
use rproxy_shared::config::{Config, LogSink, Logging};
use rproxy_shared::localtime;
use rproxy_shared::logformat::{HeaderLookup, LogFormat, Record};
use tokio::sync::Notify;

use crate::body::ProxyBody;
use crate::pool::Used;
use crate::state::WorkerState;
use crate::tls::ConnInfo;

const FLUSH_AT: usize = 32 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// A file log's buffer went from empty to not: the flusher writes it out `FLUSH_EVERY` later.
/// An idle worker then has no flush timer (a fixed 200 ms tick woke it 5 times a second).
static DIRTY: Notify = Notify::const_new();

pub struct AccessLog {
    format: Arc<LogFormat>,
    /// Request headers the format prints, kept from the request before it is forwarded.
    req_names: Vec<HeaderName>,
    sink: Sink,
}

enum Sink {
    File { fd: RawFd, buf: RefCell<Vec<u8>> },
    Syslog(RefCell<Syslog>),
}

struct Syslog {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    /// `<PRI>` for facility + severity info.
    pri: u8,
    line: Vec<u8>,
}

impl AccessLog {
    /// The writer for one `logging` section, or `None` when it is absent or disabled.
    pub fn new(
        config: &Config,
        logging: Option<&Logging>,
        state: &WorkerState,
    ) -> Option<Rc<AccessLog>> {
        let l = logging?;
        let format = Arc::clone(&l.format);
        let req_names = format
            .request_header_names()
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        let sink = match &l.sink {
            LogSink::File(path) => {
                // The master opened every path of `access_log_paths()`, in that order.
                let Some(fd) = config
                    .access_log_index(path)
                    .and_then(|i| state.log_files.get(i))
                else {
                    rproxy_shared::error!("no descriptor for access log {}", path.display());
                    return None;
                };
                let fd = fd.as_raw_fd();
                Sink::File {
                    fd,
                    buf: RefCell::new(Vec::with_capacity(FLUSH_AT + 4096)),
                }
            }
            LogSink::Syslog { socket, facility } => Sink::Syslog(RefCell::new(Syslog {
                path: socket.clone(),
                sock: None,
                pri: facility.code() * 8 + 6,
                line: Vec::with_capacity(512),
            })),
        };
        Some(Rc::new(AccessLog {
            format,
            req_names,
            sink,
        }))
    }

    /// Keep what the line needs from `req` before it is changed and forwarded (cheap: header
    /// values are shared bytes). For HTTP/2 requests and passthrough heads.
    pub fn begin<B>(&self, req: &Request<B>) -> Entry {
        let uri = req.uri();
        Entry {
            method: req.method().clone(),
            target: uri
                .path_and_query()
                .map_or(uri.path(), |p| p.as_str())
                .as_bytes()
                .into(),
            version: req.version(),
            headers: self
                .req_names
                .iter()
                .map(|n| req.headers().get(n).cloned())
                .collect(),
        }
    }

    /// [`AccessLog::begin`] for a head read by the HTTP/1 codec: the request line's parts and
    /// its header lines (`minor`: 0 for HTTP/1.0).
    pub fn begin_h1(
        &self,
        method: &[u8],
        target: &[u8],
        minor: u8,
        headers: &dyn HeaderLookup,
    ) -> Entry {
        Entry {
            method: Method::from_bytes(method).unwrap_or(Method::GET),
            target: target.into(),
            version: if minor == 0 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            },
            headers: self
                .req_names
                .iter()
                .map(|n| {
                    headers
                        .get(n.as_str())
                        .and_then(|v| HeaderValue::from_bytes(v).ok())
                })
                .collect(),
        }
    }

    /// The line for a request begun with [`AccessLog::begin`]: `rule` is the route's name
    /// (`{RULE}`), `used` the downstream connection it reached.
    pub fn finish(
        &self,
        entry: &Entry,
        conn: &ConnInfo,
        rule: Option<&str>,
        resp: &Response<ProxyBody>,
        used: Option<Used>,
    ) {
        self.finish_raw(
            entry,
            conn,
            rule,
            resp.status(),
            &Headers(resp.headers()),
            used,
        );
    }

    /// [`AccessLog::finish`] with the response's status and headers as the HTTP/1 codec has
    /// them (no `Response` is built).
    pub fn finish_raw(
        &self,
        entry: &Entry,
        conn: &ConnInfo,
        rule: Option<&str>,
        status: StatusCode,
        resp_headers: &dyn HeaderLookup,
        used: Option<Used>,
    ) {
        self.line(entry, conn, rule, used, Some(status), Some(resp_headers));
    }

    /// The line for a head the HTTP/1 codec refused (400 for a head it cannot parse or whose
    /// framing a proxy must refuse; 431 for a head over `max-header-size`): nothing of the
    /// request is trusted, so every request field prints `-`.
    pub fn refused(&self, conn: &ConnInfo, status: u16) {
        self.write(&Record {
            src: Some(conn.peer.ip()),
            status: Some(status),
            us_sport: Some(conn.peer.port()),
            ..Record::new(SystemTime::now())
        });
    }

    /// The line for a `passthrough` tunnel, written when it ends: the downstream's response
    /// is tunnelled, not read, so `{DS_HDR}` prints `-`, and so does `{STATUS}` unless rproxy
    /// answered itself (`status`) before a tunnel started.
    pub fn finish_tunnel(
        &self,
        entry: &Entry,
        conn: &ConnInfo,
        rule: Option<&str>,
        used: Option<Used>,
        status: Option<http::StatusCode>,
    ) {
        self.line(entry, conn, rule, used, status, None);
    }

    /// One line of a request begun with [`AccessLog::begin`].
    fn line(
        &self,
        entry: &Entry,
        conn: &ConnInfo,
        rule: Option<&str>,
        used: Option<Used>,
        status: Option<http::StatusCode>,
        resp_headers: Option<&dyn HeaderLookup>,
    ) {
        self.write(&Record {
            src: Some(conn.peer.ip()),
            proxy: used.map(|u| u.addr),
            ts: SystemTime::now(),
            method: Some(entry.method.as_str()),
            uri: Some(&entry.target),
            proto: Some(version_str(entry.version)),
            status: status.map(|s| s.as_u16()),
            ds_sport: used.and_then(|u| u.local_port),
            us_sport: Some(conn.peer.port()),
            rule,
            req_headers: Some(&Snapshot {
                names: &self.req_names,
                values: &entry.headers,
            }),
            resp_headers,
        });
    }

    /// Render and queue one line.
    fn write(&self, rec: &Record<'_>) {
        match &self.sink {
            Sink::File { fd, buf } => {
                let mut b = buf.borrow_mut();
                if b.is_empty() {
                    DIRTY.notify_one();
                }
                self.format.render(rec, &mut b);
                if b.len() >= FLUSH_AT {
                    write_all(*fd, &mut b);
                }
            }
            Sink::Syslog(s) => s.borrow_mut().send(&self.format, rec),
        }
    }

    fn flush(&self) {
        if let Sink::File { fd, buf } = &self.sink {
            write_all(*fd, &mut buf.borrow_mut());
        }
    }
}

/// What a log line needs from a request, kept before the request is forwarded.
pub struct Entry {
    method: Method,
    /// Path and query.
    target: Box<[u8]>,
    version: Version,
    /// Values of the request headers the format prints, in `req_names` order.
    headers: Vec<Option<HeaderValue>>,
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// Flush every access log of this worker (before a reopen and at exit).
pub fn flush_all(state: &WorkerState) {
    for l in state.access_logs.borrow().iter() {
        l.flush();
    }
}

/// The flush task: a line waits at most `FLUSH_EVERY` in its buffer, and nothing wakes the
/// worker while no line is written.
pub async fn flusher(state: Rc<WorkerState>) {
    loop {
        DIRTY.notified().await;
        tokio::time::sleep(FLUSH_EVERY).await;
        flush_all(&state);
    }
}

fn write_all(fd: RawFd, buf: &mut Vec<u8>) {
    // SAFETY: `fd` is one of `WorkerState::log_files`, open for the whole life of the worker
    // (a reopen `dup2`s a new file onto the same number and never closes it).
    let file = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut off = 0;
    while off < buf.len() {
        // A regular file rarely takes a short write; when it does the rest follows at once.
        match nix::unistd::write(file, &buf[off..]) {
            Ok(n) => off += n,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                rproxy_shared::error!("writing the access log: {}", std::io::Error::from(e));
                break;
            }
        }
    }
    buf.clear();
}

impl Syslog {
    fn send(&mut self, format: &LogFormat, rec: &Record<'_>) {
        self.line.clear();
        let _ = write!(self.line, "<{}>", self.pri);
        syslog_time(rec.ts, &mut self.line);
        let _ = write!(self.line, " rproxy[{}]: ", std::process::id());
        format.render(rec, &mut self.line);
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        for _ in 0..2 {
            if self.sock.is_none() {
                self.sock = UnixDatagram::unbound()
                    .and_then(|s| s.connect(&self.path).map(|()| s))
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .ok();
            }
            match &self.sock {
                Some(s) => match s.send(&self.line) {
                    Ok(_) => return,
                    // Full buffer: drop the line rather than block the worker.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(_) => self.sock = None,
                },
                None => return,
            }
        }
    }
}

/// `Nov 28 17:30:00` (RFC 3164 TIMESTAMP, local time).
fn syslog_time(ts: SystemTime, out: &mut Vec<u8>) {
    let secs = ts
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let Some(tm) = localtime::local_tm(secs) else {
        out.extend_from_slice(b"-");
        return;
    };
    let _ = write!(
        out,
        "{} {:>2} {:02}:{:02}:{:02}",
        localtime::month(&tm),
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    );
}

/// Request headers kept for the log line.
struct Snapshot<'a> {
    names: &'a [HeaderName],
    values: &'a [Option<HeaderValue>],
}

impl HeaderLookup for Snapshot<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        let i = self.names.iter().position(|n| n.as_str() == name)?;
        self.values.get(i)?.as_ref().map(|v| v.as_bytes())
    }
}

/// Response headers as the log format sees them.
struct Headers<'a>(&'a HeaderMap);

impl HeaderLookup for Headers<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|v| v.as_bytes())
    }
}
