//! The producer of a stream backup: a command cairn runs itself (`backup
//! --stdin-from-command`), whose standard output is the stream.
//!
//! In a shell pipe (`pg_dump app | cairn backup --stdin`) cairn sees only
//! the end of its input, never whether the producer succeeded, so a dump
//! that died halfway is stored as if whole. A [`Producer`] makes the exit
//! status part of the stream: [`Stream::finish`] waits for the command
//! once its output has been read to the end, and fails unless it exited
//! with 0, before anything names the stream's data, so no snapshot of a
//! failed dump is written.
//!
//! The command is run without a shell: the first word is looked up in
//! `PATH`, the others are its arguments as given. It inherits cairn's
//! standard input, standard error (its messages reach the operator as
//! they are) and environment, but for `CAIRN_PASSWORD` (and a remote
//! repository's credentials, see [`Producer::spawn_without`]): the
//! repository's secrets are no business of a database's dump, which may
//! run as another user (`runuser -u postgres -- pg_dump`), able to read
//! its own environment. A producer that is dropped before it was
//! waited for (cairn failed: a repository error, a lock it could not
//! take) is killed and reaped, so no dump runs on behind a backup that
//! gave up. One whose cairn is killed (SIGTERM from a timeout or a
//! service manager that signals only cairn, or SIGKILL) gets SIGTERM from
//! the kernel (`PR_SET_PDEATHSIG`), so a dump does not run on, orphaned,
//! into a pipe nobody reads.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};

use super::Stream;
use crate::error::{Error, Result};

/// A running producer command, read through [`Read`].
#[derive(Debug)]
pub struct Producer {
    /// The command as a shell would show it, for messages.
    shown: String,
    child: Child,
    stdout: ChildStdout,
    /// Set once the command was waited for.
    reaped: bool,
}

impl Producer {
    /// Starts `argv` (program, then arguments) with its standard output
    /// piped to the returned value. Fails if `argv` is empty or the
    /// program cannot be started (not found, not executable).
    pub fn spawn(argv: &[OsString]) -> Result<Producer> {
        Producer::spawn_without(argv, &[])
    }

    /// [`Producer::spawn`], with the variables `withheld` taken out of the
    /// command's environment too (the credentials of a remote repository:
    /// a dump run as another user could read them, and they may change
    /// or delete every backup in the bucket).
    pub fn spawn_without(argv: &[OsString], withheld: &[&str]) -> Result<Producer> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::Invalid("no command given to run".into()));
        };
        let shown = show_command(argv);
        let parent = std::process::id() as libc::pid_t;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_remove("CAIRN_PASSWORD")
            .stdin(Stdio::inherit())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for name in withheld {
            command.env_remove(name);
        }
        // An ignored SIGCHLD (whatever started cairn may have ignored it,
        // and exec passes that on) has the kernel reap the command as it
        // ends, and its exit status, which decides whether the dump is
        // stored, is lost: every wait failed, "No child processes".
        // SAFETY: setting a signal's disposition to its default.
        unsafe {
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        }
        // SAFETY: between fork and exec the closure makes only
        // async-signal-safe system calls (prctl, getppid, kill), and
        // allocates nothing.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(move || {
                // Sent when the thread that started it ends: the
                // command's thread, which reaps or kills the producer
                // before it ends; or when cairn is killed.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // cairn may have died before the call above.
                if libc::getppid() != parent {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                Ok(())
            })
        };
        let mut child = command
            .spawn()
            .map_err(|e| Error::io(format_args!("run `{shown}`"), e))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        Ok(Producer {
            shown,
            child,
            stdout,
            reaped: false,
        })
    }

    /// Checks that `argv`'s program can be found and run, as
    /// [`Producer::spawn`] would find it (a path, else a search of
    /// `PATH`), before anything else is done: a backup of a command that
    /// cannot start would otherwise make the default repository first.
    /// Fails as `spawn` does, naming the command.
    pub fn check(argv: &[OsString]) -> Result<()> {
        let Some(program) = argv.first() else {
            return Err(Error::Invalid("no command given to run".into()));
        };
        let shown = show_command(argv);
        let runnable = |p: &std::path::Path| -> io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            let md = std::fs::metadata(p)?;
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::EACCES))
            }
        };
        let found = if program.as_bytes().contains(&b'/') {
            runnable(program.as_ref()).map(|()| std::path::PathBuf::from(program))
        } else {
            // As `execvp` searches, with its default where PATH is unset.
            let path =
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/bin:/usr/bin".into());
            let mut first = io::Error::from_raw_os_error(libc::ENOENT);
            let mut hit = None;
            for dir in std::env::split_paths(&path) {
                match runnable(&dir.join(program)) {
                    Ok(()) => {
                        hit = Some(dir.join(program));
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => first = e,
                    Err(_) => {}
                }
            }
            hit.ok_or(first)
        };
        let found = found.and_then(|p| interpreter_found(&p));
        found.map_err(|e| Error::io(format_args!("run `{shown}`"), e))
    }

    /// The command as a shell would show it.
    pub fn command(&self) -> &str {
        &self.shown
    }
}

