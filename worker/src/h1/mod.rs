//! rproxy's own HTTP/1.1 codec, for both sides of the proxy: client requests in, downstream
//! responses in. Heads are tokenized by [`scan`] (which accepts exactly what `httparse`,
//! hyper's parser, does). Every framing decision of DESIGN sections 7 and 8 is made in
//! [`head`] (heads) and [`chunked`] (chunked bodies); all three are pure (no I/O, no
//! allocation per request) so they can be unit-tested, fuzzed and compared against hyper.
//! `API.md` beside this file summarises the public API.

pub mod body;
pub mod buffers;
pub mod chunked;
pub(crate) mod conn;
pub mod edit;
pub mod head;
pub mod scan;
pub(crate) mod splice;
pub(crate) mod upstream;

#[cfg(test)]
mod tests {
    use super::body::{BodyReader, Step};
    use super::edit::{self, ClientConn, Framing, RequestEdit};
    use super::head::{parse_request, parse_response, ReqBody};
    use crate::testing::counting;

    /// One keep-alive exchange through the pure codec: parse the request head, write the
    /// forwarded head, parse the response head, find its body, write the client's head.
    fn exchange(spans: &mut Vec<super::head::HeaderSpan>, out: &mut Vec<u8>) -> usize {
        let req = b"GET /a?b HTTP/1.1\r\nHost: x.test\r\nUser-Agent: t\r\nAccept: */*\r\nConnection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: o\r\nConnection: keep-alive\r\n\r\nhello";
        let h = parse_request(req, 65536, spans).unwrap().unwrap();
        assert_eq!(h.body, ReqBody::None);
        out.clear();
        let e = RequestEdit {
            method: h.method.of(req),
            target: h.target.of(req),
            host: None,
            websocket: h.websocket,
            framing: Framing::None,
            xff: Some(b"10.0.0.1"),
            xff_chain: false,
            xfp: Some(b"http"),
            extension_names: &[],
            connection_names: h.conn.other,
        };
        edit::request_head(out, req, spans, &e, |_| {});
        let forwarded = out.len();
        let r = parse_response(resp, 65536, false, spans).unwrap().unwrap();
        let mut body = BodyReader::response(r.body, r.len);
        let Step::Data(range) = body.step(resp).unwrap() else {
            panic!("no body")
        };
        assert_eq!(&resp[range], b"hello");
        assert_eq!(body.step(resp).unwrap(), Step::Done);
        out.clear();
        edit::response_head(out, resp, &r, spans, &[], false, ClientConn::Persistent);
        forwarded + out.len()
    }

    #[test]
    fn a_keep_alive_exchange_allocates_nothing_per_request() {
        let mut spans = Vec::new();
        let mut out = Vec::new();
        // The first request grows the connection's buffers (taken from the free list in the
        // daemon); later ones must not allocate at all.
        let n = exchange(&mut spans, &mut out);
        assert!(n > 100);
        let before = counting::count();
        for _ in 0..100 {
            exchange(&mut spans, &mut out);
        }
        assert_eq!(
            counting::count() - before,
            0,
            "the codec allocated per request"
        );
    }
}
