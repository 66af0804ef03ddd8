//! `cairn restore`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::output::{self, outln};
use super::show::FilterArgs;
use super::{warn, Context};
use crate::error::{Error, Result};
use crate::human_bytes;
use crate::restorer::{self, Policy, RestoreOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PolicyArg {
    /// Write missing or differing files; keep others.
    Merge,
    /// Make the target exactly the snapshot (removes extra entries, but
    /// what --exclude matches or, with --include, what no include
    /// selects; of a single file, makes that file exact and removes
    /// nothing else).
    Mirror,
    /// Never overwrite existing entries.
    SkipExisting,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot (id, a unique prefix of at least 4 hex digits, or
    /// `latest`), optionally `:SUBPATH` (any bytes: a name need not be
    /// UTF-8).
    snapshot: OsString,
    /// Directory to restore into.
    #[arg(long, short = 't')]
    target: PathBuf,
    /// Restore only entries matching a glob, and what is beneath them
    /// (repeatable). A glob without `/` matches names; one starting with
    /// `/`, the whole path as backed up (also under `SNAP:/path`); one
    /// with `/` elsewhere, the path's last components; a trailing `/`,
    /// directories only. Names that are not UTF-8 are given as they are.
    #[arg(long = "include")]
    includes: Vec<OsString>,
    /// Leave out entries matching a glob, and what is beneath them
    /// (repeatable; globs as for `--include`). A mirror leaves in place
    /// what the target holds that matches: give it the backup's excludes
    /// to keep what the backup left out.
    #[arg(long = "exclude")]
    excludes: Vec<OsString>,
    /// Read exclude patterns from a file, one per line (as backup's
    /// --exclude-file).
    #[arg(long)]
    exclude_file: Vec<PathBuf>,
    /// What to do with entries already in the target.
    #[arg(long, value_enum, default_value = "merge")]
    policy: PolicyArg,
    /// Decide everything as a restore would (what to write, leave, skip
    /// or, with mirror, remove) and report it, changing nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not wait, at the end, for what was restored to be on disk. By
    /// default the restore ends only once its files are on disk (a
    /// `syncfs` of the target's filesystem), so a power cut after it
    /// succeeded finds them whole; with this, the kernel writes them back
    /// in its own time, and a power cut in the next seconds may leave
    /// some empty under their names (a restore run again mends them).
    #[arg(long)]
    no_sync: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(super) fn run(ctx: &Context, a: RestoreArgs) -> Result<u8> {
    // The snapshot's name is an id, a prefix of one or `latest`: text,
    // which a name that is not UTF-8 cannot match anyway.
    let given = a.snapshot.as_bytes();
    let (spec, subpath) = match given.iter().position(|&b| b == b':') {
        Some(at) => (&given[..at], Some(super::snapshot_path(&given[at + 1..]))),
        None => (given, None),
    };
    let spec = String::from_utf8_lossy(spec).into_owned();
    crate::snapshot::check_spec(&spec)?;
    let mut excludes = a.excludes;
    for f in &a.exclude_file {
        excludes.extend(crate::filter::read_pattern_file(f)?);
    }
    for patterns in [&a.includes, &excludes] {
        crate::filter::PathFilter::new(patterns).map_err(Error::into_usage)?;
    }
    let repo = ctx.open()?;
    repo.require_whole_layout("restore")?;
    // Before the snapshots are read: gc removes nothing while it is held.
    let _lock = super::read_lock(ctx, &repo, "restore")?;
    let all = repo.snapshots()?;
    let entry = super::pick(&all, &spec, &a.filter.filter())?;
    // `latest` is the newest snapshot that could be read: a file that
    // cannot be read may be a newer one, so such a restore exits 3.
    let maybe_older = spec == "latest" && !all.damaged.is_empty();
    let opts = RestoreOptions {
        id: Some(entry.id),
        subpath,
        target: a.target,
        includes: a.includes,
        excludes,
        policy: match a.policy {
            PolicyArg::Merge => Policy::Merge,
            PolicyArg::Mirror => Policy::Mirror,
            PolicyArg::SkipExisting => Policy::SkipExisting,
        },
        dry_run: a.dry_run,
        sync: !a.no_sync,
        workers: ctx.workers(&repo),
        lock: _lock.as_ref(),
    };
    let stats = restorer::restore(&repo, &entry.snapshot, &opts, &warn, &super::error_line)
        .map_err(|e| match given.iter().position(|&b| b == b':') {
            Some(at) => super::relative_hint(&given[at + 1..], e),
            None => e,
        })?;
    let within = output::escape(opts.subpath.as_deref().map_or(b"/", OsStrExt::as_bytes));
    for p in &stats.includes_unmatched {
        // The subpath without its trailing `/`: none but for `/` itself.
        let sub = opts.subpath.as_deref().map(|s| {
            let s = s.as_bytes();
            s.strip_suffix(b"/").unwrap_or(s)
        });
        let hint = match sub {
            Some(sub) if p.as_bytes().starts_with(b"/") && !p.as_bytes().starts_with(sub) => {
                format!(
                    " (a pattern starting with / is matched against the whole path as \
                     backed up: {}{} would be beneath {within})",
                    within.trim_end_matches('/'),
                    output::escape(p.as_bytes())
                )
            }
            // What an exclude matches is not looked into: an include
            // beneath it matches nothing there.
            _ if !opts.excludes.is_empty() => {
                " that the excludes leave (if it lies in a folder an \
                                                 --exclude matches: such a folder is not looked \
                                                 into)"
                    .to_string()
            }
            _ => String::new(),
        };
        // A mirror still removes what it matches in the target: said, as
        // a typo's warning read as if it did nothing at all.
        let mirror = match opts.policy {
            Policy::Mirror if !stats.nothing_selected => {
                "; a mirror still removes what it matches in the target that the snapshot lacks"
            }
            _ => "",
        };
        warn(&format!(
            "--include {p:?} matched nothing in {within}{hint}{mirror}"
        ));
    }
    let printed = (|| {
        for path in &stats.would_remove {
            use std::os::unix::ffi::OsStrExt;
            outln!(
                "would remove {}",
                output::escape(path.as_os_str().as_bytes())
            )?;
        }
        outln!(
        "{}restored snapshot {}: {} files written ({}), {} unchanged, {} dirs, {} other, {} skipped, {} removed",
        if opts.dry_run { "would have " } else { "" },
        entry.id.short(),
        stats.files_written,
        human_bytes(stats.bytes_written),
        stats.files_unchanged,
        stats.dirs,
        stats.other,
            stats.skipped,
            stats.removed
        )
    })();
    if stats.nothing_selected {
        return Err(Error::Invalid(format!(
            "the --include patterns selected nothing in {within}: nothing {}restored",
            if opts.dry_run { "would be " } else { "" }
        )));
    }
    if let Some(first) = &stats.full {
        // Out of inodes, not bytes, `df -h` shows room: say which.
        let inodes = crate::fsmeta::free_inodes(&opts.target).ok().flatten();
        let bytes = fs2::available_space(&opts.target).ok();
        let what = match (
            crate::fsmeta::shortage(inodes, bytes, 16 << 20),
            inodes,
            bytes,
        ) {
            (crate::fsmeta::Shortage::Inodes, ..) => {
                "is out of inodes (file entries), though it may have bytes free".to_string()
            }
            (crate::fsmeta::Shortage::Both, Some(n), Some(b)) => format!(
                "is full or out of inodes (file entries; {n} inodes and {} free now)",
                crate::human_bytes(b)
            ),
            _ => "is full".to_string(),
        };
        return Err(Error::Invalid(format!(
            "the target's filesystem {what} ({first}): the restore stopped there; the files \
             it put in place are whole, the rest of the snapshot is not restored; free space, \
             or restore into another folder, and run the restore again: what is already \
             restored is left as it is"
        )));
    }
    if stats.errors > 0 {
        return Err(Error::Invalid(if opts.dry_run {
            format!(
                "the restore would meet {} error(s); see the errors above",
                stats.errors
            )
        } else {
            format!(
                "restore finished with {} error(s); see the errors above",
                stats.errors
            )
        }));
    }
    let code = if maybe_older {
        warn(&format!(
            "`latest` {} snapshot {} ({}), the newest of those that could be read; {} \
             snapshot file(s) could not be read (named above) and may be newer: `cairn \
             snapshots` lists what is there, and `cairn verify` checks the repository",
            if opts.dry_run { "would be" } else { "was" },
            entry.id.short(),
            crate::format_time(entry.snapshot.time_ns),
            all.damaged.len()
        ));
        3
    } else {
        0
    };
    if opts.dry_run {
        return output::read_only(code, printed);
    }
    let done = format!("snapshot {} is restored", entry.id.short());
    Ok(output::after_work(code, printed, &done))
}
