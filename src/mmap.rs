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

/// A read-only map of a whole file.
pub struct Map(Option<memmap2::Mmap>);

impl Map {
    /// Maps the file at `path` read-only.
    pub fn open(path: &Path) -> Result<Map> {
        let file = File::open(path).map_err(|e| Error::path("open", path, e))?;
        Map::file(&file, path)
    }

    /// Maps an open file; `path` is for messages.
    pub fn file(file: &File, path: &Path) -> Result<Map> {
        let len = file
            .metadata()
            .map_err(|e| Error::path("stat", path, e))?
            .len();
        if len == 0 {
            return Ok(Map(None));
        }
        // SAFETY: see the module docs: the file is immutable by contract,
        // and all reads go through the bounds-checked slice below.
        let map = unsafe { memmap2::MmapOptions::new().map(file) }
            .map_err(|e| Error::path("memory-map", path, e))?;
        Ok(Map(Some(map)))
    }

    /// Tells the kernel the map will be read sequentially.
    pub fn advise_sequential(&self) {
        if let Some(m) = &self.0 {
            let _ = m.advise(memmap2::Advice::Sequential);
        }
    }
}

impl Deref for Map {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl Map {
    /// Whether at least nine tenths of the mapped pages are in the page
    /// cache, so reading through the map will not wait on the disk.
    pub fn mostly_resident(&self) -> bool {
        let Some(m) = &self.0 else { return true };
        let page = page_size();
        let pages = m.len().div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: the pointer and length describe a live mapping, which
        // mmap aligned to a page; `vec` has one byte per page as mincore
        // requires.
        let r =
            unsafe { libc::mincore(m.as_ptr() as *mut libc::c_void, m.len(), vec.as_mut_ptr()) };
        if r != 0 {
            return true;
        }
        let resident = vec.iter().filter(|&&b| b & 1 == 1).count();
        resident * 10 >= pages * 9
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// A page-aligned buffer, as direct IO needs, recycled through a small
/// process-wide pool: on hosts where every fresh page is expensive to fault
/// in, reusing a buffer is much cheaper than mapping a new one per pack.
pub struct AlignedBuf {
    map: Option<memmap2::MmapMut>,
    len: usize,
}

/// Buffers kept for reuse at most: one per core, as many as the
/// operations that use them run at once.
fn pool_max() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
static POOL: std::sync::Mutex<Vec<memmap2::MmapMut>> = std::sync::Mutex::new(Vec::new());

impl AlignedBuf {
    /// A buffer of at least `capacity` bytes, empty.
    pub fn with_capacity(capacity: usize) -> std::io::Result<AlignedBuf> {
        let pooled = POOL.lock().ok().and_then(|mut pool| {
            let best = (0..pool.len())
                .filter(|&i| pool[i].len() >= capacity)
                .min_by_key(|&i| pool[i].len())?;
            Some(pool.swap_remove(best))
        });
        let map = match pooled {
            Some(m) => m,
            None => memmap2::MmapMut::map_anon(capacity.max(1).next_multiple_of(1 << 20))?,
        };
        Ok(AlignedBuf {
            map: Some(map),
            len: 0,
        })
    }

    /// All of the buffer's memory, beyond its length too.
    pub fn spare(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }

    /// Sets the length; at most the capacity.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.map.as_ref().map_or(0, |m| m.len()));
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().map_or(&[], |m| &m[..self.len])
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let (Some(map), Ok(mut pool)) = (self.map.take(), POOL.lock()) {
            if pool.len() < pool_max() {
                pool.push(map);
            }
        }
    }
}
