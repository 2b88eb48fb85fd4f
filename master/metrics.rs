//! The master's metrics (DESIGN section 12): the sum of what the workers report, and the
//! master's own events, rendered as Prometheus text (format 0.0.4) by [`render`].
//!
//! Workers send the current values of their cumulative counters and gauges with each heartbeat
//! (only the changed ones; see `worker/src/metrics.rs`). The master keeps each live worker's
//! last values: a counter's increase since the last report is added to a total keyed by
//! series names (server `addr:port`, vhost, rule, ...), so totals survive worker restarts and
//! reloads; a gauge is the sum over live workers, so a dead worker's connections vanish with
//! it. A worker killed with SIGKILL loses what it counted since its last report (at most one
//! heartbeat interval, 1 s); a worker that exits (drained, stopped) reports its last values
//! first.
//!
//! Series of servers, vhosts or rules that no live worker's configuration has any more (a
//! reload removed them, and the old generation has finished) are dropped at the next scrape;
//! if the name comes back later its counter starts again at 0, which Prometheus' `rate()`
//! treats as a counter reset. So the exported series are bounded by the configurations
//! running now (see README, "Metrics").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rproxy_shared::channel::MetricsUpdate;
use rproxy_shared::config::Config;
use rproxy_shared::metrics::{
    DownstreamGauge, Layout, Series, ServerCounter, ServerGauge, BUCKETS_US, CLASSES,
};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The master's own events, counted where they happen (the master is one thread; atomics only
/// because a `static` needs them).
static WORKER_RESTARTS: AtomicU64 = AtomicU64::new(0);
static RELOADS_OK: AtomicU64 = AtomicU64::new(0);
static RELOADS_FAILED: AtomicU64 = AtomicU64::new(0);

/// A worker died or was killed and is being replaced.
pub fn worker_restarted() {
    WORKER_RESTARTS.fetch_add(1, Ordering::Relaxed);
}

/// A reload ended: `true` when the new generation took over.
pub fn reload_done(ok: bool) {
    let c = if ok { &RELOADS_OK } else { &RELOADS_FAILED };
    c.fetch_add(1, Ordering::Relaxed);
}

/// A worker's configuration with its numbering.
struct Numbered {
    config: Arc<Config>,
    layout: Layout,
}

/// One live worker's last reported values.
struct WorkerValues {
    numbered: Arc<Numbered>,
    last: Vec<u64>,
}

/// A cumulative series, by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Requests {
        server: String,
        vhost: String,
        rule: String,
        class: usize,
    },
    Bucket {
        server: String,
        bucket: usize,
    },
    SumMicros {
        server: String,
    },
    Counter {
        server: String,
        counter: u8,
    },
}

impl Key {
    fn server(&self) -> &str {
        match self {
            Key::Requests { server, .. }
            | Key::Bucket { server, .. }
            | Key::SumMicros { server }
            | Key::Counter { server, .. } => server,
        }
    }
}

/// The server label: the listener's `addr:port`.
fn server_name(config: &Config, server: usize) -> String {
    config
        .servers
        .get(server)
        .map_or_else(|| format!("server[{server}]"), |s| s.listen.to_string())
}

/// `(vhost, rule)` labels of a rule slot; `-` for slot 0 (flat form, or no rule).
fn rule_names(n: &Numbered, server: usize, slot: usize) -> (String, String) {
    match n.layout.rule_of_slot(server, slot) {
        Some((vi, ri)) => {
            let v = &n.config.servers[server].vhosts[vi];
            (v.name.clone(), v.rules[ri].name.clone())
        }
        None => ("-".into(), "-".into()),
    }
}

