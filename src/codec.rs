//! The fixed binary encoding of every stored structure.
//!
//! Structures are encoded with bincode 1 configured explicitly: little-endian,
//! fixed-width integers (u8/u16/u32/u64 as 1/2/4/8 bytes), sequences and
//! strings prefixed by a u64 length, `Option` as a u8 tag (0 none, 1 some)
//! followed by the value, enums as a u32 variant index followed by the
//! fields, structs as their fields in declaration order, fixed arrays as
//! their bytes. Decoding rejects trailing bytes and never reads or allocates
//! past the input it was given. docs/FORMAT.md restates this byte by byte;
//! the golden tests below pin it so a crate upgrade cannot change it.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(limit)
}

/// Encodes `value` in the repository encoding.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising into a Vec cannot fail for our types: no maps with
    // non-string keys, no unsized sequences, and the limit is u64::MAX.
    options(u64::MAX)
        .serialize(value)
        .expect("in-memory encoding of a plain struct")
}

/// Decodes exactly `bytes` as a `T`; `what` names the object in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    options(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| Error::corrupt(what, e))
}

/// Appends the encoding of `value` to `out`: encoding values one after
/// another gives the bytes of a sequence of them (after its length).
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    options(u64::MAX)
        .serialize_into(out, value)
        .expect("in-memory encoding of a plain struct")
}

/// How many bytes [`encode`] gives for `value`.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    options(u64::MAX)
        .serialized_size(value)
        .map_or(0, |n| n as usize)
}

/// Decodes one `T` from the front of `bytes` and advances `bytes` past
/// it; what follows is left for the next call. Never reads or allocates
/// past `bytes`.
pub fn decode_next<T: DeserializeOwned>(bytes: &mut &[u8], what: &str) -> Result<T> {
    options(bytes.len() as u64)
        .deserialize_from(bytes)
        .map_err(|e| Error::corrupt(what, e))
}

/// Checks that `bytes` begins with `magic` followed by a u32 version in
/// `1..=max_version`; returns the version.
pub fn check_header(bytes: &[u8], magic: &[u8; 8], max_version: u32, what: &str) -> Result<u32> {
    if bytes.len() < 12 || &bytes[..8] != magic {
        return Err(Error::corrupt(
            what,
            format!("does not start with {:?}", String::from_utf8_lossy(magic)),
        ));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version == 0 || version > max_version {
        // Damage, or a file of a later format: say both, since the bytes
        // cannot tell them apart.
        return Err(Error::corrupt(
            what,
            format!(
                "format version {version} is not supported (this cairn reads 1..={max_version}; \
                 a newer cairn may have written it)"
            ),
        ));
    }
    Ok(version)
}

/// `magic || version` as the 12-byte header of a stored file.
pub fn header(magic: &[u8; 8], version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum E {
        A,
        B(u16),
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct S {
        a: u32,
        s: String,
        o: Option<u8>,
        e: E,
        v: Vec<u8>,
        arr: [u8; 2],
    }

    #[test]
    fn golden_bytes() {
        let s = S {
            a: 1,
            s: "hi".into(),
            o: Some(7),
            e: E::B(0x0102),
            v: vec![9],
            arr: [5, 6],
        };
        let bytes = encode(&s);
        let want: Vec<u8> = [
            &[1, 0, 0, 0][..],
            &[2, 0, 0, 0, 0, 0, 0, 0, b'h', b'i'],
            &[1, 7],
            &[1, 0, 0, 0, 2, 1],
            &[1, 0, 0, 0, 0, 0, 0, 0, 9],
            &[5, 6],
        ]
        .concat();
        assert_eq!(bytes, want);
        assert_eq!(decode::<S>(&bytes, "s").unwrap(), s);
        assert!(encode(&E::A) == vec![0, 0, 0, 0]);
    }

    #[test]
    fn hostile_lengths_are_rejected_without_allocating() {
        // A string claiming 2^60 bytes.
        let mut bytes = vec![1, 0, 0, 0];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode::<S>(&bytes, "s").is_err());
        // Trailing bytes.
        let mut ok = encode(&E::A);
        ok.push(0);
        assert!(decode::<E>(&ok, "e").is_err());
    }

    #[test]
    fn header_checks_magic_and_version() {
        let h = header(b"CAIRNXXX", 1);
        assert_eq!(check_header(&h, b"CAIRNXXX", 1, "x").unwrap(), 1);
        assert!(check_header(&h, b"CAIRNYYY", 1, "x").is_err());
        assert!(check_header(&header(b"CAIRNXXX", 2), b"CAIRNXXX", 1, "x").is_err());
        assert!(check_header(&h[..5], b"CAIRNXXX", 1, "x").is_err());
    }
}
