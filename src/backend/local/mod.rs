//! The local directory backend: the embedded default.
//!
//! Layout: `config`, `keys/<id>`, `packs/<first 2 hex>/<id>`, `index/<id>`,
//! `snapshots/<id>`, `locks/<id>`, and the space reserve `reserve` (see
//! [`crate::repo::space`]). Writes go to `.tmp-<random>` in the
//! destination folder, are fsynced, renamed into place, and the folder is
//! fsynced, so a crash leaves either no file or the whole file under its
//! name. Leftover `.tmp-*` files are ignored by `list`, and so is
//! anything of the wrong type (see `read_names`). Packs and index
//! tables streamed piece by piece go through the sinks of `sink`.

use crate::escape::Show;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Backend, Data, FileKind, Leftovers, RangeReader};
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
    /// The permissions of the files and folders it creates, read once.
    modes: std::sync::OnceLock<Modes>,
}

/// The permissions of what cairn creates in a local repository: its
/// owner's only (files 0600, folders 0700), or with the group's read
/// too (0640 and 0750) when the repository's `config` grants its group
/// read, which is how an operator shares a repository with a group
/// (`chmod g+r config`, and the same for what is there already). Never
/// anyone else's: key files let whoever copies them try passwords
/// offline, and index tables tell every chunk's size. The process's
/// umask can take bits away, as ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modes {
    /// Of files.
    pub file: u32,
    /// Of folders.
    pub dir: u32,
}

impl Modes {
    /// The owner's only.
    pub const PRIVATE: Modes = Modes {
        file: 0o600,
        dir: 0o700,
    };
    /// The owner's, and the group's read.
    pub const GROUP: Modes = Modes {
        file: 0o640,
        dir: 0o750,
    };

    /// The modes for the repository at `root`, from its `config`'s, or
    /// where that is gone its copy's (the owner's only while there is
    /// neither, as during `init`): with the config lost, a repository
    /// its group reads wrote owner-only files, and `repair config` an
    /// owner-only config, which kept them so from then on.
    pub fn of(root: &Path) -> Modes {
        use std::os::unix::fs::PermissionsExt;
        let config = fs::metadata(root.join("config"))
            .or_else(|_| fs::metadata(root.join(super::config_name(super::CONFIG_COPY))));
        match config {
            Ok(m) if m.permissions().mode() & 0o040 != 0 => Modes::GROUP,
            _ => Modes::PRIVATE,
        }
    }
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
            modes: std::sync::OnceLock::new(),
        }
    }

    /// The permissions of the files and folders this creates.
    pub fn modes(&self) -> Modes {
        *self.modes.get_or_init(|| Modes::of(&self.root))
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
            FileKind::Config => Error::NotFound(format!("{}", self.path(kind, name).shown())),
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

/// Creates `path` for writing with permissions `mode`; fails if anything
/// is there already, which is never overwritten.
pub(crate) fn create_new(path: &Path, mode: u32) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::path("create", path, e))
}

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
        FileKind::Config => root.join(super::config_name(name)),
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
fn ensure_kind_dir(dir: &Path, modes: Modes) -> Result<bool> {
    if dir.exists() {
        return Ok(false);
    }
    match fs::DirBuilder::new().mode(modes.dir).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::path("create folder", dir, e)),
    }
}

/// Makes a pack's folder (`packs/<xx>`) if it is missing, and `packs/`
/// too, syncing the repository folder if that was made; true if the
/// pack's folder was made (the caller syncs `packs/`).
fn ensure_pack_dir(dir: &Path, modes: Modes) -> Result<bool> {
    let packs = dir.parent().expect("a pack's folder is in packs/");
    if ensure_kind_dir(packs, modes)? {
        sync_dir(packs.parent().expect("packs/ is in the repository"))?;
    }
    ensure_kind_dir(dir, modes)
}

/// Opens (or creates) the reserve file at `path` for writing, never
/// through a symlink: one planted there (by anyone who can write to the
/// repository's folder) would have cairn grow whatever it points to. A
/// symlink, or anything else not a file, is removed and a file made in
/// its place; `O_NONBLOCK` keeps a FIFO from stalling the open.
fn open_reserve(path: &Path, modes: Modes) -> Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(modes.file)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    match open() {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => return Ok(f),
        Ok(_) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) => {}
        Err(e) => return Err(Error::path("create", path, e)),
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(Error::Invalid(format!(
                "{} is a folder, where cairn keeps its reserve file; move it away",
                path.shown()
            )))
        }
        _ => fs::remove_file(path).map_err(|e| Error::path("remove", path, e))?,
    }
    let file = open().map_err(|e| Error::path("create", path, e))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(Error::Invalid(format!(
            "{} is not a file; it was replaced while cairn made its reserve",
            path.shown()
        )));
    }
    Ok(file)
}

