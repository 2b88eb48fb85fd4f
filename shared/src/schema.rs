//! The configuration FILE as written (DESIGN section 5): what figment deserializes from TOML
//! plus `RPROXY_*` overrides, with RProxy's kebab-case key names and defaults. Unknown keys and
//! unknown enum values are refused by serde. Nothing here is used at run time: validation
//! ([`crate::load::load`]) turns a [`File`] into the runtime [`crate::config::Config`] or into
//! the list of everything wrong with it.
//!
//! Every field says its default and meaning; docs/CONFIG.md is the user-facing reference.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{Facility, LbMethod, LogType};
use crate::errlog::Level;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct File {
    /// Fork into the background at start (never with `-f` or under systemd). Default false.
    #[serde(default)]
    pub daemonize: bool,
    /// The workers' user. Default `nobody`.
    #[serde(default = "d_user")]
    pub user: String,
    /// The workers' group. Default `nogroup`.
    #[serde(default = "d_group")]
    pub group: String,
    /// RLIMIT_NOFILE of master and workers. Default 100000; 64..=u32::MAX.
    #[serde(default = "d_max_nofile")]
    pub max_nofile: u64,
    /// `mallopt(M_TRIM_THRESHOLD)` in bytes when > 0. Default 0; at most `i32::MAX`.
    #[serde(default)]
    pub memtrim_sz: u64,
    /// Worker processes: `"auto"` (CPUs) or 1..=1024. Unset: the largest `threads` of a server
    /// that sets it, else the CPU count.
    #[serde(default)]
    pub workers: Option<Workers>,
    /// The master's PID file; empty = none. Default empty.
    #[serde(default)]
    pub pid_file: String,
    /// Seconds a draining generation may run before its workers are killed. Default 30.
    #[serde(default = "d_shutdown_timeout")]
    pub shutdown_timeout: u64,
    /// Seconds without a heartbeat before a worker is killed and replaced. Default 10; >= 1.
    #[serde(default = "d_heartbeat_timeout")]
    pub heartbeat_timeout: u64,
    /// The daemon's own log file; empty = stderr (the journal). Default empty.
    #[serde(default)]
    pub error_log: String,
    /// Least severe level written to the error log. Default `info`.
    #[serde(default = "d_log_level")]
    pub log_level: Level,
    /// `ADDR:PORT` where the master serves Prometheus metrics (`GET /metrics`); empty = none.
    /// Default empty. A loopback address is recommended (anything else gets a warning).
    #[serde(default)]
    pub metrics_listen: String,
    /// The master's control socket (`rproxy ctl`, DESIGN section 12): an absolute path of at
    /// most 107 bytes, or `""` for none. Default `/run/rproxy/ctl.sock`. Created at start (mode
    /// 0600, its directory 0755 if missing) and rebound when a reload changes it.
    #[serde(default = "d_control_socket")]
    pub control_socket: String,
    /// The listeners; at least one.
    #[serde(default)]
    pub server: Vec<Server>,
}

/// `workers = "auto"` or a number (an `RPROXY_WORKERS` override always arrives as a string).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Workers {
    Count(i64),
    Named(String),
}

/// `[[server]]`: one listener and what it forwards to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Server {
    /// IPv4 or IPv6 literal to listen on. Default `0.0.0.0`.
    #[serde(default = "d_addr")]
    pub addr: String,
    /// Listen port, 1..=65535, unique per address. Default 8080.
    #[serde(default = "d_port")]
    pub port: i64,
    /// `listen(2)` backlog, 1..=65535. Default 1024.
    #[serde(default = "d_backlog")]
    pub backlog: i64,
    /// RProxy's listener threads, 1..=1024: only sizes `workers` when that is unset.
    #[serde(default)]
    pub threads: Option<i64>,
    /// Client header read and idle keep-alive limit, seconds; 0 = none. Default 60.
    #[serde(default = "d_read_timeout")]
    pub read_timeout: u64,
    /// A blocked write to the client, seconds; 0 = none. Default 32.
    #[serde(default = "d_write_timeout")]
    pub write_timeout: u64,
    /// Waiting for a free downstream connection, seconds, then 503; 0 = 503 at once. Default 10.
    #[serde(default = "d_pending_timeout")]
    pub pending_timeout: u64,
    /// Requests waiting per worker, 0..=1000000; more get 503 at once. Default 50.
    #[serde(default = "d_max_pending")]
    pub max_pending: u64,
    /// How a downstream is chosen. Default `rtt`.
    #[serde(default)]
    pub lb_method: LbMethod,
    /// CIDRs whose X-Forwarded-For chain is kept and appended to. Default none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Bytes of request line + headers, 8192..=1048576; more gets 431. Default 65536.
    #[serde(default = "d_max_header_size")]
    pub max_header_size: u64,
    /// Request headers added for the downstream. Default: X-Forwarded-For and -Proto.
    #[serde(default)]
    pub headers: Headers,
    /// TLS on this listener. Default none (plain HTTP).
    #[serde(default)]
    pub ssl: Option<Ssl>,
    /// Access log. Default none.
    #[serde(default)]
    pub logging: Option<Logging>,
    /// The HTTP servers behind this listener; at least one.
    #[serde(default)]
    pub downstream: Vec<Downstream>,
    /// Flat form: URI rewrites, first match wins. Default none.
    #[serde(default)]
    pub rewrite: Vec<Rewrite>,
    /// Routed form: virtual hosts, first match wins. Default none (flat form).
    #[serde(default)]
    pub vhost: Vec<Vhost>,
}

