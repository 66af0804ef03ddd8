//! Retention policies: which snapshots `forget` keeps.
//!
//! A pure function over snapshot metadata, applied to each group of
//! snapshots separately. Semantics follow restic and borg: for each bucket
//! kind (hour, day, week, month, year) with a count `n`, walk the group from
//! newest to oldest and keep the newest snapshot of each bucket until `n`
//! buckets are kept. `keep-last n` keeps the newest `n`; `keep-within d`
//! keeps snapshots taken within `d` of the newest one; `keep-tag t` keeps
//! snapshots carrying `t`. A snapshot kept for several reasons is kept once,
//! with all its reasons.
//!
//! Differential snapshots: backup picks a differential's parent by set and
//! host (the newest full snapshot of the set on that host), whatever the
//! groups or filters of `forget`. So [`plan`] protects, across all groups
//! and whatever the filters: the full snapshot that any kept differential
//! names as its parent (reason `parent of kept differential <id>`), and the
//! newest full snapshot of every set and host that has differentials
//! (reason `newest-full`), because tomorrow's differential will name it as
//! parent. A snapshot outside the filters is never removed, so a
//! differential outside them protects its parent too. No snapshot ever
//! *needs* another to be restored; this rule keeps the meaning of "changes
//! since the full backup" intact.
//!
//! A damaged snapshot file (one that does not decode) is no candidate:
//! plans are made over the others, and [`keep_bases_of_damaged`] keeps the
//! full snapshots it might have been a differential of.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, Local, TimeZone, Timelike};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::snapshot::{SnapshotEntry, SnapshotFilter, SnapshotKind};

/// A retention policy. All-zero keeps nothing: callers must refuse it.
/// One of tags alone keeps nothing of a group that carries none of them;
/// `forget` refuses a plan that empties a group (every other rule keeps
/// a group's newest snapshot).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Keep the newest N.
    pub last: u32,
    /// Keep the newest per hour, for N hours.
    pub hourly: u32,
    /// … per day.
    pub daily: u32,
    /// … per ISO week.
    pub weekly: u32,
    /// … per month.
    pub monthly: u32,
    /// … per year.
    pub yearly: u32,
    /// Keep everything taken within this many seconds before the newest.
    pub within_secs: Option<u64>,
    /// Keep snapshots carrying any of these tags.
    pub tags: Vec<String>,
}

impl Policy {
    /// True when the policy would keep nothing.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within_secs.is_none()
            && self.tags.is_empty()
    }
}

/// The decision for one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time, ns since the epoch; `None` for a damaged snapshot file
    /// named for removal, whose time cannot be read.
    pub time_ns: Option<i64>,
    /// Kept?
    pub keep: bool,
    /// Why it is kept (empty when removed).
    pub reasons: Vec<String>,
}

/// Parses a `--keep-within` duration into seconds: numbers with units, as
/// restic has them: `y` years of 365 days, `m` months of 30 days, `w`
/// weeks, `d` days, `h` hours (`30d`, `1y2m`, `12h`, `2w3d`). Note that
/// `m` is a month here; there are no minutes or seconds.
pub fn parse_within(s: &str) -> Result<u64> {
    let bad = || {
        Error::Invalid(format!(
            "{s:?} is not a duration like 30d, 1y2m or 12h \
             (units: y = 365 days, m = 30-day month, w = week, d = day, h = hour)"
        ))
    };
    let total = crate::sum_units(s, |c| match c {
        'y' => Some(365 * 86400),
        'm' => Some(30 * 86400),
        'w' => Some(7 * 86400),
        'd' => Some(86400),
        'h' => Some(3600),
        _ => None,
    })
    .map_err(|_| bad())?;
    if total == 0 {
        return Err(Error::Invalid(format!(
            "{s:?}: a span of zero would keep only the newest snapshot; give a span of more \
             than zero (or --keep-last 1)"
        )));
    }
    Ok(total)
}

