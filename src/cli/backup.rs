//! `cairn backup`.

use crate::escape::Show;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::output::{self, outln};
use super::{warn, Context};
use crate::archiver::{self, BackupOptions, Producer, Stream};
use crate::backend::Backend;
use crate::error::{Error, Result, EXIT_PARTIAL};
use crate::filter::read_pattern_file;
use crate::human_bytes;
use crate::repo::{InitOptions, Repository};
use crate::snapshot::SnapshotKind;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Full,
    Incremental,
    Differential,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up; names starting with `-` go after
    /// `--` (`cairn backup -- -notes`).
    // An empty one is let through to `run`, which says what usually makes
    // it so; clap's own refusal ("a value is required … but none was
    // supplied") read as if no path had been given at all.
    #[arg(value_parser = clap::builder::TypedValueParser::map(
        clap::builder::OsStringValueParser::new(),
        PathBuf::from,
    ))]
    paths: Vec<PathBuf>,
    /// Backup set (default: host and paths).
    #[arg(long)]
    set: Option<String>,
    /// Snapshot kind: incremental (parent = newest of the set),
    /// differential (parent = newest full), or full (read everything).
    #[arg(long, value_enum, default_value = "incremental")]
    kind: Kind,
    /// Tag to record (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host name to record.
    #[arg(long)]
    host: Option<String>,
    /// Exclude entries matching a glob, and what is beneath them
    /// (repeatable). A glob without `/` matches names; one starting with
    /// `/`, the whole absolute path; one with `/` elsewhere, the path's
    /// last components; a trailing `/`, directories only.
    #[arg(long = "exclude")]
    excludes: Vec<std::ffi::OsString>,
    /// Read exclude patterns from a file, one per line.
    #[arg(long)]
    exclude_file: Vec<PathBuf>,
    /// Do not cross into other filesystems below the paths given (each
    /// path given is walked on its own filesystem, even a mount point).
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Back up standard input as one file (named by --stdin-filename,
    /// which it needs).
    #[arg(long)]
    stdin: bool,
    /// Run the command given after `--` (without a shell) and back up its
    /// standard output as one file; no snapshot is written unless it
    /// exits with status 0. For a pipe, run
    /// `bash -c 'set -o pipefail; pg_dump app | gzip'`: without pipefail
    /// a shell's status is only the last command's.
    #[arg(long, conflicts_with = "stdin")]
    stdin_from_command: bool,
    /// Name of the file holding standard input (or the command's output;
    /// default: the command's file name, e.g. `pg_dump`) in the snapshot;
    /// only with --stdin or --stdin-from-command.
    #[arg(long)]
    stdin_filename: Option<String>,
    /// After `--`: with --stdin-from-command, the command and its
    /// arguments; without, more paths to back up (for names starting
    /// with `-`).
    #[arg(last = true, value_name = "COMMAND | PATH")]
    command: Vec<OsString>,
    /// Record this time instead of now, in RFC 3339 (e.g.
    /// 2024-05-01T02:00:00Z or 2024-05-01T04:00:00+02:00): for importing
    /// older backups; not a time in the future. The parent is still the
    /// newest snapshot of the set.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    time: Option<i64>,
    /// Print the snapshot as JSON instead of the summary line, with what
    /// the backup could not do: `unreadable` (entries left out),
    /// `changed_while_read` (files held as read) and `repository_damage`
    /// (what it read around), each a list of messages, `empty_stream`
    /// (true when a stream of 0 bytes was stored), `clock_behind` (why
    /// the host's clock looks behind the set's newest snapshot or the
    /// parent's start, or null), and `pipe_without_pipefail` (true when
    /// `--stdin-from-command` ran a shell pipe without `pipefail`).
    #[arg(long)]
    json: bool,
}

