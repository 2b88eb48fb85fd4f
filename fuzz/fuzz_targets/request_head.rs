//! `h1::head::parse_request` on any bytes. Besides "no panic": a complete head lies within the
//! input and its spans within the head; the bytes after it do not change the verdict; every
//! shorter prefix of a complete head is "incomplete" (so a head that arrives in pieces, split
//! anywhere, gets the same verdict as in one piece); "incomplete" is never returned at or past
//! the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rproxy_worker::h1::head::{
    parse_request, HeadError, HeaderSpan, ReqBody, Span, Target, MAX_CONTENT_LENGTH,
};

fn within(s: Span, len: usize) {
    assert!(
        s.start <= s.end && s.end as usize <= len,
        "{s:?} outside {len}"
    );
}

fuzz_target!(|input: &[u8]| {
    // The first byte picks the limit: small limits reach TooLarge, the default does not.
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    let max = [64, 256, 8192, 65536][usize::from(sel & 3)];
    let mut hs: Vec<HeaderSpan> = Vec::new();
    let verdict = parse_request(data, max, &mut hs);
    match verdict {
        Ok(Some(h)) => {
            assert!(h.len <= data.len() && h.len <= max);
            within(h.method, h.len);
            within(h.target, h.len);
            assert!(h.minor <= 1);
            for s in &hs {
                within(s.name, h.len);
                within(s.value, h.len);
                assert!(!s.name.is_empty());
            }
            if let ReqBody::Length(n) = h.body {
                assert!(n > 0 && n <= MAX_CONTENT_LENGTH);
            }
            if let Some(host) = h.host {
                within(host, h.len);
            }
            if let Target::Absolute { authority, path } = h.form {
                within(authority, h.len);
                within(path, h.len);
            }
            // The head alone gives the same head: trailing bytes (a body, the next request)
            // never change it.
            let mut hs2 = Vec::new();
            assert_eq!(parse_request(&data[..h.len], max, &mut hs2), Ok(Some(h)));
            assert_eq!(hs, hs2);
            // Every prefix is incomplete: the verdict does not depend on where reads split.
            let step = (h.len / 64).max(1);
            for k in (0..h.len).step_by(step) {
                assert_eq!(
                    parse_request(&data[..k], max, &mut hs2),
                    Ok(None),
                    "prefix of {k} bytes of a {}-byte head",
                    h.len
                );
            }
        }
        Ok(None) => assert!(data.len() < max, "incomplete at {} >= {max}", data.len()),
        Err(HeadError::Refused { method, target, .. }) => {
            within(method, data.len());
            within(target, data.len());
        }
        Err(HeadError::TooLarge | HeadError::Malformed(_)) => {}
    }
    // Deterministic: the same bytes, the same verdict.
    assert_eq!(parse_request(data, max, &mut Vec::new()), verdict);
});
