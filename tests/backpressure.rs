//! Backpressure: 64-200 MiB each way between a fast side and a slow one arrives intact, the slow
//! side sets the pace (the fast one is never more than the socket buffers ahead of it), and no
//! worker's memory grows with the transfer, because neither side is read faster than the other
//! can take.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;

const SIZE: usize = 200 * 1024 * 1024;
/// Most a worker's RSS may grow during a transfer. Read-ahead is at most 256 KiB per downstream
/// connection; unbounded read-ahead would grow by up to the whole body.
const WORKER_GROWTH_KIB: u64 = 16 * 1024;
/// Most the fast side may be ahead of the slow one: the kernel's socket buffers on both hops
/// (loopback autotuning: up to ~4 MiB send + ~6 MiB receive each) plus rproxy's read-ahead.
const MAX_LAG: u64 = 32 * 1024 * 1024;
/// The fast side must have been held back at least this far ahead of the slow one at some
/// point, or the slow side was not slow and the test proves nothing.
const MIN_LAG: u64 = 1024 * 1024;

/// Samples each process of the tree (master and workers) until `stop`; returns, per PID, the
/// RSS when first seen and the peak, in KiB.
fn watch_rss(
    master: i32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<HashMap<i32, (u64, u64)>> {
    std::thread::spawn(move || {
        let mut seen: HashMap<i32, (u64, u64)> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            let mut pids = children_of(master);
            pids.push(master);
            for p in pids {
                let rss = rss_kib(&[p]);
                if rss == 0 {
                    continue;
                }
                let e = seen.entry(p).or_insert((rss, rss));
                e.1 = e.1.max(rss);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

/// The largest growth of any one process, and the peak of the whole tree's RSS, in KiB.
fn growth(samples: &HashMap<i32, (u64, u64)>) -> (u64, u64) {
    let worst = samples.values().map(|(first, peak)| peak - first).max();
    let total = samples.values().map(|(_, peak)| peak).sum();
    (worst.unwrap_or(0), total)
}

fn download_config(port: u16, backend: u16, downstream_extra: &str) -> String {
    flat_config(port, &[backend], "", "workers = 2").replace(
        "connections = 4",
        &format!("connections = 4\n{downstream_extra}"),
    )
}

#[test]
fn upload_200_mib_to_a_slow_downstream() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "upload",
        &flat_config(port, &[b.port], "", "workers = 2"),
        port,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(p.pid(), stop.clone());
    let mut expect = Checksum::default();
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i * 31 % 256) as u8).collect();
    for _ in 0..SIZE / chunk.len() {
        expect.update(&chunk);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let lag = Arc::new(AtomicU64::new(0));
    let body = runtime().block_on(async {
        let chunk = Bytes::from(chunk);
        let (sent2, lag2, consumed) = (sent.clone(), lag.clone(), b.consumed.clone());
        // Lazy: the next chunk is made when reqwest has room for it.
        let stream = futures_util::stream::iter((0..SIZE / chunk.len()).map(move |_| {
            let s = sent2.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let c = consumed.load(Ordering::Relaxed);
            lag2.fetch_max(s.saturating_sub(c), Ordering::Relaxed);
            Ok::<_, std::io::Error>(chunk.clone())
        }));
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let r = c
            .post(p.url("/sink"))
            .header("content-length", SIZE.to_string())
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    });
    stop.store(true, Ordering::Relaxed);
    let (worst, total) = growth(&rss.join().unwrap());
    let lag = lag.load(Ordering::Relaxed);
    assert_eq!(body, format!("{SIZE} {}", expect.value()));
    eprintln!("upload: client ahead of the origin by {lag} B at most; worst process RSS growth {worst} KiB, tree peak {total} KiB");
    assert!(lag <= MAX_LAG, "the client ran {lag} B ahead of the origin");
    assert!(
        lag >= MIN_LAG,
        "the origin was never behind ({lag} B): not a slow origin"
    );
    assert!(worst < WORKER_GROWTH_KIB, "a process grew by {worst} KiB");
}

/// Downloads `size` bytes at 16 MB/s (several times slower than the origin and even a debug
/// build of rproxy can go); returns (bytes received, first mismatch, how far the origin was
/// ahead at most).
fn slow_download(p: &Proxy, b: &Backend, size: usize) -> (u64, Option<usize>, u64) {
    const RATE: f64 = 16e6;
    runtime().block_on(async {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let r = c.get(p.url(&format!("/big/{size}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut stream = r.bytes_stream();
        let (mut pos, mut lag) = (0usize, 0u64);
        let mut mismatch = None;
        let start = tokio::time::Instant::now();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            for (k, &x) in chunk.iter().enumerate() {
                if mismatch.is_none() && x != ((pos + k) % 251) as u8 {
                    mismatch = Some(pos + k);
                }
            }
            pos += chunk.len();
            lag = lag.max(
                b.produced
                    .load(Ordering::Relaxed)
                    .saturating_sub(pos as u64),
            );
            tokio::time::sleep_until(start + Duration::from_secs_f64(pos as f64 / RATE)).await;
        }
        (pos as u64, mismatch, lag)
    })
}

#[test]
fn download_64_mib_by_a_slow_client() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start("download", &download_config(port, b.port, ""), port);
    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(p.pid(), stop.clone());
    let size = 64 * 1024 * 1024;
    let (received, mismatch, lag) = slow_download(&p, &b, size);
    stop.store(true, Ordering::Relaxed);
    let (worst, total) = growth(&rss.join().unwrap());
    assert_eq!(received, size as u64);
    assert_eq!(mismatch, None, "byte differs");
    eprintln!("download: origin ahead of the client by {lag} B at most; worst process RSS growth {worst} KiB, tree peak {total} KiB");
    assert!(lag <= MAX_LAG, "the origin ran {lag} B ahead of the client");
    assert!(
        lag >= MIN_LAG,
        "the origin was never ahead ({lag} B): not a slow client"
    );
    assert!(worst < WORKER_GROWTH_KIB, "a process grew by {worst} KiB");
}

/// The smallest `high-watermark`: still intact, still paced by the client.
#[test]
fn download_with_a_small_high_watermark() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "smallhwm",
        &download_config(port, b.port, "high-watermark = 8192"),
        port,
    );
    let size = 16 * 1024 * 1024;
    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(p.pid(), stop.clone());
    let (received, mismatch, lag) = slow_download(&p, &b, size);
    stop.store(true, Ordering::Relaxed);
    let (worst, _) = growth(&rss.join().unwrap());
    assert_eq!(received, size as u64);
    assert_eq!(mismatch, None, "byte differs");
    eprintln!("small high-watermark: origin ahead by {lag} B at most; worst growth {worst} KiB");
    assert!(lag <= MAX_LAG, "the origin ran {lag} B ahead of the client");
    assert!(worst < WORKER_GROWTH_KIB, "a process grew by {worst} KiB");
}
