//! The repository `config` file.
//!
//! `"CAIRNCFG" | u32 version | repo id (32) | sealed(Config)`, the sealed
//! part authenticated together with the 44 bytes before it. Written by
//! `init`, and again only by `cairn upgrade`, which raises its version
//! (see [`crate::repo::upgrade`]). Always sealed with XChaCha20-Poly1305: the
//! cipher of everything else is named inside it (versions 2 to 5), or is
//! XChaCha20-Poly1305 too (version 1, which has no such field). Version 3
//! has the structure of version 2, and says the repository's index tables
//! are of format version 2 (see [`Config::index_version`]); version 4 the
//! same, and that backups store large directories in parts (see
//! [`Config::parted_trees`]); version 5 the same, and that backups write
//! snapshots of version 2 (see [`crate::snapshot::Snapshot::version_for`]).

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::codec;
use crate::crypto::{Cipher, MasterKey};
use crate::error::{Error, Result};

/// The first bytes of a config file.
pub const MAGIC: &[u8; 8] = b"CAIRNCFG";
/// Format version of the config file and of the repository layout that
/// `init` writes; every version from 1 up to it is read.
pub const VERSION: u32 = 5;
const PLAIN_LEN: usize = 12 + 32;

/// Smallest and largest accepted target pack size.
pub const PACK_SIZE_RANGE: std::ops::RangeInclusive<u32> = (1 << 20)..=(1 << 30);
/// Accepted zstd levels (0 = store uncompressed).
pub const LEVEL_RANGE: std::ops::RangeInclusive<i32> = -7..=22;

/// Repository-wide settings fixed at `init`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Version of this structure.
    pub version: u32,
    /// Random id of the repository (also in plaintext before the sealed part).
    #[serde(with = "hex32")]
    pub repo_id: [u8; 32],
    /// Chunk size bounds and secret gear seed.
    pub chunker: ChunkerParams,
    /// zstd level for blobs; 0 stores them uncompressed.
    pub compression: i32,
    /// Target pack file size in bytes.
    pub pack_size: u32,
    /// Creation time, ns since the Unix epoch.
    pub created_ns: i64,
    /// The cipher sealing everything but the config and key files
    /// (versions 2 to 5; always XChaCha20-Poly1305 in version 1).
    pub cipher: Cipher,
}

/// A version-1 config, which has no cipher field.
#[derive(Serialize, Deserialize)]
struct ConfigV1 {
    version: u32,
    repo_id: [u8; 32],
    chunker: ChunkerParams,
    compression: i32,
    pack_size: u32,
    created_ns: i64,
}

impl Config {
    /// Validates values a decoder must not trust.
    pub fn validate(&self) -> Result<()> {
        self.chunker.validate()?;
        if !LEVEL_RANGE.contains(&self.compression) {
            return Err(Error::Invalid(format!(
                "compression level {} is outside {}..={}",
                self.compression,
                LEVEL_RANGE.start(),
                LEVEL_RANGE.end()
            )));
        }
        if !PACK_SIZE_RANGE.contains(&self.pack_size) {
            return Err(Error::Invalid(format!(
                "pack size {} is outside 1 MiB..=1 GiB",
                self.pack_size
            )));
        }
        Ok(())
    }

    /// The format version of the index tables written into this
    /// repository: 2 (a table per kind of blob) from repository version 3
    /// on, else 1, which the cairn that made the repository reads.
    pub fn index_version(&self) -> u32 {
        if self.version >= 3 {
            2
        } else {
            1
        }
    }

    /// Whether backups store a directory of many entries in parts (see
    /// [`crate::tree::Parts`]): from repository version 4 on; the cairn
    /// that made an older repository does not read them.
    pub fn parted_trees(&self) -> bool {
        self.version >= 4
    }

    /// The encoded structure, in the layout of `self.version` (a
    /// version-1 config cannot name a cipher other than XChaCha).
    pub fn encode_plain(&self) -> Result<Vec<u8>> {
        match self.version {
            1 if self.cipher == Cipher::XChaCha20Poly1305 => Ok(codec::encode(&ConfigV1 {
                version: 1,
                repo_id: self.repo_id,
                chunker: self.chunker,
                compression: self.compression,
                pack_size: self.pack_size,
                created_ns: self.created_ns,
            })),
            2..=5 => Ok(codec::encode(self)),
            1 => Err(Error::Invalid(format!(
                "a version-1 config cannot name cipher {}",
                self.cipher.name()
            ))),
            v => Err(Error::Invalid(format!(
                "config version {v} is not one this cairn writes (1 to 5)"
            ))),
        }
    }

    /// The config file's bytes.
    pub fn encode(&self, key: &MasterKey) -> Result<Vec<u8>> {
        let plain = self.encode_plain()?;
        let mut out = codec::header(MAGIC, self.version);
        out.extend_from_slice(&self.repo_id);
        let aad = out.clone();
        key.seal_config(&plain, &aad, &mut out);
        Ok(out)
    }

    /// The repository id, readable without the key.
    pub fn peek_repo_id(bytes: &[u8]) -> Result<[u8; 32]> {
        Ok(Config::peek(bytes)?.1)
    }

