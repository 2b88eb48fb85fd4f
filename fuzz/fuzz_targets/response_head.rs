//! `h1::head::parse_response` on any bytes: as request_head (spans within the head, trailing
//! bytes and split points change nothing, no "incomplete" at the limit), plus the framing
//! rules that cannot depend on the headers: no body for HEAD, 1xx, 204 and 304.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rproxy_worker::h1::head::{parse_response, HeaderSpan, RespBody, Span, MAX_CONTENT_LENGTH};

fn within(s: Span, len: usize) {
    assert!(
        s.start <= s.end && s.end as usize <= len,
        "{s:?} outside {len}"
    );
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    let max = [64, 256, 8192, 65536][usize::from(sel & 3)];
    let head_request = sel & 4 != 0;
    let mut hs: Vec<HeaderSpan> = Vec::new();
    let verdict = parse_response(data, max, head_request, &mut hs);
    match verdict {
        Ok(Some(r)) => {
            assert!(r.len <= data.len() && r.len <= max);
            within(r.reason, r.len);
            assert!(r.minor <= 1);
            // Three digits (httparse), and at least 100 (as hyper).
            assert!((100..=999).contains(&r.status));
            for s in &hs {
                within(s.name, r.len);
                within(s.value, r.len);
            }
            if head_request || (100..200).contains(&r.status) || r.status == 204 || r.status == 304
            {
                assert_eq!(r.body, RespBody::None);
            }
            if let RespBody::Length(n) = r.body {
                assert!(n > 0 && n <= MAX_CONTENT_LENGTH);
            }
            if r.body == RespBody::Close {
                assert!(!r.reusable());
            }
            let mut hs2 = Vec::new();
            assert_eq!(
                parse_response(&data[..r.len], max, head_request, &mut hs2),
                Ok(Some(r))
            );
            assert_eq!(hs, hs2);
            let step = (r.len / 64).max(1);
            for k in (0..r.len).step_by(step) {
                assert_eq!(
                    parse_response(&data[..k], max, head_request, &mut hs2),
                    Ok(None),
                    "prefix of {k} bytes of a {}-byte head",
                    r.len
                );
            }
        }
        Ok(None) => assert!(data.len() < max),
        Err(_) => {}
    }
    assert_eq!(
        parse_response(data, max, head_request, &mut Vec::new()),
        verdict
    );
});
