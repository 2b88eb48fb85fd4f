//! Metrics end to end: the real binary with `metrics-listen` on 127.0.0.1, real requests, and
//! every scrape parsed by a strict Prometheus text-format (0.0.4) parser written here. The
//! counters must match the requests sent exactly (status class, server, vhost, rule, bytes),
//! also after a worker is SIGKILLed and after reloads; gauges follow held connections; TLS
//! handshakes are counted; the metrics listener stays bounded against silent clients.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------------
// A strict parser for the Prometheus text format 0.0.4.

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    samples: Vec<Sample>,
}

#[derive(Debug, Default)]
struct Scrape {
    families: HashMap<String, Family>,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || (colon && f == ':'))
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || (colon && x == ':'))
}

/// The family a sample name belongs to, given its type's suffixes.
fn family_of<'a>(name: &'a str, families: &HashMap<String, Family>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if families.get(base).is_some_and(|f| f.kind == "histogram") {
                return Some(base);
            }
        }
    }
    None
}

fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|c| c.1) != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    '\\' => '\\',
                    '"' => '"',
                    other => return Err(format!("bad escape \\{other}")),
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(eq + 1 + i + 1);
                break;
            } else if c == '\n' {
                return Err("newline in a label value".into());
            } else {
                value.push(c);
            }
        }
        let end = end.ok_or("unterminated label value")?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        v => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// Parse a whole exposition, checking: HELP and TYPE once per family, TYPE before its samples,
