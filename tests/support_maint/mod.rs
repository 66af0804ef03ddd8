//! Helpers for the maintenance tests (crash safety, verify, repair, gc,
//! forget, locks), on top of `tests/common`. A test file using this module
//! declares `mod common;` before `mod support_maint;`.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// A repository with small chunks (64K/256K/1M), 1 MiB packs and cheap key
/// derivation, so a few MiB of data make several packs.
pub fn packed_repo() -> Repo {
    let mut args = FAST_INIT.to_vec();
    args.extend_from_slice(&["--pack-size", "1M"]);
    Repo::with_init_args(&args)
}

/// Writes pseudo-random files `(relative path, length)` under `dir`, each
/// seeded from `seed` and its index, so different seeds never share data.
pub fn fill(dir: &Path, seed: u64, files: &[(&str, usize)]) {
    fs::create_dir_all(dir).expect("create source dir");
    for (i, (name, len)) in files.iter().enumerate() {
        write_random(&dir.join(name), seed * 1000 + i as u64, *len);
    }
}

/// A snapshot and what its source looked like when it was taken.
#[derive(Clone)]
pub struct Saved {
    /// Full snapshot id.
    pub id: String,
    /// The backed-up directory.
    pub src: PathBuf,
    /// Content and metadata of `src` right after the backup.
    pub manifest: Manifest,
    /// The snapshot record from `backup --json`.
    pub record: Value,
}

/// Backs up `src` (asserting success) and records its manifest.
#[track_caller]
pub fn backup_saved(repo: &Repo, src: &Path, extra: &[&str]) -> Saved {
    let record = repo.backup(&[src], extra);
    Saved {
        id: record["id"].as_str().expect("id").to_string(),
        src: src.to_path_buf(),
        manifest: manifest(src),
        record,
    }
}

/// Restores `saved` into a fresh directory and asserts the backed-up
/// directory comes back identical (content, sizes and metadata) to what it
/// was when the snapshot was taken.
#[track_caller]
pub fn assert_restores(repo: &Repo, saved: &Saved) {
    let target = tempfile::tempdir_in(repo.dir.path()).expect("restore target");
    repo.restore(&saved.id, target.path(), &[]);
    let got = manifest(&restored(target.path(), &saved.src));
    assert_manifests_eq(
        &saved.manifest,
        &got,
        &format!("restore of snapshot {}", &saved.id[..8]),
    );
}

/// Ids of the snapshots in the repository, sorted.
pub fn snapshot_ids(repo: &Repo) -> BTreeSet<String> {
    ids(&repo.snapshots()).into_iter().collect()
}

/// `cairn verify [--read-data] --json`: exit code and report.
pub fn verify_json(repo: &Repo, read_data: bool) -> (i32, Value, Out) {
    let mut args = vec!["verify", "--json"];
    if read_data {
        args.push("--read-data");
    }
    let out = repo.run(&args);
    let v = out.json();
    (out.code, v, out)
}

/// Asserts `verify --read-data` exits 0 with no errors and no damage
/// (warnings, such as packs no index names, are allowed); returns the
/// report.
#[track_caller]
pub fn assert_verify_ok(repo: &Repo) -> Value {
    let (code, v, out) = verify_json(repo, true);
    assert_eq!(code, 0, "verify --read-data failed:\n{out}");
    assert_eq!(v["errors"], Value::Array(vec![]), "{out}");
    assert_eq!(v["damaged"], Value::Array(vec![]), "{out}");
    v
}

/// Asserts the repository holds no garbage: gc would delete and repack
/// nothing, and verify reports no warnings (no unindexed packs).
#[track_caller]
pub fn assert_no_garbage(repo: &Repo) {
    let out = repo.run(&["gc", "--dry-run", "--json"]).success();
    let plan = out.json();
    assert_eq!(
        plan["delete"],
        Value::Array(vec![]),
        "gc would delete:\n{out}"
    );
    assert_eq!(
        plan["repack"],
        Value::Array(vec![]),
        "gc would repack:\n{out}"
    );
    assert_eq!(plan["dead_blobs"], 0, "{out}");
    let (code, v, out) = verify_json(repo, false);
    assert_eq!(code, 0, "{out}");
    assert_eq!(v["warnings"], Value::Array(vec![]), "verify warns:\n{out}");
}

/// Runs `cairn ARGS` with `CAIRN_CRASH_AT=point` and asserts the process
/// died at that point.
#[track_caller]
pub fn crash(repo: &Repo, point: &str, args: &[&str]) -> Out {
    let mut c = repo.cmd(args);
    c.env("CAIRN_CRASH_AT", point);
    let out = run(&mut c, None);
    assert_ne!(out.code, 0, "expected a crash at {point}:\n{out}");
    assert!(
        out.stderr.contains(&format!("crash point {point} reached")),
        "stderr does not name crash point {point}:\n{out}"
    );
    out
}

