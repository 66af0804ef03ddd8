//! `cairn verify`, `gc`, `forget` and `repair`: keeping a repository small
//! and trustworthy.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::show::FilterArgs;
use super::Context;
use crate::backend::FileKind;
use crate::error::{Error, Result, EXIT_ERROR};
use crate::gc::{self, GcOptions};
use crate::id::SnapshotId;
use crate::repair;
use crate::repo::{lock, Repository};
use crate::retention::{self, GroupBy, Policy};
use crate::snapshot::{self, SnapshotEntry};
use crate::verify::{self, Subset, VerifyOptions};
use crate::{format_time, human_bytes};

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("JSON of plain data")
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also read every pack and check every blob.
    #[arg(long)]
    read_data: bool,
    /// Read only part of the packs: `N%` or `K/M` (deterministic by pack id).
    #[arg(long, value_name = "SUBSET")]
    read_data_subset: Option<String>,
    /// Report as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn run_verify(ctx: &Context, a: VerifyArgs) -> Result<u8> {
    let repo = ctx.open_uncached()?;
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => Some(Subset::parse(s)?),
        (None, true) => Some(Subset::All),
        (None, false) => None,
    };
    let _lock = lock::acquire(
        repo.backend_arc(),
        repo.key(),
        false,
        "verify",
        ctx.global.lock_wait,
    )?;
    let report = verify::verify(
        &repo,
        &VerifyOptions {
            read_data,
            workers: ctx.workers(&repo),
        },
    )?;
    if a.json {
        println!("{}", json(&report));
    } else {
        for w in &report.warnings {
            println!("warning: {}: {}", w.object, w.message);
        }
        for e in &report.errors {
            println!("error: {}: {}", e.object, e.message);
        }
        for d in &report.damaged {
            println!(
                "damaged: snapshot {} {}: blob {} {}",
                d.snapshot.short(),
                d.path,
                d.blob.short(),
                d.reason
            );
        }
        println!(
            "checked {} snapshots, {} trees, {} index tables, {} packs{}: {}",
            report.snapshots,
            report.trees,
            report.index_tables,
            report.packs,
            if read_data.is_some() {
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
                format!(
                    "{} errors, {} damaged files",
                    report.errors.len(),
                    report.damaged.len()
                )
            }
        );
    }
    Ok(if report.is_clean() { 0 } else { EXIT_ERROR })
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

/// Runs gc on an open repository holding `lock`: the exclusive lock, or
/// for a dry run a shared one.
fn gc_locked(
    repo: &Repository,
    lock: &lock::LockGuard,
    opts: &GcOptions,
    dry_run: bool,
    as_json: bool,
) -> Result<()> {
    let opts = GcOptions {
        others_writing: dry_run && !lock.others()?.is_empty(),
        ..opts.clone()
    };
    let plan = gc::plan(repo, &opts)?;
    let act = !dry_run
        && (!plan.delete.is_empty() || !plan.repack.is_empty() || plan.old_index.len() > 1);
    if act {
        gc::execute(repo, &plan, lock)?;
    }
    if as_json {
        println!(
            "{}",
            json(&GcReport {
                dry_run,
                plan: &plan
            })
        );
        return Ok(());
    }
    println!(
        "live: {} blobs, {}; unused: {} blobs, {}",
        plan.live_blobs,
        human_bytes(plan.live_bytes),
        plan.dead_blobs,
        human_bytes(plan.dead_bytes)
    );
    println!(
        "{}{} packs deleted, {} repacked ({} copied), {} kept; {} freed",
        if dry_run { "would have: " } else { "" },
        plan.delete.len(),
        plan.repack.len(),
        human_bytes(plan.bytes_repacked),
        plan.keep,
        human_bytes(plan.bytes_freed)
    );
    if !plan.in_progress.is_empty() {
        println!(
            "{} packs not in the index (a backup may be writing them): not counted",
            plan.in_progress.len()
        );
    }
    Ok(())
}

pub(super) fn run_gc(ctx: &Context, a: GcArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let lock = lock::acquire(
        repo.backend_arc(),
        repo.key(),
        !a.dry_run,
        "gc",
        ctx.global.lock_wait,
    )?;
    gc_locked(
        &repo,
        &lock,
        &GcOptions {
            max_unused: a.max_unused,
            workers: ctx.workers(&repo),
            others_writing: false,
        },
        a.dry_run,
        a.json,
    )?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove (ids or prefixes). Without, apply the policy.
    ids: Vec<String>,
    /// Keep the newest N snapshots.
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours.
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
    /// Keep snapshots within this long of the newest (e.g. 30d, 1y2m, 12h).
    #[arg(long)]
    keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable).
    #[arg(long = "keep-tag")]
    keep_tags: Vec<String>,
    /// Group by these fields (comma list of set, host, paths, tags).
    #[arg(long, default_value = "set,host,paths")]
    group_by: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Show the decisions without removing anything.
    #[arg(long)]
    dry_run: bool,
    /// Decisions as JSON.
    #[arg(long)]
    json: bool,
    /// Run gc afterwards.
    #[arg(long)]
    gc: bool,
}