/// `e` with advice that it is no damage where it is a read the store
/// refused: a remote store's, or a local repository's file or folder
/// this user may not read (a `list` of `index/` came bare until December
/// 2026). A refused read of the sources is theirs, said as it is.
fn refused_by_store(repo: &Repository, e: Error) -> Error {
    let store_s = match (&e, repo.backend().local_folder()) {
        (Error::Backend { .. }, _) => true,
        (Error::Io { context, .. }, Some(root)) => context
            .split_once(' ')
            .is_some_and(|(_, path)| std::path::Path::new(path).starts_with(root)),
        _ => false,
    };
    if store_s && e.is_read_refused() {
        e.unless_store_unavailable("the backup stopped, and wrote no snapshot")
    } else {
        e
    }
}

/// What `backup --json` prints: the snapshot as `snapshots --json` lists
/// it, and the problems the warnings named, so that a nightly job's
/// report need not parse standard error.
#[derive(serde::Serialize)]
struct BackupReport<'a> {
    #[serde(flatten)]
    entry: &'a crate::snapshot::SnapshotEntry,
    /// Entries that could not be read, with why: not in the snapshot.
    unreadable: &'a [String],
    /// Files that changed while they were read, and folders while they
    /// were walked: in the snapshot as read.
    changed_while_read: &'a [String],
    /// Damage in the repository the backup read around.
    repository_damage: &'a [String],
    /// The stream backed up (`--stdin`, `--stdin-from-command`) was of 0
    /// bytes: most likely a producer that failed before writing anything.
    empty_stream: bool,
    /// Of `summary.bytes_read`, those in holes of sparse files: told by
    /// the filesystem, not read.
    bytes_in_holes: u64,
    /// Why this host's clock looks behind (it read a time before the
    /// set's newest snapshot), or null.
    clock_behind: Option<&'a str>,
    /// `--stdin-from-command` ran a shell pipe without `pipefail`: a
    /// producer failing in it leaves a dump stored as good (a warning,
    /// not exit 3, as the dump may be whole).
    pipe_without_pipefail: bool,
}

/// Refuses a `--time` of `t` later than `now` (ns since the epoch): the
/// next incremental backup takes a file whose change time is before its
/// parent's time as read by it (see `racy_window_ns`), so a parent dated
/// ahead would have it trust files changed right after this backup read
/// them, and the snapshot would be its set's newest, and every
/// incremental's parent, until the clock caught up.
fn refuse_future(t: i64, now: i64) -> Result<()> {
    if t > now {
        return Err(Error::Invalid(format!(
            "--time {} is in the future: a snapshot dated ahead would be its set's newest, \
             every incremental backup's parent, until then; give the time the backed-up \
             data was current (a time in the past, for importing older backups)",
            crate::format_time(t)
        )));
    }
    Ok(())
}

/// Parses an RFC 3339 time into ns since the epoch.
fn parse_time(s: &str) -> std::result::Result<i64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim())
        .map_err(|_| format!("{s:?} is not an RFC 3339 time like 2024-05-01T02:00:00Z"))?;
    t.timestamp_nanos_opt().ok_or_else(|| {
        format!(
            "{s:?} is outside the times a snapshot can hold, 1677-09-21T00:12:44Z to \
             2262-04-11T23:47:16Z"
        )
    })
}

