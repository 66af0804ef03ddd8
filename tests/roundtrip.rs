//! Round trip: back up a tree full of awkward entries with the real binary,
//! restore it, and check the result is identical in content and metadata.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;

const SPARSE_SIZE: u64 = 16 << 20;

const XATTR_VALUE: &[u8] = b"value \x00\xff";

/// Builds the awkward tree under `root` (which must not exist); returns
/// whether the filesystem took the extended attribute.
fn build_tree(root: &Path) -> bool {
    fs::create_dir(root).unwrap();
    let p = |s: &str| root.join(s);

    // Nested directories and ordinary content.
    write(&p("docs/readme.txt"), "hello, restore\n".repeat(100));
    write_random(&p("docs/nested/deeper/deepest/file.bin"), 1, 300_000);
    write_random(&p("big.bin"), 2, 3 << 20);
    write(&p("docs/nested/small.txt"), "x");
    // Repeated content: the same chunks at several offsets and in several
    // files.
    let block = random_bytes(7, 700_000);
    write(&p("repeat/four.bin"), block.repeat(4));
    let mut two = block.repeat(2);
    two.extend(random_bytes(8, 123_457));
    write(&p("repeat/two-and-tail.bin"), two);

    // Empty file, empty directories (one nested in an otherwise empty dir).
    write(&p("empty_file"), "");
    fs::create_dir(p("empty_dir")).unwrap();
    fs::create_dir_all(p("only_dirs/a/b/c")).unwrap();

    // Odd names.
    write(&p("with space.txt"), "spaces");
    write(&p(" leading and trailing "), "blanks");
    write(&p("ünïcødé ☃ 文件.txt"), "unicode");
    write(&p("new\nline"), "newline in the name");
    write(&p("tab\there"), "tab");
    write(&p("-rf"), "dash");
    write(&p("[x]*?.txt"), "glob characters");
    write(&p("back\\slash"), "backslash");
    write(&root.join(os(b"not-utf8-\xff\xfe")), "invalid UTF-8 name");
    write(&p(&"n".repeat(255)), "longest name allowed");
    fs::create_dir(p("dir with ünïcødé\nand newline")).unwrap();
    write(&p("dir with ünïcødé\nand newline/inner file"), "inner");

    // Symlinks: relative, absolute, dangling, to a directory, a chain.
    fs::create_dir(p("links")).unwrap();
    std::os::unix::fs::symlink("../docs/readme.txt", p("links/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", p("links/abs")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", p("links/dangling")).unwrap();
    std::os::unix::fs::symlink("../docs", p("links/dirlink")).unwrap();
    std::os::unix::fs::symlink("rel", p("links/chain")).unwrap();
    std::os::unix::fs::symlink("target with space ☃", p("links/odd target")).unwrap();

    // Hard links: a group of three across directories, and a pair.
    write_random(&p("hard/a"), 3, 200_000);
    fs::hard_link(p("hard/a"), p("hard/b")).unwrap();
    fs::hard_link(p("hard/a"), p("docs/c-linked")).unwrap();
    write(&p("hard/x"), "pair");
    fs::hard_link(p("hard/x"), p("hard/y")).unwrap();

    // A sparse file: 16 MiB with three small islands of data.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(p("sparse.img")).unwrap();
        f.set_len(SPARSE_SIZE).unwrap();
        f.write_all_at(&random_bytes(4, 4096), 0).unwrap();
        f.write_all_at(&random_bytes(5, 4096), 8 << 20).unwrap();
        f.write_all_at(&random_bytes(6, 4096), SPARSE_SIZE - 4096)
            .unwrap();
    }
    // Files ending in zeros, which restore leaves unwritten: a hole after
    // the data of a large file, and a small file of zeros only.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(p("sparse-tail.img")).unwrap();
        f.write_all_at(&random_bytes(7, 4096), 0).unwrap();
        f.set_len(SPARSE_SIZE + 12345).unwrap();
    }
    fs::write(p("zeros.bin"), vec![0u8; 3000]).unwrap();
    let sparse_md = fs::metadata(p("sparse.img")).unwrap();
    assert!(
        sparse_md.blocks() * 512 < SPARSE_SIZE / 2,
        "the test filesystem does not keep files sparse"
    );

    // A FIFO.
    mkfifo(&p("pipe"), 0o640);

    // Modes.
    write(&p("modes/exec.sh"), "#!/bin/sh\necho hi\n");
    chmod(&p("modes/exec.sh"), 0o755);
    write(&p("modes/private"), "secret");
    chmod(&p("modes/private"), 0o600);
    write(&p("modes/readonly"), "ro");
    chmod(&p("modes/readonly"), 0o444);
    write(&p("modes/setuid"), "suid");
    chmod(&p("modes/setuid"), 0o4755);
    write(&p("modes/none"), "no permissions at all");
    chmod(&p("modes/none"), 0o000);
    fs::create_dir(p("modes/setgid_dir")).unwrap();
    chmod(&p("modes/setgid_dir"), 0o2750);
    fs::create_dir(p("modes/sticky_dir")).unwrap();
    chmod(&p("modes/sticky_dir"), 0o1777);
    fs::create_dir(p("modes/readonly_dir")).unwrap();
    write(&p("modes/readonly_dir/inside"), "inside a read-only dir");
    chmod(&p("modes/readonly_dir"), 0o555);
    chmod(&p("empty_dir"), 0o700);

    // Ownership (only root can give files away).
    if is_root() {
        std::os::unix::fs::chown(p("modes/private"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(p("links/rel"), Some(4321), Some(8765)).unwrap();
        std::os::unix::fs::chown(p("only_dirs/a"), Some(99), Some(98)).unwrap();
    }

    // An extended attribute. Filesystems without user xattrs are told
    // apart loudly rather than silently testing less.
    let xattrs = match xattr::set(p("docs/readme.txt"), "user.cairn.test", XATTR_VALUE) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("NOTICE: the test filesystem refuses user xattrs ({e}); they are not tested");
            false
        }
    };
    if xattrs {
        assert_eq!(
            xattr::get(p("docs/readme.txt"), "user.cairn.test")
                .unwrap()
                .as_deref(),
            Some(XATTR_VALUE)
        );
    }

    // Modification times: distinct, with nanoseconds, one before 1970;
    // directories last and deepest first, as writing into them moves them.
    let m = manifest(root);
    let mut paths: Vec<&PathBuf> = m.keys().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, rel) in paths.iter().enumerate() {
        let secs = 1_500_000_000 + 86_400 * i as i64;
        set_mtime(
            &root.join(rel),
            secs,
            (i as i64 * 7_919_111) % 1_000_000_000,
        );
    }
    set_mtime(&p("docs/nested/small.txt"), -1_000_000_000, 500);
    set_mtime(&p("docs/nested"), 1_234_567_890, 999_999_999);
    xattrs
}

