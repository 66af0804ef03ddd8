//! The index's tests: encoding, search, directories, merging and
//! compaction, building.

use super::merge::{merge_kept, KEEP_TABLES};
use super::*;

/// A merge's view of the store in which every pack exists.
fn every_pack(_: &PackId) -> Result<bool> {
    Ok(true)
}

/// A merge's view of a store that holds none of the packs the tables
/// name (the tests' stores hold tables only): of an id in several
/// sources' packs, the first source's entry is kept, unread.
fn no_pack(_: &PackId) -> Result<bool> {
    Ok(false)
}

fn entry(b: u8, off: u32) -> PackEntry {
    PackEntry {
        id: BlobId([b; 32]),
        offset: off,
        length: 10,
        raw_length: 5,
    }
}

#[test]
fn build_parse_find() {
    let key = MasterKey::generate();
    let mut b = IndexBuilder::default();
    b.add_pack(
        PackId([7; 32]),
        BlobKind::Data,
        &[entry(5, 12), entry(1, 22)],
    );
    b.add_pack(
        PackId([8; 32]),
        BlobKind::Tree,
        &[entry(3, 12), entry(5, 40)],
    );
    // One table of the tree pack's blobs, then one of the data pack's.
    let tables = tables_of(b, &key);
    let [trees, data] = &tables[..] else {
        panic!("{} tables", tables.len())
    };
    for t in &tables {
        t.check(&key).unwrap();
        assert!(t.check(&MasterKey::generate()).is_err());
    }
    assert!(trees.holds(BlobKind::Tree) && !trees.holds(BlobKind::Data));
    assert!(data.holds(BlobKind::Data) && !data.holds(BlobKind::Tree));
    assert_eq!((trees.len(), data.len()), (2, 2));
    assert_eq!(data.id_at(0), BlobId([1; 32]));
    let (_, loc) = trees
        .location_at(trees.find(&BlobId([3; 32])).unwrap())
        .unwrap();
    assert_eq!(loc.pack, PackId([8; 32]));
    assert_eq!(loc.kind, BlobKind::Tree);
    // Id 5 is in both kinds of pack: each table has its own entry.
    let (_, five) = data
        .location_at(data.find(&BlobId([5; 32])).unwrap())
        .unwrap();
    assert_eq!((five.pack, five.offset), (PackId([7; 32]), 12));
    let (_, five) = trees
        .location_at(trees.find(&BlobId([5; 32])).unwrap())
        .unwrap();
    assert_eq!((five.pack, five.offset), (PackId([8; 32]), 40));
    assert!(data.find(&BlobId([3; 32])).is_none());
    assert!(data.find(&BlobId([4; 32])).is_none());
}

/// The tables `b` makes (of the current version), parsed.
fn tables_of(b: IndexBuilder, key: &MasterKey) -> Vec<IndexTable> {
    b.finish(key, VERSION)
        .into_iter()
        .map(|(id, bytes)| IndexTable::parse(id, Data::Owned(bytes)).unwrap())
        .collect()
}

/// The one table `tables` holds (a builder or merge of one kind of pack).
fn single<T: std::fmt::Debug>(mut tables: Vec<T>) -> T {
    assert_eq!(tables.len(), 1, "{tables:?}");
    tables.remove(0)
}

/// The one table a builder of one kind of pack makes, or, with no
/// entries (of which a builder makes none), an empty table.
fn one_table(b: IndexBuilder, key: &MasterKey) -> (IndexId, Vec<u8>) {
    if b.is_empty() {
        let mut bytes = head_record(VERSION, 0, 0);
        let mac = key.mac(&bytes);
        bytes.extend_from_slice(&mac);
        return (IndexId(file_hash(&bytes)), bytes);
    }
    single(b.finish(key, VERSION))
}

/// A deterministic stream of pseudo-random words from `seed` (not 0).
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// `find` guesses positions from ids' first bytes, or looks them up
/// in the table's directory once built; either way it must find every
/// entry and no absent id however the ids spread: evenly (as keyed
/// hashes do), all sharing their first 8 bytes, bunched at either end,
/// or in runs, in tables of every size around its thresholds.
#[test]
fn find_is_exact_for_any_spread_of_ids() {
    let key = MasterKey::generate();
    let mut rand = xorshift(0x9e37_79b9_7f4a_7c15u64);
    type Spread = fn(u64, usize) -> [u8; 32];
    let spreads: [(&str, Spread); 5] = [
        ("even", |r, _| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&r.to_be_bytes());
            id[8..16].copy_from_slice(&r.rotate_left(17).to_le_bytes());
            id
        }),
        ("same prefix", |r, _| {
            let mut id = [0xab; 32];
            id[8..16].copy_from_slice(&r.to_be_bytes());
            id
        }),
        ("low end", |r, _| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(r >> 40).to_be_bytes());
            id[8..16].copy_from_slice(&r.to_be_bytes());
            id
        }),
        ("high end", |r, _| {
            let mut id = [0xff; 32];
            id[..8].copy_from_slice(&(u64::MAX - (r >> 40)).to_be_bytes());
            id[8..16].copy_from_slice(&r.to_be_bytes());
            id
        }),
        ("runs", |r, i| {
            let mut id = [0u8; 32];
            let run = (i / 50) as u64;
            id[..8].copy_from_slice(&(run.wrapping_mul(0x0123_4567_89ab_cdef)).to_be_bytes());
            id[8..16].copy_from_slice(&r.to_be_bytes());
            id
        }),
    ];
    for (name, spread) in spreads {
        for (n, directory) in [0usize, 1, 2, 63, 64, 65, 100, 255, 256, 257, 1000, 5000]
            .into_iter()
            .flat_map(|n| [(n, false), (n, true)])
        {
            let ids: Vec<BlobId> = (0..n).map(|i| BlobId(spread(rand(), i))).collect();
            let t = table_of_ids(&key, &ids);
            if directory {
                t.build_directory();
                assert_eq!(t.dir.get().is_some(), n >= 256, "{name}, {n}");
            }
            let name = format!("{name}, directory {directory}");
            for id in &ids {
                let i = t
                    .find(id)
                    .unwrap_or_else(|| panic!("{name}, {n}: {id} not found"));
                assert_eq!(t.id_at(i), *id, "{name}, {n}");
            }
            for _ in 0..200 {
                let absent = BlobId(spread(rand(), (rand() % 1000) as usize));
                if !ids.contains(&absent) {
                    assert_eq!(t.find(&absent), None, "{name}, {n}: {absent}");
                }
            }
            // Ids just beside present ones, and the extremes.
            for id in ids.iter().take(50) {
                for delta in [1u8, 255] {
                    let mut near = *id;
                    near.0[31] = near.0[31].wrapping_add(delta);
                    if !ids.contains(&near) {
                        assert_eq!(t.find(&near), None, "{name}, {n}: {near}");
                    }
                }
            }
            for extreme in [BlobId([0; 32]), BlobId([0xff; 32])] {
                assert_eq!(t.find(&extreme).is_some(), ids.contains(&extreme));
            }
        }
    }
}

