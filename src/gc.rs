//! Garbage collection: mark and sweep, with repacking.
//!
//! [`plan`] marks every blob reachable from any snapshot (walking trees in
//! parallel, each once), then classifies packs using the index:
//!
//! - a pack with no live blob is **deleted**;
//! - a pack whose unused share (bytes of its blob area not holding a live,
//!   first-indexed blob; the pack's own header, table of contents and
//!   trailer do not count) exceeds `max_unused` is **repacked**: its live
//!   blobs are copied, still sealed, into new packs;
//! - small packs (under 1/8 of the pack size) that would stay are
//!   **merged** the same way, into full-sized packs, once 16 or more of
//!   one kind (data or trees) are there: nightly backups of little new
//!   data each leave one or two;
//! - a pack in no index table is an interrupted backup's leftover and is
//!   **deleted** (a dry run while others hold locks lists these packs
//!   as **in progress** instead: a running backup may be writing them);
//! - every other pack is **kept**.
//!
//! An index table is **rewritten** when it lists a pack to delete or
//! repack, or names a pack that is missing, or when more than
//! `max_unused` of its entries are dead (a blob no snapshot uses, or a
//! duplicate); every other table is left as it is. A dead entry in a
//! table left alone locates a blob still in a pack that stays: harmless
//! (a backup may even use the blob again), and dropped once its pack
//! goes.
//!
//! [`execute`] then, in this order: writes the new packs; writes one
//! index table holding the surviving entries of the rewritten tables,
//! merged as they stream (see [`crate::index::write_merged`]: no table's
//! entries are ever gathered in memory), and the new locations of the
//! copied blobs (beyond 256 Ki copies, in tables of their own written
//! before it); deletes the rewritten tables; deletes the old packs. At
//! every instant the index tables on disk locate every live blob in an
//! existing pack, so a crash anywhere leaves every snapshot restorable;
//! the next gc finds what was left behind (packs no index names) and
//! finishes the job. gc holds the exclusive lock
//! throughout, so no backup adds blobs meanwhile; it confirms the lock
//! before its first deletion and checks it before each one after, so a gc
//! whose lock looked stale (paused for half an hour) stops rather than
//! delete what a backup started since relies on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{is_hex_name, BlobId, IdMap, IdSet, IndexId, PackId, SnapshotId};
use crate::index::{IndexBuilder, IndexSet, MergeSource};
use crate::pack::{BlobKind, PackEntry, PackWriter};
use crate::repo::lock::LockGuard;
use crate::repo::Repository;
use crate::tree::Ref;

/// gc settings.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Repack packs whose unused share exceeds this fraction (0.0..=1.0).
    pub max_unused: f64,
    /// Worker threads for marking; 0 = one per core.
    pub workers: usize,
    /// Others hold live locks (only possible for a dry run, which holds a
    /// shared lock): packs no index names may be a running backup's, not
    /// an interrupted one's, so they are listed as
    /// [`GcPlan::in_progress`], not as garbage.
    pub others_writing: bool,
    /// Merge small packs once many of one kind stay (see
    /// [`SMALL_PACKS_MERGED`]).
    pub merge_small: bool,
}

impl Default for GcOptions {
    fn default() -> GcOptions {
        GcOptions {
            max_unused: 0.10,
            workers: 0,
            others_writing: false,
            merge_small: true,
        }
    }
}

/// What gc found and will do.
#[derive(Debug, Default, Serialize)]
pub struct GcPlan {
    /// Live blobs (distinct).
    pub live_blobs: u64,
    /// Their stored bytes.
    pub live_bytes: u64,
    /// Index entries not reachable from any snapshot (or duplicates).
    pub dead_blobs: u64,
    /// Their stored bytes.
    pub dead_bytes: u64,
    /// Packs to delete outright (no live blob, or not indexed).
    #[serde(serialize_with = "ids")]
    pub delete: Vec<PackId>,
    /// Packs whose live blobs are copied before deletion.
    #[serde(serialize_with = "ids")]
    pub repack: Vec<PackId>,
    /// Packs no index names while others hold locks (see
    /// [`GcOptions::others_writing`]): not in the index, a backup may be
    /// writing them. Neither deleted nor counted as freed.
    #[serde(serialize_with = "ids")]
    pub in_progress: Vec<PackId>,
    /// Packs kept as they are.
    pub keep: u64,
    /// Bytes freed once done.
    pub bytes_freed: u64,
    /// Live bytes copied by repacking.
    pub bytes_repacked: u64,
    /// Of the packs repacked, those merged only for being small (see
    /// [`SMALL_PACKS_MERGED`]): all or nearly all of their bytes live.
    pub small_merged: u64,
    /// Index tables rewritten (see the module docs).
    #[serde(rename = "rewrite_index", serialize_with = "ids")]
    pub old_index: Vec<IndexId>,
    /// Blobs stored twice whose copy gc would have kept is damaged: the
    /// intact copy is kept instead (see [`rescue_duplicates`]).
    pub rescued: Vec<String>,
    /// Live blobs stored more than once whose every copy gc read fails to
    /// authenticate: it drops all but one, as it would, and says so,
    /// since none of them mends the others.
    pub no_intact_copy: Vec<String>,
    /// Packs no index names that hold copies of live blobs whose indexed
    /// copies are damaged (see [`mends_live`]): kept as they are, with
    /// why, for `cairn repair index` to index.
    #[serde(serialize_with = "kept_ids")]
    pub unindexed_kept: Vec<(PackId, String)>,
    /// Packs whose own framing (trailer, table of contents) cannot be
    /// read, with why: repacked, their live blobs copied (each
    /// authenticated) into new packs, which mends them.
    #[serde(serialize_with = "kept_ids")]
    pub framing_damaged: Vec<(PackId, String)>,
    /// The index entries that keep live blobs.
    #[serde(skip)]
    marks: Marks,
    /// Pack sizes.
    #[serde(skip)]
    sizes: IdMap<PackId, u64>,
    /// No snapshot is left and the plan deletes every pack: gc carries it
    /// out only with `--delete-all` (see the CLI's `gc_locked`), which
    /// a dry run's report says here.
    pub needs_delete_all: bool,
    /// What gc warned of, as said on standard error (filled by the CLI).
    pub warnings: Vec<String>,
    /// The snapshots whose trees the mark walked.
    #[serde(skip)]
    snapshots: IdSet<SnapshotId>,
    /// Temporary files of interrupted writes removed (see
    /// [`remove_leftovers`]); for a dry run, those it would remove.
    pub leftovers_removed: u64,
    /// Incomplete multipart uploads aborted (see [`remove_leftovers`]);
    /// for a dry run, those it would abort.
    pub uploads_aborted: u64,
    /// The bytes their parts held, where the store said.
    pub upload_bytes: Option<u64>,
    /// Incomplete multipart uploads found by a dry run while others hold
    /// locks (see [`GcOptions::others_writing`]): a backup may be writing
    /// them. Not counted as aborted.
    pub uploads_in_progress: u64,
    /// Set where repacking was left for later for want of space (see
    /// [`fit_to_space`]): the packs it would have repacked are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repack_skipped: Option<SpaceShort>,
}

impl GcPlan {
    /// Whether carrying the plan out deletes or writes anything (packs to
    /// delete or repack, tables to write again): [`execute`] runs then.
    pub fn has_work(&self) -> bool {
        !self.delete.is_empty() || !self.repack.is_empty() || !self.old_index.is_empty()
    }
}

/// Free space that fell short of what repacking needs, in bytes, or free
/// inodes that did.
#[derive(Debug, Serialize)]
pub struct SpaceShort {
    /// Free on the store.
    pub free: u64,
    /// Needed before anything is deleted: the repacked blobs' new packs
    /// and the new index table.
    pub needed: u64,
    /// Where the inodes fell short: files and folders the store can
    /// still make.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_inodes: Option<u64>,
    /// Files and folders repacking makes before anything is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed_inodes: Option<u64>,
}

/// How old a temporary file must be for gc to treat it as left behind by
/// an interrupted write rather than one in progress: far longer than any
/// write takes, and than a lock may go unrefreshed before gc may treat it
/// as stale.
pub const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes what interrupted writes left in the store, and records it in
/// `plan`: temporary files (a kill between writing a pack, index table,
/// snapshot, lock or key file and renaming it into place) once they are
/// [`LEFTOVER_AGE`] old, and multipart uploads never completed (a backup
/// killed while it uploaded a large pack), whatever their age: only
/// writers holding a lock start them, and the exclusive lock `lock` keeps
/// them out. A dry run (holding a shared lock) removes nothing and records
/// what it would remove; while `others_writing`, the uploads it finds may
/// be a running backup's and are recorded as in progress. Returns what the
/// store would not let it list or remove, for warnings.
pub fn remove_leftovers(
    repo: &Repository,
    lock: &LockGuard,
    plan: &mut GcPlan,
    dry_run: bool,
    others_writing: bool,
) -> Result<Vec<String>> {
    let before = std::time::SystemTime::now()
        .checked_sub(LEFTOVER_AGE)
        .unwrap_or(std::time::UNIX_EPOCH);
    if !dry_run {
        // Aborting an upload is a deletion like any other: on a lock that
        // still holds, so no backup started since may be uploading.
        lock.check("gc stopped before removing what interrupted writes left; run it again")?;
    }
    let found = repo.backend().remove_leftovers(before, dry_run)?;
    plan.leftovers_removed = found.files;
    if dry_run && others_writing {
        plan.uploads_in_progress = found.uploads;
    } else {
        plan.uploads_aborted = found.uploads;
        plan.upload_bytes = found.upload_bytes.filter(|_| found.uploads > 0);
    }
    Ok(found.warnings)
}

/// Ids as hex strings (their `Display`).
fn ids<S: serde::Serializer, T: std::fmt::Display>(
    v: &[T],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|p| p.to_string()))
}

