//! Every index table of a repository, searched together.

use super::*;

/// All index tables of a repository, searched together.
#[derive(Default)]
pub struct IndexSet {
    pub(super) tables: Vec<IndexTable>,
    misses: Misses,
    /// The tables whose MAC fails, once asked (see
    /// [`IndexSet::damaged_tables`]).
    damaged: std::sync::OnceLock<Vec<IndexId>>,
    /// Calls of [`IndexSet::contains_kind`] and
    /// [`IndexSet::locate_own_kind_where`] for chunks and for trees, for
    /// tests of what a backup looks up.
    #[cfg(test)]
    pub(crate) contains_calls: [std::sync::atomic::AtomicUsize; 2],
}

/// The misses an [`IndexSet`] counted, and the filter they made it build.
#[derive(Default)]
struct Misses {
    count: std::sync::atomic::AtomicUsize,
    filter: std::sync::OnceLock<IdFilter>,
}

/// Entries of a table read between mapping their pages and unmapping them
/// while a filter is built: 16 MiB of the table at a time (a few pages in
/// the unit tests, so that their tables take several windows).
#[cfg(not(test))]
const FILTER_WINDOW: usize = (16 << 20) / ENTRY_REC;
#[cfg(test)]
const FILTER_WINDOW: usize = 1000;

/// Tables fetched at once from a remote store (the store's own limit on
/// requests in flight still applies).
pub(super) const FETCH_AT_ONCE: usize = 8;

