//! Bad input: wrong passwords, missing repositories, hostile snapshots,
//! damaged packs, stray entries in a repository, unreadable source files.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::backend::local::LocalBackend;
use cairn::backend::FileKind;
use cairn::pack::BlobKind;
use cairn::snapshot::{Snapshot, SnapshotKind, Summary};
use cairn::tree::{Name, Node, NodeKind, Tree};
use cairn::writer::BlobWriter;
use common::*;
use serde_json::Value;

#[test]
fn wrong_password_exits_12_and_says_so() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);

    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["backup", src.to_str().unwrap()],
    ] {
        let mut c = repo.cmd(&args);
        c.env("CAIRN_PASSWORD", "not the password");
        let out = run(&mut c, None);
        assert_eq!(out.code, 12, "{args:?}: {out}");
        assert!(
            out.stderr.to_lowercase().contains("password"),
            "{args:?}: {out}"
        );
    }
    // Through a password file as well.
    let pwfile = repo.scratch("wrong.pw");
    write(&pwfile, "still wrong\n");
    let mut c = cairn();
    c.arg("snapshots").arg("-r").arg(&repo.path);
    c.arg("--password-file").arg(&pwfile);
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "{out}");
    assert!(out.stderr.contains("wrong password"), "{out}");
    assert!(!out.stderr.contains("part of the password"), "{out}");
    // The right password with what an editor may add: still wrong (the
    // password is the line's bytes, but for its line break), and said.
    for (text, said) in [
        (
            format!("\u{feff}{PASSWORD}\r\n"),
            "which begins with a byte-order mark (U+FEFF, as some editors save text), part \
             of the password",
        ),
        (
            format!("{PASSWORD} \n"),
            "which ends with a space or tab, part of the password",
        ),
    ] {
        write(&pwfile, &text);
        let mut c = cairn();
        c.arg("snapshots").arg("-r").arg(&repo.path);
        c.arg("--password-file").arg(&pwfile);
        let out = run(&mut c, None);
        assert_eq!(out.code, 12, "{text:?}: {out}");
        assert!(
            out.stderr.contains(&format!(
                "wrong password (from --password-file {}, {said})",
                pwfile.display()
            )),
            "{text:?}: {out}"
        );
    }
    // An empty one, and one whose first line (the password) is empty, are
    // told apart.
    for (text, said) in [
        ("\n", "is empty"),
        (
            "\nsecret\n",
            "has an empty first line (the password is its first line)",
        ),
    ] {
        write(&pwfile, text);
        let mut c = cairn();
        c.arg("snapshots").arg("-r").arg(&repo.path);
        c.arg("--password-file").arg(&pwfile);
        let out = run(&mut c, None);
        // A usage error, as an exclude file that cannot be read is.
        assert_eq!(out.code, 2, "{text:?}: {out}");
        assert!(
            out.stderr
                .contains(&format!("password file {} {said}", pwfile.display())),
            "{text:?}: {out}"
        );
    }
    // The failed backup wrote no snapshot.
    assert_eq!(repo.snapshots().len(), 1);
}

/// A key file asking for far more work than cairn's own settings, tried
/// past a cheaper one the password did not open (a mistyped password, a
/// key file planted in keys/), is said before it is tried: the wait is
/// not a hang.
#[test]
fn a_costly_key_file_is_said_before_it_is_tried() {
    let repo = Repo::new();
    let costly = Repo::with_init_args(&["--kdf-memory-kib", "65536", "--kdf-iterations", "10"]);
    let planted = only_file(&costly.path.join("keys"));
    let name = planted.file_name().unwrap().to_str().unwrap().to_string();
    fs::copy(&planted, repo.path.join("keys").join(&name)).unwrap();
    let mut c = repo.cmd(&["snapshots"]);
    c.env("CAIRN_PASSWORD", "not the password");
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "{out}");
    assert!(
        out.stderr
            .contains(&format!("note: trying key file {}", &name[..8])),
        "{out}"
    );
    assert!(
        out.stderr.contains("64.0 MiB of memory and 10 passes"),
        "{out}"
    );
    // The right password opens the cheaper key file first: nothing said.
    let out = repo.run(&["snapshots"]).success();
    assert!(!out.stderr.contains("note: trying"), "{out}");
}

/// The only file in a folder, by name.
fn only_file(dir: &Path) -> PathBuf {
    let mut all: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all.pop().unwrap()
}

/// A key file of another repository with the same password, sorted
/// first in `keys/` (folders merged, `keys/` restored from the wrong
/// place), opens with the password but does not authenticate the config:
/// the search goes on to the repository's own key file. A damaged config
/// is still an error, saying the config is damaged, not the key files.
#[test]
fn another_repository_s_key_file_with_the_same_password_is_passed_over() {
    let (a, b) = (Repo::new(), Repo::new());
    let (ka, kb) = (
        only_file(&a.path.join("keys")),
        only_file(&b.path.join("keys")),
    );
    // Into the repository whose own key sorts last.
    let (repo, foreign) = if ka.file_name() < kb.file_name() {
        (&b, ka)
    } else {
        (&a, kb)
    };
    fs::copy(
        &foreign,
        repo.path.join("keys").join(foreign.file_name().unwrap()),
    )
    .unwrap();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);
    assert_eq!(repo.snapshots().len(), 1);

    let config = repo.path.join("config");
    let mut bytes = fs::read(&config).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&config, bytes).unwrap();
    // Without its copy (a repository made before cairn kept one).
    fs::remove_file(repo.path.join("config.copy")).unwrap();
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("the config is damaged")
            && out.stderr.contains("the key files are not at fault"),
        "{out}"
    );
    assert!(!out.stderr.contains("removed from keys/"), "{out}");
}

/// Flips the last byte of `path`.
fn flip_last_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(path, bytes).unwrap();
}

/// A damaged config is the config's fault: with a repository's only key
/// file, cairn never suggests removing it. With snapshots to tell by, it
/// says the key files are not at fault; without, that removing them
/// would leave none.
#[test]
fn a_damaged_config_is_not_blamed_on_the_only_key_file() {
    let repo = Repo::new();
    let config = repo.path.join("config");
    let good = fs::read(&config).unwrap();
    flip_last_byte(&config);
    // Without its copy (a repository made before cairn kept one).
    fs::remove_file(repo.path.join("config.copy")).unwrap();
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("config is corrupt")
            && out
                .stderr
                .contains("removing the key files would leave none"),
        "{out}"
    );
    assert!(!out.stderr.contains("can be removed from keys/"), "{out}");

    fs::write(&config, &good).unwrap();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);
    flip_last_byte(&config);
    // The backup wrote the copy again.
    fs::remove_file(repo.path.join("config.copy")).unwrap();
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("the config is damaged; restore `config` from a copy")
            && out.stderr.contains("the key files are not at fault"),
        "{out}"
    );
    assert!(!out.stderr.contains("removed from keys/"), "{out}");
}

/// A config of a later format (what an older cairn sees after a newer one
/// upgraded the repository) is said to be one, whatever the password,
/// before any key file is tried.
#[test]
fn a_newer_config_is_named_before_the_password_is_tried() {
    let repo = Repo::new();
    let config = repo.path.join("config");
    let mut bytes = fs::read(&config).unwrap();
    bytes[8] = 9;
    fs::write(&config, bytes).unwrap();
    for password in [PASSWORD, "not the password"] {
        let mut c = repo.cmd(&["snapshots"]);
        c.env("CAIRN_PASSWORD", password);
        let out = run(&mut c, None);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stderr
                .contains("is corrupt: format version 9 is not supported")
                && out.stderr.contains("a newer cairn may have written it"),
            "{out}"
        );
        assert!(
            !out.stderr.contains("wrong password") && !out.stderr.contains("keys/"),
            "{out}"
        );
    }
}

