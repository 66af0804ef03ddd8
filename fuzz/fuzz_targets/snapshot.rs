//! Snapshot files as stored (`cairn::snapshot::Snapshot::decode`):
//! arbitrary bytes must fail cleanly, almost always at authentication.
#![no_main]

mod common;

use cairn::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Snapshot::decode(data, common::key(), "snapshot");
});
