//! cairn: a content-addressed, deduplicating, encrypted snapshot store.
//!
//! Backup splits files into content-defined chunks ([`chunker`]), names
//! each by its keyed BLAKE3 hash ([`crypto`]), compresses ([`compress`]) and
//! encrypts it into pack files ([`pack`]) found through sorted index tables
//! ([`index`]), and records each directory as a tree ([`tree`]) and each
//! backup as a snapshot manifest ([`snapshot`]). Restore walks it back.
//! All repository IO goes through a [`backend::Backend`].
//!
//! Write ordering, the invariant everything else relies on: packs, then the
//! index tables naming them, then the snapshot naming their blobs. A
//! snapshot exists only once everything it points at is durable.

pub mod archiver;
pub mod backend;
pub mod chunker;
pub mod cli;
pub mod codec;
pub mod compress;
pub mod crypto;
pub mod directio;
pub mod error;
pub mod escape;
pub mod fault;
pub mod filter;
pub mod fsmeta;
pub mod gc;
pub mod gear;
pub mod id;
pub mod index;
pub mod mmap;
pub mod names;
pub mod pack;
pub mod prefetch;
pub mod repair;
pub mod repo;
pub mod restorer;
pub mod retention;
pub mod snapshot;
pub mod tree;
pub mod verify;
pub mod walker;
pub mod writer;

pub use error::{Error, Result};
pub use repo::Repository;

/// Writes `args` and a newline to standard error, ignoring a failure
/// (where `eprintln!` would panic): there is nowhere left to report it,
/// and a closed standard error must not stop a backup halfway.
pub(crate) fn eprint_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Now, in ns since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The longest wait or timeout cairn takes (`--lock-wait`,
/// `--s3-timeout`): a hundred years of 365 days. Longer ones are refused
/// when parsed; where a deadline is computed, a wait is cut to this so
/// that adding it to a clock reading cannot overflow.
pub const LONGEST_WAIT: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86400);

/// Formats ns since the epoch as local time with its UTC offset,
/// `YYYY-MM-DD HH:MM:SS +HHMM`. Without the offset, the hour a clock
/// repeats when summer time ends would print two real hours alike.
pub fn format_time(ns: i64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S %z")
        .to_string()
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // or truncates within it.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Sums a duration written as numbers with unit letters (`1h30m`, `2w3d`),
/// in seconds; `unit` gives each letter's seconds. `Err(Some(c))` names an
/// unknown unit; `Err(None)` is any other mistake: no number, or a number
/// without its unit. A sum too large for a `u64` is `u64::MAX`, which
/// callers take as "longer than any limit".
pub fn sum_units(
    s: &str,
    unit: impl Fn(char) -> Option<u64>,
) -> std::result::Result<u64, Option<char>> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        if num.is_empty() {
            return Err(None);
        }
        // All digits: only too many of them fails to parse.
        let n: u64 = num.parse().unwrap_or(u64::MAX);
        num.clear();
        let secs = unit(c).ok_or(Some(c))?;
        total = total.saturating_add(n.saturating_mul(secs));
    }
    if !num.is_empty() || s.trim().is_empty() {
        return Err(None);
    }
    Ok(total)
}

/// Formats a byte count with binary units.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
