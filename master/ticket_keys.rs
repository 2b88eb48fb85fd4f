//! Session-ticket keys shared by every worker of every generation, rotated by the master.
//!
//! One shared page (a memfd, `shm.rs`, handed to the new master by a binary upgrade) made by
//! the master before the first fork that needs it and kept for its whole life, so a ticket issued by any worker resumes on any other and
//! after a reload. It holds a ring of [`RING`] keys: the newest encrypts, all of them decrypt
//! (a ticket under an older key is accepted and renewed). The master alone writes it, every
//! [`ROTATE_EVERY`] (a seqlock: readers retry while a write is in progress, and a reader
//! killed mid-read holds nothing). So a ticket stays usable for at least
//! `(RING - 1) * ROTATE_EVERY` = 36 h, and a stolen key stops working after 48 h at most.
//!
//! OpenSSL calls [`ticket_cb`] (`SSL_CTX_set_tlsext_ticket_key_evp_cb`, which neither
//! openssl nor openssl-sys declares) for every ticket it issues or reads.

use std::ffi::{c_char, c_int, c_uchar, c_void};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use openssl_sys::{
    OSSL_PARAM_construct_octet_string, EVP_CIPHER_CTX, EVP_MAC_CTX, OSSL_PARAM, SSL, SSL_CTX,
};

/// Keys kept; the newest encrypts.
const RING: usize = 4;
/// How often the master makes a new key.
pub const ROTATE_EVERY: Duration = Duration::from_secs(12 * 3600);

#[repr(C)]
#[derive(Clone, Copy)]
struct Key {
    name: [u8; 16],
    hmac: [u8; 32],
    aes: [u8; 32],
}

/// "rpTicket": what an inherited ring must begin with.
const MAGIC: u64 = 0x7270_5469_636b_6574;
/// Bumped whenever `Ring` or `Key` change (an old ring is then not adopted).
const LAYOUT: u64 = 1;

#[repr(C)]
struct Ring {
    stamp: crate::shm::Stamp,
    /// Odd while the master writes.
    seq: AtomicU64,
    /// Index of the newest key.
    current: usize,
    keys: [Key; RING],
    /// When the next key is due, in CLOCK_MONOTONIC milliseconds (system-wide). Kept here, not
    /// in the master's memory, so the schedule survives a binary upgrade: upgrading more often
    /// than every `ROTATE_EVERY` must not stop the rotation. Only the serving master uses it.
    next_rotation_ms: u64,
}

struct Shared {
    ring: *mut Ring,
    /// The memfd, kept for a binary upgrade.
    fd: OwnedFd,
    every: Duration,
}

// SAFETY: the ring is written by the master's single thread only (one master at a time: a
// new master of a binary upgrade rotates only after the commit, the old one never after it)
// and read through the seqlock.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

static SHARED: OnceLock<Shared> = OnceLock::new();

extern "C" {
    fn SSL_CTX_set_tlsext_ticket_key_evp_cb(
        ctx: *mut SSL_CTX,
        cb: extern "C" fn(
            *mut SSL,
            *mut c_uchar,
            *mut c_uchar,
            *mut EVP_CIPHER_CTX,
            *mut EVP_MAC_CTX,
            c_int,
        ) -> c_int,
    ) -> c_int;
    fn OSSL_PARAM_construct_utf8_string(
        key: *const c_char,
        buf: *mut c_char,
        bsize: usize,
    ) -> OSSL_PARAM;
}

/// Make the ring (once per master) and have `ctx` use it for its tickets.
pub fn install(ctx: *mut SSL_CTX) -> Result<(), String> {
    shared()?;
    // SAFETY: `ctx` is a valid context being built; the callback is a plain function.
    if unsafe { SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) } != 1 {
        return Err("OpenSSL refused the ticket key callback".into());
    }
    Ok(())
}

