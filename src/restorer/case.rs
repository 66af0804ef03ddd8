//! Targets whose filesystem does not tell names apart by case (exFAT and
//! FAT on a USB stick, NTFS, SMB shares, ext4 folders with `+F`): there
//! `README` and `readme` are one entry, and restoring both would have the
//! second overwrite the first, silently, while a mirror would remove an
//! entry whose name differs from the snapshot's only in case, taking the
//! restored file with it.
//!
//! A restore asks once, at the start, whether its target is such a
//! folder (see [`Case::of_target`]). If so, each folder's names are read
//! for names that fold alike (see [`fold`] and [`Twins`]) before it is
//! walked: only the first of them is restored and the others are errors,
//! and nothing beneath a folder of such a name is pruned by a mirror. A
//! mirror there compares folded names, keeping every entry whose name is
//! the snapshot's but for case; so does one on a target that could not
//! be asked.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::Result;
use crate::tree::Node;

/// What a restore knows of its target's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Case {
    /// `README` and `readme` are two entries.
    Sensitive,
    /// They are one.
    Insensitive,
    /// The target could not be asked (it takes no new file, and holds no
    /// name to look up in another case).
    Unknown,
}

impl Case {
    /// Whether names that fold alike are one entry: of a folder's such
    /// names, only the first is restored.
    pub(super) fn merges_names(self) -> bool {
        self == Case::Insensitive
    }

    /// Whether a mirror compares names folded: it then keeps an entry
    /// whose name is the snapshot's but for case. Where the target could
    /// not be asked, keeping such an entry is the side that loses
    /// nothing.
    pub(super) fn mirror_folds(self) -> bool {
        self != Case::Sensitive
    }

    /// `name` as a mirror compares it: folded where [`Self::mirror_folds`].
    pub(super) fn mirror_key(self, name: &[u8]) -> Cow<'_, [u8]> {
        if self.mirror_folds() {
            fold(name)
        } else {
            Cow::Borrowed(name)
        }
    }

    /// Asks whether names in `target` (an existing folder, or in a dry
    /// run perhaps not made yet) are looked up without regard to case.
    ///
    /// A real restore asks the filesystem directly: it makes an empty
    /// file of a random lower-case name there, looks it up in upper case,
    /// and removes it (the restore puts the folder's times back). A dry run changes
    /// nothing, nor does a restore whose target takes no new file: they
    /// look names the target holds up in swapped case (see
    /// [`by_lookups`]), in a dry run those of the nearest folder above a
    /// target not made yet, on the same filesystem.
    ///
    /// The probe's answer is whether the other name is found, not whether
    /// it is the same file by inode: a FUSE filesystem (exfat-fuse)
    /// numbers each name looked up afresh.
    pub(super) fn of_target(target: &Path, dry_run: bool) -> Case {
        let target = std::path::absolute(target).unwrap_or_else(|_| target.to_path_buf());
        if !dry_run {
            if let Some(found) = probe(&target) {
                return found;
            }
        }
        // Symlinks followed: the folder restored into is where it leads.
        let Some(dir) = target
            .ancestors()
            .find(|p| fs::metadata(p).is_ok_and(|m| m.is_dir()))
        else {
            return Case::Unknown;
        };
        let dev = fs::metadata(dir).map(|m| m.dev()).ok();
        dir.ancestors()
            .take_while(|p| fs::metadata(p).ok().map(|m| m.dev()) == dev)
            .find_map(by_lookups)
            .map_or(Case::Unknown, |insensitive| {
                if insensitive {
                    Case::Insensitive
                } else {
                    Case::Sensitive
                }
            })
    }
}

/// The probe of [`Case::of_target`]; `None` when no file can be made.
fn probe(target: &Path) -> Option<Case> {
    let name = format!(
        ".cairn-case-probe-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let probe = target.join(&name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .ok()?;
    let seen = fs::symlink_metadata(target.join(name.to_uppercase())).is_ok();
    let _ = fs::remove_file(&probe);
    // The probe changed the folder's modification time: `restore` puts
    // it back once every probe of the target is done.
    Some(if seen {
        Case::Insensitive
    } else {
        Case::Sensitive
    })
}

/// Whether `dir` looks names up without regard to case, told by names it
/// holds: one with an ASCII letter is looked up with each such letter's
/// case swapped. Not found: it tells case apart. The same file (device
/// and inode): it does not. Another file, or the same under a number a
/// FUSE filesystem made up, is told apart by a second pass over the
/// listing: a name that is found though the folder does not list it is
/// the first name found again. `None` when no name serves. Memory stays
/// small whatever the folder holds.
fn by_lookups(dir: &Path) -> Option<bool> {
    const TRIES: usize = 8;
    let mut unsure = Vec::new();
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
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
        if swapped == name {
            continue;
        }
        let Ok(md) = entry.metadata() else { continue };
        match fs::symlink_metadata(dir.join(&swapped)) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Some(false),
            Err(_) => continue,
            Ok(other) if other.dev() == md.dev() && other.ino() == md.ino() => return Some(true),
            Ok(_) => {
                unsure.push(swapped);
                if unsure.len() == TRIES {
                    break;
                }
            }
        }
    }
    if unsure.is_empty() {
        return None;
    }
    for entry in fs::read_dir(dir).ok()?.flatten() {
        unsure.retain(|n| n.as_bytes() != entry.file_name().as_encoded_bytes());
    }
    Some(!unsure.is_empty())
}

