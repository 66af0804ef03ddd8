//! A full repository filesystem: the backup that meets it fails cleanly,
//! and forget, gc and verify still run, on the space reserve cairn keeps.
//! `CAIRN_TEST_FS_SIZE` makes the local repository behave as if its
//! filesystem held that many bytes, so no filesystem has to be mounted.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Pack size of the test repositories: the reserve is the index plus one.
const PACK: u64 = 1 << 20;

fn repo() -> Repo {
    let mut args = FAST_INIT.to_vec();
    args.extend_from_slice(&["--pack-size", "1M"]);
    Repo::with_init_args(&args)
}

fn reserve_len(repo: &Repo) -> u64 {
    fs::metadata(repo.path.join("reserve")).map_or(0, |m| m.len())
}

/// `cairn -r REPO ARGS` on a filesystem of `size` bytes.
fn run_in(repo: &Repo, size: u64, args: &[&str]) -> Out {
    let mut c = repo.cmd(args);
    c.env("CAIRN_TEST_FS_SIZE", size.to_string());
    run(&mut c, None)
}

fn backup_in(repo: &Repo, size: u64, src: &Path) -> Out {
    let mut c = repo.cmd(&["backup"]);
    c.arg(src).env("CAIRN_TEST_FS_SIZE", size.to_string());
    run(&mut c, None)
}

