//! RProxy's globs (`name`/`aliases` of a vhost, `uri-gmatch` of a rule): `*` matches any run of
//! characters (`/` and `.` included), every other character matches itself. They live here
//! because validation (bad globs, overlap warnings) and the worker's route table must agree on
//! what a glob means; the worker compiles them into anchored regexes once per configuration.

/// The anchored regex source of `glob` (`*` -> `.*`, everything else literal).
pub fn to_regex(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 8);
    out.push('^');
    for (i, part) in glob.split('*').enumerate() {
        if i > 0 {
            out.push_str(".*");
        }
        out.push_str(&regex::escape(part));
    }
    out.push('$');
    out
}

/// Whether `glob` matches `text`, byte for byte (callers fold case for host names). Used at
/// load time only; the request path uses compiled regexes.
pub fn matches(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (position after it in g, position in t it covers to).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi + 1, ti));
            gi += 1;
        } else if gi < g.len() && g[gi] == t[ti] {
            gi += 1;
            ti += 1;
        } else if let Some((sg, st)) = star {
            gi = sg;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

/// Whether every text `inner` matches is matched by `outer` too. Sound (never a false "yes"):
/// `outer` has no literal `*`, so if it matches the text of `inner` itself, each `*` of `inner`
/// falls inside a `*` of `outer`, whatever it stands for.
pub fn covers(outer: &str, inner: &str) -> bool {
    matches(outer, inner)
}

/// Why `glob` can never be a path glob (`uri-gmatch`), if so: a path always starts with `/`, so
/// a glob must start with `/` or `*` to ever match.
pub fn bad_path_glob(glob: &str) -> Option<&'static str> {
    if glob.is_empty() {
        Some("must not be empty")
    } else if !glob.starts_with('/') && !glob.starts_with('*') {
        Some("a path glob must start with `/` or `*` (a path always starts with `/`)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_literal_elsewhere() {
        assert!(matches("*", ""));
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches("/static/*", "/static/"));
        assert!(matches("/static/*", "/static/a/b.css"));
        assert!(!matches("/static/*", "/stat"));
        assert!(matches("/a*b*c", "/axxbyyc"));
        assert!(!matches("/a*b*c", "/axxbyy"));
        assert!(matches("/a.b", "/a.b"));
        assert!(!matches("/a.b", "/aXb"));
        assert!(matches("**", "x"));
    }

    #[test]
    fn regex_form_agrees_with_the_matcher() {
        for (g, t) in [
            ("*.example.com", "a.example.com"),
            ("/a.b", "/aXb"),
            ("/a*b", "/a/x/b"),
            ("/(x)+", "/(x)+"),
            ("*", "anything"),
            ("/p", "/p/"),
        ] {
            let re = regex::Regex::new(&to_regex(g)).unwrap();
            assert_eq!(re.is_match(t), matches(g, t), "{g} vs {t}");
        }
    }

    #[test]
    fn covers_is_sound() {
        assert!(covers("/static/*", "/static/img/*"));
        assert!(covers("*", "/x"));
        assert!(covers("/x*", "/x*y"));
        assert!(!covers("/a*b", "/a*"));
        assert!(!covers("/static/img/*", "/static/*"));
    }

    #[test]
    fn bad_path_globs() {
        assert!(bad_path_glob("").is_some());
        assert!(bad_path_glob("static/*").is_some());
        assert!(bad_path_glob("/static/*").is_none());
        assert!(bad_path_glob("*.jpg").is_none());
    }
}
