//! End-to-end scenarios against a real S3 server (s3s-fs on 127.0.0.1):
//! every command on an `s3://` repository, dedup, forget + gc, verify with
//! a damaged object, concurrent backups, the metadata cache, and faults
//! (the server stopped mid-backup, a proxy answering 500 for a while).

mod common;
mod s3support;

use std::fs;
use std::path::Path;

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

    let target = repo.scratch.path().join("restore");
    let mut c = repo.cmd(&["restore", "latest", "--target"]);
    c.arg(&target);
    run(&mut c, None).success();
    assert_same_tree(&src, &restored(&target, &src));

    let v = repo.run(&["verify", "--read-data"]).success();
    assert!(v.stdout.contains("no errors"), "{v}");

    // Second snapshot, forget the first, gc, everything still restores.
    write_random(&src.join("big.bin"), 99, 2_000_000);
    backup_json(&repo, &src);
    repo.run(&["forget", &id]).success();
    let gc = repo.run(&["gc"]).success();
    assert!(!gc.stdout.is_empty(), "{gc}");
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
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("bucket name"), "{out}");
    let mut c = repo.cmd(&["snapshots"]);
    c.env_remove("AWS_SECRET_ACCESS_KEY");
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("AWS_SECRET_ACCESS_KEY"), "{out}");
}

#[test]
fn credentials_never_appear_in_output_or_the_repository() {
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "secrets");
    let src = repo.scratch.path().join("src");
    make_source(&src, 2);
    let mut outputs = vec![init(&repo)];
    let mut c = repo.cmd(&["backup", "-v"]);
    c.arg(&src);
    outputs.push(run(&mut c, None));
    let mut c = repo.cmd(&["snapshots"]);
    c.env("AWS_SECRET_ACCESS_KEY", "not-the-secret-4711");
    let denied = run(&mut c, None);
    assert_ne!(denied.code, 0, "{denied}");
    assert!(denied.stderr.contains(&server.endpoint()), "{denied}");
    outputs.push(denied);
    let mut c = repo.cmd(&["snapshots"]);
    c.env("CAIRN_S3_ENDPOINT", "http://127.0.0.1:1");
    let unreachable = run(&mut c, None);
    assert_ne!(unreachable.code, 0, "{unreachable}");
    assert!(unreachable.stderr.contains("127.0.0.1:1"), "{unreachable}");
    outputs.push(unreachable);
    for o in &outputs {
        for secret in [SECRET_KEY, "not-the-secret-4711"] {
            assert!(
                !o.stdout.contains(secret) && !o.stderr.contains(secret),
                "{o}"
            );
        }
    }
    for f in server
        .objects(&repo.bucket, "")
        .iter()
        .chain(walk(&repo.cache_dir()).iter())
    {
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
    let target = repo.scratch.path().join("restore");
    let mut c = repo.cmd(&["restore", "latest", "--target"]);
    c.arg(&target);
    run(&mut c, None).success();
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
    let target = repo.scratch.path().join("restore");
    let mut c = repo.cmd(&["restore", "latest", "--target"]);
    c.arg(&target);
    let r = run(&mut c, None);
    assert_ne!(r.code, 0, "restore reports the damaged file: {r}");
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
        let mut c = repo.cmd(&["restore", "latest", "--path", &path, "--target"]);
        c.arg(&target);
        let out = run(&mut c, None);
        if out.code != 0 {
            // Older restore syntax: pick the snapshot by its paths instead.
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
        }
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
    for i in 0..12 {
        write_random(&src.join(format!("f{i}")), 100 + i, 1_500_000);
    }
    init(&repo);
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src);
    let child = std::thread::spawn(move || run(&mut c, None));
    // Stop the server once some packs have arrived.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while packs_on_server(&server, &repo) < 3 {
        assert!(std::time::Instant::now() < deadline, "no packs uploaded");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.stop();
    let out = child.join().unwrap();
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&server.endpoint()),
        "names the endpoint: {out}"
    );
    assert!(out.stderr.contains("error:"), "{out}");
    assert!(out.stderr.contains("the next backup reuses them"), "{out}");
    let uploaded = packs_on_server(&server, &repo);
    server.restart();
    let v = repo.run(&["verify"]);
    assert_eq!(v.code, 0, "the repository is valid after the failure: {v}");
    let snaps = repo.run(&["snapshots", "--json"]).success().json();
    assert_eq!(
        snaps.as_array().unwrap().len(),
        0,
        "no snapshot of the failed run"
    );
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src);
    let rerun = run(&mut c, None).success();
    assert!(
        rerun.stderr.contains("reusing"),
        "the rerun reuses the uploads: {rerun}"
    );
    // Only what was not uploaded before is uploaded now.
    let stored = rerun.json()["summary"]["bytes_stored"].as_u64().unwrap();
    assert!(
        stored < 18_000_000 - (uploaded as u64 - 1) * 1_000_000,
        "{rerun}"
    );
    repo.run(&["verify", "--read-data"]).success();
    let target = repo.scratch.path().join("restore");
    let mut c = repo.cmd(&["restore", "latest", "--target"]);
    c.arg(&target);
    run(&mut c, None).success();
    assert_same_contents(&src, &restored(&target, &src));
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
    assert!(proxy.failures() >= 5, "the proxy did fail requests");
    assert!(out.stderr.contains("retry"), "retries are reported: {out}");
    repo.run(&["verify", "--read-data"]).success();
    let target = repo.scratch.path().join("restore");
    let mut c = repo.cmd(&["restore", "latest", "--target"]);
    c.arg(&target);
    run(&mut c, None).success();
    assert_same_contents(&src, &restored(&target, &src));
}
