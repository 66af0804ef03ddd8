//! What a restore removes: under the mirror policy, the entries of a
//! folder that the snapshot lacks, and (any policy that replaces) a
//! folder where the snapshot has something else (see [`Executor::clear`]).
//!
//! Everything is removed through descriptors, never by path: a folder
//! is opened from its parent's without following a symlink there
//! (`O_NOFOLLOW`), listed through its own descriptor, and its entries
//! removed relative to it (`unlinkat`), so a symlink met is removed as
//! itself, and nothing is reached through one, even one swapped in
//! while the removal runs.
//!
//! A removal never crosses into another mount. An entry that is a mount
//! point (a filesystem, or a bind mount of any folder or file, mounted
//! there) is left in place with what is mounted there; so is an entry
//! that is, or holds, the repository or its metadata cache (see
//! [`crate::repo::own`]), wherever in the tree being removed it lies;
//! and so are the folders holding such an entry. What lies beside them
//! goes. A mount point is told by `statx`: its mount id differs from its
//! folder's (`STATX_MNT_ID`), or it is a mount's root
//! (`STATX_ATTR_MOUNT_ROOT`) or an automount point; where the kernel
//! tells neither (before Linux 5.8), by its device differing from its
//! folder's, which misses a bind mount of the same filesystem and takes a
//! btrfs subvolume for a mount. Each folder is judged again once opened,
//! through its descriptor, so one mounted on after it was looked at is
//! not entered either: what is removed through the descriptor is the
//! folder's own. Until December 2026 a folder went by `remove_dir_all`,
//! which emptied whatever was mounted beneath it (a bind mount of the
//! repository, say) before failing on the mount point itself.

use crate::escape::Show;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use super::*;

/// What a removal needs to know of an entry, from a `statx` that follows
/// no symlink and triggers no automount.
#[derive(Clone, Copy, Debug)]
struct Place {
    dev: u64,
    ino: u64,
    uid: u32,
    mode: u32,
    /// The id of the mount it is on, where the kernel tells it.
    mnt: Option<u64>,
    /// Whether it is a mount's root, or a point something is mounted on
    /// when reached (autofs).
    mount_root: bool,
}

impl Place {
    /// The entry `name` of the folder open at `dir`, or with `None` the
    /// folder itself.
    fn at(dir: BorrowedFd<'_>, name: Option<&OsStr>) -> io::Result<Place> {
        let c = CString::new(name.map_or(&[][..], |n| n.as_bytes()))?;
        let mut flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT;
        if name.is_none() {
            flags |= libc::AT_EMPTY_PATH;
        }
        let mask = libc::STATX_TYPE
            | libc::STATX_MODE
            | libc::STATX_UID
            | libc::STATX_INO
            | libc::STATX_MNT_ID;
        // SAFETY: all-zero bytes are a valid `struct statx`.
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is NUL-terminated and `st` writable, both for the
        // call's duration; the descriptor is borrowed, so open.
        let r = unsafe { libc::statx(dir.as_raw_fd(), c.as_ptr(), flags, mask, &mut st) };
        if r != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // No statx (before Linux 4.11, or a sandbox refusing it):
                // no mount ids either.
                Some(libc::ENOSYS | libc::EPERM) => Place::by_fstatat(dir, name),
                _ => Err(e),
            };
        }
        let has = |attr: libc::c_int| {
            let attr = attr as u64;
            st.stx_attributes_mask & attr != 0 && st.stx_attributes & attr != 0
        };
        Ok(Place {
            dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            uid: st.stx_uid,
            mode: u32::from(st.stx_mode),
            mnt: (st.stx_mask & libc::STATX_MNT_ID != 0).then_some(st.stx_mnt_id),
            mount_root: has(libc::STATX_ATTR_MOUNT_ROOT) || has(libc::STATX_ATTR_AUTOMOUNT),
        })
    }

    fn by_fstatat(dir: BorrowedFd<'_>, name: Option<&OsStr>) -> io::Result<Place> {
        let st = fsmeta::Stat::at(dir, name.unwrap_or_default()).or_else(|e| match name {
            // The folder itself: its descriptor's metadata.
            None => {
                let dup = dir.try_clone_to_owned()?;
                Ok(fsmeta::Stat::of(&fs::File::from(dup).metadata()?))
            }
            Some(_) => Err(e),
        })?;
        Ok(Place {
            dev: st.dev,
            ino: st.ino,
            uid: st.uid,
            mode: st.mode,
            mnt: None,
            mount_root: false,
        })
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// Whether this entry of the folder whose place is `folder` has
    /// something mounted on it.
    fn mounted_in(&self, folder: &Place) -> bool {
        self.mount_root
            || match (self.mnt, folder.mnt) {
                (Some(a), Some(b)) => a != b,
                _ => self.dev != folder.dev,
            }
    }
}