fn key_of(n: &Numbered, s: Series) -> Option<Key> {
    Some(match s {
        Series::Requests {
            server,
            rule,
            class,
        } => {
            let (vhost, rule) = rule_names(n, server, rule);
            Key::Requests {
                server: server_name(&n.config, server),
                vhost,
                rule,
                class,
            }
        }
        Series::Bucket { server, bucket } => Key::Bucket {
            server: server_name(&n.config, server),
            bucket,
        },
        Series::SumMicros { server } => Key::SumMicros {
            server: server_name(&n.config, server),
        },
        Series::Counter { server, counter } => Key::Counter {
            server: server_name(&n.config, server),
            counter: counter as u8,
        },
        Series::Gauge { .. } | Series::Downstream { .. } => return None,
    })
}

/// The live figures of one downstream, summed over the live workers (for `ctl show
/// downstreams` and the gauges).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DownstreamLive {
    /// The listener's `addr:port`.
    pub server: String,
    pub downstream: String,
    /// Workers with an established connection to it, of `workers` reporting.
    pub up_workers: u32,
    pub workers: u32,
    pub idle: u64,
    pub busy: u64,
    /// Mean of the workers' smoothed response times, microseconds (those with one).
    pub srtt_us: Option<f64>,
}

/// Everything the master knows about metrics.
#[derive(Default)]
pub struct Metrics {
    totals: BTreeMap<Key, u64>,
    /// By worker pid.
    workers: HashMap<i32, WorkerValues>,
    /// The numbering of each generation that reported, by generation id.
    generations: HashMap<u64, Arc<Numbered>>,
}

impl Metrics {
    /// A worker of generation `generation` (running `config`) reported `update`.
    pub fn update(&mut self, pid: i32, generation: u64, config: &Arc<Config>, u: &MetricsUpdate) {
        let numbered = self
            .generations
            .entry(generation)
            .or_insert_with(|| {
                Arc::new(Numbered {
                    layout: Layout::new(config),
                    config: Arc::clone(config),
                })
            })
            .clone();
        if u.layout_len as usize != numbered.layout.len() {
            rproxy_shared::warn!(
                "worker {pid}: metrics numbered for another configuration ({} values, {} \
                 expected): ignored",
                u.layout_len,
                numbered.layout.len()
            );
            return;
        }
        let w = self.workers.entry(pid).or_insert_with(|| WorkerValues {
            last: vec![0; numbered.layout.len()],
            numbered: Arc::clone(&numbered),
        });
        for &(id, v) in &u.values {
            let id = id as usize;
            let Some(last) = w.last.get_mut(id) else {
                continue;
            };
            let old = std::mem::replace(last, v);
            let Some(key) = numbered
                .layout
                .describe(id)
                .and_then(|s| key_of(&numbered, s))
            else {
                continue;
            };
            // A worker's counters only grow; anything else is not counted twice.
            let delta = v.saturating_sub(old);
            if delta > 0 {
                let t = self.totals.entry(key).or_insert(0);
                *t = t.saturating_add(delta);
            }
        }
    }

    /// A worker exited or was killed: its counts stay in the totals, its gauges go.
    pub fn worker_gone(&mut self, pid: i32) {
        self.workers.remove(&pid);
        let live: BTreeSet<*const Numbered> = self
            .workers
            .values()
            .map(|w| Arc::as_ptr(&w.numbered))
            .collect();
        self.generations
            .retain(|_, n| live.contains(&Arc::as_ptr(n)));
    }

    /// Drop the totals of servers, vhosts and rules that no live worker has (see the module
    /// documentation). Without any live worker nothing is dropped (a crash being replaced).
    fn prune(&mut self) {
        if self.workers.is_empty() {
            return;
        }
        let mut servers = BTreeSet::new();
        let mut rules = BTreeSet::new();
        for n in self.generations.values() {
            for (si, s) in n.config.servers.iter().enumerate() {
                let name = server_name(&n.config, si);
                rules.insert((name.clone(), "-".to_string(), "-".to_string()));
                for v in &s.vhosts {
                    for r in &v.rules {
                        rules.insert((name.clone(), v.name.clone(), r.name.clone()));
                    }
                }
                servers.insert(name);
            }
        }
        self.totals.retain(|k, _| match k {
            Key::Requests {
                server,
                vhost,
                rule,
                ..
            } => rules.contains(&(server.clone(), vhost.clone(), rule.clone())),
            k => servers.contains(k.server()),
        });
    }

