//! Deterministic fault injection for tests.
//!
//! When the environment variable `CAIRN_CRASH_AT` names a crash point, the
//! process aborts (as if killed with SIGKILL: no destructors, no flushing)
//! the first time it reaches that point. Points are named in the code with
//! [`point`]; the fault tests list them. Unset, this costs one cached
//! environment lookup.
//!
//! `CAIRN_LOCK_TEST` bends time for the lock tests ([`lock_knobs`]), so
//! what happens after minutes or hours without a refresh can be tested in
//! a second.

use std::sync::OnceLock;
use std::time::Duration;

/// Aborts the process if `CAIRN_CRASH_AT` equals `name`.
pub fn point(name: &str) {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("CAIRN_CRASH_AT").ok());
    if target.as_deref() == Some(name) {
        eprintln!("cairn: crash point {name} reached, aborting");
        std::process::abort();
    }
}

/// Deletes `path` if `CAIRN_VANISH` equals its file name, or, set to
/// `NAME=>TARGET`, puts a symlink to `TARGET` in its place. Backup calls
/// it just before reading a file, so a test can make a file vanish, or
/// turn into a symlink, after the walk has seen it, deterministically;
/// and on each path it was given, once it holds its lock.
/// Unset, this costs one cached environment lookup.
pub fn vanish(path: &std::path::Path) {
    static SET: OnceLock<Option<(String, Option<String>)>> = OnceLock::new();
    let set = SET.get_or_init(|| {
        let value = std::env::var("CAIRN_VANISH").ok()?;
        Some(match value.split_once("=>") {
            Some((name, target)) => (name.to_string(), Some(target.to_string())),
            None => (value, None),
        })
    });
    let Some((name, target)) = set else { return };
    if path.file_name() == Some(std::ffi::OsStr::new(name)) {
        let _ = std::fs::remove_file(path);
        if let Some(target) = target {
            let _ = std::os::unix::fs::symlink(target, path);
        }
    }
}

/// `CAIRN_TEST_SHRINK_MAPPED=1`: a local repository calls this with a
/// pack's path right after mapping it for reading, and the pack is cut to
/// half its length, so that reading the rest of the map raises SIGBUS, as
/// a page the disk cannot read does. Unset, this costs one cached
/// environment lookup.
pub fn shrink_mapped(path: &std::path::Path) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("CAIRN_TEST_SHRINK_MAPPED").is_some()) {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
            if let Ok(m) = f.metadata() {
                let _ = f.set_len(m.len() / 2);
            }
        }
    }
}

/// `CAIRN_TEST_SWAP_WALKED=NAME=>TARGET`: backup calls this with a
/// directory's path after the walk has stat-ed it and just before it
/// opens it; if its file name is `NAME`, the directory is moved aside
/// (to `NAME.swapped`) and a symlink to `TARGET` put in its place, as
/// someone who can write in its parent could. Unset, this costs one
/// cached environment lookup.
pub fn swap_walked_dir(path: &std::path::Path) {
    static SET: OnceLock<Option<(String, String)>> = OnceLock::new();
    swap_dir_for_symlink(&SET, "CAIRN_TEST_SWAP_WALKED", path);
}

/// `CAIRN_TEST_SWAP_OPENED=NAME=>TARGET`: as `CAIRN_TEST_SWAP_WALKED`,
/// but just after the walk has opened the directory, before it reads a
/// thing in it: the walk holds the directory, and its path leads to
/// `TARGET`.
pub fn swap_opened_dir(path: &std::path::Path) {
    static SET: OnceLock<Option<(String, String)>> = OnceLock::new();
    swap_dir_for_symlink(&SET, "CAIRN_TEST_SWAP_OPENED", path);
}