/// Why an entry met removing a folder was left in place.
enum Left {
    /// Something is mounted on it.
    Mount,
    /// It is, or holds, the repository or its cache (the folder, and
    /// what it is).
    Own(PathBuf, &'static str),
    /// Removing it, or listing it, failed: why.
    Failed(String),
}

/// How removing an entry went.
#[derive(Default)]
struct Removal {
    /// Entries removed (or, in a dry run, that would be), counted as
    /// they are listed: the entry alone when it went whole, else what
    /// went beneath it.
    removed: u64,
    /// Entries beneath it left for an exclude.
    kept: u64,
    /// Whether the entry itself went (or would), with all it held.
    whole: bool,
    /// Whether its folder refused its removal (no permission, a
    /// read-only filesystem): so would it every other entry's.
    refused: bool,
}

impl Executor<'_> {
    /// Whether something is mounted on the entry of the target at `path`
    /// (a bind mount of a file, as containers have at `/etc/hosts`): a
    /// restore neither replaces nor changes it (see [`not_replaced`]),
    /// as what is mounted there is another filesystem's, or a file
    /// elsewhere. False where it cannot be told.
    pub(super) fn mounted(&self, path: &Path) -> bool {
        let Ok(at) = self.beneath.at(path) else {
            return false;
        };
        let parent;
        let (dir, name) = match at.in_dir() {
            // SAFETY: `at` holds the descriptor open while it is borrowed.
            Some((fd, name)) => (unsafe { BorrowedFd::borrow_raw(fd) }, name),
            // Without `/proc`: by the path, as every entry is then.
            None => match (path.parent().map(fs::File::open), path.file_name()) {
                (Some(Ok(p)), Some(name)) => {
                    parent = p;
                    (parent.as_fd(), name)
                }
                _ => return false,
            },
        };
        match (Place::at(dir, None), Place::at(dir, Some(name))) {
            (Ok(folder), Ok(entry)) => entry.mounted_in(&folder),
            _ => false,
        }
    }

