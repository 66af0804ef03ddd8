//! Index tables: blob id → pack, offset, length, searched in place.
//!
//! An index table is an immutable file of fixed-width records sorted by blob
//! id, so it can be memory-mapped and searched in place without loading it
//! into a heap structure:
//!
//! ```text
//! "CAIRNIDX" | u32 version | u32 pack count P | u64 entry count E
//! P × (pack id (32) | u8 blob kind | 3 zero bytes)          36 bytes each
//! E × (blob id (32) | u32 pack number | u32 offset | u32 length | u32 raw length)
//!                                                         48 bytes each, ascending id
//! MAC (32) = keyed BLAKE3 (index MAC key) of all preceding bytes
//! ```
//! Lookups trust only what they can check cheaply (sizes, pack numbers);
//! a wrong entry can at worst send a read to the wrong bytes, which reading
//! detects, never make wrong bytes pass: every blob is authenticated and
//! re-hashed when read (and a restore then looks the blob up in its pack's
//! own header). `verify` checks the MAC and ordering of every table.

use std::cmp::Ordering;

use serde::Serialize;

use crate::backend::{Backend, Data, FileKind, FileSink};
use crate::codec;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name, BlobId, IndexId, PackId};
use crate::pack::{BlobKind, PackEntry};

const MAGIC: &[u8; 8] = b"CAIRNIDX";
/// Format version of index tables.
pub const VERSION: u32 = 1;
const HEAD: usize = 24;
const PACK_REC: usize = 36;
const ENTRY_REC: usize = 48;
const MAC_LEN: usize = 32;

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The pack holding it.
    pub pack: PackId,
    /// Kind of the pack (and so of the blob).
    pub kind: BlobKind,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// One entry of an index table as stored (see [`IndexTable::entry_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The blob.
    pub id: BlobId,
    /// Its pack, as a number in the table's pack list.
    pub pack: u32,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// One mapped index table.
pub struct IndexTable {
    id: IndexId,
    data: Data,
    packs: usize,
    entries: usize,
    /// Built by [`IndexTable::build_directory`] for commands that look up
    /// most of a table's ids.
    dir: std::sync::OnceLock<Directory>,
}

/// Where the entries whose ids start with each `bits`-bit prefix begin:
/// `starts[p]..starts[p + 1]` holds the ids with prefix `p`. A lookup
/// then reads one word of this (a few KiB per thousand entries, which
/// stays in the core's cache) and bisects a range of an entry or two,
/// instead of the half-dozen scattered entries the interpolating search
/// reads in the mapped table.
struct Directory {
    shift: u32,
    starts: Vec<u32>,
}

/// The directory's prefix bits: entries per prefix between one and two,
/// and at most 4 MiB of directory (a table of 10 million entries gets
/// ten entries, 480 contiguous bytes, per prefix).
fn directory_bits(entries: usize) -> u32 {
    entries.max(1).ilog2().min(20)
}

impl IndexTable {
    /// Wraps table bytes after checking header and size (not the MAC).
    pub fn parse(id: IndexId, data: Data) -> Result<IndexTable> {
        let what = format!("index {}", id.short());
        codec::check_header(&data, MAGIC, VERSION, &what)?;
        if data.len() < HEAD + MAC_LEN {
            return Err(Error::corrupt(&what, "truncated"));
        }
        let packs = u32::from_le_bytes(data[12..16].try_into().expect("4")) as u64;
        let entries = u64::from_le_bytes(data[16..24].try_into().expect("8"));
        let want = packs
            .checked_mul(PACK_REC as u64)
            .and_then(|p| {
                entries
                    .checked_mul(ENTRY_REC as u64)
                    .and_then(|e| e.checked_add(p))
            })
            .and_then(|n| n.checked_add((HEAD + MAC_LEN) as u64));
        if want != Some(data.len() as u64) {
            return Err(Error::corrupt(
                &what,
                format!(
                    "{} bytes do not hold {packs} packs and {entries} entries",
                    data.len()
                ),
            ));
        }
        // Lookups probe a few scattered places: a fault should map one
        // page, not read ahead tens of KiB that the search will never touch.
        data.advise_random();
        Ok(IndexTable {
            id,
            data,
            packs: packs as usize,
            entries: entries as usize,
            dir: std::sync::OnceLock::new(),
        })
    }

    /// Bytes of memory this table's directory holds (0 without one).
    pub fn directory_bytes(&self) -> usize {
        self.dir
            .get()
            .map_or(0, |d| d.starts.capacity() * std::mem::size_of::<u32>())
    }

    /// Makes [`IndexTable::find`] faster for a command that looks up
    /// much of the table (see [`IndexSet::build_directories`]): one pass
    /// over the ids' first words builds a directory of 4 bytes per one to
    /// two entries (at most 4 MiB); a table of fewer than 256 entries
    /// gets none. Entries out of order (a damaged table) can make a
    /// lookup miss an entry that is there, never find a wrong one, as
    /// without the directory.
    pub fn build_directory(&self) {
        if self.entries < 256 || self.entries > u32::MAX as usize {
            return;
        }
        self.dir.get_or_init(|| {
            // Every page is read: map them at once, not a fault each.
            self.data.populate();
            let bits = directory_bits(self.entries);
            let shift = 64 - bits;
            let mut starts = Vec::with_capacity((1 << bits) + 1);
            for i in 0..self.entries {
                let prefix = (self.key_at(i) >> shift) as usize;
                while starts.len() <= prefix {
                    starts.push(i as u32);
                }
            }
            starts.resize((1 << bits) + 1, self.entries as u32);
            Directory { shift, starts }
        });
    }

    /// The first 8 bytes of entry `i`'s id as a number.
    fn key_at(&self, i: usize) -> u64 {
        id_prefix(self.entry_bytes(i))
    }

    /// The table's name.
    pub fn id(&self) -> IndexId {
        self.id
    }

    /// Number of blob entries.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Number of packs named.
    pub fn pack_count(&self) -> usize {
        self.packs
    }

    fn entry_bytes(&self, i: usize) -> &[u8] {
        let start = HEAD + self.packs * PACK_REC + i * ENTRY_REC;
        &self.data[start..start + ENTRY_REC]
    }

