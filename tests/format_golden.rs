//! Golden tests of the repository format: each stored structure is built
//! byte by byte from docs/FORMAT.md, by hand, and compared with what the
//! code writes; hand-made files are then given to the code's decoders.
//! Encryption and hashing are done here with the primitives named in the
//! spec (XChaCha20-Poly1305, XAES-256-GCM from AES and AES-256-GCM, BLAKE3,
//! Argon2id), not with cairn's helpers,
//! so a dependency upgrade or a drift between the code and the document
//! fails here. Last, a repository written by an earlier build, checked in
//! under tests/fixtures, must still open, list and restore.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use cairn::backend::mem::MemBackend;
use cairn::backend::{Backend, Data, FileKind};
use cairn::chunker::ChunkerParams;
use cairn::crypto::{Cipher, MasterKey};
use cairn::id::{BlobId, IndexId, PackId, SnapshotId};
use cairn::index::IndexTable;
use cairn::pack::{BlobKind, PackEntry, PackHeader, PackWriter};
use cairn::repo::keys::{self, KdfParams};
use cairn::repo::lock::{self, LockInfo};
use cairn::repo::Config;
use cairn::snapshot::{Snapshot, SnapshotKind, Summary};
use cairn::tree::{Name, Node, NodeKind, Tree, Xattr};
use common::{cairn, copy_dir, list_paths, run, Out};

/// A fixed master key: `Menc` = 0x00..0x1f, `Mid` = 0x20..0x3f.
fn raw_key() -> [u8; 64] {
    std::array::from_fn(|i| i as u8)
}

fn menc() -> [u8; 32] {
    raw_key()[..32].try_into().unwrap()
}

/// The master key of a version-1 repository (data sealed with
/// XChaCha20-Poly1305), in which most structures below are checked: their
/// layout is the same in version 2, only the cipher differs (see
/// `version_2_seals_data_with_xaes_256_gcm`).
fn master() -> MasterKey {
    MasterKey::from_bytes(raw_key()).with_cipher(Cipher::XChaCha20Poly1305)
}

/// XAES-256-GCM as C2SP specifies it, from RustCrypto's AES block cipher
/// (the key derivation) and aws-lc's AES-256-GCM: `sealed(p, aad)` with a
/// chosen nonce under `KX = DK("cairn 2026-12 xaes-256-gcm", Menc)`.
fn xaes_seal(nonce: [u8; 24], plain: &[u8], aad: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &xaes_subkey(&nonce)).unwrap());
    let mut out = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(&nonce[12..]).unwrap(),
        Aad::from(aad),
        &mut out,
    )
    .unwrap();
    [&nonce[..], &out].concat()
}

#[track_caller]
fn xaes_open(sealed: &[u8], aad: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let nonce: [u8; 24] = sealed[..24].try_into().unwrap();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &xaes_subkey(&nonce)).unwrap());
    let mut out = sealed[24..].to_vec();
    let plain = key
        .open_in_place(
            Nonce::try_assume_unique_for_key(&nonce[12..]).unwrap(),
            Aad::from(aad),
            &mut out,
        )
        .expect("sealed with XAES-256-GCM as FORMAT.md says");
    plain.to_vec()
}

/// XAES-256-GCM's one-message key (FORMAT.md, Conventions).
fn xaes_subkey(nonce: &[u8; 24]) -> [u8; 32] {
    use aes::cipher::{BlockEncrypt, KeyInit as _};
    let kx = blake3::derive_key("cairn 2026-12 xaes-256-gcm", &menc());
    let aes = aes::Aes256::new_from_slice(&kx).unwrap();
    let mut l = aes::Block::default();
    aes.encrypt_block(&mut l);
    let l = u128::from_be_bytes(l.into());
    let k1 = (l << 1) ^ if l >> 127 == 1 { 0x87 } else { 0 };
    let mut out = [0u8; 32];
    for (i, half) in out.chunks_exact_mut(16).enumerate() {
        let mut m = [0u8; 16];
        m[..4].copy_from_slice(&[0, 1 + i as u8, b'X', 0]);
        m[4..].copy_from_slice(&nonce[..12]);
        let mut block = aes::Block::from((u128::from_be_bytes(m) ^ k1).to_be_bytes());
        aes.encrypt_block(&mut block);
        half.copy_from_slice(&block);
    }
    out
}

/// `Kid` and `Kmac` as the Keys section defines them.
fn kid() -> [u8; 32] {
    blake3::derive_key("cairn 2026-11 blob id", &raw_key()[32..])
}

fn kmac() -> [u8; 32] {
    blake3::derive_key("cairn 2026-11 index mac", &raw_key()[32..])
}

/// `sealed(p, aad)` with a chosen nonce.
fn seal(key: &[u8; 32], nonce: [u8; 24], plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new_from_slice(key).unwrap();
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .unwrap();
    assert_eq!(ct.len(), plain.len() + 16, "ciphertext || 16-byte tag");
    [&nonce[..], &ct].concat()
}

/// Opens `sealed(p, aad)`: nonce (24) || ciphertext || tag (16).
#[track_caller]
fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new_from_slice(key).unwrap();
    cipher
        .decrypt(
            XNonce::from_slice(&sealed[..24]),
            Payload {
                msg: &sealed[24..],
                aad,
            },
        )
        .expect("sealed as FORMAT.md says")
}

/// Little-endian writer for the encoding rules of FORMAT.md.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(mut self, v: u8) -> Enc {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Enc {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Enc {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Enc {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Enc {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Fixed arrays and ids: their bytes, no length.
    fn raw(mut self, b: &[u8]) -> Enc {
        self.0.extend_from_slice(b);
        self
    }
    /// `Vec<u8>` and `String`: u64 length, then the bytes.
    fn bytes(self, b: &[u8]) -> Enc {
        self.u64(b.len() as u64).raw(b)
    }
    fn strings(self, v: &[&str]) -> Enc {
        v.iter()
            .fold(self.u64(v.len() as u64), |e, s| e.bytes(s.as_bytes()))
    }
    fn done(self) -> Vec<u8> {
        self.0
    }
}

fn name(s: &[u8]) -> Name {
    Name(s.to_vec())
}

/// A node with distinct values in every field, so a swapped field shows.
fn node(n: &[u8], kind: NodeKind, size: u64, xattrs: Vec<Xattr>) -> Node {
    Node {
        name: name(n),
        kind,
        mode: 0o4755,
        uid: 1000,
        gid: 100,
        user: "alice".into(),
        group: "users".into(),
        mtime_ns: 1_700_000_000_123_456_789,
        ctime_ns: -5,
        size,
        dev: 0x0803,
        inode: 0x1122_3344_5566,
        nlink: 2,
        xattrs,
    }
}