#[test]
fn round_trip_preserves_content_and_metadata() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let xattrs = build_tree(&src);
    let before = manifest(&src);

    let snap = repo.backup(&[&src], &[]);
    assert_eq!(snap["summary"]["errors"], 0, "{snap:#}");
    assert_eq!(snap["kind"], "full");
    // Backing up must not disturb the source.
    assert_manifests_eq(&before, &manifest(&src), "source after backup");

    let target = repo.scratch("restore");
    let out = repo.restore("latest", &target, &[]);
    let got = restored(&target, &src);
    assert_same_tree(&src, &got);

    // The spec's explicit checks, beyond the manifest comparison.
    let ino = |rel: &str| fs::symlink_metadata(got.join(rel)).unwrap().ino();
    assert_eq!(ino("hard/a"), ino("hard/b"), "hard links restored as links");
    assert_eq!(ino("hard/a"), ino("docs/c-linked"));
    assert_eq!(ino("hard/x"), ino("hard/y"));
    assert_ne!(ino("hard/a"), ino("hard/x"));
    assert_eq!(
        fs::metadata(got.join("hard/a")).unwrap().nlink(),
        3,
        "{out}"
    );
    let sparse = fs::metadata(got.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), SPARSE_SIZE);
    assert_eq!(
        fs::metadata(got.join("sparse-tail.img")).unwrap().len(),
        SPARSE_SIZE + 12345
    );
    assert_eq!(fs::read(got.join("zeros.bin")).unwrap(), vec![0u8; 3000]);
    assert!(
        sparse.blocks() * 512 < SPARSE_SIZE,
        "sparse file restored with {} allocated bytes for {SPARSE_SIZE}",
        sparse.blocks() * 512
    );
    assert_eq!(
        fs::read_link(got.join("links/rel")).unwrap(),
        Path::new("../docs/readme.txt")
    );
    assert_eq!(
        fs::read_link(got.join("links/dangling")).unwrap(),
        Path::new("nowhere/at/all")
    );
    assert_eq!(
        fs::read(got.join("new\nline")).unwrap(),
        b"newline in the name"
    );
    assert_eq!(
        fs::read(got.join(os(b"not-utf8-\xff\xfe"))).unwrap(),
        b"invalid UTF-8 name"
    );
    if xattrs {
        assert_eq!(
            xattr::get(got.join("docs/readme.txt"), "user.cairn.test")
                .unwrap()
                .as_deref(),
            Some(XATTR_VALUE),
            "extended attribute restored"
        );
        // `ls --json` gives the value's bytes exactly, in hex (its text
        // form is lossy: the value is no UTF-8).
        let out = repo.run(&["ls", "latest", "--json"]).success();
        let readme: serde_json::Value = out
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["name"] == "readme.txt")
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(readme["xattrs"][0]["name"], "user.cairn.test", "{readme}");
        assert_eq!(
            readme["xattrs"][0]["name_hex"],
            hex::encode("user.cairn.test"),
            "{readme}"
        );
        assert_eq!(
            readme["xattrs"][0]["value_hex"],
            XATTR_VALUE
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "{readme}"
        );
    }
    let mt = fs::symlink_metadata(got.join("docs/nested/small.txt")).unwrap();
    assert_eq!((mt.mtime(), mt.mtime_nsec()), (-1_000_000_000, 500));

    // Nothing but the snapshot's own paths appears in the target.
    let top: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let first = got
        .strip_prefix(&target)
        .unwrap()
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_owned();
    assert_eq!(top, vec![first]);
    // No temporary files are left behind.
    for p in list_paths(&target) {
        assert!(
            !p.to_string_lossy().contains(".cairn-"),
            "leftover temporary file {p:?}"
        );
    }

    // Restoring again over the identical tree (merge) leaves it
    // identical, and writes no file but one of each of the two groups of
    // hard links: an inode of several names is never changed in place,
    // as one of them may lie outside the target.
    let again = repo.restore("latest", &target, &[]);
    assert!(
        again.stdout.contains(": 2 files written"),
        "second restore rewrote other files:\n{again}"
    );
    assert_same_tree(&src, &got);
}

