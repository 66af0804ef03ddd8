//! The walker, workers and finisher of the backup pipeline.

use crate::escape::Show;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::listing::Listing;
use super::{Counters, Skeleton};
use crate::chunker::ChunkError;
use crate::error::{Error, Result};
use crate::filter::PathFilter;
use crate::fsmeta::{node_from_stat, NameCache, Stat};
use crate::id::BlobId;
use crate::names::{cut_path, cut_to};
use crate::pack::BlobKind;
use crate::repo::DirNodes;
use crate::repo::Repository;
use crate::tree::{Fill, Node, NodeKind, Parts, TreeEncoder, Xattr, LEFT_OUT_UNKNOWN};
use crate::writer::{BlobWriter, ParentChunks, SealQueue};

/// The stack of a thread that walks a folder and all beneath it, a
/// frame a level (about 4 KiB): a backup of a tree as deep as a walk
/// goes ([`MAX_DEPTH`]) must not overflow it, on any one thread. Only
/// what is used is backed by memory.
const WALK_STACK: usize = 256 << 20;

pub(super) struct WalkSetup<'a> {
    pub repo: &'a Repository,
    pub writer: &'a BlobWriter<'a>,
    /// Where workers hand chunks for sealing.
    pub queue: &'a SealQueue<'a>,
    pub counters: &'a Counters,
    pub exclude: &'a PathFilter,
    pub one_file_system: bool,
    pub workers: usize,
    /// The paths to back up.
    pub skeleton: &'a Skeleton,
    /// The parent snapshot's root tree (found readable).
    pub parent: Option<BlobId>,
    /// A parent node whose ctime is at or after this is not trusted to
    /// be unchanged (see [`unchanged_chunks`]).
    pub racy_from: i64,
    /// A file of several names whose ctime is before this (this backup's
    /// start, less the racy window) is read under one of its names only
    /// (see [`Links`]).
    pub links_from: i64,
    /// A small file the walk saw changed at or after this (a minute
    /// before this backup began) is checked for a change while it was
    /// read, as every large file is (see [`changed_while_read`]).
    pub recent_from: i64,
    /// Whether an unchanged entry may keep the parent's extended
    /// attributes unread: only when the parent's backup ran as this one's
    /// user, who sees the same names (a user other than root lists no
    /// `trusted.` attributes, and a root backup whose parent was such a
    /// user's lost them, exit 0, until December 2026).
    pub parent_xattrs: bool,
    pub report: &'a (dyn Fn(String) + Sync),
    /// Reports a file that changed while it was read (see
    /// [`changed_while_read`]): it is in the snapshot as read.
    pub changed: &'a (dyn Fn(String) + Sync),
    /// Folders never stored: the repository itself, its cache.
    pub own: &'a crate::repo::own::Own,
    /// Reports damage in the repository the walk reads around (a parent
    /// tree that cannot be read): nothing is left out of the snapshot.
    pub repo_warn: &'a (dyn Fn(String) + Sync),
}

/// A file's chunks, byte count and extended attributes (boxed, so that a
/// file without any, most, costs a word), or why it was left out: `None`
/// once the backup is failing, whose own error says why (one per file
/// would bury it).
type FileOutcome = std::result::Result<FileRead, Option<String>>;

/// What reading a file found: its chunks, byte count and extended
/// attributes.
type FileRead = (Vec<BlobId>, u64, Xattrs);

/// A file's extended attributes as read through it, `None` for none
/// and none that could not be read.
type Xattrs = Option<Box<ReadXattrs>>;

/// What reading a file's extended attributes found.
struct ReadXattrs {
    /// Those read, sorted by name.
    list: Vec<Xattr>,
    /// Whether some could not be read (see [`crate::tree::CTIME_UNREAD`]).
    unread: bool,
}

/// The outcomes of one directory's files, each put in its place by the
/// worker that read the file and taken by the finisher: a few dozen bytes
/// a file, where a channel each cost several hundred, since a directory's
/// entries are all held until its tree is written.
struct DirOutcomes {
    state: Mutex<Outcomes>,
    put: Condvar,
}

struct Outcomes {
    slots: Vec<Option<FileOutcome>>,
    /// Outcomes put so far.
    arrived: usize,
    /// How many the finisher waits for, if it waits (a worker wakes it
    /// only when the last arrives: one wake a directory, where waking
    /// the finisher for each file cost a system call or two a file).
    wanted: Option<usize>,
}

impl DirOutcomes {
    fn new(entries: usize) -> Arc<DirOutcomes> {
        Arc::new(DirOutcomes {
            state: Mutex::new(Outcomes {
                slots: (0..entries).map(|_| None).collect(),
                arrived: 0,
                wanted: None,
            }),
            put: Condvar::new(),
        })
    }

    fn put(&self, at: usize, outcome: FileOutcome) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let Some(slot) = state.slots.get_mut(at) {
            *slot = Some(outcome);
            state.arrived += 1;
        }
        if state.wanted == Some(state.arrived) {
            self.put.notify_one();
        }
    }

    /// Waits until `files` outcomes (every file of the directory) have
    /// arrived, and takes them by place.
    fn take_all(&self, files: usize) -> Option<Vec<Option<FileOutcome>>> {
        let mut state = self.state.lock().ok()?;
        while state.arrived < files {
            state.wanted = Some(files);
            state = self.put.wait(state).ok()?;
        }
        Some(std::mem::take(&mut state.slots))
    }
}

/// A file for a worker to read; its outcome goes to `dir`'s place `at`.
/// Dropped unanswered (a worker that stopped), it answers that.
struct FileJob {
    path: PathBuf,
    /// Its size when the walk saw it.
    size: u64,
    /// Its modification and change times when the walk saw it (as its
    /// node records them).
    mtime_ns: i64,
    ctime_ns: i64,
    /// The directory holding it, to open it by name (see [`DirHandle`]).
    handle: Arc<DirHandle>,
    dir: Arc<DirOutcomes>,
    at: usize,
    answered: bool,
    /// Its device and inode, for a file of several names whose content
    /// another name may have read already (see [`Links`]).
    link: Option<(u64, u64)>,
    /// How many names it has (its link count).
    names: u64,
}

impl FileJob {
    fn answer(mut self, outcome: FileOutcome) {
        self.dir.put(self.at, outcome);
        self.answered = true;
    }
}

impl Drop for FileJob {
    fn drop(&mut self) {
        if !self.answered {
            let why = format!("{}: worker stopped", self.path.shown());
            self.dir.put(self.at, Err(Some(why)));
        }
    }
}

/// A walked directory's descriptor (`O_PATH`), through which the walk
/// stats its entries and workers open its files, by name alone: opening
/// each by its full path walked every component again, and path lookups
/// were a tenth of the CPU of a backup of 200,000 small files. A file is
/// opened with `O_NOFOLLOW`: the walk saw a regular file, and should a
/// symlink have taken its place since, the backup reports it rather than
/// read whatever it points to. Likewise a FIFO or a device put in its
/// place is refused (see [`open_regular`]).
///
/// A subdirectory is opened relative to its parent's descriptor, and its
/// listing read through its own (see [`Listing::read`]), never by path:
/// a directory that someone swapped for a symlink after the walk stat-ed
/// it (`x -> /`) cannot be opened as a directory without following it,
/// and is reported and stored empty rather than followed.
struct DirHandle(std::os::fd::OwnedFd);

impl DirHandle {
    /// The directory at `dir` (the walk's root), if it is one and not a
    /// symlink.
    fn new(dir: &Path) -> std::io::Result<Arc<DirHandle>> {
        open_dir(libc::AT_FDCWD, dir.as_os_str())
    }

    /// Its subdirectory `name`, if it still is one (not a symlink).
    fn open_dir(&self, name: &std::ffi::OsStr) -> std::io::Result<Arc<DirHandle>> {
        use std::os::fd::AsRawFd;
        open_dir(self.0.as_raw_fd(), name)
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    /// Opens the regular file named as `path`'s last component, for
    /// reading (see [`open_regular`]).
    fn open_file(&self, path: &Path) -> std::io::Result<File> {
        self.open_unchecked(path).and_then(|file| {
            check_regular(&file)?;
            Ok(file)
        })
    }

    /// Opens `path`'s last component as [`Self::open_file`] does, without
    /// checking what it opened: for a reader that checks once the reads
    /// stray from what the walk saw ([`ToSeenEnd`]).
    fn open_unchecked(&self, path: &Path) -> std::io::Result<File> {
        use std::os::fd::AsRawFd;
        let name = path.file_name().unwrap_or(path.as_os_str());
        open_regular(self.0.as_raw_fd(), name)
    }
}

/// Opens the directory `name` relative to the directory descriptor `dir`
/// (or `AT_FDCWD`) as a walk's handle (`O_PATH`), without following a
/// symlink in its place.
fn open_dir(dir: std::os::fd::RawFd, name: &std::ffi::OsStr) -> std::io::Result<Arc<DirHandle>> {
    let name = std::ffi::CString::new(name.as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated and outlives the call; the caller
    // keeps `dir` open for its duration.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    Ok(Arc::new(DirHandle(unsafe {
        std::os::fd::FromRawFd::from_raw_fd(fd)
    })))
}

/// Opens the file `name` relative to the directory descriptor `dir` (or
/// `AT_FDCWD`), for reading. The walk saw a regular file, but anything may
/// have taken its place since: a symlink is not followed (`O_NOFOLLOW`),
/// and the open does not wait (`O_NONBLOCK`), since opening a FIFO
/// without a writer waits for one, forever in a nightly backup. What was
/// opened is checked by the caller ([`check_regular`]): reading a device
/// such as `/dev/zero` would never end. `O_NONBLOCK` stays set: reads of
/// a regular file do not heed it, but a FUSE filesystem's may; the reads
/// clear it where one answers `EAGAIN` ([`Blocking`]).
fn open_regular(dir: std::os::fd::RawFd, name: &std::ffi::OsStr) -> std::io::Result<File> {
    let name = std::ffi::CString::new(name.as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated and outlives the call; the
    // caller keeps `dir` open for its duration.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return open_leased(dir, &name).map_err(|_| e);
        }
        return Err(e);
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Opens the file `name` in `dir` that another process holds a lease on
/// (an NFS server's write delegation, a Samba oplock), which an open with
/// `O_NONBLOCK` refuses with `EWOULDBLOCK` (and every night the file
/// would be left out): through an `O_PATH` handle checked to be a
/// regular file, reopened through `/proc/self/fd` without `O_NONBLOCK`.
/// That open breaks the lease and waits for its holder to let go (at most
/// `/proc/sys/fs/lease-break-time`, 45 s by default), as any reader's
/// does; and the inode it opens is the one checked, which nothing can
/// swap for a FIFO meanwhile.
fn open_leased(dir: std::os::fd::RawFd, name: &std::ffi::CStr) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as in `open_regular`.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    let handle: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: `st` is written by the call before it is read.
    let regular = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
    };
    if !regular {
        return Err(std::io::Error::other("not a regular file"));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{fd}"))?;
    drop(handle);
    Ok(file)
}

/// Refuses `file` unless it is a regular file: a FIFO or a device may have
/// taken the place of the file the walk saw.
fn check_regular(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `st` is written by the call before it is read, and the
    // descriptor is open for as long as `file` lives.
    let mode = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(file.as_raw_fd(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st.st_mode & libc::S_IFMT
    };
    let what = match mode {
        libc::S_IFREG => return Ok(()),
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        _ => "not a regular file",
    };
    Err(std::io::Error::other(format!(
        "{what} took the place of the file the walk saw"
    )))
}

/// Files to read, handed to the workers together: a channel operation per
/// small file cost more than reading it (with the workers busy, the walker
/// spun and yielded on the full channel: 287,000 `sched_yield` calls in a
/// backup of 200,000 small files, a tenth of its CPU).
#[derive(Default)]
struct JobBatch {
    jobs: Vec<FileJob>,
    bytes: u64,
}

/// A batch goes to the workers once it holds this many files...
const BATCH_FILES: usize = 64;
/// ... or this many bytes of files and their paths (a larger file goes
/// alone).
const BATCH_BYTES: u64 = 1 << 20;

/// A folder's files waiting for their batch are sent before the walk
/// goes down into a subfolder whose path is longer than this: each
/// folder on the way down would otherwise hold a batch of paths as long
/// as its own, which in a tree thousands of folders deep add up to
/// gigabytes. Paths of ordinary trees are shorter, and their batches
/// are not cut.
const HELD_PATH: usize = 512;

impl JobBatch {
    /// Adds `job`, a file of `size` bytes; returns the batch once full.
    fn add(&mut self, job: FileJob, size: u64) -> Option<Vec<FileJob>> {
        // Paths count too: those of a tree thousands of folders deep are
        // megabytes each.
        let path = job.path.as_os_str().len() as u64;
        self.jobs.push(job);
        self.bytes = self.bytes.saturating_add(size).saturating_add(path);
        (self.jobs.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES)
            .then(|| self.take())
            .flatten()
    }

    /// What the batch holds, if anything.
    fn take(&mut self) -> Option<Vec<FileJob>> {
        self.bytes = 0;
        (!self.jobs.is_empty()).then(|| std::mem::take(&mut self.jobs))
    }
}

/// A directory's entry: its name, and the paths given to back up at or
/// below it, if any.
type Entry<'s> = (std::ffi::OsString, Option<&'s Skeleton>);

