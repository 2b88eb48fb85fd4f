//! rproxy's own HTTP/1.1 codec, on `httparse` (the parser hyper itself uses), for both sides
//! of the proxy: client requests in, downstream responses in. Every framing decision of
//! DESIGN sections 7 and 8 is made in [`head`] (heads) and [`chunked`] (chunked bodies); both
//! are pure (no I/O, no allocation per request) so they can be unit-tested, fuzzed and
//! compared against hyper. `API.md` beside this file summarises the public API.

pub mod body;
pub mod buffers;
pub mod chunked;
pub(crate) mod conn;
pub mod edit;
pub mod head;
pub(crate) mod upstream;