/// Directories are built for the tables the lookups to come make
/// worth one (one lookup per 16 entries or more), and no others.
#[test]
fn directories_are_built_where_lookups_repay_them() {
    let key = MasterKey::generate();
    let table = |n: u32| {
        let ids: Vec<BlobId> = (0..n)
            .map(|i| BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        table_of_ids(&key, &ids)
    };
    let set = IndexSet::of(vec![table(16_000), table(1_600)]);
    let built = |set: &IndexSet| -> Vec<bool> {
        set.tables.iter().map(|t| t.dir.get().is_some()).collect()
    };
    set.build_directories(99);
    assert_eq!(built(&set), [false, false]);
    set.build_directories(100);
    assert_eq!(built(&set), [false, true]);
    set.build_directories(1_000);
    assert_eq!(built(&set), [true, true]);
    for t in &set.tables {
        for i in [0, 1, t.len() / 2, t.len() - 1] {
            assert_eq!(t.find(&t.id_at(i)), Some(i));
        }
    }
}

/// Kilobytes of this process's memory that the mapping holding `at` has
/// resident, from `/proc/self/smaps`.
fn resident_kib(at: *const u8) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let at = at as usize;
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = range.split_once('-') {
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                inside = (start..end).contains(&at);
                continue;
            }
        }
        if let Some(kib) = line.strip_prefix("Rss:").filter(|_| inside) {
            return kib.trim().trim_end_matches("kB").trim().parse().unwrap();
        }
    }
    panic!("no mapping holds {at:#x}");
}

/// A table mapped from a file is searched without mapping its pages
/// (its entries are read with `pread`) until it has had a lookup per 16
/// entries; then it gets a directory. A table of more than 2 MiB (64,000
/// entries, 3 MiB) is read for it a window at a time and searched
/// through it with `pread`, so its pages never count in the process's
/// memory: a no-change backup looks up every chunk it keeps, and mapping
/// such tables made its memory grow with the repository.
#[test]
fn lookups_map_no_page_of_a_table_until_its_directory_pays() {
    let key = MasterKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let present = ids(0, 64_000);
    let (id, bytes) = table_bytes(&key, &present);
    let path = dir.path().join("table");
    std::fs::write(&path, bytes).unwrap();
    let map = crate::mmap::Map::open_keeping(&path).unwrap();
    let t = IndexTable::parse(id, Data::Mapped(map)).unwrap();
    let at = t.data.as_ptr();
    assert_eq!(resident_kib(at), 0, "the header's page left mapped");
    let absent = ids(1_000_000, 1_000);
    // (Only `find`: reading an entry's id with `id_at` maps its page.)
    for (i, id) in present.iter().step_by(32).take(1_999).enumerate() {
        assert!(t.find(id).is_some(), "{id} not found");
        assert_eq!(t.find(&absent[i % absent.len()]), None);
    }
    assert_eq!(t.probes(), 3_998);
    assert!(
        t.dir.get().is_none(),
        "a directory before 4,000 lookups (64,000 entries)"
    );
    assert_eq!(resident_kib(at), 0, "lookups mapped pages of the table");
    for id in &absent[..1_000] {
        assert_eq!(t.find(id), None);
    }
    assert!(t.dir.get().is_some(), "no directory after 5,000 lookups");
    let mut found = Vec::new();
    for id in present.iter().step_by(97) {
        found.push(t.find(id).expect("found through the directory"));
        // Where it is, as a backup asks of every chunk it keeps: read
        // with the search, not through the map.
        let (at_id, loc) = t.find_location(id).expect("found").unwrap();
        assert_eq!(at_id, *id);
        assert_eq!((loc.offset, loc.length, loc.pack), (12, 1, PackId([1; 32])));
    }
    for id in &absent {
        assert_eq!(t.find(id), None);
        assert!(t.find_location(id).is_none());
    }
    assert_eq!(
        resident_kib(at),
        0,
        "the directory or a location mapped the table"
    );
    for (i, id) in found.into_iter().zip(present.iter().step_by(97)) {
        assert_eq!(t.id_at(i), *id);
    }
}

/// A table of up to 2 MiB that earns a directory through its lookups is
/// mapped whole for it, and searched in the map (a lookup then costs no
/// system call); every id is found, none absent.
#[test]
fn a_small_table_earns_a_mapped_directory() {
    let key = MasterKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let present = ids(0, 30_000);
    let (id, bytes) = table_bytes(&key, &present);
    assert!(bytes.len() <= 2 << 20, "{} bytes", bytes.len());
    let path = dir.path().join("table");
    std::fs::write(&path, bytes).unwrap();
    let map = crate::mmap::Map::open_keeping(&path).unwrap();
    let t = IndexTable::parse(id, Data::Mapped(map)).unwrap();
    let at = t.data.as_ptr();
    for id in present.iter().take(30_000 / 16) {
        assert!(t.find(id).is_some(), "{id} not found");
    }
    assert!(
        t.dir.get().is_some(),
        "no directory after a lookup per 16 entries"
    );
    assert!(
        resident_kib(at) > 0,
        "the table was not mapped for its directory"
    );
    for id in &present {
        assert!(t.find(id).is_some(), "{id} not found through the directory");
    }
    for id in &ids(1_000_000, 1_000) {
        assert_eq!(t.find(id), None);
    }
}

