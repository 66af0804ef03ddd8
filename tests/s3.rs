//! End-to-end scenarios against a real S3 server (s3s-fs on 127.0.0.1):
//! every command on an `s3://` repository, dedup, forget + gc, verify with
//! a damaged object, concurrent backups, the metadata cache, and faults
//! (the server stopped mid-backup, a proxy answering 500 for a while).

mod common;
mod s3support;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use s3support::*;

/// A source tree with some random files, a duplicate and a small file.
fn make_source(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    write_random(&dir.join("big.bin"), seed, 3_000_000);
    write_random(&dir.join("sub/medium.bin"), seed + 1, 700_000);
    fs::copy(dir.join("sub/medium.bin"), dir.join("sub/deeper/copy.bin")).unwrap();
    write(&dir.join("small.txt"), "hello, bucket\n");
}

fn init(repo: &S3Repo) -> Out {
    let mut args = vec!["init"];
    args.extend_from_slice(FAST_INIT);
    args.extend_from_slice(&["--pack-size", "1M"]);
    repo.run(&args).success()
}

fn backup_json(repo: &S3Repo, path: &Path) -> serde_json::Value {
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(path);
    run(&mut c, None).success().json()
}

fn packs_on_server(server: &S3Server, repo: &S3Repo) -> usize {
    server
        .objects(&repo.bucket, &format!("{}/packs", repo.prefix))
        .len()
}

/// Runs `cairn ARGS --target T`, ARGS naming the restore and its
/// options, into a fresh folder T of the repository's scratch space;
/// returns T and the output.
fn restore_into_scratch(repo: &S3Repo, args: &[&str]) -> (PathBuf, Out) {
    let target = repo.scratch.path().join("restore");
    let mut c = repo.cmd(args);
    c.arg("--target").arg(&target);
    (target, run(&mut c, None))
}

/// Restores the newest snapshot (which must succeed); returns the target.
fn restore_latest(repo: &S3Repo) -> PathBuf {
    let (target, out) = restore_into_scratch(repo, &["restore", "latest"]);
    out.success();
    target
}

#[test]
fn every_command_works_on_s3() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "every-command");
    let src = repo.scratch.path().join("src");
    make_source(&src, 1);

    let out = init(&repo);
    assert!(out.stdout.contains("created bucket every-command"), "{out}");
    assert!(out.stdout.contains("conditional writes:"), "{out}");
    assert!(out.stdout.contains("range reads: yes"), "{out}");
    assert!(
        out.stdout
            .contains("upload checksums: a CRC32C with every upload"),
        "{out}"
    );
    // A second init refuses.
    let again = repo.run(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    assert_ne!(again.code, 0, "{again}");
    assert!(again.stderr.contains("already a repository"), "{again}");

    let snap = backup_json(&repo, &src);
    let id = snap["id"].as_str().unwrap().to_string();
    let snaps = repo.run(&["snapshots", "--json"]).success().json();
    assert_eq!(snaps.as_array().unwrap().len(), 1);

    let ls = repo.run(&["ls", "latest"]).success();
    assert!(ls.stdout.contains("deeper/copy.bin"), "{ls}");
    let cfg = repo.run(&["cat", "config"]).success().json();
    assert!(cfg.is_object());
    repo.run(&["cat", "snapshot", &id[..8]]).success().json();
    repo.run(&["cat", "index"]).success().json();

    let target = restore_latest(&repo);
    assert_same_tree(&src, &restored(&target, &src));

    let v = repo.run(&["verify", "--read-data"]).success();
    assert!(v.stdout.contains("no errors"), "{v}");

    // Second snapshot, forget the first, gc, everything still restores.
    write_random(&src.join("big.bin"), 99, 2_000_000);
    backup_json(&repo, &src);
    repo.run(&["forget", &id]).success();
    let pack_bytes = || -> (usize, u64) {
        let packs = server.objects(&repo.bucket, &format!("{}/packs", repo.prefix));
        let bytes = packs.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        (packs.len(), bytes)
    };
    let (before, bytes_before) = pack_bytes();
    let gc = repo.run(&["gc"]).success();
    assert!(!gc.stdout.is_empty(), "{gc}");
    // The old big.bin (3 MB of random bytes) was only in the forgotten
    // snapshot: fewer packs, and that much less stored.
    let (after, bytes_after) = pack_bytes();
    assert!(
        after < before,
        "{before} packs before gc, {after} after: {gc}"
    );
    assert!(
        bytes_after + 2_500_000 < bytes_before,
        "{bytes_before} bytes of packs before gc, {bytes_after} after: {gc}"
    );
    let target2 = repo.scratch.path().join("restore2");
    let mut c = repo.cmd(&["restore", "latest", "--target"]);
    c.arg(&target2);
    run(&mut c, None).success();
    assert_same_contents(&src, &restored(&target2, &src));
    repo.run(&["verify", "--read-data"]).success();

    repo.run(&["repair", "index"]).success();
    repo.run(&["repair", "snapshots"]).success();
    repo.run(&["verify"]).success();
    let u = repo.run(&["unlock"]).success();
    assert!(u.stdout.contains("lock(s) removed"), "{u}");
    // No stray lock, probe or temporary object is left behind.
    let locks = server.objects(&repo.bucket, &format!("{}/locks", repo.prefix));
    assert!(locks.is_empty(), "{locks:?}");
}

#[test]
fn missing_repository_and_bad_urls_have_clear_errors() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "nothing-here");
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.code, 10, "{out}");
    assert!(out.stderr.contains("s3://nothing-here/repo"), "{out}");
    let mut bad = S3Repo::new(&server, "x");
    bad.bucket = "Bad_Bucket".into();
    let out = bad.run(&["snapshots"]);
    assert_eq!(out.code, 2, "a usage error: {out}");
    assert!(out.stderr.contains("bucket name"), "{out}");
    let mut c = repo.cmd(&["snapshots"]);
    c.env_remove("AWS_SECRET_ACCESS_KEY");
    let out = run(&mut c, None);
    assert_eq!(
        out.code, 2,
        "a usage error, as the other S3 settings': {out}"
    );
    assert!(out.stderr.contains("AWS_SECRET_ACCESS_KEY"), "{out}");
}

/// A bucket whose repository lost its `config` object opens from
/// `config.copy`, warning, and `repair config` puts it back; without the
/// copy too it is not "no repository", and `init` does not make a new one
/// over its data.
#[test]
fn a_repository_without_its_config_in_a_bucket_is_named_and_not_initialised_over() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "lost-config");
    init(&repo);
    let src = repo.scratch.path().join("src");
    make_source(&src, 7);
    backup_json(&repo, &src);
    let config = server.data().join("lost-config/repo/config");
    let good = fs::read(&config).unwrap();
    fs::remove_file(&config).unwrap();
    let out = repo.run(&["snapshots", "--no-cache"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains("its copy, config.copy, opened the repository"),
        "{out}"
    );
    repo.run(&["repair", "config"]).success();
    assert_eq!(fs::read(&config).unwrap(), good);

    fs::remove_file(&config).unwrap();
    fs::remove_file(server.data().join("lost-config/repo/config.copy")).unwrap();
    let out = repo.run(&["snapshots", "--no-cache"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("a repository without its config"),
        "{out}"
    );
    let mut args = vec!["init"];
    args.extend_from_slice(FAST_INIT);
    let out = repo.run(&args);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("holds a repository without its config"),
        "{out}"
    );
    assert!(!server.data().join("lost-config/repo/config").exists());
}

/// Objects named like a repository's files but not where their names
/// put them (a copy of a snapshot in a sub-folder, another repository
/// nested under this one's prefix, a pack outside its fan-out folder)
/// are not the repository's: every command lists past them, and gc
/// neither counts nor claims to delete them; below `snapshots/` gc
/// refuses while one is there.
#[test]
fn objects_at_other_places_under_the_prefix_are_not_the_repositorys() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "strays");
    init(&repo);
    let src = repo.scratch.path().join("src");
    make_source(&src, 3);
    backup_json(&repo, &src);
    let root = server.data().join("strays/repo");
    let id = "ab".repeat(32);
    let strays = [
        root.join("index/old").join(&id),
        root.join("keys/old").join(&id),
        root.join("packs").join(&id),
        root.join("packs/cd").join(&id),
        root.join("packs/ab/nested").join(&id),
    ];
    for p in &strays {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"not cairn's").unwrap();
    }
    let listed = repo.run(&["snapshots", "--no-cache", "--json"]).success();
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1), "{listed}");
    let out = repo.run(&["verify", "--no-cache"]);
    assert_eq!(out.code, 0, "{out}");
    let out = repo.run(&["gc", "--no-cache"]).success();
    assert!(
        out.stdout.lines().any(|l| l.starts_with("0 packs deleted")),
        "{out}"
    );
    let target = restore_latest(&repo);
    assert_same_contents(&src, &restored(&target, &src));
    for p in &strays {
        assert_eq!(fs::read(p).unwrap(), b"not cairn's", "{}", p.display());
    }
    // But a snapshot file put aside in a folder of `snapshots/` is a
    // snapshot moved out of every reader's sight: gc refuses while it is
    // there, as it does locally, rather than delete its data.
    let snapshot = listed.json()[0]["id"].as_str().unwrap().to_string();
    // Also hidden, under a name starting with `.`.
    for place in [format!("old/{snapshot}"), format!("old/.{snapshot}")] {
        let aside = root.join("snapshots").join(&place);
        fs::create_dir_all(aside.parent().unwrap()).unwrap();
        fs::rename(root.join("snapshots").join(&snapshot), &aside).unwrap();
        let packs = list_paths(&root.join("packs"));
        let out = repo.run(&["gc", "--no-cache", "--delete-all"]);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stderr.contains(&format!(
                "snapshots/ holds 1 entry that is no snapshot file (the first: {place})"
            )),
            "{out}"
        );
        assert_eq!(list_paths(&root.join("packs")), packs);
        let out = repo.run(&["verify", "--no-cache"]);
        assert!(
            out.stdout.contains("1 entry that is no snapshot file"),
            "{out}"
        );
        fs::rename(&aside, root.join("snapshots").join(&snapshot)).unwrap();
    }
    repo.run(&["gc", "--no-cache"]).success();
    let target = restore_latest(&repo);
    assert_same_contents(&src, &restored(&target, &src));
}