/// Opens the repository, creating the default one on first use.
fn open_or_create_default(ctx: &Context) -> Result<Repository> {
    let (path, is_default) = match ctx.place()? {
        super::Place::Local(p, d) => (p, d),
        super::Place::S3(..) => return ctx.open(),
    };
    let backend = Arc::new(crate::backend::local::LocalBackend::new(&path));
    if !is_default || backend.exists()? {
        return ctx.open();
    }
    // An exported key opens the repository it was exported from; a new
    // default repository gets a new key, which that file would not open
    // (as `init` refuses `--key-file`).
    if let Some(f) = ctx.key_file() {
        return Err(Error::RepoMissing(format!(
            "{}, the default repository, yet; the key file {} (from {}) opens only the \
             repository it was exported from: give that repository with --repo \
             (or CAIRN_REPO), or back up without a key file to create the default \
             repository",
            path.shown(),
            f.shown(),
            if ctx.key_file_flag().is_some() {
                "--key-file"
            } else {
                "CAIRN_KEY_FILE"
            }
        )));
    }
    // Said whichever password it gets: a nightly job that lost its
    // CAIRN_REPO but kept its password would otherwise back up into a
    // new default repository, exit 0, without a word (until December
    // 2026 only a generated password was announced).
    let created = |from: &str| {
        crate::eprint_line(format_args!(
            "note: no --repo or CAIRN_REPO given: created the default repository at {}, \
             with the password from {from}; if you meant another repository, give it with \
             --repo (or CAIRN_REPO)",
            path.shown()
        ))
    };
    let password = match ctx.explicit_password()? {
        Some(pw) => {
            let repo = Repository::init(backend, &pw.bytes, &InitOptions::default())?;
            created(pw.from());
            return Ok(repo);
        }
        None => {
            let file = Context::default_password_file().ok_or_else(|| {
                Error::Invalid(
                    "no user config directory to keep the default repository's password".into(),
                )
            })?;
            if file.exists() {
                let repo = Repository::init(
                    backend,
                    &super::read_password_file(&file)?,
                    &InitOptions::default(),
                )?;
                created(&file.shown().to_string());
                return Ok(repo);
            }
            let pw = hex::encode(crate::crypto::random_bytes::<32>());
            if let Some(dir) = file.parent() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| Error::path("create folder", dir, e))?;
            }
            let line = zeroize::Zeroizing::new(format!("{pw}\n"));
            super::write_new_private(&file, line.as_bytes())?;
            let banner = "*".repeat(73);
            crate::eprint_line(format_args!(
                "{banner}\n\
                 * NOTE: created the default repository at {}\n\
                 * Its password is a random key stored in {}\n\
                 * (readable only by you). Copy that file somewhere safe: without it,\n\
                 * these backups cannot be read. Use --repo and CAIRN_PASSWORD to choose.\n\
                 {banner}",
                path.shown(),
                file.shown()
            ));
            zeroize::Zeroizing::new(pw.into_bytes())
        }
    };
    Repository::init(backend, &password, &InitOptions::default())
}

/// The name a command's output is stored under without
/// `--stdin-filename`: the file name of its program (`pg_dump` for
/// `/usr/bin/pg_dump app`).
fn command_file_name(command: &[OsString]) -> Result<String> {
    if command.first().is_none_or(|program| program.is_empty()) {
        return Err(Error::Usage(
            "--stdin-from-command: no command given after `--` (is a variable in the \
             command line unset?)"
                .into(),
        ));
    }
    command
        .first()
        .and_then(|program| Path::new(program).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Error::Usage(
                "--stdin-from-command: the command has no file name to store its output \
                 under; give --stdin-filename"
                    .into(),
            )
        })
}

/// `tags` with each kept once, where first given: a tag given twice
/// (`--tag a --tag a`) was stored twice, and `forget --group-by tags`
/// then put the snapshot in a group of its own.
fn once_each(tags: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    tags.into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

/// Refuses a `--host`, `--set` or `--tag` value holding a control
/// character (a newline, a terminal's escape): recorded in the snapshot,
/// it would show escaped in every listing (see [`output::escape`]), and
/// `--host`, `--set` and `--tag` filters would have to repeat it.
fn refuse_control_characters(flag: &str, value: &str) -> Result<()> {
    // An empty one (a variable unset in a job's command line) names
    // nothing, and made groups `forget` shows as `set , host web`.
    if value.trim().is_empty() {
        return Err(Error::Usage(format!(
            "{flag} needs a name: an empty one was given (is a variable in the command line unset?)"
        )));
    }
    let shown = output::escape_controls(value);
    if shown == value {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{flag} \"{shown}\": control characters (newlines, tabs, terminal escapes, \
         text-direction marks) are not allowed in a host, set or tag name"
    )))
}

