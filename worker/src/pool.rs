//! Per-worker pools of persistent connections to the downstreams of one server (RProxy's
//! "always established" connections), the FIFO of requests waiting for one (`max-pending`,
//! `pending-timeout`), and the choice among downstreams (see [`crate::lb`]). A connection is
//! leased to one client connection's task, which runs the exchange on it itself
//! (`h1::upstream`): no task or channel per request.
//!
//! Each downstream has a maintenance task that keeps `connections` connections established,
//! reconnecting every `retry` interval while the downstream is down. An idle connection is a
//! bare socket (no buffer, no task): one the downstream closed is noticed when it is about to
//! be handed out (a readiness check, no syscall while nothing arrived) and by the maintenance
//! task's sweep every [`SWEEP`], and is never used.
//!
//! A worker runs one thread, so the state is in `Cell`/`RefCell` and never locked.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rproxy_shared::channel::AdminState;
use rproxy_shared::config::{self, LbMethod};
use rproxy_shared::{info, warn};
use tokio::sync::Notify;

use crate::error::ProxyError;
use crate::handoff::{Slots, Ticket};
use crate::lb::{self, Rng, View};
use crate::net::TcpStream;
use crate::timed_io::TimedIo;

/// How long one connection attempt to a downstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the maintenance task looks for idle connections the downstream closed.
const SWEEP: Duration = Duration::from_secs(1);

/// A downstream may have up to this many times `connections` open while some of them stream
/// responses to clients that read slowly (see [`Pool::may_overflow`]).
const OVERFLOW_FACTOR: usize = 4;

/// How long a request waits in the queue before an extra connection is opened for it (when
/// connections are busy streaming to clients). Long enough that a busy pool of fast exchanges
/// never opens extras (the benchmark at 256 clients on 64 connections queues for ~10 ms), short
/// enough that a pool pinned by slow readers costs others ~50 ms once, not their whole wait.
const SLOW_CLIENT: Duration = Duration::from_millis(50);

/// A downstream socket with the downstream `write-timeout`.
pub type DsIo = TimedIo<TcpStream>;

/// One established downstream connection: while idle, just the socket.
struct Conn {
    io: DsIo,
    /// Our source port on it (`{DS_SPORT}`).
    local_port: u16,
}

impl Conn {
    /// Still open, and nothing unasked-for arrived. Uses the reactor's readiness: no syscall
    /// unless the socket became readable (a close, or stray bytes: either way unusable).
    fn alive(&self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.io.get_ref().try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// No attempt finished yet: requests wait instead of failing.
    Starting,
    Up,
    Down,
}

/// One downstream as this worker sees it.
pub struct Downstream {
    name: String,
    addr: SocketAddr,
    target: usize,
    retry: Duration,
    write_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    /// `high-watermark`: the most read ahead of the client (bounds a spliced body's pipe).
    pub high_watermark: usize,
    idle: RefCell<Vec<Conn>>,
    /// Established or being established.
    open: Cell<usize>,
    health: Cell<Health>,
    srtt_us: Cell<Option<f64>>,
    in_flight: Cell<u32>,
    /// Leased connections whose response head went to the client and whose body is still
    /// streaming: their pace is the client's, not the downstream's.
    streaming: Cell<usize>,
    /// Wakes the maintenance task when a connection is lost (or `maint` ends).
    lost: Notify,
    /// The operator's state (`rproxy ctl set downstream`): only `Ready` takes new requests.
    admin: Cell<AdminState>,
}

impl Downstream {
    /// `name (addr)`, or just the address when the name is the address.
    fn label(&self) -> String {
        let addr = self.addr.to_string();
        if self.name == addr {
            addr
        } else {
            format!("{} ({addr})", self.name)
        }
    }

    /// Whether the balancer may give it a new request.
    fn in_rotation(&self) -> bool {
        self.admin.get() == AdminState::Ready
    }

