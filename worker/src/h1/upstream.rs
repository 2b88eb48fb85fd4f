//! The downstream side of one exchange, run in the task of the client connection that asked
//! for it, on a pooled connection leased to that task: write the request head (with the body
//! read ahead), pump the rest of the body, read the response head. The response body is then
//! read by the caller, from the same buffer, through [`DsResponse::next`] (HTTP/1.1 clients) or
//! as an `http_body::Body` ([`crate::body::ProxyBody`], HTTP/2 clients).

use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::error::ProxyError;
use crate::h1::body::{BodyError, BodyReader, Step};
use crate::h1::buffers::{self, Bufs};
use crate::h1::head::{parse_response, ResponseHead};
use crate::pool::{DsIo, Lease, Members, Pool, Used};

/// Connections tried for a request whose head could not even be written (the downstream
/// closed an idle connection just then).
const MAX_ATTEMPTS: usize = 3;

/// The largest response head accepted (more is a 502).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A failed step, and the downstream connection it had reached (for the log).
pub type Failed = (ProxyError, Option<Used>);

/// The rest of a request body, after what went out with the head.
pub trait BodyPump {
    /// Write it to `ds`; errors say which side failed (client: 400/408, downstream: 502/503).
    async fn pump(&mut self, ds: &mut DsIo) -> Result<(), ProxyError>;

    /// Nothing (more) to send: most requests have no body, and then no pump future is made.
    fn done(&self) -> bool {
        false
    }
}

/// A downstream response whose head has been read: the head at the start of `bufs.data`,
/// indexed by `bufs.spans`, the body after it.
pub struct DsResponse {
    pub lease: Lease,
    pub bufs: Bufs,
    pub head: ResponseHead,
    pub body: BodyReader,
    /// The downstream `read-timeout`, between body reads.
    pub read_timeout: Option<Duration>,
    /// When the head arrived ([`crate::clock::now_ns`]): the request's response time ends
    /// here.
    pub head_at: u64,
    /// The whole request was sent (else the downstream answered early: never reused).
    complete: bool,
}

/// Send `out` (the request head and the body read ahead) on a connection of `members`, then
/// what `pump` sends, and read the response head. `head_request`: the response has no body.
pub async fn exchange<P: BodyPump>(
    pool: &Rc<Pool>,
    members: &Rc<Members>,
    out: &[u8],
    pump: &mut P,
    head_request: bool,
) -> Result<DsResponse, Failed> {
    let mut attempts = 0;
    let mut lease = loop {
        attempts += 1;
        // An idle connection (the usual case) without the wait's future.
        let mut lease = match pool.take_idle(members) {
            Some(l) => l,
            None => pool
                .acquire(members)
                .await
                .map_err(|e| (ProxyError::NoConnection(e), None))?,
        };
        let used = lease.used();
        lease.start_clock();
        let Some(io) = lease.io() else { continue };
        let written = match crate::h1::conn::write_now(io, out) {
            Ok([]) => Ok(()),
            Ok(rest) => io.write_all(rest).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => break lease,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err((ProxyError::DownstreamWriteTimeout, Some(used)))
            }
            // Nothing of it was taken: another connection may do (this one is closed).
            Err(_) if attempts < MAX_ATTEMPTS => continue,
            Err(e) => {
                return Err((
                    ProxyError::Downstream("writing the request", Some(e)),
                    Some(used),
                ))
            }
        }
    };
    let used = lease.used();
    let read_timeout = lease.downstream().read_timeout;
    let Some(io) = lease.io() else {
        return Err((ProxyError::DownstreamClosed, Some(used)));
    };
    let mut complete = true;
    let pumped = if pump.done() {
        Ok(())
    } else {
        pump.pump(io).await
    };
    let (head, bufs) = match pumped {
        Ok(()) => read_head(io, read_timeout, head_request)
            .await
            .map_err(|e| (e, Some(used)))?,
        // A downstream that answers before taking the whole body (413, 401) and closes: its
        // answer is what the client gets, as with hyper's client; the connection is not reused.
        Err(e @ ProxyError::Downstream(..)) => {
            let early = tokio::time::timeout(EARLY_ANSWER, read_head(io, None, head_request));
            match early.await {
                Ok(Ok(found)) => {
                    complete = false;
                    found
                }
                _ => return Err((e, Some(used))),
            }
        }
        Err(e) => return Err((e, Some(used))),
    };
    let head_at = lease.record_response();
    Ok(DsResponse {
        head_at,
        lease,
        body: BodyReader::response(head.body, head.len),
        head,
        bufs,
        read_timeout,
        complete,
    })
}