/// `CAIRN_TEST_EXCHANGE_OPENED=NAME<=>OTHER`: backup calls this with a
/// directory's path just after the walk has opened it; if its file name
/// is `NAME`, it changes places with its sibling `OTHER` (one
/// `RENAME_EXCHANGE`), as a program swapping two names while the backup
/// walks their folder would, and their folder's modification time is
/// put back (as `touch -r` can; its change time cannot be). Where `OTHER`
/// is not there, an empty file of that name is made instead. Unset, this
/// costs one cached environment lookup.
pub fn exchange_opened_dir(path: &std::path::Path) {
    static SET: OnceLock<Option<(String, String)>> = OnceLock::new();
    let Some((name, other)) = pair(&SET, "CAIRN_TEST_EXCHANGE_OPENED", "<=>") else {
        return;
    };
    if path.file_name() == Some(std::ffi::OsStr::new(name)) {
        let folder = path.parent().unwrap_or(std::path::Path::new("."));
        let before = std::fs::metadata(folder).and_then(|m| m.modified());
        let other = path.with_file_name(other);
        // No such sibling: it is made, a name added while the folder is
        // walked (no rename at all).
        if std::fs::symlink_metadata(&other).is_err() {
            let _ = std::fs::write(&other, b"");
        } else {
            let _ = crate::fsmeta::rename_with(path, &other, libc::RENAME_EXCHANGE);
        }
        if let (Ok(t), Ok(f)) = (before, std::fs::File::open(folder)) {
            let _ = f.set_modified(t);
        }
    }
}

/// The two sides of `A{sep}B` in the environment variable `var`, read
/// once into `set`.
fn pair<'a>(
    set: &'a OnceLock<Option<(String, String)>>,
    var: &str,
    sep: &str,
) -> Option<&'a (String, String)> {
    set.get_or_init(|| {
        let value = std::env::var(var).ok()?;
        let (a, b) = value.split_once(sep)?;
        Some((a.to_string(), b.to_string()))
    })
    .as_ref()
}

fn swap_dir_for_symlink(
    set: &OnceLock<Option<(String, String)>>,
    var: &str,
    path: &std::path::Path,
) {
    let Some((name, to)) = pair(set, var, "=>") else {
        return;
    };
    if path.file_name() == Some(std::ffi::OsStr::new(name)) {
        let mut aside = path.as_os_str().to_os_string();
        aside.push(".swapped");
        if std::fs::rename(path, &aside).is_ok() {
            let _ = std::os::unix::fs::symlink(to, path);
        }
    }
}

/// `CAIRN_TEST_TRUNCATE=NAME`: backup calls this with a file's path just
/// before reading it; if its file name is `NAME`, the file is cut to half
/// its length, as a program rewriting it between the walk's `stat` and
/// the read would. Unset, this costs one cached environment lookup.
pub fn truncate_before_read(path: &std::path::Path) {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    let Some(name) = NAME.get_or_init(|| std::env::var("CAIRN_TEST_TRUNCATE").ok()) else {
        return;
    };
    if path.file_name() != Some(std::ffi::OsStr::new(name)) {
        return;
    }
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
        if let Ok(m) = f.metadata() {
            let _ = f.set_len(m.len() / 2);
        }
    }
}

/// `CAIRN_TEST_WRITE_DURING_READ=NAME`: backup calls this with a file's
/// path once it has read it; if its file name is `NAME`, its first byte
/// is overwritten and its modification time moved a second on, as a
/// program writing to it while the backup read it would have. With
/// `NAME=keep-time`, the modification time is put back as it was after
/// the write (as `rsync --inplace -t` does). Unset, this costs one
/// cached environment lookup.
pub fn write_during_read(path: &std::path::Path) {
    static SET: OnceLock<Option<(String, bool)>> = OnceLock::new();
    let set = SET.get_or_init(|| {
        let value = std::env::var("CAIRN_TEST_WRITE_DURING_READ").ok()?;
        Some(match value.strip_suffix("=keep-time") {
            Some(name) => (name.to_string(), true),
            None => (value, false),
        })
    });
    let Some((name, keep_time)) = set else { return };
    if path.file_name() != Some(std::ffi::OsStr::new(name)) {
        return;
    }
    use std::os::unix::fs::FileExt;
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
        let Ok(before) = f.metadata().and_then(|m| m.modified()) else {
            return;
        };
        let _ = f.write_all_at(b"#", 0);
        let _ = f.set_modified(if *keep_time {
            before
        } else {
            before + std::time::Duration::from_secs(1)
        });
    }
}

