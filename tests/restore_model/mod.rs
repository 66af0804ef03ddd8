//! What each restore policy makes of a target that already holds
//! something (README and DESIGN.md, "Restore"), for
//! `tests/restore_targets.rs`: a model of a snapshot, of what a restore
//! spec and patterns select from it, and of the target before and after.
//!
//! Every selected entry of the snapshot ends up there exactly (content,
//! kind, mode, owner, time, symlink target), but where the policy keeps
//! what is in its way: `skip-existing` leaves whatever exists as it is (a
//! folder's time moves only when an entry is added to it) and restores
//! nothing beneath a non-folder where the snapshot has a folder; `merge`
//! replaces whatever stands in the way of a snapshot entry except a
//! non-empty folder where the snapshot has something else (an error, exit
//! 1), and keeps the rest; `mirror` replaces everything in the way and
//! removes what the folders it restores hold beside the snapshot's names
//! (all of them, whatever was selected). The files restored from one
//! inode of the snapshot share one inode, and no other restored file.
//!
//! A test file using this module declares `mod common;` before
//! `mod restore_model;`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::*;

/// Mode, owner and time of an entry (a symlink's mode is 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
}

impl Meta {
    fn of(e: &Entry) -> Meta {
        Meta {
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
        }
    }
}

/// An entry of a snapshot.
#[derive(Clone, Debug)]
pub struct SnapNode {
    pub kind: Kind,
    /// `None` for the folders above the one backed up, whose times move
    /// under the tests: only their kind is checked.
    meta: Option<Meta>,
    /// For a file with hard links, the first path of its inode.
    group: Option<PathBuf>,
}

/// What a snapshot holds, by absolute path ("/" included).
pub struct Snap {
    pub id: String,
    pub nodes: BTreeMap<PathBuf, SnapNode>,
    /// The path its backup was given: the folders above it hold only the
    /// way down, and a mirror prunes none of them.
    pub given: PathBuf,
}

impl Snap {
    pub fn of(id: &str, src: &Path, man: &Manifest) -> Snap {
        let base = PathBuf::from(abs(src));
        let mut nodes = BTreeMap::new();
        for up in base.ancestors().skip(1) {
            let node = SnapNode {
                kind: Kind::Dir,
                meta: None,
                group: None,
            };
            nodes.insert(up.to_path_buf(), node);
        }
        let at = |rel: &Path| {
            if rel.as_os_str().is_empty() {
                base.clone()
            } else {
                base.join(rel)
            }
        };
        for (rel, e) in man {
            let node = SnapNode {
                kind: e.kind.clone(),
                meta: Some(Meta::of(e)),
                group: e.link_group.as_deref().map(&at),
            };
            nodes.insert(at(rel), node);
        }
        Snap {
            id: id.to_string(),
            nodes,
            given: base,
        }
    }

    /// The names the snapshot holds in the folder `dir`.
    pub fn names_in(&self, dir: &Path) -> HashSet<OsString> {
        self.nodes
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect()
    }
}

/// What a restore spec restores.
#[derive(Clone, Debug)]
pub enum Spec {
    Whole,
    /// `SNAP:/path` of a folder: what it holds goes into the target.
    Dir(PathBuf),
    /// `SNAP:/path` of anything else: it goes into the target by its name.
    One(PathBuf),
}

impl Spec {
    pub fn arg(&self, id: &str) -> String {
        match self {
            Spec::Whole => id.to_string(),
            Spec::Dir(p) | Spec::One(p) => format!("{id}:{}", p.display()),
        }
    }
}

/// The entries a restore walks, in the walk's order: (path in the
/// target, path in the snapshot).
pub struct View {
    /// The snapshot's folder that the target stands for.
    base: PathBuf,
    one_file: bool,
    pub entries: Vec<(PathBuf, PathBuf)>,
}

pub fn view(snap: &Snap, spec: &Spec) -> View {
    let (base, one_file) = match spec {
        Spec::Whole => (PathBuf::from("/"), false),
        Spec::Dir(p) => (p.clone(), false),
        Spec::One(p) => (p.parent().unwrap().to_path_buf(), true),
    };
    let entries = snap
        .nodes
        .keys()
        .filter(|p| match spec {
            Spec::One(one) => *p == one,
            _ => p.starts_with(&base) && **p != base,
        })
        .map(|p| (p.strip_prefix(&base).unwrap().to_path_buf(), p.clone()))
        .collect();
    View {
        base,
        one_file,
        entries,
    }
}

