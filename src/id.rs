//! Typed 32-byte identifiers.
//!
//! Every object in a repository is named by 32 bytes printed as 64 lowercase
//! hex digits. Blobs (file chunks and trees) are named by the *keyed* BLAKE3
//! hash of their plaintext, so names reveal nothing about content; files
//! (packs, index tables, snapshots, keys, locks) are named by the unkeyed
//! BLAKE3 hash of their stored bytes, so anyone can check a file against its
//! name without the key. Short ids are the first 8 hex digits.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

use crate::error::{Error, Result};

/// Number of hex digits in a short id.
pub const SHORT_LEN: usize = 8;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| {
                    Error::Invalid(format!("{s:?} is not a 64-digit hex id"))
                })?;
                Ok(Self(out))
            }
            /// The id as 64 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 hex digits.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..SHORT_LEN / 2])
            }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    Self::from_hex(&s).map_err(serde::de::Error::custom)
                } else {
                    Ok(Self(<[u8; 32]>::deserialize(d)?))
                }
            }
        }
    };
}

typed_id!(
    /// Names a blob: a file chunk or a tree, by keyed hash of its plaintext.
    BlobId
);
typed_id!(
    /// Names a pack file by the hash of its bytes.
    PackId
);
typed_id!(
    /// Names a snapshot manifest file by the hash of its bytes.
    SnapshotId
);
typed_id!(
    /// Names an index table by the hash of its bytes.
    IndexId
);

/// The unkeyed BLAKE3 hash that names a stored file.
pub fn file_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// True when `s` is 64 lowercase hex digits (a stored file name).
pub fn is_hex_name(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Hashes ids for hash maps and sets. Blob ids are keyed BLAKE3 outputs
/// and pack ids hashes of encrypted files: uniformly spread, and not
/// chosen by anyone without the key, so SipHash's protection against
/// crafted keys buys nothing here, while it was a tenth of gc's planning
/// time. This mixes every 8 bytes with a multiply.
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for piece in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..piece.len()].copy_from_slice(piece);
            self.0 = (self.0.rotate_left(23) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// A hash map keyed by ids, hashed with [`IdHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;
/// A hash set of ids, hashed with [`IdHasher`].
pub type IdSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_short() {
        let id = BlobId([0xab; 32]);
        assert_eq!(id.short(), "abababab");
        assert_eq!(BlobId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(BlobId::from_hex("xyz").is_err());
        assert!(is_hex_name(&id.to_hex()));
        assert!(!is_hex_name("ABAB"));
    }

    #[test]
    fn json_is_hex_and_bincode_is_raw() {
        let id = PackId([1; 32]);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!("\"{}\"", id.to_hex())
        );
        assert_eq!(bincode::serialize(&id).unwrap(), vec![1u8; 32]);
    }

    #[test]
    fn id_maps_use_every_byte() {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<IdHasher>::default();
        let mut last = BlobId([7; 32]);
        last.0[31] = 8;
        assert_ne!(build.hash_one(BlobId([7; 32])), build.hash_one(last));
        let ids: Vec<BlobId> = (0..10_000u32)
            .map(|i| BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let set: IdSet<BlobId> = ids.iter().copied().collect();
        assert_eq!(set.len(), ids.len());
        assert!(ids.iter().all(|id| set.contains(id)));
        assert!(!set.contains(&BlobId([0; 32])));
    }
}
