//! `cairn verify`, `gc`, `forget` and `repair`: keeping a repository small
//! and trustworthy.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{self, outln};
use super::show::FilterArgs;
use super::{json, warn, Context};
use crate::backend::FileKind;
use crate::error::{Error, Result, EXIT_ERROR};
use crate::gc::{self, GcOptions};
use crate::id::SnapshotId;
use crate::repair::{self, RepairIndexOptions, RepairSnapshotsOptions};
use crate::repo::{lock, Repository};
use crate::retention::{self, GroupBy, GroupDecisions, Policy};
use crate::snapshot::{Named, Snapshots};
use crate::verify::{self, Subset, VerifyOptions};
use crate::{format_time, human_bytes};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also read every pack and check every blob.
    #[arg(long)]
    read_data: bool,
    /// Read only part of the packs. `N%`: a window of N% of the pack ids
    /// that moves on every day, so ceil(100/N) nightly runs read every
    /// pack. `K/M`: part K of M by pack id, the same every day; 1/M … M/M
    /// on successive nights read every pack once.
    #[arg(long, value_name = "SUBSET")]
    read_data_subset: Option<String>,
    /// Report as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn run_verify(ctx: &Context, a: VerifyArgs) -> Result<u8> {
    // Arguments first, before the repository is opened and the key
    // derived: a bad one is a usage error (exit 2).
    if a.read_data && a.read_data_subset.is_some() {
        return Err(Error::Usage(
            "give --read-data (every pack) or --read-data-subset (part of them), not both".into(),
        ));
    }
    if let Some(s) = &a.read_data_subset {
        Subset::parse(s).map_err(Error::into_usage)?;
    }
    let (repo, password) = ctx.open_uncached_with_password()?;
    let lock = super::read_lock(ctx, &repo, "verify")?;
    let outcome = verify_command(ctx, &repo, password, a, lock.as_ref());
    // It never uses the space reserve (see `read_lock`), but as the
    // nightly check it tops it up, or says the filesystem needs room:
    // where it could write its lock, so not on read-only stores.
    if lock.is_some() {
        super::top_up_reserve(&repo, true);
    }
    outcome
}

fn verify_command(
    ctx: &Context,
    repo: &Repository,
    password: Option<zeroize::Zeroizing<Vec<u8>>>,
    a: VerifyArgs,
    lock: Option<&lock::LockGuard>,
) -> Result<u8> {
    let opened_with_password = password.is_some();
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => Some(Subset::parse(s)?),
        (None, true) => Some(Subset::All),
        (None, false) => None,
    };
    let report = verify::verify(
        repo,
        &VerifyOptions {
            password,
            read_data,
            day: (crate::now_ns() / 86_400_000_000_000).max(0) as u64,
            workers: ctx.workers(repo),
            lock,
            cache_root: ctx.cache_root(),
        },
    )?;
    // A lock that expired while it read (a long suspend) may have let a gc
    // elsewhere remove what it read: its damage could be that gc's work.
    if let Some(lock) = lock {
        lock.check("its report is not given, as it may count what a gc removed meanwhile as damage; run verify again")?;
    }
    let code = if report.is_clean() { 0 } else { EXIT_ERROR };
    let printed = print_verify(&report, &a, read_data.is_some(), opened_with_password);
    // A check changes nothing: a report that cannot be written fails it,
    // but a closed pipe leaves its verdict as it is.
    output::read_only(code, printed)
}

/// Prints verify's report.
fn print_verify(
    report: &verify::VerifyReport,
    a: &VerifyArgs,
    read_data: bool,
    opened_with_password: bool,
) -> Result<()> {
    if a.json {
        outln!("{}", json(report))?;
    } else {
        if let Some(w) = &report.read_subset {
            outln!("reading {}", w.description)?;
        }
        for w in &report.warnings {
            outln!(
                "warning: {}: {}",
                output::escape_controls(&w.object),
                output::escape_controls(&w.message)
            )?;
        }
        for e in &report.errors {
            outln!(
                "error: {}: {}",
                output::escape_controls(&e.object),
                output::escape_controls(&e.message)
            )?;
        }
        for d in &report.damaged {
            outln!(
                "damaged: snapshot {} {}: {} {} {}",
                d.snapshot.short(),
                output::escape_controls(&d.path.to_string()),
                if d.tree { "tree" } else { "blob" },
                d.blob.short(),
                d.reason
            )?;
        }
        let opened = if opened_with_password {
            format!(
                "{} open with this password",
                report.keys.iter().filter(|k| k.opens == Some(true)).count()
            )
        } else {
            "opened with a key file: passwords not tried".to_string()
        };
        outln!(
            "checked {} key files ({opened}), {} snapshots, {} trees, {} index tables, {} packs{}: {}",
            report.keys.len(),
            report.snapshots,
            report.trees,
            report.index_tables,
            report.packs,
            if read_data {
                format!(
                    " ({} read, {} blobs, {})",
                    report.packs_read,
                    report.blobs_read,
                    human_bytes(report.bytes_read)
                )
            } else {
                String::new()
            },
            if report.is_clean() {
                "no errors".to_string()
            } else {
                // A folder that cannot be read loses all it holds: it is
                // not one file.
                let count = |what: &str| {
                    report
                        .damaged
                        .iter()
                        .filter(|d| d.reason.starts_with(what))
                        .count()
                };
                let (dirs, parts) = (
                    count(verify::DIR_UNREADABLE),
                    count(verify::PART_UNREADABLE),
                );
                let files = report.damaged.len() - dirs - parts;
                let dirs = match dirs {
                    0 => String::new(),
                    n => format!(
                        " and {n} unreadable folder(s), each with everything beneath it"
                    ),
                };
                let dirs = match parts {
                    0 => dirs,
                    n => format!(
                        "{dirs} and {n} unreadable part(s) of folders stored in parts, each \
                         with what it holds"
                    ),
                };
                format!(
                    "{} errors, {files} damaged files{dirs}",
                    report.errors.len(),
                )
            }
        )?;
        // Damage met reading trees names no mending of its own (a read of
        // the packs does, per pack, unless a subset left the pack unread):
        // it said nothing of what to do.
        let corrupt = report.damaged.iter().any(|d| d.corrupt);
        // Where this host's cache holds what mends it, that comes first:
        // any other repair would drop what the copy holds.
        let mended_here = report.errors.iter().any(|e| e.mended_here);
        if mended_here {
            outln!(
                "what now: first put back what this host's cache holds, with the repair named \
                 above, run on this host; then run `cairn verify` again (any other repair now \
                 would drop what those packs hold)"
            )?;
        } else if corrupt && (!read_data || report.read_subset.is_some()) {
            outln!(
                "what now: `cairn verify --read-data` reads every pack and says what mends the \
                 damage; a backup of the sources stores again what they still have, and `cairn \
                 repair snapshots` writes copies of the damaged snapshots without the rest"
            )?;
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Repack packs with more than this share unused (percent).
    #[arg(long, default_value = "10%", value_parser = parse_percent)]
    max_unused: f64,
    /// Report what would be done without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// Report as JSON.
    #[arg(long)]
    json: bool,
    /// Where the repository holds no snapshot, delete every pack all the
    /// same (to empty it, or drop what a first backup killed left):
    /// without it gc refuses then, as snapshot files lost by a copy, a
    /// sync or a bucket's lifecycle rule leave a repository just so.
    #[arg(long)]
    delete_all: bool,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage like 10%"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v / 100.0)
    } else {
        Err(format!("{s:?} is not between 0% and 100%"))
    }
}

/// gc's JSON report: the plan, and whether it was only a plan.
#[derive(Serialize)]
struct GcReport<'a> {
    dry_run: bool,
    #[serde(flatten)]
    plan: &'a gc::GcPlan,
}

