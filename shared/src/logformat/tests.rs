//! Unit tests of the access-log format compiler and renderer.

use super::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::time::Duration;

// ---- allocation counting (per thread, so parallel tests don't interfere)

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        bump();
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        bump();
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        bump();
        System.realloc(p, l, n)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---- helpers

/// Vec-backed headers; matches names case-insensitively and records
/// every name it was asked for.
struct Hdrs {
    list: Vec<(&'static str, &'static [u8])>,
    asked: RefCell<Vec<String>>,
}

impl Hdrs {
    fn new(list: &[(&'static str, &'static [u8])]) -> Self {
        Hdrs {
            list: list.to_vec(),
            asked: RefCell::new(Vec::new()),
        }
    }
}

impl HeaderLookup for Hdrs {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.asked.borrow_mut().push(name.to_string());
        self.list
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Case-sensitive lookup holding lowercase names, like http::HeaderMap.
struct LowerOnly(Vec<(&'static str, &'static [u8])>);

impl HeaderLookup for LowerOnly {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_887_000) // 2026-11-28 17:30:00 UTC
}

fn render(fmt: &str, rec: &Record<'_>) -> String {
    let f = LogFormat::compile(fmt).expect("compiles");
    let mut out = Vec::new();
    f.render(rec, &mut out);
    String::from_utf8(out).expect("log lines are ASCII")
}

fn one(fmt: &str, rec: &Record<'_>) -> String {
    let s = render(fmt, rec);
    assert!(s.ends_with('\n'), "{s:?}");
    s[..s.len() - 1].to_string()
}

fn err(fmt: &str) -> String {
    LogFormat::compile(fmt).expect_err("must not compile")
}

fn empty() -> Record<'static> {
    Record::new(t0())
}

// ---- every variable

#[test]
fn src_v4_and_v6() {
    let mut r = empty();
    r.src = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    assert_eq!(one("{SRC}", &r), "192.0.2.7");
    r.src = Some("2001:db8::1".parse().unwrap());
    assert_eq!(one("{SRC}", &r), "2001:db8::1");
    r.src = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(one("{SRC}", &r), "::1");
}

#[test]
fn proxy_v4_and_v6() {
    let mut r = empty();
    r.proxy = Some("10.0.0.5:8080".parse().unwrap());
    assert_eq!(one("{PROXY}", &r), "10.0.0.5:8080");
    r.proxy = Some("[2001:db8::5]:443".parse().unwrap());
    assert_eq!(one("{PROXY}", &r), "[2001:db8::5]:443");
    r.proxy = Some(SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::LOCALHOST,
        80,
        0,
        0,
    )));
    assert_eq!(one("{PROXY}", &r), "[::1]:80");
}

#[test]
fn request_line_fields() {
    let r = Record {
        method: Some("GET"),
        uri: Some(b"/a/b?c=d&e=%20"),
        proto: Some("HTTP/1.1"),
        ..empty()
    };
    assert_eq!(
        one("{METH} {URI} {PROTO}", &r),
        "GET /a/b?c=d&e=%20 HTTP/1.1"
    );
}

#[test]
fn numbers() {
    let r = Record {
        status: Some(404),
        ds_sport: Some(54321),
        us_sport: Some(0),
        ..empty()
    };
    assert_eq!(one("{STATUS} {DS_SPORT} {US_SPORT}", &r), "404 54321 0");
    let r = Record {
        status: Some(u16::MAX),
        ..empty()
    };
    assert_eq!(one("{STATUS}", &r), "65535");
}

#[test]
fn rule() {
    let r = Record {
        rule: Some("api-v2"),
        ..empty()
    };
    assert_eq!(one("rule={RULE}", &r), "rule=api-v2");
}

#[test]
fn request_headers_ua_ref_host_us_hdr() {
    let h = Hdrs::new(&[
        ("User-Agent", b"curl/8.5.0"),
        ("Referer", b"https://example.com/"),
        ("Host", b"example.org"),
        ("Accept-Encoding", b"gzip, br"),
    ]);
    let r = Record {
        req_headers: Some(&h),
        ..empty()
    };
    assert_eq!(
        one("{UA}|{REF}|{HOST}|{US_HDR}:'Accept-Encoding'", &r),
        "curl/8.5.0|https://example.com/|example.org|gzip, br"
    );
}

