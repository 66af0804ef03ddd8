//! The repository config file as stored (`cairn::repo::Config::decode`,
//! `Config::peek_repo_id`).
#![no_main]

mod common;

use cairn::repo::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = Config::peek_repo_id(data) {
        assert_eq!(&id[..], &data[12..44]);
    }
    let _ = Config::decode(data, common::key());
});
