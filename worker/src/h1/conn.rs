//! One HTTP/1.1 client connection, plain or TLS, from its first byte to its close: read a
//! request head, route it, read ahead a little of its body, forward it on a leased downstream
//! connection (in this task: `upstream::exchange`), write the response back, and go on with
//! the next request (pipelined bytes first). A WebSocket handshake answered `101` turns the
//! connection into a tunnel.
//!
//! Memory: between requests the connection holds no buffer: it waits for readability
//! ([`ReadReady`]), then takes a buffer from the worker's free list, and gives it back once
//! every byte read has been answered. Bodies pass through one bounded buffer per direction.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use rproxy_shared::logformat::HeaderLookup;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::clock::LazyTimer;
use crate::error::{self, ProxyError};
use crate::h1::body::{BodyError, BodyReader, Step};
use crate::h1::buffers::{self, Bufs};
use crate::h1::chunked::{self, Decoder};
use crate::h1::edit::{self, ClientConn, Framing, RequestEdit};
use crate::h1::head::{
    parse_request, HeadError, HeaderSpan, ReqBody, RequestHead, RespBody, Target,
};
use crate::h1::splice;
use crate::h1::upstream::{self, BodyPump, DsResponse};
use crate::http::Conn;
use crate::net::TcpStream;
use crate::pool::DsIo;
use crate::rewrite;
use crate::route::Route;
use crate::timed_io::TimedIo;

/// How much of a request body is read before a downstream connection is leased: a client that
/// announces a body and sends none (or drips it) holds no pooled connection meanwhile, and a
/// small body goes out with its head in one write.
pub const PREREAD: usize = 64 * 1024;

/// After rproxy closes a connection, what the client still sends is read and dropped for at
/// most this long (nginx's lingering close): closing with unread bytes would reset the
/// connection and could destroy the response in flight.
const LINGER: Duration = Duration::from_millis(500);

/// A stream that can say it has bytes to read without being given a buffer: how an idle
/// connection waits while holding none.
pub trait ReadReady {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Whether a connection on this stream, idle for [`crate::parked::PARK_AFTER`], leaves its
    /// task for the worker's idle set (plain TCP only: a TLS connection's state is more than
    /// its descriptor).
    const PARKABLE: bool = false;

    /// The socket, taken out of the worker's poller (`crate::net`), for the idle set
    /// (`PARKABLE` streams).
    fn into_parked(self) -> Option<std::net::TcpStream>
    where
        Self: Sized,
    {
        None
    }

