//! The daemon's own log ("error log"): start, reload, worker exits, downstream up/down.
//!
//! It always writes to descriptor 2. When `error-log` names a file the master opens it and
//! `dup2`s it onto 2, so the workers inherit it and a reopen (SIGUSR1) is one `dup2` in each
//! process: no lock, no global file handle to swap. Under systemd, 2 is the journal.
//! Each line is formatted first and written with a single `write(2)` to an `O_APPEND` file,
//! so lines from several processes never interleave.

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// Severity, most severe first. Also the `log-level` key's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static ROLE: AtomicU8 = AtomicU8::new(0);

/// Messages above `level` are dropped.
pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Called once in a worker after fork, so its lines say `worker`.
pub fn set_worker() {
    ROLE.store(1, Ordering::Relaxed);
}

#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Format and write one line. Use the `error!`/`warn!`/`info!`/`debug!` macros.
pub fn write(level: Level, args: Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let mut line = Vec::with_capacity(160);
    timestamp(&mut line);
    let role = if ROLE.load(Ordering::Relaxed) == 1 {
        "worker"
    } else {
        "master"
    };
    let _ = write!(
        line,
        " [{}] {}#{}: ",
        level.name(),
        std::process::id(),
        role
    );
    let _ = line.write_fmt(args);
    // One line per record whatever the message holds.
    for b in line.iter_mut().skip(20) {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    line.push(b'\n');
    // One write(2) per line (not std's Stderr, which may split it); a failure has nowhere to
    // be reported.
    let _ = nix::unistd::write(std::io::stderr(), &line);
}

/// `2026/11/28 17:30:00` in local time, as nginx's error log.
fn timestamp(out: &mut Vec<u8>) {
    let Some(tm) = crate::localtime::local_tm(crate::localtime::now_secs()) else {
        out.extend_from_slice(b"-");
        return;
    };
    let _ = write!(
        out,
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    );
}

#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::errlog::write($crate::errlog::Level::Error, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::errlog::write($crate::errlog::Level::Warn, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::errlog::write($crate::errlog::Level::Info, format_args!($($t)*)) };
}
/// The level is tested before the call: `debug!` sits on paths taken per request (a request
/// queued for a downstream connection), where the call and its arguments cost more than the
/// test.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::errlog::enabled($crate::errlog::Level::Debug) {
            $crate::errlog::write($crate::errlog::Level::Debug, format_args!($($t)*))
        }
    };
}