/// A fresh temporary name in `dir` (`.tmp-<random>`, which `list`
/// ignores and gc removes once abandoned).
fn tmp_path(dir: &Path) -> PathBuf {
    dir.join(format!(
        ".tmp-{}",
        hex::encode(crate::crypto::random_bytes::<8>())
    ))
}

/// Fsyncs folder `dir`, so that the names just given or removed in it
/// last. Some filesystems cannot sync a folder (older CIFS/SMB mounts,
/// some FUSE filesystems) and refuse with EINVAL or ENOTSUP; there a
/// rename lasts as the filesystem makes it, and nothing cairn does would
/// make it more durable, so the refusal is no error (as in restic's
/// `fsyncDir`), only a warning, once per process. Any other failure is
/// an error: the folder's names may not have reached the disk.
fn sync_dir(dir: &Path) -> Result<()> {
    let folder = File::open(dir).map_err(|e| Error::path("open folder", dir, e))?;
    let synced = if crate::fault::dir_fsync_refused() {
        Err(std::io::Error::from_raw_os_error(libc::EINVAL))
    } else {
        folder.sync_all()
    };
    match synced {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP)) => {
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                crate::eprint_line(format_args!(
                    "warning: the filesystem of {} cannot sync folders ({e}); going on \
                     without, so a crash of the machine (or of the file server) may lose \
                     the files written last",
                    dir.shown()
                ));
            }
            Ok(())
        }
        Err(e) => Err(Error::path("fsync folder", dir, e)),
    }
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
        let (file, path, _) = self.open_regular(kind, name)?;
        Ok(OpenFile {
            file,
            path,
            what: format!("{} {name}", kind_name(kind)),
        })
    }

    /// Opens a file of the repository for reading, with its length. It
    /// must be a regular file (or a symlink to one): a FIFO in its place
    /// would stall the open and every read until someone wrote to it
    /// (anyone who can write to `locks/` could hang every other client),
    /// and a device would be read without end (`/dev/zero`). So it is
    /// opened with `O_NONBLOCK`, which lets a FIFO open at once, and
    /// anything but a regular file is refused as damage of that file
    /// ([`Error::Corrupt`], naming its path); the flag is cleared on a
    /// file kept.
    fn open_regular(&self, kind: FileKind, name: &str) -> Result<(File, PathBuf, u64)> {
        let path = self.path(kind, name);
        let refused =
            |what: &str| Error::corrupt(path.shown(), format!("{what}, not a regular file"));
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            // A socket cannot be opened at all.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(refused("a socket")),
            Err(e) => return Err(self.map_err("open", kind, name, e)),
        };
        let meta = file.metadata().map_err(|e| Error::path("stat", &path, e))?;
        if !meta.is_file() {
            return Err(refused(not_a_file(&meta)));
        }
        // SAFETY: fcntl on a descriptor this function owns, with flags it
        // just read.
        unsafe {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags != -1 {
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
        Ok((file, path, meta.len()))
    }

    /// The folders holding files of `kind`: for packs, the `packs/<xx>`
    /// folders that exist. A file of such a name in `packs/` (nothing
    /// cairn makes) is no pack folder, and is passed over.
    fn dirs(&self, kind: FileKind) -> Result<Vec<PathBuf>> {
        let dir = self.root.join(kind.dir());
        if kind != FileKind::Pack {
            return Ok(vec![dir]);
        }
        Ok(read_names(&dir, Entries::Folders)?
            .into_iter()
            .filter(|n| n.len() == 2)
            .map(|n| dir.join(n))
            .collect())
    }
}

/// The folder `d` of the layout, open for listing; `None` where it is not
/// there (a folder that held nothing may be left out by a copy).
fn read_folder(d: &Path) -> Result<Option<fs::ReadDir>> {
    match fs::read_dir(d) {
        Ok(rd) => Ok(Some(rd)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::path("list", d, e)),
    }
}

impl Backend for LocalBackend {
    fn local_folder(&self) -> Option<&Path> {
        Some(&self.root)
    }
    fn location(&self) -> String {
        self.root.shown().to_string()
    }

