//! The snapshot decoder behind decryption: the input is sealed as a
//! snapshot's plaintext under the fuzzing key and decoded; plus
//! `codec::decode::<Snapshot>` directly.
#![no_main]

mod common;

use cairn::codec;
use cairn::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<Snapshot>(data, "snapshot");

    let key = common::key();
    let file = common::sealed_file(&common::file_header(b"CAIRNSNP"), data);
    if let Ok(s) = Snapshot::decode(&file, key, "snapshot") {
        assert_eq!(codec::encode(&s), data);
        let (_, again) = s.encode(key);
        assert_eq!(Snapshot::decode(&again, key, "snapshot").unwrap(), s);
        // What `cairn snapshots` shows.
        let _ = cairn::format_time(s.time_ns);
        let _ = serde_json::to_string(&s).expect("JSON of a decoded snapshot");
    }
});
