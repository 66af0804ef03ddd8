//! `verify`: check that every snapshot can be restored.
//!
//! Structure (always): every key file decodes (and, given the password,
//! says whether it opens with it), index tables authenticate and are
//! ordered, every
//! index entry points inside an existing pack, every snapshot decodes, every
//! tree it reaches decodes, and every blob a tree names is indexed in an
//! existing pack. With `read_data`, every selected pack is read in full (in
//! parallel, through memory maps on the local backend) and every blob in it
//! is authenticated, decompressed and re-hashed.
//!
//! Damage is attributed precisely: each bad or missing blob with its pack,
//! and every snapshot and path that loses data because of it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name, BlobId, PackId, SnapshotId};
use crate::pack;
use crate::repo::{keys, Repository};
use crate::snapshot::Snapshot;
use crate::tree::{Name, NodeKind, Ref, TreeBlob};

mod data;
mod subset;

use data::read_packs;
pub use data::{bad_blobs, BadBlobs};
pub use subset::{Subset, SubsetWindow};

/// What to check.
#[derive(Clone, Default)]
pub struct VerifyOptions<'a> {
    /// The password the repository was opened with: every key file is
    /// tried with it, to report which ones it opens. Without it key files
    /// are only checked for structure.
    pub password: Option<Zeroizing<Vec<u8>>>,
    /// Read and check pack contents.
    pub read_data: Option<Subset>,
    /// The day `N%` subsets are chosen for, in days since 1970-01-01 UTC
    /// (the CLI passes today).
    pub day: u64,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// The check's own lock, where it holds one: packs no index names are
    /// said as a running backup's where others hold writers' locks once
    /// the packs are listed.
    pub lock: Option<&'a crate::repo::lock::LockGuard>,
    /// The root of this host's metadata caches, if it has one: an intact
    /// copy there of a pack the store lost or damaged is said.
    pub cache_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for VerifyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("read_data", &self.read_data)
            .field("day", &self.day)
            .field("workers", &self.workers)
            .finish()
    }
}

/// A key file and what verify found out about it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyStatus {
    /// The key file's name.
    pub id: String,
    /// Whether the password opens it (`None`: damaged, or not tried).
    pub opens: Option<bool>,
    /// What is wrong with it, if anything.
    pub problem: Option<String>,
}

/// One problem found.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// The object concerned, e.g. `pack 1a2b3c4d`.
    pub object: String,
    /// What is wrong.
    pub message: String,
    /// Whether an intact copy in this host's cache mends it (a repair run
    /// on this host puts it back): that repair comes before any other.
    #[serde(skip)]
    pub mended_here: bool,
}

/// A file (or directory) that loses data, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Damage {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Absolute path inside the snapshot: in JSON as text (bytes that
    /// are no UTF-8 as U+FFFD), in messages escaped (as `\xff`).
    pub path: Name,
    /// The blob that is missing or bad: a chunk, or (`tree`) the tree
    /// that cannot be read or whose entry is wrong.
    pub blob: BlobId,
    /// Whether `blob` is a tree.
    #[serde(skip)]
    pub tree: bool,
    /// The pack that should hold it, when known.
    pub pack: Option<PackId>,
    /// Why it cannot be read.
    pub reason: String,
    /// Whether it was read and found damaged (it failed to authenticate
    /// or to decode), not missing: a read of its pack says what mends it.
    #[serde(skip)]
    pub corrupt: bool,
}

/// Everything verify found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Key files, by name.
    pub keys: Vec<KeyStatus>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Distinct trees checked.
    pub trees: usize,
    /// Packs in the repository.
    pub packs: usize,
    /// Index tables.
    pub index_tables: usize,
    /// Packs read with read-data.
    pub packs_read: usize,
    /// Blobs read and re-hashed.
    pub blobs_read: u64,
    /// Bytes of packs read.
    pub bytes_read: u64,
    /// Which packs were read, with `--read-data-subset`.
    pub read_subset: Option<SubsetWindow>,
    /// Damage and structural errors.
    pub errors: Vec<Problem>,
    /// Things that are not damage (e.g. unreferenced packs).
    pub warnings: Vec<Problem>,
    /// Files and directories that lose data.
    pub damaged: Vec<Damage>,
}

impl VerifyReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.damaged.is_empty()
    }
}

/// Where an intact copy of a pack of trees the store lost or damaged may
/// be, on a remote store: said before the repairs that would drop it.
pub(crate) const TREES_ELSEWHERE: &str = " (a pack of trees: the cache of a host that wrote or \
     read it may hold an intact copy, which `cairn verify` there names and `cairn repair index` \
     there puts back: do that first)";

/// What is wrong with an index table, and what mends it (the table is
/// already named as the problem's object).
fn index_damage(e: &Error) -> String {
    let what = match e {
        Error::Corrupt { detail, .. } => format!("corrupt: {detail}"),
        e => e.to_string(),
    };
    format!("{what}; `cairn repair index` rebuilds the index from the packs")
}

/// A store that stops answering (a transient error, retries spent) or
/// refuses a read (no permission) says nothing about the repository:
/// verify stops with the store's error rather than report every tree and
/// pack after as damaged.
fn stopped(e: Error) -> Error {
    e.unless_store_unavailable("verify stopped")
}

/// The packs this host's cache holds intact copies of
/// where the store lost or damaged them (see
/// [`crate::backend::cache::copy_mends`]), each said with what puts it
/// back: the one intact copy may be there, and every other repair drops
/// what the pack holds.
fn intact_copies(
    cache: &crate::backend::cache::Cache,
    packs: &HashMap<PackId, u64>,
    named: &HashSet<PackId>,
    not_their_hash: &[PackId],
) -> Vec<Problem> {
    let mending = cache.mending_copies(&|p| packs.get(p).copied(), &|p| named.contains(p), &|p| {
        not_their_hash.contains(p)
    });
    mending
        .into_iter()
        .map(|m| {
            mended_here(
                format!("pack {}", m.pack.short()),
                format!(
                    "{}, but this host's cache holds an intact copy of it ({}): {}, run on \
                     this host, puts it back into the repository; run it before any other \
                     repair, which would drop what the pack holds",
                    m.why,
                    cache.copy_path(FileKind::Pack, &m.pack.to_hex()).display(),
                    m.repair
                ),
            )
        })
        .collect()
}

