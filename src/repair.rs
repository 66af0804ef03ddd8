//! Repair: rebuilding the index from packs, and salvaging snapshots.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::cache::Cache;
use crate::backend::{Backend, FileKind};
use crate::error::{Error, Result};
use crate::id::{is_hex_name, BlobId, IdSet, IndexId, PackId, SnapshotId};
use crate::index::{IndexBuilder, IndexSet, IndexTable};
use crate::pack::{self, BlobKind, PackEntry};
use crate::repo::lock::LockGuard;
use crate::repo::Repository;
use crate::snapshot::{DamagedSnapshot, Snapshot, SnapshotEntry};
use crate::tree::{Node, NodeKind, Parts, Tree, TreeBlob, LEFT_OUT_UNKNOWN};
use crate::writer::BlobWriter;

/// How to rebuild the index.
#[derive(Clone, Debug, Default)]
pub struct RepairIndexOptions {
    /// Also read every pack in full first, as `verify --read-data` does,
    /// and leave out of the new tables every copy of a blob that fails to
    /// authenticate, decompress or re-hash. A damaged copy that stays
    /// indexed is taken by every backup for the blob stored, so no later
    /// snapshot could hold that content again; left out, the next backup
    /// stores it again wherever the source still has it.
    pub read_data: bool,
    /// Worker threads for reading packs; 0 = one per core.
    pub workers: usize,
    /// The root of this host's metadata caches, if it has one: a tree
    /// pack the store lost, cut short or (with `read_data`) damaged is put
    /// back from an intact copy there (see [`PutBack`]).
    pub cache_root: Option<std::path::PathBuf>,
}

/// A copy of a blob that `repair index` left out of the index: damaged
/// (found with `--read-data`), or past the end of a pack cut short.
#[derive(Debug, Serialize)]
pub struct DroppedBlob {
    /// The blob.
    pub blob: BlobId,
    /// The pack holding the damaged copy (kept, with its other blobs).
    pub pack: PackId,
    /// Why the copy does not open.
    pub reason: String,
    /// Whether it is a tree: on a remote store, a host's cache may hold
    /// its pack intact.
    pub tree: bool,
}

/// What `repair index` did.
#[derive(Debug, Default, Serialize)]
pub struct IndexRepair {
    /// Packs whose headers were read.
    pub packs: usize,
    /// Blobs indexed.
    pub blobs: usize,
    /// Packs whose header could not be read, with why, and how many of
    /// their entries were kept from the old index (the packs are left in
    /// place).
    pub unreadable: Vec<String>,
    /// Entries kept from the old index for packs with unreadable headers.
    pub kept_entries: usize,
    /// New index tables written.
    pub written_tables: usize,
    /// Old index tables removed.
    pub removed_tables: usize,
    /// Of the tables written, those the old index held already, byte for
    /// byte (a table's name is its content's hash): kept as they were.
    pub unchanged_tables: usize,
    /// Of the tables written, damaged ones written again under their own
    /// name (the content rebuilt hashes to it): replaced, though not
    /// removed.
    pub rewritten_tables: usize,
    /// Damaged copies left out of the index (with `read_data`), by pack.
    pub dropped: Vec<DroppedBlob>,
    /// How many of `dropped` are of a blob with an intact copy indexed in
    /// another pack (a blob stored twice): nothing of it is lost.
    pub dropped_held_elsewhere: usize,
    /// Packs the old index (any table that parses) named that are not in
    /// the repository: their blobs are no longer indexed, unless found in
    /// another pack (see `unindexed_lost`).
    pub missing_packs: Vec<PackId>,
    /// Blobs the old index (any table that parses) named that no pack
    /// read holds, but for those in `dropped`: lost with the packs
    /// the old index placed them in, gone (`missing_packs`) or holding
    /// other content now (a pack overwritten by another). None where a
    /// pack was only renamed, or its blobs are stored again elsewhere.
    pub unindexed_lost: usize,
    /// Of those, the blobs only old tables that fail their check named
    /// (their entries may be wrong).
    pub unindexed_only_damaged: usize,
    /// Of those, the trees: on a remote store, a host that wrote or read
    /// their pack may hold an intact copy of it in its cache.
    pub unindexed_trees: usize,
    /// The first of them, with the pack the old index placed it in.
    pub first_unindexed: Option<(BlobId, PackId)>,
    /// Old tables that failed their check, replaced by the repair.
    pub damaged_tables: Vec<IndexId>,
    /// Packs found in another fan-out folder than their name's (moved by
    /// hand), which every command passes over: each moved home, as (its
    /// place, its folder), or left where a file of its name is home.
    pub placed: Vec<(String, String)>,
    /// Such packs left where they were: a file of that name is home.
    pub not_placed: Vec<(String, String)>,
    /// Such packs intact where the file of their name home was not (with
    /// `read_data`): swapped with it, that file now at their place.
    pub exchanged: Vec<(String, String)>,
    /// Such packs moved home only once the file of their name there was
    /// written again (damaged or misnamed) and removed: not indexed yet.
    pub placed_late: Vec<(String, String)>,
    /// Packs whose header could not be read, written again: the blobs the
    /// old index places in each that open were copied into new packs
    /// with a header of their own, indexed there, and the pack removed.
    pub rewritten: Vec<RewrittenPack>,
    /// Packs put back from an intact copy in this host's cache.
    pub put_back: Vec<PutBack>,
}

/// A pack `repair index` put back into the store from an intact copy in
/// this host's cache (a tree pack; a copy is intact when its bytes hash to
/// its name, as the pack's did when it was written).
#[derive(Debug, Serialize)]
pub struct PutBack {
    /// The pack.
    pub pack: PackId,
    /// What was wrong with the store's: missing, another size, or (with
    /// `--read-data`) bytes that do not hash to its name.
    pub reason: String,
}

/// A pack `repair index` wrote again for its unreadable header.
#[derive(Debug, Serialize)]
pub struct RewrittenPack {
    /// The pack removed.
    pub pack: PackId,
    /// Why it was written again: its header could not be read, or
    /// (`misnamed`) its content does not match its name.
    pub reason: String,
    /// Whether it was intact, under another name than its content's.
    pub misnamed: bool,
    /// Blobs copied out of it.
    pub blobs: usize,
    /// The packs they were copied into.
    pub into: Vec<PackId>,
}

/// Rebuilds the index from the packs' own headers: writes new tables for
/// every readable pack, then removes the old tables. A pack whose header
/// cannot be read keeps the entries the old tables (those whose MAC checks)
/// give for it: its blobs may well be intact, and a pack no table names
/// would be deleted by gc. With [`RepairIndexOptions::read_data`], every
/// pack is read first and the blobs found damaged are left out (their
/// packs keep their other blobs; gc later removes the damaged bytes with
/// the rest of a pack's unused share); a pack that cannot be read then
/// stops the repair before anything is written. Call under the exclusive
/// `lock`, which is confirmed before each table is written and before the
/// old tables are removed. `before_removal` is given what the repair
/// found once the new tables are written, before the old ones, the only
/// record of what is lost, are removed: a kill after would leave a
/// repeated repair nothing to say it by.
pub fn repair_index(
    repo: &Repository,
    opts: &RepairIndexOptions,
    lock: &LockGuard,
    before_removal: &dyn Fn(&IndexRepair),
) -> Result<IndexRepair> {
    repair_index_in_tables_of(repo, opts, lock, TABLE_ENTRIES, before_removal)
}

/// The damaged copies `repair index --read-data` leaves out: every pack
/// read in full (see [`crate::verify::bad_blobs`]). The index is mapped
/// leniently first, as the repair reads the old tables: one that cannot
/// be parsed may be what the repair is run for, and the pack reader
/// consults the index for packs whose header is damaged.
fn damaged_copies(repo: &Repository, opts: &RepairIndexOptions) -> Result<crate::verify::BadBlobs> {
    if !opts.read_data {
        return Ok(crate::verify::BadBlobs::default());
    }
    repo.index_lenient()?;
    every_bad_blob(repo, opts.workers)
}

/// The damaged copies of blobs every pack holds (see
/// [`crate::verify::bad_blobs`]), or an error if a pack could not be
/// read: its blobs unchecked, its damaged copies would count as sound, and
/// a repair would keep them indexed, or the snapshots using them as they
/// are, while reporting none (`repair snapshots --read-data` did, until
/// December 2026).
fn every_bad_blob(repo: &Repository, workers: usize) -> Result<crate::verify::BadBlobs> {
    let found = crate::verify::bad_blobs(repo, workers)
        .map_err(|e| e.unless_store_unavailable("nothing is changed"))?;
    if let Some((pack, e)) = found.unread.first() {
        return Err(Error::Invalid(format!(
            "cannot read pack {} to check its blobs: {e}; nothing is changed; run it again",
            pack.short()
        )));
    }
    Ok(found)
}

/// Refuses to write snapshots without what a pack of trees holds where
/// this host's cache holds an intact copy of it that `repair index` puts
/// back (damage at the pack's own size only where `not_their_hash`, the
/// packs a read with `--read-data` found damaged, names it) (see [`crate::backend::cache::copy_mends`] and
/// [`crate::repo::rescue`]): the copies would
/// drop the trees, and an operator who then forgets the originals, as the
/// copies invite, loses them with the next gc.
fn refuse_over_intact_copies(
    repo: &Repository,
    cache: &Cache,
    index: &IndexSet,
    packs: &HashMap<PackId, u64>,
    not_their_hash: &[PackId],
) -> Result<()> {
    let named = index.named_packs();
    let mending = cache.mending_copies(&|p| packs.get(p).copied(), &|p| named.contains(p), &|p| {
        not_their_hash.contains(p)
    });
    if let Some(m) = mending.first() {
        return Err(Error::Invalid(format!(
            "refusing to repair snapshots: pack {} is {}, but this host's cache holds an intact \
             copy of it; {}, run on this host, puts it back first (a repair of the snapshots \
             now would write them without what it holds)",
            m.pack.short(),
            m.why,
            m.repair
        )));
    }
    // A pack a repair elsewhere removed, or whose damaged trees it left
    // out of the index.
    let present = |p: &PackId| packs.contains_key(p);
    let held = |id: &BlobId| {
        matches!(
            index.locate_kind_where(id, BlobKind::Tree, &present),
            Ok(Some(_))
        )
    };
    let found = crate::repo::rescue::rescues(repo, cache, &present, &|p| named.contains(p), &held)?;
    match found.first() {
        Some(r) => Err(Error::Invalid(format!(
            "refusing to repair snapshots: pack {}: {}, but this host's cache holds an intact \
             copy of it; `cairn repair index`, run on this host, puts it back first (a repair \
             of the snapshots now would write them without those trees)",
            r.pack.short(),
            r.why()
        ))),
        None => Ok(()),
    }
}