/// `[[server.downstream]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Downstream {
    /// How rules and logs name it; unique in the server. Default `addr:port`.
    #[serde(default)]
    pub name: Option<String>,
    /// IP literal or host name (resolved at load and reload: its first address). Required.
    pub addr: String,
    /// 1..=65535. Default 80.
    #[serde(default = "d_ds_port")]
    pub port: i64,
    /// Connections each worker keeps open, and its maximum, 1..=10000. Default 10.
    #[serde(default = "d_connections")]
    pub connections: i64,
    /// Bytes read ahead toward a slow side before the other pauses, >= 8192. Default 5 MiB.
    #[serde(default = "d_high_watermark")]
    pub high_watermark: u64,
    /// Waiting for response bytes, seconds; 0 = none; expiry is 504. Default 0.
    #[serde(default)]
    pub read_timeout: u64,
    /// A blocked write to the downstream, seconds; 0 = none; expiry is 503. Default 2.
    #[serde(default = "d_ds_write_timeout")]
    pub write_timeout: u64,
    /// false: no connections, out of rotation. Default true.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// Reconnect interval while down. Default 0.5 s.
    #[serde(default)]
    pub retry: Retry,
}

/// `[server.downstream.retry]`: the interval is `seconds` + `useconds`, above zero.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retry {
    /// Whole seconds. Default 0.
    #[serde(default)]
    pub seconds: u64,
    /// Microseconds, 0..=999999. Default 500000.
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

/// RProxy 1.x rewrite: `src` regex on the path, `dst` replacement prefix (starts with `/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rewrite {
    /// Regular expression (Rust `regex` syntax). Required.
    pub src: String,
    /// Replaces the path up to the end of the last capture group's match. Required.
    pub dst: String,
}

/// `[[server.vhost]]` (routed form).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Vhost {
    /// Glob (`*`) matched against SNI or Host without port. Required, non-empty.
    pub name: String,
    /// More globs for the same vhost. Default none.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Response headers removed before the client sees them. Default none.
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// This vhost's certificate, chosen by SNI. Default: the server's.
    #[serde(default)]
    pub ssl: Option<Ssl>,
    /// Default headers of its rules. Default: the server's.
    #[serde(default)]
    pub headers: Option<Headers>,
    /// This vhost's access log. Default: the server's.
    #[serde(default)]
    pub logging: Option<Logging>,
    /// Path rules, first match wins. Default none (every request is a 404).
    #[serde(default)]
    pub rule: Vec<Rule>,
}

/// `[[server.vhost.rule]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rule {
    /// For logs and errors. Default `<vhost>#<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Exact path. Exactly one of the three matchers is required.
    #[serde(default)]
    pub uri_match: Option<String>,
    /// Path glob (`*`).
    #[serde(default)]
    pub uri_gmatch: Option<String>,
    /// Path regular expression.
    #[serde(default)]
    pub uri_rmatch: Option<String>,
    /// Downstream names of the server; empty = 404. Default empty.
    #[serde(default)]
    pub downstreams: Vec<String>,
    /// Default: the server's.
    #[serde(default)]
    pub lb_method: Option<LbMethod>,
    /// Optional rewrite, same rule as the flat form's.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// After the request head, a raw byte tunnel. Default false.
    #[serde(default)]
    pub passthrough: bool,
    /// Overrides the server's client read-timeout, seconds; 0 = the server's. Default 0.
    #[serde(default)]
    pub upstream_read_timeout: u64,
    /// Overrides the server's client write-timeout, seconds; 0 = the server's. Default 0.
    #[serde(default)]
    pub upstream_write_timeout: u64,
    /// Replaces the vhost's headers. Default: the vhost's.
    #[serde(default)]
    pub headers: Option<Headers>,
}

