//! The data path through the real binary: bodies both ways, load balancing, the pending
//! queue, error statuses, downstream recovery, headers, protocol upgrades, timeouts.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn small_and_multi_megabyte_bodies_both_ways() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "bodies",
        &flat_config(port, &[b.port], "", "workers = 2"),
        port,
    );
    runtime().block_on(async {
        let c = client();
        let r = c.get(p.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(&r.bytes().await.unwrap()[..], b"b");

        let small = b"hello, downstream".to_vec();
        let r = c
            .post(p.url("/echo"))
            .body(small.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(&r.bytes().await.unwrap()[..], &small[..]);

        let up: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
        let r = c
            .post(p.url("/echo"))
            .body(up.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = r.bytes().await.unwrap();
        assert!(
            got[..] == up[..],
            "8 MiB upload came back different ({} bytes)",
            got.len()
        );

        let n = 12 * 1024 * 1024 + 17;
        let r = c.get(p.url(&format!("/big/{n}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let got = r.bytes().await.unwrap();
        assert!(
            got[..] == big_body(n)[..],
            "download differs ({} bytes)",
            got.len()
        );
    });
}

/// Counts which backend answered `n` sequential requests on one keep-alive connection.
fn distribution(port: u16, n: usize, names: &[&str]) -> Vec<usize> {
    let mut hits = vec![0; names.len()];
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut order = Vec::new();
    for _ in 0..n {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let body = read_one_response(&mut s);
        let i = names
            .iter()
            .position(|x| x.as_bytes() == &body[..])
            .unwrap();
        hits[i] += 1;
        order.push(i);
    }
    hits
}

/// Read one `Content-Length` response from a keep-alive stream; returns the body.
fn read_one_response(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    body
}

#[test]
fn roundrobin_alternates_exactly() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = free_port();
    let p = Proxy::start(
        "rr",
        &flat_config(
            port,
            &[a.port, b.port],
            "lb-method = \"roundrobin\"",
            "workers = 1",
        ),
        port,
    );
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    let mut seq = Vec::new();
    for _ in 0..10 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        seq.push(String::from_utf8(read_one_response(&mut s)).unwrap());
    }
    let first = seq[0].clone();
    for (i, name) in seq.iter().enumerate() {
        assert_eq!(name == &first, i % 2 == 0, "not alternating: {seq:?}");
    }
}

#[test]
fn none_takes_the_first_downstream() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = free_port();
    let p = Proxy::start(
        "none",
        &flat_config(
            port,
            &[a.port, b.port],
            "lb-method = \"none\"",
            "workers = 1",
        ),
        port,
    );
    assert_eq!(distribution(p.port, 20, &["a", "b"]), [20, 0]);
}

#[test]
fn random_uses_every_downstream() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = free_port();
    let p = Proxy::start(
        "random",
        &flat_config(
            port,
            &[a.port, b.port],
            "lb-method = \"random\"",
            "workers = 1",
        ),
        port,
    );
    let h = distribution(p.port, 200, &["a", "b"]);
    assert!(h[0] > 50 && h[1] > 50, "random: {h:?}");
}

/// `a` keeps 1 connection, `b` 3: sequential requests find every connection idle, so b always
/// has the most idle ones. (`none` would give [50, 0], `roundrobin` and `random` about half.)
#[test]
fn most_idle_picks_the_downstream_with_most_idle_connections() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = free_port();
    let cfg = flat_config(
        port,
        &[a.port, b.port],
        "lb-method = \"most-idle\"",
        "workers = 1",
    )
    .replacen("connections = 4", "connections = 1", 1)
    .replacen("connections = 4", "connections = 3", 1);
    let p = Proxy::start("mostidle", &cfg, port);
    // Every connection established (b's three too) before counting.
    wait_until("pools filled", Duration::from_secs(5), || {
        a.accepted() >= 1 && b.accepted() >= 3
    });
    let h = distribution(p.port, 50, &["a", "b"]);
    assert_eq!(h, [0, 50], "most-idle");
}