    /// Per-downstream live figures, in server then configuration order.
    pub fn downstreams(&self) -> Vec<DownstreamLive> {
        let mut by: BTreeMap<(String, usize, String), DownstreamLive> = BTreeMap::new();
        let mut srtt: HashMap<(String, String), (f64, u32)> = HashMap::new();
        for w in self.workers.values() {
            let n = &w.numbered;
            for (si, s) in n.config.servers.iter().enumerate() {
                let server = server_name(&n.config, si);
                for (di, d) in s.downstreams.iter().enumerate() {
                    let get = |g| {
                        n.layout
                            .downstream(si, di, g)
                            .and_then(|i| w.last.get(i).copied())
                            .unwrap_or(0)
                    };
                    let e = by
                        .entry((server.clone(), di, d.name.clone()))
                        .or_insert_with(|| DownstreamLive {
                            server: server.clone(),
                            downstream: d.name.clone(),
                            ..DownstreamLive::default()
                        });
                    e.workers += 1;
                    e.up_workers += u32::from(get(DownstreamGauge::Up) > 0);
                    e.idle += get(DownstreamGauge::Idle);
                    e.busy += get(DownstreamGauge::Busy);
                    let us = get(DownstreamGauge::SrttMicros);
                    if us > 0 {
                        let s = srtt.entry((server.clone(), d.name.clone())).or_default();
                        s.0 += us as f64;
                        s.1 += 1;
                    }
                }
            }
        }
        by.into_values()
            .map(|mut d| {
                d.srtt_us = srtt
                    .get(&(d.server.clone(), d.downstream.clone()))
                    .map(|(sum, n)| sum / f64::from(*n));
                d
            })
            .collect()
    }

    /// Requests waiting for a downstream connection now, by server (`addr:port`), summed over
    /// live workers (for `ctl show downstreams`, next to [`Metrics::downstreams`]).
    pub fn pending(&self) -> BTreeMap<String, u64> {
        self.server_gauges(ServerGauge::Pending)
    }

    /// A per-server gauge summed over live workers, by server name.
    fn server_gauges(&self, g: ServerGauge) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for w in self.workers.values() {
            let n = &w.numbered;
            for si in 0..n.config.servers.len() {
                let v = n
                    .layout
                    .gauge(si, g)
                    .and_then(|i| w.last.get(i).copied())
                    .unwrap_or(0);
                *out.entry(server_name(&n.config, si)).or_insert(0) += v;
            }
        }
        out
    }
}

/// One sample's value.
#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Gauge(f64),
    /// Sum (seconds), per-bucket counts (not cumulative; the last is `+Inf`).
    Histogram(f64, Vec<u64>),
}

