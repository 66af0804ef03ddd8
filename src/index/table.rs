//! One index table, mapped and searched in place, with its directory of
//! id prefixes.

use super::*;

/// One mapped index table.
pub struct IndexTable {
    id: IndexId,
    pub(super) data: Data,
    packs: usize,
    entries: usize,
    /// The kind of every blob the table indexes, for a table of version 2
    /// (see [`VERSION`]) naming a pack; `None` for one of version 1, whose
    /// packs may be of both kinds.
    kind: Option<BlobKind>,
    /// Built by [`IndexTable::build_directory`] for commands that look up
    /// most of a table's ids, or by [`IndexTable::find`] once its lookups
    /// without one make it pay.
    pub(super) dir: std::sync::OnceLock<Directory>,
    /// Lookups made without a directory.
    probes: std::sync::atomic::AtomicUsize,
    /// The pack list, read with `pread` for a directory not in the map
    /// (36 bytes a pack), so that lookups through it map no page.
    pack_list: std::sync::OnceLock<Vec<u8>>,
}

/// Entries a lookup without a directory reads at once (3 KiB, within
/// two pages): the searches' last steps fall within one such window.
const WINDOW: usize = 64;

/// A table smaller than this many entries is searched in its map: it
/// never gets a directory, and its pages are few.
const DIRECTORY_FROM: usize = 256;

/// The entries of a table that a lookup without a directory has read,
/// [`WINDOW`] at a time with [`Data::read_at`].
struct Window<'t> {
    table: &'t IndexTable,
    start: usize,
    len: usize,
    buf: [u8; WINDOW * ENTRY_REC],
}

impl<'t> Window<'t> {
    fn new(table: &'t IndexTable) -> Window<'t> {
        Window {
            table,
            start: 0,
            len: 0,
            buf: [0; WINDOW * ENTRY_REC],
        }
    }

    /// Reads entries `start..start + len` (at most [`WINDOW`]).
    fn load(&mut self, start: usize, len: usize) {
        self.start = start;
        self.len = len.min(WINDOW).min(self.table.entries - start);
        let bytes = &mut self.buf[..self.len * ENTRY_REC];
        self.table
            .data
            .read_at(self.table.entry_offset(self.start), bytes);
    }

    /// The id of entry `i`, reading its window first if need be.
    fn id(&mut self, i: usize) -> [u8; 32] {
        if !(self.start..self.start + self.len).contains(&i) {
            self.load(i - i % WINDOW, WINDOW);
        }
        let at = (i - self.start) * ENTRY_REC;
        self.buf[at..at + 32].try_into().expect("32")
    }

    /// Entry `i`'s whole record, if the window read last holds it.
    fn record(&self, i: usize) -> Option<[u8; ENTRY_REC]> {
        let at = i.checked_sub(self.start).filter(|&k| k < self.len)? * ENTRY_REC;
        self.buf[at..at + ENTRY_REC].try_into().ok()
    }
}

/// Where the entries whose ids start with each `bits`-bit prefix begin:
/// `starts[p]..starts[p + 1]` holds the ids with prefix `p`. A lookup
/// then reads one word of this (a few KiB per thousand entries, which
/// stays in the core's cache) and bisects a range of an entry or two,
/// instead of the half-dozen scattered entries the interpolating search
/// reads in the mapped table.
pub(super) struct Directory {
    shift: u32,
    starts: Vec<u32>,
    /// Whether lookups through it read the entries in the map (the table
    /// was mapped whole to build it) or with `pread` (see
    /// [`IndexTable::find`]).
    mapped: bool,
}

/// A table larger than this (in bytes) that earns a directory through
/// its lookups alone (see [`IndexTable::find`]) is read for it a window
/// at a time, and searched through it with `pread`, never mapped whole.
const MAPPED_DIRECTORY_MAX: usize = 2 << 20;

/// Entries read at a time to build a directory without mapping the table
/// whole: 16 MiB of them, mapped and unmapped again.
#[cfg(not(test))]
const BUILD_WINDOW: usize = (16 << 20) / ENTRY_REC;
#[cfg(test)]
const BUILD_WINDOW: usize = 1000;

/// The most of a mapped file a page fault may map at once: the kernel
/// maps the whole folio of page cache holding the page, and folios are
/// at most 2 MiB (a PMD).
const LARGEST_FOLIO: usize = 2 << 20;

/// How the id an entry starts with compares with `id`: as (first 8 bytes
/// big-endian, then the rest), which is byte order, and most comparisons
/// end at the first word.
fn compare(entry: &[u8], id: &BlobId) -> Ordering {
    id_prefix(entry)
        .cmp(&id_prefix(&id.0))
        .then_with(|| entry[8..32].cmp(&id.0[8..]))
}

/// The directory's prefix bits: entries per prefix between one and two,
/// and at most 4 MiB of directory (a table of 10 million entries gets
/// ten entries, 480 contiguous bytes, per prefix).
pub(super) fn directory_bits(entries: usize) -> u32 {
    entries.max(1).ilog2().min(20)
}

impl IndexTable {
    /// Wraps table bytes after checking header and size (not the MAC).
    pub fn parse(id: IndexId, data: Data) -> Result<IndexTable> {
        let what = format!("index {}", id.short());
        let version = codec::check_header(&data, MAGIC, VERSION, &what)?;
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
        let mut table = IndexTable {
            id,
            data,
            packs: packs as usize,
            entries: entries as usize,
            kind: None,
            dir: std::sync::OnceLock::new(),
            probes: std::sync::atomic::AtomicUsize::new(0),
            pack_list: std::sync::OnceLock::new(),
        };
        // The first pack's record lies in the header's page. One of an
        // unknown kind leaves the table searched for both (`check`, which
        // `verify` runs, reports it), as damage to any other record does.
        if version >= 2 && packs > 0 {
            table.kind = table.pack(0).ok().map(|(_, kind)| kind);
        }
        // Reading the header maps its page, and on a kernel that maps the
        // whole large folio of page cache a page lies in, up to 2 MiB of
        // the table: unmapped again, a table no lookup reads (a table of
        // data, in a no-change backup) adds nothing to the process's
        // resident memory.
        table.data.release_range(0..LARGEST_FOLIO);
        Ok(table)
    }