    /// The id of entry `i`.
    pub fn id_at(&self, i: usize) -> BlobId {
        BlobId(self.entry_bytes(i)[..32].try_into().expect("32"))
    }

    /// Pack `n` of the table's pack list.
    pub fn pack(&self, n: usize) -> Result<(PackId, BlobKind)> {
        if n >= self.packs {
            return Err(Error::corrupt(
                format!("index {}", self.id.short()),
                format!("entry names pack number {n} of {}", self.packs),
            ));
        }
        let rec = &self.data[HEAD + n * PACK_REC..HEAD + (n + 1) * PACK_REC];
        let kind = BlobKind::from_byte(rec[32]).ok_or_else(|| {
            Error::corrupt(format!("index {}", self.id.short()), "unknown blob kind")
        })?;
        Ok((PackId(rec[..32].try_into().expect("32")), kind))
    }

    /// Entry `i` as stored; an error if it names a pack number past the
    /// table's pack list.
    pub fn entry_at(&self, i: usize) -> Result<Entry> {
        let rec = self.entry_bytes(i);
        let word = |o: usize| u32::from_le_bytes(rec[o..o + 4].try_into().expect("4"));
        let pack = word(32);
        if pack as usize >= self.packs {
            return Err(Error::corrupt(
                format!("index {}", self.id.short()),
                format!("entry names pack number {pack} of {}", self.packs),
            ));
        }
        Ok(Entry {
            id: BlobId(rec[..32].try_into().expect("32")),
            pack,
            offset: word(36),
            length: word(40),
            raw_length: word(44),
        })
    }

    /// The location stored in entry `i`.
    pub fn location_at(&self, i: usize) -> Result<(BlobId, Location)> {
        let e = self.entry_at(i)?;
        let (pack, kind) = self.pack(e.pack as usize)?;
        Ok((
            e.id,
            Location {
                pack,
                kind,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            },
        ))
    }

    /// Searches for `id`. Blob ids are keyed hashes, so they spread evenly
    /// over the table and an id's first 8 bytes predict its position
    /// within about √m/2 of m entries. So the search narrows in rounds: a
    /// probe where the id's key falls between the keys bounding the range,
    /// then a galloping search from there (steps of √m/2, doubling) that
    /// brackets it. A round takes m entries to about √m, so two rounds
    /// leave a few entries, searched by bisection, and the probes of the
    /// second round fall within a page or two of the id. A table whose ids do
    /// not spread evenly (never written by cairn) costs at most about three
    /// binary searches. With a directory (see
    /// [`IndexTable::build_directory`]), the id's prefix gives the range
    /// at once, and bisecting it reads an entry or two.
    pub fn find(&self, id: &BlobId) -> Option<usize> {
        // Ids compare as (first 8 bytes big-endian, then the rest), which
        // is byte order: most comparisons end at the first word.
        let key = id_prefix(&id.0);
        let key_at = |i: usize| self.key_at(i);
        let cmp = |i: usize| {
            let rec = self.entry_bytes(i);
            id_prefix(rec)
                .cmp(&key)
                .then_with(|| rec[8..32].cmp(&id.0[8..]))
        };
        if let Some(dir) = self.dir.get() {
            let p = (key >> dir.shift) as usize;
            return Self::bisect(dir.starts[p] as usize, dir.starts[p + 1] as usize, cmp);
        }
        // Entries before `lo` are below the id, entries from `hi` above
        // it; `lo_key` and `hi_key` bound the keys of the range.
        let (mut lo, mut hi) = (0usize, self.entries);
        let (mut lo_key, mut hi_key) = (0u64, u64::MAX);
        for _round in 0..2 {
            let span = hi - lo;
            if span <= 16 {
                break;
            }
            let share = key.saturating_sub(lo_key) as f64 / (hi_key - lo_key) as f64;
            let guess = (lo + (share * span as f64) as usize).clamp(lo, hi - 1);
            let mut step = ((span as f64).sqrt() / 2.0).max(1.0) as usize;
            match cmp(guess) {
                Ordering::Equal => return Some(guess),
                Ordering::Less => {
                    (lo, lo_key) = (guess + 1, key_at(guess));
                    while let Some(p) = guess.checked_add(step).filter(|&p| p < hi) {
                        match cmp(p) {
                            Ordering::Less => (lo, lo_key) = (p + 1, key_at(p)),
                            Ordering::Greater => {
                                (hi, hi_key) = (p, key_at(p));
                                break;
                            }
                            Ordering::Equal => return Some(p),
                        }
                        step *= 2;
                    }
                }
                Ordering::Greater => {
                    (hi, hi_key) = (guess, key_at(guess));
                    while let Some(p) = guess.checked_sub(step).filter(|&p| p >= lo) {
                        match cmp(p) {
                            Ordering::Greater => (hi, hi_key) = (p, key_at(p)),
                            Ordering::Less => {
                                (lo, lo_key) = (p + 1, key_at(p));
                                break;
                            }
                            Ordering::Equal => return Some(p),
                        }
                        step *= 2;
                    }
                }
            }
            if hi_key <= lo_key {
                break; // keys equal in their first word: bisect
            }
        }
        Self::bisect(lo, hi, cmp)
    }