type Labels = Vec<(&'static str, String)>;

/// One metric family of a scrape.
#[derive(Debug)]
struct Family {
    /// Without `_total` (the encoder adds it to counters).
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// What one scrape shows: built from the master's state, then encoded.
#[derive(Debug)]
struct Snapshot(Vec<Family>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut m = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.samples {
                let e = m.encode_family(labels)?;
                match v {
                    Value::Counter(c) => ConstCounter::new(*c).encode(e)?,
                    Value::Gauge(g) => ConstGauge::new(*g).encode(e)?,
                    Value::Histogram(sum, buckets) => {
                        let mut e = e;
                        let bounds = BUCKETS_US
                            .iter()
                            .map(|&us| us as f64 / 1e6)
                            .chain([f64::INFINITY]);
                        let pairs: Vec<(f64, u64)> = bounds.zip(buckets.iter().copied()).collect();
                        let count = buckets.iter().sum();
                        e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                            *sum, count, &pairs, None,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn family(name: &'static str, help: &'static str, kind: MetricType) -> Family {
    Family {
        name,
        help,
        kind,
        samples: Vec::new(),
    }
}

/// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]) of everything the master
/// knows now: the workers' totals and gauges and the master's own events.
pub fn render(metrics: &mut Metrics) -> String {
    metrics.prune();
    let mut requests = family(
        "rproxy_requests",
        "Requests answered, by server (addr:port), vhost, rule and status class.",
        MetricType::Counter,
    );
    let mut duration = family(
        "rproxy_request_duration_seconds",
        "Time from a request's head to its response head, by server.",
        MetricType::Histogram,
    );
    let mut counters: Vec<(ServerCounter, Family)> = vec![
        (
            ServerCounter::BytesIn,
            family(
                "rproxy_received_bytes",
                "Bytes received from clients (after TLS decryption).",
                MetricType::Counter,
            ),
        ),
        (
            ServerCounter::BytesOut,
            family(
                "rproxy_sent_bytes",
                "Bytes sent to clients (before TLS encryption).",
                MetricType::Counter,
            ),
        ),
        (
            ServerCounter::Connections,
            family(
                "rproxy_connections_accepted",
                "Client connections accepted.",
                MetricType::Counter,
            ),
        ),
        (
            ServerCounter::TlsHandshakes,
            family(
                "rproxy_tls_handshakes",
                "TLS handshakes completed (full and resumed).",
                MetricType::Counter,
            ),
        ),
        (
            ServerCounter::TlsResumed,
            family(
                "rproxy_tls_resumptions",
                "TLS handshakes that resumed a session.",
                MetricType::Counter,
            ),
        ),
        (
            ServerCounter::TlsFailed,
            family(
                "rproxy_tls_handshake_failures",
                "TLS handshakes that failed or timed out.",
                MetricType::Counter,
            ),
        ),
    ];
    let mut hist: BTreeMap<&str, (f64, Vec<u64>)> = BTreeMap::new();
    for (k, &v) in &metrics.totals {
        match k {
            Key::Requests {
                server,
                vhost,
                rule,
                class,
            } => requests.samples.push((
                vec![
                    ("server", server.clone()),
                    ("vhost", vhost.clone()),
                    ("rule", rule.clone()),
                    ("code", CLASSES[*class].to_string()),
                ],
                Value::Counter(v),
            )),
            Key::Bucket { server, bucket } => {
                let h = hist
                    .entry(server)
                    .or_insert_with(|| (0.0, vec![0; BUCKETS_US.len() + 1]));
                if let Some(b) = h.1.get_mut(*bucket) {
                    *b = v;
                }
            }
            Key::SumMicros { server } => {
                let h = hist
                    .entry(server)
                    .or_insert_with(|| (0.0, vec![0; BUCKETS_US.len() + 1]));
                h.0 = v as f64 / 1e6;
            }
            Key::Counter { server, counter } => {
                if let Some((_, f)) = counters.iter_mut().find(|(c, _)| *c as u8 == *counter) {
                    f.samples
                        .push((vec![("server", server.clone())], Value::Counter(v)));
                }
            }
        }
    }
    for (server, (sum, buckets)) in hist {
        duration.samples.push((
            vec![("server", server.to_string())],
            Value::Histogram(sum, buckets),
        ));
    }
    let mut families = vec![requests, duration];
    families.extend(counters.into_iter().map(|(_, f)| f));
    for (g, name, help) in [
        (
            ServerGauge::Open,
            "rproxy_client_connections_open",
            "Client connections open now.",
        ),
        (
            ServerGauge::Idle,
            "rproxy_client_connections_idle",
            "Client connections open with no request in progress.",
        ),
        (
            ServerGauge::Pending,
            "rproxy_pending_requests",
            "Requests waiting for a downstream connection.",
        ),
        (
            ServerGauge::Parked,
            "rproxy_client_connections_parked",
            "Idle client connections parked in the workers' idle sets (no task held).",
        ),
    ] {
        let mut f = family(name, help, MetricType::Gauge);
        let values = match g {
            ServerGauge::Pending => metrics.pending(),
            g => metrics.server_gauges(g),
        };
        for (server, v) in values {
            f.samples
                .push((vec![("server", server)], Value::Gauge(v as f64)));
        }
        families.push(f);
    }
    let mut up = family(
        "rproxy_downstream_up",
        "1 when at least one worker has an established connection to the downstream.",
        MetricType::Gauge,
    );
    let mut conns = family(
        "rproxy_downstream_connections",
        "Pooled downstream connections, idle or busy (lent to a request).",
        MetricType::Gauge,
    );
    let mut rtt = family(
        "rproxy_downstream_response_time_seconds",
        "Smoothed response time of the downstream (mean over the workers that measured one).",
        MetricType::Gauge,
    );
    for d in metrics.downstreams() {
        let labels = || {
            vec![
                ("server", d.server.clone()),
                ("downstream", d.downstream.clone()),
            ]
        };
        up.samples.push((
            labels(),
            Value::Gauge(f64::from(u8::from(d.up_workers > 0))),
        ));
        for (state, v) in [("idle", d.idle), ("busy", d.busy)] {
            let mut l = labels();
            l.push(("state", state.to_string()));
            conns.samples.push((l, Value::Gauge(v as f64)));
        }
        if let Some(us) = d.srtt_us {
            rtt.samples.push((labels(), Value::Gauge(us / 1e6)));
        }
    }
    families.extend([up, conns, rtt]);
    let mut workers = family(
        "rproxy_workers",
        "Worker processes reporting metrics now.",
        MetricType::Gauge,
    );
    workers
        .samples
        .push((Vec::new(), Value::Gauge(metrics.workers.len() as f64)));
    let mut restarts = family(
        "rproxy_worker_restarts",
        "Workers that died or were killed (hung) and were replaced.",
        MetricType::Counter,
    );
    restarts.samples.push((
        Vec::new(),
        Value::Counter(WORKER_RESTARTS.load(Ordering::Relaxed)),
    ));
    let mut reloads = family(
        "rproxy_config_reloads",
        "Configuration reloads, by result.",
        MetricType::Counter,
    );
    for (result, c) in [("ok", &RELOADS_OK), ("failed", &RELOADS_FAILED)] {
        reloads.samples.push((
            vec![("result", result.to_string())],
            Value::Counter(c.load(Ordering::Relaxed)),
        ));
    }
    let mut info = family(
        "rproxy_build_info",
        "The running version (value 1).",
        MetricType::Gauge,
    );
    info.samples.push((
        vec![("version", env!("CARGO_PKG_VERSION").to_string())],
        Value::Gauge(1.0),
    ));
    families.extend([workers, restarts, reloads, info]);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(families)));
    let mut out = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).is_err() {
        // Writing to a String cannot fail; a collector error would be ours.
        rproxy_shared::error!("metrics: encoding failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Arc<Config> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rproxy-master-metrics-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let c = rproxy_shared::load::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        Arc::new(c)
    }

    const FLAT: &str = "[[server]]\naddr = \"127.0.0.1\"\nport = 18001\n\
        [[server.downstream]]\nname = \"d\\\"1\"\naddr = \"127.0.0.1\"\nport = 18002\n";

    fn req(l: &Layout, class: usize) -> u32 {
        l.requests(0, 0, class).unwrap() as u32
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn totals_add_deltas_and_survive_a_dead_worker() {
        let c = config(FLAT);
        let l = Layout::new(&c);
        let mut m = Metrics::default();
        let up = |values: Vec<(u32, u64)>| MetricsUpdate {
            layout_len: l.len() as u32,
            values,
        };
        let open = l.gauge(0, ServerGauge::Open).unwrap() as u32;
        m.update(10, 1, &c, &up(vec![(req(&l, 1), 5), (open, 3)]));
        m.update(11, 1, &c, &up(vec![(req(&l, 1), 2), (open, 1)]));
        m.update(10, 1, &c, &up(vec![(req(&l, 1), 7)]));
        let text = render(&mut m);
        let want = "rproxy_requests_total{server=\"127.0.0.1:18001\",vhost=\"-\",rule=\"-\",code=\"2xx\"} 9";
        assert!(text.contains(want), "{text}");
        assert!(
            text.contains("rproxy_client_connections_open{server=\"127.0.0.1:18001\"} 4"),
            "{text}"
        );
        // Worker 10 is killed; its replacement starts from zero.
        m.worker_gone(10);
        m.update(12, 1, &c, &up(vec![(req(&l, 1), 1)]));
        let text = render(&mut m);
        assert!(text.contains(&want.replace("} 9", "} 10")), "{text}");
        assert!(
            text.contains("rproxy_client_connections_open{server=\"127.0.0.1:18001\"} 1"),
            "{text}"
        );
        // A label value with a quote is escaped.
        assert!(text.contains("downstream=\"d\\\"1\""), "{text}");
        // An update numbered for another configuration is ignored.
        m.update(
            12,
            1,
            &c,
            &MetricsUpdate {
                layout_len: 1,
                values: vec![(0, 1000)],
            },
        );
        assert!(render(&mut m).contains(&want.replace("} 9", "} 10")));
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let c = config(FLAT);
        let l = Layout::new(&c);
        let mut m = Metrics::default();
        let b = |i| l.bucket(0, i).unwrap() as u32;
        m.update(
            1,
            1,
            &c,
            &MetricsUpdate {
                layout_len: l.len() as u32,
                values: vec![
                    (b(0), 2),
                    (b(3), 1),
                    (b(BUCKETS_US.len()), 4),
                    (l.sum_micros(0).unwrap() as u32, 1_500_000),
                ],
            },
        );
        let text = render(&mut m);
        let s = "rproxy_request_duration_seconds";
        assert_eq!(
            line(
                &text,
                &format!("{s}_bucket{{server=\"127.0.0.1:18001\",le=\"0.005\"}}")
            ),
            Some(
                "rproxy_request_duration_seconds_bucket{server=\"127.0.0.1:18001\",le=\"0.005\"} 2"
            )
        );
        assert!(text.contains("le=\"0.05\"} 3\n"), "{text}");
        assert!(text.contains("le=\"10\"} 3\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 7\n"), "{text}");
        assert!(
            text.contains(&format!("{s}_sum{{server=\"127.0.0.1:18001\"}} 1.5\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{s}_count{{server=\"127.0.0.1:18001\"}} 7\n")),
            "{text}"
        );
    }

    #[test]
    fn removed_servers_are_dropped_once_no_worker_runs_them() {
        let old = config(FLAT);
        let new = config(&FLAT.replace("18001", "18003"));
        let (lo, ln) = (Layout::new(&old), Layout::new(&new));
        let mut m = Metrics::default();
        m.update(
            1,
            1,
            &old,
            &MetricsUpdate {
                layout_len: lo.len() as u32,
                values: vec![(req(&lo, 1), 5)],
            },
        );
        m.update(
            2,
            2,
            &new,
            &MetricsUpdate {
                layout_len: ln.len() as u32,
                values: vec![(req(&ln, 1), 1)],
            },
        );
        assert!(render(&mut m).contains("127.0.0.1:18001"));
        m.worker_gone(1);
        let text = render(&mut m);
        assert!(!text.contains("127.0.0.1:18001"), "{text}");
        assert!(text.contains("127.0.0.1:18003"), "{text}");
        // With no worker left (a crash being replaced) nothing is dropped.
        m.worker_gone(2);
        assert!(render(&mut m).contains("127.0.0.1:18003"));
    }
}
