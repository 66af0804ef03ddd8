//! A local cache of a remote repository's metadata.
//!
//! The cache lives in the user's cache directory, one folder per
//! repository id (`$XDG_CACHE_HOME/cairn/<repo id>/`, or under
//! `CAIRN_CACHE_DIR`), and holds copies of index tables, snapshot
//! manifests and tree packs: everything a backup needs to find its parent
//! and deduplicate, so a backup that changes nothing downloads no pack at
//! all. Data packs are never cached.
//!
//! Nothing in the cache is trusted blindly:
//!
//! - every stored file is named by the BLAKE3 hash of its bytes, so a
//!   cached copy is hashed on first use in a process and compared with its
//!   name; a damaged copy is deleted and fetched again;
//! - which files exist is always asked of the store (listing is never
//!   cached), and a listing drops cached copies of files that are gone, so
//!   a stale cache is pruned rather than used; but for a tree pack the
//!   index still names ([`Cache::retain_packs`]): the store lost it, and
//!   the copy may be the one intact copy left; and a copy of a tree pack
//!   the index no longer names is set aside for 30 days, not deleted, as
//!   a repair elsewhere may have dropped it for its damage;
//! - a cached tree pack is served only once the store has confirmed, in
//!   this process, that the pack is still there (see [`Cache::tree_pack`]);
//! - `verify` and `repair` read the store itself, never through the
//!   cache; they look in it only for intact copies of packs the store has
//!   lost or damaged ([`Cache::existing`]): `verify` says where one is,
//!   and `repair index` puts it back.
//!
//! Cache files are written to a temporary name and renamed, so a crash
//! leaves either no copy or a whole one (and a torn copy would fail its
//! hash anyway). The cache can be deleted at any time.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{Backend, Data, FileKind};
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name, PackId};
use crate::mmap::Map;

/// Where copies of tree packs the store no longer lists are set aside.
const GONE: &str = "packs-gone";

/// How long a copy set aside stays: a damaged pack another host's repair
/// removed is found again by `verify` or `repair index` run here within
/// that time.
pub const GONE_KEPT: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// The cache folder of one repository. See the module docs.
pub struct Cache {
    dir: PathBuf,
    /// Files already hashed in this process, mapped.
    verified: Mutex<HashMap<(FileKind, String), Arc<Map>>>,
    /// Tree packs this process has seen in the store (fetched, or their
    /// size asked), so their cached copies are served without asking again.
    confirmed: Mutex<HashSet<String>>,
    /// Tree packs the store holds at another size than their cached
    /// copies (cut short there), or has lost: read from the store, the
    /// copy kept, and said once.
    unlike: Mutex<HashSet<String>>,
}

impl Cache {
    /// The default cache root: `CAIRN_CACHE_DIR`, else `<user cache>/cairn`.
    pub fn default_root() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("CAIRN_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        dirs::cache_dir().map(|d| d.join("cairn"))
    }

