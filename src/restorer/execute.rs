//! Carrying out a restore's plan: directories, special files, hard
//! links, metadata and the mirror policy's removals (files: [`super::files`]).

use crate::escape::Show;
use std::os::unix::fs::MetadataExt;

use super::*;

impl Executor<'_> {
    pub(super) fn fail(&self, path: &Path, e: impl std::fmt::Display) {
        let why = format!("{}: {e}", path.shown());
        self.errors.fetch_add(1, Ordering::Relaxed);
        // A failure for want of space is told once, at the end (see
        // `full`); the error's text is the one place every path that
        // reports here shares.
        let no_space =
            [libc::ENOSPC, libc::EDQUOT].map(|n| std::io::Error::from_raw_os_error(n).to_string());
        if no_space.iter().any(|t| why.contains(t.as_str())) {
            self.note_full(why);
        } else {
            // Said with its remedy once, at the end.
            if why.contains(crate::index::NOT_INDEXED) {
                self.unindexed.fetch_add(1, Ordering::Relaxed);
            } else if why.contains(crate::repo::PACK_NOT_THERE) {
                self.pack_missing.fetch_add(1, Ordering::Relaxed);
            } else if why.contains(": index ") && why.contains(" is corrupt: ") {
                self.index_damaged.fetch_add(1, Ordering::Relaxed);
            } else if why.contains(" is corrupt: ") {
                self.damaged.fetch_add(1, Ordering::Relaxed);
            }
            (self.error)(&why);
        }
    }

    /// Records `why` as the failure that found the target full, unless
    /// one was recorded before, and stops the restore once no file whose
    /// space is reserved is left to finish (see [`Executor::reserved`]).
    fn note_full(&self, why: String) {
        if let Ok(mut f) = self.full.lock() {
            f.get_or_insert(why);
        }
        if self.reserved.load(Ordering::Acquire) == 0 {
            self.halt.store(true, Ordering::Relaxed);
        }
    }

    /// Counts a file whose space is now reserved.
    pub(super) fn reserved_one(&self) {
        self.reserved.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a file whose space was reserved as finished (whatever its
    /// outcome); the last of them stops a restore that found the target
    /// full meanwhile.
    pub(super) fn reserved_done(&self) {
        let left = self.reserved.fetch_sub(1, Ordering::AcqRel) - 1;
        if left == 0 && self.full.lock().is_ok_and(|f| f.is_some()) {
            self.halt.store(true, Ordering::Relaxed);
        }
    }

    /// Records `e`, met writing `path`, if it says the target is full.
    pub(super) fn check_full(&self, path: &Path, e: &Error) {
        if e.is_storage_full() {
            let why = e.to_string();
            let shown = path.shown().to_string();
            self.note_full(if why.contains(&shown) {
                why
            } else {
                format!("{shown}: {why}")
            });
        }
    }

    /// Stops the restore if `e` says the store stopped answering (a
    /// transient error, its retries spent): every read after would wait
    /// out the retries and fail the same way, entry after entry. `e` is
    /// kept, once, as the restore's error, saying so; a run again writes
    /// what is missing. Any other error is given back.
    pub(super) fn stop_if_outage(&self, e: Error) -> std::result::Result<(), Error> {
        if !e.is_transient() {
            return Err(e);
        }
        if let Ok(mut l) = self.lost.lock() {
            l.get_or_insert(Error::Advised {
                error: Box::new(e),
                advice: "the store did not answer (which is not damage): the rest of the \
                         snapshot is not restored; run the restore again once the store \
                         answers, and it writes what is missing"
                    .into(),
            });
        }
        self.halt.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the restore stopped (the target full, or its lock lost):
    /// what is left is not attempted.
    pub(super) fn halted(&self) -> bool {
        self.halt.load(Ordering::Relaxed)
    }

    /// Stops the restore if its lock can no longer be relied on (see
    /// [`RestoreOptions::lock`]); costs no IO but every quarter of an
    /// hour.
    pub(super) fn check_lock(&self) {
        let Some(lock) = self.lock else { return };
        if let Err(e) =
            lock.check("the rest of the snapshot is not restored; run the restore again")
        {
            if let Ok(mut l) = self.lost.lock() {
                l.get_or_insert(e);
            }
            self.halt.store(true, Ordering::Relaxed);
        }
    }

    /// The repository or cache folder (see [`crate::repo::own`]) that the
    /// entry of the target whose `lstat` is `md` is or holds (a
    /// directory above it, or a symlink on the repository's path).
    pub(super) fn own_at(&self, md: &fs::Metadata) -> Option<(&Path, &'static str)> {
        self.own.is_or_holds(md.dev(), md.ino())
    }

    pub(super) fn under_skipped(&self, rel: &Path) -> bool {
        self.skipped_dirs
            .lock()
            .map(|s| s.covers(rel))
            .unwrap_or(false)
    }

    /// Whether `path` is, or lies beneath, a directory this restore created
    /// (or, in a dry run, would create or replace), and so holds nothing
    /// the restore has not put there. The plan names every path once, and each
    /// is looked at before it is created, so such a path does not exist
    /// yet: no `lstat` needed, which in a new tree would take the
    /// directory's lock against the other workers creating files in it.
    pub(super) fn fresh(&self, path: &Path) -> bool {
        self.fresh_dirs
            .lock()
            .map(|f| f.covers(path))
            .unwrap_or(false)
    }

    /// Notes a directory the restore created (or, in a dry run, would
    /// create or replace).
    pub(super) fn mark_fresh(&self, path: &Path) {
        if let Ok(mut f) = self.fresh_dirs.lock() {
            // Beneath a fresh directory it is fresh already (see
            // `fresh`): the set holds the tops of the new subtrees, not
            // every directory made.
            f.insert(path);
        }
    }

    /// `lstat` of an entry in the target, as the restore would find it at
    /// this point (see [`Self::fresh`]).
    pub(super) fn lstat(&self, path: &Path) -> std::io::Result<fs::Metadata> {
        if self.fresh(path) {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        fs::symlink_metadata(&*self.beneath.at(path)?)
            .map_err(|e| self.dry_run_refusal(path.parent().unwrap_or(path), e))
    }

    /// `e`, met in a dry run in `folder`, saying why where the folder is
    /// the user's and refused them: the restore first gives such a folder
    /// its owner's access (see [`Self::open_up`]), which a dry run, that
    /// changes nothing, does not.
    pub(super) fn dry_run_refusal(&self, folder: &Path, e: std::io::Error) -> std::io::Error {
        if !self.dry_run || self.root || e.kind() != std::io::ErrorKind::PermissionDenied {
            return e;
        }
        let own = self
            .beneath
            .at(folder)
            .and_then(|at| fs::symlink_metadata(&*at))
            .is_ok_and(|md| md.uid() == fsmeta::euid());
        if !own {
            return e;
        }
        std::io::Error::new(
            e.kind(),
            format!(
                "{e} (the restore itself first gives the owner of a folder of theirs \
                 access to it; a dry run changes nothing, so it cannot tell what the \
                 restore would find there)"
            ),
        )
    }

    /// Creates the directory at `rel` (its parents made before it), which
    /// lies above the paths its backup was given if `above`. Returns
    /// whether it was found and left as it is, metadata included: by
    /// skip-existing, and above the given paths (the snapshot holds those
    /// only as the way down: a restore of a backup of `/home/a` with
    /// `--target /` leaves `/home` as it is).
    pub(super) fn make_dir(&self, rel: &Path, above: bool, stats: &mut RestoreStats) -> bool {
        if self.under_skipped(rel) {
            return false;
        }
        match self.ensure_dir(&self.target.join(rel)) {
            Ok(Dir::Made) => stats.dirs += 1,
            Ok(Dir::Existing) if self.policy == Policy::SkipExisting => {
                stats.skipped += 1;
                return true;
            }
            Ok(Dir::Existing) if above => {
                stats.dirs += 1;
                return true;
            }
            Ok(Dir::Existing) => stats.dirs += 1,
            Ok(Dir::Skipped) => {
                stats.skipped += 1;
                if let Ok(mut s) = self.skipped_dirs.lock() {
                    s.insert(rel);
                }
            }
            Err(e) => {
                self.fail(&self.target.join(rel), e);
                if let Ok(mut s) = self.skipped_dirs.lock() {
                    s.insert(rel);
                }
            }
        }
        false
    }

    /// Creates the symlinks and special files of `others`.
    pub(super) fn make_others(&self, others: &[Item], stats: &mut RestoreStats) {
        for item in others {
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
    }

    /// Links each of `links` to the restored file it names: files of
    /// this batch or one before, each put in place (see `Planner::link`).
    /// A file already at a link's path is replaced only once the link is
    /// made, under a temporary name renamed over it: a link that cannot
    /// be made leaves it as it was.
    pub(super) fn make_links(&self, links: &[(Item, PathBuf)], stats: &mut RestoreStats) {
        for (item, first) in links {
            if self.under_skipped(&item.rel) {
                continue;
            }
            let dest = self.target.join(&item.rel);
            let replace = match self.lstat(&dest) {
                Ok(_) if self.policy == Policy::SkipExisting => {
                    stats.skipped += 1;
                    continue;
                }
                Ok(md) if md.is_dir() => match self.clear(&dest, item.node.kind_name()) {
                    Ok(_) => false,
                    Err(e) => {
                        self.fail(&dest, e);
                        continue;
                    }
                },
                Ok(_) if self.mounted(&dest) => {
                    self.fail(&dest, super::remove::not_replaced());
                    continue;
                }
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => {
                    self.fail(&dest, Error::path("stat", &dest, e));
                    continue;
                }
            };
            if self.dry_run {
                stats.other += 1;
                continue;
            }
            let first = self.target.join(first);
            match self.hard_link(&first, &dest, replace) {
                Ok(()) => stats.other += 1,
                Err(e) if refuses_links(&e) => match self.copy_of(&first, &dest, &item.node) {
                    Ok(()) => {
                        stats.other += 1;
                        (self.warn)(&format!(
                            "{}: restored as a copy of {}: the target's filesystem refuses \
                             hard links ({e})",
                            dest.shown(),
                            first.shown()
                        ));
                    }
                    Err(c) => self.fail(
                        &dest,
                        format!("cannot create hard link ({e}), nor a copy: {c}"),
                    ),
                },
                Err(e) => self.fail(&dest, format!("cannot create hard link: {e}")),
            }
        }
    }

    /// Puts a copy of the restored file `first` at `dest`, with `node`'s
    /// metadata: for a hard link the target cannot make. Written under a
    /// temporary name and renamed into place, as any restored file.
    fn copy_of(&self, first: &Path, dest: &Path, node: &Node) -> std::io::Result<()> {
        let mut from = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&*self.beneath.at(first)?)?;
        let at = self.beneath.at(dest)?;
        let (tmp, out) = place::copy_to_temp(&mut from, &at)?;
        self.apply_meta(dest, node, Some(&out), false);
        drop(out);
        rename_over(&tmp, &at)
    }

    /// Sets directory `d`'s metadata, once everything beneath it is
    /// restored (a dry run sets nothing).
    pub(super) fn set_dir_meta(&self, d: &Item) {
        if self.dry_run || self.under_skipped(&d.rel) {
            return;
        }
        let path = self.target.join(&d.rel);
        // Through the directory itself where it opens as one.
        let dir = self.beneath.at(&path).and_then(|at| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&*at)
        });
        let held = !self.fresh(&path);
        self.apply_meta(&path, &d.node, dir.as_ref().ok(), held);
    }

    /// Links `dest` to the restored file `first`, neither reached through
    /// a symlink; to `replace` what is at `dest`, under a temporary name
    /// renamed over it.
    fn hard_link(&self, first: &Path, dest: &Path, replace: bool) -> std::io::Result<()> {
        let first = self.beneath.at(first)?;
        let at = self.beneath.at(dest)?;
        if !replace {
            return fs::hard_link(&*first, &*at);
        }
        // Already this link: nothing to do.
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (fs::symlink_metadata(&*first)?, fs::symlink_metadata(&*at)?);
        if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
            return Ok(());
        }
        let dir = at.parent().expect("an entry's path has its folder's");
        let tmp = place::temp_name(dir);
        fs::hard_link(&*first, &tmp)?;
        rename_over(&tmp, &at)
    }

    /// Makes `path` a real directory, unless skip-existing leaves a
    /// non-directory in place.
    pub(super) fn ensure_dir(&self, path: &Path) -> Result<Dir> {
        match self.lstat(path) {
            Ok(md) if md.is_dir() => {
                if let Some((folder, what)) = self.own.find(md.dev(), md.ino()) {
                    return Err(Error::Invalid(format!(
                        "it is {what} ({}): nothing of the snapshot is restored into it \
                         (restore into another folder, or leave it out with --exclude)",
                        folder.shown()
                    )));
                }
                self.open_up(path, &md);
                self.note_default_acl(path);
                return Ok(Dir::Existing);
            }
            Ok(_) => match self.clear(path, "a folder")? {
                Existing::Skip => return Ok(Dir::Skipped),
                Existing::Create => {}
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::path("stat", path, e)),
        }
        if self.dry_run {
            self.mark_fresh(path);
            return Ok(Dir::Made);
        }
        // Its owner's only until it gets its snapshot's mode, when what
        // it holds is restored: made under the umask (0755, most often),
        // a folder of mode 0700 in the snapshot could be listed, and its
        // files read, by any user while the restore ran (and stayed so
        // where the restore was killed), until December 2026.
        self.beneath
            .at(path)
            .and_then(|at| {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new().mode(0o700).create(&*at)
            })
            .map_err(|e| Error::path("create folder", path, e))?;
        self.mark_fresh(path);
        self.note_default_acl(path);
        Ok(Dir::Made)
    }

    /// Notes whether the folder at `path` holds a default ACL
    /// (`system.posix_acl_default`), which every entry made in it takes
    /// as its own (and a folder as its default too), whatever the
    /// snapshot's entry has: from then on each new entry has the
    /// attributes its node lacks removed, as one the target held has.
    /// One `getxattr` per folder; none per file of a target without
    /// default ACLs. (Until December 2026 such an inherited ACL stayed on
    /// every new entry, granting what the snapshot did not, until a
    /// restore run again removed it.)
    pub(super) fn note_default_acl(&self, path: &Path) {
        if self.dry_run || self.default_acls.load(Ordering::Relaxed) {
            return;
        }
        // Through the folder opened (the target's own place is a link in
        // `/proc`, which a path's attribute calls do not follow); a
        // symlink swapped in would only have its folder's ACL read.
        let held = self.beneath.at(path).and_then(|at| {
            let dir = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(&*at)?;
            xattr::FileExt::get_xattr(&dir, "system.posix_acl_default")
        });
        if matches!(held, Ok(Some(_))) {
            self.default_acls.store(true, Ordering::Relaxed);
        }
    }

    /// Gives an existing folder of the user's (restoring as an ordinary
    /// user) whose `lstat` is `md` its owner's write and search
    /// permission, if it lacks them, for the restore to create and remove
    /// entries in it, and under mirror its read permission too, for the
    /// restore to list what else it holds (until December 2026 a mirror
    /// left the extra entries of a folder of mode 0311 in place, without
    /// a word, exit 0): a folder a restore made read-only (0500) is the
    /// restore's to write in again, as it writes in those it creates
    /// before giving them their mode at the end. The snapshot's mode is
    /// set at the end as ever, or, on a folder skip-existing leaves as it
    /// is, the folder's own put back (see [`Self::close_again`]). Until
    /// December 2026 a restore run again into such a folder could not
    /// put back a file missing there ("Permission denied"), nor a mirror
    /// remove anything from it.
    fn open_up(&self, path: &Path, md: &fs::Metadata) {
        let needed = if self.policy == Policy::Mirror {
            0o700
        } else {
            0o300
        };
        if self.root || self.dry_run || md.mode() & needed == needed || md.uid() != fsmeta::euid() {
            return;
        }
        let opened = self
            .beneath
            .at(path)
            .and_then(|at| fsmeta::set_mode_nofollow(&at, md.mode() & 0o7777 | needed));
        match opened {
            Ok(()) => {
                if let Ok(mut o) = self.opened_up.lock() {
                    o.insert(path.to_path_buf(), md.mode() & 0o7777);
                }
            }
            Err(e) => self.fail(path, format!("cannot make it writable: {e}")),
        }
    }

    /// Puts back the mode of the folder at `rel` that [`Self::open_up`]
    /// changed, for one whose metadata the restore leaves as it was
    /// (skip-existing).
    pub(super) fn close_again(&self, rel: &Path) {
        let path = self.target.join(rel);
        let Some(mode) = self.opened_up.lock().ok().and_then(|mut o| o.remove(&path)) else {
            return;
        };
        let r = self
            .beneath
            .at(&path)
            .and_then(|at| fsmeta::set_mode_nofollow(&at, mode));
        if let Err(e) = r {
            self.fail(&path, format!("cannot set its mode back: {e}"));
        }
    }

    /// Removes whatever is at `path` unless the policy keeps it (a dry run
    /// only decides), where the snapshot has `what` (a file, a symlink,
    /// ...). A folder goes with all it holds (see
    /// [`Executor::remove_folder`]), but not under merge if it holds
    /// anything.
    pub(super) fn clear(&self, path: &Path, what: &str) -> Result<Existing> {
        let md = match self.lstat(path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Create),
            Err(e) => return Err(Error::path("stat", path, e)),
        };
        if self.policy == Policy::SkipExisting {
            return Ok(Existing::Skip);
        }
        if let Some((folder, what)) = self.own_at(&md) {
            return Err(Error::Invalid(format!(
                "{} is or leads to {what} ({}): left in place, where the snapshot has \
                 something else",
                path.shown(),
                folder.shown()
            )));
        }
        if !md.is_dir() && self.mounted(path) {
            return Err(super::remove::not_replaced());
        }
        let at = self
            .beneath
            .at(path)
            .map_err(|e| Error::path("stat", path, e))?;
        if md.is_dir() {
            if self.policy == Policy::Merge
                && fs::read_dir(&*at)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                return Err(Error::Invalid(format!(
                    "a non-empty directory in the target; the snapshot has {what} there \
                     (use --policy mirror to replace it)"
                )));
            }
            self.remove_folder(path, &md, what)?;
            if self.dry_run {
                self.mark_fresh(path);
            }
            return Ok(Existing::Create);
        }
        if !self.dry_run {
            fs::remove_file(&*at).map_err(|e| Error::path("remove", path, e))?;
        }
        Ok(Existing::Create)
    }

    /// The file at `path`, open for reading, if it is a regular file
    /// holding exactly the chunks `ids`.
    pub(super) fn same_content(
        &self,
        path: &Path,
        ids: &[crate::id::BlobId],
    ) -> Result<Option<fs::File>> {
        // Never through a symlink, and without waiting on a FIFO put in
        // the file's place since it was looked at.
        let opened = self.beneath.at(path).and_then(|at| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&*at)
        });
        let Ok(file) = opened else {
            return Ok(None);
        };
        let Some(len) = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
        else {
            return Ok(None);
        };
        let mut offset = 0u64;
        let mut buf = Vec::new();
        for id in ids {
            let chunk = self
                .repo
                .locate_kind(id, crate::pack::BlobKind::Data)?
                .raw_length as usize;
            buf.resize(chunk, 0);
            if file.read_exact_at(&mut buf, offset).is_err() || self.repo.key().blob_id(&buf) != *id
            {
                return Ok(None);
            }
            offset += chunk as u64;
        }
        Ok((offset == len).then_some(file))
    }

    pub(super) fn restore_other(&self, dest: &Path, node: &Node) -> Result<bool> {
        // The same symlink is left in place and given the snapshot's
        // metadata, unless it has another name (a symlink can be hard
        // linked too), which may be outside the target: it is then made
        // anew (see `only_name`); so is another user's, whose time an
        // ordinary user may not set (every run failed on it, exit 1, until
        // December 2026), as such a file is. Skip-existing leaves it as it
        // is (`clear`, below), as it leaves any entry already there.
        if let (NodeKind::Symlink { target }, Ok(md)) = (&node.kind, self.lstat(dest)) {
            use std::os::unix::fs::MetadataExt;
            if self.policy != Policy::SkipExisting
                && md.file_type().is_symlink()
                && super::files::only_name(&md)
                && (self.root || md.uid() == fsmeta::euid())
                && self
                    .beneath
                    .at(dest)
                    .and_then(|at| fs::read_link(&*at))
                    .is_ok_and(|t| t.as_os_str().as_bytes() == target.0.as_slice())
            {
                if !self.dry_run {
                    self.apply_meta(dest, node, None, false);
                }
                return Ok(true);
            }
        }
        match node.kind {
            // Not made (a socket is its server's to make, when it
            // listens), but under mirror whatever else stands at its name
            // goes, as an entry the snapshot lacks does: a mirror leaves
            // the snapshot's tree, the socket aside. (A file or a folder
            // with all it held stayed there, without a word, until
            // December 2026.)
            NodeKind::Socket => {
                let Ok(md) = self.lstat(dest) else {
                    return Ok(false);
                };
                if self.policy != Policy::Mirror
                    || std::os::unix::fs::FileTypeExt::is_socket(&md.file_type())
                {
                    return Ok(false);
                }
                // Nothing takes its place, so it is a removal, counted and
                // listed as a mirror's are; a folder that held anything
                // is so already (see `remove_folder`).
                let counted_already = md.is_dir()
                    && self
                        .beneath
                        .at(dest)
                        .and_then(fs::read_dir)
                        .map_or(true, |mut d| d.next().is_some());
                self.clear(dest, "a socket")?;
                if !counted_already {
                    self.replaced.fetch_add(1, Ordering::Relaxed);
                    if self.dry_run {
                        if let Ok(mut w) = self.would_replace.lock() {
                            w.push(dest.to_path_buf());
                        }
                    }
                }
                return Ok(false);
            }
            NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. } if !self.root => {
                return Err(Error::Invalid(
                    "device nodes are restored only when running as root".into(),
                ));
            }
            _ => {}
        }
        match self.clear(dest, node.kind_name())? {
            Existing::Skip => return Ok(false),
            Existing::Create if self.dry_run => return Ok(true),
            Existing::Create => {}
        }
        let at = self
            .beneath
            .at(dest)
            .map_err(|e| Error::path("create", dest, e))?;
        match &node.kind {
            NodeKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&target.0), &*at)
                    .map_err(|e| Error::path("create symlink", dest, e))?;
            }
            kind => fsmeta::make_special(&at, kind, node.mode)
                .map_err(|e| Error::path("create", dest, e))?,
        }
        self.apply_meta(dest, node, None, false);
        Ok(true)
    }

    /// Sets ownership (as root), xattrs, mode and mtime, in that order;
    /// failures warn. For an entry the target `held` before the restore,
    /// also removes the extended attributes the snapshot's entry lacks
    /// (see [`Self::drop_stale_xattrs`]).
    /// With `file` (open on `path`, which is then a regular file or a
    /// directory) the calls go through it rather than through the path,
    /// and owner and mode are changed only where they differ: a file this
    /// restore created mostly has both right already, and each change is
    /// an inode update.
    ///
    /// Linux lets only a user who may write an entry set or remove its
    /// `user.*` attributes, whatever the descriptor is open for, so the
    /// attributes go before the mode, and an ordinary user gives an entry
    /// without its owner's write permission that permission while they are
    /// set. (Until December 2026 the mode came first: a restore by an
    /// ordinary user lost the `user.*` attributes of read-only files and
    /// folders, "Permission denied".)
    pub(super) fn apply_meta(&self, path: &Path, node: &Node, file: Option<&fs::File>, held: bool) {
        use std::os::unix::fs::MetadataExt;
        let at = match file {
            Some(_) => None,
            None => match self.beneath.at(path) {
                Ok(at) => Some(at),
                Err(e) => return self.fail(path, format!("cannot set metadata: {e}")),
            },
        };
        let by_path = at.as_deref().unwrap_or(path);
        let symlink = matches!(node.kind, NodeKind::Symlink { .. });
        let now = file.and_then(|f| f.metadata().ok());
        let owned = now
            .as_ref()
            .is_some_and(|m| m.uid() == node.uid && m.gid() == node.gid);
        if self.root && !owned {
            let r = match file {
                Some(f) => std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid)),
                None => fsmeta::set_owner(by_path, node.uid, node.gid),
            };
            if let Err(e) = r {
                self.fail(path, format!("cannot set owner: {e}"));
            }
        }
        // Only regular files and folders, which come with `file`, take
        // `user.*` attributes.
        let opened_up = match (file, &now) {
            (Some(f), Some(m))
                if !self.root && m.mode() & 0o200 == 0 && (!node.xattrs.is_empty() || held) =>
            {
                f.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777 | 0o200))
                    .is_ok()
            }
            _ => false,
        };
        self.set_xattrs(path, node, file, by_path);
        if held || self.default_acls.load(Ordering::Relaxed) {
            self.drop_stale_xattrs(path, node, file);
        }
        // A change of owner clears set-user-ID and set-group-ID bits, so
        // the mode is set again after one.
        let moded = (owned || !self.root)
            && !opened_up
            && now
                .as_ref()
                .is_some_and(|m| m.mode() & 0o7777 == node.mode & 0o7777);
        if !symlink && !moded {
            let set = |mode: u32| match file {
                Some(f) => f.set_permissions(fs::Permissions::from_mode(mode)),
                None => fsmeta::set_mode_nofollow(by_path, mode),
            };
            match set(node.mode) {
                // The system drops set-group-ID, without an error, from
                // the entry of a group its user is not in (which a new
                // entry takes from a set-group-ID folder of another
                // group): told once, at the end, as a refusing target's
                // bits are (it went without a word, exit 0).
                Ok(()) if !self.root && node.mode & 0o2000 != 0 => {
                    let after = match file {
                        Some(f) => f.metadata(),
                        None => fs::symlink_metadata(by_path),
                    };
                    if let Some(m) = after.ok().filter(|m| m.mode() & 0o2000 == 0) {
                        if let Ok(mut r) = self.modes_refused.lock() {
                            r.entries += 1;
                            r.first.get_or_insert_with(|| {
                                format!(
                                    "{}, mode {:o}: the system drops set-group-ID where the \
                                     entry's group ({}) is not one of this user's",
                                    path.shown(),
                                    node.mode & 0o7777,
                                    m.gid()
                                )
                            });
                        }
                    }
                }
                Ok(()) => {}
                // A target that keeps no set-user-ID, set-group-ID or
                // sticky bit (exFAT and FAT: exfat-fuse says `EPERM`,
                // and drops the other bits without a word), where the
                // mode without them is taken: told once, at the end, as
                // refused attributes are (each was an error, so a restore
                // of anything beneath `/tmp` failed there).
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && node.mode & 0o7000 != 0 => {
                    match set(node.mode & 0o777) {
                        Ok(()) => {
                            if let Ok(mut r) = self.modes_refused.lock() {
                                r.entries += 1;
                                r.first.get_or_insert_with(|| {
                                    format!("{}, mode {:o}: {e}", path.shown(), node.mode & 0o7777)
                                });
                            }
                        }
                        Err(_) => self.fail(path, format!("cannot set mode: {e}")),
                    }
                }
                Err(e) => self.fail(path, format!("cannot set mode: {e}")),
            }
        }
        let r = match file {
            Some(f) => fsmeta::set_mtime_fd(f, node.mtime_ns),
            None => fsmeta::set_mtime(by_path, node.mtime_ns),
        };
        if let Err(e) = r {
            self.fail(path, format!("cannot set mtime: {e}"));
        }
    }
}

/// Whether a hard link failed because the target's filesystem cannot
/// make it here (exFAT and FAT have none: exfat-fuse says `EPERM`; a
/// file at the filesystem's link limit; another filesystem mounted
/// between the two paths): a copy then serves.
fn refuses_links(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EMLINK | libc::EXDEV)
    )
}

/// Renames the temporary file `tmp` over `to`, both in one folder of the
/// target; removes it if that fails.
fn rename_over(tmp: &Path, to: &Path) -> std::io::Result<()> {
    fs::rename(tmp, to).inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })
}
