//! The TLS stage, between accept and HTTP: the handshake on a `[server.ssl]` listener with the
//! context the master built before fork (SNI has already switched to a vhost's context inside
//! it, and ALPN chosen `h2` or `http/1.1`), under the server's `read-timeout`. Its output is a
//! stream the HTTP stage serves (that stage is generic over the stream type) and the
//! [`ConnInfo`] with `scheme = Https` and the [`TlsFacts`]: the SNI name (for routing) and the
//! client-certificate values the X-SSL-* headers print (DESIGN sections 6 and 7), formatted
//! once per connection so requests only clone header values.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use foreign_types::{ForeignType, ForeignTypeRef};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use openssl::asn1::Asn1Object;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ssl::{NameType, Ssl, SslContext, SslRef};
use openssl::x509::{X509NameRef, X509Ref};
use rproxy_shared::cidr::Cidr;
use rproxy_shared::config::{Headers, Server};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::headers::Peer;
use crate::net::TcpStream;

/// The scheme the client used: `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
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

/// What the handshake learnt, for the X-SSL-* headers and routing by SNI.
#[derive(Debug)]
pub struct TlsFacts {
    /// The server name the client asked for (lowercase), for vhost routing.
    pub sni: Option<Box<str>>,
    /// `X-SSL-Cipher`.
    pub cipher: Option<HeaderValue>,
    /// Present when the client sent a certificate (verified, when `verify-peer` is on).
    pub client: Option<ClientCert>,
}

/// A client certificate's values in RProxy's formats, ready to be header values.
#[derive(Debug)]
pub struct ClientCert {
    pub subject: Option<HeaderValue>,
    pub issuer: Option<HeaderValue>,
    pub not_before: Option<HeaderValue>,
    pub not_after: Option<HeaderValue>,
    pub serial: Option<HeaderValue>,
    pub sha1: Option<HeaderValue>,
    pub certificate: Option<HeaderValue>,
    /// `(oid, value)` for every configured x509-extension the certificate carries.
    pub extensions: Vec<(Box<str>, HeaderValue)>,
}

/// What the stages after accept know about one client connection, computed once per
/// connection so that requests only borrow it.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer as the forwarding headers print it.
    pub forwarded: Peer,
    pub scheme: Scheme,
    /// `None` on a plain listener. Boxed: a plain connection does not carry its size.
    pub tls: Option<Box<TlsFacts>>,
}

impl ConnInfo {
    /// The TLS server name (SNI, lowercase) the client asked for: what the route lookup
    /// takes as `Option<&str>`.
    pub fn sni(&self) -> Option<&str> {
        self.tls.as_ref().and_then(|t| t.sni.as_deref())
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

/// The TLS side of one `[[server]]`, built once per worker.
pub struct Acceptor {
    ctx: SslContext,
    /// The server's `read-timeout`: a client that does not finish its handshake in time.
    timeout: Option<Duration>,
    /// Every x509-extension OID any headers section of the server asks for.
    oids: Vec<(Box<str>, Asn1Object)>,
}

impl Acceptor {
    pub fn new(ctx: SslContext, cfg: &Server) -> Acceptor {
        let sections = std::iter::once(&cfg.headers).chain(cfg.vhosts.iter().flat_map(|v| {
            v.headers
                .iter()
                .chain(v.rules.iter().filter_map(|r| r.headers.as_ref()))
        }));
        let mut oids: Vec<(Box<str>, Asn1Object)> = Vec::new();
        for h in sections {
            for x in &h.x509_extensions {
                if oids.iter().any(|(o, _)| **o == *x.oid) {
                    continue;
                }
                // Validation checked that OpenSSL knows the OID.
                if let Ok(obj) = Asn1Object::from_str(&x.oid) {
                    oids.push((x.oid.as_str().into(), obj));
                }
            }
        }
        Acceptor {
            ctx,
            timeout: cfg.read_timeout,
            oids,
        }
    }

    /// The handshake; `None` (after a debug line) when it fails or times out. The returned
    /// `bool` says the client chose HTTP/2 by ALPN.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        trusted: &[Cidr],
    ) -> Option<(TlsStream, ConnInfo, bool)> {
        let ssl = match Ssl::new(&self.ctx) {
            Ok(s) => s,
            Err(e) => {
                rproxy_shared::warn!("TLS: cannot create a connection: {e}");
                return None;
            }
        };
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).ok()?;
        let accept = Pin::new(&mut stream).accept();
        let done = match self.timeout {
            Some(t) => match tokio::time::timeout(t, accept).await {
                Ok(r) => r,
                Err(_) => {
                    rproxy_shared::debug!("TLS handshake with {peer}: timed out");
                    return None;
                }
            },
            None => accept.await,
        };
        if let Err(e) = done {
            rproxy_shared::debug!("TLS handshake with {peer}: {e}");
            return None;
        }
        let ssl = stream.ssl();
        let h2 = ssl.selected_alpn_protocol() == Some(b"h2");
        let facts = self.facts(ssl);
        let info = ConnInfo {
            peer,
            forwarded: Peer::new(peer.ip(), trusted),
            scheme: Scheme::Https,
            tls: Some(Box::new(facts)),
        };
        Some((TlsStream(stream), info, h2))
    }