/// `n` ids, the hashes of `from..from + n`.
fn ids(from: u32, n: u32) -> Vec<BlobId> {
    (from..from + n)
        .map(|i| BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect()
}

/// Once misses reach `filter_after`, the set builds a filter of every
/// id: misses then stop at it, and every id is still found, in a table
/// mapped from a file (whose pages the build maps and unmaps a window at
/// a time) as in one in memory.
#[test]
fn misses_build_a_filter_that_keeps_every_id() {
    let key = MasterKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let (id, bytes) = table_bytes(&key, &ids(0, 30_000));
    let path = dir.path().join("table");
    std::fs::write(&path, bytes).unwrap();
    let mapped = IndexTable::parse(id, Data::Mapped(crate::mmap::Map::open(&path).unwrap()));
    let set = IndexSet::of(vec![
        mapped.unwrap(),
        table_of_ids(&key, &ids(30_000, 3_000)),
    ]);
    let after = set.filter_after();
    assert_eq!(after, 1024, "33,000 entries in 2 tables: the least");
    let misses = ids(1_000_000, after as u32 + 10_000);
    for m in &misses[..after - 1] {
        assert!(!set.contains(m));
    }
    assert_eq!(set.filter_bytes(), 0, "built before its misses");
    assert!(set.lookup(&misses[after - 1]).unwrap().is_none());
    assert!(set.filter_bytes() >= 33_000 * 2, "not built at its misses");
    for id in ids(0, 33_000) {
        assert!(set.contains(&id), "{id:?} lost by the filter");
        assert!(set.lookup(&id).unwrap().is_some());
    }
    assert!(misses.iter().all(|m| !set.contains(m)));
}

/// Threads that look up at once while the one whose miss reaches the
/// threshold builds the filter: every hit is found before, during and
/// after the build, and no miss is taken for a hit.
#[test]
fn lookups_during_the_filter_build_are_exact() {
    let key = MasterKey::generate();
    let set = IndexSet::of(vec![
        table_of_ids(&key, &ids(0, 40_000)),
        table_of_ids(&key, &ids(40_000, 20_000)),
    ]);
    let (present, absent) = (ids(0, 60_000), ids(1_000_000, 20_000));
    std::thread::scope(|s| {
        for t in 0..4usize {
            let (set, present, absent) = (&set, &present, &absent);
            s.spawn(move || {
                for i in 0..20_000 {
                    let hit = &present[(i * 3 + t * 7_919) % present.len()];
                    assert!(set.contains(hit), "{hit:?} missed in thread {t}");
                    let miss = &absent[(i + t * 5_000) % absent.len()];
                    assert!(set.lookup(miss).unwrap().is_none());
                }
            });
        }
    });
    assert!(
        set.filter_bytes() > 0,
        "four threads' misses built no filter"
    );
}

/// On a table whose records are not sorted (a hostile one: tables are
/// mapped for lookups without their MAC being checked), `find` ends
/// without panicking or overflowing, and what it finds is the id,
/// with or without a directory.
#[test]
fn find_on_unsorted_records_ends_and_never_lies() {
    let mut rand = xorshift(0x2545_f491_4f6c_dd1du64);
    for n in [17usize, 65, 300, 5000] {
        let mut bytes = vec![0u8; HEAD];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&1u32.to_le_bytes());
        bytes[16..24].copy_from_slice(&(n as u64).to_le_bytes());
        bytes.extend_from_slice(&[0u8; PACK_REC]);
        let mut ids = Vec::new();
        for i in 0..n {
            let mut rec = [0u8; ENTRY_REC];
            // Random keys, some runs of equal first words, both ends.
            let word = match i % 7 {
                0 => 0,
                1 => u64::MAX,
                2 => 0x8000_0000_0000_0000,
                _ => rand(),
            };
            rec[..8].copy_from_slice(&word.to_be_bytes());
            rec[8..16].copy_from_slice(&rand().to_le_bytes());
            ids.push(BlobId(rec[..32].try_into().unwrap()));
            bytes.extend_from_slice(&rec);
        }
        bytes.extend_from_slice(&[0u8; MAC_LEN]);
        let t = IndexTable::parse(IndexId([0; 32]), Data::Owned(bytes)).unwrap();
        for directory in [false, true] {
            if directory {
                t.build_directory();
            }
            for id in ids.iter().chain([&BlobId([0; 32]), &BlobId([0xff; 32])]) {
                if let Some(j) = t.find(id) {
                    assert_eq!(t.id_at(j), *id, "{n}, directory {directory}");
                }
            }
        }
    }
}

#[test]
fn hostile_tables_are_rejected() {
    let key = MasterKey::generate();
    let (id, mut bytes) = table_bytes(&key, &[BlobId([1; 32])]);
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(IndexTable::parse(id, Data::Owned(bytes.clone())).is_err());
    assert!(IndexTable::parse(id, Data::Owned(bytes[..10].to_vec())).is_err());
}

