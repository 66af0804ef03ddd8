//! The config decoder behind decryption: the input is sealed as the config
//! plaintext (with the repository id it names, when it is long enough to
//! name one) in a version-1 and a version-2 file and decoded; plus
//! `codec::decode::<Config>` directly. A config that decodes must encode
//! back to the same bytes and be usable: its chunker parameters are run on
//! a buffer.
#![no_main]

mod common;

use cairn::codec;
use cairn::repo::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<Config>(data, "config");

    // Plaintext layout: u32 version, then the 32-byte repository id.
    let repo_id = data.get(4..36).unwrap_or(&[0u8; 32][..]);
    let mut decoded = None;
    for version in [1u32, 2] {
        let mut prefix = b"CAIRNCFG".to_vec();
        prefix.extend_from_slice(&version.to_le_bytes());
        prefix.extend_from_slice(repo_id);
        let mut file = prefix.clone();
        common::key().seal_config(data, &prefix, &mut file);
        if let Ok(c) = Config::decode(&file, common::key()) {
            assert_eq!(c.version, version);
            assert_eq!(c.encode_plain().unwrap(), data);
            decoded = Some(c);
        }
    }
    let Some(c) = decoded else {
        return;
    };
    assert!(c.validate().is_ok());
    assert_eq!(&c.repo_id[..], repo_id);

    // Validated chunker parameters must not make the chunker misbehave.
    let buf: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut pos = 0;
    for (off, len) in c.chunker.chunks(&buf) {
        assert_eq!(off, pos);
        assert!(len > 0 && len <= c.chunker.max as usize);
        pos += len;
    }
    assert_eq!(pos, buf.len());
});
