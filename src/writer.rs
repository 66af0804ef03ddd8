//! Storing new blobs: dedup, seal, pack, index.
//!
//! A [`BlobWriter`] is shared by all workers of an operation. It is the one
//! owner of the set of blobs that are indexed or in flight, so a blob seen
//! by two workers at once is stored once. Workers compress and encrypt
//! outside the lock; a full pack is written outside the lock too. On
//! [`BlobWriter::finish`] the open packs are written and then one index
//! table naming all new packs: packs first, index second, as the write
//! ordering requires. If the process dies before that, the packs written so
//! far are unreferenced and `gc` removes them; nothing referenced is lost.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::IndexBuilder;
use crate::pack::{self, BlobKind, FinishedPack, PackWriter};
use crate::repo::Repository;

/// Counts of what a writer stored.
#[derive(Clone, Debug, Default)]
pub struct WriteStats {
    /// New blobs.
    pub blobs: u64,
    /// Their plaintext bytes.
    pub raw_bytes: u64,
    /// Their sealed bytes.
    pub stored_bytes: u64,
    /// Packs written.
    pub packs: u64,
}

struct State {
    seen: HashSet<BlobId>,
    data: PackWriter,
    tree: PackWriter,
    index: IndexBuilder,
    stats: WriteStats,
}

/// Adds blobs to a repository. See the module docs.
pub struct BlobWriter<'r> {
    repo: &'r Repository,
    state: Mutex<State>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

impl<'r> BlobWriter<'r> {
    /// A writer for `repo`.
    pub fn new(repo: &'r Repository) -> BlobWriter<'r> {
        BlobWriter {
            repo,
            state: Mutex::new(State {
                seen: HashSet::new(),
                data: PackWriter::new(BlobKind::Data),
                tree: PackWriter::new(BlobKind::Tree),
                index: IndexBuilder::default(),
                stats: WriteStats::default(),
            }),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Invalid("a worker thread panicked while storing blobs".into()))
    }

    /// Stores `plaintext` unless present; returns its id and whether it was new.
    pub fn add(&self, kind: BlobKind, plaintext: &[u8]) -> Result<(BlobId, bool)> {
        let id = self.repo.key().blob_id(plaintext);
        let new = self.add_with_id(kind, id, plaintext)?;
        Ok((id, new))
    }

    /// Like [`Self::add`] with the id already computed.
    pub fn add_with_id(&self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<bool> {
        {
            let mut st = self.lock()?;
            if st.seen.contains(&id) || self.repo.index()?.contains(&id) {
                return Ok(false);
            }
            st.seen.insert(id);
        }
        let full = SCRATCH.with(|s| {
            let (scratch, sealed) = &mut *s.borrow_mut();
            pack::seal_blob(
                self.repo.key(),
                plaintext,
                self.repo.config().compression,
                scratch,
                sealed,
            );
            let mut st = self.lock()?;
            st.stats.blobs += 1;
            st.stats.raw_bytes += plaintext.len() as u64;
            st.stats.stored_bytes += sealed.len() as u64;
            let packer = match kind {
                BlobKind::Data => &mut st.data,
                BlobKind::Tree => &mut st.tree,
            };
            packer.add_sealed(id, sealed, plaintext.len() as u32);
            if packer.len() >= self.repo.config().pack_size as usize {
                Ok::<_, Error>(Some(std::mem::replace(packer, PackWriter::new(kind))))
            } else {
                Ok(None)
            }
        })?;
        if let Some(full) = full {
            self.write_pack(full.finish(self.repo.key()))?;
        }
        Ok(true)
    }

    fn write_pack(&self, pack: FinishedPack) -> Result<()> {
        self.repo.store_pack(&pack)?;
        crate::fault::point("after-pack-write");
        let mut st = self.lock()?;
        st.index
            .add_pack(pack.id, pack.header.kind, &pack.header.entries);
        st.stats.packs += 1;
        Ok(())
    }

    /// Writes the open packs and the index table; returns what was stored.
    /// On failure the packs already stored are recorded for the next run
    /// (see the `Drop` impl).
    pub fn finish(mut self) -> Result<WriteStats> {
        let key = self.repo.key();
        let repo = self.repo;
        let st = self
            .state
            .get_mut()
            .map_err(|_| Error::Invalid("a worker thread panicked while storing blobs".into()))?;
        for packer in [
            std::mem::replace(&mut st.data, PackWriter::new(BlobKind::Data)),
            std::mem::replace(&mut st.tree, PackWriter::new(BlobKind::Tree)),
        ] {
            if !packer.is_empty() {
                let pack = packer.finish(key);
                repo.store_pack(&pack)?;
                crate::fault::point("after-pack-write");
                st.index
                    .add_pack(pack.id, pack.header.kind, &pack.header.entries);
                st.stats.packs += 1;
            }
        }
        if !st.index.is_empty() {
            let (id, bytes) = std::mem::take(&mut st.index).finish(key);
            if let Err(e) = repo.backend().write(FileKind::Index, &id.to_hex(), &bytes) {
                if let Some(c) = repo.cache() {
                    let _ = c.put_pending(&id.to_hex(), &bytes);
                }
                return Err(e);
            }
            crate::fault::point("after-index-write");
        }
        Ok(std::mem::take(&mut st.stats))
    }
}

impl Drop for BlobWriter<'_> {
    /// A writer dropped before [`BlobWriter::finish`] completed (an error
    /// ended the operation) records the packs it already stored, so the
    /// next run reuses them: see [`Repository::salvage_index`].
    fn drop(&mut self) {
        let Ok(st) = self.state.get_mut() else { return };
        let kept = self.repo.salvage_index(std::mem::take(&mut st.index));
        if kept > 0 {
            eprintln!(
                "warning: {kept} pack(s) already uploaded are recorded; the next backup reuses them"
            );
        }
    }
}
