//! RProxy's options (1.x: the seed README's flat `server` with `rewrite`; 2.x: named
//! downstreams, `vhost`s and `rule`s) to our TOML keys (DESIGN section 5, docs/CONFIG.md).
//!
//! The option tables are the union of both generations (RProxy's `src/cfg.c` at 1.0.25 and at
//! 2.0.17/develop): a key is converted wherever it appears, and a key neither generation knew is
//! named and dropped. Keys a file leaves unset are left unset, so rproxy's defaults apply (the
//! output's header says which of them differ from RProxy's); the exceptions are the listen
//! address (RProxy's default was 127.0.0.1, ours is every address) and the access-log format,
//! which are written out so nothing starts listening or logging differently by omission.

use super::parser::{Item, Section, Value, Word};
use super::toml_out::{TVal, Table};
use super::Note;

/// RProxy's access-log format when `format` is unset (both generations).
const RPROXY_LOG_FORMAT: &str = "{SRC} {HOST} {URI} {HOST}";

/// Which RProxy wrote the file (for the output's header only: both are converted alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Flat `server` blocks: untitled downstreams, `rewrite`.
    One,
    /// Named downstreams, vhosts and rules.
    Two,
}

/// Everything the mapping says about the file.
pub struct Ctx {
    pub notes: Vec<Note>,
    pub errors: Vec<Note>,
}

impl Ctx {
    fn drop(&mut self, line: u32, name: &str, why: &str) {
        self.notes.push(Note {
            line,
            message: format!("option '{name}' dropped: {why}"),
        });
    }

    fn changed(&mut self, line: u32, name: &str, what: &str) {
        self.notes.push(Note {
            line,
            message: format!("option '{name}': {what}"),
        });
    }

    fn error(&mut self, line: u32, what: String) {
        self.errors.push(Note {
            line,
            message: what,
        });
    }
}

/// An option's value after libconfuse's `=` (replace) and `+=` (append) rules.
struct Opt {
    name: String,
    line: u32,
    words: Vec<Word>,
    list: bool,
}

/// A section's options and subsections, taken by name as they are converted; what is left at
/// the end is unknown.
struct Opts {
    what: String,
    opts: Vec<Opt>,
    sections: Vec<Section>,
}

impl Opts {
    fn new(ctx: &mut Ctx, what: &str, s: &Section) -> Opts {
        let mut opts: Vec<Opt> = Vec::new();
        let mut sections = Vec::new();
        for item in &s.items {
            match item {
                Item::Section(sub) => sections.push(sub.clone()),
                Item::Opt { name, line, value } => {
                    let (words, list, append) = match value {
                        Value::One(w) => (vec![w.clone()], false, false),
                        Value::List { items, append } => (items.clone(), true, *append),
                    };
                    if let Some(prev) = opts.iter_mut().find(|o| &o.name == name) {
                        if append {
                            prev.words.extend(words);
                        } else {
                            ctx.notes.push(Note {
                                line: *line,
                                message: format!(
                                    "option '{name}' set again (first at line {}): the last \
                                     value counts, as in RProxy",
                                    prev.line
                                ),
                            });
                            prev.words = words;
                            prev.list = list;
                        }
                        prev.line = *line;
                    } else {
                        opts.push(Opt {
                            name: name.clone(),
                            line: *line,
                            words,
                            list,
                        });
                    }
                }
            }
        }
        Opts {
            what: what.to_string(),
            opts,
            sections,
        }
    }

    fn take(&mut self, name: &str) -> Option<Opt> {
        let i = self.opts.iter().position(|o| o.name == name)?;
        Some(self.opts.remove(i))
    }

    fn take_sections(&mut self, name: &str) -> Vec<Section> {
        let (mine, rest) = std::mem::take(&mut self.sections)
            .into_iter()
            .partition(|s| s.name == name);
        self.sections = rest;
        mine
    }

    /// A section that may appear once: a second one is an error (libconfuse's handling of a
    /// repeated single section differs between versions, and both lose settings silently).
    fn take_single(&mut self, ctx: &mut Ctx, name: &str) -> Option<Section> {
        let mut all = self.take_sections(name);
        if all.len() > 1 {
            ctx.error(
                all[1].line,
                format!(
                    "a second `{name}` section in this {} (the first is at line {}): RProxy kept \
                     only part of them; merge them into one",
                    self.what, all[0].line
                ),
            );
        }
        if all.is_empty() {
            None
        } else {
            Some(all.remove(0))
        }
    }

    /// Name every option and section nobody took.
    fn finish(self, ctx: &mut Ctx) {
        for o in self.opts {
            ctx.drop(
                o.line,
                &o.name,
                &format!(
                    "unknown to RProxy in a {} section (RProxy refused such a file)",
                    self.what
                ),
            );
        }
        for s in self.sections {
            ctx.drop(
                s.line,
                &s.name,
                &format!(
                    "unknown section in a {} section (RProxy refused such a file)",
                    self.what
                ),
            );
        }
    }
}

