//! A repository's life at random. Two sources change in many ways between
//! backups of every kind; snapshots are forgotten by id and by policy; gc
//! runs with different thresholds; the index is rebuilt; crashes at every
//! crash point and `kill -9` at arbitrary moments land in the middle of
//! all of it; restores go into fresh folders and, mirrored, over older
//! restores and over restores killed halfway.
//!
//! A model keeps what each snapshot held, its kind and its parent. After
//! every step the repository must list exactly the model's snapshots (a
//! crashed command may or may not have finished: what it left is read
//! back and must make sense); at checkpoints, and at the end, the
//! repository verifies reading every byte and every snapshot restores
//! identically. At the end, forgetting everything and a gc leave no pack,
//! no index table and nothing for gc to do, and the emptied repository
//! takes a new backup.
//!
//! It runs on a local repository and on S3 (the test server). Each seed
//! runs as its own test. `CAIRN_LIFECYCLE_SEEDS=7,8,9` makes the first
//! local test and the S3 test run those seeds instead, and
//! `CAIRN_LIFECYCLE_STEPS` sets the steps per seed; each step is printed
//! to the test's output, so a failure says how it got there.

mod common;
mod s3support;
mod support_maint;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use common::*;
use s3support::{pending_uploads, S3Repo, S3Server};
use serde_json::Value;
use support_maint::Saved;

/// Steps per seed unless `CAIRN_LIFECYCLE_STEPS` says otherwise.
const STEPS: usize = 120;
/// … on S3, where each command takes longer.
const STEPS_S3: usize = 60;

/// The crash points (tests/crash.rs checks them against src/) each
/// command may reach.
const BACKUP_POINTS: &[&str] = &[
    "backend-before-rename",
    "pack-sink-before-rename",
    "after-pack-write",
    "after-index-write",
    "after-index-part-write",
    "before-snapshot-write",
    "after-compact-write",
];
const FORGET_POINTS: &[&str] = &["backend-before-rename", "forget-after-remove"];
const GC_POINTS: &[&str] = &[
    "backend-before-rename",
    "gc-after-repack-write",
    "gc-after-index-write",
    "gc-after-index-remove",
    "gc-after-pack-remove",
];
const REPAIR_POINTS: &[&str] = &[
    "backend-before-rename",
    "after-index-write",
    "gc-after-index-write",
    "gc-after-index-remove",
];
const RESTORE_POINTS: &[&str] = &["backend-before-rename", "restore-after-place"];

/// The hosts the sources are backed up as (`--host`), one each.
const HOSTS: [&str; 2] = ["alpha", "beta"];

/// The simulated clock starts here (2024-01-01T00:00:00Z).
const EPOCH: i64 = 1_704_067_200;

/// A snapshot the model knows.
#[derive(Clone)]
struct Snap {
    saved: Saved,
    time: i64,
    kind: String,
    parent: Option<String>,
    /// Which source (0 or 1).
    source: usize,
}

/// A backup about to run.
struct PlannedBackup {
    source: usize,
    kind: &'static str,
    time: i64,
    parent: Option<String>,
    args: Vec<String>,
}

/// How a command ended.
#[derive(Debug, PartialEq)]
enum Ended {
    Done,
    /// Stopped at a crash point or killed: it may have finished or not.
    Cut,
}

/// Where the repository lives.
enum Store {
    Local(Repo),
    S3 { repo: S3Repo, server: S3Server },
}

impl Store {
    /// A new repository with small chunks and 1 MiB packs, so a few MiB
    /// of data make several packs.
    fn new(s3: bool) -> Store {
        let mut init = vec!["init"];
        init.extend_from_slice(FAST_INIT);
        init.extend_from_slice(&["--pack-size", "1M"]);
        if !s3 {
            let mut args = FAST_INIT.to_vec();
            args.extend_from_slice(&["--pack-size", "1M"]);
            return Store::Local(Repo::with_init_args(&args));
        }
        let server = S3Server::start();
        let repo = S3Repo::new(&server, "lifecycle");
        run(&mut repo.cmd(&init), None).success();
        Store::S3 { repo, server }
    }

    /// `cairn -r REPO ARGS` with the password, in UTC. On S3, `host`
    /// picks one of two metadata caches, as two machines sharing the
    /// bucket each keep their own: each must notice what the other did.
    fn cmd_on(&self, host: usize, args: &[&str]) -> Command {
        let mut c = match self {
            Store::Local(repo) => repo.cmd(args),
            Store::S3 { repo, .. } => {
                let mut c = repo.cmd(args);
                c.env("CAIRN_CACHE_DIR", repo.cache_dir().join(HOSTS[host]));
                c
            }
        };
        c.env("TZ", "UTC");
        c
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_on(0, args)
    }

    /// A folder for sources and restores, removed with the store.
    fn dir(&self) -> &Path {
        match self {
            Store::Local(repo) => repo.dir.path(),
            Store::S3 { repo, .. } => repo.scratch.path(),
        }
    }

