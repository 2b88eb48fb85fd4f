//! The `-t` checks of a TLS section: files readable, the key matching the certificate, cipher
//! strings and protocol names understood by OpenSSL. TLS serving itself lives in the worker;
//! these checks run before it exists so a broken TLS section is refused at load.

use std::path::Path;

use openssl::ssl::{SslContextBuilder, SslFiletype, SslMethod};
use openssl::x509::X509Crl;

use crate::schema::Ssl;

const PROTOCOLS: &[&str] = &["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", "ALL"];

/// `(key, reason)` for every problem found in `ssl`.
pub(crate) fn check(ssl: &Ssl) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for p in &ssl.protocols_on {
        if p == "SSLv2" || p == "SSLv3" {
            out.push(("protocols-on", format!("{p} is insecure and not supported")));
        } else if !PROTOCOLS.contains(&p.as_str()) {
            out.push(("protocols-on", format!("unknown protocol `{p}`")));
        }
    }
    for p in &ssl.protocols_off {
        if !PROTOCOLS.contains(&p.as_str()) && p != "SSLv2" && p != "SSLv3" {
            out.push(("protocols-off", format!("unknown protocol `{p}`")));
        }
    }
    for a in &ssl.alpn {
        if a != "h2" && a != "http/1.1" {
            out.push(("alpn", format!("unsupported protocol `{a}` (h2, http/1.1)")));
        }
    }
    if ssl.verify_depth > 100 {
        out.push(("verify-depth", "must be at most 100".into()));
    }
    if !ssl.enabled {
        return out;
    }
    let mut ctx = match SslContextBuilder::new(SslMethod::tls_server()) {
        Ok(c) => c,
        Err(err) => {
            out.push(("enabled", format!("OpenSSL cannot create a context: {err}")));
            return out;
        }
    };
    let cert_ok = match &ssl.cert {
        None => {
            out.push(("cert", "required when TLS is enabled".into()));
            false
        }
        Some(p) => match readable(p).and_then(|_| {
            ctx.set_certificate_chain_file(p)
                .map_err(|e| format!("{}: not a PEM certificate: {e}", p.display()))
        }) {
            Ok(()) => true,
            Err(r) => {
                out.push(("cert", r));
                false
            }
        },
    };
    let key_ok = match &ssl.key {
        None => {
            out.push(("key", "required when TLS is enabled".into()));
            false
        }
        Some(p) => match readable(p).and_then(|_| {
            ctx.set_private_key_file(p, SslFiletype::PEM)
                .map_err(|e| format!("{}: not a PEM private key: {e}", p.display()))
        }) {
            Ok(()) => true,
            Err(r) => {
                out.push(("key", r));
                false
            }
        },
    };
    if cert_ok && key_ok {
        if let Err(err) = ctx.check_private_key() {
            out.push(("key", format!("does not match the certificate: {err}")));
        }
    }
    if let Some(p) = &ssl.ca {
        if let Err(r) = readable(p).and_then(|_| {
            ctx.set_ca_file(p)
                .map_err(|e| format!("{}: not a PEM CA file: {e}", p.display()))
        }) {
            out.push(("ca", r));
        }
    }
    if let Some(p) = &ssl.capath {
        if !p.is_dir() {
            out.push(("capath", format!("{} is not a directory", p.display())));
        }
    }
    if let Some(p) = &ssl.crl {
        match std::fs::read(p) {
            Ok(pem) => {
                if X509Crl::from_pem(&pem).is_err() {
                    out.push(("crl", format!("{}: not a PEM CRL", p.display())));
                }
            }
            Err(e) => out.push(("crl", format!("cannot read {}: {e}", p.display()))),
        }
    }
    if let Some(c) = &ssl.ciphers {
        if ctx.set_cipher_list(c).is_err() {
            out.push(("ciphers", format!("OpenSSL accepts no cipher in `{c}`")));
        }
    }
    if let Some(c) = &ssl.ciphersuites {
        if ctx.set_ciphersuites(c).is_err() {
            out.push(("ciphersuites", format!("OpenSSL accepts no suite in `{c}`")));
        }
    }
    if let Some(p) = &ssl.ticket_key_file {
        match std::fs::metadata(p) {
            Ok(m) if m.len() == 48 || m.len() == 80 => {}
            Ok(m) => out.push((
                "ticket-key-file",
                format!("{} is {} bytes; it must be 48 or 80", p.display(), m.len()),
            )),
            Err(e) => out.push((
                "ticket-key-file",
                format!("cannot read {}: {e}", p.display()),
            )),
        }
    }
    out
}

fn readable(p: &Path) -> Result<(), String> {
    std::fs::File::open(p)
        .map(|_| ())
        .map_err(|e| format!("cannot read {}: {e}", p.display()))
}
