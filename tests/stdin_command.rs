//! `backup --stdin-from-command`: cairn runs the producer of a stream
//! itself, writes no snapshot unless it succeeds, and kills it when the
//! backup fails. (An empty `--stdin` is in tests/cli.rs.)

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use cairn::backend::local::LocalBackend;
use cairn::repo::lock;
use common::*;

/// `backup --stdin-from-command --stdin-filename x -- sh -c SCRIPT`, to
/// start.
fn script_backup(repo: &Repo, script: &str) -> std::process::Command {
    let mut cmd = repo.cmd(&[
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "x",
        "--",
    ]);
    cmd.args(["sh", "-c", script]);
    cmd
}

/// `backup --stdin-from-command [EXTRA] -- COMMAND`.
fn backup_command(repo: &Repo, extra: &[&str], command: &[&str]) -> Out {
    let mut args = vec!["backup", "--stdin-from-command"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    repo.run(&args)
}

#[test]
fn a_command_that_fails_leaves_no_snapshot() {
    let repo = Repo::new();
    backup_command(&repo, &["--stdin-filename", "app.sql"], &["printf", "good"]).success();
    assert_eq!(repo.snapshots().len(), 1);

    let out = backup_command(
        &repo,
        &["--stdin-filename", "app.sql"],
        &["sh", "-c", "printf partial; exit 1"],
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("`sh -c 'printf partial; exit 1'` exited with status 1"),
        "{out}"
    );
    assert!(out.stderr.contains("no snapshot written"), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert_eq!(repo.snapshots().len(), 1, "a snapshot of the failed dump");

    // So does one that does not produce anything.
    let out = backup_command(&repo, &[], &["sh", "-c", "exit 7"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("exited with status 7"), "{out}");
    assert!(!out.stderr.contains("was empty"), "{out}");
    assert_eq!(repo.snapshots().len(), 1);

    // And one that cannot be started.
    let out = backup_command(&repo, &[], &["/nonexistent/pg_dump", "app"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("run `/nonexistent/pg_dump app`"),
        "{out}"
    );
    assert_eq!(repo.snapshots().len(), 1);

    // What the failed runs stored is garbage, not damage.
    repo.run(&["verify"]).success();
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_eq!(fs::read(target.join("app.sql")).unwrap(), b"good");
}

/// A command that cannot be started is found before the default
/// repository is made for it: one not in `PATH`, a path to nothing, a
/// file that is not executable.
#[test]
fn a_command_that_cannot_start_makes_no_default_repository() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let plain = dir.path().join("plain");
    write(&plain, "#!/bin/sh\necho not executable\n");
    let plain = plain.to_str().unwrap();
    // Scripts whose interpreter is not there: the kernel's "No such file
    // or directory" named the script, which is there.
    let missing = dir.path().join("missing-interpreter");
    write(&missing, "#!/nonexistent/interp -x\necho dump\n");
    let crlf = dir.path().join("crlf");
    write(&crlf, "#!/bin/sh\r\necho dump\r\n");
    let crlf_args = dir.path().join("crlf-args");
    write(&crlf_args, "#!/bin/sh -e\r\necho dump\r\n");
    for f in [&missing, &crlf, &crlf_args] {
        chmod(f, 0o755);
    }
    let (missing, crlf) = (missing.to_str().unwrap(), crlf.to_str().unwrap());
    let crlf_args = crlf_args.to_str().unwrap();
    for (program, says) in [
        ("no-such-dump-program", "No such file"),
        ("/nonexistent/pg_dump", "No such file"),
        (plain, "ermission denied"),
        (
            missing,
            "its interpreter `/nonexistent/interp`, named on its first line (`#!`), is not there",
        ),
        (
            crlf,
            "with a carriage return at its end, which is not there: the script has CRLF line ends",
        ),
        (crlf_args, "its first line ends in a carriage return"),
    ] {
        let out = run(
            cairn()
                .args(["backup", "--stdin-from-command", "--", program, "app"])
                .env("HOME", &home)
                .env("XDG_DATA_HOME", home.join("data"))
                .env("XDG_CONFIG_HOME", home.join("config")),
            None,
        );
        assert_eq!(out.code, 1, "{program}: {out}");
        assert!(
            out.stderr.contains(&format!("run `{program} app`")),
            "{out}"
        );
        assert!(out.stderr.contains(says), "{program}: {out}");
        assert!(!home.join("data/cairn").exists(), "{program}: {out}");
    }
}

/// The command runs without the repository's password in its
/// environment (a dump may run as another user, who could read it from
/// `/proc`), and is waited for even where whatever started cairn ignored
/// SIGCHLD, which exec passes on: the kernel then reaped the command
/// itself, and every dump failed ("No child processes").
#[test]
fn the_command_gets_no_password_and_is_waited_for_with_sigchld_ignored() {
    let repo = Repo::new();
    let out = backup_command(
        &repo,
        &["--stdin-filename", "env"],
        &[
            "sh",
            "-c",
            "echo \"password=[$CAIRN_PASSWORD]\"; echo \"home=[$HOME]\"",
        ],
    )
    .success();
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    let env = fs::read_to_string(target.join("env")).unwrap();
    assert!(env.starts_with("password=[]\n"), "{env}: {out}");
    assert!(
        !env.contains("home=[]"),
        "the rest of the environment is passed: {env}"
    );

    // Started with SIGCHLD ignored, which exec passes on.
    let ignoring_sigchld = |command: &[&str]| {
        let mut c = repo.cmd(&[
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "x",
            "--",
        ]);
        c.args(command);
        // SAFETY: sets a signal's disposition between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            c.pre_exec(|| {
                libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                Ok(())
            });
        }
        run(&mut c, None)
    };
    let failed = ignoring_sigchld(&["sh", "-c", "echo dump; exit 3"]);
    assert_eq!(failed.code, 1, "{failed}");
    assert!(failed.stderr.contains("exited with status 3"), "{failed}");
    ignoring_sigchld(&["echo", "dump"]).success();
    assert_eq!(repo.snapshots().len(), 2);
}