/// An object larger than any file of its kind can be (a lock of 6 GiB,
/// a snapshot of 1 GiB: planted by anyone who can write to the bucket)
/// is refused by its size before its body is fetched: the lock is no
/// lock, the snapshot is set apart as damaged, and neither fills memory.
#[test]
fn objects_larger_than_any_of_their_kind_are_refused_unread() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "huge");
    init(&repo);
    let src = repo.scratch.path().join("src");
    make_source(&src, 4);
    backup_json(&repo, &src);
    let root = server.data().join("huge/repo");
    let id = "ab".repeat(32);
    for (dir, len) in [("locks", 6u64 << 30), ("snapshots", 1 << 30)] {
        let f = fs::File::create(root.join(dir).join(&id)).unwrap();
        f.set_len(len).unwrap();
    }
    let mut c = with_memory_limit(repo.cmd(&["ls", "latest", "--no-cache"]), 2 << 30);
    let out = run(&mut c, None);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "snapshots/{id} is damaged (1073741824 bytes, more than a snapshot file can be"
        )),
        "{out}"
    );
}

/// A dump run by `--stdin-from-command` into a bucket gets neither the
/// password nor the bucket's credentials in its environment: run as
/// another user, it could read them, and they may change or delete every
/// backup in the bucket.
#[test]
fn a_dump_command_gets_no_credentials_of_the_bucket() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "dumpenv");
    init(&repo);
    let mut c = repo.cmd(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "env.txt",
        "--",
        "env",
    ]);
    c.env("AWS_SESSION_TOKEN", "a-session-token-4711");
    run(&mut c, None).success();
    let target = restore_latest(&repo);
    let env = fs::read_to_string(target.join("env.txt")).unwrap();
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "CAIRN_PASSWORD=",
    ] {
        assert!(!env.contains(name), "{name} passed on:\n{env}");
    }
    assert!(!env.contains(SECRET_KEY) && !env.contains("a-session-token-4711"));
    assert!(
        env.contains("CAIRN_S3_ENDPOINT="),
        "the rest is passed on:\n{env}"
    );
}

#[test]
fn credentials_never_appear_in_output_or_the_repository() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let repo = S3Repo::new(&server, "secrets");
    let src = repo.scratch.path().join("src");
    make_source(&src, 2);
    let mut outputs = vec![init(&repo)];
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src);
    outputs.push(run(&mut c, None).success());
    outputs.push(repo.run(&["snapshots"]).success());
    let (_, out) = restore_into_scratch(&repo, &["restore", "latest"]);
    outputs.push(out.success());
    outputs.push(repo.run(&["verify", "--read-data"]).success());

    // A wrong secret is refused by the server: a permanent error, reported
    // after one request, with no retry.
    proxy.clear_log();
    let mut c = repo.cmd(&["snapshots"]);
    c.env("AWS_SECRET_ACCESS_KEY", "not-the-secret-4711")
        .env("CAIRN_S3_ENDPOINT", proxy.endpoint());
    let denied = run(&mut c, None);
    assert_eq!(denied.code, 1, "{denied}");
    assert!(denied.stderr.contains(&proxy.endpoint()), "{denied}");
    assert!(denied.stderr.contains("access denied"), "{denied}");
    assert!(!denied.stderr.contains("retry"), "{denied}");
    // The bucket's refusal is no local user's to mend.
    assert!(!denied.stderr.contains("run cairn as a user"), "{denied}");
    assert!(
        !denied.stderr.contains("as a user who may read"),
        "{denied}"
    );
    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 1, "one request, no retry: {reqs:#?}");
    outputs.push(denied);

    // A clock twenty minutes behind: refused as the wrong secret is, and
    // said as what it is (it said to check the credentials).
    let faketime = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libfaketime (apt-get install faketime; .ci/test installs it)");
    let mut c = repo.cmd(&["snapshots"]);
    c.env("LD_PRELOAD", faketime).env("FAKETIME", "-20m");
    let skewed = run(&mut c, None);
    assert_eq!(skewed.code, 1, "{skewed}");
    assert!(
        skewed
            .stderr
            .contains("clock is 20 minutes behind the server's")
            || skewed
                .stderr
                .contains("clock is 19 minutes behind the server's"),
        "{skewed}"
    );
    assert!(!skewed.stderr.contains("check the credentials"), "{skewed}");

    let mut c = repo.cmd(&["snapshots"]);
    c.env("CAIRN_S3_ENDPOINT", "http://127.0.0.1:1");
    let unreachable = run(&mut c, None);
    assert_ne!(unreachable.code, 0, "{unreachable}");
    assert!(unreachable.stderr.contains("127.0.0.1:1"), "{unreachable}");
    outputs.push(unreachable);
    // Every command whose store does not answer says it is not damage
    // and what to do (they gave the bare error); where the repository
    // could not even be opened, that nothing was done, not that the
    // command stopped.
    let unreached = repo.scratch.path().join("unreached");
    for args in [
        vec!["backup", src.to_str().unwrap()],
        vec!["forget", "--keep-last", "1"],
        vec!["ls", "latest"],
        vec!["restore", "latest", "--target", unreached.to_str().unwrap()],
        vec!["verify"],
        vec!["gc"],
        vec!["repair", "snapshots", "--dry-run"],
    ] {
        let mut c = repo.cmd(&args);
        c.env("CAIRN_S3_ENDPOINT", "http://127.0.0.1:1")
            .env("CAIRN_RETRIES", "1");
        let out = run(&mut c, None);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(
            out.stderr
                .contains("could not be opened, so nothing was done")
                && out
                    .stderr
                    .contains("the store did not answer, which is not damage"),
            "{args:?}: {out}"
        );
        assert!(!out.stderr.contains("stopped"), "{args:?}: {out}");
        outputs.push(out);
    }
    assert!(!unreached.exists());
    for o in &outputs {
        for secret in [SECRET_KEY, ACCESS_KEY, "not-the-secret-4711"] {
            assert!(
                !o.stdout.contains(secret) && !o.stderr.contains(secret),
                "{secret} shown: {o}"
            );
        }
    }
    let objects = server.objects(&repo.bucket, "");
    assert!(objects.len() > 5, "{objects:?}");
    let cached = walk(&repo.cache_dir());
    assert!(!cached.is_empty());
    for f in objects.iter().chain(cached.iter()) {
        let bytes = fs::read(f).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains(SECRET_KEY) && !hay.contains(ACCESS_KEY),
            "{}",
            f.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn dedup_and_a_no_change_backup_downloads_no_pack() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut repo = S3Repo::new(&server, "dedup");
    repo.endpoint = proxy.endpoint();
    let src = repo.scratch.path().join("src");
    make_source(&src, 3);
    init(&repo);
    let first = backup_json(&repo, &src);
    let packs = packs_on_server(&server, &repo);
    // The same bytes under another name store nothing new.
    let copy = repo.scratch.path().join("copy");
    fs::create_dir_all(&copy).unwrap();
    fs::copy(src.join("big.bin"), copy.join("again.bin")).unwrap();
    let dup = backup_json(&repo, &copy);
    assert_eq!(
        dup["summary"]["blobs_added"], dup["summary"]["dirs"],
        "only the trees are new: {dup}"
    );
    assert!(
        dup["summary"]["bytes_added"].as_u64().unwrap() < 10_000,
        "{dup}"
    );
    assert!(first["summary"]["blobs_added"].as_u64().unwrap() > 3);

    proxy.clear_log();
    let same = backup_json(&repo, &src);
    assert_eq!(
        same["summary"]["files_unmodified"].as_u64(),
        Some(4),
        "{same}"
    );
    assert_eq!(
        proxy.gets_containing("/packs/"),
        0,
        "a no-change backup must not download packs"
    );
    assert_eq!(
        proxy.gets_containing("/index/"),
        0,
        "the index comes from the cache"
    );
    // It lists keys, index tables, snapshots and locks, each once or twice
    // (locks when taking the lock), and the packs once (a pack the index
    // names that is gone must not be taken for holding the data: one
    // request a thousand packs), and nothing else.
    let lists = proxy.lists();
    let prefix_of = |t: &str| {
        ["keys", "index", "snapshots", "locks", "packs"]
            .into_iter()
            .find(|k| t.contains(&format!("repo%2F{k}%2F")) || t.contains(&format!("repo/{k}/")))
    };
    assert!(
        lists.iter().all(|l| prefix_of(&l.target).is_some()),
        "{lists:#?}"
    );
    let pack_lists = lists
        .iter()
        .filter(|l| prefix_of(&l.target) == Some("packs"))
        .count();
    assert_eq!(pack_lists, 1, "{lists:#?}");
    assert!(lists.len() <= 7, "{} listings: {lists:#?}", lists.len());
    assert!(packs_on_server(&server, &repo) <= packs + 2);

    // Without the cache it still works, reading metadata from the store.
    proxy.clear_log();
    let mut c = repo.cmd(&["--no-cache", "backup", "--json"]);
    c.arg(&src);
    run(&mut c, None).success();
    assert!(proxy.gets_containing("/index/") > 0);
}

