//! Targets whose filesystem does not tell names apart by case (exFAT and
//! FAT on a USB stick, NTFS, SMB shares, ext4 folders with `+F`): there
//! `README` and `readme` are one entry, and restoring both would have the
//! second overwrite the first, silently, while a mirror would remove an
//! entry whose name differs from the snapshot's only in case, taking the
//! restored file with it.
//!
//! A restore asks once, at the start, whether its target is such a
//! folder (see [`insensitive`]); if so, names are compared folded (see
//! [`fold`]): of a folder's names that fold alike only the first is
//! restored and the others are errors, and a mirror keeps every entry
//! whose folded name is the snapshot's.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// `name` as a case-insensitive filesystem compares it: each letter in
/// lower case (Unicode's mapping), or ASCII's for a name that is not
/// UTF-8. Filesystems that also equate Unicode's normalization forms
/// (ext4's casefolding) equate more names than this does.
pub(super) fn fold(name: &[u8]) -> Cow<'_, [u8]> {
    match std::str::from_utf8(name) {
        Ok(s) if s.chars().any(char::is_uppercase) => Cow::Owned(s.to_lowercase().into_bytes()),
        Ok(_) => Cow::Borrowed(name),
        Err(_) if name.iter().any(u8::is_ascii_uppercase) => Cow::Owned(name.to_ascii_lowercase()),
        Err(_) => Cow::Borrowed(name),
    }
}

/// Whether names in `target` (an existing folder) are looked up without
/// regard to case. A real restore asks the filesystem directly: it makes
/// an empty file of a random lower-case name there, looks it up in upper
/// case, and removes it. A dry run changes nothing: it looks up, in
/// swapped case, a name that the target (or, for a target not made yet,
/// the folder it would be made in) holds and whose swapped form it does
/// not; with no such name, it takes the target to tell case apart.
///
/// The answer is whether the other name is found, not whether it is the
/// same file by inode: a FUSE filesystem (exfat-fuse) numbers each name
/// looked up afresh.
pub(super) fn insensitive(target: &Path, dry_run: bool) -> bool {
    if dry_run {
        return nearest_existing(target).is_some_and(|d| by_entries(&d) == Some(true));
    }
    let name = format!(
        ".cairn-case-probe-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let probe = target.join(&name);
    if fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .is_err()
    {
        // A target that takes no new file takes no restored file either;
        // whatever it is, the restore's own writes will say so.
        return false;
    }
    let seen = fs::symlink_metadata(target.join(name.to_uppercase())).is_ok();
    let _ = fs::remove_file(&probe);
    seen
}

/// `path`, or its nearest ancestor that exists.
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .find(|p| fs::symlink_metadata(p).is_ok_and(|md| md.is_dir()))
        .map(Path::to_path_buf)
}

/// Looks up a name of `dir` with a cased letter, whose form with each
/// ASCII letter's case swapped `dir` does not list, under that form:
/// `None` when no name serves.
fn by_entries(dir: &Path) -> Option<bool> {
    let names: HashSet<String> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let swapped = names.iter().find_map(|name| {
        let swapped: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        (swapped != *name && !names.contains(&swapped)).then_some(swapped)
    })?;
    match fs::symlink_metadata(dir.join(swapped)) {
        Ok(_) => Some(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_to_lower_case_utf8_or_not() {
        assert_eq!(&*fold(b"README.md"), b"readme.md");
        assert_eq!(&*fold("ÄRGER".as_bytes()), "ärger".as_bytes());
        assert!(matches!(fold(b"plain"), Cow::Borrowed(_)));
        assert_eq!(&*fold(b"AB\xffc"), b"ab\xffc");
        assert!(matches!(fold(b"ab\xff"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_folder_of_this_filesystem_tells_case_apart() {
        // The tests' folders are on filesystems that tell case apart
        // (tests/case_insensitive.rs restores onto one that does not).
        let dir = tempfile::tempdir().unwrap();
        assert!(!insensitive(dir.path(), false));
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe is removed"
        );
        fs::write(dir.path().join("Name"), b"").unwrap();
        assert_eq!(by_entries(dir.path()), Some(false));
        assert!(!insensitive(&dir.path().join("not/made"), true));
    }
}
