//! Where a request goes: a [`RouteTable`] compiled once per configuration per server when the
//! worker starts, and looked up per request without allocating. Everything a request needs to
//! know about its destination (downstreams, balancing, rewrites, headers, timeouts, log) is on
//! the [`Route`], so the later stages never read the configuration.
//!
//! The flat form (no vhost) is one implicit route that every request takes. The routed form
//! picks a vhost by TLS SNI, else by the Host header (port removed, case folded), then the first
//! of its rules, in configuration order, whose matcher takes the path. Both steps are compiled:
//! vhost names and aliases without `*` into a hash map (ASCII-lowercased), the others into one
//! case-insensitive multi-pattern regex (a glob is an anchored regex), and per vhost the exact-path rules into a hash map and the glob and regex
//! rules into one multi-pattern regex ([`Set`]). A set reports every pattern that matches in
//! one pass; the lowest rule index among the set's matches and the exact map's hit is the first
//! match in config order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use http::HeaderName;
use regex::Regex;
use regex_automata::meta;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, PatternSet};
use rproxy_shared::config::{Config, Headers, Server, UriMatch, Vhost};
use rproxy_shared::glob;

use crate::access_log::AccessLog;
use crate::pool::Members;
use crate::state::WorkerState;

/// Client-side timeouts of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Flat form and connection default: request head and idle keep-alive wait. A rule's
    /// `upstream-read-timeout`: the longest wait for each piece of its request body.
    /// `None` = no limit.
    pub read: Option<Duration>,
    /// A blocked write to the client (a rule's: while writing that rule's response); `None` =
    /// no limit.
    pub write: Option<Duration>,
}

/// One destination: a vhost rule, or the whole server in the flat form.
pub struct Route {
    /// `{RULE}` in the access log; `None` for the flat form (logged as `-`).
    name: Option<Box<str>>,
    /// The downstreams of this route, the LB method and its round-robin state.
    pub members: Rc<Members>,
    /// The rule names no downstream at all (`downstreams = []`): 404, as RProxy.
    pub no_downstreams: bool,
    /// `(src, dst)` in configuration order; the first match wins.
    rewrites: Vec<(Regex, Box<str>)>,
    pub headers: Headers,
    /// Configured x509-extension header names: stripped from clients' requests.
    pub extension_names: Vec<HeaderName>,
    pub timeouts: Timeouts,
    /// Tunnel raw bytes after the request head (RProxy's `passthrough` rules); never for flat.
    pub passthrough: bool,
    /// The vhost's `strip-headers`: removed from every response of this route.
    pub strip: Rc<[HeaderName]>,
    pub log: Option<Rc<AccessLog>>,
    /// The rule's slot in the metrics layout (`Layout::rule_slot`); 0 for the flat form.
    pub metrics_rule: u32,
}

impl Route {
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Some rewrite rule applies (else the target is not even looked at).
    pub fn has_rewrites(&self) -> bool {
        !self.rewrites.is_empty()
    }

    /// The rewrite rules for [`crate::rewrite::rewrite`].
    pub fn rewrites(&self) -> impl Iterator<Item = (&Regex, &str)> {
        self.rewrites.iter().map(|(re, dst)| (re, &**dst))
    }
}

/// Patterns compiled together, answering "which is the first (lowest index) that matches"
/// without allocating: `regex::RegexSet` makes a new match set on every search, so this keeps
/// its search cache and match set, reused by every request (a worker is one thread, and a
/// lookup never yields).
struct Set {
    re: meta::Regex,
    cache: RefCell<meta::Cache>,
    found: RefCell<PatternSet>,
}

impl Set {
    fn new(patterns: &[String], case_insensitive: bool) -> Result<Set, String> {
        let re = meta::Builder::new()
            // Every pattern that matches, not just the leftmost: config order decides.
            .configure(meta::Config::new().match_kind(MatchKind::All))
            .syntax(syntax::Config::new().case_insensitive(case_insensitive))
            .build_many(patterns)
            .map_err(|e| e.to_string())?;
        let cache = RefCell::new(re.create_cache());
        let found = RefCell::new(PatternSet::new(re.pattern_len()));
        Ok(Set { re, cache, found })
    }

