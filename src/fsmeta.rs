//! Unix file metadata: reading it into nodes and applying it on restore.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::Metadata;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use crate::tree::{Name, Node, NodeKind, Xattr};

/// Held around every `getpwuid` and `getgrgid` call and the reading of
/// its result: both return static storage that the next call, on any
/// thread, overwrites (and may reallocate), and every walker thread has a
/// [`NameCache`] of its own.
static NSS: Mutex<()> = Mutex::new(());

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
            let _only = NSS.lock();
            // SAFETY: getpwuid returns a pointer into static storage or null,
            // read before `NSS`, which serialises every such call in the
            // process, is released.
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
            let _only = NSS.lock();
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

/// What an `lstat` says of an entry, as a backup records it: from the
/// standard library's [`Metadata`], or from an `fstatat` relative to an
/// open directory (which needs no name to be held but the entry's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
}

impl Stat {
    /// From the standard library's metadata.
    pub fn of(md: &Metadata) -> Stat {
        Stat {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            mtime_ns: time_ns(md.mtime(), md.mtime_nsec()),
            ctime_ns: time_ns(md.ctime(), md.ctime_nsec()),
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
            rdev: md.rdev(),
        }
    }

    /// The `lstat` of the entry `name` of the open directory `dir`.
    pub fn at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
        let name = CString::new(name.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: all-zero bytes are a valid `struct stat`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `name` is NUL-terminated and `st` writable, both for the
        // call's duration; the descriptor is borrowed, so open.
        let r = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // The field types differ between targets; each widens losslessly.
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok(Stat {
            mode: st.st_mode as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime_ns: time_ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: time_ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
        })
    }

    fn is_type(&self, ty: libc::mode_t) -> bool {
        self.mode & libc::S_IFMT == ty
    }

    pub fn is_file(&self) -> bool {
        self.is_type(libc::S_IFREG)
    }

    pub fn is_dir(&self) -> bool {
        self.is_type(libc::S_IFDIR)
    }

    pub fn is_symlink(&self) -> bool {
        self.is_type(libc::S_IFLNK)
    }
}

/// A file time of `secs` and `nsecs` in nanoseconds since the epoch, as
/// a node holds it: an `i64` of nanoseconds spans the years 1677 to 2262,
/// and a time outside them (a filesystem keeps seconds to the year 2446
/// or further) is clamped to the nearest end, `i64::MIN` or `i64::MAX`,
/// which restore sets back as they are: such a file round-trips with
/// that time. Where both times of a file are clamped, a change to it
/// that keeps its size and inode is not seen by them.
pub fn time_ns(secs: i64, nsecs: i64) -> i64 {
    secs.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(nsecs))
        .unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX })
}

/// A node for the entry `name` of the open directory `dir` from its
/// `lstat`. Files get an empty chunk list and directories a zero subtree;
/// the caller fills them in. A symlink's target, and the extended
/// attributes unless `xattrs` supplies them, are read relative to `dir`
/// (see [`read_link_at`], [`read_xattrs_at`]), not by `path` (the entry's,
/// for where `/proc` is missing), whose folders someone may since have
/// swapped for symlinks.
pub fn node_from_stat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    st: &Stat,
    names: &NameCache,
    xattrs: Option<Vec<Xattr>>,
) -> io::Result<(Node, Option<String>)> {
    let kind = if st.is_file() {
        NodeKind::File { chunks: Vec::new() }
    } else if st.is_dir() {
        NodeKind::Dir {
            subtree: Default::default(),
        }
    } else if st.is_symlink() {
        NodeKind::Symlink {
            target: Name(read_link_at(dir, name)?),
        }
    } else if st.is_type(libc::S_IFIFO) {
        NodeKind::Fifo
    } else if st.is_type(libc::S_IFCHR) {
        NodeKind::CharDevice { rdev: st.rdev }
    } else if st.is_type(libc::S_IFBLK) {
        NodeKind::BlockDevice { rdev: st.rdev }
    } else {
        NodeKind::Socket
    };
    let (xattrs, failed) = match xattrs {
        Some(x) => (x, None),
        None => read_xattrs_at(dir, name, path),
    };
    let node = Node {
        name: Name(name.as_bytes().to_vec()),
        kind,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        user: names.user(st.uid),
        group: names.group(st.gid),
        mtime_ns: st.mtime_ns,
        ctime_ns: st.ctime_ns,
        size: if st.is_file() { st.size } else { 0 },
        dev: st.dev,
        inode: st.ino,
        nlink: st.nlink,
        xattrs,
    };
    Ok((node, failed))
}

