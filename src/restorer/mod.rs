//! Restore: writing a snapshot (or part of it) back to a directory.
//!
//! Restore walks the snapshot's trees from the chosen subpath, applies
//! include/exclude patterns and plans what to create, restoring it a
//! batch of 8,192 entries at a time (`BATCH_ENTRIES`): the batch's
//! directories (parents first), its files on all cores, its symlinks and
//! special files, its hard links, and, under the mirror policy, removes
//! the extra entries of the directories walked since the batch before;
//! then it sets the metadata of the directories whose every entry is
//! restored, deepest first, and forgets them. A restore holds the
//! directories being walked and those of one batch, not the snapshot's.
//!
//! A dry run goes through the same steps and makes the same decision for
//! every entry (write, leave unchanged, skip, remove), looking at the
//! target but changing nothing in it: what a directory it would create or
//! replace holds counts as missing.
//!
//! Safety: every name comes from a tree that passed [`EncodedTree::decode`]
//! (which checks what [`Tree::decode`](crate::tree::Tree::decode) checks), so no
//! name can contain `/` or be `..`; each directory on the way is checked to
//! be a real directory (a symlink already in the target is replaced or, with
//! skip-existing, left alone with its subtree skipped) before anything is
//! written beneath it; nothing is ever written through a symlink, not even
//! one swapped in after that check (every path is reached through its
//! parent's descriptor: see the `beneath` module), and an
//! interrupted restore never leaves a truncated file under a real name:
//! files are written unnamed (`O_TMPFILE`) and, once complete, linked
//! under their name (or, to replace an existing entry, under a temporary
//! name renamed over it), so a restore killed at any moment leaves nothing
//! of a file in progress behind. Where unnamed files cannot be had (a
//! filesystem without them, no `/proc`, or more files at once than
//! descriptors), the file is created with `O_NOFOLLOW | O_EXCL` under a
//! temporary name and renamed into place.
//!
//! This module plans ([`restore`], the planner); `execute` carries the
//! plan out (directories, special files, links, metadata, the mirror
//! policy's removals), `files` writes the files pack by pack, `fetch`
//! reads the packs, and `place` holds a file in progress until it is
//! linked or renamed into place.

use crate::escape::Show;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::backend::{Data, FileKind};
use crate::error::{Error, Result};
use crate::filter::PathFilter;
use crate::fsmeta;
use crate::id::{BlobId, IdMap, PackId};
use crate::index::Location;
use crate::names::{cut_path, cut_to, NameList};
use crate::pack::{self, PackHeader};
use crate::repo::DirNodes;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};

mod beneath;
mod case;
mod execute;
mod fetch;
mod files;
mod place;
mod remove;
mod subtrees;
mod xattrs;

pub(crate) use files::raise_fd_limit;

use place::{FileTask, Prepared};

/// What to do with files already in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Write files that are missing or differ; keep files the snapshot lacks.
    Merge,
    /// Make the target exactly the snapshot: also remove extra entries.
    Mirror,
    /// Never overwrite anything that exists.
    SkipExisting,
}

/// Restore settings.
#[derive(Clone, Debug)]
pub struct RestoreOptions<'a> {
    /// The snapshot's id, where known: named in what the restore says.
    pub id: Option<crate::id::SnapshotId>,
    /// Path inside the snapshot to restore (absolute as backed up, any
    /// bytes: names need not be UTF-8); `None` restores everything.
    pub subpath: Option<OsString>,
    /// Destination directory.
    pub target: PathBuf,
    /// Only entries matching (or beneath a match of) these patterns (see
    /// [`crate::filter`]: absolute ones are matched against the path as
    /// backed up, whatever `subpath` is; any bytes, as names).
    pub includes: Vec<OsString>,
    /// Leave out entries matching these patterns, and what is beneath them.
    pub excludes: Vec<OsString>,
    /// Existing-file policy.
    pub policy: Policy,
    /// Plan and report only.
    pub dry_run: bool,
    /// Wait, before returning, until what was restored is on disk (a
    /// `syncfs` of the target's filesystem), so that a power cut after a
    /// restore has succeeded finds its files whole.
    pub sync: bool,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// The shared lock the restore holds, if any: checked before each
    /// batch, so a lock lost (not refreshed for so long that a gc
    /// elsewhere may have taken it for stale) stops the restore rather
    /// than have it report what gc removed as damage.
    pub lock: Option<&'a crate::repo::lock::LockGuard>,
}

/// What a restore did (or would do, with `dry_run`).
#[derive(Debug, Default, Serialize)]
pub struct RestoreStats {
    /// Files written.
    pub files_written: u64,
    /// Files already identical in the target.
    pub files_unchanged: u64,
    /// Entries left alone because they exist (skip-existing).
    pub skipped: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symlinks, hard links and special files created.
    pub other: u64,
    /// Bytes of file content written.
    pub bytes_written: u64,
    /// Extra entries removed (mirror).
    pub removed: u64,
    /// Entries the snapshot lacks that a mirror left in place because the
    /// restore's patterns do not select them: they match an `--exclude`,
    /// or, with `--include`, lie outside what the includes select (one
    /// such folder counts once, whatever it holds).
    pub kept_unselected: u64,
    /// Folders a mirror did not prune because their backup left entries
    /// out (see [`crate::tree::Node::left_out`]): what the target holds
    /// there beside the snapshot's entries may be what was left out.
    pub not_pruned: u64,
    /// The first of them.
    #[serde(skip)]
    pub first_not_pruned: Option<PathBuf>,
    /// In a dry run, the extra entries mirror would remove, sorted.
    #[serde(skip)]
    pub would_remove: Vec<PathBuf>,
    /// Entries that failed.
    pub errors: u64,
    /// Entries some of whose extended attributes the target refused (its
    /// filesystem has none, or, restoring as an ordinary user, a
    /// namespace only root may write): told in one warning, not errors.
    pub xattrs_refused: u64,
    /// The first write that found the target's filesystem full, if one
    /// did (see `Executor::full`): what it wrote and the error. The
    /// restore stopped there: what follows in the snapshot is not
    /// restored, and not counted.
    pub full: Option<String>,
    /// The include patterns no entry of what was restored matched, as given.
    pub includes_unmatched: Vec<OsString>,
    /// Whether there were include patterns and they selected nothing
    /// (none matched, or only what the excludes left out): nothing was
    /// restored.
    pub nothing_selected: bool,
}

struct Item {
    rel: PathBuf,
    node: Node,
}

/// The names of an inode met so far that hold one content, linked
/// together. A node is linked only to names of the same inode holding the
/// same chunks: one inode may hold two contents in a snapshot (its number
/// freed and given to another file while the backup ran, a file written
/// between the backup's reads of two of its names, a filesystem whose
/// numbers are not unique), and linking them put one file's content at
/// the other's path, silently.
struct Linked {
    /// The content's digest (see [`content_key`]).
    content: [u8; 32],
    /// The first path planned for it (`None` once that and every later
    /// path tried failed or were left alone: the next link met is
    /// restored as a file).
    first: Option<PathBuf>,
}

