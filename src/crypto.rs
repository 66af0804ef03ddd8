//! Keys, authenticated encryption and keyed hashing.
//!
//! A repository has one random 64-byte master key: 32 bytes of encryption
//! key and 32 bytes from which the keyed-hash keys are derived (chunk ids,
//! index MACs). The master key is stored in `keys/`, encrypted under a key
//! derived from the password with Argon2id; see [`crate::repo::keys`].
//!
//! Sealed data is `nonce (24 bytes) || ciphertext || tag (16 bytes)`; the
//! nonce is random, which both ciphers' 192-bit nonces make safe. Which
//! cipher seals a repository's data is fixed in its config ([`Cipher`]):
//!
//! - **XAES-256-GCM** (C2SP), the default since format version 2: a
//!   one-message AES-256 key is derived from the key and the nonce's first
//!   12 bytes with three AES block encryptions, and AES-256-GCM seals
//!   under it with the nonce's last 12 bytes. Its key is
//!   `DK("cairn 2026-12 xaes-256-gcm", Menc)`, never the ChaCha key itself.
//!   With AES instructions it runs at many times ChaCha20-Poly1305's speed.
//! - **XChaCha20-Poly1305**, the cipher of version-1 repositories, and of
//!   every repository's `config` and key files: HChaCha20 derives a
//!   one-message subkey from the key and the nonce's first 16 bytes, and
//!   ChaCha20-Poly1305 (RFC 8439) seals under it with the nonce
//!   `0000 || nonce[16..24]` (draft-irtf-cfrg-xchacha).
//!
//! HChaCha20 comes from RustCrypto's `chacha20`; AES, AES-256-GCM and
//! ChaCha20-Poly1305 from aws-lc (already linked for TLS), whose assembly
//! uses the CPU's vector and AES instructions, except that on CPUs with
//! VAES but not AVX-512 ring seals and opens AES-256-GCM in place (see
//! `Gcm`). The bytes are those of any
//! other implementation of either cipher: the format golden tests check
//! them against RustCrypto's `chacha20poly1305` and `aes`, a property test
//! here compares XChaCha with `chacha20poly1305` on random inputs, and the
//! XAES-256-GCM test vectors of its specification are checked below.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use aws_lc_rs::cipher::{EncryptingKey, UnboundCipherKey, AES_256};
use chacha20::cipher::consts::U10;
use chacha20::cipher::generic_array::GenericArray;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
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

/// The cipher that seals a repository's data (blobs, pack headers,
/// snapshots, locks; index tables are not sealed but carry a MAC), named
/// in its config. Encoded as a u32: 0, 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cipher {
    /// XChaCha20-Poly1305: every version-1 repository.
    #[serde(rename = "xchacha20-poly1305")]
    XChaCha20Poly1305,
    /// XAES-256-GCM: the default for new repositories.
    #[serde(rename = "xaes-256-gcm")]
    Xaes256Gcm,
}

impl Cipher {
    /// The cipher `init` chooses unless told otherwise.
    pub const DEFAULT: Cipher = Cipher::Xaes256Gcm;

    /// The name used on the command line and in `cat config`.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::XChaCha20Poly1305 => "xchacha20-poly1305",
            Cipher::Xaes256Gcm => "xaes-256-gcm",
        }
    }
}

impl std::str::FromStr for Cipher {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Cipher, String> {
        [Cipher::Xaes256Gcm, Cipher::XChaCha20Poly1305]
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown cipher {s:?} (xaes-256-gcm or xchacha20-poly1305)"))
    }
}

/// The repository master key and the subkeys derived from it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    raw: [u8; MASTER_KEY_LEN],
    id_key: [u8; 32],
    mac_key: [u8; 32],
    /// XAES-256-GCM's key schedule and `K1`, derived from the encryption
    /// half of `raw` (aws-lc zeroes the schedule when it is dropped).
    #[zeroize(skip)]
    xaes: Arc<XaesKey>,
    #[zeroize(skip)]
    cipher: Cipher,
}

