//! The local directory backend: the embedded default.
//!
//! Layout: `config`, `keys/<id>`, `packs/<first 2 hex>/<id>`, `index/<id>`,
//! `snapshots/<id>`, `locks/<id>`, and the space reserve `reserve` (see
//! [`crate::repo::space`]). Writes go to `.tmp-<random>` in the
//! destination folder, are fsynced, renamed into place, and the folder is
//! fsynced, so a crash leaves either no file or the whole file under its
//! name. Leftover `.tmp-*` files are ignored by `list`. Packs and index
//! tables streamed piece by piece go through the sinks of `sink`.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Backend, Data, FileKind, RangeReader};
use crate::directio;
use crate::error::{Error, Result};
use crate::mmap::Map;

mod sink;

use sink::{LocalSink, PlainSink};

/// A repository in a local directory.
pub struct LocalBackend {
    root: PathBuf,
    /// The pack folders that held temporary files when packs were last
    /// listed with their sizes (as gc's plan does), so that
    /// [`Backend::remove_leftovers`] after it need not list every pack
    /// folder again; `None` until such a listing.
    tmp_pack_dirs: std::sync::Mutex<Option<Vec<PathBuf>>>,
    /// The folders files were removed from since the last
    /// [`Backend::settle_removals`].
    removed_from: std::sync::Mutex<std::collections::BTreeSet<PathBuf>>,
}

const DIRS: [FileKind; 5] = [
    FileKind::Key,
    FileKind::Pack,
    FileKind::Index,
    FileKind::Snapshot,
    FileKind::Lock,
];

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend {
            root: root.into(),
            tmp_pack_dirs: std::sync::Mutex::new(None),
            removed_from: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    /// The repository folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a file.
    pub fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        file_path(&self.root, kind, name)
    }

    fn not_found(&self, kind: FileKind, name: &str) -> Error {
        match kind {
            FileKind::Config => Error::NotFound(format!("{}", self.path(kind, name).display())),
            _ => Error::NotFound(format!("{} {name}", kind_name(kind))),
        }
    }

    fn map_err(&self, op: &str, kind: FileKind, name: &str, e: std::io::Error) -> Error {
        if e.kind() == ErrorKind::NotFound {
            self.not_found(kind, name)
        } else {
            Error::path(op, &self.path(kind, name), e)
        }
    }
}

/// The space reserve's file name, at the repository's root (see
/// [`crate::repo::space`]).
pub const RESERVE: &str = "reserve";

/// Fails with "no space left" where writing `adding` more bytes to
/// `path` would overfill the stand-in filesystem of
/// [`crate::fault::fs_size`]; does nothing without one.
fn room_for(root: &Path, adding: u64, path: &Path) -> Result<()> {
    match crate::fault::fs_size() {
        Some(size) if used_bytes(root).saturating_add(adding) > size => Err(Error::path(
            "write",
            path,
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        )),
        _ => Ok(()),
    }
}

/// The bytes the files under `dir` hold (their lengths, summed).
fn used_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => used_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// The singular noun for a file kind, for messages.
pub fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Config => "config",
        FileKind::Key => "key",
        FileKind::Pack => "pack",
        FileKind::Index => "index",
        FileKind::Snapshot => "snapshot",
        FileKind::Lock => "lock",
    }
}

/// The path of file `name` of `kind` in the repository at `root`.
fn file_path(root: &Path, kind: FileKind, name: &str) -> PathBuf {
    match kind {
        FileKind::Config => root.join("config"),
        FileKind::Pack => root
            .join("packs")
            .join(name.get(..2).unwrap_or("xx"))
            .join(name),
        _ => root.join(kind.dir()).join(name),
    }
}

/// Makes the folder of a kind of file (`locks/`, `index/`, …) if it is
/// missing, as in a repository copied by a tool that drops empty folders
/// (git, an object-store sync); never the repository's own folder, so
/// nothing is written where a repository was removed. True if it was made
/// (the caller syncs the repository folder).
fn ensure_kind_dir(dir: &Path) -> Result<bool> {
    if dir.exists() {
        return Ok(false);
    }
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::path("create folder", dir, e)),
    }
}

/// Makes a pack's folder (`packs/<xx>`) if it is missing, and `packs/`
/// too, syncing the repository folder if that was made; true if the
/// pack's folder was made (the caller syncs `packs/`).
fn ensure_pack_dir(dir: &Path) -> Result<bool> {
    let packs = dir.parent().expect("a pack's folder is in packs/");
    if ensure_kind_dir(packs)? {
        sync_dir(packs.parent().expect("packs/ is in the repository"))?;
    }
    ensure_kind_dir(dir)
}

