//! The configuration schema (DESIGN section 5): typed structs deserialized by figment from TOML
//! plus `RPROXY_*` overrides, with RProxy's defaults and kebab-case key names. Unknown keys are
//! refused by serde. Fields marked `#[serde(skip)]` are filled by validation (resolved addresses,
//! compiled regexes and log formats) so that the workers receive a ready-to-use structure.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::cidr::Cidr;
use crate::logformat::LogFormat;

/// A value computed at validation time. Its `Debug` does not dump compiled internals.
#[derive(Clone)]
pub struct Compiled<T>(pub Option<T>);

impl<T> Default for Compiled<T> {
    fn default() -> Self {
        Compiled(None)
    }
}

impl<T> fmt::Debug for Compiled<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "<compiled>"
        } else {
            "<none>"
        })
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub daemonize: bool,
    #[serde(default = "d_user")]
    pub user: String,
    #[serde(default = "d_group")]
    pub group: String,
    #[serde(default = "d_max_nofile")]
    pub max_nofile: u64,
    #[serde(default)]
    pub memtrim_sz: u64,
    /// `None` = not set: the largest `threads` of a server that sets it, else the CPU count.
    #[serde(default)]
    pub workers: Option<Workers>,
    #[serde(default)]
    pub pid_file: String,
    #[serde(default = "d_shutdown_timeout")]
    pub shutdown_timeout: u64,
    #[serde(default = "d_heartbeat_timeout")]
    pub heartbeat_timeout: u64,
    #[serde(default)]
    pub error_log: String,
    #[serde(default = "d_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub server: Vec<Server>,

    /// The file this was loaded from (for messages).
    #[serde(skip)]
    pub source: PathBuf,
    /// Worker processes to run, resolved from `workers`/`threads`/CPU count.
    #[serde(skip)]
    pub worker_count: usize,
}

/// `workers = "auto"` or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Workers {
    Count(i64),
    Named(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Server {
    #[serde(default = "d_addr")]
    pub addr: String,
    #[serde(default = "d_port")]
    pub port: i64,
    #[serde(default = "d_backlog")]
    pub backlog: i64,
    /// RProxy's listener threads; only used to size `workers` when that is unset.
    #[serde(default)]
    pub threads: Option<i64>,
    #[serde(default = "d_read_timeout")]
    pub read_timeout: u64,
    #[serde(default = "d_write_timeout")]
    pub write_timeout: u64,
    #[serde(default = "d_pending_timeout")]
    pub pending_timeout: u64,
    #[serde(default = "d_max_pending")]
    pub max_pending: u64,
    #[serde(default)]
    pub lb_method: LbMethod,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default = "d_max_header_size")]
    pub max_header_size: u64,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub ssl: Option<Ssl>,
    #[serde(default)]
    pub logging: Option<Logging>,
    #[serde(default)]
    pub downstream: Vec<Downstream>,
    #[serde(default)]
    pub rewrite: Vec<Rewrite>,
    #[serde(default)]
    pub vhost: Vec<Vhost>,

    /// `addr:port` parsed.
    #[serde(skip, default = "unspecified")]
    pub listen: SocketAddr,
    #[serde(skip)]
    pub trusted: Vec<Cidr>,
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Downstream {
    #[serde(default)]
    pub name: Option<String>,
    pub addr: String,
    #[serde(default = "d_ds_port")]
    pub port: i64,
    #[serde(default = "d_connections")]
    pub connections: i64,
    #[serde(default = "d_high_watermark")]
    pub high_watermark: u64,
    #[serde(default)]
    pub read_timeout: u64,
    #[serde(default = "d_ds_write_timeout")]
    pub write_timeout: u64,
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default)]
    pub retry: Retry,

    /// `addr` resolved (its first address) at load and reload.
    #[serde(skip, default = "unspecified")]
    pub sockaddr: SocketAddr,
}

impl Downstream {
    /// The name rules and logs use: `name`, or `addr:port`.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("{}:{}", self.addr, self.port),
        }
    }

    pub fn retry_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.retry.seconds)
            + std::time::Duration::from_micros(self.retry.useconds)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retry {
    #[serde(default)]
    pub seconds: u64,
    #[serde(default = "d_retry_us")]
    pub useconds: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            seconds: 0,
            useconds: d_retry_us(),
        }
    }
}

