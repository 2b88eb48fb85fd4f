//! The unprivileged identity workers run as, and the switch to it right after fork.

use nix::unistd::{setgid, setgroups, setuid, Gid, Group, Uid, User};

/// `user`/`group` resolved once in the master (before fork, while NSS lookups are safe).
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    uid: Uid,
    gid: Gid,
    /// Only root can switch; otherwise workers keep the master's identity.
    pub switch: bool,
}

impl Identity {
    pub fn resolve(user: &str, group: &str) -> Result<Identity, String> {
        let u = User::from_name(user)
            .map_err(|e| format!("cannot look up user `{user}`: {e}"))?
            .ok_or_else(|| format!("no such user `{user}`"))?;
        let g = Group::from_name(group)
            .map_err(|e| format!("cannot look up group `{group}`: {e}"))?
            .ok_or_else(|| format!("no such group `{group}`"))?;
        Ok(Identity {
            uid: u.uid,
            gid: g.gid,
            switch: Uid::effective().is_root(),
        })
    }

    /// Who should own the log files the master creates: the workers, when we switch to them.
    pub fn owner(&self) -> Option<(Uid, Gid)> {
        self.switch.then_some((self.uid, self.gid))
    }

    /// setgroups, setgid, setuid, in that order, so root cannot be regained.
    pub fn drop_to(&self) -> Result<(), String> {
        if !self.switch {
            return Ok(());
        }
        setgroups(&[self.gid]).map_err(|e| format!("setgroups: {e}"))?;
        setgid(self.gid).map_err(|e| format!("setgid({}): {e}", self.gid))?;
        setuid(self.uid).map_err(|e| format!("setuid({}): {e}", self.uid))?;
        if setuid(Uid::from_raw(0)).is_ok() {
            return Err("root could be regained after setuid".into());
        }
        Ok(())
    }
}
