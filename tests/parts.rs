//! Directories of many entries, stored in parts (repository format 4):
//! every reader takes the parts in order, a change stores again only the
//! parts it touches, and gc, verify and repair treat parts as trees.
//! `CAIRN_TEST_TREE_PART` makes parts of a few entries, so a directory of
//! a hundred has a dozen.

mod common;
mod support_maint;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;
use support_maint::*;

/// Entries a part holds on average in these tests (a quarter more).
const PART: &str = "8";

fn backup_in_parts(repo: &Repo, src: &Path) -> Value {
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(src).env("CAIRN_TEST_TREE_PART", PART);
    run(&mut c, None).success().json()
}

/// `cairn ls --json` of `path` in `snapshot`: one record per line.
fn ls(repo: &Repo, snapshot: &str, path: &Path) -> Vec<Value> {
    let out = repo
        .run(&["ls", "--json", snapshot, path.to_str().unwrap()])
        .success();
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The names of the entries directly in `dir` in `snapshot`, in the
/// order `cairn ls` lists them.
fn names_in_dir(repo: &Repo, snapshot: &str, dir: &Path) -> Vec<String> {
    let depth = dir.components().count();
    ls(repo, snapshot, dir)
        .iter()
        .filter(|n| n["path"].as_str().unwrap().matches('/').count() == depth)
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

/// The tree blob of directory `dir` in `snapshot`, as `cairn cat tree`
/// prints it.
fn tree_of(repo: &Repo, snapshot: &str, dir: &Path) -> Value {
    let parent = ls(repo, snapshot, dir.parent().unwrap());
    let name = dir.file_name().unwrap().to_str().unwrap();
    let node = parent.iter().find(|n| n["name"] == name).unwrap();
    let id = node["kind"]["dir"]["subtree"].as_str().unwrap();
    repo.run(&["cat", "tree", id]).success().json()
}

/// A folder `big` of 100 files, three subfolders and two symlinks.
fn big_folder(src: &Path) -> std::path::PathBuf {
    let big = src.join("big");
    for i in 0..100 {
        write(
            &big.join(format!("f{i:03}")),
            format!("file {i}\n").repeat(i + 1),
        );
    }
    for d in ["d1", "m5", "z9"] {
        write(&big.join(d).join("inner.txt"), format!("inside {d}"));
    }
    std::os::unix::fs::symlink("f001", big.join("link-a")).unwrap();
    std::os::unix::fs::symlink("../big", big.join("link-b")).unwrap();
    big
}

#[test]
fn a_large_directory_is_stored_in_parts_and_read_back_whole() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let big = big_folder(&src);
    let first = backup_in_parts(&repo, &src);
    let first_id = first["id"].as_str().unwrap().to_string();

    // Stored as a list of parts, each a tree of its own.
    let listed = tree_of(&repo, &first_id, &big);
    assert_eq!(listed["version"], 2, "{listed}");
    let parts = listed["parts"].as_array().unwrap().clone();
    // A part holds 32 entries at most (four times the 8 asked for), so
    // 105 make 4 parts at least; how many more hangs on the names' hashes
    // with the repository's own seed.
    assert!(parts.len() >= 4, "{} parts", parts.len());
    let mut in_parts = 0;
    for p in &parts {
        let part = repo
            .run(&["cat", "tree", p.as_str().unwrap()])
            .success()
            .json();
        assert_eq!(part["version"], 1, "{part}");
        in_parts += part["nodes"].as_array().unwrap().len();
    }
    assert_eq!(in_parts, 105);
    // The small folders are whole trees.
    assert_eq!(tree_of(&repo, &first_id, &big.join("d1"))["version"], 1);

    // Listed in order, every entry once.
    let names = names_in_dir(&repo, &first_id, &big);
    assert_eq!(names.len(), 105, "{names:?}");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");

    // Restored whole, and one file from the middle of a part.
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_same_tree(&src, &restored(&target, &src));
    let one = repo.scratch("one");
    let spec = format!("latest:{}", big.join("f050").display());
    repo.restore(&spec, &one, &[]);
    assert_eq!(
        fs::read(one.join("f050")).unwrap(),
        fs::read(big.join("f050")).unwrap()
    );

    // One file changed, one added, one removed: the parts holding them
    // are stored again, not the others.
    write(&big.join("f042"), "changed");
    write(&big.join("f0425"), "added");
    fs::remove_file(big.join("f077")).unwrap();
    let second = backup_in_parts(&repo, &src);
    let summary = &second["summary"];
    assert_eq!(summary["files_changed"], 1, "{second}");
    assert_eq!(summary["files_new"], 1, "{second}");
    assert_eq!(summary["files_unmodified"], 101, "{second}");
    // Two chunks, the parts around the two places changed, the list, and
    // the trees of `src` and the folders above it. A change stores its
    // part again and may move the cut after it: the added name may cut
    // its part in two, and the removed one may have been a cut (or let
    // one that was too close to the last be made), so its part and the
    // next are stored again. The cuts hang on the repository's seed: at
    // most five parts, and three in most runs.
    let above = src.components().count() as u64;
    let added = summary["blobs_added"].as_u64().unwrap();
    assert!(added <= 2 + 5 + 1 + above, "{added} blobs added: {second}");
    let second_id = second["id"].as_str().unwrap().to_string();
    let relisted = tree_of(&repo, &second_id, &big);
    let kept = relisted["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| parts.contains(p))
        .count();
    assert!(
        kept + 5 >= parts.len() && kept >= parts.len() / 2,
        "{kept} of {} parts kept",
        parts.len()
    );

    // A mirror restore into the first restore's folder makes it the new
    // snapshot: the removed file goes, an extra one too.
    write(
        &restored(&target, &big).join("extra"),
        "not in the snapshot",
    );
    repo.restore("latest", &target, &["--policy", "mirror"]);
    assert_same_tree(&src, &restored(&target, &src));

    // Verify reads every part; gc after forgetting the first snapshot
    // keeps what the second needs.
    repo.run(&["verify", "--read-data"]).success();
    repo.run(&["forget", &first_id]).success();
    repo.run(&["gc", "--max-unused", "0%"]).success();
    repo.run(&["verify", "--read-data"]).success();
    let again = repo.scratch("again");
    repo.restore("latest", &again, &[]);
    assert_same_tree(&src, &restored(&again, &src));
}

/// A backup finds the unchanged files of a directory in parts through
/// its parent's parts, read one at a time: a second backup reads nothing.
#[test]
fn a_directory_in_parts_is_the_parent_of_the_next_backup() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    big_folder(&src);
    let first = backup_in_parts(&repo, &src);
    let again = backup_in_parts(&repo, &src);
    let summary = &again["summary"];
    assert_eq!(summary["files_unmodified"], 103, "{again}");
    assert_eq!(summary["bytes_read"], 0, "{again}");
    // Nothing under the source is stored again. A tree of the folders
    // above it may be: `/tmp`'s times move as other tests make folders
    // in it, and the tree of `/` records them.
    let subtree = |snapshot: &Value| {
        let id = snapshot["id"].as_str().unwrap();
        let parent = ls(&repo, id, src.parent().unwrap());
        let node = parent.iter().find(|n| n["name"] == "src").unwrap();
        node["kind"]["dir"]["subtree"].clone()
    };
    assert_eq!(subtree(&first), subtree(&again));
    assert!(summary["blobs_added"].as_u64().unwrap() <= 1, "{again}");
}

/// A directory one part of which is lost (its bytes damaged in its
/// pack): restore brings back the entries of the other parts and names
/// the directory; verify puts the damage at the directory; repair writes
/// a snapshot without the lost part's entries and with all the others,
/// its node saying entries were left out (how many is not known).
#[test]
fn a_lost_part_costs_its_entries_only() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let big = big_folder(&src);
    let snap = backup_in_parts(&repo, &src);
    let id = snap["id"].as_str().unwrap().to_string();
    let listed = tree_of(&repo, &id, &big);
    let parts = listed["parts"].as_array().unwrap();
    let last = parts.last().unwrap().as_str().unwrap();
    let lost: Vec<String> = repo.run(&["cat", "tree", last]).success().json()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!lost.is_empty() && lost.len() < 100, "{lost:?}");
    let loc = index_map(&repo)[last].clone();
    let pack = &pack_files(&repo)[&loc.pack];
    let mut bytes = fs::read(pack).unwrap();
    bytes[(loc.offset + loc.length / 2) as usize] ^= 0x55;
    fs::write(pack, &bytes).unwrap();

    let target = repo.scratch("target");
    let out = repo.restore_out(&id, &target, &[]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(&abs(&big)), "{out}");
    let back = restored(&target, &big);
    for i in 0..100 {
        let name = format!("f{i:03}");
        assert_eq!(back.join(&name).exists(), !lost.contains(&name), "{name}");
    }

    let (code, v, out) = verify_json(&repo, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.stdout.contains(&abs(&big)), "{out}");
    // Said as one part of the folder, not the whole folder, which the
    // other parts' entries are not (it said "directory unreadable").
    assert!(
        v.to_string()
            .contains("a part of the directory unreadable (its other parts are whole)"),
        "{out}"
    );
    // With the pack that holds the part.
    let part = v["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["blob"] == last)
        .unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(part["pack"], loc.pack.as_str(), "{v:#}");
    let out = repo.run(&["verify"]);
    assert!(
        out.stdout.contains(
            "0 errors, 0 damaged files and 1 unreadable part(s) of folders stored in parts, \
             each with what it holds"
        ),
        "{out}"
    );

    repo.run(&["repair", "snapshots"]).success();
    let fixed = repo
        .snapshots()
        .into_iter()
        .find(|s| s["id"] != id.as_str())
        .expect("a repaired snapshot");
    let fixed_id = fixed["id"].as_str().unwrap();
    let names: Vec<String> = ls(&repo, fixed_id, &big)
        .iter()
        .filter(|n| n["path"].as_str().unwrap().matches('/').count() == big.components().count())
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 105 - lost.len(), "{names:?}");
    assert!(names.iter().all(|n| !lost.contains(n)), "{names:?}");
    // Its node says it is not known what the directory held: a mirror
    // of the copy leaves what the target holds there.
    let long = repo.run(&["ls", "--long", fixed_id, &abs(&src)]).success();
    let unknown = format!("{} (not listed by its backup)", abs(&big));
    assert!(long.stdout.lines().any(|l| l.ends_with(&unknown)), "{long}");
    let again = repo.scratch("again");
    repo.restore(fixed_id, &again, &[]);
    for i in 0..100 {
        let name = format!("f{i:03}");
        let file = restored(&again, &big).join(&name);
        if !lost.contains(&name) {
            assert_eq!(fs::read(&file).unwrap(), fs::read(big.join(&name)).unwrap());
        }
    }
}

