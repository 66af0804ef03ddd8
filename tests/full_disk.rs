//! Real full filesystems, not the stand-in of tests/space.rs: a tmpfs of a
//! few MiB, mounted in a private mount namespace (`unshare -m`, as root),
//! holds the repository or a restore's target, and the kernel's own
//! "no space left on device" meets every write path (packs streamed with
//! direct IO, index tables, snapshots, restored files). Nothing may be
//! lost, the error must say what happened, and what frees space must
//! still run.
//!
//! Without the rights to make a mount namespace the tests fail, saying
//! so: a full-disk test that finds no small filesystem checks nothing.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// A repository whose filesystem fills in the middle of a backup: the
/// backup fails with the kernel's error and publishes nothing; snapshots,
/// verify, gc and a smaller backup then run on that same full
/// filesystem; the first snapshot restores identically throughout.
#[test]
fn a_repository_on_a_filesystem_that_fills_loses_nothing() {
    let mut init = FAST_INIT.to_vec();
    init.extend_from_slice(&["--pack-size", "1M"]);
    let outside = Repo::with_init_args(&init);
    let src = outside.scratch("src");
    for i in 0..3 {
        write_random(&src.join(format!("a{i}.bin")), i, 600_000);
    }
    let first = outside.backup(&[&src], &[]);
    let first = first["id"].as_str().unwrap().to_string();

    // Room for the repository as it is and three megabytes more; the
    // next backup brings twelve.
    let room = dir_size(&outside.path) + (3 << 20);
    let small = PrivateMount::tmpfs(&outside.scratch("small"), room);
    let repo = small.at.join("repo");
    small.copy_in(&outside.path, &repo);
    for i in 0..6 {
        write_random(&src.join(format!("b{i}.bin")), 10 + i, 2_000_000);
    }
    let cairn_in = |args: &[&str]| {
        let mut c = cairn();
        c.arg("-r").arg(&repo).args(args);
        c.env("CAIRN_PASSWORD", PASSWORD);
        small.run(&c)
    };

    let out = cairn_in(&["backup", src.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("No space left on device"), "{out}");
    assert!(
        out.stderr.contains("the repository's filesystem is full"),
        "the error says what happened: {out}"
    );
    assert!(!out.stderr.contains("panicked"), "{out}");

    let snaps = cairn_in(&["snapshots", "--json"]).success().json();
    let ids: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str()], "nothing of the failed backup shows");
    // Readers run on the full filesystem, and leave the space reserve to
    // the commands that free space.
    let reserve = || {
        let mut c = Command::new("stat");
        c.args(["-c", "%s"]).arg(repo.join("reserve"));
        let out = small.run(&c).success();
        out.stdout.trim().parse::<u64>().unwrap()
    };
    let held = reserve();
    assert!(held > 0, "the reserve is there");
    // An empty lock file, all a power cut leaves of one written just
    // before it: for unlock to remove below.
    let mut c = Command::new("touch");
    c.arg(repo.join("locks").join("ab".repeat(32)));
    small.run(&c).success();
    // Not a byte free: even a lock file does not fit.
    let filler = small.at.join("filler");
    let mut c = Command::new("sh");
    c.args(["-c", "cat /dev/zero > \"$1\"; true", "sh"])
        .arg(&filler);
    small.run(&c).success();
    let t0 = outside.scratch("t0");
    for args in [
        &["verify", "--read-data"][..],
        &["ls", "latest"],
        &["restore", "latest", "--target", t0.to_str().unwrap()],
    ] {
        let out = cairn_in(args);
        assert_eq!(out.code, 0, "{args:?} on the full filesystem: {out}");
        assert_eq!(reserve(), held, "{args:?} gave the reserve away: {out}");
        assert!(
            out.stderr.contains("going on without a lock"),
            "{args:?}: {out}"
        );
    }
    // unlock writes a lock of its own to read the store's clock where
    // there is a lock file to judge: on the reserve.
    let out = cairn_in(&["unlock"]);
    assert_eq!(out.code, 0, "unlock on the full filesystem: {out}");
    assert!(
        out.stdout
            .contains("0 lock(s) removed, and 1 lock file(s) that held none"),
        "{out}"
    );
    assert!(out.stderr.contains("using the"), "{out}");
    let mut c = Command::new("rm");
    c.arg(&filler);
    small.run(&c).success();

    // gc frees what the failed backup left.
    let out = cairn_in(&["gc"]);
    assert_eq!(out.code, 0, "gc on the full filesystem: {out}");
    let out = cairn_in(&["verify", "--read-data", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["warnings"], serde_json::json!([]), "{out}");

    // Without the new files the backup fits.
    for i in 0..6 {
        fs::remove_file(src.join(format!("b{i}.bin"))).unwrap();
    }
    write(&src.join("note.txt"), "a small change");
    let out = cairn_in(&["backup", "--json", src.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    let second = out.json()["id"].as_str().unwrap().to_string();

    // Both restore, read from the full filesystem.
    for (id, name) in [(&first, "t1"), (&second, "t2")] {
        let target = outside.scratch(name);
        let mut c = cairn();
        c.arg("-r")
            .arg(&repo)
            .args(["restore", id, "--target"])
            .arg(&target);
        c.env("CAIRN_PASSWORD", PASSWORD);
        let out = small.run(&c);
        assert_eq!(out.code, 0, "{out}");
        let got = restored(&target, &src);
        if id == &second {
            assert_same_contents(&src, &got);
        } else {
            for i in 0..3 {
                let f = format!("a{i}.bin");
                assert_eq!(
                    fs::read(got.join(&f)).unwrap(),
                    fs::read(src.join(&f)).unwrap(),
                    "{f}"
                );
            }
            assert!(!got.join("note.txt").exists());
        }
    }
}

/// A restore into a filesystem too small for it stops at the first write
/// that finds it full, with one error saying so, what it was writing and
/// how many entries are not restored (not a warning per file, and no
/// more packs read); every file it left under its own name is whole (the
/// others are not there at all) and no temporary file is left. Run again
/// once there is room, it restores the rest.
#[test]
fn a_restore_into_a_filesystem_that_fills_leaves_only_whole_files() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    for i in 0..8 {
        write_random(&src.join(format!("f{i}.bin")), i, 700_000);
    }
    write(&src.join("small/keep.txt"), "fits anywhere");
    repo.backup(&[&src], &[]);

    let small = PrivateMount::tmpfs(&repo.scratch("target"), 3 << 20);
    let restore = |extra: &[&str]| {
        let mut c = repo.cmd(&["restore", "latest", "--target"]);
        c.arg(&small.at).args(extra);
        small.run(&c)
    };
    let out = restore(&[]);
    let first = out.to_string();
    assert_eq!(out.code, 1, "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error, no warning per file: {out}");
    let error = lines[0];
    assert!(
        error.starts_with("error: the target's filesystem is full (")
            && error.contains("No space left on device")
            && error.contains(".bin: ")
            && error.contains("the restore stopped there")
            && error.contains("run the restore again"),
        "{out}"
    );

    // What is there, seen from inside: every file whole or absent.
    let listing = {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("cd \"$1\" && find . -type f -printf '%p %s\\n'")
            .args(["sh", small.at.to_str().unwrap()]);
        small.run(&c).success().stdout
    };
    let mut whole = 0;
    for line in listing.lines() {
        let (path, size) = line.rsplit_once(' ').unwrap();
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        assert!(
            !name.starts_with(".cairn-restore-"),
            "a temporary file is left: {listing}"
        );
        let rel = Path::new(path).strip_prefix(".").unwrap();
        let original = Path::new("/").join(rel);
        let want = fs::metadata(&original)
            .unwrap_or_else(|e| panic!("{path} is not from the snapshot ({e}): {listing}"))
            .len();
        assert_eq!(size.parse::<u64>().unwrap(), want, "{path} is cut short");
        whole += 1;
    }
    assert!(whole < 9, "the restore cannot have fitted: {listing}");

    // What fits restores into the same folder.
    let out = restore(&["--include", "keep.txt"]);
    assert_eq!(out.code, 0, "{out}");
    let mut c = Command::new("cat");
    c.arg(restored(&small.at, &src).join("small/keep.txt"));
    assert_eq!(small.run(&c).success().stdout, "fits anywhere");

    // With room, the same restore finishes the job, leaving alone what
    // is already there.
    let mut c = Command::new("mount");
    c.args(["-o", "remount,size=16m"]).arg(&small.at);
    small.run(&c).success();
    let out = restore(&[]);
    assert_eq!(out.code, 0, "{out}");
    // keep.txt, tiny, may have been among the files the first restore
    // finished.
    let kept = whole + usize::from(!listing.contains("/keep.txt "));
    assert!(
        out.stdout
            .contains(&format!("{} files written", 9 - kept))
            && out.stdout.contains(&format!("{kept} unchanged")),
        "the files restored before are left as they are: {out}\nfirst restore: {first}\nlisting:\n{listing}"
    );
    let mut c = Command::new("diff");
    c.arg("-r").arg(&src).arg(restored(&small.at, &src));
    small.run(&c).success();
}

/// `cairn ARGS` on `repo`, on one core: one worker, so the order of a
/// backup's blobs and of a restore's packs is fixed.
fn on_one_core(repo: &Repo, args: &[&str]) -> Command {
    let inner = repo.cmd(args);
    let mut c = Command::new("taskset");
    c.args(["-c", "0"])
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// A large file has its space reserved as it is created; a small file
/// that then finds the target full stops the restore, and the large file
/// is there whole. (With two workers, a small file could find the target
/// full while a large one was still being written; that one was given
/// up, the room it held unused, so such a restore wrote nothing, run
/// after run. The restore now stops only once the files whose space is
/// reserved are finished. One worker, as here, finishes the large file
/// first, so this checks the outcome, not that order.)
///
/// Chunks of 1 MiB exactly and packs of 1 MiB, on one core, fix the
/// order of the backup's blobs and of the restore's packs.
#[test]
fn a_restore_that_fills_its_target_finishes_the_files_whose_space_it_reserved() {
    let mut args = FAST_KDF_ONLY.to_vec();
    args.extend_from_slice(&[
        "--chunk-min",
        "1M",
        "--chunk-avg",
        "1M",
        "--chunk-max",
        "1M",
        "--pack-size",
        "1M",
    ]);
    let repo = Repo::with_init_args(&args);
    let src = repo.scratch("src");
    write_random(&src.join("b/small1.bin"), 1, 300_000);
    write_random(&src.join("b/small2.bin"), 2, 300_000);
    let large = (2 << 20) + 100_000;
    write_random(&src.join("a/large.bin"), 3, large);
    let mut c = on_one_core(&repo, &["backup"]);
    c.arg(&src);
    run(&mut c, None).success();

    // Room for the large file and 200 KB: not for a small one as well.
    let small = PrivateMount::tmpfs(&repo.scratch("target"), large as u64 + 200_000);
    let mut c = on_one_core(&repo, &["restore", "latest", "--target"]);
    c.arg(&small.at);
    let out = small.run(&c);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("the target's filesystem is full") && out.stderr.contains("small"),
        "a small file found it full: {out}"
    );
    assert!(out.stdout.contains(": 1 files written"), "{out}");
    let mut c = Command::new("cmp");
    c.arg(src.join("a/large.bin"))
        .arg(restored(&small.at, &src).join("a/large.bin"));
    small.run(&c).success();
}

/// On a target without unnamed files (`O_TMPFILE`: exFAT, FUSE, NFS), a
/// large file whose space cannot be reserved leaves no temporary file
/// behind, however many of its chunks the workers were delivering:
/// until December 2026 a second worker's chunk created the file again
/// under a new name, and the cleanup removed only the first, so the
/// second, its blocks reserved, stayed in the target.
#[test]
fn a_file_that_does_not_fit_leaves_no_temporary_file_behind() {
    // Small packs: a file's chunks lie in many, read by both workers.
    let mut args = FAST_INIT.to_vec();
    args.extend_from_slice(&["--pack-size", "1M"]);
    let repo = Repo::with_init_args(&args);
    let src = repo.scratch("src");
    write_random(&src.join("big.bin"), 40, 40 << 20);
    repo.backup(&[&src], &[]);
    // ext4 reserves what room it has before it refuses the rest.
    let small = PrivateMount::ext4_whole_seconds(&repo.scratch("target"), 24 << 20);
    for round in 0..3 {
        let target = small.at.join(format!("t{round}"));
        let mut c = Command::new("mkdir");
        c.arg(&target);
        small.run(&c).success();
        let mut c = repo.cmd(&["restore", "latest", "--target"]);
        c.arg(&target).env("CAIRN_NO_TMPFILE", "1");
        let out = small.run(&c);
        assert_eq!(out.code, 1, "{out}");
        let mut c = Command::new("find");
        c.arg(&target).args(["-type", "f"]);
        let files = small.run(&c).success().stdout;
        assert_eq!(
            files, "",
            "round {round}: nothing fits, nothing is left: {out}"
        );
    }
}

/// Files and folders below `dir`, `dir` itself not counted.
/// A backup of a new random file of `size` bytes into a copy of
/// `outside`'s repository on a tmpfs (named `name`) of `bytes` that holds
/// at most `inodes` files and folders.
fn backup_on_a_copy(outside: &Repo, name: &str, bytes: u64, inodes: u64, size: usize) -> Out {
    let mount = PrivateMount::tmpfs_inodes(&outside.scratch(name), bytes, inodes);
    let repo = mount.at.join("repo");
    mount.copy_in(&outside.path, &repo);
    let fresh = outside.scratch(&format!("{name}-source"));
    write_random(&fresh.join("new.bin"), 3, size);
    let mut c = cairn();
    c.arg("-r").arg(&repo).arg("backup").arg(&fresh);
    c.env("CAIRN_PASSWORD", PASSWORD);
    mount.run(&c)
}

fn entries_below(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            1 + if e.file_type().unwrap().is_dir() {
                entries_below(&e.path())
            } else {
                0
            }
        })
        .sum()
}

