//! gc's repacking threshold at its default (`--max-unused 10%`): a pack
//! just under it is kept as it is, one just over it is repacked; the
//! temporary files of interrupted writes, which gc removes; and gc's
//! refusal to delete anything while a snapshot is damaged or uses a blob
//! it cannot find.

mod common;
mod support_maint;

use std::collections::BTreeSet;
use std::fs;

use common::*;
use serde_json::Value;
use support_maint::*;

/// The pack ids in a field of gc's JSON report.
fn packs_in(plan: &Value, field: &str) -> BTreeSet<String> {
    plan[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {plan}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn default_max_unused_repacks_just_over_10_percent_and_keeps_just_under() {
    let repo = packed_repo();
    // Each backup stores its two files in one data pack (under 1 MiB).
    // The first file of each is a single chunk (below the 64K minimum)
    // that will become garbage: 9.5% of the first pack, 10.5% of the
    // second.
    let (one, two, keep) = (
        repo.scratch("one"),
        repo.scratch("two"),
        repo.scratch("keep"),
    );
    fill(&one, 80, &[("dead", 47_500), ("live", 452_500)]);
    fill(&two, 81, &[("dead", 52_500), ("live", 447_500)]);
    let s1 = backup_saved(&repo, &one, &[]);
    let s2 = backup_saved(&repo, &two, &[]);
    // A third snapshot keeps the `live` files (deduplicated: no new data).
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::copy(one.join("live"), keep.join("live1")).unwrap();
    std::fs::copy(two.join("live"), keep.join("live2")).unwrap();
    let s3 = backup_saved(&repo, &keep, &[]);

    let index = index_map(&repo);
    let chunks = |s: &Saved, file: &str| -> Vec<String> {
        file_chunks(&repo, &s.id)[&abs(&s.src.join(file))].clone()
    };
    let (dead1, dead2) = (chunks(&s1, "dead"), chunks(&s2, "dead"));
    assert_eq!((dead1.len(), dead2.len()), (1, 1), "one chunk each");
    let pack_of = |s: &Saved| -> String {
        let packs: BTreeSet<String> = ["dead", "live"]
            .iter()
            .flat_map(|f| chunks(s, f))
            .map(|c| index[&c].pack.clone())
            .collect();
        assert_eq!(packs.len(), 1, "both files in one pack: {packs:?}");
        packs.into_iter().next().unwrap()
    };
    let (p1, p2) = (pack_of(&s1), pack_of(&s2));
    assert_ne!(p1, p2);

    repo.run(&["forget", &s1.id, &s2.id]).success();

    // The dead share of each pack's blob area, from the index: what the
    // test means it to be.
    let dead_share = |dead: &[String], pack: &str| -> f64 {
        let area: u64 = index
            .values()
            .filter(|l| l.pack == pack)
            .map(|l| l.length)
            .sum();
        let dead: u64 = dead.iter().map(|c| index[c].length).sum();
        dead as f64 / area as f64
    };
    let (d1, d2) = (dead_share(&dead1, &p1), dead_share(&dead2, &p2));
    assert!((0.09..0.10).contains(&d1), "first pack {d1}");
    assert!((0.10..0.11).contains(&d2), "second pack {d2}");

    // The default threshold: the second pack is repacked, the first kept.
    let plan = repo.run(&["gc", "--dry-run", "--json"]).success().json();
    assert_eq!(
        packs_in(&plan, "repack"),
        [p2.clone()].into_iter().collect()
    );
    assert!(!packs_in(&plan, "delete").contains(&p1));
    // At 9% the first would be repacked too: it is the threshold that
    // keeps it.
    let plan9 = repo
        .run(&["gc", "--dry-run", "--json", "--max-unused", "9%"])
        .success()
        .json();
    assert_eq!(
        packs_in(&plan9, "repack"),
        [p1.clone(), p2.clone()].into_iter().collect()
    );

    let out = repo.run(&["gc", "--json"]).success();
    let done = out.json();
    assert_eq!(done["dry_run"], false, "{out}");
    assert_eq!(
        packs_in(&done, "repack"),
        [p2.clone()].into_iter().collect()
    );
    let packs = pack_files(&repo);
    assert!(packs.contains_key(&p1), "the first pack was kept");
    assert!(!packs.contains_key(&p2), "the second pack was repacked");
    let index = index_map(&repo);
    // The new index names live blobs only: those of the kept pack where
    // they were, those of the repacked one in a new pack.
    assert!(!index.contains_key(&dead1[0]) && !index.contains_key(&dead2[0]));
    let live_packs = |file: &str| -> BTreeSet<String> {
        file_chunks(&repo, &s3.id)[&abs(&s3.src.join(file))]
            .iter()
            .map(|c| index[c].pack.clone())
            .collect()
    };
    assert_eq!(live_packs("live1"), [p1.clone()].into_iter().collect());
    assert!(!live_packs("live2").contains(&p2));
    assert_verify_ok(&repo);
    assert_restores(&repo, &s3);
    assert_eq!(snapshot_ids(&repo), [s3.id.clone()].into_iter().collect());
}

/// Temporary files a killed write left behind (streamed packs in `packs/`,
/// whole files beside their destination, locks and key files included)
/// are removed by gc once an hour old; younger ones may belong to a write in progress and stay, and a dry
/// run removes nothing.
#[test]
fn gc_removes_temporary_files_left_by_interrupted_writes() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 7, &[("a", 300_000)]);
    let snap = backup_saved(&repo, &src, &[]);
    let packs = repo.path.join("packs");
    let sub = fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("a pack folder");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let old = [
        packs.join(".tmp-0123456789abcdef"),
        sub.join(".tmp-fedcba9876543210"),
        repo.path.join("index").join(".tmp-00000000aaaaaaaa"),
        repo.path.join("locks").join(".tmp-00000000bbbbbbbb"),
        repo.path.join("keys").join(".tmp-00000000cccccccc"),
        // A config write's (init, upgrade).
        repo.path.join(".tmp-00000000dddddddd"),
    ];
    for p in &old {
        write(p, vec![7u8; 4096]);
        set_mtime(p, now - 2 * 3600, 0);
    }
    let fresh = packs.join(".tmp-1111111111111111");
    write(&fresh, "being written");
    let fresh_lock = repo.path.join("locks").join(".tmp-2222222222222222");
    write(&fresh_lock, "being taken");

    let out = repo.run(&["gc", "--dry-run"]).success();
    assert!(
        out.stdout
            .contains("would have: removed 6 temporary files left by interrupted writes"),
        "{out}"
    );
    assert!(old.iter().all(|p| p.exists()), "a dry run removes nothing");

    let out = repo.run(&["gc"]).success();
    assert!(
        out.stdout
            .contains("removed 6 temporary files left by interrupted writes"),
        "{out}"
    );
    assert!(old.iter().all(|p| !p.exists()), "{out}");
    assert!(
        fresh.exists() && fresh_lock.exists(),
        "a young temporary file may be a write in progress"
    );
    assert_verify_ok(&repo);
    assert_restores(&repo, &snap);
}