#[test]
fn response_header_ds_hdr() {
    let req = Hdrs::new(&[("Content-Type", b"request/side")]);
    let resp = Hdrs::new(&[("Content-Type", b"text/html; charset=utf-8")]);
    let r = Record {
        req_headers: Some(&req),
        resp_headers: Some(&resp),
        ..empty()
    };
    assert_eq!(
        one("{DS_HDR}:'Content-Type' {US_HDR}:'Content-Type'", &r),
        "text/html; charset=utf-8 request/side"
    );
}

#[test]
fn seed_example_format() {
    let req = Hdrs::new(&[
        ("User-Agent", b"Mozilla/5.0"),
        ("Host", b"example.org"),
        ("Accept-Encoding", b"gzip"),
    ]);
    let resp = Hdrs::new(&[("Content-Type", b"text/plain")]);
    let r = Record {
        src: Some("203.0.113.9".parse().unwrap()),
        proxy: Some("127.0.0.1:8081".parse().unwrap()),
        method: Some("GET"),
        uri: Some(b"/dir/x.html"),
        proto: Some("HTTP/1.1"),
        status: Some(200),
        req_headers: Some(&req),
        resp_headers: Some(&resp),
        ..empty()
    };
    let fmt = "{SRC} {PROXY} [{TS}] \"{METH} {URI} {PROTO}\" - {STATUS} - \"{REF}\" - \"{UA}\" - \"{HOST}\" {US_HDR}:'Accept-Encoding' - {DS_HDR}:'Content-Type'";
    let line = one(fmt, &r);
    let re = regex::Regex::new(
        r#"^203\.0\.113\.9 127\.0\.0\.1:8081 \[[^\]]+\] "GET /dir/x\.html HTTP/1\.1" - 200 - "-" - "Mozilla/5\.0" - "example\.org" gzip - text/plain$"#,
    )
    .unwrap();
    assert!(re.is_match(&line), "{line}");
}

// ---- missing and empty values

#[test]
fn everything_missing_prints_dash() {
    let fmt = "{SRC} {PROXY} {UA} {METH} {URI} {PROTO} {STATUS} {REF} {HOST} {DS_SPORT} {US_SPORT} {RULE} {US_HDR}:'x' {DS_HDR}:'y'";
    assert_eq!(one(fmt, &empty()), "- - - - - - - - - - - - - -");
}

#[test]
fn absent_headers_print_dash() {
    let h = Hdrs::new(&[("Other", b"v")]);
    let r = Record {
        req_headers: Some(&h),
        resp_headers: Some(&h),
        ..empty()
    };
    assert_eq!(
        one("{UA} {REF} {HOST} {US_HDR}:'x-a' {DS_HDR}:'x-b'", &r),
        "- - - - -"
    );
}

#[test]
fn empty_values_print_dash() {
    let h = Hdrs::new(&[("User-Agent", b""), ("X-E", b"")]);
    let r = Record {
        method: Some(""),
        uri: Some(b""),
        proto: Some(""),
        rule: Some(""),
        req_headers: Some(&h),
        resp_headers: Some(&h),
        ..empty()
    };
    assert_eq!(
        one(
            "{METH} {URI} {PROTO} {RULE} {UA} {US_HDR}:'x-e' {DS_HDR}:'x-e'",
            &r
        ),
        "- - - - - - -"
    );
}

// ---- escaping

#[test]
fn host_with_format_syntax_is_data() {
    let h = Hdrs::new(&[("Host", b"%s{SRC}\n")]);
    let r = Record {
        src: Some("192.0.2.1".parse().unwrap()),
        req_headers: Some(&h),
        ..empty()
    };
    assert_eq!(one("{HOST}", &r), r"%s{SRC}\x0A");
}

#[test]
fn escapes_control_quote_backslash_del_and_high_bytes() {
    let r = Record {
        uri: Some(b"/a\"b\\c\rd\ne\tf\x00g\x1fh\x7fi\x80j\xffk %n %s"),
        ..empty()
    };
    assert_eq!(
        one("{URI}", &r),
        r#"/a\x22b\x5Cc\x0Dd\x0Ae\x09f\x00g\x1Fh\x7Fi\x80j\xFFk %n %s"#
    );
}

