//! What each control command does to the master, and the replies. Runs inside the poll loop:
//! a command either answers at once or leaves its connection waiting ([`super::Wait`]) for
//! something the loop will see (a reload's end, workers' acknowledgements).

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::PollFlags;
use nix::unistd::Pid;
use rproxy_shared::channel::{AdminState, ToWorker};
use rproxy_shared::config::Config;
use rproxy_shared::{error, info, warn};
use serde_json::{json, Value};

use super::conn::{Conn, Input};
use super::protocol::{self, Admin, Command, Http, Parsed, Request, Status};
use super::socket::{self, Peer};
use super::{Pending, ReloadResult, Wait, ACK_TIMEOUT, MAX_CONNS};
use crate::generation::{GenState, WorkerState};
use crate::supervisor::Master;

/// What a command gives back at once.
enum Outcome {
    Reply(Vec<u8>),
    Wait(Wait),
}

fn ok(body: String) -> Outcome {
    Outcome::Reply(protocol::reply(Status::Ok, &body))
}

fn failed(body: String) -> Outcome {
    Outcome::Reply(protocol::reply(Status::Error, &body))
}

/// `(server index, downstream index, state)` of every operator state that `config` has a
/// downstream for, for a generation's workers.
pub fn admin_for(
    admin: &std::collections::BTreeMap<(String, String), AdminState>,
    config: &Config,
) -> Vec<(usize, usize, AdminState)> {
    let mut out = Vec::new();
    for (si, s) in config.servers.iter().enumerate() {
        let server = s.listen.to_string();
        for (di, d) in s.downstreams.iter().enumerate() {
            if let Some(&st) = admin.get(&(server.clone(), d.name.clone())) {
                if d.enabled {
                    out.push((si, di, st));
                }
            }
        }
    }
    out
}

/// `(server index, downstream index)` of `server`/`name` in `config`.
fn find(config: &Config, server: &str, name: &str) -> Option<(usize, usize)> {
    config.servers.iter().enumerate().find_map(|(si, s)| {
        if s.listen.to_string() != server {
            return None;
        }
        s.downstreams
            .iter()
            .position(|d| d.name == name)
            .map(|di| (si, di))
    })
}

