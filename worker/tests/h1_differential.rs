//! Differential test of the HTTP/1 codec (`rproxy_worker::h1`) against hyper 1.x.
//!
//! Generated client request streams (methods, targets, header sets with duplicates, obs-fold
//! and bad bytes, Content-Length / chunked / both / invalid framing, pipelined messages,
//! HTTP/1.0 and `Connection: close`) and downstream response streams (status classes, HEAD,
//! every framing) are fed to the codec and to hyper (a real hyper server or client connection
//! over an in-memory duplex stream), whole and split in two at every byte boundary. Both
//! sides' verdicts are compared: which messages were accepted (method, target, status, body
//! bytes: so where each body ended and the next message started), and how the stream ended
//! (clean, rejected with which status, or cut mid-message).
//!
//! The codec is stricter than hyper on purpose in the classes listed in `STRICTER` (DESIGN
//! sections 7 and 8: a proxy must refuse what a downstream could read another way). A
//! disagreement passes only when the codec refused a message that hyper accepted, the two
//! agreed on every message before it, and the generator tagged that message with one of those
//! classes. Any other disagreement fails, and so does a verdict of either side that changes
//! with the split point. Deterministic (fixed seed), a few seconds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use rproxy_worker::h1::body::{BodyReader, Step};
use rproxy_worker::h1::head::{parse_request, parse_response, HeadError, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The codec's head size limit here: every generated head is far below it except the one
/// case built to pass hyper's 100-header limit.
const MAX_HEAD: usize = 65536;

// ------------------------------------------------------------------ verdicts

/// One message as a parser accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    /// Request: method and target; response: the status code.
    head: String,
    body: Vec<u8>,
}

/// How the stream ended for a parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every byte used, at a message boundary (or the connection was to close after the last
    /// accepted message, and the rest is ignored).
    Ok,
    /// A head refused: 400 (malformed) or 431 (too large); 502 for a response.
    Refused(u16),
    /// A body refused (invalid chunked framing).
    BadBody,
    /// The bytes ended inside a message.
    Cut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    msgs: Vec<Msg>,
    end: End,
}

// ------------------------------------------------------------------ the codec's side

/// Requests through the codec, as the worker reads them: heads parsed from the front of the
/// buffer, bodies through `BodyReader`, the buffer compacted whenever the reader wants more.
fn codec_requests(pieces: &[&[u8]]) -> Verdict {
    let mut buf: Vec<u8> = Vec::new();
    let mut spans = Vec::new();
    let mut msgs = Vec::new();
    // The message being read: (reader, message so far, keep-alive after it).
    let mut cur: Option<(BodyReader, Msg, bool)> = None;
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match cur.as_mut() {
                None => match parse_request(&buf, MAX_HEAD, &mut spans) {
                    Ok(None) => break,
                    Err(HeadError::TooLarge) => {
                        return Verdict {
                            msgs,
                            end: End::Refused(431),
                        }
                    }
                    Err(_) => {
                        return Verdict {
                            msgs,
                            end: End::Refused(400),
                        }
                    }
                    Ok(Some(h)) => {
                        // hyper shows an absolute-form target with an empty path as ".../":
                        // the codec forwards "/" for it too.
                        let slash = match h.form {
                            Target::Absolute { path, .. } if path.is_empty() => "/",
                            _ => "",
                        };
                        let head = format!(
                            "{} {}{slash}",
                            String::from_utf8_lossy(h.method.of(&buf)),
                            String::from_utf8_lossy(h.target.of(&buf))
                        );
                        let reader = BodyReader::request(h.body, h.len);
                        cur = Some((
                            reader,
                            Msg {
                                head,
                                body: Vec::new(),
                            },
                            h.keep_alive(),
                        ));
                    }
                },
                Some((reader, msg, keep)) => match reader.step(&buf) {
                    Ok(Step::Data(r)) => msg.body.extend_from_slice(&buf[r]),
                    Ok(Step::NeedMore) => {
                        buf.drain(..reader.pos);
                        reader.pos = 0;
                        break;
                    }
                    Ok(Step::Done) => {
                        buf.drain(..reader.pos);
                        let keep = *keep;
                        let (_, msg, _) = cur.take().expect("a message is being read");
                        msgs.push(msg);
                        if !keep {
                            return Verdict { msgs, end: End::Ok };
                        }
                    }
                    Err(_) => {
                        return Verdict {
                            msgs,
                            end: End::BadBody,
                        }
                    }
                },
            }
        }
    }
    let end = if cur.is_none() && buf.is_empty() {
        End::Ok
    } else {
        End::Cut
    };
    Verdict { msgs, end }
}

