//! A directory's nodes as readers take them: from its tree blob, or, for
//! a directory stored in parts (see [`crate::tree::Parts`]), from each
//! part in turn, read only when the one before it is used up. A reader
//! of a directory of many entries then holds one part of its tree.

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::tree::{EncodedTree, IntoNodes, Node, TreeBlob};

use super::Repository;

/// The nodes of one directory, in name order (see the module docs). An
/// error (a part that cannot be read, or parts out of order) is given
/// once and ends the nodes.
pub struct DirNodes<'r> {
    repo: &'r Repository,
    /// The part being read, or the whole tree.
    current: Option<IntoNodes>,
    /// Parts not read yet.
    parts: std::vec::IntoIter<BlobId>,
    /// The directory is stored in parts: names are checked to ascend
    /// across them (each part checks its own).
    parted: bool,
    /// The name of the last node given, when `parted`.
    last: Vec<u8>,
    /// What the directory is, for errors.
    what: String,
    done: bool,
}

impl Repository {
    /// Reads and checks the tree blob `id`: a directory's nodes, or the
    /// list of its parts.
    pub fn load_tree_blob(&self, id: &BlobId) -> Result<TreeBlob> {
        TreeBlob::decode(self.read_tree_blob(id)?, &tree_what(id)).map_err(|e| match e {
            // Read as a tree where the index has only a file's chunk of
            // that id: a folder's entry names a chunk.
            Error::Corrupt { what, detail }
                if self
                    .index()
                    .is_ok_and(|i| !i.contains_kind(id, crate::pack::BlobKind::Tree)) =>
            {
                Error::Corrupt {
                    what,
                    detail: format!("{detail} (it is stored as a file's chunk, not as a tree)"),
                }
            }
            e => e,
        })
    }

    /// The nodes of the directory whose tree is `id` (read and checked
    /// now; a directory in parts reads each part as it is reached).
    pub fn dir_nodes(&self, id: &BlobId) -> Result<DirNodes<'_>> {
        Ok(match self.load_tree_blob(id)? {
            TreeBlob::Nodes(tree) => DirNodes::of_tree(self, tree),
            TreeBlob::Parts(parts) => DirNodes {
                repo: self,
                current: None,
                parts: parts.into_iter(),
                parted: true,
                last: Vec::new(),
                what: tree_what(id),
                done: false,
            },
        })
    }
}

/// How errors name the tree blob `id`.
fn tree_what(id: &BlobId) -> String {
    format!("tree {}", id.short())
}

impl<'r> DirNodes<'r> {
    /// The nodes of `tree`, a whole directory's (or a made-up one's).
    pub fn of_tree(repo: &'r Repository, tree: EncodedTree) -> DirNodes<'r> {
        DirNodes {
            repo,
            current: Some(tree.into_nodes()),
            parts: Vec::new().into_iter(),
            parted: false,
            last: Vec::new(),
            what: String::new(),
            done: false,
        }
    }

    /// Whether the directory has no entries (a directory in parts has).
    pub fn is_empty(&self) -> bool {
        !self.parted && self.current.as_ref().is_none_or(IntoNodes::is_empty)
    }

    fn fail(&mut self, e: Error) -> Option<Result<Node>> {
        self.done = true;
        self.current = None;
        Some(Err(e))
    }
}

impl Iterator for DirNodes<'_> {
    type Item = Result<Node>;

    fn next(&mut self) -> Option<Result<Node>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(nodes) = &mut self.current {
                match nodes.next() {
                    Some(Ok(node)) => {
                        if self.parted {
                            if !self.last.is_empty() && node.name.0 <= self.last {
                                let why = "its parts' entries are not sorted or not unique";
                                return self.fail(Error::corrupt(&self.what, why));
                            }
                            self.last.clear();
                            self.last.extend_from_slice(&node.name.0);
                        }
                        return Some(Ok(node));
                    }
                    Some(Err(e)) => return self.fail(e),
                    None => self.current = None,
                }
            }
            let Some(part) = self.parts.next() else {
                self.done = true;
                return None;
            };
            let what = format!("part {} of {}", part.short(), self.what);
            let read = self
                .repo
                .read_tree_blob(&part)
                .and_then(|bytes| EncodedTree::decode(bytes, &what));
            match read {
                Ok(tree) if tree.is_empty() => {
                    return self.fail(Error::corrupt(&what, "an empty part"));
                }
                Ok(tree) => self.current = Some(tree.into_nodes()),
                Err(e) => return self.fail(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::mem::MemBackend;
    use crate::backend::testing::repo_of_small_packs;
    use crate::pack::BlobKind;
    use crate::tree::tests::node;
    use crate::tree::{NodeKind, Parts, Tree};
    use crate::writer::BlobWriter;

    fn names(nodes: DirNodes<'_>) -> (Vec<String>, Option<String>) {
        let mut got = Vec::new();
        for n in nodes {
            match n {
                Ok(n) => got.push(n.name.to_string()),
                Err(e) => return (got, Some(e.to_string())),
            }
        }
        (got, None)
    }

    /// A directory in parts gives its parts' nodes in order, reading each
    /// part only once the one before it is used up; parts out of order,
    /// repeated, empty, themselves lists of parts, or missing end the
    /// nodes with an error after what was read.
    #[test]
    fn a_directory_in_parts_gives_its_parts_nodes_in_order() {
        let repo = repo_of_small_packs(Arc::new(MemBackend::default()));
        let writer = BlobWriter::new(&repo);
        let tree = |names: &[&str]| {
            let nodes = names.iter().map(|n| node(n, NodeKind::Fifo)).collect();
            writer
                .add(BlobKind::Tree, &Tree::new(nodes).encode())
                .unwrap()
                .0
        };
        let (ab, cd, empty) = (tree(&["a", "b"]), tree(&["c", "d"]), tree(&[]));
        let whole = tree(&["a", "b", "c", "d"]);
        let never_stored = BlobId([9; 32]);
        let list = |parts: &[BlobId]| writer.add(BlobKind::Tree, &Parts::encode(parts)).unwrap().0;
        let in_order = list(&[ab, cd]);
        let swapped = list(&[cd, ab]);
        let twice = list(&[ab, ab]);
        let with_empty = list(&[ab, empty]);
        let nested = list(&[ab, in_order]);
        let missing = list(&[ab, never_stored]);
        writer.finish().unwrap();

        let all = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(
            names(repo.dir_nodes(&in_order).unwrap()),
            (all.clone(), None)
        );
        assert_eq!(names(repo.dir_nodes(&whole).unwrap()), (all, None));
        assert!(!repo.dir_nodes(&in_order).unwrap().is_empty());
        assert!(repo.dir_nodes(&empty).unwrap().is_empty());

        for (id, read, why) in [
            (swapped, &["c", "d"][..], "not sorted or not unique"),
            (twice, &["a", "b"][..], "not sorted or not unique"),
            (with_empty, &["a", "b"][..], "an empty part"),
            (nested, &["a", "b"][..], "parts where one of its parts"),
            (missing, &["a", "b"][..], "not found"),
        ] {
            let (got, err) = names(repo.dir_nodes(&id).unwrap());
            assert_eq!(got, read, "{why}");
            let err = err.expect(why);
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
