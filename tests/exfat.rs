//! Restores onto exFAT, as on a USB stick: an image mounted with
//! exfat-fuse in a private mount namespace (as root).
//!
//! There `README` and `readme` are one entry, so a snapshot holding both
//! cannot be restored whole: the first is, the others are named as
//! errors, and nothing is overwritten. A mirror never removes an entry
//! whose name is the snapshot's but for case. And exFAT has no hard
//! links: each link beyond the first is restored as a copy.
//!
//! Each restore is of the source folder itself (`SNAP:/path`): exFAT
//! keeps no modes, and refuses the sticky bit of `/tmp` above it.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Every file beneath `dir` on the mounted filesystem, as `path=content`
/// lines relative to `dir`, sorted.
fn files(stick: &PrivateMount, dir: &Path) -> Vec<String> {
    let out = stick.sh(&format!(
        "cd '{}' && find . -type f -exec sh -c 'printf \"%s=%s\\n\" \"$1\" \"$(cat \"$1\")\"' _ {{}} \\;",
        dir.display()
    ));
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Restores the latest snapshot's `src` folder into `target` on the stick.
fn restore_onto(stick: &PrivateMount, repo: &Repo, src: &Path, target: &Path) -> Out {
    let mut c = repo.cmd(&["restore", &format!("latest:{}", abs(src)), "--target"]);
    c.arg(target);
    stick.run(&c)
}

#[test]
fn names_differing_only_in_case_restore_the_first_and_name_the_others() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("README"), "upper");
    write(&src.join("Readme"), "mixed");
    write(&src.join("readme"), "lower");
    fs::create_dir(src.join("Docs")).unwrap();
    write(&src.join("Docs/a"), "a");
    fs::create_dir(src.join("docs")).unwrap();
    write(&src.join("docs/b"), "b");
    write(&src.join("other"), "other");
    // exFAT maps both σ and the final ς to Σ.
    write(&src.join("ΛΟΓΑΡΙΑΣΜΟΣ.txt"), "capitals");
    write(&src.join("Λογαριασμος.txt"), "small");
    repo.backup(&[&src], &[]);

    let stick = PrivateMount::exfat(&repo.scratch("stick"), 32 << 20);
    let snap = format!("latest:{}", abs(&src));
    let target = stick.at.join("restore");
    let mut restore = repo.cmd(&["restore", &snap, "--target"]);
    restore.arg(&target);
    let out = stick.run(&restore);
    assert_eq!(out.code, 1, "the twins are errors: {out}");
    for twin in ["Readme", "readme", "docs", "Λογαριασμος.txt"] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(&format!("/{twin}: not restored"))
                    && l.contains("does not tell its name from \"")),
            "{twin} is named: {out}"
        );
    }
    assert!(
        out.stderr.contains("restore finished with 4 error(s)"),
        "{out}"
    );
    assert_eq!(
        files(&stick, &target),
        [
            "./Docs/a=a",
            "./README=upper",
            "./other=other",
            "./ΛΟΓΑΡΙΑΣΜΟΣ.txt=capitals"
        ],
        "the first of each name is restored, and nothing over it"
    );

    // A dry run into another folder there says the same, and makes
    // nothing.
    let again = stick.at.join("again");
    let mut dry = repo.cmd(&["restore", &snap, "--dry-run", "--target"]);
    dry.arg(&again);
    let out = stick.run(&dry);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("/readme: not restored"), "{out}");
    assert!(
        out.stderr.contains("the restore would meet 4 error(s)"),
        "{out}"
    );
    assert_eq!(
        stick.sh(&format!("ls -A '{}'", stick.at.display())).trim(),
        "restore",
        "a dry run makes nothing"
    );

    // Restored on its own, into a folder of its own, the twin comes back.
    let twin = stick.at.join("twin");
    let mut one = repo.cmd(&["restore", &format!("{snap}/readme"), "--target"]);
    one.arg(&twin);
    let out = stick.run(&one);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(files(&stick, &twin), ["./readme=lower"]);
}

#[test]
fn a_mirror_keeps_an_entry_whose_name_changed_only_in_case() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("notes.txt"), "my notes");
    write(&src.join("gone"), "removed from the source");
    repo.backup(&[&src], &[]);

    let stick = PrivateMount::exfat(&repo.scratch("stick"), 32 << 20);
    let snap = format!("latest:{}", abs(&src));
    let target = stick.at.join("mirror");
    let mirror = || {
        let mut c = repo.cmd(&["restore", &snap, "--policy", "mirror", "--target"]);
        c.arg(&target);
        stick.run(&c)
    };
    let out = mirror();
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        files(&stick, &target),
        ["./gone=removed from the source", "./notes.txt=my notes"]
    );

    // Renamed in case only: same size, same modification time.
    fs::rename(src.join("notes.txt"), src.join("Notes.txt")).unwrap();
    fs::remove_file(src.join("gone")).unwrap();
    repo.backup(&[&src], &[]);
    let out = mirror();
    assert_eq!(out.code, 0, "{out}");
    let left = files(&stick, &target);
    assert_eq!(left.len(), 1, "only the notes are left: {left:?}");
    assert!(
        left[0].eq_ignore_ascii_case("./notes.txt=my notes"),
        "the notes are still there: {left:?}"
    );
}