/// What gc does where no snapshot is left (see [`GcArgs::delete_all`]).
#[derive(Clone, Copy, PartialEq)]
enum NoneLeft {
    /// Refuse: snapshot files lost by a copy or a sync look just so.
    Refuse,
    /// Delete every pack, as `--delete-all` asks, warning that lost
    /// snapshots would have to be put back first.
    Asked,
    /// Delete every pack: the forget of this run removed the last
    /// snapshots (the warning about lost ones would only mislead).
    Forgotten,
}

/// Runs gc on an open repository holding `lock` (the exclusive lock, or
/// for a dry run a shared one); returns the plan, carried out unless
/// `dry_run`. Where no snapshot is left, it does as `none_left` says.
fn gc_locked(
    repo: &Repository,
    lock: &lock::LockGuard,
    opts: &GcOptions,
    dry_run: bool,
    none_left: NoneLeft,
) -> Result<gc::GcPlan> {
    // Readers hold shared locks too, but add no packs.
    let opts = GcOptions {
        others_writing: dry_run && lock.others_writing()?,
        ..opts.clone()
    };
    let mut plan = gc::plan(repo, &opts)?;
    // Each warning on standard error, and in the `--json` report; the
    // opening's, said on standard error already, in the report too.
    let mut said: Vec<String> = repo.config_trouble().into_iter().collect();
    let mut say = |msg: String| {
        warn(&msg);
        said.push(msg);
    };
    // Trees the mark read from another copy: the copy marked is the
    // damaged one, which the plan's rescue keeps from outliving the
    // intact one.
    for msg in repo.take_read_around_said() {
        say(msg);
    }
    if !dry_run {
        plan = gc::fit_to_space(repo, plan, &opts)?;
    }
    // No snapshot: every pack would go. Forgetting them all is how a
    // repository is emptied, but snapshot files lost by a copy, a sync or
    // an object store's lifecycle rule leave it looking just so (on a
    // local store a missing `snapshots/` folder is refused outright): so
    // only where asked for (until December 2026 gc deleted them all with
    // a warning, exit 0, as a nightly `forget --gc` would run it).
    if plan.live_blobs == 0 && !plan.delete.is_empty() {
        plan.needs_delete_all = true;
        let lost = "if snapshots were lost (a copy or sync that left them out, a lifecycle \
                    rule of the bucket), put them back from a copy before any gc";
        if !dry_run && none_left == NoneLeft::Refuse {
            return Err(Error::Invalid(format!(
                "the repository holds no snapshot: gc would delete every pack ({}) as \
                 unused, and refuses; {lost}; to empty the repository (or drop what a first \
                 backup that was killed left), run `cairn gc --delete-all`",
                plan.delete.len()
            )));
        }
        let verb = if dry_run { "would delete" } else { "deletes" };
        say(match none_left {
            NoneLeft::Forgotten => format!(
                "this forget removed the last snapshots: gc {verb} every pack ({}) as unused",
                plan.delete.len()
            ),
            _ => format!(
                "the repository holds no snapshot: gc {verb} every pack ({}) as unused{}; \
                 {lost}",
                plan.delete.len(),
                if dry_run && none_left == NoneLeft::Refuse {
                    " (only with --delete-all)"
                } else {
                    ""
                }
            ),
        });
    }
    for r in &plan.rescued {
        say(format!(
            "{r}; `cairn verify --read-data` reports the damaged copy, which gc removes once \
             it rewrites that pack"
        ));
    }
    for lost in &plan.no_intact_copy {
        say(format!(
            "{lost}; `cairn verify --read-data` names the files that lose it, and a backup \
             stores it again where a source still holds it"
        ));
    }
    for (pack, why) in &plan.framing_damaged {
        say(format!(
            "pack {} is damaged ({why}): gc {} it, its live blobs copied, each \
             authenticated, into new packs, which mends it",
            pack.short(),
            if dry_run { "would repack" } else { "repacks" }
        ));
    }
    for (pack, why) in &plan.unindexed_kept {
        say(format!(
            "pack {} is not in the index (an index table lost?), but {why}: kept, not \
             deleted; `cairn repair index --read-data` indexes its blobs and drops the \
             damaged copy",
            pack.short()
        ));
    }
    if !dry_run && plan.has_work() {
        for w in gc::execute(repo, &plan, lock)? {
            say(w);
        }
    }
    for w in gc::remove_leftovers(repo, lock, &mut plan, dry_run, opts.others_writing)? {
        say(w);
    }
    // The room set aside for the next gc, taken back from what this one
    // freed: a report that says all went well must also say when it
    // could not be.
    if !dry_run {
        said.extend(super::top_up_reserve_now(repo));
    }
    plan.warnings = said;
    Ok(plan)
}