fn shared() -> Result<&'static Shared, String> {
    if let Some(s) = SHARED.get() {
        return Ok(s);
    }
    let region = match crate::handover::take_ticket_keys() {
        Some(fd) => match crate::shm::adopt(fd, stamp()) {
            Ok(r) => {
                rproxy_shared::info!("ticket keys handed over by the previous master");
                Some(r)
            }
            Err(e) => {
                rproxy_shared::warn!(
                    "ticket keys of the previous master not usable ({e}): new keys, so \
                     clients resuming by ticket make one full handshake"
                );
                None
            }
        },
        None => None,
    };
    let region = match region {
        Some(r) => r,
        None => fresh_ring()?,
    };
    let _ = SHARED.set(Shared {
        ring: region.ptr as *mut Ring,
        fd: region.fd,
        every: rotation_interval(),
    });
    SHARED
        .get()
        .ok_or_else(|| "ticket keys: not initialised".into())
}

fn stamp() -> crate::shm::Stamp {
    crate::shm::Stamp {
        magic: MAGIC,
        version: LAYOUT,
        size: std::mem::size_of::<Ring>() as u64,
    }
}

/// A new ring with a random key in every slot: an unused slot must not be a known (zero) key.
fn fresh_ring() -> Result<crate::shm::Region, String> {
    let region = crate::shm::create(c"rproxy-ticket-keys", stamp())
        .map_err(|e| format!("ticket keys: {e}"))?;
    let ring = region.ptr as *mut Ring;
    for i in 0..RING {
        let k = random_key()?;
        // SAFETY: the mapping is ours alone until the first fork.
        unsafe { (*ring).keys[i] = k };
    }
    let first = monotonic_ms().saturating_add(rotation_interval().as_millis() as u64);
    // SAFETY: as above.
    unsafe { (*ring).next_rotation_ms = first };
    Ok(region)
}

/// The ring's descriptor, for the hand-over to a new binary (`None` until a context used it).
pub fn fd() -> Option<BorrowedFd<'static>> {
    SHARED.get().map(|s| s.fd.as_fd())
}

/// `ROTATE_EVERY`, or a test's shorter interval (`test-faults` builds only).
fn rotation_interval() -> Duration {
    #[cfg(feature = "test-faults")]
    if let Some(ms) = std::env::var("RPROXY_TEST_TICKET_ROTATE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_millis(ms);
    }
    ROTATE_EVERY
}

fn random_key() -> Result<Key, String> {
    let mut k = Key {
        name: [0; 16],
        hmac: [0; 32],
        aes: [0; 32],
    };
    openssl::rand::rand_bytes(&mut k.name)
        .and_then(|()| openssl::rand::rand_bytes(&mut k.hmac))
        .and_then(|()| openssl::rand::rand_bytes(&mut k.aes))
        .map_err(|e| format!("no random bytes for ticket keys: {e}"))?;
    Ok(k)
}

/// The master's timer: a new newest key when due (the oldest is dropped).
pub fn rotate_if_due() {
    let Some(s) = SHARED.get() else { return };
    let now = monotonic_ms();
    // SAFETY: the field is only used by the master's single thread (see `Shared`).
    let due = unsafe { std::ptr::read_volatile(&(*s.ring).next_rotation_ms) };
    if now < due {
        return;
    }
    let next = now.saturating_add(s.every.as_millis() as u64);
    // SAFETY: as above.
    unsafe { std::ptr::write_volatile(&mut (*s.ring).next_rotation_ms, next) };
    match random_key() {
        Ok(k) => rotate(s, k),
        Err(e) => rproxy_shared::warn!("ticket key rotation skipped: {e}"),
    }
}

fn rotate(s: &Shared, k: Key) {
    // SAFETY: only the master writes, from its single thread; readers see an odd sequence
    // number meanwhile and retry.
    unsafe {
        let r = s.ring;
        let seq = (*r).seq.load(Ordering::Relaxed);
        (*r).seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let next = ((*r).current + 1) % RING;
        std::ptr::write_volatile(&mut (*r).keys[next], k);
        std::ptr::write_volatile(&mut (*r).current, next);
        (*r).seq.store(seq + 2, Ordering::Release);
    }
}

/// CLOCK_MONOTONIC in milliseconds: the same clock in every process of the machine.
fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into our own timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// A consistent copy of the ring: `(index of the newest, keys)`.
fn snapshot(s: &Shared) -> (usize, [Key; RING]) {
    loop {
        // SAFETY: the mapping lives as long as the process; torn copies are detected by the
        // sequence number and retried.
        unsafe {
            let r = s.ring;
            let before = (*r).seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let current = std::ptr::read_volatile(&(*r).current);
            let keys = std::ptr::read_volatile(&(*r).keys);
            fence(Ordering::Acquire);
            if (*r).seq.load(Ordering::Relaxed) == before && current < RING {
                return (current, keys);
            }
        }
    }
}

