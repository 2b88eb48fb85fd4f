//! Semantic checks after deserialization, turning the file schema into the runtime
//! configuration. Every problem is collected (not just the first), each with its key path; a
//! [`Config`] is returned only when there is none. While checking, a value that failed is
//! replaced by a placeholder so the rest can still be checked; placeholders never escape,
//! because any error discards the whole result.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::LogType;
use crate::config::{
    Alpn, Config, Downstream, Headers, LogSink, Logging, Rewrite, Rule, Server, SessionCache, Ssl,
    TlsVersion, UriMatch, Vhost, X509Extension,
};
use crate::load::ConfigError;
use crate::logformat::LogFormat;
use crate::schema::{self, File, Workers};

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

    /// `value` as a `T` within `min..=max`, or an error and `None`.
    fn range<T: TryFrom<i64>>(&mut self, key: String, value: i64, min: i64, max: i64) -> Option<T> {
        if value < min || value > max {
            self.push(key, format!("{value} is out of range ({min}..={max})"));
            return None;
        }
        T::try_from(value).ok()
    }

    /// An unsigned `value` as a `T` within `min..=max`.
    fn urange<T: TryFrom<u64>>(
        &mut self,
        key: String,
        value: u64,
        min: u64,
        max: u64,
    ) -> Option<T> {
        if value < min || value > max {
            self.push(key, format!("{value} is out of range ({min}..={max})"));
            return None;
        }
        T::try_from(value).ok()
    }
}

/// Seconds, with 0 meaning "none".
fn secs_or_none(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

/// Check `f` (loaded from `source`) and build the runtime configuration, or every error.
pub(crate) fn validate(f: File, source: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut e = Errs {
        file: source.display().to_string(),
        list: Vec::new(),
    };
    let config = build(f, source, &mut e);
    if e.list.is_empty() {
        Ok(config)
    } else {
        Err(e.list)
    }
}

fn build(f: File, source: &Path, e: &mut Errs) -> Config {
    globals(&f, e);
    if f.server.is_empty() {
        e.push("server", "at least one [[server]] is required");
    }
    let memtrim = match f.memtrim_sz {
        0 => None,
        n => e.urange(
            "memtrim-sz".into(),
            n,
            1,
            u64::from(i32::MAX.unsigned_abs()),
        ),
    };
    let workers = worker_count(&f, e);
    let mut listen_seen: HashMap<SocketAddr, usize> = HashMap::new();
    let servers = f
        .server
        .iter()
        .enumerate()
        .map(|(si, s)| server(s, si, &mut listen_seen, e))
        .collect();
    let metrics_listen = metrics_listen(&f.metrics_listen, &listen_seen, e);
    Config {
        source: PathBuf::from(source),
        daemonize: f.daemonize,
        user: f.user,
        group: f.group,
        max_nofile: f.max_nofile,
        memtrim,
        workers,
        pid_file: (!f.pid_file.is_empty()).then(|| PathBuf::from(f.pid_file)),
        shutdown_timeout: Duration::from_secs(f.shutdown_timeout),
        heartbeat_timeout: Duration::from_secs(f.heartbeat_timeout),
        error_log: (!f.error_log.is_empty()).then(|| PathBuf::from(f.error_log)),
        log_level: f.log_level,
        metrics_listen,
        control_socket: (!f.control_socket.is_empty()).then(|| PathBuf::from(f.control_socket)),
        servers,
    }
}

/// `metrics-listen`: empty, or `ADDR:PORT` (`[v6]:PORT`) with a port, not a server's.
fn metrics_listen(
    v: &str,
    servers: &HashMap<SocketAddr, usize>,
    e: &mut Errs,
) -> Option<SocketAddr> {
    if v.is_empty() {
        return None;
    }
    let addr = match v.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            e.push(
                "metrics-listen",
                format!("`{v}` is not ADDR:PORT (an IP address and a port, `[v6]:PORT`)"),
            );
            return None;
        }
    };
    if addr.port() == 0 {
        e.push("metrics-listen", "the port must not be 0");
        return None;
    }
    if let Some(si) = servers.get(&addr) {
        e.push(
            "metrics-listen",
            format!("{addr} is already used by server[{si}]"),
        );
        return None;
    }
    Some(addr)
}

