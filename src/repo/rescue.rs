//! Trees the snapshots use that the repository lost with their pack, found
//! in copies of tree packs this host's cache holds.
//!
//! A damaged pack of trees that a repair (on another host, or with
//! `--no-cache`) removed leaves the index as a gc leaves it after emptying
//! a pack: the pack is neither in the store nor named by the index, so
//! the cache sets its copy aside rather than serve it
//! ([`crate::backend::cache::Cache::tree_copies`]). Only the snapshots
//! tell the two apart: a gc never removes a tree one of them uses. So
//! `verify` and `repair index` walk the snapshots' trees when such copies
//! are there, and a copy holding a tree they use that no pack in the store
//! holds is named (verify) or put back (repair).

use std::sync::Arc;

use crate::backend::cache::Cache;
use crate::backend::FileKind;
use crate::error::Result;
use crate::id::{BlobId, IdMap, IdSet, PackId};
use crate::mmap::Map;
use crate::pack::{self, BlobKind, PackEntry};
use crate::repo::Repository;
use crate::tree::{NodeKind, TreeBlob};

/// A copy that holds trees the snapshots use and the store lacks.
pub struct Rescue {
    /// The pack.
    pub pack: PackId,
    /// Whether the store lists the pack (damaged, its damaged trees left
    /// out of the index by a repair), or has lost it.
    pub listed: bool,
    /// Its intact copy's bytes.
    pub copy: Arc<Map>,
    /// Where the copy is.
    pub path: std::path::PathBuf,
    /// How many trees the snapshots use that only it holds.
    pub trees: usize,
}

/// The copies in `cache` of tree packs (see
/// [`crate::backend::cache::Cache::tree_copies`]: but for those of packs
/// the index names, `named`, that the store does not list, `listed`) that
/// hold trees the snapshots use and `held` (a lookup in the store's
/// packs) lacks. Trees are read from the
/// store where held there, else from the copies; a tree neither can read
/// ends the walk down that path, as it does for `verify`, which reports
/// it. Walks no tree unless a copy holds a tree `held` lacks.
pub fn rescues(
    repo: &Repository,
    cache: &Cache,
    listed: &dyn Fn(&PackId) -> bool,
    named: &dyn Fn(&PackId) -> bool,
    held: &dyn Fn(&BlobId) -> bool,
) -> Result<Vec<Rescue>> {
    // The trees of each copy that the store lacks, with where they are.
    let mut copies = Vec::new();
    let mut lacking: IdMap<BlobId, (usize, PackEntry)> = IdMap::default();
    for (pack, copy, path) in cache.tree_copies(listed, named) {
        let what = format!("cached copy of pack {}", pack.short());
        let Ok(header) = pack::decode_header(&copy, repo.key(), &what) else {
            continue;
        };
        if header.kind != BlobKind::Tree {
            continue;
        }
        for e in header.entries.iter().filter(|e| !held(&e.id)) {
            lacking.entry(e.id).or_insert((copies.len(), *e));
        }
        copies.push((pack, copy, path));
    }
    if lacking.is_empty() {
        return Ok(Vec::new());
    }
    let mut used: Vec<usize> = vec![0; copies.len()];
    let mut seen: IdSet<BlobId> = IdSet::default();
    let mut todo: Vec<BlobId> = repo
        .snapshots()?
        .good
        .iter()
        .map(|e| e.snapshot.tree)
        .collect();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let blob = match lacking.get(&id) {
            Some((n, e)) => {
                used[*n] += 1;
                let (_, copy, _) = &copies[*n];
                read_from_copy(repo, copy, &id, e)
            }
            None if held(&id) => repo.load_tree_blob(&id).ok(),
            None => None,
        };
        match blob {
            Some(TreeBlob::Nodes(tree)) => {
                for node in tree.into_nodes().map_while(|n| n.ok()) {
                    if let NodeKind::Dir { subtree } = node.kind {
                        todo.push(subtree);
                    }
                }
            }
            // A folder stored in parts: each part is a tree of it.
            Some(TreeBlob::Parts(parts)) => todo.extend(parts),
            None => {}
        }
    }
    Ok(copies
        .into_iter()
        .zip(used)
        .filter(|(_, trees)| *trees > 0)
        .map(|((pack, copy, path), trees)| Rescue {
            pack,
            listed: listed(&pack),
            copy,
            path,
            trees,
        })
        .collect())
}

impl Rescue {
    /// What is wrong with the store's pack.
    pub fn why(&self) -> String {
        match self.listed {
            true => format!(
                "holds {} tree(s) the snapshots use that the index lacks (left out as damaged \
                 by a repair, on this host or another?)",
                self.trees
            ),
            false => format!(
                "gone from the repository and from its index (a repair removed it, on this \
                 host or another?), with {} tree(s) the snapshots use that no pack in the \
                 repository holds",
                self.trees
            ),
        }
    }
}

/// The pack whose intact copy in `cache` holds tree blob `id` (a folder's
/// nodes, or the list of its parts) where the index places it, readable,
/// with where the copy is: for a tree the store's
/// pack cannot give (damaged at its own size, which only a read finds),
/// so that `verify` names the copy and `repair snapshots` does not write
/// the snapshots without the tree (both did until December 2026: only
/// `--read-data`, which reads the pack, found the copy).
pub fn cached_tree(
    repo: &Repository,
    cache: &Cache,
    id: &BlobId,
) -> Option<(PackId, std::path::PathBuf)> {
    let cached = |p: &PackId| cache.intact_pack(&p.to_hex()).is_some();
    let loc = repo
        .index()
        .ok()?
        .locate_kind_where(id, BlobKind::Tree, &cached)
        .ok()??;
    let name = loc.pack.to_hex();
    let copy = cache.intact_pack(&name)?;
    let entry = PackEntry {
        id: *id,
        offset: loc.offset,
        length: loc.length,
        raw_length: loc.raw_length,
    };
    read_from_copy(repo, &copy, id, &entry)?;
    Some((loc.pack, cache.copy_path(FileKind::Pack, &name)))
}

/// Tree blob `id` (a folder's nodes, or the list of its parts) from a
/// copy of its pack, where `entry` places it.
fn read_from_copy(
    repo: &Repository,
    copy: &[u8],
    id: &BlobId,
    entry: &PackEntry,
) -> Option<TreeBlob> {
    let at = entry.offset as usize;
    let sealed = copy.get(at..at.checked_add(entry.length as usize)?)?;
    let what = format!("tree {}", id.short());
    let bytes = pack::open_blob_with(repo.key(), id, sealed, entry.raw_length, &what, |plain| {
        plain.to_vec()
    })
    .ok()?;
    TreeBlob::decode(bytes, &what).ok()
}
