//! The TLS contexts of a generation (DESIGN section 6), built by the master before it forks:
//! certificates, chains and keys are read here, as root, so a key only root can read works
//! while workers run unprivileged. A reload builds new contexts from the files as they are
//! then, so changed certificates are picked up by the new generation while the old one drains
//! with its own.
//!
//! What every context of every generation shares, and what therefore lives as long as the
//! master (made once, before the first fork that needs it): the ticket key ring (rotated by
//! the master, read by every worker: `ticket_keys.rs`) and the session-ID cache
//! (`session_cache.rs`), both in shared memory, so a session resumes on any worker and across
//! reloads.

use std::ffi::c_void;
use std::path::Path;
use std::sync::OnceLock;

use foreign_types::ForeignTypeRef;
use openssl::hash::{hash, MessageDigest};
use openssl::ssl::{
    AlpnError, NameType, SniError, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode,
    SslOptions, SslSession, SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::X509Name;
use rproxy_shared::config::{Alpn, Config, Ssl, TlsVersion};

use crate::session_cache::SessionCache;

/// OpenSSL's `SSL_CTRL_SET_TLSEXT_TICKET_KEYS` (a macro, absent from openssl-sys).
const SSL_CTRL_SET_TLSEXT_TICKET_KEYS: libc::c_int = 59;

/// The session ID context of every context of every generation: a per-generation one would
/// make every client fall back to a full handshake after a reload, and client-certificate
/// verification fails ticket resumption without one.
const SESSION_ID_CONTEXT: &[u8] = b"rproxy";

extern "C" {
    // Macros or functions openssl-sys does not declare; all are exported by libssl 1.1 and 3.
    fn SSL_CTX_set_timeout(ctx: *mut openssl_sys::SSL_CTX, t: libc::c_long) -> libc::c_long;
    fn SSL_CTX_get_verify_depth(ctx: *const openssl_sys::SSL_CTX) -> libc::c_int;
    fn SSL_set_verify_depth(ssl: *mut openssl_sys::SSL, depth: libc::c_int);
}

/// The master's one session cache, made before the first fork of a generation that uses it.
static CACHE: OnceLock<SessionCache> = OnceLock::new();

/// One context per `[[server]]` (`None` for plain listeners), in `config.servers` order. The
/// server's context answers clients without SNI or with a name no vhost claims, and switches
/// to a vhost's context when SNI names it.
pub fn build(config: &Config) -> Result<Vec<Option<SslContext>>, String> {
    config
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let Some(ssl) = &s.ssl else { return Ok(None) };
            let key = format!("server[{i}].ssl");
            let mut by_name: Vec<(Vec<String>, SslContext)> = Vec::new();
            for (vi, v) in s.vhosts.iter().enumerate() {
                if let Some(vssl) = &v.ssl {
                    let ctx = context(vssl, &format!("server[{i}].vhost[{vi}].ssl"))?.build();
                    let mut names = vec![v.name.to_ascii_lowercase()];
                    names.extend(v.aliases.iter().map(|a| a.to_ascii_lowercase()));
                    by_name.push((names, ctx));
                }
            }
            let mut b = context(ssl, &key)?;
            if !by_name.is_empty() {
                b.set_servername_callback(move |ssl, _alert| {
                    let Some(name) = ssl.servername(NameType::HOST_NAME) else {
                        return Ok(());
                    };
                    let name = name.to_ascii_lowercase();
                    let Some((_, ctx)) = by_name
                        .iter()
                        .find(|(pats, _)| pats.iter().any(|p| glob(p.as_bytes(), name.as_bytes())))
                    else {
                        return Ok(());
                    };
                    ssl.set_ssl_context(ctx)
                        .map_err(|_| SniError::ALERT_FATAL)?;
                    // SSL_set_SSL_CTX switches certificate, CA store and client CA list, not
                    // the verify mode and depth (as nginx, copy them). Protocol versions,
                    // ciphers and sessions were settled by the server's context already.
                    ssl.set_verify(ctx.verify_mode());
                    // SAFETY: both objects are valid for the duration of the callback.
                    unsafe {
                        SSL_set_verify_depth(ssl.as_ptr(), SSL_CTX_get_verify_depth(ctx.as_ptr()))
                    };
                    Ok(())
                });
            }
            Ok(Some(b.build()))
        })
        .collect()
}

