//! Large index tables, which the `index_table` target practically never
//! builds: a table gets a directory (`IndexTable::build_directory`) and
//! its lookups without one read windows of entries only from 256 entries
//! (12 KiB of records) up. The input is expanded deterministically into
//! one to three tables of 256 to 1,279 entries each, with a valid header
//! and MAC: ids spread evenly, clustered, sharing their first 8 bytes in
//! runs, or evenly stepped; then edited byte by byte as the input says,
//! and sorted (or, as the input says, left as they are: damaged tables
//! parse too, and are searched until `verify` reports them); tables share
//! some ids, of different kinds and locations.
//!
//! Asserted: `check` passes exactly when the ids ascend strictly; in such
//! a table every id is found at its position and no other id is found —
//! by the windowed search (on fresh copies of the table, each taking
//! fewer lookups than build a directory), by the directory, and through
//! an `IndexSet` of all tables (`locate_kind`, `contains_kind`,
//! `lookup`), which must answer from the first table its search order
//! reaches, before and after its directories and its filter of misses
//! are built; the directory is built by the lookup the docs say; in any
//! table, a lookup finds only an entry holding the id it was given.
#![no_main]

mod common;

use std::collections::HashMap;

use cairn::backend::mem::MemBackend;
use cairn::backend::{Backend, Data, FileKind};
use cairn::id::{BlobId, IndexId, PackId};
use cairn::index::{IndexSet, IndexTable, Location};
use cairn::pack::BlobKind;
use libfuzzer_sys::fuzz_target;

/// The input, read a byte at a time (zeros past its end).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn uint(&mut self, n: usize) -> u64 {
        let (v, rest) = common::take_uint(self.0, n);
        self.0 = rest;
        v
    }
}

/// splitmix64: ids as evenly spread as keyed hashes, from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn id(&mut self, first: u64) -> [u8; 32] {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&first.to_be_bytes());
        for w in id[8..].chunks_mut(8) {
            w.copy_from_slice(&self.next().to_le_bytes());
        }
        id
    }
}

/// One table as built: its packs, and its entries in file order.
struct Spec {
    version: u32,
    packs: Vec<(PackId, BlobKind)>,
    entries: Vec<([u8; 32], [u32; 4])>,
    /// The ids ascend strictly.
    sorted: bool,
}

impl Spec {
    fn bytes(&self) -> Vec<u8> {
        let mut t = b"CAIRNIDX".to_vec();
        t.extend_from_slice(&self.version.to_le_bytes());
        t.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        t.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (id, kind) in &self.packs {
            t.extend_from_slice(&id.0);
            t.extend_from_slice(&[kind.to_byte(), 0, 0, 0]);
        }
        for (id, fields) in &self.entries {
            t.extend_from_slice(id);
            for f in fields {
                t.extend_from_slice(&f.to_le_bytes());
            }
        }
        let mac = common::key().mac(&t);
        t.extend_from_slice(&mac);
        t
    }

    /// Where entry `i` says its blob is; an error for a pack number past
    /// the pack list.
    fn location(&self, i: usize) -> Option<Location> {
        let [pack, offset, length, raw_length] = self.entries[i].1;
        let &(pack, kind) = self.packs.get(pack as usize)?;
        Some(Location {
            pack,
            kind,
            offset,
            length,
            raw_length,
        })
    }

    /// The position of `id`, if the table holds it (only for a sorted
    /// table, which a search is exact on).
    fn position(&self, id: &[u8; 32]) -> Option<usize> {
        self.entries.binary_search_by(|(e, _)| e.cmp(id)).ok()
    }
}

