//! Keeping a generation's slots filled: a worker that died unasked is replaced, at once the
//! first time and with a bounded back-off when it keeps dying (never a fork loop); a worker
//! silent for `heartbeat-timeout` (or never Ready in time) is killed, and so replaced.

use std::time::{Duration, Instant};

use rproxy_shared::error;

use crate::generation::{Generation, Worker};
use crate::supervisor::Master;

/// A worker that starts after this long without dying again counts as healthy: the next
/// crash of its slot is replaced at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Cap of the crash back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Grace on top of `heartbeat-timeout` for a worker that has not said Ready yet: a loaded
/// 2-core machine can take a while to schedule a fresh process.
pub const START_GRACE: Duration = Duration::from_secs(5);

/// A serving (or starting) worker of `g` died: plan its replacement, backing off if its slot
/// keeps dying.
pub fn schedule_replacement(g: &mut Generation, w: &Worker, how: &str) {
    let now = Instant::now();
    let slot = &mut g.slots[w.slot];
    if w.ready_at.is_none() || now.duration_since(w.started) < HEALTHY_AFTER {
        slot.failures += 1;
    } else {
        slot.failures = 0;
    }
    let delay = backoff(slot.failures);
    slot.respawn_at = Some(now + delay);
    let what = if w.is_killed() { "was killed" } else { "died" };
    error!(
        "worker {} (generation {}, slot {}) {what}: {how}; replacing it in {} ms",
        w.pid,
        g.id,
        w.slot,
        delay.as_millis()
    );
}

impl Master {
    /// Hung workers: silent for heartbeat-timeout (or never Ready in time).
    pub(crate) fn kill_hung(&mut self, now: Instant) {
        for g in &mut self.gens {
            let hb = g.heartbeat_timeout();
            for w in g.workers.iter_mut().filter(|w| !w.is_killed()) {
                let silent = now.duration_since(w.last_beat);
                let limit = if w.ready_at.is_some() {
                    hb
                } else {
                    hb + START_GRACE
                };
                if silent > limit {
                    error!(
                        "worker {} (generation {}) sent no heartbeat for {} s: killing it",
                        w.pid,
                        g.id,
                        silent.as_secs()
                    );
                    w.kill();
                }
            }
        }
    }

    /// Respawns whose back-off expired.
    pub(crate) fn respawn_due(&mut self, now: Instant) {
        for gi in 0..self.gens.len() {
            if self.gens[gi].is_draining() {
                continue;
            }
            for slot in 0..self.gens[gi].slots.len() {
                let s = &mut self.gens[gi].slots[slot];
                if !s.respawn_at.is_some_and(|t| t <= now) {
                    continue;
                }
                s.respawn_at = None;
                if let Err(e) = self.respawn(gi, slot) {
                    error!("cannot start a worker: {e}");
                    let s = &mut self.gens[gi].slots[slot];
                    s.failures += 1;
                    s.respawn_at = Some(now + backoff(s.failures));
                }
            }
        }
    }
}

/// 0 for a first crash, then 200 ms doubling to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1u64 << (failures - 1).min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(50), Duration::from_secs(10));
    }
}
