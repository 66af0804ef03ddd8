//! Key files (`cairn::repo::keys::info` and `decode`).
//!
//! `decode` runs Argon2id with the file's parameters, which `info` bounds
//! (up to 4 GiB, 100 passes), so it is only called here when the memory
//! parameter is at most 64 KiB; otherwise one input could take seconds.
//! Because random bytes rarely have the fixed length and magic, the input
//! is also laid over a valid key file (and over a bare header), so the
//! parameter checks and the decryption path see arbitrary values.
#![no_main]

mod common;

use std::sync::OnceLock;

use cairn::repo::keys::{self, KdfParams};
use libfuzzer_sys::fuzz_target;

const PASSWORD: &[u8] = b"fuzz";
const MAX_DECODE_KIB: u32 = 64;

fn valid_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let params = KdfParams {
            memory_kib: 64,
            iterations: 1,
            lanes: 1,
        };
        keys::encode(common::key(), PASSWORD, params).expect("encode a key file")
    })
}

fn exercise(bytes: &[u8]) {
    let Ok(info) = keys::info(bytes) else {
        return;
    };
    assert!(info.params.validate().is_ok());
    if info.params.memory_kib <= MAX_DECODE_KIB {
        if let Ok(Some(k)) = keys::decode(bytes, PASSWORD) {
            // Only the untouched file opens (parameters are authenticated).
            assert_eq!(bytes, valid_file());
            assert_eq!(k.to_bytes(), common::key().to_bytes());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);

    // Parameter bounds alone, on any three words.
    let (m, rest) = common::take_uint(data, 4);
    let (i, rest) = common::take_uint(rest, 4);
    let (l, _) = common::take_uint(rest, 4);
    let _ = KdfParams {
        memory_kib: m as u32,
        iterations: i as u32,
        lanes: l as u32,
    }
    .validate();

    // The input over a valid file, from byte 12 (magic and version kept).
    let mut file = valid_file().to_vec();
    for (b, d) in file[12..].iter_mut().zip(data) {
        *b = *d;
    }
    exercise(&file);
    // XOR-ed over the whole valid file: small changes anywhere.
    let mut file = valid_file().to_vec();
    for (b, d) in file.iter_mut().zip(data) {
        *b ^= *d;
    }
    exercise(&file);
});
