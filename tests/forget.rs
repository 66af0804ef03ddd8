//! `forget` through the real binary: groups, filters, keep-within and
//! keep-tag from the command line, differential parents across groups,
//! named snapshots, and `--json --gc`. Snapshots get controlled times with
//! `backup --time`.

mod common;
mod support_maint;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use support_maint::*;

/// `cairn ARGS` in UTC, so day buckets do not depend on the machine.
fn run_utc(repo: &Repo, args: &[&str]) -> Out {
    let mut c = repo.cmd(args);
    c.env("TZ", "UTC");
    run(&mut c, None)
}

/// Backs up `src` at `time` (RFC 3339) with extra arguments; returns the id.
#[track_caller]
fn backup_at(repo: &Repo, src: &Path, time: &str, extra: &[&str]) -> String {
    let mut args = vec!["--time", time];
    args.extend_from_slice(extra);
    let v = repo.backup(&[src], &args);
    v["id"].as_str().unwrap().to_string()
}

/// `forget ARGS`, asserting it is refused as a policy that keeps
/// nothing of some group.
#[track_caller]
fn refused_as_emptying(repo: &Repo, args: &[&str]) -> Out {
    let out = run_utc(repo, args);
    assert_eq!(out.code, 1, "{args:?}: {out}");
    assert!(
        out.stderr.contains("the policy keeps no snapshot of group"),
        "{args:?}: {out}"
    );
    out
}

#[track_caller]
fn dry_run(repo: &Repo, args: &[&str]) -> Plan {
    let mut all = vec!["forget", "--dry-run", "--json"];
    all.extend_from_slice(args);
    plan(&run_utc(repo, &all).success().json())
}

/// Kept ids over all groups of a plan.
fn kept(p: &Plan) -> BTreeSet<String> {
    p.values()
        .flatten()
        .filter(|d| d.1)
        .map(|d| d.0.clone())
        .collect()
}

/// Listed ids over all groups of a plan.
fn listed(p: &Plan) -> BTreeSet<String> {
    p.values().flatten().map(|d| d.0.clone()).collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn reasons<'a>(p: &'a Plan, id: &str) -> &'a [String] {
    &p.values().flatten().find(|d| d.0 == id).expect("listed").2
}