    /// The kind of every blob the table indexes; `None` for a table of
    /// version 1, which may index both, or one naming no pack.
    pub fn kind(&self) -> Option<BlobKind> {
        self.kind
    }

    /// Whether the table may index blobs of `kind`: a table of version 2
    /// indexes one kind only.
    pub fn holds(&self, kind: BlobKind) -> bool {
        self.kind.is_none_or(|k| k == kind)
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
        self.build_directory_as(true);
    }

    /// [`IndexTable::build_directory`]; with `mapped` false the table is
    /// read a [`BUILD_WINDOW`] at a time, each window unmapped again, and
    /// lookups through the directory read their entries with `pread`, so
    /// the table's pages never count in this process's memory.
    fn build_directory_as(&self, mapped: bool) {
        if self.entries < DIRECTORY_FROM || self.entries > u32::MAX as usize {
            return;
        }
        self.dir.get_or_init(|| {
            let bits = directory_bits(self.entries);
            let shift = 64 - bits;
            let mut starts = Vec::with_capacity((1 << bits) + 1);
            let mut start = 0;
            while start < self.entries {
                let end = if mapped {
                    // Every page is read: map them at once, not a fault
                    // each.
                    self.data.populate();
                    self.entries
                } else {
                    let end = (start + BUILD_WINDOW).min(self.entries);
                    self.data.populate_range(self.entry_range(start..end));
                    end
                };
                for i in start..end {
                    let prefix = (self.key_at(i) >> shift) as usize;
                    while starts.len() <= prefix {
                        starts.push(i as u32);
                    }
                }
                if !mapped {
                    self.data.release_range(self.entry_range(start..end));
                }
                start = end;
            }
            // A window's fault maps the whole large folio of page cache
            // around it (up to 2 MiB), pages of windows released before
            // among them: released again, all at once.
            if !mapped {
                self.data.release_range(0..self.data.len());
            }
            starts.resize((1 << bits) + 1, self.entries as u32);
            if !mapped {
                self.pack_list.get_or_init(|| {
                    let mut list = vec![0u8; self.packs * PACK_REC];
                    self.data.read_at(HEAD, &mut list);
                    list
                });
            }
            Directory {
                shift,
                starts,
                mapped,
            }
        });
    }