    /// The cache of repository `repo_id` under `root`, created if needed.
    pub fn open(root: &Path, repo_id: &[u8; 32]) -> Result<Cache> {
        let dir = root.join(hex::encode(repo_id));
        // Private: it holds (encrypted) metadata and the index's keyed ids.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::path("create cache folder", &dir, e))?;
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n# cairn's cache; safe to delete\n",
            );
        }
        Ok(Cache {
            dir,
            verified: Mutex::new(HashMap::new()),
            confirmed: Mutex::new(HashSet::new()),
            unlike: Mutex::new(HashSet::new()),
        })
    }

    /// The cache of repository `repo_id` under `root`, if this host has
    /// one; none is made. For `verify` and `repair`, which read the store
    /// itself and look here only for intact copies of packs the store has
    /// lost or damaged.
    pub fn existing(root: &Path, repo_id: &[u8; 32]) -> Option<Cache> {
        if !root.join(hex::encode(repo_id)).is_dir() {
            return None;
        }
        Cache::open(root, repo_id).ok()
    }

    /// The repository's cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        match kind {
            FileKind::Pack => self
                .dir
                .join("packs")
                .join(name.get(..2).unwrap_or("xx"))
                .join(name),
            _ => self.dir.join(kind.dir()).join(name),
        }
    }

    fn cacheable(kind: FileKind, name: &str) -> bool {
        matches!(kind, FileKind::Index | FileKind::Snapshot | FileKind::Pack) && is_hex_name(name)
    }

    /// Maps a cached copy; an index table's file is kept open, as a
    /// local table's is (see `IndexTable::find`).
    fn map(kind: FileKind, path: &Path) -> Result<Map> {
        match kind {
            FileKind::Index => Map::open_keeping(path),
            _ => Map::open(path),
        }
    }

    /// The cached copy of a file, if there is one whose bytes hash to its
    /// name. A damaged copy is removed.
    pub fn get(&self, kind: FileKind, name: &str) -> Option<Arc<Map>> {
        if !Self::cacheable(kind, name) {
            return None;
        }
        let key = (kind, name.to_string());
        if let Some(m) = self.verified.lock().ok()?.get(&key) {
            return Some(m.clone());
        }
        let path = self.path(kind, name);
        let map = Self::map(kind, &path).ok()?;
        if hex::encode(file_hash(&map)) != name {
            drop(map);
            let _ = fs::remove_file(&path);
            return None;
        }
        let map = Arc::new(map);
        if let Ok(mut v) = self.verified.lock() {
            v.insert(key, map.clone());
        }
        Some(map)
    }

    /// Stores a copy of a file just read from or written to the store
    /// (so a pack put here counts as confirmed present for
    /// [`Cache::tree_pack`]); failures only cost a later download.
    pub fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) {
        if !Self::cacheable(kind, name) || hex::encode(file_hash(bytes)) != name {
            return;
        }
        if kind == FileKind::Pack {
            self.confirm(name);
        }
        let path = self.path(kind, name);
        let Some(dir) = path.parent() else { return };
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        let tmp = dir.join(format!(
            ".tmp-{}",
            hex::encode(crate::crypto::random_bytes::<8>())
        ));
        let ok = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if ok.is_err() {
            let _ = fs::remove_file(&tmp);
            return;
        }
        // Hashed above: served by `get` without hashing it again.
        if let (Ok(map), Ok(mut v)) = (Self::map(kind, &path), self.verified.lock()) {
            v.insert((kind, name.to_string()), Arc::new(map));
        }
    }

    /// Drops a cached copy.
    pub fn remove(&self, kind: FileKind, name: &str) {
        self.remove_from_memory(kind, name);
        if Self::cacheable(kind, name) {
            let _ = fs::remove_file(self.path(kind, name));
        }
    }

    /// The tree packs this cache holds copies of, with their copies'
    /// sizes (not hashed: [`Cache::intact_pack`] checks one).
    pub fn pack_copies(&self) -> Vec<(String, u64)> {
        let Ok(folders) = fs::read_dir(self.dir.join(FileKind::Pack.dir())) else {
            return Vec::new();
        };
        let mut copies = Vec::new();
        for folder in folders.flatten() {
            let Ok(rd) = fs::read_dir(folder.path()) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                match e.metadata() {
                    Ok(m) if m.is_file() && is_hex_name(&name) => copies.push((name, m.len())),
                    _ => {}
                }
            }
        }
        copies.sort();
        copies
    }

    /// The cached copy of pack `name`, if its bytes hash to its name, as
    /// the store's pack did when written: the pack intact, whatever the
    /// store holds now.
    pub fn intact_pack(&self, name: &str) -> Option<Arc<Map>> {
        self.get(FileKind::Pack, name)
    }

    /// Where the copy of file `name` of `kind` is, for messages.
    pub fn copy_path(&self, kind: FileKind, name: &str) -> PathBuf {
        self.path(kind, name)
    }

    /// Sets aside cached copies of tree packs the store no longer lists,
    /// but for those `named` (by the index): a pack the index names that
    /// the store lacks was lost, not removed by a gc (which writes the
    /// index without a pack before it removes it), and its copy here may
    /// be the one intact copy left, for `repair index` to put back. Until
    /// December 2026 the next backup's listing deleted it. Those set aside
    /// go to `packs-gone/` for [`GONE_KEPT`] (see [`Cache::gone_copies`]):
    /// a repair on another host drops a damaged pack from the index as a
    /// gc drops one it emptied, and only a walk of the snapshots' trees
    /// tells the two apart.
    pub fn retain_packs(&self, listed: &[String], named: &dyn Fn(&str) -> bool) {
        let keep: HashSet<&str> = listed.iter().map(String::as_str).collect();
        let Ok(folders) = fs::read_dir(self.dir.join(FileKind::Pack.dir())) else {
            return;
        };
        for folder in folders.flatten() {
            let Ok(rd) = fs::read_dir(folder.path()) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if keep.contains(name.as_str()) {
                    continue;
                }
                match is_hex_name(&name) {
                    true if named(&name) => {}
                    true => self.set_aside(&name, &e.path()),
                    // A copy's leftover temporary file (a killed run's).
                    false => {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        self.expire_gone();
    }

    /// Moves the copy of pack `name` at `path` to `packs-gone/`, dated now.
    fn set_aside(&self, name: &str, path: &Path) {
        self.remove_from_memory(FileKind::Pack, name);
        let gone = self.dir.join(GONE);
        let to = gone.join(name);
        if fs::create_dir_all(&gone).is_ok() && fs::rename(path, &to).is_ok() {
            let _ = fs::File::options()
                .write(true)
                .open(&to)
                .and_then(|f| f.set_modified(SystemTime::now()));
        } else {
            let _ = fs::remove_file(path);
        }
    }

    /// Removes copies set aside more than [`GONE_KEPT`] ago.
    fn expire_gone(&self) {
        let Ok(rd) = fs::read_dir(self.dir.join(GONE)) else {
            return;
        };
        for e in rd.flatten() {
            let expired = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > GONE_KEPT);
            if expired {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The intact copies (their bytes hash to their names) of tree packs
    /// here and set aside by [`Cache::retain_packs`], but for those of
    /// packs the index names that the store does not list (`listed` and
    /// `named` say which), which [`Cache::mending_copies`] finds: for the
    /// search of trees the snapshots use that the store lacks (see
    /// [`crate::repo::rescue`]). A pack a gc emptied is among them, as one
    /// a repair dropped for its damage, or a pack still there whose
    /// damaged tree a repair left out of the index: only the trees the
    /// snapshots use tell them apart.
    pub fn tree_copies(
        &self,
        listed: &dyn Fn(&PackId) -> bool,
        named: &dyn Fn(&PackId) -> bool,
    ) -> Vec<(PackId, Arc<Map>, PathBuf)> {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let pruned = fs::read_dir(self.dir.join(GONE))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .map(|name| (self.dir.join(GONE).join(&name), name));
        let kept = self
            .pack_copies()
            .into_iter()
            .map(|(name, _)| (self.path(FileKind::Pack, &name), name));
        for (path, name) in kept.chain(pruned) {
            let Ok(pack) = PackId::from_hex(&name) else {
                continue;
            };
            if (!listed(&pack) && named(&pack)) || !seen.insert(pack) {
                continue;
            }
            let Ok(map) = Map::open(&path) else {
                continue;
            };
            if file_hash(&map) == pack.0 {
                found.push((pack, Arc::new(map), path));
            }
        }
        found
    }

    /// Forgets what this process knows of a cached copy.
    fn remove_from_memory(&self, kind: FileKind, name: &str) {
        if let Ok(mut v) = self.verified.lock() {
            v.remove(&(kind, name.to_string()));
        }
        if let (FileKind::Pack, Ok(mut c)) = (kind, self.confirmed.lock()) {
            c.remove(name);
        }
    }

    /// Drops cached copies of `kind` whose names the store no longer lists.
    /// Tree packs are pruned by [`Cache::retain_packs`] instead.
    pub fn retain(&self, kind: FileKind, listed: &[String]) {
        let keep: HashSet<&str> = listed.iter().map(String::as_str).collect();
        let Ok(rd) = fs::read_dir(self.dir.join(kind.dir())) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(name.as_str()) {
                self.remove(kind, &name);
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Keeps an index table an interrupted run could not upload, for the
    /// next run to upload once its packs are confirmed present.
    pub fn put_pending(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.dir.join("pending");
        fs::create_dir_all(&dir).map_err(|e| Error::path("create cache folder", &dir, e))?;
        let path = dir.join(name);
        fs::write(&path, bytes).map_err(|e| Error::path("write", &path, e))
    }

    /// Index tables kept by [`Cache::put_pending`], with their names.
    pub fn pending(&self) -> Vec<(String, Vec<u8>)> {
        let Ok(rd) = fs::read_dir(self.dir.join("pending")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let bytes = fs::read(e.path()).ok()?;
                is_hex_name(&name).then_some((name, bytes))
            })
            .collect()
    }

    /// Forgets a pending index table.
    pub fn remove_pending(&self, name: &str) {
        let _ = fs::remove_file(self.dir.join("pending").join(name));
    }

    /// A tree pack, from the cache or else fetched with `fetch` and cached.
    ///
    /// A cached copy proves the pack once existed, not that it still does:
    /// the first time a process serves one, `size` asks the store (no
    /// download). If the store says the pack is gone, its not-found error
    /// is returned, just as without a cache; if the store's pack is not
    /// the copy's size (cut short there), the store's pack is read
    /// instead, neither cached nor replacing the copy. So nothing succeeds
    /// here that could not restore anywhere else (until December 2026 a
    /// backup took the trees of a pack cut short in the bucket from the
    /// cache, and wrote a snapshot no other host could restore). Either
    /// way the copy, named by its bytes' hash and so intact, stays (the
    /// index names the pack, or it would not be read), and a warning says
    /// where it is and that `cairn repair index` puts it back. Damage
    /// within a pack of the right size only a read of the store's finds
    /// (`verify`).
    pub fn tree_pack(
        &self,
        name: &str,
        size: impl FnOnce() -> Result<u64>,
        fetch: impl FnOnce() -> Result<Data>,
    ) -> Result<CachedData> {
        if let Some(m) = self.get(FileKind::Pack, name) {
            let confirmed = self.confirmed.lock().is_ok_and(|c| c.contains(name));
            if confirmed {
                return Ok(CachedData::Map(m));
            }
            if self.unlike.lock().is_ok_and(|u| u.contains(name)) {
                return fetch().map(CachedData::Data);
            }
            match size() {
                Ok(n) if n == m.len() as u64 => {
                    self.confirm(name);
                    return Ok(CachedData::Map(m));
                }
                Ok(n) => {
                    let how =
                        format!("is {n} bytes in the repository (it is read from there meanwhile)");
                    self.say_copy(name, &how, m.len());
                    return fetch().map(CachedData::Data);
                }
                Err(e) => {
                    if e.is_not_found() {
                        self.say_copy(name, "is missing from the repository", m.len());
                    }
                    return Err(e);
                }
            }
        }
        let data = fetch()?;
        self.put(FileKind::Pack, name, &data);
        Ok(CachedData::Data(data))
    }

    /// Says, once a process, that the store's pack `name` is not as its
    /// intact copy here (`how`): where the copy is, and what puts it back.
    fn say_copy(&self, name: &str, how: &str, len: usize) {
        let first = self.unlike.lock().is_ok_and(|mut u| u.insert(name.into()));
        if first {
            crate::eprint_line(format_args!(
                "warning: pack {} {how}, but this host's cache holds an intact copy of it \
                 ({len} bytes, named by its hash) at {}: `cairn repair index`, run on this \
                 host, puts it back into the repository",
                &name[..8.min(name.len())],
                self.path(FileKind::Pack, name).display(),
            ));
        }
    }

    fn confirm(&self, name: &str) {
        if let Ok(mut c) = self.confirmed.lock() {
            c.insert(name.to_string());
        }
    }
}

/// What is wrong with the store's pack that an intact cached copy of it
/// (`copy_len` bytes) mends, if anything, with the repair that puts the
/// copy back: missing while the index names it (`named`; one no table
/// names was removed by a gc), listed at another size (`listed`), or read
/// and found not to hash to its name (`unlike_name`; only a repair that
/// reads the pack finds that, unless its header is what is damaged). For
/// `verify`, which says so, and `repair index`, which puts the copy back.
pub fn copy_mends(
    listed: Option<u64>,
    copy_len: u64,
    named: bool,
    unlike_name: bool,
) -> Option<(String, &'static str)> {
    const REPAIR: &str = "`cairn repair index`";
    match listed {
        None if named => Some(("missing from the repository".into(), REPAIR)),
        None => None,
        Some(size) if size != copy_len => Some((
            format!("{size} bytes in the repository where its intact copy has {copy_len}"),
            REPAIR,
        )),
        Some(_) if unlike_name => Some((
            "damaged in the repository (its bytes do not hash to its name)".into(),
            "`cairn repair index --read-data`",
        )),
        Some(_) => None,
    }
}

/// An intact copy in a host's cache of a pack of trees the store lost or
/// damaged (see [`Cache::mending_copies`]).
pub struct MendingCopy {
    /// The pack.
    pub pack: PackId,
    /// What is wrong with the store's.
    pub why: String,
    /// The repair that puts the copy back.
    pub repair: &'static str,
    /// The copy's bytes, hashed to the pack's name.
    pub copy: Arc<Map>,
}

impl Cache {
    /// The intact copies here of tree packs the store lost or damaged:
    /// `listed` gives the store's size of a pack it lists, `named` whether
    /// the index names a pack, `unlike_name` whether a read found the
    /// store's bytes not to hash to the pack's name (see [`copy_mends`]).
    pub fn mending_copies(
        &self,
        listed: &dyn Fn(&PackId) -> Option<u64>,
        named: &dyn Fn(&PackId) -> bool,
        unlike_name: &dyn Fn(&PackId) -> bool,
    ) -> Vec<MendingCopy> {
        let mut found = Vec::new();
        for (name, len) in self.pack_copies() {
            let Ok(pack) = PackId::from_hex(&name) else {
                continue;
            };
            let Some((why, repair)) =
                copy_mends(listed(&pack), len, named(&pack), unlike_name(&pack))
            else {
                continue;
            };
            if let Some(copy) = self.intact_pack(&name) {
                found.push(MendingCopy {
                    pack,
                    why,
                    repair,
                    copy,
                });
            }
        }
        found
    }
}

/// Bytes from the cache (shared) or freshly fetched.
pub enum CachedData {
    /// A verified cached copy.
    Map(Arc<Map>),
    /// Bytes just read from the store.
    Data(Data),
}

impl std::ops::Deref for CachedData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            CachedData::Map(m) => m,
            CachedData::Data(d) => d,
        }
    }
}

/// A backend whose index tables and snapshots are read through a [`Cache`].
/// Packs pass straight through (tree packs are cached by the repository,
/// which knows their kind).
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    cache: Arc<Cache>,
}

impl CachedBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>, cache: Arc<Cache>) -> CachedBackend {
        CachedBackend { inner, cache }
    }

    fn uses_cache(kind: FileKind) -> bool {
        matches!(kind, FileKind::Index | FileKind::Snapshot)
    }

    /// A file of a cached kind from the cache, or fetched with `fetch` and
    /// put in the cache; other kinds straight from `fetch`.
    fn read_through(
        &self,
        kind: FileKind,
        name: &str,
        fetch: impl FnOnce() -> Result<Data>,
    ) -> Result<Data> {
        if !Self::uses_cache(kind) {
            return fetch();
        }
        if let Some(m) = self.cache.get(kind, name) {
            return Ok(Data::Shared(m));
        }
        let data = fetch()?;
        self.cache.put(kind, name, &data);
        // Served from the cache's map from now on (verified as it was
        // put), so a large index table does not stay in memory for as
        // long as it is used.
        if let Some(m) = self.cache.get(kind, name) {
            return Ok(Data::Shared(m));
        }
        Ok(data)
    }
}

