//! Crash safety: the real binary is made to abort at every crash point
//! (`CAIRN_CRASH_AT`, see src/fault.rs) in a scenario that reaches it, and
//! once with a SIGKILL at an arbitrary moment. After each crash the
//! repository must verify (reading every byte), every snapshot that should
//! exist must restore identically, and re-running the interrupted command
//! must finish the job and leave no garbage.

mod common;
mod support_maint;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;
use support_maint::*;

/// Every crash point in src/ (checked against the source below).
const POINTS: &[&str] = &[
    "backend-before-rename",
    "pack-sink-before-rename",
    "after-pack-write",
    "after-index-write",
    "after-index-part-write",
    "before-snapshot-write",
    "after-compact-write",
    "forget-after-remove",
    "gc-after-repack-write",
    "gc-after-index-write",
    "gc-after-index-remove",
    "gc-after-pack-remove",
    "restore-after-place",
    "upgrade-after-config-write",
    "private-file-before-rename",
    "repair-before-old-tables-removed",
];

/// The list above is complete: every `fault::point("…")` in src/ is in it
/// (and so has a test below), and every entry still exists in src/.
#[test]
fn every_crash_point_is_covered() {
    fn scan(dir: &Path, found: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                scan(&p, found);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = fs::read_to_string(&p).unwrap();
                for part in text.split("fault::point(\"").skip(1) {
                    found.push(part.split('"').next().unwrap().to_string());
                }
            }
        }
    }
    let mut found = Vec::new();
    scan(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    found.sort();
    found.dedup();
    let mut listed: Vec<String> = POINTS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        found, listed,
        "crash points in src/ vs the ones tested here"
    );
}

// ---------------------------------------------------------------- backup

/// The first state of the source: small files (one chunk each) and a
/// larger one in a subdirectory.
fn state1(src: &Path) {
    fill(
        src,
        1,
        &[
            ("k0", 210_000),
            ("k1", 180_000),
            ("k2", 250_000),
            ("k3", 90_000),
            ("d0", 200_000),
            ("d1", 170_000),
            ("d2", 230_000),
            ("sub/big.bin", 1_500_000),
        ],
    );
}

/// The second state: some files removed, some added, one rewritten.
fn state2(src: &Path) {
    for d in ["d0", "d1", "d2"] {
        fs::remove_file(src.join(d)).unwrap();
    }
    fill(
        src,
        2,
        &[
            ("n0", 260_000),
            ("n1", 140_000),
            ("k0", 220_000),
            ("sub/new.bin", 700_000),
        ],
    );
}

/// The third state: one more change.
fn state3(src: &Path) {
    fill(src, 3, &[("n1", 150_000), ("n2", 300_000)]);
}

