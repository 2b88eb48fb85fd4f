//! Hot binary upgrade (SIGUSR2) end to end: the real binary upgraded to itself under load,
//! new binaries that fail before Ready, the systemd MAINPID hand-off seen by a fake
//! NOTIFY_SOCKET, TLS sessions resuming across the upgrade, and daemon mode.

mod common;

use std::io::{IoSliceMut, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A flat configuration on `port` in front of `backend`, with a pid file in `dir` and
/// `global` keys: `(pid file, configuration)`.
fn with_pid_file(
    dir: &Path,
    port: u16,
    backend: u16,
    server: &str,
    global: &str,
) -> (std::path::PathBuf, String) {
    let pid_file = dir.join("rproxy.pid");
    let cfg = flat_config(
        port,
        &[backend],
        server,
        &format!("{global}\npid-file = \"{}\"", pid_file.display()),
    );
    (pid_file, cfg)
}

/// Send SIGUSR2 to `master` and wait until the pid file names another live master whose
/// workers serve; returns its PID.
fn upgrade(master: i32, pid_file: &Path, workers: usize) -> i32 {
    // SAFETY: signalling a master this test started.
    unsafe { libc::kill(master, libc::SIGUSR2) };
    let mut new = 0;
    wait_until(
        "the pid file names the new master",
        Duration::from_secs(15),
        || {
            new = pid_in(pid_file).unwrap_or(master);
            new != master && alive(new)
        },
    );
    wait_until("the new master's workers", Duration::from_secs(5), || {
        children_of(new).len() == workers
    });
    new
}

/// Processes this test started, SIGKILLed (with their workers) at the end whatever happens:
/// after an upgrade the serving master is no longer the child `Proxy` knows.
struct Masters(Vec<i32>);

impl Drop for Masters {
    fn drop(&mut self) {
        for &m in &self.0 {
            if alive(m) {
                kill_tree(m);
            }
        }
    }
}

#[test]
fn twenty_upgrades_under_load_lose_no_request() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("upgrade20");
    let (pid_file, cfg) =
        with_pid_file(&dir, port, b.port, "", "workers = 2\nshutdown-timeout = 5");
    let p = Proxy::start("upgrade20", &cfg, port);
    let mut masters = Masters(vec![p.pid()]);
    let mut master = p.pid();
    assert_eq!(pid_in(&pid_file), Some(master));
    let mut seen = vec![master];
    let mut seen_workers = children_of(master);
    let (mut ok, mut failed) = (0, 0);
    // Load is bounded at 40 s per run: four runs of five upgrades each.
    for batch in 0..4 {
        let load = Load::start(p.url("/"), 8, b"b");
        wait_until("load running", Duration::from_secs(5), || load.ok() >= 8);
        for i in 0..5 {
            let before = children_of(master);
            let new = upgrade(master, &pid_file, 2);
            masters.0.push(new);
            assert!(
                !seen.contains(&new),
                "upgrade {}: pid {new} reused",
                batch * 5 + i
            );
            seen.push(new);
            let workers = children_of(new);
            assert!(
                workers.iter().all(|w| !seen_workers.contains(w)),
                "new workers {workers:?} vs earlier {seen_workers:?}"
            );
            seen_workers.extend(workers);
            // The old master drains its own workers and exits; it never respawns one.
            wait_until("the old master exits", Duration::from_secs(10), || {
                !alive(master)
            });
            assert!(before.iter().all(|w| !alive(*w)), "old workers left");
            master = new;
            let n = load.ok();
            wait_until("load after the upgrade", Duration::from_secs(5), || {
                load.ok() >= n + 8
            });
        }
        let (o, f) = load.finish();
        ok += o;
        failed += f;
    }
    assert_eq!(failed, 0, "failed requests across 20 upgrades ({ok} ok)");
    assert!(ok > 200, "too little load: {ok}");
    let log = p.log();
    assert_eq!(
        log.matches("upgrade committed: master").count(),
        20,
        "{log}"
    );
    assert!(!log.contains("upgrade failed"), "{log}");
    // The last master stops as usual, and removes the pid file it inherited.
    // SAFETY: signalling the master this test's upgrades started.
    unsafe { libc::kill(master, libc::SIGQUIT) };
    wait_until("the last master exits", Duration::from_secs(10), || {
        !alive(master)
    });
    assert!(
        !pid_file.exists(),
        "the pid file is removed by the last master"
    );
}