/// The target of the symlink `name` in the open directory `dir`
/// (`readlinkat`).
pub fn read_link_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    let name = CString::new(name.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut buf: Vec<u8> = vec![0; 256];
    loop {
        // SAFETY: `name` is NUL-terminated and `buf` writable for its
        // length, both for the call's duration; the descriptor is
        // borrowed, so open.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // A target that fills the buffer may have been cut short.
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// Extended attributes of the entry `name` of the open directory `dir`,
/// of whatever type, a symlink's own (not its target's); best effort.
/// The entry is opened `O_PATH | O_NOFOLLOW` (which opens neither a FIFO
/// nor a device, and a symlink as itself) and its attributes read through
/// `/proc/self/fd/N` with the calls that follow a link: that one leads to
/// the entry opened and no further, where the `l`-calls would read the
/// link in `/proc` itself. Without `/proc`, they are read by `path` (not
/// following a symlink at its end), as before there was a descriptor.
pub fn read_xattrs_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
) -> (Vec<Xattr>, Option<String>) {
    let Ok(cname) = CString::new(name.as_bytes()) else {
        return (Vec::new(), None);
    };
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `cname` is NUL-terminated and outlives the call; the
    // descriptor is borrowed, so open.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), cname.as_ptr(), flags) };
    if fd < 0 {
        // Gone since its `lstat`: the caller's next step finds out.
        return (Vec::new(), None);
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    let entry: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    let proc = format!("/proc/self/fd/{}", entry.as_raw_fd());
    match xattr::list_deref(&proc) {
        Ok(names) => sorted_xattrs(names, |n| xattr::get_deref(&proc, n)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match xattr::list(path) {
            Ok(names) => sorted_xattrs(names, |n| xattr::get(path, n)),
            Err(e) => (Vec::new(), list_failure(&e)),
        },
        Err(e) => (Vec::new(), list_failure(&e)),
    }
}

/// Extended attributes of the open `file`, as [`read_xattrs_at`] reads
/// an entry's, without looking its name up again.
pub fn read_xattrs_of(file: &std::fs::File) -> (Vec<Xattr>, Option<String>) {
    use xattr::FileExt;
    match file.list_xattr() {
        Ok(names) => sorted_xattrs(names, |n| file.get_xattr(n)),
        Err(e) => (Vec::new(), list_failure(&e)),
    }
}

/// Whether reading extended attributes failed for a reason worth a
/// warning: not for a filesystem that has none (`ENOTSUP`), nor for an
/// attribute removed between the listing and the read (`ENODATA`).
fn xattr_failure(e: &io::Error) -> bool {
    !matches!(e.raw_os_error(), Some(libc::ENOTSUP | libc::ENODATA) | None)
}

fn list_failure(e: &io::Error) -> Option<String> {
    xattr_failure(e).then(|| format!("cannot list its extended attributes: {e}"))
}

/// The attributes `names` with the values `get` reads, sorted by name;
/// those it cannot read are left out, the first named in the message.
fn sorted_xattrs(
    names: impl Iterator<Item = std::ffi::OsString>,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> (Vec<Xattr>, Option<String>) {
    let mut failed = None;
    let mut out: Vec<Xattr> = names
        .filter_map(|n| {
            let got = if crate::fault::xattr_fails(&n) {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                get(&n)
            };
            let value = match got {
                Ok(v) => v?,
                Err(e) => {
                    if xattr_failure(&e) && failed.is_none() {
                        failed = Some(format!(
                            "cannot read its extended attribute {}: {e}",
                            n.to_string_lossy()
                        ));
                    }
                    return None;
                }
            };
            Some(Xattr {
                name: Name(n.as_bytes().to_vec()),
                value: Name(value),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (out, failed)
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

/// `renameat2(from, to, flags)` on two paths (`RENAME_NOREPLACE`,
/// `RENAME_EXCHANGE`); the caller tells a filesystem without the flag
/// (`EINVAL`) from other errors.
pub fn rename_with(from: &std::path::Path, to: &std::path::Path, flags: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (cfrom, cto) = (c(from)?, c(to)?);
    // SAFETY: both are NUL-terminated and outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            flags,
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
    euid() == 0
}

/// The user this process acts as.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
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

/// What a filesystem that refused a write as full ran out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortage {
    /// Bytes.
    Bytes,
    /// Inodes (file entries), with bytes to spare.
    Inodes,
    /// Either: few of both are left.
    Both,
}

/// What a filesystem that refused a write as full, with `inodes` and
/// `bytes` free by now ([`free_inodes`], `None` where it does not tell),
/// ran out of: inodes where fewer than 32 are left, unless the bytes left
/// are fewer than `plenty` too, then either. A command that failed so has
/// removed its lock and temporary files by the time it says why, which
/// gives some of each back: until December 2026 bytes were not looked at,
/// and an ext4 made with few inodes and filled to its last block was said
/// to be out of inodes, with 9 of them left, and not full, which the
/// space reserve would have let forget and gc run on.
pub fn shortage(inodes: Option<u64>, bytes: Option<u64>, plenty: u64) -> Shortage {
    match (
        inodes.is_some_and(|n| n < 32),
        bytes.is_some_and(|b| b >= plenty),
    ) {
        (false, _) => Shortage::Bytes,
        (true, true) => Shortage::Inodes,
        (true, false) => Shortage::Both,
    }
}

/// The inodes (file entries) left to an unprivileged user on the
/// filesystem holding `path`; `None` where the filesystem makes them as it
/// goes (btrfs, ZFS report none). A filesystem out of inodes refuses a
/// new file with "no space left on device" while `df` shows bytes free.
pub fn free_inodes(path: &Path) -> std::io::Result<Option<u64>> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is NUL-terminated and `st` is written by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_files > 0).then_some(st.f_favail as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_outside_what_nanoseconds_hold_is_clamped() {
        assert_eq!(time_ns(1_600_000_000, 42), 1_600_000_000_000_000_042);
        assert_eq!(time_ns(-1, 500), -999_999_500);
        let last = (i64::MAX / 1_000_000_000, i64::MAX % 1_000_000_000);
        assert_eq!(time_ns(last.0, last.1), i64::MAX);
        assert_eq!(time_ns(last.0, last.1 + 1), i64::MAX);
        // The year 2300, and the year 1600.
        assert_eq!(time_ns(10_413_792_000, 0), i64::MAX);
        assert_eq!(time_ns(-11_676_096_000, 0), i64::MIN);
        assert_eq!(time_ns(i64::MAX, 999_999_999), i64::MAX);
        assert_eq!(time_ns(i64::MIN, 0), i64::MIN);
        // Restore sets a clamped time back as it is.
        let ts = timespec(i64::MAX);
        assert_eq!((ts.tv_sec, ts.tv_nsec), last);
        let ts = timespec(i64::MIN);
        assert_eq!(time_ns(ts.tv_sec, ts.tv_nsec), i64::MIN);
    }
}
