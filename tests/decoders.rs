//! Every decoder of stored bytes against hostile input.
//!
//! Random bytes, and valid encodings damaged by bit flips, truncations,
//! insertions, deletions and length fields set to huge values, are fed to
//! every decoder of a stored format; each must return `Ok` or `Err`, never
//! panic, hang or allocate without bound. Sealed formats are also damaged
//! *before* sealing, so the decoder behind the authentication sees the
//! damage. Round-trip properties pin encode → decode as the identity.
//!
//! The fuzz targets in `fuzz/` explore the same decoders much longer; this
//! file is the quick version that runs in every `cargo test`. It stays
//! cheap: a bounded number of cases, and key files are only decoded with
//! Argon2 memory of at most 64 KiB.

use std::collections::BTreeSet;

use cairn::backend::Data;
use cairn::chunker::ChunkerParams;
use cairn::codec;
use cairn::compress;
use cairn::crypto::{Cipher, MasterKey};
use cairn::id::{file_hash, BlobId, IndexId, PackId, SnapshotId};
use cairn::index::{IndexBuilder, IndexTable, Location};
use cairn::pack::{self, BlobKind, PackHeader, PackWriter};
use cairn::repo::export;
use cairn::repo::keys::{self, KdfParams};
use cairn::repo::lock::{LockInfo, PidNamespace};
use cairn::repo::Config;
use cairn::snapshot::{Snapshot, SnapshotKind, Summary};
use cairn::tree::{self, check_name, Name, Node, NodeKind, Ref, Tree, Xattr};
use proptest::prelude::*;
use proptest::sample::Index;

/// Cheap Argon2id parameters: the only ones key files are decoded with here.
const FAST: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    lanes: 1,
};
/// Largest Argon2 memory a key file may ask for and still be decoded here.
const MAX_DECODE_KIB: u32 = 64;
const PASSWORD: &[u8] = b"correct horse";

fn key() -> MasterKey {
    let mut raw = [0u8; 64];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0xa5;
    }
    MasterKey::from_bytes(raw)
}

