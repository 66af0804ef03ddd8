//! Restore: writing a snapshot (or part of it) back to a directory.
//!
//! Restore first plans: it walks the snapshot's trees from the chosen
//! subpath, applies include/exclude patterns and lists what to create. Then
//! it creates directories (parents first), writes files on all cores,
//! links hard links, creates symlinks and special files, removes extra
//! entries under the mirror policy, and finally sets directory metadata
//! deepest first.
//!
//! A dry run goes through the same steps and makes the same decision for
//! every entry (write, leave unchanged, skip, remove), looking at the
//! target but changing nothing in it: what a directory it would create or
//! replace holds counts as missing.
//!
//! Safety: every name comes from a tree that passed [`Tree::decode`], so no
//! name can contain `/` or be `..`; each directory on the way is checked to
//! be a real directory (a symlink already in the target is replaced or, with
//! skip-existing, left alone with its subtree skipped) before anything is
//! written beneath it; nothing is ever written through a symlink, and an
//! interrupted restore never leaves a truncated file under a real name:
//! files are written unnamed (`O_TMPFILE`) and, once complete, linked
//! under their name (or, to replace an existing entry, under a temporary
//! name renamed over it), so a restore killed at any moment leaves nothing
//! of a file in progress behind. Where unnamed files cannot be had (a
//! filesystem without them, no `/proc`, or more files at once than
//! descriptors), the file is created with `O_NOFOLLOW | O_EXCL` under a
//! temporary name and renamed into place.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::backend::{Data, FileKind};
use crate::error::{Error, Result};
use crate::filter::PathFilter;
use crate::fsmeta;
use crate::id::{BlobId, IdMap, PackId};
use crate::index::Location;
use crate::pack::{self, PackHeader};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind, Tree};

/// What to do with files already in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Write files that are missing or differ; keep files the snapshot lacks.
    Merge,
    /// Make the target exactly the snapshot: also remove extra entries.
    Mirror,
    /// Never overwrite anything that exists.
    SkipExisting,
}

/// Restore settings.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Path inside the snapshot to restore (absolute as backed up); `None`
    /// restores everything.
    pub subpath: Option<String>,
    /// Destination directory.
    pub target: PathBuf,
    /// Only entries matching (or beneath a match of) these patterns.
    pub includes: Vec<String>,
    /// Leave out entries matching these patterns, and what is beneath them.
    pub excludes: Vec<String>,
    /// Existing-file policy.
    pub policy: Policy,
    /// Plan and report only.
    pub dry_run: bool,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
}

/// What a restore did (or would do, with `dry_run`).
#[derive(Debug, Default, Serialize)]
pub struct RestoreStats {
    /// Files written.
    pub files_written: u64,
    /// Files already identical in the target.
    pub files_unchanged: u64,
    /// Entries left alone because they exist (skip-existing).
    pub skipped: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symlinks, hard links and special files created.
    pub other: u64,
    /// Bytes of file content written.
    pub bytes_written: u64,
    /// Extra entries removed (mirror).
    pub removed: u64,
    /// In a dry run, the extra entries mirror would remove, sorted.
    #[serde(skip)]
    pub would_remove: Vec<PathBuf>,
    /// Entries that failed.
    pub errors: u64,
}

struct Item {
    rel: PathBuf,
    node: Node,
}

struct Plan {
    dirs: Vec<Item>,
    /// Names each restored directory has in the snapshot (before filtering).
    dir_names: HashMap<PathBuf, HashSet<Vec<u8>>>,
    files: Vec<Item>,
    links: Vec<(Item, PathBuf)>,
    others: Vec<Item>,
}

/// Restores `snap` according to `opts`; per-entry problems go to `warn` and
/// are counted in [`RestoreStats::errors`].
pub fn restore(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    warn: &(dyn Fn(&str) + Sync),
) -> Result<RestoreStats> {
    let includes = PathFilter::new(&opts.includes)?;
    let excludes = PathFilter::new(&opts.excludes)?;
    let mut plan = Plan {
        dirs: Vec::new(),
        dir_names: HashMap::new(),
        files: Vec::new(),
        links: Vec::new(),
        others: Vec::new(),
    };
    let mut planner = Planner {
        repo,
        mirror: opts.policy == Policy::Mirror,
        includes: &includes,
        excludes: &excludes,
        plan: &mut plan,
        inodes: HashMap::new(),
    };
    // A table that cannot be parsed at all is left out, not the restore:
    // what the other tables index is restored.
    for (id, e) in repo.index_lenient()? {
        warn(&format!(
            "index {}: {e}: left out; what only it indexes cannot be found until \
             `cairn repair index` rebuilds the index",
            id.short()
        ));
    }
    let mut start_path = String::new();
    let mut tree = repo.load_tree(&snap.tree)?;
    let components: Vec<&str> = opts
        .subpath
        .as_deref()
        .unwrap_or("")
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    for (i, comp) in components.iter().enumerate() {
        let node = tree
            .nodes
            .iter()
            .find(|n| n.name.0 == comp.as_bytes())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "path /{} in the snapshot",
                    components[..=i].join("/")
                ))
            })?
            .clone();
        start_path.push('/');
        start_path.push_str(comp);
        match &node.kind {
            NodeKind::Dir { subtree } => tree = repo.load_tree(subtree)?,
            _ if i + 1 == components.len() => {
                // A single non-directory: restore it into the target.
                tree = Tree::new(vec![node]);
                start_path.truncate(start_path.rfind('/').unwrap_or(0));
                break;
            }
            _ => {
                return Err(Error::NotFound(format!(
                    "directory {start_path} in the snapshot"
                )))
            }
        }
    }
    planner.walk(&tree, Path::new(""), &start_path, false)?;

    let mut fresh = HashSet::new();
    if !opts.dry_run {
        fs::create_dir_all(&opts.target)
            .map_err(|e| Error::path("create target", &opts.target, e))?;
    } else {
        match fs::metadata(&opts.target) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "target {} is not a directory",
                    opts.target.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fresh.insert(opts.target.clone());
            }
            Err(e) => return Err(Error::path("stat", &opts.target, e)),
        }
    }
    let ex = Executor {
        repo,
        target: &opts.target,
        policy: opts.policy,
        dry_run: opts.dry_run,
        warn,
        errors: AtomicU64::new(0),
        skipped_dirs: Mutex::new(HashSet::new()),
        fresh_dirs: Mutex::new(fresh),
        zero_ids: Mutex::new(HashMap::new()),
        root: fsmeta::is_root(),
        open_budget: AtomicIsize::new(0),
        unnamed: std::sync::atomic::AtomicBool::new(false),
    };
    let mut stats = RestoreStats::default();
    ex.run(&plan, opts.workers, &mut stats)?;
    stats.errors = ex.errors.load(Ordering::Relaxed);
    Ok(stats)
}

