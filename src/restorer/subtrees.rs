//! Sets of folders each standing for itself and all beneath it (the
//! folders a restore made, those it skipped), asked of every path the
//! restore acts on.
//!
//! Asking whether any ancestor of a path is in a plain set hashes each
//! ancestor whole: work of the square of the path's depth per question,
//! and of its cube for a restore of a deep tree (a chain 3,000 folders
//! deep took a minute, 10,000 hours). Here a path's ancestors are hashed
//! a component at a time, each from the one above, so a question costs
//! the path's length.

use rustc_hash::{FxHashMap, FxHasher};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

#[derive(Default)]
pub(super) struct Subtrees {
    /// The folders by the hash of their components (see `hashes`).
    tops: FxHashMap<u64, Vec<PathBuf>>,
}

impl Subtrees {
    /// Whether `path` is one of the folders or lies beneath one.
    pub(super) fn covers(&self, path: &Path) -> bool {
        !self.tops.is_empty()
            && hashes(path).any(|h| {
                self.tops
                    .get(&h)
                    .is_some_and(|tops| tops.iter().any(|t| path.starts_with(t)))
            })
    }

    /// Adds the folder `path` (nothing if it is covered already).
    pub(super) fn insert(&mut self, path: &Path) {
        if self.covers(path) {
            return;
        }
        if let Some(h) = hashes(path).last() {
            self.tops.entry(h).or_default().push(path.to_path_buf());
        }
    }
}

/// The hashes of `path`'s ancestors (the root or first component first,
/// `path` itself last), each the hash of the one before and a component
/// (FxHash: 16 bytes a step, where SipHash took most of a deep restore).
fn hashes(path: &Path) -> impl Iterator<Item = u64> + '_ {
    path.components().scan(0u64, |h, c| {
        let mut hasher = FxHasher::default();
        h.hash(&mut hasher);
        c.as_os_str().hash(&mut hasher);
        *h = hasher.finish();
        Some(*h)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_covers_itself_and_what_is_beneath_it_only() {
        let mut s = Subtrees::default();
        assert!(!s.covers(Path::new("/t/a")));
        s.insert(Path::new("/t/a/b"));
        s.insert(Path::new("c"));
        for yes in ["/t/a/b", "/t/a/b/c", "/t/a//b/./c/d", "c", "c/x"] {
            assert!(s.covers(Path::new(yes)), "{yes}");
        }
        for no in ["/t/a", "/t/a/bb", "/t/a/c/b", "/c", "/t", "x/c", "cc"] {
            assert!(!s.covers(Path::new(no)), "{no}");
        }
        // A folder beneath one held is held already.
        s.insert(Path::new("/t/a/b/e"));
        assert_eq!(s.tops.values().map(Vec::len).sum::<usize>(), 2);
    }

    #[test]
    fn a_deep_path_is_answered_in_its_length() {
        let deep: PathBuf = std::iter::repeat_n("a", 20_000).collect();
        let mut s = Subtrees::default();
        s.insert(Path::new("a/a"));
        // 20,000 ancestors of up to 40 KB each would be 400 MB hashed.
        for _ in 0..100 {
            assert!(s.covers(&deep));
        }
        assert!(!s.covers(Path::new("b")));
    }
}
