//! Tree blob plaintexts (`cairn::tree::Tree::decode`, the node-by-node
//! `cairn::tree::EncodedTree`, the references-only
//! `cairn::tree::scan_refs`, and `cairn::tree::TreeBlob`, which also
//! reads a directory's list of parts): trees are blobs, so
//! after `open_blob` the decoder sees exactly these bytes.
#![no_main]

use cairn::codec;
use cairn::tree::{check_name, scan_refs, EncodedTree, Node, NodeKind, Parts, Ref, Tree, TreeBlob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The references-only scan gc's mark uses (`scan_refs`) never panics
    // either, and on every tree decoding accepts reports the same
    // references.
    let mut scanned = Vec::new();
    let scan = scan_refs(data, "tree", |r| scanned.push(r));
    let encoded = EncodedTree::decode(data.to_vec(), "tree");
    if let Ok(t) = Tree::decode(data, "tree") {
        assert!(scan.is_ok(), "{scan:?}");
        // Read node by node (restore, a backup's parent), the same tree.
        let encoded = encoded.expect("a tree decoding accepts");
        let nodes: Vec<Node> = encoded.nodes().map(|n| n.expect("checked")).collect();
        assert_eq!(nodes, t.nodes);
        assert!(encoded.names().eq(t.nodes.iter().map(|n| &n.name.0[..])));
        let mut refs = Vec::new();
        for n in &t.nodes {
            match &n.kind {
                NodeKind::File { chunks } => {
                    refs.extend(chunks.iter().map(|c| Ref::Chunk(*c)));
                    refs.push(Ref::FileSize(n.size));
                }
                NodeKind::Dir { subtree } => refs.push(Ref::Subtree(*subtree)),
                _ => {}
            }
        }
        assert_eq!(scanned, refs);
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
    } else {
        assert!(encoded.is_err(), "accepted node by node, not whole");
    }
    // Either kind of tree blob, as readers of a directory take it: a list
    // of parts is canonical, and its parts are what a walk follows.
    match TreeBlob::decode(data.to_vec(), "tree") {
        Ok(TreeBlob::Parts(parts)) => {
            assert!(parts.len() >= 2);
            assert_eq!(Parts::encode(&parts), data);
            let listed: Vec<Ref> = parts.iter().map(|p| Ref::Part(*p)).collect();
            assert_eq!(scan.as_ref().ok(), Some(&()));
            assert_eq!(scanned, listed);
            let decoded: Parts = codec::decode(data, "tree").expect("a list of parts decodes");
            assert_eq!(decoded.parts, parts);
        }
        Ok(TreeBlob::Nodes(t)) => assert_eq!(
            Some(t.len()),
            Tree::decode(data, "tree").ok().map(|t| t.nodes.len())
        ),
        Err(_) => assert!(Tree::decode(data, "tree").is_err()),
    }
    // The codec alone, without the tree invariants.
    let _ = codec::decode::<Tree>(data, "tree");
});
