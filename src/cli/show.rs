//! `cairn snapshots`, `cairn ls` and `cairn cat`: reading the repository.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::output::{self, escape, outln};
use super::{json, warn, Context};
use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name, BlobId, IndexId, PackId};
use crate::index::IndexTable;
use crate::repo::DirNodes;
use crate::repo::{keys, Repository};
use crate::snapshot::{SnapshotEntry, SnapshotFilter};
use crate::tree::{Node, NodeKind, Parts, Tree, TreeBlob, PARTS_VERSION};
use crate::{format_time, human_bytes};

/// Filters shared by commands that pick snapshots.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this set.
    #[arg(long, value_parser = non_empty)]
    set: Option<String>,
    /// Only snapshots from this host.
    #[arg(long, value_parser = non_empty)]
    host: Option<String>,
    /// Only snapshots with this tag (repeatable: all must match).
    #[arg(long = "tag", value_parser = non_empty)]
    tags: Vec<String>,
}

/// A filter's value, refused when empty (a usage error): no snapshot has
/// an empty set, host or tag, so `--host "$HOST"` with HOST unset matched
/// nothing, and a nightly `forget` removed nothing, exit 0, every night.
fn non_empty(s: &str) -> std::result::Result<String, String> {
    if s.is_empty() {
        Err("an empty value was given (is a variable in the command line unset?)".into())
    } else {
        Ok(s.to_string())
    }
}