    /// Removes entries of `dir` not named in `m.names` (folded, unless the
    /// target tells case apart: see [`super::case`]); returns how many,
    /// and how many it left as the restore's patterns do not select them
    /// (see [`Executor::selects`]). A dry run lists them in
    /// `would_remove` instead.
    pub(super) fn remove_extra(
        &self,
        dir: &Path,
        m: &Mirrored,
        would_remove: &mut Vec<PathBuf>,
        opened: &mut Vec<(PathBuf, ModeBack)>,
    ) -> (u64, u64) {
        if self.fresh(dir) {
            return (0, 0);
        }
        // A folder the restore selects nothing in may well not be there
        // (it is not made): nothing to prune. Only a look: what is there
        // is opened below, safely. One that cannot be looked at is, and
        // fails there, said.
        if m.unselected {
            match fs::symlink_metadata(dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return (0, 0),
                Ok(md) if !md.is_dir() => return (0, 0),
                _ => {}
            }
        }
        // Nor is it opened up to its owner, as a folder the restore goes
        // into is by an ordinary user: opened up here, and given its mode
        // back once those beneath it are pruned (`opened`, held by its
        // place in the target, `m.rel`, and dropped by the caller; until
        // December 2026 a read-only one failed, "Permission denied", where
        // its dry run said it would prune it).
        // So is the target itself, which the restore neither makes nor
        // gives metadata (a read-only target of the user's failed,
        // "Permission denied", where the dry run said it would prune it).
        let opens_up = m.unselected || dir == self.target;
        if let Some(back) = (opens_up && !self.root && !self.dry_run)
            .then(|| self.beneath.at(dir).ok())
            .flatten()
            .and_then(|at| ModeBack::open_up(&at, dir != self.target))
        {
            opened.push((m.rel.clone(), back));
        }
        // The folder itself is opened without following a symlink put in
        // its place since it was made (someone else who can write in the
        // target could), and listed and pruned through that descriptor:
        // never what such a symlink leads to. Only the target is reached
        // through a symlink to follow: its own descriptor's name in
        // `/proc`. A folder that cannot be listed is said to keep what
        // else it holds (until December 2026 it kept it without a word,
        // exit 0).
        let listed = self
            .beneath
            .at(dir)
            .and_then(|at| {
                let folder = open_dir(&at, dir != self.target)?;
                let place = Place::at(folder.as_fd(), None)?;
                let names = names_in(folder.as_fd())?;
                Ok((folder, place, names))
            })
            .map_err(|e| self.dry_run_refusal(dir, e));
        let (folder, place, names) = match listed {
            Ok(listed) => listed,
            Err(e) => {
                self.fail(
                    dir,
                    format!("cannot list it, so what else it holds than the snapshot's entries is left in place: {e}"),
                );
                return (0, 0);
            }
        };
        let (mut n, mut kept) = (0, 0);
        for name in names {
            if m.names
                .contains_sorted(&self.case.mirror_key(name.as_bytes()))
            {
                continue;
            }
            let p = dir.join(&name);
            // Gone since it was listed: nothing to remove.
            let Ok(entry) = Place::at(folder.as_fd(), Some(&name)) else {
                continue;
            };
            if let Some((own, what)) = self.own.is_or_holds(entry.dev, entry.ino) {
                note_own(&p, own, what);
                continue;
            }
            let abs = [&m.abs[..], b"/", name.as_bytes()].concat();
            if !self.selects(&abs, name.as_bytes(), entry.is_dir(), m.included) {
                kept += 1;
                continue;
            }
            // What the excludes select beneath a folder the snapshot
            // lacks stays, and so does the folder then.
            if entry.is_dir() && !self.dry_run {
                self.beneath.forget(&p);
            }
            let mut left = Vec::new();
            let r = self.remove_at(
                folder.as_fd(),
                &place,
                (&name, entry),
                &p,
                self.any_excludes().then_some(&abs[..]),
                would_remove,
                &mut left,
            );
            for (at, why) in left {
                match why {
                    Left::Own(own, what) => note_own(&at, &own, what),
                    Left::Mount => self.fail(&at, left_mounted(&at, &p, self.dry_run)),
                    Left::Failed(why) => self.fail(&at, why),
                }
            }
            n += r.removed;
            kept += r.kept;
        }
        (n, kept)
    }

