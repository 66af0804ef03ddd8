//! Blob compression: zstd, or raw when compressing does not pay.
//!
//! A blob's plaintext is prefixed with one byte naming its encoding before
//! it is encrypted: 0 = raw, 1 = zstd frame. Incompressible input is detected
//! cheaply by compressing a few small probes at level 1 first.

use crate::error::{Error, Result};

/// Encoding byte: stored as is.
pub const RAW: u8 = 0;
/// Encoding byte: one zstd frame.
pub const ZSTD: u8 = 1;

/// Bytes in each probe of [`looks_compressible`].
const PROBE: usize = 2 * 1024;
/// Probes per blob: spread over it, since one chunk may hold a compressed
/// archive next to plain text.
const PROBES: usize = 16;

/// Each thread's zstd contexts, created once: making one per blob would
/// allocate and fault in its workspace every time.
struct Contexts {
    level: i32,
    main: Option<zstd::bulk::Compressor<'static>>,
    probe: Option<zstd::zstd_safe::CCtx<'static>>,
    probe_out: Vec<u8>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
}

thread_local! {
    static CTX: std::cell::RefCell<Contexts> = const {
        std::cell::RefCell::new(Contexts {
            level: 0,
            main: None,
            probe: None,
            probe_out: Vec::new(),
            decompressor: None,
        })
    };
}

/// Encodes `data` as `encoding byte || payload` into `out` (cleared first).
/// `level` 0 disables compression. (Blobs are sealed by
/// [`crate::pack::seal_blob`], which uses [`compress_into`] directly.)
pub fn encode_into(data: &[u8], level: i32, out: &mut Vec<u8>) {
    out.clear();
    if worth_compressing(data, level) {
        out.resize(1 + data.len(), 0);
        if let Some(n) = compress_checked(data, level, &mut out[1..]) {
            out[0] = ZSTD;
            out.truncate(1 + n);
            return;
        }
        out.clear();
    }
    out.push(RAW);
    out.extend_from_slice(data);
}

/// Compresses `data` into `out` (as long as `data`) where that pays: the
/// length of the zstd frame, or `None` when `data` is to be stored raw
/// (compression disabled, too small, judged incompressible by its probes,
/// or a frame that would not save a byte). Nothing is allocated, and on
/// `None` the caller still holds `data` to seal as it is.
pub fn compress_into(data: &[u8], level: i32, out: &mut [u8]) -> Option<usize> {
    if worth_compressing(data, level) {
        compress_checked(data, level, out)
    } else {
        None
    }
}

/// Whether compressing `data` at `level` is worth a try: compression is
/// on, `data` is not tiny, and a probe of it compresses.
fn worth_compressing(data: &[u8], level: i32) -> bool {
    level != 0 && data.len() >= 64 && CTX.with(|c| looks_compressible(&mut c.borrow_mut(), data))
}

/// One zstd frame of `data` in `out`, if it is shorter than `data` (`out`
/// is as long as `data`: a frame that does not fit saves nothing).
fn compress_checked(data: &[u8], level: i32, out: &mut [u8]) -> Option<usize> {
    CTX.with(|c| {
        let c = &mut *c.borrow_mut();
        if c.main.is_none() || c.level != level {
            c.main = zstd::bulk::Compressor::new(level).ok();
            c.level = level;
        }
        let n = c.main.as_mut()?.compress_to_buffer(data, out).ok()?;
        (n < data.len()).then_some(n)
    })
}