impl FilterArgs {
    pub(super) fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            set: self.set.clone(),
            host: self.host.clone(),
            tags: self.tags.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Full records as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn run_snapshots(ctx: &Context, a: SnapshotsArgs) -> Result<u8> {
    let repo = ctx.open()?;
    // An empty listing, exit 0, where `snapshots/` was lost would read
    // as a repository without snapshots (until December 2026).
    repo.require_whole_layout("list snapshots")?;
    let f = a.filter.filter();
    let loaded = repo.snapshots()?;
    super::warn_damaged(&loaded, "not listed");
    let all: Vec<SnapshotEntry> = loaded
        .good
        .into_iter()
        .filter(|e| f.matches(&e.snapshot))
        .collect();
    if a.json {
        outln!("{}", json(&all))?;
        return Ok(0);
    }
    // Columns as wide as their longest host and set name, so that long
    // ones do not push the rest of their row out of line.
    let rows: Vec<[String; 8]> = all
        .iter()
        .map(|e| {
            let s = &e.snapshot;
            let paths: Vec<_> = s.paths.iter().map(|p| escape(p.as_bytes())).collect();
            [
                e.id.short(),
                format_time(s.time_ns),
                escape(s.host.as_bytes()).into_owned(),
                escape(s.set.as_bytes()).into_owned(),
                s.kind.as_str().to_string(),
                human_bytes(s.summary.total_bytes),
                human_bytes(s.summary.bytes_stored),
                paths.join(" "),
            ]
        })
        .collect();
    let width = |col: usize, least: usize| {
        rows.iter()
            .map(|r| r[col].chars().count())
            .fold(least, usize::max)
    };
    let (host, set) = (width(2, 12), width(3, 24));
    let header = [
        "id", "time", "host", "set", "kind", "size", "added", "paths",
    ];
    for r in std::iter::once(header.map(String::from)).chain(rows) {
        outln!(
            "{:<8}  {:<25}  {:<host$}  {:<set$}  {:<12}  {:>10}  {:>10}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7]
        )?;
    }
    outln!("{} snapshot(s)", all.len())?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot: id, unique prefix of at least 4 hex digits, or `latest`.
    snapshot: String,
    /// Only entries under this path (any bytes: a name need not be UTF-8).
    path: Option<OsString>,
    /// Show mode (as `ls -l` does, set-user-ID, set-group-ID and sticky
    /// bits included), owner, size (a symlink's target's, a device's
    /// major and minor number, as `ls -l`) and time.
    #[arg(long, short = 'l')]
    long: bool,
    /// One JSON object per line: the path and the entry's fields as the
    /// snapshot's tree holds them (docs/FORMAT.md, "Tree"). A folder's
    /// `size` counts the entries its backup left out, and is
    /// 18446744073709551615 where it did not list the folder, as for the
    /// folders on the way down to the paths backed up.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Serialize)]
struct LsEntry<'a> {
    path: &'a str,
    #[serde(flatten)]
    node: &'a Node,
}

pub(super) fn run_ls(ctx: &Context, a: LsArgs) -> Result<u8> {
    crate::snapshot::check_spec(&a.snapshot)?;
    let repo = ctx.open()?;
    repo.require_whole_layout("list a snapshot")?;
    // It reads trees from packs, which a gc running meanwhile may repack.
    let _lock = super::read_lock(ctx, &repo, "ls")?;
    for msg in repo.index_reading_around("cannot be listed")? {
        warn(&msg);
    }
    let all = repo.snapshots()?;
    let e = super::pick(&all, &a.snapshot, &a.filter.filter())?;
    let given: &[u8] = a.path.as_deref().map_or(b"/", OsStrExt::as_bytes);
    let path = super::snapshot_path(given);
    let (tree, base) = repo
        .tree_at_bytes(&e.snapshot.tree, path.as_bytes())
        .map_err(|err| crate::restorer::trees_unreadable(Some(&e.id), repo.cache().is_some(), err))
        .map_err(|e| super::relative_hint(given, e))?;
    // JSON has text only: a name that is not UTF-8 is given lossily
    // there, as it is in a node's `name`.
    let mut json_base = String::from_utf8_lossy(&base).into_owned();
    let mut shown = escape(&base).into_owned();
    list_tree(&repo, tree, (&mut json_base, &mut shown), &a)?;
    for said in repo.take_read_around_said() {
        warn(&said);
    }
    Ok(0)
}

/// Prints the entries of `tree` and of every folder below it; stops at
/// the first failed write to standard output. `base` is the folder's
/// path as JSON gives it and as text shows it ([`escape`]d: a name
/// holding a newline or a terminal's escape must not forge a line),
/// one buffer each for the whole listing: each entry's name is added
/// and taken off after (until December 2026 each level held copies, and
/// a listing of a chain 2,000 folders deep of 255-byte names took 1.5
/// GB). Both are as they were once this returns.
fn list_tree(
    repo: &Repository,
    tree: DirNodes<'_>,
    base: (&mut String, &mut String),
    a: &LsArgs,
) -> Result<()> {
    use std::fmt::Write as _;
    let (path, shown) = base;
    let (path_len, shown_len) = (path.len(), shown.len());
    for node in tree {
        path.truncate(path_len);
        shown.truncate(shown_len);
        let node = &node?;
        // JSON's text: bytes that are no UTF-8 as U+FFFD (README).
        let _ = write!(path, "/{}", String::from_utf8_lossy(&node.name.0));
        shown.push('/');
        shown.push_str(&escape(&node.name.0));
        let line = if a.json {
            Some(serde_json::to_string(&LsEntry { path, node }).expect("JSON of plain data"))
        } else if a.long {
            let target = match &node.kind {
                NodeKind::Symlink { target } => format!(" -> {}", escape(&target.0)),
                NodeKind::Dir { .. } => match node.left_out() {
                    0 => String::new(),
                    crate::tree::LEFT_OUT_UNKNOWN => " (not listed by its backup)".into(),
                    1 => " (1 entry left out by its backup)".into(),
                    n => format!(" ({n} entries left out by its backup)"),
                },
                _ => String::new(),
            };
            let owner = |name: &str, id: u32| match name {
                "" => id.to_string(),
                name => escape(name.as_bytes()).into_owned(),
            };
            Some(format!(
                "{}{} {:>8} {:>8} {:>12} {} {shown}{target}",
                node.kind_char(),
                mode_string(node.mode),
                owner(&node.user, node.uid),
                owner(&node.group, node.gid),
                size_column(node),
                format_time(node.mtime_ns)
            ))
        } else {
            None
        };
        match line {
            Some(line) => outln!("{line}")?,
            None => outln!("{shown}")?,
        }
        if let NodeKind::Dir { subtree } = &node.kind {
            list_tree(repo, repo.dir_nodes(subtree)?, (path, shown), a)?;
        }
    }
    path.truncate(path_len);
    shown.truncate(shown_len);
    Ok(())
}

/// What `ls -l` shows in its size column: a file's length, a symlink's
/// target's, a device's major and minor number; 0 for the rest (a
/// folder's size is its own blocks, which a snapshot does not keep).
fn size_column(node: &Node) -> String {
    match &node.kind {
        NodeKind::File { .. } => node.size.to_string(),
        NodeKind::Symlink { target } => target.0.len().to_string(),
        NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
            format!("{}, {}", libc::major(*rdev), libc::minor(*rdev))
        }
        _ => "0".to_string(),
    }
}