/// A mirror prunes nothing beneath a folder that has a twin: what the
/// target holds there may be the twin's, which the snapshot has too.
#[test]
fn a_mirror_prunes_nothing_beneath_a_folder_with_a_twin() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("Docs/a"), "a");
    write(&src.join("docs/b"), "b");
    write(&src.join("other"), "other");
    repo.backup(&[&src], &[]);

    let stick = PrivateMount::exfat(&repo.scratch("stick"), 32 << 20);
    let target = stick.at.join("mirror");
    // The stick holds `docs` as an earlier restore of it alone left it,
    // and a file the snapshot lacks.
    stick.sh(&format!(
        "mkdir -p '{t}/docs' && echo b > '{t}/docs/b' && echo x > '{t}/extra'",
        t = target.display()
    ));
    let mut c = repo.cmd(&[
        "restore",
        &format!("latest:{}", abs(&src)),
        "--policy",
        "mirror",
        "--target",
    ]);
    c.arg(&target);
    let out = stick.run(&c);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("/docs: not restored"), "{out}");
    assert_eq!(
        files(&stick, &target),
        ["./docs/a=a", "./docs/b=b", "./other=other"],
        "the twin's file stays; what the snapshot lacks goes"
    );
}

/// exFAT has no hard links: every path of an inode is restored, each
/// link beyond the first as a copy with its content, and a warning says
/// so; nothing is an error.
#[test]
fn hard_links_are_restored_as_copies_where_the_target_has_none() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "shared content");
    fs::hard_link(src.join("f"), src.join("g")).unwrap();
    fs::create_dir(src.join("sub")).unwrap();
    fs::hard_link(src.join("f"), src.join("sub/h")).unwrap();
    repo.backup(&[&src], &[]);

    let stick = PrivateMount::exfat(&repo.scratch("stick"), 32 << 20);
    let target = stick.at.join("t");
    let out = restore_onto(&stick, &repo, &src, &target);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stderr.matches("restored as a copy of").count(),
        2,
        "each copy is named: {out}"
    );
    assert_eq!(
        files(&stick, &target),
        [
            "./f=shared content",
            "./g=shared content",
            "./sub/h=shared content"
        ]
    );
}

/// exFAT keeps no set-user-ID, set-group-ID or sticky bit (exfat-fuse
/// refuses a mode holding one, and drops the other bits without a
/// word): each such entry is restored with the rest of its mode, and
/// one warning counts them, exit 0. Each was an error (so a restore of
/// anything beneath `/tmp`, mode 1777, failed there).
#[test]
fn set_id_and_sticky_bits_the_target_refuses_are_one_warning() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("tool"), "a tool");
    chmod(&src.join("tool"), 0o4755);
    write(&src.join("shared/f"), "in a sticky folder");
    chmod(&src.join("shared"), 0o1777);
    write(&src.join("plain"), "plain");
    repo.backup(&[&src], &[]);

    let stick = PrivateMount::exfat(&repo.scratch("stick"), 32 << 20);
    let target = stick.at.join("t");
    let out = restore_onto(&stick, &repo, &src, &target);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(
            "the set-user-ID, set-group-ID or sticky bits of 2 entries are not restored: the \
             target or the system refuses them"
        ),
        "{out}"
    );
    assert!(!out.stderr.contains("error:"), "{out}");
    assert_eq!(
        files(&stick, &target),
        [
            "./plain=plain",
            "./shared/f=in a sticky folder",
            "./tool=a tool"
        ]
    );
}

/// A key exported onto exFAT, which makes no hard links and keeps no
/// modes, is written (it failed: "rename into place: Operation not
/// permitted"), with a warning that it is open to others; given from the
/// stick it is refused with what to do, and a copy made as told opens the
/// repository.
#[test]
fn a_key_exported_onto_exfat_is_written_and_its_use_explained() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "f");
    repo.backup(&[&src], &[]);
    let stick = PrivateMount::exfat(&repo.scratch("stick"), 32 << 20);
    let key = stick.at.join("repo.key");
    let mut c = repo.cmd(&["key", "export"]);
    c.arg(&key);
    let out = stick.run(&c);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("is open to other users") && out.stderr.contains("keeps no modes"),
        "{out}"
    );
    let listed = stick.sh(&format!("ls -A '{}'", stick.at.display()));
    assert_eq!(listed.trim(), "repo.key", "no temporary file is left");

    let mut c = cairn();
    c.arg("-r")
        .arg(&repo.path)
        .arg("snapshots")
        .arg("--key-file")
        .arg(&key);
    let out = stick.run(&c);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("copy it to a folder of yours first"),
        "{out}"
    );
    let copy = repo.scratch("copy.key");
    stick.sh(&format!(
        "install -m 600 '{}' '{}'",
        key.display(),
        copy.display()
    ));
    let mut c = cairn();
    c.arg("-r")
        .arg(&repo.path)
        .arg("snapshots")
        .arg("--key-file")
        .arg(&copy);
    assert_eq!(run(&mut c, None).code, 0);
}
