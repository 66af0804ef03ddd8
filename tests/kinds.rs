//! Snapshot kinds: incremental, differential and full backups choose the
//! right parent, read only what they must, and all restore identically.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use serde_json::Value;

fn summary(snap: &Value, field: &str) -> u64 {
    snap["summary"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary.{field} missing in {snap:#}"))
}

fn id(snap: &Value) -> String {
    snap["id"].as_str().expect("id").to_string()
}

fn parent(snap: &Value) -> Option<String> {
    snap["parent"].as_str().map(String::from)
}

/// Directory listings are all a backup of unchanged files may add: the
/// source's ancestors (such as /tmp) change under the tests.
const NO_DATA: u64 = 16 * 1024;

/// The tree id of the backed-up directory `src` in `snap`.
fn src_tree(repo: &Repo, snap: &Value, src: &Path) -> String {
    let base = abs(src);
    let parent = Path::new(&base).parent().unwrap().to_str().unwrap();
    let out = repo.run(&["ls", "--json", &id(snap), parent]).success();
    for line in out.stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["path"] == base.as_str() {
            return v["kind"]["dir"]["subtree"].as_str().unwrap().to_string();
        }
    }
    panic!("{base} not in snapshot:\n{out}");
}

fn file_bytes(root: &Path) -> u64 {
    manifest(root)
        .values()
        .map(|e| match e.kind {
            Kind::File { len, .. } => len,
            _ => 0,
        })
        .sum()
}

#[test]
fn kinds_choose_parents_read_what_they_must_and_restore_identically() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write_random(&src.join("a.bin"), 1, 1 << 20);
    write_random(&src.join("b.bin"), 2, 600_000);
    write(&src.join("sub/c.txt"), "version one\n".repeat(1000));
    write_random(&src.join("sub/deeper/d.bin"), 3, 2 << 20);
    write(&src.join("sub/empty"), "");
    std::os::unix::fs::symlink("sub/c.txt", src.join("link")).unwrap();
    let files = 5u64;

    let mut states = Vec::new(); // (snapshot id, manifest of the source then)

    // 1. First backup: asked incremental, there is no parent: full.
    let s1 = repo.backup(&[&src], &[]);
    assert_eq!(s1["kind"], "full");
    assert_eq!(parent(&s1), None);
    assert_eq!(summary(&s1, "bytes_read"), file_bytes(&src));
    assert_eq!(summary(&s1, "files_new"), files);
    states.push((id(&s1), manifest(&src)));

    // 2. Incremental after no change reads nothing; checked on the
    //    human-readable summary line too.
    let out = repo.run(&["backup", src.to_str().unwrap()]).success();
    let line = out.stdout.lines().next().unwrap_or_default().to_string();
    assert!(line.contains("read 0 B"), "{out}");
    assert!(line.contains("incremental snapshot"), "{out}");
    let s2 = repo.snapshots().pop().unwrap();
    assert!(line.contains(&id(&s2)[..8]), "{out}");
    assert_eq!(s2["kind"], "incremental");
    assert_eq!(parent(&s2).as_deref(), Some(id(&s1).as_str()));
    assert_eq!(summary(&s2, "bytes_read"), 0);
    assert_eq!(summary(&s2, "files_unmodified"), files);
    assert!(summary(&s2, "bytes_added") < NO_DATA);
    assert_eq!(
        src_tree(&repo, &s2, &src),
        src_tree(&repo, &s1, &src),
        "unchanged source, same tree"
    );
    states.push((id(&s2), manifest(&src)));

    // 3. Incremental after changing one file reads just that file.
    write(&src.join("sub/c.txt"), "version two\n".repeat(1500));
    let s3 = repo.backup(&[&src], &[]);
    assert_eq!(s3["kind"], "incremental");
    assert_eq!(parent(&s3).as_deref(), Some(id(&s2).as_str()));
    assert_eq!(summary(&s3, "bytes_read"), 18_000);
    assert_eq!(summary(&s3, "files_changed"), 1);
    assert_eq!(summary(&s3, "files_unmodified"), files - 1);
    states.push((id(&s3), manifest(&src)));

    // 4. Another incremental, after adding a file.
    write_random(&src.join("sub/e.bin"), 4, 300_000);
    let s4 = repo.backup(&[&src], &["--kind", "incremental"]);
    assert_eq!(s4["kind"], "incremental");
    assert_eq!(parent(&s4).as_deref(), Some(id(&s3).as_str()));
    assert_eq!(summary(&s4, "bytes_read"), 300_000);
    assert_eq!(summary(&s4, "files_new"), 1);
    states.push((id(&s4), manifest(&src)));

    // 5. Differential: the parent is the last *full* snapshot, so it reads
    //    everything changed since then (c.txt and e.bin), not since s4.
    let s5 = repo.backup(&[&src], &["--kind", "differential"]);
    assert_eq!(s5["kind"], "differential");
    assert_eq!(parent(&s5).as_deref(), Some(id(&s1).as_str()));
    assert_eq!(summary(&s5, "bytes_read"), 18_000 + 300_000);
    assert!(
        summary(&s5, "bytes_added") < NO_DATA,
        "all of it is stored already"
    );
    assert_eq!(src_tree(&repo, &s5, &src), src_tree(&repo, &s4, &src));
    states.push((id(&s5), manifest(&src)));

    // 6. Full: no parent, reads everything, stores nothing new.
    let s6 = repo.backup(&[&src], &["--kind", "full"]);
    assert_eq!(s6["kind"], "full");
    assert_eq!(parent(&s6), None);
    let total = file_bytes(&src);
    assert_eq!(summary(&s6, "bytes_read"), total);
    assert_eq!(summary(&s6, "total_bytes"), total);
    assert_eq!(summary(&s6, "files_new"), files + 1);
    assert!(summary(&s6, "bytes_added") < NO_DATA);
    states.push((id(&s6), manifest(&src)));

    // 7. A differential after the new full takes the new full as parent.
    write_random(&src.join("a.bin"), 5, 1 << 20);
    let s7 = repo.backup(&[&src], &["--kind", "differential"]);
    assert_eq!(s7["kind"], "differential");
    assert_eq!(parent(&s7).as_deref(), Some(id(&s6).as_str()));
    assert_eq!(summary(&s7, "bytes_read"), 1 << 20);
    states.push((id(&s7), manifest(&src)));

    // 8. An incremental after a differential follows the differential.
    let s8 = repo.backup(&[&src], &[]);
    assert_eq!(parent(&s8).as_deref(), Some(id(&s7).as_str()));
    assert_eq!(summary(&s8, "bytes_read"), 0);
    states.push((id(&s8), manifest(&src)));

    // `snapshots --json` records the same kinds and parents.
    let listed = repo.snapshots();
    assert_eq!(
        ids(&listed),
        states.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>()
    );
    let kinds: Vec<&str> = listed.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "full",
            "incremental",
            "incremental",
            "incremental",
            "differential",
            "full",
            "differential",
            "incremental"
        ]
    );
    assert_eq!(listed[4]["parent"].as_str(), Some(id(&s1).as_str()));

    // Every snapshot restores exactly the source as it was when taken.
    for (i, (snap, expected)) in states.iter().enumerate() {
        let target = repo.scratch(&format!("restore-{i}"));
        repo.restore(snap, &target, &[]);
        assert_manifests_eq(
            expected,
            &manifest(&restored(&target, &src)),
            &format!("restore of snapshot {} (#{})", &snap[..8], i + 1),
        );
    }
    // The restores really differ where the source did.
    let old = fs::read(restored(&repo.dir.path().join("restore-0"), &src).join("sub/c.txt"));
    assert_eq!(old.unwrap(), "version one\n".repeat(1000).into_bytes());
}

