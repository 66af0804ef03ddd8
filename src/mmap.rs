//! The one place that memory-maps files.
//!
//! Mapping is `unsafe` because the kernel lets other processes change or
//! truncate a mapped file, and touching a page past a truncation raises
//! SIGBUS. cairn maps only files that are immutable by contract (packs and
//! index tables are never rewritten, only deleted, and deleting a mapped
//! file keeps its pages alive), and every access is bounds-checked against
//! the length at mapping time. Empty files are not mapped (mmap rejects
//! them); they read as an empty slice.
//!
//! The contract does not cover the disk: a mapped page the disk cannot
//! read (an IO error on failing media, a network filesystem that lost
//! the file) raises SIGBUS as a truncation does, with no error to
//! return. [`catch_bus_errors`] turns that signal into a message naming
//! the file and exit status 1, instead of death by signal 7 with nothing
//! said: `verify --read-data`, whose work is to find bad media, must say
//! where it found it.

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

/// Reads `range` of `file` into the page cache and returns once it is
/// there, without copying it or mapping its pages: the parts not cached
/// yet (`mincore` on a map never touched) are sent with `sendfile` into
/// `/dev/null`, which goes through the page cache's own read-ahead, in
/// the large folios that later maps of the file map whole, and takes the
/// pages without touching them. `posix_fadvise(WILLNEED)` reads in single
/// pages, and a restore reading packs prefetched that way took a third
/// longer; faulting the range into a map and dropping it again costs
/// the mapping twice. Only a hint: an error ends it early.
pub fn read_ahead(file: &File, range: std::ops::Range<u64>) {
    use std::os::fd::AsRawFd;
    const PAGE: u64 = 4096;
    let Ok(meta) = file.metadata() else {
        return;
    };
    let start = range.start / PAGE * PAGE;
    let end = range.end.min(meta.len());
    let Some(len) = end.checked_sub(start).and_then(|n| usize::try_from(n).ok()) else {
        return;
    };
    if len == 0 {
        return;
    }
    // Where the pages cached cannot be told, the whole range is sent.
    let resident =
        cached_pages(file, start, len).unwrap_or_else(|| vec![false; len.div_ceil(PAGE as usize)]);
    let Ok(null) = File::options().write(true).open("/dev/null") else {
        return;
    };
    // SAFETY: a plain system call on a descriptor the caller holds open.
    // Sequential reads of this open file read twice as far ahead.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
    // Each run of pages not cached, sent whole.
    let mut page = 0;
    while page < resident.len() {
        if resident[page] {
            page += 1;
            continue;
        }
        let run = resident[page..]
            .iter()
            .position(|&cached| cached)
            .map_or(resident.len(), |n| page + n);
        let mut offset = (start + page as u64 * PAGE) as libc::off_t;
        let stop = (start + run as u64 * PAGE).min(end) as libc::off_t;
        while offset < stop {
            // SAFETY: a plain system call on descriptors held open here;
            // `offset` is a local the call advances.
            let sent = unsafe {
                libc::sendfile(
                    null.as_raw_fd(),
                    file.as_raw_fd(),
                    &mut offset,
                    ((stop - offset) as usize).min(1 << 30),
                )
            };
            if sent <= 0 {
                return;
            }
        }
        page = run;
    }
}

/// Whether each 4 KiB page of the `len` bytes of `file` from `start` (a
/// multiple of 4 KiB) is in the page cache: `mincore` on a map looks
/// pages up without faulting them in. `None` where it cannot tell (pages
/// larger than 4 KiB, or the range past the file's end).
pub fn cached_pages(file: &File, start: u64, len: usize) -> Option<Vec<bool>> {
    let mut resident = vec![0u8; len.div_ceil(4096)];
    // SAFETY: as for every map here (see the module docs); its bytes are
    // never read, and `resident` has a byte for each of its pages.
    let map = unsafe { memmap2::MmapOptions::new().offset(start).len(len).map(file) }.ok()?;
    // SAFETY: as above.
    let looked = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            len,
            resident.as_mut_ptr(),
        )
    };
    (looked == 0).then(|| resident.iter().map(|r| r & 1 == 1).collect())
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

    /// `read_ahead` brings exactly what is missing into the page cache.
    #[test]
    fn reading_ahead_brings_a_range_into_the_page_cache() {
        let dir = crate::backend::testing::disk_tempdir();
        let path = dir.path().join("pack");
        crate::backend::testing::write_cold(&path, &vec![7u8; 8 << 20]);
        let file = File::open(&path).unwrap();
        let cached = |from: u64, to: u64| {
            let pages = cached_pages(&file, from, (to - from) as usize).unwrap();
            pages.iter().filter(|&&c| c).count()
        };

        read_ahead(&file, (2 << 20) + 100..6 << 20);
        assert_eq!(
            cached(2 << 20, 6 << 20),
            1024,
            "the range is not all cached"
        );
        // Nothing before the range.
        assert_eq!(cached(0, 2 << 20), 0);

        // Ranges past the end, or empty, read nothing and do not fail.
        read_ahead(&file, (9 << 20)..(10 << 20));
        read_ahead(&file, 4096..4096);
        assert_eq!(cached(0, 2 << 20), 0);
        // Past the end of the file, the range stops at it.
        read_ahead(&file, (7 << 20)..(20 << 20));
        assert_eq!(cached(7 << 20, 8 << 20), 256);
    }
}