#[test]
fn rtt_shares_between_equals_and_favours_the_fast() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = free_port();
    let p = Proxy::start(
        "rtt-eq",
        &flat_config(
            port,
            &[a.port, b.port],
            "lb-method = \"rtt\"",
            "workers = 1",
        ),
        port,
    );
    let h = distribution(p.port, 400, &["a", "b"]);
    assert!(
        h[0] >= 80 && h[1] >= 80,
        "equal downstreams should share: {h:?}"
    );
    drop(p);
    let fast = Backend::slow("fast", Duration::from_millis(2));
    let slow = Backend::slow("slow", Duration::from_millis(20));
    let port = free_port();
    let p = Proxy::start(
        "rtt-slow",
        &flat_config(
            port,
            &[slow.port, fast.port],
            "lb-method = \"rtt\"",
            "workers = 1",
        ),
        port,
    );
    let h = distribution(p.port, 200, &["slow", "fast"]);
    assert!(
        h[1] * 100 >= 80 * 200,
        "the fast one should get >= 80%: {h:?}"
    );
}

#[test]
fn max_pending_and_pending_timeout_give_503() {
    let b = Backend::start("b");
    let port = free_port();
    let cfg = one_connection_config(
        port,
        &[b.port],
        "max-pending = 1\npending-timeout = 3",
        "workers = 1\nlog-level = \"debug\"",
    );
    let p = Proxy::start("pending", &cfg, port);
    // Occupies the only connection for 8 s.
    let busy = std::thread::spawn(move || get(port, "/sleep/8000"));
    wait_until("the connection busy", Duration::from_secs(5), || {
        b.hits() >= 1
    });
    // Waits in the queue (the one allowed), then gives up after pending-timeout.
    let t0 = Instant::now();
    let waiting = std::thread::spawn(move || (get(port, "/"), t0.elapsed()));
    p.wait_log("request queued", Duration::from_secs(5));
    // The queue is full: 503 at once (a wait would take pending-timeout, 3 s).
    let t1 = Instant::now();
    assert_eq!(get(port, "/").0, 503);
    assert!(
        t1.elapsed() < Duration::from_secs(1),
        "not at once: {:?}",
        t1.elapsed()
    );
    let ((status, _), waited) = waiting.join().unwrap();
    assert_eq!(status, 503);
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(7),
        "waited {waited:?}"
    );
    assert_eq!(b.hits(), 1, "a queued request reached the downstream");
    assert_eq!(busy.join().unwrap().0, 200);
    drop(p);
}

/// With every connection busy, waiting requests get the next free one in arrival order.
#[test]
fn pending_requests_are_served_first_in_first_out() {
    let b = Backend::start("b");
    let port = free_port();
    let cfg = one_connection_config(port, &[b.port], "", "workers = 1\nlog-level = \"debug\"");
    let p = Proxy::start("fifo", &cfg, port);
    let busy = std::thread::spawn(move || get(port, "/sleep/1000"));
    wait_until("the connection busy", Duration::from_secs(5), || {
        b.hits() >= 1
    });
    let t0 = Instant::now();
    let mut waiting = Vec::new();
    for i in 1..=4 {
        waiting.push(std::thread::spawn(move || {
            let r = get(port, "/sleep/200");
            (r, t0.elapsed())
        }));
        p.wait_log_count("request queued", i, Duration::from_secs(5));
    }
    assert_eq!(busy.join().unwrap().0, 200);
    let done: Vec<Duration> = waiting
        .into_iter()
        .map(|t| {
            let ((status, _), at) = t.join().unwrap();
            assert_eq!(status, 200);
            at
        })
        .collect();
    // One connection, 200 ms each: in queue order, each at least ~200 ms after the previous.
    for w in done.windows(2) {
        assert!(
            w[1] >= w[0] + Duration::from_millis(150),
            "not FIFO: {done:?}"
        );
    }
}

