//! The reused-buffer blob path that restore, verify, gc and the tree
//! walker take: `cairn::compress::decode_ref` (into a scratch buffer kept
//! from input to input, so it holds an earlier blob's bytes) and
//! `cairn::pack::open_blob_with` (on its thread's reused buffers). Each
//! must agree with its allocating twin, `compress::decode` and
//! `pack::open_blob`: the same bytes, or both errors. Two blobs are
//! opened one after another, and one inside the other's callback, so a
//! buffer left holding a larger blob or a failed one shows.
//!
//! Input: 1 byte splitting the rest into two encoded blobs, each then
//! 3 bytes of claimed raw length and the encoded bytes (as `blob`).
#![no_main]

mod common;

use std::cell::RefCell;

use cairn::compress;
use cairn::id::BlobId;
use cairn::pack;
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// The scratch buffer `decode_ref` reuses, kept across inputs.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One blob to open: its sealed bytes, claimed raw length, and the id
/// it opens under if it decodes (a made-up one if it does not).
struct Blob {
    sealed: Vec<u8>,
    raw_len: u32,
    id: BlobId,
    plain: Option<Vec<u8>>,
}

/// Decodes `input` both ways (they must agree) and seals it.
fn blob(input: &[u8]) -> Blob {
    let key = common::key();
    let (raw_len, encoded) = common::take_uint(input, 3);
    let raw_len = raw_len as usize;
    let plain = compress::decode(encoded, raw_len, "blob");
    SCRATCH.with(|s| {
        let mut scratch = s.borrow_mut();
        match (
            compress::decode_ref(encoded, raw_len, "blob", &mut scratch),
            &plain,
        ) {
            (Ok(got), Ok(want)) => assert_eq!(got, &want[..]),
            (Err(_), Err(_)) => {}
            (got, want) => panic!("decode_ref {got:?} and decode {want:?} disagree"),
        }
    });
    let plain = plain.ok();
    let id = plain.as_ref().map_or(BlobId([7; 32]), |p| key.blob_id(p));
    Blob {
        sealed: key.seal(encoded, &[]),
        raw_len: raw_len as u32,
        id,
        plain,
    }
}

/// Opens `b` both ways under `id`: they must agree; returns the bytes.
fn open(b: &Blob, id: &BlobId) -> Option<Vec<u8>> {
    let key = common::key();
    let owned = pack::open_blob(key, id, &b.sealed, b.raw_len, "blob");
    let reused = pack::open_blob_with(key, id, &b.sealed, b.raw_len, "blob", <[u8]>::to_vec);
    match (owned, reused) {
        (Ok(o), Ok(r)) => {
            assert_eq!(o, r);
            Some(o)
        }
        (Err(_), Err(_)) => None,
        (o, r) => panic!("open_blob {o:?} and open_blob_with {r:?} disagree"),
    }
}

fuzz_target!(|data: &[u8]| {
    let key = common::key();
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (usize::from(split) * rest.len() / 255).min(rest.len());
    let (first, second) = rest.split_at(at);
    let blobs = [blob(first), blob(second)];

    for b in &blobs {
        // Opens under its id exactly when it decodes, to its plaintext.
        assert_eq!(open(b, &b.id), b.plain);
        // Never under another id.
        let mut wrong = b.id;
        wrong.0[31] ^= 0x80;
        assert_eq!(open(b, &wrong), None);
        // Never when it is not what was sealed: damage to the sealed bytes.
        if let Some(last) = b.sealed.len().checked_sub(1) {
            let mut damaged = b.sealed.clone();
            damaged[last] ^= 1;
            let r = pack::open_blob_with(key, &b.id, &damaged, b.raw_len, "blob", |_| ());
            assert!(r.is_err());
        }
    }

    // One opened inside the other's callback: each sees its own bytes.
    let [a, b] = &blobs;
    let outer = pack::open_blob_with(key, &a.id, &a.sealed, a.raw_len, "blob", |outer| {
        let inner = pack::open_blob_with(key, &b.id, &b.sealed, b.raw_len, "blob", <[u8]>::to_vec);
        assert_eq!(inner.ok(), b.plain);
        outer.to_vec()
    });
    assert_eq!(outer.ok(), a.plain);
    // And the second again, after the first (larger or failed) left its
    // bytes in the thread's buffers.
    assert_eq!(open(b, &b.id), b.plain);
});