/// Every pack file: id → path.
pub fn pack_files(repo: &Repo) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let packs = repo.path.join("packs");
    for sub in fs::read_dir(&packs).expect("read packs") {
        let sub = sub.expect("entry").path();
        if !sub.is_dir() {
            continue;
        }
        for f in fs::read_dir(&sub).expect("read pack folder") {
            let f = f.expect("entry").path();
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            if !name.starts_with('.') {
                out.insert(name, f);
            }
        }
    }
    out
}

/// Names of the (non-temporary) files in a repository folder.
pub fn names_in(repo: &Repo, folder: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo.path.join(folder))
        .expect("read repo folder")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Where an index says a blob is.
#[derive(Clone, Debug)]
pub struct Loc {
    pub pack: String,
    pub offset: u64,
    pub length: u64,
}

/// Changes, with `damage`, the record of blob `blob` (hex) in the one
/// index table that holds it, leaving the table's MAC as it was, as
/// damage on disk would: `damage` gets the table's bytes and where the
/// record starts (FORMAT.md: blob id, then pack number, offset, length
/// and raw length, four bytes each, little-endian). Returns the table's
/// name.
#[track_caller]
pub fn damage_entry(repo: &Repo, blob: &str, damage: impl Fn(&mut Vec<u8>, usize)) -> String {
    let id = hex::decode(blob).expect("hex blob id");
    let damaged: Vec<String> = names_in(repo, "index")
        .into_iter()
        .filter(|t| {
            let path = repo.path.join("index").join(t);
            let mut bytes = fs::read(&path).unwrap();
            let Some(at) = bytes.windows(32).position(|w| w == id) else {
                return false;
            };
            damage(&mut bytes, at);
            fs::write(&path, &bytes).unwrap();
            true
        })
        .collect();
    assert_eq!(damaged.len(), 1, "one table indexes the blob");
    damaged.into_iter().next().unwrap()
}

/// blob id → location, from `cairn cat index`.
pub fn index_map(repo: &Repo) -> HashMap<String, Loc> {
    let out = repo.run(&["cat", "index"]).success();
    let mut map = HashMap::new();
    for table in out.json().as_array().expect("tables") {
        for e in table["entries"].as_array().expect("entries") {
            map.insert(
                e["id"].as_str().unwrap().to_string(),
                Loc {
                    pack: e["pack"].as_str().unwrap().to_string(),
                    offset: e["offset"].as_u64().unwrap(),
                    length: e["length"].as_u64().unwrap(),
                },
            );
        }
    }
    map
}

/// Every regular file of a snapshot: absolute path → chunk ids, from
/// `cairn ls --json`.
pub fn file_chunks(repo: &Repo, snapshot: &str) -> BTreeMap<String, Vec<String>> {
    let out = repo.run(&["ls", "--json", snapshot]).success();
    let mut map = BTreeMap::new();
    for line in out.stdout.lines() {
        let v: Value = serde_json::from_str(line).expect("ls line is JSON");
        if let Some(chunks) = v["kind"]["file"]["chunks"].as_array() {
            map.insert(
                v["path"].as_str().unwrap().to_string(),
                chunks
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            );
        }
    }
    map
}

/// Every path (files, directories, …) `cairn ls` lists in a snapshot.
pub fn ls_paths(repo: &Repo, snapshot: &str) -> BTreeSet<String> {
    let out = repo.run(&["ls", "--json", snapshot]).success();
    out.stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("ls line is JSON");
            v["path"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Polls `cond` every 20 ms until it holds; panics after `limit`.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The size of the repository's packs in bytes.
pub fn packs_size(repo: &Repo) -> u64 {
    dir_size(&repo.path.join("packs"))
}

// ------------------------------------------------------------- retention

/// A dry run's decisions: group → [(id, keep, reasons)], newest first.
pub type Plan = BTreeMap<String, Vec<(String, bool, Vec<String>)>>;

pub fn plan(v: &Value) -> Plan {
    v.as_array()
        .expect("an array of groups")
        .iter()
        .map(|g| {
            let snaps = g["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    (
                        d["id"].as_str().unwrap().to_string(),
                        d["keep"].as_bool().unwrap(),
                        d["reasons"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| r.as_str().unwrap().to_string())
                            .collect(),
                    )
                })
                .collect();
            (g["group"].as_str().unwrap().to_string(), snaps)
        })
        .collect()
}