#[test]
fn a_damaged_or_stale_cache_is_rebuilt() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "cache");
    let src = repo.scratch.path().join("src");
    make_source(&src, 4);
    init(&repo);
    backup_json(&repo, &src);
    let cached = walk(&repo.cache_dir());
    assert!(
        cached
            .iter()
            .any(|p| p.to_string_lossy().contains("/index/")),
        "{cached:?}"
    );
    assert!(
        cached
            .iter()
            .any(|p| p.to_string_lossy().contains("/packs/")),
        "tree packs cached"
    );
    // Damage every cached file.
    for f in &cached {
        if f.file_name().is_some_and(|n| n == "CACHEDIR.TAG") {
            continue;
        }
        let mut b = fs::read(f).unwrap();
        if b.is_empty() {
            continue;
        }
        b[0] ^= 0xff;
        fs::write(f, b).unwrap();
    }
    let target = restore_latest(&repo);
    assert_same_contents(&src, &restored(&target, &src));
    // The damaged copies were replaced by good ones.
    for f in walk(&repo.cache_dir()) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name.len() == 64 {
            let b = fs::read(&f).unwrap();
            assert_eq!(blake3::hash(&b).to_hex().as_str(), name, "{}", f.display());
        }
    }
    // A stale cache (snapshots forgotten by another machine) is pruned.
    let snaps = repo.run(&["snapshots", "--json"]).success().json();
    let id = snaps[0]["id"].as_str().unwrap().to_string();
    let mut c = repo.cmd(&["--no-cache", "forget", &id]);
    run(&mut c, None).success();
    let after = repo.run(&["snapshots", "--json"]).success().json();
    assert_eq!(after.as_array().unwrap().len(), 0);
    assert!(!walk(&repo.cache_dir()).iter().any(|p| p.ends_with(&id)));
}

/// The one tree pack a backup left in the cache: its cached file, its
/// name, and its object on the server.
fn cached_tree_pack(server: &S3Server, repo: &S3Repo) -> (PathBuf, String, PathBuf) {
    let cached: Vec<PathBuf> = walk(&repo.cache_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/packs/"))
        .collect();
    assert_eq!(cached.len(), 1, "one tree pack cached: {cached:?}");
    let name = cached[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let on_server: Vec<PathBuf> = server
        .objects(&repo.bucket, &format!("{}/packs", repo.prefix))
        .into_iter()
        .filter(|p| p.ends_with(&name))
        .collect();
    assert_eq!(on_server.len(), 1, "{name} on the server");
    (cached[0].clone(), name, on_server[0].clone())
}

/// A repository on a fresh server holding one backup of a source made
/// from `seed`, its one tree pack cached.
struct OneCachedPack {
    /// The server, kept running while bound (a pattern must bind it:
    /// `..` drops it).
    _server: S3Server,
    repo: S3Repo,
    src: PathBuf,
    /// The snapshot's id.
    id: String,
    /// The tree pack's cached file, its name, its object on the server.
    cached: PathBuf,
    name: String,
    on_server: PathBuf,
}

fn one_cached_pack(prefix: &str, seed: u64) -> OneCachedPack {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, prefix);
    let src = repo.scratch.path().join("src");
    make_source(&src, seed);
    init(&repo);
    let id = backup_json(&repo, &src)["id"].as_str().unwrap().to_string();
    let (cached, name, on_server) = cached_tree_pack(&server, &repo);
    OneCachedPack {
        _server: server,
        repo,
        src,
        id,
        cached,
        name,
        on_server,
    }
}

/// Flips `mask`'s bits of the byte `at` gives for the file's length, in
/// the file at `path`; returns the file's bytes after.
fn flip(path: &Path, at: impl FnOnce(usize) -> usize, mask: u8) -> Vec<u8> {
    let mut bytes = fs::read(path).unwrap();
    let at = at(bytes.len());
    bytes[at] ^= mask;
    fs::write(path, &bytes).unwrap();
    bytes
}

/// Cuts the file at `path` to `len` bytes.
fn cut(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The warning that this host's cache holds an intact copy of pack
/// `name`, whose store copy is as `how` says.
fn intact_copy_said(out: &Out, name: &str, how: &str) -> bool {
    out.stderr.contains(&format!(
        "warning: pack {} {how}, but this host's cache holds an intact copy of it",
        &name[..8]
    )) && out
        .stderr
        .contains("`cairn repair index`, run on this host, puts it back")
}

/// What `verify` (with this host's cache) says of pack `name`'s intact
/// copy: an error, the store's `how`, and the repair that puts it back
/// (`repair index`, with `--read-data` where only a read finds the damage).
fn verify_names_the_copy(repo: &S3Repo, name: &str, how: &str, read_data: bool) {
    let mut args = vec!["verify"];
    if read_data {
        args.push("--read-data");
    }
    let out = repo.run(&args);
    assert_eq!(out.code, 1, "{out}");
    let said = format!(
        "error: pack {}: {how}, but this host's cache holds an intact copy of it",
        &name[..8]
    );
    assert!(out.stdout.contains(&said), "{said}: {out}");
    let repair = if how.contains("hash") {
        "`cairn repair index --read-data`"
    } else {
        "`cairn repair index`"
    };
    assert!(
        out.stdout.contains(&format!(
            "{repair}, run on this host, puts it back into the repository"
        )),
        "{out}"
    );
    // Without the cache it cannot know of the copy.
    let out = repo.run(&["--no-cache", "verify"]);
    assert!(!out.stdout.contains("this host's cache"), "{out}");
}

/// `repair index` on this host puts pack `name` back from its cached
/// copy (the store's as `how` says), after which every snapshot reads
/// back whole without the cache.
fn repair_puts_back(repo: &S3Repo, name: &str, how: &str, args: &[&str], src: &Path, id: &str) {
    let mut all = vec!["repair", "index"];
    all.extend_from_slice(args);
    let out = repo.run(&all);
    assert_eq!(out.code, 0, "{out}");
    let said = format!("put back: pack {}, {how}", &name[..8]);
    assert!(
        out.stdout.contains(&said)
            && out
                .stdout
                .contains("from the intact copy in this host's cache"),
        "{said}: {out}"
    );
    assert!(!out.stdout.contains("unreadable"), "nothing dropped: {out}");
    let out = repo.run(&["--no-cache", "verify", "--read-data"]);
    assert_eq!(out.code, 0, "{out}");
    let (target, out) = restore_into_scratch(repo, &["--no-cache", "restore", &id[..8]]);
    assert_eq!(out.code, 0, "{out}");
    assert_same_contents(src, &restored(&target, src));
}

/// A tree pack the store lost while this host's cache holds it intact:
/// not served (no other host could restore), but kept, through restores
/// and backups whose listing of packs would prune it (the index still
/// names the pack), and put back by `repair index`. The copy was dropped
/// at the first read, the one intact copy left.
#[test]
fn a_cached_tree_pack_gone_from_the_store_is_not_served_but_put_back() {
    let OneCachedPack {
        _server,
        repo,
        src,
        id,
        cached,
        name,
        on_server,
        ..
    } = one_cached_pack("cache-gone", 5);
    fs::remove_file(&on_server).unwrap();
    // The repository cannot restore anywhere: with the cache it must not
    // either, and it names the pack, and the copy.
    let (_, out) = restore_into_scratch(&repo, &["restore", "latest"]);
    assert_ne!(out.code, 0, "the restore fails: {out}");
    assert!(
        out.stderr.contains(&name) && out.stderr.contains("does not exist"),
        "the missing pack is named: {out}"
    );
    assert!(
        intact_copy_said(&out, &name, "is missing from the repository"),
        "{out}"
    );
    assert!(cached.exists(), "the cached copy is kept");
    verify_names_the_copy(&repo, &name, "missing from the repository", false);
    // Another host, without the copy, is told where one may be.
    let out = repo.run(&["--no-cache", "verify"]);
    assert!(
        out.stdout.contains(
            "if the pack was deleted (a pack of trees: the cache of a host that wrote or read it \
             may hold an intact copy, which `cairn verify` there names and `cairn repair index` \
             there puts back: do that first)"
        ),
        "{out}"
    );
    // A backup lists the packs (it finds the parent's trees indexed), and
    // stores them again; the copy outlives the listing.
    let mut c = repo.cmd(&["backup", "--kind", "full"]);
    c.arg(&src);
    let out = run(&mut c, None);
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "pack {}, which the index names, is missing from the repository",
            &name[..8]
        )) && out
            .stderr
            .contains("this host's cache holds an intact copy of it, which `cairn repair index`"),
        "{out}"
    );
    assert!(cached.exists(), "the backup's listing spares the copy");
    repair_puts_back(&repo, &name, "missing from the repository", &[], &src, &id);
}

/// A tree pack cut short in the bucket while this host's cache holds it
/// whole: the cache's copy is not served (its size is not the store's),
/// so a backup finds its parent's trees unreadable, reads its files
/// afresh and stores the trees again (exit 3), and its snapshot restores
/// without the cache too. It took the trees from the cache, exit 0, and
/// wrote a snapshot no other host could restore. The copy, the one
/// intact copy left, is kept, named by verify, and put back by `repair
/// index` (which removed the cut pack, its header unreadable, and the
/// next backup's listing then pruned the copy).
#[test]
fn a_cached_tree_pack_cut_short_in_the_store_is_not_served() {
    let OneCachedPack {
        _server,
        repo,
        src,
        id,
        cached,
        name,
        on_server,
        ..
    } = one_cached_pack("cache-cut", 6);
    let whole = fs::metadata(&on_server).unwrap().len();
    cut(&on_server, 100);
    // A host without the copy is told, before it repairs, where one may be.
    let out = repo.run(&["--no-cache", "verify"]);
    assert!(
        out.stdout.contains(
            "or a pack cut short (a pack of trees: the cache of a host that wrote or read it may \
             hold an intact copy"
        ),
        "{out}"
    );

    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src);
    let out = run(&mut c, None);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains(&name[..8]), "the pack is named: {out}");
    assert!(
        intact_copy_said(
            &out,
            &name,
            "is 100 bytes in the repository (it is read from there meanwhile)"
        ) && out.stderr.contains(&cached.display().to_string()),
        "{out}"
    );
    assert!(cached.exists(), "the cached copy is kept");
    let (target, out) = restore_into_scratch(&repo, &["--no-cache", "restore", "latest"]);
    assert_eq!(out.code, 0, "{out}");
    assert_same_contents(&src, &restored(&target, &src));
    fs::remove_dir_all(&target).unwrap();
    let how = format!("100 bytes in the repository where its intact copy has {whole}");
    verify_names_the_copy(&repo, &name, &how, false);
    // Copies of the snapshots without the pack's trees are refused while
    // the copy would put them back.
    let out = repo.run(&["repair", "snapshots"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "refusing to repair snapshots: pack {} is {how}, but this host's cache holds an \
             intact copy of it; `cairn repair index`, run on this host, puts it back first",
            &name[..8]
        )),
        "{out}"
    );
    repair_puts_back(&repo, &name, &how, &[], &src, &id);
    repo.run(&["repair", "snapshots"]).success();
    assert_eq!(fs::metadata(&on_server).unwrap().len(), whole);
}

