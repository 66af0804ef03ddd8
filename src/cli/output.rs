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

use std::fmt;
use std::io::{self, Write};

use crate::error::{Error, Result};
pub(crate) use crate::escape::{escape, escape_controls};

/// What a failed write to standard output is called in messages.
const STDOUT: &str = "write standard output";

/// Whether descriptor `fd` is `/dev/null` open for reading and writing:
/// what the Rust runtime puts in place of a standard descriptor that was
/// closed when cairn started (a shell's `>&-` or `<&-`), where a shell's
/// own redirection opens it for one of the two only.
pub(crate) fn reopened_as_null(fd: i32) -> bool {
    // SAFETY: F_GETFL reads the descriptor's flags and nothing else.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_ACCMODE == libc::O_RDWR && {
        // SAFETY: `st` is a plain struct fstat fills in; `fd` is open
        // (F_GETFL succeeded).
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        (unsafe { libc::fstat(fd, &mut st) }) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && (libc::major(st.st_rdev), libc::minor(st.st_rdev)) == (1, 3)
    }
}

/// Fails as a write to a closed descriptor would where standard output
/// was closed when cairn started (see [`reopened_as_null`]): every report
/// then went to `/dev/null`, and a listing exited 0 having shown nothing.
fn stdout_open() -> io::Result<()> {
    static CLOSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *CLOSED.get_or_init(|| reopened_as_null(1)) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(())
}

/// Writes `args` to standard output and flushes it.
pub(crate) fn print(args: fmt::Arguments<'_>) -> Result<()> {
    stdout_open().map_err(|e| Error::io(STDOUT, e))?;
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(STDOUT, e))
}

/// Writes `bytes` to standard output as they are, and flushes it.
pub(crate) fn write_bytes(bytes: &[u8]) -> Result<()> {
    stdout_open().map_err(|e| Error::io(STDOUT, e))?;
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

/// True for any failed write to standard output: not the repository's
/// doing, whatever the error (a full disk behind a redirection is not the
/// repository's filesystem).
pub(crate) fn is_stdout(e: &Error) -> bool {
    matches!(e, Error::Io { context, .. } if context == STDOUT)
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