/// Responses through the codec, each to a request of the given method (`HEAD` or not).
fn codec_responses(pieces: &[&[u8]], methods: &[&str]) -> Verdict {
    let mut buf: Vec<u8> = Vec::new();
    let mut spans = Vec::new();
    let mut msgs = Vec::new();
    let mut cur: Option<(BodyReader, Msg, bool)> = None;
    let mut eof_ends_body = false;
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match cur.as_mut() {
                None => {
                    if msgs.len() == methods.len() {
                        // Bytes after the last expected response: nobody asked for them.
                        break;
                    }
                    let head_req = methods[msgs.len()] == "HEAD";
                    match parse_response(&buf, MAX_HEAD, head_req, &mut spans) {
                        Ok(None) => break,
                        Err(_) => {
                            return Verdict {
                                msgs,
                                end: End::Refused(502),
                            }
                        }
                        Ok(Some(r)) if r.is_interim() => {
                            buf.drain(..r.len);
                        }
                        Ok(Some(r)) => {
                            let reader = BodyReader::response(r.body, r.len);
                            eof_ends_body = r.body == rproxy_worker::h1::head::RespBody::Close;
                            let msg = Msg {
                                head: r.status.to_string(),
                                body: Vec::new(),
                            };
                            cur = Some((reader, msg, r.reusable()));
                        }
                    }
                }
                Some((reader, msg, reusable)) => match reader.step(&buf) {
                    Ok(Step::Data(r)) => msg.body.extend_from_slice(&buf[r]),
                    Ok(Step::NeedMore) => {
                        buf.drain(..reader.pos);
                        reader.pos = 0;
                        break;
                    }
                    Ok(Step::Done) => {
                        buf.drain(..reader.pos);
                        let reusable = *reusable;
                        let (_, msg, _) = cur.take().expect("a message is being read");
                        msgs.push(msg);
                        if !reusable {
                            return Verdict { msgs, end: End::Ok };
                        }
                    }
                    Err(_) => {
                        return Verdict {
                            msgs,
                            end: End::BadBody,
                        }
                    }
                },
            }
        }
    }
    // The downstream closed: a close-delimited body ends here.
    if eof_ends_body {
        if let Some((_, msg, _)) = cur.take() {
            msgs.push(msg);
            return Verdict { msgs, end: End::Ok };
        }
    }
    let end = if cur.is_none() && msgs.len() == methods.len() {
        End::Ok
    } else {
        End::Cut
    };
    Verdict { msgs, end }
}

// ------------------------------------------------------------------ hyper's side

