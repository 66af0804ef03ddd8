//! Merging index tables as they stream: compaction, and gc's rewrite.

use super::*;

/// More index tables than this and [`compact`] merges the smallest.
pub const MAX_TABLES: usize = 32;
/// Tables left by [`compact`]: it merges the smallest into one.
pub(super) const KEEP_TABLES: usize = 16;

/// What [`compact`] did.
#[derive(Debug, Default)]
pub struct CompactStats {
    /// Tables merged (and removed).
    pub merged: usize,
    /// The table written, if any.
    pub written: Option<IndexId>,
    /// Tables left alone because their MAC or order did not check out
    /// (left for `verify` to report and `repair index` to fix).
    pub damaged: Vec<IndexId>,
}

/// Keeps the number of index tables bounded: once there are more than
/// [`MAX_TABLES`], the smallest are merged into one so that
/// `KEEP_TABLES` (16) remain. Each backup adds a table, so without this a
/// year of nightly backups would mean hundreds of table searches per
/// lookup. Safe beside concurrent backups and readers: the merged table is
/// written (durably) before any source is removed, a crash in between
/// leaves duplicate entries (harmless; the next compaction merges them),
/// and [`IndexSet::load`] lists again when a table vanishes. Only tables
/// whose MAC checks are merged, so damage is never re-sealed as valid.
pub fn compact(backend: &dyn Backend, key: &MasterKey) -> Result<CompactStats> {
    let set = IndexSet::load(backend)?;
    let mut stats = CompactStats::default();
    if set.tables.len() <= MAX_TABLES {
        return Ok(stats);
    }
    let mut tables: Vec<&IndexTable> = Vec::new();
    for t in &set.tables {
        match t.check(key) {
            Ok(()) => tables.push(t),
            Err(_) => stats.damaged.push(t.id()),
        }
    }
    if tables.len() <= KEEP_TABLES {
        return Ok(stats);
    }
    tables.sort_by_key(|t| t.len());
    let merge = &tables[..tables.len() - KEEP_TABLES + 1];
    let keep_all = |_: usize, _: &Entry| true;
    let sources: Vec<MergeSource> = merge
        .iter()
        .map(|&table| MergeSource {
            table,
            keep: &keep_all,
        })
        .collect();
    let Some(id) = write_merged(backend, key, &sources)? else {
        return Ok(stats);
    };
    crate::fault::point("after-compact-write");
    for t in merge {
        if t.id() != id {
            backend.remove(FileKind::Index, &t.id().to_hex())?;
        }
    }
    stats.merged = merge.len();
    stats.written = Some(id);
    Ok(stats)
}

/// One input of [`write_merged`]: a table, and which of its entries to
/// keep (by position and entry).
pub struct MergeSource<'a> {
    /// The table.
    pub table: &'a IndexTable,
    /// Whether entry `i` goes into the merged table.
    pub keep: &'a dyn Fn(usize, &Entry) -> bool,
}

