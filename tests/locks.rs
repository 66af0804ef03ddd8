//! Locks and concurrency through the real binary: backups side by side,
//! gc refusing or waiting while a backup runs (also from a pid namespace
//! of its own on the same host), `unlock` removing the locks of dead
//! processes (and, forced, of live ones), staleness after 30
//! minutes by the lock's time and by the store's clock, refreshing, a backup whose lock was lost or expired failing
//! without publishing anything, and lock files a crash left empty or torn
//! (lock files are not fsynced) blocking nothing, while one of a newer
//! cairn holds. `CAIRN_LOCK_TEST` (src/fault.rs) stands in
//! for the minutes that would otherwise pass.

mod common;
mod support_maint;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use cairn::backend::local::LocalBackend;
use cairn::repo::lock::{self, LockInfo};
use common::*;
use serde_json::Value;
use support_maint::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Lock files are written atomically but not fsynced: a power loss may
/// leave one empty or torn under its final name. Its holder died in the
/// same crash, so such a file must block nobody, exclusive or shared;
/// `unlock` removes an empty one, `unlock --force` a torn one.
#[test]
fn lock_files_a_crash_left_empty_or_torn_block_nothing() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 61, &[("f", 150_000)]);
    let first = backup_saved(&repo, &src, &[]);
    let locks = repo.path.join("locks");
    write(&locks.join("ab".repeat(32)), b"");
    write(
        &locks.join("cd".repeat(32)),
        b"CAIRNLCK\x01\x00\x00\x00torn",
    );
    fill(&src, 62, &[("g", 150_000)]);
    let second = backup_saved(&repo, &src, &[]);
    repo.run(&["forget", &first.id]).success();
    let out = repo.run(&["gc"]).success();
    assert!(out.stdout.contains("packs deleted"), "{out}");
    assert_restores(&repo, &second);
    // verify names them (it passed over them in silence), and fails
    // nothing for them.
    let v = assert_verify_ok(&repo);
    for name in ["ab".repeat(32), "cd".repeat(32)] {
        let said = v["warnings"].as_array().unwrap().iter().any(|w| {
            w["object"] == format!("lock {}", &name[..8])
                && w["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("holds no lock (it does not decode: empty, torn, or sealed")
        });
        assert!(said, "{v:#}");
    }

    // Nothing else ever removes them: `unlock` removes the empty one, all
    // a power cut leaves of a lock file (one a cut, which only --force
    // removed), and names the others; `unlock --force` removes them.
    // Before, both passed over them in silence.
    let garbage = locks.join("ef".repeat(32));
    write(&garbage, b"garbage\n");
    let out = repo.run(&["unlock"]).success();
    for name in ["cd".repeat(32), "ef".repeat(32)] {
        let left = format!("left lock file locks/{name}, which holds no lock");
        assert!(out.stdout.contains(&left), "{out}");
    }
    assert!(
        out.stdout.contains(&format!(
            "removed lock file locks/{}, which is empty",
            "ab".repeat(32)
        )) && out
            .stdout
            .contains("0 lock(s) removed, and 1 lock file(s) that held none"),
        "{out}"
    );
    assert!(
        out.stdout.contains("`cairn unlock --force` removes it"),
        "{out}"
    );
    assert_eq!(lock_files(&repo).len(), 2);
    let out = repo.run(&["unlock", "--force"]).success();
    assert!(
        out.stdout.contains(&format!(
            "removed lock file locks/{}, which holds no lock",
            "ef".repeat(32)
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("0 lock(s) removed, and 2 lock file(s) that held none"),
        "{out}"
    );
    assert!(lock_files(&repo).is_empty());
}

/// A lock file of a later format, as a newer cairn on another host
/// would write while it backs up, holds as an exclusive lock: gc and a
/// backup are refused, naming it, and `unlock` leaves it; once the store
/// dates it older than 30 minutes it is stale, and gc runs. `unlock
/// --force` removes a fresh one.
#[test]
fn a_lock_file_of_a_newer_cairn_holds_until_it_is_stale() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 63, &[("f", 150_000)]);
    let first = backup_saved(&repo, &src, &[]);
    let newer = repo.path.join("locks").join("ef".repeat(32));
    write(&newer, b"CAIRNLCK\x02\x00\x00\x00sealed by a newer cairn");
    for args in [&["gc"][..], &["backup", src.to_str().unwrap()]] {
        let out = repo.run(args);
        assert_eq!(out.code, 11, "{args:?}: {out}");
        assert!(
            out.stderr.contains(
                "a lock file of a newer cairn (format version 2; this cairn reads 1), written "
            ),
            "{args:?}: {out}"
        );
    }
    let out = repo.run(&["unlock"]).success();
    assert!(out.stdout.contains("0 lock(s) removed"), "{out}");
    assert!(newer.exists());

    let old = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 31 * 60;
    set_mtime(&newer, old, 0);
    run_settled(&repo, &["forget", &first.id]).success();
    assert!(!newer.exists(), "taken for stale, it is removed");
    repo.run(&["gc", "--delete-all"]).success();

    write(&newer, b"CAIRNLCK\x02\x00\x00\x00sealed by a newer cairn");
    assert_eq!(repo.run(&["gc"]).code, 11);
    let out = run_settled(&repo, &["unlock", "--force"]).success();
    assert!(out.stdout.contains("1 lock(s) removed"), "{out}");
    assert!(
        out.stdout.contains("removed a lock file of a newer cairn"),
        "{out}"
    );
    assert!(!newer.exists());
    repo.run(&["gc"]).success();
}

/// Every file of the repository but its lock files, with its size.
fn repository_files(repo: &Repo) -> std::collections::BTreeMap<PathBuf, u64> {
    fn walk(dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, u64>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                if e.file_name() != "locks" {
                    walk(&e.path(), out);
                }
            } else {
                out.insert(e.path(), md.len());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(&repo.path, &mut out);
    out
}

/// gc, `repair index` and `repair snapshots` whose lock has expired (a
/// process suspended for 40 minutes, or one whose lock `unlock --force`
/// removed: another gc may have deleted packs meanwhile) write nothing:
/// no pack, no index table naming packs that may be gone, no snapshot.
/// Before, gc and `repair index` wrote their tables and only then found
/// the lock expired, and `repair snapshots` never looked.
#[test]
fn maintenance_whose_lock_expired_writes_nothing() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 81, &[("a", 1_500_000), ("b", 1_500_000)]);
    let first = backup_saved(&repo, &src, &[]);
    fill(&src, 82, &[("a", 1_500_000)]);
    let second = backup_saved(&repo, &src, &[]);
    repo.run(&["forget", &first.id]).success();
    let expired = |args: &[&str], stopped: &str| {
        let before = repository_files(&repo);
        let mut c = repo.cmd(args);
        c.env("CAIRN_LOCK_TEST", "age=2400");
        let out = run(&mut c, None);
        assert_ne!(out.code, 0, "{args:?}: {out}");
        assert!(out.stderr.contains(stopped), "{args:?}: {out}");
        assert_eq!(repository_files(&repo), before, "{args:?} wrote: {out}");
    };
    expired(&["gc", "--max-unused", "0"], "gc stopped");
    expired(&["repair", "index"], "the old index tables are kept");
    let out = repo.run(&["gc", "--max-unused", "0"]).success();
    assert!(out.stdout.contains("packs deleted"), "{out}");

    // A lost pack for `repair snapshots` to write a copy without.
    let lost = index_map(&repo)
        .into_values()
        .map(|l| l.pack)
        .find(|p| pack_files(&repo).contains_key(p))
        .unwrap();
    fs::remove_file(&pack_files(&repo)[&lost]).unwrap();
    expired(&["repair", "snapshots"], "nothing published");
    repo.run(&["repair", "snapshots"]).success();
    assert_eq!(snapshot_ids(&repo).len(), 2);
    assert!(snapshot_ids(&repo).contains(&second.id));
}