    /// Binary search of `lo..hi` by `cmp` (an entry against the id).
    fn bisect(mut lo: usize, mut hi: usize, cmp: impl Fn(usize) -> Ordering) -> Option<usize> {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match cmp(mid) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Checks the MAC only.
    pub fn check_mac(&self, key: &MasterKey) -> Result<()> {
        let body = &self.data[..self.data.len() - MAC_LEN];
        self.data.advise_sequential();
        let mac = key.mac(body);
        self.data.advise_random();
        if mac[..] != self.data[self.data.len() - MAC_LEN..] {
            return Err(Error::corrupt(
                format!("index {}", self.id.short()),
                "MAC mismatch (damaged or not from this repository)",
            ));
        }
        Ok(())
    }

    /// Checks the MAC and that ids ascend strictly; returns a problem, if any.
    pub fn check(&self, key: &MasterKey) -> Result<()> {
        let what = format!("index {}", self.id.short());
        self.check_mac(key)?;
        for i in 1..self.entries {
            if self.entry_bytes(i - 1)[..32] >= self.entry_bytes(i)[..32] {
                return Err(Error::corrupt(
                    &what,
                    format!("entries out of order at {i}"),
                ));
            }
        }
        for n in 0..self.packs {
            self.pack(n)?;
        }
        Ok(())
    }
}

/// All index tables of a repository, searched together.
#[derive(Default)]
pub struct IndexSet {
    tables: Vec<IndexTable>,
}

/// Tables fetched at once from a remote store (the store's own limit on
/// requests in flight still applies).
const FETCH_AT_ONCE: usize = 8;

/// The bytes of each listed index table `(id, name, size)`, in order.
/// From a remote store (one that prefers ranges) several at a time, each
/// with the size its listing gave, so a repository opened on a fresh
/// cache, or one that many hosts added tables to, costs about one round
/// trip per [`FETCH_AT_ONCE`] tables (or per `--connections`, if fewer)
/// instead of two per table; locally, where a read is a memory map, one
/// after another.
fn fetch_tables(backend: &dyn Backend, listed: &[(IndexId, String, u64)]) -> Vec<Result<Data>> {
    let read = |(_, name, size): &(IndexId, String, u64)| {
        backend.read_listed(FileKind::Index, name, *size)
    };
    if !backend.prefers_ranges() || listed.len() < 2 {
        return listed.iter().map(read).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Result<Data>>>> =
        listed.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..FETCH_AT_ONCE.min(listed.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(entry) = listed.get(i) else { break };
                let got = read(entry);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(got);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner().ok().flatten().unwrap_or_else(|| {
                Err(Error::Invalid(
                    "a thread fetching index tables panicked".into(),
                ))
            })
        })
        .collect()
}

impl IndexSet {
    /// Maps every table in the repository.
    ///
    /// A table listed but gone when opened was merged by a concurrent
    /// [`compact`], which writes the merged table before removing its
    /// sources: listing again then finds it, so no entry is ever missed.
    pub fn load(backend: &dyn Backend) -> Result<IndexSet> {
        Self::load_with(backend, false).map(|(set, _)| set)
    }

    /// Like [`IndexSet::load`], but a table whose header or size is
    /// damaged is left out instead of failing the load, and returned with
    /// why: for `verify`, which reports it and checks the rest, and for
    /// `repair index`.
    pub fn load_lenient(backend: &dyn Backend) -> Result<(IndexSet, Vec<(IndexId, Error)>)> {
        Self::load_with(backend, true)
    }

    fn load_with(
        backend: &dyn Backend,
        lenient: bool,
    ) -> Result<(IndexSet, Vec<(IndexId, Error)>)> {
        let mut attempts = 0;
        'list: loop {
            attempts += 1;
            let mut tables = Vec::new();
            let mut damaged = Vec::new();
            let mut listed = Vec::new();
            for (name, size) in backend.list_sizes(FileKind::Index)? {
                if is_hex_name(&name) {
                    listed.push((IndexId::from_hex(&name)?, name, size));
                }
            }
            let fetched = fetch_tables(backend, &listed);
            for ((id, _, _), data) in listed.into_iter().zip(fetched) {
                let data = match data {
                    Ok(d) => d,
                    // Removed since the listing (compacted away): list again.
                    Err(e) if e.is_not_found() && attempts < 10 => continue 'list,
                    Err(e) => return Err(e),
                };
                match IndexTable::parse(id, data) {
                    Ok(t) => tables.push(t),
                    Err(e @ Error::Corrupt { .. }) if lenient => damaged.push((id, e)),
                    Err(e) => return Err(e),
                }
            }
            // Largest first: most lookups hit the big consolidated tables.
            tables.sort_by_key(|t| std::cmp::Reverse(t.len()));
            return Ok((IndexSet { tables }, damaged));
        }
    }

    /// The tables.
    pub fn tables(&self) -> &[IndexTable] {
        &self.tables
    }

    /// Total entries over all tables (duplicates counted).
    pub fn len(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory the tables' directories hold.
    pub fn directory_bytes(&self) -> usize {
        self.tables.iter().map(IndexTable::directory_bytes).sum()
    }

    /// Builds the directory (see [`IndexTable::build_directory`]) of
    /// every table that `lookups` lookups to come make it worth: the build
    /// reads the whole table, and repays it after about one lookup per
    /// 16 entries (on the benchmark's table of 21,500 entries it took
    /// 0.3 ms, and each lookup through it was about 260 ns faster). gc
    /// and verify look up every blob in use; restore only the chunks of
    /// what it writes, which for one file of a large repository is a few.
    pub fn build_directories(&self, lookups: usize) {
        for table in &self.tables {
            if table.len() / 16 <= lookups {
                table.build_directory();
            }
        }
    }

    /// Whether `id` is indexed.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.tables.iter().any(|t| t.find(id).is_some())
    }

    /// Where `id` is stored; an error naming it if it is not indexed.
    pub fn locate(&self, id: &BlobId) -> Result<Location> {
        self.lookup(id)?
            .ok_or_else(|| Error::NotFound(format!("blob {id} in the index")))
    }

    /// Where `id` is stored.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<Location>> {
        for t in &self.tables {
            if let Some(i) = t.find(id) {
                return t.location_at(i).map(|(_, loc)| Some(loc));
            }
        }
        Ok(None)
    }
}

/// More index tables than this and [`compact`] merges the smallest.
pub const MAX_TABLES: usize = 32;
/// Tables left by [`compact`]: it merges the smallest into one.
const KEEP_TABLES: usize = 16;

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

/// The head of a table of `packs` packs and `entries` entries.
fn head_record(packs: usize, entries: u64) -> Vec<u8> {
    let mut head = codec::header(MAGIC, VERSION);
    head.extend_from_slice(&(packs as u32).to_le_bytes());
    head.extend_from_slice(&entries.to_le_bytes());
    head
}

/// A pack's record in a table's pack list.
fn pack_record(id: &PackId, kind: BlobKind) -> [u8; PACK_REC] {
    let mut rec = [0u8; PACK_REC];
    rec[..32].copy_from_slice(&id.0);
    rec[32] = kind.to_byte();
    rec
}