/// The only pooled connection streams a large response to a client that stopped reading: a
/// request queued behind it gets an extra connection after ~50 ms (the queue's watch asks for
/// one) instead of waiting for the stalled client, then its 503 at pending-timeout.
#[test]
fn a_request_behind_a_stalled_download_gets_an_extra_connection() {
    let b = Backend::start("b");
    let port = free_port();
    let cfg = one_connection_config(
        port,
        &[b.port],
        "pending-timeout = 5",
        "workers = 1\nlog-level = \"debug\"",
    );
    let p = Proxy::start("stalled", &cfg, port);
    assert_eq!(get(port, "/").0, 200);
    let accepted = b.accepted();
    // 64 MiB asked for, the head read, then nothing: socket buffers fill and the exchange
    // stays on the connection.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled
        .write_all(b"GET /big/67108864 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 512];
    let n = stalled.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    // Without an extra connection this is a 503 at pending-timeout: the stalled exchange
    // never ends.
    let (status, body) = get(port, "/");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(p.log().contains("request queued"), "never queued");
    assert!(b.accepted() > accepted, "no connection opened for it");
    drop(stalled);
}

/// A downstream that reads the request head, then does `act` with the socket.
fn raw_backend(act: fn(&mut TcpStream)) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        let mut socks = Vec::new();
        while Instant::now() < end {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    let mut buf = [0u8; 4096];
                    // The pool connects ahead of requests: act only once a request arrives.
                    let mut s2 = s.try_clone().unwrap();
                    std::thread::spawn(move || {
                        let end = Instant::now() + Duration::from_secs(20);
                        while Instant::now() < end {
                            match s2.read(&mut buf) {
                                Ok(0) => return,
                                Ok(_) => {
                                    act(&mut s2);
                                    return;
                                }
                                Err(_) => continue,
                            }
                        }
                    });
                    socks.push(s);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (port, h)
}

#[test]
fn broken_downstreams_give_502() {
    let (closer, _h1) = raw_backend(|s| {
        let _ = s.shutdown(std::net::Shutdown::Both);
    });
    let (garbage, _h2) = raw_backend(|s| {
        let _ = s.write_all(b"NOT HTTP AT ALL\r\n\r\n");
        let _ = s.shutdown(std::net::Shutdown::Both);
    });
    for (name, b) in [("closer", closer), ("garbage", garbage)] {
        let port = free_port();
        let p = Proxy::start(name, &flat_config(port, &[b], "", "workers = 1"), port);
        assert_eq!(get(port, "/").0, 502, "{name}");
        drop(p);
    }
}

#[test]
fn downstream_read_timeout_gives_504() {
    let b = Backend::start("b");
    let port = free_port();
    let cfg = flat_config(port, &[b.port], "", "workers = 1")
        .replace("connections = 4", "connections = 4\nread-timeout = 1");
    let _p = Proxy::start("504", &cfg, port);
    let t0 = Instant::now();
    assert_eq!(get(port, "/sleep/10000").0, 504);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

/// Downstream `read-timeout = 0` (the default) waits as long as the downstream takes.
#[test]
fn downstream_read_timeout_zero_waits() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "rt0",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let t0 = Instant::now();
    assert_eq!(get(port, "/sleep/3000"), (200, b"slept 3000".to_vec()));
    assert!(t0.elapsed() >= Duration::from_millis(2900));
}

#[test]
fn downstream_down_then_back() {
    let mut b = Backend::start("b");
    let bport = b.port;
    let port = free_port();
    let p = Proxy::start(
        "downup",
        &flat_config(port, &[bport], "", "workers = 1"),
        port,
    );
    assert_eq!(get(port, "/").0, 200);
    b.stop();
    drop(b);
    // Every downstream down: 503 at once (after the pool noticed).
    wait_until("503 while down", Duration::from_secs(3), || {
        get(port, "/").0 == 503
    });
    // At once: not after pending-timeout (10 s by default).
    let t0 = Instant::now();
    assert_eq!(get(port, "/").0, 503);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "not answered at once: {:?}",
        t0.elapsed()
    );
    let _b = Backend::start_on("b", bport, Duration::ZERO);
    let t0 = Instant::now();
    // retry is 100 ms in flat_config: served again within a few retries.
    wait_until("served again", Duration::from_secs(3), || {
        get(port, "/").0 == 200
    });
    eprintln!("back after {:?}", t0.elapsed());
    p.wait_log("is up", Duration::from_secs(3));
}

#[test]
fn forged_forwarding_headers_never_reach_the_downstream() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "xff",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let (status, body) = raw(
        port,
        b"GET /headers HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-SSL-Subject: /CN=admin\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n\r\n",
    );
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("x-forwarded-for: 127.0.0.1\n"), "{text}");
    assert!(!text.contains("6.6.6.6"), "{text}");
    assert!(text.contains("x-forwarded-proto: http\n"), "{text}");
    assert!(!text.contains("x-ssl-subject"), "{text}");
    assert!(!text.contains("x-secret"), "{text}");
    assert!(!text.contains("keep-alive"), "{text}");
    assert!(
        text.contains("host: example.test\n"),
        "Host passes through: {text}"
    );
}