/// The lock files (hex names) in the repository.
fn lock_files(repo: &Repo) -> Vec<PathBuf> {
    names_in(repo, "locks")
        .into_iter()
        .filter(|n| n.len() == 64)
        .map(|n| repo.path.join("locks").join(n))
        .collect()
}

/// Starts `cairn backup --stdin --stdin-filename NAME --json` with its
/// standard input kept open; returns once it holds its lock.
fn start_stdin_backup(repo: &Repo, name: &str) -> (Child, ChildStdin, PathBuf) {
    start_stdin_backup_with(repo, name, None)
}

/// Like [`start_stdin_backup`], with `CAIRN_LOCK_TEST` set to `knobs`.
fn start_stdin_backup_with(
    repo: &Repo,
    name: &str,
    knobs: Option<&str>,
) -> (Child, ChildStdin, PathBuf) {
    assert!(lock_files(repo).is_empty());
    let mut cmd = repo.cmd(&["backup", "--stdin", "--stdin-filename", name, "--json"]);
    if let Some(k) = knobs {
        cmd.env("CAIRN_LOCK_TEST", k);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    wait_for("the backup's lock", LIMIT, || !lock_files(repo).is_empty());
    let locks = lock_files(repo);
    assert_eq!(locks.len(), 1);
    (child, stdin, locks[0].clone())
}

/// The packs the index names.
fn index_packs(repo: &Repo) -> std::collections::BTreeSet<String> {
    index_map(repo).into_values().map(|l| l.pack).collect()
}

/// The packs no index names (a running backup's, or leftovers), by name.
fn unindexed_packs(repo: &Repo) -> std::collections::BTreeMap<String, PathBuf> {
    let indexed = index_packs(repo);
    pack_files(repo)
        .into_iter()
        .filter(|(p, _)| !indexed.contains(p))
        .collect()
}

/// Some garbage for gc: a snapshot of its own, forgotten.
fn make_garbage(repo: &Repo) {
    let old = repo.scratch("old");
    fill(&old, 50, &[("x", 600_000), ("y", 300_000)]);
    let s = backup_saved(repo, &old, &[]);
    repo.run(&["forget", &s.id]).success();
}

#[test]
fn gc_refuses_then_waits_while_a_backup_holds_its_lock() {
    let repo = packed_repo();
    make_garbage(&repo);
    let data = random_bytes(51, 5_000_000);
    let packs_before = pack_files(&repo).len();
    let (backup, mut stdin, _) = start_stdin_backup(&repo, "x");

    // The first part of the input: the backup writes packs that no index
    // names yet (it writes its index table at the end). A gc now would see
    // them as an interrupted backup's leftovers.
    stdin.write_all(&data[..4_000_000]).unwrap();
    stdin.flush().unwrap();
    wait_for("a pack of the running backup", LIMIT, || {
        pack_files(&repo).len() > packs_before
    });

    // gc without waiting: refused, naming the holder.
    let out = repo.run(&["gc"]);
    assert_eq!(out.code, 11, "{out}");
    assert!(out.stderr.contains("backup"), "holder not named:\n{out}");
    assert!(out.stderr.contains("locked"), "{out}");
    assert!(out.stderr.contains("wait with --lock-wait"), "{out}");
    assert!(out.stderr.contains("`cairn unlock --force`"), "{out}");
    // Having waited, it says for how long, not to wait.
    let out = repo.run(&["gc", "--lock-wait", "1s"]);
    assert_eq!(out.code, 11, "{out}");
    assert!(out.stderr.contains("(waited 1.0 s;"), "{out}");
    // A dry run only reads and takes a shared lock: it runs, and reports
    // the backup's packs apart from the garbage: they are in no index yet,
    // but the backup holds a live lock.
    let theirs: Vec<String> = unindexed_packs(&repo).into_keys().collect();
    assert!(!theirs.is_empty());
    let out = repo.run(&["gc", "--dry-run", "--json"]).success();
    let plan = out.json();
    assert_eq!(plan["dry_run"], true, "{out}");
    let listed = |field: &str| -> Vec<String> {
        let mut v: Vec<String> = plan[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let in_progress = listed("in_progress");
    assert!(
        theirs.iter().all(|p| in_progress.contains(p)),
        "the backup's packs {theirs:?} are not all reported in progress:\n{out}"
    );
    assert!(!listed("delete").is_empty(), "the garbage is still garbage");
    assert!(
        listed("delete").iter().all(|p| !theirs.contains(p)),
        "{out}"
    );
    let out = repo.run(&["gc", "--dry-run"]).success();
    assert!(
        out.stdout
            .contains("packs not in the index (a backup may be writing them)"),
        "{out}"
    );
    // verify beside it says the same of them, not that they are leftovers
    // for gc or an index table lost.
    let out = repo.run(&["verify"]).success();
    for pack in &theirs {
        assert!(
            out.stdout.contains(&format!(
                "warning: pack {}: not in the index: a backup running beside this check may \
                 be writing it",
                &pack[..8]
            )),
            "{out}"
        );
    }
    assert!(
        !out.stdout.contains("left by an interrupted backup"),
        "{out}"
    );

    // gc with --lock-wait waits for the backup.
    let mut gc = repo
        .cmd(&["gc", "--lock-wait", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = gc.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let line = rx.recv_timeout(LIMIT).expect("gc says it is waiting");
    assert!(
        line.contains("waiting for the repository") && line.contains("backup"),
        "{line}"
    );
    assert!(gc.try_wait().unwrap().is_none(), "gc did not wait");

    // The backup finishes; then gc runs.
    stdin.write_all(&data[4_000_000..]).unwrap();
    drop(stdin);
    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = snap["id"].as_str().unwrap().to_string();
    let status = gc.wait().unwrap();
    let gc_err = reader.join().unwrap();
    let mut gc_out = String::new();
    std::io::Read::read_to_string(&mut gc.stdout.take().unwrap(), &mut gc_out).unwrap();
    assert!(status.success(), "gc failed: {gc_err}\n{gc_out}");
    assert!(gc_out.contains("packs deleted"), "{gc_out}");
    assert!(lock_files(&repo).is_empty());

    // gc removed the forgotten snapshot's data and none of the backup's.
    assert_verify_ok(&repo);
    assert_no_garbage(&repo);
    assert_eq!(snapshot_ids(&repo), [id.clone()].into_iter().collect());
    let target = repo.scratch("restore");
    repo.restore(&id, &target, &[]);
    assert!(fs::read(target.join("x")).unwrap() == data);
}

#[test]
fn unlock_removes_the_locks_of_dead_processes_only() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 52, &[("f", 200_000)]);
    let s = backup_saved(&repo, &src, &[]);
    let (mut backup, stdin, lock) = start_stdin_backup(&repo, "x");
    let pid = backup.id();

    // While the backup runs its lock is not stale: unlock leaves it.
    let out = repo.run(&["unlock"]).success();
    assert!(out.stdout.contains("0 lock(s) removed"), "{out}");
    let left = format!("left shared lock held by `backup` (pid {pid} ");
    assert!(out.stdout.contains(&left), "{out}");
    assert!(out.stdout.contains("`cairn unlock --force`"), "{out}");
    assert!(lock.exists());
    assert_eq!(repo.run(&["gc"]).code, 11);

    // A second lock file of the same holder, then the holder dies without
    // cleaning up (SIGKILL): both are stale now.
    let name = lock.file_name().unwrap().to_str().unwrap();
    let copy: String = name.chars().rev().collect();
    assert_ne!(copy, name);
    fs::copy(&lock, lock.with_file_name(&copy)).unwrap();
    backup.kill().unwrap();
    drop(stdin);
    assert!(lock.exists(), "a killed process cannot remove its lock");
    assert_eq!(lock_files(&repo).len(), 2);

    // Not yet reaped (a zombie, as under a PID 1 that reaps nothing), it
    // is dead all the same: until December 2026 unlock left its locks.
    let state = || {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(") ").and_then(|(_, s)| s.chars().next())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state() != Some('Z') && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(state(), Some('Z'));
    let out = repo.run(&["unlock"]).success();
    backup.wait().unwrap();
    assert!(out.stdout.contains("2 lock(s) removed"), "{out}");
    let removed = format!("removed shared lock held by `backup` (pid {pid} ");
    assert_eq!(out.stdout.matches(&removed).count(), 2, "{out}");
    assert!(lock_files(&repo).is_empty());

    // The interrupted backup left no snapshot; gc runs and cleans up.
    repo.run(&["gc"]).success();
    assert_eq!(snapshot_ids(&repo), [s.id.clone()].into_iter().collect());
    assert_verify_ok(&repo);
    assert_no_garbage(&repo);
    assert_restores(&repo, &s);
}

/// `cairn -r REPO ARGS` run by `unshare -pf --mount-proc`: in a pid
/// namespace of its own, on the same host (name), as a container sharing
/// the host's network runs it. Root runs it as is; anyone else maps
/// themselves to root in a user namespace (`-Ur`) for the right to.
fn in_own_pid_namespace(repo: &Repo, args: &[&str]) -> std::process::Command {
    let as_root = run(std::process::Command::new("id").arg("-u"), None)
        .stdout
        .trim()
        == "0";
    let inner = repo.cmd(args);
    let mut c = std::process::Command::new("unshare");
    if !as_root {
        c.arg("-Ur");
    }
    c.args(["-pf", "--mount-proc"]);
    wrapping(c, &inner)
}

/// A gc in another pid namespace of the same host name (a container run
/// with the host's network, a hostNetwork pod) cannot see the backup's
/// process: its pid is not alive there. The backup's lock must hold all
/// the same, or gc deletes the packs the backup is about to publish.
#[test]
fn gc_in_another_pid_namespace_of_this_host_is_refused_while_a_backup_runs() {
    let repo = packed_repo();
    // Up front: this test needs a pid namespace of its own for gc.
    let probe = try_run(&mut in_own_pid_namespace(&repo, &["--version"]), None);
    let probe = probe.map_or_else(|e| format!("unshare: {e}"), |o| o.to_string());
    if !probe.starts_with("exit code 0\n") {
        // The rule itself is tested in `repo::lock`'s unit tests, which
        // need no namespace.
        eprintln!("NOTICE: `unshare -pf --mount-proc` is not permitted here: not tested\n{probe}");
        return;
    }
    assert!(
        probe.starts_with("exit code 0\n"),
        "this test runs gc in a pid namespace of its own and needs `unshare -pf \
         --mount-proc` (root, or unprivileged user namespaces); it is not permitted \
         here:\n{probe}"
    );

    make_garbage(&repo);
    let packs_before = pack_files(&repo).len();
    let (backup, mut stdin, lock) = start_stdin_backup(&repo, "x");
    let data = random_bytes(53, 5_000_000);
    stdin.write_all(&data[..4_000_000]).unwrap();
    stdin.flush().unwrap();
    wait_for("a pack of the running backup", LIMIT, || {
        pack_files(&repo).len() > packs_before
    });
    let theirs: Vec<PathBuf> = unindexed_packs(&repo).into_values().collect();
    assert!(!theirs.is_empty());

    let out = run(&mut in_own_pid_namespace(&repo, &["gc"]), None);
    assert_eq!(out.code, 11, "gc ran beside a live backup:\n{out}");
    assert!(out.stderr.contains("shared lock held by `backup`"), "{out}");
    let out = run(&mut in_own_pid_namespace(&repo, &["unlock"]), None).success();
    assert!(out.stdout.contains("0 lock(s) removed"), "{out}");
    assert!(lock.exists());
    assert!(theirs.iter().all(|p| p.exists()));

    stdin.write_all(&data[4_000_000..]).unwrap();
    drop(stdin);
    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_verify_ok(&repo);
    repo.run(&["gc"]).success();
    assert_no_garbage(&repo);
    assert_stdin_snapshot_restores(&repo, &out.stdout, &data);
}

fn source(dir: &Path, seed: u64, shared: &[u8]) {
    fill(
        dir,
        seed,
        &[("own1", 700_000), ("own2", 400_000), ("deep/own3", 300_000)],
    );
    write(&dir.join("shared/one.bin"), shared);
}

#[test]
fn concurrent_backups_both_succeed_and_share_content() {
    let repo = packed_repo();
    let shared = random_bytes(60, 3_000_000);
    let (a, b) = (repo.scratch("a"), repo.scratch("b"));
    source(&a, 61, &shared);
    source(&b, 62, &shared);
    let own = 2 * (700_000 + 400_000 + 300_000) as u64;
    let (ma, mb) = (manifest(&a), manifest(&b));

    let spawn = |dir: &Path| {
        repo.cmd(&["backup", "--json", dir.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let mut saved = Vec::new();
    for (child, dir, m) in [(ca, &a, ma), (cb, &b, mb)] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let record: Value = serde_json::from_slice(&out.stdout).unwrap();
        saved.push(Saved {
            id: record["id"].as_str().unwrap().to_string(),
            src: dir.clone(),
            manifest: m,
            record,
        });
    }
    assert_eq!(snapshot_ids(&repo).len(), 2);
    assert_verify_ok(&repo);
    for s in &saved {
        assert_restores(&repo, s);
    }

    // Every byte is stored; the shared file at most twice: a backup only
    // sees the blobs of backups that finished (wrote their index) before
    // it started, so two backups running side by side may both store a
    // chunk. The format allows that (a blob indexed twice is read from
    // either copy), and gc keeps one copy (docs/DESIGN.md, "Concurrent
    // backups store shared new data twice"). (Measured: 8.8 MB stored for
    // 5.8 MB of content when the two runs overlap.)
    let stored = packs_size(&repo);
    let shared_len = shared.len() as u64;
    assert!(stored >= own + shared_len, "{stored}");
    assert!(stored < own + 2 * shared_len + 200_000, "{stored}");

    // After gc the shared content is stored once (`--max-unused 0%`: every
    // pack holding a duplicate is repacked, so the bound below is tight).
    repo.run(&["gc", "--max-unused", "0%"]).success();
    let stored = packs_size(&repo);
    assert!(stored >= own + shared_len, "{stored}");
    assert!(
        stored < own + shared_len + 200_000,
        "shared content stored more than once: {stored} bytes for {} of content",
        own + shared_len
    );
    assert_verify_ok(&repo);
    assert_no_garbage(&repo);
    for s in &saved {
        assert_restores(&repo, s);
    }
    // And later backups of the shared content add nothing.
    let c = repo.scratch("c");
    write(&c.join("again.bin"), &shared);
    let s = backup_saved(&repo, &c, &[]);
    let added = s.record["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        added < 64 * 1024,
        "{added} bytes added (only trees are new)"
    );
}

/// The repository opened through the library, for writing lock files.
fn open_lib(repo: &Repo) -> cairn::Repository {
    let backend = Arc::new(LocalBackend::new(&repo.path));
    cairn::Repository::open(backend, PASSWORD.as_bytes()).unwrap()
}

/// What the one lock file of the repository says. A holder refreshing
/// its lock writes the new file before it removes the old one, so for a
/// moment there are two; and a listing that named only the old one finds
/// none if the old one is removed before it is read: they are listed
/// again until one is left.
fn the_lock(repo: &Repo) -> LockInfo {
    let r = open_lib(repo);
    let list = || lock::list(r.backend(), r.key()).unwrap();
    let mut all = list();
    let start = std::time::Instant::now();
    while all.len() != 1 && start.elapsed() < LIMIT {
        std::thread::sleep(std::time::Duration::from_millis(5));
        all = list();
    }
    assert_eq!(all.len(), 1, "{all:?}");
    all.pop().unwrap().1
}

const MINUTE_NS: i64 = 60 * 1_000_000_000;

/// A backup of a command's output refused the lock never runs the
/// command: it ran first, and was killed once the lock was refused (a
/// dump holding its database's snapshot open through a lock wait).
#[test]
fn a_command_whose_backup_is_refused_the_lock_never_runs() {
    let repo = packed_repo();
    let r = open_lib(&repo);
    let held = lock::write_info(
        r.backend(),
        r.key(),
        &LockInfo {
            version: lock::VERSION,
            host: cairn::hostname(),
            pid: std::process::id(),
            pid_namespace: lock::PidNamespace::current().cloned(),
            time_ns: cairn::now_ns(),
            exclusive: true,
            command: "gc".into(),
        },
    )
    .unwrap();
    let mark = repo.scratch("ran");
    let backup = || {
        let mut c = repo.cmd(&[
            "backup",
            "--lock-wait",
            "1s",
            "--stdin-from-command",
            "--",
            "touch",
        ]);
        c.arg(&mark);
        run(&mut c, None)
    };
    let out = backup();
    assert_eq!(out.code, 11, "{out}");
    assert!(!mark.exists(), "the command ran: {out}");
    fs::remove_file(repo.path.join("locks").join(&held)).unwrap();
    let out = backup();
    assert_eq!(out.code, 3, "an empty stream: {out}");
    assert!(mark.exists(), "{out}");
}

#[test]
fn a_lock_not_refreshed_for_30_minutes_is_stale() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 70, &[("f", 400_000)]);
    let s = backup_saved(&repo, &src, &[]);
    make_garbage(&repo);
    let r = open_lib(&repo);
    // An exclusive lock of a process that is alive (this test) on this
    // host: only its age can make it stale.
    let info = |age_minutes: i64| LockInfo {
        version: lock::VERSION,
        host: cairn::hostname(),
        pid: std::process::id(),
        pid_namespace: lock::PidNamespace::current().cloned(),
        time_ns: cairn::now_ns() - age_minutes * MINUTE_NS,
        exclusive: true,
        command: "gc".into(),
    };

    // 29 minutes old: it holds. gc and backups are refused; unlock
    // leaves it.
    let live = lock::write_info(r.backend(), r.key(), &info(29)).unwrap();
    let out = repo.run(&["gc"]);
    assert_eq!(out.code, 11, "{out}");
    assert!(out.stderr.contains("exclusive lock held by `gc`"), "{out}");
    assert_eq!(repo.run(&["backup", src.to_str().unwrap()]).code, 11);
    let out = repo.run(&["unlock"]).success();
    assert!(out.stdout.contains("0 lock(s) removed"), "{out}");
    fs::remove_file(repo.path.join("locks").join(&live)).unwrap();

    // 31 minutes old by its time, but written a moment ago by the
    // store's clock (its host's clock lags): it holds, and the refusal
    // says why.
    let lagging = lock::write_info(r.backend(), r.key(), &info(31)).unwrap();
    let out = repo.run(&["gc"]);
    assert_eq!(out.code, 11, "{out}");
    assert!(
        out.stderr
            .contains("that host's clock is about 31 minutes behind this host's"),
        "{out}"
    );
    let out = repo.run(&["unlock"]).success();
    assert!(out.stdout.contains("0 lock(s) removed"), "{out}");
    fs::remove_file(repo.path.join("locks").join(&lagging)).unwrap();

    // 31 minutes old by both: stale. gc runs past it and collects the
    // garbage; `unlock` removes it.
    let stale = lock::write_info(r.backend(), r.key(), &info(31)).unwrap();
    let file = fs::File::options()
        .write(true)
        .open(repo.path.join("locks").join(&stale))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(31 * 60))
        .unwrap();
    drop(file);
    let out = run_settled(&repo, &["gc", "--json"]).success();
    assert!(
        !out.json()["delete"].as_array().unwrap().is_empty(),
        "{out}"
    );
    // gc removed it first, so that its holder, should it run on, stops.
    assert!(
        out.stderr
            .contains("removed a stale lock: exclusive lock held by `gc`"),
        "{out}"
    );
    assert!(lock_files(&repo).is_empty());
    // `unlock` removes one too.
    let stale = lock::write_info(r.backend(), r.key(), &info(31)).unwrap();
    let file = fs::File::options()
        .write(true)
        .open(repo.path.join("locks").join(&stale))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(31 * 60))
        .unwrap();
    drop(file);
    let out = run_settled(&repo, &["unlock"]).success();
    assert!(
        out.stdout.contains("removed exclusive lock held by `gc`"),
        "{out}"
    );
    assert!(out.stdout.contains("1 lock(s) removed"), "{out}");
    assert!(lock_files(&repo).is_empty());
    assert_verify_ok(&repo);
    assert_no_garbage(&repo);
    assert_restores(&repo, &s);
}

#[test]
fn a_long_running_lock_is_refreshed() {
    let repo = packed_repo();
    let (backup, mut stdin, _) = start_stdin_backup_with(&repo, "x", Some("refresh-every=100"));
    let first = the_lock(&repo);
    // The lock file is replaced by one with a later time, and the old one
    // is removed: one lock file, newer each time.
    wait_for("a refreshed lock", LIMIT, || {
        lock_files(&repo).len() == 1 && the_lock(&repo).time_ns > first.time_ns
    });
    let data = random_bytes(71, 1_500_000);
    stdin.write_all(&data).unwrap();
    drop(stdin);
    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(lock_files(&repo).is_empty());
    assert_stdin_snapshot_restores(&repo, &out.stdout, &data);
}

#[test]
fn a_backup_paused_for_16_minutes_confirms_its_lock_and_goes_on() {
    let repo = packed_repo();
    let (backup, mut stdin, _) = start_stdin_backup_with(&repo, "x", Some("age=960"));
    let old = the_lock(&repo);
    assert!(cairn::now_ns() - old.time_ns >= 16 * MINUTE_NS);
    // The first pack makes the backup check its lock: older than 15
    // minutes, so it confirms the file is there and refreshes it.
    let data = random_bytes(72, 3_000_000);
    stdin.write_all(&data[..2_500_000]).unwrap();
    stdin.flush().unwrap();
    wait_for("the refreshed lock", LIMIT, || {
        cairn::now_ns() - the_lock(&repo).time_ns < MINUTE_NS
    });
    stdin.write_all(&data[2_500_000..]).unwrap();
    drop(stdin);
    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_stdin_snapshot_restores(&repo, &out.stdout, &data);
}

#[test]
fn a_backup_whose_lock_expired_or_cannot_be_refreshed_publishes_nothing() {
    let repo = packed_repo();
    let small = repo.scratch("small");
    fill(&small, 73, &[("a", 300_000)]);
    let s0 = backup_saved(&repo, &small, &[]);
    let src = repo.scratch("big");
    fill(&src, 74, &[("b", 2_500_000), ("c", 1_500_000)]);
    let index_before = names_in(&repo, "index");
    for (knobs, why) in [
        // Paused (or suspended) for 21 minutes: others may soon take the
        // lock for stale, and gc may have run already.
        ("age=1260", "lock expired: last refreshed 21m"),
        // Refreshes failing for 16 minutes, and once more now.
        ("age=960,refresh-fails", "lock not refreshed for 16m"),
    ] {
        let out = run(
            repo.cmd(&["backup", src.to_str().unwrap()])
                .env("CAIRN_LOCK_TEST", knobs),
            None,
        );
        assert_eq!(out.code, 1, "{knobs}: {out}");
        assert!(out.stderr.contains(why), "{knobs}: {out}");
        assert!(out.stderr.contains("nothing published"), "{knobs}: {out}");
        assert_eq!(
            snapshot_ids(&repo),
            [s0.id.clone()].into_iter().collect(),
            "{knobs}"
        );
        assert_eq!(names_in(&repo, "index"), index_before, "{knobs}");
        assert!(lock_files(&repo).is_empty(), "{knobs}");
    }
    assert_verify_ok(&repo);
    repo.run(&["gc"]).success();
    assert_no_garbage(&repo);
    assert_restores(&repo, &s0);
}

/// A backup of a stream running beside a first snapshot `s0`, with a
/// pack of its own stored and not yet indexed: the stream's first
/// 3,000,000 of `data`'s bytes are written, the rest waits.
struct RunningBackup {
    s0: Saved,
    backup: Child,
    stdin: ChildStdin,
    lock: PathBuf,
    data: Vec<u8>,
}

impl RunningBackup {
    /// Starts it, with `CAIRN_LOCK_TEST` set to `knobs`, from data drawn
    /// from `seed`.
    fn start(repo: &Repo, seed: u64, knobs: Option<&str>) -> RunningBackup {
        let small = repo.scratch("small");
        fill(&small, seed, &[("a", 300_000)]);
        let s0 = backup_saved(repo, &small, &[]);
        let packs_before = pack_files(repo).len();
        let (backup, mut stdin, lock) = start_stdin_backup_with(repo, "db.dump", knobs);
        let data = random_bytes(seed + 1, 5_000_000);
        stdin.write_all(&data[..3_000_000]).unwrap();
        stdin.flush().unwrap();
        wait_for("a pack of the running backup", LIMIT, || {
            pack_files(repo).len() > packs_before
        });
        RunningBackup {
            s0,
            backup,
            stdin,
            lock,
            data,
        }
    }

    /// Gives the backup the rest of its stream, once its lock was taken
    /// from it: it fails, publishing neither an index table nor a
    /// snapshot, and the repository verifies, loses its packs to gc, and
    /// restores `s0`.
    fn finish_publishing_nothing(self, repo: &Repo) {
        let RunningBackup {
            s0,
            backup,
            mut stdin,
            data,
            ..
        } = self;
        let index_before = names_in(repo, "index");
        stdin.write_all(&data[3_000_000..]).unwrap();
        drop(stdin);
        let out = backup.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("lock lost") && stderr.contains("nothing published"),
            "{stderr}"
        );
        assert_eq!(names_in(repo, "index"), index_before);
        assert_eq!(snapshot_ids(repo), [s0.id.clone()].into_iter().collect());
        assert!(lock_files(repo).is_empty());
        assert_verify_ok(repo);
        repo.run(&["gc"]).success();
        assert_no_garbage(repo);
        assert_restores(repo, &s0);
    }
}

#[test]
fn unlock_force_against_a_live_backup_makes_it_fail_without_publishing() {
    let repo = packed_repo();
    let r = RunningBackup::start(&repo, 75, None);
    let (pid, lock) = (r.backup.id(), r.lock.clone());

    // Forced, unlock removes the live backup's lock; gc is no longer held
    // back and deletes the packs no index names, the backup's among them.
    let out = run_settled(&repo, &["unlock", "--force"]).success();
    assert!(out.stderr.contains("waiting 0s before going on"), "{out}");
    let removed = format!("removed shared lock held by `backup` (pid {pid} ");
    assert!(out.stdout.contains(&removed), "{out}");
    assert!(out.stdout.contains("1 lock(s) removed"), "{out}");
    assert!(!lock.exists());
    let theirs: Vec<PathBuf> = unindexed_packs(&repo).into_values().collect();
    assert!(!theirs.is_empty());
    repo.run(&["gc"]).success();
    assert!(theirs.iter().all(|p| !p.exists()));

    // The backup finds its lock gone before publishing: it fails, and
    // writes neither an index table naming the deleted packs nor a
    // snapshot.
    r.finish_publishing_nothing(&repo);
}

/// Runs `cairn -r REPO ARGS` waiting no time after removing a lock whose
/// holder may still run (`CAIRN_LOCK_TEST=settle=0`, instead of a
/// minute).
fn run_settled(repo: &Repo, args: &[&str]) -> Out {
    run(repo.cmd(args).env("CAIRN_LOCK_TEST", "settle=0"), None)
}

/// A backup on a host whose clock lags 40 minutes, on a store whose file
/// times come from the writer's clock (an rclone or s3fs mount, some SMB
/// servers), writes lock files 40 minutes old by both clocks: stale to a
/// gc elsewhere. gc removes such a lock before it reads what to keep, so
/// the backup, still running, finds its lock file gone and publishes
/// nothing. Before, gc passed over the lock and deleted the backup's
/// packs, and the backup, which only checked that its lock file was
/// there, wrote an index table and a snapshot naming them, exit 0.
#[test]
fn a_live_backup_whose_lock_looks_stale_stops_once_gc_passes_it_over() {
    let repo = packed_repo();
    let r = RunningBackup::start(&repo, 77, Some("clock-lag=2400"));
    let lock = r.lock.clone();
    assert!(cairn::now_ns() - the_lock(&repo).time_ns > 39 * MINUTE_NS);
    // The store dates the lock file by the backup's clock.
    let file = fs::File::options().write(true).open(&lock).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(40 * 60))
        .unwrap();
    drop(file);

    let theirs: Vec<PathBuf> = unindexed_packs(&repo).into_values().collect();
    assert!(!theirs.is_empty());
    let out = run_settled(&repo, &["gc"]).success();
    assert!(
        out.stderr
            .contains("removed a stale lock: shared lock held by `backup`"),
        "{out}"
    );
    assert!(!lock.exists(), "{out}");
    assert!(theirs.iter().all(|p| !p.exists()));

    r.finish_publishing_nothing(&repo);
}