/// `magic || u32 version 1`.
fn file_header(magic: &[u8; 8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out
}

/// `prefix || sealed(plain)` with `prefix` as associated data: the layout of
/// snapshot, lock and config files.
fn sealed_file(key: &MasterKey, prefix: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    key.seal_into(plain, prefix, &mut out);
    out
}

/// A pack file whose sealed header has exactly `header_plain` as plaintext
/// and whose blob area is `body`.
fn pack_with_header(key: &MasterKey, body: &[u8], header_plain: &[u8]) -> Vec<u8> {
    let head = file_header(b"CAIRNPAK");
    let mut out = head.clone();
    out.extend_from_slice(body);
    let start = out.len();
    key.seal_into(header_plain, &head, &mut out);
    let sealed_len = (out.len() - start) as u32;
    out.extend_from_slice(&sealed_len.to_le_bytes());
    out.extend_from_slice(b"CAIRNHDR");
    out
}

fn lock_file(key: &MasterKey, info: &LockInfo) -> Vec<u8> {
    sealed_file(key, &file_header(b"CAIRNLCK"), &codec::encode(info))
}

/// A version-2 config file (sealed with XChaCha20-Poly1305 whatever the
/// key's data cipher).
fn config_file(key: &MasterKey, repo_id: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut prefix = b"CAIRNCFG".to_vec();
    prefix.extend_from_slice(&2u32.to_le_bytes());
    prefix.extend_from_slice(repo_id);
    let mut out = prefix.clone();
    key.seal_config(plain, &prefix, &mut out);
    out
}

// ---------------------------------------------------------------------------
// The decoders, each driven as its callers drive it.

/// Parses an index table and uses every accessor on whatever parses.
fn exercise_index(bytes: Vec<u8>, key: &MasterKey) {
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
    let _ = t.find(&BlobId([0x80; 32]));
    let _ = (t.holds(BlobKind::Data), t.holds(BlobKind::Tree));
    if t.check(key).is_ok() {
        for i in 0..t.len() {
            assert_eq!(t.find(&t.id_at(i)), Some(i));
        }
        // A table that checks out holds the kinds its packs are of.
        for n in 0..t.pack_count() {
            assert!(t.holds(t.pack(n).unwrap().1));
        }
    }
}

/// Key file decoding, with Argon2 only when its memory cost is small.
fn exercise_key_file(bytes: &[u8]) {
    if let Ok(info) = keys::info(bytes) {
        assert!(info.params.validate().is_ok());
        if info.params.memory_kib <= MAX_DECODE_KIB {
            let _ = keys::decode(bytes, PASSWORD);
        }
    }
}

/// Exported key decoding: whatever decodes re-encodes to the same bytes;
/// the input is also laid over the fixed header, so the length and
/// checksum checks see arbitrary values.
fn exercise_exported_key(bytes: &[u8]) {
    for input in [
        bytes.to_vec(),
        [&file_header(b"CAIRNXKY")[..], bytes].concat(),
    ] {
        if let Ok(k) = export::decode(&input, "key file") {
            assert_eq!(&export::encode(&k.repo_id, &k.key)[..], &input[..]);
        }
    }
}

/// A tree's references in node order, from its decoded form.
fn refs_of(t: &Tree) -> Vec<Ref> {
    let mut out = Vec::new();
    for n in &t.nodes {
        match &n.kind {
            NodeKind::File { chunks } => {
                out.extend(chunks.iter().map(|c| Ref::Chunk(*c)));
                out.push(Ref::FileSize(n.size));
            }
            NodeKind::Dir { subtree } => out.push(Ref::Subtree(*subtree)),
            _ => {}
        }
    }
    out
}

/// Feeds `bytes` to every decoder of stored bytes, as a whole file and as
/// the plaintext behind each sealed format.
fn all_decoders(bytes: &[u8], key: &MasterKey) {
    // Pack files.
    let _ = pack::decode_header(bytes, key, "pack");
    let _ = pack::decode_sealed_header(bytes, bytes.len() as u64, key, "pack");
    if bytes.len() >= pack::trailer_len() {
        let trailer = &bytes[bytes.len() - pack::trailer_len()..];
        for len in [0, bytes.len() as u64, u64::MAX] {
            if let Ok((start, hlen)) = pack::header_range(trailer, len, "pack") {
                assert!(start >= pack::HEADER_LEN as u64);
                assert_eq!(start + hlen as u64 + pack::trailer_len() as u64, len);
            }
        }
    }
    let _ = codec::decode::<PackHeader>(bytes, "pack header");
    let _ = pack::decode_header(&pack_with_header(key, &[], bytes), key, "pack");

    // Index tables.
    exercise_index(bytes.to_vec(), key);

    // Trees, and the references-only scan gc uses: it never panics, and
    // on every tree decoding accepts it reports the same references.
    let mut scanned = Vec::new();
    let scan = tree::scan_refs(bytes, "tree", |r| scanned.push(r));
    let encoded = tree::EncodedTree::decode(bytes.to_vec(), "tree");
    if let Ok(t) = Tree::decode(bytes, "tree") {
        assert_eq!(t.encode(), bytes);
        assert!(scan.is_ok(), "{scan:?}");
        assert_eq!(scanned, refs_of(&t));
        // The tree read node by node (restore, a backup's parent) accepts
        // exactly what decoding accepts, and yields the same nodes.
        let encoded = encoded.expect("a tree decoding accepts");
        // verify's walk checks without decoding, and sees the same refs.
        let mut checked = Vec::new();
        assert_eq!(
            tree::check(bytes, "tree", |r| checked.push(r)).unwrap(),
            t.nodes.len()
        );
        assert_eq!(checked, scanned);
        assert_eq!(encoded.len(), t.nodes.len());
        let nodes: Vec<Node> = encoded.nodes().map(|n| n.unwrap()).collect();
        assert_eq!(nodes, t.nodes);
        let names: Vec<&[u8]> = encoded.names().collect();
        let want: Vec<&[u8]> = t.nodes.iter().map(|n| &n.name.0[..]).collect();
        assert_eq!(names, want);
        let owned: Vec<Node> = encoded.into_nodes().map(|n| n.unwrap()).collect();
        assert_eq!(owned, t.nodes);
    } else {
        assert!(encoded.is_err(), "accepted node by node, not whole");
        assert!(tree::check(bytes, "tree", |_| {}).is_err());
    }

    // Snapshots.
    let _ = Snapshot::decode(bytes, key, "snapshot");
    let _ = codec::decode::<Snapshot>(bytes, "snapshot");
    let snap = sealed_file(key, &file_header(b"CAIRNSNP"), bytes);
    if let Ok(s) = Snapshot::decode(&snap, key, "snapshot") {
        assert_eq!(codec::encode(&s), bytes);
    }

    // Config.
    if let Ok(id) = Config::peek_repo_id(bytes) {
        assert_eq!(&id[..], &bytes[12..44]);
    }
    let _ = Config::decode(bytes, key);
    let _ = codec::decode::<Config>(bytes, "config");
    let repo_id = bytes.get(4..36).unwrap_or(&[0; 32]);
    if let Ok(c) = Config::decode(&config_file(key, repo_id, bytes), key) {
        assert_eq!(codec::encode(&c), bytes);
    }

    // Key files.
    exercise_key_file(bytes);
    exercise_exported_key(bytes);

    // Locks.
    let _ = LockInfo::decode(bytes, key);
    let _ = codec::decode::<LockInfo>(bytes, "lock");
    let lock = sealed_file(key, &file_header(b"CAIRNLCK"), bytes);
    if let Ok(l) = LockInfo::decode(&lock, key) {
        assert_eq!(codec::encode(&l), bytes);
        let _ = l.describe();
    }

    // Blobs.
    for raw_len in [0, 1, bytes.len().saturating_sub(1), bytes.len(), 4096] {
        let _ = compress::decode(bytes, raw_len, "blob");
        let _ = pack::open_blob(key, &BlobId([0; 32]), bytes, raw_len as u32, "blob");
    }
    let _ = pack::open_blob(key, &BlobId([0; 32]), bytes, u32::MAX, "blob");
    let sealed = key.seal(bytes, &[]);
    if let Ok(plain) = compress::decode(bytes, 4096, "blob") {
        let id = key.blob_id(&plain);
        assert_eq!(
            pack::open_blob(key, &id, &sealed, 4096, "blob").unwrap(),
            plain
        );
    }
}

// ---------------------------------------------------------------------------
// Damage.

/// One way of damaging an encoding.
#[derive(Clone, Debug)]
enum Mutation {
    /// Flip one bit.
    Flip(Index, u8),
    /// Keep only a prefix.
    Truncate(Index),
    /// Insert bytes.
    Insert(Index, Vec<u8>),
    /// Remove up to n bytes.
    Remove(Index, usize),
    /// Overwrite bytes.
    Overwrite(Index, Vec<u8>),
    /// Write a huge little-endian u32 or u64 (a length or count field).
    Huge(Index, bool, u64),
}

fn huge_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX / 2),
        Just(1 << 62),
        Just(1 << 32),
        Just(u64::from(u32::MAX)),
        Just(1 << 31),
        Just(1 << 24),
        1u64..1 << 20,
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Overwrite(i, v)),
        (any::<Index>(), any::<bool>(), huge_value())
            .prop_map(|(i, wide, v)| Mutation::Huge(i, wide, v)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..4)
}

