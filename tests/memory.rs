//! Memory stays bounded by the pipeline's queues, not by what is backed up,
//! verified or restored: a stream five times larger peaks at about the
//! same resident memory each way.

mod common;

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The pseudo-random stream seeded by `seed`.
fn stream_reader(seed: u64) -> blake3::OutputReader {
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
}

/// Whether `path` holds exactly the first `mib` MiB of the stream seeded
/// by `seed`, compared a MiB at a time.
fn holds_stream(path: &std::path::Path, seed: u64, mib: usize) -> bool {
    let mut file = std::fs::File::open(path).expect("open restored file");
    let mut xof = stream_reader(seed);
    let (mut want, mut got) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for _ in 0..mib {
        xof.fill(&mut want);
        if std::io::Read::read_exact(&mut file, &mut got).is_err() || got != want {
            return false;
        }
    }
    std::io::Read::read(&mut file, &mut got).expect("read restored file") == 0
}

/// Peak resident memory (KiB) of `cmd`, fed `feed.1` MiB of unique
/// pseudo-random bytes seeded by `feed.0` on standard input if given
/// (nothing deduplicates or compresses, so every byte is chunked, sealed
/// and packed). Read from the process's `VmHWM` (the high-water mark of
/// its own memory since it started) until it exits.
fn peak_rss(mut cmd: Command, feed: Option<(u64, usize)>) -> u64 {
    let mut child = cmd
        .stdin(if feed.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn");
    let stdin = child.stdin.take();
    let feeder = std::thread::spawn(move || {
        let (Some(mut stdin), Some((seed, mib))) = (stdin, feed) else {
            return;
        };
        let mut xof = stream_reader(seed);
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            xof.fill(&mut block);
            stdin.write_all(&block).expect("feed cairn");
        }
    });
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().expect("wait for cairn") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    feeder.join().expect("feeder");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{cmd:?} failed: {status}\n{stderr}");
    assert!(peak > 0, "no VmHWM read for {cmd:?}");
    peak
}

#[test]
fn backup_and_restore_do_not_hold_more_memory_for_a_larger_stream() {
    // Default chunk sizes (1 MiB on average), as a database dump would get.
    let repo = Repo::with_init_args(FAST_KDF_ONLY);
    let backup = |name: &str, seed, mib| {
        let cmd = repo.cmd(&["backup", "--stdin", "--stdin-filename", name]);
        peak_rss(cmd, Some((seed, mib)))
    };
    let verify = || peak_rss(repo.cmd(&["verify", "--read-data"]), None);
    let small = backup("small.dump", 1, 96);
    let verify_small = verify();
    let large = backup("large.dump", 2, 480);
    let verify_large = verify();
    // 384 MiB more input may cost a few MiB of bookkeeping (the new
    // chunks' ids and index entries, about 100 bytes per MiB), never
    // buffers that grow with it.
    assert!(
        large <= small + 24 * 1024,
        "backup: peak RSS {large} KiB for 480 MiB against {small} KiB for 96 MiB"
    );
    assert!(
        large < 200 * 1024,
        "backup: peak RSS {large} KiB for 480 MiB"
    );
    // verify --read-data streams every pack through a map too.
    assert!(
        verify_large <= verify_small + 24 * 1024,
        "verify: peak RSS {verify_large} KiB for 576 MiB of packs against \
         {verify_small} KiB for 96 MiB"
    );

    // Restore maps packs to read them: their pages count in RSS while
    // mapped, so they must be let go as the restore moves on.
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 2);
    let restore = |name: &str, target: &std::path::Path| {
        let snap = snaps
            .iter()
            .find(|s| s["paths"][0] == name)
            .expect("snapshot")["id"]
            .as_str()
            .unwrap()
            .to_string();
        let cmd = repo.cmd(&["restore", &snap, "--target", target.to_str().unwrap()]);
        (peak_rss(cmd, None), target.join(name))
    };
    let (small, small_path) = restore("small.dump", &repo.scratch("small"));
    assert!(
        holds_stream(&small_path, 1, 96),
        "small.dump restored wrong"
    );
    let (large, large_path) = restore("large.dump", &repo.scratch("large"));
    assert!(
        holds_stream(&large_path, 2, 480),
        "large.dump restored wrong"
    );
    assert!(
        large <= small + 24 * 1024,
        "restore: peak RSS {large} KiB for 480 MiB against {small} KiB for 96 MiB"
    );
    assert!(
        large < 200 * 1024,
        "restore: peak RSS {large} KiB for 480 MiB"
    );
}

/// A restore holds its files a batch at a time (`CAIRN_TEST_RESTORE_BATCH`
/// makes the batch small here): four times as many small files peak at
/// about the same memory, where the whole plan would cost about 0.9 KiB
/// more a file (8 MiB for the 9,000 more here).
#[test]
fn restore_holds_a_batch_of_files_not_all_of_them() {
    let repo = Repo::with_init_args(FAST_KDF_ONLY);
    let make = |name: &str, files: usize| {
        let src = repo.scratch(name);
        for i in 0..files {
            write(
                &src.join(format!("d{:03}/f{i:05}", i / 500)),
                format!("{name} {i}\n"),
            );
        }
        src
    };
    let (few, many) = (make("few", 3_000), make("many", 12_000));
    let restore = |src: &std::path::Path| {
        let snap = repo.backup(&[src], &[]);
        let target = repo.scratch(&format!("{}-restored", src.display()).replace('/', "_"));
        let mut cmd = repo.cmd(&["restore", snap["id"].as_str().unwrap(), "--target"]);
        cmd.arg(&target).env("CAIRN_TEST_RESTORE_BATCH", "500");
        let peak = peak_rss(cmd, None);
        assert_same_tree(src, &restored(&target, src));
        peak
    };
    let (few_peak, many_peak) = (restore(&few), restore(&many));
    assert!(
        many_peak <= few_peak + 4 * 1024,
        "restore: peak RSS {many_peak} KiB for 12,000 files against {few_peak} KiB for 3,000"
    );
}

/// A tree 1,000 folders deep of 255-byte names (paths up to 256 KB) is
/// backed up, listed and restored without a copy of the path a level:
/// until December 2026 a restore held the path of every folder on the
/// way down, twice, and the plan's copy of each (about 420 MB here; 2.2
/// GB at 2,000 levels, in 31 s), `ls` three copies a level, and the
/// backup a walking thread a level.
#[test]
fn a_deep_tree_of_long_names_is_listed_and_restored_in_little_memory() {
    const DEPTH: usize = 1_000;
    let name = std::ffi::CString::new("n".repeat(255)).unwrap();
    let repo = Repo::new();
    let src = repo.scratch("src");
    fs::create_dir(&src).unwrap();
    make_chain_of(&src, &name, DEPTH, b"at the bottom\n");
    repo.backup(&[&src], &[]);
    let t = repo.scratch("whole");
    let mut c = repo.cmd(&["restore", "latest", "--no-sync", "--target"]);
    c.arg(&t);
    let peak_kib = peak_rss(c, None);
    assert_eq!(
        read_chain_of(&restored(&t, &src), &name),
        (DEPTH, b"at the bottom\n".to_vec())
    );
    assert!(peak_kib < 200 * 1024, "restore's peak RSS {peak_kib} KiB");

    let peak_kib = peak_rss(repo.cmd(&["ls", "latest"]), None);
    assert!(peak_kib < 200 * 1024, "ls's peak RSS {peak_kib} KiB");
}