/// Installs the handler that reports a bus error (SIGBUS: a mapped page
/// that could not be read) and ends the process with status 1, naming the
/// file mapped at the faulting address as `/proc/self/maps` gives it. The
/// process stops at once, as if killed: what it wrote before is
/// consistent, as after a kill, and nothing after is written. Call once at
/// start-up.
pub fn catch_bus_errors() {
    // SAFETY: an empty sigaction filled in below; the handler only makes
    // async-signal-safe calls (open, read, write, close, _exit).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_bus_error as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

extern "C" fn on_bus_error(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let mut path = [0u8; 1024];
    let n = mapped_file_at(addr, &mut path);
    let say = |bytes: &[u8]| {
        // SAFETY: writing a valid buffer to standard error.
        unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
    };
    say(b"cairn: bus error reading ");
    if n > 0 {
        say(&path[..n]);
    } else {
        say(b"a mapped file");
    }
    say(
        b": part of it could not be read (the disk returned an IO error, or the file \
          shrank or vanished from under cairn); stopped at once, as if killed: check \
          the disk, then run `cairn verify --read-data`\n",
    );
    // SAFETY: ends the process without running anything else.
    unsafe { libc::_exit(1) }
}

/// The path of the file `/proc/self/maps` shows mapped at `addr`, copied
/// into `out`; its length, 0 if none. Allocates nothing and calls only
/// async-signal-safe functions: it runs in a signal handler.
fn mapped_file_at(addr: usize, out: &mut [u8]) -> usize {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return 0;
    }
    // A line of the maps: `START-END PERMS OFFSET DEV INODE   PATH`.
    let mut buf = [0u8; 4096];
    let (mut have, mut found) = (0usize, 0usize);
    loop {
        // SAFETY: reading into the free end of `buf`.
        let n = unsafe { libc::read(fd, buf[have..].as_mut_ptr().cast(), buf.len() - have) };
        if n <= 0 {
            break;
        }
        have += n as usize;
        let mut start = 0;
        while let Some(end) = buf[start..have].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + end];
            start += end + 1;
            if let Some(path) = line_path_at(line, addr) {
                let n = path.len().min(out.len());
                out[..n].copy_from_slice(&path[..n]);
                found = n;
                break;
            }
        }
        if found > 0 {
            break;
        }
        // Keep the partial line; a line longer than the buffer is dropped.
        buf.copy_within(start..have, 0);
        have -= start;
        if have == buf.len() {
            have = 0;
        }
    }
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(fd) };
    found
}

/// The path of a `/proc/self/maps` line whose range holds `addr`.
fn line_path_at(line: &[u8], addr: usize) -> Option<&[u8]> {
    let hex = |s: &[u8]| -> Option<usize> {
        let mut v = 0usize;
        for &b in s {
            let d = (b as char).to_digit(16)? as usize;
            v = v.checked_mul(16)?.checked_add(d)?;
        }
        (!s.is_empty()).then_some(v)
    };
    let dash = line.iter().position(|&b| b == b'-')?;
    let space = line.iter().position(|&b| b == b' ')?;
    let (lo, hi) = (hex(&line[..dash])?, hex(line.get(dash + 1..space)?)?);
    if !(lo..hi).contains(&addr) {
        return None;
    }
    // The path begins at the first '/' after the five fields.
    let mut fields = 0;
    let mut i = 0;
    while i < line.len() && fields < 5 {
        while i < line.len() && line[i] != b' ' {
            i += 1;
        }
        while i < line.len() && line[i] == b' ' {
            i += 1;
        }
        fields += 1;
    }
    let path = line.get(i..)?;
    (path.first() == Some(&b'/')).then_some(path)
}

#[cfg(test)]
mod bus_tests {
    use super::*;

    #[test]
    fn a_maps_line_gives_its_path_only_for_addresses_in_its_range() {
        let line =
            b"7f00a0000000-7f00a0200000 r--s 00000000 fd:01 1234   /repo/packs/ab/ab12 (deleted)";
        let path: &[u8] = b"/repo/packs/ab/ab12 (deleted)";
        assert_eq!(line_path_at(line, 0x7f00a0000000), Some(path));
        assert_eq!(line_path_at(line, 0x7f00a01fffff), Some(path));
        assert_eq!(line_path_at(line, 0x7f00a0200000), None);
        assert_eq!(line_path_at(line, 0x7f009fffffff), None);
        let anon = b"7f00a0000000-7f00a0200000 rw-p 00000000 00:00 0 ";
        assert_eq!(line_path_at(anon, 0x7f00a0000001), None);
        assert_eq!(line_path_at(b"garbage", 1), None);
        assert_eq!(line_path_at(b"-", 0), None);
    }

    #[test]
    fn this_process_s_maps_name_a_mapped_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapped");
        std::fs::write(&path, vec![1u8; 8192]).unwrap();
        let map = Map::open(&path).unwrap();
        let mut out = [0u8; 1024];
        let n = mapped_file_at(map.as_ptr() as usize + 100, &mut out);
        assert_eq!(&out[..n], path.as_os_str().as_encoded_bytes());
        let on_stack = 0u8;
        assert_eq!(mapped_file_at(&on_stack as *const u8 as usize, &mut out), 0);
    }
}