/// Prints what gc found and did.
fn print_gc(plan: &gc::GcPlan, dry_run: bool) -> Result<()> {
    outln!(
        "live: {} blobs, {}; unused: {} blobs, {}",
        plan.live_blobs,
        human_bytes(plan.live_bytes),
        plan.dead_blobs,
        human_bytes(plan.dead_bytes)
    )?;
    let merged = match plan.small_merged {
        0 => String::new(),
        n => format!(", {n} of them small packs merged"),
    };
    outln!(
        "{}{} packs deleted, {} repacked ({} copied{merged}), {} kept; {} freed",
        if dry_run { "would have: " } else { "" },
        plan.delete.len(),
        plan.repack.len(),
        human_bytes(plan.bytes_repacked),
        plan.keep,
        human_bytes(plan.bytes_freed)
    )?;
    if !plan.in_progress.is_empty() {
        outln!(
            "{} packs not in the index (a backup may be writing them): not counted",
            plan.in_progress.len()
        )?;
    }
    if let Some(short) = &plan.repack_skipped {
        let mut lacks = Vec::new();
        if short.free < short.needed {
            lacks.push(format!(
                "{} free, repacking needs {}",
                human_bytes(short.free),
                human_bytes(short.needed)
            ));
        }
        if let (Some(free), Some(needed)) = (short.free_inodes, short.needed_inodes) {
            lacks.push(format!(
                "{free} free inodes (files and folders), repacking needs {needed}"
            ));
        }
        outln!(
            "repacking left for later: the repository's filesystem has {} before it deletes \
             anything; {}",
            lacks.join(" and "),
            repack_advice(short, plan.bytes_freed, plan.delete.len() as u64)
        )?;
    }
    let done = if dry_run { "would have: " } else { "" };
    if plan.leftovers_removed > 0 {
        outln!(
            "{done}removed {} temporary files left by interrupted writes",
            plan.leftovers_removed
        )?;
    }
    if plan.uploads_aborted > 0 {
        outln!(
            "{done}aborted {} incomplete multipart uploads{}",
            plan.uploads_aborted,
            match plan.upload_bytes {
                Some(n) => format!(" ({} in parts)", human_bytes(n)),
                None => String::new(),
            }
        )?;
    }
    if plan.uploads_in_progress > 0 {
        outln!(
            "{} incomplete multipart uploads (a backup may be writing them): not aborted",
            plan.uploads_in_progress
        )?;
    }
    Ok(())
}

/// What to do about repacking left for want of room (`short`), where this
/// run frees `freed` bytes and deletes `deleted` packs: run gc again where
/// that makes the room, else make room first (until December 2026 any
/// deletion said to run gc again, which then freed nothing).
fn repack_advice(short: &crate::gc::SpaceShort, freed: u64, deleted: u64) -> String {
    let bytes_after = short.free.saturating_add(freed);
    // A deleted pack gives back its inode, and its folder's where it was
    // the last there: at most two each.
    let inodes_short = match (short.free_inodes, short.needed_inodes) {
        (Some(free), Some(needed)) => free.saturating_add(2 * deleted) < needed,
        _ => false,
    };
    if freed == 0 && deleted == 0 {
        "this run freed nothing: make room on that filesystem, then run gc again".into()
    } else if bytes_after >= short.needed && !inodes_short {
        "run gc again once this run's deletions have made room".into()
    } else if bytes_after < short.needed {
        format!(
            "this run's deletions leave {} free, still short of that: make room on that \
             filesystem, then run gc again",
            human_bytes(bytes_after)
        )
    } else {
        "this run's deletions leave too few inodes free: make room on that filesystem, then \
         run gc again"
            .into()
    }
}

pub(super) fn run_gc(ctx: &Context, a: GcArgs) -> Result<u8> {
    let repo = ctx.open()?;
    super::keeping_reserve(&repo, a.dry_run, || gc_command(ctx, &repo, &a))
}

fn gc_command(ctx: &Context, repo: &Repository, a: &GcArgs) -> Result<u8> {
    let lock = if a.dry_run {
        super::dry_run_lock(ctx, repo, "gc")?
    } else {
        super::lock_repo(ctx, repo, true, "gc")?
    };
    let plan = gc_locked(
        repo,
        &lock,
        &GcOptions {
            max_unused: a.max_unused,
            workers: ctx.workers(repo),
            ..GcOptions::default()
        },
        a.dry_run,
        match a.delete_all {
            true => NoneLeft::Asked,
            false => NoneLeft::Refuse,
        },
    )?;
    let printed = if a.json {
        outln!(
            "{}",
            json(&GcReport {
                dry_run: a.dry_run,
                plan: &plan
            })
        )
    } else {
        print_gc(&plan, a.dry_run)
    };
    if a.dry_run {
        return output::read_only(0, printed);
    }
    Ok(output::after_work(0, printed, "gc is done"))
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove (ids, prefixes, or `latest`: the newest the
    /// --set/--host/--tag filters pass). Without, apply the policy.
    ids: Vec<String>,
    /// Keep the newest N snapshots.
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest snapshot of each of the N latest hours that have
    /// one (hours without a snapshot do not count, so this may reach
    /// back further than N hours; local time).
    #[arg(long, default_value_t = 0)]
    keep_hourly: u32,
    /// … days.
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    /// … ISO weeks.
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
    /// … months.
    #[arg(long, default_value_t = 0)]
    keep_monthly: u32,
    /// … years.
    #[arg(long, default_value_t = 0)]
    keep_yearly: u32,
    /// Keep snapshots taken within this long before the newest of their
    /// group: numbers with units y (365 days), m (months of 30 days), w,
    /// d, h; e.g. 30d, 1y2m, 12h. Here `m` means months, as in restic
    /// (unlike --lock-wait, where it means minutes).
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable). A group none of whose
    /// snapshots carries one, and that no other rule keeps a snapshot of,
    /// is refused rather than emptied.
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
    /// Group by these fields (comma list of set, host, paths, tags;
    /// default set,host,paths); an empty list (`--group-by ''`) makes one
    /// group of every snapshot. With a policy only.
    #[arg(long)]
    group_by: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Show the decisions without removing anything.
    #[arg(long)]
    dry_run: bool,
    /// Decisions as JSON: an array of groups (each with its label in
    /// `group`, and the `set`, `host`, `paths` and `tags` it is grouped
    /// by); with --gc, one object `{"forget": [groups], "gc": plan}`
    /// (`"gc": null` with --dry-run).
    #[arg(long)]
    json: bool,
    /// Run gc afterwards.
    #[arg(long)]
    gc: bool,
    /// With --gc: repack packs with more than this share unused
    /// (percent), as `gc --max-unused`.
    #[arg(long, default_value = "10%", value_parser = parse_percent, requires = "gc")]
    max_unused: f64,
    /// With --gc: where no snapshot is left and this run removed none,
    /// delete every pack all the same, as `gc --delete-all` (where this
    /// run removed the last snapshots, gc deletes their packs anyway).
    #[arg(long, requires = "gc")]
    delete_all: bool,
}