#[test]
fn escapes_utf8_bytewise() {
    let r = Record {
        rule: Some("é"),
        ..empty()
    };
    assert_eq!(one("{RULE}", &r), r"\xC3\xA9");
}

#[test]
fn every_text_field_is_escaped() {
    let h = Hdrs::new(&[
        ("User-Agent", b"u\"a"),
        ("Referer", b"r\"f"),
        ("Host", b"h\"o"),
        ("X", b"x\"y"),
    ]);
    let r = Record {
        method: Some("M\"E"),
        uri: Some(b"u\"r"),
        proto: Some("P\"R"),
        rule: Some("r\"u"),
        req_headers: Some(&h),
        resp_headers: Some(&h),
        ..empty()
    };
    let line = one(
        "{METH} {URI} {PROTO} {RULE} {UA} {REF} {HOST} {US_HDR}:'x' {DS_HDR}:'x'",
        &r,
    );
    assert!(!line.contains('"'), "{line}");
    assert_eq!(line.matches(r"\x22").count(), 9, "{line}");
}

#[test]
fn one_line_per_record_whatever_the_input() {
    let all: Vec<u8> = (0u8..=255).collect();
    let all: &'static [u8] = Box::leak(all.into_boxed_slice());
    let h = Hdrs::new(&[("User-Agent", all)]);
    let r = Record {
        uri: Some(all),
        req_headers: Some(&h),
        ..empty()
    };
    let f = LogFormat::compile("\"{URI}\" \"{UA}\"").unwrap();
    let mut out = Vec::new();
    f.render(&r, &mut out);
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    assert_eq!(out.last(), Some(&b'\n'));
    assert!(out[..out.len() - 1]
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b)));
    assert_eq!(out.iter().filter(|&&b| b == b'"').count(), 4);
}

// ---- compile errors

#[test]
fn unknown_variable_is_named_with_offset() {
    assert_eq!(
        err("{SRC} [{TS}] {FOO}"),
        "unknown variable {FOO} at byte 13"
    );
    assert_eq!(err("{FOO}"), "unknown variable {FOO} at byte 0");
    assert_eq!(err("abc {SRC_IP}"), "unknown variable {SRC_IP} at byte 4");
    assert_eq!(err("{_}"), "unknown variable {_} at byte 0");
}

#[test]
fn example_error_text_from_brief() {
    assert_eq!(
        err("{SRC} {PROXY} {FOO}"),
        "unknown variable {FOO} at byte 14"
    );
    assert_eq!(
        err("hello world {FOO}"),
        "unknown variable {FOO} at byte 12"
    );
}

#[test]
fn malformed_header_variables() {
    for v in ["US_HDR", "DS_HDR"] {
        let e = err(&format!("{{{v}}}"));
        assert!(
            e.contains(&format!("{{{v}}}")) && e.contains("at byte 0"),
            "{e}"
        );
        assert!(e.contains(":'header-name'"), "{e}");

        let e = err(&format!("x {{{v}}} y"));
        assert!(
            e.contains("at byte 2") && e.contains(":'header-name'"),
            "{e}"
        );

        let e = err(&format!("{{{v}}}:Host"));
        assert!(e.contains(":'header-name'"), "{e}");

        let e = err(&format!("{{{v}}}:\"Host\""));
        assert!(e.contains(":'header-name'"), "{e}");

        let e = err(&format!("{{{v}}}:''"));
        assert!(e.contains("empty header name"), "{e}");

        let e = err(&format!("{{{v}}}:'Host"));
        assert!(e.contains("unterminated") && e.contains(v), "{e}");

        let e = err(&format!("{{{v}}}:'"));
        assert!(e.contains("unterminated"), "{e}");

        let e = err(&format!("{{{v}}}:'X Y'"));
        assert!(e.contains("invalid character ' '") && e.contains(v), "{e}");

        let e = err(&format!("{{{v}}}:'Hé'"));
        assert!(e.contains("invalid character 'é'"), "{e}");

        let e = err(&format!("{{{v}}}:'a:b'"));
        assert!(e.contains("invalid character ':'"), "{e}");
    }
}

// ---- literal text