/// True when `command` runs a shell given a script with a pipe (`|`, not
/// `||`) and nothing mentions `pipefail` (nor `PIPESTATUS`, which a
/// script reading each command's status uses): the shell then exits with
/// the status of the pipe's last command (`gzip` of `pg_dump app |
/// gzip`), and a failed dump would be stored as a good one. The shell is
/// a word `sh`, `bash`, `dash`, `zsh`, `ksh` or `ash` followed by a `-c`
/// option (itself, or through a program that runs the rest of its words,
/// as `env`, `nice`, `timeout 1h` and `sudo -u postgres` do), `su … -c`
/// or `flock … -c` (which run one), or `ssh` (whose remote shell runs
/// its command). A guess from the words alone (a `|` quoted inside the
/// script counts too), so it only ever warns.
fn pipe_without_pipefail(command: &[OsString]) -> bool {
    let name = |word: &OsString| {
        Path::new(word)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string()
    };
    // `-c`, or a cluster of single-letter options holding it (`-ec`).
    let dash_c = |word: &OsString| {
        let w = word.as_encoded_bytes();
        w.len() >= 2
            && w[0] == b'-'
            && w[1] != b'-'
            && w[1..].iter().all(u8::is_ascii_alphabetic)
            && w.contains(&b'c')
    };
    let runs_script = |at: usize| {
        let rest = &command[at + 1..];
        match name(&command[at]).as_str() {
            "sh" | "bash" | "dash" | "zsh" | "ksh" | "ash" | "su" | "flock" => {
                rest.iter().any(dash_c)
            }
            "ssh" => true,
            _ => false,
        }
    };
    let Some(at) = (0..command.len()).find(|&at| runs_script(at)) else {
        return false;
    };
    let words: Vec<&[u8]> = command[at + 1..]
        .iter()
        .map(|a| a.as_encoded_bytes())
        .collect();
    let lone_pipe = |w: &[u8]| {
        (0..w.len())
            .any(|i| w[i] == b'|' && (i == 0 || w[i - 1] != b'|') && w.get(i + 1) != Some(&b'|'))
    };
    let mentions = |text: &[u8]| {
        words
            .iter()
            .any(|w| w.windows(text.len()).any(|x| x == text))
    };
    words.iter().any(|w| lone_pipe(w)) && !mentions(b"pipefail") && !mentions(b"PIPESTATUS")
}