/// What the walk of a folder takes of it.
#[derive(Clone, Copy)]
struct Scope<'s> {
    /// Everything it holds but what is left out (excludes, and with
    /// `--one-file-system` other filesystems): the folder is a given path
    /// or lies in one. Otherwise (a folder above the given paths, or one
    /// within a given path that is excluded or on another filesystem)
    /// only the way to the given paths below it, and its node says that
    /// how much it held is not known ([`LEFT_OUT_UNKNOWN`]).
    whole: bool,
    /// The given paths at or below it.
    below: Option<&'s Skeleton>,
}

/// The names of a folder's listing with the given paths in it merged in,
/// in byte order, each with its node of the given paths: a given path
/// that the listing lacks (gone since it was given) is still stat-ed, to
/// be reported, never silently left out.
fn with_given<'s>(
    mut names: std::iter::Peekable<impl Iterator<Item = std::ffi::OsString>>,
    below: &'s Skeleton,
) -> impl Iterator<Item = Entry<'s>> {
    let mut given = below.children.iter().peekable();
    std::iter::from_fn(move || {
        let order = match (names.peek(), given.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(name), Some((g, _))) => name.as_bytes().cmp(g.as_bytes()),
        };
        match order {
            std::cmp::Ordering::Less => names.next().map(|n| (n, None)),
            std::cmp::Ordering::Greater => given.next().map(|(n, sub)| (n.clone(), Some(sub))),
            std::cmp::Ordering::Equal => {
                let sub = given.next().map(|(_, sub)| sub);
                names.next().map(|n| (n, sub))
            }
        }
    })
}

/// Entries stat-ed ahead in a block...
const STAT_BLOCK: usize = 1024;

/// `lstat` of the entry `name` of the open folder `dir`: an `fstatat`
/// relative to it.
fn stat(dir: &DirHandle, name: &std::ffi::OsStr) -> std::io::Result<Stat> {
    Stat::at(dir.fd(), name)
}

/// A directory's entries in order, each with its `lstat` done ahead: a
/// block of [`STAT_BLOCK`] at a time, split over `threads`, so a large
/// directory is not stat-ed on one core (subdirectories are walked on
/// threads of their own, but 200,000 files in one directory were one
/// thread's `statx` calls). Excluded entries are not stat-ed (the walk
/// skips them); with one thread, nothing is done ahead.
struct StatAhead<'a, 's> {
    names: Box<dyn Iterator<Item = Entry<'s>> + 'a>,
    ready: std::vec::IntoIter<(Entry<'s>, Option<std::io::Result<Stat>>)>,
    handle: &'a DirHandle,
    exclude: Option<&'a PathFilter>,
    threads: usize,
}

impl<'a, 's> StatAhead<'a, 's> {
    /// The `lstat`s of `block`'s entries of folder `dir` that are not
    /// excluded.
    fn stat_block(&self, dir: &Path, block: &[Entry<'s>]) -> Vec<Option<std::io::Result<Stat>>> {
        let (handle, exclude) = (self.handle, self.exclude);
        let stat_part = |part: &[Entry<'s>]| -> Vec<_> {
            part.iter()
                .map(|(name, sub)| {
                    // A path given below an excluded entry keeps it. (A
                    // pattern for directories only is checked once the
                    // entry is known to be one.)
                    let excluded = sub.is_none()
                        && exclude.is_some_and(|x| {
                            x.matches_bytes(
                                dir.join(name).as_os_str().as_bytes(),
                                name.as_bytes(),
                                false,
                            )
                        });
                    (!excluded).then(|| stat(handle, name))
                })
                .collect()
        };
        let per = block.len().div_ceil(self.threads.max(1)).max(1);
        let mut parts = block.chunks(per);
        let first = parts.next().unwrap_or_default();
        std::thread::scope(|s| {
            let others: Vec<_> = parts
                .map(|part| (part.len(), s.spawn(move || stat_part(part))))
                .collect();
            let mut out = stat_part(first);
            for (len, thread) in others {
                // A helper that panicked leaves its part to be stat-ed
                // in order, as without helpers.
                out.extend(
                    thread
                        .join()
                        .unwrap_or_else(|_| (0..len).map(|_| None).collect()),
                );
            }
            out
        })
    }

    /// The next entry of folder `dir`, with its `lstat` if it was done
    /// ahead.
    fn next_in(&mut self, dir: &Path) -> Option<(Entry<'s>, Option<std::io::Result<Stat>>)> {
        if let Some(item) = self.ready.next() {
            return Some(item);
        }
        if self.threads <= 1 {
            return self.names.next().map(|e| (e, None));
        }
        let block: Vec<Entry<'s>> = self.names.by_ref().take(STAT_BLOCK).collect();
        if block.is_empty() {
            return None;
        }
        let stats = self.stat_block(dir, &block);
        self.ready = block.into_iter().zip(stats).collect::<Vec<_>>().into_iter();
        self.ready.next()
    }
}

/// What one of a directory's nodes waits for before its tree is written;
/// `at` is where the node starts in the directory's [`TreeEncoder`].
enum Wait {
    /// The file is being read; its outcome arrives at place `slot` of the
    /// directory's [`DirOutcomes`]. Counted as new (`new`) or changed
    /// when it was sent, and taken off that count if it is left out.
    /// `was` is a digest of the chunks of the parent's file of that name
    /// ([`chunk_list_digest`]): read again to the same chunks, it counts
    /// as unmodified after all.
    File {
        slot: usize,
        at: usize,
        new: bool,
        was: Option<[u8; 32]>,
    },
    /// The directory is finished under sequence number `seq`.
    Dir { at: usize, seq: u64 },
}

/// A walked directory: its entries encoded in name order (a large
/// directory is held as its tree's bytes, not as nodes), filled in by the
/// finisher once what they wait for is done.
struct DirJob {
    seq: u64,
    tree: TreeEncoder,
    /// The id of the parent snapshot's tree of this directory, which the
    /// walk read from the repository: a tree that encodes the same is
    /// stored, and is not looked up in the index (see [`finish_dirs`]).
    stored: Option<BlobId>,
    waits: Vec<Wait>,
    /// Where its files' outcomes arrive, if it has files being read.
    outcomes: Option<Arc<DirOutcomes>>,
    /// For a directory stored in parts: the sequence numbers of its parts,
    /// each a job of its own sent before this one (whose `tree` is then
    /// empty); its tree blob lists their trees.
    parts: Vec<u64>,
    /// Entries the walk left out of it, besides files the workers could
    /// not read (see [`crate::tree::Node::left_out`]).
    left_out: u64,
}

/// Where a large directory's tree is cut into parts (repository format 4,
/// see [`crate::tree::Parts`]): after an entry whose name hashes to a
/// multiple of `every`, once the part holds a quarter of that, and at four
/// times that at most. Names, not places, decide, so an entry added or
/// removed moves only the cut next to it, and the other parts are stored
/// already.
#[derive(Clone, Copy)]
struct PartRule {
    every: u64,
    seed: u64,
    /// The repository's smallest chunk: a file of `size` bytes has at
    /// most `size / min` chunks (rounded up), 32 bytes of ids each.
    chunk_min: u64,
}

/// Entries a directory's part holds on average, about a quarter more.
const PART_EVERY: u64 = 4096;

/// The most bytes a part may come to, counting each file's chunk ids at
/// their most: a part of a few thousand very large files (disk images)
/// is cut early, far below the 256 MiB a blob may hold
/// ([`crate::pack::MAX_BLOB`]), rather than stored as a tree no reader
/// takes.
const PART_BYTES: u64 = 64 << 20;

impl PartRule {
    /// The rule of `repo`'s backups, if it stores directories in parts.
    fn of(repo: &Repository) -> Option<PartRule> {
        let config = repo.config();
        config.parted_trees().then(|| PartRule {
            every: crate::fault::tree_part().map_or(PART_EVERY, |n| n as u64),
            seed: config.chunker.seed,
            chunk_min: u64::from(config.chunker.min.max(1)),
        })
    }

    /// The most entries a part holds.
    fn max(&self) -> usize {
        (4 * self.every) as usize
    }

    /// The most bytes of chunk ids a file of `size` bytes adds to its
    /// node once read.
    fn ids_bound(&self, size: u64) -> u64 {
        size.div_ceil(self.chunk_min).saturating_mul(32)
    }