/// The permission bits as `ls -l` shows them: set-user-ID, set-group-ID
/// and sticky take the place of the owner's, group's and others' `x`, as
/// `s`, `s` and `t` where that `x` is set and `S`, `S` and `T` where it
/// is not, so a mode of 4755 is not shown as 0755.
fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    // Per class: its read bit, and the special bit shown in its `x`.
    for (class, special, set, unset) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bit = |b: u32| mode & (b << class) != 0;
        s.push(if bit(4) { 'r' } else { '-' });
        s.push(if bit(2) { 'w' } else { '-' });
        s.push(match (mode & special != 0, bit(1)) {
            (true, true) => set,
            (true, false) => unset,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CatKind {
    Config,
    Snapshot,
    Tree,
    Index,
    Pack,
    Key,
    Blob,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// What to print.
    #[arg(value_enum)]
    kind: CatKind,
    /// Object id: for `tree`, `blob` and `pack`, its 64 hex digits or a
    /// unique prefix of at least 4 (as messages give them); a unique
    /// prefix or `latest` for `snapshot`; a prefix for `index` and `key`,
    /// or none to print every one.
    id: Option<String>,
}

fn need_id(a: &CatArgs) -> Result<&str> {
    a.id.as_deref()
        .ok_or_else(|| Error::Usage(format!("cat {:?} needs an id", a.kind).to_lowercase()))
}

/// Refuses, before the repository is opened, an id a kind needs and was
/// not given, or one that cannot be an id or a prefix of one.
fn check_cat_args(a: &CatArgs) -> Result<()> {
    match a.kind {
        CatKind::Snapshot => crate::snapshot::check_spec(need_id(a)?)?,
        // A whole id, or a prefix of at least 4 hex digits (as cairn's
        // messages give them: "pack 1a2b3c4d").
        CatKind::Tree | CatKind::Blob | CatKind::Pack => {
            let id = need_id(a)?;
            if !(4..=64).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Usage(format!(
                    "{id:?} is not an id: give its 64 hex digits, or at least 4 of its first"
                )));
            }
        }
        CatKind::Config if a.id.is_some() => {
            return Err(Error::Usage(
                "cat config takes no id: the repository has one config".into(),
            ))
        }
        CatKind::Config => {}
        // A prefix of ids, which are lowercase hex (any case is taken).
        CatKind::Index | CatKind::Key => {
            if let Some(id) = &a.id {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::Usage(format!(
                        "{id:?} is not an id or a prefix of one (hex digits)"
                    )));
                }
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct IndexEntryJson {
    id: BlobId,
    #[serde(flatten)]
    location: crate::index::Location,
}

#[derive(Serialize)]
struct IndexJson {
    id: IndexId,
    /// Of every blob it indexes; none for a table of format version 1,
    /// which may index both kinds.
    kind: Option<crate::pack::BlobKind>,
    packs: usize,
    entries: Vec<IndexEntryJson>,
}

fn index_json(t: &IndexTable) -> Result<IndexJson> {
    let mut entries = Vec::with_capacity(t.len());
    for i in 0..t.len() {
        let (id, location) = t.location_at(i)?;
        entries.push(IndexEntryJson { id, location });
    }
    Ok(IndexJson {
        id: t.id(),
        kind: t.kind(),
        packs: t.pack_count(),
        entries,
    })
}

pub(super) fn run_cat(ctx: &Context, a: CatArgs) -> Result<u8> {
    check_cat_args(&a)?;
    let repo = ctx.open()?;
    // What it reads from packs and index tables, a gc running meanwhile
    // may repack or rewrite.
    let _lock = match a.kind {
        CatKind::Tree | CatKind::Blob | CatKind::Index | CatKind::Pack => {
            super::read_lock(ctx, &repo, "cat")?
        }
        _ => None,
    };
    if matches!(a.kind, CatKind::Tree | CatKind::Blob | CatKind::Index) {
        for msg in repo.index_reading_around("cannot be shown")? {
            warn(&msg);
        }
    }
    // Ids are lowercase hex; a prefix matches whatever its case, as a
    // snapshot's does.
    let prefix = a.id.as_deref().map(str::to_ascii_lowercase);
    let text = match a.kind {
        CatKind::Config => json(repo.config()),
        CatKind::Snapshot => {
            let all = repo.snapshots()?;
            let spec = need_id(&a)?;
            let picked = super::pick(&all, spec, &SnapshotFilter::default());
            json(picked.map_err(|e| other_kinds_id(&repo, e, spec, Some(FileKind::Snapshot)))?)
        }
        CatKind::Tree => {
            let spec = need_id(&a)?;
            // Among trees first: a file's chunk that shares the prefix is
            // not what was asked for (it made the prefix ambiguous); only
            // where no tree has it is one named, said to be a chunk below.
            let id = blob_by_prefix(&repo, spec, "tree", Some(crate::pack::BlobKind::Tree))
                .or_else(|e| match e.is_not_found() {
                    // One chunk: said to be one below. None, or several
                    // chunks: no tree starts so, which is what was asked.
                    true => blob_by_prefix(&repo, spec, "blob", None).map_err(|_| e),
                    false => Err(e),
                })
                .map_err(|e| other_kinds_id(&repo, e, spec, None))?;
            not_indexed(&repo, &id, "tree")?;
            // A file's chunk asked for as a tree is no damage (it was
            // said to be corrupt).
            let index = repo.index()?;
            if !index.contains_kind(&id, crate::pack::BlobKind::Tree)
                && index.contains_kind(&id, crate::pack::BlobKind::Data)
            {
                return Err(Error::Invalid(format!(
                    "blob {} is a file's chunk, not a tree: `cairn cat blob {id}` prints it",
                    id.short()
                )));
            }
            let text = match repo.load_tree_blob(&id)? {
                TreeBlob::Parts(parts) => json(&Parts {
                    version: PARTS_VERSION,
                    parts,
                }),
                TreeBlob::Nodes(t) => json(&Tree::new(t.into_nodes().collect::<Result<_>>()?)),
            };
            for said in repo.take_read_around_said() {
                warn(&said);
            }
            text
        }
        CatKind::Blob => {
            let spec = need_id(&a)?;
            let id = blob_by_prefix(&repo, spec, "blob", None)
                .map_err(|e| other_kinds_id(&repo, e, spec, None))?;
            not_indexed(&repo, &id, "blob")?;
            let data = repo.read_blob(&id)?;
            for said in repo.take_read_around_said() {
                warn(&said);
            }
            output::write_bytes(&data)?;
            return Ok(0);
        }
        CatKind::Index => {
            let set = repo.index()?;
            let mut tables = Vec::new();
            for t in set.tables() {
                if prefix
                    .as_deref()
                    .is_none_or(|p| t.id().to_hex().starts_with(p))
                {
                    t.check(repo.key())?;
                    tables.push(index_json(t)?);
                }
            }
            if a.id.is_some() && tables.is_empty() {
                let id = need_id(&a)?;
                let e = Error::NotFound(format!("index {id}"));
                return Err(other_kinds_id(&repo, e, id, Some(FileKind::Index)));
            }
            json(&tables)
        }
        CatKind::Pack => {
            let spec = need_id(&a)?;
            let id = pack_by_prefix(&repo, spec)
                .map_err(|e| other_kinds_id(&repo, e, spec, Some(FileKind::Pack)))?;
            let what = format!("pack {}", id.short());
            let bytes = (repo.backend().read(FileKind::Pack, &id.to_hex()))
                .map_err(|e| other_kinds_id(&repo, e, &id.to_hex(), Some(FileKind::Pack)))?;
            if file_hash(&bytes) != id.0 {
                return Err(Error::corrupt(&what, "content does not match its name"));
            }
            let header = crate::pack::decode_header(&bytes, repo.key(), &what)?;
            #[derive(Serialize)]
            struct PackJson {
                id: PackId,
                size: usize,
                #[serde(flatten)]
                header: crate::pack::PackHeader,
            }
            json(&PackJson {
                id,
                size: bytes.len(),
                header,
            })
        }
        CatKind::Key => {
            let mut out = Vec::new();
            for name in repo.backend().list(FileKind::Key)? {
                if prefix.as_deref().is_none_or(|p| name.starts_with(p)) {
                    let bytes = repo.backend().read(FileKind::Key, &name)?;
                    out.push((name, keys::info(&bytes)?));
                }
            }
            if a.id.is_some() && out.is_empty() {
                let id = need_id(&a)?;
                let e = Error::NotFound(format!("key {id}"));
                return Err(other_kinds_id(&repo, e, id, Some(FileKind::Key)));
            }
            json(&out)
        }
    };
    outln!("{text}")?;
    Ok(0)
}

/// The one id `found` holds (those starting with the prefix `spec`), or
/// why not: none ("{what} whose id starts with SPEC{where_}" not found),
/// or several (the first two named).
fn one_of<T: Copy + Ord>(
    found: std::collections::BTreeSet<T>,
    (spec, what, where_): (&str, &str, &str),
    hex: &dyn Fn(&T) -> String,
) -> Result<T> {
    let mut it = found.iter();
    match (it.next(), it.next()) {
        (Some(id), None) => Ok(*id),
        (None, _) => Err(Error::NotFound(format!(
            "{what} whose id starts with {spec}{where_}"
        ))),
        (Some(a), Some(b)) => Err(Error::Invalid(format!(
            "{spec:?} starts the ids of more than one {what} ({} and {}{}): give more digits",
            hex(a),
            hex(b),
            if found.len() > 2 { ", and more" } else { "" }
        ))),
    }
}

/// The blob (of `kind`, or any) whose id is `spec`, or starts with it (4
/// to 63 hex digits, in either case), found in the index's tables, which
/// are sorted by id.
fn blob_by_prefix(
    repo: &Repository,
    spec: &str,
    what: &str,
    kind: Option<crate::pack::BlobKind>,
) -> Result<BlobId> {
    if spec.len() == 64 {
        return BlobId::from_hex(spec);
    }
    let prefix = spec.to_ascii_lowercase();
    let low = BlobId::from_hex(&format!("{prefix:0<64}"))?;
    let mut found = std::collections::BTreeSet::new();
    let index = repo.index()?;
    let tables = index
        .tables()
        .iter()
        .filter(|t| kind.is_none_or(|k| t.holds(k)));
    for t in tables {
        // The first entry not below `low`.
        let (mut lo, mut hi) = (0, t.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if t.id_at(mid) < low {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for i in lo..t.len() {
            let id = t.id_at(i);
            if !id.to_hex().starts_with(&prefix) {
                break;
            }
            found.insert(id);
            if found.len() > 2 {
                break;
            }
        }
    }
    one_of(found, (spec, what, " (in the index)"), &|id: &BlobId| {
        id.short()
    })
}

/// The pack whose name is `spec`, or starts with it (4 to 63 hex digits,
/// in either case), among those the store lists.
fn pack_by_prefix(repo: &Repository, spec: &str) -> Result<PackId> {
    if spec.len() == 64 {
        return PackId::from_hex(spec);
    }
    let prefix = spec.to_ascii_lowercase();
    let mut found = std::collections::BTreeSet::new();
    for name in repo.backend().list(FileKind::Pack)? {
        if name.starts_with(&prefix) && is_hex_name(&name) {
            found.insert(PackId::from_hex(&name)?);
        }
    }
    one_of(found, (spec, "pack", ""), &|id: &PackId| id.short())
}

/// `e`, an object of kind `asked` not found under the id (or prefix) `id`,
/// saying whose id it is where it names another kind's object: ids typed
/// or pasted by hand are easily another object's (it was a bare "not
/// found").
fn other_kinds_id(repo: &Repository, e: Error, id: &str, asked: Option<FileKind>) -> Error {
    let prefix = id.to_ascii_lowercase();
    let is_prefix = prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit());
    if !e.is_not_found() || !is_prefix {
        return e;
    }
    let listed = |kind: FileKind| {
        (Some(kind) != asked)
            .then(|| repo.backend().list(kind).ok())
            .flatten()
            .and_then(|names| names.into_iter().find(|n| n.starts_with(&prefix)))
    };
    let short = |name: &str| name.get(..8).unwrap_or(name).to_string();
    let whose = if let Some(name) = listed(FileKind::Snapshot) {
        format!(
            "a snapshot's id (`cairn cat snapshot {}` shows it)",
            short(&name)
        )
    } else if let Some(name) = listed(FileKind::Pack) {
        format!("a pack's id (`cairn cat pack {name}` shows it)")
    } else if let Some(name) = listed(FileKind::Index) {
        format!(
            "an index table's id (`cairn cat index {}` shows it)",
            short(&name)
        )
    } else if let Some(name) = listed(FileKind::Key) {
        format!(
            "a key file's id (`cairn cat key {}` shows it)",
            short(&name)
        )
    } else {
        // A blob's id, or a prefix of one (for another kind's command).
        let blob = match prefix.len() {
            64 => BlobId::from_hex(&prefix).ok(),
            _ if asked.is_some() => match blob_by_prefix(repo, &prefix, "blob", None) {
                Ok(blob) => Some(blob),
                Err(e) if e.is_not_found() => None,
                // Several blobs start so.
                Err(_) => {
                    return Error::Invalid(format!(
                        "{e}: {id} starts the ids of several blobs (`cairn cat tree` or `cairn \
                         cat blob` with more digits shows one)"
                    ))
                }
            },
            _ => None,
        };
        match blob {
            Some(blob) if repo.index().is_ok_and(|i| i.contains(&blob)) => {
                let kind = match repo
                    .index()
                    .is_ok_and(|i| i.contains_kind(&blob, crate::pack::BlobKind::Tree))
                {
                    true => "tree",
                    false => "blob",
                };
                format!("a {kind}'s id (`cairn cat {kind} {prefix}` shows it)")
            }
            _ => return e,
        }
    };
    Error::Invalid(format!("{e}: {id} is {whose}"))
}

/// An error for `cat tree|blob ID` where the index names no blob `id`:
/// an id typed by hand is more likely another object's (a snapshot's, a
/// pack's) or mistyped than a blob the index lost, which `verify` would
/// name in the snapshots that use it. (It was "an index entry … not
/// found", with the advice for a lost blob.)
fn not_indexed(repo: &Repository, id: &BlobId, what: &str) -> Result<()> {
    if repo.index()?.contains(id) {
        return Ok(());
    }
    let hex = id.to_hex();
    let listed = |kind: FileKind| {
        repo.backend()
            .list(kind)
            .is_ok_and(|names| names.contains(&hex))
    };
    // A snapshot's root tree the index lacks is lost to it, not mistyped.
    let root_of = repo.snapshots().ok().and_then(|all| {
        all.good
            .iter()
            .find(|e| e.snapshot.tree == *id)
            .map(|e| e.id.short())
    });
    let other = if let Some(snapshot) = root_of {
        format!(
            ", though it is snapshot {snapshot}'s root tree: the index lacks it (a table \
             lost or left unread); `cairn verify` names what that loses, and `cairn repair \
             index` rebuilds the index from the packs"
        )
    } else if listed(FileKind::Snapshot) {
        format!(
            ": it is a snapshot's id (`cairn cat snapshot {}` shows it, its root tree in \
             `tree`)",
            id.short()
        )
    } else if listed(FileKind::Pack) {
        format!(": it is a pack's id (`cairn cat pack {hex}` shows it)")
    } else if listed(FileKind::Index) {
        format!(
            ": it is an index table's id (`cairn cat index {}` shows it)",
            id.short()
        )
    } else if listed(FileKind::Key) {
        format!(
            ": it is a key file's id (`cairn cat key {}` shows it)",
            id.short()
        )
    } else {
        "; check the id (where a snapshot uses it, `cairn verify` names the files that lose \
         it, and `cairn repair index` finds it if only the index lost it)"
            .into()
    };
    Err(Error::Invalid(format!(
        "no {what} {hex} in the index{other}"
    )))
}

#[cfg(test)]
mod tests {
    use super::mode_string;

    /// A prefix of two ids or more is refused, naming two; of one, gives
    /// it; of none, says what was asked for.
    #[test]
    fn a_prefix_names_one_id_or_says_why_not() {
        use std::collections::BTreeSet;
        let hex = |n: &u32| format!("{n:08x}");
        let one = super::one_of(BTreeSet::from([0xabcd_0001u32]), ("abcd", "pack", ""), &hex);
        assert_eq!(one.unwrap(), 0xabcd_0001);
        let none = super::one_of(BTreeSet::<u32>::new(), ("abcd", "pack", ""), &hex);
        assert_eq!(
            none.unwrap_err().to_string(),
            "pack whose id starts with abcd not found"
        );
        let many = BTreeSet::from([0xabcd_0001u32, 0xabcd_0002, 0xabcd_0003]);
        let e = super::one_of(many, ("abcd", "tree", " (in the index)"), &hex).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"abcd\" starts the ids of more than one tree (abcd0001 and abcd0002, and more): \
             give more digits"
        );
    }

    #[test]
    fn modes_show_set_id_and_sticky_bits_as_ls_does() {
        for (mode, shown) in [
            (0o755, "rwxr-xr-x"),
            (0o640, "rw-r-----"),
            (0o000, "---------"),
            (0o4755, "rwsr-xr-x"),
            (0o4644, "rwSr--r--"),
            (0o2755, "rwxr-sr-x"),
            (0o2745, "rwxr-Sr-x"),
            (0o1777, "rwxrwxrwt"),
            (0o1776, "rwxrwxrwT"),
            (0o7777, "rwsrwsrwt"),
            (0o7000, "--S--S--T"),
            // File type bits are not permission bits.
            (0o100644, "rw-r--r--"),
        ] {
            assert_eq!(mode_string(mode), shown, "{mode:o}");
        }
    }
}
