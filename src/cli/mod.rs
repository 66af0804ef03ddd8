//! Command-line interface: argument parsing and output. The library does
//! the work; each command file turns arguments into options, calls it, and
//! prints the result.

mod backup;
mod init;
mod key;
mod maint;
mod output;
mod restore;
mod show;

use crate::escape::Show;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use crate::backend::cache::Cache;
use crate::backend::local::LocalBackend;
use crate::backend::retry::{RetryBackend, RetryPolicy};
use crate::backend::s3::{self, S3Backend, S3Options};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::human_bytes;
use crate::repo::{lock, space, Repository};
use crate::snapshot::{Named, SnapshotEntry, SnapshotFilter, Snapshots};

/// cairn: deduplicating, encrypted snapshots of your directories.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where every command's help lists the options below, after its own.
const REPO: &str = "Repository options";
const REMOTE: &str = "Remote store options (S3)";

/// Options accepted before or after the subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Repository location: a directory, or s3://BUCKET/PREFIX. Default:
    /// the user's default repository under the data dir.
    /// Any bytes, as a path may hold (a folder named on a system of
    /// another encoding).
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPO", global = true, help_heading = REPO)]
    repo: Option<std::ffi::OsString>,
    /// File holding the repository password (first line). Wins over
    /// CAIRN_PASSWORD, CAIRN_PASSWORD_FILE and CAIRN_KEY_FILE in the
    /// environment; not with --key-file.
    #[arg(long, global = true, help_heading = REPO, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Open the repository with a key file written by `cairn key export`
    /// instead of a password (no password is asked for or derived); not
    /// with --password-file. In the environment: CAIRN_KEY_FILE, which
    /// wins over CAIRN_PASSWORD and CAIRN_PASSWORD_FILE (--password-file
    /// wins over it).
    #[arg(long, global = true, help_heading = REPO, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// How long to wait for a conflicting lock: numbers with units s, m
    /// (minutes), h, d, e.g. 30s, 10m, 1h30m; a bare number is seconds.
    #[arg(long, global = true, help_heading = REPO, default_value = "0s", value_name = "DURATION",
          value_parser = parse_duration)]
    lock_wait: Duration,
    /// S3 endpoint URL, e.g. http://127.0.0.1:9000 (default: AWS). The
    /// credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// AWS_SESSION_TOKEN.
    #[arg(long, env = "CAIRN_S3_ENDPOINT", global = true, help_heading = REMOTE)]
    s3_endpoint: Option<String>,
    /// S3 signing region.
    #[arg(long, env = "AWS_REGION", global = true, help_heading = REMOTE, default_value = "us-east-1")]
    s3_region: String,
    /// Address buckets as BUCKET.host instead of host/BUCKET (path style).
    #[arg(long, env = "CAIRN_S3_VIRTUAL_HOST", global = true, help_heading = REMOTE,
          value_parser = clap::builder::BoolishValueParser::new())]
    s3_virtual_host: bool,
    /// Requests in flight at once to a remote store, over all threads
    /// (parts of multipart uploads and ranged reads included).
    #[arg(long, env = "CAIRN_CONNECTIONS", global = true, help_heading = REMOTE, default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    connections: u16,
    /// How long a request to a remote store may go without progress (no
    /// upload bytes going out, no answer, or an answer pause) before it
    /// fails and is retried; an upload's answer gets 1 s more per 256 KiB
    /// sent, up to 4 MiB.
    #[arg(long, env = "CAIRN_S3_TIMEOUT", global = true, help_heading = REMOTE, default_value = "60s",
          value_parser = parse_timeout)]
    s3_timeout: Duration,
    /// Tries per remote operation before giving up on transient errors
    /// (5xx answers, timeouts, refused or reset connections).
    #[arg(long, env = "CAIRN_RETRIES", global = true, help_heading = REMOTE, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    retries: u32,
    /// Do not use the local metadata cache of remote repositories.
    #[arg(long, env = "CAIRN_NO_CACHE", global = true, help_heading = REMOTE,
          value_parser = clap::builder::BoolishValueParser::new())]
    no_cache: bool,
    /// Folder of the metadata cache (default: the user cache dir).
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true, help_heading = REMOTE)]
    cache_dir: Option<PathBuf>,
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
    /// Print a repository object as JSON (a blob as its raw bytes).
    Cat(show::CatArgs),
    /// Restore a snapshot, or part of it, into a directory.
    Restore(restore::RestoreArgs),
    /// Check the repository; with --read-data, every byte.
    ///
    /// Exits 0 when it finds nothing wrong, and 1 when it finds damage
    /// (each problem on a line of its own, with what mends it) or cannot
    /// check everything.
    Verify(maint::VerifyArgs),
    /// Remove snapshots by id or by a retention policy.
    Forget(maint::ForgetArgs),
    /// Delete data no snapshot uses; repack mostly-unused packs and merge
    /// small ones.
    Gc(maint::GcArgs),
    /// Rebuild the index, or salvage damaged snapshots.
    Repair(maint::RepairArgs),
    /// Remove stale locks.
    Unlock(init::UnlockArgs),
    /// Raise the repository to the newest format this cairn writes.
    Upgrade(init::UpgradeArgs),
    /// Export the master key to a file, for opening without a password.
    #[command(subcommand)]
    Key(key::KeyCommand),
}

/// `value` as the pretty JSON every command's `--json` prints.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("JSON of plain data")
}