    fn facts(&self, ssl: &SslRef) -> TlsFacts {
        TlsFacts {
            sni: ssl
                .servername(NameType::HOST_NAME)
                .map(|n| n.to_ascii_lowercase().into_boxed_str()),
            cipher: ssl
                .current_cipher()
                .and_then(|c| HeaderValue::from_str(c.name()).ok()),
            client: ssl.peer_certificate().map(|c| self.client_cert(&c)),
        }
    }

    fn client_cert(&self, c: &X509Ref) -> ClientCert {
        let value = |s: String| HeaderValue::try_from(s).ok();
        ClientCert {
            subject: value(oneline(c.subject_name())),
            issuer: value(oneline(c.issuer_name())),
            not_before: value(c.not_before().to_string()),
            not_after: value(c.not_after().to_string()),
            serial: c
                .serial_number()
                .to_bn()
                .and_then(|b| b.to_hex_str().map(|h| h.to_string()))
                .ok()
                .and_then(value),
            sha1: c
                .digest(MessageDigest::sha1())
                .ok()
                .and_then(|d| value(colon_hex(&d))),
            certificate: c.to_pem().ok().and_then(|p| value(escape(&p))),
            extensions: self
                .oids
                .iter()
                .filter_map(|(oid, obj)| {
                    extension(c, obj)
                        .and_then(|v| HeaderValue::from_bytes(&v).ok())
                        .map(|v| (oid.clone(), v))
                })
                .collect(),
        }
    }
}

/// OpenSSL's one-line name form (`X509_NAME_oneline`): `/C=US/O=Org/CN=client`.
fn oneline(name: &X509NameRef) -> String {
    let mut out = String::new();
    for e in name.entries() {
        let obj = e.object();
        out.push('/');
        match obj.nid().short_name() {
            Ok(s) if obj.nid() != Nid::UNDEF => out.push_str(s),
            _ => out.push_str(&obj.to_string()),
        }
        out.push('=');
        out.push_str(&String::from_utf8_lossy(e.data().as_slice()));
    }
    out
}

/// `AB:CD:...`, as RProxy prints the SHA-1 fingerprint.
fn colon_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// Percent-encoding of everything but RFC 3986 unreserved characters, as nginx's
/// `$ssl_client_escaped_cert` (a PEM's line breaks cannot be in a header value).
fn escape(pem: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(pem.len() * 5 / 4);
    for &b in pem {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(b as char);
        } else {
            s.push('%');
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 15)] as char);
        }
    }
    s
}

/// The value of the extension `oid` in `c`: a DER string type is unwrapped to its text (as
/// RProxy does), anything else is given as the raw bytes when they are printable.
fn extension(c: &X509Ref, oid: &Asn1Object) -> Option<Vec<u8>> {
    // SAFETY: `c` and `oid` are valid for the call; the extension and its data are borrowed
    // from `c`, which outlives this function, and are copied before returning.
    let data = unsafe {
        let pos = openssl_sys::X509_get_ext_by_OBJ(c.as_ptr(), oid.as_ptr(), -1);
        if pos < 0 {
            return None;
        }
        let ext = openssl_sys::X509_get_ext(c.as_ptr(), pos);
        if ext.is_null() {
            return None;
        }
        let os = openssl_sys::X509_EXTENSION_get_data(ext);
        if os.is_null() {
            return None;
        }
        let os = os as *mut openssl_sys::ASN1_STRING;
        let len = usize::try_from(openssl_sys::ASN1_STRING_length(os)).ok()?;
        let p = openssl_sys::ASN1_STRING_get0_data(os);
        if p.is_null() {
            return None;
        }
        std::slice::from_raw_parts(p, len).to_vec()
    };
    Some(der_string(&data).map_or(data.clone(), <[u8]>::to_vec))
        .filter(|v| v.iter().all(|b| (0x20..0x7f).contains(b)))
}

/// The contents of a DER UTF8String, PrintableString, IA5String, T61String or OCTET STRING.
fn der_string(d: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = d.split_first()?;
    if !matches!(tag, 0x04 | 0x0c | 0x13 | 0x14 | 0x16) {
        return None;
    }
    let (&l, rest) = rest.split_first()?;
    let (len, rest) = match l {
        0..=0x7f => (usize::from(l), rest),
        0x81 => (usize::from(*rest.first()?), &rest[1..]),
        0x82 => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            rest.get(2..)?,
        ),
        _ => return None,
    };
    (rest.len() == len).then_some(rest)
}

