//! Restores over targets that already hold something, at random.
//!
//! A source holding every kind of entry (files from empty to several
//! chunks, nested folders, symlinks, hard links, FIFOs, odd modes and
//! owners) is backed up, changed (contents, types, links broken and made)
//! and backed up again. Then, round after round, a target is prepared in
//! a random state relative to one of the two snapshots: missing, empty, or
//! a restore of either snapshot, then entries removed, put there with the
//! wrong type, rewritten with the same size and time, added at any depth,
//! replaced by symlinks leading out of the target to a canary folder,
//! made read-only, given another owner or time, hard-linked together. It
//! is restored with a random policy, sometimes only in part (`SNAP:/path`,
//! `--include`, `--exclude`), sometimes in batches of a few entries,
//! sometimes after a `--dry-run` of the same restore.
//!
//! The model (`restore_model`) says what the policy makes of the target.
//! Beside it, the canary is never changed, no temporary file is left,
//! and a dry run changes nothing, exits as the restore does, makes the
//! same counts and lists, for a mirror, exactly what the restore removes.
//!
//! `CAIRN_RESTORE_TARGET_SEEDS=7,8,9` makes the first test run those seeds,
//! and `CAIRN_RESTORE_TARGET_ROUNDS` sets the rounds per seed; each round
//! is printed to the test's output, so a failure says how it got there.

mod common;
mod restore_model;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use common::*;
use restore_model::*;

/// Rounds per seed unless `CAIRN_RESTORE_TARGET_ROUNDS` says otherwise.
const ROUNDS: usize = 40;

fn below(rng: &mut Rng, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        rng.next_u64() % n
    }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[below(rng, items.len() as u64) as usize]
}

/// The counts in a restore's summary line: files written, unchanged,
/// dirs, other, skipped, removed.
fn counts(out: &Out) -> Option<[u64; 6]> {
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("restored snapshot"))?;
    let number_before = |what: &str| -> Option<u64> {
        let head = line[..line.find(what)?].trim_end();
        let at = head
            .rfind(|c: char| !c.is_ascii_digit())
            .map_or(0, |i| i + 1);
        head[at..].parse().ok()
    };
    Some([
        number_before(" files written")?,
        number_before(" unchanged")?,
        number_before(" dirs")?,
        number_before(" other")?,
        number_before(" skipped")?,
        number_before(" removed")?,
    ])
}

/// Makes the folders above `rel` real folders (replacing whatever else
/// is on the way) and removes what is at `rel`, never following a
/// symlink.
fn make_room(target: &Path, rel: &Path) {
    let mut at = target.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(md) if md.is_dir() => continue,
                Ok(_) => fs::remove_file(&at).unwrap(),
                Err(_) => {}
            }
            fs::create_dir(&at).unwrap();
        }
    }
    remove_entry(&target.join(rel));
}

