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

/// Version of a tree blob that lists the parts of a directory stored in
/// parts (see [`Parts`]).
pub const PARTS_VERSION: u32 = 2;

/// A directory stored in parts: its entries are the nodes of these tree
/// blobs (each of [`VERSION`]) in order, names ascending across them. A
/// directory of many entries is written so (repository format 4), a part
/// at a time, so that neither a backup nor a reader holds all of its
/// tree at once, and a change to a few entries stores their parts again,
/// not the whole directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parts {
    /// [`PARTS_VERSION`].
    pub version: u32,
    /// The parts' tree blob ids, in order: at least two.
    pub parts: Vec<BlobId>,
}

impl Parts {
    /// The blob plaintext listing `parts`.
    pub fn encode(parts: &[BlobId]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 32 * parts.len());
        codec::encode_into(&PARTS_VERSION, &mut out);
        codec::encode_into(&parts, &mut out);
        out
    }
}

/// A tree blob as read: a directory's nodes, or the parts they are in.
#[derive(Debug)]
pub enum TreeBlob {
    /// A directory's nodes (a tree of [`VERSION`]).
    Nodes(EncodedTree),
    /// A directory stored in parts (see [`Parts`]).
    Parts(Vec<BlobId>),
}

impl TreeBlob {
    /// Checks a tree blob's plaintext of either kind: a tree of nodes as
    /// [`EncodedTree::decode`] does, a list of parts as [`check`] does.
    pub fn decode(bytes: Vec<u8>, what: &str) -> Result<TreeBlob> {
        if version_of(&bytes) == Some(PARTS_VERSION) {
            let mut parts = Vec::new();
            check(&bytes, what, |r| {
                if let Ref::Part(id) = r {
                    parts.push(id);
                }
            })?;
            return Ok(TreeBlob::Parts(parts));
        }
        EncodedTree::decode(bytes, what).map(TreeBlob::Nodes)
    }
}

/// The version a tree blob's plaintext starts with.
fn version_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

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

/// As messages name it: bytes that are no UTF-8 as `\xff` (see
/// [`crate::escape::Shown`]).
impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::escape::Show;
        self.0.shown().fmt(f)
    }
}

/// An extended attribute.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Xattr {
    /// Attribute name.
    pub name: Name,
    /// Attribute value (shown lossily as text in JSON, and in hex as
    /// `value_hex`).
    pub value: Name,
}

/// In a tree's encoding, as derived: the name, then the value. In JSON
/// (`ls --json`, `cat tree`), each also as its bytes in hex, `name_hex`
/// and `value_hex`: an ACL's or a capability's value is binary, and text
/// gave bytes that are no UTF-8 as U+FFFD (until December 2026 the only
/// form).
impl Serialize for Xattr {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let human = s.is_human_readable();
        let mut st = s.serialize_struct("Xattr", if human { 4 } else { 2 })?;
        st.serialize_field("name", &self.name)?;
        if human {
            st.serialize_field("name_hex", &hex::encode(&self.name.0))?;
        }
        st.serialize_field("value", &self.value)?;
        if human {
            st.serialize_field("value_hex", &hex::encode(&self.value.0))?;
        }
        st.end()
    }
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
    /// A file's content length; for a folder, the entries its backup
    /// left out of it, `u64::MAX` where it did not list it (FORMAT.md,
    /// "Tree"); 0 for every other kind.
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

/// A directory node's `size` when the backup did not list the directory:
/// it could not, or took the folder only as the way down to the paths it
/// was given beneath it (see [`Node::left_out`]).
pub const LEFT_OUT_UNKNOWN: u64 = u64::MAX;

/// A node's `ctime_ns` when its backup could not read all of the entry's
/// extended attributes (FORMAT.md, "Trees"): no later backup takes the
/// entry for unchanged by its change time, so the next one reads its
/// attributes, and a file's content, afresh. (Until December 2026 the
/// real change time was kept, and every later snapshot took over the
/// attributes that one lacked for as long as the entry's ctime held.)
pub const CTIME_UNREAD: i64 = i64::MAX;

impl Node {
    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }

    /// How many of a directory's entries its backup left out (it could
    /// not read them, or they are on another filesystem, or are the
    /// repository's own): its tree holds fewer entries than the folder
    /// did, so what a target holds there beyond them is not the
    /// snapshot's to remove. A directory node's `size` says it
    /// ([`LEFT_OUT_UNKNOWN`] for a folder that could not be listed at
    /// all, or was walked only as the way down to given paths beneath
    /// it); 0 for every other node, and for directories of snapshots
    /// written before December 2026, which did not record it.
    pub fn left_out(&self) -> u64 {
        match self.kind {
            NodeKind::Dir { .. } => self.size,
            _ => 0,
        }
    }

    /// Its kind, as a message names it: "a file", "a symlink", ...
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            NodeKind::File { .. } => "a file",
            NodeKind::Dir { .. } => "a folder",
            NodeKind::Symlink { .. } => "a symlink",
            NodeKind::Fifo => "a FIFO",
            NodeKind::CharDevice { .. } => "a character device",
            NodeKind::BlockDevice { .. } => "a block device",
            NodeKind::Socket => "a socket",
        }
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

/// A blob a tree refers to, as [`scan_refs`] reports it, and the size of
/// each file, after its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ref {
    /// A chunk of a file in the tree.
    Chunk(BlobId),
    /// The size a file in the tree says it has: its chunks are the
    /// [`Ref::Chunk`]s since the reference before them that is not one.
    FileSize(u64),
    /// The tree of a directory in the tree.
    Subtree(BlobId),
    /// A part of the directory a list of parts (see [`Parts`]) is: a tree
    /// of nodes, which holds the entries after those of the part before.
    Part(BlobId),
}