/// Every file of a repository folder tree with its bytes.
fn contents(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    list_paths(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// A repository with two snapshots of different data, with garbage for
/// gc to collect (a third, forgotten snapshot's own data).
fn two_snapshots_and_garbage(repo: &Repo) -> (Saved, Saved) {
    let (a, b, gone) = (repo.scratch("a"), repo.scratch("b"), repo.scratch("gone"));
    fill(&a, 31, &[("x", 300_000), ("y", 5_000)]);
    fill(&b, 32, &[("z", 400_000)]);
    fill(&gone, 33, &[("w", 600_000)]);
    let sa = backup_saved(repo, &a, &[]);
    let sg = backup_saved(repo, &gone, &[]);
    let sb = backup_saved(repo, &b, &[]);
    repo.run(&["forget", &sg.id]).success();
    (sa, sb)
}

/// gc marks through every snapshot before it deletes anything: when a
/// pack holding a live chunk has gone missing, it names the problem and
/// leaves the repository exactly as it was (the forgotten snapshot's pack
/// included), so nothing more is lost.
#[test]
fn gc_refuses_when_a_live_chunk_cannot_be_found_and_changes_nothing() {
    let repo = packed_repo();
    let (_, sb) = two_snapshots_and_garbage(&repo);
    let chunk = file_chunks(&repo, &sb.id)[&abs(&sb.src.join("z"))][0].clone();
    let index = index_map(&repo);
    let pack = index[&chunk].pack.clone();
    fs::remove_file(&pack_files(&repo)[&pack]).unwrap();
    let before = contents(&repo.path.join("packs"));
    let index_before = contents(&repo.path.join("index"));

    let out = repo.run(&["gc"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains("blobs used by snapshots are not in the index or their pack is missing"),
        "{out}"
    );
    // It says what mends it, after a `repair index` too.
    for step in [
        "`cairn repair index`",
        "`cairn repair snapshots`",
        "`cairn forget`",
    ] {
        assert!(out.stderr.contains(step), "{step}: {out}");
    }
    // The blob it names is one the missing pack held.
    let first = out.stderr.split("(first: ").nth(1).expect("names a blob");
    let first = &first[..64];
    assert_eq!(index[first].pack, pack, "{out}");
    assert_eq!(
        contents(&repo.path.join("packs")),
        before,
        "no pack touched"
    );
    assert_eq!(
        contents(&repo.path.join("index")),
        index_before,
        "no index table touched"
    );
}

/// A tree that fails authentication stops gc before it deletes anything:
/// the blobs only that tree reaches cannot be marked.
#[test]
fn gc_refuses_while_a_tree_is_damaged_and_changes_nothing() {
    let repo = packed_repo();
    let (sa, _) = two_snapshots_and_garbage(&repo);
    let root = sa.record["tree"].as_str().expect("tree id").to_string();
    let loc = index_map(&repo)[&root].clone();
    let path = pack_files(&repo)[&loc.pack].clone();
    let mut bytes = fs::read(&path).unwrap();
    bytes[(loc.offset + loc.length / 2) as usize] ^= 0x55;
    write(&path, &bytes);
    let before = contents(&repo.path.join("packs"));

    let out = repo.run(&["gc"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains("refusing to collect garbage while snapshots are damaged"),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!("tree {}", &root[..8]))
            && out.stderr.contains(&format!(
                "the root tree of snapshot(s) {} cannot be read; `cairn verify` names every \
                 snapshot that uses a damaged tree, `cairn repair snapshots` writes a copy of \
                 each without what is lost, and `cairn forget` of the damaged originals then \
                 lets gc run",
                &sa.id[..8]
            )),
        "{out}"
    );
    assert_eq!(
        contents(&repo.path.join("packs")),
        before,
        "no pack touched"
    );
    // A plain verify finds the tree damaged, and says what to do; so
    // does one that reads a subset of the packs, which may leave the
    // tree's pack unread.
    for args in [&["verify"][..], &["verify", "--read-data-subset", "1/7"]] {
        let out = repo.run(args);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stdout.contains(
                "what now: `cairn verify --read-data` reads every pack and says what mends the \
                 damage"
            ),
            "{args:?}: {out}"
        );
    }
    // After the repair of the snapshots, the original still stops gc,
    // which names it beside its copy.
    let out = repo.run(&["repair", "snapshots"]).success();
    let copy = out
        .stdout
        .split(&format!("snapshot {} repaired as ", &sa.id[..8]))
        .nth(1)
        .and_then(|rest| rest.get(..8))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let out = repo.run(&["gc"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "of the snapshots `cairn repair snapshots` wrote copies of, these originals are \
             kept: {} (its copy: {copy}) (`cairn forget` them once their copies will do)",
            &sa.id[..8]
        )),
        "{out}"
    );
    repo.run(&["forget", &sa.id]).success();
    repo.run(&["gc"]).success();
}

/// The index table holding blob `id`, from `cairn cat index`.
fn table_of(repo: &Repo, id: &str) -> Option<String> {
    let out = repo.run(&["cat", "index"]).success();
    out.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["id"] == id)
        })
        .map(|t| t["id"].as_str().unwrap().to_string())
}

