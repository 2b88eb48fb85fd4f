//! The routed form (RProxy 2.x) through the real binary: vhost choice by Host (globs, aliases,
//! port, case), the 404 cases, rules in config order with each matcher, per-rule balancing,
//! headers, timeouts and passthrough, strip-headers, `{RULE}` in per-vhost and server access
//! logs, and reloads between the flat and the routed form.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// `(status, body)` of a GET with `host` as the Host header.
fn get_host(port: u16, host: &str, path: &str) -> (u16, Vec<u8>) {
    raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn body(port: u16, host: &str, path: &str) -> String {
    let (status, b) = get_host(port, host, path);
    format!("{status} {}", String::from_utf8_lossy(&b))
}

fn downstream(name: &str, port: u16) -> String {
    format!(
        "[[server.downstream]]\nname = \"{name}\"\naddr = \"127.0.0.1\"\nport = {port}\nconnections = 2\n\
         [server.downstream.retry]\nseconds = 0\nuseconds = 100000\n"
    )
}

/// A hand-written origin: answers every request head with `200 ok` carrying `Server: origin`
/// and `X-Keep: 1`; a request for `/tunnel...` gets `TUNNEL <head>` and then every byte echoed
/// back, as a passthrough peer would.
fn raw_origin() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || serve_raw(s));
        }
    });
    port
}

fn serve_raw(s: TcpStream) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        if head
            .split(' ')
            .nth(1)
            .is_some_and(|p| p.starts_with("/tunnel"))
        {
            let _ = w.write_all(format!("TUNNEL {head}").as_bytes());
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if w.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let _ = w.write_all(
            b"HTTP/1.1 200 OK\r\nServer: origin\r\nX-Keep: 1\r\nContent-Length: 2\r\n\r\nok",
        );
    }
}

fn routed_config(port: u16, a: u16, b: u16, raw: u16, dir: &Path) -> String {
    format!(
        "{}workers = 1\n[[server]]\naddr = \"127.0.0.1\"\nport = {port}\n\
         [server.logging]\nfilename = \"{}\"\nformat = \"server {{RULE}} {{STATUS}} {{URI}}\"\n\
         {}{}{}\
         [[server.vhost]]\nname = \"*.example.test\"\naliases = [\"alias.test\", \"[::1]\"]\n\
         strip-headers = [\"Server\"]\n\
           [server.vhost.headers]\n  x-forwarded-for = false\n\
           [server.vhost.logging]\n  filename = \"{}\"\n  format = \"vhost {{RULE}} {{STATUS}} {{URI}}\"\n\
           [[server.vhost.rule]]\n  name = \"exact\"\n  uri-match = \"/api/special\"\n  downstreams = [\"b\"]\n\
           [[server.vhost.rule]]\n  name = \"api\"\n  uri-rmatch = \"^/api/\"\n  downstreams = [\"a\"]\n\
           [[server.vhost.rule]]\n  name = \"css\"\n  uri-gmatch = \"/static/*.css\"\n  downstreams = [\"b\"]\n\
           [[server.vhost.rule]]\n  name = \"rr\"\n  uri-match = \"/rr\"\n  downstreams = [\"a\", \"b\"]\n  lb-method = \"roundrobin\"\n\
           [[server.vhost.rule]]\n  name = \"first\"\n  uri-match = \"/first\"\n  downstreams = [\"b\", \"a\"]\n  lb-method = \"none\"\n\
           [[server.vhost.rule]]\n  name = \"headers\"\n  uri-match = \"/headers\"\n  downstreams = [\"a\"]\n\
           [[server.vhost.rule]]\n  name = \"xff\"\n  uri-match = \"/xff/headers\"\n  downstreams = [\"a\"]\n\
             rewrite = {{ src = \"^(/xff/)\", dst = \"/\" }}\n\
             [server.vhost.rule.headers]\n    x-forwarded-for = true\n\
           [[server.vhost.rule]]\n  name = \"origin\"\n  uri-match = \"/origin\"\n  downstreams = [\"raw\"]\n\
           [[server.vhost.rule]]\n  name = \"empty\"\n  uri-match = \"/empty\"\n  downstreams = []\n\
         [[server.vhost]]\nname = \"other.test\"\n\
           [[server.vhost.rule]]\n  uri-gmatch = \"/*\"\n  downstreams = [\"raw\"]\n",
        identity(),
        dir.join("server.log").display(),
        downstream("a", a),
        downstream("b", b),
        downstream("raw", raw),
        dir.join("vhost.log").display(),
    )
}

