//! The worker's clock, read at most once per turn of its loop (nginx's `ngx_time_update()`
//! after each `epoll_wait`). A request read the monotonic clock four times (its start, the
//! request sent, the response head, the next idle wait), ~22 ns each on these machines: ~5 %
//! of a small request's user-space CPU. A turn is one poll of the worker's `LocalSet` (up to
//! its 31 tasks) or one busy round of the worker's loop (`net::BUSY`: at most 64 connection
//! polls), so a reading is at most that stale (tens of microseconds under load); the timeouts
//! computed from it fire that much early at most.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

#[derive(Clone, Copy)]
enum Clock {
    /// Turns are not marked (tests, tools): every read is fresh.
    Off,
    /// A turn began: the next read is fresh, and kept.
    Stale,
    /// Read in this turn, and the same moment in [`now_ns`]'s terms.
    At(Instant, u64),
}

thread_local! {
    static CLOCK: Cell<Clock> = const { Cell::new(Clock::Off) };
}

/// Where [`now_ns`] counts from: the first reading of the process.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn reading() -> (Instant, u64) {
    let t = Instant::now();
    let epoch = *EPOCH.get_or_init(|| t);
    let ns = u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
    (t, ns)
}

fn read() -> (Instant, u64) {
    CLOCK.with(|c| match c.get() {
        Clock::At(t, ns) => (t, ns),
        Clock::Stale => {
            let (t, ns) = reading();
            c.set(Clock::At(t, ns));
            (t, ns)
        }
        Clock::Off => reading(),
    })
}

/// Now, as read in this turn of the worker's loop.
pub fn now() -> Instant {
    read().0
}

/// [`now`] in nanoseconds since the process's first reading: the time between two readings
/// is one subtraction. A request measures two durations (its response time for the metrics,
/// the downstream's for the balancer); between two `Instant`s each was ~40 instructions.
pub fn now_ns() -> u64 {
    read().1
}

/// A new turn of the loop began without a new poll of the main future (the worker's loop
/// went on with the events that came meanwhile): the next read is fresh.
pub fn new_turn() {
    CLOCK.with(|c| {
        if !matches!(c.get(), Clock::Off) {
            c.set(Clock::Stale);
        }
    });
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

/// A deadline that moves later often and fires rarely (a keep-alive connection's idle wait,
/// set anew after every response), on one tokio timer that is moved lazily, as nginx's
/// `NGX_TIMER_LAZY_DELAY`: moving it later is only a store here, and when the timer fires
/// before the deadline it is set again for the rest. A busy connection moves its timer in
/// tokio's wheel once per period instead of once per request (`Sleep::reset`, ~115
/// instructions), and polls it only once it fired (`Sleep::poll`, ~125).
#[derive(Default)]
pub struct LazyTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// Where the timer is set in tokio's wheel (at or before `due`).
    armed: Option<tokio::time::Instant>,
    due: Option<tokio::time::Instant>,
    /// Polled since it was last set: the timer holds the task's waker, and wakes the task
    /// when it fires. Only one task may poll a `LazyTimer`.
    waiting: bool,
}

impl LazyTimer {
    /// Fire at `at` (none: never), whether that is earlier or later than before.
    pub fn set(&mut self, at: Option<tokio::time::Instant>) {
        self.due = at;
        let Some(at) = at else { return };
        match (&mut self.sleep, self.armed) {
            // Later than the wheel's timer: it fires early, and `poll` sets it again.
            (Some(_), Some(armed)) if armed <= at => return,
            (Some(s), _) => s.as_mut().reset(at),
            (None, _) => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = Some(at);
        self.waiting = false;
    }

    /// Ready once the deadline of the last [`LazyTimer::set`] has passed; pending forever if
    /// it was none.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(due), Some(sleep)) = (self.due, &mut self.sleep) else {
            return Poll::Pending;
        };
        if self.waiting && !sleep.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                self.waiting = true;
                return Poll::Pending;
            }
            if tokio_now() >= due {
                return Poll::Ready(());
            }
            // Early: the deadline moved on since the timer was set.
            sleep.as_mut().reset(due);
            self.armed = Some(due);
        }
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

    /// Poll `t` until it fires, at most `limit`; the time it took.
    async fn fires(t: &mut LazyTimer, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        tokio::time::timeout(limit, std::future::poll_fn(|cx| t.poll(cx)))
            .await
            .ok()
            .map(|()| start.elapsed())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_lazy_timer_fires_at_its_last_deadline_not_before() {
        let ms = Duration::from_millis;
        let mut t = LazyTimer::default();
        // Moved later after it was polled: the wheel's timer fires first, and is set again.
        let start = tokio_now();
        t.set(Some(start + ms(30)));
        assert!(fires(&mut t, ms(5)).await.is_none());
        t.set(Some(start + ms(120)));
        fires(&mut t, ms(2000)).await.expect("fired");
        assert!(tokio_now() >= start + ms(120), "{:?}", tokio_now() - start);
        // Moved earlier: fires early.
        let start = tokio_now();
        t.set(Some(start + ms(5000)));
        assert!(fires(&mut t, ms(5)).await.is_none());
        t.set(Some(start + ms(30)));
        let took = fires(&mut t, ms(2000)).await.expect("fired");
        assert!(took < ms(1000), "{took:?}");
        assert!(tokio_now() >= start + ms(30));
        // None: never.
        t.set(None);
        assert!(fires(&mut t, ms(60)).await.is_none());
        // Set again after it fired, later than its old deadline.
        let start = tokio_now();
        t.set(Some(start + ms(40)));
        fires(&mut t, ms(2000)).await.expect("fired");
        assert!(tokio_now() >= start + ms(40));
    }
}