/// A table whose dead entries are few (at most `--max-unused` of it) and
/// all in packs that stay is left as it is: forgetting one file of
/// twenty does not rewrite the table of the other nineteen. The dead
/// blob stays indexed where it is, a later backup uses it again, and
/// verify and restore are clean. Above the threshold the table is
/// rewritten.
#[test]
fn a_table_with_few_dead_entries_in_packs_that_stay_is_left_alone() {
    let repo = packed_repo();
    let (all, most) = (repo.scratch("all"), repo.scratch("most"));
    // Twenty files of one chunk each (below the 64K minimum), in one pack.
    let files: Vec<(String, usize)> = (0..20).map(|i| (format!("f{i:02}"), 40_000)).collect();
    let files: Vec<(&str, usize)> = files.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    fill(&all, 90, &files);
    let s1 = backup_saved(&repo, &all, &[]);
    // A second snapshot keeps nineteen of them (deduplicated).
    fs::create_dir_all(&most).unwrap();
    for (name, _) in &files[1..] {
        fs::copy(all.join(name), most.join(name)).unwrap();
    }
    let s2 = backup_saved(&repo, &most, &[]);
    assert_eq!(s2.record["summary"]["files_new"], 19);
    let dead = file_chunks(&repo, &s1.id)[&abs(&all.join("f00"))].clone();
    assert_eq!(dead.len(), 1);
    let table = table_of(&repo, &dead[0]).expect("the chunk is indexed");
    repo.run(&["forget", &s1.id]).success();

    // At 0% the table would be rewritten for its one dead entry of twenty.
    let strict = repo
        .run(&["gc", "--dry-run", "--json", "--max-unused", "0%"])
        .success()
        .json();
    assert!(
        strict["rewrite_index"]
            .as_array()
            .unwrap()
            .contains(&Value::from(table.clone())),
        "{strict}"
    );
    let out = repo.run(&["gc", "--json"]).success();
    let done = out.json();
    // The chunk and the first snapshot's trees.
    assert!(done["dead_blobs"].as_u64().unwrap() >= 2, "{out}");
    assert!(
        !done["rewrite_index"]
            .as_array()
            .unwrap()
            .contains(&Value::from(table.clone())),
        "{out}"
    );
    assert!(names_in(&repo, "index").contains(&table), "the table stays");
    assert_eq!(table_of(&repo, &dead[0]), Some(table.clone()));
    assert_verify_ok(&repo);
    assert_restores(&repo, &s2);

    // The file comes back: its chunk is used again, not stored again.
    fs::copy(all.join("f00"), most.join("f00")).unwrap();
    let s3 = backup_saved(&repo, &most, &[]);
    let data_added =
        s3.record["summary"]["blobs_added"].as_u64().unwrap() - (most.components().count() as u64);
    assert_eq!(data_added, 0, "{}", s3.record);
    assert_restores(&repo, &s3);
    // Nothing is dead now: gc has nothing to do.
    let again = repo.run(&["gc", "--dry-run", "--json"]).success().json();
    assert!(
        again["rewrite_index"].as_array().unwrap().is_empty(),
        "{again}"
    );
}