/// Applies `policy` to one group, in local time. Returns decisions newest
/// first. Parents of differentials are not considered here: see [`plan`].
pub fn apply(policy: &Policy, group: &[&SnapshotEntry]) -> Vec<Decision> {
    apply_in(policy, group, &Local)
}

/// [`apply`] in a given time zone (tests use UTC).
pub fn apply_in<Tz: TimeZone>(policy: &Policy, group: &[&SnapshotEntry], tz: &Tz) -> Vec<Decision> {
    let mut snaps: Vec<&SnapshotEntry> = group.to_vec();
    snaps.sort_by_key(|e| std::cmp::Reverse(e.order()));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
    let times: Vec<DateTime<Tz>> = snaps
        .iter()
        .map(|e| tz.timestamp_nanos(e.snapshot.time_ns))
        .collect();

    for r in reasons.iter_mut().take(policy.last as usize) {
        r.push("last".into());
    }
    type Key<Tz> = fn(&DateTime<Tz>) -> (i32, u32, u32, u32);
    let buckets: [(&str, u32, Key<Tz>); 5] = [
        ("hourly", policy.hourly, |t| {
            (t.year(), t.ordinal(), t.hour(), 0)
        }),
        ("daily", policy.daily, |t| (t.year(), t.ordinal(), 0, 0)),
        ("weekly", policy.weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 0)
        }),
        ("monthly", policy.monthly, |t| (t.year(), t.month(), 0, 0)),
        ("yearly", policy.yearly, |t| (t.year(), 0, 0, 0)),
    ];
    for (name, count, key) in buckets {
        let mut left = count;
        let mut last = None;
        for (i, t) in times.iter().enumerate() {
            if left == 0 {
                break;
            }
            let k = key(t);
            if last != Some(k) {
                reasons[i].push(name.into());
                last = Some(k);
                left -= 1;
            }
        }
    }
    if let (Some(within), Some(newest)) = (policy.within_secs, snaps.first()) {
        // In i128: a span of more than 292 years is more nanoseconds than
        // an i64 holds (until December 2026 it was cut to that, and
        // snapshots imported with older times were removed).
        let limit = i128::from(newest.snapshot.time_ns) - i128::from(within) * 1_000_000_000;
        for (i, e) in snaps.iter().enumerate() {
            if i128::from(e.snapshot.time_ns) >= limit {
                reasons[i].push("within".into());
            }
        }
    }
    for (i, e) in snaps.iter().enumerate() {
        if policy.tags.iter().any(|t| e.snapshot.tags.contains(t)) {
            reasons[i].push("tag".into());
        }
    }
    snaps
        .iter()
        .zip(reasons)
        .map(|(e, reasons)| Decision {
            id: e.id,
            time_ns: Some(e.snapshot.time_ns),
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect()
}

/// The fields a group's snapshots share (see [`GroupBy::fields`]).
type GroupFields = (
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    Option<Vec<String>>,
);

/// The values a group's snapshots share, each of those it is grouped by.
#[derive(Clone, Debug, Serialize)]
pub struct GroupedBy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// The decisions for one group of snapshots.
#[derive(Clone, Debug, Serialize)]
pub struct GroupDecisions {
    /// The group's key, as [`GroupBy::key`] shows it.
    pub group: String,
    /// What the group is grouped by, each field apart (none for the
    /// snapshots `forget` is given by id): for JSON, whose readers
    /// should not parse the key.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub by: Option<GroupedBy>,
    /// Its snapshots, newest first.
    pub snapshots: Vec<Decision>,
    /// Whether the policy's own rules keep one of them: not so when only
    /// the parents of differentials (and the bases of damaged snapshots)
    /// are kept there, which a `--keep-tag` no snapshot of the group
    /// carries leaves (see `forget`'s refusal of such a plan).
    #[serde(skip)]
    pub kept_by_policy: bool,
}

/// What `forget` does with a policy, in local time: the snapshots passing
/// `filter` are grouped by `group_by`, `policy` is applied to each group,
/// and then the parents of differentials are protected across all groups
/// (see the module docs). Snapshots outside the filter are not listed:
/// they are always kept.
pub fn plan(
    policy: &Policy,
    group_by: &GroupBy,
    filter: &SnapshotFilter,
    all: &[SnapshotEntry],
) -> Vec<GroupDecisions> {
    plan_in(policy, group_by, filter, all, &Local)
}

/// [`plan`] in a given time zone (tests use UTC).
pub fn plan_in<Tz: TimeZone>(
    policy: &Policy,
    group_by: &GroupBy,
    filter: &SnapshotFilter,
    all: &[SnapshotEntry],
    tz: &Tz,
) -> Vec<GroupDecisions> {
    // Grouped by the fields themselves, not by the key shown: `--tag a,b`
    // and `--tag a --tag b` show alike but are two series.
    let mut groups: BTreeMap<GroupFields, Vec<&SnapshotEntry>> = BTreeMap::new();
    for e in all.iter().filter(|e| filter.matches(&e.snapshot)) {
        groups.entry(group_by.fields(e)).or_default().push(e);
    }
    let mut out: Vec<GroupDecisions> = groups
        .into_values()
        .map(|members| {
            let snapshots = apply_in(policy, &members, tz);
            let (set, host, paths, tags) = group_by.fields(members[0]);
            GroupDecisions {
                group: group_by.key(members[0]),
                by: Some(GroupedBy {
                    set,
                    host,
                    paths,
                    tags,
                }),
                kept_by_policy: snapshots.iter().any(|d| d.keep),
                snapshots,
            }
        })
        .collect();
    protect_parents(all, &mut out);
    out
}

/// Keeps, across groups, the full snapshots that differentials need: the
/// newest full of every set and host that has differentials, and the
/// parent of every kept differential (in any group, or outside the filter).
fn protect_parents(all: &[SnapshotEntry], groups: &mut [GroupDecisions]) {
    let mut at: HashMap<SnapshotId, (usize, usize)> = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        for (i, d) in group.snapshots.iter().enumerate() {
            at.insert(d.id, (g, i));
        }
    }
    // Newest first, as backup's choice of parent sees them.
    let mut newest_first: Vec<&SnapshotEntry> = all.iter().collect();
    newest_first.sort_by_key(|e| std::cmp::Reverse(e.order()));
    let key = |e: &SnapshotEntry| (e.snapshot.set.clone(), e.snapshot.host.clone());

    let keep = |id: &SnapshotId, reason: String, groups: &mut [GroupDecisions]| {
        if let Some(&(g, i)) = at.get(id) {
            let d = &mut groups[g].snapshots[i];
            d.keep = true;
            d.reasons.push(reason);
        }
    };

    let with_differentials: HashSet<(String, String)> = all
        .iter()
        .filter(|e| e.snapshot.kind == SnapshotKind::Differential)
        .map(key)
        .collect();
    let mut seen = HashSet::new();
    for e in &newest_first {
        if e.snapshot.kind == SnapshotKind::Full
            && with_differentials.contains(&key(e))
            && seen.insert(key(e))
        {
            keep(&e.id, "newest-full".into(), groups);
        }
    }

    // A differential's parent is always full, so one pass suffices. Each
    // parent names the newest kept differential that needs it.
    let removed = |id: &SnapshotId, groups: &[GroupDecisions]| {
        at.get(id)
            .is_some_and(|&(g, i)| !groups[g].snapshots[i].keep)
    };
    let mut protected = HashSet::new();
    for e in &newest_first {
        if e.snapshot.kind != SnapshotKind::Differential || removed(&e.id, groups) {
            continue;
        }
        if let Some(parent) = e.snapshot.parent {
            if protected.insert(parent) {
                let reason = format!("parent of kept differential {}", e.id.short());
                keep(&parent, reason, groups);
            }
        }
    }
}