fn server(
    s: &schema::Server,
    si: usize,
    listen_seen: &mut HashMap<SocketAddr, usize>,
    e: &mut Errs,
) -> Server {
    let k = format!("server[{si}]");
    let ip = match s.addr.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            e.push(
                format!("{k}.addr"),
                format!("`{}` is not an IPv4 or IPv6 address", s.addr),
            );
            IpAddr::from([0, 0, 0, 0])
        }
    };
    let port: Option<u16> = e.range(format!("{k}.port"), s.port, 1, 65535);
    let listen = SocketAddr::new(ip, port.unwrap_or(0));
    if port.is_some() {
        if let Some(prev) = listen_seen.insert(listen, si) {
            e.push(
                format!("{k}.port"),
                format!("{listen} is already used by server[{prev}]"),
            );
        }
    }
    let backlog = e.range(format!("{k}.backlog"), s.backlog, 1, 65535);
    if let Some(t) = s.threads {
        e.range::<u16>(format!("{k}.threads"), t, 1, 1024);
    }
    let max_pending = e.urange(format!("{k}.max-pending"), s.max_pending, 0, 1_000_000);
    // hyper's smallest read buffer is 8 KiB.
    let max_header_size = e.urange(
        format!("{k}.max-header-size"),
        s.max_header_size,
        8192,
        1024 * 1024,
    );
    let mut trusted_proxies = Vec::new();
    for (i, t) in s.trusted_proxies.iter().enumerate() {
        match t.parse() {
            Ok(c) => trusted_proxies.push(c),
            Err(r) => e.push(format!("{k}.trusted-proxies[{i}]"), r),
        }
    }
    let headers = headers(&s.headers, &format!("{k}.headers"), e);
    let ssl = s.ssl.as_ref().and_then(|t| tls(t, &format!("{k}.ssl"), e));
    let logging = s
        .logging
        .as_ref()
        .and_then(|l| logging(l, &format!("{k}.logging"), e));

    if s.downstream.is_empty() {
        e.push(
            format!("{k}.downstream"),
            "at least one [[server.downstream]] is required",
        );
    }
    let downstreams: Vec<Downstream> = s
        .downstream
        .iter()
        .enumerate()
        .map(|(di, d)| downstream(d, &format!("{k}.downstream[{di}]"), e))
        .collect();
    let mut names = HashSet::new();
    for (di, d) in downstreams.iter().enumerate() {
        if !names.insert(d.name.as_str()) {
            e.push(
                format!("{k}.downstream[{di}].name"),
                format!("downstream `{}` is defined twice", d.name),
            );
        }
    }
    let rewrites = s
        .rewrite
        .iter()
        .enumerate()
        .filter_map(|(ri, r)| rewrite(r, &format!("{k}.rewrite[{ri}]"), e))
        .collect();
    let vhosts = s
        .vhost
        .iter()
        .enumerate()
        .map(|(vi, v)| vhost(v, &format!("{k}.vhost[{vi}]"), &downstreams, e))
        .collect();
    let mut seen = HashSet::new();
    for (vi, v) in s.vhost.iter().enumerate() {
        // Host names are case-insensitive: `A.test` and `a.test` are the same vhost.
        if !seen.insert(v.name.to_ascii_lowercase()) {
            e.push(
                format!("{k}.vhost[{vi}].name"),
                format!("another vhost of this server is named `{}`", v.name),
            );
        }
    }
    Server {
        listen,
        backlog: backlog.unwrap_or(1),
        read_timeout: secs_or_none(s.read_timeout),
        write_timeout: secs_or_none(s.write_timeout),
        pending_timeout: Duration::from_secs(s.pending_timeout),
        max_pending: max_pending.unwrap_or(0),
        lb_method: s.lb_method,
        trusted_proxies,
        max_header_size: max_header_size.unwrap_or(8192),
        headers,
        ssl,
        logging,
        downstreams,
        rewrites,
        vhosts,
    }
}