impl MasterKey {
    /// A fresh random key, sealing with [`Cipher::DEFAULT`].
    pub fn generate() -> MasterKey {
        let mut raw = [0u8; MASTER_KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        MasterKey::from_bytes(raw)
    }

    /// The key from its 64 stored bytes, sealing with [`Cipher::DEFAULT`]
    /// until [`Self::with_cipher`] names the repository's cipher.
    pub fn from_bytes(raw: [u8; MASTER_KEY_LEN]) -> MasterKey {
        let id_key = blake3::derive_key("cairn 2026-11 blob id", &raw[32..]);
        let mac_key = blake3::derive_key("cairn 2026-11 index mac", &raw[32..]);
        let mut xaes_key = blake3::derive_key("cairn 2026-12 xaes-256-gcm", &raw[..32]);
        let xaes = Arc::new(XaesKey::new(&xaes_key));
        xaes_key.zeroize();
        MasterKey {
            raw,
            id_key,
            mac_key,
            xaes,
            cipher: Cipher::DEFAULT,
        }
    }

    /// The same key, sealing and opening data with `cipher`.
    pub fn with_cipher(mut self, cipher: Cipher) -> MasterKey {
        self.cipher = cipher;
        self
    }

    /// The cipher data is sealed with.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The 64 bytes to store (encrypted) in a key file, cleared from
    /// memory when dropped.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; MASTER_KEY_LEN]> {
        zeroize::Zeroizing::new(self.raw)
    }

    fn sealer(&self) -> Sealer<'_> {
        match self.cipher {
            Cipher::XChaCha20Poly1305 => Sealer::XChaCha(self.enc_key()),
            Cipher::Xaes256Gcm => Sealer::Xaes(&self.xaes, Gcm::fastest()),
        }
    }

    fn enc_key(&self) -> &[u8; 32] {
        self.raw[..32].try_into().expect("32-byte key")
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
        self.sealer()
            .seal_into(&random_bytes(), plaintext, aad, out)
    }

    /// Seals in place: `buf` holds `NONCE_LEN` bytes of room, the
    /// plaintext, then `TAG_LEN` bytes of room, and becomes `nonce ||
    /// ciphertext || tag`.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut [u8]) {
        self.sealer().seal_in_place(&random_bytes(), aad, buf)
    }

    /// Seals `head || body` into `out`, which must be exactly
    /// `SEAL_OVERHEAD + head.len() + body.len()` bytes: `nonce ||
    /// ciphertext || tag`. `body` is encrypted from where it lies, never
    /// copied into `out` first, so a large plaintext is read once.
    pub fn seal_parts(&self, aad: &[u8], head: &[u8], body: &[u8], out: &mut [u8]) {
        self.sealer()
            .seal_parts(&random_bytes(), aad, head, body, out)
    }

    /// Encrypts `plaintext`, binding `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(plaintext, aad, &mut out);
        out
    }

    /// Decrypts and authenticates sealed bytes; `what` names them in errors.
    pub fn open(&self, sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>> {
        self.sealer().open(sealed, aad, what)
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
        self.sealer().open_into(sealed, aad, what, out)
    }

    /// Seals the repository's `config`, which is XChaCha20-Poly1305 under
    /// the encryption key whatever the data's cipher (the cipher is named
    /// inside it).
    pub fn seal_config(&self, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) {
        Sealer::XChaCha(self.enc_key()).seal_into(&random_bytes(), plaintext, aad, out)
    }

    /// Opens what [`Self::seal_config`] sealed.
    pub fn open_config(&self, sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>> {
        Sealer::XChaCha(self.enc_key()).open(sealed, aad, what)
    }
}

/// Encrypts with an explicit 32-byte key (used for key files):
/// XChaCha20-Poly1305.
pub fn seal_with_key(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    Sealer::XChaCha(key).seal_into(&random_bytes(), plaintext, aad, &mut out);
    out
}

/// Decrypts with an explicit 32-byte key (used for key files).
pub fn open_with_key(key: &[u8; 32], sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>> {
    Sealer::XChaCha(key).open(sealed, aad, what)
}

/// One of the two ciphers over a borrowed key, both with 24-byte nonces and
/// built the same way: a one-message key and 12-byte nonce derived from
/// the key and the nonce, then an AEAD of RFC 5116's shape (see the
/// module docs).
#[derive(Clone, Copy)]
enum Sealer<'k> {
    XChaCha(&'k [u8; 32]),
    Xaes(&'k XaesKey, Gcm),
}

/// Which library runs an XAES-256-GCM message's AES-256-GCM, where it is
/// sealed or opened in place (see [`Gcm::fastest`]). Both give the same
/// bytes; sealing from a separate plaintext ([`MasterKey::seal_parts`])
/// is always aws-lc's, which encrypts straight into the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gcm {
    AwsLc,
    Ring,
}

impl Gcm {
    /// ring where the CPU has VAES and VPCLMULQDQ but not AVX-512 (AMD Zen
    /// 3, Intel's client cores since Alder Lake): ring has BoringSSL's
    /// AES-GCM over 256-bit AVX2 registers, aws-lc only its AVX-512 form,
    /// and falls back to one block per instruction there. On such a CPU
    /// (an AMD EPYC of Zen 3) ring opens 1 MiB blobs at 1.5x aws-lc's
    /// speed, copy into the output included. Everywhere else, aws-lc.
    fn fastest() -> Gcm {
        static FASTEST: std::sync::OnceLock<Gcm> = std::sync::OnceLock::new();
        *FASTEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("vaes")
                && std::arch::is_x86_feature_detected!("vpclmulqdq")
                && std::arch::is_x86_feature_detected!("avx2")
                && !std::arch::is_x86_feature_detected!("avx512f")
            {
                return Gcm::Ring;
            }
            Gcm::AwsLc
        })
    }
}

