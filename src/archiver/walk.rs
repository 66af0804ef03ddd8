//! The walker, workers and finisher of the backup pipeline.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering as AtomicOrdering};
use std::sync::Mutex;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::{Counters, Skeleton};
use crate::chunker::ChunkError;
use crate::error::{Error, Result};
use crate::filter::PathFilter;
use crate::fsmeta::{node_from_metadata, NameCache};
use crate::id::BlobId;
use crate::pack::BlobKind;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind, Tree};
use crate::writer::{BlobWriter, SealQueue};

pub(super) struct WalkSetup<'a> {
    pub repo: &'a Repository,
    pub writer: &'a BlobWriter<'a>,
    /// Where workers hand chunks for sealing.
    pub queue: &'a SealQueue<'a>,
    pub counters: &'a Counters,
    pub exclude: &'a PathFilter,
    pub one_file_system: bool,
    pub workers: usize,
    pub only: Option<&'a Skeleton>,
    pub parent: Option<Tree>,
    pub report: &'a (dyn Fn(String) + Sync),
    /// Reports damage in the repository the walk reads around (a parent
    /// tree that cannot be read): nothing is left out of the snapshot.
    pub repo_warn: &'a (dyn Fn(String) + Sync),
}

/// A file's chunks and byte count, or why it was left out: `None` once
/// the backup is failing, whose own error says why (one per file would
/// bury it).
type FileOutcome = std::result::Result<(Vec<BlobId>, u64), Option<String>>;

struct FileJob {
    path: PathBuf,
    reply: Sender<FileOutcome>,
}

enum Slot {
    Ready(Node),
    File(Node, Receiver<FileOutcome>),
    Dir(Node, u64),
}

struct DirJob {
    seq: u64,
    slots: Vec<Slot>,
}

/// Runs the pipeline; returns the root tree id.
pub(super) fn run(setup: WalkSetup<'_>) -> Result<BlobId> {
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    let set_fatal = |e: Error| {
        if let Ok(mut f) = fatal.lock() {
            f.get_or_insert(e);
        }
    };
    let (job_tx, job_rx) = bounded::<FileJob>(setup.workers * 8);
    let (dir_tx, dir_rx) = bounded::<DirJob>(256);
    let root = std::thread::scope(|s| {
        for _ in 0..setup.workers {
            let job_rx = job_rx.clone();
            let (setup, fatal, set_fatal) = (&setup, &fatal, &set_fatal);
            s.spawn(move || {
                for job in job_rx {
                    let aborted = fatal.lock().map(|f| f.is_some()).unwrap_or(true);
                    let outcome = if aborted {
                        Err(None)
                    } else {
                        match read_file(setup, &job.path) {
                            Ok(r) => Ok(r),
                            Err(FileError::Skip(why)) => Err(Some(why)),
                            Err(FileError::Fatal(e)) => {
                                set_fatal(e);
                                Err(None)
                            }
                        }
                    };
                    let _ = job.reply.send(outcome);
                }
            });
        }
        drop(job_rx);
        let finisher = s.spawn(|| finish_dirs(&setup, dir_rx));
        let shared = WalkShared {
            setup: &setup,
            jobs: job_tx,
            dirs: dir_tx,
            next_seq: AtomicU64::new(0),
            fatal: &fatal,
            spare: AtomicIsize::new(setup.workers as isize - 1),
        };
        let mut walker = Walker {
            shared: &shared,
            names: NameCache::default(),
        };
        let root_seq = walker.walk_root();
        // Closes the channels: workers and finisher end once drained.
        drop(walker);
        drop(shared);
        let trees = finisher
            .join()
            .map_err(|_| Error::Invalid("backup finisher thread panicked".into()));
        (root_seq, trees)
    });
    if let Some(e) = fatal.into_inner().ok().flatten() {
        return Err(e);
    }
    let (root_seq, trees) = root;
    let mut trees = trees??;
    let root_seq = root_seq?;
    trees
        .remove(&root_seq)
        .ok_or_else(|| Error::Invalid("backup produced no root tree".into()))
}

enum FileError {
    Skip(String),
    Fatal(Error),
}

impl From<Error> for FileError {
    fn from(e: Error) -> FileError {
        FileError::Fatal(e)
    }
}

