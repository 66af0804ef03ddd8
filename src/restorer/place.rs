//! Files in progress: written unnamed (`O_TMPFILE`) or under a temporary
//! name, and linked or renamed into place once whole.

use super::*;

pub(super) enum Prepared<'p> {
    Write(Box<FileTask<'p>>),
    /// A dry run's decision to write the file.
    WouldWrite,
    Unchanged,
    Skipped,
}

/// A file being written: its temporary file fills as packs are read.
pub(super) struct FileTask<'p> {
    pub(super) dest: PathBuf,
    /// Whether something was at `dest` when the restore looked.
    pub(super) replace: bool,
    /// The temporary file's name, once one is created under a name; an
    /// unnamed file (`O_TMPFILE`) has none. Acted on through
    /// [`super::beneath`], as every path in the target. The latest name:
    /// a file given up when its space could not be reserved is removed,
    /// and should another worker's chunk create it again, that is the
    /// name to remove (until December 2026 the first was kept, and the
    /// second file, its blocks reserved, was left in the target).
    pub(super) tmp: Mutex<Option<PathBuf>>,
    /// The device and inode of the file created under `tmp`: a transient
    /// file reopened by name must still be it (see [`reopen`]).
    pub(super) tmp_inode: Mutex<Option<(u64, u64)>>,
    pub(super) node: &'p Node,
    /// Created by the first write (see `Executor::create_file`) and held
    /// until the file is whole.
    pub(super) file: Mutex<Option<fs::File>>,
    pub(super) remaining: AtomicUsize,
    pub(super) error: Mutex<Option<String>>,
    pub(super) done: std::sync::atomic::AtomicBool,
    /// Whether the file got its final size when it was created.
    pub(super) sized: std::sync::atomic::AtomicBool,
    /// Whether its reserved space is counted in `Executor::reserved`
    /// (cleared when the task ends, so it is counted out once).
    pub(super) reserve_counted: std::sync::atomic::AtomicBool,
    /// Whether an all-zero chunk, or a zero block of one, was left
    /// unwritten (a hole).
    pub(super) holes: std::sync::atomic::AtomicBool,
    /// Whether the file gets holes where its chunks hold whole zero
    /// blocks too: one not reserved that has an all-zero chunk (see
    /// `Executor::size_file`), a sparse file as backed up.
    pub(super) sparse: std::sync::atomic::AtomicBool,
    /// Whether the file, created past the open budget, is closed after
    /// each write and reopened by name (`tmp`) for the next.
    pub(super) transient: std::sync::atomic::AtomicBool,
    /// Its place in the batch's files.
    pub(super) item: usize,
}

impl FileTask<'_> {
    pub(super) fn fail(&self, why: impl std::fmt::Display) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert_with(|| why.to_string());
        }
    }

    pub(super) fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// The temporary file's name, if it has one (see `tmp`).
    pub(super) fn tmp_name(&self) -> Option<PathBuf> {
        self.tmp.lock().ok().and_then(|t| t.clone())
    }

    pub(super) fn failed(&self) -> bool {
        self.error.lock().map(|e| e.is_some()).unwrap_or(true)
    }

    /// Gives up the file: closes it (an unnamed file vanishes with its
    /// descriptor) and removes a named temporary file. True if it closed
    /// a descriptor held open.
    pub(super) fn discard(&self, beneath: &super::beneath::Beneath) -> bool {
        let closed = self.file.lock().is_ok_and(|mut f| f.take().is_some());
        if let Some(tmp) = self.tmp_name() {
            if let Ok(at) = beneath.at(&tmp) {
                let _ = fs::remove_file(&*at);
            }
        }
        closed
    }
}

/// Opens the temporary file `tmp` again for writing, never through a
/// symlink, and only if it is still the file created there, device and
/// inode `made`: anyone who may write to the target's folder could have
/// put another name there meanwhile, a hard link to a file outside the
/// target, which a restore run as root would otherwise write into.
pub(super) fn reopen(tmp: &Path, made: Option<(u64, u64)>) -> std::io::Result<fs::File> {
    use std::os::fd::AsRawFd;
    // Checked before it is opened for writing, through a descriptor that
    // opens nothing (`O_PATH`): another file is not even opened for
    // writing, which its watchers would hear of.
    let entry = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(tmp)?;
    still_made(&entry, made)?;
    let write = |path: &Path| {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
    };
    // The inode checked, opened through its descriptor; without `/proc`,
    // by name again, and checked once more.
    let file = match OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", entry.as_raw_fd()))
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write(tmp)?,
        r => r?,
    };
    still_made(&file, made)?;
    Ok(file)
}