#[test]
fn round_trip_of_a_single_file_and_of_several_paths() {
    let repo = Repo::new();
    let a = repo.scratch("a");
    let b = repo.scratch("b");
    write_random(&a.join("one.bin"), 10, 700_000);
    write(&b.join("sub/two.txt"), "two");
    set_mtime(&a.join("one.bin"), 1_600_000_000, 42);
    let file = a.join("one.bin");

    // Several paths in one snapshot.
    repo.backup(&[&a, &b], &[]);
    let t1 = repo.scratch("t1");
    repo.restore("latest", &t1, &[]);
    assert_same_tree(&a, &restored(&t1, &a));
    assert_same_tree(&b, &restored(&t1, &b));

    // A single file as the backed-up path.
    repo.backup(&[&file], &[]);
    let t2 = repo.scratch("t2");
    repo.restore("latest", &t2, &[]);
    let got = restored(&t2, &file);
    assert_eq!(fs::read(&got).unwrap(), fs::read(&file).unwrap());
    let md = fs::metadata(&got).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 42));
    // The directory holding it is in the snapshot, but none of its other
    // entries.
    assert_eq!(
        list_paths(&restored(&t2, &a)),
        vec![PathBuf::from("one.bin")]
    );
}

/// A file time past what a node's nanoseconds hold (the year 2262) is
/// clamped to the last one they hold, and restored as that, where its
/// computation overflowed (a panic in a debug build, a wrapped time in a
/// release build); a time just inside round-trips to the nanosecond.
#[test]
fn a_file_time_past_2262_is_clamped_and_one_inside_round_trips() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("far.txt"), "from the year 2300");
    write(&src.join("near.txt"), "from the last nanosecond of 2262");
    // 2300-01-01T00:00:00Z, and the largest time an i64 of ns holds.
    let far = 10_413_792_000;
    let (last_secs, last_nsecs) = (i64::MAX / 1_000_000_000, i64::MAX % 1_000_000_000);
    set_mtime(&src.join("far.txt"), far, 5);
    set_mtime(&src.join("near.txt"), last_secs, last_nsecs);
    let md = fs::metadata(src.join("far.txt")).unwrap();
    if (md.mtime(), md.mtime_nsec()) != (far, 5) {
        eprintln!("NOTICE: the test filesystem does not keep the year 2300; not tested");
        return;
    }
    repo.backup(&[&src], &[]);
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let r = restored(&target, &src);
    for (name, secs, nsecs) in [
        ("far.txt", last_secs, last_nsecs),
        ("near.txt", last_secs, last_nsecs),
    ] {
        assert_eq!(
            fs::read(r.join(name)).unwrap(),
            fs::read(src.join(name)).unwrap()
        );
        let md = fs::metadata(r.join(name)).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), (secs, nsecs), "{name}");
    }
    // Backed up again, the far file is seen as unchanged.
    let again = repo.backup(&[&src], &[]);
    assert_eq!(again["summary"]["files_unmodified"], 2, "{again:#}");
}

