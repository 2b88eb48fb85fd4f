//! The process model through the real binary: workers, privileges, crash replacement and
//! back-off, reloads under load, graceful and fast stop, orphaned workers, sd-notify.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn three_unprivileged_workers_named_rproxy_worker() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "names",
        &flat_config(port, &[b.port], "", "workers = 3"),
        port,
    );
    let workers = p.workers();
    assert_eq!(workers.len(), 3, "workers: {workers:?}");
    let root = is_root("workers drop to nobody, the master stays root");
    for w in &workers {
        assert_eq!(comm(*w), "rproxy-worker");
        if root {
            assert_eq!(uid_of(*w), 65534, "worker {w} should run as nobody");
        }
    }
    if root {
        assert_eq!(uid_of(p.pid()), 0, "the master stays root");
    }
    assert_eq!(get(port, "/").0, 200);
}

/// `RPROXY_WORKERS` overrides the file's `workers` for a real start, not only for `-t`.
#[test]
fn environment_override_sets_the_worker_count() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start_with_env(
        "envworkers",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
        &[("RPROXY_WORKERS", "3")],
    );
    assert_eq!(p.workers().len(), 3, "workers: {:?}", p.workers());
    assert!(p.log().contains("3 workers ready"), "{}", p.log());
}

#[test]
fn killed_worker_is_replaced_quickly() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "replace",
        &flat_config(port, &[b.port], "", "workers = 2"),
        port,
    );
    let before = p.workers();
    let victim = before[0];
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let t0 = Instant::now();
    // The first crash of a slot is replaced with no back-off: ~50 ms here; 3 s is the margin
    // of a loaded 2-core machine (a back-off would be 200 ms doubling, a fork loop no worker).
    wait_until("a replacement worker", Duration::from_secs(3), || {
        let now = p.workers();
        now.len() == 2 && !now.contains(&victim)
    });
    wait_until(
        "requests served",
        Duration::from_secs(3) - t0.elapsed().min(Duration::from_secs(3)),
        || get(port, "/").0 == 200,
    );
    p.wait_log("killed by signal SIGKILL", Duration::from_secs(3));
    p.wait_log("replacing it in 0 ms", Duration::from_secs(1));
}

#[test]
#[cfg_attr(
    not(feature = "test-faults"),
    ignore = "the fault hook is only built with --features test-faults"
)]
fn crash_loop_backs_off_and_recovers() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("fault");
    let fault = dir.join("fail-workers");
    let p = Proxy::start_with_env(
        "crashloop",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
        &[("RPROXY_TEST_FAULT_FILE", fault.to_str().unwrap())],
    );
    std::fs::write(&fault, b"").unwrap();
    let victim = p.workers()[0];
    unsafe { libc::kill(victim, libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(3));
    let deaths = p.log().matches("exited with status 3").count();
    // Immediate, 200, 400, 800, 1600 ms: about five in three seconds, never a fork loop.
    assert!(deaths >= 2, "the replacement was never retried: {deaths}");
    assert!(deaths <= 8, "{deaths} start-up crashes in 3 s: no back-off");
    assert!(alive(p.pid()));
    std::fs::remove_file(&fault).unwrap();
    // Back-off is capped at 10 s; the next attempt starts a healthy worker.
    wait_until("recovery", Duration::from_secs(12), || {
        p.workers().len() == 1 && get(port, "/").0 == 200
    });
}