/// `*` matches any run of characters (also dots, as RProxy's fnmatch without FNM_PATHNAME).
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// TLS 1.2 ciphers when `ciphers` is unset: forward secret and AEAD only (Mozilla's
/// "intermediate" list without DHE). OpenSSL's default also offers CBC and RSA key exchange,
/// which testssl.sh reports (LUCKY13: "potentially VULNERABLE").
pub const DEFAULT_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
ECDHE-RSA-CHACHA20-POLY1305";

/// A context for one TLS section; errors name the key and the file.
fn context(ssl: &Ssl, key: &str) -> Result<SslContextBuilder, String> {
    let mut b = SslContextBuilder::new(SslMethod::tls_server())
        .map_err(|e| format!("{key}: OpenSSL cannot create a context: {e}"))?;
    b.set_certificate_chain_file(&ssl.cert)
        .map_err(|e| format!("{key}.cert: {}: {e}", ssl.cert.display()))?;
    b.set_private_key_file(&ssl.key, SslFiletype::PEM)
        .map_err(|e| format!("{key}.key: {}: {e}", ssl.key.display()))?;
    b.check_private_key()
        .map_err(|e| format!("{key}.key: does not match the certificate: {e}"))?;
    protocols(&mut b, &ssl.protocols).map_err(|e| format!("{key}.protocols-on: {e}"))?;
    let c = ssl.ciphers.as_deref().unwrap_or(DEFAULT_CIPHERS);
    b.set_cipher_list(c)
        .map_err(|e| format!("{key}.ciphers: `{c}`: {e}"))?;
    if let Some(c) = &ssl.ciphersuites {
        b.set_ciphersuites(c)
            .map_err(|e| format!("{key}.ciphersuites: `{c}`: {e}"))?;
    }
    verification(&mut b, ssl, key)?;
    // Idle keep-alive connections then hold no TLS buffers (~34 KiB each).
    b.set_mode(SslMode::RELEASE_BUFFERS);
    // One `recv` per TLS record (or several) instead of two, header then body, as nginx sets
    // it: ~2-4 us less CPU per keep-alive request (bench/README.md). Bytes read ahead wait in
    // OpenSSL, unseen by the socket's readiness: the worker's idle wait asks OpenSSL first
    // (`SSL_has_pending`, worker/src/tls.rs).
    b.set_read_ahead(true);
    b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE | SslOptions::NO_RENEGOTIATION);
    b.set_session_id_context(SESSION_ID_CONTEXT)
        .map_err(|e| format!("{key}: session id context: {e}"))?;
    let secs = libc::c_long::try_from(ssl.context_timeout.as_secs()).unwrap_or(libc::c_long::MAX);
    // SAFETY: `b` owns a valid SSL_CTX; SSL_CTX_set_timeout only stores the number.
    unsafe { SSL_CTX_set_timeout(b.as_ptr(), secs) };
    sessions(&mut b, ssl, key)?;
    alpn(&mut b, &ssl.alpn);
    Ok(b)
}

/// The enabled versions as OpenSSL's min/max plus `NO_TLSv1_x` for holes inside the range.
fn protocols(b: &mut SslContextBuilder, on: &[TlsVersion]) -> Result<(), String> {
    let (Some(lo), Some(hi)) = (on.iter().min(), on.iter().max()) else {
        return Err("no protocol left enabled".into());
    };
    let v = |t: &TlsVersion| match t {
        TlsVersion::Tls1_0 => SslVersion::TLS1,
        TlsVersion::Tls1_1 => SslVersion::TLS1_1,
        TlsVersion::Tls1_2 => SslVersion::TLS1_2,
        TlsVersion::Tls1_3 => SslVersion::TLS1_3,
    };
    b.set_min_proto_version(Some(v(lo)))
        .and_then(|()| b.set_max_proto_version(Some(v(hi))))
        .map_err(|e| e.to_string())?;
    for (t, opt) in [
        (TlsVersion::Tls1_0, SslOptions::NO_TLSV1),
        (TlsVersion::Tls1_1, SslOptions::NO_TLSV1_1),
        (TlsVersion::Tls1_2, SslOptions::NO_TLSV1_2),
        (TlsVersion::Tls1_3, SslOptions::NO_TLSV1_3),
    ] {
        if !on.contains(&t) {
            b.set_options(opt);
        }
    }
    Ok(())
}