/// Expands part of the input into table `k`, sharing some of the ids of
/// `first` (the first table) if given.
fn spec(input: &mut Input<'_>, k: u8, first: Option<&Spec>) -> Spec {
    let n = 256 + (input.uint(2) % 1024) as usize;
    let flags = input.byte();
    let version = 1 + u32::from(flags & 1);
    let kind = if flags & 2 == 0 {
        BlobKind::Data
    } else {
        BlobKind::Tree
    };
    let packs: Vec<(PackId, BlobKind)> = (0..1 + input.byte() % 3)
        .map(|p| {
            let mut id = [k; 32];
            id[1] = p;
            // Version 1 tables may name packs of both kinds.
            let kind = match (version, p % 2) {
                (1, 1) => BlobKind::Tree,
                (1, _) => BlobKind::Data,
                _ => kind,
            };
            (PackId(id), kind)
        })
        .collect();
    let mut rng = Rng(input.uint(8));
    let mode = input.byte();
    let mask = u64::MAX >> (input.byte() % 64);
    let base = input.uint(8);
    let run = 1 + usize::from(input.byte() % 64);
    let step = input.uint(8) | 1;
    let mut ids: Vec<[u8; 32]> = (0..n)
        .map(|i| {
            let first = match mode % 4 {
                // Evenly spread, as keyed hashes are.
                0 => rng.next(),
                // Clustered: a narrow range of first words.
                1 => base.wrapping_add(rng.next() & mask),
                // Runs of ids equal in their first 8 bytes.
                2 => base.wrapping_add((i / run) as u64).wrapping_mul(step),
                // Evenly stepped.
                _ => base.wrapping_add((i as u64).wrapping_mul(step)),
            };
            rng.id(first)
        })
        .collect();
    // Some ids of the first table again (of another kind, maybe, and at
    // another place).
    if let Some(first) = first {
        let share = 1 + usize::from(input.byte() % 16);
        for (i, (id, _)) in first.entries.iter().enumerate().step_by(share) {
            ids[i % n] = *id;
        }
    }
    // Edits: (entry, byte, value).
    for _ in 0..input.byte() % 32 {
        let (i, at, v) = (input.uint(2) as usize % n, input.byte() % 32, input.byte());
        ids[i][usize::from(at)] = v;
    }
    if mode & 0x80 == 0 {
        ids.sort_unstable();
        ids.dedup();
    }
    let sorted = ids.windows(2).all(|w| w[0] < w[1]);
    // Pack numbers past the list, as damage may leave them.
    let bad_pack = input.byte();
    let entries = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let pack = if bad_pack != 0 && i % usize::from(bad_pack) == 0 {
                packs.len() as u32 + (i as u32 % 3)
            } else {
                i as u32 % packs.len() as u32
            };
            let i = i as u32;
            (id, [pack, 12 + i * 100, 100, i ^ u32::from(k)])
        })
        .collect();
    Spec {
        version,
        packs,
        entries,
        sorted,
    }
}

/// Ids the table most likely lacks: each id nudged in its last or its
/// first 8 bytes, and the ends of the id space.
fn absent_probes(spec: &Spec) -> Vec<[u8; 32]> {
    let mut probes = vec![[0u8; 32], [0xff; 32]];
    for (id, _) in &spec.entries {
        let mut last = *id;
        last[31] ^= 1;
        let mut first = *id;
        let word = u64::from_be_bytes(id[..8].try_into().expect("8"));
        first[..8].copy_from_slice(&word.wrapping_add(1).to_be_bytes());
        probes.extend([last, first]);
    }
    probes
}

/// What `find` may answer for `id`: in a sorted table exactly its
/// position; in any table only an entry holding `id`.
fn check_found(t: &IndexTable, spec: &Spec, id: &[u8; 32], found: Option<usize>) {
    if spec.sorted {
        assert_eq!(found, spec.position(id), "lookup of {}", BlobId(*id));
    }
    if let Some(j) = found {
        assert_eq!(t.id_at(j).0, *id);
        assert_eq!(t.location_at(j).ok().map(|(_, l)| l), spec.location(j));
    }
}

fn parse(bytes: &[u8]) -> IndexTable {
    IndexTable::parse(IndexId([0; 32]), Data::Owned(bytes.to_vec())).expect("a consistent table")
}

/// One table on its own, searched every way.
fn exercise_table(spec: &Spec, bytes: &[u8]) {
    let key = common::key();
    let n = spec.entries.len();
    let t = parse(bytes);
    assert_eq!(t.len(), n);
    assert_eq!(t.check(key).is_ok(), spec.sorted);

    let present: Vec<[u8; 32]> = spec.entries.iter().map(|(id, _)| *id).collect();
    let absent = absent_probes(spec);
    let all: Vec<&[u8; 32]> = present.iter().chain(&absent).collect();

    if n < 256 {
        // Deduplicated below the size that gets a directory.
        for id in all {
            check_found(&t, spec, id, t.find(&BlobId(*id)));
        }
        return;
    }

    // Without a directory: the windowed search, on fresh copies of the
    // table, each given one lookup fewer than builds its directory.
    let before = n / 16 - 1;
    for batch in all.chunks(before) {
        let t = parse(bytes);
        for id in batch {
            check_found(&t, spec, id, t.find(&BlobId(**id)));
        }
        assert_eq!(t.directory_bytes(), 0);
        assert_eq!(t.probes(), batch.len());
        if batch.len() == before {
            // The next lookup builds it.
            let id = present[batch.len() % n];
            check_found(&t, spec, &id, t.find(&BlobId(id)));
            assert!(t.directory_bytes() > 0);
        }
    }

    // With one.
    t.build_directory();
    assert!(t.directory_bytes() > 0);
    for id in all {
        check_found(&t, spec, id, t.find(&BlobId(*id)));
    }
}

/// Whether a table may index blobs of `kind` (see `IndexTable::holds`).
fn holds(s: &Spec, kind: BlobKind) -> bool {
    s.version == 1 || s.packs[0].1 == kind
}