    /// The plain TCP socket under this stream, for bodies spliced to it ([`splice`]).
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }

    /// How a connection on this stream holds the future that answers its buffered requests
    /// (~2.3 KiB). Boxed by default: a connection that is never parked keeps its task while
    /// idle, and the task is as large as its largest state.
    fn hold<F: Future>(busy: F) -> impl Future<Output = F::Output> {
        Box::pin(busy)
    }

    /// Write what the socket takes now, without a future or a waker: `WouldBlock` when it
    /// takes nothing or the stream cannot say (TLS). See [`write_now`].
    fn try_write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Offer `buf` to [`ReadReady::try_write`]; what the socket did not take now (all of it when
/// it takes nothing, or cannot say: TLS) is left for a write future. A response or a
/// forwarded request usually goes whole into the socket's buffer, and then no write future,
/// waker registration or cooperative-budget check is made (~150 instructions per write,
/// bench/callgrind.sh).
pub fn write_now<'b, S: ReadReady>(io: &mut S, buf: &'b [u8]) -> io::Result<&'b [u8]> {
    match io.try_write(buf) {
        Ok(n) => Ok(&buf[n.min(buf.len())..]),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(buf),
        Err(e) => Err(e),
    }
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    const PARKABLE: bool = true;

    fn into_parked(self) -> Option<std::net::TcpStream> {
        self.into_std()
            .map_err(|e| rproxy_shared::debug!("cannot park an idle connection: {e}"))
            .ok()
    }

    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }

    /// Inline: an idle plain connection leaves its task within a second (parked), and a box
    /// per request costs a `malloc` too large for the allocator's thread cache, a `free` and a
    /// 2.3 KiB copy (~790 instructions per request at 64 connections, bench/callgrind.sh).
    fn hold<F: Future>(busy: F) -> impl Future<Output = F::Output> {
        busy
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

/// How [`serve`] ended.
pub enum Served<S> {
    /// The connection is closed (or its stream is dropped with this).
    Closed,
    /// The connection was idle for [`crate::parked::PARK_AFTER`]: its stream, for the idle
    /// set, and the `read-timeout` deadline its next request head must meet.
    Idle(S, Option<Instant>),
}

/// Serve HTTP/1.1 on `stream` until either side closes or the connection has been idle long
/// enough to be parked (`S::PARKABLE` streams only); `first` holds bytes already read from it
/// (by the passthrough stage); `resumed`: the connection comes back from the idle set, its
/// next head due by this deadline.
pub async fn serve<S>(
    stream: S,
    conn: Rc<Conn>,
    first: Vec<u8>,
    resumed: Option<Option<Instant>>,
) -> Served<S>
where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin,
{
    let mut io = TimedIo::new(stream, conn.server.routes.connection_timeouts().write);
    if let Some(l) = &conn.write_limit {
        io = io.with_write_limit(l.clone());
    }
    let mut first = (!first.is_empty()).then_some(first);
    let mut resumed = resumed;
    // One timer for every idle wait of the connection, moved lazily (`LazyTimer`): a timer
    // per wait cost an insertion into tokio's wheel and a removal per request (~600
    // instructions, bench/callgrind.sh), moving one timer per request ~115, a lazy one a store.
    let mut idle_timer = LazyTimer::default();
    loop {
        // `read-timeout`: the idle wait and the head read together (a parked connection's
        // deadline runs on while it is parked).
        let now = crate::clock::tokio_now();
        let deadline = match resumed.take() {
            Some(d) => d,
            None => conn
                .server
                .routes
                .connection_timeouts()
                .read
                .map(|d| now + d),
        };
        let data = match first.take() {
            Some(b) => b,
            None => match first_bytes(&mut io, now, deadline, &mut idle_timer).await {
                Wait::Data(b) => b,
                Wait::Closed => return Served::Closed,
                Wait::Park => return Served::Idle(io.into_inner(), deadline),
            },
        };
        match S::hold(busy(&mut io, &conn, Bufs::with(data), deadline)).await {
            Next::Idle => {}
            Next::Close => return Served::Closed,
            Next::Linger(bufs) => {
                // Boxed too: its timer would otherwise sit in every idle connection's task.
                Box::pin(linger(&mut io, bufs)).await;
                return Served::Closed;
            }
        }
    }
}

/// What the wait for a connection's next request ended with.
enum Wait {
    /// Its first bytes, in a buffer from the free list.
    Data(Vec<u8>),
    /// Closed, failed or timed out.
    Closed,
    /// Idle for [`crate::parked::PARK_AFTER`], on a stream that can be parked.
    Park,
}

/// Wait, holding no buffer, until the client sends something; then read it into a buffer
/// from the free list. One timer covers both the `read-timeout` deadline and the moment to
/// park, so parking costs nothing while requests keep coming.
async fn first_bytes<S>(
    io: &mut TimedIo<S>,
    now: Instant,
    deadline: Option<Instant>,
    timer: &mut LazyTimer,
) -> Wait
where
    S: AsyncRead + ReadReady + Unpin,
{
    let park_at = S::PARKABLE
        .then(|| now + crate::parked::PARK_AFTER)
        .filter(|p| deadline.is_none_or(|d| *p < d));
    timer.set(park_at.or(deadline));
    // The first poll only registers for readability (the last read emptied the socket, and
    // a buffer is not held while waiting); later ones are wake-ups, mostly for bytes, and
    // read at once. A read that finds nothing (readiness was stale: a TLS record that
    // carried no data, or the last read took exactly what was there) gives the buffer back.
    let mut polled = false;
    std::future::poll_fn(|cx| {
        let ready = std::mem::replace(&mut polled, true)
            || match io.poll_read_ready(cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(Wait::Closed),
                // Bytes are there already (pipelined, or a quick client).
                Poll::Ready(Ok(())) => true,
                Poll::Pending => false,
            };
        if ready {
            let mut buf = buffers::take_head();
            match buffers::poll_read_into(io, cx, &mut buf) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Wait::Closed),
                Poll::Ready(Ok(_)) => return Poll::Ready(Wait::Data(buf)),
                Poll::Pending => buffers::give(buf),
            }
        }
        timer.poll(cx).map(|()| match park_at {
            Some(_) => Wait::Park,
            None => Wait::Closed,
        })
    })
    .await
}

/// What the connection does after its buffered bytes were answered.
enum Next {
    /// Wait for the next request, holding no buffer.
    Idle,
    /// Close now (the client closed, timed out, or a tunnel ended).
    Close,
    /// rproxy ends the connection after its response: lingering close.
    Linger(Bufs),
}

/// Answer requests while bytes are buffered (pipelining), reading heads as they come.
async fn busy<S>(
    io: &mut TimedIo<S>,
    conn: &Rc<Conn>,
    mut bufs: Bufs,
    mut deadline: Option<Instant>,
) -> Next
where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin,
{
    let max = conn.server.max_head;
    loop {
        let head = loop {
            match parse_request(&bufs.data, max, &mut bufs.spans) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(e) => {
                    refuse_head(io, conn, &bufs, e).await;
                    return Next::Linger(bufs);
                }
            }
            if bufs.data.len() == bufs.data.capacity() {
                // A head larger than one buffer (up to `max-header-size`).
                bufs.data
                    .reserve(buffers::SIZE.min(max.saturating_sub(bufs.data.len()).max(1)));
            }
            let read = buffers::read_into(io, &mut bufs.data);
            let n = match deadline {
                Some(t) => match tokio::time::timeout_at(t, read).await {
                    Ok(r) => r,
                    // hyper's way, kept: a head not complete in time closes without an answer.
                    Err(_) => return Next::Close,
                },
                None => read.await,
            };
            match n {
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            }
        };
        let state = &conn.server.state;
        state.requests.set(state.requests.get() + 1);
        let Some(pos) = request(io, conn, &mut bufs, head).await else {
            return Next::Linger(bufs);
        };
        if pos == usize::MAX {
            return Next::Close;
        }
        bufs.data.drain(..pos.min(bufs.data.len()));
        if bufs.data.is_empty() {
            return Next::Idle;
        }
        deadline = conn
            .server
            .routes
            .connection_timeouts()
            .read
            .map(|d| crate::clock::tokio_now() + d);
    }
}

