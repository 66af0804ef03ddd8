//! Backup: turning directories (or a stream) into a snapshot.
//!
//! The pipeline has three kinds of threads joined by bounded channels:
//!
//! - the **walkers** (the calling thread, and while places are spare,
//!   threads that each take a subdirectory met on the way, up to one
//!   walker per worker in all) visit the tree depth-first, `lstat` every entry, reuse the
//!   parent snapshot's chunk list for files whose size, mtime, ctime and
//!   inode are unchanged, and send the other files to the workers; each
//!   directory is emitted after all its subdirectories, as a list of slots
//!   some of which wait on worker results;
//! - **workers** read, chunk, hash, compress, encrypt and pack files through
//!   the shared [`BlobWriter`], which owns deduplication;
//! - the **finisher** takes directories as they arrive (every directory
//!   after its subdirectories), waits for their files, and stores each
//!   directory's tree; the last one is the root.
//!
//! Memory is bounded by the channel capacities and the depth of the tree
//! (times the walkers), not by the number of files. A file that cannot be read is reported and
//! left out; the snapshot is still written and the run ends with exit code
//! 3. Source files are read with `read`, never memory-mapped: a file
//! truncated by another process while mapped would kill the backup with
//! SIGBUS.

pub(crate) mod listing;
mod producer;
mod walk;

pub use producer::Producer;

/// How a warning of an entry stored without extended attributes it could
/// not read ends: the entry is in the snapshot, unlike one that could not
/// be read at all.
pub const STORED_WITHOUT_XATTRS: &str = "; stored without it, the next backup reads it again";

/// How a warning of a folder that could not be opened or listed ends: it
/// is in the snapshot, empty (`ls --long` marks it), unlike an entry that
/// could not be read at all.
pub const STORED_EMPTY: &str = "; stored empty";

/// How a warning of a folder whose listing ended early ends: it is in the
/// snapshot with the entries listed before.
pub const STORED_CUT_SHORT: &str = "; stored with the entries listed before, the rest left out";

/// Whether a backup's warning is of an entry that is in the snapshot all
/// the same, without something of it that could not be read.
pub fn stored_partly(warning: &str) -> bool {
    [STORED_WITHOUT_XATTRS, STORED_EMPTY, STORED_CUT_SHORT]
        .iter()
        .any(|end| warning.ends_with(end))
}

use crate::escape::Show;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backend::FileKind;
use crate::chunker::ChunkError;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::pack::BlobKind;
use crate::repo::{lock, Repository};
use crate::snapshot::{Snapshot, SnapshotEntry, SnapshotKind, Summary};
use crate::tree::{check_name, Name, Node, NodeKind, Tree};
use crate::writer::{self, BlobWriter, SealQueue};

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Paths to back up (made absolute by the caller or here).
    pub paths: Vec<PathBuf>,
    /// Backup set; defaults to `host:path,path`.
    pub set: Option<String>,
    /// Snapshot kind requested.
    pub kind: SnapshotKind,
    /// Tags to record.
    pub tags: Vec<String>,
    /// Host name to record; defaults to this machine's.
    pub host: Option<String>,
    /// Exclude patterns (see [`crate::filter`]).
    pub excludes: Vec<std::ffi::OsString>,
    /// Do not descend into other filesystems.
    pub one_file_system: bool,
    /// Read one file from stdin under this name instead of `paths`.
    pub stdin_name: Option<String>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
    /// The time to record, ns since the epoch, instead of now (importing
    /// old backups, or tests of retention).
    pub time_ns: Option<i64>,
    /// How long before the parent snapshot's time a file's ctime makes it
    /// read again rather than trusted unchanged ([`walk::racy_window_ns`]
    /// unless `CAIRN_TEST_RACY_WINDOW_NS` says otherwise); tests backing up
    /// files they wrote a moment before set 0.
    pub racy_window_ns: i64,
}

impl Default for BackupOptions {
    fn default() -> BackupOptions {
        BackupOptions {
            paths: Vec::new(),
            set: None,
            kind: SnapshotKind::Incremental,
            tags: Vec::new(),
            host: None,
            excludes: Vec::new(),
            one_file_system: false,
            stdin_name: None,
            workers: 0,
            lock_wait: Duration::ZERO,
            time_ns: None,
            racy_window_ns: crate::fault::racy_window_ns().unwrap_or_else(walk::racy_window_ns),
        }
    }
}

/// A stream backed up as one file: standard input, or the output of a
/// [`Producer`].
pub trait Stream: Read {
    /// What the stream is, for messages ("standard input").
    fn describe(&self) -> String {
        "standard input".into()
    }