/// The snapshot a `backup --json --stdin-filename x` printed restores `x`
/// as `data`.
#[track_caller]
fn assert_stdin_snapshot_restores(repo: &Repo, stdout: &[u8], data: &[u8]) {
    let id = serde_json::from_slice::<Value>(stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let target = repo.scratch("restore");
    repo.restore(&id, &target, &[]);
    assert!(fs::read(target.join("x")).unwrap() == data);
}

/// A restore holds a shared lock while it reads: gc, which removes packs,
/// is refused (or waits) until it ends, so it never removes what the
/// restore is reading. The restore is frozen (SIGSTOP) once its lock is
/// there, so the test does not race it.
#[test]
fn gc_is_refused_while_a_restore_reads() {
    let repo = packed_repo();
    make_garbage(&repo);
    let src = repo.scratch("src");
    let files: Vec<(String, usize)> = (0..40).map(|i| (format!("f{i}"), 1_000_000)).collect();
    let files: Vec<(&str, usize)> = files.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    fill(&src, 70, &files);
    let saved = backup_saved(&repo, &src, &[]);

    let mut caught = None;
    for attempt in 0..10 {
        let target = repo.scratch(&format!("target-{attempt}"));
        let mut c = repo.cmd(&["restore", &saved.id, "--target"]);
        let mut child = c
            .arg(&target)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Caught holding its lock, or finished first (then again).
        let held = loop {
            if !lock_files(&repo).is_empty() {
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::hint::spin_loop();
        };
        if held {
            // SAFETY: signalling a child process this test started.
            unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
            if child.try_wait().unwrap().is_none() && !lock_files(&repo).is_empty() {
                caught = Some((child, target));
                break;
            }
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
        }
        assert!(child.wait().unwrap().success());
    }
    let (child, target) = caught.expect("a restore caught holding its lock in ten tries");

    let out = repo.run(&["gc"]);
    assert_eq!(out.code, 11, "{out}");
    assert!(
        out.stderr.contains("locked") && out.stderr.contains("restore"),
        "the holder is named:\n{out}"
    );
    // Readers share: a listing runs beside the restore.
    let ls = repo.run(&["ls", &saved.id]).success();
    assert!(ls.stdout.contains("/f39"), "{ls}");
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_same_contents(&src, &restored(&target, &src));
    repo.run(&["gc"]).success();
    assert_restores(&repo, &saved);
}

/// A repository that cannot be written (here a read-only bind mount, as
/// a disk mounted read-only or read-only credentials are) still restores
/// and verifies: the shared lock is not written, with a warning saying
/// what that risks. gc, which must write, is refused.
#[test]
fn a_read_only_repository_restores_and_verifies_without_a_lock() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 71, &[("a", 300_000), ("b/c", 500_000)]);
    let saved = backup_saved(&repo, &src, &[]);
    let read_only = |args: &[&str]| {
        let c = repo.cmd(args);
        let mut wrapped = std::process::Command::new("unshare");
        wrapped
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" \"$1\" && mount -o remount,ro,bind \"$1\" && shift \
                 && exec \"$@\"",
            )
            .arg("sh")
            .arg(&repo.path);
        run(&mut wrapping(wrapped, &c), None)
    };
    let probe = read_only(&["snapshots"]);
    assert_eq!(
        probe.code, 0,
        "a read-only bind mount in a private mount namespace (unshare -m, as root) \
         is needed:\n{probe}"
    );

    let target = repo.scratch("target");
    let out = read_only(&["restore", &saved.id, "--target", target.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("cannot lock the repository")
            && out.stderr.contains("Read-only file system")
            && out.stderr.contains("going on without a lock"),
        "{out}"
    );
    assert_same_contents(&src, &restored(&target, &src));
    for args in [
        &["verify", "--read-data"][..],
        &["ls", "latest"],
        &["cat", "index"],
    ] {
        let out = read_only(args);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert!(out.stderr.contains("going on without a lock"), "{out}");
    }
    let out = read_only(&["gc"]);
    assert_ne!(
        out.code, 0,
        "gc cannot run on a read-only repository:\n{out}"
    );
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    // Dry runs write nothing: they go on without a lock too, and say so.
    for (args, says) in [
        (&["gc", "--dry-run"][..], "would have:"),
        (
            &["forget", "--keep-last", "1", "--dry-run"],
            "would remove 0",
        ),
        (&["upgrade", "--dry-run"], "nothing to do"),
        (
            &["repair", "snapshots", "--dry-run"],
            "0 snapshot(s) would be",
        ),
    ] {
        let out = read_only(args);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert!(out.stdout.contains(says), "{args:?}: {out}");
        assert!(
            out.stderr.contains("Read-only file system")
                && out.stderr.contains("the dry run goes on without a lock"),
            "{args:?}: {out}"
        );
    }
    let out = read_only(&["forget", "--keep-last", "1"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    // No lock to remove: unlock says so, without a lock of its own to write.
    let out = read_only(&["unlock"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("0 lock(s) removed"), "{out}");
    assert!(!out.stderr.contains("Read-only file system"), "{out}");
}

/// A restore whose lock expired (the process paused or suspended for so
/// long that a gc elsewhere may have taken the lock for stale, and
/// removed what it reads) stops, saying so, instead of going on
/// unprotected and calling what gc removed damage. Run again, it
/// restores. A verify whose lock expired gives no report.
#[test]
fn a_restore_whose_lock_expired_stops_and_says_so() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 75, &[("a", 700_000), ("b/c", 900_000)]);
    let saved = backup_saved(&repo, &src, &[]);
    let target = repo.scratch("target");
    let mut c = repo.cmd(&["restore", &saved.id, "--target"]);
    c.arg(&target).env("CAIRN_LOCK_TEST", "age=1260");
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("lock expired: last refreshed 21m")
            && out
                .stderr
                .contains("the rest of the snapshot is not restored"),
        "{out}"
    );
    assert!(!out.stderr.contains("corrupt"), "{out}");
    assert!(lock_files(&repo).is_empty());
    repo.restore(&saved.id, &target, &[]);
    assert_same_contents(&src, &restored(&target, &src));

    // verify, the same: no report it cannot vouch for.
    let mut c = repo.cmd(&["verify", "--read-data"]);
    c.env("CAIRN_LOCK_TEST", "age=1260");
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("lock expired") && out.stderr.contains("run verify again"),
        "{out}"
    );
    assert!(!out.stdout.contains("no errors"), "{out}");
    repo.run(&["verify", "--read-data"]).success();
}

