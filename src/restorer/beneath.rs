//! Reaching the target's entries without following a symlink on the way.
//!
//! Restore checks that each directory it writes beneath is a real
//! directory, but a path is walked again by every later system call: a
//! directory swapped for a symlink after its check (by someone else who
//! can write in the target) would lead the next write wherever that
//! symlink points. So every path restore acts on goes through
//! [`Beneath::at`]: the entry's parent directory is opened from the
//! target's own descriptor without following any symlink (`openat2`
//! with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or one component at a
//! time with `O_NOFOLLOW` where the kernel lacks it; a folder deeper
//! than `PATH_MAX` by its own name from its parent's descriptor), and
//! the entry is named as `/proc/self/fd/<parent>/<name>`, which the
//! kernel resolves to that directory itself, whatever has happened to its
//! path since. The last component is the entry's own: each operation on
//! it already
//! refuses to follow a symlink there (`O_NOFOLLOW`, `lstat`, `lchown`,
//! `linkat`, `rename`, ...).
//!
//! Open directories are cached by path ([`CACHED_DIRS`] at most); removing
//! or replacing a directory must [`Beneath::forget`] it and what lies
//! beneath. Without `/proc` the paths are used as they are, as before.

use crate::escape::Show;
use rustc_hash::FxHashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Directories kept open at most; past it the cache starts again (an
/// operation in progress keeps its own directory open). Files are
/// written pack by pack, in the order the backup stored them, so those
/// of one directory mostly come together and a few dozen suffice; the
/// open-file budget leaves room for them (`Executor::prepare_files`).
pub(super) const CACHED_DIRS: usize = 64;

/// ... and their paths this many bytes at most: those of a tree
/// thousands of folders deep are megabytes each (64 of 2.4 MB took 300
/// MB of a restore 9,500 folders deep).
const CACHED_BYTES: usize = 16 << 20;

/// Adds `fd` to `cache` under `key`, starting the cache again once full
/// (see [`CACHED_DIRS`] and [`CACHED_BYTES`]).
fn cache_insert(cache: &mut FxHashMap<Vec<u8>, Arc<OwnedFd>>, key: &[u8], fd: Arc<OwnedFd>) {
    let bytes: usize = cache.keys().map(Vec::len).sum();
    if cache.len() >= CACHED_DIRS || bytes + key.len() > CACHED_BYTES {
        cache.clear();
    }
    cache.insert(key.to_vec(), fd);
}

pub(super) struct Beneath {
    target: PathBuf,
    /// The target, open; `None` where `/proc/self/fd` cannot name it.
    root: Option<OwnedFd>,
    /// Keyed by the path's bytes, hashed at once rather than a component
    /// at a time, and with FxHash, 16 bytes a step, not SipHash: a deep
    /// tree's paths are megabytes, asked several times an entry.
    dirs: Mutex<FxHashMap<Vec<u8>, Arc<OwnedFd>>>,
    /// The folders where the pieces of paths longer than `PATH_MAX` end
    /// (see [`Beneath::open_in_pieces`]), open, by path; as many at most.
    pieces: Mutex<FxHashMap<Vec<u8>, Arc<OwnedFd>>>,
}

/// The most of a path longer than `PATH_MAX` opened at once (see
/// [`Beneath::open_in_pieces`]): well below `PATH_MAX`, so that a piece
/// of many short names fits, and one of a long name (255 bytes at most)
/// too.
const PIECE: usize = 2048;

/// A path to act on for an entry of the target (see the module docs); it
/// holds the entry's parent directory open while it lives.
pub(super) struct At {
    path: PathBuf,
    /// The folder `path` goes through, held open while `path` is used
    /// (the cache may drop it meanwhile); `None` without `/proc`.
    dir: Option<Arc<OwnedFd>>,
    /// The entry's name in `dir`; `None` for the target itself.
    name: Option<std::ffi::OsString>,
}

impl At {
    /// The entry's folder, open, and its name there, for the `*at` calls
    /// of the busiest paths (no walk of `/proc`); none for the target
    /// itself, or without `/proc`.
    pub(super) fn in_dir(&self) -> Option<(std::os::fd::RawFd, &std::ffi::OsStr)> {
        Some((self.dir.as_ref()?.as_raw_fd(), self.name.as_deref()?))
    }
}

impl std::ops::Deref for At {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for At {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Beneath {
    /// Opens `target` (an existing directory; a symlink to one is followed,
    /// as the user named it).
    pub(super) fn new(target: &Path) -> Beneath {
        let root = open_path(target).ok().filter(proc_names);
        Beneath {
            target: target.to_path_buf(),
            root,
            dirs: Mutex::default(),
            pieces: Mutex::default(),
        }
    }

    /// Whether entries are reached through the target's descriptor
    /// (`/proc` names it), not by their paths alone.
    pub(super) fn guarded(&self) -> bool {
        self.root.is_some()
    }

    /// The path to act on for `path`, the target or an entry beneath it.
    /// Fails, naming the directory, when a directory on the way is no
    /// longer one (a symlink now, say): nothing is done through it.
    pub(super) fn at(&self, path: &Path) -> std::io::Result<At> {
        let Some(root) = &self.root else {
            return Ok(At {
                path: path.to_path_buf(),
                dir: None,
                name: None,
            });
        };
        let rel = path.strip_prefix(&self.target).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not in the target", path.shown()),
            )
        })?;
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) => (parent, Some(name)),
            _ => (Path::new(""), None),
        };
        let dir = self.dir(root, parent)?;
        let mut named = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        if let Some(name) = name {
            named.push(name);
        }
        Ok(At {
            path: named,
            dir: Some(dir),
            name: name.map(|n| n.to_os_string()),
        })
    }

    /// Drops the cached directories at or beneath `path`, which is about
    /// to be removed or replaced.
    pub(super) fn forget(&self, path: &Path) {
        let Ok(rel) = path.strip_prefix(&self.target) else {
            return;
        };
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.retain(|d, _| !bytes_path(d).starts_with(rel));
        }
        if let Ok(mut pieces) = self.pieces.lock() {
            pieces.retain(|d, _| !bytes_path(d).starts_with(rel));
        }
    }

    /// [`open_beneath`] of a folder whose path is longer than the kernel
    /// takes at once: a piece of at most [`PIECE`] bytes at a time, each
    /// opened from the folder the piece before it led to. The folder
    /// where the last piece before the folder's own begins is kept (see
    /// `pieces`), so the next folder of a deep tree is mostly reached from
    /// it: its parents given their metadata deepest first, each not
    /// cached, are a piece away, not the whole way down again.
    ///
    /// The pieces' ends are places in `rel`, not copies of its beginning:
    /// until December 2026 each call copied the path once per piece, and
    /// kept each piece's folder, which for a tree thousands of folders
    /// deep of long names was work of the cube of its depth (2,000 levels
    /// of 255-byte names restored in 31 s).
    fn open_in_pieces(&self, root: &OwnedFd, rel: &Path) -> std::io::Result<OwnedFd> {
        let bytes = rel.as_os_str().as_bytes();
        // The pieces' ends, always at the same places of a path, so that
        // the folders above share them.
        let mut ends = Vec::new();
        // The piece's length so far, where the name before ended, and
        // where this one starts. The slashes are found with `memchr`, many
        // bytes a step: the path is scanned whole each time.
        let (mut piece, mut last, mut start) = (0, 0, 0);
        let slashes = memchr::memchr_iter(b'/', bytes).chain(std::iter::once(bytes.len()));
        for end in slashes {
            let len = end - start;
            start = end + 1;
            if len == 0 {
                continue;
            }
            if piece > 0 && piece + 1 + len > PIECE {
                ends.push(last);
                piece = 0;
            }
            piece += len + usize::from(piece > 0);
            last = end;
        }
        let kept = |end: usize| {
            let path = &bytes[..end];
            self.pieces.lock().ok().and_then(|k| k.get(path).cloned())
        };
        // From the deepest piece's folder if it is kept, else from the
        // target.
        let (mut from, mut from_end, mut next) = (None::<Arc<OwnedFd>>, 0, 0);
        if let Some(&end) = ends.last() {
            if let Some(fd) = kept(end) {
                (from, from_end, next) = (Some(fd), end, ends.len());
            }
        }
        for &end in ends[next..].iter().chain(std::iter::once(&bytes.len())) {
            let mut piece = &bytes[from_end..end];
            while let Some(rest) = piece.strip_prefix(b"/") {
                piece = rest;
            }
            let fd = open_beneath(
                from.as_deref().unwrap_or(root),
                Path::new(std::ffi::OsStr::from_bytes(piece)),
            )?;
            if end == bytes.len() {
                return Ok(fd);
            }
            let fd = Arc::new(fd);
            if Some(&end) == ends.last() {
                if let Ok(mut k) = self.pieces.lock() {
                    cache_insert(&mut k, &bytes[..end], fd.clone());
                }
            }
            (from, from_end) = (Some(fd), end);
        }
        unreachable!("the last piece ends at the folder itself")
    }

    fn dir(&self, root: &OwnedFd, rel: &Path) -> std::io::Result<Arc<OwnedFd>> {
        let key = rel.as_os_str().as_bytes();
        if let Some(d) = self.dirs.lock().ok().and_then(|d| d.get(key).cloned()) {
            return Ok(d);
        }
        let opened = match open_beneath(root, rel) {
            // A path longer than the kernel takes at once (PATH_MAX, 4096
            // bytes): the folder is opened by its own name from its
            // parent's descriptor where that is cached (as it mostly is:
            // a folder is made right after its parent), else a piece of
            // the path at a time, each from the folder the one before
            // opened, so a tree of any depth is reached, never through a
            // symlink. (Until December 2026 the parent was reached the
            // same way, by recursion: a thread's stack per level, and
            // the whole way up again each time the cache started anew.)
            Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                let cached = rel
                    .parent()
                    .map(|parent| parent.as_os_str().as_bytes())
                    .and_then(|parent| self.dirs.lock().ok().and_then(|d| d.get(parent).cloned()));
                match (cached, rel.file_name()) {
                    (Some(parent), Some(name)) => open_beneath(&parent, Path::new(name)),
                    _ => self.open_in_pieces(root, rel),
                }
            }
            r => r,
        };
        let fd = Arc::new(opened.map_err(|e| {
            let why = match e.raw_os_error() {
                Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV) => {
                    "cannot be reached without following a symlink (a folder on the way \
                     was replaced since the restore looked); nothing is written there"
                        .to_string()
                }
                _ => e.to_string(),
            };
            std::io::Error::new(
                e.kind(),
                format!("{}: {why}", self.target.join(rel).shown()),
            )
        })?);
        if let Ok(mut dirs) = self.dirs.lock() {
            cache_insert(&mut dirs, key, fd.clone());
        }
        Ok(fd)
    }
}

