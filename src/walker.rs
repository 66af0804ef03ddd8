//! Parallel traversal of snapshot trees, each tree visited once.
//!
//! gc's mark phase, verify and repair walk every tree reachable from many
//! snapshots. Snapshots share most of their trees, so a tree is visited
//! once however many snapshots reach it. Workers pull tree ids from a shared
//! queue; a pending counter tells them when the walk is over, and the
//! worker that finishes the last tree wakes the others to stop.
//!
//! Trees are read through a [`TreeReader`], which keeps each pack it reads
//! from open for the walk rather than opening the file once per tree.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{unbounded, Sender};

use crate::backend::{FileKind, RangeReader};
use crate::error::{Error, Result};
use crate::id::{BlobId, IdMap, IdSet, PackId};
use crate::repo::Repository;
use crate::tree::{self, Ref};

/// Visits every tree reachable from `roots` once, on `workers` threads
/// (0 = one per core). Each tree is checked as [`Tree::decode`] checks it
/// (see [`tree::check`]) but not decoded: `visit` gets each tree id with
/// the chunks and subtrees it refers to, in node order, or the error that
/// made it unreadable; subtrees of unreadable trees are not reached. A
/// directory of 200,000 files costs its references (33 bytes each), not
/// its decoded nodes. Returns the number of trees visited, or the
/// store's error once it stops answering (a transient error, retries
/// spent): that is no tree's damage, and the walk goes no further.
///
/// [`Tree::decode`]: crate::tree::Tree::decode
pub fn for_each_tree(
    repo: &Repository,
    roots: &[BlobId],
    workers: usize,
    visit: &(dyn Fn(BlobId, Result<&[Ref]>) + Sync),
) -> Result<usize> {
    let reader = TreeReader::new(repo);
    // A store that stops answering (a transient error, retries spent)
    // ends the walk with its error: no tree is damaged for it, and every
    // tree after would wait for it in turn.
    let outage: Mutex<Option<Error>> = Mutex::new(None);
    let trees = walk(repo, roots, workers, &|id, enqueue| {
        if outage.lock().map_or(true, |o| o.is_some()) {
            return;
        }
        match reader.with_tree(&id, |plain| {
            let mut refs = Vec::new();
            tree::check(plain, &format!("tree {}", id.short()), |r| refs.push(r))?;
            Ok(refs)
        }) {
            Ok(refs) => {
                for r in &refs {
                    if let Ref::Subtree(subtree) | Ref::Part(subtree) = r {
                        enqueue(*subtree);
                    }
                }
                visit(id, Ok(&refs));
            }
            Err(e) if e.is_store_unavailable() => {
                if let Ok(mut o) = outage.lock() {
                    o.get_or_insert(e);
                }
            }
            Err(e) => visit(id, Err(e)),
        }
    })?;
    match outage.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(trees),
    }
}

/// What a walk does with one tree: gets the tree's id and a function to
/// call with each of its subtrees.
pub type Step<'a> = dyn Fn(BlobId, &mut dyn FnMut(BlobId)) + Sync + 'a;

/// The core of every walk: calls `step` once for every tree reachable
/// from `roots`, on `workers` threads (0 = one per core). `step` gets the
/// tree's id and a function to call with each of its subtrees (a subtree
/// already queued or visited is skipped). Returns the number of trees
/// stepped through.
pub fn walk(repo: &Repository, roots: &[BlobId], workers: usize, step: &Step<'_>) -> Result<usize> {
    // Map the index before the threads start so its errors surface here.
    repo.index()?;
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        workers
    };
    let seen: Mutex<IdSet<BlobId>> = Mutex::new(IdSet::default());
    let pending = AtomicUsize::new(0);
    let visited = AtomicUsize::new(0);
    // `None` tells a worker the walk is over.
    let (tx, rx) = unbounded::<Option<BlobId>>();
    let enqueue = |id: BlobId| {
        let fresh = seen.lock().map(|mut s| s.insert(id)).unwrap_or(false);
        if fresh {
            pending.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(Some(id));
        }
    };
    for r in roots {
        enqueue(*r);
    }
    if pending.load(Ordering::SeqCst) == 0 {
        return Ok(0);
    }
    std::thread::scope(|s| {
        for _ in 0..workers {
            let rx = rx.clone();
            let (enqueue, pending, visited, tx) = (&enqueue, &pending, &visited, &tx);
            s.spawn(move || {
                // Stops every worker if this one panics, so the scope ends
                // (and re-raises the panic) instead of waiting forever.
                let _stop = StopOnPanic { tx, workers };
                while let Ok(Some(id)) = rx.recv() {
                    step(id, &mut |sub| enqueue(sub));
                    visited.fetch_add(1, Ordering::Relaxed);
                    // Subtrees were counted before this tree is uncounted,
                    // so the count reaches zero once, after the last tree.
                    if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                        for _ in 0..workers {
                            let _ = tx.send(None);
                        }
                    }
                }
            });
        }
    });
    Ok(visited.into_inner())
}

