//! A local repository on filesystems that lack what cairn uses: ramfs,
//! which refuses direct IO (mounted in a private mount namespace, as
//! root; without the rights to make one the test fails, saying so), and
//! one that cannot sync folders (older CIFS/SMB mounts, some FUSE
//! filesystems; faked with `CAIRN_TEST_NO_DIR_FSYNC`, see src/fault.rs).

mod common;

use std::fs;
use std::process::Command;

use common::*;

/// On a filesystem whose fsync of a folder fails with EINVAL, every
/// command runs, each with one warning naming the filesystem's lack;
/// what is written there is whole, and restores.
#[test]
fn a_filesystem_that_cannot_sync_folders_warns_once_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    for i in 0..4 {
        write_random(&src.join(format!("f{i}")), i, 300_000);
    }
    let run_cairn = |args: &[&str]| {
        let mut c = cairn();
        c.arg("-r").arg(&repo).args(args);
        c.env("CAIRN_PASSWORD", PASSWORD);
        c.env("CAIRN_TEST_NO_DIR_FSYNC", "1");
        run(&mut c, None)
    };
    let warned = |out: &Out| {
        let warnings = out
            .stderr
            .lines()
            .filter(|l| l.contains("cannot sync folders"))
            .count();
        assert_eq!(warnings, 1, "one warning, not one per folder: {out}");
        assert!(out.stderr.contains("Invalid argument"), "{out}");
    };
    let mut init = vec!["init"];
    init.extend_from_slice(FAST_INIT);
    let out = run_cairn(&init);
    assert_eq!(out.code, 0, "{out}");
    warned(&out);
    assert!(repo.join("config").is_file());
    for n in 0..2 {
        write_random(&src.join("changed"), 100 + n, 200_000);
        let out = run_cairn(&["backup", src.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{out}");
        warned(&out);
    }
    let out = run_cairn(&["forget", "--keep-last", "1", "--gc"]);
    assert_eq!(out.code, 0, "{out}");
    warned(&out);
    let out = run_cairn(&["verify", "--read-data"]);
    assert_eq!(out.code, 0, "{out}");
    let target = dir.path().join("target");
    let out = run_cairn(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    assert_same_contents(&src, &restored(&target, &src));
    let tmp: Vec<_> = list_paths(&repo)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    assert!(fs::read_dir(repo.join("snapshots")).unwrap().count() == 1);
}

/// A repository on ramfs, which refuses `O_DIRECT` when a file is opened
/// with it (having made the file): the packs a backup streams are written
/// buffered there, no temporary file is left, and what is stored
/// verifies, restores and is collected. (gc repacks nothing there: ramfs
/// reports no free space, so there is no room to set aside.)
#[test]
fn a_repository_on_a_filesystem_without_direct_io_works() {
    let outside = tempfile::tempdir().unwrap();
    let src = outside.path().join("src");
    write_random(&src.join("big"), 1, 3_000_000);
    write_random(&src.join("small"), 2, 1000);
    let ram = PrivateMount::ramfs(&outside.path().join("ram"));
    let repo = ram.at.join("repo");
    let cairn_in = |args: &[&str]| {
        let mut c = cairn();
        c.arg("-r").arg(&repo).args(args);
        c.env("CAIRN_PASSWORD", PASSWORD);
        let out = ram.run(&c);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert!(!out.stderr.contains("os error"), "{args:?}: {out}");
        out
    };
    let mut init = vec!["init", "--pack-size", "1M"];
    init.extend_from_slice(FAST_INIT);
    cairn_in(&init);
    cairn_in(&["backup", src.to_str().unwrap()]);
    write_random(&src.join("big"), 3, 3_000_000);
    cairn_in(&["backup", src.to_str().unwrap()]);
    cairn_in(&["forget", "--keep-last", "1"]);
    let gc = cairn_in(&["gc", "--json"]).json();
    assert!(!gc["delete"].as_array().unwrap().is_empty(), "{gc}");
    cairn_in(&["verify", "--read-data"]);
    let target = outside.path().join("target");
    cairn_in(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_contents(&src, &restored(&target, &src));
    let mut find = Command::new("find");
    find.arg(&repo).args(["-name", ".tmp-*"]);
    let left = ram.run(&find).success();
    assert!(left.stdout.is_empty(), "{left}");
}