/// Whether a level-1 pass over any of a few probes saves at least 3%.
///
/// The probes go through one stream, each flushed on its own, so a probe
/// also counts as compressible where it repeats bytes of a probe before
/// it: data repeating with a period longer than one probe (a block of
/// random bytes written over and over) is found, where two probes fall on
/// the same part of the period (see [`jitter`]); periods of 64 KiB and
/// less are, in chunks of 1 and 8 MiB. A longer period is found less
/// often, and its data is then stored raw unless the chunker's cuts
/// repeat with it (DESIGN.md, "Backup pipeline").
fn looks_compressible(c: &mut Contexts, data: &[u8]) -> bool {
    use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush;
    use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer, ResetDirective};
    if data.len() <= PROBE * PROBES {
        return true;
    }
    if c.probe.is_none() {
        c.probe = CCtx::try_create().and_then(|mut cctx| {
            cctx.set_parameter(CParameter::CompressionLevel(1)).ok()?;
            // A window over all the probes, and tables for as much.
            cctx.set_parameter(CParameter::WindowLog(15)).ok()?;
            cctx.set_parameter(CParameter::HashLog(12)).ok()?;
            Some(cctx)
        });
    }
    let Some(probe) = c.probe.as_mut() else {
        return true;
    };
    if probe.reset(ResetDirective::SessionOnly).is_err() {
        return true;
    }
    c.probe_out
        .resize(zstd::zstd_safe::compress_bound(PROBE) + 64, 0);
    let stride = (data.len() - PROBE) / (PROBES - 1);
    let slack = stride.saturating_sub(PROBE);
    (0..PROBES).any(|i| {
        let at = (i * stride + jitter(i, slack)).min(data.len() - PROBE);
        let mut input = InBuffer::around(&data[at..at + PROBE]);
        let mut written = 0;
        loop {
            let mut out = OutBuffer::around(&mut c.probe_out[..]);
            let left = probe.compress_stream2(&mut out, &mut input, ZSTD_e_flush);
            written += out.pos();
            match left {
                Ok(0) => break,
                Ok(_) => continue,
                Err(_) => return true,
            }
        }
        written < PROBE * 97 / 100
    })
}

/// How far past its place in even steps probe `i` starts: up to `slack`
/// (the gap between two probes), by a fixed, uneven sequence. Evenly
/// spaced probes of data repeating with a period that divides their
/// step into whole probes (an 8 MiB chunk's step is 16 probes of a
/// 32 KiB period) each fall on another part of the period, none repeating
/// another; at uneven places, pairs of probes fall on the same part.
fn jitter(i: usize, slack: usize) -> usize {
    let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 32) % (slack as u64 + 1)) as usize
}

/// Decodes an encoded blob whose plaintext is known to be `raw_len` bytes.
/// Never allocates more than `raw_len`.
pub fn decode(encoded: &[u8], raw_len: usize, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_into(encoded, raw_len, what, &mut out)?;
    Ok(out)
}

/// The plaintext of an encoded blob: a raw blob's is a slice of `encoded`
/// itself (nothing is copied), a compressed one's is decompressed into
/// `scratch`. Same checks as [`decode`].
pub fn decode_ref<'a>(
    encoded: &'a [u8],
    raw_len: usize,
    what: &str,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    match encoded.split_first() {
        Some((&RAW, payload)) if payload.len() == raw_len => Ok(payload),
        Some((&RAW, payload)) => Err(Error::corrupt(
            what,
            format!("decodes to {} bytes, index says {raw_len}", payload.len()),
        )),
        _ => {
            decode_into(encoded, raw_len, what, scratch)?;
            Ok(scratch)
        }
    }
}