/// A head rproxy answers without routing it: 400 (malformed, or framing a proxy must refuse) or
/// 431 (too large), logged in the server's access log.
async fn refuse_head<S>(io: &mut TimedIo<S>, conn: &Conn, bufs: &Bufs, e: HeadError)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (status, why) = match e {
        HeadError::TooLarge => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "head too large",
        ),
        HeadError::Malformed(why) => (StatusCode::BAD_REQUEST, why),
        HeadError::Refused {
            why,
            method,
            target,
        } => {
            rproxy_shared::debug!("400 for {}: {why}", conn.info.peer);
            let entry = conn.server.routes.server_log().map(|l| {
                (
                    l,
                    l.begin_h1(
                        method.of(&bufs.data),
                        target.of(&bufs.data),
                        minor_of(&bufs.data),
                        &RawHeaders {
                            buf: &bufs.data,
                            spans: &bufs.spans,
                        },
                    ),
                )
            });
            if let Some((l, entry)) = entry {
                l.finish_raw(
                    &entry,
                    &conn.info,
                    None,
                    StatusCode::BAD_REQUEST,
                    &OwnHeaders { close: true },
                    None,
                );
            }
            crate::metrics::refused(conn.server.index, 400);
            let _ = answer(io, StatusCode::BAD_REQUEST, ClientConn::Close, false).await;
            return;
        }
    };
    rproxy_shared::debug!("{status} for {}: {why}", conn.info.peer);
    crate::metrics::refused(conn.server.index, status.as_u16());
    if let Some(log) = conn.server.routes.server_log() {
        log.refused(&conn.info, status.as_u16());
    }
    let _ = answer(io, status, ClientConn::Close, false).await;
}

/// The HTTP version of a request line (for a refused head's log line): 1.0 or 1.1.
fn minor_of(buf: &[u8]) -> u8 {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if buf[..line_end].windows(8).any(|w| w == b"HTTP/1.0") {
        0
    } else {
        1
    }
}

/// One request, its head parsed from `bufs`: routed, forwarded, answered. `Some(pos)`: keep the
/// connection, the next request starts at `bufs.data[pos..]` (`usize::MAX`: close without
/// lingering); `None`: close after a lingering read.
async fn request<S>(
    io: &mut TimedIo<S>,
    conn: &Rc<Conn>,
    bufs: &mut Bufs,
    head: RequestHead,
) -> Option<usize>
where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin,
{
    let server = &conn.server;
    let routes = &server.routes;
    #[cfg(feature = "test-faults")]
    panic_if_asked(head.target.of(&bufs.data));
    let head_request = head.method.of(&bufs.data) == b"HEAD";
    // hyper closed after a request it could have upgraded and did not (CONNECT, or Upgrade on
    // HTTP/1.1); kept, so a client never sends on a connection it meant to switch.
    let mut last = server.state.draining()
        || !head.keep_alive()
        || head.connect
        || (head.minor == 1 && head.upgrade);
    let reply = Reply {
        conn,
        minor: head.minor,
        head_request,
        timer: crate::metrics::RequestTimer::start(server.index),
    };
    let entry_of = |l: &crate::access_log::AccessLog, b: &Bufs| {
        l.begin_h1(
            head.method.of(&b.data),
            log_target(&b.data, &head),
            head.minor,
            &RawHeaders {
                buf: &b.data,
                spans: &b.spans,
            },
        )
    };
    if head.connect {
        let log = routes.server_log();
        let entry = log.map(|l| entry_of(l, bufs));
        own(
            io,
            &reply,
            ProxyError::MethodNotAllowed,
            true,
            log.zip(entry.as_ref()),
            None,
            None,
        )
        .await;
        return None;
    }
    let route = {
        let host = head.host.map(|h| h.of(&bufs.data));
        let path = route_path(&bufs.data, &head);
        routes.lookup(conn.info.sni(), host, path)
    };
    let route = match route {
        Ok(r) => r,
        Err(log) => {
            if let Some(l) = &conn.write_limit {
                l.set(routes.connection_timeouts().write);
            }
            let entry = log.map(|l| entry_of(l, bufs));
            let close = last || head.body != ReqBody::None;
            own(
                io,
                &reply,
                ProxyError::NotFound,
                close,
                log.zip(entry.as_ref()),
                None,
                None,
            )
            .await;
            return (!close).then_some(head.len);
        }
    };
    if let Some(l) = &conn.write_limit {
        // One response at a time: this one is written under its rule's limit.
        l.set(route.timeouts.write);
    }
    // A tunnel starts only on a connection's first request (`passthrough.rs`); this one is
    // forwarded as HTTP and the client's next connection tunnels.
    last |= route.passthrough;
    let entry = route.log.as_ref().map(|l| entry_of(l, bufs));
    let log = route.log.as_ref().zip(entry.as_ref());
    if route.no_downstreams {
        let close = last || head.body != ReqBody::None;
        own(
            io,
            &reply,
            ProxyError::NotFound,
            close,
            log,
            Some(route),
            None,
        )
        .await;
        return (!close).then_some(head.len);
    }
    if head.expect_continue && head.minor == 1 && head.body != ReqBody::None {
        // The body is read ahead below, so the client is told to send it now; the downstream
        // never sees the Expect.
        if io
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
        {
            return Some(usize::MAX);
        }
    }
    // Most requests have no body: no preread future for them.
    if head.body != ReqBody::None {
        if let Err(e) = preread(io, &mut bufs.data, &head, route.timeouts.read).await {
            own(io, &reply, e, true, log, Some(route), None).await;
            return None;
        }
    }
    // Taken before the wait for a downstream connection (the pending queue): small unless a
    // body was read ahead.
    let mut out = if bufs.data.len() + 512 <= buffers::HEAD {
        buffers::take_head()
    } else {
        buffers::take()
    };
    if let Err(e) = forwarded_head(&mut out, bufs, &head, route, conn) {
        buffers::give(out);
        let close = last || head.body != ReqBody::None;
        own(io, &reply, e, close, log, Some(route), None).await;
        return (!close).then_some(head.len);
    }
    let chunked = head.body == ReqBody::Chunked;
    let mut reader = BodyReader::request(head.body, head.len);
    if let Err(e) = body_ahead(&mut out, &bufs.data, &mut reader, chunked) {
        buffers::give(out);
        own(io, &reply, e, true, log, Some(route), None).await;
        return None;
    }
    let result = {
        let mut pump = ClientPump {
            io: &mut *io,
            buf: &mut bufs.data,
            reader: &mut reader,
            read_timeout: route.timeouts.read,
            chunked,
        };
        upstream::exchange(&server.pool, &route.members, &out, &mut pump, head_request).await
    };
    // Sent: the same buffer takes the response head (one free-list trip per request fewer).
    out.clear();
    let mut resp = match result {
        Ok(r) => r,
        Err((e, used)) => {
            buffers::give(out);
            let close = last || !reader.is_done();
            own(io, &reply, e, close, log, Some(route), used).await;
            return (!close).then_some(reader.pos);
        }
    };
    let used = resp.used();
    if resp.head.status == 101 {
        buffers::give(out);
        if !head.websocket {
            // Dropping the response closes the connection the downstream meant to switch.
            drop(resp);
            own(
                io,
                &reply,
                ProxyError::UnrequestedSwitch,
                last,
                log,
                Some(route),
                Some(used),
            )
            .await;
            return (!last).then_some(reader.pos);
        }
        reply
            .timer
            .done_at(route.metrics_rule, Some(101), resp.head_at);
        if let Some((l, e)) = log {
            l.finish_raw(
                e,
                &conn.info,
                route.name(),
                StatusCode::SWITCHING_PROTOCOLS,
                &resp_headers(&resp),
                Some(used),
            );
        }
        let pending = bufs.data[reader.pos.min(bufs.data.len())..].to_vec();
        tunnel(io, pending, resp).await;
        return Some(usize::MAX);
    }
    reply
        .timer
        .done_at(route.metrics_rule, Some(resp.head.status), resp.head_at);
    if let Some((l, e)) = log {
        let status = StatusCode::from_u16(resp.head.status).unwrap_or(StatusCode::BAD_GATEWAY);
        l.finish_raw(
            e,
            &conn.info,
            route.name(),
            status,
            &resp_headers(&resp),
            Some(used),
        );
    }
    // A body without a length goes to an HTTP/1.1 client chunked, to HTTP/1.0 until close.
    let unframed = matches!(resp.head.body, RespBody::Chunked | RespBody::Close);
    let client_chunked = unframed && head.minor == 1;
    let close = last || (unframed && head.minor == 0) || !reader.is_done();
    let cc = if close {
        ClientConn::Close
    } else if head.minor == 0 {
        ClientConn::KeepAlive
    } else {
        ClientConn::Persistent
    };
    edit::response_head(
        &mut out,
        &resp.bufs.data,
        &resp.head,
        &resp.bufs.spans,
        &route.strip,
        client_chunked,
        cc,
    );
    resp.lease.streaming();
    let relayed = relay(io, &mut out, &mut resp, client_chunked, server.index).await;
    buffers::give(out);
    if relayed.is_err() {
        // A response already started is cut, never patched.
        return Some(usize::MAX);
    }
    resp.finish();
    (!close).then_some(reader.pos)
}