fn admin_state(a: Admin) -> AdminState {
    match a {
        Admin::Ready => AdminState::Ready,
        Admin::Drain => AdminState::Drain,
        Admin::Maint => AdminState::Maint,
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An instant in the past as wall-clock time.
fn wall(then: Instant, now: Instant) -> u64 {
    unix_secs(SystemTime::now() - now.duration_since(then))
}

impl Master {
    /// One turn of the control socket: `events` are the poll results for
    /// [`super::Control::poll_fds`], in that order.
    pub(crate) fn serve_control(&mut self, events: &[PollFlags]) {
        let now = Instant::now();
        // Connections are added and removed only below, but a reload may have opened or
        // closed the listener since the poll: then these events describe other descriptors,
        // and this turn only runs the timers (the next poll is at most a tick away).
        let expected = usize::from(self.control.bound.is_some()) + self.control.conns.len();
        let events = if events.len() == expected {
            events
        } else {
            &[]
        };
        let mut events = events.iter().copied();
        if self.control.bound.is_some() && events.next().is_some_and(|e| !e.is_empty()) {
            self.accept_control(now);
        }
        let mut requests = Vec::new();
        for (c, ev) in self.control.conns.iter_mut().zip(events) {
            if ev.is_empty() {
                continue;
            }
            match c.state {
                super::conn::State::Reading => {
                    if let Input::Request(p) = c.on_readable(now) {
                        if c.allowed {
                            requests.push((c.id, c.peer, p));
                        } else {
                            c.respond(protocol::reply(Status::Error, "permission denied"), now);
                        }
                    }
                }
                super::conn::State::Writing => c.on_writable(),
                _ => {
                    if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                        c.on_hangup();
                    }
                }
            }
        }
        for (id, peer, p) in requests {
            match self.execute(peer, p) {
                Outcome::Reply(bytes) => self.control.answer(id, bytes),
                Outcome::Wait(w) => self.control.waits.push((id, w)),
            }
        }
        self.finish_acks(now);
        self.finish_upgrade_waits();
        self.control.sweep(now);
    }

    fn accept_control(&mut self, now: Instant) {
        // Bounded per turn, so a connection storm cannot hold the loop.
        for _ in 0..MAX_CONNS * 2 {
            let Some(b) = &self.control.bound else { return };
            let stream: UnixStream = match b.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("control socket: accept: {e}");
                    return;
                }
            };
            if self.control.conns.len() >= MAX_CONNS {
                // Closed at once: the peer sees the end of the stream.
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let peer = match socket::peer(&stream) {
                Ok(p) => p,
                Err(e) => {
                    warn!("control socket: {e}");
                    continue;
                }
            };
            let id = self.control.next_conn_id();
            let allowed = socket::allowed(peer);
            if !allowed {
                warn!(
                    "control socket: refused uid {} pid {} (only root and uid {} may use it)",
                    peer.uid,
                    peer.pid,
                    nix::unistd::geteuid()
                );
            }
            // A refused peer is answered after its request line, like any other: closing
            // before reading it would leave the peer a reset instead of the answer.
            self.control
                .conns
                .push(Conn::new(id, stream, peer, allowed, now));
        }
    }

    fn execute(&mut self, peer: Peer, p: Parsed) -> Outcome {
        let Request { command, json } = match p {
            Parsed::Line(r) => r,
            Parsed::Http(h) => {
                return Outcome::Reply(http_reply(h, || crate::metrics::render(&mut self.metrics)))
            }
        };
        if command.mutates() {
            info!(
                "control: {} (uid {} pid {})",
                describe(&command),
                peer.uid,
                peer.pid
            );
        }
        match command {
            Command::ShowInfo => ok(self.show_info(json)),
            Command::ShowWorkers => ok(self.show_workers(json)),
            Command::ShowDownstreams => ok(self.show_downstreams(json)),
            Command::SetDownstream {
                server,
                name,
                state,
            } => self.set_downstream(&server, &name, admin_state(state)),
            Command::Reload { wait } => self.control_reload(wait),
            Command::Reopen => {
                self.reopen_logs();
                ok(format!(
                    "log files reopened; new descriptors sent to {} workers",
                    self.reopen_pending
                ))
            }
            Command::Upgrade { wait } => match self.start_upgrade() {
                Err(e) => failed(format!("upgrade refused: {e}")),
                Ok(_) if !wait => ok("upgrade started; `show info` names the new master".into()),
                Ok(attempt) => match self.upgrade_outcome(attempt) {
                    Some(o) => Outcome::Reply(upgrade_reply(o)),
                    None => Outcome::Wait(Wait::Upgrade { attempt }),
                },
            },
            Command::Metrics => ok(crate::metrics::render(&mut self.metrics)),
        }
    }

    /// Answer the `upgrade --wait` connections whose attempt is decided.
    fn finish_upgrade_waits(&mut self) {
        let decided: Vec<(u64, Vec<u8>)> = self
            .control
            .waits
            .iter()
            .filter_map(|(id, w)| match w {
                Wait::Upgrade { attempt } => self
                    .upgrade_outcome(*attempt)
                    .map(|o| (*id, upgrade_reply(o))),
                _ => None,
            })
            .collect();
        for (id, bytes) in decided {
            self.control.answer(id, bytes);
        }
    }

    fn show_info(&self, json: bool) -> String {
        let now = Instant::now();
        let state = if self.stop.is_some() {
            "stopping"
        } else if self.gens.iter().any(|g| g.state == GenState::Starting) {
            "reloading"
        } else {
            "serving"
        };
        let serving = self.gens.iter().find(|g| g.id == self.current);
        let slots = serving.map_or(0, |g| g.slots.len());
        let ready = serving.map_or(0, |g| {
            g.workers
                .iter()
                .filter(|w| w.state == WorkerState::Ready)
                .count()
        });
        let total = self.workers().count();
        let uptime = now.duration_since(self.control.started).as_secs();
        let socket = self
            .control
            .bound
            .as_ref()
            .map(|b| b.path.display().to_string());
        let last = self.control.last_reload.as_ref().map(|r| {
            let ago = SystemTime::now()
                .duration_since(r.at)
                .unwrap_or(Duration::ZERO)
                .as_secs();
            (r, ago)
        });
        if json {
            let v = json!({
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "started": unix_secs(self.control.started_wall),
                "uptime_seconds": uptime,
                "config": self.config_path.display().to_string(),
                "control_socket": socket,
                "state": state,
                "generation": self.current,
                "workers": { "configured": slots, "ready": ready, "total": total },
                "last_reload": last.map(|(r, ago)| json!({
                    "ok": r.errors.is_none(),
                    "at": unix_secs(r.at),
                    "seconds_ago": ago,
                    "errors": r.errors.clone().unwrap_or_default(),
                })),
            });
            return v.to_string();
        }
        let mut out = format!(
            "version: {}\npid: {}\nuptime: {uptime} s\nconfig: {}\ncontrol-socket: {}\n\
             state: {state}\ngeneration: {}\nworkers: {ready} ready of {slots}; \
             {total} worker processes in all (with starting and draining ones)\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            self.config_path.display(),
            socket.as_deref().unwrap_or("-"),
            self.current,
        );
        match last {
            None => out.push_str("last reload: none\n"),
            Some((r, ago)) => match &r.errors {
                None => out.push_str(&format!("last reload: ok, {ago} s ago\n")),
                Some(errs) => {
                    out.push_str(&format!("last reload: failed, {ago} s ago\n"));
                    for e in errs {
                        out.push_str(&format!("  {e}\n"));
                    }
                }
            },
        }
        out
    }

    fn show_workers(&self, json: bool) -> String {
        let now = Instant::now();
        let mut rows = Vec::new();
        for g in &self.gens {
            let gstate = match g.state {
                GenState::Starting => "starting",
                GenState::Active => "serving",
                GenState::Draining { .. } => "draining",
            };
            for w in &g.workers {
                let state = match w.state {
                    WorkerState::Starting => "starting",
                    WorkerState::Ready => "ready",
                    WorkerState::Draining => "draining",
                    WorkerState::Killed { .. } => "killed",
                };
                rows.push(json!({
                    "pid": w.pid.as_raw(),
                    "generation": g.id,
                    "generation_state": gstate,
                    "state": state,
                    "slot": w.slot,
                    "started": wall(w.started, now),
                    "uptime_seconds": now.duration_since(w.started).as_secs(),
                    "last_heartbeat_ms": now.duration_since(w.last_beat).as_millis() as u64,
                }));
            }
        }
        if json {
            return Value::Array(rows).to_string();
        }
        let mut out = format!(
            "{:<8} {:<5} {:<10} {:<9} {:<5} {:<10} {:>8} {:>9}\n",
            "PID", "GEN", "GEN-STATE", "STATE", "SLOT", "STARTED", "UPTIME", "HEARTBEAT"
        );
        for r in rows {
            // Values as text, so the column widths apply.
            let f = |k: &str| match &r[k] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            out.push_str(&format!(
                "{:<8} {:<5} {:<10} {:<9} {:<5} {:<10} {:>7}s {:>7}ms\n",
                f("pid"),
                f("generation"),
                f("generation_state"),
                f("state"),
                f("slot"),
                f("started"),
                f("uptime_seconds"),
                f("last_heartbeat_ms"),
            ));
        }
        out
    }

    fn show_downstreams(&self, json: bool) -> String {
        let mut rows = Vec::new();
        if let Some(g) = self.gens.iter().find(|g| g.id == self.current) {
            for s in &g.config.servers {
                let server = s.listen.to_string();
                for d in &s.downstreams {
                    let admin = if !d.enabled {
                        "disabled"
                    } else {
                        self.control
                            .admin
                            .get(&(server.clone(), d.name.clone()))
                            .map_or("ready", |a| a.name())
                    };
                    rows.push(json!({
                        "server": server,
                        "name": d.name,
                        "address": d.addr.to_string(),
                        "admin": admin,
                    }));
                }
            }
        }
        if json {
            return Value::Array(rows).to_string();
        }
        let mut out = format!(
            "{:<22} {:<24} {:<22} {}\n",
            "SERVER", "NAME", "ADDRESS", "ADMIN"
        );
        for r in rows {
            let f = |k: &str| r[k].as_str().unwrap_or("-").to_string();
            out.push_str(&format!(
                "{:<22} {:<24} {:<22} {}\n",
                f("server"),
                f("name"),
                f("address"),
                f("admin")
            ));
        }
        out
    }

    fn set_downstream(&mut self, server: &str, name: &str, state: AdminState) -> Outcome {
        let Some(g) = self.gens.iter().find(|g| g.id == self.current) else {
            return failed("no serving configuration".into());
        };
        let Some((si, di)) = find(&g.config, server, name) else {
            return failed(format!(
                "no downstream `{name}` on server {server} in the serving configuration \
                 (`show downstreams` lists them)"
            ));
        };
        if !g.config.servers[si].downstreams[di].enabled {
            return failed(format!(
                "downstream {server}/{name} is disabled in the configuration (enabled = false)"
            ));
        }
        let key = (server.to_string(), name.to_string());
        if state == AdminState::Ready {
            self.control.admin.remove(&key);
        } else {
            self.control.admin.insert(key, state);
        }
        let seq = self.control.next_seq();
        let mut waiting = Vec::new();
        for g in &mut self.gens {
            // Workers forked for this generation from now on start with it.
            g.admin = admin_for(&self.control.admin, &g.config);
            let Some((si, di)) = find(&g.config, server, name) else {
                continue;
            };
            let m = ToWorker::SetAdmin {
                seq,
                server: si as u32,
                downstream: di as u32,
                state,
            };
            for w in g.workers.iter().filter(|w| !w.is_killed()) {
                if let Some(chan) = &w.channel {
                    match chan.send(&m) {
                        Ok(()) => waiting.push(w.pid),
                        Err(e) => warn!("control: sending to worker {}: {e}", w.pid),
                    }
                }
            }
        }
        let what = format!("downstream {server}/{name}: {}", state.name());
        if waiting.is_empty() {
            return ok(format!("{what} (no worker running to apply it now)"));
        }
        self.control.pending.push(Pending {
            seq,
            what,
            waiting,
            applied: Vec::new(),
            refused: Vec::new(),
            deadline: Instant::now() + ACK_TIMEOUT,
        });
        Outcome::Wait(Wait::Acks { seq })
    }

    /// A worker applied (or could not apply) `SetAdmin` number `seq`.
    pub(crate) fn control_ack(&mut self, pid: Pid, seq: u32, applied: bool) {
        if let Some(p) = self.control.pending.iter_mut().find(|p| p.seq == seq) {
            if let Some(i) = p.waiting.iter().position(|&w| w == pid) {
                p.waiting.swap_remove(i);
                if applied {
                    p.applied.push(pid);
                } else {
                    p.refused.push(pid);
                }
            }
        }
        self.finish_acks(Instant::now());
    }

    /// Answer the `set` commands that every worker acknowledged, whose workers are gone, or
    /// whose time is up.
    fn finish_acks(&mut self, now: Instant) {
        let alive: Vec<Pid> = self
            .workers()
            .filter(|w| w.channel.is_some())
            .map(|w| w.pid)
            .collect();
        let (done, open): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.control.pending)
            .into_iter()
            .map(|mut p| {
                // A worker that died meanwhile has nothing left to apply it to.
                p.waiting.retain(|pid| alive.contains(pid));
                p
            })
            .partition(|p| p.waiting.is_empty() || now >= p.deadline);
        self.control.pending = open;
        for p in done {
            let pids = |v: &[Pid]| {
                v.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let bytes = if p.waiting.is_empty() && p.refused.is_empty() {
                protocol::reply(
                    Status::Ok,
                    &format!("{} (applied by {} workers)", p.what, p.applied.len()),
                )
            } else {
                let mut body = format!(
                    "{}: applied by {} workers; kept for workers started from now on\n",
                    p.what,
                    p.applied.len()
                );
                if !p.waiting.is_empty() {
                    body.push_str(&format!(
                        "no answer within {} s from worker(s) {}\n",
                        ACK_TIMEOUT.as_secs(),
                        pids(&p.waiting)
                    ));
                }
                if !p.refused.is_empty() {
                    body.push_str(&format!(
                        "refused by worker(s) {} (their configuration has no such downstream)\n",
                        pids(&p.refused)
                    ));
                }
                protocol::reply(Status::Error, &body)
            };
            let ids: Vec<u64> = self
                .control
                .waits
                .iter()
                .filter(|(_, w)| matches!(w, Wait::Acks { seq } if *seq == p.seq))
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.control.answer(id, bytes.clone());
            }
        }
    }

    fn control_reload(&mut self, wait: bool) -> Outcome {
        if self.stop.is_some() {
            return failed("the daemon is stopping".into());
        }
        let seq = self.control.reloads_started + 1;
        self.reload();
        if !wait {
            return ok("reload started; `show info` has its result".into());
        }
        if self.control.reloads_done >= seq {
            // Failed before a generation was forked: the result is there already.
            return Outcome::Reply(reload_reply(self.control.last_reload.as_ref()));
        }
        Outcome::Wait(Wait::Reload { seq })
    }

    /// A reload began (it gets the next number).
    pub(crate) fn reload_begun(&mut self) {
        self.control.reloads_started += 1;
    }

    /// The reload begun last finished: `None` = it serves, or the errors it failed with.
    pub(crate) fn reload_finished(&mut self, errors: Option<Vec<String>>) {
        let ok = errors.is_none();
        self.control.reloads_done = self.control.reloads_started;
        self.control.last_reload = Some(ReloadResult {
            at: SystemTime::now(),
            errors,
        });
        let done = self.control.reloads_done;
        let bytes = reload_reply(self.control.last_reload.as_ref());
        let ids: Vec<u64> = self
            .control
            .waits
            .iter()
            .filter(|(_, w)| matches!(w, Wait::Reload { seq } if *seq <= done))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.control.answer(id, bytes.clone());
        }
        if ok {
            self.forget_vanished_downstreams();
            self.rebind_control();
        }
    }

    /// Operator states of downstreams the new configuration no longer has are dropped.
    fn forget_vanished_downstreams(&mut self) {
        let Some(g) = self.gens.iter().find(|g| g.id == self.current) else {
            return;
        };
        let config = std::sync::Arc::clone(&g.config);
        self.control.admin.retain(|(server, name), state| {
            let keep = find(&config, server, name).is_some();
            if !keep {
                info!(
                    "control: downstream {server}/{name} is no longer configured: \
                     forgetting its state {}",
                    state.name()
                );
            }
            keep
        });
    }

    /// A reload that changed `control-socket` moves the socket (connections already open
    /// stay); when the new path cannot be bound, the old socket is kept and the error logged.
    fn rebind_control(&mut self) {
        let Some(g) = self.gens.iter().find(|g| g.id == self.current) else {
            return;
        };
        let want = g.config.control_socket.clone();
        let have = self.control.bound.as_ref().map(|b| b.path.clone());
        if want == have {
            return;
        }
        match want {
            None => {
                info!("control socket closed (control-socket = \"\")");
                self.control.bound = None;
            }
            Some(p) => match socket::bind(&p) {
                Ok(b) => {
                    info!("control socket moved to {}", p.display());
                    self.control.bound = Some(b);
                }
                Err(e) => error!("reload: {e}; the control socket stays where it was"),
            },
        }
    }

    /// The workers' start-up states for a generation of `config`.
    pub(crate) fn admin_states(&self, config: &Config) -> Vec<(usize, usize, AdminState)> {
        admin_for(&self.control.admin, config)
    }
}

