//! This worker's metrics (DESIGN section 12): plain counters in one flat array numbered by the
//! configuration's [`Layout`], counted by one-line calls where things happen (accept, TLS,
//! the end of a request), and reported with each heartbeat as the values that changed since
//! the last report ([`report`]). The master sums the workers' reports.
//!
//! The array is thread-local: a worker runs one thread (a current-thread runtime), so counting
//! is a `Cell` add, with no lock, no atomic, no allocation and no string on the request path;
//! and a stream wrapper that hyper requires to be `Send` ([`Counted`]) can count without
//! holding a reference. Before [`init`] (unit tests of other stages) every call is a no-op.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use rproxy_shared::channel::{MetricsUpdate, MAX_METRICS};
use rproxy_shared::config::Config;
use rproxy_shared::metrics::{
    bucket_of, class_of, DownstreamGauge, Layout, ServerCounter, ServerGauge,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::pool::Pool;

/// One downstream as its pool sees it now (from [`Pool::stats`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownstreamStats {
    pub up: bool,
    pub idle: usize,
    pub busy: usize,
    /// Smoothed response time, microseconds; `None` before the first response.
    pub srtt_us: Option<f64>,
}

struct Local {
    layout: Layout,
    values: Box<[Cell<u64>]>,
    /// What the master last received of each value.
    sent: RefCell<Vec<u64>>,
    /// Requests in progress per server (for the idle-connections gauge).
    in_flight: Box<[Cell<u64>]>,
    /// `(server index, pool)` for the per-downstream gauges.
    pools: RefCell<Vec<(usize, Rc<Pool>)>>,
}

thread_local! {
    /// Set once and never freed: the worker's metrics live as long as its thread, and a plain
    /// reference makes each count a load instead of a `RefCell` borrow and an `Rc`.
    static LOCAL: Cell<Option<&'static Local>> = const { Cell::new(None) };
}

/// Number this worker's metrics after `config`. Called once, at worker start.
pub fn init(config: &Config) {
    let layout = Layout::new(config);
    let local = Local {
        values: (0..layout.len()).map(|_| Cell::new(0)).collect(),
        sent: RefCell::new(vec![0; layout.len()]),
        in_flight: (0..config.servers.len()).map(|_| Cell::new(0)).collect(),
        pools: RefCell::new(Vec::new()),
        layout,
    };
    LOCAL.set(Some(Box::leak(Box::new(local))));
}

fn with<R>(f: impl FnOnce(&Local) -> R) -> Option<R> {
    LOCAL.get().map(f)
}

impl Local {
    fn add(&self, id: Option<usize>, n: u64) {
        if let Some(c) = id.and_then(|i| self.values.get(i)) {
            c.set(c.get().wrapping_add(n));
        }
    }

    fn set(&self, id: Option<usize>, v: u64) {
        if let Some(c) = id.and_then(|i| self.values.get(i)) {
            c.set(v);
        }
    }
}

/// Add `n` to a per-server counter.
pub fn count(server: usize, c: ServerCounter, n: u64) {
    with(|l| l.add(l.layout.counter(server, c), n));
}

/// The pool of `server`, for the per-downstream gauges.
pub fn add_pool(server: usize, pool: &Rc<Pool>) {
    with(|l| l.pools.borrow_mut().push((server, Rc::clone(pool))));
}

/// A client connection accepted on `server`: counted, and open until the guard drops.
pub fn conn_opened(server: usize) -> OpenConn {
    with(|l| l.add(l.layout.counter(server, ServerCounter::Connections), 1));
    gauge_up(server, ServerGauge::Open);
    OpenConn(server)
}

/// Keeps a client connection counted as open.
pub struct OpenConn(usize);

impl Drop for OpenConn {
    fn drop(&mut self) {
        gauge_down(self.0, ServerGauge::Open);
    }
}

/// A connection of `server` entered the worker's idle set: counted as parked until the guard
/// drops (it leaves the set).
pub fn parked(server: usize) -> ParkedConn {
    gauge_up(server, ServerGauge::Parked);
    ParkedConn(server)
}

/// Keeps a connection counted as parked.
pub struct ParkedConn(usize);

impl Drop for ParkedConn {
    fn drop(&mut self) {
        gauge_down(self.0, ServerGauge::Parked);
    }
}

fn gauge_up(server: usize, gauge: ServerGauge) {
    with(|l| l.add(l.layout.gauge(server, gauge), 1));
}

fn gauge_down(server: usize, gauge: ServerGauge) {
    with(|l| {
        if let Some(c) = l.layout.gauge(server, gauge).map(|i| &l.values[i]) {
            c.set(c.get().saturating_sub(1));
        }
    });
}

/// A TLS handshake on `server` ended: `Some(resumed)` when it completed, `None` when it
/// failed or timed out.
pub fn tls_handshake(server: usize, result: Option<bool>) {
    match result {
        Some(resumed) => {
            count(server, ServerCounter::TlsHandshakes, 1);
            if resumed {
                count(server, ServerCounter::TlsResumed, 1);
            }
        }
        None => count(server, ServerCounter::TlsFailed, 1),
    }
}

