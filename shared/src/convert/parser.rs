//! libconfuse's grammar as RProxy uses it: `name = value`, `name = { a, b }`, `name += { c }`,
//! `name { ... }` and `name title { ... }`, with no terminator (newlines are plain spaces).
//! Option names are lowercased (RProxy's `CFGF_NOCASE`); titles keep their case. What it
//! builds is generic: which names exist, and what they mean, is `mapping.rs`'s business.

use super::lexer::{LexError, Tok, Token};

/// A string as written: its text, where it is, and whether it was quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub quoted: bool,
    pub line: u32,
    pub col: u32,
}

/// The right-hand side of `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    One(Word),
    /// `{ a, b }`; `append` for `+=`.
    List {
        items: Vec<Word>,
        append: bool,
    },
}

/// A `{ ... }` block: the whole file is one without a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Lowercased.
    pub name: String,
    pub title: Option<Word>,
    pub line: u32,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Opt {
        /// Lowercased.
        name: String,
        line: u32,
        value: Value,
    },
    Section(Section),
}

/// Parse the tokens of a whole file.
pub fn parse(tokens: &[Token]) -> Result<Section, LexError> {
    let mut p = Parser { tokens, pos: 0 };
    let items = p.items(None)?;
    Ok(Section {
        name: String::new(),
        title: None,
        line: 1,
        items,
    })
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

fn error(t: &Token, reason: String) -> LexError {
    LexError {
        line: t.line,
        col: t.col,
        reason,
    }
}

impl Parser<'_> {
    fn next(&mut self) -> Option<&Token> {
        let t = self.tokens.get(self.pos)?;
        self.pos += 1;
        Some(t)
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn end_error(&self, what: &str) -> LexError {
        let (line, col) = self.tokens.last().map_or((1, 1), |t| (t.line, t.col + 1));
        LexError {
            line,
            col,
            reason: format!("unexpected end of file: {what}"),
        }
    }

    /// Items up to the `}` closing the section opened by `open` (or to the end of the file).
    fn items(&mut self, open: Option<&Token>) -> Result<Vec<Item>, LexError> {
        let mut items = Vec::new();
        loop {
            let Some(t) = self.next().cloned() else {
                return match open {
                    None => Ok(items),
                    Some(o) => Err(self.end_error(&format!(
                        "the `{{` at line {} col {} is never closed",
                        o.line, o.col
                    ))),
                };
            };
            let name = match &t.tok {
                Tok::RBrace if open.is_some() => return Ok(items),
                Tok::Str { text, .. } => text.to_ascii_lowercase(),
                other => return Err(error(&t, format!("expected an option name, found {other}"))),
            };
            if name == "@include" || name == ".include" {
                return Err(error(
                    &t,
                    format!(
                        "`{name}` is not libconfuse syntax (RProxy refused this file); inline \
                         the included text"
                    ),
                ));
            }
            let Some(after) = self.next().cloned() else {
                return Err(self.end_error(&format!("option `{name}` has no value")));
            };
            match &after.tok {
                Tok::Eq => {
                    let value = self.value(&name, false)?;
                    items.push(Item::Opt {
                        name,
                        line: t.line,
                        value,
                    });
                }
                Tok::PlusEq => {
                    let value = self.value(&name, true)?;
                    items.push(Item::Opt {
                        name,
                        line: t.line,
                        value,
                    });
                }
                Tok::LBrace => {
                    let inner = self.items(Some(&after))?;
                    items.push(Item::Section(Section {
                        name,
                        title: None,
                        line: t.line,
                        items: inner,
                    }));
                }
                Tok::Str { text, quoted } => {
                    let title = Word {
                        text: text.clone(),
                        quoted: *quoted,
                        line: after.line,
                        col: after.col,
                    };
                    match self.next().cloned() {
                        Some(open) if open.tok == Tok::LBrace => {
                            let inner = self.items(Some(&open))?;
                            items.push(Item::Section(Section {
                                name,
                                title: Some(title),
                                line: t.line,
                                items: inner,
                            }));
                        }
                        Some(other) => {
                            return Err(error(
                                &other,
                                format!(
                                    "expected `{{` after `{name} {}`, found {}; (is `=` missing \
                                     after `{name}`?)",
                                    title.text, other.tok
                                ),
                            ))
                        }
                        None => return Err(self.end_error(&format!("section `{name}` not opened"))),
                    }
                }
                Tok::LParen => {
                    return Err(error(
                        &t,
                        format!(
                            "`{name}(...)`: RProxy registers no libconfuse function (no \
                             `include`), so RProxy refused this file; inline the included text"
                        ),
                    ))
                }
                other => {
                    return Err(error(
                        &after,
                        format!("expected `=` or `{{` after `{name}`, found {other}"),
                    ))
                }
            }
        }
    }

    fn word(&self, t: &Token) -> Option<Word> {
        match &t.tok {
            Tok::Str { text, quoted } => Some(Word {
                text: text.clone(),
                quoted: *quoted,
                line: t.line,
                col: t.col,
            }),
            _ => None,
        }
    }

    /// After `=` or `+=`: one string, or a list.
    fn value(&mut self, name: &str, append: bool) -> Result<Value, LexError> {
        let Some(t) = self.next().cloned() else {
            return Err(self.end_error(&format!("option `{name}` has no value")));
        };
        let value = if t.tok == Tok::LBrace {
            let mut items = Vec::new();
            loop {
                let Some(i) = self.next().cloned() else {
                    return Err(self.end_error(&format!("the list of `{name}` is never closed")));
                };
                match &i.tok {
                    Tok::RBrace => break,
                    Tok::Str { .. } => {
                        items.push(self.word(&i).expect("a string token"));
                        match self.next().cloned() {
                            Some(s) if s.tok == Tok::Comma => {}
                            Some(s) if s.tok == Tok::RBrace => break,
                            Some(s) => {
                                return Err(error(
                                    &s,
                                    format!(
                                        "expected `,` or `}}` in the list of `{name}`, found {}",
                                        s.tok
                                    ),
                                ))
                            }
                            None => {
                                return Err(self
                                    .end_error(&format!("the list of `{name}` is never closed")))
                            }
                        }
                    }
                    other => {
                        return Err(error(
                            &i,
                            format!("expected a value in the list of `{name}`, found {other}"),
                        ))
                    }
                }
            }
            Value::List { items, append }
        } else if let Some(w) = self.word(&t) {
            if append {
                // libconfuse takes `+=` with a list only.
                return Err(error(&t, format!("`{name} +=` needs a list (`{{ ... }}`)")));
            }
            Value::One(w)
        } else {
            return Err(error(
                &t,
                format!("expected a value for `{name}`, found {}", t.tok),
            ));
        };
        // `'it''s'`, `${HOME}/x`: libconfuse never joins two strings; the second would be read
        // as the next option's name.
        if let Some(n) = self.peek() {
            if n.glued && matches!(n.tok, Tok::Str { .. }) {
                return Err(error(
                    n,
                    format!(
                        "{} directly after the value of `{name}`: libconfuse does not join \
                         adjacent strings; quote the whole value",
                        n.tok
                    ),
                ));
            }
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::lex;
    use super::*;

    fn parse_str(s: &str) -> Result<Section, LexError> {
        let (t, _) = lex(s, &|_| None)?;
        parse(&t)
    }

    #[test]
    fn statements_need_no_terminator() {
        let s = parse_str("addr = 0.0.0.0 port=010 Server { X = { 1, 2, } }").unwrap();
        assert_eq!(s.items.len(), 3);
        let Item::Section(sec) = &s.items[2] else {
            panic!()
        };
        assert_eq!(sec.name, "server");
        let Item::Opt { name, value, .. } = &sec.items[0] else {
            panic!()
        };
        assert_eq!(name, "x");
        let Value::List { items, .. } = value else {
            panic!()
        };
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn titled_sections_quoted_or_not() {
        let s = parse_str("vhost \"a.com\" { rule R1 { } }").unwrap();
        let Item::Section(v) = &s.items[0] else {
            panic!()
        };
        assert_eq!(v.title.as_ref().unwrap().text, "a.com");
        let Item::Section(r) = &v.items[0] else {
            panic!()
        };
        assert_eq!(r.title.as_ref().unwrap().text, "R1");
    }

    #[test]
    fn empty_list_and_append() {
        let s = parse_str("l = {}\nl += { a }").unwrap();
        assert!(
            matches!(&s.items[0], Item::Opt { value: Value::List { items, append: false }, .. } if items.is_empty())
        );
        assert!(matches!(
            &s.items[1],
            Item::Opt {
                value: Value::List { append: true, .. },
                ..
            }
        ));
    }

    #[test]
    fn errors_say_where() {
        let e = parse_str("server {\n port = 1\n").unwrap_err();
        assert!(e.reason.contains("never closed"), "{}", e.reason);
        let e = parse_str("include(\"other.cfg\")").unwrap_err();
        assert!(e.reason.contains("no `include`"), "{}", e.reason);
        let e = parse_str("@include \"other.cfg\"").unwrap_err();
        assert!(e.reason.contains("not libconfuse syntax"), "{}", e.reason);
        let e = parse_str("x = 'it''s'").unwrap_err();
        assert!(e.reason.contains("does not join"), "{}", e.reason);
        assert_eq!((e.line, e.col), (1, 9));
        let e = parse_str("addr =\n port = 80").unwrap_err();
        assert!(e.reason.contains("expected"), "{}", e.reason);
        assert_eq!(e.line, 2);
        assert!(parse_str("x += y")
            .unwrap_err()
            .reason
            .contains("needs a list"));
        assert!(parse_str("}").unwrap_err().reason.contains("option name"));
    }
}