/// A repository holding one snapshot (returned by id) of `src`, a folder
/// with the file `f` of "data", and its key exported to a file.
fn backed_up_with_a_key() -> (Repo, PathBuf, String, PathBuf) {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    let snap = repo.backup(&[&src], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = repo.scratch("repo.key");
    repo.run(&["key", "export", key.to_str().unwrap()])
        .success();
    (repo, src, snap, key)
}

/// `init` writes `config.copy` beside `config`. With `config` damaged or
/// lost, every command opens the repository from the copy, warning, with
/// the password and with an exported key alike; verify counts it as
/// damage, and `repair config` writes `config` back. Until December 2026
/// a config lost or damaged (160 bytes) left intact data nothing read.
/// A repository without the copy (made before it was kept) gets one from
/// the next command that writes, which verify warns of until then; and
/// a config of a later format is no reason to read the copy.
#[test]
fn a_config_lost_or_damaged_is_read_from_its_copy_and_repaired() {
    let (repo, src, snap, key) = backed_up_with_a_key();
    let config = repo.path.join("config");
    let copy = repo.path.join("config.copy");
    let good = fs::read(&config).unwrap();
    assert_eq!(fs::read(&copy).unwrap(), good, "init writes the copy");

    let damaged = |c: &Path| flip_last_byte(c);
    let lost = |c: &Path| fs::remove_file(c).unwrap();
    for (how, harm) in [("damaged", &damaged as &dyn Fn(&Path)), ("lost", &lost)] {
        harm(&config);
        for with_key in [false, true] {
            let mut c = repo.cmd(&["ls", &snap]);
            if with_key {
                c.env_remove("CAIRN_PASSWORD").arg("--key-file").arg(&key);
            }
            let out = run(&mut c, None);
            assert_eq!(out.code, 0, "{how}, key file {with_key}: {out}");
            assert!(out.stdout.contains("/f"), "{how}: {out}");
            assert!(
                out.stderr
                    .contains("its copy, config.copy, opened the repository")
                    && out.stderr.contains("`cairn repair config`"),
                "{how}, key file {with_key}: {out}"
            );
        }
        let target = repo.scratch(&format!("target-{how}"));
        repo.restore(&snap, &target, &[]);
        assert_eq!(
            fs::read(restored(&target, &src).join("f")).unwrap(),
            b"data"
        );
        let out = repo.run(&["verify"]);
        assert_eq!(out.code, 1, "{how}: {out}");
        assert!(
            out.stdout
                .contains("its copy, config.copy, opened the repository"),
            "{how}: {out}"
        );
        let out = repo.run(&["repair", "config"]).success();
        assert!(
            out.stdout.contains("config written back from config.copy"),
            "{out}"
        );
        assert_eq!(fs::read(&config).unwrap(), good, "{how}");
        let out = repo.run(&["verify"]);
        assert_eq!(out.code, 0, "{how}: {out}");
        assert!(!out.stderr.contains("config"), "{how}: {out}");
    }

    // Without a copy: verify warns, and the next command that writes
    // makes it.
    fs::remove_file(&copy).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("config.copy: is missing"), "{out}");
    repo.backup(&[&src], &[]);
    assert_eq!(fs::read(&copy).unwrap(), good, "the backup writes the copy");
    let out = repo.run(&["repair", "config"]).success();
    assert!(out.stdout.contains("config is intact"), "{out}");
    // A damaged copy is said to be damaged, not an upgrade's leftover.
    let mut damaged = good.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    fs::write(&copy, &damaged).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("config.copy: is damaged (") && !out.stdout.contains("an upgrade"),
        "{out}"
    );
    repo.run(&["repair", "config"]).success();
    assert_eq!(
        fs::read(&copy).unwrap(),
        good,
        "repair config writes the copy"
    );

    // A config of a later format is a newer cairn's: the copy, of this
    // one's, is not read instead.
    let mut newer = good.clone();
    newer[8] = 9;
    fs::write(&config, &newer).unwrap();
    let out = repo.run(&["ls", &snap]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("format version 9 is not supported"),
        "{out}"
    );
}

/// With `config` unreadable (a disk's read error, not changed bytes) the
/// copy opens the repository too; with `config` lost, a wrong password is
/// still "wrong password" (exit 12), a backup exits 3 naming it in
/// `repository_damage`, files keep the group's read access the copy
/// shows, and `init` will not make a repository over the copy.
#[test]
fn a_config_unreadable_or_lost_is_said_as_such_and_the_rest_kept() {
    use std::os::unix::fs::PermissionsExt;
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);
    let config = repo.path.join("config");
    let good = fs::read(&config).unwrap();
    fs::remove_file(&config).unwrap();
    // Any read of it fails with EIO.
    std::os::unix::fs::symlink("/proc/self/mem", &config).unwrap();
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("Input/output error"), "{out}");
    repo.run(&["repair", "config"]).success();
    assert_eq!(fs::read(&config).unwrap(), good);

    // Readable by the repository's group, as the README shows.
    let chmod_group = std::process::Command::new("chmod")
        .args(["-R", "g+rX"])
        .arg(&repo.path)
        .status()
        .unwrap();
    assert!(chmod_group.success());
    fs::remove_file(&config).unwrap();
    let mut c = repo.cmd(&["snapshots"]);
    c.env("CAIRN_PASSWORD", "not the password");
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "{out}");
    assert!(out.stderr.contains("wrong password"), "{out}");
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src);
    let out = run(&mut c, None);
    assert_eq!(out.code, 3, "{out}");
    let damage = out.json()["repository_damage"].clone();
    assert!(
        damage[0]
            .as_str()
            .is_some_and(|d| d.contains("config is missing")),
        "{out}"
    );
    let id = out.json()["id"].as_str().unwrap().to_string();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&repo.path.join("snapshots").join(&id)), 0o640);
    repo.run(&["repair", "config"]).success();
    assert_eq!(mode(&config), 0o640);

    // A folder holding a config.copy and nothing else is not a new
    // repository's.
    let other = repo.scratch("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("config.copy"), "my settings").unwrap();
    let mut c = cairn();
    c.arg("-r").arg(&other).arg("init").args(FAST_INIT);
    c.env("CAIRN_PASSWORD", PASSWORD);
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("holds config.copy and no config"),
        "{out}"
    );
    assert_eq!(fs::read(other.join("config.copy")).unwrap(), b"my settings");
}

/// Both `config` and `config.copy` lost: the repository says what makes
/// one anew, and `repair config --rebuild` does, from the password (a new
/// repository id) or an exported key (its id kept, so the key still
/// opens it); every snapshot restores, and backups go on. It refuses
/// while either file is there, and a wrong password or a key no snapshot
/// opens writes nothing.
#[test]
fn a_repository_that_lost_both_config_files_is_rebuilt_from_its_key() {
    let (repo, src, snap, key) = backed_up_with_a_key();
    let config = repo.path.join("config");
    let copy = repo.path.join("config.copy");

    let out = repo.run(&["repair", "config", "--rebuild"]);
    assert_eq!(out.code, 2, "both there: {out}");
    for with_key in [false, true] {
        let _ = fs::remove_file(&config);
        let _ = fs::remove_file(&copy);
        let out = repo.run(&["snapshots"]);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stderr.contains("`cairn repair config --rebuild`"),
            "{out}"
        );
        let mut c = repo.cmd(&["repair", "config", "--rebuild"]);
        c.env("CAIRN_PASSWORD", "not the password");
        let out = run(&mut c, None);
        assert_eq!(out.code, 12, "{out}");
        assert!(!config.exists(), "{out}");

        let mut c = repo.cmd(&["repair", "config", "--rebuild"]);
        if with_key {
            c.env_remove("CAIRN_PASSWORD").arg("--key-file").arg(&key);
        }
        let out = run(&mut c, None);
        assert_eq!(out.code, 0, "key file {with_key}: {out}");
        assert!(out.stdout.contains("config rebuilt"), "{out}");
        assert!(out.stderr.contains("store their data again"), "{out}");
        assert!(
            out.stderr.contains(
                "the config's other settings were lost with it, and are the defaults now: \
                 compression level 3, chunks of"
            ),
            "{out}"
        );
        // From the password the id is new, which breaks exported keys:
        // said (it went without a word, and they failed as another
        // repository's).
        assert_eq!(
            out.stderr
                .contains("the repository's id was lost with the config, so it has a new one"),
            !with_key,
            "{out}"
        );
        assert_eq!(fs::read(&config).unwrap(), fs::read(&copy).unwrap());
        let target = repo.scratch(&format!("target-{with_key}"));
        repo.restore(&snap, &target, &[]);
        assert_eq!(
            fs::read(restored(&target, &src).join("f")).unwrap(),
            b"data"
        );
        repo.backup(&[&src], &[]);
        let mut c = repo.cmd(&["snapshots"]);
        c.env_remove("CAIRN_PASSWORD").arg("--key-file").arg(&key);
        assert_eq!(run(&mut c, None).code, if with_key { 0 } else { 12 });
    }
    let out = repo.run(&["verify", "--read-data"]);
    assert_eq!(out.code, 0, "{out}");
}

/// `config` damaged and no copy left: every command says to move both
/// out of the way and rebuild, `repair config --rebuild` (which refused
/// with "config is there", while `repair config` failed on the damage)
/// says to move them, and does its work once they are moved. A folder in
/// the place of `config` is named as such by `repair config`, not only
/// "Is a directory".
#[test]
fn a_damaged_config_without_its_copy_and_a_folder_in_its_place_say_what_to_do() {
    let (repo, src, snap, _key) = backed_up_with_a_key();
    let config = repo.path.join("config");
    let copy = repo.path.join("config.copy");
    let intact = fs::read(&config).unwrap();
    let mut damaged = intact.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    fs::write(&config, &damaged).unwrap();
    fs::remove_file(&copy).unwrap();

    let rebuild = "move `config` (and `config.copy`, where it is there) out of the repository \
                   (keep them) and run `cairn repair config --rebuild`";
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(rebuild), "{out}");
    let out = repo.run(&["repair", "config"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(rebuild), "{out}");
    let out = repo.run(&["repair", "config", "--rebuild"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("--rebuild makes a config only where none is there: move `config`"),
        "{out}"
    );
    assert_eq!(fs::read(&config).unwrap(), damaged, "nothing written");

    fs::rename(&config, repo.scratch("config.damaged")).unwrap();
    let out = repo.run(&["repair", "config", "--rebuild"]);
    assert_eq!(out.code, 0, "{out}");
    let target = repo.scratch("target");
    repo.restore(&snap, &target, &[]);
    assert_eq!(
        fs::read(restored(&target, &src).join("f")).unwrap(),
        b"data"
    );

    // A folder where `config` belongs, its copy intact: every command
    // says to move it first.
    fs::remove_file(&config).unwrap();
    fs::create_dir(&config).unwrap();
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(
            "opened the repository: move what is at `config` out of the repository, then \
             `cairn repair config` writes config back from it"
        ),
        "{out}"
    );
    let out = repo.run(&["repair", "config"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "a folder is in the place of {}: move it out of the repository",
            config.display()
        )),
        "{out}"
    );
    // Without the copy, every command says what is left to do.
    let kept_copy = fs::read(&copy).unwrap();
    fs::remove_file(&copy).unwrap();
    for args in [&["snapshots"][..], &["repair", "config"]] {
        let out = repo.run(args);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stderr.contains("a folder, not a regular file")
                && out
                    .stderr
                    .contains("config.copy is missing: restore `config` from a copy")
                && out.stderr.contains(rebuild),
            "{out}"
        );
    }
    fs::write(&copy, kept_copy).unwrap();
    fs::remove_dir(&config).unwrap();
    repo.run(&["repair", "config"]).success();
    assert_eq!(fs::read(&config).unwrap(), fs::read(&copy).unwrap());
}