/// A table naming a pack that is missing is rewritten whatever the
/// threshold, so that no later backup deduplicates against the blobs
/// that pack held: backed up again, they are stored anew.
#[test]
fn a_table_naming_a_missing_pack_is_rewritten() {
    let repo = packed_repo();
    let (a, b) = (repo.scratch("a"), repo.scratch("b"));
    fill(&a, 91, &[("one", 40_000)]);
    fill(&b, 92, &[("two", 40_000), ("three", 30_000)]);
    let _sa = backup_saved(&repo, &a, &[]);
    let sb = backup_saved(&repo, &b, &[]);
    let chunks: Vec<String> = file_chunks(&repo, &sb.id).into_values().flatten().collect();
    let index = index_map(&repo);
    let lost: BTreeSet<String> = chunks.iter().map(|c| index[c].pack.clone()).collect();
    assert_eq!(lost.len(), 1, "b's data in one pack");
    let lost = lost.into_iter().next().unwrap();
    let table = table_of(&repo, &chunks[0]).unwrap();
    repo.run(&["forget", &sb.id]).success();
    fs::remove_file(&pack_files(&repo)[&lost]).unwrap();

    // No threshold is passed at 100%: only the missing pack makes gc
    // rewrite the table.
    let out = repo
        .run(&["gc", "--json", "--max-unused", "100%"])
        .success();
    let done = out.json();
    assert!(
        done["rewrite_index"]
            .as_array()
            .unwrap()
            .contains(&Value::from(table)),
        "{out}"
    );
    let index = index_map(&repo);
    assert!(chunks.iter().all(|c| !index.contains_key(c)), "{out}");

    let again = backup_saved(&repo, &b, &[]);
    assert_eq!(again.record["summary"]["files_new"], 2, "{}", again.record);
    let added = again.record["summary"]["blobs_added"].as_u64().unwrap();
    assert!(added > chunks.len() as u64, "{}", again.record);
    assert_verify_ok(&repo);
    assert_restores(&repo, &again);
}

/// A repository that lost its `snapshots/` folder (a copy or a sync that
/// left it out) is damage: gc, its dry run and `forget --gc` refuse
/// rather than take every pack for unused, backup and `repair snapshots`
/// refuse rather than make the folder again (after which nothing would
/// tell it was lost), `snapshots`, `ls`, restore and forget refuse
/// rather than list nothing, exit 0, and verify names the folder.
/// With the folder back but empty, verify warns that gc would delete
/// every pack. Before, the dry run planned to delete everything, and the
/// real run failed only by chance, at an fsync of the missing folder.
#[test]
fn gc_refuses_a_repository_without_its_snapshots_folder() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 91, &[("a", 300_000), ("b", 200_000)]);
    let saved = backup_saved(&repo, &src, &[]);
    let packs = pack_files(&repo);
    let snapshots = repo.path.join("snapshots");
    let aside = repo.scratch("snapshots-aside");
    fs::rename(&snapshots, &aside).unwrap();
    // A backup or a repair would make the folder again, empty but for
    // its snapshot, and the next gc delete every pack of the lost ones.
    for args in [
        &["gc", "--dry-run"][..],
        &["gc"],
        &["forget", "--keep-last", "1", "--gc"],
        &["backup", src.to_str().unwrap()],
        &["repair", "snapshots"],
        &["snapshots"],
        &["snapshots", "--json"],
        &["ls", "latest"],
        &[
            "restore",
            "latest",
            "--target",
            repo.scratch("target").to_str().unwrap(),
        ],
        &["forget", "--keep-last", "1"],
        &["forget", "--keep-last", "1", "--dry-run"],
    ] {
        let out = repo.run(args);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(
            out.stderr.contains("folder snapshots/ is missing")
                && out.stderr.contains("put it back from a copy")
                && !out.stderr.contains("repair index"),
            "{args:?}: {out}"
        );
        assert_eq!(pack_files(&repo), packs, "{args:?}: {out}");
        assert!(!snapshots.exists(), "{args:?}: {out}");
    }
    let out = repo.run(&["verify", "--json"]);
    assert_eq!(out.code, 1, "{out}");
    let errors = out.json()["errors"].clone();
    assert!(
        errors
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["object"] == "snapshots/"),
        "{out}"
    );
    // Only the missing folder is said, not also that gc would delete
    // every pack for want of snapshots: it refuses meanwhile.
    assert!(
        !out.json()["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["object"] == "snapshots/"),
        "{out}"
    );

    fs::create_dir(&snapshots).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("no snapshot, while")
            && out.stdout.contains("gc refuses to delete them all"),
        "{out}"
    );
    // So does gc's dry run, as an emptied `snapshots/` prefix of a bucket
    // looks just so.
    let out = repo.run(&["gc", "--dry-run"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "warning: the repository holds no snapshot: gc would delete every pack ({})",
            packs.len()
        )),
        "{out}"
    );
    fs::remove_dir(&snapshots).unwrap();
    fs::rename(&aside, &snapshots).unwrap();
    repo.run(&["gc"]).success();
    assert_eq!(pack_files(&repo), packs);
    assert_restores(&repo, &saved);
}