#[test]
fn a_full_filesystem_fails_the_backup_cleanly_and_forget_gc_and_verify_still_run() {
    let repo = repo();
    assert!(
        reserve_len(&repo) >= PACK,
        "init sets a pack's worth aside: {} bytes",
        reserve_len(&repo)
    );
    let src = repo.scratch("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        write_random(&src.join(format!("a{i}.bin")), i, 700_000);
    }
    let first = repo.backup(&[&src], &[]);

    // Room for three and a half packs more, and six megabytes of new
    // files. Two sealers fill a pack each, and one that finished its pack
    // may start a third before the first is committed: with room for three
    // in flight, the first pack is always finished (and left for gc)
    // before the filesystem is full.
    let size = repo.size() + 7 * PACK / 2;
    for i in 0..6 {
        write_random(&src.join(format!("b{i}.bin")), 10 + i, 1_000_000);
    }
    let out = backup_in(&repo, size, &src);
    let failed = out.to_string();
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("No space left on device"), "{out}");
    // The advice on a line of its own, not escaped into the error's.
    assert!(
        out.stderr.contains("\nthe repository's filesystem is full")
            && !out.stderr.contains("\\nthe repository")
            && out.stderr.contains("`cairn gc`")
            && out
                .stderr
                .contains(&format!("{}", repo.path.join("reserve").display())),
        "the error says what can still run: {out}"
    );
    assert!(
        !out.stderr.contains("aborted"),
        "one error, not a line per file left unread: {out}"
    );
    assert_eq!(
        repo.snapshots().len(),
        1,
        "nothing of the failed backup is published"
    );
    assert!(
        reserve_len(&repo) >= PACK,
        "backups leave the reserve alone"
    );

    // Not a byte free: what frees space still runs, on the reserve.
    let full = repo.size();
    let out = run_in(&repo, full, &["gc"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("nearly full: using the"),
        "gc says it uses the reserve: {out}"
    );
    assert!(
        repo.size() < full,
        "gc freed the packs of the failed backup: {} → {} bytes\nbackup: {failed}\ngc: {out}\nfiles: {:?}",
        full,
        repo.size(),
        list_paths(&repo.path)
    );
    assert!(
        reserve_len(&repo) >= PACK,
        "the freed space holds the reserve again"
    );

    // Still too full for the new files: forget and verify run as well.
    let full = repo.size();
    let out = run_in(&repo, full, &["verify", "--read-data"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("no errors"), "{out}");
    let out = run_in(&repo, full, &["forget", "--keep-last", "1", "--gc"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("removed 0 snapshot(s)"), "{out}");

    // Without the new files the backup fits, and the first snapshot is
    // whole.
    for i in 0..6 {
        fs::remove_file(src.join(format!("b{i}.bin"))).unwrap();
    }
    let out = backup_in(&repo, repo.size() + 1_000_000, &src);
    assert_eq!(out.code, 0, "{out}");
    let target = repo.scratch("target");
    repo.restore(first["id"].as_str().unwrap(), &target, &[]);
    assert_same_contents(&src, &restored(&target, &src));
}

#[test]
fn without_room_to_repack_gc_deletes_first_and_repacks_on_its_next_run() {
    let repo = repo();
    let src = repo.scratch("src");
    fs::create_dir_all(&src).unwrap();
    // a.bin shares its pack with the start of z.bin; the rest of z.bin
    // fills packs of its own.
    write_random(&src.join("a.bin"), 1, 150_000);
    write_random(&src.join("z.bin"), 2, 4_000_000);
    let old = repo.backup(&[&src], &[]);
    fs::remove_file(src.join("z.bin")).unwrap();
    let live = repo.backup(&[&src], &[]);
    repo.run(&["forget", old["id"].as_str().unwrap()]).success();

    let planned = repo.run(&["gc", "--dry-run", "--json"]).success().json();
    let repack = planned["repack"].as_array().unwrap().len();
    let delete = planned["delete"].as_array().unwrap().len();
    assert!(
        repack >= 1 && delete >= 1,
        "the scenario has packs to repack and to delete: {planned}"
    );

    // No reserve (as where it could not be kept) and 100 KB free.
    fs::remove_file(repo.path.join("reserve")).unwrap();
    let size = repo.size() + 100_000;
    let out = run_in(&repo, size, &["verify"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("too little free space to set aside")
            && out.stderr.contains("make room on it"),
        "a check says when the reserve cannot be kept: {out}"
    );
    assert!(!repo.path.join("reserve").exists());
    let out = run_in(&repo, size, &["gc", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let done = out.json();
    assert_eq!(done["repack"].as_array().unwrap().len(), 0, "{done}");
    assert_eq!(done["delete"].as_array().unwrap().len(), delete, "{done}");
    let short = &done["repack_skipped"];
    assert!(
        short["free"].as_u64().unwrap() < short["needed"].as_u64().unwrap(),
        "{done}"
    );
    let out = run_in(&repo, size, &["gc"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(&format!(" {repack} repacked"))
            && !out.stdout.contains("left for later"),
        "the deletions made room for the repacking: {out}"
    );

    let target = repo.scratch("target");
    repo.restore(live["id"].as_str().unwrap(), &target, &[]);
    assert_same_contents(&src, &restored(&target, &src));
    let out = repo.run(&["verify", "--read-data"]).success();
    assert!(out.stdout.contains("no errors"), "{out}");
}

/// A gc that frees nothing on a filesystem without a byte free gives its
/// reserve back to run, then sets aside again what there is room for, so
/// the next one still runs. When a little less than the whole reserve
/// was free again, it dropped the reserve whole, and whatever wrote next
/// took the space: no forget or gc could write even its lock.
#[test]
fn a_gc_that_frees_nothing_on_a_full_filesystem_keeps_a_reserve() {
    let repo = repo();
    let src = repo.scratch("src");
    write_random(&src.join("a.bin"), 1, 300_000);
    repo.backup(&[&src], &[]);
    let held = reserve_len(&repo);
    assert!(held >= PACK, "{held}");
    let size = repo.size() - 4096;
    let out = run_in(&repo, size, &["gc"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("too little free space"), "{out}");
    let kept = reserve_len(&repo);
    assert!(kept > held / 2 && kept < held, "{kept} of {held}: {out}");
    assert!(out.stderr.contains("is set aside"), "{out}");
    let out = run_in(&repo, size, &["gc"]);
    assert_eq!(out.code, 0, "the next gc runs too: {out}");
    assert!(reserve_len(&repo) > held / 2, "{out}");
}

/// `upgrade`, which gives the reserve back on a nearly full filesystem
/// as every exclusive lock does, sets it aside again after, as gc does:
/// until December 2026 it stayed gone until the next backup, even where
/// there was nothing to upgrade.
#[test]
fn an_upgrade_on_a_nearly_full_filesystem_keeps_a_reserve() {
    let repo = repo();
    let src = repo.scratch("src");
    write_random(&src.join("a.bin"), 2, 300_000);
    repo.backup(&[&src], &[]);
    let held = reserve_len(&repo);
    assert!(held >= PACK, "{held}");
    let size = repo.size() - 4096;
    let out = run_in(&repo, size, &["upgrade"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("nothing to do"), "{out}");
    let kept = reserve_len(&repo);
    assert!(kept > held / 2, "{kept} of {held}: {out}");
}

/// A forget with no room left, none set aside either (the reserve deleted
/// by hand), fails at its first write with the kernel's error and says
/// what to do (until December 2026 the error came bare); the repository
/// is as it was, and with room it runs.
#[test]
fn a_forget_without_room_or_reserve_says_what_to_do() {
    let repo = repo();
    let src = repo.scratch("src");
    write_random(&src.join("a.bin"), 3, 700_000);
    repo.backup(&[&src], &[]);
    write_random(&src.join("a.bin"), 4, 700_000);
    let second = repo.backup(&[&src], &[]);
    fs::remove_file(repo.path.join("reserve")).unwrap();
    let out = run_in(&repo, repo.size(), &["forget", "--keep-last", "1", "--gc"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("No space left on device"), "{out}");
    assert!(
        out.stderr.contains("free some space on it") && out.stderr.contains("run it again"),
        "{out}"
    );
    // No reserve was there to give back, which is said.
    assert!(
        out.stderr
            .contains("no room set aside for this command is left"),
        "{out}"
    );
    assert_eq!(repo.snapshots().len(), 2, "not even its lock fitted: {out}");
    let out = run_in(
        &repo,
        repo.size() + 4 * PACK,
        &["forget", "--keep-last", "1", "--gc"],
    );
    assert_eq!(out.code, 0, "{out}");
    let target = repo.scratch("target");
    repo.restore(second["id"].as_str().unwrap(), &target, &[]);
    assert_same_contents(&src, &restored(&target, &src));
}

/// A filesystem with less room than a pack beside the repository keeps
/// the least reserve worth having (the index and 256 KiB) from `init`
/// on, so that once backups fill it, forget and gc still run: until
/// December 2026 it kept none, and they could not take their locks.
#[test]
fn a_filesystem_smaller_than_a_pack_still_keeps_forget_and_gc_running() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo {
        path: dir.path().join("repo"),
        dir,
    };
    let size = 1_000_000;
    let mut init = vec!["init"];
    init.extend_from_slice(FAST_INIT);
    init.extend_from_slice(&["--pack-size", "1M"]);
    let out = run_in(&repo, size, &init);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("too little free space to set aside"),
        "{out}"
    );
    let held = reserve_len(&repo);
    assert!((256 << 10..PACK).contains(&held), "{held} bytes set aside");

    let src = repo.scratch("src");
    let mut stored = Vec::new();
    for i in 0..6 {
        write_random(&src.join("data.bin"), 40 + i, 250_000);
        let out = backup_in(&repo, size, &src);
        if out.code != 0 {
            assert!(out.stderr.contains("No space left on device"), "{out}");
            break;
        }
        stored.push(i);
    }
    assert!(
        (1..6).contains(&stored.len()),
        "some backups fit, and the filesystem filled: {stored:?}"
    );
    let out = run_in(&repo, size, &["forget", "--keep-last", "1", "--gc"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("nearly full: using the"), "{out}");
    assert_eq!(repo.snapshots().len(), 1, "{out}");
    let out = run_in(&repo, size, &["verify", "--read-data"]);
    assert_eq!(out.code, 0, "{out}");
}

/// A reserve a few bytes short of what is wanted is said in bytes, not
/// as "1.0 MiB is set aside" of 1.0 MiB wanted.
#[test]
fn a_reserve_a_little_short_is_said_in_bytes() {
    let repo = repo();
    let src = repo.scratch("src");
    // An index of some KiB, so that the reserve short of it by more than
    // a lock file still reads as 1.0 MiB.
    for i in 0..400 {
        write_random(&src.join(format!("{i}.bin")), i, 100);
    }
    repo.backup(&[&src], &[]);
    let index: u64 = fs::read_dir(repo.path.join("index"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let wanted = PACK + index;
    let reserve = fs::OpenOptions::new()
        .write(true)
        .open(repo.path.join("reserve"))
        .unwrap();
    assert!(wanted - 8000 > PACK, "both read 1.0 MiB: {index}");
    reserve.set_len(wanted - 8000).unwrap();
    let out = run_in(&repo, repo.size() + 4000, &["verify"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "set aside the {wanted} bytes that forget and gc need when it is full: {} bytes is \
             set aside",
            wanted - 8000
        )),
        "{out}"
    );
    // gc's report carries it, as every warning gc gives, and it is said
    // once.
    let out = run_in(&repo, repo.size() + 4000, &["gc", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let said = "too little free space to set aside";
    assert_eq!(out.stderr.matches(said).count(), 1, "{out}");
    let warnings = out.json()["warnings"].as_array().unwrap().clone();
    assert!(
        warnings
            .iter()
            .filter_map(|w| w.as_str())
            .any(|w| w.contains(said)),
        "{out}"
    );
}