    /// Whether a part of `nodes` entries, the last named `name`, that may
    /// come to `bytes` once its files' chunk ids are in, ends.
    fn cut(&self, nodes: u64, name: &[u8], bytes: u64) -> bool {
        if bytes >= PART_BYTES {
            return true;
        }
        if nodes < (self.every / 4).max(1) {
            return false;
        }
        // FNV-1a from the repository's secret seed, then mixed.
        let mut h = self.seed ^ 0xcbf2_9ce4_8422_2325;
        for &b in name {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h % self.every == 0 || nodes >= 4 * self.every
    }
}

/// Runs the pipeline; returns the root tree id.
pub(super) fn run(setup: WalkSetup<'_>) -> Result<BlobId> {
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    let set_fatal = |e: Error| {
        if let Ok(mut f) = fatal.lock() {
            f.get_or_insert(e);
        }
    };
    let (job_tx, job_rx) = bounded::<Vec<FileJob>>(setup.workers * 2);
    let links = Links::default();
    let (dir_tx, dir_rx) = bounded::<DirJob>(256);
    let root = std::thread::scope(|s| {
        for _ in 0..setup.workers {
            let job_rx = job_rx.clone();
            let (setup, fatal, set_fatal, links) = (&setup, &fatal, &set_fatal, &links);
            s.spawn(move || {
                for job in job_rx.into_iter().flatten() {
                    let aborted = fatal.lock().map(|f| f.is_some()).unwrap_or(true);
                    let outcome = if aborted {
                        Err(None)
                    } else {
                        let seen = Seen {
                            size: job.size,
                            mtime_ns: job.mtime_ns,
                            ctime_ns: job.ctime_ns,
                        };
                        let taken = job.link.map(|key| links.take(key, seen, job.names));
                        let (earlier, claim) = match taken {
                            Some(Ok(read)) => (Some(read), None),
                            Some(Err(claim)) => (None, claim),
                            None => (None, None),
                        };
                        match earlier.map_or_else(
                            || read_file(setup, &job.path, &job.handle, seen, job.link),
                            |r| Ok((r, false)),
                        ) {
                            Ok((r, as_seen)) => {
                                if let (Some(claim), true) = (claim, as_seen) {
                                    claim.done(seen, &r, job.names);
                                }
                                Ok(r)
                            }
                            Err(FileError::Skip(why)) => Err(Some(why)),
                            Err(FileError::Fatal(e)) => {
                                set_fatal(e);
                                Err(None)
                            }
                        }
                    };
                    job.answer(outcome);
                }
            });
        }
        drop(job_rx);
        let finisher = s.spawn(|| finish_dirs(&setup, dir_rx));
        let (ahead, ahead_rx) = bounded(64);
        s.spawn(move || read_ahead(ahead_rx));
        let shared = WalkShared {
            setup: &setup,
            jobs: job_tx,
            ahead,
            dirs: dir_tx,
            next_seq: AtomicU64::new(0),
            fatal: &fatal,
            spare: AtomicIsize::new(setup.workers as isize - 1),
            threads: AtomicUsize::new(0),
            threads_peak: AtomicUsize::new(0),
            lost: Mutex::new((0, None)),
            wrong_size: Mutex::new((0, None)),
            max_depth: walk_depth(),
        };
        let mut walker = Walker {
            shared: &shared,
            names: NameCache::default(),
        };
        let root_seq = walker.walk_root();
        crate::fault::walk_threads(shared.threads_peak.load(AtomicOrdering::Acquire));
        // Closes the channels: workers and finisher end once drained.
        drop(walker);
        shared.report_lost();
        drop(shared);
        let trees = finisher
            .join()
            .map_err(|_| Error::Invalid("backup finisher thread panicked".into()));
        (root_seq, trees)
    });
    if let Some(e) = fatal.into_inner().ok().flatten() {
        return Err(e);
    }
    let (root_seq, trees) = root;
    let mut trees = trees??;
    let root_seq = root_seq?;
    // What was left out of `/` itself has no node to say so.
    trees
        .remove(&root_seq)
        .map(|(id, _)| id)
        .ok_or_else(|| Error::Invalid("backup produced no root tree".into()))
}

/// Files up to this size are read ahead of the workers.
const READ_AHEAD_UP_TO: u64 = BATCH_BYTES;

/// The small files of `batch` (of [`READ_AHEAD_UP_TO`] bytes at most),
/// to read ahead (see [`read_ahead`]), unless the first of them is in
/// the page cache already, as the files a nightly backup reads mostly
/// are (written that day): then the batch costs one probe, not a request
/// per file.
fn cold_small_files(batch: &[FileJob]) -> Option<Vec<(Arc<DirHandle>, PathBuf)>> {
    let small = |j: &&FileJob| j.size > 0 && j.size <= READ_AHEAD_UP_TO;
    let first = batch.iter().find(small)?;
    if first
        .handle
        .open_file(&first.path)
        .is_ok_and(|f| cached(&f))
    {
        return None;
    }
    Some(
        batch
            .iter()
            .filter(small)
            .map(|j| (Arc::clone(&j.handle), j.path.clone()))
            .collect(),
    )
}

/// Whether the first page of `file` is in the page cache, asked with
/// `mincore` on a map of it, which reads nothing. Where that cannot be
/// told (a filesystem that cannot map the file) it counts as cached, so
/// reading ahead is left to the kernel there. Until December 2026 this
/// was a one-byte read that must not wait for the disk (`RWF_NOWAIT`),
/// which starts a read of what it misses: on a fast disk that read
/// finished before the probe returned, and a cold file passed for
/// cached. tmpfs's files are all in memory, and its pages count as
/// cached: taking every batch there for cold cost a backup of 200,000
/// small files on tmpfs a quarter of its time.
fn cached(file: &File) -> bool {
    crate::mmap::cached_pages(file, 0, 1).is_none_or(|pages| pages.first() == Some(&true))
}

/// Asks the kernel to read the small files of cold batches (see
/// [`cold_small_files`]) into the page cache ahead of the workers: a
/// cold small file otherwise costs its worker a wait for the disk, one
/// file at a time, where these requests keep many in flight
/// (`posix_fadvise(WILLNEED)` only starts the reads). Files are opened as
/// the workers open them, by name in their directory without following
/// a symlink.
fn read_ahead(batches: Receiver<Vec<(Arc<DirHandle>, PathBuf)>>) {
    use std::os::fd::AsRawFd;
    for (dir, path) in batches.into_iter().flatten() {
        if let Ok(file) = dir.open_file(&path) {
            // SAFETY: a plain system call on a descriptor held here.
            unsafe {
                libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED);
            }
        }
    }
}

enum FileError {
    Skip(String),
    Fatal(Error),
}

impl From<Error> for FileError {
    fn from(e: Error) -> FileError {
        FileError::Fatal(e)
    }
}

thread_local! {
    /// Each worker's read window, reused for every file it reads.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A file read up to the size the walk saw, where the end is taken as
/// reached once a read falls short exactly there: the read that would
/// return nothing, a system call per small file, is not made. A read
/// that falls short before that size, or a file grown past it, reads on
/// to the end as any file, once `check` has said what was opened is
/// still a regular file: a FIFO or a device put in its place would end
/// early, fail to read, or (`/dev/zero`) never end. A file read as the
/// walk saw it is not checked, which spares a system call per file.
struct ToSeenEnd<R, C> {
    file: R,
    seen: u64,
    at: u64,
    ended: bool,
    check: Option<C>,
    /// A sparse file's holes, told to the chunker rather than read.
    holes: Option<Holes>,
}

impl<R: std::io::Read, C: FnOnce() -> std::io::Result<()>> ToSeenEnd<R, C> {
    /// Checks what was opened, the first time the reads stray.
    fn strayed(&mut self) -> std::io::Result<()> {
        self.check.take().map_or(Ok(()), |check| check())
    }
}

impl<R: std::io::Read, C: FnOnce() -> std::io::Result<()>> std::io::Read for ToSeenEnd<R, C> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        let mut buf = buf;
        if let Some(holes) = &mut self.holes {
            holes.settle_offset()?;
            // Up to the next hole, which is told rather than read.
            let data = holes.data_end.saturating_sub(self.at);
            if data > 0 && data < buf.len() as u64 {
                buf = &mut buf[..data as usize];
            }
        }
        let n = match self.file.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.strayed()?;
                return Err(e);
            }
        };
        if (n == 0 && self.at < self.seen) || self.at + n as u64 > self.seen {
            self.strayed()?;
        }
        self.at += n as u64;
        self.ended = n > 0 && n < buf.len() && self.at == self.seen;
        Ok(n)
    }
}

impl<R: std::io::Read, C: FnOnce() -> std::io::Result<()>> crate::chunker::SparseRead
    for ToSeenEnd<R, C>
{
    /// Holes up to the size the walk saw; past it, the file is read.
    fn hole_ahead(&mut self, most: usize) -> std::io::Result<usize> {
        let (Some(holes), false) = (&mut self.holes, self.ended) else {
            return Ok(0);
        };
        let before_end = usize::try_from(self.seen.saturating_sub(self.at)).unwrap_or(usize::MAX);
        let n = holes.ahead(self.at, most.min(before_end))?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Where a sparse file's holes lie, asked of the filesystem with
/// `lseek(SEEK_DATA)` and `lseek(SEEK_HOLE)` as the reads reach them: a
/// hole is told to the chunker as zeros, which neither the kernel nor
/// FastCDC nor BLAKE3 then goes through byte by byte (a 5 GiB file of 3
/// MB of data took 10 s and 10 CPU-seconds, by hand on 6 December, most
/// of it the kernel handing out pages of zeros).
struct Holes {
    fd: std::os::fd::RawFd,
    /// The file's size when opened.
    size: u64,
    /// From the read position up to here, a hole; then data up to
    /// `data_end`, past which the filesystem is asked again.
    hole_end: u64,
    data_end: u64,
    /// Where the file's offset must be before the next read: passing a
    /// hole, or asking where one lies, leaves it elsewhere.
    seek_to: Option<u64>,
    /// Bytes told as holes.
    told: u64,
}

/// A hole smaller than this is read as data: asking where it ends costs
/// more system calls than reading it.
const HOLE_MIN: u64 = 64 << 10;

impl Holes {
    /// Holes of `file`, as the walk saw it (`seen`), if it is worth asking:
    /// a file of at least 1 MiB with fewer blocks than its size (by
    /// [`HOLE_MIN`] at least), unchanged since `settled_before` (a minute
    /// before the backup began). A file being written is read whole: a
    /// filesystem may tell holes wrongly while data is not yet written
    /// back (OpenZFS 2.2.0–2.2.1 did, and `cp` copied zeros for it), and
    /// a file changed since the walk is read again anyway.
    fn of(file: &File, seen: Seen, settled_before: i64) -> Option<Holes> {
        use std::os::fd::AsRawFd;
        if seen.size < 1 << 20 || seen.ctime_ns >= settled_before {
            return None;
        }
        let md = file.metadata().ok()?;
        let allocated = md.blocks().saturating_mul(512);
        // The file opened, too: another put in its place since the walk
        // (a `mv` over it) may have been written a moment ago.
        let ctime_ns = crate::fsmeta::time_ns(md.ctime(), md.ctime_nsec());
        if allocated.saturating_add(HOLE_MIN) > md.size() || ctime_ns >= settled_before {
            return None;
        }
        Some(Holes {
            fd: file.as_raw_fd(),
            size: md.size(),
            hole_end: 0,
            data_end: 0,
            seek_to: None,
            told: 0,
        })
    }

    /// How many of the bytes from `at`, at most `most`, lie in a hole.
    fn ahead(&mut self, at: u64, most: usize) -> std::io::Result<usize> {
        if most == 0 {
            return Ok(0);
        }
        if at >= self.data_end {
            self.look(at)?;
        }
        if at >= self.hole_end {
            return Ok(0);
        }
        let n = (self.hole_end - at).min(most as u64);
        self.seek_to = Some(at + n);
        self.told += n;
        Ok(n as usize)
    }

    /// Asks where data lies from `at` on, and up to where.
    fn look(&mut self, at: u64) -> std::io::Result<()> {
        let seek = |off: u64, whence| {
            // SAFETY: lseek on a descriptor the file being read keeps open.
            let r = unsafe { libc::lseek(self.fd, off as libc::off_t, whence) };
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(r as u64)
            }
        };
        self.seek_to = Some(at);
        let data = match seek(at, libc::SEEK_DATA) {
            Ok(data) => data,
            // No data from `at` to the end: a hole (the caller reads on
            // past the size the walk saw), unless a short one.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                self.hole_end = match self.size.saturating_sub(at) < HOLE_MIN {
                    true => at,
                    false => u64::MAX,
                };
                self.data_end = u64::MAX;
                return Ok(());
            }
            // A filesystem that cannot tell: read it all.
            Err(_) => {
                (self.hole_end, self.data_end) = (at, u64::MAX);
                return Ok(());
            }
        };
        let end = match seek(data, libc::SEEK_HOLE) {
            Ok(end) => end.max(data),
            Err(_) => u64::MAX,
        };
        self.hole_end = if data - at < HOLE_MIN { at } else { data };
        self.data_end = end.max(self.hole_end);
        Ok(())
    }

    /// Puts the file's offset where the next read must begin.
    fn settle_offset(&mut self) -> std::io::Result<()> {
        if let Some(at) = self.seek_to.take() {
            // SAFETY: as in `look`.
            if unsafe { libc::lseek(self.fd, at as libc::off_t, libc::SEEK_SET) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Reads of a file opened `O_NONBLOCK` ([`open_regular`]) that wait when
/// the file says "try again" (`EAGAIN`): a FUSE filesystem may answer a
/// read so, where a local one never does for a regular file. The flag is
/// cleared on the first such answer and the read made again, so the file
/// is not left out of the backup for a read that would have waited.
struct Blocking<'a>(&'a File);

impl std::io::Read for Blocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        match (&mut &*self.0).read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let fd = self.0.as_raw_fd();
                // SAFETY: fcntl on a descriptor `self.0` keeps open.
                let cleared = unsafe {
                    let flags = libc::fcntl(fd, libc::F_GETFL);
                    flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
                };
                if !cleared {
                    return Err(e);
                }
                (&mut &*self.0).read(buf)
            }
            r => r,
        }
    }
}

/// What the walk saw of a file when it stat-ed it.
#[derive(Clone, Copy, PartialEq)]
struct Seen {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

/// What one name of a file of several (hard links) read, for its other
/// names to take instead of reading the same bytes again: by device and
/// inode, the walk's view of it (`Seen`), its chunks and extended
/// attributes. A name is given what another read only when the walk saw
/// it the same, with a change time before this backup began (less the
/// racy window, as for a parent's files): any write since would have
/// moved the change time. A name that finds another being read waits for
/// that read (the names of a large file go to workers side by side). At
/// most [`LINKS_BYTES`] are kept: past that, names are read as any file
/// is.
#[derive(Default)]
struct Links {
    state: Mutex<LinksState>,
    read: Condvar,
}

#[derive(Default)]
struct LinksState {
    files: HashMap<(u64, u64), Link>,
    /// Bytes held: chunk ids, extended attributes, and about what an
    /// entry takes.
    bytes: usize,
}

enum Link {
    /// A worker is reading it under one of its names.
    Reading,
    Read(LinkRead),
}

struct LinkRead {
    seen: Seen,
    chunks: Vec<BlobId>,
    size: u64,
    xattrs: Option<(Vec<Xattr>, bool)>,
    /// Its names not met yet: once none is left, the entry goes.
    left: u64,
    /// What it counts for in [`LinksState::bytes`].
    bytes: usize,
}

/// The most bytes [`Links`] holds (about 520,000 small files whose other
/// names are still to come, or 2 TiB of large ones at 1 MiB a chunk). An
/// entry goes once all its file's names are met; past the bound, names
/// are read as any file is. A tree of `cp -al` copies (rsnapshot, Back In
/// Time) meets a file's other names only in the next copy, so it holds
/// every file of several names of one copy: at 16 MiB, the bound until
/// December 2026, one of 300,000 such files was read under every name
/// after the first 130,000 (the cliffs tester).
const LINKS_BYTES: usize = 64 << 20;

/// The read of a file of several names, claimed by one worker: what it
/// read is kept by [`Claim::done`]; dropped before, the claim lets the
/// next name be read by its own worker.
struct Claim<'l> {
    links: &'l Links,
    key: (u64, u64),
}