    fn exists(&self) -> Result<bool> {
        let config = self.path(FileKind::Config, "");
        match fs::metadata(&config) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            // `-r` names a file (or a path through one): say so, not
            // "stat FILE/config: Not a directory".
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                let file = self
                    .root
                    .ancestors()
                    .find(|p| fs::metadata(p).is_ok_and(|m| !m.is_dir()))
                    .unwrap_or(&self.root);
                Err(Error::Invalid(if file == self.root {
                    format!("{} is a file, not a repository folder", file.shown())
                } else {
                    format!(
                        "{} is a file, not a folder, so {} cannot be a repository folder",
                        file.shown(),
                        self.root.shown()
                    )
                }))
            }
            Err(e) => Err(Error::path("stat", &config, e)),
        }
    }

    fn create(&self) -> Result<()> {
        // The repository's folder too, if missing (and any missing folder
        // above it), is its owner's only.
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(self.modes().dir);
        for kind in DIRS {
            let dir = self.root.join(kind.dir());
            builder
                .create(&dir)
                .map_err(|e| Error::path("create folder", &dir, e))?;
        }
        sync_dir(&self.root)
    }

    fn foreign_entries(&self) -> Result<Vec<String>> {
        // A repository's own names, a filesystem's `lost+found` (a fresh
        // disk mounted for backups has one), and temporary files.
        let ours = |name: &str| {
            name.starts_with(".tmp-")
                || matches!(name, "config" | "config.copy" | "reserve" | "lost+found")
                || DIRS.iter().any(|k| k.dir() == name)
        };
        let mut out = Vec::new();
        let root = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::path("list", &self.root, e)),
        };
        for e in root.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !ours(&name) {
                out.push(name);
                continue;
            }
            // In a folder of a repository's name, only its files: ids,
            // packs' two-digit folders, temporary files.
            let Some(kind) = DIRS.iter().find(|k| k.dir() == name) else {
                continue;
            };
            let Ok(inner) = fs::read_dir(e.path()) else {
                continue;
            };
            for f in inner.flatten() {
                let n = f.file_name().to_string_lossy().into_owned();
                let dir = f.file_type().is_ok_and(|t| t.is_dir());
                let fan_out = *kind == FileKind::Pack
                    && n.len() == 2
                    && n.bytes().all(|b| b.is_ascii_hexdigit());
                // Files by an id's name, fan-out folders as folders: a
                // folder of an id's name, or a file of a fan-out's, is
                // someone's.
                let id_file = crate::id::is_hex_name(&n) && !dir;
                if !(id_file || n.starts_with('.') || fan_out && dir) {
                    out.push(format!("{name}/{n}"));
                }
                // In a fan-out folder, only its packs (a file of another
                // name there, or a pack of another folder's, was taken
                // for nothing, and a repository made over it).
                if fan_out && dir {
                    let Ok(packs) = fs::read_dir(f.path()) else {
                        continue;
                    };
                    for p in packs.flatten() {
                        let file = p.file_name().to_string_lossy().into_owned();
                        let home = crate::id::is_hex_name(&file)
                            && file.starts_with(n.as_str())
                            && !p.file_type().is_ok_and(|t| t.is_dir());
                        if !(home || file.starts_with('.')) {
                            out.push(format!("{name}/{n}/{file}"));
                        }
                    }
                }
            }
        }
        out.sort();
        out.truncate(3);
        Ok(out)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for d in self.dirs(kind)? {
            out.extend(
                read_names(&d, Entries::Files)?
                    .into_iter()
                    .filter(|n| !n.starts_with('.') && placed(kind, &d, n)),
            );
        }
        crate::fault::list_fault(kind.dir(), &mut out);
        Ok(out)
    }

    fn list_sizes(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut tmp_dirs = Vec::new();
        for d in self.dirs(kind)? {
            let Some(rd) = read_folder(&d)? else {
                continue;
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
                    // A folder among the files is none of them, and nor
                    // is a FIFO, socket or device (as `read_names` says);
                    // a symlink to one is, as `list` has it.
                    Ok(m) if m.is_dir() => {}
                    Ok(m) if !m.is_file() && !entry.file_type().is_ok_and(|t| t.is_symlink()) => {}
                    Ok(_) if !placed(kind, &d, &name) => {}
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

    fn misplaced_packs(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let home = |name: &str| format!("packs/{}/", &name[..2]);
        // Directly in `packs/` (a copy that flattened the fan-out), and
        // one folder deeper than a fan-out folder.
        let top = self.root.join(FileKind::Pack.dir());
        for name in read_names(&top, Entries::Files)? {
            if crate::id::is_hex_name(&name) {
                out.push((format!("packs/{name}"), home(&name)));
            }
        }
        for d in self.dirs(FileKind::Pack)? {
            let Some(folder) = d.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            for name in read_names(&d, Entries::Files)? {
                if crate::id::is_hex_name(&name) && !placed(FileKind::Pack, &d, &name) {
                    out.push((format!("packs/{folder}/{name}"), home(&name)));
                }
            }
            // Only real folders: one a symlink leads to may be another
            // repository's, whose packs are not this one's to move.
            let real = |sub: &String| fs::symlink_metadata(d.join(sub)).is_ok_and(|m| m.is_dir());
            for sub in read_names(&d, Entries::Folders)?.iter().filter(|s| real(s)) {
                for name in read_names(&d.join(sub), Entries::Files)? {
                    if crate::id::is_hex_name(&name) {
                        out.push((format!("packs/{folder}/{sub}/{name}"), home(&name)));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn place_pack(&self, place: &str) -> Result<bool> {
        let from = self.root.join(place);
        let name = from
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| crate::id::is_hex_name(n))
            .ok_or_else(|| Error::Invalid(format!("{place} is not a pack's place")))?;
        let to = self.path(FileKind::Pack, name);
        let home = to.parent().expect("a pack's path has its folder");
        // Made as a backup makes it, its owner's only.
        if ensure_pack_dir(home, self.modes())? {
            sync_dir(home.parent().expect("a pack's folder is in packs/"))?;
        }
        // A link, then the old name removed: never over a file of that
        // name already home (the same pack, or a damaged copy of it).
        match fs::hard_link(&from, &to) {
            Ok(()) => fs::remove_file(&from).map_err(|e| Error::path("remove", &from, e))?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            // A filesystem without hard links (exFAT): a rename where
            // nothing is home yet, under the exclusive lock.
            Err(_) if !to.exists() => {
                fs::rename(&from, &to).map_err(|e| Error::path("move", &from, e))?
            }
            Err(e) => return Err(Error::path("link", &to, e)),
        }
        sync_dir(home)?;
        if let Some(old) = from.parent() {
            sync_dir(old)?;
        }
        Ok(true)
    }

    fn exchange_pack(&self, place: &str) -> Result<bool> {
        let from = self.root.join(place);
        let Some(name) = from
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| crate::id::is_hex_name(n))
        else {
            return Ok(false);
        };
        let to = self.path(FileKind::Pack, name);
        let hashes_to_name = |p: &Path| -> Result<bool> {
            let bytes = fs::read(p).map_err(|e| Error::path("read", p, e))?;
            Ok(crate::id::PackId(crate::id::file_hash(&bytes)).to_hex() == name)
        };
        if hashes_to_name(&to)? || !hashes_to_name(&from)? {
            return Ok(false);
        }
        if let Err(e) = crate::fsmeta::rename_with(&from, &to, libc::RENAME_EXCHANGE) {
            return match e.raw_os_error() {
                // A filesystem or kernel without the swap: left as it is.
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => Ok(false),
                _ => Err(Error::path("swap", &to, e)),
            };
        }
        sync_dir(to.parent().expect("a pack's path has its folder"))?;
        if let Some(old) = from.parent() {
            sync_dir(old)?;
        }
        Ok(true)
    }

    fn missing_folders(&self) -> Result<Vec<&'static str>> {
        let gone = |kind: FileKind| -> Result<bool> {
            let dir = self.root.join(kind.dir());
            match fs::metadata(&dir) {
                Ok(_) => Ok(false),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
                Err(e) => Err(Error::path("stat", &dir, e)),
            }
        };
        // A folder that held nothing may be left out by a copy (git and
        // object-store syncs keep no empty folders) and is made again by
        // the next write: it is missing only where what the others hold
        // needs it. Every repository holds a key.
        // Four `stat`s where none is gone, as every backup asks; the
        // folders are listed only where one is.
        let (keys, packs_gone, index_gone, snapshots_gone) = (
            gone(FileKind::Key)?,
            gone(FileKind::Pack)?,
            gone(FileKind::Index)?,
            gone(FileKind::Snapshot)?,
        );
        let mut out = Vec::new();
        if keys {
            out.push(FileKind::Key.dir());
        }
        if !(packs_gone || index_gone || snapshots_gone) {
            return Ok(out);
        }
        let holds = |kind: FileKind| -> Result<bool> { Ok(!self.list(kind)?.is_empty()) };
        let (packs, tables) = (holds(FileKind::Pack)?, holds(FileKind::Index)?);
        if packs_gone && tables {
            out.push(FileKind::Pack.dir());
        }
        if index_gone && packs {
            out.push(FileKind::Index.dir());
        }
        if snapshots_gone && (packs || tables) {
            out.push(FileKind::Snapshot.dir());
        }
        Ok(out)
    }

    fn strays(&self, kind: FileKind) -> Result<Vec<Vec<u8>>> {
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        for d in self.dirs(kind)? {
            let Some(rd) = read_folder(&d)? else {
                continue;
            };
            for entry in rd {
                let entry = entry.map_err(|e| Error::path("list", &d, e))?;
                let name = entry.file_name();
                let bytes = name.as_bytes();
                // A folder among files (packs/ has its fan-out folders,
                // which `dirs` gives: the files are in them).
                let folder = kind != FileKind::Pack && entry.file_type().is_ok_and(|t| t.is_dir());
                // cairn's own temporary files (`.tmp-…`, of killed writes)
                // pass; any other name starting with `.` does not: a
                // snapshot moved into `.old/`, or renamed `.ID`, is no
                // snapshot to any reader either.
                if bytes.starts_with(b".tmp-") && !folder {
                    continue;
                }
                let id = std::str::from_utf8(bytes).is_ok_and(crate::id::is_hex_name);
                if folder || !id {
                    out.push(bytes.to_vec());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn not_files(&self, kind: FileKind) -> Result<Vec<(String, &'static str)>> {
        let mut out = Vec::new();
        let listed: std::collections::HashSet<String> = self.list(kind)?.into_iter().collect();
        for d in self.dirs(kind)? {
            let Some(rd) = read_folder(&d)? else {
                continue;
            };
            for entry in rd.flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if !crate::id::is_hex_name(&name) || !placed(kind, &d, &name) {
                    continue;
                }
                if listed.contains(&name) {
                    continue;
                }
                let what = match fs::metadata(entry.path()) {
                    Ok(m) if !m.is_file() => not_a_file(&m),
                    _ => continue,
                };
                let place = match kind {
                    FileKind::Pack => format!("packs/{}/{name}", &name[..2]),
                    _ => format!("{}/{name}", kind.dir()),
                };
                out.push((place, what));
            }
        }
        out.sort();
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
        let (file, path, len) = self.open_regular(kind, name)?;
        let Some(max) = kind.max_len() else {
            // A table's file is kept open: lookups read its entries
            // with `pread` until they are many (see `IndexTable::find`).
            let map = match kind {
                FileKind::Index => Map::keeping(file, &path)?,
                _ => {
                    let map = Map::file(&file, &path)?;
                    crate::fault::shrink_mapped(&path);
                    map
                }
            };
            return Ok(Data::Mapped(map));
        };
        if len > max {
            return Err(super::oversize(kind, path.shown(), len));
        }
        // Never more than the limit, even from a file that grows while
        // read, or whose length says nothing (`/proc`).
        let mut bytes = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, max + 1), &mut bytes)
            .map_err(|e| Error::path("read", &path, e))?;
        if bytes.len() as u64 > max {
            return Err(super::oversize(kind, path.shown(), bytes.len() as u64));
        }
        Ok(Data::Owned(bytes))
    }

    fn prefetch(&self, kind: FileKind, name: &str, range: std::ops::Range<u64>) {
        if let Ok((file, _, _)) = self.open_regular(kind, name) {
            crate::mmap::read_ahead(&file, range);
        }
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let file = self.open_file(kind, name)?;
        // Checked before the buffer is allocated: a damaged index entry
        // may ask for far more than the file holds.
        let size = file
            .file
            .metadata()
            .map_err(|e| Error::path("stat", &file.path, e))?
            .len();
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(Error::corrupt(
                &file.what,
                format!("truncated: wanted {len} bytes at offset {offset}, it holds {size}"),
            ));
        }
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
        let modes = self.modes();
        if kind == FileKind::Pack {
            new_dir = ensure_pack_dir(dir, modes)?;
        } else if kind != FileKind::Config {
            new_dir = ensure_kind_dir(dir, modes)?;
        }
        let tmp = tmp_path(dir);
        // Lock files skip both fsyncs (see `FileKind::durable`), which
        // saves every command that locks a millisecond or more.
        let durable = kind.durable();
        let result = (|| {
            room_for(&self.root, bytes.len() as u64, &tmp)?;
            let direct = kind == FileKind::Pack
                && bytes.len() >= DIRECT_MIN
                && directio::write_new(&tmp, bytes, modes.file)?;
            if !direct {
                let mut f = create_new(&tmp, modes.file)?;
                f.write_all(bytes)
                    .map_err(|e| Error::path("write", &tmp, e))?;
                if durable {
                    f.sync_all().map_err(|e| Error::path("fsync", &tmp, e))?;
                }
            }
            crate::fault::point("backend-before-rename");
            fs::rename(&tmp, &path).map_err(|e| {
                let folder = e.raw_os_error() == Some(libc::EISDIR);
                let error = Error::path("rename into", &path, e);
                match folder {
                    true => Error::Advised {
                        error: Box::new(error),
                        advice: format!(
                            "a folder is in the place of {}: move it out of the repository \
                             (nothing of cairn's is a folder there), then run the command again",
                            path.shown()
                        ),
                    },
                    false => error,
                }
            })
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
        let sink = LocalSink::create(self.root.clone(), FileKind::Pack, self.modes())?;
        Ok(Some(Box::new(sink)))
    }

    fn index_sink(&self) -> Result<Option<Box<dyn super::FileSink>>> {
        let dir = self.root.join(FileKind::Index.dir());
        let modes = self.modes();
        if ensure_kind_dir(&dir, modes)? {
            sync_dir(&self.root)?;
        }
        let tmp = tmp_path(&dir);
        let file = create_new(&tmp, modes.file)?;
        Ok(Some(Box::new(PlainSink { file, tmp, dir })))
    }

    fn remove_leftovers(&self, before: std::time::SystemTime, dry_run: bool) -> Result<Leftovers> {
        // Streamed packs are written in packs/ itself, whole files beside
        // their destination; the config in the repository's folder.
        let mut dirs = vec![self.root.join(FileKind::Pack.dir()), self.root.clone()];
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
            for name in read_names(&dir, Entries::Files)?
                .into_iter()
                .filter(|n| n.starts_with(".tmp-"))
            {
                let path = dir.join(&name);
                let old = fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before);
                if old && dry_run {
                    removed += 1;
                } else if old {
                    match fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::path("remove", &path, e)),
                    }
                }
            }
        }
        Ok(Leftovers {
            files: removed,
            ..Leftovers::default()
        })
    }

    fn free_space(&self) -> Result<Option<u64>> {
        if let Some(size) = crate::fault::fs_size() {
            return Ok(Some(size.saturating_sub(used_bytes(&self.root))));
        }
        fs2::available_space(&self.root)
            .map(Some)
            .map_err(|e| Error::path("measure the free space of", &self.root, e))
    }

    fn free_inodes(&self) -> Result<Option<u64>> {
        crate::fsmeta::free_inodes(&self.root)
            .map_err(|e| Error::path("measure the free inodes of", &self.root, e))
    }

    fn reserve(&self) -> Result<Option<u64>> {
        let path = self.root.join(RESERVE);
        // Not followed: anything but a file of cairn's own counts as no
        // reserve, and is replaced when one is set.
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(Some(0)),
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
        let file = open_reserve(&path, self.modes())?;
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
        let mut dirs = match self.removed_from.lock() {
            Ok(mut dirs) => std::mem::take(&mut *dirs),
            Err(_) => return Err(Error::Invalid("a thread removing files panicked".into())),
        };
        // And the folders whose removals make removing packs safe, whoever
        // removed from them: a `forget` or gc killed before it settled its
        // own leaves them to the next gc. A folder with nothing unsettled
        // costs a look at its journal.
        for kind in [FileKind::Index, FileKind::Snapshot] {
            if let Some(dir) = self.path(kind, "x").parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in &dirs {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// Packs at least this large are written with direct IO (see
/// [`crate::directio`]).
const DIRECT_MIN: usize = 1 << 20;

/// Whether the file `name`, found in the folder `dir` of files of `kind`,
/// is where its name puts it: a pack only in the folder of its name's
/// first two digits. One elsewhere (a copy put aside, a move by hand)
/// could be neither read nor removed under its name, so it is not the
/// repository's (FORMAT.md, "Layout").
fn placed(kind: FileKind, dir: &Path, name: &str) -> bool {
    kind != FileKind::Pack || dir.file_name().and_then(|d| d.to_str()) == name.get(..2)
}

/// What `meta` says an entry that is not a regular file is, for messages.
fn not_a_file(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

/// Which of a folder's entries [`read_names`] lists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entries {
    /// Regular files, and symlinks (packs moved elsewhere) to anything
    /// but a folder, which reads follow (and refuse, if what they reach
    /// is no regular file). A FIFO, socket or device is no file of the
    /// repository's, as a folder is not.
    Files,
    /// Folders, and symlinks to folders.
    Folders,
}

/// The names in `dir` of the entries `want` asks for; none if `dir` is
/// missing. What is in the wrong place (a folder named like a snapshot,
/// a file named like a pack folder) is left out here, so that a stray
/// entry stops no command.
fn read_names(dir: &Path, want: Entries) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::path("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::path("list", dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // The type the listing gives, without a stat on most
        // filesystems; a symlink is looked through only for folders.
        let wanted = match entry.file_type() {
            Ok(t) if t.is_symlink() => {
                let to_dir = fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
                (want == Entries::Folders) == to_dir
            }
            Ok(t) if t.is_dir() => want == Entries::Folders,
            Ok(t) => want == Entries::Files && t.is_file(),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::path("stat", &entry.path(), e)),
        };
        if wanted {
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

    /// A reserve planted as a symlink (by anyone who can write to the
    /// repository's folder) grows nothing it points to: it counts as no
    /// reserve and is replaced by a file. So is a FIFO.
    #[test]
    fn a_symlink_or_fifo_in_place_of_the_reserve_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        let path = dir.path().join("repo").join(RESERVE);
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert_eq!(b.reserve().unwrap(), Some(0));
        b.set_reserve(1 << 20).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let md = fs::symlink_metadata(&path).unwrap();
        assert!(md.is_file() && md.len() == 1 << 20, "{md:?}");

        fs::remove_file(&path).unwrap();
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(b.reserve().unwrap(), Some(0));
        b.set_reserve(4096).unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(b.reserve().unwrap(), Some(4096));
    }

    /// The process's umask, as `/proc` tells it.
    fn umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
    }

    /// Every file and folder under `dir` (not `dir` itself) with its mode.
    fn modes_under(dir: &Path) -> Vec<(PathBuf, u32)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            out.push((e.path(), md.permissions().mode() & 0o777));
            if md.is_dir() {
                out.extend(modes_under(&e.path()));
            }
        }
        out
    }

    /// What a repository holds is its owner's only, whatever the umask
    /// lets through; with its config readable by the group, what is
    /// created afterwards is readable by the group, never by others.
    #[test]
    fn repository_files_are_the_owner_s_unless_the_config_shares_them_with_the_group() {
        use std::os::unix::fs::PermissionsExt;
        let write_each = |b: &LocalBackend, n: u8| {
            let name = hex::encode([n; 32]);
            for kind in [
                FileKind::Key,
                FileKind::Snapshot,
                FileKind::Lock,
                FileKind::Index,
            ] {
                b.write(kind, &name, b"x").unwrap();
            }
            b.write(FileKind::Pack, &name, &vec![7; 3 * DIRECT_MIN])
                .unwrap();
            let mut sink = b.pack_sink().unwrap().unwrap();
            sink.append(&[1; 5000]).unwrap();
            sink.commit(&hex::encode([n ^ 0xff; 32])).unwrap();
            let mut sink = b.index_sink().unwrap().unwrap();
            sink.append(b"table").unwrap();
            sink.commit(&hex::encode([n ^ 0x0f; 32])).unwrap();
            b.set_reserve(8192).unwrap();
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root);
        b.create().unwrap();
        b.write(FileKind::Config, "", b"config").unwrap();
        write_each(&b, 1);
        let all = modes_under(&root);
        assert!(all.len() > 15, "{all:?}");
        for (path, mode) in &all {
            assert_eq!(mode & 0o077, 0, "{}: {mode:o}", path.shown());
        }
        let root_mode = fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(root_mode & 0o077, 0, "{root_mode:o}");

        fs::set_permissions(root.join("config"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::remove_file(root.join(RESERVE)).unwrap();
        let before: std::collections::BTreeSet<PathBuf> = all.into_iter().map(|(p, _)| p).collect();
        let b = LocalBackend::new(&root);
        write_each(&b, 2);
        let mask = umask();
        let new: Vec<_> = modes_under(&root)
            .into_iter()
            .filter(|(p, _)| !before.contains(p) || p.ends_with(RESERVE))
            .collect();
        assert!(new.len() >= 8, "{new:?}");
        for (path, mode) in &new {
            let want = if path.is_dir() { 0o750 } else { 0o640 } & !mask;
            assert_eq!(*mode, want, "{}: {mode:o}", path.shown());
        }
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
        // A range past the end is refused before a buffer is allocated
        // for it, however long (as a damaged index entry may ask).
        for (offset, len) in [(0, 1 << 40), (u64::MAX, 2)] {
            let err = b
                .read_range(FileKind::Pack, &name, offset, len)
                .unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("it holds 11"), "{err}");
        }
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

    /// On a filesystem that refuses direct IO from the start (ramfs),
    /// large packs are written buffered, whole, and leave no temporary
    /// file behind.
    #[test]
    fn large_packs_are_written_buffered_where_direct_io_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        directio::refuse_at_open(true);
        let bytes: Vec<u8> = (0..3 * DIRECT_MIN + 5).map(|i| (i * 13) as u8).collect();
        let name = "ef".repeat(32);
        let wrote = b.write(FileKind::Pack, &name, &bytes);
        directio::refuse_at_open(false);
        wrote.unwrap();
        assert!(b.read(FileKind::Pack, &name).unwrap()[..] == bytes[..]);
        let names: Vec<_> = fs::read_dir(dir.path().join("repo/packs/ef"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(&name)]);
    }

    /// Entries of the wrong type where the repository keeps its files (a
    /// file named like a pack folder, folders named like a pack, a
    /// snapshot, an index table or a temporary file) are passed over by
    /// every listing and by the removal of leftovers, not errors.
    #[test]
    fn stray_entries_of_the_wrong_type_are_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root);
        b.create().unwrap();
        let name = "ab".repeat(32);
        b.write(FileKind::Pack, &name, b"pack").unwrap();
        b.write(FileKind::Snapshot, &name, b"snapshot").unwrap();
        fs::write(root.join("packs/zz"), b"not a folder").unwrap();
        fs::write(root.join("packs/cd"), b"not a folder").unwrap();
        for folder in [
            format!("packs/ab/{}", "ef".repeat(32)),
            format!("packs/ab/.tmp-{}", "00".repeat(8)),
            format!("snapshots/{}", "cd".repeat(32)),
            format!("index/{}", "cd".repeat(32)),
        ] {
            fs::create_dir(root.join(folder)).unwrap();
        }
        assert_eq!(b.list(FileKind::Pack).unwrap(), vec![name.clone()]);
        assert_eq!(b.list_sizes(FileKind::Pack).unwrap(), [(name.clone(), 4)]);
        assert_eq!(b.list(FileKind::Snapshot).unwrap(), vec![name.clone()]);
        let times = b.list_times(FileKind::Snapshot).unwrap();
        assert_eq!(times.len(), 1);
        assert!(b.list(FileKind::Index).unwrap().is_empty());
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(b.remove_leftovers(later, false).unwrap().files, 0);
        assert!(root
            .join(format!("packs/ab/.tmp-{}", "00".repeat(8)))
            .is_dir());
        // A pack folder reached through a symlink is one.
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("12".repeat(32)), b"moved").unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("packs/12")).unwrap();
        let mut packs = b.list(FileKind::Pack).unwrap();
        packs.sort();
        assert_eq!(packs, ["12".repeat(32), name]);
    }

    /// A FIFO, socket or device where a file goes is left out of every
    /// listing; reached by name (or through a symlink, which listings
    /// keep) it is refused at once as damage naming its path, never
    /// waited on or read without end; a file of a kind read whole that is
    /// larger than any of its kind is refused unread.
    #[test]
    fn what_is_not_a_regular_file_is_not_listed_and_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root);
        b.create().unwrap();
        let fifo = |p: &Path| {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C string.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        };
        let name = "ab".repeat(32);
        for kind in [
            FileKind::Lock,
            FileKind::Snapshot,
            FileKind::Index,
            FileKind::Pack,
        ] {
            let path = b.path(kind, &name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fifo(&path);
            assert!(b.list(kind).unwrap().is_empty(), "{kind:?}");
            assert!(b.list_sizes(kind).unwrap().is_empty(), "{kind:?}");
            assert!(b.list_times(kind).unwrap().is_empty(), "{kind:?}");
            let err = b.read(kind, &name).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(
                err.to_string().contains("a FIFO, not a regular file"),
                "{err}"
            );
            assert!(err.to_string().contains(&path.shown().to_string()), "{err}");
            assert!(b.read_range(kind, &name, 0, 1).is_err());
        }
        let linked = "cd".repeat(32);
        let target = dir.path().join("fifo");
        fifo(&target);
        std::os::unix::fs::symlink(&target, b.path(FileKind::Snapshot, &linked)).unwrap();
        assert_eq!(
            b.list(FileKind::Snapshot).unwrap(),
            std::slice::from_ref(&linked)
        );
        let err = b.read(FileKind::Snapshot, &linked).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        std::os::unix::fs::symlink("/dev/zero", root.join("config")).unwrap();
        let err = b.read(FileKind::Config, "").unwrap_err();
        assert!(
            err.to_string().contains("a device, not a regular file"),
            "{err}"
        );

        let big = "ef".repeat(32);
        for (kind, len) in [(FileKind::Lock, 64 << 10), (FileKind::Key, 4 << 10)] {
            let path = b.path(kind, &big);
            fs::File::create(&path).unwrap().set_len(len).unwrap();
            assert_eq!(b.read(kind, &big).unwrap().len() as u64, len);
            fs::File::create(&path).unwrap().set_len(len + 1).unwrap();
            let err = b.read(kind, &big).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("more than a"), "{err}");
        }
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
            let found = b.remove_leftovers(later, true).unwrap();
            assert_eq!((found.files, found.uploads), (2, 0), "{found:?}");
            assert!(old.exists() && young.exists(), "a dry run removes nothing");
            if listed_first {
                b.list_sizes(FileKind::Pack).unwrap();
            }
            assert_eq!(b.remove_leftovers(later, false).unwrap().files, 2);
            assert!(!old.exists() && !young.exists());
            let young = leftover(".tmp-00000000000000cc");
            if listed_first {
                b.list_sizes(FileKind::Pack).unwrap();
            }
            let long_ago = std::time::SystemTime::UNIX_EPOCH;
            assert_eq!(b.remove_leftovers(long_ago, false).unwrap().files, 0);
            assert!(young.exists());
            fs::remove_file(&young).unwrap();
        }
        assert_eq!(b.read(FileKind::Pack, &name).unwrap().to_vec(), b"pack");
    }
}