fn problem(object: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        object: object.into(),
        message: message.into(),
        mended_here: false,
    }
}

/// A [`problem`] an intact copy in this host's cache mends (see
/// [`Problem::mended_here`]).
fn mended_here(object: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        mended_here: true,
        ..problem(object, message)
    }
}

/// Why a blob cannot be read, if it cannot.
#[derive(Clone)]
enum Fault {
    NotIndexed,
    PackMissing(PackId),
    Bad(PackId, String),
}

impl Fault {
    fn pack(&self) -> Option<PackId> {
        match self {
            Fault::NotIndexed => None,
            Fault::PackMissing(p) | Fault::Bad(p, _) => Some(*p),
        }
    }
    fn reason(&self) -> String {
        match self {
            Fault::NotIndexed => "not in the index".into(),
            Fault::PackMissing(p) => format!("pack {} is missing", p.short()),
            Fault::Bad(p, why) => format!("damaged in pack {}: {why}", p.short()),
        }
    }
}

/// Per-tree facts gathered in the parallel walk.
#[derive(Default)]
struct TreeFacts {
    children: Vec<BlobId>,
    damaged: bool,
    /// Why a directory in parts is not one, though each part may be a
    /// sound tree: their names out of order or repeated across parts, an
    /// empty part, a part that is itself a list of parts.
    parts_wrong: Option<String>,
    /// Why the walk could not read the tree (its subtrees were then not
    /// walked).
    unreadable: Option<String>,
}

/// `config` that did not open the repository (its copy did) is damage;
/// a copy missing or not `config`'s bytes is a warning (a repository made
/// before the copy was kept; an upgrade stopped between the two writes),
/// which the next command that writes mends.
fn check_config_copy(repo: &Repository, report: &mut VerifyReport) {
    use crate::backend::CONFIG_COPY;
    if let Some(said) = repo.config_trouble() {
        report.errors.push(problem("config", said));
        return;
    }
    let backend = repo.backend();
    let (Ok(config), copy) = (
        backend.read(FileKind::Config, ""),
        backend.read(FileKind::Config, CONFIG_COPY),
    ) else {
        return;
    };
    let why = match copy {
        Ok(copy) if *copy == *config => return,
        Ok(copy) => match crate::repo::Config::decode(&copy, repo.key()) {
            Ok(_) => {
                "is not the config's copy (an upgrade stopped between writing the two?)".into()
            }
            Err(e) => format!("is damaged ({e})"),
        },
        Err(e) if e.is_not_found() => "is missing (a repository made before cairn kept one)".into(),
        Err(_) => "cannot be read".to_string(),
    };
    report.warnings.push(problem(
        "config.copy",
        format!(
            "{why}: config has no spare should it be lost or damaged; the next command that \
             writes makes it (`cairn repair config` does)"
        ),
    ));
}

