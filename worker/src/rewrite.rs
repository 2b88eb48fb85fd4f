//! RProxy 1.x URI rewriting: the first rule whose `src` matches the path wins, and the new path
//! is `dst` followed by what comes after the last capture group's match (after the whole match
//! when `src` has no group, or when no group took part in the match); the query is kept.
//! `^(/dir/).*` with `dst = "/derp/"`: `/dir/a/b.html?x=1` -> `/derp/a/b.html?x=1`.

use regex::Regex;

/// Rewrite `path_and_query` with the first matching `(regex, dst)`; `None` when none matches.
pub fn rewrite<'a>(
    rules: impl IntoIterator<Item = (&'a Regex, &'a str)>,
    path_and_query: &str,
) -> Option<String> {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    for (re, dst) in rules {
        let Some(caps) = re.captures(path) else {
            continue;
        };
        let cut = (1..caps.len())
            .rev()
            .find_map(|i| caps.get(i))
            .or_else(|| caps.get(0))
            .map_or(0, |m| m.end());
        let rest = &path[cut..];
        let mut out = String::with_capacity(dst.len() + rest.len() + query.len());
        out.push_str(dst);
        out.push_str(rest);
        out.push_str(query);
        return Some(out);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str, dst: &str, p: &str) -> Option<String> {
        let re = Regex::new(src).unwrap();
        rewrite([(&re, dst)], p)
    }

    #[test]
    fn rproxy_readme_example() {
        assert_eq!(
            one("^(/dir/).*", "/derp/", "/dir/something/file.html").as_deref(),
            Some("/derp/something/file.html")
        );
    }

    #[test]
    fn query_is_kept_and_not_matched() {
        assert_eq!(
            one("^(/dir/).*", "/derp/", "/dir/x?a=/dir/&b=2").as_deref(),
            Some("/derp/x?a=/dir/&b=2")
        );
        assert_eq!(one("^(/dir/)", "/derp/", "/other?/dir/"), None);
    }

    #[test]
    fn no_group_cuts_after_whole_match() {
        assert_eq!(
            one("^/api", "/v2", "/api/users").as_deref(),
            Some("/v2/users")
        );
    }

    #[test]
    fn last_group_wins() {
        assert_eq!(
            one("^/(a)/(b/)", "/x/", "/a/b/c/d").as_deref(),
            Some("/x/c/d")
        );
        // The optional second group did not take part: cut after the first.
        assert_eq!(one("^/(a)(/b)?", "/x", "/a/c").as_deref(), Some("/x/c"));
    }

    #[test]
    fn first_matching_rule_wins() {
        let a = Regex::new("^(/a/)").unwrap();
        let b = Regex::new("^(/)").unwrap();
        assert_eq!(
            rewrite([(&a, "/one/"), (&b, "/two/")], "/a/z").as_deref(),
            Some("/one/z")
        );
        assert_eq!(
            rewrite([(&a, "/one/"), (&b, "/two/")], "/b/z").as_deref(),
            Some("/two/b/z")
        );
    }
}