/// A cache's key as a path.
fn bytes_path(key: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(key))
}

/// `O_PATH` descriptor of the directory `path` (symlinks followed).
fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    owned(fd)
}

/// Whether `/proc/self/fd/<fd>` names the directory open as `fd` (a
/// `/proc` is mounted, and is this process's). Compared with the
/// descriptor itself, not with the target's path again: the path swapped
/// meanwhile (by anyone who may write in the target's parent) took a
/// working `/proc` for none, and the whole restore went by paths, with a
/// warning that `/proc` was not mounted (until December 2026).
fn proc_names(fd: &OwnedFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let by_proc = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let own = crate::fsmeta::Stat::at(std::os::fd::AsFd::as_fd(fd), std::ffi::OsStr::new("."));
    match (by_proc, own) {
        (Ok(a), Ok(b)) => a.dev() == b.dev && a.ino() == b.ino,
        _ => false,
    }
}

/// Opens the directory `rel` beneath `root` without following a symlink
/// in any of its components.
fn open_beneath(root: &OwnedFd, rel: &Path) -> std::io::Result<OwnedFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if rel.as_os_str().is_empty() {
        let c = CString::new(".")?;
        // SAFETY: `c` is NUL-terminated and `root` is open.
        return owned(unsafe { libc::openat(root.as_raw_fd(), c.as_ptr(), flags) });
    }
    // What the kernel says of a path it cannot take at once, said
    // before a copy of the path (megabytes in a deep tree) is made for it.
    if rel.as_os_str().len() >= libc::PATH_MAX as usize {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let c = CString::new(rel.as_os_str().as_bytes())?;
    // SAFETY: open_how is plain integers, for which zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: `c` is NUL-terminated, `how` is an open_how of the size
    // passed, and both outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    match owned(fd as i32) {
        // No openat2 (an old kernel, or a sandbox refusing it), or one that
        // gave up on a race it could not rule out (EAGAIN): the walk is as
        // safe.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::EPERM | libc::EAGAIN)
            ) =>
        {
            walk_beneath(root, rel, flags)
        }
        r => r,
    }
}