fn one<'a>(ctx: &mut Ctx, o: &'a Opt) -> Option<&'a str> {
    if o.list && o.words.len() != 1 {
        ctx.error(
            o.line,
            format!("option '{}' takes one value, not a list", o.name),
        );
        return None;
    }
    o.words.first().map(|w| w.text.as_str())
}

fn string(ctx: &mut Ctx, o: &Opt) -> Option<String> {
    one(ctx, o).map(str::to_string)
}

/// libconfuse's integers: `strtol(s, &end, 0)` with the whole text used (so `010` is 8 and
/// `0x10` is 16), and out of range is an error.
pub fn parse_int(s: &str) -> Result<i64, String> {
    let t = s.trim_start();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (radix, body) = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, h)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return Err(format!("invalid integer value `{s}`"));
    }
    let v = i64::from_str_radix(body, radix).map_err(|_| format!("`{s}` is out of range"))?;
    Ok(if neg { -v } else { v })
}

fn int_of(ctx: &mut Ctx, name: &str, w: &Word) -> Option<i64> {
    match parse_int(&w.text) {
        Ok(v) => {
            let d = w.text.trim_start_matches('-');
            if d.len() > 1 && d.starts_with('0') && !d.starts_with("0x") && !d.starts_with("0X") {
                ctx.changed(
                    w.line,
                    name,
                    &format!(
                        "`{}` has a leading zero: libconfuse read it as octal, {v}",
                        w.text
                    ),
                );
            }
            Some(v)
        }
        Err(e) => {
            ctx.error(w.line, format!("option '{name}': {e}"));
            None
        }
    }
}

fn int(ctx: &mut Ctx, o: &Opt) -> Option<i64> {
    if o.list && o.words.len() != 1 {
        ctx.error(
            o.line,
            format!("option '{}' takes one integer, not a list", o.name),
        );
        return None;
    }
    let w = o.words.first()?;
    int_of(ctx, &o.name, w)
}

fn boolean(ctx: &mut Ctx, o: &Opt) -> Option<bool> {
    let s = one(ctx, o)?.to_ascii_lowercase();
    match s.as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => {
            ctx.error(
                o.line,
                format!(
                    "option '{}': invalid boolean value `{s}` (true/false/yes/no/on/off)",
                    o.name
                ),
            );
            None
        }
    }
}

fn strings(o: &Opt) -> Vec<String> {
    o.words.iter().map(|w| w.text.clone()).collect()
}

/// A 2.x `{ seconds, microseconds }` (a single value is `{ seconds }`), or a 1.x integer.
fn timeval(ctx: &mut Ctx, o: &Opt) -> Option<(i64, i64)> {
    if o.words.len() > 2 {
        ctx.error(
            o.line,
            format!(
                "option '{}' takes {{ seconds, microseconds }}, not {} values",
                o.name,
                o.words.len()
            ),
        );
        return None;
    }
    let s = match o.words.first() {
        Some(w) => int_of(ctx, &o.name, w)?,
        None => 0,
    };
    let us = match o.words.get(1) {
        Some(w) => int_of(ctx, &o.name, w)?,
        None => 0,
    };
    if s < 0 || us < 0 {
        ctx.error(o.line, format!("option '{}': negative time", o.name));
        return None;
    }
    Some((s, us))
}

/// Whole seconds for one of our timeouts (microseconds round up, so a short timeout never
/// becomes 0, which means "none").
fn seconds(ctx: &mut Ctx, o: &Opt) -> Option<i64> {
    let (s, us) = timeval(ctx, o)?;
    let whole = s + us / 1_000_000 + i64::from(us % 1_000_000 != 0);
    if us % 1_000_000 != 0 {
        ctx.changed(
            o.line,
            &o.name,
            &format!(
                "{s} s + {us} us rounded up to {whole} s (rproxy's timeouts are whole seconds)"
            ),
        );
    }
    Some(whole)
}

fn lb_method(ctx: &mut Ctx, o: &Opt) -> Option<String> {
    let m = one(ctx, o)?.to_ascii_lowercase();
    match m.as_str() {
        "rtt" | "roundrobin" | "random" | "most-idle" | "none" => Some(m),
        _ => {
            ctx.changed(
                o.line,
                &o.name,
                &format!("unknown method `{m}`: RProxy silently used rtt, so rtt is written"),
            );
            Some("rtt".into())
        }
    }
}

/// RProxy's vhost names matched the Host header with its port; ours match without it.
fn host_glob(ctx: &mut Ctx, name: &str, w: &Word) -> String {
    let t = &w.text;
    let cut = match t.rfind(':') {
        Some(i)
            if i + 1 < t.len()
                && t[i + 1..].bytes().all(|b| b.is_ascii_digit())
                && (!t[..i].contains(':') || t[..i].ends_with(']')) =>
        {
            Some(i)
        }
        _ => None,
    };
    match cut {
        Some(i) => {
            ctx.changed(
                w.line,
                name,
                &format!(
                    "`{t}` written as `{}`: rproxy matches the Host header without its port",
                    &t[..i]
                ),
            );
            t[..i].to_string()
        }
        None => t.clone(),
    }
}