/// Runs the checks.
pub fn verify(repo: &Repository, opts: &VerifyOptions) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let backend = repo.backend();
    // Looked into only for intact copies of what the store lost or damaged.
    let cache = opts
        .cache_root
        .as_deref()
        .and_then(|root| crate::backend::cache::Cache::existing(root, &repo.config().repo_id));
    check_keys(
        repo,
        opts.password.as_deref().map(Vec::as_slice),
        &mut report,
    )?;
    check_config_copy(repo, &mut report);

    // Read in the reverse of a backup's write order (packs, then index
    // tables, then the snapshot): snapshots first, then the index, then
    // the packs. A backup that finishes meanwhile then has all it wrote
    // for a snapshot listed here in the index and the packs read after,
    // and what it wrote after the snapshots were listed is merely not
    // checked (unindexed packs are warnings, never damage).
    let mut snapshots: Vec<(SnapshotId, Snapshot)> = Vec::new();
    let mut names = backend.list(FileKind::Snapshot)?;
    names.sort();
    let snapshot_files = names.iter().filter(|n| is_hex_name(n)).count();
    for name in names {
        if !is_hex_name(&name) {
            continue;
        }
        let id = SnapshotId::from_hex(&name)?;
        match Snapshot::load(backend, repo.key(), &id) {
            Ok(s) => snapshots.push((id, s)),
            Err(e) if e.is_store_unavailable() => return Err(stopped(e)),
            // Damage of the file, as `load_all` sets apart (a file still
            // listed but not found too: no forget runs beside verify).
            Err(e) if e.is_not_found() || crate::snapshot::unreadable(&e).is_some() => {
                let e = match e {
                    Error::NotFound(_) => crate::snapshot::NOT_THERE.to_string(),
                    e => e.to_string(),
                };
                // This host's cache may hold it intact (named by its hash).
                let copy = cache
                    .as_ref()
                    .filter(|c| c.get(FileKind::Snapshot, &name).is_some())
                    .map(|c| c.copy_path(FileKind::Snapshot, &name));
                let here = copy.is_some();
                let mends = match copy {
                    Some(path) => format!(
                        "this host's cache holds an intact copy of it ({}): `cairn repair \
                         snapshots`, run on this host, puts it back into the repository; do not \
                         forget it",
                        path.display()
                    ),
                    None => format!(
                        "put back an intact copy of snapshots/{id}{}, or remove it with `cairn \
                         forget {}` if it is lost (gc refuses to run until then)",
                        if backend.prefers_ranges() {
                            " (the cache of a host that wrote or read it may hold one: `cairn \
                             verify` there names it)"
                        } else {
                            ""
                        },
                        id.short()
                    ),
                };
                report.errors.push(Problem {
                    mended_here: here,
                    ..problem(format!("snapshot {}", id.short()), format!("{e}: {mends}"))
                })
            }
            Err(e) => report
                .errors
                .push(problem(format!("snapshot {}", id.short()), e.to_string())),
        }
    }
    report.snapshots = snapshots.len();

    // Index tables: one that cannot even be parsed is damage, and the
    // others are still checked.
    let unparseable = repo.index_lenient()?;
    // A table that cannot be read or fails its MAC may be what indexes
    // the packs no sound table names.
    let mut tables_damaged = !unparseable.is_empty();
    let index = repo.index()?;
    report.index_tables = index.tables().len() + unparseable.len();
    for (id, e) in unparseable {
        report
            .errors
            .push(problem(format!("index {}", id.short()), index_damage(&e)));
    }

    // What stands where a file goes, named as one, is no file of the
    // repository's: every command passes over it (FORMAT.md, "Layout").
    // Said, since it may be a file that was lost (a snapshot turned into
    // a folder by hand, a FIFO planted to hang clients).
    for kind in [
        FileKind::Snapshot,
        FileKind::Index,
        FileKind::Pack,
        FileKind::Key,
        FileKind::Lock,
    ] {
        for (place, what) in backend.not_files(kind)? {
            report.warnings.push(problem(
                place,
                format!(
                    "{what} where a file goes: not one of the repository's files, and passed \
                     over by every command; move it away"
                ),
            ));
        }
    }

    // Lock files that hold no lock (another repository's, copied in; one
    // torn by a crash) are passed over by every command: said, as one
    // may have been a lock that mattered.
    for name in crate::repo::lock::not_locks(backend, repo.key())? {
        report.warnings.push(problem(
            format!("lock {}", name.get(..8).unwrap_or(&name)),
            "holds no lock (it does not decode: empty, torn, or sealed with another \
             repository's key), so every command passes over it; `cairn unlock --force` \
             removes it",
        ));
    }

    // What else `snapshots/` holds (a snapshot file renamed by a sync
    // tool, or moved into a folder): no snapshot to any reader, and gc
    // refuses while it is there (`gc::refuse_strays`).
    let strays = backend.strays(FileKind::Snapshot)?;
    if let Some(said) = crate::gc::strays_said(&strays) {
        report.warnings.push(problem(
            "snapshots/",
            format!(
                "{said}: a snapshot renamed or moved into a folder is read as none, and gc \
                 refuses to run while {} there; rename such a file back to its id, or move it \
                 out of snapshots/",
                if strays.len() == 1 {
                    "it is"
                } else {
                    "they are"
                },
            ),
        ));
    }

    // Packs present, with sizes: one listing, not one request per pack.
    let mut packs: HashMap<PackId, u64> = HashMap::new();
    for (name, size) in backend.list_sizes(FileKind::Pack)? {
        if !is_hex_name(&name) {
            report
                .warnings
                .push(problem(format!("packs/{name}"), "unexpected file"));
            continue;
        }
        packs.insert(PackId::from_hex(&name)?, size);
    }
    report.packs = packs.len();
    for (place, home) in backend.misplaced_packs()? {
        report.warnings.push(problem(
            place,
            format!(
                "a pack file in another folder than its name's, passed over by every \
                 command: move it to {home} (`cairn repair index` does)"
            ),
        ));
    }
    let missing = backend.missing_folders()?;
    for dir in &missing {
        // Without keys/, no password opens the repository, but gc takes
        // nothing of it for gone, and runs (with an exported key).
        let meanwhile = if *dir == FileKind::Key.dir() {
            "no password opens the repository meanwhile, only an exported key"
        } else {
            "gc refuses to run meanwhile"
        };
        let rebuilt = if *dir == FileKind::Index.dir() {
            " (with no copy of it, `cairn repair index` rebuilds it from the packs)"
        } else {
            ""
        };
        report.errors.push(problem(
            format!("{dir}/"),
            format!(
                "missing: the folder is gone, and every file it held with it (left out by a \
                 copy or a sync?); put it back from a copy of the repository{rebuilt}; \
                 {meanwhile}"
            ),
        ));
    }
    // Every pack is garbage then: said, as a sync that lost the snapshot
    // files leaves a repository that looks like this, and `gc
    // --delete-all` would delete all of it (gc alone refuses).
    if snapshot_files == 0 && !packs.is_empty() && !missing.contains(&FileKind::Snapshot.dir()) {
        report.warnings.push(problem(
            "snapshots/",
            format!(
                "no snapshot, while {} pack(s) hold data: gc refuses to delete them all, \
                 and `gc --delete-all` would; if snapshots were lost, put them back from a \
                 copy before any gc",
                packs.len()
            ),
        ));
    }

    // Every entry of every table that authenticates points inside a pack
    // present.
    let mut indexed_packs: HashSet<PackId> = HashSet::new();
    let mut missing_packs: HashMap<PackId, u64> = HashMap::new();
    // Of those, tree packs: a host's cache may hold them.
    let mut missing_trees: HashSet<PackId> = HashSet::new();
    for table in index.tables() {
        let what = format!("index {}", table.id().short());
        if let Err(e) = table.check(repo.key()) {
            tables_damaged = true;
            report.errors.push(problem(&what, index_damage(&e)));
            continue;
        }
        // Its MAC authenticates what it says: the name alone is wrong.
        if !table.name_matches_content() {
            report.warnings.push(problem(
                &what,
                "content does not match its name (renamed or copied by hand?): its entries \
                 authenticate and are used; `cairn repair index` writes the index again \
                 under proper names",
            ));
        }
        let mut out_of_bounds = 0u64;
        for i in 0..table.len() {
            let (_, loc) = table.location_at(i)?;
            indexed_packs.insert(loc.pack);
            match packs.get(&loc.pack) {
                None => {
                    *missing_packs.entry(loc.pack).or_default() += 1;
                    if loc.kind == pack::BlobKind::Tree {
                        missing_trees.insert(loc.pack);
                    }
                }
                Some(&size) => {
                    if u64::from(loc.offset) + u64::from(loc.length) > size
                        || loc.offset < pack::HEADER_LEN as u32
                    {
                        out_of_bounds += 1;
                    }
                }
            }
        }
        if out_of_bounds > 0 {
            // A pack of trees cut short: another host's cache may hold it.
            let elsewhere = match backend.prefers_ranges() && table.holds(pack::BlobKind::Tree) {
                true => TREES_ELSEWHERE,
                false => "",
            };
            report.errors.push(problem(
                &what,
                format!(
                    "{out_of_bounds} entries point outside their pack (damage to the table, \
                     or a pack cut short{elsewhere}); `cairn repair index` rebuilds the index \
                     from the packs"
                ),
            ));
        }
    }
    let mut missing: Vec<_> = missing_packs.into_iter().collect();
    missing.sort();
    for (p, n) in missing {
        // Another host's cache may hold an intact copy of a tree pack.
        let elsewhere = if missing_trees.contains(&p) && backend.prefers_ranges() {
            TREES_ELSEWHERE
        } else {
            ""
        };
        report.errors.push(problem(
            format!("pack {}", p.short()),
            format!(
                "missing, but the index names {n} blobs in it ({p}); if the pack was \
                 deleted{elsewhere}, `cairn repair index` drops them from the index, the next \
                 backup then stores again what the source still has (mending every snapshot \
                 that uses it), and `cairn repair snapshots` writes copies of \
                 the snapshots without what is still lost"
            ),
        ));
    }
    let mut unindexed: Vec<&PackId> = packs
        .keys()
        .filter(|p| !indexed_packs.contains(p))
        .collect();
    unindexed.sort();
    // Listed after the packs were: a backup that began before then may
    // be writing them (gc's dry run lists them as in progress).
    let others_writing = match opts.lock {
        Some(lock) if !unindexed.is_empty() => lock.others_writing()?,
        _ => false,
    };
    let why_unindexed = if others_writing {
        "not in the index: a backup running beside this check may be writing it (another \
         command holds a lock to write); if it stays once no backup runs, `cairn gc` \
         removes it, or an index table was lost (`cairn repair index` restores it)"
    } else if tables_damaged {
        // gc refuses now; its advice would delete what the damaged table
        // indexes once the table was removed by hand.
        "not in a sound index table: a damaged index table (named among the errors) may be \
         what names it; `cairn repair index` rebuilds the index from the packs, this one \
         included"
    } else {
        "not in the index: left by an interrupted backup or gc (`cairn gc` removes it), \
         or an index table was lost (`cairn repair index` restores it)"
    };
    for p in unindexed {
        report
            .warnings
            .push(problem(format!("pack {}", p.short()), why_unindexed));
    }

    // Read data.
    let mut not_their_hash: Vec<PackId> = Vec::new();
    let bad: HashMap<(BlobId, PackId), String> = match opts.read_data {
        Some(subset) => {
            if subset != Subset::All {
                report.read_subset = Some(subset.window(opts.day));
            }
            read_packs(
                repo,
                &packs,
                subset,
                opts.day,
                opts.workers,
                true,
                &mut report,
            )
            .map_err(stopped)
            .map(|read| {
                not_their_hash = read.not_their_hash;
                read.bad
            })?
        }
        None => HashMap::new(),
    };
    // Damage the copy proves (a pack of another size than its own is not
    // otherwise found without reading it): errors, each with its mending.
    if let Some(cache) = &cache {
        report.errors.extend(intact_copies(
            cache,
            &packs,
            &indexed_packs,
            &not_their_hash,
        ));
    }

    // Trees: every chunk every tree names is looked up.
    index.build_directories(usize::MAX);
    // A chunk whose entry names a missing pack but that is indexed again
    // in a pack present is read from there (as a restore reads it): the
    // snapshot has lost nothing, though the index is reported above.
    // With one lookup: what is wrong with a chunk, if anything, and its
    // length as the index has it (if indexed).
    let present = |p: &PackId| packs.contains_key(p);
    let chunk = |id: &BlobId| -> (Option<Fault>, Option<u64>) {
        let loc = match index.lookup(id) {
            Ok(None) | Err(_) => return (Some(Fault::NotIndexed), None),
            Ok(Some(loc)) if !present(&loc.pack) => {
                match index.locate_kind_where(id, pack::BlobKind::Data, &present) {
                    Ok(Some(other)) => other,
                    _ => {
                        let len = u64::from(loc.raw_length);
                        return (Some(Fault::PackMissing(loc.pack)), Some(len));
                    }
                }
            }
            Ok(Some(loc)) => loc,
        };
        // An entry past its pack's end (a pack cut short) loses the chunk
        // unless another copy lies whole in a pack present: the files
        // using it are named, as `--read-data` would name them.
        let whole = |p: &PackId, l: &crate::index::Location| {
            packs
                .get(p)
                .is_some_and(|&size| u64::from(l.offset) + u64::from(l.length) <= size)
        };
        let loc = if whole(&loc.pack, &loc) {
            loc
        } else {
            let cut = loc.pack;
            let other = |p: &PackId| *p != cut && present(p);
            match index.locate_kind_where(id, pack::BlobKind::Data, &other) {
                Ok(Some(o)) if whole(&o.pack, &o) => o,
                _ => {
                    let why = format!(
                        "it lies past the pack's end, at byte {}: the pack was cut short, or \
                         holds other content than the index says",
                        packs[&cut]
                    );
                    return (Some(Fault::Bad(cut, why)), Some(u64::from(loc.raw_length)));
                }
            }
        };
        // A damaged copy with an intact one elsewhere (a blob stored
        // twice) is read around by a restore: the damaged copy is
        // reported with its pack, the files using it are not damaged.
        let intact = |p: &PackId| present(p) && !bad.contains_key(&(*id, *p));
        let fault = bad.get(&(*id, loc.pack)).and_then(|why| {
            match index.locate_kind_where(id, pack::BlobKind::Data, &intact) {
                Ok(Some(_)) => None,
                _ => Some(Fault::Bad(loc.pack, why.clone())),
            }
        });
        (fault, Some(u64::from(loc.raw_length)))
    };
    let fault = |id: &BlobId| chunk(id).0;
    let raw_len = |id: &BlobId| chunk(id).1;
    let facts: Mutex<HashMap<BlobId, TreeFacts>> = Mutex::new(HashMap::new());
    let roots: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    report.trees = crate::walker::for_each_tree(repo, &roots, opts.workers, &|id, tree| {
        let f = match tree {
            Ok(refs) => {
                let mut f = TreeFacts {
                    children: Vec::new(),
                    damaged: false,
                    parts_wrong: None,
                    unreadable: None,
                };
                // What the chunks of the file being read hold; `None` once
                // one is not indexed (reported as such).
                let mut held = Some(0u64);
                for r in refs {
                    match r {
                        Ref::Subtree(t) | Ref::Part(t) => f.children.push(*t),
                        Ref::Chunk(c) => {
                            let (fault, len) = chunk(c);
                            f.damaged |= fault.is_some();
                            held = held.zip(len).map(|(a, b)| a.saturating_add(b));
                        }
                        // A restore writes such a file, and fails it.
                        Ref::FileSize(size) => {
                            f.damaged |= held.is_some_and(|h| h != *size);
                            held = Some(0);
                        }
                    }
                }
                // Each part is a tree of its own to the walk: whether they
                // make one directory is read as a restore reads it (each
                // part a second time, for the few directories this large).
                if refs.iter().any(|r| matches!(r, Ref::Part(_))) {
                    let read = repo
                        .dir_nodes(&id)
                        .and_then(|mut nodes| nodes.try_for_each(|n| n.map(drop)));
                    if let Err(e) = read {
                        f.damaged = true;
                        f.parts_wrong = Some(e.to_string());
                    }
                }
                f
            }
            Err(e) => TreeFacts {
                children: Vec::new(),
                damaged: true,
                parts_wrong: None,
                unreadable: Some(e.to_string()),
            },
        };
        if let Ok(mut m) = facts.lock() {
            m.insert(id, f);
        }
    })
    .map_err(stopped)?;
    // Trees read from another copy around a damaged one: damage all the
    // same, to be mended before that other copy is lost too (the read of
    // every pack names it already).
    for around in repo.take_read_around() {
        if !bad.contains_key(&(around.id, around.damaged)) {
            report.errors.push(problem(
                format!("pack {}", around.damaged.short()),
                around.to_string(),
            ));
        }
    }
    let facts = facts
        .into_inner()
        .map_err(|_| Error::Invalid("verify worker panicked".into()))?;

    // Which trees lead to damage.
    let mut dirty: HashMap<BlobId, bool> = HashMap::new();
    fn is_dirty(
        id: &BlobId,
        facts: &HashMap<BlobId, TreeFacts>,
        memo: &mut HashMap<BlobId, bool>,
    ) -> bool {
        if let Some(&d) = memo.get(id) {
            return d;
        }
        memo.insert(*id, false); // trees form a DAG; this only guards hostile cycles
        let f = &facts[id];
        // Every child is visited, even when this tree is already dirty:
        // `attribute` only descends into subtrees recorded here as dirty.
        let mut d = f.damaged;
        for c in &f.children {
            if facts.contains_key(c) && is_dirty(c, facts, memo) {
                d = true;
            }
        }
        memo.insert(*id, d);
        d
    }
    for (sid, snap) in &snapshots {
        if facts.contains_key(&snap.tree) && is_dirty(&snap.tree, &facts, &mut dirty) {
            attribute(
                &Attribution {
                    repo,
                    snapshot: *sid,
                    dirty: &dirty,
                    facts: &facts,
                    fault: &fault,
                    raw_len: &raw_len,
                },
                &snap.tree,
                (b"", false),
                &mut report.damaged,
            );
        }
    }
    // A tree the walk could not read but `attribute` could (a read that
    // failed once) is not damage it names, yet nothing beneath it was
    // checked: that is an error, never a clean report.
    let named: HashSet<BlobId> = report.damaged.iter().map(|d| d.blob).collect();
    let mut unchecked: Vec<(&BlobId, &String)> = facts
        .iter()
        .filter_map(|(id, f)| f.unreadable.as_ref().map(|e| (id, e)))
        .filter(|(id, _)| !named.contains(id))
        .collect();
    unchecked.sort();
    for (id, e) in unchecked {
        report.errors.push(problem(
            format!("tree {}", id.short()),
            format!(
                "could not be read while walking the trees ({e}), so what lies beneath it \
                 was not checked; run verify again"
            ),
        ));
    }
    // Trees the store's pack gives damaged (at its own size, which only a
    // read finds), held intact by this host's copy of the pack.
    if let Some(cache) = &cache {
        let mut said: HashSet<PackId> = HashSet::new();
        let said_before: Vec<String> = report.errors.iter().map(|e| e.object.clone()).collect();
        // A tree many snapshots use is damaged in each: looked for once.
        let mut looked: HashSet<BlobId> = HashSet::new();
        for d in report
            .damaged
            .iter()
            .filter(|d| d.tree && looked.insert(d.blob))
        {
            let Some((pack, path)) = crate::repo::rescue::cached_tree(repo, cache, &d.blob) else {
                continue;
            };
            let object = format!("pack {}", pack.short());
            if said_before.contains(&object) || !said.insert(pack) {
                continue;
            }
            report.errors.push(mended_here(
                object,
                format!(
                    "gives tree {} damaged, but this host's cache holds an intact copy of the \
                     pack ({}): `cairn repair index --read-data`, run on this host, puts it \
                     back into the repository; run it before any other repair, which would \
                     drop what the pack holds",
                    d.blob.short(),
                    path.display(),
                ),
            ));
        }
    }
    // Trees lost with a pack a repair removed, held by this host's cache.
    if let Some(cache) = cache
        .as_ref()
        .filter(|_| report.damaged.iter().any(|d| d.tree))
    {
        let present = |p: &PackId| packs.contains_key(p);
        let held = |id: &BlobId| {
            matches!(
                index.locate_kind_where(id, pack::BlobKind::Tree, &present),
                Ok(Some(_))
            )
        };
        let named = |p: &PackId| indexed_packs.contains(p);
        for r in crate::repo::rescue::rescues(repo, cache, &present, &named, &held)? {
            report.errors.push(mended_here(
                format!("pack {}", r.pack.short()),
                format!(
                    "{}, but this host's cache holds an intact copy of it ({}): `cairn repair \
                     index`, run on this host, puts it back",
                    r.why(),
                    r.path.display(),
                ),
            ));
        }
    }
    Ok(report)
}

