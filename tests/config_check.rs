//! `rproxy -t`: accepts the shipped configuration and every example, and refuses broken ones
//! with exit status 1 and a message naming the file and the key.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn check(path: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("-t").arg("-c").arg(path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_text(name: &str, text: &str) -> (i32, String, String) {
    let dir = temp_dir(name);
    let p = dir.join("rproxy.toml");
    std::fs::write(&p, text).unwrap();
    check(&p, &[])
}

const GOOD: &str = r#"
user = "nobody"
group = "nogroup"
[[server]]
addr = "127.0.0.1"
port = 8080
  [[server.downstream]]
  addr = "127.0.0.1"
  port = 8081
"#;

#[test]
fn shipped_config_passes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let shipped = Path::new(root).join("conf/rproxy.toml");
    // As installed, the package has created the `rproxy` user and /var/log/rproxy.
    let mut env = Vec::new();
    if !Path::new("/var/log/rproxy").is_dir() {
        std::fs::create_dir_all("/var/log/rproxy").expect("/var/log/rproxy (run as root)");
    }
    if nix_user_missing("rproxy") {
        env.push(("RPROXY_USER", "nobody"));
        env.push(("RPROXY_GROUP", "nogroup"));
    }
    let (code, out, err) = check(&shipped, &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration ok"), "{out}");
}

fn nix_user_missing(name: &str) -> bool {
    !std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}

#[test]
fn every_example_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/examples");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let (code, out, err) = check(&p, &[]);
            assert_eq!(code, 0, "{}: {err}", p.display());
            assert!(out.contains("configuration ok"));
            n += 1;
        }
    }
    assert!(n >= 3, "only {n} examples");
}

#[test]
fn minimal_config_passes() {
    let (code, out, _) = check_text("minimal", GOOD);
    assert_eq!(code, 0);
    assert!(out.contains("configuration ok"));
}

fn refused(name: &str, text: &str, key: &str, reason: &str) {
    let (code, out, err) = check_text(name, text);
    assert_eq!(code, 1, "accepted:\n{text}\nstdout: {out}");
    let line = err
        .lines()
        .find(|l| l.contains(key))
        .unwrap_or_else(|| panic!("no error naming {key}:\n{err}"));
    assert!(line.contains("rproxy.toml"), "the file is named: {line}");
    assert!(line.contains(reason), "reason {reason:?} missing: {line}");
    assert!(!out.contains("configuration ok"));
}

#[test]
fn unknown_key_is_refused() {
    let (_, _, err) = check_text(
        "unknown-path",
        &GOOD.replace("port = 8080", "port = 8080\nbogus = 1"),
    );
    assert!(err.contains("server[0].bogus: unknown key"), "{err}");
    refused(
        "unknown",
        &GOOD.replace("port = 8080", "port = 8080\nlisten-backlog = 5"),
        "server[0].listen-backlog",
        "unknown key",
    );
    refused(
        "unknown-global",
        &format!("wrokers = 2\n{GOOD}"),
        "wrokers",
        "unknown key",
    );
}

#[test]
fn bad_lb_method_is_refused() {
    refused(
        "lb",
        &GOOD.replace("port = 8080", "port = 8080\nlb-method = \"fastest\""),
        "server[0].lb-method",
        "fastest",
    );
}

#[test]
fn bad_regex_is_refused() {
    refused(
        "regex",
        &format!("{GOOD}\n  [[server.rewrite]]\n  src = \"^(/dir/\"\n  dst = \"/x/\"\n"),
        "server[0].rewrite[0].src",
        "regular expression",
    );
}

#[test]
fn port_out_of_range_is_refused() {
    refused(
        "port",
        &GOOD.replace("port = 8081", "port = 70000"),
        "server[0].downstream[0].port",
        "out of range",
    );
    refused(
        "port0",
        &GOOD.replace("port = 8080", "port = 0"),
        "server[0].port",
        "out of range",
    );
}

