//! The paths given to `cairn backup`: paths ending in `..`, `/` or `/.`,
//! a symlink given with and without a trailing slash, a mount point given
//! with `--one-file-system`, and a path given inside a folder an exclude
//! pattern leaves out.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// What the `--one-file-system` test backs up: a folder `parent` on the
/// filesystem of the folder above it, holding the mount point `mount`,
/// which holds `inside` on its own filesystem and, unless `below` is
/// `None`, a mount point of a third filesystem with a file on it.
struct Mounts {
    parent: PathBuf,
    mount: PathBuf,
    inside: PathBuf,
    below: Option<(PathBuf, PathBuf)>,
    /// Whether every command runs in a private mount namespace of its own
    /// that mounts the two tmpfs first: nothing is mounted outside it, so
    /// nothing is left mounted, whatever becomes of the test.
    namespace: bool,
    /// The folder holding `inside` when it is not ours to mount.
    _probe: Option<tempfile::TempDir>,
}

/// Mounts two tmpfs (at `$MNT` and `$MNT/deeper`) with a file on each,
/// then runs the command given after it.
const MOUNT_AND_RUN: &str = "set -e
mount -t tmpfs -o size=1m tmpfs \"$MNT\"
echo on its own filesystem > \"$MNT/inside.txt\"
mkdir \"$MNT/deeper\"
mount -t tmpfs -o size=1m tmpfs \"$MNT/deeper\"
echo on a third filesystem > \"$MNT/deeper/hidden.txt\"
exec \"$@\"";

impl Mounts {
    /// Two tmpfs in a private mount namespace (`unshare -m`, as root);
    /// where that is refused, /dev/shm, a mount point in /dev on any
    /// Linux system. Fails the test when neither is there: a test of
    /// mount points that finds none checks nothing.
    fn new(repo: &Repo) -> Mounts {
        let namespace = mount_namespace();
        if namespace {
            let parent = repo.scratch("src");
            write(&parent.join("here.txt"), "on the same filesystem");
            let mount = parent.join("m");
            fs::create_dir(&mount).unwrap();
            let (parent, mount) = (PathBuf::from(abs(&parent)), PathBuf::from(abs(&mount)));
            return Mounts {
                inside: mount.join("inside.txt"),
                below: Some((mount.join("deeper"), mount.join("deeper/hidden.txt"))),
                parent,
                mount,
                namespace,
                _probe: None,
            };
        }
        let (dev, shm) = (Path::new("/dev"), Path::new("/dev/shm"));
        let mounted = fs::metadata(shm).is_ok_and(|m| m.dev() != fs::metadata(dev).unwrap().dev());
        assert!(
            mounted,
            "no mount point to test with: no private mount namespace (unshare -m), \
             and /dev/shm is not one"
        );
        eprintln!("NOTICE: no private mount namespace; testing on /dev and /dev/shm instead");
        let probe = tempfile::tempdir_in(shm).unwrap();
        let inside = probe.path().join("inside.txt");
        write(&inside, "on its own filesystem");
        Mounts {
            parent: dev.into(),
            mount: shm.into(),
            inside,
            below: None,
            namespace,
            _probe: Some(probe),
        }
    }

    /// `cairn backup --json --one-file-system PATHS`; the snapshot.
    fn backup(&self, repo: &Repo, paths: &[&Path]) -> Value {
        let mut c = repo.cmd(&["backup", "--json", "--one-file-system"]);
        c.args(paths);
        if self.namespace {
            let mut wrapped = Command::new("unshare");
            wrapped
                .args([
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    MOUNT_AND_RUN,
                    "sh",
                ])
                .env("MNT", &self.mount);
            c = wrapping(wrapped, &c);
        }
        let out = run(&mut c, None);
        // Others' files in /dev may come and go: exit code 3 then.
        let ok = out.code == 0 || (!self.namespace && out.code == 3);
        assert!(ok, "backup failed:\n{out}");
        out.json()
    }
}

