//! `cairn key export` and `--key-file`: opening a repository with its
//! exported master key instead of a password.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// `cairn -r REPO ARGS` opened with `key` and no password anywhere.
fn with_key(repo: &Repo, key: &Path, args: &[&str]) -> Command {
    let mut c = cairn();
    c.arg("-r").arg(&repo.path).args(args);
    c.env("CAIRN_KEY_FILE", key);
    c
}

fn export(repo: &Repo, name: &str) -> std::path::PathBuf {
    let key = repo.scratch(name);
    let out = repo
        .run(&["key", "export", key.to_str().unwrap()])
        .success();
    assert!(out.stdout.contains("--key-file"), "{out}");
    key
}

#[test]
fn an_exported_key_backs_up_restores_and_verifies_without_a_password() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write_random(&src.join("big"), 1, 3 << 20);
    write(&src.join("dir/small"), "small file");
    let key = export(&repo, "repo.key");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 140);

    let out = run(with_key(&repo, &key, &["backup", "--json"]).arg(&src), None).success();
    let id = out.json()["id"].as_str().unwrap().to_string();
    // The password opens the same repository and sees the snapshot.
    assert_eq!(ids(&repo.snapshots()), vec![id.clone()]);

    let target = repo.scratch("target");
    let mut c = with_key(&repo, &key, &["restore", &id, "--target"]);
    run(c.arg(&target), None).success();
    assert_same_tree(&src, &restored(&target, &src));

    let out = run(&mut with_key(&repo, &key, &["verify", "--read-data"]), None).success();
    assert!(out.stdout.contains("opened with a key file"), "{out}");
    assert!(out.stdout.contains("no errors"), "{out}");

    // The global flag works as well as the environment variable.
    let mut c = cairn();
    c.arg("-r")
        .arg(&repo.path)
        .arg("--key-file")
        .arg(&key)
        .arg("snapshots");
    let out = run(&mut c, None).success();
    assert!(out.stdout.contains(&id[..8]), "{out}");
}

#[test]
fn a_key_of_another_repository_is_refused_with_exit_12() {
    let a = Repo::new();
    let b = Repo::new();
    let key = export(&a, "a.key");
    let src = b.scratch("src");
    write(&src.join("f"), "data");
    let out = run(with_key(&b, &key, &["backup"]).arg(&src), None);
    assert_eq!(out.code, 12, "{out}");
    assert!(out.stderr.contains("wrong key file"), "{out}");
    assert!(out.stderr.contains("holds the key of repository"), "{out}");
    assert!(b.snapshots().is_empty(), "nothing was written");
}

/// Each is a usage error (exit 2), as an exclude file that cannot be
/// read is: a job's configuration is wrong.
#[test]
fn damaged_or_exposed_key_files_are_refused_by_name() {
    let repo = Repo::new();
    let key = export(&repo, "repo.key");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&mut with_key(&repo, &key, &["snapshots"]), None);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("open to other users (mode 644)"),
        "{out}"
    );
    assert!(out.stderr.contains("chmod 600"), "{out}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A folder given for the key file is said to be one (it was called
    // open to other users).
    let folder = repo.scratch("a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    let out = run(&mut with_key(&repo, &folder, &["snapshots"]), None);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("is a folder, not a key file"), "{out}");

    let mut bytes = std::fs::read(&key).unwrap();
    bytes[50] ^= 0x40;
    std::fs::write(&key, &bytes).unwrap();
    let out = run(&mut with_key(&repo, &key, &["snapshots"]), None);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("repo.key is corrupt: checksum mismatch"),
        "{out}"
    );

    std::fs::write(&key, &bytes[..100]).unwrap();
    let out = run(&mut with_key(&repo, &key, &["snapshots"]), None);
    assert!(out.stderr.contains("is 100 bytes, expected 140"), "{out}");

    let missing = repo.dir.path().join("nowhere.key");
    let out = run(&mut with_key(&repo, &missing, &["snapshots"]), None);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("nowhere.key"), "{out}");
    // Said before anything about the repository, as every usage error is.
    let mut c = cairn();
    c.arg("-r")
        .arg(repo.dir.path().join("no-repo"))
        .arg("snapshots")
        .env("CAIRN_KEY_FILE", &missing);
    let out = run(&mut c, None);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("nowhere.key"), "{out}");
}

