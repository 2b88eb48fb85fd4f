//! TLS termination end to end: the real binary, certificates made here with the openssl crate
//! (a small CA, a server certificate, a client certificate), clients built on the openssl
//! crate (versions, sessions, client certificates) and curl (HTTP/2 by ALPN).

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{
    Ssl, SslConnector, SslContext, SslFiletype, SslMethod, SslVerifyMode, SslVersion,
};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Extension, X509NameBuilder, X509};

/// A test CA with a server and a client certificate, as PEM files in `dir`. The server key is
/// mode 0600 (root only): the master reads it, the workers (nobody) never need to.
struct Pki {
    dir: PathBuf,
    ca: X509,
    ca_key: PKey<Private>,
    client: X509,
}

const CLIENT_OID: &str = "1.3.6.1.4.1.55555.1";

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca_key = key();
        let ca = cert(
            &[("C", "US"), ("O", "rproxy test"), ("CN", "test CA")],
            &ca_key,
            None,
            1,
            |b| {
                b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                    .unwrap();
            },
        );
        std::fs::write(dir.join("ca.crt"), ca.to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.join("ca.key"),
            ca_key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        let mut pki = Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
            client: X509::builder().unwrap().build(),
        };
        pki.server("server", "rproxy.test");
        let client_key = key();
        let client = cert(
            &[("C", "US"), ("CN", "client")],
            &client_key,
            Some((&pki.ca, &pki.ca_key)),
            0x1f2e3d,
            |b| {
                // A private extension whose value is a DER UTF8String.
                #[allow(deprecated)]
                let ext = X509Extension::new(None, None, CLIENT_OID, "ASN1:UTF8String:team-blue")
                    .unwrap();
                b.append_extension(ext).unwrap();
            },
        );
        std::fs::write(dir.join("client.crt"), client.to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.join("client.key"),
            client_key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        pki.client = client;
        pki
    }

    /// `NAME.crt` + `NAME.key` for `host`, signed by the CA.
    fn server(&self, name: &str, host: &str) -> (PathBuf, PathBuf) {
        let k = key();
        let c = cert(
            &[("CN", host)],
            &k,
            Some((&self.ca, &self.ca_key)),
            2,
            |b| {
                let san = SubjectAlternativeName::new()
                    .dns(host)
                    .build(&b.x509v3_context(Some(&self.ca), None))
                    .unwrap();
                b.append_extension(san).unwrap();
            },
        );
        let (cp, kp) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        let mut chain = c.to_pem().unwrap();
        chain.extend(self.ca.to_pem().unwrap());
        std::fs::write(&cp, chain).unwrap();
        std::fs::write(&kp, k.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let _ = Command::new("chmod").arg("600").arg(&kp).status();
        (cp, kp)
    }

    fn ssl_section(&self, extra: &str) -> String {
        format!(
            "[server.ssl]\nenabled = true\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
            self.dir.join("server.crt").display(),
            self.dir.join("server.key").display()
        )
    }
}

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn cert(
    subject: &[(&str, &str)],
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    serial: u32,
    ext: impl FnOnce(&mut openssl::x509::X509Builder),
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    for (k, v) in subject {
        name.append_entry_by_text(k, v).unwrap();
    }
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    ext(&mut b);
    b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())
        .unwrap();
    b.build()
}

/// A client context: trusts the test CA, offers only `version`, optionally a client cert.
fn client_ctx(pki: &Pki, version: SslVersion, with_cert: bool) -> SslContext {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(pki.dir.join("ca.crt")).unwrap();
    b.set_min_proto_version(Some(version)).unwrap();
    b.set_max_proto_version(Some(version)).unwrap();
    if with_cert {
        b.set_certificate_file(pki.dir.join("client.crt"), SslFiletype::PEM)
            .unwrap();
        b.set_private_key_file(pki.dir.join("client.key"), SslFiletype::PEM)
            .unwrap();
    }
    b.set_verify(SslVerifyMode::PEER);
    b.build().into_context()
}

/// One request over TLS, or the handshake error.
struct Answer {
    status: u16,
    body: String,
    cipher: String,
    cert_cn: String,
}

/// A client socket to the proxy: no Nagle delay, reads bounded at 10 s.
fn client_socket(port: u16) -> TcpStream {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp
}

/// A client connection's TLS state: SNI `sni`, and the certificate checked against it.
fn client_ssl(ctx: &SslContext, sni: &str) -> Ssl {
    let mut ssl = Ssl::new(ctx).unwrap();
    ssl.set_hostname(sni).unwrap();
    ssl.param_mut().set_host(sni).unwrap();
    ssl
}

fn tls_get(ctx: &SslContext, port: u16, sni: &str, head: &str) -> Result<Answer, String> {
    let mut s = client_ssl(ctx, sni)
        .connect(client_socket(port))
        .map_err(|e| e.to_string())?;
    let req = format!("GET /headers HTTP/1.1\r\nHost: {sni}\r\n{head}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        if out.is_empty() {
            return Err(e.to_string());
        }
    }
    let (status, body) = parse_response(&out);
    let cert_cn = s
        .ssl()
        .peer_certificate()
        .and_then(|c| {
            c.subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .next()
                .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
        })
        .unwrap_or_default();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        cipher: s
            .ssl()
            .current_cipher()
            .map(|c| c.name().to_string())
            .unwrap_or_default(),
        cert_cn,
    })
}

fn header<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

fn start(name: &str, pki: &Pki, ssl_extra: &str, global: &str) -> (Proxy, Backend) {
    let backend = Backend::start("tls");
    let port = free_port();
    let cfg = flat_config(port, &[backend.port], &pki.ssl_section(ssl_extra), global);
    (Proxy::start(name, &cfg, port), backend)
}