/// A key file that opens with the password but holds another
/// repository's key, known by the snapshots it does not open: exit 12,
/// suggesting its removal only beside other key files; where it is all
/// keys/ holds, keys/ is to be restored instead.
#[test]
fn another_repository_s_key_file_is_named_as_such() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);
    let other = repo.scratch("other");
    let out = run(
        cairn()
            .arg("-r")
            .arg(&other)
            .arg("init")
            .args(FAST_INIT)
            .env("CAIRN_PASSWORD", "another password"),
        None,
    );
    out.success();
    let foreign = only_file(&other.join("keys"));
    let keys = repo.path.join("keys");
    let own = only_file(&keys);
    let placed = keys.join(foreign.file_name().unwrap());
    fs::copy(&foreign, &placed).unwrap();

    let mut c = repo.cmd(&["snapshots"]);
    c.env("CAIRN_PASSWORD", "another password");
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "{out}");
    assert!(
        out.stderr.contains("hold another repository's key")
            && out
                .stderr
                .contains("a key file of another repository can be removed from keys/"),
        "{out}"
    );

    fs::remove_file(&own).unwrap();
    let mut c = repo.cmd(&["snapshots"]);
    c.env("CAIRN_PASSWORD", "another password");
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "{out}");
    assert!(
        out.stderr
            .contains("restore keys/ from a copy of this repository"),
        "{out}"
    );
    assert!(!out.stderr.contains("can be removed"), "{out}");
}

#[test]
fn missing_repository_exits_10() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-repo-here");
    write(&dir.path().join("src/f"), "data");
    let target = dir.path().join("target");
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["restore", "latest", "--target", target.to_str().unwrap()],
        vec!["backup", dir.path().join("src").to_str().unwrap()],
    ] {
        let mut c = cairn();
        c.arg("-r").arg(&missing).args(&args);
        c.env("CAIRN_PASSWORD", PASSWORD);
        let out = run(&mut c, None);
        assert_eq!(out.code, 10, "{args:?}: {out}");
        assert!(out.stderr.contains("no repository"), "{args:?}: {out}");
    }
    // Nothing was created at the location, and no restore target either.
    assert!(!missing.exists());
    assert!(!target.exists());
}

fn node(name: &[u8], kind: NodeKind, size: u64) -> Node {
    Node {
        name: Name(name.to_vec()),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        user: String::new(),
        group: String::new(),
        mtime_ns: 1_500_000_000_000_000_000,
        ctime_ns: 1_500_000_000_000_000_000,
        size,
        dev: 1,
        inode: 1,
        nlink: 1,
        xattrs: Vec::new(),
    }
}

/// Writes a snapshot whose root tree holds `nodes` (built by `make`, which
/// gets the id of a data blob "escaped!") straight into the repository,
/// bypassing every check `Tree::decode` makes; returns the snapshot id.
fn craft_snapshot(repo: &Repo, make: impl Fn(&BlobWriter, cairn::id::BlobId) -> Tree) -> String {
    craft_snapshot_excluding(repo, Vec::new(), make)
}

/// [`craft_snapshot`], recording `excludes` as its backup's patterns.
fn craft_snapshot_excluding(
    repo: &Repo,
    excludes: Vec<Name>,
    make: impl Fn(&BlobWriter, cairn::id::BlobId) -> Tree,
) -> String {
    let backend = Arc::new(LocalBackend::new(&repo.path));
    let r = cairn::Repository::open(backend, PASSWORD.as_bytes()).unwrap();
    let w = BlobWriter::new(&r);
    let (data, _) = w.add(BlobKind::Data, b"escaped!").unwrap();
    let root = make(&w, data);
    let (tree, _) = w.add(BlobKind::Tree, &root.encode()).unwrap();
    w.finish().unwrap();
    let snap = Snapshot {
        version: cairn::snapshot::VERSION,
        time_ns: cairn::now_ns(),
        host: "evil".into(),
        user: "mallory".into(),
        set: "evil".into(),
        kind: SnapshotKind::Full,
        paths: vec!["/".into()],
        tags: Vec::new(),
        parent: None,
        tree,
        summary: Summary::default(),
        excludes,
        started_ns: cairn::now_ns(),
    };
    let (id, bytes) = snap.encode(r.key());
    r.backend()
        .write(FileKind::Snapshot, &id.to_hex(), &bytes)
        .unwrap();
    id.to_hex()
}

/// Every path under `dir`, recursively.
fn everything(dir: &Path) -> Vec<PathBuf> {
    if dir.exists() {
        list_paths(dir)
    } else {
        Vec::new()
    }
}

#[test]
fn tree_with_escaping_names_is_refused_and_nothing_escapes() {
    let repo = Repo::new();
    // The restore target is nested so that `..` from it lands in a folder
    // the test can watch.
    let arena = repo.scratch("arena");
    fs::create_dir(&arena).unwrap();
    let target = arena.join("target");
    let abs_escape = arena.join("abs-escape");
    let abs_name = abs_escape.to_str().unwrap().as_bytes().to_vec();

    let file = |data| NodeKind::File { chunks: vec![data] };
    type Case = (
        &'static str,
        Box<dyn Fn(&BlobWriter, cairn::id::BlobId) -> Tree>,
    );
    let cases: Vec<Case> = vec![
        (
            "../x",
            Box::new(move |_, d| Tree::new(vec![node(b"../x", file(d), 8)])),
        ),
        (
            "..",
            Box::new(move |_, d| Tree::new(vec![node(b"..", file(d), 8)])),
        ),
        (
            "a/../../x",
            Box::new(move |_, d| Tree::new(vec![node(b"a/../../x", file(d), 8)])),
        ),
        (
            "a name with NUL",
            Box::new(move |_, d| Tree::new(vec![node(b"x\0y", file(d), 8)])),
        ),
        (
            "absolute name",
            Box::new(move |_, d| Tree::new(vec![node(&abs_name, file(d), 8)])),
        ),
        (
            "../x in a subdirectory",
            Box::new(move |w, d| {
                let sub = Tree::new(vec![node(b"../../x", file(d), 8)]);
                let (sub_id, _) = w.add(BlobKind::Tree, &sub.encode()).unwrap();
                Tree::new(vec![node(b"dir", NodeKind::Dir { subtree: sub_id }, 0)])
            }),
        ),
        (
            "symlink and file of the same name",
            Box::new(move |w, d| {
                // A symlink `s` pointing out, then a directory `s` whose
                // file would be written through it.
                let sub = Tree::new(vec![node(b"x", file(d), 8)]);
                let (sub_id, _) = w.add(BlobKind::Tree, &sub.encode()).unwrap();
                Tree::new(vec![
                    node(
                        b"s",
                        NodeKind::Symlink {
                            target: Name(b"..".to_vec()),
                        },
                        0,
                    ),
                    node(b"s", NodeKind::Dir { subtree: sub_id }, 0),
                ])
            }),
        ),
    ];

    for (what, make) in cases {
        let id = craft_snapshot(&repo, make);
        let out = repo.restore_out(&id, &target, &[]);
        assert_ne!(out.code, 0, "{what}: restore accepted it:\n{out}");
        assert!(
            out.stderr.contains("corrupt"),
            "{what}: the error should call the tree corrupt:\n{out}"
        );
        // Nothing outside the target: the arena holds at most the target.
        let outside: Vec<_> = everything(&arena)
            .into_iter()
            .filter(|p| !p.starts_with("target"))
            .collect();
        assert!(outside.is_empty(), "{what}: written outside: {outside:?}");
        assert!(!abs_escape.exists(), "{what}");
        assert!(
            !everything(&target)
                .iter()
                .any(|p| p.ends_with("x") || p.as_os_str() == "x"),
            "{what}: {:?}",
            everything(&target)
        );
        // Listing refuses it too.
        let ls = repo.run(&["ls", &id]);
        assert_ne!(ls.code, 0, "{what}: ls accepted it:\n{ls}");
        assert!(ls.stderr.contains("corrupt"), "{what}: {ls}");
    }
    // The error names the offending entry.
    let id = craft_snapshot(&repo, |_, d| {
        Tree::new(vec![node(b"../x", NodeKind::File { chunks: vec![d] }, 8)])
    });
    let out = repo.restore_out(&id, &target, &[]);
    assert!(out.stderr.contains("../x"), "{out}");
}

