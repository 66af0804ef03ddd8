//! Files streamed into the store piece by piece: packs (from a writing
//! thread of the sink's own, kept behind their writeback) and index
//! tables (page cache).

use super::*;
use crate::escape::Show;

/// An index table streamed to `index/.tmp-<random>` with plain writes
/// through the page cache (tables are read back soon, and far smaller
/// than the data a backup streams), fsynced and renamed into place on
/// commit; removed if dropped uncommitted.
pub(super) struct PlainSink {
    pub(super) file: File,
    /// Empty once committed.
    pub(super) tmp: PathBuf,
    pub(super) dir: PathBuf,
}

impl crate::backend::FileSink for PlainSink {
    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let root = self.dir.parent().unwrap_or(&self.dir);
        room_for(root, bytes.len() as u64, &self.tmp)?;
        self.file
            .write_all(bytes)
            .map_err(|e| Error::path("write", &self.tmp, e))
    }

    fn commit(mut self: Box<Self>, name: &str) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::path("fsync", &self.tmp, e))?;
        crate::fault::point("backend-before-rename");
        let path = self.dir.join(name);
        fs::rename(&self.tmp, &path).map_err(|e| Error::path("rename into", &path, e))?;
        self.tmp = PathBuf::new();
        sync_dir(&self.dir)
    }
}

impl Drop for PlainSink {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A pack streamed to `packs/.tmp-<random>` and renamed into its folder
/// on commit. Appends only copy into 1 MiB pieces; a thread of the
/// sink's own writes them in order ([`BehindFile`]), so the caller (which
/// appends under the writer's lock) never waits on the disk unless it
/// runs ahead by more than [`SINK_QUEUE`] pieces.
pub(super) struct LocalSink {
    /// The repository folder.
    root: PathBuf,
    kind: FileKind,
    /// The permissions of the folders it makes.
    modes: Modes,
    /// Empty once committed.
    tmp: PathBuf,
    /// The piece being filled; `None` only while dropping.
    piece: Option<Piece>,
    to_io: Option<crossbeam_channel::Sender<Piece>>,
    emptied: crossbeam_channel::Receiver<Piece>,
    io: Option<std::thread::JoinHandle<Result<()>>>,
}

/// A buffer of [`SINK_PIECE`] bytes (a mapping of its own), the first
/// `len` used.
pub(super) struct Piece {
    buf: memmap2::MmapMut,
    len: usize,
}

impl Piece {
    /// An empty piece: a spare one if there is one, else a fresh mapping.
    fn new() -> Result<Piece> {
        let spare = SPARE_PIECES.lock().ok().and_then(|mut s| s.pop());
        let buf = match spare {
            Some(buf) => buf,
            None => {
                memmap2::MmapMut::map_anon(SINK_PIECE).map_err(|e| Error::io("map a buffer", e))?
            }
        };
        Ok(Piece { buf, len: 0 })
    }

    /// Keeps the piece's buffer for the next sink, up to [`SPARE_MAX`].
    fn recycle(self) {
        if let Ok(mut spare) = SPARE_PIECES.lock() {
            if spare.len() < SPARE_MAX {
                spare.push(self.buf);
            }
        }
    }
}

/// Buffers of finished sinks, reused by the next: a backup streams one
/// pack after another, and a fresh mapping per pack costs a page fault
/// (and a zeroed page) per 4 KiB written.
pub(super) static SPARE_PIECES: std::sync::Mutex<Vec<memmap2::MmapMut>> =
    std::sync::Mutex::new(Vec::new());
/// Spare pieces kept: what the sinks open at once during a backup hold at
/// most (one filling, one or two finishing, each with its queue).
pub(super) const SPARE_MAX: usize = 4 * (SINK_QUEUE + 2);

/// Size of the pieces a [`LocalSink`] hands to its writing thread.
pub(super) const SINK_PIECE: usize = 1 << 20;
/// Pieces queued for the writing thread before appends wait.
pub(super) const SINK_QUEUE: usize = 2;

impl LocalSink {
    pub(super) fn create(root: PathBuf, kind: FileKind, modes: Modes) -> Result<LocalSink> {
        if ensure_kind_dir(&root.join(kind.dir()), modes)? {
            sync_dir(&root)?;
        }
        let tmp = tmp_path(&root.join(kind.dir()));
        let mut file = BehindFile::create(&tmp, modes.file)?;
        let piece = match Piece::new() {
            Ok(p) => p,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let (to_io, pieces) = crossbeam_channel::bounded::<Piece>(SINK_QUEUE);
        let (give_back, emptied) = crossbeam_channel::bounded::<Piece>(SINK_QUEUE + 1);
        let (io_root, io_tmp) = (root.clone(), tmp.clone());
        let io = std::thread::Builder::new()
            .name("pack-writer".into())
            .spawn(move || {
                for mut piece in pieces {
                    room_for(&io_root, piece.len as u64, &io_tmp)?;
                    file.append(&piece.buf[..piece.len])?;
                    piece.len = 0;
                    let _ = give_back.try_send(piece);
                }
                file.finish()
            });
        let io = match io {
            Ok(h) => h,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io("start a pack writer thread", e));
            }
        };
        Ok(LocalSink {
            root,
            kind,
            modes,
            tmp,
            piece: Some(piece),
            to_io: Some(to_io),
            emptied,
            io: Some(io),
        })
    }