    /// Connections to keep established: none in `maint`.
    fn want(&self) -> usize {
        if self.admin.get() == AdminState::Maint {
            0
        } else {
            self.target
        }
    }
}

/// The downstreams a route may send to (indices into [`Pool::downstreams`]), how to choose
/// among them, and the round-robin cursor of that choice.
pub struct Members {
    indices: Vec<usize>,
    lb: LbMethod,
    rr: Cell<usize>,
}

impl Members {
    pub fn new(indices: Vec<usize>, lb: LbMethod) -> Members {
        Members {
            indices,
            lb,
            rr: Cell::new(0),
        }
    }

    #[cfg(test)]
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    #[cfg(test)]
    pub fn lb(&self) -> LbMethod {
        self.lb
    }
}

/// The downstream side of an exchange, for the access log (`{PROXY}`, `{DS_SPORT}`).
#[derive(Clone, Copy)]
pub struct Used {
    pub addr: SocketAddr,
    pub local_port: Option<u16>,
}

struct Waiter {
    route: Rc<Members>,
    /// Where its connection (or its 503) goes, in [`Pool::handoff`].
    ticket: Ticket,
    /// When it joined the queue: its `pending-timeout` and [`SLOW_CLIENT`] run from here.
    since: Instant,
    /// An extra connection was asked for it ([`SLOW_CLIENT`]).
    asked: bool,
}

/// Why no connection could be had; each is a 503 (DESIGN section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoConnection {
    /// Every downstream of the route is down: answered at once.
    AllDown,
    /// `max-pending` requests already wait in this worker.
    QueueFull,
    /// Waited `pending-timeout`.
    Timeout,
}

pub struct Pool {
    /// Index of its server in the configuration (how the master names it in `SetAdmin`).
    pub server: usize,
    downstreams: Vec<Downstream>,
    waiters: RefCell<VecDeque<Waiter>>,
    /// The waiters' mailboxes: reused, so a queued request allocates nothing.
    handoff: Slots<Result<Lease, NoConnection>>,
    /// The queue went from empty to not: [`watch_queue`] has a deadline to keep.
    queued: Notify,
    max_pending: usize,
    pending_timeout: Duration,
    rng: RefCell<Rng>,
    /// Reused for every choice, so choosing allocates nothing.
    scratch: RefCell<Vec<View>>,
}

impl Pool {
    /// The pool of server `index`'s enabled downstreams; call [`Pool::start`] to connect.
    pub fn new(index: usize, server: &config::Server) -> Rc<Pool> {
        let downstreams = server
            .downstreams
            .iter()
            .map(|d| Downstream {
                name: d.name.clone(),
                addr: d.addr,
                target: if d.enabled { d.connections } else { 0 },
                retry: d.retry,
                write_timeout: d.write_timeout,
                read_timeout: d.read_timeout,
                high_watermark: d.high_watermark,
                idle: RefCell::new(Vec::with_capacity(d.connections)),
                open: Cell::new(0),
                health: Cell::new(if d.enabled {
                    Health::Starting
                } else {
                    Health::Down
                }),
                srtt_us: Cell::new(None),
                in_flight: Cell::new(0),
                streaming: Cell::new(0),
                lost: Notify::new(),
                admin: Cell::new(AdminState::Ready),
            })
            .collect();
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        Rc::new(Pool {
            server: index,
            downstreams,
            waiters: RefCell::new(VecDeque::new()),
            handoff: Slots::default(),
            queued: Notify::new(),
            max_pending: server.max_pending,
            pending_timeout: server.pending_timeout,
            rng: RefCell::new(Rng::new(seed)),
            scratch: RefCell::new(Vec::new()),
        })
    }

    /// Spawn one maintenance task per enabled downstream, and the queue's watch (on the
    /// current `LocalSet`).
    pub fn start(self: &Rc<Self>) {
        for (i, d) in self.downstreams.iter().enumerate() {
            if d.target > 0 {
                tokio::task::spawn_local(maintain(Rc::clone(self), i));
            }
        }
        tokio::task::spawn_local(watch_queue(Rc::clone(self)));
    }

