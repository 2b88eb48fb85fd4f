//! A small TOML writer for the converter: tables keep the order they were built in (so the
//! output reads like the input), and every string is escaped, so the text always parses.

use std::fmt::Write;

/// A value of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TVal {
    Str(String),
    Int(i64),
    Bool(bool),
    Strs(Vec<String>),
}

/// A table: its keys, then its sub-tables and arrays of tables, in insertion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    keys: Vec<(String, TVal)>,
    children: Vec<Child>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Child {
    Table(String, Table),
    Array(String, Vec<Table>),
}

impl Table {
    /// Set `key` (replacing an earlier value of it).
    pub fn set(&mut self, key: &str, v: TVal) {
        match self.keys.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.keys.push((key.to_string(), v)),
        }
    }

    pub fn get(&self, key: &str) -> Option<TVal> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    pub fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }

    /// `[path.name]`.
    pub fn table(&mut self, name: &str, t: Table) {
        self.children.push(Child::Table(name.to_string(), t));
    }

    /// One more `[[path.name]]`.
    pub fn push(&mut self, name: &str, t: Table) {
        for c in &mut self.children {
            if let Child::Array(n, v) = c {
                if n == name {
                    v.push(t);
                    return;
                }
            }
        }
        self.children.push(Child::Array(name.to_string(), vec![t]));
    }

    /// The text of this table as the document root.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_keys(&mut out);
        self.render_children("", &mut out);
        out
    }

    fn render_keys(&self, out: &mut String) {
        for (k, v) in &self.keys {
            let _ = writeln!(out, "{k} = {}", value(v));
        }
    }

    fn render_children(&self, prefix: &str, out: &mut String) {
        for c in &self.children {
            match c {
                Child::Table(name, t) => {
                    let path = format!("{prefix}{name}");
                    let _ = writeln!(out, "\n[{path}]");
                    t.render_keys(out);
                    t.render_children(&format!("{path}."), out);
                }
                Child::Array(name, ts) => {
                    let path = format!("{prefix}{name}");
                    for t in ts {
                        let _ = writeln!(out, "\n[[{path}]]");
                        t.render_keys(out);
                        t.render_children(&format!("{path}."), out);
                    }
                }
            }
        }
    }
}

fn value(v: &TVal) -> String {
    match v {
        TVal::Str(s) => quote(s),
        TVal::Int(i) => i.to_string(),
        TVal::Bool(b) => b.to_string(),
        TVal::Strs(items) => {
            let inner: Vec<String> = items.iter().map(|s| quote(s)).collect();
            format!("[{}]", inner.join(", "))
        }
    }
}

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Format;

    #[test]
    fn nested_arrays_and_escapes_parse_back() {
        let mut root = Table::default();
        root.set("user", TVal::Str("a\"b\\c\u{1}\n".into()));
        let mut server = Table::default();
        server.set("port", TVal::Int(8080));
        let mut headers = Table::default();
        headers.set("x-forwarded-for", TVal::Bool(false));
        let mut ext = Table::default();
        ext.set("name", TVal::Str("X-E".into()));
        headers.push("x509-extension", ext);
        server.table("headers", headers);
        let mut vhost = Table::default();
        vhost.set("aliases", TVal::Strs(vec!["a".into(), "b".into()]));
        let mut rule = Table::default();
        rule.set("uri-match", TVal::Str("/a".into()));
        vhost.push("rule", rule);
        server.push("vhost", vhost);
        root.push("server", server.clone());
        root.push("server", server);
        let text = root.render();
        let v: figment::value::Value =
            figment::Figment::from(figment::providers::Toml::string(&text))
                .extract()
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let d = v.as_dict().unwrap();
        assert_eq!(d["user"].as_str(), Some("a\"b\\c\u{1}\n"));
        let servers = d["server"].as_array().unwrap();
        assert_eq!(servers.len(), 2);
        let s0 = servers[0].as_dict().unwrap();
        let rule = &s0["vhost"].as_array().unwrap()[0].as_dict().unwrap()["rule"];
        assert_eq!(
            rule.as_array().unwrap()[0].as_dict().unwrap()["uri-match"].as_str(),
            Some("/a")
        );
        let ext = &s0["headers"].as_dict().unwrap()["x509-extension"];
        assert_eq!(ext.as_array().unwrap().len(), 1);
    }
}