/// Client certificates: `ca`, `capath`, `crl`, `verify-peer`, `enforce-peer-cert`,
/// `verify-depth`.
fn verification(b: &mut SslContextBuilder, ssl: &Ssl, key: &str) -> Result<(), String> {
    if let Some(ca) = &ssl.ca {
        b.set_ca_file(ca)
            .map_err(|e| format!("{key}.ca: {}: {e}", ca.display()))?;
        // The CAs named in the CertificateRequest, so clients pick the right certificate.
        let names = X509Name::load_client_ca_file(ca)
            .map_err(|e| format!("{key}.ca: {}: {e}", ca.display()))?;
        b.set_client_ca_list(names);
    }
    if let Some(dir) = &ssl.capath {
        // Hashed directory, read lazily by the worker at handshake time (CRATES.md).
        b.load_verify_locations(None, Some(dir))
            .map_err(|e| format!("{key}.capath: {}: {e}", dir.display()))?;
    }
    if let Some(crl) = &ssl.crl {
        // A PEM file loaded as verify locations adds its CRLs to the store.
        b.load_verify_locations(Some(crl), None)
            .map_err(|e| format!("{key}.crl: {}: {e}", crl.display()))?;
        b.cert_store_mut()
            .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
            .map_err(|e| format!("{key}.crl: {e}"))?;
    }
    if ssl.verify_peer || ssl.enforce_peer_cert {
        let mut mode = SslVerifyMode::PEER;
        if ssl.enforce_peer_cert {
            mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
        }
        b.set_verify(mode);
        b.set_verify_depth(ssl.verify_depth);
    }
    Ok(())
}

/// Tickets (keys shared by every worker and generation) and the shared session-ID cache.
fn sessions(b: &mut SslContextBuilder, ssl: &Ssl, key: &str) -> Result<(), String> {
    if ssl.tickets {
        // One ticket per handshake: clients use one, and each costs an encryption.
        b.set_num_tickets(1)
            .map_err(|e| format!("{key}.tickets: {e}"))?;
        match &ssl.ticket_key_file {
            Some(p) => {
                // The fleet's key: fixed while this configuration serves (rotate the file and
                // reload).
                let mut keys =
                    ticket_keys_from_file(p).map_err(|e| format!("{key}.ticket-key-file: {e}"))?;
                // SAFETY: `b` owns a valid SSL_CTX; the control copies the 80 bytes given.
                let rc = unsafe {
                    openssl_sys::SSL_CTX_ctrl(
                        b.as_ptr(),
                        SSL_CTRL_SET_TLSEXT_TICKET_KEYS,
                        keys.len() as libc::c_long,
                        keys.as_mut_ptr() as *mut c_void,
                    )
                };
                if rc != 1 {
                    return Err(format!("{key}.ticket-key-file: OpenSSL refused the keys"));
                }
            }
            // The master's rotating ring, shared by every worker and generation.
            None => crate::ticket_keys::install(b.as_ptr())
                .map_err(|e| format!("{key}.tickets: {e}"))?,
        }
    } else {
        // Without tickets, TLS 1.3 resumes with stateful tickets kept in the session cache.
        b.set_options(SslOptions::NO_TICKET);
    }
    let Some(cfg) = ssl.cache else {
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        return Ok(());
    };
    if CACHE.get().is_none() {
        let c = match inherited_cache() {
            Some(c) => c,
            None => SessionCache::new(cfg.size).map_err(|e| format!("{key}.cache-size: {e}"))?,
        };
        let _ = CACHE.set(c);
    }
    let Some(cache) = CACHE.get() else {
        return Err(format!("{key}.cache-enabled: no session cache"));
    };
    // OpenSSL's own cache is per process: only ours, which every worker shares.
    b.set_session_cache_mode(SslSessionCacheMode::SERVER | SslSessionCacheMode::NO_INTERNAL);
    let timeout = cfg.timeout;
    let tickets = ssl.tickets;
    b.set_new_session_callback(move |s, session| {
        // A stateless TLS 1.3 ticket needs no server state.
        if tickets && s.version2() == Some(SslVersion::TLS1_3) {
            return;
        }
        if let Ok(der) = session.to_der() {
            cache.put(session.id(), &der, timeout);
        }
    });
    b.set_remove_session_callback(move |_, session| cache.remove(session.id()));
    // SAFETY: the callback returns a session decoded from the cache, owned by the caller;
    // nothing it captures outlives the context (the cache is a static).
    unsafe {
        b.set_get_session_callback(move |_, id| {
            cache
                .get(id)
                .and_then(|der| SslSession::from_der(&der).ok())
        });
    }
    Ok(())
}

