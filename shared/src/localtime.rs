//! Local time for log lines (access log `{TS}`, syslog header, error log), in one place:
//! `localtime_r` and English month names whatever the locale.

/// English month abbreviations, `Jan`..`Dec`.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Broken-down local time of unix second `secs`; `None` when the system cannot represent it.
pub fn local_tm(secs: i64) -> Option<libc::tm> {
    let t = libc::time_t::try_from(secs).ok()?;
    // SAFETY: `tm` is plain old data; all-zero is a valid value (a null `tm_zone` pointer,
    // which we never read).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r writes only into `tm`.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    (!r.is_null()).then_some(tm)
}

/// The month abbreviation of `tm`, `???` if out of range.
pub fn month(tm: &libc::tm) -> &'static str {
    usize::try_from(tm.tm_mon)
        .ok()
        .and_then(|m| MONTHS.get(m))
        .copied()
        .unwrap_or("???")
}

/// The current unix second.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
