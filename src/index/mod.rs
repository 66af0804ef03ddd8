//! Index tables: blob id → pack, offset, length, searched in place.
//!
//! An index table is an immutable file of fixed-width records sorted by blob
//! id, so it can be memory-mapped and searched in place without loading it
//! into a heap structure:
//!
//! ```text
//! "CAIRNIDX" | u32 version | u32 pack count P | u64 entry count E
//! P × (pack id (32) | u8 blob kind | 3 zero bytes)          36 bytes each
//!                                     (version 2: one kind in all P)
//! E × (blob id (32) | u32 pack number | u32 offset | u32 length | u32 raw length)
//!                                                         48 bytes each, ascending id
//! MAC (32) = keyed BLAKE3 (index MAC key) of all preceding bytes
//! ```
//! Lookups trust only what they can check cheaply (sizes, pack numbers,
//! an entry's offset and lengths against what a pack can hold); a wrong
//! entry can at worst send a read of at most [`MAX_SEALED`] bytes to the
//! wrong place, which reading detects, never make wrong bytes pass: every blob is authenticated and
//! re-hashed when read (and a restore then looks the blob up in its pack's
//! own header). `verify` checks the MAC and ordering of every table.
//!
//! `table` maps and searches one table, `set` searches all of a
//! repository's together, `merge` merges tables as they stream (compaction
//! and gc's rewrite) and `builder` makes one from pack headers; the record
//! encodings they share are here.

use std::cmp::Ordering;

use serde::Serialize;

use crate::backend::{Backend, Data, FileKind, FileSink};
use crate::codec;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name, BlobId, IndexId, PackId};
use crate::pack::{BlobKind, PackEntry, HEADER_LEN, MAX_BLOB, MAX_SEALED};

const MAGIC: &[u8; 8] = b"CAIRNIDX";
/// Format version of index tables. Version 2 tables index blobs of one
/// kind each (every pack they name is a data pack, or every one a tree
/// pack), so a lookup of a tree searches only tables of trees; version 1
/// tables may name both. Both are read; a repository's config says which
/// its tables are written in (`Config::index_version`), so that the
/// cairn that made a repository can still read it.
pub const VERSION: u32 = 2;
const HEAD: usize = 24;
const PACK_REC: usize = 36;
const ENTRY_REC: usize = 48;
const MAC_LEN: usize = 32;

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The pack holding it.
    pub pack: PackId,
    /// Kind of the pack (and so of the blob).
    pub kind: BlobKind,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// One entry of an index table as stored (see [`IndexTable::entry_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The blob.
    pub id: BlobId,
    /// Its pack, as a number in the table's pack list.
    pub pack: u32,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// How a lookup that finds no entry begins its error ("… for blob ID"),
/// which callers recognise to say what mends it.
pub(crate) const NOT_INDEXED: &str = "an index entry for blob";

/// What tells what a blob the index lacks loses, and what mends it.
pub(crate) const LACKING_MENDS: &str = "`cairn verify` names what that loses, and `cairn repair \
     index` rebuilds the index from the packs; where a repair left it out already (its pack \
     lost or damaged), no pack holds it: a backup of the sources stores again what they still \
     have, and `cairn repair snapshots` writes copies of the snapshots without the rest";

/// [`LACKING_MENDS`] for a tree, read through this host's cache where
/// `cached`: a copy of its pack there (set aside once the store and the
/// index lost it) may hold it, which `verify` names and `repair index`
/// puts back before anything else is done.
pub(crate) fn tree_lacking_mends(cached: bool) -> String {
    match cached {
        true => format!(
            "{LACKING_MENDS}; but first, this host's cache may hold a copy of its pack (kept 30 \
             days after a repair elsewhere removed it): `cairn verify` here names one, and \
             `cairn repair index` here puts it back"
        ),
        false => LACKING_MENDS.to_string(),
    }
}

/// Whether `e` is a lookup's "not in the index".
pub(crate) fn is_lacking(e: &crate::error::Error) -> bool {
    matches!(e, crate::error::Error::NotFound(what) if what.starts_with(NOT_INDEXED))
}

mod builder;
mod filter;
mod merge;
mod set;
mod table;
#[cfg(test)]
mod tests;

pub use builder::IndexBuilder;
pub use filter::IdFilter;
pub(crate) use merge::SPOOL_FROM;
pub use merge::{compact, pack_in_store, write_merged, CompactStats, MergeSource, MAX_TABLES};
pub use set::IndexSet;
pub use table::IndexTable;

/// The head of a table of format `version` of `packs` packs and
/// `entries` entries.
fn head_record(version: u32, packs: usize, entries: u64) -> Vec<u8> {
    let mut head = codec::header(MAGIC, version);
    head.extend_from_slice(&(packs as u32).to_le_bytes());
    head.extend_from_slice(&entries.to_le_bytes());
    head
}

/// A pack's record in a table's pack list.
fn pack_record(id: &PackId, kind: BlobKind) -> [u8; PACK_REC] {
    let mut rec = [0u8; PACK_REC];
    rec[..32].copy_from_slice(&id.0);
    rec[32] = kind.to_byte();
    rec
}

/// An entry's record: blob id, then pack number, offset, length and raw
/// length.
fn entry_record(id: &BlobId, fields: [u32; 4]) -> [u8; ENTRY_REC] {
    let mut rec = [0u8; ENTRY_REC];
    rec[..32].copy_from_slice(&id.0);
    for (n, v) in fields.into_iter().enumerate() {
        rec[32 + 4 * n..36 + 4 * n].copy_from_slice(&v.to_le_bytes());
    }
    rec
}

/// The first eight bytes of an id (or of a record starting with one) as
/// a number: ids compare as (this, the rest), which is byte order.
fn id_prefix(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}
