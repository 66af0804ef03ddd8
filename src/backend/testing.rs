//! A store that misbehaves on purpose, for unit tests: [`Hooked`] passes
//! every call to an inner backend except where its [`Hooks`] step in.

use crate::escape::Show;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Backend, Data, FileKind, FileSink};
use crate::error::Result;
use crate::repo::{InitOptions, KdfParams, Repository};

/// A new repository on `backend` with 1 MiB packs and a cheap key
/// derivation, so tests fill several packs with little data, quickly.
pub(crate) fn repo_of_small_packs(backend: Arc<dyn Backend>) -> Repository {
    let opts = InitOptions {
        pack_size: 1 << 20,
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            lanes: 1,
        },
        ..InitOptions::default()
    };
    Repository::init(backend, b"pw", &opts).expect("init a test repository")
}

/// A temporary folder on the disk the tests are built on (under
/// `target/`), where a file's pages can leave the page cache: on a tmpfs
/// (`/tmp` on some machines) they never do.
pub(crate) fn disk_tempdir() -> tempfile::TempDir {
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    tempfile::tempdir_in(target).unwrap()
}

/// Writes `bytes` to `path`, durably, and drops its pages from the page
/// cache; asserts they are gone (see [`crate::mmap::cached_pages`]).
pub(crate) fn write_cold(path: &std::path::Path, bytes: &[u8]) {
    use std::os::fd::AsRawFd;
    std::fs::write(path, bytes).unwrap();
    let file = std::fs::File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: a plain system call on an open descriptor.
    let dropped = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(dropped, 0);
    let pages = crate::mmap::cached_pages(&file, 0, bytes.len()).unwrap();
    assert!(!pages.contains(&true), "{} stayed cached", path.shown());
}

