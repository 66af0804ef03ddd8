//! Key files: the master key encrypted under a password.
//!
//! `keys/<id>` is exactly 160 bytes:
//! `"CAIRNKEY" | u32 version | u32 memory KiB | u32 iterations | u32 lanes |
//! salt (32) | sealed(master key, 64 bytes)`, the sealed part being 104
//! bytes (24 nonce, 64 ciphertext, 16 tag). The sealing key is Argon2id
//! (v0x13) of the password with these parameters and salt; the 56 bytes
//! before the sealed part are its associated data, so the parameters cannot
//! be weakened by editing the file. Hostile parameters are rejected before
//! any memory is allocated.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::codec;
use crate::crypto::{self, MasterKey, MASTER_KEY_LEN, SEAL_OVERHEAD};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CAIRNKEY";
/// Format version of key files.
pub const VERSION: u32 = 1;
const PLAIN_LEN: usize = 12 + 12 + 32;
/// Total size of a key file: 56 plaintext bytes, then the 64-byte master
/// key sealed (104 bytes).
pub const FILE_LEN: usize = PLAIN_LEN + MASTER_KEY_LEN + SEAL_OVERHEAD;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Parallel lanes.
    pub lanes: u32,
}

impl Default for KdfParams {
    /// 19 MiB, 2 passes, 1 lane: OWASP's recommended Argon2id setting,
    /// a few tens of milliseconds per command. `cairn init --kdf-memory-kib`
    /// and `--kdf-iterations` choose more for a stronger key file.
    fn default() -> KdfParams {
        KdfParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            lanes: 1,
        }
    }
}

impl KdfParams {
    /// Checks bounds: 8 KiB..=4 GiB memory, 1..=100 passes, 1..=16 lanes.
    pub fn validate(&self) -> Result<()> {
        // Lanes are bounded before `8 * lanes` is computed, so a hostile
        // key file cannot overflow it.
        let ok = (8..=4 * 1024 * 1024).contains(&self.memory_kib)
            && (1..=100).contains(&self.iterations)
            && (1..=16).contains(&self.lanes)
            && self.memory_kib >= 8 * self.lanes;
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "unusable Argon2id parameters: memory {} KiB (8..=4194304, at least 8 a lane), \
                 {} passes (1..=100), {} lanes (1..=16)",
                self.memory_kib, self.iterations, self.lanes
            )))
        }
    }

    /// The work a derivation costs, to try cheap key files first:
    /// memory times passes.
    pub fn cost(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
    }

    /// Derives the sealing key. The Argon2id memory is asked for with
    /// `try_reserve_exact`, so a key file asking for more than the
    /// process may have (up to 4 GiB, within bounds) is an error for that
    /// file rather than an abort of the whole process.
    fn derive(&self, password: &[u8], salt: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
        let params = Params::new(self.memory_kib, self.iterations, self.lanes, Some(32))
            .map_err(|e| Error::Invalid(format!("Argon2id parameters: {e}")))?;
        let count = params.block_count();
        // The blocks hold values derived from the password: cleared when
        // dropped.
        let mut blocks: Zeroizing<Vec<Block>> = Zeroizing::new(Vec::new());
        blocks.try_reserve_exact(count).map_err(|_| {
            Error::Invalid(format!(
                "its Argon2id settings ask for {} of memory, which could not be allocated",
                crate::human_bytes(u64::from(self.memory_kib) * 1024)
            ))
        })?;
        blocks.resize(count, Block::default());
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into_with_memory(password, salt, out.as_mut(), &mut blocks[..])
            .map_err(|e| Error::Invalid(format!("Argon2id: {e}")))?;
        Ok(out)
    }
}

/// Summary of a key file, as `cat` shows it.
#[derive(Debug, Serialize)]
pub struct KeyInfo {
    /// Format version.
    pub version: u32,
    /// KDF name.
    pub kdf: &'static str,
    /// KDF cost.
    pub params: KdfParams,
    /// Salt as hex.
    pub salt: String,
}

/// Encrypts `key` under `password`; returns the key file bytes.
pub fn encode(key: &MasterKey, password: &[u8], params: KdfParams) -> Result<Vec<u8>> {
    params.validate()?;
    let salt = crypto::random_bytes::<32>();
    let mut out = codec::header(MAGIC, VERSION);
    for v in [params.memory_kib, params.iterations, params.lanes] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&salt);
    let kek = params.derive(password, &salt)?;
    let sealed = crypto::seal_with_key(&kek, &key.to_bytes()[..], &out);
    out.extend_from_slice(&sealed);
    debug_assert_eq!(out.len(), FILE_LEN);
    Ok(out)
}

/// Reads the plaintext part of a key file, validating it.
pub fn info(bytes: &[u8]) -> Result<KeyInfo> {
    codec::check_header(bytes, MAGIC, VERSION, "key file")?;
    if bytes.len() != FILE_LEN {
        return Err(Error::corrupt(
            "key file",
            format!("is {} bytes, expected {FILE_LEN}", bytes.len()),
        ));
    }
    let word = |i: usize| u32::from_le_bytes(bytes[12 + 4 * i..16 + 4 * i].try_into().expect("4"));
    let params = KdfParams {
        memory_kib: word(0),
        iterations: word(1),
        lanes: word(2),
    };
    params
        .validate()
        .map_err(|e| Error::corrupt("key file", e))?;
    Ok(KeyInfo {
        version: VERSION,
        kdf: "argon2id",
        params,
        salt: hex::encode(&bytes[24..PLAIN_LEN]),
    })
}

/// Decrypts a key file. `Ok(None)` means the password does not open it.
pub fn decode(bytes: &[u8], password: &[u8]) -> Result<Option<MasterKey>> {
    let info = info(bytes)?;
    let salt: [u8; 32] = bytes[24..PLAIN_LEN].try_into().expect("32 bytes");
    let kek = info.params.derive(password, &salt)?;
    match crypto::open_with_key(&kek, &bytes[PLAIN_LEN..], &bytes[..PLAIN_LEN], "key file") {
        Ok(plain) => {
            let plain = Zeroizing::new(plain);
            let raw: [u8; MASTER_KEY_LEN] = plain[..]
                .try_into()
                .map_err(|_| Error::corrupt("key file", "master key has the wrong length"))?;
            Ok(Some(MasterKey::from_bytes(raw)))
        }
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        lanes: 1,
    };

    #[test]
    fn open_with_right_password_only() {
        let key = MasterKey::generate();
        let file = encode(&key, b"secret", FAST).unwrap();
        assert_eq!(FILE_LEN, 160, "docs/FORMAT.md gives key files as 160 bytes");
        assert_eq!(file.len(), 160);
        let opened = decode(&file, b"secret").unwrap().unwrap();
        assert_eq!(opened.to_bytes(), key.to_bytes());
        assert!(decode(&file, b"wrong").unwrap().is_none());
    }

    #[test]
    fn hostile_parameters_are_rejected_before_deriving() {
        let key = MasterKey::generate();
        let mut file = encode(&key, b"pw", FAST).unwrap();
        file[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&file, b"pw"), Err(Error::Corrupt { .. })));
        // Weakened but valid parameters fail authentication.
        let mut weak = encode(
            &key,
            b"pw",
            KdfParams {
                iterations: 2,
                ..FAST
            },
        )
        .unwrap();
        weak[16..20].copy_from_slice(&1u32.to_le_bytes());
        assert!(decode(&weak, b"pw").unwrap().is_none());
        assert!(decode(&file[..100], b"pw").is_err());
    }
}