/// Puts back into the store the snapshot files of `damaged` (but for
/// those this user may not read) that this host's cache holds intact
/// copies of (their bytes hash to their names); in a dry run, only names
/// them. Every command on this host reads such a snapshot from the cache,
/// and every other host finds it damaged, with the advice to forget it.
fn put_back_snapshots(
    repo: &Repository,
    cache: Option<&Cache>,
    opts: &RepairSnapshotsOptions,
    lock: &LockGuard,
    damaged: &[DamagedSnapshot],
) -> Result<Vec<SnapshotId>> {
    let Some(cache) = cache else {
        return Ok(Vec::new());
    };
    let mut put_back = Vec::new();
    for d in damaged.iter().filter(|d| !d.refused) {
        let name = d.id.to_hex();
        let Some(copy) = cache.get(FileKind::Snapshot, &name) else {
            continue;
        };
        if !opts.dry_run {
            lock.confirm("run it again")?;
            repo.backend().write(FileKind::Snapshot, &name, &copy)?;
        }
        put_back.push(d.id);
    }
    Ok(put_back)
}

/// Puts back into the store the tree packs this host's cache holds intact
/// copies of (their bytes hash to their names) where the store's are not
/// as the copy: missing while an old table (any that parses) names them,
/// of another size, or (read with `--read-data`) not hashing to their
/// name. `packs`, the store's listing, is brought up to date. Until
/// December 2026 the repair removed such a pack cut short (its header
/// unreadable), and the next backup's listing pruned the copy, the last
/// intact one, losing the trees of every snapshot in it.
fn put_back_from_cache(
    repo: &Repository,
    cache: Option<&Cache>,
    lock: &LockGuard,
    old: &IndexSet,
    not_their_hash: &[PackId],
    packs: &mut Vec<(String, u64)>,
) -> Result<Vec<PutBack>> {
    let Some(cache) = cache else {
        return Ok(Vec::new());
    };
    let named = old.named_packs();
    let sizes: HashMap<String, u64> = packs.iter().cloned().collect();
    let mending = cache.mending_copies(
        &|p| sizes.get(&p.to_hex()).copied(),
        &|p| named.contains(p),
        &|p| not_their_hash.contains(p),
    );
    mending
        .into_iter()
        .map(|m| put_back(repo, lock, packs, m.pack, &m.copy, m.why))
        .collect()
}

/// Writes the intact `copy` of `pack` into the store under its name, and
/// brings `packs`, the store's listing, up to date.
fn put_back(
    repo: &Repository,
    lock: &LockGuard,
    packs: &mut Vec<(String, u64)>,
    pack: PackId,
    copy: &[u8],
    reason: String,
) -> Result<PutBack> {
    let name = pack.to_hex();
    lock.confirm("run it again")?;
    repo.backend().write(FileKind::Pack, &name, copy)?;
    let len = copy.len() as u64;
    match packs.iter_mut().find(|(n, _)| *n == name) {
        Some(listed) => listed.1 = len,
        None => packs.push((name, len)),
    }
    Ok(PutBack { pack, reason })
}

/// Puts back the packs of trees this host's cache holds copies of that
/// the store lost and the index no longer names, where the snapshots use
/// trees only they hold (see [`crate::repo::rescue`]): a repair on
/// another host removed them for their damage. `packs`, the store's
/// listing, gains them.
fn put_back_rescues(
    repo: &Repository,
    cache: &Cache,
    lock: &LockGuard,
    old: &IndexSet,
    done: &[PutBack],
    packs: &mut Vec<(String, u64)>,
) -> Result<Vec<PutBack>> {
    let listed: HashSet<PackId> = packs
        .iter()
        .filter_map(|(n, _)| PackId::from_hex(n).ok())
        .collect();
    let named = old.named_packs();
    let held = |id: &BlobId| {
        matches!(
            old.locate_kind_where(id, BlobKind::Tree, &|p| listed.contains(p)),
            Ok(Some(_))
        )
    };
    // The trees are read through the index as the repair found it.
    repo.index_lenient()?;
    let found = crate::repo::rescue::rescues(
        repo,
        cache,
        &|p| listed.contains(p),
        &|p| named.contains(p),
        &held,
    )?;
    found
        .into_iter()
        .filter(|r| !done.iter().any(|d| d.pack == r.pack))
        .map(|r| put_back(repo, lock, packs, r.pack, &r.copy, r.why()))
        .collect()
}

/// `entries` (of `kind`, from the old tables that authenticate) of pack
/// `pack`, `len` bytes long, whose header cannot be read, with those of
/// `others` (from old tables that fail their check, so may be wrong) that
/// they lack and whose blob opens where the entry puts it.
fn with_entries_that_open(
    repo: &Repository,
    pack: PackId,
    (kind, mut entries): (Option<BlobKind>, Vec<PackEntry>),
    (other_kind, others): (Option<BlobKind>, Vec<PackEntry>),
    len: u64,
) -> Result<(Option<BlobKind>, Vec<PackEntry>)> {
    let Some(k) = kind.or(other_kind) else {
        return Ok((kind, entries));
    };
    // Every entry of the tables failing their check is a candidate, in
    // their order: one damaged may precede one that is right.
    let mut known: HashSet<BlobId> = entries.iter().map(|e| e.id).collect();
    let before = entries.len();
    let mut past_end = Vec::new();
    for e in others {
        if known.contains(&e.id) {
            continue;
        }
        if u64::from(e.offset) + u64::from(e.length) > len {
            past_end.push(e);
            continue;
        }
        let loc = crate::index::Location {
            pack,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
            kind: k,
        };
        match repo.read_located(&e.id, loc) {
            Ok(_) => {
                known.insert(e.id);
                entries.push(e);
            }
            // Not there, or not this blob: the entry is wrong.
            Err(Error::Corrupt { .. }) => {}
            Err(err) if err.is_not_found() => {}
            // A read the store failed (a timeout, a refusal) says nothing
            // of the entry: dropped for it, an intact blob would leave the
            // index, and the next repair would delete its pack.
            Err(err) => return Err(err.unless_store_unavailable("the old index tables are kept")),
        }
    }
    // Past the pack's end, where no entry of the blob opens: kept, for the
    // caller to drop and name as lost with the end of a pack cut short.
    for e in past_end {
        if known.insert(e.id) {
            entries.push(e);
        }
    }
    if entries.len() == before {
        return Ok((kind, entries));
    }
    Ok((Some(k), entries))
}

/// What [`unindexed_now`] found: how many blobs, how many of them named
/// only by old tables failing their check, and the first with its pack.
type Unindexed = (usize, usize, usize, Option<(BlobId, PackId)>);

/// The blobs the old tables (`trusted`, which authenticate, and
/// `untrusted`, which do not) index that the tables `written` do not, but
/// for those `dropped` (named already): how many, how many of them only a
/// table failing its check names (its entries may be wrong), and the
/// first, with the pack the old index placed it in. The new tables are
/// mapped and searched, as any command searches them: nothing grows with
/// the repository but what was lost.
fn unindexed_now(
    backend: &dyn Backend,
    written: &[String],
    (trusted, untrusted): (&[&IndexTable], &[&IndexTable]),
    dropped: &[DroppedBlob],
) -> Result<Unindexed> {
    let mut tables = Vec::with_capacity(written.len());
    for name in written {
        let data = backend.read(FileKind::Index, name)?;
        tables.push(IndexTable::parse(IndexId::from_hex(name)?, data)?);
    }
    let new = IndexSet::of(tables);
    new.build_directories(usize::MAX);
    let named: HashSet<BlobId> = dropped.iter().map(|d| d.blob).collect();
    let mut lost: HashSet<BlobId> = HashSet::new();
    let mut first = None;
    let mut only_damaged = 0;
    let mut trees = 0;
    for (t, sound) in
        (trusted.iter().map(|t| (t, true))).chain(untrusted.iter().map(|t| (t, false)))
    {
        for i in 0..t.len() {
            let Ok((id, loc)) = t.location_at(i) else {
                continue;
            };
            if !new.contains(&id) && !named.contains(&id) && lost.insert(id) {
                first.get_or_insert((id, loc.pack));
                if !sound {
                    only_damaged += 1;
                }
                if loc.kind == BlobKind::Tree {
                    trees += 1;
                }
            }
        }
    }
    Ok((lost.len(), only_damaged, trees, first))
}

/// `entries` of `pack` without the copies in `bad`, which are added to
/// `dropped`.
fn without_damaged(
    (pack, tree): (PackId, bool),
    entries: Vec<PackEntry>,
    bad: &HashMap<(BlobId, PackId), String>,
    dropped: &mut Vec<DroppedBlob>,
) -> Vec<PackEntry> {
    if bad.is_empty() {
        return entries;
    }
    let (bad_here, kept): (Vec<PackEntry>, Vec<PackEntry>) = entries
        .into_iter()
        .partition(|e| bad.contains_key(&(e.id, pack)));
    for e in bad_here {
        dropped.push(DroppedBlob {
            blob: e.id,
            pack,
            reason: bad[&(e.id, pack)].clone(),
            tree,
        });
    }
    kept
}

/// Entries per table `repair index` writes: its memory is bounded by one
/// table's entries (about 50 bytes each in the builder, as many again
/// encoded), not by the repository. A backup's compaction merges the
/// tables, streaming, once there are too many.
const TABLE_ENTRIES: usize = 1 << 19;