/// An entry whose offset or lengths no blob can have (a length past the
/// largest sealed blob, a raw length past the largest blob, an offset in
/// the pack's header, an end past 2^32 - 1) is damage to that entry,
/// named with its table before anything is read by it: by a lookup,
/// which skips the MAC, and by the table's check, whose MAC holds. The
/// largest places a blob can have are taken.
#[test]
fn an_entry_no_blob_fits_is_damage_named_with_its_table() {
    let key = MasterKey::generate();
    let at = |b: u8, offset: u32, length: u32, raw_length: u32| PackEntry {
        id: BlobId([b; 32]),
        offset,
        length,
        raw_length,
    };
    let good = [
        at(1, 12, 41, 0),
        at(2, 12, MAX_SEALED, MAX_BLOB),
        at(3, u32::MAX - MAX_SEALED, MAX_SEALED, 5),
    ];
    for e in good {
        let t = table_of_entries(&key, &[e]);
        t.check(&key).unwrap();
        let (_, loc) = t.location_at(0).unwrap();
        assert_eq!((loc.offset, loc.length), (e.offset, e.length));
    }
    let bad = [
        (at(4, 12, 0xF000_0000, 5), "length of 4026531840 bytes"),
        (at(5, 12, MAX_SEALED + 1, 5), "more than a stored blob"),
        (at(6, 12, 50, MAX_BLOB + 1), "raw length"),
        (at(7, 11, 50, 5), "offset 11, within the pack's header"),
        (at(8, u32::MAX - 40, 50, 5), "past 2^32 - 1"),
    ];
    for (e, why) in bad {
        let t = table_of_entries(&key, &[e]);
        let name = format!("index {}", t.id().short());
        for err in [
            t.entry_at(0).unwrap_err(),
            t.location_at(0).unwrap_err(),
            t.check(&key).unwrap_err(),
        ] {
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            let err = err.to_string();
            assert!(err.starts_with(&name), "{err}");
            assert!(err.contains(&format!("blob {}", e.id.short())), "{err}");
            assert!(err.contains(why), "{err}");
        }
        let set = IndexSet::of(vec![t]);
        let err = set.locate_kind(&e.id, BlobKind::Data).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
}

/// A table of `entries`, all in one data pack.
fn table_of_entries(key: &MasterKey, entries: &[PackEntry]) -> IndexTable {
    let mut b = IndexBuilder::default();
    b.add_pack(PackId([1; 32]), BlobKind::Data, entries);
    let (id, bytes) = one_table(b, key);
    IndexTable::parse(id, Data::Owned(bytes)).unwrap()
}

/// A table whose first pack record names no known kind still parses,
/// is searched for blobs of both kinds, and fails its check.
#[test]
fn a_damaged_first_pack_kind_leaves_the_table_searched_for_both() {
    let key = MasterKey::generate();
    let (_, mut bytes) = table_bytes(&key, &[BlobId([1; 32])]);
    bytes[HEAD + 32] = 9;
    let (id, bytes) = sealed_table(&key, bytes);
    let t = IndexTable::parse(id, Data::Owned(bytes)).unwrap();
    assert_eq!(t.kind(), None);
    assert!(t.holds(BlobKind::Data) && t.holds(BlobKind::Tree));
    assert_eq!(t.find(&BlobId([1; 32])), Some(0));
    let err = t.check(&key).unwrap_err().to_string();
    assert!(err.contains("unknown blob kind"), "{err}");
}

#[test]
fn compaction_bounds_the_table_count_and_keeps_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let backend = crate::backend::local::LocalBackend::new(dir.path());
    backend.create().unwrap();
    let key = MasterKey::generate();
    let tables = MAX_TABLES + 3;
    for t in 0..tables {
        let mut b = IndexBuilder::default();
        let entries: Vec<PackEntry> = (0..=t)
            .map(|i| PackEntry {
                id: BlobId(*blake3::hash(&[t as u8, i as u8]).as_bytes()),
                offset: 12 + i as u32 * 10,
                length: 10,
                raw_length: 5,
            })
            .collect();
        b.add_pack(PackId([t as u8; 32]), BlobKind::Data, &entries);
        let (id, bytes) = single(b.finish(&key, VERSION));
        backend
            .write(FileKind::Index, &id.to_hex(), &bytes)
            .unwrap();
    }
    // One damaged table is left alone, not merged into a valid one.
    let names = backend.list(FileKind::Index).unwrap();
    let path = dir.path().join("index").join(&names[0]);
    // Tables of trees count on their own: three are left alone.
    let mut trees = Vec::new();
    for t in 0..3u8 {
        let mut b = IndexBuilder::default();
        b.add_pack(PackId([200 + t; 32]), BlobKind::Tree, &[entry(t, 12)]);
        let (id, bytes) = single(b.finish(&key, VERSION));
        backend
            .write(FileKind::Index, &id.to_hex(), &bytes)
            .unwrap();
        trees.push(id);
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    std::fs::write(&path, &bytes).unwrap();

    let stats = compact(&backend, &key, VERSION, None).unwrap();
    assert_eq!(stats.damaged.len(), 1);
    assert_eq!(stats.merged, tables - 1 - KEEP_TABLES + 1);
    let set = IndexSet::load(&backend).unwrap();
    assert_eq!(set.tables().len(), KEEP_TABLES + 1 + trees.len());
    for id in &trees {
        assert!(
            set.tables().iter().any(|t| t.id() == *id),
            "tree table merged"
        );
    }
    for t in set.tables() {
        if t.id() != stats.damaged[0] {
            t.check(&key).unwrap();
        }
    }
    for t in 0..tables {
        for i in 0..=t {
            let id = BlobId(*blake3::hash(&[t as u8, i as u8]).as_bytes());
            // (The flipped byte lies in a raw length, not in these.)
            let loc = set.lookup(&id).unwrap().expect("every entry survives");
            assert_eq!(loc.pack, PackId([t as u8; 32]));
            assert_eq!(loc.offset, 12 + i as u32 * 10);
        }
    }
    // Below the threshold nothing happens.
    assert_eq!(compact(&backend, &key, VERSION, None).unwrap().merged, 0);
}

/// `bytes`, a table with room for its MAC at the end, sealed, and its name.
fn sealed_table(key: &MasterKey, mut bytes: Vec<u8>) -> (IndexId, Vec<u8>) {
    let n = bytes.len() - MAC_LEN;
    let mac = key.mac(&bytes[..n]);
    bytes[n..].copy_from_slice(&mac);
    (IndexId(file_hash(&bytes)), bytes)
}

/// A table of version 1 naming packs of both kinds (as cairn wrote them
/// before) is merged into one table of each kind, each entry in its
/// kind's, and every id is found there by kind.
#[test]
fn merging_a_table_of_both_kinds_writes_one_of_each() {
    let key = MasterKey::generate();
    // By hand: a version 2 table may not mix kinds; version 1 may.
    let mut bytes = head_record(1, 2, 3);
    bytes.extend_from_slice(&pack_record(&PackId([1; 32]), BlobKind::Data));
    bytes.extend_from_slice(&pack_record(&PackId([2; 32]), BlobKind::Tree));
    for (id, pack) in [(1u8, 0u32), (2, 1), (3, 0)] {
        bytes.extend_from_slice(&entry_record(&BlobId([id; 32]), [pack, 12, 10, 5]));
    }
    bytes.extend_from_slice(&[0; MAC_LEN]);
    // Said to be of version 2, the same table is damaged.
    let mut v2 = bytes.clone();
    v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    let (v2_id, v2) = sealed_table(&key, v2);
    let err = IndexTable::parse(v2_id, Data::Owned(v2))
        .unwrap()
        .check(&key)
        .unwrap_err();
    assert!(err.to_string().contains("of another kind"), "{err}");
    let (id, bytes) = sealed_table(&key, bytes);
    let old = IndexTable::parse(id, Data::Owned(bytes)).unwrap();
    old.check(&key).unwrap();
    assert_eq!(old.kind(), None);
    assert!(old.holds(BlobKind::Data) && old.holds(BlobKind::Tree));
    let all = |_: usize, _: &Entry| true;
    let backend = crate::backend::mem::MemBackend::default();
    let sources = [MergeSource {
        table: &old,
        keep: &all,
    }];
    let written = write_merged(&backend, &key, &sources, VERSION, &every_pack).unwrap();
    let tables: Vec<IndexTable> = written
        .iter()
        .map(|id| {
            IndexTable::parse(*id, backend.read(FileKind::Index, &id.to_hex()).unwrap()).unwrap()
        })
        .collect();
    let [trees, data] = &tables[..] else {
        panic!("{} tables", tables.len())
    };
    for t in &tables {
        t.check(&key).unwrap();
    }
    assert_eq!(
        (trees.kind(), data.kind()),
        (Some(BlobKind::Tree), Some(BlobKind::Data))
    );
    assert_eq!(
        (
            trees.len(),
            trees.pack_count(),
            data.len(),
            data.pack_count()
        ),
        (1, 1, 2, 1)
    );
    let set = IndexSet::of(tables);
    let tree = set.locate_kind(&BlobId([2; 32]), BlobKind::Tree).unwrap();
    assert_eq!(tree.pack, PackId([2; 32]));
    for chunk in [1u8, 3] {
        assert!(set.contains_kind(&BlobId([chunk; 32]), BlobKind::Data));
        assert!(!set.contains_kind(&BlobId([chunk; 32]), BlobKind::Tree));
    }
    // Merged as version 1 (in a repository an older cairn made), it
    // stays one table of both kinds.
    let v1 = single(write_merged(&backend, &key, &sources, 1, &every_pack).unwrap());
    let t = IndexTable::parse(v1, backend.read(FileKind::Index, &v1.to_hex()).unwrap()).unwrap();
    t.check(&key).unwrap();
    assert_eq!((t.kind(), t.len(), t.pack_count()), (None, 3, 2));
    let (_, two) = t.location_at(t.find(&BlobId([2; 32])).unwrap()).unwrap();
    assert_eq!((two.pack, two.kind), (PackId([2; 32]), BlobKind::Tree));
}

/// A table of `ids` (one byte each) spread over packs `packs[k]`.
/// A table of `ids` (in any order), all in one pack.
fn table_of_ids(key: &MasterKey, ids: &[BlobId]) -> IndexTable {
    let (id, bytes) = table_bytes(key, ids);
    IndexTable::parse(id, Data::Owned(bytes)).unwrap()
}

/// The name and bytes of a table of `ids`, all in one pack.
fn table_bytes(key: &MasterKey, ids: &[BlobId]) -> (IndexId, Vec<u8>) {
    let entries: Vec<PackEntry> = ids
        .iter()
        .map(|id| PackEntry {
            id: *id,
            offset: 12,
            length: 1,
            raw_length: 1,
        })
        .collect();
    let mut b = IndexBuilder::default();
    b.add_pack(PackId([1; 32]), BlobKind::Data, &entries);
    one_table(b, key)
}

fn table_of(key: &MasterKey, entries: &[(u8, u8, u32)]) -> IndexTable {
    let mut b = IndexBuilder::default();
    for &(id, pack, off) in entries {
        b.add_entry(PackId([pack; 32]), BlobKind::Data, entry(id, off));
    }
    let (id, bytes) = one_table(b, key);
    IndexTable::parse(id, Data::Owned(bytes)).unwrap()
}

/// The merged table holds each kept id once (the first source's
/// entry), names only packs a kept entry uses, checks out, and is the
/// same file whether streamed through a sink or written whole.
#[test]
fn merging_keeps_what_is_asked_once_and_streams_the_same_bytes() {
    let key = MasterKey::generate();
    let a = table_of(
        &key,
        &[(1, 10, 100), (3, 11, 300), (5, 10, 500), (7, 12, 700)],
    );
    let b = table_of(
        &key,
        &[(2, 20, 200), (3, 21, 333), (6, 11, 600), (9, 22, 900)],
    );
    // Drop id 5 of a and id 9 of b (pack 22 is then named by nothing).
    let keep_a = |_: usize, e: &Entry| e.id != BlobId([5; 32]);
    let keep_b = |_: usize, e: &Entry| e.id != BlobId([9; 32]);
    let sources = [
        MergeSource {
            table: &a,
            keep: &keep_a,
        },
        MergeSource {
            table: &b,
            keep: &keep_b,
        },
    ];
    let streamed_dir = tempfile::tempdir().unwrap();
    let streamed = crate::backend::local::LocalBackend::new(streamed_dir.path());
    streamed.create().unwrap();
    assert!(streamed.index_sink().unwrap().is_some());
    let whole = crate::backend::mem::MemBackend::default();
    assert!(whole.index_sink().unwrap().is_none());
    let mut files = Vec::new();
    for backend in [&streamed as &dyn Backend, &whole] {
        let id = single(write_merged(backend, &key, &sources, VERSION, &no_pack).unwrap());
        let data = backend.read(FileKind::Index, &id.to_hex()).unwrap();
        assert_eq!(IndexId(file_hash(&data)), id, "named by its hash");
        files.push(data.to_vec());
        let t = IndexTable::parse(id, data).unwrap();
        t.check(&key).unwrap();
        let ids: Vec<u8> = (0..t.len()).map(|i| t.id_at(i).0[0]).collect();
        assert_eq!(ids, [1, 2, 3, 6, 7]);
        let (_, three) = t.location_at(t.find(&BlobId([3; 32])).unwrap()).unwrap();
        assert_eq!((three.pack, three.offset), (PackId([11; 32]), 300));
        let packs: Vec<u8> = (0..t.pack_count())
            .map(|n| t.pack(n).unwrap().0 .0[0])
            .collect();
        let mut sorted = packs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [10, 11, 12, 20], "pack list {packs:?}");
    }
    assert_eq!(files[0], files[1]);
    // Nothing kept: nothing written.
    let none = |_: usize, _: &Entry| false;
    let empty = [MergeSource {
        table: &a,
        keep: &none,
    }];
    assert!(write_merged(&whole, &key, &empty, VERSION, &every_pack)
        .unwrap()
        .is_empty());
    assert_eq!(whole.list(FileKind::Index).unwrap().len(), 1);
}