/// Which generation wrote `root`.
pub fn generation(root: &Section) -> Generation {
    fn two(s: &Section) -> bool {
        s.items.iter().any(|i| match i {
            Item::Section(sub) => {
                (sub.name == "downstream" && sub.title.is_some()) || sub.name == "vhost" || two(sub)
            }
            _ => false,
        })
    }
    if two(root) {
        Generation::Two
    } else {
        Generation::One
    }
}

/// The whole file.
pub fn file(ctx: &mut Ctx, root: &Section) -> Table {
    let mut o = Opts::new(ctx, "top-level", root);
    let mut t = Table::default();
    if let Some(v) = o.take("daemonize").and_then(|x| boolean(ctx, &x)) {
        t.set("daemonize", TVal::Bool(v));
    }
    if let Some(x) = o.take("rootdir") {
        ctx.drop(
            x.line,
            "rootdir",
            "RProxy never applied it (its chdir was never made), and rproxy does not chdir",
        );
    }
    for key in ["user", "group"] {
        if let Some(v) = o.take(key).and_then(|x| string(ctx, &x)) {
            t.set(key, TVal::Str(v));
        }
    }
    if let Some(v) = o.take("max-nofile").and_then(|x| int(ctx, &x)) {
        t.set("max-nofile", TVal::Int(v));
    }
    if let Some(x) = o.take("memtrim-sz") {
        if let Some(v) = int(ctx, &x) {
            t.set("memtrim-sz", TVal::Int(v));
        }
    }
    let servers = o.take_sections("server");
    o.finish(ctx);
    for s in &servers {
        if let Some(st) = server(ctx, s) {
            t.push("server", st);
        }
    }
    if servers.is_empty() {
        ctx.error(1, "no `server` section: nothing to convert".into());
    }
    t
}

fn server(ctx: &mut Ctx, s: &Section) -> Option<Table> {
    let mut o = Opts::new(ctx, "server", s);
    let mut t = Table::default();
    let addr = match o.take("addr") {
        Some(x) => string(ctx, &x).map(|a| (x.line, a)),
        None => Some((s.line, "127.0.0.1".to_string())),
    };
    if let Some((line, a)) = addr {
        let a = if let Some(v6) = a.strip_prefix("ipv6:") {
            v6.to_string()
        } else if a.starts_with("unix:") {
            ctx.drop(
                line,
                "server",
                &format!("`addr = {a}`: rproxy listens on TCP only; this server is left out"),
            );
            return None;
        } else if a.is_empty() {
            ctx.changed(
                line,
                "addr",
                "empty: written as 0.0.0.0 (every IPv4 address)",
            );
            "0.0.0.0".to_string()
        } else {
            a
        };
        t.set("addr", TVal::Str(a));
    }
    for key in ["port", "backlog", "threads"] {
        if let Some(v) = o.take(key).and_then(|x| int(ctx, &x)) {
            t.set(key, TVal::Int(v));
        }
    }
    for key in ["read-timeout", "write-timeout"] {
        if let Some(v) = o.take(key).and_then(|x| seconds(ctx, &x)) {
            t.set(key, TVal::Int(v));
        }
    }
    if let Some(x) = o.take("pending-timeout") {
        match seconds(ctx, &x) {
            Some(0) => ctx.drop(
                x.line,
                "pending-timeout",
                "0 meant no limit in RProxy, where rproxy's 0 answers 503 at once; rproxy's \
                 default (10 s) applies",
            ),
            Some(v) => t.set("pending-timeout", TVal::Int(v)),
            None => {}
        }
    }
    if let Some(x) = o.take("max-pending") {
        match int(ctx, &x) {
            Some(v) if v <= 0 => {
                ctx.changed(
                    x.line,
                    "max-pending",
                    "0 meant no limit in RProxy: written as rproxy's largest, 1000000",
                );
                t.set("max-pending", TVal::Int(1_000_000));
            }
            Some(v) => t.set("max-pending", TVal::Int(v)),
            None => {}
        }
    }
    if let Some(x) = o.take("lb-method") {
        if let Some(m) = lb_method(ctx, &x) {
            t.set("lb-method", TVal::Str(m));
        }
    }
    if let Some(x) = o.take("high-watermark") {
        ctx.drop(
            x.line,
            "high-watermark",
            "rproxy has no client-side watermark: it reads at most 256 KiB ahead per connection \
             and pauses the downstream while the client is slow",
        );
    }
    if let Some(x) = o.take("host") {
        ctx.drop(x.line, "host", "RProxy 1.x parsed it but never used it");
    }
    for key in [
        "disable-server-nagle",
        "disable-client-nagle",
        "disable-downstream-nagle",
    ] {
        if let Some(x) = o.take(key) {
            ctx.drop(x.line, key, "rproxy has no such setting");
        }
    }
    if let Some(h) = o.take_single(ctx, "headers") {
        t.table("headers", headers(ctx, &h));
    }
    if let Some(ssl_sec) = o.take_single(ctx, "ssl") {
        if let Some(st) = ssl(ctx, &ssl_sec, false) {
            t.table("ssl", st);
        }
    }
    if let Some(l) = o.take_single(ctx, "logging") {
        if let Some(lt) = logging(ctx, &l) {
            t.table("logging", lt);
        }
    }
    let downstreams = o.take_sections("downstream");
    unique_titles(ctx, &downstreams, "downstream");
    for d in &downstreams {
        t.push("downstream", downstream(ctx, d));
    }
    for r in o.take_sections("rewrite") {
        t.push("rewrite", rewrite(ctx, &r));
    }
    let vhosts = o.take_sections("vhost");
    unique_titles(ctx, &vhosts, "vhost");
    for v in &vhosts {
        if let Some(vt) = vhost(ctx, v) {
            t.push("vhost", vt);
        }
    }
    o.finish(ctx);
    Some(t)
}

