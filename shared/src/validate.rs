//! Semantic checks after deserialization. Every problem is collected (not just the first), each
//! with its key path, and computed fields are filled in as a side effect (resolved downstream
//! addresses, compiled regexes and log formats, the worker count).

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use crate::config::{Compiled, Config, Headers, LogType, Logging, Rewrite, Ssl, Workers};
use crate::load::ConfigError;
use crate::logformat::LogFormat;

struct Errs {
    file: String,
    list: Vec<ConfigError>,
}

impl Errs {
    fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        });
    }

    fn range(&mut self, key: String, value: i64, min: i64, max: i64) {
        if value < min || value > max {
            self.push(key, format!("{value} is out of range ({min}..={max})"));
        }
    }
}

/// Levels accepted in `log-level`, most severe first.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug"];

pub(crate) fn validate(c: &mut Config) -> Vec<ConfigError> {
    let mut e = Errs {
        file: c.source.display().to_string(),
        list: Vec::new(),
    };

    globals(c, &mut e);
    if c.server.is_empty() {
        e.push("server", "at least one [[server]] is required");
    }

    let mut listen_seen: HashMap<SocketAddr, usize> = HashMap::new();
    for (si, s) in c.server.iter_mut().enumerate() {
        let k = format!("server[{si}]");
        match s.addr.parse::<IpAddr>() {
            Ok(ip) => s.listen = SocketAddr::new(ip, 0),
            Err(_) => e.push(
                format!("{k}.addr"),
                format!("`{}` is not an IPv4 or IPv6 address", s.addr),
            ),
        }
        e.range(format!("{k}.port"), s.port, 1, 65535);
        s.listen.set_port(u16::try_from(s.port).unwrap_or(0));
        if s.port > 0 && s.port <= 65535 {
            if let Some(prev) = listen_seen.insert(s.listen, si) {
                e.push(
                    format!("{k}.port"),
                    format!("{} is already used by server[{prev}]", s.listen),
                );
            }
        }
        e.range(format!("{k}.backlog"), s.backlog, 1, 65535);
        if let Some(t) = s.threads {
            e.range(format!("{k}.threads"), t, 1, 1024);
        }
        if s.max_pending > 1_000_000 {
            e.push(format!("{k}.max-pending"), "must be at most 1000000");
        }
        // hyper's smallest read buffer is 8 KiB.
        if s.max_header_size < 8192 || s.max_header_size > 1024 * 1024 {
            e.push(
                format!("{k}.max-header-size"),
                format!("{} is out of range (8192..=1048576)", s.max_header_size),
            );
        }
        s.trusted.clear();
        for (i, t) in s.trusted_proxies.iter().enumerate() {
            match t.parse() {
                Ok(c) => s.trusted.push(c),
                Err(r) => e.push(format!("{k}.trusted-proxies[{i}]"), r),
            }
        }
        headers(&s.headers, &format!("{k}.headers"), &mut e);
        if let Some(ssl) = &s.ssl {
            tls(ssl, &format!("{k}.ssl"), &mut e);
        }
        if let Some(l) = &mut s.logging {
            logging(l, &format!("{k}.logging"), &mut e);
        }

        if s.downstream.is_empty() {
            e.push(
                format!("{k}.downstream"),
                "at least one [[server.downstream]] is required",
            );
        }
        let mut names = HashSet::new();
        for (di, d) in s.downstream.iter_mut().enumerate() {
            let dk = format!("{k}.downstream[{di}]");
            e.range(format!("{dk}.port"), d.port, 1, 65535);
            e.range(format!("{dk}.connections"), d.connections, 1, 10_000);
            if d.high_watermark < 4096 {
                e.push(
                    format!("{dk}.high-watermark"),
                    "must be at least 4096 bytes",
                );
            }
            if d.retry.useconds >= 1_000_000 {
                e.push(format!("{dk}.retry.useconds"), "must be below 1000000");
            }
            if d.retry.seconds == 0 && d.retry.useconds == 0 {
                e.push(
                    format!("{dk}.retry"),
                    "the retry interval must be above zero",
                );
            }
            if let Some(n) = &d.name {
                if n.is_empty() {
                    e.push(format!("{dk}.name"), "must not be empty");
                }
            }
            if !names.insert(d.display_name()) {
                e.push(
                    format!("{dk}.name"),
                    format!("downstream `{}` is defined twice", d.display_name()),
                );
            }
            if (1..=65535).contains(&d.port) {
                match resolve(&d.addr, d.port as u16) {
                    Ok(a) => d.sockaddr = a,
                    Err(r) => e.push(format!("{dk}.addr"), r),
                }
            }
        }
        for (ri, r) in s.rewrite.iter_mut().enumerate() {
            rewrite(r, &format!("{k}.rewrite[{ri}]"), &mut e);
        }
        for (vi, v) in s.vhost.iter_mut().enumerate() {
            let vk = format!("{k}.vhost[{vi}]");
            if v.name.is_empty() {
                e.push(format!("{vk}.name"), "must not be empty");
            }
            if let Some(ssl) = &v.ssl {
                tls(ssl, &format!("{vk}.ssl"), &mut e);
            }
            if let Some(h) = &v.headers {
                headers(h, &format!("{vk}.headers"), &mut e);
            }
            if let Some(l) = &mut v.logging {
                logging(l, &format!("{vk}.logging"), &mut e);
            }
            for (hi, h) in v.strip_headers.iter().enumerate() {
                if !is_token(h) {
                    e.push(
                        format!("{vk}.strip-headers[{hi}]"),
                        format!("`{h}` is not a header name"),
                    );
                }
            }
            for (ri, r) in v.rule.iter_mut().enumerate() {
                let rk = format!("{vk}.rule[{ri}]");
                let n = [&r.uri_match, &r.uri_gmatch, &r.uri_rmatch]
                    .iter()
                    .filter(|m| m.is_some())
                    .count();
                if n != 1 {
                    e.push(
                        rk.clone(),
                        "exactly one of uri-match, uri-gmatch, uri-rmatch is required",
                    );
                }
                if let Some(re) = &r.uri_rmatch {
                    match regex::Regex::new(re) {
                        Ok(re) => r.rmatch = Compiled(Some(re)),
                        Err(err) => e.push(format!("{rk}.uri-rmatch"), bad_regex(&err)),
                    }
                }
                for (i, d) in r.downstreams.iter().enumerate() {
                    if !names.contains(d) {
                        e.push(
                            format!("{rk}.downstreams[{i}]"),
                            format!("no downstream named `{d}` in this server"),
                        );
                    }
                }
                if let Some(rw) = &mut r.rewrite {
                    rewrite(rw, &format!("{rk}.rewrite"), &mut e);
                }
                if let Some(h) = &r.headers {
                    headers(h, &format!("{rk}.headers"), &mut e);
                }
            }
        }
    }

    c.worker_count = worker_count(c, &mut e);
    e.list
}