/// A repository on a filesystem out of inodes, not bytes: gc has no room
/// to repack, and leaves the repacking for later, as it does without the
/// bytes, rather than fail every run halfway into its first new pack. It
/// still deletes the packs nothing uses, which frees inodes, and says why
/// it did not repack. Before, every gc failed with "No space left on
/// device" while `df` showed gigabytes free.
#[test]
fn gc_out_of_inodes_deletes_what_it_can_and_leaves_the_repacking() {
    let mut init = FAST_INIT.to_vec();
    init.extend_from_slice(&["--pack-size", "1M"]);
    let outside = Repo::with_init_args(&init);
    let src = outside.scratch("src");
    // a.bin shares its pack with the start of z.bin; the rest of z.bin
    // fills packs of its own.
    write_random(&src.join("a.bin"), 1, 150_000);
    write_random(&src.join("z.bin"), 2, 4_000_000);
    let old = outside.backup(&[&src], &[]);
    fs::remove_file(src.join("z.bin")).unwrap();
    let live = outside.backup(&[&src], &[]);
    outside
        .run(&["forget", old["id"].as_str().unwrap()])
        .success();
    let planned = outside.run(&["gc", "--dry-run", "--json"]).success().json();
    let delete = planned["delete"].as_array().unwrap().len();
    assert!(
        !planned["repack"].as_array().unwrap().is_empty() && delete >= 1,
        "the scenario has packs to repack and to delete: {planned}"
    );

    // Gigabytes free, and inodes for the copy, the folder it is in, the
    // filesystem's root and three files more: a lock and an index table
    // fit, a new pack in a new folder besides them does not.
    let inodes = entries_below(&outside.path) + 2 + 3;
    let small = PrivateMount::tmpfs_inodes(&outside.scratch("few-inodes"), 1 << 30, inodes);
    let repo = small.at.join("repo");
    small.copy_in(&outside.path, &repo);
    let cairn_in = |args: &[&str]| {
        let mut c = cairn();
        c.arg("-r").arg(&repo).args(args);
        c.env("CAIRN_PASSWORD", PASSWORD);
        small.run(&c)
    };
    // On a copy with inodes for a lock and little more, a backup of new
    // data fails, naming inodes, not bytes, whose reserve would not help.
    let inodes = entries_below(&outside.path) + 2 + 2;
    let out = backup_on_a_copy(&outside, "tight", 1 << 30, inodes, 2_000_000);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("the repository's filesystem is out of inodes (file entries)"),
        "{out}"
    );
    let out = cairn_in(&["gc"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains(&format!("{delete} packs deleted, 0 repacked"))
            && out.stdout.contains("repacking left for later")
            && out.stdout.contains("free inodes (files and folders)")
            && out
                .stdout
                .contains("run gc again once this run's deletions"),
        "{out}"
    );
    let out = cairn_in(&["verify", "--read-data"]);
    assert_eq!(out.code, 0, "{out}");
    let target = outside.scratch("target");
    let mut c = cairn();
    c.arg("-r")
        .arg(&repo)
        .args(["restore", live["id"].as_str().unwrap(), "--target"])
        .arg(&target);
    c.env("CAIRN_PASSWORD", PASSWORD);
    let out = small.run(&c);
    assert_eq!(out.code, 0, "{out}");
    assert_same_contents(&src, &restored(&target, &src));
}

