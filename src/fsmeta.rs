//! Unix file metadata: reading it into nodes and applying it on restore.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use crate::tree::{Name, Node, NodeKind, Xattr};

/// Caches uid/gid → name lookups.
#[derive(Default)]
pub struct NameCache {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl NameCache {
    /// The user name of `uid`, or empty.
    pub fn user(&self, uid: u32) -> String {
        cached(&self.users, uid, |id| {
            // SAFETY: getpwuid returns a pointer into static storage or null;
            // the lock held by `cached` serialises our calls.
            let pw = unsafe { libc::getpwuid(id) };
            if pw.is_null() {
                return String::new();
            }
            // SAFETY: pw is non-null and pw_name a NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
                .to_string_lossy()
                .into_owned()
        })
    }

    /// The group name of `gid`, or empty.
    pub fn group(&self, gid: u32) -> String {
        cached(&self.groups, gid, |id| {
            // SAFETY: as in `user`.
            let gr = unsafe { libc::getgrgid(id) };
            if gr.is_null() {
                return String::new();
            }
            // SAFETY: gr is non-null and gr_name a NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr((*gr).gr_name) }
                .to_string_lossy()
                .into_owned()
        })
    }
}

fn cached(map: &Mutex<HashMap<u32, String>>, id: u32, look: impl FnOnce(u32) -> String) -> String {
    let Ok(mut m) = map.lock() else {
        return String::new();
    };
    m.entry(id).or_insert_with(|| look(id)).clone()
}

/// A node for `name` from its `lstat` metadata. Files get an empty chunk
/// list and directories a zero subtree; the caller fills them in. Extended
/// attributes are read from `path` unless `xattrs` supplies them.
pub fn node_from_metadata(
    name: &OsStr,
    path: &Path,
    md: &Metadata,
    names: &NameCache,
    xattrs: Option<Vec<Xattr>>,
) -> io::Result<Node> {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        NodeKind::File { chunks: Vec::new() }
    } else if ft.is_dir() {
        NodeKind::Dir {
            subtree: Default::default(),
        }
    } else if ft.is_symlink() {
        NodeKind::Symlink {
            target: Name(
                std::fs::read_link(path)?
                    .into_os_string()
                    .into_encoded_bytes(),
            ),
        }
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice { rdev: md.rdev() }
    } else if ft.is_block_device() {
        NodeKind::BlockDevice { rdev: md.rdev() }
    } else {
        NodeKind::Socket
    };
    Ok(Node {
        name: Name(name.as_bytes().to_vec()),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user: names.user(md.uid()),
        group: names.group(md.gid()),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        size: if ft.is_file() { md.len() } else { 0 },
        dev: md.dev(),
        inode: md.ino(),
        nlink: md.nlink(),
        xattrs: xattrs.unwrap_or_else(|| read_xattrs(path)),
    })
}

/// Extended attributes of `path` (not following symlinks); best effort.
pub fn read_xattrs(path: &Path) -> Vec<Xattr> {
    match xattr::list(path) {
        Ok(names) => sorted_xattrs(names, |n| xattr::get(path, n)),
        Err(_) => Vec::new(),
    }
}

/// Extended attributes of the open `file`, as [`read_xattrs`] reads a
/// path's, without looking its path up again; best effort.
pub fn read_xattrs_of(file: &std::fs::File) -> Vec<Xattr> {
    use xattr::FileExt;
    match file.list_xattr() {
        Ok(names) => sorted_xattrs(names, |n| file.get_xattr(n)),
        Err(_) => Vec::new(),
    }
}

/// The attributes `names` with the values `get` reads (those it cannot,
/// left out), sorted by name.
fn sorted_xattrs(
    names: impl Iterator<Item = std::ffi::OsString>,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> Vec<Xattr> {
    let mut out: Vec<Xattr> = names
        .filter_map(|n| {
            let value = get(&n).ok().flatten()?;
            Some(Xattr {
                name: Name(n.as_bytes().to_vec()),
                value: Name(value),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Sets atime and mtime to `mtime_ns` without following symlinks.
pub fn set_mtime(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let ts = timespec(mtime_ns);
    let c = cpath(path)?;
    // SAFETY: c is a valid C string and the array holds two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets atime and mtime of an open file to `mtime_ns`.
pub fn set_mtime_fd(file: &std::fs::File, mtime_ns: i64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ts = timespec(mtime_ns);
    // SAFETY: the descriptor is open for the borrow of `file`, and the
    // array holds two timespecs.
    let r = unsafe { libc::futimens(file.as_raw_fd(), [ts, ts].as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
    }
}

/// Sets owner and group without following symlinks.
pub fn set_owner(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Sets the permission bits of `path`, which must not be a symlink: the
/// entry is opened (`O_PATH | O_NOFOLLOW`, which opens neither a FIFO nor
/// a device) and changed through `/proc/self/fd`, as `chmod` itself would
/// follow a symlink put in its place to whatever it points at.
pub fn set_mode_nofollow(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let entry = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)?;
    if entry.metadata()?.file_type().is_symlink() {
        return Err(io::Error::other("it is a symlink now"));
    }
    let mode = std::fs::Permissions::from_mode(mode);
    match std::fs::set_permissions(format!("/proc/self/fd/{}", entry.as_raw_fd()), mode.clone()) {
        // No /proc: by name, checked just above.
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::set_permissions(path, mode),
        r => r,
    }
}

/// Creates a FIFO or device node.
pub fn make_special(path: &Path, kind: &NodeKind, mode: u32) -> io::Result<()> {
    let c = cpath(path)?;
    let (fmt, rdev) = match kind {
        NodeKind::Fifo => (libc::S_IFIFO, 0),
        NodeKind::CharDevice { rdev } => (libc::S_IFCHR, *rdev),
        NodeKind::BlockDevice { rdev } => (libc::S_IFBLK, *rdev),
        _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    };
    // SAFETY: c is a valid C string.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            fmt | (mode & 0o7777) as libc::mode_t,
            rdev as libc::dev_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this process runs as root (and so restores ownership).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The name of the user running cairn.
pub fn current_user() -> String {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let name = NameCache::default().user(uid);
    if name.is_empty() {
        uid.to_string()
    } else {
        name
    }
}