/// A repository whose every snapshot file is gone (a sync or a bucket's
/// lifecycle rule that dropped them) looks like one emptied on purpose:
/// gc, and a nightly `forget --gc` that removed nothing, refuse to delete
/// every pack, exit 1, naming `--delete-all`, and delete nothing; with
/// the snapshots put back every one restores. `gc --delete-all`, and a
/// `forget --gc` that removed the last snapshots itself, empty it. gc
/// deleted them all, with a warning, exit 0.
#[test]
fn gc_refuses_to_delete_every_pack_where_no_snapshot_is_left_unless_asked() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 94, &[("a", 300_000), ("b", 200_000)]);
    let saved = backup_saved(&repo, &src, &[]);
    let packs = pack_files(&repo);
    let snapshots = repo.path.join("snapshots");
    let aside = repo.scratch("snapshots-aside");
    fs::rename(&snapshots, &aside).unwrap();
    fs::create_dir(&snapshots).unwrap();
    for args in [&["gc"][..], &["forget", "--keep-last", "1", "--gc"]] {
        let out = repo.run(args);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(
            out.stderr.contains(&format!(
                "the repository holds no snapshot: gc would delete every pack ({}) as unused, \
                 and refuses",
                packs.len()
            )) && out.stderr.contains("run `cairn gc --delete-all`"),
            "{args:?}: {out}"
        );
        assert_eq!(pack_files(&repo), packs, "{args:?}");
    }
    let out = repo.run(&["gc", "--dry-run"]).success();
    assert!(out.stderr.contains("(only with --delete-all)"), "{out}");
    let out = repo.run(&["gc", "--dry-run", "--json"]).success();
    assert_eq!(out.json()["needs_delete_all"], true, "{out}");
    assert!(
        out.json()["warnings"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("the repository holds no snapshot: gc would delete")),
        "{out}"
    );
    fs::remove_dir(&snapshots).unwrap();
    fs::rename(&aside, &snapshots).unwrap();
    assert_restores(&repo, &saved);

    // Forgotten by this run: emptied.
    let out = repo.run(&["forget", &saved.id, "--gc"]).success();
    assert!(
        out.stderr.contains(&format!(
            "this forget removed the last snapshots: gc deletes every pack ({}) as unused",
            packs.len()
        )),
        "{out}"
    );
    // Not the warning about snapshots lost, which came after the deletion.
    assert!(!out.stderr.contains("put them back"), "{out}");
    assert!(pack_files(&repo).is_empty(), "{out}");
    // And by gc --delete-all, after a first backup killed (its packs, no
    // snapshot): here, one whose snapshot was removed by hand.
    let again = backup_saved(&repo, &src, &[]);
    fs::remove_file(snapshots.join(&again.id)).unwrap();
    assert_eq!(repo.run(&["gc"]).code, 1);
    assert!(!pack_files(&repo).is_empty());
    let out = repo.run(&["gc", "--delete-all"]).success();
    assert!(
        out.stderr
            .contains("the repository holds no snapshot: gc deletes every pack")
            && out
                .stderr
                .contains("put them back from a copy before any gc"),
        "{out}"
    );
    assert!(pack_files(&repo).is_empty());
}

/// One answer of a store's listing of `snapshots/` changed on its way
/// (a faulty proxy on plain HTTP; a listing has no checksum): a name
/// altered is found not there and the folder listed again, and the
/// snapshot the second listing names is read too; a name left out is
/// found by gc's second listing before it deletes anything, and gc
/// refuses. Either way nothing is deleted and every snapshot restores;
/// gc deleted the data of the snapshot the bad listing hid, exit 0.
#[test]
fn a_listing_of_snapshots_changed_on_its_way_costs_gc_no_data() {
    let repo = packed_repo();
    let (a, b) = (repo.scratch("a"), repo.scratch("b"));
    fill(&a, 95, &[("a", 300_000)]);
    fill(&b, 96, &[("b", 300_000)]);
    let saved = [backup_saved(&repo, &a, &[]), backup_saved(&repo, &b, &[])];
    let packs = pack_files(&repo);
    let faulty = |how: &str, args: &[&str]| {
        let mut c = repo.cmd(args);
        c.env("CAIRN_TEST_LIST_FAULT", format!("snapshots:{how}"));
        run(&mut c, None)
    };
    let out = faulty("alter", &["snapshots", "--json"]).success();
    assert_eq!(out.json().as_array().unwrap().len(), 2, "{out}");
    let out = faulty("alter", &["gc"]).success();
    assert_eq!(pack_files(&repo), packs, "{out}");

    let out = faulty("drop", &["gc"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "refusing to collect garbage: two listings of snapshots/ differ (1 names planned, 2 \
             listed now; listed now, not planned: "
        ) && out.stderr.contains("nothing was deleted"),
        "{out}"
    );
    assert_eq!(pack_files(&repo), packs, "{out}");
    for s in &saved {
        assert_restores(&repo, s);
    }
}