/// The fields of `node` after `kind`, by hand.
fn node_tail(e: Enc, size: u64, xattrs: &[(&[u8], &[u8])]) -> Enc {
    let e = e
        .u32(0o4755)
        .u32(1000)
        .u32(100)
        .bytes(b"alice")
        .bytes(b"users")
        .i64(1_700_000_000_123_456_789)
        .i64(-5)
        .u64(size)
        .u64(0x0803)
        .u64(0x1122_3344_5566)
        .u64(2)
        .u64(xattrs.len() as u64);
    xattrs.iter().fold(e, |e, (n, v)| e.bytes(n).bytes(v))
}

#[test]
fn tree_and_every_node_kind() {
    let (c1, c2, sub) = (BlobId([0xc1; 32]), BlobId([0xc2; 32]), BlobId([0xd0; 32]));
    let xattr = Xattr {
        name: name(b"user.a"),
        value: name(b"\x00\xff"),
    };
    let tree = Tree::new(vec![
        node(
            b"a-file",
            NodeKind::File {
                chunks: vec![c1, c2],
            },
            12345,
            vec![xattr],
        ),
        node(b"b-dir", NodeKind::Dir { subtree: sub }, 0, vec![]),
        node(
            b"c-link",
            NodeKind::Symlink {
                target: name(b"../x"),
            },
            0,
            vec![],
        ),
        node(b"d-fifo", NodeKind::Fifo, 0, vec![]),
        node(b"e-chr", NodeKind::CharDevice { rdev: 0x0501 }, 0, vec![]),
        node(b"f-blk", NodeKind::BlockDevice { rdev: 0x0802 }, 0, vec![]),
        node(b"g-sock", NodeKind::Socket, 0, vec![]),
    ]);

    // Tree { version: u32 = 1, nodes: Vec<Node> }
    let mut e = Enc::default().u32(1).u64(7);
    // 0 File { chunks: Vec<[u8; 32]> }
    e = e.bytes(b"a-file").u32(0).u64(2).raw(&c1.0).raw(&c2.0);
    e = node_tail(e, 12345, &[(b"user.a", b"\x00\xff")]);
    // 1 Dir { subtree }
    e = node_tail(e.bytes(b"b-dir").u32(1).raw(&sub.0), 0, &[]);
    // 2 Symlink { target: Vec<u8> }
    e = node_tail(e.bytes(b"c-link").u32(2).bytes(b"../x"), 0, &[]);
    // 3 Fifo
    e = node_tail(e.bytes(b"d-fifo").u32(3), 0, &[]);
    // 4 CharDevice { rdev: u64 }, 5 BlockDevice { rdev: u64 }
    e = node_tail(e.bytes(b"e-chr").u32(4).u64(0x0501), 0, &[]);
    e = node_tail(e.bytes(b"f-blk").u32(5).u64(0x0802), 0, &[]);
    // 6 Socket
    e = node_tail(e.bytes(b"g-sock").u32(6), 0, &[]);
    let want = e.done();

    assert_eq!(tree.encode(), want, "tree encoding differs from FORMAT.md");
    assert_eq!(Tree::decode(&want, "tree").unwrap(), tree);

    // A tree blob's id is KH(Kid, plaintext).
    assert_eq!(
        master().blob_id(&want).0,
        *blake3::keyed_hash(&kid(), &want).as_bytes()
    );

    // Trailing bytes and a version other than 1 are refused.
    let mut trailing = want.clone();
    trailing.push(0);
    assert!(Tree::decode(&trailing, "tree").is_err());
    let mut v2 = want.clone();
    v2[..4].copy_from_slice(&2u32.to_le_bytes());
    assert!(Tree::decode(&v2, "tree").is_err());
}

fn sample_snapshot() -> Snapshot {
    Snapshot {
        version: 1,
        time_ns: 1_700_000_000_000_000_001,
        host: "host".into(),
        user: "root".into(),
        set: "nightly".into(),
        kind: SnapshotKind::Differential,
        paths: vec!["/etc".into(), "/var/lib/app".into()],
        tags: vec!["t1".into()],
        parent: Some(SnapshotId([0x99; 32])),
        tree: BlobId([0x77; 32]),
        summary: Summary {
            files_new: 1,
            files_changed: 2,
            files_unmodified: 3,
            dirs: 4,
            errors: 5,
            bytes_read: 6,
            total_bytes: 7,
            blobs_added: 8,
            bytes_added: 9,
            bytes_stored: 10,
            duration_ns: 11,
        },
        excludes: Vec::new(),
        started_ns: 1_700_000_000_000_000_001,
    }
}

/// The snapshot of version 2: version 1's and the backup's excludes and
/// its start by the clock.
fn sample_snapshot_v2() -> Snapshot {
    Snapshot {
        version: 2,
        excludes: vec![name(b"*.log"), name(b"/srv/caf\xe9")],
        started_ns: 1_800_000_000_000_000_002,
        ..sample_snapshot()
    }
}

fn snapshot_plaintext(parent: Option<[u8; 32]>) -> Vec<u8> {
    let mut e = Enc::default()
        .u32(1)
        .i64(1_700_000_000_000_000_001)
        .bytes(b"host")
        .bytes(b"root")
        .bytes(b"nightly")
        .u32(2) // Differential
        .strings(&["/etc", "/var/lib/app"])
        .strings(&["t1"]);
    e = match parent {
        Some(p) => e.u8(1).raw(&p),
        None => e.u8(0),
    };
    e = e.raw(&[0x77; 32]);
    (1..=11).fold(e, |e, v| e.u64(v)).done()
}

/// A snapshot of version 2 is version 1's structure and, at its end,
/// `excludes: Vec<Bytes>` and `started_ns: i64`, under a header of
/// version 2.
#[test]
fn snapshot_file_version_2() {
    let header = [&b"CAIRNSNP"[..], &2u32.to_le_bytes()].concat();
    let (_, file) = sample_snapshot_v2().encode(&master());
    assert_eq!(&file[..12], &header[..]);
    let mut plain = snapshot_plaintext(Some([0x99; 32]));
    plain[..4].copy_from_slice(&2u32.to_le_bytes());
    let plain = Enc(plain)
        .u64(2)
        .bytes(b"*.log")
        .bytes(b"/srv/caf\xe9")
        .i64(1_800_000_000_000_000_002)
        .done();
    assert_eq!(open(&menc(), &file[12..], &header), plain);
    let made = [&header[..], &seal(&menc(), [5; 24], &plain, &header)].concat();
    assert_eq!(
        Snapshot::decode(&made, &master(), "snapshot").unwrap(),
        sample_snapshot_v2()
    );
    // A structure whose version is not its header's is damaged.
    let mut wrong = plain.clone();
    wrong[..4].copy_from_slice(&1u32.to_le_bytes());
    let made = [&header[..], &seal(&menc(), [6; 24], &wrong, &header)].concat();
    let e = Snapshot::decode(&made, &master(), "snapshot").unwrap_err();
    assert!(
        e.to_string()
            .contains("snapshot version 1 in a file of version 2"),
        "{e}"
    );
    // Version 1 leaves out what it cannot record.
    let v1 = Snapshot {
        version: 1,
        ..sample_snapshot_v2()
    };
    let (_, file) = v1.encode(&master());
    let back = Snapshot::decode(&file, &master(), "snapshot").unwrap();
    assert_eq!(back.excludes, Vec::<Name>::new());
    assert_eq!(back.started_ns, back.time_ns);
}

