//! Lock files as stored (`cairn::repo::lock::LockInfo::decode`).
#![no_main]

mod common;

use cairn::repo::lock::LockInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = LockInfo::decode(data, common::key());
});