/// Ids that agree in their first eight bytes (which the merge compares
/// as a number first) are still merged in full byte order, each once,
/// from the first source holding it.
#[test]
fn merging_orders_ids_that_share_their_first_word() {
    let key = MasterKey::generate();
    let id = |tail: u8| {
        let mut b = [0xAB; 32];
        b[31] = tail;
        BlobId(b)
    };
    let table = |entries: &[(u8, u8, u32)]| {
        let mut b = IndexBuilder::default();
        for &(tail, pack, off) in entries {
            let e = PackEntry {
                id: id(tail),
                ..entry(0, off)
            };
            b.add_entry(PackId([pack; 32]), BlobKind::Data, e);
        }
        let (tid, bytes) = single(b.finish(&key, VERSION));
        IndexTable::parse(tid, Data::Owned(bytes)).unwrap()
    };
    let a = table(&[(2, 1, 20), (5, 1, 50), (9, 1, 90)]);
    let b = table(&[(1, 2, 15), (5, 2, 55), (7, 2, 70)]);
    let all = |_: usize, _: &Entry| true;
    let sources = [
        MergeSource {
            table: &a,
            keep: &all,
        },
        MergeSource {
            table: &b,
            keep: &all,
        },
    ];
    let backend = crate::backend::mem::MemBackend::default();
    let tid = single(write_merged(&backend, &key, &sources, VERSION, &no_pack).unwrap());
    let t = IndexTable::parse(tid, backend.read(FileKind::Index, &tid.to_hex()).unwrap()).unwrap();
    t.check(&key).unwrap();
    let tails: Vec<u8> = (0..t.len()).map(|i| t.id_at(i).0[31]).collect();
    assert_eq!(tails, [1, 2, 5, 7, 9]);
    let (_, five) = t.location_at(t.find(&id(5)).unwrap()).unwrap();
    assert_eq!(
        (five.pack, five.offset),
        (PackId([1; 32]), 50),
        "first source's entry"
    );
}

/// A merged table past [`SPOOL_FROM`] for a store without an index
/// sink goes through a temporary file: the same bytes as streamed to a
/// local store.
#[test]
fn a_large_merge_spools_to_the_same_bytes() {
    let key = MasterKey::generate();
    let n = SPOOL_FROM / ENTRY_REC + 1000;
    let mut b = IndexBuilder::default();
    for i in 0..n as u32 {
        let id = BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes());
        let e = PackEntry {
            id,
            offset: 12 + i,
            length: 1,
            raw_length: 1,
        };
        b.add_entry(PackId([(i % 7) as u8; 32]), BlobKind::Data, e);
    }
    let (id, bytes) = single(b.finish(&key, VERSION));
    let big = IndexTable::parse(id, Data::Owned(bytes)).unwrap();
    let keep = |i: usize, _: &Entry| i % 1000 != 0;
    let sources = [MergeSource {
        table: &big,
        keep: &keep,
    }];
    let dir = tempfile::tempdir().unwrap();
    let local = crate::backend::local::LocalBackend::new(dir.path());
    local.create().unwrap();
    let mem = crate::backend::mem::MemBackend::default();
    let a = single(write_merged(&local, &key, &sources, VERSION, &every_pack).unwrap());
    let b = single(write_merged(&mem, &key, &sources, VERSION, &every_pack).unwrap());
    assert_eq!(a, b);
    let data = mem.read(FileKind::Index, &b.to_hex()).unwrap();
    assert!(data.len() > SPOOL_FROM, "{} bytes", data.len());
    assert_eq!(
        &data[..],
        &local.read(FileKind::Index, &a.to_hex()).unwrap()[..]
    );
    let t = IndexTable::parse(b, data).unwrap();
    t.check(&key).unwrap();
    assert_eq!(t.len(), n - n.div_ceil(1000));
}

