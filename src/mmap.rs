//! The one place that memory-maps files.
//!
//! Mapping is `unsafe` because the kernel lets other processes change or
//! truncate a mapped file, and touching a page past a truncation raises
//! SIGBUS. cairn maps only files that are immutable by contract (packs and
//! index tables are never rewritten, only deleted, and deleting a mapped
//! file keeps its pages alive), and every access is bounds-checked against
//! the length at mapping time. Empty files are not mapped (mmap rejects
//! them); they read as an empty slice.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use crate::error::{Error, Result};

/// A read-only map of a whole file, and the file itself if kept for
/// [`Map::read_at`].
pub struct Map {
    /// `None` for an empty file, which cannot be mapped.
    map: Option<memmap2::Mmap>,
    file: Option<File>,
}

impl Map {
    /// Maps the file at `path` read-only.
    pub fn open(path: &Path) -> Result<Map> {
        let file = File::open(path).map_err(|e| Error::path("open", path, e))?;
        Map::file(&file, path)
    }

    /// Maps the file at `path` read-only, and keeps it open so that
    /// [`Map::read_at`] reads it without mapping its pages.
    pub fn open_keeping(path: &Path) -> Result<Map> {
        let file = File::open(path).map_err(|e| Error::path("open", path, e))?;
        Map::keeping(file, path)
    }

    /// Maps an open file; `path` is for messages.
    pub fn file(file: &File, path: &Path) -> Result<Map> {
        let len = file
            .metadata()
            .map_err(|e| Error::path("stat", path, e))?
            .len();
        if len == 0 {
            return Ok(Map {
                map: None,
                file: None,
            });
        }
        // SAFETY: see the module docs: the file is immutable by contract,
        // and all reads go through the bounds-checked slice below.
        let map = unsafe { memmap2::MmapOptions::new().map(file) }
            .map_err(|e| Error::path("memory-map", path, e))?;
        Ok(Map {
            map: Some(map),
            file: None,
        })
    }

    /// Maps an open file and keeps it, as [`Map::open_keeping`] does.
    pub fn keeping(file: File, path: &Path) -> Result<Map> {
        let map = Map::file(&file, path)?.map;
        Ok(Map {
            map,
            file: Some(file),
        })
    }

    /// Copies the bytes at `offset` into `buf`: read from the kept file
    /// (`pread`), so they never count in this process's memory as mapped
    /// pages do (a fault maps the whole large folio around a page, up to
    /// 2 MiB); copied from the map when no file was kept or reading it
    /// fails. Panics if the range lies past the end, as slicing does.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) {
        use std::os::unix::fs::FileExt;
        let read = self
            .file
            .as_ref()
            .is_some_and(|f| f.read_exact_at(buf, offset as u64).is_ok());
        if !read {
            buf.copy_from_slice(&self[offset..offset + buf.len()]);
        }
    }

    /// Tells the kernel the map will be read sequentially.
    pub fn advise_sequential(&self) {
        if let Some(m) = &self.map {
            let _ = m.advise(memmap2::Advice::Sequential);
        }
    }

    /// Maps every page of the file now, in one system call rather than a
    /// fault per page, for a map about to be read whole. Only a hint:
    /// kernels before 5.14 ignore it, and faults then map the pages.
    pub fn populate(&self) {
        if let Some(m) = &self.map {
            let _ = m.advise(memmap2::Advice::PopulateRead);
        }
    }

    /// Maps the pages holding `range` now, as [`Map::populate`] does the
    /// whole map.
    pub fn populate_range(&self, range: std::ops::Range<usize>) {
        if let Some(m) = &self.map {
            let end = range.end.min(m.len());
            if range.start < end {
                let _ = m.advise_range(
                    memmap2::Advice::PopulateRead,
                    range.start,
                    end - range.start,
                );
            }
        }
    }

    /// Unmaps the pages holding `range`, so they stop counting in this
    /// process's memory: they stay in the page cache, and reading one again
    /// maps it again. For bytes read once, in a map that is then read at a
    /// few places.
    pub fn release_range(&self, range: std::ops::Range<usize>) {
        if let Some(m) = &self.map {
            let end = range.end.min(m.len());
            if range.start < end {
                // SAFETY: the map is a read-only shared map of a file that
                // is immutable by contract (see the module docs):
                // MADV_DONTNEED only drops this process's page-table
                // entries, and a later read faults the same bytes back in
                // from the page cache.
                let _ = unsafe {
                    m.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        range.start,
                        end - range.start,
                    )
                };
            }
        }
    }

    /// Tells the kernel the map will be read at scattered places, so a
    /// page fault maps only its own page instead of reading ahead.
    pub fn advise_random(&self) {
        if let Some(m) = &self.map {
            let _ = m.advise(memmap2::Advice::Random);
        }
    }
}

impl Deref for Map {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// A temporary file for bytes too many to hold in memory (an index table
/// being merged for, or fetched from, a remote store): unnamed
/// (`O_TMPFILE`) in the system's temporary folder (`TMPDIR`), so it goes
/// with its descriptor, even after a kill; a named one, removed at once,
/// where `O_TMPFILE` is missing.
pub fn spool_file() -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(&dir);
    if unnamed.is_ok() {
        return unnamed;
    }
    let path = dir.join(format!(
        ".cairn-spool-{}",
        hex::encode(crate::crypto::random_bytes::<8>())
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read_at` gives the map's bytes, whether the file was kept (and
    /// read with `pread`) or not (and the map copied).
    #[test]
    fn read_at_gives_the_mapped_bytes_kept_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        for map in [Map::open(&path).unwrap(), Map::open_keeping(&path).unwrap()] {
            assert_eq!(&map[..], &bytes[..]);
            for (at, len) in [(0, 1), (4090, 12), (12_345, 7_655), (20_000, 0)] {
                let mut buf = vec![0; len];
                map.read_at(at, &mut buf);
                assert_eq!(buf, bytes[at..at + len]);
            }
        }
    }

    /// A range past the end panics, as slicing does, instead of reading
    /// what is not there.
    #[test]
    #[should_panic]
    fn read_at_past_the_end_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [1u8; 100]).unwrap();
        let mut buf = [0; 10];
        Map::open_keeping(&path).unwrap().read_at(95, &mut buf);
    }
}