/// `name` as a case-insensitive filesystem compares it: each character
/// mapped to its upper case where that is one character (Unicode's
/// mapping, without context, as exFAT's and NTFS's tables map them: `σ`
/// and `ς` both to `Σ`), or ASCII's for a name that is not UTF-8.
/// Filesystems that also equate Unicode's normalization forms, or fold
/// one character to several (ext4's casefolding), equate names this does
/// not.
pub(super) fn fold(name: &[u8]) -> Cow<'_, [u8]> {
    fn upper(c: char) -> char {
        let mut up = c.to_uppercase();
        match (up.next(), up.next()) {
            (Some(u), None) => u,
            _ => c,
        }
    }
    match std::str::from_utf8(name) {
        Ok(s) if s.chars().any(|c| upper(c) != c) => {
            Cow::Owned(s.chars().map(upper).collect::<String>().into_bytes())
        }
        Ok(_) => Cow::Borrowed(name),
        Err(_) if name.iter().any(u8::is_ascii_lowercase) => Cow::Owned(name.to_ascii_uppercase()),
        Err(_) => Cow::Borrowed(name),
    }
}

fn hash(folded: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    folded.hash(&mut h);
    h.finish()
}

/// A folder's names that fold alike (by a hash of the folded name; a
/// walk compares the names themselves), found by reading its nodes once
/// before it is walked. Empty for a folder without such names, and on a
/// target that tells case apart.
#[derive(Default)]
pub(super) struct Twins(HashSet<u64>);

impl Twins {
    /// Reads a folder's `nodes`. One that cannot be read ends the reading:
    /// the walk names it.
    pub(super) fn of(nodes: impl Iterator<Item = Result<Node>>) -> Twins {
        let mut seen = HashSet::new();
        let mut twice = HashSet::new();
        for node in nodes.map_while(Result::ok) {
            let h = hash(&fold(&node.name.0));
            if !seen.insert(h) {
                twice.insert(h);
            }
        }
        Twins(twice)
    }

    /// Whether `name` may share its folded name with another of the
    /// folder's: if so, its folded name.
    pub(super) fn folded(&self, name: &[u8]) -> Option<Vec<u8>> {
        if self.0.is_empty() {
            return None;
        }
        let folded = fold(name);
        self.0.contains(&hash(&folded)).then(|| folded.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_letter_by_letter_to_upper_case() {
        assert_eq!(&*fold(b"ReadMe.md"), b"README.MD");
        assert_eq!(&*fold("ärger".as_bytes()), "ÄRGER".as_bytes());
        // A final sigma folds as any other, whatever follows it.
        assert_eq!(
            fold("ΛΟΓΑΡΙΑΣΜΟΣ.pdf".as_bytes()),
            fold("Λογαριασμος.pdf".as_bytes())
        );
        // Title case; a letter whose upper case is two stays itself.
        assert_eq!(fold("ǅ".as_bytes()), fold("ǆ".as_bytes()));
        assert_eq!(&*fold("ß".as_bytes()), "ß".as_bytes());
        assert!(matches!(fold(b"PLAIN-1"), Cow::Borrowed(_)));
        assert_eq!(&*fold(b"ab\xffC"), b"AB\xffC");
        assert!(matches!(fold(b"AB\xff"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_folder_of_this_filesystem_tells_case_apart() {
        // The tests' folders are on filesystems that tell case apart
        // (tests/exfat.rs restores onto one that does not).
        // (The restore puts the folder's times back after its probes:
        // tests/restore_policy.rs.)
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Case::of_target(dir.path(), false), Case::Sensitive);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe is removed"
        );
        // Nothing to look up: the dry run's answer comes from above.
        assert_eq!(by_lookups(dir.path()), None);
        fs::write(dir.path().join("Name"), b"").unwrap();
        assert_eq!(by_lookups(dir.path()), Some(false));
        assert_eq!(
            Case::of_target(&dir.path().join("not/made"), true),
            Case::Sensitive
        );
        // Both names there, each its own file: still told apart.
        fs::remove_file(dir.path().join("Name")).unwrap();
        fs::write(dir.path().join("a"), b"").unwrap();
        fs::write(dir.path().join("A"), b"").unwrap();
        assert_eq!(by_lookups(dir.path()), Some(false));
    }

    #[test]
    fn twins_are_the_names_that_fold_alike() {
        let names = ["Docs", "README", "b", "docs", "readme", "x"];
        let nodes = names
            .iter()
            .map(|n| Ok(crate::tree::tests::node(n, crate::tree::NodeKind::Fifo)));
        let twins = Twins::of(nodes);
        assert_eq!(twins.folded(b"docs"), Some(b"DOCS".to_vec()));
        assert_eq!(twins.folded(b"Readme"), Some(b"README".to_vec()));
        assert_eq!(twins.folded(b"b"), None);
        assert_eq!(Twins::default().folded(b"docs"), None);
    }
}