/// A repository filesystem whose bytes ran out while a few inodes are
/// left (fewer than would count as out of them alone) is said to be full,
/// or out of inodes, with the reserve that lets forget and gc run: it was
/// said to be out of inodes alone, "though it may have bytes free".
#[test]
fn a_filesystem_out_of_bytes_with_few_inodes_left_is_said_to_be_full() {
    let mut init = FAST_INIT.to_vec();
    init.extend_from_slice(&["--pack-size", "1M"]);
    let outside = Repo::with_init_args(&init);
    let src = outside.scratch("src");
    write_random(&src.join("a.bin"), 1, 100_000);
    outside.backup(&[&src], &[]);
    // tmpfs counts whole pages: a page more per entry is room to spare.
    let used = outside.size() + entries_below(&outside.path) * 4096;
    let inodes = entries_below(&outside.path) + 2 + 20;
    let out = backup_on_a_copy(&outside, "small", used + (2 << 20), inodes, 6_000_000);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("No space left on device"), "{out}");
    assert!(
        out.stderr
            .contains("the repository's filesystem is full (or out of inodes")
            && out
                .stderr
                .contains("`cairn forget` (with --gc) and `cairn gc` can still run"),
        "{out}"
    );
    assert!(
        !out.stderr.contains("though it may have bytes free"),
        "{out}"
    );
}

