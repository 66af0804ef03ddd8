//! Parallel traversal of snapshot trees, each tree visited once.
//!
//! gc's mark phase, verify and repair walk every tree reachable from many
//! snapshots. Snapshots share most of their trees, so a tree is visited
//! once however many snapshots reach it. Workers pull tree ids from a shared
//! queue; a pending counter tells them when the walk is over.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam_channel::unbounded;

use crate::error::Result;
use crate::id::BlobId;
use crate::repo::Repository;
use crate::tree::{NodeKind, Tree};

/// Visits every tree reachable from `roots` once, on `workers` threads
/// (0 = one per core). `visit` gets each tree id with the decoded tree, or
/// the error that made it unreadable; subtrees of unreadable trees are not
/// reached. Returns the number of trees visited.
pub fn for_each_tree(
    repo: &Repository,
    roots: &[BlobId],
    workers: usize,
    visit: &(dyn Fn(BlobId, Result<&Tree>) + Sync),
) -> Result<usize> {
    // Map the index before the threads start so its errors surface here.
    repo.index()?;
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        workers
    };
    let seen: Mutex<HashSet<BlobId>> = Mutex::new(HashSet::new());
    let pending = AtomicUsize::new(0);
    let visited = AtomicUsize::new(0);
    let (tx, rx) = unbounded::<BlobId>();
    let enqueue = |id: BlobId| {
        let fresh = seen.lock().map(|mut s| s.insert(id)).unwrap_or(false);
        if fresh {
            pending.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(id);
        }
    };
    for r in roots {
        enqueue(*r);
    }
    std::thread::scope(|s| {
        for _ in 0..workers {
            let rx = rx.clone();
            let (enqueue, pending, visited) = (&enqueue, &pending, &visited);
            s.spawn(move || loop {
                match rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(id) => {
                        match repo.load_tree(&id) {
                            Ok(tree) => {
                                for node in &tree.nodes {
                                    if let NodeKind::Dir { subtree } = &node.kind {
                                        enqueue(*subtree);
                                    }
                                }
                                visit(id, Ok(&tree));
                            }
                            Err(e) => visit(id, Err(e)),
                        }
                        visited.fetch_add(1, Ordering::Relaxed);
                        pending.fetch_sub(1, Ordering::SeqCst);
                    }
                    Err(_) if pending.load(Ordering::SeqCst) == 0 => break,
                    Err(_) => {}
                }
            });
        }
    });
    Ok(visited.into_inner())
}