/// With `--one-file-system`, a mount point given on the command line is
/// backed up whole, on its own filesystem, alone or given inside another
/// given path (as in `cairn backup / /home -x`); a mount point below a
/// given path is still kept empty.
#[test]
fn one_file_system_walks_a_given_mount_point_on_its_own_filesystem() {
    let repo = Repo::new();
    let m = Mounts::new(&repo);
    let inside = m.inside.to_str().unwrap().to_string();
    let under = |p: &Path| format!("{}/", p.display());

    // The mount point alone.
    let snap = m.backup(&repo, &[&m.mount]);
    assert_eq!(paths(&snap), vec![m.mount.to_str().unwrap()]);
    let listed = ls_latest(&repo, &m.mount);
    assert!(listed.contains(&inside), "stored empty: {listed:?}");
    if let Some((deeper, hidden)) = &m.below {
        // A mount point in it is left out.
        assert!(listed.contains(&deeper.to_str().unwrap().to_string()));
        assert!(
            !listed.iter().any(|p| p.starts_with(&under(deeper))),
            "{listed:?}"
        );
        assert!(!listed.contains(&hidden.to_str().unwrap().to_string()));
        assert_eq!(files(&snap), 1, "{snap:#}");
        assert_eq!(snap["summary"]["errors"], 0, "{snap:#}");
        // What was stored is the file on the mounted filesystem.
        let target = repo.scratch("target");
        repo.restore("latest", &target, &[]);
        let at = target.join(m.inside.strip_prefix("/").unwrap());
        assert_eq!(fs::read_to_string(at).unwrap(), "on its own filesystem\n");
    }

    // Given inside another given path.
    m.backup(&repo, &[&m.parent, &m.mount]);
    let listed = ls_latest(&repo, &m.parent);
    assert!(listed.contains(&inside), "stored empty: {listed:?}");
    if let Some((deeper, _)) = &m.below {
        assert!(listed.contains(&format!("{}/here.txt", m.parent.display())));
        assert!(
            !listed.iter().any(|p| p.starts_with(&under(deeper))),
            "{listed:?}"
        );
    }

    // Below a given path, a mount point is kept, empty.
    m.backup(&repo, &[&m.parent]);
    let listed = ls_latest(&repo, &m.parent);
    assert!(listed.contains(&m.mount.to_str().unwrap().to_string()));
    assert!(
        !listed.iter().any(|p| p.starts_with(&under(&m.mount))),
        "{listed:?}"
    );
}

/// With `--one-file-system`, a mount point within a given path that holds
/// another given path is walked only as the way down to it: its node says
/// it was not listed, and a mirror restore over the live tree leaves what
/// else the mounted filesystem holds. Its node said nothing was left out:
/// `backup / /var/lib/db -x` with /var a filesystem of its own, mirrored
/// onto `/`, emptied /var of all but lib/db.
#[test]
fn one_file_system_a_mount_point_above_a_given_path_keeps_what_it_holds() {
    let repo = Repo::new();
    let m = Mounts::new(&repo);
    let unknown = "(not listed by its backup)";
    let Some((deeper, hidden)) = &m.below else {
        // /dev/shm in /dev: a backup of /dev and a folder in /dev/shm.
        let probe = m._probe.as_ref().unwrap().path();
        m.backup(&repo, &[&m.parent, probe]);
        let line = long_line(&repo, &m.mount);
        assert!(line.ends_with(unknown), "{line}");
        return;
    };
    m.backup(&repo, &[&m.parent, deeper]);
    let line = long_line(&repo, &m.mount);
    assert!(line.ends_with(unknown), "{line}");

    // The live tree: what the mounted filesystem holds beside the way
    // down, and files deleted since in folders listed whole.
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let at = |p: &Path| target.join(p.strip_prefix("/").unwrap());
    assert!(at(hidden).is_file());
    write(&at(&m.inside), "on its own filesystem");
    write(&at(&m.mount.join("d/f.txt")), "on its own filesystem too");
    write(&at(&m.parent.join("deleted.txt")), "deleted since");
    write(&at(&deeper.join("deleted.txt")), "deleted since");
    let out = repo.restore("latest", &target, &["--policy", "mirror"]);
    assert!(at(&m.inside).is_file(), "removed: {out}");
    assert!(at(&m.mount.join("d/f.txt")).is_file(), "removed: {out}");
    assert!(!at(&m.parent.join("deleted.txt")).exists(), "{out}");
    assert!(!at(&deeper.join("deleted.txt")).exists(), "{out}");
    assert!(at(hidden).is_file(), "{out}");
    assert!(at(&m.parent.join("here.txt")).is_file(), "{out}");
}

