//! Writing a restore's files: each pack read once, its blobs decoded on
//! every core and written at their offsets.

use super::fetch::PackBytes;
use super::place::{
    copy_to_temp, link_unnamed, reopen, temp_name, unnamed_files_link, unnamed_in, Unplaced,
};
use super::*;
use crate::escape::Show;
use crate::pack::BlobKind;

/// Said of a file whose chunks, as the index gives their lengths, do not
/// add up to its size in the tree: one of the two is damaged (a flipped
/// byte in an index table is found only by its MAC, which lookups do not
/// check).
const SIZES_DIFFER: &str = "an index table or the snapshot's tree is damaged; `cairn verify` \
                            checks both, and `cairn repair index` rebuilds the index from the \
                            packs";

impl Executor<'_> {
    /// Gets ready to write files: raises the open-file limit, from which
    /// the files held open at once are budgeted, and probes whether the
    /// target takes unnamed files.
    pub(super) fn prepare_files(&self) {
        // A file is created when its first chunk is written (or, with
        // nothing to write, when it is finished) and held open until it
        // is whole, so the files open at once are those in progress: few,
        // unless many files of several chunks have their chunks in packs
        // read far apart. What the limit leaves beside the packs, index
        // tables and the rest bounds them.
        let limit = if crate::fault::no_open_budget() {
            0
        } else {
            raise_fd_limit()
        };
        // The directories `beneath` holds open, and one more per worker
        // in the middle of an operation, come out of the reserve too.
        let reserve = (limit / 2).min(256 + super::beneath::CACHED_DIRS as u64);
        self.open_budget.store(
            isize::try_from(limit - reserve).unwrap_or(isize::MAX),
            Ordering::Relaxed,
        );
        if !self.dry_run {
            let unnamed = !crate::fault::no_tmpfile()
                && self
                    .beneath
                    .at(self.target)
                    .is_ok_and(|at| unnamed_files_link(&at));
            self.unnamed.store(unnamed, Ordering::Relaxed);
        }
    }

    /// Writes a batch of planned files (see `BATCH_ENTRIES`): decides per file
    /// what the policy wants, then reads each needed pack once, in
    /// parallel, writing every blob at all the offsets that use it; a file
    /// is created (unnamed where the target allows, see `create_file`) by
    /// its first write. Every file of the batch is whole, or failed, when
    /// it returns. Returns the places in `files` of those not put in
    /// place (failed, left alone by skip-existing, or beneath a directory
    /// not restored), in no order: nothing may be hard-linked to them.
    pub(super) fn restore_files(
        &self,
        files: &[Item],
        workers: usize,
        stats: &mut RestoreStats,
    ) -> Vec<usize> {
        // 1. Decide, in parallel (merge compares existing content). Each
        // worker takes a run of files of one directory at a time: looking
        // up names takes the directory's lock, so two workers in the same
        // directory would mostly wait for each other.
        let rels: Vec<&Path> = files.iter().map(|f| f.rel.as_path()).collect();
        let runs = directory_runs(&rels, 64);
        let next = AtomicUsize::new(0);
        let (unchanged, skipped) = (AtomicU64::new(0), AtomicU64::new(0));
        let (would_write, would_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
        let tasks: Mutex<Vec<Box<FileTask>>> = Mutex::new(Vec::new());
        let unplaced: Mutex<Vec<usize>> = Mutex::new(Vec::new());
        let not_placed = |i: usize| {
            if let Ok(mut u) = unplaced.lock() {
                u.push(i);
            }
        };
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = runs.get(i) else { break };
                    for (at, f) in run.clone().zip(&files[run.clone()]) {
                        if self.halted() {
                            // Not attempted: the target is full, or the
                            // lock lost.
                            not_placed(at);
                            continue;
                        }
                        if self.under_skipped(&f.rel) {
                            not_placed(at);
                            continue;
                        }
                        let dest = self.target.join(&f.rel);
                        match self.prepare_file(&dest, &f.node) {
                            Ok(Prepared::Unchanged) => {
                                unchanged.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Prepared::Skipped) => {
                                skipped.fetch_add(1, Ordering::Relaxed);
                                not_placed(at);
                            }
                            Ok(Prepared::WouldWrite) => {
                                would_write.fetch_add(1, Ordering::Relaxed);
                                would_bytes.fetch_add(f.node.size, Ordering::Relaxed);
                            }
                            Ok(Prepared::Write(mut task)) => {
                                task.item = at;
                                if let Ok(mut t) = tasks.lock() {
                                    t.push(task);
                                }
                            }
                            Err(e) => {
                                self.check_full(&dest, &e);
                                self.fail(&dest, e);
                                not_placed(at);
                            }
                        }
                    }
                });
            }
        });
        stats.files_unchanged += unchanged.into_inner();
        stats.skipped += skipped.into_inner();
        let mut unplaced = unplaced.into_inner().unwrap_or_default();
        if self.dry_run {
            stats.files_written += would_write.into_inner();
            stats.bytes_written += would_bytes.into_inner();
            return unplaced;
        }
        let tasks = tasks.into_inner().unwrap_or_default();

        // 2. Plan reads: every distinct blob once, grouped by pack.
        let index = match self.repo.index() {
            Ok(index) => index,
            Err(e) => {
                for task in &tasks {
                    self.fail(&task.dest, &e);
                }
                unplaced.extend(tasks.iter().map(|t| t.item));
                return unplaced;
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
                let loc = match index.locate_kind(id, BlobKind::Data) {
                    Ok(loc) => loc,
                    // Not found, the error names the blob itself.
                    Err(e @ Error::NotFound(_)) => {
                        task.fail(e.to_string());
                        break;
                    }
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
                    "chunks hold {offset} bytes as the index gives them, the tree says {}: \
                     {SIZES_DIFFER}",
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
        // costliest packs first (see `blob_cost`), so the last packs
        // taken are short and no core waits long on the other's.
        // A pack holding more than half of one worker's share of the
        // work (thousands of small files in one pack) is cut into pieces
        // of consecutive blobs that workers take apart: each byte is
        // still read once. Others are left whole: cutting every pack of
        // the benchmark's small files cost its restore about 4% more CPU.
        // Each pack: its id, its blobs in pack order, and their costs.
        let packs: Vec<(PackId, Vec<PackedBlob>, Vec<u64>)> = by_pack
            .into_iter()
            .map(|(pack, mut blobs)| {
                blobs.sort_by_key(|(_, loc)| loc.offset);
                let costs = blobs.iter().map(|b| blob_cost(b, &targets)).collect();
                (pack, blobs, costs)
            })
            .collect();
        let total: u64 = packs.iter().flat_map(|(_, _, c)| c).sum();
        let workers_u64 = workers.max(1) as u64;
        let (large, cap) = (
            total / (2 * workers_u64),
            (total / (workers_u64 * 8)).max(MIN_PIECE_COST),
        );
        // Each piece: its cost, its pack, and its blobs.
        let mut pieces: Vec<(u64, PackId, &[PackedBlob])> = Vec::new();
        for (pack, blobs, costs) in &packs {
            let whole = costs.iter().sum::<u64>() <= large;
            for range in pieces_of(costs, if whole { u64::MAX } else { cap }) {
                let cost = costs[range.clone()].iter().sum();
                pieces.push((cost, *pack, &blobs[range]));
            }
        }
        pieces.sort_by_key(|&(cost, pack, blobs)| {
            (
                std::cmp::Reverse(cost),
                pack,
                blobs.first().map(|(_, l)| l.offset),
            )
        });
        // Where a pack is a file to map, the spans of those taken next
        // are read in ahead of the workers (see `crate::prefetch`).
        let backend = self.repo.backend();
        let spans = if backend.prefers_ranges() {
            Vec::new()
        } else {
            pieces
                .iter()
                .map(|(_, pack, blobs)| {
                    let extents = blobs.iter().map(|(_, l)| (l.offset, l.length));
                    (pack.to_hex(), crate::prefetch::span(extents))
                })
                .collect()
        };
        let queue = crate::prefetch::Queue::new(backend, FileKind::Pack, spans);
        std::thread::scope(|s| {
            queue.start(s, crate::prefetch::AHEAD);
            for _ in 0..workers {
                s.spawn(|| {
                    let taker = queue.taker();
                    while let Some((_, pack, blobs)) = pieces.get(taker.take()) {
                        if self.halted() {
                            break;
                        }
                        self.restore_pack(pack, blobs, &targets, &tasks);
                    }
                });
            }
        });

        let (mut written, mut bytes) = (0, 0);
        for task in &tasks {
            if let Some(why) = task.error() {
                self.discard(task);
                self.fail(&task.dest, why);
                unplaced.push(task.item);
            } else if task.done.load(Ordering::Relaxed) {
                written += 1;
                bytes += task.node.size;
            } else {
                self.discard(task);
                // Unless its packs were not read as the restore stopped.
                if !self.halted() {
                    self.fail(&task.dest, "not all of its data could be read");
                }
                unplaced.push(task.item);
            }
        }
        stats.files_written += written;
        stats.bytes_written += bytes;
        unplaced
    }

    /// Gives up `task`'s file (see [`FileTask::discard`]); a descriptor it
    /// held goes back to the open budget.
    fn discard(&self, task: &FileTask) {
        if task.discard(&self.beneath) && !task.transient.load(Ordering::Relaxed) {
            self.open_budget.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads one pack and writes its blobs wherever they are used.
    pub(super) fn restore_pack(
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
                // An outage: this pack's files are left unfinished as
                // every file after is, said by one error (an error line
                // for each, hundreds of small files, named only the
                // outage).
                let Err(e) = self.stop_if_outage(e) else {
                    return;
                };
                // A pack missing, or one that cannot be read at all (a
                // folder in its place, a file this user may not read): its
                // blobs from wherever else they are indexed.
                let mut elsewhere = 0;
                for (id, _) in blobs {
                    let why = match self.restore_elsewhere(pack, id, &targets[id], tasks) {
                        Ok(true) => {
                            elsewhere += 1;
                            continue;
                        }
                        Ok(false) if e.is_not_found() => {
                            crate::repo::missing_pack(id, pack).to_string()
                        }
                        // Said as what it is (it was the bare "Permission
                        // denied").
                        Ok(false) if e.is_read_refused() => format!(
                            "blob {}: {e}: the store refused a read (no permission), which is \
                             not damage; run the restore as a user who may read the whole \
                             repository",
                            id.short()
                        ),
                        Ok(false) => format!("blob {}: {e}", id.short()),
                        Err(e) => format!("blob {}: {e}", id.short()),
                    };
                    for &(t, _) in &targets[id] {
                        tasks[t].fail(why.clone());
                    }
                }
                if elsewhere > 0 && !e.is_not_found() {
                    (self.warn)(&format!(
                        "{what} could not be read ({e}); {elsewhere} of its blobs were \
                         restored from other copies"
                    ));
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
            if self.halted() {
                return;
            }
            let uses = &targets[id];
            if uses.iter().all(|&(t, _)| tasks[t].failed()) {
                continue;
            }
            let Err(e) = self.deliver(&data, id, loc, uses, tasks, &what) else {
                continue;
            };
            // The blob's own range again before it is held damaged.
            let again = || {
                PackBytes::fetch(self.repo.backend(), pack, &[(*id, *loc)])
                    .and_then(|again| self.deliver(&again, id, loc, uses, tasks, &what))
            };
            let remote = self.repo.backend().prefers_ranges();
            let corrupt = |e: &Error| matches!(e, Error::Corrupt { .. });
            let Err(e) = crate::backend::retry::reread(remote, Err(e), corrupt, again) else {
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
                    // A damaged copy, where the blob is stored twice (backups
                    // storing the same new data side by side): the other.
                    if matches!(e, Error::Corrupt { .. })
                        && matches!(self.restore_elsewhere(pack, id, uses, tasks), Ok(true))
                    {
                        (self.warn)(&format!(
                            "blob {} in {what} is damaged ({e}); restored from another copy; \
                             `cairn repair index --read-data` drops the damaged one from the index",
                            id.short()
                        ));
                        continue;
                    }
                    for &(t, _) in uses {
                        tasks[t].fail(format!("blob {} in {what}: {e}", id.short()));
                    }
                }
            }
        }
    }

    /// Writes blob `id`, whose pack `gone` is missing (or holds it
    /// damaged), from wherever else the index places it in a pack that
    /// exists (a blob stored again after its pack was lost, or stored
    /// twice; see `Repository::locate_elsewhere`) to `uses`. False when no
    /// other entry names a pack that exists and holds it intact.
    fn restore_elsewhere(
        &self,
        gone: &PackId,
        id: &BlobId,
        uses: &[(usize, u64)],
        tasks: &[Box<FileTask>],
    ) -> Result<bool> {
        let mut gone = vec![*gone];
        while let Some(loc) = self.repo.locate_elsewhere(id, BlobKind::Data, &gone)? {
            match PackBytes::fetch(self.repo.backend(), &loc.pack, &[(*id, loc)]) {
                Ok(data) => {
                    let what = format!("pack {}", loc.pack.short());
                    match self.deliver(&data, id, &loc, uses, tasks, &what) {
                        Ok(()) => return Ok(true),
                        // Damaged there too: a third copy, if any.
                        Err(Error::Corrupt { .. }) => gone.push(loc.pack),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if e.is_not_found() => gone.push(loc.pack),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Opens the blob `id` at `loc` in `data` and writes it wherever
    /// `uses` need it. Nothing is written unless it authenticates.
    pub(super) fn deliver(
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
        let opened =
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
                        self.check_full(&task.dest, &e);
                        task.fail(e);
                        continue;
                    }
                    if task.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        self.finish_task(task);
                    }
                }
            });
        opened.map_err(|e| self.repo.blame_index(e))
    }

    /// The pack's decoded header, with the whole pack when `data` holds
    /// only ranges of it; `None` (with a warning) if the header cannot be
    /// read either.
    pub(super) fn pack_header(
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
    pub(super) fn finish_task(&self, task: &FileTask) {
        /// Counts the task's reserved space as done when it is.
        struct Done<'e, 'a>(&'e Executor<'a>, bool);
        impl Drop for Done<'_, '_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.reserved_done();
                }
            }
        }
        // Counted out once, however the task ends.
        let _done = Done(self, task.reserve_counted.swap(false, Ordering::AcqRel));
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
            Err(e) => {
                self.check_full(&task.dest, &e);
                return task.fail(e);
            }
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
        let placed = match task.tmp_name() {
            Some(tmp) => {
                // Through the open file: no path walks.
                self.apply_meta(&task.dest, task.node, Some(&file), false);
                // Held through the rename, so that what it put in place
                // can be told to be this file: someone else who writes in
                // the target could put another under the temporary name
                // meanwhile.
                self.rename_into_place(&tmp, &task.dest)
                    .map_err(|e| format!("cannot rename into place: {e}"))
                    .and_then(|()| self.placed_is(&task.dest, &file))
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

    /// Fails unless `dest` is `file`, the file a rename just put there.
    fn placed_is(&self, dest: &Path, file: &fs::File) -> std::result::Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let ours = file.metadata().map_err(|e| e.to_string())?;
        let there = self
            .beneath
            .at(dest)
            .and_then(|at| fs::symlink_metadata(&*at))
            .map_err(|e| e.to_string())?;
        if (there.dev(), there.ino()) == (ours.dev(), ours.ino()) {
            Ok(())
        } else {
            Err(
                "another file was put under its temporary name before it was renamed into \
                 place (someone else writes to the target): what is there now is not the \
                 snapshot's"
                    .into(),
            )
        }
    }

    /// Renames the file at `from` over `to`, both in the target.
    fn rename_into_place(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let from = self.beneath.at(from)?;
        crate::fault::relink_before_rename(&from);
        fs::rename(&*from, &*self.beneath.at(to)?)
    }

    /// Sets a whole unnamed file's metadata and links it into place; where
    /// the system refuses the link, copies it to a temporary name and
    /// renames that into place instead.
    pub(super) fn place_unnamed(
        &self,
        task: &FileTask,
        mut file: fs::File,
    ) -> std::result::Result<(), String> {
        self.apply_meta(&task.dest, task.node, Some(&file), false);
        let dest = self.beneath.at(&task.dest).map_err(|e| e.to_string())?;
        let linked = if crate::fault::link_refused() {
            Err(Unplaced::Link(std::io::ErrorKind::PermissionDenied.into()))
        } else {
            link_unnamed(&file, &dest, dest.in_dir(), task.replace)
        };
        let refused = match linked {
            Ok(()) => return Ok(()),
            Err(Unplaced::Rename(e)) => return Err(format!("cannot rename into place: {e}")),
            Err(Unplaced::Link(e)) => e,
        };
        if crate::error::is_full(&refused) {
            // No room for the name: a copy would not fit either.
            let e = Error::path("link into place", &task.dest, refused);
            self.check_full(&task.dest, &e);
            return Err(e.to_string());
        }
        // Files created from now on are named at once.
        self.unnamed.store(false, Ordering::Relaxed);
        let (tmp, copy) = copy_to_temp(&mut file, &dest)
            .map_err(|e| format!("cannot link into place ({refused}) nor copy: {e}"))?;
        self.apply_meta(&task.dest, task.node, Some(&copy), false);
        // Held through the rename, as a named temporary file is (see
        // `finish_task`).
        fs::rename(&tmp, &*dest)
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                format!("cannot rename into place: {e}")
            })
            .and_then(|()| self.placed_is(&task.dest, &copy))
    }

    /// Applies the policy to one file; one to be written gets its task,
    /// whose file its first write creates (see [`Self::create_file`]).
    pub(super) fn prepare_file<'p>(&self, dest: &Path, node: &'p Node) -> Result<Prepared<'p>> {
        let NodeKind::File { chunks } = &node.kind else {
            return Err(Error::Invalid("not a file".into()));
        };
        let mut exists = false;
        match self.lstat(dest) {
            Ok(_) if self.policy == Policy::SkipExisting => return Ok(Prepared::Skipped),
            Ok(md) if !md.is_dir() && self.mounted(dest) => {
                return Err(super::remove::not_replaced());
            }
            Ok(md) if md.is_file() && md.len() == node.size => {
                if let Some(same) = self.same_content(dest, chunks)? {
                    // The links of the inode compared, whatever became
                    // of the name since its `lstat`. An ordinary user
                    // may set the mode and times of their own files
                    // only: another's is written anew, as the folder
                    // may allow, rather than left with the wrong mode
                    // and times and an error for each.
                    let mine = |md: &fs::Metadata| {
                        use std::os::unix::fs::MetadataExt;
                        if !self.root {
                            return md.uid() == fsmeta::euid();
                        }
                        // As root, only a file whose owner and mode stay
                        // as they are, and that gains no capabilities:
                        // whoever holds it open for writing (another user
                        // who made it with the snapshot's content, in a
                        // folder they may write to) keeps that after a
                        // change, and until December 2026 was left
                        // holding a root-owned set-user-ID file, or one
                        // with capabilities, to write into.
                        md.uid() == node.uid
                            && md.gid() == node.gid
                            && md.mode() & 0o7777 == node.mode & 0o7777
                            && same_capabilities(&same, node)
                    };
                    if same
                        .metadata()
                        .is_ok_and(|now| only_name(&now) && mine(&now))
                    {
                        if !self.dry_run {
                            // Through the file compared: no path walks, and
                            // owner and mode changed only where they differ.
                            self.apply_meta(dest, node, Some(&same), true);
                        }
                        return Ok(Prepared::Unchanged);
                    }
                }
                exists = true;
            }
            Ok(md) if md.is_dir() => {
                self.clear(dest, node.kind_name())?;
            }
            Ok(_) => exists = true,
            Err(_) => {}
        }
        if self.dry_run {
            self.would_read(node.size, chunks)?;
            return Ok(Prepared::WouldWrite);
        }
        Ok(Prepared::Write(Box::new(FileTask {
            dest: dest.to_path_buf(),
            replace: exists,
            tmp: Mutex::new(None),
            tmp_inode: Mutex::new(None),
            node,
            file: Mutex::new(None),
            remaining: AtomicUsize::new(chunks.len()),
            error: Mutex::new(None),
            done: std::sync::atomic::AtomicBool::new(false),
            sized: std::sync::atomic::AtomicBool::new(false),
            reserve_counted: std::sync::atomic::AtomicBool::new(false),
            holes: std::sync::atomic::AtomicBool::new(false),
            sparse: std::sync::atomic::AtomicBool::new(false),
            transient: std::sync::atomic::AtomicBool::new(false),
            item: 0,
        })))
    }

    /// For a dry run, fails a file the restore would fail before reading a
    /// byte of it (a dry run said "would have restored" of it): a chunk
    /// the index lacks, one in a pack that is gone with no other copy
    /// indexed, or chunks that do not add up to the file's `size`.
    fn would_read(&self, size: u64, chunks: &[BlobId]) -> Result<()> {
        let index = self.repo.index()?;
        // The length of a pack there to read, `None` where it is not (a
        // listing names a dangling symlink too, and a folder or a FIFO
        // has a size): its size, and a byte read of it, once each.
        let length = |pack: &PackId| -> Option<u64> {
            let cached = self
                .dry_packs
                .lock()
                .ok()
                .and_then(|m| m.get(pack).copied());
            if let Some(known) = cached {
                return known;
            }
            let name = pack.to_hex();
            let backend = self.repo.backend();
            let known = backend
                .size(FileKind::Pack, &name)
                .ok()
                .filter(|_| backend.read_range(FileKind::Pack, &name, 0, 1).is_ok());
            if let Ok(mut m) = self.dry_packs.lock() {
                m.insert(*pack, known);
            }
            known
        };
        let mut total = 0u64;
        for id in chunks {
            let loc = index.locate_kind(id, BlobKind::Data)?;
            // As the restore reads around a pack gone: every other copy
            // the index names, until one is there (in a pack that holds
            // its bytes: one cut short does not).
            let mut gone = Vec::new();
            let mut at = Some(loc);
            while let Some(l) = at {
                let end = u64::from(l.offset) + u64::from(l.length);
                if length(&l.pack).is_some_and(|len| len >= end) {
                    break;
                }
                gone.push(l.pack);
                at = self.repo.locate_elsewhere(id, BlobKind::Data, &gone)?;
            }
            if at.is_none() {
                return Err(crate::repo::missing_pack(id, &loc.pack));
            }
            total += u64::from(loc.raw_length);
        }
        if total != size {
            return Err(Error::Invalid(format!(
                "chunks hold {total} bytes as the index gives them, the tree says {size}: \
                 {SIZES_DIFFER}"
            )));
        }
        Ok(())
    }

    /// Writes one chunk of `task` at `offset`, creating its file first if
    /// this is its first write. A file past the open budget is closed
    /// again after the write and reopened by name for the next.
    pub(super) fn write_chunk(&self, task: &FileTask, data: &[u8], offset: u64) -> Result<()> {
        let mut slot = task
            .file
            .lock()
            .map_err(|_| Error::Invalid("restore worker panicked".into()))?;
        let file = self.task_file(task, slot.take())?;
        let written = if task.sparse.load(Ordering::Relaxed) {
            let (written, skipped) = write_leaving_holes(&file, data, offset);
            if skipped {
                task.holes.store(true, Ordering::Relaxed);
            }
            written
        } else {
            file.write_all_at(data, offset)
        };
        // Held even after a failed write, so that giving the task up
        // returns its descriptor to the open budget.
        if !task.transient.load(Ordering::Relaxed) {
            *slot = Some(file);
        }
        written.map_err(|e| Error::path("write", &task.dest, e))
    }

    /// The file of `task`: `held` if it is held open, else a transient
    /// file opened again by name, else a new one.
    pub(super) fn task_file(&self, task: &FileTask, held: Option<fs::File>) -> Result<fs::File> {
        match (held, task.tmp_name()) {
            (Some(f), _) => Ok(f),
            (None, Some(tmp)) if task.transient.load(Ordering::Relaxed) => self
                .beneath
                .at(&tmp)
                .and_then(|at| {
                    crate::fault::relink_temp(&at);
                    reopen(&at, task.tmp_inode.lock().ok().and_then(|i| *i))
                })
                .map_err(|e| Error::path("open", &task.dest, e)),
            // Given up (its space could not be reserved, say) while this
            // chunk waited: not created again.
            (None, _) if task.failed() => {
                Err(Error::Invalid(format!("{}: given up", task.dest.shown())))
            }
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
    pub(super) fn create_file(&self, task: &FileTask) -> Result<fs::File> {
        let NodeKind::File { chunks } = &task.node.kind else {
            return Err(Error::Invalid("not a file".into()));
        };
        // The file's folder, by its descriptor.
        let at = self
            .beneath
            .at(&task.dest)
            .map_err(|e| Error::path("create", &task.dest, e))?;
        let dir = at.parent().expect("an entry's path has its folder's");
        let held = self.open_budget.fetch_sub(1, Ordering::Relaxed) > 0;
        if !held {
            self.open_budget.fetch_add(1, Ordering::Relaxed);
        }
        task.transient.store(!held, Ordering::Relaxed);
        let mode = if held { task.node.mode & 0o777 } else { 0o600 };
        // A slot of the open budget taken is given back on failure.
        let failed = |e: std::io::Error| {
            if held {
                self.open_budget.fetch_add(1, Ordering::Relaxed);
            }
            Error::path("create", &task.dest, e)
        };
        let unnamed = if held && self.unnamed.load(Ordering::Relaxed) {
            let made = match (crate::fault::tmpfile_full(), at.in_dir()) {
                (Some(e), _) => Err(e),
                (None, Some((fd, _))) => unnamed_in(fd, mode),
                // Readable too, for a copy should linking it be refused.
                (None, None) => OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_TMPFILE)
                    .mode(mode)
                    .open(dir),
            };
            match made {
                Ok(f) => Some(f),
                // A full filesystem is not one without unnamed files: a
                // temporary name instead would fail too, or worse, be
                // made, and be left behind by a restore killed then.
                Err(e) if crate::error::is_full(&e) => return Err(failed(e)),
                Err(_) => None,
            }
        } else {
            None
        };
        let file = match unnamed {
            Some(f) => f,
            None => {
                let name = temp_name(Path::new(""));
                let tmp = task.dest.with_file_name(&name);
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(mode)
                    .open(dir.join(&name))
                    .map_err(failed)?;
                let md = match f.metadata() {
                    Ok(md) => md,
                    Err(e) => {
                        let _ = fs::remove_file(dir.join(&name));
                        return Err(failed(e));
                    }
                };
                if let Ok(mut i) = task.tmp_inode.lock() {
                    *i = Some((
                        std::os::unix::fs::MetadataExt::dev(&md),
                        std::os::unix::fs::MetadataExt::ino(&md),
                    ));
                }
                if let Ok(mut t) = task.tmp.lock() {
                    *t = Some(tmp);
                }
                f
            }
        };
        match self.size_file(&file, dir, task.node.size, chunks) {
            Ok(Sizing { sized, sparse }) => {
                if sized && !task.reserve_counted.swap(true, Ordering::AcqRel) {
                    self.reserved_one();
                }
                task.sized.store(sized, Ordering::Relaxed);
                task.sparse.store(sparse, Ordering::Relaxed);
            }
            Err(e) => {
                // The caller holds the task's file slot: only the name
                // goes here; the descriptor closes on return.
                if let Some(tmp) = task.tmp.lock().ok().and_then(|mut t| t.take()) {
                    if let Ok(at) = self.beneath.at(&tmp) {
                        let _ = fs::remove_file(&*at);
                    }
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
    pub(super) fn size_file(
        &self,
        file: &fs::File,
        dir: &Path,
        size: u64,
        chunks: &[BlobId],
    ) -> Result<Sizing> {
        if size < RESERVE_FROM {
            return Ok(Sizing::default());
        }
        // A file with an all-zero chunk had holes where it was backed up
        // (or is mostly zeros): it gets holes wherever its chunks hold
        // whole zero blocks, not only for its all-zero chunks.
        if self.may_have_holes(chunks)? {
            return Ok(Sizing {
                sized: false,
                sparse: true,
            });
        }
        if fs2::FileExt::allocate(file, size).is_ok() {
            return Ok(Sizing {
                sized: true,
                sparse: false,
            });
        }
        // What a failed allocation took, ext4 keeps: the file is new
        // and empty, so it gives those blocks back before the free
        // space is measured (ext4 read as full, "0 B available", with
        // megabytes free), and before other files are sized.
        let _ = file.set_len(0);
        // fs2 hands on posix_fallocate's failure through errno, which
        // posix_fallocate does not set, so the error says nothing:
        // judge by the free space instead.
        if let Ok(avail) = fs2::available_space(dir) {
            if avail < size {
                // Only this file: smaller ones may still fit, and the
                // restore goes on with them until a write finds the
                // filesystem full (see `Executor::full`).
                // Whoever reports it names the file.
                // In bytes where the two would read alike.
                let (needs, has) = (crate::human_bytes(size), crate::human_bytes(avail));
                let (needs, has) = if needs == has {
                    (format!("{size} bytes"), format!("{avail} bytes"))
                } else {
                    (needs, has)
                };
                return Err(Error::Invalid(format!(
                    "no space left in the target: the file needs {needs}, {has} is available"
                )));
            }
        }
        // Room enough, yet nothing reserved (a filesystem that cannot):
        // write as for small ones.
        Ok(Sizing::default())
    }

    /// Whether a file of `chunks` may get holes: restore never writes an
    /// all-zero chunk, and one of at least a block leaves a hole. Zeros
    /// compress to almost nothing, so only chunks stored in a sliver of
    /// their size (any chunk, in a repository storing blobs raw) are
    /// compared with the id of zeros of their length.
    pub(super) fn may_have_holes(&self, chunks: &[BlobId]) -> Result<bool> {
        const BLOCK: u64 = 4096;
        let raw_repo = self.repo.config().compression == 0;
        for id in chunks {
            let loc = self.repo.locate_kind(id, BlobKind::Data)?;
            let raw = u64::from(loc.raw_length);
            let sliver = u64::from(loc.length) <= raw / 64 + 64;
            if raw >= BLOCK && (sliver || raw_repo) && self.zero_id(loc.raw_length) == *id {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The id of `len` zero bytes, computed once per length.
    pub(super) fn zero_id(&self, len: u32) -> BlobId {
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
}

/// How [`Executor::size_file`] sized a new file.
#[derive(Default)]
pub(super) struct Sizing {
    /// Its blocks are reserved, and it has its final size.
    sized: bool,
    /// It gets holes where its chunks hold whole zero blocks (see
    /// [`write_leaving_holes`]).
    sparse: bool,
}

/// The file system block holes are made of, as this restore sees them:
/// zeros are left unwritten only in whole, aligned blocks of this size.
const HOLE_BLOCK: u64 = 4096;

/// Writes `data` at `offset` of the new file `file`, leaving unwritten
/// every whole [`HOLE_BLOCK`]-aligned block of it that holds only zeros:
/// the file was created empty, so those read as zeros, and are holes
/// once its size is set. Gives the write's outcome and whether any block
/// was left unwritten. Runs of written blocks go in one write each.
fn write_leaving_holes(file: &fs::File, data: &[u8], offset: u64) -> (std::io::Result<()>, bool) {
    let end = offset + data.len() as u64;
    // Block boundaries within the data: a partial block at either end is
    // written whatever it holds.
    let mut at = offset;
    let (mut run_start, mut skipped) = (offset, false);
    while at < end {
        let next = ((at / HOLE_BLOCK + 1) * HOLE_BLOCK).min(end);
        let block = &data[(at - offset) as usize..(next - offset) as usize];
        let whole = at % HOLE_BLOCK == 0 && next - at == HOLE_BLOCK;
        if whole && block.iter().all(|&b| b == 0) {
            if run_start < at {
                let run = &data[(run_start - offset) as usize..(at - offset) as usize];
                if let Err(e) = file.write_all_at(run, run_start) {
                    return (Err(e), skipped);
                }
            }
            skipped = true;
            run_start = next;
        }
        at = next;
    }
    if run_start < end {
        let run = &data[(run_start - offset) as usize..];
        if let Err(e) = file.write_all_at(run, run_start) {
            return (Err(e), skipped);
        }
    }
    (Ok(()), skipped)
}

/// Whether an entry of the target found to hold what the snapshot names
/// may be left in place and given the snapshot's metadata: only if its
/// inode has no other name. Metadata set on an inode is set for every
/// path to it, and another link may be anywhere on the filesystem,
/// outside the target (linked there by anyone who can write in the
/// target, or left by a restore of a snapshot where two files were hard
/// links before this one, where they are apart): the restore cannot
/// find those paths without searching the whole filesystem, so it never
/// changes such an inode. The entry is written anew instead, a new
/// inode renamed over its name, which leaves the other names' inode as
/// it was. A link made elsewhere in the instant between this check and
/// the metadata's setting is not seen.
/// Whether `file` carries the file capabilities `node` records (none, if
/// it records none).
fn same_capabilities(file: &fs::File, node: &Node) -> bool {
    const CAPS: &str = "security.capability";
    let want = node
        .xattrs
        .iter()
        .find(|x| x.name.0 == CAPS.as_bytes())
        .map(|x| x.value.0.as_slice());
    let have = xattr::FileExt::get_xattr(file, CAPS).ok().flatten();
    want == have.as_deref()
}

pub(super) fn only_name(md: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    md.nlink() < 2
}

/// What restoring one blob costs, in bytes of work: it is decoded once
/// and written once per use, and each use is also worth a fixed
/// allowance, since a small file costs far more in system calls (create,
/// write, link, metadata; about 50 µs on ext4) than in data. A pack of
/// thousands of small files weighs more than one of a few large chunks,
/// and is taken first.
fn blob_cost((id, loc): &(BlobId, Location), targets: &IdMap<BlobId, Vec<(usize, u64)>>) -> u64 {
    const PER_USE: u64 = 64 << 10;
    let uses = targets.get(id).map_or(0, |u| u.len()) as u64;
    let raw = u64::from(loc.raw_length);
    raw + uses * (raw + PER_USE)
}

/// A blob to read and where the index places it.
type PackedBlob = (BlobId, Location);

/// The least cost worth a piece of its own: about 500 small files, or
/// 16 MiB of data written once.
const MIN_PIECE_COST: u64 = 32 << 20;

/// `costs` (a pack's blobs in order) cut into runs of consecutive blobs
/// each costing at most `cap`, or a single blob where one alone costs
/// more.
pub(super) fn pieces_of(costs: &[u64], cap: u64) -> Vec<std::ops::Range<usize>> {
    let mut pieces = Vec::new();
    let (mut start, mut sum) = (0, 0u64);
    for (i, &c) in costs.iter().enumerate() {
        if i > start && sum.saturating_add(c) > cap {
            pieces.push(start..i);
            (start, sum) = (i, 0);
        }
        sum = sum.saturating_add(c);
    }
    if start < costs.len() {
        pieces.push(start..costs.len());
    }
    pieces
}

/// Indices of `paths` cut into runs of consecutive paths in the same
/// directory, each at most `max` long.
pub(super) fn directory_runs(paths: &[&Path], max: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=paths.len() {
        if i == paths.len() || i - start == max || folder(paths[i]) != folder(paths[start]) {
            runs.push(start..i);
            start = i;
        }
    }
    runs
}

/// The bytes of `path`'s folder: compared as bytes, a length apart at
/// once, where `Path`'s equality compares components from the end, all
/// of them for the folders of a chain of like names (work of the square
/// of its depth, once per file).
fn folder(path: &Path) -> Option<&[u8]> {
    use std::os::unix::ffi::OsStrExt;
    path.parent().map(|p| p.as_os_str().as_bytes())
}

/// Raises the open-file limit to its hard maximum (a restore keeps every
/// partly written file open) and returns the limit now in force.
pub(crate) fn raise_fd_limit() -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole merge restore into `target` on two workers, without sync.
    fn merge_into(target: &Path) -> RestoreOptions<'static> {
        RestoreOptions {
            id: None,
            subpath: None,
            target: target.to_path_buf(),
            includes: Vec::new(),
            excludes: Vec::new(),
            policy: Policy::Merge,
            dry_run: false,
            sync: false,
            workers: 2,
            lock: None,
        }
    }

    /// Pieces cover every blob once, in order, none above the cap unless
    /// a single blob is.
    #[test]
    pub(super) fn pieces_cover_every_blob_once_within_the_cap() {
        assert_eq!(pieces_of(&[5, 5, 5], 100), vec![0..3]);
        assert_eq!(pieces_of(&[5, 5, 5, 5, 5], 10), vec![0..2, 2..4, 4..5]);
        assert_eq!(
            pieces_of(&[50, 1, 1, 50, 1], 10),
            vec![0..1, 1..3, 3..4, 4..5]
        );
        assert!(pieces_of(&[], 10).is_empty());
        let costs: Vec<u64> = (0..1000).map(|i| (i * 7919) % 97 + 1).collect();
        let pieces = pieces_of(&costs, 300);
        assert_eq!(pieces.first().map(|r| r.start), Some(0));
        assert_eq!(pieces.last().map(|r| r.end), Some(1000));
        for w in pieces.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for r in &pieces {
            assert!(costs[r.clone()].iter().sum::<u64>() <= 300);
        }
    }

    #[test]
    pub(super) fn directory_runs_cover_every_file_once_one_directory_each() {
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
        // A chain of like names: each file in a folder of its own, told
        // apart by the folders' bytes.
        let chain: Vec<PathBuf> = (1..=4)
            .map(|n| ["dd"; 4][..n].iter().collect::<PathBuf>().join("f"))
            .collect();
        let rels: Vec<&Path> = chain.iter().map(|p| p.as_path()).collect();
        assert_eq!(directory_runs(&rels, 64), vec![0..1, 1..2, 2..3, 3..4]);
        let twins = [
            Path::new("dd/dd/f"),
            Path::new("dd/dd/g"),
            Path::new("dd/de/f"),
        ];
        assert_eq!(directory_runs(&twins, 64), vec![0..2, 2..3]);
    }

    fn pack_cost(blobs: &[PackedBlob], targets: &IdMap<BlobId, Vec<(usize, u64)>>) -> u64 {
        blobs.iter().map(|b| blob_cost(b, targets)).sum()
    }

    /// A pack of many small files' chunks is costed above one holding
    /// as many bytes in a few large chunks, and a chunk used twice above
    /// one used once: the costliest packs are read first.
    #[test]
    pub(super) fn packs_of_many_small_files_cost_more_than_their_bytes() {
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

    /// Packs are read ahead of the workers that restore them, each
    /// prefetched span inside its pack and read after, and the files
    /// come out whole.
    #[test]
    fn a_restore_prefetches_the_packs_its_workers_take_next() {
        use crate::archiver::{backup, BackupOptions};
        use crate::backend::mem::MemBackend;
        use crate::backend::testing::{noise, repo_of_small_packs, Hooked, ReadsAhead};
        use crate::backend::Backend;
        use std::sync::Arc;

        let store = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: ReadsAhead::default(),
        });
        let repo = repo_of_small_packs(store.clone());
        let src = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..12u8 {
            let bytes = noise(&[i], 300_000);
            std::fs::write(src.path().join(format!("f{i:02}")), &bytes).unwrap();
            files.push(bytes);
        }
        let opts = BackupOptions {
            paths: vec![src.path().to_path_buf()],
            ..BackupOptions::default()
        };
        let snap = backup(&repo, &opts, &mut std::io::empty(), &|_| {})
            .unwrap()
            .snapshot;
        let packs = store.list(FileKind::Pack).unwrap().len();
        assert!(packs >= 4, "{packs} packs");
        store.hooks.events.lock().unwrap().clear();

        let out = tempfile::tempdir().unwrap();
        let stats = restore(
            &repo,
            &snap,
            &merge_into(out.path()),
            &|w| panic!("{w}"),
            &|e| panic!("{e}"),
        )
        .unwrap();
        assert_eq!((stats.files_written, stats.errors), (12, 0));
        let restored = out.path().join(src.path().strip_prefix("/").unwrap());
        for (i, bytes) in files.iter().enumerate() {
            let got = std::fs::read(restored.join(format!("f{i:02}"))).unwrap();
            assert!(got == *bytes, "f{i:02} differs");
        }
        store
            .hooks
            .check_prefetches(|name| store.inner.size(FileKind::Pack, name).unwrap());
        let ahead = store.hooks.read_after_prefetch();
        assert!(ahead >= 1, "no pack was read after its prefetch");
    }

    /// A store that stops answering data packs' reads (retries spent)
    /// stops the restore at the first: an error saying so, and not one
    /// wait and failure per file after it.
    #[test]
    fn an_outage_stops_the_restore() {
        use crate::archiver::{backup, BackupOptions};
        use crate::backend::mem::MemBackend;
        use crate::backend::testing::{noise, repo_of_small_packs, Hooked, Outage};
        use std::sync::Arc;

        let store = Arc::new(Hooked {
            inner: MemBackend::default(),
            hooks: Outage::default(),
        });
        let repo = repo_of_small_packs(store.clone());
        let src = tempfile::tempdir().unwrap();
        for i in 0..24u8 {
            std::fs::write(src.path().join(format!("f{i:02}")), noise(&[i], 300_000)).unwrap();
        }
        let opts = BackupOptions {
            paths: vec![src.path().to_path_buf()],
            ..BackupOptions::default()
        };
        let snap = backup(&repo, &opts, &mut std::io::empty(), &|_| {})
            .unwrap()
            .snapshot;
        // Every data pack down; the trees' packs answer.
        let index = repo.index().unwrap();
        let mut data = Vec::new();
        for t in index
            .tables()
            .iter()
            .filter(|t| t.kind() == Some(BlobKind::Data))
        {
            for n in 0..t.pack_count() {
                data.push(t.pack(n).unwrap().0.to_hex());
            }
        }
        assert!(data.len() >= 5, "{} data packs", data.len());
        store.hooks.begin_for(data.clone());

        let out = tempfile::tempdir().unwrap();
        let e = restore(&repo, &snap, &merge_into(out.path()), &|_| {}, &|_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("Connection refused"), "{e}");
        assert!(e.contains("the store did not answer"), "{e}");
        let failed = store.hooks.failed();
        assert!(
            failed < data.len(),
            "{failed} reads of {} packs failed",
            data.len()
        );
    }
}
