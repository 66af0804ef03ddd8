//! `cairn::repo::DirNodes` on a directory stored in parts (repository
//! format 4): its checks across parts (names ascending and unique from one
//! part to the next, no empty part, no list of parts where a part should
//! be, parts that are missing) on hostile part sequences. The input builds
//! parts — trees of made-up names (sorted or not), raw bytes as a tree
//! blob, nested lists of parts, repeats, ids never stored — into a fresh
//! in-memory repository, lists them, and reads the list with
//! `Repository::dir_nodes` and `tree_at`. What they give is checked
//! against a model: every node of the parts in order up to the first
//! problem, then one error, then nothing.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cairn::backend::mem::MemBackend;
use cairn::backend::{Backend, FileKind};
use cairn::crypto::MasterKey;
use cairn::id::BlobId;
use cairn::pack::BlobKind;
use cairn::repo::export::ExportedKey;
use cairn::repo::{InitOptions, KdfParams, Repository};
use cairn::tree::{EncodedTree, Name, Node, NodeKind, Parts, Tree};
use cairn::writer::BlobWriter;
use libfuzzer_sys::fuzz_target;

/// A repository made once (its key derivation is the slow part): its
/// config file, id and master key, from which each input opens a fresh,
/// empty copy.
fn template() -> &'static (Vec<u8>, [u8; 32], MasterKey) {
    static T: OnceLock<(Vec<u8>, [u8; 32], MasterKey)> = OnceLock::new();
    T.get_or_init(|| {
        let backend = Arc::new(MemBackend::default());
        let opts = InitOptions {
            kdf: KdfParams {
                memory_kib: 8,
                iterations: 1,
                lanes: 1,
            },
            ..InitOptions::default()
        };
        let repo = Repository::init(backend.clone(), b"fuzz", &opts).expect("init");
        let config = backend.read(FileKind::Config, "").expect("config").to_vec();
        (config, repo.config().repo_id, repo.key().clone())
    })
}

/// A fresh repository holding nothing but its config.
fn fresh() -> Repository {
    let (config, repo_id, key) = template();
    let backend = Arc::new(MemBackend::default());
    backend.write(FileKind::Config, "", config).expect("write");
    let exported = ExportedKey {
        repo_id: *repo_id,
        key: key.clone(),
    };
    Repository::open_exported(backend, exported, "fuzz key").expect("open")
}

/// The input, read a byte at a time (zeros past its end).
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A name: mostly of a few letters, so parts collide and interleave;
    /// a byte from 0xf0 up is taken as it is (`/`, NUL, `.` may follow).
    fn name(&mut self) -> Vec<u8> {
        let len = 1 + usize::from(self.byte() % 3);
        (0..len)
            .map(|_| match self.byte() {
                b @ 0xf0.. => b"/\0.-zZ\xff\x80 ~_=abcd"[usize::from(b - 0xf0)],
                b => b"abc."[usize::from(b % 4)],
            })
            .collect()
    }
}

fn node(name: Vec<u8>, n: u64) -> Node {
    Node {
        name: Name(name),
        kind: NodeKind::Fifo,
        mode: 0o644,
        uid: 1,
        gid: 2,
        user: String::new(),
        group: String::new(),
        mtime_ns: 0,
        ctime_ns: 0,
        size: 0,
        dev: 0,
        inode: n,
        nlink: 1,
        xattrs: Vec::new(),
    }
}