/// RProxy's `CFGF_NO_TITLE_DUPES` with `CFGF_NOCASE`: `a` and `A` are the same title.
fn unique_titles(ctx: &mut Ctx, sections: &[Section], what: &str) {
    for (i, s) in sections.iter().enumerate() {
        let Some(t) = &s.title else { continue };
        if let Some(first) = sections[..i].iter().find(|p| {
            p.title
                .as_ref()
                .is_some_and(|pt| pt.text.eq_ignore_ascii_case(&t.text))
        }) {
            ctx.error(
                s.line,
                format!(
                    "found duplicate title '{}' for {what} (first at line {}; titles ignore case)",
                    t.text, first.line
                ),
            );
        }
    }
}

fn downstream(ctx: &mut Ctx, s: &Section) -> Table {
    let mut o = Opts::new(ctx, "downstream", s);
    let mut t = Table::default();
    if let Some(title) = &s.title {
        t.set("name", TVal::Str(title.text.clone()));
    }
    match o
        .take("addr")
        .and_then(|x| string(ctx, &x).map(|a| (x.line, a)))
    {
        Some((line, a)) if a.is_empty() => ctx.error(line, "downstream `addr` is empty".into()),
        Some((_, a)) => t.set("addr", TVal::Str(a)),
        None => ctx.error(s.line, "downstream without `addr`".into()),
    }
    if let Some((line, v)) = o
        .take("enabled")
        .and_then(|x| boolean(ctx, &x).map(|v| (x.line, v)))
    {
        if !v {
            ctx.changed(
                line,
                "enabled",
                "false: RProxy ignored it and used this downstream anyway; rproxy takes it out \
                 of rotation",
            );
        }
        t.set("enabled", TVal::Bool(v));
    }
    for key in ["port", "connections"] {
        if let Some(v) = o.take(key).and_then(|x| int(ctx, &x)) {
            t.set(key, TVal::Int(v));
        }
    }
    if let Some(x) = o.take("high-watermark") {
        match int(ctx, &x) {
            Some(v) if v <= 0 => ctx.drop(
                x.line,
                "high-watermark",
                "0 meant no limit in RProxy; rproxy always bounds it (default 5 MiB)",
            ),
            Some(v) if v < 8192 => {
                ctx.changed(
                    x.line,
                    "high-watermark",
                    &format!("{v} raised to rproxy's least, 8192"),
                );
                t.set("high-watermark", TVal::Int(8192));
            }
            Some(v) => t.set("high-watermark", TVal::Int(v)),
            None => {}
        }
    }
    for key in ["read-timeout", "write-timeout"] {
        if let Some(v) = o.take(key).and_then(|x| seconds(ctx, &x)) {
            t.set(key, TVal::Int(v));
        }
    }
    // 2.x: `retry = { seconds, microseconds }`; 1.x: `retry { seconds = .., useconds = .. }`.
    let mut retry = None;
    if let Some(x) = o.take("retry") {
        retry = timeval(ctx, &x).map(|tv| (x.line, tv));
    }
    if let Some(r) = o.take_single(ctx, "retry") {
        let mut ro = Opts::new(ctx, "retry", &r);
        let sec = ro.take("seconds").and_then(|x| int(ctx, &x)).unwrap_or(1);
        let us = ro.take("useconds").and_then(|x| int(ctx, &x)).unwrap_or(0);
        ro.finish(ctx);
        retry = Some((r.line, (sec, us)));
    }
    if let Some((line, (sec, us))) = retry {
        let (sec, us) = (sec + us / 1_000_000, us % 1_000_000);
        if sec == 0 && us == 0 {
            ctx.drop(
                line,
                "retry",
                "a zero interval reconnected in a busy loop; rproxy's default (0.5 s) applies",
            );
        } else if sec < 0 || us < 0 {
            ctx.error(line, "option 'retry': negative interval".into());
        } else {
            let mut rt = Table::default();
            rt.set("seconds", TVal::Int(sec));
            rt.set("useconds", TVal::Int(us));
            t.table("retry", rt);
        }
    }
    o.finish(ctx);
    t
}

