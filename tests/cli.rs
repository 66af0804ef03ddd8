//! The command line: standard input backups, global options, the default
//! repository, and the read-only commands `ls` and `cat`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

#[test]
fn stdin_backup_restores_byte_for_byte() {
    let repo = Repo::new();
    let mut data = b"-- dump\nCREATE TABLE t (x int);\n".repeat(20_000);
    data.extend(random_bytes(21, 1_500_000));
    data.extend(b"\0\0 trailing \xff bytes");

    let out = repo.run_stdin(
        &[
            "backup",
            "--stdin",
            "--stdin-filename",
            "dump.sql",
            "--json",
        ],
        &data,
    );
    let snap = out.success().json();
    assert_eq!(snap["paths"], serde_json::json!(["dump.sql"]));
    assert_eq!(snap["empty_stream"], false);
    assert_eq!(snap["summary"]["bytes_read"], data.len() as u64);

    let ls = repo.run(&["ls", "latest"]).success();
    assert_eq!(ls.stdout, "/dump.sql\n");
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_eq!(list_paths(&target), vec![Path::new("dump.sql")]);
    assert!(fs::read(target.join("dump.sql")).unwrap() == data);

    // Empty input gives an empty file, but an empty dump is almost always
    // a producer that failed: the snapshot is written, and the run warns
    // and ends with 3, not 0.
    let before = repo.snapshots().len();
    let out = repo.run_stdin(
        &["backup", "--stdin", "--stdin-filename", "empty", "--json"],
        b"",
    );
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("warning: the input was empty"), "{out}");
    let report = out.json();
    let id = report["id"].as_str().unwrap().to_string();
    assert!(out.stderr.contains(&id[..8]), "{out}");
    // The report says why it is exit 3, as it does for the other reasons.
    assert_eq!(report["empty_stream"], true, "{out}");
    assert_eq!(repo.snapshots().len(), before + 1);
    let target = repo.scratch("target-empty");
    repo.restore("latest", &target, &[]);
    assert_eq!(fs::read(target.join("empty")).unwrap(), b"");

    // A name that would escape the target, or that no filesystem takes
    // (longer than 255 bytes: the stream could not be restored), is
    // refused up front, as a usage error, before the repository is opened
    // (or made).
    let long = "x".repeat(256);
    for bad in ["../x", "a/b", "..", "", ".", &long] {
        let out = repo.run_stdin(&["backup", "--stdin", "--stdin-filename", bad], b"x");
        assert_eq!(out.code, 2, "{bad}: {out}");
        assert!(out.stderr.contains("--stdin-filename"), "{bad}: {out}");
        let mut c = cairn();
        c.args([
            "backup",
            "-r",
            "/nonexistent/repo",
            "--stdin",
            "--stdin-filename",
            bad,
        ]);
        let out = run(&mut c, Some(b"x"));
        assert_eq!(out.code, 2, "{bad}: {out}");
    }
    assert_eq!(repo.snapshots().len(), 2);
    // Without a name, it says what to give, and no usage line making
    // paths or --repo out to be required.
    let out = repo.run_stdin(&["backup", "--stdin"], b"x");
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("--stdin needs --stdin-filename NAME")
            && !out.stderr.contains("Usage:"),
        "{out}"
    );

    // Options that choose what a walk of paths reads are refused with a
    // stream, as usage errors (they were dropped without a word).
    for opt in [
        &["--exclude", "*.log"][..],
        &["-x"],
        &["--exclude-file", "/dev/null"],
    ] {
        let mut args = vec!["backup", "--stdin", "--stdin-filename", "o.sql"];
        args.extend_from_slice(opt);
        let out = repo.run_stdin(&args, b"x");
        assert_eq!(out.code, 2, "{opt:?}: {out}");
        assert!(
            out.stderr.contains("give them with paths"),
            "{opt:?}: {out}"
        );
    }
    assert_eq!(repo.snapshots().len(), 2);

    // A dump imported as of a night long past is dated that night, as its
    // snapshot is (it took the time of the import).
    let args = [
        "backup",
        "--stdin",
        "--stdin-filename",
        "old.sql",
        "--time",
        "2001-01-01T00:00:00Z",
        "--json",
    ];
    let snap = repo.run_stdin(&args, b"old dump").success().json();
    let id = snap["id"].as_str().unwrap();
    let out = repo.run(&["ls", id, "--json"]).success();
    let node: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(node["name"], "old.sql", "{out}");
    assert_eq!(node["mtime_ns"], 978_307_200_000_000_000_i64, "{out}");
    repo.run(&["forget", id]).success();

    // A standard input open for writing only, or closed, is no empty
    // stream: an error saying so, and no snapshot (it stored "the input
    // was empty", exit 3).
    let sink = repo.scratch("write-only");
    let mut c = repo.cmd(&["backup", "--stdin", "--stdin-filename", "w.sql"]);
    c.stdin(fs::File::create(&sink).unwrap());
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("standard input is open for writing only"),
        "{out}"
    );
    let mut c = repo.cmd(&["backup", "--stdin", "--stdin-filename", "c.sql"]);
    // SAFETY: only close(2), async-signal-safe, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, || {
            libc::close(0);
            Ok(())
        });
    }
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("standard input is not open"), "{out}");
    assert_eq!(repo.snapshots().len(), 2);
    // `</dev/null` is an empty stream, as before (exit 3).
    let mut c = repo.cmd(&["backup", "--stdin", "--stdin-filename", "n.sql"]);
    c.stdin(fs::File::open("/dev/null").unwrap());
    assert_eq!(run(&mut c, None).code, 3);
    assert_eq!(repo.snapshots().len(), 3);
}

#[test]
fn global_options_env_and_password_file() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    let id = repo.backup(&[&src], &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = repo.path.to_str().unwrap();

    // Switches from the environment take 1/0 and yes/no as well as
    // true/false (`CAIRN_NO_CACHE=1` was refused as a usage error).
    for (var, value) in [
        ("CAIRN_NO_CACHE", "1"),
        ("CAIRN_NO_CACHE", "no"),
        ("CAIRN_S3_VIRTUAL_HOST", "0"),
    ] {
        let mut c = repo.cmd(&["snapshots"]);
        c.env(var, value);
        let out = run(&mut c, None);
        assert_eq!(out.code, 0, "{var}={value}: {out}");
    }

    let listed = |out: Out| {
        let out = out.success();
        let v = out.json();
        assert_eq!(ids(v.as_array().unwrap()), vec![id.clone()], "{out}");
    };
    let with_pw = |args: &[&str]| {
        let mut c = cairn();
        c.args(args).env("CAIRN_PASSWORD", PASSWORD);
        run(&mut c, None)
    };
    // Before and after the subcommand, short and long.
    listed(with_pw(&["-r", r, "snapshots", "--json"]));
    listed(with_pw(&["snapshots", "-r", r, "--json"]));
    listed(with_pw(&["snapshots", "--json", "--repo", r]));
    listed(with_pw(&[&format!("--repo={r}"), "snapshots", "--json"]));
    // From the environment.
    let mut c = cairn();
    c.args(["snapshots", "--json"])
        .env("CAIRN_REPO", &repo.path)
        .env("CAIRN_PASSWORD", PASSWORD);
    listed(run(&mut c, None));
    // An explicit --repo wins over CAIRN_REPO.
    let mut c = cairn();
    c.args(["snapshots", "--json", "-r", r])
        .env("CAIRN_REPO", repo.dir.path().join("elsewhere"))
        .env("CAIRN_PASSWORD", PASSWORD);
    listed(run(&mut c, None));

    // --password-file: the first line is the password.
    let pw = repo.scratch("password");
    write(&pw, format!("{PASSWORD}\nsecond line is ignored\n"));
    let pw_s = pw.to_str().unwrap();
    for args in [
        vec!["--password-file", pw_s, "-r", r, "snapshots", "--json"],
        vec!["snapshots", "--json", "-r", r, "--password-file", pw_s],
    ] {
        let mut c = cairn();
        c.args(&args);
        listed(run(&mut c, None));
    }
    let mut c = cairn();
    c.args(["snapshots", "--json", "-r", r])
        .env("CAIRN_PASSWORD_FILE", &pw);
    listed(run(&mut c, None));

    // With no password from anywhere and no terminal, a clear usage error.
    let mut c = cairn();
    c.args(["snapshots", "-r", r]);
    let out = run(&mut c, None);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("no password"), "{out}");
}