    /// The file's version and repository id, readable without the key:
    /// an error for a file whose header is damaged or of a later format.
    pub fn peek(bytes: &[u8]) -> Result<(u32, [u8; 32])> {
        let version = codec::check_header(bytes, MAGIC, VERSION, "config")?;
        if bytes.len() < PLAIN_LEN {
            return Err(Error::corrupt("config", "truncated"));
        }
        Ok((version, bytes[12..PLAIN_LEN].try_into().expect("32 bytes")))
    }

    /// Whether `key` authenticates the config file: if it does, the key
    /// is this repository's, whatever else is wrong with the file.
    pub fn authenticates(bytes: &[u8], key: &MasterKey) -> bool {
        Config::peek(bytes).is_ok()
            && key
                .open_config(&bytes[PLAIN_LEN..], &bytes[..PLAIN_LEN], "config")
                .is_ok()
    }

    /// Decodes and authenticates the config file. The key it returns seals
    /// with the repository's cipher.
    pub fn decode(bytes: &[u8], key: &MasterKey) -> Result<Config> {
        let (version, repo_id) = Config::peek(bytes)?;
        let plain = key.open_config(&bytes[PLAIN_LEN..], &bytes[..PLAIN_LEN], "config")?;
        let config = if version == 1 {
            let v1: ConfigV1 = codec::decode(&plain, "config")?;
            Config {
                version: v1.version,
                repo_id: v1.repo_id,
                chunker: v1.chunker,
                compression: v1.compression,
                pack_size: v1.pack_size,
                created_ns: v1.created_ns,
                cipher: Cipher::XChaCha20Poly1305,
            }
        } else {
            codec::decode::<Config>(&plain, "config")?
        };
        if config.version != version {
            return Err(Error::corrupt(
                "config",
                format!(
                    "says version {} inside a version-{version} file",
                    config.version
                ),
            ));
        }
        if config.repo_id != repo_id {
            return Err(Error::corrupt("config", "repository id mismatch"));
        }
        config.validate().map_err(|e| Error::corrupt("config", e))?;
        Ok(config)
    }
}

/// Serde helper: 32 bytes as hex in JSON, raw in the binary encoding.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serialises 32 bytes.
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(v))
        } else {
            v.serialize(s)
        }
    }

    /// Deserialises 32 bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let mut out = [0u8; 32];
            hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
            Ok(out)
        } else {
            <[u8; 32]>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config {
            version: VERSION,
            repo_id: [3; 32],
            chunker: ChunkerParams::default(),
            compression: 3,
            pack_size: 32 << 20,
            created_ns: 1,
            cipher: Cipher::Xaes256Gcm,
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let key = MasterKey::generate();
        let bytes = sample().encode(&key).unwrap();
        assert_eq!(&bytes[..8], b"CAIRNCFG");
        assert_eq!(&bytes[8..12], &VERSION.to_le_bytes());
        assert_eq!(Config::decode(&bytes, &key).unwrap(), sample());
        assert_eq!(Config::peek_repo_id(&bytes).unwrap(), [3; 32]);
        let mut bad = bytes.clone();
        bad[20] ^= 1; // repo id is authenticated
        assert!(Config::decode(&bad, &key).is_err());
        assert!(Config::decode(&bytes[..30], &key).is_err());
    }

    #[test]
    fn version_1_has_no_cipher_field_and_means_xchacha() {
        let key = MasterKey::generate();
        let v1 = Config {
            version: 1,
            cipher: Cipher::XChaCha20Poly1305,
            ..sample()
        };
        let bytes = v1.encode(&key).unwrap();
        assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
        let plain = key.open_config(&bytes[44..], &bytes[..44], "c").unwrap();
        assert_eq!(plain.len(), codec::encode(&sample()).len() - 4);
        assert_eq!(Config::decode(&bytes, &key).unwrap(), v1);
        let err = Config {
            version: 1,
            ..sample()
        }
        .encode(&key)
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot name cipher xaes-256-gcm"),
            "{err}"
        );
        // The header's version and the structure's must agree.
        let mut swapped = bytes.clone();
        swapped[8] = 2;
        let mut resealed = swapped[..44].to_vec();
        key.seal_config(&plain, &swapped[..44], &mut resealed);
        assert!(Config::decode(&resealed, &key).is_err());
        let mut v2_as_1 = sample().encode(&key).unwrap();
        let plain2 = key
            .open_config(&v2_as_1[44..], &v2_as_1[..44], "c")
            .unwrap();
        v2_as_1[8] = 1;
        let mut resealed = v2_as_1[..44].to_vec();
        key.seal_config(&plain2, &v2_as_1[..44], &mut resealed);
        let err = Config::decode(&resealed, &key).unwrap_err();
        assert!(err.to_string().contains("config"), "{err}");
    }

    #[test]
    fn a_later_version_is_refused_by_name() {
        let key = MasterKey::generate();
        let mut bytes = sample().encode(&key).unwrap();
        bytes[8] = VERSION as u8 + 1;
        let err = Config::decode(&bytes, &key).unwrap_err().to_string();
        let want = format!("format version {} is not supported", VERSION + 1);
        assert!(err.contains(&want), "{err}");
        assert!(err.contains("a newer cairn may have written it"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let key = MasterKey::generate();
        let mut c = sample();
        c.chunker.max = 1;
        assert!(Config::decode(&c.encode(&key).unwrap(), &key).is_err());
    }
}