pub(super) fn run(ctx: &Context, mut a: BackupArgs) -> Result<u8> {
    // Without --stdin-from-command, what follows `--` is paths, as clap's
    // hint for a name starting with `-` (`-- -notes`) says.
    if !a.stdin_from_command {
        let more = std::mem::take(&mut a.command);
        a.paths.extend(more.into_iter().map(PathBuf::from));
    }
    // Checked here rather than by the parser, whose refusal printed a
    // usage line with `--repo` and paths as required.
    if a.stdin_from_command && a.command.is_empty() {
        return Err(Error::Usage(
            "--stdin-from-command needs the command after `--` (e.g. `-- pg_dump app`)".into(),
        ));
    }
    if a.stdin && a.stdin_filename.is_none() {
        return Err(Error::Usage(
            "--stdin needs --stdin-filename NAME: the name standard input is stored under in \
             the snapshot (e.g. --stdin-filename app.sql)"
                .into(),
        ));
    }
    let stream = a.stdin || a.stdin_from_command;
    if stream && !a.paths.is_empty() {
        return Err(Error::Usage(
            "give either paths or --stdin (or --stdin-from-command), not both".into(),
        ));
    }
    // Paths keep their own names: a name for standard input given with
    // them would be dropped without a word.
    if !stream && a.stdin_filename.is_some() {
        return Err(Error::Usage(
            "--stdin-filename names standard input (or a command's output) in the snapshot: \
             give it with --stdin or --stdin-from-command, not with paths"
                .into(),
        ));
    }
    // They choose what a walk of paths reads: a stream has no entries, and
    // they would be dropped without a word.
    if stream && (!a.excludes.is_empty() || !a.exclude_file.is_empty() || a.one_file_system) {
        return Err(Error::Usage(
            "--exclude, --exclude-file and --one-file-system choose what a backup of paths \
             reads: give them with paths, not with --stdin or --stdin-from-command"
                .into(),
        ));
    }
    if !stream && a.paths.is_empty() {
        return Err(Error::Usage(
            "nothing to back up: give at least one path, --stdin or --stdin-from-command".into(),
        ));
    }
    for (flag, value) in a
        .host
        .iter()
        .map(|h| ("--host", h))
        .chain(a.set.iter().map(|s| ("--set", s)))
        .chain(a.tags.iter().map(|t| ("--tag", t)))
    {
        refuse_control_characters(flag, value)?;
    }
    // An empty argument (`cairn backup -- "$DIR"` with DIR unset) names
    // nothing; said as such rather than as a path that cannot be resolved.
    if a.paths.iter().any(|p| p.as_os_str().is_empty()) {
        return Err(Error::Usage(
            "an empty path was given: name the files and directories to back up \
             (is a variable in the command line unset?)"
                .into(),
        ));
    }
    let named = a.stdin_filename.is_some();
    let stdin_name = match (a.stdin_from_command, a.stdin_filename) {
        (true, None) => Some(command_file_name(&a.command)?),
        (_, name) if stream => name,
        _ => None,
    };
    // Before the repository is opened (or the default one made).
    if let Some(name) = &stdin_name {
        crate::tree::check_name(name.as_bytes())
            .map_err(|why| Error::Usage(format!("--stdin-filename {name:?}: {why}")))?;
        // It names the default set too (`host:name`), where a newline or a
        // terminal escape would stand in every listing, as `--set`
        // refuses them.
        let shown = output::escape_controls(name);
        if shown != name.as_str() {
            // Named after the command's file name, where none was given.
            let whose = if named {
                format!("--stdin-filename \"{shown}\"")
            } else {
                format!(
                    "the command's file name \"{shown}\", which names its output without \
                     --stdin-filename"
                )
            };
            return Err(Error::Usage(format!(
                "{whose}: control characters (newlines, tabs, terminal escapes, \
                 text-direction marks) are not allowed in a stream's name"
            )));
        }
        // Longer, it could not be restored under that name on the
        // filesystems restores write to, and a stream has no other.
        if name.len() > NAME_MAX {
            return Err(Error::Usage(format!(
                "--stdin-filename is {} bytes long, more than the {NAME_MAX} a file name may \
                 have: the stream could not be restored under it",
                name.len()
            )));
        }
    }
    if stream && !a.stdin_from_command {
        stdin_readable()?;
    }
    if let Some(t) = a.time {
        refuse_future(
            t,
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX),
        )
        .map_err(Error::into_usage)?;
    }
    let mut excludes = a.excludes;
    for f in &a.exclude_file {
        excludes.extend(read_pattern_file(f)?);
    }
    crate::filter::PathFilter::new(&excludes).map_err(Error::into_usage)?;
    // Before the repository is opened: a path that is not there would
    // otherwise have the default repository made for nothing.
    for p in &a.paths {
        crate::archiver::given_path(p)?;
    }
    if a.stdin_from_command {
        Producer::check(&a.command)?;
    }
    let repo = open_or_create_default(ctx)?;
    repo.require_whole_layout("back up")?;
    let opts = BackupOptions {
        paths: a.paths,
        set: a.set,
        kind: match a.kind {
            Kind::Full => SnapshotKind::Full,
            Kind::Incremental => SnapshotKind::Incremental,
            Kind::Differential => SnapshotKind::Differential,
        },
        tags: once_each(a.tags),
        host: a.host,
        excludes,
        one_file_system: a.one_file_system,
        stdin_name,
        workers: ctx.workers(&repo),
        lock_wait: ctx.global.lock_wait,
        time_ns: a.time,
        ..BackupOptions::default()
    };
    // Started once the repository is open (and its password asked for)
    // and the backup's lock is held: a command refused the lock never
    // runs, nor holds its database's snapshot open through a lock wait
    // (until December 2026 it was started first, and killed when the lock
    // was refused). Dropped unfinished on any error below, it is killed
    // and reaped.
    let (mut producer, lock) = if a.stdin_from_command {
        let lock = crate::repo::lock::acquire(
            repo.backend_arc(),
            repo.key(),
            false,
            "backup",
            opts.lock_wait,
        )
        .map_err(|e| super::explain_full(&repo, e))?;
        // A bucket's credentials may change or delete every backup in it:
        // withheld as the password is. (A local repository's command
        // keeps them: it may dump from S3 itself.)
        let withheld: &[&str] = if repo.backend().local_folder().is_none() {
            &[
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
            ]
        } else {
            &[]
        };
        (
            Some(Producer::spawn_without(&a.command, withheld)?),
            Some(lock),
        )
    } else {
        (None, None)
    };
    let unguarded_pipe = producer.is_some() && pipe_without_pipefail(&a.command);
    if let Some(p) = producer.as_ref().filter(|_| unguarded_pipe) {
        warn(&format!(
            "`{}` runs a pipe without pipefail: a shell's status is that of the pipe's \
             last command, so a snapshot is written even when the commands before it \
             fail; write `bash -c 'set -o pipefail; …'`",
            p.command()
        ));
    }
    let mut stdin = archiver::Stdin(std::io::stdin().lock());
    let input: &mut dyn Stream = match &mut producer {
        Some(p) => p,
        None => &mut stdin,
    };
    let result = archiver::backup_locked(&repo, &opts, input, &warn, lock)
        .map_err(|e| super::explain_full(&repo, refused_by_store(&repo, e)))?;
    super::top_up_reserve(&repo, false);
    if let Some(note) = &result.note {
        crate::eprint_line(format_args!("note: {note}"));
    }
    let s = &result.snapshot.summary;
    // A dump is never empty: a stream of no bytes is a producer that
    // failed before writing anything (which `--stdin` cannot see, and
    // which a command may report with status 0 all the same). The
    // snapshot stays, as the operator may mean it, but the run does not
    // end as a success would.
    let empty_stream = opts.stdin_name.is_some() && s.bytes_read == 0;
    // The snapshot is written: from here on, what cannot be printed does
    // not change the exit code (see `output::after_work`).
    let printed = if a.json {
        let entry = crate::snapshot::SnapshotEntry {
            id: result.id,
            snapshot: result.snapshot.clone(),
        };
        outln!(
            "{}",
            super::json(&BackupReport {
                entry: &entry,
                unreadable: &result.warnings,
                changed_while_read: &result.changed,
                repository_damage: &result.repo_warnings,
                empty_stream,
                bytes_in_holes: result.bytes_in_holes,
                clock_behind: result.clock_behind.as_deref(),
                pipe_without_pipefail: unguarded_pipe,
            })
        )
    } else {
        outln!(
            "added {} ({} stored), {} files new / {} changed / {} unmodified, {} dirs, read {}{}, {} snapshot {}",
            human_bytes(s.bytes_added),
            human_bytes(s.bytes_stored),
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            s.dirs,
            human_bytes(s.bytes_read),
            match result.bytes_in_holes {
                0 => String::new(),
                n => format!(" ({} of it holes of sparse files)", human_bytes(n)),
            },
            result.snapshot.kind.as_str(),
            result.id.short()
        )
    };
    let damage = result.repo_warnings.len() - result.repo_refused;
    if damage > 0 {
        warn(&format!(
            "the repository is damaged ({damage} problem(s), named above): the backup \
             read around it and every entry is in snapshot {}; run `cairn verify`",
            result.id.short()
        ));
    }
    if result.repo_refused > 0 {
        warn(&format!(
            "{} snapshot file(s) could not be read by this user (named above), which is no \
             damage: the backup chose its parent among the others, and every entry is in \
             snapshot {}",
            result.repo_refused,
            result.id.short()
        ));
    }
    // An entry whose extended attributes could not be read, or a folder
    // that could not be listed (stored empty), is in the snapshot all
    // the same: said apart (they were counted among the entries "not in"
    // it).
    let partly = result
        .warnings
        .iter()
        .filter(|w| crate::archiver::stored_partly(w))
        .count();
    let unread = result.warnings.len() - partly;
    if unread > 0 {
        warn(&format!(
            "{unread} {} could not be read and {} not in snapshot {}",
            if unread == 1 { "entry" } else { "entries" },
            if unread == 1 { "is" } else { "are" },
            result.id.short()
        ));
    }
    if partly > 0 {
        warn(&format!(
            "{partly} {} in snapshot {} without what could not be read (extended \
             attributes, a folder's entries)",
            if partly == 1 {
                "entry is"
            } else {
                "entries are"
            },
            result.id.short()
        ));
    }
    if !result.changed.is_empty() {
        warn(&format!(
            "{} file(s) or folder(s) changed while the backup read them: snapshot {} holds \
             them as read; back them up when nothing writes to them (or from a filesystem \
             snapshot)",
            result.changed.len(),
            result.id.short()
        ));
    }
    if let (true, Some(name)) = (empty_stream, &opts.stdin_name) {
        let what = match &producer {
            Some(p) => format!("the output of `{}`", p.command()),
            None => "the input".into(),
        };
        warn(&format!(
            "{what} was empty: snapshot {} holds {name:?} of 0 bytes; a dump \
             whose producer failed before writing anything looks like this",
            result.id.short()
        ));
    }
    if let Some(why) = &result.clock_behind {
        warn(why);
    }
    let code = if result.warnings.is_empty()
        && result.changed.is_empty()
        && result.repo_warnings.is_empty()
        && !empty_stream
        && result.clock_behind.is_none()
    {
        0
    } else {
        EXIT_PARTIAL
    };
    Ok(output::after_work(
        code,
        printed,
        &format!("snapshot {} is written", result.id.short()),
    ))
}