impl Read for Producer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Stream for Producer {
    fn describe(&self) -> String {
        format!("the output of `{}`", self.shown)
    }

    /// Waits for the command (its output is at its end, but it may still
    /// be running) and fails unless it exited with status 0.
    fn finish(&mut self) -> Result<()> {
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io(format_args!("wait for `{}`", self.shown), e))?;
        self.reaped = true;
        if status.success() {
            return Ok(());
        }
        Err(Error::ProducerFailed {
            command: self.shown.clone(),
            status: show_status(status),
        })
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if !self.reaped {
            // Killing a process that has exited but is not yet reaped is
            // harmless (it is a zombie, its pid not reused); the wait then
            // reaps it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How `status` ended a producer that did not succeed, as a phrase:
/// "exited with status 1", "was killed by signal 9 (SIGKILL)".
fn show_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGHUP => " (SIGHUP)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGQUIT => " (SIGQUIT)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGPIPE => " (SIGPIPE)",
                libc::SIGTERM => " (SIGTERM)",
                _ => "",
            };
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("was killed by signal {sig}{name}{core}")
        }
        None => format!("ended with {status}"),
    }
}

/// Whether the script at `path`, if it is one (`#!` on its first line),
/// names an interpreter that is there: the kernel's refusal of one that
/// is not reads as the script itself missing ("No such file or
/// directory", of a file right there). A line ending in a carriage
/// return (a script saved with CRLF line ends) names an interpreter
/// with one at its end, said as such.
fn interpreter_found(path: &std::path::Path) -> io::Result<()> {
    let mut head = [0u8; 256];
    let n = match std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) {
        Ok(n) => n,
        // Not readable by this user (execute-only): the kernel reads it.
        Err(_) => return Ok(()),
    };
    let Some(line) = head[..n].strip_prefix(b"#!") else {
        return Ok(());
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.trim_ascii_start();
    let interpreter = line
        .split(|&b| b == b' ' || b == b'\t')
        .next()
        .unwrap_or_default();
    if interpreter.is_empty() {
        return Ok(());
    }
    let shown = String::from_utf8_lossy(interpreter);
    let missing = |why: String| Err(io::Error::new(io::ErrorKind::NotFound, why));
    if let Some(bare) = interpreter.strip_suffix(b"\r") {
        return missing(format!(
            "its first line names the interpreter `{}` with a carriage return at its end, \
             which is not there: the script has CRLF line ends (`sed -i 's/\\r$//' FILE`)",
            String::from_utf8_lossy(bare)
        ));
    }
    // The interpreter there, but the line's last argument ends in a
    // carriage return (`#!/bin/sh -e` saved with CRLF): the interpreter
    // refuses it ("Illegal option -"), said after the repository opened.
    if line.ends_with(b"\r") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "its first line ends in a carriage return, which the interpreter takes as part of \
             its last argument: the script has CRLF line ends (`sed -i 's/\\r$//' FILE`)",
        ));
    }
    if !std::path::Path::new(std::ffi::OsStr::from_bytes(interpreter)).exists() {
        return missing(format!(
            "its interpreter `{}`, named on its first line (`#!`), is not there",
            shown.escape_debug()
        ));
    }
    Ok(())
}

/// `argv` as a shell command line: words of plain characters as they
/// are, others in single quotes.
fn show_command(argv: &[OsString]) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    argv.iter()
        .map(|w| {
            let w = w.to_string_lossy();
            if !w.is_empty() && w.chars().all(plain) {
                w.into_owned()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn commands_are_shown_as_a_shell_would_take_them() {
        assert_eq!(show_command(&argv(&["pg_dump", "app"])), "pg_dump app");
        assert_eq!(
            show_command(&argv(&["sh", "-c", "printf 'a'; exit 1", ""])),
            r"sh -c 'printf '\''a'\''; exit 1' ''"
        );
    }

    #[test]
    fn a_producer_fails_unless_it_exits_with_0() {
        let run = |script: &str| {
            let mut p = Producer::spawn(&argv(&["sh", "-c", script])).unwrap();
            let mut out = Vec::new();
            p.read_to_end(&mut out).unwrap();
            (out, p.finish())
        };
        let (out, end) = run("printf whole");
        assert_eq!(out, b"whole");
        end.unwrap();
        let (out, end) = run("printf partial; exit 4");
        assert_eq!(out, b"partial");
        let e = end.unwrap_err().to_string();
        assert!(e.contains("exited with status 4"), "{e}");
        let (_, end) = run("kill -TERM $$");
        let e = end.unwrap_err().to_string();
        assert!(e.contains("killed by signal 15 (SIGTERM)"), "{e}");
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error() {
        let e = Producer::spawn(&argv(&["/nonexistent/cairn-producer"])).unwrap_err();
        assert!(
            e.to_string().contains("run `/nonexistent/cairn-producer`"),
            "{e}"
        );
        assert!(Producer::spawn(&[]).is_err());
    }
}