/// A digest of a file node's content: its size and its chunks' ids.
fn content_key(node: &Node, chunks: &[BlobId]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&node.size.to_le_bytes());
    for c in chunks {
        h.update(c.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// A directory planned: made at the end of the batch it is planned in,
/// and given its metadata at the end of the batch its walk is `done` in,
/// after everything beneath it is restored; then it is forgotten.
struct PlannedDir {
    /// Its node, and its path once it is `done`: while it is walked, its
    /// path is the first `rel_len` bytes of the walk's (see
    /// [`Planner::walk`]), and is not held a copy a level.
    item: Item,
    rel_len: usize,
    /// Its place in the walk's order, which `Plan::dirs` keeps.
    seq: u64,
    done: bool,
    /// An existing directory left as it is, given no metadata: by
    /// skip-existing, or one above the paths its backup was given.
    kept: bool,
    /// Whether it lies above the paths its backup was given (see
    /// [`above_given`]): the snapshot holds it only as the way down to
    /// them, so one the target has already keeps its own metadata.
    above: bool,
}

/// A directory a mirror prunes: what else it holds than `names` is
/// removed, but what the restore's patterns do not select (see
/// [`Executor::remove_extra`]).
struct Mirrored {
    /// Its place in the target.
    rel: PathBuf,
    /// Its path as backed up, which patterns are matched against.
    abs: Vec<u8>,
    /// Whether it (or a folder above it) matched an include: what it
    /// holds is then selected, whatever its names.
    included: bool,
    /// Its names in the snapshot, sorted.
    names: NameList,
    /// Whether the restore selects nothing in it, so neither makes nor
    /// restores anything there: the target may lack it (or hold a file of
    /// its name), and then there is nothing to prune. What the target
    /// holds in it that the patterns select and the snapshot lacks is
    /// removed all the same (until December 2026 such a folder was not
    /// pruned, and a mirror of `--include '*.conf'` left a stray `.conf`
    /// file there in place, without a word).
    unselected: bool,
}

struct Plan {
    /// The directories made for this batch or to be, not yet given their
    /// metadata: those being walked, and those planned or done since the
    /// batch before, in the walk's order (parents first).
    dirs: Vec<PlannedDir>,
    /// For a mirror: directories walked since the last batch, each with
    /// the names it has in the snapshot (before filtering), sorted. The
    /// next batch's end removes what else each holds, so only the names
    /// of the directories walked since are held.
    mirrored: Vec<Mirrored>,
    files: Vec<Item>,
    links: Vec<(Item, PathBuf)>,
    others: Vec<Item>,
}

/// Waits until what was written to the filesystem holding `target` is on
/// its disk (`syncfs`), and returns the error of a write the disk refused
/// meanwhile (which the kernel reports since Linux 5.8): the files were
/// handed to the page cache, and without this a power cut seconds after
/// a restore reported success left some of them empty under their names
/// (ext4 allocates their blocks only at writeback; until December 2026).
/// A filesystem mounted beneath the target is not synced.
fn sync_target(target: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(target)?;
    if crate::fault::sync_eio() {
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    // SAFETY: syncfs on a descriptor `dir` keeps open.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The refusal of a target that is, or lies beneath, a symlink to
/// nothing (the nearest of the target and the folders above it that
/// exists is one): a restore does not follow it into making folders
/// elsewhere. Until December 2026 a target beneath one was refused as
/// "File exists", and a dry run into either went ahead.
fn dangling_link(target: &Path) -> Option<Error> {
    let link = target
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .find(|p| fs::symlink_metadata(p).is_ok())?;
    if !fs::symlink_metadata(link).is_ok_and(|m| m.is_symlink()) || link.exists() {
        return None;
    }
    let to = fs::read_link(link).map_or_else(|_| "?".into(), |l| l.shown().to_string());
    let fix = "make that folder, or give another target";
    Some(Error::Invalid(if link == target {
        format!(
            "target {} is a symlink to {to}, which does not exist: {fix}",
            target.shown()
        )
    } else {
        format!(
            "target {} lies beneath {}, a symlink to {to}, which does not exist: {fix}",
            target.shown(),
            link.shown()
        )
    }))
}

/// `e`, damage met reading the trees of a snapshot (`snapshot`, where
/// known) on the way to what a restore or `ls` was asked for (its root
/// tree, say), or a tree there the index lacks, with what to do: it was
/// the bare damage, naming a pack, or the lookup's miss, naming no
/// snapshot.
/// `cached`: the trees were read through this host's cache.
pub(crate) fn trees_unreadable(
    snapshot: Option<&crate::id::SnapshotId>,
    cached: bool,
    e: Error,
) -> Error {
    let named = || {
        snapshot.map_or("the snapshot".to_string(), |s| {
            format!("snapshot {}", s.short())
        })
    };
    if crate::index::is_lacking(&e) {
        return Error::Advised {
            error: Box::new(e),
            advice: format!(
                "a tree of {} on the way there is not in the index (a table lost or left \
                 unread, or the entries of a lost pack dropped): {}",
                named(),
                crate::index::tree_lacking_mends(cached)
            ),
        };
    }
    match e {
        Error::Corrupt { .. } => Error::Advised {
            error: Box::new(e),
            advice: format!(
                "the trees of {} on the way there cannot be read: `cairn verify --read-data` \
                 names the damage and the snapshots it touches; `cairn repair snapshots \
                 --read-data` writes a copy of each without what is lost, and a backup of the \
                 sources stores again what they still have",
                named()
            ),
        },
        e => e,
    }
}

/// Restores `snap` according to `opts`; per-entry problems go to `warn` and
/// are counted in [`RestoreStats::errors`].
/// Clears the owner's bits from the process's umask, keeping the rest: a
/// umask that takes the owner's own permissions (0277, say) made every
/// folder the restore creates one it could not write in ("Permission
/// denied" on its first entry, nothing restored), where `mkdir -p` goes
/// on. Every entry is given its snapshot's mode at the end anyway; the
/// target and the folders above it, made for the restore, keep the rest
/// of the umask.
fn owner_unmasked() {
    // Between the two calls the mask is 0077, the owner's bits clear as
    // they will be after.
    // SAFETY: umask only sets the process's mask and returns the old one.
    unsafe {
        let mask = libc::umask(0o077);
        libc::umask(mask & 0o077);
    }
}

pub fn restore(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    warn: &(dyn Fn(&str) + Sync),
    error: &(dyn Fn(&str) + Sync),
) -> Result<RestoreStats> {
    let includes = PathFilter::new(&opts.includes)?;
    let excludes = PathFilter::new(&opts.excludes)?;
    // Only a mirror uses them: no other restore is refused for them.
    // Those no path matches (an empty pattern, one with an empty
    // component), which backups of before December 2026 took and
    // recorded, are left out: refused now, they would refuse the mirror.
    let recorded: Vec<&OsStr> = (snap.excludes.iter())
        .filter(|_| opts.policy == Policy::Mirror)
        .filter(|p| !crate::filter::matches_nothing(&p.0))
        .map(|p| OsStr::from_bytes(&p.0))
        .collect();
    let backup_excludes = PathFilter::new(&recorded).map_err(|e| {
        Error::Invalid(format!(
            "the exclude patterns the snapshot's backup recorded do not compile ({e}): \
             a mirror could not leave what they kept out of it"
        ))
    })?;
    // A table that cannot be parsed at all is left out, not the restore:
    // what the other tables index is restored.
    for msg in repo.index_reading_around("cannot be restored")? {
        warn(&msg);
    }
    let subpath = opts.subpath.as_deref().unwrap_or_default().as_bytes();
    let (tree, start_path) = repo
        .tree_at_bytes(&snap.tree, subpath)
        .map_err(|e| trees_unreadable(opts.id.as_ref(), repo.cache().is_some(), e))?;
    // A subpath naming a file, not a folder: the file is restored into
    // the target (which a mirror makes that file exactly), and nothing
    // else there is the snapshot's to remove.
    let one_file = {
        let mut named = Vec::new();
        for c in subpath.split(|&b| b == b'/') {
            if !c.is_empty() && c != b"." {
                named.push(b'/');
                named.extend_from_slice(c);
            }
        }
        !named.is_empty() && start_path != named
    };
    let mut fresh = subtrees::Subtrees::default();
    // A target in the repository, or in the cache, would have a restore
    // write over cairn's own files.
    let own = crate::repo::own::Own::of(repo);
    if let Some((folder, what)) = own.containing(&opts.target) {
        return Err(Error::Invalid(format!(
            "the target {} is in {what} ({}): a restore never writes there",
            opts.target.shown(),
            folder.shown()
        )));
    }
    // The folders the restore makes for its target, deepest first: taken
    // away again when the includes select nothing.
    let mut made_for_target = Vec::new();
    if !opts.dry_run {
        owner_unmasked();
        let mut p = opts.target.as_path();
        while !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err() {
            made_for_target.push(p.to_path_buf());
            p = p.parent().unwrap_or(Path::new(""));
        }
        if let Err(e) = fs::create_dir_all(&opts.target) {
            return Err(match fs::metadata(&opts.target) {
                // Not "File exists": it does, but is no folder.
                Ok(md) if !md.is_dir() => {
                    Error::Invalid(format!("target {} is not a directory", opts.target.shown()))
                }
                // Nor for a symlink to nothing, which a restore does not
                // follow into making folders elsewhere.
                Err(_) => dangling_link(&opts.target)
                    .unwrap_or_else(|| Error::path("create target", &opts.target, e)),
                _ => Error::path("create target", &opts.target, e),
            });
        }
    } else {
        match fs::metadata(&opts.target) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "target {} is not a directory",
                    opts.target.shown()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(e) = dangling_link(&opts.target) {
                    return Err(e);
                }
                fresh.insert(&opts.target);
            }
            Err(e) => return Err(Error::path("stat", &opts.target, e)),
        }
    }
    // Once made, the target itself is judged again, by where it really is.
    if let Some((folder, what)) = own.containing(&opts.target) {
        return Err(Error::Invalid(format!(
            "the target {} is in {what} ({}): a restore never writes there",
            opts.target.shown(),
            folder.shown()
        )));
    }
    // The probes of the target (for case, and for unnamed files) make and
    // remove an entry there: its times are put back after them, so that a
    // restore that changes nothing else leaves them as they were (until
    // December 2026 every restore moved the target's modification time).
    let times = (!opts.dry_run)
        .then(|| fs::metadata(&opts.target).and_then(|m| Ok((m.accessed()?, m.modified()?))))
        .and_then(|t| t.ok());
    let case = case::Case::of_target(&opts.target, opts.dry_run);
    let ex = Executor {
        repo,
        own,
        target: &opts.target,
        start: &start_path,
        policy: opts.policy,
        dry_run: opts.dry_run,
        warn,
        error,
        errors: AtomicU64::new(0),
        unindexed: AtomicU64::new(0),
        damaged: AtomicU64::new(0),
        pack_missing: AtomicU64::new(0),
        index_damaged: AtomicU64::new(0),
        full: Mutex::new(None),
        lock: opts.lock,
        lost: Mutex::new(None),
        halt: std::sync::atomic::AtomicBool::new(false),
        reserved: AtomicU64::new(0),
        skipped_dirs: Mutex::new(subtrees::Subtrees::default()),
        fresh_dirs: Mutex::new(fresh),
        zero_ids: Mutex::new(HashMap::new()),
        root: fsmeta::is_root(),
        dry_packs: Mutex::new(crate::id::IdMap::default()),
        open_budget: AtomicIsize::new(0),
        unnamed: std::sync::atomic::AtomicBool::new(false),
        beneath: beneath::Beneath::new(&opts.target),
        case,
        includes: &includes,
        excludes: &excludes,
        backup_excludes: &backup_excludes,
        xattrs_refused: Mutex::new(xattrs::Refused::default()),
        modes_refused: Mutex::new(xattrs::Refused::default()),
        default_acls: std::sync::atomic::AtomicBool::new(false),
        opened_up: Mutex::new(HashMap::new()),
        replaced: AtomicU64::new(0),
        would_replace: Mutex::new(Vec::new()),
    };
    if !ex.beneath.guarded() && !opts.dry_run {
        warn(&format!(
            "/proc is not mounted, so restore names {}'s entries by their paths: a folder \
             in it swapped for a symlink while the restore runs (by anyone who may write \
             there) would lead its writes elsewhere; mount /proc, or restore into a folder \
             no one else can write",
            opts.target.shown()
        ));
    }
    ex.prepare_files();
    // The target itself: what a restore of a sub-path, a single file or
    // a stream puts straight into it takes its default ACL.
    ex.note_default_acl(&opts.target);
    if let Some((accessed, modified)) = times {
        let times = fs::FileTimes::new()
            .set_accessed(accessed)
            .set_modified(modified);
        let _ = fs::File::open(&opts.target).and_then(|f| f.set_times(times));
    }
    let mut plan = Plan {
        dirs: Vec::new(),
        mirrored: Vec::new(),
        files: Vec::new(),
        links: Vec::new(),
        others: Vec::new(),
    };
    let mut stats = RestoreStats::default();
    let given = given_paths(snap);
    let mut planner = Planner {
        repo,
        mirror: opts.policy == Policy::Mirror && !one_file,
        given: &given,
        includes: &includes,
        excludes: &excludes,
        plan: &mut plan,
        inodes: HashMap::new(),
        deferred: Vec::new(),
        ex: &ex,
        workers: if opts.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            opts.workers
        },
        stats: &mut stats,
        include_hits: vec![false; opts.includes.len()],
        includes_left: opts.includes.len(),
        hits: Vec::new(),
        dirs_made: 0,
        next_dir: 0,
        batch_dirs: 0,
        batch_chunks: 0,
        batch_paths: 0,
    };
    let twins = if case.merges_names() {
        case::Twins::of(repo.tree_at_bytes(&snap.tree, subpath)?.0)
    } else {
        case::Twins::default()
    };
    let prune = if planner.mirror {
        Prune::of(
            start_path.as_slice(),
            left_out_at(repo, snap, subpath)?,
            &given,
        )
    } else {
        Prune::All
    };
    // The folder a subpath names (or holds the file it names) and those
    // above it are matched as a whole restore matches them: one that an
    // exclude matches leaves nothing selected, one that an include
    // matches selects everything beneath.
    let (mut included, mut excluded) = (false, false);
    for (at, _) in start_path.iter().enumerate().filter(|(_, &b)| b == b'/') {
        let end = start_path[at + 1..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(start_path.len(), |n| at + 1 + n);
        let (path, name) = (&start_path[..end], &start_path[at + 1..end]);
        if name.is_empty() {
            continue;
        }
        if planner.includes_left > 0 {
            planner.note_includes(path, name, true);
        }
        if excludes.matches_bytes(path, name, true) && !on_way_to_given(path, &given) {
            excluded = true;
            break;
        }
        included |= includes.matches_bytes(path, name, true);
    }
    let (mut rel, mut abs) = (PathBuf::new(), start_path.clone());
    let any = !excluded && planner.walk(tree, &mut rel, &mut abs, included, &twins, prune);
    if !opts.includes.is_empty() && !any {
        // Includes that select nothing (a typo, say) change nothing, not
        // even a mirror's removals of what the target holds beside the
        // snapshot's entries. Nothing was restored yet: a batch is
        // restored only once it holds a selected entry.
        planner.plan.mirrored.clear();
    }
    planner.finish();
    let hits = std::mem::take(&mut planner.include_hits);
    stats.includes_unmatched = (opts.includes.iter().zip(hits))
        .filter(|(_, hit)| !hit)
        .map(|(p, _)| p.clone())
        .collect();
    stats.nothing_selected = !opts.includes.is_empty() && !any;
    if stats.nothing_selected {
        // A mistyped include leaves no empty target behind to be taken
        // for a restore. `remove_dir` takes only empty folders.
        for p in &made_for_target {
            let _ = fs::remove_dir(p);
        }
    }
    stats.removed += ex.replaced.load(Ordering::Relaxed);
    if let Ok(mut replaced) = ex.would_replace.lock() {
        stats.would_remove.append(&mut replaced);
    }
    stats.would_remove.sort();
    if let Some(first) = &stats.first_not_pruned {
        warn(&format!(
            "{} folder(s) whose backup left entries out (it could not read them, \
             another filesystem was mounted there, they held the repository or \
             cairn's cache, entries were renamed over one another while it walked \
             them, or it took only the way down to a path given beneath, past an \
             exclude or another filesystem), or that `repair snapshots` \
             dropped entries of, or that hold nothing but the way down to a path \
             given beneath them (which a snapshot does not tell apart from the \
             last case), are not pruned: what the \
             target holds in them beside the snapshot's entries is left in place \
             (first: {})",
            stats.not_pruned,
            first.shown()
        ));
    }
    if stats.kept_unselected > 0 {
        crate::eprint_line(format_args!(
            "note: {} entr{} the snapshot lacks {} left in place, as the backup's \
             excludes or the restore's --include/--exclude patterns do not select {}",
            stats.kept_unselected,
            if stats.kept_unselected == 1 {
                "y"
            } else {
                "ies"
            },
            match (opts.dry_run, stats.kept_unselected == 1) {
                (true, _) => "would be",
                (false, true) => "was",
                (false, false) => "were",
            },
            if stats.kept_unselected == 1 {
                "it"
            } else {
                "them"
            },
        ));
    }
    if let Some((entries, why)) = ex.xattrs_refused_warning() {
        stats.xattrs_refused = entries;
        warn(&why);
    }
    if let Some((entries, first)) = ex
        .modes_refused
        .lock()
        .ok()
        .and_then(|r| Some((r.entries, r.first.clone()?)))
    {
        warn(&format!(
            "the set-user-ID, set-group-ID or sticky bits of {entries} entr{} not restored: \
             the target or the system refuses them, and each has the rest of its mode (the \
             first: {first})",
            if entries == 1 { "y is" } else { "ies are" }
        ));
    }
    // Each said bare where it failed: what it means, and what mends it.
    let unindexed = ex.unindexed.load(Ordering::Relaxed);
    if unindexed > 0 {
        // A table that fails its check may be what lacks them (an entry's
        // id damaged): named, as verify names it (it went unnamed).
        let why = match repo
            .index()
            .ok()
            .and_then(|i| i.damaged_tables(repo.key()).first().copied())
        {
            Some(t) => format!(
                "an index table lost or left unread, or index {}, which fails its check \
                 (damaged, or not from this repository): its entries may be what lacks them",
                t.short()
            ),
            None => "an index table lost or left unread?".into(),
        };
        warn(&format!(
            "{unindexed} entr{} {} restored because the index lacks entries for {} data \
             ({why}): the packs may still hold it; `cairn \
             repair index` rebuilds the index from the packs, then run the restore again. \
             If `cairn repair index --read-data` left that data out as damaged, no pack \
             holds an intact copy: a backup of the sources stores again what they still \
             have, which mends this snapshot too, and `cairn repair snapshots` writes a copy \
             of it without the rest",
            if unindexed == 1 { "y" } else { "ies" },
            match (opts.dry_run, unindexed == 1) {
                (true, _) => "would not be",
                (false, true) => "was not",
                (false, false) => "were not",
            },
            if unindexed == 1 { "its" } else { "their" },
        ));
    }
    let index_damaged = ex.index_damaged.load(Ordering::Relaxed);
    if index_damaged > 0 {
        warn(&format!(
            "{index_damaged} entr{} not restored because an index table naming {} data is \
             damaged (named above), not the data itself: `cairn repair index` rebuilds the \
             index from the packs, then run the restore again",
            if index_damaged == 1 {
                "y was"
            } else {
                "ies were"
            },
            if index_damaged == 1 { "its" } else { "their" },
        ));
    }
    let missing = ex.pack_missing.load(Ordering::Relaxed);
    if missing > 0 {
        warn(&format!(
            "{missing} entr{} not restored because the pack the index puts {} data in does \
             not exist (named above): `cairn verify` tells a deleted pack from a damaged \
             index and names the snapshots that lose data; `cairn repair index` rebuilds the \
             index from the packs (nothing is lost where another pack holds the data), after \
             which a backup of the sources stores again what they still have (which mends \
             this snapshot), and `cairn repair snapshots` writes a copy of it without the \
             rest",
            if missing == 1 { "y was" } else { "ies were" },
            if missing == 1 { "its" } else { "their" },
        ));
    }
    let damaged = ex.damaged.load(Ordering::Relaxed);
    if damaged > 0 {
        warn(&format!(
            "{damaged} entr{} not restored because {} data is damaged in the \
             repository (named above): `cairn verify --read-data` names every damaged blob \
             and the snapshots that use it; `cairn repair index --read-data` then leaves the \
             damaged copies out of the index, after which a backup of the sources stores \
             again what they still have (which mends this snapshot), and `cairn repair \
             snapshots` writes a copy of it without the rest",
            if damaged == 1 { "y was" } else { "ies were" },
            if damaged == 1 { "its" } else { "their" },
        ));
    }
    // Trees read from another copy (file data read so is warned of as
    // it is written).
    for said in repo.take_read_around_said() {
        warn(&said);
    }
    if opts.sync && !opts.dry_run && !stats.nothing_selected {
        if let Err(e) = sync_target(&opts.target) {
            error(&format!(
                "{}: the restored files could not all be written to disk ({e}): \
                 what is under their names may be incomplete; restore again once \
                 the target's disk is sound",
                opts.target.shown()
            ));
            ex.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    stats.errors = ex.errors.load(Ordering::Relaxed);
    stats.full = ex.full.lock().ok().and_then(|f| f.clone());
    if let Some(e) = ex.lost.lock().ok().and_then(|mut l| l.take()) {
        return Err(e);
    }
    Ok(stats)
}

/// What a mirror prunes of a folder.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Prune {
    /// The folder and those beneath it.
    All,
    /// Those beneath it, not the folder: its backup left entries out of
    /// it (files it could not read, another filesystem mounted there,
    /// see [`crate::tree::Node::left_out`]), and what the target holds
    /// there may be just those.
    NotHere,
    /// As [`Prune::All`], unless its tree holds nothing but the way down
    /// to the given paths beneath it: then as [`Prune::NotHere`]. A
    /// folder within one given path and above another that its backup
    /// walked only as the way down (excluded, or on another filesystem
    /// with `-x`) holds just that, and a snapshot written before
    /// December 2026 said nothing was left out of it (see
    /// [`crate::tree::Node::left_out`]); one its backup listed whole and
    /// found holding only the way down is not pruned either, as the two
    /// cannot be told apart.
    UnlessWayDown,
    /// Those beneath it, not the folder, without a word: a folder above
    /// the paths its backup was given holds only the way down to them
    /// (`/tmp` of a backup of `/tmp/src`), and says nothing of what else
    /// was there.
    Above,
    /// Neither: beneath a folder whose name has a twin on a target that
    /// does not tell case apart, what the target holds may be the twin's.
    Nothing,
}

impl Prune {
    /// For the folder at `abs` (its path in the snapshot) whose backup
    /// left `left_out` entries out of it, in a snapshot of `given` paths.
    fn of(abs: &[u8], left_out: u64, given: &[String]) -> Prune {
        if above_given(abs, given) {
            Prune::Above
        } else if left_out != 0 {
            Prune::NotHere
        } else if given_beneath(abs, given) {
            Prune::UnlessWayDown
        } else {
            Prune::All
        }
    }
}

/// The paths `snap`'s backup was given, as paths of the snapshot's
/// tree: a stream's file name (`--stdin-filename app.sql`, recorded as
/// given) lies in the root, as `/app.sql`. (Until December 2026 it was
/// compared as given, beneath no folder, so a mirror restore of a dump
/// took the target for a folder the backup had walked whole, and
/// removed everything else it held.)
fn given_paths(snap: &Snapshot) -> Vec<String> {
    snap.paths
        .iter()
        .map(|p| {
            if p.starts_with('/') {
                p.clone()
            } else {
                format!("/{p}")
            }
        })
        .collect()
}

/// Whether the folder at `abs` (its path in the snapshot, `""` for the
/// root) lies above one of the paths the backup was `given`, and is
/// neither one of them nor beneath one, so that its tree holds only the
/// way down. Given paths are text (not UTF-8 ones escaped, see
/// [`crate::archiver::path_text`]), so `abs` is compared as such. A
/// backup of `/` walks every folder whole; a `--stdin` one's root is
/// above its file (see [`given_paths`]). (Until December 2026 a folder was above
/// as soon as a given path lay beneath it: a backup of `src` and `src/d`
/// together had a mirror never prune `src`, silently.)
fn above_given(abs: &[u8], given: &[String]) -> bool {
    let abs = given_text(abs);
    let walked_whole = given.iter().any(|p| same_path(p, &abs) || beneath(&abs, p));
    !walked_whole && given.iter().any(|p| beneath(p, &abs))
}

/// Whether one of the paths the backup was `given` lies beneath the
/// folder at `abs` (as for [`above_given`]).
fn given_beneath(abs: &[u8], given: &[String]) -> bool {
    let abs = given_text(abs);
    given.iter().any(|p| beneath(p, &abs))
}

/// Whether `abs` (as for [`above_given`]) is one of the paths the backup
/// was `given`, or a folder on the way down to one. A backup keeps those
/// whatever its excludes say (`backup ~ ~/.cache/keep --exclude .cache`
/// keeps `.cache/keep`), and a restore given the same patterns keeps
/// them too: the README has the backup's excludes given to the restore
/// of an older snapshot, which left such a path out, exit 0.
fn on_way_to_given(abs: &[u8], given: &[String]) -> bool {
    let abs = given_text(abs);
    given.iter().any(|p| same_path(p, &abs) || beneath(p, &abs))
}

/// `abs` as the text given paths are kept in.
fn given_text(abs: &[u8]) -> std::borrow::Cow<'_, str> {
    crate::archiver::path_text(Path::new(OsStr::from_bytes(abs)))
}

/// Whether the path `inner` lies beneath the folder `outer`.
fn beneath(inner: &str, outer: &str) -> bool {
    let outer = outer.trim_end_matches('/');
    inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
}

/// Whether two paths are the same, but for a trailing `/`.
fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// What the backup of `snap` left out of the folder at `subpath` (see
/// [`crate::tree::Node::left_out`]); nothing for the root, which has no
/// node to say so, and for a path that names a file.
fn left_out_at(repo: &Repository, snap: &Snapshot, subpath: &[u8]) -> Result<u64> {
    let mut left_out = 0;
    let mut dir = repo.dir_nodes(&snap.tree)?;
    let comps = subpath.split(|&b| b == b'/');
    for comp in comps.filter(|c| !c.is_empty() && *c != b".") {
        let Some(node) = dir.find(|n| n.as_ref().map_or(true, |n| n.name.0 == comp)) else {
            return Ok(0);
        };
        let node = node?;
        match &node.kind {
            NodeKind::Dir { subtree } => {
                left_out = node.left_out();
                dir = repo.dir_nodes(subtree)?;
            }
            _ => return Ok(0),
        }
    }
    Ok(left_out)
}

/// A batch of files is written once it holds this many files and other
/// entries, or its files this many chunks, so what a restore holds in
/// memory for its files (each file's path, node and task, and its chunks'
/// places in the read plan: about 0.9 KiB a small file) is bounded
/// whatever the snapshot holds. A pack whose blobs serve two batches is
/// read by each (mapped again locally; remotely, each reads only the
/// ranges its blobs lie in). 8,192 small files restored as fast as
/// 32,768 (200,000 in 200 folders, and the benchmark's 2 GiB mix), in
/// 28 MiB against 55 for the 200,000.
const BATCH_ENTRIES: usize = 8 * 1024;
const BATCH_CHUNKS: usize = 256 * 1024;
/// ... or its entries' paths this many bytes: those of a tree thousands
/// of folders deep are megabytes each. A batch of an ordinary tree's
/// paths is a few hundred KiB.
const BATCH_PATHS: usize = 16 << 20;

/// Walks the snapshot's trees and restores what they select, a batch at
/// a time (see [`BATCH_ENTRIES`]).
struct Planner<'a> {
    repo: &'a Repository,
    /// Whether to record each directory's names (for a mirror's removals).
    mirror: bool,
    /// The paths the snapshot's backup was given (see [`Prune::Above`]).
    given: &'a [String],
    includes: &'a PathFilter,
    excludes: &'a PathFilter,
    plan: &'a mut Plan,
    /// Per inode (device and number) with hard links: how many of its
    /// links have not been met yet (forgotten at none), and its groups
    /// (see [`Linked`]).
    inodes: HashMap<(u64, u64), (u64, Vec<Linked>)>,
    /// Directories without their owner's search permission, whose
    /// metadata waits for the end when not running as root: given it
    /// earlier, they would bar later batches from linking to the files
    /// in them.
    deferred: Vec<PlannedDir>,
    ex: &'a Executor<'a>,
    workers: usize,
    stats: &'a mut RestoreStats,
    /// Per include pattern, whether an entry walked matched it (excluded
    /// or not); how many have not; and room to find those an entry does.
    include_hits: Vec<bool>,
    includes_left: usize,
    hits: Vec<usize>,
    /// How many of `plan.dirs` exist already (made for an earlier batch).
    dirs_made: usize,
    /// The next directory's place in the walk's order.
    next_dir: u64,
    /// Directories done since the batch before.
    batch_dirs: usize,
    /// Chunks of the files in `plan.files`.
    batch_chunks: usize,
    /// Bytes of the paths of the entries planned since (see
    /// [`BATCH_PATHS`]).
    batch_paths: usize,
}

impl Planner<'_> {
    /// Restores the batch planned so far: the directories not made yet
    /// (each an ancestor of a planned entry, or holding one), then the
    /// files, the symlinks and special files, and the hard links (to
    /// files of this batch or one before); under the mirror policy
    /// removes what else the directories walked since the batch before
    /// hold; then sets the metadata of the directories done, deepest
    /// first (writing into a directory changes its mtime), and forgets
    /// them.
    ///
    /// `walking` is the path of the entry being walked (see
    /// [`Planner::walk`]): the directories not done yet lie on it.
    fn flush(&mut self, walking: &Path) {
        // Once the target is full, nothing more is done to it: no folder
        // made, removed or given its metadata (a folder left writable
        // lets the restore run again once there is room, and one whose
        // files are missing keeps none of the snapshot's times).
        self.ex.check_lock();
        if self.ex.halted() {
            return self.drop_batch();
        }
        // Parents first. The path of one being walked is the first bytes
        // of `walking`, copied only while it is made.
        for d in &mut self.plan.dirs[self.dirs_made..] {
            let kept = if d.done {
                self.ex.make_dir(&d.item.rel, d.above, self.stats)
            } else {
                self.ex
                    .make_dir(cut_path(walking, d.rel_len), d.above, self.stats)
            };
            d.kept |= kept;
        }
        crate::fault::swap_dir(self.ex.target);
        let unplaced = self
            .ex
            .restore_files(&self.plan.files, self.workers, self.stats);
        if self.ex.halted() {
            return self.drop_batch();
        }
        self.ex.make_others(&self.plan.others, self.stats);
        if self.ex.halted() {
            return self.drop_batch();
        }
        let unplaced: HashSet<PathBuf> = unplaced
            .into_iter()
            .map(|i| &self.plan.files[i])
            .filter(|f| f.node.nlink > 1)
            .map(|f| f.rel.clone())
            .collect();
        self.link(unplaced);
        if self.ex.halted() {
            return self.drop_batch();
        }
        // Folders the restore selects nothing in come last, each before
        // those beneath it (in the order of their paths), each opened up
        // for an ordinary user held so while those beneath it are pruned:
        // one beneath another that lacks search permission is reached
        // through it (it was skipped without a word, exit 0). Only the
        // folders above the one pruned are held open (holding every one
        // ran out of descriptors).
        let (mut unselected, selected): (Vec<Mirrored>, Vec<Mirrored>) =
            self.plan.mirrored.drain(..).partition(|m| m.unselected);
        unselected.sort_by(|a, b| a.rel.cmp(&b.rel));
        let mut opened: Vec<(PathBuf, remove::ModeBack)> = Vec::new();
        for m in selected.into_iter().chain(unselected) {
            while opened
                .last()
                .is_some_and(|(above, _)| !m.rel.starts_with(above))
            {
                opened.pop();
            }
            if !self.ex.under_skipped(&m.rel) {
                let (removed, kept) = self.ex.remove_extra(
                    &self.ex.target.join(&m.rel),
                    &m,
                    &mut self.stats.would_remove,
                    &mut opened,
                );
                self.stats.removed += removed;
                self.stats.kept_unselected += kept;
            }
        }
        let (done, walked): (Vec<PlannedDir>, Vec<PlannedDir>) =
            std::mem::take(&mut self.plan.dirs)
                .into_iter()
                .partition(|d| d.done);
        self.plan.dirs = walked;
        for d in done.into_iter().rev() {
            if d.kept {
                self.ex.close_again(&d.item.rel);
                continue;
            }
            if !self.ex.root && d.item.node.mode & 0o100 == 0 && !self.ex.dry_run {
                self.deferred.push(d);
            } else {
                self.ex.set_dir_meta(&d.item);
            }
        }
        self.dirs_made = self.plan.dirs.len();
        self.plan.files.clear();
        self.plan.others.clear();
        self.plan.links.clear();
        self.batch_dirs = 0;
        self.batch_chunks = 0;
        self.batch_paths = 0;
    }

    /// Forgets the batch planned so far without restoring the rest of
    /// it, as [`Planner::flush`] would once done: the target is full. The
    /// directories being walked stay, so the walk's places in `plan.dirs`
    /// hold, but are never given their metadata.
    fn drop_batch(&mut self) {
        self.plan.dirs.retain(|d| !d.done);
        for d in &mut self.plan.dirs {
            d.kept = true;
        }
        self.dirs_made = self.plan.dirs.len();
        self.plan.mirrored.clear();
        self.plan.files.clear();
        self.plan.others.clear();
        self.plan.links.clear();
        self.batch_dirs = 0;
        self.batch_chunks = 0;
        self.batch_paths = 0;
    }

    /// Makes the batch's hard links (see [`Executor::make_links`]). A
    /// link whose first path was not put in place (`unplaced`: failed, or
    /// left alone by skip-existing, whatever it holds) is never linked to
    /// it: the inode's first such link is restored as a file instead and
    /// the others linked to that, round after round should it fail too.
    /// Links met in later batches go to whichever path was put in place
    /// (see `inodes`).
    fn link(&mut self, mut unplaced: HashSet<PathBuf>) {
        let mut links = std::mem::take(&mut self.plan.links);
        // A first path not put in place, and the link restored instead.
        let mut moved: HashMap<PathBuf, PathBuf> = HashMap::new();
        let resolve = |moved: &HashMap<PathBuf, PathBuf>, mut at: PathBuf| {
            while let Some(next) = moved.get(&at) {
                at = next.clone();
            }
            at
        };
        loop {
            let (mut ready, mut waiting, mut files) = (Vec::new(), Vec::new(), Vec::new());
            let mut trying = HashSet::new();
            for (item, first) in links {
                let first = resolve(&moved, first);
                if trying.contains(&first) {
                    waiting.push((item, first));
                } else if unplaced.contains(&first) {
                    moved.insert(first, item.rel.clone());
                    trying.insert(item.rel.clone());
                    files.push(item);
                } else {
                    ready.push((item, first));
                }
            }
            self.ex.make_links(&ready, self.stats);
            if files.is_empty() {
                break;
            }
            for i in self.ex.restore_files(&files, self.workers, self.stats) {
                unplaced.insert(files[i].rel.clone());
            }
            links = waiting;
        }
        if !unplaced.is_empty() {
            let groups = self.inodes.values_mut().flat_map(|(_, g)| g);
            for Linked { first, .. } in groups {
                if let Some(at) = first.take() {
                    let at = resolve(&moved, at);
                    *first = (!unplaced.contains(&at)).then_some(at);
                }
            }
        }
    }

    /// Restores what is left of the plan, then gives the directories held
    /// back (see `deferred`) their metadata, deepest first.
    fn finish(&mut self) {
        self.flush(Path::new(""));
        if self.ex.halted() {
            self.deferred.clear();
        }
        self.deferred.sort_by_key(|d| std::cmp::Reverse(d.seq));
        for d in std::mem::take(&mut self.deferred) {
            self.ex.set_dir_meta(&d.item);
        }
    }

    /// Counts the folder at `rel` among those a mirror does not prune
    /// for what their backup left out.
    fn not_pruned(&mut self, rel: &Path) {
        self.stats.not_pruned += 1;
        self.stats
            .first_not_pruned
            .get_or_insert_with(|| self.ex.target.join(rel));
    }

    /// Restores the batch once it is full; called right after an entry
    /// is planned (or a directory holding one is done), so every
    /// directory planned so far holds one. `walking` is the entry's path.
    fn flush_if_full(&mut self, walking: &Path) {
        self.batch_paths = self.batch_paths.saturating_add(walking.as_os_str().len());
        let entries = crate::fault::restore_batch().unwrap_or(BATCH_ENTRIES);
        let planned = self.plan.files.len()
            + self.plan.others.len()
            + self.plan.links.len()
            + self.batch_dirs;
        if planned >= entries
            || self.batch_chunks >= BATCH_CHUNKS
            || self.batch_paths >= BATCH_PATHS
        {
            self.flush(walking);
        }
    }

    /// Records which include patterns the entry matches (see
    /// `include_hits`), also beneath a directory already included.
    fn note_includes(&mut self, path: &[u8], name: &[u8], is_dir: bool) {
        self.hits.clear();
        self.includes
            .matching_bytes(path, name, is_dir, &mut self.hits);
        for &i in &self.hits {
            if !std::mem::replace(&mut self.include_hits[i], true) {
                self.includes_left -= 1;
            }
        }
    }

    /// Where the directory of place `seq`, being walked, is in `plan.dirs`.
    fn dir_at(&self, seq: u64) -> usize {
        self.plan.dirs.partition_point(|d| d.seq < seq)
    }

    /// Plans (and restores, batch by batch) the entries of `tree` at
    /// `rel`; returns whether any was selected. A subtree that cannot be
    /// read is reported and left out, not the restore.
    ///
    /// On a target that does not tell case apart (see [`case`]), `twins`
    /// are the folder's names that fold alike: only the first of each is
    /// restored. A mirror prunes the folder as `prune` says ([`Prune`]).
    ///
    /// `rel` (the folder's path in the target) and `abs` (its path as
    /// backed up) are the walk's one buffer each: an entry's name is added
    /// while it is planned and taken off after, and both are as they were
    /// once this returns. Until December 2026 each level held copies of
    /// both and its directory's path in the plan: a restore of a tree
    /// 2,000 folders deep of 255-byte names took 2.2 GB.
    fn walk(
        &mut self,
        tree: DirNodes<'_>,
        rel: &mut PathBuf,
        abs: &mut Vec<u8>,
        included: bool,
        twins: &case::Twins,
        prune: Prune,
    ) -> bool {
        let mut any = false;
        if self.mirror && prune == Prune::NotHere {
            self.not_pruned(rel);
        }
        // The names a mirror keeps here, once every node was read: a
        // directory whose nodes could not all be read is not pruned.
        let mut names = (self.mirror && matches!(prune, Prune::All | Prune::UnlessWayDown))
            .then(NameList::default);
        // Whether every node so far is on the way down to a given path.
        let mut only_way_down = prune == Prune::UnlessWayDown;
        // Of the names with a twin here, those restored so far, folded,
        // each with the name it folds from.
        let mut restored: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let (rel_len, abs_len) = (rel.as_os_str().len(), abs.len());
        // Taken by value: a large directory's tree is freed as its nodes
        // are passed (see `IntoNodes`), and one in parts is read a part
        // at a time.
        for node in tree {
            // The entry before's name off.
            cut_to(rel, rel_len);
            abs.truncate(abs_len);
            if self.ex.halted() {
                // The target is full, or the lock lost: the rest is not
                // read, and nothing here is pruned.
                names = None;
                break;
            }
            let node = match node {
                Ok(node) => node,
                Err(e) => {
                    if let Err(e) = self.ex.stop_if_outage(e) {
                        self.ex.fail(
                            &self.ex.target.join(&*rel),
                            format!("the rest of its tree cannot be read, left out: {e}"),
                        );
                    }
                    names = None;
                    break;
                }
            };
            if let Some(list) = &mut names {
                // What the target holds is matched as it looks names up.
                if !list.push(&self.ex.case.mirror_key(&node.name.0)) {
                    self.ex.fail(
                        &self.ex.target.join(&*rel),
                        "4 GiB of names: its extra entries are left in place",
                    );
                    names = None;
                }
            }
            rel.push(OsStr::from_bytes(&node.name.0));
            abs.push(b'/');
            abs.extend_from_slice(&node.name.0);
            let child_abs: &[u8] = abs;
            only_way_down = only_way_down && on_way_to_given(child_abs, self.given);
            let name_bytes = node.name.0.as_slice();
            let is_dir = matches!(node.kind, NodeKind::Dir { .. });
            if self.includes_left > 0 {
                self.note_includes(child_abs, name_bytes, is_dir);
            }
            if self.excludes.matches_bytes(child_abs, name_bytes, is_dir)
                && !on_way_to_given(child_abs, self.given)
            {
                continue;
            }
            let inc = included
                || self.includes.is_empty()
                || self.includes.matches_bytes(child_abs, name_bytes, is_dir);
            // A directory may hold selected entries even when not
            // selected itself: its twin is left out either way.
            let twin = twins.folded(&node.name.0);
            if let Some(folded) = &twin {
                if let Some(first) = restored.get(folded) {
                    if inc || is_dir {
                        self.ex.fail(
                            &self.ex.target.join(&*rel),
                            format!(
                                "not restored: the target's filesystem does not tell its name \
                                 from \"{}\", which is restored there instead; restore it on its own \
                                 into another folder",
                                first.shown()
                            ),
                        );
                    }
                    continue;
                }
                if inc && !is_dir {
                    restored.insert(folded.clone(), node.name.0.clone());
                }
            }
            match node.kind {
                NodeKind::Dir { subtree } => {
                    let left_out = node.left_out();
                    // Batches restored while it is walked forget the
                    // directories done before it: its place is found
                    // again by its number.
                    let seq = self.next_dir;
                    self.next_dir += 1;
                    self.plan.dirs.push(PlannedDir {
                        item: Item {
                            rel: PathBuf::new(),
                            node,
                        },
                        rel_len: rel.as_os_str().len(),
                        seq,
                        done: false,
                        kept: false,
                        above: above_given(child_abs, self.given),
                    });
                    let sub_twins = if self.ex.case.merges_names() {
                        self.repo
                            .dir_nodes(&subtree)
                            .map(case::Twins::of)
                            .unwrap_or_default()
                    } else {
                        case::Twins::default()
                    };
                    let sub_prune = match prune {
                        Prune::Nothing => Prune::Nothing,
                        _ if twin.is_some() => Prune::Nothing,
                        _ => Prune::of(child_abs, left_out, self.given),
                    };
                    let below = match self.repo.dir_nodes(&subtree) {
                        Ok(sub) => self.walk(sub, rel, abs, inc, &sub_twins, sub_prune),
                        Err(e) => {
                            // An outage stops the restore: the next node
                            // sees it halted.
                            if let Err(e) = self.ex.stop_if_outage(e) {
                                self.ex.fail(
                                    &self.ex.target.join(&*rel),
                                    format!("its tree cannot be read, left out: {e}"),
                                );
                            }
                            let at = self.dir_at(seq);
                            self.plan.dirs.truncate(at.max(self.dirs_made));
                            continue;
                        }
                    };
                    let at = self.dir_at(seq);
                    if inc || below {
                        any = true;
                        if let Some(folded) = twin {
                            let name = &self.plan.dirs[at].item.node.name.0;
                            restored.insert(folded, name.clone());
                        }
                        self.plan.dirs[at].done = true;
                        self.plan.dirs[at].item.rel = rel.clone();
                        self.batch_dirs += 1;
                        self.flush_if_full(rel);
                    } else {
                        // Nothing selected beneath: drop the directory and
                        // whatever planning recorded for it. (Never one made
                        // already: a batch is restored right after an entry
                        // beneath is planned.)
                        self.plan.dirs.truncate(at.max(self.dirs_made));
                        // Its names are the last recorded: no batch was
                        // restored since, as none had an entry beneath.
                        if let Some(m) = self.plan.mirrored.last_mut().filter(|m| m.rel == *rel) {
                            m.unselected = true;
                        }
                    }
                }
                _ if !inc => {}
                NodeKind::File { ref chunks } => {
                    any = true;
                    let content = (node.nlink > 1).then(|| content_key(&node, chunks));
                    let chunks = chunks.len();
                    if let Some(content) = content {
                        let inode = (node.dev, node.inode);
                        let node_links = node.nlink;
                        let item = Item {
                            rel: rel.clone(),
                            node,
                        };
                        let (left, groups) = self
                            .inodes
                            .entry(inode)
                            .or_insert_with(|| (node_links, Vec::new()));
                        *left = left.saturating_sub(1);
                        let linked = match groups.iter_mut().find(|g| g.content == content) {
                            Some(Linked {
                                first: Some(first), ..
                            }) => {
                                self.plan.links.push((item, first.clone()));
                                true
                            }
                            // No path of it was put in place: this
                            // one is restored as a file, and the
                            // links met later go to it.
                            Some(group) => {
                                group.first = Some(item.rel.clone());
                                self.batch_chunks += chunks;
                                self.plan.files.push(item);
                                false
                            }
                            // The first of its content (of its inode,
                            // mostly): a file, and a group of its own.
                            None => {
                                groups.push(Linked {
                                    content,
                                    first: Some(item.rel.clone()),
                                });
                                self.batch_chunks += chunks;
                                self.plan.files.push(item);
                                false
                            }
                        };
                        if *left == 0 {
                            // Every link of the inode met: a tree of
                            // hard links is not held to the end.
                            self.inodes.remove(&inode);
                        }
                        if linked {
                            self.flush_if_full(rel);
                            continue;
                        }
                    } else {
                        self.batch_chunks += chunks;
                        self.plan.files.push(Item {
                            rel: rel.clone(),
                            node,
                        });
                    }
                    self.flush_if_full(rel);
                }
                _ => {
                    any = true;
                    self.plan.others.push(Item {
                        rel: rel.clone(),
                        node,
                    });
                    self.flush_if_full(rel);
                }
            }
        }
        cut_to(rel, rel_len);
        abs.truncate(abs_len);
        if only_way_down && names.take().is_some() {
            self.not_pruned(rel);
        }
        if let Some(names) = names {
            self.plan.mirrored.push(Mirrored {
                rel: rel.to_path_buf(),
                abs: abs.to_vec(),
                included,
                names: names.sorted(),
                unselected: false,
            });
        }
        any
    }
}