#[test]
fn trusted_proxy_chain_is_appended() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "trusted",
        &flat_config(
            port,
            &[b.port],
            "trusted-proxies = [\"127.0.0.0/8\"]",
            "workers = 1",
        ),
        port,
    );
    let (_, body) = raw(port, b"GET /headers HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("x-forwarded-for: 1.2.3.4, 127.0.0.1\n"),
        "{text}"
    );
}

#[test]
fn rewrite_keeps_the_query() {
    let b = Backend::start("b");
    let port = free_port();
    let extra = "[[server.rewrite]]\nsrc = \"^(/dir/)\"\ndst = \"/\"\n";
    let _p = Proxy::start(
        "rewrite",
        &flat_config(port, &[b.port], extra, "workers = 1"),
        port,
    );
    // /headers echoes the request line the downstream saw.
    let (_, body) = raw(
        port,
        b"GET /dir/headers?x=1&y=/dir/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with("GET /headers?x=1&y=/dir/\n"), "{text}");
}

/// Smuggling attempts: 400, the connection closes, and the downstream sees nothing.
#[test]
fn ambiguous_framing_is_refused() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "framing",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let attacks: &[(&str, &[u8])] = &[
        ("two content-lengths", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("te not chunked", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nxxxxx"),
        ("te obfuscated", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("te with space", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n  folded\r\n\r\n"),
        ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("te in http/1.0", b"POST /echo HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("negative length", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n"),
    ];
    assert_refused_400(port, &b, attacks);
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "clte",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let before = b.hits();
    let text = raw_response(
        port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let (status, _) = parse_response(&text);
    assert_eq!(status, 400, "{:?}", String::from_utf8_lossy(&text));
    assert_eq!(b.hits(), before, "reached the downstream");
}

#[test]
fn oversized_headers_get_431() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "431",
        &flat_config(port, &[b.port], "max-header-size = 8192", "workers = 1"),
        port,
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (status, _) = raw(port, big.as_bytes());
    assert_eq!(status, 431);
}

#[test]
fn head_chunked_and_expect_continue() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "methods",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let text = raw_response(
        port,
        b"HEAD /big/1000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let s = String::from_utf8_lossy(&text).to_ascii_lowercase();
    assert!(s.starts_with("http/1.1 200"), "{s}");
    assert!(s.contains("content-length: 1000"), "{s}");
    assert!(s.ends_with("\r\n\r\n"), "HEAD has no body: {s}");

    let (status, body) = raw(
        port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(body, b"hello world");

    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = [0u8; 25];
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("200 OK") && rest.ends_with("hello"), "{rest}");
}

#[test]
fn client_read_timeout_cuts_idle_and_slowloris() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "slowloris",
        &flat_config(port, &[b.port], "read-timeout = 1", "workers = 1"),
        port,
    );
    // Idle keep-alive connection: closed after about read-timeout.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "idle for {:?}",
        t0.elapsed()
    );
    // Slowloris: a header byte every 300 ms never completes a request.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    let mut closed = false;
    for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if t0.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    if !closed {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "slowloris held the connection {:?}",
        t0.elapsed()
    );
}

#[test]
fn websocket_style_upgrade_is_tunnelled() {
    // A downstream that answers 101 and then echoes raw bytes.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let bport = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(8) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let Some(head) = read_head(&mut s) else {
                    return;
                };
                let h = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(h.contains("upgrade: websocket"), "{h}");
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let _ = s.write_all(&buf[..n]);
                        }
                    }
                }
            });
        }
    });
    let port = free_port();
    let _p = Proxy::start(
        "upgrade",
        &flat_config(port, &[bport], "", "workers = 1"),
        port,
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    for msg in [&b"ping"[..], b"raw bytes \x00\x01 both ways"] {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
}

#[test]
fn disabled_downstream_leaves_rotation_on_reload() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = free_port();
    let cfg = flat_config(
        port,
        &[a.port, b.port],
        "lb-method = \"roundrobin\"",
        "workers = 1",
    );
    let p = Proxy::start("disable", &cfg, port);
    let h = distribution(port, 10, &["a", "b"]);
    assert_eq!(h, [5, 5]);
    // Disable the second downstream.
    let idx = cfg.rfind("connections = 4").unwrap();
    let mut off = cfg.clone();
    off.insert_str(idx, "enabled = false\n");
    p.write_config(&off);
    p.signal(libc::SIGHUP);
    p.wait_log("reload complete", Duration::from_secs(10));
    let before = b.hits();
    let h = distribution(port, 10, &["a", "b"]);
    assert_eq!(h, [10, 0]);
    assert_eq!(b.hits(), before);
}

