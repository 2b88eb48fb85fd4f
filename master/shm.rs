//! Shared memory the master makes once and keeps for its life (the TLS session cache, the
//! ticket key ring). It is a memfd rather than an anonymous mapping: forked workers inherit
//! the mapping either way, but only a descriptor can cross `execve`, so a hot binary upgrade
//! (`upgrade.rs`) hands the same memory to the new master and sessions keep resuming.
//!
//! Each region begins with a [`Stamp`]: a magic number, the layout version and the region's
//! size. A new binary maps an inherited region only when all three match what it would have
//! made itself; otherwise it starts empty (one full handshake per client, not an outage).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The first bytes of every region.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub magic: u64,
    pub version: u64,
    pub size: u64,
}

/// A region: its descriptor (kept open so it can be handed over) and where it is mapped.
pub struct Region {
    pub fd: OwnedFd,
    pub ptr: *mut u8,
}

/// A new zeroed region of `size` bytes (size fixed by seals), stamped with `stamp`.
pub fn create(name: &std::ffi::CStr, stamp: Stamp) -> Result<Region, String> {
    let size = stamp.size as usize;
    // SAFETY: memfd_create only creates a descriptor; the name is a valid C string.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` was just returned to us and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: plain calls on our own descriptor.
    unsafe {
        if libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) != 0 {
            return Err(format!(
                "ftruncate memfd: {}",
                std::io::Error::last_os_error()
            ));
        }
        // The size can never change under a process that mapped it (a truncation would turn
        // its accesses into SIGBUS). A failure only loses that protection.
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
        );
    }
    let ptr = map(&fd, size)?;
    // SAFETY: the mapping is at least `size` >= size_of::<Stamp>() bytes, page aligned, and
    // ours alone until the first fork.
    unsafe { std::ptr::write(ptr as *mut Stamp, stamp) };
    Ok(Region { fd, ptr })
}

/// The size of an inherited region's file.
pub fn file_size(fd: &OwnedFd) -> Result<u64, String> {
    // SAFETY: fstat fills our own struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on a descriptor we own.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(format!("fstat: {}", std::io::Error::last_os_error()));
    }
    Ok(st.st_size as u64)
}

/// Map an inherited region, if it is exactly what this binary would have made (`stamp`).
pub fn adopt(fd: OwnedFd, stamp: Stamp) -> Result<Region, String> {
    let size = file_size(&fd)?;
    if size != stamp.size {
        return Err(format!(
            "it has {size} bytes, this binary's layout needs {}",
            stamp.size
        ));
    }
    let ptr = map(&fd, stamp.size as usize)?;
    // SAFETY: the mapping holds at least a Stamp (size checked above).
    let found = unsafe { std::ptr::read(ptr as *const Stamp) };
    if found != stamp {
        // SAFETY: unmapping what we just mapped; nothing refers to it.
        unsafe { libc::munmap(ptr as *mut libc::c_void, stamp.size as usize) };
        return Err(format!(
            "layout {:#x}/{} does not match this binary's {:#x}/{}",
            found.magic, found.version, stamp.magic, stamp.version
        ));
    }
    Ok(Region { fd, ptr })
}

fn map(fd: &OwnedFd, size: usize) -> Result<*mut u8, String> {
    // SAFETY: a new shared mapping of our own descriptor; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!(
            "cannot map {size} bytes: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(p as *mut u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp {
        magic: 0x5445_5354,
        version: 1,
        size: 4096,
    };

    #[test]
    fn a_region_is_adopted_only_with_the_same_stamp() {
        let r = create(c"test", STAMP).unwrap();
        // SAFETY: inside our own mapping, after the stamp.
        unsafe { *r.ptr.add(100) = 42 };
        let dup = r.fd.try_clone().unwrap();
        let again = adopt(dup, STAMP).unwrap();
        // SAFETY: the same memory, mapped a second time.
        assert_eq!(unsafe { *again.ptr.add(100) }, 42);
        let other = Stamp {
            version: 2,
            ..STAMP
        };
        assert!(adopt(r.fd.try_clone().unwrap(), other).is_err());
        let bigger = Stamp {
            size: 8192,
            ..STAMP
        };
        assert!(adopt(r.fd.try_clone().unwrap(), bigger).is_err());
    }
}
