//! Where repository files live.
//!
//! A backend stores immutable files of a few kinds, each named by 64 hex
//! digits (the `config` file has no name). The contract every backend keeps:
//!
//! - **Atomic**: a file is visible under its name only once all its bytes
//!   are; a reader never sees a partial file, a crash never leaves one.
//! - **Durable**: when `write` returns, the file survives a crash or power
//!   loss. The same holds for a file written through a [`FileSink`] once
//!   its `commit` returns; before that it is under no name at all.
//! - **No overwrite needed**: cairn never rewrites a name with different
//!   bytes (names are content hashes), so backends need neither rename nor
//!   conditional writes; writing an existing name again is harmless.
//! - **Errors are typed**: a missing file is [`Error::NotFound`] (reading,
//!   sizing or range-reading it); a failure that may pass on retry is a
//!   transient [`Error::Backend`]; other failures name the file and the
//!   place (path or endpoint), never credentials.
//!
//! [`Error::NotFound`]: crate::error::Error::NotFound
//! [`Error::Backend`]: crate::error::Error::Backend
//!
//! - **Listing** returns the names written and not removed; names not of
//!   the form the repository uses (temporary or probe objects starting
//!   with `.`) are left out.
//!
//! Wrappers add behaviour without changing the contract: [`retry`] retries
//! transient failures with backoff, [`cache`] keeps verified local copies
//! of metadata. [`mem`] is an in-memory backend for tests.
//!
//! Reads may return a memory map ([`Data::Mapped`]) where the backend is
//! local, so large reads do not copy.

pub mod cache;
pub mod http;
pub mod local;
pub mod mem;
pub mod retry;
pub mod s3;
#[cfg(test)]
pub(crate) mod testing;

use std::ops::Deref;
use std::time::SystemTime;

use crate::error::Result;

/// The kinds of file a repository holds, each in its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The single `config` file.
    Config,
    /// Encrypted master key files in `keys/`.
    Key,
    /// Pack files in `packs/<2 hex>/`.
    Pack,
    /// Index tables in `index/`.
    Index,
    /// Snapshot manifests in `snapshots/`.
    Snapshot,
    /// Lock files in `locks/`.
    Lock,
}

/// The name of [`FileKind::Config`]'s copy (see `Repository::open`):
/// `config.copy` beside `config` (whose own name is `""`).
pub const CONFIG_COPY: &str = "copy";

/// The file at the repository's root that the config file `name`
/// (`""`, or [`CONFIG_COPY`]) is.
pub fn config_name(name: &str) -> String {
    if name.is_empty() {
        "config".into()
    } else {
        format!("config.{name}")
    }
}

impl FileKind {
    /// The folder (or file, for config) name of this kind.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "keys",
            FileKind::Pack => "packs",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Lock => "locks",
        }
    }

    /// Whether a written file of this kind must survive a crash. Lock
    /// files need only be atomic: they exclude live processes, and a
    /// crash that could lose or tear one ends its holder too (an
    /// undecodable lock is ignored). Everything else is relied on later.
    pub fn durable(self) -> bool {
        self != FileKind::Lock
    }

    /// The most bytes a file of this kind, read whole into memory, may
    /// hold; `None` for packs and index tables, which are mapped or read
    /// by range (and spooled to disk when large, from a remote store).
    /// Each is far above what cairn writes (a key file is 160 bytes, a
    /// config or lock a few hundred, a snapshot its paths and tags), so
    /// that a file past it is damage, or planted to exhaust memory (a
    /// sparse lock file of gigabytes, a config linked to `/dev/zero`),
    /// and is refused as a file that does not decode, before its bytes
    /// are read.
    pub fn max_len(self) -> Option<u64> {
        match self {
            FileKind::Key => Some(4 << 10),
            FileKind::Config | FileKind::Lock => Some(64 << 10),
            FileKind::Snapshot => Some(MAX_SNAPSHOT_LEN),
            FileKind::Pack | FileKind::Index => None,
        }
    }
}

/// The most bytes a snapshot file may hold (see [`FileKind::max_len`]):
/// a backup whose snapshot would be larger (its paths and tags, given on
/// the command line, are what grows) is refused before it is written.
pub const MAX_SNAPSHOT_LEN: u64 = 64 << 20;

/// The error for a file of `kind` (`what` names it) of `len` bytes, more
/// than [`FileKind::max_len`] lets be read: damage of that file.
pub fn oversize(kind: FileKind, what: impl std::fmt::Display, len: u64) -> crate::error::Error {
    crate::error::Error::corrupt(
        what,
        format!(
            "{len} bytes, more than a {} file can be ({} at most); not read",
            local::kind_name(kind),
            kind.max_len().unwrap_or(u64::MAX)
        ),
    )
}