#[test]
fn blocked_downstream_write_gives_503() {
    // A downstream that accepts and never reads: our writes to it block.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let bport = l.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok((s, _)) = l.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let port = free_port();
    let cfg = flat_config(port, &[bport], "", "workers = 1")
        .replace("connections = 4", "connections = 1\nwrite-timeout = 1");
    let _p = Proxy::start("dswrite", &cfg, port);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let size = 256 * 1024 * 1024;
    s.write_all(
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let t0 = Instant::now();
    // Keep sending until rproxy stops reading us (it answers and closes).
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 65536];
        for _ in 0..size / 65536 {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(
        &head,
        b"HTTP/1.1 503",
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(holder);
}

/// A client that stops reading mid-response is cut about `write-timeout` after rproxy's
/// writes block: it gets a real 200 and more body than the socket buffers hold while it reads,
/// then, once it stalls, only what was already buffered, then EOF.
#[test]
fn client_write_timeout_closes_a_stuck_client() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "uswrite",
        &flat_config(port, &[b.port], "write-timeout = 1", "workers = 1"),
        port,
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let size: usize = 512 * 1024 * 1024;
    s.write_all(format!("GET /big/{size} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before the head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Streaming works while we read: far more than the socket buffers hold (here: up to 32 MiB
    // of receive buffer by autotuning, net.ipv4.tcp_rmem, plus 4 MiB of send buffer).
    let streamed = 64 * 1024 * 1024;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    while total < streamed {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "cut while the client was reading, after {total} bytes"
        );
        total += n;
    }
    // Stall for 3x write-timeout: rproxy's writes block, time out, and it closes.
    std::thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    let mut after = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => after += n,
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still streaming {after} bytes after the stall: never cut"
        );
    }
    // Only the bytes already in flight (socket buffers both sides) came after the stall.
    assert!(
        after < 40 * 1024 * 1024,
        "{after} bytes after the stall: the connection was not cut"
    );
    assert!(total + after < size);
}

#[test]
fn connections_closed_by_the_downstream_are_never_reused() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "reuse",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Every answer closes its downstream connection; none of the next requests may fail.
    for i in 0..50 {
        s.write_all(b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let body = read_one_response(&mut s);
        assert_eq!(body, b"closing", "request {i}");
    }
}

#[test]
fn chunked_response_streams_through() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "chunkedresp",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let text = raw_response(
        port,
        b"GET /chunked/3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let s = String::from_utf8_lossy(&text).to_ascii_lowercase();
    assert!(s.contains("transfer-encoding: chunked"), "{s}");
    assert!(s.contains("part0;") && s.contains("part2;"), "{s}");
    assert!(s.ends_with("0\r\n\r\n"), "{s}");
}

#[test]
fn configured_extension_headers_cannot_be_forged() {
    let b = Backend::start("b");
    let port = free_port();
    let extra = "[[server.headers.x509-extension]]\nname = \"X-Client-Policy\"\noid = \"1.3.6.1.4.1.99999.1\"\n";
    let _p = Proxy::start(
        "x509ext",
        &flat_config(port, &[b.port], extra, "workers = 1"),
        port,
    );
    let (status, body) = raw(
        port,
        b"GET /headers HTTP/1.1\r\nHost: t\r\nX-Client-Policy: admin\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("x-client-policy"), "{text}");
}

/// One keep-alive request on `s`: the response head (lowercase) and body, by Content-Length.
fn keep_alive_get(s: &mut TcpStream, path: &str) -> (String, Vec<u8>) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed after {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head, body)
}