/// A path given inside a folder that an exclude pattern leaves out is
/// backed up all the same (explicit beats pattern): with `--exclude
/// cache`, `src src/a/cache/keep` stores `src` without its caches but for
/// that one path, whose own contents the patterns still apply to.
#[test]
fn a_path_given_inside_an_excluded_folder_is_backed_up() {
    let repo = Repo::new();
    let base = repo.scratch("base");
    let src = base.join("src");
    write(&src.join("top.txt"), "top");
    write(&src.join("a/other.txt"), "other");
    write(&src.join("a/cache/dropped.txt"), "dropped");
    write(&src.join("a/cache/keep/f.txt"), "kept");
    write(
        &src.join("a/cache/keep/cache/deeper.txt"),
        "excluded within",
    );
    write(&src.join("b/cache/h.txt"), "dropped too");
    let out = backup_in(
        &repo,
        &base,
        &["src", "src/a/cache/keep", "--exclude", "cache"],
    );
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stderr.contains("warning"), "{out}");
    let src = PathBuf::from(abs(&src));
    let mut listed = ls_latest(&repo, &src);
    listed.sort();
    let expect: Vec<String> = [
        "/a",
        "/a/cache",
        "/a/cache/keep",
        "/a/cache/keep/f.txt",
        "/a/other.txt",
        "/b",
        "/top.txt",
    ]
    .iter()
    .map(|p| format!("{}{p}", src.display()))
    .collect();
    assert_eq!(listed, expect);
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let r = restored(&target, &src);
    assert_eq!(
        fs::read_to_string(r.join("a/cache/keep/f.txt")).unwrap(),
        "kept"
    );
}

/// The line of `cairn ls --long latest` for `path`.
fn long_line(repo: &Repo, path: &Path) -> String {
    let parent = path.parent().unwrap().to_str().unwrap();
    let ls = repo.run(&["ls", "--long", "latest", parent]).success();
    let path = path.display().to_string();
    ls.stdout
        .lines()
        .find(|l| l.ends_with(&path) || l.contains(&format!("{path} (")))
        .unwrap_or_else(|| panic!("{path} not listed: {ls}"))
        .to_string()
}

/// A folder within a given path that the walk takes only as the way down
/// to another given path (one an exclude matches, here) is not listed:
/// its node says so, and a mirror restore over the live tree leaves what
/// the folder holds beside the way down. Its node said nothing was left
/// out, and the mirror removed all the folder held but the way down. A
/// snapshot written that way (before December 2026) is restored as
/// safely: a folder between two given paths that holds nothing but the
/// way down is not pruned.
#[test]
fn a_mirror_leaves_what_an_excluded_folder_above_a_given_path_holds() {
    let repo = Repo::new();
    let base = repo.scratch("base");
    let src = base.join("src");
    write(&src.join("top.txt"), "top");
    write(&src.join("cache/a/keep/f.txt"), "kept");
    write(&src.join("cache/a/other.txt"), "excluded");
    write(&src.join("cache/b/g.txt"), "excluded");
    write(&src.join("cache/top.txt"), "excluded");
    let src = PathBuf::from(abs(&src));
    let args = ["src", "src/cache/a/keep", "--exclude", "cache"];
    for (n, old) in [(0, false), (1, true)] {
        let mut c = repo.cmd(&["backup", "--json"]);
        c.args(args).current_dir(&base);
        if old {
            c.env("CAIRN_TEST_WAY_DOWN_UNRECORDED", "1");
        }
        let out = run(&mut c, None);
        assert_eq!(out.code, 0, "{out}");
        let unknown = "(not listed by its backup)";
        for folder in ["cache", "cache/a"] {
            let line = long_line(&repo, &src.join(folder));
            assert_eq!(line.ends_with(unknown), !old, "{line}");
        }
        assert!(long_line(&repo, &src.join("cache/a/keep")).ends_with("/keep"));

        // The live tree, with files deleted since in folders listed whole.
        let target = repo.scratch(&format!("target{n}"));
        let r = restored(&target, &src);
        copy_dir(&src, &r);
        write(&r.join("deleted.txt"), "deleted since");
        write(&r.join("cache/a/keep/deleted.txt"), "deleted since");
        let out = repo.restore("latest", &target, &["--policy", "mirror"]);
        for kept in ["cache/a/other.txt", "cache/b/g.txt", "cache/top.txt"] {
            assert!(r.join(kept).is_file(), "old {old}: {kept} removed: {out}");
        }
        for gone in ["deleted.txt", "cache/a/keep/deleted.txt"] {
            assert!(!r.join(gone).exists(), "old {old}: {gone} kept: {out}");
        }
        assert!(
            out.stderr
                .contains("2 folder(s) whose backup left entries out"),
            "{out}"
        );
        assert_eq!(
            fs::read_to_string(r.join("cache/a/keep/f.txt")).unwrap(),
            "kept"
        );
    }
}