fn remove_entry(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// Copies the regular files and folders of `from` to `to`.
fn copy_files(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (kind, dest) = (entry.file_type().unwrap(), to.join(entry.file_name()));
        if kind.is_dir() {
            copy_files(&entry.path(), &dest);
        } else if kind.is_file() {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// One seed's source, snapshots, canary and rounds.
struct World {
    repo: Repo,
    rng: Rng,
    seed: u64,
    round: usize,
    src: PathBuf,
    snaps: Vec<Snap>,
    /// A folder outside every target, which symlinks in the targets lead
    /// to: nothing may ever change there.
    canary: PathBuf,
    canary_links: Vec<PathBuf>,
    canary_was: Manifest,
    names: u64,
}

impl World {
    fn new(seed: u64) -> World {
        let repo = Repo::new();
        let src = repo.scratch("src");
        let canary = repo.scratch("canary");
        let mut w = World {
            repo,
            rng: Rng::new(seed),
            seed,
            round: 0,
            src,
            snaps: Vec::new(),
            canary,
            canary_links: Vec::new(),
            canary_was: Manifest::new(),
            names: 0,
        };
        w.build_source();
        w.backup();
        let changes = w.change_source();
        w.log(&format!("source changed: {}", changes.join("; ")));
        w.backup();
        w.build_canary();
        w
    }

    fn log(&self, what: &str) {
        eprintln!("seed {} round {:2}: {what}", self.seed, self.round);
    }

    fn below(&mut self, n: u64) -> u64 {
        below(&mut self.rng, n)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    fn name(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("{prefix}{}", self.names)
    }

    fn file_len(&mut self) -> usize {
        (match self.below(9) {
            0 => 0,
            1 => 1 + self.below(100),
            2 | 3 => 100 + self.below(20_000),
            4..=6 => 20_000 + self.below(150_000),
            7 => 150_000 + self.below(300_000),
            // Several chunks (64 KiB to 1 MiB, 256 KiB on average).
            _ => 700_000 + self.below(900_000),
        }) as usize
    }

    fn random_time(&mut self) -> (i64, i64) {
        (
            1_000_000_000 + self.below(700_000_000) as i64,
            self.below(1_000_000_000) as i64,
        )
    }

    /// Every entry under `root` but `root`, and its folders with `root`.
    fn entries(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let all = list_paths(root);
        let mut dirs = vec![PathBuf::new()];
        dirs.extend(
            (all.iter())
                .filter(|p| fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_dir()))
                .cloned(),
        );
        (all, dirs)
    }

    fn files_in(root: &Path) -> Vec<PathBuf> {
        (list_paths(root).into_iter())
            .filter(|p| fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_file()))
            .collect()
    }

    fn new_file(&mut self, dir: &Path) -> PathBuf {
        let ext = *pick(&mut self.rng, &["txt", "bin", "dat"]);
        let rel = dir.join(format!("{}.{ext}", self.name("f")));
        let len = self.file_len();
        let mut data = random_bytes(self.rng.next_u64(), len);
        if self.chance(6) {
            // Zeros, which a restore leaves as holes.
            data[..len / 2].fill(0);
        }
        write(&self.src.join(&rel), data);
        rel
    }

    fn new_symlink(&mut self, dir: &Path, files: &[PathBuf]) {
        let target = match self.below(5) {
            0 if !files.is_empty() => {
                let f = pick(&mut self.rng, files);
                f.file_name().unwrap().to_string_lossy().into_owned()
            }
            1 => "../elsewhere".to_string(),
            2 => "/nonexistent/place".to_string(),
            3 => ".".to_string(),
            _ => format!("dangling-{}", self.below(1000)),
        };
        let rel = dir.join(self.name("l"));
        symlink(target, self.src.join(rel)).unwrap();
    }

    /// A source of every kind of entry, with odd modes, owners and times.
    fn build_source(&mut self) {
        fs::create_dir(&self.src).unwrap();
        let mut dirs = vec![PathBuf::new()];
        for _ in 0..4 + self.below(5) {
            let parent = pick(&mut self.rng, &dirs).clone();
            let d = parent.join(self.name("d"));
            fs::create_dir(self.src.join(&d)).unwrap();
            dirs.push(d);
        }
        let mut files = Vec::new();
        for _ in 0..10 + self.below(6) {
            let dir = pick(&mut self.rng, &dirs).clone();
            files.push(self.new_file(&dir));
        }
        for _ in 0..1 + self.below(2) {
            let f = pick(&mut self.rng, &files).clone();
            for _ in 0..1 + self.below(2) {
                let dir = pick(&mut self.rng, &dirs).clone();
                let link = dir.join(self.name("h"));
                fs::hard_link(self.src.join(&f), self.src.join(link)).unwrap();
            }
        }
        for _ in 0..3 + self.below(3) {
            let dir = pick(&mut self.rng, &dirs).clone();
            self.new_symlink(&dir, &files);
        }
        for _ in 0..1 + self.below(2) {
            let dir = pick(&mut self.rng, &dirs).clone();
            let rel = dir.join(self.name("p"));
            mkfifo(&self.src.join(rel), 0o644);
        }
        self.odd_metadata();
    }

    /// Gives entries of the source other owners and modes, and every
    /// entry a time of its own (folders last, deepest first).
    fn odd_metadata(&mut self) {
        let (all, _) = World::entries(&self.src);
        for rel in &all {
            let path = self.src.join(rel);
            let md = fs::symlink_metadata(&path).unwrap();
            if self.chance(4) {
                let id = 1000 + self.below(3) as u32;
                lchown(&path, id, id + 1);
            }
            if md.file_type().is_symlink() || !self.chance(2) {
                continue;
            }
            let modes: &[u32] = if md.is_dir() {
                &[0o755, 0o700, 0o1777, 0o555, 0o2775]
            } else {
                &[0o644, 0o600, 0o755, 0o444, 0o4755, 0o2750, 0o640]
            };
            chmod(&path, *pick(&mut self.rng, modes));
        }
        let mut by_depth: Vec<&PathBuf> = all.iter().collect();
        by_depth.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for rel in by_depth {
            let (s, ns) = self.random_time();
            set_mtime(&self.src.join(rel), s, ns);
        }
        let (s, ns) = self.random_time();
        set_mtime(&self.src, s, ns);
    }

    fn backup(&mut self) {
        let record = self.repo.backup(&[self.src.as_path()], &[]);
        let id = record["id"].as_str().unwrap();
        self.snaps
            .push(Snap::of(id, &self.src, &manifest(&self.src)));
    }

    /// Changes the source between the two backups: contents, types,
    /// hard links broken and made, symlinks, modes, new entries.
    fn change_source(&mut self) -> Vec<String> {
        let mut done = Vec::new();
        for _ in 0..4 + self.below(5) {
            let (all, dirs) = World::entries(&self.src);
            let files = World::files_in(&self.src);
            let any = |rng: &mut Rng, v: &[PathBuf]| (!v.is_empty()).then(|| pick(rng, v).clone());
            match self.below(8) {
                0 => {
                    if let Some(f) = any(&mut self.rng, &files) {
                        let len = if self.chance(2) {
                            fs::metadata(self.src.join(&f)).unwrap().len() as usize
                        } else {
                            self.file_len()
                        };
                        let seed = self.rng.next_u64();
                        fs::write(self.src.join(&f), random_bytes(seed, len)).unwrap();
                        done.push(format!("rewrite {f:?} ({len} bytes)"));
                    }
                }
                1 => {
                    // A hard link broken: the same content on an inode of
                    // its own, with a mode of its own.
                    let linked: Vec<PathBuf> = (files.iter())
                        .filter(|f| fs::metadata(self.src.join(f)).unwrap().nlink() > 1)
                        .cloned()
                        .collect();
                    if let Some(f) = any(&mut self.rng, &linked) {
                        let path = self.src.join(&f);
                        let tmp = self.src.join("copy.tmp");
                        fs::copy(&path, &tmp).unwrap();
                        chmod(&tmp, 0o604);
                        fs::rename(&tmp, &path).unwrap();
                        done.push(format!("unlink {f:?}, same content"));
                    }
                }
                2 => {
                    // Two files made one: hard-linked.
                    if files.len() > 2 {
                        let a = any(&mut self.rng, &files).unwrap();
                        let b = any(&mut self.rng, &files).unwrap();
                        if a != b {
                            fs::remove_file(self.src.join(&b)).unwrap();
                            fs::hard_link(self.src.join(&a), self.src.join(&b)).unwrap();
                            done.push(format!("link {b:?} to {a:?}"));
                        }
                    }
                }
                3 => {
                    // A file becomes a folder, or a folder a file.
                    if self.chance(2) {
                        if let Some(f) = any(&mut self.rng, &files) {
                            fs::remove_file(self.src.join(&f)).unwrap();
                            fs::create_dir(self.src.join(&f)).unwrap();
                            self.new_file(&f);
                            done.push(format!("file {f:?} now a folder"));
                        }
                    } else if let Some(d) = any(&mut self.rng, &dirs[1..]) {
                        fs::remove_dir_all(self.src.join(&d)).unwrap();
                        let seed = self.rng.next_u64();
                        write_random(&self.src.join(&d), seed, 3000);
                        done.push(format!("folder {d:?} now a file"));
                    }
                }
                4 => {
                    if let Some(e) = any(&mut self.rng, &all) {
                        remove_entry(&self.src.join(&e));
                        done.push(format!("remove {e:?}"));
                    }
                }
                5 => {
                    let dir = pick(&mut self.rng, &dirs).clone();
                    let f = self.new_file(&dir);
                    done.push(format!("add {f:?}"));
                }
                6 => {
                    let dir = pick(&mut self.rng, &dirs).clone();
                    if self.chance(2) {
                        self.new_symlink(&dir, &files);
                        done.push(format!("add a symlink in {dir:?}"));
                    } else {
                        let d = dir.join(self.name("d"));
                        fs::create_dir(self.src.join(&d)).unwrap();
                        self.new_file(&d);
                        done.push(format!("add folder {d:?}"));
                    }
                }
                _ => {
                    if let Some(e) = any(&mut self.rng, &all) {
                        let path = self.src.join(&e);
                        if !fs::symlink_metadata(&path).unwrap().is_symlink() {
                            chmod(&path, 0o750);
                            done.push(format!("chmod {e:?}"));
                        }
                    }
                }
            }
        }
        let (s, ns) = self.random_time();
        set_mtime(&self.src, s, ns);
        done
    }

    /// The canary: files and folders, among them copies of the source's
    /// entries (a restore that looked through a symlink would find them
    /// identical), and the symlinks the targets may hold to it.
    fn build_canary(&mut self) {
        fs::create_dir(&self.canary).unwrap();
        write(&self.canary.join("c.txt"), "canary\n");
        let (_, dirs) = World::entries(&self.src);
        let dir = pick(&mut self.rng, &dirs).clone();
        copy_files(&self.src.join(&dir), &self.canary.join("same"));
        let files = World::files_in(&self.src);
        if files.is_empty() {
            write(&self.canary.join("same.bin"), "no file to copy");
        } else {
            let f = pick(&mut self.rng, &files);
            fs::copy(self.src.join(f), self.canary.join("same.bin")).unwrap();
        }
        for rel in list_paths(&self.canary) {
            let path = self.canary.join(&rel);
            chmod(&path, if path.is_dir() { 0o750 } else { 0o640 });
            set_mtime(&path, 1_300_000_000, 7);
        }
        set_mtime(&self.canary, 1_300_000_000, 7);
        self.canary_links = vec![
            self.canary.clone(),
            self.canary.join("same"),
            self.canary.join("same.bin"),
            self.canary.join("c.txt"),
        ];
        self.canary_was = manifest(&self.canary);
    }

    #[track_caller]
    fn assert_canary(&self, what: &str) {
        assert_manifests_eq(
            &self.canary_was,
            &manifest(&self.canary),
            &format!(
                "seed {} round {}: the canary after {what}",
                self.seed, self.round
            ),
        );
    }

    /// A symlink leading out of the target, to the canary: absolute, or
    /// relative from `rel`'s folder.
    fn canary_link(&mut self, rel: &Path) -> PathBuf {
        let to = pick(&mut self.rng, &self.canary_links).clone();
        if self.chance(2) {
            return to;
        }
        // From target/rel's folder up to the folder the target is in.
        let mut up = PathBuf::new();
        for _ in 0..rel.components().count() {
            up.push("..");
        }
        up.join(to.strip_prefix(self.repo.dir.path()).unwrap())
    }

    /// Puts an entry of a random kind at `rel`, not `not` (the kind the
    /// snapshot has there).
    fn put_other(&mut self, target: &Path, rel: &Path, not: &Kind) -> String {
        make_room(target, rel);
        let path = target.join(rel);
        loop {
            match self.below(5) {
                0 if *not != Kind::Dir => {
                    fs::create_dir(&path).unwrap();
                    if self.chance(2) {
                        return "an empty folder".into();
                    }
                    write(&path.join("x-inside"), "in the way");
                    if self.chance(2) {
                        fs::create_dir(path.join("x-sub")).unwrap();
                        symlink(&self.canary, path.join("x-sub/out")).unwrap();
                    }
                    return "a non-empty folder".into();
                }
                1 => {
                    let len = self.below(5000) as usize;
                    let seed = self.rng.next_u64();
                    write_random(&path, seed, len);
                    return "a file".into();
                }
                2 if *not != Kind::Fifo => {
                    mkfifo(&path, 0o600);
                    return "a fifo".into();
                }
                3 => {
                    let to = self.canary_link(rel);
                    symlink(&to, &path).unwrap();
                    return format!("a symlink to {to:?}");
                }
                4 => {
                    symlink("nowhere", &path).unwrap();
                    return "a dangling symlink".into();
                }
                _ => {}
            }
        }
    }

    /// One random change to the target, relative to `spots` (each entry
    /// of the view restored, with the kind the snapshot has there);
    /// returns what it did.
    fn mutate(&mut self, target: &Path, spots: &[(PathBuf, Kind)]) -> String {
        let (all, dirs) = World::entries(target);
        let files = World::files_in(target);
        let choice = self.below(10);
        // The spots holding a folder in the snapshot, or not.
        let of_kind = |dir: bool| -> Vec<&(PathBuf, Kind)> {
            (spots.iter())
                .filter(|(_, kind)| (*kind == Kind::Dir) == dir)
                .collect()
        };
        match choice {
            0 if !all.is_empty() => {
                let e = pick(&mut self.rng, &all).clone();
                remove_entry(&target.join(&e));
                format!("remove {e:?}")
            }
            1 | 2 if !spots.is_empty() => {
                let (rel, kind) = pick(&mut self.rng, spots).clone();
                let what = self.put_other(target, &rel, &kind);
                format!("{rel:?} is {what}")
            }
            3 if !files.is_empty() => {
                // Other content of the same size and time.
                let f = pick(&mut self.rng, &files).clone();
                let p = target.join(&f);
                let md = fs::symlink_metadata(&p).unwrap();
                if md.len() == 0 {
                    return format!("{f:?} is empty: left alone");
                }
                let mut data = fs::read(&p).unwrap();
                let at = self.below(data.len() as u64) as usize;
                data[at] ^= 0x5a;
                fs::write(&p, data).unwrap();
                set_mtime(&p, md.mtime(), md.mtime_nsec());
                format!("{f:?}: byte {at} changed, same size and time")
            }
            4 | 5 => {
                // An extra entry, at any depth.
                let dir = pick(&mut self.rng, &dirs).clone();
                let rel = dir.join(self.name("x"));
                let p = target.join(&rel);
                match self.below(5) {
                    0 => {
                        let seed = self.rng.next_u64();
                        write_random(&p.join("y/z"), seed, 100);
                    }
                    1 => mkfifo(&p, 0o644),
                    2 => {
                        let to = self.canary_link(&rel);
                        symlink(to, &p).unwrap();
                    }
                    3 if !files.is_empty() => {
                        let f = pick(&mut self.rng, &files);
                        fs::hard_link(target.join(f), &p).unwrap();
                    }
                    _ => write(&p, "extra"),
                }
                format!("extra {rel:?}")
            }
            6 => {
                // A symlink out of the target where the snapshot has a
                // folder, or something else.
                let at = of_kind(self.chance(2));
                if at.is_empty() {
                    return "no spot for a symlink out".into();
                }
                let rel = pick(&mut self.rng, &at).0.clone();
                make_room(target, &rel);
                let to = self.canary_link(&rel);
                symlink(&to, target.join(&rel)).unwrap();
                format!("{rel:?} is a symlink to {to:?}")
            }
            7 if !all.is_empty() => {
                let e = pick(&mut self.rng, &all).clone();
                let p = target.join(&e);
                if self.chance(2) {
                    lchown(&p, 4242, 4343);
                    return format!("chown {e:?}");
                }
                if fs::symlink_metadata(&p).unwrap().is_symlink() {
                    return format!("{e:?} is a symlink: no chmod");
                }
                let mode = *pick(&mut self.rng, &[0o444, 0o555, 0o400, 0o000, 0o777, 0o4755]);
                chmod(&p, mode);
                format!("chmod {mode:o} {e:?}")
            }
            8 if !all.is_empty() => {
                let e = pick(&mut self.rng, &all).clone();
                let (s, ns) = self.random_time();
                set_mtime(&target.join(&e), s, ns);
                format!("touch {e:?}")
            }
            9 if !files.is_empty() => {
                // Where the snapshot has a file, a hard link to another.
                let at: Vec<&PathBuf> = (spots.iter())
                    .filter(|(_, kind)| matches!(kind, Kind::File { .. }))
                    .map(|(rel, _)| rel)
                    .collect();
                if at.is_empty() {
                    return "no file to link".into();
                }
                let f = pick(&mut self.rng, &files).clone();
                let to = pick(&mut self.rng, &at).to_path_buf();
                if f.starts_with(&to) || to.starts_with(&f) {
                    return format!("{f:?} not linked where it is");
                }
                make_room(target, &to);
                fs::hard_link(target.join(&f), target.join(&to)).unwrap();
                format!("{to:?} hard-linked to {f:?}")
            }
            _ => "nothing".into(),
        }
    }

    fn spec(&mut self, snap: usize) -> Spec {
        let base = PathBuf::from(abs(&self.src));
        let nodes = &self.snaps[snap].nodes;
        let under: Vec<(&PathBuf, bool)> = (nodes.iter())
            .filter(|(p, _)| p.starts_with(&base))
            .map(|(p, n)| (p, n.kind == Kind::Dir))
            .collect();
        match below(&mut self.rng, 6) {
            0..=2 => Spec::Whole,
            3 | 4 => {
                let dirs: Vec<&PathBuf> = under.iter().filter(|u| u.1).map(|u| u.0).collect();
                Spec::Dir(pick(&mut self.rng, &dirs).to_path_buf())
            }
            _ => {
                let others: Vec<&PathBuf> = under.iter().filter(|u| !u.1).map(|u| u.0).collect();
                if others.is_empty() {
                    return Spec::Whole;
                }
                Spec::One(pick(&mut self.rng, &others).to_path_buf())
            }
        }
    }

    /// A pattern naming something in what `view` restores, or (less
    /// often) elsewhere in the snapshot, or nothing.
    fn pattern(&mut self, snap: usize, view: &View) -> Pat {
        let base = PathBuf::from(abs(&self.src));
        let nodes = &self.snaps[snap].nodes;
        let mut paths: Vec<&PathBuf> = view.entries.iter().map(|(_, p)| p).collect();
        if paths.is_empty() || below(&mut self.rng, 6) == 0 {
            paths = (nodes.keys())
                .filter(|p| p.starts_with(&base) && **p != base)
                .collect();
        }
        let path = pick(&mut self.rng, &paths).to_path_buf();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        match self.below(12) {
            0..=2 => Pat::Name(name),
            // Of a file, it matches nothing.
            3 => Pat::DirName(name),
            4 | 5 => Pat::Ext(pick(&mut self.rng, &["txt", "bin", "dat"]).to_string()),
            6 | 7 => Pat::Abs(path.to_str().unwrap().to_string()),
            8..=10 => match path.parent().and_then(|p| p.file_name()) {
                Some(parent) => Pat::Tail(parent.to_str().unwrap().to_string(), name),
                None => Pat::Name(name),
            },
            _ => Pat::Name(self.name("none")),
        }
    }

    /// Prepares `target` relative to `view` of snapshot `snap`; returns
    /// what it did.
    fn prepare(&mut self, target: &Path, snap: usize, spec: &Spec, view: &View) -> String {
        let mut done = Vec::new();
        match self.below(8) {
            0 => return "no target".into(),
            1 => {
                fs::create_dir(target).unwrap();
                done.push("empty".to_string());
            }
            _ => {
                // A restore of either snapshot, of the same part of it if
                // that snapshot has it, else whole.
                let other = self.below(self.snaps.len() as u64) as usize;
                let has = match spec {
                    Spec::Whole => true,
                    Spec::Dir(p) => self.snaps[other]
                        .nodes
                        .get(p)
                        .is_some_and(|n| n.kind == Kind::Dir),
                    Spec::One(p) => self.snaps[other]
                        .nodes
                        .get(p)
                        .is_some_and(|n| n.kind != Kind::Dir),
                };
                let arg = if has {
                    spec.arg(&self.snaps[other].id)
                } else {
                    self.snaps[other].id.clone()
                };
                self.repo.restore(&arg, target, &[]);
                done.push(format!("restored {}", short(&arg)));
            }
        }
        let spots: Vec<(PathBuf, Kind)> = (view.entries.iter())
            .map(|(rel, path)| (rel.clone(), self.snaps[snap].nodes[path].kind.clone()))
            .collect();
        for _ in 0..self.below(12) {
            let what = self.mutate(target, &spots);
            done.push(what);
        }
        done.join("; ")
    }

    /// One round: a target prepared, perhaps restored with `--dry-run`
    /// first, restored, and checked.
    fn round(&mut self) {
        self.round += 1;
        let trial = self.plan();
        let dry = self.chance(3).then(|| self.dry_run(&trial));
        self.restore(&trial, dry);
        fs::remove_dir_all(&trial.target).unwrap();
    }

    /// Picks a restore, prepares its target, and asks the model what
    /// the restore makes of it.
    fn plan(&mut self) -> Trial {
        let snap = self.below(self.snaps.len() as u64) as usize;
        let spec = self.spec(snap);
        let view = view(&self.snaps[snap], &spec);
        let policy = *pick(
            &mut self.rng,
            &[Policy::Merge, Policy::Mirror, Policy::SkipExisting],
        );
        let mut includes = Vec::new();
        let mut excludes = Vec::new();
        for patterns in [&mut includes, &mut excludes] {
            if self.chance(3) {
                for _ in 0..1 + self.below(2) {
                    patterns.push(self.pattern(snap, &view));
                }
            }
        }
        let target = self.repo.dir.path().join(format!("target-{}", self.round));
        let prepared = self.prepare(&target, snap, &spec, &view);
        let mut args = vec![
            "restore".to_string(),
            spec.arg(&self.snaps[snap].id),
            "--target".to_string(),
            target.to_str().unwrap().to_string(),
            "--policy".to_string(),
            policy.arg().to_string(),
        ];
        for p in &includes {
            args.extend(["--include".to_string(), p.text()]);
        }
        for p in &excludes {
            args.extend(["--exclude".to_string(), p.text()]);
        }
        let batch = self.chance(4).then(|| 1 + self.below(4));
        self.log(&format!("target: {prepared}"));
        self.log(&format!(
            "{}{}",
            short(&args[1..].join(" ")),
            batch.map_or(String::new(), |b| format!(", batches of {b}")),
        ));
        let before = scan(&target);
        let patterns = (&includes[..], &excludes[..]);
        let model = simulate(before.as_ref(), &self.snaps[snap], &view, patterns, policy);
        Trial {
            args,
            batch,
            target,
            before,
            model,
            context: format!("seed {} round {}", self.seed, self.round),
        }
    }

    /// Runs the restore of `trial`, with `extra` arguments.
    fn run_trial(&self, trial: &Trial, extra: &[&str]) -> Out {
        let mut c = self.repo.cmd(&[]);
        c.args(&trial.args).args(extra);
        if let Some(b) = trial.batch {
            c.env("CAIRN_TEST_RESTORE_BATCH", b.to_string());
        }
        run(&mut c, None)
    }

    /// Runs the restore with `--dry-run`: it changes nothing, exits as
    /// the restore will, and lists what a mirror removes. Returns its
    /// counts and that list.
    fn dry_run(&self, trial: &Trial) -> (Option<[u64; 6]>, Vec<String>) {
        let context = &trial.context;
        self.log("dry run");
        let out = self.run_trial(trial, &["--dry-run"]);
        self.assert_canary("a dry run");
        let code = trial.model.exit_code();
        assert_eq!(out.code, code, "{context}: the dry run's exit code\n{out}");
        let after = scan(&trial.target);
        assert!(
            after == trial.before,
            "{context}: the dry run changed the target: {:?}\n{out}",
            (trial.before.as_ref().zip(after.as_ref())).map(|(b, a)| scan_diff(b, a))
        );
        let listed: Vec<String> = (out.stdout.lines())
            .filter_map(|l| l.strip_prefix("would remove "))
            .map(str::to_string)
            .collect();
        let mut want: Vec<String> = (trial.model.removed.iter())
            .map(|r| trial.target.join(r).display().to_string())
            .collect();
        want.sort();
        let mut got = listed.clone();
        got.sort();
        assert_eq!(got, want, "{context}: what the dry run would remove\n{out}");
        (counts(&out), listed)
    }

    /// Runs the restore and checks the target against the model, and
    /// against what a dry run before it said.
    fn restore(&self, trial: &Trial, dry: Option<(Option<[u64; 6]>, Vec<String>)>) {
        let context = &trial.context;
        let out = self.run_trial(trial, &[]);
        let summary = out.stdout.lines().last().unwrap_or("");
        self.log(&format!("exit code {}: {summary}", out.code));
        self.assert_canary("the restore");
        let after = scan(&trial.target).unwrap_or_default();
        let diffs = differences(&trial.model, &after);
        assert!(
            diffs.is_empty(),
            "{context}: {} difference(s) from the model:\n{}\n{out}",
            diffs.len(),
            diffs.join("\n")
        );
        let code = trial.model.exit_code();
        assert_eq!(out.code, code, "{context}: the exit code\n{out}");
        assert_eq!(
            restore_leftovers(&trial.target),
            Vec::<PathBuf>::new(),
            "{context}: temporary files left\n{out}"
        );
        let Some(counts) = counts(&out) else {
            panic!("{context}: no summary line\n{out}");
        };
        let removed = trial.model.removed.len() as u64;
        assert_eq!(counts[5], removed, "{context}: removed\n{out}");
        if let Some((dry_counts, listed)) = dry {
            assert_eq!(
                dry_counts,
                Some(counts),
                "{context}: the dry run's counts\n{out}"
            );
            for p in listed {
                assert!(
                    fs::symlink_metadata(&p).is_err(),
                    "{context}: {p} would be removed, is not\n{out}"
                );
            }
        }
    }
}

/// A restore to run: its arguments and what the model expects of it.
struct Trial {
    /// `restore SNAP --target … --policy …` and patterns.
    args: Vec<String>,
    /// The entries a batch holds (`CAIRN_TEST_RESTORE_BATCH`), if set.
    batch: Option<u64>,
    target: PathBuf,
    before: Option<Scan>,
    model: Model,
    /// Seed and round, for failures.
    context: String,
}

/// `text` with each snapshot id cut to 8 digits.
fn short(text: &str) -> String {
    (text.split(' '))
        .map(|w| match w.split_once(':') {
            Some((id, rest)) if id.len() == 64 => format!("{}:{rest}", &id[..8]),
            None if w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()) => w[..8].to_string(),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn play(seed: u64) {
    // Owners are changed, and read-only folders written into: without
    // root the test would check nothing, so it fails, saying so.
    assert!(
        is_root(),
        "restores over random targets change owners: run the tests as root"
    );
    let rounds = std::env::var("CAIRN_RESTORE_TARGET_ROUNDS")
        .ok()
        .map(|s| s.parse().expect("CAIRN_RESTORE_TARGET_ROUNDS is a number"))
        .unwrap_or(ROUNDS);
    eprintln!("seed {seed}, {rounds} rounds");
    let mut world = World::new(seed);
    for _ in 0..rounds {
        world.round();
    }
}

fn seeds_or(default: u64) -> Vec<u64> {
    match std::env::var("CAIRN_RESTORE_TARGET_SEEDS") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("CAIRN_RESTORE_TARGET_SEEDS: numbers")
            })
            .collect(),
        Err(_) => vec![default],
    }
}

#[test]
fn restores_over_random_targets_keep_each_policys_promises_1() {
    for seed in seeds_or(1) {
        play(seed);
    }
}

#[test]
fn restores_over_random_targets_keep_each_policys_promises_2() {
    play(2);
}

#[test]
fn restores_over_random_targets_keep_each_policys_promises_3() {
    play(3);
}

/// Without `/proc` (a rescue system, a minimal container), restore
/// cannot name the target's entries through its descriptor, so a folder
/// swapped for a symlink while it runs would lead its writes elsewhere:
/// it restores all the same, and says so. Until December 2026 it said
/// nothing.
#[test]
fn a_restore_without_proc_says_the_target_is_named_by_paths() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("d/f"), "restored without /proc\n");
    repo.backup(&[&src], &[]);
    if !mount_namespace() {
        eprintln!("NOTICE: no private mount namespace (unshare -m): not tested");
        return;
    }
    let target = repo.scratch("target");
    let mut c = repo.cmd(&["restore", "latest", "--target"]);
    c.arg(&target);
    let mut hidden = std::process::Command::new("unshare");
    hidden.args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs none /proc && exec \"$@\"",
        "sh",
    ]);
    let out = run(&mut wrapping(hidden, &c), None);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("/proc is not mounted"), "{out}");
    assert_eq!(
        fs::read_to_string(restored(&target, &src).join("d/f")).unwrap(),
        "restored without /proc\n"
    );
    // With /proc, no such warning.
    let target = repo.scratch("target2");
    let out = repo.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stderr.contains("/proc"), "{out}");
}
