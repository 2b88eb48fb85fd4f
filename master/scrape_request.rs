//! The request of a metrics scrape, parsed: the master's only HTTP parser, so it is tiny,
//! strict, bounded ([`MAX_REQUEST`]) and pure (bytes in, verdict out; no I/O), for tests and
//! fuzzing. Only `GET /metrics` (a query string is ignored) over HTTP/1.0 or 1.1 is served;
//! headers are read past, not interpreted (no keep-alive, no body).

/// The largest request head accepted.
pub const MAX_REQUEST: usize = 8 * 1024;

/// What the bytes received so far are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No complete head yet (and below [`MAX_REQUEST`]): read more.
    Incomplete,
    /// `GET /metrics`: 200.
    Metrics,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
    /// Not an HTTP/1.x request head, or too large: 400.
    BadRequest,
}

impl Verdict {
    /// The status line and the body of an answer other than the metrics.
    pub fn error_answer(self) -> (&'static str, &'static str) {
        match self {
            Verdict::NotFound => ("404 Not Found", "only /metrics is served here\n"),
            Verdict::MethodNotAllowed => ("405 Method Not Allowed", "only GET is served here\n"),
            _ => ("400 Bad Request", "bad request\n"),
        }
    }
}

/// Judge the bytes received so far on a scrape connection.
pub fn parse(buf: &[u8]) -> Verdict {
    let Some(end) = head_end(buf) else {
        return if buf.len() >= MAX_REQUEST || buf.first().is_some_and(|b| !b.is_ascii_uppercase()) {
            Verdict::BadRequest
        } else {
            Verdict::Incomplete
        };
    };
    if end > MAX_REQUEST {
        return Verdict::BadRequest;
    }
    let head = &buf[..end];
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Verdict::BadRequest;
    };
    if method.is_empty() || !method.iter().all(|b| b.is_ascii_uppercase()) {
        return Verdict::BadRequest;
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Verdict::BadRequest;
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Verdict::BadRequest;
    }
    // Header lines: printable ASCII (and tabs) only; no obs-fold, no bare CR inside.
    let headers = &head[line_end..];
    if headers
        .iter()
        .any(|&b| !(b.is_ascii_graphic() || b == b' ' || b == b'\t' || b == b'\r' || b == b'\n'))
    {
        return Verdict::BadRequest;
    }
    if method != b"GET" {
        return Verdict::MethodNotAllowed;
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    if path == b"/metrics" {
        Verdict::Metrics
    } else {
        Verdict::NotFound
    }
}

/// The length of the head including its blank line (`\r\n\r\n`, or `\n\n` from lax clients).
fn head_end(buf: &[u8]) -> Option<usize> {
    let scan = &buf[..buf.len().min(MAX_REQUEST + 4)];
    (0..scan.len()).find_map(|i| {
        if scan[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if scan[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let cases: &[(&[u8], Verdict)] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Verdict::Metrics,
            ),
            (b"GET /metrics HTTP/1.0\r\n\r\n", Verdict::Metrics),
            (b"GET /metrics?x=1 HTTP/1.1\n\n", Verdict::Metrics),
            (b"GET / HTTP/1.1\r\n\r\n", Verdict::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Verdict::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Verdict::MethodNotAllowed),
            (b"HEAD /metrics HTTP/1.1\r\n\r\n", Verdict::MethodNotAllowed),
            (b"GET /metrics HTTP/2.0\r\n\r\n", Verdict::BadRequest),
            (b"GET /metrics\r\n\r\n", Verdict::BadRequest),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", Verdict::BadRequest),
            (b"GET /metrics HTTP/1.1 x\r\n\r\n", Verdict::BadRequest),
            (b"get /metrics HTTP/1.1\r\n\r\n", Verdict::BadRequest),
            (
                b"GET /metrics HTTP/1.1\r\nX: \x01\r\n\r\n",
                Verdict::BadRequest,
            ),
            (b"\x16\x03\x01\x02\x00", Verdict::BadRequest),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", Verdict::Incomplete),
            (b"", Verdict::Incomplete),
            (b"GE", Verdict::Incomplete),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), *want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn too_large_heads_are_refused_not_waited_for() {
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST, b'a');
        assert_eq!(parse(&big), Verdict::BadRequest);
        big.truncate(MAX_REQUEST - 10);
        assert_eq!(parse(&big), Verdict::Incomplete);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big), Verdict::Metrics);
        let mut over = big.clone();
        over.splice(30..30, std::iter::repeat(b'a').take(20));
        assert_eq!(parse(&over), Verdict::BadRequest);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"GET /metrics HTTP/1.1\r\n \x00\xff"[(x % 26) as usize]
                })
                .collect();
            let _ = parse(&bytes);
        }
    }
}