/// The bytes of each listed index table `(id, name, size)`, in order.
/// From a remote store (one that prefers ranges) several at a time, each
/// with the size its listing gave, so a repository opened on a fresh
/// cache, or one that many hosts added tables to, costs about one round
/// trip per [`FETCH_AT_ONCE`] tables (or per `--connections`, if fewer)
/// instead of two per table; locally, where a read is a memory map, one
/// after another.
pub(super) fn fetch_tables(
    backend: &dyn Backend,
    listed: &[(IndexId, String, u64)],
) -> Vec<Result<Data>> {
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
    /// A set of these tables, searched in this order.
    pub fn of(tables: Vec<IndexTable>) -> IndexSet {
        IndexSet {
            tables,
            ..IndexSet::default()
        }
    }

    /// The tables whose MAC does not match their bytes, checked once (a
    /// pass over every table). Lookups trust a table's entries as mapped,
    /// range-checked but not authenticated, which a read of every table
    /// would cost each command: so a damaged table (a flipped bit) shows
    /// as a blob that fails to authenticate where its entry puts it, or,
    /// to a command that decides what to delete by the entries, as packs
    /// that look unused. gc and `repair snapshots` ask before they act,
    /// every reader once a blob fails to authenticate, so the damage is
    /// named as the index's, which `cairn repair index` mends, not the
    /// packs' or the snapshots'.
    pub fn damaged_tables(&self, key: &MasterKey) -> &[IndexId] {
        self.damaged.get_or_init(|| {
            self.tables
                .iter()
                .filter(|t| t.check_mac(key).is_err())
                .map(|t| t.id())
                .collect()
        })
    }

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

    pub(super) fn load_with(
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
                    // No table's bytes at all (a symlink to a FIFO or a
                    // device in its place): as damaged as a bad header.
                    Err(e @ Error::Corrupt { .. }) if lenient => {
                        damaged.push((id, e));
                        continue;
                    }
                    Err(e) if e.is_read_refused() => {
                        let what = format!("index table {} cannot be read", id.short());
                        return Err(e.unless_store_unavailable(&what));
                    }
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
            return Ok((IndexSet::of(tables), damaged));
        }
    }

    /// The tables.
    pub fn tables(&self) -> &[IndexTable] {
        &self.tables
    }

    /// Every pack a table's pack list names (those of its entries that
    /// parse), whatever kind.
    pub fn named_packs(&self) -> std::collections::HashSet<PackId> {
        self.tables
            .iter()
            .flat_map(|t| (0..t.pack_count()).filter_map(|n| t.pack(n).ok()))
            .map(|(pack, _)| pack)
            .collect()
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
    ///
    /// A miss searches every table. Once misses have cost about what
    /// reading every table's ids does (one per 16 entries a table, see
    /// [`IndexSet::filter_after`]), the set builds a filter of every id
    /// ([`IdFilter`], 2 bytes an entry), and from then on a miss costs one
    /// cache line, not a search of each table: a backup of many new small
    /// files into a large repository looks up one new id per file.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.find(id, None).is_some()
    }

    /// Whether `id` is indexed as a blob of `kind`: tables of the other
    /// kind are not searched (see [`VERSION`]). A backup asks this of
    /// every blob it would store; a blob the other kind holds is then
    /// stored again as this kind, which costs its bytes, never its data.
    pub fn contains_kind(&self, id: &BlobId, kind: BlobKind) -> bool {
        #[cfg(test)]
        self.contains_calls[usize::from(kind == BlobKind::Tree)]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.find(id, Some(kind)).is_some()
    }

    /// Where `id`, read as a blob of `kind`, is stored: the tables of
    /// `kind` are searched first, then, should they lack it, the others
    /// (a repository written before tables held one kind each may have
    /// stored a file's chunk only as the identical tree, or the reverse).
    pub fn locate_kind(&self, id: &BlobId, kind: BlobKind) -> Result<Location> {
        let found = self.find(id, Some(kind)).or_else(|| {
            let other = match kind {
                BlobKind::Data => BlobKind::Tree,
                BlobKind::Tree => BlobKind::Data,
            };
            self.find(id, Some(other))
        });
        match found {
            // An entry that fails the checks a lookup makes (a pack number
            // past its table's packs): another table's entry of the blob,
            // if one is sound (a backup stores the blob again on meeting
            // such an entry), else the damage.
            Some((t, i)) => t.location_at(i).map(|(_, loc)| loc).or_else(|e| {
                match self.locate_kind_where(id, kind, &|_| true) {
                    Ok(Some(loc)) => Ok(loc),
                    _ => Err(e),
                }
            }),
            None => Err(Error::NotFound(format!("{NOT_INDEXED} {id}"))),
        }
    }

    /// Where `id`, read as a blob of `kind`, is stored in a pack `usable`
    /// accepts: the first such entry, in the order [`IndexSet::locate_kind`]
    /// searches (the tables of `kind`, then the others), skipping entries
    /// in packs `usable` refuses. A blob stored again after its pack was
    /// lost has two entries, and the table naming the lost pack may be
    /// searched first: a read that finds a pack missing, and `repair
    /// snapshots`, which knows which packs are, look past it with this.
    /// `None` when no entry names a usable pack.
    pub fn locate_kind_where(
        &self,
        id: &BlobId,
        kind: BlobKind,
        usable: &dyn Fn(&PackId) -> bool,
    ) -> Result<Option<Location>> {
        let own = self.tables.iter().filter(|t| t.holds(kind));
        let other = self.tables.iter().filter(|t| !t.holds(kind));
        self.first_usable(id, own.chain(other), usable)
    }

    /// Whether `id` is indexed as a blob of `kind` in a pack `usable`
    /// accepts: [`IndexSet::contains_kind`] for a writer that must not
    /// deduplicate against entries naming lost packs.
    pub fn contains_kind_where(
        &self,
        id: &BlobId,
        kind: BlobKind,
        usable: &dyn Fn(&PackId) -> bool,
    ) -> Result<bool> {
        Ok(self.locate_own_kind_where(id, kind, usable)?.is_some())
    }

    /// Where `id` is indexed as a blob of `kind` in a pack `usable`
    /// accepts, searching only the tables of `kind` (as
    /// [`IndexSet::contains_kind_where`] does).
    pub fn locate_own_kind_where(
        &self,
        id: &BlobId,
        kind: BlobKind,
        usable: &dyn Fn(&PackId) -> bool,
    ) -> Result<Option<Location>> {
        #[cfg(test)]
        self.contains_calls[usize::from(kind == BlobKind::Tree)]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let own = self.tables.iter().filter(|t| t.holds(kind));
        self.first_usable(id, own, usable)
    }

    /// The first entry of `id` in `tables` whose pack `usable` accepts.
    fn first_usable<'t>(
        &self,
        id: &BlobId,
        tables: impl Iterator<Item = &'t IndexTable>,
        usable: &dyn Fn(&PackId) -> bool,
    ) -> Result<Option<Location>> {
        if let Some(f) = self.misses.filter.get() {
            if !f.may_contain(id) {
                return Ok(None);
            }
        }
        // An entry that fails a lookup's checks is passed over for a sound
        // one in a later table; with none, it is the answer.
        let mut damaged = None;
        for t in tables {
            if let Some(found) = t.find_location(id) {
                let loc = match found {
                    Ok((_, loc)) => loc,
                    Err(e) => {
                        damaged.get_or_insert(e);
                        continue;
                    }
                };
                if usable(&loc.pack) {
                    return Ok(Some(loc));
                }
            }
        }
        match damaged {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Where `id` is stored; an error naming it if it is not indexed.
    pub fn locate(&self, id: &BlobId) -> Result<Location> {
        self.lookup(id)?
            .ok_or_else(|| Error::NotFound(format!("{NOT_INDEXED} {id}")))
    }

    /// Where `id` is stored.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<Location>> {
        match self.find(id, None) {
            Some((t, i)) => t.location_at(i).map(|(_, loc)| Some(loc)),
            None => Ok(None),
        }
    }

    /// The table and entry holding `id`, through the filter once built;
    /// only in tables that may hold blobs of `kind`, if given.
    fn find(&self, id: &BlobId, kind: Option<BlobKind>) -> Option<(&IndexTable, usize)> {
        let filter = self.misses.filter.get();
        if filter.is_some_and(|f| !f.may_contain(id)) {
            return None;
        }
        let tables = self
            .tables
            .iter()
            .filter(|t| kind.is_none_or(|k| t.holds(k)));
        for t in tables {
            if let Some(i) = t.find(id) {
                return Some((t, i));
            }
        }
        // An empty set (a new repository's) has nothing to filter.
        if filter.is_none() && !self.tables.is_empty() {
            self.missed();
        }
        None
    }

    /// Counts a miss; the one that reaches [`IndexSet::filter_after`]
    /// builds the filter, while the other threads go on searching tables.
    fn missed(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.misses.count.fetch_add(1, Relaxed) + 1;
        if n == self.filter_after() {
            self.misses.filter.get_or_init(|| self.build_filter());
        }
    }

    /// Misses after which the filter is built: about when searching every
    /// table on each miss has cost what building it does. A miss reads a
    /// few windows of entries of each table with `pread` (1.4–2 µs in a
    /// table of 625,000 entries, measured, see PERFORMANCE.md), the build
    /// reads every entry once in order (about 23 ns an entry), so the
    /// misses that pay for it are about one per 64 entries of a table;
    /// never fewer than 1,024 (but as `CAIRN_TEST_FILTER_AFTER` says, for
    /// tests). A table has had far fewer lookups by then than would get
    /// it a directory (see [`IndexTable::find`]).
    pub fn filter_after(&self) -> usize {
        if let Some(n) = crate::fault::filter_after() {
            return n;
        }
        (self.len() / (64 * self.tables.len().max(1))).max(1024)
    }

    /// Bytes of memory the filter holds (0 until built).
    pub fn filter_bytes(&self) -> usize {
        self.misses.filter.get().map_or(0, IdFilter::bytes)
    }

    /// A filter of every table's ids. A map's pages are mapped and
    /// unmapped [`FILTER_WINDOW`] entries at a time, so reading a table of
    /// ten million entries does not add its 480 MB to this process's
    /// memory (they stay in the page cache).
    fn build_filter(&self) -> IdFilter {
        let mut filter = IdFilter::with_capacity(self.len());
        for t in &self.tables {
            let mut start = 0;
            while start < t.len() {
                let end = (start + FILTER_WINDOW).min(t.len());
                let bytes = t.entry_range(start..end);
                t.data.populate_range(bytes.clone());
                (start..end).for_each(|i| filter.insert(&t.id_at(i)));
                t.data.release_range(bytes);
                start = end;
            }
            // Pages a window's fault mapped with its folio, of windows
            // released before among them.
            t.data.release_range(0..t.data.len());
        }
        filter
    }
}