/// Requests through a hyper 1.x server connection: the service records each request and its
/// whole body, and answers 200.
async fn hyper_requests(pieces: Vec<Vec<u8>>) -> Verdict {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let seen: Arc<Mutex<Vec<Msg>>> = Arc::default();
    let seen2 = seen.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let seen = seen2.clone();
        async move {
            let head = format!("{} {}", req.method(), req.uri());
            let body = req.into_body().collect().await?.to_bytes().to_vec();
            seen.lock().expect("not poisoned").push(Msg { head, body });
            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    let conn = tokio::spawn(async move {
        hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service)
            .await
    });
    for p in &pieces {
        if client.write_all(p).await.is_err() {
            break; // hyper closed the connection (it refused something)
        }
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
    let _ = client.shutdown().await;
    let _ = client.read_to_end(&mut Vec::new()).await;
    let result = conn.await.expect("the connection task does not panic");
    let msgs = seen.lock().expect("not poisoned").clone();
    let end = match result {
        Ok(()) => End::Ok,
        Err(e) if e.is_parse_too_large() => End::Refused(431),
        Err(e) if e.is_parse() => End::Refused(400),
        Err(e) if e.is_incomplete_message() => End::Cut,
        // The service's error: its request body failed (bad chunked framing, or cut).
        Err(e) if e.is_user() => {
            if caused_by_cut(&e) {
                End::Cut
            } else {
                End::BadBody
            }
        }
        Err(e) => panic!("unexpected hyper error {e:?}"),
    };
    Verdict { msgs, end }
}

/// Whether a hyper error comes from a body cut short (rather than refused).
fn caused_by_cut(e: &hyper::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message())
            || err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Responses through a hyper 1.x client connection: one request per expected response (GET
/// or HEAD), sent when the previous response has been read; the fake downstream writes the
/// bytes of response k (split where the pieces say) after it has read request k, and closes
/// after the last.
async fn hyper_responses(
    stream: Vec<u8>,
    bounds: Vec<usize>,
    split: usize,
    methods: Vec<String>,
) -> Verdict {
    let (client_io, mut server) = tokio::io::duplex(1 << 20);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
        hyper_util::rt::TokioIo::new(client_io),
    )
    .await
    .expect("handshake over a duplex stream");
    let conn = tokio::spawn(conn);
    let n = methods.len();
    let downstream = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for k in 0..n {
            // Wait for request k (heads only: find its end). The runtime's clock is paused: the
            // sleep ends only when nothing else can run, i.e. when the client waits for bytes
            // of the previous response that the codec's reading says are not there. Then the
            // downstream closes, as a real one would at its timeout.
            loop {
                let heads = got.windows(4).filter(|w| w == b"\r\n\r\n").count();
                if heads > k {
                    break;
                }
                tokio::select! {
                    r = server.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(m) => got.extend_from_slice(&buf[..m]),
                    },
                    () = tokio::time::sleep(Duration::from_secs(60)) => {
                        let _ = server.shutdown().await;
                        return;
                    }
                }
            }
            let (from, to) = (bounds[k], bounds[k + 1]);
            let parts: Vec<&[u8]> = if split > from && split < to {
                vec![&stream[from..split], &stream[split..to]]
            } else {
                vec![&stream[from..to]]
            };
            for p in parts {
                if server.write_all(p).await.is_err() {
                    return;
                }
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            }
        }
        let _ = server.shutdown().await;
        // Keep reading until the client is gone, so that it never blocks on a full pipe.
        while let Ok(m) = server.read(&mut buf).await {
            if m == 0 {
                break;
            }
        }
    });
    let mut msgs = Vec::new();
    let mut end = End::Ok;
    for m in &methods {
        let req = Request::builder()
            .method(m.as_str())
            .uri("/")
            .header("host", "d.test")
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                end = if e.is_parse() || e.is_parse_status() {
                    End::Refused(502)
                } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
                    End::Cut
                } else {
                    panic!("unexpected hyper client error {e:?}")
                };
                break;
            }
        };
        let status = resp.status().as_u16().to_string();
        match resp.into_body().collect().await {
            Ok(b) => msgs.push(Msg {
                head: status,
                body: b.to_bytes().to_vec(),
            }),
            Err(e) => {
                end = if e.is_incomplete_message() {
                    End::Cut
                } else {
                    End::BadBody
                };
                break;
            }
        }
        if sender.ready().await.is_err() {
            // Not reusable (close-delimited, `Connection: close`, HTTP/1.0): no more requests.
            break;
        }
    }
    drop(sender);
    let _ = conn.await;
    let _ = downstream.await;
    Verdict { msgs, end }
}

// ------------------------------------------------------------------ generation