/// The path the route table matches: the target's path, without the query (bytes: the table
/// checks them as UTF-8 only when a rule is to match them).
fn route_path<'a>(buf: &'a [u8], head: &RequestHead) -> &'a [u8] {
    let t = match head.form {
        Target::Origin => head.target.of(buf),
        Target::Absolute { path, .. } if path.is_empty() => b"/",
        Target::Absolute { path, .. } => path.of(buf),
        Target::Asterisk => b"*",
    };
    t.split(|&b| b == b'?').next().unwrap_or(t)
}

/// `test-faults` builds: panic when the target is `RPROXY_TEST_PANIC_TARGET` (read once), so
/// a test of the real binary can see a connection's panic end that connection only.
#[cfg(feature = "test-faults")]
fn panic_if_asked(target: &[u8]) {
    static TARGET: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    let asked = TARGET.get_or_init(|| {
        std::env::var_os("RPROXY_TEST_PANIC_TARGET")
            .map(|t| std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()).to_vec())
    });
    if asked.as_deref() == Some(target) {
        panic!("RPROXY_TEST_PANIC_TARGET");
    }
}

/// The target as the access log prints it (origin-form).
fn log_target<'a>(buf: &'a [u8], head: &RequestHead) -> &'a [u8] {
    match head.form {
        Target::Absolute { path, .. } if path.is_empty() => b"/",
        Target::Absolute { path, .. } => path.of(buf),
        _ => head.target.of(buf),
    }
}