/// The old tree after a failed upgrade: the same workers, serving, nothing else left. The
/// master logs the failure as it kills the new master and reaps it on its next turn: until
/// then the killed one is still its child, so the children are waited for (bounded) first.
fn assert_untouched(p: &Proxy, workers: &[i32], pid_file: &Path) {
    let settled = Instant::now() + Duration::from_secs(5);
    while p.workers() != workers && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.workers(), workers, "the old workers were replaced");
    assert_eq!(pid_in(pid_file), Some(p.pid()), "the pid file moved");
    for _ in 0..5 {
        assert_eq!(get(p.port, "/").0, 200);
    }
}

#[test]
#[cfg_attr(
    not(feature = "test-faults"),
    ignore = "the fault hooks are only built with --features test-faults"
)]
fn a_new_binary_that_fails_before_ready_leaves_the_old_tree_serving() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("upgrade-fail");
    let fault = dir.join("workers-die");
    let hang = dir.join("new-master-hangs");
    let (pid_file, cfg) = with_pid_file(&dir, port, b.port, "", "workers = 2");
    let p = Proxy::start_with_env(
        "upgrade-fail",
        &cfg,
        port,
        &[
            ("RPROXY_TEST_FAULT_FILE", fault.to_str().unwrap()),
            ("RPROXY_TEST_UPGRADE_HANG_FILE", hang.to_str().unwrap()),
            ("RPROXY_TEST_UPGRADE_TIMEOUT_MS", "3000"),
        ],
    );
    let _masters = Masters(vec![p.pid()]);
    let workers = p.workers();
    assert_eq!(workers.len(), 2);
    let load = Load::start(p.url("/"), 4, b"b");
    wait_until("load running", Duration::from_secs(5), || load.ok() >= 4);

    // 1. Every worker of the new master dies before Ready (while the fault file exists).
    std::fs::write(&fault, b"").unwrap();
    p.signal(libc::SIGUSR2);
    p.wait_log("upgrade failed", Duration::from_secs(15));
    std::fs::remove_file(&fault).unwrap();
    assert!(
        p.log().contains("before they were ready"),
        "the old master logs why:\n{}",
        p.log()
    );
    assert_untouched(&p, &workers, &pid_file);

    // 2. The new binary refuses the configuration.
    let good = std::fs::read_to_string(&p.config).unwrap();
    p.write_config(&format!("{good}\nno-such-key = 1\n"));
    p.signal(libc::SIGUSR2);
    p.wait_log_count("upgrade failed", 2, Duration::from_secs(15));
    assert!(
        p.log().contains("no-such-key: unknown key"),
        "the old master logs the new one's reason:\n{}",
        p.log()
    );
    p.write_config(&good);
    assert_untouched(&p, &workers, &pid_file);

    // 3. The new master hangs: the old one gives up at its deadline and kills it.
    std::fs::write(&hang, b"").unwrap();
    p.signal(libc::SIGUSR2);
    p.wait_log_count("upgrade failed", 3, Duration::from_secs(15));
    std::fs::remove_file(&hang).unwrap();
    assert!(p.log().contains("was not ready within 3 s"), "{}", p.log());
    // No new master is left behind: the master's children are its workers only.
    assert_untouched(&p, &workers, &pid_file);

    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "requests failed while upgrades failed ({ok} ok)");

    // The same master upgrades fine afterwards.
    let new = upgrade(p.pid(), &pid_file, 2);
    let _more = Masters(vec![new]);
    assert_eq!(get(port, "/").0, 200);
}

/// Datagrams received so far: `(sender PID, text)`.
type Notes = Vec<(i32, String)>;