/// OpenSSL's ticket callback: `enc = 1` encrypt a new ticket with the newest key; `enc = 0`
/// find the key named in a ticket. Returns 1 (use it), 2 (use it and issue a fresh ticket),
/// 0 (unknown key: full handshake), -1 (error).
extern "C" fn ticket_cb(
    ssl: *mut SSL,
    key_name: *mut c_uchar,
    iv: *mut c_uchar,
    cipher: *mut EVP_CIPHER_CTX,
    mac: *mut EVP_MAC_CTX,
    enc: c_int,
) -> c_int {
    let Some(s) = SHARED.get() else { return -1 };
    let (current, keys) = snapshot(s);
    if enc == 1 {
        let k = &keys[current];
        // SAFETY: OpenSSL hands 16 writable bytes for the name and an IV buffer of the
        // cipher's IV length (16 for AES-256-CBC), and valid cipher and MAC contexts.
        unsafe {
            if openssl_sys::RAND_bytes(iv, 16) != 1 {
                return -1;
            }
            std::ptr::copy_nonoverlapping(k.name.as_ptr(), key_name, 16);
            if openssl_sys::EVP_EncryptInit_ex(
                cipher,
                openssl_sys::EVP_aes_256_cbc(),
                std::ptr::null_mut(),
                k.aes.as_ptr(),
                iv,
            ) != 1
                || !set_mac(mac, &k.hmac)
            {
                return -1;
            }
        }
        return 1;
    }
    // SAFETY: OpenSSL hands the ticket's 16-byte key name.
    let name = unsafe { std::slice::from_raw_parts(key_name, 16) };
    let Some(i) = keys.iter().position(|k| k.name == name) else {
        return 0;
    };
    let k = &keys[i];
    // SAFETY: valid contexts and the ticket's IV, as above.
    unsafe {
        if !set_mac(mac, &k.hmac)
            || openssl_sys::EVP_DecryptInit_ex(
                cipher,
                openssl_sys::EVP_aes_256_cbc(),
                std::ptr::null_mut(),
                k.aes.as_ptr(),
                iv,
            ) != 1
        {
            return -1;
        }
    }
    // TLS 1.3 clients use each ticket once: always issue a new one (CRATES.md: without it
    // half of chained resumptions fail). TLS 1.2: renew tickets under an older key.
    // SAFETY: `ssl` is the connection OpenSSL is handshaking.
    let tls13 = unsafe { openssl_sys::SSL_version(ssl) } == openssl_sys::TLS1_3_VERSION;
    if i != current || tls13 {
        2
    } else {
        1
    }
}

/// HMAC-SHA256 with `key` on OpenSSL's MAC context.
///
/// # Safety
/// `mac` must be the valid context OpenSSL handed to the callback.
unsafe fn set_mac(mac: *mut EVP_MAC_CTX, key: &[u8; 32]) -> bool {
    let mut digest = *b"SHA256\0";
    let mut k = *key;
    let params = [
        OSSL_PARAM_construct_octet_string(c"key".as_ptr(), k.as_mut_ptr() as *mut c_void, 32),
        OSSL_PARAM_construct_utf8_string(c"digest".as_ptr(), digest.as_mut_ptr() as *mut c_char, 0),
        openssl_sys::OSSL_PARAM_construct_end(),
    ];
    openssl_sys::EVP_MAC_CTX_set_params(mac, params.as_ptr()) == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_ring_and_moves_the_newest() {
        let s = shared().unwrap();
        let (c0, k0) = snapshot(s);
        let fresh = random_key().unwrap();
        rotate(s, fresh);
        let (c1, k1) = snapshot(s);
        assert_eq!(c1, (c0 + 1) % RING);
        assert_eq!(k1[c1].name, fresh.name);
        // The previous newest still decrypts.
        assert!(k1.iter().any(|k| k.name == k0[c0].name));
    }
}
