//! One damaged snapshot file through the real binary: the commands that
//! only choose among snapshots (backup's parent, restore, ls, the listing,
//! forget by policy) go on with the others and name it; `forget ID`
//! removes it; gc refuses while it is there; `repair snapshots` reports it.

mod common;
mod support_maint;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use support_maint::*;

/// A repository with two snapshots of one source, a day apart: the older
/// (full) and the newer (incremental), in that order.
fn two_snapshots() -> (Repo, Saved, Saved) {
    let repo = Repo::new();
    let src = repo.scratch("src");
    fill(&src, 5, &[("a.bin", 120_000), ("sub/b.bin", 70_000)]);
    let older = backup_saved(&repo, &src, &["--time", "2024-03-01T10:00:00Z"]);
    write_random(&src.join("c.bin"), 99, 40_000);
    let newer = backup_saved(&repo, &src, &["--time", "2024-03-02T10:00:00Z"]);
    (repo, older, newer)
}

fn snapshot_file(repo: &Repo, id: &str) -> PathBuf {
    repo.path.join("snapshots").join(id)
}

/// Flips one byte inside the sealed part of a snapshot file, so it no
/// longer authenticates (nor matches its name).
fn damage(repo: &Repo, id: &str) {
    let path = snapshot_file(repo, id);
    let len = fs::metadata(&path).unwrap().len();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = 12 + (len - 12) / 2;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

/// Asserts `out` warns of the damaged snapshot `id`, with the remedy.
#[track_caller]
fn warns_of(out: &Out, id: &str) {
    assert!(
        out.stderr
            .contains(&format!("snapshot file snapshots/{id} is damaged")),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!("`cairn forget {}`", &id[..8])),
        "{out}"
    );
    assert!(out.stderr.contains("`cairn verify`"), "{out}");
}

/// The ids `snapshots --json` lists, and its outcome.
/// `out` is of a `restore latest` that restored `id` and says files that
/// could not be read may be newer.
fn assert_restores_latest_warning(out: &Out, id: &str) {
    let said = format!("`latest` was snapshot {} (", &id[..8]);
    assert!(out.stderr.contains(&said), "{out}");
    assert!(
        out.stderr.contains(
            "), the newest of those that could be read; 1 snapshot file(s) could not be \
             read (named above) and may be newer"
        ),
        "{out}"
    );
}

fn listed(repo: &Repo) -> (Vec<String>, Out) {
    let out = repo.run(&["snapshots", "--json"]).success();
    let v = out.json();
    (ids(v.as_array().expect("an array")), out)
}

/// Asserts gc (and forget --gc) refuse while `id` is damaged, naming it
/// and the remedy, and remove nothing.
#[track_caller]
fn gc_refuses(repo: &Repo, id: &str) {
    let before = names_in(repo, "snapshots");
    let packs = packs_size(repo);
    for args in [&["gc"][..], &["forget", "--keep-last", "1", "--gc"]] {
        let out = repo.run(args);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(out.stderr.contains("refusing to"), "{out}");
        assert!(out.stderr.contains(&format!("snapshots/{id}")), "{out}");
        assert!(
            out.stderr.contains(&format!("`cairn forget {}`", &id[..8])),
            "{out}"
        );
        assert!(out.stderr.contains("intact copy"), "{out}");
    }
    assert_eq!(names_in(repo, "snapshots"), before, "nothing forgotten");
    assert_eq!(packs_size(repo), packs, "nothing collected");
}

/// `forget <prefix of the damaged id>` removes exactly that file; then
/// nothing warns, gc runs and verify finds the repository whole.
#[track_caller]
fn forget_damaged_then_gc(repo: &Repo, damaged: &str, good: &[&Saved]) {
    let out = repo.run(&["forget", &damaged[..8]]).success();
    assert!(out.stdout.contains("(damaged)"), "{out}");
    assert!(out.stdout.contains("removed 1 snapshot(s)"), "{out}");
    assert!(!snapshot_file(repo, damaged).exists());
    let (ids, out) = listed(repo);
    assert!(!out.stderr.contains("damaged"), "{out}");
    for g in good {
        assert!(ids.contains(&g.id), "{ids:?}");
        assert_restores(repo, g);
    }
    repo.run(&["gc"]).success();
    assert_verify_ok(repo);
}