impl Links {
    /// What another name of the file `key` read, if the walk saw this
    /// name as it saw that one (`Ok`); else, when no name of it was read
    /// yet, the claim to read it (`Err(Some)`), or nothing to do with
    /// [`Links`] (`Err(None)`).
    fn take(
        &self,
        key: (u64, u64),
        seen: Seen,
        names: u64,
    ) -> std::result::Result<FileRead, Option<Claim<'_>>> {
        let Ok(mut state) = self.state.lock() else {
            return Err(None);
        };
        loop {
            match state.files.get(&key) {
                Some(Link::Reading) => match self.read.wait(state) {
                    Ok(s) => state = s,
                    Err(_) => return Err(None),
                },
                Some(Link::Read(r)) if r.seen == seen => {
                    let xattrs = r.xattrs.as_ref().map(|(list, unread)| {
                        Box::new(ReadXattrs {
                            list: list.clone(),
                            unread: *unread,
                        })
                    });
                    let read = (r.chunks.clone(), r.size, xattrs);
                    // Its last name met (a name met twice, through a bind
                    // mount, only lets it go early: the next is read).
                    let (left, bytes) = (r.left.saturating_sub(1), r.bytes);
                    if left == 0 {
                        state.files.remove(&key);
                        state.bytes -= bytes;
                    } else if let Some(Link::Read(r)) = state.files.get_mut(&key) {
                        r.left = left;
                    }
                    return Ok(read);
                }
                Some(Link::Read(_)) => return Err(None),
                None if state.bytes >= LINKS_BYTES || names < 2 => return Err(None),
                None => {
                    state.files.insert(key, Link::Reading);
                    return Err(Some(Claim { links: self, key }));
                }
            }
        }
    }
}

impl Claim<'_> {
    /// Keeps what this name read, found as the walk saw it (`seen`).
    fn done(self, seen: Seen, read: &FileRead, names: u64) {
        if let Ok(mut state) = self.links.state.lock() {
            // The entry itself counts too: a million empty files of
            // several names must not grow it without bound; so do the
            // extended attributes kept (up to 64 KiB a value).
            let xattr_bytes: usize = (read.2.iter())
                .flat_map(|x| &x.list)
                .map(|x| 48 + x.name.0.len() + x.value.0.len())
                .sum();
            let bytes = 112 + read.0.len() * std::mem::size_of::<BlobId>() + xattr_bytes;
            state.bytes += bytes;
            let xattrs = read.2.as_ref().map(|x| (x.list.clone(), x.unread));
            state.files.insert(
                self.key,
                Link::Read(LinkRead {
                    seen,
                    chunks: read.0.clone(),
                    size: read.1,
                    xattrs,
                    left: names.saturating_sub(1),
                    bytes,
                }),
            );
        }
        self.links.read.notify_all();
        std::mem::forget(self);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.links.state.lock() {
            state.files.remove(&self.key);
        }
        self.links.read.notify_all();
    }
}

/// Reads, chunks and stores one file, as the walk saw it (`seen`), and
/// reads its extended attributes through it (by path, each took a lookup
/// of the path on the walking thread). Also says whether the file was
/// still as seen once read (see [`changed_while_read`]).
fn read_file(
    setup: &WalkSetup<'_>,
    path: &Path,
    handle: &DirHandle,
    seen: Seen,
    link: Option<(u64, u64)>,
) -> std::result::Result<(FileRead, bool), FileError> {
    let skip = |op: &str, e: std::io::Error| {
        FileError::Skip(format!("{}: cannot {op}: {e}", path.shown()))
    };
    crate::fault::vanish(path);
    crate::fault::fifo(path);
    crate::fault::truncate_before_read(path);
    crate::fault::replace_before_read(path);
    let file = handle.open_unchecked(path).map_err(|e| skip("open", e))?;
    let mut chunks = Vec::new();
    let mut reader = ToSeenEnd {
        file: Blocking(&file),
        seen: seen.size,
        at: 0,
        ended: false,
        check: Some(|| check_regular(&file)),
        holes: Holes::of(&file, seen, setup.recent_from),
    };
    let size = READ_BUF.with(|buf| {
        setup.repo.config().chunker.for_each_chunk_sparse(
            &mut reader,
            &mut buf.borrow_mut(),
            |chunk, zeros| {
                chunks.push(match zeros {
                    true => setup.queue.add_zeros(BlobKind::Data, chunk)?,
                    false => setup.queue.add(BlobKind::Data, chunk)?,
                });
                Ok(())
            },
        )
    });
    let size = size.map_err(|e| match e {
        ChunkError::Read(e) => skip("read", e),
        ChunkError::Sink(e) => FileError::Fatal(e),
    })?;
    Counters::add(&setup.counters.bytes_read, size);
    if let Some(holes) = &reader.holes {
        Counters::add(&setup.counters.bytes_in_holes, holes.told);
    }
    crate::fault::write_during_read(path);
    let changed = changed_while_read(&file, seen, size, setup.recent_from, link);
    let as_seen = changed.is_none();
    if let Some(how) = changed {
        (setup.changed)(format!(
            "{}: changed while it was read ({how}): the snapshot holds the bytes as read, \
             which may mix old and new content; the next backup reads it again",
            path.shown()
        ));
    }
    // Held until the directory's tree is written: a small file's one
    // chunk id, not the four a first push makes room for.
    chunks.shrink_to_fit();
    let (list, failed) = crate::fsmeta::read_xattrs_of(&file);
    if let Some(why) = &failed {
        (setup.report)(xattrs_unread(path, why));
    }
    let xattrs = (!list.is_empty() || failed.is_some()).then(|| {
        Box::new(ReadXattrs {
            list,
            unread: failed.is_some(),
        })
    });
    Ok(((chunks, size, xattrs), as_seen))
}

/// The report of an entry at `path` stored without some of its extended
/// attributes, for `why`: until December 2026 they were left out without
/// a word. Its node's change time is stored as
/// [`crate::tree::CTIME_UNREAD`], so the next backup reads them again.
fn xattrs_unread(path: &Path, why: &str) -> String {
    format!("{}: {why}{}", path.shown(), super::STORED_WITHOUT_XATTRS)
}

/// Files of more than this many bytes are checked, once read, for a
/// change while they were read: a smaller one is read with one `read`, and
/// an `fstat` for each of many tiny files costs a backup of them about 6%.
const CHECK_CHANGED_OVER: u64 = 64 << 10;

/// How `file`, `size` bytes of which were read, differs from what the
/// walk saw when it stat-ed it (`seen`), if it changed since: a database
/// or log written to while the backup read it, whose bytes may then mix
/// what it held before and after. The change time counts too, since a
/// writer may put the modification time back (`rsync --inplace -t`,
/// `touch -r`); so does a `chmod` meanwhile, a false alarm that costs a
/// warning and the next backup a read. The node keeps the walk's times,
/// so the next backup reads the file again. Files of at most
/// [`CHECK_CHANGED_OVER`] bytes (seen and read) are checked only for
/// having another size than the walk saw, which costs no system call (a
/// small configuration file truncated between the walk's `stat` and its
/// read was stored empty, under the times it had when it was whole, with
/// exit 0, until December 2026), unless the walk saw it changed at or
/// after `recent_from` (a minute before the backup began): a file being
/// written is likely to be written again while it is read, and a write
/// during one `read` tears it at a page, as one rewritten in a loop was
/// stored torn, exit 0, in a third of the backups taken meanwhile (until
/// December 2026).
///
/// A file of several names (`link`, its device and inode as the walk saw
/// them) is always checked, and for being that inode too: what one name
/// read, its other names take (see [`Links`]), so a name replaced by
/// another file (a `mv` over it, as rsync and editors save) between the
/// walk's `stat` and the read must not hand that file's bytes to the
/// names the walk saw, which were never written (until December 2026 it
/// did, for small files unchanged for a minute, with exit 0).
fn changed_while_read(
    file: &File,
    seen: Seen,
    size: u64,
    recent_from: i64,
    link: Option<(u64, u64)>,
) -> Option<String> {
    if size != seen.size && (link.is_some() || seen.size.max(size) <= CHECK_CHANGED_OVER) {
        return Some(format!("{} bytes seen, {size} read", seen.size));
    }
    if link.is_none() && seen.size.max(size) <= CHECK_CHANGED_OVER && seen.ctime_ns < recent_from {
        return None;
    }
    let now = crate::fsmeta::Stat::of(&file.metadata().ok()?);
    if link.is_some_and(|key| key != (now.dev, now.ino)) {
        Some("replaced by another file since the backup saw it".into())
    } else if now.mtime_ns != seen.mtime_ns {
        Some("modified since the backup saw it".into())
    } else if now.size != size {
        Some(format!("{} bytes now, {size} read", now.size))
    } else if now.ctime_ns != seen.ctime_ns {
        Some("its change time moved since the backup saw it".into())
    } else {
        None
    }
}

/// The change time of the folder open as `handle`, which every name
/// added to it, removed from it or renamed in it moves, and which no
/// program can set back (its modification time, `touch -r` can).
fn folder_ctime(handle: &DirHandle) -> Option<i64> {
    crate::fsmeta::Stat::at(handle.fd(), std::ffi::OsStr::new("."))
        .ok()
        .map(|s| s.ctime_ns)
}

/// Inodes a folder's walk records to tell whether one was walked under
/// two names (see [`Walker::walk_dir`]); past this many (32 MiB of them)
/// a folder that changed while walked is said to have changed whatever
/// its renames were.
const WALKED_INODES: usize = 4 << 20;

/// Whether the folder open as `handle` (at `dir`), whose entries of one
/// name each were walked as `inodes` (on the folder's filesystem `dev`;
/// `None` past [`WALKED_INODES`]), had one walked twice: a name renamed
/// over another, or two exchanged, between their `stat`s, which shows
/// one inode under two names and the one it replaced under none. An
/// inode walked twice that the folder still holds under two names is no
/// rename: a folder bind-mounted beside itself shows its inode under
/// both (the folder is listed again to tell, only where one repeats).
fn walked_twice(handle: &DirHandle, dir: &Path, dev: u64, inodes: Option<Vec<u64>>) -> bool {
    let Some(mut inodes) = inodes else {
        return true;
    };
    inodes.sort_unstable();
    let mut twice: Vec<u64> = inodes
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    twice.dedup();
    if twice.is_empty() {
        return false;
    }
    let Ok(listing) = Listing::read(handle.fd(), dir, &|_| {}) else {
        return true;
    };
    let mut names_now = vec![0u32; twice.len()];
    for name in listing.sorted(&|_| {}) {
        let Ok(st) = crate::fsmeta::Stat::at(handle.fd(), &name) else {
            continue;
        };
        if st.dev == dev {
            if let Ok(at) = twice.binary_search(&st.ino) {
                names_now[at] += 1;
            }
        }
    }
    names_now.iter().any(|&n| n < 2)
}

/// What every walking thread shares.
struct WalkShared<'a> {
    setup: &'a WalkSetup<'a>,
    jobs: Sender<Vec<FileJob>>,
    /// The small files of batches found cold, for the reader ahead.
    ahead: Sender<Vec<(Arc<DirHandle>, PathBuf)>>,
    dirs: Sender<DirJob>,
    next_seq: AtomicU64,
    fatal: &'a Mutex<Option<Error>>,
    /// Walking threads that may still start: a walker that meets a
    /// subdirectory while this is positive walks it on a thread of its
    /// own. Starts at one fewer than the workers (the calling thread walks
    /// too); a walker waiting for its subdirectories' threads lends its
    /// place meanwhile, so it can go below zero until that wait ends.
    spare: AtomicIsize,
    /// Walking threads started and not ended, waiting ones included; at
    /// most [`walk_threads`]. Each waiting walker lending its place, a
    /// chain of folders each holding one subfolder had a thread a level,
    /// each with its stack: 1,635 threads and 600 MB for a tree 2,000
    /// folders deep, until December 2026.
    threads: AtomicUsize,
    /// The most of `threads` at once (for the tests).
    threads_peak: AtomicUsize,
    /// Unchanged files whose chunks the repository no longer holds (see
    /// [`WalkShared::parent_chunks_held`]): how many, and the first.
    lost: Mutex<(u64, Option<(PathBuf, BlobId)>)>,
    /// Unchanged files whose parent entry's chunks do not add up to its
    /// size: how many, and the first, with the two lengths.
    wrong_size: Mutex<WrongSize>,
    /// How deep a folder may lie (in components of its absolute path) and
    /// be walked (see [`walk_depth`]), with the open-file limit it comes
    /// from, for the report.
    max_depth: (usize, u64),
}

