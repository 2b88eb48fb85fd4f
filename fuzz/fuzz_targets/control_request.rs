//! The master's control-socket parser on arbitrary bytes: what a peer may send (framing, then
//! the request line) and what `rproxy ctl` may read back. Nothing may panic, and what is
//! accepted must hold the protocol's promises.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../master/control/protocol.rs"]
#[allow(dead_code)]
mod protocol;

use protocol::{Command, ParseError, Parsed, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    // The connection reads at most MAX_REQUEST + 2 bytes; the framing must decide on them.
    let window = &data[..data.len().min(MAX_REQUEST + 2)];
    for at_eof in [false, true] {
        let Ok(Some(line)) = protocol::line(window, at_eof) else {
            continue;
        };
        assert!(line.len() <= MAX_REQUEST);
        assert!(!line.contains(&b'\n'));
        match protocol::parse(line) {
            Ok(Parsed::Line(r)) => {
                // Only printable ASCII reaches a command, and names echo nothing else.
                assert!(line.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)));
                if let Command::SetDownstream { server, name, .. } = &r.command {
                    assert!(!server.is_empty() && !name.is_empty() && !server.contains('/'));
                }
                assert!(!r.json || matches!(
                    r.command,
                    Command::ShowInfo | Command::ShowWorkers | Command::ShowDownstreams
                ));
            }
            Ok(Parsed::Http(_)) => {}
            Err(ParseError::Unknown(w)) => assert!(w.len() <= 43),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    // The whole input as a line, and as a reply `rproxy ctl` reads.
    let _ = protocol::parse(data);
    if let Some((_, body)) = protocol::parse_reply(data) {
        assert!(body.len() < data.len());
    }
});
