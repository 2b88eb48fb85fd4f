//! The tasks of plain HTTP/1 client connections: polled by the worker's loop (in
//! [`crate::net`], right after it takes the sockets' events), not one tokio task each. A
//! wake-up is a flag and an index pushed on a queue; polling one is a call through a box.
//!
//! Why: a tokio task is made for many threads: each wake-up and each poll change its state
//! with atomic operations, and a `LocalSet` task's wake-up goes through the set's shared
//! scheduler, its queue and the set's own wake-up. A keep-alive request wakes its
//! connection twice (request in, response in): with [`crate::net`]'s readiness that was
//! about 500 instructions and a dozen locked operations per request (bench/callgrind.sh).
//! A worker is one thread, so none of that is needed here.
//!
//! What stays the same for the connection's future: it runs on the worker's `LocalSet`
//! thread, may use tokio's timers, `spawn_local` and the rest; a panic ends that connection
//! only (the future is dropped, as tokio drops a panicked task's); the cooperative budget
//! applies (when it runs out the whole set yields to tokio and goes on at its next turn).
//! TLS and HTTP/2 connections, the pools' and the worker's own tasks stay tokio tasks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// Connection polls per turn of the loop before it lets tokio's other tasks and its poller
/// run (tokio's own scheduler takes 61 tasks between polls of its I/O driver).
const TURN: usize = 64;

/// A task's waker carries its slot and the slot's generation in the pointer word: no
/// allocation, and cloning or dropping a waker does nothing. A waker kept after its task
/// ended names a generation the slot no longer has, and wakes nothing.
const _: () = assert!(usize::BITS == 64);

type Task = Pin<Box<dyn Future<Output = ()>>>;

#[derive(Default)]
struct Slot {
    generation: u32,
    queued: bool,
    task: Option<Task>,
}

/// The tasks and the queue of those to poll.
struct Set {
    tasks: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    /// `(slot, generation)` of the tasks to poll.
    queue: RefCell<VecDeque<(u32, u32)>>,
    /// The worker's loop, while it waits for a wake-up.
    idle: RefCell<Option<Waker>>,
    polling: Cell<bool>,
}

thread_local! {
    /// This thread's set while the worker's loop lives (the runtime that ran it may end
    /// before the thread does: tests).
    static CURRENT: RefCell<Option<Rc<Set>>> = const { RefCell::new(None) };
}

/// Run `fut` as one of the connection tasks of this thread (in a `LocalSet`).
pub fn spawn(fut: impl Future<Output = ()> + 'static) {
    if let Err(e) = crate::net::driven() {
        rproxy_shared::error!("cannot run a connection: {e}");
        return;
    }
    let set = current();
    let index = match set.free.borrow_mut().pop() {
        Some(i) => i,
        None => {
            let mut tasks = set.tasks.borrow_mut();
            tasks.push(Slot::default());
            (tasks.len() - 1) as u32
        }
    };
    let generation = {
        let mut tasks = set.tasks.borrow_mut();
        let slot = &mut tasks[index as usize];
        slot.task = Some(Box::pin(fut));
        slot.generation
    };
    set.schedule(index, generation);
}

/// This thread's set; the first call (or the first after its runtime ended) makes it.
fn current() -> Rc<Set> {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(s) = c.as_ref() {
            return Rc::clone(s);
        }
        let set = Rc::new(Set {
            tasks: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            queue: RefCell::new(VecDeque::new()),
            idle: RefCell::new(None),
            polling: Cell::new(false),
        });
        *c = Some(Rc::clone(&set));
        set
    })
}