/// RProxy 1.x rewrite: `src` regex, `dst` replacement prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rewrite {
    pub src: String,
    pub dst: String,
    #[serde(skip)]
    pub regex: Compiled<regex::Regex>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Vhost {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub strip_headers: Vec<String>,
    #[serde(default)]
    pub ssl: Option<Ssl>,
    #[serde(default)]
    pub headers: Option<Headers>,
    #[serde(default)]
    pub logging: Option<Logging>,
    #[serde(default)]
    pub rule: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uri_match: Option<String>,
    #[serde(default)]
    pub uri_gmatch: Option<String>,
    #[serde(default)]
    pub uri_rmatch: Option<String>,
    #[serde(default)]
    pub downstreams: Vec<String>,
    #[serde(default)]
    pub lb_method: Option<LbMethod>,
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    #[serde(default)]
    pub passthrough: bool,
    #[serde(default)]
    pub upstream_read_timeout: u64,
    #[serde(default)]
    pub upstream_write_timeout: u64,
    #[serde(default)]
    pub headers: Option<Headers>,
    #[serde(skip)]
    pub rmatch: Compiled<regex::Regex>,
}

/// Request headers rproxy adds for the downstream (DESIGN section 7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Headers {
    #[serde(default = "d_true")]
    pub x_forwarded_for: bool,
    #[serde(default = "d_true")]
    pub x_forwarded_proto: bool,
    #[serde(default)]
    pub x_ssl_subject: bool,
    #[serde(default)]
    pub x_ssl_issuer: bool,
    #[serde(default)]
    pub x_ssl_notbefore: bool,
    #[serde(default)]
    pub x_ssl_notafter: bool,
    #[serde(default)]
    pub x_ssl_serial: bool,
    #[serde(default)]
    pub x_ssl_sha1: bool,
    #[serde(default)]
    pub x_ssl_cipher: bool,
    #[serde(default)]
    pub x_ssl_certificate: bool,
    #[serde(default)]
    pub x509_extension: Vec<X509Extension>,
}

impl Default for Headers {
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
            x509_extension: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct X509Extension {
    pub name: String,
    pub oid: String,
}

/// TLS settings (DESIGN section 6). Validated now; served by the TLS issue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Ssl {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub capath: Option<PathBuf>,
    #[serde(default)]
    pub crl: Option<PathBuf>,
    #[serde(default)]
    pub ciphers: Option<String>,
    #[serde(default)]
    pub ciphersuites: Option<String>,
    #[serde(default)]
    pub protocols_on: Vec<String>,
    #[serde(default)]
    pub protocols_off: Vec<String>,
    #[serde(default)]
    pub verify_peer: bool,
    #[serde(default)]
    pub enforce_peer_cert: bool,
    #[serde(default = "d_verify_depth")]
    pub verify_depth: u32,
    #[serde(default = "d_context_timeout")]
    pub context_timeout: u64,
    #[serde(default = "d_true")]
    pub cache_enabled: bool,
    #[serde(default = "d_cache_size")]
    pub cache_size: u64,
    #[serde(default = "d_cache_timeout")]
    pub cache_timeout: u64,
    #[serde(default = "d_true")]
    pub tickets: bool,
    #[serde(default = "d_alpn")]
    pub alpn: Vec<String>,
    #[serde(default)]
    pub ticket_key_file: Option<PathBuf>,
}

/// Access log (DESIGN section 9).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Logging {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default, rename = "type")]
    pub kind: LogType,
    #[serde(default)]
    pub filename: Option<PathBuf>,
    #[serde(default = "d_facility")]
    pub facility: String,
    #[serde(default = "d_syslog_socket")]
    pub syslog_socket: PathBuf,
    #[serde(default = "d_log_format")]
    pub format: String,
    #[serde(skip)]
    pub compiled: Compiled<Arc<LogFormat>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogType {
    #[default]
    File,
    Syslog,
}

