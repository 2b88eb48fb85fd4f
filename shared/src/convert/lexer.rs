//! libconfuse's lexer (`src/lexer.l`, 2.7 as RProxy pinned it; 3.3 agrees on every point below),
//! token for token, so a file reads here as RProxy read it.
//!
//! Where libconfuse silently drops or mangles characters, this lexer either mirrors it (when the
//! result cannot differ from what the author meant) or refuses the file with its line and column
//! (when RProxy ran with something other than what the file says):
//! - mirrored: `\r` (libconfuse's catch-all rule eats it, so CRLF files read as LF files);
//!   `#...` and `//...` comments to the end of the line, `/* ... */` comments (not nested); `//`
//!   inside a token (`file:///var//log`) is part of it; `foo#bar` is `foo` and a comment (a
//!   warning says so); `${VAR}` and `${VAR:-default}` (bare, or inside `"..."`) take the value of
//!   the environment of the conversion (a warning names each, since the TOML keeps the value,
//!   not the variable); every escape of `"..."` and `'...'`.
//! - refused: an unquoted `*` (libconfuse drops it: `*.example.com` became `.example.com`) and a
//!   lone `+` (dropped, splitting the token in two); a `;` in an unquoted token (no terminator in
//!   libconfuse: `port = 80;` was an error there and `addr = 1.2.3.4;` kept the `;`); a token that
//!   starts with `//` and goes on (`//x`: libconfuse reads a value, where a reader expects a
//!   comment); `\8`, `\9`, an octal escape above `\377`; an unterminated string or comment.

use std::fmt;

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// A quoted or unquoted string (option names, titles and values alike).
    Str {
        text: String,
        quoted: bool,
    },
    LBrace,
    RBrace,
    LParen,
    RParen,
    Eq,
    PlusEq,
    Comma,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Str { text, .. } => write!(f, "`{text}`"),
            Tok::LBrace => f.write_str("`{`"),
            Tok::RBrace => f.write_str("`}`"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::Eq => f.write_str("`=`"),
            Tok::PlusEq => f.write_str("`+=`"),
            Tok::Comma => f.write_str("`,`"),
        }
    }
}

/// A token and where it starts (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub line: u32,
    pub col: u32,
    /// Nothing (no space, no comment) between this token and the previous one: `'a''b'`.
    pub glued: bool,
}

/// Where a file cannot be read as RProxy read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: u32,
    pub col: u32,
    pub reason: String,
}

/// A remark about how something was read (the file is still converted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexNote {
    pub line: u32,
    pub message: String,
}

/// Every token of `text`, plus remarks; `env` looks up `${VAR}` substitutions.
pub fn lex(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<Token>, Vec<LexNote>), LexError> {
    let mut lx = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
        col: 1,
        env,
        notes: Vec::new(),
    };
    let mut out = Vec::new();
    let mut glued = false;
    while let Some(c) = lx.peek(0) {
        let (line, col) = (lx.line, lx.col);
        let tok = match c {
            ' ' | '\t' | '\r' | '\n' => {
                lx.bump();
                glued = false;
                continue;
            }
            '#' => {
                lx.line_comment();
                glued = false;
                continue;
            }
            '/' if lx.peek(1) == Some('*') => {
                lx.block_comment(line, col)?;
                glued = false;
                continue;
            }
            '/' if lx.peek(1) == Some('/') => {
                let token = lx.unquoted_run();
                if token.chars().all(|c| c == '/') {
                    lx.line_comment();
                    glued = false;
                    continue;
                }
                return Err(LexError {
                    line,
                    col,
                    reason: format!(
                        "`{token}`: libconfuse reads this as a value, not a comment; write `// ` \
                         (with a space) for a comment, or quote the value"
                    ),
                });
            }
            '{' => lx.single(Tok::LBrace),
            '}' => lx.single(Tok::RBrace),
            '(' => lx.single(Tok::LParen),
            ')' => lx.single(Tok::RParen),
            '=' => lx.single(Tok::Eq),
            ',' => lx.single(Tok::Comma),
            '+' if lx.peek(1) == Some('=') => {
                lx.bump();
                lx.bump();
                Tok::PlusEq
            }
            '+' | '*' => {
                return Err(LexError {
                    line,
                    col,
                    reason: format!(
                        "unquoted `{c}` is dropped by libconfuse, so RProxy read something other \
                         than what is written here; quote the value (\"...\")"
                    ),
                })
            }
            '"' => lx.double_quoted(line, col)?,
            '\'' => lx.single_quoted(line, col)?,
            '$' if lx.peek(1) == Some('{') && lx.find_from(lx.pos + 2, '}').is_some() => {
                lx.env_token(line)?
            }
            _ => {
                let token = lx.unquoted_run();
                if token.contains(';') {
                    return Err(LexError {
                        line,
                        col,
                        reason: format!(
                            "`{token}`: libconfuse has no `;` terminator, so the `;` is part of \
                             the value; remove it"
                        ),
                    });
                }
                if lx.peek(0) == Some('#') {
                    lx.notes.push(LexNote {
                        line,
                        message: format!(
                            "`#` right after `{token}` starts a comment (libconfuse): the value \
                             is `{token}`"
                        ),
                    });
                }
                Tok::Str {
                    text: token,
                    quoted: false,
                }
            }
        };
        out.push(Token {
            tok,
            line,
            col,
            glued,
        });
        glued = true;
    }
    Ok((out, lx.notes))
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    line: u32,
    col: u32,
    env: &'a dyn Fn(&str) -> Option<String>,
    notes: Vec<LexNote>,
}