/// Keeps every full snapshot that `groups` would remove, for a plan made
/// while some snapshot files do not decode: any of them may be a
/// differential, whose parent, or its set's newest full snapshot,
/// [`plan`] would have kept had it been readable, and what it holds
/// cannot be read to tell which. So a damaged file never makes the policy
/// remove a snapshot it would otherwise keep; the other rules cannot, as
/// a snapshot left out of a group only leaves more of it kept.
pub fn keep_bases_of_damaged(all: &[SnapshotEntry], groups: &mut [GroupDecisions]) {
    let full: HashSet<SnapshotId> = all
        .iter()
        .filter(|e| e.snapshot.kind == SnapshotKind::Full)
        .map(|e| e.id)
        .collect();
    for d in groups.iter_mut().flat_map(|g| &mut g.snapshots) {
        if !d.keep && full.contains(&d.id) {
            d.keep = true;
            d.reasons
                .push("full, and a damaged snapshot may be a differential of it".into());
        }
    }
}

/// Fields snapshots can be grouped by.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupBy {
    /// By set.
    pub set: bool,
    /// By host.
    pub host: bool,
    /// By paths.
    pub paths: bool,
    /// By tags.
    pub tags: bool,
}

impl GroupBy {
    /// Parses a comma list of `set`, `host`, `paths`, `tags` (or empty).
    pub fn parse(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "set" => g.set = true,
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                _ => {
                    return Err(Error::Invalid(format!(
                        "cannot group by {part:?} (use set, host, paths, tags)"
                    )))
                }
            }
        }
        Ok(g)
    }

    /// What groups `e`: the set, host, paths and sorted tags it is
    /// grouped by, each `None` when not grouped by. A tag a snapshot
    /// records twice (as backups before December 2026 stored `--tag a
    /// --tag a`) counts once.
    fn fields(&self, e: &SnapshotEntry) -> GroupFields {
        let s = &e.snapshot;
        let mut tags = s.tags.clone();
        tags.sort();
        tags.dedup();
        (
            self.set.then(|| s.set.clone()),
            self.host.then(|| s.host.clone()),
            self.paths.then(|| s.paths.clone()),
            self.tags.then_some(tags),
        )
    }

    /// The group key of a snapshot, as shown to users. A value that
    /// holds a comma or a quote, or is empty or has spaces at an end, is
    /// quoted, so that two
    /// groups never show alike (a set named `a, host b` of host `c`, and
    /// set `a` of host `b, host c`, say).
    pub fn key(&self, e: &SnapshotEntry) -> String {
        let s = &e.snapshot;
        // Quoted as CSV quotes (a quote within doubled), not with
        // backslashes, which the text output escapes again.
        let shown = |v: &str| -> String {
            if v.is_empty() || v.contains([',', '"']) || v.trim() != v {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_string()
            }
        };
        let list = |vs: &[String]| vs.iter().map(|v| shown(v)).collect::<Vec<_>>().join(",");
        let mut parts = Vec::new();
        if self.set {
            parts.push(format!("set {}", shown(&s.set)));
        }
        if self.host {
            parts.push(format!("host {}", shown(&s.host)));
        }
        if self.paths {
            parts.push(format!("paths {}", list(&s.paths)));
        }
        if self.tags {
            let mut t = s.tags.clone();
            t.sort();
            t.dedup();
            parts.push(format!("tags {}", list(&t)));
        }
        if parts.is_empty() {
            "all snapshots".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;
    use crate::snapshot::{Snapshot, Summary};
    use chrono::Utc;

    fn at(
        date: &str,
        n: u8,
        kind: SnapshotKind,
        parent: Option<u8>,
        tags: &[&str],
    ) -> SnapshotEntry {
        let t = chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
            .timestamp_nanos_opt()
            .unwrap();
        SnapshotEntry {
            id: SnapshotId([n; 32]),
            snapshot: Snapshot {
                version: 1,
                time_ns: t,
                host: "h".into(),
                user: "u".into(),
                set: "s".into(),
                kind,
                paths: vec!["/p".into()],
                tags: tags.iter().map(|s| s.to_string()).collect(),
                parent: parent.map(|p| SnapshotId([p; 32])),
                tree: BlobId([0; 32]),
                summary: Summary::default(),
                excludes: Vec::new(),
                started_ns: t,
            },
        }
    }

    fn kept(policy: &Policy, snaps: &[SnapshotEntry]) -> Vec<u8> {
        let refs: Vec<&SnapshotEntry> = snaps.iter().collect();
        let mut k: Vec<u8> = apply_in(policy, &refs, &Utc)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id.0[0])
            .collect();
        k.sort();
        k
    }

    /// Snapshot n (1-based) taken on the dates below, one per line.
    fn table() -> Vec<SnapshotEntry> {
        let dates = [
            "2026-01-01 10:00", // 1  Thu, week 1, Jan
            "2026-01-01 22:00", // 2  same day
            "2026-01-05 09:00", // 3  Mon, week 2
            "2026-01-06 09:00", // 4  Tue, week 2
            "2026-01-31 23:00", // 5  Sat, week 5, Jan
            "2026-02-01 01:00", // 6  Sun, week 5, Feb
            "2026-02-01 01:30", // 7  same hour
            "2026-03-15 12:00", // 8  Sun, week 11, Mar
            "2025-12-31 23:59", // 9  year 2025
            "2024-06-01 00:00", // 10 year 2024
        ];
        dates
            .iter()
            .enumerate()
            .map(|(i, d)| at(d, i as u8 + 1, SnapshotKind::Incremental, None, &[]))
            .collect()
    }

    #[test]
    fn retention_table() {
        let t = table();
        let cases: Vec<(Policy, Vec<u8>)> = vec![
            (
                Policy {
                    last: 3,
                    ..Default::default()
                },
                vec![6, 7, 8],
            ),
            (
                Policy {
                    hourly: 3,
                    ..Default::default()
                },
                vec![5, 7, 8],
            ),
            (
                Policy {
                    daily: 4,
                    ..Default::default()
                },
                vec![4, 5, 7, 8],
            ),
            (
                Policy {
                    weekly: 3,
                    ..Default::default()
                },
                vec![4, 7, 8],
            ),
            (
                Policy {
                    monthly: 2,
                    ..Default::default()
                },
                vec![7, 8],
            ),
            (
                Policy {
                    monthly: 4,
                    ..Default::default()
                },
                vec![5, 7, 8, 9],
            ),
            (
                Policy {
                    yearly: 5,
                    ..Default::default()
                },
                vec![8, 9, 10],
            ),
            (
                Policy {
                    daily: 2,
                    monthly: 3,
                    ..Default::default()
                },
                vec![5, 7, 8],
            ),
            (
                Policy {
                    last: 1,
                    yearly: 2,
                    ..Default::default()
                },
                vec![8, 9],
            ),
            (
                Policy {
                    within_secs: Some(parse_within("45d").unwrap()),
                    ..Default::default()
                },
                vec![5, 6, 7, 8],
            ),
            (
                Policy {
                    within_secs: Some(parse_within("1y").unwrap()),
                    ..Default::default()
                },
                vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
            ),
            (
                // Past i64's seconds: forever, not nothing.
                Policy {
                    within_secs: Some(parse_within("300000000000y").unwrap()),
                    ..Default::default()
                },
                vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            ),
        ];
        for (policy, want) in cases {
            assert_eq!(kept(&policy, &t), want, "{policy:?}");
        }
    }

    /// A span longer than an i64 of nanoseconds holds (292 years) keeps
    /// what lies within it: a snapshot imported with a time of 1700 is
    /// within 400 years of one of 2025, not removed.
    #[test]
    fn keep_within_centuries_keeps_what_lies_within() {
        let t = [
            at("2025-01-01 00:00", 1, SnapshotKind::Full, None, &[]),
            at("1700-01-01 00:00", 2, SnapshotKind::Full, None, &[]),
        ];
        let refs: Vec<&SnapshotEntry> = t.iter().collect();
        let kept = |span: &str| {
            let p = Policy {
                within_secs: Some(parse_within(span).unwrap()),
                ..Default::default()
            };
            apply_in(&p, &refs, &Utc).iter().filter(|d| d.keep).count()
        };
        assert_eq!(kept("400y"), 2);
        assert_eq!(kept("326y"), 2);
        assert_eq!(kept("325y"), 1, "325 years of 365 days end in 1700-03");
        assert!(parse_within("0h").unwrap_err().to_string().contains("zero"));
    }

    #[test]
    fn reasons_are_listed_once_per_kind() {
        let t = table();
        let refs: Vec<&SnapshotEntry> = t.iter().collect();
        let p = Policy {
            last: 1,
            daily: 1,
            monthly: 1,
            ..Default::default()
        };
        let d = apply_in(&p, &refs, &Utc);
        assert_eq!(d[0].id.0[0], 8);
        assert_eq!(d[0].reasons, vec!["last", "daily", "monthly"]);
        assert!(d[1..].iter().all(|d| !d.keep && d.reasons.is_empty()));
    }

    #[test]
    fn tags_keep() {
        let mut t = table();
        t[2] = at(
            "2026-01-05 09:00",
            3,
            SnapshotKind::Incremental,
            None,
            &["keep"],
        );
        let p = Policy {
            last: 1,
            tags: vec!["keep".into()],
            ..Default::default()
        };
        assert_eq!(kept(&p, &t), vec![3, 8]);
    }

    /// Kept ids over all groups of a plan.
    fn planned(
        policy: &Policy,
        group_by: &str,
        filter: &SnapshotFilter,
        snaps: &[SnapshotEntry],
    ) -> Vec<u8> {
        let g = GroupBy::parse(group_by).unwrap();
        let mut k: Vec<u8> = plan_in(policy, &g, filter, snaps, &Utc)
            .into_iter()
            .flat_map(|g| g.snapshots)
            .filter(|d| d.keep)
            .map(|d| d.id.0[0])
            .collect();
        k.sort();
        k
    }

    fn last(n: u32) -> Policy {
        Policy {
            last: n,
            ..Default::default()
        }
    }

    /// Leaving any one snapshot out as damaged never removes another the
    /// whole plan keeps, whatever the policy: no rule is loosened by a
    /// missing snapshot, and the full snapshots a damaged differential
    /// could need stay.
    #[test]
    fn a_damaged_snapshot_makes_no_kept_snapshot_go() {
        let d = SnapshotKind::Differential;
        let i = SnapshotKind::Incremental;
        let f = SnapshotKind::Full;
        let t = vec![
            at("2026-01-01 00:00", 1, f, None, &[]),
            at("2026-01-02 00:00", 2, d, Some(1), &["x"]),
            at("2026-01-03 00:00", 3, i, Some(2), &[]),
            at("2026-01-08 00:00", 4, f, None, &[]),
            at("2026-01-08 06:00", 5, d, Some(4), &[]),
            at("2026-01-09 00:00", 6, i, Some(5), &[]),
            at("2026-01-10 00:00", 7, d, Some(4), &[]),
        ];
        let policies = [
            last(1),
            last(3),
            Policy {
                daily: 2,
                ..Default::default()
            },
            Policy {
                weekly: 1,
                ..Default::default()
            },
            Policy {
                within_secs: Some(86_400),
                ..Default::default()
            },
            Policy {
                tags: vec!["x".into()],
                ..Default::default()
            },
        ];
        let all = SnapshotFilter::default();
        let g = GroupBy::parse("set,host,paths").unwrap();
        let kept = |policy: &Policy, snaps: &[SnapshotEntry], damaged: bool| {
            let mut p = plan_in(policy, &g, &all, snaps, &Utc);
            if damaged {
                keep_bases_of_damaged(snaps, &mut p);
            }
            p.into_iter()
                .flat_map(|g| g.snapshots)
                .filter(|d| d.keep)
                .map(|d| d.id.0[0])
                .collect::<HashSet<u8>>()
        };
        for policy in &policies {
            let whole = kept(policy, &t, false);
            for gone in 1..=7u8 {
                let rest: Vec<SnapshotEntry> =
                    t.iter().filter(|e| e.id.0[0] != gone).cloned().collect();
                let with_damage = kept(policy, &rest, true);
                for id in whole.iter().filter(|&&id| id != gone) {
                    assert!(
                        with_damage.contains(id),
                        "{policy:?}: {gone} damaged makes {id} go"
                    );
                }
            }
        }
        // What keeps a full snapshot only for the damage says so.
        let mut p = plan_in(&last(1), &g, &all, &t[..4], &Utc);
        keep_bases_of_damaged(&t[..4], &mut p);
        let one = p[0].snapshots.iter().find(|d| d.id.0[0] == 1).unwrap();
        assert!(one.keep);
        assert_eq!(
            one.reasons,
            vec!["full, and a damaged snapshot may be a differential of it"]
        );
    }

    /// One tag `a,b` and two tags `a` and `b` show alike as a group's key
    /// but are two series: keep-last 1 keeps the newest of each.
    #[test]
    fn groups_are_told_apart_by_their_fields_not_their_shown_key() {
        let t = vec![
            at("2026-01-01 00:00", 1, SnapshotKind::Full, None, &["a,b"]),
            at("2026-01-02 00:00", 2, SnapshotKind::Full, None, &["a", "b"]),
        ];
        let all = SnapshotFilter::default();
        assert_eq!(planned(&last(1), "tags", &all, &t), vec![1, 2]);
        // A tag recorded twice counts once: one series with `a` and `b`.
        let t = vec![
            at(
                "2026-01-01 00:00",
                1,
                SnapshotKind::Full,
                None,
                &["b", "a", "a"],
            ),
            at("2026-01-02 00:00", 2, SnapshotKind::Full, None, &["a", "b"]),
        ];
        assert_eq!(planned(&last(1), "tags", &all, &t), vec![2]);
    }

    #[test]
    fn differential_bases_are_kept() {
        let t = vec![
            at("2026-01-01 00:00", 1, SnapshotKind::Full, None, &[]),
            at(
                "2026-01-02 00:00",
                2,
                SnapshotKind::Differential,
                Some(1),
                &[],
            ),
            at("2026-01-08 00:00", 3, SnapshotKind::Full, None, &[]),
            at(
                "2026-01-09 00:00",
                4,
                SnapshotKind::Differential,
                Some(3),
                &[],
            ),
            at(
                "2026-01-10 00:00",
                5,
                SnapshotKind::Differential,
                Some(3),
                &[],
            ),
        ];
        let all = SnapshotFilter::default();
        let by = "set,host,paths";
        // keep-last 1 keeps 5; its base 3 is kept; 1 and 2 go.
        assert_eq!(planned(&last(1), by, &all, &t), vec![3, 5]);
        // keep-daily 4 keeps 2..5; 2's base 1 is kept as well.
        let daily = Policy {
            daily: 4,
            ..Default::default()
        };
        assert_eq!(planned(&daily, by, &all, &t), vec![1, 2, 3, 4, 5]);
        let g = GroupBy::parse(by).unwrap();
        let d: Vec<Decision> = plan_in(&daily, &g, &all, &t, &Utc)
            .into_iter()
            .flat_map(|g| g.snapshots)
            .collect();
        let one = d.iter().find(|d| d.id.0[0] == 1).unwrap();
        assert_eq!(
            one.reasons,
            vec![format!(
                "parent of kept differential {}",
                SnapshotId([2; 32]).short()
            )]
        );
        // Even keeping only an old differential, the newest full stays
        // for tomorrow's differential.
        let tag = Policy {
            tags: vec!["x".into()],
            ..Default::default()
        };
        let d: Vec<Decision> = plan_in(&tag, &g, &all, &t, &Utc)
            .into_iter()
            .flat_map(|g| g.snapshots)
            .collect();
        let newest_full = d.iter().find(|d| d.id.0[0] == 3).unwrap();
        assert_eq!(newest_full.reasons, vec!["newest-full"]);
    }

    #[test]
    fn parents_are_protected_across_groups_and_filters() {
        // Full 1 tagged "weekly", differential 2 tagged "daily": grouped by
        // tags they fall in different groups, yet 2 needs 1.
        let mut t = vec![
            at("2026-01-01 00:00", 1, SnapshotKind::Full, None, &["weekly"]),
            at("2026-01-03 00:00", 3, SnapshotKind::Full, None, &["weekly"]),
            at(
                "2026-01-04 00:00",
                4,
                SnapshotKind::Differential,
                Some(3),
                &["daily"],
            ),
            at(
                "2026-01-02 00:00",
                2,
                SnapshotKind::Differential,
                Some(1),
                &["daily", "keep"],
            ),
        ];
        let keep_tag = Policy {
            tags: vec!["keep".into()],
            ..Default::default()
        };
        let all = SnapshotFilter::default();
        // Kept: 2 (tag), its parent 1, newest full 3; 4 goes.
        assert_eq!(planned(&keep_tag, "tags", &all, &t), vec![1, 2, 3]);

        // Same set over different paths: one group per paths, and backup
        // still picks the parent by set and host. Differential 2 backs up
        // "/q" with full 1 of "/p" as parent; keep-last 1 keeps 4 in "/p"
        // and 2 in "/q", so 1 stays for 2 and 3 for 4.
        t[3].snapshot.paths = vec!["/q".into()];
        assert_eq!(
            planned(&last(1), "set,host,paths", &all, &t),
            vec![1, 2, 3, 4]
        );
        let g = GroupBy::parse("set,host,paths").unwrap();
        let groups = plan_in(&last(1), &g, &all, &t, &Utc);
        assert_eq!(groups.len(), 2);
        let one = groups[0].snapshots.iter().find(|d| d.id.0[0] == 1).unwrap();
        assert_eq!(
            one.reasons,
            vec![format!(
                "parent of kept differential {}",
                SnapshotId([2; 32]).short()
            )]
        );

        // A differential outside the filter is never removed, and neither
        // is its parent.
        let weekly_only = SnapshotFilter {
            tags: vec!["weekly".into()],
            ..Default::default()
        };
        assert_eq!(planned(&last(1), "set,host", &weekly_only, &t), vec![1, 3]);
        let g = GroupBy::parse("set,host").unwrap();
        let groups = plan_in(&last(1), &g, &weekly_only, &t, &Utc);
        let listed: Vec<u8> = groups
            .iter()
            .flat_map(|g| g.snapshots.iter().map(|d| d.id.0[0]))
            .collect();
        assert_eq!(listed, vec![3, 1], "only filtered snapshots are listed");
        let one = &groups[0].snapshots[1];
        assert_eq!(
            one.reasons,
            vec![format!(
                "parent of kept differential {}",
                SnapshotId([2; 32]).short()
            )]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_within("30d").unwrap(), 30 * 86400);
        assert_eq!(parse_within("1y2m").unwrap(), 425 * 86400);
        assert_eq!(parse_within("1m").unwrap(), 30 * 86400, "m is a month");
        assert_eq!(parse_within("2w3d").unwrap(), 17 * 86400);
        assert_eq!(parse_within("12h").unwrap(), 43200);
        // Longer than any history: forever, not a malformed duration.
        assert_eq!(parse_within("99999999999999y").unwrap(), u64::MAX);
        assert_eq!(parse_within("123456789012345678901234d").unwrap(), u64::MAX);
        for bad in ["", "5", "3x", "d", "0d", "30s"] {
            assert!(parse_within(bad).is_err(), "{bad}");
        }
    }
}