/// `[*.headers]`: request headers rproxy adds for the downstream (DESIGN section 7). Whatever
/// the flags, a client's own copies of these headers are always removed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Headers {
    /// Client IP (or the trusted chain + peer). Default true.
    #[serde(default = "d_true")]
    pub x_forwarded_for: bool,
    /// `http` or `https`. Default true.
    #[serde(default = "d_true")]
    pub x_forwarded_proto: bool,
    /// Client certificate subject. Default false (as every x-ssl-* flag).
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
    /// Headers carrying a client certificate extension. Default none.
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

/// `[[*.headers.x509-extension]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct X509Extension {
    /// Header name (RFC 9110 token). Required.
    pub name: String,
    /// Object identifier OpenSSL knows. Required.
    pub oid: String,
}

/// `[server.ssl]`, `[server.vhost.ssl]` (DESIGN section 6). Checked at load (`tls_check.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Ssl {
    /// Default false: the section is checked but the listener is plain HTTP.
    #[serde(default)]
    pub enabled: bool,
    /// PEM certificate (chain allowed). Required when enabled.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key matching `cert`. Required when enabled.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// CA file for client certificates. Default none.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// CA directory (hashed names) for client certificates. Default none.
    #[serde(default)]
    pub capath: Option<PathBuf>,
    /// Certificate revocation list file. Default none.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// OpenSSL cipher list for TLS <= 1.2. Default OpenSSL's.
    #[serde(default)]
    pub ciphers: Option<String>,
    /// TLS 1.3 cipher suites. Default OpenSSL's.
    #[serde(default)]
    pub ciphersuites: Option<String>,
    /// Protocols to enable (`TLSv1`..`TLSv1.3`, `ALL`). Default TLSv1.2 and TLSv1.3.
    #[serde(default)]
    pub protocols_on: Vec<String>,
    /// Protocols to disable (also `SSLv2`, `SSLv3`, as RProxy configs write them).
    #[serde(default)]
    pub protocols_off: Vec<String>,
    /// Ask for a client certificate. Default false.
    #[serde(default)]
    pub verify_peer: bool,
    /// Refuse clients without a valid certificate. Default false.
    #[serde(default)]
    pub enforce_peer_cert: bool,
    /// Longest client chain, 0..=100. Default 4.
    #[serde(default = "d_verify_depth")]
    pub verify_depth: u32,
    /// Session lifetime, seconds. Default 172800.
    #[serde(default = "d_context_timeout")]
    pub context_timeout: u64,
    /// Shared session cache. Default true.
    #[serde(default = "d_true")]
    pub cache_enabled: bool,
    /// Session cache entries. Default 1024.
    #[serde(default = "d_cache_size")]
    pub cache_size: u64,
    /// Session cache entry lifetime, seconds. Default 60.
    #[serde(default = "d_cache_timeout")]
    pub cache_timeout: u64,
    /// Session tickets. Default true.
    #[serde(default = "d_true")]
    pub tickets: bool,
    /// ALPN protocols offered (`h2`, `http/1.1`). Default both.
    #[serde(default = "d_alpn")]
    pub alpn: Vec<String>,
    /// 48 or 80 bytes of ticket keys shared by a fleet. Default none (generated).
    #[serde(default)]
    pub ticket_key_file: Option<PathBuf>,
}

/// `[*.logging]`: the access log (DESIGN section 9).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Logging {
    /// false: no access log (the format is still checked). Default true.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// `file` or `syslog`. Default `file`.
    #[serde(default, rename = "type")]
    pub kind: LogType,
    /// Required for `type = "file"`; opened by the master, must be writable.
    #[serde(default)]
    pub filename: Option<PathBuf>,
    /// Syslog facility (checked whatever `type` is). Default `local0`.
    #[serde(default = "d_facility")]
    pub facility: Facility,
    /// Unix datagram socket for `type = "syslog"`. Default `/dev/log`.
    #[serde(default = "d_syslog_socket")]
    pub syslog_socket: PathBuf,
    /// Line template. Default RProxy's (see [`crate::config::DEFAULT_LOG_FORMAT`]).
    #[serde(default = "d_log_format")]
    pub format: String,
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
/// Where `rproxy ctl` finds the master when the file does not say (the unit's
/// `RuntimeDirectory=rproxy` gives `/run/rproxy`).
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/rproxy/ctl.sock";

fn d_control_socket() -> String {
    DEFAULT_CONTROL_SOCKET.to_string()
}

fn d_log_level() -> Level {
    Level::Info
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
fn d_facility() -> Facility {
    Facility::Local0
}
fn d_syslog_socket() -> PathBuf {
    PathBuf::from("/dev/log")
}
fn d_log_format() -> String {
    crate::config::DEFAULT_LOG_FORMAT.into()
}