/// An entry's record: blob id, then pack number, offset, length and raw
/// length.
fn entry_record(id: &BlobId, fields: [u32; 4]) -> [u8; ENTRY_REC] {
    let mut rec = [0u8; ENTRY_REC];
    rec[..32].copy_from_slice(&id.0);
    for (n, v) in fields.into_iter().enumerate() {
        rec[32 + 4 * n..36 + 4 * n].copy_from_slice(&v.to_le_bytes());
    }
    rec
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
fn merge_kept(
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

/// The first eight bytes of an id (or of a record starting with one) as
/// a number: ids compare as (this, the rest), which is byte order.
fn id_prefix(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// A source's next entry in [`merge_kept`]'s heap, which pops the
/// smallest id first and, for an id several sources hold, the first
/// source. The id's first eight bytes are compared as a number before the
/// rest: that is byte order, and most comparisons end there instead of in
/// a 32-byte `memcmp` (which was a twentieth of a gc's CPU).
#[derive(PartialEq, Eq)]
struct Queued {
    prefix: u64,
    id: BlobId,
    src: usize,
}

impl Queued {
    fn new(id: BlobId, src: usize) -> Queued {
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
struct TableOut<'a> {
    backend: &'a dyn Backend,
    sink: Option<Box<dyn FileSink>>,
    spool: Option<std::fs::File>,
    buf: Vec<u8>,
    mac: blake3::Hasher,
    name: blake3::Hasher,
}

/// Bytes a streamed [`TableOut`] gathers before hashing and handing them on.
const TABLE_OUT_CHUNK: usize = 64 << 10;

/// Size from which a table for a store without an index sink (S3) goes to
/// a temporary file instead of memory: about 200,000 entries.
pub(crate) const SPOOL_FROM: usize = 8 << 20;

impl<'a> TableOut<'a> {
    fn new(backend: &'a dyn Backend, key: &MasterKey) -> Result<TableOut<'a>> {
        Ok(TableOut {
            backend,
            sink: backend.index_sink()?,
            spool: None,
            buf: Vec::with_capacity(TABLE_OUT_CHUNK + ENTRY_REC),
            mac: key.mac_hasher(),
            name: blake3::Hasher::new(),
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
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
    fn pass_on(&mut self) -> Result<()> {
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
    fn finish(mut self) -> Result<IndexId> {
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

/// Builds one index table from pack headers.
#[derive(Default)]
pub struct IndexBuilder {
    packs: Vec<(PackId, BlobKind)>,
    numbers: crate::id::IdMap<PackId, u32>,
    /// The pack number [`IndexBuilder::add_entry`] used last.
    last: u32,
    entries: Vec<(BlobId, u32, u32, u32, u32)>,
}

impl IndexBuilder {
    /// The number of `pack` in the table's pack list, added if new.
    fn number(&mut self, pack: PackId, kind: BlobKind) -> u32 {
        let next = self.packs.len() as u32;
        let n = *self.numbers.entry(pack).or_insert(next);
        if n == next {
            self.packs.push((pack, kind));
        }
        n
    }

    /// Adds one blob of a pack.
    pub fn add_entry(&mut self, pack: PackId, kind: BlobKind, e: PackEntry) {
        // Entries come pack by pack more often than not.
        let n = match self.packs.get(self.last as usize) {
            Some((p, _)) if *p == pack => self.last,
            _ => self.number(pack, kind),
        };
        self.last = n;
        self.entries
            .push((e.id, n, e.offset, e.length, e.raw_length));
    }

    /// Adds every blob of a pack.
    pub fn add_pack(&mut self, pack: PackId, kind: BlobKind, entries: &[PackEntry]) {
        let n = self.number(pack, kind);
        self.entries.extend(
            entries
                .iter()
                .map(|e| (e.id, n, e.offset, e.length, e.raw_length)),
        );
    }

    /// Number of packs added.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Number of entries added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encodes the table (sorted, duplicates dropped); returns name and bytes.
    pub fn finish(mut self, key: &MasterKey) -> (IndexId, Vec<u8>) {
        // Entries added from tables come in sorted runs, which a stable
        // sort merges rather than sorts; ids mostly differ in their
        // first word.
        let word = |id: &BlobId| u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
        self.entries
            .sort_by(|a, b| word(&a.0).cmp(&word(&b.0)).then_with(|| a.0.cmp(&b.0)));
        self.entries.dedup_by(|a, b| a.0 == b.0);
        let mut out = Vec::with_capacity(
            HEAD + self.packs.len() * PACK_REC + self.entries.len() * ENTRY_REC + MAC_LEN,
        );
        out.extend_from_slice(&head_record(self.packs.len(), self.entries.len() as u64));
        for (id, kind) in &self.packs {
            out.extend_from_slice(&pack_record(id, *kind));
        }
        for &(id, pack, off, len, raw) in &self.entries {
            out.extend_from_slice(&entry_record(&id, [pack, off, len, raw]));
        }
        let mac = key.mac(&out);
        out.extend_from_slice(&mac);
        (IndexId(file_hash(&out)), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(b: u8, off: u32) -> PackEntry {
        PackEntry {
            id: BlobId([b; 32]),
            offset: off,
            length: 10,
            raw_length: 5,
        }
    }

    #[test]
    fn build_parse_find() {
        let key = MasterKey::generate();
        let mut b = IndexBuilder::default();
        b.add_pack(
            PackId([7; 32]),
            BlobKind::Data,
            &[entry(5, 12), entry(1, 22)],
        );
        b.add_pack(
            PackId([8; 32]),
            BlobKind::Tree,
            &[entry(3, 12), entry(5, 40)],
        );
        let (id, bytes) = b.finish(&key);
        let t = IndexTable::parse(id, Data::Owned(bytes)).unwrap();
        t.check(&key).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.id_at(0), BlobId([1; 32]));
        let (_, loc) = t.location_at(t.find(&BlobId([3; 32])).unwrap()).unwrap();
        assert_eq!(loc.pack, PackId([8; 32]));
        assert_eq!(loc.kind, BlobKind::Tree);
        assert!(t.find(&BlobId([4; 32])).is_none());
        assert!(t.check(&MasterKey::generate()).is_err());
    }

    /// A deterministic stream of pseudo-random words from `seed` (not 0).
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// `find` guesses positions from ids' first bytes, or looks them up
    /// in the table's directory once built; either way it must find every
    /// entry and no absent id however the ids spread: evenly (as keyed
    /// hashes do), all sharing their first 8 bytes, bunched at either end,
    /// or in runs, in tables of every size around its thresholds.
    #[test]
    fn find_is_exact_for_any_spread_of_ids() {
        let key = MasterKey::generate();
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15u64);
        type Spread = fn(u64, usize) -> [u8; 32];
        let spreads: [(&str, Spread); 5] = [
            ("even", |r, _| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&r.to_be_bytes());
                id[8..16].copy_from_slice(&r.rotate_left(17).to_le_bytes());
                id
            }),
            ("same prefix", |r, _| {
                let mut id = [0xab; 32];
                id[8..16].copy_from_slice(&r.to_be_bytes());
                id
            }),
            ("low end", |r, _| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(r >> 40).to_be_bytes());
                id[8..16].copy_from_slice(&r.to_be_bytes());
                id
            }),
            ("high end", |r, _| {
                let mut id = [0xff; 32];
                id[..8].copy_from_slice(&(u64::MAX - (r >> 40)).to_be_bytes());
                id[8..16].copy_from_slice(&r.to_be_bytes());
                id
            }),
            ("runs", |r, i| {
                let mut id = [0u8; 32];
                let run = (i / 50) as u64;
                id[..8].copy_from_slice(&(run.wrapping_mul(0x0123_4567_89ab_cdef)).to_be_bytes());
                id[8..16].copy_from_slice(&r.to_be_bytes());
                id
            }),
        ];
        for (name, spread) in spreads {
            for (n, directory) in [0usize, 1, 2, 63, 64, 65, 100, 255, 256, 257, 1000, 5000]
                .into_iter()
                .flat_map(|n| [(n, false), (n, true)])
            {
                let ids: Vec<BlobId> = (0..n).map(|i| BlobId(spread(rand(), i))).collect();
                let t = table_of_ids(&key, &ids);
                if directory {
                    t.build_directory();
                    assert_eq!(t.dir.get().is_some(), n >= 256, "{name}, {n}");
                }
                let name = format!("{name}, directory {directory}");
                for id in &ids {
                    let i = t
                        .find(id)
                        .unwrap_or_else(|| panic!("{name}, {n}: {id} not found"));
                    assert_eq!(t.id_at(i), *id, "{name}, {n}");
                }
                for _ in 0..200 {
                    let absent = BlobId(spread(rand(), (rand() % 1000) as usize));
                    if !ids.contains(&absent) {
                        assert_eq!(t.find(&absent), None, "{name}, {n}: {absent}");
                    }
                }
                // Ids just beside present ones, and the extremes.
                for id in ids.iter().take(50) {
                    for delta in [1u8, 255] {
                        let mut near = *id;
                        near.0[31] = near.0[31].wrapping_add(delta);
                        if !ids.contains(&near) {
                            assert_eq!(t.find(&near), None, "{name}, {n}: {near}");
                        }
                    }
                }
                for extreme in [BlobId([0; 32]), BlobId([0xff; 32])] {
                    assert_eq!(t.find(&extreme).is_some(), ids.contains(&extreme));
                }
            }
        }
    }

    /// Directories are built for the tables the lookups to come make
    /// worth one (one lookup per 16 entries or more), and no others.
    #[test]
    fn directories_are_built_where_lookups_repay_them() {
        let key = MasterKey::generate();
        let table = |n: u32| {
            let ids: Vec<BlobId> = (0..n)
                .map(|i| BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
                .collect();
            table_of_ids(&key, &ids)
        };
        let set = IndexSet {
            tables: vec![table(16_000), table(1_600)],
        };
        let built = |set: &IndexSet| -> Vec<bool> {
            set.tables.iter().map(|t| t.dir.get().is_some()).collect()
        };
        set.build_directories(99);
        assert_eq!(built(&set), [false, false]);
        set.build_directories(100);
        assert_eq!(built(&set), [false, true]);
        set.build_directories(1_000);
        assert_eq!(built(&set), [true, true]);
        for t in &set.tables {
            for i in [0, 1, t.len() / 2, t.len() - 1] {
                assert_eq!(t.find(&t.id_at(i)), Some(i));
            }
        }
    }

    /// On a table whose records are not sorted (a hostile one: tables are
    /// mapped for lookups without their MAC being checked), `find` ends
    /// without panicking or overflowing, and what it finds is the id,
    /// with or without a directory.
    #[test]
    fn find_on_unsorted_records_ends_and_never_lies() {
        let mut rand = xorshift(0x2545_f491_4f6c_dd1du64);
        for n in [17usize, 65, 300, 5000] {
            let mut bytes = vec![0u8; HEAD];
            bytes[..8].copy_from_slice(MAGIC);
            bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
            bytes[12..16].copy_from_slice(&1u32.to_le_bytes());
            bytes[16..24].copy_from_slice(&(n as u64).to_le_bytes());
            bytes.extend_from_slice(&[0u8; PACK_REC]);
            let mut ids = Vec::new();
            for i in 0..n {
                let mut rec = [0u8; ENTRY_REC];
                // Random keys, some runs of equal first words, both ends.
                let word = match i % 7 {
                    0 => 0,
                    1 => u64::MAX,
                    2 => 0x8000_0000_0000_0000,
                    _ => rand(),
                };
                rec[..8].copy_from_slice(&word.to_be_bytes());
                rec[8..16].copy_from_slice(&rand().to_le_bytes());
                ids.push(BlobId(rec[..32].try_into().unwrap()));
                bytes.extend_from_slice(&rec);
            }
            bytes.extend_from_slice(&[0u8; MAC_LEN]);
            let t = IndexTable::parse(IndexId([0; 32]), Data::Owned(bytes)).unwrap();
            for directory in [false, true] {
                if directory {
                    t.build_directory();
                }
                for id in ids.iter().chain([&BlobId([0; 32]), &BlobId([0xff; 32])]) {
                    if let Some(j) = t.find(id) {
                        assert_eq!(t.id_at(j), *id, "{n}, directory {directory}");
                    }
                }
            }
        }
    }

    #[test]
    fn hostile_tables_are_rejected() {
        let key = MasterKey::generate();
        let (id, mut bytes) = IndexBuilder::default().finish(&key);
        bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(IndexTable::parse(id, Data::Owned(bytes.clone())).is_err());
        assert!(IndexTable::parse(id, Data::Owned(bytes[..10].to_vec())).is_err());
    }

    #[test]
    fn compaction_bounds_the_table_count_and_keeps_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::backend::local::LocalBackend::new(dir.path());
        backend.create().unwrap();
        let key = MasterKey::generate();
        let tables = MAX_TABLES + 3;
        for t in 0..tables {
            let mut b = IndexBuilder::default();
            let entries: Vec<PackEntry> = (0..=t)
                .map(|i| PackEntry {
                    id: BlobId(*blake3::hash(&[t as u8, i as u8]).as_bytes()),
                    offset: 12 + i as u32 * 10,
                    length: 10,
                    raw_length: 5,
                })
                .collect();
            b.add_pack(PackId([t as u8; 32]), BlobKind::Data, &entries);
            let (id, bytes) = b.finish(&key);
            backend
                .write(FileKind::Index, &id.to_hex(), &bytes)
                .unwrap();
        }
        // One damaged table is left alone, not merged into a valid one.
        let names = backend.list(FileKind::Index).unwrap();
        let path = dir.path().join("index").join(&names[0]);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();

        let stats = compact(&backend, &key).unwrap();
        assert_eq!(stats.damaged.len(), 1);
        assert_eq!(stats.merged, tables - 1 - KEEP_TABLES + 1);
        let set = IndexSet::load(&backend).unwrap();
        assert_eq!(set.tables().len(), KEEP_TABLES + 1);
        for t in set.tables() {
            if t.id() != stats.damaged[0] {
                t.check(&key).unwrap();
            }
        }
        for t in 0..tables {
            for i in 0..=t {
                let id = BlobId(*blake3::hash(&[t as u8, i as u8]).as_bytes());
                // (The flipped byte lies in a raw length, not in these.)
                let loc = set.lookup(&id).unwrap().expect("every entry survives");
                assert_eq!(loc.pack, PackId([t as u8; 32]));
                assert_eq!(loc.offset, 12 + i as u32 * 10);
            }
        }
        // Below the threshold nothing happens.
        assert_eq!(compact(&backend, &key).unwrap().merged, 0);
    }

    /// A table of `ids` (one byte each) spread over packs `packs[k]`.
    /// A table of `ids` (in any order), all in one pack.
    fn table_of_ids(key: &MasterKey, ids: &[BlobId]) -> IndexTable {
        let entries: Vec<PackEntry> = ids
            .iter()
            .map(|id| PackEntry {
                id: *id,
                offset: 0,
                length: 1,
                raw_length: 1,
            })
            .collect();
        let mut b = IndexBuilder::default();
        b.add_pack(PackId([1; 32]), BlobKind::Data, &entries);
        let (id, bytes) = b.finish(key);
        IndexTable::parse(id, Data::Owned(bytes)).unwrap()
    }

    fn table_of(key: &MasterKey, entries: &[(u8, u8, u32)]) -> IndexTable {
        let mut b = IndexBuilder::default();
        for &(id, pack, off) in entries {
            b.add_entry(PackId([pack; 32]), BlobKind::Data, entry(id, off));
        }
        let (id, bytes) = b.finish(key);
        IndexTable::parse(id, Data::Owned(bytes)).unwrap()
    }

    /// The merged table holds each kept id once (the first source's
    /// entry), names only packs a kept entry uses, checks out, and is the
    /// same file whether streamed through a sink or written whole.
    #[test]
    fn merging_keeps_what_is_asked_once_and_streams_the_same_bytes() {
        let key = MasterKey::generate();
        let a = table_of(
            &key,
            &[(1, 10, 100), (3, 11, 300), (5, 10, 500), (7, 12, 700)],
        );
        let b = table_of(
            &key,
            &[(2, 20, 200), (3, 21, 333), (6, 11, 600), (9, 22, 900)],
        );
        // Drop id 5 of a and id 9 of b (pack 22 is then named by nothing).
        let keep_a = |_: usize, e: &Entry| e.id != BlobId([5; 32]);
        let keep_b = |_: usize, e: &Entry| e.id != BlobId([9; 32]);
        let sources = [
            MergeSource {
                table: &a,
                keep: &keep_a,
            },
            MergeSource {
                table: &b,
                keep: &keep_b,
            },
        ];
        let streamed_dir = tempfile::tempdir().unwrap();
        let streamed = crate::backend::local::LocalBackend::new(streamed_dir.path());
        streamed.create().unwrap();
        assert!(streamed.index_sink().unwrap().is_some());
        let whole = crate::backend::mem::MemBackend::default();
        assert!(whole.index_sink().unwrap().is_none());
        let mut files = Vec::new();
        for backend in [&streamed as &dyn Backend, &whole] {
            let id = write_merged(backend, &key, &sources).unwrap().unwrap();
            let data = backend.read(FileKind::Index, &id.to_hex()).unwrap();
            assert_eq!(IndexId(file_hash(&data)), id, "named by its hash");
            files.push(data.to_vec());
            let t = IndexTable::parse(id, data).unwrap();
            t.check(&key).unwrap();
            let ids: Vec<u8> = (0..t.len()).map(|i| t.id_at(i).0[0]).collect();
            assert_eq!(ids, [1, 2, 3, 6, 7]);
            let (_, three) = t.location_at(t.find(&BlobId([3; 32])).unwrap()).unwrap();
            assert_eq!((three.pack, three.offset), (PackId([11; 32]), 300));
            let packs: Vec<u8> = (0..t.pack_count())
                .map(|n| t.pack(n).unwrap().0 .0[0])
                .collect();
            let mut sorted = packs.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [10, 11, 12, 20], "pack list {packs:?}");
        }
        assert_eq!(files[0], files[1]);
        // Nothing kept: nothing written.
        let none = |_: usize, _: &Entry| false;
        let empty = [MergeSource {
            table: &a,
            keep: &none,
        }];
        assert_eq!(write_merged(&whole, &key, &empty).unwrap(), None);
        assert_eq!(whole.list(FileKind::Index).unwrap().len(), 1);
    }

    /// Ids that agree in their first eight bytes (which the merge compares
    /// as a number first) are still merged in full byte order, each once,
    /// from the first source holding it.
    #[test]
    fn merging_orders_ids_that_share_their_first_word() {
        let key = MasterKey::generate();
        let id = |tail: u8| {
            let mut b = [0xAB; 32];
            b[31] = tail;
            BlobId(b)
        };
        let table = |entries: &[(u8, u8, u32)]| {
            let mut b = IndexBuilder::default();
            for &(tail, pack, off) in entries {
                let e = PackEntry {
                    id: id(tail),
                    ..entry(0, off)
                };
                b.add_entry(PackId([pack; 32]), BlobKind::Data, e);
            }
            let (tid, bytes) = b.finish(&key);
            IndexTable::parse(tid, Data::Owned(bytes)).unwrap()
        };
        let a = table(&[(2, 1, 20), (5, 1, 50), (9, 1, 90)]);
        let b = table(&[(1, 2, 10), (5, 2, 55), (7, 2, 70)]);
        let all = |_: usize, _: &Entry| true;
        let sources = [
            MergeSource {
                table: &a,
                keep: &all,
            },
            MergeSource {
                table: &b,
                keep: &all,
            },
        ];
        let backend = crate::backend::mem::MemBackend::default();
        let tid = write_merged(&backend, &key, &sources).unwrap().unwrap();
        let t =
            IndexTable::parse(tid, backend.read(FileKind::Index, &tid.to_hex()).unwrap()).unwrap();
        t.check(&key).unwrap();
        let tails: Vec<u8> = (0..t.len()).map(|i| t.id_at(i).0[31]).collect();
        assert_eq!(tails, [1, 2, 5, 7, 9]);
        let (_, five) = t.location_at(t.find(&id(5)).unwrap()).unwrap();
        assert_eq!(
            (five.pack, five.offset),
            (PackId([1; 32]), 50),
            "first source's entry"
        );
    }

    /// A merged table past [`SPOOL_FROM`] for a store without an index
    /// sink goes through a temporary file: the same bytes as streamed to a
    /// local store.
    #[test]
    fn a_large_merge_spools_to_the_same_bytes() {
        let key = MasterKey::generate();
        let n = SPOOL_FROM / ENTRY_REC + 1000;
        let mut b = IndexBuilder::default();
        for i in 0..n as u32 {
            let id = BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes());
            let e = PackEntry {
                id,
                offset: i,
                length: 1,
                raw_length: 1,
            };
            b.add_entry(PackId([(i % 7) as u8; 32]), BlobKind::Data, e);
        }
        let (id, bytes) = b.finish(&key);
        let big = IndexTable::parse(id, Data::Owned(bytes)).unwrap();
        let keep = |i: usize, _: &Entry| i % 1000 != 0;
        let sources = [MergeSource {
            table: &big,
            keep: &keep,
        }];
        let dir = tempfile::tempdir().unwrap();
        let local = crate::backend::local::LocalBackend::new(dir.path());
        local.create().unwrap();
        let mem = crate::backend::mem::MemBackend::default();
        let a = write_merged(&local, &key, &sources).unwrap().unwrap();
        let b = write_merged(&mem, &key, &sources).unwrap().unwrap();
        assert_eq!(a, b);
        let data = mem.read(FileKind::Index, &b.to_hex()).unwrap();
        assert!(data.len() > SPOOL_FROM, "{} bytes", data.len());
        assert_eq!(
            &data[..],
            &local.read(FileKind::Index, &a.to_hex()).unwrap()[..]
        );
        let t = IndexTable::parse(b, data).unwrap();
        t.check(&key).unwrap();
        assert_eq!(t.len(), n - n.div_ceil(1000));
    }

    /// A source that fails its MAC is refused, not sealed anew as valid.
    #[test]
    fn merging_refuses_a_damaged_source() {
        let key = MasterKey::generate();
        let a = table_of(&key, &[(1, 10, 100), (3, 11, 300)]);
        let mut bytes = a.data.to_vec();
        let n = bytes.len();
        bytes[n - 40] ^= 1;
        let damaged = IndexTable::parse(a.id(), Data::Owned(bytes)).unwrap();
        merging_fails(&key, &damaged, "MAC mismatch");
    }

    /// Merging `table` alone fails with an error containing `why`, and
    /// writes nothing.
    fn merging_fails(key: &MasterKey, table: &IndexTable, why: &str) {
        let all = |_: usize, _: &Entry| true;
        let backend = crate::backend::mem::MemBackend::default();
        let sources = [MergeSource { table, keep: &all }];
        let err = write_merged(&backend, key, &sources).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        assert!(backend.list(FileKind::Index).unwrap().is_empty());
    }

    /// A source whose MAC checks out but whose entries do not ascend (never
    /// written by cairn) is an error, not an unsorted table sealed anew.
    #[test]
    fn merging_refuses_entries_out_of_order() {
        let key = MasterKey::generate();
        let a = table_of(&key, &[(1, 10, 100), (3, 10, 300), (5, 10, 500)]);
        let mut bytes = a.data.to_vec();
        let first = HEAD + PACK_REC;
        let (x, y) = (first, first + ENTRY_REC);
        let one: Vec<u8> = bytes[x..y].to_vec();
        bytes.copy_within(y..y + ENTRY_REC, x);
        bytes[y..y + ENTRY_REC].copy_from_slice(&one);
        let n = bytes.len();
        let mac = key.mac(&bytes[..n - MAC_LEN]);
        bytes[n - MAC_LEN..].copy_from_slice(&mac);
        let swapped = IndexTable::parse(a.id(), Data::Owned(bytes)).unwrap();
        assert!(swapped.check(&key).is_err());
        merging_fails(&key, &swapped, "out of order");
    }

    proptest::proptest! {
        /// The merge of up to four tables (ids from a small range, so
        /// runs, interleavings and ids several tables hold all occur) with
        /// some entries dropped is what a map filled from the last
        /// source to the first holds: every kept id once, ascending, from
        /// the first source keeping it.
        #[test]
        fn merging_equals_the_first_source_wins_model(
            tables in proptest::collection::vec(
                proptest::collection::btree_set(0u8..64, 0..48),
                1..5,
            ),
            drop_every in 2usize..7,
        ) {
            let key = MasterKey::generate();
            let built: Vec<IndexTable> = tables
                .iter()
                .enumerate()
                .map(|(src, ids)| {
                    let entries: Vec<(u8, u8, u32)> =
                        ids.iter().map(|&id| (id, src as u8, u32::from(id))).collect();
                    table_of(&key, &entries)
                })
                .collect();
            let keep = |i: usize, e: &Entry| (i + e.id.0[0] as usize) % drop_every != 0;
            let sources: Vec<MergeSource> = built
                .iter()
                .map(|table| MergeSource { table, keep: &keep })
                .collect();
            let mut model = std::collections::BTreeMap::new();
            for (src, t) in built.iter().enumerate().rev() {
                for i in 0..t.len() {
                    let e = t.entry_at(i).unwrap();
                    if keep(i, &e) {
                        model.insert(e.id.0[0], src);
                    }
                }
            }
            let mut merged = Vec::new();
            merge_kept(&sources, |src, e| {
                merged.push((e.id.0[0], src));
                Ok(())
            })
            .unwrap();
            proptest::prop_assert_eq!(merged, model.into_iter().collect::<Vec<_>>());
        }

        /// Merging a table of arbitrary records, sealed with a valid MAC so
        /// that only the merge's own checks stand between them and the
        /// output, with itself: an error or a table that checks out and
        /// holds every kept id, never a panic.
        #[test]
        fn merging_arbitrary_records_errs_or_checks_out(
            packs in 1u32..4,
            records in proptest::collection::vec(
                (0u8..16, proptest::num::u8::ANY, 0u32..40, proptest::num::u32::ANY),
                0..40,
            ),
            sorted: bool,
            skip in 1usize..4,
        ) {
            let key = MasterKey::generate();
            let mut recs: Vec<[u8; ENTRY_REC]> = records
                .iter()
                .map(|&(a, b, pick, word)| {
                    // Now and then a pack number past the pack list.
                    let pack = if pick == 0 { packs } else { pick % packs };
                    let mut r = [0u8; ENTRY_REC];
                    r[0] = a;
                    r[1] = b;
                    r[32..36].copy_from_slice(&pack.to_le_bytes());
                    for o in [36, 40, 44] {
                        r[o..o + 4].copy_from_slice(&word.to_le_bytes());
                    }
                    r
                })
                .collect();
            if sorted {
                recs.sort_by(|x, y| x[..32].cmp(&y[..32]));
                recs.dedup_by(|x, y| x[..32] == y[..32]);
            }
            let mut bytes = codec::header(MAGIC, VERSION);
            bytes.extend_from_slice(&packs.to_le_bytes());
            bytes.extend_from_slice(&(recs.len() as u64).to_le_bytes());
            for p in 0..packs {
                bytes.extend_from_slice(&[p as u8; 32]);
                bytes.extend_from_slice(&[BlobKind::Data.to_byte(), 0, 0, 0]);
            }
            for r in &recs {
                bytes.extend_from_slice(r);
            }
            let mac = key.mac(&bytes);
            bytes.extend_from_slice(&mac);
            let t = IndexTable::parse(IndexId([1; 32]), Data::Owned(bytes)).unwrap();
            let keep = |i: usize, _: &Entry| i % skip != 0;
            let sources = [
                MergeSource { table: &t, keep: &keep },
                MergeSource { table: &t, keep: &keep },
            ];
            let backend = crate::backend::mem::MemBackend::default();
            if let Ok(Some(id)) = write_merged(&backend, &key, &sources) {
                let data = backend.read(FileKind::Index, &id.to_hex()).unwrap();
                let merged = IndexTable::parse(id, data).unwrap();
                merged.check(&key).unwrap();
                for i in (0..t.len()).filter(|i| i % skip != 0) {
                    let found = merged.find(&t.id_at(i));
                    proptest::prop_assert!(found.is_some(), "kept entry {i} missing");
                }
            }
            if sorted && (0..t.len()).all(|i| t.entry_at(i).is_ok()) {
                // Sorted records naming listed packs always merge.
                let merged = write_merged(&backend, &key, &sources);
                proptest::prop_assert!(merged.is_ok(), "{merged:?}");
            }
        }
    }

    /// From a remote store the tables are fetched several at once, and
    /// every one arrives.
    #[test]
    fn remote_index_tables_are_fetched_at_once() {
        use crate::backend::testing::{Hooked, Hooks};
        use std::sync::{Condvar, Mutex};
        /// Each read waits (up to 5 s) until another is in flight too.
        #[derive(Default)]
        struct Remote {
            in_flight: Mutex<(usize, usize)>,
            changed: Condvar,
        }
        impl Hooks for Remote {
            fn prefers_ranges(&self, _: &dyn Backend) -> bool {
                true
            }
            fn read(&self, _: FileKind, _: &str) -> Option<Result<Data>> {
                let mut g = self.in_flight.lock().unwrap();
                g.0 += 1;
                g.1 = g.1.max(g.0);
                self.changed.notify_all();
                let deadline = std::time::Duration::from_secs(5);
                let (mut g, _) = self
                    .changed
                    .wait_timeout_while(g, deadline, |g| g.1 < 2)
                    .unwrap();
                g.0 -= 1;
                None
            }
        }
        let key = MasterKey::generate();
        let backend = Hooked {
            inner: crate::backend::mem::MemBackend::default(),
            hooks: Remote::default(),
        };
        let mut ids = Vec::new();
        for t in 0..5u8 {
            let mut b = IndexBuilder::default();
            let entry = PackEntry {
                id: BlobId([t; 32]),
                offset: 12,
                length: 10,
                raw_length: 5,
            };
            b.add_pack(PackId([t; 32]), BlobKind::Data, &[entry]);
            let (id, bytes) = b.finish(&key);
            backend
                .inner
                .write(FileKind::Index, &id.to_hex(), &bytes)
                .unwrap();
            ids.push(BlobId([t; 32]));
        }
        let set = IndexSet::load(&backend).unwrap();
        assert_eq!(set.tables().len(), 5);
        for id in &ids {
            assert_eq!(set.lookup(id).unwrap().unwrap().pack, PackId(id.0));
        }
        assert!(backend.hooks.in_flight.lock().unwrap().1 >= 2);
    }
}