struct Planner<'a> {
    repo: &'a Repository,
    /// Whether to record each directory's names (for a mirror's removals).
    mirror: bool,
    includes: &'a PathFilter,
    excludes: &'a PathFilter,
    plan: &'a mut Plan,
    inodes: HashMap<(u64, u64), PathBuf>,
}

impl Planner<'_> {
    /// Plans the entries of `tree` at `rel`; returns whether any was selected.
    fn walk(&mut self, tree: &Tree, rel: &Path, abs: &str, included: bool) -> Result<bool> {
        let mut any = false;
        if self.mirror {
            self.plan.dir_names.insert(
                rel.to_path_buf(),
                tree.nodes.iter().map(|n| n.name.0.clone()).collect(),
            );
        }
        for node in &tree.nodes {
            let name = OsStr::from_bytes(&node.name.0);
            let child_rel = rel.join(name);
            let child_abs = format!("{abs}/{}", node.name);
            let name_str = node.name.to_string();
            if self.excludes.matches(&child_abs, &name_str) {
                continue;
            }
            let inc = included
                || self.includes.is_empty()
                || self.includes.matches(&child_abs, &name_str);
            match &node.kind {
                NodeKind::Dir { subtree } => {
                    let idx = self.plan.dirs.len();
                    self.plan.dirs.push(Item {
                        rel: child_rel.clone(),
                        node: node.clone(),
                    });
                    let sub = self.repo.load_tree(subtree)?;
                    let below = self.walk(&sub, &child_rel, &child_abs, inc)?;
                    if inc || below {
                        any = true;
                    } else {
                        // Nothing selected beneath: drop the directory and
                        // whatever planning recorded for it.
                        self.plan.dirs.truncate(idx);
                        self.plan.dir_names.remove(&child_rel);
                    }
                }
                _ if !inc => {}
                NodeKind::File { .. } => {
                    any = true;
                    let item = Item {
                        rel: child_rel.clone(),
                        node: node.clone(),
                    };
                    if node.nlink > 1 {
                        if let Some(first) = self.inodes.get(&(node.dev, node.inode)) {
                            self.plan.links.push((item, first.clone()));
                            continue;
                        }
                        self.inodes.insert((node.dev, node.inode), child_rel);
                    }
                    self.plan.files.push(item);
                }
                _ => {
                    any = true;
                    self.plan.others.push(Item {
                        rel: child_rel,
                        node: node.clone(),
                    });
                }
            }
        }
        Ok(any)
    }
}

/// Files from this size on have their blocks reserved before they are
/// written (see `Executor::size_file`).
const RESERVE_FROM: u64 = 1 << 20;

struct Executor<'a> {
    repo: &'a Repository,
    target: &'a Path,
    policy: Policy,
    /// Decide everything, change nothing.
    dry_run: bool,
    warn: &'a (dyn Fn(&str) + Sync),
    errors: AtomicU64,
    /// Directories not restored (skipped or failed): nothing beneath them
    /// is written.
    skipped_dirs: Mutex<HashSet<PathBuf>>,
    /// In a dry run: directories the restore would create or replace.
    fresh_dirs: Mutex<HashSet<PathBuf>>,
    /// Ids of all-zero blobs by length (see `may_have_holes`).
    zero_ids: Mutex<HashMap<u32, BlobId>>,
    root: bool,
    /// Whether files are written unnamed: set by `restore_files` when a
    /// probe in the target could link one, cleared should a link fail.
    unnamed: std::sync::atomic::AtomicBool,
    /// How many more files in progress may be held open (set by
    /// `restore_files` from the open-file limit); beyond it a file is
    /// written under a temporary name and closed after each write.
    open_budget: AtomicIsize,
}

/// How an existing destination entry was dealt with.
enum Existing {
    /// Nothing there (or it was removed): create.
    Create,
    /// Keep it and do nothing (skip-existing).
    Skip,
}