thread_local! {
    /// Each worker's read window, reused for every file it reads.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads, chunks and stores one file.
fn read_file(
    setup: &WalkSetup<'_>,
    path: &Path,
) -> std::result::Result<(Vec<BlobId>, u64), FileError> {
    let skip = |op: &str, e: std::io::Error| {
        FileError::Skip(format!("{}: cannot {op}: {e}", path.display()))
    };
    crate::fault::vanish(path);
    let mut file = File::open(path).map_err(|e| skip("open", e))?;
    let mut chunks = Vec::new();
    let size = READ_BUF.with(|buf| {
        setup
            .repo
            .config()
            .chunker
            .for_each_chunk(&mut file, &mut buf.borrow_mut(), |chunk| {
                chunks.push(setup.queue.add(BlobKind::Data, chunk)?);
                Ok(())
            })
    });
    let size = size.map_err(|e| match e {
        ChunkError::Read(e) => skip("read", e),
        ChunkError::Sink(e) => FileError::Fatal(e),
    })?;
    Counters::add(&setup.counters.bytes_read, size);
    Ok((chunks, size))
}

/// What every walking thread shares.
struct WalkShared<'a> {
    setup: &'a WalkSetup<'a>,
    jobs: Sender<FileJob>,
    dirs: Sender<DirJob>,
    next_seq: AtomicU64,
    fatal: &'a Mutex<Option<Error>>,
    /// Walking threads that may still start: a walker that meets a
    /// subdirectory while this is positive walks it on a thread of its
    /// own. Starts at one fewer than the workers (the calling thread walks
    /// too); a walker waiting for its subdirectories' threads lends its
    /// place meanwhile, so it can go below zero until that wait ends.
    spare: AtomicIsize,
}

impl WalkShared<'_> {
    /// Takes a place for a new walking thread, if there is one.
    fn take_spare(&self) -> bool {
        self.spare
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                (n > 0).then_some(n - 1)
            })
            .is_ok()
    }
}

/// Walks directories depth-first: on the calling thread, and on threads
/// of their own for subdirectories met while a place is spare (see
/// [`WalkShared::spare`]), so listing and `lstat`ing a large tree keeps
/// every core busy. Each directory is emitted after all its
/// subdirectories, whichever thread walked them, so the finisher always
/// has a directory's subtrees before the directory.
struct Walker<'a> {
    shared: &'a WalkShared<'a>,
    names: NameCache,
}

