//! Backpressure: 200 MiB each way between a fast side and a slow one arrives intact while the
//! rproxy processes stay small, because neither side is read faster than the other can take.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;

const SIZE: usize = 200 * 1024 * 1024;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Samples the total RSS of the master and its workers until `stop`; returns the peak in KiB.
fn watch_rss(master: i32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut pids = children_of(master);
            pids.push(master);
            peak = peak.max(rss_kib(&pids));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
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
    let body = runtime().block_on(async {
        let chunk = Bytes::from(chunk);
        let stream = futures_util::stream::iter(
            (0..SIZE / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
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
    let peak = rss.join().unwrap();
    assert_eq!(body, format!("{SIZE} {}", expect.value()));
    eprintln!("upload: peak rproxy RSS {peak} KiB");
    assert!(peak < RSS_LIMIT_KIB, "rproxy RSS peaked at {peak} KiB");
}

#[test]
fn download_200_mib_by_a_slow_client() {
    let b = Backend::start("b");
    let port = free_port();
    let p = Proxy::start(
        "download",
        &flat_config(port, &[b.port], "", "workers = 2"),
        port,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(p.pid(), stop.clone());
    let received = Arc::new(AtomicU64::new(0));
    let mismatch = runtime().block_on(async {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let r = c.get(p.url(&format!("/big/{SIZE}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut stream = r.bytes_stream();
        let (mut pos, mut since_pause) = (0usize, 0usize);
        let mut mismatch = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            for (k, &x) in chunk.iter().enumerate() {
                if mismatch.is_none() && x != ((pos + k) % 251) as u8 {
                    mismatch = Some(pos + k);
                }
            }
            pos += chunk.len();
            received.store(pos as u64, Ordering::Relaxed);
            since_pause += chunk.len();
            // A slow reader: 2 ms pause per 256 KiB.
            if since_pause >= 256 * 1024 {
                since_pause = 0;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        mismatch
    });
    stop.store(true, Ordering::Relaxed);
    let peak = rss.join().unwrap();
    assert_eq!(received.load(Ordering::Relaxed), SIZE as u64);
    assert_eq!(mismatch, None, "byte differs");
    eprintln!("download: peak rproxy RSS {peak} KiB");
    assert!(peak < RSS_LIMIT_KIB, "rproxy RSS peaked at {peak} KiB");
}