/// A source that fails its MAC is refused, not sealed anew as valid.
#[test]
fn merging_refuses_a_damaged_source() {
    let key = MasterKey::generate();
    let a = table_of(&key, &[(1, 10, 100), (3, 11, 300)]);
    let mut bytes = a.data.to_vec();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    let damaged = IndexTable::parse(a.id(), Data::Owned(bytes)).unwrap();
    merging_fails(&key, &damaged, "MAC mismatch");
}

/// Merging `table` alone fails with an error containing `why`, and
/// writes nothing.
fn merging_fails(key: &MasterKey, table: &IndexTable, why: &str) {
    let all = |_: usize, _: &Entry| true;
    let backend = crate::backend::mem::MemBackend::default();
    let sources = [MergeSource { table, keep: &all }];
    let err = write_merged(&backend, key, &sources, VERSION, &every_pack).unwrap_err();
    assert!(err.to_string().contains(why), "{err}");
    assert!(backend.list(FileKind::Index).unwrap().is_empty());
}

/// A source whose MAC checks out but whose entries do not ascend (never
/// written by cairn) is an error, not an unsorted table sealed anew.
#[test]
fn merging_refuses_entries_out_of_order() {
    let key = MasterKey::generate();
    let a = table_of(&key, &[(1, 10, 100), (3, 10, 300), (5, 10, 500)]);
    let mut bytes = a.data.to_vec();
    let first = HEAD + PACK_REC;
    let (x, y) = (first, first + ENTRY_REC);
    let one: Vec<u8> = bytes[x..y].to_vec();
    bytes.copy_within(y..y + ENTRY_REC, x);
    bytes[y..y + ENTRY_REC].copy_from_slice(&one);
    let n = bytes.len();
    let mac = key.mac(&bytes[..n - MAC_LEN]);
    bytes[n - MAC_LEN..].copy_from_slice(&mac);
    let swapped = IndexTable::parse(a.id(), Data::Owned(bytes)).unwrap();
    assert!(swapped.check(&key).is_err());
    merging_fails(&key, &swapped, "out of order");
}

proptest::proptest! {
    /// The merge of up to four tables (ids from a small range, so
    /// runs, interleavings and ids several tables hold all occur; each
    /// table's entries in a pack of its own) with some entries dropped
    /// and some packs missing is what a map filled from the last source
    /// to the first holds, where a source whose pack is missing fills
    /// only what no source fills: every kept id once, ascending, from the
    /// first source keeping it whose pack exists, or from the first
    /// keeping it if none's does.
    #[test]
    fn merging_equals_the_first_source_wins_model(
        tables in proptest::collection::vec(
            proptest::collection::btree_set(0u8..64, 0..48),
            1..5,
        ),
        drop_every in 2usize..7,
        missing in proptest::collection::vec(proptest::bool::ANY, 4),
    ) {
        let key = MasterKey::generate();
        let built: Vec<IndexTable> = tables
            .iter()
            .enumerate()
            .map(|(src, ids)| {
                let entries: Vec<(u8, u8, u32)> =
                    ids.iter().map(|&id| (id, src as u8, 12 + u32::from(id))).collect();
                table_of(&key, &entries)
            })
            .collect();
        let keep = |i: usize, e: &Entry| (i + e.id.0[0] as usize) % drop_every != 0;
        let sources: Vec<MergeSource> = built
            .iter()
            .map(|table| MergeSource { table, keep: &keep })
            .collect();
        let mut model = std::collections::BTreeMap::new();
        for there in [false, true] {
            for (src, t) in built.iter().enumerate().rev() {
                if missing[src] == there {
                    continue;
                }
                for i in 0..t.len() {
                    let e = t.entry_at(i).unwrap();
                    if keep(i, &e) {
                        model.insert(e.id.0[0], src);
                    }
                }
            }
        }
        // A blob no existing pack holds: from the first source keeping it.
        for (id, src) in model.iter_mut() {
            if missing[*src] {
                let first = built.iter().enumerate().find(|(_, t)| {
                    t.find(&BlobId([*id; 32]))
                        .is_some_and(|i| keep(i, &t.entry_at(i).unwrap()))
                });
                *src = first.unwrap().0;
            }
        }
        let exists = |p: &PackId| Ok(!missing[p.0[0] as usize]);
        let mut merged = Vec::new();
        merge_kept(&sources, &exists, &|_, _| Ok(true), |src, e| {
            merged.push((e.id.0[0], src));
            Ok(())
        })
        .unwrap();
        proptest::prop_assert_eq!(merged, model.into_iter().collect::<Vec<_>>());
    }

    /// Merging a table of arbitrary records, sealed with a valid MAC so
    /// that only the merge's own checks stand between them and the
    /// output, with itself: an error or a table that checks out and
    /// holds every kept id, never a panic.
    #[test]
    fn merging_arbitrary_records_errs_or_checks_out(
        packs in 1u32..4,
        records in proptest::collection::vec(
            (
                0u8..16,
                proptest::num::u8::ANY,
                0u32..40,
                // Mostly a place a blob can have, else anything.
                proptest::prop_oneof![3 => 12u32..1 << 20, 1 => proptest::num::u32::ANY],
            ),
            0..40,
        ),
        sorted: bool,
        skip in 1usize..4,
    ) {
        let key = MasterKey::generate();
        let mut recs: Vec<[u8; ENTRY_REC]> = records
            .iter()
            .map(|&(a, b, pick, word)| {
                // Now and then a pack number past the pack list.
                let pack = if pick == 0 { packs } else { pick % packs };
                let mut r = [0u8; ENTRY_REC];
                r[0] = a;
                r[1] = b;
                r[32..36].copy_from_slice(&pack.to_le_bytes());
                for o in [36, 40, 44] {
                    r[o..o + 4].copy_from_slice(&word.to_le_bytes());
                }
                r
            })
            .collect();
        if sorted {
            recs.sort_by(|x, y| x[..32].cmp(&y[..32]));
            recs.dedup_by(|x, y| x[..32] == y[..32]);
        }
        let mut bytes = codec::header(MAGIC, VERSION);
        bytes.extend_from_slice(&packs.to_le_bytes());
        bytes.extend_from_slice(&(recs.len() as u64).to_le_bytes());
        for p in 0..packs {
            bytes.extend_from_slice(&[p as u8; 32]);
            bytes.extend_from_slice(&[BlobKind::Data.to_byte(), 0, 0, 0]);
        }
        for r in &recs {
            bytes.extend_from_slice(r);
        }
        let mac = key.mac(&bytes);
        bytes.extend_from_slice(&mac);
        let t = IndexTable::parse(IndexId([1; 32]), Data::Owned(bytes)).unwrap();
        let keep = |i: usize, _: &Entry| i % skip != 0;
        let sources = [
            MergeSource { table: &t, keep: &keep },
            MergeSource { table: &t, keep: &keep },
        ];
        let backend = crate::backend::mem::MemBackend::default();
        for id in write_merged(&backend, &key, &sources, VERSION, &every_pack).unwrap_or_default() {
            let data = backend.read(FileKind::Index, &id.to_hex()).unwrap();
            let merged = IndexTable::parse(id, data).unwrap();
            merged.check(&key).unwrap();
            for i in (0..t.len()).filter(|i| i % skip != 0) {
                let found = merged.find(&t.id_at(i));
                proptest::prop_assert!(found.is_some(), "kept entry {i} missing");
            }
        }
        if sorted && (0..t.len()).all(|i| t.entry_at(i).is_ok()) {
            // Sorted records naming listed packs always merge.
            let merged = write_merged(&backend, &key, &sources, VERSION, &every_pack);
            proptest::prop_assert!(merged.is_ok(), "{merged:?}");
        }
    }
}

