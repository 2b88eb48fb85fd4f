//! `h1::scan` against `httparse`, the parser it replaced and must answer as, on any bytes: as
//! a request head and as a response head, the same verdict (complete with the same length,
//! incomplete, or the same error) and, when complete, the same start line and header spans.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rproxy_worker::h1::scan::oracle;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = oracle::compare(data) {
        panic!("{e}");
    }
});