impl Walker<'_> {
    fn walk_root(&mut self) -> Result<u64> {
        let root = Path::new("/");
        let md = std::fs::symlink_metadata(root).map_err(|e| Error::path("stat", root, e))?;
        let parent = self.shared.setup.parent.clone();
        self.walk_dir(root, md.dev(), self.shared.setup.only, parent)
    }

    fn aborted(&self) -> bool {
        self.shared
            .fatal
            .lock()
            .map(|f| f.is_some())
            .unwrap_or(true)
    }

    fn report(&self, msg: String) {
        (self.shared.setup.report)(msg)
    }

    /// Walks subdirectory `path`, whose entry in the parent snapshot named
    /// `old_subtree` (loaded here, so on the thread that walks it).
    fn walk_subdir(
        &mut self,
        path: &Path,
        dev: u64,
        only: Option<&Skeleton>,
        old_subtree: Option<BlobId>,
    ) -> Result<u64> {
        let parent = old_subtree.and_then(|id| match self.shared.setup.repo.load_tree(&id) {
            Ok(t) => Some(t),
            Err(e) => {
                (self.shared.setup.repo_warn)(format!(
                    "{}: parent tree unreadable, reading afresh: {e}",
                    path.display()
                ));
                None
            }
        });
        self.walk_dir(path, dev, only, parent)
    }

    /// Walks `dir`, emitting its subdirectories and then itself; returns its
    /// sequence number.
    fn walk_dir(
        &mut self,
        dir: &Path,
        dev: u64,
        only: Option<&Skeleton>,
        parent: Option<Tree>,
    ) -> Result<u64> {
        type Entry<'s> = (
            std::ffi::OsString,
            Option<&'s Skeleton>,
            Option<std::fs::DirEntry>,
        );
        let names: Vec<Entry<'_>> = match only {
            Some(sk) => sk
                .children
                .iter()
                .map(|(n, sub)| (n.clone(), sub.as_ref(), None))
                .collect(),
            None => match std::fs::read_dir(dir) {
                Ok(rd) => {
                    let mut v = Vec::new();
                    for entry in rd {
                        match entry {
                            Ok(e) => v.push((e.file_name(), None, Some(e))),
                            Err(e) => self.report(format!("{}: cannot list: {e}", dir.display())),
                        }
                    }
                    v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                    v
                }
                Err(e) => {
                    self.report(format!("{}: cannot list: {e}", dir.display()));
                    Vec::new()
                }
            },
        };
        // Both the listing and a tree's nodes are sorted by name bytes, so
        // the parent's nodes are matched by walking the two side by side,
        // and taken by value: unchanged files keep the parent's chunk list
        // without copying it.
        let mut parent_nodes = parent
            .map(|t| t.nodes)
            .unwrap_or_default()
            .into_iter()
            .peekable();
        let mut slots = Vec::with_capacity(names.len());
        std::thread::scope(|scope| -> Result<()> {
            // Subdirectories walked on threads of their own: their slot and
            // the thread.
            let mut walking = Vec::new();
            for (name, sub, entry) in names {
                if self.aborted() {
                    break;
                }
                let path = dir.join(&name);
                let path_str = path.to_string_lossy();
                if only.is_none()
                    && self
                        .shared
                        .setup
                        .exclude
                        .matches(&path_str, &name.to_string_lossy())
                {
                    continue;
                }
                // DirEntry::metadata is an fstatat relative to the open folder.
                let md = match entry
                    .map_or_else(|| std::fs::symlink_metadata(&path), |e| e.metadata())
                {
                    Ok(md) => md,
                    Err(e) => {
                        self.report(format!("{}: cannot stat: {e}", path.display()));
                        continue;
                    }
                };
                while parent_nodes
                    .next_if(|o| o.name.0.as_slice() < name.as_bytes())
                    .is_some()
                {}
                let mut old = parent_nodes.next_if(|o| o.name.0.as_slice() == name.as_bytes());
                // Extended attributes change ctime: reuse the parent's when
                // ctime and inode are unchanged, saving a syscall per entry.
                let xattrs = old
                    .as_mut()
                    .filter(|o| o.ctime_ns == ctime_ns(&md) && o.inode == md.ino())
                    .map(|o| std::mem::take(&mut o.xattrs));
                let mut node = match node_from_metadata(&name, &path, &md, &self.names, xattrs) {
                    Ok(n) => n,
                    Err(e) => {
                        self.report(format!("{}: cannot read metadata: {e}", path.display()));
                        continue;
                    }
                };
                match &node.kind {
                    NodeKind::File { .. } => {
                        let c = self.shared.setup.counters;
                        let was_file = old
                            .as_ref()
                            .is_some_and(|o| matches!(o.kind, NodeKind::File { .. }));
                        if let Some(chunks) = old.and_then(|o| unchanged_chunks(o, &node)) {
                            node.kind = NodeKind::File { chunks };
                            Counters::add(&c.files_unmodified, 1);
                            Counters::add(&c.total_bytes, node.size);
                            slots.push(Slot::Ready(node));
                        } else {
                            Counters::add(
                                if was_file {
                                    &c.files_changed
                                } else {
                                    &c.files_new
                                },
                                1,
                            );
                            let (tx, rx) = bounded(1);
                            if self
                                .shared
                                .jobs
                                .send(FileJob {
                                    path: path.clone(),
                                    reply: tx,
                                })
                                .is_err()
                            {
                                break;
                            }
                            slots.push(Slot::File(node, rx));
                        }
                    }
                    NodeKind::Dir { .. } => {
                        let other_fs =
                            self.shared.setup.one_file_system && md.dev() != dev && sub.is_none();
                        let old_subtree = match old.as_ref().map(|o| &o.kind) {
                            Some(NodeKind::Dir { subtree }) if !other_fs => Some(*subtree),
                            _ => None,
                        };
                        if other_fs {
                            // A mount point: keep the directory, not its contents.
                            let seq = self.emit(Vec::new())?;
                            slots.push(Slot::Dir(node, seq));
                        } else if self.shared.take_spare() {
                            let shared = self.shared;
                            let dev = md.dev();
                            let thread = scope.spawn(move || {
                                let mut walker = Walker {
                                    shared,
                                    names: NameCache::default(),
                                };
                                let seq = walker.walk_subdir(&path, dev, sub, old_subtree);
                                shared.spare.fetch_add(1, AtomicOrdering::AcqRel);
                                seq
                            });
                            walking.push((slots.len(), thread));
                            // The sequence number is filled in once it is walked.
                            slots.push(Slot::Dir(node, u64::MAX));
                        } else {
                            let seq = self.walk_subdir(&path, md.dev(), sub, old_subtree)?;
                            slots.push(Slot::Dir(node, seq));
                        }
                    }
                    _ => {
                        if sub.is_some() {
                            self.report(format!("{}: expected a directory", path.display()));
                            continue;
                        }
                        slots.push(Slot::Ready(node));
                    }
                }
            }
            // Lends this thread's place while it waits for the threads
            // walking its subdirectories.
            let lend = !walking.is_empty();
            if lend {
                self.shared.spare.fetch_add(1, AtomicOrdering::AcqRel);
            }
            let mut outcome = Ok(());
            for (at, thread) in walking {
                let seq = match thread.join() {
                    Ok(Ok(seq)) => seq,
                    Ok(Err(e)) => {
                        outcome = outcome.and(Err(e));
                        continue;
                    }
                    Err(_) => {
                        outcome = outcome.and(Err(Error::Invalid(
                            "a backup walker thread panicked".into(),
                        )));
                        continue;
                    }
                };
                if let Some(Slot::Dir(_, slot_seq)) = slots.get_mut(at) {
                    *slot_seq = seq;
                }
            }
            if lend {
                self.shared.spare.fetch_sub(1, AtomicOrdering::AcqRel);
            }
            outcome
        })?;
        Counters::add(&self.shared.setup.counters.dirs, 1);
        self.emit(slots)
    }

    fn emit(&mut self, slots: Vec<Slot>) -> Result<u64> {
        let seq = self.shared.next_seq.fetch_add(1, AtomicOrdering::Relaxed);
        self.shared
            .dirs
            .send(DirJob { seq, slots })
            .map_err(|_| Error::Invalid("backup pipeline stopped".into()))?;
        Ok(seq)
    }
}