/// A snapshot file renamed (a sync tool's conflict copy, a name changed
/// in case) is no snapshot to any command, and the data only it uses
/// would look unused: gc refuses while `snapshots/` holds a file whose
/// name is no snapshot id, naming it, and deletes nothing; renamed back,
/// the snapshot restores. gc deleted its data, exit 0.
#[test]
fn gc_refuses_while_snapshots_holds_files_that_are_no_snapshot() {
    let repo = packed_repo();
    let (a, b) = (repo.scratch("a"), repo.scratch("b"));
    fill(&a, 97, &[("a", 300_000)]);
    fill(&b, 98, &[("b", 300_000)]);
    let kept = backup_saved(&repo, &a, &[]);
    let renamed = backup_saved(&repo, &b, &[]);
    let packs = pack_files(&repo);
    let snapshots = repo.path.join("snapshots");
    // Renamed by a sync tool, to a name that is not UTF-8 (a Latin-1
    // suffix), and moved into a folder.
    let conflict = format!("{}.sync-conflict-20261207", renamed.id);
    let latin1 = {
        use std::os::unix::ffi::OsStringExt;
        std::ffi::OsString::from_vec([renamed.id.as_bytes(), b".conflit-\xe9"].concat())
    };
    // Also hidden: into a folder whose name starts with `.`, or renamed
    // to one (only cairn's own `.tmp-` files pass).
    let old = std::path::Path::new("old").join(&renamed.id);
    let hidden_old = std::path::Path::new(".old").join(&renamed.id);
    let hidden = format!(".{}", renamed.id);
    for (name, shown) in [
        (std::ffi::OsString::from(&conflict), conflict.clone()),
        (latin1, format!("{}.conflit-\\xe9", renamed.id)),
        (old.clone().into_os_string(), "old".to_string()),
        (hidden_old.clone().into_os_string(), ".old".to_string()),
        (std::ffi::OsString::from(&hidden), hidden.clone()),
    ] {
        let folder = std::path::Path::new(&name)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| snapshots.join(p));
        if let Some(f) = &folder {
            fs::create_dir(f).unwrap();
        }
        fs::rename(snapshots.join(&renamed.id), snapshots.join(&name)).unwrap();
        for args in [&["gc"][..], &["forget", "--keep-last", "5", "--gc"]] {
            let out = repo.run(args);
            assert_eq!(out.code, 1, "{args:?}: {out}");
            assert!(
                out.stderr.contains(&format!(
                    "refusing to collect garbage: snapshots/ holds 1 entry that is no \
                     snapshot file (the first: {shown})"
                )),
                "{args:?}: {out}"
            );
            assert_eq!(pack_files(&repo), packs, "{args:?}");
        }
        let out = repo.run(&["verify"]);
        assert!(
            out.stdout.contains("1 entry that is no snapshot file")
                && out.stdout.contains("gc refuses to run while it is there"),
            "{out}"
        );
        fs::rename(snapshots.join(&name), snapshots.join(&renamed.id)).unwrap();
        if let Some(f) = &folder {
            fs::remove_dir(f).unwrap();
        }
    }
    repo.run(&["gc"]).success();
    for s in [&kept, &renamed] {
        assert_restores(&repo, s);
    }
}

/// A repository that lost its `index/` folder refuses readers as it does
/// without `snapshots/`, but says what mends it where no copy is left:
/// `repair index` rebuilds the index from the packs, after which every
/// snapshot restores.
#[test]
fn a_repository_without_its_index_folder_is_told_that_repair_index_rebuilds_it() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 93, &[("a", 300_000), ("b", 200_000)]);
    let saved = backup_saved(&repo, &src, &[]);
    fs::rename(repo.path.join("index"), repo.scratch("index-aside")).unwrap();
    let target = repo.scratch("target");
    for args in [
        &["snapshots"][..],
        &["restore", "latest", "--target", target.to_str().unwrap()],
        &["gc"],
    ] {
        let out = repo.run(args);
        assert_eq!(out.code, 1, "{args:?}: {out}");
        assert!(
            out.stderr.contains("folder index/ is missing")
                && out
                    .stderr
                    .contains("with no copy of index/, `cairn repair index` rebuilds it"),
            "{args:?}: {out}"
        );
    }
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout
            .contains("`cairn repair index` rebuilds it from the packs"),
        "{out}"
    );
    repo.run(&["repair", "index"]).success();
    assert_restores(&repo, &saved);
}

