//! The worker's side of the channel: Ready once, a heartbeat every second, and the master's
//! orders (Drain, Stop, log files). A closed channel means the master died: drain and exit,
//! and never write to the master again.

use std::rc::Rc;
use std::time::Duration;

use rproxy_shared::channel::{Heartbeat, Received, ToMaster, ToWorker, WorkerEnd};
use rproxy_shared::{error, warn};
use tokio::io::unix::AsyncFd;

use crate::state::WorkerState;

/// Talk with the master until it goes away. The channel is shared with `state` (for the last
/// word at exit, [`say_exiting`]) for as long as the master is there.
pub async fn run(state: Rc<WorkerState>, channel: WorkerEnd) {
    // SAFETY: the `WorkerEnd` owns its descriptor and never replaces it, so the descriptor stays
    // open and the same for as long as the `AsyncFd` that owns the `WorkerEnd` lives.
    let chan = match unsafe { AsyncFd::register(channel) } {
        Ok(c) => Rc::new(c),
        Err(e) => {
            error!("channel: {e}; draining");
            state.start_drain();
            return;
        }
    };
    *state.channel.borrow_mut() = Some(Rc::clone(&chan));
    send(&chan, ToMaster::Ready);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                send(&chan, ToMaster::Heartbeat(heartbeat(&state)));
                crate::metrics::report(|m| chan.get_ref().send(&ToMaster::Metrics(m)).is_ok());
            }
            r = chan.readable() => {
                let Ok(mut guard) = r else { return };
                loop {
                    match chan.get_ref().recv() {
                        Ok(Received::Message(ToWorker::Drain)) => {
                            state.start_drain();
                            send(&chan, ToMaster::Heartbeat(heartbeat(&state)));
                        }
                        Ok(Received::Message(ToWorker::Stop)) => state.stop(),
                        Ok(Received::Message(ToWorker::Accept)) => state.allow_accept(),
                        Ok(Received::Message(ToWorker::SetAdmin { seq, server, downstream, state: admin })) => {
                            let ok = state.set_admin(server as usize, downstream as usize, admin);
                            send(&chan, ToMaster::AdminApplied { seq, ok });
                        }
                        Ok(Received::Message(ToWorker::ReopenLogs(files))) => {
                            crate::access_log::flush_all(&state);
                            state.reopen_logs(files);
                            send(&chan, ToMaster::LogsReopened);
                        }
                        Ok(Received::Unknown) => warn!("unknown message from the master"),
                        Ok(Received::Empty) => {
                            guard.clear_ready();
                            break;
                        }
                        Ok(Received::Closed) => {
                            warn!("the master is gone: draining");
                            master_gone(&state);
                            return;
                        }
                        Err(e) => {
                            error!("channel: {e}; draining");
                            master_gone(&state);
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Without a master there is nobody to tell anything: the channel is closed (when `run`
/// returns and drops its handle) and no one may write to its descriptor number again, which
/// a downstream connection may take next.
fn master_gone(state: &Rc<WorkerState>) {
    state.channel.borrow_mut().take();
    state.start_drain();
}

/// Tell the master we are leaving on purpose (drained or stopped), just before exit. Says
/// nothing when the master is already gone.
pub fn say_exiting(state: &WorkerState) {
    if let Some(chan) = state.channel.borrow_mut().take() {
        // The last counts, so a drained worker's requests are all in the master's totals.
        crate::metrics::report(|m| chan.get_ref().send(&ToMaster::Metrics(m)).is_ok());
        send(&chan, ToMaster::Exiting);
    }
}

fn heartbeat(state: &WorkerState) -> Heartbeat {
    let (mut up, mut total) = (0, 0);
    for p in state.pools.borrow().iter() {
        let (u, t) = p.health_counts();
        up += u;
        total += t;
    }
    Heartbeat {
        connections: state.conns.get(),
        requests: state.requests.get(),
        downstreams_up: up,
        downstreams_total: total,
    }
}

fn send(chan: &AsyncFd<WorkerEnd>, m: ToMaster) {
    // Tiny messages on a socket the master drains every tick: a full buffer means the master
    // is stuck, and it will notice our silence from its side anyway.
    let _ = chan.get_ref().send(&m);
}