/// Thousands of small files share a pack, which restore cuts into pieces
/// that workers take apart: every file comes back whole, including
/// those whose content another file in another piece shares.
#[test]
fn many_small_files_in_one_pack_restore_whole() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let mut rng = Rng::new(77);
    for i in 0..3000u64 {
        let path = src.join(format!("d{}/f{i:05}", i % 4));
        if i % 10 == 3 {
            // The same bytes as a file far earlier in the pack.
            write(&path, format!("shared content {}", i % 7));
        } else {
            let mut data = vec![0u8; 40 + (rng.next_u64() % 400) as usize];
            rng.fill(&mut data);
            write(&path, data);
        }
    }
    let snap = repo.backup(&[&src], &[]);
    assert_eq!(snap["summary"]["files_new"], 3000, "{snap}");
    let target = repo.scratch("target");
    let out = repo.restore("latest", &target, &[]);
    assert!(out.stdout.contains("3000 files written"), "{out}");
    assert_same_tree(&src, &restored(&target, &src));
    assert!(restore_leftovers(&target).is_empty());
}

/// Extended attributes follow every change across incremental backups:
/// a file's are read through the file whenever it is read (new, changed,
/// or with only its attributes changed, which moves its ctime) and taken
/// from the parent when it is unchanged; a directory's are read by path.
#[test]
fn extended_attributes_follow_changes_across_incremental_backups() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("d/kept.txt"), "kept\n");
    write(&src.join("d/tagged.txt"), "tagged\n");
    write_random(&src.join("d/big.bin"), 3, 2 << 20);
    if let Err(e) = xattr::set(src.join("d/tagged.txt"), "user.a", b"1") {
        eprintln!("NOTICE: the test filesystem refuses user xattrs ({e}); they are not tested");
        return;
    }
    xattr::set(src.join("d/big.bin"), "user.big", &[7u8; 300]).unwrap();
    xattr::set(src.join("d"), "user.dir", b"d").unwrap();
    let check = |label: &str| {
        let target = repo.scratch(&format!("restore-{label}"));
        repo.restore("latest", &target, &[]);
        assert_same_tree(&src, &restored(&target, &src));
    };
    assert_eq!(repo.backup(&[&src], &[])["kind"], "full");
    check("first");

    // Attributes changed, added and removed, contents untouched: each
    // file's ctime moves, so it is read again, its attributes with it.
    xattr::set(src.join("d/tagged.txt"), "user.a", b"2").unwrap();
    xattr::set(src.join("d/tagged.txt"), "user.b", b"new").unwrap();
    xattr::set(src.join("d/kept.txt"), "user.k", b"k").unwrap();
    xattr::remove(src.join("d/big.bin"), "user.big").unwrap();
    xattr::set(src.join("d"), "user.dir", b"changed").unwrap();
    let s = repo.backup(&[&src], &[]);
    assert_eq!(s["kind"], "incremental", "{s:#}");
    check("changed");

    // Nothing changed: every attribute comes from the parent.
    let s = repo.backup(&[&src], &[]);
    assert_eq!(s["summary"]["files_unmodified"], 3, "{s:#}");
    check("unchanged");
}

