//! Listening sockets. The master binds each address once and keeps it across reloads for as
//! long as some configuration uses it, so every worker of every generation accepts from the
//! same kernel queue and no SYN ever meets a closed port during a reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{
    bind, getsockname, getsockopt, listen, setsockopt, socket, sockopt, AddressFamily, Backlog,
    SockFlag, SockType, SockaddrStorage,
};
use rproxy_shared::config::Config;

/// Every listener the master holds, by address.
#[derive(Default)]
pub struct Listeners {
    by_addr: HashMap<SocketAddr, OwnedFd>,
}

impl Listeners {
    /// Bind what `config` needs and is not bound yet. Nothing is closed here: listeners that a
    /// new configuration dropped are closed by [`Listeners::retain`] once it serves.
    pub fn bind_for(&mut self, config: &Config) -> Result<(), String> {
        let mut fresh = Vec::new();
        for s in &config.servers {
            if self.by_addr.contains_key(&s.listen) {
                continue;
            }
            match bind_one(s.listen, i32::from(s.backlog)) {
                Ok(fd) => fresh.push((s.listen, fd)),
                // The ones bound by this call are dropped (closed) with `fresh`.
                Err(e) => return Err(format!("cannot listen on {}: {e}", s.listen)),
            }
        }
        self.by_addr.extend(fresh);
        Ok(())
    }

    /// Take a listening socket handed over by the previous master of a binary upgrade. The
    /// manifest's word is not enough: the kernel must say it is a listening TCP socket bound
    /// to `claimed` (an IPv6 one IPv6-only, as `bind_one` makes them).
    pub fn adopt(&mut self, claimed: SocketAddr, fd: OwnedFd) -> Result<(), String> {
        let ctx = |what: &str, e: nix::Error| format!("inherited listener {claimed}: {what}: {e}");
        let bound: SockaddrStorage =
            getsockname(fd.as_raw_fd()).map_err(|e| ctx("getsockname", e))?;
        let actual = bound
            .as_sockaddr_in()
            .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)))
            .or_else(|| {
                bound
                    .as_sockaddr_in6()
                    .map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a)))
            });
        let listening =
            getsockopt(&fd, sockopt::AcceptConn).map_err(|e| ctx("SO_ACCEPTCONN", e))?;
        let stream =
            getsockopt(&fd, sockopt::SockType).map_err(|e| ctx("SO_TYPE", e))? == SockType::Stream;
        let v6only_ok = !claimed.is_ipv6()
            || getsockopt(&fd, sockopt::Ipv6V6Only).map_err(|e| ctx("IPV6_V6ONLY", e))?;
        match actual {
            Some(a) if a == claimed && listening && stream && v6only_ok => {}
            _ => {
                return Err(format!(
                    "inherited listener {claimed}: the socket is {} (listening: {listening}, \
                     stream: {stream}): refused",
                    actual.map_or("not an IP socket".to_string(), |a| a.to_string())
                ))
            }
        }
        if self.by_addr.insert(claimed, fd).is_some() {
            return Err(format!("inherited listener {claimed}: handed over twice"));
        }
        Ok(())
    }

    /// Every listener, by address (handed to a new master in a binary upgrade).
    pub fn all(&self) -> impl Iterator<Item = (SocketAddr, BorrowedFd<'_>)> {
        self.by_addr.iter().map(|(a, fd)| (*a, fd.as_fd()))
    }

    /// Close every listener (the old master after a binary upgrade committed: the new one
    /// holds them now).
    pub fn close_all(&mut self) {
        self.by_addr.clear();
    }

    /// `(server index, fd)` for each server of `config`, in order.
    pub fn for_config(&self, config: &Config) -> Vec<(usize, BorrowedFd<'_>)> {
        config
            .servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.by_addr.get(&s.listen).map(|fd| (i, fd.as_fd())))
            .collect()
    }

    /// Close every listener not used by any of `configs`.
    pub fn retain<'a>(&mut self, configs: impl Iterator<Item = &'a Config>) -> Vec<SocketAddr> {
        let keep: Vec<SocketAddr> = configs
            .flat_map(|c| c.servers.iter().map(|s| s.listen))
            .collect();
        let gone: Vec<SocketAddr> = self
            .by_addr
            .keys()
            .filter(|a| !keep.contains(a))
            .copied()
            .collect();
        for a in &gone {
            self.by_addr.remove(a);
        }
        gone
    }
}

fn bind_one(addr: SocketAddr, backlog: i32) -> nix::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        // `[::]` means IPv6 only, as nginx's default: an IPv4 server is configured on its own.
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(backlog)?)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    #[test]
    fn only_a_listening_socket_at_the_claimed_address_is_adopted() {
        let addr = free_addr();
        let fd = bind_one(addr, 16).unwrap();
        let mut l = Listeners::default();
        let other = SocketAddr::from(([127, 0, 0, 1], addr.port().wrapping_add(1)));
        assert!(l.adopt(other, fd.try_clone().unwrap()).is_err());
        l.adopt(addr, fd.try_clone().unwrap()).unwrap();
        assert!(l.adopt(addr, fd).unwrap_err().contains("twice"));
        assert_eq!(l.all().count(), 1);
        // A connected (not listening) socket, or a file, is refused.
        let client = std::net::TcpStream::connect(addr).unwrap();
        let local = client.local_addr().unwrap();
        assert!(Listeners::default()
            .adopt(local, OwnedFd::from(client))
            .is_err());
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(Listeners::default()
            .adopt(addr, OwnedFd::from(file))
            .is_err());
        l.close_all();
        assert_eq!(l.all().count(), 0);
    }
}