/// A backup of state 2 on top of a snapshot of state 1 crashes at `point`;
/// snapshot 1 stays intact, the re-run succeeds, and gc then removes what
/// the crashed run left behind.
fn backup_crash(point: &str) {
    let repo = packed_repo();
    let src = repo.scratch("src");
    state1(&src);
    let s1 = backup_saved(&repo, &src, &[]);
    state2(&src);
    let packs_before = pack_files(&repo).len();

    let mut args = vec!["backup".to_string(), "--json".to_string()];
    args.push(src.to_str().unwrap().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crash(&repo, point, &args);

    // Nothing of the crashed run is visible as a snapshot.
    assert_eq!(
        snapshot_ids(&repo),
        [s1.id.clone()].into_iter().collect(),
        "{point}"
    );
    assert_verify_ok(&repo);
    assert_restores(&repo, &s1);
    match point {
        "backend-before-rename" => {
            // The first file a backup writes is its lock: the crash comes
            // after the temporary file is written and synced, before it is
            // renamed. Only that temporary file is left, and nothing below
            // (verify, backup, gc, unlock-free locking) may trip over it.
            let tmp: Vec<_> = fs::read_dir(repo.path.join("locks"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                tmp.len() == 1 && tmp[0].starts_with(".tmp-"),
                "locks/ holds {tmp:?}"
            );
            assert_eq!(pack_files(&repo).len(), packs_before);
        }
        "pack-sink-before-rename" => {
            // A data pack streamed to its temporary file and synced, and
            // the process died before the rename: only temporary files
            // are left (outside the pack folders, where nothing lists
            // them): that pack's, and those of packs other workers were
            // filling or committing at that moment.
            let tmp: Vec<_> = fs::read_dir(repo.path.join("packs"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with(".tmp-"))
                .collect();
            assert!((1..=3).contains(&tmp.len()), "packs/ holds {tmp:?}");
            assert_eq!(pack_files(&repo).len(), packs_before);
        }
        "after-pack-write" => {
            // A pack written and then the process died (another worker may
            // have finished writing one at the same moment): no index names
            // it, which verify reports as a warning, not an error.
            assert!(pack_files(&repo).len() > packs_before);
            let (_, v, out) = verify_json(&repo, false);
            let warnings = v["warnings"].as_array().unwrap();
            assert!(
                warnings
                    .iter()
                    .any(|w| w["message"].as_str().unwrap().contains("not in the index")),
                "{out}"
            );
        }
        "after-index-write" | "before-snapshot-write" => {
            assert!(pack_files(&repo).len() > packs_before);
        }
        _ => {}
    }

    // The re-run succeeds and restores identically.
    let s2 = backup_saved(&repo, &src, &[]);
    assert_restores(&repo, &s2);
    assert_restores(&repo, &s1);
    if matches!(point, "after-index-write" | "before-snapshot-write") {
        // The crashed run's blobs were indexed durably: the re-run reuses
        // every data chunk and adds only trees (whose parents' metadata
        // may have changed meanwhile).
        let added = s2.record["summary"]["bytes_added"].as_u64().unwrap();
        assert!(added < 64 * 1024, "re-run added {added} bytes");
    }
    repo.run(&["gc"]).success();
    assert_verify_ok(&repo);
    assert_no_garbage(&repo);
    assert_restores(&repo, &s1);
    assert_restores(&repo, &s2);
}

#[test]
fn crash_in_backup_before_a_rename() {
    backup_crash("backend-before-rename");
}

#[test]
fn crash_in_backup_before_a_streamed_pack_is_renamed() {
    backup_crash("pack-sink-before-rename");
}

#[test]
fn crash_in_backup_after_a_pack_write() {
    backup_crash("after-pack-write");
}

#[test]
fn crash_in_backup_after_the_index_write() {
    backup_crash("after-index-write");
}

#[test]
fn crash_in_backup_before_the_snapshot_write() {
    backup_crash("before-snapshot-write");
}

/// A backup that writes index tables on its way (one per pack here,
/// `CAIRN_TEST_INDEX_EVERY`) dies right after one: the packs it names are
/// indexed, but no snapshot uses them. Everything verifies, the re-run
/// reuses them instead of storing their data again, and gc then leaves
/// nothing behind.
#[test]
fn crash_in_backup_after_an_index_table_written_on_the_way() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    state1(&src);
    let s1 = backup_saved(&repo, &src, &[]);
    state2(&src);
    let tables = names_in(&repo, "index").len();
    let mut c = repo.cmd(&["backup", "--json", src.to_str().unwrap()]);
    c.env("CAIRN_CRASH_AT", "after-index-part-write")
        .env("CAIRN_TEST_INDEX_EVERY", "1");
    let out = run(&mut c, None);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains("crash point after-index-part-write reached"),
        "{out}"
    );
    assert_eq!(snapshot_ids(&repo), [s1.id.clone()].into_iter().collect());
    assert_eq!(names_in(&repo, "index").len(), tables + 1);
    assert_verify_ok(&repo);
    assert_restores(&repo, &s1);

    // State 2 adds 1.32 MB of new data; a full 1 MiB pack of it was
    // indexed before the crash, so the re-run stores well under half.
    let s2 = backup_saved(&repo, &src, &[]);
    let added = s2.record["summary"]["bytes_added"].as_u64().unwrap();
    assert!(added < 600_000, "re-run added {added} bytes");
    assert_restores(&repo, &s2);
    repo.run(&["gc"]).success();
    assert_verify_ok(&repo);
    assert_no_garbage(&repo);
    assert_restores(&repo, &s1);
    assert_restores(&repo, &s2);
}

/// A backup that finds more than 32 index tables of a kind merges the
/// smallest after writing its snapshot; killed between writing the merged
/// table and removing its sources, it leaves duplicate entries only:
/// everything verifies and restores, and the next backup finishes the
/// merge.
#[test]
fn crash_in_index_compaction_after_the_merged_write() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    let index_count = || names_in(&repo, "index").len();
    let mut saved = Vec::new();
    for i in 0..32 {
        fill(&src, 100 + i, &[(&format!("f{i}"), 3000)]);
        saved.push(backup_saved(&repo, &src, &[]));
    }
    // A table of each kind per backup.
    assert_eq!(index_count(), 64);
    fill(&src, 200, &[("g", 3000)]);
    crash(
        &repo,
        "after-compact-write",
        &["backup", src.to_str().unwrap()],
    );
    // The snapshot was durable before the merge began, and the merged
    // table of trees (merged first) sits beside all 33 tables of both
    // kinds.
    assert_eq!(snapshot_ids(&repo).len(), 33);
    assert_eq!(index_count(), 67);
    assert_verify_ok(&repo);
    assert_restores(&repo, &saved[0]);
    assert_restores(&repo, &saved[31]);

    fill(&src, 201, &[("h", 3000)]);
    saved.push(backup_saved(&repo, &src, &[]));
    assert!(index_count() <= 34, "{} index tables", index_count());
    assert_verify_ok(&repo);
    for s in [&saved[0], &saved[15], &saved[32]] {
        assert_restores(&repo, s);
    }
    // gc drops the duplicate entries the interrupted merge left.
    repo.run(&["gc"]).success();
    assert!(index_count() <= 34, "{} index tables", index_count());
    assert_no_garbage(&repo);
}

