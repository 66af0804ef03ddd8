//! Deterministic crash injection for tests.
//!
//! When the environment variable `CAIRN_CRASH_AT` names a crash point, the
//! process aborts (as if killed with SIGKILL: no destructors, no flushing)
//! the first time it reaches that point. Points are named in the code with
//! [`point`]; the fault tests list them. Unset, this costs one cached
//! environment lookup.

use std::sync::OnceLock;

/// Aborts the process if `CAIRN_CRASH_AT` equals `name`.
pub fn point(name: &str) {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("CAIRN_CRASH_AT").ok());
    if target.as_deref() == Some(name) {
        eprintln!("cairn: crash point {name} reached, aborting");
        std::process::abort();
    }
}

/// Deletes `path` if `CAIRN_VANISH` equals its file name. Backup calls it
/// just before reading a file, so a test can make a file vanish after the
/// walk has seen it, deterministically. Unset, this costs one cached
/// environment lookup.
pub fn vanish(path: &std::path::Path) {
    static NAME: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    let name = NAME.get_or_init(|| std::env::var_os("CAIRN_VANISH"));
    if name.is_some() && path.file_name() == name.as_deref() {
        let _ = std::fs::remove_file(path);
    }
}