impl Sealer<'_> {
    /// The one-message AEAD key and nonce for this 24-byte nonce.
    fn message_key(self, nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
        let mut short = [0u8; 12];
        let key = match self {
            Sealer::XChaCha(key) => {
                let mut subkey = chacha20::hchacha::<U10>(
                    GenericArray::from_slice(key),
                    GenericArray::from_slice(&nonce[..16]),
                );
                let k = UnboundKey::new(&CHACHA20_POLY1305, &subkey).expect("32-byte ChaCha20 key");
                subkey.as_mut_slice().zeroize();
                short[4..].copy_from_slice(&nonce[16..]);
                k
            }
            Sealer::Xaes(key, _) => {
                let (subkey, message_nonce) = key.message_key(nonce);
                short = message_nonce;
                UnboundKey::new(&AES_256_GCM, &*subkey).expect("32-byte AES key")
            }
        };
        (LessSafeKey::new(key), Nonce::assume_unique_for_key(short))
    }

    /// ring's AES-256-GCM key and nonce for this 24-byte nonce, where
    /// XAES-256-GCM runs in ring.
    fn ring_key(
        self,
        nonce: &[u8; NONCE_LEN],
    ) -> Option<(ring::aead::LessSafeKey, ring::aead::Nonce)> {
        let Sealer::Xaes(key, Gcm::Ring) = self else {
            return None;
        };
        let (subkey, short) = key.message_key(nonce);
        let k = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &*subkey)
            .expect("32-byte AES key");
        Some((
            ring::aead::LessSafeKey::new(k),
            ring::aead::Nonce::assume_unique_for_key(short),
        ))
    }

    /// Appends `nonce || ciphertext || tag` to `out`.
    fn seal_into(self, nonce: &[u8; NONCE_LEN], plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + SEAL_OVERHEAD + plaintext.len(), 0);
        self.seal_parts(nonce, aad, &[], plaintext, &mut out[start..]);
    }

    /// See [`MasterKey::seal_in_place`].
    fn seal_in_place(self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) {
        assert!(buf.len() >= SEAL_OVERHEAD, "no room for the nonce and tag");
        let (nonce_room, rest) = buf.split_at_mut(NONCE_LEN);
        nonce_room.copy_from_slice(nonce);
        let (text, tag_room) = rest.split_at_mut(rest.len() - TAG_LEN);
        if let Some((key, short)) = self.ring_key(nonce) {
            let tag = key
                .seal_in_place_separate_tag(short, ring::aead::Aad::from(aad), text)
                .expect("AEAD encryption of an in-memory buffer");
            tag_room.copy_from_slice(tag.as_ref());
            return;
        }
        let (key, short) = self.message_key(nonce);
        let tag = key
            .seal_in_place_separate_tag(short, Aad::from(aad), text)
            .expect("AEAD encryption of an in-memory buffer");
        tag_room.copy_from_slice(tag.as_ref());
    }

    /// See [`MasterKey::seal_parts`]. AES-GCM encrypts `body` straight
    /// into `out`; aws-lc's ChaCha20-Poly1305 takes the part after `head`
    /// (its "extra" input) byte by byte, six times slower than in place, so
    /// XChaCha20-Poly1305 copies `body` into `out` and seals it there.
    fn seal_parts(
        self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        head: &[u8],
        body: &[u8],
        out: &mut [u8],
    ) {
        assert_eq!(
            out.len(),
            SEAL_OVERHEAD + head.len() + body.len(),
            "sealed output of the wrong size"
        );
        if let Sealer::XChaCha(_) = self {
            let text = &mut out[NONCE_LEN..NONCE_LEN + head.len() + body.len()];
            let (head_out, body_out) = text.split_at_mut(head.len());
            head_out.copy_from_slice(head);
            body_out.copy_from_slice(body);
            return self.seal_in_place(nonce, aad, out);
        }
        let (key, short) = self.message_key(nonce);
        let (nonce_room, rest) = out.split_at_mut(NONCE_LEN);
        nonce_room.copy_from_slice(nonce);
        let (head_out, body_out_and_tag) = rest.split_at_mut(head.len());
        key.seal_out_of_place_scatter(
            short,
            Aad::from(aad),
            head,
            head_out,
            body,
            body_out_and_tag,
        )
        .expect("AEAD encryption of in-memory buffers");
    }

    /// The plaintext of `sealed`.
    fn open(self, sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_into(sealed, aad, what, &mut out)?;
        Ok(out)
    }

    /// Replaces `out` with the plaintext of `sealed`, or leaves it empty.
    /// Decrypts straight from `sealed` into `out`; `out` keeps its bytes
    /// up to the new length, so a reused buffer is not zeroed first.
    fn open_into(self, sealed: &[u8], aad: &[u8], what: &str, out: &mut Vec<u8>) -> Result<()> {
        if sealed.len() < SEAL_OVERHEAD {
            out.clear();
            return Err(Error::corrupt(what, "too short to be encrypted data"));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = nonce.try_into().expect("24-byte nonce");
        let opened = if let Some((key, short)) = self.ring_key(nonce) {
            // ring decrypts in place only: copy the ciphertext over first.
            out.clear();
            out.extend_from_slice(ct);
            let tag = ring::aead::Tag::from(<[u8; TAG_LEN]>::try_from(tag).expect("16-byte tag"));
            key.open_in_place_separate_tag(short, ring::aead::Aad::from(aad), tag, out, 0..)
                .map(|_| ())
                .map_err(|_| ())
        } else {
            let (key, short) = self.message_key(nonce);
            out.resize(ct.len(), 0);
            key.open_separate_gather(short, Aad::from(aad), ct, tag, out)
                .map_err(|_| ())
        };
        opened.map_err(|()| {
            out.clear();
            Error::corrupt(what, "authentication failed (damaged or tampered)")
        })
    }
}