/// A file of several names (hard links) is read under one of them: its
/// other names take the chunks and extended attributes that read found,
/// when the walk saw them alike and the file had not changed for the
/// racy window before the backup began. One changed more recently is
/// read under each name, as before December 2026 every such file was.
/// Either way it restores as one file of several names.
#[test]
fn a_file_of_several_names_is_read_once() {
    use std::os::unix::fs::MetadataExt;
    let repo = Repo::new();
    let src = repo.scratch("src");
    let size = 3 << 20;
    write_random(&src.join("a/big"), 11, size);
    fs::create_dir_all(src.join("b")).unwrap();
    fs::hard_link(src.join("a/big"), src.join("a/big2")).unwrap();
    fs::hard_link(src.join("a/big"), src.join("b/big3")).unwrap();
    let xattrs = xattr::set(src.join("a/big"), "user.x", b"shared").is_ok();
    let backup = |window: &str| {
        let mut c = repo.cmd(&["backup", "--json", "--kind", "full"]);
        c.arg(&src).env("CAIRN_TEST_RACY_WINDOW_NS", window);
        run(&mut c, None).success().json()["summary"]["bytes_read"]
            .as_u64()
            .unwrap()
    };
    // Just made: read under each of its three names.
    assert_eq!(backup("2000000000"), 3 * size as u64);
    // Unchanged since before the backup began: read once.
    assert_eq!(backup("0"), size as u64);
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let out = restored(&target, &src);
    assert_same_tree(&src, &out);
    let ino = |p: &str| fs::metadata(out.join(p)).unwrap().ino();
    assert_eq!(ino("a/big"), ino("a/big2"));
    assert_eq!(ino("a/big"), ino("b/big3"));
    if xattrs {
        let x = xattr::get(out.join("b/big3"), "user.x").unwrap();
        assert_eq!(x.as_deref(), Some(&b"shared"[..]));
    }
}

/// A name of a file of several replaced by another file (renamed over
/// it, as rsync and editors save) between the walk's `stat` and its read:
/// the other names, which still hold the file the walk saw, are stored
/// with that file's bytes, not the newcomer's, and the replaced name is
/// warned of (exit 3). Until December 2026 every name took the
/// newcomer's bytes, exit 0, for a small file unchanged for a minute.
#[test]
fn a_name_of_several_replaced_before_its_read_gives_the_others_nothing() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write_random(&src.join("a"), 17, 3000);
    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    fs::hard_link(src.join("a"), src.join("c")).unwrap();
    let original = fs::read(src.join("a")).unwrap();
    let mut c = repo.cmd(&["backup", "--kind", "full"]);
    c.arg(&src)
        .env("CAIRN_TEST_RECENT_WINDOW_NS", "0")
        .env("CAIRN_TEST_REPLACE_BEFORE_READ", "a");
    let out = run(&mut c, None);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("replaced by another file"), "{out}");
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let out = restored(&target, &src);
    assert_eq!(fs::read(out.join("b")).unwrap(), original);
    assert_eq!(fs::read(out.join("c")).unwrap(), original);
    let flipped: Vec<u8> = original.iter().map(|b| !b).collect();
    assert_eq!(fs::read(out.join("a")).unwrap(), flipped);
}

/// A tree far deeper than a thread's stack takes a frame a level of (a
/// restore of 4,000 levels overflowed the main thread's 8 MiB, exit 134,
/// the target half restored) is backed up, listed, repaired and restored,
/// whole and from a path inside it.
#[test]
fn a_tree_thousands_of_folders_deep_is_restored() {
    const DEPTH: usize = 5_000;
    let repo = Repo::new();
    let src = repo.scratch("src");
    fs::create_dir(&src).unwrap();
    make_chain(&src, DEPTH, b"at the bottom\n");
    repo.backup(&[&src], &[]);

    let listed = repo.run(&["ls", "latest"]);
    assert_eq!(listed.code, 0, "{}", short_out(&listed));
    let beneath = format!("{}/", abs(&src));
    let lines = listed.stdout.lines().filter(|l| l.starts_with(&beneath));
    assert_eq!(lines.count(), DEPTH + 1, "{}", short_out(&listed));
    let repaired = repo.run(&["repair", "snapshots", "--dry-run"]).success();
    assert!(repaired.stdout.contains("0 snapshot(s)"), "{repaired}");

    let t = repo.scratch("whole");
    repo.restore("latest", &t, &[]);
    assert_eq!(
        read_chain(&restored(&t, &src)),
        (DEPTH, b"at the bottom\n".to_vec())
    );

    // From a path three levels down: the rest of the chain.
    let t = repo.scratch("part");
    repo.restore(&format!("latest:{}/a/a/a", abs(&src)), &t, &[]);
    assert_eq!(read_chain(&t), (DEPTH - 3, b"at the bottom\n".to_vec()));
}