#[test]
fn groups_filters_within_and_tags_from_the_command_line() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    fill(&src, 1, &[("a", 10_000)]);
    // Host "alpha", set "web": one a day, 1..5 January; the 2nd is tagged.
    let web: Vec<String> = (1..=5)
        .map(|day| {
            let time = format!("2026-01-0{day}T12:00:00Z");
            let mut extra = vec!["--host", "alpha", "--set", "web"];
            if day == 2 {
                extra.extend_from_slice(&["--tag", "keep"]);
            }
            backup_at(&repo, &src, &time, &extra)
        })
        .collect();
    // Host "beta", set "db": 3 January, and twice on 5 January.
    let db: Vec<String> = [
        "2026-01-03T12:00:00Z",
        "2026-01-05T10:00:00Z",
        "2026-01-05T11:00:00Z",
    ]
    .iter()
    .map(|t| backup_at(&repo, &src, t, &["--host", "beta", "--set", "db"]))
    .collect();
    let everything: BTreeSet<String> = web.iter().chain(&db).cloned().collect();
    assert_eq!(snapshot_ids(&repo), everything);
    let recorded = repo.snapshots();
    let at = |id: &str| -> String {
        recorded.iter().find(|s| s["id"] == id).unwrap()["time_ns"].to_string()
    };
    assert_eq!(at(&web[0]), "1767268800000000000", "--time is recorded");

    // Default groups (set, host, paths): one per set here.
    let p = dry_run(&repo, &["--keep-daily", "2"]);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(kept(&p), set(&[&web[4], &web[3], &db[2], &db[0]]), "{p:?}");
    assert_eq!(reasons(&p, &db[2]), ["daily"]);

    // --host: only alpha's snapshots are considered (and listed).
    let p = dry_run(&repo, &["--keep-last", "1", "--host", "alpha"]);
    assert_eq!(listed(&p), web.iter().cloned().collect(), "{p:?}");
    assert_eq!(kept(&p), set(&[&web[4]]));
    // --set the same way.
    let p = dry_run(&repo, &["--keep-last", "1", "--set", "db"]);
    assert_eq!(listed(&p), db.iter().cloned().collect(), "{p:?}");
    // --tag: only tagged snapshots.
    let p = dry_run(&repo, &["--keep-last", "5", "--tag", "keep"]);
    assert_eq!(listed(&p), set(&[&web[1]]), "{p:?}");

    // --group-by host: group keys name the host only.
    let p = dry_run(&repo, &["--keep-last", "1", "--group-by", "host"]);
    assert_eq!(
        p.keys().cloned().collect::<Vec<_>>(),
        ["host alpha", "host beta"]
    );
    // --group-by "" puts everything in one group: keep-last 1 keeps the
    // newest of all.
    let p = dry_run(&repo, &["--keep-last", "1", "--group-by", ""]);
    assert_eq!(p.keys().cloned().collect::<Vec<_>>(), ["all snapshots"]);
    assert_eq!(kept(&p), set(&[&web[4]]), "{p:?}");

    // --keep-within is relative to the newest of each group: 2d keeps 3..5
    // January of web (the 3rd exactly 2 days before) and all of db.
    let p = dry_run(&repo, &["--keep-within", "2d"]);
    let mut want = set(&[&web[2], &web[3], &web[4]]);
    want.extend(db.iter().cloned());
    assert_eq!(kept(&p), want, "{p:?}");
    assert_eq!(reasons(&p, &web[2]), ["within"]);
    // 1m is a month, not a minute: everything is within it.
    assert_eq!(kept(&dry_run(&repo, &["--keep-within", "1m"])), everything);
    let out = run_utc(&repo, &["forget", "--keep-within", "10s", "--dry-run"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("30-day month"), "{out}");
    // `2h30m`, which reads as minutes, says what it is.
    let out = run_utc(&repo, &["forget", "--keep-within", "2h30m", "--dry-run"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(
            "warning: --keep-within 2h30m: `m` is a month of 30 days, not a minute (there are no \
             minutes); the span is 900 days"
        ),
        "{out}"
    );
    let out = run_utc(&repo, &["forget", "--keep-within", "1h0m", "--dry-run"]);
    assert!(out.stderr.contains("the span is 1 hour(s)"), "{out}");
    let out = run_utc(&repo, &["forget", "--keep-within", "1m2d", "--dry-run"]);
    assert!(!out.stderr.contains("not a minute"), "{out}");
    // A filter that matches nothing says so.
    let out = run_utc(&repo, &["forget", "--keep-last", "1", "--host", "wbe"]).success();
    assert!(
        out.stderr
            .contains("warning: no snapshot matches --host wbe: the policy removes nothing"),
        "{out}"
    );
    assert_eq!(snapshot_ids(&repo), everything, "{out}");

    // A tag given twice is stored once.
    let twice = repo.backup(&[&src], &["--tag", "x", "--tag", "y", "--tag", "x"]);
    assert_eq!(twice["tags"], serde_json::json!(["x", "y"]), "{twice}");
    run_utc(&repo, &["forget", twice["id"].as_str().unwrap()]).success();

    // Arguments are usage errors (exit 2), found before the repository
    // is opened: with a wrong password too.
    for args in [
        &["forget", "--keep-last", "1", "--group-by", "colour"][..],
        &["forget", "--keep-within", "5"],
        &["forget", "zz"],
        // A grouping for snapshots named would be dropped unsaid.
        &["forget", "abcd1234", "--group-by", "host"],
    ] {
        let mut c = repo.cmd(args);
        c.env("CAIRN_PASSWORD", "not the password");
        let out = run(&mut c, None);
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(!out.stderr.contains("password"), "{args:?}: {out}");
    }

    // --keep-tag, together with keep-last.
    let p = dry_run(&repo, &["--keep-last", "1", "--keep-tag", "keep"]);
    assert_eq!(kept(&p), set(&[&web[4], &web[1], &db[2]]), "{p:?}");
    assert_eq!(reasons(&p, &web[1]), ["tag"]);
    assert_eq!(snapshot_ids(&repo), everything, "dry runs remove nothing");
    // A dry run with --gc says it does not plan the gc, rather than
    // leave it out unsaid.
    let out = run_utc(&repo, &["forget", "--keep-last", "1", "--dry-run", "--gc"]).success();
    assert!(out.stderr.contains("does not plan its gc"), "{out}");
    assert!(out.stderr.contains("cairn gc --dry-run"), "{out}");
    assert_eq!(snapshot_ids(&repo), everything, "dry runs remove nothing");

    // For real, with a filter: only db loses snapshots.
    let out = run_utc(&repo, &["forget", "--keep-last", "1", "--set", "db"]).success();
    assert!(out.stdout.contains("removed 2 snapshot(s)"), "{out}");
    let mut left: BTreeSet<String> = web.iter().cloned().collect();
    left.insert(db[2].clone());
    assert_eq!(snapshot_ids(&repo), left);
    // Then by host and tag over what is left.
    run_utc(
        &repo,
        &[
            "forget",
            "--keep-within",
            "1d",
            "--keep-tag",
            "keep",
            "--host",
            "alpha",
        ],
    )
    .success();
    assert_eq!(
        snapshot_ids(&repo),
        set(&[&web[1], &web[3], &web[4], &db[2]])
    );
    repo.run(&["gc"]).success();
    assert_verify_ok(&repo);
}

/// A policy of tags alone keeps nothing of a group that never carries
/// them: a mistyped tag must not remove every backup, the newest
/// included. The refusal names the group and comes before anything is
/// removed, in a dry run as for real.
#[test]
fn a_tag_policy_that_would_empty_a_group_is_refused() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    fill(&src, 1, &[("a", 10_000)]);
    let web: Vec<String> = (1..=3)
        .map(|day| {
            let time = format!("2026-01-0{day}T12:00:00Z");
            let mut extra = vec!["--set", "web"];
            if day == 1 {
                extra.extend_from_slice(&["--tag", "keep"]);
            }
            backup_at(&repo, &src, &time, &extra)
        })
        .collect();
    let db = backup_at(&repo, &src, "2026-01-02T12:00:00Z", &["--set", "db"]);
    let everything: BTreeSet<String> = web.iter().chain([&db]).cloned().collect();

    for extra in [&[][..], &["--dry-run"], &["--dry-run", "--json"], &["--gc"]] {
        for tag in ["keep", "kepe"] {
            let mut args = vec!["forget", "--keep-tag", tag];
            args.extend_from_slice(extra);
            let out = refused_as_emptying(&repo, &args);
            // db carries no tag at all; web carries `keep` but not `kepe`.
            assert!(out.stderr.contains("set db"), "{args:?}: {out}");
            assert_eq!(
                out.stderr.contains("set web"),
                tag == "kepe",
                "{args:?}: {out}"
            );
            assert!(out.stderr.contains("--keep-last 1"), "{args:?}: {out}");
            assert!(out.stderr.contains("by id"), "{args:?}: {out}");
            assert_eq!(out.stdout, "", "{args:?}: {out}");
            assert_eq!(snapshot_ids(&repo), everything, "{args:?}: {out}");
        }
    }
    // An empty tag is refused as such.
    for tag in ["", " "] {
        let out = run_utc(&repo, &["forget", "--keep-tag", tag, "--dry-run"]);
        assert_eq!(out.code, 2, "{out}");
        assert!(out.stderr.contains("--keep-tag needs a tag"), "{out}");
    }

    // Where each group keeps one, the policy runs: web keeps its tagged
    // snapshot, and db is not a candidate.
    run_utc(&repo, &["forget", "--keep-tag", "keep", "--set", "web"]).success();
    assert_eq!(snapshot_ids(&repo), set(&[&web[0], &db]));
    // With a count rule beside the tag every group keeps its newest.
    run_utc(&repo, &["forget", "--keep-tag", "kepe", "--keep-last", "1"]).success();
    assert_eq!(snapshot_ids(&repo), set(&[&web[0], &db]));
    // And a whole group goes by naming its snapshots.
    run_utc(&repo, &["forget", &db]).success();
    assert_eq!(snapshot_ids(&repo), set(&[&web[0]]));
}