struct StopOnPanic<'a> {
    tx: &'a Sender<Option<BlobId>>,
    workers: usize,
}

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for _ in 0..self.workers {
                let _ = self.tx.send(None);
            }
        }
    }
}

/// At most this many packs are kept open by one [`TreeReader`]; past it
/// the open files are closed and reopened as needed.
const MAX_OPEN_PACKS: usize = 256;

/// Reads tree blobs for a walk over many of them. Where the store offers
/// it ([`crate::backend::Backend::open_ranges`], a local directory), each
/// pack is opened once and read at the trees' offsets; elsewhere each tree
/// is read as [`Repository::read_blob`] reads it (through the tree-pack
/// cache when there is one). Every tree is authenticated and checked
/// against its id either way.
pub struct TreeReader<'r> {
    repo: &'r Repository,
    /// `None` for a pack whose store offers no open reader.
    open: Mutex<IdMap<PackId, Option<Arc<dyn RangeReader>>>>,
}

thread_local! {
    /// The sealed bytes of the tree being read, reused across trees up to
    /// [`SEALED_KEPT`] bytes.
    static SEALED: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest buffer [`SEALED`] keeps between trees: trees are mostly a
/// few KiB, and one of many megabytes (or a damaged entry's length)
/// should not stay allocated for the rest of a walk, once per thread.
const SEALED_KEPT: usize = 1 << 20;

impl<'r> TreeReader<'r> {
    /// A reader with nothing open yet.
    pub fn new(repo: &'r Repository) -> TreeReader<'r> {
        TreeReader {
            repo,
            open: Mutex::new(IdMap::default()),
        }
    }

    /// Reads tree `id`, authenticates it and hands its plaintext to `f`.
    pub fn with_tree<R>(&self, id: &BlobId, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        let loc = self.repo.locate_kind(id, crate::pack::BlobKind::Tree)?;
        // A pack that is missing (or a store without ranged readers):
        // read as any tree is, which looks for the blob elsewhere too.
        let Some(reader) = self.reader(&loc.pack).ok().flatten() else {
            return f(&self.repo.read_tree_blob(id)?);
        };
        let what = format!("blob {} in pack {}", id.short(), loc.pack.short());
        let mut sealed = SEALED.take();
        sealed.clear();
        sealed.resize(loc.length as usize, 0);
        let mut f = Some(f);
        let result = reader
            .read_at(u64::from(loc.offset), &mut sealed)
            .and_then(|()| {
                crate::pack::open_blob_with(
                    self.repo.key(),
                    id,
                    &sealed,
                    loc.raw_length,
                    &what,
                    |plain| f.take().map(|f| f(plain)),
                )
            });
        if sealed.capacity() <= SEALED_KEPT {
            SEALED.set(sealed);
        }
        match (result, f.take()) {
            (Ok(Some(r)), _) => r,
            // Damaged where the index places it, or not read (a disk's
            // read error), though not at an outage: read as any tree is,
            // which reads another copy where there is one (and notes it)
            // or fails as this read did.
            (Err(e), Some(f)) if !e.is_transient() => f(&self.repo.read_tree_blob(id)?),
            (Err(e), _) => Err(self.repo.blame_index(e)),
            // `f` is taken only by the call that returns its result.
            (Ok(None), _) => Err(Error::Invalid(format!(
                "tree {} was not handed over",
                id.short()
            ))),
        }
    }

    fn reader(&self, pack: &PackId) -> Result<Option<Arc<dyn RangeReader>>> {
        if let Some(r) = self.open.lock().ok().and_then(|m| m.get(pack).cloned()) {
            return Ok(r);
        }
        let r: Option<Arc<dyn RangeReader>> = self
            .repo
            .backend()
            .open_ranges(FileKind::Pack, &pack.to_hex())?
            .map(Arc::from);
        if let Ok(mut m) = self.open.lock() {
            if m.len() >= MAX_OPEN_PACKS {
                m.clear();
            }
            m.insert(*pack, r.clone());
        }
        Ok(r)
    }
}