/// What this host says of a tree (whose id starts with `tree`, or any)
/// that pack `name` in the store gives damaged while its cache holds the
/// pack intact: a plain verify, which reads the trees, not whole packs,
/// names the copy and says to put it back first; a plain repair of the
/// snapshots meets the tree damaged and refuses, writing nothing, rather
/// than write the snapshots without it.
fn damaged_tree_copy_said(repo: &S3Repo, name: &str, tree: &str) {
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout
            .contains(&format!("error: pack {}: gives tree {tree}", &name[..8]))
            && out
                .stdout
                .contains("damaged, but this host's cache holds an intact copy of the pack")
            && out.stdout.contains(
                "`cairn repair index --read-data`, run on this host, puts it back into the \
                 repository"
            )
            && out.stdout.contains(
                "what now: first put back what this host's cache holds, with the repair named \
                 above, run on this host"
            )
            && !out.stdout.contains("what now: `cairn verify --read-data`"),
        "{out}"
    );
    let before = repo.run(&["snapshots"]).stdout;
    let out = repo.run(&["repair", "snapshots"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains(&format!("refusing to repair snapshots: tree {tree}"))
            && out
                .stderr
                .contains(&format!("cannot be read from pack {} (", &name[..8]))
            && out
                .stderr
                .contains("but this host's cache holds an intact copy of the pack (")
            && out
                .stderr
                .contains("`cairn repair index --read-data`, run on this host, puts it back first"),
        "{out}"
    );
    assert_eq!(repo.run(&["snapshots"]).stdout, before, "nothing written");
}

/// Bit rot inside a tree pack of the right size, under an intact cached
/// copy: only a read finds it, so `verify --read-data` names the copy and
/// `repair index --read-data` puts it back (a plain `repair index`,
/// reading headers only, has nothing to go by).
#[test]
fn a_cached_tree_pack_damaged_in_the_store_is_put_back_by_a_read_data_repair() {
    let OneCachedPack {
        _server,
        repo,
        src,
        id,
        cached,
        name,
        on_server,
        ..
    } = one_cached_pack("cache-rot", 7);
    flip(&on_server, |len| len / 2, 0x40);
    damaged_tree_copy_said(&repo, &name, "");
    // A host without the copy, refused by gc, is told to ask the others
    // first: a forget of the originals would lose what their caches hold.
    let out = repo.run(&["--no-cache", "gc"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "first run `cairn verify` on the hosts that back up to this bucket: one whose cache \
             holds an intact copy of a damaged pack of trees names it"
        ),
        "{out}"
    );
    let how = "damaged in the repository (its bytes do not hash to its name)";
    verify_names_the_copy(&repo, &name, how, true);
    let out = repo.run(&["repair", "index"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stdout.contains("put back"), "{out}");
    // A repair of the snapshots that reads the packs finds the damage,
    // and refuses while the copy would mend it.
    let out = repo.run(&["repair", "snapshots", "--read-data"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "refusing to repair snapshots: pack {} is {how}, but this host's cache holds an \
             intact copy of it; `cairn repair index --read-data`, run on this host, puts it back \
             first",
            &name[..8]
        )),
        "{out}"
    );
    repair_puts_back(&repo, &name, how, &["--read-data"], &src, &id);
    assert!(cached.exists());
}

/// A tree pack whose header (its table of contents, at its end) is
/// damaged in the bucket, at its own size: a plain `repair index` reads
/// the header, and puts the pack back from the intact cached copy where
/// it wrote the pack again from the blobs that open.
#[test]
fn a_cached_tree_pack_whose_header_is_damaged_in_the_store_is_put_back() {
    let OneCachedPack {
        _server,
        repo,
        src,
        id,
        name,
        on_server,
        ..
    } = one_cached_pack("cache-header", 9);
    flip(&on_server, |len| len - 20, 0x01);
    let how = "damaged in the repository (its bytes do not hash to its name)";
    verify_names_the_copy(&repo, &name, how, true);
    // A host without the copy is told where one may be, before the
    // repair that would drop the trees.
    let out = repo.run(&["--no-cache", "verify", "--read-data"]);
    assert!(
        out.stdout
            .contains(&format!("error: pack {}: header unreadable", &name[..8]))
            && out.stdout.contains(
                "places in it (a pack of trees: the cache of a host that wrote or read it may \
                 hold an intact copy, which `cairn verify` there names and `cairn repair index` \
                 there puts back: do that first)"
            ),
        "{out}"
    );
    repair_puts_back(
        &repo,
        &name,
        "its header damaged in the repository (",
        &[],
        &src,
        &id,
    );
}

/// A tree pack cut short in its trailer only: no index entry points past
/// its end, so nothing but the intact cached copy's size shows the damage;
/// `verify` on that host fails on it (it said "no errors", exit 0, with a
/// warning).
#[test]
fn a_pack_cut_in_its_trailer_under_an_intact_copy_fails_verify() {
    let OneCachedPack {
        _server,
        repo,
        src,
        id,
        name,
        on_server,
        ..
    } = one_cached_pack("cache-trailer", 10);
    let whole = fs::metadata(&on_server).unwrap().len();
    cut(&on_server, whole - 30);
    let how = format!(
        "{} bytes in the repository where its intact copy has {whole}",
        whole - 30
    );
    verify_names_the_copy(&repo, &name, &how, false);
    repair_puts_back(&repo, &name, &how, &[], &src, &id);
}

/// The place this host's cache sets aside a copy of pack `name` whose
/// pack the store no longer lists nor the index names.
fn set_aside(repo: &S3Repo, name: &str) -> PathBuf {
    let found: Vec<PathBuf> = walk(&repo.cache_dir())
        .into_iter()
        .filter(|p| p.ends_with(format!("packs-gone/{name}")))
        .collect();
    assert!(found.len() <= 1, "{found:?}");
    found.into_iter().next().unwrap_or_default()
}

/// A damaged tree pack that a repair elsewhere (here `--no-cache`)
/// removed: this host's next listing sets its intact copy aside rather
/// than delete it, as the index no longer names the pack; `verify` here
/// finds the trees the snapshots use in it, and `repair index` here puts
/// it back. The listing deleted the copy, and the old snapshot was lost.
#[test]
fn a_tree_pack_a_repair_elsewhere_removed_is_put_back_from_the_cache() {
    let OneCachedPack {
        _server,
        repo,
        src,
        id,
        cached,
        name,
        on_server,
    } = one_cached_pack("cache-elsewhere", 11);
    cut(&on_server, 100);
    let out = repo.run(&["--no-cache", "repair", "index"]).success();
    assert!(
        out.stdout.contains(&name[..8]),
        "the cut pack is written again: {out}"
    );
    assert!(!on_server.exists(), "and removed");
    // Without a copy, it says where one may be.
    assert!(
        out.stdout.contains(
            "of them are trees: the cache of a host that wrote or read their pack may hold an \
             intact copy for 30 days, which `cairn verify` there names and `cairn repair index` \
             there puts back"
        ),
        "{out}"
    );
    // This host's next listing of packs (a backup finding data indexed)
    // sets the copy aside. Of another folder: a backup of the source
    // could store the lost trees again, as they were.
    let other = repo.scratch.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::copy(src.join("big.bin"), other.join("big.bin")).unwrap();
    let mut c = repo.cmd(&["backup"]);
    c.arg(&other);
    run(&mut c, None).success();
    assert!(!cached.exists());
    assert!(set_aside(&repo, &name).exists(), "the copy is set aside");
    // A restore here cannot read the trees, and points at the copy.
    let (_, out) = restore_into_scratch(&repo, &["restore", &id[..8]]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "a tree of snapshot {} on the way there is not in the index",
            &id[..8]
        )) && out.stderr.contains(
            "but first, this host's cache may hold a copy of its pack (kept 30 days after a \
             repair elsewhere removed it): `cairn verify` here names one, and `cairn repair \
             index` here puts it back"
        ),
        "{out}"
    );

    let how = "gone from the repository and from its index (a repair removed it, on this host \
               or another?), with";
    rescue_said_and_done(&repo, &name, how, &src, &id);
}