/// samples of a family together, names and label syntax, histograms complete and monotonic.
fn parse(text: &str) -> Result<Scrape, String> {
    let mut s = Scrape::default();
    let mut current: Option<String> = None;
    let mut done: Vec<String> = Vec::new();
    if !text.ends_with('\n') {
        return Err("no final newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let err = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            let name = name.ok_or_else(|| err("comment without a name".into()))?;
            match kw {
                Some("HELP") => {
                    let f = s.families.entry(name.to_string()).or_default();
                    if f.help {
                        return Err(err("HELP twice".into()));
                    }
                    f.help = true;
                }
                Some("TYPE") => {
                    let kind = arg.ok_or_else(|| err("TYPE without a type".into()))?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(err(format!("unknown type {kind}")));
                    }
                    if !is_name(name, true) {
                        return Err(err("bad metric name".into()));
                    }
                    if done.iter().any(|d| d == name) {
                        return Err(err("family seen twice".into()));
                    }
                    let f = s.families.entry(name.to_string()).or_default();
                    if !f.kind.is_empty() || !f.samples.is_empty() {
                        return Err(err("TYPE twice or after samples".into()));
                    }
                    f.kind = kind.to_string();
                    if let Some(c) = current.replace(name.to_string()) {
                        done.push(c);
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(err("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end + 1..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value".into()))?;
        let mut vt = rest.split(' ');
        let value = parse_value(vt.next().unwrap_or("")).map_err(err)?;
        if let Some(ts) = vt.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp".into()))?;
        }
        let fam = family_of(name, &s.families)
            .ok_or_else(|| err("sample without a TYPE".into()))?
            .to_string();
        if current.as_deref() != Some(fam.as_str()) {
            return Err(err("sample away from its family".into()));
        }
        let f = s.families.get_mut(&fam).unwrap();
        if f.kind == "counter" && (value < 0.0 || value.is_nan()) {
            return Err(err("negative counter".into()));
        }
        f.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for (name, f) in &s.families {
        if f.kind.is_empty() {
            return Err(format!("{name}: HELP without TYPE"));
        }
        if f.kind == "histogram" {
            check_histogram(name, f)?;
        }
    }
    Ok(s)
}

/// Each label set of a histogram: buckets with `le`, non-decreasing, ending with `+Inf` equal
/// to `_count`, and one `_sum`.
fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
    /// Per label set: `(le, value)` buckets, `_sum`, `_count`.
    type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut sets: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
    for s in &f.samples {
        let mut key: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        key.sort();
        let e = sets.entry(key).or_default();
        if s.name == format!("{name}_bucket") {
            let le = s.labels.get("le").ok_or("bucket without le")?;
            e.0.push((parse_value(le)?, s.value));
        } else if s.name == format!("{name}_sum") {
            e.1 = Some(s.value);
        } else if s.name == format!("{name}_count") {
            e.2 = Some(s.value);
        } else {
            return Err(format!("{}: not a histogram sample", s.name));
        }
    }
    for (labels, (buckets, sum, count)) in sets {
        let (Some(_), Some(count)) = (sum, count) else {
            return Err(format!("{name}{labels:?}: no _sum or _count"));
        };
        for w in buckets.windows(2) {
            if w[1].0 <= w[0].0 || w[1].1 < w[0].1 {
                return Err(format!("{name}{labels:?}: buckets not increasing"));
            }
        }
        match buckets.last() {
            Some((le, v)) if le.is_infinite() && *v == count => {}
            _ => return Err(format!("{name}{labels:?}: no +Inf bucket equal to _count")),
        }
    }
    Ok(())
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"q\\\"\\\\\\n\"} 1\n";
    let s = parse(ok).unwrap();
    assert_eq!(s.families["a_total"].samples[0].labels["l"], "q\"\\\n");
    for bad in [
        "a 1\n",
        "# TYPE a counter\n# TYPE a counter\na 1\n",
        "# TYPE a counter\na{l=\"x} 1\n",
        "# TYPE a counter\na{l=x} 1\n",
        "# TYPE a counter\na -1\n",
        "# TYPE a counter\n# TYPE b gauge\na 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE a gauge\na 1",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// GET /metrics from the master: the parsed body (panics on a bad status or format).
fn scrape(port: u16) -> Scrape {
    let text = raw_response(
        port,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let head_end = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&text[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let body = String::from_utf8(text[head_end..].to_vec()).unwrap();
    parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

impl Scrape {
    /// The value of the sample `name` whose labels include all of `labels` (0 when none).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every nonzero `rproxy_requests_total` sample as `(server, vhost, rule, code) -> n`.
    fn requests(&self) -> BTreeMap<(String, String, String, String), u64> {
        self.families
            .get("rproxy_requests_total")
            .map(|f| {
                f.samples
                    .iter()
                    .filter(|s| s.value > 0.0)
                    .map(|s| {
                        let l = |k: &str| s.labels[k].clone();
                        (
                            (l("server"), l("vhost"), l("rule"), l("code")),
                            s.value as u64,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Scrape until `ok` holds (the workers report every second), or panic with the last scrape.
fn wait_scrape(port: u16, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(port);
        if ok(&s) {
            return s;
        }
        if Instant::now() > end {
            panic!("{what}: not reached; last scrape: {s:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

type Expected = BTreeMap<(String, String, String, String), u64>;

fn key(server: &str, vhost: &str, rule: &str, code: &str) -> (String, String, String, String) {
    (
        server.to_string(),
        vhost.to_string(),
        rule.to_string(),
        code.to_string(),
    )
}

/// A request on a connection of its own: `(status, bytes sent, bytes received)`.
fn request(port: u16, bytes: &[u8]) -> (u16, u64, u64) {
    let text = raw_response(port, bytes);
    (
        parse_response(&text).0,
        bytes.len() as u64,
        text.len() as u64,
    )
}

fn routed_config(port: u16, metrics: u16, backend: u16, extra_global: &str) -> String {
    format!(
        "{}workers = 2\nmetrics-listen = \"127.0.0.1:{metrics}\"\n{extra_global}\n\
         [[server]]\naddr = \"127.0.0.1\"\nport = {port}\n\
         [[server.downstream]]\nname = \"app\"\naddr = \"127.0.0.1\"\nport = {backend}\n\
         connections = 2\n\
         [[server.vhost]]\nname = \"m.test\"\n\
         [[server.vhost.rule]]\nname = \"api\"\nuri-gmatch = \"/api/*\"\ndownstreams = [\"app\"]\n\
         [[server.vhost.rule]]\nname = \"gone\"\nuri-match = \"/gone\"\ndownstreams = []\n",
        identity()
    )
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn counters_match_the_requests_across_a_killed_worker_and_reloads() {
    let backend = Backend::start("metrics");
    let (port, mport) = (free_port(), free_port());
    let server = format!("127.0.0.1:{port}");
    let p = Proxy::start(
        "metrics-counters",
        &routed_config(port, mport, backend.port, ""),
        port,
    );
    let (bytes_in, bytes_out) = (Cell::new(0u64), Cell::new(0u64));
    let send = |req: &str, want: u16| {
        let (status, i, o) = request(port, req.as_bytes());
        assert_eq!(status, want, "{req:?}");
        bytes_in.set(bytes_in.get() + i);
        bytes_out.set(bytes_out.get() + o);
    };
    let api = "GET /api/x HTTP/1.1\r\nHost: m.test\r\nConnection: close\r\n\r\n";
    for _ in 0..5 {
        send(api, 200);
    }
    for _ in 0..3 {
        send(
            "GET /nothing HTTP/1.1\r\nHost: m.test\r\nConnection: close\r\n\r\n",
            404,
        );
    }
    for _ in 0..2 {
        send(
            "GET /api/x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
            404,
        );
    }
    send(
        "GET /gone HTTP/1.1\r\nHost: m.test\r\nConnection: close\r\n\r\n",
        404,
    );
    // hyper refuses this head itself: counted without a rule.
    send("GET /api/x HTTP/1.1\r\nHost m.test\r\n\r\n", 400);
    let mut want: Expected = BTreeMap::new();
    want.insert(key(&server, "m.test", "api", "2xx"), 5);
    want.insert(key(&server, "-", "-", "4xx"), 6);
    want.insert(key(&server, "m.test", "gone", "4xx"), 1);
    let srv = [("server", server.as_str())];
    // A response's bytes are written after its request was counted; both reach the master
    // with a heartbeat: wait for all of them.
    let bytes_match = |s: &Scrape| {
        s.get("rproxy_received_bytes_total", &srv) == bytes_in.get() as f64
            && s.get("rproxy_sent_bytes_total", &srv) == bytes_out.get() as f64
    };
    let idle_pool = [("downstream", "app"), ("state", "idle")];
    let s = wait_scrape(mport, "the first requests", |s| {
        s.requests() == want
            && bytes_match(s)
            // Each worker keeps `connections = 2` to the downstream.
            && s.get("rproxy_downstream_connections", &idle_pool) == 4.0
    });
    // Every request but hyper's own 400 was timed.
    assert_eq!(s.get("rproxy_request_duration_seconds_count", &srv), 11.0);
    assert_eq!(s.get("rproxy_workers", &[]), 2.0);
    assert_eq!(s.get("rproxy_worker_restarts_total", &[]), 0.0);
    assert_eq!(
        s.get(
            "rproxy_downstream_up",
            &[("server", &server), ("downstream", "app")]
        ),
        1.0
    );

    // A worker SIGKILLed: its counts stay, its replacement starts counting from zero.
    let victim = p.workers()[0];
    // SAFETY: a worker of the proxy this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    p.wait_log("replacing it", Duration::from_secs(5));
    let s = wait_scrape(mport, "the replacement", |s| {
        s.get("rproxy_worker_restarts_total", &[]) == 1.0
            && s.get("rproxy_workers", &[]) == 2.0
            && p.workers().len() == 2
            && !p.workers().contains(&victim)
    });
    assert_eq!(s.requests(), want, "after the kill");
    assert!(bytes_match(&s), "after the kill: {s:#?}");
    for _ in 0..3 {
        send(api, 200);
    }
    *want.get_mut(&key(&server, "m.test", "api", "2xx")).unwrap() += 3;
    wait_scrape(mport, "after the kill", |s| {
        s.requests() == want && bytes_match(s)
    });

    // A good reload: the totals carry over, the next requests add to them.
    p.signal(libc::SIGHUP);
    p.wait_log("reload complete", Duration::from_secs(10));
    send(api, 200);
    *want.get_mut(&key(&server, "m.test", "api", "2xx")).unwrap() += 1;
    let s = wait_scrape(mport, "after the reload", |s| {
        s.requests() == want && bytes_match(s) && s.get("rproxy_workers", &[]) == 2.0
    });
    assert_eq!(
        s.get("rproxy_config_reloads_total", &[("result", "ok")]),
        1.0
    );

    // A bad reload is counted and changes nothing else.
    p.write_config("this is not toml [");
    p.signal(libc::SIGHUP);
    p.wait_log("reload failed", Duration::from_secs(10));
    let s = scrape(mport);
    assert_eq!(
        s.get("rproxy_config_reloads_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(
        s.get("rproxy_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(s.requests(), want);
    assert!(bytes_match(&s));
}

/// One `openssl s_client` TLS 1.2 request offering the session saved in `sess` (when there
/// is one); whether it resumed.
fn s_client(port: u16, sess: &Path) -> bool {
    s_client_resumed(port, &["-tls1_2"], sess)
}

#[test]
fn gauges_follow_held_connections_and_tls_handshakes_are_counted() {
    let backend = Backend::start("metrics-gauges");
    let (port, tport, mport) = (free_port(), free_port(), free_port());
    let dir = temp_dir("metrics-tls-pki");
    let mut cfg = flat_config(
        port,
        &[backend.port],
        "",
        &format!("metrics-listen = \"127.0.0.1:{mport}\"\nworkers = 2\n"),
    );
    cfg.push_str(&format!(
        "[[server]]\naddr = \"127.0.0.1\"\nport = {tport}\n{}\
         [[server.downstream]]\naddr = \"127.0.0.1\"\nport = {}\n",
        ssl_section(&dir, ""),
        backend.port
    ));
    let _p = Proxy::start("metrics-gauges", &cfg, port);
    let (plain, tls) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{tport}"));

    // Three keep-alive connections, each after one request: open and idle.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let n = c.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    let open = |s: &Scrape| s.get("rproxy_client_connections_open", &[("server", &plain)]);
    let idle = |s: &Scrape| s.get("rproxy_client_connections_idle", &[("server", &plain)]);
    let parked = |s: &Scrape| s.get("rproxy_client_connections_parked", &[("server", &plain)]);
    wait_scrape(mport, "3 connections open and idle", |s| {
        open(s) == 3.0 && idle(s) == 3.0
    });
    // Idle for over a second: parked in the worker's idle set, still open and idle.
    wait_scrape(mport, "3 connections parked", |s| {
        parked(s) == 3.0 && open(s) == 3.0 && idle(s) == 3.0
    });
    drop(held);
    wait_scrape(mport, "no connection open", |s| {
        open(s) == 0.0 && idle(s) == 0.0 && parked(s) == 0.0
    });

    // TLS: a full handshake, a resumed one, and a client that speaks plain HTTP.
    let sess = dir.join("sess.pem");
    let resumed = [s_client(tport, &sess), s_client(tport, &sess)];
    assert!(!resumed[0]);
    let (status, _) = get(tport, "/");
    assert_eq!(status, 0, "plain HTTP on the TLS port got an answer");
    let srv = [("server", tls.as_str())];
    let s = wait_scrape(mport, "TLS counters", |s| {
        s.get("rproxy_tls_handshakes_total", &srv) == 2.0
            && s.get("rproxy_tls_handshake_failures_total", &srv) == 1.0
    });
    assert_eq!(
        s.get("rproxy_tls_resumptions_total", &srv),
        f64::from(u8::from(resumed[1]))
    );
    assert_eq!(
        s.get("rproxy_tls_handshakes_total", &[("server", &plain)]),
        0.0
    );
    assert_eq!(
        s.get(
            "rproxy_requests_total",
            &[("server", &tls), ("code", "2xx")]
        ),
        2.0
    );
}

#[test]
fn the_metrics_listener_is_bounded_and_answers_only_get_metrics() {
    let backend = Backend::start("metrics-bounded");
    let (port, mport) = (free_port(), free_port());
    let cfg = flat_config(
        port,
        &[backend.port],
        "",
        &format!("metrics-listen = \"127.0.0.1:{mport}\"\nworkers = 1\n"),
    );
    let p = Proxy::start("metrics-bounded", &cfg, port);
    let status = |req: &[u8]| parse_response(&raw_response(mport, req)).0;
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 404);
    assert_eq!(status(b"POST /metrics HTTP/1.1\r\n\r\n"), 405);
    assert_eq!(status(b"\x16\x03\x01\x00\x10hello\r\n\r\n"), 400);
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.resize(9000, b'a');
    assert_eq!(status(&big), 400);

    // A silent client does not delay a scrape.
    let silent = TcpStream::connect(("127.0.0.1", mport)).unwrap();
    let t0 = Instant::now();
    scrape(mport);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // It is dropped at the deadline.
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!((&silent).read(&mut b).ok(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());

    // Every slot held by a silent client: a scrape waits for a slot (at most the deadline)
    // while the master goes on supervising (a reload completes meanwhile).
    let hogs: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", mport)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    p.signal(libc::SIGHUP);
    p.wait_log("reload complete", Duration::from_secs(10));
    let t0 = Instant::now();
    let s = scrape(mport);
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(
        s.get("rproxy_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    drop(hogs);
    let (st, _) = get(port, "/");
    assert_eq!(st, 200);

    // A reload moves the listener to a new address; the old one is closed.
    let mport2 = free_port();
    p.write_config(&cfg.replace(&format!(":{mport}\""), &format!(":{mport2}\"")));
    p.signal(libc::SIGHUP);
    p.wait_log_count("reload complete", 2, Duration::from_secs(10));
    let s = scrape(mport2);
    assert_eq!(
        s.get("rproxy_config_reloads_total", &[("result", "ok")]),
        2.0
    );
    assert!(TcpStream::connect(("127.0.0.1", mport)).is_err());
}