/// Files from this size on have their blocks reserved before they are
/// written (see `Executor::size_file`).
const RESERVE_FROM: u64 = 1 << 20;

struct Executor<'a> {
    repo: &'a Repository,
    /// The repository's own folder and its metadata cache (see
    /// [`crate::repo::own`]): nothing is written in a folder of the
    /// target that is one (an error), and nothing that is or holds one is
    /// removed or replaced.
    own: crate::repo::own::Own,
    target: &'a Path,
    /// The path, as backed up, of what the target stands for (the
    /// snapshot's root, or the sub-path restored): an entry's is it and
    /// the entry's path in the target.
    start: &'a [u8],
    policy: Policy,
    /// Decide everything, change nothing.
    dry_run: bool,
    /// For a dry run, the length of each pack looked at that is there to
    /// read (see `Executor::would_read`).
    dry_packs: Mutex<crate::id::IdMap<PackId, Option<u64>>>,
    warn: &'a (dyn Fn(&str) + Sync),
    /// Reports an entry that could not be restored (each is counted in
    /// `errors`, and makes the restore fail).
    error: &'a (dyn Fn(&str) + Sync),
    errors: AtomicU64,
    /// Of them, entries whose data the index lacks (see `fail`).
    unindexed: AtomicU64,
    /// Entries that failed as their data is damaged in the repository:
    /// said with what mends it once, at the end.
    damaged: AtomicU64,
    /// Entries that failed as the pack the index puts their data in does
    /// not exist: said with what mends it once, at the end (they were
    /// counted as damaged data, and sent to `repair index --read-data`).
    pack_missing: AtomicU64,
    /// Entries that failed as an index table naming their data is
    /// damaged: said with what mends it once, at the end.
    index_damaged: AtomicU64,
    /// The first failure for want of space in the target ("no space left
    /// on device", a quota), with its path. Once set, the restore stops
    /// (once no file whose space is reserved is left, see `reserved`):
    /// no more packs are read, no more files created, no folder made,
    /// removed or given its metadata, and the rest of the snapshot is not
    /// walked. Every later file would fail the same way, and a restore
    /// from a remote store would fetch the rest of the snapshot for
    /// nothing. Failures for want of space are not warned of one by one.
    full: Mutex<Option<String>>,
    /// The restore's shared lock (see [`RestoreOptions::lock`]).
    lock: Option<&'a crate::repo::lock::LockGuard>,
    /// Why the restore stopped for its lock, if it did.
    lost: Mutex<Option<Error>>,
    /// Whether the restore stopped: the target is full, or its lock is
    /// lost. Read for every blob.
    halt: std::sync::atomic::AtomicBool,
    /// Files whose space is reserved (see `size_file`) and that are not
    /// finished yet: a target found full stops the restore only once
    /// they are, since their writes cannot fail for want of space, and
    /// dropping them (the space they hold given back unused) made a
    /// restore into a target too small for all it holds write nothing,
    /// run after run.
    reserved: AtomicU64,
    /// Directories not restored (skipped or failed): nothing beneath them
    /// is written.
    skipped_dirs: Mutex<subtrees::Subtrees>,
    /// In a dry run: directories the restore would create or replace.
    fresh_dirs: Mutex<subtrees::Subtrees>,
    /// Ids of all-zero blobs by length (see `may_have_holes`).
    zero_ids: Mutex<HashMap<u32, BlobId>>,
    root: bool,
    /// Whether files are written unnamed: set by `restore_files` when a
    /// probe in the target could link one, cleared should a link fail.
    unnamed: std::sync::atomic::AtomicBool,
    /// How many more files in progress may be held open (set by
    /// `restore_files` from the open-file limit); beyond it a file is
    /// written under a temporary name and closed after each write.
    open_budget: AtomicIsize,
    /// Every path acted on goes through it: see [`beneath`].
    beneath: beneath::Beneath,
    /// Whether the target tells names apart by case (see [`case`]).
    case: case::Case,
    /// The restore's patterns: a mirror removes only what they select.
    includes: &'a PathFilter,
    excludes: &'a PathFilter,
    /// The patterns the snapshot's backup excluded (see
    /// [`Snapshot::excludes`]): a mirror leaves what they match too.
    backup_excludes: &'a PathFilter,
    /// Extended attributes the target refused (see [`xattrs`]).
    xattrs_refused: Mutex<xattrs::Refused>,
    /// Set-user-ID, set-group-ID and sticky bits the target refused,
    /// each entry given the rest of its mode (see `apply_meta`).
    modes_refused: Mutex<xattrs::Refused>,
    /// Whether a folder of the target holds a default ACL (see
    /// [`Executor::note_default_acl`]): new entries then inherit an ACL
    /// the snapshot's may lack, and are rid of it as held ones are.
    default_acls: std::sync::atomic::AtomicBool,
    /// Existing folders given their owner's write and search permission
    /// for the restore (see `Executor::open_up`), with their modes.
    opened_up: Mutex<HashMap<PathBuf, u32>>,
    /// Entries removed where the snapshot has something else: a folder
    /// that held anything, counted with a mirror's removals (see
    /// [`Executor::remove_folder`]); in a dry run, listed too.
    replaced: AtomicU64,
    would_replace: Mutex<Vec<PathBuf>>,
}