/// Calls `f` with every chunk and subtree (or part) a tree blob's
/// plaintext refers to, and each file's size after its chunks, in node
/// order, reading them straight from the encoding: no names,
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
    if version_of(bytes) == Some(PARTS_VERSION) {
        return check_parts(bytes, what, &mut f);
    }
    let mut r = Reader { bytes, at: 0 };
    let nodes = read_header(&mut r, what)?;
    for _ in 0..nodes {
        read_node(&mut r, false, &mut f).map_err(|why| bad_encoding(what, why))?;
    }
    if r.at != bytes.len() {
        return Err(bad_encoding(what, "trailing bytes"));
    }
    Ok(())
}

fn bad_encoding(what: &str, why: impl std::fmt::Display) -> Error {
    Error::corrupt(what, format!("tree encoding: {why}"))
}

/// Reads a tree's version (which must be [`VERSION`]) and node count.
fn read_header(r: &mut Reader<'_>, what: &str) -> Result<u64> {
    let version = r.u32().ok_or_else(|| bad_encoding(what, "truncated"))?;
    if version != VERSION {
        return Err(Error::corrupt(
            what,
            format!("tree version {version} not supported"),
        ));
    }
    r.u64().ok_or_else(|| bad_encoding(what, "truncated"))
}

/// Bytes of a tree's header: its version and node count.
const HEADER: usize = 12;

/// Where one node's fields lie in an encoding, as [`read_node`] found them.
struct Layout {
    name: std::ops::Range<usize>,
    kind: std::ops::Range<usize>,
    /// Where the 8 bytes of its size start.
    size: usize,
    /// Where its extended attributes start (their count), up to `end`.
    xattrs: usize,
    end: usize,
}

/// Reads the node at `r`'s position, checking its layout as decoding
/// does, and calls `f` with its references. With `strict`, also that the
/// owner and group names are UTF-8 (what else [`Tree::decode`] checks
/// of a node, its name's rules and order, is left to the caller).
fn read_node(
    r: &mut Reader<'_>,
    strict: bool,
    f: &mut impl FnMut(Ref),
) -> std::result::Result<Layout, String> {
    let truncated = || "truncated".to_string();
    let name = r.bytes_range().ok_or("truncated name")?;
    let kind_start = r.at;
    let variant = r.u32().ok_or_else(truncated)?;
    match variant {
        0 => {
            let n = r.u64().ok_or_else(truncated)?;
            for _ in 0..n {
                f(Ref::Chunk(r.id().ok_or("truncated chunk list")?));
            }
        }
        1 => f(Ref::Subtree(r.id().ok_or_else(truncated)?)),
        2 => r.skip_bytes().ok_or("truncated link target")?,
        3 | 6 => {}
        4 | 5 => r.skip(8).ok_or_else(truncated)?,
        v => return Err(format!("unknown node kind {v}")),
    }
    let kind = kind_start..r.at;
    // mode, uid, gid; user and group; mtime, ctime, size, dev, inode,
    // nlink; xattrs.
    r.skip(12).ok_or_else(truncated)?;
    for what in ["owner", "group"] {
        let at = r.bytes_range().ok_or_else(|| format!("truncated {what}"))?;
        if strict && std::str::from_utf8(&r.bytes[at]).is_err() {
            return Err(format!("{what} name is not UTF-8"));
        }
    }
    r.skip(16).ok_or_else(truncated)?;
    let size = r.at;
    if variant == 0 {
        f(Ref::FileSize(r.u64().ok_or_else(truncated)?));
        r.skip(24).ok_or_else(truncated)?;
    } else {
        r.skip(32).ok_or_else(truncated)?;
    }
    let xattrs_at = r.at;
    let xattrs = r.u64().ok_or_else(truncated)?;
    for _ in 0..xattrs {
        r.skip_bytes().ok_or("truncated xattr")?;
        r.skip_bytes().ok_or("truncated xattr")?;
    }
    Ok(Layout {
        name,
        kind,
        size,
        xattrs: xattrs_at,
        end: r.at,
    })
}

/// Checks a tree blob's plaintext as [`Tree::decode`] does (it accepts
/// exactly what decoding accepts) without decoding a node, and calls `f`
/// with every chunk and subtree it refers to, in node order; returns its
/// node count. On an error, `f` may already have seen some references.
pub fn check(bytes: &[u8], what: &str, mut f: impl FnMut(Ref)) -> Result<usize> {
    if version_of(bytes) == Some(PARTS_VERSION) {
        return check_parts(bytes, what, &mut f).map(|()| 0);
    }
    let mut r = Reader { bytes, at: 0 };
    let nodes = read_header(&mut r, what)?;
    let mut prev: Option<std::ops::Range<usize>> = None;
    let mut len = 0usize;
    for _ in 0..nodes {
        let at = read_node(&mut r, true, &mut f).map_err(|why| bad_encoding(what, why))?;
        let name = &bytes[at.name.clone()];
        check_name(name).map_err(|why| {
            Error::corrupt(
                what,
                format!("entry {:?}: {why}", String::from_utf8_lossy(name)),
            )
        })?;
        if prev.is_some_and(|p| &bytes[p] >= name) {
            return Err(Error::corrupt(what, "entries are not sorted or not unique"));
        }
        prev = Some(at.name);
        len += 1;
    }
    if r.at != bytes.len() {
        return Err(bad_encoding(what, "trailing bytes"));
    }
    Ok(len)
}