/// Fails unless `file` is the file restore made, device and inode `made`.
pub(super) fn still_made(file: &fs::File, made: Option<(u64, u64)>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = file.metadata()?;
    if made != Some((md.dev(), md.ino())) {
        return Err(std::io::Error::other(
            "the temporary file was replaced by another while the restore wrote it (someone \
             else writes to the target); left alone",
        ));
    }
    Ok(())
}

/// A fresh temporary name in `dir`. Not derived from the file's name:
/// that may already be as long as the filesystem allows.
pub(super) fn temp_name(dir: &Path) -> PathBuf {
    dir.join(format!(
        ".cairn-restore-{}",
        hex::encode(crate::crypto::random_bytes::<8>())
    ))
}

/// The temporary name `dest` is replaced through (see [`link_unnamed`]),
/// beside it: derived from its name, so that the one a restore killed
/// between link and rename left is met, and removed, by the restore run
/// again, which replaces `dest` once more (a `merge` removes nothing
/// else). Until December 2026 it was random, and only a `mirror` removed
/// it.
pub(super) fn replacing_name(dest: &Path) -> PathBuf {
    let name = dest.file_name().map_or(&[][..], |n| n.as_bytes());
    let hash = blake3::hash(name);
    dest.with_file_name(format!(
        ".cairn-restore-{}",
        hex::encode(&hash.as_bytes()[..8])
    ))
}

/// Links the unnamed file open as `file` under `dest`. To `replace` what
/// is there (or should something have appeared there since the restore
/// looked), the file is linked under a temporary name and renamed over
/// it, as a named temporary file would be.
pub(super) fn link_unnamed(
    file: &fs::File,
    dest: &Path,
    in_dir: Option<(i32, &OsStr)>,
    replace: bool,
) -> std::result::Result<(), Unplaced> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicBool;
    // Linking the descriptor itself takes a capability (root has it);
    // without it, the file is named through /proc, at the cost of a walk
    // of /proc on each link.
    static BY_DESCRIPTOR: AtomicBool = AtomicBool::new(true);
    let link = |(dir, to): (i32, &Path)| {
        if BY_DESCRIPTOR.load(Ordering::Relaxed) {
            match link_fd(file.as_raw_fd(), dir, to, true) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                done => return done,
            }
            let r = link_fd(file.as_raw_fd(), dir, to, false);
            if r.is_ok() {
                BY_DESCRIPTOR.store(false, Ordering::Relaxed);
            }
            return r;
        }
        link_fd(file.as_raw_fd(), dir, to, false)
    };
    let direct = if replace {
        Err(std::io::ErrorKind::AlreadyExists.into())
    } else {
        link(in_dir.map_or((libc::AT_FDCWD, dest), |(d, name)| (d, Path::new(name))))
    };
    match direct {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let tmp = replacing_name(dest);
            let linked = match link((libc::AT_FDCWD, &tmp)) {
                // A killed restore's: a regular file, never a folder or
                // a link someone put there.
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_file()) =>
                {
                    fs::remove_file(&tmp).map_err(Unplaced::Link)?;
                    link((libc::AT_FDCWD, &tmp))
                }
                linked => linked,
            };
            linked.map_err(Unplaced::Link)?;
            fs::rename(&tmp, dest).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Unplaced::Rename(e)
            })
        }
        Err(e) => Err(Unplaced::Link(e)),
    }
}

/// A new unnamed file (`O_TMPFILE`) in the folder open as `dir`, readable
/// too (for a copy, should linking it be refused).
pub(super) fn unnamed_in(dir: i32, mode: u32) -> std::io::Result<fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: "." is a NUL-terminated string and `dir` is open.
    let fd = unsafe {
        libc::openat(
            dir,
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just opened and is owned by no one else.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

/// Whether an unnamed file made in `dir` can be linked under a name
/// there: the filesystem has `O_TMPFILE`, and the system lets this
/// process link it (through `/proc`, or by descriptor as root). Leaves
/// nothing behind. A filesystem too full to say counts as one that
/// can: until December 2026 a restore onto a full one created every file
/// under a temporary name, which a restore killed then left behind.
pub(super) fn unnamed_files_link(dir: &Path) -> bool {
    let made = match crate::fault::tmpfile_full() {
        Some(e) => Err(e),
        None => OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir),
    };
    let file = match made {
        Ok(file) => file,
        Err(e) => return crate::error::is_full(&e),
    };
    let probe = temp_name(dir);
    match link_unnamed(&file, &probe, None, false) {
        Ok(()) => {
            let _ = fs::remove_file(&probe);
            true
        }
        Err(Unplaced::Link(e) | Unplaced::Rename(e)) => crate::error::is_full(&e),
    }
}

/// Why [`link_unnamed`] failed.
#[derive(Debug)]
pub(super) enum Unplaced {
    /// The file could not be linked: the system refuses to name unnamed
    /// files (a security module, say), or the folder is gone.
    Link(std::io::Error),
    /// It was linked under a temporary name, which could not be renamed
    /// over the entry to replace.
    Rename(std::io::Error),
}

/// Copies the unnamed file open as `file` into a new file under a
/// temporary name next to `dest`; returns that name and the new file,
/// for when the unnamed one cannot be linked.
pub(super) fn copy_to_temp(
    file: &mut fs::File,
    dest: &Path,
) -> std::io::Result<(PathBuf, fs::File)> {
    use std::io::{Seek, SeekFrom};
    let tmp = temp_name(dest.parent().unwrap_or(dest));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)?;
    let copied = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| std::io::copy(file, &mut out));
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((tmp, out))
}