/// A repository on a filesystem mounted read-only: a command that writes
/// says so, and to remount it, not to run it as another user, who could
/// not write there either; one that reads runs.
#[test]
fn a_read_only_filesystem_is_said_to_be_one() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("a"), "a");
    repo.backup(&[&src], &[]);
    let disk = PrivateMount::tmpfs(&repo.scratch("disk"), 64 << 20);
    disk.copy_in(&repo.path, &disk.at);
    let inside = disk.at.join(repo.path.file_name().unwrap());
    // An empty lock file (what a power cut leaves of one), for unlock to
    // judge: with none it writes nothing (see the read-only bind mount's
    // test), here it must write a lock of its own first.
    let empty_lock = inside.join("locks").join("ab".repeat(32));
    disk.sh(&format!("touch {}", empty_lock.display()));
    disk.sh(&format!("mount -o remount,ro {}", disk.at.display()));
    let cmd = |args: &[&str]| {
        let mut c = cairn();
        c.arg("-r").arg(&inside).args(args);
        c.env("CAIRN_PASSWORD", PASSWORD);
        disk.run(&c)
    };
    for args in [&["gc"][..], &["forget", "--keep-last", "1"], &["unlock"]] {
        let out = cmd(args);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(
            out.stderr.contains("Read-only file system"),
            "{args:?}: {out}"
        );
        assert!(
            out.stderr
                .contains("the repository's filesystem is mounted read-only, and")
                && out.stderr.contains("remount it read-write"),
            "{args:?}: {out}"
        );
        assert!(!out.stderr.contains("this user may not"), "{args:?}: {out}");
    }
    let out = cmd(&["snapshots"]);
    assert_eq!(out.code, 0, "{out}");
}