impl Executor<'_> {
    fn fail(&self, path: &Path, e: impl std::fmt::Display) {
        (self.warn)(&format!("{}: {e}", path.display()));
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn under_skipped(&self, rel: &Path) -> bool {
        self.skipped_dirs
            .lock()
            .map(|s| !s.is_empty() && rel.ancestors().any(|a| s.contains(a)))
            .unwrap_or(false)
    }

    /// Whether `path` is, or lies beneath, a directory this restore created
    /// (or, in a dry run, would create or replace), and so holds nothing
    /// the restore has not put there. The plan names every path once, and each
    /// is looked at before it is created, so such a path does not exist
    /// yet: no `lstat` needed, which in a new tree would take the
    /// directory's lock against the other workers creating files in it.
    fn fresh(&self, path: &Path) -> bool {
        self.fresh_dirs
            .lock()
            .map(|f| !f.is_empty() && path.ancestors().any(|a| f.contains(a)))
            .unwrap_or(false)
    }

    /// Notes a directory the restore created (or, in a dry run, would
    /// create or replace).
    fn mark_fresh(&self, path: &Path) {
        if let Ok(mut f) = self.fresh_dirs.lock() {
            f.insert(path.to_path_buf());
        }
    }

    /// `lstat` of an entry in the target, as the restore would find it at
    /// this point (see [`Self::fresh`]).
    fn lstat(&self, path: &Path) -> std::io::Result<fs::Metadata> {
        if self.fresh(path) {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        fs::symlink_metadata(path)
    }

    fn run(&self, plan: &Plan, workers: usize, stats: &mut RestoreStats) -> Result<()> {
        for d in &plan.dirs {
            if self.under_skipped(&d.rel) {
                continue;
            }
            match self.ensure_dir(&self.target.join(&d.rel)) {
                Ok(true) => stats.dirs += 1,
                Ok(false) => {
                    stats.skipped += 1;
                    if let Ok(mut s) = self.skipped_dirs.lock() {
                        s.insert(d.rel.clone());
                    }
                }
                Err(e) => {
                    self.fail(&self.target.join(&d.rel), e);
                    if let Ok(mut s) = self.skipped_dirs.lock() {
                        s.insert(d.rel.clone());
                    }
                }
            }
        }
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            workers
        };
        self.restore_files(plan, workers, stats);

        for (item, first) in &plan.links {
            if self.under_skipped(&item.rel) {
                continue;
            }
            let dest = self.target.join(&item.rel);
            match self.clear(&dest, false) {
                Ok(Existing::Skip) => stats.skipped += 1,
                Ok(Existing::Create) if self.dry_run => stats.other += 1,
                Ok(Existing::Create) => match fs::hard_link(self.target.join(first), &dest) {
                    Ok(()) => stats.other += 1,
                    Err(e) => self.fail(&dest, format!("cannot create hard link: {e}")),
                },
                Err(e) => self.fail(&dest, e),
            }
        }
        for item in &plan.others {
            if self.under_skipped(&item.rel) {
                continue;
            }
            let dest = self.target.join(&item.rel);
            match self.restore_other(&dest, &item.node) {
                Ok(true) => stats.other += 1,
                Ok(false) => stats.skipped += 1,
                Err(e) => self.fail(&dest, e),
            }
        }
        if self.policy == Policy::Mirror {
            for (rel, names) in &plan.dir_names {
                if !self.under_skipped(rel) {
                    stats.removed +=
                        self.remove_extra(&self.target.join(rel), names, &mut stats.would_remove);
                }
            }
            stats.would_remove.sort();
        }
        if self.dry_run {
            return Ok(());
        }
        for d in plan.dirs.iter().rev() {
            if !self.under_skipped(&d.rel) {
                self.apply_meta(&self.target.join(&d.rel), &d.node, None);
            }
        }
        Ok(())
    }

    /// Makes `path` a real directory; false when skip-existing leaves a
    /// non-directory in place.
    fn ensure_dir(&self, path: &Path) -> Result<bool> {
        match self.lstat(path) {
            Ok(md) if md.is_dir() => return Ok(true),
            Ok(_) => match self.clear(path, true)? {
                Existing::Skip => return Ok(false),
                Existing::Create => {}
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::path("stat", path, e)),
        }
        if self.dry_run {
            self.mark_fresh(path);
            return Ok(true);
        }
        fs::create_dir(path).map_err(|e| Error::path("create folder", path, e))?;
        self.mark_fresh(path);
        Ok(true)
    }

    /// Removes whatever is at `path` unless the policy keeps it (a dry run
    /// only decides).
    fn clear(&self, path: &Path, even_dirs: bool) -> Result<Existing> {
        let md = match self.lstat(path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Create),
            Err(e) => return Err(Error::path("stat", path, e)),
        };
        if self.policy == Policy::SkipExisting {
            return Ok(Existing::Skip);
        }
        let r = if md.is_dir() {
            if !even_dirs
                && self.policy == Policy::Merge
                && fs::read_dir(path)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                return Err(Error::Invalid(format!(
                    "{} is a non-empty directory in the target; the snapshot has a file there (use --policy mirror to replace it)",
                    path.display()
                )));
            }
            if self.dry_run {
                self.mark_fresh(path);
                return Ok(Existing::Create);
            }
            fs::remove_dir_all(path)
        } else if self.dry_run {
            return Ok(Existing::Create);
        } else {
            fs::remove_file(path)
        };
        r.map_err(|e| Error::path("remove", path, e))?;
        Ok(Existing::Create)
    }

    /// Writes the planned files: decides per file what the policy wants,
    /// then reads each needed pack once, in parallel, writing every blob
    /// at all the offsets that use it; a file is created (unnamed where
    /// the target allows, see `create_file`) by its first write.
    fn restore_files(&self, plan: &Plan, workers: usize, stats: &mut RestoreStats) {
        // A file is created when its first chunk is written (or, with
        // nothing to write, when it is finished) and held open until it
        // is whole, so the files open at once are those in progress: few,
        // unless many files of several chunks have their chunks in packs
        // read far apart. What the limit leaves beside the packs, index
        // tables and the rest bounds them.
        let limit = raise_fd_limit();
        let reserve = (limit / 2).min(256);
        self.open_budget.store(
            isize::try_from(limit - reserve).unwrap_or(isize::MAX),
            Ordering::Relaxed,
        );
        if !self.dry_run {
            let unnamed = !crate::fault::no_tmpfile() && unnamed_files_link(self.target);
            self.unnamed.store(unnamed, Ordering::Relaxed);
        }
        // 1. Decide, in parallel (merge compares existing content). Each
        // worker takes a run of files of one directory at a time: looking
        // up names takes the directory's lock, so two workers in the same
        // directory would mostly wait for each other.
        let rels: Vec<&Path> = plan.files.iter().map(|f| f.rel.as_path()).collect();
        let runs = directory_runs(&rels, 64);
        let next = AtomicUsize::new(0);
        let (unchanged, skipped) = (AtomicU64::new(0), AtomicU64::new(0));
        let (would_write, would_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
        let tasks: Mutex<Vec<Box<FileTask>>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = runs.get(i) else { break };
                    for f in &plan.files[run.clone()] {
                        if self.under_skipped(&f.rel) {
                            continue;
                        }
                        let dest = self.target.join(&f.rel);
                        match self.prepare_file(&dest, &f.node) {
                            Ok(Prepared::Unchanged) => {
                                unchanged.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Prepared::Skipped) => {
                                skipped.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Prepared::WouldWrite) => {
                                would_write.fetch_add(1, Ordering::Relaxed);
                                would_bytes.fetch_add(f.node.size, Ordering::Relaxed);
                            }
                            Ok(Prepared::Write(task)) => {
                                if let Ok(mut t) = tasks.lock() {
                                    t.push(task);
                                }
                            }
                            Err(e) => self.fail(&dest, e),
                        }
                    }
                });
            }
        });
        stats.files_unchanged = unchanged.into_inner();
        stats.skipped += skipped.into_inner();
        if self.dry_run {
            stats.files_written = would_write.into_inner();
            stats.bytes_written = would_bytes.into_inner();
            return;
        }
        let tasks = tasks.into_inner().unwrap_or_default();

        // 2. Plan reads: every distinct blob once, grouped by pack.
        let index = match self.repo.index() {
            Ok(index) => index,
            Err(e) => {
                for task in &tasks {
                    self.fail(&task.dest, &e);
                }
                return;
            }
        };
        // Every chunk of every file written is looked up.
        let lookups = tasks
            .iter()
            .map(|t| match &t.node.kind {
                NodeKind::File { chunks } => chunks.len(),
                _ => 0,
            })
            .sum();
        index.build_directories(lookups);
        let mut by_pack: IdMap<PackId, Vec<(BlobId, Location)>> = IdMap::default();
        let mut targets: IdMap<BlobId, Vec<(usize, u64)>> = IdMap::default();
        for (t, task) in tasks.iter().enumerate() {
            let NodeKind::File { chunks } = &task.node.kind else {
                continue;
            };
            let mut offset = 0u64;
            for id in chunks {
                let loc = match index.locate(id) {
                    Ok(loc) => loc,
                    Err(e) => {
                        task.fail(format!("blob {}: {e}", id.short()));
                        break;
                    }
                };
                let uses = targets.entry(*id).or_default();
                if uses.is_empty() {
                    by_pack.entry(loc.pack).or_default().push((*id, loc));
                }
                uses.push((t, offset));
                offset += u64::from(loc.raw_length);
            }
            if offset != task.node.size && !task.failed() {
                task.fail(format!(
                    "chunks hold {offset} bytes, the tree says {}",
                    task.node.size
                ));
            }
        }
        // Files without data (empty, or failed planning) finish now.
        for task in &tasks {
            if task.remaining.load(Ordering::Relaxed) == 0 || task.failed() {
                self.finish_task(task);
            }
        }

        // 3. Read packs in parallel, each once, blobs in pack order; the
        // costliest packs first (see `pack_cost`), so the last packs
        // taken are short and no core waits long on the other's.
        let mut packs: Vec<(PackId, Vec<(BlobId, Location)>)> = by_pack.into_iter().collect();
        for (_, blobs) in &mut packs {
            blobs.sort_by_key(|(_, loc)| loc.offset);
        }
        packs.sort_by_cached_key(|(p, blobs)| (std::cmp::Reverse(pack_cost(blobs, &targets)), *p));
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((pack, blobs)) = packs.get(i) else {
                        break;
                    };
                    self.restore_pack(pack, blobs, &targets, &tasks);
                });
            }
        });

        let (mut written, mut bytes) = (0, 0);
        for task in &tasks {
            if let Some(why) = task.error() {
                task.discard();
                self.fail(&task.dest, why);
            } else if task.done.load(Ordering::Relaxed) {
                written += 1;
                bytes += task.node.size;
            } else {
                task.discard();
                self.fail(&task.dest, "not all of its data could be read");
            }
        }
        stats.files_written = written;
        stats.bytes_written = bytes;
    }

    /// Reads one pack and writes its blobs wherever they are used.
    fn restore_pack(
        &self,
        pack: &PackId,
        blobs: &[(BlobId, Location)],
        targets: &IdMap<BlobId, Vec<(usize, u64)>>,
        tasks: &[Box<FileTask>],
    ) {
        let what = format!("pack {}", pack.short());
        let data = match PackBytes::fetch(self.repo.backend(), pack, blobs) {
            Ok(d) => d,
            Err(e) => {
                for (id, _) in blobs {
                    let why = if e.is_not_found() {
                        crate::repo::missing_pack(id, pack).to_string()
                    } else {
                        format!("blob {}: {e}", id.short())
                    };
                    for &(t, _) in &targets[id] {
                        tasks[t].fail(why.clone());
                    }
                }
                return;
            }
        };
        if let PackBytes::Whole(Data::Mapped(m)) = &data {
            m.advise_sequential();
        }
        // The pack's own header, read only if a blob does not open where
        // the index places it (see `pack_header`).
        let mut header: Option<Option<(Option<PackBytes>, PackHeader)>> = None;
        for (id, loc) in blobs {
            let uses = &targets[id];
            if uses.iter().all(|&(t, _)| tasks[t].failed()) {
                continue;
            }
            let Err(e) = self.deliver(&data, id, loc, uses, tasks, &what) else {
                continue;
            };
            // A damaged index entry makes a blob unreadable, never wrong;
            // the pack's authenticated header says where it really is.
            let header = header.get_or_insert_with(|| self.pack_header(pack, &data, &what));
            let elsewhere = header.as_ref().and_then(|(refetched, h)| {
                let entry = h.entries.iter().find(|en| en.id == *id)?;
                let moved = (entry.offset, entry.length) != (loc.offset, loc.length);
                moved.then(|| (refetched.as_ref().unwrap_or(&data), entry))
            });
            let retried = elsewhere.map(|(bytes, entry)| {
                let real = Location {
                    offset: entry.offset,
                    length: entry.length,
                    raw_length: entry.raw_length,
                    ..*loc
                };
                (entry, self.deliver(bytes, id, &real, uses, tasks, &what))
            });
            match retried {
                Some((entry, Ok(()))) => (self.warn)(&format!(
                    "blob {} in {what}: the index places it at offset {} ({} bytes), the \
                     pack's header at {} ({} bytes), where it was read: the index is \
                     damaged; `cairn repair index` rewrites it",
                    id.short(),
                    loc.offset,
                    loc.length,
                    entry.offset,
                    entry.length,
                )),
                _ => {
                    for &(t, _) in uses {
                        tasks[t].fail(format!("blob {} in {what}: {e}", id.short()));
                    }
                }
            }
        }
    }

    /// Opens the blob `id` at `loc` in `data` and writes it wherever
    /// `uses` need it. Nothing is written unless it authenticates.
    fn deliver(
        &self,
        data: &PackBytes,
        id: &BlobId,
        loc: &Location,
        uses: &[(usize, u64)],
        tasks: &[Box<FileTask>],
        what: &str,
    ) -> Result<()> {
        let end = loc.offset as usize + loc.length as usize;
        let sealed = data.get(loc.offset as usize..end).ok_or_else(|| {
            Error::corrupt(
                what,
                format!("blob {} lies past the end (truncated pack?)", id.short()),
            )
        })?;
        pack::open_blob_with(self.repo.key(), id, sealed, loc.raw_length, what, |plain| {
            let zero = plain.iter().all(|&b| b == 0);
            for &(t, offset) in uses {
                let task = &tasks[t];
                if task.failed() {
                    continue;
                }
                if zero {
                    task.holes.store(true, Ordering::Relaxed);
                } else if let Err(e) = self.write_chunk(task, plain, offset) {
                    task.fail(e);
                    continue;
                }
                if task.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.finish_task(task);
                }
            }
        })
    }

    /// The pack's decoded header, with the whole pack when `data` holds
    /// only ranges of it; `None` (with a warning) if the header cannot be
    /// read either.
    fn pack_header(
        &self,
        pack: &PackId,
        data: &PackBytes,
        what: &str,
    ) -> Option<(Option<PackBytes>, PackHeader)> {
        let decoded = match data {
            PackBytes::Whole(d) => pack::decode_header(d, self.repo.key(), what).map(|h| (None, h)),
            PackBytes::Ranges(_) => self
                .repo
                .backend()
                .read(FileKind::Pack, &pack.to_hex())
                .and_then(|d| {
                    let h = pack::decode_header(&d, self.repo.key(), what)?;
                    Ok((Some(PackBytes::Whole(d)), h))
                }),
        };
        match decoded {
            Ok(found) => Some(found),
            Err(e) => {
                (self.warn)(&format!("{what}: its header cannot be read either: {e}"));
                None
            }
        }
    }

    /// Sets a fully written file's metadata and puts it in place: links
    /// an unnamed file under its name, renames a named temporary file
    /// (or leaves failure handling to the caller).
    fn finish_task(&self, task: &FileTask) {
        let file = task.file.lock().ok().and_then(|mut f| f.take());
        if task.failed() {
            if file.is_some() && !task.transient.load(Ordering::Relaxed) {
                self.open_budget.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        // A file none of whose chunks was written (empty, or all zeros)
        // is created now; a transient one is opened again.
        let file = match self.task_file(task, file) {
            Ok(f) => f,
            Err(e) => return task.fail(e),
        };
        if !task.transient.load(Ordering::Relaxed) {
            // Its descriptor closes below, whatever the outcome.
            self.open_budget.fetch_add(1, Ordering::Relaxed);
        }
        if !task.sized.load(Ordering::Relaxed) && task.holes.load(Ordering::Relaxed) {
            // A file not sized when created ends where its last written
            // chunk does; all-zero chunks after that are a hole up to its
            // size.
            if let Err(e) = file.set_len(task.node.size) {
                return task.fail(format!("cannot set its size: {e}"));
            }
        }
        let placed = match task.tmp.get() {
            Some(tmp) => {
                // Through the open file: no path walks.
                self.apply_meta(tmp, task.node, Some(&file));
                drop(file);
                fs::rename(tmp, &task.dest).map_err(|e| format!("cannot rename into place: {e}"))
            }
            None => self.place_unnamed(task, file),
        };
        match placed {
            Ok(()) => {
                task.done.store(true, Ordering::Relaxed);
                crate::fault::point("restore-after-place");
            }
            Err(e) => task.fail(e),
        }
    }

    /// Sets a whole unnamed file's metadata and links it into place; where
    /// the system refuses the link, copies it to a temporary name and
    /// renames that into place instead.
    fn place_unnamed(
        &self,
        task: &FileTask,
        mut file: fs::File,
    ) -> std::result::Result<(), String> {
        self.apply_meta(&task.dest, task.node, Some(&file));
        let linked = if crate::fault::link_refused() {
            Err(Unplaced::Link(std::io::ErrorKind::PermissionDenied.into()))
        } else {
            link_unnamed(&file, &task.dest, task.replace)
        };
        let refused = match linked {
            Ok(()) => return Ok(()),
            Err(Unplaced::Rename(e)) => return Err(format!("cannot rename into place: {e}")),
            Err(Unplaced::Link(e)) => e,
        };
        // Files created from now on are named at once.
        self.unnamed.store(false, Ordering::Relaxed);
        let (tmp, copy) = copy_to_temp(&mut file, &task.dest)
            .map_err(|e| format!("cannot link into place ({refused}) nor copy: {e}"))?;
        self.apply_meta(&tmp, task.node, Some(&copy));
        drop(copy);
        fs::rename(&tmp, &task.dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("cannot rename into place: {e}")
        })
    }

    /// Applies the policy to one file; one to be written gets its task,
    /// whose file its first write creates (see [`Self::create_file`]).
    fn prepare_file<'p>(&self, dest: &Path, node: &'p Node) -> Result<Prepared<'p>> {
        let NodeKind::File { chunks } = &node.kind else {
            return Err(Error::Invalid("not a file".into()));
        };
        let mut exists = false;
        match self.lstat(dest) {
            Ok(_) if self.policy == Policy::SkipExisting => return Ok(Prepared::Skipped),
            Ok(md)
                if md.is_file() && md.len() == node.size && self.same_content(dest, chunks)? =>
            {
                if !self.dry_run {
                    self.apply_meta(dest, node, None);
                }
                return Ok(Prepared::Unchanged);
            }
            Ok(md) if md.is_dir() => {
                self.clear(dest, false)?;
            }
            Ok(_) => exists = true,
            Err(_) => {}
        }
        if self.dry_run {
            return Ok(Prepared::WouldWrite);
        }
        Ok(Prepared::Write(Box::new(FileTask {
            dest: dest.to_path_buf(),
            replace: exists,
            tmp: std::sync::OnceLock::new(),
            node,
            file: Mutex::new(None),
            remaining: AtomicUsize::new(chunks.len()),
            error: Mutex::new(None),
            done: std::sync::atomic::AtomicBool::new(false),
            sized: std::sync::atomic::AtomicBool::new(false),
            holes: std::sync::atomic::AtomicBool::new(false),
            transient: std::sync::atomic::AtomicBool::new(false),
        })))
    }

    /// Writes one chunk of `task` at `offset`, creating its file first if
    /// this is its first write. A file past the open budget is closed
    /// again after the write and reopened by name for the next.
    fn write_chunk(&self, task: &FileTask, data: &[u8], offset: u64) -> Result<()> {
        let mut slot = task
            .file
            .lock()
            .map_err(|_| Error::Invalid("restore worker panicked".into()))?;
        let file = self.task_file(task, slot.take())?;
        file.write_all_at(data, offset)
            .map_err(|e| Error::path("write", task.name(), e))?;
        if !task.transient.load(Ordering::Relaxed) {
            *slot = Some(file);
        }
        Ok(())
    }

    /// The file of `task`: `held` if it is held open, else a transient
    /// file opened again by name, else a new one.
    fn task_file(&self, task: &FileTask, held: Option<fs::File>) -> Result<fs::File> {
        match (held, task.tmp.get()) {
            (Some(f), _) => Ok(f),
            (None, Some(tmp)) if task.transient.load(Ordering::Relaxed) => reopen(tmp),
            (None, _) => self.create_file(task),
        }
    }

    /// Creates the file `task` is written into, held open until it is
    /// whole: unnamed (`O_TMPFILE`) in its directory where the target
    /// allows, else under a temporary name; created with its own
    /// permission bits, so that `apply_meta` need not change them (the
    /// umask permitting). Past the open budget, a file is created under
    /// a temporary name, `0600` since it is reopened by name for each
    /// write (it must stay writable to a restore not running as root),
    /// and marked transient.
    fn create_file(&self, task: &FileTask) -> Result<fs::File> {
        let NodeKind::File { chunks } = &task.node.kind else {
            return Err(Error::Invalid("not a file".into()));
        };
        let dir = task
            .dest
            .parent()
            .expect("restored files live in the target");
        let held = self.open_budget.fetch_sub(1, Ordering::Relaxed) > 0;
        if !held {
            self.open_budget.fetch_add(1, Ordering::Relaxed);
        }
        task.transient.store(!held, Ordering::Relaxed);
        let mode = if held { task.node.mode & 0o777 } else { 0o600 };
        let unnamed = (held && self.unnamed.load(Ordering::Relaxed))
            .then(|| {
                // Readable too, for a copy should linking it be refused.
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_TMPFILE)
                    .mode(mode)
                    .open(dir)
                    .ok()
            })
            .flatten();
        let file = match unnamed {
            Some(f) => f,
            None => {
                let tmp = temp_name(dir);
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(mode)
                    .open(&tmp)
                    .map_err(|e| Error::path("create", &tmp, e))?;
                let _ = task.tmp.set(tmp);
                f
            }
        };
        match self.size_file(&file, task.name(), &task.dest, task.node.size, chunks) {
            Ok(sized) => task.sized.store(sized, Ordering::Relaxed),
            Err(e) => {
                // The caller holds the task's file slot: only the name
                // goes here; the descriptor closes on return.
                if let Some(tmp) = task.tmp.get() {
                    let _ = fs::remove_file(tmp);
                }
                if held {
                    self.open_budget.fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        }
        Ok(file)
    }

    /// Reserves the blocks of a new file of at least [`RESERVE_FROM`]
    /// without holes, so a target without room for it fails here, naming
    /// the file, before any of its data is written; returns whether it
    /// did (the file then has its final size). Any other file gets its
    /// size from its writes, and from [`Self::finish_task`] where
    /// all-zero chunks after its last written one were left unwritten: a
    /// file that may have holes (see [`Self::may_have_holes`]) so they
    /// stay holes, a small file because reserving would cost a system
    /// call and an index lookup per chunk for little gain (a full target
    /// still fails its write, naming it).
    fn size_file(
        &self,
        file: &fs::File,
        tmp: &Path,
        dest: &Path,
        size: u64,
        chunks: &[BlobId],
    ) -> Result<bool> {
        if size >= RESERVE_FROM && !self.may_have_holes(chunks)? {
            if fs2::FileExt::allocate(file, size).is_ok() {
                return Ok(true);
            }
            // fs2 hands on posix_fallocate's failure through errno, which
            // posix_fallocate does not set, so the error says nothing:
            // judge by the free space instead.
            let dir = tmp.parent().unwrap_or(tmp);
            if let Ok(avail) = fs2::available_space(dir) {
                if avail < size {
                    return Err(Error::Invalid(format!(
                        "{}: no space left in the target: the file needs {}, {} is available",
                        dest.display(),
                        crate::human_bytes(size),
                        crate::human_bytes(avail)
                    )));
                }
            }
            // Room enough, yet nothing reserved (a filesystem that cannot):
            // write as for sparse ones.
        }
        Ok(false)
    }

    /// Whether a file of `chunks` may get holes: restore never writes an
    /// all-zero chunk, and one of at least a block leaves a hole. Zeros
    /// compress to almost nothing, so only chunks stored in a sliver of
    /// their size (any chunk, in a repository storing blobs raw) are
    /// compared with the id of zeros of their length.
    fn may_have_holes(&self, chunks: &[BlobId]) -> Result<bool> {
        const BLOCK: u64 = 4096;
        let raw_repo = self.repo.config().compression == 0;
        for id in chunks {
            let loc = self.repo.locate(id)?;
            let raw = u64::from(loc.raw_length);
            let sliver = u64::from(loc.length) <= raw / 64 + 64;
            if raw >= BLOCK && (sliver || raw_repo) && self.zero_id(loc.raw_length) == *id {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The id of `len` zero bytes, computed once per length.
    fn zero_id(&self, len: u32) -> BlobId {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        if let Some(id) = self.zero_ids.lock().ok().and_then(|m| m.get(&len).copied()) {
            return id;
        }
        let mut hasher = self.repo.key().blob_hasher();
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(ZEROS.len());
            hasher.update(&ZEROS[..n]);
            left -= n;
        }
        let id = BlobId(*hasher.finalize().as_bytes());
        if let Ok(mut m) = self.zero_ids.lock() {
            m.insert(len, id);
        }
        id
    }

    /// Whether the file at `path` holds exactly the chunks `ids`.
    fn same_content(&self, path: &Path, ids: &[crate::id::BlobId]) -> Result<bool> {
        let Ok(file) = fs::File::open(path) else {
            return Ok(false);
        };
        let mut offset = 0u64;
        let mut buf = Vec::new();
        for id in ids {
            let len = self.repo.locate(id)?.raw_length as usize;
            buf.resize(len, 0);
            if file.read_exact_at(&mut buf, offset).is_err() || self.repo.key().blob_id(&buf) != *id
            {
                return Ok(false);
            }
            offset += len as u64;
        }
        Ok(true)
    }

    fn restore_other(&self, dest: &Path, node: &Node) -> Result<bool> {
        if let (NodeKind::Symlink { target }, Ok(md)) = (&node.kind, self.lstat(dest)) {
            if md.file_type().is_symlink()
                && fs::read_link(dest)
                    .is_ok_and(|t| t.as_os_str().as_bytes() == target.0.as_slice())
            {
                if !self.dry_run {
                    self.apply_meta(dest, node, None);
                }
                return Ok(true);
            }
        }
        match node.kind {
            NodeKind::Socket => return Ok(false),
            NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. } if !self.root => {
                return Err(Error::Invalid(
                    "device nodes are restored only when running as root".into(),
                ));
            }
            _ => {}
        }
        match self.clear(dest, false)? {
            Existing::Skip => return Ok(false),
            Existing::Create if self.dry_run => return Ok(true),
            Existing::Create => {}
        }
        match &node.kind {
            NodeKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&target.0), dest)
                    .map_err(|e| Error::path("create symlink", dest, e))?;
            }
            kind => fsmeta::make_special(dest, kind, node.mode)
                .map_err(|e| Error::path("create", dest, e))?,
        }
        self.apply_meta(dest, node, None);
        Ok(true)
    }

    /// Sets ownership (as root), mode, xattrs and mtime; failures warn.
    /// With `file` (open on `path`, which is then a regular file) the
    /// calls go through it rather than through the path, and owner and
    /// mode are changed only where the file's differ: a file this restore
    /// created mostly has both right already, and each change is an inode
    /// update.
    fn apply_meta(&self, path: &Path, node: &Node, file: Option<&fs::File>) {
        use std::os::unix::fs::MetadataExt;
        let symlink = matches!(node.kind, NodeKind::Symlink { .. });
        let now = file.and_then(|f| f.metadata().ok());
        let owned = now
            .as_ref()
            .is_some_and(|m| m.uid() == node.uid && m.gid() == node.gid);
        if self.root && !owned {
            let r = match file {
                Some(f) => std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid)),
                None => fsmeta::set_owner(path, node.uid, node.gid),
            };
            if let Err(e) = r {
                self.fail(path, format!("cannot set owner: {e}"));
            }
        }
        // A change of owner clears set-user-ID and set-group-ID bits, so
        // the mode is set again after one.
        let moded = (owned || !self.root)
            && now
                .as_ref()
                .is_some_and(|m| m.mode() & 0o7777 == node.mode & 0o7777);
        if !symlink && !moded {
            let mode = fs::Permissions::from_mode(node.mode);
            let r = match file {
                Some(f) => f.set_permissions(mode),
                None => fs::set_permissions(path, mode),
            };
            if let Err(e) = r {
                self.fail(path, format!("cannot set mode: {e}"));
            }
        }
        for x in &node.xattrs {
            // Best effort: the target filesystem may not support them.
            let name = OsStr::from_bytes(&x.name.0);
            let _ = match file {
                Some(f) => xattr::FileExt::set_xattr(f, name, &x.value.0),
                None => xattr::set(path, name, &x.value.0),
            };
        }
        let r = match file {
            Some(f) => fsmeta::set_mtime_fd(f, node.mtime_ns),
            None => fsmeta::set_mtime(path, node.mtime_ns),
        };
        if let Err(e) = r {
            self.fail(path, format!("cannot set mtime: {e}"));
        }
    }

    /// Removes entries of `dir` not named in `keep`; returns how many. A
    /// dry run lists them in `would_remove` instead.
    fn remove_extra(
        &self,
        dir: &Path,
        keep: &HashSet<Vec<u8>>,
        would_remove: &mut Vec<PathBuf>,
    ) -> u64 {
        if self.fresh(dir) {
            return 0;
        }
        let Ok(rd) = fs::read_dir(dir) else { return 0 };
        let mut n = 0;
        for entry in rd.flatten() {
            if keep.contains(entry.file_name().as_bytes()) {
                continue;
            }
            let p = entry.path();
            if self.dry_run {
                would_remove.push(p);
                n += 1;
                continue;
            }
            let r = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                _ => fs::remove_file(&p),
            };
            match r {
                Ok(()) => n += 1,
                Err(e) => self.fail(&p, format!("cannot remove: {e}")),
            }
        }
        n
    }
}