/// Writes one table holding the kept entries of `sources`, and returns its
/// name; `None` (and nothing written) when no entry is kept. A blob kept
/// in several sources keeps the entry of the first; the pack list names
/// only packs a kept entry names.
///
/// Tables are sorted, so this is a merge, done twice (once to number the
/// packs and count the entries the header states, once to write): memory
/// holds one cursor per source and one number per pack, never the
/// entries, and where the store offers a sink ([`Backend::index_sink`])
/// the table streams out as it is written. Every source's MAC is checked
/// first, so damage is never sealed anew as valid, and the merge checks
/// that the entries it takes ascend.
pub fn write_merged(
    backend: &dyn Backend,
    key: &MasterKey,
    sources: &[MergeSource],
) -> Result<Option<IndexId>> {
    for s in sources {
        s.table.check_mac(key)?;
    }
    let mut packs: Vec<(PackId, BlobKind)> = Vec::new();
    let mut numbers: crate::id::IdMap<PackId, u32> = crate::id::IdMap::default();
    let mut remap: Vec<Vec<u32>> = sources
        .iter()
        .map(|s| vec![u32::MAX; s.table.pack_count()])
        .collect();
    let mut count = 0u64;
    merge_kept(sources, |src, e| {
        let slot = &mut remap[src][e.pack as usize];
        if *slot == u32::MAX {
            let (pack, kind) = sources[src].table.pack(e.pack as usize)?;
            let next = packs.len() as u32;
            *slot = *numbers.entry(pack).or_insert(next);
            if *slot == next {
                packs.push((pack, kind));
            }
        }
        count += 1;
        Ok(())
    })?;
    if count == 0 {
        return Ok(None);
    }
    let mut out = TableOut::new(backend, key)?;
    out.put(&head_record(packs.len(), count))?;
    for (id, kind) in &packs {
        out.put(&pack_record(id, *kind))?;
    }
    let mut written = 0u64;
    merge_kept(sources, |src, e| {
        let pack = remap[src][e.pack as usize];
        written += 1;
        out.put(&entry_record(
            &e.id,
            [pack, e.offset, e.length, e.raw_length],
        ))
    })?;
    // The sources are immutable and mapped: both passes see the same.
    if written != count {
        return Err(Error::Invalid(format!(
            "index tables changed while being merged ({count} entries, then {written})"
        )));
    }
    out.finish().map(Some)
}

/// Calls `f(source, entry)` for the kept entries of `sources` in
/// ascending id order, each id once (from the first source keeping it).
/// A source whose ids do not ascend strictly is an error.
pub(super) fn merge_kept(
    sources: &[MergeSource],
    mut f: impl FnMut(usize, &Entry) -> Result<()>,
) -> Result<()> {
    // The next kept entry of source `src` at or after `i`.
    let next_kept = |src: usize, mut i: usize| -> Result<Option<(usize, Entry)>> {
        let s = &sources[src];
        while i < s.table.len() {
            let e = s.table.entry_at(i)?;
            if (s.keep)(i, &e) {
                return Ok(Some((i, e)));
            }
            i += 1;
        }
        Ok(None)
    };
    let mut heads: Vec<Option<(usize, Entry)>> = Vec::with_capacity(sources.len());
    let mut heap = std::collections::BinaryHeap::with_capacity(sources.len());
    for src in 0..sources.len() {
        let head = next_kept(src, 0)?;
        if let Some((_, e)) = &head {
            heap.push(Queued::new(e.id, src));
        }
        heads.push(head);
    }
    // The id last handed to `f` (or skipped as equal to it), so that an id
    // several sources hold is taken from the first only.
    let mut last: Option<BlobId> = None;
    while let Some(Queued { id, src, .. }) = heap.pop() {
        let (mut i, mut e) = heads[src].take().expect("a queued source has a head");
        let mut take = last != Some(id);
        // A run of this source's entries, as long as each comes before
        // every other source's head: one comparison with the heap's top
        // per entry instead of a push and a pop.
        loop {
            if take {
                f(src, &e)?;
            }
            let Some((ni, next)) = next_kept(src, i + 1)? else {
                break;
            };
            let queued = Queued::new(next.id, src);
            if (queued.prefix, &queued.id) <= (id_prefix(&e.id.0), &e.id) {
                return Err(Error::corrupt(
                    format!("index {}", sources[src].table.id().short()),
                    format!("entries out of order at {}", ni),
                ));
            }
            if heap.peek().is_some_and(|top| *top > queued) {
                heap.push(queued);
                heads[src] = Some((ni, next));
                break;
            }
            (i, e, take) = (ni, next, true);
        }
        last = Some(e.id);
    }
    Ok(())
}

/// A source's next entry in [`merge_kept`]'s heap, which pops the
/// smallest id first and, for an id several sources hold, the first
/// source. The id's first eight bytes are compared as a number before the
/// rest: that is byte order, and most comparisons end there instead of in
/// a 32-byte `memcmp` (which was a twentieth of a gc's CPU).
#[derive(PartialEq, Eq)]
pub(super) struct Queued {
    prefix: u64,
    id: BlobId,
    src: usize,
}