/// Syslog facilities accepted in `facility`, in code order (local0 is code 16).
pub const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

/// The syslog code of a facility name (RFC 5424 table 1), `None` if unknown.
pub fn facility_code(name: &str) -> Option<u8> {
    let i = FACILITIES.iter().position(|f| *f == name)? as u8;
    // kern..ftp are 0..11; 12..15 are not nameable here; local0..local7 are 16..23.
    Some(if i < 12 { i } else { i + 4 })
}

/// The default access-log format: RProxy's README example.
pub const DEFAULT_LOG_FORMAT: &str =
    "{SRC} {PROXY} [{TS}] \"{METH} {URI} {PROTO}\" - {STATUS} - \"{REF}\" - \"{UA}\" - \"{HOST}\"";

fn unspecified() -> SocketAddr {
    SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0)
}
fn d_true() -> bool {
    true
}
fn d_user() -> String {
    "nobody".into()
}
fn d_group() -> String {
    "nogroup".into()
}
fn d_max_nofile() -> u64 {
    100_000
}
fn d_shutdown_timeout() -> u64 {
    30
}
fn d_heartbeat_timeout() -> u64 {
    10
}
fn d_log_level() -> String {
    "info".into()
}
fn d_addr() -> String {
    "0.0.0.0".into()
}
fn d_port() -> i64 {
    8080
}
fn d_ds_port() -> i64 {
    80
}
fn d_backlog() -> i64 {
    1024
}
fn d_read_timeout() -> u64 {
    60
}
fn d_write_timeout() -> u64 {
    32
}
fn d_pending_timeout() -> u64 {
    10
}
fn d_max_pending() -> u64 {
    50
}
fn d_max_header_size() -> u64 {
    65536
}
fn d_connections() -> i64 {
    10
}
fn d_high_watermark() -> u64 {
    5 * 1024 * 1024
}
fn d_ds_write_timeout() -> u64 {
    2
}
fn d_retry_us() -> u64 {
    500_000
}
fn d_verify_depth() -> u32 {
    4
}
fn d_context_timeout() -> u64 {
    172_800
}
fn d_cache_size() -> u64 {
    1024
}
fn d_cache_timeout() -> u64 {
    60
}
fn d_alpn() -> Vec<String> {
    vec!["h2".into(), "http/1.1".into()]
}
fn d_facility() -> String {
    "local0".into()
}
fn d_syslog_socket() -> PathBuf {
    PathBuf::from("/dev/log")
}
fn d_log_format() -> String {
    DEFAULT_LOG_FORMAT.into()
}

impl Config {
    /// Distinct access-log files in configuration order (servers, then their vhosts). The
    /// master opens them and hands the descriptors to workers in this order, at fork and on
    /// every reopen; a logging section finds its descriptor with [`Config::access_log_index`].
    pub fn access_log_paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for s in &self.server {
            let sections = s
                .logging
                .iter()
                .chain(s.vhost.iter().filter_map(|v| v.logging.as_ref()));
            for l in sections {
                if let (true, LogType::File, Some(f)) = (l.enabled, l.kind, &l.filename) {
                    if !out.contains(f) {
                        out.push(f.clone());
                    }
                }
            }
        }
        out
    }

    /// Position of `l`'s file in [`Config::access_log_paths`].
    pub fn access_log_index(&self, l: &Logging) -> Option<usize> {
        let f = l.filename.as_ref()?;
        self.access_log_paths().iter().position(|p| p == f)
    }
}

impl Config {
    /// Sections this version validates but cannot serve yet. `-t` reports them as warnings;
    /// start-up and reload refuse them, so a TLS port never silently serves plain HTTP and a
    /// routed configuration never silently becomes a flat one.
    pub fn unsupported(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, s) in self.server.iter().enumerate() {
            if s.ssl.as_ref().is_some_and(|t| t.enabled) {
                out.push(format!(
                    "server[{i}].ssl.enabled: TLS serving is not implemented in this version"
                ));
            }
            if !s.vhost.is_empty() {
                out.push(format!(
                    "server[{i}].vhost: vhost routing is not implemented in this version"
                ));
            }
        }
        out
    }
}
