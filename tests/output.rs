//! Standard output that cannot be written: a full disk (`/dev/full`) and a
//! reader that went away (a pipe with its read end closed).
//!
//! A listing cut short by a full disk fails (exit 1, naming standard
//! output); a closed pipe ends it quietly (exit 0). A command that has
//! written to the repository keeps its exit code either way.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use common::*;

/// Where a command's standard output goes.
enum Sink {
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
    /// A pipe whose read end is closed: every write fails with EPIPE (or
    /// raises SIGPIPE).
    Closed,
}

/// The write end of a pipe whose read end is closed.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() returns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: both were just opened and belong to nothing else.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    writer
}

/// Runs `cmd` with its standard output going to `sink`.
fn run_to(cmd: &mut Command, sink: Sink) -> Out {
    let stdout = match sink {
        Sink::Full => Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("open /dev/full"),
        ),
        Sink::Closed => Stdio::from(closed_pipe()),
    };
    let out = cmd
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run cairn");
    let code = match out.status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + out.status.signal().unwrap_or(0)
        }
    };
    Out {
        code,
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A repository holding one snapshot of a small folder.
fn repo_with_a_snapshot() -> (Repo, std::path::PathBuf) {
    let repo = Repo::new();
    let src = repo.scratch("src");
    for i in 0..50 {
        write(&src.join(format!("f{i:02}")), format!("file {i}"));
    }
    repo.backup(&[&src], &[]);
    (repo, src)
}

#[test]
fn a_listing_to_a_full_disk_fails_naming_standard_output() {
    let (repo, _src) = repo_with_a_snapshot();
    for args in [
        vec!["snapshots"],
        vec!["snapshots", "--json"],
        vec!["ls", "latest"],
        vec!["ls", "latest", "--long"],
        vec!["cat", "config"],
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["gc", "--dry-run"],
        vec!["upgrade", "--dry-run"],
        vec!["repair", "snapshots", "--dry-run"],
        vec!["verify"],
    ] {
        let out = run_to(&mut repo.cmd(&args), Sink::Full);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(
            out.stderr.contains("error: write standard output"),
            "{args:?}: {out}"
        );
        // The disk that is full is standard output's, not the
        // repository's (the dry runs said so until December 2026).
        assert!(
            !out.stderr.contains("filesystem is full"),
            "{args:?}: {out}"
        );
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out}");
    }
}

#[test]
fn a_listing_to_a_closed_pipe_ends_quietly() {
    let (repo, _src) = repo_with_a_snapshot();
    for args in [
        vec!["snapshots"],
        vec!["snapshots", "--json"],
        vec!["ls", "latest"],
        vec!["cat", "config"],
        vec!["verify"],
    ] {
        let out = run_to(&mut repo.cmd(&args), Sink::Closed);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert_eq!(out.stderr, "", "{args:?}: {out}");
    }
}

#[test]
fn a_backup_keeps_its_exit_code_when_its_summary_cannot_be_written() {
    let (repo, src) = repo_with_a_snapshot();
    let s = src.to_str().unwrap();
    write(&src.join("new"), "a new file");

    // A full disk: the snapshot is written, exit 0, and stderr says the
    // summary is missing.
    for args in [vec!["backup", s], vec!["backup", "--json", s]] {
        let before = repo.snapshots().len();
        let out = run_to(&mut repo.cmd(&args), Sink::Full);
        assert_eq!(out.code, 0, "{args:?}: {out}");
        assert!(
            out.stderr.contains("write standard output") && out.stderr.contains("is written"),
            "{args:?}: {out}"
        );
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out}");
        assert_eq!(repo.snapshots().len(), before + 1, "{args:?}");
    }

    // A closed pipe (`cairn backup … | true`): exit 0, not SIGPIPE's 141,
    // and nothing to say.
    let before = repo.snapshots().len();
    let out = run_to(&mut repo.cmd(&["backup", s]), Sink::Closed);
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stderr.contains("standard output"), "{out}");
    assert_eq!(repo.snapshots().len(), before + 1);

    // A partial backup (an empty stream) still exits 3, with its warning.
    for sink in [Sink::Full, Sink::Closed] {
        let mut c = repo.cmd(&["backup", "--json", "--stdin", "--stdin-filename", "x"]);
        let out = run_to(&mut c, sink);
        assert_eq!(out.code, 3, "{out}");
        assert!(out.stderr.contains("was empty"), "{out}");
    }
}

#[test]
fn forget_and_gc_keep_their_exit_code_when_their_report_cannot_be_written() {
    let (repo, src) = repo_with_a_snapshot();
    for i in 0..3 {
        write(&src.join("changing"), format!("version {i}"));
        repo.backup(&[&src], &[]);
    }
    assert_eq!(repo.snapshots().len(), 4);
    let out = run_to(&mut repo.cmd(&["forget", "--keep-last", "3"]), Sink::Closed);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(repo.snapshots().len(), 3, "forget removed the snapshot");
    let out = run_to(
        &mut repo.cmd(&["forget", "--keep-last", "2", "--gc"]),
        Sink::Full,
    );
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("write standard output"), "{out}");
    assert_eq!(repo.snapshots().len(), 2, "forget removed the snapshot");
    let out = run_to(&mut repo.cmd(&["gc"]), Sink::Full);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("gc is done"), "{out}");
}

#[test]
fn a_backup_whose_standard_error_is_closed_still_finishes() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "data");
    // The first backup of a set says on stderr that it takes a full
    // snapshot: a reader of stderr gone must not stop it.
    let status = repo
        .cmd(&["backup", src.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::from(closed_pipe()))
        .status()
        .expect("run cairn");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(repo.snapshots().len(), 1);
}

/// Standard output closed when cairn starts (a shell's `>&-`), which the
/// Rust runtime fills with `/dev/null` open for reading and writing: a
/// listing fails naming standard output (it exited 0 having shown
/// nothing), and a backup keeps its exit code and says its report was not
/// written. `> /dev/null`, a shell's own redirection, stays quiet.
#[test]
fn standard_output_closed_at_start_is_said_as_such() {
    use std::os::unix::process::CommandExt;
    let (repo, src) = repo_with_a_snapshot();
    let closed = |args: &[&str]| {
        let mut c = repo.cmd(args);
        // SAFETY: only close(2), async-signal-safe, between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::close(1);
                Ok(())
            });
        }
        c.stderr(Stdio::piped());
        let out = c.output().expect("run cairn");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = closed(&["snapshots"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("write standard output: Bad file descriptor"),
        "{stderr}"
    );
    let before = repo.snapshots().len();
    let (code, stderr) = closed(&["backup", src.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("write standard output") && stderr.contains("is written"),
        "{stderr}"
    );
    assert_eq!(repo.snapshots().len(), before + 1);

    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let out = repo
        .cmd(&["snapshots"])
        .stdout(Stdio::from(null))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}