    /// The first 8 bytes of entry `i`'s id as a number.
    pub(super) fn key_at(&self, i: usize) -> u64 {
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

    pub(super) fn entry_bytes(&self, i: usize) -> &[u8] {
        let start = self.entry_offset(i);
        &self.data[start..start + ENTRY_REC]
    }

    /// Where entry `i` begins in the table's bytes.
    fn entry_offset(&self, i: usize) -> usize {
        HEAD + self.packs * PACK_REC + i * ENTRY_REC
    }

    /// Where entries `range` lie in the table's bytes.
    pub(super) fn entry_range(&self, range: std::ops::Range<usize>) -> std::ops::Range<usize> {
        self.entry_offset(range.start)..self.entry_offset(range.end)
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
        // A table searched through a directory read with `pread` has its
        // pack list in memory: read in the map, its folio would be
        // mapped, up to 2 MiB, by every lookup's location.
        let at = n * PACK_REC;
        let rec = match self.pack_list.get() {
            Some(list) => &list[at..at + PACK_REC],
            None => &self.data[HEAD + at..HEAD + at + PACK_REC],
        };
        let kind = BlobKind::from_byte(rec[32]).ok_or_else(|| {
            Error::corrupt(format!("index {}", self.id.short()), "unknown blob kind")
        })?;
        Ok((PackId(rec[..32].try_into().expect("32")), kind))
    }

    /// Entry `i` as stored; an error if it names a pack number past the
    /// table's pack list, or a place no blob can have (see
    /// [`entry_damage`]). Lookups do not check the table's MAC, so these
    /// bounds are all that keep a damaged entry from asking a reader for
    /// gigabytes.
    pub fn entry_at(&self, i: usize) -> Result<Entry> {
        // Through the map: commands that read every entry (gc, verify,
        // merges) read them so. A lookup that searched with `pread` takes
        // the entry from what it read instead (see
        // [`IndexTable::find_location`]).
        self.decode_entry(self.entry_bytes(i))
    }

    /// The entry whose record is `rec`.
    fn decode_entry(&self, rec: &[u8]) -> Result<Entry> {
        let word = |o: usize| u32::from_le_bytes(rec[o..o + 4].try_into().expect("4"));
        let entry = Entry {
            id: BlobId(rec[..32].try_into().expect("32")),
            pack: word(32),
            offset: word(36),
            length: word(40),
            raw_length: word(44),
        };
        let damage = if entry.pack as usize >= self.packs {
            Some(format!(
                "entry names pack number {} of {}",
                entry.pack, self.packs
            ))
        } else {
            entry_damage(&entry)
        };
        match damage {
            None => Ok(entry),
            Some(why) => Err(Error::corrupt(format!("index {}", self.id.short()), why)),
        }
    }

    /// The location stored in entry `i`.
    pub fn location_at(&self, i: usize) -> Result<(BlobId, Location)> {
        let e = self.entry_at(i)?;
        self.location_of(e)
    }

    /// The location the entry whose record is `rec` gives.
    fn decode_location(&self, rec: &[u8]) -> Result<(BlobId, Location)> {
        let e = self.decode_entry(rec)?;
        self.location_of(e)
    }

    /// The location entry `e` gives.
    fn location_of(&self, e: Entry) -> Result<(BlobId, Location)> {
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

    /// Searches for `id`.
    ///
    /// With a directory (see [`IndexTable::build_directory`]) the id's
    /// prefix gives the range at once, and bisecting it in the map reads
    /// an entry or two. Without one, the entries are read with
    /// [`Data::read_at`], a [`WINDOW`] at a time, and never mapped: the
    /// kernel maps the whole large folio (up to 2 MiB) around a page a
    /// lookup touches, so a few thousand lookups in a large table would
    /// otherwise add most of it to this process's memory. Once a table
    /// has had a lookup per 16 entries it gets a directory, since such
    /// lookups repay it: a table of up to [`MAPPED_DIRECTORY_MAX`] bytes
    /// is then mapped whole, and searched in the map; a larger one is
    /// read a window at a time, and searched through the directory with
    /// one `pread` a lookup. A backup that keeps an unchanged file's
    /// chunks looks each one up (see `BlobWriter::first_missing`): every
    /// table of chunks gets a directory, and mapping them whole made a
    /// no-change backup's memory grow with the repository, about 47
    /// bytes a chunk (until December 2026). gc, verify and restore build
    /// directories of mapped tables first (see
    /// [`IndexTable::build_directory`]). Tables of fewer than
    /// [`DIRECTORY_FROM`] entries are searched in the map.
    pub fn find(&self, id: &BlobId) -> Option<usize> {
        self.find_record(id).map(|(i, _)| i)
    }

    /// Where `id` is stored, as [`IndexTable::location_at`] gives it, if
    /// the table holds it. Where the search read the entry with `pread`,
    /// its record is taken from what that read, not read again.
    pub fn find_location(&self, id: &BlobId) -> Option<Result<(BlobId, Location)>> {
        let (i, record) = self.find_record(id)?;
        Some(match record {
            Some(rec) => self.decode_location(&rec),
            None => self.location_at(i),
        })
    }

    /// [`IndexTable::find`], with the entry's record where the search read
    /// it with `pread` (`None` where it was read in the map).
    fn find_record(&self, id: &BlobId) -> Option<(usize, Option<[u8; ENTRY_REC]>)> {
        let in_map = |i: usize| (i, None);
        if let Some(dir) = self.dir.get() {
            let p = (id_prefix(&id.0) >> dir.shift) as usize;
            let (lo, hi) = (dir.starts[p] as usize, dir.starts[p + 1] as usize);
            if dir.mapped {
                return Self::bisect(lo, hi, |i| compare(self.entry_bytes(i), id)).map(in_map);
            }
            // The range, an entry or two, in one read of just those.
            let mut window = Window::new(self);
            if lo < hi {
                window.load(lo, hi - lo);
            }
            let i = Self::bisect(lo, hi, |i| compare(&window.id(i), id))?;
            return Some((i, window.record(i)));
        }
        if self.entries < DIRECTORY_FROM {
            return self
                .search(id, |i| self.entry_bytes(i)[..32].try_into().expect("32"))
                .map(in_map);
        }
        let probes = self
            .probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if probes + 1 == self.entries / 16 {
            self.build_directory_as(self.data.len() <= MAPPED_DIRECTORY_MAX);
        }
        let mut window = Window::new(self);
        let i = self.search(id, |i| window.id(i))?;
        Some((i, window.record(i)))
    }

    /// Lookups this table had without a directory.
    pub fn probes(&self) -> usize {
        self.probes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The search of [`IndexTable::find`] without a directory, reading
    /// the id of entry `i` with `id_at(i)`. Blob ids are keyed hashes, so
    /// they spread evenly over the table and an id's first 8 bytes
    /// predict its position within about √m/2 of m entries. So the search
    /// narrows in rounds: a probe where the id's key falls between the
    /// keys bounding the range, then a galloping search from there (steps
    /// of √m/2, doubling) that brackets it. A round takes m entries to
    /// about √m, so two rounds leave a few entries, searched by
    /// bisection, and the probes of the second round fall within a window
    /// or two of the id. A table whose ids do not spread evenly (never
    /// written by cairn) costs at most about three binary searches.
    fn search(&self, id: &BlobId, mut id_at: impl FnMut(usize) -> [u8; 32]) -> Option<usize> {
        let key = id_prefix(&id.0);
        // The entry's key and how it compares with the id.
        let mut probe = |i: usize| {
            let at = id_at(i);
            (id_prefix(&at), compare(&at, id))
        };
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
            match probe(guess) {
                (_, Ordering::Equal) => return Some(guess),
                (at, Ordering::Less) => {
                    (lo, lo_key) = (guess + 1, at);
                    while let Some(p) = guess.checked_add(step).filter(|&p| p < hi) {
                        match probe(p) {
                            (at, Ordering::Less) => (lo, lo_key) = (p + 1, at),
                            (at, Ordering::Greater) => {
                                (hi, hi_key) = (p, at);
                                break;
                            }
                            (_, Ordering::Equal) => return Some(p),
                        }
                        step *= 2;
                    }
                }
                (at, Ordering::Greater) => {
                    (hi, hi_key) = (guess, at);
                    while let Some(p) = guess.checked_sub(step).filter(|&p| p >= lo) {
                        match probe(p) {
                            (at, Ordering::Greater) => (hi, hi_key) = (p, at),
                            (at, Ordering::Less) => {
                                (lo, lo_key) = (p + 1, at);
                                break;
                            }
                            (_, Ordering::Equal) => return Some(p),
                        }
                        step *= 2;
                    }
                }
            }
            if hi_key <= lo_key {
                break; // keys equal in their first word: bisect
            }
        }
        Self::bisect(lo, hi, |i| probe(i).1)
    }

    /// Binary search of `lo..hi` by `cmp` (an entry against the id).
    pub(super) fn bisect(
        mut lo: usize,
        mut hi: usize,
        mut cmp: impl FnMut(usize) -> Ordering,
    ) -> Option<usize> {
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
        let mac = blake3::Hash::from(key.mac(body));
        self.data.advise_random();
        let stored: [u8; MAC_LEN] = self.data[self.data.len() - MAC_LEN..]
            .try_into()
            .expect("MAC_LEN bytes");
        // `blake3::Hash` compares in constant time: how far a forged MAC
        // matches must not show in how long the check takes.
        if mac != blake3::Hash::from(stored) {
            return Err(Error::corrupt(
                format!("index {}", self.id.short()),
                "MAC mismatch (damaged or not from this repository)",
            ));
        }
        Ok(())
    }

    /// Whether the table's name is the hash of its bytes, as every
    /// table's is written (one renamed or copied by hand is not).
    pub fn name_matches_content(&self) -> bool {
        self.data.advise_sequential();
        let matches = file_hash(&self.data) == self.id.0;
        self.data.advise_random();
        matches
    }

    /// Checks the MAC, that ids ascend strictly and that every entry
    /// names a pack of the table and a place a blob can have; returns a
    /// problem, if any.
    pub fn check(&self, key: &MasterKey) -> Result<()> {
        let what = format!("index {}", self.id.short());
        self.check_mac(key)?;
        for i in 0..self.entries {
            if i > 0 && self.entry_bytes(i - 1)[..32] >= self.entry_bytes(i)[..32] {
                return Err(Error::corrupt(
                    &what,
                    format!("entries out of order at {i}"),
                ));
            }
            self.entry_at(i)?;
        }
        for n in 0..self.packs {
            let (_, kind) = self.pack(n)?;
            if self.kind.is_some_and(|k| k != kind) {
                return Err(Error::corrupt(
                    &what,
                    format!("pack {n} is of another kind than pack 0"),
                ));
            }
        }
        Ok(())
    }
}

/// Why `e`'s offset and lengths cannot be a blob's place in a pack, if
/// they cannot: a blob starts after the pack's header, is at most
/// [`MAX_SEALED`] bytes stored and [`MAX_BLOB`] plain, and ends where a
/// `u32` can say (as a pack's header requires of its own entries).
fn entry_damage(e: &Entry) -> Option<String> {
    // The blob's name is made only for a message: every lookup comes here.
    let blob = || e.id.short();
    if e.length > MAX_SEALED {
        Some(format!(
            "entry for blob {} gives a length of {} bytes, more than a stored blob can \
             have ({MAX_SEALED})",
            blob(),
            e.length
        ))
    } else if e.raw_length > MAX_BLOB {
        Some(format!(
            "entry for blob {} gives a raw length of {} bytes, more than a blob can have \
             ({MAX_BLOB})",
            blob(),
            e.raw_length
        ))
    } else if e.offset < HEADER_LEN as u32 {
        Some(format!(
            "entry for blob {} gives offset {}, within the pack's header ({HEADER_LEN} bytes)",
            blob(),
            e.offset
        ))
    } else if e.offset.checked_add(e.length).is_none() {
        Some(format!(
            "entry for blob {} ends past 2^32 - 1 (offset {}, length {})",
            blob(),
            e.offset,
            e.length
        ))
    } else {
        None
    }
}
