//! Test harness: starts the real `rproxy` binary (master + forked workers) on a generated
//! configuration, real HTTP backends on 127.0.0.1, and gives clients and process helpers.
//! Every process a test starts is ended by PID when its handle drops.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};

pub const BIN: &str = env!("CARGO_BIN_EXE_rproxy");

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "rproxy-test-{}-{}-{}",
        name,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    // Workers run as nobody and may need to read here.
    let _ = Command::new("chmod").arg("755").arg(&d).status();
    d
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the tests run as root. Checks that need it say `SKIP:` on stderr when not (CI runs
/// as root, and `.ci/run` refuses to run otherwise).
pub fn is_root(check: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIP: {check} (needs root)");
    }
    root
}

/// `user`/`group` lines for test configs: workers drop to nobody when we are root.
pub fn identity() -> &'static str {
    "user = \"nobody\"\ngroup = \"nogroup\"\n"
}

// ---------------------------------------------------------------------------------------------
// Backends

/// A local HTTP/1.1 origin. Paths:
/// - `/echo` returns the request body;
/// - `/big/N` returns N bytes (pattern `i % 251`);
/// - `/sleep/MS` answers after MS milliseconds;
/// - `/headers` returns the request head as text (`name: value` lines);
/// - anything else returns `name` of the backend.
pub struct Backend {
    pub port: u16,
    pub hits: Arc<AtomicU64>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicU64>,
    /// Body bytes `/big/N` has handed to its connections so far (what the origin sent).
    pub produced: Arc<AtomicU64>,
    /// Body bytes `/sink` has read so far (what the origin received).
    pub consumed: Arc<AtomicU64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        Self::start_on(name, 0, Duration::ZERO)
    }

    /// A backend that waits `delay` before every answer.
    pub fn slow(name: &str, delay: Duration) -> Backend {
        Self::start_on(name, 0, delay)
    }

    pub fn start_on(name: &str, port: u16, delay: Duration) -> Backend {
        let listener = StdListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let acc = accepted.clone();
        let produced = Arc::new(AtomicU64::new(0));
        let consumed = Arc::new(AtomicU64::new(0));
        let counters = Counters {
            produced: produced.clone(),
            consumed: consumed.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let name: Arc<str> = Arc::from(name);
        let h = hits.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut rx = rx;
                loop {
                    tokio::select! {
                        _ = &mut rx => return,
                        r = listener.accept() => {
                            let Ok((s, _)) = r else { continue };
                            acc.fetch_add(1, Ordering::Relaxed);
                            let name = name.clone();
                            let h = h.clone();
                            let counters = counters.clone();
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(move |req| {
                                    h.fetch_add(1, Ordering::Relaxed);
                                    origin(req, name.clone(), delay, counters.clone())
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                    .with_upgrades()
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        Backend {
            port,
            hits,
            accepted,
            produced,
            consumed,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Progress of the origin's streamed bodies, for backpressure checks.
#[derive(Clone)]
struct Counters {
    produced: Arc<AtomicU64>,
    consumed: Arc<AtomicU64>,
}

async fn origin(
    req: Request<Incoming>,
    name: Arc<str>,
    delay: Duration,
    counters: Counters,
) -> Result<Response<OriginBody>, Infallible> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let path = req.uri().path().to_string();
    let full = |b: Bytes| Full::new(b).boxed();
    if path == "/echo" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Ok(Response::new(full(body)));
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap_or(0);
        // Streamed in 64 KiB chunks, so a slow reader pushes back on us.
        let produced = counters.produced.clone();
        // Lazy: a chunk is made (and counted) when hyper asks for it, i.e. when it has room.
        let chunks = (0..n).step_by(65536).map(move |start| {
            let end = (start + 65536).min(n);
            produced.fetch_add((end - start) as u64, Ordering::Relaxed);
            let v: Vec<u8> = (start..end).map(|i| (i % 251) as u8).collect();
            Ok::<_, Infallible>(Frame::data(Bytes::from(v)))
        });
        let stream = futures_util::stream::iter(chunks);
        let mut r = Response::new(StreamBody::new(stream).boxed());
        r.headers_mut()
            .insert("content-length", n.to_string().parse().unwrap());
        return Ok(r);
    }
    if let Some(ms) = path.strip_prefix("/sleep/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(full(Bytes::from(format!("slept {ms}")))));
    }
    if path == "/sink" {
        // A slow reader: 2 ms pause per 256 KiB; answers "<bytes> <checksum>".
        let mut body = req.into_body();
        let (mut n, mut sum, mut since_pause) = (0u64, Checksum::default(), 0usize);
        while let Some(f) = body.frame().await {
            let Ok(f) = f else { break };
            if let Ok(d) = f.into_data() {
                n += d.len() as u64;
                counters
                    .consumed
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
                sum.update(&d);
                since_pause += d.len();
                if since_pause >= 256 * 1024 {
                    since_pause = 0;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
        return Ok(Response::new(full(Bytes::from(format!(
            "{n} {}",
            sum.value()
        )))));
    }
    if path == "/close" {
        // Answer, then close the connection (the pool must not reuse it).
        let mut r = Response::new(full(Bytes::from_static(b"closing")));
        r.headers_mut()
            .insert("connection", "close".parse().unwrap());
        return Ok(r);
    }
    if let Some(n) = path.strip_prefix("/chunked/") {
        // A body without Content-Length: sent chunked.
        let n: usize = n.parse().unwrap_or(0);
        let parts =
            (0..n).map(|i| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("part{i};")))));
        return Ok(Response::new(
            StreamBody::new(futures_util::stream::iter(parts)).boxed(),
        ));
    }
    if path == "/headers" {
        let mut s = format!("{} {}\n", req.method(), req.uri());
        for (k, v) in req.headers() {
            s.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        return Ok(Response::new(full(Bytes::from(s))));
    }
    Ok(Response::new(full(Bytes::from(name.to_string()))))
}

/// Order-sensitive checksum of a byte stream (Fletcher-style), for bodies too big to keep.
#[derive(Default, Clone, Copy)]
pub struct Checksum {
    a: u64,
    b: u64,
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        for &x in data {
            self.a = (self.a + u64::from(x)) % 65521;
            self.b = (self.b + self.a) % 65521;
        }
    }
    pub fn value(&self) -> u64 {
        (self.b << 16) | self.a
    }
}

/// The pattern `/big/N` serves, for comparisons.
pub fn big_body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// The proxy

pub struct Proxy {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    stderr: PathBuf,
}

impl Proxy {
    /// Start `rproxy -f` on `config` (written to a fresh directory) and wait until it says its
    /// workers are ready and `port` accepts.
    pub fn start(name: &str, config: &str, port: u16) -> Proxy {
        Self::start_with_env(name, config, port, &[])
    }

    pub fn start_with_env(name: &str, config: &str, port: u16, env: &[(&str, &str)]) -> Proxy {
        Self::start_full(name, config, port, env, None)
    }

    /// Like `start`, for a configuration with `error-log` set: the daemon's messages go there.
    pub fn start_error_log(name: &str, config: &str, port: u16, error_log: &Path) -> Proxy {
        Self::start_full(name, config, port, &[], Some(error_log))
    }

    fn start_full(
        name: &str,
        config: &str,
        port: u16,
        env: &[(&str, &str)],
        error_log: Option<&Path>,
    ) -> Proxy {
        let dir = temp_dir(name);
        let path = dir.join("rproxy.toml");
        std::fs::write(&path, config).unwrap();
        let stderr = dir.join("stderr.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("-f")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .env_remove("NOTIFY_SOCKET");
        if !config.contains("control-socket") {
            // Each proxy its own control socket (the default path is one per machine);
            // `start_with_env` may name another.
            cmd.env("RPROXY_CONTROL_SOCKET", dir.join("ctl.sock"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let p = Proxy {
            child,
            dir,
            config: path,
            port,
            stderr: error_log.map_or(stderr, Path::to_path_buf),
        };
        p.wait_log("workers ready", Duration::from_secs(10));
        wait_port(port, Duration::from_secs(5));
        p
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Wait until the error log contains `needle` (panics with the log after `timeout`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        self.wait_log_count(needle, 1, timeout)
    }

    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return;
            }
            if Instant::now() > end {
                panic!("no {count}x {needle:?} in the log after {timeout:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling the process this test started.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Replace the configuration file (for a reload).
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
    }

    /// The master's worker processes (children by PPID).
    pub fn workers(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Wait for the master to exit, returning its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        kill_tree(self.pid());
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- rproxy error log ({}) ---\n{}",
                self.stderr.display(),
                self.log()
            );
        }
    }
}

/// SIGKILL a master this test started, then the workers it had.
pub fn kill_tree(master: i32) {
    let workers = children_of(master);
    // SAFETY: signalling processes this test started, by PID.
    unsafe { libc::kill(master, libc::SIGKILL) };
    for w in workers {
        unsafe { libc::kill(w, libc::SIGKILL) };
    }
}

/// PIDs whose parent is `ppid`, from /proc.
pub fn children_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((pp, state)) = ppid_of(pid) {
            if pp == ppid && state != 'Z' {
                out.push(pid);
            }
        }
    }
    out.sort_unstable();
    out
}

/// `(ppid, state)` of a live process.
pub fn ppid_of(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((ppid, state))
}

pub fn alive(pid: i32) -> bool {
    matches!(ppid_of(pid), Some((_, s)) if s != 'Z')
}

pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Real UID of a process.
pub fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Total RSS in KiB of `pids`.
pub fn rss_kib(pids: &[i32]) -> u64 {
    pids.iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

pub fn wait_port(port: u16, timeout: Duration) {
    let end = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > end {
            panic!("port {port} never accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        if Instant::now() > end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One blocking GET on a new connection: `(status, body)`.
pub fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Write raw bytes on a fresh connection and read the whole answer; `(status, body)`.
pub fn raw(port: u16, bytes: &[u8]) -> (u16, Vec<u8>) {
    let text = raw_response(port, bytes);
    parse_response(&text)
}

pub fn raw_response(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A request or response head, read byte by byte up to its blank line (nothing after it is
/// consumed); `None` when the stream ends or fails first. For hand-made origins.
pub fn read_head(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

pub fn parse_response(text: &[u8]) -> (u16, Vec<u8>) {
    let status = std::str::from_utf8(text.get(9..12).unwrap_or(b"000"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = match text.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => text[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

/// Each `(name, raw request)` gets 400 on a connection of its own, and `backend` sees none.
pub fn assert_refused_400(port: u16, backend: &Backend, attacks: &[(&str, &[u8])]) {
    for (name, bytes) in attacks {
        let before = backend.hits();
        let text = raw_response(port, bytes);
        let (status, _) = parse_response(&text);
        assert_eq!(status, 400, "{name}: {:?}", String::from_utf8_lossy(&text));
        assert_eq!(backend.hits(), before, "{name} reached the downstream");
    }
}

/// The lines of a (log) file; none when it does not exist yet.
pub fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The lines of `p` once it has at least `n` (or whatever it has after 5 s).
pub fn wait_lines(p: &Path, n: usize) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let l = read_lines(p);
        if l.len() >= n || Instant::now() > end {
            return l;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A flat-form configuration: one server on `port` forwarding to `backends`.
pub fn flat_config(port: u16, backends: &[u16], extra_server: &str, extra_global: &str) -> String {
    let mut c = format!(
        "{}{}\n[[server]]\naddr = \"127.0.0.1\"\nport = {port}\n{extra_server}\n",
        identity(),
        extra_global
    );
    for b in backends {
        c.push_str(&format!(
            "[[server.downstream]]\naddr = \"127.0.0.1\"\nport = {b}\nconnections = 4\n[server.downstream.retry]\nseconds = 0\nuseconds = 100000\n"
        ));
    }
    c
}

/// [`flat_config`] with one pooled connection per downstream: one exchange in progress makes
/// the next request wait in the queue.
pub fn one_connection_config(
    port: u16,
    backends: &[u16],
    extra_server: &str,
    extra_global: &str,
) -> String {
    flat_config(port, backends, extra_server, extra_global)
        .replace("connections = 4", "connections = 1")
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

// ---------------------------------------------------------------------------------------------
// Load

/// A multi-threaded runtime for test clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Continuous GETs of `url` from `clients` tasks until [`Load::finish`] (40 s at most): even
/// tasks keep one connection alive, odd ones open a new connection per request. A request
/// counts as ok when it gets 200 and `expect` as its body.
pub struct Load {
    rt: tokio::runtime::Runtime,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: String, clients: usize, expect: &'static [u8]) -> Load {
        let rt = runtime();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|i| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.clone());
                rt.spawn(async move {
                    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
                    if i % 2 == 1 {
                        b = b.pool_max_idle_per_host(0);
                    }
                    let client = b.build().unwrap();
                    let end = Instant::now() + Duration::from_secs(40);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        let result = match client.get(&url).send().await {
                            Ok(r) => {
                                let status = r.status();
                                r.bytes().await.map(|b| (status, b))
                            }
                            Err(e) => Err(e),
                        };
                        match result {
                            Ok((status, body)) if status == 200 && &body[..] == expect => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                eprintln!("failed request: {other:?}");
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            rt,
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Requests that succeeded so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stop the clients and return `(ok, failed)`.
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let tasks = self.tasks;
        self.rt.block_on(async {
            for t in tasks {
                t.await.unwrap();
            }
        });
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// One `openssl s_client` request to 127.0.0.1:`port` (SNI `rproxy.test`, plus `args`),
/// offering the session in `sess` when it exists and saving the newest one there; whether the
/// server resumed it. (The openssl crate's `set_session` never resumed here, against s_server
/// either; s_client's `-sess_in` does.)
pub fn s_client_resumed(port: u16, args: &[&str], sess: &Path) -> bool {
    use std::io::Write;
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "rproxy.test", "-ign_eof"])
        .args(args)
        .arg("-sess_out")
        .arg(sess);
    if sess.exists() {
        cmd.arg("-sess_in").arg(sess);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: rproxy.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    text.contains("\nReused, ")
}

/// Client ports of the established connections `pid` holds on `ports` (server side), from
/// /proc/net/tcp and the process's fds.
pub fn client_ports_of(pid: i32, ports: &[u16]) -> std::collections::HashSet<u16> {
    let mut by_inode = std::collections::HashMap::new();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    for l in tcp.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 10 || f[3] != "01" {
            continue;
        }
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap_or(""), 16).ok();
        if let (Some(lp), Some(rp)) = (port(f[1]), port(f[2])) {
            if ports.contains(&lp) {
                by_inode.insert(f[9].to_string(), rp);
            }
        }
    }
    let mut out = std::collections::HashSet::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                let t = t.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    if let Some(p) = by_inode.get(inode) {
                        out.insert(*p);
                    }
                }
            }
        }
    }
    out
}

/// The PID a pid file names, if it names one.
pub fn pid_in(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A self-signed certificate for `rproxy.test` made with the openssl command line, written to
/// `dir`: `(cert, key)`.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=rproxy.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl req");
    assert!(st.success());
    (cert, key)
}

/// The `[server.ssl]` section of a server with a self-signed certificate made in `dir`, then
/// `extra` (more keys of that section).
pub fn ssl_section(dir: &Path, extra: &str) -> String {
    let (cert, key) = self_signed(dir);
    format!(
        "[server.ssl]\nenabled = true\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        cert.display(),
        key.display()
    )
}