    /// The repository's files under `folder` (`packs`, `index`, …), by
    /// name, temporary files left out.
    fn files(&self, folder: &str) -> Vec<String> {
        let paths = match self {
            Store::Local(repo) => list_paths(&repo.path.join(folder)),
            Store::S3 { repo, server } => {
                server.objects(&repo.bucket, &format!("{}/{folder}", repo.prefix))
            }
        };
        paths
            .iter()
            .filter(|p| p.is_file())
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// Incomplete multipart uploads (always none on a local store).
    fn uploads(&self) -> usize {
        match self {
            Store::Local(_) => 0,
            Store::S3 { repo, server } => pending_uploads(&server.data(), &repo.bucket).len(),
        }
    }
}

struct Life {
    store: Store,
    rng: Rng,
    sources: [PathBuf; 2],
    live: Vec<Snap>,
    clock: i64,
    step: usize,
    scratch: usize,
    /// Content already in some file, for copies and shifted copies.
    seen: Vec<Vec<u8>>,
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

fn below(rng: &mut Rng, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        rng.next_u64() % n
    }
}

impl Life {
    fn new(seed: u64, s3: bool) -> Life {
        let store = Store::new(s3);
        let sources = [store.dir().join("src-a"), store.dir().join("src-b")];
        let mut life = Life {
            store,
            rng: Rng::new(seed),
            sources,
            live: Vec::new(),
            clock: EPOCH,
            step: 0,
            scratch: 0,
            seen: Vec::new(),
        };
        for s in 0..2 {
            fs::create_dir_all(&life.sources[s]).unwrap();
            for _ in 0..6 {
                life.add_file(s);
            }
        }
        life
    }

    fn log(&self, what: &str) {
        eprintln!("step {:3}: {what}", self.step);
    }

    fn fresh(&mut self, name: &str) -> PathBuf {
        self.scratch += 1;
        self.store.dir().join(format!("{name}-{}", self.scratch))
    }

    // ------------------------------------------------------------ source

    /// Every entry under source `s`, relative, sorted (the root excluded).
    fn entries(&self, s: usize) -> Vec<PathBuf> {
        let root = &self.sources[s];
        let mut out: Vec<PathBuf> = manifest(root).into_keys().collect();
        out.retain(|p| !p.as_os_str().is_empty());
        out
    }

    fn files(&self, s: usize) -> Vec<PathBuf> {
        let root = &self.sources[s];
        self.entries(s)
            .into_iter()
            .filter(|p| fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.file_type().is_file()))
            .collect()
    }