#[test]
fn default_repository_is_created_with_a_generated_password() {
    let home = tempfile::tempdir().unwrap();
    let data_home = home.path().join("data");
    let config_home = home.path().join("config");
    let src = home.path().join("src");
    write(&src.join("notes.txt"), "remember me");
    let cmd = |args: &[&str]| {
        let mut c = cairn();
        c.args(args)
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", &data_home)
            .env("XDG_CONFIG_HOME", &config_home);
        c
    };

    // A path that is not there makes no default repository for nothing.
    let missing = home.path().join("missing");
    let out = run(&mut cmd(&["backup", missing.to_str().unwrap()]), None);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("No such file"), "{out}");
    assert!(!data_home.exists() && !config_home.exists(), "{out}");
    // Before it is made, a reader says how it comes to be: by a backup,
    // or `init` given a password (`init` alone refuses for want of one).
    let mut c = cmd(&["snapshots"]);
    c.env_remove("CAIRN_PASSWORD").env_remove("CAIRN_REPO");
    let out = run(&mut c, None);
    assert_eq!(out.code, 10, "{out}");
    assert!(
        out.stderr
            .contains("the default repository is made by the first `cairn backup`"),
        "{out}"
    );

    let out = run(&mut cmd(&["backup", "--json", src.to_str().unwrap()]), None).success();
    let snap = out.json();
    let pw_file = config_home.join("cairn/default-repo.password");
    let repo_dir = data_home.join("cairn/default");
    assert!(out.stderr.contains("NOTE"), "{out}");
    assert!(
        out.stderr.contains(pw_file.to_str().unwrap()),
        "the note should say where the password is:\n{out}"
    );
    assert!(repo_dir.join("config").is_file(), "{out}");
    let mode = fs::metadata(&pw_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "password file mode {mode:o}");
    let pw = fs::read_to_string(&pw_file).unwrap();
    assert!(pw.trim().len() >= 32, "a real random password: {pw:?}");

    // Later commands find the repository and its password by themselves.
    let out = run(&mut cmd(&["snapshots"]), None).success();
    assert!(
        out.stdout.contains(&snap["id"].as_str().unwrap()[..8]),
        "{out}"
    );
    let out = run(&mut cmd(&["snapshots", "--json"]), None).success();
    assert_eq!(ids(out.json().as_array().unwrap()).len(), 1);

    // A second backup reuses it quietly.
    write(&src.join("more.txt"), "more");
    let out = run(&mut cmd(&["backup", src.to_str().unwrap()]), None).success();
    assert!(!out.stderr.contains("NOTE"), "{out}");
    let target = home.path().join("target");
    let mut c = cmd(&["restore", "latest", "--target"]);
    c.arg(&target);
    run(&mut c, None).success();
    assert_same_tree(&src, &restored(&target, &src));

    // The generated password is a real one: it opens the repository
    // explicitly too, and another does not.
    let mut c = cairn();
    c.arg("snapshots").arg("-r").arg(&repo_dir);
    c.arg("--password-file").arg(&pw_file);
    run(&mut c, None).success();
    let mut c = cairn();
    c.arg("snapshots").arg("-r").arg(&repo_dir);
    c.env("CAIRN_PASSWORD", "guess");
    assert_eq!(run(&mut c, None).code, 12);

    // Its password file lost, opening it says so, and that the file held
    // its password (it said only "no password").
    let aside = home.path().join("password-aside");
    fs::rename(&pw_file, &aside).unwrap();
    let out = run(&mut cmd(&["snapshots"]), None);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "the default repository's password file {} is not there",
            pw_file.display()
        )) && out
            .stderr
            .contains("put the file back from your copy of it"),
        "{out}"
    );
    fs::rename(&aside, &pw_file).unwrap();
    run(&mut cmd(&["snapshots"]), None).success();

    // A password given where no repository is: the default one made with
    // it is said, as a job that lost its CAIRN_REPO would otherwise back
    // up there without a word.
    fs::remove_dir_all(&repo_dir).unwrap();
    fs::remove_file(&pw_file).unwrap();
    let mut c = cmd(&["backup", src.to_str().unwrap()]);
    c.env("CAIRN_PASSWORD", "chosen");
    let out = run(&mut c, None).success();
    let said = format!(
        "note: no --repo or CAIRN_REPO given: created the default repository at {}, \
         with the password from CAIRN_PASSWORD",
        repo_dir.display()
    );
    assert!(out.stderr.contains(&said), "{out}");
    assert!(!pw_file.exists(), "{out}");
    let out = run(
        cmd(&["backup", src.to_str().unwrap()]).env("CAIRN_PASSWORD", "chosen"),
        None,
    )
    .success();
    assert!(!out.stderr.contains("created the default"), "{out}");
}

/// The JSON lines of `cairn ls --json`.
fn ls_json(repo: &Repo, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["ls", "--json"];
    all.extend_from_slice(args);
    let out = repo.run(&all).success();
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Short prefixes several blobs share: `cat tree` of one that starts no
/// tree says so (it asked for more digits, which led to "a file's
/// chunk"), `cat blob` names two, and `cat pack` says several blobs
/// start so (it said only "not found").
#[test]
fn cat_prefixes_several_blobs_share_are_said_so() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    // Some 3,000 chunks: thousands of pairs share 4 hex digits.
    for i in 0..3000 {
        write(
            &src.join(format!("d{}/f{i}", i % 30)),
            format!("content {i}\n"),
        );
    }
    repo.backup(&[&src], &[]);
    let tables = repo.run(&["cat", "index"]).success().json();
    let mut data: std::collections::BTreeMap<String, usize> = Default::default();
    let mut trees: BTreeSet<String> = BTreeSet::new();
    for t in tables.as_array().unwrap() {
        for e in t["entries"].as_array().unwrap() {
            let prefix = e["id"].as_str().unwrap()[..4].to_string();
            match e["kind"].as_str().unwrap() {
                "Tree" => {
                    trees.insert(prefix);
                }
                _ => *data.entry(prefix).or_default() += 1,
            }
        }
    }
    let shared = data
        .iter()
        .find(|(p, n)| **n >= 2 && !trees.contains(*p))
        .map(|(p, _)| p.clone())
        .expect("two chunks sharing 4 hex digits");
    let out = repo.run(&["cat", "tree", &shared]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "tree whose id starts with {shared} (in the index) not found"
        )),
        "{out}"
    );
    let out = repo.run(&["cat", "blob", &shared]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "\"{shared}\" starts the ids of more than one blob ("
        )),
        "{out}"
    );
    let out = repo.run(&["cat", "pack", &shared]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "{shared} starts the ids of several blobs (`cairn cat tree` or `cairn cat blob` \
             with more digits shows one)"
        )),
        "{out}"
    );
}