/// Parses a `--lock-wait` duration: numbers with units `s` (seconds), `m`
/// (minutes), `h` (hours) or `d` (days), alone or combined (`90`, `30s`,
/// `10m`, `1h30m`, `1d`); a bare number is seconds. Unlike
/// `forget --keep-within`, `m` means minutes here. At most
/// [`crate::LONGEST_WAIT`] (36500d).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let longest = crate::LONGEST_WAIT.as_secs() / 86400;
    let bad = || {
        format!(
            "{s:?} is not a duration like 30s, 10m or 1h30m \
             (units: s, m = minutes, h, d; at most {longest}d)"
        )
    };
    let secs = if t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse().map_err(|_| bad())?
    } else {
        crate::sum_units(t, |c| match c {
            's' => Some(1),
            'm' => Some(60),
            'h' => Some(3600),
            'd' => Some(86400),
            _ => None,
        })
        .map_err(|e| match e {
            Some(c) => format!("{s:?}: unknown unit {c:?} (use s, m = minutes, h or d)"),
            None => bad(),
        })?
    };
    if secs > crate::LONGEST_WAIT.as_secs() {
        return Err(format!(
            "{s:?} is too long: give at most {longest}d (100 years)"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// A [`parse_duration`] that is not zero.
fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: a timeout must be at least 1s")),
        d => Ok(d),
    }
}

/// Resolved global settings shared by commands.
pub(crate) struct Context {
    global: GlobalArgs,
}

/// Where the repository is.
pub(crate) enum Place {
    /// A directory; `true` when it is the implicit default repository.
    Local(PathBuf, bool),
    /// A bucket and key prefix.
    S3(String, String),
}

impl Context {
    /// The repository's place.
    fn place(&self) -> Result<Place> {
        // Checked whatever the repository, as the other S3 options are: a
        // mistyped endpoint is said before it is needed.
        if let Some(e) = self.global.s3_endpoint.as_deref().filter(|e| !e.is_empty()) {
            s3::check_endpoint(e, false).map_err(Error::into_usage)?;
        }
        // A URL is text; a path that is not is a folder's.
        let text = self
            .global
            .repo
            .as_deref()
            .map(|r| r.to_str().unwrap_or_default());
        match (&self.global.repo, text) {
            (Some(_), Some(r)) if r.starts_with("s3://") => {
                let (bucket, prefix) = s3::parse_url(r).map_err(Error::into_usage)?;
                // Virtual-host addressing with an IP endpoint is said only
                // where it is used: a local repository's command is not
                // refused for the settings of a bucket's.
                if let Some(e) = self.global.s3_endpoint.as_deref().filter(|e| !e.is_empty()) {
                    s3::check_endpoint(e, self.global.s3_virtual_host)
                        .map_err(Error::into_usage)?;
                }
                Ok(Place::S3(bucket, prefix))
            }
            (Some(_), Some(r)) if r.contains("://") => Err(Error::Usage(format!(
                "{r:?}: unknown repository URL (use a directory or s3://BUCKET/PREFIX)"
            ))),
            // `-r "$REPO"` with REPO unset: not the current folder.
            (Some(r), _) if r.is_empty() => Err(Error::Usage(
                "an empty repository path was given: give the repository's folder or \
                 s3://BUCKET/PREFIX (is a variable in the command line unset?)"
                    .into(),
            )),
            (Some(p), _) => Ok(Place::Local(PathBuf::from(p), false)),
            (None, _) => {
                let data = dirs::data_dir().ok_or_else(|| {
                    Error::Invalid(
                        "no --repo given and no user data directory to hold a default repository"
                            .into(),
                    )
                })?;
                Ok(Place::Local(data.join("cairn").join("default"), true))
            }
        }
    }

    /// The repository's backend: a directory, or an S3 bucket behind
    /// retries.
    fn backend(&self) -> Result<Arc<dyn Backend>> {
        match self.place()? {
            Place::Local(p, _) => Ok(Arc::new(LocalBackend::new(p))),
            Place::S3(bucket, prefix) => {
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let g = &self.global;
                let s3 = S3Backend::new(S3Options {
                    bucket,
                    prefix,
                    endpoint: g.s3_endpoint.clone().filter(|e| !e.is_empty()),
                    region: g.s3_region.clone(),
                    virtual_host: g.s3_virtual_host,
                    access_key_id: env("AWS_ACCESS_KEY_ID"),
                    secret_access_key: env("AWS_SECRET_ACCESS_KEY").map(Zeroizing::new),
                    session_token: env("AWS_SESSION_TOKEN").map(Zeroizing::new),
                    connections: usize::from(g.connections),
                    timeout: g.s3_timeout,
                })?;
                let policy = RetryPolicy {
                    attempts: g.retries,
                    ..RetryPolicy::default()
                };
                let retry =
                    RetryBackend::new(Arc::new(s3), policy).with_hook(Box::new(|e, n, delay| {
                        warn(&format!("{e}; retry {n} in {:.1} s", delay.as_secs_f64()))
                    }));
                Ok(Arc::new(retry))
            }
        }
    }

    /// Where the default repository's generated password lives.
    fn default_password_file() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("cairn").join("default-repo.password"))
    }

    /// The password given explicitly, with where it came from (for
    /// messages): `--password-file` on the command line, else
    /// `CAIRN_PASSWORD`, else `CAIRN_PASSWORD_FILE`. An empty
    /// `CAIRN_PASSWORD` is refused (`CAIRN_PASSWORD=$(cat FILE)` of a file
    /// that could not be read would otherwise make or open a repository
    /// with no password at all).
    /// A password file that cannot be read, or holds none, and an empty
    /// `CAIRN_PASSWORD` are usage errors (exit 2), as an exclude file that
    /// cannot be read is: a nightly job's configuration is wrong, and
    /// nothing about the repository is known yet.
    fn explicit_password(&self) -> Result<Option<Password>> {
        if let Some(f) = &self.global.password_file {
            return Password::from_file(f, format!("--password-file {}", f.shown()))
                .map(Some)
                .map_err(as_usage);
        }
        if let Some(p) = std::env::var_os("CAIRN_PASSWORD") {
            if p.is_empty() {
                return Err(Error::Usage(
                    "CAIRN_PASSWORD is set but empty: refusing an empty password (unset it to \
                     use a password file or a prompt)"
                        .into(),
                ));
            }
            return Ok(Some(Password {
                bytes: Zeroizing::new(p.into_encoded_bytes()),
                from: "CAIRN_PASSWORD".into(),
            }));
        }
        match env_path("CAIRN_PASSWORD_FILE") {
            Some(f) => Password::from_file(&f, format!("CAIRN_PASSWORD_FILE {}", f.shown()))
                .map(Some)
                .map_err(as_usage),
            None => Ok(None),
        }
    }

    /// `--key-file` as given on the command line, if it was.
    pub(super) fn key_file_flag(&self) -> Option<&std::path::Path> {
        self.global.key_file.as_deref()
    }

    /// The exported key file to open the repository with: `--key-file`
    /// (never beside `--password-file`: see [`main`]), else
    /// `CAIRN_KEY_FILE` unless `--password-file` is on the command line (a
    /// flag wins over the environment). `CAIRN_KEY_FILE` wins over
    /// `CAIRN_PASSWORD` and `CAIRN_PASSWORD_FILE`: the password is not
    /// asked for when this gives a file.
    fn key_file(&self) -> Option<PathBuf> {
        match (&self.global.key_file, &self.global.password_file) {
            (Some(f), _) => Some(f.clone()),
            (None, Some(_)) => None,
            (None, None) => env_path("CAIRN_KEY_FILE"),
        }
    }

    /// The password from the command line, the environment, the default
    /// repository's password file, or a terminal prompt.
    fn password(&self, creating: bool) -> Result<Password> {
        if let Some(pw) = self.explicit_password()? {
            return Ok(pw);
        }
        // Opening the default repository, whose password file is gone:
        // the random password `backup` made for it was there, so that is
        // said, not only "no password" (nor a bare prompt for a password
        // nobody chose).
        let mut lost = None;
        if let Place::Local(_, true) = self.place()? {
            if let Some(f) = Self::default_password_file() {
                if f.exists() {
                    let from = format!("the default repository's password file {}", f.shown());
                    return Password::from_file(&f, from);
                }
                if !creating {
                    lost = Some(format!(
                        "the default repository's password file {} is not there: where `cairn \
                         backup` made the repository, its random password was in that file, \
                         and without it the repository cannot be opened; put the file back \
                         from your copy of it",
                        f.shown()
                    ));
                }
            }
        }
        if std::io::stdin().is_terminal() {
            if let Some(lost) = &lost {
                crate::eprint_line(format_args!(
                    "note: {lost} (or type the password, if you chose one)"
                ));
            }
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
            return Ok(Password {
                bytes: Zeroizing::new(pw.into_bytes()),
                from: "the prompt".into(),
            });
        }
        let ways = "set CAIRN_PASSWORD, pass --password-file (or CAIRN_PASSWORD_FILE), or run \
                    on a terminal";
        // A usage error, as a password file that holds none is: the job's
        // configuration lacks it.
        Err(Error::Usage(match lost {
            Some(lost) => format!("no password: {lost} (if you chose one yourself, {ways})"),
            None => format!("no password: {ways}"),
        }))
    }

    /// Worker threads for a command on `repo`: one per core locally; for a
    /// remote store at least `--connections`, so that the backend's gate
    /// (which alone limits the requests in flight) can be kept busy while
    /// workers also compress and encrypt. 0 means one per core.
    fn workers(&self, repo: &Repository) -> usize {
        if !repo.backend().prefers_ranges() {
            return 0;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        cores.max(usize::from(self.global.connections))
    }

    /// Opens the repository; a remote one reads its metadata through the
    /// local cache unless `--no-cache`.
    fn open(&self) -> Result<Repository> {
        let repo = self.open_uncached()?;
        if self.global.no_cache || !repo.backend().prefers_ranges() {
            return Ok(repo);
        }
        match self.global.cache_dir.clone().or_else(Cache::default_root) {
            // A cache that cannot be made (a read-only home, none at all)
            // costs speed, not the command: a restore must still run.
            Some(root) => match Cache::open(&root, &repo.config().repo_id) {
                Ok(cache) => Ok(repo.using_cache(cache)),
                Err(e) => {
                    warn(&format!(
                        "no metadata cache ({e}): reading everything from the store"
                    ));
                    Ok(repo)
                }
            },
            None => Ok(repo),
        }
    }

    /// The root of this host's metadata caches, unless `--no-cache`: for
    /// `verify` and `repair`, which read the store itself and look in the
    /// cache only for intact copies of packs the store lost or damaged.
    fn cache_root(&self) -> Option<PathBuf> {
        if self.global.no_cache {
            return None;
        }
        self.global.cache_dir.clone().or_else(Cache::default_root)
    }

    /// Opens the repository reading everything from the store itself (for
    /// `verify` and `repair`, which check the store, not a copy).
    fn open_uncached(&self) -> Result<Repository> {
        self.open_uncached_with_password().map(|(repo, _)| repo)
    }

    /// [`Context::open_uncached`], also returning the password (asked for
    /// once), for `verify` to try on every key file; no password when
    /// `--key-file` opened the repository.
    fn open_uncached_with_password(&self) -> Result<(Repository, Option<Zeroizing<Vec<u8>>>)> {
        let backend = self.backend()?;
        // A read the store refuses while opening (a repository folder of
        // another user's, mode 0700) is said as that, not as a bare
        // "Permission denied", and a store that does not answer as one
        // before the command began, not as one it stopped on; the key and
        // password files' own errors are theirs.
        let location = backend.location();
        // A remote store's refusal already says what to check (the
        // credentials, the bucket's policy, the clock): no user of this
        // host can mend it.
        let local = backend.local_folder().is_some();
        let refused = |e: Error| {
            let advice = if e.is_read_refused() && local {
                format!(
                    "this user may not read the repository at {location}: run cairn as a user \
                     who may (its owner, or one given read access to all of it)"
                )
            } else if e.is_transient() {
                format!(
                    "the repository at {location} could not be opened, so nothing was done: the \
                     store did not answer, which is not damage; run the command again once it \
                     answers"
                )
            } else {
                return e;
            };
            Error::Advised {
                error: Box::new(e),
                advice,
            }
        };
        // The key or password given is read first: one that cannot be
        // read, or holds no key or password, is a usage error, said before
        // anything about the repository.
        let exported = match self.key_file() {
            Some(f) => {
                let what = format!("key file {}", f.shown());
                let exported = key::read_exported(&f, &what).map_err(as_usage)?;
                Some((f, what, exported))
            }
            None => None,
        };
        let explicit = match exported {
            Some(_) => None,
            None => self.explicit_password()?,
        };
        // Without `config`, its copy opens the repository (see
        // `Repository::open`).
        let copied = || {
            backend
                .read(
                    crate::backend::FileKind::Config,
                    crate::backend::CONFIG_COPY,
                )
                .is_ok()
        };
        if !backend.exists().map_err(refused)? && !copied() {
            let missing = crate::repo::missing(backend.as_ref());
            // The default repository is made by the first backup, with a
            // random password; `init` alone wants one chosen.
            if let (Place::Local(_, true), Error::RepoMissing(m)) = (self.place()?, &missing) {
                if let Some(at) = m.strip_suffix(" (create one with `cairn init`)") {
                    return Err(Error::RepoMissing(format!(
                        "{at}: the default repository is made by the first `cairn backup` \
                         (with a random password, kept in a file it names), or by `cairn \
                         init` given a password (CAIRN_PASSWORD or --password-file)"
                    )));
                }
            }
            return Err(missing);
        }
        if let Some((f, what, exported)) = exported {
            let repo = Repository::open_exported(backend, exported, &what).map_err(refused)?;
            config_trouble(&repo);
            // Key files whose bytes are their name's: what a password
            // could open. One this user may not read is no damage (a
            // restore-only user given the exported key): taken as intact.
            let intact = |n: &String| {
                crate::id::is_hex_name(n)
                    && match repo.backend().read(crate::backend::FileKind::Key, n) {
                        Ok(b) => hex::encode(crate::id::file_hash(&b)) == *n,
                        Err(e) => e.is_read_refused(),
                    }
            };
            let keys = repo.backend().list(crate::backend::FileKind::Key);
            if keys.is_ok_and(|k| !k.iter().any(intact)) {
                warn(&format!(
                    "the repository at {} has no intact key file (keys/ is missing, empty or \
                     damaged): only an exported key like {} opens it, no password does; put \
                     keys/ back from a copy of the repository",
                    repo.backend().location(),
                    f.shown()
                ));
            }
            return Ok((repo, None));
        }
        let pw = match explicit {
            Some(pw) => pw,
            None => self.password(false)?,
        };
        let repo = Repository::open(backend, &pw.bytes)
            .map_err(refused)
            .map_err(|e| pw.name_in(e))?;
        config_trouble(&repo);
        Ok((repo, Some(pw.bytes)))
    }
}

