//! The control socket and `rproxy ctl` (DESIGN section 12), through the real binary: show
//! commands while serving, downstream states under load across reloads and worker crashes,
//! `reload --wait` exit codes, the peer check, and the master's bounds against hostile peers.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// `rproxy ctl -c CONFIG WORDS...`, with the proxy's control socket override.
fn ctl(p: &Proxy, words: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("-c")
        .arg(&p.config)
        .args(words)
        .env("RPROXY_CONTROL_SOCKET", sock(p))
        .output()
        .unwrap()
}

fn sock(p: &Proxy) -> PathBuf {
    p.dir.join("ctl.sock")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run ctl and insist on exit 0; its stdout.
fn ctl_ok(p: &Proxy, words: &[&str]) -> String {
    let o = ctl(p, words);
    assert_eq!(
        o.status.code(),
        Some(0),
        "ctl {words:?}: stdout {} stderr {}",
        out(&o),
        err(&o)
    );
    out(&o)
}

fn json(p: &Proxy, words: &[&str]) -> serde_json::Value {
    let text = ctl_ok(p, words);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{words:?}: {e}: {text}"))
}

/// Two downstreams named `a` and `b`, both answering `x`.
fn two_named(port: u16, a: u16, b: u16, workers: usize) -> String {
    format!(
        "{}workers = {workers}\n[[server]]\naddr = \"127.0.0.1\"\nport = {port}\n\
         lb-method = \"roundrobin\"\n\
         [[server.downstream]]\nname = \"a\"\naddr = \"127.0.0.1\"\nport = {a}\nconnections = 3\n\
         [[server.downstream]]\nname = \"b\"\naddr = \"127.0.0.1\"\nport = {b}\nconnections = 3\n\
         [server.downstream.retry]\nseconds = 0\nuseconds = 100000\n",
        identity()
    )
}

/// Established TCP connections whose remote port is `port` (the proxy's side of its pooled
/// connections to a backend), from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2].ends_with(&want) && f[3] == "01"
        })
        .count()
}

/// Hits of `b` do not move for `quiet` (after a short settle for requests already sent).
fn assert_no_new_hits(b: &Backend, quiet: Duration, what: &str) {
    std::thread::sleep(Duration::from_millis(300));
    let before = b.hits();
    std::thread::sleep(quiet);
    assert_eq!(
        b.hits(),
        before,
        "{what}: the downstream still got requests"
    );
}