/// Folders deeper than this are not walked: every folder on the way down
/// holds a descriptor while its subfolders are walked, and a frame of the
/// walk. A tree some user made deep enough (a loop of `mkdir d; cd d`)
/// otherwise ran the backup out of descriptors: the repository's own
/// files could then not be opened, and the backup failed, no snapshot
/// written, until December 2026. Four times deeper than any path a
/// program can name (`PATH_MAX`, 4,096 bytes), and within what a walking
/// thread's stack ([`WALK_STACK`]) takes.
const MAX_DEPTH: usize = 16_384;

/// The most walking threads alive at once, those waiting for their
/// subfolders' threads included, for `workers` workers: enough to keep
/// the cores listing while some wait, few enough that their stacks stay
/// small (see [`WalkShared::threads`]).
fn walk_threads(workers: usize) -> usize {
    workers.saturating_mul(4).max(8)
}

/// Descriptors kept for what is not the walk: the repository's files,
/// the workers' open files, spilled listings, the store's connections.
const FDS_KEPT: u64 = 256;

/// How deep the walk goes (see [`MAX_DEPTH`]), with the open-file limit,
/// raised to its hard maximum first: half of what the limit leaves past
/// [`FDS_KEPT`], as two walking threads may each hold a chain.
fn walk_depth() -> (usize, u64) {
    let limit = crate::restorer::raise_fd_limit();
    let by_fds = usize::try_from(limit.saturating_sub(FDS_KEPT) / 2).unwrap_or(usize::MAX);
    (MAX_DEPTH.min(by_fds).max(16), limit)
}

/// How many unchanged files' parent entries held chunks that do not add
/// up to their size, and the first: its path, the chunks' length and the
/// entry's size.
type WrongSize = (u64, Option<(PathBuf, u64, u64)>);

impl WalkShared<'_> {
    /// Whether the repository still holds every chunk `path`, unchanged
    /// since the parent snapshot, would keep from it. A chunk `repair
    /// index` dropped (its pack lost) since the parent was written is
    /// not: trusting the parent then would write a snapshot that cannot
    /// restore the file, night after night, while the source still has
    /// it. Such a file is read again instead, which stores the content
    /// again under the same ids and so mends the older snapshots too.
    ///
    /// Nor is a file whose chunks do not add up to the size its parent
    /// entry gives (a damaged or forged parent tree, which verify names):
    /// until December 2026 the entry was kept, exit 0, and each snapshot
    /// after was as unrestorable as the parent.
    fn parent_chunks_held(&self, path: &Path, chunks: &[BlobId], size: u64) -> bool {
        match self.setup.writer.parent_chunks(chunks) {
            Ok(ParentChunks::Held { length }) if length.is_none_or(|l| l == size) => true,
            Ok(ParentChunks::Held { length }) => {
                if let Ok(mut wrong) = self.wrong_size.lock() {
                    wrong.0 += 1;
                    wrong
                        .1
                        .get_or_insert_with(|| (path.to_path_buf(), length.unwrap_or(0), size));
                }
                false
            }
            Ok(ParentChunks::Missing(id)) => {
                if let Ok(mut lost) = self.lost.lock() {
                    lost.0 += 1;
                    lost.1.get_or_insert_with(|| (path.to_path_buf(), id));
                }
                false
            }
            // The index could not be loaded: the file is read, and the
            // storing of its chunks reports why.
            Err(_) => false,
        }
    }

    /// Reports the files [`WalkShared::parent_chunks_held`] found.
    fn report_lost(&self) {
        if let Ok(wrong) = self.wrong_size.lock() {
            if let (n, Some((path, held, said))) = &*wrong {
                (self.setup.repo_warn)(format!(
                    "{n} unchanged file(s) had an entry in the parent snapshot whose chunks \
                     do not add up to its size (first: {}, whose chunks hold {held} bytes, its \
                     entry says {said}: a damaged parent tree, which `cairn verify` names): \
                     read again and stored, so this snapshot is whole",
                    path.shown()
                ));
            }
        }
        let Ok(lost) = self.lost.lock() else { return };
        if let (n, Some((path, id))) = &*lost {
            (self.setup.repo_warn)(format!(
                "{n} unchanged file(s) had chunks the readable index lacks \
                 (first: {}, blob {}; an index table damaged or left unread, or \
                 their entries dropped since the parent snapshot as their pack \
                 was lost): read again and stored, so this snapshot is whole, and \
                 older snapshots holding the same content are mended",
                path.shown(),
                id.short()
            ));
        }
    }

    /// Hands `batch` to the workers, its small files first to the reader
    /// ahead if they are cold (see [`cold_small_files`]): it starts on
    /// them while this waits for the workers to make room.
    fn send(&self, batch: Vec<FileJob>) -> std::result::Result<(), ()> {
        if let Some(files) = cold_small_files(&batch) {
            let _ = self.ahead.try_send(files);
        }
        self.jobs.send(batch).map_err(|_| ())
    }

    /// Takes a place for a new walking thread, if there is one; it is
    /// given back by [`WalkShared::give_back`].
    fn take_spare(&self) -> bool {
        let most = walk_threads(self.setup.workers);
        if self
            .threads
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                (n < most).then_some(n + 1)
            })
            .is_err()
        {
            return false;
        }
        let taken = self
            .spare
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                (n > 0).then_some(n - 1)
            })
            .is_ok();
        if taken {
            let now = self.threads.load(AtomicOrdering::Acquire);
            self.threads_peak.fetch_max(now, AtomicOrdering::AcqRel);
        } else {
            self.threads.fetch_sub(1, AtomicOrdering::AcqRel);
        }
        taken
    }

    /// Gives back a place [`WalkShared::take_spare`] took: its thread
    /// ended, or did not start.
    fn give_back(&self) {
        self.threads.fetch_sub(1, AtomicOrdering::AcqRel);
        self.spare.fetch_add(1, AtomicOrdering::AcqRel);
    }
}

/// Walks directories depth-first: on the calling thread, and on threads
/// of their own for subdirectories met while a place is spare (see
/// [`WalkShared::spare`]), so listing and `lstat`ing a large tree keeps
/// every core busy. Each directory is emitted after all its
/// subdirectories, whichever thread walked them, so the finisher always
/// has a directory's subtrees before the directory.
struct Walker<'a> {
    shared: &'a WalkShared<'a>,
    names: NameCache,
}

impl<'a> Walker<'a> {
    fn walk_root(&mut self) -> Result<u64> {
        let mut root = PathBuf::from("/");
        let md = std::fs::symlink_metadata(&root).map_err(|e| Error::path("stat", &root, e))?;
        let parent = self.shared.setup.parent;
        let handle = DirHandle::new(&root);
        let skeleton = self.shared.setup.skeleton;
        let scope = Scope {
            whole: skeleton.given,
            below: Some(skeleton),
        };
        self.walk_subdir(&mut root, 0, handle, md.dev(), scope, parent)
    }

    fn aborted(&self) -> bool {
        self.shared
            .fatal
            .lock()
            .map(|f| f.is_some())
            .unwrap_or(true)
    }

    fn report(&self, msg: String) {
        (self.shared.setup.report)(msg)
    }

    /// Walks subdirectory `path`, `depth` names below `/`, opened as
    /// `handle`, whose entry in the parent snapshot named `old_subtree`
    /// (loaded here, so on the thread that walks it). `path` is this
    /// thread's one path buffer (see [`Walker::walk_dir`]), as it was
    /// once the walk returns.
    fn walk_subdir(
        &mut self,
        path: &mut PathBuf,
        depth: usize,
        handle: std::io::Result<Arc<DirHandle>>,
        dev: u64,
        scope: Scope<'_>,
        old_subtree: Option<BlobId>,
    ) -> Result<u64> {
        let setup = self.shared.setup;
        let parent = old_subtree.and_then(|id| match setup.repo.dir_nodes(&id) {
            Ok(t) => Some((id, t)),
            Err(e) => {
                (setup.repo_warn)(format!(
                    "{}: parent tree unreadable, reading afresh: {e}",
                    path.shown()
                ));
                super::distrust_tree_pack(setup.repo, setup.writer, &id);
                None
            }
        });
        self.walk_dir(path, depth, handle, dev, scope, parent)
    }