    /// Hands the current piece to the writing thread.
    fn send_piece(&mut self) -> Result<()> {
        let next = match self.emptied.try_recv() {
            Ok(p) => p,
            Err(_) => Piece::new()?,
        };
        let full = self.piece.replace(next).expect("a piece until dropped");
        let sent = self.to_io.as_ref().map(|tx| tx.send(full));
        if let Some(Ok(())) = sent {
            return Ok(());
        }
        // The writing thread stopped: its error says why.
        self.to_io = None;
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| Error::Invalid(format!("writing {} stopped", self.tmp.shown()))))
    }

    /// Closes the queue and waits for the writing thread's outcome.
    fn join(&mut self) -> Result<()> {
        self.to_io = None;
        match self.io.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Invalid(format!(
                "the thread writing {} panicked",
                self.tmp.shown()
            ))),
            None => Ok(()),
        }
    }
}

impl crate::backend::FileSink for LocalSink {
    fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let p = self.piece.as_mut().expect("a piece until dropped");
            let n = bytes.len().min(SINK_PIECE - p.len);
            p.buf[p.len..p.len + n].copy_from_slice(&bytes[..n]);
            p.len += n;
            bytes = &bytes[n..];
            if p.len == SINK_PIECE {
                self.send_piece()?;
            }
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>, name: &str) -> Result<()> {
        if self.piece.as_ref().is_some_and(|p| p.len > 0) {
            self.send_piece()?;
        }
        self.join()?;
        crate::fault::point("pack-sink-before-rename");
        let path = file_path(&self.root, self.kind, name);
        let dir = path.parent().expect("files live in a folder");
        let new_dir = ensure_pack_dir(dir, self.modes)?;
        fs::rename(&self.tmp, &path).map_err(|e| Error::path("rename into", &path, e))?;
        self.tmp = PathBuf::new();
        sync_dir(dir)?;
        if new_dir {
            sync_dir(dir.parent().expect("packs folder"))?;
        }
        Ok(())
    }
}

impl Drop for LocalSink {
    /// An uncommitted sink stops its thread and removes its file.
    fn drop(&mut self) {
        let _ = self.join();
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
        if let Some(piece) = self.piece.take() {
            piece.recycle();
        }
        for piece in self.emptied.try_iter() {
            piece.recycle();
        }
    }
}

/// A new file written front to back through the page cache and kept
/// behind its writeback: each write starts the writeback of its bytes
/// (`sync_file_range`), and what lies more than [`BEHIND`] behind the
/// last write is waited for and dropped from the page cache, as is the
/// rest once [`BehindFile::finish`] has synced the file. So the kernel
/// has several writes in flight while the backup goes on sealing, where
/// one synchronous direct write at a time held it up (measured: a tenth
/// of a first backup's time on the benchmark host), and a backup still
/// leaves the page cache to the host's own work, holding no more than
/// a few MiB of each pack there at a time. Durability is the fsync's, on
/// commit, as for any file the store writes.
pub(super) struct BehindFile {
    path: PathBuf,
    file: File,
    /// Bytes written.
    written: u64,
    /// Bytes before this are written back and dropped from the cache.
    dropped: u64,
    /// Whether the filesystem takes `sync_file_range`; if not, the file is
    /// written as any other and synced whole at the end.
    behind: bool,
}

/// How far the bytes still cached (dirty or being written back) of a
/// [`BehindFile`] reach behind its last write.
const BEHIND: u64 = 4 << 20;

impl BehindFile {
    /// Creates `path`, which must not exist, with permissions `mode`.
    pub(super) fn create(path: &Path, mode: u32) -> Result<BehindFile> {
        let file = create_new(path, mode)?;
        Ok(BehindFile {
            path: path.to_path_buf(),
            file,
            written: 0,
            dropped: 0,
            behind: true,
        })
    }