// ---------------------------------------------------------------- forget

#[test]
fn crash_in_forget_between_removals() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    state1(&src);
    let s1 = backup_saved(&repo, &src, &[]);
    state2(&src);
    let s2 = backup_saved(&repo, &src, &[]);
    state3(&src);
    let s3 = backup_saved(&repo, &src, &[]);

    crash(
        &repo,
        "forget-after-remove",
        &["forget", "--keep-last", "1"],
    );
    // Exactly one of the two old snapshots is gone; the newest is kept.
    let left = snapshot_ids(&repo);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&s3.id));
    assert!(left.contains(&s1.id) != left.contains(&s2.id));
    assert_verify_ok(&repo);
    for s in [&s1, &s2, &s3] {
        if left.contains(&s.id) {
            assert_restores(&repo, s);
        }
    }

    // The re-run finishes the job.
    repo.run(&["forget", "--keep-last", "1"]).success();
    assert_eq!(snapshot_ids(&repo), [s3.id.clone()].into_iter().collect());
    repo.run(&["gc"]).success();
    assert_verify_ok(&repo);
    assert_no_garbage(&repo);
    assert_restores(&repo, &s3);
}

// --------------------------------------------------------------- restore

/// The bytes of every regular file under `root`, by relative path.
fn file_bytes(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    list_paths(root)
        .into_iter()
        .filter(|p| root.join(p).is_file())
        .map(|p| {
            let bytes = fs::read(root.join(&p)).unwrap();
            (p, bytes)
        })
        .collect()
}

/// A restore killed right after its first file is in place leaves only
/// whole files under their names, old or new, and no temporary files, both
/// in an empty target and over an older copy of the tree; the re-run
/// completes the restore.
#[test]
fn crash_in_restore_leaves_whole_files_only() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    state1(&src);
    let old = file_bytes(&src);
    let s1 = backup_saved(&repo, &src, &[]);
    state2(&src);
    let new = file_bytes(&src);
    let s2 = backup_saved(&repo, &src, &[]);

    let fresh = repo.scratch("fresh");
    let over = repo.scratch("over");
    repo.restore(&s1.id, &over, &[]);
    for target in [&fresh, &over] {
        let t = target.to_str().unwrap();
        crash(
            &repo,
            "restore-after-place",
            &["restore", &s2.id, "--target", t, "--policy", "mirror"],
        );
        assert_eq!(restore_leftovers(target), Vec::<PathBuf>::new());
        let got = file_bytes(&restored(target, &src));
        assert!(!got.is_empty(), "nothing was placed in {t}");
        for (path, bytes) in &got {
            let whole =
                new.get(path) == Some(bytes) || (target == &over && old.get(path) == Some(bytes));
            assert!(whole, "{t}: {path:?} is neither version of the file");
        }
        if target == &fresh {
            assert!(got.len() < new.len(), "the restore ran to its end");
        }

        repo.restore(&s2.id, target, &["--policy", "mirror"]);
        assert_manifests_eq(
            &s2.manifest,
            &manifest(&restored(target, &src)),
            &format!("re-run restore into {t}"),
        );
        assert_eq!(restore_leftovers(target), Vec::<PathBuf>::new());
    }
}

