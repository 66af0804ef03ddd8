//! Storing new blobs: dedup, seal, pack, index.
//!
//! A [`BlobWriter`] is shared by all workers of an operation. It is the one
//! owner of the set of blobs that are indexed or in flight, so a blob seen
//! by two workers at once is stored once. Workers compress and encrypt
//! outside the lock; a full pack is written outside the lock too. On
//! [`BlobWriter::finish`] the open packs are written and then an index
//! table naming the new packs: packs first, index second, as the write
//! ordering requires. A writer that has indexed [`INDEX_EVERY`] blobs
//! since its last table writes one right away, maps it and forgets those
//! ids, so what it holds does not grow with what it stores. If the
//! process dies, the packs written since the last table are unindexed and
//! those before it indexed but used by no snapshot: `gc` removes both (and
//! the next backup reuses the indexed ones); nothing referenced is lost.
//!
//! A writer given the operation's lock ([`BlobWriter::locked`]) checks it
//! before each pack and confirms it before writing the index table (see
//! [`crate::repo::lock`]): gc may delete the packs of a holder whose lock
//! looked stale, so such a writer stops and publishes nothing.

use std::sync::Mutex;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, IdMap, IdSet, PackId};
use crate::index::{IdFilter, IndexBuilder, IndexTable};
use crate::pack::{self, BlobKind, PackWriter};
use crate::repo::lock::LockGuard;
use crate::repo::Repository;

/// How many blobs a writer indexes in memory before it writes their index
/// table (see the module docs): about 24 MiB of ids and entries.
pub const INDEX_EVERY: usize = 256 * 1024;

/// The blobs a writer stored or is storing: those of the index tables it
/// wrote so far, behind a filter that answers most lookups without
/// searching them, and the rest by id.
#[derive(Default)]
struct Seen {
    ids: IdSet<BlobId>,
    tables: Vec<IndexTable>,
    filter: IdFilter,
}

impl Seen {
    /// Whether `id` was stored or is being stored.
    fn contains(&self, id: &BlobId) -> bool {
        self.ids.contains(id) || self.in_tables(id)
    }

    fn in_tables(&self, id: &BlobId) -> bool {
        self.filter.may_contain(id) && self.tables.iter().any(|t| t.find(id).is_some())
    }

    /// Adds `id`; false if it was there already.
    fn insert(&mut self, id: BlobId) -> bool {
        !self.in_tables(&id) && self.ids.insert(id)
    }

    /// Takes `table`'s blobs out of the set and looks them up in it.
    fn add_table(&mut self, table: IndexTable) {
        for i in 0..table.len() {
            self.ids.remove(&table.id_at(i));
        }
        self.ids.shrink_to_fit();
        let count = self.tables.iter().map(IndexTable::len).sum::<usize>() + table.len();
        // Rebuilt at twice what it holds once full, so rebuilding from the
        // tables costs a constant share of their entries over the run.
        let rebuild = count > self.filter.capacity();
        if rebuild {
            self.filter = IdFilter::with_capacity(count * 2);
        }
        let older: &[IndexTable] = if rebuild { &self.tables } else { &[] };
        for t in older.iter().chain([&table]) {
            (0..t.len()).for_each(|i| self.filter.insert(&t.id_at(i)));
        }
        self.tables.push(table);
    }
}

/// What [`BlobWriter::parent_chunks`] found of a parent's chunks.
pub enum ParentChunks {
    /// All held; their plain length together, where the index gives each.
    Held { length: Option<u64> },
    /// The first the repository lacks.
    Missing(BlobId),
}

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
    /// Buffers of packs already written, reused for the next ones.
    spare: Vec<Vec<u8>>,
    /// The open packs, created at their first blob.
    data: Option<PackWriter>,
    tree: Option<PackWriter>,
    index: IndexBuilder,
    stats: WriteStats,
}

/// Adds blobs to a repository. See the module docs.
pub struct BlobWriter<'r> {
    repo: &'r Repository,
    lock: Option<&'r LockGuard>,
    /// The blobs this writer stored or is storing: the one set that
    /// decides which of two workers holding the same chunk stores it. A
    /// lock of its own, held only to look up or insert an id, so workers
    /// checking their chunks never wait behind a pack being appended to.
    seen: Mutex<Seen>,
    /// The open packs, the index table being built and the counts.
    state: Mutex<State>,
    /// The repository's index as this writer first saw it; what it stores
    /// itself is in `seen`.
    index: std::sync::OnceLock<std::sync::Arc<crate::index::IndexSet>>,
    /// Packs the index names that are missing from the store, or that a
    /// blob could not be read from (see [`BlobWriter::without_packs`] and
    /// [`BlobWriter::distrust`]): what the index places only there is
    /// stored again.
    lost: Mutex<IdSet<PackId>>,
    /// Whether `lost` holds any: until then a lookup takes no lock.
    any_lost: std::sync::atomic::AtomicBool,
    /// The packs the store lists, with their sizes: listed once, at the
    /// first blob found indexed (see [`BlobWriter::held`]).
    listed: std::sync::OnceLock<IdMap<PackId, u64>>,
    /// Held while `listed` is taken.
    listing: Mutex<()>,
    /// What [`BlobWriter::held`] found of packs the index names, one
    /// message a pack, for the command to warn of.
    packs_said: Mutex<Vec<String>>,
}

fn panicked() -> Error {
    Error::Invalid("a worker thread panicked while storing blobs".into())
}

/// A tree pack building in memory moves to the store's sink before it
/// grows past this (see [`BlobWriter::spill`]).
const SPILL_AT: usize = 4 << 20;

/// How a writer whose lock was lost ends its error message (a backup's,
/// or `repair snapshots`').
const NOTHING_PUBLISHED: &str =
    "nothing published from here on (no index table, no snapshot): run the command again";

/// How it ends the message when it found its lock lost right after
/// writing an index table.
const TAKEN_BACK: &str = "the index table just written is removed again, and nothing published \
                          from here on (no snapshot): run the command again";

