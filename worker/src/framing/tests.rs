use super::*;

const MAX: usize = 8192;

/// Feed `chunks` as consecutive reads; the stream as hyper would see it.
fn feed_with(g: &mut FramingGuard, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        let mut v = c.to_vec();
        g.inspect(&mut v);
        out.extend_from_slice(&v);
    }
    out
}

fn feed(chunks: &[&[u8]]) -> Vec<u8> {
    feed_with(&mut FramingGuard::new(MAX), chunks)
}

fn changed(input: &[u8], out: &[u8]) -> Vec<usize> {
    assert_eq!(input.len(), out.len());
    (0..input.len()).filter(|&i| input[i] != out[i]).collect()
}

/// Changed positions when `input` arrives in one read, byte by byte, and split in two at
/// every position: all must agree. Returns them.
fn spoiled(input: &[u8]) -> Vec<usize> {
    let whole = changed(input, &feed(&[input]));
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(changed(input, &feed(&bytes)), whole, "byte by byte");
    for k in 0..=input.len() {
        let (a, b) = input.split_at(k);
        assert_eq!(changed(input, &feed(&[a, b])), whole, "split at {k}");
    }
    for &v in &whole {
        assert_eq!(feed(&[input])[v], SPOIL);
    }
    whole
}

/// Index of the final `\n` of the `nth` (0-based) `\r\n\r\n` in `s`.
fn head_end(s: &[u8], nth: usize) -> usize {
    s.windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"\r\n\r\n")
        .nth(nth)
        .map(|(i, _)| i + 3)
        .expect("terminator")
}

fn mode_after(input: &[u8]) -> Mode {
    let mut g = FramingGuard::new(MAX);
    feed_with(&mut g, &[input]);
    g.mode
}

const CL_TE: &[u8] = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
    Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

#[test]
fn clean_get() {
    let s = b"GET / HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    assert!(spoiled(s).is_empty());
    assert_eq!(mode_after(s), Mode::Head);
}