/// The folders a restore makes are its owner's alone until they get
/// their snapshot's mode: killed after placing its first file, under a
/// umask of 022, it leaves none that another user may list or enter (each
/// was 0755, so the files of a folder of mode 0700 in the snapshot could
/// be read by anyone while the restore ran, and after it was killed).
#[test]
fn the_folders_of_a_killed_restore_are_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let repo = packed_repo();
    let src = repo.scratch("src");
    state1(&src);
    chmod(&src, 0o700);
    let s1 = backup_saved(&repo, &src, &[]);
    let target = repo.scratch("target");
    let mut c = repo.cmd(&["restore", &s1.id, "--target", target.to_str().unwrap()]);
    c.env("CAIRN_CRASH_AT", "restore-after-place");
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let out = run(&mut c, None);
    assert!(
        out.stderr
            .contains("crash point restore-after-place reached"),
        "{out}"
    );
    let mut dirs = vec![restored(&target, &src)];
    let mut seen = 0;
    while let Some(d) = dirs.pop() {
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{}: {mode:o}", d.display());
        seen += 1;
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            }
        }
    }
    assert!(seen > 1, "{out}");
}

// -------------------------------------------------------------------- gc
// -------------------------------------------------------------------- gc

/// Four snapshots: `gone` (a directory of its own), then states 1, 2, 3 of
/// `src`. `gone` and state 1 are forgotten, so gc has whole packs to
/// delete (gone's) and packs mixing live and dead blobs to repack
/// (state 1's). Returns the repository and the surviving snapshots.
fn gc_scenario() -> (Repo, Vec<Saved>) {
    let repo = packed_repo();
    let gone = repo.scratch("gone");
    fill(&gone, 9, &[("only.bin", 2_500_000)]);
    let g = backup_saved(&repo, &gone, &[]);
    let src = repo.scratch("src");
    state1(&src);
    let s1 = backup_saved(&repo, &src, &[]);
    state2(&src);
    let s2 = backup_saved(&repo, &src, &[]);
    state3(&src);
    let s3 = backup_saved(&repo, &src, &[]);
    repo.run(&["forget", &g.id, &s1.id]).success();
    assert_eq!(
        snapshot_ids(&repo),
        [s2.id.clone(), s3.id.clone()].into_iter().collect()
    );

    // The scenario reaches every gc step: packs to delete, packs to repack.
    let plan = repo
        .run(&["gc", "--dry-run", "--json", "--max-unused", "0%"])
        .success()
        .json();
    assert!(!plan["delete"].as_array().unwrap().is_empty(), "{plan}");
    assert!(!plan["repack"].as_array().unwrap().is_empty(), "{plan}");
    assert!(plan["dead_blobs"].as_u64().unwrap() > 0, "{plan}");
    (repo, vec![s2, s3])
}

