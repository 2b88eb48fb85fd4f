//! What a hostile client, backend or local user tried, byte for byte, through the real binary:
//! each test sends the exact attack and checks what the client got and what reached the
//! downstream.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A downstream that answers every request head on a connection with `response`, and keeps
/// each head it read (lowercased) for the test. Its threads end with their connections or
/// after 20 s.
fn scripted_origin(response: &'static [u8]) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let seen = seen.clone();
            std::thread::spawn(move || {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                loop {
                    let Some(head) = read_head(&mut s) else {
                        return;
                    };
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).to_ascii_lowercase());
                    if s.write_all(response).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, heads)
}

/// One `GET /` (`Connection: close`) through a fresh proxy in front of a [`scripted_origin`]
/// answering `response`: the bytes the client got, and the heads the origin read.
fn get_via_scripted(name: &str, response: &'static [u8]) -> (Vec<u8>, Arc<Mutex<Vec<String>>>) {
    let (bport, heads) = scripted_origin(response);
    let (_p, port) = start(name, bport, "");
    let text = raw_response(
        port,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    (text, heads)
}

fn start(name: &str, backend: u16, extra_server: &str) -> (Proxy, u16) {
    let port = free_port();
    let p = Proxy::start(
        name,
        &flat_config(port, &[backend], extra_server, "workers = 1"),
        port,
    );
    (p, port)
}

#[test]
fn request_heads_a_proxy_must_refuse_get_400() {
    let b = Backend::start("b");
    let (_p, port) = start("head400", b.port, "");
    let attacks: &[(&str, &[u8])] = &[
        ("no host", b"GET /headers HTTP/1.1\r\n\r\n"),
        (
            "two hosts",
            b"GET /headers HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        (
            "invalid host",
            b"GET /headers HTTP/1.1\r\nHost: a b/c@d\r\n\r\n",
        ),
        ("userinfo host", b"GET /headers HTTP/1.1\r\nHost: u@a\r\n\r\n"),
        ("not origin-form", b"GET abc HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("authority-form", b"GET evil:80 HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("asterisk on GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("other scheme", b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
        (
            "userinfo in target",
            b"GET http://u:p@a/headers HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "chunk size overflow",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx\r\n0\r\n\r\n",
        ),
    ];
    assert_refused_400(port, &b, attacks);
}

#[test]
fn connect_is_405_and_costs_no_downstream_connection() {
    let b = Backend::start("b");
    let (_p, port) = start("connect", b.port, "");
    wait_until("4 pooled connections", Duration::from_secs(5), || {
        b.accepted() >= 4
    });
    let accepted = b.accepted();
    for _ in 0..6 {
        let (status, _) = raw(
            port,
            b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
        );
        assert_eq!(status, 405);
    }
    // A connection thrown away would be replaced by a new one (maintenance reconnects at once).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.hits(), 0);
    assert_eq!(
        b.accepted(),
        accepted,
        "pooled connections were thrown away"
    );
    let (status, _) = get(port, "/x");
    assert_eq!(status, 200);
}

#[test]
fn absolute_form_sets_host_and_odd_headers_are_dropped() {
    let b = Backend::start("b");
    let (_p, port) = start("absform", b.port, "");
    let (status, body) = raw(
        port,
        b"GET http://target.test:81/headers HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with("GET /headers\n"), "{text}");
    assert!(text.contains("host: target.test:81\n"), "{text}");
    assert!(!text.contains("other.test"), "{text}");

    let (status, body) = raw(
        port,
        b"GET /headers HTTP/1.1\r\nHost: t\r\nX_Forwarded_For: 6.6.6.6\r\nConnection: Host, close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("6.6.6.6"), "{text}");
    assert!(!text.contains("x_forwarded_for"), "{text}");
    assert!(
        text.contains("host: t\n"),
        "Connection named Host away: {text}"
    );

    // OPTIONS * is legal and forwarded as it is.
    let (status, _) = raw(
        port,
        b"OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
}

/// `Upgrade: h2c` + a 101 used to open a raw tunnel in which forged headers reached the
/// backend. Other upgrade tokens are removed, so such a 101 is unrequested: 502.
#[test]
fn h2c_upgrade_is_removed_and_an_unrequested_101_is_502() {
    let (bport, heads) = scripted_origin(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    );
    let (_p, port) = start("h2c", bport, "");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (status, _) = parse_response(&out);
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&out));
    // Nothing a tunnel would carry got through: the connection ended with the 502.
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(!heads[0].contains("h2c"), "{heads:?}");
    assert!(!heads[0].contains("upgrade"), "{heads:?}");
    assert!(!heads[0].contains("6.6.6.6"), "{heads:?}");
}

/// What the head tokenizer (`worker/src/h1/scan.rs`) refuses, through the real binary: bytes
/// a header line or request line cannot hold, placed where its 16-byte (SSE2) and 8-byte tests
/// look as well as byte by byte. A request gets 400 and the downstream sees nothing; a
/// downstream's response gets the client a 502.
#[test]
fn bytes_the_head_tokenizer_refuses_get_400_or_502() {
    // A downstream that keeps every head it reads: a strict one (hyper) would answer a
    // forwarded bad head with its own 400 and hide that rproxy let it through.
    let (bport, heads) = scripted_origin(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let (_p, port) = start("scan400", bport, "");
    let attacks: &[(&str, &[u8])] = &[
        (
            "NUL in a value, past 16 bytes",
            b"GET /headers HTTP/1.1\r\nHost: a\r\nX-A: 0123456789abcdefghij\x00k\r\n\r\n",
        ),
        (
            "DEL in a value",
            b"GET /headers HTTP/1.1\r\nHost: a\r\nX-A: a\x7fb\r\n\r\n",
        ),
        (
            "bare CR in a value",
            b"GET /headers HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
        ),
        (
            "separator in a name, past 16 bytes",
            b"GET /headers HTTP/1.1\r\nHost: a\r\nX-Very-Long-Header(Name): 1\r\n\r\n",
        ),
        (
            "control byte in the target",
            b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "target not UTF-8",
            b"GET /\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        ("HTTP/1.2", b"GET /headers HTTP/1.2\r\nHost: a\r\n\r\n"),
    ];
    for (name, bytes) in attacks {
        let text = raw_response(port, bytes);
        let (status, _) = parse_response(&text);
        assert_eq!(status, 400, "{name}: {:?}", String::from_utf8_lossy(&text));
    }
    assert!(heads.lock().unwrap().is_empty(), "reached the downstream");
    // The control: a clean head through the same proxy does reach it.
    let text = raw_response(
        port,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(parse_response(&text).0, 200);
    assert_eq!(heads.lock().unwrap().len(), 1);

    let (text, heads) = get_via_scripted(
        "scan502",
        b"HTTP/1.1 200 OK\r\nX-Long-Header-Value: 0123456789abcdef0123\x01x\r\nContent-Length: 2\r\n\r\nok",
    );
    let (status, _) = parse_response(&text);
    assert_eq!(status, 502, "{:?}", String::from_utf8_lossy(&text));
    assert_eq!(
        heads.lock().unwrap().len(),
        1,
        "the downstream was asked once"
    );
}

/// RFC 9112 6.3: Transfer-Encoding wins; the Content-Length beside it used to reach the client,
/// which then read 3 bytes of a 10-byte body.
#[test]
fn response_with_transfer_encoding_and_content_length_loses_content_length() {
    let (text, _) = get_via_scripted(
        "tecl",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
    );
    let s = String::from_utf8_lossy(&text).to_ascii_lowercase();
    assert!(s.starts_with("http/1.1 200"), "{s}");
    assert!(!s.contains("content-length: 3"), "{s}");
    let (_, body) = parse_response(&text);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("0123456789"), "{body}");
}

/// Past 64 KiB the framing guard used to stop checking, and a head sent in one write was
/// accepted up to ~114 KB: a padded head with Content-Length and Transfer-Encoding was forwarded.
#[test]
fn heads_over_max_header_size_are_431_in_one_write() {
    let b = Backend::start("b");
    let (_p, port) = start("head431", b.port, "max-header-size = 65536");
    let mut padded = b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Pad: ".to_vec();
    padded.resize(70_000, b'a');
    padded.extend_from_slice(
        b"\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let mut big = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: ".to_vec();
    big.resize(114_000, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    let mut just_over = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: ".to_vec();
    just_over.resize(65_536 - 3, b'a');
    just_over.extend_from_slice(b"\r\n\r\n");
    for (name, bytes) in [
        ("padded cl+te", &padded),
        ("114 KB", &big),
        ("limit + 1", &just_over),
    ] {
        let text = raw_response(port, bytes);
        let (status, _) = parse_response(&text);
        assert_eq!(
            status,
            431,
            "{name}: {:?}",
            String::from_utf8_lossy(&text[..text.len().min(200)])
        );
    }
    assert_eq!(b.hits(), 0);
    // The limit itself is accepted.
    let mut at_limit = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Pad: ".to_vec();
    at_limit.resize(65_536 - 4, b'a');
    at_limit.extend_from_slice(b"\r\n\r\n");
    assert_eq!(at_limit.len(), 65_536);
    let (status, _) = raw(port, &at_limit);
    assert_eq!(status, 200);
}

/// hyper answers 400 and 431 itself; those requests get an access-log line too.
#[test]
fn requests_refused_inside_hyper_are_logged() {
    let b = Backend::start("b");
    let dir = temp_dir("refused-log");
    let log = dir.join("access.log");
    let extra = format!(
        "max-header-size = 8192\n[server.logging]\ntype = \"file\"\nfilename = \"{}\"\nformat = '{{STATUS}} {{METH}} {{SRC}}'\n",
        log.display()
    );
    let (_p, port) = start("refused-log", b.port, &extra);
    let mut big = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: ".to_vec();
    big.resize(20_000, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw(port, &big).0, 431);
    let smuggle = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(raw(port, smuggle).0, 400);
    assert_eq!(raw(port, b"GET / HTTP/1.1\r\n\r\n").0, 400);
    wait_until("three log lines", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.lines().count() >= 3)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"431 - 127.0.0.1"), "{text}");
    assert!(lines.contains(&"400 - 127.0.0.1"), "{text}");
    assert!(lines.contains(&"400 GET 127.0.0.1"), "{text}");
}

/// Latencies of `GET path` on fresh connections, one after another, for `d`.
fn probe(port: u16, path: &str, d: Duration) -> Vec<(u16, Duration)> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    while Instant::now() < end {
        let t0 = Instant::now();
        let (status, _) = raw(
            port,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        out.push((status, t0.elapsed()));
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

fn p99(samples: &[(u16, Duration)]) -> Duration {
    let mut v: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// With `connections = 1`: ten `POST`s announcing 1000 bytes and sending none, and a client
/// reading a 50 MB response slowly, used to make every other request a 503 (the uploads held
/// pooled connections forever, the download held the only one). Now the uploads hold none and
/// are cut at `read-timeout` (408), the download gets its own connection, and a normal client
/// gets 200s the whole time.
#[test]
fn stalled_uploads_and_a_slow_downloader_leave_the_pool_to_others() {
    let b = Backend::start("b");
    let port = free_port();
    let cfg = one_connection_config(port, &[b.port], "read-timeout = 2", "workers = 1");
    let _p = Proxy::start("slowclients", &cfg, port);
    let t0 = Instant::now();
    let uploads: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    // The slow downloader: 64 KiB every 200 ms of a 50 MB body.
    let mut down = TcpStream::connect(("127.0.0.1", port)).unwrap();
    down.write_all(b"GET /big/50000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            got += down.read(&mut buf).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(200));
        }
        got
    });
    let samples = probe(port, "/x", Duration::from_secs(3));
    assert!(
        samples.iter().all(|s| s.0 == 200),
        "{:?}",
        samples
            .iter()
            .filter(|s| s.0 != 200)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(samples.len() > 20, "{samples:?}");
    assert!(
        p99(&samples) < Duration::from_millis(100),
        "p99 {:?}",
        p99(&samples)
    );
    assert!(
        reader.join().unwrap() > 0,
        "the slow download made no progress"
    );
    // The uploads were cut at read-timeout, with 408.
    for mut s in uploads {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert_eq!(
            parse_response(&out).0,
            408,
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
}

/// A body dripped a byte at a time: each pause longer than `read-timeout` ends it (408), before
/// and after a downstream connection was leased.
#[test]
fn a_client_pausing_mid_body_is_cut_at_read_timeout() {
    let b = Backend::start("b");
    let port = free_port();
    let cfg = one_connection_config(port, &[b.port], "read-timeout = 1", "workers = 1");
    let _p = Proxy::start("drip", &cfg, port);
    // Small body: one byte, then a pause of 3 s.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let t0 = Instant::now();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nx")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(
        parse_response(&out).0,
        408,
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(b.hits(), 0);
    // Large body: 100 KiB (past the read-ahead, so a connection is leased), then a pause.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let t0 = Instant::now();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n")
        .unwrap();
    s.write_all(&vec![b'a'; 100 * 1024]).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let status = parse_response(&out).0;
    assert_eq!(status, 408, "{:?}", String::from_utf8_lossy(&out));
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // The pool recovered: its one connection was replaced.
    assert_eq!(get(port, "/x").0, 200);
}

// ---------------------------------------------------------------------------------------------
// Files opened as root, and start-up

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// SIGKILLs a daemon (and its workers) this test started, if still there.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            kill_tree(self.0);
        }
    }
}

fn run_rproxy(
    args: &[&str],
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .arg("-c")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("INVOCATION_ID")
        .env("RPROXY_CONTROL_SOCKET", config.with_file_name("ctl.sock"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > end {
            kill_tree(child.id() as i32);
            let _ = child.wait();
            return (None, "timed out".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// With `daemonize = true` a bind error used to exit 0 with the message lost.
#[test]
fn daemon_start_errors_reach_the_terminal_with_exit_1() {
    let b = Backend::start("b");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = temp_dir("daemon-fail");
    let pid_file = dir.join("rproxy.pid");
    let cfg = flat_config(
        port,
        &[b.port],
        "",
        &format!(
            "workers = 1\ndaemonize = true\npid-file = \"{}\"",
            pid_file.display()
        ),
    );
    let path = dir.join("rproxy.toml");
    std::fs::write(&path, cfg).unwrap();
    let (code, out) = run_rproxy(&[], &path, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&port.to_string()),
        "the bind error was lost: {out}"
    );
    wait_until("pid file removed", Duration::from_secs(3), || {
        !pid_file.exists()
    });

    // A good start returns 0 only once the daemon serves.
    drop(taken);
    let (code, out) = run_rproxy(&[], &path, &[]);
    assert_eq!(code, Some(0), "{out}");
    let pid = pid_in(&pid_file).unwrap();
    let _guard = KillOnDrop(pid);
    assert_eq!(get(port, "/").0, 200, "exit 0 before the daemon served");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&pid_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o644);
    // The pid file is locked: a second master on it is refused and leaves it alone.
    let (code, out) = run_rproxy(&["-f"], &path, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    // Every worker runs with no_new_privs.
    for w in children_of(pid) {
        let status = std::fs::read_to_string(format!("/proc/{w}/status")).unwrap();
        assert!(status.contains("NoNewPrivs:\t1"), "worker {w}: {status}");
    }
}

/// A first generation whose workers keep dying before Ready used to be respawned forever.
#[test]
#[cfg_attr(
    not(feature = "test-faults"),
    ignore = "the fault hook is only built with --features test-faults"
)]
fn a_first_generation_that_never_gets_ready_exits_1() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("never-ready");
    let fault = dir.join("fail-workers");
    std::fs::write(&fault, b"").unwrap();
    let path = dir.join("rproxy.toml");
    std::fs::write(&path, flat_config(port, &[b.port], "", "workers = 2")).unwrap();
    let t0 = Instant::now();
    let (code, out) = run_rproxy(
        &["-f"],
        &path,
        &[("RPROXY_TEST_FAULT_FILE", fault.to_str().unwrap())],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("before they were ready"), "{out}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // Nothing left running: the port is free again.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
}

/// The master used to follow a symlink planted in the log directory and chown its target to
/// the worker user (nginx CVE-2016-1247).
#[test]
fn log_symlinks_are_refused_and_their_targets_never_chowned() {
    if !is_root() {
        eprintln!(
            "SKIP: log_symlinks_are_refused_and_their_targets_never_chowned needs root (chown)"
        );
        return;
    }
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("symlink");
    let secret = dir.join("root-only");
    std::fs::write(&secret, b"secret\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let log = dir.join("access.log");
    std::os::unix::fs::symlink(&secret, &log).unwrap();
    let extra = format!(
        "[server.logging]\ntype = \"file\"\nfilename = \"{}\"\nformat = '{{STATUS}}'\n",
        log.display()
    );
    let path = dir.join("rproxy.toml");
    std::fs::write(&path, flat_config(port, &[b.port], &extra, "workers = 1")).unwrap();
    // `-t` and start-up give the same verdict.
    let (code, out) = run_rproxy(&["-t"], &path, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("symbolic link"), "{out}");
    let (code, out) = run_rproxy(&["-f"], &path, &[]);
    assert_eq!(code, Some(1), "{out}");
    let m = std::fs::metadata(&secret).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&m),
        0,
        "the target was chowned"
    );
    assert!(!out.contains("secret\n"), "{out}");
}

/// `-t` used to create the log files (0644, before the master could create them 0640) and
/// to print the first line of a file that is not TOML.
#[test]
fn config_check_creates_nothing_and_quotes_nothing() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("check-creates");
    let log = dir.join("access.log");
    let err_log = dir.join("error.log");
    let extra = format!(
        "[server.logging]\ntype = \"file\"\nfilename = \"{}\"\nformat = '{{STATUS}}'\n",
        log.display()
    );
    let path = dir.join("rproxy.toml");
    std::fs::write(
        &path,
        flat_config(
            port,
            &[b.port],
            &extra,
            &format!("workers = 1\nerror-log = \"{}\"", err_log.display()),
        ),
    )
    .unwrap();
    let (code, out) = run_rproxy(&["-t"], &path, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!log.exists() && !err_log.exists(), "-t created a log file");
    // Started, the master creates them 0640.
    let p = Proxy::start_error_log(
        "check-creates",
        &std::fs::read_to_string(&path).unwrap(),
        port,
        &err_log,
    );
    for f in [&log, &err_log] {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(f).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o640, "{}", f.display());
    }
    drop(p);

    let shadow = dir.join("shadow");
    std::fs::write(&shadow, "root:$6$s3cr3t-hash:19000:0:99999:7:::\n").unwrap();
    let (code, out) = run_rproxy(&["-t"], &shadow, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("line 1"), "{out}");
    assert!(
        !out.contains("s3cr3t"),
        "the file's content was printed: {out}"
    );

    // A configuration others can write is worth a warning.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let (code, out) = run_rproxy(&["-t"], &path, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("can write"), "{out}");
}

/// A reload that changed `error-log` left the new workers writing to the old file.
#[test]
fn a_reload_gives_new_workers_the_new_error_log() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("reload-errlog");
    let old = dir.join("old.log");
    let new = dir.join("new.log");
    let cfg = |log: &std::path::Path, backends: &[u16]| {
        flat_config(
            port,
            backends,
            "",
            &format!("workers = 1\nerror-log = \"{}\"", log.display()),
        )
    };
    let p = Proxy::start_error_log("reload-errlog", &cfg(&old, &[b.port]), port, &old);
    // The new configuration adds a downstream nobody listens on: only a worker says it is down.
    let dead = free_port();
    p.write_config(&cfg(&new, &[b.port, dead]));
    p.signal(libc::SIGHUP);
    wait_until(
        "the new worker's message in the new file",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&new)
                .is_ok_and(|t| t.contains(&format!("127.0.0.1:{dead} is down")))
        },
    );
    let old_text = std::fs::read_to_string(&old).unwrap();
    assert!(
        !old_text.contains(&format!("127.0.0.1:{dead} is down")),
        "{old_text}"
    );
}