/// The patterns the test uses, each of a form whose meaning (README,
/// "Restore") is simple to model.
#[derive(Clone, Debug)]
pub enum Pat {
    /// `name`: a name at any depth.
    Name(String),
    /// `name/`: a folder's name.
    DirName(String),
    /// `*.ext`
    Ext(String),
    /// `/the/whole/path`
    Abs(String),
    /// `parent/name`: the path's last two components.
    Tail(String, String),
}

impl Pat {
    pub fn text(&self) -> String {
        match self {
            Pat::Name(n) => n.clone(),
            Pat::DirName(n) => format!("{n}/"),
            Pat::Ext(e) => format!("*.{e}"),
            Pat::Abs(p) => p.clone(),
            Pat::Tail(d, n) => format!("{d}/{n}"),
        }
    }

    pub fn matches(&self, path: &Path, is_dir: bool) -> bool {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match self {
            Pat::Name(n) => name == n,
            Pat::DirName(n) => is_dir && name == n,
            Pat::Ext(e) => name.ends_with(&format!(".{e}")),
            Pat::Abs(p) => path.to_str() == Some(p.as_str()),
            Pat::Tail(d, n) => {
                name == n
                    && path
                        .parent()
                        .and_then(|p| p.file_name())
                        .and_then(|p| p.to_str())
                        == Some(d.as_str())
            }
        }
    }
}

/// Whether a pattern of `pats` matches the folder the view stands for or
/// one above it (but `/`), which a restore of part of a snapshot matches
/// as a whole restore does.
fn above_hits(view: &View, pats: &[Pat]) -> bool {
    (view.base.ancestors())
        .filter(|a| *a != Path::new("/"))
        .any(|a| pats.iter().any(|pat| pat.matches(a, true)))
}

/// Whether an exclude matches the folder the view stands for or one
/// above it (but `/`) that is not on the way down to the path the backup
/// was given.
fn above_excluded(snap: &Snap, view: &View, excludes: &[Pat]) -> bool {
    (view.base.ancestors())
        .filter(|a| *a != Path::new("/") && !snap.given.starts_with(a))
        .any(|a| excludes.iter().any(|pat| pat.matches(a, true)))
}

/// Which entries of `view` the restore selects: those not excluded (nor
/// beneath an excluded folder) that an include matches (or a folder
/// above them does), or all with no include; and every folder holding
/// one.
fn select(snap: &Snap, view: &View, includes: &[Pat], excludes: &[Pat]) -> Vec<bool> {
    let at: HashMap<&Path, usize> = (view.entries.iter().enumerate())
        .map(|(i, (rel, _))| (rel.as_path(), i))
        .collect();
    let mut sel = vec![false; view.entries.len()];
    for (i, (rel, path)) in view.entries.iter().enumerate() {
        // The entry and the folders the walk passed through to it.
        let chain: Vec<(PathBuf, bool)> = rel
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .map(|a| {
                let p = view.base.join(a);
                let is_dir = p != *path || snap.nodes[path].kind == Kind::Dir;
                (p, is_dir)
            })
            .collect();
        let hit = |pats: &[Pat]| {
            (chain.iter()).any(|(p, dir)| pats.iter().any(|pat| pat.matches(p, *dir)))
                || above_hits(view, pats)
        };
        // The path the backup was given and the folders down to it are
        // kept whatever the excludes say, as the backup kept them.
        let excluded = (chain.iter())
            .filter(|(p, _)| !snap.given.starts_with(p))
            .any(|(p, dir)| excludes.iter().any(|pat| pat.matches(p, *dir)))
            || above_excluded(snap, view, excludes);
        sel[i] = !excluded && (includes.is_empty() || hit(includes));
    }
    for i in 0..sel.len() {
        if sel[i] {
            let rel = &view.entries[i].0;
            for a in rel.ancestors().skip(1) {
                if let Some(&j) = at.get(a) {
                    sel[j] = true;
                }
            }
        }
    }
    sel
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    Merge,
    Mirror,
    SkipExisting,
}

impl Policy {
    pub fn arg(self) -> &'static str {
        match self {
            Policy::Merge => "merge",
            Policy::Mirror => "mirror",
            Policy::SkipExisting => "skip-existing",
        }
    }
}

/// A target as found: each entry with its inode number.
pub type Scan = BTreeMap<PathBuf, (Entry, u64)>;

pub fn scan(root: &Path) -> Option<Scan> {
    fs::symlink_metadata(root).ok()?;
    let entries = manifest(root).into_iter().map(|(rel, e)| {
        let ino = fs::symlink_metadata(root.join(&rel)).unwrap().ino();
        (rel, (e, ino))
    });
    Some(entries.collect())
}

