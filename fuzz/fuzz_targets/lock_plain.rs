//! The lock decoder behind decryption: the input is sealed as a lock
//! file's plaintext and decoded; plus `codec::decode::<LockInfo>`. A
//! decoded lock is then described and checked for staleness, as `cairn`
//! does when it meets another process's lock.
#![no_main]

mod common;

use cairn::codec;
use cairn::repo::lock::LockInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<LockInfo>(data, "lock");

    let file = common::sealed_file(&common::file_header(b"CAIRNLCK"), data);
    if let Ok(l) = LockInfo::decode(&file, common::key()) {
        assert_eq!(codec::encode(&l), data);
        let _ = l.describe();
        // A host name no lock names, so no process is signalled.
        let _ = l.is_stale("\0not a host\0", None, None);
    }
});