/// Replaces `path` with a FIFO if `CAIRN_TEST_FIFO` equals its file
/// name. Backup calls it just before reading a file, so a test can put a
/// FIFO in a file's place after the walk has seen it. Unset, this costs
/// one cached environment lookup.
pub fn fifo(path: &std::path::Path) {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    let Some(name) = NAME.get_or_init(|| std::env::var("CAIRN_TEST_FIFO").ok()) else {
        return;
    };
    if path.file_name() == Some(std::ffi::OsStr::new(name)) {
        let _ = std::fs::remove_file(path);
        if let Ok(c) =
            std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        {
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        }
    }
}

/// `CAIRN_TEST_FOLDER_TO_FILE=NAME`: backup calls this with each folder
/// it walks, once listed and before its entries are stat-ed; a folder
/// `NAME` in it is moved aside (to `NAME.old`) and a file `NAME` put in
/// its place, as happens when a folder is replaced during a backup.
/// Unset, this costs one cached environment lookup.
pub fn folder_to_file(dir: &std::path::Path) {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    let Some(name) = NAME.get_or_init(|| std::env::var("CAIRN_TEST_FOLDER_TO_FILE").ok()) else {
        return;
    };
    let path = dir.join(name);
    if path.is_dir() && std::fs::rename(&path, dir.join(format!("{name}.old"))).is_ok() {
        let _ = std::fs::write(&path, b"a file now\n");
    }
}

/// `CAIRN_TEST_SWAP=DIR=>TARGET`: restore calls this with its target once
/// a batch's folders are made and before its files are written; if `DIR`
/// (relative to the target) is a folder then, it is moved aside (to
/// `DIR.swapped`) and a symlink to `TARGET` put in its place, as someone
/// else who can write in the target could. Unset, this costs one cached
/// environment lookup.
pub fn swap_dir(target: &std::path::Path) {
    static SET: OnceLock<Option<(String, String)>> = OnceLock::new();
    let Some((dir, to)) = pair(&SET, "CAIRN_TEST_SWAP", "=>") else {
        return;
    };
    let dir = target.join(dir);
    if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        let mut aside = dir.clone().into_os_string();
        aside.push(".swapped");
        if std::fs::rename(&dir, &aside).is_ok() {
            let _ = std::os::unix::fs::symlink(to, &dir);
        }
    }
}

/// Whether restore is to behave as if the system refused to link its
/// unnamed files under their names (as a security module may): set by
/// `CAIRN_REFUSE_LINK`, so a test reaches the copy restore falls back
/// on. Unset, this costs one cached environment lookup.
pub fn link_refused() -> bool {
    static SET: OnceLock<bool> = OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("CAIRN_REFUSE_LINK").is_some())
}

/// Whether restore is to behave as on a filesystem without unnamed
/// files (`O_TMPFILE`): set by `CAIRN_NO_TMPFILE`, so a test reaches the
/// temporary names restore falls back on. Unset, this costs one cached
/// environment lookup.
pub fn no_tmpfile() -> bool {
    static SET: OnceLock<bool> = OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("CAIRN_NO_TMPFILE").is_some())
}

/// Whether a local repository is to behave as on a filesystem that
/// cannot sync folders (older CIFS/SMB mounts, some FUSE filesystems),
/// whose fsync of a folder fails with EINVAL: set by
/// `CAIRN_TEST_NO_DIR_FSYNC`. Unset, this costs one cached environment
/// lookup.
pub fn dir_fsync_refused() -> bool {
    static SET: OnceLock<bool> = OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("CAIRN_TEST_NO_DIR_FSYNC").is_some())
}

/// Whether a restore's unnamed files (`O_TMPFILE`) are to be refused as
/// on a full filesystem (ENOSPC): set by `CAIRN_TEST_TMPFILE_FULL`.
/// Unset, this costs one cached environment lookup.
pub fn tmpfile_full() -> Option<std::io::Error> {
    static SET: OnceLock<bool> = OnceLock::new();
    SET.get_or_init(|| std::env::var_os("CAIRN_TEST_TMPFILE_FULL").is_some())
        .then(|| std::io::Error::from_raw_os_error(libc::ENOSPC))
}

