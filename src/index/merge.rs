//! Merging index tables as they stream: compaction, and gc's rewrite.

use super::*;
use crate::repo::lock::LockGuard;

/// More index tables of one kind than this and [`compact`] merges the
/// smallest of them.
pub const MAX_TABLES: usize = 32;
/// Tables of a kind left by [`compact`]: it merges the smallest into one.
pub(super) const KEEP_TABLES: usize = 16;

/// What [`compact`] did.
#[derive(Debug, Default)]
pub struct CompactStats {
    /// Tables merged (and removed).
    pub merged: usize,
    /// The tables written.
    pub written: Vec<IndexId>,
    /// Tables left alone because their MAC or order did not check out
    /// (left for `verify` to report and `repair index` to fix).
    pub damaged: Vec<IndexId>,
}

/// Keeps the number of index tables a lookup searches bounded: once more
/// than [`MAX_TABLES`] tables may hold blobs of one kind (its own, and
/// tables of format version 1, which may hold both; in a repository whose
/// tables are of `version` 1, more than that in all), the smallest of
/// them are merged, as tables of `version`, so that `KEEP_TABLES` (16)
/// remain. Each backup adds a table of each kind, so without this a year
/// of nightly backups would mean hundreds of table searches per lookup.
/// Safe beside concurrent backups and readers: the merged tables are
/// written (durably) before any source is removed, a crash in between
/// leaves duplicate entries (harmless; the next compaction merges them),
/// and [`IndexSet::load`] lists again when a table vanishes. Only tables
/// whose MAC checks are merged, so damage is never re-sealed as valid.
///
/// `lock`, the caller's (a backup's shared lock), is confirmed right
/// before each merged table is written and checked before its sources
/// are removed: a backup suspended past its lock's staleness while it
/// merges may have had a gc remove tables and packs meanwhile, and a
/// table merged from what it loaded before would bring back entries
/// naming removed packs, which later backups would deduplicate against.
pub fn compact(
    backend: &dyn Backend,
    key: &MasterKey,
    version: u32,
    lock: Option<&LockGuard>,
) -> Result<CompactStats> {
    const STOPPED: &str = "index tables not merged";
    let mut stats = CompactStats::default();
    // In a repository of tables of version 1, every table is in one group.
    let kinds: &[Option<BlobKind>] = if version >= 2 {
        &[Some(BlobKind::Tree), Some(BlobKind::Data)]
    } else {
        &[None]
    };
    for kind in kinds {
        // Loaded again for the second kind: the first's merge changed
        // the tables (a version 1 source is in both kinds' groups).
        let set = IndexSet::load(backend)?;
        let group: Vec<&IndexTable> = set
            .tables
            .iter()
            .filter(|t| kind.is_none_or(|k| t.holds(k)))
            .collect();
        if group.len() <= MAX_TABLES {
            continue;
        }
        let mut tables: Vec<&IndexTable> = Vec::new();
        for t in group {
            match t.check(key) {
                Ok(()) => tables.push(t),
                Err(_) if stats.damaged.contains(&t.id()) => {}
                Err(_) => stats.damaged.push(t.id()),
            }
        }
        if tables.len() <= KEEP_TABLES {
            continue;
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
        if let Some(lock) = lock {
            lock.confirm(STOPPED)?;
        }
        let written = write_merged(backend, key, &sources, version, &|p| {
            pack_in_store(backend, p)
        })?;
        if written.is_empty() {
            continue;
        }
        crate::fault::point("after-compact-write");
        for t in merge {
            if let Some(lock) = lock {
                lock.check(STOPPED)?;
            }
            if !written.contains(&t.id()) {
                backend.remove(FileKind::Index, &t.id().to_hex())?;
            }
        }
        stats.merged += merge.len();
        stats.written.extend(written);
    }
    Ok(stats)
}

/// Whether pack `pack` is in the store, asked of the store (its size):
/// how [`compact`], which lists no packs, chooses between two entries of
/// a blob that name different packs. Asked only for those, which are
/// rare (two backups that stored the same new data, a blob stored again
/// after its pack was lost), so a compaction without them asks nothing.
pub fn pack_in_store(backend: &dyn Backend, pack: &PackId) -> Result<bool> {
    match backend.size(FileKind::Pack, &pack.to_hex()) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// One input of [`write_merged`]: a table, and which of its entries to
/// keep (by position and entry).
pub struct MergeSource<'a> {
    /// The table.
    pub table: &'a IndexTable,
    /// Whether entry `i` goes into the merged table.
    pub keep: &'a dyn Fn(usize, &Entry) -> bool,
}

/// Writes the kept entries of `sources` as tables of format `version`
/// (see [`VERSION`]) and returns their names; none (and nothing written)
/// when no entry is kept. In version 2 that is one table of the blobs of
/// tree packs and one of those of data packs, each only if it has any; in
/// version 1 one table. A table holds one entry per blob, so a blob kept
/// in several sources keeps one: that of the first source whose entry
/// names a pack `exists` says is there, or, if none does, the first
/// source's (see [`merge_kept`]); it goes in the table of that entry's
/// kind. `exists` is asked only of blobs whose kept entries name
/// different packs, once per pack, so both passes choose alike. Each pack
/// list names only packs a kept entry names.
///
/// Tables are sorted, so this is a merge, done twice (once to number the
/// packs and count the entries each header states, once to write): memory
/// holds one cursor per source and one number per pack, never the
/// entries, and where the store offers a sink ([`Backend::index_sink`])
/// each table streams out as it is written. Every source's MAC is checked
/// first, so damage is never sealed anew as valid, and the merge checks
/// that the entries it takes ascend.
pub fn write_merged(
    backend: &dyn Backend,
    key: &MasterKey,
    sources: &[MergeSource],
    version: u32,
    exists: &dyn Fn(&PackId) -> Result<bool>,
) -> Result<Vec<IndexId>> {
    for s in sources {
        s.table.check_mac(key)?;
    }
    let known: std::cell::RefCell<crate::id::IdMap<PackId, bool>> = Default::default();
    let exists = |pack: &PackId| -> Result<bool> {
        if let Some(&there) = known.borrow().get(pack) {
            return Ok(there);
        }
        let there = exists(pack)?;
        known.borrow_mut().insert(*pack, there);
        Ok(there)
    };
    // A copy of a blob stored in several packs is read before the others'
    // entries are dropped, once (both passes choose alike): a damaged one
    // kept would leave the intact copy's pack unindexed, for gc to delete
    // (until December 2026). A read the store could not do stops the
    // merge; a copy that fails to open is not sound.
    let checked: std::cell::RefCell<std::collections::HashMap<(BlobId, PackId), bool>> =
        Default::default();
    let sound = |pack: &PackId, e: &Entry| -> Result<bool> {
        if let Some(&ok) = checked.borrow().get(&(e.id, *pack)) {
            return Ok(ok);
        }
        let what = format!("blob {} in pack {}", e.id.short(), pack.short());
        let read = backend
            .read_range(
                FileKind::Pack,
                &pack.to_hex(),
                u64::from(e.offset),
                e.length as usize,
            )
            .and_then(|sealed| crate::pack::open_blob(key, &e.id, &sealed, e.raw_length, &what));
        let ok = match read {
            Ok(_) => true,
            Err(Error::Corrupt { .. }) => false,
            // Asked of packs found there only: a read that finds none is a
            // store whose listing and reads disagree, not a copy gone
            // (taken for one, the intact copy's pack could go unindexed).
            Err(e) if e.is_not_found() => {
                return Err(Error::Invalid(format!(
                    "pack {} is there by the store's listing, but a read of it finds no such \
                     pack ({e}); the index tables are left as they were",
                    pack.short()
                )))
            }
            Err(e) => return Err(e),
        };
        checked.borrow_mut().insert((e.id, *pack), ok);
        Ok(ok)
    };
    // The table an entry of a pack of `kind` goes to: by kind in version
    // 2 (data 0, tree 1), the one table in version 1.
    let table_of = |kind: BlobKind| {
        if version >= 2 {
            kind.to_byte() as usize
        } else {
            0
        }
    };
    // By table: the packs named, and how many entries are kept.
    let mut packs: [Vec<(PackId, BlobKind)>; 2] = Default::default();
    let mut count = [0u64; 2];
    let mut numbers: crate::id::IdMap<(PackId, u8), u32> = crate::id::IdMap::default();
    // Each source's pack numbers in the merged tables: the table in the
    // top bit, the number below it; u32::MAX until met.
    let mut remap: Vec<Vec<u32>> = sources
        .iter()
        .map(|s| vec![u32::MAX; s.table.pack_count()])
        .collect();
    const TABLE_BIT: u32 = 1 << 31;
    let table_bit = |mapped: u32| (mapped >> 31) as usize;
    merge_kept(sources, &exists, &sound, |src, e| {
        let slot = &mut remap[src][e.pack as usize];
        if *slot == u32::MAX {
            let (pack, kind) = sources[src].table.pack(e.pack as usize)?;
            let t = table_of(kind);
            let list = &mut packs[t];
            let next = list.len() as u32;
            let n = *numbers.entry((pack, kind.to_byte())).or_insert(next);
            if n == next {
                list.push((pack, kind));
            }
            *slot = n | ((t as u32) << 31);
        }
        count[table_bit(*slot)] += 1;
        Ok(())
    })?;
    let mut outs: [Option<TableOut>; 2] = [None, None];
    // Trees first, then data, as `IndexBuilder::finish` writes them.
    for t in [1, 0] {
        if count[t] > 0 {
            let mut out = TableOut::new(backend, key)?;
            out.put(&head_record(version, packs[t].len(), count[t]))?;
            for (id, kind) in &packs[t] {
                out.put(&pack_record(id, *kind))?;
            }
            outs[t] = Some(out);
        }
    }
    let mut written = [0u64; 2];
    merge_kept(sources, &exists, &sound, |src, e| {
        let mapped = remap[src][e.pack as usize];
        let t = table_bit(mapped);
        written[t] += 1;
        let out = outs[t].as_mut().ok_or_else(|| {
            Error::Invalid("index tables changed while being merged (a new kind of pack)".into())
        })?;
        out.put(&entry_record(
            &e.id,
            [mapped & !TABLE_BIT, e.offset, e.length, e.raw_length],
        ))
    })?;
    // The sources are immutable and mapped: both passes see the same.
    if written != count {
        return Err(Error::Invalid(format!(
            "index tables changed while being merged ({count:?} entries, then {written:?})"
        )));
    }
    let mut ids = Vec::new();
    for t in [1, 0] {
        if let Some(out) = outs[t].take() {
            ids.push(out.finish()?);
        }
    }
    Ok(ids)
}

/// Calls `f(source, entry)` for the kept entries of `sources` in
/// ascending id order, each id once. An id several sources keep in
/// different packs (a blob stored twice) is taken from the first whose
/// entry names a pack `exists` says is there and whose copy `sound`
/// finds intact; else from the first whose pack exists; else from the
/// first source (neither is asked where all name one pack): taking the
/// first source's blindly could keep an entry naming a lost pack, or a
/// damaged copy, and drop the only one naming a pack that holds the blob
/// intact. A source whose ids do not ascend strictly is an error.
pub(super) fn merge_kept(
    sources: &[MergeSource],
    exists: &dyn Fn(&PackId) -> Result<bool>,
    sound: &dyn Fn(&PackId, &Entry) -> Result<bool>,
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
    // The next kept entry of `src` after its entry `i`, `e`, checked to
    // come after it.
    let after = |src: usize, i: usize, e: &Entry| -> Result<Option<(usize, Entry)>> {
        let next = next_kept(src, i + 1)?;
        if let Some((ni, n)) = &next {
            if (id_prefix(&n.id.0), &n.id) <= (id_prefix(&e.id.0), &e.id) {
                return Err(Error::corrupt(
                    format!("index {}", sources[src].table.id().short()),
                    format!("entries out of order at {ni}"),
                ));
            }
        }
        Ok(next)
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
    // The sources holding the id being merged, first source first.
    let mut same: Vec<(usize, usize, Entry)> = Vec::new();
    while let Some(Queued { id, src, .. }) = heap.pop() {
        let (mut i, mut e) = heads[src].take().expect("a queued source has a head");
        if heap.peek().is_some_and(|top| top.id == id) {
            // Every source holding `id` has it as its head now (each
            // head is at or after the smallest).
            same.clear();
            same.push((src, i, e));
            while heap.peek().is_some_and(|top| top.id == id) {
                let q = heap.pop().expect("peeked");
                let (qi, qe) = heads[q.src].take().expect("a queued source has a head");
                same.push((q.src, qi, qe));
            }
            let (s, _, e) = same[choose(sources, &same, exists, sound)?];
            f(s, &e)?;
            for &(s, si, se) in &same {
                if let Some((ni, next)) = after(s, si, &se)? {
                    heap.push(Queued::new(next.id, s));
                    heads[s] = Some((ni, next));
                }
            }
            continue;
        }
        // A run of this source's entries, as long as each comes before
        // every other source's head: one comparison with the heap's top
        // per entry instead of a push and a pop. An id equal to another
        // head's ends the run, so that its sources are taken together.
        loop {
            f(src, &e)?;
            let Some((ni, next)) = after(src, i, &e)? else {
                break;
            };
            let queued = Queued::new(next.id, src);
            if heap
                .peek()
                .is_some_and(|top| (top.prefix, &top.id) <= (queued.prefix, &queued.id))
            {
                heap.push(queued);
                heads[src] = Some((ni, next));
                break;
            }
            (i, e) = (ni, next);
        }
    }
    Ok(())
}

/// Which of `same` (one blob's entries, first source first) a merge
/// keeps: see [`merge_kept`].
fn choose(
    sources: &[MergeSource],
    same: &[(usize, usize, Entry)],
    exists: &dyn Fn(&PackId) -> Result<bool>,
    sound: &dyn Fn(&PackId, &Entry) -> Result<bool>,
) -> Result<usize> {
    let packs = same
        .iter()
        .map(|(s, _, e)| sources[*s].table.pack(e.pack as usize).map(|(p, _)| p))
        .collect::<Result<Vec<PackId>>>()?;
    if packs.iter().all(|p| *p == packs[0]) {
        return Ok(0);
    }
    let mut first_there = None;
    for (n, pack) in packs.iter().enumerate() {
        if exists(pack)? {
            if sound(pack, &same[n].2)? {
                return Ok(n);
            }
            first_there.get_or_insert(n);
        }
    }
    Ok(first_there.unwrap_or(0))
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