    /// The operator's state for downstream `i` (`rproxy ctl set downstream`); false when there
    /// is no such downstream. `drain` and `maint` take it out of rotation at once (requests
    /// waiting on a route left with no member in rotation get their 503, as when all are
    /// down); `maint` also closes its idle connections and opens none until `ready` again.
    pub fn set_admin(&self, i: usize, state: AdminState) -> bool {
        let Some(d) = self.downstreams.get(i) else {
            return false;
        };
        if d.admin.replace(state) == state {
            return true;
        }
        rproxy_shared::debug!("downstream {}: {}", d.label(), state.name());
        match state {
            AdminState::Maint => {
                // Closed here and counted out of `open`; maintenance opens none while in maint.
                let closed = std::mem::take(&mut *d.idle.borrow_mut()).len();
                for _ in 0..closed {
                    self.lost(i);
                }
            }
            AdminState::Ready => d.lost.notify_one(),
            AdminState::Drain => {}
        }
        if state != AdminState::Ready {
            self.fail_waiters();
        }
        true
    }

    /// Downstreams with an established connection, and enabled ones (for heartbeats).
    pub fn health_counts(&self) -> (u32, u32) {
        let total = self.downstreams.iter().filter(|d| d.target > 0).count();
        let up = self
            .downstreams
            .iter()
            .filter(|d| d.health.get() == Health::Up)
            .count();
        (up as u32, total as u32)
    }

    /// An idle connection chosen by the route's balancer, or a place in the queue.
    pub async fn acquire(self: &Rc<Self>, route: &Rc<Members>) -> Result<Lease, NoConnection> {
        if let Some(l) = self.take_idle(route) {
            return Ok(l);
        }
        if self.route_down(route) {
            return Err(NoConnection::AllDown);
        }
        let rx = {
            let mut q = self.waiters.borrow_mut();
            if q.len() >= self.max_pending {
                q.retain(|w| !self.handoff.is_closed(w.ticket));
                if q.len() >= self.max_pending {
                    return Err(NoConnection::QueueFull);
                }
            }
            if self.pending_timeout.is_zero() {
                return Err(NoConnection::Timeout);
            }
            let (rx, ticket) = self.handoff.open();
            q.push_back(Waiter {
                route: Rc::clone(route),
                ticket,
                since: crate::clock::now(),
                asked: false,
            });
            if q.len() == 1 {
                self.queued.notify_one();
            }
            // Off the fast path (every connection busy); operators and tests see the queue.
            rproxy_shared::debug!(
                "request queued for a downstream connection ({} waiting)",
                q.len()
            );
            rx
        };
        // No timer of its own: `watch_queue` ends the wait at `pending-timeout`.
        match rx.await {
            Some(r) => r,
            // Closed by `fail_waiters`: the route went down while we waited.
            None => Err(NoConnection::AllDown),
        }
    }

    /// The queue's deadlines at `now`: waiters that waited [`SLOW_CLIENT`] get an extra
    /// connection asked for them (a pool of fast exchanges frees a connection within
    /// milliseconds; one still waiting has its connections pinned by clients reading slowly,
    /// and the extra goes to the first waiter, in queue order); waiters that waited
    /// `pending-timeout` get their 503. Returns when the next deadline falls, if any waits.
    fn expire(self: &Rc<Self>, now: Instant) -> Option<Instant> {
        let first = self.pending_timeout.min(SLOW_CLIENT);
        let mut q = self.waiters.borrow_mut();
        // Asked for in queue order, so the waiters asked for are the queue's front.
        let mut next = None;
        for w in q
            .iter_mut()
            .filter(|w| !w.asked && !self.handoff.is_closed(w.ticket))
        {
            let at = w.since + first;
            if at > now {
                next = Some(at);
                break;
            }
            w.asked = true;
            if let Some(i) = w
                .route
                .indices
                .iter()
                .copied()
                .find(|&i| self.may_overflow(i))
            {
                tokio::task::spawn_local(extra_connection(Rc::clone(self), i));
            }
        }
        while let Some(w) = q.front() {
            if !self.handoff.is_closed(w.ticket) && w.since + self.pending_timeout > now {
                break;
            }
            if let Some(w) = q.pop_front() {
                let _ = self.handoff.send(w.ticket, Err(NoConnection::Timeout));
            }
        }
        let timeout = q.front().map(|w| w.since + self.pending_timeout);
        next.into_iter().chain(timeout).min()
    }

