//! The validated runtime configuration: what the master binds and forks with and what each
//! worker builds its pipeline from. Only [`crate::load::load`] makes one, from a
//! [`crate::schema::File`] that passed every check, so nothing here needs re-checking: ports
//! are `u16`, times are [`Duration`]s (`Option` only where 0 means "none"), names are enums,
//! regexes and log formats are compiled, and nothing that validation guarantees is an `Option`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use crate::cidr::Cidr;
use crate::errlog::Level;
use crate::logformat::LogFormat;

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from (for messages and reloads).
    pub source: PathBuf,
    pub daemonize: bool,
    pub user: String,
    pub group: String,
    pub max_nofile: u64,
    /// `mallopt(M_TRIM_THRESHOLD)` value, when set.
    pub memtrim: Option<libc::c_int>,
    /// Worker processes, resolved from `workers`, `threads` or the CPU count.
    pub workers: usize,
    pub pid_file: Option<PathBuf>,
    pub shutdown_timeout: Duration,
    pub heartbeat_timeout: Duration,
    /// The daemon's own log file; `None` = stderr.
    pub error_log: Option<PathBuf>,
    pub log_level: Level,
    /// Where the master serves `GET /metrics`, when set.
    pub metrics_listen: Option<SocketAddr>,
    /// The master's control socket; `None` = no control socket (`control-socket = ""`).
    pub control_socket: Option<PathBuf>,
    /// At least one.
    pub servers: Vec<Server>,
}

/// One listener.
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub backlog: u16,
    /// Client header read and idle keep-alive limit.
    pub read_timeout: Option<Duration>,
    /// A blocked write to the client.
    pub write_timeout: Option<Duration>,
    /// Waiting for a free downstream connection; zero = 503 at once.
    pub pending_timeout: Duration,
    pub max_pending: usize,
    pub lb_method: LbMethod,
    pub trusted_proxies: Vec<Cidr>,
    /// Bytes of request line + headers (at least 8192).
    pub max_header_size: usize,
    pub headers: Headers,
    /// Present when TLS is enabled on this listener.
    pub ssl: Option<Ssl>,
    /// Present when enabled.
    pub logging: Option<Logging>,
    /// At least one; names unique.
    pub downstreams: Vec<Downstream>,
    /// Flat form: first match wins.
    pub rewrites: Vec<Rewrite>,
    /// Routed form; empty = flat form.
    pub vhosts: Vec<Vhost>,
}

/// How a downstream is chosen among those with an idle connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbMethod {
    /// Smoothed response time per downstream (see the worker's `lb` module).
    #[default]
    Rtt,
    Roundrobin,
    MostIdle,
    None,
    Random,
}

/// One HTTP server behind a listener.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// `name`, or `addr:port` as written.
    pub name: String,
    /// Resolved at load.
    pub addr: SocketAddr,
    /// Kept open by each worker, and its maximum (at least 1).
    pub connections: usize,
    /// Bytes read ahead toward a slow side (at least 8192).
    pub high_watermark: usize,
    /// Waiting for response bytes (504).
    pub read_timeout: Option<Duration>,
    /// A blocked write to the downstream (503).
    pub write_timeout: Option<Duration>,
    pub enabled: bool,
    /// Reconnect interval while down (above zero).
    pub retry: Duration,
}

/// RProxy 1.x rewrite, compiled.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub src: Regex,
    /// Starts with `/`.
    pub dst: String,
}

/// A virtual host (routed form).
#[derive(Debug, Clone)]
pub struct Vhost {
    pub name: String,
    pub aliases: Vec<String>,
    pub strip_headers: Vec<String>,
    pub ssl: Option<Ssl>,
    pub headers: Option<Headers>,
    pub logging: Option<Logging>,
    pub rules: Vec<Rule>,
}

/// A path rule of a vhost.
#[derive(Debug, Clone)]
pub struct Rule {
    /// As written, or `<vhost>#<index>`.
    pub name: String,
    pub uri: UriMatch,
    /// Indices into the server's `downstreams`; empty = 404.
    pub downstreams: Vec<usize>,
    pub lb_method: Option<LbMethod>,
    pub rewrite: Option<Rewrite>,
    pub passthrough: bool,
    /// Overrides the server's client read-timeout.
    pub upstream_read_timeout: Option<Duration>,
    /// Overrides the server's client write-timeout.
    pub upstream_write_timeout: Option<Duration>,
    pub headers: Option<Headers>,
}

/// How a rule matches the path (without the query).
#[derive(Debug, Clone)]
pub enum UriMatch {
    Exact(String),
    Glob(String),
    Regex(Regex),
}