enum Prepared<'p> {
    Write(Box<FileTask<'p>>),
    /// A dry run's decision to write the file.
    WouldWrite,
    Unchanged,
    Skipped,
}

/// A file being written: its temporary file fills as packs are read.
struct FileTask<'p> {
    dest: PathBuf,
    /// Whether something was at `dest` when the restore looked.
    replace: bool,
    /// The temporary file's name, once one is created under a name; an
    /// unnamed file (`O_TMPFILE`) has none.
    tmp: std::sync::OnceLock<PathBuf>,
    node: &'p Node,
    /// Created by the first write (see `Executor::create_file`) and held
    /// until the file is whole.
    file: Mutex<Option<fs::File>>,
    remaining: AtomicUsize,
    error: Mutex<Option<String>>,
    done: std::sync::atomic::AtomicBool,
    /// Whether the file got its final size when it was created.
    sized: std::sync::atomic::AtomicBool,
    /// Whether an all-zero chunk was left unwritten (a hole).
    holes: std::sync::atomic::AtomicBool,
    /// Whether the file, created past the open budget, is closed after
    /// each write and reopened by name (`tmp`) for the next.
    transient: std::sync::atomic::AtomicBool,
}

impl FileTask<'_> {
    fn fail(&self, why: impl std::fmt::Display) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert_with(|| why.to_string());
        }
    }

    fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    fn failed(&self) -> bool {
        self.error.lock().map(|e| e.is_some()).unwrap_or(true)
    }

    /// The path to name in messages about the file being written.
    fn name(&self) -> &Path {
        self.tmp.get().map_or(&self.dest, |t| t.as_path())
    }

    /// Gives up the file: closes it (an unnamed file vanishes with its
    /// descriptor) and removes a named temporary file.
    fn discard(&self) {
        if let Ok(mut f) = self.file.lock() {
            f.take();
        }
        if let Some(tmp) = self.tmp.get() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Opens the temporary file `tmp` again for writing (never through a
/// symlink).
fn reopen(tmp: &Path) -> Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(|e| Error::path("open", tmp, e))
}

/// A fresh temporary name in `dir`. Not derived from the file's name:
/// that may already be as long as the filesystem allows.
fn temp_name(dir: &Path) -> PathBuf {
    dir.join(format!(
        ".cairn-restore-{}",
        hex::encode(crate::crypto::random_bytes::<8>())
    ))
}

/// Links the unnamed file open as `file` under `dest`. To `replace` what
/// is there (or should something have appeared there since the restore
/// looked), the file is linked under a temporary name and renamed over
/// it, as a named temporary file would be.
fn link_unnamed(file: &fs::File, dest: &Path, replace: bool) -> std::result::Result<(), Unplaced> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicBool;
    // Linking the descriptor itself takes a capability (root has it);
    // without it, the file is named through /proc, at the cost of a walk
    // of /proc on each link.
    static BY_DESCRIPTOR: AtomicBool = AtomicBool::new(true);
    let link = |to: &Path| {
        if BY_DESCRIPTOR.load(Ordering::Relaxed) {
            match link_fd(file.as_raw_fd(), to, true) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                done => return done,
            }
            let r = link_fd(file.as_raw_fd(), to, false);
            if r.is_ok() {
                BY_DESCRIPTOR.store(false, Ordering::Relaxed);
            }
            return r;
        }
        link_fd(file.as_raw_fd(), to, false)
    };
    let direct = if replace {
        Err(std::io::ErrorKind::AlreadyExists.into())
    } else {
        link(dest)
    };
    match direct {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let tmp = temp_name(dest.parent().unwrap_or(dest));
            link(&tmp).map_err(Unplaced::Link)?;
            fs::rename(&tmp, dest).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Unplaced::Rename(e)
            })
        }
        Err(e) => Err(Unplaced::Link(e)),
    }
}