/// A file changed within two seconds before its parent snapshot began
/// may have changed again unseen, within the same tick of its clock, after
/// the parent read it: the next backup reads it again rather than trust
/// its unchanged size and times. (The other tests set that window to
/// nothing, to see files they just wrote as unchanged.)
#[test]
fn a_file_changed_just_before_its_parent_is_read_again() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("db"), "page one\n");
    let with_window = |args: &[&str]| {
        let mut c = repo.cmd(args);
        c.env_remove("CAIRN_TEST_RACY_WINDOW_NS");
        run(&mut c, None).success()
    };
    with_window(&["backup", src.to_str().unwrap()]);
    let out = with_window(&["backup", "--json", src.to_str().unwrap()]);
    let snap = out.json();
    assert_eq!(summary(&snap, "bytes_read"), 9, "{out}");
    // Read again to the same chunks, it counts as unmodified, not changed.
    assert_eq!(summary(&snap, "files_unmodified"), 1, "{out}");
    assert_eq!(summary(&snap, "files_changed"), 0, "{out}");
    // Changed within the window, it counts as changed.
    write(&src.join("db"), "page two\n");
    let out = with_window(&["backup", "--json", src.to_str().unwrap()]);
    assert_eq!(summary(&out.json(), "files_changed"), 1, "{out}");
    // With no window, as before this rule, the same file is trusted.
    let snap = repo.backup(&[&src], &[]);
    assert_eq!(summary(&snap, "files_unmodified"), 1);
    assert_eq!(summary(&snap, "bytes_read"), 0);
}