#[test]
fn tls_1_3_and_1_2_are_served_with_x_forwarded_proto_https() {
    let pki = Pki::new(&temp_dir("tls-basic-pki"));
    let (p, _b) = start("tls-basic", &pki, "", "workers = 2\n");
    for v in [SslVersion::TLS1_3, SslVersion::TLS1_2] {
        let ctx = client_ctx(&pki, v, false);
        let a = tls_get(
            &ctx,
            p.port,
            "rproxy.test",
            "X-Forwarded-Proto: http\r\nX-SSL-Subject: /CN=admin\r\nX-SSL-Cipher: NULL\r\n",
        )
        .unwrap_or_else(|e| panic!("{v:?}: {e}\n{}", p.log()));
        assert_eq!(a.status, 200, "{v:?}: {}", a.body);
        assert_eq!(a.cert_cn, "rproxy.test");
        assert_eq!(
            header(&a.body, "x-forwarded-proto"),
            Some("https"),
            "{}",
            a.body
        );
        // Forged, and not turned on: never reaches the downstream.
        assert_eq!(header(&a.body, "x-ssl-subject"), None, "{}", a.body);
        assert_eq!(header(&a.body, "x-ssl-cipher"), None, "{}", a.body);
    }
    // Plain HTTP on a TLS port is a failed handshake, not a request.
    let (status, _) = get(p.port, "/");
    assert_eq!(status, 0);
}

/// A client whose writes reach the socket only in the pieces it chooses: OpenSSL's first
/// `flushes` flushes (the handshake's flights) pass, then only [`Corked::release`] sends.
#[derive(Debug)]
struct Corked {
    tcp: TcpStream,
    out: Vec<u8>,
    flushes: usize,
}

impl Corked {
    fn new(tcp: TcpStream, flushes: usize) -> Corked {
        Corked {
            tcp,
            out: Vec::new(),
            flushes,
        }
    }

    /// Everything written so far, in one write (one segment on loopback with TCP_NODELAY).
    fn release(&mut self) -> std::io::Result<()> {
        self.tcp.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }
}

impl Read for Corked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Corked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.flushes == 0 {
            return Ok(());
        }
        self.flushes -= 1;
        self.release()
    }
}

/// A TLS 1.3 client connected through `Corked` (`flushes` as there), to `port`.
fn corked_client(pki: &Pki, port: u16, flushes: usize) -> openssl::ssl::SslStream<Corked> {
    let ctx = client_ctx(pki, SslVersion::TLS1_3, false);
    client_ssl(&ctx, "rproxy.test")
        .connect(Corked::new(client_socket(port), flushes))
        .unwrap()
}