/// Warns that `repo` was opened from `config.copy`, `config` being
/// missing or damaged, and what mends it.
fn config_trouble(repo: &Repository) {
    if let Some(said) = repo.config_trouble() {
        warn(&said);
    }
}

/// Keeps `config.copy` the bytes of `config` (see
/// [`Repository::keep_config_copy`]), for the commands that write;
/// failing, it warns, as the command's own work is not at stake.
pub(crate) fn keep_config_copy(repo: &Repository) {
    if let Err(e) = repo.keep_config_copy() {
        warn(&format!("config.copy not brought up to date: {e}"));
    }
}

/// Refuses `path` as a file to create when something is there already, or
/// when the folder to hold it is not one (a usage error, so that a
/// command checks it before it asks for a password): an existing file is
/// never overwritten.
fn check_new_file(path: &std::path::Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::Usage(exists_already(path)));
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(folder) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(Error::Usage(format!(
            "cannot create {}: {} is not a folder",
            path.shown(),
            folder.shown()
        ))),
        Err(e) => Err(Error::Usage(format!(
            "cannot create {}: folder {}: {e}",
            path.shown(),
            folder.shown()
        ))),
    }
}

/// The refusal of a file to create at `path`, where one is.
fn exists_already(path: &std::path::Path) -> String {
    format!(
        "{} exists already: choose another name (an existing file is never overwritten)",
        path.shown()
    )
}