/// Bytes read from a backend: owned, or mapped from a local file.
pub enum Data {
    /// Bytes in memory.
    Owned(Vec<u8>),
    /// A read-only memory map of a whole file.
    Mapped(crate::mmap::Map),
    /// A verified cached copy, mapped and shared.
    Shared(std::sync::Arc<crate::mmap::Map>),
}

impl Data {
    /// For maps: the bytes will be read at scattered places (binary
    /// searches), so faults should not read ahead. No-op otherwise.
    pub fn advise_random(&self) {
        match self {
            Data::Mapped(m) => m.advise_random(),
            Data::Shared(m) => m.advise_random(),
            Data::Owned(_) => {}
        }
    }

    /// For maps: maps every page now (see [`crate::mmap::Map::populate`]).
    /// No-op otherwise.
    pub fn populate(&self) {
        match self {
            Data::Mapped(m) => m.populate(),
            Data::Shared(m) => m.populate(),
            Data::Owned(_) => {}
        }
    }

    /// For maps: maps the pages holding `range` now (see
    /// [`crate::mmap::Map::populate_range`]). No-op otherwise.
    pub fn populate_range(&self, range: std::ops::Range<usize>) {
        match self {
            Data::Mapped(m) => m.populate_range(range),
            Data::Shared(m) => m.populate_range(range),
            Data::Owned(_) => {}
        }
    }

    /// For maps: unmaps the pages holding `range` (see
    /// [`crate::mmap::Map::release_range`]). No-op otherwise.
    pub fn release_range(&self, range: std::ops::Range<usize>) {
        match self {
            Data::Mapped(m) => m.release_range(range),
            Data::Shared(m) => m.release_range(range),
            Data::Owned(_) => {}
        }
    }

    /// Copies the bytes at `offset` into `buf`, from a map's kept file if
    /// it has one (see [`crate::mmap::Map::read_at`]). Panics if the range
    /// lies past the end, as slicing does.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) {
        match self {
            Data::Mapped(m) => m.read_at(offset, buf),
            Data::Shared(m) => m.read_at(offset, buf),
            Data::Owned(v) => buf.copy_from_slice(&v[offset..offset + buf.len()]),
        }
    }

    /// For maps: the bytes will be read front to back. No-op otherwise.
    pub fn advise_sequential(&self) {
        match self {
            Data::Mapped(m) => m.advise_sequential(),
            Data::Shared(m) => m.advise_sequential(),
            Data::Owned(_) => {}
        }
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Data({} bytes)", self.len())
    }
}

impl Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Owned(v) => v,
            Data::Mapped(m) => m,
            Data::Shared(m) => m,
        }
    }
}

/// What interrupted writes left behind, removed (or for a dry run found)
/// by [`Backend::remove_leftovers`].
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Temporary files (a local store).
    pub files: u64,
    /// Incomplete multipart uploads (S3), whose parts the store keeps,
    /// and bills for, until they are aborted.
    pub uploads: u64,
    /// The bytes those uploads' parts hold; `None` where the store did not
    /// say for every one.
    pub upload_bytes: Option<u64>,
    /// What could not be listed or removed, and why, one line each.
    pub warnings: Vec<String>,
}

/// The names of `listed` that are no id, as [`Backend::strays`] gives
/// them by default.
pub(crate) fn not_ids(listed: Vec<String>) -> Vec<Vec<u8>> {
    listed
        .into_iter()
        .filter(|n| !crate::id::is_hex_name(n))
        .map(String::into_bytes)
        .collect()
}

