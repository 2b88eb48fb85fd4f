//! The worker's clock, read at most once per turn of its loop (nginx's `ngx_time_update()`
//! after each `epoll_wait`). A request read the monotonic clock four times (its start, the
//! request sent, the response head, the next idle wait), ~22 ns each on these machines: ~5 %
//! of a small request's user-space CPU. A turn is one poll of the worker's `LocalSet`: up to
//! its 31 tasks, so a reading is at most that stale (tens of microseconds under load); the
//! timeouts computed from it fire that much early at most.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum Clock {
    /// Turns are not marked (tests, tools): every read is fresh.
    Off,
    /// A turn began: the next read is fresh, and kept.
    Stale,
    /// Read in this turn.
    At(Instant),
}

thread_local! {
    static CLOCK: Cell<Clock> = const { Cell::new(Clock::Off) };
}

/// Now, as read in this turn of the worker's loop.
pub fn now() -> Instant {
    CLOCK.with(|c| match c.get() {
        Clock::At(t) => t,
        Clock::Stale => {
            let t = Instant::now();
            c.set(Clock::At(t));
            t
        }
        Clock::Off => Instant::now(),
    })
}

/// [`now`] as tokio's `Instant`, for its timers.
pub fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::from_std(now())
}

/// `tokio::time::timeout` from this turn's reading (tokio's reads the clock for each; the
/// request path sets several per request: the downstream's read-timeout, the splice's waits).
pub fn timeout<F: Future>(d: Duration, f: F) -> tokio::time::Timeout<F> {
    match tokio_now().checked_add(d) {
        Some(at) => tokio::time::timeout_at(at, f),
        None => tokio::time::timeout(d, f),
    }
}

/// Run `main`, the future a `LocalSet` runs its tasks around, marking each of the set's turns
/// (the set polls it before each batch of tasks, whether or not it was woken), so [`now`] is
/// read afresh once per batch.
pub async fn marking_turns<F: Future>(main: F) -> F::Output {
    let mut main = std::pin::pin!(main);
    let out = std::future::poll_fn(|cx| {
        CLOCK.with(|c| c.set(Clock::Stale));
        main.as_mut().poll(cx)
    })
    .await;
    CLOCK.with(|c| c.set(Clock::Off));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::task::LocalSet;

    #[tokio::test(flavor = "current_thread")]
    async fn read_once_per_turn_and_afresh_in_the_next() {
        LocalSet::new()
            .run_until(marking_turns(async {
                let t = tokio::task::spawn_local(async {
                    let a = now();
                    std::thread::sleep(Duration::from_millis(5));
                    // The same turn: the same reading.
                    assert_eq!(now(), a);
                    // Yielding ends the turn (the path a task takes when its budget runs
                    // out, where the runtime does not park): the next reading is fresh.
                    tokio::task::yield_now().await;
                    let b = now();
                    assert!(b >= a + Duration::from_millis(5), "{:?}", b - a);
                    // Parked and woken by a timer: fresh too.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    assert!(now() >= b + Duration::from_millis(5));
                });
                t.await.unwrap();
            }))
            .await;
        // Outside: every read is fresh.
        let a = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() > a);
    }
}