/// Read the body ahead into `buf` (after the head): until it ends, [`PREREAD`] bytes are in,
/// or (chunked) its first data proved well-formed. Each read waits at most `read_timeout`.
async fn preread<S>(
    io: &mut TimedIo<S>,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    read_timeout: Option<Duration>,
) -> Result<(), ProxyError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let want = match head.body {
        ReqBody::None => return Ok(()),
        ReqBody::Length(n) => n.min(PREREAD as u64) as usize,
        ReqBody::Chunked => PREREAD,
    };
    let mut probe = Decoder::new();
    let mut at = head.len;
    loop {
        let have = buf.len() - head.len;
        if have >= want {
            return Ok(());
        }
        if head.body == ReqBody::Chunked {
            while at < buf.len() {
                let d = probe
                    .decode(&buf[at..])
                    .map_err(|e| ProxyError::BadBody(e.to_string()))?;
                at += d.consumed;
                if !d.data.is_empty() || d.done {
                    return Ok(());
                }
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buffers::SIZE.min(want - have).max(4096));
        }
        let read = buffers::read_into(io, buf);
        let n = match read_timeout {
            Some(d) => crate::clock::timeout(d, read)
                .await
                .map_err(|_| ProxyError::ClientBodyTimeout)?,
            None => read.await,
        };
        match n {
            Ok(0) => return Err(ProxyError::BadBody("client closed mid-body".into())),
            Ok(_) => {}
            Err(e) => return Err(ProxyError::BadBody(e.to_string())),
        }
    }
}

/// Write the head for the downstream into `out` (DESIGN section 7).
fn forwarded_head(
    out: &mut Vec<u8>,
    bufs: &Bufs,
    head: &RequestHead,
    route: &Route,
    conn: &Conn,
) -> Result<(), ProxyError> {
    let buf = &bufs.data;
    let origin: &[u8] = match head.form {
        Target::Absolute { path, .. } if path.is_empty() => b"/",
        Target::Absolute { path, .. } => path.of(buf),
        _ => head.target.of(buf),
    };
    // Checked as UTF-8 only for a route that rewrites (an invalid target is not rewritten).
    let rewritten = match head.form {
        Target::Asterisk => None,
        _ if !route.has_rewrites() => None,
        _ => std::str::from_utf8(origin)
            .ok()
            .and_then(|pq| rewrite::rewrite(route.rewrites(), pq)),
    };
    let target = rewritten.as_deref().map_or(origin, str::as_bytes);
    if rewritten.is_some() && !valid_target(target) {
        return Err(ProxyError::BadRewrite);
    }
    let info = &conn.info;
    let e = RequestEdit {
        method: head.method.of(buf),
        target,
        host: match head.form {
            Target::Absolute { authority, .. } => Some(authority.of(buf)),
            _ => None,
        },
        websocket: head.websocket,
        framing: match head.body {
            ReqBody::None => Framing::None,
            ReqBody::Length(n) => Framing::Length(n),
            ReqBody::Chunked => Framing::Chunked,
        },
        xff: route
            .headers
            .x_forwarded_for
            .then(|| info.forwarded.as_bytes()),
        xff_chain: info.forwarded.trusted,
        xfp: route
            .headers
            .x_forwarded_proto
            .then(|| info.scheme.as_str().as_bytes()),
        extension_names: &route.extension_names,
        connection_names: head.conn.other,
    };
    edit::request_head(out, buf, &bufs.spans, &e, |out| {
        if let Some(tls) = &info.tls {
            tls.each_header(&route.headers, &route.extension_names, |name, value| {
                edit::line(out, name.as_str().as_bytes(), value.as_bytes());
            });
        }
    });
    Ok(())
}

/// A rewritten target a downstream can parse: origin-form, visible ASCII.
fn valid_target(t: &[u8]) -> bool {
    t.first() == Some(&b'/') && t.iter().all(|&b| b > b' ' && b < 0x7f)
}

/// Append what the client sent of the body so far (framed for the downstream) to `out`.
fn body_ahead(
    out: &mut Vec<u8>,
    buf: &[u8],
    reader: &mut BodyReader,
    chunked: bool,
) -> Result<(), ProxyError> {
    loop {
        match reader
            .step(buf)
            .map_err(|e| ProxyError::BadBody(e.to_string()))?
        {
            Step::Data(r) => frame(out, &buf[r], chunked),
            Step::Done => {
                if chunked {
                    out.extend_from_slice(chunked::LAST_CHUNK);
                }
                return Ok(());
            }
            Step::NeedMore => return Ok(()),
        }
    }
}

fn frame(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if chunked {
        let mut line = [0; 18];
        out.extend_from_slice(chunked::size_line(data.len(), &mut line));
        out.extend_from_slice(data);
        out.extend_from_slice(chunked::CHUNK_END);
    } else {
        out.extend_from_slice(data);
    }
}

/// The rest of a client's request body, read through the connection's buffer.
struct ClientPump<'a, S> {
    io: &'a mut TimedIo<S>,
    buf: &'a mut Vec<u8>,
    reader: &'a mut BodyReader,
    read_timeout: Option<Duration>,
    chunked: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> BodyPump for ClientPump<'_, S> {
    fn done(&self) -> bool {
        self.reader.is_done()
    }

    async fn pump(&mut self, ds: &mut DsIo) -> Result<(), ProxyError> {
        if self.reader.is_done() {
            return Ok(());
        }
        let to_ds = |e| ProxyError::downstream("writing the request body", e);
        loop {
            let next = self.reader.next(&mut *self.io, &mut *self.buf);
            let r = match self.read_timeout {
                Some(d) => crate::clock::timeout(d, next)
                    .await
                    .map_err(|_| ProxyError::ClientBodyTimeout)?,
                None => next.await,
            };
            let range = match r {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(BodyError::Eof) => {
                    return Err(ProxyError::BadBody("client closed mid-body".into()))
                }
                Err(e) => return Err(ProxyError::BadBody(e.to_string())),
            };
            if self.chunked {
                let mut line = [0; 18];
                let size = chunked::size_line(range.len(), &mut line);
                ds.write_all(size).await.map_err(to_ds)?;
                ds.write_all(&self.buf[range]).await.map_err(to_ds)?;
                ds.write_all(chunked::CHUNK_END).await.map_err(to_ds)?;
            } else {
                ds.write_all(&self.buf[range]).await.map_err(to_ds)?;
            }
        }
        if self.chunked {
            ds.write_all(chunked::LAST_CHUNK).await.map_err(to_ds)?;
        }
        Ok(())
    }
}