/// xorshift64*: deterministic, no dependency.
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
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Why the codec may refuse what hyper accepts (DESIGN sections 7 and 8): the tag the
/// generator puts on a message, and the reason.
const STRICTER: &[(&str, &str)] = &[
    ("cl+te", "Content-Length and Transfer-Encoding together: refused, not resolved (smuggling)"),
    ("te-not-chunked", "a request Transfer-Encoding other than one `chunked` line: refused"),
    ("te-http10", "Transfer-Encoding on HTTP/1.0: refused"),
    ("cl-list", "a Content-Length list (`5, 5`): refused even when the values agree"),
    ("no-host", "HTTP/1.1 without Host: refused"),
    ("two-hosts", "more than one Host: refused"),
    ("bad-host", "a Host with whitespace, `/`, `?`, `#`, `@` or `\\`, or empty: refused"),
    ("bad-target", "a target not origin-form, http(s) absolute-form without userinfo, or `*` with OPTIONS: refused"),
    ("chunk-lf", "a chunked body with bare LF line ends: refused (CRLF only)"),
    ("chunk-huge", "a chunk size above i64::MAX: refused"),
    ("resp-cl-list", "a response Content-Length list (`5, 5`): 502"),
    ("resp-cl-differ", "differing response Content-Length lines: 502 even where HEAD, 204 or 304 means no body (hyper ignores them there)"),
];

/// Where the codec accepts what hyper refuses: not on purpose. Findings for the codec's owner,
/// listed so that the test names them (and fails on any other class) until they are fixed;
/// then delete the line and the test proves the fix.
const LOOSER: &[(&str, &str)] = &[];

/// One generated message: its bytes and the tags of what it contains.
struct Gen {
    bytes: Vec<u8>,
    tags: Vec<&'static str>,
    /// The message may make the other side's connection end (HTTP/1.0, close, cut): nothing
    /// is generated after it.
    last: bool,
}

fn chunked_body(rng: &mut Rng, tags: &mut Vec<&'static str>) -> Vec<u8> {
    let mut b = Vec::new();
    let eol: &[u8] = if rng.chance(8) {
        tags.push("chunk-lf");
        b"\n"
    } else {
        b"\r\n"
    };
    for _ in 0..rng.below(3) + 1 {
        let n = rng.below(12) + 1;
        if rng.chance(50) {
            b.extend_from_slice(format!("{n:x}").as_bytes());
        } else {
            b.extend_from_slice(format!("{n:X}").as_bytes());
        }
        if rng.chance(15) {
            b.extend_from_slice(b";ext=1");
        }
        b.extend_from_slice(eol);
        b.extend((0..n).map(|i| b'a' + (i % 26) as u8));
        b.extend_from_slice(eol);
    }
    match rng.below(12) {
        0 => {
            tags.push("chunk-huge");
            b.extend_from_slice(b"8000000000000000\r\n");
            return b;
        }
        1 => {
            // Bad hex: both refuse.
            b.extend_from_slice(b"zz\r\n");
            return b;
        }
        2 => {
            // Data not followed by CRLF: both refuse.
            b.extend_from_slice(b"3\r\nabcX\r\n");
            return b;
        }
        _ => {}
    }
    b.extend_from_slice(b"0");
    b.extend_from_slice(eol);
    if rng.chance(15) {
        b.extend_from_slice(b"X-Trailer: t");
        b.extend_from_slice(eol);
    }
    b.extend_from_slice(eol);
    b
}

