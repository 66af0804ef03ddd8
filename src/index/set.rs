//! Every index table of a repository, searched together.

use super::*;

/// All index tables of a repository, searched together.
#[derive(Default)]
pub struct IndexSet {
    pub(super) tables: Vec<IndexTable>,
}

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
