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
//!
//! XChaCha20-Poly1305 is assembled from its two halves, as its
//! specification (draft-irtf-cfrg-xchacha) defines it: HChaCha20 derives a
//! one-message subkey from the key and the nonce's first 16 bytes, and
//! ChaCha20-Poly1305 (RFC 8439) seals under that subkey with the nonce
//! `0000 || nonce[16..24]`. HChaCha20 comes from RustCrypto's `chacha20`,
//! the AEAD from aws-lc (already linked for TLS), whose assembly runs about
//! twice as fast as a portable implementation. The bytes are those of any
//! other XChaCha20-Poly1305: the format golden tests check them with
//! RustCrypto's `chacha20poly1305`, and a property test here compares the
//! two on random inputs.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use chacha20::cipher::consts::U10;
use chacha20::cipher::generic_array::GenericArray;
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

    fn cipher(&self) -> XChaCha<'_> {
        XChaCha::new(self.raw[..32].try_into().expect("32-byte key"))
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

    /// A hasher computing [`Self::mac`] incrementally.
    pub fn mac_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.mac_key)
    }

    /// Encrypts `plaintext`, binding `aad`; appends the sealed bytes to `out`.
    pub fn seal_into(&self, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) {
        seal_with(&self.cipher(), plaintext, aad, out)
    }

    /// Seals what `fill` appends to `out`, in place: `out` gains `nonce ||
    /// ciphertext || tag`, and the plaintext is never copied.
    pub fn seal_filled(&self, aad: &[u8], out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
        self.cipher().seal_filled(&random_bytes(), aad, out, fill)
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
        self.cipher().open_into(sealed, aad, what, out)
    }
}

/// Encrypts with an explicit 32-byte key (used for key files).
pub fn seal_with_key(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    seal_with(&XChaCha::new(key), plaintext, aad, &mut out);
    out
}

/// Decrypts with an explicit 32-byte key (used for key files).
pub fn open_with_key(key: &[u8; 32], sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>> {
    open_with(&XChaCha::new(key), sealed, aad, what)
}

/// An XChaCha20-Poly1305 key (borrowed; see the module docs).
struct XChaCha<'k> {
    key: &'k [u8; 32],
}

impl<'k> XChaCha<'k> {
    fn new(key: &'k [u8; 32]) -> XChaCha<'k> {
        XChaCha { key }
    }

    /// The ChaCha20-Poly1305 key and nonce for one message with this
    /// 24-byte nonce.
    fn message_key(&self, nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
        let mut subkey = chacha20::hchacha::<U10>(
            GenericArray::from_slice(self.key),
            GenericArray::from_slice(&nonce[..16]),
        );
        let key = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &subkey).expect("32-byte ChaCha20 key"),
        );
        subkey.as_mut_slice().zeroize();
        let mut short = [0u8; 12];
        short[4..].copy_from_slice(&nonce[16..]);
        (key, Nonce::assume_unique_for_key(short))
    }

    /// Appends `nonce || ciphertext || tag` to `out`.
    fn seal_into(&self, nonce: &[u8; NONCE_LEN], plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) {
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        self.seal_filled(nonce, aad, out, |o| o.extend_from_slice(plaintext));
    }

    /// Appends `nonce`, then whatever `fill` appends, and seals the latter
    /// in place.
    fn seal_filled(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        out: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>),
    ) {
        let (key, short) = self.message_key(nonce);
        out.extend_from_slice(nonce);
        let start = out.len();
        fill(out);
        let tag = key
            .seal_in_place_separate_tag(short, Aad::from(aad), &mut out[start..])
            .expect("ChaCha20-Poly1305 encryption of an in-memory buffer");
        out.extend_from_slice(tag.as_ref());
    }

    /// Replaces `out` with the plaintext of `sealed`, or leaves it empty.
    /// Decrypts straight from `sealed` into `out`; `out` keeps its bytes
    /// up to the new length, so a reused buffer is not zeroed first.
    fn open_into(&self, sealed: &[u8], aad: &[u8], what: &str, out: &mut Vec<u8>) -> Result<()> {
        if sealed.len() < SEAL_OVERHEAD {
            out.clear();
            return Err(Error::corrupt(what, "too short to be encrypted data"));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let (key, short) = self.message_key(nonce.try_into().expect("24-byte nonce"));
        out.resize(ct.len(), 0);
        key.open_separate_gather(short, Aad::from(aad), ct, tag, out)
            .map_err(|_| {
                out.clear();
                Error::corrupt(what, "authentication failed (damaged or tampered)")
            })
    }
}

fn seal_with(cipher: &XChaCha, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) {
    cipher.seal_into(&random_bytes(), plaintext, aad, out);
}

fn open_with(cipher: &XChaCha, sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    cipher.open_into(sealed, aad, what, &mut out)?;
    Ok(out)
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

    proptest::proptest! {
        /// The assembled XChaCha20-Poly1305 seals exactly as RustCrypto's
        /// `chacha20poly1305` does, and each opens what the other sealed.
        #[test]
        fn matches_an_independent_xchacha20_poly1305(
            key in proptest::array::uniform32(0u8..),
            nonce in proptest::collection::vec(0u8.., NONCE_LEN),
            aad in proptest::collection::vec(0u8.., 0..40),
            plaintext in proptest::collection::vec(0u8.., 0..3000),
        ) {
            use chacha20poly1305::aead::{Aead, KeyInit, Payload};
            let nonce: [u8; NONCE_LEN] = nonce.try_into().unwrap();
            let reference = chacha20poly1305::XChaCha20Poly1305::new_from_slice(&key).unwrap();
            let theirs = reference
                .encrypt(
                    chacha20poly1305::XNonce::from_slice(&nonce),
                    Payload { msg: &plaintext, aad: &aad },
                )
                .unwrap();
            let mut ours = Vec::new();
            XChaCha::new(&key).seal_into(&nonce, &plaintext, &aad, &mut ours);
            proptest::prop_assert_eq!(&ours[..NONCE_LEN], &nonce[..]);
            proptest::prop_assert_eq!(&ours[NONCE_LEN..], &theirs[..]);
            let opened = open_with_key(&key, &ours, &aad, "x").unwrap();
            proptest::prop_assert_eq!(&opened, &plaintext);
            // A reused buffer, longer or shorter than the plaintext.
            for stale in [0usize, 10, 5000] {
                let mut reused = vec![0xAA; stale];
                XChaCha::new(&key).open_into(&ours, &aad, "x", &mut reused).unwrap();
                proptest::prop_assert_eq!(&reused, &plaintext);
            }
            let back = reference
                .decrypt(
                    chacha20poly1305::XNonce::from_slice(&nonce),
                    Payload { msg: &ours[NONCE_LEN..], aad: &aad },
                )
                .unwrap();
            proptest::prop_assert_eq!(back, plaintext);
        }
    }

    #[test]
    fn failed_open_leaves_nothing_behind() {
        let k = MasterKey::generate();
        let mut sealed = k.seal(&[5u8; 100], b"aad");
        sealed[NONCE_LEN + 3] ^= 0x40;
        let mut out = vec![1, 2, 3];
        let err = k
            .open_into(&sealed, b"aad", "pack 01", &mut out)
            .unwrap_err();
        assert!(out.is_empty());
        assert!(err.to_string().contains("pack 01"), "{err}");
        assert!(err.to_string().contains("authentication failed"), "{err}");
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