#[test]
fn export_never_overwrites_a_file() {
    let repo = Repo::new();
    let path = repo.scratch("existing");
    write(&path, "precious");
    let out = repo.run(&["key", "export", path.to_str().unwrap()]);
    assert_eq!(out.code, 2, "a usage error: {out}");
    assert!(out.stderr.contains("exists already"), "{out}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    // And a wrong password exports nothing.
    let fresh = repo.scratch("fresh.key");
    let mut c = repo.cmd(&["key", "export", fresh.to_str().unwrap()]);
    c.env("CAIRN_PASSWORD", "not it");
    assert_eq!(run(&mut c, None).code, 12);
    assert!(!fresh.exists());

    // A folder that is not there, or not a folder, is named before the
    // password is asked for (a wrong one here).
    let file = repo.scratch("a-file");
    write(&file, "x");
    for (dest, why) in [
        (repo.scratch("no-such-folder").join("k.key"), "No such file"),
        (file.join("k.key"), "is not a folder"),
    ] {
        let mut c = repo.cmd(&["key", "export", dest.to_str().unwrap()]);
        c.env("CAIRN_PASSWORD", "not it");
        let out = run(&mut c, None);
        assert_eq!(out.code, 2, "{}: {out}", dest.display());
        assert!(out.stderr.contains(why), "{}: {out}", dest.display());
        assert!(out.stderr.contains("k.key"), "{}: {out}", dest.display());
    }
}

#[test]
fn a_well_formed_file_with_the_wrong_key_does_not_open() {
    let repo = Repo::new();
    let key = export(&repo, "repo.key");
    let bytes = std::fs::read(&key).unwrap();
    let repo_id: [u8; 32] = bytes[12..44].try_into().unwrap();
    let forged = cairn::repo::export::encode(&repo_id, &cairn::crypto::MasterKey::generate());
    std::fs::write(&key, &forged[..]).unwrap();
    let out = run(&mut with_key(&repo, &key, &["snapshots"]), None);
    assert_eq!(out.code, 12, "{out}");
    assert!(
        out.stderr.contains("its key does not open the config"),
        "{out}"
    );
}

#[test]
fn a_keys_folder_without_key_files_is_reported_and_stops_no_key_file_user() {
    let repo = Repo::new();
    let key = export(&repo, "repo.key");
    let out = run(&mut with_key(&repo, &key, &["verify"]), None).success();
    assert!(!out.stderr.contains("no intact key file"), "{out}");
    // Key files this user may not read (a restore-only user given the
    // exported key) are no damage: nothing is said.
    readable_by_all(repo.dir.path());
    for e in std::fs::read_dir(repo.path.join("keys")).unwrap() {
        let p = e.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    give_to(&key, NOBODY, false);
    let mut c = with_key(&repo, &key, &["snapshots"]);
    as_nobody(&mut c);
    let out = run(&mut c, None).success();
    assert!(!out.stderr.contains("no intact key file"), "{out}");
    // verify cannot check them, and says that is no damage.
    let mut c = with_key(&repo, &key, &["verify"]);
    as_nobody(&mut c);
    let out = run(&mut c, None);
    assert!(
        out.stdout
            .contains("the store refused a read (no permission), which is not damage"),
        "{out}"
    );
    // Its one key file damaged: the key file opens it, and says no
    // password does.
    let only = std::fs::read_dir(repo.path.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&only).unwrap();
    std::fs::write(&only, &good[..good.len() / 2]).unwrap();
    let out = run(&mut with_key(&repo, &key, &["snapshots"]), None).success();
    assert!(out.stderr.contains("has no intact key file"), "{out}");
    std::fs::remove_file(&only).unwrap();
    // The key file still opens it; no password would, which says what
    // to do.
    run(&mut with_key(&repo, &key, &["snapshots"]), None).success();
    let out = repo.run(&["snapshots"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("keys/ holds no key file")
            && out.stderr.contains("restore keys/ from a copy"),
        "{out}"
    );

    let out = run(&mut with_key(&repo, &key, &["verify"]), None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains("keys/") && out.stdout.contains("holds no key file"),
        "{out}"
    );

    // Without the folder at all (a copy that left it out), the key file
    // opens it for every command, which says that no password does: the
    // listing, the restore and a backup were refused, as if snapshots
    // could be taken for gone without it.
    std::fs::remove_dir(repo.path.join("keys")).unwrap();
    // verify says so, and that gc runs meanwhile (it said gc refused).
    let out = run(&mut with_key(&repo, &key, &["verify"]), None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains("keys/: missing")
            && out
                .stdout
                .contains("no password opens the repository meanwhile")
            && !out.stdout.contains("gc refuses")
            && !out.stdout.contains("holds no key file"),
        "{out}"
    );
    run(&mut with_key(&repo, &key, &["gc", "--dry-run"]), None).success();
    let src = repo.scratch("src");
    write(&src.join("f"), "after keys/ went");
    let target = repo.scratch("target");
    for args in [
        vec!["snapshots"],
        vec!["backup", src.to_str().unwrap()],
        vec!["restore", "latest", "--target", target.to_str().unwrap()],
    ] {
        let out = run(&mut with_key(&repo, &key, &args), None);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert!(
            out.stderr
                .contains("has no intact key file (keys/ is missing, empty or damaged)")
                && out.stderr.contains("put keys/ back from a copy"),
            "{args:?}: {out}"
        );
    }
    assert_same_tree(&src, &restored(&target, &src));
}

/// A backup with a key file (flag or environment) and no default
/// repository yet does not create one: its new key would not be the one
/// the file holds. Nothing is created, not even the password file.
#[test]
fn a_key_file_does_not_create_the_default_repository() {
    let repo = Repo::new();
    let key = export(&repo, "repo.key");
    let home = repo.scratch("home");
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    for via_env in [false, true] {
        let mut c = cairn();
        c.arg("backup").arg(&src);
        if via_env {
            c.env("CAIRN_KEY_FILE", &key);
        } else {
            c.arg("--key-file").arg(&key);
        }
        c.env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"));
        let out = run(&mut c, None);
        assert_eq!(out.code, 10, "{out}");
        assert!(
            out.stderr.contains("no repository at ")
                && out
                    .stderr
                    .contains(", the default repository, yet; the key file")
                && out
                    .stderr
                    .contains("opens only the repository it was exported from")
                && out.stderr.contains(if via_env {
                    "CAIRN_KEY_FILE"
                } else {
                    "--key-file"
                }),
            "{out}"
        );
        assert!(!home.exists(), "something was created:\n{out}");
    }
}

/// `--password-file` and `--key-file` together are a usage error, on
/// either side of the command; in the environment, CAIRN_KEY_FILE wins
/// over CAIRN_PASSWORD; `init` leaves CAIRN_KEY_FILE aside and says so.
#[test]
fn key_file_and_password_precedence() {
    let repo = Repo::new();
    let key = export(&repo, "repo.key");
    let pw = repo.scratch("pw");
    write(&pw, format!("{PASSWORD}\n"));
    let (k, p) = (key.to_str().unwrap(), pw.to_str().unwrap());
    for args in [
        vec!["snapshots", "--password-file", p, "--key-file", k],
        vec!["--key-file", k, "snapshots", "--password-file", p],
    ] {
        let mut c = cairn();
        c.arg("-r").arg(&repo.path).args(&args);
        let out = run(&mut c, None);
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(
            out.stderr.contains("--key-file") && out.stderr.contains("--password-file"),
            "{out}"
        );
    }

    // CAIRN_KEY_FILE wins over CAIRN_PASSWORD: a wrong password is not
    // tried, and another repository's key is refused though the password
    // is right.
    let mut c = with_key(&repo, &key, &["snapshots"]);
    c.env("CAIRN_PASSWORD", "not the password");
    run(&mut c, None).success();
    let other = Repo::new();
    let other_key = export(&other, "other.key");
    let mut c = with_key(&repo, &other_key, &["snapshots"]);
    c.env("CAIRN_PASSWORD", PASSWORD);
    let out = run(&mut c, None);
    assert_eq!(out.code, 12, "{out}");
    assert!(out.stderr.contains("wrong key file"), "{out}");

    let fresh = repo.scratch("fresh");
    let mut c = cairn();
    c.arg("-r").arg(&fresh).arg("init").args(FAST_INIT);
    c.env("CAIRN_KEY_FILE", &key)
        .env("CAIRN_PASSWORD", PASSWORD);
    let out = run(&mut c, None).success();
    assert!(
        out.stderr.contains(&format!(
            "warning: CAIRN_KEY_FILE ({}) is left aside",
            key.display()
        )),
        "{out}"
    );
}