/// A full kept only because a differential needs it does not make a
/// policy of tags that the group never carries sound: it is refused as
/// for a group without differentials. Until December 2026 it removed
/// every snapshot but that old full, the newest included, exit 0; and
/// likewise wherever a damaged snapshot file had the fulls kept.
#[test]
fn a_tag_policy_is_refused_though_a_differential_keeps_a_full() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let mut ids = Vec::new();
    for (day, kind) in [(1, "full"), (2, "differential"), (3, "incremental")] {
        fill(&src, day, &[("a", 1_000)]);
        let time = format!("2026-01-0{day}T12:00:00Z");
        ids.push(backup_at(&repo, &src, &time, &["--kind", kind]));
    }
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    for extra in [&["--dry-run"][..], &[]] {
        let mut args = vec!["forget", "--keep-tag", "kepe"];
        args.extend_from_slice(extra);
        let out = refused_as_emptying(&repo, &args);
        assert_eq!(snapshot_ids(&repo), all, "{args:?}: {out}");
    }

    // A damaged snapshot file of another set keeps every full as the
    // base it may have: in a repository without differentials, the
    // refusal stands all the same.
    let repo = Repo::new();
    let mut ids = BTreeSet::new();
    for day in 1..=3 {
        fill(&src, day, &[("a", 1_000)]);
        let time = format!("2026-01-0{day}T12:00:00Z");
        ids.insert(backup_at(&repo, &src, &time, &[]));
    }
    let other = backup_at(&repo, &src, "2026-01-04T12:00:00Z", &["--set", "other"]);
    let name = fs::read_dir(repo.path.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with(&other))
        .unwrap();
    fs::write(repo.path.join("snapshots").join(name), b"garbage").unwrap();
    let out = refused_as_emptying(&repo, &["forget", "--keep-tag", "kepe"]);
    assert_eq!(snapshot_ids(&repo), ids, "{out}");
}