/// A folder stored in parts, damaged in the bucket at the pack's own size
/// (its list of parts, or one part) under this host's intact copy: a
/// plain `verify` names the copy, and a plain `repair snapshots` refuses
/// (it wrote the snapshots without the folder, exit 0, and forget + gc of
/// the originals then lost it, the copy too).
#[test]
fn a_folder_in_parts_damaged_under_an_intact_cached_copy_is_not_repaired_away() {
    for which in ["list", "part"] {
        let server = S3Server::start();
        let repo = S3Repo::new(&server, &format!("cache-parts-{which}"));
        let src = repo.scratch.path().join("src");
        for i in 0..200 {
            write(&src.join(format!("big/f{i:03}")), format!("file {i}\n"));
        }
        init(&repo);
        let mut c = repo.cmd(&["backup", "--json"]);
        c.arg(&src).env("CAIRN_TEST_TREE_PART", "20");
        let id = run(&mut c, None).success().json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, name, on_server) = cached_tree_pack(&server, &repo);
        // The folder's tree is a list of parts; the blob to damage is it,
        // or its first part.
        let big = format!("{}/big", abs(&src));
        let out = repo.run(&["ls", &id, &abs(&src), "--json"]).success();
        let list = out
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["path"] == big)
            .unwrap_or_else(|| panic!("{out}"))["kind"]["dir"]["subtree"]
            .as_str()
            .unwrap()
            .to_string();
        let parts = repo.run(&["cat", "tree", &list]).success().json();
        assert!(
            parts["parts"].as_array().is_some_and(|p| p.len() >= 2),
            "{parts:#}"
        );
        let blob = match which {
            "list" => list.clone(),
            _ => parts["parts"][0].as_str().unwrap().to_string(),
        };
        let pack = repo.run(&["cat", "pack", &name]).success().json();
        let entry = pack["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == blob.as_str())
            .unwrap_or_else(|| panic!("{blob} in {pack:#}"))
            .clone();
        let at = entry["offset"].as_u64().unwrap() + entry["length"].as_u64().unwrap() / 2;
        flip(&on_server, |_| at as usize, 0x40);

        damaged_tree_copy_said(&repo, &name, &blob[..8]);
        let how = "damaged in the repository (its bytes do not hash to its name)";
        repair_puts_back(&repo, &name, how, &["--read-data"], &src, &id);
    }
}

/// A tree pack the bucket lost, its trees dropped from the index by a
/// repair on a host without the copy: that repair says where a copy may
/// be, and the host with the copy names it and puts it back.
#[test]
fn a_lost_tree_pack_a_repair_elsewhere_dropped_is_said_and_put_back() {
    let OneCachedPack {
        _server,
        repo,
        src,
        id,
        name,
        on_server,
        ..
    } = one_cached_pack("cache-lost-elsewhere", 14);
    fs::remove_file(&on_server).unwrap();
    let out = repo.run(&["--no-cache", "repair", "index"]).success();
    assert!(
        out.stderr.contains(&format!(
            "the old index named 1 pack(s) the repository does not hold (first: {})",
            &name[..8]
        )) && out.stderr.contains(
            "of them are trees: the cache of a host that wrote or read their pack may hold an \
             intact copy for 30 days, which `cairn verify` there names and `cairn repair index` \
             there puts back"
        ),
        "{out}"
    );
    let how = "gone from the repository and from its index (a repair removed it, on this host \
               or another?), with";
    rescue_said_and_done(&repo, &name, how, &src, &id);
}

/// What this host says and does of a copy holding trees the snapshots use
/// that the store lacks (`how`, of the store's pack): `verify` fails
/// naming it, `repair snapshots` refuses, `repair index` puts it back.
fn rescue_said_and_done(repo: &S3Repo, name: &str, how: &str, src: &Path, id: &str) {
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout
            .contains(&format!("error: pack {}: {how}", &name[..8]))
            && out
                .stdout
                .contains("but this host's cache holds an intact copy of it (")
            && out
                .stdout
                .contains("): `cairn repair index`, run on this host, puts it back"),
        "{out}"
    );
    let out = repo.run(&["repair", "snapshots"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "refusing to repair snapshots: pack {}: {how}",
            &name[..8]
        )) && out
            .stderr
            .contains("`cairn repair index`, run on this host, puts it back first"),
        "{out}"
    );
    repair_puts_back(repo, name, how, &[], src, id);
}

/// A tree damaged inside its pack, which a repair with `--read-data`
/// elsewhere left out of the index (keeping the pack): this host's cache
/// holds the pack intact, so `verify` here names it, `repair snapshots`
/// refuses, and a plain `repair index` puts it back. A host without the
/// copy is told, before it repairs, that another host's cache may hold
/// it. It was found only by `verify --read-data` here, and `repair
/// snapshots` wrote the snapshots without the tree.
#[test]
fn a_damaged_tree_a_repair_elsewhere_left_out_is_put_back_from_the_cache() {
    let OneCachedPack {
        _server,
        repo,
        src,
        id,
        name,
        on_server,
        ..
    } = one_cached_pack("cache-rot-elsewhere", 13);
    flip(&on_server, |len| len / 2, 0x01);
    let out = repo.run(&["--no-cache", "verify", "--read-data"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains(
            "without what is lost (a pack of trees: the cache of a host that wrote or read it \
             may hold an intact copy"
        ),
        "{out}"
    );
    let out = repo.run(&["--no-cache", "repair", "index", "--read-data"]);
    assert!(
        out.stdout.contains("damaged, dropped from the index"),
        "{out}"
    );
    let how = "holds 1 tree(s) the snapshots use that the index lacks (left out as damaged by a \
               repair, on this host or another?)";
    rescue_said_and_done(&repo, &name, how, &src, &id);
}

/// A tree pack a gc on another host emptied and removed is set aside by
/// this host's next listing too, but nothing the snapshots use is in it:
/// neither `verify` nor `repair index` here brings it back.
#[test]
fn a_tree_pack_a_gc_elsewhere_removed_is_not_put_back() {
    let OneCachedPack {
        _server: server,
        repo,
        src,
        id,
        name,
        ..
    } = one_cached_pack("cache-gc", 12);
    write(&src.join("sub/new.txt"), "a new file, a new tree\n");
    backup_json(&repo, &src);
    repo.run(&["--no-cache", "forget", &id[..8]]).success();
    repo.run(&["--no-cache", "gc"]).success();
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src);
    run(&mut c, None).success();
    assert!(set_aside(&repo, &name).exists(), "the copy is set aside");
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 0, "{out}");
    let out = repo.run(&["repair", "index"]).success();
    assert!(!out.stdout.contains("put back"), "{out}");
    let out = repo.run(&["--no-cache", "verify", "--read-data"]);
    assert_eq!(out.code, 0, "{out}");
    let objects = server.objects(&repo.bucket, &format!("{}/packs", repo.prefix));
    assert!(
        !objects.iter().any(|p| p.ends_with(&name)),
        "the emptied pack stays gone"
    );
}

/// A snapshot file damaged in the bucket while this host's cache holds it
/// intact: every other host finds it damaged, with the advice to forget
/// it; `verify` here names the copy, and `repair snapshots` here puts it
/// back (a dry run only says it would).
#[test]
fn a_snapshot_file_damaged_in_the_bucket_is_put_back_from_the_cache() {
    let OneCachedPack {
        _server: server,
        repo,
        src,
        id,
        ..
    } = one_cached_pack("cache-snap", 8);
    let objects = server.objects(&repo.bucket, &format!("{}/snapshots", repo.prefix));
    let on_server = objects.iter().find(|p| p.ends_with(&id)).unwrap();
    let bytes = flip(on_server, |len| len / 2, 0x01);

    // Another host (no cache) is told to look for a host's copy.
    let out = repo.run(&["--no-cache", "verify"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains(&format!("snapshot {}", &id[..8]))
            && out
                .stdout
                .contains("the cache of a host that wrote or read it may hold one"),
        "{out}"
    );
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout
            .contains("this host's cache holds an intact copy of it (",)
            && out.stdout.contains(
                "`cairn repair snapshots`, run on this host, puts it back into the repository"
            ),
        "{out}"
    );
    let said = format!("snapshot file snapshots/{id}, damaged in the repository, from the intact");
    let out = repo.run(&["repair", "snapshots", "--dry-run"]).success();
    assert!(
        out.stdout.contains(&format!("would be put back: {said}")),
        "{out}"
    );
    assert_eq!(
        fs::read(on_server).unwrap(),
        bytes,
        "a dry run writes nothing"
    );
    let out = repo.run(&["repair", "snapshots"]).success();
    assert!(out.stdout.contains(&format!("put back: {said}")), "{out}");
    assert!(!out.stdout.contains("damaged, left as it is"), "{out}");
    let out = repo.run(&["--no-cache", "verify", "--read-data"]);
    assert_eq!(out.code, 0, "{out}");
    let (target, out) = restore_into_scratch(&repo, &["--no-cache", "restore", &id[..8]]);
    assert_eq!(out.code, 0, "{out}");
    assert_same_contents(&src, &restored(&target, &src));
}

#[test]
fn verify_finds_a_damaged_object() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "damaged");
    let src = repo.scratch.path().join("src");
    make_source(&src, 5);
    init(&repo);
    backup_json(&repo, &src);
    repo.run(&["verify", "--read-data"]).success();
    // Flip a byte in the largest pack on the server's disk.
    let mut packs = server.objects(&repo.bucket, &format!("{}/packs", repo.prefix));
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let victim = packs.last().unwrap();
    let mut b = fs::read(victim).unwrap();
    b[100] ^= 0x55;
    fs::write(victim, b).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let out = repo.run(&["verify", "--read-data"]);
    assert_eq!(out.code, 1, "{out}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains(&name[..8]), "names the pack: {out}");
    let (_, r) = restore_into_scratch(&repo, &["restore", "latest"]);
    assert_ne!(r.code, 0, "restore reports the damaged file: {r}");
}