/// `out` with its standard output cut short (a listing of thousands of
/// long paths).
fn short_out(out: &Out) -> String {
    format!(
        "exit {}, stderr: {}, stdout starts: {}",
        out.code,
        out.stderr,
        out.stdout.chars().take(200).collect::<String>()
    )
}

/// A restore ends once its files are on disk (a `syncfs` of the target's
/// filesystem), and says so when the disk refused a write meanwhile:
/// exit 1, naming the target, the files still in place. `--no-sync` and a
/// dry run do not sync.
#[test]
fn a_restore_whose_writes_the_disk_refused_says_so() {
    let (repo, src) = one_file_backed_up();
    let target = repo.scratch("target");
    let out = restore_with(&repo, &target, &[], "CAIRN_TEST_SYNC_EIO");
    assert_eq!(out.code, 1, "{out}");
    let said = format!(
        "error: {}: the restored files could not all be written to disk (Input/output error",
        target.display()
    );
    assert!(out.stderr.contains(&said), "{out}");
    assert_eq!(
        fs::read(restored(&target, &src).join("f")).unwrap(),
        b"data"
    );

    for extra in ["--no-sync", "--dry-run"] {
        let target = repo.scratch(&format!("target{extra}"));
        let out = restore_with(&repo, &target, &[extra], "CAIRN_TEST_SYNC_EIO").success();
        assert!(!out.stderr.contains("disk"), "{extra}: {out}");
    }
}

/// A repository holding a snapshot of one small file, and that file's
/// folder.
fn one_file_backed_up() -> (Repo, PathBuf) {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);
    (repo, src)
}

/// `restore latest [EXTRA] --target TARGET` with the test hook `hook` set.
fn restore_with(repo: &Repo, target: &Path, extra: &[&str], hook: &str) -> Out {
    let mut c = repo.cmd(&["restore", "latest"]);
    c.args(extra).arg("--target").arg(target).env(hook, "1");
    run(&mut c, None)
}

/// A target too full for an unnamed file is full, not one without them:
/// the restore stops with the full filesystem's error rather than create
/// its files under temporary names (which a restore killed then left
/// behind, and a merge never removed).
#[test]
fn a_target_too_full_for_unnamed_files_is_reported_full() {
    let (repo, _) = one_file_backed_up();
    let target = repo.scratch("target");
    let out = restore_with(&repo, &target, &[], "CAIRN_TEST_TMPFILE_FULL");
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("the target's filesystem is full")
            && out.stderr.contains("No space left on device"),
        "{out}"
    );
    let left = list_paths(&target);
    assert!(left.iter().all(|p| !target.join(p).is_file()), "{left:?}");
}

/// A sparse file comes back sparse where its data chunks hold zeros too:
/// a chunk is a megabyte or more, so one holding a little data among
/// holes was written whole, and a file of data scattered among holes took
/// many times its data restored (60 GiB holding 100 MiB took 1.2 GB). A
/// file with no chunk of zeros (no hole the size of one) is reserved
/// whole, as before: its zero blocks are written.
#[test]
fn a_sparse_file_restores_with_its_holes_inside_chunks_too() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let repo = Repo::new();
    let src = repo.scratch("src");
    fs::create_dir_all(&src).unwrap();
    let size = 48u64 << 20;
    let f = fs::File::create(src.join("disk.img")).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&random_bytes(21, 100_000), 0).unwrap();
    f.write_all_at(&random_bytes(22, 50_000), (20 << 20) + 777)
        .unwrap();
    f.write_all_at(&random_bytes(23, 10), size - 4000).unwrap();
    drop(f);
    // Dense: random, a run of zero blocks, random; no chunk of zeros.
    let mut dense = random_bytes(24, 1 << 20);
    dense.extend(vec![0u8; 256 << 10]);
    dense.extend(random_bytes(25, 2 << 20));
    write(&src.join("dense.db"), &dense);
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src).env("CAIRN_TEST_RECENT_WINDOW_NS", "0");
    run(&mut c, None).success();

    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let back = restored(&target, &src);
    let img = back.join("disk.img");
    assert!(fs::read(&img).unwrap() == fs::read(src.join("disk.img")).unwrap());
    let allocated = fs::metadata(&img).unwrap().blocks() * 512;
    let probe = target.join("probe");
    let p = fs::File::create(&probe).unwrap();
    p.set_len(1 << 20).unwrap();
    let keeps_holes = fs::metadata(&probe).unwrap().blocks() == 0;
    fs::remove_file(&probe).unwrap();
    if keeps_holes {
        assert!(
            allocated < 1 << 20,
            "{allocated} bytes allocated for 160,010 bytes of data"
        );
    }
    let db = back.join("dense.db");
    assert!(fs::read(&db).unwrap() == dense);
    assert!(
        fs::metadata(&db).unwrap().blocks() * 512 >= dense.len() as u64,
        "the dense file was not written whole"
    );
}

