//! `rproxy --convert`: RProxy's own configuration files, converted by the real binary, checked
//! with `rproxy -t`, then served. The inputs are conf/examples/rproxy-1.x.cfg (the seed
//! README's example) and conf/examples/rproxy-2.x.cfg (vhosts and rules), with only their
//! ports and paths pointed at this test's own.

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};

fn example(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf/examples")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `text` with each `(from, to)` replaced, every `from` required to be there.
fn adapt(text: &str, subs: &[(&str, String)]) -> String {
    let mut t = text.to_string();
    for (from, to) in subs {
        assert!(t.contains(from), "`{from}` is not in the example");
        t = t.replace(from, to);
    }
    t
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Convert `cfg` (written as DIR/NAME), check the TOML with `rproxy -t`; (toml, stderr).
fn convert_and_check(dir: &Path, name: &str, cfg: &str) -> (String, String) {
    let src = dir.join(name);
    std::fs::write(&src, cfg).unwrap();
    let out = run(&["--convert", src.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let toml = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        toml.starts_with(&format!(
            "# Converted by `rproxy --convert` from {}",
            src.display()
        )),
        "{toml}"
    );
    let dst = dir.join("converted.toml");
    std::fs::write(&dst, &toml).unwrap();
    let t = run(&["-t", "-c", dst.to_str().unwrap()]);
    let t_out = String::from_utf8_lossy(&t.stdout);
    assert_eq!(
        t.status.code(),
        Some(0),
        "rproxy -t failed:\n{}\n{toml}",
        String::from_utf8_lossy(&t.stderr)
    );
    assert!(t_out.contains("configuration ok"), "{t_out}");
    (toml, stderr)
}

// ---------------------------------------------------------------------------------------------
// A backend that answers with the request target it received (the rewrite's result).

struct PathEcho {
    port: u16,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl PathEcho {
    fn start() -> PathEcho {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => return,
                        r = listener.accept() => {
                            let Ok((s, _)) = r else { continue };
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                                        req.uri().to_string(),
                                    ))))
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        PathEcho {
            port,
            _shutdown: tx,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A test CA, a server certificate for `rproxy.test` and a client certificate.

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn cert(cn: &str, key: &PKey<Private>, ca: Option<(&X509, &PKey<Private>)>, serial: u32) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(ca.map_or(&name, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    match ca {
        None => b
            .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap(),
        Some((c, _)) => {
            let san = SubjectAlternativeName::new()
                .dns(cn)
                .build(&b.x509v3_context(Some(c), None))
                .unwrap();
            b.append_extension(san).unwrap();
        }
    }
    b.sign(ca.map_or(key, |(_, k)| k), MessageDigest::sha256())
        .unwrap();
    b.build()
}

/// Writes ca.crt, server.crt/.key, client.crt/.key and an empty CA directory into `dir`.
fn pki(dir: &Path) {
    let ca_key = key();
    let ca = cert("convert test CA", &ca_key, None, 1);
    std::fs::write(dir.join("ca.crt"), ca.to_pem().unwrap()).unwrap();
    for (name, serial) in [("server", 2), ("client", 3)] {
        let k = key();
        let cn = if name == "server" {
            "rproxy.test"
        } else {
            "client"
        };
        let c = cert(cn, &k, Some((&ca, &ca_key)), serial);
        std::fs::write(dir.join(format!("{name}.crt")), c.to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.join(format!("{name}.key")),
            k.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
    }
    std::fs::create_dir_all(dir.join("cadir")).unwrap();
}

/// One HTTPS request to `port` (SNI and Host `rproxy.test`); the response, or the TLS error.
fn https_get(dir: &Path, port: u16, path: &str, client_cert: bool) -> Result<Vec<u8>, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(dir.join("ca.crt")).unwrap();
    if client_cert {
        b.set_certificate_file(dir.join("client.crt"), SslFiletype::PEM)
            .unwrap();
        b.set_private_key_file(dir.join("client.key"), SslFiletype::PEM)
            .unwrap();
    }
    b.set_verify(SslVerifyMode::PEER);
    let ctx = b.build().into_context();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ssl = Ssl::new(&ctx).unwrap();
    ssl.set_hostname("rproxy.test").unwrap();
    ssl.param_mut().set_host("rproxy.test").unwrap();
    let mut s = ssl.connect(tcp).map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: rproxy.test\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Err(e) if out.is_empty() => Err(e.to_string()),
        _ => Ok(out),
    }
}

#[test]
fn the_seed_readme_example_converts_passes_t_and_proxies_over_tls() {
    let dir = temp_dir("convert-1x");
    pki(&dir);
    let (a, b) = (PathEcho::start(), PathEcho::start());
    let port = free_port();
    let log = dir.join("access.log");
    let p = |name: &str| dir.join(name).display().to_string();
    let cfg = adapt(
        &example("rproxy-1.x.cfg"),
        &[
            ("addr    = \"\"", "addr    = 127.0.0.1".to_string()),
            ("port    = 443", format!("port    = {port}")),
            // Debian has no group `nobody` (the README's system had one).
            ("group      = nobody", "group      = nogroup".to_string()),
            ("/var/log/access.log", log.display().to_string()),
            (
                "cert    = server.crt",
                format!("cert    = {}", p("server.crt")),
            ),
            (
                "key     = server.key",
                format!("key     = {}", p("server.key")),
            ),
            ("/path/to/cafile", p("ca.crt")),
            ("/path/to/cadir", p("cadir")),
            (
                "port           = 80\n",
                format!("port           = {}\n", a.port),
            ),
            (
                "port           = 81\n",
                format!("port           = {}\n", b.port),
            ),
        ],
    );
    let (toml, stderr) = convert_and_check(&dir, "rproxy.cfg", &cfg);
    // What does not carry over is named, with its line.
    let src = dir.join("rproxy.cfg").display().to_string();
    let line_of = |needle: &str| {
        let code = |l: &&str| !l.trim_start().starts_with('#') && l.contains(needle);
        cfg.lines().position(|l| code(&l)).unwrap() + 1
    };
    for (needle, says) in [
        (
            "protocols-on",
            "option 'protocols-on' dropped: `TLS1` is no protocol name",
        ),
        (
            "cache-timeout = ",
            "option 'cache-timeout': RProxy ignored it",
        ),
    ] {
        let want = format!("{src}:{}: {says}", line_of(needle));
        assert!(stderr.contains(&want), "no {want:?} in:\n{stderr}");
    }
    assert!(toml.contains("[[server.rewrite]]") && toml.contains("verify-peer = true"));

    let proxy = Proxy::start("convert-1x", &toml, port);
    // Client certificates are enforced, as the README's ssl block says.
    let bare = https_get(&dir, port, "/dir/a", false);
    assert!(
        bare.as_ref().map_or(true, |r| r.is_empty()),
        "served without a client certificate: {bare:?}"
    );
    // The README's rewrite: /dir/something/file.html -> /derp/something/file.html.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = https_get(&dir, port, "/dir/something/file.html?q=1", true)
            .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
        let (status, body) = parse_response(&r);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&r));
        seen.push(String::from_utf8(body).unwrap());
    }
    assert!(
        seen.iter().all(|b| b == "/derp/something/file.html?q=1"),
        "{seen:?}"
    );
    // The README's log format, {US_HDR}:'Accept-Encoding' included.
    let lines = wait_lines(&log, 4);
    assert!(
        lines.iter().any(
            |l| l.contains("\"GET /dir/something/file.html?q=1 HTTP/1.1\" - 200")
                && l.contains(" gzip - ")
        ),
        "{lines:?}"
    );
}

#[test]
fn a_2x_vhost_rule_example_converts_passes_t_and_routes() {
    let dir = temp_dir("convert-2x");
    let app1 = Backend::start("app1");
    let app2 = Backend::start("app2");
    let legacy = Backend::start("legacy");
    let port = free_port();
    let log = dir.join("access.log");
    let cfg = adapt(
        &example("rproxy-2.x.cfg"),
        &[
            ("7070", port.to_string()),
            ("8081", app1.port.to_string()),
            ("8082", app2.port.to_string()),
            ("8083", legacy.port.to_string()),
            ("/var/log/rproxy/access.log", log.display().to_string()),
            (
                "/var/log/rproxy/error.log",
                dir.join("error.log").display().to_string(),
            ),
        ],
    );
    let (toml, stderr) = convert_and_check(&dir, "rproxy.cfg", &cfg);
    let src = dir.join("rproxy.cfg").display().to_string();
    let line_of = |needle: &str| {
        let code = |l: &&str| !l.trim_start().starts_with('#') && l.contains(needle);
        cfg.lines().position(|l| code(&l)).unwrap() + 1
    };
    for (needle, says) in [
        (
            "allow-redirect = true",
            "option 'allow-redirect' dropped: rproxy has no internal redirect",
        ),
        ("error {", "option 'error' dropped"),
        (
            "aliases",
            &format!("`localhost:{port}` written as `localhost`"),
        ),
        ("enabled     = false", "RProxy ignored it"),
        ("pending-timeout", "rounded up to 3 s"),
    ] {
        let want = format!("{src}:{}: ", line_of(needle));
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&want) && l.contains(says)),
            "no {want:?}...{says:?} in:\n{stderr}"
        );
    }
    assert!(toml.contains("name = \"*.example.com\""), "{toml}");

    let _proxy = Proxy::start("convert-2x", &toml, port);
    let get_host = |host: &str, path: &str| {
        let (status, body) = raw(
            port,
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(get_host("www.example.com", "/health"), (200, "app1".into()));
    assert_eq!(get_host("localhost", "/api/users"), (200, "app2".into()));
    assert_eq!(get_host("example.com:8080", "/poll"), (200, "app1".into()));
    let mut static_from = Vec::new();
    for _ in 0..4 {
        let (status, body) = get_host("a.example.com", "/static/x.css");
        assert_eq!(status, 200);
        static_from.push(body);
    }
    assert!(
        static_from.iter().any(|b| b == "app1") && static_from.iter().any(|b| b == "app2"),
        "roundrobin over app1 and app2: {static_from:?}"
    );
    // No rule or no vhost: 404. The disabled downstream is out of rotation: 503.
    assert_eq!(get_host("www.example.com", "/nothing").0, 404);
    assert_eq!(get_host("other.org", "/health").0, 404);
    assert_eq!(get_host("www.example.com", "/old/page").0, 503);
    assert_eq!(legacy.hits(), 0);
    let lines = wait_lines(&log, 9);
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("www.example.com /health 200 health")),
        "{lines:?}"
    );
}