/// One request from its head to its answer: started when the head is read, [`done`] where
/// the access-log line is written. It counts as in progress until dropped.
///
/// [`done`]: RequestTimer::done
pub struct RequestTimer {
    server: usize,
    /// [`crate::clock::now_ns`] at the start.
    start: u64,
}

impl RequestTimer {
    pub fn start(server: usize) -> RequestTimer {
        with(|l| {
            if let Some(c) = l.in_flight.get(server) {
                c.set(c.get() + 1);
            }
        });
        RequestTimer {
            server,
            start: crate::clock::now_ns(),
        }
    }

    /// Answered (`status`; `None` for a tunnel whose status rproxy did not see) under rule
    /// slot `rule` (`Route::metrics_rule`; 0 = no rule). The response time (to the response
    /// head) goes to the server's histogram; a tunnel's lifetime does not.
    pub fn done(&self, rule: u32, status: Option<u16>) {
        self.done_at(rule, status, crate::clock::now_ns());
    }

    /// [`RequestTimer::done`] with the clock already read at `at` ([`crate::clock::now_ns`]:
    /// the response head's arrival, read for the balancer too).
    pub fn done_at(&self, rule: u32, status: Option<u16>, at: u64) {
        let us = at.saturating_sub(self.start) / 1000;
        let s = self.server;
        with(|l| {
            l.add(l.layout.requests(s, rule, class_of(status)), 1);
            if status.is_some() {
                l.add(l.layout.bucket(s, bucket_of(us)), 1);
                l.add(l.layout.sum_micros(s), us);
            }
        });
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        with(|l| {
            if let Some(c) = l.in_flight.get(self.server) {
                c.set(c.get().saturating_sub(1));
            }
        });
    }
}

/// A request hyper answered itself (400, 431) before any stage saw it: no rule, no timing.
pub fn refused(server: usize, status: u16) {
    with(|l| l.add(l.layout.requests(server, 0, class_of(Some(status))), 1));
}

/// Write the gauges of this moment into the values: open connections minus those with a
/// request in progress are idle; the pools' figures per downstream.
fn sample(l: &Local) {
    for (server, inflight) in l.in_flight.iter().enumerate() {
        let open = l
            .layout
            .gauge(server, ServerGauge::Open)
            .map_or(0, |i| l.values[i].get());
        l.set(
            l.layout.gauge(server, ServerGauge::Idle),
            open.saturating_sub(inflight.get()),
        );
    }
    for (server, pool) in l.pools.borrow().iter() {
        let (pending, downstreams) = pool.stats();
        l.set(
            l.layout.gauge(*server, ServerGauge::Pending),
            pending as u64,
        );
        for (i, d) in downstreams.enumerate() {
            let g = |g| l.layout.downstream(*server, i, g);
            l.set(g(DownstreamGauge::Up), u64::from(d.up));
            l.set(g(DownstreamGauge::Idle), d.idle as u64);
            l.set(g(DownstreamGauge::Busy), d.busy as u64);
            l.set(
                g(DownstreamGauge::SrttMicros),
                d.srtt_us.map_or(0, |us| us.max(0.0).round() as u64),
            );
        }
    }
}

/// Send what changed since the last report, in updates of at most [`MAX_METRICS`] values,
/// through `send` (false: not sent, e.g. a full channel; those values go again next time).
pub fn report(mut send: impl FnMut(MetricsUpdate) -> bool) {
    let Some(l) = LOCAL.get() else {
        return;
    };
    sample(l);
    let layout_len = u32::try_from(l.layout.len()).unwrap_or(u32::MAX);
    let mut sent = l.sent.borrow_mut();
    let mut batch: Vec<(u32, u64)> = Vec::new();
    let changed = l
        .values
        .iter()
        .zip(sent.iter())
        .enumerate()
        .filter(|(_, (v, s))| v.get() != **s)
        .map(|(i, (v, _))| (i as u32, v.get()));
    let mut flush = |batch: &mut Vec<(u32, u64)>, sent: &mut Vec<u64>| {
        let values = std::mem::take(batch);
        let update = MetricsUpdate {
            layout_len,
            values: values.clone(),
        };
        if send(update) {
            for (i, v) in values {
                sent[i as usize] = v;
            }
            true
        } else {
            false
        }
    };
    let changed: Vec<(u32, u64)> = changed.collect();
    for pair in changed {
        batch.push(pair);
        if batch.len() == MAX_METRICS && !flush(&mut batch, &mut sent) {
            return;
        }
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut sent);
    }
}

/// A client stream whose bytes count toward its server's `BytesIn` / `BytesOut`.
pub struct Counted<S> {
    inner: S,
    server: usize,
}

impl<S> Counted<S> {
    pub fn new(inner: S, server: usize) -> Counted<S> {
        Counted { inner, server }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            count(self.server, ServerCounter::BytesIn, n as u64);
        }
        r
    }
}