#[test]
fn content_length_body_then_next_request() {
    // The body looks like an ambiguous head: it must be skipped, not parsed.
    let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut s = format!("POST /u HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    s.extend_from_slice(body);
    s.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
    assert!(spoiled(&s).is_empty());
    assert_eq!(mode_after(&s), Mode::Head);
    let mut t = s.clone();
    t.extend_from_slice(CL_TE);
    assert_eq!(spoiled(&t), vec![s.len() + head_end(CL_TE, 0)]);
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let s: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;name=val;x=\"q\"\r\nhello\r\n\
        A \t;ext\r\n\r\n\r\n\r\n\r\n\r\n\r\n\
        0;last\r\nX-Trailer: 1\r\nOther: a\tb\r\n\r\n";
    assert!(spoiled(s).is_empty());
    assert_eq!(mode_after(s), Mode::Head);
    let mut t = s.to_vec();
    t.extend_from_slice(CL_TE);
    assert_eq!(spoiled(&t), vec![s.len() + head_end(CL_TE, 0)]);
}

#[test]
fn chunked_without_trailers_and_uppercase_hex() {
    let s: &[u8] = b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, Chunked \r\n\r\n\
        1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n";
    let mut t = s.to_vec();
    t.extend_from_slice(CL_TE);
    assert_eq!(spoiled(&t), vec![s.len() + head_end(CL_TE, 0)]);
}

#[test]
fn pipelined_clean_then_ambiguous() {
    let first: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut s = first.to_vec();
    s.extend_from_slice(CL_TE);
    assert_eq!(spoiled(&s), vec![first.len() + head_end(CL_TE, 0)]);
}

#[test]
fn cl_and_te_in_both_orders() {
    let a = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    let b = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
    assert_eq!(spoiled(a), vec![a.len() - 1]);
    assert_eq!(spoiled(b), vec![b.len() - 1]);
    // Any values, even ones hyper refuses on their own.
    let c = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: x\r\n\r\n";
    assert_eq!(spoiled(c), vec![c.len() - 1]);
    let d = b"POST / HTTP/1.1\r\nContent-Length:\r\nTransfer-Encoding:\r\n\r\n";
    assert_eq!(spoiled(d), vec![d.len() - 1]);
}

#[test]
fn whitespace_before_colon() {
    let a = b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\n";
    assert_eq!(spoiled(a), vec![a.len() - 1]);
    let b = b"POST / HTTP/1.1\r\nContent-Length\t: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(spoiled(b), vec![b.len() - 1]);
    // Alone, hyper refuses such a head itself.
    let c = b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n";
    assert!(spoiled(c).is_empty());
    assert_eq!(mode_after(c), Mode::Passive);
}

#[test]
fn duplicate_transfer_encoding() {
    let a = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(spoiled(a), vec![a.len() - 1]);
    let b = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nX: y\r\n\
        transfer-encoding: chunked\r\n\r\n";
    assert_eq!(spoiled(b), vec![b.len() - 1]);
}

#[test]
fn split_at_every_position_still_detected() {
    // `spoiled` feeds byte by byte and at every two-way split.
    let mut s = b"\r\nGET /a?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".to_vec();
    let first = s.len();
    s.extend_from_slice(CL_TE);
    assert_eq!(spoiled(&s), vec![first + head_end(CL_TE, 0)]);
    // Three-way splits around the terminator.
    let end = first + head_end(CL_TE, 0);
    for a in end - 6..=end {
        for b in a..=end {
            let out = feed(&[&s[..a], &s[a..b], &s[b..]]);
            assert_eq!(changed(&s, &out), vec![end], "splits {a} {b}");
        }
    }
}

#[test]
fn body_split_across_reads() {
    let s: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789\
        POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        4\r\nabcd\r\n3;e=1\r\nxyz\r\n0\r\nT: 1\r\n\r\n";
    let mut t = s.to_vec();
    t.extend_from_slice(CL_TE);
    let want = vec![s.len() + head_end(CL_TE, 0)];
    assert_eq!(spoiled(&t), want);
    // Irregular read sizes.
    for size in 2..40 {
        let parts: Vec<&[u8]> = t.chunks(size).collect();
        assert_eq!(changed(&t, &feed(&parts)), want, "reads of {size}");
    }
}

#[test]
fn upgrade_goes_passive() {
    let up = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let mut s = up.to_vec();
    s.extend_from_slice(CL_TE);
    // Passive for good: if the upgrade is refused (no 101), hyper keeps the connection and
    // a later ambiguous request gets through; closing such connections is up to the caller.
    assert!(spoiled(&s).is_empty());
    assert_eq!(mode_after(up), Mode::Passive);
    let connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    assert_eq!(mode_after(connect), Mode::Passive);
    // Neither is a tunnel for hyper: an `Upgrade` on HTTP/1.0, and `connect` in lower case.
    let old = b"GET / HTTP/1.0\r\nUpgrade: x\r\n\r\n";
    assert_eq!(mode_after(old), Mode::Head);
    let lower = b"connect / HTTP/1.1\r\n\r\n";
    assert_eq!(mode_after(lower), Mode::Head);
}

#[test]
fn garbage_goes_passive_untouched() {
    let cases: &[&[u8]] = &[
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.2\r\n\r\n",
        b"GET /\r\n\r\n",
        b" GET / HTTP/1.1\r\n\r\n",
        b"\r\rGET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad(name): 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nH: 1\r\n\rX",
    ];
    for &c in cases {
        let mut s = c.to_vec();
        s.extend_from_slice(CL_TE);
        assert!(spoiled(&s).is_empty(), "{:?}", String::from_utf8_lossy(c));
        assert_eq!(
            mode_after(c),
            Mode::Passive,
            "{:?}",
            String::from_utf8_lossy(c)
        );
    }
}

#[test]
fn not_understood_framing_goes_passive() {
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nx\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 2\r\n",
    ];
    for &c in cases {
        assert_eq!(
            mode_after(c),
            Mode::Passive,
            "{:?}",
            String::from_utf8_lossy(c)
        );
        let mut s = c.to_vec();
        s.extend_from_slice(CL_TE);
        assert!(spoiled(&s).is_empty(), "{:?}", String::from_utf8_lossy(c));
    }
}

