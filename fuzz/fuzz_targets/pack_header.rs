//! Pack trailer and header parsing on arbitrary bytes, as read from a
//! damaged or hostile pack file (`cairn::pack::decode_header`,
//! `header_range`, `decode_sealed_header`).
#![no_main]

mod common;

use cairn::pack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = common::key();
    let _ = pack::decode_header(data, key, "pack");

    // The trailer on its own, with a claimed file length: this is how a
    // reader that fetches the trailer first (range reads) uses it.
    let (len, rest) = common::take_uint(data, 8);
    let trailer = &rest[..rest.len().min(pack::trailer_len())];
    if let Ok((start, hlen)) = pack::header_range(trailer, len, "pack") {
        assert!(start >= pack::HEADER_LEN as u64);
        assert_eq!(start + hlen as u64 + pack::trailer_len() as u64, len);
    }

    // A sealed header claimed to start anywhere.
    let (start, sealed) = common::take_uint(data, 4);
    let _ = pack::decode_sealed_header(sealed, start, key, "pack");
});
