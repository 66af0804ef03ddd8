//! Keys, authenticated encryption and keyed hashing.
//!
//! A repository has one random 64-byte master key: 32 bytes of encryption
//! key for XChaCha20-Poly1305 and 32 bytes from which the keyed-hash keys are
//! derived (chunk ids, index MACs). The master key is stored in `keys/`,
//! encrypted under a key derived from the password with Argon2id; see
//! [`crate::repo::keys`].
//!
//! Sealed data is `nonce (24 bytes) || ciphertext || tag (16 bytes)`; the
//! nonce is random, which XChaCha's 192-bit nonces make safe.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::id::BlobId;

/// Bytes of nonce in front of every sealed message.
pub const NONCE_LEN: usize = 24;
/// Bytes of authentication tag after every sealed message.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message is longer than its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes in a master key.
pub const MASTER_KEY_LEN: usize = 64;

/// The repository master key and the subkeys derived from it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    raw: [u8; MASTER_KEY_LEN],
    id_key: [u8; 32],
    mac_key: [u8; 32],
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> MasterKey {
        let mut raw = [0u8; MASTER_KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        MasterKey::from_bytes(raw)
    }

    /// The key from its 64 stored bytes.
    pub fn from_bytes(raw: [u8; MASTER_KEY_LEN]) -> MasterKey {
        let id_key = blake3::derive_key("cairn 2026-11 blob id", &raw[32..]);
        let mac_key = blake3::derive_key("cairn 2026-11 index mac", &raw[32..]);
        MasterKey {
            raw,
            id_key,
            mac_key,
        }
    }

    /// The 64 bytes to store (encrypted) in a key file.
    pub fn to_bytes(&self) -> [u8; MASTER_KEY_LEN] {
        self.raw
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(&self.raw[..32]).expect("32-byte key")
    }

    /// The id of a blob: keyed BLAKE3 of its plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// A hasher computing [`Self::blob_id`] incrementally.
    pub fn blob_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.id_key)
    }

    /// Keyed MAC used to authenticate index tables.
    pub fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.mac_key, bytes).as_bytes()
    }

    /// Encrypts `plaintext`, binding `aad`; appends the sealed bytes to `out`.
    pub fn seal_into(&self, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) {
        seal_with(&self.cipher(), plaintext, aad, out)
    }

    /// Encrypts `plaintext`, binding `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(plaintext, aad, &mut out);
        out
    }

    /// Decrypts and authenticates sealed bytes; `what` names them in errors.
    pub fn open(&self, sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>> {
        open_with(&self.cipher(), sealed, aad, what)
    }

    /// Like [`Self::open`], into `out` (replacing its contents), so a
    /// caller can reuse one buffer for many blobs. On failure `out` is
    /// left empty: unauthenticated bytes are never handed out.
    pub fn open_into(
        &self,
        sealed: &[u8],
        aad: &[u8],
        what: &str,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        open_into_with(&self.cipher(), sealed, aad, what, out)
    }
}

/// Encrypts with an explicit 32-byte key (used for key files).
pub fn seal_with_key(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    seal_with(
        &XChaCha20Poly1305::new_from_slice(key).expect("32-byte key"),
        plaintext,
        aad,
        &mut out,
    );
    out
}

/// Decrypts with an explicit 32-byte key (used for key files).
pub fn open_with_key(key: &[u8; 32], sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>> {
    open_with(
        &XChaCha20Poly1305::new_from_slice(key).expect("32-byte key"),
        sealed,
        aad,
        what,
    )
}

fn seal_with(cipher: &XChaCha20Poly1305, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    out.reserve(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start..])
        .expect("XChaCha20-Poly1305 encryption of an in-memory buffer");
    out.extend_from_slice(&tag);
}

fn open_with(cipher: &XChaCha20Poly1305, sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    open_into_with(cipher, sealed, aad, what, &mut out)?;
    Ok(out)
}

fn open_into_with(
    cipher: &XChaCha20Poly1305,
    sealed: &[u8],
    aad: &[u8],
    what: &str,
    out: &mut Vec<u8>,
) -> Result<()> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(Error::corrupt(what, "too short to be encrypted data"));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    out.clear();
    out.extend_from_slice(ct);
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            out,
            chacha20poly1305::Tag::from_slice(tag),
        )
        .map_err(|_| {
            out.clear();
            Error::corrupt(what, "authentication failed (damaged or tampered)")
        })
}

/// `n` random bytes.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = MasterKey::generate();
        let sealed = k.seal(b"hello", b"aad");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(k.open(&sealed, b"aad", "x").unwrap(), b"hello");
        assert!(k.open(&sealed, b"other", "x").is_err());
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(k.open(&bad, b"aad", "x").is_err());
        assert!(k.open(&sealed[..10], b"aad", "x").is_err());
        let other = MasterKey::generate();
        assert!(other.open(&sealed, b"aad", "x").is_err());
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        let mut h = a.blob_hasher();
        h.update(b"x");
        assert_eq!(BlobId(*h.finalize().as_bytes()), a.blob_id(b"x"));
        assert_eq!(
            MasterKey::from_bytes(a.to_bytes()).blob_id(b"x"),
            a.blob_id(b"x")
        );
    }
}