/// Warns of each group whose newest snapshot is dated after this host's
/// clock (a clock that was ahead when it was taken, or is behind now):
/// the policy counts back from it, so it stands as the newest, and the
/// snapshots taken since, dated before it, are counted as older (a
/// `--keep-last 1` keeps it and removes them).
fn warn_dated_ahead(plan: &[GroupDecisions]) {
    let now = crate::now_ns();
    for g in plan {
        let Some((newest, t)) = g.snapshots.first().and_then(|d| Some((d, d.time_ns?))) else {
            continue;
        };
        // A minute: a clock stepped by NTP is milliseconds off.
        if t > now.saturating_add(60_000_000_000) {
            super::warn(&format!(
                "snapshot {} of group {} is dated {}, after this host's clock ({}): the \
                 policy counts back from it, and the snapshots taken since, dated before \
                 it, count as older; check the clock (`timedatectl`) before removing any",
                newest.id.short(),
                g.group,
                crate::format_time(t),
                crate::format_time(now)
            ));
        }
    }
}

/// `forget --json --gc`: both reports in one document.
#[derive(Serialize)]
struct ForgetGcReport<'a> {
    forget: &'a [GroupDecisions],
    /// `null` in a dry run, which does not plan the gc.
    gc: Option<&'a gc::GcPlan>,
}

/// `forget`: its arguments are checked before the repository is opened,
/// and a wrong one exits 2, as the argument parser's refusals do.
pub(super) fn run_forget(ctx: &Context, a: ForgetArgs) -> Result<u8> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within_secs: a
            .keep_within
            .as_deref()
            .map(retention::parse_within)
            .transpose()
            .map_err(Error::into_usage)?,
        tags: a.keep_tags.clone(),
    };
    // `m` after `h` (`2h30m`) reads as minutes, but is months here (as in
    // restic): a span 30 days long per unit, which keeps more, not less.
    if let Some(w) = a.keep_within.as_deref() {
        if w.find('h').is_some_and(|h| w[h..].contains('m')) {
            let secs = policy.within_secs.unwrap_or(0);
            let (days, hours) = (secs / 86_400, secs % 86_400 / 3_600);
            let span = match (days, hours) {
                (0, h) => format!("{h} hour(s)"),
                (d, 0) => format!("{d} days"),
                (d, h) => format!("{d} days and {h} hour(s)"),
            };
            warn(&format!(
                "--keep-within {w}: `m` is a month of 30 days, not a minute (there are no \
                 minutes); the span is {span}"
            ));
        }
    }
    if a.keep_tags.iter().any(|t| t.trim().is_empty()) {
        return Err(Error::Usage(
            "--keep-tag needs a tag: an empty one is carried by no snapshot and keeps nothing"
                .into(),
        ));
    }
    if a.ids.is_empty() && policy.is_empty() {
        return Err(Error::Usage(
            "nothing to do: name snapshots to remove, or give a policy such as --keep-daily 7"
                .into(),
        ));
    }
    if !a.ids.is_empty() && !policy.is_empty() {
        return Err(Error::Usage(
            "give snapshot ids or a policy, not both".into(),
        ));
    }
    // Snapshots named are removed as named: a grouping would be dropped
    // without a word.
    if !a.ids.is_empty() && a.group_by.is_some() {
        return Err(Error::Usage(
            "--group-by groups snapshots for a policy: give it with --keep-… options, not \
             with snapshot ids"
                .into(),
        ));
    }
    let group_by = GroupBy::parse(a.group_by.as_deref().unwrap_or("set,host,paths"))
        .map_err(Error::into_usage)?;
    for spec in &a.ids {
        crate::snapshot::check_spec(spec)?;
    }
    let repo = ctx.open()?;
    super::keeping_reserve(&repo, a.dry_run, || {
        forget_command(ctx, &repo, &a, &policy, &group_by)
    })
}

/// `filter` as the options that give it (`--host web --tag daily`).
fn describe_filter(filter: &crate::snapshot::SnapshotFilter) -> String {
    let mut parts = Vec::new();
    if let Some(set) = &filter.set {
        parts.push(format!("--set {set}"));
    }
    if let Some(host) = &filter.host {
        parts.push(format!("--host {host}"));
    }
    for tag in &filter.tags {
        parts.push(format!("--tag {tag}"));
    }
    parts.join(" ")
}

/// Refuses a plan in which the policy keeps no snapshot of some group.
/// The count rules and `--keep-within` always keep a group's newest, so
/// only a policy of `--keep-tag`s alone gets here: a tag mistyped, or one
/// that group never carries, would otherwise remove all its backups, the
/// newest included. A full kept there only as the parent of a
/// differential does not make the plan sound: until December 2026 it
/// did, and such a policy removed every snapshot but that old full
/// (exit 0), as it did wherever a damaged snapshot file had the fulls
/// kept. Removing a whole group is done by naming its snapshots.
fn refuse_emptied_groups(plan: &[GroupDecisions]) -> Result<()> {
    let emptied: Vec<String> = plan
        .iter()
        .filter(|g| !g.kept_by_policy)
        .map(|g| format!("group {:?} ({} snapshot(s))", g.group, g.snapshots.len()))
        .collect();
    if emptied.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "the policy keeps no snapshot of {}: it would remove them all, the newest included \
         (but for fulls that differentials need): nothing is removed. No snapshot there carries a --keep-tag tag: check its spelling, add a rule \
         that keeps each group's newest (e.g. --keep-last 1), or name the snapshots to \
         remove by id",
        emptied.join(", ")
    )))
}