#[test]
fn snapshot_file() {
    let header = [&b"CAIRNSNP"[..], &1u32.to_le_bytes()].concat();
    let (id, file) = sample_snapshot().encode(&master());
    assert_eq!(&file[..12], &header[..]);
    let plain = snapshot_plaintext(Some([0x99; 32]));
    assert_eq!(file.len(), 12 + plain.len() + 40);
    assert_eq!(open(&menc(), &file[12..], &header), plain);
    assert_eq!(id.0, *blake3::hash(&file).as_bytes(), "named H(file)");

    // A hand-made file decodes; so does one without a parent.
    let made = [&header[..], &seal(&menc(), [3; 24], &plain, &header)].concat();
    assert_eq!(
        Snapshot::decode(&made, &master(), "snapshot").unwrap(),
        sample_snapshot()
    );
    let plain = snapshot_plaintext(None);
    let made = [&header[..], &seal(&menc(), [4; 24], &plain, &header)].concat();
    let snap = Snapshot::decode(&made, &master(), "snapshot").unwrap();
    assert_eq!(snap.parent, None);
    // The header is authenticated.
    let mut bad = made.clone();
    bad[11] = 0;
    bad[8] = 2;
    assert!(Snapshot::decode(&bad, &master(), "snapshot").is_err());
}

fn sample_config() -> Config {
    Config {
        version: 1,
        repo_id: [0x42; 32],
        chunker: ChunkerParams {
            min: 64 << 10,
            avg: 256 << 10,
            max: 1 << 20,
            seed: 0x0102_0304_0506_0708,
        },
        compression: -3,
        pack_size: 16 << 20,
        created_ns: 1_700_000_000_987_654_321,
        cipher: Cipher::XChaCha20Poly1305,
    }
}

/// The fields of `sample_config()` that every version has, in order.
fn config_fields(version: u32) -> Enc {
    Enc::default()
        .u32(version)
        .raw(&[0x42; 32])
        .u32(64 << 10)
        .u32(256 << 10)
        .u32(1 << 20)
        .u64(0x0102_0304_0506_0708)
        .i32(-3)
        .u32(16 << 20)
        .i64(1_700_000_000_987_654_321)
}

/// A version-1 config: the header and the structure say 1, there is no
/// cipher field, and the repository's data is sealed with
/// XChaCha20-Poly1305.
#[test]
fn config_file() {
    let header = [&b"CAIRNCFG"[..], &1u32.to_le_bytes(), &[0x42; 32]].concat();
    let plain = config_fields(1).done();
    let file = sample_config().encode(&master()).unwrap();
    assert_eq!(&file[..44], &header[..]);
    assert_eq!(open(&menc(), &file[44..], &header), plain);

    let made = [&header[..], &seal(&menc(), [5; 24], &plain, &header)].concat();
    assert_eq!(Config::decode(&made, &master()).unwrap(), sample_config());
    assert_eq!(Config::peek_repo_id(&made).unwrap(), [0x42; 32]);
}

/// A version-2 config (what `init` writes) names the cipher of the data
/// in a trailing u32, and is itself still sealed with XChaCha20-Poly1305
/// under `Menc`.
#[test]
fn config_file_version_2() {
    let header = [&b"CAIRNCFG"[..], &2u32.to_le_bytes(), &[0x42; 32]].concat();
    let plain = |cipher: u32| config_fields(2).u32(cipher).done();
    for (cipher, index) in [(Cipher::XChaCha20Poly1305, 0), (Cipher::Xaes256Gcm, 1)] {
        let config = Config {
            version: 2,
            cipher,
            ..sample_config()
        };
        let file = config.encode(&master()).unwrap();
        assert_eq!(&file[..44], &header[..]);
        assert_eq!(open(&menc(), &file[44..], &header), plain(index));
        let made = [&header[..], &seal(&menc(), [6; 24], &plain(index), &header)].concat();
        assert_eq!(Config::decode(&made, &master()).unwrap(), config);
    }
    let made = [&header[..], &seal(&menc(), [7; 24], &plain(2), &header)].concat();
    assert!(Config::decode(&made, &master()).is_err(), "no cipher 2");
}

/// In a repository whose config names XAES-256-GCM every sealed file but
/// the config and key files is sealed with it: checked here on a snapshot
/// and on a pack's blob and header, both ways.
#[test]
fn version_2_seals_data_with_xaes_256_gcm() {
    let key = MasterKey::from_bytes(raw_key()).with_cipher(Cipher::Xaes256Gcm);
    let header = [&b"CAIRNSNP"[..], &1u32.to_le_bytes()].concat();
    let (_, file) = sample_snapshot().encode(&key);
    let plain = snapshot_plaintext(Some([0x99; 32]));
    assert_eq!(file.len(), 12 + plain.len() + 40);
    assert_eq!(xaes_open(&file[12..], &header), plain);
    let made = [&header[..], &xaes_seal([8; 24], &plain, &header)].concat();
    assert_eq!(
        Snapshot::decode(&made, &key, "snapshot").unwrap(),
        sample_snapshot()
    );
    assert!(Snapshot::decode(&made, &master(), "snapshot").is_err());

    // Any sealed message: the same bytes both ways.
    let sealed = key.seal(b"blob bytes", b"aad");
    assert_eq!(xaes_open(&sealed, b"aad"), b"blob bytes");
    let made = xaes_seal([9; 24], b"blob bytes", b"aad");
    assert_eq!(key.open(&made, b"aad", "blob").unwrap(), b"blob bytes");
}

#[test]
fn key_file() {
    let params = KdfParams {
        memory_kib: 64,
        iterations: 1,
        lanes: 1,
    };
    let kek = |salt: &[u8]| {
        let p = argon2::Params::new(64, 1, 1, Some(32)).unwrap();
        let mut out = [0u8; 32];
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p)
            .hash_password_into(b"pw", salt, &mut out)
            .unwrap();
        out
    };
    let file = keys::encode(&master(), b"pw", params).unwrap();
    assert_eq!(file.len(), 160);
    let plain_part = Enc::default()
        .raw(b"CAIRNKEY")
        .u32(1)
        .u32(64)
        .u32(1)
        .u32(1)
        .done();
    assert_eq!(&file[..24], &plain_part[..]);
    let salt = &file[24..56];
    assert_eq!(open(&kek(salt), &file[56..], &file[..56]), raw_key());

    // A hand-made key file opens with its password only.
    let salt = [9u8; 32];
    let head = [&plain_part[..], &salt].concat();
    let made = [&head[..], &seal(&kek(&salt), [6; 24], &raw_key(), &head)].concat();
    assert_eq!(made.len(), 160);
    let opened = keys::decode(&made, b"pw").unwrap().expect("opens");
    assert_eq!(*opened.to_bytes(), raw_key());
    assert!(keys::decode(&made, b"other").unwrap().is_none());
    let info = keys::info(&made).unwrap();
    assert_eq!(info.params, params);
    assert_eq!(info.salt, hex::encode(salt));
}