/// Request headers rproxy adds for the downstream (DESIGN section 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    pub x_forwarded_for: bool,
    pub x_forwarded_proto: bool,
    pub x_ssl_subject: bool,
    pub x_ssl_issuer: bool,
    pub x_ssl_notbefore: bool,
    pub x_ssl_notafter: bool,
    pub x_ssl_serial: bool,
    pub x_ssl_sha1: bool,
    pub x_ssl_cipher: bool,
    pub x_ssl_certificate: bool,
    pub x509_extensions: Vec<X509Extension>,
}

impl Default for Headers {
    /// RProxy's defaults: X-Forwarded-For and X-Forwarded-Proto only.
    fn default() -> Self {
        Headers {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_ssl_subject: false,
            x_ssl_issuer: false,
            x_ssl_notbefore: false,
            x_ssl_notafter: false,
            x_ssl_serial: false,
            x_ssl_sha1: false,
            x_ssl_cipher: false,
            x_ssl_certificate: false,
            x509_extensions: Vec::new(),
        }
    }
}

/// A header carrying a client certificate extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Extension {
    /// Lowercase header name (a valid token).
    pub name: String,
    /// Dotted object identifier OpenSSL knows.
    pub oid: String,
}

/// An enabled TLS section whose files were readable and whose key matched its certificate at
/// load. The master builds its OpenSSL context; the worker's TLS stage serves it.
#[derive(Debug, Clone)]
pub struct Ssl {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    pub ciphers: Option<String>,
    pub ciphersuites: Option<String>,
    /// Enabled protocol versions, from `protocols-on`/`-off` over the default (1.2 and 1.3).
    pub protocols: Vec<TlsVersion>,
    pub verify_peer: bool,
    pub enforce_peer_cert: bool,
    pub verify_depth: u32,
    pub context_timeout: Duration,
    /// Shared session cache, when enabled.
    pub cache: Option<SessionCache>,
    pub tickets: bool,
    pub alpn: Vec<Alpn>,
    pub ticket_key_file: Option<PathBuf>,
}

/// TLS protocol versions rproxy can enable (SSLv2/SSLv3 never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls1_0,
    Tls1_1,
    Tls1_2,
    Tls1_3,
}

/// The shared TLS session cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCache {
    pub size: usize,
    pub timeout: Duration,
}

/// ALPN protocols rproxy serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    Http11,
}

/// An enabled access log.
#[derive(Debug, Clone)]
pub struct Logging {
    pub sink: LogSink,
    pub format: Arc<LogFormat>,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSink {
    /// Opened by the master (see [`Config::access_log_paths`]).
    File(PathBuf),
    Syslog {
        socket: PathBuf,
        facility: Facility,
    },
}

/// `type` of a logging section, as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogType {
    #[default]
    File,
    Syslog,
}

/// Syslog facilities (RFC 5424 table 1) that a `facility` key may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Facility {
    Kern,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    Authpriv,
    Ftp,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The facility's code, as syslog's `<PRI>` needs it (`PRI = code * 8 + severity`).
    pub fn code(self) -> u8 {
        match self {
            Facility::Kern => 0,
            Facility::User => 1,
            Facility::Mail => 2,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Syslog => 5,
            Facility::Lpr => 6,
            Facility::News => 7,
            Facility::Uucp => 8,
            Facility::Cron => 9,
            Facility::Authpriv => 10,
            Facility::Ftp => 11,
            // 12..15 (ntp, security, console, solaris-cron) have no name here.
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

/// The default access-log format: RProxy's README example.
pub const DEFAULT_LOG_FORMAT: &str =
    "{SRC} {PROXY} [{TS}] \"{METH} {URI} {PROTO}\" - {STATUS} - \"{REF}\" - \"{UA}\" - \"{HOST}\"";

impl Config {
    /// Distinct access-log files in configuration order (servers, then their vhosts). The
    /// master opens them in this order, at fork and on every reopen; a logging section finds
    /// its descriptor with [`Config::access_log_index`].
    pub fn access_log_paths(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for s in &self.servers {
            let sections = s
                .logging
                .iter()
                .chain(s.vhosts.iter().filter_map(|v| v.logging.as_ref()));
            for l in sections {
                if let LogSink::File(f) = &l.sink {
                    if !out.contains(&f.as_path()) {
                        out.push(f);
                    }
                }
            }
        }
        out
    }

    /// Position of `path` in [`Config::access_log_paths`].
    pub fn access_log_index(&self, path: &Path) -> Option<usize> {
        self.access_log_paths().iter().position(|p| *p == path)
    }

    /// `key: warning: ...` lines for `rproxy -t`: things that load and run but are almost
    /// certainly not what was meant (a rule or vhost an earlier one always takes first).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = crate::validate::shadow_warnings(self);
        if let Some(a) = self.metrics_listen.filter(|a| !a.ip().is_loopback()) {
            out.push(format!(
                "metrics-listen: warning: {a} is not a loopback address: whoever can reach it \
                 reads the metrics (server, rule and downstream names)"
            ));
        }
        out
    }
}