fn gc_crash(point: &str) {
    let (repo, live) = gc_scenario();
    let packs_before: Vec<String> = pack_files(&repo).into_keys().collect();
    let index_before = names_in(&repo, "index");
    let plan = repo
        .run(&["gc", "--dry-run", "--json", "--max-unused", "0%"])
        .success()
        .json();
    let rewrite: Vec<String> = plan["rewrite_index"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // The scenario has a table left alone: the newest backup's blobs all
    // stay live.
    assert!(
        !rewrite.is_empty() && rewrite.len() < index_before.len(),
        "{plan}"
    );
    assert!(rewrite.iter().all(|t| index_before.contains(t)), "{plan}");
    crash(&repo, point, &["gc", "--max-unused", "0%"]);

    let packs_after: Vec<String> = pack_files(&repo).into_keys().collect();
    let index_after = names_in(&repo, "index");
    let untouched = |t: &String| !rewrite.contains(t);
    // gc writes one table: what survives of the rewritten tables, with
    // the new locations of the repacked blobs.
    let new_tables = index_after
        .iter()
        .filter(|t| !index_before.contains(t))
        .count();
    let wrote_tables = |n: usize| assert_eq!(n, 1, "new index tables");
    match point {
        "gc-after-repack-write" => {
            // One new pack, nothing removed yet.
            assert_eq!(packs_after.len(), packs_before.len() + 1);
            assert_eq!(index_after, index_before);
        }
        "gc-after-index-write" => {
            assert!(index_before.iter().all(|t| index_after.contains(t)));
            wrote_tables(new_tables);
            assert!(packs_before.iter().all(|p| packs_after.contains(p)));
        }
        "gc-after-index-remove" => {
            // New tables written, exactly one rewritten table removed.
            wrote_tables(new_tables);
            let removed: Vec<_> = index_before
                .iter()
                .filter(|t| !index_after.contains(t))
                .collect();
            assert_eq!(removed.len(), 1, "{removed:?}");
            assert!(rewrite.contains(removed[0]));
            assert!(packs_before.iter().all(|p| packs_after.contains(p)));
        }
        "gc-after-pack-remove" => {
            // Every rewritten table gone, every other one left as it was;
            // one old pack removed.
            wrote_tables(new_tables);
            let left: Vec<_> = index_before
                .iter()
                .filter(|t| index_after.contains(t))
                .collect();
            assert!(!left.is_empty());
            assert!(left.iter().all(|t| untouched(t)), "{left:?}");
            assert_eq!(index_after.len(), left.len() + new_tables);
            assert_eq!(
                packs_before
                    .iter()
                    .filter(|p| !packs_after.contains(p))
                    .count(),
                1
            );
        }
        _ => unreachable!(),
    }
    assert_eq!(snapshot_ids(&repo).len(), 2);
    assert_verify_ok(&repo);
    for s in &live {
        assert_restores(&repo, s);
    }

    // Running gc again finishes the job.
    repo.run(&["gc", "--max-unused", "0%"]).success();
    assert_verify_ok(&repo);
    for s in &live {
        assert_restores(&repo, s);
    }
    // A further gc finds nothing left to do.
    assert_no_garbage(&repo);
    let plan = repo.run(&["gc", "--json"]).success().json();
    assert_eq!(plan["delete"], Value::Array(vec![]));
    assert_eq!(plan["repack"], Value::Array(vec![]));
    assert_eq!(
        pack_files(&repo).len(),
        plan["keep"].as_u64().unwrap() as usize
    );
}

#[test]
fn crash_in_gc_after_a_repack_write() {
    gc_crash("gc-after-repack-write");
}

#[test]
fn crash_in_gc_after_the_index_write() {
    gc_crash("gc-after-index-write");
}

#[test]
fn crash_in_gc_after_an_index_remove() {
    gc_crash("gc-after-index-remove");
}

#[test]
fn crash_in_gc_after_a_pack_remove() {
    gc_crash("gc-after-pack-remove");
}

// ------------------------------------------------------------ kill -9

/// Files for the killed backup: many 1 MB files, so the backup runs for a
/// while and the kill can land while packs, the index or the snapshot are
/// being written.
fn big_source(dir: &Path) -> PathBuf {
    let names: Vec<String> = (0..32).map(|i| format!("d{}/f{i:02}", i % 4)).collect();
    let files: Vec<(&str, usize)> = names
        .iter()
        .map(|n| (n.as_str(), 1_000_000 + n.len() * 1000))
        .collect();
    fill(dir, 42, &files);
    dir.to_path_buf()
}

#[test]
fn sigkill_during_backup_leaves_a_usable_repository() {
    let repo = packed_repo();
    let small = repo.scratch("small");
    fill(&small, 7, &[("a", 300_000), ("b/c", 500_000)]);
    let s0 = backup_saved(&repo, &small, &[]);
    let src = big_source(&repo.scratch("big"));
    let expected = manifest(&src);

    let mut child = repo
        .cmd(&["backup", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the backup has written its first new pack, then a little
    // longer (varying from run to run), then kill it. Wherever it lands,
    // the checks below must hold.
    let before = pack_files(&repo).len();
    wait_for("the first pack", Duration::from_secs(60), || {
        pack_files(&repo).len() > before || child.try_wait().unwrap().is_some()
    });
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 1000;
    std::thread::sleep(Duration::from_millis(u64::from(jitter)));
    child.kill().unwrap();
    let status = child.wait().unwrap();

    // Either the backup finished before the kill, or it left no snapshot.
    let snaps = snapshot_ids(&repo);
    assert!(snaps.contains(&s0.id));
    if status.success() {
        assert_eq!(snaps.len(), 2);
    } else {
        assert!(snaps.len() <= 2, "{snaps:?}");
    }
    assert_verify_ok(&repo);
    assert_restores(&repo, &s0);
    for id in snaps.iter().filter(|id| **id != s0.id) {
        // A snapshot written just before the kill is complete.
        let target = repo.scratch("restore-killed");
        repo.restore(id, &target, &[]);
        assert_manifests_eq(&expected, &manifest(&restored(&target, &src)), "killed");
    }

    // A re-run succeeds and restores identically; gc cleans up.
    let s1 = backup_saved(&repo, &src, &[]);
    assert_eq!(s1.manifest, expected);
    repo.run(&["gc"]).success();
    assert_verify_ok(&repo);
    assert_no_garbage(&repo);
    assert_restores(&repo, &s1);
    assert_restores(&repo, &s0);
}

// --------------------------------------------------------------- upgrade

/// Killed right after the new config is written (before its lock is
/// removed), an upgrade of a repository of format 3 (the checked-in
/// fixture) leaves one of format 4 that opens, lists and restores; the
/// next upgrade has nothing to do.
#[test]
fn crash_after_upgrade_config_write() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v3"),
        &repo,
    );
    let cmd = |args: &[&str], crash: Option<&str>| {
        let mut c = cairn();
        c.arg("-r").arg(&repo).args(args);
        c.env("CAIRN_PASSWORD", "fixture password");
        if let Some(point) = crash {
            c.env("CAIRN_CRASH_AT", point);
        }
        run(&mut c, None)
    };
    let out = cmd(&["upgrade"], Some("upgrade-after-config-write"));
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains("crash point upgrade-after-config-write reached"),
        "{out}"
    );
    let config = cmd(&["cat", "config"], None).success().json();
    assert_eq!(config["version"], cairn::repo::config::VERSION, "{config}");
    let target = dir.path().join("target");
    cmd(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        None,
    )
    .success();
    assert_eq!(
        fs::read(target.join("tmp/cairn-fixture-src/hello.txt")).unwrap(),
        b"hello, cairn\n"
    );
    cmd(&["verify", "--read-data"], None).success();
    let again = cmd(&["upgrade"], None).success();
    assert!(again.stdout.contains("nothing to do"), "{again}");
}