    /// Walks `dir`, emitting its subdirectories and then itself; returns its
    /// sequence number. `handle` is the folder, opened once: it is listed,
    /// its entries stat-ed and its files and folders opened through it.
    /// A folder that could not be opened as one (a symlink in its place)
    /// is reported and stored empty.
    ///
    /// `dir` is the thread's one path buffer: each entry's name is added
    /// to it while the entry is walked, and taken off after, so that a
    /// tree thousands of folders deep holds its path once, not a copy
    /// per level (until December 2026 a tree 2,000 folders deep of
    /// 255-byte names took 568 MB, and one 16,384 deep, as deep as a
    /// walk goes, would have taken 34 GB). A subfolder walked on a
    /// thread of its own takes a copy.
    fn walk_dir(
        &mut self,
        dir: &mut PathBuf,
        depth: usize,
        handle: std::io::Result<Arc<DirHandle>>,
        dev: u64,
        scope: Scope<'_>,
        parent: Option<(BlobId, DirNodes<'a>)>,
    ) -> Result<u64> {
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                self.report(format!(
                    "{}: cannot open as a directory: {e}{}",
                    dir.shown(),
                    super::STORED_EMPTY
                ));
                Counters::add(&self.shared.setup.counters.dirs, 1);
                return self.emit(DirJob {
                    left_out: LEFT_OUT_UNKNOWN,
                    ..DirJob::new(TreeEncoder::default())
                });
            }
        };
        let whole = scope.whole;
        // Entries left out here, for the directory's node: what a target
        // holds beside the rest is then not the snapshot's to remove. A
        // folder walked only as the way down to given paths (above them
        // all, or beneath one but excluded or on another filesystem with
        // `-x`) is not listed: how much else it held is not known. Until
        // December 2026 such a folder beneath a given path said none was
        // left out, and a mirror restore of `backup ex ex/skip/keep
        // --exclude skip` over the live tree emptied `ex/skip` of all but
        // `keep`.
        let mut left_out = if whole || crate::fault::way_down_unrecorded() {
            0u64
        } else {
            LEFT_OUT_UNKNOWN
        };
        let report: &(dyn Fn(String) + Sync) = self.shared.setup.report;
        // A listing that ended early (an error from the directory stream
        // partway, a spilled run that cannot be read back) says so through
        // its report: how many entries it missed is not known. Until
        // December 2026 such a folder's node said none, and a mirror
        // restore over the live tree removed what the listing missed.
        let cut_short = std::cell::Cell::new(false);
        let listing_report = |why: String| {
            cut_short.set(true);
            report(why);
        };
        // The folder's change time before it is listed, and the inodes
        // of its entries of one name each as they are walked, for the
        // check after (see `walked_twice`).
        let listed_at = whole.then(|| folder_ctime(&handle)).flatten();
        let mut walked_inodes = listed_at.map(|_| Vec::new());
        let listing = whole.then(|| match Listing::read(handle.fd(), dir, &listing_report) {
            Ok(l) => l,
            Err(e) => {
                self.report(format!(
                    "{}: cannot list: {e}{}",
                    dir.shown(),
                    super::STORED_EMPTY
                ));
                left_out = LEFT_OUT_UNKNOWN;
                Listing::new()
            }
        });
        if cut_short.get() {
            left_out = LEFT_OUT_UNKNOWN;
        }
        let given = scope.below.map_or(0, |sk| sk.children.len());
        // At most: a given path is in the listing too, unless gone.
        let count = listing.as_ref().map_or(0, Listing::len) + given;
        let names: Box<dyn Iterator<Item = Entry<'_>> + '_> = match (listing, scope.below) {
            (Some(l), None) => Box::new(l.sorted(&listing_report).map(|n| (n, None))),
            (Some(l), Some(sk)) => Box::new(with_given(l.sorted(&listing_report).peekable(), sk)),
            (None, Some(sk)) => Box::new(sk.children.iter().map(|(n, sub)| (n.clone(), Some(sub)))),
            (None, None) => Box::new(std::iter::empty()),
        };
        // Both the listing and a tree's nodes are sorted by name bytes, so
        // the parent's nodes are matched by walking the two side by side,
        // decoded one at a time and taken by value: unchanged files keep
        // the parent's chunk list without copying it.
        let (stored, parent) = parent.unzip();
        let has_parent = parent.as_ref().is_some_and(|t| !t.is_empty());
        let mut parent_nodes = ParentNodes(parent, None);
        let mut tree = TreeEncoder::default();
        let mut waits = Vec::new();
        let mut outcomes: Option<Arc<DirOutcomes>> = None;
        // A directory walked in full (not a folder above the backed-up
        // paths) may be stored in parts: the parts sent so far.
        let split = whole
            .then(|| PartRule::of(self.shared.setup.repo))
            .flatten();
        let mut parts = Vec::new();
        // The chunk ids the part's files may add to it (see `PART_BYTES`).
        let mut ids_bound = 0u64;
        let mut batch = JobBatch::default();
        // A part's outcomes are placed by its nodes' numbers in it.
        let entries = split.map_or(count, |r| r.max().min(count));
        std::thread::scope(|scope| -> Result<()> {
            // Subdirectories walked on threads of their own: their slot and
            // the thread.
            let mut walking = Vec::new();
            // A large directory's entries are stat-ed a block ahead, on
            // every core (see `StatAhead`), when it has a parent to
            // compare with: most of its files are then unchanged, and
            // the walk is the backup. Without one, every file is read,
            // the workers are the backup, and stat-ing beside them took
            // their cores (200,000 files in one directory: 1.51-1.55 s
            // against 1.30-1.42 s; with a parent, 0.63-0.72 s against
            // 0.74-0.77 s).
            let threads = if whole && count >= STAT_BLOCK && has_parent {
                self.shared.setup.workers.clamp(1, 4)
            } else {
                1
            };
            let exclude = whole.then_some(self.shared.setup.exclude);
            crate::fault::folder_to_file(dir);
            let mut ahead = StatAhead {
                names,
                ready: Vec::new().into_iter(),
                handle: &handle,
                exclude,
                threads,
            };
            let dir_len = dir.as_os_str().len();
            while let Some(((name, sub), pre)) = ahead.next_in(dir) {
                if self.aborted() {
                    break;
                }
                // The entry's path: the folder's and its name, taken off
                // again at the next entry and after the last.
                cut_to(dir, dir_len);
                dir.push(&name);
                let path: &Path = dir;
                // A given path is never left out, nor is the way down to
                // one (explicit beats pattern); only what it holds may be.
                let given = sub.is_some_and(|s| s.given);
                let excluded = |is_dir| {
                    whole
                        && !given
                        && self.shared.setup.exclude.matches_bytes(
                            path.as_os_str().as_bytes(),
                            name.as_bytes(),
                            is_dir,
                        )
                };
                if excluded(false) && sub.is_none() {
                    continue;
                }
                let md = match pre.unwrap_or_else(|| stat(&handle, &name)) {
                    Ok(md) => md,
                    Err(e) => {
                        self.report(format!("{}: cannot stat: {e}", path.shown()));
                        left_out = left_out.saturating_add(1);
                        continue;
                    }
                };
                if md.is_dir() && excluded(true) && sub.is_none() {
                    continue;
                }
                // A folder has one name; a file of several is walked
                // under each (hard links), which is no rename.
                if md.dev == dev && (md.is_dir() || md.nlink == 1) {
                    if let Some(inodes) = &mut walked_inodes {
                        if inodes.len() < WALKED_INODES {
                            inodes.push(md.ino);
                        } else {
                            walked_inodes = None;
                        }
                    }
                }
                // A way down to a given path that is no folder (now: each
                // was checked when given) leads to nothing; stored, it
                // would hide that the paths beneath were not.
                if !md.is_dir() && sub.is_some_and(|s| !s.children.is_empty()) {
                    self.report(format!(
                        "{}: not a directory, so the paths given beneath it are not backed up",
                        path.shown()
                    ));
                    if !given {
                        left_out = left_out.saturating_add(1);
                        continue;
                    }
                }
                if md.is_dir() {
                    if let Some((folder, what)) = self.shared.setup.own.find(md.dev, md.ino) {
                        crate::eprint_line(format_args!(
                            "note: leaving out {}: it is {what} ({})",
                            crate::escape::escape(path.as_os_str().as_bytes()),
                            crate::escape::escape(folder.as_os_str().as_bytes())
                        ));
                        left_out = left_out.saturating_add(1);
                        continue;
                    }
                }
                let mut old = parent_nodes.take(name.as_bytes(), |e| {
                    (self.shared.setup.repo_warn)(format!(
                        "{}: parent tree unreadable, reading afresh: {e}",
                        cut_path(path, dir_len).shown()
                    ))
                });
                // Extended attributes change ctime: reuse the parent's when
                // ctime and inode are unchanged, saving a syscall per entry
                // (and the parent's backup saw what this one sees, see
                // `WalkSetup::parent_xattrs`);
                // unless that ctime is racily clean (see `unchanged_chunks`):
                // attributes set in the same tick after the parent read
                // them leave the ctime it saw. A file's are read only once
                // it is known to be read (then through it, by the worker)
                // or not (then here).
                let racy_from = self.shared.setup.racy_from;
                let reused = old
                    .as_mut()
                    .filter(|o| {
                        self.shared.setup.parent_xattrs
                            && o.ctime_ns == md.ctime_ns
                            && o.inode == md.ino
                            && o.ctime_ns < racy_from
                    })
                    .map(|o| std::mem::take(&mut o.xattrs));
                let unread = reused.is_none() && md.is_file();
                let xattrs = reused.or_else(|| unread.then(Vec::new));
                let mut node =
                    match node_from_stat(handle.fd(), &name, path, &md, &self.names, xattrs) {
                        Ok((mut n, failed)) => {
                            if let Some(why) = failed {
                                self.report(xattrs_unread(path, &why));
                                n.ctime_ns = crate::tree::CTIME_UNREAD;
                            }
                            n
                        }
                        Err(e) => {
                            self.report(format!("{}: cannot read metadata: {e}", path.shown()));
                            left_out = left_out.saturating_add(1);
                            continue;
                        }
                    };
                match &node.kind {
                    NodeKind::File { .. } => {
                        let c = self.shared.setup.counters;
                        let was_file = old
                            .as_ref()
                            .is_some_and(|o| matches!(o.kind, NodeKind::File { .. }));
                        let (unchanged, was) = match old
                            .map(|o| unchanged_chunks(o, &node, racy_from))
                        {
                            Some(Ok(chunks)) => (Some(chunks), None),
                            Some(Err(parent)) => (None, parent.as_deref().map(chunk_list_digest)),
                            None => (None, None),
                        };
                        if let Some(chunks) = unchanged.filter(|chunks| {
                            self.shared.parent_chunks_held(path, chunks, node.size)
                        }) {
                            node.kind = NodeKind::File { chunks };
                            // Unchanged means the same ctime and inode, so
                            // the parent's attributes were taken above,
                            // unless its backup's user saw other names.
                            if unread {
                                let (xattrs, failed) =
                                    crate::fsmeta::read_xattrs_at(handle.fd(), &name, path);
                                node.xattrs = xattrs;
                                if let Some(why) = failed {
                                    self.report(xattrs_unread(path, &why));
                                    node.ctime_ns = crate::tree::CTIME_UNREAD;
                                }
                            }
                            Counters::add(&c.files_unmodified, 1);
                            Counters::add(&c.total_bytes, node.size);
                            tree.push(&node)?;
                        } else {
                            Counters::add(
                                if was_file {
                                    &c.files_changed
                                } else {
                                    &c.files_new
                                },
                                1,
                            );
                            let results = outcomes.get_or_insert_with(|| DirOutcomes::new(entries));
                            let slot = tree.len() as usize;
                            let job = FileJob {
                                handle: Arc::clone(&handle),
                                path: path.to_path_buf(),
                                size: node.size,
                                mtime_ns: node.mtime_ns,
                                ctime_ns: node.ctime_ns,
                                dir: Arc::clone(results),
                                at: slot,
                                answered: false,
                                link: (md.nlink > 1
                                    && node.ctime_ns < self.shared.setup.links_from)
                                    .then_some((md.dev, md.ino)),
                                names: md.nlink,
                            };
                            let at = tree.push(&node)?;
                            waits.push(Wait::File {
                                slot,
                                at,
                                new: !was_file,
                                was,
                            });
                            if let Some(full) = batch.add(job, node.size) {
                                if self.shared.send(full).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    NodeKind::Dir { .. } => {
                        // A folder of a given path on another filesystem
                        // is a mount point; a given path itself is walked
                        // on its own filesystem, whatever that is.
                        let other_fs =
                            self.shared.setup.one_file_system && whole && !given && md.dev != dev;
                        let old_subtree = match old.as_ref().map(|o| &o.kind) {
                            Some(NodeKind::Dir { subtree }) => Some(*subtree),
                            _ => None,
                        };
                        let wants = Scope {
                            whole: given || (whole && !excluded(true) && !other_fs),
                            below: sub,
                        };
                        if other_fs && sub.is_none() {
                            // A mount point: keep the directory, not its
                            // contents, which are another filesystem's.
                            let seq = self.emit(DirJob {
                                left_out: LEFT_OUT_UNKNOWN,
                                ..DirJob::new(TreeEncoder::default())
                            })?;
                            let at = tree.push(&node)?;
                            waits.push(Wait::Dir { at, seq });
                        } else {
                            // Opened here, relative to this folder: what
                            // its path names by the time the walk gets to
                            // it may be elsewhere.
                            crate::fault::swap_walked_dir(path);
                            let (max, limit) = self.shared.max_depth;
                            let depth = depth + 1;
                            let opened = if depth > max {
                                Err(std::io::Error::other(format!(
                                    "it lies {depth} folders deep, deeper than the {max} a \
                                     backup walks (with {limit} open files allowed, each \
                                     folder on the way down holding one)"
                                )))
                            } else {
                                handle.open_dir(&name)
                            };
                            crate::fault::swap_opened_dir(path);
                            crate::fault::exchange_opened_dir(path);
                            // Files waiting for a batch would hold their
                            // paths through the walk below (see
                            // `HELD_PATH`).
                            if path.as_os_str().len() > HELD_PATH {
                                if let Some(files) = batch.take() {
                                    if self.shared.send(files).is_err() {
                                        break;
                                    }
                                }
                            }
                            let mut work = Some((opened, wants, old_subtree));
                            if self.shared.take_spare() {
                                let shared = self.shared;
                                let dev = md.dev;
                                // Handed over through a cell, so that a
                                // thread refused (too many, or `ulimit -v`
                                // too tight for its stack) leaves the
                                // folder to be walked here instead.
                                let cell = Arc::new(Mutex::new(work.take()));
                                let given = Arc::clone(&cell);
                                let mut path = path.to_path_buf();
                                let spawned = std::thread::Builder::new()
                                    .stack_size(crate::fault::walk_stack().unwrap_or(WALK_STACK))
                                    .spawn_scoped(scope, move || {
                                        let taken = given.lock().ok().and_then(|mut w| w.take());
                                        let Some((opened, wants, old_subtree)) = taken else {
                                            return Err(Error::Invalid(
                                                "a folder's walk was lost".into(),
                                            ));
                                        };
                                        let mut walker = Walker {
                                            shared,
                                            names: NameCache::default(),
                                        };
                                        let seq = walker.walk_subdir(
                                            &mut path,
                                            depth,
                                            opened,
                                            dev,
                                            wants,
                                            old_subtree,
                                        );
                                        shared.give_back();
                                        seq
                                    });
                                match spawned {
                                    Ok(thread) => {
                                        walking.push((waits.len(), thread));
                                        // The sequence number is filled in
                                        // once it is walked.
                                        let at = tree.push(&node)?;
                                        waits.push(Wait::Dir { at, seq: u64::MAX });
                                    }
                                    Err(_) => {
                                        self.shared.give_back();
                                        let back = cell.lock().ok().and_then(|mut w| w.take());
                                        work = Some(back.ok_or_else(|| {
                                            Error::Invalid("a folder's walk was lost".into())
                                        })?);
                                    }
                                }
                            }
                            if let Some((opened, wants, old_subtree)) = work {
                                let seq = self.walk_subdir(
                                    dir,
                                    depth,
                                    opened,
                                    md.dev,
                                    wants,
                                    old_subtree,
                                )?;
                                let at = tree.push(&node)?;
                                waits.push(Wait::Dir { at, seq });
                            }
                        }
                    }
                    _ => {
                        tree.push(&node)?;
                    }
                }
                if let (Some(r), true) = (split, md.is_file()) {
                    ids_bound = ids_bound.saturating_add(r.ids_bound(md.size));
                }
                let bytes = (tree.byte_len() as u64).saturating_add(ids_bound);
                if split.is_some_and(|r| r.cut(tree.len(), name.as_bytes(), bytes)) {
                    ids_bound = 0;
                    // The part's files all go to the workers now: the
                    // finisher waits for them, and entries that follow
                    // may add none to the batch (unchanged files) until
                    // the directory ends, with the parts sent meanwhile
                    // filling the channel the walk then waits on.
                    if let Some(rest) = batch.take() {
                        if self.shared.send(rest).is_err() {
                            break;
                        }
                    }
                    // The part is whole once its subdirectories are.
                    join_walkers(self.shared, std::mem::take(&mut walking), &mut waits)?;
                    let part = DirJob {
                        waits: std::mem::take(&mut waits),
                        outcomes: outcomes.take(),
                        left_out: std::mem::take(&mut left_out),
                        ..DirJob::new(std::mem::take(&mut tree))
                    };
                    parts.push(self.emit(part)?);
                }
            }
            cut_to(dir, dir_len);
            if let Some(rest) = batch.take() {
                // Unsent (the workers gone), each job answers so.
                let _ = self.shared.send(rest);
            }
            // Every entry is stat-ed by now (its subfolders opened). A
            // name added after the listing is not in the snapshot, one
            // removed after its `stat` still is: each leaves the folder
            // as it was at some moment. A name renamed over another, or
            // two exchanged, between their `stat`s leaves one inode
            // under two names and the other under none, a state the
            // folder never had, and only then is it said (until December
            // 2026 that stored the folder twice and a file nowhere,
            // exit 0).
            if listed_at.is_some_and(|t| folder_ctime(&handle) != Some(t))
                && walked_twice(&handle, dir, dev, walked_inodes.take())
                && !self.aborted()
            {
                (self.shared.setup.changed)(format!(
                    "{}: folder changed while it was walked (entries renamed over one \
                     another): the snapshot holds it as walked, with one entry under two \
                     names and another missing; the next backup stores it as it is then",
                    dir.shown()
                ));
                cut_short.set(true);
            }
            join_walkers(self.shared, walking, &mut waits)
        })?;
        Counters::add(&self.shared.setup.counters.dirs, 1);
        if cut_short.get() {
            left_out = LEFT_OUT_UNKNOWN;
        }
        let last = DirJob {
            stored,
            waits,
            outcomes,
            left_out,
            ..DirJob::new(tree)
        };
        if parts.is_empty() {
            return self.emit(last);
        }
        // Entries left out after the last part's, for the list of parts.
        let mut rest = last.left_out;
        if !last.tree.is_empty() {
            rest = 0;
            parts.push(self.emit(DirJob {
                stored: None,
                ..last
            })?);
        }
        if let ([one], 0) = (&parts[..], rest) {
            // Cut after its last entry: one part is the whole tree.
            return Ok(*one);
        }
        // A list of one part is stored as that part (see `finish_dirs`).
        self.emit(DirJob {
            stored,
            parts,
            left_out: rest,
            ..DirJob::new(TreeEncoder::default())
        })
    }

    fn emit(&mut self, job: DirJob) -> Result<u64> {
        let seq = self.shared.next_seq.fetch_add(1, AtomicOrdering::Relaxed);
        self.shared
            .dirs
            .send(DirJob { seq, ..job })
            .map_err(|_| Error::Invalid("backup pipeline stopped".into()))?;
        Ok(seq)
    }
}

impl DirJob {
    /// The job of `tree`, with nothing to wait for.
    fn new(tree: TreeEncoder) -> DirJob {
        DirJob {
            seq: 0,
            tree,
            stored: None,
            waits: Vec::new(),
            outcomes: None,
            parts: Vec::new(),
            left_out: 0,
        }
    }
}

/// A subdirectory being walked on a thread of its own, and the place of
/// its wait among its directory's.
type Walking<'scope> = (usize, std::thread::ScopedJoinHandle<'scope, Result<u64>>);

/// Waits for the threads `walking` subdirectories, filling in the
/// sequence numbers their `waits` are for; the first error of any.
/// Lends the calling thread's place while it waits.
fn join_walkers(
    shared: &WalkShared<'_>,
    walking: Vec<Walking<'_>>,
    waits: &mut [Wait],
) -> Result<()> {
    let lend = !walking.is_empty();
    if lend {
        shared.spare.fetch_add(1, AtomicOrdering::AcqRel);
    }
    let mut outcome = Ok(());
    for (at, thread) in walking {
        let seq = match thread.join() {
            Ok(Ok(seq)) => seq,
            Ok(Err(e)) => {
                outcome = outcome.and(Err(e));
                continue;
            }
            Err(_) => {
                outcome = outcome.and(Err(Error::Invalid(
                    "a backup walker thread panicked".into(),
                )));
                continue;
            }
        };
        if let Some(Wait::Dir { seq: wait_seq, .. }) = waits.get_mut(at) {
            *wait_seq = seq;
        }
    }
    if lend {
        shared.spare.fetch_sub(1, AtomicOrdering::AcqRel);
    }
    outcome
}

/// A parent tree's nodes, decoded one at a time as the listing reaches
/// them (both are sorted by name), and the next one not taken yet.
struct ParentNodes<'r>(Option<DirNodes<'r>>, Option<Node>);

