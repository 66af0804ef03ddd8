//! The paths given to `cairn backup`: paths ending in `..`, `/` or `/.`,
//! and a symlink given with and without a trailing slash.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// The paths `cairn ls latest PATH` lists.
fn ls_latest(repo: &Repo, path: &Path) -> Vec<String> {
    let ls = repo
        .run(&["ls", "latest", path.to_str().unwrap()])
        .success();
    ls.stdout.lines().map(str::to_string).collect()
}

/// The files a snapshot holds, from its summary.
fn files(snap: &Value) -> u64 {
    let s = &snap["summary"];
    ["files_new", "files_changed", "files_unmodified"]
        .iter()
        .map(|k| s[k].as_u64().unwrap())
        .sum()
}

/// The paths a snapshot records as given.
fn paths(snap: &Value) -> Vec<String> {
    snap["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

/// `cairn backup --json ARGS` run in the folder `cwd`, stopped after
/// 30 seconds: a path taken wrongly for `/` backs up the whole system.
fn backup_in(repo: &Repo, cwd: &Path, args: &[&str]) -> Out {
    let mut c = repo.cmd(&["backup", "--json"]);
    c.args(args).current_dir(cwd);
    run_within(&mut c, 30)
        .unwrap_or_else(|| panic!("backup {args:?} still running after 30 s: backing up more?"))
}

/// A path ending in `..` names the folder it leads to (`..`, `../`,
/// `x/y/..`), not `/`.
#[test]
fn a_path_ending_in_dot_dot_backs_up_the_folder_it_names() {
    let repo = Repo::new();
    let base = repo.scratch("base");
    write(&base.join("x/f1.txt"), "one");
    write(&base.join("x/y/f2.txt"), "two");
    write(&base.join("beside.txt"), "not backed up");
    let x = PathBuf::from(abs(&base.join("x")));
    let y = base.join("x/y");
    for (cwd, arg) in [
        (&y, ".."),
        (&y, "../"),
        (&base, "x/y/.."),
        (&base, "x/y/../"),
    ] {
        let out = backup_in(&repo, cwd, &[arg]);
        assert_eq!(out.code, 0, "{arg}: {out}");
        let snap = out.json();
        assert_eq!(paths(&snap), vec![x.to_str().unwrap()], "{arg}");
        assert_eq!(files(&snap), 2, "{arg}: {snap:#}");
        let mut listed = ls_latest(&repo, &x);
        listed.sort();
        let expect: Vec<String> = ["f1.txt", "y", "y/f2.txt"]
            .iter()
            .map(|p| x.join(p).to_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, expect, "{arg}");
    }
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let r = restored(&target, &x);
    assert_eq!(fs::read_to_string(r.join("y/f2.txt")).unwrap(), "two");
    assert!(!r.parent().unwrap().join("beside.txt").exists());
}

/// A symlink to a folder given as `link/` or `link/.` is followed, as
/// POSIX resolves such a path: the folder it points to is backed up,
/// under its own path. Given as `link`, the link itself is, with a
/// warning that says how to back up the folder. A link to a file given
/// as `link/` names no folder: an error.
#[test]
fn a_symlink_given_with_a_trailing_slash_backs_up_its_folder() {
    let repo = Repo::new();
    let base = repo.scratch("base");
    write(&base.join("real/f1.txt"), "one");
    write(&base.join("real/sub/f2.txt"), "two");
    write(&base.join("file.txt"), "a file");
    symlink("real", base.join("link")).unwrap();
    symlink("file.txt", base.join("file-link")).unwrap();
    let real = PathBuf::from(abs(&base.join("real")));
    for arg in ["link/", "link/.", "link/sub/.."] {
        let out = backup_in(&repo, &base, &[arg]);
        assert_eq!(out.code, 0, "{arg}: {out}");
        assert!(!out.stderr.contains("symlink"), "{arg}: {out}");
        let snap = out.json();
        assert_eq!(paths(&snap), vec![real.to_str().unwrap()], "{arg}");
        assert_eq!(files(&snap), 2, "{arg}: {snap:#}");
        let listed = ls_latest(&repo, &real);
        assert!(
            listed.contains(&format!("{}/sub/f2.txt", real.display())),
            "{listed:?}"
        );
    }

    // Without the slash: the link, and a warning naming the way to the folder.
    let out = backup_in(&repo, &base, &["link"]);
    assert_eq!(out.code, 0, "{out}");
    let snap = out.json();
    let link = format!("{}/link", abs(&base));
    assert_eq!(paths(&snap), vec![link.clone()]);
    assert_eq!(files(&snap), 0, "{snap:#}");
    assert!(
        out.stderr.contains(&format!("{link} is a symlink"))
            && out.stderr.contains("give link/ to back up the folder"),
        "{out}"
    );
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let restored_link = target.join(link.strip_prefix('/').unwrap());
    assert_eq!(fs::read_link(restored_link).unwrap(), Path::new("real"));

    let out = backup_in(&repo, &base, &["file-link/"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("file-link/"), "{out}");
}