fn downstream(d: &schema::Downstream, dk: &str, e: &mut Errs) -> Downstream {
    let port: Option<u16> = e.range(format!("{dk}.port"), d.port, 1, 65535);
    let connections = e.range(format!("{dk}.connections"), d.connections, 1, 10_000);
    let high_watermark = usize::try_from(d.high_watermark)
        .ok()
        .filter(|&w| w >= 8192);
    if high_watermark.is_none() {
        e.push(
            format!("{dk}.high-watermark"),
            "must be at least 8192 bytes",
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
    if d.name.as_ref().is_some_and(String::is_empty) {
        e.push(format!("{dk}.name"), "must not be empty");
    }
    let name = match &d.name {
        Some(n) => n.clone(),
        None => format!("{}:{}", d.addr, d.port),
    };
    let addr = match port.map(|p| resolve(&d.addr, p)) {
        Some(Ok(a)) => a,
        Some(Err(r)) => {
            e.push(format!("{dk}.addr"), r);
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
        None => SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    Downstream {
        name,
        addr,
        connections: connections.unwrap_or(1),
        high_watermark: high_watermark.unwrap_or(8192),
        read_timeout: secs_or_none(d.read_timeout),
        write_timeout: secs_or_none(d.write_timeout),
        enabled: d.enabled,
        retry: Duration::from_secs(d.retry.seconds) + Duration::from_micros(d.retry.useconds),
    }
}

fn vhost(v: &schema::Vhost, vk: &str, downstreams: &[Downstream], e: &mut Errs) -> Vhost {
    if v.name.is_empty() {
        e.push(format!("{vk}.name"), "must not be empty");
    }
    let ssl = v.ssl.as_ref().and_then(|t| tls(t, &format!("{vk}.ssl"), e));
    let headers = v
        .headers
        .as_ref()
        .map(|h| headers(h, &format!("{vk}.headers"), e));
    let logging = v
        .logging
        .as_ref()
        .and_then(|l| logging(l, &format!("{vk}.logging"), e));
    for (hi, h) in v.strip_headers.iter().enumerate() {
        if !is_token(h) {
            e.push(
                format!("{vk}.strip-headers[{hi}]"),
                format!("`{h}` is not a header name"),
            );
        }
    }
    for (ai, a) in v.aliases.iter().enumerate() {
        if a.is_empty() {
            e.push(format!("{vk}.aliases[{ai}]"), "must not be empty");
        }
    }
    let rules: Vec<Rule> = v
        .rule
        .iter()
        .enumerate()
        .map(|(ri, r)| rule(r, ri, &v.name, &format!("{vk}.rule[{ri}]"), downstreams, e))
        .collect();
    // `{RULE}` and error messages name a rule: two of the same name would be ambiguous.
    let mut seen = HashSet::new();
    for (ri, r) in rules.iter().enumerate() {
        if !seen.insert(r.name.as_str()) {
            e.push(
                format!("{vk}.rule[{ri}].name"),
                format!("another rule of this vhost is named `{}`", r.name),
            );
        }
    }
    Vhost {
        name: v.name.clone(),
        aliases: v.aliases.clone(),
        strip_headers: v.strip_headers.clone(),
        ssl,
        headers,
        logging,
        rules,
    }
}

fn rule(
    r: &schema::Rule,
    index: usize,
    vhost: &str,
    rk: &str,
    downstreams: &[Downstream],
    e: &mut Errs,
) -> Rule {
    let uri = match (&r.uri_match, &r.uri_gmatch, &r.uri_rmatch) {
        (Some(p), None, None) => UriMatch::Exact(p.clone()),
        (None, Some(g), None) => {
            if let Some(why) = crate::glob::bad_path_glob(g) {
                e.push(format!("{rk}.uri-gmatch"), why);
            }
            UriMatch::Glob(g.clone())
        }
        (None, None, Some(re)) => match regex::Regex::new(re) {
            Ok(re) => UriMatch::Regex(re),
            Err(err) => {
                e.push(format!("{rk}.uri-rmatch"), bad_regex(&err));
                UriMatch::Exact(String::new())
            }
        },
        _ => {
            e.push(
                rk.to_string(),
                "exactly one of uri-match, uri-gmatch, uri-rmatch is required",
            );
            UriMatch::Exact(String::new())
        }
    };
    let mut members = Vec::new();
    for (i, d) in r.downstreams.iter().enumerate() {
        match downstreams.iter().position(|x| &x.name == d) {
            Some(p) => members.push(p),
            None => e.push(
                format!("{rk}.downstreams[{i}]"),
                format!("no downstream named `{d}` in this server"),
            ),
        }
    }
    Rule {
        name: r.name.clone().unwrap_or_else(|| format!("{vhost}#{index}")),
        uri,
        downstreams: members,
        lb_method: r.lb_method,
        rewrite: r
            .rewrite
            .as_ref()
            .and_then(|rw| rewrite(rw, &format!("{rk}.rewrite"), e)),
        passthrough: r.passthrough,
        upstream_read_timeout: secs_or_none(r.upstream_read_timeout),
        upstream_write_timeout: secs_or_none(r.upstream_write_timeout),
        headers: r
            .headers
            .as_ref()
            .map(|h| headers(h, &format!("{rk}.headers"), e)),
    }
}

fn globals(c: &File, e: &mut Errs) {
    if c.max_nofile < 64 || c.max_nofile > u64::from(u32::MAX) {
        e.push(
            "max-nofile",
            format!("{} is out of range (64..)", c.max_nofile),
        );
    }
    if c.heartbeat_timeout == 0 {
        e.push("heartbeat-timeout", "must be at least 1 second");
    }
    match nix::unistd::User::from_name(&c.user) {
        // Workers are the part facing the network: they must never keep root (DESIGN 11).
        Ok(Some(u)) if u.uid.is_root() => e.push(
            "user",
            format!(
                "`{}` is root: workers must run as an unprivileged user",
                c.user
            ),
        ),
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
    if !c.control_socket.is_empty() {
        control_socket(Path::new(&c.control_socket), e);
    }
    if !c.pid_file.is_empty() {
        // The same checks as log files: the master opens it the same way (no link, regular).
        writable("pid-file", Path::new(&c.pid_file), e);
    }
}

/// `control-socket`: a path the master can bind (`sun_path` holds 107 bytes and a NUL) that
/// does not depend on the master's working directory, and nothing but a socket in its place:
/// the master replaces a stale socket, never a file. The directory is not checked (`-t`
/// creates nothing, and systemd's `RuntimeDirectory=` creates it only when the unit starts).
fn control_socket(p: &Path, e: &mut Errs) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    const K: &str = "control-socket";
    if !p.is_absolute() {
        e.push(
            K,
            format!(
                "`{}` is not an absolute path (\"\" disables the control socket)",
                p.display()
            ),
        );
        return;
    }
    if p.as_os_str().as_bytes().len() > 107 {
        e.push(
            K,
            format!(
                "{} is longer than 107 bytes (the limit of a Unix socket path)",
                p.display()
            ),
        );
        return;
    }
    match std::fs::symlink_metadata(p) {
        Ok(m) if !m.file_type().is_socket() => e.push(
            K,
            format!(
                "{} exists and is not a socket (rproxy only replaces a stale socket)",
                p.display()
            ),
        ),
        _ => {}
    }
}

fn worker_count(c: &File, e: &mut Errs) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match &c.workers {
        Some(Workers::Count(n)) => e.range("workers".into(), *n, 1, 1024).unwrap_or(1),
        Some(Workers::Named(s)) if s == "auto" => cpus,
        // An environment override arrives as a string: accept a number there too.
        Some(Workers::Named(s)) => match s.parse::<i64>() {
            Ok(n) => e.range("workers".into(), n, 1, 1024).unwrap_or(1),
            Err(_) => {
                e.push("workers", format!("`{s}` is neither \"auto\" nor a number"));
                1
            }
        },
        // `threads` was range-checked with its server (1..=1024).
        None => c
            .server
            .iter()
            .filter_map(|s| s.threads)
            .max()
            .and_then(|t| usize::try_from(t).ok())
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

fn rewrite(r: &schema::Rewrite, k: &str, e: &mut Errs) -> Option<Rewrite> {
    if !r.dst.starts_with('/') {
        e.push(format!("{k}.dst"), "must start with `/`");
    }
    match regex::Regex::new(&r.src) {
        Ok(src) => Some(Rewrite {
            src,
            dst: r.dst.clone(),
        }),
        Err(err) => {
            e.push(format!("{k}.src"), bad_regex(&err));
            None
        }
    }
}

fn bad_regex(err: &regex::Error) -> String {
    // The regex crate's message spans several lines; keep the error on one.
    let msg = err.to_string().replace('\n', " ");
    format!("invalid regular expression: {msg}")
}

fn headers(h: &schema::Headers, k: &str, e: &mut Errs) -> Headers {
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
    Headers {
        x_forwarded_for: h.x_forwarded_for,
        x_forwarded_proto: h.x_forwarded_proto,
        x_ssl_subject: h.x_ssl_subject,
        x_ssl_issuer: h.x_ssl_issuer,
        x_ssl_notbefore: h.x_ssl_notbefore,
        x_ssl_notafter: h.x_ssl_notafter,
        x_ssl_serial: h.x_ssl_serial,
        x_ssl_sha1: h.x_ssl_sha1,
        x_ssl_cipher: h.x_ssl_cipher,
        x_ssl_certificate: h.x_ssl_certificate,
        x509_extensions: h
            .x509_extension
            .iter()
            .map(|x| X509Extension {
                name: x.name.to_ascii_lowercase(),
                oid: x.oid.clone(),
            })
            .collect(),
    }
}

/// The checks of `tls_check.rs`, then the runtime form when the section is enabled.
fn tls(ssl: &schema::Ssl, k: &str, e: &mut Errs) -> Option<Ssl> {
    let before = e.list.len();
    for (key, reason) in crate::tls_check::check(ssl) {
        e.push(format!("{k}.{key}"), reason);
    }
    let protocols = tls_versions(&ssl.protocols_on, &ssl.protocols_off);
    if protocols.is_empty() {
        e.push(
            format!("{k}.protocols-off"),
            "no TLS protocol version is left enabled",
        );
    }
    let alpn = ssl
        .alpn
        .iter()
        .filter_map(|a| match a.as_str() {
            "h2" => Some(Alpn::H2),
            "http/1.1" => Some(Alpn::Http11),
            _ => None, // reported by tls_check
        })
        .collect();
    let cache_size = e.urange(format!("{k}.cache-size"), ssl.cache_size, 1, 10_000_000);
    if !ssl.enabled || e.list.len() > before {
        return None;
    }
    Some(Ssl {
        cert: ssl.cert.clone()?,
        key: ssl.key.clone()?,
        ca: ssl.ca.clone(),
        capath: ssl.capath.clone(),
        crl: ssl.crl.clone(),
        ciphers: ssl.ciphers.clone(),
        ciphersuites: ssl.ciphersuites.clone(),
        protocols,
        verify_peer: ssl.verify_peer,
        enforce_peer_cert: ssl.enforce_peer_cert,
        verify_depth: ssl.verify_depth,
        context_timeout: Duration::from_secs(ssl.context_timeout),
        cache: ssl.cache_enabled.then(|| SessionCache {
            size: cache_size.unwrap_or(1),
            timeout: Duration::from_secs(ssl.cache_timeout),
        }),
        tickets: ssl.tickets,
        alpn,
        ticket_key_file: ssl.ticket_key_file.clone(),
    })
}

/// Enabled versions: `protocols-on` (default TLSv1.2 and TLSv1.3) minus `protocols-off`.
/// `ALL` stands for every version; SSLv2/SSLv3 can only be named off (never on).
fn tls_versions(on: &[String], off: &[String]) -> Vec<TlsVersion> {
    fn named(n: &str) -> &'static [TlsVersion] {
        use TlsVersion::*;
        match n {
            "TLSv1" => &[Tls1_0],
            "TLSv1.1" => &[Tls1_1],
            "TLSv1.2" => &[Tls1_2],
            "TLSv1.3" => &[Tls1_3],
            "ALL" => &[Tls1_0, Tls1_1, Tls1_2, Tls1_3],
            _ => &[],
        }
    }
    let mut v: Vec<TlsVersion> = if on.is_empty() {
        vec![TlsVersion::Tls1_2, TlsVersion::Tls1_3]
    } else {
        on.iter().flat_map(|n| named(n).iter().copied()).collect()
    };
    for n in off {
        v.retain(|x| !named(n).contains(x));
    }
    v.sort_unstable();
    v.dedup();
    v
}

fn logging(l: &schema::Logging, k: &str, e: &mut Errs) -> Option<Logging> {
    let format = match LogFormat::compile(&l.format) {
        Ok(f) => Some(Arc::new(f)),
        Err(r) => {
            e.push(format!("{k}.format"), r);
            None
        }
    };
    if !l.enabled {
        return None;
    }
    let sink = match l.kind {
        LogType::File => match &l.filename {
            Some(f) => {
                writable(&format!("{k}.filename"), f, e);
                LogSink::File(f.clone())
            }
            None => {
                e.push(format!("{k}.filename"), "required when type = \"file\"");
                return None;
            }
        },
        LogType::Syslog => LogSink::Syslog {
            socket: l.syslog_socket.clone(),
            facility: l.facility,
        },
    };
    Some(Logging {
        sink,
        format: format?,
    })
}

/// Whether the master will be able to open log (or pid) file `p` (DESIGN section 11: no symbolic link,
/// a regular file), without creating or changing anything (`-t` creates no file): an existing
/// file is opened for appending and closed; for a new one, its directory must be writable.
fn writable(k: &str, p: &Path, e: &mut Errs) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => e.push(
            k,
            format!(
                "{} is a symbolic link (log files are opened without following links)",
                p.display()
            ),
        ),
        Ok(m) if !m.is_file() => e.push(k, format!("{} is not a regular file", p.display())),
        Ok(_) => {
            if let Err(err) = OpenOptions::new().append(true).open(p) {
                e.push(k, format!("cannot open {} for writing: {err}", p.display()));
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if let Err(err) = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
                e.push(
                    k,
                    format!(
                        "cannot create {}: directory {}: {err}",
                        p.display(),
                        dir.display()
                    ),
                );
            }
        }
        Err(err) => e.push(k, format!("cannot open {}: {err}", p.display())),
    }
}

/// Rules and vhosts that can never be chosen because an earlier one (config order, first match
/// wins) already takes every request they would: `key: warning: ...` lines for `rproxy -t`.
/// Conservative: a warning is certain, but not every unreachable rule is found (a regex is only
/// known to cover another rule when it is a catch-all or matches an exact path).
pub(crate) fn shadow_warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (si, s) in c.servers.iter().enumerate() {
        for (vi, v) in s.vhosts.iter().enumerate() {
            let vk = format!("server[{si}].vhost[{vi}]");
            let names = || std::iter::once(&v.name).chain(&v.aliases);
            let by = s.vhosts[..vi].iter().position(|earlier| {
                names().all(|n| {
                    std::iter::once(&earlier.name)
                        .chain(&earlier.aliases)
                        .any(|g| covers_host(g, n))
                })
            });
            if let Some(p) = by {
                out.push(format!(
                    "{vk}.name: warning: vhost `{}` is unreachable: vhost[{p}] `{}` matches every \
                     name it does and comes first",
                    v.name, s.vhosts[p].name
                ));
            }
            for (ri, r) in v.rules.iter().enumerate() {
                let by = v.rules[..ri]
                    .iter()
                    .position(|earlier| covers_rule(earlier, r));
                if let Some(p) = by {
                    out.push(format!(
                        "{vk}.rule[{ri}]: warning: rule `{}` is unreachable: rule[{p}] `{}` \
                         matches every path it does and comes first",
                        r.name, v.rules[p].name
                    ));
                }
            }
        }
    }
    out
}

fn covers_host(outer: &str, inner: &str) -> bool {
    crate::glob::covers(&outer.to_ascii_lowercase(), &inner.to_ascii_lowercase())
}

/// Regexes known to match every path (which always starts with `/`).
fn is_catch_all_regex(re: &regex::Regex) -> bool {
    matches!(
        re.as_str(),
        "" | "/" | "^/" | ".*" | "^.*" | "^.*$" | "^/.*" | "^/.*$" | "^"
    )
}

fn covers_rule(outer: &Rule, inner: &Rule) -> bool {
    match (&outer.uri, &inner.uri) {
        (UriMatch::Regex(re), _) if is_catch_all_regex(re) => true,
        (UriMatch::Glob(g), _) if g.bytes().all(|b| b == b'*') || g == "/*" => true,
        (UriMatch::Exact(a), UriMatch::Exact(b)) => a == b,
        (UriMatch::Glob(g), UriMatch::Exact(p)) => crate::glob::matches(g, p),
        (UriMatch::Regex(re), UriMatch::Exact(p)) => re.is_match(p),
        (UriMatch::Glob(a), UriMatch::Glob(b)) => crate::glob::covers(a, b),
        _ => false,
    }
}

fn is_token(s: &str) -> bool {
    crate::token::is_token(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::tls_versions;
    use crate::config::TlsVersion::*;
    use crate::config::{Facility, LbMethod, LogSink, UriMatch};
    use std::time::Duration;

    fn load(name: &str, text: &str) -> Result<crate::config::Config, crate::load::ConfigErrors> {
        let dir =
            std::env::temp_dir().join(format!("rproxy-validate-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("rproxy.toml");
        std::fs::write(&p, text).unwrap();
        let r = crate::load::load(&p);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    /// The current user, or `nobody` when that is root (a configuration error).
    fn me() -> String {
        if nix::unistd::getuid().is_root() {
            return "user = \"nobody\"\ngroup = \"nogroup\"\n".to_string();
        }
        let u = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap();
        let g = nix::unistd::Group::from_gid(nix::unistd::getgid())
            .unwrap()
            .unwrap();
        format!("user = \"{}\"\ngroup = \"{}\"\n", u.name, g.name)
    }

    #[test]
    fn root_workers_are_refused() {
        let errs = load("rootuser", "user = \"root\"\n[[server]]\n").unwrap_err();
        assert!(
            errs.0
                .iter()
                .any(|e| e.key == "user" && e.reason.contains("root")),
            "{errs}"
        );
    }

    #[test]
    fn syntax_errors_do_not_quote_the_file() {
        let errs = load("syntax", "root:$6$secret:19000:0:99999:7:::\n").unwrap_err();
        let text = errs.to_string();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("line 1"), "{text}");
    }

    #[test]
    fn log_checks_create_nothing_and_refuse_links() {
        let dir = std::env::temp_dir().join(format!("rproxy-writable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let new = dir.join("new.log");
        let mut e = super::Errs {
            file: String::new(),
            list: Vec::new(),
        };
        super::writable("k", &new, &mut e);
        assert!(e.list.is_empty());
        assert!(!new.exists(), "the check created the file");
        let link = dir.join("link.log");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        super::writable("k", &link, &mut e);
        assert_eq!(e.list.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn runtime_values_from_the_file() {
        let text = format!(
            "{}workers = 3\nshutdown-timeout = 7\nlog-level = \"debug\"\n\
             [[server]]\nport = 8080\nread-timeout = 0\nlb-method = \"most-idle\"\n\
             [server.logging]\ntype = \"syslog\"\nfacility = \"local3\"\n\
             [[server.downstream]]\naddr = \"127.0.0.1\"\nport = 81\nread-timeout = 4\n\
             retry = {{ seconds = 1, useconds = 250000 }}\n\
             [[server.downstream]]\nname = \"b\"\naddr = \"127.0.0.1\"\nport = 82\n\
             [[server.vhost]]\nname = \"*.test\"\n\
             [[server.vhost.rule]]\nuri-match = \"/x\"\ndownstreams = [\"b\"]\n",
            me()
        );
        let c = load("values", &text).unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(7));
        assert_eq!(c.log_level, crate::errlog::Level::Debug);
        assert_eq!(c.pid_file, None);
        let s = &c.servers[0];
        assert_eq!(s.listen.port(), 8080);
        assert_eq!(s.read_timeout, None);
        assert_eq!(s.write_timeout, Some(Duration::from_secs(32)));
        assert_eq!(s.lb_method, LbMethod::MostIdle);
        let l = s.logging.as_ref().unwrap();
        assert!(matches!(
            l.sink,
            LogSink::Syslog {
                facility: Facility::Local3,
                ..
            }
        ));
        assert_eq!(Facility::Local3.code(), 19);
        let d = &s.downstreams[0];
        assert_eq!(d.name, "127.0.0.1:81");
        assert_eq!(d.read_timeout, Some(Duration::from_secs(4)));
        assert_eq!(d.write_timeout, Some(Duration::from_secs(2)));
        assert_eq!(d.retry, Duration::from_millis(1250));
        let r = &s.vhosts[0].rules[0];
        assert_eq!(r.name, "*.test#0");
        assert_eq!(r.downstreams, [1]);
        assert!(matches!(&r.uri, UriMatch::Exact(p) if p == "/x"));
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn routed_form_errors_name_vhost_and_rule() {
        let base = format!(
            "{}[[server]]\nport = 8080\n[[server.downstream]]\nname = \"a\"\naddr = \"127.0.0.1\"\nport = 81\n",
            me()
        );
        for (extra, key) in [
            (
                "[[server.vhost]]\nname = \"x\"\n[[server.vhost]]\nname = \"X\"\n",
                "server[0].vhost[1].name",
            ),
            (
                "[[server.vhost]]\nname = \"x\"\n[[server.vhost.rule]]\nname = \"r\"\nuri-match = \"/a\"\n\
                 [[server.vhost.rule]]\nname = \"r\"\nuri-match = \"/b\"\n",
                "server[0].vhost[0].rule[1].name",
            ),
            (
                "[[server.vhost]]\nname = \"x\"\n[[server.vhost.rule]]\nuri-gmatch = \"static/*\"\n",
                "server[0].vhost[0].rule[0].uri-gmatch",
            ),
            (
                "[[server.vhost]]\nname = \"x\"\n[[server.vhost.rule]]\nuri-gmatch = \"\"\n",
                "server[0].vhost[0].rule[0].uri-gmatch",
            ),
            (
                "[[server.vhost]]\nname = \"x\"\naliases = [\"\"]\n",
                "server[0].vhost[0].aliases[0]",
            ),
        ] {
            let errs = load("routed-err", &format!("{base}{extra}")).unwrap_err();
            assert!(
                errs.0.iter().any(|e| e.key == key),
                "{key} not in {:?}",
                errs.0
            );
        }
    }

    #[test]
    fn shadowed_rules_and_vhosts_warn() {
        let text = format!(
            "{}[[server]]\nport = 8080\n[[server.downstream]]\nname = \"a\"\naddr = \"127.0.0.1\"\nport = 81\n\
             [[server.vhost]]\nname = \"*.test\"\n\
             [[server.vhost.rule]]\nuri-match = \"/exact\"\n\
             [[server.vhost.rule]]\nuri-rmatch = \"^/api/\"\n\
             [[server.vhost.rule]]\nuri-match = \"/api/x\"\n\
             [[server.vhost.rule]]\nuri-gmatch = \"/static/*\"\n\
             [[server.vhost.rule]]\nuri-gmatch = \"/static/img/*\"\n\
             [[server.vhost.rule]]\nuri-rmatch = \"^/other\"\n\
             [[server.vhost.rule]]\nuri-gmatch = \"*\"\n\
             [[server.vhost.rule]]\nuri-rmatch = \"x\"\n\
             [[server.vhost]]\nname = \"a.test\"\n\
             [[server.vhost]]\nname = \"b.example\"\naliases = [\"c.test\"]\n",
            me()
        );
        let c = load("shadow", &text).unwrap();
        let w = c.warnings();
        let keys: Vec<&str> = w.iter().map(|w| w.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "server[0].vhost[0].rule[2]",
                "server[0].vhost[0].rule[4]",
                "server[0].vhost[0].rule[7]",
                "server[0].vhost[1].name",
            ],
            "{w:?}"
        );
    }

    #[test]
    fn no_silent_fallback() {
        let base = format!(
            "{}[[server]]\nport = 8080\n[[server.downstream]]\naddr = \"127.0.0.1\"\n",
            me()
        );
        for (extra, key) in [
            (
                "high-watermark = 4096\n",
                "server[0].downstream[0].high-watermark",
            ),
            ("connections = 0\n", "server[0].downstream[0].connections"),
        ] {
            let errs = load("fallback", &format!("{base}{extra}")).unwrap_err();
            assert!(errs.0.iter().any(|e| e.key == key), "{key}: {errs}");
        }
        let errs = load("level", &format!("log-level = \"loud\"\n{base}")).unwrap_err();
        assert!(errs.0.iter().any(|e| e.key == "log-level"), "{errs}");
        let errs = load("memtrim", &format!("memtrim-sz = 4294967296\n{base}")).unwrap_err();
        assert!(errs.0.iter().any(|e| e.key == "memtrim-sz"), "{errs}");
    }

    #[test]
    fn metrics_listen_is_an_address_with_a_port_of_its_own() {
        let base = format!(
            "{}[[server]]\naddr = \"127.0.0.1\"\nport = 8080\n\
             [[server.downstream]]\naddr = \"127.0.0.1\"\n",
            me()
        );
        let ok = |v: &str| load("ml", &format!("metrics-listen = \"{v}\"\n{base}"));
        assert_eq!(
            ok("127.0.0.1:9100").unwrap().metrics_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            ok("[::1]:9100").unwrap().metrics_listen,
            Some("[::1]:9100".parse().unwrap())
        );
        assert_eq!(ok("").unwrap().metrics_listen, None);
        assert!(ok("127.0.0.1:9100").unwrap().warnings().is_empty());
        let w = ok("192.0.2.1:9100").unwrap().warnings();
        assert!(
            w.len() == 1 && w[0].starts_with("metrics-listen: warning:"),
            "{w:?}"
        );
        for bad in [
            "localhost:9100",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:8080",
        ] {
            let errs = ok(bad).unwrap_err();
            assert!(
                errs.0.iter().any(|e| e.key == "metrics-listen"),
                "{bad}: {errs}"
            );
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn tls_versions_default_on_and_off() {
        assert_eq!(tls_versions(&[], &[]), [Tls1_2, Tls1_3]);
        assert_eq!(tls_versions(&[], &v(&["SSLv2", "SSLv3"])), [Tls1_2, Tls1_3]);
        assert_eq!(
            tls_versions(&v(&["ALL"]), &v(&["TLSv1"])),
            [Tls1_1, Tls1_2, Tls1_3]
        );
        assert_eq!(tls_versions(&v(&["TLSv1.3"]), &[]), [Tls1_3]);
        assert!(tls_versions(&[], &v(&["ALL"])).is_empty());
    }
}