/// The session cache the previous master handed over in a binary upgrade, when it is usable:
/// sessions made before the upgrade resume after it. Its size stays what it was (as on a
/// reload: `cache-size` takes effect on a restart).
fn inherited_cache() -> Option<SessionCache> {
    let fd = crate::handover::take_session_cache()?;
    match SessionCache::adopt(fd) {
        Ok(c) => {
            rproxy_shared::info!(
                "TLS session cache ({} sessions) handed over by the previous master",
                c.capacity()
            );
            Some(c)
        }
        Err(e) => {
            rproxy_shared::warn!(
                "TLS session cache of the previous master not usable ({e}): starting empty"
            );
            None
        }
    }
}

/// The session cache's descriptor, for the hand-over to a new binary (`None` until a
/// context used it).
pub fn session_cache_fd() -> Option<std::os::fd::BorrowedFd<'static>> {
    CACHE.get().map(SessionCache::fd)
}

/// 48 bytes (nginx: name, HMAC secret, AES-128 key) or 80 bytes (name, HMAC, AES-256), turned
/// into OpenSSL's 80-byte layout. A 48-byte file is stretched with SHA-512, so hosts sharing
/// the file share tickets with each other (not with nginx, whose 48-byte tickets use AES-128).
fn ticket_keys_from_file(p: &Path) -> Result<[u8; 80], String> {
    let raw = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let mut keys = [0u8; 80];
    match raw.len() {
        80 => keys.copy_from_slice(&raw),
        48 => {
            keys[..16].copy_from_slice(&raw[..16]);
            let d = hash(MessageDigest::sha512(), &raw[16..])
                .map_err(|e| format!("{}: {e}", p.display()))?;
            keys[16..].copy_from_slice(&d[..64]);
        }
        n => return Err(format!("{} is {n} bytes; it must be 48 or 80", p.display())),
    }
    Ok(keys)
}

/// The ALPN protocols of one context. Every context, the SNI ones too, needs its own callback,
/// or h2 silently disappears for a vhost.
fn alpn(b: &mut SslContextBuilder, protos: &[Alpn]) {
    let mut wire = Vec::new();
    for p in protos {
        let name: &[u8] = match p {
            Alpn::H2 => b"h2",
            Alpn::Http11 => b"http/1.1",
        };
        wire.push(name.len() as u8);
        wire.extend_from_slice(name);
    }
    if wire.is_empty() {
        return;
    }
    b.set_alpn_select_callback(move |_, client| select(&wire, client).ok_or(AlpnError::NOACK));
}

/// The first of our protocols (`ours`, wire format) the client offers; a slice of `client`.
fn select<'a>(ours: &[u8], client: &'a [u8]) -> Option<&'a [u8]> {
    let mut o = ours;
    while let Some((&n, rest)) = o.split_first() {
        let want = rest.get(..usize::from(n))?;
        o = &rest[usize::from(n)..];
        let mut c = client;
        while let Some((&m, crest)) = c.split_first() {
            let offered = crest.get(..usize::from(m))?;
            if offered == want {
                return Some(offered);
            }
            c = &crest[usize::from(m)..];
        }
    }
    None
}

