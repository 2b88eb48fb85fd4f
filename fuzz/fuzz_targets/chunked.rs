//! `h1::chunked::Decoder` on any bytes, fed three ways: in one piece, one byte at a time, and
//! in pieces whose sizes come from the input. All three must decode the same data, stop at the
//! same byte (the end of the body: what follows is the next message) and fail alike; every call
//! consumes at most its input, and its data range ends at what it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rproxy_worker::h1::chunked::{ChunkError, Decoder};

#[derive(Debug, PartialEq)]
enum End {
    /// The body ended after this many bytes of the input.
    Done(usize),
    /// The input ran out first.
    Incomplete,
    Failed(ChunkError),
}

fn run(input: &[u8], pieces: &mut dyn Iterator<Item = usize>) -> (Vec<u8>, End) {
    let mut dec = Decoder::new();
    let mut data = Vec::new();
    let mut fed = 0; // bytes of `input` handed to the decoder so far
    let mut pos = 0; // bytes it has consumed
    while fed < input.len() {
        fed = (fed + pieces.next().unwrap_or(input.len()).max(1)).min(input.len());
        loop {
            let avail = &input[pos..fed];
            match dec.decode(avail) {
                Err(e) => return (data, End::Failed(e)),
                Ok(d) => {
                    assert!(d.consumed <= avail.len(), "consumed past its input");
                    assert!(d.data.start <= d.data.end);
                    if !d.data.is_empty() {
                        assert_eq!(d.data.end, d.consumed, "data does not end at consumed");
                    }
                    data.extend_from_slice(&avail[d.data.clone()]);
                    pos += d.consumed;
                    if d.done {
                        assert!(dec.is_done() && dec.at_boundary());
                        return (data, End::Done(pos));
                    }
                    if d.consumed == 0 || pos == fed {
                        break;
                    }
                }
            }
        }
    }
    (data, End::Incomplete)
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, body)) = input.split_first() else {
        return;
    };
    let whole = run(body, &mut std::iter::empty());
    let bytewise = run(body, &mut std::iter::repeat(1));
    let sizes = [1 + usize::from(sel & 7), 1 + usize::from(sel >> 3)];
    let chunky = run(body, &mut sizes.iter().copied().cycle());
    assert_eq!(whole, bytewise, "one piece vs one byte at a time");
    assert_eq!(whole, chunky, "one piece vs pieces of {sizes:?}");
    if let (_, End::Done(n)) = &whole {
        // The body's bytes alone decode the same: what follows it is not read.
        assert_eq!(run(&body[..*n], &mut std::iter::empty()), whole);
    }
});
