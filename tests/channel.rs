//! The master<->worker channel seen from outside: a worker that lost its master must never
//! write to the descriptor number its channel had, because by then that number may belong to
//! one of its downstream connections.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The bytes one accepted connection received so far.
type Record = Arc<Mutex<Vec<u8>>>;

/// A raw HTTP/1.1 origin that keeps every byte each accepted connection received. `/slow`
/// answers after `SLOW`, anything else at once. Bumping `epoch` closes every idle connection
/// accepted before the bump (a downstream restarting, say), so the worker's pool reconnects.
struct RecordingBackend {
    port: u16,
    epoch: Arc<AtomicU64>,
    received: Arc<Mutex<Vec<Record>>>,
    open: Arc<AtomicU64>,
}

const SLOW: Duration = Duration::from_millis(2000);

impl RecordingBackend {
    fn start() -> RecordingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let epoch = Arc::new(AtomicU64::new(0));
        let received: Arc<Mutex<Vec<Record>>> = Arc::default();
        let open = Arc::new(AtomicU64::new(0));
        let (e, r, o) = (epoch.clone(), received.clone(), open.clone());
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                let bytes = Arc::new(Mutex::new(Vec::new()));
                r.lock().unwrap().push(bytes.clone());
                o.fetch_add(1, Ordering::SeqCst);
                let (e, o) = (e.clone(), o.clone());
                std::thread::spawn(move || {
                    serve(s, &bytes, &e);
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        RecordingBackend {
            port,
            epoch,
            received,
            open,
        }
    }

    fn connections(&self) -> Vec<Vec<u8>> {
        let r = self.received.lock().unwrap();
        r.iter().map(|b| b.lock().unwrap().clone()).collect()
    }
}

fn serve(mut s: TcpStream, record: &Mutex<Vec<u8>>, epoch: &AtomicU64) {
    let born = epoch.load(Ordering::SeqCst);
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                record.lock().unwrap().extend_from_slice(&buf[..n]);
                pending.extend_from_slice(&buf[..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        // Requests from the proxy are GETs without a body: a head is a whole request.
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            let body: &[u8] = if head.starts_with(b"GET /slow") {
                std::thread::sleep(SLOW);
                b"slow done"
            } else {
                b"ok"
            };
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if s.write_all(answer.as_bytes()).is_err() || s.write_all(body).is_err() {
                return;
            }
        }
        if pending.is_empty() && epoch.load(Ordering::SeqCst) > born {
            return;
        }
    }
}

/// Every byte a connection received is a sequence of whole GET request heads.
fn only_http_requests(bytes: &[u8]) -> Result<usize, String> {
    let mut rest = bytes;
    let mut n = 0;
    while !rest.is_empty() {
        if !rest.starts_with(b"GET /") {
            return Err(format!(
                "not a request: {:?}",
                String::from_utf8_lossy(rest)
            ));
        }
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Err(format!(
                "truncated head: {:?}",
                String::from_utf8_lossy(rest)
            ));
        };
        rest = &rest[end + 4..];
        n += 1;
    }
    Ok(n)
}

/// SIGKILLs a process this test started if it is still there (the orphaned worker).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            // SAFETY: signalling a process this test started, by PID.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// The master is SIGKILLed while its worker has a request in flight. The worker drains: the
/// request completes, then the worker exits, within a bound. Meanwhile its downstream closes
/// the idle pooled connections, so the pool opens new sockets, and one of them takes the lowest
/// free descriptor number: the one the channel to the master had. Nothing but HTTP requests may
/// reach the downstream (no `Exiting` byte meant for the dead master).
#[test]
fn orphaned_worker_never_writes_to_its_old_channel_number() {
    let backend = RecordingBackend::start();
    let port = free_port();
    let mut p = Proxy::start(
        "orphan-channel",
        &flat_config(port, &[backend.port], "", "workers = 1"),
        port,
    );
    let workers = p.workers();
    assert_eq!(workers.len(), 1, "workers: {workers:?}");
    let worker = workers[0];
    let _guard = KillOnDrop(worker);
    wait_until("the pool connected", Duration::from_secs(5), || {
        backend.open.load(Ordering::SeqCst) >= 4
    });

    let in_flight = std::thread::spawn(move || get(port, "/slow"));
    wait_until(
        "the request reached the downstream",
        Duration::from_secs(5),
        || {
            backend
                .connections()
                .iter()
                .any(|c| c.starts_with(b"GET /slow"))
        },
    );
    let t0 = Instant::now();
    p.signal(libc::SIGKILL);
    let _ = p.child.wait();
    // Let the worker notice the closed channel, then make its pool reconnect.
    std::thread::sleep(Duration::from_millis(200));
    let before = backend.connections().len();
    backend.epoch.fetch_add(1, Ordering::SeqCst);
    wait_until("the pool reconnected", Duration::from_secs(5), || {
        backend.connections().len() >= before + 3
    });

    let (status, body) = in_flight.join().unwrap();
    assert_eq!(
        (status, String::from_utf8_lossy(&body).into_owned()),
        (200, "slow done".to_string()),
        "the request in flight gets its whole response"
    );
    wait_until("the orphaned worker exits", Duration::from_secs(5), || {
        !alive(worker)
    });
    assert!(t0.elapsed() < SLOW + Duration::from_secs(5));
    // The worker's sockets are closed: every connection's record is complete.
    wait_until(
        "the downstream saw every close",
        Duration::from_secs(5),
        || backend.open.load(Ordering::SeqCst) == 0,
    );
    for (i, c) in backend.connections().iter().enumerate() {
        if let Err(e) = only_http_requests(c) {
            panic!("downstream connection {i} received something else than requests: {e}");
        }
    }
}