fn globals(c: &Config, e: &mut Errs) {
    if c.max_nofile < 64 || c.max_nofile > u64::from(u32::MAX) {
        e.push(
            "max-nofile",
            format!("{} is out of range (64..)", c.max_nofile),
        );
    }
    if c.heartbeat_timeout == 0 {
        e.push("heartbeat-timeout", "must be at least 1 second");
    }
    if !LOG_LEVELS.contains(&c.log_level.as_str()) {
        e.push(
            "log-level",
            format!("`{}` is not one of {}", c.log_level, LOG_LEVELS.join(", ")),
        );
    }
    match nix::unistd::User::from_name(&c.user) {
        Ok(Some(_)) => {}
        Ok(None) => e.push("user", format!("no such user `{}`", c.user)),
        Err(err) => e.push("user", format!("cannot look up `{}`: {err}", c.user)),
    }
    match nix::unistd::Group::from_name(&c.group) {
        Ok(Some(_)) => {}
        Ok(None) => e.push("group", format!("no such group `{}`", c.group)),
        Err(err) => e.push("group", format!("cannot look up `{}`: {err}", c.group)),
    }
    if !c.error_log.is_empty() {
        writable("error-log", Path::new(&c.error_log), e);
    }
    if !c.pid_file.is_empty() {
        let p = Path::new(&c.pid_file);
        match p.parent() {
            Some(d) if d.as_os_str().is_empty() || d.is_dir() => {}
            _ => e.push(
                "pid-file",
                format!("directory of {} does not exist", p.display()),
            ),
        }
    }
}