/// [`repair_index`], starting a new table once one holds at least
/// `per_table` entries (a pack's entries stay in one table).
fn repair_index_in_tables_of(
    repo: &Repository,
    opts: &RepairIndexOptions,
    lock: &LockGuard,
    per_table: usize,
    before_removal: &dyn Fn(&IndexRepair),
) -> Result<IndexRepair> {
    let backend = repo.backend();
    let mut out = IndexRepair::default();
    // A pack in another folder than its name's is passed over by every
    // listing: indexed where it belongs, not dropped with its blobs.
    for (place, home) in backend.misplaced_packs()? {
        lock.confirm("nothing is changed; run it again")?;
        if backend.place_pack(&place)? {
            out.placed.push((place, home));
        } else if opts.read_data && backend.exchange_pack(&place)? {
            // Its copy home was damaged (not its name's hash), this one
            // intact: swapped, before every pack is read below.
            out.exchanged.push((place, home));
        } else {
            out.not_placed.push((place, home));
        }
    }
    let crate::verify::BadBlobs {
        mut bad,
        mut misnamed,
        not_their_hash,
        ..
    } = damaged_copies(repo, opts)?;
    let mut builder = IndexBuilder::default();
    let mut written: Vec<String> = Vec::new();
    let old: Vec<String> = backend.list(FileKind::Index)?;
    // Each table only under a lock confirmed just before: one whose lock
    // went stale may meanwhile have had a gc delete packs it names.
    // Every copy of a blob stored more than once is indexed, each in a
    // table of its own: which is intact is for reads (and gc) to find.
    let write = |mut builder: IndexBuilder, written: &mut Vec<String>| -> Result<()> {
        loop {
            let further = builder.split_duplicates();
            lock.confirm("the old index tables are kept; run it again")?;
            for (id, bytes) in builder.finish(repo.key(), repo.config().index_version()) {
                backend.write(FileKind::Index, &id.to_hex(), &bytes)?;
                written.push(id.to_hex());
            }
            if further.is_empty() {
                break;
            }
            builder = further;
        }
        Ok(())
    };
    // Old tables that can still be trusted, for packs without a header.
    let (old_set, unparsed) = IndexSet::load_lenient(backend)?;
    let (trusted, untrusted): (Vec<&IndexTable>, Vec<&IndexTable>) = old_set
        .tables()
        .iter()
        .partition(|t| t.check(repo.key()).is_ok());
    // A pack without a header is written again only while every old table
    // authenticates: one that does not may be all that names some of the
    // pack's blobs, and they would go with the pack.
    let whole_old_index = unparsed.is_empty() && trusted.len() == old_set.tables().len();
    // Packs written again, removed once the new tables stand.
    let mut superseded: Vec<PackId> = Vec::new();
    // Sizes come with the listing: no request per pack for them.
    let mut packs = backend.list_sizes(FileKind::Pack)?;
    // Intact copies in this host's cache mend what the store lost or
    // damaged, before anything is read or dropped for it.
    let cache = opts
        .cache_root
        .as_deref()
        .and_then(|root| Cache::existing(root, &repo.config().repo_id));
    out.put_back = put_back_from_cache(
        repo,
        cache.as_ref(),
        lock,
        &old_set,
        &not_their_hash,
        &mut packs,
    )?;
    if let Some(cache) = &cache {
        let rescued = put_back_rescues(repo, cache, lock, &old_set, &out.put_back, &mut packs)?;
        out.put_back.extend(rescued);
    }
    for p in &out.put_back {
        bad.retain(|(_, pack), _| *pack != p.pack);
        misnamed.retain(|pack| *pack != p.pack);
    }
    packs.sort();
    // No pack, while the old tables name some: a folder or a prefix the
    // copy left out, a listing gone wrong. Replacing the tables with
    // nothing would lose the only record of the blobs in packs whose
    // header is damaged, and mend nothing.
    if !packs.iter().any(|(n, _)| is_hex_name(n)) {
        let named = old_set
            .tables()
            .iter()
            .map(|t| t.pack_count())
            .sum::<usize>();
        if named > 0 {
            return Err(Error::Invalid(format!(
                "refusing to repair the index: the repository holds no pack, while its index \
                 names packs ({named} in its tables); if packs/ is missing, put it back from a \
                 copy of the repository; if every pack is truly lost, nothing can be restored \
                 from it, and `cairn init` of a new repository is the way on"
            )));
        }
    }
    // Packs the old tables name that are gone (lost, or left out by a
    // copy or a sync): said, as their blobs leave the index.
    let present: HashSet<&str> = packs.iter().map(|(n, _)| n.as_str()).collect();
    // Those an old table that fails its check names too: its pack list
    // may be damaged, but a pack it names gone may be what it held alone.
    let mut missing = std::collections::BTreeSet::new();
    for t in trusted.iter().chain(&untrusted) {
        for n in 0..t.pack_count() {
            let Ok((pack, _)) = t.pack(n) else { continue };
            if !present.contains(pack.to_hex().as_str()) {
                missing.insert(pack);
            }
        }
    }
    out.missing_packs = missing.into_iter().collect();
    // Blobs found damaged somewhere, and those of them indexed intact in
    // another pack: a few, not the repository's blobs.
    let bad_ids: HashSet<BlobId> = bad.keys().map(|(id, _)| *id).collect();
    let mut held: HashSet<BlobId> = HashSet::new();
    let mut unreadable: Vec<(PackId, u64, String)> = Vec::new();
    for (name, len) in packs.iter().filter(|(n, _)| is_hex_name(n)) {
        let id = PackId::from_hex(name)?;
        let what = format!("pack {}", id.short());
        let mut header = pack::read_header(backend, name, *len, repo.key(), &what);
        // A header damaged in a pack of the right size: an intact copy in
        // this host's cache mends it, where a rewrite would keep only the
        // blobs that open.
        if let (Err(e @ Error::Corrupt { .. }), Some(copy)) =
            (&header, cache.as_ref().and_then(|c| c.intact_pack(name)))
        {
            let reason = format!("its header damaged in the repository ({e})");
            lock.confirm("run it again")?;
            backend.write(FileKind::Pack, name, &copy)?;
            out.put_back.push(PutBack { pack: id, reason });
            header = pack::read_header(backend, name, *len, repo.key(), &what);
        }
        match header {
            // Intact under another name than its content's (renamed by
            // hand, or swapped with another pack): its blobs are copied
            // into a pack named by its content, and it goes, so that
            // `verify --read-data` finds every pack as named. Until
            // December 2026 it failed on such a pack at every run.
            Ok(h) if misnamed.contains(&id) => {
                let copies =
                    copy_out(repo, lock, (id, *len), h.kind, &h.entries, &mut out.dropped)?;
                let blobs = copies.iter().map(|(_, e)| e.len()).sum();
                for (copy, entries) in &copies {
                    builder.add_pack(*copy, h.kind, entries);
                    held.extend(entries.iter().map(|e| e.id).filter(|b| bad_ids.contains(b)));
                }
                out.blobs += blobs;
                out.packs += copies.len();
                out.rewritten.push(RewrittenPack {
                    pack: id,
                    reason: format!("{what}: its content does not match its name"),
                    misnamed: true,
                    blobs,
                    into: copies.iter().map(|(copy, _)| *copy).collect(),
                });
                superseded.push(id);
            }
            Ok(h) => {
                let entries = without_damaged(
                    (id, h.kind == BlobKind::Tree),
                    h.entries,
                    &bad,
                    &mut out.dropped,
                );
                held.extend(
                    entries
                        .iter()
                        .map(|e| e.id)
                        .filter(|id| bad_ids.contains(id)),
                );
                out.packs += 1;
                out.blobs += entries.len();
                builder.add_pack(id, h.kind, &entries);
            }
            Err(e @ Error::Corrupt { .. }) => unreadable.push((id, *len, format!("{what}: {e}"))),
            // Not the pack's fault (a timeout, a refused read): taken for
            // damage, an intact pack would keep only what old tables say
            // of it, none if the one naming it failed its check.
            Err(e) => {
                let again = if e.is_read_refused() {
                    "run it as a user who may read the whole repository"
                } else {
                    "run it again"
                };
                return Err(Error::Invalid(format!(
                    "cannot read the header of {what}: {e}; the old index tables are kept \
                     (tables written so far only add entries); {again}"
                )));
            }
        }
        if builder.len() >= per_table {
            write(std::mem::take(&mut builder), &mut written)?;
        }
    }
    // Packs whose header could not be read keep what the trusted old
    // tables say of them, gathered in one pass over those tables, but for
    // blobs that lie past the file's end: a pack cut short (a crash, a
    // full disk, a partial copy) lost them, and an entry kept would have
    // every later backup take their content as stored. Until December
    // 2026 they were kept, and such a backup wrote a snapshot that could
    // not be restored, exit 0.
    let ids: Vec<PackId> = unreadable.iter().map(|(id, _, _)| *id).collect();
    // What an old table that fails its check places there, too, but only
    // the blobs that open where it says (each read authenticates and
    // re-hashes): such a table is replaced by this repair, and until
    // December 2026 a blob only it named, intact, left the index with it,
    // and gc later deleted the pack.
    let checked = old_entries_of(&untrusted, &ids, true);
    let from_trusted = old_entries(&trusted, &ids);
    for (((id, len, why), (kind, entries)), (other_kind, others)) in
        unreadable.iter().zip(from_trusted).zip(checked)
    {
        let (kind, entries) =
            with_entries_that_open(repo, *id, (kind, entries), (other_kind, others), *len)?;
        let tree = kind == Some(BlobKind::Tree);
        let entries = without_damaged((*id, tree), entries, &bad, &mut out.dropped);
        let (entries, past_end): (Vec<PackEntry>, Vec<PackEntry>) = entries
            .into_iter()
            .partition(|e| u64::from(e.offset) + u64::from(e.length) <= *len);
        for e in past_end {
            out.dropped.push(DroppedBlob {
                blob: e.id,
                pack: *id,
                reason: format!(
                    "it lies past the pack's end, at byte {len}: the pack was cut short"
                ),
                tree,
            });
        }
        held.extend(
            entries
                .iter()
                .map(|e| e.id)
                .filter(|id| bad_ids.contains(id)),
        );
        let kept = entries.len();
        match kind {
            // Named by the old tables (so of a kind): written again, or,
            // where nothing of it can be kept (cut short before its first
            // blob's end, its blobs damaged), removed.
            Some(kind) if whole_old_index => {
                let copies = copy_out(repo, lock, (*id, *len), kind, &entries, &mut out.dropped)?;
                let blobs = copies.iter().map(|(_, e)| e.len()).sum();
                for (copy, entries) in &copies {
                    builder.add_pack(*copy, kind, entries);
                }
                out.blobs += blobs;
                out.packs += copies.len();
                out.rewritten.push(RewrittenPack {
                    pack: *id,
                    reason: why.clone(),
                    misnamed: false,
                    blobs,
                    into: copies.iter().map(|(copy, _)| *copy).collect(),
                });
                superseded.push(*id);
            }
            kind => {
                if let Some(kind) = kind {
                    builder.add_pack(*id, kind, &entries);
                }
                out.kept_entries += kept;
                out.unreadable.push(if kept == 0 {
                    format!("{why}; no old index table names a blob in it that opens there")
                } else if whole_old_index {
                    format!("{why}; kept its {kept} entries from the old index")
                } else {
                    format!(
                        "{why}; kept its {kept} entries from the old index, and left as it \
                         is while an old index table is damaged (it may name more of the \
                         pack's blobs)"
                    )
                });
            }
        }
        if builder.len() >= per_table {
            write(std::mem::take(&mut builder), &mut written)?;
        }
    }
    // Copies found damaged only in copying a pack out: intact elsewhere
    // if an old table places another copy, which opens, in a pack that is
    // there (one unread might be damaged too: "nothing is lost" was said
    // of blobs whose every copy was).
    for d in out.dropped.iter().filter(|d| !bad_ids.contains(&d.blob)) {
        let elsewhere = trusted.iter().any(|t| {
            t.find(&d.blob)
                .and_then(|i| t.location_at(i).ok())
                .is_some_and(|(_, loc)| {
                    loc.pack != d.pack
                        && !superseded.contains(&loc.pack)
                        && present.contains(loc.pack.to_hex().as_str())
                        && repo.read_located(&d.blob, loc).is_ok()
                })
        });
        if elsewhere {
            held.insert(d.blob);
        }
    }
    if !builder.is_empty() || written.is_empty() {
        write(builder, &mut written)?;
    }
    let lost =
        unindexed_now(backend, &written, (&trusted, &untrusted), &out.dropped).map_err(|e| {
            Error::Advised {
                error: Box::new(e),
                advice: "the new index tables are written and the old ones kept; run it again"
                    .into(),
            }
        })?;
    (
        out.unindexed_lost,
        out.unindexed_only_damaged,
        out.unindexed_trees,
        out.first_unindexed,
    ) = lost;
    out.damaged_tables = untrusted.iter().map(|t| t.id()).collect();
    out.written_tables = written.len();
    // A damaged table whose rebuilt content hashes to its name was
    // written again, not kept as it was.
    let damaged: Vec<String> = out.damaged_tables.iter().map(|t| t.to_hex()).collect();
    out.unchanged_tables = written
        .iter()
        .filter(|n| old.contains(n) && !damaged.contains(n))
        .count();
    out.rewritten_tables = written.iter().filter(|n| damaged.contains(n)).count();
    out.dropped.sort_by_key(|d| (d.pack, d.blob));
    out.dropped_held_elsewhere = out
        .dropped
        .iter()
        .filter(|d| held.contains(&d.blob))
        .count();
    before_removal(&out);
    crate::fault::point("repair-before-old-tables-removed");
    lock.confirm("the new index tables are written, the old ones are kept; run it again")?;
    for name in old
        .iter()
        .filter(|n| is_hex_name(n) && !written.contains(n))
    {
        backend.remove(FileKind::Index, name)?;
        out.removed_tables += 1;
    }
    // The packs written again go once no table names them, durably: one
    // coming back after a power cut would name a removed pack.
    if !superseded.is_empty() {
        backend.settle_removals()?;
        for pack in &superseded {
            lock.check("the index is rebuilt; run it again to remove the packs written again")?;
            backend.remove(FileKind::Pack, &pack.to_hex())?;
        }
        // A copy of one of them waiting out of its folder (left there, as
        // the folder held a file of its name) goes home now; its blobs
        // are indexed by the next repair.
        let (now, still): (Vec<_>, Vec<_>) = std::mem::take(&mut out.not_placed)
            .into_iter()
            .partition(|(place, _)| {
                let name = place.rsplit('/').next().unwrap_or_default();
                superseded.iter().any(|p| p.to_hex() == name)
            });
        out.not_placed = still;
        for (place, home) in now {
            if backend.place_pack(&place)? {
                out.placed_late.push((place, home));
            } else {
                out.not_placed.push((place, home));
            }
        }
    }
    Ok(out)
}