    /// Says whether the stream ended as it should. Called once, when it
    /// has been read to its end and before anything refers to what was
    /// stored of it: an error here leaves no snapshot.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Stream for std::io::StdinLock<'_> {}

/// Standard input, read so that a descriptor left non-blocking
/// (`O_NONBLOCK`, as some CI runners and Node.js leave the pipes they
/// hand on) waits for the producer instead of failing on "try again"
/// (`EAGAIN`): the dump job failed, exit 1, at its first pause until
/// December 2026. The flag itself is left alone, as the open file may be
/// shared with the process that started cairn.
pub struct Stdin(pub std::io::StdinLock<'static>);

impl Read for Stdin {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut fd = libc::pollfd {
                        fd: libc::STDIN_FILENO,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd, valid for the call.
                    if unsafe { libc::poll(&mut fd, 1, -1) } < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() != std::io::ErrorKind::Interrupted {
                            return Err(e);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }
}

impl Stream for Stdin {}
impl Stream for std::io::Empty {}
impl Stream for &[u8] {}

/// The outcome of a backup.
#[derive(Debug)]
pub struct BackupResult {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// Entries that could not be read, with the reason.
    pub warnings: Vec<String>,
    /// Files that changed while they were read, and folders while they
    /// were walked: in the snapshot as read.
    pub changed: Vec<String>,
    /// Damage in the repository the backup read around (a snapshot file
    /// that does not decode, left out of the choice of parent; a parent
    /// tree that cannot be read, whose files were read afresh): every
    /// entry is in the snapshot.
    pub repo_warnings: Vec<String>,
    /// Of `repo_warnings`, the snapshot files this user may not read:
    /// no damage, but left out of the choice of parent all the same.
    pub repo_refused: usize,
    /// Set when the requested kind could not be honoured.
    pub note: Option<String>,
    /// Of the bytes read, those that lay in holes of sparse files, which
    /// were told by the filesystem rather than read.
    pub bytes_in_holes: u64,
    /// Set when this host's clock read a time before its set's newest
    /// snapshot (see [`clock_behind`]): what that does, and to whom.
    pub clock_behind: Option<String>,
}

/// Counters shared by the pipeline's threads.
#[derive(Default)]
pub(crate) struct Counters {
    pub files_new: AtomicU64,
    pub files_changed: AtomicU64,
    pub files_unmodified: AtomicU64,
    pub dirs: AtomicU64,
    pub errors: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_in_holes: AtomicU64,
    pub total_bytes: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// The paths given to back up, as a tree of names from `/`: a node is a
/// folder on the way to a given path, or a given path itself (`given`).
///
/// A given path is walked in full (its own listing, on its own
/// filesystem), and so is everything below it but what an exclude
/// pattern or `--one-file-system` leaves out. A path given below it that
/// lies in what is left out is backed up all the same (explicit beats
/// pattern): the folders down to it are kept with only the way down, as
/// the folders above any given path are.
#[derive(Debug, Default)]
pub(crate) struct Skeleton {
    /// This path was given: it is walked in full.
    pub given: bool,
    /// Given paths below this one, by the name on the way to them.
    pub children: BTreeMap<OsString, Skeleton>,
}

impl Skeleton {
    /// Adds the path of `components` below this node (this node itself
    /// when there are none).
    fn insert(&mut self, components: &[OsString]) {
        match components.split_first() {
            None => self.given = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }
}

/// Tells `writer` that the pack the index places the tree `tree` in,
/// which the walk could not read, is not to be trusted: the trees this
/// backup writes, the same ids where nothing changed, are then stored
/// again rather than taken for stored where they cannot be read (so its
/// snapshot is whole though its parent is not).
pub(super) fn distrust_tree_pack(
    repo: &Repository,
    writer: &BlobWriter<'_>,
    tree: &crate::id::BlobId,
) {
    if let Ok(loc) = repo.locate_kind(tree, BlobKind::Tree) {
        writer.distrust(loc.pack);
    }
}

/// `path` as the text a snapshot's `paths` (and so its default set and
/// retention group) holds: itself when it is UTF-8; otherwise each byte
/// that is not part of a UTF-8 character written `\xNN`, and each
/// backslash `\\`, so that two paths that differ never read the same
/// (with U+FFFD for every such byte, two folders whose names differ
/// only there shared one set, and the parent and the retention group of
/// one were the other's). A UTF-8 path with a literal `\x` in its name
/// may still read as a path that is not UTF-8. A UTF-8 path is borrowed,
/// not copied: a restore asks this of every entry, and a deep tree's
/// paths are megabytes.
pub fn path_text(path: &Path) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write;
    let bytes = path.as_os_str().as_encoded_bytes();
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.into();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.into()
}

/// Makes `p` absolute without resolving its final component (so a symlink
/// given on the command line is stored as the link), except where `p`
/// itself says to: a path ending in `..` names the folder it leads to, and
/// one ending in `/` or `/.` names a folder (POSIX path resolution), so a
/// symlink given as `link/` is followed, and the folder it points to is
/// what is backed up, under its own path.
pub fn absolute_path(p: &Path) -> Result<PathBuf> {
    let bytes = p.as_os_str().as_encoded_bytes();
    let names_a_folder = bytes.ends_with(b"/")
        || bytes.ends_with(b"/.")
        || bytes == b"."
        || matches!(p.components().next_back(), Some(Component::ParentDir));
    if names_a_folder {
        return std::fs::canonicalize(p).map_err(|e| Error::path("resolve", p, e));
    }
    let abs = std::path::absolute(p).map_err(|e| Error::path("resolve", p, e))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Ok(PathBuf::from("/"));
    };
    let parent = std::fs::canonicalize(parent).map_err(|e| Error::path("resolve", parent, e))?;
    Ok(parent.join(name))
}

/// The absolute path of a path given to back up ([`absolute_path`]) and
/// what is there; an error naming it if nothing is, or if this user may
/// not read it at all (a folder it may not list, a file it may not open).
/// Such a path is refused as a missing one is: its snapshot would hold
/// nothing of it, only the folders above, yet stand as its set's newest
/// (`latest`, the next backup's parent, one of the snapshots a
/// `--keep-last` keeps) for a nightly job that stores nothing night after
/// night. What cannot be read further down is left to the walk (a
/// warning, exit 3).
pub fn given_path(p: &Path) -> Result<(PathBuf, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let abs = absolute_path(p)?;
    let md = std::fs::symlink_metadata(&abs).map_err(|e| Error::path("back up", &abs, e))?;
    let refused = if md.is_dir() {
        std::fs::read_dir(&abs).err().map(|e| ("list", e))
    } else if md.is_file() {
        // Not made to wait should a FIFO have taken the file's place.
        let open = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&abs);
        open.err().map(|e| ("open", e))
    } else {
        None
    };
    match refused {
        Some((what, e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(Error::Invalid(format!(
                "back up {}: cannot {what} it: {e}; nothing of it could be stored, so no \
                 snapshot is written (run cairn as a user who may read it)",
                abs.shown()
            )))
        }
        _ => Ok((abs, md)),
    }
}

fn choose_parent<'a>(
    snapshots: &'a [SnapshotEntry],
    set: &str,
    host: &str,
    kind: SnapshotKind,
) -> Option<&'a SnapshotEntry> {
    let mut of_set = snapshots
        .iter()
        .rev()
        .filter(|e| e.snapshot.set == set && e.snapshot.host == host);
    match kind {
        SnapshotKind::Full => None,
        SnapshotKind::Incremental => of_set.next(),
        SnapshotKind::Differential => of_set.find(|e| e.snapshot.kind == SnapshotKind::Full),
    }
}

/// Backs up `opts.paths` (or, with `opts.stdin_name`, `stdin`) into
/// `repo` and writes the snapshot. A stream whose [`Stream::finish`]
/// fails is not recorded: its data stays in packs for gc to find unused.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    stdin: &mut dyn Stream,
    warn: &(dyn Fn(&str) + Sync),
) -> Result<BackupResult> {
    backup_locked(repo, opts, stdin, warn, None)
}