impl Queued {
    pub(super) fn new(id: BlobId, src: usize) -> Queued {
        Queued {
            prefix: id_prefix(&id.0),
            id,
            src,
        }
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Queued) -> Ordering {
        // Reversed: `BinaryHeap` pops its greatest element.
        (other.prefix, &other.id, other.src).cmp(&(self.prefix, &self.id, self.src))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Queued) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An index table being written: streamed through the store's sink when
/// it has one; else gathered, and past [`SPOOL_FROM`] bytes spooled to an
/// unnamed temporary file, then written whole (from the file's map). MAC
/// and name are hashed as the bytes go.
pub(super) struct TableOut<'a> {
    backend: &'a dyn Backend,
    sink: Option<Box<dyn FileSink>>,
    spool: Option<std::fs::File>,
    buf: Vec<u8>,
    mac: blake3::Hasher,
    name: blake3::Hasher,
}

/// Bytes a streamed [`TableOut`] gathers before hashing and handing them on.
pub(super) const TABLE_OUT_CHUNK: usize = 64 << 10;

/// Size from which a table for a store without an index sink (S3) goes to
/// a temporary file instead of memory: about 200,000 entries.
pub(crate) const SPOOL_FROM: usize = 8 << 20;

impl<'a> TableOut<'a> {
    pub(super) fn new(backend: &'a dyn Backend, key: &MasterKey) -> Result<TableOut<'a>> {
        Ok(TableOut {
            backend,
            sink: backend.index_sink()?,
            spool: None,
            buf: Vec::with_capacity(TABLE_OUT_CHUNK + ENTRY_REC),
            mac: key.mac_hasher(),
            name: blake3::Hasher::new(),
        })
    }

    pub(super) fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.sink.is_none() && self.spool.is_none() && self.buf.len() >= SPOOL_FROM {
            self.spool = Some(
                crate::mmap::spool_file()
                    .map_err(|e| Error::path("create index spool in", &std::env::temp_dir(), e))?,
            );
        }
        if (self.sink.is_some() || self.spool.is_some()) && self.buf.len() >= TABLE_OUT_CHUNK {
            self.pass_on()?;
        }
        Ok(())
    }

    /// Hashes what is gathered and hands it to the sink or the spool.
    pub(super) fn pass_on(&mut self) -> Result<()> {
        self.mac.update(&self.buf);
        self.name.update(&self.buf);
        if let Some(sink) = self.sink.as_mut() {
            sink.append(&self.buf)?;
        } else if let Some(spool) = self.spool.as_mut() {
            std::io::Write::write_all(spool, &self.buf)
                .map_err(|e| Error::path("write index spool in", &std::env::temp_dir(), e))?;
        }
        self.buf.clear();
        Ok(())
    }

    /// Seals the table with its MAC and stores it under its name.
    pub(super) fn finish(mut self) -> Result<IndexId> {
        self.mac.update(&self.buf);
        let mac = *self.mac.finalize().as_bytes();
        self.buf.extend_from_slice(&mac);
        if self.sink.is_none() && self.spool.is_none() {
            let id = IndexId(file_hash(&self.buf));
            self.backend
                .write(FileKind::Index, &id.to_hex(), &self.buf)?;
            return Ok(id);
        }
        self.name.update(&self.buf);
        let id = IndexId(*self.name.finalize().as_bytes());
        if let Some(mut sink) = self.sink.take() {
            sink.append(&self.buf)?;
            sink.commit(&id.to_hex())?;
            return Ok(id);
        }
        let mut spool = self
            .spool
            .take()
            .expect("a table with neither sink nor spool returned above");
        let tmp = std::env::temp_dir();
        std::io::Write::write_all(&mut spool, &self.buf)
            .map_err(|e| Error::path("write index spool in", &tmp, e))?;
        let map = crate::mmap::Map::file(&spool, &tmp)?;
        self.backend.write(FileKind::Index, &id.to_hex(), &map)?;
        Ok(id)
    }
}