/// Copies the blobs `entries` place in `pack` (of its length), whose
/// header cannot be read, still sealed, into new packs of `kind` with a
/// header of their own; stores them and returns them with their entries,
/// to be indexed in its place. A copy that does not open (authenticate,
/// decompress, re-hash) is left out and added to `dropped`. Until
/// December 2026 such a pack kept its blobs indexed only through the old
/// tables: `verify --read-data` failed on it at every run, and a rebuild
/// of the index without those tables would have lost its blobs.
fn copy_out(
    repo: &Repository,
    lock: &LockGuard,
    (pack, len): (PackId, u64),
    kind: BlobKind,
    entries: &[PackEntry],
    dropped: &mut Vec<DroppedBlob>,
) -> Result<Vec<(PackId, Vec<PackEntry>)>> {
    let what = format!("pack {}", pack.short());
    // Up to the end of its last blob: what lies past it is the damaged
    // header (the entries lie inside the file, see the caller).
    let end = entries
        .iter()
        .map(|e| u64::from(e.offset) + u64::from(e.length))
        .max()
        .unwrap_or(0)
        .min(len);
    let data = match repo
        .backend()
        .read_range(FileKind::Pack, &pack.to_hex(), 0, end as usize)
    {
        Ok(data) => data,
        // No pack's bytes at all (a symlink to a device or a FIFO in its
        // place): nothing of it can be kept.
        Err(err @ Error::Corrupt { .. }) => {
            dropped.extend(entries.iter().map(|e| DroppedBlob {
                blob: e.id,
                pack,
                reason: err.to_string(),
                tree: kind == BlobKind::Tree,
            }));
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.unless_store_unavailable("the old index tables are kept")),
    };
    let mut copies = Vec::new();
    let mut w = pack::PackWriter::new(kind);
    let store = |w: pack::PackWriter, copies: &mut Vec<(PackId, Vec<PackEntry>)>| -> Result<()> {
        let mut copy = w.finish(repo.key())?;
        lock.check("the old index tables are kept; run it again")?;
        repo.store_pack(&mut copy)?;
        copies.push((copy.id, copy.header.entries));
        Ok(())
    };
    for e in entries {
        let sealed = (e.offset as usize)
            .checked_add(e.length as usize)
            .and_then(|end| data.get(e.offset as usize..end));
        let opened = match sealed {
            Some(sealed) => {
                pack::open_blob_with(repo.key(), &e.id, sealed, e.raw_length, &what, |_| ())
                    .map(|()| sealed)
            }
            None => Err(Error::corrupt(&what, "it lies past the pack's end")),
        };
        match opened {
            Ok(sealed) => {
                w.add_sealed(e.id, sealed, e.raw_length)?;
                if w.len() >= repo.config().pack_size as usize {
                    store(
                        std::mem::replace(&mut w, pack::PackWriter::new(kind)),
                        &mut copies,
                    )?;
                }
            }
            Err(err) => dropped.push(DroppedBlob {
                blob: e.id,
                pack,
                reason: err.to_string(),
                tree: kind == BlobKind::Tree,
            }),
        }
    }
    if !w.is_empty() {
        store(w, &mut copies)?;
    }
    Ok(copies)
}

/// The entries trusted old tables give for each of `packs`, and its kind,
/// in the order of `packs`: one pass over the tables, whatever the number
/// of packs.
fn old_entries(
    tables: &[&IndexTable],
    packs: &[PackId],
) -> Vec<(Option<BlobKind>, Vec<PackEntry>)> {
    old_entries_of(tables, packs, false)
}

/// [`old_entries`], or with `every`, every entry of a blob (tables that
/// fail their check may place it twice, one of them wrongly).
fn old_entries_of(
    tables: &[&IndexTable],
    packs: &[PackId],
    every: bool,
) -> Vec<(Option<BlobKind>, Vec<PackEntry>)> {
    let mut out: Vec<(Option<BlobKind>, Vec<PackEntry>)> = vec![(None, Vec::new()); packs.len()];
    if packs.is_empty() {
        return out;
    }
    let at: HashMap<PackId, usize> = packs.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut seen: Vec<HashSet<BlobId>> = vec![HashSet::new(); packs.len()];
    for t in tables {
        for i in 0..t.len() {
            let Ok((id, loc)) = t.location_at(i) else {
                continue;
            };
            let Some(&k) = at.get(&loc.pack) else {
                continue;
            };
            if !seen[k].insert(id) && !every {
                continue;
            }
            out[k].0 = Some(loc.kind);
            out[k].1.push(PackEntry {
                id,
                offset: loc.offset,
                length: loc.length,
                raw_length: loc.raw_length,
            });
        }
    }
    out
}

/// The tag a repaired copy carries naming its original, `repaired-from:`
/// and the original's full id; `repair snapshots` skips an original that
/// already has a copy.
pub const REPAIRED_FROM: &str = "repaired-from:";