static X_SSL_SUBJECT: HeaderName = HeaderName::from_static("x-ssl-subject");
static X_SSL_ISSUER: HeaderName = HeaderName::from_static("x-ssl-issuer");
static X_SSL_NOTBEFORE: HeaderName = HeaderName::from_static("x-ssl-notbefore");
static X_SSL_NOTAFTER: HeaderName = HeaderName::from_static("x-ssl-notafter");
static X_SSL_SERIAL: HeaderName = HeaderName::from_static("x-ssl-serial");
static X_SSL_SHA1: HeaderName = HeaderName::from_static("x-ssl-sha1");
static X_SSL_CIPHER: HeaderName = HeaderName::from_static("x-ssl-cipher");
static X_SSL_CERTIFICATE: HeaderName = HeaderName::from_static("x-ssl-certificate");

impl TlsFacts {
    /// Add the X-SSL-* and x509-extension headers `cfg` turns on. Runs after
    /// `headers::set_forwarding` removed whatever the client sent under these names.
    pub fn add_headers(&self, h: &mut HeaderMap, cfg: &Headers, extension_names: &[HeaderName]) {
        self.each_header(cfg, extension_names, |name, v| {
            h.insert(name.clone(), v.clone());
        });
    }

    /// Each X-SSL-* and x509-extension header `cfg` turns on, for a head written as bytes.
    pub fn each_header(
        &self,
        cfg: &Headers,
        extension_names: &[HeaderName],
        mut f: impl FnMut(&HeaderName, &HeaderValue),
    ) {
        let mut put = |on: bool, name: &HeaderName, v: &Option<HeaderValue>| {
            if let (true, Some(v)) = (on, v) {
                f(name, v);
            }
        };
        put(cfg.x_ssl_cipher, &X_SSL_CIPHER, &self.cipher);
        let Some(c) = &self.client else { return };
        put(cfg.x_ssl_subject, &X_SSL_SUBJECT, &c.subject);
        put(cfg.x_ssl_issuer, &X_SSL_ISSUER, &c.issuer);
        put(cfg.x_ssl_notbefore, &X_SSL_NOTBEFORE, &c.not_before);
        put(cfg.x_ssl_notafter, &X_SSL_NOTAFTER, &c.not_after);
        put(cfg.x_ssl_serial, &X_SSL_SERIAL, &c.serial);
        put(cfg.x_ssl_sha1, &X_SSL_SHA1, &c.sha1);
        put(cfg.x_ssl_certificate, &X_SSL_CERTIFICATE, &c.certificate);
        for (x, name) in cfg.x509_extensions.iter().zip(extension_names) {
            if let Some((_, v)) = c.extensions.iter().find(|(o, _)| **o == *x.oid) {
                f(name, v);
            }
        }
    }
}

extern "C" {
    // OpenSSL 1.1.0+ (the `openssl-sys` crate does not declare it).
    fn SSL_has_pending(s: *const openssl_sys::SSL) -> libc::c_int;
}

/// A client's TLS stream. Dropping it marks the connection shut down (as nginx does), so
/// OpenSSL keeps its session in the cache instead of discarding it as unclean.
pub struct TlsStream(tokio_openssl::SslStream<TcpStream>);

impl TlsStream {
    /// The handshake resumed a session (for the metrics).
    pub fn resumed(&self) -> bool {
        self.0.ssl().session_reused()
    }
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        // SAFETY: the SSL object is valid while the stream lives; setting the shutdown flags
        // only changes what SSL_free does with the session.
        unsafe {
            openssl_sys::SSL_set_shutdown(
                self.0.ssl().as_ptr(),
                openssl_sys::SSL_SENT_SHUTDOWN | openssl_sys::SSL_RECEIVED_SHUTDOWN,
            )
        };
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl crate::h1::conn::ReadReady for TlsStream {
    /// Bytes OpenSSL holds count as readable, decrypted or not (read ahead: the contexts set
    /// `read_ahead`, and a record that came with the one just read, or with the handshake's
    /// last flight, is in OpenSSL's buffer and no longer in the socket; `SSL_pending` counts
    /// only decrypted bytes, and the connection would wait for a readiness that never comes);
    /// otherwise the socket's readiness. A partial record counts too: the read that follows
    /// then finds nothing and registers for the socket, as for any stale readiness.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: the SSL object is valid while the stream lives; the call only reads it.
        if unsafe { SSL_has_pending(self.0.ssl().as_ptr()) } != 0 {
            return Poll::Ready(Ok(()));
        }
        self.0.get_ref().poll_read_ready(cx)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(colon_hex(&[0xab, 0x0c, 0x01]), "AB:0C:01");
        assert_eq!(
            escape(b"-----BEGIN CERTIFICATE-----\nMI+/=\n"),
            "-----BEGIN%20CERTIFICATE-----%0AMI%2B%2F%3D%0A"
        );
        assert_eq!(der_string(b"\x0c\x03abc"), Some(&b"abc"[..]));
        assert_eq!(der_string(b"\x30\x03abc"), None);
        assert_eq!(der_string(b"\x0c\x04abc"), None);
    }
}