fn convert_text(name: &str, text: &str) -> (Option<i32>, String, String) {
    let dir = temp_dir(name);
    let src = dir.join("x.cfg");
    std::fs::write(&src, text).unwrap();
    let out = run(&["--convert", src.to_str().unwrap()]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).replace(&src.display().to_string(), "x.cfg"),
    )
}

#[test]
fn unknown_options_are_named_and_unreadable_files_refused() {
    let (code, toml, err) = convert_text(
        "convert-unknown",
        "server {\n  addr = 127.0.0.1\n  frobnicate = 3\n  downstream { addr = 127.0.0.1 }\n}\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("x.cfg:3: option 'frobnicate' dropped: unknown to RProxy"),
        "{err}"
    );
    assert!(!toml.contains("frobnicate"));

    // What libconfuse silently mangled is refused, with line and column; nothing on stdout.
    let (code, toml, err) = convert_text(
        "convert-star",
        "server {\n  vhost *.example.com {\n  }\n}\n",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(toml.is_empty());
    assert!(
        err.contains("x.cfg:2:9: unquoted `*` is dropped by libconfuse"),
        "{err}"
    );
    let (code, _, err) = convert_text("convert-include", "include(\"more.cfg\")\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("x.cfg:1:1: `include(...)`"), "{err}");

    let missing = run(&["--convert", "/nonexistent/rproxy.cfg"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/rproxy.cfg")
    );
    // Usage errors: 2.
    assert_eq!(run(&["--convert"]).status.code(), Some(2));
    assert_eq!(run(&["--convert", "a.cfg", "-t"]).status.code(), Some(2));
}
