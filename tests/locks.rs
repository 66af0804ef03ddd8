//! Locks and concurrency through the real binary: backups side by side,
//! gc refusing or waiting while a backup runs, and `unlock` removing the
//! locks of dead processes.

mod common;
mod support_maint;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use support_maint::*;

const LIMIT: Duration = Duration::from_secs(60);

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
    assert!(lock_files(repo).is_empty());
    let mut child = repo
        .cmd(&["backup", "--stdin", "--stdin-filename", name, "--json"])
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
    // A dry run only reads and takes a shared lock: it runs.
    repo.run(&["gc", "--dry-run"]).success();

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
    assert!(lock.exists());
    assert_eq!(repo.run(&["gc"]).code, 11);

    // A second lock file of the same holder, then the holder dies without
    // cleaning up (SIGKILL): both are stale now.
    let name = lock.file_name().unwrap().to_str().unwrap();
    let copy: String = name.chars().rev().collect();
    assert_ne!(copy, name);
    fs::copy(&lock, lock.with_file_name(&copy)).unwrap();
    backup.kill().unwrap();
    backup.wait().unwrap();
    drop(stdin);
    assert!(lock.exists(), "a killed process cannot remove its lock");
    assert_eq!(lock_files(&repo).len(), 2);

    let out = repo.run(&["unlock"]).success();
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
    // either copy), and gc keeps one copy. (Measured: 8.8 MB stored for
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
