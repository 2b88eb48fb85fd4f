//! The TLS session-ID cache every worker shares (nginx's `ssl_session_cache shared:`):
//! OpenSSL's own cache lives in one process, so a client resuming by session ID on another
//! worker, or after a reload, would get a full handshake without it.
//!
//! One shared region (a memfd, `shm.rs`, so a binary upgrade hands it to the new master) mapped
//! by the master before the first fork that needs it and never unmapped (a reload keeps it):
//! a stamp (magic, layout version, size), a header with a process-shared, robust
//! pthread mutex, then `cache-size` fixed slots of DER-encoded sessions, 4-way set-associative
//! by a hash of the session ID (a full set evicts its expired or oldest entry). The critical
//! section is a copy. A worker killed while holding the lock leaves the slot it was writing
//! marked in the header: the next locker gets `EOWNERDEAD`, clears that slot, marks the mutex
//! consistent and goes on (a plain shared mutex would hang every worker).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::shm::{self, Stamp};

/// "rpSCache": what an inherited region must begin with.
const MAGIC: u64 = 0x7270_5343_6163_6865;
/// Bumped whenever `Header` or `Slot` change: a new binary then starts with an empty cache
/// instead of reading the old one's memory with the wrong layout.
const LAYOUT: u64 = 1;

/// Bytes of DER a slot holds: sessions are 132-191 bytes, ~890 with a client certificate.
/// A larger session is not cached (its client still resumes by ticket, if enabled).
const DER_MAX: usize = 960;
const WAYS: usize = 4;
const ID_MAX: usize = 32;

#[repr(C)]
struct Header {
    stamp: Stamp,
    mutex: libc::pthread_mutex_t,
    /// `slot + 1` while a slot is being written, 0 otherwise: what `EOWNERDEAD` repairs.
    writing: usize,
}

#[repr(C)]
struct Slot {
    /// 0 = free.
    used: u32,
    id_len: u32,
    der_len: u32,
    /// Seconds on CLOCK_MONOTONIC (system-wide, so every process agrees).
    expires: u64,
    id: [u8; ID_MAX],
    der: [u8; DER_MAX],
}

/// The shared region, as each process (master and inheriting workers) sees it.
pub struct SessionCache {
    /// The memfd, kept for a binary upgrade.
    fd: OwnedFd,
    header: *mut Header,
    slots: *mut Slot,
    len: usize,
}

// SAFETY: the region is only touched under its process-shared mutex; the pointers stay valid
// for the life of the process (never unmapped).
unsafe impl Sync for SessionCache {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for SessionCache {}

impl SessionCache {
    /// Map a region for `entries` sessions (rounded up to a multiple of the set size).
    pub fn new(entries: usize) -> Result<SessionCache, String> {
        let len = entries.div_ceil(WAYS).max(1) * WAYS;
        let region = shm::create(c"rproxy-session-cache", stamp(len))
            .map_err(|e| format!("TLS session cache: {e}"))?;
        let header = region.ptr as *mut Header;
        // SAFETY: a zeroed, writable mapping of the whole region (stamp written), aligned to a
        // page; the mutex is initialised once, before any other process can see it.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            let rc = libc::pthread_mutex_init(&mut (*header).mutex, &attr);
            libc::pthread_mutexattr_destroy(&mut attr);
            if rc != 0 {
                return Err(format!("TLS session cache mutex: error {rc}"));
            }
        }
        Ok(Self::at(region, len))
    }

    /// The cache an old master handed over in a binary upgrade: the same memory, mutex and
    /// sessions (its workers and ours share it until they drain), when its layout is ours.
    pub fn adopt(fd: OwnedFd) -> Result<SessionCache, String> {
        let size = shm::file_size(&fd)?;
        let fixed = std::mem::size_of::<Header>() as u64;
        let slot = std::mem::size_of::<Slot>() as u64;
        if size < fixed || (size - fixed) % slot != 0 {
            return Err(format!(
                "a {size}-byte region is not a session cache of this binary"
            ));
        }
        let len = ((size - fixed) / slot) as usize;
        let region = shm::adopt(fd, stamp(len))?;
        Ok(Self::at(region, len))
    }

    fn at(region: shm::Region, len: usize) -> SessionCache {
        let header = region.ptr as *mut Header;
        // SAFETY: the slots start right after the header, inside the mapping; Header's size is
        // a multiple of 8, Slot's alignment.
        let slots = unsafe { region.ptr.add(std::mem::size_of::<Header>()) } as *mut Slot;
        SessionCache {
            fd: region.fd,
            header,
            slots,
            len,
        }
    }

    /// The region's descriptor, for the hand-over to a new binary.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sessions it holds (its size was fixed when it was made).
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// Keep `der` under `id` for `ttl`.
    pub fn put(&self, id: &[u8], der: &[u8], ttl: Duration) {
        if id.is_empty() || id.len() > ID_MAX || der.len() > DER_MAX {
            return;
        }
        let now = now();
        let set = self.set_of(id);
        let Some(_g) = self.lock() else { return };
        // SAFETY: under the lock; `set_of` keeps indices below `len`.
        unsafe {
            let mut victim = set;
            let mut oldest = u64::MAX;
            for i in set..set + WAYS {
                let s = &*self.slots.add(i);
                if s.used != 0 && &s.id[..s.id_len as usize] == id {
                    victim = i;
                    break;
                }
                let age = if s.used == 0 || s.expires <= now {
                    0
                } else {
                    s.expires
                };
                if age < oldest {
                    oldest = age;
                    victim = i;
                }
            }
            (*self.header).writing = victim + 1;
            let s = &mut *self.slots.add(victim);
            s.used = 0;
            s.id_len = id.len() as u32;
            s.id[..id.len()].copy_from_slice(id);
            s.der_len = der.len() as u32;
            s.der[..der.len()].copy_from_slice(der);
            s.expires = now + ttl.as_secs();
            s.used = 1;
            (*self.header).writing = 0;
        }
    }

