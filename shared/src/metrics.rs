//! The numbering of a worker's metrics, shared by the worker (which counts into a flat array)
//! and the master (which turns numbers back into series names). Both sides build the same
//! [`Layout`] from the same [`Config`] (a worker's generation), so the channel carries only
//! `(series number, value)` pairs, and only the ones that changed since the last heartbeat.
//!
//! Per `[[server]]` (in configuration order) the numbers are, in this order:
//! - requests: `(rules + 1) x CLASSES` counters; rule slot 0 is "no rule" (the flat form, and
//!   requests answered before or without a rule: 400, 404 without a vhost...), slots 1.. are
//!   the rules of the vhosts in configuration order (vhost-major);
//! - the response-time histogram: one counter per bucket of [`BUCKETS_US`] plus `+Inf`
//!   (per-bucket, not cumulative), then the sum in microseconds;
//! - [`ServerCounter`]s, then [`ServerGauge`]s;
//! - [`DownstreamGauge`]s of each downstream, in configuration order.
//!
//! So one server costs `6 x (rules + 1) + 13 + 6 + 3 + 4 x downstreams` numbers: the
//! cardinality is linear in the configuration, and bounded by it.

use crate::config::Config;

/// Status classes, the `code` label: RProxy's answer or the downstream's, by first digit;
/// `other` is a tunnel whose status rproxy never saw (`passthrough`).
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Upper bounds of the response-time histogram buckets in microseconds (Prometheus' default
/// buckets, 5 ms to 10 s); one more bucket counts the slower ones (`+Inf`).
pub const BUCKETS_US: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// Histogram numbers per server: the buckets, `+Inf`, the sum.
const HIST: u32 = BUCKETS_US.len() as u32 + 2;

/// Per-server counters besides requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCounter {
    /// Bytes read from clients (after TLS decryption).
    BytesIn = 0,
    /// Bytes written to clients (before TLS encryption).
    BytesOut,
    /// Client connections accepted.
    Connections,
    /// Completed TLS handshakes (full and resumed).
    TlsHandshakes,
    /// Of those, resumed sessions.
    TlsResumed,
    /// Handshakes that failed or timed out.
    TlsFailed,
}

const SERVER_COUNTERS: u32 = 6;

/// Per-server gauges: what is true now in one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerGauge {
    /// Client connections open.
    Open = 0,
    /// Of those, with no request in progress.
    Idle,
    /// Requests waiting for a downstream connection.
    Pending,
    /// Idle connections parked in the worker's idle set (a subset of `Idle`).
    Parked,
}

const SERVER_GAUGES: u32 = 4;

/// Per-downstream gauges of one worker's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownstreamGauge {
    /// 1 when the worker has an established connection to it, else 0.
    Up = 0,
    /// Pooled connections idle.
    Idle,
    /// Pooled connections lent to a request.
    Busy,
    /// Smoothed response time in microseconds (0 before the first response).
    SrttMicros,
}

const DOWNSTREAM_GAUGES: u32 = 4;

/// What one number of the layout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// Requests of `server` answered under rule slot `rule` with status class `class`
    /// (an index into [`CLASSES`]).
    Requests {
        server: usize,
        rule: usize,
        class: usize,
    },
    /// Responses of `server` in histogram bucket `bucket` (`BUCKETS_US.len()` is `+Inf`).
    Bucket {
        server: usize,
        bucket: usize,
    },
    /// Sum of the response times of `server`, in microseconds.
    SumMicros {
        server: usize,
    },
    Counter {
        server: usize,
        counter: ServerCounter,
    },
    Gauge {
        server: usize,
        gauge: ServerGauge,
    },
    Downstream {
        server: usize,
        downstream: usize,
        gauge: DownstreamGauge,
    },
}

impl Series {
    /// Gauges are summed over live workers; everything else is a counter whose deltas the
    /// master accumulates.
    pub fn is_gauge(&self) -> bool {
        matches!(self, Series::Gauge { .. } | Series::Downstream { .. })
    }
}

/// Where one server's numbers start, and its sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerLayout {
    base: u32,
    /// Rule slots including slot 0.
    rules: u32,
    downstreams: u32,
    /// `(first rule slot, rules)` of each vhost.
    vhosts: Vec<(u32, u32)>,
}

impl ServerLayout {
    fn hist(&self) -> u32 {
        self.base + self.rules * CLASSES.len() as u32
    }
    fn counters(&self) -> u32 {
        self.hist() + HIST
    }
    fn gauges(&self) -> u32 {
        self.counters() + SERVER_COUNTERS
    }
    fn downstreams(&self) -> u32 {
        self.gauges() + SERVER_GAUGES
    }
    fn end(&self) -> u32 {
        self.downstreams() + self.downstreams * DOWNSTREAM_GAUGES
    }
}

/// The numbering of one configuration's metrics (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    servers: Vec<ServerLayout>,
    len: u32,
}