/// A pack file moved into another fan-out folder than its name's is
/// passed over by every command: verify names it, beside the pack it
/// reports missing, and says where it belongs; `repair index` moves it
/// back (until December 2026 it dropped the pack's entries), and all is
/// well. A pack whose place holds a file of its name already is left,
/// and said.
#[test]
fn verify_says_where_a_misplaced_pack_belongs() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 93, &[("a", 300_000)]);
    let saved = backup_saved(&repo, &src, &[]);
    let (id, path) = pack_files(&repo).into_iter().next().unwrap();
    let home = format!("packs/{}/", &id[..2]);
    let wrong = if &id[..2] == "zz" { "yy" } else { "zz" };
    let elsewhere = repo.path.join("packs").join(wrong);
    fs::create_dir_all(&elsewhere).unwrap();
    fs::rename(&path, elsewhere.join(&id)).unwrap();
    let out = repo.run(&["verify"]);
    assert_eq!(out.code, 1, "the pack is missing where it belongs: {out}");
    assert!(
        out.stdout.contains(&format!(
            "packs/{wrong}/{id}: a pack file in another folder than its name's, passed \
             over by every command: move it to {home} (`cairn repair index` does)"
        )),
        "{out}"
    );
    let out = repo.run(&["repair", "index"]).success();
    assert!(
        out.stdout
            .contains(&format!("moved packs/{wrong}/{id} to {home}")),
        "{out}"
    );
    assert!(path.exists() && !elsewhere.join(&id).exists(), "{out}");
    assert_verify_ok(&repo);
    assert_restores(&repo, &saved);

    // A second copy elsewhere, the pack home: left, and said.
    fs::copy(&path, elsewhere.join(&id)).unwrap();
    let out = repo.run(&["repair", "index"]).success();
    assert!(
        out.stderr
            .contains(&format!("packs/{wrong}/{id}: a pack in another folder")),
        "{out}"
    );
    assert!(path.exists() && elsewhere.join(&id).exists(), "{out}");
    assert_restores(&repo, &saved);
    // The copy home damaged, the one elsewhere intact: `--read-data`,
    // which reads packs whole, swaps them before it reads them.
    let intact = fs::read(&path).unwrap();
    let mut damaged = intact.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x55;
    fs::write(&path, &damaged).unwrap();
    let out = repo.run(&["repair", "index", "--read-data"]).success();
    assert!(
        out.stderr.contains(&format!(
            "packs/{wrong}/{id}: an intact copy of the pack of its name, whose file in {home} is \
             damaged (not its name's hash): the two were swapped"
        )),
        "{out}"
    );
    assert!(!out.stdout.contains("damaged, dropped"), "{out}");
    assert_eq!(fs::read(&path).unwrap(), intact);
    assert_eq!(fs::read(elsewhere.join(&id)).unwrap(), damaged);
    assert_restores(&repo, &saved);
    fs::remove_file(elsewhere.join(&id)).unwrap();
    assert_verify_ok(&repo);

    // Directly in `packs/` (a copy that flattened the fan-out folders),
    // its home folder gone too (made again, its owner's only), and one
    // folder deeper than its own: likewise.
    let home_dir = path.parent().unwrap().to_path_buf();
    let home_folder = home_dir.file_name().unwrap().to_str().unwrap().to_string();
    let deeper = home_dir.join("sub");
    for (place, shown) in [
        (repo.path.join("packs").join(&id), format!("packs/{id}")),
        (deeper.join(&id), format!("packs/{home_folder}/sub/{id}")),
    ] {
        fs::create_dir_all(place.parent().unwrap()).unwrap();
        fs::rename(&path, &place).unwrap();
        let alone = fs::read_dir(&home_dir).unwrap().next().is_none();
        if alone {
            fs::remove_dir(&home_dir).unwrap();
        }
        let out = repo.run(&["verify"]);
        assert_eq!(out.code, 1, "{out}");
        assert!(
            out.stdout.contains(&format!(
                "{shown}: a pack file in another folder than its name's"
            )),
            "{out}"
        );
        let out = repo.run(&["repair", "index"]).success();
        assert!(
            out.stdout.contains(&format!("moved {shown} to {home}")),
            "{out}"
        );
        assert!(path.exists() && !place.exists(), "{out}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(&home_dir).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700, "alone: {alone}: {out}");
        assert_verify_ok(&repo);
        assert_restores(&repo, &saved);
    }

    // A folder a symlink leads to is not the repository's: a file there
    // named as a pack (another repository's) stays where it is.
    let other = repo.scratch("other-packs");
    let foreign = format!("{}{}", &id[..2], "0".repeat(62));
    write(&other.join(&foreign), "another repository's pack");
    std::os::unix::fs::symlink(&other, path.parent().unwrap().join("archive")).unwrap();
    let out = repo.run(&["repair", "index"]).success();
    assert!(other.join(&foreign).exists(), "{out}");
    assert!(!out.stdout.contains("moved"), "{out}");
    assert_restores(&repo, &saved);
}