/// Stream the response body to the client through `out` (which holds the head): small pieces
/// are gathered and written when the downstream has nothing more buffered, large ones written
/// straight from the downstream's buffer. `Err`: either side failed, the response is cut.
async fn relay<S>(
    io: &mut TimedIo<S>,
    out: &mut Vec<u8>,
    resp: &mut DsResponse,
    chunked: bool,
    server: usize,
) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin,
{
    loop {
        // What `out` holds (the head, or pieces gathered) with the rest of the body spliced
        // right behind it when it can be; else written as it is.
        if splices(resp) && spliced(io, resp, server, out, 0..0).await? {
            out.clear();
        }
        if !out.is_empty() && !resp.body.buffered(&resp.bufs.data) {
            let rest = write_now(io, out).map_err(drop)?;
            if !rest.is_empty() {
                io.write_all(rest).await.map_err(drop)?;
            }
            out.clear();
        }
        // A body already buffered (a small one comes with its head) without a future.
        let next = match resp.body.step(&resp.bufs.data) {
            Ok(Step::Data(r)) => Ok(Some(r)),
            Ok(Step::Done) => Ok(None),
            Ok(Step::NeedMore) => resp.next().await,
            Err(e) => Err(e),
        };
        let Some(r) = next.map_err(|e| {
            rproxy_shared::debug!("response body cut: {e}");
        })?
        else {
            break;
        };
        let data = &resp.bufs.data[r.clone()];
        if chunked {
            let mut line = [0; 18];
            out.extend_from_slice(chunked::size_line(data.len(), &mut line));
        }
        // Room left for a chunk's CRLF and the next size line: `out` never grows.
        if out.len() + data.len() + 32 <= out.capacity() {
            out.extend_from_slice(data);
        } else {
            // The head (or a chunk-size line) and the data, uncopied: with the rest of the
            // body spliced right behind them when it can be, else in one system call.
            if chunked || !(splices(resp) && spliced(io, resp, server, out, r.clone()).await?) {
                write_two(io, out, &resp.bufs.data[r]).await.map_err(drop)?;
            }
            out.clear();
        }
        if chunked {
            out.extend_from_slice(chunked::CHUNK_END);
        }
    }
    if chunked {
        out.extend_from_slice(chunked::LAST_CHUNK);
    }
    if !out.is_empty() {
        let rest = write_now(io, out).map_err(drop)?;
        if !rest.is_empty() {
            io.write_all(rest).await.map_err(drop)?;
        }
        out.clear();
    }
    io.flush().await.map_err(drop)
}

/// Whether the rest of the body is for [`spliced`]: nothing more of it buffered, long enough,
/// and the kernel has not refused to splice.
fn splices(resp: &DsResponse) -> bool {
    !resp.body.buffered(&resp.bufs.data)
        && resp.body.length_left().is_some_and(|l| l >= splice::MIN)
        && splice::available()
}

/// `head` and the buffer's `first` bytes (what is still to be written before the body's
/// rest, in order), then the rest of a body the caller found [`splices`], when both ends are
/// plain TCP: spliced by the kernel ([`splice::relay`], which says how the head goes with
/// it). `Ok(true)`: all of it went. `Ok(false)`: nothing was done (not plain TCP, or the
/// kernel refused): the caller writes and copies. `Err`: the response is cut.
async fn spliced<S>(
    io: &mut TimedIo<S>,
    resp: &mut DsResponse,
    server: usize,
    head: &[u8],
    first: Range<usize>,
) -> Result<bool, ()>
where
    S: ReadReady,
{
    let Some(left) = resp.body.length_left() else {
        return Ok(false);
    };
    let write_timeout = io.write_limit();
    let read_timeout = resp.read_timeout;
    let ahead = resp.lease.downstream().high_watermark;
    let (Some(client), Some(ds)) = (io.get_ref().tcp(), resp.lease.io()) else {
        return Ok(false);
    };
    let first = &resp.bufs.data[first];
    let counted = |n: usize| {
        crate::metrics::count(
            server,
            rproxy_shared::metrics::ServerCounter::BytesOut,
            n as u64,
        );
    };
    match splice::relay(
        ds.get_ref(),
        client,
        [head, first],
        left,
        ahead,
        read_timeout,
        write_timeout,
        counted,
    )
    .await
    {
        splice::Spliced::Done => {
            resp.body.skip(left);
            Ok(true)
        }
        splice::Spliced::Unsupported => Ok(false),
        splice::Spliced::Failed(e) => {
            rproxy_shared::debug!("response body cut: {e}");
            Err(())
        }
    }
}

/// Write `a` then `b` with vectored writes (one `writev` when the socket takes both).
async fn write_two<S>(io: &mut TimedIo<S>, a: &[u8], b: &[u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a, mut b) = (a, b);
    while !a.is_empty() {
        let n = io
            .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    io.write_all(b).await
}

/// Raw bytes both ways after `101 Switching Protocols`, until either side closes; `pending` is
/// what the client sent after its request head.
async fn tunnel<S>(io: &mut TimedIo<S>, pending: Vec<u8>, resp: DsResponse)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(resp.head.len + 64);
    edit::response_head(
        &mut head,
        &resp.bufs.data,
        &resp.head,
        &resp.bufs.spans,
        &[],
        false,
        ClientConn::Persistent,
    );
    let Some((mut ds, rest)) = resp.into_tunnel() else {
        return;
    };
    head.extend_from_slice(&rest);
    if io.write_all(&head).await.is_err() || ds.write_all(&pending).await.is_err() {
        return;
    }
    drop((head, pending));
    let _ = tokio::io::copy_bidirectional(io, &mut ds).await;
}