impl Set {
    fn schedule(&self, index: u32, generation: u32) {
        {
            let mut tasks = self.tasks.borrow_mut();
            let Some(slot) = tasks.get_mut(index as usize) else {
                return;
            };
            if slot.generation != generation || slot.queued || slot.task.is_none() {
                return;
            }
            slot.queued = true;
        }
        self.queue.borrow_mut().push_back((index, generation));
        if !self.polling.get() {
            let w = self.idle.borrow_mut().take();
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    /// One turn: poll queued tasks until none is left (then wait) or the turn is over
    /// (then `true`: the loop is woken to go on).
    fn turn(&self, cx: &mut Context<'_>) -> bool {
        let mut polled = 0;
        let ran_out = loop {
            let next = self.queue.borrow_mut().pop_front();
            let Some((index, generation)) = next else {
                let mut idle = self.idle.borrow_mut();
                if !idle.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *idle = Some(cx.waker().clone());
                }
                break false;
            };
            let task: *mut (dyn Future<Output = ()> + 'static) = {
                let mut tasks = self.tasks.borrow_mut();
                let slot = &mut tasks[index as usize];
                if slot.generation != generation {
                    continue;
                }
                slot.queued = false;
                match slot.task.as_mut() {
                    // SAFETY: only a pointer is taken; the task is not moved.
                    Some(t) => unsafe { t.as_mut().get_unchecked_mut() },
                    None => continue,
                }
            };
            let raw = RawWaker::new(token(index, generation), &VTABLE);
            // SAFETY: the vtable's functions keep its contract (they touch no memory
            // through the pointer word).
            let waker = unsafe { Waker::from_raw(raw) };
            let mut task_cx = Context::from_waker(&waker);
            // SAFETY: the task is pinned in its box, whose allocation stays put when the
            // slot vector grows (a task may spawn); nothing but this function drops or
            // replaces a slot's task, and not while it is being polled.
            let r = catch_unwind(AssertUnwindSafe(|| unsafe {
                Pin::new_unchecked(&mut *task).poll(&mut task_cx)
            }));
            if !matches!(r, Ok(Poll::Pending)) {
                if r.is_err() {
                    rproxy_shared::error!("a connection's task panicked; it is closed");
                }
                let ended = {
                    let mut tasks = self.tasks.borrow_mut();
                    let slot = &mut tasks[index as usize];
                    slot.generation = slot.generation.wrapping_add(1);
                    slot.queued = false;
                    slot.task.take()
                };
                // Dropped outside the borrow: its drop may spawn or wake.
                drop(ended);
                self.free.borrow_mut().push(index);
            }
            polled += 1;
            if polled >= TURN || !tokio::task::coop::has_budget_remaining() {
                cx.waker().wake_by_ref();
                break true;
            }
        };
        self.polling.set(false);
        ran_out
    }
}

/// A turn of the worker's loop: `events` (the sockets' events, taken while wake-ups of
/// connection tasks only queue them), then the queued tasks. The loop is polled again on its
/// next wake-up (at once when the turn ran out: then `true`).
pub fn turn(cx: &mut Context<'_>, events: impl FnOnce(&mut Context<'_>)) -> bool {
    let set = current();
    set.polling.set(true);
    events(cx);
    set.turn(cx)
}

/// The worker's loop ends (its runtime does): the tasks are dropped with it (their sockets
/// closed), as the runtime's own tasks are.
pub fn shutdown() {
    let Some(set) = CURRENT.with(|c| c.borrow_mut().take()) else {
        return;
    };
    set.queue.borrow_mut().clear();
    let tasks = std::mem::take(&mut *set.tasks.borrow_mut());
    drop(tasks);
}

fn token(index: u32, generation: u32) -> *const () {
    ((u64::from(generation) << 32) | u64::from(index)) as usize as *const ()
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop_waker);

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

/// A wake-up on another thread (never made: a worker is one thread) finds no set there
/// and is lost, nothing worse.
fn wake(data: *const ()) {
    let token = data as usize as u64;
    CURRENT.with(|c| {
        if let Some(set) = c.borrow().as_ref() {
            set.schedule(token as u32, (token >> 32) as u32);
        }
    });
}

fn drop_waker(_: *const ()) {}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use tokio::task::LocalSet;

    use super::*;

    /// Tasks run, wake each other across timers and channels, finish; a panicking one ends
    /// alone; a waker kept after its task ended does nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn tasks_run_wake_and_end_alone() {
        LocalSet::new()
            .run_until(async {
                let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
                let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
                let kept: Rc<RefCell<Option<Waker>>> = Rc::default();
                let d = done_tx.clone();
                spawn(async move {
                    let v = rx.await.unwrap();
                    d.send(v + 1).unwrap();
                });
                let d = done_tx.clone();
                spawn(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    tx.send(41).unwrap();
                    d.send(0).unwrap();
                });
                spawn(async {
                    panic!("a task's panic");
                });
                let k = Rc::clone(&kept);
                spawn(poll_fn(move |cx| {
                    *k.borrow_mut() = Some(cx.waker().clone());
                    Poll::Ready(())
                }));
                // Many at once: more than one turn's worth.
                for i in 0..1000 {
                    let d = done_tx.clone();
                    spawn(async move {
                        tokio::task::yield_now().await;
                        d.send(1000 + i).unwrap();
                    });
                }
                drop(done_tx);
                let mut got = Vec::new();
                let all = async {
                    while let Some(v) = done_rx.recv().await {
                        got.push(v);
                    }
                };
                // A wake-up lost fails here rather than hanging the test.
                tokio::time::timeout(Duration::from_secs(10), all)
                    .await
                    .expect("tasks not woken");
                got.sort_unstable();
                assert_eq!(&got[..2], &[0, 42]);
                assert_eq!(got.len(), 1002);
                // The set lives on after a panic; a stale waker is a no-op.
                kept.borrow_mut().take().unwrap().wake();
                let (tx, rx) = tokio::sync::oneshot::channel();
                spawn(async move {
                    tx.send(7).unwrap();
                });
                let seven = tokio::time::timeout(Duration::from_secs(10), rx).await;
                assert_eq!(
                    seven
                        .expect("a task spawned after the panic not run")
                        .unwrap(),
                    7
                );
            })
            .await;
    }
}
