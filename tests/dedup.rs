//! Deduplication on real, incompressible data with the default chunk
//! sizes: repeated backups, copies and shifted content cost (almost)
//! nothing.

mod common;

use std::fs;

use common::*;

const MIB: u64 = 1 << 20;

#[test]
fn repeated_copied_and_shifted_data_is_stored_once() {
    // Default chunk sizes (512 KiB / 1 MiB / 8 MiB): the thresholds below
    // are about them.
    let repo = Repo::with_init_args(FAST_KDF_ONLY);
    let src = repo.scratch("src");
    // 100 MiB: one 50 MiB file and 25 files of 2 MiB in nested folders.
    let big = random_bytes(100, (50 * MIB) as usize);
    write(&src.join("big.bin"), &big);
    for i in 0..25u64 {
        write_random(
            &src.join(format!("files/d{}/f{i}.bin", i % 5)),
            200 + i,
            (2 * MIB) as usize,
        );
    }
    let tree_bytes = 100 * MIB;

    // First backup: everything is new, and (incompressible) stored in
    // about its own size.
    let empty = repo.size();
    let s1 = repo.backup(&[&src], &[]);
    let first = repo.size() - empty;
    assert_eq!(s1["summary"]["bytes_read"], tree_bytes);
    assert!(
        first > tree_bytes * 99 / 100 && first < tree_bytes * 102 / 100,
        "first backup stored {first} bytes for {tree_bytes}"
    );

    // The same tree again, incrementally and reading every byte: < 1%.
    let before = repo.size();
    repo.backup(&[&src], &[]);
    let s3 = repo.backup(&[&src], &["--kind", "full"]);
    assert_eq!(s3["summary"]["bytes_read"], tree_bytes);
    let growth = repo.size() - before;
    assert!(
        growth * 100 < first,
        "two more backups of the same tree grew the repository by {growth} bytes (first: {first})"
    );
    // Nothing but directory listings can be new (the ancestors of the
    // source, such as /tmp, may change under us).
    assert!(
        s3["summary"]["bytes_added"].as_u64().unwrap() < 64 * 1024,
        "{s3:#}"
    );

    // A copy of the big file elsewhere in the tree: read, but not stored.
    fs::copy(src.join("big.bin"), src.join("files/d3/copy of big.bin")).unwrap();
    let before = repo.size();
    let s4 = repo.backup(&[&src], &[]);
    let growth = repo.size() - before;
    assert_eq!(s4["summary"]["bytes_read"], 50 * MIB);
    assert!(
        growth < 256 * 1024,
        "a 50 MiB copy cost {growth} bytes of repository"
    );

    // One byte inserted at the start of the big file: only the chunks
    // around the change are new.
    let mut shifted = Vec::with_capacity(big.len() + 1);
    shifted.push(0x42);
    shifted.extend_from_slice(&big);
    drop(big);
    fs::write(src.join("big.bin"), &shifted).unwrap();
    let before = repo.size();
    let s5 = repo.backup(&[&src], &[]);
    let growth = repo.size() - before;
    assert_eq!(s5["summary"]["bytes_read"], 50 * MIB + 1);
    assert!(
        growth < 5_000_000,
        "inserting one byte into a 50 MiB file added {growth} bytes"
    );

    // And the shifted file restores exactly, from the deduplicated chunks.
    let id = s5["id"].as_str().unwrap();
    let target = repo.scratch("target");
    repo.restore(&format!("{id}:{}/big.bin", abs(&src)), &target, &[]);
    assert_eq!(
        list_paths(&target),
        vec![std::path::PathBuf::from("big.bin")]
    );
    assert!(
        fs::read(target.join("big.bin")).unwrap() == shifted,
        "restored big.bin differs"
    );
}

#[test]
fn a_backup_that_writes_its_index_in_parts_still_stores_each_chunk_once() {
    // 1 MiB packs, and an index table written after every 4 blobs
    // indexed: the backup below writes many tables before it finishes.
    let mut args = FAST_INIT.to_vec();
    args.extend(["--pack-size", "1M"]);
    let repo = Repo::with_init_args(&args);
    let src = repo.scratch("src");
    for i in 0..40u64 {
        write_random(&src.join(format!("a{i:02}")), 300 + i, 200 * 1024);
    }
    // Copies, walked after their originals' chunks went into a table.
    for i in 0..10u64 {
        fs::copy(src.join(format!("a{i:02}")), src.join(format!("z{i:02}"))).unwrap();
    }
    let backup = |extra: &[&str]| {
        let mut c = repo.cmd(&["backup", "--json"]);
        c.args(extra).arg(&src).env("CAIRN_TEST_INDEX_EVERY", "4");
        run(&mut c, None).success().json()
    };
    let s1 = backup(&[]);
    let tables = fs::read_dir(repo.path.join("index")).unwrap().count();
    assert!(tables >= 5, "{tables} index tables");
    // The forty distinct files are stored once each (with the trees, a
    // few KiB); a copy stored again would add 200 KiB.
    let stored = s1["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        stored < 41 * 200 * 1024,
        "stored {stored} bytes for 40 distinct files of 200 KiB: {s1:#}"
    );
    assert!(stored >= 40 * 200 * 1024, "{s1:#}");
    // Everything is indexed, nothing is lost, and a full backup of the
    // same files finds every chunk in the tables.
    repo.run(&["verify", "--read-data"]).success();
    let s2 = backup(&["--kind", "full"]);
    assert!(
        s2["summary"]["bytes_added"].as_u64().unwrap() < 64 * 1024,
        "{s2:#}"
    );
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_same_contents(&src, &restored(&target, &src));
}

/// Once an index set has filtered its misses (here from the first miss
/// on), a backup still finds every chunk the repository holds: copies of
/// files stored before, and every chunk of a full backup, add nothing.
#[test]
fn a_backup_whose_index_filters_its_misses_still_finds_every_stored_chunk() {
    let repo = Repo::with_init_args(FAST_INIT);
    let src = repo.scratch("src");
    for i in 0..30u64 {
        write_random(&src.join(format!("a{i:02}")), 700 + i, 64 * 1024);
    }
    let backup = |extra: &[&str]| {
        let mut c = repo.cmd(&["backup", "--json"]);
        c.args(extra).arg(&src).env("CAIRN_TEST_FILTER_AFTER", "1");
        run(&mut c, None).success().json()
    };
    backup(&[]);
    for i in 0..20u64 {
        write_random(&src.join(format!("n{i:02}")), 900 + i, 64 * 1024);
    }
    for i in 0..30u64 {
        fs::copy(src.join(format!("a{i:02}")), src.join(format!("z{i:02}"))).unwrap();
    }
    // Only the twenty new files are stored (with the trees, a few KiB);
    // a copy stored again would add 64 KiB.
    let s2 = backup(&[]);
    let stored = s2["summary"]["bytes_added"].as_u64().unwrap();
    assert!(stored >= 20 * 64 * 1024, "{s2:#}");
    assert!(stored < 21 * 64 * 1024, "stored {stored} bytes: {s2:#}");
    let s3 = backup(&["--kind", "full"]);
    assert!(
        s3["summary"]["bytes_added"].as_u64().unwrap() < 16 * 1024,
        "{s3:#}"
    );
    repo.run(&["verify", "--read-data"]).success();
    let target = repo.scratch("target");
    repo.restore("latest", &target, &[]);
    assert_same_contents(&src, &restored(&target, &src));
}