/// Like [`decode`], into `out` (replacing its contents), so one buffer
/// serves many blobs.
pub fn decode_into(encoded: &[u8], raw_len: usize, what: &str, out: &mut Vec<u8>) -> Result<()> {
    let (&kind, payload) = encoded
        .split_first()
        .ok_or_else(|| Error::corrupt(what, "empty blob"))?;
    out.clear();
    match kind {
        RAW => out.extend_from_slice(payload),
        ZSTD => {
            out.reserve(raw_len);
            CTX.with(|c| {
                let d = &mut c.borrow_mut().decompressor;
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut()
                    .expect("just created")
                    .decompress_to_buffer(payload, out)
            })
            .map_err(|e| {
                out.clear();
                Error::corrupt(what, format!("zstd: {e}"))
            })?;
        }
        other => return Err(Error::corrupt(what, format!("unknown encoding {other}"))),
    }
    if out.len() != raw_len {
        let got = out.len();
        out.clear();
        return Err(Error::corrupt(
            what,
            format!("decodes to {got} bytes, index says {raw_len}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_ref_matches_decode() {
        let text = vec![7u8; 10_000];
        let noise: Vec<u8> = (0..10_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        for data in [&text[..], &noise[..]] {
            let mut encoded = Vec::new();
            encode_into(data, 3, &mut encoded);
            let mut scratch = Vec::new();
            let got = decode_ref(&encoded, data.len(), "b", &mut scratch).unwrap();
            assert_eq!(got, data);
            for wrong in [data.len() - 1, data.len() + 1] {
                let err = decode_ref(&encoded, wrong, "blob 7", &mut scratch).unwrap_err();
                assert!(err.to_string().contains("blob 7"), "{err}");
                assert!(err.to_string().contains("index says"), "{err}");
            }
        }
        let mut scratch = Vec::new();
        assert!(decode_ref(&[], 0, "b", &mut scratch).is_err());
        assert!(decode_ref(&[9, 1, 2], 2, "b", &mut scratch).is_err());
    }

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
    fn a_blob_mixing_random_and_plain_data_is_compressed() {
        // Random bytes in the middle, where a single probe would look.
        let mut data = b"plain text, plain text. ".repeat(20_000);
        let mid = data.len() / 2;
        rand::RngCore::fill_bytes(
            &mut rand::thread_rng(),
            &mut data[mid - 100_000..mid + 100_000],
        );
        let mut out = Vec::new();
        encode_into(&data, 3, &mut out);
        assert_eq!(out[0], ZSTD);
        assert!(
            out.len() < data.len() / 2,
            "{} of {}",
            out.len(),
            data.len()
        );
        assert_eq!(decode(&out, data.len(), "b").unwrap(), data);
    }

    #[test]
    fn one_compressible_block_among_random_ones_is_found() {
        // 1 MiB of random 64 KiB blocks but one of text, away from where
        // probes at the ends or the middle would look.
        let mut data = vec![0u8; 1 << 20];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
        let text = b"plain text, plain text. ".repeat(3000);
        data[128 << 10..192 << 10].copy_from_slice(&text[..64 << 10]);
        let mut out = Vec::new();
        encode_into(&data, 3, &mut out);
        assert_eq!(out[0], ZSTD);
        assert!(
            out.len() < data.len() - (32 << 10),
            "{} of {}",
            out.len(),
            data.len()
        );
        assert_eq!(decode(&out, data.len(), "b").unwrap(), data);
    }

    #[test]
    fn random_bytes_repeated_with_a_period_longer_than_a_probe_are_compressed() {
        // A block of random bytes written over and over (preallocated
        // pages of a database, a test pattern): no probe alone repeats,
        // but each repeats the probes before it.
        let periods = [
            3 << 10,
            4 << 10,
            12 << 10,
            24 << 10,
            32 << 10,
            40 << 10,
            64 << 10,
        ];
        for (period, len) in periods
            .into_iter()
            .flat_map(|p| [(p, 1 << 20), (p, 8 << 20)])
        {
            let mut block = vec![0u8; period];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut block);
            let data: Vec<u8> = block.iter().copied().cycle().take(len).collect();
            let mut out = Vec::new();
            encode_into(&data, 3, &mut out);
            assert_eq!(out[0], ZSTD, "period {period}, {len} bytes");
            assert!(
                out.len() < data.len() / 8,
                "period {period}, {len} bytes: {} of {}",
                out.len(),
                data.len()
            );
            assert_eq!(decode(&out, data.len(), "b").unwrap(), data);
        }
    }

    #[test]
    fn hostile_blobs_are_errors() {
        assert!(decode(&[], 0, "b").is_err());
        assert!(decode(&[9, 1, 2], 2, "b").is_err());
        assert!(decode(&[ZSTD, 1, 2, 3], 1 << 20, "b").is_err());
    }
}