/// Creates `path` readable by its owner only and writes `bytes` durably
/// (the default repository's password, an exported key); an existing file
/// is never overwritten. The bytes go to a temporary file beside it
/// (`NAME.cairn-partial-PID-N`, mode 0600), which is synced, then renamed
/// to `path` only if nothing is there (`RENAME_NOREPLACE`, or a hard link
/// where the filesystem lacks that), and the folder synced: a crash leaves
/// no partial file under the name, to look like a key or to stand in the
/// way of a retry, only a temporary that says what it is.
fn write_new_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Found there by the rename, after the check below: another process
    // made it meanwhile.
    let exists = || Error::Invalid(exists_already(path));
    check_new_file(path)?;
    let Some(name) = path.file_name() else {
        return Err(Error::Invalid(format!("{} names no file", path.shown())));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let (tmp, mut f) = (0u32..1000)
        .map(|n| {
            let mut t = name.to_os_string();
            t.push(format!(".cairn-partial-{}-{n}", std::process::id()));
            let t = dir.join(t);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&t);
            (t, f)
        })
        .find_map(|(t, f)| match f {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
            f => Some(
                f.map(|f| (t.clone(), f))
                    .map_err(|e| Error::path("create", &t, e)),
            ),
        })
        .unwrap_or_else(|| {
            Err(Error::Invalid(format!(
                "{}: no free temporary name beside it (remove the `.cairn-partial-` files)",
                path.shown()
            )))
        })?;
    let placed = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::path("write", &tmp, e))
        .and_then(|()| {
            drop(f);
            crate::fault::point("private-file-before-rename");
            match rename_noreplace(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
                // A filesystem without hard links (FAT, exFAT): written
                // again under its name, made only if not there, and
                // synced; a crash meanwhile leaves it short, which a key
                // file's own check refuses.
                Err(e) if refuses_links(&e) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(path)
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::AlreadyExists => exists(),
                            _ => Error::path("create", path, e),
                        })?;
                    f.write_all(bytes)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| Error::path("write", path, e))
                        .inspect_err(|_| {
                            let _ = std::fs::remove_file(path);
                        })?;
                    std::fs::remove_file(&tmp).map_err(|e| Error::path("remove", &tmp, e))
                }
                Err(e) => Err(Error::path("rename into place", path, e)),
            }
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::path("sync folder", dir, e))
}

