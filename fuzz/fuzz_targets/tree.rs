//! Tree blob plaintexts (`cairn::tree::Tree::decode`): trees are blobs, so
//! after `open_blob` the decoder sees exactly these bytes.
#![no_main]

use cairn::codec;
use cairn::tree::{check_name, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::decode(data, "tree") {
        // The encoding is canonical, so identical trees dedup.
        assert_eq!(t.encode(), data);
        let mut prev: Option<&[u8]> = None;
        for n in &t.nodes {
            assert!(check_name(&n.name.0).is_ok());
            assert!(prev.is_none_or(|p| p < n.name.0.as_slice()));
            prev = Some(&n.name.0);
            let _ = n.kind_char();
            let _ = n.name.to_string();
        }
        // What `cairn ls --json` prints.
        let _ = serde_json::to_string(&t).expect("JSON of a decoded tree");
    }
    // The codec alone, without the tree invariants.
    let _ = codec::decode::<Tree>(data, "tree");
});
