//! Trees: one encoded directory listing per blob.
//!
//! A tree blob's plaintext is the encoding of [`Tree`]: a version and the
//! directory's nodes sorted by name. A node carries the metadata cairn
//! restores and the metadata it uses to detect change (size, mtime, ctime,
//! device, inode), plus its content: chunk ids for a file, a subtree id for a
//! directory, a target for a symlink. Identical directories encode to
//! identical bytes and so are stored once.
//!
//! Decoding enforces the invariants restore relies on to stay inside its
//! target: names are non-empty, contain neither `/` nor NUL, are not `.` or
//! `..`, and ascend strictly (so are unique).

use serde::{Deserialize, Serialize, Serializer};

use crate::codec;
use crate::error::{Error, Result};
use crate::id::BlobId;

/// Version of the tree encoding.
pub const VERSION: u32 = 1;

/// A directory listing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// Version of this structure.
    pub version: u32,
    /// Entries, strictly ascending by name bytes.
    pub nodes: Vec<Node>,
}

/// A file name: arbitrary bytes (as Unix allows), shown as text in JSON.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct Name(pub Vec<u8>);

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&String::from_utf8_lossy(&self.0))
        } else {
            self.0.serialize(s)
        }
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// An extended attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Xattr {
    /// Attribute name.
    pub name: Name,
    /// Attribute value (shown lossily as text in JSON).
    pub value: Name,
}

/// What a node is, with its content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A regular file and its chunks in order.
    File {
        /// Chunk ids; concatenated plaintexts are the file's bytes.
        chunks: Vec<BlobId>,
    },
    /// A directory and its tree.
    Dir {
        /// The directory's tree blob.
        subtree: BlobId,
    },
    /// A symbolic link.
    Symlink {
        /// Link target bytes, as stored by the filesystem.
        target: Name,
    },
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Device number.
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number.
        rdev: u64,
    },
    /// A Unix socket (restored as nothing; recorded for completeness).
    Socket,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Entry name.
    pub name: Name,
    /// Kind and content.
    pub kind: NodeKind,
    /// Permission bits and set-id/sticky bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name when known, else empty.
    pub user: String,
    /// Group name when known, else empty.
    pub group: String,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Size in bytes: a file's content length; 0 for every other kind.
    pub size: u64,
    /// Device of the source filesystem.
    pub dev: u64,
    /// Inode number on the source filesystem.
    pub inode: u64,
    /// Number of hard links at backup time.
    pub nlink: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }

    /// The single-letter kind used in listings.
    pub fn kind_char(&self) -> char {
        match self.kind {
            NodeKind::File { .. } => '-',
            NodeKind::Dir { .. } => 'd',
            NodeKind::Symlink { .. } => 'l',
            NodeKind::Fifo => 'p',
            NodeKind::CharDevice { .. } => 'c',
            NodeKind::BlockDevice { .. } => 'b',
            NodeKind::Socket => 's',
        }
    }
}

/// Checks one name against the restore-safety rules.
pub fn check_name(name: &[u8]) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        Err("empty name")
    } else if name == b"." || name == b".." {
        Err("name is . or ..")
    } else if name.contains(&b'/') {
        Err("name contains /")
    } else if name.contains(&0) {
        Err("name contains NUL")
    } else {
        Ok(())
    }
}

impl Tree {
    /// An empty tree of the current version.
    pub fn new(nodes: Vec<Node>) -> Tree {
        Tree {
            version: VERSION,
            nodes,
        }
    }

    /// The blob plaintext of this tree.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a tree blob, enforcing the module's invariants.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Tree> {
        let tree: Tree = codec::decode(bytes, what)?;
        if tree.version != VERSION {
            return Err(Error::corrupt(
                what,
                format!("tree version {} not supported", tree.version),
            ));
        }
        let mut prev: Option<&[u8]> = None;
        for node in &tree.nodes {
            let name = &node.name.0;
            check_name(name).map_err(|why| {
                Error::corrupt(
                    what,
                    format!("entry {:?}: {why}", String::from_utf8_lossy(name)),
                )
            })?;
            if prev.is_some_and(|p| p >= name.as_slice()) {
                return Err(Error::corrupt(what, "entries are not sorted or not unique"));
            }
            prev = Some(name);
        }
        Ok(tree)
    }
}

/// A blob a tree refers to, as [`scan_refs`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ref {
    /// A chunk of a file in the tree.
    Chunk(BlobId),
    /// The tree of a directory in the tree.
    Subtree(BlobId),
}