/// [`open_beneath`] for kernels without `openat2`: one component at a
/// time, none of them followed if it is a symlink. Names come from
/// decoded trees, so no component is `..`; one that is anyway is refused.
fn walk_beneath(root: &OwnedFd, rel: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let mut at: Option<OwnedFd> = None;
    for part in rel.components() {
        let Component::Normal(name) = part else {
            return Err(std::io::Error::from_raw_os_error(libc::EXDEV));
        };
        let c = CString::new(name.as_bytes())?;
        let from = at.as_ref().unwrap_or(root).as_raw_fd();
        // SAFETY: `c` is NUL-terminated and `from` is open.
        let fd = unsafe { libc::openat(from, c.as_ptr(), flags | libc::O_NOFOLLOW) };
        at = Some(owned(fd)?);
    }
    at.map_or_else(|| open_beneath(root, Path::new("")), Ok)
}

fn owned(fd: i32) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: the descriptor was just opened and is owned by no one else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target renamed (or swapped) right after it is opened still has
    /// its entries reached through its descriptor: `/proc` is judged by
    /// the descriptor alone, not by the path again.
    #[test]
    fn a_target_moved_after_its_opening_keeps_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let fd = open_path(&target).unwrap();
        std::fs::rename(&target, dir.path().join("moved")).unwrap();
        std::fs::create_dir(&target).unwrap();
        assert!(proc_names(&fd), "/proc names the descriptor's folder");
    }

    /// Entries are reached through their parents' descriptors, and a
    /// folder turned into a symlink is refused rather than followed, by
    /// `openat2` and by the component walk alike.
    #[test]
    fn a_symlink_on_the_way_is_never_followed() {
        let top = tempfile::tempdir().unwrap();
        let target = top.path().join("target");
        let outside = top.path().join("outside");
        std::fs::create_dir_all(target.join("a/b")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let beneath = Beneath::new(&target);
        assert!(beneath.root.is_some(), "/proc/self/fd names the target");

        let at = beneath.at(&target.join("a/b/file")).unwrap();
        assert!(at.starts_with("/proc/self/fd"), "{}", at.shown());
        std::fs::write(&*at, "inside").unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("a/b/file")).unwrap(),
            "inside"
        );
        let root = beneath.at(&target).unwrap();
        assert!(std::fs::metadata(&*root).unwrap().is_dir());
        // An entry's path holds its folder open even once the cache lets
        // it go (its descriptor number is not reused under it).
        // (The folder opened next takes the lowest free number.)
        beneath.forget(&target);
        let b = beneath.at(&target.join("a/b/x")).unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&root), ino(&target));
        assert_eq!(ino(b.parent().unwrap()), ino(&target.join("a/b")));
        drop(b);

        // b becomes a symlink to a folder outside the target.
        std::fs::rename(target.join("a/b"), target.join("a/b.old")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("a/b")).unwrap();
        // The cached descriptor still names the folder first opened,
        // wherever it went.
        std::fs::write(&*beneath.at(&target.join("a/b/cached")).unwrap(), "x").unwrap();
        assert!(target.join("a/b.old/cached").exists());
        beneath.forget(&target.join("a/b"));
        let err = beneath.at(&target.join("a/b/file2")).err().unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("a/b: cannot be reached without following a symlink"),
            "{msg}"
        );
        let root_fd = beneath.root.as_ref().unwrap();
        let walked = walk_beneath(root_fd, Path::new("a/b"), libc::O_PATH | libc::O_DIRECTORY);
        assert_eq!(walked.err().unwrap().raw_os_error(), Some(libc::ENOTDIR));
        assert!(walk_beneath(root_fd, Path::new("a/../a"), libc::O_PATH).is_err());
        assert!(walk_beneath(root_fd, Path::new("a/b.old"), libc::O_PATH).is_ok());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

        // Paths outside the target are refused.
        assert!(beneath.at(&outside.join("x")).is_err());
    }

    /// A folder deeper than the kernel takes a path at once (PATH_MAX) is
    /// reached through the folders above it, and one of those turned into
    /// a symlink is refused there as anywhere.
    #[test]
    fn a_folder_beyond_path_max_is_reached_and_never_through_a_symlink() {
        let top = tempfile::tempdir().unwrap();
        let target = top.path().join("target");
        let outside = top.path().join("outside");
        std::fs::create_dir(&target).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let beneath = Beneath::new(&target);
        let names: Vec<String> = (0..30)
            .map(|i| format!("{i:02}{}", "x".repeat(198)))
            .collect();
        let mut deep = target.clone();
        for n in &names {
            deep.push(n);
            std::fs::create_dir(&*beneath.at(&deep).unwrap()).unwrap();
        }
        assert!(deep.as_os_str().len() > 6000);
        std::fs::write(&*beneath.at(&deep.join("file")).unwrap(), "deep").unwrap();
        assert_eq!(
            std::fs::read_to_string(&*beneath.at(&deep.join("file")).unwrap()).unwrap(),
            "deep"
        );

        // The 25th folder, past 4096 bytes, becomes a symlink to a folder
        // outside the target holding the same names.
        let swapped: PathBuf = names[..25].iter().fold(target.clone(), |p, n| p.join(n));
        let parent = beneath.at(&swapped).unwrap();
        let mut aside = parent.as_os_str().to_os_string();
        aside.push(".old");
        std::fs::rename(&*parent, &aside).unwrap();
        std::os::unix::fs::symlink(&outside, &*parent).unwrap();
        let there = outside.join(names[25..].join("/"));
        std::fs::create_dir_all(&there).unwrap();
        drop(parent);
        beneath.forget(&swapped);
        let err = beneath.at(&deep.join("file2")).err().unwrap();
        assert!(
            err.to_string()
                .contains("cannot be reached without following a symlink"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&there).unwrap().count(), 0);
    }
}