#[test]
fn show_forms_while_serving() {
    let (a, b) = (Backend::start("x"), Backend::start("x"));
    let port = free_port();
    let p = Proxy::start("ctlshow", &two_named(port, a.port, b.port, 2), port);
    let load = Load::start(p.url("/"), 4, b"x");
    wait_until("some requests", Duration::from_secs(10), || load.ok() > 20);

    let info = json(&p, &["show", "info", "--json"]);
    assert_eq!(info["pid"], p.pid());
    assert_eq!(info["generation"], 1);
    assert_eq!(info["state"], "serving");
    assert_eq!(info["workers"]["configured"], 2);
    assert_eq!(info["workers"]["ready"], 2);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["control_socket"], sock(&p).display().to_string());
    assert!(info["last_reload"].is_null());
    let text = ctl_ok(&p, &["show", "info"]);
    assert!(text.contains(&format!("pid: {}", p.pid())), "{text}");
    assert!(text.contains("generation: 1"), "{text}");

    let workers = json(&p, &["show", "workers", "--json"]);
    let list = workers.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let mut pids: Vec<i64> = list.iter().map(|w| w["pid"].as_i64().unwrap()).collect();
    pids.sort_unstable();
    let mut real: Vec<i64> = p.workers().into_iter().map(i64::from).collect();
    real.sort_unstable();
    assert_eq!(pids, real);
    for w in list {
        assert_eq!(w["state"], "ready");
        assert_eq!(w["generation"], 1);
        assert!(w["last_heartbeat_ms"].as_u64().unwrap() < 5000, "{w}");
    }
    let text = ctl_ok(&p, &["show", "workers"]);
    assert_eq!(text.lines().count(), 3, "{text}");

    let ds = json(&p, &["show", "downstreams", "--json"]);
    let server = format!("127.0.0.1:{port}");
    let rows = ds.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, (name, bport)) in rows.iter().zip([("a", a.port), ("b", b.port)]) {
        assert_eq!(row["server"], server.as_str());
        assert_eq!(row["name"], name);
        assert_eq!(row["address"], format!("127.0.0.1:{bport}").as_str());
        assert_eq!(row["admin"], "ready");
    }
    let text = ctl_ok(&p, &["show", "downstreams"]);
    assert!(text.contains(&format!("127.0.0.1:{}", b.port)), "{text}");

    // Metrics on the control socket: `ctl metrics` and an HTTP `GET /metrics` (DESIGN 12).
    let text = ctl_ok(&p, &["metrics"]);
    assert!(
        text.contains("# TYPE rproxy_requests_total counter"),
        "{text}"
    );
    let mut s = UnixStream::connect(sock(&p)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let reply = String::from_utf8(read_reply(&mut s, Duration::from_secs(5))).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("text/plain; version=0.0.4"), "{reply}");
    assert!(
        reply.contains("# TYPE rproxy_requests_total counter"),
        "{reply}"
    );

    // Usage errors exit 2, before or after reaching the master.
    let o = ctl(&p, &["show", "everything"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let o = ctl(
        &p,
        &["set", "downstream", &format!("{server}/nope"), "maint"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("no downstream `nope`"), "{}", err(&o));
    let (ok, failed) = load.finish();
    assert!(ok > 0);
    assert_eq!(failed, 0);
}

/// A request waiting for a connection gets its 503 as soon as its route has no downstream
/// left in rotation (`maint`), not at `pending-timeout` (the pool closes its mailbox).
#[test]
fn a_queued_request_gets_its_503_when_its_only_downstream_goes_into_maint() {
    let a = Backend::start("x");
    let port = free_port();
    let cfg = format!(
        "{}workers = 1\nlog-level = \"debug\"\n[[server]]\naddr = \"127.0.0.1\"\nport = {port}\n\
         pending-timeout = 30\n\
         [[server.downstream]]\nname = \"a\"\naddr = \"127.0.0.1\"\nport = {}\nconnections = 1\n",
        identity(),
        a.port
    );
    let p = Proxy::start("ctlqueued", &cfg, port);
    // Holds the only connection for 6 s.
    let busy = std::thread::spawn(move || get(port, "/sleep/6000"));
    wait_until("the connection busy", Duration::from_secs(5), || {
        a.hits() >= 1
    });
    let queued = std::thread::spawn(move || {
        let t0 = Instant::now();
        (get(port, "/"), t0.elapsed())
    });
    p.wait_log("request queued", Duration::from_secs(5));
    ctl_ok(
        &p,
        &["set", "downstream", &format!("127.0.0.1:{port}/a"), "maint"],
    );
    let ((status, _), waited) = queued.join().unwrap();
    assert_eq!(status, 503, "the queued request");
    assert!(
        waited < Duration::from_secs(4),
        "answered after {waited:?}: not when the downstream left rotation"
    );
    assert_eq!(a.hits(), 1, "the queued request reached the downstream");
    // The exchange under way is not cut by `maint`.
    assert_eq!(busy.join().unwrap().0, 200);
}

#[test]
fn downstream_states_under_load_across_reloads_and_crashes() {
    let (a, b) = (Backend::start("x"), Backend::start("x"));
    let port = free_port();
    let p = Proxy::start("ctlstate", &two_named(port, a.port, b.port, 2), port);
    let target = format!("127.0.0.1:{port}/b");
    let load = Load::start(p.url("/"), 6, b"x");
    wait_until("b gets traffic", Duration::from_secs(10), || b.hits() > 20);

    // drain: no new request, pooled connections stay established.
    let said = ctl_ok(&p, &["set", "downstream", &target, "drain"]);
    assert!(said.contains("applied by 2 workers"), "{said}");
    assert_no_new_hits(&b, Duration::from_secs(1), "drain");
    assert!(established_to(b.port) > 0, "drain keeps the pool");

    // maint: no new request, and the pool is closed.
    let said = ctl_ok(&p, &["set", "downstream", &target, "maint"]);
    assert!(said.contains("applied by 2 workers"), "{said}");
    wait_until("b's pool closed", Duration::from_secs(5), || {
        established_to(b.port) == 0
    });
    assert_no_new_hits(&b, Duration::from_secs(1), "maint");
    let admin = |p: &Proxy| json(p, &["show", "downstreams", "--json"])[1]["admin"].clone();
    assert_eq!(admin(&p), "maint");

    // A SIGHUP reload: the new generation starts with b in maint.
    p.signal(libc::SIGHUP);
    p.wait_log("reload complete", Duration::from_secs(15));
    assert_no_new_hits(&b, Duration::from_secs(1), "after SIGHUP");
    assert_eq!(admin(&p), "maint");

    // `ctl reload --wait`.
    let said = ctl_ok(&p, &["reload", "--wait"]);
    assert!(said.contains("reload complete"), "{said}");
    assert_no_new_hits(&b, Duration::from_secs(1), "after ctl reload");
    assert_eq!(json(&p, &["show", "info", "--json"])["generation"], 3);

    let (ok, failed) = load.finish();
    assert!(ok > 100, "{ok}");
    assert_eq!(failed, 0, "requests failed while b changed state");

    // A SIGKILLed worker's replacement starts with it too (no load now: the killed worker's
    // clients lose their connections, which is what a crash does).
    let victim = p.workers()[0];
    // SAFETY: a worker of the proxy this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    p.wait_log("killed by signal SIGKILL", Duration::from_secs(5));
    wait_until("replacement", Duration::from_secs(10), || {
        let w = p.workers();
        w.len() == 2 && !w.contains(&victim)
    });
    let (hits_a, hits_b) = (a.hits(), b.hits());
    for _ in 0..20 {
        assert_eq!(get(port, "/"), (200, b"x".to_vec()));
    }
    assert_eq!(a.hits(), hits_a + 20, "a serves every request");
    assert_eq!(b.hits(), hits_b);
    assert_eq!(established_to(b.port), 0, "no worker reconnected to b");

    // ready: back in rotation.
    let load = Load::start(p.url("/"), 4, b"x");
    let said = ctl_ok(&p, &["set", "downstream", &target, "ready"]);
    assert!(said.contains("applied by 2 workers"), "{said}");
    let before = b.hits();
    wait_until("b serves again", Duration::from_secs(10), || {
        b.hits() > before + 20
    });
    assert_eq!(admin(&p), "ready");
    let (ok, failed) = load.finish();
    assert!(ok > 20, "{ok}");
    assert_eq!(failed, 0, "requests failed when b came back");
    let log = p.log();
    assert!(
        log.contains(&format!(
            "control: set downstream {target} maint (uid 0 pid"
        )),
        "mutating commands are logged with the peer:\n{log}"
    );
}

#[test]
fn every_member_out_is_503_like_all_down() {
    let (a, b) = (Backend::start("x"), Backend::start("x"));
    let port = free_port();
    let p = Proxy::start("ctlall", &two_named(port, a.port, b.port, 1), port);
    assert_eq!(get(port, "/"), (200, b"x".to_vec()));
    ctl_ok(
        &p,
        &["set", "downstream", &format!("127.0.0.1:{port}/a"), "maint"],
    );
    ctl_ok(
        &p,
        &["set", "downstream", &format!("127.0.0.1:{port}/b"), "drain"],
    );
    let started = Instant::now();
    assert_eq!(get(port, "/").0, 503);
    // At once, not after pending-timeout (10 s).
    assert!(started.elapsed() < Duration::from_secs(2));
    ctl_ok(
        &p,
        &["set", "downstream", &format!("127.0.0.1:{port}/b"), "ready"],
    );
    assert_eq!(get(port, "/"), (200, b"x".to_vec()));
}

#[test]
fn reload_wait_fails_on_a_broken_config() {
    let b = Backend::start("b");
    let port = free_port();
    let good = flat_config(port, &[b.port], "", "workers = 1");
    let p = Proxy::start("ctlreload", &good, port);
    p.write_config(&flat_config(
        port,
        &[b.port],
        "lb-method = \"fastest\"",
        "workers = 1",
    ));
    let o = ctl(&p, &["reload", "--wait"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("reload failed"), "{}", err(&o));
    assert!(
        err(&o).contains("lb-method"),
        "the error names the key: {}",
        err(&o)
    );
    let info = json(&p, &["show", "info", "--json"]);
    assert_eq!(info["last_reload"]["ok"], false);
    assert!(info["last_reload"]["errors"][0]
        .as_str()
        .unwrap()
        .contains("lb-method"));
    assert_eq!(get(port, "/"), (200, b"b".to_vec()));

    p.write_config(&good);
    let o = ctl(&p, &["reload", "--wait"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let info = json(&p, &["show", "info", "--json"]);
    assert_eq!(info["last_reload"]["ok"], true);
    assert_eq!(info["generation"], 2);
    // Plain reload returns when accepted.
    let o = ctl(&p, &["reload"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    p.wait_log("generation 3 serving", Duration::from_secs(15));
    assert_eq!(get(port, "/"), (200, b"b".to_vec()));
}

#[test]
fn only_root_and_the_masters_user_may_talk() {
    if !is_root("running ctl as nobody") {
        return;
    }
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "ctlpeer",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let as_nobody = || {
        Command::new(BIN)
            .args(["ctl", "--socket"])
            .arg(sock(&p))
            .args(["reload"])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let mode = std::fs::metadata(sock(&p)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // The file's mode keeps others out.
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("ermission denied"), "{}", err(&o));
    // Loosened by hand: the master's peer check still refuses.
    let _ = Command::new("chmod").arg("666").arg(sock(&p)).status();
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("permission denied"), "{}", err(&o));
    p.wait_log("control socket: refused uid 65534", Duration::from_secs(2));
    assert!(!p.log().contains("control: reload"), "nothing was done");
    assert_eq!(json(&p, &["show", "info", "--json"])["generation"], 1);
}

/// Read a whole reply (the master closes after it) within `limit`.
fn read_reply(s: &mut UnixStream, limit: Duration) -> Vec<u8> {
    read_until_closed(s, limit).unwrap_or_default()
}

/// What the master sent before it closed the connection, or `None` if it did not close it
/// within `limit`. A reset (the master closed with some of our bytes unread) counts as closed.
fn read_until_closed(s: &mut UnixStream, limit: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut v = Vec::new();
    match s.read_to_end(&mut v) {
        Ok(_) => Some(v),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(v),
        Err(_) => None,
    }
}

#[test]
fn hostile_peers_do_not_block_the_master() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "ctlhostile",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let path = sock(&p);
    // Slow peers: connected, never a full line.
    let mut slow: Vec<UnixStream> = (0..8)
        .map(|_| {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(b"show in").unwrap();
            s
        })
        .collect();
    // Oversize: one line longer than 4 KiB gets a usage reply and the end.
    let mut big = UnixStream::connect(&path).unwrap();
    let _ = big.write_all(&vec![b'a'; 64 * 1024]);
    let reply = String::from_utf8_lossy(&read_reply(&mut big, Duration::from_secs(3))).into_owned();
    assert!(reply.starts_with("usage\n"), "{reply}");
    assert!(reply.contains("longer than 4096"), "{reply}");
    // Garbage bytes.
    let mut junk = UnixStream::connect(&path).unwrap();
    junk.write_all(b"\x00\xff\x1b[2J\n").unwrap();
    let reply =
        String::from_utf8_lossy(&read_reply(&mut junk, Duration::from_secs(3))).into_owned();
    assert!(
        reply.starts_with("usage\nrequest is not printable"),
        "{reply}"
    );
    // HTTP on the socket gets HTTP.
    for (req, status) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], "HTTP/1.1 404"),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405"),
        (b"GET /metrics HTTP/1.0\r\n\r\n", "HTTP/1.1 "),
    ] {
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(req).unwrap();
        let r = String::from_utf8_lossy(&read_reply(&mut s, Duration::from_secs(3))).into_owned();
        assert!(r.starts_with(status), "{r}");
    }
    // Meanwhile the proxy serves and ctl answers.
    let started = Instant::now();
    assert_eq!(get(port, "/"), (200, b"b".to_vec()));
    ctl_ok(&p, &["show", "info"]);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Past the connection limit: closed at once.
    let extra: Vec<UnixStream> = (0..12)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    // 8 slow ones are open: 8 more are taken, the other 4 are closed at once, with no reply.
    let mut closed = 0;
    for mut s in extra {
        if let Some(r) = read_until_closed(&mut s, Duration::from_millis(300)) {
            assert!(r.is_empty(), "{r:?}");
            closed += 1;
        }
    }
    assert!(closed >= 4, "only {closed} of 12 closed past the limit");
    // The slow ones are dropped at their deadline (5 s), with no reply.
    let end = Instant::now() + Duration::from_secs(8);
    for s in &mut slow {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let r = read_until_closed(s, left);
        assert_eq!(r, Some(Vec::new()), "a slow peer was not closed in time");
    }
    ctl_ok(&p, &["show", "workers"]);
    assert_eq!(get(port, "/"), (200, b"b".to_vec()));
}

#[test]
fn socket_file_life() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("ctlfile");
    let path = dir.join("sub").join("ctl.sock");
    // A stale socket from a master that died: replaced.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path_exists(&path));
    let env = [("RPROXY_CONTROL_SOCKET", path.to_str().unwrap())];
    let cfg = flat_config(port, &[b.port], "", "workers = 1");
    let mut p = Proxy::start_with_env("ctlfile", &cfg, port, &env);
    p.wait_log("removed a stale control socket", Duration::from_secs(2));
    // A second master on the same socket is refused: someone answers there.
    let port2 = free_port();
    let dir2 = temp_dir("ctlfile2");
    let cfg2 = dir2.join("rproxy.toml");
    std::fs::write(&cfg2, flat_config(port2, &[b.port], "", "workers = 1")).unwrap();
    let o = Command::new(BIN)
        .args(["-f", "-c"])
        .arg(&cfg2)
        .env("RPROXY_CONTROL_SOCKET", &path)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("another process answers"), "{}", err(&o));
    // ctl finds it through the config file and the environment, like the master.
    let o = Command::new(BIN)
        .args(["ctl", "-c"])
        .arg(&p.config)
        .args(["show", "info"])
        .env("RPROXY_CONTROL_SOCKET", &path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // Removed at exit.
    p.signal(libc::SIGQUIT);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!path_exists(&path));
    // No master: ctl exits 2.
    let o = Command::new(BIN)
        .args(["ctl", "--socket"])
        .arg(&path)
        .args(["show", "info"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn reload_moves_the_socket_and_bad_paths_are_refused() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("ctlmove");
    // The second one in a directory the master creates.
    let (first, second) = (dir.join("first.sock"), dir.join("new").join("second.sock"));
    let with_socket = |p: &Path| {
        flat_config(
            port,
            &[b.port],
            "",
            &format!("workers = 1\ncontrol-socket = \"{}\"", p.display()),
        )
    };
    let p = Proxy::start("ctlmove", &with_socket(&first), port);
    assert!(path_exists(&first));
    p.write_config(&with_socket(&second));
    let at = |s: &Path, words: &[&str]| {
        Command::new(BIN)
            .args(["ctl", "--socket"])
            .arg(s)
            .args(words)
            .output()
            .unwrap()
    };
    let o = at(&first, &["reload", "--wait"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(!path_exists(&first), "the old socket is gone");
    let o = at(&second, &["show", "info"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    p.wait_log("control socket moved to", Duration::from_secs(2));
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&dir.join("new")), 0o755);
    assert_eq!(mode(&second), 0o600);

    for (value, reason) in [
        ("relative/ctl.sock", "not an absolute path"),
        ("off", "not an absolute path"),
        (&format!("/tmp/{}", "x".repeat(120)), "longer than 107"),
        (dir.to_str().unwrap(), "is not a socket"),
    ] {
        let d = temp_dir("ctlbad");
        let f = d.join("rproxy.toml");
        let cfg = flat_config(
            port,
            &[b.port],
            "",
            &format!("control-socket = \"{value}\""),
        );
        std::fs::write(&f, cfg).unwrap();
        let o = Command::new(BIN)
            .arg("-t")
            .arg("-c")
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(
            err(&o).contains("control-socket") && err(&o).contains(reason),
            "{value}: {}",
            err(&o)
        );
    }
}