/// A file's inode in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Inode {
    /// One the target held before (its number then), kept.
    Old(u64),
    /// The inode a snapshot file is restored on: one per hard-linked
    /// inode of the snapshot, one per other file.
    Restored(usize),
}

/// What the model expects at a path of the target.
#[derive(Clone, Debug)]
struct Want {
    kind: Kind,
    /// `None` where not known.
    meta: Option<Meta>,
    inode: Option<Inode>,
    /// A folder that entries were added to or removed from...
    moved: bool,
    /// ... unless the restore gave it its metadata after them.
    meta_last: bool,
}

impl Want {
    fn of(node: &SnapNode) -> Want {
        Want {
            kind: node.kind.clone(),
            meta: node.meta,
            inode: None,
            moved: false,
            meta_last: false,
        }
    }
}

/// The target as the model expects it.
///
/// Hard links: the files restored from one inode of the snapshot share
/// one inode, and no other restored file, in the target; a file kept
/// shares one with the files it shared one with before. A file of the
/// target left in place as identical to the snapshot's keeps its inode,
/// so other paths of that inode (kept, not restored) may share the
/// restored file's inode and metadata.
pub struct Model {
    at: BTreeMap<PathBuf, Want>,
    /// The snapshot's inode (its first path) or file each `Restored`
    /// stands for.
    restored: HashMap<PathBuf, usize>,
    /// Inodes of the target that may be left in place for the
    /// `Restored` ones given.
    in_place: HashMap<u64, HashSet<usize>>,
    /// Entries the restore fails on.
    errors: u64,
    /// Whether there were includes and they selected nothing.
    nothing_selected: bool,
    /// What a mirror removes beside the snapshot's entries.
    pub removed: Vec<PathBuf>,
    /// Folders skip-existing finds a non-folder in place of: nothing
    /// beneath them is restored.
    skipped: Vec<PathBuf>,
}

impl Model {
    /// The exit code the restore ends with.
    pub fn exit_code(&self) -> i32 {
        if self.errors > 0 || self.nothing_selected {
            1
        } else {
            0
        }
    }

    fn of(before: Option<&Scan>) -> Model {
        let mut m = Model {
            at: BTreeMap::new(),
            restored: HashMap::new(),
            in_place: HashMap::new(),
            errors: 0,
            nothing_selected: false,
            removed: Vec::new(),
            skipped: Vec::new(),
        };
        for (rel, (e, ino)) in before.into_iter().flatten() {
            let file = matches!(e.kind, Kind::File { .. });
            let want = Want {
                kind: e.kind.clone(),
                meta: Some(Meta::of(e)),
                inode: file.then_some(Inode::Old(*ino)),
                moved: false,
                meta_last: false,
            };
            m.at.insert(rel.clone(), want);
        }
        // The restore makes a missing target; its own metadata is never
        // the snapshot's, and probes made in it move its time.
        let root = Want {
            kind: Kind::Dir,
            meta: None,
            inode: None,
            moved: true,
            meta_last: false,
        };
        m.at.entry(PathBuf::new()).or_insert(root).meta = None;
        m
    }

    fn touch_parent(&mut self, rel: &Path) {
        if let Some(w) = rel.parent().and_then(|p| self.at.get_mut(p)) {
            w.moved = true;
        }
    }