/// An XAES-256-GCM key: the AES-256 key schedule that derives each
/// message's key, and `K1`.
struct XaesKey {
    aes: EncryptingKey,
    k1: [u8; 16],
}

impl Drop for XaesKey {
    fn drop(&mut self) {
        self.k1.zeroize();
    }
}

impl XaesKey {
    /// `L = AES(K, 0¹²⁸)`, and `K1 = L << 1`, xored with `0x87` in its
    /// last byte when `L`'s top bit is set (CMAC's first subkey).
    fn new(key: &[u8; 32]) -> XaesKey {
        let aes =
            EncryptingKey::ecb(UnboundCipherKey::new(&AES_256, key).expect("32-byte AES key"))
                .expect("AES-256 in ECB mode");
        let mut l = [0u8; 16];
        aes.encrypt(&mut l).expect("one AES block");
        let mut k1 = [0u8; 16];
        for i in 0..16 {
            k1[i] = (l[i] << 1) | l.get(i + 1).map_or(0, |b| b >> 7);
        }
        k1[15] ^= 0x87 * (l[0] >> 7);
        l.zeroize();
        XaesKey { aes, k1 }
    }

    /// The AES-256-GCM key and 12-byte nonce of the message sealed under
    /// the 24-byte `nonce`: the key derived from its first 12 bytes
    /// ([`Self::subkey`]), cleared when dropped, and its last 12 bytes.
    fn message_key(&self, nonce: &[u8; NONCE_LEN]) -> (zeroize::Zeroizing<[u8; 32]>, [u8; 12]) {
        let (derive, short) = nonce.split_at(12);
        let subkey = zeroize::Zeroizing::new(self.subkey(derive.try_into().expect("12 bytes")));
        (subkey, short.try_into().expect("12 bytes"))
    }