/// Warnings for `-t` and start-up: certificates that are expired or not yet valid.
pub fn expiry_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let now = match openssl::asn1::Asn1Time::days_from_now(0) {
        Ok(t) => t,
        Err(_) => return out,
    };
    let sections = config.servers.iter().enumerate().flat_map(|(i, s)| {
        s.ssl
            .iter()
            .map(move |t| (format!("server[{i}].ssl.cert"), t))
            .chain(s.vhosts.iter().enumerate().filter_map(move |(vi, v)| {
                v.ssl
                    .as_ref()
                    .map(|t| (format!("server[{i}].vhost[{vi}].ssl.cert"), t))
            }))
    });
    for (key, ssl) in sections {
        let Ok(pem) = std::fs::read(&ssl.cert) else {
            continue;
        };
        let Ok(cert) = openssl::x509::X509::from_pem(&pem) else {
            continue;
        };
        if cert.not_after() < now {
            out.push(format!(
                "{key}: {} expired on {}",
                ssl.cert.display(),
                cert.not_after()
            ));
        } else if cert.not_before() > now {
            out.push(format!(
                "{key}: {} is not valid before {}",
                ssl.cert.display(),
                cert.not_before()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::ssl::{Ssl, SslConnector, SslMethod, SslVerifyMode};
    use openssl::x509::{X509NameBuilder, X509};

    use super::glob;

    fn self_signed(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(3).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let (c, k) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
        std::fs::write(&c, b.build().to_pem().unwrap()).unwrap();
        std::fs::write(&k, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (c, k)
    }

    /// The certificate CN and ALPN protocol a client offering `sni` and h2 gets.
    fn hello(ctx: &openssl::ssl::SslContext, sni: Option<&str>) -> (String, Vec<u8>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server_ctx = ctx.clone();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut s = Ssl::new(&server_ctx).unwrap().accept(s).unwrap();
            let _ = s.write_all(b"x");
        });
        let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        b.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
        let c = b.build().into_context();
        let mut ssl = Ssl::new(&c).unwrap();
        if let Some(n) = sni {
            ssl.set_hostname(n).unwrap();
        }
        let s = ssl
            .connect(std::net::TcpStream::connect(addr).unwrap())
            .unwrap();
        let cert = s.ssl().peer_certificate().unwrap();
        let cn = cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .unwrap();
        let cn = String::from_utf8_lossy(cn.data().as_slice()).into_owned();
        let alpn = s.ssl().selected_alpn_protocol().unwrap_or(b"").to_vec();
        t.join().unwrap();
        (cn, alpn)
    }

    /// SNI picks a vhost's certificate (glob and alias), the server's is the default, and
    /// every context answers ALPN.
    #[test]
    fn sni_switches_to_the_vhost_context_with_its_own_alpn() {
        let dir = std::env::temp_dir().join(format!("rproxy-sni-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (dc, dk) = self_signed(&dir, "default.test");
        let (bc, bk) = self_signed(&dir, "b.test");
        // Workers may not run as root (DESIGN 11): as root, name nobody (never forked here).
        let (user, group) = if nix::unistd::getuid().is_root() {
            ("nobody".to_string(), "nogroup".to_string())
        } else {
            let me = nix::unistd::User::from_uid(nix::unistd::getuid())
                .unwrap()
                .unwrap();
            let g = nix::unistd::Group::from_gid(me.gid).unwrap().unwrap();
            (me.name, g.name)
        };
        let cfg = format!(
            "user = \"{}\"\ngroup = \"{}\"\n[[server]]\nport = 1\n\
             [server.ssl]\nenabled = true\ncert = \"{}\"\nkey = \"{}\"\n\
             [[server.downstream]]\naddr = \"127.0.0.1\"\nname = \"d\"\n\
             [[server.vhost]]\nname = \"*.b.test\"\naliases = [\"b.test\"]\n\
             [server.vhost.ssl]\nenabled = true\ncert = \"{}\"\nkey = \"{}\"\nalpn = [\"h2\"]\n\
             [[server.vhost.rule]]\nuri-gmatch = \"/*\"\ndownstreams = [\"d\"]\n",
            user,
            group,
            dc.display(),
            dk.display(),
            bc.display(),
            bk.display()
        );
        let path = dir.join("rproxy.toml");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(cfg.as_bytes())
            .unwrap();
        let config = rproxy_shared::load::load(&path).unwrap_or_else(|e| panic!("{:?}", e.0));
        let ctxs = super::build(&config).unwrap();
        let ctx = ctxs[0].as_ref().unwrap();
        assert_eq!(
            hello(ctx, Some("www.b.test")),
            ("b.test".into(), b"h2".to_vec())
        );
        assert_eq!(
            hello(ctx, Some("B.TEST")),
            ("b.test".into(), b"h2".to_vec())
        );
        assert_eq!(
            hello(ctx, Some("other.test")),
            ("default.test".into(), b"h2".to_vec())
        );
        assert_eq!(hello(ctx, None), ("default.test".into(), b"h2".to_vec()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn alpn_server_preference() {
        let ours = b"\x02h2\x08http/1.1";
        assert_eq!(super::select(ours, b"\x08http/1.1\x02h2"), Some(&b"h2"[..]));
        assert_eq!(super::select(ours, b"\x08http/1.1"), Some(&b"http/1.1"[..]));
        assert_eq!(super::select(ours, b"\x06spdy/3"), None);
        assert_eq!(super::select(ours, b"\x09bad"), None);
    }

    #[test]
    fn sni_globs() {
        assert!(glob(b"*.example.com", b"a.example.com"));
        assert!(glob(b"*.example.com", b"a.b.example.com"));
        assert!(!glob(b"*.example.com", b"example.com"));
        assert!(glob(b"example.com", b"example.com"));
        assert!(!glob(b"example.com", b"example.org"));
        assert!(glob(b"*", b"anything"));
    }
}