    fn dirs(&self, s: usize) -> Vec<PathBuf> {
        let root = &self.sources[s];
        let mut out = vec![PathBuf::new()];
        out.extend(
            self.entries(s).into_iter().filter(|p| {
                fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.file_type().is_dir())
            }),
        );
        out
    }

    fn new_name(&mut self, s: usize) -> PathBuf {
        let dirs = self.dirs(s);
        let dir = dirs[below(&mut self.rng, dirs.len() as u64) as usize].clone();
        let n = self.rng.next_u64() % 100_000;
        dir.join(format!("e{n}"))
    }

    /// Content for a new or rewritten file: fresh random bytes of a
    /// random size (empty, tiny, one chunk, several), a copy of earlier
    /// content, or earlier content shifted by a few bytes.
    fn content(&mut self) -> Vec<u8> {
        let r = below(&mut self.rng, 10);
        if r < 3 && !self.seen.is_empty() {
            let i = below(&mut self.rng, self.seen.len() as u64) as usize;
            let mut v = self.seen[i].clone();
            if r > 0 {
                let mut head = vec![0u8; 1 + below(&mut self.rng, 300) as usize];
                self.rng.fill(&mut head);
                head.extend_from_slice(&v);
                v = head;
            }
            return v;
        }
        let len = match below(&mut self.rng, 5) {
            0 => below(&mut self.rng, 3) as usize,
            1 => below(&mut self.rng, 5_000) as usize,
            2 => 10_000 + below(&mut self.rng, 200_000) as usize,
            _ => 200_000 + below(&mut self.rng, 1_300_000) as usize,
        };
        let mut v = vec![0u8; len];
        self.rng.fill(&mut v);
        if below(&mut self.rng, 3) == 0 {
            // Partly compressible.
            for b in v.iter_mut().step_by(3) {
                *b = b'a';
            }
        }
        if len > 1000 && self.seen.len() < 24 {
            self.seen.push(v.clone());
        }
        v
    }

    fn add_file(&mut self, s: usize) -> String {
        let rel = self.new_name(s);
        let data = self.content();
        let path = self.sources[s].join(&rel);
        if fs::symlink_metadata(&path).is_ok() {
            return format!("(name {} taken)", rel.display());
        }
        write(&path, &data);
        format!("add {} ({} bytes)", rel.display(), data.len())
    }

    /// One random change to source `s`; returns what it did.
    fn mutate(&mut self, s: usize) -> String {
        let root = self.sources[s].clone();
        let files = self.files(s);
        let entries = self.entries(s);
        let choice = below(&mut self.rng, 12);
        let any_file = |rng: &mut Rng| -> Option<PathBuf> {
            (!files.is_empty()).then(|| files[below(rng, files.len() as u64) as usize].clone())
        };
        match choice {
            0 | 1 => self.add_file(s),
            2 => {
                let Some(f) = any_file(&mut self.rng) else {
                    return self.add_file(s);
                };
                let data = self.content();
                write(&root.join(&f), &data);
                format!("rewrite {} ({} bytes)", f.display(), data.len())
            }
            3 => {
                // Same size, a few bytes changed in the middle.
                let Some(f) = any_file(&mut self.rng) else {
                    return self.add_file(s);
                };
                let mut data = fs::read(root.join(&f)).unwrap();
                if data.is_empty() {
                    data.push(1);
                } else {
                    let at = below(&mut self.rng, data.len() as u64) as usize;
                    let end = (at + 64).min(data.len());
                    for b in &mut data[at..end] {
                        *b ^= 0x5a;
                    }
                }
                write(&root.join(&f), &data);
                format!("patch {}", f.display())
            }
            4 => {
                let Some(f) = any_file(&mut self.rng) else {
                    return self.add_file(s);
                };
                let mut data = fs::read(root.join(&f)).unwrap();
                let mut more = vec![0u8; below(&mut self.rng, 300_000) as usize];
                self.rng.fill(&mut more);
                data.extend_from_slice(&more);
                write(&root.join(&f), &data);
                format!("append to {}", f.display())
            }
            5 => {
                let Some(f) = any_file(&mut self.rng) else {
                    return self.add_file(s);
                };
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(root.join(&f))
                    .unwrap();
                let len = file.metadata().unwrap().len();
                file.set_len(below(&mut self.rng, len + 1)).unwrap();
                format!("truncate {}", f.display())
            }
            6 => {
                let Some(f) = any_file(&mut self.rng) else {
                    return self.add_file(s);
                };
                fs::remove_file(root.join(&f)).unwrap();
                format!("remove {}", f.display())
            }
            7 => {
                let rel = self.new_name(s);
                fs::create_dir(root.join(&rel)).unwrap_or(());
                let mut said = format!("mkdir {}", rel.display());
                for _ in 0..below(&mut self.rng, 4) {
                    let f = rel.join(format!("f{}", self.rng.next_u64() % 1000));
                    let data = self.content();
                    write(&root.join(&f), &data);
                    said += &format!(", {} ({} bytes)", f.display(), data.len());
                }
                said
            }
            8 => {
                // Remove a whole folder, or replace it with a file.
                let dirs: Vec<PathBuf> = self.dirs(s).into_iter().skip(1).collect();
                if dirs.is_empty() {
                    return self.add_file(s);
                }
                let d = dirs[below(&mut self.rng, dirs.len() as u64) as usize].clone();
                fs::remove_dir_all(root.join(&d)).unwrap();
                if below(&mut self.rng, 2) == 0 {
                    let data = self.content();
                    write(&root.join(&d), &data);
                    return format!("replace folder {} with a file", d.display());
                }
                format!("remove folder {}", d.display())
            }
            9 => {
                let Some(f) = any_file(&mut self.rng) else {
                    return self.add_file(s);
                };
                let to = self.new_name(s);
                if fs::symlink_metadata(root.join(&to)).is_ok() {
                    return "(rename target taken)".into();
                }
                fs::rename(root.join(&f), root.join(&to)).unwrap();
                format!("rename {} to {}", f.display(), to.display())
            }
            10 => {
                let Some(e) = (!entries.is_empty())
                    .then(|| entries[below(&mut self.rng, entries.len() as u64) as usize].clone())
                else {
                    return self.add_file(s);
                };
                let path = root.join(&e);
                let md = fs::symlink_metadata(&path).unwrap();
                if md.file_type().is_symlink() {
                    return "(chmod of a symlink skipped)".into();
                }
                let mode = if md.is_dir() {
                    pick(&mut self.rng, &[0o755, 0o700, 0o750])
                } else {
                    pick(&mut self.rng, &[0o644, 0o600, 0o640, 0o755])
                };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
                format!("chmod {mode:o} {}", e.display())
            }
            _ => {
                // A symlink or a hard link.
                let to = self.new_name(s);
                if fs::symlink_metadata(root.join(&to)).is_ok() {
                    return "(link name taken)".into();
                }
                match any_file(&mut self.rng) {
                    Some(f) if below(&mut self.rng, 2) == 0 => {
                        fs::hard_link(root.join(&f), root.join(&to)).unwrap();
                        format!("hard link {} to {}", to.display(), f.display())
                    }
                    _ => {
                        let target = format!("../t{}", self.rng.next_u64() % 100);
                        symlink(&target, root.join(&to)).unwrap();
                        format!("symlink {} -> {target}", to.display())
                    }
                }
            }
        }
    }

    // ----------------------------------------------------------- running

    /// Runs `cairn ARGS` (TZ=UTC) and, at random, cuts it short: at one
    /// of `points`, or with SIGKILL after a random delay. A command not
    /// cut short must succeed.
    fn run(&mut self, args: &[&str], points: &[&str]) -> (Ended, Out) {
        let host = below(&mut self.rng, 2) as usize;
        self.run_on(host, args, points)
    }

    /// [`Life::run`] as `host` (on S3, with its cache).
    fn run_on(&mut self, host: usize, args: &[&str], points: &[&str]) -> (Ended, Out) {
        let mut cmd = self.store.cmd_on(host, args);
        let how = if points.is_empty() {
            0
        } else {
            below(&mut self.rng, 3)
        };
        let (ended, out) = match how {
            1 => {
                let point = pick(&mut self.rng, points);
                self.log(&format!("  with CAIRN_CRASH_AT={point}"));
                cmd.env("CAIRN_CRASH_AT", point);
                let out = run(&mut cmd, None);
                if out.stderr.contains(&format!("crash point {point} reached")) {
                    return (Ended::Cut, out);
                }
                assert_eq!(out.code, 0, "{args:?} failed:\n{out}");
                (Ended::Done, out)
            }
            2 => {
                // Most commands here take 5 to 40 ms on a local store,
                // a few times that on S3.
                let span = match self.store {
                    Store::Local(_) => 25_000,
                    Store::S3 { .. } => 150_000,
                };
                let delay = Duration::from_micros(below(&mut self.rng, span));
                self.log(&format!("  killed after {delay:?}"));
                let mut child = cmd
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                std::thread::sleep(delay);
                let finished = child.try_wait().unwrap().is_some();
                if !finished {
                    child.kill().unwrap();
                }
                let output = child.wait_with_output().unwrap();
                let out = Out {
                    code: output.status.code().unwrap_or(-1),
                    stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                };
                if finished {
                    assert_eq!(out.code, 0, "{args:?} failed:\n{out}");
                    (Ended::Done, out)
                } else {
                    (Ended::Cut, out)
                }
            }
            _ => {
                let out = run(&mut cmd, None);
                assert_eq!(out.code, 0, "{args:?} failed:\n{out}");
                (Ended::Done, out)
            }
        };
        if ended == Ended::Cut {
            self.log("  cut short");
        }
        (ended, out)
    }

    /// The repository's snapshots by id, from `cairn snapshots --json`.
    fn listed(&self) -> HashMap<String, Value> {
        let out = run(&mut self.reader(&["snapshots", "--json"]), None).success();
        out.json()
            .as_array()
            .expect("snapshots --json is an array")
            .iter()
            .map(|v| (v["id"].as_str().unwrap().to_string(), v.clone()))
            .collect()
    }

    /// A command that changes nothing, as one host or the other by turns.
    fn reader(&self, args: &[&str]) -> Command {
        self.store.cmd_on(self.step % 2, args)
    }

    /// `verify --read-data` finds no error and no damage (warnings, such
    /// as a pack no index names, are allowed).
    #[track_caller]
    fn assert_verifies(&self) {
        let out = run(&mut self.reader(&["verify", "--read-data", "--json"]), None);
        assert_eq!(
            out.code, 0,
            "step {}: verify --read-data:\n{out}",
            self.step
        );
        let v = out.json();
        assert_eq!(v["errors"], Value::Array(vec![]), "{out}");
        assert_eq!(v["damaged"], Value::Array(vec![]), "{out}");
    }

    /// `saved` restores into a fresh folder exactly as it was backed up.
    #[track_caller]
    fn assert_restores(&self, saved: &Saved) {
        let target = tempfile::tempdir_in(self.store.dir()).unwrap();
        let mut c = self.reader(&["restore", &saved.id, "--target"]);
        c.arg(target.path());
        run(&mut c, None).success();
        let got = manifest(&restored(target.path(), &saved.src));
        assert_manifests_eq(
            &saved.manifest,
            &got,
            &format!("step {}: restore of {}", self.step, &saved.id[..8]),
        );
    }

    /// One of the model's snapshots, at random, if there is one.
    fn any_live(&mut self) -> Option<Snap> {
        (!self.live.is_empty())
            .then(|| self.live[below(&mut self.rng, self.live.len() as u64) as usize].clone())
    }

    /// The model's snapshots are exactly the repository's.
    #[track_caller]
    fn assert_listed(&self) {
        let listed: BTreeSet<String> = self.listed().into_keys().collect();
        let model: BTreeSet<String> = self.live.iter().map(|s| s.saved.id.clone()).collect();
        assert_eq!(listed, model, "step {}: listed vs model", self.step);
    }

    // ---------------------------------------------------------- commands

    fn time_arg(&self) -> String {
        DateTime::<Utc>::from_timestamp(self.clock, 0)
            .unwrap()
            .to_rfc3339()
    }

    /// The parent the model expects a backup of source `s` of `kind` to
    /// name: the newest of the set, or its newest full snapshot.
    fn expected_parent(&self, s: usize, kind: &str) -> Option<String> {
        let mut of_set: Vec<&Snap> = self.live.iter().filter(|x| x.source == s).collect();
        of_set.sort_by_key(|x| x.time);
        match kind {
            "full" => None,
            "incremental" => of_set.last().map(|x| x.saved.id.clone()),
            _ => of_set
                .iter()
                .rev()
                .find(|x| x.kind == "full")
                .map(|x| x.saved.id.clone()),
        }
    }

    /// Chooses a backup: source, kind and time; returns them with its
    /// arguments and the parent it must name.
    fn plan_backup(&mut self, s: usize) -> PlannedBackup {
        let kind = pick(
            &mut self.rng,
            &["incremental", "incremental", "differential", "full"],
        );
        self.clock += 3600 * (1 + below(&mut self.rng, 40) as i64);
        let time = self.time_arg();
        self.log(&format!("backup {kind} of source {s} at {time}"));
        let src = self.sources[s].to_str().unwrap().to_string();
        let args = [
            "backup", "--json", "--host", HOSTS[s], "--kind", kind, "--time", &time, &src,
        ]
        .map(str::to_string)
        .to_vec();
        PlannedBackup {
            source: s,
            kind,
            time: self.clock,
            parent: self.expected_parent(s, kind),
            args,
        }
    }

    fn backup(&mut self) {
        self.backup_cut(BACKUP_POINTS);
    }

    /// A backup, perhaps cut short at one of `points` or killed.
    fn backup_cut(&mut self, points: &[&str]) {
        let s = below(&mut self.rng, 2) as usize;
        let plan = self.plan_backup(s);
        let args: Vec<&str> = plan.args.iter().map(String::as_str).collect();
        let (ended, out) = self.run_on(s, &args, points);
        let before: HashSet<String> = self.live.iter().map(|x| x.saved.id.clone()).collect();
        let record: Value = match ended {
            Ended::Done => out.json(),
            Ended::Cut => {
                let listed = self.listed();
                let new: Vec<&Value> = listed
                    .iter()
                    .filter(|(id, _)| !before.contains(*id))
                    .map(|(_, v)| v)
                    .collect();
                assert!(new.len() <= 1, "a cut backup left {} snapshots", new.len());
                let Some(v) = new.first() else {
                    self.log("  no snapshot written");
                    self.assert_listed();
                    return;
                };
                self.log("  its snapshot written");
                (*v).clone()
            }
        };
        self.record(&plan, record);
        self.assert_listed();
    }

    /// Adds the snapshot a backup wrote to the model, checking its kind,
    /// parent and time.
    fn record(&mut self, plan: &PlannedBackup, record: Value) {
        let id = record["id"].as_str().unwrap().to_string();
        // A backup with no parent to name reads everything: it is full.
        let kind = if plan.parent.is_none() {
            "full"
        } else {
            plan.kind
        };
        assert_eq!(record["kind"], kind, "{record}");
        assert_eq!(
            record["parent"].as_str().map(str::to_string),
            plan.parent,
            "step {}: the parent of a {kind} backup",
            self.step
        );
        assert_eq!(record["time_ns"], plan.time * 1_000_000_000, "{record}");
        assert_eq!(record["host"], HOSTS[plan.source], "{record}");
        let src = self.sources[plan.source].clone();
        self.live.push(Snap {
            saved: Saved {
                id,
                src: src.clone(),
                manifest: manifest(&src),
                record: record.clone(),
            },
            time: plan.time,
            kind: kind.to_string(),
            parent: plan.parent.clone(),
            source: plan.source,
        });
    }

    fn spawn(&self, host: usize, args: &[String]) -> std::process::Child {
        let mut cmd = self
            .store
            .cmd_on(host, &args.iter().map(String::as_str).collect::<Vec<_>>());
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Two commands at once: backups of both sources (both must succeed,
    /// each naming its own parent), or a backup and a gc (either may be
    /// refused for the other's lock, nothing else; the snapshot of a
    /// backup that succeeded must restore).
    fn together(&mut self) {
        if !self.live.is_empty() && below(&mut self.rng, 3) == 0 {
            return self.restore_beside_gc();
        }
        let with_gc = below(&mut self.rng, 2) == 0;
        let first = self.plan_backup(0);
        let (second, other) = if with_gc {
            let unused = pick(&mut self.rng, &["0%", "50%"]);
            self.log(&format!("  and at once gc --max-unused {unused}"));
            let args = ["gc", "--delete-all", "--max-unused", unused]
                .map(str::to_string)
                .to_vec();
            (None, args)
        } else {
            let plan = self.plan_backup(1);
            let args = plan.args.clone();
            (Some(plan), args)
        };
        let a = self.spawn(0, &first.args);
        std::thread::sleep(Duration::from_micros(below(&mut self.rng, 8_000)));
        let b = self.spawn(1, &other);
        let outs = [a, b].map(|c| {
            let o = c.wait_with_output().unwrap();
            Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            }
        });
        let mut new = Vec::new();
        for (i, out) in outs.iter().enumerate() {
            if with_gc && out.code == 11 {
                assert!(out.stderr.contains("lock"), "{out}");
                self.log(&format!("  {} refused for the lock", ["backup", "gc"][i]));
                continue;
            }
            assert_eq!(out.code, 0, "step {}: {out}", self.step);
            if i == 0 {
                self.record(&first, out.json());
                new.push(self.live.len() - 1);
            } else if let Some(plan) = &second {
                self.record(plan, out.json());
                new.push(self.live.len() - 1);
            }
        }
        self.assert_listed();
        for i in new {
            self.assert_restores(&self.live[i].saved);
        }
    }

    /// A restore and a gc at once, after a forget that leaves gc work to
    /// do: the restore either is refused for gc's lock or restores the
    /// snapshot exactly, never bytes gc removed under it; gc either is
    /// refused for the restore's lock or succeeds.
    fn restore_beside_gc(&mut self) {
        let Some(snap) = self.any_live() else { return };
        let target = self.fresh("beside-gc");
        self.log(&format!(
            "restore {} and at once gc --max-unused 0%",
            &snap.saved.id[..8]
        ));
        let restore = [
            "restore",
            &snap.saved.id,
            "--target",
            target.to_str().unwrap(),
        ]
        .map(str::to_string)
        .to_vec();
        let gc = ["gc", "--delete-all", "--max-unused", "0%"]
            .map(str::to_string)
            .to_vec();
        let (first, second) = if below(&mut self.rng, 2) == 0 {
            ((0, &restore), (1, &gc))
        } else {
            ((1, &gc), (0, &restore))
        };
        let a = self.spawn(first.0, first.1);
        std::thread::sleep(Duration::from_micros(below(&mut self.rng, 8_000)));
        let b = self.spawn(second.0, second.1);
        let outs = [a, b].map(|c| {
            let o = c.wait_with_output().unwrap();
            Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            }
        });
        let restored_ok = {
            let out = if first.1 == &restore {
                &outs[0]
            } else {
                &outs[1]
            };
            let gc_out = if first.1 == &restore {
                &outs[1]
            } else {
                &outs[0]
            };
            for o in [out, gc_out] {
                assert!(
                    o.code == 0 || (o.code == 11 && o.stderr.contains("lock")),
                    "step {}: {o}",
                    self.step
                );
            }
            out.code == 0
        };
        if restored_ok {
            let got = manifest(&restored(&target, &snap.saved.src));
            assert_manifests_eq(
                &snap.saved.manifest,
                &got,
                &format!("step {}: the restore beside gc", self.step),
            );
        } else {
            self.log("  the restore was refused for gc's lock");
        }
        let _ = fs::remove_dir_all(&target);
        self.assert_listed();
    }

    /// Restores one folder of a snapshot (`SNAP:/path`) and compares it
    /// with what that folder held.
    fn restore_part(&mut self) {
        let Some(snap) = self.any_live() else {
            return self.backup();
        };
        let dirs: Vec<PathBuf> = snap
            .saved
            .manifest
            .iter()
            .filter(|(p, e)| !p.as_os_str().is_empty() && e.kind == Kind::Dir)
            .map(|(p, _)| p.clone())
            .collect();
        let Some(dir) = (!dirs.is_empty())
            .then(|| dirs[below(&mut self.rng, dirs.len() as u64) as usize].clone())
        else {
            return;
        };
        let within = format!("{}/{}", abs(&snap.saved.src), dir.display());
        self.log(&format!("restore {}:{within}", &snap.saved.id[..8]));
        let target = self.fresh("part");
        let spec = format!("{}:{within}", snap.saved.id);
        self.run(
            &["restore", &spec, "--target", target.to_str().unwrap()],
            &[],
        );
        // The folder's entries, as the manifest has them below `dir`.
        let want: Manifest = snap
            .saved
            .manifest
            .iter()
            .filter_map(|(p, e)| {
                let rel = p.strip_prefix(&dir).ok()?;
                (!rel.as_os_str().is_empty()).then(|| (rel.to_path_buf(), e.clone()))
            })
            .collect();
        // The folder's entries go straight into the target.
        let mut got = manifest(&target);
        got.remove(Path::new(""));
        // Hard links to files outside the folder are files here.
        let strip = |m: &Manifest| -> Manifest {
            m.iter()
                .map(|(p, e)| {
                    let mut e = e.clone();
                    e.nlink = None;
                    e.link_group = None;
                    (p.clone(), e)
                })
                .collect()
        };
        assert_manifests_eq(
            &strip(&want),
            &strip(&got),
            &format!("step {}: the restore of {within}", self.step),
        );
        fs::remove_dir_all(&target).unwrap();
    }

    /// The snapshots `forget --keep-last LAST --keep-daily DAILY` keeps,
    /// worked out independently of cairn's retention code (restic's
    /// rules, each source a group; differentials keep their parents and
    /// their set's newest full snapshot).
    fn policy_keeps(&self, last: usize, daily: usize) -> HashSet<String> {
        let mut keep = HashSet::new();
        for s in 0..2 {
            let mut group: Vec<&Snap> = self.live.iter().filter(|x| x.source == s).collect();
            group.sort_by_key(|x| std::cmp::Reverse(x.time));
            for x in group.iter().take(last) {
                keep.insert(x.saved.id.clone());
            }
            let mut days = Vec::new();
            for x in &group {
                let t = DateTime::<Utc>::from_timestamp(x.time, 0).unwrap();
                let day = (t.year(), t.ordinal());
                if days.len() < daily && days.last() != Some(&day) {
                    days.push(day);
                    keep.insert(x.saved.id.clone());
                }
            }
            if group.iter().any(|x| x.kind == "differential") {
                if let Some(full) = group.iter().find(|x| x.kind == "full") {
                    keep.insert(full.saved.id.clone());
                }
            }
        }
        let live: HashSet<&String> = self.live.iter().map(|x| &x.saved.id).collect();
        let parents: Vec<String> = self
            .live
            .iter()
            .filter(|x| x.kind == "differential" && keep.contains(&x.saved.id))
            .filter_map(|x| x.parent.clone())
            .filter(|p| live.contains(p))
            .collect();
        keep.extend(parents);
        keep
    }

    /// After a forget (finished or not): the repository holds `keep` and
    /// maybe some of the rest.
    fn forgot(&mut self, ended: Ended, keep: &HashSet<String>) {
        let listed: HashSet<String> = self.listed().into_keys().collect();
        for id in keep {
            assert!(
                listed.contains(id),
                "step {}: forget removed {}, which it had to keep",
                self.step,
                &id[..8]
            );
        }
        for id in &listed {
            assert!(
                self.live.iter().any(|x| &x.saved.id == id),
                "step {}: unknown snapshot {} after forget",
                self.step,
                &id[..8]
            );
        }
        if ended == Ended::Done {
            assert_eq!(&listed, keep, "step {}: forget's result", self.step);
        }
        self.live.retain(|x| listed.contains(&x.saved.id));
        self.assert_listed();
    }

    fn forget(&mut self) {
        if self.live.is_empty() {
            return self.backup();
        }
        let with_gc = below(&mut self.rng, 3) == 0;
        if below(&mut self.rng, 3) == 0 {
            let i = below(&mut self.rng, self.live.len() as u64) as usize;
            let id = self.live[i].saved.id.clone();
            self.log(&format!("forget {} (gc: {with_gc})", &id[..8]));
            let mut args = vec!["forget", &id[..12]];
            if with_gc {
                args.extend(["--gc", "--delete-all"]);
            }
            let (ended, _) = self.run(&args, if with_gc { GC_POINTS } else { FORGET_POINTS });
            let keep = self
                .live
                .iter()
                .map(|x| x.saved.id.clone())
                .filter(|x| x != &id)
                .collect();
            return self.forgot(ended, &keep);
        }
        let last = below(&mut self.rng, 4) as usize;
        let daily = if last == 0 {
            1 + below(&mut self.rng, 4) as usize
        } else {
            below(&mut self.rng, 4) as usize
        };
        self.log(&format!(
            "forget --keep-last {last} --keep-daily {daily} (gc: {with_gc})"
        ));
        let keep = self.policy_keeps(last, daily);
        let (last, daily) = (last.to_string(), daily.to_string());
        let mut args = vec!["forget", "--keep-last", &last, "--keep-daily", &daily];
        if with_gc {
            args.extend(["--gc", "--delete-all"]);
        }
        let (ended, _) = self.run(&args, if with_gc { GC_POINTS } else { FORGET_POINTS });
        self.forgot(ended, &keep);
    }

    /// gc as the operator runs it here: `--delete-all` throughout, as
    /// this operator forgets every snapshot at times and kills first
    /// backups, and means gc to drop what is then left.
    fn gc(&mut self) {
        let unused = pick(&mut self.rng, &["0%", "10%", "50%"]);
        self.log(&format!("gc --max-unused {unused}"));
        self.run(&["gc", "--delete-all", "--max-unused", unused], GC_POINTS);
        self.assert_listed();
    }

    fn repair_index(&mut self) {
        self.log("repair index");
        self.run(&["repair", "index"], REPAIR_POINTS);
        self.assert_listed();
    }

    /// Restores a snapshot into a fresh folder, perhaps cut short, then
    /// another of the same source over it with `--policy mirror`: the
    /// folder must hold exactly the second.
    fn restore_mirrored(&mut self) {
        let Some(first) = self.any_live() else {
            return self.backup();
        };
        let same: Vec<Snap> = self
            .live
            .iter()
            .filter(|x| x.source == first.source)
            .cloned()
            .collect();
        let second = same[below(&mut self.rng, same.len() as u64) as usize].clone();
        let target = self.fresh("mirror");
        let target_arg = target.to_str().unwrap().to_string();
        self.log(&format!(
            "restore {} then, mirrored over it, {}",
            &first.saved.id[..8],
            &second.saved.id[..8]
        ));
        let (ended, _) = self.run(
            &["restore", &first.saved.id, "--target", &target_arg],
            RESTORE_POINTS,
        );
        if ended == Ended::Done {
            let got = manifest(&restored(&target, &first.saved.src));
            assert_manifests_eq(&first.saved.manifest, &got, "the first restore");
        }
        self.run(
            &[
                "restore",
                &second.saved.id,
                "--target",
                &target_arg,
                "--policy",
                "mirror",
            ],
            &[],
        );
        let got = manifest(&restored(&target, &second.saved.src));
        assert_manifests_eq(
            &second.saved.manifest,
            &got,
            &format!("step {}: the mirrored restore", self.step),
        );
        fs::remove_dir_all(&target).unwrap();
    }

    /// The whole repository verifies, reading every byte, and every
    /// snapshot restores identically.
    fn checkpoint(&mut self) {
        self.log(&format!("checkpoint: {} snapshots", self.live.len()));
        self.assert_verifies();
        for snap in &self.live {
            self.assert_restores(&snap.saved);
        }
    }

    fn step(&mut self) {
        self.step += 1;
        match below(&mut self.rng, 20) {
            0..=4 => {
                let s = below(&mut self.rng, 2) as usize;
                for _ in 0..1 + below(&mut self.rng, 5) {
                    let what = self.mutate(s);
                    self.log(&format!("source {s}: {what}"));
                }
            }
            5..=10 => self.backup(),
            11..=13 => self.forget(),
            14..=15 => self.gc(),
            16 => self.repair_index(),
            17 if below(&mut self.rng, 2) == 0 => self.restore_part(),
            17 => self.restore_mirrored(),
            18 => self.together(),
            _ => self.checkpoint(),
        }
    }

    /// Forgets everything and collects: nothing is left.
    fn end(&mut self) {
        self.checkpoint();
        self.log("forget everything, gc");
        let ids: Vec<String> = self.live.iter().map(|x| x.saved.id.clone()).collect();
        if !ids.is_empty() {
            let mut args = vec!["forget"];
            args.extend(ids.iter().map(String::as_str));
            self.run(&args, &[]);
        }
        self.run(&["gc", "--delete-all", "--max-unused", "0%"], &[]);
        self.live.clear();
        self.assert_listed();
        for folder in ["packs", "index"] {
            let left = self.store.files(folder);
            assert!(
                left.is_empty(),
                "{folder} left after everything was forgotten: {left:?}"
            );
        }
        assert_eq!(self.store.uploads(), 0, "incomplete uploads left");
        let plan = run(&mut self.store.cmd(&["gc", "--dry-run", "--json"]), None).success();
        let v = plan.json();
        assert_eq!(v["delete"], Value::Array(vec![]), "{plan}");
        assert_eq!(v["repack"], Value::Array(vec![]), "{plan}");
        assert_eq!(v["dead_blobs"], 0, "{plan}");
        let verify = run(&mut self.store.cmd(&["verify", "--json"]), None).success();
        assert_eq!(verify.json()["warnings"], Value::Array(vec![]), "{verify}");
        // The emptied repository works as a new one.
        self.log("a backup into the emptied repository");
        self.backup_cut(&[]);
        assert_eq!(self.live.len(), 1, "step {}", self.step);
        self.checkpoint();
    }
}

