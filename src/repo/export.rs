//! Exported keys: a repository's master key in a local file, for opening
//! the repository without a password.
//!
//! Every password open derives a key with Argon2id (19 MiB, two passes by
//! default), which is most of the time and memory of a short command such
//! as a no-change backup or `forget --gc`. A nightly job that keeps its
//! password in a file on the host gains nothing from that cost: whoever
//! reads the password file can run the derivation too. `cairn key export`
//! writes the master key itself to a file readable by its owner only, and
//! `--key-file` opens the repository with it. The password keeps working;
//! the exported file is an extra way in, to be guarded like the repository
//! password (anyone holding it can read and write every snapshot), and
//! it opens only the repository it was exported from.
//!
//! The file is exactly 140 bytes:
//! `"CAIRNXKY" | u32 version | repository id (32) | master key (64) |
//! BLAKE3 of the preceding 108 bytes (32)`. The checksum catches a damaged
//! or truncated copy before anything is tried with it; whether the key is
//! the repository's is proven by authenticating the config with it.

use zeroize::Zeroizing;

use crate::codec;
use crate::crypto::{MasterKey, MASTER_KEY_LEN};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CAIRNXKY";
/// Format version of exported key files.
pub const VERSION: u32 = 1;
const BODY_LEN: usize = 12 + 32 + MASTER_KEY_LEN;
/// Total size of an exported key file.
pub const FILE_LEN: usize = BODY_LEN + 32;

/// The contents of an exported key file.
#[derive(Clone)]
pub struct ExportedKey {
    /// The repository the key belongs to.
    pub repo_id: [u8; 32],
    /// Its master key.
    pub key: MasterKey,
}

/// The file bytes for `key` of repository `repo_id`.
pub fn encode(repo_id: &[u8; 32], key: &MasterKey) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(FILE_LEN));
    out.extend_from_slice(&codec::header(MAGIC, VERSION));
    out.extend_from_slice(repo_id);
    out.extend_from_slice(&key.to_bytes()[..]);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    debug_assert_eq!(out.len(), FILE_LEN);
    out
}

/// Parses an exported key file; `what` names it in errors.
pub fn decode(bytes: &[u8], what: &str) -> Result<ExportedKey> {
    codec::check_header(bytes, MAGIC, VERSION, what)?;
    if bytes.len() != FILE_LEN {
        return Err(Error::corrupt(
            what,
            format!("is {} bytes, expected {FILE_LEN}", bytes.len()),
        ));
    }
    let (body, sum) = bytes.split_at(BODY_LEN);
    if blake3::hash(body).as_bytes()[..] != sum[..] {
        return Err(Error::corrupt(what, "checksum mismatch (damaged copy?)"));
    }
    let repo_id: [u8; 32] = body[12..44].try_into().expect("32 bytes");
    let raw: Zeroizing<[u8; MASTER_KEY_LEN]> =
        Zeroizing::new(body[44..].try_into().expect("64 bytes"));
    Ok(ExportedKey {
        repo_id,
        key: MasterKey::from_bytes(*raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let key = MasterKey::generate();
        let id = [7u8; 32];
        let file = encode(&id, &key);
        assert_eq!(
            file.len(),
            140,
            "docs/FORMAT.md gives exported keys as 140 bytes"
        );
        let back = decode(&file, "key file").unwrap();
        assert_eq!(back.repo_id, id);
        assert_eq!(back.key.to_bytes(), key.to_bytes());

        let mut flipped = file.to_vec();
        flipped[60] ^= 1;
        let err = decode(&flipped, "key file").err().unwrap().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        let err = decode(&file[..139], "key file").err().unwrap().to_string();
        assert!(err.contains("is 139 bytes, expected 140"), "{err}");
        let err = decode(b"CAIRNKEY\x01\0\0\0", "key file")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("key file"), "{err}");
    }
}
