//! The mapping, end to end from RProxy text to TOML, and the output through `load::load` (the
//! code `rproxy -t` runs).

use super::*;
use figment::providers::Format;

fn no_env(_: &str) -> Option<String> {
    None
}

fn ok(text: &str) -> Conversion {
    convert("test.cfg", text, &no_env).unwrap_or_else(|e| panic!("{e:?}"))
}

fn fail(text: &str) -> Vec<Failure> {
    match convert("test.cfg", text, &no_env) {
        Ok(c) => panic!("converted:\n{}", c.toml),
        Err(e) => e,
    }
}

/// The note on `line` that contains `needle`.
fn note(c: &Conversion, line: u32, needle: &str) {
    assert!(
        c.notes
            .iter()
            .any(|n| n.line == line && n.message.contains(needle)),
        "no note {needle:?} at line {line}: {:#?}",
        c.notes
    );
}

fn value(c: &Conversion) -> figment::value::Value {
    figment::Figment::from(figment::providers::Toml::string(&c.toml))
        .extract()
        .unwrap_or_else(|e| panic!("{e}\n{}", c.toml))
}

/// The value at `path` (`server.0.port`).
fn at(v: &figment::value::Value, path: &str) -> Option<figment::value::Value> {
    let mut cur = v.clone();
    for p in path.split('.') {
        cur = match (&cur, p.parse::<usize>()) {
            (figment::value::Value::Array(_, a), Ok(i)) => a.get(i)?.clone(),
            (figment::value::Value::Dict(_, d), _) => d.get(p)?.clone(),
            _ => return None,
        };
    }
    Some(cur)
}

fn int_at(v: &figment::value::Value, path: &str) -> Option<i128> {
    at(v, path).and_then(|x| x.to_i128())
}

fn str_at(v: &figment::value::Value, path: &str) -> Option<String> {
    at(v, path).and_then(|x| x.as_str().map(str::to_string))
}

/// Write `toml` to a fresh file and load it as `rproxy -t` does.
fn check_loads(c: &Conversion) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rproxy-convert-unit-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("converted.toml");
    std::fs::write(&p, &c.toml).unwrap();
    let r = crate::load::load(&p);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = r {
        panic!("{e}\n{}", c.toml);
    }
}

const TWO_X: &str = r#"
daemonize = false
user = nobody
group = nogroup

server {
    addr = 127.0.0.1
    port = 7070
    threads = 2
    read-timeout    = { 30, 0 }
    write-timeout   = { 0, 250000 }
    pending-timeout = { 0, 0 }
    max-pending     = 0

    downstream ds_01 {
        addr = 127.0.0.1
        port = 8081
        connections = 4
        retry = { 0, 50000 }
        high-watermark = 0
    }
    downstream ds_02 {
        addr = 127.0.0.1
        port = 8082
        retry = 2
    }

    vhost localhost {
        aliases = { 127.0.0.1:7070, localhost:7070, box.local }
        strip-headers = { Server }
        rule static {
            uri-gmatch = "/static/*"
            downstreams = { ds_01, ds_02 }
            lb-method = RoundRobin
            upstream-read-timeout = { 10, 0 }
        }
        rule api {
            uri-rmatch = "^/api/"
            downstreams = { ds_02 }
            allow-redirect = true
            headers { x-forwarded-for = true x-ssl-certificate = false }
        }
        if-uri-match "/exact" {
            downstreams = { ds_01 }
        }
    }
}
"#;

