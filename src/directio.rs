//! Direct IO: writing packs around the page cache.
//!
//! A pack is written once and read again only by a restore, verify or gc
//! that may be days away, so caching it evicts the user's working set; and
//! buffered writes of new files pay for every fresh page-cache page, which
//! on ballooned virtual machines costs more CPU than the data's own
//! encryption. So packs are written with `O_DIRECT` through a page-aligned
//! bounce buffer each thread reuses. [`write_new`] falls back to the
//! caller's buffered path (returning `false`) on filesystems that refuse
//! direct IO, such as ramfs and tmpfs before Linux 6.6, and an
//! [`AppendFile`] writes buffered there. Durability is unchanged: callers fsync and
//! rename exactly as on the buffered path. `CAIRN_DIRECT_IO=0` turns direct
//! IO off (for comparison, or on a filesystem that misbehaves with it).
//!
//! Reads stay buffered, through memory maps: measured on the benchmark
//! machine, direct reads of packs were no faster than mapped reads with
//! readahead, since a synchronous read stalls its worker while the page
//! cache reads ahead; the same held for restored files written with
//! direct IO.

use std::cell::RefCell;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Alignment of buffer, offsets and lengths: a page, which satisfies
/// every block size Linux filesystems use for direct IO.
const ALIGN: usize = 4096;
/// Bounce buffer size: large enough for full-speed sequential writes.
const BOUNCE: usize = 1 << 20;

thread_local! {
    static BUF: RefCell<Option<memmap2::MmapMut>> = const { RefCell::new(None) };
}

/// Whether direct IO is allowed (`CAIRN_DIRECT_IO` is not `0`).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CAIRN_DIRECT_IO").is_none_or(|v| v != "0"))
}

/// Creates `path`, which must not exist, with permissions `mode`, and
/// turns direct IO on for it where it is enabled and the filesystem
/// takes it; the flag says whether it did. Direct IO is asked for once
/// the file is open (`fcntl`), not with `O_DIRECT` at the open: Linux
/// makes the file before it looks at that flag, so on a filesystem that
/// refuses it (ramfs, tmpfs before Linux 6.6, some FUSE filesystems) the
/// failed open would leave the new file behind, in the way of a buffered
/// retry under the same name.
fn create_new(path: &Path, mode: u32) -> Result<(fs::File, bool)> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::path("create", path, e))?;
    let direct = enabled() && set_direct(&file);
    Ok((file, direct))
}

/// Turns `O_DIRECT` on for `file`; false if the filesystem refuses it.
fn set_direct(file: &fs::File) -> bool {
    #[cfg(test)]
    if REFUSE_AT_OPEN.get() {
        return false;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    // SAFETY: `fd` is open for as long as `file` is borrowed; F_GETFL and
    // F_SETFL read and set its status flags only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) == 0
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: files created on this thread get no direct IO, as on a
    /// filesystem that refuses `O_DIRECT` from the start.
    static REFUSE_AT_OPEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests: whether files this thread creates from now on are refused
/// direct IO, as on a filesystem that never takes it.
#[cfg(test)]
pub(crate) fn refuse_at_open(refuse: bool) {
    REFUSE_AT_OPEN.set(refuse);
}

/// Creates `path` with permissions `mode` holding `bytes` with direct IO
/// and fsyncs it. Returns `Ok(false)`, having left nothing behind, when
/// direct IO is off or the filesystem refuses it.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    if !enabled() {
        return Ok(false);
    }
    let (mut file, direct) = create_new(path, mode)?;
    if !direct {
        drop(file);
        fs::remove_file(path).map_err(|e| Error::path("remove", path, e))?;
        return Ok(false);
    }
    let written = BUF.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            // An anonymous map is page-aligned, as direct IO requires.
            *cell = Some(memmap2::MmapMut::map_anon(BOUNCE)?);
        }
        let buf = cell.as_mut().expect("just mapped");
        for piece in bytes.chunks(BOUNCE) {
            let padded = piece.len().div_ceil(ALIGN) * ALIGN;
            buf[..piece.len()].copy_from_slice(piece);
            buf[piece.len()..padded].fill(0);
            file.write_all(&buf[..padded])?;
        }
        Ok::<_, std::io::Error>(())
    });
    match written {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            drop(file);
            let _ = fs::remove_file(path);
            return Ok(false);
        }
        Err(e) => return Err(Error::path("write", path, e)),
    }
    file.set_len(bytes.len() as u64)
        .map_err(|e| Error::path("truncate", path, e))?;
    file.sync_all().map_err(|e| Error::path("fsync", path, e))?;
    Ok(true)
}