    /// The lowest index of a pattern matching `haystack`.
    fn first(&self, haystack: &[u8]) -> Option<usize> {
        let mut found = self.found.borrow_mut();
        found.clear();
        self.re.which_overlapping_matches_with(
            &mut self.cache.borrow_mut(),
            &Input::new(haystack),
            &mut found,
        );
        found.iter().next().map(|p| p.as_usize())
    }
}

/// The compiled rules of one vhost; its routes are `routes[first..first + count]`.
struct VhostRoutes {
    first: usize,
    /// Exact path -> index of the first exact rule with that path.
    exact: HashMap<Box<str>, usize>,
    /// Glob and regex rules, in config order; `None` when the vhost has none.
    set: Option<Set>,
    /// Set pattern -> rule index.
    set_rule: Vec<usize>,
    log: Option<Rc<AccessLog>>,
}

/// The routes of one `[[server]]`.
pub struct RouteTable {
    /// Flat form: exactly one. Routed: every rule of every vhost, in config order.
    routes: Vec<Route>,
    /// Empty in the flat form.
    vhosts: Vec<VhostRoutes>,
    /// ASCII-lowercased vhost names and aliases without `*` (at most [`HOST_BUF`] bytes) ->
    /// the first vhost with that name.
    exact_hosts: HashMap<Box<[u8]>, usize>,
    /// The other names and aliases, in config order; `None` when there are none.
    glob_hosts: Option<Set>,
    /// Glob pattern -> vhost index.
    glob_vhost: Vec<usize>,
    /// The server's settings, for a connection before its first request is routed.
    default_timeouts: Timeouts,
    /// The server's access log: the flat route's, and for requests no vhost takes.
    server_log: Option<Rc<AccessLog>>,
    /// Each distinct access log once.
    logs: Vec<Rc<AccessLog>>,
    /// Some rule tunnels (the HTTP stage then reads a connection's first head itself).
    any_passthrough: bool,
    /// Some rule overrides the client write timeout (connections then carry a settable one).
    any_write_override: bool,
}

/// The longest host name looked up in the exact map (DNS names have at most 253 bytes); it is
/// lowercased on the stack, so the lookup does not allocate.
const HOST_BUF: usize = 256;

/// Why no route: the log that records the 404 (the vhost's, or the server's).
pub type Miss<'a> = Option<&'a Rc<AccessLog>>;

fn extension_names(h: &Headers) -> Vec<HeaderName> {
    h.x509_extensions
        .iter()
        .filter_map(|x| HeaderName::from_bytes(x.name.as_bytes()).ok())
        .collect()
}

fn server_timeouts(server: &Server) -> Timeouts {
    Timeouts {
        read: server.read_timeout,
        write: server.write_timeout,
    }
}

/// The name a vhost is looked up by: SNI, else Host without its port (`[v6]:port` keeps its
/// brackets) and without a trailing dot (`example.com.` is `example.com`).
pub fn host_name(host: &[u8]) -> &[u8] {
    let h = if host.first() == Some(&b'[') {
        match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(colon) => &host[..colon],
            None => host,
        }
    };
    h.strip_suffix(b".").unwrap_or(h)
}