/// What to salvage.
#[derive(Clone, Debug, Default)]
pub struct RepairSnapshotsOptions {
    /// Report without writing.
    pub dry_run: bool,
    /// Also read every pack first, so blobs that are present but damaged
    /// (failing authentication or their hash) count as missing too.
    pub read_data: bool,
    /// Worker threads for reading packs; 0 = one per core.
    pub workers: usize,
    /// The root of this host's metadata caches, if it has one: a damaged
    /// snapshot file is put back from an intact copy there.
    pub cache_root: Option<std::path::PathBuf>,
}

/// What `repair snapshots` did.
#[derive(Debug, Default, Serialize)]
pub struct SnapshotsRepair {
    /// Snapshots repaired (or, in a dry run, to be repaired).
    pub repaired: Vec<SnapshotRepair>,
    /// Damaged snapshots skipped because a repaired copy exists: (original,
    /// copy).
    pub skipped: Vec<(SnapshotId, SnapshotId)>,
    /// Snapshot files that do not decode: nothing in them can be read, so
    /// they are left as they are (the others are repaired all the same).
    pub damaged: Vec<DamagedSnapshot>,
    /// Damaged snapshot files put back (or, in a dry run, to be put back)
    /// from an intact copy in this host's cache, and repaired then like
    /// the others.
    pub put_back: Vec<SnapshotId>,
    /// Damaged copies of blobs (found with `read_data`) that the index
    /// still names: backups take them for stored until `repair index
    /// --read-data` drops them.
    pub damaged_indexed: usize,
}

/// One snapshot rewritten by `repair snapshots`.
#[derive(Debug, Serialize)]
pub struct SnapshotRepair {
    /// The damaged original (kept).
    pub original: SnapshotId,
    /// The repaired copy.
    pub repaired: SnapshotId,
    /// Paths dropped because their data is missing or damaged (the
    /// first [`SAID`]).
    pub dropped: Vec<String>,
    /// How many more were dropped than `dropped` says.
    pub dropped_more: u64,
}

/// Rewrites every snapshot whose trees reference missing blobs (not
/// indexed in a pack that exists) or, with `read_data`, damaged
/// ones, dropping only the damaged files (and unreadable directories'
/// contents), each counted on its folder's node as left out by the
/// backup (see [`Node::left_out`]), and their sizes taken off the
/// summary's total. The originals are kept; the new snapshots carry the tags
/// `repaired` and [`REPAIRED_FROM`]`<original id>`, and the original's time
/// plus one nanosecond, so that they, not the originals, are the newer. A snapshot that already
/// has a repaired copy is skipped, so running this twice writes nothing
/// new. With `dry_run` nothing is written.
pub fn repair_snapshots(
    repo: &Repository,
    opts: &RepairSnapshotsOptions,
    lock: &LockGuard,
) -> Result<SnapshotsRepair> {
    let dry_run = opts.dry_run;
    let backend = repo.backend();
    // Read in the reverse of a backup's write order (packs, then index
    // tables, then the snapshot), as verify does: a backup finishing
    // meanwhile has all a snapshot listed here needs in the index and
    // the packs read after, so its sound files are never taken for lost.
    let cache = opts
        .cache_root
        .as_deref()
        .and_then(|root| Cache::existing(root, &repo.config().repo_id));
    let mut loaded = repo.snapshots()?;
    let put_back = put_back_snapshots(repo, cache.as_ref(), opts, lock, &loaded.damaged)?;
    if !put_back.is_empty() && !dry_run {
        loaded = repo.snapshots()?;
    }
    let snapshots: Vec<SnapshotEntry> = loaded.good;
    let index = repo.index()?;
    // A damaged table's entries would have blobs intact in their packs
    // taken for lost, and dropped from the copies.
    repo.require_sound_index("repair snapshots")?;
    let mut packs = HashMap::new();
    for (name, size) in backend.list_sizes(FileKind::Pack)? {
        if is_hex_name(&name) {
            packs.insert(PackId::from_hex(&name)?, size);
        }
    }
    // Packs the index names that the store lacks: an entry naming one
    // locates nothing. A blob stored again elsewhere is read from there
    // (see `IndexSet::locate_kind_where`), and a blob whose only entries
    // name lost packs is missing: dropped if it is a chunk, and stored
    // anew, not taken for stored, if it is a tree this writes.
    let mut lost = IdSet::default();
    for table in index.tables() {
        for n in 0..table.pack_count() {
            let (pack, _) = table.pack(n)?;
            if !packs.contains_key(&pack) {
                lost.insert(pack);
            }
        }
    }
    let (bad, not_their_hash) = if opts.read_data {
        let found = every_bad_blob(repo, opts.workers)?;
        (found.bad, found.not_their_hash)
    } else {
        (HashMap::new(), Vec::new())
    };
    // Before anything is written, and with what the read found damaged.
    if let Some(cache) = &cache {
        refuse_over_intact_copies(repo, cache, &index, &packs, &not_their_hash)?;
    }
    // A chunk is read from its first entry in a pack that exists (as a
    // restore reads it), so that entry's blob must be sound.
    let available = |id: &BlobId| -> bool {
        matches!(index.locate_kind_where(id, BlobKind::Data, &|p| !lost.contains(p)),
            Ok(Some(loc)) if !bad.contains_key(&(*id, loc.pack)))
    };
    let raw_len = |id: &BlobId| match index.lookup(id) {
        Ok(Some(loc)) => Some(u64::from(loc.raw_length)),
        _ => None,
    };
    // Checked before each pack and confirmed before each index table, as
    // a backup's.
    let writer = BlobWriter::new(repo)
        .without_packs(lost.clone())
        .locked(lock);
    let mut out = SnapshotsRepair {
        damaged: loaded.damaged,
        put_back,
        damaged_indexed: bad
            .keys()
            .filter(|(id, pack)| {
                matches!(
                    index.locate_kind_where(id, BlobKind::Data, &|p| p == pack),
                    Ok(Some(_))
                )
            })
            .count(),
        ..SnapshotsRepair::default()
    };
    let mut memo: HashMap<BlobId, (BlobId, Dropped)> = HashMap::new();
    let copies: HashMap<String, SnapshotId> = snapshots
        .iter()
        .flat_map(|e| {
            e.snapshot
                .tags
                .iter()
                .filter_map(|t| t.strip_prefix(REPAIRED_FROM))
                .map(|orig| (orig.to_string(), e.id))
        })
        .collect();
    let mut new_snaps = Vec::new();
    for e in &snapshots {
        // Its copy was written without what was damaged then; it is not
        // rewritten again (a copy that is itself damaged is repaired in
        // its own right).
        if let Some(copy) = copies.get(&e.id.to_hex()) {
            out.skipped.push((e.id, *copy));
            continue;
        }
        let mut rw = Rewriter {
            repo,
            cache: cache.as_ref(),
            writer: &writer,
            available: &available,
            raw_len: &raw_len,
            memo: &mut memo,
            dry_run,
        };
        let (root, dropped) = rw
            .tree(&e.snapshot.tree, "")
            .map_err(|e| e.unless_store_unavailable("no snapshot is repaired"))?;
        if dropped.is_empty() {
            continue;
        }
        // What was dropped of `/` itself has no node to say so, as a
        // backup's entries left out of it have none.
        let Dropped {
            paths: dropped,
            more,
            bytes,
            entries,
            kept,
        } = dropped;
        let mut snap: Snapshot = e.snapshot.clone();
        snap.tree = root;
        // One nanosecond after its original, so every ordering by
        // (time, id) (a backup's parent, `latest`, retention) takes the
        // copy as the newer of the two, whichever id is larger.
        snap.time_ns = e.snapshot.time_ns.saturating_add(1);
        snap.tags.retain(|t| !t.starts_with(REPAIRED_FROM));
        if !snap.tags.iter().any(|t| t == "repaired") {
            snap.tags.push("repaired".into());
        }
        snap.tags.push(format!("{REPAIRED_FROM}{}", e.id.to_hex()));
        snap.summary.errors += dropped.len() as u64 + more;
        // Those of a folder that could not be read are not known: then
        // the copy's are counted (the original's were kept until December
        // 2026, and listed as its size).
        snap.summary.total_bytes = if entries == LEFT_OUT_UNKNOWN {
            kept
        } else {
            snap.summary.total_bytes.saturating_sub(bytes)
        };
        let (id, bytes) = snap.encode(repo.key());
        new_snaps.push((id, bytes));
        out.repaired.push(SnapshotRepair {
            original: e.id,
            repaired: id,
            dropped,
            dropped_more: more,
        });
    }
    if dry_run {
        return Ok(out);
    }
    writer.finish()?;
    for (id, bytes) in new_snaps {
        lock.confirm("the snapshots not yet written are not repaired; run it again")?;
        backend.write(FileKind::Snapshot, &id.to_hex(), &bytes)?;
    }
    Ok(out)
}

struct Rewriter<'a, 'r> {
    repo: &'r Repository,
    /// This host's cache: a tree the store gives damaged that a copy there
    /// holds intact stops the repair (see
    /// [`crate::repo::rescue::cached_tree`]).
    cache: Option<&'a Cache>,
    writer: &'a BlobWriter<'r>,
    available: &'a dyn Fn(&BlobId) -> bool,
    /// A chunk's length as the index has it.
    raw_len: &'a dyn Fn(&BlobId) -> Option<u64>,
    memo: &'a mut HashMap<BlobId, (BlobId, Dropped)>,
    dry_run: bool,
}

/// What a repair dropped of a directory's tree (or of a part of it).
#[derive(Clone, Default)]
struct Dropped {
    /// The paths dropped at or beneath it, each with why: the first
    /// [`SAID`] of them.
    paths: Vec<String>,
    /// How many more were dropped than `paths` holds.
    more: u64,
    /// How many of the directory's own entries were dropped, added to
    /// the count of those its backup left out on its node (see
    /// [`Node::left_out`]): a mirror restore of the copy then leaves
    /// what the target holds there, which may be just those, intact.
    /// [`LEFT_OUT_UNKNOWN`] when how many is not known (its tree, or a
    /// part of it, could not be read). Until December 2026 nothing was
    /// added, and a mirror of the copy over the live tree removed the
    /// very files the repair could not save.
    entries: u64,
    /// Bytes of the files dropped at or beneath it, but those of a tree
    /// that could not be read, which are not known.
    bytes: u64,
    /// Bytes of the files kept at or beneath it: the copy's size where
    /// what was dropped is not known.
    kept: u64,
}