/// Send what the client holds, then read until the server closes.
fn release_and_read(s: &mut openssl::ssl::SslStream<Corked>) -> String {
    s.get_mut().release().unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Two requests written as two TLS records and sent in one segment (a pipelining client):
/// after the first response the second record, already in the socket (or in OpenSSL, were it
/// read ahead), must be answered without the socket becoming readable again (it never would:
/// the client waits for its answers). Checked against contexts that read ahead while the
/// connection only asked OpenSSL's decrypted bytes: no answer at all.
#[test]
fn two_requests_in_two_tls_records_of_one_segment_are_both_answered() {
    let pki = Pki::new(&temp_dir("tls-records"));
    let (p, _b) = start("tlsrecords", &pki, "", "workers = 1");
    let mut s = corked_client(&pki, p.port, usize::MAX);
    s.write_all(b"GET /one HTTP/1.1\r\nHost: rproxy.test\r\n\r\n")
        .unwrap();
    s.write_all(b"GET /two HTTP/1.1\r\nHost: rproxy.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = release_and_read(&mut s);
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        2,
        "both requests answered: {text}"
    );
}

/// A client that sends its first request with its last handshake flight, in one segment
/// (TLS 1.3: the client speaks first after the handshake): OpenSSL's read-ahead takes the
/// request's record into its buffer while finishing the handshake, and the connection must
/// answer it without the socket becoming readable again. Checked against a worker whose idle
/// wait asked only OpenSSL's decrypted bytes (`SSL_pending`): no answer.
#[test]
fn a_request_sent_with_the_handshake_s_last_flight_is_answered() {
    let pki = Pki::new(&temp_dir("tls-flight"));
    let (p, _b) = start("tlsflight", &pki, "", "workers = 1");
    // The ClientHello's flush passes; the Finished flight waits for the request.
    let mut s = corked_client(&pki, p.port, 1);
    s.write_all(b"GET /one HTTP/1.1\r\nHost: rproxy.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = release_and_read(&mut s);
    assert!(text.starts_with("HTTP/1.1 200"), "answered: {text}");
}

/// Responses with a Content-Length, one after another in `out`: (status, body) each.
fn responses(mut out: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut got = Vec::new();
    while let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no content-length in {head}"));
        let body = &out[end + 4..];
        assert!(
            body.len() >= len,
            "a body cut short: {} of {len}",
            body.len()
        );
        got.push((status, body[..len].to_vec()));
        out = &body[len..];
    }
    got
}

/// Request bodies over TLS (the plain-TCP tests cover the framing; this, the TLS stream under
/// it, records read ahead included): a 1 MiB Content-Length body, a chunked one and a
/// bodyless request, pipelined on one connection in one write, each answered whole and in
/// order.
#[test]
fn request_bodies_over_tls_reach_the_downstream_whole() {
    let pki = Pki::new(&temp_dir("tls-bodies"));
    let (p, _b) = start("tlsbodies", &pki, "", "workers = 1");
    let ctx = client_ctx(&pki, SslVersion::TLS1_3, false);
    let mut s = client_ssl(&ctx, "rproxy.test")
        .connect(client_socket(p.port))
        .unwrap();
    let big: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: rproxy.test\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    req.extend_from_slice(
        b"POST /echo HTTP/1.1\r\nHost: rproxy.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
          GET /x HTTP/1.1\r\nHost: rproxy.test\r\nConnection: close\r\n\r\n",
    );
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let got = responses(&out);
    assert_eq!(got.len(), 3, "three answers in {} bytes", out.len());
    assert_eq!(got[0].0, 200);
    assert!(got[0].1 == big, "the 1 MiB body came back changed");
    assert_eq!(got[1], (200, b"hello world".to_vec()));
    assert_eq!(got[2], (200, b"tls".to_vec()));
}

#[test]
fn a_disabled_protocol_is_refused() {
    let pki = Pki::new(&temp_dir("tls-proto-pki"));
    let (p, _b) = start(
        "tls-proto",
        &pki,
        "protocols-off = [\"SSLv2\", \"SSLv3\", \"TLSv1.2\"]\n",
        "workers = 1\n",
    );
    let old = client_ctx(&pki, SslVersion::TLS1_2, false);
    assert!(tls_get(&old, p.port, "rproxy.test", "").is_err());
    let new = client_ctx(&pki, SslVersion::TLS1_3, false);
    assert_eq!(
        tls_get(&new, p.port, "rproxy.test", "").unwrap().status,
        200
    );
}

const ALL_SSL_HEADERS: &str = "[server.headers]\nx-ssl-subject = true\nx-ssl-issuer = true\n\
x-ssl-notbefore = true\nx-ssl-notafter = true\nx-ssl-serial = true\nx-ssl-sha1 = true\n\
x-ssl-cipher = true\nx-ssl-certificate = true\n";

#[test]
fn client_certificates_enforced_and_x_ssl_headers_in_rproxy_formats() {
    let pki = Pki::new(&temp_dir("tls-client-pki"));
    let backend = Backend::start("tls");
    let port = free_port();
    let server = format!(
        "{}{ALL_SSL_HEADERS}[[server.headers.x509-extension]]\nname = \"X-Client-Team\"\noid = \"{CLIENT_OID}\"\n",
        pki.ssl_section(&format!(
            "ca = \"{}\"\nverify-peer = true\nenforce-peer-cert = true\n",
            pki.dir.join("ca.crt").display()
        ))
    );
    let cfg = flat_config(port, &[backend.port], &server, "workers = 2\n");
    let p = Proxy::start("tls-client", &cfg, port);

    for v in [SslVersion::TLS1_3, SslVersion::TLS1_2] {
        // No certificate: refused (in TLS 1.3 the alert may only arrive with the first read).
        let bare = client_ctx(&pki, v, false);
        match tls_get(&bare, p.port, "rproxy.test", "") {
            Err(_) => {}
            Ok(a) => assert_eq!(a.status, 0, "{v:?}: served without a certificate"),
        }

        let ctx = client_ctx(&pki, v, true);
        let forged = "X-SSL-Subject: /CN=admin\r\nX-SSL-Serial: 01\r\nX-Client-Team: red\r\n";
        let a = tls_get(&ctx, p.port, "rproxy.test", forged)
            .unwrap_or_else(|e| panic!("{v:?}: {e}\n{}", p.log()));
        assert_eq!(a.status, 200, "{}", a.body);
        let c = &pki.client;
        let sha1: Vec<String> = c
            .digest(MessageDigest::sha1())
            .unwrap()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let pem = String::from_utf8(c.to_pem().unwrap()).unwrap();
        let escaped: String = pem
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let want = [
            ("x-ssl-subject", "/C=US/CN=client".to_string()),
            ("x-ssl-issuer", "/C=US/O=rproxy test/CN=test CA".to_string()),
            ("x-ssl-notbefore", c.not_before().to_string()),
            ("x-ssl-notafter", c.not_after().to_string()),
            ("x-ssl-serial", "1F2E3D".to_string()),
            ("x-ssl-sha1", sha1.join(":")),
            ("x-ssl-cipher", a.cipher.clone()),
            ("x-ssl-certificate", escaped),
            ("x-client-team", "team-blue".to_string()),
        ];
        for (name, value) in want {
            assert_eq!(
                header(&a.body, name),
                Some(value.as_str()),
                "{v:?} {name}:\n{}",
                a.body
            );
            assert_eq!(
                a.body.matches(&format!("{name}:")).count(),
                1,
                "{name} exactly once:\n{}",
                a.body
            );
        }
        // The date format is OpenSSL's `Feb  4 16:52:42 2012 GMT`.
        let nb = header(&a.body, "x-ssl-notbefore").unwrap();
        assert!(nb.ends_with(" GMT") && nb.len() == 24, "{nb}");
    }
}

/// One `openssl s_client` request (trusting the test CA) offering the session in `sess`;
/// whether the server resumed it.
fn s_client(port: u16, pki: &Pki, version: &str, sess: &Path) -> bool {
    let ca = pki.dir.join("ca.crt");
    s_client_resumed(port, &[version, "-CAfile", ca.to_str().unwrap()], sess)
}

/// Every later connection offers the session of the one before; all must resume, whichever
/// of the 4 workers they land on, and still after a reload.
fn resumption(name: &str, ssl_extra: &str, version: &str) {
    let pki = Pki::new(&temp_dir(&format!("{name}-pki")));
    let (p, _b) = start(name, &pki, ssl_extra, "workers = 4\n");
    let sess = pki.dir.join("session.pem");
    assert!(!s_client(p.port, &pki, version, &sess));
    for i in 0..8 {
        assert!(
            s_client(p.port, &pki, version, &sess),
            "{name}: connection {i} not resumed\n{}",
            p.log()
        );
    }
    p.signal(libc::SIGHUP);
    p.wait_log("reload complete", Duration::from_secs(10));
    for i in 0..4 {
        assert!(
            s_client(p.port, &pki, version, &sess),
            "{name}: after the reload, connection {i} not resumed"
        );
    }
}

#[test]
fn tickets_resume_across_workers_and_reloads_tls13() {
    resumption("tls-ticket13", "cache-enabled = false\n", "-tls1_3");
}

#[test]
fn tickets_resume_across_workers_and_reloads_tls12() {
    resumption("tls-ticket12", "cache-enabled = false\n", "-tls1_2");
}

#[test]
fn session_ids_resume_across_workers_and_reloads_tls12() {
    resumption("tls-sid12", "tickets = false\n", "-tls1_2");
}

#[test]
fn session_ids_resume_across_workers_and_reloads_tls13() {
    resumption("tls-sid13", "tickets = false\n", "-tls1_3");
}

#[test]
fn http2_by_alpn_reaches_the_http1_downstream() {
    let pki = Pki::new(&temp_dir("tls-h2-pki"));
    let (p, _b) = start("tls-h2", &pki, "", "workers = 1\n");
    let url = format!("https://rproxy.test:{}/headers", p.port);
    let resolve = format!("rproxy.test:{}:127.0.0.1", p.port);
    let ca = pki.dir.join("ca.crt");
    for (flag, proto) in [("--http2", "HTTP/2 200"), ("--http1.1", "HTTP/1.1 200")] {
        let out = Command::new("curl")
            .args(["-sS", "-i", flag, "--cacert"])
            .arg(&ca)
            .args(["--resolve", &resolve, &url, "-H", "X-SSL-Subject: forged"])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with(proto),
            "{flag}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The downstream got HTTP/1.1 with Host from :authority and our headers only.
        assert!(text.contains("GET /headers\n"), "{text}");
        assert!(
            text.contains(&format!("host: rproxy.test:{}", p.port)),
            "{text}"
        );
        assert!(text.contains("x-forwarded-proto: https"), "{text}");
        assert!(!text.contains("x-ssl-subject"), "{text}");
    }
}

#[test]
fn http2_drain_sends_goaway_and_finishes_the_stream_in_flight() {
    let pki = Pki::new(&temp_dir("tls-h2drain-pki"));
    let backend = Backend::slow("slow", Duration::from_millis(1500));
    let port = free_port();
    let cfg = flat_config(port, &[backend.port], &pki.ssl_section(""), "workers = 1\n");
    let p = Proxy::start("tls-h2drain", &cfg, port);
    let url = format!("https://rproxy.test:{port}/");
    let resolve = format!("rproxy.test:{port}:127.0.0.1");
    let ca = pki.dir.join("ca.crt");
    let child = Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(&ca)
        .args(["--resolve", &resolve, &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A reload drains the worker holding the stream.
    p.signal(libc::SIGHUP);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "slow");
    p.wait_log("finished draining", Duration::from_secs(10));
}

#[test]
fn without_cache_or_tickets_nothing_resumes() {
    let pki = Pki::new(&temp_dir("tls-nores-pki"));
    let (p, _b) = start(
        "tls-nores",
        &pki,
        "tickets = false\ncache-enabled = false\n",
        "workers = 2\n",
    );
    let sess = pki.dir.join("session.pem");
    for _ in 0..3 {
        assert!(!s_client(p.port, &pki, "-tls1_2", &sess));
    }
}

/// One HTTP/2 connection multiplexes streams onto the pooled HTTP/1.1 downstream connections;
/// a header block over `max-header-size` gets its stream refused and never reaches the
/// downstream.
#[test]
fn http2_streams_multiplex_and_oversized_headers_are_refused() {
    let pki = Pki::new(&temp_dir("tls-h2mux-pki"));
    let (p, b) = start("tls-h2mux", &pki, "", "workers = 1\n");
    let resolve = format!("rproxy.test:{}:127.0.0.1", p.port);
    let ca = pki.dir.join("ca.crt");
    let urls: Vec<String> = (0..20)
        .map(|_| format!("https://rproxy.test:{}/sleep/200", p.port))
        .collect();
    let out = Command::new("curl")
        .args(["-sS", "--http2", "-Z", "--parallel-max", "20", "--cacert"])
        .arg(&ca)
        .args([
            "--resolve",
            &resolve,
            "-w",
            "%{http_version} %{http_code}\n",
            "-o",
            "/dev/null",
        ])
        .args(&urls)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("2 200").count(), 20, "{text}");

    let before = b.hits();
    let big = format!("X-Big: {}", "a".repeat(70_000));
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--retry", "0", "--cacert"])
        .arg(&ca)
        .args([
            "--resolve",
            &resolve,
            "-H",
            &big,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("https://rproxy.test:{}/", p.port))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout), "200");
    assert_eq!(b.hits(), before, "an oversized head reached the downstream");
}