/// Decodes every key file: structure always, and with `password`, whether
/// it opens and holds this repository's master key. Damaged key files are
/// errors, and so is a `keys/` without any; files whose names are not key
/// names are warnings.
fn check_keys(repo: &Repository, password: Option<&[u8]>, report: &mut VerifyReport) -> Result<()> {
    let backend = repo.backend();
    let mut names = backend.list(FileKind::Key)?;
    names.sort();
    let master = repo.key().to_bytes();
    for name in names {
        let what = format!("key {}", name.get(..8).unwrap_or(&name));
        if !is_hex_name(&name) {
            report
                .warnings
                .push(problem(format!("keys/{name}"), "unexpected file"));
            continue;
        }
        let checked = backend.read(FileKind::Key, &name).and_then(|bytes| {
            if hex::encode(file_hash(&bytes)) != name {
                return Err(Error::corrupt(
                    "key file",
                    "content does not match its name",
                ));
            }
            match password {
                None => keys::info(&bytes).map(|_| None),
                // The file that opened the repository, unchanged (its name
                // is its hash): no second key derivation.
                Some(_) if name == repo.key_file() => Ok(Some(Some(master.clone()))),
                Some(pw) => keys::decode(&bytes, pw).map(|k| Some(k.map(|k| k.to_bytes()))),
            }
        });
        let status = match checked {
            Ok(None) => KeyStatus {
                id: name,
                opens: None,
                problem: None,
            },
            Ok(Some(None)) => KeyStatus {
                id: name,
                opens: Some(false),
                problem: None,
            },
            Ok(Some(Some(raw))) if raw == master => KeyStatus {
                id: name,
                opens: Some(true),
                problem: None,
            },
            Ok(Some(Some(_))) => KeyStatus {
                id: name,
                opens: Some(true),
                problem: Some(
                    "opens with the password but holds another repository's master key".into(),
                ),
            },
            Err(e) if e.is_not_found() => continue,
            Err(e) if e.is_read_refused() => KeyStatus {
                id: name,
                opens: None,
                problem: Some(format!(
                    "{e}: the store refused a read (no permission), which is not damage; run \
                     verify as a user who may read the whole repository to check it"
                )),
            },
            Err(e) => KeyStatus {
                id: name,
                opens: None,
                problem: Some(e.to_string()),
            },
        };
        if let Some(p) = &status.problem {
            report.errors.push(problem(&what, p.clone()));
        }
        report.keys.push(status);
    }
    // Opened with an exported key (with a password, open itself calls
    // this corrupt): the key file is then the only way in.
    // A keys/ gone altogether is said with the other folders missing.
    let gone = backend_missing_keys(repo);
    if report.keys.is_empty() && !gone {
        report.errors.push(problem(
            "keys/",
            "holds no key file: no password opens this repository, only an exported key \
             (restore keys/ from a copy of the repository, and keep the exported key safe)",
        ));
    }
    Ok(())
}