    /// Appends `bytes`.
    pub(super) fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::path("write", &self.path, e))?;
        let from = self.written;
        self.written += bytes.len() as u64;
        if !self.behind {
            return Ok(());
        }
        // Starts writing back what was just written.
        if let Err(e) = self.sync_range(from, self.written, libc::SYNC_FILE_RANGE_WRITE) {
            return self.unsupported_or(e);
        }
        if self.written - self.dropped > BEHIND {
            let upto = self.written - BEHIND;
            let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            if let Err(e) = self.sync_range(self.dropped, upto, wait) {
                return self.unsupported_or(e);
            }
            self.drop_cached(self.dropped, upto);
            self.dropped = upto;
        }
        Ok(())
    }

    /// Syncs the file and drops what it still has in the page cache.
    pub(super) fn finish(self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::path("fsync", &self.path, e))?;
        self.drop_cached(self.dropped, self.written);
        Ok(())
    }

    /// `sync_file_range` of bytes `from..to` with `flags`.
    fn sync_range(&self, from: u64, to: u64, flags: libc::c_uint) -> std::io::Result<()> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        // SAFETY: a system call on a descriptor `self.file` keeps open; it
        // reads no memory of ours.
        let r = unsafe { libc::sync_file_range(fd, from as i64, (to - from) as i64, flags) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// A `sync_file_range` error: a filesystem that does not offer it (or
    /// not on this file) gets plain buffered writes from here on; any
    /// other error (the disk's) is the write's.
    fn unsupported_or(&mut self, e: std::io::Error) -> Result<()> {
        match e.raw_os_error() {
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ESPIPE) => {
                self.behind = false;
                Ok(())
            }
            _ => Err(Error::path("write", &self.path, e)),
        }
    }

    /// Advises the kernel to drop bytes `from..to`, written back, from the
    /// page cache: only advice, so its outcome is not looked at.
    fn drop_cached(&self, from: u64, to: u64) {
        if to > from {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
            // SAFETY: as in `sync_range`.
            unsafe {
                libc::posix_fadvise(
                    fd,
                    from as i64,
                    (to - from) as i64,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        crate::gear::tests::noise(len, u64::from(seed) + 1)
    }

    /// Appends of every size, past the write-behind distance several
    /// times over, read back in order once finished.
    #[test]
    fn appends_read_back_in_order_past_the_writeback_distance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = BehindFile::create(&path, 0o600).unwrap();
        let mut want = Vec::new();
        let sizes = [
            SINK_PIECE,
            5000,
            1,
            SINK_PIECE,
            3 * SINK_PIECE + 17,
            0,
            4096,
        ];
        for (i, &len) in sizes.iter().cycle().take(28).enumerate() {
            let piece = bytes(i as u8, len);
            f.append(&piece).unwrap();
            want.extend_from_slice(&piece);
        }
        assert!(want.len() as u64 > 4 * BEHIND);
        assert_eq!(f.written, want.len() as u64);
        if f.behind {
            // All but the last stretch written back and dropped.
            assert!(
                f.dropped + BEHIND >= f.written,
                "{} of {}",
                f.dropped,
                f.written
            );
        }
        f.finish().unwrap();
        assert!(fs::read(&path).unwrap() == want, "content differs");
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"keep").unwrap();
        let e = BehindFile::create(&path, 0o600).err().expect("refused");
        assert!(e.to_string().contains("create"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"keep");
    }

    /// A filesystem without `sync_file_range` gets plain buffered writes;
    /// an error of the disk's fails the write, naming the file.
    #[test]
    fn sync_file_range_unsupported_falls_back_but_a_disk_error_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = BehindFile::create(&path, 0o600).unwrap();
        for errno in [libc::EINVAL, libc::ENOSYS, libc::EOPNOTSUPP, libc::ESPIPE] {
            f.behind = true;
            f.unsupported_or(std::io::Error::from_raw_os_error(errno))
                .unwrap();
            assert!(!f.behind, "errno {errno}");
        }
        f.behind = true;
        let e = f
            .unsupported_or(std::io::Error::from_raw_os_error(libc::EIO))
            .unwrap_err();
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        assert!(f.behind);
        // Written plainly from here on, the bytes still come back.
        f.behind = false;
        f.append(&bytes(1, 3 * SINK_PIECE)).unwrap();
        f.finish().unwrap();
        assert!(fs::read(&path).unwrap() == bytes(1, 3 * SINK_PIECE));
    }
}