#[test]
fn a_differential_keeps_its_parent_across_groups() {
    let repo = Repo::new();
    let a = repo.scratch("a");
    let b = repo.scratch("b");
    fill(&a, 2, &[("x", 30_000)]);
    fill(&b, 3, &[("y", 30_000)]);
    let s = ["--set", "s"];
    // Full of a (tag weekly); a differential of b in the same set names it
    // as parent (backup picks the parent by set and host); a newer full of
    // a (tag weekly) follows.
    let f1 = backup_at(
        &repo,
        &a,
        "2026-02-01T12:00:00Z",
        &[&s[..], &["--kind", "full", "--tag", "weekly"]].concat(),
    );
    let d = repo.backup(
        &[&b],
        &[
            &s[..],
            &[
                "--time",
                "2026-02-02T12:00:00Z",
                "--kind",
                "differential",
                "--tag",
                "daily",
            ],
        ]
        .concat(),
    );
    assert_eq!(d["kind"], "differential");
    assert_eq!(d["parent"], f1.as_str(), "backup picks by set and host");
    let d = d["id"].as_str().unwrap().to_string();
    let f2 = backup_at(
        &repo,
        &a,
        "2026-02-03T12:00:00Z",
        &[&s[..], &["--kind", "full", "--tag", "weekly"]].concat(),
    );
    let parent_reason = format!("parent of kept differential {}", &d[..8]);

    // Grouped by tags, f1 and d are in different groups; keep-last 1
    // alone would drop f1 from the "weekly" group.
    let p = dry_run(&repo, &["--keep-last", "1", "--group-by", "tags"]);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(kept(&p), set(&[&f1, &d, &f2]), "{p:?}");
    assert_eq!(reasons(&p, &f1), [parent_reason.as_str()]);
    assert_eq!(reasons(&p, &f2), ["last", "newest-full"]);
    // The text dry run says why.
    let out = run_utc(
        &repo,
        &[
            "forget",
            "--keep-last",
            "1",
            "--group-by",
            "tags",
            "--dry-run",
        ],
    )
    .success();
    assert!(out.stdout.contains(&parent_reason), "{out}");

    // Same set over different paths: the default groups split a and b.
    let p = dry_run(&repo, &["--keep-last", "1"]);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(reasons(&p, &f1), [parent_reason.as_str()]);

    // A differential outside the filter protects its parent too.
    let p = dry_run(&repo, &["--keep-last", "1", "--tag", "weekly"]);
    assert_eq!(listed(&p), set(&[&f1, &f2]));
    assert_eq!(kept(&p), set(&[&f1, &f2]), "{p:?}");

    // For real: nothing goes while d is kept; once d is forgotten by id,
    // the policy lets f1 go.
    run_utc(&repo, &["forget", "--keep-last", "1", "--group-by", "tags"]).success();
    assert_eq!(snapshot_ids(&repo), set(&[&f1, &d, &f2]));
    repo.run(&["forget", &d]).success();
    run_utc(&repo, &["forget", "--keep-last", "1", "--group-by", "tags"]).success();
    assert_eq!(snapshot_ids(&repo), set(&[&f2]));
}