/// Continuous load from keep-alive and new-connection clients while the master reloads 20
/// times: every request must succeed and no connection may be refused.
#[test]
fn twenty_reloads_under_load_lose_nothing() {
    let b = Backend::start("b");
    let port = free_port();
    let config = flat_config(port, &[b.port], "", "workers = 2");
    let p = Proxy::start("reloads", &config, port);
    let load = Load::start(p.url("/"), 8, b"b");
    wait_until("load running", Duration::from_secs(5), || load.ok() >= 8);
    for i in 1..=20 {
        p.signal(libc::SIGHUP);
        p.wait_log_count("reload complete", i, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Requests keep succeeding after the last reload.
    let after = load.ok();
    wait_until("load after the reloads", Duration::from_secs(5), || {
        load.ok() >= after + 8
    });
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{failed} failed requests out of {}", ok + failed);
    assert!(ok > 200, "only {ok} requests were made");
    // Old generations drained away; only the last one remains.
    wait_until("old generations gone", Duration::from_secs(10), || {
        p.workers().len() == 2
    });
}

#[test]
fn invalid_reload_keeps_the_old_config() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "badreload",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    p.write_config(&flat_config(
        port,
        &[b.port],
        "lb-method = \"fastest\"",
        "workers = 1",
    ));
    p.signal(libc::SIGHUP);
    p.wait_log("reload failed", Duration::from_secs(5));
    assert!(
        p.log().contains("lb-method"),
        "the error names the key:\n{}",
        p.log()
    );
    assert_eq!(get(port, "/"), (200, b"b".to_vec()));
    assert_eq!(p.workers().len(), 1);
}

#[test]
fn reload_moves_the_port() {
    let b = Backend::start("b");
    let (old, new) = (free_port(), free_port());
    let p = Proxy::start(
        "moveport",
        &flat_config(old, &[b.port], "", "workers = 1"),
        old,
    );
    p.write_config(&flat_config(new, &[b.port], "", "workers = 1"));
    p.signal(libc::SIGHUP);
    p.wait_log("reload complete", Duration::from_secs(10));
    assert_eq!(get(new, "/").0, 200);
    wait_until("old port closed", Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", old)).is_err()
    });
}

#[test]
fn sigquit_finishes_the_request_in_flight() {
    let b = Backend::start("b");
    let port = free_port();
    let mut p = Proxy::start(
        "quit",
        &flat_config(port, &[b.port], "", "workers = 2"),
        port,
    );
    let t = std::thread::spawn(move || get(port, "/sleep/2000"));
    wait_until("request in flight", Duration::from_secs(5), || {
        b.hits() >= 1
    });
    p.signal(libc::SIGQUIT);
    let (status, body) = t.join().unwrap();
    assert_eq!((status, body), (200, b"slept 2000".to_vec()));
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
}

/// TERM and INT are the fast stop: workers close their connections and leave on their own
/// (the master's SIGKILL fallback comes at 1.5 s, so a bound of 1 s and no "killing them" line
/// prove they obeyed), even with a request in flight.
#[test]
fn sigterm_and_sigint_end_everything_at_once() {
    for (name, sig) in [("term", libc::SIGTERM), ("int", libc::SIGINT)] {
        let b = Backend::start("b");
        let port = free_port();
        let mut p = Proxy::start(name, &flat_config(port, &[b.port], "", "workers = 2"), port);
        let workers = p.workers();
        // A request in flight does not hold a fast stop.
        std::thread::spawn(move || get(port, "/sleep/10000"));
        wait_until("request in flight", Duration::from_secs(5), || {
            b.hits() >= 1
        });
        let t0 = Instant::now();
        p.signal(sig);
        assert_eq!(p.wait_exit(Duration::from_secs(1)), Some(0), "{name}");
        wait_until(
            "workers gone",
            Duration::from_secs(1) - t0.elapsed().min(Duration::from_secs(1)),
            || workers.iter().all(|w| !alive(*w)),
        );
        assert!(p.log().contains("fast stop"), "{name}: {}", p.log());
        assert!(
            !p.log().contains("killing them"),
            "{name}: workers had to be killed:\n{}",
            p.log()
        );
    }
}

/// Reads one response with a `Content-Length` body from a keep-alive stream: `(head, body)`.
fn read_response(s: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before a response");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head, body)
}

/// A keep-alive connection idle across a reload is not closed early by the draining worker:
/// its next request is answered, with `Connection: close`, and then the connection ends.
#[test]
fn draining_worker_answers_once_more_with_connection_close() {
    use std::io::{Read, Write};
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "drainclose",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(body, b"b");
    p.signal(libc::SIGHUP);
    p.wait_log("reload complete", Duration::from_secs(10));
    // Our connection belongs to the old, draining worker.
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("connection: close"),
        "no Connection: close while draining: {head}"
    );
    assert_eq!(body, b"b");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap_or(0),
        0,
        "not closed after it"
    );
}