#[test]
fn literal_braces_and_lookalikes() {
    let r = Record {
        src: Some("192.0.2.1".parse().unwrap()),
        ..empty()
    };
    assert_eq!(one("{", &r), "{");
    assert_eq!(one("}", &r), "}");
    assert_eq!(one("{}", &r), "{}");
    assert_eq!(one("}{", &r), "}{");
    assert_eq!(one("{src}", &r), "{src}");
    assert_eq!(one("{Src}", &r), "{Src}");
    assert_eq!(one("{SRC", &r), "{SRC");
    assert_eq!(one("{SRC1}", &r), "{SRC1}");
    assert_eq!(one("{A-B}", &r), "{A-B}");
    assert_eq!(one("{ SRC }", &r), "{ SRC }");
    assert_eq!(one("{{SRC}}", &r), "{192.0.2.1}");
    assert_eq!(one("{{{SRC}", &r), "{{192.0.2.1");
    assert_eq!(one("{SRC}{SRC}", &r), "192.0.2.1192.0.2.1");
    assert_eq!(one("%s %d %n \\n", &r), "%s %d %n \\n");
    assert_eq!(one("ünïcode {SRC}", &r), "ünïcode 192.0.2.1");
}

#[test]
fn header_name_may_be_followed_by_text() {
    let h = Hdrs::new(&[("X-Id", b"42")]);
    let r = Record {
        req_headers: Some(&h),
        ..empty()
    };
    assert_eq!(one("[{US_HDR}:'X-Id']'", &r), "[42]'");
    assert_eq!(one("{US_HDR}:'X-Id'{US_HDR}:'X-Id'", &r), "4242");
}

#[test]
fn empty_format_is_just_newline() {
    assert_eq!(render("", &empty()), "\n");
}

#[test]
fn render_appends_to_existing_buffer() {
    let f = LogFormat::compile("{STATUS}").unwrap();
    let mut out = b"prev\n".to_vec();
    f.render(
        &Record {
            status: Some(200),
            ..empty()
        },
        &mut out,
    );
    f.render(&empty(), &mut out);
    assert_eq!(out, b"prev\n200\n-\n");
}

// ---- header lookup contract

#[test]
fn header_names_are_passed_lowercase() {
    let h = Hdrs::new(&[]);
    let r = Record {
        req_headers: Some(&h),
        resp_headers: Some(&h),
        ..empty()
    };
    one(
        "{UA}{REF}{HOST}{US_HDR}:'X-Forwarded-For'{DS_HDR}:'ETag'",
        &r,
    );
    assert_eq!(
        *h.asked.borrow(),
        ["user-agent", "referer", "host", "x-forwarded-for", "etag"]
    );
}

#[test]
fn header_lookup_is_case_insensitive() {
    // Stored upper case, asked mixed case: the Vec-backed lookup matches.
    let h = Hdrs::new(&[("ACCEPT-ENCODING", b"gzip"), ("user-agent", b"ua")]);
    let r = Record {
        req_headers: Some(&h),
        ..empty()
    };
    assert_eq!(one("{US_HDR}:'Accept-Encoding' {UA}", &r), "gzip ua");
    // A HeaderMap-like lookup storing lowercase names only works because
    // the compiler lowercases the configured name.
    let l = LowerOnly(vec![("x-request-id", b"abc"), ("host", b"h")]);
    let r = Record {
        req_headers: Some(&l),
        resp_headers: Some(&l),
        ..empty()
    };
    assert_eq!(
        one("{US_HDR}:'X-REQUEST-ID' {DS_HDR}:'x-Request-Id' {HOST}", &r),
        "abc abc h"
    );
}

#[test]
fn uses_header_flags() {
    let f = |s: &str| {
        let f = LogFormat::compile(s).unwrap();
        (f.uses_request_headers(), f.uses_response_headers())
    };
    assert_eq!(f("{SRC} {TS} {URI} {STATUS} {RULE}"), (false, false));
    assert_eq!(f("{UA}"), (true, false));
    assert_eq!(f("{REF}"), (true, false));
    assert_eq!(f("{HOST}"), (true, false));
    assert_eq!(f("{US_HDR}:'a'"), (true, false));
    assert_eq!(f("{DS_HDR}:'a'"), (false, true));
    assert_eq!(f("{UA} {DS_HDR}:'a'"), (true, true));
    assert_eq!(f("{ua} {ds_hdr}:'a'"), (false, false));
}