fn rewrite(ctx: &mut Ctx, s: &Section) -> Table {
    let mut o = Opts::new(ctx, "rewrite", s);
    let mut t = Table::default();
    for key in ["src", "dst"] {
        match o.take(key).and_then(|x| string(ctx, &x)) {
            Some(v) => t.set(key, TVal::Str(v)),
            None => ctx.error(s.line, format!("rewrite without `{key}`")),
        }
    }
    o.finish(ctx);
    t
}

fn vhost(ctx: &mut Ctx, s: &Section) -> Option<Table> {
    let Some(title) = &s.title else {
        ctx.error(s.line, "a vhost needs a name: `vhost NAME { ... }`".into());
        return None;
    };
    let mut o = Opts::new(ctx, "vhost", s);
    let mut t = Table::default();
    t.set("name", TVal::Str(host_glob(ctx, "vhost", title)));
    if let Some(x) = o.take("aliases") {
        let mut aliases: Vec<String> = Vec::new();
        for w in &x.words {
            let a = host_glob(ctx, "aliases", w);
            if !aliases.contains(&a) {
                aliases.push(a);
            }
        }
        t.set("aliases", TVal::Strs(aliases));
    }
    if let Some(x) = o.take("strip-headers") {
        t.set("strip-headers", TVal::Strs(strings(&x)));
    }
    if let Some(ssl_sec) = o.take_single(ctx, "ssl") {
        if let Some(st) = ssl(ctx, &ssl_sec, true) {
            t.table("ssl", st);
        }
    }
    if let Some(h) = o.take_single(ctx, "headers") {
        t.table("headers", headers(ctx, &h));
    }
    if let Some(l) = o.take_single(ctx, "logging") {
        if let Some(lt) = logging(ctx, &l) {
            t.table("logging", lt);
        }
    }
    // The interim 2.0.0-2.0.3 form `if-uri-match "/path" { ... }` is read as well, in order.
    let mut rules: Vec<Section> = Vec::new();
    let rest = std::mem::take(&mut o.sections);
    for sec in rest {
        if sec.name == "rule" || sec.name.starts_with("if-uri-") {
            rules.push(sec);
        } else {
            o.sections.push(sec);
        }
    }
    let named: Vec<Section> = rules.iter().filter(|r| r.name == "rule").cloned().collect();
    unique_titles(ctx, &named, "rule");
    for r in &rules {
        if let Some(rt) = rule(ctx, r) {
            t.push("rule", rt);
        }
    }
    o.finish(ctx);
    Some(t)
}

fn rule(ctx: &mut Ctx, s: &Section) -> Option<Table> {
    let mut o = Opts::new(ctx, "rule", s);
    let mut t = Table::default();
    let mut matchers: Vec<(&str, u32, String)> = Vec::new();
    if let Some(kind) = s.name.strip_prefix("if-uri-") {
        let key = match kind {
            "match" => "uri-match",
            "gmatch" => "uri-gmatch",
            "rmatch" => "uri-rmatch",
            _ => {
                ctx.drop(s.line, &s.name, "unknown section in a vhost section");
                return None;
            }
        };
        let Some(title) = &s.title else {
            ctx.error(s.line, format!("`{}` needs its pattern as a title", s.name));
            return None;
        };
        matchers.push((key, s.line, title.text.clone()));
    } else if let Some(title) = &s.title {
        t.set("name", TVal::Str(title.text.clone()));
    } else {
        ctx.error(s.line, "a rule needs a name: `rule NAME { ... }`".into());
        return None;
    }
    for key in ["uri-match", "uri-gmatch", "uri-rmatch"] {
        if let Some(x) = o.take(key) {
            if let Some(v) = string(ctx, &x) {
                matchers.push((key, x.line, v));
            }
        }
    }
    // RProxy used the first of match, gmatch, rmatch that was set; we take exactly one.
    match matchers.split_first() {
        None => ctx.error(
            s.line,
            "rule without uri-match, uri-gmatch or uri-rmatch (RProxy refused to start)".into(),
        ),
        Some(((key, _, v), others)) => {
            t.set(key, TVal::Str(v.clone()));
            for (k, line, _) in others {
                ctx.drop(*line, k, &format!("RProxy used only `{key}` of this rule"));
            }
        }
    }
    if let Some(x) = o.take("downstreams") {
        t.set("downstreams", TVal::Strs(strings(&x)));
    }
    if let Some(x) = o.take("lb-method") {
        if let Some(m) = lb_method(ctx, &x) {
            t.set("lb-method", TVal::Str(m));
        }
    }
    if let Some(v) = o.take("passthrough").and_then(|x| boolean(ctx, &x)) {
        t.set("passthrough", TVal::Bool(v));
    }
    let read = o.take("upstream-read-timeout");
    let write = o.take("upstream-write-timeout");
    let given = read.is_some() || write.is_some();
    for (key, x) in [
        ("upstream-read-timeout", read),
        ("upstream-write-timeout", write),
    ] {
        match x {
            Some(x) => match seconds(ctx, &x) {
                Some(0) => ctx.drop(
                    x.line,
                    key,
                    "0 meant no timeout in RProxy; rproxy's 0 keeps the server's timeout",
                ),
                Some(v) => t.set(key, TVal::Int(v)),
                None => {}
            },
            None if given => ctx.changed(
                s.line,
                key,
                "unset beside its pair: RProxy then had no timeout here; rproxy keeps the \
                 server's",
            ),
            None => {}
        }
    }
    for key in ["allow-redirect", "redirect-filter"] {
        if let Some(x) = o.take(key) {
            ctx.drop(
                x.line,
                key,
                "rproxy has no internal redirect (RProxy's status 377 + x-internal-redirect)",
            );
        }
    }
    if let Some(h) = o.take_single(ctx, "headers") {
        t.table("headers", headers(ctx, &h));
    }
    o.finish(ctx);
    Some(t)
}

