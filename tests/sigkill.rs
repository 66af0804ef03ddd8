//! Crash safety under `kill -9` at arbitrary moments (the crash points of
//! tests/crash.rs stop at named places; these kill wherever the process
//! happens to be): gc repacking and forget removing snapshots are killed
//! again and again. After each kill the repository verifies (reading every
//! byte), every snapshot that should exist restores identically, and
//! running the command again finishes the job and leaves no garbage.

mod common;
mod support_maint;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use support_maint::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Some hex-named lock file exists.
fn locked(repo: &Repo) -> bool {
    names_in(repo, "locks").iter().any(|n| n.len() == 64)
}

/// A delay in `0..span` that differs from kill to kill: spread by `i`,
/// shifted by the clock so runs differ too.
fn jitter(i: u64, span: Duration) -> Duration {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let span_us = span.as_micros() as u64;
    Duration::from_micros((i * span_us / 5 + clock / 1000) % span_us)
}

/// When to kill: after the command takes its lock, or after it writes
/// its first new pack (gc's repacking: the kill lands among the writes and
/// removals of its execution).
#[derive(Clone, Copy, Debug)]
enum After {
    Lock,
    NewPack,
}

/// Starts `cairn ARGS`; once it reaches `after`, waits `delay` and kills
/// it with SIGKILL unless it has finished. Returns whether it was killed.
fn kill_during(repo: &Repo, args: &[&str], after: After, delay: Duration) -> bool {
    let packs_before = pack_files(repo);
    let mut child: Child = repo
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the command to get to work", LIMIT, || {
        child.try_wait().unwrap().is_some()
            || match after {
                After::Lock => locked(repo),
                After::NewPack => pack_files(repo)
                    .keys()
                    .any(|p| !packs_before.contains_key(p)),
            }
    });
    std::thread::sleep(delay);
    let killed = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(killed || status.success(), "{args:?} failed: {status}");
    killed
}

/// Rewrites `count` of the eight files of `src`, starting at `first`, with
/// data of `seed`.
fn change(src: &Path, seed: u64, first: usize, count: usize) {
    for k in 0..count {
        let f = (first + k) % 8;
        write_random(&src.join(format!("f{f}")), seed * 100 + f as u64, 250_000);
    }
}

/// After a kill: the repository verifies reading every byte, and every
/// snapshot in `live` exists and restores identically.
#[track_caller]
fn assert_intact(repo: &Repo, live: &[Saved], what: &str) {
    let ids = snapshot_ids(repo);
    for s in live {
        assert!(ids.contains(&s.id), "{what}: snapshot {} lost", &s.id[..8]);
    }
    assert_verify_ok(repo);
    for s in live {
        assert_restores(repo, s);
    }
}

#[test]
fn sigkill_during_gc_repacking() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    change(&src, 1, 0, 8);
    let mut live = vec![backup_saved(&repo, &src, &[])];
    for i in 2..=5u64 {
        change(&src, i, i as usize * 3, 3);
        live.push(backup_saved(&repo, &src, &[]));
    }
    for (k, after) in [After::Lock, After::NewPack, After::NewPack]
        .into_iter()
        .enumerate()
    {
        // Forgetting the oldest snapshot leaves dead chunks, most of them
        // in packs that hold live ones too; how chunks were grouped into
        // packs depends on the order of the sealers, so one pack is made
        // mixed for certain: a backup stores `a` and `b` together (less
        // than a pack, so in one), the next keeps only `b`, and the first
        // is forgotten. With `--max-unused 0%`, gc repacks them.
        let gone = live.remove(0);
        repo.run(&["forget", &gone.id]).success();
        let mix = repo.scratch(&format!("mix{k}"));
        write_random(&mix.join("a"), 900 + k as u64, 300_000);
        write_random(&mix.join("b"), 950 + k as u64, 300_000);
        let both = backup_saved(&repo, &mix, &[]);
        std::fs::remove_file(mix.join("a")).unwrap();
        live.push(backup_saved(&repo, &mix, &[]));
        repo.run(&["forget", &both.id]).success();
        let plan = repo
            .run(&["gc", "--dry-run", "--json", "--max-unused", "0%"])
            .success()
            .json();
        assert!(!plan["repack"].as_array().unwrap().is_empty(), "{plan}");

        let span = match after {
            After::Lock => Duration::from_millis(400),
            After::NewPack => Duration::from_millis(25),
        };
        let what = format!("kill {k} ({after:?})");
        kill_during(
            &repo,
            &["gc", "--max-unused", "0%"],
            after,
            jitter(k as u64, span),
        );
        assert_intact(&repo, &live, &what);
        // gc again finishes the job (the killed gc's lock is stale: its
        // process is gone).
        repo.run(&["gc", "--max-unused", "0%"]).success();
        assert_no_garbage(&repo);
    }
    assert_intact(&repo, &live, "the end");
}

#[test]
fn sigkill_during_forget() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    change(&src, 1, 0, 8);
    let mut all = vec![backup_saved(&repo, &src, &[])];
    for i in 2..=9u64 {
        change(&src, i, i as usize, 1);
        all.push(backup_saved(&repo, &src, &[]));
    }
    // The first kill comes early, when forget is likely still removing
    // snapshots; the later ones may land in its gc.
    let spans = [5, 150, 300].map(Duration::from_millis);
    for (k, keep) in [7usize, 4, 2].into_iter().enumerate() {
        // The newest `keep` must survive; the others may or may not have
        // been removed when the kill lands, but survive whole if at all.
        let keep_arg = keep.to_string();
        let args = ["forget", "--keep-last", &keep_arg, "--gc"];
        let what = format!("kill {k} (keep {keep})");
        kill_during(&repo, &args, After::Lock, jitter(k as u64, spans[k]));
        let ids = snapshot_ids(&repo);
        let (doomed, kept) = all.split_at(all.len() - keep);
        let surviving: Vec<Saved> = doomed
            .iter()
            .filter(|s| ids.contains(&s.id))
            .chain(kept)
            .cloned()
            .collect();
        assert_eq!(ids.len(), surviving.len(), "{what}: {ids:?}");
        assert_intact(&repo, &surviving, &what);
        // Running it again finishes the job.
        repo.run(&args).success();
        assert_eq!(
            snapshot_ids(&repo),
            kept.iter().map(|s| s.id.clone()).collect(),
            "{what}"
        );
        assert_no_garbage(&repo);
        all = kept.to_vec();
    }
    assert_intact(&repo, &all, "the end");
}