/// What rproxy's own answers to one request need to know about it.
struct Reply<'a> {
    conn: &'a Conn,
    minor: u8,
    head_request: bool,
    /// Counts the request in the metrics where its access-log line is written.
    timer: crate::metrics::RequestTimer,
}

/// rproxy's own answer to a request (`e` says which), logged in `log` when there is one.
async fn own<S>(
    io: &mut TimedIo<S>,
    reply: &Reply<'_>,
    e: ProxyError,
    close: bool,
    log: Option<(&Rc<crate::access_log::AccessLog>, &crate::access_log::Entry)>,
    route: Option<&Route>,
    used: Option<crate::pool::Used>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = reply.conn;
    let status = e.status();
    let close = close || e.closes();
    match used {
        Some(u) => rproxy_shared::debug!("{status} for {} from {}: {e}", conn.info.peer, u.addr),
        None => rproxy_shared::debug!("{status} for {}: {e}", conn.info.peer),
    }
    let rule = route.and_then(Route::name);
    reply
        .timer
        .done(route.map_or(0, |r| r.metrics_rule), Some(status.as_u16()));
    if let Some((l, entry)) = log {
        l.finish_raw(entry, &conn.info, rule, status, &OwnHeaders { close }, used);
    }
    let cc = if close {
        ClientConn::Close
    } else if reply.minor == 0 {
        ClientConn::KeepAlive
    } else {
        ClientConn::Persistent
    };
    let _ = answer(io, status, cc, reply.head_request).await;
}

/// Write rproxy's own short text response.
async fn answer<S>(
    io: &mut TimedIo<S>,
    status: StatusCode,
    cc: ClientConn,
    no_body: bool,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let text = error::text(status);
    let mut out = Vec::with_capacity(160);
    edit::status_line(&mut out, status.as_u16(), b"");
    out.extend_from_slice(b"content-type: text/plain\r\ncontent-length: ");
    edit::decimal(&mut out, text.len() as u64);
    out.extend_from_slice(b"\r\n");
    edit::connection(&mut out, cc);
    out.extend_from_slice(b"\r\n");
    if !no_body {
        out.extend_from_slice(text.as_bytes());
    }
    io.write_all(&out).await?;
    io.flush().await
}

/// Close after rproxy's last response: send FIN, then read and drop what the client still
/// sends for a short while, so that closing does not reset the connection under the response.
async fn linger<S>(io: &mut TimedIo<S>, mut bufs: Bufs)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if io.shutdown().await.is_err() {
        return;
    }
    let until = Instant::now() + LINGER;
    if bufs.data.capacity() == 0 {
        return;
    }
    let mut total = 0;
    while total < PREREAD {
        bufs.data.clear();
        match tokio::time::timeout_at(until, buffers::read_into(io, &mut bufs.data)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => return,
        }
    }
}

/// Request header lines as the access log looks them up.
struct RawHeaders<'a> {
    buf: &'a [u8],
    spans: &'a [HeaderSpan],
}

impl HeaderLookup for RawHeaders<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.spans
            .iter()
            .find(|h| h.name.of(self.buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| h.value.of(self.buf))
    }
}

fn resp_headers(resp: &DsResponse) -> RawHeaders<'_> {
    RawHeaders {
        buf: &resp.bufs.data,
        spans: &resp.bufs.spans,
    }
}

/// The headers of rproxy's own responses, for `{DS_HDR}`.
struct OwnHeaders {
    close: bool,
}