/// Characters an unquoted string cannot hold (libconfuse's class, plus `*` and `+`, which it
/// drops and we refuse).
fn ends_unquoted(c: char) -> bool {
    matches!(
        c,
        ' ' | '#' | '"' | '\'' | '\t' | '\n' | '\r' | '=' | '{' | '}' | '(' | ')' | '+' | ',' | '*'
    )
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn single(&mut self, t: Tok) -> Tok {
        self.bump();
        t
    }

    fn find_from(&self, from: usize, want: char) -> Option<usize> {
        self.chars
            .get(from..)?
            .iter()
            .position(|&c| c == want)
            .map(|i| from + i)
    }

    fn line_comment(&mut self) {
        while let Some(c) = self.peek(0) {
            if c == '\n' {
                break;
            }
            self.bump();
        }
    }

    fn block_comment(&mut self, line: u32, col: u32) -> Result<(), LexError> {
        self.bump();
        self.bump();
        loop {
            match self.bump() {
                Some('*') if self.peek(0) == Some('/') => {
                    self.bump();
                    return Ok(());
                }
                Some(_) => {}
                None => {
                    return Err(LexError {
                        line,
                        col,
                        reason: "unterminated `/*` comment".into(),
                    })
                }
            }
        }
    }

    /// The longest run of unquoted-string characters from here (`/` included, as in
    /// libconfuse's second alternative).
    fn unquoted_run(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek(0) {
            if ends_unquoted(c) {
                break;
            }
            s.push(c);
            self.bump();
        }
        s
    }

    /// `${NAME}` or `${NAME:-default}`: the variable's value (the default only when unset).
    fn substitute(&mut self, line: u32) -> Result<String, LexError> {
        self.bump();
        self.bump();
        let mut inner = String::new();
        while let Some(c) = self.bump() {
            if c == '}' {
                break;
            }
            inner.push(c);
        }
        let (name, default) = match inner.find(":-") {
            Some(i) => (&inner[..i], Some(&inner[i + 2..])),
            None => (inner.as_str(), None),
        };
        let value = (self.env)(name);
        let used = match (&value, default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => String::new(),
        };
        let how = match (&value, default) {
            (Some(_), _) => "its value in this environment".to_string(),
            (None, Some(_)) => "its default (unset here)".to_string(),
            (None, None) => "empty (unset here)".to_string(),
        };
        self.notes.push(LexNote {
            line,
            message: format!("`${{{inner}}}` replaced by {how}: `{used}`"),
        });
        Ok(used)
    }

    fn env_token(&mut self, line: u32) -> Result<Tok, LexError> {
        Ok(Tok::Str {
            text: self.substitute(line)?,
            quoted: false,
        })
    }

    fn double_quoted(&mut self, line: u32, col: u32) -> Result<Tok, LexError> {
        self.bump();
        let mut s = String::new();
        loop {
            let (l, c) = (self.line, self.col);
            match self.peek(0) {
                None => {
                    return Err(LexError {
                        line,
                        col,
                        reason: "unterminated string (\")".into(),
                    })
                }
                Some('"') => {
                    self.bump();
                    break;
                }
                Some('$')
                    if self.peek(1) == Some('{') && self.find_from(self.pos + 2, '}').is_some() =>
                {
                    let v = self.substitute(l)?;
                    s.push_str(&v);
                }
                Some('\\') => {
                    self.bump();
                    let Some(e) = self.bump() else { continue };
                    match e {
                        '\n' => {}
                        '0'..='7' => {
                            let mut digits = String::from(e);
                            while digits.len() < 3 {
                                match self.peek(0) {
                                    Some(d @ '0'..='7') => {
                                        digits.push(d);
                                        self.bump();
                                    }
                                    _ => break,
                                }
                            }
                            let v = u32::from_str_radix(&digits, 8).unwrap_or(0);
                            if v > 0xFF {
                                return Err(LexError {
                                    line: l,
                                    col: c,
                                    reason: format!("invalid octal number `\\{digits}`"),
                                });
                            }
                            s.push(char::from(v as u8));
                        }
                        '8' | '9' => {
                            return Err(LexError {
                                line: l,
                                col: c,
                                reason: format!("bad escape sequence `\\{e}`"),
                            })
                        }
                        'x' if self.peek(0).is_some_and(|d| d.is_ascii_hexdigit()) => {
                            let mut digits = String::new();
                            while digits.len() < 2 {
                                match self.peek(0) {
                                    Some(d) if d.is_ascii_hexdigit() => {
                                        digits.push(d);
                                        self.bump();
                                    }
                                    _ => break,
                                }
                            }
                            let v = u8::from_str_radix(&digits, 16).unwrap_or(0);
                            s.push(char::from(v));
                        }
                        'n' => s.push('\n'),
                        'r' => s.push('\r'),
                        'b' => s.push('\u{8}'),
                        'f' => s.push('\u{c}'),
                        'a' => s.push('\u{7}'),
                        'e' => s.push('\u{1b}'),
                        't' => s.push('\t'),
                        'v' => s.push('\u{b}'),
                        other => s.push(other),
                    }
                }
                Some(ch) => {
                    s.push(ch);
                    self.bump();
                }
            }
        }
        Ok(Tok::Str {
            text: s,
            quoted: true,
        })
    }

    fn single_quoted(&mut self, line: u32, col: u32) -> Result<Tok, LexError> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(LexError {
                        line,
                        col,
                        reason: "unterminated string (')".into(),
                    })
                }
                Some('\'') => break,
                Some('\\') => match self.bump() {
                    Some('\n') => {}
                    Some(e @ ('\\' | '\'')) => s.push(e),
                    // Any other escape keeps its backslash.
                    Some(e) => {
                        s.push('\\');
                        s.push(e);
                    }
                    None => s.push('\\'),
                },
                Some(ch) => s.push(ch),
            }
        }
        Ok(Tok::Str {
            text: s,
            quoted: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn strs(text: &str) -> Vec<String> {
        strs_with(text, &no_env)
    }

    /// The string tokens of `text`, variables looked up in `env`.
    fn strs_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        lex(text, env)
            .unwrap()
            .0
            .into_iter()
            .filter_map(|t| match t.tok {
                Tok::Str { text, .. } => Some(text),
                _ => None,
            })
            .collect()
    }

    fn err(text: &str) -> LexError {
        lex(text, &no_env).unwrap_err()
    }

    #[test]
    fn unquoted_star_is_refused_with_its_place() {
        let e = err("vhost x {}\nvhost *.example.com {");
        assert_eq!((e.line, e.col), (2, 7));
        assert!(e.reason.contains("unquoted `*` is dropped"), "{}", e.reason);
        assert!(err("aliases = { *.foo.com }").reason.contains('*'));
        assert!(err("uri-gmatch = /static/*").reason.contains('*'));
        // Quoted, it is a glob.
        assert_eq!(
            strs("uri-gmatch = \"/static/*\""),
            ["uri-gmatch", "/static/*"]
        );
    }

    #[test]
    fn lone_plus_is_refused_but_plus_equals_is_append() {
        assert!(err("a+b").reason.contains("unquoted `+`"));
        let (t, _) = lex("l += {x}", &no_env).unwrap();
        assert_eq!(t[1].tok, Tok::PlusEq);
    }

    #[test]
    fn semicolons_are_refused() {
        assert!(err("port = 8080;").reason.contains("no `;` terminator"));
        assert!(err("addr = 127.0.0.1;").reason.contains("`127.0.0.1;`"));
        assert_eq!(strs("ciphers = \"A;B\""), ["ciphers", "A;B"]);
    }

    #[test]
    fn comments() {
        assert_eq!(strs("a = foo#bar\nb = c"), ["a", "foo", "b", "c"]);
        let (_, notes) = lex("a = foo#bar", &no_env).unwrap();
        assert!(notes[0].message.contains("`#` right after `foo`"));
        assert_eq!(strs("a = file:///var//log"), ["a", "file:///var//log"]);
        assert_eq!(strs("// one\n/// two\n# three\na = b // four"), ["a", "b"]);
        assert_eq!(strs("a /* x \n * y */ = b"), ["a", "b"]);
        // Not nested: the first `*/` ends it.
        assert!(err("/* a /* b */ c */").reason.contains('*'));
        assert!(err("a = b //c").reason.contains("not a comment"));
        assert!(err("/* open").reason.contains("unterminated"));
        // Lines are counted through comments.
        let (t, _) = lex("/*\n\n*/ a", &no_env).unwrap();
        assert_eq!((t[0].line, t[0].col), (3, 4));
    }

    #[test]
    fn crlf_reads_as_lf() {
        assert_eq!(strs("a = b\r\nc = d\r\n"), ["a", "b", "c", "d"]);
    }

    #[test]
    fn double_quoted_escapes() {
        assert_eq!(strs(r#"x = "a\x41\101b""#)[1], "aAAb");
        assert_eq!(strs(r#"x = "\n\t\"\\\q""#)[1], "\n\t\"\\q");
        assert_eq!(strs("x = \"a\\\nb\"")[1], "ab");
        assert_eq!(strs("x = \"a\nb\"")[1], "a\nb");
        assert!(err(r#"x = "\9""#).reason.contains("bad escape"));
        assert!(err(r#"x = "\777""#).reason.contains("invalid octal"));
        assert!(err("x = \"open").reason.contains("unterminated"));
    }

    #[test]
    fn single_quoted_knows_only_two_escapes() {
        assert_eq!(strs(r"x = 'it\'s \\ \n'")[1], r"it's \ \n");
        assert_eq!(strs(r"x = '${HOME}'")[1], "${HOME}");
        assert!(err("x = 'open").reason.contains("unterminated"));
    }

    #[test]
    fn adjacent_strings_are_glued_tokens() {
        let (t, _) = lex("x = 'it''s'", &no_env).unwrap();
        assert!(!t[2].glued && t[3].glued);
    }

    #[test]
    fn environment_substitution() {
        let env = |k: &str| match k {
            "SET" => Some("v".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let lexed = |s: &str| strs_with(s, &env);
        assert_eq!(lexed("a = ${SET}")[1], "v");
        assert_eq!(lexed("a = ${UNSET:-d}")[1], "d");
        // Set but empty stays empty: the default is for unset only.
        assert_eq!(lexed("a = ${EMPTY:-d}")[1], "");
        assert_eq!(lexed("a = \"x${SET}y${UNSET}z\"")[1], "xvyz");
        let (_, notes) = lex("a = ${SET}", &env).unwrap();
        assert!(notes[0].message.contains("`${SET}`"));
    }
}
