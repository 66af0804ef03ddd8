//! Text for a terminal or a log from names that may hold anything: the
//! escapes every listing, warning and error line goes through.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `bytes` (a file name, a path, a host or set name) as a listing shows
/// it: as text, with every character that could move the cursor, end a
/// line or drive the terminal written as an escape, so that a name can
/// neither forge a line of the listing nor reach the terminal as a
/// command. `\n`, `\t` and `\r` as such, other control characters as
/// `\x1b` (ASCII) or `\u{85}` (C1), the marks that reorder text or
/// break lines (U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069,
/// U+2028, U+2029) as `\u{202e}`, bytes that are no UTF-8 as `\xff` (always
/// 0x80 and up, so never taken for an ASCII escape), and the backslash
/// itself as `\\`, so that no escape can be forged with plain text. As
/// `ls -b` and restic do. JSON output has its own escapes and does not
/// use this.
pub fn escape(bytes: &[u8]) -> Cow<'_, str> {
    escape_with(bytes, true)
}

/// [`escape`] of a message (a warning), leaving backslashes as they
/// are: a message is read, not parsed, and often quotes text that is
/// escaped already (`{:?}`).
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    escape_with(text.as_bytes(), false)
}

/// True for a character [`escape`] writes as an escape.
fn needs_escape(c: char, backslash: bool) -> bool {
    (c == '\\' && backslash)
        || c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            | '\u{2028}' | '\u{2029}')
}

fn escape_with(bytes: &[u8], backslash: bool) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.chars().any(|c| needs_escape(c, backslash)) {
            return Cow::Borrowed(text);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                c if !needs_escape(c, backslash) => out.push(c),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_ascii() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// A path in a message: as [`Path::display`] shows it, but with each
/// byte that is no UTF-8 written as `\xff` instead of U+FFFD, so that
/// two names differing only in such bytes are told apart (as `ls` shows
/// them). Controls are left to [`escape_controls`], which every warning
/// and error line goes through.
pub struct Shown<'a>(&'a [u8]);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// [`Shown`] for paths and names, in place of `display()` (or a lossy
/// conversion) in messages.
pub trait Show {
    fn shown(&self) -> Shown<'_>;
}

impl Show for std::path::Path {
    fn shown(&self) -> Shown<'_> {
        Shown(std::os::unix::ffi::OsStrExt::as_bytes(self.as_os_str()))
    }
}

impl Show for [u8] {
    fn shown(&self) -> Shown<'_> {
        Shown(self)
    }
}

impl Show for std::ffi::OsStr {
    fn shown(&self) -> Shown<'_> {
        Shown(std::os::unix::ffi::OsStrExt::as_bytes(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_unambiguously() {
        for (given, shown) in [
            (&b"plain name.txt"[..], "plain name.txt"),
            ("caf\u{e9} \u{1f600}".as_bytes(), "caf\u{e9} \u{1f600}"),
            (b"x\nfake", "x\\nfake"),
            (b"a\tb\rc", "a\\tb\\rc"),
            (b"\x1b[31mred", "\\x1b[31mred"),
            (b"del\x7f", "del\\x7f"),
            ("c1\u{85}".as_bytes(), "c1\\u{85}"),
            ("rtl\u{202e}txt.exe".as_bytes(), "rtl\\u{202e}txt.exe"),
            (b"bad\xff\xfe", "bad\\xff\\xfe"),
            // A backslash is doubled, so `\n` typed as text cannot pass
            // for an escaped newline.
            (b"back\\nslash", "back\\\\nslash"),
        ] {
            assert_eq!(escape(given), shown, "{given:?}");
        }
        assert!(matches!(escape(b"plain"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\\b\nc\x1b"), "a\\b\\nc\\x1b");
    }

    #[test]
    fn a_path_in_a_message_shows_its_bytes_that_are_no_utf8() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let path = std::path::Path::new(OsStr::from_bytes(b"/data/caf\xe9/caf\xc3\xa9"));
        assert_eq!(path.shown().to_string(), "/data/caf\\xe9/caf\u{e9}");
        assert_eq!(
            OsStr::from_bytes(b"\xff\xfe").shown().to_string(),
            "\\xff\\xfe"
        );
    }
}