#[test]
fn missing_cert_is_refused() {
    refused(
        "cert",
        &format!(
            "{GOOD}\n  [server.ssl]\n  enabled = true\n  cert = \"/nonexistent/server.crt\"\n  key = \"/nonexistent/server.key\"\n"
        ),
        "server[0].ssl.cert",
        "/nonexistent/server.crt",
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = format!("wrokers = 2\n{GOOD}")
        .replace(
            "port = 8080",
            "port = 8080\nmax-header-size = 10\nlb-method = \"fastest\"\nbacklog = \"big\"\nbogus = 1",
        )
        .replace("port = 8081", "port = 99999\n  nope = 3")
        + "\n  [server.logging]\n  format = \"{NOPE}\"\n  filename = \"/tmp/x.log\"\n";
    let (code, _, err) = check_text("many", &text);
    assert_eq!(code, 1);
    for key in [
        "wrokers: unknown key",
        "server[0].bogus: unknown key",
        "server[0].downstream[0].nope: unknown key",
        "server[0].lb-method: unknown value `fastest`",
        "server[0].backlog: invalid type",
        "server[0].max-header-size",
        "server[0].downstream[0].port",
        "server[0].logging.format",
    ] {
        assert!(err.contains(key), "{key} not reported:\n{err}");
    }
}

#[test]
fn unknown_log_variable_and_facility_are_refused() {
    refused(
        "logvar",
        &format!("{GOOD}\n  [server.logging]\n  type = \"syslog\"\n  facility = \"local9\"\n"),
        "server[0].logging.facility",
        "local9",
    );
}

#[test]
fn environment_overrides_globals() {
    let dir = temp_dir("env");
    let p = dir.join("rproxy.toml");
    std::fs::write(&p, GOOD).unwrap();
    let (code, _, err) = check(&p, &[("RPROXY_WORKERS", "0")]);
    assert_eq!(code, 1);
    assert!(err.contains("workers"), "{err}");
    let (code, _, _) = check(&p, &[("RPROXY_WORKERS", "3")]);
    assert_eq!(code, 0);
}

#[test]
fn unresolvable_downstream_is_refused() {
    refused(
        "dns",
        &GOOD.replace(
            "addr = \"127.0.0.1\"\n  port = 8081",
            "addr = \"no-such-host.invalid\"\n  port = 8081",
        ),
        "server[0].downstream[0].addr",
        "no-such-host.invalid",
    );
}

/// A self-signed certificate and its key, written to `dir` (readable by anyone, as a real
/// deployment's would be by root): `(cert, key)`.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    certificate(dir, now - 60, now + 30 * 86_400)
}

/// A self-signed certificate for `rproxy.test` valid between two Unix times.
fn certificate(dir: &Path, from: i64, to: i64) -> (std::path::PathBuf, std::path::PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509NameBuilder, X509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "rproxy.test").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(from).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(to).unwrap()).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let (cert, keyf) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, b.build().to_pem().unwrap()).unwrap();
    std::fs::write(&keyf, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert, keyf)
}

/// A TLS section passes `-t` without a warning and serves HTTPS; an expired certificate is
/// only a warning (it still starts: renewing it is a reload away).
#[test]
fn tls_sections_start_and_expired_certificates_warn() {
    let certs = temp_dir("tls-fixture");
    let (cert, key) = self_signed(&certs);
    let backend = Backend::start("tls-ok");
    let port = free_port();
    let tls = format!(
        "[server.ssl]\nenabled = true\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let cfg = flat_config(port, &[backend.port], &tls, "workers = 1\n");
    let (code, out, err) = check_text("tls-ok", &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration ok"), "{out}");
    assert!(!err.contains("warning"), "{err}");
    let p = Proxy::start("tls-serves", &cfg, port);
    let out = Command::new("curl")
        .args(["-sSk", &format!("https://127.0.0.1:{}/", p.port)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tls-ok", "{out:?}");

    let old = temp_dir("tls-expired");
    let (cert, key) = certificate(&old, 1_000_000_000, 1_100_000_000);
    let text = format!(
        "{GOOD}\n  [server.ssl]\n  enabled = true\n  cert = \"{}\"\n  key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let (code, _, err) = check_text("tls-expired", &text);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("server[0].ssl.cert") && err.contains("expired"),
        "{err}"
    );
}

/// Vhosts are served: -t has nothing to say, and the master starts with them.
#[test]
fn vhosts_start() {
    let port = free_port();
    let routed = format!(
        "{}\n  [[server.vhost]]\n  name = \"a.test\"\n",
        GOOD.replace("port = 8080", &format!("port = {port}"))
    );
    let (code, out, err) = check_text("vhost", &routed);
    assert_eq!(code, 0, "vhost: {err}");
    assert!(out.contains("configuration ok"), "vhost: {out}");
    assert!(!err.contains("warning"), "vhost: {err}");
    let _p = Proxy::start("vhost-starts", &routed, port);
    assert_eq!(get(port, "/").0, 404, "no vhost matches Host: test");
}

#[test]
fn shadowed_rules_are_warnings_of_dash_t() {
    let text = format!(
        "{GOOD}\n  [[server.vhost]]\n  name = \"*\"\n\
         [[server.vhost.rule]]\n  name = \"all\"\n  uri-gmatch = \"/*\"\n\
         [[server.vhost.rule]]\n  name = \"late\"\n  uri-match = \"/x\"\n\
         [[server.vhost]]\n  name = \"a.test\"\n"
    );
    let dir = temp_dir("shadow");
    let p = dir.join("rproxy.toml");
    std::fs::write(&p, &text).unwrap();
    let (code, out, err) = check(&p, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration ok"), "{out}");
    let file = p.display().to_string();
    for want in [
        format!("{file}: server[0].vhost[0].rule[1]: warning: rule `late` is unreachable"),
        format!("{file}: server[0].vhost[1].name: warning: vhost `a.test` is unreachable"),
    ] {
        assert!(err.contains(&want), "{want:?} not in {err}");
    }
}