#[test]
fn forget_by_id_reports_what_it_removes() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    fill(&src, 4, &[("a", 20_000)]);
    let s1 = backup_at(&repo, &src, "2026-03-01T12:00:00Z", &[]);
    let s2 = backup_at(&repo, &src, "2026-03-02T12:00:00Z", &[]);
    let both = set(&[&s1, &s2]);

    let out = repo
        .run(&["forget", "--dry-run", "--json", &s1[..8]])
        .success();
    let p = plan(&out.json());
    assert_eq!(
        p["named snapshots"],
        vec![(s1.clone(), false, vec!["named".to_string()])]
    );
    let out = repo.run(&["forget", "--dry-run", &s1]).success();
    assert!(out.stdout.contains(&s1[..8]), "{out}");
    assert!(out.stdout.contains("remove  named"), "{out}");
    assert!(out.stdout.contains("would remove 1 snapshot(s)"), "{out}");
    assert_eq!(snapshot_ids(&repo), both);

    // One unknown id: an error naming it, and nothing removed.
    let out = repo.run(&["forget", &s1, "deadbeef"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("snapshot deadbeef not found"), "{out}");
    assert_eq!(snapshot_ids(&repo), both);

    let out = repo.run(&["forget", "--json", &s1]).success();
    let p = plan(&out.json());
    assert_eq!(p["named snapshots"].len(), 1);
    assert_eq!(snapshot_ids(&repo), set(&[&s2]));
}

#[test]
fn forget_json_with_gc_is_one_document() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    fill(&src, 5, &[("a", 200_000)]);
    let s1 = backup_at(&repo, &src, "2026-04-01T12:00:00Z", &[]);
    fill(&src, 6, &[("a", 200_000)]);
    let s2 = backup_at(&repo, &src, "2026-04-02T12:00:00Z", &[]);
    // A dry run has the same shape, without a gc plan.
    let out = repo
        .run(&["forget", "--keep-last", "1", "--gc", "--json", "--dry-run"])
        .success();
    let v = out.json();
    let p = plan(&v["forget"]);
    assert_eq!(kept(&p), set(&[&s2]), "{out}");
    assert!(v["gc"].is_null(), "{out}");
    assert_eq!(snapshot_ids(&repo), set(&[&s1, &s2]), "{out}");
    let out = repo
        .run(&["forget", "--keep-last", "1", "--gc", "--json"])
        .success();
    let v = out.json();
    let p = plan(&v["forget"]);
    assert_eq!(kept(&p), set(&[&s2]), "{out}");
    assert_eq!(listed(&p), set(&[&s1, &s2]), "{out}");
    assert!(v["gc"]["dead_blobs"].as_u64().unwrap() > 0, "{out}");
    assert!(!v["gc"]["delete"].as_array().unwrap().is_empty(), "{out}");
    assert_eq!(snapshot_ids(&repo), set(&[&s2]));
    assert_no_garbage(&repo);
}