/// A part whose every entry is left out (here a file that vanishes
/// between the walk and its read, in parts of one entry each) is left
/// out of the list too: a directory is never stored with an empty part,
/// which no reader would take, and the rest of it restores.
#[test]
fn a_part_left_empty_is_left_out() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    for name in ["a", "b", "gone.txt", "d", "e"] {
        write(&src.join(name), format!("content of {name}"));
    }
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src)
        .env("CAIRN_TEST_TREE_PART", "1")
        .env("CAIRN_VANISH", "gone.txt");
    let out = run(&mut c, None);
    assert_eq!(out.code, 3, "{out}");
    let id = out.json()["id"].as_str().unwrap().to_string();
    let listed = tree_of(&repo, &id, &src);
    assert_eq!(listed["version"], 2, "{listed}");
    assert_eq!(listed["parts"].as_array().unwrap().len(), 4, "{listed}");

    let target = repo.scratch("target");
    repo.restore(&id, &target, &[]);
    let back = restored(&target, &src);
    let mut names: Vec<String> = fs::read_dir(&back)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "d", "e"]);
    assert_eq!(fs::read(back.join("d")).unwrap(), b"content of d");
    repo.run(&["verify", "--read-data"]).success();
}

/// A changed file followed by many unchanged ones, in parts of one
/// entry each: the part of the changed file is finished while the walk
/// goes on (its file goes to the workers when the part is cut, not when
/// the directory ends), so the parts sent after it, more than the
/// channel to the finisher holds, do not stall the backup.
#[test]
fn a_part_is_finished_while_its_directory_is_walked() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    for i in 0..400 {
        write(&src.join(format!("f{i:03}")), format!("file {i}"));
    }
    let backup = || {
        let mut c = repo.cmd(&["backup", "--json"]);
        c.arg(&src)
            .env("CAIRN_TEST_TREE_PART", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("the backup stalled");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    backup();
    write(&src.join("f000"), "changed");
    let second = backup();
    assert_eq!(second["summary"]["files_changed"], 1, "{second}");
    assert_eq!(second["summary"]["files_unmodified"], 399, "{second}");
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_same_tree(&src, &restored(&target, &src));
}

/// A directory listed through sorted runs spilled to temporary files
/// (`CAIRN_TEST_LISTING_RUN` of a few dozen bytes: a listing of a hundred
/// names makes dozens of runs) is stored exactly as one listed in memory,
/// with or without a parent to compare with, and restored whole.
#[test]
fn a_listing_spilled_in_runs_stores_the_same_directory() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let big = big_folder(&src);
    // Names whose byte order is not their order as text in most locales,
    // and one that is not UTF-8.
    for name in ["B", "a", "a-", "a0", "ab", "Z", "_x"] {
        write(&big.join(name), name);
    }
    write(&big.join(os(b"caf\xe9")), "latin-1");
    let entries = 105 + 8;
    // Files: those of `big` and one in each of its three folders.
    let files = 100 + 8 + 3;
    let in_memory = backup_in_parts(&repo, &src);
    let in_memory_id = in_memory["id"].as_str().unwrap().to_string();
    let want = tree_of(&repo, &in_memory_id, &big);

    let spilled = |args: &[&str]| {
        let mut c = repo.cmd(&["backup", "--json"]);
        c.args(args)
            .arg(&src)
            .env("CAIRN_TEST_TREE_PART", PART)
            .env("CAIRN_TEST_LISTING_RUN", "64");
        run(&mut c, None).success().json()
    };
    let excluding = |kind| spilled(&["--kind", kind, "--exclude", "**/big/f09?"]);
    // With the first snapshot as its parent: every file found unchanged
    // by walking the listing beside the parent's parts.
    let again = excluding("incremental");
    let summary = &again["summary"];
    assert_eq!(summary["files_unmodified"], files - 10, "{again}");
    assert_eq!(summary["files_new"], 0, "{again}");
    assert_eq!(summary["bytes_read"], 0, "{again}");
    assert_eq!(summary["errors"], 0, "{again}");
    // Read afresh: the same directory, less the ten excluded files.
    let full = excluding("full");
    assert_eq!(full["summary"]["files_new"], files - 10, "{full}");
    let full_id = full["id"].as_str().unwrap().to_string();
    let names = names_in_dir(&repo, &full_id, &big);
    assert_eq!(names.len(), entries - 10, "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("f09")), "{names:?}");

    // Without the exclusion, the same parts as the listing held in memory.
    let whole = spilled(&["--kind", "full"]);
    let whole_id = whole["id"].as_str().unwrap().to_string();
    assert_eq!(tree_of(&repo, &whole_id, &big), want);
    // With no temporary folder to spill to, the names stay in memory:
    // the same directory, nothing left out.
    let mut c = repo.cmd(&["backup", "--json", "--kind", "full"]);
    c.arg(&src)
        .env("CAIRN_TEST_TREE_PART", PART)
        .env("CAIRN_TEST_LISTING_RUN", "64")
        .env("TMPDIR", repo.scratch("no-such-folder").join("gone"));
    let unspilled = run(&mut c, None).success().json();
    assert_eq!(unspilled["summary"]["errors"], 0, "{unspilled}");
    let unspilled_id = unspilled["id"].as_str().unwrap().to_string();
    assert_eq!(tree_of(&repo, &unspilled_id, &big), want);
    let target = repo.scratch("target");
    repo.restore(&whole_id, &target, &[]);
    assert_same_tree(&src, &restored(&target, &src));
}