#[test]
fn a_2x_file_maps_to_routed_toml_that_loads() {
    let c = ok(TWO_X);
    assert_eq!(c.generation, Generation::Two);
    let v = value(&c);
    assert_eq!(str_at(&v, "server.0.addr").as_deref(), Some("127.0.0.1"));
    assert_eq!(int_at(&v, "server.0.read-timeout"), Some(30));
    // 0.25 s is rounded up, never down to 0 ("none").
    assert_eq!(int_at(&v, "server.0.write-timeout"), Some(1));
    note(&c, 11, "rounded up to 1 s");
    assert!(at(&v, "server.0.pending-timeout").is_none());
    note(&c, 12, "0 meant no limit");
    assert_eq!(int_at(&v, "server.0.max-pending"), Some(1_000_000));
    assert_eq!(
        str_at(&v, "server.0.downstream.0.name").as_deref(),
        Some("ds_01")
    );
    assert_eq!(
        int_at(&v, "server.0.downstream.0.retry.useconds"),
        Some(50_000)
    );
    assert_eq!(int_at(&v, "server.0.downstream.1.retry.seconds"), Some(2));
    assert_eq!(int_at(&v, "server.0.downstream.1.retry.useconds"), Some(0));
    note(&c, 20, "high-watermark' dropped");
    // Host globs lose their port; duplicates collapse.
    let aliases = at(&v, "server.0.vhost.0.aliases").unwrap();
    let aliases: Vec<&str> = aliases
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(aliases, ["127.0.0.1", "localhost", "box.local"]);
    note(&c, 29, "without its port");
    assert_eq!(
        str_at(&v, "server.0.vhost.0.rule.0.name").as_deref(),
        Some("static")
    );
    assert_eq!(
        str_at(&v, "server.0.vhost.0.rule.0.lb-method").as_deref(),
        Some("roundrobin")
    );
    assert_eq!(
        int_at(&v, "server.0.vhost.0.rule.0.upstream-read-timeout"),
        Some(10)
    );
    note(&c, 31, "upstream-write-timeout': unset beside its pair");
    note(
        &c,
        40,
        "allow-redirect' dropped: rproxy has no internal redirect",
    );
    note(&c, 41, "without RProxy's `:port`");
    assert_eq!(
        str_at(&v, "server.0.vhost.0.rule.2.uri-match").as_deref(),
        Some("/exact")
    );
    check_loads(&c);
}

/// The seed README's 1.x blocks, without its TLS files (tests/convert.rs runs the whole of
/// conf/examples/rproxy-1.x.cfg with real certificates).
const ONE_X: &str = r#"
daemonize  = false
user       = nobody
group      = nogroup
memtrim-sz = 0
max-nofile = 10000
rootdir    = /tmp

server {
    addr    = 127.0.0.1
    port    = 8443
    backlog = 1024
    threads = 4
    host    = example.com

    read-timeout    = 60
    write-timeout   = 32
    pending-timeout = 10
    max-pending     = 50
    lb-method       = rtt

    headers {
        x-forwarded-for = yes
    }

    rewrite {
        src = "^(/dir/).*"
        dst = "/derp/"
    }

    downstream {
        addr           = 127.0.0.1
        port           = 80
        connections    = 10
        high-watermark = 5242880
        read-timeout   = 0
        write-timeout  = 2

        retry {
            seconds  = 0
            useconds = 500000
        }
    }
}
"#;

#[test]
fn a_1x_file_maps_to_flat_toml_that_loads() {
    let c = ok(ONE_X);
    assert_eq!(c.generation, Generation::One);
    let v = value(&c);
    assert_eq!(int_at(&v, "max-nofile"), Some(10_000));
    assert_eq!(str_at(&v, "server.0.lb-method").as_deref(), Some("rtt"));
    assert_eq!(
        str_at(&v, "server.0.rewrite.0.src").as_deref(),
        Some("^(/dir/).*")
    );
    assert_eq!(
        int_at(&v, "server.0.downstream.0.retry.useconds"),
        Some(500_000)
    );
    assert!(at(&v, "server.0.downstream.0.name").is_none());
    note(&c, 7, "rootdir' dropped");
    note(&c, 14, "host' dropped");
    check_loads(&c);
}