    /// Whether downstream `i` may get one more connection because some of its connections
    /// are busy streaming responses to clients (a 50 MB response read at 1 MB / 2 s holds one
    /// for 100 s): up to one extra per streaming connection, at most `OVERFLOW_FACTOR` x
    /// `connections` in all. Connections busy waiting for the downstream's answer do not
    /// count: then the downstream is the slow one and requests queue (`max-pending`).
    fn may_overflow(&self, i: usize) -> bool {
        let d = &self.downstreams[i];
        let cap = d.target * OVERFLOW_FACTOR;
        let extra = d.streaming.get().min(cap - d.target);
        d.in_rotation()
            && d.health.get() == Health::Up
            && d.target > 0
            && d.open.get() < d.target + extra
    }

    /// A socket of its own to a downstream of `route`, for a `passthrough` tunnel. The
    /// balancer picks the downstream as for a request (queueing if every connection is busy);
    /// the pooled connection it picked leaves the pool for good: it is closed (it may carry
    /// a keep-alive state the tunnel must not inherit) and the tunnel's new socket takes its place in the downstream's count (no
    /// replacement is opened while the tunnel lives, so `connections` stays the maximum).
    pub async fn tunnel(
        self: &Rc<Self>,
        route: &Rc<Members>,
    ) -> Result<(TcpStream, Used, TunnelSlot), (ProxyError, Option<Used>)> {
        let lease = self
            .acquire(route)
            .await
            .map_err(|e| (ProxyError::NoConnection(e), None))?;
        let used = lease.used();
        let slot = lease.into_slot();
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(used.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                let used = Used {
                    addr: used.addr,
                    local_port: s.local_addr().ok().map(|a| a.port()),
                };
                Ok((s, used, slot))
            }
            _ => Err((ProxyError::DownstreamClosed, Some(used))),
        }
    }

    /// Every member down or out of rotation: answered like all down (503 at once).
    fn route_down(&self, route: &Members) -> bool {
        route.indices.iter().all(|&i| {
            let d = &self.downstreams[i];
            d.health.get() == Health::Down || !d.in_rotation()
        })
    }

    /// An idle connection of `route`, as its balancer picks, leased; `None` when none is
    /// (then [`Pool::acquire`] queues the request).
    pub fn take_idle(self: &Rc<Self>, route: &Members) -> Option<Lease> {
        loop {
            let pick = if let [only] = route.indices[..] {
                // One member (the usual route): every balancer picks it when it has an idle
                // connection (`lb::tests::one_view_is_picked_when_idle`), so no views are
                // built; the random draw skipped is one fewer, and a one-member route's
                // round-robin cursor means nothing.
                let d = &self.downstreams[only];
                (d.in_rotation() && !d.idle.borrow().is_empty()).then_some(0)
            } else {
                let mut views = self.scratch.borrow_mut();
                views.clear();
                views.extend(route.indices.iter().map(|&i| {
                    let d = &self.downstreams[i];
                    View {
                        // Out of rotation: nothing to offer the balancer.
                        idle: if d.in_rotation() {
                            d.idle.borrow().len()
                        } else {
                            0
                        },
                        in_flight: d.in_flight.get(),
                        srtt_us: d.srtt_us.get(),
                    }
                }));
                let mut rr = route.rr.get();
                let pick = lb::choose(route.lb, &views, &mut rr, &mut self.rng.borrow_mut());
                route.rr.set(rr);
                pick
            }?;
            let i = route.indices[pick];
            // Most recently used first: its socket and our caches are warm.
            let conn = self.downstreams[i].idle.borrow_mut().pop()?;
            if !conn.alive() {
                self.lost(i);
                continue;
            }
            return Some(Lease::new(Rc::clone(self), i, conn));
        }
    }

    /// A connection became free: the first waiter that may use it gets it, else it idles, unless
    /// it is an extra no longer needed: `connections` are idle or busy without it, plus as many
    /// extras as connections are streaming to clients ([`Pool::may_overflow`]). `fresh`: just
    /// opened by maintenance, always kept.
    fn put(self: &Rc<Self>, i: usize, conn: Conn, fresh: bool) {
        let mut conn = conn;
        match self.downstreams[i].admin.get() {
            AdminState::Ready => {}
            // Kept established for when it is ready again, but for no waiter.
            AdminState::Drain => {
                self.downstreams[i].idle.borrow_mut().push(conn);
                return;
            }
            // Closed as its exchange ends.
            AdminState::Maint => {
                drop(conn);
                self.lost(i);
                return;
            }
        }
        loop {
            let waiter = {
                let mut q = self.waiters.borrow_mut();
                if q.is_empty() {
                    // Nobody waits (the usual case): straight to idle.
                    break;
                }
                first_waiter_for(&mut q, &self.handoff, i)
            };
            let Some(w) = waiter else { break };
            match self
                .handoff
                .send(w.ticket, Ok(Lease::new(Rc::clone(self), i, conn)))
            {
                Ok(()) => return,
                // The waiter left just now (its client went away); undo the lease's
                // accounting and try the next one.
                Err(sent) => match sent.ok().and_then(|mut lease| lease.conn.take()) {
                    Some(c) => {
                        self.downstreams[i]
                            .in_flight
                            .set(self.downstreams[i].in_flight.get() - 1);
                        conn = c;
                    }
                    None => return,
                },
            }
        }
        let d = &self.downstreams[i];
        let extras = d.streaming.get().min(d.target * (OVERFLOW_FACTOR - 1));
        if !fresh && d.idle.borrow().len() + d.in_flight.get() as usize >= d.target + extras {
            drop(conn);
            self.lost(i);
            return;
        }
        d.idle.borrow_mut().push(conn);
    }

    /// A connection of downstream `i` was closed: count it out; maintenance replaces it.
    fn lost(&self, i: usize) {
        let d = &self.downstreams[i];
        d.open.set(d.open.get().saturating_sub(1));
        d.lost.notify_one();
    }

    /// Close the idle connections of downstream `i` that the downstream closed.
    fn sweep(&self, i: usize) {
        let dead = {
            let mut idle = self.downstreams[i].idle.borrow_mut();
            let before = idle.len();
            idle.retain(Conn::alive);
            before - idle.len()
        };
        for _ in 0..dead {
            self.lost(i);
        }
    }

    /// Requests waiting on a route whose downstreams are all down get their 503 now.
    fn fail_waiters(&self) {
        let mut q = self.waiters.borrow_mut();
        q.retain(|w| {
            if self.route_down(&w.route) {
                self.handoff.close(w.ticket);
                return false;
            }
            !self.handoff.is_closed(w.ticket)
        });
    }
}