/// Keep-alive connections idle for over a second leave their task for the worker's idle set
/// (unit tests in `worker/src/parked.rs` watch that happen): through the real binary, such
/// connections are answered when their client comes back, twice, and across a reload (the old
/// worker answers with `connection: close` and exits once they are done).
#[test]
fn idle_keep_alive_connections_are_served_after_parking_and_across_a_reload() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "parked",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let old = p.workers();
    let mut conns: Vec<TcpStream> = (0..40)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .collect();
    for round in 0..2 {
        for s in &mut conns {
            let (head, body) = keep_alive_get(s, "/");
            assert!(head.starts_with("http/1.1 200"), "round {round}: {head}");
            assert!(!head.contains("connection: close"), "round {round}: {head}");
            assert_eq!(body, b"b");
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    p.signal(libc::SIGHUP);
    p.wait_log_count("reload complete", 1, Duration::from_secs(10));
    for s in &mut conns {
        let (head, body) = keep_alive_get(s, "/");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert_eq!(body, b"b");
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0);
    }
    wait_until("the old worker exits", Duration::from_secs(10), || {
        p.workers().iter().all(|w| !old.contains(w))
    });
    assert_eq!(get(port, "/").0, 200);
}

/// Keep-alive clients whose pauses straddle the moment idle connections are parked (1 s):
/// requests that arrive while a connection is being parked, just after, or long after, are all
/// answered, in order, on the same connection.
#[test]
fn requests_around_the_parking_moment_are_all_answered() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "parking-race",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let threads: Vec<_> = (0..24u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                // Pauses from 0.90 s to 1.10 s in 10 ms steps, shifted per thread.
                for i in 0..5u64 {
                    let (head, body) = keep_alive_get(&mut s, "/");
                    assert!(
                        head.starts_with("http/1.1 200"),
                        "thread {t} request {i}: {head}"
                    );
                    assert_eq!(body, b"b");
                    let pause = 900 + ((t * 7 + i * 13) % 21) * 10;
                    std::thread::sleep(Duration::from_millis(pause));
                }
                let (head, _) = keep_alive_get(&mut s, "/");
                assert!(head.starts_with("http/1.1 200"), "thread {t} last: {head}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A client pipelines thousands of requests and reads nothing for a while: the responses fill
/// its socket, so rproxy's writes are taken in part or not at all (`write_now`) and go on in a
/// write future once the client reads. Every response arrives whole and in order.
#[test]
fn pipelined_responses_to_a_client_that_reads_late_arrive_whole_and_in_order() {
    const N: usize = 3000;
    const BODY: usize = 2000;
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start("pipelined", &flat_config(port, &[b.port], "", ""), port);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let one = format!("GET /big/{BODY} HTTP/1.1\r\nHost: a\r\n\r\n");
    s.write_all(one.repeat(N).as_bytes()).unwrap();
    // ~6 MB of responses against socket buffers of a few: rproxy is left holding the rest.
    std::thread::sleep(Duration::from_secs(1));
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let want = big_body(BODY);
    let mut answered = 0;
    let mut at = 0;
    while answered < N {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed after {answered} responses");
        got.extend_from_slice(&buf[..n]);
        // Take every complete response from the front.
        while let Some(end) = got[at..].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[at..at + end]).to_ascii_lowercase();
            assert!(
                head.starts_with("http/1.1 200"),
                "response {answered}: {head}"
            );
            assert!(head.contains(&format!("content-length: {BODY}")), "{head}");
            let body = at + end + 4;
            if got.len() < body + BODY {
                break;
            }
            assert!(
                got[body..body + BODY] == want[..],
                "response {answered}: body"
            );
            at = body + BODY;
            answered += 1;
        }
    }
    assert_eq!(got.len(), at, "bytes after the last response");
    assert_eq!(b.hits(), N as u64);
    drop(p);
}

/// A panic in one plain connection's task (a `test-faults` hook) ends that connection only:
/// the worker stays (same pid), and other keep-alive connections, open before and after, are
/// answered on the same sockets.
#[test]
fn a_panic_in_one_connection_ends_that_connection_only() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start_with_env(
        "panic",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
        &[("RPROXY_TEST_PANIC_TARGET", "/panic")],
    );
    let workers = p.workers();
    let mut before = TcpStream::connect(("127.0.0.1", port)).unwrap();
    before
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (head, body) = keep_alive_get(&mut before, "/big/100");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, big_body(100));

    let mut victim = TcpStream::connect(("127.0.0.1", port)).unwrap();
    victim
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    victim
        .write_all(b"GET /panic HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    victim
        .read_to_end(&mut rest)
        .expect("the panicked connection is closed");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    for _ in 0..3 {
        let (head, body) = keep_alive_get(&mut before, "/big/200");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, big_body(200));
    }
    let mut after = TcpStream::connect(("127.0.0.1", port)).unwrap();
    after
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (head, _) = keep_alive_get(&mut after, "/big/10");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(p.workers(), workers, "the worker was replaced");
    drop(p);
}