/// A repository holding a backup of one small file (`src/a`), everything
/// in its test folder readable by every user, for a test (run as root)
/// that runs commands as another user; with the source's path.
fn backed_up_readable_by_all() -> (Repo, PathBuf) {
    if !is_root() {
        panic!("this test runs a command as another user, which needs root");
    }
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("a"), "a");
    repo.backup(&[&src], &[]);
    readable_by_all(repo.dir.path());
    (repo, src)
}

/// A repository its owner made read-only (`chmod -R a-w`) says to give
/// write access back, not to run as another user.
#[test]
fn an_owner_s_read_only_repository_says_to_give_write_access_back() {
    let (repo, src) = backed_up_readable_by_all();
    let chmod_r = |spec: &str| {
        let status = std::process::Command::new("chmod")
            .args(["-R", spec])
            .arg(&repo.path)
            .status()
            .unwrap();
        assert!(status.success(), "chmod -R {spec}");
    };
    let backup_as_nobody = || {
        let mut c = repo.cmd(&["backup", src.to_str().unwrap()]);
        as_nobody(&mut c);
        run(&mut c, None)
    };
    give_to(&repo.path, NOBODY, true);
    chmod_r("a-w");
    let out = backup_as_nobody();
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "this user owns the repository but may not write to it (its files or folders are \
             read-only), and backup needs to write (its lock first): `chmod -R u+w {}`",
            repo.path.display()
        )),
        "{out}"
    );
    assert!(!out.stderr.contains("run it as a user who may"), "{out}");
    // Where only the top folder is this user's, `chmod` would not help.
    give_to(&repo.path, 0, true);
    give_to(&repo.path, NOBODY, false);
    chmod_r("u+w");
    let out = backup_as_nobody();
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("run it as a user who may"), "{out}");
    assert!(!out.stderr.contains("chmod"), "{out}");
    give_to(&repo.path, NOBODY, true);
    chmod_r("a-w");
    // An upgrade with nothing to write runs there (it was refused for a
    // lock it did not need).
    let mut c = repo.cmd(&["upgrade"]);
    as_nobody(&mut c);
    let out = run(&mut c, None);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("nothing to do"), "{out}");
    assert!(!out.stderr.contains("lock"), "{out}");
}