/// Take the first waiter, in queue order, whose route can use downstream `i`. Waiters met on
/// the way that gave up (timed out, client gone) leave the queue; the rest stay in order.
/// Under a full queue this runs once per response, so it stops at the first match instead of
/// sweeping the whole queue (that sweep cost ~2,800 instructions per request with 190
/// waiters, bench/callgrind.sh --conns 256).
fn first_waiter_for(
    q: &mut VecDeque<Waiter>,
    handoff: &Slots<Result<Lease, NoConnection>>,
    i: usize,
) -> Option<Waiter> {
    let mut k = 0;
    while k < q.len() {
        if handoff.is_closed(q[k].ticket) {
            q.remove(k);
        } else if q[k].route.indices.contains(&i) {
            return q.remove(k);
        } else {
            k += 1;
        }
    }
    None
}

/// A connection lent to one request. Dropped: the connection is closed (it may be in any
/// state) unless no request went out on it; [`Lease::release`] after a complete response
/// returns it to the pool.
pub struct Lease {
    pool: Rc<Pool>,
    index: usize,
    conn: Option<Conn>,
    /// When the request went out ([`Lease::start_clock`], called before its first byte is
    /// written); not read before, so not taken before (a clock read per lease saved). `None`:
    /// nothing was written on the connection, and dropping the lease keeps it.
    sent_at: Option<u64>,
    streaming: bool,
}