/// From a remote store the tables are fetched several at once, and
/// every one arrives.
#[test]
fn remote_index_tables_are_fetched_at_once() {
    use crate::backend::testing::{Hooked, Hooks};
    use std::sync::{Condvar, Mutex};
    /// Each read waits (up to 5 s) until another is in flight too.
    #[derive(Default)]
    struct Remote {
        in_flight: Mutex<(usize, usize)>,
        changed: Condvar,
    }
    impl Hooks for Remote {
        fn prefers_ranges(&self, _: &dyn Backend) -> bool {
            true
        }
        fn read(&self, _: FileKind, _: &str) -> Option<Result<Data>> {
            let mut g = self.in_flight.lock().unwrap();
            g.0 += 1;
            g.1 = g.1.max(g.0);
            self.changed.notify_all();
            let deadline = std::time::Duration::from_secs(5);
            let (mut g, _) = self
                .changed
                .wait_timeout_while(g, deadline, |g| g.1 < 2)
                .unwrap();
            g.0 -= 1;
            None
        }
    }
    let key = MasterKey::generate();
    let backend = Hooked {
        inner: crate::backend::mem::MemBackend::default(),
        hooks: Remote::default(),
    };
    let mut ids = Vec::new();
    for t in 0..5u8 {
        let mut b = IndexBuilder::default();
        let entry = PackEntry {
            id: BlobId([t; 32]),
            offset: 12,
            length: 10,
            raw_length: 5,
        };
        b.add_pack(PackId([t; 32]), BlobKind::Data, &[entry]);
        let (id, bytes) = single(b.finish(&key, VERSION));
        backend
            .inner
            .write(FileKind::Index, &id.to_hex(), &bytes)
            .unwrap();
        ids.push(BlobId([t; 32]));
    }
    let set = IndexSet::load(&backend).unwrap();
    assert_eq!(set.tables().len(), 5);
    for id in &ids {
        assert_eq!(set.lookup(id).unwrap().unwrap().pack, PackId(id.0));
    }
    assert!(backend.hooks.in_flight.lock().unwrap().1 >= 2);
}

/// A set searches only the tables of a blob's kind for it (version 2
/// tables hold one kind each), and reading falls back to the other kind's
/// tables, where a repository written before may hold a file's chunk as
/// the identical tree.
#[test]
fn lookups_by_kind_search_only_that_kinds_tables() {
    let key = MasterKey::generate();
    let mut b = IndexBuilder::default();
    b.add_pack(PackId([1; 32]), BlobKind::Tree, &[entry(1, 12)]);
    b.add_pack(
        PackId([2; 32]),
        BlobKind::Data,
        &[entry(2, 12), entry(3, 40)],
    );
    let tables = tables_of(b, &key);
    assert_eq!(tables.len(), 2);
    let set = IndexSet::of(tables);
    let (tree, chunk) = (BlobId([1; 32]), BlobId([2; 32]));
    assert!(set.contains_kind(&tree, BlobKind::Tree));
    assert!(!set.contains_kind(&tree, BlobKind::Data));
    assert!(set.contains_kind(&chunk, BlobKind::Data));
    assert!(!set.contains_kind(&chunk, BlobKind::Tree));
    assert!(set.contains(&tree) && set.contains(&chunk));
    let loc = set.locate_kind(&tree, BlobKind::Tree).unwrap();
    assert_eq!((loc.pack, loc.kind), (PackId([1; 32]), BlobKind::Tree));
    // Read as the other kind: found through the fallback.
    let loc = set.locate_kind(&chunk, BlobKind::Tree).unwrap();
    assert_eq!((loc.pack, loc.offset), (PackId([2; 32]), 12));
    let missing = set
        .locate_kind(&BlobId([9; 32]), BlobKind::Data)
        .unwrap_err();
    assert!(
        missing.to_string().contains("an index entry for blob"),
        "{missing}"
    );
}

/// A lookup told which packs it may use skips entries naming others,
/// in the order `locate_kind` searches, and finds nothing when only
/// refused packs hold the blob.
#[test]
fn lookups_skip_entries_in_refused_packs() {
    let key = MasterKey::generate();
    let (lost, kept) = (PackId([1; 32]), PackId([2; 32]));
    // The table naming the lost pack is the larger, so searched first.
    let mut big = IndexBuilder::default();
    big.add_pack(lost, BlobKind::Tree, &[entry(5, 12), entry(6, 30)]);
    let mut small = IndexBuilder::default();
    small.add_pack(kept, BlobKind::Tree, &[entry(5, 40)]);
    let mut tables = tables_of(big, &key);
    tables.extend(tables_of(small, &key));
    let set = IndexSet::of(tables);
    let five = BlobId([5; 32]);
    assert_eq!(set.locate_kind(&five, BlobKind::Tree).unwrap().pack, lost);
    let usable = |p: &PackId| *p != lost;
    for kind in [BlobKind::Tree, BlobKind::Data] {
        let loc = set
            .locate_kind_where(&five, kind, &usable)
            .unwrap()
            .unwrap();
        assert_eq!((loc.pack, loc.offset), (kept, 40));
    }
    assert!(set
        .contains_kind_where(&five, BlobKind::Tree, &usable)
        .unwrap());
    assert!(!set
        .contains_kind_where(&five, BlobKind::Data, &usable)
        .unwrap());
    let six = BlobId([6; 32]);
    assert!(set.contains_kind(&six, BlobKind::Tree));
    assert!(!set
        .contains_kind_where(&six, BlobKind::Tree, &usable)
        .unwrap());
    assert_eq!(
        set.locate_kind_where(&six, BlobKind::Tree, &usable)
            .unwrap(),
        None
    );
}

/// Hands `write` tables 2 to [`MAX_TABLES`], larger each than the one
/// before, each of a pack of its own: with two tables before them, a
/// compaction's threshold is passed, and those two are merged first.
fn tables_past_the_threshold(write: impl Fn(IndexBuilder)) {
    for t in 2..=MAX_TABLES {
        let entries: Vec<PackEntry> = (0..=t)
            .map(|i| PackEntry {
                id: BlobId(*blake3::hash(&[t as u8, i as u8]).as_bytes()),
                offset: 12,
                length: 10,
                raw_length: 5,
            })
            .collect();
        let mut b = IndexBuilder::default();
        b.add_pack(PackId([t as u8; 32]), BlobKind::Data, &entries);
        write(b);
    }
}