/// A file `db` of 8 KiB of `0`s, made (with its folder) and mapped shared,
/// "AAAA" written through the map at its start, as a database writes.
fn mapped_db(db: &std::path::Path) -> memmap2::MmapMut {
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    fs::write(db, vec![b'0'; 8192]).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(db)
        .unwrap();
    // SAFETY: the file is the test's own, mapped while it runs.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file).unwrap() };
    map[..4].copy_from_slice(b"AAAA");
    map
}

/// A program writing through a shared memory map sets the file's times
/// only on its first write to a clean page: later writes to the page,
/// still dirty, move neither mtime nor ctime until writeback has cleaned
/// it (half a minute by default). A file stamped within that time before
/// its parent began is read again, so the bytes written after the
/// parent's read are in the next snapshot; with the clock's tick alone as
/// the window, every later snapshot kept the parent's bytes, exit 0.
#[test]
fn a_file_written_through_a_shared_map_after_its_parent_read_it_is_read_again() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let db = src.join("db");
    let mut map = mapped_db(&db);
    // Past the clock's tick, so the window of the tick alone trusts it.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let with_window = |args: &[&str]| {
        let mut c = repo.cmd(args);
        c.env_remove("CAIRN_TEST_RACY_WINDOW_NS");
        run(&mut c, None).success()
    };
    let stamped = fs::metadata(&db).unwrap().ctime_nsec();
    let first = with_window(&["backup", "--json", src.to_str().unwrap()]).json();
    map[..4].copy_from_slice(b"BBBB");
    map.flush().unwrap();
    drop(map);
    let out = with_window(&["backup", "--json", src.to_str().unwrap()]);
    let second = out.json();
    assert_eq!(parent(&second), Some(id(&first)), "{out}");
    if fs::metadata(&db).unwrap().ctime_nsec() == stamped {
        // The times did not move: only the window makes the backup read it.
        assert_eq!(summary(&second, "bytes_read"), 8192, "{out}");
    }
    assert_eq!(summary(&second, "files_changed"), 1, "{out}");
    let target = repo.scratch("restored");
    repo.restore(&id(&second), &target, &[]);
    let got = fs::read(restored(&target, &src).join("db")).unwrap();
    assert_eq!(&got[..4], b"BBBB");
}

/// On a filesystem that keeps times in whole seconds, attributes set on a
/// folder or symlink in the second its parent snapshot read them leave
/// its ctime as the parent saw it: the next backup reads them again
/// rather than take the parent's, as it reads a racily clean file again.
#[test]
fn attributes_set_just_after_the_parent_read_them_are_read_again() {
    let repo = Repo::new();
    let m = PrivateMount::ext4_whole_seconds(&repo.scratch("ext4"), 16 << 20);
    // The folder as the backup sees it, and as this process reaches it.
    let src = m.at.join("src");
    let dir = m.reached_from_here().join("src/dir");
    fs::create_dir_all(&dir).unwrap();
    let with_window = |args: &[&str]| {
        let mut c = repo.cmd(args);
        c.env_remove("CAIRN_TEST_RACY_WINDOW_NS");
        m.run(&c).success()
    };
    // All within one second of the filesystem's clock, so that the
    // folder's ctime is the same second throughout.
    let tries = 5;
    for attempt in 1..=tries {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_nanos(
            1_000_000_000 - u64::from(now.subsec_nanos()) + 10_000_000,
        ));
        let second = || fs::metadata(&dir).unwrap().ctime();
        xattr::set(&dir, "user.v", format!("{attempt}a").as_bytes()).unwrap();
        let began = second();
        with_window(&["backup", src.to_str().unwrap()]);
        xattr::set(&dir, "user.v", format!("{attempt}b").as_bytes()).unwrap();
        with_window(&["backup", src.to_str().unwrap()]);
        if second() != began {
            // The second turned meanwhile: the test would prove nothing.
            assert!(attempt < tries, "no try fit in one second");
            continue;
        }
        let target = repo.scratch(&format!("restore-{attempt}"));
        repo.restore("latest", &target, &[]);
        let got = xattr::get(restored(&target, &m.at).join("src/dir"), "user.v").unwrap();
        assert_eq!(got.as_deref(), Some(format!("{attempt}b").as_bytes()));
        return;
    }
}

/// Snapshots given one time (imports with the same `--time`) stand in
/// the order they were made: the last made is `latest` and the next
/// backup's parent. It went by id, which orders them at random.
#[test]
fn snapshots_of_one_time_stand_in_the_order_they_were_made() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let mut made = Vec::new();
    for i in 0..4 {
        write(&src.join("f"), format!("version {i}"));
        let v = repo.backup(&[&src], &["--time", "2024-05-01T02:00:00Z"]);
        made.push(id(&v));
    }
    let listed: Vec<String> = repo
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, made);
    let next = repo.backup(&[&src], &[]);
    assert_eq!(parent(&next), Some(made[3].clone()));
    let out = repo
        .run(&["forget", "--keep-last", "2", "--dry-run", "--json"])
        .success();
    let kept: Vec<String> = out.json()[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert!(kept.contains(&made[3]) && !kept.contains(&made[2]), "{out}");
}