impl ParentNodes<'_> {
    /// The parent's node named `name`, passing those before it. A node
    /// that cannot be decoded ends the parent, reported to `warn`: what
    /// follows is read afresh.
    fn take(&mut self, name: &[u8], warn: impl Fn(Error)) -> Option<Node> {
        loop {
            if self.1.is_none() {
                match self.0.as_mut()?.next() {
                    Some(Ok(node)) => self.1 = Some(node),
                    Some(Err(e)) => {
                        warn(e);
                        self.0 = None;
                    }
                    None => self.0 = None,
                }
            }
            let next = self.1.as_ref()?;
            match next.name.0.as_slice().cmp(name) {
                std::cmp::Ordering::Less => self.1 = None,
                std::cmp::Ordering::Equal => return self.1.take(),
                std::cmp::Ordering::Greater => return None,
            }
        }
    }
}

/// The part of [`racy_window_ns`] for coarse clocks: a file's times tick
/// in steps of up to a jiffy (1–10 ms) on kernels without fine-grained
/// timestamps, a second on ext3 and some NFS servers, two on FAT.
pub(super) const RACY_TICK_NS: i64 = 2_000_000_000;

/// The longest [`racy_window_ns`]: with periodic writeback off
/// (`vm.dirty_writeback_centisecs` = 0, laptop mode), pages may stay dirty
/// for as long as nothing needs the memory, and no window would do.
const RACY_WINDOW_MAX_NS: i64 = 15 * 60 * 1_000_000_000;

/// How long before its snapshot's time a parent node's ctime must lie
/// for the node to be trusted: the clock's tick ([`RACY_TICK_NS`]), and
/// the time the kernel may keep a page of the file dirty.
///
/// A program writing through a shared memory map (LMDB with
/// `MDB_WRITEMAP`, Kafka's indexes, many embedded databases) sets the
/// file's mtime and ctime only on its first write to a clean page: the
/// kernel catches that write fault, and the page stays writable, with no
/// fault and no new time, until writeback has written it and made it
/// clean again. A parent that read the file after that first write
/// kept the times every later write to the still-dirty page leaves as
/// they are, so trusting them would keep the old bytes in every later
/// snapshot, exit 0 (until December 2026 the window was the tick alone,
/// and it did). A page made dirty at the file's last stamped time is
/// written back within `vm.dirty_expire_centisecs` plus one period of
/// `vm.dirty_writeback_centisecs` (30 and 5 s by default): a parent that
/// began later saw it clean, and any write since has moved the times.
/// Read from `/proc/sys/vm` (defaults where it cannot be read), at most
/// [`RACY_WINDOW_MAX_NS`]. A file on tmpfs is never written back: its
/// map's writes never move its times (README, "Snapshot kinds").
pub(super) fn racy_window_ns() -> i64 {
    let centisecs = |name: &str, default: i64| {
        std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|&n| n >= 0)
            .unwrap_or(default)
    };
    let expire = centisecs("dirty_expire_centisecs", 3000);
    let period = match centisecs("dirty_writeback_centisecs", 500) {
        0 => return RACY_WINDOW_MAX_NS,
        n => n,
    };
    expire
        .saturating_add(period)
        .saturating_mul(10_000_000)
        .saturating_add(RACY_TICK_NS)
        .min(RACY_WINDOW_MAX_NS)
}

/// The parent's chunks when `now` looks unchanged since `old`. A file
/// changed again within the same tick of its clock after the parent read
/// it keeps the size and times the parent saw ("racily clean", as git
/// calls it): a node whose ctime is at or after `racy_from`, its
/// snapshot's time less [`racy_window_ns`], is read afresh rather than
/// trusted, or the stale content would be kept until the file next
/// changed. Otherwise, the parent's chunks of a file (`Err(Some)`), to
/// tell afterwards whether it was changed after all.
fn unchanged_chunks(
    old: Node,
    now: &Node,
    racy_from: i64,
) -> std::result::Result<Vec<BlobId>, Option<Vec<BlobId>>> {
    match old.kind {
        NodeKind::File { chunks }
            if old.size == now.size
                && old.mtime_ns == now.mtime_ns
                && old.ctime_ns == now.ctime_ns
                && old.inode == now.inode
                && old.ctime_ns < racy_from =>
        {
            Ok(chunks)
        }
        NodeKind::File { chunks } => Err(Some(chunks)),
        _ => Err(None),
    }
}

/// A digest of a file's chunk list, to tell a file read again to the same
/// chunks as its parent's (touched, or within the racy window) from one
/// whose content changed, without holding the parent's list meanwhile.
fn chunk_list_digest(chunks: &[BlobId]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for c in chunks {
        h.update(&c.0);
    }
    *h.finalize().as_bytes()
}