/// How long a downstream that stopped taking the request body has to show its answer.
const EARLY_ANSWER: Duration = Duration::from_secs(1);

/// Read and parse the response head (interim 1xx skipped), each read within `read_timeout`.
async fn read_head(
    io: &mut DsIo,
    read_timeout: Option<Duration>,
    head_request: bool,
) -> Result<(ResponseHead, Bufs), ProxyError> {
    let mut bufs = Bufs::take();
    loop {
        // Nothing read yet (the usual first turn): read before parsing nothing.
        let parsed = if bufs.data.is_empty() {
            Ok(None)
        } else {
            parse_response(&bufs.data, MAX_RESPONSE_HEAD, head_request, &mut bufs.spans)
        };
        match parsed {
            Ok(Some(h)) if h.is_interim() => {
                // `100 Continue` and friends: rproxy answered the client's Expect itself.
                bufs.data.drain(..h.len);
                continue;
            }
            Ok(Some(h)) => return Ok((h, bufs)),
            Ok(None) => {}
            Err(_) => return Err(ProxyError::Downstream("invalid response head", None)),
        }
        if bufs.data.len() == bufs.data.capacity() {
            bufs.data.reserve(buffers::SIZE);
        }
        let read = buffers::read_into(io, &mut bufs.data);
        let r = match read_timeout {
            Some(d) => crate::clock::timeout(d, read)
                .await
                .map_err(|_| ProxyError::DownstreamReadTimeout)?,
            None => read.await,
        };
        match r {
            Ok(0) => return Err(ProxyError::Downstream("closed before a response", None)),
            Ok(_) => {}
            Err(e) => return Err(ProxyError::Downstream("reading the response", Some(e))),
        }
    }
}

impl DsResponse {
    pub fn used(&self) -> Used {
        self.lease.used()
    }

    /// The next piece of the body, in `self.bufs.data` (`None`: it ended). Waits at most the
    /// downstream `read-timeout` for bytes.
    pub async fn next(&mut self) -> Result<Option<Range<usize>>, BodyError> {
        // What is already buffered (a small body comes with its head) is handed out without
        // a read future or a timer.
        match self.body.step(&self.bufs.data)? {
            Step::Data(r) => return Ok(Some(r)),
            Step::Done => return Ok(None),
            Step::NeedMore => {}
        }
        let Some(io) = self.lease.io() else {
            return Err(BodyError::Eof);
        };
        let next = self.body.next(io, &mut self.bufs.data);
        match self.read_timeout {
            Some(d) => match crate::clock::timeout(d, next).await {
                Ok(r) => r,
                Err(_) => Err(BodyError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "downstream read-timeout",
                ))),
            },
            None => next.await,
        }
    }

    /// The body was read to its end: the connection goes back to the pool when the
    /// downstream keeps it open and sent nothing more; otherwise it is closed.
    /// By reference: moving the response (~300 bytes) into a call cost a copy per request.
    pub fn finish(&mut self) {
        let reusable = self.complete
            && self.body.is_done()
            && !self.body.buffered(&self.bufs.data)
            && self.head.reusable();
        if reusable {
            self.lease.release();
        }
    }

    /// The downstream socket for a tunnel after `101`, and the bytes it sent after the head.
    pub fn into_tunnel(self) -> Option<(DsIo, Vec<u8>)> {
        let rest = self.bufs.data[self.head.len..].to_vec();
        let io = self.lease.into_tunnel()?;
        Some((io, rest))
    }
}