impl HeaderLookup for OwnHeaders {
    fn get(&self, name: &str) -> Option<&[u8]> {
        match name {
            "content-type" => Some(b"text/plain"),
            "connection" if self.close => Some(b"close"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::rc::Rc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::LocalSet;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{serve, ReadReady};
    use crate::h1::buffers;
    use crate::server::ServerCtx;
    use crate::state::WorkerState;
    use crate::testing::{echo_origin, flat, read_responses, roundtrip, start};

    /// More than the socket takes at once: `write_now` sends what the socket takes and
    /// leaves the rest, which the write future sends, in order, through `TimedIo`.
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_goes_on_after_a_partial_try_write() {
        // The proxy's side is the worker's own socket type (`crate::net`: it needs a
        // `LocalSet`), the peer a tokio socket.
        LocalSet::new()
            .run_until(async {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let a = crate::net::TcpStream::connect(l.local_addr().unwrap())
                    .await
                    .unwrap();
                let (mut b, _) = l.accept().await.unwrap();
                let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
                let mut a = crate::timed_io::TimedIo::new(a, Some(Duration::from_secs(10)));
                // Fill the socket, then make some room: the next offer is taken in part.
                let rest = super::write_now(&mut a, &data).unwrap();
                assert!(!rest.is_empty() && rest.len() < data.len());
                let mut got = vec![0u8; 256 << 10];
                b.read_exact(&mut got).await.unwrap();
                let mut taken = 0;
                for _ in 0..100 {
                    let left = super::write_now(&mut a, rest).unwrap();
                    taken = rest.len() - left.len();
                    if taken > 0 {
                        break;
                    }
                    // The room is seen once the reactor reports the socket writable again.
                    a.get_ref().writable().await.unwrap();
                }
                assert!(taken > 0 && taken < rest.len(), "{taken} of {}", rest.len());
                let rest = &rest[taken..];
                let writer = async move {
                    a.write_all(rest).await.unwrap();
                    drop(a);
                };
                let reader = async {
                    b.read_to_end(&mut got).await.unwrap();
                    got
                };
                let ((), got) = tokio::join!(writer, reader);
                assert_eq!(got.len(), 8 << 20);
                assert!(got.iter().enumerate().all(|(i, &v)| v == (i % 251) as u8));
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn pipelined_requests_are_answered_in_order() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&flat(echo_origin().await)).await;
                let r = roundtrip(
                    proxy.addr,
                    b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyzGET /b HTTP/1.1\r\nHost: a\r\n\r\nPOST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                )
                .await;
                let a = r.find("/a xff").unwrap();
                let b = r.find("/b xff").unwrap();
                let c = r.find("/c xff").unwrap();
                assert!(a < b && b < c, "{r}");
                assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 3, "{r}");
                assert!(r.contains("connection: close"), "{r}");
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_early_answer_to_an_upload_reaches_the_client() {
        LocalSet::new()
            .run_until(async {
                // An origin that refuses uploads after their head, without reading the body.
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let origin = l.local_addr().unwrap();
                tokio::task::spawn_local(async move {
                    while let Ok((mut s, _)) = l.accept().await {
                        tokio::task::spawn_local(async move {
                            let mut head = Vec::new();
                            let mut b = [0u8; 1];
                            while !head.ends_with(b"\r\n\r\n") {
                                if s.read(&mut b).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                head.push(b[0]);
                            }
                            let _ = s
                                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n")
                                .await;
                            let _ = s.shutdown().await;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        });
                    }
                });
                let proxy = start(&flat(origin)).await;
                let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                let size = 8 << 20;
                s.write_all(format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let (mut rd, mut wr) = s.into_split();
                let writer = tokio::task::spawn_local(async move {
                    let chunk = vec![b'x'; 64 * 1024];
                    for _ in 0..size / chunk.len() {
                        if wr.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                });
                let mut out = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut out)).await;
                writer.abort();
                let out = String::from_utf8_lossy(&out);
                assert!(out.starts_with("HTTP/1.1 413 Payload Too Large\r\n"), "{out}");
                assert!(out.contains("connection: close"), "{out}");
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn http10_keep_alive_only_when_asked() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&flat(echo_origin().await)).await;
                let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                s.write_all(b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                    .await
                    .unwrap();
                let r = read_responses(&mut s, 1).await;
                assert!(r.contains("connection: keep-alive"), "{r}");
                s.write_all(b"GET /l HTTP/1.0\r\n\r\n").await.unwrap();
                let mut rest = String::new();
                s.read_to_string(&mut rest).await.unwrap();
                assert!(
                    rest.contains("connection: close")
                        && rest.ends_with("/l xff=127.0.0.1;xfp=http"),
                    "{rest}"
                );
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn idle_keep_alive_connections_hold_no_buffer() {
        LocalSet::new()
            .run_until(async {
                let proxy = start(&flat(echo_origin().await)).await;
                let mut conns = Vec::new();
                let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                s.write_all(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
                    .await
                    .unwrap();
                read_responses(&mut s, 1).await;
                conns.push(s);
                // Everything the first exchange took is back on the free list.
                let free = buffers::free_count();
                assert!(free >= 2, "{free}");
                for i in 0..20 {
                    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
                    s.write_all(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
                        .await
                        .unwrap();
                    read_responses(&mut s, 1).await;
                    conns.push(s);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                // 21 connections open and idle: none kept a buffer.
                assert_eq!(buffers::free_count(), free);
            })
            .await;
    }

    /// A stream that is never parked (as TLS): what [`ReadReady`]'s defaults give.
    impl ReadReady for tokio::io::DuplexStream {
        fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            unreachable!("only its future's size is measured")
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_connection_task_is_small() {
        LocalSet::new()
            .run_until(async {
                let cfg = std::sync::Arc::new(flat("127.0.0.1:9".parse().unwrap()));
                let state =
                    WorkerState::new(std::sync::Arc::clone(&cfg), Vec::new(), false, Vec::new());
                let server = ServerCtx::start(&cfg, 0, &state).unwrap();
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let s = crate::net::TcpStream::connect(l.local_addr().unwrap())
                    .await
                    .unwrap();
                let info = crate::tls::plain(s.peer_addr().unwrap(), &[]);
                let conn = Rc::new(crate::http::Conn::new(server, info));
                // A connection that keeps its task while idle (TLS): its requests' future is
                // boxed, so the task holds no more than the idle wait (no buffer either).
                let (stream, _peer) = tokio::io::duplex(64);
                let fut = serve(stream, Rc::clone(&conn), Vec::new(), None);
                let size = std::mem::size_of_val(&fut);
                assert!(size < 1024, "{size}");
                // A plain connection holds its requests' future inline (no allocation per
                // request) and leaves its task for the idle set after a second idle
                // (`crate::parked`): the task is larger, the slot it idles in is not.
                let guard = state.conn_opened();
                let open = crate::metrics::conn_opened(0);
                let fut = crate::http::serve_plain(s, conn, guard, open, None);
                let size = std::mem::size_of_val(&fut);
                assert!(size > 2048, "{size}");
            })
            .await;
    }
}