/// Whether a restore's sync of its target is to fail with EIO, as a
/// writeback the disk refused does: set by `CAIRN_TEST_SYNC_EIO`. Unset,
/// this costs one cached environment lookup.
pub fn sync_eio() -> bool {
    static SET: OnceLock<bool> = OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("CAIRN_TEST_SYNC_EIO").is_some())
}

/// The size of a stand-in filesystem for the local repository, from
/// `CAIRN_TEST_FS_SIZE` (bytes): with it, the repository's files may
/// hold that many bytes in all, a write beyond fails with "no space left
/// on device", and the free space is what remains, so a test reaches a
/// full filesystem without mounting one. Unset, this costs one cached
/// environment lookup.
pub fn fs_size() -> Option<u64> {
    static SIZE: OnceLock<Option<u64>> = OnceLock::new();
    *SIZE.get_or_init(|| std::env::var("CAIRN_TEST_FS_SIZE").ok()?.parse().ok())
}

/// After how many indexed blobs a writer writes an index table, from
/// `CAIRN_TEST_INDEX_EVERY`, so a test backs up a small tree into many
/// tables. Unset, this costs one cached environment lookup.
pub fn index_every() -> Option<usize> {
    static EVERY: OnceLock<Option<usize>> = OnceLock::new();
    *EVERY.get_or_init(|| positive("CAIRN_TEST_INDEX_EVERY"))
}

/// How many entries a directory's tree part holds on average (about a
/// quarter more), from `CAIRN_TEST_TREE_PART`, so a test's directory of
/// a few dozen entries is stored in parts. Unset, this costs one cached
/// environment lookup.
pub fn tree_part() -> Option<usize> {
    static EVERY: OnceLock<Option<usize>> = OnceLock::new();
    *EVERY.get_or_init(|| positive("CAIRN_TEST_TREE_PART"))
}

/// Bytes of names a backup's listing of a directory holds before it
/// spills them as a sorted run, from `CAIRN_TEST_LISTING_RUN`, so a
/// test's directory of a few dozen entries is listed through runs. Unset,
/// this costs one cached environment lookup.
pub fn listing_run() -> Option<usize> {
    static BYTES: OnceLock<Option<usize>> = OnceLock::new();
    *BYTES.get_or_init(|| positive("CAIRN_TEST_LISTING_RUN"))
}

/// Whether a backup's listing of the folder at `path` fails after its
/// first entry (`EIO`, as from a disk or a network filesystem that drops
/// its connection), from `CAIRN_TEST_LIST_FAIL`, the folder's name.
/// Unset, this costs one cached environment lookup.
pub fn list_fails(path: &std::path::Path) -> bool {
    static NAME: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    NAME.get_or_init(|| std::env::var_os("CAIRN_TEST_LIST_FAIL"))
        .as_deref()
        .is_some_and(|name| path.file_name() == Some(name))
}

/// Whether a backup records a folder it walked only as the way down to
/// given paths as one with nothing left out, as backups before December
/// 2026 did, from `CAIRN_TEST_WAY_DOWN_UNRECORDED` (any value): a test
/// writes such a snapshot to restore. Unset, this costs one cached
/// environment lookup.
pub fn way_down_unrecorded() -> bool {
    static SET: OnceLock<bool> = OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("CAIRN_TEST_WAY_DOWN_UNRECORDED").is_some())
}

/// Whether reading the extended attribute `name` fails (`EIO`), or a
/// restore's setting of it (`ENOSPC`, as on ext4 where it does not fit
/// in the block beside the entry's others), from `CAIRN_TEST_XATTR_FAIL`,
/// the attribute's name. Unset, this costs one cached environment lookup.
pub fn xattr_fails(name: &std::ffi::OsStr) -> bool {
    static NAME: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    NAME.get_or_init(|| std::env::var_os("CAIRN_TEST_XATTR_FAIL"))
        .as_deref()
        .is_some_and(|n| n == name)
}