fn reload_reply(r: Option<&ReloadResult>) -> Vec<u8> {
    match r.and_then(|r| r.errors.as_ref()) {
        None => protocol::reply(Status::Ok, "reload complete: the new configuration serves"),
        Some(errs) => {
            let mut body = String::from("reload failed; the previous configuration serves on\n");
            for e in errs {
                body.push_str(e);
                body.push('\n');
            }
            protocol::reply(Status::Error, &body)
        }
    }
}

fn describe(c: &Command) -> String {
    match c {
        Command::SetDownstream {
            server,
            name,
            state,
        } => format!(
            "set downstream {server}/{name} {}",
            admin_state(*state).name()
        ),
        Command::Reload { wait } => format!("reload{}", if *wait { " --wait" } else { "" }),
        Command::Reopen => "reopen".into(),
        Command::Upgrade { wait } => format!("upgrade{}", if *wait { " --wait" } else { "" }),
        other => format!("{other:?}"),
    }
}

/// `upgrade --wait`'s answer.
fn upgrade_reply(o: &crate::upgrade::Outcome) -> Vec<u8> {
    match o {
        crate::upgrade::Outcome::Committed { new_pid } => protocol::reply(
            Status::Ok,
            &format!("upgraded: the new master is pid {new_pid}; this one drains and exits"),
        ),
        crate::upgrade::Outcome::Failed(why) => {
            protocol::reply(Status::Error, &format!("upgrade failed: {why}"))
        }
    }
}

/// The answer to an HTTP request on the control socket.
fn http_reply(h: Http, render: impl FnOnce() -> String) -> Vec<u8> {
    let metrics;
    let (status, body, head, ctype) = match h {
        Http::Metrics { head } => {
            metrics = render();
            (
                "200 OK",
                metrics.as_str(),
                head,
                crate::metrics::CONTENT_TYPE,
            )
        }
        Http::NotFound => (
            "404 Not Found",
            "only /metrics is served here\n",
            false,
            "text/plain; charset=utf-8",
        ),
        Http::MethodNotAllowed => (
            "405 Method Not Allowed",
            "GET /metrics only\n",
            false,
            "text/plain; charset=utf-8",
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}