/// What a stream is named is checked before the repository is opened,
/// as a usage error: a command with no file name (`/`), a name with a
/// control character (it names the default set too, `host:name`).
#[test]
fn a_streams_name_that_cannot_be_is_a_usage_error() {
    let repo = Repo::new();
    for (extra, command, says) in [
        (&[][..], &["/"][..], "the command has no file name"),
        // No command at all: said, without a usage line making paths
        // and --repo out to be required.
        (
            &[],
            &[],
            "--stdin-from-command needs the command after `--`",
        ),
        (
            &["--stdin-filename", "nl\nname"],
            &["echo", "x"],
            "control characters",
        ),
        (
            &["--stdin-filename", "esc\x1b[31m"],
            &["echo", "x"],
            "control characters",
        ),
        // Named after a command whose file name holds one: said so, not
        // as a --stdin-filename nobody gave.
        (
            &[],
            &["/nonexistent/e\ncho"],
            "the command's file name \"e\\ncho\"",
        ),
    ] {
        let out = backup_command(&repo, extra, command);
        assert_eq!(out.code, 2, "{command:?}: {out}");
        assert!(out.stderr.contains(says), "{command:?}: {out}");
        assert!(!out.stderr.contains("Usage:"), "{command:?}: {out}");
    }
    assert!(repo.snapshots().is_empty());
}