fn gen_request(rng: &mut Rng) -> Gen {
    let mut tags = Vec::new();
    let mut last = false;
    let method = *rng.pick(&[
        "GET", "GET", "POST", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "get", "G(T",
    ]);
    // Mostly targets both accept, so that the framing classes are what decides.
    let target = if rng.chance(75) {
        *rng.pick(&[
            "/",
            "/a/b?c=d",
            "/x%20y",
            "//double",
            "http://h.test/p?q",
            "https://h.test:8443",
        ])
    } else {
        *rng.pick(&[
            "*",
            "http://u@h.test/",
            "ftp://h.test/",
            "h.test:80",
            "/a\x7fb",
            "/caf\u{e9}",
            "abc",
        ])
    };
    if target == "*" && method != "OPTIONS"
        || ["http://u@h.test/", "ftp://h.test/", "h.test:80", "abc"].contains(&target)
    {
        tags.push("bad-target");
    }
    let version = if rng.chance(85) {
        "HTTP/1.1"
    } else {
        *rng.pick(&["HTTP/1.0", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2"])
    };
    let http10 = version == "HTTP/1.0";
    let mut h: Vec<Vec<u8>> = Vec::new();
    let absolute = target.starts_with("http");
    match rng.below(16) {
        0 => {
            if !http10 && !absolute {
                tags.push("no-host");
            }
        }
        1 => {
            h.push(b"Host: a.test".to_vec());
            h.push(b"Host: b.test".to_vec());
            if !absolute {
                tags.push("two-hosts");
            }
        }
        2 => {
            h.push(
                rng.pick(&[&b"Host: a b"[..], b"Host: u@a", b"Host: a/b", b"Host:"])
                    .to_vec(),
            );
            if !absolute {
                tags.push("bad-host");
            }
        }
        _ => h.push(b"Host: a.test".to_vec()),
    }
    for _ in 0..rng.below(4) {
        h.push(
            rng.pick(&[
                &b"User-Agent: t/1"[..],
                b"Accept: */*",
                b"X-Dup: 1",
                b"X-Dup: 2",
                b"X-Empty:",
                b"X-Spaces:   v   ",
                b"Expect: 100-continue",
                b"x-lower: v",
            ])
            .to_vec(),
        );
    }
    // Bytes a parser must refuse, or must not trip over (both sides refuse these alike).
    if rng.chance(8) {
        h.push(
            rng.pick(&[
                &b"X Bad: v"[..],
                b"X-Ctl: a\x01b",
                b"X-Del: a\x7fb",
                b"X-Obs: a\r\n folded",
                b"X-Colon : v",
                b": novalue",
                b"X-Nul: a\x00b",
            ])
            .to_vec(),
        );
    }
    if rng.chance(10) {
        h.push(b"Connection: close".to_vec());
        last = true;
    } else if rng.chance(10) {
        h.push(b"Connection: keep-alive".to_vec());
    }
    if http10 && !h.iter().any(|l| l.starts_with(b"Connection: keep-alive")) {
        last = true;
    }
    let mut body = Vec::new();
    match rng.below(14) {
        0..=4 => {}
        5..=7 => {
            let n = rng.below(20);
            h.push(format!("Content-Length: {n}").into_bytes());
            body = vec![b'b'; n];
            if rng.chance(10) {
                // Cut: fewer body bytes than announced (the stream ends inside the body).
                body.truncate(n / 2);
                last = true;
            }
        }
        8 => {
            h.push(b"Content-Length: 3".to_vec());
            h.push(
                rng.pick(&[
                    &b"Content-Length: 3"[..],
                    b"Content-Length: 4",
                    b"content-length: 3",
                ])
                .to_vec(),
            );
            body = b"bbb".to_vec();
        }
        9 => {
            let v = *rng.pick(&["3, 3", "+3", "-1", "3 3", "0x3", "", "99999999999999999999"]);
            if v == "3, 3" {
                tags.push("cl-list");
            }
            h.push(format!("Content-Length: {v}").into_bytes());
            body = b"bbb".to_vec();
        }
        10 | 11 => {
            h.push(b"Transfer-Encoding: chunked".to_vec());
            if http10 {
                tags.push("te-http10");
            }
            body = chunked_body(rng, &mut tags);
        }
        12 => {
            let te = *rng.pick(&[
                "Chunked",
                "gzip, chunked",
                "chunked, gzip",
                "identity",
                "chunked\r\nTransfer-Encoding: chunked",
            ]);
            if te != "Chunked" {
                tags.push("te-not-chunked");
            } else if http10 {
                tags.push("te-http10");
            }
            h.push(format!("Transfer-Encoding: {te}").into_bytes());
            body = chunked_body(rng, &mut tags);
        }
        _ => {
            tags.push("cl+te");
            let (a, b) = (
                b"Content-Length: 4".to_vec(),
                b"Transfer-Encoding: chunked".to_vec(),
            );
            if rng.chance(50) {
                h.push(a);
                h.push(b);
            } else {
                h.push(b);
                h.push(a);
            }
            body = chunked_body(rng, &mut tags);
        }
    }
    if rng.chance(2) {
        // Past the 100 header lines both allow: 431 from both.
        h.extend((0..100).map(|i| format!("X-{i}: v").into_bytes()));
    }
    // Shuffle the header lines a little (order matters to nobody).
    for i in (1..h.len()).rev() {
        let j = rng.below(i + 1);
        h.swap(i, j);
    }
    let eol: &[u8] = if rng.chance(4) { b"\n" } else { b"\r\n" };
    let mut bytes = Vec::new();
    if rng.chance(5) {
        bytes.extend_from_slice(b"\r\n"); // a leading empty line (allowed before a request)
    }
    bytes.extend_from_slice(format!("{method} {target} {version}").as_bytes());
    bytes.extend_from_slice(eol);
    for l in &h {
        bytes.extend_from_slice(l);
        bytes.extend_from_slice(eol);
    }
    bytes.extend_from_slice(eol);
    bytes.extend_from_slice(&body);
    Gen { bytes, tags, last }
}

fn gen_response(rng: &mut Rng, method: &str) -> Gen {
    let mut tags = Vec::new();
    let mut last = false;
    let status = *rng.pick(&[200, 200, 200, 201, 204, 304, 404, 500, 100, 103, 99]);
    if status < 100 {
        tags.push("resp-status-below-100");
    }
    let version = *rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    let mut h: Vec<Vec<u8>> = vec![b"Server: o".to_vec()];
    let interim = (100..200).contains(&status);
    let no_body = method == "HEAD" || interim || status == 204 || status == 304;
    let mut body = Vec::new();
    if !interim {
        match rng.below(10) {
            0..=3 => {
                let n = rng.below(30);
                h.push(format!("Content-Length: {n}").into_bytes());
                if !no_body {
                    body = vec![b'r'; n];
                }
            }
            4 | 5 => {
                h.push(b"Transfer-Encoding: chunked".to_vec());
                if !no_body {
                    body = chunked_body(rng, &mut tags);
                }
            }
            6 => {
                h.push(b"Transfer-Encoding: gzip, chunked".to_vec());
                h.push(b"Content-Length: 7".to_vec());
                if !no_body {
                    body = chunked_body(rng, &mut tags);
                }
            }
            7 => {
                h.push(b"Content-Length: 2, 2".to_vec());
                tags.push("resp-cl-list");
                if !no_body {
                    body = b"rr".to_vec();
                }
            }
            8 => {
                h.push(b"Content-Length: 2".to_vec());
                h.push(b"Content-Length: 3".to_vec());
                tags.push("resp-cl-differ");
                if !no_body {
                    body = b"rr".to_vec();
                }
            }
            _ => {
                // No framing (or a coding other than chunked): read until the downstream closes.
                if rng.chance(50) {
                    h.push(b"Transfer-Encoding: gzip".to_vec());
                }
                if !no_body {
                    body = b"until-close".to_vec();
                    last = true;
                }
            }
        }
    }
    if !interim && rng.chance(10) {
        h.push(b"Connection: close".to_vec());
        last = true;
    }
    if version == "HTTP/1.0" && !interim {
        if rng.chance(50) {
            h.push(b"Connection: keep-alive".to_vec());
        } else {
            last = true;
        }
    }
    if rng.chance(5) {
        h.push(
            rng.pick(&[&b"X Bad: v"[..], b"X-Obs: a\r\n folded", b"X-Ctl: a\x01b"])
                .to_vec(),
        );
    }
    if version == "HTTP/1.0" && h.iter().any(|l| l.starts_with(b"Transfer-Encoding")) {
        tags.push("resp-te-http10");
    }
    let mut bytes = format!("{version} {status:03} Reason\r\n").into_bytes();
    for l in &h {
        bytes.extend_from_slice(l);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(&body);
    if interim {
        // The final response follows in the same exchange.
        let fin = gen_response(rng, method);
        bytes.extend_from_slice(&fin.bytes);
        tags.extend(fin.tags);
        last |= fin.last;
    }
    Gen { bytes, tags, last }
}

// ------------------------------------------------------------------ comparison

/// How a codec verdict and a hyper verdict relate.
fn judge(
    codec: &Verdict,
    hyper: &Verdict,
    tags: &[Vec<&'static str>],
) -> Result<Option<&'static str>, String> {
    if codec == hyper {
        return Ok(None);
    }
    let i = codec.msgs.len();
    // hyper accepted message i, or was still reading it when the bytes ended (a body longer
    // than the codec allows, e.g. a chunk size above i64::MAX), or refused it later than the
    // codec (in its body, where the codec refused its head).
    let hyper_took_it = hyper.msgs.len() > i
        || (hyper.msgs.len() == i && matches!(hyper.end, End::Cut | End::BadBody));
    let agreed_before = hyper_took_it && codec.msgs[..] == hyper.msgs[..i];
    let refused = matches!(codec.end, End::Refused(_) | End::BadBody);
    if agreed_before && refused {
        if let Some(tag) = tags[i]
            .iter()
            .find(|t| STRICTER.iter().any(|(s, _)| s == *t))
        {
            return Ok(Some(tag));
        }
    }
    let j = hyper.msgs.len();
    let hyper_refused = matches!(hyper.end, End::Refused(_) | End::BadBody);
    // The codec accepted the head hyper refused (it may still refuse the body: then both
    // refused the same message, at different places).
    let codec_took_it =
        codec.msgs.len() > j || (codec.msgs.len() == j && codec.end == End::BadBody);
    if hyper_refused && codec_took_it && codec.msgs[..j.min(codec.msgs.len())] == hyper.msgs[..] {
        if let Some(tag) = tags[j].iter().find(|t| LOOSER.iter().any(|(s, _)| s == *t)) {
            return Ok(Some(tag));
        }
    }
    Err(format!(
        "codec {codec:?}\nhyper {hyper:?}\ntags of each message {tags:?}"
    ))
}

fn report(
    what: &str,
    streams: usize,
    splits: usize,
    agreed: usize,
    classes: &BTreeMap<&str, usize>,
) {
    println!("{streams} {what} streams, {splits} splits: {agreed} identical verdicts; the others:");
    for (class, n) in classes {
        let why = STRICTER
            .iter()
            .chain(LOOSER)
            .find(|(s, _)| s == class)
            .map_or("", |(_, w)| *w);
        println!("  {n:4} {class}: {why}");
    }
}

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a tokio runtime")
}

#[test]
fn requests_agree_with_hyper_at_every_split() {
    let rt = runtime();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut streams, mut agreed, mut splits) = (0, 0, 0);
    // What both sides agreed on, to show the generator reaches it.
    let (mut too_large, mut pipelined, mut with_body) = (0, 0, 0);
    for _ in 0..300 {
        // 2 to 4 pipelined requests (fewer when one ends the connection).
        let mut stream = Vec::new();
        let mut tags = Vec::new();
        for _ in 0..rng.below(3) + 2 {
            let g = gen_request(&mut rng);
            stream.extend_from_slice(&g.bytes);
            tags.push(g.tags);
            if g.last {
                break;
            }
        }
        tags.push(Vec::new());
        streams += 1;
        let whole_codec = codec_requests(&[&stream]);
        let whole_hyper = rt.block_on(hyper_requests(vec![stream.clone()]));
        if whole_codec == whole_hyper {
            too_large += usize::from(whole_codec.end == End::Refused(431));
            pipelined += usize::from(whole_codec.msgs.len() >= 2);
            with_body += usize::from(whole_codec.msgs.iter().any(|m| !m.body.is_empty()));
        }
        match judge(&whole_codec, &whole_hyper, &tags) {
            Ok(None) => agreed += 1,
            Ok(Some(class)) => *classes.entry(class).or_default() += 1,
            Err(e) => panic!("codec and hyper disagree on {:?}:\n{e}", show(&stream)),
        }
        for k in 1..stream.len() {
            splits += 1;
            let c = codec_requests(&[&stream[..k], &stream[k..]]);
            assert_eq!(
                c,
                whole_codec,
                "codec verdict changes when split at {k}: {:?}",
                show(&stream)
            );
            let h = rt.block_on(hyper_requests(vec![
                stream[..k].to_vec(),
                stream[k..].to_vec(),
            ]));
            assert_eq!(
                h,
                whole_hyper,
                "hyper verdict changes when split at {k}: {:?}",
                show(&stream)
            );
        }
    }
    report("request", streams, splits, agreed, &classes);
    println!("  agreed: {too_large} refused as too large (431), {pipelined} with 2+ pipelined requests, {with_body} with a body");
    assert!(
        too_large > 0 && pipelined > 10 && with_body > 10,
        "the generator misses a case"
    );
    assert!(
        agreed > streams / 3,
        "too few streams both accept alike: the generator is off"
    );
    for must in ["cl+te", "te-not-chunked", "no-host", "two-hosts"] {
        assert!(
            classes.contains_key(must),
            "no stream of class {must} was generated"
        );
    }
}

#[test]
fn responses_agree_with_hyper_at_every_split() {
    let rt = runtime();
    let mut rng = Rng(0x5eed_1234_abcd_0002);
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut streams, mut agreed, mut splits) = (0, 0, 0);
    let (mut several, mut until_close) = (0, 0);
    for _ in 0..250 {
        let mut stream = Vec::new();
        let mut bounds = vec![0];
        let mut tags = Vec::new();
        let mut methods = Vec::new();
        for _ in 0..rng.below(3) + 1 {
            let m = if rng.chance(20) { "HEAD" } else { "GET" };
            let g = gen_response(&mut rng, m);
            stream.extend_from_slice(&g.bytes);
            bounds.push(stream.len());
            tags.push(g.tags);
            methods.push(m.to_string());
            if g.last {
                break;
            }
        }
        tags.push(Vec::new());
        streams += 1;
        let ms: Vec<&str> = methods.iter().map(String::as_str).collect();
        let whole_codec = codec_responses(&[&stream], &ms);
        let run = |split| {
            rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(600),
                    hyper_responses(stream.clone(), bounds.clone(), split, methods.clone()),
                )
                .await
                .unwrap_or_else(|_| panic!("hyper client hung on {:?}", show(&stream)))
            })
        };
        let whole_hyper = run(0);
        if whole_codec == whole_hyper {
            several += usize::from(whole_codec.msgs.len() >= 2);
            until_close += usize::from(stream.ends_with(b"until-close"));
        }
        match judge(&whole_codec, &whole_hyper, &tags) {
            Ok(None) => agreed += 1,
            Ok(Some(class)) => *classes.entry(class).or_default() += 1,
            Err(e) => panic!(
                "codec and hyper disagree on {:?} (requests {methods:?}):\n{e}",
                show(&stream)
            ),
        }
        for k in 1..stream.len() {
            splits += 1;
            let c = codec_responses(&[&stream[..k], &stream[k..]], &ms);
            assert_eq!(
                c,
                whole_codec,
                "codec verdict changes when split at {k}: {:?}",
                show(&stream)
            );
            let h = run(k);
            assert_eq!(
                h,
                whole_hyper,
                "hyper verdict changes when split at {k}: {:?}",
                show(&stream)
            );
        }
    }
    report("response", streams, splits, agreed, &classes);
    println!("  agreed: {several} with 2+ responses on one connection, {until_close} ending with a close-delimited body");
    assert!(
        several > 10 && until_close > 5,
        "the generator misses a case"
    );
    assert!(
        agreed > streams / 2,
        "too few streams both accept alike: the generator is off"
    );
}
