//! The repository `config` file.
//!
//! `"CAIRNCFG" | u32 version | repo id (32) | sealed(Config)`, the sealed
//! part authenticated together with the 44 bytes before it. Written once by
//! `init` and never changed.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::codec;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CAIRNCFG";
/// Format version of the config file and of the repository layout.
pub const VERSION: u32 = 1;
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

    /// The config file's bytes.
    pub fn encode(&self, key: &MasterKey) -> Vec<u8> {
        let mut out = codec::header(MAGIC, VERSION);
        out.extend_from_slice(&self.repo_id);
        let aad = out.clone();
        key.seal_into(&codec::encode(self), &aad, &mut out);
        out
    }

    /// The repository id, readable without the key.
    pub fn peek_repo_id(bytes: &[u8]) -> Result<[u8; 32]> {
        codec::check_header(bytes, MAGIC, VERSION, "config")?;
        if bytes.len() < PLAIN_LEN {
            return Err(Error::corrupt("config", "truncated"));
        }
        Ok(bytes[12..PLAIN_LEN].try_into().expect("32 bytes"))
    }

    /// Decodes and authenticates the config file.
    pub fn decode(bytes: &[u8], key: &MasterKey) -> Result<Config> {
        let repo_id = Config::peek_repo_id(bytes)?;
        let plain = key.open(&bytes[PLAIN_LEN..], &bytes[..PLAIN_LEN], "config")?;
        let config: Config = codec::decode(&plain, "config")?;
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
            version: 1,
            repo_id: [3; 32],
            chunker: ChunkerParams::default(),
            compression: 3,
            pack_size: 32 << 20,
            created_ns: 1,
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let key = MasterKey::generate();
        let bytes = sample().encode(&key);
        assert_eq!(&bytes[..8], b"CAIRNCFG");
        assert_eq!(Config::decode(&bytes, &key).unwrap(), sample());
        assert_eq!(Config::peek_repo_id(&bytes).unwrap(), [3; 32]);
        let mut bad = bytes.clone();
        bad[20] ^= 1; // repo id is authenticated
        assert!(Config::decode(&bad, &key).is_err());
        assert!(Config::decode(&bytes[..30], &key).is_err());
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let key = MasterKey::generate();
        let mut c = sample();
        c.chunker.max = 1;
        assert!(Config::decode(&c.encode(&key), &key).is_err());
    }
}