/// Answers changed on their way (over plain HTTP, through a faulty
/// proxy: a download carries no checksum) are read again, not taken for
/// damage in the bucket: a file read whole that does not hash to its
/// name, a blob of a range that does not open, a config that does not
/// open. With the first one or two answers of each command (or of its
/// reads of packs, or of data blobs) changed, the restore is whole, verify finds nothing, `repair index
/// --read-data` drops nothing and a backup exits 0. Each read the
/// changed bytes as damage: exit 1, an intact blob dropped from the
/// index, the config's copy taken, exit 3.
#[test]
fn answers_changed_on_their_way_are_read_again_not_taken_for_damage() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "garbled");
    let src = repo.scratch.path().join("src");
    make_source(&src, 6);
    init(&repo);
    backup_json(&repo, &src);
    for n in [
        "1",
        "2",
        "packs:1",
        "packs:2",
        "packs:1:65536",
        "packs:2:65536",
    ] {
        let garbled = |args: &[&str]| {
            let mut c = repo.cmd(args);
            c.env("CAIRN_TEST_GARBLE_READS", n).arg("--no-cache");
            run(&mut c, None)
        };
        let target = repo
            .scratch
            .path()
            .join(format!("restore-{}", n.replace(':', "-")));
        let out = garbled(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{n}: {out}");
        assert_same_tree(&src, &restored(&target, &src));
        let out = garbled(&["verify", "--read-data"]);
        assert_eq!(out.code, 0, "{n}: {out}");
        let out = garbled(&["repair", "index", "--read-data"]);
        assert_eq!(out.code, 0, "{n}: {out}");
        assert!(
            !out.stdout.contains("dropped") && !out.stderr.contains("damaged"),
            "{n}: {out}"
        );
        let mut c = repo.cmd(&["backup", "--no-cache", "--kind", "full"]);
        c.env("CAIRN_TEST_GARBLE_READS", n).arg(&src);
        let out = run(&mut c, None);
        assert_eq!(out.code, 0, "{n}: {out}");
        assert!(
            out.stderr.is_empty() || !out.stderr.contains("warning"),
            "{n}: {out}"
        );
    }
}

#[test]
fn concurrent_backups_share_the_repository() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "concurrent");
    let a = repo.scratch.path().join("a");
    let b = repo.scratch.path().join("b");
    make_source(&a, 6);
    make_source(&b, 7);
    init(&repo);
    let mut ca = repo.cmd(&["backup", "--json"]);
    ca.arg(&a);
    let mut cb = repo.cmd(&["backup", "--json"]);
    cb.arg(&b);
    let ta = std::thread::spawn(move || run(&mut ca, None));
    let tb = std::thread::spawn(move || run(&mut cb, None));
    ta.join().unwrap().success();
    tb.join().unwrap().success();
    let snaps = repo.run(&["snapshots", "--json"]).success().json();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    repo.run(&["verify", "--read-data"]).success();
    for (src, name) in [(&a, "ra"), (&b, "rb")] {
        let target = repo.scratch.path().join(name);
        let path = src.to_string_lossy().into_owned();
        let id = snaps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["paths"][0].as_str() == Some(path.as_str()))
            .and_then(|s| s["id"].as_str())
            .unwrap()
            .to_string();
        let mut c = repo.cmd(&["restore", &id, "--target"]);
        c.arg(&target);
        run(&mut c, None).success();
        assert_same_contents(src, &restored(&target, src));
    }
}

#[test]
fn server_stopped_mid_backup_then_rerun() {
    let mut server = S3Server::start();
    let mut repo = S3Repo::new(&server, "stopped");
    repo.retries = 2;
    let src = repo.scratch.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let (files, size) = (24u64, 1_500_000);
    for i in 0..files {
        write_random(&src.join(format!("f{i}")), 100 + i, size);
    }
    init(&repo);
    let connections = 4;
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src)
        .env("CAIRN_CONNECTIONS", connections.to_string());
    let child = std::thread::spawn(move || run(&mut c, None));
    // Stop the server once some packs have arrived and been answered: a
    // pack the server holds may still be waiting for its answer, which
    // the stop then cuts off, so count the uploads in flight out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while packs_on_server(&server, &repo) < connections + 3 {
        assert!(std::time::Instant::now() < deadline, "no packs uploaded");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    server.stop();
    let out = child.join().unwrap();
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&server.endpoint()),
        "names the endpoint: {out}"
    );
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {out}"));
    assert!(
        names_an_object(error),
        "the error names the object: {error}"
    );
    assert!(out.stderr.contains("the next backup reuses them"), "{out}");
    assert!(
        out.stderr.contains("the backup did not finish")
            && out
                .stderr
                .contains("the store did not answer, which is not damage"),
        "{out}"
    );
    assert!(!out.stderr.contains("could not be opened"), "{out}");
    let uploaded = packs_on_server(&server, &repo);
    server.restart();
    // The failed backup could not remove its lock; its process is gone,
    // so the lock is stale, and the next command to take a lock (here
    // verify's) removes it.
    let locks = || server.objects(&repo.bucket, &format!("{}/locks", repo.prefix));
    assert_eq!(locks().len(), 1, "the lock is left behind: {:?}", locks());
    let v = repo.run(&["verify"]);
    assert_eq!(v.code, 0, "the repository is valid after the failure: {v}");
    assert!(locks().is_empty(), "{:?}", locks());
    let snaps = repo.run(&["snapshots", "--json"]).success().json();
    assert_eq!(
        snaps.as_array().unwrap().len(),
        0,
        "no snapshot of the failed run"
    );
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src);
    let rerun = run(&mut c, None).success();
    // The rerun reuses the packs the failed run knew were stored. A pack
    // the server finished while its response was lost is not among them
    // (gc removes it later), so `uploaded` is an upper bound.
    let reused: u64 = rerun
        .stderr
        .split("reusing ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the rerun reuses the uploads: {rerun}"));
    assert!(
        (1..=uploaded as u64).contains(&reused),
        "reused {reused} of {uploaded} objects: {rerun}"
    );
    // Only what was not uploaded before is uploaded now.
    let stored = rerun.json()["summary"]["bytes_stored"].as_u64().unwrap();
    assert!(
        stored < files * size as u64 - (reused - 1) * 1_000_000,
        "{rerun}"
    );
    repo.run(&["verify", "--read-data"]).success();
    let target = restore_latest(&repo);
    assert_same_contents(&src, &restored(&target, &src));
}

/// Whether `line` names a repository object: its kind and at least the
/// first 8 hex digits of its name.
fn names_an_object(line: &str) -> bool {
    ["pack ", "index ", "snapshot ", "lock ", "key "]
        .iter()
        .any(|kind| {
            line.match_indices(kind).any(|(i, _)| {
                let rest = &line[i + kind.len()..];
                rest.len() >= 8 && rest[..8].bytes().all(|b| b.is_ascii_hexdigit())
            })
        })
}

#[test]
fn a_server_answering_500_for_a_while_is_ridden_out() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut repo = S3Repo::new(&server, "flaky");
    repo.endpoint = proxy.endpoint();
    repo.retries = 10;
    let src = repo.scratch.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        write_random(&src.join(format!("f{i}")), 200 + i, 1_500_000);
    }
    init(&repo);
    // After 2 MB of uploads: cut every connection, then answer 500 to the
    // next 5 connections.
    proxy.fail_after(2_000_000, 5);
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src);
    let out = run(&mut c, None).success();
    // Requests cut at the trip are retried on new connections, which get
    // the 500s; how many of the five are used depends on how much of the
    // backup was still to send, and on connections opened just before the
    // trip, which are neither cut nor failed.
    assert!(proxy.failures() >= 1, "the proxy did fail requests");
    assert!(out.stderr.contains("retry"), "retries are reported: {out}");
    repo.run(&["verify", "--read-data"]).success();
    let target = restore_latest(&repo);
    assert_same_contents(&src, &restored(&target, &src));
}

/// The packs of `kind` ("Tree" or "Data") that `repo`'s index names.
fn packs_of_kind(server: &S3Server, repo: &S3Repo, kind: &str) -> Vec<String> {
    let mut packs = Vec::new();
    for table in server.objects(&repo.bucket, &format!("{}/index", repo.prefix)) {
        let name = table.file_name().unwrap().to_str().unwrap().to_string();
        let json = repo.run(&["cat", "index", &name]).success().json();
        for t in json.as_array().unwrap() {
            for e in t["entries"].as_array().unwrap() {
                let pack = e["pack"].as_str().unwrap().to_string();
                if e["kind"] == kind && !packs.contains(&pack) {
                    packs.push(pack);
                }
            }
        }
    }
    packs
}

/// A store that stops answering midway through a restore stops the
/// restore with one error saying so, whether it went while the trees
/// were read or the packs of data: not an error line for every file of
/// each pack it was reading (hundreds of small files each), nor a
/// folder's tree "cannot be read, left out" with the restore going on
/// into the outage. A run again, once the store answers, restores the
/// rest.
#[test]
fn a_store_going_down_mid_restore_is_one_error_not_one_per_file() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut repo = S3Repo::new(&server, "outage");
    init(&repo);
    let src = repo.scratch.path().join("src");
    for d in 0..10 {
        for f in 0..150 {
            write_random(&src.join(format!("d{d}/f{f}")), d * 1000 + f, 5_000);
        }
    }
    backup_json(&repo, &src);
    let trees = packs_of_kind(&server, &repo, "Tree");
    let data = packs_of_kind(&server, &repo, "Data");
    assert!(trees.len() == 1 && data.len() > 2, "{trees:?} {data:?}");
    repo.endpoint = proxy.endpoint();
    repo.retries = 1;
    // The store goes once the root's tree is read (each tree is a range
    // of the tree pack), or at the first read of a pack of data.
    for (pack, after) in [(&trees[0], 1), (&data[1], 0)] {
        proxy.refuse_gets(pack, after);
        let (target, out) = restore_into_scratch(&repo, &["restore", "latest", "--no-cache"]);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stderr.contains(
                "the store did not answer (which is not damage): the rest of the snapshot is \
                 not restored"
            ),
            "{out}"
        );
        assert!(!out.stderr.contains("cannot be read, left out"), "{out}");
        let errors = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count();
        assert!(errors <= 2, "{errors} error lines: {out}");
        proxy.heal();
        let (_, again) = restore_into_scratch(&repo, &["restore", "latest", "--no-cache"]);
        again.success();
        assert_same_contents(&src, &restored(&target, &src));
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn connections_caps_the_requests_in_flight() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut repo = S3Repo::new(&server, "connections");
    repo.endpoint = proxy.endpoint();
    let src = repo.scratch.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        write_random(&src.join(format!("f{i}")), 300 + i, 1_500_000);
    }
    init(&repo);
    let target = repo.scratch.path().join("restore");
    let steps: [(&str, Vec<&str>); 3] = [
        ("backup", vec!["--connections", "2", "backup"]),
        ("restore", vec!["--connections", "2", "restore", "latest"]),
        (
            "verify",
            vec!["--connections", "2", "verify", "--read-data"],
        ),
    ];
    for (what, args) in steps {
        proxy.clear_log();
        let mut c = repo.cmd(&args);
        match what {
            "backup" => c.arg(&src),
            "restore" => c.arg("--target").arg(&target),
            _ => &mut c,
        };
        run(&mut c, None).success();
        let requests = proxy.requests().len();
        assert!(requests > 12, "{what}: only {requests} requests");
        assert!(
            proxy.max_in_flight() <= 2,
            "{what}: {} requests in flight with --connections 2",
            proxy.max_in_flight()
        );
    }
    assert_same_contents(&src, &restored(&target, &src));
    // The same verify with more connections does overlap more requests,
    // so the proxy would have seen a broken limit.
    proxy.clear_log();
    repo.run(&["--connections", "8", "verify", "--read-data"])
        .success();
    assert!(proxy.max_in_flight() > 2, "{}", proxy.max_in_flight());
}

