//! Restore: writing a snapshot (or part of it) back to a directory.
//!
//! Restore first plans: it walks the snapshot's trees from the chosen
//! subpath, applies include/exclude patterns and lists what to create. Then
//! it creates directories (parents first), writes files on all cores,
//! links hard links, creates symlinks and special files, removes extra
//! entries under the mirror policy, and finally sets directory metadata
//! deepest first.
//!
//! Safety: every name comes from a tree that passed [`Tree::decode`], so no
//! name can contain `/` or be `..`; each directory on the way is checked to
//! be a real directory (a symlink already in the target is replaced or, with
//! skip-existing, left alone with its subtree skipped) before anything is
//! written beneath it; files are created with `O_NOFOLLOW | O_EXCL` under a
//! temporary name and renamed into place, so an interrupted restore never
//! leaves a truncated file under a real name, and nothing is ever written
//! through a symlink.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::filter::PathFilter;
use crate::fsmeta;
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
        includes: &includes,
        excludes: &excludes,
        plan: &mut plan,
        inodes: HashMap::new(),
    };
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

    let mut stats = RestoreStats::default();
    if opts.dry_run {
        stats.dirs = plan.dirs.len() as u64;
        stats.files_written = plan.files.len() as u64;
        stats.bytes_written = plan.files.iter().map(|f| f.node.size).sum();
        stats.other = (plan.links.len() + plan.others.len()) as u64;
        return Ok(stats);
    }
    fs::create_dir_all(&opts.target).map_err(|e| Error::path("create target", &opts.target, e))?;
    let ex = Executor {
        repo,
        target: &opts.target,
        policy: opts.policy,
        warn,
        errors: AtomicU64::new(0),
        skipped_dirs: Mutex::new(Vec::new()),
        root: fsmeta::is_root(),
    };
    ex.run(&plan, opts.workers, &mut stats)?;
    stats.errors = ex.errors.load(Ordering::Relaxed);
    Ok(stats)
}

struct Planner<'a> {
    repo: &'a Repository,
    includes: &'a PathFilter,
    excludes: &'a PathFilter,
    plan: &'a mut Plan,
    inodes: HashMap<(u64, u64), PathBuf>,
}