/// A directory in parts that lists one part twice repeats every entry
/// of it: `repair snapshots` drops the repeats, saying nothing is lost,
/// and does not count them as left out, so that a mirror of the copy
/// prunes the folder as any other. (Until December 2026 each repeat was
/// counted lost, and a mirror of the copy left what the target held
/// there, not in the snapshot, with a warning.)
#[test]
fn a_part_listed_twice_is_repaired_without_counting_its_repeats_lost() {
    let repo = Repo::new();
    let id = craft_snapshot(&repo, |w, d| {
        let part = Tree::new(vec![
            node(b"a", NodeKind::File { chunks: vec![d] }, 8),
            node(b"b", NodeKind::File { chunks: vec![d] }, 8),
        ]);
        let (part, _) = w.add(BlobKind::Tree, &part.encode()).unwrap();
        let (big, _) = w
            .add(BlobKind::Tree, &cairn::tree::Parts::encode(&[part, part]))
            .unwrap();
        Tree::new(vec![node(b"big", NodeKind::Dir { subtree: big }, 0)])
    });
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 1, "{out}");
    let out = repo.run(&["repair", "snapshots"]).success();
    assert!(out.stdout.contains("1 snapshot(s) repaired"), "{out}");
    for name in ["a", "b"] {
        assert!(
            out.stdout.contains(&format!(
                "/big/{name} (repeated in a later part: the first is kept, and nothing is lost)"
            )),
            "{out}"
        );
    }
    repo.run(&["forget", &id]).success();
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 0, "{out}");
    let target = repo.scratch("target");
    write(&target.join("big/extra"), "not in the snapshot");
    let out = repo.restore("latest", &target, &["--policy", "mirror"]);
    assert!(!target.join("big/extra").exists(), "{out}");
    assert_eq!(fs::read(target.join("big/a")).unwrap(), b"escaped!");
    assert_eq!(fs::read(target.join("big/b")).unwrap(), b"escaped!");
}

/// Trees each sound on its own that a restore still cannot restore whole:
/// a directory in parts whose parts repeat a name (here a symlink out of
/// the target, then a folder of the same name), one whose part is itself
/// a list of parts, and a file whose entry gives another size than its
/// chunks hold. `verify` names each as damage (it passed them), and
/// `repair snapshots` writes a copy without them, which verifies clean.
#[test]
fn trees_restore_refuses_are_damage_to_verify_and_repair() {
    type Make = Box<dyn Fn(&BlobWriter, cairn::id::BlobId) -> Tree>;
    let file = |d| NodeKind::File { chunks: vec![d] };
    let tree_of = |w: &BlobWriter, nodes: Vec<Node>| {
        w.add(BlobKind::Tree, &Tree::new(nodes).encode()).unwrap().0
    };
    let parts_of = |w: &BlobWriter, parts: &[cairn::id::BlobId]| {
        w.add(BlobKind::Tree, &cairn::tree::Parts::encode(parts))
            .unwrap()
            .0
    };
    // A root of the folder `big`, whose tree is `big`, and the file `ok`.
    let root = move |big: cairn::id::BlobId, d: cairn::id::BlobId| {
        Tree::new(vec![
            node(b"big", NodeKind::Dir { subtree: big }, 0),
            node(b"ok", file(d), 8),
        ])
    };
    let cases: Vec<(&str, &str, Make)> = vec![
        (
            "a name in two parts",
            "/big",
            Box::new(move |w, d| {
                let one = tree_of(
                    w,
                    vec![
                        node(b"a", file(d), 8),
                        node(
                            b"l",
                            NodeKind::Symlink {
                                target: Name(b"/".to_vec()),
                            },
                            0,
                        ),
                    ],
                );
                let inner = tree_of(w, vec![node(b"x", file(d), 8)]);
                let two = tree_of(w, vec![node(b"l", NodeKind::Dir { subtree: inner }, 0)]);
                let big = parts_of(w, &[one, two]);
                root(big, d)
            }),
        ),
        (
            "a part that is a list of parts",
            "/big",
            Box::new(move |w, d| {
                let a = tree_of(w, vec![node(b"a", file(d), 8)]);
                let b = tree_of(w, vec![node(b"b", file(d), 8)]);
                let c = tree_of(w, vec![node(b"c", file(d), 8)]);
                let nested = parts_of(w, &[b, c]);
                let big = parts_of(w, &[a, nested]);
                root(big, d)
            }),
        ),
        (
            "an empty part",
            "/big",
            Box::new(move |w, d| {
                let a = tree_of(w, vec![node(b"a", file(d), 8)]);
                let empty = tree_of(w, Vec::new());
                let b = tree_of(w, vec![node(b"b", file(d), 8)]);
                let big = parts_of(w, &[a, empty, b]);
                root(big, d)
            }),
        ),
        (
            "a file of another size than its chunks",
            "/short",
            Box::new(move |_, d| {
                Tree::new(vec![node(b"ok", file(d), 8), node(b"short", file(d), 5)])
            }),
        ),
    ];
    for (what, path, make) in cases {
        let repo = Repo::new();
        let id = craft_snapshot(&repo, make);
        let target = repo.scratch("target");
        let out = repo.restore_out(&id, &target, &[]);
        assert_eq!(out.code, 1, "{what}: {out}");
        let out = repo.run(&["verify", "--json"]);
        assert_eq!(out.code, 1, "{what}: verify passed it: {out}");
        let damaged = out.json()["damaged"].clone();
        let paths: Vec<&str> = damaged
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, [path], "{what}: {out}");

        let out = repo.run(&["repair", "snapshots"]);
        assert_eq!(out.code, 0, "{what}: {out}");
        assert!(
            out.stdout.contains("1 snapshot(s) repaired") && out.stdout.contains(path),
            "{what}: {out}"
        );
        let out = repo.run(&["verify"]);
        assert_eq!(out.code, 1, "{what}: the original is still damaged: {out}");
        // The blob named is the tree holding the entry, and said to be.
        assert!(
            out.stdout.contains(&format!("{path}: tree ")),
            "{what}: {out}"
        );
        repo.run(&["forget", &id]).success();
        let out = repo.run(&["verify", "--read-data"]);
        assert_eq!(out.code, 0, "{what}: the repaired copy: {out}");
        let target = repo.scratch("repaired");
        repo.restore("latest", &target, &[]);
        assert_eq!(fs::read(target.join("ok")).unwrap(), b"escaped!", "{what}");
        for (case, gone, left) in [
            ("a name in two parts", "big/l/x", "big/a"),
            ("a part that is a list of parts", "big/b", "big/a"),
            ("an empty part", "big/none", "big/b"),
            ("a file of another size than its chunks", "short", "ok"),
        ] {
            if case == what {
                assert!(target.join(left).exists(), "{what}");
                assert!(!target.join(gone).exists(), "{what}");
            }
        }
    }
}

#[test]
fn symlink_in_the_target_is_not_followed() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("dir/file"), "content");
    repo.backup(&[&src], &[]);
    let outside = repo.scratch("outside");
    fs::create_dir(&outside).unwrap();

    for policy in ["merge", "mirror", "skip-existing"] {
        // The target already holds a symlink where the snapshot has a
        // directory: restore must not write through it.
        let target = repo.scratch(&format!("target-{policy}"));
        let r = restored(&target, &src);
        fs::create_dir_all(&r).unwrap();
        std::os::unix::fs::symlink(&outside, r.join("dir")).unwrap();
        let out = repo.restore_out("latest", &target, &["--policy", policy]);
        assert!(
            everything(&outside).is_empty(),
            "{policy}: wrote through the symlink: {:?}\n{out}",
            everything(&outside)
        );
        if policy == "skip-existing" {
            assert!(fs::symlink_metadata(r.join("dir")).unwrap().is_symlink());
        } else {
            assert_eq!(out.code, 0, "{policy}: {out}");
            assert_eq!(fs::read_to_string(r.join("dir/file")).unwrap(), "content");
            assert!(fs::symlink_metadata(r.join("dir")).unwrap().is_dir());
        }
    }
}