impl Lease {
    fn new(pool: Rc<Pool>, index: usize, conn: Conn) -> Lease {
        let d = &pool.downstreams[index];
        d.in_flight.set(d.in_flight.get() + 1);
        Lease {
            pool,
            index,
            conn: Some(conn),
            sent_at: None,
            streaming: false,
        }
    }

    /// The response head went to the client; the body now streams at the client's pace.
    pub fn streaming(&mut self) {
        if !self.streaming {
            self.streaming = true;
            let d = self.downstream();
            d.streaming.set(d.streaming.get() + 1);
        }
    }

    pub fn downstream(&self) -> &Downstream {
        &self.pool.downstreams[self.index]
    }

    pub fn used(&self) -> Used {
        Used {
            addr: self.downstream().addr,
            local_port: self.local_port(),
        }
    }

    /// The leased socket. `None` only after release.
    pub fn io(&mut self) -> Option<&mut DsIo> {
        self.conn.as_mut().map(|c| &mut c.io)
    }

    fn local_port(&self) -> Option<u16> {
        self.conn.as_ref().map(|c| c.local_port)
    }

    /// Mark the moment the request goes out, for the response-time average.
    pub fn start_clock(&mut self) {
        self.sent_at = Some(crate::clock::now_ns());
    }

    /// The response head arrived: feed the response time to the balancer. Returns the moment
    /// read ([`crate::clock::now_ns`]), for the request's own metrics (one clock read for
    /// both).
    pub fn record_response(&self) -> u64 {
        let now = crate::clock::now_ns();
        if let Some(sent) = self.sent_at {
            let d = self.downstream();
            let us = now.saturating_sub(sent) as f64 / 1e3;
            d.srtt_us.set(Some(lb::smooth(d.srtt_us.get(), us)));
        }
        now
    }

    /// The exchange completed cleanly: the connection can carry the next request. The lease
    /// is empty afterwards (its drop does nothing).
    pub fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.uncount();
            self.pool.put(self.index, conn, false);
        }
    }

    /// The socket leaves the pool for good (a WebSocket tunnel after `101`); maintenance opens
    /// a replacement at once.
    pub fn into_tunnel(mut self) -> Option<DsIo> {
        let conn = self.conn.take()?;
        self.uncount();
        self.pool.lost(self.index);
        Some(conn.io)
    }

    /// Close the connection but keep its place in the downstream's count for a passthrough
    /// tunnel's own socket.
    fn into_slot(mut self) -> TunnelSlot {
        if self.conn.take().is_some() {
            self.uncount();
        }
        TunnelSlot {
            pool: Rc::clone(&self.pool),
            index: self.index,
        }
    }

    fn uncount(&self) {
        let d = self.downstream();
        d.in_flight.set(d.in_flight.get().saturating_sub(1));
        if self.streaming {
            d.streaming.set(d.streaming.get().saturating_sub(1));
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.uncount();
            if self.sent_at.is_none() {
                // Nothing was written on it (a queued request whose task ended as the
                // connection reached it; a client gone before its request went out): as
                // good as idle, so the next waiter or the idle list gets it, not a reconnect.
                self.pool.put(self.index, conn, false);
            } else {
                // It may be in any state: closed, and maintenance opens a new one.
                self.pool.lost(self.index);
            }
        }
    }
}