/// One datagram to the fake NOTIFY_SOCKET, with the sender's PID (SO_PASSCRED).
fn recv_notify(sock: &UnixDatagram) -> Option<(i32, String)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    // Room for credentials and one descriptor (the barrier's pipe, closed when dropped).
    let mut space = nix::cmsg_space!(UnixCredentials, [std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut pid = 0;
    for c in msg.cmsgs().ok()? {
        match c {
            ControlMessageOwned::ScmCredentials(cred) => pid = cred.pid(),
            ControlMessageOwned::ScmRights(fds) => {
                for fd in fds {
                    // SAFETY: a descriptor the kernel just gave us: closing it answers the
                    // barrier as systemd does.
                    unsafe { libc::close(fd) };
                }
            }
            _ => {}
        }
    }
    let n = msg.bytes;
    Some((pid, String::from_utf8_lossy(&buf[..n]).into_owned()))
}

#[test]
fn systemd_follows_the_new_master() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("upgrade-notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (pid_file, cfg) =
        with_pid_file(&dir, port, b.port, "", "workers = 1\nshutdown-timeout = 3");
    let p = Proxy::start_with_env(
        "upgrade-notify",
        &cfg,
        port,
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let old = p.pid();
    let mut masters = Masters(vec![old]);
    let mut all: Notes = Vec::new();
    let read_until = |all: &mut Notes, what: &str, done: &dyn Fn(&Notes) -> bool| {
        let end = Instant::now() + Duration::from_secs(15);
        while !done(all) {
            assert!(Instant::now() < end, "no {what} in {all:?}");
            if let Some(m) = recv_notify(&sock) {
                all.push(m);
            }
        }
    };
    read_until(&mut all, "READY=1", &|a| {
        a.iter().any(|(_, t)| t.contains("READY=1"))
    });
    let start = all.len();
    p.signal(libc::SIGUSR2);
    read_until(&mut all, "MAINPID=", &|a| {
        a[start..].iter().any(|(_, t)| t.contains("MAINPID="))
    });
    let new = pid_in(&pid_file).unwrap();
    masters.0.push(new);
    assert_ne!(new, old);
    let after: Vec<&(i32, String)> = all[start..].iter().collect();
    // RELOADING=1 (with MONOTONIC_USEC) from the old master, then one datagram from it with
    // MAINPID=<new> and READY=1: the main PID may send it, systemd applies MAINPID first.
    let reloading = after
        .iter()
        .position(|(_, t)| t.contains("RELOADING=1"))
        .expect("RELOADING=1");
    assert_eq!(after[reloading].0, old);
    assert!(after[reloading].1.contains("MONOTONIC_USEC="));
    let handoff = after
        .iter()
        .position(|(_, t)| t.contains("MAINPID="))
        .unwrap();
    assert!(reloading < handoff);
    let (sender, text) = after[handoff];
    assert_eq!(*sender, old, "the hand-off comes from the main PID");
    assert!(text.contains(&format!("MAINPID={new}\n")), "{text}");
    assert!(text.contains("READY=1"), "{text}");
    // Nothing at all from the new master before the hand-off (systemd would refuse it).
    assert!(
        after[..handoff].iter().all(|(pid, _)| *pid == old),
        "{after:?}"
    );

    // The old master drains and exits; the new one reloads on SIGHUP and says so itself.
    let mark = all.len();
    wait_until("the old master exits", Duration::from_secs(10), || {
        !alive(old)
    });
    // SAFETY: signalling the master this test's upgrade started.
    unsafe { libc::kill(new, libc::SIGHUP) };
    read_until(&mut all, "READY=1 from the new master", &|a| {
        a[mark..]
            .iter()
            .any(|(pid, t)| *pid == new && t.contains("READY=1"))
    });
    // SAFETY: as above.
    unsafe { libc::kill(new, libc::SIGQUIT) };
    read_until(&mut all, "STOPPING=1 from the new master", &|a| {
        a[mark..]
            .iter()
            .any(|(pid, t)| *pid == new && t.contains("STOPPING=1"))
    });
    // After the hand-off the old master said nothing but the barrier that waits for it
    // (sd_notify_barrier: BARRIER=1 alone, with a pipe systemd closes): no STOPPING=1 as it
    // exited, no READY=1, no STATUS=.
    let tail: Vec<&(i32, String)> = all[start + handoff + 1..]
        .iter()
        .filter(|(pid, _)| *pid == old)
        .collect();
    assert!(
        tail.iter().all(|(_, t)| t.trim() == "BARRIER=1") && tail.len() <= 1,
        "the old master spoke after the hand-off: {tail:?}"
    );
}

/// One `openssl s_client` request offering the session in `sess` (when it exists) and saving
/// the newest one there; whether the server resumed it.
fn s_client(port: u16, version: &str, sess: &Path) -> bool {
    s_client_resumed(port, &[version], sess)
}

/// A session made before the upgrade resumes on the new master's workers: the session cache
/// (session IDs) or the ticket keys (tickets) crossed the exec.
fn sessions_resume_across_the_upgrade(name: &str, ssl_extra: &str, version: &str) {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir(name);
    let ssl = ssl_section(&dir, ssl_extra);
    let (pid_file, cfg) = with_pid_file(
        &dir,
        port,
        b.port,
        &ssl,
        "workers = 2\nshutdown-timeout = 3",
    );
    let p = Proxy::start(name, &cfg, port);
    let mut masters = Masters(vec![p.pid()]);
    let sess = dir.join("session.pem");
    assert!(
        !s_client(port, version, &sess),
        "the first handshake is full"
    );
    assert!(s_client(port, version, &sess), "resumes before the upgrade");
    let new = upgrade(p.pid(), &pid_file, 2);
    masters.0.push(new);
    // Only the new master's workers accept from here on.
    wait_until("the old master exits", Duration::from_secs(10), || {
        !alive(p.pid())
    });
    for i in 0..4 {
        assert!(
            s_client(port, version, &sess),
            "{name}: connection {i} after the upgrade not resumed\n{}",
            p.log()
        );
    }
    assert!(
        p.log().contains("handed over by the previous master"),
        "{}",
        p.log()
    );
}

#[test]
fn tls_session_ids_resume_across_the_upgrade() {
    sessions_resume_across_the_upgrade("upgrade-sid", "tickets = false\n", "-tls1_2");
}

#[test]
fn tls_tickets_resume_across_the_upgrade() {
    sessions_resume_across_the_upgrade("upgrade-ticket", "cache-enabled = false\n", "-tls1_3");
}

#[test]
fn a_daemon_upgrades_and_its_pid_file_follows() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("upgrade-daemon");
    let pid_file = dir.join("rproxy.pid");
    let err_log = dir.join("error.log");
    let cfg = flat_config(
        port,
        &[b.port],
        "",
        &format!(
            "workers = 1\nshutdown-timeout = 3\ndaemonize = true\npid-file = \"{}\"\n\
             error-log = \"{}\"",
            pid_file.display(),
            err_log.display()
        ),
    );
    // A relative configuration path: the daemon's working directory is `/`, so the new
    // binary must be given an absolute one.
    std::fs::write(dir.join("rproxy.toml"), cfg).unwrap();
    let status = Command::new(BIN)
        .current_dir(&dir)
        .args(["-c", "rproxy.toml"])
        // Its own control socket: the default path is one per machine.
        .env("RPROXY_CONTROL_SOCKET", dir.join("ctl.sock"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("INVOCATION_ID")
        .status()
        .unwrap();
    assert!(status.success());
    let old = pid_in(&pid_file).unwrap();
    let mut masters = Masters(vec![old]);
    let new = upgrade(old, &pid_file, 1);
    masters.0.push(new);
    wait_until("the old daemon exits", Duration::from_secs(10), || {
        !alive(old)
    });
    // Re-parented, alive, serving; it never forked away (the pid file would say so).
    assert!(alive(new));
    assert_eq!(pid_in(&pid_file), Some(new));
    assert_eq!(get(port, "/").0, 200);
    // The lock moved with the open file: a second daemon on the same pid file is refused.
    let second = Command::new(BIN)
        .current_dir(&dir)
        .args(["-c", "rproxy.toml"])
        // Its own control socket: the default path is one per machine.
        .env("RPROXY_CONTROL_SOCKET", dir.join("ctl.sock"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("INVOCATION_ID")
        .output()
        .unwrap();
    assert!(!second.status.success());
    // (The starting process reports on descriptor 2, which is the error log by then.)
    let log = std::fs::read_to_string(&err_log).unwrap();
    assert!(log.contains("another rproxy holds it"), "{log}");
    // And once more, from the upgraded daemon.
    let third = upgrade(new, &pid_file, 1);
    masters.0.push(third);
    wait_until("the second daemon exits", Duration::from_secs(10), || {
        !alive(new)
    });
    assert_eq!(get(port, "/").0, 200);
    // SAFETY: signalling the daemon this test's upgrades started.
    unsafe { libc::kill(third, libc::SIGQUIT) };
    wait_until("the last daemon exits", Duration::from_secs(10), || {
        !alive(third)
    });
    assert!(!pid_file.exists(), "the pid file is removed at the end");
}

/// The ticket key schedule lives in the shared ring, not in a master: upgrading more often
/// than the rotation interval (1.5 s here, 12 h in production) must not stop the rotation, so
/// a ticket older than the ring stops resuming whatever the upgrades.
#[test]
#[cfg_attr(
    not(feature = "test-faults"),
    ignore = "the short rotation interval is only built with --features test-faults"
)]
fn ticket_keys_keep_rotating_across_frequent_upgrades() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("upgrade-rotate");
    let ssl = ssl_section(&dir, "cache-enabled = false\n");
    let (pid_file, cfg) = with_pid_file(
        &dir,
        port,
        b.port,
        &ssl,
        "workers = 1\nshutdown-timeout = 2",
    );
    let p = Proxy::start_with_env(
        "upgrade-rotate",
        &cfg,
        port,
        &[("RPROXY_TEST_TICKET_ROTATE_MS", "1500")],
    );
    let mut masters = Masters(vec![p.pid()]);
    let sess = dir.join("session.pem");
    let old = dir.join("old.pem");
    assert!(!s_client(port, "-tls1_2", &sess));
    std::fs::copy(&sess, &old).unwrap();
    // Upgrades every few hundred ms for 8 s: more than four rotations' worth of time.
    let mut master = p.pid();
    let end = Instant::now() + Duration::from_secs(8);
    let mut upgrades = 0;
    while Instant::now() < end {
        master = upgrade(master, &pid_file, 1);
        masters.0.push(master);
        upgrades += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(upgrades >= 8, "only {upgrades} upgrades");
    assert!(
        !s_client(port, "-tls1_2", &old),
        "a ticket older than the whole ring still resumed: the rotation stopped"
    );
    // Tickets made now resume, across another upgrade too.
    let fresh = dir.join("fresh.pem");
    assert!(!s_client(port, "-tls1_2", &fresh));
    let last = upgrade(master, &pid_file, 1);
    masters.0.push(last);
    assert!(s_client(port, "-tls1_2", &fresh));
}

/// Until the commit the new master's workers hold the listeners without accepting: every
/// connection made while the new tree is Ready but uncommitted is served by the old workers;
/// after the commit the new workers take the new connections.
#[test]
#[cfg_attr(
    not(feature = "test-faults"),
    ignore = "the commit hold hook is only built with --features test-faults"
)]
fn new_workers_accept_nothing_before_the_commit() {
    let b = Backend::start("b");
    let port = free_port();
    let dir = temp_dir("upgrade-hold");
    let hold = dir.join("hold-commit");
    let (pid_file, cfg) =
        with_pid_file(&dir, port, b.port, "", "workers = 2\nshutdown-timeout = 5");
    let p = Proxy::start_with_env(
        "upgrade-hold",
        &cfg,
        port,
        &[(
            "RPROXY_TEST_UPGRADE_HOLD_COMMIT_FILE",
            hold.to_str().unwrap(),
        )],
    );
    let mut masters = Masters(vec![p.pid()]);
    let old_workers = p.workers();
    std::fs::write(&hold, b"").unwrap();
    p.signal(libc::SIGUSR2);
    p.wait_log("waiting for the commit", Duration::from_secs(15));
    let new = children_of(p.pid())
        .into_iter()
        .find(|c| !old_workers.contains(c))
        .expect("the new master");
    masters.0.push(new);
    let new_workers = children_of(new);
    assert_eq!(new_workers.len(), 2);
    // 30 kept-open connections, each with one answered request: all on old workers.
    let mut conns = Vec::new();
    for _ in 0..30 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        conns.push(s);
    }
    let on_new: usize = new_workers
        .iter()
        .map(|w| client_ports_of(*w, &[port]).len())
        .sum();
    let on_old: usize = old_workers
        .iter()
        .map(|w| client_ports_of(*w, &[port]).len())
        .sum();
    assert_eq!(on_new, 0, "a held worker accepted");
    assert_eq!(on_old, 30);
    assert_eq!(pid_in(&pid_file), Some(p.pid()), "no commit yet");
    drop(conns);

    std::fs::remove_file(&hold).unwrap();
    wait_until(
        "the pid file names the new master",
        Duration::from_secs(10),
        || pid_in(&pid_file) == Some(new),
    );
    p.wait_log(
        "upgrade committed: this master serves",
        Duration::from_secs(5),
    );
    // The old workers accept until the new ones do, then drain and exit.
    wait_until("the old workers exit", Duration::from_secs(10), || {
        old_workers.iter().all(|w| !alive(*w))
    });
    let mut conns = Vec::new();
    for _ in 0..30 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        conns.push(s);
    }
    let on_new: usize = new_workers
        .iter()
        .map(|w| client_ports_of(*w, &[port]).len())
        .sum();
    assert_eq!(on_new, 30, "after the commit the new workers accept");
}