/// Calls `f` with every chunk and subtree a tree blob's plaintext refers
/// to, in node order, reading them straight from the encoding: no names,
/// strings or metadata are decoded or allocated, which makes this several
/// times cheaper than [`Tree::decode`] for walks that only follow
/// references (gc's mark).
///
/// The layout is checked as strictly as decoding checks it (version,
/// every length against the bytes left, variant numbers, no trailing
/// bytes); what is not checked is what references do not depend on: name
/// rules and order, and that owner names are UTF-8. So every tree
/// [`Tree::decode`] accepts yields exactly its references here; a tree
/// only this accepts is still reported by `verify`. On an error, `f` may
/// already have seen some references.
pub fn scan_refs(bytes: &[u8], what: &str, mut f: impl FnMut(Ref)) -> Result<()> {
    let mut r = Reader { bytes, at: 0 };
    let bad = |why: &str| Error::corrupt(what, format!("tree encoding: {why}"));
    let version = r.u32().ok_or_else(|| bad("truncated"))?;
    if version != VERSION {
        return Err(Error::corrupt(
            what,
            format!("tree version {version} not supported"),
        ));
    }
    let nodes = r.u64().ok_or_else(|| bad("truncated"))?;
    for _ in 0..nodes {
        r.skip_bytes().ok_or_else(|| bad("truncated name"))?;
        match r.u32().ok_or_else(|| bad("truncated"))? {
            0 => {
                let n = r.u64().ok_or_else(|| bad("truncated"))?;
                for _ in 0..n {
                    f(Ref::Chunk(
                        r.id().ok_or_else(|| bad("truncated chunk list"))?,
                    ));
                }
            }
            1 => f(Ref::Subtree(r.id().ok_or_else(|| bad("truncated"))?)),
            2 => r.skip_bytes().ok_or_else(|| bad("truncated link target"))?,
            3 | 6 => {}
            4 | 5 => r.skip(8).ok_or_else(|| bad("truncated"))?,
            v => return Err(bad(&format!("unknown node kind {v}"))),
        }
        // mode, uid, gid; user and group; mtime, ctime, size, dev,
        // inode, nlink; xattrs.
        r.skip(12).ok_or_else(|| bad("truncated"))?;
        r.skip_bytes().ok_or_else(|| bad("truncated owner"))?;
        r.skip_bytes().ok_or_else(|| bad("truncated group"))?;
        r.skip(48).ok_or_else(|| bad("truncated"))?;
        let xattrs = r.u64().ok_or_else(|| bad("truncated"))?;
        for _ in 0..xattrs {
            r.skip_bytes().ok_or_else(|| bad("truncated xattr"))?;
            r.skip_bytes().ok_or_else(|| bad("truncated xattr"))?;
        }
    }
    if r.at != bytes.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(())
}

/// A cursor over an encoding; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// Skips a length-prefixed byte string.
    fn skip_bytes(&mut self) -> Option<()> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.skip(n)
    }

    fn id(&mut self) -> Option<BlobId> {
        Some(BlobId(self.take(32)?.try_into().ok()?))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn node(name: &str, kind: NodeKind) -> Node {
        Node {
            name: Name(name.as_bytes().to_vec()),
            kind,
            mode: 0o644,
            uid: 1,
            gid: 2,
            user: "u".into(),
            group: "g".into(),
            mtime_ns: 10,
            ctime_ns: 11,
            size: 3,
            dev: 4,
            inode: 5,
            nlink: 1,
            xattrs: vec![],
        }
    }

    #[test]
    fn round_trip() {
        let t = Tree::new(vec![
            node(
                "a",
                NodeKind::File {
                    chunks: vec![BlobId([1; 32])],
                },
            ),
            node(
                "b",
                NodeKind::Dir {
                    subtree: BlobId([2; 32]),
                },
            ),
            node(
                "c",
                NodeKind::Symlink {
                    target: Name(b"/x".to_vec()),
                },
            ),
        ]);
        assert_eq!(Tree::decode(&t.encode(), "t").unwrap(), t);
        let mut refs = Vec::new();
        scan_refs(&t.encode(), "t", |r| refs.push(r)).unwrap();
        assert_eq!(
            refs,
            [Ref::Chunk(BlobId([1; 32])), Ref::Subtree(BlobId([2; 32]))]
        );
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"name\":\"a\""));
    }

    #[test]
    fn unsafe_names_and_order_are_rejected() {
        for bad in ["..", ".", "a/b", "", "x\0y"] {
            let t = Tree::new(vec![node(bad, NodeKind::Fifo)]);
            let err = Tree::decode(&t.encode(), "tree").unwrap_err().to_string();
            assert!(err.contains("tree is corrupt"), "{err}");
        }
        let t = Tree::new(vec![node("b", NodeKind::Fifo), node("a", NodeKind::Fifo)]);
        assert!(Tree::decode(&t.encode(), "t").is_err());
        let t = Tree::new(vec![node("a", NodeKind::Fifo), node("a", NodeKind::Fifo)]);
        assert!(Tree::decode(&t.encode(), "t").is_err());
    }
}