// ---- timestamps

const TS_RE: &str = r"^(\d{2})/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$";

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a rendered {TS} back to unix seconds using its own offset.
fn parse_ts(s: &str) -> i64 {
    let re = regex::Regex::new(TS_RE).unwrap();
    let c = re.captures(s).unwrap_or_else(|| panic!("bad TS {s:?}"));
    let n = |i: usize| c[i].parse::<i64>().unwrap();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == &c[2])
    .unwrap() as i64
        + 1;
    let local = days_from_civil(n(3), month, n(1)) * 86_400 + n(4) * 3600 + n(5) * 60 + n(6);
    let off = (n(8) * 3600 + n(9) * 60) * if &c[7] == "-" { -1 } else { 1 };
    local - off
}

#[test]
fn ts_matches_pattern_and_round_trips() {
    for secs in [
        0i64,
        1_795_887_000,
        1_800_000_000,
        951_782_400,
        4_102_444_799,
    ] {
        let r = Record::new(UNIX_EPOCH + Duration::from_secs(secs as u64));
        let s = one("{TS}", &r);
        assert_eq!(parse_ts(&s), secs, "{s}");
    }
    // Whole second: sub-second part ignored.
    let r = Record::new(t0() + Duration::from_millis(999));
    assert_eq!(parse_ts(&one("{TS}", &r)), 1_795_887_000);
}

#[test]
fn ts_in_brackets_like_clf() {
    let s = one("[{TS}]", &empty());
    let re =
        regex::Regex::new(r"^\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]$").unwrap();
    assert!(re.is_match(&s), "{s}");
}

#[test]
fn ts_before_epoch_does_not_panic() {
    let r = Record::new(UNIX_EPOCH - Duration::from_millis(1500));
    let s = one("{TS}", &r);
    assert_eq!(parse_ts(&s), -2, "{s}");
}

fn tm(year: i32, mon: i32, mday: i32, h: i32, m: i32, s: i32, off: i64) -> libc::tm {
    // SAFETY: all-zero is a valid `tm`.
    let mut t: libc::tm = unsafe { std::mem::zeroed() };
    t.tm_year = year - 1900;
    t.tm_mon = mon;
    t.tm_mday = mday;
    t.tm_hour = h;
    t.tm_min = m;
    t.tm_sec = s;
    t.tm_gmtoff = off as libc::c_long;
    t
}