/// The stack size a backup's walking threads ask for, from
/// `CAIRN_TEST_WALK_STACK` (bytes): one larger than the address space
/// has every such thread refused, as a host short of memory or threads
/// may. Unset, this costs one cached environment lookup.
pub fn walk_stack() -> Option<usize> {
    static BYTES: OnceLock<Option<usize>> = OnceLock::new();
    *BYTES.get_or_init(|| positive("CAIRN_TEST_WALK_STACK"))
}

/// Says on standard error how many walking threads a backup had alive
/// at most, when `CAIRN_TEST_WALK_THREADS` is set. Unset, this costs one
/// cached environment lookup.
pub fn walk_threads(most: usize) {
    static SET: OnceLock<bool> = OnceLock::new();
    if *SET.get_or_init(|| std::env::var_os("CAIRN_TEST_WALK_THREADS").is_some()) {
        eprintln!("walking threads at most: {most}");
    }
}

/// After how many misses an index set builds its filter of ids, from
/// `CAIRN_TEST_FILTER_AFTER`, so a test's small repository gets one.
/// Unset, this costs one cached environment lookup.
pub fn filter_after() -> Option<usize> {
    static AFTER: OnceLock<Option<usize>> = OnceLock::new();
    *AFTER.get_or_init(|| positive("CAIRN_TEST_FILTER_AFTER"))
}

/// The positive count in environment variable `name`, if set.
fn positive(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok().filter(|&n| n > 0)
}

/// How long before the parent snapshot's time a file's change counts as
/// maybe racing the parent's read of it, in ns, from
/// `CAIRN_TEST_RACY_WINDOW_NS` (0 allowed), so that tests backing up
/// files written a moment before can see them unchanged. Unset, this
/// costs one cached environment lookup.
pub fn racy_window_ns() -> Option<i64> {
    static NS: OnceLock<Option<i64>> = OnceLock::new();
    *NS.get_or_init(|| {
        std::env::var("CAIRN_TEST_RACY_WINDOW_NS")
            .ok()?
            .parse()
            .ok()
            .filter(|&n: &i64| n >= 0)
    })
}