fn apply(bytes: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in muts {
        let len = out.len();
        // Position in 0..=len for inserts, 0..len otherwise.
        let at = |i: &Index, incl: bool| {
            if incl {
                i.index(len + 1)
            } else {
                i.index(len.max(1))
            }
        };
        match m {
            Mutation::Flip(i, bit) if len > 0 => out[at(i, false)] ^= 1 << bit,
            Mutation::Truncate(i) => out.truncate(at(i, true)),
            Mutation::Insert(i, v) => {
                let p = at(i, true);
                out.splice(p..p, v.iter().copied());
            }
            Mutation::Remove(i, n) if len > 0 => {
                let p = at(i, false);
                out.drain(p..(p + n).min(len));
            }
            Mutation::Overwrite(i, v) if len > 0 => {
                let p = at(i, false);
                for (o, b) in out[p..].iter_mut().zip(v) {
                    *o = *b;
                }
            }
            Mutation::Huge(i, wide, v) if len > 0 => {
                let p = at(i, false);
                let bytes = if *wide {
                    v.to_le_bytes().to_vec()
                } else {
                    (*v as u32).to_le_bytes().to_vec()
                };
                for (o, b) in out[p..].iter_mut().zip(bytes) {
                    *o = b;
                }
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Valid values.

fn blob_id() -> impl Strategy<Value = BlobId> {
    any::<[u8; 32]>().prop_map(BlobId)
}

fn name() -> impl Strategy<Value = Name> {
    prop::collection::vec(any::<u8>(), 1..12).prop_map(|mut n| {
        for b in &mut n {
            if *b == 0 || *b == b'/' {
                *b = b'x';
            }
        }
        if n == b"." || n == b".." {
            n.push(b'x');
        }
        Name(n)
    })
}

fn node_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        prop::collection::vec(blob_id(), 0..4).prop_map(|chunks| NodeKind::File { chunks }),
        blob_id().prop_map(|subtree| NodeKind::Dir { subtree }),
        prop::collection::vec(any::<u8>(), 0..20)
            .prop_map(|t| NodeKind::Symlink { target: Name(t) }),
        Just(NodeKind::Fifo),
        any::<u64>().prop_map(|rdev| NodeKind::CharDevice { rdev }),
        any::<u64>().prop_map(|rdev| NodeKind::BlockDevice { rdev }),
        Just(NodeKind::Socket),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    (
        name(),
        node_kind(),
        any::<(u32, u32, u32)>(),
        ("[a-z]{0,8}", "\\PC{0,8}"),
        any::<(i64, i64)>(),
        any::<(u64, u64, u64, u64)>(),
        prop::collection::vec((name(), prop::collection::vec(any::<u8>(), 0..8)), 0..3),
    )
        .prop_map(
            |(name, kind, (mode, uid, gid), (user, group), (mtime_ns, ctime_ns), ids, xattrs)| {
                let (size, dev, inode, nlink) = ids;
                Node {
                    name,
                    kind,
                    mode,
                    uid,
                    gid,
                    user,
                    group,
                    mtime_ns,
                    ctime_ns,
                    size,
                    dev,
                    inode,
                    nlink,
                    xattrs: xattrs
                        .into_iter()
                        .map(|(name, v)| Xattr {
                            name,
                            value: Name(v),
                        })
                        .collect(),
                }
            },
        )
}

fn tree() -> impl Strategy<Value = Tree> {
    prop::collection::vec(node(), 0..6).prop_map(|mut nodes| {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        Tree::new(nodes)
    })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        any::<i64>(),
        ("\\PC{0,12}", "[a-z]{0,8}", "[a-z0-9-]{0,8}"),
        prop_oneof![
            Just(SnapshotKind::Full),
            Just(SnapshotKind::Incremental),
            Just(SnapshotKind::Differential),
        ],
        prop::collection::vec("/\\PC{0,16}", 0..3),
        prop::collection::vec("[a-z]{1,6}", 0..3),
        prop::option::of(any::<[u8; 32]>()),
        blob_id(),
        any::<[u64; 11]>(),
        (
            1..=cairn::snapshot::VERSION,
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..3),
            any::<i64>(),
        ),
    )
        .prop_map(
            |(time_ns, (host, user, set), kind, paths, tags, parent, tree, s, v2)| Snapshot {
                version: v2.0,
                // Version 1 records neither: it reads back without
                // excludes, begun at its time.
                excludes: if v2.0 == 1 {
                    Vec::new()
                } else {
                    v2.1.into_iter().map(Name).collect()
                },
                started_ns: if v2.0 == 1 { time_ns } else { v2.2 },
                time_ns,
                host,
                user,
                set,
                kind,
                paths,
                tags,
                parent: parent.map(SnapshotId),
                tree,
                summary: Summary {
                    files_new: s[0],
                    files_changed: s[1],
                    files_unmodified: s[2],
                    dirs: s[3],
                    errors: s[4],
                    bytes_read: s[5],
                    total_bytes: s[6],
                    blobs_added: s[7],
                    bytes_added: s[8],
                    bytes_stored: s[9],
                    duration_ns: s[10],
                },
            },
        )
}

fn config() -> impl Strategy<Value = Config> {
    (
        any::<[u8; 32]>(),
        any::<u64>(),
        cairn::repo::config::LEVEL_RANGE,
        cairn::repo::config::PACK_SIZE_RANGE,
        any::<i64>(),
        any::<bool>(),
    )
        .prop_map(
            |(repo_id, seed, compression, pack_size, created_ns, xaes)| Config {
                version: cairn::repo::config::VERSION,
                repo_id,
                chunker: ChunkerParams {
                    seed,
                    ..ChunkerParams::default()
                },
                compression,
                pack_size,
                created_ns,
                cipher: if xaes {
                    Cipher::Xaes256Gcm
                } else {
                    Cipher::XChaCha20Poly1305
                },
            },
        )
}

/// A lock, with or without the pid namespace (which rides in the stored
/// host string: a round trip must give both back as they were).
fn lock_info() -> impl Strategy<Value = LockInfo> {
    let ns = proptest::option::of((any::<u64>(), "[0-9a-f-]{1,36}"))
        .prop_map(|ns| ns.map(|(inode, boot_id)| PidNamespace { inode, boot_id }));
    (
        ("[a-z.-]{0,16}", "[a-z ,\\[\\]]{0,4}"),
        any::<u32>(),
        ns,
        any::<i64>(),
        any::<bool>(),
        "\\PC{0,16}",
    )
        .prop_map(
            |((host, tail), pid, pid_namespace, time_ns, exclusive, command)| LockInfo {
                version: cairn::repo::lock::VERSION,
                host: host + &tail,
                pid,
                pid_namespace,
                time_ns,
                exclusive,
                command,
            },
        )
}

fn blob_kind() -> impl Strategy<Value = BlobKind> {
    prop_oneof![Just(BlobKind::Data), Just(BlobKind::Tree)]
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        (any::<u8>(), 0usize..4000).prop_map(|(b, n)| vec![b; n]),
    ]
}