/// The shared cache outlives a worker killed with SIGKILL: its replacement and the others
/// still resume the sessions stored before.
#[test]
fn session_ids_survive_a_killed_worker() {
    let pki = Pki::new(&temp_dir("tls-sidkill-pki"));
    let (p, _b) = start("tls-sidkill", &pki, "tickets = false\n", "workers = 4\n");
    let sess = pki.dir.join("session.pem");
    assert!(!s_client(p.port, &pki, "-tls1_2", &sess));
    let victim = p.workers()[0];
    // SAFETY: signalling a worker of the proxy this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    wait_until(
        "the killed worker replaced",
        Duration::from_secs(10),
        || {
            let w = p.workers();
            w.len() == 4 && !w.contains(&victim)
        },
    );
    for i in 0..8 {
        assert!(
            s_client(p.port, &pki, "-tls1_2", &sess),
            "connection {i} after the kill not resumed\n{}",
            p.log()
        );
    }
}

/// The master rotates the ticket key ring (every 700 ms here, 12 h in production): a ticket
/// under the previous key still resumes (and is renewed), one older than the ring does not.
#[test]
#[cfg_attr(
    not(feature = "test-faults"),
    ignore = "the short rotation interval is only built with --features test-faults"
)]
fn ticket_keys_rotate_and_old_tickets_expire_from_the_ring() {
    let pki = Pki::new(&temp_dir("tls-rotate-pki"));
    let backend = Backend::start("tls");
    let port = free_port();
    let cfg = flat_config(
        port,
        &[backend.port],
        &pki.ssl_section("cache-enabled = false\n"),
        "workers = 2\n",
    );
    let p = Proxy::start_with_env(
        "tls-rotate",
        &cfg,
        port,
        &[("RPROXY_TEST_TICKET_ROTATE_MS", "700")],
    );
    let sess = pki.dir.join("session.pem");
    let old = pki.dir.join("old.pem");
    assert!(!s_client(p.port, &pki, "-tls1_2", &sess));
    std::fs::copy(&sess, &old).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        s_client(p.port, &pki, "-tls1_2", &sess),
        "a ticket under the previous key was refused"
    );
    // Four rotations later the first key has left the ring.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(!s_client(p.port, &pki, "-tls1_2", &old));
}

/// A `ticket-key-file` (48 bytes, nginx's size) is the key of every worker and survives a
/// reload, with the session cache off so only tickets can resume.
#[test]
fn ticket_key_file_resumes_across_workers_and_reloads() {
    let pki = Pki::new(&temp_dir("tls-keyfile-pki"));
    let keyfile = pki.dir.join("ticket.key");
    let mut k = [0u8; 48];
    openssl::rand::rand_bytes(&mut k).unwrap();
    std::fs::write(&keyfile, k).unwrap();
    let extra = format!(
        "cache-enabled = false\nticket-key-file = \"{}\"\n",
        keyfile.display()
    );
    let (p, _b) = start("tls-keyfile", &pki, &extra, "workers = 4\n");
    let sess = pki.dir.join("session.pem");
    assert!(!s_client(p.port, &pki, "-tls1_2", &sess));
    for _ in 0..6 {
        assert!(s_client(p.port, &pki, "-tls1_2", &sess));
    }
    p.signal(libc::SIGHUP);
    p.wait_log("reload complete", Duration::from_secs(10));
    assert!(s_client(p.port, &pki, "-tls1_2", &sess));
}