#[test]
fn pack_file_and_blobs() {
    let key = master();
    let header = [&b"CAIRNPAK"[..], &1u32.to_le_bytes()].concat();
    let a = b"raw blob".to_vec();
    let b = vec![7u8; 5000];
    // Blobs: sealed(encoding byte || payload, aad = empty).
    let sealed_a = seal(&menc(), [1; 24], &[&[0u8][..], &a].concat(), b"");
    let zstd_b = zstd::bulk::compress(&b, 3).unwrap();
    let sealed_b = seal(&menc(), [2; 24], &[&[1u8][..], &zstd_b].concat(), b"");
    let (id_a, id_b) = (key.blob_id(&a), key.blob_id(&b));
    assert_eq!(id_a.0, *blake3::keyed_hash(&kid(), &a).as_bytes());

    let mut w = PackWriter::new(BlobKind::Data);
    w.add_sealed(id_a, &sealed_a, a.len() as u32).unwrap();
    w.add_sealed(id_b, &sealed_b, b.len() as u32).unwrap();
    let pack = w.finish(&key).unwrap();
    let bytes = &pack.bytes;

    let off_b = 12 + sealed_a.len() as u32;
    // version, kind (0 data, 1 tree), count, then (id, offset, length,
    // raw length) per blob.
    let header_of = |kind: u32| {
        Enc::default()
            .u32(1)
            .u32(kind)
            .u64(2)
            .raw(&id_a.0)
            .u32(12)
            .u32(sealed_a.len() as u32)
            .u32(a.len() as u32)
            .raw(&id_b.0)
            .u32(off_b)
            .u32(sealed_b.len() as u32)
            .u32(b.len() as u32)
            .done()
    };
    let pack_header = header_of(0);
    // "CAIRNPAK" || version || blobs || sealed header || u32 len || "CAIRNHDR"
    let n = bytes.len();
    assert_eq!(&bytes[..12], &header[..]);
    assert_eq!(&bytes[12..off_b as usize], &sealed_a[..]);
    let end_b = off_b as usize + sealed_b.len();
    assert_eq!(&bytes[off_b as usize..end_b], &sealed_b[..]);
    assert_eq!(&bytes[n - 8..], b"CAIRNHDR");
    let hlen = u32::from_le_bytes(bytes[n - 12..n - 8].try_into().unwrap()) as usize;
    assert_eq!(end_b + hlen + 12, n);
    assert_eq!(
        open(&menc(), &bytes[end_b..end_b + hlen], &header),
        pack_header
    );
    assert_eq!(pack.id, PackId(*blake3::hash(bytes).as_bytes()));

    // A hand-made tree pack decodes, and its blobs open.
    let made_header = header_of(1);
    let sealed_header = seal(&menc(), [8; 24], &made_header, &header);
    let made = [
        &header[..],
        &sealed_a,
        &sealed_b,
        &sealed_header,
        &(sealed_header.len() as u32).to_le_bytes(),
        b"CAIRNHDR",
    ]
    .concat();
    let entry = |id, offset, length: usize, raw: usize| PackEntry {
        id,
        offset,
        length: length as u32,
        raw_length: raw as u32,
    };
    assert_eq!(
        cairn::pack::decode_header(&made, &key, "pack").unwrap(),
        PackHeader {
            version: 1,
            kind: BlobKind::Tree,
            entries: vec![
                entry(id_a, 12, sealed_a.len(), a.len()),
                entry(id_b, off_b, sealed_b.len(), b.len()),
            ],
        }
    );
    let blob = |id, off: usize, len: usize, raw: usize| {
        cairn::pack::open_blob(&key, &id, &made[off..off + len], raw as u32, "blob").unwrap()
    };
    assert_eq!(blob(id_a, 12, sealed_a.len(), a.len()), a);
    assert_eq!(blob(id_b, off_b as usize, sealed_b.len(), b.len()), b);
}

#[test]
fn index_table() {
    let key = master();
    let e = |b: u8, off: u32| PackEntry {
        id: BlobId([b; 32]),
        offset: off,
        length: 100 + b as u32,
        raw_length: 50 + b as u32,
    };
    let mut builder = cairn::index::IndexBuilder::default();
    builder.add_pack(PackId([0xaa; 32]), BlobKind::Data, &[e(3, 12), e(1, 200)]);
    builder.add_pack(PackId([0xbb; 32]), BlobKind::Tree, &[e(2, 12)]);
    let tables = builder.clone().finish(&key, 2);

    let rec = |e: Enc, b: u8, pack: u32, off: u32| {
        e.raw(&[b; 32])
            .u32(pack)
            .u32(off)
            .u32(100 + b as u32)
            .u32(50 + b as u32)
    };
    let sealed = |enc: Enc| {
        let mut bytes = enc.done();
        let mac = *blake3::keyed_hash(&kmac(), &bytes).as_bytes();
        bytes.extend_from_slice(&mac);
        bytes
    };
    // Version 2: one table per kind, the trees' first.
    let head = |packs: u32, entries: u64| {
        Enc::default()
            .raw(b"CAIRNIDX")
            .u32(2)
            .u32(packs)
            .u64(entries)
    };
    let trees = sealed(rec(
        head(1, 1).raw(&[0xbb; 32]).raw(&[1, 0, 0, 0]),
        2,
        0,
        12,
    ));
    let data = head(1, 2).raw(&[0xaa; 32]).raw(&[0, 0, 0, 0]);
    let data = sealed(rec(rec(data, 1, 0, 200), 3, 0, 12));
    assert_eq!(trees.len(), 24 + 36 + 48 + 32);
    let want = [trees, data];
    assert_eq!(tables.len(), 2, "one table per kind of pack");
    for ((id, bytes), want) in tables.iter().zip(&want) {
        assert_eq!(bytes, want, "index table differs from FORMAT.md");
        assert_eq!(*id, IndexId(*blake3::hash(want).as_bytes()));
    }
    let table = IndexTable::parse(tables[0].0, Data::Owned(want[0].clone())).unwrap();
    table.check(&key).unwrap();
    let (blob, loc) = table
        .location_at(table.find(&BlobId([2; 32])).unwrap())
        .unwrap();
    assert_eq!(blob, BlobId([2; 32]));
    assert_eq!(
        (loc.pack, loc.kind, loc.offset, loc.length, loc.raw_length),
        (PackId([0xbb; 32]), BlobKind::Tree, 12, 102, 52)
    );

    // Version 1, as cairn writes it into a repository of format version 2
    // or 1 (and wrote it before): one table of both kinds, still read, and
    // searched for blobs of either kind.
    let mut old = Enc::default()
        .raw(b"CAIRNIDX")
        .u32(1)
        .u32(2) // P
        .u64(3) // E
        .raw(&[0xaa; 32])
        .raw(&[0, 0, 0, 0])
        .raw(&[0xbb; 32])
        .raw(&[1, 0, 0, 0]);
    old = rec(old, 1, 0, 200);
    old = rec(old, 2, 1, 12);
    old = rec(old, 3, 0, 12);
    let old = sealed(old);
    assert_eq!(old.len(), 24 + 36 * 2 + 48 * 3 + 32);
    let old_id = IndexId(*blake3::hash(&old).as_bytes());
    assert_eq!(builder.finish(&key, 1), [(old_id, old.clone())]);
    let table = IndexTable::parse(old_id, Data::Owned(old.clone())).unwrap();
    table.check(&key).unwrap();
    assert!(table.holds(BlobKind::Data) && table.holds(BlobKind::Tree));
    let backend = MemBackend::default();
    backend.create().unwrap();
    backend
        .write(FileKind::Index, &old_id.to_hex(), &old)
        .unwrap();
    let set = cairn::index::IndexSet::load(&backend).unwrap();
    let tree = set.locate_kind(&BlobId([2; 32]), BlobKind::Tree).unwrap();
    assert_eq!((tree.pack, tree.kind), (PackId([0xbb; 32]), BlobKind::Tree));
    let chunk = set.locate_kind(&BlobId([1; 32]), BlobKind::Data).unwrap();
    assert_eq!((chunk.pack, chunk.offset), (PackId([0xaa; 32]), 200));
    assert!(set.contains_kind(&BlobId([3; 32]), BlobKind::Data));
    assert!(set.contains_kind(&BlobId([2; 32]), BlobKind::Tree));
}