// ------------------------------------------------------------ key export

/// Killed after the exported key is written and synced but before it
/// takes its name, `key export` leaves nothing under that name (no
/// partial file that looks like a key), only a temporary that says what
/// it is; the retry exports the key, and a file already there is still
/// never overwritten.
#[test]
fn crash_before_an_exported_key_takes_its_name() {
    let repo = Repo::new();
    let keys = repo.scratch("keys");
    fs::create_dir(&keys).unwrap();
    let key = keys.join("repo.key");
    let arg = key.to_str().unwrap();
    crash(&repo, "private-file-before-rename", &["key", "export", arg]);
    assert!(fs::symlink_metadata(&key).is_err(), "a file under the name");
    let left: Vec<String> = fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("repo.key.cairn-partial-"), "{left:?}");

    let out = repo.run(&["key", "export", arg]).success();
    assert!(out.stdout.contains("--key-file"), "{out}");
    assert_eq!(fs::metadata(&key).unwrap().len(), 140);
    let mut c = cairn();
    c.arg("-r").arg(&repo.path).arg("snapshots");
    c.env("CAIRN_KEY_FILE", &key);
    run(&mut c, None).success();

    let out = repo.run(&["key", "export", arg]);
    assert_eq!(out.code, 2, "a usage error: {out}");
    assert!(out.stderr.contains("exists already"), "{out}");
}

/// `repair index` says what is lost (here the blobs of a pack another
/// was moved over) before it removes the old tables, the only record of
/// them: a kill right after the new tables are written has said it
/// already, and a repair run again, with the old tables still there,
/// says it again and finishes. (Until December 2026 it was said only at
/// the end, and a kill between lost it for good.)
#[test]
fn crash_in_repair_index_before_the_old_tables_go_has_said_what_is_lost() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    state1(&src);
    backup_saved(&repo, &src, &[]);
    let packs = pack_files(&repo);
    let names: Vec<&String> = packs.keys().collect();
    let (a, b) = (names[0], names[1]);
    let lost = index_map(&repo).values().filter(|l| &l.pack == b).count();
    assert!(lost > 0);
    fs::rename(&packs[a], &packs[b]).unwrap();
    let said = format!(
        "the old index named 1 pack(s) the repository does not hold (first: {}): {lost} blob(s)",
        &a[..8]
    );
    let out = crash(
        &repo,
        "repair-before-old-tables-removed",
        &["repair", "index"],
    );
    assert!(out.stderr.contains(&said), "{out}");
    repo.run(&["unlock"]).success();
    let out = repo.run(&["repair", "index"]).success();
    assert!(out.stderr.contains(&said), "{out}");
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 1, "{out}");
}