    /// Removes the folder at `path`, whose `lstat` is `md`, with all it
    /// holds, where the snapshot has `what` (a file, say): but for what
    /// lies on another mount or is the repository's (see the module
    /// docs), which is left with the folders holding it, and makes this
    /// an error naming it. A dry run removes nothing. A folder that held
    /// something is counted and, in a dry run, listed as a mirror's
    /// removals are: it is gone with all it held.
    pub(super) fn remove_folder(&self, path: &Path, md: &fs::Metadata, what: &str) -> Result<()> {
        let dir = self
            .parent_of(path)
            .map_err(|e| Error::path("remove", path, e))?;
        let Some(name) = path.file_name() else {
            return Err(Error::Invalid(format!(
                "{}: cannot remove a folder named by `.` or `..`; give the target by its name",
                path.shown()
            )));
        };
        let (folder, entry) = match (
            Place::at(dir.as_fd(), None),
            Place::at(dir.as_fd(), Some(name)),
        ) {
            (Ok(folder), Ok(entry)) if (entry.dev, entry.ino) == (md.dev(), md.ino()) => {
                (folder, entry)
            }
            (Err(e), _) | (_, Err(e)) => return Err(Error::path("remove", path, e)),
            _ => {
                return Err(Error::Invalid(format!(
                    "{}: replaced since the restore looked at it: left as it is",
                    path.shown()
                )))
            }
        };
        let held = holds_any(dir.as_fd(), name).unwrap_or(true);
        let mut listed = Vec::new();
        let mut left = Vec::new();
        self.beneath.forget(path);
        // What the excludes match beneath it stays, as a mirror leaves
        // it anywhere else, and so does the folder then (until December
        // 2026 it went whole, excluded files and all, exit 0).
        let abs = self
            .any_excludes()
            .then(|| self.backed_up_as(path))
            .flatten();
        let r = self.remove_at(
            dir.as_fd(),
            &folder,
            (name, entry),
            path,
            abs.as_deref(),
            &mut listed,
            &mut left,
        );
        let counted = if r.whole { u64::from(held) } else { r.removed };
        if counted > 0 {
            self.replaced.fetch_add(counted, Ordering::Relaxed);
            if self.dry_run {
                if let Ok(mut w) = self.would_replace.lock() {
                    w.append(&mut listed);
                }
            }
        }
        if r.whole {
            return Ok(());
        }
        let reasons = left.into_iter().map(|(at, why)| match why {
            Left::Mount => format!(
                "{} is {MOUNT_POINT}, which a restore never removes",
                at.shown()
            ),
            Left::Own(own, what) => {
                format!("{} is or leads to {what} ({})", at.shown(), own.shown())
            }
            Left::Failed(why) => format!("{}: {why}", at.shown()),
        });
        let kept = (r.kept > 0).then(|| {
            format!(
                "it holds {} entr{} the excludes keep",
                r.kept,
                if r.kept == 1 { "y" } else { "ies" }
            )
        });
        let mut reasons = kept.into_iter().chain(reasons);
        let first = reasons.next().unwrap_or_default();
        let more = match reasons.count() {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        Err(Error::Invalid(format!(
            "a folder in the target, where the snapshot has {what}: {first}{more}, so the \
             folder {} left in place{}",
            if self.dry_run { "would be" } else { "is" },
            if r.removed > 0 {
                if self.dry_run {
                    " (what else it holds would be removed)"
                } else {
                    " (what else it held is removed)"
                }
            } else {
                ""
            }
        )))
    }

    /// The folder holding `path` (an entry of the target), open, reached
    /// as [`beneath::Beneath::at`] reaches it.
    fn parent_of(&self, path: &Path) -> io::Result<OwnedFd> {
        let at = self.beneath.at(path)?;
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
        let fd = match at.in_dir() {
            // SAFETY: "." is NUL-terminated; `at` holds the descriptor
            // open for the call.
            Some((dir, _)) => unsafe { libc::openat(dir, c".".as_ptr(), flags) },
            // Without `/proc` the paths are used as they are (see
            // `beneath`).
            None => {
                let parent = path.parent().unwrap_or(Path::new("."));
                let c = CString::new(parent.as_os_str().as_bytes())?;
                // SAFETY: `c` is NUL-terminated for the call.
                unsafe { libc::open(c.as_ptr(), flags) }
            }
        };
        owned(fd)
    }

    /// Removes the entry `name` of the folder open at `dir` (whose place
    /// is `folder`), whose place is `entry`, shown as `shown`, with all
    /// it holds: but what is mounted on or is cairn's own (see the module
    /// docs), which goes to `left`, and, given `abs` (its path as backed
    /// up), what an exclude matches. Those stay, and so do the folders
    /// holding them. A dry run removes nothing, and lists in `listed`
    /// what would go: the entry alone when it would go whole, else what
    /// would go beneath it.
    #[allow(clippy::too_many_arguments)]
    fn remove_at(
        &self,
        dir: BorrowedFd<'_>,
        folder: &Place,
        (name, entry): (&OsStr, Place),
        shown: &Path,
        abs: Option<&[u8]>,
        listed: &mut Vec<PathBuf>,
        left: &mut Vec<(PathBuf, Left)>,
    ) -> Removal {
        let judged = |place: &Place| {
            if let Some((own, what)) = self.own.is_or_holds(place.dev, place.ino) {
                Some(Left::Own(own.to_path_buf(), what))
            } else if place.mounted_in(folder) {
                Some(Left::Mount)
            } else {
                None
            }
        };
        if let Some(why) = judged(&entry) {
            left.push((shown.to_path_buf(), why));
            return Removal::default();
        }
        let went = |listed: &mut Vec<PathBuf>| {
            if self.dry_run {
                listed.push(shown.to_path_buf());
            }
            Removal {
                removed: 1,
                whole: true,
                ..Removal::default()
            }
        };
        if !entry.is_dir() {
            if self.dry_run {
                return went(listed);
            }
            return match unlink_at(dir, name, 0) {
                Ok(()) => went(listed),
                Err(e) if e.kind() == io::ErrorKind::NotFound => went(listed),
                Err(e) => self.not_removed(shown, e, left),
            };
        }
        // Restoring as an ordinary user, a folder of the user's without
        // read, write or search permission is opened up to be emptied;
        // one that stays, holding what is left, gets its mode back.
        let opened = (!self.root && !self.dry_run)
            .then(|| open_up(dir, name, &entry))
            .flatten();
        let opened_dir = open_dir_at(dir, name);
        let close = |sub: Option<&OwnedFd>| {
            if let (Some(mode), Some(sub)) = (opened, sub) {
                // SAFETY: fchmod on a descriptor `sub` holds open.
                unsafe { libc::fchmod(sub.as_raw_fd(), mode) };
            }
        };
        let sub = match opened_dir {
            Ok(sub) => sub,
            // A dry run of an ordinary user does not open up a folder of
            // the user's that the real run would: it goes, unseen.
            Err(e)
                if e.kind() == io::ErrorKind::PermissionDenied
                    && self.dry_run
                    && !self.root
                    && entry.uid == fsmeta::euid() =>
            {
                return went(listed);
            }
            Err(e) => {
                // No longer a folder: removed as what it is now, judged
                // again.
                if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) {
                    if let Ok(now) = Place::at(dir, Some(name)) {
                        if !now.is_dir() {
                            return self.remove_at(
                                dir,
                                folder,
                                (name, now),
                                shown,
                                abs,
                                listed,
                                left,
                            );
                        }
                    }
                }
                left.push((
                    shown.to_path_buf(),
                    Left::Failed(format!("cannot remove: {e}")),
                ));
                return Removal::default();
            }
        };
        // Judged again as opened: the folder may have been replaced, or
        // mounted on, since it was looked at. What is removed beneath is
        // removed through this descriptor, in this folder.
        let here = match Place::at(sub.as_fd(), None) {
            Ok(here) => here,
            Err(e) => {
                left.push((
                    shown.to_path_buf(),
                    Left::Failed(format!("cannot remove: {e}")),
                ));
                return Removal::default();
            }
        };
        if let Some(why) = judged(&here) {
            close(Some(&sub));
            left.push((shown.to_path_buf(), why));
            return Removal::default();
        }
        let names = match names_in(sub.as_fd()) {
            Ok(names) => names,
            Err(e) => {
                close(Some(&sub));
                let why = format!("cannot list it to remove it: {e}");
                left.push((shown.to_path_buf(), Left::Failed(why)));
                return Removal::default();
            }
        };
        let mut below = Vec::new();
        let mut r = Removal {
            whole: true,
            ..Removal::default()
        };
        for child in names {
            let Ok(place) = Place::at(sub.as_fd(), Some(&child)) else {
                // Gone since it was listed.
                continue;
            };
            let child_abs = abs.map(|abs| [abs, b"/", child.as_bytes()].concat());
            if let Some(child_abs) = &child_abs {
                if self.excluded(child_abs, child.as_bytes(), place.is_dir()) {
                    r.kept += 1;
                    r.whole = false;
                    continue;
                }
            }
            let c = self.remove_at(
                sub.as_fd(),
                &here,
                (&child, place),
                &shown.join(&child),
                child_abs.as_deref(),
                &mut below,
                left,
            );
            r.removed += c.removed;
            r.kept += c.kept;
            r.whole &= c.whole;
            if c.refused {
                // The rest would be refused alike: one error says it.
                break;
            }
        }
        if !r.whole {
            close(Some(&sub));
            listed.append(&mut below);
            return Removal {
                whole: false,
                refused: false,
                ..r
            };
        }
        // Nothing beneath is left: the folder goes whole, and a dry run
        // names it alone.
        if self.dry_run {
            return went(listed);
        }
        match unlink_at(dir, name, libc::AT_REMOVEDIR) {
            Ok(()) => went(listed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => went(listed),
            Err(e) => {
                close(Some(&sub));
                Removal {
                    removed: r.removed,
                    ..self.not_removed(shown, e, left)
                }
            }
        }
    }

    /// An entry at `shown` whose removal failed with `e`.
    fn not_removed(&self, shown: &Path, e: io::Error, left: &mut Vec<(PathBuf, Left)>) -> Removal {
        let refused = matches!(
            e.raw_os_error(),
            Some(libc::EACCES | libc::EPERM | libc::EROFS)
        );
        left.push((
            shown.to_path_buf(),
            Left::Failed(format!("cannot remove: {e}")),
        ));
        Removal {
            refused,
            ..Removal::default()
        }
    }

    /// Whether the restore's patterns select an entry the snapshot lacks
    /// at `abs` (its path as backed up), named `name`, in a folder
    /// `included` says an include matched (or one above it): such an
    /// entry a mirror removes, and leaves any other, as `rsync --delete`
    /// leaves what it excludes. Without includes everything is selected
    /// that no exclude matches; with them, what is in an included folder
    /// or matches one.
    fn selects(&self, abs: &[u8], name: &[u8], is_dir: bool, included: bool) -> bool {
        !self.excluded(abs, name, is_dir)
            && (included
                || self.includes.is_empty()
                || self.includes.matches_bytes(abs, name, is_dir))
    }

    /// The path as backed up of `path`, an entry of the target (see
    /// [`Executor::start`]); none for one outside it.
    fn backed_up_as(&self, path: &Path) -> Option<Vec<u8>> {
        let rel = path.strip_prefix(self.target).ok()?;
        let mut abs = self.start.to_vec();
        for c in rel.components() {
            abs.push(b'/');
            abs.extend_from_slice(c.as_os_str().as_bytes());
        }
        Some(abs)
    }

    fn any_excludes(&self) -> bool {
        !self.excludes.is_empty() || !self.backup_excludes.is_empty()
    }

    /// Whether an entry the snapshot lacks at `abs`, named `name`, is one
    /// a mirror leaves for an exclude: the restore's, or the backup's
    /// (recorded in snapshots of version 2), which kept it out of the
    /// snapshot, so that its lack says nothing of it.
    fn excluded(&self, abs: &[u8], name: &[u8], is_dir: bool) -> bool {
        self.excludes.matches_bytes(abs, name, is_dir)
            || self.backup_excludes.matches_bytes(abs, name, is_dir)
    }
}

/// The note for `at`, left in place though the snapshot lacks it, as it
/// is or leads to `own`, which is `what`.
fn note_own(at: &Path, own: &Path, what: &str) {
    crate::eprint_line(format_args!(
        "note: leaving {} in place, though the snapshot lacks it: it is or leads \
         to {what} ({})",
        crate::escape::escape(at.as_os_str().as_bytes()),
        crate::escape::escape(own.as_os_str().as_bytes())
    ));
}

/// What a mount point is.
const MOUNT_POINT: &str = "a mount point (a filesystem or a bind mount is mounted there)";

/// The error for an entry something is mounted on, where the snapshot
/// has another (see [`Executor::mounted`]).
pub(super) fn not_replaced() -> Error {
    Error::Invalid(format!(
        "{MOUNT_POINT}: a restore never replaces nor changes what is mounted there, and \
         leaves it as it is (unmount it, or leave it out with --exclude)"
    ))
}

/// The error for a mount point at `at`, met removing `top` (itself, or a
/// folder holding it), which the snapshot lacks.
fn left_mounted(at: &Path, top: &Path, dry_run: bool) -> String {
    let (leave, not) = if dry_run {
        ("would leave", "would not be")
    } else {
        ("leaves", "is not")
    };
    let holder = if at == top {
        String::new()
    } else {
        format!(", so {}, which holds it, {not} removed whole", top.shown())
    };
    format!(
        "{MOUNT_POINT}: a mirror never removes what is mounted there, and {leave} it in \
         place{holder} (unmount it, or leave it out with --exclude)"
    )
}

/// Whether the folder `name` of the folder open at `dir` holds anything;
/// `None` if it cannot be listed.
fn holds_any(dir: BorrowedFd<'_>, name: &OsStr) -> Option<bool> {
    let sub = open_dir_at(dir, name).ok()?;
    let mut stream = crate::archiver::listing::Stream::open(sub.as_fd()).ok()?;
    while let Some(n) = stream.next().ok()? {
        if n != b"." && n != b".." {
            return Some(true);
        }
    }
    Some(false)
}

/// The names in the folder open at `dir`, but `.` and `..`.
fn names_in(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut stream = crate::archiver::listing::Stream::open(dir)?;
    let mut names = Vec::new();
    while let Some(name) = stream.next()? {
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Opens the folder `name` of the folder open at `dir` for listing,
/// without following a symlink there.
fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let c = CString::new(name.as_bytes())?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c` is NUL-terminated; the descriptor is borrowed, so open.
    owned(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

/// Opens the folder at `at` for listing (without following a symlink
/// there if `nofollow`).
fn open_dir(at: &Path, nofollow: bool) -> io::Result<OwnedFd> {
    let folder = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | if nofollow { libc::O_NOFOLLOW } else { 0 })
        .open(at)?;
    Ok(folder.into())
}

/// `unlinkat` of the entry `name` of the folder open at `dir`.
fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int) -> io::Result<()> {
    let c = CString::new(name.as_bytes())?;
    // SAFETY: `c` is NUL-terminated; the descriptor is borrowed, so open.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A folder of the user's opened up to its owner (read, write and search)
/// for a prune, given its mode back when dropped.
pub(super) struct ModeBack {
    /// The folder, opened as a path (`O_PATH`), never through a symlink
    /// put in its place.
    folder: OwnedFd,
    mode: u32,
}

impl ModeBack {
    /// Opens up the folder at `at` (not following a symlink there where
    /// `nofollow`) if it is the user's and lacks any of its owner's read,
    /// write and search permission.
    fn open_up(at: &Path, nofollow: bool) -> Option<ModeBack> {
        let c = CString::new(at.as_os_str().as_bytes()).ok()?;
        let mut flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
        if nofollow {
            flags |= libc::O_NOFOLLOW;
        }
        // SAFETY: `c` is NUL-terminated.
        let folder = owned(unsafe { libc::open(c.as_ptr(), flags) }).ok()?;
        let place = Place::at(folder.as_fd(), None).ok()?;
        if !owner_lacks_access(&place) {
            return None;
        }
        let mode = place.mode & 0o7777;
        set_mode_of(folder.as_fd(), mode | 0o700).then_some(ModeBack { folder, mode })
    }
}

impl Drop for ModeBack {
    fn drop(&mut self) {
        set_mode_of(self.folder.as_fd(), self.mode);
    }
}

/// Whether `place` is a folder of the user's that lacks any of its
/// owner's read, write and search permission, which a mirror by an
/// ordinary user gives it to prune it.
fn owner_lacks_access(place: &Place) -> bool {
    place.is_dir() && place.uid == fsmeta::euid() && place.mode & 0o700 != 0o700
}

/// `chmod` of the folder open (perhaps as a path, `O_PATH`) as `fd`,
/// through its descriptor's name in `/proc`: the folder opened, not a
/// symlink put in its place since (`fchmod` refuses an `O_PATH` one).
fn set_mode_of(fd: BorrowedFd<'_>, mode: u32) -> bool {
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    fs::set_permissions(proc, fs::Permissions::from_mode(mode)).is_ok()
}

/// Gives the folder `name` of the folder open at `dir`, whose place is
/// `entry`, if it is the user's, its owner's read, write and search
/// permission where it lacks them, without following a symlink there;
/// returns the mode it had if it changed it.
fn open_up(dir: BorrowedFd<'_>, name: &OsStr, entry: &Place) -> Option<u32> {
    if !owner_lacks_access(entry) {
        return None;
    }
    let mode = entry.mode & 0o7777;
    let c = CString::new(name.as_bytes()).ok()?;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c` is NUL-terminated; the descriptor is borrowed, so open.
    let fd = owned(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) }).ok()?;
    set_mode_of(fd.as_fd(), mode | 0o700).then_some(mode)
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the descriptor was just opened and is owned by no one else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}
