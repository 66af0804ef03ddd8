//! Blob decoding: `cairn::compress::decode` on arbitrary encoded bytes (the
//! plaintext behind a blob's encryption) and `cairn::pack::open_blob`, both
//! on unauthenticated bytes and on the input sealed under the fuzzing key.
//!
//! Input: 3 bytes of claimed raw length (up to 16 MiB, the largest chunk),
//! then the encoded blob.
#![no_main]

mod common;

use cairn::compress;
use cairn::id::BlobId;
use cairn::pack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = common::key();
    let (raw_len, encoded) = common::take_uint(data, 3);
    let raw_len = raw_len as usize;

    // Unauthenticated bytes never open; a huge claimed length is refused.
    assert!(pack::open_blob(key, &BlobId([0; 32]), encoded, raw_len as u32, "blob").is_err());
    let (big, _) = common::take_uint(data, 4);
    let _ = pack::open_blob(key, &BlobId([0; 32]), encoded, big as u32, "blob");

    let sealed = key.seal(encoded, &[]);
    match compress::decode(encoded, raw_len, "blob") {
        Ok(plain) => {
            assert_eq!(plain.len(), raw_len);
            let id = key.blob_id(&plain);
            let opened = pack::open_blob(key, &id, &sealed, raw_len as u32, "blob")
                .expect("a decodable blob opens under its id");
            assert_eq!(opened, plain);
            let mut wrong = id;
            wrong.0[0] ^= 1;
            assert!(pack::open_blob(key, &wrong, &sealed, raw_len as u32, "blob").is_err());
        }
        Err(_) => {
            assert!(
                pack::open_blob(key, &BlobId([0; 32]), &sealed, raw_len as u32, "blob").is_err()
            );
        }
    }
});