fn ctime_ns(md: &std::fs::Metadata) -> i64 {
    md.ctime() * 1_000_000_000 + md.ctime_nsec()
}

/// The parent's chunks when `now` looks unchanged since `old`.
fn unchanged_chunks(old: Node, now: &Node) -> Option<Vec<BlobId>> {
    match old.kind {
        NodeKind::File { chunks }
            if old.size == now.size
                && old.mtime_ns == now.mtime_ns
                && old.ctime_ns == now.ctime_ns
                && old.inode == now.inode =>
        {
            Some(chunks)
        }
        _ => None,
    }
}

/// Stores each directory's tree once its files are done; returns every
/// directory's tree id by sequence number.
fn finish_dirs(setup: &WalkSetup<'_>, dirs: Receiver<DirJob>) -> Result<HashMap<u64, BlobId>> {
    let mut done: HashMap<u64, BlobId> = HashMap::new();
    for job in dirs {
        let mut nodes = Vec::with_capacity(job.slots.len());
        for slot in job.slots {
            match slot {
                Slot::Ready(node) => nodes.push(node),
                Slot::File(mut node, rx) => match rx.recv() {
                    Ok(Ok((chunks, size))) => {
                        node.size = size;
                        node.kind = NodeKind::File { chunks };
                        Counters::add(&setup.counters.total_bytes, size);
                        nodes.push(node);
                    }
                    Ok(Err(Some(why))) => (setup.report)(why),
                    Ok(Err(None)) => {}
                    Err(_) => (setup.report)(format!(
                        "{}: worker stopped",
                        String::from_utf8_lossy(&node.name.0)
                    )),
                },
                Slot::Dir(mut node, seq) => {
                    let subtree = done
                        .remove(&seq)
                        .ok_or_else(|| Error::Invalid("backup pipeline lost a directory".into()))?;
                    node.kind = NodeKind::Dir { subtree };
                    nodes.push(node);
                }
            }
        }
        let (id, _) = setup
            .writer
            .add(BlobKind::Tree, &Tree::new(nodes).encode())?;
        done.insert(job.seq, id);
    }
    Ok(done)
}