#[test]
fn vhosts_rules_matchers_policies_and_logs() {
    let (a, b, raw_port) = (Backend::start("a"), Backend::start("b"), raw_origin());
    let port = free_port();
    let dir = temp_dir("routing-logs");
    let p = Proxy::start(
        "routing",
        &routed_config(port, a.port, b.port, raw_port, &dir),
        port,
    );

    // Vhost choice: glob, alias, port, case, IPv6 literal; first rule in config order.
    assert_eq!(body(port, "www.example.test", "/api/x"), "200 a");
    assert_eq!(body(port, "WWW.Example.TEST:8080", "/api/x"), "200 a");
    assert_eq!(body(port, "alias.test", "/api/x"), "200 a");
    assert_eq!(body(port, "[::1]:80", "/api/x"), "200 a");
    assert_eq!(body(port, "alias.test", "/api/special"), "200 b");
    assert_eq!(body(port, "alias.test", "/static/x/y.css"), "200 b");
    assert_eq!(body(port, "other.test", "/anything").as_str(), "200 ok");

    // 404: no vhost, no rule, a rule without downstreams.
    assert_eq!(get_host(port, "nobody.test", "/api/x").0, 404);
    assert_eq!(get_host(port, "example.test", "/api/x").0, 404);
    assert_eq!(get_host(port, "alias.test", "/static/x.js").0, 404);
    assert_eq!(get_host(port, "alias.test", "/empty").0, 404);

    // Per-rule balancing: round robin over [a, b]; `none` takes its first listed (b).
    wait_until("both pools up", Duration::from_secs(5), || {
        let x = body(port, "alias.test", "/rr");
        let y = body(port, "alias.test", "/rr");
        x != y
    });
    let rr: Vec<String> = (0..4).map(|_| body(port, "alias.test", "/rr")).collect();
    assert!(rr[0] != rr[1] && rr[0] == rr[2] && rr[1] == rr[3], "{rr:?}");
    for _ in 0..4 {
        assert_eq!(body(port, "alias.test", "/first"), "200 b");
    }

    // Headers: the vhost's turn X-Forwarded-For off; the rule's replace them (on again).
    let h = body(port, "alias.test", "/headers");
    assert!(!h.to_lowercase().contains("x-forwarded-for"), "{h}");
    assert!(h.contains("x-forwarded-proto: http"), "{h}");
    let h = body(port, "alias.test", "/xff/headers");
    assert!(h.contains("x-forwarded-for: 127.0.0.1"), "{h}");

    // strip-headers: the vhost's `Server` is removed, others pass; another vhost keeps it.
    let r = String::from_utf8_lossy(&raw_response(
        port,
        b"GET /origin HTTP/1.1\r\nHost: alias.test\r\nConnection: close\r\n\r\n",
    ))
    .to_lowercase();
    assert!(r.starts_with("http/1.1 200"), "{r}");
    assert!(!r.contains("server: origin"), "{r}");
    assert!(r.contains("x-keep: 1"), "{r}");
    let r = String::from_utf8_lossy(&raw_response(
        port,
        b"GET /x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    ))
    .to_lowercase();
    assert!(r.contains("server: origin"), "{r}");

    // {RULE}: the vhost's log for its rules (and its 404s), the server's for the rest.
    let vhost = wait_lines(&dir.join("vhost.log"), 1);
    for want in [
        "vhost api 200 /api/x",
        "vhost exact 200 /api/special",
        "vhost css 200 /static/x/y.css",
        "vhost - 404 /static/x.js",
        "vhost empty 404 /empty",
        "vhost rr 200 /rr",
    ] {
        assert!(vhost.iter().any(|l| l == want), "{want:?} not in {vhost:?}");
    }
    let server = read_lines(&dir.join("server.log"));
    for want in ["server other.test#0 200 /anything", "server - 404 /api/x"] {
        assert!(
            server.iter().any(|l| l == want),
            "{want:?} not in {server:?}"
        );
    }
    drop(p);
}

#[test]
fn passthrough_tunnels_raw_bytes_after_the_head() {
    let raw_port = raw_origin();
    let port = free_port();
    let dir = temp_dir("passthrough-log");
    let log = dir.join("access.log");
    let config = format!(
        "{}workers = 1\n[[server]]\naddr = \"127.0.0.1\"\nport = {port}\n\
         [server.logging]\nfilename = \"{}\"\nformat = \"{{RULE}} {{STATUS}} {{URI}}\"\n{}\
         [[server.vhost]]\nname = \"*\"\n\
           [[server.vhost.rule]]\n  name = \"tunnel\"\n  uri-gmatch = \"/tunnel*\"\n  downstreams = [\"raw\"]\n  passthrough = true\n\
           [[server.vhost.rule]]\n  name = \"http\"\n  uri-gmatch = \"/*\"\n  downstreams = [\"raw\"]\n",
        identity(),
        log.display(),
        downstream("raw", raw_port),
    );
    let _p = Proxy::start("passthrough", &config, port);

    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /tunnel HTTP/1.1\r\nHost: t.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n\x00\x01binary",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"\x00\x01binary") {
        let n = s.read(&mut buf).expect("tunnel answer");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(
        text.starts_with("tunnel get /tunnel http/1.1\r\n"),
        "{text}"
    );
    assert!(text.contains("x-forwarded-for: 127.0.0.1\r\n"), "{text}");
    assert!(!text.contains("6.6.6.6"), "{text}");
    // Both ways, for as long as the client likes: no HTTP after the head.
    for chunk in [&b"not http at all\r\n\r\n"[..], b"\xff\xfe more"] {
        s.write_all(chunk).unwrap();
        let mut echo = vec![0u8; chunk.len()];
        s.read_exact(&mut echo).unwrap();
        assert_eq!(echo, chunk);
    }
    drop(s);

    // The ordinary rule of the same server still speaks HTTP, keep-alive included.
    let r = raw_response(
        port,
        b"GET /a HTTP/1.1\r\nHost: t.test\r\n\r\nGET /b HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(String::from_utf8_lossy(&r).matches("200 OK").count(), 2);

    // The tunnel's line is written when it ends; its status is the downstream's business.
    let lines = wait_lines(&log, 3);
    for want in ["tunnel - /tunnel", "http 200 /a", "http 200 /b"] {
        assert!(lines.iter().any(|l| l == want), "{want:?} not in {lines:?}");
    }
}

#[test]
fn rule_timeouts_override_the_servers() {
    let b = Backend::start("b");
    let port = free_port();
    let config = format!(
        "{}workers = 1\n[[server]]\naddr = \"127.0.0.1\"\nport = {port}\nread-timeout = 60\nwrite-timeout = 60\n{}\
         [[server.vhost]]\nname = \"*\"\n\
           [[server.vhost.rule]]\n  name = \"short\"\n  uri-gmatch = \"/short/*\"\n  downstreams = [\"b\"]\n\
             upstream-read-timeout = 1\n  upstream-write-timeout = 1\n\
             rewrite = {{ src = \"^(/short/)\", dst = \"/\" }}\n\
           [[server.vhost.rule]]\n  name = \"long\"\n  uri-gmatch = \"/*\"\n  downstreams = [\"b\"]\n",
        identity(),
        downstream("b", b.port),
    );
    let _p = Proxy::start("timeouts", &config, port);

    // Read: a body that stalls half-way gets 408 after the rule's second, not the server's 60.
    let start = Instant::now();
    let (status, _) = raw(
        port,
        b"POST /short/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhalf!",
    );
    assert_eq!(status, 408);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    // Write: a client that does not read a large response is cut after the rule's second.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /short/big/200000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(
        total < 200_000_000,
        "the whole body arrived: the write timeout did not apply"
    );

    // The other rule keeps the server's limits.
    let (status, body) = raw(
        port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfull",
    );
    assert_eq!((status, body), (200, b"full".to_vec()));
}

#[test]
fn reload_from_flat_to_routed_and_back() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = free_port();
    let flat = flat_config(port, &[a.port], "", "workers = 1");
    let p = Proxy::start("flat-routed", &flat, port);
    assert_eq!(body(port, "x.test", "/anything"), "200 a");

    let routed = format!(
        "{}workers = 1\n[[server]]\naddr = \"127.0.0.1\"\nport = {port}\n{}\
         [[server.vhost]]\nname = \"x.test\"\n\
           [[server.vhost.rule]]\n  uri-match = \"/b\"\n  downstreams = [\"b\"]\n",
        identity(),
        downstream("b", b.port),
    );
    p.write_config(&routed);
    p.signal(libc::SIGHUP);
    p.wait_log_count("reload complete", 1, Duration::from_secs(10));
    wait_until("routed after reload", Duration::from_secs(5), || {
        body(port, "x.test", "/b") == "200 b"
    });
    assert_eq!(get_host(port, "x.test", "/anything").0, 404);
    assert_eq!(get_host(port, "y.test", "/b").0, 404);

    p.write_config(&flat);
    p.signal(libc::SIGHUP);
    p.wait_log_count("reload complete", 2, Duration::from_secs(10));
    wait_until("flat after reload", Duration::from_secs(5), || {
        body(port, "y.test", "/anything") == "200 a"
    });
}

#[test]
fn a_rule_waits_for_its_own_downstreams_only() {
    let a = Backend::slow("a", Duration::from_millis(400));
    let b = Backend::start("b");
    let port = free_port();
    let one = |name: &str, port: u16| {
        format!(
            "[[server.downstream]]\nname = \"{name}\"\naddr = \"127.0.0.1\"\nport = {port}\nconnections = 1\n"
        )
    };
    let config = format!(
        "{}workers = 1\n[[server]]\naddr = \"127.0.0.1\"\nport = {port}\n{}{}\
         [[server.vhost]]\nname = \"*\"\n\
           [[server.vhost.rule]]\n  name = \"ra\"\n  uri-gmatch = \"/a*\"\n  downstreams = [\"a\"]\n\
           [[server.vhost.rule]]\n  name = \"rb\"\n  uri-gmatch = \"/b*\"\n  downstreams = [\"b\"]\n",
        identity(),
        one("a", a.port),
        one("b", b.port),
    );
    let _p = Proxy::start("own-downstreams", &config, port);
    wait_until("both pools up", Duration::from_secs(5), || {
        body(port, "x", "/a") == "200 a" && body(port, "x", "/b") == "200 b"
    });
    // Three requests for a's single connection: two of them wait in the queue while b's
    // connection is freed again and again; none may be sent to b.
    let waiting: Vec<_> = (0..3)
        .map(|i| std::thread::spawn(move || body(port, "x", &format!("/a{i}"))))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(body(port, "x", "/b"), "200 b");
        assert!(
            start.elapsed() < Duration::from_millis(300),
            "b waited behind a"
        );
    }
    for w in waiting {
        assert_eq!(w.join().unwrap(), "200 a");
    }
}
