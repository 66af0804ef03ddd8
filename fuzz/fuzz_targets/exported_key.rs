//! Exported key files (`cairn::repo::export::decode`). Random bytes rarely
//! have the magic, so the input is also laid over the fixed header; what
//! decodes must re-encode to the same bytes.
#![no_main]

use cairn::repo::export;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framed = b"CAIRNXKY".to_vec();
    framed.extend_from_slice(&1u32.to_le_bytes());
    framed.extend_from_slice(data);
    for input in [data, &framed[..]] {
        if let Ok(k) = export::decode(input, "key file") {
            assert_eq!(&export::encode(&k.repo_id, &k.key)[..], input);
        }
    }
});