/// `linkat` of the file open as `fd` to `to` (relative to the folder open
/// as `dir`, or `AT_FDCWD`): of the descriptor itself (`AT_EMPTY_PATH`,
/// which without `CAP_DAC_READ_SEARCH` fails with `ENOENT`), or of its
/// name under `/proc/self/fd`.
pub(super) fn link_fd(fd: i32, dir: i32, to: &Path, by_descriptor: bool) -> std::io::Result<()> {
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    let r = if by_descriptor {
        // SAFETY: "" and `to` are NUL-terminated strings that outlive the
        // call.
        unsafe { libc::linkat(fd, c"".as_ptr(), dir, to.as_ptr(), libc::AT_EMPTY_PATH) }
    } else {
        let from = std::ffi::CString::new(format!("/proc/self/fd/{fd}"))?;
        // SAFETY: both are NUL-terminated strings that outlive the call.
        unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                dir,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        }
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unnamed file gets its name both ways `link_unnamed` knows, and
    /// `replace` puts it over an existing file; nothing else is left.
    #[test]
    pub(super) fn unnamed_files_are_linked_by_descriptor_or_through_proc() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let unnamed = |text: &str| {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o600)
                .open(dir.path())
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
            f
        };
        let names = || {
            let mut v: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert!(names().is_empty());

        let proc = dir.path().join("through-proc");
        link_fd(unnamed("by name").as_raw_fd(), libc::AT_FDCWD, &proc, false).unwrap();
        assert_eq!(fs::read_to_string(&proc).unwrap(), "by name");
        let by_fd = dir.path().join("by-descriptor");
        match link_fd(unnamed("by fd").as_raw_fd(), libc::AT_FDCWD, &by_fd, true) {
            Ok(()) => assert_eq!(fs::read_to_string(&by_fd).unwrap(), "by fd"),
            // Without CAP_DAC_READ_SEARCH; link_unnamed then uses /proc.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}"),
        }
        let _ = fs::remove_file(&by_fd);

        // Something appeared at the name since the restore looked.
        link_unnamed(&unnamed("again"), &proc, None, false).unwrap();
        assert_eq!(fs::read_to_string(&proc).unwrap(), "again");
        link_unnamed(&unnamed("replaced"), &proc, None, true).unwrap();
        assert_eq!(fs::read_to_string(&proc).unwrap(), "replaced");
        assert_eq!(names(), ["through-proc"]);
        // A restore killed between link and rename left its temporary
        // name: the one run again, replacing the file once more, removes
        // it.
        let left = replacing_name(&proc);
        fs::write(&left, "a killed restore's").unwrap();
        link_unnamed(&unnamed("once more"), &proc, None, true).unwrap();
        assert_eq!(fs::read_to_string(&proc).unwrap(), "once more");
        assert_eq!(names(), ["through-proc"]);
        // A folder or a symlink there is not taken for one.
        fs::create_dir(&left).unwrap();
        assert!(link_unnamed(&unnamed("refused"), &proc, None, true).is_err());
        assert_eq!(fs::read_to_string(&proc).unwrap(), "once more");
        fs::remove_dir(&left).unwrap();

        // The probe a restore makes first leaves nothing behind.
        assert!(unnamed_files_link(dir.path()));
        assert_eq!(names(), ["through-proc"]);
        assert!(!unnamed_files_link(&dir.path().join("missing")));

        // Where linking is refused, the file is copied to a temporary name.
        let mut refused = unnamed("copied out");
        let (tmp, copy) = copy_to_temp(&mut refused, &dir.path().join("copy")).unwrap();
        drop(copy);
        assert_eq!(fs::read_to_string(&tmp).unwrap(), "copied out");
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".cairn-restore-"), "{name}");
        fs::remove_file(&tmp).unwrap();
        assert_eq!(names(), ["through-proc"]);
    }
}