#[test]
fn lock_file() {
    let key = master();
    let backend: Arc<MemBackend> = Arc::new(MemBackend::default());
    backend.create().unwrap();
    let guard = lock::acquire(backend.clone(), &key, true, "golden", Duration::ZERO).unwrap();
    let names = backend.list(FileKind::Lock).unwrap();
    assert_eq!(names.len(), 1);
    let file = backend.read(FileKind::Lock, &names[0]).unwrap().to_vec();
    let header = [&b"CAIRNLCK"[..], &1u32.to_le_bytes()].concat();
    assert_eq!(&file[..12], &header[..]);
    let info = LockInfo::decode(&file, &key).unwrap();
    // The pid namespace rides in the host string, read here from /proc
    // as namespaces(7) and random(4) describe it.
    let ns_inode = fs::read_link("/proc/self/ns/pid").unwrap();
    let ns_inode = ns_inode.to_str().unwrap();
    let ns_inode = &ns_inode["pid:[".len()..ns_inode.len() - 1];
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(info.host, cairn::hostname());
    let ns = info.pid_namespace.clone().unwrap();
    assert_eq!(
        (ns.inode.to_string().as_str(), ns.boot_id.as_str()),
        (ns_inode, boot_id.trim())
    );
    let stored_host = |info: &LockInfo| match &info.pid_namespace {
        Some(ns) => format!("{} [pid ns {}, boot {}]", info.host, ns.inode, ns.boot_id),
        None => info.host.clone(),
    };
    let plain = |info: &LockInfo| {
        Enc::default()
            .u32(1)
            .bytes(stored_host(info).as_bytes())
            .u32(info.pid)
            .i64(info.time_ns)
            .u8(info.exclusive as u8)
            .bytes(info.command.as_bytes())
            .done()
    };
    assert_eq!(open(&menc(), &file[12..], &header), plain(&info));
    assert_eq!(
        (info.pid, info.exclusive, info.command.as_str()),
        (std::process::id(), true, "golden")
    );
    assert_eq!(names[0], hex::encode(blake3::hash(&file).as_bytes()));
    drop(guard);

    // An older cairn's lock (no namespace), and one with it.
    let older = LockInfo {
        version: 1,
        host: "elsewhere".into(),
        pid: 4242,
        pid_namespace: None,
        time_ns: 1_600_000_000_000_000_000,
        exclusive: false,
        command: "backup".into(),
    };
    let with_ns = LockInfo {
        pid_namespace: Some(lock::PidNamespace {
            inode: 4026531836,
            boot_id: "f151b0d6-7e50-4683-bc62-71b0e2acbcb2".into(),
        }),
        ..older.clone()
    };
    assert_eq!(
        stored_host(&with_ns),
        "elsewhere [pid ns 4026531836, boot f151b0d6-7e50-4683-bc62-71b0e2acbcb2]"
    );
    for made_info in [older, with_ns] {
        let made = [
            &header[..],
            &seal(&menc(), [7; 24], &plain(&made_info), &header),
        ]
        .concat();
        assert_eq!(LockInfo::decode(&made, &key).unwrap(), made_info);
    }
}

/// `tests/fixtures/repo-v1` was made by format version 1 with
/// `cairn init --kdf-memory-kib 64 --kdf-iterations 1 --chunk-min 64K
/// --chunk-avg 256K --chunk-max 1M` and one `cairn backup
/// /tmp/cairn-fixture-src --host fixture --set fixture --tag v1` of the
/// tree checked below; `tests/fixtures/repo-v2` the same way by format
/// version 2 (data sealed with XAES-256-GCM), tagged `v2`, and
/// `tests/fixtures/repo-v3` by format version 3 (a table of trees and one
/// of data, index tables of version 2), tagged `v3`, and
/// `tests/fixtures/repo-v4` by format version 4 with
/// `CAIRN_TEST_TREE_PART=1` for the backup (every directory of the source
/// in parts of one entry), tagged `v4`, and `tests/fixtures/repo-v5` by
/// format version 5 (a snapshot of version 2) from the source with a file
/// `scratch.tmp` more, backed up with `--exclude '*.tmp' --exclude
/// 'cache/'`, tagged `v5`.
const FIXTURE_PASSWORD: &str = "fixture password";

#[test]
fn checked_in_repository_opens_lists_and_restores() {
    checked_in_repository(
        "repo-v1",
        "9e3c2c21ac8e1906eacb8b03c597b7a875865233782a368a4d4bcd2fefe76ccf",
        "v1",
        "xchacha20-poly1305",
    );
}

#[test]
fn checked_in_version_2_repository_opens_lists_and_restores() {
    checked_in_repository(
        "repo-v2",
        "a5c6003534f400c5955c3e8246d1d7b16ba5b14285c9e06b9237c1bbfb5ef83e",
        "v2",
        "xaes-256-gcm",
    );
}

#[test]
fn checked_in_version_3_repository_opens_lists_and_restores() {
    checked_in_repository(
        "repo-v3",
        "bb469089f80d6c3665ed769da23ad7f186df49037152e46a4f6e2cec19669b63",
        "v3",
        "xaes-256-gcm",
    );
}