#[test]
fn a_damaged_older_snapshot_stops_nothing_but_gc() {
    let (repo, older, newer) = two_snapshots();
    damage(&repo, &older.id);

    // The listing shows the good one and names the damaged file.
    let (ids, out) = listed(&repo);
    assert_eq!(ids, vec![newer.id.clone()], "{out}");
    warns_of(&out, &older.id);
    assert!(out.stderr.contains("not listed"), "{out}");

    // The good snapshot restores, by id and as `latest`, and lists.
    assert_restores(&repo, &newer);
    // `latest` cannot be told from the damaged file, which may be newer:
    // the restore is whole, and exits 3 saying so.
    let target = repo.scratch("latest");
    let out = repo.restore_out("latest", &target, &[]);
    assert_eq!(out.code, 3, "{out}");
    warns_of(&out, &older.id);
    assert!(out.stdout.contains(&newer.id[..8]), "{out}");
    assert_restores_latest_warning(&out, &newer.id);
    assert_manifests_eq(
        &newer.manifest,
        &manifest(&restored(&target, &newer.src)),
        "restore of latest",
    );
    let out = repo.run(&["ls", &newer.id[..8]]).success();
    assert!(out.stdout.contains("a.bin"), "{out}");

    // The damaged one, asked for by name, is said to be damaged.
    let target = repo.scratch("damaged");
    let out = repo.restore_out(&older.id[..8], &target, &[]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains(&format!("snapshot file snapshots/{} is corrupt", older.id)),
        "{out}"
    );

    // A backup goes on (its parent is the newer), names the damaged file
    // and ends with the code of damage read around.
    let out = repo.run(&["backup", "--json", &abs(&newer.src)]);
    assert_eq!(out.code, 3, "{out}");
    warns_of(&out, &older.id);
    assert!(out.stderr.contains("the repository is damaged"), "{out}");
    let third = out.json();
    assert_eq!(third["parent"], newer.id.as_str(), "{out}");
    assert_eq!(third["summary"]["errors"], 0, "{out}");
    let damage = third["repository_damage"].as_array().unwrap();
    assert_eq!(damage.len(), 1, "{out}");
    assert!(
        damage[0].as_str().unwrap().contains(&older.id),
        "the report names the damaged file: {out}"
    );

    // `repair snapshots` reports it and goes on with the others.
    let out = repo.run(&["repair", "snapshots"]).success();
    assert!(
        out.stdout.contains(&format!(
            "damaged, left as it is: snapshot file snapshots/{}",
            older.id
        )),
        "{out}"
    );
    assert!(out.stdout.contains("0 snapshot(s) repaired"), "{out}");

    // verify names it with the same remedy.
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains(&format!(
            "error: snapshot {}: snapshot {} is corrupt",
            &older.id[..8],
            &older.id[..8]
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("remove it with `cairn forget {}`", &older.id[..8])),
        "{out}"
    );

    gc_refuses(&repo, &older.id);
    forget_damaged_then_gc(&repo, &older.id, &[&newer]);
}

#[test]
fn a_damaged_newer_snapshot_leaves_the_older_as_parent_and_latest() {
    let (repo, older, newer) = two_snapshots();
    damage(&repo, &newer.id);

    let (ids, out) = listed(&repo);
    assert_eq!(ids, vec![older.id.clone()], "{out}");
    warns_of(&out, &newer.id);

    // `latest` is the newest snapshot that can be read.
    // It exits 3, saying the newest file could not be read; a dry run too.
    let target = repo.scratch("latest");
    let out = repo.restore_out("latest", &target, &[]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.contains(&older.id[..8]), "{out}");
    assert_restores_latest_warning(&out, &older.id);
    let dry = repo.scratch("dry");
    let out = repo.restore_out("latest", &dry, &["--dry-run"]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("would be snapshot"), "{out}");
    // Named by its id, the same snapshot restores with exit 0.
    let by_id = repo.scratch("by-id");
    let out = repo.restore(&older.id[..8], &by_id, &[]);
    assert!(!out.stderr.contains("may be newer"), "{out}");
    let got = manifest(&restored(&target, &older.src));
    assert_manifests_eq(&older.manifest, &got, "restore of latest");

    // The backup takes the older as parent: files are compared with it,
    // so the new one is read and the snapshot is whole.
    let out = repo.run(&["backup", "--json", &abs(&older.src)]);
    assert_eq!(out.code, 3, "{out}");
    warns_of(&out, &newer.id);
    let v = out.json();
    assert_eq!(v["parent"], older.id.as_str(), "{out}");
    assert_eq!(v["summary"]["files_new"], 1, "{out}");
    let third = Saved {
        id: v["id"].as_str().unwrap().to_string(),
        src: older.src.clone(),
        manifest: manifest(&older.src),
        record: v.clone(),
    };
    assert_restores(&repo, &third);

    gc_refuses(&repo, &newer.id);
    forget_damaged_then_gc(&repo, &newer.id, &[&older, &third]);
}