fn live_a_life(seed: u64, s3: bool) {
    let steps = std::env::var("CAIRN_LIFECYCLE_STEPS")
        .ok()
        .map(|s| s.parse().expect("CAIRN_LIFECYCLE_STEPS is a number"))
        .unwrap_or(if s3 { STEPS_S3 } else { STEPS });
    eprintln!("seed {seed}, {steps} steps");
    let mut life = Life::new(seed, s3);
    for _ in 0..steps {
        life.step();
    }
    life.end();
}

fn seeds_or(default: u64) -> Vec<u64> {
    match std::env::var("CAIRN_LIFECYCLE_SEEDS") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse().expect("CAIRN_LIFECYCLE_SEEDS: numbers"))
            .collect(),
        Err(_) => vec![default],
    }
}

#[test]
fn a_repository_lives_through_random_changes_crashes_and_kills_1() {
    for seed in seeds_or(1) {
        live_a_life(seed, false);
    }
}

#[test]
fn a_repository_lives_through_random_changes_crashes_and_kills_2() {
    live_a_life(2, false);
}

#[test]
fn a_repository_lives_through_random_changes_crashes_and_kills_3() {
    live_a_life(3, false);
}

/// The same on S3 (the test server), where a kill can also leave
/// multipart uploads and the metadata cache half written.
#[test]
fn a_repository_on_s3_lives_through_random_changes_crashes_and_kills() {
    for seed in seeds_or(4) {
        live_a_life(seed, true);
    }
}

/// Every crash point named here is one tests/crash.rs checks against
/// src/, so a renamed point cannot quietly stop being reached here.
#[test]
fn the_crash_points_are_the_ones_in_the_source() {
    let text =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crash.rs")).unwrap();
    let all = [
        BACKUP_POINTS,
        FORGET_POINTS,
        GC_POINTS,
        REPAIR_POINTS,
        RESTORE_POINTS,
    ];
    for p in all.concat() {
        assert!(
            text.contains(&format!("\"{p}\",")),
            "{p} is not a crash point"
        );
    }
}