/// A sparse file's holes are told by the filesystem (`SEEK_DATA`), not
/// read: the backup says how many of the bytes it read were holes,
/// stores the chunks that reading the same bytes gives (a copy with its
/// zeros written out has the same chunk list), and the restore gives the
/// bytes back.
#[test]
fn holes_of_sparse_files_are_told_not_read_and_chunk_as_the_bytes_read_would() {
    use std::os::unix::fs::FileExt;
    let repo = Repo::new();
    let src = repo.scratch("src");
    let dense = repo.scratch("dense");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dense).unwrap();
    let size = 24u64 << 20;
    let f = fs::File::create(src.join("disk.img")).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&random_bytes(11, 5000), 0).unwrap();
    f.write_all_at(&random_bytes(12, 300_000), 9 << 20).unwrap();
    f.write_all_at(&random_bytes(13, 100), size - 100).unwrap();
    drop(f);
    let empty = fs::File::create(src.join("empty.img")).unwrap();
    empty.set_len((10 << 20) + 7).unwrap();
    drop(empty);
    let md = fs::metadata(src.join("disk.img")).unwrap();
    assert!(
        md.blocks() * 512 < size / 2,
        "the test filesystem does not keep files sparse"
    );
    for name in ["disk.img", "empty.img"] {
        fs::write(dense.join(name), fs::read(src.join(name)).unwrap()).unwrap();
    }
    let backup = |path: &Path| {
        let mut c = repo.cmd(&["backup", "--json", path.to_str().unwrap()]);
        // Files written a moment ago count as settled: holes are asked
        // only of files not changed in the minute before a backup.
        c.env("CAIRN_TEST_RECENT_WINDOW_NS", "0");
        run(&mut c, None).success().json()
    };
    let sparse = backup(&src);
    let told = sparse["bytes_in_holes"].as_u64().unwrap();
    let all = size + (10 << 20) + 7;
    assert!(
        (all - (1 << 20)..=all - 300_000).contains(&told),
        "{told} bytes told as holes of {all}: {sparse:#}"
    );
    assert_eq!(sparse["summary"]["bytes_read"], all, "{sparse:#}");
    let written = backup(&dense);
    assert_eq!(written["bytes_in_holes"], 0, "{written:#}");
    let chunks = |snap: &serde_json::Value, dir: &Path, name: &str| {
        let out = repo
            .run(&["ls", "--json", snap["id"].as_str().unwrap(), &abs(dir)])
            .success();
        let node: serde_json::Value = (out.stdout.lines())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {out}"));
        node["kind"]["file"]["chunks"].clone()
    };
    for name in ["disk.img", "empty.img"] {
        let got = chunks(&sparse, &src, name);
        assert!(got.as_array().is_some_and(|c| !c.is_empty()), "{got}");
        assert_eq!(got, chunks(&written, &dense, name), "{name}");
    }
    let target = repo.scratch("restored");
    repo.restore(sparse["id"].as_str().unwrap(), &target, &[]);
    for name in ["disk.img", "empty.img"] {
        let got = fs::read(restored(&target, &src).join(name)).unwrap();
        assert!(got == fs::read(src.join(name)).unwrap(), "{name} restored");
    }
}