#[test]
fn ls_and_cat_show_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo_path = dir.path().join("repo");
    let mut c = cairn();
    c.arg("init").arg("-r").arg(&repo_path).args(FAST_INIT);
    c.env("CAIRN_PASSWORD", PASSWORD);
    let init = run(&mut c, None).success();
    let repo = Repo {
        path: repo_path,
        dir,
    };
    let src = repo.scratch("src");
    write(&src.join("a.txt"), "alpha");
    // Longer than the largest chunk (1 MiB): at least two chunks, wherever
    // this repository's secret gear table puts the cuts.
    write_random(&src.join("sub/b.bin"), 31, 1_300_000);
    write(&src.join("sub/with space"), "");
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    chmod(&src.join("a.txt"), 0o640);
    let snap = repo.backup(&[&src], &["--tag", "first"]);
    let id = snap["id"].as_str().unwrap();
    let base = abs(&src);

    // ls: every path, absolute, ancestors included.
    let out = repo.run(&["ls", "latest"]).success();
    let listed: BTreeSet<&str> = out.stdout.lines().collect();
    let mut expected: BTreeSet<String> = ["a.txt", "link", "sub", "sub/b.bin", "sub/with space"]
        .iter()
        .map(|p| format!("{base}/{p}"))
        .collect();
    let mut anc = Path::new(&base);
    while anc != Path::new("/") {
        expected.insert(anc.to_str().unwrap().to_string());
        anc = anc.parent().unwrap();
    }
    assert_eq!(
        listed,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    // Only a subdirectory, by id prefix.
    let out = repo
        .run(&["ls", &id[..10], &format!("{base}/sub")])
        .success();
    assert_eq!(
        out.stdout,
        format!("{base}/sub/b.bin\n{base}/sub/with space\n")
    );
    // `..` and `.` are resolved by the words: the same listing.
    let sub_name = Path::new(&base).file_name().unwrap().to_str().unwrap();
    let out = repo
        .run(&[
            "ls",
            "latest",
            &format!("{base}/./sub/../../{sub_name}/sub"),
        ])
        .success();
    assert_eq!(
        out.stdout,
        format!("{base}/sub/b.bin\n{base}/sub/with space\n")
    );
    // And a restore's subpath the same way.
    let target = repo.scratch("target-dotdot");
    let spec = format!("latest:{base}/sub/../sub");
    let out = repo.run(&["restore", &spec, "--target", target.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    let mut restored = list_paths(&target);
    restored.sort();
    assert_eq!(
        restored,
        [Path::new("b.bin"), Path::new("with space")],
        "{out}"
    );

    // Long format shows modes and link targets.
    let out = repo.run(&["ls", "-l", "latest", &base]).success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("-rw-r-----") && l.ends_with("/a.txt")),
        "{out}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with('l') && l.ends_with("/link -> a.txt")),
        "{out}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with('d') && l.ends_with("/sub")),
        "{out}"
    );

    // ls --json: one object per line, with the nodes' content ids.
    let entries = ls_json(&repo, &["latest", &base]);
    assert_eq!(entries.len(), 5);
    let by_path = |p: &str| {
        entries
            .iter()
            .find(|e| e["path"] == format!("{base}/{p}"))
            .unwrap_or_else(|| panic!("{p} not listed"))
            .clone()
    };
    let a = by_path("a.txt");
    assert_eq!(a["name"], "a.txt");
    assert_eq!(a["size"], 5);
    assert_eq!(a["mode"], 0o640);
    let a_chunks = a["kind"]["file"]["chunks"].as_array().unwrap().clone();
    assert_eq!(a_chunks.len(), 1);
    let b_chunks = by_path("sub/b.bin")["kind"]["file"]["chunks"]
        .as_array()
        .unwrap()
        .clone();
    assert!(b_chunks.len() >= 2, "1.3 MB in chunks of at most 1 MiB");
    assert_eq!(by_path("link")["kind"]["symlink"]["target"], "a.txt");
    let sub_tree = by_path("sub")["kind"]["dir"]["subtree"]
        .as_str()
        .unwrap()
        .to_string();

    // cat config: the repository id init printed, and the chunk sizes.
    let config = repo.run(&["cat", "config"]).success().json();
    let repo_id = config["repo_id"].as_str().unwrap();
    assert!(
        init.stdout
            .contains(&format!("created repository {}", &repo_id[..8])),
        "{init}\n{config:#}"
    );
    assert_eq!(config["chunker"]["avg"], 256 * 1024);
    assert_eq!(config["version"], cairn::repo::config::VERSION);
    assert_eq!(config["cipher"], "xaes-256-gcm");
    assert!(
        init.stdout.contains("(data sealed with xaes-256-gcm)"),
        "{init}"
    );

    // cat snapshot: by `latest` and by prefix, the same record as backup's.
    for spec in ["latest", &id[..8]] {
        let s = repo.run(&["cat", "snapshot", spec]).success().json();
        assert_eq!(s["id"], id);
        assert_eq!(s["tree"], snap["tree"]);
        assert_eq!(s["tags"], serde_json::json!(["first"]));
        assert_eq!(s["paths"], serde_json::json!([base]));
    }

    // cat tree: following names from the root reaches the same subtree.
    let mut tree_id = snap["tree"].as_str().unwrap().to_string();
    for comp in Path::new(&base).join("sub").components().skip(1) {
        let tree = repo.run(&["cat", "tree", &tree_id]).success().json();
        let node = tree["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == comp.as_os_str().to_str().unwrap())
            .unwrap_or_else(|| panic!("{comp:?} missing in {tree:#}"))
            .clone();
        tree_id = node["kind"]["dir"]["subtree"].as_str().unwrap().to_string();
    }
    assert_eq!(tree_id, sub_tree);
    let sub = repo.run(&["cat", "tree", &sub_tree]).success().json();
    let names: Vec<&str> = sub["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b.bin", "with space"]);

    // cat index: every blob named so far, each in an existing pack.
    // One backup, two tables: one of its trees, one of its chunks.
    let index = repo.run(&["cat", "index"]).success().json();
    let tables = index.as_array().unwrap();
    let mut kinds: Vec<&str> = tables.iter().map(|t| t["kind"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["Data", "Tree"], "one backup, a table of each kind");
    let table_id = tables[0]["id"].as_str().unwrap();
    assert!(repo.path.join("index").join(table_id).is_file());
    let find = |blob: &str| {
        tables
            .iter()
            .flat_map(|t| t["entries"].as_array().unwrap())
            .find(|e| e["id"] == blob)
            .unwrap_or_else(|| panic!("blob {blob} not in the index"))
    };
    for blob in a_chunks.iter().chain(&b_chunks) {
        assert_eq!(find(blob.as_str().unwrap())["kind"], "Data");
    }
    for t in [snap["tree"].as_str().unwrap(), &sub_tree] {
        assert_eq!(find(t)["kind"], "Tree");
    }
    // A file's chunk asked for as a tree is said to be one, not corrupt.
    let chunk = a_chunks[0].as_str().unwrap();
    let out = repo.run(&["cat", "tree", chunk]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("is a file's chunk, not a tree"),
        "{out}"
    );
    assert!(!out.stderr.contains("corrupt"), "{out}");
    for table in tables {
        for e in table["entries"].as_array().unwrap() {
            assert_eq!(e["kind"], table["kind"], "a table of one kind");
        }
    }
    let by_prefix = repo.run(&["cat", "index", &table_id[..6]]).success().json();
    assert_eq!(by_prefix[0]["id"], table_id);
    // Hex prefixes match whatever their case, as snapshot ids do.
    let upper = table_id[..6].to_ascii_uppercase();
    let by_prefix = repo.run(&["cat", "index", &upper]).success().json();
    assert_eq!(by_prefix[0]["id"], table_id);
    let key = fs::read_dir(repo.path.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let upper = key[..6].to_ascii_uppercase();
    let keys = repo.run(&["cat", "key", &upper]).success().json();
    assert_eq!(keys[0][0], key.as_str(), "{keys:#}");

    // cat pack: the pack's own header agrees with the index.
    let data_pack = find(a_chunks[0].as_str().unwrap())["pack"]
        .as_str()
        .unwrap()
        .to_string();
    let pack = repo.run(&["cat", "pack", &data_pack]).success().json();
    assert_eq!(pack["id"], data_pack);
    let pack_file = repo
        .path
        .join("packs")
        .join(&data_pack[..2])
        .join(&data_pack);
    assert_eq!(pack["size"], fs::metadata(&pack_file).unwrap().len());
    assert_eq!(pack["kind"], "Data");
    let in_pack: BTreeSet<&str> = pack["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let indexed: BTreeSet<&str> = tables
        .iter()
        .flat_map(|t| t["entries"].as_array().unwrap())
        .filter(|e| e["pack"] == data_pack)
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(in_pack, indexed);
    for e in pack["entries"].as_array().unwrap() {
        let i = find(e["id"].as_str().unwrap());
        assert_eq!(i["offset"], e["offset"]);
        assert_eq!(i["length"], e["length"]);
    }

    // cat blob: the plaintext.
    let out = repo
        .run(&["cat", "blob", a_chunks[0].as_str().unwrap()])
        .success();
    assert_eq!(out.stdout, "alpha");

    // Pack, tree and blob by the short ids cairn's messages give, in
    // either case.
    let by_short = repo
        .run(&["cat", "pack", &data_pack[..8].to_ascii_uppercase()])
        .success()
        .json();
    assert_eq!(by_short, pack);
    let by_short = repo.run(&["cat", "tree", &sub_tree[..8]]).success().json();
    assert_eq!(by_short, sub);
    let out = repo
        .run(&["cat", "blob", &a_chunks[0].as_str().unwrap()[..8]])
        .success();
    assert_eq!(out.stdout, "alpha");
    // A prefix nothing starts with names what was asked for; one that
    // starts another kind's id says whose it is.
    let out = repo.run(&["cat", "pack", "0000"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("pack whose id starts with 0000 not found"),
        "{out}"
    );
    let out = repo.run(&["cat", "pack", &sub_tree[..8]]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "pack whose id starts with {0} not found: {0} is a tree's id (`cairn cat tree {0}` \
             shows it)",
            &sub_tree[..8]
        )),
        "{out}"
    );
    let out = repo.run(&["cat", "tree", &data_pack[..8]]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "tree whose id starts with {0} (in the index) not found: {0} is a pack's id",
            &data_pack[..8]
        )),
        "{out}"
    );

    // Unknown ids are errors naming what was asked for.
    let zero = "0".repeat(64);
    let out = repo.run(&["cat", "tree", &zero]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains(&format!("no tree {zero} in the index; check the id")),
        "{out}"
    );
    // Another object's id is said to be one (it was "an index entry …
    // not found", with the advice for a blob the index lost).
    let snap = repo.run(&["snapshots", "--json"]).success().json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = repo.run(&["cat", "tree", &snap]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("it is a snapshot's id (`cairn cat snapshot"),
        "{out}"
    );
    assert!(!out.stderr.contains("repair index"), "{out}");
    // A pack's whole id.
    let pack = repo.run(&["cat", "index"]).success().json()[0]["entries"][0]["pack"]
        .as_str()
        .unwrap()
        .to_string();
    let out = repo.run(&["cat", "tree", &pack]);
    assert!(
        out.stderr.contains(&format!(
            "it is a pack's id (`cairn cat pack {pack}` shows it)"
        )),
        "{out}"
    );
    repo.run(&["cat", "pack", &pack]).success();
    let out = repo.run(&["cat", "snapshot", "ffffffff"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("ffffffff"), "{out}");
    // So are other kinds' ids given to `cat snapshot|pack|index`.
    let out = repo.run(&["cat", "snapshot", &pack[..12]]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "snapshot {} not found: {} is a pack's id (`cairn cat pack {pack}` shows it)",
            &pack[..12],
            &pack[..12]
        )),
        "{out}"
    );
    for kind in ["pack", "index"] {
        let out = repo.run(&["cat", kind, &snap]);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stderr.contains(&format!(
                "is a snapshot's id (`cairn cat snapshot {}` shows it)",
                &snap[..8]
            )),
            "{kind}: {out}"
        );
    }
}