/// Nightly backups of a little new data each leave a small data pack and
/// a small tree pack. Once 16 small packs of one kind would stay, gc
/// merges them into full-sized packs, copying their blobs still sealed;
/// fewer are left alone, and the merged packs are not merged again.
#[test]
fn gc_merges_small_packs_once_sixteen_of_a_kind_stay() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    let mut saved = Vec::new();
    let mut night = |n: u64| {
        fill(&src.join(format!("night{n}")), 200 + n, &[("new", 20_000)]);
        saved.push(backup_saved(&repo, &src, &[]));
    };
    for n in 0..15 {
        night(n);
    }
    // 15 of each kind: below the count, nothing is merged.
    let plan = repo.run(&["gc", "--dry-run", "--json"]).success().json();
    assert_eq!(packs_in(&plan, "repack"), BTreeSet::new(), "{plan}");
    assert_eq!(plan["small_merged"], 0, "{plan}");
    night(15);
    night(16);
    let before = pack_files(&repo);
    assert_eq!(before.len(), 34, "a data pack and a tree pack a night");

    // Without room to copy them (no reserve, 100 KB free), they stay,
    // without a word: no repacking the space needs was left out.
    fs::remove_file(repo.path.join("reserve")).unwrap();
    let size = (repo.size() + 100_000).to_string();
    let mut tight = repo.cmd(&["gc", "--json"]);
    tight.env("CAIRN_TEST_FS_SIZE", &size);
    let tight = run(&mut tight, None);
    assert_eq!(tight.code, 0, "{tight}");
    let tight = tight.json();
    assert_eq!(packs_in(&tight, "repack"), BTreeSet::new(), "{tight}");
    assert_eq!(tight["small_merged"], 0, "{tight}");
    assert!(tight.get("repack_skipped").is_none(), "{tight}");
    let mut tight = repo.cmd(&["gc"]);
    tight.env("CAIRN_TEST_FS_SIZE", &size);
    let tight = run(&mut tight, None);
    assert_eq!(tight.code, 0, "{tight}");
    assert!(!tight.to_string().contains("left for later"), "{tight}");
    assert_eq!(pack_files(&repo), before);

    let out = repo.run(&["gc"]).success();
    assert!(
        out.stdout.contains("0 packs deleted, 34 repacked (")
            && out
                .stdout
                .contains(", 34 of them small packs merged), 0 kept"),
        "{out}"
    );
    let after = pack_files(&repo);
    assert_eq!(after.len(), 2, "one pack of data, one of trees: {after:?}");
    assert!(after.keys().all(|p| !before.contains_key(p)));
    assert_verify_ok(&repo);
    let (code, report, out) = verify_json(&repo, true);
    assert_eq!(code, 0, "{out}\n{report}");
    for s in &saved {
        assert_restores(&repo, s);
    }

    let again = repo.run(&["gc", "--dry-run", "--json"]).success().json();
    assert_eq!(packs_in(&again, "repack"), BTreeSet::new(), "{again}");
    assert_eq!(packs_in(&again, "delete"), BTreeSet::new(), "{again}");
}

/// A pack whose trailer is damaged (its blobs intact) is repacked, which
/// mends it, and gc says so; it repacked it without a word.
#[test]
fn a_pack_whose_trailer_is_damaged_is_repacked_and_said() {
    let repo = packed_repo();
    let src = repo.scratch("src");
    fill(&src, 90, &[("a", 5_000), ("b", 7_000)]);
    let saved = backup_saved(&repo, &src, &[]);
    let index = index_map(&repo);
    let tree_pack = index
        .values()
        .map(|l| l.pack.clone())
        .find(|p| {
            file_chunks(&repo, &saved.id)
                .values()
                .flatten()
                .all(|c| index[c].pack != *p)
        })
        .expect("a pack of trees apart from the data's");
    let path = &pack_files(&repo)[&tree_pack];
    let mut bytes = fs::read(path).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 16..] {
        *b = 0;
    }
    fs::write(path, &bytes).unwrap();

    let out = repo.run(&["gc", "--json"]).success();
    let done = out.json();
    assert!(packs_in(&done, "repack").contains(&tree_pack), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "pack {} is damaged (pack {} is corrupt: ",
            &tree_pack[..8],
            &tree_pack[..8]
        )) && out
            .stderr
            .contains("gc repacks it, its live blobs copied, each authenticated"),
        "{out}"
    );
    assert!(!pack_files(&repo).contains_key(&tree_pack));
    assert_verify_ok(&repo);
    assert_restores(&repo, &saved);
}