/// Whether the repository's `keys/` folder is gone (see
/// [`crate::backend::Backend::missing_folders`]).
fn backend_missing_keys(repo: &Repository) -> bool {
    repo.backend()
        .missing_folders()
        .is_ok_and(|m| m.contains(&FileKind::Key.dir()))
}

/// What [`attribute`] needs of the walk.
struct Attribution<'a> {
    repo: &'a Repository,
    snapshot: SnapshotId,
    dirty: &'a HashMap<BlobId, bool>,
    facts: &'a HashMap<BlobId, TreeFacts>,
    fault: &'a dyn Fn(&BlobId) -> Option<Fault>,
    raw_len: &'a dyn Fn(&BlobId) -> Option<u64>,
}

/// How a damaged folder's reason begins: the whole folder unreadable, or
/// (`PART_UNREADABLE`) one part of a folder stored in parts, the other
/// parts' entries checked on their own.
pub(crate) const DIR_UNREADABLE: &str = "directory unreadable";
pub(crate) const PART_UNREADABLE: &str = "a part of the directory unreadable";

/// Lists the damaged entries of a dirty tree and recurses into dirty
/// subtrees; `part`: the tree is one part of the folder at `path`.
fn attribute(a: &Attribution<'_>, id: &BlobId, (path, part): (&[u8], bool), out: &mut Vec<Damage>) {
    let shown = |path: &[u8]| {
        Name(if path.is_empty() {
            b"/".to_vec()
        } else {
            path.to_vec()
        })
    };
    let tree = match a.repo.load_tree_blob(id) {
        Ok(TreeBlob::Nodes(t)) => t,
        // A directory in parts: each dirty part holds entries of `path`,
        // and the parts may not make one directory (a restore then stops
        // there, whatever else is damaged).
        Ok(TreeBlob::Parts(parts)) => {
            let before = out.len();
            for p in parts.iter().filter(|p| a.dirty.get(p) == Some(&true)) {
                attribute(a, p, (path, true), out);
            }
            // Unless a part that cannot be read was named for the
            // directory already: that is why its parts do not make one.
            let named = out[before..].iter().any(|d| {
                d.path == shown(path)
                    && (d.reason.starts_with(DIR_UNREADABLE)
                        || d.reason.starts_with(PART_UNREADABLE))
            });
            let wrong = a.facts.get(id).and_then(|f| f.parts_wrong.as_ref());
            if let Some(why) = wrong.filter(|_| !named) {
                out.push(Damage {
                    snapshot: a.snapshot,
                    path: shown(path),
                    blob: *id,
                    tree: true,
                    pack: None,
                    reason: format!("{DIR_UNREADABLE} past some entries: {why}"),
                    corrupt: false,
                });
            }
            return;
        }
        Err(e) => {
            let f = (a.fault)(id);
            out.push(Damage {
                snapshot: a.snapshot,
                path: shown(path),
                blob: *id,
                tree: true,
                // Where the index places it, for a tree read and found
                // damaged (it was null in the JSON report).
                pack: f.as_ref().and_then(Fault::pack).or_else(|| {
                    let index = a.repo.index().ok()?;
                    Some(index.locate_kind(id, pack::BlobKind::Tree).ok()?.pack)
                }),
                corrupt: matches!(e, Error::Corrupt { .. }),
                reason: match part {
                    true => format!("{PART_UNREADABLE} (its other parts are whole): {e}"),
                    false => format!("{DIR_UNREADABLE}: {e}"),
                },
            });
            return;
        }
    };
    for node in tree.nodes() {
        let Ok(node) = node else { break };
        let p = Name([path, b"/", &node.name.0].concat());
        match &node.kind {
            NodeKind::File { chunks } => {
                if let Some((c, f)) = chunks.iter().find_map(|c| (a.fault)(c).map(|f| (c, f))) {
                    out.push(Damage {
                        snapshot: a.snapshot,
                        path: p,
                        blob: *c,
                        tree: false,
                        pack: f.pack(),
                        reason: f.reason(),
                        corrupt: false,
                    });
                    continue;
                }
                let held = chunks
                    .iter()
                    .try_fold(0u64, |sum, c| Some(sum.saturating_add((a.raw_len)(c)?)));
                if let Some(held) = held.filter(|&h| h != node.size) {
                    out.push(Damage {
                        snapshot: a.snapshot,
                        path: p,
                        blob: *id,
                        tree: true,
                        pack: None,
                        reason: format!(
                            "a file's entry there: its chunks hold {held} bytes, its entry \
                             says {}: a restore cannot write it",
                            node.size
                        ),
                        corrupt: false,
                    });
                }
            }
            NodeKind::Dir { subtree } if a.dirty.get(subtree) == Some(&true) => {
                attribute(a, subtree, (&p.0, false), out)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--read-data` reads packs ahead of its workers: each prefetch is a
    /// whole pack, read after; every blob checks out.
    #[test]
    fn reading_every_pack_prefetches_those_taken_next() {
        use crate::backend::mem::MemBackend;
        use crate::backend::testing::{noise, repo_of_small_packs, Hooked, ReadsAhead};
        use crate::backend::Backend;
        use crate::writer::BlobWriter;
        use std::sync::Arc;

        let store = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: ReadsAhead::default(),
        });
        let repo = repo_of_small_packs(store.clone());
        let writer = BlobWriter::new(&repo);
        for i in 0..40u32 {
            let bytes = noise(&i.to_le_bytes(), 100_000);
            writer.add(crate::pack::BlobKind::Data, &bytes).unwrap();
        }
        writer.finish().unwrap();
        let packs = store.list(FileKind::Pack).unwrap();
        assert!(packs.len() >= 4, "{} packs", packs.len());

        let found = data::bad_blobs(&repo, 2).unwrap();
        assert!(found.bad.is_empty() && found.unread.is_empty(), "{found:?}");
        let size = |name: &str| store.inner.size(FileKind::Pack, name).unwrap();
        store.hooks.check_prefetches(size);
        for (name, what) in store.hooks.events.lock().unwrap().iter() {
            if let Some(range) = what {
                assert_eq!(*range, 0..size(name), "pack {name}");
            }
        }
        let reads = store.hooks.events.lock().unwrap();
        assert_eq!(
            reads.iter().filter(|(_, w)| w.is_none()).count(),
            packs.len()
        );
        drop(reads);
        assert!(
            store.hooks.read_after_prefetch() >= 1,
            "no pack read after its prefetch"
        );
    }

    /// verify holds a shared lock, so backups finish beside it: one
    /// landing just before verify lists snapshots, index tables or packs
    /// is no damage.
    #[test]
    fn a_backup_finishing_during_verify_is_no_damage() {
        use crate::backend::testing::racing_backup_on_first_list;

        for kind in [FileKind::Snapshot, FileKind::Index, FileKind::Pack] {
            let (store, backend, _src) = racing_backup_on_first_list(kind);

            let repo = Repository::open(backend.clone(), b"pw").unwrap();
            let report = verify(&repo, &VerifyOptions::default()).unwrap();
            assert!(store.hooks.done(), "{kind:?}: no backup ran");
            assert_eq!(backend.list(FileKind::Snapshot).unwrap().len(), 2);
            assert!(
                report.is_clean(),
                "a backup before listing {kind:?}: {:?} {:?}",
                report.errors,
                report.damaged
            );
        }
    }

    /// Hooks failing the first ranged read of one pack, as a store may
    /// fail a request once.
    struct FailsOnce(Mutex<Option<String>>);

    impl crate::backend::testing::Hooks for FailsOnce {
        fn read_range(&self, kind: FileKind, name: &str) -> Option<Result<Vec<u8>>> {
            let mut pack = self.0.lock().unwrap();
            (kind == FileKind::Pack && pack.as_deref() == Some(name)).then(|| {
                *pack = None;
                Err(Error::Invalid(format!("pack {name}: read failed once")))
            })
        }
    }

    /// A tree the walk fails to read, though a second read of it works,
    /// leaves the trees beneath it unchecked: verify says so.
    #[test]
    fn a_tree_the_walk_could_not_read_is_an_error() {
        use crate::backend::mem::MemBackend;
        use crate::backend::testing::{backup_from_elsewhere, noise, repo_of_small_packs, Hooked};
        use crate::backend::Backend;
        use std::sync::Arc;

        let store = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: FailsOnce(Mutex::new(None)),
        });
        let backend: Arc<dyn Backend> = store.clone();
        let repo = repo_of_small_packs(backend.clone());
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/a"), noise(b"a", 1000)).unwrap();
        let snap = backup_from_elsewhere(backend.clone(), src.path());
        let root = Snapshot::load(&*backend, repo.key(), &snap).unwrap().tree;
        repo.reload_index();
        let pack = repo.locate(&root).unwrap().pack;
        assert!(verify(&repo, &VerifyOptions::default()).unwrap().is_clean());

        *store.hooks.0.lock().unwrap() = Some(pack.to_hex());
        let report = verify(&repo, &VerifyOptions::default()).unwrap();
        assert!(store.hooks.0.lock().unwrap().is_none(), "no read failed");
        assert!(!report.is_clean(), "clean with a tree never walked");
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        let e = &report.errors[0];
        assert_eq!(e.object, format!("tree {}", root.short()));
        assert!(e.message.contains("read failed once"), "{}", e.message);
        assert!(e.message.contains("was not checked"), "{}", e.message);
    }

    /// A store that stops answering (retries spent) is no damage: verify
    /// stops with its error at the first pack or tree it cannot read,
    /// with or without `--read-data`, rather than call every tree damaged
    /// and wait for the store once per pack.
    #[test]
    fn a_store_outage_stops_verify_without_calling_it_damage() {
        use crate::backend::mem::MemBackend;
        use crate::backend::testing::{
            backup_from_elsewhere, noise, repo_of_small_packs, Hooked, Outage,
        };
        use crate::backend::Backend;
        use std::sync::Arc;

        let store = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: Outage::default(),
        });
        let backend: Arc<dyn Backend> = store.clone();
        let repo = repo_of_small_packs(backend.clone());
        let src = tempfile::tempdir().unwrap();
        for round in 0u8..3 {
            for i in 0u8..10 {
                let path = src.path().join(format!("d{round}/f{i}"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, noise(&[round, i], 300_000)).unwrap();
            }
            backup_from_elsewhere(backend.clone(), src.path());
        }
        let packs = backend.list(FileKind::Pack).unwrap().len();
        assert!(packs >= 8, "only {packs} packs");
        repo.reload_index();

        // Then refusing reads, as a local store does files this user may
        // not read: no damage either (until December 2026 verify called
        // every tree in such a pack damaged).
        for (refuse, said) in [(false, "Connection refused"), (true, "Permission denied")] {
            if refuse {
                store.hooks.begin_refusing();
            } else {
                store.hooks.begin();
            }
            for read_data in [None, Some(Subset::All)] {
                let before = store.hooks.failed();
                let opts = VerifyOptions {
                    read_data,
                    workers: 2,
                    ..VerifyOptions::default()
                };
                let e = verify(&repo, &opts).unwrap_err().to_string();
                assert!(e.contains(said), "{e}");
                assert!(e.contains("verify stopped"), "{e}");
                assert!(!e.contains("damage "), "{e}");
                let failed = store.hooks.failed() - before;
                assert!(
                    (1..=2).contains(&failed),
                    "{read_data:?}: {failed} reads of {packs} packs failed"
                );
            }
        }
    }

    /// An index entry that authenticates but gives a blob another length
    /// than its pack's header does passes the structure checks (it lies
    /// inside its pack); `--read-data` compares it with the header.
    #[test]
    fn read_data_compares_index_entries_with_pack_headers() {
        use crate::backend::mem::MemBackend;
        use crate::backend::testing::{noise, repo_of_small_packs};
        use crate::backend::Backend;
        use crate::index::IndexBuilder;
        use crate::pack::{BlobKind, PackEntry};
        use crate::writer::BlobWriter;
        use std::sync::Arc;

        let backend = Arc::new(MemBackend::default());
        let repo = repo_of_small_packs(backend.clone());
        let writer = BlobWriter::new(&repo);
        let ids: Vec<BlobId> = (0..5u32)
            .map(|i| {
                let bytes = noise(&i.to_le_bytes(), 10_000);
                writer.add(BlobKind::Data, &bytes).unwrap().0
            })
            .collect();
        writer.finish().unwrap();
        // The index written again, one entry a byte short, its tables
        // authenticated as any are: as a writer with a bug would leave it.
        let victim = ids[2];
        let mut builder = IndexBuilder::default();
        for t in repo.index().unwrap().tables() {
            for j in 0..t.len() {
                let (id, loc) = t.location_at(j).unwrap();
                let short = u32::from(id == victim);
                let entry = PackEntry {
                    id,
                    offset: loc.offset,
                    length: loc.length - short,
                    raw_length: loc.raw_length,
                };
                builder.add_pack(loc.pack, loc.kind, &[entry]);
            }
        }
        let old = backend.list(FileKind::Index).unwrap();
        for (id, bytes) in builder.finish(repo.key(), repo.config().index_version()) {
            backend
                .write(FileKind::Index, &id.to_hex(), &bytes)
                .unwrap();
        }
        for name in old {
            backend.remove(FileKind::Index, &name).unwrap();
        }
        repo.reload_index();
        let table = repo.index().unwrap().tables()[0].id();

        let report = verify(&repo, &VerifyOptions::default()).unwrap();
        assert!(report.is_clean(), "{:?}", report.errors);
        let opts = VerifyOptions {
            read_data: Some(Subset::All),
            ..Default::default()
        };
        let report = verify(&repo, &opts).unwrap();
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        let e = &report.errors[0];
        assert_eq!(e.object, format!("index {}", table.short()));
        for part in [
            format!("entry of blob {}", victim.short()),
            "the pack's header".to_string(),
            "`cairn repair index`".to_string(),
        ] {
            assert!(e.message.contains(&part), "{part:?} not in {}", e.message);
        }
    }

    #[test]
    fn every_key_file_is_checked() {
        use crate::backend::{mem::MemBackend, Backend};
        use crate::crypto::MasterKey;
        use crate::repo::{InitOptions, KdfParams};
        use std::sync::Arc;

        let fast = KdfParams {
            memory_kib: 64,
            iterations: 1,
            lanes: 1,
        };
        let backend = Arc::new(MemBackend::default());
        let opts = InitOptions {
            kdf: fast,
            ..InitOptions::default()
        };
        let repo = Repository::init(backend.clone(), b"pw", &opts).unwrap();
        let good = backend.list(FileKind::Key).unwrap().remove(0);
        let add = |bytes: Vec<u8>| {
            let name = hex::encode(file_hash(&bytes));
            backend.write(FileKind::Key, &name, &bytes).unwrap();
            name
        };
        let other_pw = add(keys::encode(repo.key(), b"other", fast).unwrap());
        let foreign = add(keys::encode(&MasterKey::generate(), b"pw", fast).unwrap());
        let whole = backend.read(FileKind::Key, &good).unwrap().to_vec();
        let truncated = add(whole[..100].to_vec());
        backend.write(FileKind::Key, "README", b"hello").unwrap();

        let password = Some(Zeroizing::new(b"pw".to_vec()));
        let report = verify(
            &repo,
            &VerifyOptions {
                password,
                ..Default::default()
            },
        )
        .unwrap();
        let status = |n: &str| report.keys.iter().find(|k| k.id == n).unwrap();
        assert_eq!(report.keys.len(), 4);
        assert_eq!(status(&good).opens, Some(true));
        assert!(status(&good).problem.is_none());
        assert_eq!(status(&other_pw).opens, Some(false));
        assert!(status(&other_pw).problem.is_none());
        assert!(status(&foreign)
            .problem
            .as_ref()
            .unwrap()
            .contains("another repository"));
        assert_eq!(status(&truncated).opens, None);
        assert!(status(&truncated)
            .problem
            .as_ref()
            .unwrap()
            .contains("100 bytes"));
        let objects: Vec<&str> = report.errors.iter().map(|e| e.object.as_str()).collect();
        let mut want = vec![
            format!("key {}", &foreign[..8]),
            format!("key {}", &truncated[..8]),
        ];
        want.sort();
        assert_eq!(objects, want);
        assert_eq!(report.warnings[0].object, "keys/README");
        assert!(!report.is_clean());

        // Without the password only the structure is checked.
        let report = verify(&repo, &VerifyOptions::default()).unwrap();
        assert!(report.keys.iter().all(|k| k.opens.is_none()));
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    }
}
