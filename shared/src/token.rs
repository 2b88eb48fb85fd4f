//! RFC 9110 `token` characters: what a header field name (and a method, and a `Connection` or
//! `Transfer-Encoding` list element) may contain. One table for the configuration checks, the
//! log-format compiler and the worker's HTTP code.

/// `TCHAR[b]`: whether byte `b` is a `tchar`.
pub const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// Whether `b` is a `tchar`.
#[inline]
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// Whether `s` is a non-empty `token` (a valid header name).
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_chars() {
        assert!(is_token(b"X-Forwarded-For"));
        assert!(is_token(b"a!#$%&'*+-.^_`|~9"));
        for bad in [
            &b""[..],
            b"a b",
            b"a:b",
            b"a\"",
            b"(x)",
            b"a/b",
            b"\xc3\xa9",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