/// `rproxy ctl -c CONFIG WORDS...` against the proxy's control socket.
fn ctl(p: &Proxy, words: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg("ctl")
        .arg("-c")
        .arg(&p.config)
        .args(words)
        .env("RPROXY_CONTROL_SOCKET", p.dir.join("ctl.sock"))
        .output()
        .unwrap()
}

fn ctl_ok(p: &Proxy, words: &[&str]) -> String {
    let o = ctl(p, words);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "ctl {words:?}: {text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    text
}

/// The status line and body of `GET /metrics` on `port`.
fn metrics_text(port: u16) -> String {
    let raw = raw_response(
        port,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    String::from_utf8_lossy(&raw).into_owned()
}

/// What DESIGN 12's operations keep across `rproxy ctl upgrade --wait`: the control socket
/// (the same file, now answered by the new master, removed by it at exit), the metrics
/// listener (the same port, no bind conflict), and a downstream the operator put in `maint`
/// (it stays out of rotation in the new tree).
#[test]
fn ctl_upgrade_keeps_the_control_socket_metrics_and_downstream_states() {
    let (a, b) = (Backend::start("x"), Backend::start("x"));
    let port = free_port();
    let mport = free_port();
    let dir = temp_dir("upgrade-ctl");
    let pid_file = dir.join("rproxy.pid");
    let cfg = format!(
        "{}workers = 2\nshutdown-timeout = 5\npid-file = \"{}\"\n\
         metrics-listen = \"127.0.0.1:{mport}\"\n\
         [[server]]\naddr = \"127.0.0.1\"\nport = {port}\nlb-method = \"roundrobin\"\n\
         [[server.downstream]]\nname = \"a\"\naddr = \"127.0.0.1\"\nport = {}\n\
         [[server.downstream]]\nname = \"b\"\naddr = \"127.0.0.1\"\nport = {}\n",
        identity(),
        pid_file.display(),
        a.port,
        b.port
    );
    let p = Proxy::start("upgrade-ctl", &cfg, port);
    let mut masters = Masters(vec![p.pid()]);
    let old = p.pid();
    let said = ctl_ok(
        &p,
        &["set", "downstream", &format!("127.0.0.1:{port}/b"), "maint"],
    );
    assert!(said.contains("applied by 2 workers"), "{said}");
    assert!(metrics_text(mport).starts_with("HTTP/1.1 200"));

    let load = Load::start(p.url("/"), 4, b"x");
    wait_until("load running", Duration::from_secs(5), || load.ok() >= 4);
    let said = ctl_ok(&p, &["upgrade", "--wait"]);
    let new = pid_in(&pid_file).unwrap_or(old);
    assert_ne!(new, old, "the pid file names the new master");
    masters.0.push(new);
    assert!(said.contains(&format!("pid {new}")), "{said}");
    wait_until("the old master exits", Duration::from_secs(15), || {
        !alive(old)
    });
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "requests failed across the upgrade ({ok} ok)");

    // The new master answers on the same socket and kept b in maint.
    let info: serde_json::Value =
        serde_json::from_str(&ctl_ok(&p, &["show", "info", "--json"])).unwrap();
    assert_eq!(info["pid"], new);
    let ds: serde_json::Value =
        serde_json::from_str(&ctl_ok(&p, &["show", "downstreams", "--json"])).unwrap();
    assert_eq!(ds[1]["admin"], "maint", "{ds}");
    let before = b.hits();
    for _ in 0..20 {
        assert_eq!(get(port, "/").0, 200);
    }
    assert_eq!(b.hits(), before, "b got requests after the upgrade");
    // Metrics: the same port serves, so does `ctl metrics`.
    let text = metrics_text(mport);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("rproxy_requests_total"), "{text}");
    assert!(ctl_ok(&p, &["metrics"]).contains("rproxy_requests_total"));

    // The new master removes the socket file at its exit.
    // SAFETY: signalling the master this test's upgrade started.
    unsafe { libc::kill(new, libc::SIGQUIT) };
    wait_until("the new master exits", Duration::from_secs(10), || {
        !alive(new)
    });
    assert!(
        !p.dir.join("ctl.sock").exists(),
        "the socket file is left behind"
    );
}