/// A shell reports a pipe's last status: the README's recipe sets
/// `pipefail`, so a producer that fails in the pipe leaves no snapshot,
/// and cairn warns of a pipe run without it.
#[test]
fn a_pipe_in_a_shell_needs_pipefail() {
    let repo = Repo::new();
    let failing = "(printf partial; exit 1) | cat";
    let out = backup_command(
        &repo,
        &[],
        &["bash", "-c", &format!("set -o pipefail; {failing}")],
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("exited with status 1"), "{out}");
    assert!(!out.stderr.contains("without pipefail"), "{out}");
    assert_eq!(repo.snapshots().len(), 0, "{out}");
    let out = backup_command(&repo, &["--json"], &["printf", "whole"]);
    assert_eq!(out.json()["pipe_without_pipefail"], false, "{out}");

    // Without it the dump that failed is stored as good, as the shell
    // says: cairn cannot tell, but warns of the pipe, and says so in its
    // report too, where a nightly job reads it.
    let out = backup_command(&repo, &["--json"], &["sh", "-c", failing]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["pipe_without_pipefail"], true, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "warning: `sh -c '{failing}'` runs a pipe without pipefail"
        )),
        "{out}"
    );
    assert!(out.stderr.contains("set -o pipefail"), "{out}");
    assert_eq!(
        repo.snapshots().len(),
        2,
        "the whole dump's and this: {out}"
    );
    // So it does of a shell run through another program, as cron jobs
    // do (it did not).
    let lock = repo.scratch("lock");
    let lock = lock.to_str().unwrap();
    for command in [
        &["env", "/bin/bash", "-c", failing][..],
        &["nice", "-n", "5", "/bin/bash", "-c", failing],
        &["timeout", "1h", "/bin/bash", "-ec", failing],
        // Programs that run a shell themselves.
        &["su", "root", "-c", failing],
        &["flock", lock, "-c", failing],
    ] {
        let out = backup_command(&repo, &[], command);
        assert_eq!(out.code, 0, "{command:?}: {out}");
        assert!(
            out.stderr.contains("runs a pipe without pipefail"),
            "{command:?}: {out}"
        );
    }

    // `||` is no pipe, and a program that is no shell is not looked at.
    for command in [
        &["sh", "-c", "printf a || printf b"][..],
        &["printf", "a|b"],
        &["bash", "-o", "pipefail", "-c", "printf a | cat"],
        &["env", "bash", "-o", "pipefail", "-c", "printf a | cat"],
        // A script that reads each command's status itself.
        &["bash", "-c", "printf a | cat; exit ${PIPESTATUS[0]}"],
        // `sh` a word of another program's, not a shell run.
        &["printf", "%s", "sh", "|"],
    ] {
        let out = backup_command(&repo, &["--stdin-filename", "x"], command);
        assert_eq!(out.code, 0, "{command:?}: {out}");
        assert!(!out.stderr.contains("pipefail"), "{command:?}: {out}");
    }
}

#[test]
fn a_command_killed_by_a_signal_leaves_no_snapshot() {
    let repo = Repo::new();
    let out = backup_command(
        &repo,
        &["--stdin-filename", "app.sql"],
        &["sh", "-c", "printf partial; kill -KILL $$"],
    );
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("was killed by signal 9 (SIGKILL)"),
        "{out}"
    );
    assert!(out.stderr.contains("no snapshot written"), "{out}");
    assert!(repo.snapshots().is_empty());
}

#[test]
fn a_command_that_succeeds_restores_byte_for_byte() {
    let repo = Repo::new();
    let dump = repo.scratch("dump");
    let mut data = b"-- dump\nCOPY t FROM stdin;\n".repeat(10_000);
    data.extend(random_bytes(31, 1_200_000));
    data.extend(b"\0 trailing \xff");
    write(&dump, &data);
    let dump = dump.to_str().unwrap();

    // Named after the command's file name by default.
    let out = backup_command(&repo, &["--json"], &["cat", dump]).success();
    let snap = out.json();
    assert_eq!(snap["paths"], serde_json::json!(["cat"]));
    assert_eq!(snap["summary"]["bytes_read"], data.len() as u64);
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_eq!(list_paths(&target), vec![Path::new("cat")]);
    assert!(fs::read(target.join("cat")).unwrap() == data);

    // Or by --stdin-filename; the command's standard error passes through.
    let script = format!("echo dumping >&2; cat '{dump}'");
    let out = backup_command(
        &repo,
        &["--stdin-filename", "app.sql", "--json"],
        &["sh", "-c", &script],
    )
    .success();
    assert!(out.stderr.contains("dumping"), "{out}");
    assert_eq!(out.json()["paths"], serde_json::json!(["app.sql"]));
    let target = repo.scratch("target-named");
    repo.restore("latest", &target, &[]);
    assert_eq!(list_paths(&target), vec![Path::new("app.sql")]);
    assert!(fs::read(target.join("app.sql")).unwrap() == data);
}

