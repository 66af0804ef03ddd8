//! A list of a directory's entry names, held compactly: their bytes end to
//! end in one buffer and, per name, where it ends (four bytes), instead
//! of a buffer of its own each (24 bytes and an allocation). A backup's
//! listing of a directory and a mirror restore's names to keep use it.
//!
//! Also the two helpers of a walk's one path buffer ([`cut_to`],
//! [`cut_path`]): a backup's and a restore's walks add each entry's name
//! to one buffer and take it off again, rather than hold a copy of the
//! path a level, which in a tree thousands of folders deep of long names
//! adds up to gigabytes.

use std::path::{Path, PathBuf};

/// Names, in the order added.
#[derive(Default)]
pub struct NameList {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl NameList {
    /// Adds `name`; false, and nothing added, once the list holds 4 GiB
    /// of names (its ends are four bytes).
    #[must_use]
    pub fn push(&mut self, name: &[u8]) -> bool {
        let Ok(end) = u32::try_from(self.bytes.len() + name.len()) else {
            return false;
        };
        self.bytes.extend_from_slice(name);
        self.ends.push(end);
        true
    }

    /// Name number `i`.
    pub fn name(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    /// How many names it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of names held.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Forgets every name, keeping the buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The names' numbers in byte order of their names.
    pub fn order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.ends.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.name(a as usize).cmp(self.name(b as usize)));
        order
    }

    /// The same names, in byte order.
    pub fn sorted(self) -> NameList {
        if (1..self.len()).all(|i| self.name(i - 1) <= self.name(i)) {
            return self;
        }
        let mut out = NameList {
            bytes: Vec::with_capacity(self.bytes.len()),
            ends: Vec::with_capacity(self.ends.len()),
        };
        for i in self.order() {
            // The same names: they fit as they did.
            let _ = out.push(self.name(i as usize));
        }
        out
    }

    /// Whether `name` is in a list in byte order (see
    /// [`NameList::sorted`]).
    pub fn contains_sorted(&self, name: &[u8]) -> bool {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.name(mid).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }
}

/// Cuts a walk's path buffer back to its first `len` bytes (a folder's
/// path, after one of its entries was added to it).
pub(crate) fn cut_to(path: &mut PathBuf, len: usize) {
    use std::os::unix::ffi::OsStringExt;
    if path.as_os_str().len() > len {
        let mut bytes = std::mem::take(path).into_os_string().into_vec();
        bytes.truncate(len);
        *path = PathBuf::from(std::ffi::OsString::from_vec(bytes));
    }
}

/// The first `len` bytes of `path` (a folder's path, see [`cut_to`]).
pub(crate) fn cut_path(path: &Path, len: usize) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    Path::new(std::ffi::OsStr::from_bytes(&bytes[..len.min(bytes.len())]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_found_and_sorted() {
        let mut l = NameList::default();
        for n in ["b", "", "a-long-name", "a", "ab"] {
            assert!(l.push(n.as_bytes()));
        }
        assert_eq!(l.len(), 5);
        assert_eq!(l.name(1), b"");
        assert_eq!(l.name(2), b"a-long-name");
        let s = l.sorted();
        let names: Vec<&[u8]> = (0..s.len()).map(|i| s.name(i)).collect();
        assert_eq!(names, [&b""[..], b"a", b"a-long-name", b"ab", b"b"]);
        for n in names {
            assert!(s.contains_sorted(n));
        }
        assert!(!s.contains_sorted(b"a-"));
        assert!(!s.contains_sorted(b"c"));
        assert!(!NameList::default().contains_sorted(b"a"));
    }

    #[test]
    fn a_path_buffer_is_cut_back_to_its_folder() {
        let mut p = PathBuf::from("/a/bb");
        let len = p.as_os_str().len();
        p.push("ccc");
        assert_eq!(cut_path(&p, len), Path::new("/a/bb"));
        cut_to(&mut p, len);
        assert_eq!(p, Path::new("/a/bb"));
        // Longer than the buffer: all of it.
        cut_to(&mut p, 100);
        assert_eq!(cut_path(&p, 100), Path::new("/a/bb"));
    }
}