/// [`backup`] under `lock`, a shared lock the caller took (one that starts
/// the stream's producer only once it holds the lock), or one it takes.
pub fn backup_locked(
    repo: &Repository,
    opts: &BackupOptions,
    stdin: &mut dyn Stream,
    warn: &(dyn Fn(&str) + Sync),
    lock: Option<lock::LockGuard>,
) -> Result<BackupResult> {
    let started = Instant::now();
    let started_ns = crate::now_ns().saturating_add(crate::fault::clock_ahead_ns());
    let time_ns = opts.time_ns.unwrap_or(started_ns);
    let own = crate::repo::own::Own::of(repo);
    let host = opts.host.clone().unwrap_or_else(crate::hostname);
    let mut paths = Vec::new();
    // The given paths, absolute, to look at again once the lock is held.
    let mut given = Vec::new();
    let mut skeleton = Skeleton::default();
    if let Some(name) = &opts.stdin_name {
        check_name(name.as_bytes())
            .map_err(|why| Error::Invalid(format!("--stdin-filename {name:?}: {why}")))?;
        paths.push(name.clone());
    } else {
        if opts.paths.is_empty() {
            return Err(Error::Invalid(
                "nothing to back up: give at least one path".into(),
            ));
        }
        for p in &opts.paths {
            let (abs, md) = given_path(p)?;
            own.check_given(&abs)?;
            given.push(abs.clone());
            if md.file_type().is_symlink() {
                let hint = if std::fs::metadata(&abs).is_ok_and(|m| m.is_dir()) {
                    format!(" (give {}/ to back up the folder)", p.shown())
                } else {
                    String::new()
                };
                warn(&format!(
                    "{} is a symlink: backing up the link itself, not what it points to{hint}",
                    abs.shown()
                ));
            }
            let comps: Vec<OsString> = abs
                .components()
                .skip(1)
                .map(|c| c.as_os_str().to_os_string())
                .collect();
            skeleton.insert(&comps);
            paths.push(path_text(&abs).into_owned());
        }
        paths.sort();
        paths.dedup();
    }
    let set = opts
        .set
        .clone()
        .unwrap_or_else(|| format!("{host}:{}", paths.join(",")));

    let lock = match lock {
        Some(lock) => lock,
        None => lock::acquire(
            repo.backend_arc(),
            repo.key(),
            false,
            "backup",
            opts.lock_wait,
        )?,
    };
    // A given path gone while the backup waited for its lock (or the key
    // was derived) is refused as one not there at all: its snapshot would
    // hold only the folders above it, yet stand as the set's newest
    // (until December 2026 it was written, exit 3). One gone later is a
    // file vanished mid-backup, said and left out.
    for abs in &given {
        crate::fault::vanish(abs);
        if let Err(e) = std::fs::symlink_metadata(abs) {
            return Err(Error::Invalid(format!(
                "back up {}: {e}: it went while the backup waited to begin; no snapshot \
                 written",
                abs.shown()
            )));
        }
    }
    // Under the lock, which an upgrade rewriting the config waits for.
    if let Err(e) = repo.keep_config_copy() {
        warn(&format!("config.copy not brought up to date: {e}"));
    }
    let adopted = repo.adopt_pending()?;
    if adopted > 0 {
        warn(&format!(
            "reusing {adopted} pack(s) uploaded by an interrupted backup"
        ));
    }
    // An index table that cannot be parsed is left out, not the backup:
    // what only it indexes looks new, and is stored again (costing its
    // bytes, never data). Repository damage read around, as below. The
    // index is loaded here, once the tables just adopted are written.
    let damaged_index = repo.index_reading_around("is stored again, where this backup holds it")?;
    // A snapshot file that does not decode is no candidate for parent: the
    // parent is then an older snapshot, or none, and only costs reading
    // more files (every file is compared with the parent, never trusted
    // blindly). It is repository damage the backup read around.
    let snapshots = repo.snapshots()?;
    let damaged: Vec<String> = snapshots
        .damaged
        .iter()
        .map(|d| d.warning("not considered as the parent of this backup"))
        .collect();
    // Of them, those this user may not read: no damage.
    let repo_refused = snapshots.damaged.iter().filter(|d| d.refused).count();
    let snapshots = snapshots.good;
    let clock_behind = match opts.time_ns {
        None => clock_behind(&snapshots, &set, &host, time_ns),
        // A time given is the operator's (an import of older backups).
        Some(_) => None,
    };
    let parent = choose_parent(&snapshots, &set, &host, opts.kind);
    let mut kind = opts.kind;
    let mut note = None;
    if parent.is_none() && kind != SnapshotKind::Full {
        note = Some(format!(
            "no {}snapshot of set {set:?} on {host} yet: taking a full snapshot",
            if kind == SnapshotKind::Differential {
                "full "
            } else {
                ""
            }
        ));
        kind = SnapshotKind::Full;
    }
    // A parent whose tree cannot be read (a damaged index, a lost pack)
    // only costs reading every file again: the snapshot is complete
    // without it, and a nightly backup should not stop over it.
    let (parent_tree, parent_unreadable) = match parent {
        Some(p) => match repo.dir_nodes(&p.snapshot.tree) {
            Ok(_) => (Some(p.snapshot.tree), None),
            Err(e) => (
                None,
                Some(format!(
                    "parent snapshot {}: root tree unreadable, reading every file afresh: {e}",
                    p.id.short()
                )),
            ),
        },
        None => (None, None),
    };

    // A file whose times are the parent's is trusted unchanged where its
    // change time is older than the parent's start by the racy window.
    // A parent that began after this backup's clock says the clock
    // jumped (behind now, or ahead then), so its start cannot be compared
    // with change times read by one clock or the other: every file is
    // read again, and counts as unmodified where its content is the
    // parent's.
    let parent_ahead =
        parent.is_some_and(|p| p.snapshot.started_ns > started_ns.saturating_add(CLOCK_SLACK_NS));
    let racy_from = match parent {
        Some(p) if !parent_ahead => p.snapshot.started_ns.saturating_sub(opts.racy_window_ns),
        _ => i64::MIN,
    };
    let clock_behind = match parent.filter(|_| parent_ahead) {
        Some(p) => {
            let read_all = format!(
                "every file was read again, as change times cannot be compared with the \
                 start of parent snapshot {} ({})",
                p.id.short(),
                crate::format_time(p.snapshot.started_ns)
            );
            Some(match clock_behind {
                Some(why) => format!("{why}; {read_all}"),
                None => format!(
                    "this host's clock reads {}, before the start of parent snapshot {}: \
                     the clock is behind now, or was ahead then; {read_all}",
                    crate::format_time(started_ns),
                    p.id.short()
                ),
            })
        }
        None => clock_behind,
    };
    let writer = BlobWriter::new(repo).locked(&lock);
    if parent_unreadable.is_some() {
        if let Some(p) = parent {
            distrust_tree_pack(repo, &writer, &p.snapshot.tree);
        }
    }
    let counters = Counters::default();
    let warnings = std::sync::Mutex::new(Vec::new());
    let report = |msg: String| {
        warn(&msg);
        Counters::add(&counters.errors, 1);
        if let Ok(mut w) = warnings.lock() {
            w.push(msg);
        }
    };
    // A file that changed while it was read is in the snapshot, as read:
    // a warning (and exit code 3), not an error that left it out.
    let changed_files = std::sync::Mutex::new(Vec::new());
    let changed = |msg: String| {
        warn(&msg);
        if let Ok(mut w) = changed_files.lock() {
            w.push(msg);
        }
    };
    let repo_warnings = std::sync::Mutex::new(Vec::new());
    let repo_warn = |msg: String| {
        warn(&msg);
        if let Ok(mut w) = repo_warnings.lock() {
            w.push(msg);
        }
    };
    for msg in damaged_index.into_iter().chain(damaged) {
        repo_warn(msg);
    }
    // Warned of as the repository was opened: counted here, so that a
    // nightly job hears of it (exit 3, `repository_damage`) while one
    // config is left.
    if let Some(said) = repo.config_trouble() {
        if let Ok(mut w) = repo_warnings.lock() {
            w.push(said);
        }
    }
    if let Some(msg) = parent_unreadable {
        repo_warn(msg);
    }
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.workers
    };
    let root = writer::with_sealers(&writer, workers, |queue| match &opts.stdin_name {
        Some(name) => backup_stream(
            &writer,
            queue,
            (name, opts.time_ns),
            stdin,
            parent_tree,
            &counters,
        ),
        None => {
            let exclude = crate::filter::PathFilter::new(&opts.excludes)?;
            walk::run(walk::WalkSetup {
                repo,
                writer: &writer,
                queue,
                counters: &counters,
                exclude: &exclude,
                one_file_system: opts.one_file_system,
                workers,
                skeleton: &skeleton,
                parent: parent_tree,
                racy_from,
                links_from: started_ns.saturating_sub(opts.racy_window_ns),
                recent_from: started_ns
                    .saturating_sub(crate::fault::recent_window_ns().unwrap_or(60_000_000_000)),
                parent_xattrs: parent
                    .is_some_and(|p| p.snapshot.user == crate::fsmeta::current_user()),
                report: &report,
                changed: &changed,
                own: &own,
                repo_warn: &repo_warn,
            })
        }
    })??;
    // Trees of the parent read from another copy, around one damaged or
    // not read at all.
    for said in repo.take_read_around_said() {
        repo_warn(said);
    }
    // Packs the index names that are missing or cut short: what this
    // backup found there was stored again.
    for said in writer.take_packs_said() {
        repo_warn(said);
    }
    let stored = writer.finish()?;
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let snapshot = Snapshot {
        version: Snapshot::version_for(repo.config().version),
        time_ns,
        host,
        user: crate::fsmeta::current_user(),
        set,
        kind,
        paths,
        tags: opts.tags.clone(),
        parent: parent.map(|p| p.id),
        tree: root,
        summary: Summary {
            files_new: c(&counters.files_new),
            files_changed: c(&counters.files_changed),
            files_unmodified: c(&counters.files_unmodified),
            dirs: c(&counters.dirs),
            errors: c(&counters.errors),
            bytes_read: c(&counters.bytes_read),
            total_bytes: c(&counters.total_bytes),
            blobs_added: stored.blobs,
            bytes_added: stored.raw_bytes,
            bytes_stored: stored.stored_bytes,
            duration_ns: started.elapsed().as_nanos() as u64,
        },
        excludes: (opts.excludes.iter())
            .map(|p| {
                crate::tree::Name(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
            })
            .collect(),
        started_ns,
    };
    let (id, bytes) = snapshot.encode(repo.key());
    // Never a snapshot no reader would read (see `FileKind::max_len`):
    // only its paths and tags, given on the command line, could make one.
    if bytes.len() as u64 > crate::backend::MAX_SNAPSHOT_LEN {
        return Err(Error::Invalid(format!(
            "the snapshot would be {} bytes, more than a snapshot file can be ({}): give \
             fewer paths or tags; no snapshot written",
            bytes.len(),
            crate::backend::MAX_SNAPSHOT_LEN
        )));
    }
    crate::fault::point("before-snapshot-write");
    // gc may have run if the lock looked stale: the blobs this snapshot
    // names (its own, and those it found already stored) may be gone.
    lock.confirm("no snapshot written: run the backup again")?;
    repo.backend()
        .write(FileKind::Snapshot, &id.to_hex(), &bytes)
        .map_err(|e| match e.is_transient() {
            // The store may have taken it and only its answer was lost:
            // said, so that a snapshot listed after a failed backup is
            // not taken for a ghost (it is whole, as its data is).
            true => Error::Advised {
                advice: format!(
                    "the backup did not finish: the store did not answer its snapshot's \
                     upload, which is not damage; snapshot {} may be in the repository all \
                     the same, if only the answer was lost (`cairn snapshots` says; it is \
                     whole if so); run the backup again once the store answers",
                    id.short()
                ),
                error: Box::new(e),
            },
            false => e,
        })?;
    lock.after_publishing(
        FileKind::Snapshot,
        &[id.to_hex()],
        "the snapshot written is removed again: run the backup again",
    )?;
    // The snapshot is durable; merging index tables is housekeeping that
    // must not turn a successful backup into a failed one.
    let version = repo.config().index_version();
    if let Err(e) = crate::index::compact(repo.backend(), repo.key(), version, Some(&lock)) {
        warn(&format!("index tables not merged this time: {e}"));
    }
    repo.reload_index();
    Ok(BackupResult {
        id,
        snapshot,
        warnings: warnings.into_inner().unwrap_or_default(),
        changed: changed_files.into_inner().unwrap_or_default(),
        repo_warnings: repo_warnings.into_inner().unwrap_or_default(),
        repo_refused,
        note,
        bytes_in_holes: counters.bytes_in_holes.load(Ordering::Relaxed),
        clock_behind,
    })
}

