//! One-shot hand-offs within the worker's thread, without an allocation each: a table of
//! reusable slots. The pool's queued requests get their connection (or their 503) this way:
//! a `tokio::sync::oneshot` per queued request allocated and freed a channel (with atomic
//! reference counts) every time: ~280 instructions per request at 256 clients on 64
//! downstream connections, where nearly every request waits (bench/callgrind.sh --conns 256:
//! 8,773 -> 8,500 at /small, 10,706 -> 10,421 at /big).
//!
//! The receiving side is a [`Wait`] future; the sending side holds a [`Ticket`]. A slot is
//! freed by its receiver only (when it takes the value, or is dropped), and a freed slot gets
//! a new generation, so a ticket that outlived its receiver is seen as closed, never as the
//! next receiver's.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

pub struct Slots<T> {
    inner: RefCell<Inner<T>>,
}

struct Inner<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

struct Slot<T> {
    generation: u32,
    state: State<T>,
}

enum State<T> {
    /// No receiver.
    Free,
    /// The receiver waits (with its waker once it was polled).
    Waiting(Option<Waker>),
    /// Sent, not yet taken.
    Sent(T),
    /// The sender gave up without sending.
    Closed,
}

/// The sending side of one hand-off: [`Slots::send`] or [`Slots::close`] with it, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    key: u32,
    generation: u32,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            inner: RefCell::new(Inner {
                slots: Vec::new(),
                free: Vec::new(),
            }),
        }
    }
}

impl<T> Slots<T> {
    /// A new hand-off: the future that receives, and the ticket that sends.
    pub fn open(&self) -> (Wait<'_, T>, Ticket) {
        let mut inner = self.inner.borrow_mut();
        let key = match inner.free.pop() {
            Some(k) => k,
            None => {
                inner.slots.push(Slot {
                    generation: 0,
                    state: State::Free,
                });
                // More than u32::MAX waiters cannot exist: `max-pending` bounds them.
                (inner.slots.len() - 1) as u32
            }
        };
        let slot = &mut inner.slots[key as usize];
        slot.state = State::Waiting(None);
        let ticket = Ticket {
            key,
            generation: slot.generation,
        };
        (
            Wait {
                slots: self,
                ticket,
                done: false,
            },
            ticket,
        )
    }

    /// Whether sending on `ticket` would fail: its receiver is gone, or it was used.
    pub fn is_closed(&self, ticket: Ticket) -> bool {
        let inner = self.inner.borrow();
        !matches!(
            inner.slots.get(ticket.key as usize),
            Some(Slot { generation, state: State::Waiting(_) }) if *generation == ticket.generation
        )
    }

    /// Hand `value` over and wake the receiver; `Err(value)` when [`Slots::is_closed`].
    pub fn send(&self, ticket: Ticket, value: T) -> Result<(), T> {
        self.settle(ticket, State::Sent(value))
            .map_err(|s| match s {
                State::Sent(v) => v,
                _ => unreachable!("settle gives back what it was given"),
            })
    }

    /// Give up without sending: the receiver wakes to `None`.
    pub fn close(&self, ticket: Ticket) {
        let _ = self.settle(ticket, State::Closed);
    }

    fn settle(&self, ticket: Ticket, to: State<T>) -> Result<(), State<T>> {
        let waker = {
            let mut inner = self.inner.borrow_mut();
            match inner.slots.get_mut(ticket.key as usize) {
                Some(slot) if slot.generation == ticket.generation => match &mut slot.state {
                    State::Waiting(w) => {
                        let w = w.take();
                        slot.state = to;
                        w
                    }
                    _ => return Err(to),
                },
                _ => return Err(to),
            }
        };
        // Woken with the table free again: a waker may run code that opens or sends.
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Free `key` and give back what it held.
    fn release(&self, key: u32) -> State<T> {
        let mut inner = self.inner.borrow_mut();
        let slot = &mut inner.slots[key as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let state = std::mem::replace(&mut slot.state, State::Free);
        inner.free.push(key);
        state
    }
}

/// The receiving side: ready with `Some(value)` once sent, `None` if the sender gave up.
/// Dropped before that, its slot is freed, and a value sent but not taken is dropped with it.
pub struct Wait<'a, T> {
    slots: &'a Slots<T>,
    ticket: Ticket,
    done: bool,
}

impl<T> Future for Wait<'_, T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.done {
            return Poll::Ready(None);
        }
        {
            let mut inner = self.slots.inner.borrow_mut();
            let slot = &mut inner.slots[self.ticket.key as usize];
            if let State::Waiting(w) = &mut slot.state {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
        }
        self.done = true;
        match self.slots.release(self.ticket.key) {
            State::Sent(v) => Poll::Ready(Some(v)),
            _ => Poll::Ready(None),
        }
    }
}

impl<T> Drop for Wait<'_, T> {
    fn drop(&mut self) {
        if !self.done {
            // Dropped outside the table's borrow: the value may have a `Drop` of its own.
            drop(self.slots.release(self.ticket.key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll<T>(w: &mut Wait<'_, T>, waker: &Waker) -> Poll<Option<T>> {
        Pin::new(w).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_value_sent_to_a_waiting_receiver_wakes_it_and_is_taken_once() {
        let slots = Slots::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let (mut rx, t) = slots.open();
        assert_eq!(poll(&mut rx, &waker), Poll::Pending);
        assert!(!slots.is_closed(t));
        assert_eq!(slots.send(t, 7), Ok(()));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(slots.is_closed(t), "a ticket sends once");
        assert_eq!(slots.send(t, 8), Err(8));
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(Some(7)));
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(None));
    }

    #[test]
    fn a_value_sent_before_the_first_poll_is_there() {
        let slots = Slots::default();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let (mut rx, t) = slots.open();
        assert_eq!(slots.send(t, "lease"), Ok(()));
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(Some("lease")));
    }

    #[test]
    fn a_sender_that_gives_up_wakes_the_receiver_to_none() {
        let slots = Slots::<u8>::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let (mut rx, t) = slots.open();
        assert_eq!(poll(&mut rx, &waker), Poll::Pending);
        slots.close(t);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(None));
    }

    #[test]
    fn a_ticket_whose_receiver_left_stays_closed_when_its_slot_is_reused() {
        let slots = Slots::default();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let (rx, old) = slots.open();
        drop(rx);
        assert!(slots.is_closed(old));
        let (mut rx2, new) = slots.open();
        assert_eq!(new.key, old.key, "the slot is reused");
        assert!(slots.is_closed(old));
        assert_eq!(slots.send(old, 1), Err(1));
        assert!(!slots.is_closed(new));
        assert_eq!(slots.send(new, 2), Ok(()));
        assert_eq!(poll(&mut rx2, &waker), Poll::Ready(Some(2)));
    }

    #[test]
    fn a_value_sent_but_never_taken_is_dropped_with_its_receiver() {
        let slots = Slots::default();
        let value = Arc::new(());
        let (rx, t) = slots.open();
        assert!(slots.send(t, Arc::clone(&value)).is_ok());
        assert_eq!(Arc::strong_count(&value), 2);
        drop(rx);
        assert_eq!(Arc::strong_count(&value), 1);
    }
}