/// Compaction merges a blob's two entries into the one naming the pack
/// that exists, though the table naming the lost pack comes first (it
/// is the smaller), and asks the store of no other pack.
#[test]
fn compaction_keeps_the_entry_whose_pack_exists() {
    use crate::backend::testing::{Hooked, Hooks};
    /// Counts the packs whose size is asked.
    #[derive(Default)]
    struct Sizes(std::sync::Mutex<Vec<String>>);
    impl Hooks for Sizes {
        fn size(&self, kind: FileKind, name: &str) -> Option<Result<u64>> {
            if kind == FileKind::Pack {
                self.0.lock().unwrap().push(name.to_string());
            }
            None
        }
    }
    let backend = Hooked {
        inner: crate::backend::mem::MemBackend::default(),
        hooks: Sizes::default(),
    };
    backend.create().unwrap();
    let key = MasterKey::generate();
    let (lost, kept) = (PackId([250; 32]), PackId([251; 32]));
    let blob = BlobId([7; 32]);
    let at = |off: u32| PackEntry {
        id: blob,
        offset: off,
        length: 10,
        raw_length: 5,
    };
    let write = |b: IndexBuilder| {
        let (id, bytes) = single(b.finish(&key, VERSION));
        backend
            .write(FileKind::Index, &id.to_hex(), &bytes)
            .unwrap();
    };
    let mut b = IndexBuilder::default();
    b.add_pack(lost, BlobKind::Data, &[at(12)]);
    write(b);
    let mut b = IndexBuilder::default();
    b.add_pack(kept, BlobKind::Data, &[at(40), entry(8, 60)]);
    write(b);
    backend
        .write(FileKind::Pack, &kept.to_hex(), b"a pack")
        .unwrap();
    // Larger tables, each of its own pack, to pass the threshold.
    tables_past_the_threshold(write);
    let before = IndexSet::load(&backend).unwrap();
    assert_eq!(before.tables().len(), MAX_TABLES + 1);

    let stats = compact(&backend, &key, VERSION, None).unwrap();
    assert!(stats.merged > 2, "{stats:?}");
    let set = IndexSet::load(&backend).unwrap();
    let loc = set.lookup(&blob).unwrap().unwrap();
    assert_eq!((loc.pack, loc.offset), (kept, 40));
    assert_eq!(set.lookup(&BlobId([8; 32])).unwrap().unwrap().pack, kept);
    let mut asked = backend.hooks.0.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, [lost.to_hex(), kept.to_hex()]);
}

/// A compaction under a lock that expired (its backup suspended past the
/// lock's staleness, while a gc may have removed tables and packs) writes
/// no merged table and removes no source.
#[test]
fn compaction_under_an_expired_lock_changes_nothing() {
    let backend: std::sync::Arc<dyn Backend> =
        std::sync::Arc::new(crate::backend::mem::MemBackend::default());
    let key = MasterKey::generate();
    for t in 0..MAX_TABLES + 3 {
        let mut b = IndexBuilder::default();
        let e = PackEntry {
            id: BlobId(*blake3::hash(&[t as u8]).as_bytes()),
            offset: 12,
            length: 10,
            raw_length: 5,
        };
        b.add_pack(PackId([t as u8; 32]), BlobKind::Data, &[e]);
        let (id, bytes) = single(b.finish(&key, VERSION));
        backend
            .write(FileKind::Index, &id.to_hex(), &bytes)
            .unwrap();
    }
    let mut before = backend.list(FileKind::Index).unwrap();
    before.sort();
    let expired = crate::repo::lock::acquire_aged(
        backend.clone(),
        &key,
        std::time::Duration::from_secs(40 * 60),
    );
    let e = compact(&*backend, &key, VERSION, Some(&expired)).unwrap_err();
    assert!(e.to_string().contains("index tables not merged"), "{e}");
    let mut after = backend.list(FileKind::Index).unwrap();
    after.sort();
    assert_eq!(after, before);
    drop(expired);
    // Under a live lock, the same compaction merges.
    let live = crate::repo::lock::acquire_aged(backend.clone(), &key, Default::default());
    assert!(
        compact(&*backend, &key, VERSION, Some(&live))
            .unwrap()
            .merged
            > 0
    );
}

/// Compaction merges the two entries of a blob stored twice into the one
/// whose copy opens, though the table naming the damaged copy comes
/// first: until December 2026 it kept the first source's, and the pack
/// of the intact copy, named by no table any more, went to the next gc.
#[test]
fn compaction_keeps_the_entry_whose_copy_is_intact() {
    let store = crate::backend::testing::Hooked {
        inner: crate::backend::mem::MemBackend::default(),
        hooks: crate::backend::testing::Outage::default(),
    };
    let backend = &store;
    backend.create().unwrap();
    let key = MasterKey::generate();
    let plain = b"the blob stored twice".to_vec();
    let blob = key.blob_id(&plain);
    let mut buf = Vec::new();
    let sealed = crate::pack::seal_blob(&key, &plain, 3, &mut buf).to_vec();
    let (damaged, intact) = (PackId([250; 32]), PackId([251; 32]));
    // Each pack: 12 bytes of padding, then the copy; one byte flipped
    // in the damaged one's.
    let mut bytes = vec![0u8; 12];
    bytes.extend_from_slice(&sealed);
    backend
        .write(FileKind::Pack, &intact.to_hex(), &bytes)
        .unwrap();
    bytes[12 + sealed.len() / 2] ^= 1;
    backend
        .write(FileKind::Pack, &damaged.to_hex(), &bytes)
        .unwrap();
    let copy = PackEntry {
        id: blob,
        offset: 12,
        length: sealed.len() as u32,
        raw_length: plain.len() as u32,
    };
    let write = |b: IndexBuilder| {
        let (id, bytes) = single(b.finish(&key, VERSION));
        backend
            .write(FileKind::Index, &id.to_hex(), &bytes)
            .unwrap();
    };
    // The damaged copy's table is the smaller, merged first.
    let mut b = IndexBuilder::default();
    b.add_pack(damaged, BlobKind::Data, &[copy]);
    write(b);
    let mut b = IndexBuilder::default();
    b.add_pack(intact, BlobKind::Data, &[copy, entry(8, 60)]);
    write(b);
    tables_past_the_threshold(write);
    // A store that lists the intact copy's pack, while a read of it finds
    // no such pack, stops the merge: the damaged copy was kept, and the
    // intact pack, named by no table, went to the next gc.
    let tables = backend.list(FileKind::Index).unwrap();
    store.hooks.begin_vanishing_for(vec![intact.to_hex()]);
    let e = compact(backend, &key, VERSION, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("finds no such pack"), "{e}");
    store.hooks.end();
    let mut now = backend.list(FileKind::Index).unwrap();
    now.sort();
    let mut was = tables;
    was.sort();
    assert_eq!(now, was);

    let stats = compact(backend, &key, VERSION, None).unwrap();
    assert!(stats.merged > 2, "{stats:?}");
    let set = IndexSet::load(backend).unwrap();
    assert_eq!(set.lookup(&blob).unwrap().unwrap().pack, intact);
}