/// A real pack built by the pack writer from `blobs`.
fn build_pack(
    key: &MasterKey,
    kind: BlobKind,
    blobs: &[Vec<u8>],
    level: i32,
) -> pack::FinishedPack {
    let mut w = PackWriter::new(kind);
    let mut sealed = Vec::new();
    for b in blobs {
        let sealed = pack::seal_blob(key, b, level, &mut sealed);
        w.add_sealed(key.blob_id(b), sealed, b.len() as u32)
            .unwrap();
    }
    w.finish(key).unwrap()
}

/// Pack entries with globally unique ids, grouped into packs.
#[allow(clippy::type_complexity)]
fn index_input() -> impl Strategy<Value = Vec<(PackId, BlobKind, Vec<pack::PackEntry>)>> {
    (
        prop::collection::vec((any::<[u8; 32]>(), blob_kind()), 1..4),
        prop::collection::btree_set(any::<[u8; 32]>(), 0..40),
        // Places a blob in a pack can have (FORMAT.md, Index table).
        prop::collection::vec(
            (
                12..=u32::MAX - pack::MAX_SEALED,
                0..=pack::MAX_SEALED,
                0..=pack::MAX_BLOB,
            ),
            40,
        ),
    )
        .prop_map(|(packs, ids, fields)| {
            let mut out: Vec<_> = packs
                .into_iter()
                .map(|(p, k)| (PackId(p), k, Vec::new()))
                .collect();
            let n = out.len();
            for (i, (id, (offset, length, raw_length))) in ids.into_iter().zip(fields).enumerate() {
                out[i % n].2.push(pack::PackEntry {
                    id: BlobId(id),
                    offset,
                    length,
                    raw_length,
                });
            }
            out
        })
}

/// Damaged records under a consistent entry count and a valid MAC (the
/// table `bytes` with `muts` applied to all but its MAC, its entry count
/// fitted to its length, sealed again): check and lookups still only
/// return Ok or Err.
fn exercise_resealed_index(bytes: &[u8], muts: &[Mutation], key: &MasterKey) {
    let mut body = apply(&bytes[..bytes.len() - 32], muts);
    if body.len() < 24 {
        return;
    }
    let packs = u32::from_le_bytes(body[12..16].try_into().unwrap()) as usize;
    if let Some(room) = (body.len() - 24).checked_sub(36 * packs) {
        let entries = room / 48;
        body.truncate(24 + 36 * packs + 48 * entries);
        body[16..24].copy_from_slice(&(entries as u64).to_le_bytes());
        let mac = key.mac(&body);
        body.extend_from_slice(&mac);
        exercise_index(body, key);
    }
}

/// Like [`index_input`], with 256 to 700 entries: tables large enough
/// that a lookup reads their entries a window at a time, until its
/// lookups get a table its directory (`IndexTable::find`).
#[allow(clippy::type_complexity)]
fn large_index_input() -> impl Strategy<Value = Vec<(PackId, BlobKind, Vec<pack::PackEntry>)>> {
    (
        prop::collection::vec((any::<[u8; 32]>(), blob_kind()), 1..4),
        prop::collection::btree_set(any::<[u8; 32]>(), 256..700),
    )
        .prop_map(|(packs, ids)| {
            let mut out: Vec<_> = packs
                .into_iter()
                .map(|(p, k)| (PackId(p), k, Vec::new()))
                .collect();
            let n = out.len();
            for (i, id) in ids.into_iter().enumerate() {
                let word = |at: usize| u32::from_le_bytes(id[at..at + 4].try_into().unwrap());
                // A place a blob in a pack can have (FORMAT.md, Index table).
                out[i % n].2.push(pack::PackEntry {
                    id: BlobId(id),
                    offset: 12 + word(8) % (u32::MAX - pack::MAX_SEALED - 12),
                    length: word(12) % (pack::MAX_SEALED + 1),
                    raw_length: word(16) % (pack::MAX_BLOB + 1),
                });
            }
            out
        })
}

