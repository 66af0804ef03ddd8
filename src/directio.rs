//! Direct IO: writing packs written whole around the page cache.
//!
//! A pack is written once and read again only by a restore, verify or gc
//! that may be days away, so caching it evicts the user's working set; and
//! buffered writes of new files pay for every fresh page-cache page, which
//! on ballooned virtual machines costs more CPU than the data's own
//! encryption. So packs written whole (a backup's tree packs, gc's
//! repacked ones) go out with `O_DIRECT` through a page-aligned bounce
//! buffer each thread reuses. [`write_new`] falls back to the caller's
//! buffered path (returning `false`) on filesystems that refuse direct
//! IO, such as ramfs and tmpfs before Linux 6.6. Durability is unchanged:
//! callers fsync and rename exactly as on the buffered path.
//! `CAIRN_DIRECT_IO=0` turns direct IO off (for comparison, or on a
//! filesystem that misbehaves with it).
//!
//! Packs streamed as a backup seals their blobs are written through the
//! page cache instead, and dropped from it as they are written back (see
//! `backend::local::sink::BehindFile`): there one synchronous direct
//! write at a time held the backup up.
//!
//! Reads stay buffered, through memory maps: measured on the benchmark
//! machine, direct reads of packs were no faster than mapped reads with
//! readahead, since a synchronous read stalls its worker while the page
//! cache reads ahead; the same held for restored files written with
//! direct IO.

use std::cell::RefCell;
use std::fs;
use std::io::Write;
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
    let file = crate::backend::local::create_new(path, mode)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// A filesystem that refuses direct IO from the start: `write_new`
    /// leaves no file for the caller's buffered write to trip on.
    #[test]
    fn a_filesystem_refusing_direct_io_gets_buffered_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        refuse_at_open(true);
        let wrote = write_new(&path, &bytes(9, 3 * BOUNCE), 0o600);
        refuse_at_open(false);
        assert!(!wrote.unwrap(), "not written with direct IO");
        assert!(!path.exists(), "nothing left behind");
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"keep").unwrap();
        assert!(write_new(&path, &bytes(3, BOUNCE), 0o600).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"keep");
    }
}
