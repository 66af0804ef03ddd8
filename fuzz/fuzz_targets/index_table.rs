//! Index tables: `IndexTable::parse` on arbitrary bytes, and on the input
//! wrapped in a size-consistent header and a valid MAC so that `find`,
//! `location_at`, `check` and `write_merged` (the merge gc and compaction
//! run, in both table formats) see arbitrary records.
#![no_main]

mod common;

use cairn::backend::mem::MemBackend;
use cairn::backend::{Backend, Data, FileKind};
use cairn::id::{BlobId, IndexId};
use cairn::index::{write_merged, Entry, IndexTable, MergeSource};
use cairn::pack::BlobKind;
use libfuzzer_sys::fuzz_target;

const PACK_REC: usize = 36;
const ENTRY_REC: usize = 48;

fn exercise(bytes: Vec<u8>) {
    let Ok(t) = IndexTable::parse(IndexId([0; 32]), Data::Owned(bytes)) else {
        return;
    };
    for n in 0..t.pack_count() {
        let _ = t.pack(n);
    }
    for i in 0..t.len() {
        let id = t.id_at(i);
        if let Ok((got, _)) = t.location_at(i) {
            assert_eq!(got, id);
        }
        if let Some(j) = t.find(&id) {
            assert_eq!(t.id_at(j), id);
        }
    }
    for probe in [[0u8; 32], [0x80; 32], [0xff; 32]] {
        if let Some(j) = t.find(&BlobId(probe)) {
            assert_eq!(t.id_at(j), BlobId(probe));
        }
    }
    // Merged with itself, keeping some entries: an error or a table that
    // checks out, never a panic.
    let backend = MemBackend::default();
    let keep = |i: usize, _: &Entry| i % 3 != 1;
    let sources = [
        MergeSource {
            table: &t,
            keep: &keep,
        },
        MergeSource {
            table: &t,
            keep: &keep,
        },
    ];
    for version in [1, 2] {
        let merged = write_merged(&backend, common::key(), &sources, version, &|_| Ok(true));
        for id in merged.unwrap_or_default() {
            let data = backend
                .read(FileKind::Index, &id.to_hex())
                .expect("written");
            let merged = IndexTable::parse(id, data).expect("a merged table parses");
            merged
                .check(common::key())
                .expect("a merged table checks out");
            // Merged tables of version 2 hold one kind each.
            assert_eq!(merged.kind().is_some(), version == 2);
        }
    }
    let _ = (t.holds(BlobKind::Data), t.holds(BlobKind::Tree));
    if t.check(common::key()).is_ok() {
        // Checked tables are strictly sorted: every id is found where it
        // is; and hold the kinds their packs are of.
        for i in 0..t.len() {
            assert_eq!(t.find(&t.id_at(i)), Some(i));
        }
        for n in 0..t.pack_count() {
            assert!(t.holds(t.pack(n).expect("checked").1));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data.to_vec());

    let Some((&p, rest)) = data.split_first() else {
        return;
    };
    let packs = usize::from(p % 8);
    if rest.len() < packs * PACK_REC {
        return;
    }
    let entries = (rest.len() - packs * PACK_REC) / ENTRY_REC;
    // Both format versions: 1 may name packs of both kinds, 2 of one.
    let mut table = b"CAIRNIDX".to_vec();
    table.extend_from_slice(&(1 + u32::from(p & 8 != 0)).to_le_bytes());
    table.extend_from_slice(&(packs as u32).to_le_bytes());
    table.extend_from_slice(&(entries as u64).to_le_bytes());
    table.extend_from_slice(&rest[..packs * PACK_REC + entries * ENTRY_REC]);
    let mac = common::key().mac(&table);
    table.extend_from_slice(&mac);
    exercise(table);
});