fn fmt_tm(t: &libc::tm) -> String {
    let mut buf = [0u8; TS_MAX];
    let n = format_tm(t, &mut buf);
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn format_tm_offsets_and_padding() {
    assert_eq!(
        fmt_tm(&tm(2026, 10, 28, 17, 30, 0, 0)),
        "28/Nov/2026:17:30:00 +0000"
    );
    assert_eq!(
        fmt_tm(&tm(2026, 0, 1, 0, 0, 0, 3600)),
        "01/Jan/2026:00:00:00 +0100"
    );
    assert_eq!(
        fmt_tm(&tm(2026, 1, 9, 3, 4, 5, -12_600)),
        "09/Feb/2026:03:04:05 -0330"
    );
    assert_eq!(
        fmt_tm(&tm(2026, 11, 31, 23, 59, 60, 20_700)),
        "31/Dec/2026:23:59:60 +0545"
    );
    assert_eq!(
        fmt_tm(&tm(2026, 6, 4, 12, 0, 0, 50_400)),
        "04/Jul/2026:12:00:00 +1400"
    );
    assert_eq!(
        fmt_tm(&tm(2026, 6, 4, 12, 0, 0, -36_000)),
        "04/Jul/2026:12:00:00 -1000"
    );
    assert_eq!(
        fmt_tm(&tm(999, 2, 4, 12, 0, 0, 0)),
        "04/Mar/0999:12:00:00 +0000"
    );
    assert_eq!(
        fmt_tm(&tm(12345, 2, 4, 12, 0, 0, 0)),
        "04/Mar/12345:12:00:00 +0000"
    );
    // Garbage month never panics.
    assert_eq!(
        fmt_tm(&tm(2026, 12, 1, 0, 0, 0, 0)),
        "01/???/2026:00:00:00 +0000"
    );
}

#[test]
fn format_tm_all_months_english() {
    let names: Vec<String> = (0..12)
        .map(|m| fmt_tm(&tm(2026, m, 1, 0, 0, 0, 0))[3..6].to_string())
        .collect();
    assert_eq!(
        names,
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    );
}

#[test]
fn localtime_called_once_per_second() {
    let calls = || LOCALTIME_CALLS.with(|c| c.get());
    let f = LogFormat::compile("{TS} {TS}").unwrap();
    let base = UNIX_EPOCH + Duration::from_secs(1_700_000_123);
    let mut out = Vec::new();
    let before = calls();
    for ms in [0u64, 1, 500, 999] {
        f.render(&Record::new(base + Duration::from_millis(ms)), &mut out);
    }
    assert_eq!(calls() - before, 1);
    f.render(&Record::new(base + Duration::from_secs(1)), &mut out);
    assert_eq!(calls() - before, 2);
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    assert_eq!(lines[0], lines[3]);
    assert_ne!(lines[0], lines[4]);
}

#[test]
fn ts_cache_public_api() {
    let mut c = TsCache::default();
    let a = c.get(t0()).to_vec();
    assert_eq!(parse_ts(std::str::from_utf8(&a).unwrap()), 1_795_887_000);
    let b = c.get(t0() + Duration::from_secs(60)).to_vec();
    assert_eq!(parse_ts(std::str::from_utf8(&b).unwrap()), 1_795_887_060);
}

// ---- hot path

#[test]
fn render_does_not_allocate() {
    let req = Hdrs::new(&[
        ("User-Agent", b"Mozilla/5.0 \"x\""),
        ("Host", b"example.org"),
        ("X-Id", b"a\nb"),
    ]);
    let resp = Hdrs::new(&[("Content-Type", b"text/plain")]);
    // `Hdrs` records names (allocating); use the non-recording lookup.
    let req = LowerOnly(
        req.list
            .iter()
            .map(|(n, v)| {
                (
                    Box::leak(n.to_ascii_lowercase().into_boxed_str()) as &str,
                    *v,
                )
            })
            .collect(),
    );
    let resp = LowerOnly(vec![("content-type", resp.list[0].1)]);
    let r = Record {
        src: Some("2001:db8::1".parse().unwrap()),
        proxy: Some("[2001:db8::2]:8080".parse().unwrap()),
        method: Some("GET"),
        uri: Some(b"/\xff"),
        proto: Some("HTTP/1.1"),
        status: Some(200),
        ds_sport: Some(40000),
        us_sport: Some(50000),
        rule: Some("r"),
        req_headers: Some(&req),
        resp_headers: Some(&resp),
        ..empty()
    };
    let f = LogFormat::compile(
        "{SRC} {PROXY} [{TS}] \"{METH} {URI} {PROTO}\" {STATUS} {DS_SPORT} {US_SPORT} {RULE} \"{REF}\" \"{UA}\" {HOST} {US_HDR}:'X-Id' {DS_HDR}:'Content-Type'",
    )
    .unwrap();
    let mut out = Vec::with_capacity(4096);
    f.render(&r, &mut out); // warm-up: fills the TS cache, loads tzdata
    out.clear();
    // The counter does see allocations on this thread.
    let probe = ALLOCS.with(|c| c.get());
    drop(std::hint::black_box(Vec::<u8>::with_capacity(8)));
    assert!(ALLOCS.with(|c| c.get()) > probe);
    let before = ALLOCS.with(|c| c.get());
    for _ in 0..100 {
        f.render(&r, &mut out);
        out.clear();
    }
    assert_eq!(ALLOCS.with(|c| c.get()) - before, 0);
    f.render(&r, &mut out);
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("2001:db8::1 [2001:db8::2]:8080 ["), "{s}");
    assert!(
        s.ends_with(
            "\"GET /\\xFF HTTP/1.1\" 200 40000 50000 r \"-\" \"Mozilla/5.0 \\x22x\\x22\" example.org a\\x0Ab text/plain\n"
        ),
        "{s}"
    );
}
