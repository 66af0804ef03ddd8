//! Blob compression: zstd, or raw when compressing does not pay.
//!
//! A blob's plaintext is prefixed with one byte naming its encoding before
//! it is encrypted: 0 = raw, 1 = zstd frame. Incompressible input is detected
//! cheaply by compressing a small sample at level 1 first.

use crate::error::{Error, Result};

/// Encoding byte: stored as is.
pub const RAW: u8 = 0;
/// Encoding byte: one zstd frame.
pub const ZSTD: u8 = 1;

const SAMPLE: usize = 64 * 1024;

thread_local! {
    static CCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Encodes `data` as `encoding byte || payload` into `out` (cleared first).
/// `level` 0 disables compression.
pub fn encode_into(data: &[u8], level: i32, out: &mut Vec<u8>) {
    out.clear();
    if level != 0 && data.len() >= 64 && looks_compressible(data) {
        let compressed = CCTX.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().map(|(l, _)| *l) != Some(level) {
                *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
            }
            c.as_mut().and_then(|(_, z)| z.compress(data).ok())
        });
        if let Some(buf) = compressed.filter(|b| b.len() + 1 < data.len()) {
            out.reserve(buf.len() + 1);
            out.push(ZSTD);
            out.extend_from_slice(&buf);
            return;
        }
    }
    out.push(RAW);
    out.extend_from_slice(data);
}

/// Whether a quick level-1 pass over a sample saves at least 3%.
fn looks_compressible(data: &[u8]) -> bool {
    if data.len() <= SAMPLE {
        return true;
    }
    let mid = data.len() / 2 - SAMPLE / 2;
    let sample = &data[mid..mid + SAMPLE];
    match zstd::bulk::compress(sample, 1) {
        Ok(c) => c.len() < SAMPLE * 97 / 100,
        Err(_) => true,
    }
}

/// Decodes an encoded blob whose plaintext is known to be `raw_len` bytes.
/// Never allocates more than `raw_len`.
pub fn decode(encoded: &[u8], raw_len: usize, what: &str) -> Result<Vec<u8>> {
    let (&kind, payload) = encoded
        .split_first()
        .ok_or_else(|| Error::corrupt(what, "empty blob"))?;
    let out = match kind {
        RAW => payload.to_vec(),
        ZSTD => zstd::bulk::decompress(payload, raw_len)
            .map_err(|e| Error::corrupt(what, format!("zstd: {e}")))?,
        other => return Err(Error::corrupt(what, format!("unknown encoding {other}"))),
    };
    if out.len() != raw_len {
        return Err(Error::corrupt(
            what,
            format!("decodes to {} bytes, index says {raw_len}", out.len()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_data_is_compressed_and_round_trips() {
        let data = vec![7u8; 100_000];
        let mut out = Vec::new();
        encode_into(&data, 3, &mut out);
        assert_eq!(out[0], ZSTD);
        assert!(out.len() < 1000);
        assert_eq!(decode(&out, data.len(), "b").unwrap(), data);
        assert!(decode(&out, data.len() - 1, "b").is_err());
    }

    #[test]
    fn random_data_is_stored_raw() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut rnd = vec![0u8; 200_000];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut rnd);
        let mut out = Vec::new();
        encode_into(&rnd, 3, &mut out);
        assert_eq!(out[0], RAW);
        assert_eq!(decode(&out, rnd.len(), "b").unwrap(), rnd);
        encode_into(&data, 0, &mut out);
        assert_eq!(out[0], RAW);
    }

    #[test]
    fn hostile_blobs_are_errors() {
        assert!(decode(&[], 0, "b").is_err());
        assert!(decode(&[9, 1, 2], 2, "b").is_err());
        assert!(decode(&[ZSTD, 1, 2, 3], 1 << 20, "b").is_err());
    }
}