/// Decisions of `forget --json` as (id, keep, reasons).
fn decisions(out: &Out) -> Vec<(String, bool, Vec<String>)> {
    plan(&out.json()).into_values().flatten().collect()
}

#[test]
fn forget_by_policy_removes_nothing_because_of_a_damaged_snapshot() {
    let (repo, older, newer) = two_snapshots();
    damage(&repo, &newer.id);
    let src: &Path = &older.src;

    // Without the damaged one, keep-last 1 keeps the older: it is the
    // newest that can be read. The damaged file is no candidate.
    let out = repo
        .run(&["forget", "--keep-last", "1", "--json"])
        .success();
    warns_of(&out, &newer.id);
    assert!(
        out.stderr.contains("not a candidate of the policy"),
        "{out}"
    );
    let d = decisions(&out);
    assert_eq!(d.len(), 1, "{out}");
    assert_eq!(
        (d[0].0.as_str(), d[0].1),
        (older.id.as_str(), true),
        "{out}"
    );
    assert!(snapshot_file(&repo, &newer.id).exists());
    assert!(snapshot_file(&repo, &older.id).exists());

    // A later incremental makes the older one a candidate for removal by
    // keep-last 1; but it is full, and the damaged file may have been a
    // differential based on it, so it stays, saying why.
    let out = repo.run(&[
        "backup",
        "--json",
        "--time",
        "2024-03-03T10:00:00Z",
        &abs(src),
    ]);
    assert_eq!(out.code, 3, "{out}");
    let third = out.json()["id"].as_str().unwrap().to_string();
    let out = repo
        .run(&["forget", "--keep-last", "1", "--json"])
        .success();
    let d = decisions(&out);
    let kept: Vec<&str> = d.iter().filter(|d| d.1).map(|d| d.0.as_str()).collect();
    assert_eq!(kept.len(), 2, "{out}");
    assert!(kept.contains(&third.as_str()) && kept.contains(&older.id.as_str()));
    let why = &d.iter().find(|d| d.0 == older.id).unwrap().2;
    assert!(
        why.iter()
            .any(|r| r.contains("damaged snapshot may be a differential")),
        "{why:?}"
    );
    assert_eq!(names_in(&repo, "snapshots").len(), 3);

    // Once the damaged file is forgotten, the policy applies in full.
    repo.run(&["forget", &newer.id]).success();
    repo.run(&["forget", "--keep-last", "1"]).success();
    assert_eq!(
        snapshot_ids(&repo).into_iter().collect::<Vec<_>>(),
        vec![third]
    );
}