/// How far ahead of the clock a backup dates its snapshot, in ns (any
/// sign), from `CAIRN_TEST_CLOCK_AHEAD_NS`: a host whose clock was ahead
/// when it backed up, for the tests of a clock found behind afterwards.
/// Unset (0), this costs one cached environment lookup.
pub fn clock_ahead_ns() -> i64 {
    static NS: OnceLock<i64> = OnceLock::new();
    *NS.get_or_init(|| {
        std::env::var("CAIRN_TEST_CLOCK_AHEAD_NS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// How long before a backup began a small file's change makes the
/// backup check it after its read, in ns, from
/// `CAIRN_TEST_RECENT_WINDOW_NS` (0 allowed), so that tests can have
/// files written a moment before taken as long unchanged. Unset, this
/// costs one cached environment lookup.
pub fn recent_window_ns() -> Option<i64> {
    static NS: OnceLock<Option<i64>> = OnceLock::new();
    *NS.get_or_init(|| {
        std::env::var("CAIRN_TEST_RECENT_WINDOW_NS")
            .ok()?
            .parse()
            .ok()
            .filter(|&n: &i64| n >= 0)
    })
}

/// `CAIRN_TEST_REPLACE_BEFORE_READ=NAME`: backup calls this with a
/// file's path just before reading it; if its file name is `NAME`, a new
/// file of the same length (each byte flipped) and times is renamed over
/// it, as rsync or an editor saving by rename would between the walk's
/// `stat` and the read. Unset, this costs one cached environment lookup.
pub fn replace_before_read(path: &std::path::Path) {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    let Some(name) = NAME.get_or_init(|| std::env::var("CAIRN_TEST_REPLACE_BEFORE_READ").ok())
    else {
        return;
    };
    if path.file_name() != Some(std::ffi::OsStr::new(name)) {
        return;
    }
    let (Ok(bytes), Ok(md)) = (std::fs::read(path), std::fs::metadata(path)) else {
        return;
    };
    let flipped: Vec<u8> = bytes.iter().map(|b| !b).collect();
    let new = path.with_file_name(format!("{name}.replacing"));
    if std::fs::write(&new, flipped).is_err() {
        return;
    }
    if let (Ok(f), Ok(modified)) = (
        std::fs::File::options().write(true).open(&new),
        md.modified(),
    ) {
        let _ = f.set_modified(modified);
    }
    let _ = std::fs::rename(&new, path);
}

/// How many entries a restore's batch holds, from
/// `CAIRN_TEST_RESTORE_BATCH`, so a test restores a small tree in many
/// batches. Unset, this costs one cached environment lookup.
pub fn restore_batch() -> Option<usize> {
    static SIZE: OnceLock<Option<usize>> = OnceLock::new();
    *SIZE.get_or_init(|| positive("CAIRN_TEST_RESTORE_BATCH"))
}

/// Whether a restore is to hold no file open between its writes, every
/// file then reopened by its temporary name for each (as past the open
/// budget, see `Executor::create_file`): set by
/// `CAIRN_TEST_NO_OPEN_BUDGET`. Unset, this costs one cached environment
/// lookup.
pub fn no_open_budget() -> bool {
    static SET: OnceLock<bool> = OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("CAIRN_TEST_NO_OPEN_BUDGET").is_some())
}

/// `CAIRN_TEST_RELINK_TEMP=FILE`: restore calls this with a temporary
/// file's name right before it reopens it, and the name is made a hard
/// link to `FILE` instead, as someone else who can write in the target
/// could. Unset, this costs one cached environment lookup.
pub fn relink_temp(tmp: &std::path::Path) {
    static SET: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    relink(&SET, "CAIRN_TEST_RELINK_TEMP", tmp);
}

/// `CAIRN_TEST_RELINK_BEFORE_RENAME=FILE`: as `CAIRN_TEST_RELINK_TEMP`,
/// right before restore renames a whole temporary file into place.
pub fn relink_before_rename(tmp: &std::path::Path) {
    static SET: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();
    relink(&SET, "CAIRN_TEST_RELINK_BEFORE_RENAME", tmp);
}

fn relink(set: &OnceLock<Option<std::ffi::OsString>>, var: &str, tmp: &std::path::Path) {
    let Some(file) = set.get_or_init(|| std::env::var_os(var)) else {
        return;
    };
    if std::fs::remove_file(tmp).is_ok() {
        let _ = std::fs::hard_link(file, tmp);
    }
}

/// Test settings for held locks, from `CAIRN_LOCK_TEST`: a comma-separated
/// list of `refresh-every=MS`, `age=SECS`, `refresh-fails`,
/// `clock-lag=SECS` and `settle=MS`. Unknown
/// items are ignored. Defaults (the variable unset) change nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LockKnobs {
    /// Refresh held locks this often instead of every
    /// [`crate::repo::lock::REFRESH_EVERY`].
    pub refresh_every: Option<Duration>,
    /// A lock taken starts this old: its file records a time this far in
    /// the past, and its holder believes its last refresh was this long
    /// ago (as after a suspend of that length).
    pub age: Duration,
    /// Every refresh fails (as when the store is unreachable).
    pub refresh_fails: bool,
    /// The lock files this process writes record a time this far in the
    /// past, as a host whose clock lags writes them; the process itself
    /// is not fooled (its own clock agrees with itself).
    pub clock_lag: Duration,
    /// Wait this long, instead of [`crate::repo::lock::SETTLE`], after
    /// removing a lock judged stale by its age.
    pub settle: Option<Duration>,
}

impl LockKnobs {
    /// Parses the value of `CAIRN_LOCK_TEST`.
    pub fn parse(s: &str) -> LockKnobs {
        let mut k = LockKnobs::default();
        for item in s.split(',').map(str::trim) {
            let (name, value) = item.split_once('=').unwrap_or((item, ""));
            let number = value.parse::<u64>().ok();
            match (name, number) {
                ("refresh-every", Some(ms)) => {
                    k.refresh_every = Some(Duration::from_millis(ms.max(1)))
                }
                ("age", Some(secs)) => k.age = Duration::from_secs(secs),
                ("refresh-fails", _) => k.refresh_fails = true,
                ("clock-lag", Some(secs)) => k.clock_lag = Duration::from_secs(secs),
                ("settle", Some(ms)) => k.settle = Some(Duration::from_millis(ms)),
                _ => {}
            }
        }
        k
    }
}

/// The lock test settings of this process (see [`LockKnobs`]).
pub fn lock_knobs() -> &'static LockKnobs {
    static KNOBS: OnceLock<LockKnobs> = OnceLock::new();
    KNOBS.get_or_init(|| {
        std::env::var("CAIRN_LOCK_TEST")
            .map(|s| LockKnobs::parse(&s))
            .unwrap_or_default()
    })
}

/// `CAIRN_TEST_LIST_FAULT=KIND:alter` or `KIND:drop` (`KIND` a folder of
/// the layout, e.g. `snapshots`): the first listing of that folder in the
/// process has its first name, in order, changed in its first digit
/// (`alter`) or left out (`drop`), as one answer of a remote listing
/// changed on its way would; later listings are right. For the tests of
/// what reads and gc make of such a listing.
pub fn list_fault(kind: &str, names: &mut Vec<String>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SET: OnceLock<Option<(String, String)>> = OnceLock::new();
    static DONE: AtomicBool = AtomicBool::new(false);
    let Some((folder, how)) = SET.get_or_init(|| {
        let v = std::env::var("CAIRN_TEST_LIST_FAULT").ok()?;
        let (k, h) = v.split_once(':')?;
        Some((k.to_string(), h.to_string()))
    }) else {
        return;
    };
    if folder != kind || names.is_empty() || DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    names.sort();
    if how == "drop" {
        names.remove(0);
    } else {
        let first = &mut names[0];
        let flipped = if first.starts_with('0') { "1" } else { "0" };
        first.replace_range(..1, flipped);
    }
}

/// Whether `CAIRN_TEST_GARBLE_READS` is set (see [`garble_read`]).
pub fn garbling() -> bool {
    static SET: OnceLock<bool> = OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("CAIRN_TEST_GARBLE_READS").is_some())
}