/// `ls --long` shows set-user-ID, set-group-ID and sticky bits as
/// `ls -l` does: `s`/`t` over an `x`, `S`/`T` where there is none.
#[test]
fn ls_long_shows_set_id_and_sticky_bits() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let modes = [
        ("suid", 0o4755, "-rwsr-xr-x"),
        ("suid-no-x", 0o4644, "-rwSr--r--"),
        ("sgid", 0o2755, "-rwxr-sr-x"),
        ("sgid-no-x", 0o2640, "-rw-r-S---"),
        ("plain", 0o755, "-rwxr-xr-x"),
    ];
    for (name, mode, _) in modes {
        write(&src.join(name), name);
        fs::set_permissions(src.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    for (name, mode) in [("tmp", 0o1777), ("sticky-no-x", 0o1770)] {
        fs::create_dir(src.join(name)).unwrap();
        fs::set_permissions(src.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    repo.backup(&[&src], &[]);
    let out = repo
        .run(&["ls", "--long", "latest", src.to_str().unwrap()])
        .success();
    let shown = |name: &str| {
        let line = out
            .stdout
            .lines()
            .find(|l| l.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} not listed\n{out}"));
        line.split(' ').next().unwrap().to_string()
    };
    for (name, _, want) in modes {
        assert_eq!(shown(name), want, "{name}\n{out}");
    }
    assert_eq!(shown("tmp"), "drwxrwxrwt", "{out}");
    assert_eq!(shown("sticky-no-x"), "drwxrwx--T", "{out}");
}

/// `ls --long`'s size column is `ls -l`'s: a file's length, a symlink's
/// target's, a device's major and minor number (made as root only).
#[test]
fn ls_long_sizes_symlinks_and_devices_as_ls_does() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("file"), "12345");
    std::os::unix::fs::symlink("../some/where", src.join("link")).unwrap();
    let root = is_root();
    if root {
        let c = std::ffi::CString::new(src.join("tty").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(4, 64)) };
        assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
    }
    repo.backup(&[&src], &[]);
    let out = repo
        .run(&["ls", "--long", "latest", src.to_str().unwrap()])
        .success();
    let size = |name: &str| {
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} not listed\n{out}"));
        // Mode, owner, group, then the size column up to the date.
        let fields: Vec<&str> = line.split_whitespace().collect();
        let date = fields.iter().position(|f| f.starts_with("20")).unwrap();
        fields[3..date].join(" ")
    };
    assert_eq!(size("file"), "5", "{out}");
    assert_eq!(size("link"), "13", "{out}");
    if root {
        assert_eq!(size("tty"), "4, 64", "{out}");
    }
}

/// A name that is not UTF-8 (`caf\xe9`, from a system writing Latin-1) is
/// selected by its bytes: `ls` of a path through it, a restore of it as
/// `SNAP:/path`, and a restore's `--include` and `--exclude` take the
/// argument as it is, and tell it from a name that differs only in that
/// byte, or is the same word in UTF-8.
#[test]
fn paths_and_patterns_that_are_not_utf8_select_what_they_name() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join(os(b"caf\xe9")).join("menu"), "latin-1\n");
    write(&src.join(os(b"caf\xe8")).join("menu"), "one byte apart\n");
    write(&src.join("café").join("menu"), "utf-8\n");
    repo.backup(&[&src], &[]);
    let base = abs(&src);
    let path = |rest: &[u8]| OsString::from_vec([base.as_bytes(), rest].concat());
    let cafe = PathBuf::from(os(b"caf\xe9"));
    let mut c = repo.cmd(&["ls", "latest"]);
    let out = run(c.arg(path(b"/caf\xe9")), None);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, format!("{base}/caf\\xe9/menu\n"), "{out}");

    let target = repo.scratch("subpath");
    let mut spec = OsString::from("latest:");
    spec.push(path(b"/caf\xe9/menu"));
    let mut c = repo.cmd(&["restore"]);
    let out = run(c.arg(&spec).arg("--target").arg(&target), None);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(list_paths(&target), [PathBuf::from("menu")], "{out}");
    assert_eq!(
        fs::read_to_string(target.join("menu")).unwrap(),
        "latin-1\n"
    );

    let selections = [
        (
            "include",
            OsString::from(os(b"caf\xe9")),
            vec![cafe.clone()],
        ),
        ("include", path(b"/caf\xe9/"), vec![cafe.clone()]),
        (
            "exclude",
            OsString::from(os(b"caf\xe9")),
            vec![PathBuf::from(os(b"caf\xe8")), "café".into()],
        ),
    ];
    for (i, (flag, pattern, dirs)) in selections.into_iter().enumerate() {
        let target = repo.scratch(&format!("{flag}{i}"));
        let mut c = repo.cmd(&["restore", "latest", "--target"]);
        let out = run(c.arg(&target).arg(format!("--{flag}")).arg(&pattern), None);
        assert_eq!(out.code, 0, "--{flag} {pattern:?}\n{out}");
        let r = restored(&target, &src);
        let want: BTreeSet<PathBuf> = dirs
            .iter()
            .flat_map(|d| [d.join("menu"), d.clone()])
            .collect();
        let got: BTreeSet<PathBuf> = list_paths(&r).into_iter().collect();
        assert_eq!(got, want, "--{flag} {pattern:?}\n{out}");
        assert!(out.stderr.is_empty(), "--{flag} {pattern:?}\n{out}");
    }
}

#[test]
fn relative_paths_and_backup_excludes() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("keep.txt"), "keep");
    write(&src.join("skip.log"), "skip");
    write(&src.join("cache/big"), "skip");
    write(&src.join("sub/keep.log.txt"), "keep");
    let excludes = repo.scratch("excludes");
    write(
        &excludes,
        "# comments and blank lines are ignored\n\ncache\n",
    );

    // A relative path is recorded as the absolute path it names.
    let mut c = repo.cmd(&["backup", "--json", "--exclude", "*.log", "--exclude-file"]);
    c.arg(&excludes).arg("src").current_dir(repo.dir.path());
    let snap = run(&mut c, None).success().json();
    assert_eq!(snap["paths"], serde_json::json!([abs(&src)]));

    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_eq!(
        list_paths(&restored(&target, &src)),
        ["keep.txt", "sub", "sub/keep.log.txt"]
            .iter()
            .map(std::path::PathBuf::from)
            .collect::<Vec<_>>()
    );
}

/// Backs up `src` with `args` and returns what a restore of it lists.
fn backed_up_paths(repo: &Repo, src: &Path, args: &[&str]) -> Vec<PathBuf> {
    repo.backup(&[src], args);
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    list_paths(&restored(&target, src))
}

fn path_list(v: &[&str]) -> Vec<PathBuf> {
    v.iter().map(PathBuf::from).collect()
}

/// An exclude with a `/` that does not start it matches the path's last
/// components at any depth (whole components only).
#[test]
fn an_exclude_with_a_slash_inside_matches_at_any_depth() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("x/y/b/node_modules/m.js"), "out");
    write(&src.join("b/node_modules/n.js"), "out");
    write(&src.join("yb/node_modules/keep.js"), "in");
    write(&src.join("node_modules/keep.js"), "in");
    write(&src.join("c/b/f.o"), "out");
    write(&src.join("c/b/d/f.o"), "in");
    let got = backed_up_paths(
        &repo,
        &src,
        &["--exclude", "b/node_modules", "--exclude", "b/*.o"],
    );
    assert_eq!(
        got,
        path_list(&[
            "b",
            "c",
            "c/b",
            "c/b/d",
            "c/b/d/f.o",
            "node_modules",
            "node_modules/keep.js",
            "x",
            "x/y",
            "x/y/b",
            "yb",
            "yb/node_modules",
            "yb/node_modules/keep.js",
        ])
    );
}