/// Stores each directory's tree once its files are done; returns every
/// directory's tree id by sequence number. A tree that encodes as its
/// parent snapshot's did is not looked up: the walk has just read that
/// tree from the repository, and in a large repository the lookup of a
/// present id searches the index's tables, each a page fault when they
/// are cold, so a no-change backup looks up nothing.
fn finish_dirs(
    setup: &WalkSetup<'_>,
    dirs: Receiver<DirJob>,
) -> Result<HashMap<u64, (BlobId, u64)>> {
    // Each directory's tree, and the entries left out of it.
    let mut done: HashMap<u64, (BlobId, u64)> = HashMap::new();
    let lost = || Error::Invalid("backup pipeline lost a directory entry".into());
    let empty_tree = setup
        .repo
        .key()
        .blob_id(&crate::tree::Tree::new(Vec::new()).encode());
    for job in dirs {
        if !job.parts.is_empty() {
            // A part whose every entry was left out (files that vanished
            // or could not be read) is left out too: a part is never
            // empty. What remains is the directory: its one part, or the
            // empty tree stored for the parts left out.
            let mut ids = Vec::with_capacity(job.parts.len());
            let mut left_out = job.left_out;
            for seq in &job.parts {
                let (id, part_left_out) = done.remove(seq).ok_or_else(lost)?;
                left_out = left_out.saturating_add(part_left_out);
                if id != empty_tree {
                    ids.push(id);
                }
            }
            let id = match ids[..] {
                [] => empty_tree,
                [one] => one,
                _ => {
                    let bytes = Parts::encode(&ids);
                    let id = setup.repo.key().blob_id(&bytes);
                    if job.stored != Some(id) {
                        setup.writer.add_with_id(BlobKind::Tree, id, &bytes)?;
                    }
                    id
                }
            };
            done.insert(job.seq, (id, left_out));
            continue;
        }
        let files = job
            .waits
            .iter()
            .filter(|w| matches!(w, Wait::File { .. }))
            .count();
        let mut outcomes = match (&job.outcomes, files) {
            (Some(o), 1..) => o.take_all(files).unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut fills = Vec::with_capacity(job.waits.len());
        let mut left_out = job.left_out;
        for wait in job.waits {
            match wait {
                Wait::File { slot, at, new, was } => {
                    match outcomes.get_mut(slot).and_then(Option::take) {
                        Some(Ok((chunks, size, xattrs))) => {
                            Counters::add(&setup.counters.total_bytes, size);
                            // Read again to its parent's chunks: not changed
                            // after all (a `touch`, or the racy window), as a
                            // stream's are counted (until December 2026 every
                            // file read again counted as changed).
                            if !new && was.is_some_and(|w| w == chunk_list_digest(&chunks)) {
                                setup
                                    .counters
                                    .files_changed
                                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                                Counters::add(&setup.counters.files_unmodified, 1);
                            }
                            let (xattrs, unread) =
                                xattrs.map_or_else(|| (Vec::new(), false), |x| (x.list, x.unread));
                            fills.push((
                                at,
                                Fill::File {
                                    chunks,
                                    size,
                                    xattrs,
                                    unread,
                                },
                            ));
                            continue;
                        }
                        Some(Err(Some(why))) => (setup.report)(why),
                        Some(Err(None)) => {}
                        None => (setup.report)(format!(
                            "{}: worker stopped",
                            job.tree.name_at(at).shown()
                        )),
                    }
                    // Left out, so neither new nor changed (until
                    // December 2026 a file that could not be opened counted
                    // among the new ones beside its error).
                    let counted = if new {
                        &setup.counters.files_new
                    } else {
                        &setup.counters.files_changed
                    };
                    counted.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    left_out = left_out.saturating_add(1);
                    fills.push((at, Fill::Remove));
                }
                Wait::Dir { at, seq } => {
                    let (subtree, left_out) = done.remove(&seq).ok_or_else(lost)?;
                    fills.push((at, Fill::Subtree { subtree, left_out }));
                }
            }
        }
        drop(outcomes);
        let bytes = job.tree.finish(fills)?;
        let id = setup.repo.key().blob_id(&bytes);
        if job.stored != Some(id) {
            setup.writer.add_with_id(BlobKind::Tree, id, &bytes)?;
        }
        done.insert(job.seq, (id, left_out));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a file's first name read is kept for its other names, and let
    /// go once the last is met, so that a tree of many files of several
    /// names holds only those whose names are still to come.
    #[test]
    fn links_keep_a_read_until_every_name_is_met() {
        let links = Links::default();
        let seen = Seen {
            size: 5,
            mtime_ns: 1,
            ctime_ns: 2,
        };
        let read: FileRead = (vec![BlobId([7; 32])], 5, None);
        let held = || links.state.lock().unwrap().bytes;
        let Err(Some(claim)) = links.take((1, 2), seen, 3) else {
            panic!("the first name claims the read");
        };
        claim.done(seen, &read, 3);
        assert!(held() > 0);
        for _ in 0..2 {
            let Ok(got) = links.take((1, 2), seen, 3) else {
                panic!("another name takes the read");
            };
            assert_eq!(got.0, read.0);
        }
        assert_eq!(held(), 0, "all three names met");
        assert!(links.state.lock().unwrap().files.is_empty());
        // A name met once more (a bind mount) is read as a first one.
        assert!(matches!(links.take((1, 2), seen, 3), Err(Some(_))));
        // A file of one name is none of theirs.
        assert!(matches!(links.take((1, 3), seen, 1), Err(None)));
    }

    /// Holes are asked only of a file settled before the backup: the
    /// file opened, not only as the walk saw it (another may have been
    /// put in its place since, written a moment ago).
    #[test]
    fn holes_are_asked_only_of_a_file_opened_settled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let file = File::create(&path).unwrap();
        file.set_len(8 << 20).unwrap();
        let md = file.metadata().unwrap();
        if md.blocks() * 512 + HOLE_MIN > md.len() {
            return; // a filesystem that keeps no holes
        }
        let now = crate::fsmeta::time_ns(md.ctime(), md.ctime_nsec());
        let seen = |ctime_ns| Seen {
            size: 8 << 20,
            mtime_ns: ctime_ns,
            ctime_ns,
        };
        assert!(Holes::of(&file, seen(now), now + 1).is_some());
        // Seen long settled, but the file opened was changed since.
        assert!(Holes::of(&file, seen(now - 3_600_000_000_000), now - 1).is_none());
        assert!(Holes::of(&file, seen(now), now).is_none());
        // Too small to ask.
        file.set_len(1 << 19).unwrap();
        assert!(Holes::of(
            &file,
            Seen {
                size: 1 << 19,
                ..seen(now)
            },
            i64::MAX
        )
        .is_none());
    }

    /// A read that says "try again" (a pipe here; a FUSE filesystem's
    /// file may) clears `O_NONBLOCK` and waits for the bytes.
    #[test]
    fn a_read_told_to_try_again_waits() {
        use std::io::{Read, Write};
        use std::os::fd::{AsRawFd, FromRawFd};
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        // SAFETY: descriptors just made, owned by nothing else.
        let (reader, mut writer) =
            unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        let mut buf = [0u8; 8];
        let e = (&reader).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        let late = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            writer.write_all(b"late").unwrap();
        });
        let n = Blocking(&reader).read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"late");
        late.join().unwrap();
        // SAFETY: F_GETFL on an open descriptor.
        let flags = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
    }
    use crate::backend::testing::{disk_tempdir, noise, write_cold};

    /// A source that hands out at most `most` bytes a read and counts
    /// the reads made of it.
    struct Counted<'a> {
        data: &'a [u8],
        most: usize,
        reads: usize,
    }

    impl std::io::Read for Counted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            let n = buf.len().min(self.most).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Read to the size the walk saw, a small file takes one read, not a
    /// second that returns nothing; a read falling short before that
    /// size, or a file longer or shorter than seen, is read to its end.
    /// A part ends once it may come to `PART_BYTES` with its files'
    /// chunk ids, however few entries it holds: a few thousand disk
    /// images would otherwise make a tree no reader takes.
    #[test]
    fn a_part_of_large_files_ends_by_its_bytes() {
        let rule = PartRule {
            every: 4096,
            seed: 7,
            chunk_min: 512 << 10,
        };
        // At most one id per 512 KiB: 64 KiB of ids for 1 GiB.
        assert_eq!(rule.ids_bound(1 << 30), 64 << 10);
        assert_eq!(rule.ids_bound(1), 32);
        assert!(!rule.cut(3, b"a", PART_BYTES - 1));
        assert!(rule.cut(3, b"a", PART_BYTES));
        // 1,024 files of 1 TiB each: ends well before the 256 MiB a blob
        // may hold.
        let per_file = rule.ids_bound(1 << 40);
        let ends_after = (1..).find(|n| rule.cut(*n, b"f", n * per_file)).unwrap();
        assert!(ends_after * per_file < u64::from(crate::pack::MAX_BLOB) / 2);
    }

    #[test]
    fn a_file_is_read_to_its_seen_end_without_an_empty_read() {
        let data = noise(b"seen", 10_000);
        // Reads made, and checks of what was opened.
        let read = |seen: u64, most: usize| -> (usize, usize) {
            let mut src = Counted {
                data: &data,
                most,
                reads: 0,
            };
            let checks = std::cell::Cell::new(0);
            let mut out = Vec::new();
            let mut r = ToSeenEnd {
                file: &mut src,
                seen,
                at: 0,
                ended: false,
                check: Some(|| {
                    checks.set(checks.get() + 1);
                    Ok(())
                }),
                holes: None,
            };
            // As the chunker reads: into a window larger than the file.
            let mut buf = vec![0u8; 16 << 10];
            loop {
                let n = std::io::Read::read(&mut r, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, data, "seen {seen}, {most} a read");
            (src.reads, checks.get())
        };
        let whole = data.len() as u64;
        assert_eq!(read(whole, usize::MAX), (1, 0), "one read, no empty one");
        // Short reads before the seen size: on to it, then done.
        assert_eq!(read(whole, 3_000), (4, 0));
        // Grown since the walk, or shrunk: what was opened is checked
        // once, then read until a read returns 0.
        assert_eq!(read(whole - 100, usize::MAX), (2, 1));
        assert_eq!(read(whole + 100, usize::MAX), (2, 1));

        // A check that finds no regular file fails the read.
        let mut src = Counted {
            data: &data,
            most: usize::MAX,
            reads: 0,
        };
        let mut r = ToSeenEnd {
            file: &mut src,
            seen: 5,
            at: 0,
            ended: false,
            check: Some(|| Err(std::io::Error::other("a device"))),
            holes: None,
        };
        let e = std::io::Read::read(&mut r, &mut [0u8; 64]).unwrap_err();
        assert_eq!(e.to_string(), "a device");
    }

    #[test]
    fn a_file_read_is_cached_and_one_dropped_is_not() {
        let dir = disk_tempdir();
        let path = dir.path().join("f");
        // Not a few bytes, which a filesystem may keep in the inode.
        let bytes = noise(b"f", 64 << 10);
        write_cold(&path, &bytes);
        let file = File::open(&path).unwrap();
        assert!(!cached(&file));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert!(cached(&file));
    }

    /// On tmpfs, whose files are all in memory, a batch is never taken
    /// for cold: reading it ahead cost a backup of 200,000 small files
    /// there a quarter of its time.
    #[test]
    fn a_batch_on_tmpfs_is_not_read_ahead() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        for name in ["a", "b"] {
            std::fs::write(dir.path().join(name), noise(name.as_bytes(), 4096)).unwrap();
        }
        let file = File::open(dir.path().join("a")).unwrap();
        assert!(cached(&file));
        let files = [("a", 4096), ("b", 4096)];
        assert!(cold_small_files(&batch(dir.path(), &files)).is_none());
    }

    /// A batch of `(name, size)` files in `dir`, as the walk makes them.
    fn batch(dir: &Path, files: &[(&str, u64)]) -> Vec<FileJob> {
        let handle = DirHandle::new(dir).unwrap();
        let outcomes = DirOutcomes::new(files.len());
        files
            .iter()
            .enumerate()
            .map(|(at, &(name, size))| FileJob {
                path: dir.join(name),
                size,
                mtime_ns: 0,
                ctime_ns: 0,
                handle: Arc::clone(&handle),
                dir: Arc::clone(&outcomes),
                at,
                answered: false,
                link: None,
                names: 1,
            })
            .collect()
    }

    #[test]
    fn the_small_files_of_a_cold_batch_are_read_ahead_and_a_cached_batch_is_left() {
        let dir = disk_tempdir();
        let big = vec![1u8; (BATCH_BYTES + 1) as usize];
        let small = |name: &[u8]| noise(name, 8 << 10);
        write_cold(&dir.path().join("a"), &small(b"a"));
        write_cold(&dir.path().join("b"), &big);
        write_cold(&dir.path().join("c"), &small(b"c"));
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        let files = [
            ("empty", 0),
            ("b", big.len() as u64),
            ("a", 8192),
            ("c", 8192),
        ];
        let names = |picked: Vec<(Arc<DirHandle>, PathBuf)>| -> Vec<PathBuf> {
            picked.into_iter().map(|(_, p)| p).collect()
        };

        // Cold: the small files, not the large or the empty one.
        let picked = cold_small_files(&batch(dir.path(), &files)).unwrap();
        let paths = names(picked.clone());
        assert_eq!(paths, [dir.path().join("a"), dir.path().join("c")]);

        // Read ahead, they come into the page cache (the reads are only
        // started: wait for them). Looked at with `mincore`, which reads
        // nothing: a probe by `cached` starts a read itself, which a fast
        // disk finishes before it returns.
        let resident = |path: &Path, len: usize| {
            let file = File::open(path).unwrap();
            crate::mmap::cached_pages(&file, 0, len).is_some_and(|p| p.contains(&true))
        };
        let (tx, rx) = bounded(1);
        tx.send(picked).unwrap();
        drop(tx);
        read_ahead(rx);
        for path in &paths {
            let waited = std::time::Instant::now();
            while !resident(path, 8192) {
                assert!(waited.elapsed().as_secs() < 10, "{} not read", path.shown());
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        // The large file was left to its worker.
        assert!(!resident(&dir.path().join("b"), big.len()));

        // Cached now: the batch is left alone.
        assert!(cold_small_files(&batch(dir.path(), &files)).is_none());
        // As is a batch without small files.
        assert!(cold_small_files(&batch(dir.path(), &files[..2])).is_none());
    }
}