/// The HTTP/1 codec waits for readability before it takes a buffer (`h1::conn`).
impl<S: crate::h1::conn::ReadReady> crate::h1::conn::ReadReady for Counted<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }

    const PARKABLE: bool = S::PARKABLE;

    fn into_parked(self) -> Option<std::net::TcpStream> {
        self.inner.into_parked()
    }

    /// Spliced bytes bypass this wrapper: the splice counts them itself.
    fn tcp(&self) -> Option<&crate::net::TcpStream> {
        self.inner.tcp()
    }

    fn hold<F: Future>(busy: F) -> impl Future<Output = F::Output> {
        S::hold(busy)
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.try_write(buf);
        if let Ok(n) = r {
            count(self.server, ServerCounter::BytesOut, n as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            count(self.server, ServerCounter::BytesOut, n as u64);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            count(self.server, ServerCounter::BytesOut, n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rproxy_shared::metrics::Series;

    fn config() -> Config {
        let dir = std::env::temp_dir().join(format!("rproxy-wm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[[server]]\naddr = \"127.0.0.1\"\nport = 1\n\
             [[server.downstream]]\naddr = \"127.0.0.1\"\nport = 2\n",
        )
        .unwrap();
        let c = rproxy_shared::load::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        c
    }

    #[test]
    fn reports_only_what_changed_and_resends_what_was_not_taken() {
        let c = config();
        init(&c);
        let layout = Layout::new(&c);
        let t = RequestTimer::start(0);
        t.done(0, Some(200));
        refused(0, 400);
        let open = conn_opened(0);
        let mut got = Vec::new();
        report(|u| {
            assert_eq!(u.layout_len as usize, layout.len());
            got.extend(u.values);
            true
        });
        let find = |got: &[(u32, u64)], s: Series| {
            got.iter()
                .find(|(i, _)| layout.describe(*i as usize) == Some(s))
                .map(|p| p.1)
        };
        let req = |class| Series::Requests {
            server: 0,
            rule: 0,
            class,
        };
        assert_eq!(find(&got, req(1)), Some(1));
        assert_eq!(find(&got, req(3)), Some(1));
        let open_g = Series::Gauge {
            server: 0,
            gauge: ServerGauge::Open,
        };
        let idle_g = Series::Gauge {
            server: 0,
            gauge: ServerGauge::Idle,
        };
        // The timer is still alive: the one connection is busy.
        assert_eq!(find(&got, open_g), Some(1));
        assert_eq!(find(&got, idle_g), None);
        drop(t);
        // Nothing changed but the idle gauge.
        let mut again = Vec::new();
        report(|u| {
            again.extend(u.values);
            true
        });
        assert_eq!(again.len(), 1);
        assert_eq!(find(&again, idle_g), Some(1));
        // A report the channel did not take is sent again.
        drop(open);
        report(|_| false);
        let mut third = Vec::new();
        report(|u| {
            third.extend(u.values);
            true
        });
        assert_eq!(find(&third, open_g), Some(0));
        assert_eq!(find(&third, idle_g), Some(0));
    }

    #[test]
    fn a_large_report_is_split_into_messages_the_channel_carries() {
        use rproxy_shared::channel::{pair, Received, ToMaster};
        use std::fmt::Write;
        let mut toml = String::from(
            "[[server]]\naddr = \"127.0.0.1\"\nport = 1\n\
             [[server.downstream]]\nname = \"d\"\naddr = \"127.0.0.1\"\nport = 2\n\
             [[server.vhost]]\nname = \"v.test\"\n",
        );
        for r in 0..400 {
            let _ = write!(
                toml,
                "[[server.vhost.rule]]\nname = \"r{r}\"\nuri-match = \"/{r}\"\ndownstreams = [\"d\"]\n"
            );
        }
        let dir = std::env::temp_dir().join(format!("rproxy-wm-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.toml"), toml).unwrap();
        let c = rproxy_shared::load::load(&dir.join("c.toml")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        init(&c);
        // Every request counter of every rule and class changes: 401 x 6 values.
        for rule in 0..=400 {
            for class in [101, 200, 301, 404, 502] {
                RequestTimer::start(0).done(rule, Some(class));
            }
            RequestTimer::start(0).done(rule, None);
        }
        let (master, worker) = pair().unwrap();
        let mut messages = 0;
        report(|u| {
            assert!(u.values.len() <= MAX_METRICS);
            messages += 1;
            worker.send(&ToMaster::Metrics(u)).is_ok()
        });
        let mut got = 0usize;
        while let Received::Message(ToMaster::Metrics(u)) = master.recv().unwrap() {
            got += u.values.len();
        }
        // The request counters, the histogram buckets hit and the sum: every nonzero value.
        let nonzero = LOCAL
            .get()
            .unwrap()
            .values
            .iter()
            .filter(|v| v.get() > 0)
            .count();
        assert!(got > 401 * 6, "{got}");
        assert_eq!(got, nonzero);
        assert_eq!(messages, got.div_ceil(MAX_METRICS));
        assert!(messages >= 2);
    }

    #[test]
    fn counting_before_init_does_nothing() {
        LOCAL.set(None);
        RequestTimer::start(3).done(9, Some(200));
        count(7, ServerCounter::BytesIn, 1);
        let mut called = false;
        report(|_| {
            called = true;
            true
        });
        assert!(!called);
    }
}