/// Whether `e`, from [`rename_noreplace`], says the filesystem makes no
/// hard links (exfat-fuse: `EPERM`).
fn refuses_links(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
    )
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`):
/// `renameat2(RENAME_NOREPLACE)`, or where the filesystem does not take
/// that flag, a hard link to `to` and the removal of `from`.
fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    let Err(e) = crate::fsmeta::rename_with(from, to, libc::RENAME_NOREPLACE) else {
        return Ok(());
    };
    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(e);
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// A password and where it came from.
pub(crate) struct Password {
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    /// `CAIRN_PASSWORD`, `--password-file FILE`, `the prompt`, …
    from: String,
}

impl Password {
    /// Where it came from: `CAIRN_PASSWORD`, `--password-file FILE`, …
    pub(crate) fn from(&self) -> &str {
        &self.from
    }

    /// The first line of the password file `f`, which `from` names.
    fn from_file(f: &std::path::Path, from: String) -> Result<Password> {
        Ok(Password {
            bytes: read_password_file(f)?,
            from,
        })
    }

    /// `e`, saying where the password came from if it is
    /// [`Error::WrongPassword`], and what in it may not be meant (see
    /// [`oddity`]).
    fn name_in(&self, e: Error) -> Error {
        match e {
            Error::WrongPassword { location, .. } => Error::WrongPassword {
                location,
                from: Some(match oddity(&self.bytes) {
                    Some(odd) => format!("{}, which {odd}, part of the password", self.from),
                    None => self.from.clone(),
                }),
            },
            e => e,
        }
    }
}

/// What in a password that did not open the repository may be there by
/// mistake: a file saved by an editor with a byte-order mark, or as
/// UTF-16, or a space at either end (a line break is not part of it;
/// those are).
fn oddity(password: &[u8]) -> Option<&'static str> {
    if password.starts_with(&[0xef, 0xbb, 0xbf]) {
        Some("begins with a byte-order mark (U+FEFF, as some editors save text)")
    } else if password.starts_with(&[0xff, 0xfe]) || password.starts_with(&[0xfe, 0xff]) {
        Some("is UTF-16 text (a byte-order mark and NUL bytes)")
    } else if password.contains(&0) {
        Some("holds NUL bytes (UTF-16 text?)")
    } else if password.first().is_some_and(|b| matches!(b, b' ' | b'\t')) {
        Some("begins with a space or tab")
    } else if password.last().is_some_and(|b| matches!(b, b' ' | b'\t')) {
        Some("ends with a space or tab")
    } else {
        None
    }
}

/// `e` as a usage error (exit 2), its text kept: for a file the command
/// line (or its variable) names that cannot be read or holds nothing
/// usable.
fn as_usage(e: Error) -> Error {
    match e {
        Error::Usage(_) => e,
        e => Error::Usage(e.to_string()),
    }
}

/// A path from the environment variable `name`; none when it is unset or
/// empty.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The first line of a password file.
fn read_password_file(f: &std::path::Path) -> Result<Zeroizing<Vec<u8>>> {
    let text =
        Zeroizing::new(std::fs::read(f).map_err(|e| Error::path("read password file", f, e))?);
    let first = text.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    if first.is_empty() {
        let what = if text.iter().all(|b| b.is_ascii_whitespace()) {
            "is empty"
        } else {
            "has an empty first line (the password is its first line)"
        };
        return Err(Error::Invalid(format!(
            "password file {} {what}",
            f.shown()
        )));
    }
    Ok(Zeroizing::new(first.to_vec()))
}

/// Prints a warning to stderr, one line: control characters in it (from
/// a file name, say) are escaped, so that none can forge a line of the
/// log or drive the terminal (see [`output::escape_controls`]).
pub(crate) fn warn(msg: &str) {
    crate::eprint_line(format_args!("warning: {}", output::escape_controls(msg)));
}

/// Prints `msg` as an error a command goes on past (one of a restore's
/// entries), with control characters escaped; the command's exit code
/// says it failed.
pub(crate) fn error_line(msg: &str) {
    crate::eprint_line(format_args!("error: {}", output::escape_controls(msg)));
}

/// Warns of every damaged snapshot file in `all`, saying what the command
/// did with it (`consequence`).
fn warn_damaged(all: &Snapshots, consequence: &str) {
    for d in &all.damaged {
        warn(&d.warning(consequence));
    }
}

/// The snapshot `spec` names among those that decode, for a command that
/// reads it (restore, ls, cat), after warning of the damaged files left
/// out; a spec naming a damaged file says so rather than "not found".
fn pick<'a>(all: &'a Snapshots, spec: &str, filter: &SnapshotFilter) -> Result<&'a SnapshotEntry> {
    warn_damaged(
        all,
        "left out of the snapshots an id or `latest` is chosen from",
    );
    match all.resolve_named(spec, filter)? {
        Named::Good(e) => Ok(e),
        Named::Damaged(d) => Err(Error::corrupt(
            format!("snapshot file snapshots/{}", d.id),
            format!(
                "{}; it cannot be read (`cairn verify` checks the repository)",
                d.reason
            ),
        )),
    }
}

/// A path in a snapshot (`ls SNAP PATH`, `restore SNAP:PATH`) with `.`
/// and `..` resolved by its words alone: `/tmp/../tmp` is `/tmp`, and `..`
/// at the root stays there. A snapshot's trees hold no entry named `..`
/// and these commands follow no symbolic link inside it, so the words
/// are all there is to go by. Bytes, as names are: a name need not be
/// UTF-8. A path ending in `/` or `/.` keeps one `/` at its end: it names
/// a folder, and a file there is an error
/// ([`crate::repo::Repository::tree_at_bytes`]).
fn snapshot_path(path: &[u8]) -> OsString {
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    let folder = path.ends_with(b"/") || path.ends_with(b"/.");
    let end: &[u8] = if folder && !comps.is_empty() {
        b"/"
    } else {
        b""
    };
    OsString::from_vec([&b"/"[..], &comps.join(&b'/'), end].concat())
}

/// `e`, met looking up `given` (a path in a snapshot, as given) in a
/// snapshot, with a word on why where `given` is relative: read from the
/// snapshot's root, a path written from the current folder is not found,
/// and the error named its first component only (`/s`).
fn relative_hint(given: &[u8], e: Error) -> Error {
    match e {
        Error::NotFound(what) if !given.starts_with(b"/") && what.starts_with("path ") => {
            use crate::escape::Show;
            use std::os::unix::ffi::OsStrExt;
            let here = std::env::current_dir().map_or(String::new(), |d| {
                let whole = snapshot_path(&[d.as_os_str().as_bytes(), b"/", given].concat());
                format!(": from this folder, {}", whole.as_bytes().shown())
            });
            Error::NotFound(format!(
                "path {} in the snapshot (its paths are absolute, as backed up{here})",
                given.shown()
            ))
        }
        e => e,
    }
}

/// Runs `command`, one that takes a lock to free space or check the
/// repository (forget, gc, repair, verify), then tops the space reserve
/// up again whatever the outcome, saying so where the room is not there
/// (see [`crate::repo::space`]). Its lock comes from [`lock_repo`].
fn keeping_reserve<T>(
    repo: &Repository,
    dry_run: bool,
    command: impl FnOnce() -> Result<T>,
) -> Result<T> {
    // A dry run writes nothing, takes no exclusive lock, so gives no
    // reserve back; on a repository it may not write (read-only, another
    // user's) a top-up would only warn that it cannot.
    if dry_run {
        return command();
    }
    let outcome = command().map_err(|e| {
        // A report written to a full disk says so, and no more: the
        // repository's filesystem may have room to spare.
        if !e.is_storage_full() || output::is_stdout(&e) {
            return e;
        }
        // The reserve, if there was one, is used up: the room must come
        // from elsewhere. One still there was not given back (the
        // command began with room to spare, and the disk filled as it
        // ran): said as it is.
        let kept = matches!(repo.backend().reserve(), Ok(Some(n)) if n > 0);
        Error::Advised {
            error: Box::new(e),
            advice: format!(
                "the repository's filesystem is full{}: free some space on it (other than \
                 the repository's files) and run it again; what it had not finished is left \
                 as it was",
                if kept {
                    " (it filled while the command ran; the room set aside for commands \
                     that free space is still there)"
                } else {
                    ", and no room set aside for this command is left"
                }
            ),
        }
    });
    top_up_reserve(repo, true);
    outcome
}

/// Takes a lock on `repo` for `command`. A lock that cannot be written
/// for want of space is written again with the space reserve given back;
/// an exclusive one then also gives the reserve back where the
/// filesystem has less free than its size (no backup runs beside it to
/// take that space).
fn lock_repo(
    ctx: &Context,
    repo: &Repository,
    exclusive: bool,
    command: &str,
) -> Result<lock::LockGuard> {
    let take = || {
        lock::acquire(
            repo.backend_arc(),
            repo.key(),
            exclusive,
            command,
            ctx.global.lock_wait,
        )
    };
    let guard = on_reserve_if_full(repo, take)?;
    keep_config_copy(repo);
    // What the repository holds is read from here on: a holder of a lock
    // taken for stale meanwhile may have published an index table.
    repo.reload_index();
    if exclusive {
        match space::release_if_short(repo) {
            Ok(0) => {}
            Ok(n) => note_reserve_used(n),
            Err(e) => warn(&format!("could not give back the space reserve: {e}")),
        }
    }
    Ok(guard)
}

/// A shared lock for a command that only reads (restore, verify, `ls`,
/// `cat`), so that gc cannot remove what it reads while it runs, nor
/// start while it does. Where the store refuses the lock file's write for
/// good (a read-only disk or mount, credentials that may only read, as a
/// restore years later often finds it; or a full disk, whose space
/// reserve is for the commands that free space), and no exclusive lock is
/// held there, the command goes on without it and says what that risks
/// (see [`lock::acquire_reader`]).
fn read_lock(ctx: &Context, repo: &Repository, command: &str) -> Result<Option<lock::LockGuard>> {
    match lock::acquire_reader(
        repo.backend_arc(),
        repo.key(),
        command,
        ctx.global.lock_wait,
    )? {
        lock::Acquired::Held(guard) => Ok(Some(guard)),
        lock::Acquired::Unwritable(e) => {
            warn(&format!(
                "cannot lock the repository ({e}): going on without a lock; no gc holds it \
                 now, but one started meanwhile could remove data this {command} reads"
            ));
            Ok(None)
        }
    }
}

/// The lock of a dry run (of forget, gc, upgrade, repair snapshots),
/// which writes nothing: a shared lock, taken as a reader's is. Where the
/// store refuses the lock file for good (a read-only mount or
/// credentials, a full disk) and no exclusive lock is held, the dry run
/// goes on under a guard that holds none ([`lock::LockGuard::unheld`]),
/// and says so.
fn dry_run_lock(ctx: &Context, repo: &Repository, command: &str) -> Result<lock::LockGuard> {
    let guard = match lock::acquire_reader(
        repo.backend_arc(),
        repo.key(),
        command,
        ctx.global.lock_wait,
    )? {
        lock::Acquired::Held(guard) => guard,
        lock::Acquired::Unwritable(e) => {
            warn(&format!(
                "cannot lock the repository ({e}): the dry run goes on without a lock; \
                 what it shows is the repository as it is now, and a command writing \
                 meanwhile may change it"
            ));
            lock::LockGuard::unheld(repo.backend_arc(), repo.key(), command, &e)
        }
    };
    // As `lock_repo`: a holder of a lock taken for stale meanwhile may
    // have published an index table.
    repo.reload_index();
    Ok(guard)
}

/// `write`, run again on the space reserve where it failed for want of
/// space (for commands that free space, and `unlock`, which must write a
/// lock of its own to read the store's clock).
fn on_reserve_if_full<T>(repo: &Repository, write: impl Fn() -> Result<T>) -> Result<T> {
    match write() {
        Err(e) if e.is_storage_full() => match space::release(repo)? {
            0 => Err(e),
            n => {
                note_reserve_used(n);
                write()
            }
        },
        other => other,
    }
}

fn note_reserve_used(bytes: u64) {
    crate::eprint_line(format_args!(
        "note: the repository's filesystem is nearly full: using the {} set aside for this",
        human_bytes(bytes)
    ));
}

/// Grows the repository's space reserve back to its size where the room
/// is there; says so where it is not and `tell` (commands that free space
/// tell, backups and init do only when they cannot measure it).
fn top_up_reserve(repo: &Repository, tell: bool) {
    if let Some(w) = reserve_shortfall(repo, tell) {
        if !RESERVE_TOLD.load(std::sync::atomic::Ordering::Relaxed) {
            warn(&w);
        }
    }
}

/// Set once a command has told of its space reserve itself (gc, so that
/// its `--json` report carries the warning): the top-up after the
/// command then does not say it twice.
static RESERVE_TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tops up the space reserve now, for a command whose report says what
/// it found: the warning a short reserve gives, if any, which is also
/// printed, and not again after the command.
pub(super) fn top_up_reserve_now(repo: &Repository) -> Option<String> {
    let w = reserve_shortfall(repo, true)?;
    warn(&w);
    RESERVE_TOLD.store(true, std::sync::atomic::Ordering::Relaxed);
    Some(w)
}

/// Tops up the space reserve, giving what to warn of: a reserve left
/// short only if `tell`, one that could not be set aside at all always.
fn reserve_shortfall(repo: &Repository, tell: bool) -> Option<String> {
    match space::replenish(repo) {
        Ok(space::Reserve::Whole) => None,
        Ok(space::Reserve::Short { held, wanted, free }) if tell => {
            // In bytes where the two would read alike ("16.0 MiB is set
            // aside" of 16.0 MiB wanted, a few KiB short).
            let (wanted, held) = if human_bytes(wanted) == human_bytes(held) {
                (format!("{wanted} bytes"), format!("{held} bytes"))
            } else {
                (human_bytes(wanted), human_bytes(held))
            };
            Some(format!(
                "the repository's filesystem has too little free space to set aside the \
                 {wanted} that forget and gc need when it is full: {held} is set aside, {} more \
                 is free; make room on it",
                human_bytes(free)
            ))
        }
        Ok(space::Reserve::Short { .. }) => None,
        Err(e) => Some(format!("could not set aside the space reserve: {e}")),
    }
}

/// A write that failed for want of space in a repository that keeps a
/// space reserve, with what to do about it; other errors as they are.
fn explain_full(repo: &Repository, e: Error) -> Error {
    if !e.is_storage_full() {
        return e;
    }
    let reserve =
        std::path::Path::new(&repo.backend().location()).join(crate::backend::local::RESERVE);
    let inodes = repo.backend().free_inodes().ok().flatten();
    let bytes = repo.backend().free_space().ok().flatten();
    // What a failed backup's sealers had in flight, given back since.
    let plenty = (64u64 << 20).max(4 * u64::from(repo.config().pack_size));
    let shortage = crate::fsmeta::shortage(inodes, bytes, plenty);
    if shortage == crate::fsmeta::Shortage::Inodes {
        // The reserve is bytes: it is no help here.
        return Error::Advised {
            error: Box::new(e),
            advice: "the repository's filesystem is out of inodes (file entries), \
                     though it may have bytes free: remove files on it other than the \
                     repository's, or run `cairn forget` (with --gc) or `cairn gc`, which \
                     free the inodes of the packs nothing uses"
                .into(),
        };
    }
    // Few inodes are left too: either may be what ran out.
    let also = match (shortage, inodes, bytes) {
        (crate::fsmeta::Shortage::Both, Some(n), Some(b)) => format!(
            " (or out of inodes, file entries; {n} inodes and {} free now; where inodes \
             are what lacks, remove files on it other than the repository's)",
            human_bytes(b)
        ),
        _ => String::new(),
    };
    let advice = match repo.backend().reserve() {
        Ok(Some(held)) if held > 0 => format!(
            "the repository's filesystem is full{also}: `cairn forget` (with --gc) and `cairn \
             gc` can still run and free space, using the room set aside for them in {}",
            reserve.shown()
        ),
        Ok(Some(_)) => format!(
            "the repository's filesystem is full{also}, and no room is set aside in {} for \
             `cairn forget` and `cairn gc`: free some space on it (other than the \
             repository's files) so that they can run",
            reserve.shown()
        ),
        _ => return e,
    };
    Error::Advised {
        error: Box::new(e),
        advice,
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // SIGPIPE stays ignored, as the Rust runtime leaves it: a write to a
    // closed pipe fails with EPIPE, which `output` turns into a quiet end
    // of a listing (`cairn snapshots | head -1`), and which cannot kill a
    // backup that has written its snapshot (`cairn backup … | true`).
    // Commands cairn starts get the default action back (std resets it).
    // Buffers of a MiB and more (chunks of up to 8 MiB, 16 MiB packs)
    // come and go all through a backup or restore. glibc raises its mmap
    // threshold each time such a mapped buffer is freed; from then on they
    // are carved from the heap arenas, whose memory fragments and is kept:
    // peak RSS of a first backup rose by a half. A fixed threshold keeps
    // each of them a mapping of its own, returned when freed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a malloc tunable set at start-up, before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let cli = Cli::parse();
    // Checked here, not by clap's `conflicts_with`, which misses the two
    // given on either side of the subcommand.
    if cli.global.password_file.is_some() && cli.global.key_file.is_some() {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--password-file and --key-file cannot be given together: the first opens \
                 the repository with a password, the second with an exported key instead; \
                 give one",
            )
            .exit();
    }
    let ctx = Context { global: cli.global };
    catch_refused_threads();
    let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        on_deep_stack(move || run_command(&ctx, cli.command))
    })) {
        Ok(result) => result,
        // Said by the hook; what the command held (locks, temporary
        // files) was let go as the panic unwound.
        Err(_) if THREAD_REFUSED.load(std::sync::atomic::Ordering::SeqCst) => {
            return ExitCode::from(crate::error::EXIT_ERROR);
        }
        Err(panic) => std::panic::resume_unwind(panic),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader of a listing went away: it wanted no more.
        Err(e) if output::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Each line escaped on its own: a name in the error cannot
            // forge a line, and advice keeps its own.
            match &e {
                Error::Advised { error, advice } => crate::eprint_line(format_args!(
                    "error: {}\n{}",
                    output::escape_controls(&error.to_string()),
                    output::escape_controls(advice)
                )),
                e => crate::eprint_line(format_args!(
                    "error: {}",
                    output::escape_controls(&e.to_string())
                )),
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Set once the system refused a thread (see [`catch_refused_threads`]).
static THREAD_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the panic of a thread the system refused to start (a limit on
/// processes or address space: `ulimit -u`, `ulimit -v`, a container's
/// pids limit), which the standard library's spawning raises wherever
/// cairn starts workers, into one error line and exit 1, instead of a
/// panic's message and exit 101; the panics that carry it out of the
/// worker threads are not printed. Any other panic is printed as ever.
fn catch_refused_threads() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let text = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("");
        use std::sync::atomic::Ordering;
        if text.starts_with("failed to spawn thread") {
            if !THREAD_REFUSED.swap(true, Ordering::SeqCst) {
                crate::eprint_line(format_args!(
                    "error: the system refused to start a thread ({}): raise the limit on \
                     processes or on memory (`ulimit -u`, `ulimit -v`, a container's pids \
                     limit) and run the command again; what it wrote is whole or left for gc",
                    output::escape_controls(text)
                ));
            }
            return;
        }
        if THREAD_REFUSED.load(Ordering::SeqCst) {
            return;
        }
        previous(info);
    }));
}

/// The stack a command runs on: restore, `ls` and `repair snapshots`
/// walk a snapshot's folders by recursion, a few KiB a level, and a
/// backup can store folders tens of thousands deep (its walk holds a
/// descriptor a level; the open-file limit stops it first). The main
/// thread's 8 MiB ended a restore of 4,000 levels with a stack overflow,
/// the target half restored. Only what is used of it is ever backed by
/// memory (4 GiB of address space, 1 GiB on 32-bit systems).
const DEEP_STACK: usize = if usize::BITS > 32 {
    (4u64 << 30) as usize
} else {
    1 << 30
};

/// Runs `f` on a thread of [`DEEP_STACK`] (or, where the system will not
/// reserve that much address space, of the most it will, down to a
/// sixteenth: else on this thread, as before).
fn on_deep_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let slot = std::sync::Mutex::new(Some(f));
    let take = || slot.lock().ok().and_then(|mut f| f.take());
    let mut size = DEEP_STACK;
    while size >= DEEP_STACK / 16 {
        let spawned = std::thread::scope(|s| {
            let thread = std::thread::Builder::new()
                .name("main".into())
                .stack_size(size)
                .spawn_scoped(s, || take().map(|f| f()))
                .ok()?;
            Some(
                thread
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            )
        });
        if let Some(out) = spawned {
            return out.expect("the command is taken by the one thread that runs it");
        }
        size /= 2;
    }
    take().expect("the command has not run")()
}

/// Runs the command parsed.
fn run_command(ctx: &Context, command: Command) -> Result<u8> {
    match command {
        Command::Init(a) => init::run_init(ctx, a),
        // A store that stopped answering (retries spent) is said to be no
        // damage, with what to do, as restore and gc say it.
        Command::Backup(a) => {
            backup::run(ctx, a).map_err(|e| only_transient(e, "the backup did not finish"))
        }
        Command::Snapshots(a) => show::run_snapshots(ctx, a)
            .map_err(|e| store_unavailable(e, "the snapshots could not be listed")),
        Command::Ls(a) => show::run_ls(ctx, a)
            .map_err(|e| lacking_entry(store_unavailable(e, "the listing stopped"))),
        Command::Cat(a) => {
            show::run_cat(ctx, a).map_err(|e| lacking_entry(store_unavailable(e, "cat stopped")))
        }
        Command::Restore(a) => restore::run(ctx, a).map_err(|e| {
            let done = "the restore stopped (the files it put in place are whole; run again, it \
                        restores the rest)";
            // A refused read of the repository's own files (not of the
            // target) is said as such, as the commands that read only the
            // repository say it.
            let of_repository = match (&e, ctx.place()) {
                (Error::Io { context, .. }, Ok(Place::Local(root, _))) => context
                    .split_once(' ')
                    .is_some_and(|(_, path)| std::path::Path::new(path).starts_with(&root)),
                _ => false,
            };
            lacking_entry(if of_repository {
                store_unavailable(e, done)
            } else {
                only_transient(e, done)
            })
        }),
        Command::Verify(a) => maint::run_verify(ctx, a)
            .map_err(|e| store_unavailable(e, "verify stopped before it had checked everything")),
        Command::Forget(a) => maint::run_forget(ctx, a).map_err(|e| {
            store_unavailable(e, "forget stopped (what it had removed stays removed)")
        }),
        Command::Gc(a) => maint::run_gc(ctx, a).map_err(|e| {
            store_unavailable(
                e,
                "gc stopped (what it had removed stays removed, and nothing a snapshot uses \
                 is; run it again to finish)",
            )
        }),
        Command::Repair(a) => {
            maint::run_repair(ctx, a).map_err(|e| store_unavailable(e, "the repair stopped"))
        }
        Command::Unlock(a) => {
            init::run_unlock(ctx, a).map_err(|e| only_transient(e, "unlock stopped"))
        }
        Command::Upgrade(a) => init::run_upgrade(ctx, a)
            .map_err(|e| only_transient(e, "the upgrade stopped (a run again finishes it)")),
        Command::Key(c) => key::run(ctx, c),
    }
}

/// `e`, where a blob the index lacks stopped a reader (the snapshot's
/// root tree, say), with what tells what that loses and what mends it:
/// it was the bare "an index entry for blob … not found".
fn lacking_entry(e: Error) -> Error {
    if !crate::index::is_lacking(&e) {
        return e;
    }
    Error::Advised {
        error: Box::new(e),
        advice: format!(
            "the index lacks it (a table lost or left unread, or the entries of a lost pack \
             dropped): {}",
            crate::index::LACKING_MENDS
        ),
    }
}

/// `e` with [`Error::unless_store_unavailable`]'s advice where the store
/// did not answer or refused a read (a folder of the repository this
/// user may not list, which came bare until December 2026), for commands
/// that touch no files but the repository's; an error a command words
/// itself is advised already, and passes as it is.
fn store_unavailable(e: Error, done: &str) -> Error {
    // A refused write (a folder it may list but not write to) is no
    // refused read.
    let reading = match &e {
        Error::Io { context, .. } => ["list ", "read ", "open ", "stat ", "map "]
            .iter()
            .any(|op| context.starts_with(op)),
        _ => true,
    };
    if e.is_transient() || reading {
        e.unless_store_unavailable(done)
    } else {
        e
    }
}

/// `e` with [`Error::unless_store_unavailable`]'s advice where the store
/// did not answer; any other error as it is: a refused read of backup's
/// source or restore's target is no refusal of the store's.
fn only_transient(e: Error, done: &str) -> Error {
    if e.is_transient() {
        e.unless_store_unavailable(done)
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn snapshot_paths_resolve_dot_dot_by_their_words() {
        for (given, resolved) in [
            ("/", "/"),
            ("", "/"),
            ("/tmp/../tmp", "/tmp"),
            ("tmp/./a//b/", "/tmp/a/b/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a"),
            ("/a/..//", "/"),
            ("/../..", "/"),
            ("/a/b/../../c", "/c"),
            ("/a/..b/c..", "/a/..b/c.."),
        ] {
            assert_eq!(snapshot_path(given.as_bytes()), resolved, "{given}");
        }
        assert_eq!(
            snapshot_path(b"/a/caf\xe9/../d\xff/./x").as_bytes(),
            b"/a/d\xff/x"
        );
    }

    #[test]
    fn lock_wait_durations() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("0s"), Ok(0));
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("10m"), Ok(600), "m is minutes for --lock-wait");
        assert_eq!(secs("2h"), Ok(7200));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("1d"), Ok(86400));
        for bad in ["", "m", "5x", "1y", "10m5", "-3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("1y").unwrap_err().contains("unknown unit"));
        assert_eq!(
            secs("36500d"),
            Ok(36500 * 86400),
            "100 years is the longest"
        );
        for long in [
            "36501d",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999d",
        ] {
            let e = parse_duration(long).unwrap_err();
            assert!(e.contains("36500d"), "{long}: {e}");
        }
    }
}