#[test]
fn an_empty_output_is_stored_with_a_warning_and_exit_code_3() {
    let repo = Repo::new();
    let out = backup_command(&repo, &["--stdin-filename", "app.sql", "--json"], &["true"]);
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr
            .contains("warning: the output of `true` was empty"),
        "{out}"
    );
    let id = out.json()["id"].as_str().unwrap().to_string();
    assert_eq!(ids(&repo.snapshots()), vec![id]);
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_eq!(fs::read(target.join("app.sql")).unwrap(), b"");
}

/// The pids of the processes whose command line mentions `marker`.
fn processes_mentioning(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_backup_that_fails_kills_its_command() {
    let repo = Repo::new();
    // The command blocks opening a FIFO nobody writes to: it never ends
    // by itself, nor does a closed pipe end it.
    let fifo = repo.scratch("fifo");
    mkfifo(&fifo, 0o600);
    let fifo = fifo.to_str().unwrap();
    let script = format!("read x < '{fifo}'");

    // An exclusive lock the backup cannot take: it fails once the
    // command runs.
    let r = cairn::Repository::open(Arc::new(LocalBackend::new(&repo.path)), PASSWORD.as_bytes())
        .unwrap();
    let held = lock::acquire(
        r.backend_arc(),
        r.key(),
        true,
        "gc",
        std::time::Duration::ZERO,
    )
    .unwrap();
    let mut cmd = script_backup(&repo, &script);
    // A backup that waited for the command would wait forever: given up
    // on after two minutes, it fails the test instead of hanging it.
    let out = run_within(&mut cmd, 120);
    drop(held);
    let left = processes_mentioning(fifo);
    for &pid in &left {
        // SAFETY: kill has no memory preconditions; the pid is the
        // leftover command, stopped so it does not outlive the test.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let out = out.expect("the failed backup waited for its command");
    assert_eq!(out.code, 11, "{out}");
    assert!(left.is_empty(), "the command outlived the backup: {out}");
    assert!(repo.snapshots().is_empty());
}

/// Whether process `pid` is gone (or a zombie no one reaped: it runs no
/// more).
fn ended(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// A cairn killed while its command runs (SIGTERM from `timeout` or a
/// service manager that signals only cairn; or SIGKILL) takes the command
/// with it: before, a dump ran on, orphaned, writing into a pipe nobody
/// read.
#[test]
fn a_killed_backup_takes_its_command_with_it() {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let repo = Repo::new();
        let pidfile = repo.scratch("pid");
        let script = format!("echo $$ > '{}'; exec sleep 300", pidfile.display());
        let mut cairn = script_backup(&repo, &script)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let pid = loop {
            if let Some(pid) = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                break pid;
            }
            assert!(
                started.elapsed().as_secs() < 60,
                "the command did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // SAFETY: kill has no memory preconditions; the pid is cairn's.
        unsafe { libc::kill(cairn.id() as i32, signal) };
        let _ = cairn.wait();
        let killed = std::time::Instant::now();
        while !ended(pid) && killed.elapsed().as_secs() < 30 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let orphaned = !ended(pid);
        if orphaned {
            // SAFETY: as above; the leftover command, stopped so it does
            // not outlive the test.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        assert!(!orphaned, "signal {signal}: the command outlived cairn");
        assert!(repo.snapshots().is_empty());
    }
}
