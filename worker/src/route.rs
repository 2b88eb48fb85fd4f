//! Where a request goes: a [`RouteTable`] compiled once per configuration per server when the
//! worker starts, and looked up per request without allocating. Everything a request needs to
//! know about its destination (downstreams, balancing, rewrites, headers, timeouts, log) is on
//! the [`Route`], so the later stages never read the configuration.
//!
//! Today only the flat form exists (no vhosts: they are refused at start): one implicit route,
//! which every request takes. Vhost and rule routing land here, behind the same lookup.

use std::rc::Rc;
use std::time::Duration;

use http::HeaderName;
use regex::Regex;
use rproxy_shared::config::{Headers, Server};

use crate::access_log::AccessLog;
use crate::pool::Members;

/// Client-side timeouts of a route.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Request head and idle keep-alive wait; `None` = no limit.
    pub read: Option<Duration>,
    /// A blocked write to the client; `None` = no limit.
    pub write: Option<Duration>,
}

/// One destination: a vhost rule, or the whole server in the flat form.
pub struct Route {
    /// `{RULE}` in the access log; `None` for the flat form (logged as `-`).
    name: Option<Box<str>>,
    /// The downstreams of this route, the LB method and its round-robin state.
    pub members: Rc<Members>,
    /// `(src, dst)` in configuration order; the first match wins.
    rewrites: Vec<(Regex, Box<str>)>,
    pub headers: Headers,
    /// Configured x509-extension header names: stripped from clients' requests.
    pub extension_names: Vec<HeaderName>,
    pub timeouts: Timeouts,
    /// Tunnel raw bytes after the request head (RProxy's `passthrough` rules); never for flat.
    // Read by the forward stage once rules exist.
    #[allow(dead_code)]
    pub passthrough: bool,
    pub log: Option<Rc<AccessLog>>,
}

impl Route {
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The rewrite rules for [`crate::rewrite::rewrite`].
    pub fn rewrites(&self) -> impl Iterator<Item = (&Regex, &str)> {
        self.rewrites.iter().map(|(re, dst)| (re, &**dst))
    }
}

/// The routes of one `[[server]]`.
pub struct RouteTable {
    /// Never empty (the flat form is exactly one route), so the connection default exists.
    routes: Vec<Route>,
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
            rewrites: server
                .rewrites
                .iter()
                .map(|r| (r.src.clone(), r.dst.as_str().into()))
                .collect(),
            headers: server.headers.clone(),
            extension_names: server
                .headers
                .x509_extensions
                .iter()
                .filter_map(|x| HeaderName::from_bytes(x.name.as_bytes()).ok())
                .collect(),
            timeouts: Timeouts {
                read: server.read_timeout,
                write: server.write_timeout,
            },
            passthrough: false,
            log,
        };
        RouteTable {
            routes: vec![route],
        }
    }

    /// The route for a request to `host` (the Host header, without port) and `path`; `None`
    /// when nothing matches (404). The flat form ignores both.
    pub fn lookup(&self, _host: Option<&[u8]>, _path: &str) -> Option<&Route> {
        self.routes.first()
    }

    /// The route whose settings apply to a connection before its first request is read (client
    /// timeouts, header limits): the flat route, later the default vhost.
    pub fn connection_default(&self) -> &Route {
        &self.routes[0]
    }

    /// Every route's access log, once each (for flushing and reopening).
    pub fn logs(&self) -> impl Iterator<Item = &Rc<AccessLog>> {
        self.routes.iter().filter_map(|r| r.log.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(toml: &str) -> Server {
        crate::testing::config(toml).servers.remove(0)
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
        let a = t.lookup(Some(b"example.com"), "/a/x").unwrap();
        let b = t.lookup(None, "/").unwrap();
        assert!(std::ptr::eq(a, b));
        assert!(std::ptr::eq(a, t.connection_default()));
        assert_eq!(a.name(), None);
        assert!(!a.passthrough);
        assert!(a.log.is_none());
        assert_eq!(a.members.indices(), &[0, 2]);
        assert_eq!(a.members.lb(), rproxy_shared::config::LbMethod::Roundrobin);
        assert_eq!(a.timeouts.read, None);
        assert_eq!(a.timeouts.write, Some(Duration::from_secs(7)));
        let rules: Vec<&str> = a.rewrites().map(|(_, dst)| dst).collect();
        assert_eq!(rules, ["/b/"]);
        assert_eq!(t.logs().count(), 0);
    }
}