/// Every directory of `repo-v4`'s source is stored in parts of one
/// entry: its folder's tree blob lists four parts, `dir`'s two.
#[test]
fn checked_in_version_4_repository_opens_lists_and_restores() {
    checked_in_repository(
        "repo-v4",
        "fb24eeb9e4fe12e79225b369bf28ade66cf54c4fbd6ecc815a64f53d0e73ecc1",
        "v4",
        "xaes-256-gcm",
    );
    let (_dir, repo) = fixture_copy("repo-v4");
    let cmd = |args: &[&str]| fixture_cmd(&repo, args);
    for (tree, parts) in [
        (
            "b52bd5c8015698d87ea54e915f26825ebb6211612152828c5ac54157b3fbf499",
            4,
        ),
        (
            "50889f28e2a4ff5f3396d347d3d7e9115268fdd4ccec8caa215d5a3222cd471a",
            2,
        ),
    ] {
        let listed = cmd(&["cat", "tree", tree]).success().json();
        assert_eq!(listed["version"], 2, "{listed}");
        assert_eq!(listed["parts"].as_array().unwrap().len(), parts, "{listed}");
    }
}

/// `repo-v5`'s snapshot, of version 2, records its backup's excludes, and
/// a mirror over the source leaves what they match.
#[test]
fn checked_in_version_5_repository_opens_lists_and_restores() {
    checked_in_repository(
        "repo-v5",
        "c252a21b784a3890c00d33bc882580570d6429cafee526ca08b9d0da5492123e",
        "v5",
        "xaes-256-gcm",
    );
    let (dir, repo) = fixture_copy("repo-v5");
    let cmd = |args: &[&str]| fixture_cmd(&repo, args);
    let snap = cmd(&["cat", "snapshot", "c252a21b"]).success().json();
    assert_eq!(snap["version"], 2, "{snap}");
    assert_eq!(
        snap["excludes"],
        serde_json::json!(["*.tmp", "cache/"]),
        "{snap}"
    );
    assert_eq!(snap["started_ns"], snap["time_ns"], "{snap}");
    let target = dir.path().join("mirror");
    let r = target.join("tmp/cairn-fixture-src");
    fs::create_dir_all(&r).unwrap();
    fs::write(r.join("scratch.tmp"), b"excluded").unwrap();
    fs::write(r.join("gone.txt"), b"not in it").unwrap();
    let out = cmd(&[
        "restore",
        "latest",
        "--policy",
        "mirror",
        "--target",
        target.to_str().unwrap(),
    ])
    .success();
    assert!(r.join("scratch.tmp").is_file(), "{out}");
    assert!(!r.join("gone.txt").exists(), "{out}");
}

/// A copy of the checked-in repository `name` (in the returned folder),
/// so commands never touch the checked-in files.
fn fixture_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
        &repo,
    );
    (dir, repo)
}

/// `cairn -r REPO ARGS` with the fixtures' password.
fn fixture_cmd(repo: &Path, args: &[&str]) -> Out {
    let mut c = cairn();
    c.arg("-r").arg(repo).args(args);
    c.env("CAIRN_PASSWORD", FIXTURE_PASSWORD);
    run(&mut c, None)
}

/// Lists, inspects and restores the checked-in repository `name`, whose
/// one snapshot `id` (tagged `version`) holds the tree described above.
fn checked_in_repository(name: &str, id: &str, version: &str, cipher: &str) {
    let (dir, repo) = fixture_copy(name);
    let cmd = |args: &[&str]| fixture_cmd(&repo, args);

    let snaps = cmd(&["snapshots", "--json"]).success().json();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1);
    let s = &snaps[0];
    assert_eq!(s["id"], id);
    assert_eq!(
        (&s["host"], &s["set"], &s["kind"]),
        (
            &serde_json::json!("fixture"),
            &serde_json::json!("fixture"),
            &serde_json::json!("full")
        )
    );
    assert_eq!(s["paths"], serde_json::json!(["/tmp/cairn-fixture-src"]));
    assert_eq!(s["tags"], serde_json::json!([version]));

    let config = cmd(&["cat", "config"]).success().json();
    assert_eq!(config["version"], version[1..].parse::<u32>().unwrap());
    assert_eq!(config["cipher"], cipher);
    assert_eq!(config["chunker"]["min"], 64 << 10, "{config}");
    assert_eq!(config["chunker"]["max"], 1 << 20, "{config}");

    let ls = cmd(&["ls", "latest", "/tmp/cairn-fixture-src"]).success();
    assert_eq!(
        ls.stdout,
        "/tmp/cairn-fixture-src/dir\n\
         /tmp/cairn-fixture-src/dir/data.bin\n\
         /tmp/cairn-fixture-src/dir/link\n\
         /tmp/cairn-fixture-src/empty\n\
         /tmp/cairn-fixture-src/empty-dir\n\
         /tmp/cairn-fixture-src/hello.txt\n",
        "{ls}"
    );

    let target = dir.path().join("target");
    let mut c = cairn();
    c.arg("-r")
        .arg(&repo)
        .args(["restore", &id[..8], "--target"]);
    c.arg(&target).env("CAIRN_PASSWORD", FIXTURE_PASSWORD);
    run(&mut c, None).success();
    let r = target.join("tmp/cairn-fixture-src");
    let names: Vec<String> = list_paths(&r)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "dir",
            "dir/data.bin",
            "dir/link",
            "empty",
            "empty-dir",
            "hello.txt"
        ]
    );
    assert_eq!(fs::read(r.join("hello.txt")).unwrap(), b"hello, cairn\n");
    assert_eq!(fs::read(r.join("empty")).unwrap(), b"");
    let data: Vec<u8> = (0..3000usize)
        .map(|i| ((i * 7 + i / 251) % 256) as u8)
        .collect();
    assert_eq!(fs::read(r.join("dir/data.bin")).unwrap(), data);
    assert_eq!(
        fs::read_link(r.join("dir/link")).unwrap(),
        Path::new("../hello.txt")
    );
    let md = |p: &str| fs::symlink_metadata(r.join(p)).unwrap();
    assert_eq!(md("dir/data.bin").mode() & 0o7777, 0o600);
    assert_eq!(md("dir").mode() & 0o7777, 0o750);
    assert_eq!(
        (md("hello.txt").mtime(), md("hello.txt").mtime_nsec()),
        (1_600_000_000, 500_000_000)
    );
    assert_eq!(md("empty-dir").mtime(), 1_600_000_100);
    assert_eq!(md("").mtime(), 1_600_000_200);
}