/// A new file written front to back, with direct IO where the filesystem
/// allows it: how a pack is streamed to disk as its blobs are sealed, so no
/// pack is ever held whole in memory. Whole pages from a page-aligned
/// buffer (the pieces a [`crate::backend::FileSink`] hands over) go to
/// disk straight from it; anything else is copied through a page-aligned
/// stage of its own (1 MiB, mapped on first use). [`AppendFile::finish`]
/// writes the tail, trims the padding and fsyncs.
pub struct AppendFile {
    path: std::path::PathBuf,
    file: fs::File,
    direct: bool,
    stage: Option<memmap2::MmapMut>,
    staged: usize,
    /// Bytes appended.
    len: u64,
    /// Bytes written to the file (with direct IO, whole pages).
    written: u64,
    /// Tests: the next direct write fails with EINVAL, as on a filesystem
    /// that accepts `O_DIRECT` at open but refuses the write.
    #[cfg(test)]
    refuse_direct: bool,
}

impl AppendFile {
    /// Creates `path`, which must not exist, with permissions `mode`.
    pub fn create(path: &Path, mode: u32) -> Result<AppendFile> {
        let (file, direct) = create_new(path, mode)?;
        Ok(AppendFile {
            path: path.to_path_buf(),
            file,
            direct,
            stage: None,
            staged: 0,
            len: 0,
            written: 0,
            #[cfg(test)]
            refuse_direct: false,
        })
    }

