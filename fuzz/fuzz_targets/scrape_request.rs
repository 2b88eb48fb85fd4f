//! The master's `metrics-listen` request parser on arbitrary bytes, as the connection feeds it:
//! every prefix of what a client sent, up to what the connection reads. Nothing may panic, a
//! verdict other than `Incomplete` must not change when more bytes arrive, and `Incomplete` is
//! never the answer to a buffer the connection would not grow any more.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../master/scrape_request.rs"]
#[allow(dead_code)]
mod scrape_request;

use scrape_request::{parse, Verdict, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    // The connection reads at most MAX_REQUEST + 4 bytes.
    let data = &data[..data.len().min(MAX_REQUEST + 4)];
    let mut decided = None;
    // Every prefix would be expensive on big inputs; the connection judges after each read,
    // so a handful of cut points stands for its reads.
    let cuts = [1, 2, 3, 5, 8, 16, 64, 512, 4096, MAX_REQUEST, data.len()];
    for &n in cuts.iter().filter(|&&n| n <= data.len()) {
        let v = parse(&data[..n]);
        if let Some(d) = decided {
            assert_eq!(v, d, "the verdict changed with more bytes");
        } else if v != Verdict::Incomplete {
            decided = Some(v);
        }
        if n >= MAX_REQUEST {
            assert_ne!(v, Verdict::Incomplete, "a full buffer left undecided");
        }
    }
    let _ = parse(data);
});