/// Whether an unnamed file made in `dir` can be linked under a name
/// there: the filesystem has `O_TMPFILE`, and the system lets this
/// process link it (through `/proc`, or by descriptor as root). Leaves
/// nothing behind.
fn unnamed_files_link(dir: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
    else {
        return false;
    };
    let probe = temp_name(dir);
    let linked = link_unnamed(&file, &probe, false).is_ok();
    if linked {
        let _ = fs::remove_file(&probe);
    }
    linked
}

/// Why [`link_unnamed`] failed.
#[derive(Debug)]
enum Unplaced {
    /// The file could not be linked: the system refuses to name unnamed
    /// files (a security module, say), or the folder is gone.
    Link(std::io::Error),
    /// It was linked under a temporary name, which could not be renamed
    /// over the entry to replace.
    Rename(std::io::Error),
}

/// Copies the unnamed file open as `file` into a new file under a
/// temporary name next to `dest`; returns that name and the new file,
/// for when the unnamed one cannot be linked.
fn copy_to_temp(file: &mut fs::File, dest: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    use std::io::{Seek, SeekFrom};
    let tmp = temp_name(dest.parent().unwrap_or(dest));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)?;
    let copied = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| std::io::copy(file, &mut out));
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((tmp, out))
}

/// `linkat` of the file open as `fd` to `to`: of the descriptor itself
/// (`AT_EMPTY_PATH`, which without `CAP_DAC_READ_SEARCH` fails with
/// `ENOENT`), or of its name under `/proc/self/fd`.
fn link_fd(fd: i32, to: &Path, by_descriptor: bool) -> std::io::Result<()> {
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    let r = if by_descriptor {
        // SAFETY: "" and `to` are NUL-terminated strings that outlive the
        // call.
        unsafe {
            libc::linkat(
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        }
    } else {
        let from = std::ffi::CString::new(format!("/proc/self/fd/{fd}"))?;
        // SAFETY: both are NUL-terminated strings that outlive the call.
        unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        }
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What restoring `blobs` of one pack costs, in bytes of work: each blob
/// is decoded once and written once per use, and each use is also worth
/// a fixed allowance, since a small file costs far more in system calls
/// (create, write, link, metadata; about 50 µs on ext4) than in data. A
/// pack of thousands of small files weighs more than one of a few large
/// chunks, and is taken first.
fn pack_cost(blobs: &[(BlobId, Location)], targets: &IdMap<BlobId, Vec<(usize, u64)>>) -> u64 {
    const PER_USE: u64 = 64 << 10;
    blobs
        .iter()
        .map(|(id, loc)| {
            let uses = targets.get(id).map_or(0, |u| u.len()) as u64;
            let raw = u64::from(loc.raw_length);
            raw + uses * (raw + PER_USE)
        })
        .sum()
}

/// Indices of `paths` cut into runs of consecutive paths in the same
/// directory, each at most `max` long.
fn directory_runs(paths: &[&Path], max: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=paths.len() {
        if i == paths.len() || i - start == max || paths[i].parent() != paths[start].parent() {
            runs.push(start..i);
            start = i;
        }
    }
    runs
}

/// Raises the open-file limit to its hard maximum (a restore keeps every
/// partly written file open) and returns the limit now in force.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Gaps between needed blobs up to this size are fetched rather than split
/// into another request.
const RANGE_GAP: u64 = 1 << 20;

/// The bytes of a pack that a restore needs: the whole file (local
/// backends map it), or, on remote stores, only the ranges holding the
/// wanted blobs, neighbours merged into one request.
enum PackBytes {
    Whole(Data),
    Ranges(Vec<(u64, Vec<u8>)>),
}

impl PackBytes {
    /// Fetches what `blobs` (sorted by offset) need of `pack`.
    fn fetch(
        backend: &dyn crate::backend::Backend,
        pack: &PackId,
        blobs: &[(BlobId, Location)],
    ) -> Result<PackBytes> {
        let name = pack.to_hex();
        if !backend.prefers_ranges() {
            return backend.read(FileKind::Pack, &name).map(PackBytes::Whole);
        }
        let mut spans: Vec<(u64, u64)> = Vec::new();
        for (_, loc) in blobs {
            let (start, end) = (
                u64::from(loc.offset),
                u64::from(loc.offset) + u64::from(loc.length),
            );
            match spans.last_mut() {
                Some(last) if start <= last.1 + RANGE_GAP => last.1 = last.1.max(end),
                _ => spans.push((start, end)),
            }
        }
        let mut out = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            let bytes = backend.read_range(FileKind::Pack, &name, start, (end - start) as usize)?;
            out.push((start, bytes));
        }
        Ok(PackBytes::Ranges(out))
    }

    /// The bytes of `range` of the pack, if fetched and present.
    fn get(&self, range: std::ops::Range<usize>) -> Option<&[u8]> {
        match self {
            PackBytes::Whole(d) => d.get(range),
            PackBytes::Ranges(r) => {
                let offset = range.start as u64;
                let i = r
                    .partition_point(|(start, _)| *start <= offset)
                    .checked_sub(1)?;
                let (start, bytes) = &r[i];
                let at = (offset - start) as usize;
                bytes.get(at..at.checked_add(range.len())?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unnamed file gets its name both ways `link_unnamed` knows, and
    /// `replace` puts it over an existing file; nothing else is left.
    #[test]
    fn unnamed_files_are_linked_by_descriptor_or_through_proc() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let unnamed = |text: &str| {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o600)
                .open(dir.path())
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
            f
        };
        let names = || {
            let mut v: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert!(names().is_empty());

        let proc = dir.path().join("through-proc");
        link_fd(unnamed("by name").as_raw_fd(), &proc, false).unwrap();
        assert_eq!(fs::read_to_string(&proc).unwrap(), "by name");
        let by_fd = dir.path().join("by-descriptor");
        match link_fd(unnamed("by fd").as_raw_fd(), &by_fd, true) {
            Ok(()) => assert_eq!(fs::read_to_string(&by_fd).unwrap(), "by fd"),
            // Without CAP_DAC_READ_SEARCH; link_unnamed then uses /proc.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}"),
        }
        let _ = fs::remove_file(&by_fd);

        // Something appeared at the name since the restore looked.
        link_unnamed(&unnamed("again"), &proc, false).unwrap();
        assert_eq!(fs::read_to_string(&proc).unwrap(), "again");
        link_unnamed(&unnamed("replaced"), &proc, true).unwrap();
        assert_eq!(fs::read_to_string(&proc).unwrap(), "replaced");
        assert_eq!(names(), ["through-proc"]);

        // The probe a restore makes first leaves nothing behind.
        assert!(unnamed_files_link(dir.path()));
        assert_eq!(names(), ["through-proc"]);
        assert!(!unnamed_files_link(&dir.path().join("missing")));

        // Where linking is refused, the file is copied to a temporary name.
        let mut refused = unnamed("copied out");
        let (tmp, copy) = copy_to_temp(&mut refused, &dir.path().join("copy")).unwrap();
        drop(copy);
        assert_eq!(fs::read_to_string(&tmp).unwrap(), "copied out");
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".cairn-restore-"), "{name}");
        fs::remove_file(&tmp).unwrap();
        assert_eq!(names(), ["through-proc"]);
    }

    #[test]
    fn directory_runs_cover_every_file_once_one_directory_each() {
        let paths: Vec<PathBuf> = [
            "a/1", "a/2", "a/3", "b/1", "a/4", "c", "d", "e/f/1", "e/f/2",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let rels: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        assert_eq!(
            directory_runs(&rels, 2),
            vec![0..2, 2..3, 3..4, 4..5, 5..7, 7..9]
        );
        assert_eq!(
            directory_runs(&rels, 64),
            vec![0..3, 3..4, 4..5, 5..7, 7..9]
        );
        assert!(directory_runs(&[], 64).is_empty());
    }

    /// A pack of many small files' chunks is costed above one holding
    /// as many bytes in a few large chunks, and a chunk used twice above
    /// one used once: the costliest packs are read first.
    #[test]
    fn packs_of_many_small_files_cost_more_than_their_bytes() {
        let pack = PackId([9; 32]);
        let blob = |n: u32, raw: u32| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            let loc = Location {
                pack,
                kind: crate::pack::BlobKind::Data,
                offset: 0,
                length: raw,
                raw_length: raw,
            };
            (BlobId(id), loc)
        };
        let small: Vec<_> = (0..1000).map(|n| blob(n, 4096)).collect();
        let large: Vec<_> = (1000..1004).map(|n| blob(n, 1 << 20)).collect();
        let mut targets: IdMap<BlobId, Vec<(usize, u64)>> = IdMap::default();
        for (t, (id, _)) in small.iter().chain(&large).enumerate() {
            targets.insert(*id, vec![(t, 0)]);
        }
        let (small_bytes, large_bytes) = (1000 * 4096u64, 4u64 << 20);
        assert!(small_bytes < large_bytes);
        assert!(pack_cost(&small, &targets) > pack_cost(&large, &targets));

        let once = pack_cost(&large[..1], &targets);
        targets.get_mut(&large[0].0).unwrap().push((9, 1 << 20));
        assert!(pack_cost(&large[..1], &targets) > once);
    }
}