const SSL_HEADER_FLAGS: &[&str] = &[
    "x-ssl-subject",
    "x-ssl-issuer",
    "x-ssl-notbefore",
    "x-ssl-notafter",
    "x-ssl-serial",
    "x-ssl-sha1",
    "x-ssl-cipher",
];

fn headers(ctx: &mut Ctx, s: &Section) -> Table {
    let mut o = Opts::new(ctx, "headers", s);
    let mut t = Table::default();
    if let Some(x) = o.take("x-forwarded-for") {
        if let Some(v) = boolean(ctx, &x) {
            if v {
                ctx.changed(
                    x.line,
                    "x-forwarded-for",
                    "rproxy sends the client IP without RProxy's `:port`, and replaces a \
                     client's own X-Forwarded-For unless it comes from trusted-proxies",
                );
            }
            t.set("x-forwarded-for", TVal::Bool(v));
        }
    }
    for key in SSL_HEADER_FLAGS {
        if let Some(v) = o.take(key).and_then(|x| boolean(ctx, &x)) {
            t.set(key, TVal::Bool(v));
        }
    }
    if let Some(x) = o.take("x-ssl-certificate") {
        if let Some(v) = boolean(ctx, &x) {
            if v {
                ctx.changed(
                    x.line,
                    "x-ssl-certificate",
                    "the PEM is sent percent-encoded (RFC 9112 forbids RProxy's folded lines)",
                );
            }
            t.set("x-ssl-certificate", TVal::Bool(v));
        }
    }
    for e in o.take_sections("x509-extension") {
        let mut eo = Opts::new(ctx, "x509-extension", &e);
        let mut et = Table::default();
        for key in ["name", "oid"] {
            match eo.take(key).and_then(|x| string(ctx, &x)) {
                Some(v) => et.set(key, TVal::Str(v)),
                None => ctx.error(e.line, format!("x509-extension without `{key}`")),
            }
        }
        eo.finish(ctx);
        t.push("x509-extension", et);
    }
    o.finish(ctx);
    t
}

fn path_opt(ctx: &mut Ctx, o: &mut Opts, key: &str, t: &mut Table) {
    if let Some(x) = o.take(key) {
        match string(ctx, &x) {
            Some(v) if v.is_empty() => ctx.drop(x.line, key, "empty path"),
            Some(v) => t.set(key, TVal::Str(v)),
            None => {}
        }
    }
}

/// `protocols-on`/`-off` names as rproxy spells them; unknown ones (RProxy ignored them
/// silently) are dropped and named.
fn protocols(ctx: &mut Ctx, x: &Opt, on: bool) -> Vec<String> {
    let mut out = Vec::new();
    for w in &x.words {
        let p = match w.text.to_ascii_lowercase().as_str() {
            "all" => "ALL",
            "tlsv1" => "TLSv1",
            "tlsv1.1" => "TLSv1.1",
            "tlsv1.2" => "TLSv1.2",
            "tlsv1.3" => "TLSv1.3",
            "sslv2" => "SSLv2",
            "sslv3" => "SSLv3",
            _ => {
                ctx.drop(
                    w.line,
                    &x.name,
                    &format!(
                        "`{}` is no protocol name (RProxy ignored it silently)",
                        w.text
                    ),
                );
                continue;
            }
        };
        if on && p.starts_with("SSL") {
            ctx.drop(
                w.line,
                &x.name,
                &format!("{p} is insecure and rproxy never enables it"),
            );
            continue;
        }
        out.push(p.to_string());
    }
    out
}

