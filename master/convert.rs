//! `rproxy --convert FILE.cfg`: the I/O around `rproxy_shared::convert` (pure). The TOML goes
//! to stdout, every remark to stderr as `FILE:LINE: ...`; exit 0 when converted (remarks or
//! not), 1 when the file cannot be read or is not a configuration RProxy could have read.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use rproxy_shared::convert::{convert, Generation};

pub fn run(source: &Path) -> ExitCode {
    let name = source.display().to_string();
    let bytes = match std::fs::read(source) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("rproxy: cannot read {name}: {e}");
            return ExitCode::from(1);
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        eprintln!("rproxy: {name}: not UTF-8 text; convert it first (iconv)");
        return ExitCode::from(1);
    };
    let env = |k: &str| std::env::var(k).ok();
    match convert(&name, &text, &env) {
        Ok(c) => {
            for n in &c.notes {
                eprintln!("{name}:{}: {}", n.line, n.message);
            }
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(c.toml.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("rproxy: writing the converted configuration: {e}");
                return ExitCode::from(1);
            }
            let form = match c.generation {
                Generation::One => "1.x",
                Generation::Two => "2.x",
            };
            eprintln!(
                "rproxy: converted {name} (RProxy {form}), {} remark(s) above; check the result \
                 with `rproxy -t -c FILE`",
                c.notes.len()
            );
            ExitCode::SUCCESS
        }
        Err(failures) => {
            for f in &failures {
                if f.col > 0 {
                    eprintln!("{name}:{}:{}: {}", f.line, f.col, f.reason);
                } else {
                    eprintln!("{name}:{}: {}", f.line, f.reason);
                }
            }
            eprintln!(
                "rproxy: cannot convert {name}: {} error(s); nothing written",
                failures.len()
            );
            ExitCode::from(1)
        }
    }
}