/// A repository inside the folder backed up (the default one lives in the
/// home directory) is left out, with a note, wherever the walk meets it,
/// even through a symlink given with a trailing `/`; a path given inside
/// it is refused, and nothing is written.
#[test]
fn the_repository_is_never_backed_up_into_itself() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    write(&home.join("notes.txt"), "kept");
    let repo_path = home.join(".local/share/cairn/default");
    let mut c = cairn();
    c.arg("-r").arg(&repo_path).arg("init").args(FAST_INIT);
    c.env("CAIRN_PASSWORD", PASSWORD);
    run(&mut c, None).success();
    let cmd = |args: &[&str]| {
        let mut c = cairn();
        c.arg("-r").arg(&repo_path).args(args);
        c.env("CAIRN_PASSWORD", PASSWORD);
        c
    };

    for _ in 0..2 {
        let mut c = cmd(&["backup", "--json"]);
        c.arg(&home);
        let out = run(&mut c, None);
        assert_eq!(out.code, 0, "{out}");
        let repo_abs = fs::canonicalize(&repo_path).unwrap();
        assert!(
            out.stderr.contains(&format!(
                "note: leaving out {}: it is the repository ({})",
                repo_abs.display(),
                repo_abs.display()
            )),
            "{out}"
        );
        let snap = out.json();
        assert_eq!(
            snap["summary"]["files_new"].as_u64().unwrap()
                + snap["summary"]["files_unmodified"].as_u64().unwrap(),
            1,
            "{snap:#}"
        );
    }
    let ls = run(&mut cmd(&["ls", "latest"]), None).success();
    let share = format!("{}/.local/share/cairn", abs(&home));
    assert!(ls.stdout.lines().any(|l| l == share), "{ls}");
    assert!(
        !ls.stdout.contains("/default"),
        "the repository is not in the snapshot:\n{ls}"
    );

    // A path in the repository, or leading into it, is refused.
    let link = home.join("to-repo");
    std::os::unix::fs::symlink(&repo_path, &link).unwrap();
    for given in [repo_path.join("packs"), repo_path.clone(), link.join("")] {
        let before = run(&mut cmd(&["snapshots", "--json"]), None)
            .success()
            .json();
        let mut c = cmd(&["backup"]);
        c.arg(&given);
        let out = run(&mut c, None);
        assert_eq!(out.code, 1, "{}: {out}", given.display());
        assert!(
            out.stderr
                .contains("a backup never stores its own repository or cache"),
            "{out}"
        );
        let after = run(&mut cmd(&["snapshots", "--json"]), None)
            .success()
            .json();
        assert_eq!(before, after, "nothing is written");
    }
}

/// A folder on the way down to a given path that is a file by the time
/// the walk reaches it (replaced during the backup) is reported, with
/// exit code 3: the paths given beneath it are not backed up, and the
/// file is stored only if it was given itself.
#[test]
fn a_folder_on_the_way_to_a_given_path_replaced_by_a_file_is_reported() {
    for also_given in [false, true] {
        let repo = Repo::new();
        let base = repo.scratch("base");
        write(&base.join("t/z/d/c.txt"), "below");
        write(&base.join("t/e.txt"), "beside");
        let mut args = vec!["t/z/d/c.txt", "t/e.txt"];
        if also_given {
            args.push("t/z/d");
        }
        let mut c = repo.cmd(&["backup", "--json"]);
        c.args(&args)
            .current_dir(&base)
            .env("CAIRN_TEST_FOLDER_TO_FILE", "d");
        let out = run(&mut c, None);
        assert_eq!(out.code, 3, "{out}");
        let d = abs(&base.join("t/z/d"));
        assert!(
            out.stderr.contains(&format!(
                "{d}: not a directory, so the paths given beneath it are not backed up"
            )),
            "{out}"
        );
        assert_eq!(
            fs::read_to_string(base.join("t/z/d")).unwrap(),
            "a file now\n"
        );
        let t = PathBuf::from(abs(&base.join("t")));
        let mut listed = ls_latest(&repo, &t);
        listed.sort();
        let mut want = vec!["/e.txt", "/z"];
        if also_given {
            want.push("/z/d");
        }
        let want: Vec<String> = want.iter().map(|p| format!("{}{p}", t.display())).collect();
        assert_eq!(listed, want, "{out}");
    }
}