impl RouteTable {
    /// The flat form of `server`: one route over all its enabled downstreams.
    pub fn flat(server: &Server, log: Option<Rc<AccessLog>>) -> RouteTable {
        let members = server
            .downstreams
            .iter()
            .enumerate()
            .filter(|(_, d)| d.enabled)
            .map(|(i, _)| i)
            .collect();
        let route = Route {
            name: None,
            members: Rc::new(Members::new(members, server.lb_method)),
            no_downstreams: false,
            rewrites: server
                .rewrites
                .iter()
                .map(|r| (r.src.clone(), r.dst.as_str().into()))
                .collect(),
            headers: server.headers.clone(),
            extension_names: extension_names(&server.headers),
            timeouts: server_timeouts(server),
            passthrough: false,
            strip: Rc::from(Vec::new()),
            log: log.clone(),
            metrics_rule: 0,
        };
        RouteTable {
            routes: vec![route],
            vhosts: Vec::new(),
            exact_hosts: HashMap::new(),
            glob_hosts: None,
            glob_vhost: Vec::new(),
            default_timeouts: server_timeouts(server),
            logs: log.iter().cloned().collect(),
            server_log: log,
            any_passthrough: false,
            any_write_override: false,
        }
    }

    /// The table of `server`: flat without vhosts, routed with. `server_log` is the server's
    /// own access log; each vhost's `logging` opens its own (a vhost without one uses the
    /// server's).
    pub fn build(
        config: &Config,
        server: &Server,
        server_log: Option<Rc<AccessLog>>,
        state: &WorkerState,
    ) -> Result<RouteTable, String> {
        if server.vhosts.is_empty() {
            return Ok(RouteTable::flat(server, server_log));
        }
        let mut t = RouteTable::flat(server, server_log);
        t.routes.clear();
        let mut host_patterns = Vec::new();
        for (vi, v) in server.vhosts.iter().enumerate() {
            for name in std::iter::once(&v.name).chain(&v.aliases) {
                if name.contains('*') || !name.is_ascii() || name.len() > HOST_BUF {
                    host_patterns.push(glob::to_regex(name));
                    t.glob_vhost.push(vi);
                } else {
                    let key = name.to_ascii_lowercase().into_bytes().into_boxed_slice();
                    t.exact_hosts.entry(key).or_insert(vi);
                }
            }
            let log = match &v.logging {
                Some(l) => {
                    let log = AccessLog::new(config, Some(l), state);
                    t.logs.extend(log.iter().cloned());
                    log
                }
                None => t.server_log.clone(),
            };
            t.add_vhost(server, v, log)?;
        }
        if !host_patterns.is_empty() {
            t.glob_hosts = Some(Set::new(&host_patterns, true)?);
        }
        t.any_passthrough = t.routes.iter().any(|r| r.passthrough);
        t.any_write_override = t
            .routes
            .iter()
            .any(|r| r.timeouts.write != t.default_timeouts.write);
        Ok(t)
    }

    /// Compile `v`'s rules onto the table.
    fn add_vhost(
        &mut self,
        server: &Server,
        v: &Vhost,
        log: Option<Rc<AccessLog>>,
    ) -> Result<(), String> {
        let first = self.routes.len();
        let strip: Rc<[HeaderName]> = v
            .strip_headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        let mut exact = HashMap::new();
        let mut patterns = Vec::new();
        let mut set_rule = Vec::new();
        for (ri, r) in v.rules.iter().enumerate() {
            match &r.uri {
                UriMatch::Exact(p) => {
                    exact.entry(p.as_str().into()).or_insert(ri);
                }
                UriMatch::Glob(g) => {
                    patterns.push(glob::to_regex(g));
                    set_rule.push(ri);
                }
                UriMatch::Regex(re) => {
                    patterns.push(re.as_str().to_owned());
                    set_rule.push(ri);
                }
            }
            let headers = r
                .headers
                .as_ref()
                .or(v.headers.as_ref())
                .unwrap_or(&server.headers)
                .clone();
            let members = r
                .downstreams
                .iter()
                .copied()
                .filter(|&i| server.downstreams[i].enabled)
                .collect();
            self.routes.push(Route {
                name: Some(r.name.as_str().into()),
                members: Rc::new(Members::new(
                    members,
                    r.lb_method.unwrap_or(server.lb_method),
                )),
                no_downstreams: r.downstreams.is_empty(),
                rewrites: r
                    .rewrite
                    .iter()
                    .map(|rw| (rw.src.clone(), rw.dst.as_str().into()))
                    .collect(),
                extension_names: extension_names(&headers),
                headers,
                timeouts: Timeouts {
                    read: r.upstream_read_timeout.or(server.read_timeout),
                    write: r.upstream_write_timeout.or(server.write_timeout),
                },
                passthrough: r.passthrough,
                strip: Rc::clone(&strip),
                log: log.clone(),
                // Rules are numbered vhost-major from 1, as `metrics::Layout` does.
                metrics_rule: self.routes.len() as u32 + 1,
            });
        }
        let set = if patterns.is_empty() {
            None
        } else {
            Some(Set::new(&patterns, false)?)
        };
        self.vhosts.push(VhostRoutes {
            first,
            exact,
            set,
            set_rule,
            log,
        });
        Ok(())
    }