/// The most paths a repair of one snapshot keeps to say (each folder's
/// too): a list of parts repeating one part thousands of times made a
/// line (and a string in memory, for each folder it was met in) per entry
/// it repeated, gigabytes for a list of a few hundred KiB (until December
/// 2026).
const SAID: usize = 1000;

/// The most paths remembered of a tree for other snapshots that share it
/// (see [`Dropped::remembered`]).
const REMEMBERED: usize = 16;

impl Dropped {
    fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.more == 0
    }

    /// A copy to remember for another snapshot sharing the tree: its
    /// first [`REMEMBERED`] paths, the rest counted. Every tree of a deep
    /// chain remembered up to [`SAID`] paths as long as the chain below
    /// it: a gigabyte for 1,000 dropped files at depth 1,000 (until
    /// December 2026).
    fn remembered(&self) -> Dropped {
        // At most REMEMBERED paths, and 4 KiB of them: a path deep in a
        // chain of long names is long itself.
        let mut bytes = 0;
        let kept = self
            .paths
            .iter()
            .take(REMEMBERED)
            .take_while(|p| {
                bytes += p.len();
                bytes <= 4096
            })
            .count();
        Dropped {
            paths: self.paths[..kept].to_vec(),
            more: self.more.saturating_add((self.paths.len() - kept) as u64),
            entries: self.entries,
            bytes: self.bytes,
            kept: self.kept,
        }
    }

    /// Says `path`, if fewer than [`SAID`] are; else counts it.
    fn say(&mut self, path: String) {
        if self.paths.len() < SAID {
            self.paths.push(path);
        } else {
            self.more = self.more.saturating_add(1);
        }
    }

    /// The directory's entry `node` dropped, said by `path` (its path,
    /// with why when it is not that its data is missing).
    fn entry(&mut self, node: &Node, path: String) {
        self.say(path);
        self.entries = self.entries.saturating_add(1);
        if let NodeKind::File { .. } = node.kind {
            self.bytes = self.bytes.saturating_add(node.size);
        }
    }

    /// Entries of the directory dropped in a way that leaves how many
    /// unknown, said by `path`.
    fn unknown(&mut self, path: String) {
        self.say(path);
        self.entries = LEFT_OUT_UNKNOWN;
    }

    /// What was dropped of a part of the directory, or (`own` false) of
    /// a directory beneath it, whose node counts its own entries.
    fn add(&mut self, other: Dropped, own: bool) {
        for path in other.paths {
            self.say(path);
        }
        self.more = self.more.saturating_add(other.more);
        if own {
            self.entries = self.entries.saturating_add(other.entries);
        }
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.kept = self.kept.saturating_add(other.kept);
    }
}

impl Rewriter<'_, '_> {
    /// Refuses, where tree blob `id` (a folder's, a part's, or a list of
    /// parts) cannot be read from the store (`e`) but this host's cache
    /// holds its pack intact (see [`crate::repo::rescue::cached_tree`]):
    /// the copies would be written without it, and an operator who then
    /// forgets the originals loses it with the next gc. A folder stored
    /// in parts escaped this until December 2026.
    fn refuse_over_cached(&self, id: &BlobId, e: &Error) -> Result<()> {
        let Some((pack, copy)) = self
            .cache
            .and_then(|c| crate::repo::rescue::cached_tree(self.repo, c, id))
        else {
            return Ok(());
        };
        Err(Error::Invalid(format!(
            "refusing to repair snapshots: tree {} cannot be read from pack {} ({e}), but this \
             host's cache holds an intact copy of the pack ({}); `cairn repair index \
             --read-data`, run on this host, puts it back first (a repair of the snapshots now \
             would write them without that tree)",
            id.short(),
            pack.short(),
            copy.display()
        )))
    }

    /// The repaired id of tree `id` at `path`, and what was dropped in it
    /// (its paths with `path` before them).
    fn tree(&mut self, id: &BlobId, path: &str) -> Result<(BlobId, Dropped)> {
        let (new, mut dropped) = match self.memo.get(id) {
            // Same tree elsewhere: same repair.
            Some((new, dropped)) => (*new, dropped.clone()),
            None => {
                let repaired = match self.repo.load_tree_blob(id) {
                    Ok(TreeBlob::Parts(parts)) => self.parts(id, &parts)?,
                    Ok(TreeBlob::Nodes(tree)) => {
                        let (nodes, dropped) =
                            self.nodes(tree.into_nodes().collect::<Result<_>>()?)?;
                        if dropped.is_empty() {
                            (*id, dropped)
                        } else {
                            (self.store(&Tree::new(nodes).encode())?, dropped)
                        }
                    }
                    Err(e) if matches!(e, Error::NotFound(_) | Error::Corrupt { .. }) => {
                        self.refuse_over_cached(id, &e)?;
                        let empty = self.store(&Tree::new(Vec::new()).encode())?;
                        let mut dropped = Dropped::default();
                        dropped.unknown(format!(" (directory unreadable: {e})"));
                        (empty, dropped)
                    }
                    Err(e) => return Err(e),
                };
                self.memo.insert(*id, (repaired.0, repaired.1.remembered()));
                repaired
            }
        };
        for d in &mut dropped.paths {
            d.insert_str(0, path);
        }
        Ok((new, dropped))
    }