/// Serializes [`GcPlan::unindexed_kept`] as `{"pack", "why"}` objects.
fn kept_ids<S: serde::Serializer>(
    v: &[(PackId, String)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(
        v.iter()
            .map(|(p, why)| serde_json::json!({"pack": p.to_string(), "why": why})),
    )
}

/// Which index entries locate live blobs: one bit per entry of every
/// table, tables in the order of [`IndexSet::tables`]. Marking looks each
/// reference up in the mapped index and sets the bit of the entry that
/// will keep it, so the mark costs an eighth of a byte per index entry
/// instead of a heap set of every live blob id, and threads mark
/// without a lock.
#[derive(Debug, Default)]
struct Marks {
    tables: Vec<TableMarks>,
}

#[derive(Debug)]
struct TableMarks {
    /// The table's id, to check execute sees the tables plan marked.
    id: IndexId,
    bits: Vec<AtomicU64>,
    /// The table's pack list.
    packs: Vec<(PackId, BlobKind)>,
    /// Per pack number: whether the pack exists.
    present: Vec<bool>,
    /// Whether the table must be written again, its dead entries dropped,
    /// whatever their share: it places a blob at a damaged copy while an
    /// intact one is kept (see [`rescue_duplicates`]).
    rewrite: std::sync::atomic::AtomicBool,
}

impl Marks {
    fn new(index: &IndexSet, sizes: &IdMap<PackId, u64>) -> Result<Marks> {
        let mut tables = Vec::new();
        for table in index.tables() {
            let packs = (0..table.pack_count())
                .map(|n| table.pack(n))
                .collect::<Result<Vec<_>>>()?;
            tables.push(TableMarks {
                id: table.id(),
                bits: (0..table.len().div_ceil(64))
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                present: packs.iter().map(|(p, _)| sizes.contains_key(p)).collect(),
                packs,
                rewrite: Default::default(),
            });
        }
        Ok(Marks { tables })
    }

    /// Marks `id`, used as a blob of `kind`, live: sets the bit of its
    /// first indexed location in a pack that exists, searching the tables
    /// that may hold `kind` first (as reading it does: see
    /// `IndexSet::locate_kind`). False when there is none.
    fn mark(&self, index: &IndexSet, id: &BlobId, kind: BlobKind) -> bool {
        let tables = || index.tables().iter().zip(&self.tables);
        let own = tables().filter(|(t, _)| t.holds(kind));
        let other = tables().filter(|(t, _)| !t.holds(kind));
        for (table, marks) in own.chain(other) {
            let Some(i) = table.find(id) else { continue };
            let usable = table
                .entry_at(i)
                .is_ok_and(|e| marks.present[e.pack as usize]);
            if usable {
                marks.bits[i / 64].fetch_or(1 << (i % 64), Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Whether the tables are those marked.
    fn matches(&self, index: &IndexSet) -> bool {
        index.tables().len() == self.tables.len()
            && index
                .tables()
                .iter()
                .zip(&self.tables)
                .all(|(t, m)| t.id() == m.id)
    }
}

impl TableMarks {
    fn is_live(&self, i: usize) -> bool {
        self.bits[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0
    }

    fn set_live(&self, i: usize, live: bool) {
        let bit = 1 << (i % 64);
        if live {
            self.bits[i / 64].fetch_or(bit, Ordering::Relaxed);
        } else {
            self.bits[i / 64].fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

/// `e`, from a read gc's plan could not do without: where the store did
/// not answer or refused the read (not damage), with what gc did (nothing
/// yet) and what to do; else as it is.
fn stopped_by_store(e: Error) -> Error {
    e.unless_store_unavailable("gc stopped before deleting anything")
}

/// What [`rescue_duplicates`] found of a blob's copy kept.
enum Kept {
    /// It authenticates: nothing to do.
    Sound,
    /// It fails to, for this reason: another copy is looked for.
    Damaged(String),
    /// Another copy, intact, is kept instead.
    Switched,
}

/// Reads the copy kept of every blob stored more than once whose other
/// copy gc drops, with its pack (deleted or repacked, `going`) or from
/// its table (written again without dead entries, `rewritten`); where
/// the copy kept fails to authenticate (bit rot), keeps instead the
/// first other copy that does, and has the damaged copy's table written
/// again without it, so that reads find the intact copy. Says which were
/// switched. `state` carries what was found across calls (gc calls
/// again for what a switch sends to go). Until December 2026 gc deleted
/// the intact copy with its pack, and damage `repair index --read-data`
/// could have mended was for good; a third copy was not tried once a
/// second was damaged, and a copy dropped only from its table was not
/// looked at.
fn rescue_duplicates(
    repo: &Repository,
    index: &IndexSet,
    marks: &Marks,
    (going, rewritten, listed): (&IdSet<PackId>, &IdSet<IndexId>, &IdMap<PackId, u64>),
    state: &mut IdMap<BlobId, Kept>,
) -> Result<Vec<String>> {
    // A read of a pack the store has just listed that finds no such pack
    // (a store whose listing and reads disagree: replication lag, a
    // gateway) is not a copy gone: taken for one, the intact copy was
    // deleted, exit 0 (until December 2026).
    let vanished = |pack: &PackId, e: Error| {
        if e.is_not_found() && listed.contains_key(pack) {
            Error::Invalid(format!(
                "pack {} is listed by the store, but a read of it finds no such pack ({e}); \
                 gc stopped before deleting anything; run it again once the store is consistent",
                pack.short()
            ))
        } else {
            e
        }
    };
    let tables: Vec<_> = index.tables().iter().zip(&marks.tables).collect();
    check_kept_copies(repo, &tables, (going, rewritten), state, &vanished)?;
    let mut switched = Vec::new();
    for_each_dropped(&tables, (going, rewritten), |table_marks, j, id, loc| {
        if matches!(state.get(&id), Some(Kept::Sound | Kept::Switched)) {
            return Ok(());
        }
        let Some((t, m, i)) = kept_copy(&tables, &id) else {
            return Ok(());
        };
        let (_, kept_loc) = t.location_at(i)?;
        let why = match state.get(&id) {
            Some(Kept::Damaged(why)) => why.clone(),
            _ => match repo.read_located_in_store(&id, kept_loc) {
                Err(e @ Error::Corrupt { .. }) => {
                    state.insert(id, Kept::Damaged(e.to_string()));
                    e.to_string()
                }
                // The copy kept is in a pack listed (marking keeps none
                // other): found missing, the store disagrees.
                Err(e) => return Err(vanished(&kept_loc.pack, e)),
                Ok(_) => {
                    state.insert(id, Kept::Sound);
                    return Ok(());
                }
            },
        };
        // The kept copy is damaged: this one decides, and only a read of
        // it that says so counts. One the store could not hand over (an
        // outage, a refused read) stops gc: taken for damaged, the intact
        // copy was deleted with its pack, exit 0 (until December 2026).
        match repo.read_located_in_store(&id, loc) {
            Ok(_) => {
                switched.push(format!(
                    "blob {} is kept in pack {}, as its copy in pack {} is damaged ({why})",
                    id.short(),
                    loc.pack.short(),
                    kept_loc.pack.short()
                ));
                m.set_live(i, false);
                m.rewrite.store(true, Ordering::Relaxed);
                table_marks.set_live(j, true);
                state.insert(id, Kept::Switched);
                Ok(())
            }
            // Damaged too, or gone: another copy may be sound (verify names
            // what is not).
            Err(Error::Corrupt { .. }) => Ok(()),
            Err(e) if e.is_not_found() && !listed.contains_key(&loc.pack) => Ok(()),
            Err(e) => Err(vanished(&loc.pack, e)),
        }
    })?;
    Ok(switched)
}

/// The tables with their marks, as [`rescue_duplicates`] walks them.
type MarkedTables<'t> = [(&'t crate::index::IndexTable, &'t TableMarks)];

/// Calls `visit` with each entry gc drops, not live, that lies in a pack
/// that goes (`going`) or in a table written again (`rewritten`): its
/// table's marks, its number there, its blob and where it places it.
fn for_each_dropped(
    tables: &MarkedTables<'_>,
    (going, rewritten): (&IdSet<PackId>, &IdSet<IndexId>),
    mut visit: impl FnMut(&TableMarks, usize, BlobId, crate::index::Location) -> Result<()>,
) -> Result<()> {
    for &(table, table_marks) in tables {
        let whole_table = rewritten.contains(&table.id());
        if !whole_table && !table_marks.packs.iter().any(|(p, _)| going.contains(p)) {
            continue;
        }
        for j in 0..table.len() {
            if table_marks.is_live(j) {
                continue;
            }
            let (id, loc) = table.location_at(j)?;
            if whole_table || going.contains(&loc.pack) {
                visit(table_marks, j, id, loc)?;
            }
        }
    }
    Ok(())
}

/// The copy of `id` gc keeps, if the blob is live: its table, that
/// table's marks and its entry number there.
fn kept_copy<'t>(
    tables: &MarkedTables<'t>,
    id: &BlobId,
) -> Option<(&'t crate::index::IndexTable, &'t TableMarks, usize)> {
    tables.iter().find_map(|&(t, m)| {
        let i = t.find(id)?;
        m.is_live(i).then_some((t, m, i))
    })
}

/// For [`rescue_duplicates`]: reads the copy kept of every blob whose
/// other copy goes, each once, several at a time (16 on a remote store,
/// whose every read is a request: after backups ran side by side, which
/// store shared data more than once, a gc read some 17,000 copies there
/// one at a time for three minutes under its exclusive lock), and
/// records in `state` whether each authenticates. A read the store could
/// not do stops gc, as there.
fn check_kept_copies(
    repo: &Repository,
    tables: &MarkedTables<'_>,
    (going, rewritten): (&IdSet<PackId>, &IdSet<IndexId>),
    state: &mut IdMap<BlobId, Kept>,
    vanished: &dyn Fn(&PackId, Error) -> Error,
) -> Result<()> {
    let mut queued: IdSet<BlobId> = IdSet::default();
    let mut checks: Vec<(BlobId, crate::index::Location)> = Vec::new();
    for_each_dropped(tables, (going, rewritten), |_, _, id, _| {
        if state.contains_key(&id) || queued.contains(&id) {
            return Ok(());
        }
        if let Some((t, _, i)) = kept_copy(tables, &id) {
            queued.insert(id);
            checks.push((id, t.location_at(i)?.1));
        }
        Ok(())
    })?;
    if checks.is_empty() {
        return Ok(());
    }
    // In pack order, for a local store's read-ahead.
    checks.sort_by_key(|(_, loc)| (loc.pack, loc.offset));
    let threads = if repo.backend().prefers_ranges() {
        16
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
    .min(checks.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found: Mutex<Vec<(usize, Result<()>)>> = Mutex::new(Vec::with_capacity(checks.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, loc)) = checks.get(n) else {
                    break;
                };
                let read = repo.read_located_in_store(id, *loc).map(drop);
                let stop = read
                    .as_ref()
                    .is_err_and(|e| !matches!(e, Error::Corrupt { .. }));
                if let Ok(mut found) = found.lock() {
                    found.push((n, read));
                }
                if stop {
                    next.store(checks.len(), Ordering::Relaxed);
                    break;
                }
            });
        }
    });
    let mut found = found
        .into_inner()
        .map_err(|_| Error::Invalid("a thread checking the copies gc keeps panicked".into()))?;
    found.sort_by_key(|(n, _)| *n);
    for (n, read) in found {
        let (id, loc) = &checks[n];
        match read {
            Ok(()) => state.insert(*id, Kept::Sound),
            Err(e @ Error::Corrupt { .. }) => state.insert(*id, Kept::Damaged(e.to_string())),
            // The copy kept is in a pack listed (marking keeps none
            // other): found missing, the store disagrees.
            Err(e) => return Err(vanished(&loc.pack, e)),
        };
    }
    Ok(())
}

/// The index, every table of it, for a command (`doing`, e.g. "collect
/// garbage") that deletes what it does not reach: never read around a
/// table that cannot be parsed, as commands that only read are
/// ([`Repository::index_reading_around`]), since the packs only that
/// table indexes would look unused and be deleted with their data. Such
/// a table is an error naming it and `cairn repair index`.
pub fn whole_index(repo: &Repository, doing: &str) -> Result<std::sync::Arc<IndexSet>> {
    repo.index().map_err(|e| match e {
        Error::Corrupt { .. } => Error::Invalid(format!(
            "refusing to {doing}: {e}, and the packs only it indexes would look unused; \
             `cairn repair index` rebuilds the index from the packs"
        )),
        e => e,
    })
}

/// Refuses while `snapshots/` holds files whose names are no snapshot id:
/// a snapshot file renamed (a sync tool's conflict copy,
/// `ID.sync-conflict-…`; a name changed in case) is no snapshot to any
/// command, and the data only it uses would look unused and be deleted
/// (until December 2026 it was, exit 0). Files starting with `.` are
/// cairn's own temporary ones, and are not listed.
fn refuse_strays(repo: &Repository) -> Result<()> {
    match strays_said(&repo.backend().strays(FileKind::Snapshot)?) {
        Some(said) => Err(Error::Invalid(format!(
            "refusing to collect garbage: snapshots/ holds {said}; a snapshot file renamed (a \
             sync tool's conflict copy, a name changed in case) or moved into a folder is read \
             as no snapshot, and its data would be deleted; rename such a file back to its id \
             (64 lowercase hex digits) in snapshots/, or move it out of snapshots/, then run \
             gc again"
        ))),
        None => Ok(()),
    }
}

/// `strays` of `snapshots/` (see [`crate::backend::Backend::strays`]) as
/// gc's refusal and verify's warning name them: "2 entries that are no
/// snapshot file (the first: …)"; `None` where there are none.
pub fn strays_said(strays: &[Vec<u8>]) -> Option<String> {
    use crate::escape::Show;
    let one = strays.len() == 1;
    strays.first().map(|first| {
        format!(
            "{} entr{} that {} no snapshot file (the first: {})",
            strays.len(),
            if one { "y" } else { "ies" },
            if one { "is" } else { "are" },
            first.shown()
        )
    })
}

/// What gc's refusal over damaged trees advises: the snapshots whose root
/// tree is `damaged`, and those `repair snapshots` wrote copies of (see
/// [`repaired_kept`]), by id, with what to do. Until December 2026 it
/// named only the trees, and advised "`cairn repair` or `cairn forget`"
/// after a repair of the snapshots had been run.
fn which_to_forget(
    snapshots: &[crate::snapshot::SnapshotEntry],
    damaged: &dyn Fn(&BlobId) -> bool,
    remote: bool,
) -> String {
    let roots: Vec<String> = snapshots
        .iter()
        .filter(|e| damaged(&e.snapshot.tree))
        .map(|e| e.id.short())
        .collect();
    let roots = match roots.is_empty() {
        true => String::new(),
        false => format!(
            "; the root tree of snapshot(s) {} cannot be read",
            roots.join(", ")
        ),
    };
    // Another host's cache may hold the damaged trees intact, which the
    // forget would lose for good.
    let first = match remote {
        true => {
            "; first run `cairn verify` on the hosts that back up to this bucket: one whose \
             cache holds an intact copy of a damaged pack of trees names it, and its `cairn \
             repair index` puts it back, which a forget of the originals would lose"
        }
        false => "",
    };
    format!(
        "{roots}{first}; `cairn verify` names every snapshot that uses a damaged tree, `cairn \
         repair snapshots` writes a copy of each without what is lost, and `cairn forget` of \
         the damaged originals then lets gc run{}",
        repaired_kept(snapshots)
    )
}

/// The snapshots `repair snapshots` wrote copies of that are still kept,
/// as gc's refusals name them ("; of the snapshots … these originals are
/// kept: ID (its copy: ID)"): the damaged originals, likely what stops
/// gc, which only `cairn forget` removes.
fn repaired_kept(snapshots: &[crate::snapshot::SnapshotEntry]) -> String {
    let kept: Vec<String> = snapshots
        .iter()
        .flat_map(|copy| {
            copy.snapshot
                .tags
                .iter()
                .filter_map(|t| t.strip_prefix(crate::repair::REPAIRED_FROM))
                .filter_map(|orig| snapshots.iter().find(|e| e.id.to_hex() == orig))
                .map(|orig| format!("{} (its copy: {})", orig.id.short(), copy.id.short()))
        })
        .collect();
    match kept.as_slice() {
        [] => String::new(),
        kept => format!(
            "; of the snapshots `cairn repair snapshots` wrote copies of, these originals are \
             kept: {} (`cairn forget` them once their copies will do)",
            kept.join(", ")
        ),
    }
}

/// Marks live blobs and decides what to do with each pack.
pub fn plan(repo: &Repository, opts: &GcOptions) -> Result<GcPlan> {
    repo.require_whole_layout("collect garbage")?;
    let snapshots = repo.snapshots()?.require_all("collect garbage")?;
    refuse_strays(repo)?;
    let roots: Vec<BlobId> = snapshots.iter().map(|e| e.snapshot.tree).collect();
    let mut sizes = IdMap::default();
    for (name, size) in repo.pack_sizes()? {
        if is_hex_name(&name) {
            sizes.insert(PackId::from_hex(&name)?, size);
        }
    }
    let index = whole_index(repo, "collect garbage")?;
    // A table's entries decide which packs are in use: one damaged would
    // have gc delete packs its entries no longer name.
    repo.require_sound_index("collect garbage")?;
    // Marking looks up every blob in use.
    index.build_directories(usize::MAX);
    let marks = Marks::new(&index, &sizes)?;
    let unreadable: Mutex<Vec<(BlobId, String)>> = Mutex::new(Vec::new());
    let missing: Mutex<IdSet<BlobId>> = Mutex::new(IdSet::default());
    let mark = |id: &BlobId, kind: BlobKind| {
        if !marks.mark(&index, id, kind) {
            if let Ok(mut m) = missing.lock() {
                m.insert(*id);
            }
        }
    };
    for root in &roots {
        mark(root, BlobKind::Tree);
    }
    // A tree the store could not hand over for now (an outage: a
    // transient error, retries spent) or would not (no permission) is not
    // damage: gc stops with that error, and walks no further.
    let store_failed: Mutex<Option<Error>> = Mutex::new(None);
    let reader = crate::walker::TreeReader::new(repo);
    crate::walker::walk(repo, &roots, opts.workers, &|id, enqueue| {
        if store_failed.lock().map_or(true, |f| f.is_some()) {
            return;
        }
        let what = format!("tree {}", id.short());
        let scanned = reader.with_tree(&id, |plain| {
            crate::tree::scan_refs(plain, &what, |r| match r {
                Ref::Chunk(c) => mark(&c, BlobKind::Data),
                Ref::Subtree(t) | Ref::Part(t) => {
                    mark(&t, BlobKind::Tree);
                    enqueue(t);
                }
                Ref::FileSize(_) => {}
            })
        });
        match scanned {
            Err(e) if e.is_store_unavailable() => {
                if let Ok(mut f) = store_failed.lock() {
                    f.get_or_insert(e);
                }
            }
            Err(e) => {
                if let Ok(mut u) = unreadable.lock() {
                    u.push((id, format!("tree {}: {e}", id.short())));
                }
            }
            Ok(()) => {}
        }
    })?;
    if let Some(e) = store_failed.into_inner().ok().flatten() {
        return Err(stopped_by_store(e));
    }
    let mut unreadable = unreadable.into_inner().unwrap_or_default();
    if !unreadable.is_empty() {
        let damaged: IdSet<BlobId> = unreadable.iter().map(|(id, _)| *id).collect();
        // The first few name the trees; `cairn verify` names them all.
        unreadable.sort();
        let more = unreadable.len().saturating_sub(5);
        let mut said: Vec<String> = unreadable.into_iter().take(5).map(|(_, s)| s).collect();
        if more > 0 {
            said.push(format!("and {more} more"));
        }
        return Err(Error::Invalid(format!(
            "refusing to collect garbage while snapshots are damaged ({}){}",
            said.join("; "),
            which_to_forget(
                &snapshots,
                &|root| damaged.contains(root),
                repo.backend().prefers_ranges()
            )
        )));
    }
    let missing = missing.into_inner().unwrap_or_default();
    if let Some(first) = missing.iter().min() {
        return Err(Error::Invalid(format!(
            "refusing to collect garbage: {} blobs used by snapshots are not in the index or their pack is missing \
             (first: {first}); `cairn verify` names the snapshots and files that use them; \
             `cairn repair index` finds them if only the index lost them, and once it has run, \
             the next backup stores again what the sources still hold and `cairn repair \
             snapshots` writes copies of the snapshots without the rest (then `cairn forget` \
             the damaged originals), after which gc runs{}",
            missing.len(),
            repaired_kept(&snapshots),
        )));
    }

    // What `mends_live` found of the copies the index keeps, across the
    // packs and rounds of classifying.
    let mut kept_copies = IdMap::default();
    let mut plan = classify(repo, &index, marks, sizes, opts, &mut kept_copies)?;
    // A blob stored twice (backups storing the same new data side by
    // side) is kept in the copy marked, and the other goes with its pack:
    // the copy kept must be sound, or the one intact copy is deleted; so
    // with an entry dropped from a table written again. A switch to
    // another copy may send the damaged copy's pack to be repacked or
    // deleted, or its table to be written again, in turn: what newly goes
    // is checked the same way, until nothing does.
    let mut state = IdMap::default();
    let mut rescued = Vec::new();
    loop {
        let going: IdSet<PackId> = plan.delete.iter().chain(&plan.repack).copied().collect();
        let rewritten: IdSet<IndexId> = plan.old_index.iter().copied().collect();
        let switched = rescue_duplicates(
            repo,
            &index,
            &plan.marks,
            (&going, &rewritten, &plan.sizes),
            &mut state,
        )
        .map_err(stopped_by_store)?;
        if switched.is_empty() {
            break;
        }
        rescued.extend(switched);
        let GcPlan { marks, sizes, .. } = plan;
        plan = classify(repo, &index, marks, sizes, opts, &mut kept_copies)?;
    }
    plan.rescued = rescued;
    // A copy kept damaged, where no other was switched to: said unless
    // one of the index's other copies opens (one in a pack that stays,
    // which reads find).
    let mut none_intact = Vec::new();
    let unmended = kept_copies.iter().filter_map(|(id, kept)| match kept {
        KeptCopy::Damaged { why, mended: false } if !state.contains_key(id) => Some((id, why)),
        _ => None,
    });
    let mended = |id: &BlobId| {
        matches!(
            kept_copies.get(id),
            Some(KeptCopy::Damaged { mended: true, .. })
        )
    };
    let damaged = state.iter().filter_map(|(id, kept)| match kept {
        Kept::Damaged(why) if !mended(id) => Some((id, why)),
        _ => None,
    });
    for (id, why) in damaged.chain(unmended) {
        let mut intact = false;
        for table in index.tables() {
            let Some(i) = table.find(id) else { continue };
            let (_, loc) = table.location_at(i)?;
            if repo.read_located_in_store(id, loc).is_ok() {
                intact = true;
                break;
            }
        }
        if !intact {
            none_intact.push(format!(
                "live blob {} has no intact copy: the copy gc keeps is damaged ({why}), and \
                 so is every other the index names",
                id.short()
            ));
        }
    }
    none_intact.sort();
    plan.no_intact_copy = none_intact;
    plan.snapshots = snapshots.iter().map(|e| e.id).collect();
    Ok(plan)
}

/// Lists `snapshots/`, `index/` and `packs/` again and refuses unless each
/// holds what `plan` was made from (the snapshots its mark walked, the
/// index tables it marked, the packs it sized): under gc's exclusive lock
/// nothing may add or remove any of them, so a difference says a listing
/// was wrong. One answer of a store's listing changed on its way (a
/// faulty proxy or gateway on plain HTTP; a listing carries no checksum)
/// can name a snapshot that is not there in place of one that is, whose
/// data would then look unused and be deleted.
fn confirm_listings(repo: &Repository, plan: &GcPlan, index: &IndexSet) -> Result<()> {
    let backend = repo.backend();
    let hex = |kind: FileKind| -> Result<Vec<String>> {
        let mut names: Vec<String> = backend
            .list(kind)?
            .into_iter()
            .filter(|n| is_hex_name(n))
            .collect();
        names.sort();
        Ok(names)
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let checks = [
        (
            FileKind::Snapshot,
            sorted(plan.snapshots.iter().map(|id| id.to_hex()).collect()),
        ),
        (
            FileKind::Index,
            sorted(index.tables().iter().map(|t| t.id().to_hex()).collect()),
        ),
        (
            FileKind::Pack,
            sorted(plan.sizes.keys().map(|id| id.to_hex()).collect()),
        ),
    ];
    for (kind, planned) in checks {
        let listed = hex(kind)?;
        if listed != planned {
            let only = |a: &[String], b: &[String]| {
                a.iter()
                    .find(|n| b.binary_search(n).is_err())
                    .map_or(String::new(), |n| n[..n.len().min(16)].to_string())
            };
            return Err(Error::Invalid(format!(
                "refusing to collect garbage: two listings of {}/ differ ({} names planned, {} \
                 listed now{}{}), though gc's lock keeps every other command from changing \
                 it: the store's listings are not to be trusted now (a proxy or gateway that \
                 changes answers, a store that lists what it did not just write); nothing was \
                 deleted; run gc again, and over HTTPS",
                kind.dir(),
                planned.len(),
                listed.len(),
                match only(&planned, &listed) {
                    n if n.is_empty() => String::new(),
                    n => format!("; planned, not listed now: {n}"),
                },
                match only(&listed, &planned) {
                    n if n.is_empty() => String::new(),
                    n => format!("; listed now, not planned: {n}"),
                },
            )));
        }
    }
    Ok(())
}

/// A pack under this share of the repository's pack size (1/8: 2 MiB of
/// the default 16) is small: a backup of little new data ends with one
/// such pack of data and one of trees.
const SMALL_PACK_DIVISOR: u64 = 8;

/// gc merges the small packs of one kind (data or trees) that would stay,
/// their live blobs copied into full-sized packs, once there are at least
/// this many: a year of nightly backups of a few changed files would
/// otherwise leave some 700 packs of a few KiB, each a file (or an
/// object, and a request, on S3) to list, open and read. Below the count,
/// merging would copy often for little: 16 packs under 1/8 of the pack
/// size are at most two packs' worth of bytes, merged into one or two.
const SMALL_PACKS_MERGED: usize = 16;

/// What to do with each pack, given the `marks` of what is live: packs
/// without a live blob are deleted, those mostly unused repacked, small
/// packs merged when many of one kind stay, the index tables naming
/// packs that go (or holding many dead entries) rewritten.
fn classify(
    repo: &Repository,
    index: &IndexSet,
    marks: Marks,
    sizes: IdMap<PackId, u64>,
    opts: &GcOptions,
    kept_copies: &mut IdMap<BlobId, KeptCopy>,
) -> Result<GcPlan> {
    let mut plan = GcPlan {
        sizes,
        ..GcPlan::default()
    };
    let mut live_in_pack: IdMap<PackId, u64> = IdMap::default();
    let mut indexed: IdSet<PackId> = IdSet::default();
    let mut kinds: IdMap<PackId, BlobKind> = IdMap::default();
    // Per table: whether it holds an entry that is not live.
    let mut has_dead = Vec::with_capacity(marks.tables.len());
    for (table, marks) in index.tables().iter().zip(&marks.tables) {
        let dead_before = plan.dead_blobs;
        // Per pack number: whether entries name it, and its live bytes.
        let mut named = vec![false; marks.packs.len()];
        let mut live = vec![0u64; marks.packs.len()];
        for i in 0..table.len() {
            let e = table.entry_at(i)?;
            named[e.pack as usize] = true;
            if marks.is_live(i) {
                live[e.pack as usize] += u64::from(e.length);
                plan.live_blobs += 1;
                plan.live_bytes += u64::from(e.length);
            } else {
                plan.dead_blobs += 1;
                plan.dead_bytes += u64::from(e.length);
            }
        }
        for (n, (pack, kind)) in marks.packs.iter().enumerate() {
            if named[n] {
                indexed.insert(*pack);
                kinds.insert(*pack, *kind);
                *live_in_pack.entry(*pack).or_default() += live[n];
            }
        }
        // Dead entries in packs that stay locate blobs that are still
        // there: harmless, and dropped when their pack goes. A table is
        // rewritten for them alone once they are more than `max_unused`
        // of it; at once if it names a pack that is missing, whose
        // entries a backup must never deduplicate against.
        let dead = plan.dead_blobs - dead_before;
        let missing = named.iter().zip(&marks.present).any(|(&n, &p)| n && !p);
        let dead_share = dead as f64 / table.len().max(1) as f64;
        let rewrite = marks.rewrite.load(Ordering::Relaxed);
        has_dead.push(missing || rewrite || (dead > 0 && dead_share > opts.max_unused));
    }
    plan.marks = marks;
    let mut packs: Vec<(&PackId, &u64)> = plan.sizes.iter().collect();
    packs.sort();
    let (mut delete, mut repack, mut keep, mut freed, mut copied) =
        (Vec::new(), Vec::new(), 0, 0, 0);
    // Small packs that stay, by kind, with their live bytes.
    let small_below = u64::from(repo.config().pack_size) / SMALL_PACK_DIVISOR;
    let mut small: HashMap<BlobKind, Vec<(PackId, u64, u64)>> = HashMap::new();
    for (pack, &size) in packs {
        let live = live_in_pack.get(pack).copied().unwrap_or(0);
        if !indexed.contains(pack) && opts.others_writing {
            plan.in_progress.push(*pack);
        } else if let Some(why) = match indexed.contains(pack) {
            false => mends_live(repo, index, &plan.marks, (pack, size), kept_copies)?,
            true => None,
        } {
            plan.unindexed_kept.push((*pack, why));
            keep += 1;
        } else if !indexed.contains(pack) || live == 0 {
            delete.push(*pack);
            freed += size;
        } else if size > 0 && 1.0 - (live as f64 / size as f64) > opts.max_unused && {
            let (share, damaged) = unused_share(repo, pack, size, live);
            if let Some(why) = damaged.filter(|_| share > opts.max_unused) {
                plan.framing_damaged.push((*pack, why));
            }
            share > opts.max_unused
        } {
            repack.push(*pack);
            freed += size - live;
            copied += live;
        } else {
            keep += 1;
            if size < small_below {
                if let Some(kind) = kinds.get(pack) {
                    small.entry(*kind).or_default().push((*pack, size, live));
                }
            }
        }
    }
    for packs in small.into_values() {
        if opts.merge_small && packs.len() >= SMALL_PACKS_MERGED {
            for (pack, size, live) in packs {
                repack.push(pack);
                freed += size.saturating_sub(live);
                copied += live;
                keep -= 1;
                plan.small_merged += 1;
            }
        }
    }
    repack.sort();
    let going: IdSet<PackId> = delete.iter().chain(&repack).copied().collect();
    for ((table, marks), dead) in index.tables().iter().zip(&plan.marks.tables).zip(has_dead) {
        if dead || marks.packs.iter().any(|(p, _)| going.contains(p)) {
            plan.old_index.push(table.id());
        }
    }
    plan.delete = delete;
    plan.repack = repack;
    plan.keep = keep;
    plan.bytes_freed = freed;
    plan.bytes_repacked = copied;
    Ok(plan)
}

/// What [`mends_live`] found of the copy of a live blob the index keeps.
#[derive(Clone, Debug)]
enum KeptCopy {
    /// It authenticates.
    Sound,
    /// It fails to, or its pack is gone, for this reason; `mended` once a
    /// pack no index names holds a copy that opens.
    Damaged { why: String, mended: bool },
}

/// Why the pack `pack` of `size` bytes, which no index table names, must
/// not be deleted, if it must not: it holds an intact copy of a live blob
/// whose copy the index keeps is damaged (or gone), as after an index
/// table was lost beside damage to another copy. Such a pack is usually
/// one a backup wrote and was stopped before indexing, whose blobs no
/// snapshot uses, or that repeats blobs another backup stored beside it:
/// neither keeps it. Until December 2026 gc deleted it, exit 0, and the
/// data `cairn repair index` would have recovered was lost. A header
/// that cannot be read keeps nothing here: no entry says what the pack
/// holds. Each kept copy is read once, whatever packs repeat it
/// (`kept_copies`).
fn mends_live(
    repo: &Repository,
    index: &IndexSet,
    marks: &Marks,
    (pack, size): (&PackId, u64),
    kept_copies: &mut IdMap<BlobId, KeptCopy>,
) -> Result<Option<String>> {
    let what = format!("pack {}", pack.short());
    let header =
        match crate::pack::read_header(repo.backend(), &pack.to_hex(), size, repo.key(), &what) {
            Ok(h) => h,
            Err(Error::Corrupt { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
    let mut first = None;
    for entry in &header.entries {
        let kept = index.tables().iter().zip(&marks.tables).find_map(|(t, m)| {
            let i = t.find(&entry.id)?;
            m.is_live(i).then_some((t, i))
        });
        let Some((table, i)) = kept else { continue };
        let (_, loc) = table.location_at(i)?;
        let verdict = match kept_copies.get(&entry.id) {
            Some(v) => v.clone(),
            None => {
                let v = match repo.read_located_in_store(&entry.id, loc) {
                    Ok(_) => KeptCopy::Sound,
                    Err(e @ Error::Corrupt { .. }) => KeptCopy::Damaged {
                        why: e.to_string(),
                        mended: false,
                    },
                    Err(e) if e.is_not_found() => KeptCopy::Damaged {
                        why: format!("pack {} is missing", loc.pack.short()),
                        mended: false,
                    },
                    Err(e) => return Err(e),
                };
                kept_copies.insert(entry.id, v.clone());
                v
            }
        };
        let KeptCopy::Damaged { why, .. } = verdict else {
            continue;
        };
        // This pack's own copy must open to mend anything.
        let here = crate::index::Location {
            pack: *pack,
            kind: header.kind,
            offset: entry.offset,
            length: entry.length,
            raw_length: entry.raw_length,
        };
        match repo.read_located_in_store(&entry.id, here) {
            Ok(_) => {}
            Err(Error::Corrupt { .. }) => continue,
            Err(e) => return Err(e),
        }
        kept_copies.insert(
            entry.id,
            KeptCopy::Damaged {
                why: why.clone(),
                mended: true,
            },
        );
        // Every blob the pack mends is marked, not only the first: one
        // left unmarked was said to have no intact copy (another pack's
        // damaged), or one another pack had no copy of went unsaid.
        first.get_or_insert_with(|| {
            format!(
                "it holds an intact copy of live blob {}, whose indexed copy in pack {} is \
                 damaged ({why})",
                entry.id.short(),
                loc.pack.short()
            )
        });
    }
    Ok(first)
}

/// `plan`, or, where the store has too little space free for the new
/// packs and index table that carrying it out writes before it deletes
/// anything, a plan without repacking (packs with no live blob are still
/// deleted, the index tables that name them rewritten), its
/// [`GcPlan::repack_skipped`] saying how short the space was. On a
/// nearly full filesystem the deletions make the room a later gc
/// repacks in. Stores without a size limit get `plan` back as it is.
pub fn fit_to_space(repo: &Repository, plan: GcPlan, opts: &GcOptions) -> Result<GcPlan> {
    if plan.repack.is_empty() {
        return Ok(plan);
    }
    let Some(free) = repo.backend().free_space()? else {
        return Ok(plan);
    };
    let sizes: HashMap<String, u64> = repo
        .backend()
        .list_sizes(FileKind::Index)?
        .into_iter()
        .collect();
    let tables: u64 = plan
        .old_index
        .iter()
        .map(|id| sizes.get(&id.to_hex()).copied().unwrap_or(0))
        .sum();
    // A pack's worth more for the framing of the new packs and room to
    // spare.
    let pack_size = u64::from(repo.config().pack_size);
    let needed = plan.bytes_repacked + tables + pack_size;
    // Each new pack may need a new folder too, and one index table more
    // may be written than are replaced (on a filesystem out of inodes,
    // every repack failed, every run, where the deletions alone would
    // have freed some).
    let packs = plan.bytes_repacked.div_ceil(pack_size) + 1;
    let needed_inodes = 2 * packs + plan.old_index.len() as u64 + 1;
    let free_inodes = repo.backend().free_inodes()?;
    let inodes_short = free_inodes.is_some_and(|n| n < needed_inodes);
    if free >= needed && !inodes_short {
        return Ok(plan);
    }
    let mut lean = self::plan(
        repo,
        &GcOptions {
            max_unused: f64::INFINITY,
            merge_small: false,
            ..opts.clone()
        },
    )?;
    // Small packs only merged are no repacking the space needs: left for
    // later without a word (a nightly gc on a nearly full disk told the
    // operator every night to make room for them).
    if (plan.small_merged as usize) < plan.repack.len() {
        lean.repack_skipped = Some(SpaceShort {
            free,
            needed,
            free_inodes: free_inodes.filter(|_| inodes_short),
            needed_inodes: inodes_short.then_some(needed_inodes),
        });
    }
    Ok(lean)
}

/// The share of a pack's blob area that holds no live blob. The pack's own
/// framing (file header, sealed table of contents, trailer) is not unused:
/// counting it would make every gc repack packs of a few small tree blobs,
/// whose table of contents is a large share of the file, over and over.
/// Costs one small read of the trailer; if that fails, the whole file size
/// is used, which errs towards repacking (which authenticates every blob),
/// and why it failed is returned with the share, where the pack is damaged
/// (not where the store could not hand the trailer over).
fn unused_share(repo: &Repository, pack: &PackId, size: u64, live: u64) -> (f64, Option<String>) {
    let tl = crate::pack::trailer_len();
    let framing = size
        .checked_sub(tl as u64)
        .ok_or_else(|| Error::corrupt(format!("pack {}", pack.short()), "shorter than a trailer"))
        .and_then(|at| {
            repo.backend()
                .read_range(FileKind::Pack, &pack.to_hex(), at, tl)
        })
        .and_then(|t| crate::pack::header_range(&t, size, &format!("pack {}", pack.short())));
    let (area, damaged) = match framing {
        Ok((start, _)) => (start - crate::pack::HEADER_LEN as u64, None),
        Err(e @ Error::Corrupt { .. }) => (size, Some(e.to_string())),
        Err(_) => (size, None),
    };
    if area == 0 {
        return (1.0, damaged);
    }
    (1.0 - (live as f64 / area as f64).min(1.0), damaged)
}

/// Carries out a plan, holding `lock` (which must be exclusive). See the
/// module docs for the order and why it is safe. Says which live blobs
/// were copied from another copy than the one marked, found damaged.
pub fn execute(repo: &Repository, plan: &GcPlan, lock: &LockGuard) -> Result<Vec<String>> {
    if !lock.is_exclusive() || !plan.in_progress.is_empty() {
        return Err(Error::Invalid(
            "gc needs the exclusive lock to delete anything".into(),
        ));
    }
    let key = repo.key();
    let version = repo.config().index_version();
    let backend = repo.backend();
    let repack: IdSet<PackId> = plan.repack.iter().copied().collect();
    let index = repo.index()?;
    if !plan.marks.matches(&index) {
        return Err(Error::Invalid(
            "the index changed since gc planned; run gc again".into(),
        ));
    }
    confirm_listings(repo, plan, &index)?;
    // Per table, per pack number: whether the pack is repacked.
    let repacked: Vec<Vec<bool>> = plan
        .marks
        .tables
        .iter()
        .map(|m| m.packs.iter().map(|(p, _)| repack.contains(p)).collect())
        .collect();
    // Live blobs in packs to repack are gathered (only they) to be copied.
    let mut by_pack: IdMap<PackId, (BlobKind, Vec<PackEntry>)> = IdMap::default();
    for ((table, marks), repacked) in index.tables().iter().zip(&plan.marks.tables).zip(&repacked) {
        if !repacked.contains(&true) {
            continue;
        }
        for (w, word) in marks.bits.iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let e = table.entry_at(i)?;
                if repacked[e.pack as usize] {
                    let (pack, kind) = marks.packs[e.pack as usize];
                    by_pack
                        .entry(pack)
                        .or_insert_with(|| (kind, Vec::new()))
                        .1
                        .push(PackEntry {
                            id: e.id,
                            offset: e.offset,
                            length: e.length,
                            raw_length: e.raw_length,
                        });
                }
            }
        }
    }
    // Tables written so far (never removed below, even when one has the
    // name of a rewritten table).
    let mut written: Vec<IndexId> = Vec::new();
    // Copies are indexed in tables of at most this many entries, so that
    // a gc repacking most of a large repository holds no more in memory.
    const REPACK_TABLE_MAX: usize = 1 << 18;
    let mut builder = IndexBuilder::default();
    // Each index table is written only under a lock confirmed just before
    // (FORMAT.md, "Write ordering"): a gc whose lock went stale (suspended,
    // or `unlock --force`-d) may have had another gc delete packs its plan
    // names, and a table naming them would have backups skip storing what
    // they no longer hold.
    let write_table = |builder: IndexBuilder, written: &mut Vec<IndexId>| -> Result<()> {
        lock.confirm("gc stopped before indexing its copies; run it again")?;
        for (id, bytes) in builder.finish(key, version) {
            backend.write(FileKind::Index, &id.to_hex(), &bytes)?;
            written.push(id);
        }
        Ok(())
    };
    let mut writers: HashMap<BlobKind, PackWriter> = HashMap::new();
    let mut flush = |w: PackWriter, builder: &mut IndexBuilder| -> Result<()> {
        let mut pack = w.finish(key)?;
        lock.check("gc stopped part way; run it again to finish")?;
        repo.store_pack(&mut pack)?;
        crate::fault::point("gc-after-repack-write");
        builder.add_pack(pack.id, pack.header.kind, &pack.header.entries);
        if builder.len() >= REPACK_TABLE_MAX {
            write_table(std::mem::take(builder), &mut written)?;
        }
        Ok(())
    };
    let mut packs: Vec<_> = by_pack.into_iter().collect();
    packs.sort_by_key(|(p, _)| *p);
    for (_, (_, entries)) in &mut packs {
        entries.sort_by_key(|e| e.offset);
    }
    // The live blobs of the packs copied next are read in ahead of this
    // loop (see `crate::prefetch`), while it authenticates, copies and
    // stores those before.
    let spans = if backend.prefers_ranges() {
        Vec::new()
    } else {
        packs
            .iter()
            .map(|(pack, (_, entries))| {
                let extents = entries.iter().map(|e| (e.offset, e.length));
                (pack.to_hex(), crate::prefetch::span(extents))
            })
            .collect()
    };
    let queue = crate::prefetch::Queue::new(backend, FileKind::Pack, spans);
    // A live blob whose copy marked fails to open, copied from another
    // indexed copy that opens (a blob stored twice, the other copy's pack
    // staying and its table not written again, so no rescue looked at
    // it): until December 2026 gc stopped there, at every run.
    let mut from_other = Vec::new();
    let other_copy = |e: &PackEntry, kind: BlobKind, pack: PackId| {
        let mut tried = vec![pack];
        let usable =
            |p: &PackId, tried: &[PackId]| !tried.contains(p) && plan.sizes.contains_key(p);
        while let Some(loc) = index.locate_kind_where(&e.id, kind, &|p| usable(p, &tried))? {
            tried.push(loc.pack);
            let what = format!("pack {}", loc.pack.short());
            let sealed = backend
                .read_range(
                    FileKind::Pack,
                    &loc.pack.to_hex(),
                    u64::from(loc.offset),
                    loc.length as usize,
                )
                .map_err(stopped_by_store)?;
            match crate::pack::open_blob_with(key, &e.id, &sealed, loc.raw_length, &what, |_| ()) {
                Ok(()) if loc.raw_length == e.raw_length => return Ok(Some((sealed, loc.pack))),
                Ok(()) | Err(Error::Corrupt { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok::<_, Error>(None)
    };
    std::thread::scope(|s| -> Result<()> {
        queue.start(s, crate::prefetch::AHEAD);
        let taker = queue.taker();
        for (pack, (kind, entries)) in packs {
            taker.take();
            let data = backend
                .read(FileKind::Pack, &pack.to_hex())
                .map_err(stopped_by_store)?;
            let what = format!("pack {}", pack.short());
            // Nothing is deleted yet: a live blob that cannot be copied
            // stops gc, saying what to do about it.
            let stopped = |e: Error| Error::Advised {
                error: Box::new(e),
                advice: "gc stopped while repacking, before deleting anything: a live blob \
                         cannot be read where the index puts it; `cairn repair index \
                         --read-data` drops damaged copies from the index, then a backup \
                         stores again what the sources still have, `cairn repair snapshots` \
                         writes copies of the snapshots without what they do not, and gc \
                         can run"
                    .into(),
            };
            for e in entries {
                let end = e.offset as usize + e.length as usize;
                let sealed = data.get(e.offset as usize..end).ok_or_else(|| {
                    stopped(Error::corrupt(
                        &what,
                        format!("blob {} lies outside the pack", e.id.short()),
                    ))
                })?;
                // Copied without re-encoding, but authenticated first so damage
                // is never propagated silently.
                let other = match crate::pack::open_blob_with(
                    key,
                    &e.id,
                    sealed,
                    e.raw_length,
                    &what,
                    |_| (),
                ) {
                    Ok(()) => None,
                    Err(Error::Corrupt { what, detail }) => {
                        let detail = format!("blob {}: {detail}", e.id.short());
                        let Some((copy, from)) = other_copy(&e, kind, pack)? else {
                            return Err(stopped(Error::Corrupt { what, detail }));
                        };
                        from_other.push(format!(
                            "{what}: {detail}; copied from its other copy, in pack {}",
                            from.short()
                        ));
                        Some(copy)
                    }
                    Err(other) => return Err(other),
                };
                let w = writers.entry(kind).or_insert_with(|| PackWriter::new(kind));
                w.add_sealed(e.id, other.as_deref().unwrap_or(sealed), e.raw_length)?;
                if w.len() >= repo.config().pack_size as usize {
                    let full = std::mem::replace(w, PackWriter::new(kind));
                    flush(full, &mut builder)?;
                }
            }
        }
        Ok(())
    })?;
    for (_, w) in writers.drain() {
        if !w.is_empty() {
            flush(w, &mut builder)?;
        }
    }
    // The last copies (all of them, unless there were more than a
    // table's worth) go into the merged table below rather than a table
    // of their own: one table written and made durable instead of two.
    let copies = builder
        .finish(key, version)
        .into_iter()
        .map(|(id, bytes)| crate::index::IndexTable::parse(id, crate::backend::Data::Owned(bytes)))
        .collect::<Result<Vec<_>>>()?;
    let keep_all = |_: usize, _: &crate::index::Entry| true;
    // The surviving entries of the rewritten tables: live, and not in a
    // pack just copied.
    let rewrite: IdSet<IndexId> = plan.old_index.iter().copied().collect();
    let keeps: Vec<_> = plan
        .marks
        .tables
        .iter()
        .zip(&repacked)
        .map(|(marks, repacked)| {
            move |i: usize, e: &crate::index::Entry| marks.is_live(i) && !repacked[e.pack as usize]
        })
        .collect();
    let sources: Vec<MergeSource> = index
        .tables()
        .iter()
        .zip(&keeps)
        .filter(|(t, _)| rewrite.contains(&t.id()))
        .map(|(table, keep)| MergeSource { table, keep })
        .chain(copies.iter().map(|table| MergeSource {
            table,
            keep: &keep_all,
        }))
        .collect();
    // Marking keeps one entry per live blob, in a pack that exists, so
    // the sources hold each id once; should they not, the entry naming a
    // pack the plan listed is kept.
    let listed = |p: &PackId| Ok(plan.sizes.contains_key(p));
    lock.confirm("gc stopped before writing its index; run it again")?;
    written.extend(crate::index::write_merged(
        backend, key, &sources, version, &listed,
    )?);
    // Whatever follows, this repository's next use of the index maps the
    // tables as they then are.
    repo.reload_index();
    crate::fault::point("gc-after-index-write");
    lock.confirm("gc stopped before deleting anything; run it again")?;
    for old in &plan.old_index {
        if !written.contains(old) {
            lock.check("gc stopped part way; run it again to finish")?;
            backend.remove(FileKind::Index, &old.to_hex())?;
            crate::fault::point("gc-after-index-remove");
        }
    }
    // The rewritten tables are durably gone before the packs they name
    // go, and so are the snapshots a `forget` before gc removed: a table
    // or a snapshot that came back after a power cut would name removed
    // packs. (On a local store a folder whose removals an earlier fsync's
    // journal commit already carried costs little to settle.)
    backend.settle_removals()?;
    for pack in plan.delete.iter().chain(&plan.repack) {
        lock.check("gc stopped part way; run it again to finish")?;
        backend.remove(FileKind::Pack, &pack.to_hex())?;
        crate::fault::point("gc-after-pack-remove");
    }
    Ok(from_other)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU8;
    use std::sync::Arc;

    use super::*;
    use crate::archiver::{backup, BackupOptions};
    use crate::backend::mem::MemBackend;
    use crate::backend::testing::{noise, repo_of_small_packs, Hooked, Hooks, Outage};
    use crate::backend::Backend;

    /// The mark finds a blob used as one kind in the tables of the other
    /// when its own lack it (a table of version 1 that held a file's chunk
    /// only as the identical tree, merged into tables of one kind each),
    /// and prefers a table of its kind when both hold it.
    #[test]
    fn marking_looks_in_the_other_kinds_tables_last() {
        let key = crate::crypto::MasterKey::generate();
        let backend = MemBackend::default();
        backend.create().unwrap();
        let entry = |id: u8| PackEntry {
            id: BlobId([id; 32]),
            offset: 12,
            length: 10,
            raw_length: 5,
        };
        let (trees, data) = (PackId([1; 32]), PackId([2; 32]));
        let mut b = crate::index::IndexBuilder::default();
        b.add_pack(trees, BlobKind::Tree, &[entry(7), entry(8)]);
        b.add_pack(data, BlobKind::Data, &[entry(8)]);
        for (id, bytes) in b.finish(&key, crate::index::VERSION) {
            backend
                .write(FileKind::Index, &id.to_hex(), &bytes)
                .unwrap();
        }
        let index = IndexSet::load(&backend).unwrap();
        let sizes: IdMap<PackId, u64> = [(trees, 100), (data, 100)].into_iter().collect();
        let marks = Marks::new(&index, &sizes).unwrap();
        assert!(marks.mark(&index, &BlobId([7; 32]), BlobKind::Data));
        assert!(marks.mark(&index, &BlobId([8; 32]), BlobKind::Data));
        assert!(!marks.mark(&index, &BlobId([9; 32]), BlobKind::Data));
        let live = |kind: BlobKind, id: u8| {
            let (t, m) = index
                .tables()
                .iter()
                .zip(&marks.tables)
                .find(|(t, _)| t.kind() == Some(kind))
                .unwrap();
            t.find(&BlobId([id; 32])).is_some_and(|i| m.is_live(i))
        };
        assert!(live(BlobKind::Tree, 7), "found in the trees' table");
        assert!(live(BlobKind::Data, 8), "its own kind's entry marked");
        assert!(!live(BlobKind::Tree, 8), "not the other kind's as well");
    }

    /// Records the pack and index writes it lets through, in order. Once
    /// `mode` is [`SLOW`], a pack write first sleeps; once [`FAIL`], it
    /// fails.
    #[derive(Default)]
    struct Recorder {
        events: Arc<Mutex<Vec<FileKind>>>,
        mode: Arc<AtomicU8>,
        /// The kind of each file removed, in order, and `None` where
        /// removals were settled.
        removals: Arc<Mutex<Vec<Option<FileKind>>>>,
    }
    const SLOW: u8 = 1;
    const FAIL: u8 = 2;

    impl Hooks for Recorder {
        fn write(&self, kind: FileKind, _name: &str) -> Option<Result<()>> {
            if kind == FileKind::Pack {
                match self.mode.load(Ordering::SeqCst) {
                    SLOW => std::thread::sleep(std::time::Duration::from_millis(200)),
                    FAIL => return Some(Err(Error::Invalid("the store is full".into()))),
                    _ => {}
                }
            }
            if matches!(kind, FileKind::Pack | FileKind::Index) {
                self.events.lock().unwrap().push(kind);
            }
            None
        }

        fn remove(&self, kind: FileKind, _name: &str) -> Option<Result<()>> {
            self.removals.lock().unwrap().push(Some(kind));
            None
        }

        fn settle_removals(&self) -> Option<Result<()>> {
            self.removals.lock().unwrap().push(None);
            None
        }
    }

    /// A repository on a [`Recorder`]'s store, with its events and mode.
    struct Recorded {
        backend: Arc<dyn Backend>,
        repo: Repository,
        events: Arc<Mutex<Vec<FileKind>>>,
        mode: Arc<AtomicU8>,
        removals: Arc<Mutex<Vec<Option<FileKind>>>>,
    }

    /// A repository of two snapshots of eight files of 300 kB, half of
    /// them changed in the second, and the first forgotten: packs that
    /// are partly garbage. No events recorded yet.
    fn half_garbage() -> Recorded {
        let recorder = Recorder::default();
        let (events, mode) = (recorder.events.clone(), recorder.mode.clone());
        let removals = recorder.removals.clone();
        let backend: Arc<dyn Backend> = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: recorder,
        });
        let repo = half_garbage_on(&backend);
        events.lock().unwrap().clear();
        removals.lock().unwrap().clear();
        Recorded {
            backend,
            repo,
            events,
            mode,
            removals,
        }
    }

    /// On `backend`, a repository of two snapshots of eight files of 300
    /// kB, half of them changed in the second, and the first forgotten.
    fn half_garbage_on(backend: &Arc<dyn Backend>) -> Repository {
        let repo = repo_of_small_packs(backend.clone());
        let src = tempfile::tempdir().unwrap();
        let write = |i: u32, round: u32| {
            let bytes = noise(&[i as u8, round as u8], 300_000);
            std::fs::write(src.path().join(format!("f{i}")), bytes).unwrap();
        };
        let opts = BackupOptions {
            paths: vec![src.path().to_path_buf()],
            ..BackupOptions::default()
        };
        let mut first = None;
        for round in 0..2 {
            for i in (0..8).filter(|i| round == 0 || i % 2 == 0) {
                write(i, round);
            }
            let done = backup(&repo, &opts, &mut std::io::empty(), &|_| {}).unwrap();
            first.get_or_insert(done.id);
        }
        backend
            .remove(FileKind::Snapshot, &first.unwrap().to_hex())
            .unwrap();
        repo
    }

    /// A tree the store could not hand over (an outage), or would not (a
    /// pack this user may not read), is not damage: gc stops with the
    /// store's error, not with "snapshots are damaged" and advice to
    /// forget them.
    #[test]
    fn a_store_outage_or_refusal_while_marking_is_not_called_damage() {
        for (refuse, said, why) in [
            (
                false,
                "Connection refused",
                "run it again once the store answers",
            ),
            (true, "Permission denied", "no permission"),
        ] {
            let (store, backend) = outage_store();
            half_garbage_on(&backend);
            let repo = Repository::open(backend, b"pw").unwrap();
            if refuse {
                store.hooks.begin_refusing();
            } else {
                store.hooks.begin();
            }
            let e = plan(&repo, &GcOptions::default()).unwrap_err().to_string();
            assert!(e.contains(said), "{e}");
            assert!(e.contains(why), "{e}");
            assert!(e.contains("gc stopped before deleting anything"), "{e}");
            assert!(!e.contains("damaged"), "{e}");
            assert!(!e.contains("forget"), "{e}");
        }
    }

    /// A pack to repack that the store refuses to hand over (one this
    /// user may not read) stops gc before it deletes anything, saying it
    /// is no damage. (Until December 2026 the bare "Permission denied".)
    #[test]
    fn a_pack_to_repack_whose_read_is_refused_stops_gc_with_advice() {
        let (store, backend) = outage_store();
        half_garbage_on(&backend);
        let repo = Repository::open(backend.clone(), b"pw").unwrap();
        let opts = GcOptions {
            max_unused: 0.0,
            ..GcOptions::default()
        };
        let planned = plan(&repo, &opts).unwrap();
        assert!(!planned.repack.is_empty(), "{planned:?}");
        let packs_before = backend.list(FileKind::Pack).unwrap();
        let lock = exclusive_lock(&repo, &backend).unwrap();
        store
            .hooks
            .begin_refusing_for(planned.repack.iter().map(|p| p.to_hex()).collect());
        let e = execute(&repo, &planned, &lock).unwrap_err().to_string();
        assert!(e.contains("Permission denied"), "{e}");
        assert!(e.contains("gc stopped before deleting anything"), "{e}");
        assert!(e.contains("no permission"), "{e}");
        store.hooks.end();
        let packs_after = backend.list(FileKind::Pack).unwrap();
        for p in &packs_before {
            assert!(packs_after.contains(p), "pack {p} deleted");
        }
    }

    /// A blob stored twice whose kept copy is damaged, where the store
    /// cannot hand over the other (its retries spent): gc stops with the
    /// store's error. Until December 2026 it took the other copy for
    /// damaged too, and deleted it, the one intact copy, with its pack.
    #[test]
    fn a_rescue_whose_other_copy_cannot_be_read_stops_gc() {
        let (store, backend) = outage_store();
        let repo = repo_of_small_packs(backend.clone());
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), noise(b"twice", 300_000)).unwrap();
        back_up_twice(&repo, &backend, src.path());
        // The data blob's copies: the one gc keeps (found first) and the
        // other, whose pack holds nothing else live and goes.
        let index = repo.index().unwrap();
        let copies = copies_of(&index, BlobKind::Data);
        let (id, _) = copies
            .iter()
            .find(|(_, c)| c.len() == 2)
            .expect("a blob stored twice");
        let kept = index.locate_kind(id, BlobKind::Data).unwrap();
        let other = copies[id]
            .iter()
            .find(|l| l.pack != kept.pack)
            .unwrap()
            .pack;
        // Damage the kept copy, and have the store fail the other's reads.
        let name = kept.pack.to_hex();
        let mut bytes = backend.read(FileKind::Pack, &name).unwrap().to_vec();
        bytes[kept.offset as usize + kept.length as usize / 2] ^= 0x55;
        backend.remove(FileKind::Pack, &name).unwrap();
        backend.write(FileKind::Pack, &name, &bytes).unwrap();
        store.hooks.begin_for(vec![other.to_hex()]);

        let e = plan(&repo, &GcOptions::default()).unwrap_err().to_string();
        assert!(e.contains("Connection refused"), "{e}");
        assert!(e.contains("gc stopped before deleting anything"), "{e}");
        store.hooks.end();
        // Nor is a pack the store lists while a read finds no such pack
        // (listing and reads disagreeing) taken for gone, whichever copy's
        // it is: gc deleted the intact copy, exit 0, until December 2026.
        for pack in [other, kept.pack] {
            store.hooks.begin_vanishing_for(vec![pack.to_hex()]);
            let e = plan(&repo, &GcOptions::default()).unwrap_err().to_string();
            assert!(e.contains("is listed by the store"), "{e}");
            assert!(e.contains(&pack.short()), "{e}");
            assert!(e.contains("gc stopped before deleting anything"), "{e}");
            store.hooks.end();
        }
        // With the store answering, the intact copy is kept.
        let planned = plan(&repo, &GcOptions::default()).unwrap();
        assert!(!planned.delete.contains(&other), "{:?}", planned.delete);
        assert_eq!(planned.rescued.len(), 1, "{:?}", planned.rescued);
    }

    /// gc reads the live blobs of the packs it copies next ahead of its
    /// loop: each prefetch inside its pack and read after.
    #[test]
    fn repacking_prefetches_the_packs_it_copies_next() {
        let store = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: crate::backend::testing::ReadsAhead::default(),
        });
        let backend: Arc<dyn Backend> = store.clone();
        let repo = half_garbage_on(&backend);
        // The packs copied are gone afterwards: their sizes, before.
        let sizes: HashMap<String, u64> = backend
            .list_sizes(FileKind::Pack)
            .unwrap()
            .into_iter()
            .collect();
        store.hooks.events.lock().unwrap().clear();
        collect(&repo, &backend).unwrap();
        let reads = store
            .hooks
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, w)| w.is_none())
            .count();
        assert!(reads >= 2, "{reads} packs repacked");
        store.hooks.check_prefetches(|name| sizes[name]);
        assert!(
            store.hooks.read_after_prefetch() >= 1,
            "no pack read after its prefetch"
        );
    }

    /// gc's exclusive lock on `repo`, taken without waiting.
    fn exclusive_lock(repo: &Repository, backend: &Arc<dyn Backend>) -> Result<LockGuard> {
        crate::repo::lock::acquire(
            backend.clone(),
            repo.key(),
            true,
            "gc",
            std::time::Duration::ZERO,
        )
    }

    /// An empty store that fails pack reads when told to (see
    /// [`Outage`]), and the same store as a backend.
    /// Every indexed copy of each blob of `kind`, by blob.
    fn copies_of(index: &IndexSet, kind: BlobKind) -> HashMap<BlobId, Vec<crate::index::Location>> {
        let mut copies: HashMap<BlobId, Vec<crate::index::Location>> = HashMap::new();
        for t in index.tables().iter().filter(|t| t.holds(kind)) {
            for i in 0..t.len() {
                let (id, loc) = t.location_at(i).unwrap();
                copies.entry(id).or_default().push(loc);
            }
        }
        copies
    }

    /// Backs `src` up into `repo` twice, each copy of every blob stored
    /// apart: the second backup finds no index, as one beside the first
    /// would not have found the other's blobs.
    fn back_up_twice(repo: &Repository, backend: &Arc<dyn Backend>, src: &std::path::Path) {
        use crate::backend::testing::backup_from_elsewhere;
        backup_from_elsewhere(backend.clone(), src);
        let tables: Vec<(String, Vec<u8>)> = (backend.list(FileKind::Index).unwrap())
            .into_iter()
            .map(|n| {
                let bytes = backend.read(FileKind::Index, &n).unwrap().to_vec();
                backend.remove(FileKind::Index, &n).unwrap();
                (n, bytes)
            })
            .collect();
        backup_from_elsewhere(backend.clone(), src);
        for (n, bytes) in &tables {
            backend.write(FileKind::Index, n, bytes).unwrap();
        }
        repo.reload_index();
    }

    /// A tree stored twice whose kept copy is damaged in the store, while
    /// this host's cache holds that tree pack intact: gc reads the kept
    /// copy from the store, so it keeps the other copy instead. It read it
    /// through the cache, found it sound, and deleted the only intact
    /// copy in the repository with its pack.
    #[test]
    fn the_copy_kept_is_checked_in_the_store_not_in_the_cache() {
        let backend: Arc<dyn Backend> = Arc::new(MemBackend::default());
        let plain = repo_of_small_packs(backend.clone());
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), noise(b"trees twice", 1_000)).unwrap();
        back_up_twice(&plain, &backend, src.path());
        let cache = tempfile::tempdir().unwrap();
        let repo = Repository::open(backend.clone(), b"pw")
            .unwrap()
            .with_cache(cache.path())
            .unwrap();
        let index = repo.index().unwrap();
        let copies = copies_of(&index, BlobKind::Tree);
        let (id, _) = copies
            .iter()
            .find(|(_, c)| c.len() == 2)
            .expect("a tree stored twice");
        let kept = index.locate_kind(id, BlobKind::Tree).unwrap();
        // Into the cache, then damaged in the store only.
        repo.read_located(id, kept).unwrap();
        let name = kept.pack.to_hex();
        let mut bytes = backend.read(FileKind::Pack, &name).unwrap().to_vec();
        bytes[kept.offset as usize + kept.length as usize / 2] ^= 0x55;
        backend.remove(FileKind::Pack, &name).unwrap();
        backend.write(FileKind::Pack, &name, &bytes).unwrap();
        assert!(
            repo.read_located(id, kept).is_ok(),
            "the cache holds it intact"
        );

        let planned = plan(&repo, &GcOptions::default()).unwrap();
        let said = planned.rescued.join("\n");
        assert!(
            said.contains(&format!("blob {} is kept in pack ", id.short()))
                && said.contains(&format!(
                    "as its copy in pack {} is damaged",
                    kept.pack.short()
                )),
            "{planned:?}"
        );
    }

    /// Counts the reads of ranges in flight at once, each held a while.
    #[derive(Default)]
    struct InFlight {
        now: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    impl Hooks for InFlight {
        fn read_range(&self, _kind: FileKind, _name: &str) -> Option<Result<Vec<u8>>> {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            self.now.fetch_sub(1, Ordering::SeqCst);
            None
        }
    }

    /// The copies gc keeps of blobs stored twice, whose other copies go,
    /// are read several at a time: one at a time, a gc on S3 after
    /// backups that ran side by side read 17,000 of them for three
    /// minutes under its exclusive lock.
    #[test]
    fn the_copies_kept_of_blobs_stored_twice_are_read_several_at_a_time() {
        let store = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: InFlight::default(),
        });
        let backend: Arc<dyn Backend> = store.clone();
        let repo = repo_of_small_packs(backend.clone());
        let src = tempfile::tempdir().unwrap();
        for i in 0..8u8 {
            std::fs::write(src.path().join(format!("f{i}")), noise(&[i], 100_000)).unwrap();
        }
        back_up_twice(&repo, &backend, src.path());
        let planned = plan(&repo, &GcOptions::default()).unwrap();
        assert!(!planned.delete.is_empty(), "{planned:?}");
        assert!(planned.rescued.is_empty(), "{planned:?}");
        let most = store.hooks.most.load(Ordering::SeqCst);
        assert!(most >= 2, "at most {most} read at once");
    }

    fn outage_store() -> (Arc<Hooked<MemBackend, Outage>>, Arc<dyn Backend>) {
        let store = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: Outage::default(),
        });
        let backend: Arc<dyn Backend> = store.clone();
        (store, backend)
    }

    fn collect(repo: &Repository, backend: &Arc<dyn Backend>) -> Result<()> {
        let lock = exclusive_lock(repo, backend)?;
        let opts = GcOptions {
            max_unused: 0.0,
            ..GcOptions::default()
        };
        let plan = plan(repo, &opts)?;
        assert!(!plan.repack.is_empty(), "nothing to repack: {plan:?}");
        execute(repo, &plan, &lock).map(|_| ())
    }

    /// The merged table names the packs of copies, so it is written only
    /// once they are stored: a pack write that takes long still comes
    /// first.
    #[test]
    fn the_merged_table_waits_for_the_copies_pack() {
        let r = half_garbage();
        r.mode.store(SLOW, Ordering::SeqCst);
        collect(&r.repo, &r.backend).unwrap();
        let events = r.events.lock().unwrap().clone();
        let first_index = events.iter().position(|k| *k == FileKind::Index);
        let last_pack = events.iter().rposition(|k| *k == FileKind::Pack);
        assert!(
            matches!((last_pack, first_index), (Some(p), Some(i)) if p < i),
            "{events:?}"
        );
    }

    /// The index tables gc rewrote are removed, and their removal settled
    /// (made durable), before any pack they name is removed.
    #[test]
    fn rewritten_tables_are_durably_gone_before_their_packs() {
        let r = half_garbage();
        collect(&r.repo, &r.backend).unwrap();
        let removals = r.removals.lock().unwrap().clone();
        let settled = removals.iter().position(Option::is_none);
        let last_table = removals.iter().rposition(|k| *k == Some(FileKind::Index));
        let first_pack = removals.iter().position(|k| *k == Some(FileKind::Pack));
        assert!(
            matches!((last_table, settled, first_pack), (Some(t), Some(s), Some(p)) if t < s && s < p),
            "{removals:?}"
        );
    }

    /// A pack of copies that cannot be stored stops gc before any index
    /// table is written or anything removed.
    #[test]
    fn a_copies_pack_that_cannot_be_stored_stops_gc_unchanged() {
        let r = half_garbage();
        let before = |kind| {
            let mut names = r.backend.list(kind).unwrap();
            names.sort();
            names
        };
        let (index, packs) = (before(FileKind::Index), before(FileKind::Pack));
        r.mode.store(FAIL, Ordering::SeqCst);
        let err = collect(&r.repo, &r.backend).unwrap_err();
        assert!(err.to_string().contains("the store is full"), "{err}");
        assert_eq!(*r.events.lock().unwrap(), Vec::<FileKind>::new());
        assert_eq!(before(FileKind::Index), index);
        assert_eq!(before(FileKind::Pack), packs);
    }
}