#[test]
fn repeated_equal_content_length_is_tracked() {
    let s: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length:\t3 \r\n\r\nabc";
    assert_eq!(mode_after(s), Mode::Head);
    let mut t = s.to_vec();
    t.extend_from_slice(CL_TE);
    assert_eq!(spoiled(&t), vec![s.len() + head_end(CL_TE, 0)]);
}

#[test]
fn head_over_max_is_cut() {
    let mut s = b"GET / HTTP/1.1\r\nX: ".to_vec();
    s.resize(200, b'a');
    s.extend_from_slice(b"\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
    let cut = |keep| Verdict::Cut {
        keep,
        why: Cut::HeadTooLarge,
    };
    let mut g = FramingGuard::new(100);
    assert_eq!(g.inspect(&mut s.clone()), cut(100));
    // At the same stream offset whatever the reads, and nothing after it.
    let mut g = FramingGuard::new(100);
    assert_eq!(g.inspect(&mut s[..50].to_vec()), Verdict::Pass);
    assert_eq!(g.inspect(&mut s[50..].to_vec()), cut(50));
    assert_eq!(g.inspect(&mut b"\r\n\r\n".to_vec()), cut(0));
    // Exactly max_head bytes is still a head.
    let mut g = FramingGuard::new(s.len());
    assert_eq!(changed(&s, &feed_with(&mut g, &[&s])), vec![s.len() - 1]);
    let mut g = FramingGuard::new(s.len() - 1);
    assert_eq!(g.inspect(&mut s.clone()), cut(s.len() - 1));
    // Leading empty lines count, as in hyper's buffer.
    let get = b"GET / HTTP/1.1\r\n\r\n";
    let mut g = FramingGuard::new(get.len() + 1);
    assert_eq!(g.inspect(&mut b"\r\n".to_vec()), Verdict::Pass);
    assert_eq!(g.inspect(&mut get.to_vec()), cut(get.len() - 1));
}

/// Past 64 KiB the guard used to stop looking: a padded CL + TE head was forwarded.
#[test]
fn long_padded_cl_te_head_gets_431_from_hyper() {
    let mut s = b"POST /x HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
    s.resize(70_000, b'a');
    s.extend_from_slice(b"\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    let max = 65_536;
    let mut bytes = s.clone();
    let keep = match FramingGuard::new(max).inspect(&mut bytes) {
        Verdict::Cut { keep, .. } => keep,
        v => panic!("{v:?}"),
    };
    bytes.truncate(keep);
    let (resp, served) = hyper_serve_max(&bytes, max);
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(served.is_empty());
}

#[test]
fn chunk_size_beyond_i64_is_cut_before_its_digits() {
    let head = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut s = head.to_vec();
    s.extend_from_slice(b"ffffffffffffffff\r\nx\r\n0\r\n\r\n");
    let mut g = FramingGuard::new(MAX);
    let v = g.inspect(&mut s);
    assert_eq!(
        v,
        Verdict::Cut {
            keep: head.len() + 15,
            why: Cut::ChunkTooLarge
        }
    );
    // The largest signed size is still a chunk size.
    let mut s = head.to_vec();
    s.extend_from_slice(b"7fffffffffffffff\r\n");
    assert_eq!(FramingGuard::new(MAX).inspect(&mut s), Verdict::Pass);
}

#[test]
fn leading_empty_lines() {
    let mut s = b"\r\n\r\n\nGET / HTTP/1.1\r\n\r\n\r\n".to_vec();
    let first = s.len();
    s.extend_from_slice(CL_TE);
    assert_eq!(spoiled(&s), vec![first + head_end(CL_TE, 0)]);
    // And after a body.
    let mut t = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\r\n\r\n".to_vec();
    let first = t.len();
    t.extend_from_slice(CL_TE);
    assert_eq!(spoiled(&t), vec![first + head_end(CL_TE, 0)]);
}

#[test]
fn name_case_does_not_matter() {
    for (cl, te) in [
        ("content-length", "transfer-encoding"),
        ("CONTENT-LENGTH", "TRANSFER-ENCODING"),
        ("Content-length", "tRANSFER-eNCODING"),
    ] {
        let s = format!("POST / HTTP/1.1\r\n{cl}: 1\r\n{te}: CHUNKED\r\n\r\n").into_bytes();
        assert_eq!(spoiled(&s), vec![s.len() - 1], "{cl} {te}");
    }
    // Near misses are ordinary headers.
    let s = b"POST / HTTP/1.1\r\nContent-Lengths: 1\r\nTransfer-Encodin: chunked\r\n\
        Content-Type: a\r\nTransfer: b\r\nUpgrade-Insecure-Requests: 1\r\n\r\n";
    assert!(spoiled(s).is_empty());
    assert_eq!(mode_after(s), Mode::Head);
}

#[test]
fn bare_lf_heads() {
    // httparse accepts `\n` line ends; the final `\n` is spoiled all the same.
    let a = b"POST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n-Evil: 1\r\n\r\n";
    let end = a.windows(2).position(|w| w == b"\n\n").unwrap() + 1;
    assert_eq!(spoiled(a), vec![end]);
    let b = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\n";
    assert_eq!(spoiled(b), vec![b.len() - 1]);
    let c = b"GET / HTTP/1.1\nHost: a\n\nPOST / HTTP/1.1\nContent-Length: 1\n\nx";
    assert!(spoiled(c).is_empty());
    assert_eq!(mode_after(c), Mode::Head);
}

/// 1000 clean requests of four kinds, pipelined.
fn thousand_requests() -> Vec<u8> {
    let mut s = Vec::new();
    for i in 0..1000 {
        match i % 4 {
            0 => s.extend_from_slice(
                format!("GET /item/{i}?q=x HTTP/1.1\r\nHost: h\r\nUser-Agent: t/1.0\r\n\r\n")
                    .as_bytes(),
            ),
            1 => {
                let body = "x".repeat(i % 97);
                s.extend_from_slice(
                    format!(
                        "POST /p HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
            2 => s.extend_from_slice(
                b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                3;e\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            ),
            _ => s.extend_from_slice(b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        }
    }
    s
}

#[test]
fn thousand_pipelined_clean_requests_unchanged() {
    let s = thousand_requests();
    let mut g = FramingGuard::new(MAX);
    assert_eq!(feed_with(&mut g, &[&s]), s);
    assert_eq!(g.mode, Mode::Head);
    // Same stream in reads of varying size.
    let mut g = FramingGuard::new(MAX);
    let mut parts = Vec::new();
    let (mut at, mut n) = (0, 1usize);
    while at < s.len() {
        let len = (n * 7919 % 1500 + 1).min(s.len() - at);
        parts.push(&s[at..at + len]);
        at += len;
        n += 1;
    }
    assert_eq!(feed_with(&mut g, &parts), s);
    assert_eq!(g.mode, Mode::Head);
}

#[test]
fn find_matches_naive() {
    let hay: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
    for start in 0..40 {
        for needle in [b'\n', b'\r', 0, 0xff, 0x80, b'a'] {
            let h = &hay[start..];
            assert_eq!(find(needle, h), h.iter().position(|&b| b == needle));
        }
    }
}

/// What hyper's server makes of `input` after the guard: the response bytes and the number
/// of requests that reached the service.
fn through_hyper(input: &[u8]) -> (String, usize) {
    let mut bytes = input.to_vec();
    FramingGuard::new(MAX).inspect(&mut bytes);
    let (resp, served) = hyper_serve(&bytes);
    (resp, served.len())
}

/// The same without the guard.
fn through_hyper_unguarded(input: &[u8]) -> (String, usize) {
    let (resp, served) = hyper_serve(input);
    (resp, served.len())
}

/// hyper's HTTP/1 server on `bytes` as they are: its response bytes and the target of each
/// request that reached the service.
fn hyper_serve(bytes: &[u8]) -> (String, Vec<String>) {
    hyper_serve_max(bytes, 400 * 1024)
}

/// [`hyper_serve`] with hyper's `max_buf_size` = `max`.
fn hyper_serve_max(bytes: &[u8], max: usize) -> (String, Vec<String>) {
    use std::cell::RefCell;
    use std::convert::Infallible;
    use std::rc::Rc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let bytes = bytes.to_vec();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let served = Rc::new(RefCell::new(Vec::new()));
        let log = Rc::clone(&served);
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let log = Rc::clone(&log);
            async move {
                let target = req.uri().to_string();
                let _ = req.into_body().collect().await;
                log.borrow_mut().push(target);
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
        // half_close: the client shuts its side down once everything is sent.
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .max_buf_size(max)
            .serve_connection(TokioIo::new(server), svc);
        let talk = async move {
            client.write_all(&bytes).await.unwrap();
            client.shutdown().await.unwrap();
            let mut out = Vec::new();
            let _ = client.read_to_end(&mut out).await;
            out
        };
        let (_, out) = tokio::join!(conn, talk);
        let served = served.borrow().clone();
        (String::from_utf8_lossy(&out).into_owned(), served)
    })
}

#[test]
fn hyper_refuses_spoiled_heads() {
    // Without the guard hyper takes it: the reason for this module.
    let (resp, n) = through_hyper_unguarded(CL_TE);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(n, 1);

    let (resp, n) = through_hyper(CL_TE);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(n, 0);

    // A bare-`\n` head whose body would complete a header name after a letter.
    let lf = b"POST / HTTP/1.1\nContent-Length: 12\nTransfer-Encoding: chunked\n\n-Evil: 1\r\n\r\n";
    assert_eq!(through_hyper_unguarded(lf).1, 1);
    let (resp, n) = through_hyper(lf);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(n, 0);
}

#[test]
fn hyper_serves_the_thousand() {
    let (resp, n) = through_hyper(&thousand_requests());
    assert_eq!(n, 1000);
    assert_eq!(resp.matches(" 200 OK\r\n").count(), 1000);
}

#[test]
fn hyper_agrees_on_boundaries() {
    let clean: &[u8] = b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\r\n\
        POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        5;x=y\r\nhello\r\n0\r\nTrailer: t\r\n\r\n\
        GET /d HTTP/1.1\nHost: a\n\n\
        POST /e HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n";
    let (resp, n) = through_hyper(clean);
    assert_eq!(n, 5, "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 5, "{resp}");

    let mut s = clean.to_vec();
    s.extend_from_slice(CL_TE);
    let (resp, n) = through_hyper(&s);
    assert_eq!(n, 5, "{resp}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp}");
}

/// xorshift64*: deterministic randomness for the generated streams.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// `name` in random letter case.
    fn case(&mut self, name: &str) -> String {
        name.chars()
            .map(|c| {
                if self.one_in(2) {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    }

    /// Body bytes, with line ends and request-looking text mixed in.
    fn body(&mut self, len: usize) -> Vec<u8> {
        let mut b = Vec::with_capacity(len);
        while b.len() < len {
            match self.below(6) {
                0 => b.extend_from_slice(b"\r\n"),
                1 => b.extend_from_slice(b"\n\n"),
                2 => b.extend_from_slice(CL_TE),
                3 => b.extend_from_slice(b"0\r\n\r\n"),
                _ => b.push(self.next() as u8),
            }
        }
        b.truncate(len);
        b
    }
}

/// One request that hyper accepts; `evil` ones carry CL+TE or two TE lines (and a chunked
/// body, as hyper reads them).
fn random_request(rng: &mut Rng, target: &str, evil: bool) -> Vec<u8> {
    let nl = if rng.one_in(5) { "\n" } else { "\r\n" };
    let mut head = String::new();
    for _ in 0..rng.below(3) {
        head += rng.pick(&["\r\n", "\n"]);
    }
    let method = rng.pick(&["GET", "POST", "PUT", "DELETE", "OPTIONS", "X-CUSTOM"]);
    head += &format!("{method} {target} HTTP/1.1{nl}");
    let mut lines: Vec<String> = Vec::new();
    for _ in 0..rng.below(6) {
        let (name, value) = match rng.below(8) {
            0 => ("Host", "example.com"),
            1 => ("Content-Type", "text/plain; charset=utf-8"),
            2 => ("Content-Lengths", "3"),
            3 => ("Transfer", "chunked"),
            4 => ("Upgrade-Insecure-Requests", "1"),
            5 => ("X-Transfer-Encoding", "chunked"),
            6 => ("Cookie", "a=1; b=\"two\"; c=Content-Length: 4"),
            _ => ("Te", "trailers"),
        };
        let ws = rng.pick(&["", " ", "\t", "  "]);
        lines.push(format!(
            "{}:{ws}{value}{}",
            rng.case(name),
            rng.pick(&["", " "])
        ));
    }
    let chunked = evil || rng.one_in(3);
    let mut body = Vec::new();
    if chunked {
        let te = rng.pick(&["chunked", "CHUNKED", "gzip, chunked", "br,chunked"]);
        lines.push(format!("{}: {te}", rng.case("transfer-encoding")));
        if evil {
            let extra = if rng.one_in(2) {
                format!("{}: {}", rng.case("content-length"), rng.below(100))
            } else {
                format!("{}: chunked", rng.case("transfer-encoding"))
            };
            lines.push(extra);
        }
        for _ in 0..rng.below(4) {
            let n = 1 + rng.below(40);
            let ext = rng.pick(&["", ";a=b", " ;x", "\t; q=\"v\""]);
            body.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
            body.extend(rng.body(n));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(rng.pick(&["0\r\n", "000;end\r\n"]).as_bytes());
        if rng.one_in(2) {
            body.extend_from_slice(b"Trailer-One: 1\r\nX: Content-Length: 5\r\n");
        }
        body.extend_from_slice(b"\r\n");
    } else if rng.one_in(2) {
        let n = rng.below(60);
        lines.push(format!("{}: {n}", rng.case("content-length")));
        body = rng.body(n);
    }
    // Shuffle so framing headers land anywhere.
    for k in (1..lines.len()).rev() {
        let j = rng.below(k + 1);
        lines.swap(k, j);
    }
    for l in &lines {
        head += l;
        head += nl;
    }
    head += rng.pick(&["\r\n", "\n"]);
    let mut req = head.into_bytes();
    req.extend(body);
    req
}

#[test]
fn generated_streams_agree_with_hyper() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..1000 {
        let count = 1 + rng.below(8);
        let evil_at = if rng.one_in(2) {
            Some(rng.below(count))
        } else {
            None
        };
        let mut stream = Vec::new();
        for k in 0..count {
            let evil = evil_at == Some(k);
            stream.extend(random_request(&mut rng, &format!("/r{round}/{k}"), evil));
        }
        let ctx = String::from_utf8_lossy(&stream).into_owned();

        // Unguarded, hyper takes every request up to the evil one included (and closes after
        // it if it had CL+TE).
        let (_, served) = hyper_serve(&stream);
        let upto = evil_at.map_or(count, |e| e + 1);
        assert!(served.len() >= upto, "{ctx:?}");
        for (k, t) in served.iter().enumerate() {
            assert_eq!(*t, format!("/r{round}/{k}"), "{ctx:?}");
        }

        let mut guarded = stream.clone();
        FramingGuard::new(MAX).inspect(&mut guarded);
        let mut parts = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let n = (1 + rng.below(64)).min(stream.len() - at);
            parts.push(&stream[at..at + n]);
            at += n;
        }
        assert_eq!(feed(&parts), guarded, "{ctx:?}");

        let spoiled = changed(&stream, &guarded);
        let (resp, served) = hyper_serve(&guarded);
        let want: Vec<String> = (0..evil_at.unwrap_or(count))
            .map(|k| format!("/r{round}/{k}"))
            .collect();
        assert_eq!(served, want, "{ctx:?}");
        match evil_at {
            None => assert!(spoiled.is_empty(), "{ctx:?}"),
            Some(_) => {
                assert_eq!(spoiled.len(), 1, "{ctx:?}");
                assert!(resp.contains("HTTP/1.1 400 Bad Request"), "{resp}");
            }
        }
    }
}