/// `openssl ca` over the test CA: revoke `client.crt` first when asked, then write `crl.pem`.
fn make_crl(pki: &Pki, revoke: bool) -> PathBuf {
    let d = &pki.dir;
    std::fs::write(
        d.join("ca.cnf"),
        "[ ca ]\ndefault_ca = d\n[ d ]\ndatabase = index.txt\ndefault_md = sha256\ndefault_crl_days = 30\n",
    )
    .unwrap();
    if !d.join("index.txt").exists() {
        std::fs::write(d.join("index.txt"), "").unwrap();
    }
    let ca = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(d)
            .args([
                "ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if revoke {
        ca(&["-revoke", "client.crt"]);
    }
    ca(&["-gencrl", "-out", "crl.pem"]);
    d.join("crl.pem")
}

/// A CRL is checked, and re-read on reload: the client passes until its certificate is
/// revoked and the proxy reloaded. Without `enforce-peer-cert` a client with no certificate
/// is still served, without X-SSL-Subject.
#[test]
fn crl_is_checked_and_reread_on_reload() {
    let pki = Pki::new(&temp_dir("tls-crl-pki"));
    let crl = make_crl(&pki, false);
    let extra = format!(
        "ca = \"{}\"\ncrl = \"{}\"\nverify-peer = true\n[server.headers]\nx-ssl-subject = true\n",
        pki.dir.join("ca.crt").display(),
        crl.display()
    );
    let (p, _b) = start("tls-crl", &pki, &extra, "workers = 2\n");
    let with = client_ctx(&pki, SslVersion::TLS1_3, true);
    let without = client_ctx(&pki, SslVersion::TLS1_3, false);
    let a = tls_get(&with, p.port, "rproxy.test", "").unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(header(&a.body, "x-ssl-subject"), Some("/C=US/CN=client"));
    let a = tls_get(&without, p.port, "rproxy.test", "").unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(header(&a.body, "x-ssl-subject"), None);

    make_crl(&pki, true);
    p.signal(libc::SIGHUP);
    p.wait_log("reload complete", Duration::from_secs(10));
    match tls_get(&with, p.port, "rproxy.test", "") {
        Err(_) => {}
        Ok(a) => assert_eq!(a.status, 0, "a revoked certificate was served: {}", a.body),
    }
    assert_eq!(
        tls_get(&without, p.port, "rproxy.test", "").unwrap().status,
        200
    );
}

/// An HTTP/2 connection with no stream for a whole `read-timeout` gets GOAWAY and is closed
/// (hyper's HTTP/2 server alone would keep it forever).
#[test]
fn idle_http2_connections_end_at_read_timeout() {
    let pki = Pki::new(&temp_dir("tls-h2idle-pki"));
    let backend = Backend::start("tls");
    let port = free_port();
    let cfg = flat_config(
        port,
        &[backend.port],
        &format!("read-timeout = 1\n{}", pki.ssl_section("")),
        "workers = 1\n",
    );
    let p = Proxy::start("tls-h2idle", &cfg, port);
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(pki.dir.join("ca.crt")).unwrap();
    b.set_alpn_protos(b"\x02h2").unwrap();
    let c = b.build();
    let tcp = client_socket(p.port);
    let mut s = c.connect("rproxy.test", tcp).unwrap();
    assert_eq!(s.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    // The preface and an empty SETTINGS frame, then silence.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "still open after {took:?}");
    // Frames: 9-byte headers; look for a GOAWAY (type 7).
    let mut i = 0;
    let mut goaway = false;
    while i + 9 <= got.len() {
        let len =
            (usize::from(got[i]) << 16) | (usize::from(got[i + 1]) << 8) | usize::from(got[i + 2]);
        goaway |= got[i + 3] == 7;
        i += 9 + len;
    }
    assert!(goaway, "no GOAWAY in {got:?}");
}

/// What a client saw on one TLS connection: the peer certificate's CN and DNS SANs, the ALPN
/// protocol chosen, and the answer to `GET /` with `Host: host`.
struct SniAnswer {
    cn: String,
    sans: Vec<String>,
    alpn: String,
    status: u16,
    body: String,
}

/// One connection offering `sni` (none when `None`) and ALPN `h2,http/1.1`; the certificate is
/// read, not verified (the default certificate does not name an unknown SNI). When `alpn` came
/// back as h2, only the handshake is checked (no request).
fn sni_get(pki: &Pki, port: u16, sni: Option<&str>, host: &str) -> SniAnswer {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(pki.dir.join("ca.crt")).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
    let ctx = b.build().into_context();
    let tcp = client_socket(port);
    let mut ssl = Ssl::new(&ctx).unwrap();
    if let Some(n) = sni {
        ssl.set_hostname(n).unwrap();
    }
    let mut s = ssl.connect(tcp).unwrap_or_else(|e| panic!("{sni:?}: {e}"));
    let cert = s.ssl().peer_certificate().expect("a peer certificate");
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
        .unwrap_or_default();
    let sans = cert
        .subject_alt_names()
        .map(|v| {
            v.iter()
                .filter_map(|n| n.dnsname().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let alpn = s
        .ssl()
        .selected_alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let (mut status, mut body) = (0, String::new());
    if alpn != "h2" {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let (st, b) = parse_response(&out);
        status = st;
        body = String::from_utf8_lossy(&b).into_owned();
    }
    SniAnswer {
        cn,
        sans,
        alpn,
        status,
        body,
    }
}

/// SNI through the real binary: a server with its default certificate and two vhosts with
/// certificates of their own (one by exact name, one by glob alias). Each SNI name gets its
/// vhost's certificate and its vhost's rule and downstream; an unknown or absent SNI gets the
/// server's certificate. The vhost with `alpn = ["http/1.1"]` never negotiates h2.
#[test]
fn sni_picks_the_vhost_certificate_route_and_alpn() {
    let pki = Pki::new(&temp_dir("tls-sni-pki"));
    let (a_crt, a_key) = pki.server("a", "a.test");
    let (b_crt, b_key) = pki.server("b", "*.b.test");
    let (ba, bb) = (Backend::start("backend-a"), Backend::start("backend-b"));
    let port = free_port();
    let ds = |name: &str, port: u16| {
        format!(
            "[[server.downstream]]\nname = \"{name}\"\naddr = \"127.0.0.1\"\nport = {port}\n\
             connections = 2\n[server.downstream.retry]\nseconds = 0\nuseconds = 100000\n"
        )
    };
    let cfg = format!(
        "{}workers = 2\n\n[[server]]\naddr = \"127.0.0.1\"\nport = {port}\n{}\n{}{}\
         [[server.vhost]]\nname = \"a.test\"\n\
           [server.vhost.ssl]\n  enabled = true\n  cert = \"{}\"\n  key = \"{}\"\n\
           [[server.vhost.rule]]\n  name = \"ra\"\n  uri-gmatch = \"/*\"\n  downstreams = [\"a\"]\n\
         [[server.vhost]]\nname = \"b.example\"\naliases = [\"*.b.test\"]\n\
           [server.vhost.ssl]\n  enabled = true\n  cert = \"{}\"\n  key = \"{}\"\n  alpn = [\"http/1.1\"]\n\
           [[server.vhost.rule]]\n  name = \"rb\"\n  uri-gmatch = \"/*\"\n  downstreams = [\"b\"]\n",
        identity(),
        pki.ssl_section(""),
        ds("a", ba.port),
        ds("b", bb.port),
        a_crt.display(),
        a_key.display(),
        b_crt.display(),
        b_key.display(),
    );
    let p = Proxy::start("tls-sni", &cfg, port);

    // Exact name: a's certificate, a's rule; h2 offered by the default alpn.
    let a = sni_get(&pki, port, Some("a.test"), "a.test");
    assert_eq!(
        (a.cn.as_str(), a.sans.clone()),
        ("a.test", vec!["a.test".to_string()])
    );
    assert_eq!(a.alpn, "h2", "a.test offers h2 (the default alpn)");
    // Same name without h2 offered: the request reaches a's downstream.
    let a1 = tls_get(
        &client_ctx(&pki, SslVersion::TLS1_3, false),
        port,
        "a.test",
        "",
    )
    .unwrap_or_else(|e| panic!("a.test: {e}\n{}", p.log()));
    assert_eq!((a1.status, a1.cert_cn.as_str()), (200, "a.test"));
    let (_, body) = {
        let r = sni_get_h1(&pki, port, "A.TEST", "a.test");
        (r.status, r.body)
    };
    assert_eq!(body, "backend-a", "SNI names match case-insensitively");

    // Glob alias: b's certificate, b's rule, and never h2 (its alpn is http/1.1 only), even
    // when the Host header names the other vhost (SNI decides).
    for name in ["x.b.test", "deep.x.b.test"] {
        let b = sni_get(&pki, port, Some(name), "a.test");
        assert_eq!(b.cn, "*.b.test", "{name}");
        assert_eq!(b.sans, vec!["*.b.test".to_string()], "{name}");
        assert_ne!(
            b.alpn, "h2",
            "{name}: h2 negotiated on an http/1.1-only vhost"
        );
        assert_eq!((b.status, b.body.as_str()), (200, "backend-b"), "{name}");
    }
    // The verified path too (the openssl crate checks the name against the wildcard).
    let b1 = tls_get(
        &client_ctx(&pki, SslVersion::TLS1_2, false),
        port,
        "y.b.test",
        "",
    )
    .unwrap_or_else(|e| panic!("y.b.test: {e}\n{}", p.log()));
    assert_eq!((b1.status, b1.cert_cn.as_str()), (200, "*.b.test"));

    // Unknown SNI: the server's certificate and alpn; no vhost takes it (SNI decides), so 404.
    let u = sni_get(&pki, port, Some("unknown.test"), "a.test");
    assert_eq!(u.cn, "rproxy.test");
    assert_eq!(u.alpn, "h2");
    // `b.test` itself is not matched by `*.b.test`.
    let bare = sni_get_h1(&pki, port, "b.test", "b.test");
    assert_eq!((bare.cn.as_str(), bare.status), ("rproxy.test", 404));
    // No SNI at all: the server's certificate; the Host header routes.
    let none = sni_get(&pki, port, None, "x.b.test");
    assert_eq!(none.cn, "rproxy.test");
    let none = sni_get_h1_nosni(&pki, port, "x.b.test");
    assert_eq!(
        (none.cn.as_str(), none.status, none.body.as_str()),
        ("rproxy.test", 200, "backend-b")
    );
    let none = sni_get_h1_nosni(&pki, port, "a.test");
    assert_eq!((none.status, none.body.as_str()), (200, "backend-a"));
    assert!(
        ba.hits() >= 3 && bb.hits() >= 4,
        "{} {}",
        ba.hits(),
        bb.hits()
    );
}

/// As `sni_get`, offering only http/1.1, so that a request is always made.
fn sni_get_h1(pki: &Pki, port: u16, sni: &str, host: &str) -> SniAnswer {
    h1_get(pki, port, Some(sni), host)
}

fn sni_get_h1_nosni(pki: &Pki, port: u16, host: &str) -> SniAnswer {
    h1_get(pki, port, None, host)
}

fn h1_get(pki: &Pki, port: u16, sni: Option<&str>, host: &str) -> SniAnswer {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(pki.dir.join("ca.crt")).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x08http/1.1").unwrap();
    let ctx = b.build().into_context();
    let tcp = client_socket(port);
    let mut ssl = Ssl::new(&ctx).unwrap();
    if let Some(n) = sni {
        ssl.set_hostname(n).unwrap();
    }
    let mut s = ssl.connect(tcp).unwrap_or_else(|e| panic!("{sni:?}: {e}"));
    let cn = s
        .ssl()
        .peer_certificate()
        .and_then(|c| {
            c.subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .next()
                .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
        })
        .unwrap_or_default();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (status, body) = parse_response(&out);
    SniAnswer {
        cn,
        sans: Vec::new(),
        alpn: String::new(),
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Soak: mixed plain and TLS load under reloads and killed workers.

/// What the soak's clients saw.
#[derive(Default)]
struct SoakStats {
    ok: AtomicU64,
    /// Failed requests on a connection a SIGKILLed worker held (tolerated, counted apart).
    killed: AtomicU64,
    /// Any other failed request (must stay 0).
    failed: AtomicU64,
    /// TLS connections that offered a session, and those the server resumed.
    offered: AtomicU64,
    resumed: AtomicU64,
}

struct Soak {
    stop: AtomicBool,
    /// Client ports of the connections the killed workers held when they were killed.
    killed_ports: Mutex<HashSet<u16>>,
    stats: SoakStats,
    host: &'static str,
}

impl Soak {
    fn fail(&self, what: &str, local: u16, e: &str) {
        if self.killed_ports.lock().unwrap().contains(&local) {
            self.stats.killed.fetch_add(1, Ordering::Relaxed);
        } else {
            eprintln!("soak: {what}: connection from port {local}: {e}");
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One `GET /soak` on `s`; whether the connection may be used again. The answer must be 200 and
/// the backend's name.
fn soak_exchange<S: Read + Write>(s: &mut S, host: &str, close: bool) -> Result<bool, String> {
    let conn = if close { "close" } else { "keep-alive" };
    s.write_all(
        format!("GET /soak HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err(format!("eof after {} bytes of head", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no content-length: {head}"))?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            return Err("eof in body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if !head.starts_with("http/1.1 200") || &buf[head_end..head_end + len] != b"soak" {
        return Err(format!("bad answer: {}", String::from_utf8_lossy(&buf)));
    }
    Ok(!close && !head.contains("connection: close"))
}

fn soak_connect(port: u16) -> Result<(TcpStream, u16), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let local = tcp.local_addr().unwrap().port();
    Ok((tcp, local))
}

/// Plain HTTP: keep-alive (`close` false) or a new connection per request.
fn soak_plain(soak: &Soak, port: u16, close: bool, end: Instant) {
    let mut conn: Option<(TcpStream, u16)> = None;
    while !soak.stop.load(Ordering::Relaxed) && Instant::now() < end {
        let (mut s, local) = match conn.take() {
            Some(c) => c,
            None => match soak_connect(port) {
                Ok(c) => c,
                Err(e) => {
                    soak.fail("plain", 0, &e);
                    continue;
                }
            },
        };
        match soak_exchange(&mut s, soak.host, close) {
            Ok(keep) => {
                soak.stats.ok.fetch_add(1, Ordering::Relaxed);
                if keep {
                    conn = Some((s, local));
                }
            }
            Err(e) => soak.fail("plain", local, &e),
        }
    }
}

/// TLS keep-alive requests (`per_conn` requests per connection, then a new connection).
fn soak_tls_keepalive(soak: &Soak, ctx: &SslContext, port: u16, end: Instant) {
    while !soak.stop.load(Ordering::Relaxed) && Instant::now() < end {
        let (tcp, local) = match soak_connect(port) {
            Ok(c) => c,
            Err(e) => {
                soak.fail("tls keep-alive", 0, &e);
                continue;
            }
        };
        let mut ssl = Ssl::new(ctx).unwrap();
        ssl.set_hostname(soak.host).unwrap();
        let mut s = match ssl.connect(tcp) {
            Ok(s) => s,
            Err(e) => {
                soak.fail("tls keep-alive handshake", local, &e.to_string());
                continue;
            }
        };
        for _ in 0..200 {
            match soak_exchange(&mut s, soak.host, false) {
                Ok(true) => {
                    soak.stats.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {
                    soak.stats.ok.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    soak.fail("tls keep-alive", local, &e);
                    break;
                }
            }
        }
    }
}

/// A new TLS connection per request with `openssl s_client` (the openssl crate's `set_session`
/// never resumed here: see `s_client`), each offering the newest session the server gave. It
/// binds a known local port, so that a failure can be told apart when a killed worker held it.
fn soak_tls_resume(soak: &Soak, pki: &Pki, version: &str, port: u16, end: Instant) {
    let sess = pki.dir.join(format!("soak-session{version}.pem"));
    while !soak.stop.load(Ordering::Relaxed) && Instant::now() < end {
        let local = free_port();
        let offered = sess.exists();
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-bind", &format!("127.0.0.1:{local}")])
            .args(["-servername", soak.host, version, "-ign_eof", "-CAfile"])
            .arg(pki.dir.join("ca.crt"))
            .arg("-sess_out")
            .arg(&sess)
            .args(if offered {
                vec!["-sess_in".into(), sess.clone().into_os_string()]
            } else {
                vec![]
            })
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl s_client");
        let _ = child.stdin.take().unwrap().write_all(
            format!(
                "GET /soak HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                soak.host
            )
            .as_bytes(),
        );
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("HTTP/1.1 200") && text.contains("\r\n\r\nsoak") {
            soak.stats.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("Address already in use") || err.contains("errno=99") {
                // The port was taken meanwhile, or its last connection to this port is still
                // in TIME_WAIT (EADDRNOTAVAIL): bind or connect failed before any packet went
                // out, so no request was made.
                continue;
            }
            let tail = &text[text.len().saturating_sub(400)..];
            soak.fail("tls resume", local, &format!("{tail}\n{err}"));
            continue;
        }
        if offered {
            soak.stats.offered.fetch_add(1, Ordering::Relaxed);
            if text.contains("\nReused, ") {
                soak.stats.resumed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A process's start time, in clock ticks after boot (field 22 of /proc/PID/stat).
fn start_time(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    rest.split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 60 s of mixed load on 4 workers: plain keep-alive and new-connection clients on one server,
/// TLS keep-alive clients and TLS clients that resume a session on every new connection (TLS 1.3
/// and 1.2) on another, while SIGHUP arrives every 1-3 s and a worker is SIGKILLed every 5-10 s.
///
/// Tolerated: a failed request on a connection the killed worker held when it was killed (the
/// worker is SIGSTOPped, its connections are read from /proc, then it is SIGKILLed: those
/// client ports are the only ones whose failures count apart). Every other failure fails the
/// test: reloads must lose nothing. Resumption must hold throughout: >= 90 % of the connections
/// that offered a session resumed. The master's log must show the reloads completed and every
/// killed worker noticed, and 4 workers serve at the end.
#[test]
fn soak_reloads_and_killed_workers_under_mixed_tls_and_plain_load() {
    const SOAK: Duration = Duration::from_secs(60);
    let pki = Pki::new(&temp_dir("tls-soak-pki"));
    let backend = Backend::start("soak");
    let (plain, tls) = (free_port(), free_port());
    let ds = format!(
        "[[server.downstream]]\naddr = \"127.0.0.1\"\nport = {}\nconnections = 4\n",
        backend.port
    );
    let cfg = format!(
        "{}workers = 4\n\n[[server]]\naddr = \"127.0.0.1\"\nport = {plain}\n{ds}\n\
         [[server]]\naddr = \"127.0.0.1\"\nport = {tls}\n{}\n{ds}",
        identity(),
        pki.ssl_section(""),
    );
    let p = Proxy::start("tls-soak", &cfg, tls);
    wait_port(plain, Duration::from_secs(5));
    let soak = Arc::new(Soak {
        stop: AtomicBool::new(false),
        killed_ports: Mutex::default(),
        stats: SoakStats::default(),
        host: "rproxy.test",
    });
    let end = Instant::now() + SOAK + Duration::from_secs(5);
    let ka_ctx = client_ctx(&pki, SslVersion::TLS1_3, false);
    let mut threads = Vec::new();
    for i in 0..3 {
        let s = soak.clone();
        threads.push(std::thread::spawn(move || {
            soak_plain(&s, plain, i == 2, end)
        }));
    }
    for _ in 0..2 {
        let (s, ctx) = (soak.clone(), ka_ctx.clone());
        threads.push(std::thread::spawn(move || {
            soak_tls_keepalive(&s, &ctx, tls, end)
        }));
    }
    let pki = Arc::new(pki);
    for v in ["-tls1_3", "-tls1_2"] {
        let (s, pki) = (soak.clone(), pki.clone());
        threads.push(std::thread::spawn(move || {
            soak_tls_resume(&s, &pki, v, tls, end)
        }));
    }

    // A small LCG: the intervals vary, the run is the same every time.
    let mut seed: u64 = 0x5eed;
    let mut rand = |lo: u64, hi: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (seed >> 33) % (hi - lo + 1)
    };
    let start = Instant::now();
    let mut next_hup = start + Duration::from_millis(rand(1000, 3000));
    let mut next_kill = start + Duration::from_millis(rand(5000, 10000));
    let (mut hups, mut victims) = (0usize, Vec::new());
    let mut killed_conns = 0usize;
    while start.elapsed() < SOAK {
        let now = Instant::now();
        if now >= next_hup {
            p.signal(libc::SIGHUP);
            hups += 1;
            next_hup = now + Duration::from_millis(rand(1000, 3000));
        }
        if now >= next_kill {
            // The 4 newest workers: the serving generation (or the one starting).
            let mut w = p.workers();
            w.sort_by_key(|&pid| start_time(pid));
            let w = w.split_off(w.len().saturating_sub(4));
            if !w.is_empty() {
                let victim = w[rand(0, w.len() as u64 - 1) as usize];
                // SAFETY: signalling a worker of the proxy this test started, by PID.
                unsafe { libc::kill(victim, libc::SIGSTOP) };
                std::thread::sleep(Duration::from_millis(5));
                let held = client_ports_of(victim, &[plain, tls]);
                killed_conns += held.len();
                soak.killed_ports.lock().unwrap().extend(held);
                // SAFETY: as above.
                unsafe { libc::kill(victim, libc::SIGKILL) };
                victims.push(victim);
            }
            next_kill = now + Duration::from_millis(rand(5000, 10000));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    soak.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let st = &soak.stats;
    let (ok, killed, failed) = (
        st.ok.load(Ordering::Relaxed),
        st.killed.load(Ordering::Relaxed),
        st.failed.load(Ordering::Relaxed),
    );
    let (offered, resumed) = (
        st.offered.load(Ordering::Relaxed),
        st.resumed.load(Ordering::Relaxed),
    );
    let log = p.log();
    let reloads = log.matches("reload complete").count();
    eprintln!(
        "soak: {:?}: {ok} ok, {failed} failed, {killed} failed on the {killed_conns} connections \
         of {} killed workers; {hups} SIGHUPs, {reloads} reloads complete; {resumed}/{offered} \
         TLS reconnections resumed ({:.1} %)",
        start.elapsed(),
        victims.len(),
        100.0 * resumed as f64 / offered.max(1) as f64
    );
    assert_eq!(failed, 0, "requests failed that no killed worker held");
    assert!(ok > 1000, "too little traffic: {ok}");
    assert!(killed <= killed_conns as u64, "{killed} > {killed_conns}");
    assert!(offered > 100, "too few TLS reconnections: {offered}");
    assert!(
        resumed * 100 >= offered * 90,
        "only {resumed}/{offered} reconnections resumed"
    );
    // Each SIGHUP during a reload is folded into it; most must still complete one.
    assert!(
        victims.len() >= 5 && reloads * 2 >= hups && reloads >= 10,
        "{reloads} reloads for {hups} SIGHUPs, {} kills",
        victims.len()
    );
    // The master reaps and logs each kill (replacing the worker, or, when a reload had just
    // made it draining, only noting it); the last kill may be a moment ago.
    for v in &victims {
        wait_until(
            &format!("the master logging worker {v} killed"),
            Duration::from_secs(10),
            || {
                p.log().lines().any(|l| {
                    l.contains(&format!("worker {v} (generation"))
                        && l.contains("killed by signal SIGKILL")
                })
            },
        );
    }
    wait_until("4 serving workers", Duration::from_secs(20), || {
        let w = p.workers();
        w.len() == 4 && victims.iter().all(|v| !w.contains(v))
    });
    let a = tls_get(&ka_ctx, tls, "rproxy.test", "").unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(get(plain, "/").0, 200);
}