impl Layout {
    pub fn new(config: &Config) -> Layout {
        let mut servers = Vec::with_capacity(config.servers.len());
        let mut base = 0u32;
        for s in &config.servers {
            let mut vhosts = Vec::with_capacity(s.vhosts.len());
            let mut next = 1u32;
            for v in &s.vhosts {
                let n = v.rules.len() as u32;
                vhosts.push((next, n));
                next += n;
            }
            let l = ServerLayout {
                base,
                rules: next,
                downstreams: s.downstreams.len() as u32,
                vhosts,
            };
            base = l.end();
            servers.push(l);
        }
        Layout { servers, len: base }
    }

    /// How many numbers.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rule slot of rule `rule` of vhost `vhost` of `server` (0 when out of range).
    pub fn rule_slot(&self, server: usize, vhost: usize, rule: usize) -> u32 {
        self.servers
            .get(server)
            .and_then(|s| s.vhosts.get(vhost))
            .filter(|(_, n)| (rule as u32) < *n)
            .map_or(0, |(first, _)| first + rule as u32)
    }

    /// `(vhost, rule)` indices of a rule slot above 0.
    pub fn rule_of_slot(&self, server: usize, slot: usize) -> Option<(usize, usize)> {
        let s = self.servers.get(server)?;
        let slot = slot as u32;
        s.vhosts
            .iter()
            .enumerate()
            .find(|(_, (first, n))| slot >= *first && slot < first + n)
            .map(|(vi, (first, _))| (vi, (slot - first) as usize))
    }

    /// The number of a request counter; `None` for an unknown server or rule slot.
    pub fn requests(&self, server: usize, rule: u32, class: usize) -> Option<usize> {
        let s = self.servers.get(server)?;
        (rule < s.rules && class < CLASSES.len())
            .then(|| (s.base + rule * CLASSES.len() as u32 + class as u32) as usize)
    }

    /// The number of histogram bucket `bucket` (`BUCKETS_US.len()` = `+Inf`).
    pub fn bucket(&self, server: usize, bucket: usize) -> Option<usize> {
        let s = self.servers.get(server)?;
        (bucket <= BUCKETS_US.len()).then(|| (s.hist() + bucket as u32) as usize)
    }

    pub fn sum_micros(&self, server: usize) -> Option<usize> {
        let s = self.servers.get(server)?;
        Some((s.hist() + HIST - 1) as usize)
    }

    pub fn counter(&self, server: usize, c: ServerCounter) -> Option<usize> {
        let s = self.servers.get(server)?;
        Some((s.counters() + c as u32) as usize)
    }

    pub fn gauge(&self, server: usize, g: ServerGauge) -> Option<usize> {
        let s = self.servers.get(server)?;
        Some((s.gauges() + g as u32) as usize)
    }

    pub fn downstream(&self, server: usize, ds: usize, g: DownstreamGauge) -> Option<usize> {
        let s = self.servers.get(server)?;
        ((ds as u32) < s.downstreams)
            .then(|| (s.downstreams() + ds as u32 * DOWNSTREAM_GAUGES + g as u32) as usize)
    }

    /// What number `id` is; `None` past the end.
    pub fn describe(&self, id: usize) -> Option<Series> {
        let id = u32::try_from(id).ok()?;
        let server = self
            .servers
            .partition_point(|s| s.base <= id)
            .checked_sub(1)?;
        let s = &self.servers[server];
        if id >= s.end() {
            return None;
        }
        let classes = CLASSES.len() as u32;
        Some(if id < s.hist() {
            let off = id - s.base;
            Series::Requests {
                server,
                rule: (off / classes) as usize,
                class: (off % classes) as usize,
            }
        } else if id < s.counters() {
            let off = (id - s.hist()) as usize;
            if off == HIST as usize - 1 {
                Series::SumMicros { server }
            } else {
                Series::Bucket {
                    server,
                    bucket: off,
                }
            }
        } else if id < s.gauges() {
            use ServerCounter::*;
            let counter = [
                BytesIn,
                BytesOut,
                Connections,
                TlsHandshakes,
                TlsResumed,
                TlsFailed,
            ][(id - s.counters()) as usize];
            Series::Counter { server, counter }
        } else if id < s.downstreams() {
            use ServerGauge::*;
            let gauge = [Open, Idle, Pending, Parked][(id - s.gauges()) as usize];
            Series::Gauge { server, gauge }
        } else {
            use DownstreamGauge::*;
            let off = id - s.downstreams();
            let gauge = [Up, Idle, Busy, SrttMicros][(off % DOWNSTREAM_GAUGES) as usize];
            Series::Downstream {
                server,
                downstream: (off / DOWNSTREAM_GAUGES) as usize,
                gauge,
            }
        })
    }
}

/// The status class index of a status code (see [`CLASSES`]).
pub fn class_of(status: Option<u16>) -> usize {
    match status {
        Some(s @ 100..=599) => usize::from(s / 100 - 1),
        _ => CLASSES.len() - 1,
    }
}

