//! `cairn::pack::read_header`, which reads a pack's header through a
//! backend in ranged reads (file header, trailer, sealed header), on a
//! `MemBackend` holding the input as a pack file: it must agree with
//! `decode_header` on the whole file (the same header, or both errors).
//! Random bytes stop at the header's authentication, so the input is
//! also built into a pack whose sealed header has the input's tail as its
//! plaintext. Wrong claimed lengths and failing reads are errors.
//!
//! Input: 2 bytes of blob-area length, then the blob area and the header
//! plaintext (for the sealed pack; the raw pack is the whole input).
#![no_main]

mod common;

use cairn::backend::mem::MemBackend;
use cairn::backend::{Backend, FileKind};
use cairn::pack;
use libfuzzer_sys::fuzz_target;

const NAME: &str = "pack";

/// Reads `file` as a pack both ways and checks they agree.
fn exercise(file: &[u8]) {
    let key = common::key();
    let backend = MemBackend::default();
    backend
        .write(FileKind::Pack, NAME, file)
        .expect("memory write");
    let len = file.len() as u64;

    let ranged = pack::read_header(&backend, NAME, len, key, "pack");
    let whole = pack::decode_header(file, key, "pack");
    match (&ranged, &whole) {
        (Ok(r), Ok(w)) => assert_eq!(r, w),
        (Err(_), Err(_)) => {}
        _ => panic!("ranged {ranged:?} and whole {whole:?} disagree"),
    }
    if let Ok(h) = &ranged {
        // Every entry lies between the file header and the sealed header.
        let (start, _) = pack::header_range(&file[file.len() - pack::trailer_len()..], len, "p")
            .expect("a pack whose header decoded has a trailer");
        let mut end = pack::HEADER_LEN as u64;
        for e in &h.entries {
            assert!(u64::from(e.offset) >= end);
            end = u64::from(e.offset) + u64::from(e.length);
            assert!(end <= start);
            assert!(e.raw_length <= pack::MAX_BLOB);
        }
    }

    // A length past the end cannot be read: an error, never a panic.
    for more in [1, 12, u64::MAX - len] {
        let claimed = len.saturating_add(more);
        if claimed > len {
            let got = pack::read_header(&backend, NAME, claimed, key, "pack");
            assert!(got.is_err(), "{len} bytes read as {claimed}");
        }
    }
    // A shorter one may find another "trailer"; whatever it finds must
    // still pass every check of a header.
    for less in [1, 12, len / 2] {
        let _ = pack::read_header(&backend, NAME, len.saturating_sub(less), key, "pack");
    }
    // A failing read (the first) fails the whole, transiently or not.
    for transient in [false, true] {
        backend.fail_next(1, transient);
        let got = pack::read_header(&backend, NAME, len, key, "pack");
        assert!(got.is_err(), "a read failed but the header was read");
        backend.fail_next(0, false);
    }
    // A missing pack is not found, not corrupt.
    let got = pack::read_header(&backend, "other", len, key, "pack");
    if len >= (pack::HEADER_LEN + pack::trailer_len()) as u64 {
        assert!(got.expect_err("no such pack").is_not_found());
    } else {
        assert!(got.is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);

    exercise(&common::pack_with_sealed_header(data).0);
});