thread_local! {
    static SEALED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<'r> BlobWriter<'r> {
    /// A writer for `repo`.
    pub fn new(repo: &'r Repository) -> BlobWriter<'r> {
        BlobWriter {
            repo,
            lock: None,
            seen: Mutex::new(Seen::default()),
            state: Mutex::new(State {
                spare: Vec::new(),
                data: None,
                tree: None,
                index: IndexBuilder::default(),
                stats: WriteStats::default(),
            }),
            index: std::sync::OnceLock::new(),
            lost: Mutex::default(),
            any_lost: Default::default(),
            listed: std::sync::OnceLock::new(),
            listing: Mutex::new(()),
            packs_said: Mutex::default(),
        }
    }

    /// Makes the writer store a blob whose only entries in the index name
    /// one of `lost`, packs missing from the store, instead of taking it
    /// for stored: `repair snapshots`, which lists the packs, passes those
    /// the index names and the store lacks, so that what it writes (an
    /// empty tree in place of an unreadable one, say) is really there. A
    /// backup passes none: it lists the packs at its first blob found
    /// indexed and finds them itself (see [`Self::held`]).
    pub fn without_packs(self, lost: IdSet<PackId>) -> BlobWriter<'r> {
        for pack in lost {
            self.distrust(pack);
        }
        self
    }

    /// Takes `pack` for missing from here on: a blob the index places
    /// only there is stored again. A backup that could not read a tree of
    /// its parent (its pack lost, or the tree damaged there) tells this,
    /// or it would take the trees it writes, the same ids, for stored,
    /// and its snapshot would lack them as the parent does.
    pub fn distrust(&self, pack: PackId) {
        if let Ok(mut lost) = self.lost.lock() {
            lost.insert(pack);
            self.any_lost
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Makes the writer check `lock` before each pack it stores and
    /// confirm it before it writes the index table; if the lock is lost
    /// the writer fails and, when dropped, records nothing.
    pub fn locked(mut self, lock: &'r LockGuard) -> BlobWriter<'r> {
        self.lock = Some(lock);
        self
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| panicked())
    }

    fn seen(&self) -> Result<std::sync::MutexGuard<'_, Seen>> {
        self.seen.lock().map_err(|_| panicked())
    }

    /// Stores `plaintext` unless present; returns its id and whether it was new.
    pub fn add(&self, kind: BlobKind, plaintext: &[u8]) -> Result<(BlobId, bool)> {
        let id = self.repo.key().blob_id(plaintext);
        let new = self.add_with_id(kind, id, plaintext)?;
        Ok((id, new))
    }

    /// The repository written to.
    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// The index, fetched from the repository once: the lookup of every
    /// chunk then takes no lock and no reference count.
    fn index(&self) -> Result<&crate::index::IndexSet> {
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let loaded = self.repo.index()?;
        Ok(self.index.get_or_init(|| loaded))
    }

    /// Like [`Self::add`] with the id already computed.
    pub fn add_with_id(&self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<bool> {
        let (new, full) = self.add_leaving_full(kind, id, plaintext)?;
        if let Some(full) = full {
            self.write_pack(full)?;
        }
        Ok(new)
    }

    /// Like [`Self::add_with_id`], but a pack this blob filled is handed
    /// back instead of written: the caller must store it ([`Self::write_pack`],
    /// or `store_filled`) or drop it, which stores nothing, on failure.
    fn add_leaving_full(
        &self,
        kind: BlobKind,
        id: BlobId,
        plaintext: &[u8],
    ) -> Result<(bool, Option<PackWriter>)> {
        // Every reader refuses a blob past this: stored, it could never be
        // read back, so the operation fails here instead.
        if plaintext.len() > pack::MAX_BLOB as usize {
            let what = match kind {
                BlobKind::Data => "a chunk",
                BlobKind::Tree => "a directory's tree",
            };
            return Err(Error::Invalid(format!(
                "{what} of {} bytes is more than the {} a blob may hold (FORMAT.md, \"Blobs\"); \
                 nothing of it was stored",
                plaintext.len(),
                pack::MAX_BLOB
            )));
        }
        if !self.claim(kind, &id)? {
            return Ok((false, None));
        }
        Ok((true, self.pack_claimed(kind, id, plaintext)?))
    }

    /// Whether the repository holds the chunks `ids` (as the index says,
    /// or as this writer stores them), and how many plain bytes they hold
    /// together as the index gives them: a backup asks this of the chunks
    /// an unchanged file keeps from its parent, which `repair index` may
    /// have dropped (their pack lost) since the parent was written, or
    /// which may not add up to the size the parent's entry gives (a
    /// damaged or forged parent tree).
    pub fn parent_chunks(&self, ids: &[BlobId]) -> Result<ParentChunks> {
        let mut length = Some(0u64);
        for id in ids {
            match self.indexed_length(id)? {
                Some(n) => length = length.map(|l| l + n),
                // Being stored by this writer (another file holds it):
                // held, its length not known here.
                None if self.seen()?.contains(id) => length = None,
                None => return Ok(ParentChunks::Missing(*id)),
            }
        }
        Ok(ParentChunks::Held { length })
    }

    /// The plain length the index gives chunk `id`, in a pack not known
    /// lost and [held](Self::held); `None` if it is not indexed as a
    /// chunk there.
    fn indexed_length(&self, id: &BlobId) -> Result<Option<u64>> {
        let index = self.index()?;
        loop {
            let found = if self.any_lost.load(std::sync::atomic::Ordering::Acquire) {
                let lost = self.lost.lock().map_err(|_| panicked())?;
                index.locate_own_kind_where(id, BlobKind::Data, &|p| !lost.contains(p))
            } else {
                index.locate_own_kind_where(id, BlobKind::Data, &|_| true)
            };
            match self.read_around_entry(found)? {
                Some(loc) if !self.held(&loc)? => continue,
                found => return Ok(found.map(|loc| u64::from(loc.raw_length))),
            }
        }
    }

    /// Whether the index holds `id` as a blob of `kind` in a pack not
    /// known lost and [held](Self::held).
    fn indexed(&self, kind: BlobKind, id: &BlobId) -> Result<bool> {
        use std::sync::atomic::Ordering::Acquire;
        let index = self.index()?;
        // Most blobs of a first backup are new: a miss is one search,
        // counted towards the index's filter.
        if !self.any_lost.load(Acquire) && !index.contains_kind(id, kind) {
            return Ok(false);
        }
        loop {
            let damage_met = self.any_lost.load(Acquire);
            let found = {
                let lost = self.lost.lock().map_err(|_| panicked())?;
                let usable = |p: &PackId| !lost.contains(p);
                match kind {
                    BlobKind::Tree if damage_met => index
                        .locate_kind_where(id, kind, &usable)
                        .map(|f| f.filter(|l| l.kind == kind)),
                    _ => index.locate_own_kind_where(id, kind, &usable),
                }
            };
            let found = self.read_around_entry(found)?;
            let Some(loc) = found else {
                return Ok(false);
            };
            if !self.held(&loc)? {
                continue;
            }
            if kind == BlobKind::Data || !damage_met {
                return Ok(true);
            }
            // A backup that met damage takes a tree for stored only where
            // its copy opens: the trees it writes are mostly its parent's
            // again, and those below a parent tree it read around were not
            // read, so may be damaged as well (until December 2026 they
            // were taken for stored, and the new snapshot was as damaged
            // as its parent). Trees are small, and this is done only after
            // damage was met. Read from the store: a host's cache may hold
            // intact a tree the store has damaged.
            match self.repo.read_located_in_store(id, loc) {
                Ok(_) => return Ok(true),
                Err(e) if e.is_not_found() || matches!(e, Error::Corrupt { .. }) => {
                    self.distrust(loc.pack)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the pack the index places a blob in (`loc`) is there and
    /// long enough to hold it, as the store's listing of packs says (taken
    /// once, at the first blob found indexed: one listing, where a check
    /// of each pack would be a request each on S3). A pack that is not is
    /// [distrusted](Self::distrust), so the blobs the index places there
    /// are stored again, and said once ([`Self::take_packs_said`]): until
    /// December 2026 a backup took them for stored, exit 0, and wrote a
    /// snapshot that could not be restored, night after night. A blob
    /// damaged inside a pack that is all there is still taken for stored:
    /// only reading it would tell (README, "verify").
    fn held(&self, loc: &crate::index::Location) -> Result<bool> {
        let listed = match self.listed.get() {
            Some(listed) => listed,
            None => {
                // One worker lists; the others wait for its listing (on a
                // remote store, a request a thousand packs).
                let _listing = self.listing.lock().map_err(|_| panicked())?;
                match self.listed.get() {
                    Some(listed) => listed,
                    None => {
                        let mut sizes = IdMap::default();
                        for (name, size) in self.repo.pack_sizes()? {
                            if let Ok(pack) = PackId::from_hex(&name) {
                                sizes.insert(pack, size);
                            }
                        }
                        self.listed.get_or_init(|| sizes)
                    }
                }
            }
        };
        let end = u64::from(loc.offset) + u64::from(loc.length);
        let why = match listed.get(&loc.pack) {
            Some(&size) if size >= end => return Ok(true),
            Some(&size) => format!(
                "is cut short: {size} bytes, where the index places a blob up to byte {end} \
                 (or that index entry is damaged: `cairn verify` checks the tables)"
            ),
            None => "is missing from the repository".to_string(),
        };
        let first = {
            let mut lost = self.lost.lock().map_err(|_| panicked())?;
            let first = lost.insert(loc.pack);
            self.any_lost
                .store(true, std::sync::atomic::Ordering::Release);
            first
        };
        if first {
            // A tree pack's intact copy in this host's cache mends it.
            let name = loc.pack.to_hex();
            let mends = match self.repo.cache().filter(|c| c.intact_pack(&name).is_some()) {
                Some(_) => {
                    "this host's cache holds an intact copy of it, which `cairn repair index`, \
                     run on this host, puts back into the repository, so no snapshot loses \
                     anything"
                }
                None => {
                    "`cairn verify` names the snapshots that lost data with it, and `cairn \
                     repair index` makes the index say what the packs hold"
                }
            };
            self.packs_said
                .lock()
                .map_err(|_| panicked())?
                .push(format!(
                    "pack {}, which the index names, {why}: the data this backup found indexed \
                     there was stored again (this snapshot holds it); {mends}",
                    loc.pack.short()
                ));
        }
        Ok(false)
    }

    /// `found`, a lookup's outcome, with an index entry that fails the
    /// checks a lookup makes (a pack number past its table's packs) taken
    /// for none, said once: the blob is then stored again, and a damaged
    /// table does not stop the backup (until December 2026 it failed every
    /// backup that met the entry, with only the damage said).
    fn read_around_entry(
        &self,
        found: Result<Option<crate::index::Location>>,
    ) -> Result<Option<crate::index::Location>> {
        match found {
            Err(e @ Error::Corrupt { .. }) => {
                let said = format!(
                    "{e}: what it places there is stored again where this backup holds it; \
                     `cairn repair index` rebuilds the index from the packs"
                );
                let mut all = self.packs_said.lock().map_err(|_| panicked())?;
                if !all.contains(&said) {
                    all.push(said);
                }
                Ok(None)
            }
            found => found,
        }
    }

    /// What [`Self::held`] found since the last call: one warning a pack
    /// missing or cut short.
    pub fn take_packs_said(&self) -> Vec<String> {
        self.packs_said
            .lock()
            .map(|mut said| std::mem::take(&mut *said))
            .unwrap_or_default()
    }

    /// Whether `id` is neither stored nor being stored; if so, the caller
    /// now stores it ([`Self::pack_claimed`]), and whoever asks next is
    /// told it is being stored. The index is asked once per id: it is the
    /// repository's as first seen and does not change, so a new chunk
    /// costs one search of its tables.
    fn claim(&self, kind: BlobKind, id: &BlobId) -> Result<bool> {
        Ok(!self.indexed(kind, id)? && self.seen()?.insert(*id))
    }

    /// Seals `plaintext`, claimed as `id`, into the open pack of `kind`;
    /// returns that pack if it is now full, for the caller to store.
    fn pack_claimed(
        &self,
        kind: BlobKind,
        id: BlobId,
        plaintext: &[u8],
    ) -> Result<Option<PackWriter>> {
        SEALED.with(|s| {
            let buf = &mut *s.borrow_mut();
            let sealed = pack::seal_blob(
                self.repo.key(),
                plaintext,
                self.repo.config().compression,
                buf,
            );
            let mut st = self.lock()?;
            let State {
                spare,
                data,
                tree,
                stats,
                ..
            } = &mut *st;
            stats.blobs += 1;
            stats.raw_bytes += plaintext.len() as u64;
            stats.stored_bytes += sealed.len() as u64;
            let slot = match kind {
                BlobKind::Data => data,
                BlobKind::Tree => tree,
            };
            let packer = match slot {
                Some(p) => p,
                None => slot.insert(self.new_packer(kind, spare)?),
            };
            if kind == BlobKind::Tree
                && !packer.is_streamed()
                && packer.len() + sealed.len() > SPILL_AT
            {
                if let Err(e) = self.spill(packer, spare) {
                    *slot = None;
                    return Err(e);
                }
            }
            if let Err(e) = packer.add_sealed(id, sealed, plaintext.len() as u32) {
                *slot = None; // a pack that missed a write is never stored
                return Err(e);
            }
            if packer.len() >= self.repo.config().pack_size as usize {
                Ok(slot.take())
            } else {
                Ok(None)
            }
        })
    }

    /// An empty pack of `kind`. Data packs are streamed to the store where
    /// it offers a sink (a local directory), so no pack is held whole in
    /// memory; otherwise, and for tree packs (which the cache keeps), a
    /// pack builds in memory in a recycled buffer, and a tree pack moves
    /// to the sink once it outgrows [`SPILL_AT`] if no cache keeps it.
    fn new_packer(&self, kind: BlobKind, spare: &mut Vec<Vec<u8>>) -> Result<PackWriter> {
        if kind == BlobKind::Data {
            if let Some(sink) = self.repo.backend().pack_sink()? {
                return PackWriter::streaming(kind, sink);
            }
        }
        Ok(PackWriter::with_buffer(
            kind,
            spare.pop().unwrap_or_default(),
        ))
    }

    /// Moves a tree pack that outgrew [`SPILL_AT`] in memory to the
    /// store's sink, when there is one and no cache wants its bytes: one
    /// directory of many entries makes a tree blob of megabytes, which
    /// then goes to the store in pieces instead of into a buffer of the
    /// pack's size.
    fn spill(&self, packer: &mut PackWriter, spare: &mut Vec<Vec<u8>>) -> Result<()> {
        if self.repo.cache().is_some() {
            return Ok(());
        }
        if let Some(sink) = self.repo.backend().pack_sink()? {
            let buf = packer.spill(sink)?;
            if buf.capacity() > 0 {
                spare.push(buf);
            }
        }
        Ok(())
    }

    fn write_pack(&self, full: PackWriter) -> Result<()> {
        if let Some(lock) = self.lock {
            lock.check(NOTHING_PUBLISHED)?;
        }
        let mut pack = full.finish(self.repo.key())?;
        self.repo.store_pack(&mut pack)?;
        crate::fault::point("after-pack-write");
        let mut st = self.lock()?;
        st.index
            .add_pack(pack.id, pack.header.kind, &pack.header.entries);
        st.stats.packs += 1;
        if pack.bytes.capacity() > 0 {
            st.spare.push(pack.bytes);
        }
        let every = crate::fault::index_every().unwrap_or(INDEX_EVERY);
        if st.index.len() >= every {
            let full = std::mem::take(&mut st.index);
            drop(st);
            self.write_index_part(full)?;
        }
        Ok(())
    }

    /// Writes the index table of `builder`'s packs (all stored) before the
    /// writer finishes, and looks their blobs up in it from now on instead
    /// of in memory.
    fn write_index_part(&self, builder: IndexBuilder) -> Result<()> {
        if let Some(lock) = self.lock {
            lock.confirm(NOTHING_PUBLISHED)?;
        }
        let backend = self.repo.backend();
        let version = self.repo.config().index_version();
        let mut tables = Vec::new();
        for (id, bytes) in builder.finish(self.repo.key(), version) {
            let name = id.to_hex();
            if let Err(e) = backend.write(FileKind::Index, &name, &bytes) {
                if let Some(c) = self.repo.cache() {
                    let _ = c.put_pending(&name, &bytes);
                }
                return Err(e);
            }
            if let Some(lock) = self.lock {
                tables.push(name.clone());
                lock.after_publishing(FileKind::Index, &tables, TAKEN_BACK)?;
            }
            // A local table is mapped (its pages are the kernel's to drop);
            // a remote one stays in memory, where it takes half of what its
            // ids took in the set and the builder.
            let data = if backend.prefers_ranges() {
                crate::backend::Data::Owned(bytes)
            } else {
                drop(bytes);
                backend.read(FileKind::Index, &name)?
            };
            let table = IndexTable::parse(id, data)?;
            self.seen()?.add_table(table);
        }
        crate::fault::point("after-index-part-write");
        Ok(())
    }

    /// Writes the open packs and the index table; returns what was stored.
    /// On failure the packs already stored are recorded for the next run
    /// (see the `Drop` impl).
    pub fn finish(mut self) -> Result<WriteStats> {
        // Nothing is claimed any more: the ids of blobs in flight (8.6 MB
        // for 200,000) go before the last packs' entries are indexed.
        if let Ok(seen) = self.seen.get_mut() {
            *seen = Seen::default();
        }
        let key = self.repo.key();
        let repo = self.repo;
        let st = self.state.get_mut().map_err(|_| panicked())?;
        // The tree pack first: its few entries then do not make the
        // index builder double what the data pack's many took.
        for packer in [st.tree.take(), st.data.take()].into_iter().flatten() {
            if !packer.is_empty() {
                if let Some(lock) = self.lock {
                    lock.check(NOTHING_PUBLISHED)?;
                }
                let mut pack = packer.finish(key)?;
                repo.store_pack(&mut pack)?;
                crate::fault::point("after-pack-write");
                st.index
                    .add_pack(pack.id, pack.header.kind, &pack.header.entries);
                st.stats.packs += 1;
            }
        }
        if !st.index.is_empty() {
            if let Some(lock) = self.lock {
                lock.confirm(NOTHING_PUBLISHED)?;
            }
            let version = repo.config().index_version();
            let mut tables = Vec::new();
            for (id, bytes) in std::mem::take(&mut st.index).finish(key, version) {
                if let Err(e) = repo.backend().write(FileKind::Index, &id.to_hex(), &bytes) {
                    if let Some(c) = repo.cache() {
                        let _ = c.put_pending(&id.to_hex(), &bytes);
                    }
                    return Err(e);
                }
                tables.push(id.to_hex());
            }
            if let Some(lock) = self.lock {
                lock.after_publishing(FileKind::Index, &tables, TAKEN_BACK)?;
            }
            crate::fault::point("after-index-write");
            repo.reload_index();
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
        if st.index.pack_count() == 0 {
            return;
        }
        if let Some(lock) = self.lock {
            // Packs of a lost lock may be deleted already: naming them in
            // an index table would make the index point at missing packs.
            // (A store that cannot be reached does not make it lost: the
            // table then goes to the cache, and is uploaded only once all
            // its packs are found present.)
            let _ = lock.confirm("");
            if lock.is_lost() {
                return;
            }
        }
        let kept = self.repo.salvage_index(std::mem::take(&mut st.index));
        if kept > 0 {
            crate::eprint_line(format_args!(
                "warning: {kept} pack(s) already uploaded are recorded; the next backup reuses them"
            ));
        }
    }
}

/// A chunk waiting to be sealed: kind, id, plaintext.
type SealJob = (BlobKind, BlobId, Vec<u8>);

/// The hand-off from chunking to sealing: the thread that reads and chunks
/// a file hashes each chunk itself (so the file's chunk list is in order at
/// once) and queues only chunks not yet stored; a pool of sealer threads
/// compresses, encrypts and packs them. So one large file, or a dump on
/// standard input, keeps every core busy rather than one. The queue is
/// bounded, and chunk buffers are recycled through it, so memory stays
/// flat.
pub struct SealQueue<'w> {
    writer: &'w BlobWriter<'w>,
    jobs: crossbeam_channel::Sender<SealJob>,
    spare: crossbeam_channel::Receiver<Vec<u8>>,
    /// To the committer, for packs filled by chunks sealed inline.
    full: crossbeam_channel::Sender<PackWriter>,
    failed: &'w std::sync::atomic::AtomicBool,
    /// Records a storing error for [`with_sealers`] to return.
    fail: &'w (dyn Fn(Error) + Sync),
    /// The ids of all-zero chunks by length ([`Self::add_zeros`]).
    zero_ids: std::sync::Mutex<Vec<(usize, BlobId)>>,
}

/// Chunks up to this size are sealed by the thread that adds them instead
/// of a sealer: for a small file, handing its one chunk to another thread
/// (a copy, two wake-ups) costs about as much as compressing it, and
/// workers reading many small files at once keep every core busy anyway.
const SEAL_INLINE_MAX: usize = 64 << 10;

impl SealQueue<'_> {
    /// Queues `data` for storing unless it is stored or in flight already
    /// (claimed here, so a chunk two workers hold is queued once); returns
    /// its id. An error means an earlier chunk failed to store (the pool
    /// reports that error) or the pool stopped.
    pub fn add(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        self.add_with_id(kind, self.writer.repo.key().blob_id(data), data)
    }

    /// [`Self::add`] of a chunk known to be all zeros (a hole of a sparse
    /// file): its id is hashed once per length, not once per chunk.
    pub fn add_zeros(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        debug_assert!(data.iter().all(|&b| b == 0));
        let known = |ids: &Vec<(usize, BlobId)>| {
            ids.iter().find(|(len, _)| *len == data.len()).map(|e| e.1)
        };
        // The guard goes before the match, which may lock again.
        let cached = self.zero_ids.lock().ok().as_deref().and_then(known);
        let id = match cached {
            Some(id) => id,
            None => {
                let id = self.writer.repo.key().blob_id(data);
                if let Ok(mut ids) = self.zero_ids.lock() {
                    // A few lengths: a hole's chunks, and the ends of holes.
                    if ids.len() >= 64 {
                        ids.clear();
                    }
                    ids.push((data.len(), id));
                }
                id
            }
        };
        self.add_with_id(kind, id, data)
    }

    /// [`Self::add`] with the id of `data` already known.
    fn add_with_id(&self, kind: BlobKind, id: BlobId, data: &[u8]) -> Result<BlobId> {
        let stopped = || Error::Invalid("storing stopped after an earlier error".into());
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(stopped());
        }
        if !self.writer.claim(kind, &id)? {
            return Ok(id);
        }
        if data.len() <= SEAL_INLINE_MAX {
            return match seal(self.writer, &self.full, kind, id, data) {
                Ok(()) => Ok(id),
                Err(e) => {
                    // Returned by `with_sealers`, as a sealer's would be.
                    (self.fail)(e);
                    Err(stopped())
                }
            };
        }
        let mut buf = self.spare.try_recv().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        self.jobs.send((kind, id, buf)).map_err(|_| stopped())?;
        Ok(id)
    }
}

/// Seals and packs one claimed chunk (as a sealer, or a worker sealing
/// inline), storing the pack it fills, if any, with [`store_filled`].
fn seal(
    writer: &BlobWriter<'_>,
    committer: &crossbeam_channel::Sender<PackWriter>,
    kind: BlobKind,
    id: BlobId,
    data: &[u8],
) -> Result<()> {
    match writer.pack_claimed(kind, id, data)? {
        Some(full) => store_filled(writer, full, committer),
        None => Ok(()),
    }
}

/// Stores a pack a sealer (or a worker sealing inline) filled. A streamed
/// pack goes to the committer: what is left of it is the disk's work (the
/// stream's end, fsyncs, rename). A pack built in memory, for a remote
/// store, is uploaded by the thread that filled it, as many at a time as
/// there are such threads, and no more packs are held in memory than
/// those threads hold.
fn store_filled(
    writer: &BlobWriter<'_>,
    full: PackWriter,
    committer: &crossbeam_channel::Sender<PackWriter>,
) -> Result<()> {
    if full.is_streamed() {
        // The committer stops only once every sender is gone.
        committer
            .send(full)
            .map_err(|_| Error::Invalid("the pack committer stopped".into()))
    } else {
        writer.write_pack(full)
    }
}

/// Runs `f` with a [`SealQueue`] served by `threads` sealer threads; waits
/// for every queued chunk to be stored before returning. A storing error
/// (disk full, IO error) stops the queue and is returned in preference to
/// whatever `f` returned.
///
/// Sealers hand each streamed pack they fill to one committer thread,
/// which stores it (finishing the stream, fsync, rename) and only then
/// indexes it, as the write ordering requires; meanwhile the sealers go on
/// sealing instead of waiting on the disk. Packs built in memory (a remote
/// store) are uploaded by the sealer that filled them (see
/// `store_filled`). One filled pack may wait for the
/// committer; a sealer that fills another meanwhile waits until the
/// committer takes the first.
pub fn with_sealers<R>(
    writer: &BlobWriter<'_>,
    threads: usize,
    f: impl FnOnce(&SealQueue<'_>) -> R,
) -> Result<R> {
    let threads = threads.max(1);
    let (jobs, queued) = crossbeam_channel::bounded::<SealJob>(threads);
    let (recycle, spare) = crossbeam_channel::bounded::<Vec<u8>>(2 * threads + 1);
    let (full_tx, full_rx) = crossbeam_channel::bounded::<PackWriter>(1);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        failed.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut first) = first_error.lock() {
            first.get_or_insert(e);
        }
    };
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            for full in full_rx {
                // After a failure, filled packs are dropped: stored
                // nowhere, indexed nowhere.
                if !failed.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Err(e) = writer.write_pack(full) {
                        fail(e);
                    }
                }
            }
        });
        for _ in 0..threads {
            let (queued, recycle, full_tx) = (queued.clone(), recycle.clone(), full_tx.clone());
            let (failed, fail) = (&failed, &fail);
            s.spawn(move || {
                for (kind, id, buf) in queued {
                    if failed.load(std::sync::atomic::Ordering::Relaxed) {
                        continue; // drain, so senders never block
                    }
                    if let Err(e) = seal(writer, &full_tx, kind, id, &buf) {
                        fail(e);
                    }
                    let _ = recycle.try_send(buf);
                }
            });
        }
        drop(queued);
        let queue = SealQueue {
            writer,
            jobs,
            spare,
            full: full_tx,
            failed: &failed,
            fail: &fail,
            zero_ids: Default::default(),
        };
        f(&queue)
        // `queue` drops here, closing the channel; the scope then joins
        // the sealers once they have drained it, and the committer once
        // the sealers and the queue are gone.
    });
    match first_error.into_inner() {
        Ok(Some(e)) => Err(e),
        Ok(None) => Ok(out),
        Err(_) => Err(Error::Invalid("a sealer thread panicked".into())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::testing::{repo_of_small_packs, Hooked, Hooks};
    use crate::backend::Backend;

    /// A local backend on a full disk. `Whole`: writes of whole packs fail
    /// (the backend offers no sink, as a remote store); `Streamed`: packs
    /// are streamed, and each fails once 600 kB of it were written.
    #[derive(Clone, Copy, PartialEq)]
    enum Full {
        Whole,
        Streamed,
    }

    /// A local backend in `dir` on a disk that is `full`.
    fn disk_full(dir: &std::path::Path, full: Full) -> Hooked<LocalBackend, Full> {
        Hooked {
            inner: LocalBackend::new(dir),
            hooks: full,
        }
    }

    fn enospc(what: String) -> Error {
        Error::io(what, std::io::Error::from_raw_os_error(libc::ENOSPC))
    }

    struct FullSink {
        inner: Box<dyn crate::backend::FileSink>,
        written: usize,
    }

    impl crate::backend::FileSink for FullSink {
        fn append(&mut self, bytes: &[u8]) -> Result<()> {
            self.written += bytes.len();
            if self.written > 600_000 {
                return Err(enospc("write pack".into()));
            }
            self.inner.append(bytes)
        }
        fn commit(self: Box<Self>, name: &str) -> Result<()> {
            self.inner.commit(name)
        }
    }

    impl Hooks for Full {
        fn write(&self, kind: FileKind, name: &str) -> Option<Result<()>> {
            (kind == FileKind::Pack && *self == Full::Whole)
                .then(|| Err(enospc(format!("write pack {name}"))))
        }
        fn pack_sink(
            &self,
            inner: &dyn Backend,
        ) -> Result<Option<Box<dyn crate::backend::FileSink>>> {
            if *self == Full::Whole {
                return Ok(None);
            }
            let inner = inner.pack_sink()?.expect("local directories stream packs");
            Ok(Some(Box::new(FullSink { inner, written: 0 })))
        }
    }

    fn chunk(i: u32) -> Vec<u8> {
        (0..300_000u32)
            .map(|j| (j.wrapping_mul(2654435761).wrapping_add(i) >> 11) as u8)
            .collect()
    }

    /// A blob past `MAX_BLOB`, which every reader refuses, is refused
    /// here, and nothing is stored.
    #[test]
    fn a_blob_no_reader_would_take_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_of_small_packs(Arc::new(LocalBackend::new(dir.path())));
        let writer = BlobWriter::new(&repo);
        // Zeroed by the allocator, untouched: no 256 MiB written here.
        let huge = vec![0u8; pack::MAX_BLOB as usize + 1];
        let e = writer
            .add_with_id(BlobKind::Tree, BlobId([9; 32]), &huge)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than the 268435456 a blob may hold"), "{e}");
        assert!(writer
            .add_with_id(BlobKind::Tree, BlobId([8; 32]), b"small")
            .unwrap());
        let stats = writer.finish().unwrap();
        assert_eq!(stats.blobs, 1);
    }

    /// A writer told that a pack is lost stores a blob the index places
    /// only there, and reading it then finds the new copy; a writer told
    /// nothing takes it for stored.
    #[test]
    fn a_blob_indexed_only_in_a_lost_pack_is_stored_again() {
        let backend: Arc<dyn Backend> = Arc::new(crate::backend::mem::MemBackend::default());
        let repo = repo_of_small_packs(backend.clone());
        let writer = BlobWriter::new(&repo);
        let (id, _) = writer.add(BlobKind::Tree, b"a tree").unwrap();
        writer.finish().unwrap();
        let lost = repo.locate(&id).unwrap().pack;
        backend.remove(FileKind::Pack, &lost.to_hex()).unwrap();

        // Passed as lost (as `repair snapshots` does), it is not looked for.
        let writer = BlobWriter::new(&repo).without_packs([lost].into_iter().collect());
        assert!(writer.add(BlobKind::Tree, b"a tree").unwrap().1);
        assert_eq!(writer.take_packs_said(), Vec::<String>::new());
        assert_eq!(writer.finish().unwrap().blobs, 1);
        assert_eq!(repo.read_tree_blob(&id).unwrap(), b"a tree");
        assert_eq!(repo.read_blob(&id).unwrap(), b"a tree");
    }

    /// A writer that met damage checks a tree it would take for stored in
    /// the store, not in the host's cache of tree packs, which may hold
    /// intact a copy the store has damaged.
    #[test]
    fn after_damage_a_tree_is_checked_in_the_store_not_the_cache() {
        let backend: Arc<dyn Backend> = Arc::new(crate::backend::mem::MemBackend::default());
        let plain = repo_of_small_packs(backend.clone());
        let writer = BlobWriter::new(&plain);
        let (id, _) = writer.add(BlobKind::Tree, b"a tree").unwrap();
        writer.finish().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let repo = Repository::open(backend.clone(), b"pw")
            .unwrap()
            .with_cache(cache.path())
            .unwrap();
        let loc = repo.locate(&id).unwrap();
        repo.read_located(&id, loc).unwrap();
        let name = loc.pack.to_hex();
        let mut bytes = backend.read(FileKind::Pack, &name).unwrap().to_vec();
        bytes[loc.offset as usize + loc.length as usize / 2] ^= 0x55;
        backend.remove(FileKind::Pack, &name).unwrap();
        backend.write(FileKind::Pack, &name, &bytes).unwrap();
        assert!(
            repo.read_located(&id, loc).is_ok(),
            "the cache holds it intact"
        );

        let writer = BlobWriter::new(&repo);
        writer.distrust(PackId([9; 32]));
        assert!(
            writer.add(BlobKind::Tree, b"a tree").unwrap().1,
            "stored again"
        );
        assert_eq!(writer.finish().unwrap().blobs, 1);
    }

    /// A backup's writer finds, by the listing of packs, a pack the index
    /// names that is gone or cut short, stores again what the index
    /// places there, and says so once a pack.
    #[test]
    fn a_blob_in_a_missing_or_cut_short_pack_is_stored_again_and_said() {
        let backend: Arc<dyn Backend> = Arc::new(crate::backend::mem::MemBackend::default());
        let repo = repo_of_small_packs(backend.clone());
        let writer = BlobWriter::new(&repo);
        let gone = writer.add(BlobKind::Tree, b"a tree").unwrap().0;
        let short = writer.add(BlobKind::Data, &noise(1)).unwrap().0;
        writer.finish().unwrap();
        let gone_pack = repo.locate(&gone).unwrap().pack;
        let short_pack = repo.locate(&short).unwrap().pack;
        assert_ne!(gone_pack, short_pack);
        backend.remove(FileKind::Pack, &gone_pack.to_hex()).unwrap();
        let bytes = backend.read(FileKind::Pack, &short_pack.to_hex()).unwrap();
        let cut = bytes[..bytes.len() / 2].to_vec();
        backend
            .write(FileKind::Pack, &short_pack.to_hex(), &cut)
            .unwrap();

        let writer = BlobWriter::new(&repo);
        assert!(writer.add(BlobKind::Tree, b"a tree").unwrap().1);
        assert!(
            !writer.add(BlobKind::Tree, b"a tree").unwrap().1,
            "stored once"
        );
        assert!(matches!(
            writer.parent_chunks(&[short]).unwrap(),
            ParentChunks::Missing(id) if id == short
        ));
        assert!(writer.add(BlobKind::Data, &noise(1)).unwrap().1);
        let said = writer.take_packs_said();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].starts_with(&format!("pack {}, ", gone_pack.short())));
        assert!(
            said[0].contains("is missing from the repository"),
            "{said:?}"
        );
        let cut_at = format!("is cut short: {} bytes", cut.len());
        assert!(said[1].starts_with(&format!("pack {}, ", short_pack.short())));
        assert!(said[1].contains(&cut_at), "{said:?}");
        assert_eq!(writer.finish().unwrap().blobs, 2);

        // The copies stored again are found by the next writer (which
        // says the lost packs again if its search meets their entries
        // first, as the order of the tables decides).
        let writer = BlobWriter::new(&repo);
        assert!(!writer.add(BlobKind::Tree, b"a tree").unwrap().1);
        assert!(!writer.add(BlobKind::Data, &noise(1)).unwrap().1);
        assert_eq!(writer.finish().unwrap().blobs, 0);
    }

    #[test]
    fn sealers_store_every_queued_chunk_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_of_small_packs(Arc::new(LocalBackend::new(dir.path())));
        let writer = BlobWriter::new(&repo);
        let ids = with_sealers(&writer, 3, |q| {
            (0..20)
                .map(|i| q.add(BlobKind::Data, &chunk(i % 10)).unwrap())
                .collect::<Vec<_>>()
        })
        .unwrap();
        let stats = writer.finish().unwrap();
        assert_eq!(stats.blobs, 10, "duplicates are stored once");
        let repo = Repository::open(repo.backend_arc(), b"pw").unwrap();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(repo.read_blob(id).unwrap(), chunk(i as u32 % 10));
        }
    }

    /// 300 kB that do not compress.
    fn noise(i: u32) -> Vec<u8> {
        let mut out = vec![0u8; 300_000];
        blake3::Hasher::new()
            .update(&i.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn streamed_packs_are_valid_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_of_small_packs(Arc::new(LocalBackend::new(dir.path())));
        let writer = BlobWriter::new(&repo);
        with_sealers(&writer, 2, |q| {
            for i in 0..12 {
                q.add(BlobKind::Data, &noise(i)).unwrap();
            }
        })
        .unwrap();
        let stats = writer.finish().unwrap();
        // 12 chunks of 300 kB; a pack is closed once it reaches 1 MiB,
        // so each holds four.
        assert_eq!((stats.blobs, stats.packs), (12, 3));
        let repo = Repository::open(repo.backend_arc(), b"pw").unwrap();
        for i in 0..12 {
            assert_eq!(
                repo.read_blob(&repo.key().blob_id(&noise(i))).unwrap(),
                noise(i)
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("packs"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().len() != 2)
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_full_disk_while_streaming_a_pack_is_returned_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_of_small_packs(Arc::new(disk_full(dir.path(), Full::Streamed)));
        let writer = BlobWriter::new(&repo);
        let result = with_sealers(&writer, 2, |q| {
            for i in 0..40 {
                if q.add(BlobKind::Data, &noise(i)).is_err() {
                    return "stopped";
                }
            }
            "finished"
        });
        let err = result.unwrap_err().to_string();
        assert!(err.contains("No space left"), "{err}");
        drop(writer);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("packs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.len() != 2)
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn a_storing_error_of_small_chunks_is_returned_not_lost() {
        // Chunks small enough to be sealed by the adding thread.
        for full in [Full::Whole, Full::Streamed] {
            let dir = tempfile::tempdir().unwrap();
            let repo = repo_of_small_packs(Arc::new(disk_full(dir.path(), full)));
            let writer = BlobWriter::new(&repo);
            let result = with_sealers(&writer, 2, |q| {
                for i in 0..400 {
                    let small = &chunk(i)[..SEAL_INLINE_MAX];
                    if q.add(BlobKind::Data, small).is_err() {
                        return "stopped";
                    }
                }
                "finished"
            });
            let err = result.unwrap_err().to_string();
            assert!(err.contains("No space left"), "{err}");
        }
    }

    #[test]
    fn a_storing_error_is_returned_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_of_small_packs(Arc::new(disk_full(dir.path(), Full::Whole)));
        let writer = BlobWriter::new(&repo);
        let result = with_sealers(&writer, 2, |q| {
            for i in 0..40 {
                if q.add(BlobKind::Data, &chunk(i)).is_err() {
                    return "stopped";
                }
            }
            "finished"
        });
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("write pack") && err.contains("No space left"),
            "{err}"
        );
    }

    /// Counts the pack sinks a store hands out.
    struct CountSinks(Arc<std::sync::atomic::AtomicUsize>);

    impl Hooks for CountSinks {
        fn pack_sink(
            &self,
            inner: &dyn Backend,
        ) -> Result<Option<Box<dyn crate::backend::FileSink>>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            inner.pack_sink()
        }
    }

    /// A tree pack building in memory moves to the store's sink once it
    /// would outgrow `SPILL_AT` (a large directory's tree is not held in
    /// a buffer of the pack's size); a smaller one is written whole.
    /// Both read back.
    #[test]
    fn a_tree_pack_past_the_spill_size_streams_to_the_sink() {
        let dir = tempfile::tempdir().unwrap();
        let sinks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let backend = Arc::new(Hooked {
            inner: LocalBackend::new(dir.path()),
            hooks: CountSinks(sinks.clone()),
        });
        let opts = crate::repo::InitOptions {
            pack_size: 32 << 20,
            kdf: crate::repo::KdfParams {
                memory_kib: 64,
                iterations: 1,
                lanes: 1,
            },
            ..crate::repo::InitOptions::default()
        };
        let repo = Repository::init(backend, b"pw", &opts).unwrap();
        let write = |from: u32, to: u32| {
            let writer = BlobWriter::new(&repo);
            let ids: Vec<_> = (from..to)
                .map(|i| writer.add(BlobKind::Tree, &noise(i)).unwrap().0)
                .collect();
            let stats = writer.finish().unwrap();
            assert_eq!((stats.blobs, stats.packs), (u64::from(to - from), 1));
            ids
        };
        let small = write(0, 3);
        assert_eq!(sinks.load(Ordering::SeqCst), 0, "900 kB of trees streamed");
        let large = write(3, 23);
        assert_eq!(
            sinks.load(Ordering::SeqCst),
            1,
            "6 MB of trees not streamed"
        );
        let repo = Repository::open(repo.backend_arc(), b"pw").unwrap();
        for (i, id) in small.iter().chain(&large).enumerate() {
            assert_eq!(repo.read_blob(id).unwrap(), noise(i as u32));
        }
    }
}
