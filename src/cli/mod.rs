//! Command-line interface: argument parsing and output. The library does
//! the work; each command file turns arguments into options, calls it, and
//! prints the result.

mod backup;
mod init;
mod maint;
mod restore;
mod show;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use crate::backend::local::LocalBackend;
use crate::error::{Error, Result};
use crate::repo::Repository;

/// cairn: deduplicating, encrypted snapshots of your directories.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options accepted before or after the subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Repository location (a directory). Default: the user's default
    /// repository under the data dir.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPO", global = true)]
    repo: Option<PathBuf>,
    /// File holding the repository password (first line).
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// How long to wait for a conflicting lock (e.g. 30s, 10m, 1h).
    #[arg(long, global = true, default_value = "0s", value_parser = parse_duration)]
    lock_wait: Duration,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a repository.
    Init(init::InitArgs),
    /// Back up paths (or standard input) as a new snapshot.
    Backup(backup::BackupArgs),
    /// List snapshots.
    Snapshots(show::SnapshotsArgs),
    /// List the files in a snapshot.
    Ls(show::LsArgs),
    /// Print a repository object as JSON.
    Cat(show::CatArgs),
    /// Restore a snapshot, or part of it, into a directory.
    Restore(restore::RestoreArgs),
    /// Check the repository; with --read-data, every byte.
    Verify(maint::VerifyArgs),
    /// Remove snapshots by id or by a retention policy.
    Forget(maint::ForgetArgs),
    /// Delete data no snapshot uses; repack mostly-unused packs.
    Gc(maint::GcArgs),
    /// Rebuild the index, or salvage damaged snapshots.
    Repair(maint::RepairArgs),
    /// Remove stale locks.
    Unlock(init::UnlockArgs),
}

/// Parses `90`, `30s`, `10m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 10m, 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// Resolved global settings shared by commands.
pub(crate) struct Context {
    global: GlobalArgs,
}

impl Context {
    /// The repository path and whether it is the implicit default.
    fn repo_path(&self) -> Result<(PathBuf, bool)> {
        match &self.global.repo {
            Some(p) => Ok((p.clone(), false)),
            None => {
                let data = dirs::data_dir().ok_or_else(|| {
                    Error::Invalid(
                        "no --repo given and no user data directory to hold a default repository"
                            .into(),
                    )
                })?;
                Ok((data.join("cairn").join("default"), true))
            }
        }
    }

    fn backend(&self) -> Result<Arc<LocalBackend>> {
        Ok(Arc::new(LocalBackend::new(self.repo_path()?.0)))
    }

    /// Where the default repository's generated password lives.
    fn default_password_file() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("cairn").join("default-repo.password"))
    }

    /// The password given explicitly: `CAIRN_PASSWORD`, or a password file.
    fn explicit_password(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        if let Some(p) = std::env::var_os("CAIRN_PASSWORD") {
            return Ok(Some(Zeroizing::new(p.into_encoded_bytes())));
        }
        match &self.global.password_file {
            Some(f) => read_password_file(f).map(Some),
            None => Ok(None),
        }
    }

    /// The password from the environment, a file, the default repository's
    /// key file, or a terminal prompt.
    fn password(&self, creating: bool) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(pw) = self.explicit_password()? {
            return Ok(pw);
        }
        if self.repo_path()?.1 {
            if let Some(f) = Self::default_password_file().filter(|f| f.exists()) {
                return read_password_file(&f);
            }
        }
        if std::io::stdin().is_terminal() {
            let pw = rpassword::prompt_password("repository password: ")
                .map_err(|e| Error::io("read password", e))?;
            if creating {
                let again = rpassword::prompt_password("repeat password: ")
                    .map_err(|e| Error::io("read password", e))?;
                if again != pw {
                    return Err(Error::Invalid("the passwords do not match".into()));
                }
            }
            if pw.is_empty() {
                return Err(Error::Invalid("empty password".into()));
            }
            return Ok(Zeroizing::new(pw.into_bytes()));
        }
        Err(Error::Invalid(
            "no password: set CAIRN_PASSWORD, pass --password-file (or CAIRN_PASSWORD_FILE), or run on a terminal".into(),
        ))
    }

    /// Opens the repository.
    fn open(&self) -> Result<Repository> {
        let backend = self.backend()?;
        if !crate::backend::Backend::exists(&*backend)? {
            return Err(Error::RepoMissing(backend.location_string()));
        }
        let pw = self.password(false)?;
        Repository::open(backend, &pw)
    }
}

/// The first line of a password file.
fn read_password_file(f: &std::path::Path) -> Result<Zeroizing<Vec<u8>>> {
    let text =
        Zeroizing::new(std::fs::read(f).map_err(|e| Error::path("read password file", f, e))?);
    let first = text.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    if first.is_empty() {
        return Err(Error::Invalid(format!(
            "password file {} is empty",
            f.display()
        )));
    }
    Ok(Zeroizing::new(first.to_vec()))
}

impl LocalBackend {
    fn location_string(&self) -> String {
        self.root().display().to_string()
    }
}

/// Prints a warning to stderr.
pub(crate) fn warn(msg: &str) {
    eprintln!("warning: {msg}");
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // Die quietly on a closed pipe (`cairn ls … | head`), like other tools.
    // SAFETY: resetting a signal disposition at start-up, before threads.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let ctx = Context { global: cli.global };
    let result = match cli.command {
        Command::Init(a) => init::run_init(&ctx, a),
        Command::Backup(a) => backup::run(&ctx, a),
        Command::Snapshots(a) => show::run_snapshots(&ctx, a),
        Command::Ls(a) => show::run_ls(&ctx, a),
        Command::Cat(a) => show::run_cat(&ctx, a),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Verify(a) => maint::run_verify(&ctx, a),
        Command::Forget(a) => maint::run_forget(&ctx, a),
        Command::Gc(a) => maint::run_gc(&ctx, a),
        Command::Repair(a) => maint::run_repair(&ctx, a),
        Command::Unlock(a) => init::run_unlock(&ctx, a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