/// An exclude ending in `/` leaves out folders only, by name or by path.
#[test]
fn an_exclude_ending_in_a_slash_leaves_out_folders_only() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("cache"), "a file named cache");
    write(&src.join("sub/cache/x"), "in a folder named cache");
    write(&src.join("sub/tmp"), "a file at a path");
    write(&src.join("other/tmp/y"), "in a folder at a path");
    let got = backed_up_paths(&repo, &src, &["--exclude", "cache/", "--exclude", "*/tmp/"]);
    assert_eq!(got, path_list(&["cache", "other", "sub", "sub/tmp"]));
}

/// A byte-order mark at the start of an exclude file (as some editors
/// write) is not part of its first pattern.
#[test]
fn an_exclude_file_may_start_with_a_byte_order_mark() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("a.log"), "out");
    write(&src.join("b.txt"), "in");
    write(&src.join("c.tmp"), "out");
    let excludes = repo.scratch("excludes");
    write(&excludes, "\u{feff}*.log\r\n*.tmp\r\n");
    let excludes = excludes.to_str().unwrap();
    let got = backed_up_paths(&repo, &src, &["--exclude-file", excludes]);
    assert_eq!(got, path_list(&["b.txt"]));
}

/// A path in a snapshot written from the current folder (`s/br`, not
/// `/home/me/s/br`) is not found, and the error says why and what it
/// would be from here (it named `/s` alone).
#[test]
fn a_relative_path_in_a_snapshot_is_told_that_its_paths_are_absolute() {
    let repo = Repo::new();
    let src = repo.scratch("s");
    write(&src.join("br/f"), "f");
    repo.backup(&[&src], &[]);
    let here = src.parent().unwrap();
    let whole = src.join("br");
    let target = repo.scratch("t");
    for args in [
        vec!["ls", "latest", "s/br"],
        vec![
            "restore",
            "latest:s/br",
            "--target",
            target.to_str().unwrap(),
        ],
    ] {
        let mut c = repo.cmd(&args);
        c.current_dir(here);
        let out = run(&mut c, None);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        let said = format!(
            "path s/br in the snapshot (its paths are absolute, as backed up: from this \
             folder, {}) not found",
            whole.display()
        );
        assert!(out.stderr.contains(&said), "{args:?}: {said}\n{out}");
    }
    // Absolute, it is found.
    let out = repo
        .run(&["ls", "latest", whole.to_str().unwrap()])
        .success();
    assert!(out.stdout.contains("br/f"), "{out}");
}

/// Lines of an exclude file are trimmed, but a space a `\` takes as itself
/// stays at the end (`trail\ ` was cut to `trail\`, a "dangling" `\`);
/// a file in UTF-16, which would exclude nothing, is refused naming it.
#[test]
fn exclude_file_lines_keep_an_escaped_trailing_space_and_utf16_is_refused() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("trail "), "out");
    write(&src.join("trail"), "in");
    write(&src.join("logs"), "out");
    let excludes = repo.scratch("excludes");
    write(&excludes, "trail\\ \nlogs  \n");
    let got = backed_up_paths(&repo, &src, &["--exclude-file", excludes.to_str().unwrap()]);
    assert_eq!(got, path_list(&["trail"]));

    let utf16: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain("*.log\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    fs::write(&excludes, utf16).unwrap();
    let mut c = repo.cmd(&["backup", "--exclude-file"]);
    c.arg(&excludes).arg(&src);
    let out = run(&mut c, None);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "exclude file {}: is UTF-16 (it begins with a UTF-16 byte-order mark)",
            excludes.display()
        )),
        "{out}"
    );
    assert!(out.stderr.contains("save it as UTF-8"), "{out}");
}

/// A bad pattern in an exclude file is a usage error naming the file and
/// the line, for backup and restore (it named neither).
#[test]
fn a_bad_pattern_in_an_exclude_file_names_the_file_and_line() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    let excludes = repo.scratch("excludes");
    write(&excludes, "# caches\n*.tmp\n\n./cache\n");
    let target = repo.scratch("t");
    for args in [
        vec!["backup", src.to_str().unwrap()],
        vec!["restore", "latest", "--target", target.to_str().unwrap()],
    ] {
        let mut c = repo.cmd(&args);
        c.arg("--exclude-file").arg(&excludes);
        let out = run(&mut c, None);
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(
            out.stderr
                .contains(&format!("exclude file {}, line 4: ", excludes.display())),
            "{args:?}: {out}"
        );
    }
}

/// An exclude file that cannot be read is a usage error naming it, found
/// before the repository is opened: for backup (which would otherwise
/// make the default repository) and for restore.
#[test]
fn an_exclude_file_that_cannot_be_read_is_a_usage_error() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    let missing = repo.scratch("no-such-excludes");
    let missing = missing.to_str().unwrap();
    let absent = repo.scratch("absent-repo");
    let absent = absent.to_str().unwrap();
    for args in [
        vec!["backup", "--exclude-file", missing, src.to_str().unwrap()],
        vec![
            "restore",
            "latest",
            "--target",
            absent,
            "--exclude-file",
            missing,
        ],
    ] {
        let mut c = cairn();
        c.args(["-r", absent]).args(&args);
        let out = run(&mut c, None);
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(
            out.stderr.contains(&format!("read exclude file {missing}")),
            "{args:?}: {out}"
        );
        assert!(!Path::new(absent).exists(), "{args:?}: {out}");
    }
}

/// Excludes name a path's bytes, UTF-8 or not, given on the command line
/// or in a file: `caf\xe9` leaves out that folder, not `caf\xe8`.
#[test]
fn excludes_that_are_not_utf8_leave_out_what_they_name() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let repo = Repo::new();
    let src = repo.scratch("src");
    let name = |b: &[u8]| OsStr::from_bytes(b).to_os_string();
    write(&src.join(name(b"caf\xe9")).join("x"), "out");
    write(&src.join(name(b"caf\xe8")).join("y"), "in");
    write(&src.join(name(b"t\xff.log")), "out");
    let excludes = repo.scratch("excludes");
    fs::write(&excludes, b"# bytes\n*\xff.log\n").unwrap();
    let mut c = repo.cmd(&["backup"]);
    c.arg("--exclude")
        .arg(name(b"caf\xe9"))
        .arg("--exclude-file")
        .arg(&excludes)
        .arg(&src);
    run(&mut c, None).success();
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let got = list_paths(&restored(&target, &src));
    let want: Vec<PathBuf> = [name(b"caf\xe8"), name(b"caf\xe8/y")]
        .into_iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn init_creates_the_repository_layout() {
    let repo = Repo::new();
    let p = &repo.path;
    assert!(p.join("config").is_file());
    for dir in ["keys", "packs", "index", "snapshots", "locks"] {
        assert!(p.join(dir).is_dir(), "{dir}/ missing");
    }
    let keys: Vec<_> = fs::read_dir(p.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = fs::read(&keys[0]).unwrap();
    assert_eq!(key.len(), 160);
    assert_eq!(
        keys[0].file_name().unwrap().to_str().unwrap(),
        blake3::hash(&key).to_hex().as_str()
    );
    for dir in ["packs", "index", "snapshots", "locks"] {
        assert_eq!(fs::read_dir(p.join(dir)).unwrap().count(), 0, "{dir}/");
    }
    // A second init at the same place is refused.
    let out = repo.run(&["init"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("already a repository"), "{out}");
}

/// `init --key-file K` is refused, naming the flag and what to do,
/// rather than making a repository the key file does not open.
#[test]
fn init_with_a_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    let key = dir.path().join("k.key");
    let mut args = vec!["-r", path.to_str().unwrap(), "init"];
    args.extend_from_slice(FAST_INIT);
    args.extend_from_slice(&["--key-file", key.to_str().unwrap()]);
    let out = run(cairn().args(&args).env("CAIRN_PASSWORD", "pw"), None);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--key-file"), "{out}");
    assert!(out.stderr.contains("cairn key export"), "{out}");
    assert!(!path.exists(), "nothing made");
}

/// Settings `init` cannot use are usage errors (exit 2), found before a
/// password is asked for, each naming what it allows; nothing is made.
#[test]
fn init_refuses_unusable_settings_before_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    for (bad, says) in [
        (
            &["--chunk-min", "8M", "--chunk-max", "1M"][..],
            "chunk sizes",
        ),
        (
            &["--compression", "23"],
            "compression level 23 is outside -7..=22",
        ),
        (&["--pack-size", "0"], "pack size 0 is outside"),
        (&["--kdf-memory-kib", "1"], "memory 1 KiB (8..=4194304"),
    ] {
        let mut args = vec!["-r", path.to_str().unwrap(), "init"];
        args.extend_from_slice(bad);
        // No password anywhere: the settings are refused first.
        let out = run(
            cairn()
                .args(&args)
                .env_remove("CAIRN_PASSWORD")
                .env_remove("CAIRN_PASSWORD_FILE")
                .stdin(std::process::Stdio::null()),
            None,
        );
        assert_eq!(out.code, 2, "{bad:?}: {out}");
        assert!(out.stderr.contains(says), "{bad:?}: {out}");
        assert!(!path.exists(), "nothing made: {out}");
    }
}