/// The histogram bucket of a response time.
pub fn bucket_of(micros: u64) -> usize {
    BUCKETS_US.partition_point(|&b| b < micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        let dir = std::env::temp_dir().join(format!(
            "rproxy-metrics-layout-{}-{}",
            std::process::id(),
            toml.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let c = crate::load::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        c
    }

    const ROUTED: &str = r#"
        [[server]]
        addr = "127.0.0.1"
        port = 1
        [[server.downstream]]
        addr = "127.0.0.1"
        port = 2
        [[server]]
        addr = "127.0.0.1"
        port = 3
        [[server.downstream]]
        name = "a"
        addr = "127.0.0.1"
        port = 4
        [[server.downstream]]
        name = "b"
        addr = "127.0.0.1"
        port = 5
        [[server.vhost]]
        name = "x.test"
        [[server.vhost.rule]]
        name = "one"
        uri-match = "/one"
        downstreams = ["a"]
        [[server.vhost.rule]]
        name = "two"
        uri-match = "/two"
        downstreams = ["b"]
        [[server.vhost]]
        name = "y.test"
        [[server.vhost.rule]]
        name = "one"
        uri-match = "/"
        downstreams = ["a", "b"]
    "#;

    #[test]
    fn every_number_describes_back_to_itself() {
        let c = config(ROUTED);
        let l = Layout::new(&c);
        let per = |rules: usize, ds: usize| 6 * rules + 13 + 6 + 4 + 4 * ds;
        assert_eq!(l.len(), per(1, 1) + per(4, 2));
        let mut seen = vec![false; l.len()];
        let mut mark = |id: Option<usize>, want: Series| {
            let id = id.unwrap();
            assert_eq!(l.describe(id), Some(want));
            assert!(!std::mem::replace(&mut seen[id], true), "{id} twice");
        };
        for (server, rules, ds) in [(0usize, 1u32, 1usize), (1, 4, 2)] {
            for rule in 0..rules {
                for class in 0..CLASSES.len() {
                    let want = Series::Requests {
                        server,
                        rule: rule as usize,
                        class,
                    };
                    mark(l.requests(server, rule, class), want);
                }
            }
            for bucket in 0..=BUCKETS_US.len() {
                mark(l.bucket(server, bucket), Series::Bucket { server, bucket });
            }
            mark(l.sum_micros(server), Series::SumMicros { server });
            use ServerCounter::*;
            for counter in [
                BytesIn,
                BytesOut,
                Connections,
                TlsHandshakes,
                TlsResumed,
                TlsFailed,
            ] {
                mark(
                    l.counter(server, counter),
                    Series::Counter { server, counter },
                );
            }
            for gauge in [
                ServerGauge::Open,
                ServerGauge::Idle,
                ServerGauge::Pending,
                ServerGauge::Parked,
            ] {
                mark(l.gauge(server, gauge), Series::Gauge { server, gauge });
            }
            for downstream in 0..ds {
                use DownstreamGauge::*;
                for gauge in [Up, Idle, Busy, SrttMicros] {
                    let want = Series::Downstream {
                        server,
                        downstream,
                        gauge,
                    };
                    mark(l.downstream(server, downstream, gauge), want);
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(l.describe(l.len()), None);
        assert_eq!(l.requests(0, 1, 0), None);
        assert_eq!(l.requests(2, 0, 0), None);
        assert_eq!(l.downstream(0, 1, DownstreamGauge::Up), None);
    }

    #[test]
    fn rule_slots_are_vhost_major_and_name_back() {
        let l = Layout::new(&config(ROUTED));
        assert_eq!(l.rule_slot(1, 0, 0), 1);
        assert_eq!(l.rule_slot(1, 0, 1), 2);
        assert_eq!(l.rule_slot(1, 1, 0), 3);
        assert_eq!(l.rule_slot(1, 1, 1), 0);
        assert_eq!(l.rule_slot(0, 0, 0), 0);
        assert_eq!(l.rule_of_slot(1, 3), Some((1, 0)));
        assert_eq!(l.rule_of_slot(1, 2), Some((0, 1)));
        assert_eq!(l.rule_of_slot(1, 0), None);
        assert_eq!(l.rule_of_slot(1, 4), None);
    }

    #[test]
    fn classes_and_buckets() {
        assert_eq!(class_of(Some(101)), 0);
        assert_eq!(class_of(Some(200)), 1);
        assert_eq!(class_of(Some(399)), 2);
        assert_eq!(class_of(Some(404)), 3);
        assert_eq!(class_of(Some(504)), 4);
        assert_eq!(class_of(None), 5);
        assert_eq!(class_of(Some(999)), 5);
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(5_000), 0);
        assert_eq!(bucket_of(5_001), 1);
        assert_eq!(bucket_of(10_000_000), 10);
        assert_eq!(bucket_of(10_000_001), 11);
    }
}