#[test]
fn backup_time_must_be_rfc3339() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    fill(&src, 7, &[("a", 1_000)]);
    let out = repo.run(&["backup", "--time", "yesterday", src.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("RFC 3339"), "{out}");
    assert!(repo.snapshots().is_empty());
}

/// Snapshots named to `forget` are resolved among those the filters
/// pass: `forget latest --host a` removes host a's newest, never another
/// host's, and an id of a snapshot the filters leave out is refused.
#[test]
fn named_snapshots_honour_the_filters() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "content");
    let a = backup_at(&repo, &src, "2026-01-01T09:00:00Z", &["--host", "a"]);
    let b = backup_at(&repo, &src, "2026-01-01T10:00:00Z", &["--host", "b"]);
    let ids = |repo: &Repo| -> BTreeSet<String> {
        repo.snapshots()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let out = run_utc(&repo, &["forget", &b[..8], "--host", "a"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("does not match the filters"), "{out}");
    assert_eq!(ids(&repo), set(&[&a, &b]));
    run_utc(&repo, &["forget", "latest", "--host", "a"]).success();
    assert_eq!(ids(&repo), set(&[&b]));
}

/// `forget --gc --max-unused` gives its gc the threshold `gc
/// --max-unused` takes (it was refused as an unknown option); without
/// `--gc` it is a usage error.
#[test]
fn forget_gc_takes_max_unused() {
    let run_forget = |max: &str| {
        let repo = packed_repo();
        let src = repo.scratch("src");
        fill(&src, 61, &[("a.bin", 300_000), ("b.bin", 300_000)]);
        repo.backup(&[&src], &[]);
        fill(&src, 62, &[("b.bin", 300_000)]);
        repo.backup(&[&src], &[]);
        let out = repo.run(&[
            "forget",
            "--keep-last",
            "1",
            "--gc",
            "--json",
            "--max-unused",
            max,
        ]);
        assert_eq!(out.code, 0, "{out}");
        let v = out.json();
        v["gc"]["repack"].as_array().unwrap().len()
    };
    assert!(run_forget("0%") > 0, "a pack partly unused is repacked");
    assert_eq!(run_forget("100%"), 0, "no pack is repacked");
    let repo = packed_repo();
    let out = repo.run(&["forget", "--keep-last", "1", "--max-unused", "5%"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--gc"), "{out}");
}

/// Two groups never show alike, though their values hold the commas
/// and words the label joins them with: such a value is quoted, and the
/// JSON gives each group's set, host and paths apart. (Until December
/// 2026 the groups below printed as two pairs of identical labels.)
#[test]
fn groups_whose_values_hold_commas_show_apart() {
    let repo = Repo::new();
    let base = repo.scratch("b");
    let (p, q) = (base.join("p"), base.join("q"));
    // One folder whose path is the two paths joined by a comma.
    let joined = PathBuf::from(format!("{},{}", p.display(), q.display()));
    for (dir, seed) in [(&p, 1), (&q, 2), (&joined, 3)] {
        fill(dir, seed, &[("f", 1_000)]);
    }
    let at = |day: u32| format!("2025-01-0{day}T00:00:00Z");
    repo.backup(&[&p, &q], &["--set", "S", "--time", &at(1)]);
    repo.backup(&[&joined], &["--set", "S", "--time", &at(2)]);
    repo.backup(
        &[&p],
        &["--set", "a, host b", "--host", "c", "--time", &at(3)],
    );
    repo.backup(
        &[&p],
        &["--set", "a", "--host", "b, host c", "--time", &at(4)],
    );
    repo.backup(&[&p], &["--set", "a", "--host", "h\"1", "--time", &at(5)]);
    let out = run_utc(
        &repo,
        &["forget", "--keep-last", "1", "--dry-run", "--json"],
    );
    assert_eq!(out.code, 0, "{out}");
    let groups = out.json();
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 5, "{out}");
    let labels: BTreeSet<&str> = groups
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 5, "{out}");
    let fields: BTreeSet<String> = groups
        .iter()
        .map(|g| format!("{}|{}|{}", g["set"], g["host"], g["paths"]))
        .collect();
    assert_eq!(fields.len(), 5, "{out}");
    let text = run_utc(&repo, &["forget", "--keep-last", "1", "--dry-run"]);
    for label in [
        format!("set \"a, host b\", host c, paths {}", p.display()),
        format!("set a, host \"b, host c\", paths {}", p.display()),
        format!("paths {},{}", p.display(), q.display()),
        format!("paths \"{}\"", joined.display()),
        format!("set a, host \"h\"\"1\", paths {}", p.display()),
    ] {
        assert!(text.stdout.contains(&label), "{label}: {text}");
    }
}

/// A forget that cannot remove one of the snapshots it decided to (here
/// one its user may not unlink: another's file in a sticky folder) stops
/// there and says how far it got, naming those it removed; until
/// December 2026 it gave the bare error, which told neither.
#[test]
fn a_forget_stopped_partway_names_what_it_removed() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        panic!("this test runs a command as another user, which needs root");
    }
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "f");
    let ids: Vec<String> = (1..=4)
        .map(|day| {
            let time = format!("2026-01-0{day}T12:00:00Z");
            backup_at(&repo, &src, &time, &["--kind", "full"])
        })
        .collect();
    give_to(repo.dir.path(), NOBODY, true);
    let snapshots = repo.path.join("snapshots");
    std::os::unix::fs::chown(&snapshots, Some(0), Some(0)).unwrap();
    fs::set_permissions(&snapshots, fs::Permissions::from_mode(0o1777)).unwrap();
    // The oldest, removed last (newest first).
    let oldest = snapshots.join(&ids[0]);
    std::os::unix::fs::chown(&oldest, Some(0), Some(0)).unwrap();
    fs::set_permissions(&oldest, fs::Permissions::from_mode(0o644)).unwrap();

    let mut c = repo.cmd(&["forget", "--keep-last", "1", "--json"]);
    as_nobody(&mut c);
    let out = run(&mut c, None);
    assert_eq!(out.code, 1, "{out}");
    let said = format!(
        "forget stopped at snapshot {}, having removed 2 of the 3 snapshot(s) it was to \
         remove: {}, {}; the rest are in place",
        &ids[0][..8],
        &ids[2][..8],
        &ids[1][..8],
    );
    assert!(out.stderr.contains(&said), "{said}\n{out}");
    let left: BTreeSet<String> = repo
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, set(&[&ids[0], &ids[3]]), "{out}");
}

/// A group whose newest snapshot is dated after this host's clock (taken
/// while the clock was ahead) is warned of: the policy counts back from
/// it, and the snapshots taken since count as older.
#[test]
fn a_group_whose_newest_snapshot_is_dated_ahead_is_warned_of() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "f");
    let ahead = repo.backup_dated_ahead(&src);
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src);
    assert_eq!(run(&mut c, None).code, 3, "the backup says so too");
    let out = run_utc(&repo, &["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(out.code, 0, "{out}");
    let said = format!("snapshot {} of group", &ahead[..8]);
    assert!(
        out.stderr.contains(&said) && out.stderr.contains("after this host's clock"),
        "{said}\n{out}"
    );
    // Without it, nothing is said.
    fs::remove_file(repo.path.join("snapshots").join(&ahead)).unwrap();
    let out = run_utc(&repo, &["forget", "--keep-last", "1", "--dry-run"]);
    assert!(!out.stderr.contains("after this host's clock"), "{out}");
}