/// A table of `packs` laid out by hand as FORMAT.md describes it, of
/// format version 2 whatever kinds the packs are: a table cairn never
/// writes when they differ (it writes one table per kind), which readers
/// must still take apart without panicking, and which `check` refuses.
fn build_index(key: &MasterKey, packs: &[(PackId, BlobKind, Vec<pack::PackEntry>)]) -> Vec<u8> {
    let mut entries: Vec<(BlobId, u32, &pack::PackEntry)> = packs
        .iter()
        .enumerate()
        .flat_map(|(n, (_, _, es))| es.iter().map(move |e| (e.id, n as u32, e)))
        .collect();
    entries.sort_by_key(|e| e.0);
    entries.dedup_by_key(|e| e.0);
    let mut out = codec::header(b"CAIRNIDX", 2);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (p, k, _) in packs {
        out.extend_from_slice(&p.0);
        out.extend_from_slice(&[k.to_byte(), 0, 0, 0]);
    }
    for (id, n, e) in entries {
        out.extend_from_slice(&id.0);
        for v in [n, e.offset, e.length, e.raw_length] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mac = key.mac(&out);
    out.extend_from_slice(&mac);
    out
}

// ---------------------------------------------------------------------------
// Random and damaged input: Ok or Err, never a panic.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        all_decoders(&bytes, &key());
    }

    #[test]
    fn random_bytes_behind_each_magic(
        magic in prop::sample::select(vec![
            *b"CAIRNPAK", *b"CAIRNIDX", *b"CAIRNSNP", *b"CAIRNCFG", *b"CAIRNKEY", *b"CAIRNLCK",
            *b"CAIRNXKY",
        ]),
        version in prop_oneof![Just(1u32), any::<u32>()],
        rest in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&rest);
        all_decoders(&bytes, &key());
    }

    #[test]
    fn random_key_files_of_the_right_length(
        params in (
            prop_oneof![8u32..=64, any::<u32>()],
            0u32..200,
            prop_oneof![1u32..=16, any::<u32>()],
        ),
        rest in prop::collection::vec(any::<u8>(), keys::FILE_LEN - 24),
    ) {
        let mut bytes = file_header(b"CAIRNKEY");
        for v in [params.0, params.1, params.2] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&rest);
        exercise_key_file(&bytes);
    }

    #[test]
    fn exported_keys_round_trip_and_survive_damage(
        repo_id in any::<[u8; 32]>(),
        raw in any::<[u8; 64]>(),
        muts in mutations(),
    ) {
        let file = export::encode(&repo_id, &MasterKey::from_bytes(raw));
        prop_assert_eq!(file.len(), export::FILE_LEN);
        let back = export::decode(&file, "key file").unwrap();
        prop_assert_eq!(back.repo_id, repo_id);
        prop_assert_eq!(*back.key.to_bytes(), raw);
        let bad = apply(&file, &muts);
        match export::decode(&bad, "key file") {
            // Damage is caught by the checksum unless it left the bytes as they were.
            Ok(_) => prop_assert_eq!(&bad[..], &file[..]),
            Err(_) => prop_assert_ne!(&bad[..], &file[..]),
        }
    }

    #[test]
    fn damaged_trees(t in tree(), muts in mutations()) {
        let bad = apply(&t.encode(), &muts);
        if let Ok(d) = Tree::decode(&bad, "tree") {
            assert_eq!(d.encode(), bad);
        }
        all_decoders(&bad, &key());
    }

    #[test]
    fn damaged_snapshots(s in snapshot(), muts in mutations()) {
        let key = key();
        let (_, file) = s.encode(&key);
        let _ = Snapshot::decode(&apply(&file, &muts), &key, "snapshot");
        // Damage behind the encryption.
        let plain = apply(&codec::encode(&s), &muts);
        let file = sealed_file(&key, &file_header(b"CAIRNSNP"), &plain);
        if let Ok(d) = Snapshot::decode(&file, &key, "snapshot") {
            // Canonical: it encodes again, in its version's layout, as
            // it was read (`codec::encode` would give version 2's, with
            // the fields version 1 lacks).
            let (_, again) = d.encode(&key);
            assert_eq!(&again[..12], &file[..12]);
            assert_eq!(key.open(&again[12..], &again[..12], "again").unwrap(), plain);
        }
    }

    #[test]
    fn damaged_configs(c in config(), muts in mutations()) {
        let key = key();
        let file = c.encode(&key).unwrap();
        let bad = apply(&file, &muts);
        let _ = Config::peek_repo_id(&bad);
        let _ = Config::decode(&bad, &key);
        let plain = apply(&codec::encode(&c), &muts);
        let repo_id = plain.get(4..36).unwrap_or(&[0; 32]).to_vec();
        if let Ok(d) = Config::decode(&config_file(&key, &repo_id, &plain), &key) {
            assert_eq!(codec::encode(&d), plain);
            assert!(d.validate().is_ok());
        }
    }

    #[test]
    fn damaged_locks(l in lock_info(), muts in mutations()) {
        let key = key();
        let _ = LockInfo::decode(&apply(&lock_file(&key, &l), &muts), &key);
        let plain = apply(&codec::encode(&l), &muts);
        let file = sealed_file(&key, &file_header(b"CAIRNLCK"), &plain);
        if let Ok(d) = LockInfo::decode(&file, &key) {
            assert_eq!(codec::encode(&d), plain);
            let _ = d.describe();
        }
    }

    #[test]
    fn damaged_packs(
        kind in blob_kind(),
        blobs in prop::collection::vec(blob(), 0..4),
        muts in mutations(),
    ) {
        let key = key();
        let p = build_pack(&key, kind, &blobs, 3);
        let _ = pack::decode_header(&apply(&p.bytes, &muts), &key, "pack");
        // Damage to the header plaintext, sealed correctly.
        let n = p.bytes.len();
        let sealed_len = u32::from_le_bytes(p.bytes[n - 12..n - 8].try_into().unwrap());
        let header_start = n - pack::trailer_len() - sealed_len as usize;
        let plain = apply(&codec::encode(&p.header), &muts);
        let file = pack_with_header(&key, &p.bytes[pack::HEADER_LEN..header_start], &plain);
        if let Ok(h) = pack::decode_header(&file, &key, "pack") {
            assert_eq!(codec::encode(&h), plain);
            // Whatever entries survive are inside the blob area; reading
            // them fails or yields a blob matching its id.
            for e in &h.entries {
                let (off, end) = (e.offset as usize, (e.offset + e.length) as usize);
                assert!(off >= pack::HEADER_LEN && end <= header_start);
                if let Ok(b) = pack::open_blob(&key, &e.id, &file[off..end], e.raw_length, "b") {
                    assert_eq!(key.blob_id(&b), e.id);
                }
            }
        }
    }

    #[test]
    fn damaged_blobs(
        data in blob(),
        level in prop_oneof![Just(0), Just(1), Just(3)],
        muts in mutations(),
    ) {
        let key = key();
        let mut encoded = Vec::new();
        compress::encode_into(&data, level, &mut encoded);
        let bad = apply(&encoded, &muts);
        for raw_len in [data.len(), data.len() + 1, data.len().saturating_sub(1), 0, 1 << 20] {
            if let Ok(out) = compress::decode(&bad, raw_len, "blob") {
                assert_eq!(out.len(), raw_len);
            }
        }
        let sealed = key.seal(&bad, &[]);
        let id = key.blob_id(&data);
        if let Ok(out) = pack::open_blob(&key, &id, &sealed, data.len() as u32, "blob") {
            assert_eq!(out, data);
        }
        let mut sealed = Vec::new();
        let sealed = pack::seal_blob(&key, &data, level, &mut sealed);
        let bad = apply(sealed, &muts);
        if let Ok(out) = pack::open_blob(&key, &id, &bad, data.len() as u32, "blob") {
            assert_eq!(out, data);
        }
    }

    #[test]
    fn damaged_index_tables(packs in index_input(), muts in mutations()) {
        let key = key();
        let bytes = build_index(&key, &packs);
        exercise_index(apply(&bytes, &muts), &key);
        exercise_resealed_index(&bytes, &muts, &key);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Damaged tables of hundreds of entries, whose lookups read windows
    /// of entries before a directory: never a panic, never a wrong entry.
    #[test]
    fn damaged_large_index_tables(packs in large_index_input(), muts in mutations()) {
        let key = key();
        let bytes = build_index(&key, &packs);
        exercise_index(bytes.clone(), &key);
        exercise_resealed_index(&bytes, &muts, &key);
    }

    #[test]
    fn damaged_key_files(muts in mutations()) {
        let file = keys::encode(&key(), PASSWORD, FAST).unwrap();
        let bad = apply(&file, &muts);
        exercise_key_file(&bad);
        if bad != file {
            // Every byte is authenticated: damage never yields a key.
            if let Ok(info) = keys::info(&bad) {
                if info.params.memory_kib <= MAX_DECODE_KIB {
                    prop_assert!(!matches!(keys::decode(&bad, PASSWORD), Ok(Some(_))));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Round trips.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn tree_round_trip(t in tree()) {
        let bytes = t.encode();
        prop_assert_eq!(Tree::decode(&bytes, "tree").unwrap(), t.clone());
        let mut scanned = Vec::new();
        tree::scan_refs(&bytes, "tree", |r| scanned.push(r)).unwrap();
        prop_assert_eq!(scanned, refs_of(&t));
        for n in &t.nodes {
            prop_assert!(check_name(&n.name.0).is_ok());
        }
    }

    #[test]
    fn snapshot_round_trip(s in snapshot()) {
        let key = key();
        let (id, file) = s.encode(&key);
        prop_assert_eq!(id.0, file_hash(&file));
        prop_assert_eq!(Snapshot::decode(&file, &key, "snapshot").unwrap(), s.clone());
        prop_assert_eq!(codec::decode::<Snapshot>(&codec::encode(&s), "s").unwrap(), s);
        // Another key cannot read it.
        prop_assert!(Snapshot::decode(&file, &MasterKey::generate(), "snapshot").is_err());
    }

    #[test]
    fn config_round_trip(c in config()) {
        let key = key();
        let file = c.encode(&key).unwrap();
        prop_assert_eq!(Config::peek_repo_id(&file).unwrap(), c.repo_id);
        prop_assert_eq!(Config::decode(&file, &key).unwrap(), c);
    }

    #[test]
    fn lock_round_trip(l in lock_info()) {
        let key = key();
        prop_assert_eq!(LockInfo::decode(&lock_file(&key, &l), &key).unwrap(), l);
    }

    #[test]
    fn pack_round_trip(
        kind in blob_kind(),
        blobs in prop::collection::vec(blob(), 0..5),
        level in prop_oneof![Just(0), Just(1), Just(3)],
    ) {
        let key = key();
        let p = build_pack(&key, kind, &blobs, level);
        prop_assert_eq!(p.id.0, file_hash(&p.bytes));
        let h = pack::decode_header(&p.bytes, &key, "pack").unwrap();
        prop_assert_eq!(&h, &p.header);
        prop_assert_eq!(h.kind, kind);
        prop_assert_eq!(h.entries.len(), blobs.len());
        // The trailer alone locates the header.
        let trailer = &p.bytes[p.bytes.len() - pack::trailer_len()..];
        let (start, hlen) = pack::header_range(trailer, p.bytes.len() as u64, "pack").unwrap();
        let sealed = &p.bytes[start as usize..start as usize + hlen];
        prop_assert_eq!(&pack::decode_sealed_header(sealed, start, &key, "pack").unwrap(), &h);
        for (e, b) in h.entries.iter().zip(&blobs) {
            prop_assert_eq!(e.id, key.blob_id(b));
            prop_assert_eq!(e.raw_length as usize, b.len());
            let sealed = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            prop_assert_eq!(&pack::open_blob(&key, &e.id, sealed, e.raw_length, "b").unwrap(), b);
        }
    }

    #[test]
    fn index_round_trip(packs in index_input(), probe in any::<[u8; 32]>()) {
        let key = key();
        let mut b = IndexBuilder::default();
        for (p, k, entries) in &packs {
            b.add_pack(*p, *k, entries);
        }
        // In format version 1 (a repository made by an older cairn), one
        // table of every pack.
        let v1 = b.clone().finish(&key, 1);
        prop_assert_eq!(v1.len(), usize::from(packs.iter().any(|p| !p.2.is_empty())));
        for (id, bytes) in v1 {
            let t = IndexTable::parse(id, Data::Owned(bytes)).unwrap();
            t.check(&key).unwrap();
            prop_assert_eq!(t.kind(), None);
            prop_assert_eq!(t.pack_count(), packs.len());
            for (p, k, entries) in &packs {
                for e in entries {
                    let (_, loc) = t.location_at(t.find(&e.id).unwrap()).unwrap();
                    prop_assert_eq!((loc.pack, loc.kind), (*p, *k));
                }
            }
        }
        // In version 2, one table per kind of pack that has blobs, trees
        // first.
        let tables: Vec<IndexTable> = b
            .finish(&key, 2)
            .into_iter()
            .map(|(id, bytes)| {
                assert_eq!(id.0, file_hash(&bytes));
                IndexTable::parse(id, Data::Owned(bytes)).unwrap()
            })
            .collect();
        let kinds: Vec<BlobKind> = [BlobKind::Tree, BlobKind::Data]
            .into_iter()
            .filter(|k| packs.iter().any(|(_, pk, es)| pk == k && !es.is_empty()))
            .collect();
        prop_assert_eq!(tables.len(), kinds.len());
        let of = |kind: BlobKind| &tables[kinds.iter().position(|k| *k == kind).unwrap()];
        for (t, kind) in tables.iter().zip(&kinds) {
            t.check(&key).unwrap();
            prop_assert!(t.check(&MasterKey::generate()).is_err());
            prop_assert!(t.holds(*kind));
            let other = if *kind == BlobKind::Data { BlobKind::Tree } else { BlobKind::Data };
            prop_assert!(!t.holds(other));
            prop_assert_eq!(t.pack_count(), packs.iter().filter(|p| p.1 == *kind).count());
        }
        let mut all = BTreeSet::new();
        for (p, k, entries) in &packs {
            for e in entries {
                let t = of(*k);
                all.insert(e.id);
                let i = t.find(&e.id).unwrap();
                let (got, loc) = t.location_at(i).unwrap();
                prop_assert_eq!(got, e.id);
                prop_assert_eq!(loc, Location {
                    pack: *p,
                    kind: *k,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                });
            }
        }
        prop_assert_eq!(tables.iter().map(IndexTable::len).sum::<usize>(), all.len());
        for t in &tables {
            let ids: Vec<BlobId> = (0..t.len()).map(|i| t.id_at(i)).collect();
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
            if !all.contains(&BlobId(probe)) {
                prop_assert!(t.find(&BlobId(probe)).is_none());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn key_file_round_trip(
        password in prop::collection::vec(any::<u8>(), 0..32),
        raw in any::<[u8; 64]>(),
        iterations in 1u32..3,
    ) {
        let master = MasterKey::from_bytes(raw);
        let params = KdfParams { iterations, ..FAST };
        let file = keys::encode(&master, &password, params).unwrap();
        prop_assert_eq!(file.len(), keys::FILE_LEN);
        let info = keys::info(&file).unwrap();
        prop_assert_eq!(info.params, params);
        let opened = keys::decode(&file, &password).unwrap().unwrap();
        prop_assert_eq!(*opened.to_bytes(), raw);
        let mut wrong = password.clone();
        wrong.push(b'!');
        prop_assert!(keys::decode(&file, &wrong).unwrap().is_none());
    }
}

// ---------------------------------------------------------------------------
// Exhaustive damage to one sample of each format: every truncation, every
// bit flip, and a huge value written at every offset (so every length and
// count field is hit).

fn sample_tree() -> Tree {
    let n = |name: &str, kind| Node {
        name: Name(name.as_bytes().to_vec()),
        kind,
        mode: 0o644,
        uid: 1,
        gid: 2,
        user: "user".into(),
        group: "group".into(),
        mtime_ns: 10,
        ctime_ns: 11,
        size: 3,
        dev: 4,
        inode: 5,
        nlink: 1,
        xattrs: vec![Xattr {
            name: Name(b"user.x".to_vec()),
            value: Name(b"v".to_vec()),
        }],
    };
    Tree::new(vec![
        n(
            "a",
            NodeKind::File {
                chunks: vec![BlobId([1; 32]), BlobId([2; 32])],
            },
        ),
        n(
            "b",
            NodeKind::Dir {
                subtree: BlobId([3; 32]),
            },
        ),
        n(
            "c",
            NodeKind::Symlink {
                target: Name(b"../t".to_vec()),
            },
        ),
    ])
}

fn sample_snapshot() -> Snapshot {
    Snapshot {
        version: cairn::snapshot::VERSION,
        time_ns: 1_700_000_000_000_000_000,
        host: "host".into(),
        user: "user".into(),
        set: "default".into(),
        kind: SnapshotKind::Incremental,
        paths: vec!["/home".into(), "/etc".into()],
        tags: vec!["daily".into()],
        parent: Some(SnapshotId([9; 32])),
        tree: BlobId([1; 32]),
        summary: Summary::default(),
        excludes: vec![Name(b"*.log".to_vec())],
        started_ns: 1_700_000_000_000_000_000,
    }
}

fn sample_lock() -> LockInfo {
    LockInfo {
        version: cairn::repo::lock::VERSION,
        host: "host".into(),
        pid: 42,
        pid_namespace: None,
        time_ns: 5,
        exclusive: true,
        command: "gc".into(),
    }
}

/// Calls `check` on every truncation, bit flip and huge-value overwrite of
/// `valid`.
fn every_damage(valid: &[u8], mut check: impl FnMut(&[u8])) {
    for cut in 0..valid.len() {
        check(&valid[..cut]);
    }
    let mut v = valid.to_vec();
    for i in 0..v.len() {
        for bit in 0..8 {
            v[i] ^= 1 << bit;
            check(&v);
            v[i] ^= 1 << bit;
        }
    }
    for i in 0..valid.len() {
        for huge in [u64::MAX, 1 << 62, u64::from(u32::MAX), 1 << 31] {
            let mut v = valid.to_vec();
            for (o, b) in v[i..].iter_mut().zip(huge.to_le_bytes()) {
                *o = b;
            }
            check(&v);
            let mut v = valid.to_vec();
            for (o, b) in v[i..].iter_mut().zip((huge as u32).to_le_bytes()) {
                *o = b;
            }
            check(&v);
        }
    }
}

#[test]
fn every_damage_to_a_tree() {
    let valid = sample_tree().encode();
    every_damage(&valid, |b| {
        if let Ok(t) = Tree::decode(b, "tree") {
            assert_eq!(t.encode(), b);
        }
    });
}

#[test]
fn every_damage_to_a_snapshot() {
    let key = key();
    let s = sample_snapshot();
    let plain = codec::encode(&s);
    let header = file_header(b"CAIRNSNP");
    every_damage(&plain, |b| {
        if let Ok(d) = Snapshot::decode(&sealed_file(&key, &header, b), &key, "snapshot") {
            assert_eq!(codec::encode(&d), b);
        }
    });
    let (_, file) = s.encode(&key);
    every_damage(&file, |b| {
        if b != file {
            assert!(Snapshot::decode(b, &key, "snapshot").is_err());
        }
    });
}

#[test]
fn every_damage_to_a_pack_header() {
    let key = key();
    let blobs = vec![vec![1u8; 1000], b"abc".to_vec(), vec![]];
    let p = build_pack(&key, BlobKind::Data, &blobs, 3);
    let plain = codec::encode(&p.header);
    let n = p.bytes.len();
    let sealed_len = u32::from_le_bytes(p.bytes[n - 12..n - 8].try_into().unwrap());
    let body = &p.bytes[pack::HEADER_LEN..n - pack::trailer_len() - sealed_len as usize];
    every_damage(&plain, |b| {
        let _ = pack::decode_header(&pack_with_header(&key, body, b), &key, "pack");
    });
    // Blob bytes are not covered by the header, so only no-panic here.
    every_damage(&p.bytes, |b| {
        let _ = pack::decode_header(b, &key, "pack");
    });
}

#[test]
fn every_damage_to_an_index_table() {
    let key = key();
    let entry = |b: u8, off: u32| pack::PackEntry {
        id: BlobId([b; 32]),
        offset: off,
        length: 10,
        raw_length: 5,
    };
    let packs = vec![
        (
            PackId([7; 32]),
            BlobKind::Data,
            vec![entry(5, 12), entry(1, 22)],
        ),
        (PackId([8; 32]), BlobKind::Tree, vec![entry(3, 12)]),
    ];
    let bytes = build_index(&key, &packs);
    every_damage(&bytes, |b| exercise_index(b.to_vec(), &key));
}

#[test]
fn every_damage_to_a_config_and_lock() {
    let key = key();
    let c = Config {
        version: cairn::repo::config::VERSION,
        repo_id: [3; 32],
        chunker: ChunkerParams::default(),
        compression: 3,
        pack_size: 32 << 20,
        created_ns: 1,
        cipher: Cipher::Xaes256Gcm,
    };
    let plain = codec::encode(&c);
    every_damage(&plain, |b| {
        let repo_id = b.get(4..36).unwrap_or(&[0; 32]);
        if let Ok(d) = Config::decode(&config_file(&key, repo_id, b), &key) {
            assert_eq!(codec::encode(&d), b);
        }
    });
    let plain = codec::encode(&sample_lock());
    let header = file_header(b"CAIRNLCK");
    every_damage(&plain, |b| {
        if let Ok(d) = LockInfo::decode(&sealed_file(&key, &header, b), &key) {
            assert_eq!(codec::encode(&d), b);
        }
    });
}

#[test]
fn every_damage_to_a_key_file() {
    let file = keys::encode(&key(), PASSWORD, FAST).unwrap();
    every_damage(&file, |b| {
        if let Ok(info) = keys::info(b) {
            if info.params.memory_kib <= MAX_DECODE_KIB {
                let opened = keys::decode(b, PASSWORD);
                assert!(b == file || !matches!(opened, Ok(Some(_))));
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Regressions found by fuzzing.

/// Lane counts large enough to overflow `8 * lanes` must be rejected, not
/// panic (debug builds) or wrap (release builds).
#[test]
fn kdf_lane_count_overflow_is_rejected() {
    for lanes in [1 << 29, (1 << 29) + 1, u32::MAX / 8 + 1, u32::MAX] {
        let p = KdfParams {
            memory_kib: 64,
            iterations: 1,
            lanes,
        };
        assert!(p.validate().is_err(), "{p:?}");
        let mut file = keys::encode(&key(), PASSWORD, FAST).unwrap();
        file[20..24].copy_from_slice(&lanes.to_le_bytes());
        assert!(keys::info(&file).is_err());
        assert!(keys::decode(&file, PASSWORD).is_err());
    }
}