/// Many keep-alive connections busy at once on one worker: its loop then takes several
/// events per turn and goes on for more rounds before it returns to tokio (`net::BUSY`).
/// Every response arrives whole, on its own connection, in order.
#[test]
fn many_busy_keep_alive_connections_on_one_worker_are_all_answered_in_order() {
    let b = Backend::start("b");
    let port = free_port();
    let _p = Proxy::start(
        "busy",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let threads: Vec<_> = (0..32usize)
        .map(|t| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                for i in 0..150usize {
                    // A size per thread and request, so a response given to the wrong
                    // connection or out of order shows; every 25th one is spliced (64 KiB).
                    let n = if i % 25 == 0 {
                        65_536 + t
                    } else {
                        1 + t * 150 + i
                    };
                    let (head, body) = keep_alive_get(&mut s, &format!("/big/{n}"));
                    assert!(
                        head.starts_with("http/1.1 200"),
                        "thread {t} request {i}: {head}"
                    );
                    assert_eq!(body.len(), n, "thread {t} request {i}");
                    assert_eq!(body, big_body(n), "thread {t} request {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A large response is spliced, and its head (with what of the body came with it) is sent
/// with `MSG_MORE` when the body's next bytes are at hand, so that it leaves with them: the
/// head must still reach the client at once when the downstream pauses after it, never be
/// held until the rest comes. The origin sends the head and the body's first `n` bytes
/// (sizes that arrive with the head in rproxy's first read, and more), then waits (at most
/// 10 s) until the client has them before it sends the rest.
#[test]
fn a_spliced_response_s_head_is_not_held_while_the_downstream_pauses() {
    const LEN: usize = 1024 * 1024;
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin_port = origin.local_addr().unwrap().port();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
    let seen_rx = std::sync::Arc::new(std::sync::Mutex::new(seen_rx));
    // One thread per connection: rproxy may open connections it does not use at once.
    std::thread::spawn(move || {
        for s in origin.incoming() {
            let Ok(mut s) = s else { return };
            let seen_rx = seen_rx.clone();
            std::thread::spawn(move || loop {
                let Some(req) = read_head(&mut s) else {
                    return;
                };
                // GET /paused/<n>
                let req = String::from_utf8_lossy(&req).to_string();
                let n: usize = req
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.strip_prefix("/paused/"))
                    .and_then(|n| n.parse().ok())
                    .unwrap();
                let body = big_body(LEN);
                let mut first =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").into_bytes();
                first.extend_from_slice(&body[..n]);
                s.write_all(&first).unwrap();
                let _ = seen_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(10));
                if s.write_all(&body[n..]).is_err() {
                    return;
                }
            });
        }
    });
    let port = free_port();
    let _p = Proxy::start(
        "splicehead",
        &flat_config(port, &[origin_port], "", "workers = 1"),
        port,
    );
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    for first in [0, 1000, 12 * 1024, 48 * 1024] {
        c.write_all(format!("GET /paused/{first} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let mut got = Vec::new();
        let body_at = loop {
            let n = c.read(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "/paused/{first}: the head and first bytes while the downstream pauses: \
                     {e} after {} bytes",
                    got.len()
                )
            });
            assert!(n > 0, "/paused/{first}: closed after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                if got.len() >= i + 4 + first {
                    break i + 4;
                }
            }
        };
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got[..body_at])
        );
        seen_tx.send(()).unwrap();
        while got.len() < body_at + LEN {
            let n = c.read(&mut buf).expect("the rest of the body");
            assert!(
                n > 0,
                "/paused/{first}: cut after {} body bytes",
                got.len() - body_at
            );
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            got.len(),
            body_at + LEN,
            "/paused/{first}: more than the body"
        );
        assert!(
            got[body_at..] == big_body(LEN)[..],
            "/paused/{first}: body differs"
        );
    }
}