/// Pack ids by kind ("Data" / "Tree") from `cairn cat index`.
fn packs(repo: &Repo) -> Vec<(String, String)> {
    let index = repo.run(&["cat", "index"]).success().json();
    let mut out: Vec<(String, String)> = index
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["entries"].as_array().unwrap().clone())
        .map(|e: Value| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["pack"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn pack_path(repo: &Repo, id: &str) -> PathBuf {
    repo.path.join("packs").join(&id[..2]).join(id)
}

fn truncate_half(path: &Path) {
    let len = fs::metadata(path).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len / 2).unwrap();
}

#[test]
fn truncated_pack_is_an_error_naming_the_pack() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write_random(&src.join("big.bin"), 11, 3 << 20);
    write(&src.join("small.txt"), "small");
    repo.backup(&[&src], &[]);
    let packs = packs(&repo);
    let data: Vec<&String> = packs
        .iter()
        .filter(|(k, _)| k == "Data")
        .map(|p| &p.1)
        .collect();
    let tree: Vec<&String> = packs
        .iter()
        .filter(|(k, _)| k == "Tree")
        .map(|p| &p.1)
        .collect();
    assert_eq!((data.len(), tree.len()), (1, 1), "{packs:?}");
    let (data, tree) = (data[0].clone(), tree[0].clone());

    truncate_half(&pack_path(&repo, &data));
    let target = repo.scratch("target");
    let out = repo.restore_out("latest", &target, &[]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&data[..8]),
        "restore error should name pack {data}:\n{out}"
    );
    assert!(out.stderr.contains("truncated"), "{out}");
    // No half-written file is left under the real name.
    let big = restored(&target, &src).join("big.bin");
    assert!(!big.exists(), "a damaged file was restored: {big:?}");
    assert_eq!(restore_leftovers(&target), Vec::<PathBuf>::new());
    // small.txt's one chunk may lie in either half of the pack: if it was
    // restored, it must be intact.
    if let Ok(s) = fs::read_to_string(restored(&target, &src).join("small.txt")) {
        assert_eq!(s, "small");
    }

    let out = repo.run(&["cat", "pack", &data]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains(&data[..8]), "{out}");

    // A truncated tree pack: listing fails, naming it.
    truncate_half(&pack_path(&repo, &tree));
    let out = repo.run(&["ls", "latest"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&tree[..8]),
        "ls error should name pack {tree}:\n{out}"
    );
    // Its header gone, verify reads the trees where the index places them,
    // and says what mends a tree (it gave a data blob's advice, as the
    // pack's kind was taken from the header it could not read).
    fs::OpenOptions::new()
        .write(true)
        .open(pack_path(&repo, &tree))
        .unwrap()
        .set_len(16)
        .unwrap();
    let out = repo.run(&["verify", "--read-data"]);
    assert_eq!(out.code, 1, "{out}");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(&format!("error: pack {}: tree ", &tree[..8])))
        .collect();
    assert!(!lines.is_empty(), "{out}");
    for line in lines {
        assert!(
            line.contains(": unreadable;")
                && line
                    .contains("stores the folder's tree again only where the folder is unchanged"),
            "{out}"
        );
    }
}

#[test]
fn unreadable_file_gives_exit_3_and_a_snapshot() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("ok.txt"), "readable");
    write(&src.join("secret"), "unreadable");
    chmod(&src.join("secret"), 0o000);

    let mut cmd = repo.cmd(&["backup", "--json", src.to_str().unwrap()]);
    let mut bad_name = "secret";
    let mut bad_path = src.join("secret");
    if is_root() {
        // Root reads anything; drop the capabilities that let it, for the
        // child only.
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(|| {
                // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (linux/capability.h).
                for cap in [1 as libc::c_ulong, 2] {
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let out = match try_run(&mut cmd, None) {
        Ok(out) => out,
        Err(e) => {
            // No CAP_SETPCAP to drop capabilities with: fall back on a file
            // whose read fails even for root, the process's own memory file
            // (offset 0 is never mapped: EIO).
            eprintln!("cannot drop capabilities ({e}); using /proc/self/mem");
            bad_name = "mem";
            bad_path = PathBuf::from("/proc/self/mem");
            let mut cmd = repo.cmd(&["backup", "--json"]);
            cmd.arg(&src).arg(&bad_path);
            run(&mut cmd, None)
        }
    };
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr.contains(bad_name) && out.stderr.contains("cannot"),
        "the warning should name {bad_path:?}:\n{out}"
    );
    let snap = out.json();
    assert_eq!(snap["summary"]["errors"], 1, "{out}");

    // The snapshot was written and holds the readable file only.
    let snaps = repo.snapshots();
    assert_eq!(ids(&snaps), vec![snap["id"].as_str().unwrap().to_string()]);
    let ls = repo.run(&["ls", "latest"]).success();
    assert!(ls.stdout.contains("ok.txt"), "{ls}");
    assert!(
        !ls.stdout
            .lines()
            .any(|l| l.ends_with(&format!("/{bad_name}"))),
        "{ls}"
    );
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_eq!(
        fs::read_to_string(restored(&target, &src).join("ok.txt")).unwrap(),
        "readable"
    );
    assert!(!restored(&target, &src).join("secret").exists());
}

/// A key file whose bytes changed is reported as damaged, not as a
/// wrong password: the password may well be right.
#[test]
fn a_damaged_key_file_is_not_called_a_wrong_password() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);
    let keys = repo.path.join("keys");
    let key = fs::read_dir(&keys).unwrap().next().unwrap().unwrap().path();
    let mut bytes = fs::read(&key).unwrap();
    // In the sealed key, past the header and the KDF's salt.
    let at = bytes.len() - 20;
    bytes[at] ^= 0x40;
    fs::write(&key, &bytes).unwrap();
    let out = repo.run(&["snapshots"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(!out.stderr.contains("wrong password"), "{out}");
    assert!(out.stderr.contains("does not match its name"), "{out}");
    // The only key file: what brings the repository back is said.
    assert!(
        out.stderr
            .contains("restore keys/ from a copy of the repository")
            && out.stderr.contains("--key-file"),
        "{out}"
    );
}

/// A mapped pack whose pages cannot be read (here cut short under the
/// process, as a disk returning IO errors would make them) stops the
/// command with a message naming the pack and exit status 1, not death
/// by SIGBUS with nothing said.
#[test]
fn an_unreadable_mapped_pack_is_named_not_a_silent_crash() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), random_bytes(5, 3_000_000));
    repo.backup(&[&src], &[]);
    let mut c = repo.cmd(&["verify", "--read-data"]);
    c.env("CAIRN_TEST_SHRINK_MAPPED", "1");
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    let packs = repo.path.join("packs");
    assert!(
        out.stderr
            .contains(&format!("cairn: bus error reading {}/", packs.display())),
        "{out}"
    );
    assert!(out.stderr.contains("cairn verify --read-data"), "{out}");
}

/// `CAIRN_PASSWORD=$(cat FILE)` of a file that could not be read sets an
/// empty password: refused as a usage error (exit 2), naming the
/// variable, before anything is made.
#[test]
fn an_empty_cairn_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    let out = run(
        cairn()
            .arg("-r")
            .arg(&path)
            .args(["init"])
            .args(FAST_INIT)
            .env("CAIRN_PASSWORD", ""),
        None,
    );
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("CAIRN_PASSWORD"), "{out}");
    assert!(!path.exists(), "init made a repository:\n{out}");

    // Nor does it open one.
    let repo = Repo::new();
    let mut c = repo.cmd(&["snapshots"]);
    c.env("CAIRN_PASSWORD", "");
    let out = run(&mut c, None);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("CAIRN_PASSWORD"), "{out}");

    // Nor the default repository, which a first backup creates.
    let home = dir.path().join("home");
    let src = dir.path().join("src");
    write(&src.join("f"), "data");
    let out = run(
        cairn()
            .arg("backup")
            .arg(&src)
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("CAIRN_PASSWORD", ""),
        None,
    );
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("CAIRN_PASSWORD"), "{out}");
    assert!(!home.join("data/cairn/default").exists(), "{out}");
}

/// A password file on the command line wins over the environment, and a
/// wrong password says where it came from.
#[test]
fn a_password_flag_wins_over_the_environment_and_a_wrong_one_is_named() {
    let repo = Repo::new();
    let right = repo.scratch("right.pw");
    write(&right, format!("{PASSWORD}\n"));
    let wrong = repo.scratch("wrong.pw");
    write(&wrong, "not it\n");

    let mut c = repo.cmd(&["snapshots", "--password-file", right.to_str().unwrap()]);
    c.env("CAIRN_PASSWORD", "a stale password");
    run(&mut c, None).success();

    let mut c = repo.cmd(&["snapshots"]);
    c.env("CAIRN_PASSWORD", "a stale password");
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "{out}");
    assert!(
        out.stderr.contains("wrong password (from CAIRN_PASSWORD)"),
        "{out}"
    );

    let mut c = repo.cmd(&["snapshots", "--password-file", wrong.to_str().unwrap()]);
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "wrong password (from --password-file {})",
            wrong.display()
        )),
        "{out}"
    );

    // Between two variables, CAIRN_PASSWORD still wins.
    let mut c = repo.cmd(&["snapshots"]);
    c.env("CAIRN_PASSWORD_FILE", &wrong);
    run(&mut c, None).success();
    let mut c = cairn();
    c.arg("-r").arg(&repo.path).arg("snapshots");
    c.env("CAIRN_PASSWORD_FILE", &wrong);
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "{out}");
    assert!(out.stderr.contains("(from CAIRN_PASSWORD_FILE"), "{out}");

    // --password-file wins over CAIRN_KEY_FILE too.
    let key = repo.scratch("repo.key");
    repo.run(&["key", "export", key.to_str().unwrap()])
        .success();
    let mut c = repo.cmd(&["snapshots", "--password-file", wrong.to_str().unwrap()]);
    c.env("CAIRN_KEY_FILE", &key);
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "the key file was used:\n{out}");
}