    /// Removes `rel` and whatever is beneath it.
    fn remove(&mut self, rel: &Path) {
        let doomed: Vec<PathBuf> = (self.at.range(rel.to_path_buf()..))
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(rel))
            .cloned()
            .collect();
        for p in &doomed {
            self.at.remove(p);
        }
        if !doomed.is_empty() {
            self.touch_parent(rel);
        }
    }

    fn put(&mut self, rel: &Path, want: Want) {
        self.remove(rel);
        self.at.insert(rel.to_path_buf(), want);
        self.touch_parent(rel);
    }

    /// The snapshot's file at `path` (in the snapshot) restored at `rel`.
    fn restore_file(&mut self, rel: &Path, path: &Path, node: &SnapNode) {
        let key = node.group.clone().unwrap_or_else(|| path.to_path_buf());
        let next = self.restored.len();
        let r = *self.restored.entry(key).or_insert(next);
        // A file of the same content may be left in place, inode and all.
        if let Some(Want {
            inode: Some(Inode::Old(old)),
            kind,
            ..
        }) = self.at.get(rel)
        {
            if *kind == node.kind {
                self.in_place.entry(*old).or_default().insert(r);
            }
        }
        let mut want = Want::of(node);
        want.inode = Some(Inode::Restored(r));
        self.put(rel, want);
    }

    /// A folder where the snapshot has something else: an empty one is
    /// removed, a non-empty one too by a mirror; a merge fails on it and
    /// leaves it. Whether the entry can be put there.
    fn clear_dir(&mut self, rel: &Path, policy: Policy) -> bool {
        let empty = (self.at.range(rel.to_path_buf()..))
            .nth(1)
            .is_none_or(|(p, _)| !p.starts_with(rel));
        if empty || policy == Policy::Mirror {
            self.remove(rel);
            true
        } else {
            self.errors += 1;
            false
        }
    }

    /// Removes `rel`, which the snapshot lacks, and what it holds, but
    /// for what an exclude matches (at its path as backed up, beneath
    /// `base`), and the folders holding that; records what it removes
    /// (a folder alone when it goes whole). Returns whether it removed
    /// `rel`.
    fn prune(&mut self, rel: &Path, base: &Path, excludes: &[Pat]) -> bool {
        if self.at[rel].kind != Kind::Dir || excludes.is_empty() {
            self.remove(rel);
            self.removed.push(rel.to_path_buf());
            return true;
        }
        let mut removed = Vec::new();
        let mut kept = false;
        for child in self.children(rel) {
            let is_dir = self.at[&child].kind == Kind::Dir;
            if excludes
                .iter()
                .any(|p| p.matches(&base.join(&child), is_dir))
            {
                kept = true;
                continue;
            }
            let before = self.removed.len();
            kept |= !self.prune(&child, base, excludes);
            removed.extend(self.removed.drain(before..));
        }
        if kept {
            self.removed.extend(removed);
            false
        } else {
            self.remove(rel);
            self.removed.push(rel.to_path_buf());
            true
        }
    }

    fn children(&self, rel: &Path) -> Vec<PathBuf> {
        (self.at.range(rel.to_path_buf()..))
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(rel))
            .filter(|p| p.parent() == Some(rel))
            .cloned()
            .collect()
    }
}

/// What a restore of `view` of `snap`, narrowed by the patterns, makes
/// of the target `before` under `policy` (README and DESIGN.md,
/// "Restore").
pub fn simulate(
    before: Option<&Scan>,
    snap: &Snap,
    view: &View,
    (includes, excludes): (&[Pat], &[Pat]),
    policy: Policy,
) -> Model {
    let sel = select(snap, view, includes, excludes);
    let mut m = Model::of(before);
    if !includes.is_empty() && !sel.contains(&true) {
        // Includes that select nothing change nothing, and fail.
        m.nothing_selected = true;
        return m;
    }
    let skip = policy == Policy::SkipExisting;
    for (i, (rel, path)) in view.entries.iter().enumerate() {
        if !sel[i] || m.skipped.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let node = &snap.nodes[path];
        let cur = m.at.get(rel).map(|w| w.kind.clone());
        let is_dir = cur.as_ref() == Some(&Kind::Dir);
        match &node.kind {
            Kind::Dir => match cur {
                Some(Kind::Dir) if skip => {}
                Some(Kind::Dir) => {
                    let w = m.at.get_mut(rel).unwrap();
                    w.meta = node.meta;
                    w.meta_last = true;
                }
                Some(_) if skip => m.skipped.push(rel.clone()),
                _ => {
                    let mut want = Want::of(node);
                    want.meta_last = true;
                    m.put(rel, want);
                }
            },
            // The same symlink: left in place, given the metadata.
            Kind::Symlink(_) if cur.as_ref() == Some(&node.kind) => {
                if !skip {
                    m.at.get_mut(rel).unwrap().meta = node.meta;
                }
            }
            // Skip-existing keeps what is there, whatever it is (and a
            // hard link is then restored at the inode's next path); a
            // merge fails on a non-empty folder in the way.
            _ if cur.is_some() && skip => {}
            _ if is_dir && !m.clear_dir(rel, policy) => {}
            Kind::File { .. } => m.restore_file(rel, path, node),
            _ => m.put(rel, Want::of(node)),
        }
    }
    // Beneath an excluded folder, nothing is walked, nor pruned.
    if policy == Policy::Mirror && !view.one_file && !above_excluded(snap, view, excludes) {
        let mut dirs = vec![PathBuf::new()];
        dirs.extend(
            (view.entries.iter().zip(&sel))
                .filter(|((_, p), s)| **s && snap.nodes[p].kind == Kind::Dir)
                .map(|((rel, _), _)| rel.clone()),
        );
        for dir in dirs {
            let at = view.base.join(&dir);
            if snap.given.starts_with(&at) && snap.given != at {
                continue;
            }
            let keep = snap.names_in(&at);
            for child in m.children(&dir) {
                if keep.contains(child.file_name().unwrap()) {
                    continue;
                }
                // What the patterns do not select stays, as `rsync
                // --delete` leaves what it excludes: what an exclude
                // matches, and with includes what none selects (matching
                // neither it nor a folder above it).
                let is_dir = m.at[&child].kind == Kind::Dir;
                let path = view.base.join(&child);
                let excluded = excludes.iter().any(|p| p.matches(&path, is_dir));
                let included = includes.is_empty()
                    || above_hits(view, includes)
                    || (child.ancestors().filter(|a| !a.as_os_str().is_empty())).any(|a| {
                        let p = view.base.join(a);
                        let dir = a != child || is_dir;
                        includes.iter().any(|pat| pat.matches(&p, dir))
                    });
                if excluded || !included {
                    continue;
                }
                m.prune(&child, &view.base, excludes);
            }
        }
    }
    m
}