/// What a vhost's `ssl` cannot set in rproxy: OpenSSL settles them before it sees the SNI name,
/// so they come from the server's `ssl` (docs/CONFIG.md, TLS).
const SERVER_ONLY_SSL: &[&str] = &[
    "protocols-on",
    "protocols-off",
    "ciphers",
    "context-timeout",
    "cache-enabled",
    "cache-size",
    "cache-timeout",
];

fn ssl(ctx: &mut Ctx, s: &Section, in_vhost: bool) -> Option<Table> {
    let mut o = Opts::new(ctx, "ssl", s);
    let enabled = o.take("enabled").and_then(|x| boolean(ctx, &x));
    if enabled != Some(true) {
        ctx.drop(
            s.line,
            "ssl",
            "not enabled: RProxy ignored the whole section, so it is left out",
        );
        return None;
    }
    if in_vhost {
        for key in SERVER_ONLY_SSL {
            if let Some(x) = o.take(key) {
                ctx.drop(
                    x.line,
                    key,
                    "in a vhost's ssl: rproxy takes it from the server's ssl for every name \
                     (OpenSSL settles it before it sees the SNI name)",
                );
            }
        }
    }
    let mut t = Table::default();
    t.set("enabled", TVal::Bool(true));
    for key in ["cert", "key", "ca", "capath"] {
        path_opt(ctx, &mut o, key, &mut t);
    }
    if !t.has("key") {
        if let Some(TVal::Str(c)) = t.get("cert") {
            ctx.changed(
                s.line,
                "key",
                "unset: RProxy read the key from the cert file, as written here",
            );
            t.set("key", TVal::Str(c));
        }
    }
    if let Some(v) = o.take("ciphers").and_then(|x| string(ctx, &x)) {
        t.set("ciphers", TVal::Str(v));
    }
    if let Some(x) = o.take("protocols-on") {
        let p = protocols(ctx, &x, true);
        if !p.is_empty() {
            t.set("protocols-on", TVal::Strs(p));
        }
    }
    if let Some(x) = o.take("protocols-off") {
        let p = protocols(ctx, &x, false);
        t.set("protocols-off", TVal::Strs(p));
    }
    for key in ["verify-peer", "enforce-peer-cert", "cache-enabled"] {
        if let Some(v) = o.take(key).and_then(|x| boolean(ctx, &x)) {
            t.set(key, TVal::Bool(v));
        }
    }
    for key in ["verify-depth", "context-timeout"] {
        if let Some(v) = o.take(key).and_then(|x| int(ctx, &x)) {
            t.set(key, TVal::Int(v));
        }
    }
    if let Some(x) = o.take("cache-size") {
        match int(ctx, &x) {
            Some(0) => {
                ctx.changed(
                    x.line,
                    "cache-size",
                    "0 meant 1024 in RProxy: written as 1024",
                );
                t.set("cache-size", TVal::Int(1024));
            }
            Some(v) => t.set("cache-size", TVal::Int(v)),
            None => {}
        }
    }
    if let Some(x) = o.take("cache-timeout") {
        if let Some(v) = int(ctx, &x) {
            ctx.changed(
                x.line,
                "cache-timeout",
                "RProxy ignored it (OpenSSL's own cache); rproxy's shared cache applies it",
            );
            t.set("cache-timeout", TVal::Int(v));
        }
    }
    if let Some(c) = o.take_single(ctx, "crl") {
        let mut co = Opts::new(ctx, "crl", &c);
        if let Some(x) = co.take("file") {
            if let Some(v) = string(ctx, &x) {
                t.set("crl", TVal::Str(v));
            }
        }
        if let Some(x) = co.take("dir") {
            ctx.drop(
                x.line,
                "dir",
                "rproxy reads one CRL file (`crl`), not a directory",
            );
        }
        if let Some(x) = co.take("reload") {
            ctx.drop(
                x.line,
                "reload",
                "rproxy re-reads the CRL on every reload (SIGHUP), not on a timer",
            );
        }
        co.finish(ctx);
    }
    o.finish(ctx);
    Some(t)
}

/// A log destination: `file:PATH`, `syslog:FACILITY` (2.x `output`), or 1.x's
/// `type` + `filename` + `facility`. None when it cannot be an access log of ours.
fn log_target(ctx: &mut Ctx, line: u32, kind: &str, arg: &str, t: &mut Table) -> bool {
    match kind.to_ascii_lowercase().as_str() {
        "syslog" => {
            t.set("type", TVal::Str("syslog".into()));
            facility(ctx, line, arg, t);
            true
        }
        "file" if arg.is_empty() => {
            ctx.drop(
                line,
                "logging",
                "a file log without a file name is left out",
            );
            false
        }
        "file" if arg.starts_with("/dev/std") || arg.starts_with("/proc/") => {
            ctx.drop(
                line,
                "logging",
                &format!(
                    "`{arg}`: rproxy's access logs are regular files or syslog, so this log is \
                     left out"
                ),
            );
            false
        }
        "file" => {
            t.set("type", TVal::Str("file".into()));
            t.set("filename", TVal::Str(arg.to_string()));
            true
        }
        other => {
            ctx.drop(
                line,
                "logging",
                &format!("log type `{other}` is not file or syslog: this log is left out"),
            );
            false
        }
    }
}