impl Backend for CachedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn exists(&self) -> Result<bool> {
        self.inner.exists()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    // Tree packs are pruned by the repository, which knows which of them
    // the index names (`Repository::pack_sizes`).
    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        let names = self.inner.list(kind)?;
        if Self::uses_cache(kind) {
            self.cache.retain(kind, &names);
        }
        Ok(names)
    }
    fn list_sizes(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let listed = self.inner.list_sizes(kind)?;
        if Self::uses_cache(kind) {
            let names: Vec<String> = listed.iter().map(|(n, _)| n.clone()).collect();
            self.cache.retain(kind, &names);
        }
        Ok(listed)
    }
    fn misplaced_packs(&self) -> Result<Vec<(String, String)>> {
        self.inner.misplaced_packs()
    }
    fn place_pack(&self, place: &str) -> Result<bool> {
        self.inner.place_pack(place)
    }
    fn exchange_pack(&self, place: &str) -> Result<bool> {
        self.inner.exchange_pack(place)
    }
    fn missing_folders(&self) -> Result<Vec<&'static str>> {
        self.inner.missing_folders()
    }
    fn strays(&self, kind: FileKind) -> Result<Vec<Vec<u8>>> {
        self.inner.strays(kind)
    }
    fn not_files(&self, kind: FileKind) -> Result<Vec<(String, &'static str)>> {
        self.inner.not_files(kind)
    }
    fn list_times(&self, kind: FileKind) -> Result<Vec<(String, Option<SystemTime>)>> {
        self.inner.list_times(kind)
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Data> {
        self.read_through(kind, name, || self.inner.read(kind, name))
    }
    fn read_listed(&self, kind: FileKind, name: &str, size: u64) -> Result<Data> {
        self.read_through(kind, name, || self.inner.read_listed(kind, name, size))
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.inner.read_range(kind, name, offset, len)
    }
    fn write(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        self.inner.write(kind, name, bytes)?;
        if Self::uses_cache(kind) {
            self.cache.put(kind, name, bytes);
        }
        Ok(())
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.remove(kind, name)?;
        self.cache.remove(kind, name);
        Ok(())
    }
    fn settle_removals(&self) -> Result<()> {
        self.inner.settle_removals()
    }
    fn remove_leftovers(
        &self,
        before: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<super::Leftovers> {
        self.inner.remove_leftovers(before, dry_run)
    }
    fn prefetch(&self, kind: FileKind, name: &str, range: std::ops::Range<u64>) {
        self.inner.prefetch(kind, name, range)
    }
    fn prefers_ranges(&self) -> bool {
        self.inner.prefers_ranges()
    }
    fn local_folder(&self) -> Option<&std::path::Path> {
        self.inner.local_folder()
    }
    fn free_space(&self) -> Result<Option<u64>> {
        self.inner.free_space()
    }
    fn free_inodes(&self) -> Result<Option<u64>> {
        self.inner.free_inodes()
    }
    fn reserve(&self) -> Result<Option<u64>> {
        self.inner.reserve()
    }
    fn set_reserve(&self, bytes: u64) -> Result<()> {
        self.inner.set_reserve(bytes)
    }
    fn probe(&self) -> Result<Vec<String>> {
        self.inner.probe()
    }
    /// Only data packs are streamed (see [`crate::writer`]), and those are
    /// never cached, so the inner store's sink serves as it is.
    fn pack_sink(&self) -> Result<Option<Box<dyn super::FileSink>>> {
        self.inner.pack_sink()
    }
}