    /// The key for one message (C2SP XAES-256-GCM, the counter-mode KDF of
    /// NIST SP 800-108r1 with CMAC): `AES(K, (0x0001 || "X" || 0x00 || N)
    /// ⊕ K1) || AES(K, (0x0002 || "X" || 0x00 || N) ⊕ K1)`, where `N` is the
    /// first 12 nonce bytes.
    fn subkey(&self, nonce: &[u8; 12]) -> [u8; 32] {
        let mut blocks = [0u8; 32];
        for (i, block) in blocks.chunks_exact_mut(16).enumerate() {
            block[..4].copy_from_slice(&[0x00, 1 + i as u8, b'X', 0x00]);
            block[4..].copy_from_slice(nonce);
            for (b, k) in block.iter_mut().zip(&self.k1) {
                *b ^= k;
            }
        }
        self.aes.encrypt(&mut blocks).expect("two AES blocks");
        blocks
    }
}

/// Bytes of the system's random generator each thread draws at once.
const RANDOM_POOL: usize = 4096;

/// `N` random bytes from the system's generator, drawn 4 KiB
/// (`RANDOM_POOL`) at a time: every blob sealed takes a fresh random nonce, and a
/// system call per nonce cost 2% of the CPU of a backup of 200,000 small
/// files. The bytes are the generator's own, each handed out once and
/// cleared from the pool as it is taken.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    thread_local! {
        static POOL: std::cell::RefCell<(Box<[u8; RANDOM_POOL]>, usize)> =
            std::cell::RefCell::new((Box::new([0; RANDOM_POOL]), RANDOM_POOL));
    }
    let mut out = [0u8; N];
    if N > RANDOM_POOL / 4 {
        rand::rngs::OsRng.fill_bytes(&mut out);
        return out;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (bytes, used) = &mut *pool;
        if RANDOM_POOL - *used < N {
            rand::rngs::OsRng.fill_bytes(&mut bytes[..]);
            *used = 0;
        }
        let taken = &mut bytes[*used..*used + N];
        out.copy_from_slice(taken);
        taken.fill(0);
        *used += N;
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random bytes drawn from the pool never repeat, across refills
    /// and sizes, and are not left in it.
    #[test]
    fn pooled_random_bytes_are_fresh_each_time() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 * RANDOM_POOL / 24 {
            assert!(seen.insert(random_bytes::<24>().to_vec()));
            assert!(seen.insert(random_bytes::<8>().to_vec()));
        }
        assert!(seen.insert(random_bytes::<2048>().to_vec()));
        let zero = [0u8; 24];
        assert!(!seen.contains(zero.as_slice()));
    }

    const CIPHERS: [Cipher; 2] = [Cipher::Xaes256Gcm, Cipher::XChaCha20Poly1305];
    const GCMS: [Gcm; 2] = [Gcm::AwsLc, Gcm::Ring];

    /// Either library seals what the other opens, the same bytes under
    /// the same nonce, at every length about the AES block and GHASH
    /// strides and at large ones; each refuses what is tampered with and
    /// leaves nothing behind.
    #[test]
    fn aws_lc_and_ring_seal_and_open_alike() {
        let key = XaesKey::new(&random_bytes());
        let lens = (0..300).chain([4095, 4096, 4097, 65_543, (1 << 20) + 5]);
        for len in lens {
            let nonce: [u8; NONCE_LEN] = random_bytes();
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let aad = &plain[..len.min(7)];
            let mut sealed = Vec::new();
            for gcm in GCMS {
                let mut buf = [&nonce[..], &plain, &[0; TAG_LEN]].concat();
                Sealer::Xaes(&key, gcm).seal_in_place(&nonce, aad, &mut buf);
                sealed.push(buf);
            }
            assert_eq!(sealed[0], sealed[1], "length {len}");
            for gcm in GCMS {
                let sealer = Sealer::Xaes(&key, gcm);
                let mut out = vec![7; 9];
                sealer.open_into(&sealed[0], aad, "b", &mut out).unwrap();
                assert_eq!(out, plain, "length {len}, {gcm:?}");
                let mut bad = sealed[0].clone();
                let at = (len * 13) % bad.len();
                bad[at] ^= 0x10;
                assert!(sealer.open_into(&bad, aad, "b", &mut out).is_err());
                assert!(out.is_empty());
                assert!(sealer
                    .open_into(&sealed[0], b"other", "b", &mut out)
                    .is_err());
            }
        }
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        for cipher in CIPHERS {
            let k = MasterKey::generate().with_cipher(cipher);
            let sealed = k.seal(b"hello", b"aad");
            assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
            assert_eq!(k.open(&sealed, b"aad", "x").unwrap(), b"hello");
            assert!(k.open(&sealed, b"other", "x").is_err());
            let mut bad = sealed.clone();
            bad[30] ^= 1;
            assert!(k.open(&bad, b"aad", "x").is_err());
            assert!(k.open(&sealed[..10], b"aad", "x").is_err());
            let other = MasterKey::generate().with_cipher(cipher);
            assert!(other.open(&sealed, b"aad", "x").is_err());
        }
    }

    #[test]
    fn sealing_in_place_or_in_parts_opens_like_sealing_a_copy() {
        for cipher in CIPHERS {
            let k = MasterKey::generate().with_cipher(cipher);
            for (head, body) in [(&b"h"[..], &b"body bytes"[..]), (b"", b"x"), (b"hd", b"")] {
                let whole = [head, body].concat();
                let mut parts = vec![0xA5; SEAL_OVERHEAD + whole.len()];
                k.seal_parts(b"aad", head, body, &mut parts);
                assert_eq!(k.open(&parts, b"aad", "x").unwrap(), whole);
                if whole.len() > 4 {
                    assert_ne!(parts[NONCE_LEN..NONCE_LEN + whole.len()], whole[..]);
                }
                assert!(k.open(&parts, b"other", "x").is_err());

                let mut in_place = vec![0x5A; NONCE_LEN];
                in_place.extend_from_slice(&whole);
                in_place.extend_from_slice(&[0x5A; TAG_LEN]);
                k.seal_in_place(b"aad", &mut in_place);
                assert_eq!(k.open(&in_place, b"aad", "x").unwrap(), whole);
                // Each seal draws its own nonce.
                assert_ne!(in_place[..NONCE_LEN], parts[..NONCE_LEN]);
            }
        }
    }

    #[test]
    fn each_cipher_opens_only_its_own_and_the_config_is_always_xchacha() {
        let x = MasterKey::generate();
        assert_eq!(x.cipher(), Cipher::Xaes256Gcm);
        let c = x.clone().with_cipher(Cipher::XChaCha20Poly1305);
        let by_x = x.seal(b"data", b"");
        let by_c = c.seal(b"data", b"");
        assert!(c.open(&by_x, b"", "x").is_err());
        assert!(x.open(&by_c, b"", "x").is_err());
        // The config is sealed the same way whatever the data's cipher,
        // and it is XChaCha20-Poly1305 under the encryption key.
        let mut config = Vec::new();
        x.seal_config(b"config", b"hdr", &mut config);
        assert_eq!(c.open_config(&config, b"hdr", "config").unwrap(), b"config");
        assert_eq!(c.open(&config, b"hdr", "config").unwrap(), b"config");
        let enc: [u8; 32] = x.to_bytes()[..32].try_into().unwrap();
        assert_eq!(
            open_with_key(&enc, &config, b"hdr", "c").unwrap(),
            b"config"
        );
        assert!(x.open(&config, b"hdr", "config").is_err());
    }

    /// The test vectors of C2SP's XAES-256-GCM specification, with the
    /// intermediate values a second implementation publishes.
    #[test]
    fn xaes_256_gcm_test_vectors() {
        let nonce: [u8; NONCE_LEN] = *b"ABCDEFGHIJKLMNOPQRSTUVWX";
        for (key, kx, aad, sealed) in [
            (
                [0x01u8; 32],
                "c8612c9ed53fe43e8e005b828a1631a0bbcb6ab2f46514ec4f439fcfd0fa969b",
                &b""[..],
                "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271",
            ),
            (
                [0x03u8; 32],
                "e9c621d4cdd9b11b00a6427ad7e559aeedd66b3857646677748f8ca796cb3fd8",
                &b"c2sp.org/XAES-256-GCM"[..],
                "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d",
            ),
        ] {
            let key = XaesKey::new(&key);
            assert_eq!(hex::encode(key.subkey(nonce[..12].try_into().unwrap())), kx);
            for gcm in GCMS {
                let mut out = Vec::new();
                Sealer::Xaes(&key, gcm).seal_into(&nonce, b"XAES-256-GCM", aad, &mut out);
                assert_eq!(&out[..NONCE_LEN], &nonce[..]);
                assert_eq!(hex::encode(&out[NONCE_LEN..]), sealed);
                let mut in_place = [&nonce[..], b"XAES-256-GCM", &[0; TAG_LEN]].concat();
                Sealer::Xaes(&key, gcm).seal_in_place(&nonce, aad, &mut in_place);
                assert_eq!(in_place, out, "{gcm:?}");
                let mut back = vec![9; 3];
                Sealer::Xaes(&key, gcm)
                    .open_into(&out, aad, "v", &mut back)
                    .unwrap();
                assert_eq!(back, b"XAES-256-GCM");
            }
        }
    }

    #[test]
    fn cipher_names_round_trip() {
        for cipher in CIPHERS {
            assert_eq!(cipher.name().parse::<Cipher>().unwrap(), cipher);
        }
        let err = "aes".parse::<Cipher>().unwrap_err();
        assert!(err.contains("unknown cipher \"aes\""), "{err}");
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
            Sealer::XChaCha(&key).seal_into(&nonce, &plaintext, &aad, &mut ours);
            proptest::prop_assert_eq!(&ours[..NONCE_LEN], &nonce[..]);
            proptest::prop_assert_eq!(&ours[NONCE_LEN..], &theirs[..]);
            let opened = open_with_key(&key, &ours, &aad, "x").unwrap();
            proptest::prop_assert_eq!(&opened, &plaintext);
            // A reused buffer, longer or shorter than the plaintext.
            for stale in [0usize, 10, 5000] {
                let mut reused = vec![0xAA; stale];
                Sealer::XChaCha(&key).open_into(&ours, &aad, "x", &mut reused).unwrap();
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
        for cipher in CIPHERS {
            let k = MasterKey::generate().with_cipher(cipher);
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
            MasterKey::from_bytes(*a.to_bytes()).blob_id(b"x"),
            a.blob_id(b"x")
        );
    }
}