/// What [`Executor::ensure_dir`] found or did.
enum Dir {
    /// Created (or, in a dry run, would be).
    Made,
    /// A directory was there already.
    Existing,
    /// Skip-existing left something else in its place.
    Skipped,
}

/// How an existing destination entry was dealt with.
enum Existing {
    /// Nothing there (or it was removed): create.
    Create,
    /// Keep it and do nothing (skip-existing).
    Skip,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_above_the_given_paths_only_outside_them_all() {
        let given = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let src_and_d = given(&["/tmp/src", "/tmp/src/d"]);
        for (abs, above) in [
            ("", true),
            ("/tmp", true),
            ("/tmp/src", false),
            ("/tmp/src/d", false),
            ("/tmp/src/e", false),
            ("/tmp/srcx", false),
            ("/home", false),
        ] {
            assert_eq!(above_given(abs.as_bytes(), &src_and_d), above, "{abs:?}");
        }
        let root = given(&["/"]);
        assert!(!above_given(b"", &root));
        assert!(!above_given(b"/tmp", &root));
        let d_only = given(&["/tmp/src/d"]);
        assert!(above_given(b"/tmp/src", &d_only));
        assert!(!above_given(b"/tmp/src/d", &d_only));
    }

    /// A folder within one given path and above another may hold only
    /// the way down, left out of an older snapshot as nothing: it is
    /// pruned only once its tree shows it was listed.
    #[test]
    fn a_folder_between_given_paths_is_pruned_unless_it_holds_only_the_way_down() {
        let given = ["/src".to_string(), "/src/a/cache/keep".to_string()];
        for (abs, left_out, prune) in [
            ("", 0, Prune::Above),
            ("/src", 0, Prune::UnlessWayDown),
            ("/src/a/cache", 0, Prune::UnlessWayDown),
            (
                "/src/a/cache",
                crate::tree::LEFT_OUT_UNKNOWN,
                Prune::NotHere,
            ),
            ("/src/a/cache/keep", 0, Prune::All),
            ("/src/b", 0, Prune::All),
            ("/src/b", 2, Prune::NotHere),
        ] {
            assert_eq!(Prune::of(abs.as_bytes(), left_out, &given), prune, "{abs}");
        }
    }

    /// A folder's path is compared with the given paths in their text,
    /// escaped where it is not UTF-8, as the backup kept them.
    #[test]
    fn a_path_is_compared_as_the_given_paths_text() {
        let given = ["/tmp/\\xff\\\\x/d".to_string()];
        assert!(above_given(b"/tmp/\xff\\x", &given));
        assert!(!above_given(b"/tmp/\\xff\\x", &given));
        assert!(on_way_to_given(b"/tmp/\xff\\x", &given));
    }
}