fn facility(ctx: &mut Ctx, line: u32, f: &str, t: &mut Table) {
    let f = f.to_ascii_lowercase();
    let known = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
        "local7",
    ];
    let f = if f == "lptr" { "lpr".to_string() } else { f };
    if known.contains(&f.as_str()) {
        t.set("facility", TVal::Str(f));
    } else if !f.is_empty() {
        ctx.drop(
            line,
            "facility",
            &format!("unknown facility `{f}` (RProxy silently used kern); rproxy's local0 applies"),
        );
    }
}

fn logging(ctx: &mut Ctx, s: &Section) -> Option<Table> {
    let mut o = Opts::new(ctx, "logging", s);
    let two = s.items.iter().any(|i| {
        matches!(i, Item::Section(sub) if ["request", "error", "general"].contains(&sub.name.as_str()))
    });
    let out = if two {
        let request = o.take_single(ctx, "request");
        for name in ["error", "general"] {
            if let Some(sec) = o.take_single(ctx, name) {
                let why = if name == "error" {
                    "rproxy has one log of its own for the daemon: the global `error-log`"
                } else {
                    "RProxy parsed it but never used it"
                };
                ctx.drop(sec.line, name, why);
            }
        }
        request.and_then(|r| request_log(ctx, &r))
    } else {
        flat_log(ctx, &mut o, s)
    };
    o.finish(ctx);
    out
}

/// 2.x `logging { request { enabled, output, level, format } }`.
fn request_log(ctx: &mut Ctx, s: &Section) -> Option<Table> {
    let mut o = Opts::new(ctx, "request", s);
    let enabled = o.take("enabled").and_then(|x| boolean(ctx, &x));
    let output = o
        .take("output")
        .and_then(|x| string(ctx, &x).map(|v| (x.line, v)));
    let format = o.take("format").and_then(|x| string(ctx, &x));
    if let Some(x) = o.take("level") {
        ctx.drop(
            x.line,
            "level",
            "rproxy's access log has no levels: every request is logged",
        );
    }
    o.finish(ctx);
    if enabled != Some(true) {
        ctx.drop(
            s.line,
            "request",
            "not enabled: RProxy wrote no request log, nor does rproxy",
        );
        return None;
    }
    let mut t = Table::default();
    let (line, output) = output.unwrap_or((s.line, "file:/dev/stdout".into()));
    let (kind, arg) = output.split_once(':').unwrap_or((output.as_str(), ""));
    if !log_target(ctx, line, kind, arg, &mut t) {
        return None;
    }
    t.set(
        "format",
        TVal::Str(format.unwrap_or_else(|| RPROXY_LOG_FORMAT.into())),
    );
    Some(t)
}

/// 1.x `logging { enabled, type, filename, facility, format, errorlog }`.
fn flat_log(ctx: &mut Ctx, o: &mut Opts, s: &Section) -> Option<Table> {
    let enabled = o.take("enabled").and_then(|x| boolean(ctx, &x));
    let kind = o.take("type").and_then(|x| string(ctx, &x));
    let filename = o.take("filename").and_then(|x| string(ctx, &x));
    let fac = o
        .take("facility")
        .and_then(|x| string(ctx, &x).map(|v| (x.line, v)));
    let format = o.take("format").and_then(|x| string(ctx, &x));
    if let Some(x) = o.take("errorlog") {
        ctx.drop(
            x.line,
            "errorlog",
            "rproxy has one log of its own for the daemon: set the global `error-log`",
        );
    }
    if enabled != Some(true) {
        ctx.drop(
            s.line,
            "logging",
            "not enabled: RProxy wrote no access log, nor does rproxy",
        );
        return None;
    }
    let mut t = Table::default();
    let kind = kind.unwrap_or_else(|| "file".into());
    let arg = if kind.eq_ignore_ascii_case("syslog") {
        fac.as_ref()
            .map_or("local0".to_string(), |(_, f)| f.clone())
    } else {
        if let Some((line, _)) = &fac {
            ctx.drop(*line, "facility", "a file log has no facility");
        }
        filename.unwrap_or_default()
    };
    if !log_target(ctx, s.line, &kind, &arg, &mut t) {
        return None;
    }
    t.set(
        "format",
        TVal::Str(format.unwrap_or_else(|| RPROXY_LOG_FORMAT.into())),
    );
    Some(t)
}