#[test]
fn init_gives_way_to_another_inits_key_file() {
    // What an `init` running at the same place (or one interrupted before
    // its config) leaves: a key file and no config.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    let claim = "ab".repeat(32);
    write(&path.join("keys").join(&claim), b"another init's key");
    let mut args = vec!["-r", path.to_str().unwrap(), "init"];
    args.extend_from_slice(FAST_INIT);
    let out = run(cairn().args(&args).env("CAIRN_PASSWORD", "pw"), None);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("at the same time"), "{out}");
    assert!(out.stderr.contains("abababab"), "{out}");
    assert!(!path.join("config").exists());
    let keys: Vec<_> = fs::read_dir(path.join("keys")).unwrap().collect();
    assert_eq!(
        keys.len(),
        1,
        "the giving-way init removes its own key file"
    );
    // With the leftover removed, init succeeds.
    fs::remove_file(path.join("keys").join(&claim)).unwrap();
    run(cairn().args(&args).env("CAIRN_PASSWORD", "pw"), None).success();
    assert!(path.join("config").is_file());
}

#[test]
fn repo_and_password_file_go_before_or_after_backup_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let r = repo.to_str().unwrap();
    let pw = dir.path().join("pw");
    write(&pw, format!("{PASSWORD}\n"));
    let pw = pw.to_str().unwrap();
    let src = dir.path().join("src");
    write(&src.join("f.txt"), "options anywhere");
    let s = src.to_str().unwrap();
    let t1 = dir.path().join("t1");
    let t2 = dir.path().join("t2");
    let run_args = |args: &[&str]| {
        let mut c = cairn();
        c.args(args);
        run(&mut c, None).success()
    };

    let mut init = vec!["init", "-r", r, "--password-file", pw];
    init.extend_from_slice(FAST_INIT);
    run_args(&init);
    run_args(&["backup", "-r", r, s, "--password-file", pw]);
    run_args(&["--password-file", pw, "backup", "--repo", r, s]);
    run_args(&[
        "restore",
        "latest",
        "-r",
        r,
        "--target",
        t1.to_str().unwrap(),
        "--password-file",
        pw,
    ]);
    run_args(&[
        "--password-file",
        pw,
        "restore",
        "latest",
        "--target",
        t2.to_str().unwrap(),
        "-r",
        r,
    ]);
    for t in [&t1, &t2] {
        assert_eq!(
            fs::read_to_string(restored(t, &src).join("f.txt")).unwrap(),
            "options anywhere"
        );
    }
    let mut c = cairn();
    c.args(["snapshots", "--json", "-r", r, "--password-file", pw]);
    assert_eq!(
        run(&mut c, None).success().json().as_array().unwrap().len(),
        2
    );
}

#[test]
fn help_and_version_exit_0_usage_errors_exit_2() {
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["backup", "--help"],
        vec!["help", "restore"],
    ] {
        let mut c = cairn();
        c.args(&args);
        let out = run(&mut c, None);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert!(out.stderr.is_empty(), "{args:?}: {out}");
    }
    let mut c = cairn();
    c.arg("--version");
    let out = run(&mut c, None);
    assert_eq!(
        out.stdout.trim(),
        format!("cairn {}", env!("CARGO_PKG_VERSION"))
    );

    for (args, says) in [
        (
            vec!["backup", "--kind", "weekly", "/tmp"],
            "invalid value 'weekly'",
        ),
        (vec!["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (vec!["restore", "latest"], "--target"),
        // Waits past a century are refused, not added to the clock until
        // it overflows; sizes are not multiplied until they wrap.
        (
            vec![
                "backup",
                "-r",
                "/nonexistent/repo",
                "/tmp",
                "--lock-wait",
                "18446744073709551615",
            ],
            "at most 36500d",
        ),
        (
            vec![
                "snapshots",
                "-r",
                "/nonexistent/repo",
                "--lock-wait",
                "36501d",
            ],
            "too long: give at most 36500d",
        ),
        (
            vec![
                "snapshots",
                "-r",
                "/nonexistent/repo",
                "--lock-wait",
                "99999999999999999999999d",
            ],
            "too long: give at most 36500d",
        ),
        (
            vec![
                "snapshots",
                "-r",
                "s3://b/p",
                "--s3-timeout",
                "999999999999d",
            ],
            "at most 36500d",
        ),
        (
            vec![
                "init",
                "-r",
                "/nonexistent/repo",
                "--chunk-max",
                "18014398509481985K",
            ],
            "too large",
        ),
        // Values checked by cairn itself, before the repository (which
        // does not exist) is opened.
        (
            vec![
                "backup",
                "-r",
                "/nonexistent/repo",
                "--time",
                "2199-01-01T00:00:00Z",
                "/tmp",
            ],
            "is in the future",
        ),
        (
            vec![
                "backup",
                "-r",
                "/nonexistent/repo",
                "--time",
                "1677-09-21T00:12:43Z",
                "/tmp",
            ],
            "outside the times a snapshot can hold, 1677-09-21T00:12:44Z to",
        ),
        (
            vec![
                "backup",
                "-r",
                "/nonexistent/repo",
                "--exclude",
                "./cache",
                "/tmp",
            ],
            "has a `.` or `..` component",
        ),
        (
            vec![
                "restore",
                "-r",
                "/nonexistent/repo",
                "latest",
                "--target",
                "/nonexistent/target",
                "--include",
                "a/../b",
            ],
            "has a `.` or `..` component",
        ),
        (
            vec!["cat", "-r", "/nonexistent/repo", "tree"],
            "cat tree needs an id",
        ),
        (
            vec!["cat", "-r", "/nonexistent/repo", "pack", "abc"],
            "\"abc\" is not an id: give its 64 hex digits, or at least 4 of its first",
        ),
        (
            vec!["snapshots", "-r", "s3://"],
            "is not a valid bucket name",
        ),
        (
            vec!["snapshots", "-r", "ftp://host/repo"],
            "unknown repository URL",
        ),
        (
            vec![
                "forget",
                "-r",
                "/nonexistent/repo",
                "--keep-last",
                "1",
                "--host",
                "",
            ],
            "an empty value was given",
        ),
        (
            vec!["snapshots", "-r", "/nonexistent/repo", "--tag", ""],
            "an empty value was given",
        ),
        (
            vec!["snapshots", "-r", "s3://bkt..a/repo"],
            "is not a valid bucket name",
        ),
        (
            vec![
                "snapshots",
                "-r",
                "s3://bkt/repo",
                "--s3-endpoint",
                "ftp://127.0.0.1:9000",
            ],
            "is not an http:// or https:// URL",
        ),
        // Also beside a local repository, as the other S3 options are.
        (
            vec![
                "snapshots",
                "-r",
                "/nonexistent/repo",
                "--s3-endpoint",
                "ftp://127.0.0.1:9000",
            ],
            "is not an http:// or https:// URL",
        ),
        (
            vec![
                "snapshots",
                "-r",
                "s3://bkt/repo",
                "--s3-endpoint",
                "http://127.0.0.1:9000",
                "--s3-virtual-host",
            ],
            "is an IP address, and --s3-virtual-host puts the bucket's name in front",
        ),
        (vec!["init", "-r", ""], "an empty repository path"),
        (
            vec!["backup", "-r", "/nonexistent/repo", "--exclude", "", "/tmp"],
            "an empty pattern was given",
        ),
        (
            vec![
                "backup",
                "-r",
                "/nonexistent/repo",
                "--exclude",
                "a//b",
                "/tmp",
            ],
            "has an empty component",
        ),
        (
            vec![
                "backup",
                "-r",
                "/nonexistent/repo",
                "--stdin-from-command",
                "--",
                "",
            ],
            "no command given after `--`",
        ),
        (
            vec!["cat", "-r", "/nonexistent/repo", "config", "abc"],
            "cat config takes no id",
        ),
        (
            vec!["cat", "-r", "/nonexistent/repo", "index", "zz"],
            "\"zz\" is not an id or a prefix of one",
        ),
        (
            vec!["key", "-r", "/nonexistent/repo", "export", "/tmp"],
            "/tmp exists already",
        ),
        (
            vec!["ls", "-r", "/nonexistent/repo", "zz"],
            "\"zz\" is not a snapshot id",
        ),
        (
            vec!["cat", "-r", "/nonexistent/repo", "snapshot", "zz"],
            "\"zz\" is not a snapshot id",
        ),
        (
            vec![
                "restore",
                "-r",
                "/nonexistent/repo",
                "zz:/a",
                "--target",
                "/nonexistent/target",
            ],
            "\"zz\" is not a snapshot id",
        ),
    ] {
        // Run in an empty folder of its own, which a refused command
        // leaves empty (`init -r ''` made the layout's folders there).
        let here = tempfile::tempdir().unwrap();
        let mut c = cairn();
        c.args(&args).current_dir(here.path());
        let out = run(&mut c, None);
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(out.stderr.contains(says), "{args:?}: {out}");
        assert!(out.stderr.starts_with("error: "), "{args:?}: {out}");
        assert!(out.stdout.is_empty(), "{args:?}: {out}");
        let left = fs::read_dir(here.path()).unwrap().count();
        assert_eq!(left, 0, "{args:?}: {out}");
    }
    // An S3 repository without credentials: found before anything is
    // sent, as the other S3 settings are (it exited 1).
    let mut c = cairn();
    c.args(["snapshots", "-r", "s3://bkt/repo"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("CAIRN_PASSWORD", PASSWORD);
    let out = run(&mut c, None);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("no S3 credentials"), "{out}");
    // Virtual-host addressing with an IP endpoint is refused where a
    // bucket is used, not for a local repository's command.
    let mut c = cairn();
    c.args(["snapshots", "-r", "/nonexistent/repo"])
        .env("CAIRN_S3_ENDPOINT", "http://10.0.0.5:9000")
        .env("CAIRN_S3_VIRTUAL_HOST", "true")
        .env("CAIRN_PASSWORD", PASSWORD);
    let out = run(&mut c, None);
    assert_eq!(out.code, 10, "{out}");
}

/// A command's help lists its own options first, then the options every
/// command takes, under their own headings, not mixed in among its own.
#[test]
fn help_lists_a_commands_own_options_before_the_repository_options() {
    for (command, own) in [
        ("forget", ["--keep-last", "--keep-yearly", "--gc"]),
        ("backup", ["--kind", "--exclude-file", "--json"]),
        ("gc", ["--max-unused", "--dry-run", "--json"]),
    ] {
        let mut c = cairn();
        c.args([command, "--help"]);
        let help = run(&mut c, None).success().stdout;
        // Where the line listing `what` (an option or a heading) starts.
        let at = |what: &str| {
            let mut offset = 0;
            for line in help.split_inclusive('\n') {
                let entry = line.trim_start().trim_start_matches("-r, ");
                if entry.starts_with(&format!("{what} ")) || entry.trim_end() == what {
                    return offset;
                }
                offset += line.len();
            }
            panic!("{command} --help lists no {what}:\n{help}")
        };
        let repo = at("Repository options:");
        let remote = at("Remote store options (S3):");
        for option in own {
            assert!(
                at(option) < repo,
                "{command}: {option} is listed late:\n{help}"
            );
        }
        for option in ["--repo", "--password-file", "--key-file", "--lock-wait"] {
            let i = at(option);
            assert!(repo < i && i < remote, "{command}: {option}:\n{help}");
        }
        for option in ["--s3-endpoint", "--connections", "--retries", "--cache-dir"] {
            assert!(remote < at(option), "{command}: {option}:\n{help}");
        }
    }
}

#[test]
fn init_chooses_the_data_cipher() {
    // XChaCha20-Poly1305 on request (for CPUs without AES instructions):
    // the whole round trip works, and the config names it.
    let mut args = FAST_INIT.to_vec();
    args.extend(["--cipher", "xchacha20-poly1305"]);
    let repo = Repo::with_init_args(&args);
    let config = repo.run(&["cat", "config"]).success().json();
    assert_eq!(config["cipher"], "xchacha20-poly1305", "{config}");
    let src = repo.scratch("src");
    write_random(&src.join("a.bin"), 5, 300_000);
    write(&src.join("b.txt"), "bravo ".repeat(1000));
    repo.backup(&[&src], &[]);
    repo.run(&["verify", "--read-data"]).success();
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_same_contents(&src, &restored(&target, &src));

    // An unknown cipher is refused by name, and nothing is created.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo");
    let mut c = cairn();
    c.args([
        "init",
        "-r",
        path.to_str().unwrap(),
        "--cipher",
        "aes-128-cbc",
    ]);
    c.env("CAIRN_PASSWORD", PASSWORD);
    let out = run(&mut c, None);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("unknown cipher \"aes-128-cbc\""),
        "{out}"
    );
    assert!(!path.exists());
}

#[test]
fn a_repository_copied_without_its_empty_folders_still_takes_backups() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("a.txt"), "alpha");
    // As `git` or an object-store sync copies it: no empty folders.
    for dir in ["locks", "snapshots", "index", "packs"] {
        fs::remove_dir(repo.path.join(dir)).unwrap();
    }
    repo.backup(&[&src], &[]);
    for dir in ["locks", "snapshots", "index", "packs"] {
        assert!(repo.path.join(dir).is_dir(), "{dir}/ made again");
    }
    repo.run(&["verify", "--read-data"]).success();
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_same_contents(&src, &restored(&target, &src));

    // A repository that is gone is not made again.
    fs::remove_dir_all(&repo.path).unwrap();
    let out = repo.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(out.code, 10, "{out}");
    assert!(out.stderr.contains("no repository at"), "{out}");
    assert!(!repo.path.exists());
}