/// Two folders whose names differ only in bytes that are not UTF-8 are
/// two paths, two default sets and two retention groups: neither is the
/// other's parent, and `forget --keep-last 1` keeps the one snapshot of
/// each (they shared one, as U+FFFD, so it removed one folder's only
/// snapshot).
#[test]
fn paths_that_are_not_utf8_keep_their_sets_apart() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let repo = Repo::new();
    let base = repo.scratch("base");
    let e9 = base.join(OsStr::from_bytes(b"caf\xe9"));
    let e8 = base.join(OsStr::from_bytes(b"caf\xe8"));
    write(&e9.join("a.txt"), "e9");
    write(&e8.join("b.txt"), "e8");
    let first = repo.backup(&[&e9], &[]);
    let second = repo.backup(&[&e8], &[]);
    let text = |p: &Path| p.to_str().map(str::to_string);
    assert_eq!(
        text(&base).map(|b| format!("{b}/caf\\xe9")),
        Some(paths(&first)[0].clone())
    );
    assert_eq!(
        text(&base).map(|b| format!("{b}/caf\\xe8")),
        Some(paths(&second)[0].clone())
    );
    assert_ne!(first["set"], second["set"]);
    assert_eq!(
        second["kind"], "full",
        "the other folder is no parent: {second}"
    );

    let out = repo.run(&["forget", "--keep-last", "1"]).success();
    assert!(out.stdout.contains("removed 0 snapshot"), "{out}");
    assert_eq!(repo.snapshots().len(), 2);
}

/// An error naming a path whose bytes are not UTF-8 shows them as `ls`
/// does (`\xe9`), not as U+FFFD: two such names stay two in a message.
#[test]
fn messages_name_bytes_that_are_not_utf8_as_escapes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let repo = Repo::new();
    let base = repo.scratch("base");
    let e9 = base.join(OsStr::from_bytes(b"caf\xe9"));
    write(&e9.join("a.txt"), "e9");
    repo.backup(&[&e9], &[]);
    let text = base.to_str().unwrap();

    // Asked of a snapshot: the path it does not hold.
    let mut c = repo.cmd(&["ls", "latest"]);
    c.arg(e9.join(OsStr::from_bytes(b"gone\xe8")));
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    let want = format!("{text}/caf\\xe9/gone\\xe8 in the snapshot");
    assert!(out.stderr.contains(&want), "{want}: {out}");
    assert!(!out.stderr.contains('\u{fffd}'), "{out}");
    // A folder on the way missing: it, and the path asked for.
    let mut c = repo.cmd(&["ls", "latest"]);
    c.arg(e9.join(OsStr::from_bytes(b"gone\xe8/deeper/f")));
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    let want = format!(
        "path {text}/caf\\xe9/gone\\xe8 in the snapshot, on the way to \
         {text}/caf\\xe9/gone\\xe8/deeper/f, not found"
    );
    assert!(out.stderr.contains(&want), "{want}: {out}");

    // Given to a backup: the path that does not exist.
    let mut c = repo.cmd(&["backup"]);
    c.arg(base.join(OsStr::from_bytes(b"caf\xe8")));
    let out = run(&mut c, None);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains(&format!("{text}/caf\\xe8")), "{out}");
    assert!(!out.stderr.contains('\u{fffd}'), "{out}");
}

/// A repository whose folder's name is not UTF-8 (named on a system of
/// another encoding) is opened by `-r` and by `CAIRN_REPO` alike: both
/// refused it as an argument holding invalid UTF-8, exit 2.
#[test]
fn a_repository_path_that_is_not_utf8_is_a_path() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let repo = Repo::new();
    let place = repo.scratch("base").join(OsStr::from_bytes(b"r\xe9po"));
    fs::create_dir_all(place.parent().unwrap()).unwrap();
    let src = repo.scratch("src");
    write(&src.join("f"), "f");
    let cmd = |args: &[&str]| {
        let mut c = cairn();
        c.arg("-r")
            .arg(&place)
            .args(args)
            .env("CAIRN_PASSWORD", PASSWORD);
        c
    };
    let mut c = cmd(&["init"]);
    c.args(FAST_INIT);
    run(&mut c, None).success();
    let mut c = cmd(&["backup"]);
    c.arg(&src);
    run(&mut c, None).success();
    assert!(place.join("config").is_file());
    let mut c = cairn();
    c.args(["snapshots", "--json"])
        .env("CAIRN_REPO", &place)
        .env("CAIRN_PASSWORD", PASSWORD);
    let out = run(&mut c, None).success();
    assert_eq!(out.json().as_array().unwrap().len(), 1, "{out}");
}