#[test]
fn restore_reads_around_a_damaged_index_entry() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "indexentry");
    let src = repo.scratch.path().join("src");
    make_source(&src, 21);
    init(&repo);
    backup_json(&repo, &src);
    // The largest blob's entry gets a flipped bit in its length; the
    // table's MAC is left as it was.
    let tables = repo.run(&["cat", "index"]).success().json();
    let (blob, length) = tables
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["entries"].as_array().unwrap().iter())
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["length"].as_u64().unwrap(),
            )
        })
        .max_by_key(|(_, len)| *len)
        .unwrap();
    let damaged = server
        .objects(&repo.bucket, &format!("{}/index", repo.prefix))
        .iter()
        .filter(|t| damage_index_entry_length(t, &blob, length))
        .count();
    assert_eq!(damaged, 1);
    // Read from the store, not from the cache's good copy: the restore
    // fetches ranges, finds the blob will not open, and takes it from
    // where the pack's header puts it.
    let (target, out) = restore_into_scratch(&repo, &["--no-cache", "restore", "latest"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("the index is damaged"), "{out}");
    assert!(
        out.stderr.contains(&format!("blob {}", &blob[..8])),
        "{out}"
    );
    assert_same_contents(&src, &restored(&target, &src));
}

#[test]
fn restore_fetches_ranges_not_whole_packs() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut repo = S3Repo::new(&server, "ranges");
    repo.endpoint = proxy.endpoint();
    let src = repo.scratch.path().join("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big.bin"), 11, 6_000_000);
    write(&src.join("small.txt"), "just these bytes\n");
    let mut args = vec!["init"];
    args.extend_from_slice(FAST_INIT);
    args.extend_from_slice(&["--pack-size", "16M"]);
    repo.run(&args).success();
    backup_json(&repo, &src);
    let mut packs = server.objects(&repo.bucket, &format!("{}/packs", repo.prefix));
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let biggest = fs::metadata(packs.last().unwrap()).unwrap().len();
    assert!(biggest > 5_000_000, "one big data pack: {packs:?}");

    proxy.clear_log();
    let (target, out) =
        restore_into_scratch(&repo, &["restore", "latest", "--include", "**/small.txt"]);
    out.success();
    let got = fs::read(restored(&target, &src).join("small.txt")).unwrap();
    assert_eq!(got, b"just these bytes\n");
    assert!(!restored(&target, &src).join("big.bin").exists());
    let reqs = proxy.requests();
    let pack_reads: Vec<_> = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.target.contains("/packs/"))
        .collect();
    assert!(!pack_reads.is_empty(), "{reqs:#?}");
    assert!(
        pack_reads.iter().all(|r| r.range.is_some()),
        "every pack read is a range read: {pack_reads:#?}"
    );
    let fetched: u64 = pack_reads.iter().map(|r| r.answered).sum();
    assert!(
        fetched < 100_000,
        "{fetched} bytes of packs fetched for a 17 byte file (pack: {biggest} bytes)"
    );
}

#[test]
fn a_server_that_stops_answering_is_timed_out_and_retried() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut repo = S3Repo::new(&server, "stall");
    repo.endpoint = proxy.endpoint();
    repo.retries = 6;
    let src = repo.scratch.path().join("src");
    make_source(&src, 12);
    init(&repo);
    // The first three requests of the backup get no answer at all.
    proxy.stall_next(3);
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src).env("CAIRN_S3_TIMEOUT", "1s");
    let out = run(&mut c, None).success();
    assert_eq!(proxy.stalled(), 3);
    assert!(
        out.stderr.contains("no answer within 1 s"),
        "the deadline is reported: {out}"
    );
    assert!(out.stderr.contains("retry 1"), "{out}");
    repo.run(&["verify", "--read-data"]).success();
    let target = restore_latest(&repo);
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn gc_refuses_while_a_backup_holds_its_lock() {
    use std::io::Write;

    let server = S3Server::start();
    let repo = S3Repo::new(&server, "gc-vs-backup");
    init(&repo);
    // A backup of standard input that is still reading it.
    let mut child = repo.start_stdin_backup(&server, &[]);
    let mut stdin = child.stdin.take().unwrap();
    let first = common::random_bytes(21, 500_000);
    stdin.write_all(&first).unwrap();
    let locks = || server.objects(&repo.bucket, &format!("{}/locks", repo.prefix));
    // Locks are objects: gc sees the backup's and refuses.
    let gc = repo.run(&["gc", "--lock-wait", "0"]);
    assert_eq!(gc.code, 11, "{gc}");
    assert!(gc.stderr.contains("lock held by `backup`"), "{gc}");
    assert!(
        gc.stderr.contains(&format!("pid {}", child.id())),
        "names the holder: {gc}"
    );
    // gc left no lock of its own; the backup goes on and finishes.
    assert_eq!(locks().len(), 1, "{:?}", locks());
    let rest = common::random_bytes(22, 300_000);
    stdin.write_all(&rest).unwrap();
    drop(stdin);
    finish_backup(child);
    assert!(locks().is_empty(), "{:?}", locks());
    repo.run(&["gc"]).success();
    repo.run(&["verify", "--read-data"]).success();
    let target = restore_latest(&repo);
    let got = fs::read(target.join("dump.sql")).unwrap();
    assert!(got.len() == 800_000 && got[..500_000] == first[..] && got[500_000..] == rest[..]);
}

#[test]
fn two_inits_on_one_prefix_at_once_leave_one_repository() {
    let server = S3Server::start();
    for round in 0..12 {
        let mut repo = S3Repo::new(&server, "init-race");
        repo.prefix = format!("round{round}");
        let passwords = ["first password", "second password"];
        let children: Vec<_> = passwords
            .iter()
            .map(|pw| {
                let mut args = vec!["init"];
                args.extend_from_slice(FAST_INIT);
                let mut c = repo.cmd(&args);
                c.env("CAIRN_PASSWORD", pw);
                std::thread::spawn(move || run(&mut c, None))
            })
            .collect();
        let outs: Vec<Out> = children.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<usize> = (0..2).filter(|&i| outs[i].code == 0).collect();
        let shown: Vec<String> = outs.iter().map(Out::to_string).collect();
        assert!(winners.len() <= 1, "at most one init succeeds: {shown:#?}");
        for (i, out) in outs.iter().enumerate() {
            if !winners.contains(&i) {
                assert!(
                    out.stderr.contains("already a repository")
                        || out.stderr.contains("at the same time"),
                    "{out}"
                );
            }
        }
        // Both may give way; then nothing is left behind and init again
        // succeeds.
        let winner = match winners.first() {
            Some(&w) => w,
            None => {
                let keys = server.objects(&repo.bucket, &format!("{}/keys", repo.prefix));
                assert!(keys.is_empty(), "{keys:?}");
                let mut args = vec!["init"];
                args.extend_from_slice(FAST_INIT);
                let mut c = repo.cmd(&args);
                c.env("CAIRN_PASSWORD", passwords[0]);
                run(&mut c, None).success();
                0
            }
        };
        // The winner's password opens it; the loser left no key behind.
        let mut c = repo.cmd(&["snapshots"]);
        c.env("CAIRN_PASSWORD", passwords[winner]);
        run(&mut c, None).success();
        let keys = server.objects(&repo.bucket, &format!("{}/keys", repo.prefix));
        assert_eq!(keys.len(), 1, "{keys:?}");
    }
}

#[test]
fn index_tables_are_fetched_once_each_without_asking_their_size() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut repo = S3Repo::new(&server, "indexfetch");
    repo.endpoint = proxy.endpoint();
    let src = repo.scratch.path().join("src");
    init(&repo);
    // Each backup of new content writes index tables of its own.
    for seed in 0..4 {
        make_source(&src.join(format!("part{seed}")), 40 + seed);
        backup_json(&repo, &src);
    }
    let tables = server.objects(&repo.bucket, &format!("{}/index", repo.prefix));
    // A table of trees and one of chunks each.
    assert_eq!(tables.len(), 8, "{tables:?}");

    // A host with an empty cache opens the index: one listing, then one
    // download per table, and no request for a table's size.
    proxy.clear_log();
    let (target, out) = restore_into_scratch(&repo, &["--no-cache", "restore", "latest"]);
    out.success();
    assert_same_contents(&src, &restored(&target, &src));
    let reqs = proxy.requests();
    let index: Vec<_> = reqs
        .iter()
        .filter(|r| r.target.contains("/index/"))
        .collect();
    assert!(
        index.iter().all(|r| r.method == "GET" && r.range.is_none()),
        "index tables are downloaded whole, never asked for their size: {index:#?}"
    );
    for table in &tables {
        let name = table.file_name().unwrap().to_str().unwrap();
        let gets = index.iter().filter(|r| r.target.ends_with(name)).count();
        assert_eq!(gets, 1, "table {name} fetched {gets} times: {index:#?}");
    }
}