/// `len` bytes that look random, the same for the same `seed`.
pub(crate) fn noise(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Where a test's store departs from the backend it wraps. Each hook
/// returns `None` to let the call through.
pub(crate) trait Hooks: Send + Sync {
    /// Whether the store claims to be remote (see
    /// [`Backend::prefers_ranges`]); by default what the inner one says.
    fn prefers_ranges(&self, inner: &dyn Backend) -> bool {
        inner.prefers_ranges()
    }

    /// Sees a `list` (or `list_sizes`) before it goes through.
    fn list(&self, _kind: FileKind) {}

    /// Changes the names a `list` returns.
    fn listed(&self, _kind: FileKind, _names: &mut Vec<String>) {}

    /// Replaces the outcome of `size`.
    fn size(&self, _kind: FileKind, _name: &str) -> Option<Result<u64>> {
        None
    }

    /// Replaces the outcome of `read`.
    fn read(&self, _kind: FileKind, _name: &str) -> Option<Result<Data>> {
        None
    }

    /// Replaces the outcome of `read_range`.
    fn read_range(&self, _kind: FileKind, _name: &str) -> Option<Result<Vec<u8>>> {
        None
    }

    /// Replaces the outcome of `write`.
    fn write(&self, _kind: FileKind, _name: &str) -> Option<Result<()>> {
        None
    }

    /// Replaces the outcome of `remove`.
    fn remove(&self, _kind: FileKind, _name: &str) -> Option<Result<()>> {
        None
    }

    /// Replaces the outcome of `settle_removals`.
    fn settle_removals(&self) -> Option<Result<()>> {
        None
    }

    /// Sees a `prefetch` before it goes through.
    fn prefetch(&self, _kind: FileKind, _name: &str, _range: &std::ops::Range<u64>) {}

    /// The store's pack sink, given the inner backend's; by default none
    /// (the [`Backend`] default), so packs are written whole.
    fn pack_sink(&self, _inner: &dyn Backend) -> Result<Option<Box<dyn FileSink>>> {
        Ok(None)
    }
}

/// Hooks of a store that stops answering pack reads once told to (an
/// outage: each read fails as a transient error does once its retries
/// are spent), counting the reads it failed.
/// Told to refuse instead, it fails them as a local store does a file
/// this user may not read.
#[derive(Default)]
pub(crate) struct Outage {
    on: std::sync::atomic::AtomicBool,
    refuse: std::sync::atomic::AtomicBool,
    vanish: std::sync::atomic::AtomicBool,
    failed: std::sync::atomic::AtomicUsize,
    /// The packs it fails, where not all of them.
    only: std::sync::Mutex<Option<Vec<String>>>,
}

impl Outage {
    /// From now on every pack read fails.
    pub fn begin(&self) {
        self.on.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on every read of the packs named fails (none others).
    pub fn begin_for(&self, packs: Vec<String>) {
        *self.only.lock().unwrap() = Some(packs);
        self.begin();
    }

    /// Ends the outage: every read goes through again.
    pub fn end(&self) {
        self.on.store(false, std::sync::atomic::Ordering::SeqCst);
        self.vanish
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on every pack read is refused (no permission).
    pub fn begin_refusing(&self) {
        self.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        self.begin();
    }

    /// From now on every read of the packs named is refused (no
    /// permission), none others.
    pub fn begin_refusing_for(&self, packs: Vec<String>) {
        self.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        self.begin_for(packs);
    }

    /// From now on every read of the packs named finds no such pack,
    /// though the listing still names them (a store whose listing and
    /// reads disagree).
    pub fn begin_vanishing_for(&self, packs: Vec<String>) {
        self.vanish.store(true, std::sync::atomic::Ordering::SeqCst);
        self.begin_for(packs);
    }

    /// How many pack reads failed.
    pub fn failed(&self) -> usize {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn fail<T>(&self, kind: FileKind, name: &str) -> Option<Result<T>> {
        if kind != FileKind::Pack || !self.on.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        if let Some(only) = &*self.only.lock().unwrap() {
            if !only.iter().any(|p| p == name) {
                return None;
            }
        }
        self.failed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.vanish.load(std::sync::atomic::Ordering::SeqCst) {
            return Some(Err(crate::error::Error::NotFound(format!("pack {name}"))));
        }
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Some(Err(crate::error::Error::Io {
                context: format!("open packs/{name}"),
                source: std::io::Error::from_raw_os_error(libc::EACCES),
            }));
        }
        Some(Err(crate::error::Error::Backend {
            op: "read pack".into(),
            object: name.into(),
            endpoint: "http://127.0.0.1:1".into(),
            detail: "Connection refused (os error 111)".into(),
            transient: true,
        }))
    }
}

impl Hooks for Outage {
    fn read(&self, kind: FileKind, name: &str) -> Option<Result<Data>> {
        self.fail(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str) -> Option<Result<Vec<u8>>> {
        self.fail(kind, name)
    }
}

/// `inner` with `hooks` applied.
pub(crate) struct Hooked<B, H> {
    pub inner: B,
    pub hooks: H,
}

impl<B: Backend, H: Hooks> Backend for Hooked<B, H> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn exists(&self) -> Result<bool> {
        self.inner.exists()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        self.hooks.list(kind);
        let mut names = self.inner.list(kind)?;
        self.hooks.listed(kind, &mut names);
        Ok(names)
    }
    fn list_times(&self, kind: FileKind) -> Result<Vec<(String, Option<SystemTime>)>> {
        self.hooks.list(kind);
        self.inner.list_times(kind)
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.hooks
            .size(kind, name)
            .unwrap_or_else(|| self.inner.size(kind, name))
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Data> {
        self.hooks
            .read(kind, name)
            .unwrap_or_else(|| self.inner.read(kind, name))
    }
    fn read_listed(&self, kind: FileKind, name: &str, size: u64) -> Result<Data> {
        self.hooks
            .read(kind, name)
            .unwrap_or_else(|| self.inner.read_listed(kind, name, size))
    }
    fn read_range(&self, kind: FileKind, name: &str, at: u64, len: usize) -> Result<Vec<u8>> {
        self.hooks
            .read_range(kind, name)
            .unwrap_or_else(|| self.inner.read_range(kind, name, at, len))
    }
    fn write(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        self.hooks
            .write(kind, name)
            .unwrap_or_else(|| self.inner.write(kind, name, bytes))
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.hooks
            .remove(kind, name)
            .unwrap_or_else(|| self.inner.remove(kind, name))
    }
    fn settle_removals(&self) -> Result<()> {
        self.hooks
            .settle_removals()
            .unwrap_or_else(|| self.inner.settle_removals())
    }
    fn prefetch(&self, kind: FileKind, name: &str, range: std::ops::Range<u64>) {
        self.hooks.prefetch(kind, name, &range);
        self.inner.prefetch(kind, name, range)
    }
    fn pack_sink(&self) -> Result<Option<Box<dyn FileSink>>> {
        self.hooks.pack_sink(&self.inner)
    }
    fn prefers_ranges(&self) -> bool {
        self.hooks.prefers_ranges(&self.inner)
    }
}

/// Hooks recording, in order, the packs prefetched and the packs read
/// whole, each read slowed down as a cold disk would, so that a
/// prefetcher has time to run ahead of the readers.
#[derive(Default)]
pub(crate) struct ReadsAhead {
    /// `(name, Some(range))` for a prefetch, `(name, None)` for a read.
    pub events: std::sync::Mutex<Vec<(String, Option<std::ops::Range<u64>>)>>,
}

impl ReadsAhead {
    /// The packs read whole that were prefetched before their read.
    pub fn read_after_prefetch(&self) -> usize {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .enumerate()
            .filter(|(i, (name, what))| {
                what.is_none() && events[..*i].iter().any(|(n, w)| n == name && w.is_some())
            })
            .count()
    }

    /// Each prefetch, checked to lie within its pack (`size` gives a
    /// pack's length) and to be followed by a read of the same pack.
    pub fn check_prefetches(&self, size: impl Fn(&str) -> u64) {
        let events = self.events.lock().unwrap();
        for (i, (name, what)) in events.iter().enumerate() {
            let Some(range) = what else { continue };
            assert!(
                range.start < range.end && range.end <= size(name),
                "pack {name}: {range:?} of {} bytes",
                size(name)
            );
            assert!(
                events[i..].iter().any(|(n, w)| n == name && w.is_none()),
                "pack {name} prefetched, never read"
            );
        }
    }
}

impl Hooks for ReadsAhead {
    fn read(&self, kind: FileKind, name: &str) -> Option<Result<Data>> {
        if kind == FileKind::Pack {
            std::thread::sleep(std::time::Duration::from_millis(30));
            self.events.lock().unwrap().push((name.to_string(), None));
        }
        None
    }

    fn prefetch(&self, kind: FileKind, name: &str, range: &std::ops::Range<u64>) {
        if kind == FileKind::Pack {
            let event = (name.to_string(), Some(range.clone()));
            self.events.lock().unwrap().push(event);
        }
    }
}

/// Hooks doing something once, as the store is first asked to list files
/// of one kind, before that listing is taken: another process's work
/// (a backup) landing between two steps of the command under test.
pub(crate) struct OnFirstList {
    kind: FileKind,
    then: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl OnFirstList {
    /// Hooks that will call `then` at the first listing of `kind`.
    pub fn new(kind: FileKind) -> OnFirstList {
        OnFirstList {
            kind,
            then: std::sync::Mutex::new(None),
        }
    }

    /// Sets what happens (the store it works on is made after the hooks).
    pub fn set(&self, then: impl FnOnce() + Send + 'static) {
        *self.then.lock().unwrap() = Some(Box::new(then));
    }

    /// Whether it happened.
    pub fn done(&self) -> bool {
        self.then.lock().unwrap().is_none()
    }
}

impl Hooks for OnFirstList {
    fn list(&self, kind: FileKind) {
        if kind == self.kind {
            // Taken out first: what it does may list the same kind.
            let then = self.then.lock().unwrap().take();
            if let Some(then) = then {
                then();
            }
        }
    }
}

/// A repository on a store whose first listing of `kind` runs a backup
/// "from elsewhere" (see [`backup_from_elsewhere`]), with one backup
/// already in it: the store's hooks (to check the backup ran), the store,
/// and the backed-up folder, which the racing backup finds with a new
/// file in a new folder.
pub(crate) fn racing_backup_on_first_list(
    kind: FileKind,
) -> (
    Arc<Hooked<crate::backend::mem::MemBackend, OnFirstList>>,
    Arc<dyn Backend>,
    tempfile::TempDir,
) {
    let store = Arc::new(Hooked {
        inner: crate::backend::mem::MemBackend::default(),
        hooks: OnFirstList::new(kind),
    });
    let backend: Arc<dyn Backend> = store.clone();
    repo_of_small_packs(backend.clone());
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a"), noise(b"a", 300_000)).unwrap();
    backup_from_elsewhere(backend.clone(), src.path());
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/b"), noise(b"b", 300_000)).unwrap();
    let (store_of_backup, path) = (Arc::downgrade(&backend), src.path().to_path_buf());
    store.hooks.set(move || {
        backup_from_elsewhere(store_of_backup.upgrade().unwrap(), &path);
    });
    (store, backend, src)
}

/// A backup of `src` into the repository on `backend`, as another process
/// would make it: through a `Repository` of its own. Returns the
/// snapshot's id.
pub(crate) fn backup_from_elsewhere(
    backend: Arc<dyn Backend>,
    src: &std::path::Path,
) -> crate::id::SnapshotId {
    let repo = Repository::open(backend, b"pw").expect("open the test repository");
    let opts = crate::archiver::BackupOptions {
        paths: vec![src.to_path_buf()],
        ..Default::default()
    };
    crate::archiver::backup(&repo, &opts, &mut std::io::empty(), &|_| ())
        .expect("a backup")
        .id
}