/// A name starting with `-` goes after `--`, as clap's hint says, when
/// `--` does not carry a --stdin-from-command command.
#[test]
fn paths_after_double_dash_are_backed_up() {
    let repo = Repo::new();
    let dir = repo.scratch("src");
    write(&dir.join("-notes"), "a file named like an option");
    write(&dir.join("plain"), "a plain file");

    let mut c = repo.cmd(&["backup", "--json", "plain", "--", "-notes"]);
    c.current_dir(&dir);
    let out = run(&mut c, None).success();
    let paths: Vec<String> = out.json()["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let abs = |name: &str| dir.join(name).to_str().unwrap().to_string();
    assert_eq!(paths, vec![abs("-notes"), abs("plain")], "{out}");
    let ls = repo.run(&["ls", "latest"]).success();
    assert!(ls.stdout.lines().any(|l| l == abs("-notes")), "{ls}");

    // With --stdin, paths after `--` are paths all the same: refused.
    let mut c = repo.cmd(&["backup", "--stdin", "--stdin-filename", "x", "--", "-notes"]);
    c.current_dir(&dir);
    let out = run(&mut c, Some(b"data"));
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("not both"), "{out}");

    // An empty argument, before `--` or after it, is said to be one.
    for args in [
        &["backup", "--", ""][..],
        &["backup", "plain", "--", ""],
        &["backup", ""],
        &["backup", "plain", ""],
    ] {
        let mut c = repo.cmd(args);
        c.current_dir(&dir);
        let out = run(&mut c, None);
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(
            out.stderr.starts_with("error: an empty path was given"),
            "{args:?}: {out}"
        );
    }

    // A name for standard input means nothing beside paths: refused, not
    // dropped.
    let before = repo.snapshots().len();
    let mut c = repo.cmd(&["backup", "plain", "--stdin-filename", "dump.sql"]);
    c.current_dir(&dir);
    let out = run(&mut c, None);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("give it with --stdin or --stdin-from-command, not with paths"),
        "{out}"
    );
    assert_eq!(repo.snapshots().len(), before, "{out}");
}

/// Text output shows local times with their UTC offset: the hour a clock
/// repeats when summer time ends (Berlin, 2025-10-26: 02:00 to 03:00
/// twice) prints two real hours apart, not alike.
#[test]
fn times_in_text_output_carry_their_offset() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "x");
    let mut ids = Vec::new();
    for time in ["2025-10-26T00:30:00Z", "2025-10-26T01:30:00Z"] {
        let snap = repo.backup(&[&src], &["--time", time]);
        ids.push(snap["id"].as_str().unwrap()[..8].to_string());
    }
    let berlin = |args: &[&str]| {
        let mut c = repo.cmd(args);
        c.env("TZ", "Europe/Berlin");
        run(&mut c, None).success()
    };
    let out = berlin(&["snapshots"]);
    let row = |id: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed: {out}"))
            .to_string()
    };
    assert!(
        row(&ids[0]).contains(" 2025-10-26 02:30:00 +0200 "),
        "{out}"
    );
    assert!(
        row(&ids[1]).contains(" 2025-10-26 02:30:00 +0100 "),
        "{out}"
    );
    // The columns after the time still line up under their heading.
    let header = out.stdout.lines().next().unwrap();
    assert_eq!(header.find("host"), row(&ids[0]).find(&*hostname_of(&repo)));

    let out = berlin(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(
        out.stdout
            .contains(&format!("  {} 2025-10-26 02:30:00 +0100  keep", ids[1])),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("  {} 2025-10-26 02:30:00 +0200  remove", ids[0])),
        "{out}"
    );
}

/// The host name the snapshots of `repo` record.
fn hostname_of(repo: &Repo) -> String {
    repo.snapshots()[0]["host"].as_str().unwrap().to_string()
}