/// The longest file name (in bytes) Linux filesystems take.
const NAME_MAX: usize = 255;

/// Fails unless standard input is open for reading: a descriptor closed
/// (`0<&-`) or open for writing only (`0>file`) read as an empty stream,
/// and the backup stored "the input was empty" (exit 3) instead of
/// saying what was wrong. The standard library opens a closed descriptor
/// 0 as `/dev/null` for reading and writing before `main`, which no shell
/// redirection does (`</dev/null` opens it for reading only): that is
/// taken for closed.
fn stdin_readable() -> Result<()> {
    // SAFETY: F_GETFL on descriptor 0 reads its flags and nothing else.
    let flags = unsafe { libc::fcntl(0, libc::F_GETFL) };
    if output::reopened_as_null(0) {
        return Err(Error::Invalid(
            "standard input is not open: give the stream to back up on it, \
             e.g. `pg_dump db | cairn backup --stdin`"
                .into(),
        ));
    }
    if flags < 0 {
        return Err(Error::Invalid(format!(
            "standard input is not open ({}): give the stream to back up on it, \
             e.g. `pg_dump db | cairn backup --stdin`",
            std::io::Error::last_os_error()
        )));
    }
    if flags & libc::O_ACCMODE == libc::O_WRONLY {
        return Err(Error::Invalid(
            "standard input is open for writing only, so nothing can be read from it: \
             give the stream to back up on it, e.g. `pg_dump db | cairn backup --stdin`"
                .into(),
        ));
    }
    Ok(())
}