/// How `after` differs from what the model expects.
pub fn differences(m: &Model, after: &Scan) -> Vec<String> {
    let mut diffs = Vec::new();
    for (p, w) in &m.at {
        let Some((got, _)) = after.get(p) else {
            diffs.push(format!("missing: {p:?} (want {w:?})"));
            continue;
        };
        if got.kind != w.kind {
            diffs.push(format!(
                "differs: {p:?}: want {:?}, found {:?}",
                w.kind, got.kind
            ));
            continue;
        }
        if p.as_os_str().is_empty() {
            continue;
        }
        // A kept file whose inode a restored one may keep has that one's
        // metadata, or its own.
        let shared = matches!(w.inode, Some(Inode::Old(i)) if m.in_place.contains_key(&i));
        let meta = if shared { None } else { w.meta };
        if let Some(mut want) = meta {
            let have = Meta::of(got);
            if w.moved && !w.meta_last {
                want.mtime = have.mtime;
            }
            if have != want {
                diffs.push(format!("differs: {p:?}: want {want:?}, found {have:?}"));
            }
        }
    }
    for p in after.keys() {
        if !m.at.contains_key(p) {
            diffs.push(format!("unexpected: {p:?}"));
        }
    }
    // Hard links. The inodes each model inode is found on, and the model
    // inodes found on each inode.
    let mut found: HashMap<Inode, HashSet<u64>> = HashMap::new();
    let mut holds: BTreeMap<u64, Vec<(&PathBuf, Inode)>> = BTreeMap::new();
    for (p, w) in &m.at {
        if let (Some(inode), Some((got, ino))) = (w.inode, after.get(p)) {
            if got.kind == w.kind {
                found.entry(inode).or_default().insert(*ino);
                holds.entry(*ino).or_default().push((p, inode));
            }
        }
    }
    for (inode, inos) in &found {
        if inos.len() > 1 {
            let paths: Vec<&PathBuf> = (holds.values())
                .flatten()
                .filter(|(_, i)| i == inode)
                .map(|(p, _)| *p)
                .collect();
            diffs.push(format!("not one inode, as they should be: {paths:?}"));
        }
    }
    for paths in holds.values() {
        let mut restored: Vec<usize> = Vec::new();
        let mut old: Vec<u64> = Vec::new();
        for (_, inode) in paths {
            match *inode {
                Inode::Restored(r) if !restored.contains(&r) => restored.push(r),
                Inode::Old(o) if !old.contains(&o) => old.push(o),
                _ => {}
            }
        }
        let allowed = match (&restored[..], &old[..]) {
            ([], [_]) | ([_], []) => true,
            ([r], [o]) => m.in_place.get(o).is_some_and(|rs| rs.contains(r)),
            _ => false,
        };
        if !allowed {
            let paths: Vec<&PathBuf> = paths.iter().map(|(p, _)| *p).collect();
            diffs.push(format!("one inode, as they should not be: {paths:?}"));
        }
    }
    diffs
}

/// The paths where two scans differ.
pub fn scan_diff(a: &Scan, b: &Scan) -> Vec<String> {
    let mut out = Vec::new();
    for (p, e) in a {
        match b.get(p) {
            None => out.push(format!("gone: {p:?}")),
            Some(f) if f != e => out.push(format!("changed: {p:?}: {e:?} -> {f:?}")),
            _ => {}
        }
    }
    out.extend(
        (b.keys())
            .filter(|p| !a.contains_key(*p))
            .map(|p| format!("new: {p:?}")),
    );
    out
}