#[test]
fn unknown_options_are_named_and_dropped() {
    let c = ok(
        "server {\n addr = 127.0.0.1\n frobnicate = 3\n downstream d { addr = 127.0.0.1\n \
         port = 1 weight = 5 }\n cache { x = 1 }\n}\n",
    );
    note(
        &c,
        3,
        "option 'frobnicate' dropped: unknown to RProxy in a server section",
    );
    note(
        &c,
        5,
        "option 'weight' dropped: unknown to RProxy in a downstream section",
    );
    note(&c, 6, "option 'cache' dropped: unknown section");
    assert!(!c.toml.contains("frobnicate") && !c.toml.contains("weight"));
}

#[test]
fn names_are_case_insensitive_titles_unique_ignoring_case() {
    let c = ok("SERVER { Port = 81 Downstream A { ADDR = 127.0.0.1 } }");
    let v = value(&c);
    assert_eq!(int_at(&v, "server.0.port"), Some(81));
    assert_eq!(
        str_at(&v, "server.0.downstream.0.name").as_deref(),
        Some("A")
    );
    let e = fail("server {\n downstream a { addr = x }\n downstream A { addr = y }\n}");
    assert_eq!(e[0].line, 3);
    assert!(e[0].reason.contains("duplicate title 'A'"), "{e:?}");
}

#[test]
fn a_repeated_single_section_is_refused_naming_both() {
    let e = fail("server {\n ssl { enabled = true cert = a }\n ssl { enabled = false }\n}");
    assert_eq!(e[0].line, 3);
    assert!(e[0].reason.contains("first is at line 2"), "{e:?}");
}

#[test]
fn integers_booleans_and_lists_as_libconfuse_reads_them() {
    let c = ok(
        "daemonize = Yes\nserver {\n port = 010\n backlog = 0x10\n downstream d { addr = \
         127.0.0.1 enabled = on } }",
    );
    let v = value(&c);
    assert_eq!(int_at(&v, "server.0.port"), Some(8));
    assert_eq!(int_at(&v, "server.0.backlog"), Some(16));
    note(&c, 3, "octal, 8");
    assert_eq!(at(&v, "daemonize").and_then(|b| b.to_bool()), Some(true));
    let e = fail("daemonize = 1\nserver {}");
    assert!(e[0].reason.contains("invalid boolean"), "{e:?}");
    let e = fail("server { port = 99999999999999999999 }");
    assert!(e[0].reason.contains("out of range"), "{e:?}");
    let e = fail("server { port = 80x }");
    assert!(e[0].reason.contains("invalid integer"), "{e:?}");
    let e = fail("server { port = { 1, 2 } }");
    assert!(e[0].reason.contains("not a list"), "{e:?}");
    // `+=` appends, `{}` clears.
    let c = ok(
        "server { vhost v { aliases = { a } aliases += { b, } rule r { uri-match = / } } \
         downstream d { addr = 127.0.0.1 } }",
    );
    let aliases = at(&value(&c), "server.0.vhost.0.aliases").unwrap();
    assert_eq!(aliases.as_array().unwrap().len(), 2);
}

#[test]
fn lb_method_unknown_is_written_as_the_rtt_rproxy_used() {
    let c = ok("server { lb-method = fastest downstream { addr = 127.0.0.1 } }");
    assert_eq!(
        str_at(&value(&c), "server.0.lb-method").as_deref(),
        Some("rtt")
    );
    note(&c, 1, "RProxy silently used rtt");
}

