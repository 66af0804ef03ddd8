//! Standard output: every command prints its results through [`outln!`]
//! (or [`write_bytes`]), never `println!`, which panics when the write
//! fails.
//!
//! SIGPIPE stays ignored (Rust's default), so a write to a closed pipe
//! fails with `EPIPE` instead of killing the process. What a failed write
//! means depends on the command:
//!
//! - A command that only reads (`snapshots`, `ls`, `cat`, dry runs)
//!   stops at the first failed write. A closed pipe (`cairn snapshots |
//!   head -1`) ends it quietly with exit 0; any other failure (a full
//!   disk) is an error naming standard output, exit 1, so a listing cut
//!   short never looks complete.
//! - A command that changed the repository (or a restore target) has done
//!   its work when it prints the report: [`after_work`] keeps its exit
//!   code (0, or 3 for a partial backup), says on standard error that the
//!   report is incomplete unless the pipe was merely closed, and never
//!   turns a written snapshot into an exit code that reads as "nothing
//!   was done".
//!
//! Standard error is written with [`crate::eprint_line`], which never
//! fails: there is nowhere left to report that.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::io::{self, Write};

use crate::error::{Error, Result};

/// What a failed write to standard output is called in messages.
const STDOUT: &str = "write standard output";

/// Writes `args` to standard output and flushes it.
pub(crate) fn print(args: fmt::Arguments<'_>) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(STDOUT, e))
}

/// Writes `bytes` to standard output as they are, and flushes it.
pub(crate) fn write_bytes(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(STDOUT, e))
}

/// Like `println!`, but returns a [`Result`] instead of panicking when
/// standard output cannot be written (see the module docs).
macro_rules! outln {
    () => {
        $crate::cli::output::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// True for a write to standard output that failed because its reader
/// went away (`EPIPE`): the reader wanted no more, not an error.
pub(crate) fn is_closed(e: &Error) -> bool {
    matches!(e, Error::Io { context, source }
        if context == STDOUT && source.kind() == io::ErrorKind::BrokenPipe)
}

/// The exit code of a command that has finished its work (`done` says
/// what it did, e.g. "snapshot 1a2b3c4d is written") and then printed its
/// report with the outcome `printed`: always `code`. A report that could
/// not be written is said on standard error, unless the reader merely
/// closed the pipe.
pub(crate) fn after_work(code: u8, printed: Result<()>, done: &str) -> u8 {
    match printed {
        Err(e) if !is_closed(&e) => {
            super::warn(&format!("{e}: the report is incomplete, but {done}"));
        }
        _ => {}
    }
    code
}

/// The exit code of a command that changed nothing (a listing, a dry
/// run, a check) and printed its report with the outcome `printed`:
/// `code` when the report was written or the reader closed the pipe, an
/// error when it could not be written.
pub(crate) fn read_only(code: u8, printed: Result<()>) -> Result<u8> {
    match printed {
        Err(e) if !is_closed(&e) => Err(e),
        _ => Ok(code),
    }
}

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
pub(crate) fn escape(bytes: &[u8]) -> Cow<'_, str> {
    escape_with(bytes, true)
}

/// [`escape`] of a message (a warning), leaving backslashes as they
/// are: a message is read, not parsed, and often quotes text that is
/// escaped already (`{:?}`).
pub(crate) fn escape_controls(text: &str) -> Cow<'_, str> {
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
}
