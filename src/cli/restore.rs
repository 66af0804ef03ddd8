//! `cairn restore`.

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
    /// Make the target exactly the snapshot (removes extra entries; of a
    /// single file, makes that file exact and removes nothing else).
    Mirror,
    /// Never overwrite existing entries.
    SkipExisting,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot (id, prefix or `latest`), optionally `:SUBPATH`.
    snapshot: String,
    /// Directory to restore into.
    #[arg(long, short = 't')]
    target: PathBuf,
    /// Restore only entries matching a glob, and what is beneath them
    /// (repeatable). A glob without `/` matches names; one starting with
    /// `/`, the whole path as backed up (also under `SNAP:/path`); one
    /// with `/` elsewhere, the path's last components; a trailing `/`,
    /// directories only.
    #[arg(long = "include")]
    includes: Vec<String>,
    /// Leave out entries matching a glob, and what is beneath them
    /// (repeatable; globs as for `--include`).
    #[arg(long = "exclude")]
    excludes: Vec<String>,
    /// What to do with entries already in the target.
    #[arg(long, value_enum, default_value = "merge")]
    policy: PolicyArg,
    /// Decide everything as a restore would (what to write, leave, skip
    /// or, with mirror, remove) and report it, changing nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub(super) fn run(ctx: &Context, a: RestoreArgs) -> Result<u8> {
    let (spec, subpath) = match a.snapshot.split_once(':') {
        Some((s, p)) => (s.to_string(), Some(super::snapshot_path(p))),
        None => (a.snapshot.clone(), None),
    };
    let repo = ctx.open()?;
    // Before the snapshots are read: gc removes nothing while it is held.
    let _lock = super::read_lock(ctx, &repo, "restore")?;
    let all = repo.snapshots()?;
    let entry = super::pick(&all, &spec, &a.filter.filter())?;
    let opts = RestoreOptions {
        subpath,
        target: a.target,
        includes: a.includes,
        excludes: a.excludes,
        policy: match a.policy {
            PolicyArg::Merge => Policy::Merge,
            PolicyArg::Mirror => Policy::Mirror,
            PolicyArg::SkipExisting => Policy::SkipExisting,
        },
        dry_run: a.dry_run,
        workers: ctx.workers(&repo),
        lock: _lock.as_ref(),
    };
    let stats = restorer::restore(&repo, &entry.snapshot, &opts, &warn)?;
    let within = opts.subpath.as_deref().unwrap_or("/");
    for p in &stats.includes_unmatched {
        let hint = match opts.subpath.as_deref() {
            Some(sub) if p.starts_with('/') && !p.starts_with(sub.trim_end_matches('/')) => {
                format!(
                    " (a pattern starting with / is matched against the whole path as \
                     backed up: {}{p} would be beneath {sub})",
                    sub.trim_end_matches('/')
                )
            }
            _ => String::new(),
        };
        warn(&format!(
            "--include {p:?} matched nothing in {within}{hint}"
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
        return Err(Error::Invalid(format!(
            "the target's filesystem is full ({first}): the restore stopped there; the files \
             it put in place are whole, the rest of the snapshot is not restored; free space, \
             or restore into another folder, and run the restore again: what is already \
             restored is left as it is"
        )));
    }
    if stats.errors > 0 {
        return Err(Error::Invalid(if opts.dry_run {
            format!(
                "the restore would meet {} error(s); see the warnings above",
                stats.errors
            )
        } else {
            format!(
                "restore finished with {} error(s); see the warnings above",
                stats.errors
            )
        }));
    }
    if opts.dry_run {
        return output::read_only(0, printed);
    }
    let done = format!("snapshot {} is restored", entry.id.short());
    Ok(output::after_work(0, printed, &done))
}