#[derive(Serialize)]
struct GroupReport {
    group: String,
    snapshots: Vec<retention::Decision>,
}

pub(super) fn run_forget(ctx: &Context, a: ForgetArgs) -> Result<u8> {
    let repo = ctx.open()?;
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
            .transpose()?,
        tags: a.keep_tags.clone(),
    };
    if a.ids.is_empty() && policy.is_empty() {
        return Err(Error::Invalid(
            "nothing to do: name snapshots to remove, or give a policy such as --keep-daily 7"
                .into(),
        ));
    }
    if !a.ids.is_empty() && !policy.is_empty() {
        return Err(Error::Invalid(
            "give snapshot ids or a policy, not both".into(),
        ));
    }
    let lock = lock::acquire(
        repo.backend_arc(),
        repo.key(),
        !a.dry_run,
        "forget",
        ctx.global.lock_wait,
    )?;
    let all = repo.snapshots()?;
    let mut remove: Vec<SnapshotId> = Vec::new();
    let mut reports = Vec::new();
    if !a.ids.is_empty() {
        for spec in &a.ids {
            remove.push(snapshot::resolve(&all, spec, &Default::default())?.id);
        }
    } else {
        let filter = a.filter.filter();
        let group_by = GroupBy::parse(&a.group_by)?;
        let mut groups: BTreeMap<String, Vec<&SnapshotEntry>> = BTreeMap::new();
        for e in all.iter().filter(|e| filter.matches(&e.snapshot)) {
            groups.entry(group_by.key(e)).or_default().push(e);
        }
        for (group, members) in groups {
            let decisions = retention::apply(&policy, &members);
            remove.extend(decisions.iter().filter(|d| !d.keep).map(|d| d.id));
            reports.push(GroupReport {
                group,
                snapshots: decisions,
            });
        }
    }
    if a.json {
        println!("{}", json(&reports));
    } else {
        for g in &reports {
            println!("{}:", g.group);
            for d in &g.snapshots {
                println!(
                    "  {} {}  {:<6}  {}",
                    d.id.short(),
                    format_time(d.time_ns),
                    if d.keep { "keep" } else { "remove" },
                    d.reasons.join(", ")
                );
            }
        }
    }
    if a.dry_run {
        if !a.json {
            println!("would remove {} snapshot(s)", remove.len());
        }
        return Ok(0);
    }
    for id in &remove {
        repo.backend().remove(FileKind::Snapshot, &id.to_hex())?;
        crate::fault::point("forget-after-remove");
    }
    if !a.json {
        println!("removed {} snapshot(s)", remove.len());
    }
    if a.gc {
        gc_locked(&repo, &lock, &GcOptions::default(), false, a.json)?;
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(subcommand)]
    what: RepairWhat,
}

#[derive(Subcommand, Debug)]
enum RepairWhat {
    /// Rebuild the index from the packs' own headers.
    Index,
    /// Write repaired copies of snapshots that reference missing data.
    Snapshots {
        /// Report without writing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(super) fn run_repair(ctx: &Context, a: RepairArgs) -> Result<u8> {
    let repo = ctx.open_uncached()?;
    match a.what {
        RepairWhat::Index => {
            let _lock = lock::acquire(
                repo.backend_arc(),
                repo.key(),
                true,
                "repair index",
                ctx.global.lock_wait,
            )?;
            let r = repair::repair_index(&repo)?;
            for u in &r.unreadable {
                println!("unreadable, left in place: {u}");
            }
            println!(
                "indexed {} blobs in {} packs; replaced {} index table(s)",
                r.blobs, r.packs, r.removed_tables
            );
        }
        RepairWhat::Snapshots { dry_run } => {
            let _lock = lock::acquire(
                repo.backend_arc(),
                repo.key(),
                false,
                "repair snapshots",
                ctx.global.lock_wait,
            )?;
            let fixed = repair::repair_snapshots(&repo, dry_run)?;
            for f in &fixed {
                println!(
                    "snapshot {} {} as {} without:",
                    f.original.short(),
                    if dry_run {
                        "would be repaired"
                    } else {
                        "repaired"
                    },
                    f.repaired.short()
                );
                for p in &f.dropped {
                    println!("  {p}");
                }
            }
            println!(
                "{} snapshot(s) {}; originals are kept until you forget them",
                fixed.len(),
                if dry_run {
                    "would be repaired"
                } else {
                    "repaired"
                }
            );
        }
    }
    Ok(0)
}