/// How far a snapshot of the set may be dated after this backup's start
/// before the clock is called behind: a step of the clock by NTP is
/// milliseconds.
const CLOCK_SLACK_NS: i64 = 1_000_000_000;

/// What is wrong when this host's clock reads `now`, before the newest
/// snapshot of `set` on `host` (a real-time clock reset, a clock stepped
/// back; or one that was ahead when that snapshot was taken). Snapshots
/// are ordered by their times: until the clock passes that snapshot's,
/// `latest` is that snapshot, not the one this backup writes, and a
/// retention policy counts this one as older, so a `--keep-last` or
/// `--keep-daily` would remove the newest backups first. Said, not
/// refused: the data is stored all the same.
fn clock_behind(snapshots: &[SnapshotEntry], set: &str, host: &str, now: i64) -> Option<String> {
    let newest = snapshots
        .iter()
        .rev()
        .find(|e| e.snapshot.set == set && e.snapshot.host == host)?;
    (newest.snapshot.time_ns > now.saturating_add(CLOCK_SLACK_NS)).then(|| {
        format!(
            "this host's clock reads {}, before the time of snapshot {} of the same set \
             ({}): the clock is behind now, or was ahead then; snapshots are ordered by \
             their times, so until the clock passes that time `latest` is snapshot {}, not \
             this backup's, and retention (`forget --keep-*`) counts this backup as the \
             older and removes it first; set the clock right (`timedatectl`), and if that \
             snapshot's time is the wrong one, keep it by its id or forget it",
            crate::format_time(now),
            newest.id.short(),
            crate::format_time(newest.snapshot.time_ns),
            newest.id.short(),
        )
    })
}