#[test]
fn a_damaged_snapshot_is_named_only_without_filters_and_unambiguously() {
    let (repo, older, newer) = two_snapshots();
    damage(&repo, &older.id);
    let out = repo.run(&["forget", &older.id, "--host", "elsewhere"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("cannot be read to check the filters"),
        "{out}"
    );
    assert!(snapshot_file(&repo, &older.id).exists());

    // Named together with a good one, both go (json shows no time for it).
    let out = repo
        .run(&["forget", "--json", &older.id[..10], &newer.id[..8]])
        .success();
    let v: Value = out.json();
    let named = v[0]["snapshots"].as_array().unwrap();
    assert_eq!(named.len(), 2, "{out}");
    assert_eq!(named[0]["id"], older.id.as_str());
    assert_eq!(named[0]["time_ns"], Value::Null);
    assert!(named[1]["time_ns"].is_i64(), "{out}");
    assert!(names_in(&repo, "snapshots").is_empty());
}

/// A snapshot file that stays listed but cannot be read (a symlink to
/// nothing, as a copy on a mount that is gone leaves) is damaged like
/// one that does not decode: the listing, restore and backup go on with
/// the others and name it, verify reports it with the remedy, gc refuses,
/// and `forget <id>` removes it.
#[test]
fn a_snapshot_file_that_cannot_be_read_is_set_apart_as_damaged() {
    let (repo, older, newer) = two_snapshots();
    let path = snapshot_file(&repo, &older.id);
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/nonexistent/x", &path).unwrap();

    let (ids, out) = listed(&repo);
    assert_eq!(ids, vec![newer.id.clone()], "{out}");
    warns_of(&out, &older.id);
    assert!(out.stderr.contains("a symlink to nothing"), "{out}");
    assert_restores(&repo, &newer);
    let out = repo.run(&["ls", "latest"]).success();
    warns_of(&out, &older.id);
    let out = repo.run(&["backup", "--json", &abs(&newer.src)]);
    assert_eq!(out.code, 3, "{out}");
    warns_of(&out, &older.id);
    assert_eq!(out.json()["parent"], newer.id.as_str(), "{out}");

    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout
            .contains(&format!("remove it with `cairn forget {}`", &older.id[..8])),
        "{out}"
    );
    gc_refuses(&repo, &older.id);
    let out = repo.run(&["forget", &older.id[..8]]).success();
    assert!(out.stdout.contains("removed 1 snapshot(s)"), "{out}");
    assert!(
        fs::symlink_metadata(&path).is_err(),
        "the symlink is removed"
    );
    repo.run(&["gc"]).success();
}

/// A snapshot file the user may not read is not called damaged, nor is
/// `forget` advised for it: until December 2026 a user without the
/// permission was told to remove an intact snapshot.
#[test]
fn a_snapshot_file_this_user_may_not_read_is_not_called_damaged() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        panic!("this test runs a command as another user, which needs root");
    }
    let repo = Repo::new();
    let src = repo.scratch("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    repo.backup(&[&src], &[]);
    fs::write(src.join("b"), "b").unwrap();
    let newest = repo.backup(&[&src], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    readable_by_all(repo.dir.path());
    let file = repo.path.join("snapshots").join(&newest);
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = repo.cmd(&["snapshots"]);
    as_nobody(&mut c);
    let out = run(&mut c, None);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("cannot be read by this user"), "{out}");
    assert!(out.stderr.contains("no damage"), "{out}");
    assert!(!out.stderr.contains("is damaged"), "{out}");
    assert!(!out.stderr.contains("cairn forget"), "{out}");

    // Nor by `repair snapshots`, run by a user who may write the rest of
    // the repository: it exits 1, as it did not look at that snapshot.
    give_to(repo.dir.path(), NOBODY, true);
    std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
    for dry in [true, false] {
        let mut args = vec!["repair", "snapshots"];
        if dry {
            args.push("--dry-run");
        }
        let mut c = repo.cmd(&args);
        as_nobody(&mut c);
        let out = run(&mut c, None);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stdout.contains(&format!(
                "left as it is: snapshot file snapshots/{newest} cannot be read by this user"
            )),
            "{out}"
        );
        assert!(out.stdout.contains("no damage"), "{out}");
        assert!(!out.stdout.contains("damaged"), "{out}");
        assert!(!out.stdout.contains("cairn forget"), "{out}");
    }

    // Nor by a backup's summary, which said "the repository is damaged"
    // after the warning had said "that is no damage".
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src);
    as_nobody(&mut c);
    let out = run(&mut c, None);
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr.contains(
            "1 snapshot file(s) could not be read by this user (named above), which is no damage"
        ),
        "{out}"
    );
    assert!(!out.stderr.contains("is damaged"), "{out}");

    // A folder of the repository this user may not list stops the backup
    // with what that means, not a bare "Permission denied".
    let index = repo.path.join("index");
    fs::set_permissions(&index, fs::Permissions::from_mode(0o000)).unwrap();
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src);
    as_nobody(&mut c);
    let out = run(&mut c, None);
    fs::set_permissions(&index, fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "the backup stopped, and wrote no snapshot: the store refused a read (no \
             permission), which is not damage"
        ),
        "{out}"
    );
}