/// A user who may read the repository but not write it: a command that
/// writes is refused saying so, and which commands still run (it got the
/// bare "create locks/.tmp-…: Permission denied"); one that reads runs.
#[test]
fn a_user_who_may_not_write_is_told_so() {
    let (repo, _) = backed_up_readable_by_all();
    let as_nobody = |args: &[&str]| {
        let mut c = repo.cmd(args);
        as_nobody(&mut c);
        run(&mut c, None)
    };
    for args in [&["gc"][..], &["forget", "--keep-last", "1"]] {
        let out = as_nobody(args);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(
            out.stderr
                .contains("this user may not write to the repository"),
            "{args:?}: {out}"
        );
        assert!(
            out.stderr.contains("run it as a user who may"),
            "{args:?}: {out}"
        );
    }
    let out = as_nobody(&["snapshots"]);
    assert_eq!(out.code, 0, "{out}");
    // Nor may unlock, which writes a lock of its own first where there is
    // a lock file to judge (here an empty one, what a power cut leaves).
    write(&repo.path.join("locks").join("ab".repeat(32)), "");
    let out = as_nobody(&["unlock"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("this user may not write to the repository, and unlock needs to"),
        "{out}"
    );
    // Dry runs read only, without a word about the space reserve, which
    // they neither use nor may set aside (here, where it is gone).
    fs::remove_file(repo.path.join("reserve")).unwrap();
    for args in [
        &["gc", "--dry-run"][..],
        &["forget", "--keep-last", "1", "--gc", "--dry-run"],
        &["repair", "snapshots", "--dry-run"],
        &["upgrade", "--dry-run"],
    ] {
        let out = as_nobody(args);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert!(!out.stderr.contains("reserve"), "{args:?}: {out}");
    }
}

/// The lock of a process that is gone (killed) is removed by the next
/// command that takes a lock, which says so: a nightly job hears that the
/// one before it died (it was removed without a word).
#[test]
fn a_dead_process_lock_removed_in_passing_is_said() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 53, &[("f", 100_000)]);
    backup_saved(&repo, &src, &[]);
    let (mut backup, stdin, lock) = start_stdin_backup(&repo, "x");
    let pid = backup.id();
    backup.kill().unwrap();
    drop(stdin);
    backup.wait().unwrap();
    assert!(lock.exists(), "a killed process cannot remove its lock");
    let out = repo.run(&["gc"]).success();
    let said = format!("note: removed the shared lock held by `backup` (pid {pid} ");
    assert!(
        out.stderr.contains(&said) && out.stderr.contains("its process is gone"),
        "{said}\n{out}"
    );
    assert!(lock_files(&repo).is_empty());
}