/// What reading a part gives, as the model has it: its nodes, or an
/// error (`true` when it is because the part is not stored).
fn part_model(stored: &HashMap<BlobId, Vec<u8>>, id: &BlobId) -> Result<Vec<Node>, bool> {
    let bytes = stored.get(id).ok_or(true)?;
    let tree = EncodedTree::decode(bytes.clone(), "part").map_err(|_| false)?;
    if tree.is_empty() {
        return Err(false);
    }
    let nodes: Vec<Node> = tree.nodes().map(|n| n.expect("checked")).collect();
    assert!(tree.names().eq(nodes.iter().map(|n| &n.name.0[..])));
    Ok(nodes)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let repo = fresh();
    let writer = BlobWriter::new(&repo);
    let mut stored: HashMap<BlobId, Vec<u8>> = HashMap::new();
    let mut ids: Vec<BlobId> = Vec::new();
    let count = usize::from(input.byte() % 9);
    for n in 0..count {
        let op = input.byte();
        let plain = match op % 6 {
            // A tree of names, sorted and unique unless bit 3 says not.
            0 | 1 => {
                let mut nodes: Vec<Node> = (0..input.byte() % 5)
                    .map(|i| node(input.name(), u64::from(i)))
                    .collect();
                if op & 8 == 0 {
                    nodes.sort_by(|a, b| a.name.0.cmp(&b.name.0));
                    nodes.dedup_by(|a, b| a.name.0 == b.name.0);
                }
                Tree::new(nodes).encode()
            }
            // Raw bytes as a tree blob's plaintext.
            2 => {
                let len = usize::from(input.byte());
                input.bytes(len).to_vec()
            }
            // A list of parts where a part should be.
            3 => {
                let list =
                    [ids.last(), ids.first()].map(|id| id.copied().unwrap_or(BlobId([1; 32])));
                Parts::encode(&list)
            }
            // A part given again.
            4 if !ids.is_empty() => {
                let again = ids[usize::from(input.byte()) % ids.len()];
                ids.push(again);
                continue;
            }
            // A part never stored.
            _ => {
                let mut missing = BlobId([input.byte(); 32]);
                missing.0[0] = n as u8;
                ids.push(missing);
                continue;
            }
        };
        // Mostly as a tree blob; bit 4 stores it as data, which a reader
        // of trees also finds (a repository of index version 1 may have).
        let kind = if op & 16 == 0 {
            BlobKind::Tree
        } else {
            BlobKind::Data
        };
        let (id, _) = writer.add(kind, &plain).expect("memory write");
        stored.insert(id, plain);
        ids.push(id);
    }
    let list = Parts::encode(&ids);
    let (top, _) = writer.add(BlobKind::Tree, &list).expect("memory write");
    writer.finish().expect("memory write");

    let Ok(nodes) = repo.dir_nodes(&top) else {
        assert!(ids.len() < 2, "a list of {} parts refused", ids.len());
        return;
    };
    assert!(ids.len() >= 2, "a list of {} parts read", ids.len());
    assert!(!nodes.is_empty(), "a directory in parts is never empty");

    // The model: the parts' nodes in order, until a part cannot be read
    // or a name does not ascend past the one before.
    let mut want: Vec<Node> = Vec::new();
    let mut fails = None;
    'parts: for id in &ids {
        match part_model(&stored, id) {
            Ok(part) => {
                for n in part {
                    if want.last().is_some_and(|l| l.name.0 >= n.name.0) {
                        fails = Some(false);
                        break 'parts;
                    }
                    want.push(n);
                }
            }
            Err(missing) => {
                fails = Some(missing);
                break;
            }
        }
    }

    let mut nodes = nodes;
    let mut got = Vec::new();
    let mut error = None;
    for n in nodes.by_ref() {
        match n {
            Ok(n) => got.push(n),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert_eq!(got, want);
    match (fails, &error) {
        (None, None) => {}
        (Some(missing), Some(e)) => assert_eq!(e.is_not_found(), missing, "{e}"),
        _ => panic!("model says {fails:?}, read ended with {error:?}"),
    }
    // An error ends the nodes for good.
    for _ in 0..3 {
        assert!(nodes.next().is_none());
    }

    // A path into it: found where the model has it, before any problem.
    let target = match input.byte() {
        b if (b as usize) < want.len() => want[b as usize].name.0.clone(),
        _ => input.name(),
    };
    let Ok(path) = String::from_utf8(target.clone()) else {
        return;
    };
    if path.contains('/') || path.split('/').all(|c| c.is_empty() || c == ".") {
        return;
    }
    let found = want.iter().find(|n| n.name.0 == target);
    match repo.tree_at(&top, &path) {
        Ok((mut one, at)) => {
            let node = found.expect("tree_at found a name the model has not");
            if !node.is_dir() {
                assert_eq!(at, "");
                assert_eq!(
                    one.next().map(|n| n.expect("one node")).as_ref(),
                    Some(node)
                );
                assert!(one.next().is_none());
            }
        }
        Err(e) => {
            // Not there (or past a problem), or a directory whose tree
            // is not.
            assert!(found.is_none_or(Node::is_dir), "{e}");
            if found.is_none() && fails.is_none() {
                assert!(e.is_not_found(), "{e}");
            }
        }
    }
});