/// Storage for repository files. See the module docs for the contract.
pub trait Backend: Send + Sync {
    /// A human-readable location, used in messages.
    fn location(&self) -> String;
    /// Whether a repository (its config file) exists here.
    fn exists(&self) -> Result<bool>;
    /// Creates the empty layout (folders, buckets) before `init` writes.
    fn create(&self) -> Result<()>;
    /// Names of what is at the location that a repository (or an
    /// interrupted `init`) did not put there, a few at most, so that
    /// `init` does not make a repository among someone's files. Stores
    /// that cannot tell give none (the default).
    fn foreign_entries(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Names of all files of `kind`, in no particular order.
    fn list(&self, kind: FileKind) -> Result<Vec<String>>;
    /// Names and sizes of all files of `kind`, in no particular order, as
    /// [`Backend::list`] and [`Backend::size`] would give them. Backends
    /// whose listing carries sizes (a directory's entries, an S3 listing)
    /// override it, so checking every pack's size costs one listing rather
    /// than one request per pack; the default asks for each size. A file
    /// removed between listing and sizing is left out.
    fn list_sizes(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for name in self.list(kind)? {
            match self.size(kind, &name) {
                Ok(n) => out.push((name, n)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
    /// Names of all files of `kind` with the time each was last written
    /// by the store's own clock (a directory entry's mtime, an S3
    /// listing's `LastModified`), `None` where the store does not tell.
    /// Locks are judged by it, so that a host whose clock is wrong cannot
    /// make a live lock look old. A file removed while listed is left out.
    fn list_times(&self, kind: FileKind) -> Result<Vec<(String, Option<SystemTime>)>> {
        Ok(self.list(kind)?.into_iter().map(|n| (n, None)).collect())
    }
    /// Entries named as files of `kind` are (64 hex digits, in the
    /// place their name gives) that listings pass over for not being
    /// files (a folder, FIFO, socket or device in a file's place), each
    /// as its place in the repository (`snapshots/<id>`) with what it
    /// is, for `verify` to warn of. Stores that hold only files give none
    /// (the default).
    fn not_files(&self, kind: FileKind) -> Result<Vec<(String, &'static str)>> {
        let _ = kind;
        Ok(Vec::new())
    }
    /// What `kind`'s folder holds that is no file of it, by name, but
    /// cairn's own temporary files (`.tmp-…`): files
    /// whose names are no id (a sync tool's conflict copy of one, a name
    /// changed in case, a name that is not UTF-8) and, where the store
    /// has folders, folders. gc refuses while `snapshots/` holds any: a
    /// snapshot file renamed or moved is no snapshot to any reader. The
    /// default: the names a listing gives that are no id.
    fn strays(&self, kind: FileKind) -> Result<Vec<Vec<u8>>> {
        Ok(not_ids(self.list(kind)?))
    }
    /// Pack files in another fan-out folder than their name's (moved by
    /// hand), which listings pass over: each as its place in the
    /// repository and the folder it belongs in. Stores without folders
    /// give none (the default).
    fn misplaced_packs(&self) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    /// Moves a pack [`Backend::misplaced_packs`] found at `place` into the
    /// folder it belongs in; false, leaving it, where a file of its name
    /// is there already. Only under an exclusive lock (`repair index`).
    /// Stores without folders have none to move (the default).
    fn place_pack(&self, place: &str) -> Result<bool> {
        let _ = place;
        Ok(false)
    }
    /// For a pack [`Backend::place_pack`] left at `place` as a file of its
    /// name is home: swaps the two, in one step, where the home file's
    /// content does not hash to its name and `place`'s does (a damaged
    /// copy home, an intact one out of its folder), so that the intact
    /// one is home and the other at `place`; false, changing nothing,
    /// where that is not so or the filesystem cannot swap. Reads both
    /// files whole (`repair index --read-data`). Only under an exclusive
    /// lock. Stores without folders have none (the default).
    fn exchange_pack(&self, place: &str) -> Result<bool> {
        let _ = place;
        Ok(false)
    }
    /// The folders of the layout [`Backend::create`] made that are gone
    /// while what the others hold needs them (`snapshots/` lost while
    /// packs hold data, say): listed, such a folder holds nothing, as if
    /// every file in it had been removed. A folder that held nothing may
    /// be left out by a copy, and is not counted. Stores without folders
    /// give none (the default).
    fn missing_folders(&self) -> Result<Vec<&'static str>> {
        Ok(Vec::new())
    }
    /// Size in bytes of a file.
    fn size(&self, kind: FileKind, name: &str) -> Result<u64>;
    /// All bytes of a file.
    fn read(&self, kind: FileKind, name: &str) -> Result<Data>;
    /// All bytes of a file whose size a listing just gave
    /// ([`Backend::list_sizes`]), for stores that would otherwise ask for
    /// it first (S3 asks before reading an index table, to decide whether
    /// to spool it to disk): one request fewer per file. A size that no
    /// longer matches is an error, as a file changed while read is. The
    /// default reads as [`Backend::read`] does.
    fn read_listed(&self, kind: FileKind, name: &str, size: u64) -> Result<Data> {
        let _ = size;
        self.read(kind, name)
    }
    /// `len` bytes at `offset`; fewer only if the file is shorter (an error).
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Stores a file atomically, and durably where [`FileKind::durable`].
    fn write(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()>;
    /// Removes a file; removing a missing file is not an error. The
    /// removal may not be durable until [`Backend::settle_removals`].
    fn remove(&self, kind: FileKind, name: &str) -> Result<()>;
    /// Makes the removals done so far durable, before anything whose
    /// safety depends on their being gone (gc removes the index tables it
    /// rewrote before the packs they named, `forget` its snapshots before
    /// gc removes their data): a crash on a filesystem that does not keep
    /// removals in order could otherwise keep a later removal and undo an
    /// earlier one. A local store fsyncs the folders it removed files
    /// from; a store whose removals are durable when they return (S3, in
    /// memory) has nothing to do.
    fn settle_removals(&self) -> Result<()>;
    /// `name` opened once for many [`RangeReader::read_at`] calls (a walk
    /// reading hundreds of trees from a few packs), where that saves work
    /// per read: opening a file per range costs more than reading a small
    /// one. `None` (the default) where every range is a request anyway;
    /// callers then use [`Backend::read_range`].
    fn open_ranges(&self, kind: FileKind, name: &str) -> Result<Option<Box<dyn RangeReader>>> {
        let _ = (kind, name);
        Ok(None)
    }
    /// Reads `range` of a file into memory ahead of a read that follows
    /// soon (the packs a restore or `verify --read-data` takes next, while
    /// its workers decode the ones before), and returns once it is there:
    /// call it from a thread of its own (see [`crate::prefetch`]). Only a
    /// hint: errors are ignored, and a store without a cache of its own to
    /// fill does nothing (the default). A local store reads the range into
    /// the page cache, so a cold pack arrives while the cores are busy
    /// instead of stalling the worker that maps it.
    fn prefetch(&self, kind: FileKind, name: &str, range: std::ops::Range<u64>) {
        let _ = (kind, name, range);
    }
    /// The local folder the repository's files are in, if they are in
    /// one (a backup leaves it out, a restore never writes in it: see
    /// `repo::own`).
    fn local_folder(&self) -> Option<&std::path::Path> {
        None
    }
    /// Whether fetching a few ranges of a pack is cheaper than reading it
    /// whole (true for remote stores, false where reads are memory maps).
    fn prefers_ranges(&self) -> bool {
        false
    }
    /// Tries the operations the store offers and describes, one line each,
    /// what it supports; called by `init` after [`Backend::create`].
    fn probe(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// A pack written piece by piece as its blobs are sealed, so it is
    /// never held whole in memory; `None` where packs are stored with
    /// [`Backend::write`] only (the default). A sink's writes are not
    /// retried, so only stores whose writes need no retry offer one.
    fn pack_sink(&self) -> Result<Option<Box<dyn FileSink>>> {
        Ok(None)
    }
    /// An index table written piece by piece (see [`crate::index::write_merged`]),
    /// so that merging large tables never holds one whole in memory;
    /// `None` where tables are stored with [`Backend::write`] only (the
    /// default). As for [`Backend::pack_sink`], only stores whose writes
    /// need no retry offer one.
    fn index_sink(&self) -> Result<Option<Box<dyn FileSink>>> {
        Ok(None)
    }
    /// Removes what writes that were interrupted left in the store, or
    /// with `dry_run` only counts it: temporary files (a kill between
    /// creating one and renaming it into place) last modified before
    /// `before`, and multipart uploads never completed (a kill between
    /// starting one and completing it) whatever their age, since only
    /// writers holding a lock start them and the caller excludes them
    /// (see [`Leftovers`]). gc calls it holding the exclusive lock (a dry
    /// run a shared one). What the store does not let it list or remove
    /// (a store without the request, credentials without the permission)
    /// is a warning in the result, not an error. Stores whose writes
    /// leave nothing behind keep the default, which finds nothing.
    fn remove_leftovers(&self, before: std::time::SystemTime, dry_run: bool) -> Result<Leftovers> {
        let _ = (before, dry_run);
        Ok(Leftovers::default())
    }
    /// Bytes the store can still take, where it has such a limit (a local
    /// filesystem's space free for unprivileged writers); `None` for
    /// stores without one, the default.
    fn free_space(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Files and folders the store can still make, where it has such a
    /// limit (a local filesystem's free inodes for unprivileged writers);
    /// `None` for stores without one, the default.
    fn free_inodes(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// The size of the space reserve (see [`crate::repo::space`]), where
    /// the store keeps one (0 while there is none); `None` for stores that
    /// keep none, the default.
    fn reserve(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Makes the space reserve `bytes` long, its blocks allocated (0
    /// removes it). Stores that keep none do nothing (the default).
    fn set_reserve(&self, bytes: u64) -> Result<()> {
        let _ = bytes;
        Ok(())
    }
}

/// A file kept open for positioned reads (see [`Backend::open_ranges`]).
pub trait RangeReader: Send + Sync {
    /// Fills `buf` from `offset`; a file too short for it is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

/// A pack or index file being written front to back (see
/// [`Backend::pack_sink`], [`Backend::index_sink`]).
/// Nothing is visible under any name until [`FileSink::commit`]; a sink
/// dropped uncommitted removes what it wrote.
pub trait FileSink: Send {
    /// Appends bytes to the pack.
    fn append(&mut self, bytes: &[u8]) -> Result<()>;
    /// Stores what was appended as file `name`, atomically and durably,
    /// as [`Backend::write`] would.
    fn commit(self: Box<Self>, name: &str) -> Result<()>;
}