/// A tree deeper than the open-file limit lets the walk hold a folder
/// open at each level (a loop of `mkdir d; cd d`, which any user can
/// make) is walked down to that depth: the folder below is stored empty
/// and named, the backup exits 3 with its snapshot written, and the
/// repository's own files still open. Until December 2026 the walk ran
/// out of descriptors and the backup failed with no snapshot.
#[test]
fn a_tree_deeper_than_the_open_file_limit_allows_is_walked_to_a_depth() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let mut deepest = src.clone();
    for _ in 0..200 {
        deepest.push("d");
    }
    fs::create_dir_all(&deepest).unwrap();
    write(&deepest.join("f"), "at the bottom");
    write(&src.join("top.txt"), "at the top");
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src);
    let out = run(&mut with_file_limit(c, 320), None);
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr
            .contains("folders deep, deeper than the 32 a backup walks"),
        "{out}"
    );
    assert_eq!(
        out.json()["unreadable"].as_array().unwrap().len(),
        1,
        "{out}"
    );
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let r = restored(&target, &src);
    assert_eq!(fs::read_to_string(r.join("top.txt")).unwrap(), "at the top");
    let depth = |p: &Path| p.components().count();
    let walked = fs::read_dir(&r).unwrap().count();
    assert_eq!(walked, 2, "top.txt and d");
    let mut last = r.clone();
    while last.join("d").is_dir() {
        last.push("d");
    }
    // The deepest folder stored lies one below the cap, empty.
    assert_eq!(depth(&last) - depth(&target), 33);
    assert_eq!(fs::read_dir(&last).unwrap().count(), 0);
}

/// A chain of folders each holding one subfolder (and a file after it)
/// is walked with a few threads, however deep. Each walker waiting for
/// its subfolder's thread lent its place to it, so until December 2026
/// such a chain had a thread a level, each with its stack: 1,635
/// threads and 600 MB for one 2,000 folders deep.
#[test]
fn a_deep_chain_of_folders_is_walked_with_a_few_threads() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    fs::create_dir_all(&src).unwrap();
    let mut at = src.clone();
    for level in 0..1_000 {
        at.push("a");
        fs::create_dir(&at).unwrap();
        write(&at.with_file_name("b"), format!("level {level}\n"));
    }
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src).env("CAIRN_TEST_WALK_THREADS", "1");
    let out = run(&mut c, None).success();
    let most: usize = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("walking threads at most: "))
        .unwrap_or_else(|| panic!("no count of walking threads: {out}"))
        .parse()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert!(most <= (4 * cores).max(8), "{most} walking threads: {out}");
    assert!(most >= 1, "the chain is walked on threads too: {out}");
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    // The comparison goes down a level a frame.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || assert_same_tree(&src, &restored(&target, &src)))
        .unwrap()
        .join()
        .unwrap();
}

/// A backup whose walking threads the system refuses (too many threads,
/// or too little address space for their stacks) walks those folders on
/// the thread that met them and stores the same tree, exit 0. Until
/// December 2026 it panicked and wrote no snapshot.
#[test]
fn a_backup_refused_walking_threads_walks_on_the_threads_it_has() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    for a in 0..6 {
        for b in 0..4 {
            write(&src.join(format!("d{a}/e{b}/f.txt")), format!("{a}/{b}\n"));
        }
    }
    let mut c = repo.cmd(&["backup", "--json"]);
    // Larger than any address space: every walking thread is refused.
    c.arg(&src)
        .env("CAIRN_TEST_WALK_STACK", (1u64 << 62).to_string());
    let out = run(&mut c, None).success();
    assert_eq!(out.json()["summary"]["files_new"], 24, "{out}");
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_same_tree(&src, &restored(&target, &src));
}
