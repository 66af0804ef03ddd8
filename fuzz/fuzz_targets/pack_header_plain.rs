//! The pack header decoder behind decryption: the input is split into blob
//! bytes and a header plaintext, built into a correctly sealed pack and
//! decoded. Also `codec::decode::<PackHeader>` on the input itself.
#![no_main]

mod common;

use cairn::codec;
use cairn::pack::{self, PackHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<PackHeader>(data, "pack header");

    let key = common::key();
    let (file, plain, start) = common::pack_with_sealed_header(data);

    if let Ok(h) = pack::decode_header(&file, key, "pack") {
        // Canonical encoding, and every entry inside the blob area, in order.
        assert_eq!(codec::encode(&h), plain);
        let mut end = pack::HEADER_LEN as u64;
        for e in &h.entries {
            assert!(u64::from(e.offset) >= end);
            end = u64::from(e.offset) + u64::from(e.length);
            assert!(end <= start as u64);
            assert!(e.raw_length <= pack::MAX_BLOB);
        }
    }
});