    /// The repaired id of a directory stored in `parts` (list `id`), and
    /// the paths dropped in it: each part is repaired as a tree of the
    /// same directory, and the parts are made one directory again, as a
    /// restore reads them: an entry whose name is not after every name in
    /// the parts before it is dropped, and so is a part that cannot be
    /// read or is itself a list of parts; parts left empty are dropped,
    /// and a directory left in one part is that part's tree.
    fn parts(&mut self, id: &BlobId, parts: &[BlobId]) -> Result<(BlobId, Dropped)> {
        let mut kept = Vec::with_capacity(parts.len());
        let mut dropped = Dropped::default();
        let mut last: Option<Vec<u8>> = None;
        // The entries kept so far, by name, each with its encoding's hash:
        // one repeated whole in a later part (a part listed twice, say)
        // loses nothing, and is not counted as left out, which would stop
        // a mirror of the copy pruning the folder.
        let mut kept_names: HashMap<Vec<u8>, blake3::Hash> = HashMap::new();
        let digest = |node: &Node| blake3::hash(&Tree::new(vec![node.clone()]).encode());
        for part in parts {
            let nodes = match self.repo.load_tree_blob(part) {
                Ok(TreeBlob::Nodes(tree)) => tree.into_nodes().collect::<Result<Vec<Node>>>()?,
                Ok(TreeBlob::Parts(_)) => {
                    dropped.unknown(format!(
                        " (part {} of the directory, itself a list of parts)",
                        part.short()
                    ));
                    continue;
                }
                Err(e) if matches!(e, Error::NotFound(_) | Error::Corrupt { .. }) => {
                    self.refuse_over_cached(part, &e)?;
                    dropped.unknown(format!(" (part {} unreadable: {e})", part.short()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Which a restore refuses: said, so that the copy is written.
            if nodes.is_empty() {
                dropped.say(format!(" (part {} of the directory, empty)", part.short()));
                continue;
            }
            let read = nodes.len();
            let mut in_order = Vec::with_capacity(read);
            for node in nodes {
                if last.as_ref().is_some_and(|l| node.name.0 <= *l) {
                    if kept_names.get(&node.name.0) == Some(&digest(&node)) {
                        dropped.say(format!(
                            "/{} (repeated in a later part: the first is kept, and nothing \
                             is lost)",
                            node.name
                        ));
                        continue;
                    }
                    let why = format!(
                        "/{} (named again, or out of order, in a later part)",
                        node.name
                    );
                    dropped.entry(&node, why);
                    continue;
                }
                last = Some(node.name.0.clone());
                kept_names.insert(node.name.0.clone(), digest(&node));
                in_order.push(node);
            }
            let ordered = in_order.len() == read;
            let (nodes, d) = self.nodes(in_order)?;
            let changed = !d.is_empty() || !ordered;
            dropped.add(d, true);
            if nodes.is_empty() {
                continue;
            }
            kept.push(if changed {
                self.store(&Tree::new(nodes).encode())?
            } else {
                *part
            });
        }
        let new = match kept.len() {
            _ if kept == parts => *id,
            0 => self.store(&Tree::new(Vec::new()).encode())?,
            1 => kept[0],
            _ => self.store(&Parts::encode(&kept))?,
        };
        Ok((new, dropped))
    }

    /// Stores a repaired tree blob (names it only, on a dry run).
    fn store(&self, bytes: &[u8]) -> Result<BlobId> {
        if self.dry_run {
            Ok(self.repo.key().blob_id(bytes))
        } else {
            Ok(self.writer.add(BlobKind::Tree, bytes)?.0)
        }
    }

    /// Repaired nodes of a tree and what was dropped of it, the paths
    /// relative to it.
    fn nodes(&mut self, tree: Vec<Node>) -> Result<(Vec<Node>, Dropped)> {
        let mut nodes = Vec::with_capacity(tree.len());
        let mut dropped = Dropped::default();
        for mut node in tree {
            let rel = format!("/{}", node.name);
            match &node.kind {
                NodeKind::File { chunks } if !chunks.iter().all(|c| (self.available)(c)) => {
                    dropped.entry(&node, rel);
                    continue;
                }
                // Which a restore cannot write whole either.
                NodeKind::File { chunks } => {
                    let held = chunks
                        .iter()
                        .try_fold(0u64, |sum, c| Some(sum.saturating_add((self.raw_len)(c)?)));
                    if let Some(held) = held.filter(|&h| h != node.size) {
                        let why = format!(
                            "{rel} (its chunks hold {held} bytes, its entry says {})",
                            node.size
                        );
                        dropped.entry(&node, why);
                        continue;
                    }
                    dropped.kept = dropped.kept.saturating_add(node.size);
                }
                NodeKind::Dir { subtree } => {
                    let subtree = *subtree;
                    let (new, d) = self.tree(&subtree, &rel)?;
                    node.kind = NodeKind::Dir { subtree: new };
                    node.size = node.left_out().saturating_add(d.entries);
                    dropped.add(d, false);
                }
                _ => {}
            }
            nodes.push(node);
        }
        Ok((nodes, dropped))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// What a repair says of the paths it drops stays within [`SAID`]
    /// lines however many are dropped, and counts the rest, merged from
    /// parts and folders beneath alike.
    #[test]
    fn dropped_paths_said_are_bounded_and_the_rest_counted() {
        let mut part = Dropped::default();
        for i in 0..SAID + 5 {
            part.say(format!("/f{i}"));
        }
        assert_eq!((part.paths.len(), part.more), (SAID, 5));
        let mut folder = Dropped::default();
        folder.say("/first".into());
        folder.add(part, true);
        assert_eq!(folder.paths.len(), SAID);
        assert_eq!(folder.paths[0], "/first");
        assert_eq!(folder.more, 6);
        assert!(!folder.is_empty());
        // Remembered for other snapshots: a few paths, the count whole.
        let kept = folder.remembered();
        assert_eq!(kept.paths, folder.paths[..REMEMBERED].to_vec());
        assert_eq!(
            kept.paths.len() as u64 + kept.more,
            folder.paths.len() as u64 + folder.more
        );
        // And at most 4 KiB of them: long paths deep in a chain.
        let mut deep = Dropped::default();
        for i in 0..10 {
            deep.say(format!("/{}{i}", "a".repeat(1500)));
        }
        let kept = deep.remembered();
        assert_eq!((kept.paths.len(), kept.more), (2, 8));
    }
    use crate::backend::mem::MemBackend;
    use crate::backend::testing::{noise, repo_of_small_packs, Hooked, Hooks};
    use crate::backend::{Backend, Data};

    /// Hooks refusing to read a pack whole, as an object store should
    /// never be asked to for a pack's header.
    struct RangesOnly;

    impl Hooks for RangesOnly {
        fn read(&self, kind: FileKind, name: &str) -> Option<Result<Data>> {
            (kind == FileKind::Pack).then(|| Err(Error::Invalid(format!("pack {name} read whole"))))
        }
    }

    /// A repository on a store with [`RangesOnly`] hooks holding 40 raw blobs of
    /// 100 kB, about ten to each pack of 1 MiB; their ids.
    fn repo_of_packs() -> (Arc<dyn Backend>, Repository, Vec<BlobId>) {
        let backend: Arc<dyn Backend> = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: RangesOnly,
        });
        let repo = repo_of_small_packs(backend.clone());
        let writer = BlobWriter::new(&repo);
        let ids: Vec<BlobId> = (0..40)
            .map(|i: u32| {
                writer
                    .add(BlobKind::Data, &noise(&i.to_le_bytes(), 100_000))
                    .unwrap()
                    .0
            })
            .collect();
        writer.finish().unwrap();
        (backend, repo, ids)
    }

    fn exclusive(backend: &Arc<dyn Backend>, repo: &Repository) -> LockGuard {
        crate::repo::lock::acquire(
            backend.clone(),
            repo.key(),
            true,
            "repair index",
            std::time::Duration::ZERO,
        )
        .unwrap()
    }

    /// `repair snapshots` holds a shared lock, so backups finish beside
    /// it: one landing just before it lists snapshots, index tables or
    /// packs has its sound files taken for lost in no copy.
    #[test]
    fn a_backup_finishing_during_repair_snapshots_is_not_repaired() {
        use crate::backend::testing::racing_backup_on_first_list;

        for kind in [FileKind::Snapshot, FileKind::Index, FileKind::Pack] {
            let (store, backend, _src) = racing_backup_on_first_list(kind);

            let repo = Repository::open(backend.clone(), b"pw").unwrap();
            let lock = crate::repo::lock::acquire(
                backend.clone(),
                repo.key(),
                false,
                "repair snapshots",
                std::time::Duration::ZERO,
            )
            .unwrap();
            let out = repair_snapshots(&repo, &RepairSnapshotsOptions::default(), &lock).unwrap();
            assert!(store.hooks.done(), "{kind:?}: no backup ran");
            assert!(
                out.repaired.is_empty(),
                "a backup before listing {kind:?}: {:?}",
                out.repaired
            );
            assert_eq!(backend.list(FileKind::Snapshot).unwrap().len(), 2);
        }
    }

    #[test]
    fn repair_index_reads_pack_headers_by_ranges_into_bounded_tables() {
        let (backend, repo, ids) = repo_of_packs();
        let packs = backend.list(FileKind::Pack).unwrap().len();
        assert!(packs >= 4, "{packs} packs");
        let old = backend.list(FileKind::Index).unwrap();
        assert_eq!(old.len(), 1);

        let lock = exclusive(&backend, &repo);
        let r =
            repair_index_in_tables_of(&repo, &RepairIndexOptions::default(), &lock, 15, &|_| {})
                .unwrap();
        assert!(r.unreadable.is_empty(), "{:?}", r.unreadable);
        assert_eq!((r.packs, r.blobs, r.removed_tables), (packs, 40, 1));
        let tables = backend.list(FileKind::Index).unwrap();
        assert_eq!(r.written_tables, tables.len());
        assert!(tables.len() >= 2, "{tables:?}");
        assert!(!tables.contains(&old[0]));

        repo.reload_index();
        let index = repo.index().unwrap();
        // A table is closed after the pack that brings it to 15 entries.
        for t in index.tables() {
            assert!(t.len() < 15 + 11, "a table of {} entries", t.len());
        }
        for id in &ids {
            assert!(index.contains(id), "{} lost", id.short());
        }
    }

    /// A table that fails its check, whose rebuilt content hashes to its
    /// own name again, is written again: counted as replaced, not as kept
    /// as it was (the summary said "already held just that" beside the
    /// warning that it was replaced).
    #[test]
    fn a_damaged_table_rebuilt_under_its_own_name_counts_as_replaced() {
        let (backend, repo, _) = repo_of_packs();
        let lock = exclusive(&backend, &repo);
        let opts = RepairIndexOptions::default();
        // Tables as a rebuild writes them, which a second one keeps.
        repair_index(&repo, &opts, &lock, &|_| {}).unwrap();
        let r = repair_index(&repo, &opts, &lock, &|_| {}).unwrap();
        assert_eq!(r.unchanged_tables, r.written_tables);
        assert_eq!((r.removed_tables, r.rewritten_tables), (0, 0));
        let tables = backend.list(FileKind::Index).unwrap();
        let name = &tables[0];
        let mut bytes = backend.read(FileKind::Index, name).unwrap().to_vec();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x10;
        backend.remove(FileKind::Index, name).unwrap();
        backend.write(FileKind::Index, name, &bytes).unwrap();

        repo.reload_index();
        let r = repair_index(&repo, &opts, &lock, &|_| {}).unwrap();
        assert_eq!(r.damaged_tables.len(), 1, "{r:?}");
        assert_eq!(r.rewritten_tables, 1, "{r:?}");
        assert_eq!(r.unchanged_tables, r.written_tables - 1, "{r:?}");
        assert_eq!(backend.list(FileKind::Index).unwrap(), tables);
        let again = backend.read(FileKind::Index, name).unwrap().to_vec();
        assert_ne!(again, bytes, "the damaged table is written again");
    }

    /// Fails reads of one pack as a store that timed out does, once it
    /// has been read a number of times (none: from the first).
    #[derive(Default)]
    struct TimeoutAfter(std::sync::Mutex<(Option<String>, usize)>);

    impl Hooks for TimeoutAfter {
        fn read_range(&self, kind: FileKind, name: &str) -> Option<Result<Vec<u8>>> {
            let mut state = self.0.lock().unwrap();
            if kind != FileKind::Pack || state.0.as_deref() != Some(name) {
                return None;
            }
            if state.1 > 0 {
                state.1 -= 1;
                return None;
            }
            Some(Err(Error::Invalid(format!(
                "reading pack {name}: timed out"
            ))))
        }
    }

    /// A repository of small packs on a store that fails reads when told
    /// to ([`TimeoutAfter`]), holding twenty data blobs.
    struct FailingStore {
        hooked: Arc<Hooked<MemBackend, TimeoutAfter>>,
        backend: Arc<dyn Backend>,
        repo: Repository,
        /// The blobs' ids.
        ids: Vec<BlobId>,
        /// The packs' names, sorted.
        packs: Vec<String>,
    }

    fn twenty_blobs_on_a_failing_store() -> FailingStore {
        let hooked = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: TimeoutAfter::default(),
        });
        let backend: Arc<dyn Backend> = hooked.clone();
        let repo = repo_of_small_packs(backend.clone());
        let writer = BlobWriter::new(&repo);
        let ids: Vec<BlobId> = (0..20u32)
            .map(|i| {
                let data = noise(&i.to_le_bytes(), 100_000);
                writer.add(BlobKind::Data, &data).unwrap().0
            })
            .collect();
        writer.finish().unwrap();
        let mut packs = backend.list(FileKind::Pack).unwrap();
        packs.sort();
        FailingStore {
            hooked,
            backend,
            repo,
            ids,
            packs,
        }
    }

    /// A pack cut short that only a table failing its check names: a
    /// read of one of its blobs that the store fails (a timeout) stops the
    /// repair with the old tables kept. Taken for an entry that does not
    /// open, it dropped an intact blob, and the next repair deleted the
    /// pack (until December 2026).
    #[test]
    fn a_failed_read_of_a_blob_a_damaged_table_places_stops_the_repair() {
        let FailingStore {
            hooked,
            backend,
            repo,
            packs,
            ..
        } = twenty_blobs_on_a_failing_store();
        let index = repo.index().unwrap();
        let pack = PackId::from_hex(&packs[1]).unwrap();
        let first_end = (0..index.tables()[0].len())
            .filter_map(|i| index.tables()[0].location_at(i).ok())
            .filter(|(_, l)| l.pack == pack)
            .map(|(_, l)| (l.offset, l.offset + l.length))
            .min()
            .unwrap()
            .1;
        // Cut short after its first blob, and the one table's MAC damaged.
        let bytes = backend.read(FileKind::Pack, &packs[1]).unwrap().to_vec();
        backend.remove(FileKind::Pack, &packs[1]).unwrap();
        backend
            .write(FileKind::Pack, &packs[1], &bytes[..first_end as usize])
            .unwrap();
        let old = backend.list(FileKind::Index).unwrap();
        assert_eq!(old.len(), 1);
        let mut table = backend.read(FileKind::Index, &old[0]).unwrap().to_vec();
        let last = table.len() - 1;
        table[last] ^= 1;
        backend.remove(FileKind::Index, &old[0]).unwrap();
        backend.write(FileKind::Index, &old[0], &table).unwrap();
        // Its header's two reads go through, the blob's fails.
        *hooked.hooks.0.lock().unwrap() = (Some(packs[1].clone()), 2);

        let lock = exclusive(&backend, &repo);
        let e =
            repair_index_in_tables_of(&repo, &RepairIndexOptions::default(), &lock, 15, &|_| {})
                .unwrap_err()
                .to_string();
        assert!(e.contains("timed out"), "{e}");
        assert_eq!(backend.list(FileKind::Index).unwrap(), old, "{e}");
        assert!(backend.list(FileKind::Pack).unwrap().contains(&packs[1]));
    }

    /// A pack whose header cannot be read for a reason that is not its
    /// own (a timeout) stops the repair with the old tables kept: taken
    /// for damage, its entries would have come only from tables whose
    /// check passes, none if the one naming it is the damaged table that
    /// made the operator run the repair.
    #[test]
    fn repair_index_stops_keeping_the_old_tables_when_a_header_read_fails() {
        let FailingStore {
            hooked,
            backend,
            repo,
            ids,
            packs,
        } = twenty_blobs_on_a_failing_store();
        let old = backend.list(FileKind::Index).unwrap();
        *hooked.hooks.0.lock().unwrap() = (Some(packs[1].clone()), 0);

        let lock = exclusive(&backend, &repo);
        let e =
            repair_index_in_tables_of(&repo, &RepairIndexOptions::default(), &lock, 15, &|_| {})
                .unwrap_err();
        let e = e.to_string();
        assert!(e.contains("timed out"), "{e}");
        assert!(e.contains("the old index tables are kept"), "{e}");
        let now = backend.list(FileKind::Index).unwrap();
        assert!(old.iter().all(|t| now.contains(t)), "{old:?} → {now:?}");
        repo.reload_index();
        let index = repo.index().unwrap();
        for id in &ids {
            assert!(index.contains(id), "{} lost", id.short());
        }
    }

    /// `--read-data` leaves out the one blob whose bytes were flipped and
    /// nothing else: its pack stays, its other blobs indexed. A plain
    /// rebuild keeps it, as the pack's header still lists it.
    #[test]
    fn repair_index_read_data_drops_only_the_damaged_copy() {
        let backend: Arc<dyn Backend> = Arc::new(MemBackend::default());
        let repo = repo_of_small_packs(backend.clone());
        let writer = BlobWriter::new(&repo);
        let ids: Vec<BlobId> = (0..20)
            .map(|i: u32| {
                let data = noise(&i.to_le_bytes(), 100_000);
                writer.add(BlobKind::Data, &data).unwrap().0
            })
            .collect();
        writer.finish().unwrap();
        let victim = ids[7];
        let loc = repo.locate(&victim).unwrap();
        let name = loc.pack.to_hex();
        let len = backend.size(FileKind::Pack, &name).unwrap() as usize;
        let mut bytes = backend.read_range(FileKind::Pack, &name, 0, len).unwrap();
        bytes[(loc.offset + loc.length / 2) as usize] ^= 1;
        backend.write(FileKind::Pack, &name, &bytes).unwrap();
        let lock = exclusive(&backend, &repo);

        let plain =
            repair_index_in_tables_of(&repo, &RepairIndexOptions::default(), &lock, 15, &|_| {});
        assert!(plain.unwrap().dropped.is_empty());
        repo.reload_index();
        assert!(repo.index().unwrap().contains(&victim));

        let opts = RepairIndexOptions {
            read_data: true,
            workers: 2,
            cache_root: None,
        };
        let r = repair_index_in_tables_of(&repo, &opts, &lock, 15, &|_| {}).unwrap();
        assert_eq!(r.dropped.len(), 1, "{:?}", r.dropped);
        assert_eq!((r.dropped[0].blob, r.dropped[0].pack), (victim, loc.pack));
        assert!(
            r.dropped[0].reason.contains("authentication"),
            "{:?}",
            r.dropped
        );
        assert_eq!(r.blobs, 19);
        repo.reload_index();
        let index = repo.index().unwrap();
        assert!(!index.contains(&victim));
        for id in ids.iter().filter(|id| **id != victim) {
            assert!(index.contains(id), "{} lost", id.short());
        }
        assert!(backend.size(FileKind::Pack, &name).is_ok(), "the pack went");
    }

    /// A pack `--read-data` cannot read (here: no whole reads at all)
    /// had its blobs unchecked: the repair stops before writing anything.
    #[test]
    fn repair_index_read_data_stops_when_a_pack_cannot_be_read() {
        let (backend, repo, ids) = repo_of_packs();
        let old = backend.list(FileKind::Index).unwrap();
        let lock = exclusive(&backend, &repo);
        let opts = RepairIndexOptions {
            read_data: true,
            workers: 2,
            cache_root: None,
        };
        let e = repair_index_in_tables_of(&repo, &opts, &lock, 15, &|_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read pack"), "{e}");
        assert!(e.contains("nothing is changed"), "{e}");
        assert_eq!(backend.list(FileKind::Index).unwrap(), old);
        repo.reload_index();
        let index = repo.index().unwrap();
        for id in &ids {
            assert!(index.contains(id), "{} lost", id.short());
        }
    }

    /// So does `repair snapshots --read-data`: until December 2026 it
    /// passed over such a pack without a word, its blobs taken as sound.
    #[test]
    fn repair_snapshots_read_data_stops_when_a_pack_cannot_be_read() {
        let (backend, repo, _) = repo_of_packs();
        let snapshots = backend.list(FileKind::Snapshot).unwrap();
        let lock = exclusive(&backend, &repo);
        let opts = RepairSnapshotsOptions {
            read_data: true,
            ..RepairSnapshotsOptions::default()
        };
        let e = repair_snapshots(&repo, &opts, &lock)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read pack"), "{e}");
        assert!(e.contains("nothing is changed"), "{e}");
        assert_eq!(backend.list(FileKind::Snapshot).unwrap(), snapshots);
    }

    /// Packs whose trailer is damaged are written again from the entries
    /// the old table gives for each of them, read by a range; every blob
    /// stays indexed but one damaged in such a pack, which is dropped and
    /// named, and the damaged packs go.
    #[test]
    fn repair_index_writes_again_every_pack_whose_header_is_unreadable() {
        let (backend, repo, ids) = repo_of_packs();
        let mut packs = backend.list(FileKind::Pack).unwrap();
        packs.sort();
        // A blob of the first pack, damaged too.
        let index = repo.index().unwrap();
        let (victim, at) = (ids.iter())
            .find_map(|id| {
                let loc = index.lookup(id).ok()??;
                (loc.pack.to_hex() == packs[0]).then_some((*id, loc.offset + loc.length / 2))
            })
            .unwrap();
        for name in &packs[..2] {
            let len = backend.size(FileKind::Pack, name).unwrap() as usize;
            let mut bytes = backend.read_range(FileKind::Pack, name, 0, len).unwrap();
            *bytes.last_mut().unwrap() ^= 1;
            if *name == packs[0] {
                bytes[at as usize] ^= 1;
            }
            backend.write(FileKind::Pack, name, &bytes).unwrap();
        }
        // A third pack cut to nothing: its blobs are dropped, it goes.
        let emptied: Vec<BlobId> = (ids.iter())
            .filter(|id| index.lookup(id).unwrap().unwrap().pack.to_hex() == packs[2])
            .copied()
            .collect();
        assert!(!emptied.is_empty());
        backend.remove(FileKind::Pack, &packs[2]).unwrap();
        backend.write(FileKind::Pack, &packs[2], &[]).unwrap();
        let lock = exclusive(&backend, &repo);
        let r =
            repair_index_in_tables_of(&repo, &RepairIndexOptions::default(), &lock, 15, &|_| {})
                .unwrap();
        assert!(r.unreadable.is_empty(), "{:?}", r.unreadable);
        assert_eq!(r.rewritten.len(), 3, "{:?}", r.rewritten);
        assert!(r
            .rewritten
            .iter()
            .any(|p| p.into.is_empty() && p.blobs == 0));
        // The two packs written again count as packs indexed.
        assert_eq!(r.packs + 1, packs.len());
        assert_eq!((r.blobs, r.kept_entries), (39 - emptied.len(), 0));
        assert_eq!(r.dropped.len(), 1 + emptied.len(), "{:?}", r.dropped);
        assert!(r.dropped.iter().any(|d| d.blob == victim));
        for name in &packs[..3] {
            assert!(backend.size(FileKind::Pack, name).is_err(), "{name} stays");
        }
        repo.reload_index();
        let index = repo.index().unwrap();
        for id in (ids.iter()).filter(|id| **id != victim && !emptied.contains(id)) {
            let loc = index.lookup(id).unwrap().unwrap();
            let what = format!("blob {}", id.short());
            repo.read_located(id, loc)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        assert!(!index.contains(&victim));
    }
}