fn worker_count(c: &Config, e: &mut Errs) -> usize {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut count = |n: i64| {
        e.range("workers".into(), n, 1, 1024);
        usize::try_from(n).unwrap_or(1).clamp(1, 1024)
    };
    match &c.workers {
        Some(Workers::Count(n)) => count(*n),
        Some(Workers::Named(s)) if s == "auto" => cpus,
        // An environment override arrives as a string: accept a number there too.
        Some(Workers::Named(s)) => match s.parse::<i64>() {
            Ok(n) => count(n),
            Err(_) => {
                e.push("workers", format!("`{s}` is neither \"auto\" nor a number"));
                1
            }
        },
        None => c
            .server
            .iter()
            .filter_map(|s| s.threads)
            .max()
            .and_then(|t| usize::try_from(t).ok())
            .map(|t| t.clamp(1, 1024))
            .unwrap_or(cpus),
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("host name `{host}` has no address")),
        Err(err) => Err(format!("cannot resolve `{host}`: {err}")),
    }
}

fn rewrite(r: &mut Rewrite, k: &str, e: &mut Errs) {
    match regex::Regex::new(&r.src) {
        Ok(re) => r.regex = Compiled(Some(re)),
        Err(err) => e.push(format!("{k}.src"), bad_regex(&err)),
    }
    if !r.dst.starts_with('/') {
        e.push(format!("{k}.dst"), "must start with `/`");
    }
}

fn bad_regex(err: &regex::Error) -> String {
    // The regex crate's message spans several lines; keep the error on one.
    let msg = err.to_string().replace('\n', " ");
    format!("invalid regular expression: {msg}")
}

fn headers(h: &Headers, k: &str, e: &mut Errs) {
    for (i, x) in h.x509_extension.iter().enumerate() {
        if !is_token(&x.name) {
            e.push(
                format!("{k}.x509-extension[{i}].name"),
                format!("`{}` is not a header name", x.name),
            );
        }
        if openssl::asn1::Asn1Object::from_str(&x.oid).is_err() {
            e.push(
                format!("{k}.x509-extension[{i}].oid"),
                format!("`{}` is not an object identifier", x.oid),
            );
        }
    }
}

fn tls(ssl: &Ssl, k: &str, e: &mut Errs) {
    for (key, reason) in crate::tls_check::check(ssl) {
        e.push(format!("{k}.{key}"), reason);
    }
}

fn logging(l: &mut Logging, k: &str, e: &mut Errs) {
    match LogFormat::compile(&l.format) {
        Ok(f) => l.compiled = Compiled(Some(Arc::new(f))),
        Err(r) => e.push(format!("{k}.format"), r),
    }
    if crate::config::facility_code(&l.facility).is_none() {
        e.push(
            format!("{k}.facility"),
            format!("`{}` is not a syslog facility", l.facility),
        );
    }
    if !l.enabled {
        return;
    }
    match l.kind {
        LogType::File => match &l.filename {
            Some(f) => writable(&format!("{k}.filename"), f, e),
            None => e.push(format!("{k}.filename"), "required when type = \"file\""),
        },
        LogType::Syslog => {}
    }
}

/// Log paths are opened (and created) the way the master will open them.
fn writable(k: &str, p: &Path, e: &mut Errs) {
    if let Err(err) = OpenOptions::new().append(true).create(true).open(p) {
        e.push(k, format!("cannot open {} for writing: {err}", p.display()));
    }
}

fn is_token(s: &str) -> bool {
    crate::token::is_token(s.as_bytes())
}