/// A fresh temporary name in `dir` (`.tmp-<random>`, which `list`
/// ignores and gc removes once abandoned).
fn tmp_path(dir: &Path) -> PathBuf {
    dir.join(format!(
        ".tmp-{}",
        hex::encode(crate::crypto::random_bytes::<8>())
    ))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::path("fsync folder", dir, e))
}

/// A repository file open for positioned reads, named in errors.
struct OpenFile {
    file: File,
    path: PathBuf,
    what: String,
}

impl RangeReader for OpenFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(Error::corrupt(
                        &self.what,
                        format!("truncated: wanted {} bytes at offset {offset}", buf.len()),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::path("read", &self.path, e)),
            }
        }
        Ok(())
    }
}

impl LocalBackend {
    fn open_file(&self, kind: FileKind, name: &str) -> Result<OpenFile> {
        let path = self.path(kind, name);
        let file = File::open(&path).map_err(|e| self.map_err("open", kind, name, e))?;
        Ok(OpenFile {
            file,
            path,
            what: format!("{} {name}", kind_name(kind)),
        })
    }

    /// The folders holding files of `kind`: for packs, the `packs/<xx>`
    /// folders that exist.
    fn dirs(&self, kind: FileKind) -> Result<Vec<PathBuf>> {
        let dir = self.root.join(kind.dir());
        if kind != FileKind::Pack {
            return Ok(vec![dir]);
        }
        Ok(read_names(&dir)?
            .into_iter()
            .filter(|n| n.len() == 2)
            .map(|n| dir.join(n))
            .collect())
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn exists(&self) -> Result<bool> {
        let config = self.path(FileKind::Config, "");
        match fs::metadata(&config) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::path("stat", &config, e)),
        }
    }

    fn create(&self) -> Result<()> {
        for kind in DIRS {
            let dir = self.root.join(kind.dir());
            fs::create_dir_all(&dir).map_err(|e| Error::path("create folder", &dir, e))?;
        }
        sync_dir(&self.root)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for d in self.dirs(kind)? {
            out.extend(read_names(&d)?.into_iter().filter(|n| !n.starts_with('.')));
        }
        Ok(out)
    }

    fn list_sizes(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut tmp_dirs = Vec::new();
        for d in self.dirs(kind)? {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::path("list", &d, e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| Error::path("list", &d, e))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') {
                    if name.starts_with(".tmp-") && tmp_dirs.last() != Some(&d) {
                        tmp_dirs.push(d.clone());
                    }
                    continue;
                }
                // Stats relative to the open folder, not by whole path;
                // a symlink (packs moved elsewhere) is followed, as
                // reads follow it.
                let meta = match entry.metadata() {
                    Ok(m) if m.file_type().is_symlink() => fs::metadata(entry.path()),
                    other => other,
                };
                match meta {
                    Ok(m) => out.push((name, m.len())),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::path("stat", &entry.path(), e)),
                }
            }
        }
        if kind == FileKind::Pack {
            if let Ok(mut seen) = self.tmp_pack_dirs.lock() {
                *seen = Some(tmp_dirs);
            }
        }
        Ok(out)
    }

    fn list_times(&self, kind: FileKind) -> Result<Vec<(String, Option<SystemTime>)>> {
        let mut out = Vec::new();
        for name in self.list(kind)? {
            match fs::metadata(self.path(kind, &name)) {
                Ok(m) => out.push((name, m.modified().ok())),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(self.map_err("stat", kind, &name, e)),
            }
        }
        Ok(out)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        fs::metadata(self.path(kind, name))
            .map(|m| m.len())
            .map_err(|e| self.map_err("stat", kind, name, e))
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Data> {
        let path = self.path(kind, name);
        match kind {
            FileKind::Pack | FileKind::Index => {
                let file = File::open(&path).map_err(|e| self.map_err("open", kind, name, e))?;
                // A table's file is kept open: lookups read its entries
                // with `pread` until they are many (see `IndexTable::find`).
                let map = match kind {
                    FileKind::Index => Map::keeping(file, &path)?,
                    _ => Map::file(&file, &path)?,
                };
                Ok(Data::Mapped(map))
            }
            _ => fs::read(&path)
                .map(Data::Owned)
                .map_err(|e| self.map_err("read", kind, name, e)),
        }
    }

    fn prefetch(&self, kind: FileKind, name: &str, range: std::ops::Range<u64>) {
        if let Ok(file) = File::open(self.path(kind, name)) {
            crate::mmap::read_ahead(&file, range);
        }
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let file = self.open_file(kind, name)?;
        let mut buf = vec![0u8; len];
        file.read_at(offset, &mut buf)?;
        Ok(buf)
    }

    fn open_ranges(&self, kind: FileKind, name: &str) -> Result<Option<Box<dyn RangeReader>>> {
        Ok(Some(Box::new(self.open_file(kind, name)?)))
    }

    fn write(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(kind, name);
        let dir = path.parent().expect("files live in a folder");
        let mut new_dir = false;
        if kind == FileKind::Pack {
            new_dir = ensure_pack_dir(dir)?;
        } else if kind != FileKind::Config {
            new_dir = ensure_kind_dir(dir)?;
        }
        let tmp = tmp_path(dir);
        // Lock files skip both fsyncs (see `FileKind::durable`), which
        // saves every command that locks a millisecond or more.
        let durable = kind.durable();
        let result = (|| {
            room_for(&self.root, bytes.len() as u64, &tmp)?;
            let direct = kind == FileKind::Pack
                && bytes.len() >= DIRECT_MIN
                && directio::write_new(&tmp, bytes)?;
            if !direct {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)
                    .map_err(|e| Error::path("create", &tmp, e))?;
                f.write_all(bytes)
                    .map_err(|e| Error::path("write", &tmp, e))?;
                if durable {
                    f.sync_all().map_err(|e| Error::path("fsync", &tmp, e))?;
                }
            }
            crate::fault::point("backend-before-rename");
            fs::rename(&tmp, &path).map_err(|e| Error::path("rename into", &path, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
            return result;
        }
        if durable {
            sync_dir(dir)?;
        }
        if new_dir {
            sync_dir(dir.parent().expect("a kind's folder is in the repository"))?;
        }
        Ok(())
    }

    fn pack_sink(&self) -> Result<Option<Box<dyn super::FileSink>>> {
        let sink = LocalSink::create(self.root.clone(), FileKind::Pack)?;
        Ok(Some(Box::new(sink)))
    }

    fn index_sink(&self) -> Result<Option<Box<dyn super::FileSink>>> {
        let dir = self.root.join(FileKind::Index.dir());
        if ensure_kind_dir(&dir)? {
            sync_dir(&self.root)?;
        }
        let tmp = tmp_path(&dir);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::path("create", &tmp, e))?;
        Ok(Some(Box::new(PlainSink { file, tmp, dir })))
    }

    fn remove_leftovers(&self, before: std::time::SystemTime) -> Result<u64> {
        // Streamed packs are written in packs/ itself, whole files beside
        // their destination.
        let mut dirs = vec![self.root.join(FileKind::Pack.dir())];
        // The pack folders: those a listing of packs just saw holding
        // temporary files (a file old enough to remove now was there
        // then), else every one.
        let seen = self.tmp_pack_dirs.lock().ok().and_then(|mut s| s.take());
        match seen {
            Some(tmp_dirs) => dirs.extend(tmp_dirs),
            None => dirs.extend(self.dirs(FileKind::Pack)?),
        }
        // Every folder, locks/ and keys/ too: their writes (a lock taken or
        // refreshed, a key file) take milliseconds, so a temporary file an
        // hour old there is as surely abandoned as anywhere.
        for kind in [
            FileKind::Index,
            FileKind::Snapshot,
            FileKind::Lock,
            FileKind::Key,
        ] {
            dirs.extend(self.dirs(kind)?);
        }
        let mut removed = 0;
        for dir in dirs {
            for name in read_names(&dir)?
                .into_iter()
                .filter(|n| n.starts_with(".tmp-"))
            {
                let path = dir.join(&name);
                let old = fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before);
                if old {
                    match fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::path("remove", &path, e)),
                    }
                }
            }
        }
        Ok(removed)
    }

    fn free_space(&self) -> Result<Option<u64>> {
        if let Some(size) = crate::fault::fs_size() {
            return Ok(Some(size.saturating_sub(used_bytes(&self.root))));
        }
        fs2::available_space(&self.root)
            .map(Some)
            .map_err(|e| Error::path("measure the free space of", &self.root, e))
    }

    fn reserve(&self) -> Result<Option<u64>> {
        let path = self.root.join(RESERVE);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Some(0)),
            Err(e) => Err(Error::path("stat", &path, e)),
        }
    }

    fn set_reserve(&self, bytes: u64) -> Result<()> {
        let path = self.root.join(RESERVE);
        if bytes == 0 {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::path("remove", &path, e)),
                _ => Ok(()),
            };
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::path("create", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::path("stat", &path, e))?
            .len();
        if bytes < len {
            return file
                .set_len(bytes)
                .map_err(|e| Error::path("shorten", &path, e));
        }
        room_for(&self.root, bytes - len, &path)?;
        let Ok(bytes) = libc::off_t::try_from(bytes) else {
            return Err(Error::Invalid(format!("reserve of {bytes} bytes")));
        };
        // SAFETY: a valid descriptor, a range from 0; posix_fallocate
        // returns the error number rather than setting errno.
        let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, bytes) };
        if rc != 0 {
            // A reserve whose blocks are not all there would promise room
            // that is not: none is better.
            let _ = file.set_len(len);
            return Err(Error::path(
                "allocate",
                &path,
                std::io::Error::from_raw_os_error(rc),
            ));
        }
        Ok(())
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let path = self.path(kind, name);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let (Some(dir), Ok(mut dirs)) = (path.parent(), self.removed_from.lock()) {
                    dirs.insert(dir.to_path_buf());
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::path("remove", &path, e)),
        }
    }

    fn settle_removals(&self) -> Result<()> {
        let dirs = match self.removed_from.lock() {
            Ok(mut dirs) => std::mem::take(&mut *dirs),
            Err(_) => return Err(Error::Invalid("a thread removing files panicked".into())),
        };
        for dir in &dirs {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// Packs at least this large are written with direct IO (see
/// [`crate::directio`]).
const DIRECT_MIN: usize = 1 << 20;

fn read_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::path("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::path("list", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settling removals fsyncs the folders files were removed from, each
    /// once, and only those; a missing file removed adds none.
    #[test]
    fn settling_removals_syncs_the_folders_they_were_in() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        let name = |i: u8| hex::encode([i; 32]);
        for i in 0..3 {
            b.write(FileKind::Index, &name(i), b"table").unwrap();
            b.write(FileKind::Snapshot, &name(i), b"snapshot").unwrap();
        }
        let pending = || b.removed_from.lock().unwrap().clone();
        b.remove(FileKind::Index, &name(0)).unwrap();
        b.remove(FileKind::Index, &name(1)).unwrap();
        b.remove(FileKind::Snapshot, &name(9)).unwrap();
        assert_eq!(pending(), [b.root.join("index")].into());
        b.remove(FileKind::Snapshot, &name(2)).unwrap();
        assert_eq!(pending().len(), 2);
        b.settle_removals().unwrap();
        assert!(pending().is_empty());
        assert_eq!(b.list(FileKind::Index).unwrap(), [name(2)]);
        let mut left = b.list(FileKind::Snapshot).unwrap();
        left.sort();
        assert_eq!(left, [name(0), name(1)]);
        // A folder that is gone by then is an error naming it.
        b.remove(FileKind::Index, &name(2)).unwrap();
        fs::remove_dir(b.root.join("index")).unwrap();
        let err = b.settle_removals().unwrap_err().to_string();
        assert!(err.contains("index"), "{err}");
    }

    #[test]
    fn the_reserve_is_allocated_grows_shrinks_and_goes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        let path = dir.path().join("repo").join(RESERVE);
        assert_eq!(b.reserve().unwrap(), Some(0));
        assert!(b.free_space().unwrap().is_some_and(|n| n > 0));
        b.set_reserve(1 << 20).unwrap();
        assert_eq!(b.reserve().unwrap(), Some(1 << 20));
        let md = fs::metadata(&path).unwrap();
        assert!(
            md.blocks() * 512 >= 1 << 20,
            "its blocks are allocated, not a hole: {} blocks",
            md.blocks()
        );
        b.set_reserve(3 << 20).unwrap();
        assert_eq!(b.reserve().unwrap(), Some(3 << 20));
        b.set_reserve(4096).unwrap();
        assert_eq!(b.reserve().unwrap(), Some(4096));
        b.set_reserve(0).unwrap();
        assert!(!path.exists());
        assert_eq!(b.reserve().unwrap(), Some(0));
        b.set_reserve(0).unwrap();
        assert_eq!(b.reserve().unwrap(), Some(0), "removing none is no error");
    }

    #[test]
    fn conformance_local() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        assert!(!b.exists().unwrap());
        b.create().unwrap();
        let name = "ab".repeat(32);
        assert!(b.read(FileKind::Pack, &name).unwrap_err().is_not_found());
        b.write(FileKind::Pack, &name, b"hello world").unwrap();
        b.write(FileKind::Snapshot, &name, b"").unwrap();
        assert_eq!(&*b.read(FileKind::Pack, &name).unwrap(), b"hello world");
        assert_eq!(&*b.read(FileKind::Snapshot, &name).unwrap(), b"");
        assert_eq!(b.read_range(FileKind::Pack, &name, 6, 5).unwrap(), b"world");
        assert!(b.read_range(FileKind::Pack, &name, 6, 6).is_err());
        assert_eq!(b.size(FileKind::Pack, &name).unwrap(), 11);
        assert_eq!(b.list(FileKind::Pack).unwrap(), vec![name.clone()]);
        assert_eq!(
            b.list_sizes(FileKind::Pack).unwrap(),
            vec![(name.clone(), 11)]
        );
        assert!(b.list(FileKind::Index).unwrap().is_empty());
        // Open for many ranges: the same bytes, and a short file is an
        // error naming it.
        let open = b.open_ranges(FileKind::Pack, &name).unwrap().unwrap();
        let mut buf = [0u8; 5];
        open.read_at(6, &mut buf).unwrap();
        assert_eq!(&buf, b"world");
        let err = open.read_at(7, &mut buf).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains(&name), "{err}");
        // A pack moved elsewhere and symlinked in is listed with the size
        // of what it points to; temporary files are not listed.
        let moved = dir.path().join("elsewhere");
        fs::write(&moved, [1u8; 1000]).unwrap();
        let linked = "cd".repeat(32);
        let linked_path = b.path(FileKind::Pack, &linked);
        fs::create_dir_all(linked_path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&moved, &linked_path).unwrap();
        fs::write(linked_path.with_file_name(".tmp-0011223344556677"), b"x").unwrap();
        let mut sizes = b.list_sizes(FileKind::Pack).unwrap();
        sizes.sort();
        assert_eq!(sizes, vec![(name.clone(), 11), (linked.clone(), 1000)]);
        fs::remove_file(&linked_path).unwrap();
        b.remove(FileKind::Pack, &name).unwrap();
        b.remove(FileKind::Pack, &name).unwrap();
        assert!(b.list(FileKind::Pack).unwrap().is_empty());
    }

    #[test]
    fn large_packs_round_trip_through_direct_io_at_any_length() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        for len in [
            DIRECT_MIN,
            DIRECT_MIN + 1,
            3 * DIRECT_MIN + 4095,
            5 * DIRECT_MIN - 7,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let name = format!("{:064x}", len);
            b.write(FileKind::Pack, &name, &bytes).unwrap();
            assert_eq!(b.size(FileKind::Pack, &name).unwrap(), len as u64);
            let back = b.read(FileKind::Pack, &name).unwrap();
            assert!(back[..] == bytes[..], "{len} bytes differ");
            assert_eq!(
                b.read_range(FileKind::Pack, &name, 5, 3).unwrap(),
                &bytes[5..8]
            );
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("repo/packs"))
            .unwrap()
            .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// Leftovers in a pack folder are removed whether or not a listing of
    /// packs came first (gc lists them, so only folders it saw holding
    /// temporary files are listed again); younger ones stay.
    #[test]
    fn leftovers_in_pack_folders_are_found_with_or_without_a_listing() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        let name = "ab".repeat(32);
        b.write(FileKind::Pack, &name, b"pack").unwrap();
        b.write(FileKind::Pack, &"cd".repeat(32), b"pack").unwrap();
        let sub = dir.path().join("repo/packs/ab");
        let leftover = |n: &str| {
            let p = sub.join(n);
            fs::write(&p, b"half").unwrap();
            p
        };
        for listed_first in [false, true] {
            let old = leftover(".tmp-00000000000000aa");
            let young = leftover(".tmp-00000000000000bb");
            if listed_first {
                let sizes = b.list_sizes(FileKind::Pack).unwrap();
                assert_eq!(sizes.len(), 2, "{sizes:?}");
            }
            // Everything before a minute from now counts as old.
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
            assert_eq!(b.remove_leftovers(later).unwrap(), 2);
            assert!(!old.exists() && !young.exists());
            let young = leftover(".tmp-00000000000000cc");
            if listed_first {
                b.list_sizes(FileKind::Pack).unwrap();
            }
            let long_ago = std::time::SystemTime::UNIX_EPOCH;
            assert_eq!(b.remove_leftovers(long_ago).unwrap(), 0);
            assert!(young.exists());
            fs::remove_file(&young).unwrap();
        }
        assert_eq!(b.read(FileKind::Pack, &name).unwrap().to_vec(), b"pack");
    }
}