/// A restore target out of inodes, not bytes, is named so: "full" alone
/// sent the operator to `df -h`, which shows room.
#[test]
fn a_restore_target_out_of_inodes_says_so() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    for i in 0..20 {
        write(&src.join(format!("f{i:02}")), format!("file {i}"));
    }
    repo.backup(&[&src], &[]);
    let small = PrivateMount::tmpfs_inodes(&repo.scratch("few-inodes"), 64 << 20, 12);
    let mut c = repo.cmd(&["restore", "latest", "--target"]);
    c.arg(&small.at);
    let out = small.run(&c);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "the target's filesystem is out of inodes (file entries), though it may have bytes free"
        ),
        "{out}"
    );
}

/// An `init` whose config does not fit takes its key file back, so the
/// next `init`, once there is room, makes the repository (until December
/// 2026 it took the key file left for another `init`'s at work, and gave
/// way); an `init` on a filesystem with too little free to set the space
/// reserve aside says so.
#[test]
fn an_init_that_does_not_fit_leaves_no_claim_and_a_short_reserve_is_said() {
    let outside = Repo::new();
    let small = PrivateMount::tmpfs(&outside.scratch("small"), 64 << 10);
    let repo = small.at.join("r");
    let fill = small.at.join("fill");
    let sh = |script: &str| {
        let mut c = Command::new("sh");
        c.args(["-c", script, "sh"]).arg(&fill).arg(&repo);
        small.run(&c)
    };
    // One page of the sixteen left: room for the key file, not the config.
    sh("head -c 61440 /dev/zero > \"$1\"").success();
    let init = || {
        let mut c = cairn();
        c.arg("-r").arg(&repo).arg("init").args(FAST_INIT);
        c.env("CAIRN_PASSWORD", PASSWORD);
        small.run(&c)
    };
    let out = init();
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("No space left on device"), "{out}");
    let keys = sh("ls -A \"$2/keys\"").success();
    assert_eq!(keys.stdout, "", "no key file is left: {out}");

    sh("rm \"$1\"").success();
    let out = init();
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("too little free space to set aside"),
        "{out}"
    );
    let keys = sh("ls -A \"$2/keys\"").success();
    assert_eq!(keys.stdout.lines().count(), 1, "{out}");
}

/// A file that does not fit says how much room there is: on ext4, which
/// keeps what a failed allocation took, it said "0 B is available" with
/// megabytes free (until December 2026).
#[test]
fn a_file_that_does_not_fit_is_told_the_room_there_is() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write_random(&src.join("big.bin"), 41, 8 << 20);
    repo.backup(&[&src], &[]);
    let small = PrivateMount::ext4_whole_seconds(&repo.scratch("target"), 32 << 20);
    let mut c = Command::new("sh");
    c.args([
        "-c",
        "avail=$(df -B1 --output=avail \"$1\" | tail -1); \
         head -c $((avail - 5 * 1024 * 1024)) /dev/zero > \"$1/fill\"",
        "sh",
    ])
    .arg(&small.at);
    small.run(&c).success();
    let target = small.at.join("t");
    let mut c = repo.cmd(&["restore", "latest", "--target"]);
    c.arg(&target);
    let out = small.run(&c);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("the file needs 8.0 MiB"), "{out}");
    assert!(!out.stderr.contains(" 0 B is available"), "{out}");
    assert!(out.stderr.contains("MiB is available"), "{out}");
}