/// Checks a list of parts (see [`Parts`]): at least two ids, nothing
/// after them; calls `f` with each.
fn check_parts(bytes: &[u8], what: &str, f: &mut impl FnMut(Ref)) -> Result<()> {
    let mut r = Reader { bytes, at: 4 };
    let n = r.u64().ok_or_else(|| bad_encoding(what, "truncated"))?;
    if n < 2 {
        return Err(bad_encoding(what, format!("a directory in {n} parts")));
    }
    for _ in 0..n {
        f(Ref::Part(r.id().ok_or_else(|| {
            bad_encoding(what, "truncated part list")
        })?));
    }
    if r.at != bytes.len() {
        return Err(bad_encoding(what, "trailing bytes"));
    }
    Ok(())
}

/// A tree blob's plaintext, checked as [`Tree::decode`] checks it, whose
/// nodes are decoded only as they are read. A directory's entries then
/// cost their encoding (about 160 bytes for a small file) rather than
/// decoded nodes (several hundred bytes each, in four or five
/// allocations): what restore and a backup's parent tree hold of one
/// large directory.
#[derive(Clone, Debug)]
pub struct EncodedTree {
    bytes: Vec<u8>,
    len: usize,
    what: String,
}

impl EncodedTree {
    /// Checks a tree blob's plaintext: everything [`Tree::decode`] rejects
    /// is rejected here, so decoding its nodes cannot fail.
    pub fn decode(bytes: Vec<u8>, what: &str) -> Result<EncodedTree> {
        if version_of(&bytes) == Some(PARTS_VERSION) {
            return Err(Error::corrupt(
                what,
                "a directory's parts where one of its parts was expected",
            ));
        }
        let len = check(&bytes, what, |_| {})?;
        Ok(EncodedTree {
            bytes,
            len,
            what: what.to_string(),
        })
    }

    /// The encoding of `tree`.
    pub fn from_tree(tree: &Tree) -> EncodedTree {
        EncodedTree {
            bytes: tree.encode(),
            len: tree.nodes.len(),
            what: "tree".into(),
        }
    }

    /// How many nodes it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no node.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its nodes in order, each decoded as it is reached.
    pub fn nodes(&self) -> Nodes<'_> {
        Nodes {
            tree: self,
            at: HEADER,
            left: self.len,
        }
    }

    /// The node at `at`, if `left` are left, moving `at` past it (an
    /// error ends the nodes: `left` becomes 0).
    fn next_node(&self, at: &mut usize, left: &mut usize) -> Option<Result<Node>> {
        if *left == 0 {
            return None;
        }
        let mut rest = self.bytes.get(*at..).unwrap_or_default();
        let before = rest.len();
        let node = codec::decode_next(&mut rest, &self.what);
        *at += before - rest.len();
        *left = if node.is_ok() { *left - 1 } else { 0 };
        Some(node)
    }

    /// Its nodes' names in order, nothing decoded.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut r = Reader {
            bytes: &self.bytes,
            at: HEADER,
        };
        (0..self.len).map_while(move |_| {
            read_node(&mut r, false, &mut |_| {})
                .ok()
                .map(|at| &self.bytes[at.name])
        })
    }

    /// Its nodes in order, decoded as they are reached; the encoding is
    /// dropped with the iterator.
    pub fn into_nodes(self) -> IntoNodes {
        IntoNodes {
            at: HEADER,
            left: self.len,
            tree: self,
        }
    }
}

/// The nodes of an [`EncodedTree`] (see [`EncodedTree::nodes`]). An error
/// is possible only if decoding and [`EncodedTree::decode`]'s checks
/// disagreed; it ends the iteration.
pub struct Nodes<'a> {
    tree: &'a EncodedTree,
    at: usize,
    left: usize,
}

