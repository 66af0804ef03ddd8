//! Helpers shared by the fuzz targets (each target uses a subset).
#![allow(dead_code)]

use std::sync::OnceLock;

use cairn::crypto::MasterKey;

/// The fixed master key every target decrypts with.
pub fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut raw = [0u8; 64];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = i as u8 ^ 0x5a;
        }
        MasterKey::from_bytes(raw)
    })
}

/// `magic || u32 version 1`: the 12-byte header of every stored file.
pub fn file_header(magic: &[u8; 8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out
}

/// A file of the shape `prefix || sealed(plaintext)` with `prefix` as
/// associated data, sealed under [`key`]: how snapshots and locks are
/// stored. Lets a target reach the decoder behind decryption.
pub fn sealed_file(prefix: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    key().seal_into(plaintext, prefix, &mut out);
    out
}

/// A little-endian integer from up to 8 leading bytes, and the rest.
pub fn take_uint(data: &[u8], n: usize) -> (u64, &[u8]) {
    let n = n.min(data.len());
    let mut buf = [0u8; 8];
    buf[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(buf), &data[n..])
}

/// A pack file made from fuzz input: a 2-byte length splits `data` into
/// the blob area and the plaintext of the header, which is sealed under
/// [`key`] and followed by the trailer, so the header's decoder is
/// reached behind its authentication. Returns the file, the header's
/// plaintext and where the sealed header starts.
pub fn pack_with_sealed_header(data: &[u8]) -> (Vec<u8>, &[u8], usize) {
    let (n, rest) = take_uint(data, 2);
    let n = (n as usize).min(rest.len());
    let (body, plain) = rest.split_at(n);
    let head = file_header(b"CAIRNPAK");
    let mut file = head.clone();
    file.extend_from_slice(body);
    let start = file.len();
    key().seal_into(plain, &head, &mut file);
    let sealed_len = (file.len() - start) as u32;
    file.extend_from_slice(&sealed_len.to_le_bytes());
    file.extend_from_slice(b"CAIRNHDR");
    (file, plain, start)
}