    /// The route for a request: `sni` (the TLS server name, when the connection has one) or
    /// else `host` (the Host header as received) chooses the vhost, `path` (without query) the
    /// rule. `Err` when nothing matches (404), with the access log that records it. The flat
    /// form ignores all three. `path` is bytes as read (checked as UTF-8 only here, when some
    /// rule is to match it: the flat form never pays for it; not UTF-8 matches as empty).
    pub fn lookup(
        &self,
        sni: Option<&str>,
        host: Option<&[u8]>,
        path: impl AsRef<[u8]>,
    ) -> Result<&Route, Miss<'_>> {
        if self.vhosts.is_empty() {
            return Ok(&self.routes[0]);
        }
        let path = std::str::from_utf8(path.as_ref()).unwrap_or("");
        let name = match sni {
            Some(s) => Some(s.as_bytes()),
            None => host.map(host_name),
        };
        let Some(vi) = name.and_then(|n| self.first_vhost(n)) else {
            return Err(self.server_log.as_ref());
        };
        let v = &self.vhosts[vi];
        match self.first_rule(v, path) {
            Some(ri) => Ok(&self.routes[v.first + ri]),
            None => Err(v.log.as_ref()),
        }
    }

    /// The first vhost (config order) taking `name`: the exact names' hit, unless a glob of an
    /// earlier vhost matches too.
    fn first_vhost(&self, name: &[u8]) -> Option<usize> {
        let mut buf = [0u8; HOST_BUF];
        let exact = buf.get_mut(..name.len()).and_then(|b| {
            b.copy_from_slice(name);
            b.make_ascii_lowercase();
            self.exact_hosts.get(&*b).copied()
        });
        let before = exact.unwrap_or(usize::MAX);
        if self.glob_vhost.first().is_none_or(|&g| g > before) {
            return exact;
        }
        // Glob patterns are in vhost order: the first pattern is the first vhost.
        let glob = self
            .glob_hosts
            .as_ref()
            .and_then(|set| set.first(name))
            .map(|p| self.glob_vhost[p]);
        match (exact, glob) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn first_rule(&self, v: &VhostRoutes, path: &str) -> Option<usize> {
        let exact = v.exact.get(path).copied();
        let set = v
            .set
            .as_ref()
            .and_then(|set| set.first(path.as_bytes()))
            .map(|p| v.set_rule[p]);
        match (exact, set) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Client timeouts of a connection before its first request is routed: the server's.
    pub fn connection_timeouts(&self) -> Timeouts {
        self.default_timeouts
    }

    /// The server's access log: requests refused before routing and requests no vhost takes.
    pub fn server_log(&self) -> Option<&Rc<AccessLog>> {
        self.server_log.as_ref()
    }

    /// Some rule tunnels raw bytes after the request head.
    pub fn any_passthrough(&self) -> bool {
        self.any_passthrough
    }

    /// Some rule's client write timeout differs from the server's.
    pub fn any_write_override(&self) -> bool {
        self.any_write_override
    }

    /// Every access log of the table, once each (for flushing and reopening).
    pub fn logs(&self) -> impl Iterator<Item = &Rc<AccessLog>> {
        self.logs.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn server(toml: &str) -> Server {
        crate::testing::config(toml).servers.remove(0)
    }

    fn routed(toml: &str) -> RouteTable {
        let config = crate::testing::config(toml);
        let state = WorkerState::new(Arc::new(config.clone()), Vec::new(), false, Vec::new());
        RouteTable::build(&config, &config.servers[0], None, &state).unwrap()
    }

    #[test]
    fn flat_form_is_one_unnamed_route_for_every_request() {
        let s = server(
            r#"
            [[server]]
            port = 8080
            lb-method = "roundrobin"
            read-timeout = 0
            write-timeout = 7
            [[server.downstream]]
            addr = "127.0.0.1"
            port = 9001
            [[server.downstream]]
            addr = "127.0.0.1"
            port = 9002
            enabled = false
            [[server.downstream]]
            addr = "127.0.0.1"
            port = 9003
            [[server.rewrite]]
            src = "^(/a/)"
            dst = "/b/"
            "#,
        );
        let t = RouteTable::flat(&s, None);
        let a = t.lookup(None, Some(b"example.com"), "/a/x").ok().unwrap();
        let b = t.lookup(None, None, "/").ok().unwrap();
        assert!(std::ptr::eq(a, b));
        assert_eq!(a.name(), None);
        assert!(!a.passthrough);
        assert!(a.log.is_none());
        assert_eq!(a.members.indices(), &[0, 2]);
        assert_eq!(a.members.lb(), rproxy_shared::config::LbMethod::Roundrobin);
        assert_eq!(a.timeouts.read, None);
        assert_eq!(a.timeouts.write, Some(Duration::from_secs(7)));
        assert_eq!(t.connection_timeouts(), a.timeouts);
        let rules: Vec<&str> = a.rewrites().map(|(_, dst)| dst).collect();
        assert_eq!(rules, ["/b/"]);
        assert_eq!(t.logs().count(), 0);
        assert!(!t.any_passthrough());
    }

    const ROUTED: &str = r#"
        [[server]]
        port = 8080
        lb-method = "roundrobin"
        write-timeout = 7
        [[server.downstream]]
        name = "a"
        addr = "127.0.0.1"
        port = 9001
        [[server.downstream]]
        name = "b"
        addr = "127.0.0.1"
        port = 9002
        [[server.vhost]]
        name = "*.example.com"
        aliases = ["example.com", "[::1]"]
        strip-headers = ["Server"]
          [server.vhost.headers]
          x-forwarded-for = false
          [[server.vhost.rule]]
          name = "exact"
          uri-match = "/api/special"
          downstreams = ["b"]
          lb-method = "random"
          upstream-write-timeout = 3
          [[server.vhost.rule]]
          name = "api"
          uri-rmatch = "^/api/"
          downstreams = ["a", "b"]
          [server.vhost.rule.headers]
          x-forwarded-for = true
          [[server.vhost.rule]]
          name = "static"
          uri-gmatch = "*.css"
          downstreams = ["a"]
          passthrough = true
          [[server.vhost.rule]]
          name = "none"
          uri-match = "/none"
          downstreams = []
        [[server.vhost]]
        name = "*"
          [[server.vhost.rule]]
          name = "all"
          uri-gmatch = "/*"
          downstreams = ["a"]
    "#;

    fn rule<'a>(t: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
        t.lookup(None, Some(host.as_bytes()), path)
            .ok()
            .and_then(Route::name)
    }

    #[test]
    fn vhost_by_glob_alias_port_case_and_ipv6() {
        let t = routed(ROUTED);
        assert_eq!(rule(&t, "www.example.com", "/api/x"), Some("api"));
        assert_eq!(rule(&t, "WWW.Example.COM:8080", "/api/x"), Some("api"));
        assert_eq!(rule(&t, "example.com", "/api/x"), Some("api"));
        assert_eq!(rule(&t, "example.com.", "/api/x"), Some("api"));
        assert_eq!(rule(&t, "[::1]:8080", "/api/x"), Some("api"));
        assert_eq!(rule(&t, "[::2]:8080", "/api/x"), Some("all"));
        assert_eq!(rule(&t, "other.test", "/api/x"), Some("all"));
        // SNI wins over Host.
        let r = t.lookup(Some("example.com"), Some(b"other.test"), "/api/x");
        assert_eq!(r.ok().and_then(Route::name), Some("api"));
    }

    #[test]
    fn first_rule_in_config_order() {
        let t = routed(ROUTED);
        assert_eq!(rule(&t, "example.com", "/api/special"), Some("exact"));
        assert_eq!(rule(&t, "example.com", "/api/specialx"), Some("api"));
        assert_eq!(rule(&t, "example.com", "/a/b.css"), Some("static"));
        assert_eq!(rule(&t, "example.com", "/api/b.css"), Some("api"));
        assert_eq!(rule(&t, "example.com", "/none"), Some("none"));
        assert!(t.lookup(None, Some(b"example.com"), "/nothing").is_err());
    }

    #[test]
    fn no_vhost_no_rule_no_host() {
        let mut text = ROUTED.to_string();
        text.truncate(
            text.find("        [[server.vhost]]\n        name = \"*\"")
                .unwrap(),
        );
        let t = routed(&text);
        assert!(t.lookup(None, Some(b"other.test"), "/api/x").is_err());
        assert!(t.lookup(None, None, "/api/x").is_err());
        assert!(t.lookup(None, Some(b"example.com"), "/x").is_err());
    }

    #[test]
    fn per_rule_settings() {
        let t = routed(ROUTED);
        let get = |p: &str| t.lookup(None, Some(b"example.com"), p).ok().unwrap();
        let exact = get("/api/special");
        assert_eq!(exact.members.indices(), &[1]);
        assert_eq!(exact.members.lb(), rproxy_shared::config::LbMethod::Random);
        assert!(!exact.headers.x_forwarded_for, "the vhost's headers");
        assert_eq!(exact.timeouts.write, Some(Duration::from_secs(3)));
        assert_eq!(exact.timeouts.read, Some(Duration::from_secs(60)));
        assert_eq!(&*exact.strip, &[http::header::SERVER]);
        let api = get("/api/x");
        assert_eq!(api.members.indices(), &[0, 1]);
        assert_eq!(
            api.members.lb(),
            rproxy_shared::config::LbMethod::Roundrobin
        );
        assert!(api.headers.x_forwarded_for, "the rule's headers replace");
        assert!(get("/x.css").passthrough);
        assert!(get("/none").no_downstreams);
        assert!(!api.no_downstreams);
        assert!(t.any_passthrough());
        assert!(t.any_write_override());
        let all = t.lookup(None, Some(b"x"), "/").ok().unwrap();
        assert!(all.strip.is_empty());
        assert!(all.headers.x_forwarded_for);
    }

    #[test]
    fn exact_and_glob_names_keep_config_order() {
        let t = routed(
            r#"
            [[server]]
            port = 8080
            [[server.downstream]]
            name = "a"
            addr = "127.0.0.1"
            port = 9001
            [[server.vhost]]
            name = "first.test"
            [[server.vhost.rule]]
            name = "first"
            uri-gmatch = "*"
            downstreams = ["a"]
            [[server.vhost]]
            name = "*.example.com"
            [[server.vhost.rule]]
            name = "glob"
            uri-gmatch = "*"
            downstreams = ["a"]
            [[server.vhost]]
            name = "www.example.com"
            aliases = ["first.test", "Other.Test"]
            [[server.vhost.rule]]
            name = "exact"
            uri-gmatch = "*"
            downstreams = ["a"]
            "#,
        );
        assert_eq!(rule(&t, "first.test", "/"), Some("first"));
        assert_eq!(
            rule(&t, "www.example.com", "/"),
            Some("glob"),
            "an earlier glob wins"
        );
        assert_eq!(rule(&t, "OTHER.test:1", "/"), Some("exact"));
        assert!(t.lookup(None, Some(b"example.com"), "/").is_err());
        let long = "a".repeat(300);
        assert!(t.lookup(None, Some(long.as_bytes()), "/").is_err());
    }

    #[test]
    fn host_name_drops_port_keeps_brackets() {
        assert_eq!(host_name(b"a.test:80"), b"a.test");
        assert_eq!(host_name(b"a.test"), b"a.test");
        assert_eq!(host_name(b"[::1]:80"), b"[::1]");
        assert_eq!(host_name(b"[::1]"), b"[::1]");
        assert_eq!(host_name(b"a.test.:80"), b"a.test");
    }

    fn many() -> RouteTable {
        use std::fmt::Write;
        let mut text = String::from(
            "[[server]]\nport = 8080\n[[server.downstream]]\nname = \"a\"\naddr = \"127.0.0.1\"\nport = 9001\n",
        );
        for v in 0..50 {
            let _ = write!(text, "[[server.vhost]]\nname = \"v{v}.example.com\"\n");
            for r in 0..20 {
                let m = match r % 3 {
                    0 => format!("uri-match = \"/r{r}\""),
                    1 => format!("uri-gmatch = \"/r{r}/*\""),
                    _ => format!("uri-rmatch = \"^/r{r}/x\""),
                };
                let _ = write!(
                    text,
                    "[[server.vhost.rule]]\nname = \"v{v}r{r}\"\n{m}\ndownstreams = [\"a\"]\n"
                );
            }
        }
        routed(&text)
    }

    #[test]
    fn last_rule_of_last_vhost_of_many() {
        let t = many();
        assert_eq!(rule(&t, "v49.example.com", "/r19/y"), Some("v49r19"));
        assert_eq!(rule(&t, "v49.example.com", "/r18"), Some("v49r18"));
        assert_eq!(rule(&t, "v0.example.com", "/r2/x"), Some("v0r2"));
        assert!(t.lookup(None, Some(b"v50.example.com"), "/r1/").is_err());
    }

    #[test]
    fn lookup_allocates_nothing() {
        let t = many();
        let flat = routed(
            "[[server]]\nport = 8080\n[[server.downstream]]\naddr = \"127.0.0.1\"\nport = 9001\n",
        );
        // A set's lazy DFA adds states (allocating) the first times it meets new input; once
        // warm, lookups must not allocate.
        let mut before = 0;
        for i in 0..101 {
            if i == 1 {
                before = crate::testing::counting::count();
            }
            let r = t.lookup(None, Some(b"v49.example.com:80"), "/r19/y");
            assert!(r.is_ok());
            assert!(t.lookup(None, Some(b"nobody.test"), "/r19/y").is_err());
            assert!(t.lookup(None, Some(b"v3.example.com"), "/zzz").is_err());
            assert!(flat.lookup(None, Some(b"x"), "/").is_ok());
        }
        assert_eq!(
            crate::testing::counting::count() - before,
            0,
            "the lookup allocated"
        );
    }

    /// Each route's `metrics_rule` is the slot `rproxy_shared::metrics::Layout` gives its rule,
    /// so the master names the counters after the right rule.
    #[test]
    fn metrics_rule_slots_match_the_layout() {
        let text = "[[server]]\nport = 8080\n[[server.downstream]]\nname = \"a\"\n\
            addr = \"127.0.0.1\"\nport = 9001\n\
            [[server.vhost]]\nname = \"x.test\"\n\
            [[server.vhost.rule]]\nname = \"one\"\nuri-match = \"/1\"\ndownstreams = [\"a\"]\n\
            [[server.vhost.rule]]\nname = \"two\"\nuri-match = \"/2\"\ndownstreams = [\"a\"]\n\
            [[server.vhost]]\nname = \"y.test\"\n\
            [[server.vhost.rule]]\nname = \"one\"\nuri-match = \"/1\"\ndownstreams = []\n";
        let config = crate::testing::config(text);
        let layout = rproxy_shared::metrics::Layout::new(&config);
        let t = routed(text);
        for (host, path, vi, ri) in [
            (&b"x.test"[..], "/1", 0, 0),
            (b"x.test", "/2", 0, 1),
            (b"y.test", "/1", 1, 0),
        ] {
            let r = t.lookup(None, Some(host), path).ok().unwrap();
            assert_eq!(r.metrics_rule, layout.rule_slot(0, vi, ri));
            assert_ne!(r.metrics_rule, 0);
        }
        let flat = routed(
            "[[server]]\nport = 8080\n[[server.downstream]]\naddr = \"127.0.0.1\"\nport = 9001\n",
        );
        assert_eq!(flat.lookup(None, None, "/").ok().unwrap().metrics_rule, 0);
    }

    /// Counting a request, a connection, bytes and a handshake allocates nothing.
    #[test]
    fn counting_metrics_allocates_nothing() {
        use crate::metrics;
        use rproxy_shared::metrics::ServerCounter;
        let config = crate::testing::config(
            "[[server]]\nport = 8080\n[[server.downstream]]\naddr = \"127.0.0.1\"\nport = 9001\n",
        );
        metrics::init(&config);
        let before = crate::testing::counting::count();
        for i in 0..100u16 {
            let open = metrics::conn_opened(0);
            metrics::tls_handshake(0, Some(i % 2 == 0));
            let timer = metrics::RequestTimer::start(0);
            metrics::count(0, ServerCounter::BytesIn, 100);
            timer.done(0, Some(200 + i % 300));
            metrics::refused(0, 400);
            drop(timer);
            drop(open);
        }
        assert_eq!(
            crate::testing::counting::count() - before,
            0,
            "counting allocated"
        );
        // And it counted: 100 requests in three classes, 100 refusals, bytes, handshakes.
        let mut values = 0;
        metrics::report(|u| {
            values += u.values.len();
            true
        });
        assert!(values >= 6, "{values}");
    }

    /// Every case resolves as expected on every lookup, and the time per lookup is printed:
    /// `cargo test --release -p rproxy-worker --lib lookup_cost -- --nocapture` for the figures
    /// quoted in bench/README.md (a debug build is ~20x slower; nothing here asserts on time).
    #[test]
    fn lookup_cost() {
        let t = many();
        let flat = routed(
            "[[server]]\nport = 8080\n[[server.downstream]]\naddr = \"127.0.0.1\"\nport = 9001\n",
        );
        let n = if cfg!(debug_assertions) {
            10_000
        } else {
            1_000_000
        };
        for (what, table, host, path, found) in [
            ("flat", &flat, &b"x"[..], "/small", true),
            (
                "routed, last rule of last vhost",
                &t,
                &b"v49.example.com"[..],
                "/r19/y",
                true,
            ),
            (
                "routed, exact rule of last vhost",
                &t,
                &b"v49.example.com"[..],
                "/r18",
                true,
            ),
            ("routed, no vhost", &t, &b"nobody.test"[..], "/r19/y", false),
        ] {
            let start = std::time::Instant::now();
            for _ in 0..n {
                let hit = table
                    .lookup(None, std::hint::black_box(Some(host)), path)
                    .is_ok();
                assert_eq!(std::hint::black_box(hit), found, "{what}");
            }
            println!(
                "{what}: {:.0} ns/lookup",
                start.elapsed().as_nanos() as f64 / n as f64
            );
        }
    }
}