/// How long before a parent snapshot began a file's change makes the
/// next backup read it again rather than trust it unchanged, in ns: the
/// clock's tick and the kernel's writeback delay, from `/proc/sys/vm`
/// (README, "Snapshot kinds"). For benchmarks that wait it out.
pub fn racy_window_ns() -> i64 {
    walk::racy_window_ns()
}

/// Stores a stream as a single file `name` in a one-entry root tree.
/// It counts as unmodified when the `parent` tree holds a file of that
/// name with the same chunks, as changed when with others, else as new.
/// Its time is `time_ns`, the time a backup's `--time` gives (an import
/// of an old dump), or else the time the stream ended (until December
/// 2026 always that, so a dump imported as of a night long past was
/// dated the day of the import).
fn backup_stream(
    writer: &BlobWriter<'_>,
    queue: &SealQueue<'_>,
    (name, time_ns): (&str, Option<i64>),
    input: &mut dyn Stream,
    parent: Option<crate::id::BlobId>,
    counters: &Counters,
) -> Result<crate::id::BlobId> {
    let mut chunks = Vec::new();
    let size = writer
        .repo()
        .config()
        .chunker
        .for_each_chunk(input, &mut Vec::new(), |chunk| {
            chunks.push(queue.add(BlobKind::Data, chunk)?);
            Ok(())
        })
        .map_err(|e| match e {
            ChunkError::Read(e) => Error::io(format_args!("read {}", input.describe()), e),
            ChunkError::Sink(e) => e,
        })?;
    input.finish()?;
    // The parent's tree was read when it was chosen; one that fails now
    // only makes the file count as new.
    let before = parent
        .and_then(|tree| writer.repo().dir_nodes(&tree).ok())
        .and_then(|mut nodes| nodes.find_map(|n| n.ok().filter(|n| n.name.0 == name.as_bytes())))
        .map(|n| n.kind);
    Counters::add(
        match before {
            Some(NodeKind::File { chunks: ref old }) if *old == chunks => {
                &counters.files_unmodified
            }
            Some(NodeKind::File { .. }) => &counters.files_changed,
            _ => &counters.files_new,
        },
        1,
    );
    Counters::add(&counters.bytes_read, size);
    Counters::add(&counters.total_bytes, size);
    let now = time_ns.unwrap_or_else(crate::now_ns);
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let names = crate::fsmeta::NameCache::default();
    let node = Node {
        name: Name(name.as_bytes().to_vec()),
        kind: NodeKind::File { chunks },
        mode: 0o600,
        uid,
        gid,
        user: names.user(uid),
        group: names.group(gid),
        mtime_ns: now,
        ctime_ns: now,
        size,
        dev: 0,
        inode: 0,
        nlink: 1,
        xattrs: Vec::new(),
    };
    Ok(writer
        .add(BlobKind::Tree, &Tree::new(vec![node]).encode())?
        .0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::id::BlobId;
    use crate::repo::{InitOptions, KdfParams};
    use std::sync::Arc;

    #[test]
    fn path_text_keeps_utf8_and_escapes_the_rest() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        fn text(b: &[u8]) -> std::borrow::Cow<'_, str> {
            path_text(Path::new(OsStr::from_bytes(b)))
        }
        assert_eq!(text("/a\\b/café".as_bytes()), "/a\\b/café");
        assert_eq!(text(b"/caf\xe9"), "/caf\\xe9");
        assert_eq!(text(b"/caf\xe8"), "/caf\\xe8");
        assert_eq!(text(b"/a\\b/\xff\xfe"), "/a\\\\b/\\xff\\xfe");
        // A character cut short is its bytes; the one after it is kept.
        assert_eq!(text(b"/\xc3x\xc3\xa9"), "/\\xc3xé");
        // Borrowed where it is UTF-8, which it keeps as it is.
        assert!(matches!(
            text("/a\\b/café".as_bytes()),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(matches!(text(b"/caf\xe9"), std::borrow::Cow::Owned(_)));
    }

    /// A new local repository at `root` (a cheap key derivation), opened.
    fn new_repo(root: &Path) -> Repository {
        let opts = InitOptions {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                lanes: 1,
            },
            ..InitOptions::default()
        };
        Repository::init(Arc::new(LocalBackend::new(root)), b"pw", &opts).unwrap();
        Repository::open(Arc::new(LocalBackend::new(root)), b"pw").unwrap()
    }

    /// However many threads walk the tree (subdirectories are walked on
    /// threads of their own while a place is spare), a backup records the
    /// same trees: a full backup by one worker, a full backup by eight and
    /// an incremental one by eight reusing the parent's chunks all give
    /// the backed-up folder the same tree.
    #[test]
    fn walking_on_many_threads_records_the_same_tree() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for a in 0..5 {
            for b in 0..4 {
                let d = src.join(format!("a{a}")).join(format!("b{b}"));
                std::fs::create_dir_all(d.join("empty")).unwrap();
                for f in 0..3 {
                    let body = format!("{a}/{b}/{f}").repeat(100 * (f + 1));
                    std::fs::write(d.join(format!("f{f}.txt")), body).unwrap();
                }
            }
            std::fs::write(src.join(format!("top{a}")), [a as u8; 10]).unwrap();
        }
        // One repository for all three backups and the reads after each,
        // as a nightly job running several sets would keep: each backup
        // finds what the one before it stored.
        let repo = new_repo(&dir.path().join("repo"));
        let run = |kind, workers| {
            let opts = BackupOptions {
                paths: vec![src.clone()],
                kind,
                workers,
                racy_window_ns: 0,
                ..BackupOptions::default()
            };
            let r = backup(&repo, &opts, &mut std::io::empty(), &|_| ()).unwrap();
            assert!(r.warnings.is_empty(), "{:?}", r.warnings);
            // The tree of `src` itself: the folders above it (the system's
            // temporary folder) change as other tests run.
            let mut tree = r.snapshot.tree;
            for part in src.components().skip(1) {
                let name = part.as_os_str().as_encoded_bytes();
                let nodes = repo.load_tree(&tree).unwrap().nodes;
                let node = nodes.into_iter().find(|n| n.name.0 == name).unwrap();
                let NodeKind::Dir { subtree } = node.kind else {
                    panic!("{} is not a directory", part.as_os_str().shown())
                };
                tree = subtree;
            }
            (tree, r.snapshot.summary)
        };
        let (one, _) = run(SnapshotKind::Full, 1);
        let (many, _) = run(SnapshotKind::Full, 8);
        let (reused, summary) = run(SnapshotKind::Incremental, 8);
        assert_eq!(many, one);
        assert_eq!(reused, one);
        assert_eq!(summary.files_unmodified, 65, "{summary:?}");
    }

    /// Incremental backups of `src`, with no window of racily clean
    /// files: a file unchanged by its stat is taken from the parent.
    fn incremental(src: &Path) -> BackupOptions {
        BackupOptions {
            paths: vec![src.to_path_buf()],
            kind: SnapshotKind::Incremental,
            racy_window_ns: 0,
            ..BackupOptions::default()
        }
    }

    /// `tree` written again with `f` applied to the node at `names` (a
    /// path of names beneath it), and the trees above it; the new root.
    fn with_node(
        repo: &Repository,
        writer: &BlobWriter<'_>,
        tree: &BlobId,
        names: &[&[u8]],
        f: &dyn Fn(&mut Node),
    ) -> BlobId {
        let mut nodes: Vec<Node> = repo.dir_nodes(tree).unwrap().map(|n| n.unwrap()).collect();
        let node = nodes.iter_mut().find(|n| n.name.0 == names[0]).unwrap();
        match (&mut node.kind, names.len()) {
            (_, 1) => f(node),
            (NodeKind::Dir { subtree }, _) => {
                *subtree = with_node(repo, writer, subtree, &names[1..], f);
            }
            _ => panic!("not a folder"),
        }
        writer
            .add(BlobKind::Tree, &Tree::new(nodes).encode())
            .unwrap()
            .0
    }

    /// An unchanged file whose parent entry's chunks do not add up to its
    /// size (a damaged or forged parent tree: here its last chunk gone)
    /// is read again, with a warning, and the new snapshot restores it
    /// whole. Until December 2026 the entry was kept, exit 0, and every
    /// snapshot after was as unrestorable as the parent.
    #[test]
    fn a_parent_entry_whose_chunks_do_not_add_up_to_its_size_is_read_again() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..6 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let file = src.join("f.bin");
        std::fs::write(&file, &bytes).unwrap();
        let repo = new_repo(&dir.path().join("repo"));
        let opts = incremental(&src);
        let first = backup(&repo, &opts, &mut std::io::empty(), &|_| ()).unwrap();
        let path = file.to_string_lossy().into_owned();
        let chunks_of = |tree: &BlobId| {
            let (mut dir, _) = repo.tree_at(tree, &path).unwrap();
            match dir.next().unwrap().unwrap().kind {
                NodeKind::File { chunks } => chunks,
                _ => panic!("not a file"),
            }
        };
        let whole = chunks_of(&first.snapshot.tree);
        assert!(whole.len() > 1, "{} chunk(s)", whole.len());
        let names: Vec<&[u8]> = file
            .components()
            .skip(1)
            .map(|c| c.as_os_str().as_bytes())
            .collect();
        let writer = BlobWriter::new(&repo);
        let root = with_node(&repo, &writer, &first.snapshot.tree, &names, &|n| {
            if let NodeKind::File { chunks } = &mut n.kind {
                chunks.pop();
            }
        });
        writer.finish().unwrap();
        let mut forged = first.snapshot.clone();
        forged.tree = root;
        forged.time_ns += 1;
        let (forged_id, encoded) = forged.encode(repo.key());
        repo.backend()
            .write(FileKind::Snapshot, &forged_id.to_hex(), &encoded)
            .unwrap();

        let warned = std::sync::Mutex::new(Vec::new());
        let warn = |w: &str| warned.lock().unwrap().push(w.to_string());
        let second = backup(&repo, &opts, &mut std::io::empty(), &warn).unwrap();
        assert_eq!(second.snapshot.parent, Some(forged_id));
        assert_eq!(second.snapshot.summary.files_unmodified, 0);
        let warned = warned.into_inner().unwrap();
        assert!(
            warned
                .iter()
                .any(|w| w.contains("do not add up to its size")
                    && w.contains(&path)
                    && w.contains(&format!("entry says {}", bytes.len()))),
            "{warned:?}"
        );
        assert_eq!(chunks_of(&second.snapshot.tree), whole);
    }

    /// A tree that encodes as the parent snapshot's did is stored already
    /// (the walk has just read it), so it is not looked up in the index:
    /// a no-change backup asks the index about no tree, only about the
    /// chunks its unchanged files keep (still there?), and a backup after
    /// one file changed asks about the trees above that file.
    #[test]
    fn unchanged_trees_are_not_looked_up() {
        // Not under the system's temporary folder: the snapshot's trees
        // hold every folder above `src`, and other tests' files come and
        // go in that one, changing it between the two backups.
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(&base).unwrap();
        let src = dir.path().join("src");
        for a in 0..3 {
            for b in 0..3 {
                let d = src.join(format!("a{a}")).join(format!("b{b}"));
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("f.txt"), format!("{a}/{b}").repeat(50)).unwrap();
            }
        }
        let repo = new_repo(&dir.path().join("repo"));
        let opts = incremental(&src);
        let first = backup(&repo, &opts, &mut std::io::empty(), &|_| ()).unwrap();
        // The set the next backup uses: the repository keeps it until that
        // backup's index table is written.
        let run = || {
            let set = repo.index().unwrap();
            let r = backup(&repo, &opts, &mut std::io::empty(), &|_| ()).unwrap();
            assert!(r.warnings.is_empty(), "{:?}", r.warnings);
            let calls = set
                .contains_calls
                .each_ref()
                .map(|n| n.load(Ordering::Relaxed));
            (r.snapshot, calls)
        };
        let (same, [chunks, trees]) = run();
        assert_eq!(same.tree, first.snapshot.tree);
        assert_eq!(trees, 0, "a no-change backup looked trees up");
        assert_eq!(chunks, 9, "one chunk of each unchanged file");

        let changed = src.join("a1").join("b2");
        std::fs::write(changed.join("f.txt"), "new contents").unwrap();
        let (after, [chunks, trees]) = run();
        assert_ne!(after.tree, first.snapshot.tree);
        assert_eq!(after.summary.files_changed, 1);
        // The changed file's one chunk, and those the others keep.
        assert_eq!(chunks, 9);
        // The trees of `/`, the folders down to `src` and `src/a1/b2`
        // (each `components` counts `/` once).
        assert_eq!(trees, changed.components().count());
        let restored = repo.tree_at(&after.tree, &changed.join("f.txt").to_string_lossy());
        assert!(restored.is_ok(), "{:?}", restored.err());
    }
}
