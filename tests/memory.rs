//! Memory stays bounded by the pipeline's queues, not by what is backed up:
//! a stream five times larger peaks at about the same resident memory.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// Peak resident memory (KiB) of `cairn backup --stdin` fed `mib` MiB of
/// unique pseudo-random bytes (nothing deduplicates or compresses, so
/// every byte is chunked, sealed and packed). Read from the process's
/// `VmHWM` (the high-water mark of its own memory since it started)
/// until it exits.
fn peak_rss_of_stdin_backup(repo: &Repo, name: &str, seed: u64, mib: usize) -> u64 {
    let mut child = repo
        .cmd(&["backup", "--stdin", "--stdin-filename", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feeder = std::thread::spawn(move || {
        let mut xof = blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof();
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
    assert!(
        status.success(),
        "backup of {name} failed: {status}\n{stderr}"
    );
    assert!(peak > 0, "no VmHWM read for {name}");
    peak
}

#[test]
fn a_stdin_backup_does_not_hold_more_memory_for_a_larger_stream() {
    // Default chunk sizes (1 MiB on average), as a database dump would get.
    let repo = Repo::with_init_args(FAST_KDF_ONLY);
    let small = peak_rss_of_stdin_backup(&repo, "small.dump", 1, 96);
    let large = peak_rss_of_stdin_backup(&repo, "large.dump", 2, 480);
    // Both were stored whole.
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 2);
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_eq!(
        std::fs::metadata(target.join("large.dump")).unwrap().len(),
        480 << 20
    );
    // 384 MiB more input may cost a few MiB of bookkeeping (the new
    // chunks' ids and index entries, about 100 bytes per MiB), never
    // buffers that grow with it.
    assert!(
        large <= small + 24 * 1024,
        "peak RSS {large} KiB for 480 MiB against {small} KiB for 96 MiB"
    );
    assert!(large < 200 * 1024, "peak RSS {large} KiB for 480 MiB");
}