/// `snapshots` sizes its host and set columns to their longest names:
/// each row's kind, sizes and paths stand under their headings.
#[test]
fn the_snapshot_listing_stays_in_columns_with_long_names() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "a");
    repo.backup(&[&src], &[]);
    let long = [
        "--host",
        "a-rather-long-host.example.com",
        "--set",
        "a-set-named-at-length-for-a-db",
    ];
    repo.backup(&[&src], &long);
    let out = repo.run(&["snapshots"]).success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let at = |line: &str, word: &str| line.find(word).unwrap_or_else(|| panic!("{word}: {out}"));
    let kind = at(lines[0], "kind");
    let paths = at(lines[0], "paths");
    for row in &lines[1..3] {
        assert_eq!(at(row, "full"), kind, "{out}");
        assert_eq!(row.rfind(" /").map(|i| i + 1), Some(paths), "{out}");
    }
}

/// A parent that began after this backup's clock (a clock stepped back
/// since, or ahead then) has a start that no change time can be compared
/// with: every file is read again, so bytes written through a shared map
/// after the parent read them, which move no time, are not missed. It was
/// trusted by a change time older than that start, and every snapshot
/// until the clock passed it kept the parent's bytes.
#[test]
fn a_parent_begun_after_this_backups_clock_has_every_file_read_again() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("same"), "unchanged");
    let db = src.join("db");
    let mut map = mapped_db(&db);
    let ahead = repo.backup_dated_ahead(&src);
    map[..4].copy_from_slice(b"BBBB");
    map.flush().unwrap();
    drop(map);

    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src);
    let out = run(&mut c, None);
    assert_eq!(out.code, 3, "{out}");
    let v = out.json();
    assert_eq!(parent(&v), Some(ahead.clone()), "{out}");
    assert_eq!(summary(&v, "bytes_read"), 8192 + 9, "{out}");
    assert_eq!(summary(&v, "files_unmodified"), 1, "{out}");
    let said = format!(
        "every file was read again, as change times cannot be compared with the start of \
         parent snapshot {}",
        &ahead[..8]
    );
    assert!(
        v["clock_behind"]
            .as_str()
            .is_some_and(|s| s.contains(&said)),
        "{said}\n{out}"
    );
    assert!(out.stderr.contains(&said), "{out}");
    let target = repo.scratch("restored");
    repo.restore(&id(&v), &target, &[]);
    let got = fs::read(restored(&target, &src).join("db")).unwrap();
    assert_eq!(&got[..4], b"BBBB");
}

/// A backup whose host's clock reads a time before its set's newest
/// snapshot (a clock reset or stepped back, or one that was ahead then)
/// stores its data all the same, but exits 3 and says what the order of
/// times does: `latest` stays the other snapshot, and retention would
/// remove this one first. A time given with `--time` is not questioned.
#[test]
fn a_backup_whose_clock_reads_before_its_sets_newest_snapshot_says_so() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    write(&src.join("f"), "one");
    let ahead = repo.backup_dated_ahead(&src);

    write(&src.join("f"), "two, later");
    let mut c = repo.cmd(&["backup", "--json"]);
    c.arg(&src);
    let out = run(&mut c, None);
    assert_eq!(out.code, 3, "{out}");
    let said = format!(
        "before the time of snapshot {} of the same set",
        &ahead[..8]
    );
    assert!(out.stderr.contains(&said), "{said}\n{out}");
    assert!(out.stderr.contains("`latest` is snapshot"), "{out}");
    let v = out.json();
    assert!(
        v["clock_behind"]
            .as_str()
            .is_some_and(|s| s.contains(&said)),
        "{out}"
    );
    // Stored whole all the same.
    let target = repo.scratch("target");
    repo.restore(&id(&v), &target, &[]);
    assert_eq!(
        fs::read(restored(&target, &src).join("f")).unwrap(),
        b"two, later"
    );

    // With the clock right, and with a time given before the set's
    // newest snapshot, nothing is said.
    let other = repo.scratch("other");
    write(&other.join("g"), "g");
    let v = repo.backup(&[&other], &[]);
    assert!(v["clock_behind"].is_null(), "{v}");
    let v = repo.backup(&[&other], &["--time", "2020-01-01T00:00:00Z"]);
    assert!(v["clock_behind"].is_null(), "{v}");
}
