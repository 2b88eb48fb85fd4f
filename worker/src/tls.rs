//! The TLS stage, between accept and HTTP: today an empty seam, every connection is plain.
//!
//! What lands here: the handshake on a `[server.ssl]` listener (with the contexts the master
//! built), SNI to pick the vhost's context, ALPN (`h2` or `http/1.1`), and the client-certificate
//! facts the X-SSL-* headers print (DESIGN sections 6 and 7). Its output is a stream the HTTP
//! stage serves (that stage is generic over the stream type) and the [`ConnInfo`] below with
//! `scheme = Https` and `tls` filled.

use std::net::SocketAddr;

use rproxy_shared::cidr::Cidr;

use crate::headers::Peer;

/// The scheme the client used: `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    // Made by the TLS stage once it exists.
    #[allow(dead_code)]
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What the handshake learnt, for the X-SSL-* headers and routing by SNI. A placeholder: no
/// connection has TLS yet, so no value of it exists.
#[derive(Debug)]
pub enum TlsFacts {}

/// What the stages after accept know about one client connection, computed once per
/// connection so that requests only borrow it.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer as the forwarding headers print it.
    pub forwarded: Peer,
    pub scheme: Scheme,
    /// Always `None` until the TLS stage fills it.
    #[allow(dead_code)]
    pub tls: Option<TlsFacts>,
}

impl ConnInfo {
    /// The TLS server name the client asked for (SNI): it chooses the vhost before Host does.
    /// None until the TLS stage exists (no `TlsFacts` value can be made yet).
    pub fn sni(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| match *t {})
    }
}

/// A connection that goes straight to HTTP (a listener without `ssl`).
pub fn plain(peer: SocketAddr, trusted: &[Cidr]) -> ConnInfo {
    ConnInfo {
        peer,
        forwarded: Peer::new(peer.ip(), trusted),
        scheme: Scheme::Http,
        tls: None,
    }
}