#[test]
fn ssl_protocols_and_key_default() {
    let c = ok(
        "server {\n ssl {\n enabled = true\n cert = /c.pem\n protocols-on = { TLS1, \
         SSLv3, tlsv1 }\n protocols-off = { SSLv2, SSLv3 }\n cache-size = 0\n crl { file = /crl \
         reload = { 10, 0 } }\n }\n downstream { addr = 127.0.0.1 }\n}",
    );
    let v = value(&c);
    assert_eq!(str_at(&v, "server.0.ssl.key").as_deref(), Some("/c.pem"));
    let on = at(&v, "server.0.ssl.protocols-on").unwrap();
    assert_eq!(on.as_array().unwrap().len(), 1);
    note(&c, 5, "`TLS1` is no protocol name");
    note(&c, 5, "SSLv3 is insecure");
    assert_eq!(
        at(&v, "server.0.ssl.protocols-off")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(int_at(&v, "server.0.ssl.cache-size"), Some(1024));
    assert_eq!(str_at(&v, "server.0.ssl.crl").as_deref(), Some("/crl"));
    note(&c, 8, "reload' dropped");
    // A section that is not enabled was ignored by RProxy, and is left out.
    let c = ok("server {\n ssl { cert = x }\n downstream { addr = 127.0.0.1 } }");
    assert!(at(&value(&c), "server.0.ssl").is_none());
    note(&c, 2, "not enabled");
}

#[test]
fn logging_both_generations() {
    let c = ok(
        "server {\n logging {\n request {\n enabled = true\n output = \
         \"syslog:lptr\"\n level = debug\n }\n error { enabled = true }\n }\n downstream { addr \
         = 127.0.0.1 }\n}",
    );
    let v = value(&c);
    assert_eq!(
        str_at(&v, "server.0.logging.type").as_deref(),
        Some("syslog")
    );
    assert_eq!(
        str_at(&v, "server.0.logging.facility").as_deref(),
        Some("lpr")
    );
    assert_eq!(
        str_at(&v, "server.0.logging.format").as_deref(),
        Some("{SRC} {HOST} {URI} {HOST}")
    );
    note(&c, 6, "level' dropped");
    note(&c, 8, "global `error-log`");
    let c = ok(
        "server {\n logging {\n enabled = true\n type = file\n filename = /var/log/a.log\n \
         format = '{SRC}'\n errorlog = /e.log\n }\n downstream { addr = 127.0.0.1 }\n}",
    );
    let v = value(&c);
    assert_eq!(
        str_at(&v, "server.0.logging.filename").as_deref(),
        Some("/var/log/a.log")
    );
    assert_eq!(
        str_at(&v, "server.0.logging.format").as_deref(),
        Some("{SRC}")
    );
    note(&c, 7, "errorlog' dropped");
    let c =
        ok("server {\n logging { request { enabled = true } }\n downstream { addr = 127.0.0.1 } }");
    assert!(at(&value(&c), "server.0.logging").is_none());
    note(&c, 2, "/dev/stdout");
}

#[test]
fn rules_keep_the_matcher_rproxy_used() {
    let c = ok(
        "server { downstream d { addr = 127.0.0.1 }\n vhost v {\n rule r {\n uri-rmatch \
         = x\n uri-match = /a\n } } }",
    );
    let v = value(&c);
    assert_eq!(
        str_at(&v, "server.0.vhost.0.rule.0.uri-match").as_deref(),
        Some("/a")
    );
    assert!(at(&v, "server.0.vhost.0.rule.0.uri-rmatch").is_none());
    note(&c, 4, "RProxy used only `uri-match`");
    let e = fail("server { vhost v { rule r { downstreams = { d } } } }");
    assert!(e[0].reason.contains("without uri-match"), "{e:?}");
}

#[test]
fn syntax_errors_have_line_and_column() {
    let e = fail("server {\n  vhost *.example.com { }\n}");
    assert_eq!((e[0].line, e[0].col), (2, 9));
    let e = fail("include(\"x.cfg\")");
    assert!(e[0].reason.contains("include"), "{e:?}");
}

#[test]
fn environment_values_are_baked_in_and_named() {
    let env = |k: &str| (k == "PORT").then(|| "9000".to_string());
    let c = convert(
        "t.cfg",
        "server { port = ${PORT} addr = ${ADDR:-127.0.0.1} }",
        &env,
    )
    .unwrap();
    let v = value(&c);
    assert_eq!(int_at(&v, "server.0.port"), Some(9000));
    assert_eq!(str_at(&v, "server.0.addr").as_deref(), Some("127.0.0.1"));
    assert!(c.notes.iter().any(|n| n.message.contains("${PORT}")));
    assert!(c.notes.iter().any(|n| n.message.contains("its default")));
}

#[test]
fn no_server_is_an_error() {
    let e = fail("daemonize = true");
    assert!(e[0].reason.contains("no `server`"), "{e:?}");
}

#[test]
fn list_assignment_replaces_and_an_empty_list_clears() {
    let c = ok(
        "server {\n vhost v {\n aliases = { a, b }\n aliases = {}\n rule r { uri-match = \
         / }\n }\n downstream d { addr = 127.0.0.1 }\n}",
    );
    let aliases = at(&value(&c), "server.0.vhost.0.aliases").unwrap();
    assert!(aliases.as_array().unwrap().is_empty());
    note(&c, 4, "set again (first at line 3)");
}

/// Damaged variants of the shipped examples (a character deleted, or one of libconfuse's
/// special characters inserted, at many places): the converter never panics, and whatever it
/// accepts comes out as TOML that parses.
#[test]
fn damaged_inputs_are_refused_or_give_valid_toml() {
    let examples = [
        include_str!("../../../conf/examples/rproxy-1.x.cfg"),
        include_str!("../../../conf/examples/rproxy-2.x.cfg"),
    ];
    let mut converted = 0;
    let mut refused = 0;
    for text in examples {
        let chars: Vec<char> = text.chars().collect();
        for i in (0..chars.len()).step_by(23) {
            let mut variants = Vec::new();
            let mut deleted = chars.clone();
            deleted.remove(i);
            variants.push(deleted);
            for c in [
                '{', '}', '=', '"', '\'', '*', '+', ';', '#', '/', ',', '$', '\\', '\n',
            ] {
                let mut v = chars.clone();
                v.insert(i, c);
                variants.push(v);
            }
            for v in variants {
                let s: String = v.into_iter().collect();
                match convert("x.cfg", &s, &no_env) {
                    Ok(c) => {
                        converted += 1;
                        let parsed: Result<figment::value::Value, _> =
                            figment::Figment::from(figment::providers::Toml::string(&c.toml))
                                .extract();
                        assert!(
                            parsed.is_ok(),
                            "{parsed:?}\n--- input:\n{s}\n--- output:\n{}",
                            c.toml
                        );
                    }
                    Err(e) => {
                        refused += 1;
                        assert!(!e.is_empty() && e.iter().all(|f| f.line >= 1));
                    }
                }
            }
        }
    }
    // Both outcomes really happen.
    assert!(
        converted > 100 && refused > 100,
        "{converted} converted, {refused} refused"
    );
}

#[test]
fn a_vhost_ssl_keeps_only_what_sni_can_switch() {
    let c = ok(
        "server {\n downstream d { addr = 127.0.0.1 }\n vhost v {\n rule r { uri-match = / \
         }\n ssl {\n enabled = true\n cert = /v.pem\n ciphers = \"eNULL:RC4-SHA\"\n \
         protocols-on = { TLSv1 }\n verify-peer = true\n }\n }\n}",
    );
    let v = value(&c);
    assert_eq!(
        str_at(&v, "server.0.vhost.0.ssl.cert").as_deref(),
        Some("/v.pem")
    );
    assert_eq!(
        at(&v, "server.0.vhost.0.ssl.verify-peer").and_then(|b| b.to_bool()),
        Some(true)
    );
    assert!(at(&v, "server.0.vhost.0.ssl.ciphers").is_none());
    assert!(at(&v, "server.0.vhost.0.ssl.protocols-on").is_none());
    note(&c, 8, "option 'ciphers' dropped: in a vhost's ssl");
    note(&c, 9, "option 'protocols-on' dropped: in a vhost's ssl");
}