/// One extra connection to downstream `i` for the requests queued behind connections that
/// stream to slow clients (see [`Pool::may_overflow`]); closed if nobody wants it.
/// The queue's one timer: waiters join at the back, so the front's deadlines fall first, and a
/// queued request sets no timer of its own (a timer per queued request, inserted into tokio's
/// wheel and removed, cost ~450 instructions per request at 256 clients on 64 connections,
/// bench/callgrind.sh).
async fn watch_queue(pool: Rc<Pool>) {
    loop {
        match pool.expire(Instant::now()) {
            None => pool.queued.notified().await,
            Some(at) => tokio::time::sleep_until(at.into()).await,
        }
    }
}

async fn extra_connection(pool: Rc<Pool>, i: usize) {
    if !pool.may_overflow(i) {
        return;
    }
    let d = &pool.downstreams[i];
    d.open.set(d.open.get() + 1);
    match connect(&pool, i).await {
        Ok(conn) => pool.put(i, conn, false),
        Err(e) => {
            d.open.set(d.open.get() - 1);
            rproxy_shared::debug!("extra connection to {}: {e}", d.label());
        }
    }
}

/// A tunnel's place among its downstream's connections; dropped when the tunnel ends, and
/// maintenance opens a pooled connection again.
pub struct TunnelSlot {
    pool: Rc<Pool>,
    index: usize,
}

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        let d = &self.pool.downstreams[self.index];
        d.open.set(d.open.get().saturating_sub(1));
        d.lost.notify_one();
    }
}

/// Keep `target` connections open to downstream `i`, forever.
async fn maintain(pool: Rc<Pool>, i: usize) {
    loop {
        while pool.downstreams[i].open.get() < pool.downstreams[i].want() {
            let d = &pool.downstreams[i];
            d.open.set(d.open.get() + 1);
            match connect(&pool, i).await {
                Ok(conn) => {
                    if d.health.get() != Health::Up {
                        if d.health.get() == Health::Down {
                            info!("downstream {} is up", d.label());
                        }
                        d.health.set(Health::Up);
                    }
                    pool.put(i, conn, true);
                }
                Err(e) => {
                    d.open.set(d.open.get() - 1);
                    if d.health.get() != Health::Down {
                        warn!("downstream {} is down: {e}", d.label());
                        d.health.set(Health::Down);
                        pool.fail_waiters();
                    }
                    tokio::time::sleep(d.retry).await;
                }
            }
        }
        tokio::select! {
            _ = pool.downstreams[i].lost.notified() => {}
            _ = tokio::time::sleep(SWEEP) => pool.sweep(i),
        }
    }
}