/// A version-1 repository stays version 1: a backup into it by this
/// cairn seals its new files with XChaCha20-Poly1305 (so the cairn that
/// made it can still read them), leaves its config as it was, and reads
/// back byte for byte.
#[test]
fn version_1_repository_takes_new_backups_sealed_as_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1"),
        &repo,
    );
    let config_before = fs::read(repo.join("config")).unwrap();
    let cmd = |args: &[&str]| -> Out {
        let mut c = cairn();
        c.arg("-r").arg(&repo).args(args);
        c.env("CAIRN_PASSWORD", FIXTURE_PASSWORD);
        run(&mut c, None)
    };
    let config = cmd(&["cat", "config"]).success().json();
    assert_eq!(config["version"], 1, "{config}");
    assert_eq!(config["cipher"], "xchacha20-poly1305", "{config}");

    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    fs::write(src.join("new.bin"), &data).unwrap();
    let src_arg = src.to_str().unwrap();
    cmd(&["backup", src_arg]).success();
    assert_eq!(fs::read(repo.join("config")).unwrap(), config_before);
    cmd(&["verify", "--read-data"]).success();

    // The new snapshot file opens with XChaCha20-Poly1305 under the
    // fixture's encryption key, taken from its key file with the password.
    let keyfile = fs::read_dir(repo.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let key = keys::decode(
        &fs::read(keyfile.path()).unwrap(),
        FIXTURE_PASSWORD.as_bytes(),
    )
    .unwrap()
    .unwrap();
    let menc: [u8; 32] = key.to_bytes()[..32].try_into().unwrap();
    let mut opened = 0;
    for e in fs::read_dir(repo.join("snapshots")).unwrap() {
        let file = fs::read(e.unwrap().path()).unwrap();
        let plain = open(&menc, &file[12..], &file[..12]);
        assert!(!plain.is_empty());
        opened += 1;
    }
    assert_eq!(opened, 2, "the fixture's snapshot and the new one");

    let target = dir.path().join("target");
    cmd(&["restore", "latest", "--target", target.to_str().unwrap()]).success();
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(restored.join("new.bin")).unwrap(), data);
}

/// A repository made by an older cairn (format version 1 or 2) keeps
/// index tables that cairn reads: a backup into it writes one table of
/// format version 1 naming packs of both kinds, as that cairn did, and gc
/// and `repair index` write tables of version 1 too, where a repository of
/// version 3 gets a table of each kind in version 2.
#[test]
fn older_repositories_get_index_tables_their_cairn_reads() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.txt"), b"some new content").unwrap();
    let versions = |repo: &Path| -> Vec<u32> {
        let mut v: Vec<u32> = fs::read_dir(repo.join("index"))
            .unwrap()
            .map(|e| {
                let bytes = fs::read(e.unwrap().path()).unwrap();
                assert_eq!(&bytes[..8], b"CAIRNIDX");
                u32::from_le_bytes(bytes[8..12].try_into().unwrap())
            })
            .collect();
        v.sort_unstable();
        v
    };
    for (name, made_before) in [("repo-v1", true), ("repo-v2", true), ("new", false)] {
        let repo = dir.path().join(name);
        let cmd = |args: &[&str]| -> Out {
            let mut c = cairn();
            c.arg("-r").arg(&repo).args(args);
            c.env("CAIRN_PASSWORD", FIXTURE_PASSWORD);
            run(&mut c, None)
        };
        if made_before {
            copy_dir(
                &Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures")
                    .join(name),
                &repo,
            );
            assert_eq!(versions(&repo), [1], "{name}");
        } else {
            cmd(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]).success();
            let config = cmd(&["cat", "config"]).success().json();
            assert_eq!(config["version"], cairn::repo::config::VERSION, "{config}");
        }
        cmd(&["backup", src.to_str().unwrap()]).success();
        let want: &[u32] = if made_before { &[1, 1] } else { &[2, 2] };
        assert_eq!(versions(&repo), want, "{name}");
        // So do snapshots: version 1 where the repository's cairn reads no
        // other.
        let want: &[u32] = if made_before { &[1, 1] } else { &[2] };
        assert_eq!(snapshot_versions(&repo), want, "{name}");
        cmd(&["verify", "--read-data"]).success();
        // Every writer of tables keeps to the repository's version: gc's
        // merge and `repair index` (one table in all, or one per kind).
        cmd(&["gc", "--max-unused", "0%"]).success();
        cmd(&["repair", "index"]).success();
        let want: &[u32] = if made_before { &[1] } else { &[2, 2] };
        assert_eq!(versions(&repo), want, "{name} after repair index");
        cmd(&["verify", "--read-data"]).success();
        let target = dir.path().join(format!("{name}-target"));
        cmd(&["restore", "latest", "--target", target.to_str().unwrap()]).success();
        let restored = target.join(src.strip_prefix("/").unwrap());
        assert_eq!(
            fs::read(restored.join("a.txt")).unwrap(),
            b"some new content"
        );
    }
}

/// A folder `src` in `dir` of 100 small files, `f000` to `f099`.
fn hundred_files(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..100 {
        fs::write(src.join(format!("f{i:03}")), format!("file {i}")).unwrap();
    }
    src
}

/// Backs up `src` (from [`hundred_files`]) with `cmd`, which runs cairn
/// on one repository; returns the snapshot's id and `src`'s tree blob as
/// `cat tree` prints it.
fn backup_hundred(cmd: &dyn Fn(&[&str]) -> Out, src: &Path) -> (String, serde_json::Value) {
    let snap = cmd(&["backup", "--json", src.to_str().unwrap()])
        .success()
        .json();
    let id = snap["id"].as_str().unwrap().to_string();
    let parent = src.parent().unwrap().to_str().unwrap();
    let listing = cmd(&["ls", "--json", &id, parent]).success();
    let node: serde_json::Value = listing
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|n| n["name"] == "src")
        .unwrap();
    let tree = node["kind"]["dir"]["subtree"].as_str().unwrap();
    let tree = cmd(&["cat", "tree", tree]).success().json();
    (id, tree)
}

/// Restores snapshot `id` of [`backup_hundred`] with `cmd` into `target`
/// and checks `src`'s files came back.
fn restores_hundred(cmd: &dyn Fn(&[&str]) -> Out, id: &str, src: &Path, target: &Path) {
    cmd(&["restore", id, "--target", target.to_str().unwrap()]).success();
    let back = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(back.join("f042")).unwrap(), b"file 42");
    assert_eq!(fs::read_dir(&back).unwrap().count(), 100);
}

/// A repository of format 3 or older keeps every directory in one tree
/// blob, which the cairn that made it reads: a backup of a directory
/// that a repository of format 4 stores in parts (here with parts of a
/// few entries) writes it whole.
#[test]
fn older_repositories_keep_directories_whole() {
    let dir = tempfile::tempdir().unwrap();
    let src = hundred_files(dir.path());
    for (name, parted) in [("repo-v3", false), ("new", true)] {
        let repo = dir.path().join(name);
        let cmd = |args: &[&str]| -> Out {
            let mut c = cairn();
            c.arg("-r").arg(&repo).args(args);
            c.env("CAIRN_PASSWORD", FIXTURE_PASSWORD);
            c.env("CAIRN_TEST_TREE_PART", "8");
            run(&mut c, None)
        };
        if name == "new" {
            cmd(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]).success();
        } else {
            copy_dir(
                &Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures")
                    .join(name),
                &repo,
            );
        }
        let (id, tree) = backup_hundred(&cmd, &src);
        let version = if parted { 2 } else { 1 };
        assert_eq!(tree["version"], version, "{name}: {tree}");
        let target = dir.path().join(format!("{name}-target"));
        restores_hundred(&cmd, &id, &src, &target);
    }
}