/// `shutdown-timeout` ends a drain that a stuck request would hold forever: the worker cuts
/// it and leaves on its own, and the master exits 0.
#[test]
fn shutdown_timeout_ends_a_stuck_drain() {
    let b = Backend::start("b");
    let port = free_port();
    let mut p = Proxy::start(
        "stuckdrain",
        &flat_config(port, &[b.port], "", "workers = 1\nshutdown-timeout = 1"),
        port,
    );
    let t = std::thread::spawn(move || get(port, "/sleep/30000"));
    wait_until("request in flight", Duration::from_secs(5), || {
        b.hits() >= 1
    });
    let t0 = Instant::now();
    p.signal(libc::SIGQUIT);
    // 1 s of shutdown-timeout; 3 s of margin. The request would hold it for 30 s.
    assert_eq!(p.wait_exit(Duration::from_secs(4)), Some(0), "{}", p.log());
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        p.log().contains("shutdown-timeout: closing 1 connections"),
        "{}",
        p.log()
    );
    let (status, _) = t.join().unwrap();
    assert_ne!(status, 200, "the stuck request was not cut");
}

#[test]
fn workers_leave_when_the_master_is_killed() {
    let b = Backend::start("b");
    let port = free_port();
    let mut p = Proxy::start(
        "orphans",
        &flat_config(port, &[b.port], "", "workers = 2"),
        port,
    );
    let workers = p.workers();
    p.signal(libc::SIGKILL);
    let _ = p.child.wait();
    wait_until("orphaned workers exit", Duration::from_secs(5), || {
        workers.iter().all(|w| !alive(*w))
    });
}

#[test]
fn notifies_systemd() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut p = Proxy::start_with_env(
        "notify",
        &flat_config(port, &[b.port], "", "workers = 1"),
        port,
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut seen = String::new();
    let read_until = |needle: &str, seen: &mut String| {
        let end = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            assert!(Instant::now() < end, "no {needle} in {seen:?}");
            let n = sock.recv(&mut buf).unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
    };
    read_until("READY=1", &mut seen);
    seen.clear();
    p.signal(libc::SIGHUP);
    read_until("READY=1", &mut seen);
    let reloading = seen
        .find("RELOADING=1")
        .expect("RELOADING=1 before READY=1");
    assert!(seen.contains("MONOTONIC_USEC="), "{seen}");
    assert!(reloading < seen.find("READY=1").unwrap());
    seen.clear();
    p.signal(libc::SIGQUIT);
    read_until("STOPPING=1", &mut seen);
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn hung_worker_is_replaced() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "hung",
        &flat_config(port, &[b.port], "", "workers = 1\nheartbeat-timeout = 2"),
        port,
    );
    let victim = p.workers()[0];
    // A stopped process sends no heartbeat: the master must kill and replace it.
    unsafe { libc::kill(victim, libc::SIGSTOP) };
    let t0 = Instant::now();
    p.wait_log("sent no heartbeat", Duration::from_secs(6));
    wait_until("a new worker", Duration::from_secs(3), || {
        let w = p.workers();
        w.len() == 1 && w[0] != victim
    });
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "killed too early: {:?}",
        t0.elapsed()
    );
    wait_until("served again", Duration::from_secs(3), || {
        get(port, "/").0 == 200
    });
}

#[test]
fn daemonizes_with_a_pid_file() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("daemon");
    let pid_file = dir.join("rproxy.pid");
    let err_log = dir.join("error.log");
    let cfg = flat_config(
        port,
        &[b.port],
        "",
        &format!(
            "workers = 1\ndaemonize = true\npid-file = \"{}\"\nerror-log = \"{}\"",
            pid_file.display(),
            err_log.display()
        ),
    );
    let path = dir.join("rproxy.toml");
    std::fs::write(&path, cfg).unwrap();
    // Without -f and outside systemd the command returns at once and the daemon lives on.
    let status = std::process::Command::new(BIN)
        .arg("-c")
        .arg(&path)
        .env("RPROXY_CONTROL_SOCKET", dir.join("ctl.sock"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("INVOCATION_ID")
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("pid file", Duration::from_secs(5), || pid_file.exists());
    let pid = pid_in(&pid_file).unwrap();
    let guard = KillOnDrop(pid);
    wait_until("workers ready", Duration::from_secs(10), || {
        std::fs::read_to_string(&err_log).is_ok_and(|t| t.contains("workers ready"))
    });
    // Double fork: the daemon is nobody's child here (reparented to init or a subreaper).
    assert_ne!(
        ppid_of(pid).map(|(pp, _)| pp),
        Some(std::process::id() as i32)
    );
    assert_eq!(get(port, "/").0, 200);
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    wait_until("daemon exit", Duration::from_secs(5), || !alive(pid));
    assert!(!pid_file.exists(), "the pid file is removed at exit");
    drop(guard);
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