/// Names are shown escaped in text listings, so a newline or a
/// terminal's escape in a file name can neither forge a line nor drive
/// the terminal; JSON gives them as they are. Host, set and tag names
/// with control characters are refused at backup.
#[test]
fn names_in_listings_are_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let repo = Repo::new();
    let top = repo.scratch("src");
    let src = top.join("d\nx");
    write(&src.join("x\nfake"), "1");
    write(&src.join("e\x1b[31m"), "2");
    write(&src.join("back\\nslash"), "3");
    write(&src.join(os(b"bad\xff")), "4");
    std::os::unix::fs::symlink("t\tt", src.join("link")).unwrap();
    let snap = repo.backup(&[&src], &[]);
    let base = abs(&top);
    let shown_dir = format!("{base}/d\\nx");

    let out = repo.run(&["ls", "latest", src.to_str().unwrap()]).success();
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort_unstable();
    let mut want = [
        format!("{shown_dir}/back\\\\nslash"),
        format!("{shown_dir}/bad\\xff"),
        format!("{shown_dir}/e\\x1b[31m"),
        format!("{shown_dir}/link"),
        format!("{shown_dir}/x\\nfake"),
    ];
    want.sort_unstable();
    assert_eq!(lines, want, "{out}");
    let out = repo
        .run(&["ls", "-l", "latest", src.to_str().unwrap()])
        .success();
    assert!(out.stdout.contains("/link -> t\\tt\n"), "{out}");
    assert_eq!(out.stdout.lines().count(), 5, "{out}");

    // JSON is unchanged: the names as they are (invalid UTF-8 lossily).
    let entries = ls_json(&repo, &["latest", src.to_str().unwrap()]);
    let names: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains("x\nfake"), "{names:?}");
    assert!(names.contains("e\x1b[31m"), "{names:?}");

    // The snapshots table shows the path escaped, on one line.
    let out = repo.run(&["snapshots"]).success();
    assert_eq!(out.stdout.lines().count(), 3, "{out}");
    assert!(out.stdout.contains(&format!("  {shown_dir}\n")), "{out}");
    assert_eq!(snap["paths"][0], src.to_str().unwrap());
    assert!(!src.as_os_str().as_bytes().contains(&b'\\'));

    // Empty host, set and tag names are refused.
    for (flag, value) in [("--tag", ""), ("--host", " "), ("--set", "")] {
        let out = repo.run(&["backup", ".", flag, value]);
        assert_eq!(out.code, 2, "{flag}: {out}");
        assert!(
            out.stderr.starts_with(&format!(
                "error: {flag} needs a name: an empty one was given"
            )),
            "{flag}: {out}"
        );
    }
    // Host, set and tag names with control characters are refused.
    let plain = repo.scratch("plain");
    write(&plain.join("f"), "f");
    for (flag, value) in [
        ("--host", "h\n5ffede6d 2026-12-05 12:00:00"),
        ("--set", "s\x1b[2J"),
        ("--tag", "t\tt"),
        ("--tag", "rtl\u{202e}"),
    ] {
        let out = repo.run(&["backup", plain.to_str().unwrap(), flag, value]);
        assert_eq!(out.code, 2, "{flag}: {out}");
        assert!(out.stderr.contains("control characters"), "{flag}: {out}");
        assert!(
            out.stderr.starts_with(&format!("error: {flag} \"")),
            "{flag}: {out}"
        );
        assert_eq!(out.stderr.lines().count(), 1, "{flag}: {out}");
    }
    assert_eq!(repo.snapshots().len(), 1);
}

/// `backup --time` takes a time in the past (importing older backups),
/// not one ahead of the clock: such a snapshot would be its set's newest,
/// and every incremental's parent, until the clock caught up, and the next
/// backup would trust files changed right after this one read them.
#[test]
fn backup_time_in_the_future_is_refused_and_one_in_the_past_is_recorded() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "x");
    let out = repo.run(&[
        "backup",
        "--time",
        "2200-01-01T00:00:00Z",
        src.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "a usage error: {out}");
    assert!(out.stderr.contains("is in the future"), "{out}");
    assert!(repo.snapshots().is_empty(), "{out}");

    // A time in the past is recorded, and the next backup still trusts
    // the files unchanged since this one began by the clock: until
    // December 2026 it read every file again, their change times being
    // later than the recorded time.
    let backup = |args: &[&str]| {
        let mut c = repo.cmd(&["backup", "--json"]);
        c.args(args).arg(&src).env("CAIRN_TEST_RACY_WINDOW_NS", "0");
        run(&mut c, None).success().json()
    };
    let old = backup(&["--time", "2001-01-01T00:00:00Z"]);
    assert_eq!(old["time_ns"], 978_307_200_000_000_000i64, "{old}");
    assert!(
        old["started_ns"].as_i64().unwrap() > 1_700_000_000_000_000_000,
        "{old}"
    );
    let next = backup(&[]);
    assert_eq!(next["parent"], old["id"], "{next}");
    assert_eq!(next["summary"]["files_unmodified"], 1, "{next}");
}

/// A dump backed up again counts as unmodified when its bytes are the
/// parent's, as changed when they differ, and as new only without one of
/// its name in the parent. Until December 2026 every incremental `--stdin`
/// backup counted its file as new.
#[test]
fn a_stdin_backup_counts_its_file_against_the_parent() {
    let repo = Repo::new();
    let dump = random_bytes(5, 200_000);
    let backup = |name: &str, data: &[u8]| {
        let args = ["backup", "--stdin", "--stdin-filename", name, "--json"];
        let args: Vec<&str> = args.into_iter().chain(["--set", "db"]).collect();
        let s = repo.run_stdin(&args, data).success().json()["summary"].clone();
        ["files_new", "files_changed", "files_unmodified"].map(|k| s[k].as_u64().unwrap())
    };
    assert_eq!(backup("db.sql", &dump), [1, 0, 0]);
    assert_eq!(backup("db.sql", &dump), [0, 0, 1]);
    let mut changed = dump.clone();
    changed[100_000] ^= 1;
    assert_eq!(backup("db.sql", &changed), [0, 1, 0]);
    assert_eq!(backup("other.sql", &changed), [1, 0, 0]);
}

/// Standard input left non-blocking by whoever started cairn (some CI
/// runners, Node.js) is waited on, not failed at the producer's first
/// pause: until December 2026 the dump job failed with "Resource
/// temporarily unavailable", exit 1.
#[test]
fn a_non_blocking_stdin_is_waited_on() {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let repo = Repo::new();
    let mut fds = [0; 2];
    // SAFETY: a plain system call filling `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just made, and are owned only here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor held open.
    unsafe {
        let flags = libc::fcntl(read.as_raw_fd(), libc::F_GETFL);
        assert!(libc::fcntl(read.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0);
    }
    let mut c = repo.cmd(&["backup", "--stdin", "--stdin-filename", "slow.sql"]);
    let child = c
        .stdin(std::process::Stdio::from(read))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The command holds the read end too: dropped, a cairn that stopped
    // reading fails the writes below instead of leaving them blocked.
    drop(c);
    let mut writer = std::fs::File::from(write);
    let mut sent = Vec::new();
    for i in 0..4u8 {
        let part = random_bytes(u64::from(i) + 40, 100_000);
        if let Err(e) = writer.write_all(&part) {
            let out = child.wait_with_output().unwrap();
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        }
        sent.extend(part);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    drop(writer);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert!(fs::read(target.join("slow.sql")).unwrap() == sent);
}

/// A name in an error line cannot forge another line or drive the
/// terminal: its control characters are escaped, as in warnings and
/// listings. Until December 2026 the `error:` line printed them as they
/// were.
#[test]
fn an_error_line_escapes_the_names_it_quotes() {
    let repo = Repo::new();
    let dir = repo.scratch("gone");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("x\nerror: forged\x1b[2J");
    let mut c = repo.cmd(&["backup"]);
    c.arg(&missing);
    let out = run(&mut c, None);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.lines().all(|l| !l.starts_with("error: forged")),
        "{out}"
    );
    assert!(!out.stderr.contains('\x1b'), "{out}");
    assert!(out.stderr.contains("x\\nerror: forged\\x1b[2J"), "{out}");
}

/// `latest` that names no snapshot says why: an empty repository, or the
/// filters given; it spoke of filters where none was given.
#[test]
fn latest_naming_no_snapshot_says_why() {
    let repo = Repo::new();
    let target = repo.scratch("t");
    for args in [
        vec!["ls", "latest"],
        vec!["restore", "latest", "--target", target.to_str().unwrap()],
    ] {
        let out = repo.run(&args);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(
            out.stderr
                .contains("snapshot for `latest` (the repository holds none yet) not found"),
            "{args:?}: {out}"
        );
    }
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    repo.backup(&[&src], &[]);
    let out = repo.run(&["ls", "latest", "--host", "no-such-host"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("snapshot matching `latest` and the filters not found"),
        "{out}"
    );
}