/// `CAIRN_TEST_GARBLE_READS=N`, `KIND:N` or `KIND:N:MIN` (`KIND` a
/// folder of the layout, e.g. `packs`): the first `N` answers of a remote
/// store to reads (whole files or ranges; of that folder only, with
/// `KIND`; of at least `MIN` bytes, with `MIN`, so that data blobs are
/// hit and not the trees read before them) in the process have their
/// first byte changed, as answers changed on their way over plain HTTP
/// would be. Unset, this costs one cached environment lookup.
pub fn garble_read(kind: &str, bytes: &mut [u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    type Knob = (Option<String>, usize, AtomicU64);
    static SET: OnceLock<Option<Knob>> = OnceLock::new();
    if !garbling() {
        return;
    }
    let Some((only, min, left)) = SET.get_or_init(|| {
        let v = std::env::var("CAIRN_TEST_GARBLE_READS").ok()?;
        let mut parts = v.split(':');
        let (only, n) = match (parts.next()?, parts.next()) {
            (k, Some(n)) => (Some(k.to_string()), n),
            (n, None) => (None, n),
        };
        let min = parts.next().map_or(Some(0), |m| m.parse().ok())?;
        Some((only, min, AtomicU64::new(n.parse().ok()?)))
    }) else {
        return;
    };
    if only.as_deref().is_some_and(|k| k != kind) || bytes.len() < *min {
        return;
    }
    if left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        if let Some(b) = bytes.first_mut() {
            *b ^= 0x20;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_knobs_parse() {
        assert_eq!(LockKnobs::parse(""), LockKnobs::default());
        let k = LockKnobs::parse(
            "refresh-every=200, age=1000,refresh-fails,bogus=3,clock-lag=2400,settle=0",
        );
        assert_eq!(k.refresh_every, Some(Duration::from_millis(200)));
        assert_eq!(k.age, Duration::from_secs(1000));
        assert!(k.refresh_fails);
        assert_eq!(k.clock_lag, Duration::from_secs(2400));
        assert_eq!(k.settle, Some(Duration::ZERO));
    }
}
