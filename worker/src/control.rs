//! The worker's side of the channel: Ready once, a heartbeat every second, and the master's
//! orders (Drain, Stop, log files). A closed channel means the master died: drain and exit.

use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use rproxy_shared::channel::{self, Heartbeat, ToMaster, ToWorker, MAX_MSG};
use rproxy_shared::{error, warn};
use tokio::io::unix::AsyncFd;

use crate::state::WorkerState;

pub async fn run(state: Rc<WorkerState>, chan: OwnedFd) {
    if let Err(e) = nix::fcntl::fcntl(
        &chan,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    ) {
        error!("channel: {e}");
    }
    // SAFETY: the channel is an OwnedFd moved into the AsyncFd, which keeps it open for as
    // long as it is registered.
    let chan = match unsafe { AsyncFd::register(chan) } {
        Ok(c) => c,
        Err(e) => {
            error!("channel: {e}; draining");
            state.start_drain();
            return;
        }
    };
    state.channel.set(Some(chan.get_ref().as_raw_fd()));
    send(&chan, ToMaster::Ready);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = [0u8; MAX_MSG];
    loop {
        tokio::select! {
            _ = tick.tick() => send(&chan, ToMaster::Heartbeat(heartbeat(&state))),
            r = chan.readable() => {
                let Ok(mut guard) = r else { return };
                loop {
                    let mut fds = Vec::new();
                    match channel::recv(chan.get_ref().as_raw_fd(), &mut buf, &mut fds) {
                        Ok(0) => {
                            warn!("the master is gone: draining");
                            state.start_drain();
                            return;
                        }
                        Ok(n) => match ToWorker::decode(&buf[..n]) {
                            Some(ToWorker::Drain) => {
                                state.start_drain();
                                send(&chan, ToMaster::Heartbeat(heartbeat(&state)));
                            }
                            Some(ToWorker::Stop) => state.stop(),
                            Some(ToWorker::ReopenLogs) => {
                                crate::access_log::flush_all(&state);
                                state.reopen_logs(fds);
                                send(&chan, ToMaster::LogsReopened);
                            }
                            None => warn!("unknown message from the master"),
                        },
                        Err(nix::errno::Errno::EAGAIN) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => {
                            error!("channel: {e}; draining");
                            state.start_drain();
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Tell the master we are leaving on purpose (drained or stopped), just before exit.
pub fn say_exiting(state: &WorkerState) {
    if let Some(fd) = state.channel.get() {
        let mut buf = [0u8; MAX_MSG];
        let n = ToMaster::Exiting.encode(&mut buf);
        let _ = channel::send(fd, &buf[..n], &[]);
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

fn send(chan: &AsyncFd<OwnedFd>, m: ToMaster) {
    let mut buf = [0u8; MAX_MSG];
    let n = m.encode(&mut buf);
    // Tiny messages on a socket the master drains every tick: a full buffer means the master
    // is stuck, and it will notice our silence from its side anyway.
    let _ = channel::send(chan.get_ref().as_raw_fd(), &buf[..n], &[]);
}