/// `init` does not make a repository among someone's files: a folder
/// holding anything but a repository's own names (or a folder of a
/// repository's name holding other files) is refused, naming what is
/// there, and left as it was; an empty folder, or a fresh disk's with
/// only `lost+found`, is fine.
#[test]
fn init_refuses_a_folder_that_holds_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let init = |path: &Path| {
        let mut c = cairn();
        c.arg("-r").arg(path).arg("init").args(FAST_INIT);
        c.env("CAIRN_PASSWORD", PASSWORD);
        run(&mut c, None)
    };
    let home = dir.path().join("home");
    write(&home.join("notes.txt"), "mine");
    let photos = dir.path().join("photos");
    write(&photos.join("snapshots/holiday.jpg"), "mine too");
    // Inside a pack fan-out folder: a file of another name, and a pack
    // of another folder's (it was taken for nothing).
    let fanned = dir.path().join("fanned");
    write(&fanned.join("packs/ab/notes"), "mine as well");
    let moved = dir.path().join("moved");
    let pack = "cd".repeat(32);
    write(
        &moved.join("packs/ab").join(&pack),
        "a pack put in the wrong folder",
    );
    let pack_place = format!("packs/ab/{pack}");
    // A file where a fan-out folder goes, and folders where packs and
    // snapshot files go.
    let flat = dir.path().join("flat");
    write(&flat.join("packs/ab"), "a file, not a folder");
    let id_folder = dir.path().join("id-folder");
    let ab = "ab".repeat(32);
    fs::create_dir_all(id_folder.join("packs/ab").join(&ab)).unwrap();
    let ab_place = format!("packs/ab/{ab}");
    let snap_folder = dir.path().join("snap-folder");
    write(&snap_folder.join("snapshots").join(&ab).join("x"), "mine");
    let snap_place = format!("snapshots/{ab}");
    for (folder, names) in [
        (&home, "notes.txt"),
        (&photos, "snapshots/holiday.jpg"),
        (&fanned, "packs/ab/notes"),
        (&moved, pack_place.as_str()),
        (&flat, "packs/ab"),
        (&id_folder, ab_place.as_str()),
        (&snap_folder, snap_place.as_str()),
    ] {
        let before = list_paths(folder);
        // Opened, it is no repository (exit 10), and the way on is not an
        // `init`, which refuses it.
        let mut c = cairn();
        c.arg("-r").arg(folder).arg("snapshots");
        c.env("CAIRN_PASSWORD", PASSWORD);
        let out = run(&mut c, None);
        assert_eq!(out.code, 10, "{out}");
        assert!(
            out.stderr.contains("it holds other files")
                && out.stderr.contains(names)
                && out.stderr.contains("check the path"),
            "{out}"
        );
        assert!(!out.stderr.contains("create one with"), "{out}");
        let out = init(folder);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stderr.contains("is not empty")
                && out.stderr.contains(names)
                && out
                    .stderr
                    .contains("a repository needs a folder of its own"),
            "{out}"
        );
        assert_eq!(list_paths(folder), before, "nothing is written");
    }

    let disk = dir.path().join("disk");
    fs::create_dir_all(disk.join("lost+found")).unwrap();
    init(&disk).success();
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    init(&empty).success();
    init(&dir.path().join("new/folder")).success();
}

/// An `init` killed after its key file and before its config leaves a
/// folder that `init` gives way to (another may be running): opening it
/// says so, and what to do, rather than "create one with `cairn init`",
/// which went round in a circle. Done as it says, `init` succeeds.
#[test]
fn an_interrupted_init_is_named_with_what_to_do() {
    let repo = Repo::new();
    fs::remove_file(repo.path.join("config")).unwrap();
    // Written after the config, so not there either.
    fs::remove_file(repo.path.join("config.copy")).unwrap();
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.code, 10, "{out}");
    assert!(
        out.stderr
            .contains("keys/ holds 1 key file(s) but there is no config")
            && out
                .stderr
                .contains("remove keys/ and run `cairn init` again"),
        "{out}"
    );
    // As an interrupted `init` leaves it: keys/ alone. A refused `init`
    // makes no folder beside it (it left four, empty).
    for dir in ["index", "locks", "packs", "snapshots"] {
        let _ = fs::remove_dir_all(repo.path.join(dir));
    }
    let _ = fs::remove_file(repo.path.join("reserve"));
    let mut args = vec!["init"];
    args.extend_from_slice(FAST_INIT);
    let out = repo.run(&args);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("remove those key files"), "{out}");
    let left: Vec<_> = fs::read_dir(&repo.path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["keys"], "{out}");
    fs::remove_dir_all(repo.path.join("keys")).unwrap();
    repo.run(&args).success();
    repo.run(&["snapshots"]).success();
}

/// A key file anyone who can write to `keys/` could add, asking for the
/// most Argon2id work the format allows (4 GiB, 100 passes), named so
/// that it sorts before the repository's own: the right password opens
/// the repository without deriving it; a wrong one (and `verify`), where
/// the process may not have 4 GiB, name it rather than abort.
#[test]
fn a_key_file_asking_for_heavy_argon2_settings_neither_delays_nor_crashes_an_open() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);
    let keys = repo.path.join("keys");
    let own = only_file(&keys);
    let own_name = own.file_name().unwrap().to_str().unwrap().to_string();
    let mut planted = fs::read(&own).unwrap();
    planted[12..16].copy_from_slice(&(4u32 << 20).to_le_bytes());
    planted[16..20].copy_from_slice(&100u32.to_le_bytes());
    // Another salt until its name sorts first (256 tries missed one
    // time in about 256, when the repository's own name was low).
    let name = (0u16..=u16::MAX)
        .find_map(|n| {
            planted[24..26].copy_from_slice(&n.to_le_bytes());
            let name = hex::encode(cairn::id::file_hash(&planted));
            (name < own_name).then_some(name)
        })
        .expect("a name sorting first");
    fs::write(keys.join(&name), &planted).unwrap();
    let limit = 2_000_000 * 1024;

    let out = run(
        &mut with_memory_limit(repo.cmd(&["snapshots"]), limit),
        None,
    );
    assert_eq!(out.code, 0, "{out}");

    let mut c = with_memory_limit(repo.cmd(&["snapshots"]), limit);
    c.env("CAIRN_PASSWORD", "not the password");
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "key {}: its Argon2id settings ask for 4.0 GiB of memory, which could not be \
             allocated",
            &name[..8]
        )),
        "{out}"
    );

    let out = run(
        &mut with_memory_limit(repo.cmd(&["verify", "--json"]), limit),
        None,
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains("which could not be allocated"), "{out}");
}

/// A repository that lost its `config` is not "no repository": opening
/// it says what is missing and what to restore, and `init` refuses to
/// make a new repository over its data, with or without its key files,
/// never suggesting their removal.
#[test]
fn a_repository_without_its_config_is_named_and_not_initialised_over() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);
    fs::remove_file(repo.path.join("config")).unwrap();
    // Without its copy (a repository made before cairn kept one).
    fs::remove_file(repo.path.join("config.copy")).unwrap();

    let out = repo.run(&["snapshots"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("a repository without its config")
            && out.stderr.contains("restore `config` from a copy")
            && out.stderr.contains("snapshots/, index/, packs/"),
        "{out}"
    );
    assert!(!out.stderr.contains("no repository"), "{out}");

    let init = |repo: &Repo| {
        let mut c = repo.cmd(&["init"]);
        c.args(FAST_INIT);
        run(&mut c, None)
    };
    let before = list_paths(&repo.path);
    let out = init(&repo);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("holds a repository without its config"),
        "{out}"
    );
    assert!(!out.stderr.contains("remove those key files"), "{out}");
    assert_eq!(list_paths(&repo.path), before, "init wrote nothing");

    // Without its key files too.
    let keys = repo.path.join("keys");
    fs::rename(&keys, repo.scratch("keys-away")).unwrap();
    let out = init(&repo);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("holds a repository without its config"),
        "{out}"
    );
    assert!(!repo.path.join("config").exists(), "{out}");
    assert!(!keys.exists(), "{out}");
}

/// `-r` naming a file, or a path through one, is said to be a file, for
/// opening and for `init`, not "stat FILE/config: Not a directory".
#[test]
fn a_repository_path_that_is_a_file_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    write(&file, "not a repository");
    for args in [vec!["snapshots"], vec!["init"]] {
        let mut c = cairn();
        c.arg("-r")
            .arg(&file)
            .args(&args)
            .args(FAST_INIT.iter().filter(|_| args[0] == "init"));
        c.env("CAIRN_PASSWORD", PASSWORD);
        let out = run(&mut c, None);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(
            out.stderr.contains(&format!(
                "{} is a file, not a repository folder",
                file.display()
            )),
            "{args:?}: {out}"
        );
        assert!(!out.stderr.contains("Not a directory"), "{out}");
    }
    let mut c = cairn();
    c.arg("-r").arg(file.join("sub")).arg("snapshots");
    c.env("CAIRN_PASSWORD", PASSWORD);
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains(&format!("{} is a file, not a folder", file.display())),
        "{out}"
    );
    assert_eq!(fs::read(&file).unwrap(), b"not a repository");
}

