//! `rproxy --convert FILE.cfg`: RProxy's own libconfuse configuration (1.x, the seed README's
//! syntax, and 2.x with named downstreams, vhosts and rules) to our TOML (DESIGN section 12).
//!
//! Pure: text in, TOML text and remarks out. [`lexer`] reads the file as libconfuse did (and
//! refuses what libconfuse would have silently mangled), [`parser`] builds a generic tree,
//! [`mapping`] turns RProxy's options into ours, naming every option it drops or whose meaning
//! changes, and [`toml_out`] writes the result. The master's `--convert` flag does the I/O.

mod lexer;
mod mapping;
mod parser;
mod toml_out;

pub use mapping::Generation;

/// A remark about one line of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub line: u32,
    pub message: String,
}

/// A converted file.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub toml: String,
    pub generation: Generation,
    /// Every option dropped, changed or read in a surprising way, in file order.
    pub notes: Vec<Note>,
}

/// Why a file could not be converted: each problem with its line (and column for syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub line: u32,
    /// 0 when only the line is known.
    pub col: u32,
    pub reason: String,
}

/// Convert `text`, the content of the RProxy file `source` (named in the output's header);
/// `env` answers `${VAR}` substitutions.
pub fn convert(
    source: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Conversion, Vec<Failure>> {
    let syntax = |e: lexer::LexError| {
        vec![Failure {
            line: e.line,
            col: e.col,
            reason: e.reason,
        }]
    };
    let (tokens, lex_notes) = lexer::lex(text, env).map_err(syntax)?;
    let root = parser::parse(&tokens).map_err(syntax)?;
    let mut ctx = mapping::Ctx {
        notes: lex_notes
            .into_iter()
            .map(|n| Note {
                line: n.line,
                message: n.message,
            })
            .collect(),
        errors: Vec::new(),
    };
    let generation = mapping::generation(&root);
    let table = mapping::file(&mut ctx, &root);
    if !ctx.errors.is_empty() {
        let mut errors: Vec<Failure> = ctx
            .errors
            .into_iter()
            .map(|n| Failure {
                line: n.line,
                col: 0,
                reason: n.message,
            })
            .collect();
        errors.sort_by_key(|f| f.line);
        return Err(errors);
    }
    let mut notes = ctx.notes;
    notes.sort_by_key(|n| n.line);
    let toml = format!("{}{}", header(source, generation), table.render());
    Ok(Conversion {
        toml,
        generation,
        notes,
    })
}

fn header(source: &str, generation: Generation) -> String {
    let form = match generation {
        Generation::One => "RProxy 1.x form: flat servers with rewrites",
        Generation::Two => "RProxy 2.x form: named downstreams, vhosts and rules",
    };
    // The source name goes into a comment: keep it on one line.
    let source: String = source
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!(
        "# Converted by `rproxy --convert` from {source} ({form}).\n\
         # Check it with `rproxy -t -c FILE`. The conversion named every dropped option, and\n\
         # every option whose meaning changed, on stderr as `{source}:LINE: ...`.\n\
         #\n\
         # Keys the RProxy file left unset take rproxy's defaults (docs/CONFIG.md). Where those\n\
         # differ from RProxy's:\n\
         # - user/group: nobody/nogroup (RProxy kept its own user when unset);\n\
         # - server: read-timeout 60, write-timeout 32, pending-timeout 10, max-pending 50\n\
         #   (RProxy: no limits);\n\
         # - downstream: connections 10, write-timeout 2, retry 0.5 s;\n\
         # - headers: X-Forwarded-For and X-Forwarded-Proto are added even with no headers\n\
         #   section (RProxy added none), x-ssl-certificate is false (RProxy: true in a headers\n\
         #   section);\n\
         # - ssl: TLS 1.2 and 1.3 with forward-secret AEAD ciphers (RProxy: every protocol).\n\n"
    )
}

#[cfg(test)]
mod tests;