/// The format version of each snapshot file of `repo`, from its header.
fn snapshot_versions(repo: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| {
            let bytes = fs::read(e.unwrap().path()).unwrap();
            assert_eq!(&bytes[..8], b"CAIRNSNP");
            u32::from_le_bytes(bytes[8..12].try_into().unwrap())
        })
        .collect();
    v.sort_unstable();
    v
}

/// The format version of each index table of `repo`, from its header.
fn table_versions(repo: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = fs::read_dir(repo.join("index"))
        .unwrap()
        .map(|e| {
            let bytes = fs::read(e.unwrap().path()).unwrap();
            u32::from_le_bytes(bytes[8..12].try_into().unwrap())
        })
        .collect();
    v.sort();
    v
}

/// `cairn upgrade` raises a repository of an older format to the latest
/// (5) and changes nothing else: a dry run writes nothing; the config keeps its
/// id, chunker, cipher and the rest; the old snapshot restores as before;
/// backups then write what the newer formats add (index tables of one
/// kind each, a large directory in parts, snapshots of version 2);
/// verify and gc pass over old
/// and new together; a second upgrade has nothing to do.
#[test]
fn upgrade_raises_older_repositories_to_the_latest_format() {
    let latest = cairn::repo::config::VERSION;
    for (name, from, cipher) in [
        ("repo-v1", 1, "xchacha20-poly1305"),
        ("repo-v3", 3, "xaes-256-gcm"),
        ("repo-v4", 4, "xaes-256-gcm"),
    ] {
        let (dir, repo) = fixture_copy(name);
        let cmd = |args: &[&str]| -> Out {
            let mut c = cairn();
            c.arg("-r").arg(&repo).args(args);
            c.env("CAIRN_PASSWORD", FIXTURE_PASSWORD)
                .env("CAIRN_TEST_TREE_PART", "8");
            run(&mut c, None)
        };
        let before = cmd(&["cat", "config"]).success().json();
        let config_bytes = fs::read(repo.join("config")).unwrap();
        let tables_before = table_versions(&repo);
        let old_tables = if from >= 3 { 2 } else { 1 };
        assert!(
            tables_before.iter().all(|&v| v == old_tables),
            "{name}: {tables_before:?}"
        );
        let fixture_snapshot = cmd(&["snapshots", "--json"]).success().json()[0]["id"]
            .as_str()
            .unwrap()
            .to_string();

        let dry = cmd(&["upgrade", "--dry-run", "--json"]).success().json();
        assert_eq!(
            dry,
            serde_json::json!({"from": from, "to": latest, "upgraded": false, "dry_run": true}),
            "{name}"
        );
        assert_eq!(
            fs::read(repo.join("config")).unwrap(),
            config_bytes,
            "{name}"
        );
        let done = cmd(&["upgrade"]).success();
        assert!(
            done.stdout.starts_with("upgraded repository")
                && done
                    .stdout
                    .contains(&format!("from format {from} to {latest}")),
            "{name}: {done}"
        );
        let after = cmd(&["cat", "config"]).success().json();
        assert_eq!(after["version"], latest, "{name}: {after}");
        assert_eq!(after["cipher"], cipher, "{name}: {after}");
        for field in [
            "repo_id",
            "chunker",
            "compression",
            "pack_size",
            "created_ns",
            "cipher",
        ] {
            assert_eq!(after[field], before[field], "{name}: {field}");
        }

        // What was stored reads as before.
        let restores_the_fixture = |to: &str| {
            let target = dir.path().join(to);
            cmd(&[
                "restore",
                &fixture_snapshot,
                "--target",
                target.to_str().unwrap(),
            ])
            .success();
            assert_eq!(
                fs::read(target.join("tmp/cairn-fixture-src/hello.txt")).unwrap(),
                b"hello, cairn\n",
                "{name}"
            );
        };
        restores_the_fixture("old");

        // A large directory backed up now is stored in parts, indexed in
        // tables of one kind each.
        let src = hundred_files(dir.path());
        let (id, tree) = backup_hundred(&cmd, &src);
        assert_eq!(tree["version"], 2, "{name}: {tree}");
        let tables_after = table_versions(&repo);
        assert!(tables_after.contains(&2), "{name}: {tables_after:?}");
        assert_eq!(snapshot_versions(&repo), [1, 2], "{name}");

        cmd(&["verify", "--read-data"]).success();
        cmd(&["gc", "--max-unused", "0%"]).success();
        cmd(&["verify", "--read-data"]).success();
        restores_hundred(&cmd, &id, &src, &dir.path().join("new"));
        restores_the_fixture("old-again");

        let again = cmd(&["upgrade", "--json"]).success().json();
        assert_eq!(
            again,
            serde_json::json!({"from": latest, "to": latest, "upgraded": false, "dry_run": false}),
            "{name}"
        );
        let current = cmd(&["upgrade"]).success();
        assert!(current.stdout.contains("nothing to do"), "{current}");
    }
}

/// An upgrade takes the exclusive lock: while a backup holds its lock it
/// is refused, naming the holder, and the config stays as it was; a dry
/// run, which only reads, goes ahead; once the backup is done the upgrade
/// runs.
#[test]
fn upgrade_waits_for_no_backup() {
    use std::io::Write;
    let (_dir, repo) = fixture_copy("repo-v3");
    let config_bytes = fs::read(repo.join("config")).unwrap();
    let mut backup = cairn();
    backup
        .arg("-r")
        .arg(&repo)
        .args(["backup", "--stdin", "--stdin-filename", "x"])
        .env("CAIRN_PASSWORD", FIXTURE_PASSWORD)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = backup.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let start = std::time::Instant::now();
    // The fixture has no `locks/` until the backup makes it, and a lock
    // is written under a temporary name first.
    let locks = || {
        fs::read_dir(repo.join("locks")).map_or(0, |d| {
            d.filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
        })
    };
    while locks() == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "no lock");
        std::thread::sleep(Duration::from_millis(10));
    }

    let refused = fixture_cmd(&repo, &["upgrade"]);
    assert_eq!(refused.code, 11, "{refused}");
    assert!(refused.stderr.contains("backup"), "{refused}");
    assert_eq!(fs::read(repo.join("config")).unwrap(), config_bytes);
    let dry = fixture_cmd(&repo, &["upgrade", "--dry-run"]).success();
    assert!(dry.stdout.starts_with("would upgrade"), "{dry}");

    stdin.write_all(b"some data").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    fixture_cmd(&repo, &["upgrade"]).success();
    let config = fixture_cmd(&repo, &["cat", "config"]).success().json();
    assert_eq!(config["version"], cairn::repo::config::VERSION, "{config}");
}
