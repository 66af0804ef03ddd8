//! Files streamed into the store piece by piece: packs (direct IO, from
//! a writing thread of the sink's own) and index tables (page cache).

use super::*;

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
/// on commit. Appends
/// only copy into 1 MiB page-aligned pieces; a thread of the sink's own
/// writes them, in order and straight from the piece
/// (direct IO), so the caller (which appends under the writer's lock)
/// never waits on the disk unless it runs ahead by more than
/// [`SINK_QUEUE`] pieces.
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

/// A page-aligned buffer of [`SINK_PIECE`] bytes, the first `len` used.
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
        let mut file = directio::AppendFile::create(&tmp, modes.file)?;
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
            .unwrap_or_else(|| Error::Invalid(format!("writing {} stopped", self.tmp.display()))))
    }

    /// Closes the queue and waits for the writing thread's outcome.
    fn join(&mut self) -> Result<()> {
        self.to_io = None;
        match self.io.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Invalid(format!(
                "the thread writing {} panicked",
                self.tmp.display()
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