/// The answer of an `IndexSet` of `tables` (in the set's order) to
/// `locate_kind(id, kind)`, as a model: the first table holding `id`
/// among those of `kind`, then among the others; `None` for not found,
/// `Some(None)` for an entry naming no pack.
fn model_locate(tables: &[&Spec], id: &[u8; 32], kind: BlobKind) -> Option<Option<Location>> {
    let own = tables.iter().filter(|s| holds(s, kind));
    let other = tables.iter().filter(|s| !holds(s, kind));
    own.chain(other)
        .find_map(|s| s.position(id).map(|i| s.location(i)))
}

/// Every table in one `IndexSet`, loaded from a store.
fn exercise_set(specs: &[Spec], tables: &[Vec<u8>], misses: bool) {
    let backend = MemBackend::default();
    for (k, bytes) in tables.iter().enumerate() {
        let mut id = [0u8; 32];
        id[31] = k as u8;
        backend
            .write(FileKind::Index, &IndexId(id).to_hex(), bytes)
            .expect("memory write");
    }
    let set = IndexSet::load(&backend).expect("consistent tables load");
    assert_eq!(set.tables().len(), specs.len());
    // The specs in the order the set searches its tables.
    let order: Vec<&Spec> = set
        .tables()
        .iter()
        .map(|t| &specs[usize::from(t.id().0[31])])
        .collect();
    let exact = order.iter().all(|s| s.sorted);
    // Every place the tables give each id.
    let mut places: HashMap<[u8; 32], Vec<Location>> = HashMap::new();
    for s in specs {
        for i in 0..s.entries.len() {
            if let Some(loc) = s.location(i) {
                places.entry(s.entries[i].0).or_default().push(loc);
            }
        }
    }

    let ask = |id: &[u8; 32]| {
        let blob = BlobId(*id);
        for kind in [BlobKind::Data, BlobKind::Tree] {
            let got = set.locate_kind(&blob, kind);
            if exact {
                match (model_locate(&order, id, kind), &got) {
                    (None, Err(e)) => assert!(e.is_not_found(), "{e}"),
                    (Some(Some(want)), Ok(loc)) => assert_eq!(*loc, want),
                    (Some(None), Err(e)) => assert!(!e.is_not_found(), "{e}"),
                    (want, got) => panic!("locate_kind {blob} as {kind:?}: {got:?}, not {want:?}"),
                }
            }
            if let Ok(loc) = got {
                // Whatever the tables' order, an entry holding this id.
                assert!(places.get(id).is_some_and(|p| p.contains(&loc)));
            }
            let contains = set.contains_kind(&blob, kind);
            if exact {
                let want = order
                    .iter()
                    .any(|s| holds(s, kind) && s.position(id).is_some());
                assert_eq!(contains, want, "contains_kind {blob} as {kind:?}");
            }
        }
        if exact {
            let any = order.iter().any(|s| s.position(id).is_some());
            assert_eq!(set.contains(&blob), any);
            assert_eq!(set.lookup(&blob).is_ok_and(|l| l.is_none()), !any);
        }
    };

    // A sample of each table's ids (every table was searched for all of
    // its own above), and every id more than one table holds.
    let sample = |ids: Vec<[u8; 32]>| {
        let step = (ids.len() / 256).max(1);
        ids.into_iter().step_by(step).collect::<Vec<_>>()
    };
    let mut present: Vec<[u8; 32]> = specs
        .iter()
        .flat_map(|s| sample(s.entries.iter().map(|(id, _)| *id).collect()))
        .collect();
    present.extend(
        places
            .iter()
            .filter(|(_, p)| p.len() > 1)
            .map(|(id, _)| *id),
    );
    let absent: Vec<[u8; 32]> = specs
        .iter()
        .flat_map(|s| sample(absent_probes(s)))
        .collect();
    for id in present.iter().chain(&absent) {
        ask(id);
    }
    set.build_directories(usize::MAX);
    for id in present.iter().chain(&absent) {
        ask(id);
    }
    if misses {
        // Enough misses to build the filter of ids: it must not hide one.
        let mut rng = Rng(present.len() as u64);
        for _ in 0..=set.filter_after() {
            if set.filter_bytes() > 0 {
                break;
            }
            let first = rng.next();
            set.contains(&BlobId(rng.id(first)));
        }
        assert!(set.filter_bytes() > 0);
        for id in present.iter().chain(&absent) {
            ask(id);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let count = 1 + input.byte() % 3;
    let misses = input.byte() & 1 == 1;
    let mut specs: Vec<Spec> = Vec::new();
    for k in 0..count {
        let s = spec(&mut input, k, specs.first());
        specs.push(s);
    }
    let tables: Vec<Vec<u8>> = specs.iter().map(Spec::bytes).collect();
    for (s, bytes) in specs.iter().zip(&tables) {
        exercise_table(s, bytes);
    }
    exercise_set(&specs, &tables, misses);
});