fn forget_command(
    ctx: &Context,
    repo: &Repository,
    a: &ForgetArgs,
    policy: &Policy,
    group_by: &GroupBy,
) -> Result<u8> {
    repo.require_whole_layout("forget snapshots")?;
    let lock = if a.dry_run {
        super::dry_run_lock(ctx, repo, "forget")?
    } else {
        super::lock_repo(ctx, repo, true, "forget")?
    };
    let all = repo.snapshots()?;
    let reports: Vec<GroupDecisions> = if a.ids.is_empty() {
        let filter = a.filter.filter();
        let mut plan = retention::plan(policy, group_by, &filter, &all.good);
        // A filter mistyped in a nightly job would otherwise never prune,
        // and never say so.
        if plan.is_empty() && !filter.is_empty() && !all.good.is_empty() {
            super::warn(&format!(
                "no snapshot matches {}: the policy removes nothing",
                describe_filter(&filter)
            ));
        }
        if !all.damaged.is_empty() {
            retention::keep_bases_of_damaged(&all.good, &mut plan);
        }
        refuse_emptied_groups(&plan)?;
        warn_dated_ahead(&plan);
        plan
    } else {
        // Every id is resolved before anything is removed, so a typo
        // removes nothing. A damaged file is named by its file name, as
        // nothing in it can be read.
        let mut named: Vec<retention::Decision> = Vec::new();
        for spec in &a.ids {
            let d = match all.resolve_named(spec, &a.filter.filter())? {
                Named::Good(e) => retention::Decision {
                    id: e.id,
                    time_ns: Some(e.snapshot.time_ns),
                    keep: false,
                    reasons: vec!["named".into()],
                },
                Named::Damaged(d) => retention::Decision {
                    id: d.id,
                    time_ns: None,
                    keep: false,
                    reasons: vec![format!("named, damaged: {}", d.reason)],
                },
            };
            if !named.iter().any(|n| n.id == d.id) {
                named.push(d);
            }
        }
        vec![GroupDecisions {
            group: "named snapshots".into(),
            by: None,
            snapshots: named,
            kept_by_policy: false,
        }]
    };
    let remove: Vec<SnapshotId> = reports
        .iter()
        .flat_map(|g| &g.snapshots)
        .filter(|d| !d.keep)
        .map(|d| d.id)
        .collect();
    let left = Snapshots {
        good: Vec::new(),
        damaged: all
            .damaged
            .iter()
            .filter(|d| !remove.contains(&d.id))
            .cloned()
            .collect(),
    };
    // gc must not run past a snapshot it cannot read: refuse before
    // anything is removed, rather than halfway.
    if a.gc {
        left.check_complete("forget with --gc")?;
        repo.require_whole_layout("forget with --gc")?;
        gc::whole_index(repo, "forget with --gc")?;
    }
    super::warn_damaged(
        &left,
        if a.ids.is_empty() {
            "not a candidate of the policy: neither kept nor removed, and no snapshot is \
             removed because of it"
        } else {
            "left in place"
        },
    );
    // The decisions are printed before anything is removed, but a report
    // that cannot be written (or a reader gone) does not stop the removal
    // the operator asked for: past its first failure the printing stops,
    // the work goes on, and `output::after_work` decides the exit code.
    let mut printed = if a.json {
        Ok(())
    } else {
        print_decisions(&reports)
    };
    if a.dry_run {
        printed = printed.and_then(|()| {
            if a.json && a.gc {
                outln!(
                    "{}",
                    json(&ForgetGcReport {
                        forget: &reports,
                        gc: None,
                    })
                )
            } else if a.json {
                outln!("{}", json(&reports))
            } else {
                outln!("would remove {} snapshot(s)", remove.len())
            }
        });
        if a.gc {
            // What gc would free depends on the snapshots the forget
            // removes: planned now, it would show the repository as is.
            crate::eprint_line(format_args!(
                "note: a dry run of forget does not plan its gc: after the forget, \
                 `cairn gc --dry-run` shows what gc would free"
            ));
        }
        return output::read_only(0, printed);
    }
    for (done, id) in remove.iter().enumerate() {
        if let Err(e) = repo.backend().remove(FileKind::Snapshot, &id.to_hex()) {
            // Those removed before it are gone: made durable, and named
            // (the decisions printed above say which were to go, but
            // not how far it got; `--json` prints nothing on an error).
            let settled = repo.backend().settle_removals();
            let gone: Vec<String> = remove[..done].iter().map(|id| id.short()).collect();
            return Err(Error::Advised {
                error: Box::new(e),
                advice: format!(
                    "forget stopped at snapshot {}, having removed {done} of the {} \
                     snapshot(s) it was to remove{}{}{}; the rest are in place, and a run \
                     again removes them",
                    id.short(),
                    remove.len(),
                    if gone.is_empty() { "" } else { ": " },
                    gone.join(", "),
                    match settled {
                        Ok(()) => String::new(),
                        Err(e) => format!(" (those removals may not be durable: {e})"),
                    },
                ),
            });
        }
        crate::fault::point("forget-after-remove");
    }
    if !a.json {
        printed = printed.and_then(|()| outln!("removed {} snapshot(s)", remove.len()));
    }
    let gc_plan = if a.gc {
        let opts = GcOptions {
            max_unused: a.max_unused,
            workers: ctx.workers(repo),
            ..GcOptions::default()
        };
        // Snapshots this run removed were the operator's to remove, the
        // last of them too.
        let none_left = match (remove.is_empty(), a.delete_all) {
            (false, _) => NoneLeft::Forgotten,
            (true, true) => NoneLeft::Asked,
            (true, false) => NoneLeft::Refuse,
        };
        match gc_locked(repo, &lock, &opts, false, none_left) {
            Ok(plan) => Some(plan),
            // The snapshots are removed already (gc's refusals on damage
            // it finds in trees come only once it walks them): said, in
            // the report as in the error, rather than left for the
            // operator to infer from a bare refusal.
            Err(e) => {
                repo.backend().settle_removals()?;
                if a.json {
                    let _ = outln!(
                        "{}",
                        json(&ForgetGcReport {
                            forget: &reports,
                            gc: None,
                        })
                    );
                }
                return Err(Error::Advised {
                    error: Box::new(e),
                    advice: format!(
                        "forget removed {} snapshot(s){}; gc deleted nothing (the error above \
                         says why, and what to run once that is mended)",
                        remove.len(),
                        if a.json {
                            " (the report says which)"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
    } else {
        None
    };
    // The removals are durable when forget returns, and before gc removes
    // the data only those snapshots used (a snapshot that came back after
    // a power cut would name removed packs): gc settles them with its own
    // removals, before it removes any pack (see `gc::execute`). What gc
    // removes after that (packs, leftovers) is not waited for, as a plain
    // `cairn gc` does not wait: a pack back after a power cut is in no
    // index table, and the next gc removes it again.
    let settled_by_gc = gc_plan.as_ref().is_some_and(gc::GcPlan::has_work);
    if !settled_by_gc {
        repo.backend().settle_removals()?;
    }
    let printed = printed.and_then(|()| match (a.json, &gc_plan) {
        (true, Some(plan)) => outln!(
            "{}",
            json(&ForgetGcReport {
                forget: &reports,
                gc: Some(plan),
            })
        ),
        (true, None) => outln!("{}", json(&reports)),
        (false, Some(plan)) => print_gc(plan, false),
        (false, None) => Ok(()),
    });
    let done = format!(
        "{} snapshot(s) are removed{}",
        remove.len(),
        if a.gc { " and gc is done" } else { "" }
    );
    Ok(output::after_work(0, printed, &done))
}

/// Prints forget's decisions, group by group.
fn print_decisions(reports: &[GroupDecisions]) -> Result<()> {
    for g in reports {
        outln!("{}:", output::escape(g.group.as_bytes()))?;
        for d in &g.snapshots {
            outln!(
                "  {} {:<25}  {:<6}  {}",
                d.id.short(),
                d.time_ns.map_or_else(|| "(damaged)".into(), format_time),
                if d.keep { "keep" } else { "remove" },
                d.reasons.join(", ")
            )?;
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(subcommand)]
    what: RepairWhat,
}

#[derive(Subcommand, Debug)]
enum RepairWhat {
    /// Rebuild the index from the packs' own headers.
    Index {
        /// Read every pack first and leave damaged blobs out of the
        /// index, so the next backup stores their content again.
        #[arg(long)]
        read_data: bool,
    },
    /// Write `config` back from its copy, `config.copy`, where it is
    /// missing or damaged (every command then opens the repository from
    /// the copy, and warns); where it is intact, make its copy current.
    Config {
        /// Where both `config` and `config.copy` are lost: make a config
        /// anew, with the password's key (or --key-file's), the cipher a
        /// snapshot opens with, and new chunking (new backups then store
        /// their data again rather than share it with what is stored).
        #[arg(long)]
        rebuild: bool,
    },
    /// Write repaired copies of snapshots that reference missing data,
    /// once per snapshot (a snapshot with a repaired copy is skipped).
    Snapshots {
        /// Report without writing.
        #[arg(long)]
        dry_run: bool,
        /// Read every pack first, so damaged data (not only missing data)
        /// is dropped too.
        #[arg(long)]
        read_data: bool,
    },
}

pub(super) fn run_repair(ctx: &Context, a: RepairArgs) -> Result<u8> {
    if let RepairWhat::Config { rebuild: true } = a.what {
        return rebuild_config(ctx);
    }
    let repo = ctx.open_uncached()?;
    let dry_run = matches!(a.what, RepairWhat::Snapshots { dry_run: true, .. });
    super::keeping_reserve(&repo, dry_run, || repair_command(ctx, &repo, a))
}

/// `repair config --rebuild`: a config made anew (see
/// [`crate::repo::rebuild_config`]) where both `config` and its copy are
/// lost; nothing else is there to open the repository with.
fn rebuild_config(ctx: &Context) -> Result<u8> {
    use crate::backend::CONFIG_COPY;
    let backend = ctx.backend()?;
    if backend.exists()? || backend.read(FileKind::Config, CONFIG_COPY).is_ok() {
        // Both there but neither opening (damaged, or a folder in the
        // place of one) left no way on: this refused, and `repair config`
        // failed on the same damage.
        return Err(match ctx.open_uncached() {
            Err(e @ Error::Corrupt { .. }) => Error::Advised {
                error: Box::new(e),
                advice: "--rebuild makes a config only where none is there: move `config` \
                         (and `config.copy`, where it is there) out of the repository (keep \
                         them), then run `cairn repair config --rebuild` again"
                    .into(),
            },
            Err(e) => e,
            Ok(_) => Error::Usage(
                "config or config.copy is there: `cairn repair config` (without --rebuild) \
                 writes config back from its copy; --rebuild is for a repository that lost \
                 both"
                    .into(),
            ),
        });
    }
    let keys = match ctx.key_file() {
        Some(f) => {
            let what = format!("key file {}", crate::escape::Show::shown(f.as_path()));
            let exported = super::key::read_exported(&f, &what).map_err(super::as_usage)?;
            vec![(exported.key, Some(exported.repo_id))]
        }
        None => {
            let pw = match ctx.explicit_password()? {
                Some(pw) => pw,
                None => ctx.password(false)?,
            };
            let mut keys = Vec::new();
            for name in backend.list(FileKind::Key)? {
                if !crate::id::is_hex_name(&name) {
                    continue;
                }
                let Ok(bytes) = backend.read(FileKind::Key, &name) else {
                    continue;
                };
                if let Ok(Some(key)) = crate::repo::keys::decode(&bytes, &pw.bytes) {
                    keys.push((key, None));
                }
            }
            if keys.is_empty() {
                return Err(pw.name_in(Error::WrongPassword {
                    location: backend.location(),
                    from: None,
                }));
            }
            keys
        }
    };
    let from_key_file = ctx.key_file().is_some();
    let config = crate::repo::rebuild_config(&*backend, keys)?;
    warn(
        "the chunker's settings were lost with the config: backups from now on cut files \
         anew, and store their data again rather than share it with what is stored (which \
         restores as ever); a full backup of each set makes the next ones small again",
    );
    warn(&format!(
        "the config's other settings were lost with it, and are the defaults now: \
         compression level {}, chunks of {} to {} bytes ({} on average), packs of {} bytes",
        config.compression,
        config.chunker.min,
        config.chunker.max,
        config.chunker.avg,
        config.pack_size
    ));
    // Only the config and exported key files record the repository's id.
    if !from_key_file {
        warn(&format!(
            "the repository's id was lost with the config, so it has a new one ({}): key \
             files exported before (`cairn key export`) name the old id and no longer open it, \
             and a host's metadata cache of it is not used again: export new key files now (to \
             keep the old id instead, move the new config and config.copy away and rebuild \
             with `--key-file` of an exported key)",
            &hex::encode(config.repo_id)[..8]
        ));
    }
    let printed = outln!(
        "config rebuilt: repository {}, format {}, {}; its copy written beside it",
        &hex::encode(config.repo_id)[..8],
        config.version,
        config.cipher.name()
    );
    Ok(output::after_work(0, printed, "the config is rebuilt"))
}

fn repair_command(ctx: &Context, repo: &Repository, a: RepairArgs) -> Result<u8> {
    match a.what {
        RepairWhat::Config { .. } => {
            // The exclusive lock: no upgrade rewrites the config meanwhile
            // (taking it brings a copy up to date where `config` opened).
            let _lock = super::lock_repo(ctx, repo, true, "repair config")?;
            let printed = if repo.config_from_copy()? {
                outln!("config written back from config.copy")
            } else {
                outln!("config is intact, and config.copy is its copy")
            };
            Ok(output::after_work(0, printed, "the config is repaired"))
        }
        RepairWhat::Index { read_data } => {
            // A missing index/ is what this mends; a missing packs/ is
            // not, and the tables would be replaced with nothing.
            if repo
                .backend()
                .missing_folders()?
                .contains(&FileKind::Pack.dir())
            {
                repo.require_whole_layout("repair the index")?;
            }
            let lock = super::lock_repo(ctx, repo, true, "repair index")?;
            // Said before the old tables, the only record of what is
            // lost, are removed.
            let before_removal = |r: &repair::IndexRepair| {
                // The copies it drops are named at the end; how many is
                // said now, while the old tables are still there.
                if !r.dropped.is_empty() {
                    warn(&format!(
                        "{} blob cop{} dropped from the index (damaged, or past the end of a \
                         pack cut short), each named below",
                        r.dropped.len(),
                        if r.dropped.len() == 1 {
                            "y is"
                        } else {
                            "ies are"
                        }
                    ));
                }
                for t in &r.damaged_tables {
                    warn(&format!(
                        "index {}: it failed its check, and is replaced by the tables rebuilt \
                         from the packs (of its entries for packs whose header cannot be read, \
                         those whose blob opens there are kept)",
                        t.short()
                    ));
                }
                let gone = r.missing_packs.len();
                let from_damaged = match r.unindexed_only_damaged {
                    0 => String::new(),
                    n => format!(
                        " ({n} of them named only by an index table that failed its check, \
                         whose entries may be wrong)"
                    ),
                };
                let caches = trees_in_caches(repo, r.unindexed_trees);
                let beside = if r.not_placed.is_empty() {
                    ""
                } else {
                    "; a pack left in another folder than its name's (named below) may hold them"
                };
                match (r.missing_packs.first(), r.first_unindexed) {
                    (Some(first), None) => warn(&format!(
                        "the old index named {gone} pack(s) the repository does not hold \
                         (first: {}), but every blob it placed there is in a pack read now, \
                         and indexed there: nothing is lost",
                        first.short()
                    )),
                    (Some(first), Some((blob, pack))) => warn(&format!(
                        "the old index named {gone} pack(s) the repository does not hold \
                         (first: {}): {} blob(s) it placed there or in packs that no longer \
                         hold them (first: blob {}, in pack {}) are no longer indexed{from_damaged}; \
                         if a copy or a sync left the packs out, put them back and run `cairn \
                         repair index` again before any gc{caches}{beside}",
                        first.short(),
                        r.unindexed_lost,
                        blob.short(),
                        pack.short()
                    )),
                    // Named only by tables that failed their check: their
                    // entries, not the packs, are likely what is wrong.
                    (None, Some((blob, pack))) if r.unindexed_only_damaged == r.unindexed_lost => {
                        warn(&format!(
                            "{} blob(s) named only by an index table that failed its check are \
                             in no pack (first: blob {}, which it placed in pack {}): its \
                             entries may be wrong, so likely nothing is lost; `cairn verify \
                             --read-data` names any snapshot that lacks data{beside}",
                            r.unindexed_lost,
                            blob.short(),
                            pack.short()
                        ))
                    }
                    (None, Some((blob, pack))) => warn(&format!(
                        "{} blob(s) the old index named are in no pack now (first: blob {}, \
                         which it placed in pack {}, which holds other content now: \
                         overwritten by another pack?){from_damaged}: they are no longer \
                         indexed, and lost unless a copy of the repository holds those packs; \
                         the next backup stores again what the sources still have, and `cairn \
                         repair snapshots` writes copies of the snapshots without the \
                         rest{caches}{beside}",
                        r.unindexed_lost,
                        blob.short(),
                        pack.short()
                    )),
                    (None, None) => {}
                }
            };
            let r = repair::repair_index(
                repo,
                &RepairIndexOptions {
                    read_data,
                    workers: ctx.workers(repo),
                    cache_root: ctx.cache_root(),
                },
                &lock,
                &before_removal,
            )?;
            for (place, home) in &r.exchanged {
                warn(&format!(
                    "{place}: an intact copy of the pack of its name, whose file in {home} is \
                     damaged (not its name's hash): the two were swapped, the intact one home; \
                     the damaged one, now at {place}, can be removed"
                ));
            }
            for (place, home) in &r.placed_late {
                warn(&format!(
                    "{place}: moved to {home} once the file of its name there was written \
                     again and removed; run `cairn repair index` again to index its blobs"
                ));
            }
            for (place, home) in &r.not_placed {
                warn(&format!(
                    "{place}: a pack in another folder than its name's, left there, as {home} \
                     holds a file of its name; compare the two and remove one"
                ));
            }
            let printed = (|| {
                for p in &r.put_back {
                    outln!(
                        "put back: pack {}, {}, from the intact copy in this host's cache",
                        p.pack.short(),
                        p.reason
                    )?;
                }
                for (place, home) in &r.placed {
                    outln!("moved {place} to {home}, where its name puts it")?;
                }
                for p in &r.rewritten {
                    let into: Vec<String> = p.into.iter().map(|c| c.short()).collect();
                    if p.misnamed {
                        outln!(
                            "misnamed, written again: {}; its {} blob(s) were copied into \
                             pack {}, and it was removed",
                            p.reason,
                            p.blobs,
                            into.join(", ")
                        )?;
                        continue;
                    }
                    if into.is_empty() {
                        outln!(
                            "unreadable, removed: {}; nothing the old index places in it \
                             could be kept (named above)",
                            p.reason
                        )?;
                        continue;
                    }
                    outln!(
                        "unreadable, written again: {}; its {} blob(s) that open were copied \
                         into pack {} with a header of their own, and it was removed",
                        p.reason,
                        p.blobs,
                        into.join(", ")
                    )?;
                }
                for u in &r.unreadable {
                    outln!("unreadable, left in place: {u}")?;
                }
                for d in &r.dropped {
                    outln!(
                        "damaged, dropped from the index: blob {} in pack {} ({})",
                        d.blob.short(),
                        d.pack.short(),
                        d.reason
                    )?;
                }
                let replaced = r.removed_tables + r.rewritten_tables;
                let tables = if replaced == 0 && r.unchanged_tables == r.written_tables {
                    format!(
                        "the {} index table(s) already held just that, and are kept as they were",
                        r.written_tables
                    )
                } else {
                    let unchanged = match r.unchanged_tables {
                        0 => String::new(),
                        n => format!(" ({n} of them as they were)"),
                    };
                    format!(
                        "replaced {replaced} index table(s) with {}{unchanged}",
                        r.written_tables
                    )
                };
                outln!("indexed {} blobs in {} packs; {tables}", r.blobs, r.packs)?;
                if r.dropped_held_elsewhere > 0 {
                    outln!(
                        "{} damaged cop{} dropped {} of blobs with an intact copy indexed in \
                         another pack: nothing of them is lost",
                        r.dropped_held_elsewhere,
                        if r.dropped_held_elsewhere == 1 {
                            "y"
                        } else {
                            "ies"
                        },
                        if r.dropped_held_elsewhere == 1 {
                            "is"
                        } else {
                            "are"
                        },
                    )?;
                }
                let lost = r.dropped.len() - r.dropped_held_elsewhere;
                if lost > 0 {
                    // A pack it moved home may hold them: indexed by the
                    // next repair, before anything else is done.
                    let first = if r.placed_late.is_empty() {
                        ""
                    } else {
                        "a pack moved home (said above) may hold them: run `cairn repair index` \
                         again first; then "
                    };
                    let trees = r.dropped.iter().filter(|d| d.tree).count();
                    outln!(
                        "{lost} damaged blob(s) are no longer indexed: {first}the next backup \
                         stores their content again where the source still has it, mending \
                         every snapshot that uses it; for what no source has any more, `cairn \
                         repair snapshots` writes copies of the snapshots without it (gc \
                         refuses to run until no snapshot uses a blob the index lacks){}",
                        trees_in_caches(repo, trees)
                    )?;
                }
                Ok(())
            })();
            Ok(output::after_work(0, printed, "the index is rebuilt"))
        }
        RepairWhat::Snapshots { dry_run, read_data } => {
            repo.require_whole_layout("repair snapshots")?;
            let lock = if dry_run {
                super::dry_run_lock(ctx, repo, "repair snapshots")?
            } else {
                super::lock_repo(ctx, repo, false, "repair snapshots")?
            };
            let r = repair::repair_snapshots(
                repo,
                &RepairSnapshotsOptions {
                    dry_run,
                    read_data,
                    workers: ctx.workers(repo),
                    cache_root: ctx.cache_root(),
                },
                &lock,
            )?;
            for said in repo.take_read_around_said() {
                warn(&said);
            }
            let printed = print_repaired(&r, dry_run);
            // A snapshot this user may not read was not looked at: the
            // run did not do all it was asked.
            let code = u8::from(r.damaged.iter().any(|d| d.refused));
            if dry_run {
                return output::read_only(code, printed);
            }
            let done = format!("{} snapshot(s) are repaired", r.repaired.len());
            Ok(output::after_work(code, printed, &done))
        }
    }
}

/// Prints what `repair snapshots` did or would do.
fn print_repaired(r: &repair::SnapshotsRepair, dry_run: bool) -> Result<()> {
    for id in &r.put_back {
        outln!(
            "{}: snapshot file snapshots/{id}, damaged in the repository, from the intact \
             copy in this host's cache",
            if dry_run {
                "would be put back"
            } else {
                "put back"
            }
        )?;
    }
    // A dry run's damaged files include those it would put back.
    for d in r
        .damaged
        .iter()
        .filter(|d| !dry_run || !r.put_back.contains(&d.id))
    {
        if d.refused {
            // Not damage: the advice to forget it would remove an intact
            // snapshot.
            outln!("left as it is: {}", d.warning("it was not looked at"))?;
            continue;
        }
        outln!(
            "damaged, left as it is: snapshot file snapshots/{} ({}); nothing in it \
                     can be read to repair, and `cairn forget {}` removes it",
            d.id,
            d.reason,
            d.id.short()
        )?;
    }
    for (original, copy) in &r.skipped {
        outln!(
            "snapshot {} already has the repaired copy {}: skipped",
            original.short(),
            copy.short()
        )?;
    }
    let fixed = &r.repaired;
    for f in fixed {
        outln!(
            "snapshot {} {} as {} without:",
            f.original.short(),
            if dry_run {
                "would be repaired"
            } else {
                "repaired"
            },
            f.repaired.short()
        )?;
        for p in &f.dropped {
            // What was dropped of the root itself has no path before it.
            let root = if p.starts_with(' ') { "/" } else { "" };
            outln!("  {root}{p}")?;
        }
        if f.dropped_more > 0 {
            outln!("  and {} more", f.dropped_more)?;
        }
    }
    outln!(
        "{} snapshot(s) {}; originals are kept until you forget them",
        fixed.len(),
        if dry_run {
            "would be repaired"
        } else {
            "repaired"
        }
    )?;
    if r.damaged_indexed > 0 {
        outln!(
            "the index still names {} damaged blob(s), so backups take them for stored: \
             `cairn repair index --read-data` drops them, and the next backup then stores \
             their content again where the source still has it",
            r.damaged_indexed
        )?;
    }
    Ok(())
}

/// On a remote store, where `trees` trees left the index with their pack:
/// a host that wrote or read the pack may hold an intact copy in its
/// cache (kept 30 days after its index no longer names it), which that
/// host's `verify` names and `repair index` puts back.
fn trees_in_caches(repo: &Repository, trees: usize) -> String {
    match trees {
        n if n > 0 && repo.backend().prefers_ranges() => format!(
            "; {n} of them are trees: the cache of a host that wrote or read their pack may \
             hold an intact copy for 30 days, which `cairn verify` there names and `cairn \
             repair index` there puts back"
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repack_advice_says_to_run_again_only_where_the_deletions_make_room() {
        let short = |free, needed, inodes: Option<(u64, u64)>| crate::gc::SpaceShort {
            free,
            needed,
            free_inodes: inodes.map(|i| i.0),
            needed_inodes: inodes.map(|i| i.1),
        };
        let again = "run gc again once this run's deletions have made room";
        assert_eq!(repack_advice(&short(10, 25, None), 20, 1), again);
        assert!(repack_advice(&short(10, 25, None), 0, 0).contains("this run freed nothing"));
        let still = repack_advice(&short(10, 25 << 20, None), 5, 1);
        assert!(still.contains("still short of that: make room"), "{still}");
        assert_eq!(repack_advice(&short(10, 25, Some((1, 5))), 20, 2), again);
        let inodes = repack_advice(&short(10, 25, Some((1, 7))), 20, 2);
        assert!(inodes.contains("too few inodes free"), "{inodes}");
    }
}