impl Planner<'_> {
    /// Plans the entries of `tree` at `rel`; returns whether any was selected.
    fn walk(&mut self, tree: &Tree, rel: &Path, abs: &str, included: bool) -> Result<bool> {
        let mut any = false;
        self.plan.dir_names.insert(
            rel.to_path_buf(),
            tree.nodes.iter().map(|n| n.name.0.clone()).collect(),
        );
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

struct Executor<'a> {
    repo: &'a Repository,
    target: &'a Path,
    policy: Policy,
    warn: &'a (dyn Fn(&str) + Sync),
    errors: AtomicU64,
    skipped_dirs: Mutex<Vec<PathBuf>>,
    root: bool,
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
            .map(|s| s.iter().any(|d| rel.starts_with(d)))
            .unwrap_or(false)
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
                        s.push(d.rel.clone());
                    }
                }
                Err(e) => {
                    self.fail(&self.target.join(&d.rel), e);
                    if let Ok(mut s) = self.skipped_dirs.lock() {
                        s.push(d.rel.clone());
                    }
                }
            }
        }
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            workers
        };
        let next = AtomicUsize::new(0);
        let (written, unchanged, skipped, bytes) = (
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
        );
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = plan.files.get(i) else { break };
                    if self.under_skipped(&f.rel) {
                        continue;
                    }
                    let dest = self.target.join(&f.rel);
                    match self.restore_file(&dest, &f.node) {
                        Ok(FileDone::Written(n)) => {
                            written.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Ok(FileDone::Unchanged) => {
                            unchanged.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(FileDone::Skipped) => {
                            skipped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => self.fail(&dest, e),
                    }
                });
            }
        });
        stats.files_written = written.into_inner();
        stats.files_unchanged = unchanged.into_inner();
        stats.skipped += skipped.into_inner();
        stats.bytes_written = bytes.into_inner();

        for (item, first) in &plan.links {
            if self.under_skipped(&item.rel) {
                continue;
            }
            let dest = self.target.join(&item.rel);
            match self.clear(&dest, false) {
                Ok(Existing::Skip) => stats.skipped += 1,
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
                    stats.removed += self.remove_extra(&self.target.join(rel), names);
                }
            }
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
        match fs::symlink_metadata(path) {
            Ok(md) if md.is_dir() => return Ok(true),
            Ok(_) => match self.clear(path, true)? {
                Existing::Skip => return Ok(false),
                Existing::Create => {}
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::path("stat", path, e)),
        }
        fs::create_dir(path).map_err(|e| Error::path("create folder", path, e))?;
        Ok(true)
    }

    /// Removes whatever is at `path` unless the policy keeps it.
    fn clear(&self, path: &Path, even_dirs: bool) -> Result<Existing> {
        let md = match fs::symlink_metadata(path) {
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
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        r.map_err(|e| Error::path("remove", path, e))?;
        Ok(Existing::Create)
    }

    fn restore_file(&self, dest: &Path, node: &Node) -> Result<FileDone> {
        let NodeKind::File { chunks } = &node.kind else {
            return Err(Error::Invalid("not a file".into()));
        };
        match fs::symlink_metadata(dest) {
            Ok(md) if self.policy == Policy::SkipExisting => {
                let _ = md;
                return Ok(FileDone::Skipped);
            }
            Ok(md)
                if md.is_file() && md.len() == node.size && self.same_content(dest, chunks)? =>
            {
                self.apply_meta(dest, node, None);
                return Ok(FileDone::Unchanged);
            }
            Ok(md) if md.is_dir() => {
                self.clear(dest, false)?;
            }
            _ => {}
        }
        let dir = dest.parent().expect("restored files live in the target");
        let tmp = dir.join(format!(
            ".{}.cairn-{}",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            hex::encode(crate::crypto::random_bytes::<4>())
        ));
        let result = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| Error::path("create", &tmp, e))?;
            file.set_len(node.size)
                .map_err(|e| Error::path("size", &tmp, e))?;
            let mut offset = 0u64;
            for id in chunks {
                let data = self.repo.read_blob(id)?;
                if data.iter().any(|&b| b != 0) {
                    file.write_all_at(&data, offset)
                        .map_err(|e| Error::path("write", &tmp, e))?;
                }
                offset += data.len() as u64;
            }
            if offset != node.size {
                return Err(Error::corrupt(
                    format!("file {}", dest.display()),
                    format!("chunks hold {offset} bytes, the tree says {}", node.size),
                ));
            }
            self.apply_meta(&tmp, node, Some(&file));
            fs::rename(&tmp, dest).map_err(|e| Error::path("rename into", dest, e))
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(FileDone::Written(node.size))
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
        if let (NodeKind::Symlink { target }, Ok(md)) = (&node.kind, fs::symlink_metadata(dest)) {
            if md.file_type().is_symlink()
                && fs::read_link(dest)
                    .is_ok_and(|t| t.as_os_str().as_bytes() == target.0.as_slice())
            {
                self.apply_meta(dest, node, None);
                return Ok(true);
            }
        }
        if let NodeKind::Socket = node.kind {
            return Ok(false);
        }
        match self.clear(dest, false)? {
            Existing::Skip => return Ok(false),
            Existing::Create => {}
        }
        match &node.kind {
            NodeKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&target.0), dest)
                    .map_err(|e| Error::path("create symlink", dest, e))?;
            }
            NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. } if !self.root => {
                return Err(Error::Invalid(
                    "device nodes are restored only when running as root".into(),
                ));
            }
            kind => fsmeta::make_special(dest, kind, node.mode)
                .map_err(|e| Error::path("create", dest, e))?,
        }
        self.apply_meta(dest, node, None);
        Ok(true)
    }

    /// Sets ownership (as root), mode, xattrs and mtime; failures warn.
    fn apply_meta(&self, path: &Path, node: &Node, _file: Option<&fs::File>) {
        let symlink = matches!(node.kind, NodeKind::Symlink { .. });
        if self.root {
            if let Err(e) = fsmeta::set_owner(path, node.uid, node.gid) {
                self.fail(path, format!("cannot set owner: {e}"));
            }
        }
        if !symlink {
            if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(node.mode)) {
                self.fail(path, format!("cannot set mode: {e}"));
            }
        }
        for x in &node.xattrs {
            // Best effort: the target filesystem may not support them.
            let _ = xattr::set(path, OsStr::from_bytes(&x.name.0), &x.value.0);
        }
        if let Err(e) = fsmeta::set_mtime(path, node.mtime_ns) {
            self.fail(path, format!("cannot set mtime: {e}"));
        }
    }

    /// Removes entries of `dir` not named in `keep`; returns how many.
    fn remove_extra(&self, dir: &Path, keep: &HashSet<Vec<u8>>) -> u64 {
        let Ok(rd) = fs::read_dir(dir) else { return 0 };
        let mut n = 0;
        for entry in rd.flatten() {
            if keep.contains(entry.file_name().as_bytes()) {
                continue;
            }
            let p = entry.path();
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

enum FileDone {
    Written(u64),
    Unchanged,
    Skipped,
}