    /// A copy of the session stored under `id`, if it has not expired.
    pub fn get(&self, id: &[u8]) -> Option<Vec<u8>> {
        let now = now();
        let set = self.set_of(id);
        let _g = self.lock()?;
        // SAFETY: under the lock; indices below `len`.
        unsafe {
            for i in set..set + WAYS {
                let s = &*self.slots.add(i);
                if s.used != 0 && s.expires > now && &s.id[..s.id_len as usize] == id {
                    return Some(s.der[..s.der_len as usize].to_vec());
                }
            }
        }
        None
    }

    /// Forget `id` (OpenSSL removes sessions of failed or unclean connections).
    pub fn remove(&self, id: &[u8]) {
        let set = self.set_of(id);
        let Some(_g) = self.lock() else { return };
        // SAFETY: under the lock; indices below `len`.
        unsafe {
            for i in set..set + WAYS {
                let s = &mut *self.slots.add(i);
                if s.used != 0 && &s.id[..s.id_len as usize] == id {
                    s.used = 0;
                }
            }
        }
    }

    /// First slot of the set `id` belongs to.
    fn set_of(&self, id: &[u8]) -> usize {
        // FNV-1a: session IDs are random, any mixing will do.
        let h = id.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        (h as usize % (self.len / WAYS)) * WAYS
    }

    fn lock(&self) -> Option<Locked<'_>> {
        // SAFETY: the mutex was initialised in `new` and lives as long as the mapping.
        let rc = unsafe { libc::pthread_mutex_lock(&mut (*self.header).mutex) };
        match rc {
            0 => Some(Locked(self)),
            libc::EOWNERDEAD => {
                // SAFETY: we own the lock now; the dead owner's half-written slot is cleared
                // before the mutex is marked consistent again.
                unsafe {
                    let w = (*self.header).writing;
                    if w != 0 && w <= self.len {
                        (*self.slots.add(w - 1)).used = 0;
                    }
                    (*self.header).writing = 0;
                    libc::pthread_mutex_consistent(&mut (*self.header).mutex);
                }
                rproxy_shared::warn!("TLS session cache: repaired after a worker died holding it");
                Some(Locked(self))
            }
            // ENOTRECOVERABLE and friends: no caching rather than no serving.
            _ => None,
        }
    }
}

/// The stamp of a cache of `len` slots.
fn stamp(len: usize) -> Stamp {
    Stamp {
        magic: MAGIC,
        version: LAYOUT,
        size: (std::mem::size_of::<Header>() + len * std::mem::size_of::<Slot>()) as u64,
    }
}

struct Locked<'a>(&'a SessionCache);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard exists only while the lock is held by this thread.
        unsafe { libc::pthread_mutex_unlock(&mut (*self.0.header).mutex) };
    }
}

fn now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into our own timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_remove_expire() {
        let c = SessionCache::new(8).unwrap();
        c.put(b"abc", b"der1", Duration::from_secs(60));
        assert_eq!(c.get(b"abc").as_deref(), Some(&b"der1"[..]));
        c.put(b"abc", b"der2", Duration::from_secs(60));
        assert_eq!(c.get(b"abc").as_deref(), Some(&b"der2"[..]));
        c.remove(b"abc");
        assert_eq!(c.get(b"abc"), None);
        c.put(b"old", b"x", Duration::ZERO);
        assert_eq!(c.get(b"old"), None);
        for i in 0..100u32 {
            c.put(&i.to_be_bytes(), b"y", Duration::from_secs(60));
        }
        assert_eq!(c.get(&99u32.to_be_bytes()).as_deref(), Some(&b"y"[..]));
    }

    /// What a new binary maps from the descriptor is the same cache: sessions stored by
    /// either side are found by the other, under the one mutex.
    #[test]
    fn an_adopted_cache_shares_sessions_and_lock() {
        let c = SessionCache::new(16).unwrap();
        c.put(b"before", b"one", Duration::from_secs(60));
        let n = SessionCache::adopt(c.fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(n.capacity(), c.capacity());
        assert_eq!(n.get(b"before").as_deref(), Some(&b"one"[..]));
        n.put(b"after", b"two", Duration::from_secs(60));
        assert_eq!(c.get(b"after").as_deref(), Some(&b"two"[..]));
        let other = crate::shm::create(
            c"x",
            crate::shm::Stamp {
                magic: 1,
                version: 1,
                size: 4096,
            },
        )
        .unwrap();
        assert!(SessionCache::adopt(other.fd).is_err());
    }

    /// A process that dies holding the lock (a worker SIGKILLed mid-copy) neither hangs the
    /// others nor leaves its half-written slot behind.
    #[test]
    fn a_dead_lock_holder_is_recovered() {
        let c = SessionCache::new(8).unwrap();
        c.put(b"keep", b"ok", Duration::from_secs(60));
        // SAFETY: the child only locks, marks a slot as being written and exits.
        match unsafe { libc::fork() } {
            0 => {
                let slot = c.set_of(b"keep");
                std::mem::forget(c.lock());
                // SAFETY: we hold the lock; mimic a copy interrupted by SIGKILL.
                unsafe { (*c.header).writing = slot + 1 };
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(0) }
            }
            pid => {
                let mut st = 0;
                // SAFETY: waits for our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
            }
        }
        // The slot the dead holder was writing is gone; the cache works on.
        assert_eq!(c.get(b"keep"), None);
        c.put(b"new", b"v", Duration::from_secs(60));
        assert_eq!(c.get(b"new").as_deref(), Some(&b"v"[..]));
    }
}