async fn connect(pool: &Rc<Pool>, i: usize) -> Result<Conn, String> {
    let d = &pool.downstreams[i];
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(d.addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    Ok(Conn {
        io: TimedIo::new(stream, d.write_timeout),
        local_port,
    })
}

impl Pool {
    /// Read-only figures for the metrics: requests waiting for a connection, and each
    /// downstream (configuration order) as this worker's pool sees it now.
    pub fn stats(
        &self,
    ) -> (
        usize,
        impl Iterator<Item = crate::metrics::DownstreamStats> + '_,
    ) {
        let downstreams = self
            .downstreams
            .iter()
            .map(|d| crate::metrics::DownstreamStats {
                up: d.health.get() == Health::Up,
                idle: d.idle.borrow().len(),
                busy: d.in_flight.get() as usize,
                srtt_us: d.srtt_us.get(),
            });
        let pending = self
            .waiters
            .borrow()
            .iter()
            .filter(|w| !self.handoff.is_closed(w.ticket))
            .count();
        (pending, downstreams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Handoff = Slots<Result<Lease, NoConnection>>;

    /// A waiter on downstreams `indices`, and whether it still waits (its receiver).
    fn waiter(
        handoff: &Handoff,
        indices: Vec<usize>,
        waiting: bool,
    ) -> (
        Waiter,
        Option<crate::handoff::Wait<'_, Result<Lease, NoConnection>>>,
    ) {
        let (rx, ticket) = handoff.open();
        let w = Waiter {
            route: Rc::new(Members::new(indices, LbMethod::Roundrobin)),
            ticket,
            since: Instant::now(),
            asked: false,
        };
        (w, waiting.then_some(rx))
    }

    /// A lease on which no request went out is not lost when dropped: handed to a queued
    /// request whose task then ends, it goes back to the pool (to the next waiter, else the
    /// idle list), and no new connection is opened for it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_lease_that_carried_no_request_goes_back_to_the_pool() {
        tokio::task::LocalSet::new()
            .run_until(async {
                let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = origin.local_addr().unwrap();
                let accepted = Rc::new(Cell::new(0));
                let count = Rc::clone(&accepted);
                tokio::task::spawn_local(async move {
                    let mut held = Vec::new();
                    while let Ok((s, _)) = origin.accept().await {
                        count.set(count.get() + 1);
                        held.push(s);
                    }
                });
                let cfg = crate::testing::flat(addr);
                let pool = Pool::new(0, &cfg.servers[0]);
                pool.start();
                let route = Rc::new(Members::new(vec![0], LbMethod::Roundrobin));
                let idle = |pool: &Pool| pool.downstreams[0].idle.borrow().len();
                for _ in 0..200 {
                    if idle(&pool) == 1 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                assert_eq!(idle(&pool), 1, "the pool's one connection is open");

                // Taken and dropped unused: back in the idle list.
                drop(pool.take_idle(&route).expect("the idle connection"));
                assert_eq!(idle(&pool), 1);

                // Taken; a second request queues; the first lease, dropped unused, is handed
                // to it; the queued request's task ends before it takes it.
                let first = pool.take_idle(&route).expect("the idle connection");
                let mut queued = Box::pin(pool.acquire(&route));
                let polled = tokio::time::timeout(Duration::from_millis(20), &mut queued).await;
                assert!(
                    polled.is_err(),
                    "the second request waits for the connection"
                );
                drop(first);
                assert_eq!(idle(&pool), 0, "handed to the queued request");
                drop(queued);
                assert_eq!(idle(&pool), 1, "back in the pool when its task ended");
                assert_eq!(pool.downstreams[0].in_flight.get(), 0);

                // Nothing was lost, so maintenance opened nothing more.
                tokio::time::sleep(Duration::from_millis(50)).await;
                assert_eq!(accepted.get(), 1, "connections the origin accepted");
                assert_eq!(pool.downstreams[0].open.get(), 1);
            })
            .await;
    }

    #[test]
    fn the_first_waiter_able_to_use_the_connection_gets_it() {
        let handoff = Handoff::default();
        let mut q = VecDeque::new();
        let mut held = Vec::new();
        // Queue order: gone (0), waiting on 1 only (1), gone (2), waiting on 0 (3),
        // waiting on 0 and 1 (4).
        for (indices, waiting) in [
            (vec![0], false),
            (vec![1], true),
            (vec![0, 1], false),
            (vec![0], true),
            (vec![0, 1], true),
        ] {
            let (w, rx) = waiter(&handoff, indices, waiting);
            held.push(rx);
            q.push_back(w);
        }
        // Downstream 0: the first waiter that gave up leaves, the one on 1 is passed over and
        // keeps its place, the second that gave up leaves, the one on 0 gets it.
        let got = first_waiter_for(&mut q, &handoff, 0).expect("a waiter on downstream 0");
        assert_eq!(got.route.indices, vec![0]);
        let left: Vec<_> = q.iter().map(|w| w.route.indices.clone()).collect();
        assert_eq!(left, vec![vec![1], vec![0, 1]]);
        // Downstream 1: the one in front.
        let got = first_waiter_for(&mut q, &handoff, 1).expect("a waiter on downstream 1");
        assert_eq!(got.route.indices, vec![1]);
        // Downstream 2: nobody; the queue is unchanged.
        assert!(first_waiter_for(&mut q, &handoff, 2).is_none());
        assert_eq!(q.len(), 1);
    }
}