/// Entries of the wrong type where a repository keeps its files, as a
/// careless copy or a hand may leave them (a file `packs/zz`, a file
/// named like a pack folder, a folder named like a snapshot), stop no
/// command that only reads: the listing, verify and a restore go on
/// without them. gc refuses while `snapshots/` holds the folder (what is
/// in `snapshots/` and no snapshot file may be a snapshot moved, whose
/// data gc would delete), and runs once it is gone.
#[test]
fn stray_entries_in_a_repository_stop_no_command() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write_random(&src.join("a.bin"), 1, 300_000);
    repo.backup(&[&src], &[]);
    let fan_out: Vec<String> = fs::read_dir(repo.path.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let unused = (0..=255u8)
        .map(|b| format!("{b:02x}"))
        .find(|n| !fan_out.contains(n))
        .unwrap();
    write(&repo.path.join("packs/zz"), "stray");
    write(&repo.path.join("packs").join(&unused), "stray");
    fs::create_dir(repo.path.join("snapshots").join("ab".repeat(32))).unwrap();
    // A file named like a pack, in a pack folder not of its name (a copy
    // put aside): not the repository's, so not read, counted or removed.
    let elsewhere = repo
        .path
        .join("packs")
        .join(&fan_out[0])
        .join(format!("{unused}{}", "0".repeat(62)));
    write(&elsewhere, "not a pack");

    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 0, "{out}");
    for args in [&["gc", "--dry-run"][..], &["gc"]] {
        let out = repo.run(args);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(
            out.stderr
                .contains("snapshots/ holds 1 entry that is no snapshot file"),
            "{args:?}: {out}"
        );
    }
    fs::remove_dir(repo.path.join("snapshots").join("ab".repeat(32))).unwrap();
    let out = repo.run(&["gc"]);
    assert_eq!(out.code, 0, "{out}");
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_same_contents(&src, &restored(&target, &src));
    assert!(repo.path.join("packs/zz").is_file(), "left as it was");
    assert_eq!(fs::read(&elsewhere).unwrap(), b"not a pack");
}