impl Iterator for Nodes<'_> {
    type Item = Result<Node>;

    fn next(&mut self) -> Option<Result<Node>> {
        self.tree.next_node(&mut self.at, &mut self.left)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// The owning form of [`Nodes`] (see [`EncodedTree::into_nodes`]).
pub struct IntoNodes {
    tree: EncodedTree,
    at: usize,
    left: usize,
}

impl Iterator for IntoNodes {
    type Item = Result<Node>;

    fn next(&mut self) -> Option<Result<Node>> {
        let bytes = &mut self.tree.bytes;
        if self.at >= FREE_AFTER && self.at > bytes.capacity() / 2 {
            // The nodes passed are dropped once they are most of the
            // buffer, so a large directory's tree shrinks as it is read
            // (halving: each byte is moved once more at most).
            bytes.drain(..self.at);
            bytes.shrink_to_fit();
            self.at = 0;
        }
        self.tree.next_node(&mut self.at, &mut self.left)
    }
}

impl IntoNodes {
    /// Whether no node is left.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }
}

/// [`IntoNodes`] frees what it has passed only past this many bytes.
const FREE_AFTER: usize = 1 << 20;

/// What a backup fills into a node it encoded before knowing it (see
/// [`TreeEncoder::finish`]).
#[derive(Debug)]
pub enum Fill {
    /// A file's chunks, the bytes read and its extended attributes (read
    /// through the open file): its kind, size and xattrs.
    File {
        /// The file's chunks.
        chunks: Vec<BlobId>,
        /// Its length as read.
        size: u64,
        /// Its extended attributes, sorted by name.
        xattrs: Vec<Xattr>,
        /// Whether some of its attributes could not be read: its
        /// `ctime_ns` becomes [`CTIME_UNREAD`].
        unread: bool,
    },
    /// A directory's tree, and how many of its entries the backup left
    /// out (see [`Node::left_out`]).
    Subtree {
        /// The directory's tree.
        subtree: BlobId,
        /// Entries left out; [`LEFT_OUT_UNKNOWN`] when it could not be
        /// listed.
        left_out: u64,
    },
    /// The node is left out.
    Remove,
}

/// A directory's tree encoded node by node as a backup walks it, so a
/// directory of many entries is held as its encoding, not as nodes. A
/// node whose content is not known yet (a file being read, a directory
/// being walked) is pushed with a placeholder and filled in by
/// [`TreeEncoder::finish`].
#[derive(Debug)]
pub struct TreeEncoder {
    bytes: Vec<u8>,
    len: u64,
    /// The name of the last node pushed.
    last: Vec<u8>,
}

impl Default for TreeEncoder {
    fn default() -> Self {
        let mut bytes = Vec::new();
        codec::encode_into(&VERSION, &mut bytes);
        codec::encode_into(&0u64, &mut bytes);
        TreeEncoder {
            bytes,
            len: 0,
            last: Vec::new(),
        }
    }
}

impl TreeEncoder {
    /// Appends `node`; returns where it starts, the handle
    /// [`TreeEncoder::finish`] takes. A node whose name does not sort
    /// strictly after the last one's is refused, and nothing appended:
    /// every reader refuses a tree whose names do not ascend, so such a
    /// tree would be stored and never read back.
    pub fn push(&mut self, node: &Node) -> Result<usize> {
        let name = node.name.0.as_slice();
        if self.len > 0 && name <= self.last.as_slice() {
            return Err(Error::Invalid(format!(
                "a directory's entry {:?} does not sort after {:?}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(&self.last)
            )));
        }
        self.last.clear();
        self.last.extend_from_slice(name);
        let at = self.bytes.len();
        codec::encode_into(node, &mut self.bytes);
        self.len += 1;
        Ok(at)
    }

    /// How many nodes it holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes encoded so far (files' chunk ids as yet unknown).
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it holds no node.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name of the node pushed at `at`.
    pub fn name_at(&self, at: usize) -> &[u8] {
        self.layout(at).map_or(&[][..], |l| &self.bytes[l.name])
    }

    fn layout(&self, at: usize) -> Option<Layout> {
        let mut r = Reader {
            bytes: &self.bytes,
            at,
        };
        read_node(&mut r, false, &mut |_| {}).ok()
    }

    /// The tree blob's plaintext, with `fills` (by the start [`push`]
    /// returned, ascending) put into their nodes: identical to
    /// [`Tree::encode`] of the nodes as filled in. The buffer is reused:
    /// left-out nodes are cut out front to back, then contents written
    /// back to front, each node moved once, so a large directory's tree
    /// is not held twice. That needs every placeholder to be no longer
    /// than its content (a file pushed with no chunks and no extended
    /// attributes, a directory with any id); a tree with a longer one (a
    /// file pushed with its parent node's attributes, which then had
    /// fewer when read) is encoded afresh into a second buffer instead.
    ///
    /// [`push`]: TreeEncoder::push
    pub fn finish(mut self, mut fills: Vec<(usize, Fill)>) -> Result<Vec<u8>> {
        let lost = || Error::Invalid("backup lost a directory entry's place".into());
        let mut after = HEADER;
        for (at, _) in &fills {
            if *at < after || self.layout(*at).is_none() {
                return Err(lost());
            }
            after = *at + 1;
        }
        let shorter = |(at, fill): &(usize, Fill)| {
            !matches!(fill, Fill::Remove) && self.deltas(*at, fill).is_none()
        };
        if fills.iter().any(shorter) {
            return self.finish_afresh(fills);
        }
        // Cut out the nodes left out, moving what lies between them down
        // and the places of the rest with it.
        if fills.iter().any(|(_, f)| matches!(f, Fill::Remove)) {
            let (mut read, mut write) = (HEADER, HEADER);
            for (at, fill) in &mut fills {
                self.bytes.copy_within(read..*at, write);
                write += *at - read;
                read = *at;
                if matches!(fill, Fill::Remove) {
                    read = self.layout(*at).ok_or_else(lost)?.end;
                    self.len -= 1;
                }
                *at = write;
            }
            let end = self.bytes.len();
            self.bytes.copy_within(read..end, write);
            self.bytes.truncate(write + end - read);
            fills.retain(|(_, f)| !matches!(f, Fill::Remove));
        }
        // Grow the buffer by what the contents add, and write back to
        // front: every byte past a node moves up by what the contents
        // before it add (`shift`), never over bytes not yet moved.
        let grow: usize = fills
            .iter()
            .filter_map(|(at, fill)| self.deltas(*at, fill))
            .map(|(kind, xattrs)| kind + xattrs)
            .sum();
        let old = self.bytes.len();
        self.bytes.resize(old + grow, 0);
        let (mut read, mut shift) = (old, grow);
        let (mut kind, mut xattrs) = (Vec::new(), Vec::new());
        for (at, fill) in fills.into_iter().rev() {
            let l = self.layout(at).ok_or_else(lost)?;
            // What lies past the node moves up by `shift`, all that the
            // contents up to and including this node add.
            self.bytes.copy_within(l.end..read, l.end + shift);
            let (size, unread) = match &fill {
                Fill::File {
                    chunks,
                    size,
                    xattrs: new,
                    unread,
                } => {
                    kind.clear();
                    codec::encode_into(&KindRef::File { chunks }, &mut kind);
                    xattrs.clear();
                    codec::encode_into(new, &mut xattrs);
                    (Some(*size), *unread)
                }
                Fill::Subtree { subtree, left_out } => {
                    kind.clear();
                    codec::encode_into(&KindRef::Dir { subtree }, &mut kind);
                    xattrs.clear();
                    xattrs.extend_from_slice(&self.bytes[l.xattrs..l.end]);
                    (Some(*left_out), false)
                }
                Fill::Remove => return Err(lost()),
            };
            // The extended attributes end where the node now ends.
            shift -= xattrs.len() - (l.end - l.xattrs);
            let to = l.xattrs + shift;
            self.bytes[to..to + xattrs.len()].copy_from_slice(&xattrs);
            // Between the kind and the attributes (the size among it).
            self.bytes
                .copy_within(l.kind.end..l.xattrs, l.kind.end + shift);
            if let Some(size) = size {
                let at = l.size + shift;
                self.bytes[at..at + 8].copy_from_slice(&size.to_le_bytes());
            }
            if unread {
                // The change time's 8 bytes lie right before the size's.
                let at = l.size + shift - 8;
                self.bytes[at..at + 8].copy_from_slice(&CTIME_UNREAD.to_le_bytes());
            }
            shift -= kind.len() - l.kind.len();
            let to = l.kind.start + shift;
            self.bytes[to..to + kind.len()].copy_from_slice(&kind);
            self.bytes.copy_within(at..l.kind.start, at + shift);
            read = at;
        }
        self.bytes[4..HEADER].copy_from_slice(&self.len.to_le_bytes());
        Ok(self.bytes)
    }

    /// [`TreeEncoder::finish`] into a new buffer: the nodes without a
    /// fill copied as they are, the others written with their content.
    fn finish_afresh(self, fills: Vec<(usize, Fill)>) -> Result<Vec<u8>> {
        let lost = || Error::Invalid("backup lost a directory entry's place".into());
        let bytes = &self.bytes;
        let mut out = Vec::with_capacity(bytes.len());
        out.extend_from_slice(&bytes[..HEADER]);
        let (mut read, mut len) = (HEADER, self.len);
        for (at, fill) in fills {
            let l = self.layout(at).ok_or_else(lost)?;
            out.extend_from_slice(&bytes[read..at]);
            read = l.end;
            let (kind, size, xattrs, unread) = match &fill {
                Fill::Remove => {
                    len -= 1;
                    continue;
                }
                Fill::File {
                    chunks,
                    size,
                    xattrs,
                    unread,
                } => (KindRef::File { chunks }, Some(*size), Some(xattrs), *unread),
                Fill::Subtree { subtree, left_out } => {
                    (KindRef::Dir { subtree }, Some(*left_out), None, false)
                }
            };
            out.extend_from_slice(&bytes[at..l.kind.start]);
            codec::encode_into(&kind, &mut out);
            let size_at = out.len() + (l.size - l.kind.end);
            out.extend_from_slice(&bytes[l.kind.end..l.xattrs]);
            if let Some(size) = size {
                out[size_at..size_at + 8].copy_from_slice(&size.to_le_bytes());
            }
            if unread {
                // The change time's 8 bytes lie right before the size's.
                out[size_at - 8..size_at].copy_from_slice(&CTIME_UNREAD.to_le_bytes());
            }
            match xattrs {
                Some(xattrs) => codec::encode_into(xattrs, &mut out),
                None => out.extend_from_slice(&bytes[l.xattrs..l.end]),
            }
        }
        out.extend_from_slice(&bytes[read..]);
        out[4..HEADER].copy_from_slice(&len.to_le_bytes());
        Ok(out)
    }

    /// How many bytes `fill` adds to the node at `at`'s kind and to its
    /// extended attributes; `None` if it would take some from either (a
    /// placeholder longer than its content) or removes the node.
    fn deltas(&self, at: usize, fill: &Fill) -> Option<(usize, usize)> {
        let l = self.layout(at)?;
        let (kind, xattrs) = match fill {
            Fill::File { chunks, xattrs, .. } => (
                codec::encoded_len(&KindRef::File { chunks }),
                codec::encoded_len(xattrs),
            ),
            Fill::Subtree { subtree, .. } => (
                codec::encoded_len(&KindRef::Dir { subtree }),
                l.end - l.xattrs,
            ),
            Fill::Remove => return None,
        };
        Some((
            kind.checked_sub(l.kind.len())?,
            xattrs.checked_sub(l.end - l.xattrs)?,
        ))
    }
}

/// The encoding of [`NodeKind`]'s first two variants, from borrowed
/// content (the variants in the same order, so the same bytes).
#[derive(Serialize)]
enum KindRef<'a> {
    File { chunks: &'a [BlobId] },
    Dir { subtree: &'a BlobId },
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
        self.bytes_range().map(|_| ())
    }

    /// Skips a length-prefixed byte string; returns where its bytes lie.
    fn bytes_range(&mut self) -> Option<std::ops::Range<usize>> {
        let n = usize::try_from(self.u64()?).ok()?;
        let at = self.at;
        self.skip(n)?;
        Some(at..self.at)
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

    /// Its JSON carries the value's bytes in hex; its encoding in a tree
    /// is the derived one's, name then value (what trees written before
    /// hold).
    #[test]
    fn xattr_json_gives_the_value_in_hex_and_the_encoding_is_unchanged() {
        let x = Xattr {
            name: Name(b"user.\xff".to_vec()),
            value: Name(vec![0xff, 0x00, 0xfe, b'A']),
        };
        let json = serde_json::to_value(&x).unwrap();
        assert_eq!(json["value_hex"], "ff00fe41");
        assert_eq!(json["name"], "user.\u{fffd}");
        assert_eq!(json["name_hex"], "757365722eff");
        assert_eq!(
            codec::encode(&x),
            codec::encode(&(x.name.clone(), x.value.clone()))
        );
        let mut n = node("a", NodeKind::File { chunks: vec![] });
        n.xattrs = vec![x];
        let t = Tree::new(vec![n]);
        assert_eq!(Tree::decode(&t.encode(), "t").unwrap(), t);
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
            [
                Ref::Chunk(BlobId([1; 32])),
                Ref::FileSize(t.nodes[0].size),
                Ref::Subtree(BlobId([2; 32]))
            ]
        );
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"name\":\"a\""));
    }

    /// Read by value, a tree larger than `FREE_AFTER` gives the same
    /// nodes as read in place, while its buffer shrinks as they are
    /// passed.
    #[test]
    fn a_large_tree_read_by_value_gives_every_node_and_shrinks() {
        let nodes: Vec<Node> = (0..40_000)
            .map(|i| file(&format!("f{i:06}"), i % 3))
            .collect();
        let tree = EncodedTree::from_tree(&Tree::new(nodes.clone()));
        assert!(tree.bytes.len() > 3 * FREE_AFTER, "{}", tree.bytes.len());
        let in_place: Vec<Node> = tree.nodes().map(Result::unwrap).collect();
        assert_eq!(in_place, nodes);
        let mut by_value = tree.into_nodes();
        let full = by_value.tree.bytes.capacity();
        let mut read = Vec::new();
        let mut least = full;
        while let Some(node) = by_value.next() {
            read.push(node.unwrap());
            least = least.min(by_value.tree.bytes.capacity());
        }
        assert_eq!(read, nodes);
        assert!(least < full / 4, "{least} of {full} bytes still held");
    }

    fn file(name: &str, chunks: usize) -> Node {
        let mut n = node(
            name,
            NodeKind::File {
                chunks: (0..chunks).map(|i| BlobId([i as u8; 32])).collect(),
            },
        );
        n.size = 100 * chunks as u64;
        n
    }

    #[test]
    fn a_tree_encoded_node_by_node_and_filled_in_equals_the_tree() {
        let mut long = file(&"x".repeat(300), 0);
        long.user = "someone".into();
        long.xattrs = vec![Xattr {
            name: Name(b"user.a".to_vec()),
            value: Name(vec![0, 1, 2]),
        }];
        let dir = |name: &str, id: u8| {
            node(
                name,
                NodeKind::Dir {
                    subtree: BlobId([id; 32]),
                },
            )
        };
        // What the backup knows when it walks: files unread, directories
        // unwalked.
        let walked = [
            file("a", 2),
            file("b", 0),
            dir("c", 0),
            long,
            file("y", 0),
            file("z", 0),
        ];
        let mut enc = TreeEncoder::default();
        let at: Vec<usize> = walked.iter().map(|n| enc.push(n).unwrap()).collect();
        assert_eq!(enc.len(), 6);
        assert_eq!(enc.name_at(at[3]), "x".repeat(300).as_bytes());
        let fills = vec![
            (
                at[1],
                Fill::File {
                    chunks: vec![BlobId([7; 32]); 3],
                    size: 12345,
                    xattrs: vec![],
                    unread: false,
                },
            ),
            (
                at[2],
                Fill::Subtree {
                    subtree: BlobId([9; 32]),
                    left_out: 4,
                },
            ),
            (
                at[3],
                Fill::File {
                    chunks: vec![],
                    size: 0,
                    xattrs: vec![xattr("user.a", b"\0\x01\x02"), xattr("user.b", b"v")],
                    unread: true,
                },
            ),
            (at[4], Fill::Remove),
            (
                at[5],
                Fill::File {
                    chunks: vec![BlobId([8; 32])],
                    size: 1,
                    xattrs: vec![xattr("user.z", &[7; 300])],
                    unread: false,
                },
            ),
        ];
        let mut want = walked.to_vec();
        if let NodeKind::File { chunks } = &mut want[1].kind {
            *chunks = vec![BlobId([7; 32]); 3];
        }
        want[1].size = 12345;
        want[2] = dir("c", 9);
        // A directory's size says how many entries were left out of it.
        want[2].size = 4;
        want[3].size = 0;
        want[3].xattrs = vec![xattr("user.a", b"\0\x01\x02"), xattr("user.b", b"v")];
        // Some of its attributes unread: no later backup trusts its ctime.
        want[3].ctime_ns = CTIME_UNREAD;
        want[5].kind = NodeKind::File {
            chunks: vec![BlobId([8; 32])],
        };
        want[5].size = 1;
        want[5].xattrs = vec![xattr("user.z", &[7; 300])];
        want.remove(4);
        let want = Tree::new(want);
        let bytes = enc.finish(fills).unwrap();
        assert_eq!(bytes, want.encode());
        let read = EncodedTree::decode(bytes, "t").unwrap();
        assert_eq!(
            read.nodes().map(Result::unwrap).collect::<Vec<_>>(),
            want.nodes
        );

        // Directories alone are filled in place; nothing at all, too.
        let mut enc = TreeEncoder::default();
        let a = enc.push(&dir("a", 0)).unwrap();
        enc.push(&file("b", 1)).unwrap();
        let bytes = enc
            .finish(vec![(
                a,
                Fill::Subtree {
                    subtree: BlobId([5; 32]),
                    left_out: 0,
                },
            )])
            .unwrap();
        let mut a = dir("a", 5);
        a.size = 0;
        let want = Tree::new(vec![a, file("b", 1)]);
        assert_eq!(bytes, want.encode());
        assert_eq!(
            TreeEncoder::default().finish(vec![]).unwrap(),
            Tree::new(vec![]).encode()
        );
        // A content shorter than its placeholder is put in all the same.
        let mut enc = TreeEncoder::default();
        let a = enc.push(&file("a", 2)).unwrap();
        enc.push(&file("b", 1)).unwrap();
        let fills = vec![(
            a,
            Fill::File {
                chunks: vec![BlobId([3; 32])],
                size: 9,
                xattrs: vec![],
                unread: false,
            },
        )];
        let mut want = file("a", 0);
        want.kind = NodeKind::File {
            chunks: vec![BlobId([3; 32])],
        };
        want.size = 9;
        let bytes = enc.finish(fills).unwrap();
        assert_eq!(bytes, Tree::new(vec![want, file("b", 1)]).encode());
        // As are attributes fewer than the placeholder's (a file pushed
        // with its parent node's, which had fewer when read), even with
        // more chunks making up for their bytes, beside other fills.
        let mut enc = TreeEncoder::default();
        let mut a = file("a", 0);
        a.xattrs = vec![xattr("user.a", b"x"), xattr("user.b", b"y")];
        let a = enc.push(&a).unwrap();
        let b = enc.push(&dir("b", 0)).unwrap();
        let c = enc.push(&file("c", 0)).unwrap();
        enc.push(&file("d", 1)).unwrap();
        let fills = vec![
            (
                a,
                Fill::File {
                    chunks: vec![BlobId([3; 32]); 4],
                    size: 9,
                    xattrs: vec![xattr("user.b", b"y")],
                    unread: true,
                },
            ),
            (
                b,
                Fill::Subtree {
                    subtree: BlobId([4; 32]),
                    left_out: 2,
                },
            ),
            (c, Fill::Remove),
        ];
        let mut want = file("a", 4);
        want.kind = NodeKind::File {
            chunks: vec![BlobId([3; 32]); 4],
        };
        want.size = 9;
        want.xattrs = vec![xattr("user.b", b"y")];
        want.ctime_ns = CTIME_UNREAD;
        let bytes = enc.finish(fills).unwrap();
        let mut b = dir("b", 4);
        b.size = 2;
        let want = Tree::new(vec![want, b, file("d", 1)]);
        assert_eq!(bytes, want.encode());
        // A place that is not a node's start is an error, not a panic.
        let mut enc = TreeEncoder::default();
        enc.push(&file("a", 1)).unwrap();
        assert!(enc.finish(vec![(3, Fill::Remove)]).is_err());
    }

    /// A name pushed twice, or out of order, is refused (no tree that
    /// every reader refuses is made), and what was pushed before stays
    /// a readable tree.
    #[test]
    fn a_tree_encoder_refuses_names_that_do_not_ascend() {
        let mut enc = TreeEncoder::default();
        enc.push(&file("a", 1)).unwrap();
        enc.push(&file("b", 1)).unwrap();
        let err = enc.push(&file("b", 2)).unwrap_err().to_string();
        assert!(err.contains("does not sort after"), "{err}");
        assert!(enc.push(&file("a", 1)).is_err());
        assert_eq!(enc.len(), 2);
        let bytes = enc.finish(vec![]).unwrap();
        assert_eq!(bytes, Tree::new(vec![file("a", 1), file("b", 1)]).encode());
        check(&bytes, "t", |_| {}).unwrap();
    }

    fn xattr(name: &str, value: &[u8]) -> Xattr {
        Xattr {
            name: Name(name.as_bytes().to_vec()),
            value: Name(value.to_vec()),
        }
    }

    /// `n` attributes with names in order and values of 0 to 99 bytes.
    fn random_xattrs(rng: &mut impl rand::Rng, n: usize) -> Vec<Xattr> {
        (0..n)
            .map(|i| {
                let len = rng.gen_range(0..100);
                xattr(&format!("user.{i}"), &vec![rng.gen(); len])
            })
            .collect()
    }

    #[test]
    fn any_mix_of_fills_gives_the_tree_of_the_filled_nodes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..300 {
            let mut enc = TreeEncoder::default();
            let (mut want, mut fills) = (Vec::new(), Vec::new());
            for i in 0..rng.gen_range(0..12) {
                let name = format!("{i:02}{}", "n".repeat(rng.gen_range(0..40)));
                let placeholder = rng.gen_range(0..3);
                let placeholder_xattrs = rng.gen_range(0..3);
                let mut n = if rng.gen_bool(0.3) {
                    node(
                        &name,
                        NodeKind::Dir {
                            subtree: BlobId([0; 32]),
                        },
                    )
                } else {
                    file(&name, placeholder)
                };
                n.xattrs = random_xattrs(&mut rng, placeholder_xattrs);
                let at = enc.push(&n).unwrap();
                match (rng.gen_range(0..4), n.is_dir()) {
                    (0, _) => want.push(n),
                    (1, _) => fills.push((at, Fill::Remove)),
                    (_, true) => {
                        let id = BlobId([rng.gen(); 32]);
                        let left_out = rng.gen_range(0..3);
                        fills.push((
                            at,
                            Fill::Subtree {
                                subtree: id,
                                left_out,
                            },
                        ));
                        n.kind = NodeKind::Dir { subtree: id };
                        n.size = left_out;
                        want.push(n);
                    }
                    (_, false) => {
                        // Mostly no fewer chunks than the placeholder
                        // holds, at times fewer (the tree then encoded
                        // afresh).
                        let least = if rng.gen_bool(0.9) { placeholder } else { 0 };
                        let chunks: Vec<BlobId> = (0..rng.gen_range(least..4))
                            .map(|_| BlobId([rng.gen(); 32]))
                            .collect();
                        let size = rng.gen();
                        // Mostly the placeholder's attributes and more,
                        // at times fewer.
                        let count = rng.gen_range(0..3);
                        let mut xattrs = n.xattrs.clone();
                        if rng.gen_bool(0.1) {
                            xattrs.truncate(rng.gen_range(0..=xattrs.len()));
                        }
                        xattrs.extend(random_xattrs(&mut rng, count).into_iter().map(|mut x| {
                            x.name.0.insert(5, b'x');
                            x
                        }));
                        let unread = rng.gen_bool(0.2);
                        fills.push((
                            at,
                            Fill::File {
                                chunks: chunks.clone(),
                                size,
                                xattrs: xattrs.clone(),
                                unread,
                            },
                        ));
                        n.kind = NodeKind::File { chunks };
                        n.size = size;
                        n.xattrs = xattrs;
                        if unread {
                            n.ctime_ns = CTIME_UNREAD;
                        }
                        want.push(n);
                    }
                }
            }
            assert_eq!(enc.finish(fills).unwrap(), Tree::new(want).encode());
        }
    }

    /// A directory's list of parts is a tree blob of its own version:
    /// read as such, walked as subtrees, canonical, and never taken for
    /// a tree of nodes; one part, trailing bytes or a short list are
    /// damage.
    #[test]
    fn a_list_of_parts_reads_back_and_is_walked_as_subtrees() {
        let ids = [BlobId([7; 32]), BlobId([8; 32]), BlobId([9; 32])];
        let bytes = Parts::encode(&ids);
        assert_eq!(bytes.len(), 4 + 8 + 3 * 32);
        let decoded: Parts = codec::decode(&bytes, "t").unwrap();
        assert_eq!(
            decoded,
            Parts {
                version: PARTS_VERSION,
                parts: ids.to_vec()
            }
        );
        match TreeBlob::decode(bytes.clone(), "t").unwrap() {
            TreeBlob::Parts(parts) => assert_eq!(parts, ids),
            TreeBlob::Nodes(_) => panic!("a list of parts read as nodes"),
        }
        let subtrees: Vec<Ref> = ids.iter().map(|id| Ref::Part(*id)).collect();
        let mut refs = Vec::new();
        assert_eq!(check(&bytes, "t", |r| refs.push(r)).unwrap(), 0);
        assert_eq!(refs, subtrees);
        refs.clear();
        scan_refs(&bytes, "t", |r| refs.push(r)).unwrap();
        assert_eq!(refs, subtrees);

        let err = EncodedTree::decode(bytes.clone(), "t").unwrap_err();
        assert!(
            err.to_string().contains("parts where one of its parts"),
            "{err}"
        );
        assert!(Tree::decode(&bytes, "t").is_err());

        let mut long = bytes.clone();
        long.push(0);
        let short = &bytes[..bytes.len() - 1];
        let one = Parts::encode(&ids[..1]);
        for (bad, why) in [
            (&long[..], "trailing bytes"),
            (short, "truncated"),
            (&one[..], "in 1 parts"),
        ] {
            let err = TreeBlob::decode(bad.to_vec(), "t").unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
            assert!(scan_refs(bad, "t", |_| {}).is_err(), "{why}");
        }
        // A tree of nodes still reads as one.
        let tree = Tree::new(vec![file("a", 1)]);
        match TreeBlob::decode(tree.encode(), "t").unwrap() {
            TreeBlob::Nodes(t) => assert_eq!(t.len(), 1),
            TreeBlob::Parts(_) => panic!("nodes read as parts"),
        }
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
        assert!(EncodedTree::decode(t.encode(), "t").is_err());
        let t = Tree::new(vec![node("b", NodeKind::Fifo), node("a", NodeKind::Fifo)]);
        let err = EncodedTree::decode(t.encode(), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not sorted"), "{err}");
        for bad in ["..", ".", "a/b", "", "x\0y"] {
            let t = Tree::new(vec![node(bad, NodeKind::Fifo)]);
            let err = EncodedTree::decode(t.encode(), "tree")
                .unwrap_err()
                .to_string();
            assert!(err.contains("tree is corrupt"), "{err}");
        }
        // An owner name that is not UTF-8.
        let mut bytes = Tree::new(vec![node("a", NodeKind::Fifo)]).encode();
        let u = bytes.iter().position(|&b| b == b'u').unwrap();
        bytes[u] = 0xff;
        assert!(Tree::decode(&bytes, "t").is_err());
        let err = EncodedTree::decode(bytes, "t").unwrap_err().to_string();
        assert!(err.contains("owner name is not UTF-8"), "{err}");
    }
}