    /// Appends `bytes`.
    pub fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        self.len += bytes.len() as u64;
        if !self.direct {
            return self.write_out(bytes);
        }
        // Whole pages of a page-aligned buffer go out straight from it;
        // only what follows them (a pack's last partial page) is staged.
        if self.staged == 0 && (bytes.as_ptr() as usize) % ALIGN == 0 {
            let whole = bytes.len() / ALIGN * ALIGN;
            if whole > 0 {
                self.write_out(&bytes[..whole])?;
                bytes = &bytes[whole..];
            }
        }
        while !bytes.is_empty() {
            if !self.direct {
                // The filesystem refused a direct write just now (the
                // pages above or a full stage): the stage's bytes come
                // first, then the rest, all buffered from here on.
                self.flush_staged_buffered()?;
                return self.write_out(bytes);
            }
            let stage = match &mut self.stage {
                Some(s) => s,
                None => self.stage.insert(
                    memmap2::MmapMut::map_anon(BOUNCE).map_err(|e| Error::io("map a buffer", e))?,
                ),
            };
            let n = bytes.len().min(BOUNCE - self.staged);
            stage[self.staged..self.staged + n].copy_from_slice(&bytes[..n]);
            self.staged += n;
            bytes = &bytes[n..];
            if self.staged == BOUNCE {
                self.flush_stage(BOUNCE)?;
            }
        }
        Ok(())
    }

    /// Writes `buf`: with direct IO, whole pages of a page-aligned buffer.
    /// A filesystem that accepted `O_DIRECT` at open but refuses the first
    /// write gets the file reopened for buffered writes, and the write
    /// repeated; from then on [`AppendFile::append`] stages nothing.
    fn write_out(&mut self, buf: &[u8]) -> Result<()> {
        #[cfg(test)]
        let refused = std::mem::take(&mut self.refuse_direct) && self.direct;
        #[cfg(not(test))]
        let refused = false;
        let wrote = if refused {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            self.file.write_all(buf)
        };
        match wrote {
            Ok(()) => {}
            Err(e)
                if self.direct && e.raw_os_error() == Some(libc::EINVAL) && self.written == 0 =>
            {
                self.direct = false;
                self.file = OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&self.path)
                    .map_err(|e| Error::path("reopen", &self.path, e))?;
                self.file
                    .write_all(buf)
                    .map_err(|e| Error::path("write", &self.path, e))?;
            }
            Err(e) => return Err(Error::path("write", &self.path, e)),
        }
        self.written += buf.len() as u64;
        Ok(())
    }

    /// Writes the first `padded` bytes of the stage (whole pages) and
    /// empties it.
    fn flush_stage(&mut self, padded: usize) -> Result<()> {
        let stage = self.stage.take().expect("bytes were staged");
        let result = self.write_out(&stage[..padded]);
        self.stage = Some(stage);
        self.staged = 0;
        result
    }

    /// Writes the staged bytes as they are (no padding) once direct IO
    /// has been given up, and empties the stage.
    fn flush_staged_buffered(&mut self) -> Result<()> {
        if self.staged == 0 {
            return Ok(());
        }
        let stage = self.stage.take().expect("bytes were staged");
        let result = self.write_out(&stage[..self.staged]);
        self.stage = Some(stage);
        self.staged = 0;
        result
    }

    /// Writes what is staged, trims the padding and fsyncs.
    pub fn finish(mut self) -> Result<()> {
        if self.staged > 0 {
            let padded = self.staged.div_ceil(ALIGN) * ALIGN;
            let stage = self.stage.as_mut().expect("bytes were staged");
            stage[self.staged..padded].fill(0);
            self.flush_stage(padded)?;
        }
        if self.written != self.len {
            self.file
                .set_len(self.len)
                .map_err(|e| Error::path("truncate", &self.path, e))?;
        }
        self.file
            .sync_all()
            .map_err(|e| Error::path("fsync", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn aligned_pieces_and_unaligned_tails_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = AppendFile::create(&path, 0o600).unwrap();
        // A page-aligned whole-page piece (written straight from it), an
        // odd tail (staged), then whole pages again while bytes are staged.
        let mut piece = memmap2::MmapMut::map_anon(BOUNCE).unwrap();
        piece.copy_from_slice(&bytes(1, BOUNCE));
        f.append(&piece).unwrap();
        f.append(&bytes(2, 5000)).unwrap();
        f.append(&piece[..8192]).unwrap();
        f.append(&bytes(3, 3 * BOUNCE + 17)).unwrap();
        f.finish().unwrap();

        let mut want = bytes(1, BOUNCE);
        want.extend_from_slice(&bytes(2, 5000));
        want.extend_from_slice(&bytes(1, 8192));
        want.extend_from_slice(&bytes(3, 3 * BOUNCE + 17));
        assert!(fs::read(&path).unwrap() == want, "content differs");
    }

    #[test]
    fn whole_pages_then_a_tail_in_one_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = AppendFile::create(&path, 0o600).unwrap();
        let mut piece = memmap2::MmapMut::map_anon(BOUNCE).unwrap();
        piece.copy_from_slice(&bytes(4, BOUNCE));
        // Three pages and 100 bytes: the pages go out straight from the
        // piece, the 100 bytes are staged; then more pages, staged behind.
        f.append(&piece[..3 * ALIGN + 100]).unwrap();
        f.append(&piece[..2 * ALIGN]).unwrap();
        f.finish().unwrap();
        let mut want = bytes(4, 3 * ALIGN + 100);
        want.extend_from_slice(&bytes(4, 2 * ALIGN));
        assert!(fs::read(&path).unwrap() == want, "content differs");
    }

    #[test]
    fn a_refused_first_direct_write_keeps_the_order() {
        // The filesystem refuses the first direct write: here the whole
        // pages of a page-aligned piece whose tail is then staged. The
        // next appends, buffered, must come after that tail.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = AppendFile::create(&path, 0o600).unwrap();
        f.direct = true;
        f.refuse_direct = true;
        let mut piece = memmap2::MmapMut::map_anon(BOUNCE).unwrap();
        piece.copy_from_slice(&bytes(5, BOUNCE));
        f.append(&piece[..2 * ALIGN + 300]).unwrap();
        assert!(!f.direct, "fell back to buffered writes");
        f.append(&bytes(6, 7000)).unwrap();
        f.append(&piece[..ALIGN]).unwrap();
        f.finish().unwrap();
        let mut want = bytes(5, 2 * ALIGN + 300);
        want.extend_from_slice(&bytes(6, 7000));
        want.extend_from_slice(&bytes(5, ALIGN));
        assert!(fs::read(&path).unwrap() == want, "content differs");
    }

    #[test]
    fn a_refused_full_stage_keeps_the_order() {
        // The first direct write is a full stage, refused; what the same
        // append staged after it and the next appends follow in order.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = AppendFile::create(&path, 0o600).unwrap();
        f.direct = true;
        f.refuse_direct = true;
        f.append(&bytes(7, BOUNCE + 999)).unwrap();
        f.append(&bytes(8, 123)).unwrap();
        f.finish().unwrap();
        let mut want = bytes(7, BOUNCE + 999);
        want.extend_from_slice(&bytes(8, 123));
        assert!(fs::read(&path).unwrap() == want, "content differs");
    }

    /// A filesystem that refuses direct IO from the start: `write_new`
    /// leaves no file for the caller's buffered write to trip on, and an
    /// `AppendFile` writes buffered, the file whole.
    #[test]
    fn a_filesystem_refusing_direct_io_gets_buffered_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        refuse_at_open(true);
        let wrote = write_new(&path, &bytes(9, 3 * BOUNCE), 0o600);
        assert!(!wrote.unwrap(), "not written with direct IO");
        assert!(!path.exists(), "nothing left behind");
        let mut f = AppendFile::create(&path, 0o600).unwrap();
        assert!(!f.direct);
        f.append(&bytes(10, BOUNCE + 5)).unwrap();
        f.append(&bytes(11, 77)).unwrap();
        f.finish().unwrap();
        refuse_at_open(false);
        let mut want = bytes(10, BOUNCE + 5);
        want.extend_from_slice(&bytes(11, 77));
        assert!(fs::read(&path).unwrap() == want, "content differs");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"keep").unwrap();
        assert!(AppendFile::create(&path, 0o600).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"keep");
    }
}