/// A FIFO, a device or a file of gigabytes where a repository keeps a
/// file (planted by anyone who can write there: every client writes to
/// `locks/`) hangs no command and fills no memory. In a folder of files
/// a FIFO is no file of the repository's, as a folder is not; reached
/// through a symlink, or as `config` or a key file, it is damage of that
/// file, named, as is a file larger than any of its kind: a lock that is
/// ignored, a snapshot set apart, a key file passed over, a config
/// refused.
#[test]
fn fifos_devices_and_huge_files_in_a_repository_hang_nothing_and_fill_no_memory() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write_random(&src.join("a.bin"), 1, 100_000);
    let first = repo.backup(&[&src], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    write(&src.join("b"), "more");
    repo.backup(&[&src], &[]);
    let fifo = repo.scratch("fifo");
    mkfifo(&fifo, 0o600);
    let limit = 1 << 30;
    let ls = |what: &str| {
        let c = with_memory_limit(repo.cmd(&["ls", "latest"]), limit);
        let out = run_within(&mut { c }, 60).unwrap_or_else(|| panic!("{what}: hung"));
        assert_eq!(out.code, 0, "{what}: {out}");
        out
    };
    ls("intact");

    let lock = repo.path.join("locks").join("ab".repeat(32));
    mkfifo(&lock, 0o600);
    ls("a FIFO in locks/");
    fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&fifo, &lock).unwrap();
    ls("a symlink to a FIFO in locks/");
    fs::remove_file(&lock).unwrap();
    fs::File::create(&lock).unwrap().set_len(6 << 30).unwrap();
    ls("a sparse lock file of 6 GiB");
    fs::remove_file(&lock).unwrap();

    // A snapshot's place: a FIFO there is no snapshot; a symlink to one
    // is a damaged snapshot, named.
    let snap = repo.path.join("snapshots").join(&first);
    let kept = repo.scratch("snapshot");
    fs::rename(&snap, &kept).unwrap();
    mkfifo(&snap, 0o600);
    let out = ls("a FIFO in place of a snapshot");
    assert!(!out.stderr.contains("damaged"), "{out}");
    fs::remove_file(&snap).unwrap();
    std::os::unix::fs::symlink(&fifo, &snap).unwrap();
    let out = ls("a symlink to a FIFO in place of a snapshot");
    assert!(
        out.stderr.contains(&format!(
            "snapshots/{first} is damaged (a FIFO, not a regular file)"
        )),
        "{out}"
    );
    fs::remove_file(&snap).unwrap();
    fs::File::create(&snap).unwrap().set_len(1 << 30).unwrap();
    let out = ls("a snapshot of 1 GiB");
    assert!(
        out.stderr.contains("more than a snapshot file can be"),
        "{out}"
    );
    fs::remove_file(&snap).unwrap();
    fs::rename(&kept, &snap).unwrap();

    // The config, and a key file.
    let config = repo.path.join("config");
    let config_kept = repo.scratch("config");
    fs::rename(&config, &config_kept).unwrap();
    let copy = repo.path.join("config.copy");
    let copy_kept = repo.scratch("config.copy");
    fs::rename(&copy, &copy_kept).unwrap();
    for (what, planted) in [
        ("a FIFO", fifo.as_path()),
        ("a device", Path::new("/dev/zero")),
    ] {
        std::os::unix::fs::symlink(planted, &config).unwrap();
        let c = with_memory_limit(repo.cmd(&["ls", "latest"]), limit);
        let out = run_within(&mut { c }, 60).unwrap_or_else(|| panic!("{what} config: hung"));
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stderr.contains(&format!(
                "{} is corrupt: {what}, not a regular file",
                config.display()
            )),
            "{out}"
        );
        fs::remove_file(&config).unwrap();
    }
    fs::rename(&config_kept, &config).unwrap();
    fs::rename(&copy_kept, &copy).unwrap();
    let key = only_file(&repo.path.join("keys"));
    let key_kept = repo.scratch("key");
    fs::rename(&key, &key_kept).unwrap();
    std::os::unix::fs::symlink(&fifo, &key).unwrap();
    let c = repo.cmd(&["ls", "latest"]);
    let out = run_within(&mut { c }, 60).expect("a key file linked to a FIFO: hung");
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("a FIFO, not a regular file"), "{out}");
    fs::remove_file(&key).unwrap();
    fs::rename(&key_kept, &key).unwrap();

    // Index tables and packs: a FIFO in their place is none.
    let pack_dir = fs::read_dir(repo.path.join("packs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    mkfifo(&repo.path.join("index").join("cd".repeat(32)), 0o600);
    let d = pack_dir.file_name().unwrap().to_str().unwrap();
    mkfifo(&pack_dir.join(d.repeat(32)), 0o600);
    let c = repo.cmd(&["verify", "--read-data"]);
    let out = run_within(&mut { c }, 60).expect("verify with FIFOs among packs: hung");
    assert_eq!(out.code, 0, "{out}");
    // verify names them, as what every command passes over.
    for place in [
        format!("index/{}", "cd".repeat(32)),
        format!("packs/{d}/{}", d.repeat(32)),
    ] {
        assert!(
            out.stdout
                .contains(&format!("warning: {place}: a FIFO where a file goes")),
            "{place}: {out}"
        );
    }
    ls("FIFOs among index tables and packs");
}

/// The names in a repository folder.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// An index table that cannot be parsed stops neither `ls` nor a backup:
/// both read around it with a warning naming it and `cairn repair
/// index`, and the backup stores again what only that table indexed, so
/// its snapshot restores whole. gc, and forget with --gc before it
/// removes anything, refuse, naming the remedy; verify reports it.
#[test]
fn a_damaged_index_table_is_read_around_by_ls_and_backup_not_by_gc() {
    let repo = Repo::new();
    let first = repo.scratch("first");
    write_random(&first.join("a.bin"), 1, 200_000);
    repo.backup(&[&first], &[]);
    let damaged = names(&repo.path.join("index"));
    let second = repo.scratch("second");
    write_random(&second.join("b.bin"), 2, 100_000);
    let kept = repo.backup(&[&second], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    for name in &damaged {
        let path = repo.path.join("index").join(name);
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 0xff;
        chmod(&path, 0o600);
        fs::write(&path, bytes).unwrap();
    }
    let advice = "`cairn repair index` rebuilds the index from the packs";
    let named = |out: &Out| {
        assert!(
            out.stderr
                .contains(&format!("index {} is corrupt", &damaged[0][..8])),
            "{out}"
        );
        assert!(out.stderr.contains(advice), "{out}");
    };

    let out = repo.run(&["ls", &kept[..8]]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("b.bin"), "{out}");
    named(&out);
    let out = repo.run(&["backup", "--json", first.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{out}");
    named(&out);
    assert!(out.stderr.contains("is stored again"), "{out}");
    let again = out.json()["id"].as_str().unwrap().to_string();
    let target = repo.scratch("target");
    let out = repo.restore(&again, &target, &[]);
    named(&out);
    assert_same_contents(&first, &restored(&target, &first));

    let snapshots = names(&repo.path.join("snapshots"));
    for args in [
        &["gc"][..],
        &["gc", "--dry-run"],
        &["forget", "--keep-last", "1", "--gc"],
    ] {
        let out = repo.run(args);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(out.stderr.contains("refusing to"), "{args:?}: {out}");
        assert!(out.stderr.contains(advice), "{args:?}: {out}");
    }
    assert_eq!(
        names(&repo.path.join("snapshots")),
        snapshots,
        "nothing forgotten"
    );
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains(advice), "{out}");
}

/// A folder whose entry names a file's chunk as its tree is named as
/// such, rather than as a tree of an unknown version.
#[test]
fn a_folder_naming_a_chunk_as_its_tree_says_so() {
    let repo = Repo::new();
    let id = craft_snapshot(&repo, |_, d| {
        Tree::new(vec![node(b"dir", NodeKind::Dir { subtree: d }, 0)])
    });
    let out = repo.run(&["ls", &id]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("it is stored as a file's chunk, not as a tree"),
        "{out}"
    );
}

/// A directory whose parts do not make one is named even when a file in
/// one of its parts is damaged too: a restore stops at the directory
/// whatever else is wrong (verify named the file alone).
#[test]
fn verify_names_misordered_parts_beside_a_damaged_file_in_them() {
    let repo = Repo::new();
    let id = craft_snapshot(&repo, |w, d| {
        let tree_of =
            |nodes: Vec<Node>| w.add(BlobKind::Tree, &Tree::new(nodes).encode()).unwrap().0;
        let one = tree_of(vec![
            node(b"k", NodeKind::File { chunks: vec![d] }, 8),
            node(b"m", NodeKind::File { chunks: vec![d] }, 3),
        ]);
        let two = tree_of(vec![
            node(b"a", NodeKind::File { chunks: vec![d] }, 8),
            node(b"z", NodeKind::File { chunks: vec![d] }, 8),
        ]);
        let big = w
            .add(BlobKind::Tree, &cairn::tree::Parts::encode(&[one, two]))
            .unwrap()
            .0;
        Tree::new(vec![node(b"big", NodeKind::Dir { subtree: big }, 0)])
    });
    let out = repo.run(&["verify", "--json"]);
    assert_eq!(out.code, 1, "{out}");
    let mut paths: Vec<String> = out.json()["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["snapshot"] == id.as_str())
        .map(|d| d["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/big", "/big/m"], "{out}");
}

/// Patterns that match nothing (an empty one, one with an empty
/// component), which backups before December 2026 took and recorded, are
/// left aside by a mirror, rather than refuse it now that they are
/// refused on the command line.
#[test]
fn a_mirror_leaves_aside_recorded_patterns_that_match_nothing() {
    let repo = Repo::new();
    let id = craft_snapshot_excluding(
        &repo,
        vec![Name(Vec::new()), Name(b"a//b".to_vec())],
        |_, d| Tree::new(vec![node(b"ok", NodeKind::File { chunks: vec![d] }, 8)]),
    );
    let target = repo.scratch("target");
    write(&target.join("extra"), "not in the snapshot");
    let out = repo.restore_out(&id, &target, &["--policy", "mirror"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(fs::read(target.join("ok")).unwrap(), b"escaped!");
    assert!(!target.join("extra").exists(), "{out}");
}

/// A config whose header is damaged (emptied, overwritten) says that only
/// a copy of it mends the repository, whatever the password; one of a
/// later format says so, and that it is damage only if no newer cairn
/// wrote it.
#[test]
fn a_config_with_a_damaged_header_is_to_be_restored_from_a_copy() {
    let repo = Repo::new();
    // Without its copy (a repository made before cairn kept one).
    fs::remove_file(repo.path.join("config.copy")).unwrap();
    let config = repo.path.join("config");
    let good = fs::read(&config).unwrap();
    let mut newer = good.clone();
    newer[8] = 9;
    let mut overwritten = good.clone();
    overwritten[..8].copy_from_slice(b"#!/bin/s");
    for (bytes, said) in [
        (
            Vec::new(),
            "it is empty; restore `config` from a copy of the repository",
        ),
        (
            overwritten,
            "does not start with \"CAIRNCFG\", so it is damaged; restore `config` from a copy",
        ),
        (
            newer,
            "if no newer cairn has written to this repository, the config is damaged: restore \
             `config` from a copy",
        ),
    ] {
        fs::write(&config, &bytes).unwrap();
        for password in [PASSWORD, "not the password"] {
            let mut c = repo.cmd(&["snapshots"]);
            c.env("CAIRN_PASSWORD", password);
            let out = run(&mut c, None);
            assert_eq!(out.code, 1, "{out}");
            assert!(out.stderr.contains("config of"), "{out}");
            assert!(out.stderr.contains(said), "{out}");
            assert!(!out.stderr.contains("wrong password"), "{out}");
        }
    }
    fs::write(&config, &good).unwrap();
    repo.run(&["snapshots"]).success();
}

/// A repository this user may not read (another user's, mode 0700, or
/// with keys/ closed to others) says so and what to do: it was the bare
/// "stat …/config: Permission denied".
#[test]
fn a_repository_this_user_may_not_read_says_so() {
    let repo = Repo::new();
    readable_by_all(repo.dir.path());
    let open_as_nobody = || {
        let mut c = repo.cmd(&["snapshots"]);
        as_nobody(&mut c);
        run(&mut c, None)
    };
    let mode = |p: &Path, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    };
    for closed in [repo.path.clone(), repo.path.join("keys")] {
        mode(&closed, 0o700);
        let out = open_as_nobody();
        assert_eq!(out.code, 1, "{out}");
        assert!(out.stderr.contains("Permission denied"), "{out}");
        assert!(
            out.stderr.contains(&format!(
                "this user may not read the repository at {}: run cairn as a user who may",
                repo.path.display()
            )),
            "{out}"
        );
        mode(&closed, 0o755);
    }
    open_as_nobody().success();
}

/// A folder without a config whose data folders this user may not list
/// is not taken for an interrupted `init`: removing keys/, as that advice
/// says, would leave the data no key once `config` came back from a copy.
#[test]
fn a_repository_without_config_whose_folders_cannot_be_listed_is_not_told_to_init() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);
    readable_by_all(repo.dir.path());
    fs::remove_file(repo.path.join("config")).unwrap();
    // Without its copy (a repository made before cairn kept one).
    fs::remove_file(repo.path.join("config.copy")).unwrap();
    for dir in ["packs", "index", "snapshots"] {
        chmod(&repo.path.join(dir), 0o700);
    }
    let mut c = repo.cmd(&["snapshots"]);
    as_nobody(&mut c);
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("has no config, and its folder")
            && out.stderr.contains("could not be listed")
            && out.stderr.contains("remove nothing until then"),
        "{out}"
    );
    assert!(!out.stderr.contains("remove keys/"), "{out}");
    assert!(!out.stderr.contains("cairn init"), "{out}");
    // Nor does `init` there say to remove the key files (it took them for
    // another `init`'s at work).
    let mut c = repo.cmd(&["init"]);
    c.args(FAST_INIT);
    as_nobody(&mut c);
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("remove nothing until then"), "{out}");
    assert!(!out.stderr.contains("remove those key files"), "{out}");
}

/// A dry run of a restore fails the files the restore would fail before
/// reading them: one whose pack is gone (it said "would have restored").
#[test]
fn a_dry_run_restore_fails_a_file_whose_pack_is_gone() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write_random(&src.join("big.bin"), 21, 300_000);
    write(&src.join("small.txt"), "small");
    repo.backup(&[&src], &[]);
    let data: Vec<String> = packs(&repo)
        .into_iter()
        .filter(|(k, _)| k == "Data")
        .map(|(_, p)| p)
        .collect();
    for p in &data {
        fs::remove_file(pack_path(&repo, p)).unwrap();
    }
    let target = repo.scratch("target");
    let out = repo.restore_out("latest", &target, &["--dry-run"]);
    assert_eq!(out.code, 1, "{out}");
    let big = restored(&target, &src).join("big.bin");
    assert!(
        out.stderr.contains(&format!("{}", big.display()))
            && out.stderr.contains("which does not exist"),
        "{out}"
    );
    assert!(!target.exists(), "{out}");
    // So is a pack that is a dangling symlink, which a listing names, or
    // a folder, which has a size.
    for p in &data {
        std::os::unix::fs::symlink("/nonexistent", pack_path(&repo, p)).unwrap();
    }
    let out = repo.restore_out("latest", &target, &["--dry-run"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("which does not exist"), "{out}");
    for p in &data {
        fs::remove_file(pack_path(&repo, p)).unwrap();
        fs::create_dir(pack_path(&repo, p)).unwrap();
    }
    let out = repo.restore_out("latest", &target, &["--dry-run"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("big.bin"), "{out}");
}

/// A path given to back up that this user may not read at all (a folder
/// it may not list, a file it may not open) is refused as a missing one
/// is, exit 1 and no snapshot: the folders above it alone would stand as
/// the set's newest snapshot, night after night. What cannot be read
/// further down is a warning, exit 3, and the snapshot is written.
#[test]
fn a_given_path_this_user_may_not_read_writes_no_snapshot() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("closed/f"), "secret");
    write(&src.join("shut"), "secret");
    write(&src.join("open/g"), "fine");
    write(&src.join("open/deeper/h"), "hidden");
    give_to(repo.dir.path(), NOBODY, true);
    for closed in ["closed", "shut", "open/deeper"] {
        chmod(&src.join(closed), 0o000);
    }
    let as_nobody_run = |args: &[&str]| {
        let mut c = repo.cmd(args);
        as_nobody(&mut c);
        run(&mut c, None)
    };
    for (path, cannot) in [("closed", "cannot list it"), ("shut", "cannot open it")] {
        let given = src.join(path);
        let out = as_nobody_run(&["backup", given.to_str().unwrap()]);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stderr
                .contains(&format!("back up {}: {cannot}", given.display()))
                && out.stderr.contains("Permission denied")
                && out.stderr.contains("no snapshot is written"),
            "{out}"
        );
        // Beside a readable path too: the backup is refused as a whole.
        let open = src.join("open/g");
        let out = as_nobody_run(&["backup", open.to_str().unwrap(), given.to_str().unwrap()]);
        assert_eq!(out.code, 1, "{out}");
    }
    assert_eq!(repo.snapshots().len(), 0);
    let open = src.join("open");
    let out = as_nobody_run(&["backup", open.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("could not be read"), "{out}");
    assert_eq!(repo.snapshots().len(), 1);
}