/// A repository of format 3 on S3 (the checked-in fixture, put in the
/// server's store as objects) is upgraded to format 4: its config object
/// is replaced, its snapshot still restores, and a backup into it works.
#[test]
fn an_older_repository_on_s3_is_upgraded() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "upgrade");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v3"),
        &server.data().join(&repo.bucket).join(&repo.prefix),
    );
    let cmd = |args: &[&str]| {
        let mut c = repo.cmd(args);
        c.env("CAIRN_PASSWORD", "fixture password");
        run(&mut c, None)
    };
    assert_eq!(cmd(&["cat", "config"]).success().json()["version"], 3);
    let done = cmd(&["upgrade", "--json"]).success().json();
    assert_eq!(done["upgraded"], true, "{done}");
    assert_eq!(
        cmd(&["cat", "config"]).success().json()["version"],
        cairn::repo::config::VERSION
    );

    let target = repo.scratch.path().join("old");
    cmd(&["restore", "latest", "--target", target.to_str().unwrap()]).success();
    assert_eq!(
        fs::read(target.join("tmp/cairn-fixture-src/hello.txt")).unwrap(),
        b"hello, cairn\n"
    );
    let src = repo.scratch.path().join("src");
    make_source(&src, 77);
    cmd(&["backup", src.to_str().unwrap()]).success();
    let new = repo.scratch.path().join("new");
    cmd(&["restore", "latest", "--target", new.to_str().unwrap()]).success();
    assert_same_tree(&src, &restored(&new, &src));
    cmd(&["verify", "--read-data"]).success();
}

#[test]
fn a_pack_changed_on_the_way_is_refused_and_sent_again() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut repo = S3Repo::new(&server, "damaged-upload");
    repo.endpoint = proxy.endpoint();
    let src = repo.scratch.path().join("src");
    make_source(&src, 60);
    init(&repo);
    // One byte of the first pack's body changes between cairn and the
    // store: the store refuses it (BadDigest), and the retry sends the
    // bytes again, unchanged.
    proxy.corrupt_puts(1, "/packs/");
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src);
    let out = run(&mut c, None).success();
    assert_eq!(proxy.corrupted(), 1);
    assert!(
        out.stderr.contains("BadDigest"),
        "the retry says why: {out}"
    );
    assert!(out.stderr.contains("retry 1"), "{out}");
    repo.run(&["verify", "--read-data"]).success();
    let target = restore_latest(&repo);
    assert_same_contents(&src, &restored(&target, &src));
}

#[test]
fn packs_changed_on_every_try_fail_the_backup_without_a_snapshot() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut repo = S3Repo::new(&server, "damaged-link");
    repo.endpoint = proxy.endpoint();
    repo.retries = 3;
    let src = repo.scratch.path().join("src");
    make_source(&src, 61);
    init(&repo);
    proxy.corrupt_puts(u64::MAX, "/packs/");
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src);
    let out = run(&mut c, None);
    assert_ne!(out.code, 0, "{out}");
    assert!(proxy.corrupted() >= 3, "every try was changed: {out}");
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {out}"));
    assert!(error.contains("BadDigest"), "names the bad digest: {error}");
    assert!(error.contains("changed on the way"), "{error}");
    assert!(names_an_object(error), "names the pack: {error}");
    let snapshots = server.objects(&repo.bucket, &format!("{}/snapshots", repo.prefix));
    assert!(snapshots.is_empty(), "no snapshot: {snapshots:?}");
    proxy.corrupt_puts(0, "");
    let snaps = repo.run(&["snapshots", "--json"]).success().json();
    assert_eq!(snaps.as_array().unwrap().len(), 0);
}

/// A snapshot whose upload the store refuses on every try (its bytes
/// changed on the way each time) fails the backup, which says the
/// snapshot may be there all the same where only an answer was lost,
/// and how to tell.
#[test]
fn a_snapshot_upload_that_fails_every_try_says_it_may_be_there() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut repo = S3Repo::new(&server, "snapshot-upload");
    repo.endpoint = proxy.endpoint();
    repo.retries = 3;
    let src = repo.scratch.path().join("src");
    make_source(&src, 62);
    init(&repo);
    proxy.corrupt_puts(u64::MAX, "/snapshots/");
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src);
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("the store did not answer its snapshot's upload")
            && out.stderr.contains("may be in the repository all the same")
            && out.stderr.contains("`cairn snapshots` says"),
        "{out}"
    );
    proxy.corrupt_puts(0, "");
    assert_eq!(
        repo.run(&["snapshots", "--json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// A lock is stale only once the store's clock agrees it is old: a
/// backup whose host's clock lags 31 minutes
/// (`CAIRN_LOCK_TEST=clock-lag=1860` writes its lock's time that far
/// back) holds the repository against gc, since the listing says the
/// store wrote its lock a moment ago. With the object's time moved back
/// as well, gc takes the lock for stale, and removes it before going on.
#[test]
fn a_lock_from_a_host_whose_clock_lags_holds_against_gc() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "lagging-clock");
    init(&repo);
    let mut child = repo.start_stdin_backup(&server, &[("CAIRN_LOCK_TEST", "clock-lag=1860")]);
    let locks = || server.objects(&repo.bucket, &format!("{}/locks", repo.prefix));

    let gc = repo.run(&["gc", "--lock-wait", "0"]);
    assert_eq!(gc.code, 11, "{gc}");
    assert!(gc.stderr.contains("lock held by `backup`"), "{gc}");
    assert!(
        gc.stderr
            .contains("that host's clock is about 31 minutes behind this host's"),
        "{gc}"
    );

    let lock = locks().pop().unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(31 * 60);
    let file = fs::File::options().write(true).open(&lock).unwrap();
    file.set_modified(old).unwrap();
    drop(file);
    let mut gc = repo.cmd(&["gc", "--lock-wait", "0"]);
    let gc = run(gc.env("CAIRN_LOCK_TEST", "settle=0"), None).success();
    assert!(
        gc.stderr
            .contains("removed a stale lock: shared lock held by `backup`"),
        "{gc}"
    );
    assert!(locks().is_empty(), "{:?}", locks());

    child.kill().unwrap();
    child.wait().unwrap();
    let u = repo.run(&["unlock"]).success();
    assert!(u.stdout.contains("0 lock(s) removed"), "{u}");
}

/// The metadata cache of an S3 repository (its folder in the cache),
/// kept under the folder backed up (the default cache is in the home
/// directory), is left out of the snapshot with a note, as a local
/// repository's own folder is.
#[test]
fn the_metadata_cache_is_not_backed_up() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "own-cache");
    init(&repo);
    let home = repo.scratch.path();
    make_source(&home.join("src"), 1);
    let first = backup_json(&repo, &home.join("src"));
    let cache = repo.cache_dir();
    assert!(cache.is_dir(), "the cache is in the folder backed up");

    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(home);
    let out = run(&mut c, None).success();
    assert!(
        out.stderr.contains("it is the repository's metadata cache"),
        "{out}"
    );
    // The repository's folder in the cache is left out; the cache's
    // `CACHEDIR.TAG` beside it is not cairn's to hide.
    let ls = repo.run(&["ls", "latest"]).success();
    let cache_abs = abs(&cache);
    let cached: Vec<&str> = ls
        .stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{cache_abs}/")))
        .collect();
    assert_eq!(
        cached,
        [format!("{cache_abs}/CACHEDIR.TAG")],
        "nothing of the repository's cache is in the snapshot:\n{ls}"
    );
    assert!(ls.stdout.contains("/src/big.bin"), "{ls}");
    let total = out.json()["summary"]["total_bytes"].as_u64().unwrap();
    let tag = fs::metadata(cache.join("CACHEDIR.TAG")).unwrap().len();
    assert_eq!(
        total,
        first["summary"]["total_bytes"].as_u64().unwrap() + tag,
        "the snapshot holds the source's bytes and the tag, no more"
    );
}

/// A metadata cache that cannot be made (a read-only home, a home that
/// does not exist) costs speed, not the restore: it reads everything from
/// the store, and says so.
#[test]
fn a_cache_that_cannot_be_made_does_not_stop_a_restore() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "no-cache-dir");
    init(&repo);
    let src = repo.scratch.path().join("src");
    make_source(&src, 3);
    backup_json(&repo, &src);
    let target = repo.scratch.path().join("target");
    let mut c = repo.cmd(&["restore", "latest", "--target"]);
    c.arg(&target).env("CAIRN_CACHE_DIR", "/dev/null/cache");
    let out = run(&mut c, None).success();
    assert!(
        out.stderr.contains("no metadata cache") && out.stderr.contains("/dev/null/cache"),
        "{out}"
    );
    assert_same_contents(&src, &restored(&target, &src));
}

/// A data pack cut short in the bucket: the next backup stores again what
/// lay past the cut (exit 3, naming the pack), and its snapshot restores
/// whole, the blobs before the cut read one by one where the range of
/// several that reached past it failed. The range failed whole, and with
/// it the intact blobs, though the backup had said its snapshot was whole.
#[test]
fn a_pack_cut_short_in_the_bucket_costs_the_restore_nothing() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "cut");
    init(&repo);
    let src = repo.scratch.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        write_random(&src.join(format!("f{i}")), 40 + i, 20_000);
    }
    backup_json(&repo, &src);
    let mut packs = server.objects(&repo.bucket, &format!("{}/packs", repo.prefix));
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let data = packs.last().unwrap().clone();
    let len = fs::metadata(&data).unwrap().len();
    assert!(len > 100_000, "one data pack of the six files: {packs:?}");
    fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let name = data.file_name().unwrap().to_str().unwrap().to_string();

    write_random(&src.join("new"), 50, 20_000);
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src);
    let out = run(&mut c, None);
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "pack {}, which the index names, is cut short",
            &name[..8]
        )),
        "{out}"
    );
    let target = restore_latest(&repo);
    assert_same_contents(&src, &restored(&target, &src));
}
