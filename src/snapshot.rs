//! Snapshot manifests.
//!
//! `snapshots/<id>` is `"CAIRNSNP" | u32 version | sealed(Snapshot)` with
//! the 12-byte header as associated data; its name is the BLAKE3 hash of
//! the file. A snapshot is complete on its own: its root tree reaches every
//! blob it needs, whatever its kind.

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileKind};
use crate::codec;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name, BlobId, SnapshotId};

const MAGIC: &[u8; 8] = b"CAIRNSNP";
/// Format version of snapshot files.
pub const VERSION: u32 = 1;

/// How a snapshot chose its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// No parent: every file was read.
    Full,
    /// Parent: the newest snapshot of the set.
    Incremental,
    /// Parent: the newest full snapshot of the set.
    Differential,
}

impl SnapshotKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Full => "full",
            SnapshotKind::Incremental => "incremental",
            SnapshotKind::Differential => "differential",
        }
    }
}

/// What a backup did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Files not in the parent.
    pub files_new: u64,
    /// Files in the parent whose metadata changed (re-read).
    pub files_changed: u64,
    /// Files reused from the parent without reading.
    pub files_unmodified: u64,
    /// Directories.
    pub dirs: u64,
    /// Entries that could not be read and were left out.
    pub errors: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Total size of all files in the snapshot.
    pub total_bytes: u64,
    /// New blobs stored.
    pub blobs_added: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added: u64,
    /// Bytes of new blobs as stored (compressed and encrypted).
    pub bytes_stored: u64,
    /// Wall time in ns.
    pub duration_ns: u64,
}

/// A snapshot manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Version of this structure.
    pub version: u32,
    /// Start time, ns since the epoch.
    pub time_ns: i64,
    /// Host name.
    pub host: String,
    /// User name.
    pub user: String,
    /// Backup set this snapshot belongs to.
    pub set: String,
    /// How the parent was chosen.
    pub kind: SnapshotKind,
    /// Absolute paths backed up (or the stdin file name).
    pub paths: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Parent used for change detection.
    pub parent: Option<SnapshotId>,
    /// Root tree.
    pub tree: BlobId,
    /// Statistics.
    pub summary: Summary,
}

impl Snapshot {
    /// The file bytes and the id they give.
    pub fn encode(&self, key: &MasterKey) -> (SnapshotId, Vec<u8>) {
        let mut out = codec::header(MAGIC, VERSION);
        let aad = out.clone();
        key.seal_into(&codec::encode(self), &aad, &mut out);
        (SnapshotId(file_hash(&out)), out)
    }

    /// Decodes a snapshot file.
    pub fn decode(bytes: &[u8], key: &MasterKey, what: &str) -> Result<Snapshot> {
        codec::check_header(bytes, MAGIC, VERSION, what)?;
        let plain = key.open(&bytes[12..], &bytes[..12], what)?;
        let snap: Snapshot = codec::decode(&plain, what)?;
        if snap.version != VERSION {
            return Err(Error::corrupt(
                what,
                format!("snapshot version {}", snap.version),
            ));
        }
        Ok(snap)
    }

    /// Reads one snapshot and checks its name.
    pub fn load(backend: &dyn Backend, key: &MasterKey, id: &SnapshotId) -> Result<Snapshot> {
        let what = format!("snapshot {}", id.short());
        let bytes = backend.read(FileKind::Snapshot, &id.to_hex())?;
        if file_hash(&bytes) != id.0 {
            return Err(Error::corrupt(&what, "content does not match its name"));
        }
        Snapshot::decode(&bytes, key, &what)
    }
}

/// A snapshot with its id.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotEntry {
    /// The id.
    pub id: SnapshotId,
    /// The manifest.
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

/// Every snapshot, oldest first.
pub fn load_all(backend: &dyn Backend, key: &MasterKey) -> Result<Vec<SnapshotEntry>> {
    let mut out = Vec::new();
    for name in backend.list(FileKind::Snapshot)? {
        if !is_hex_name(&name) {
            continue;
        }
        let id = SnapshotId::from_hex(&name)?;
        out.push(SnapshotEntry {
            id,
            snapshot: Snapshot::load(backend, key, &id)?,
        });
    }
    out.sort_by_key(|e| (e.snapshot.time_ns, e.id));
    Ok(out)
}

/// Filters used to pick snapshots.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// Only this set.
    pub set: Option<String>,
    /// Only this host.
    pub host: Option<String>,
    /// Only snapshots carrying every one of these tags.
    pub tags: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.set.as_ref().is_none_or(|x| *x == s.set)
            && self.host.as_ref().is_none_or(|x| *x == s.host)
            && self.tags.iter().all(|t| s.tags.contains(t))
    }
}

/// Resolves `latest`, a full id, or a unique prefix of at least 4 hex
/// digits, among the snapshots `filter` passes: an id naming a snapshot
/// the filter leaves out is refused, so that `forget ID --host A` can
/// never remove another host's snapshot.
pub fn resolve<'a>(
    all: &'a [SnapshotEntry],
    spec: &str,
    filter: &SnapshotFilter,
) -> Result<&'a SnapshotEntry> {
    if spec == "latest" {
        return all
            .iter()
            .rev()
            .find(|e| filter.matches(&e.snapshot))
            .ok_or_else(|| Error::NotFound("snapshot matching `latest` and the filters".into()));
    }
    let lower = spec.to_ascii_lowercase();
    if lower.len() < 4 || lower.len() > 64 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!(
            "{spec:?} is not a snapshot id: give `latest`, or at least 4 hex digits of an id"
        )));
    }
    let hits: Vec<&SnapshotEntry> = all
        .iter()
        .filter(|e| e.id.to_hex().starts_with(&lower))
        .collect();
    let passed: Vec<&SnapshotEntry> = hits
        .iter()
        .copied()
        .filter(|e| filter.matches(&e.snapshot))
        .collect();
    match (passed.as_slice(), hits.as_slice()) {
        ([e], _) => Ok(e),
        ([], []) => Err(Error::NotFound(format!("snapshot {spec}"))),
        ([], [e]) => Err(Error::Invalid(format!(
            "snapshot {} (set {:?}, host {:?}) does not match the filters given \
             (--set, --host, --tag)",
            e.id.short(),
            e.snapshot.set,
            e.snapshot.host
        ))),
        ([], _) => Err(Error::Invalid(format!(
            "snapshot prefix {spec} names no snapshot matching the filters given \
             (--set, --host, --tag)"
        ))),
        _ => Err(Error::Invalid(format!(
            "snapshot prefix {spec} is ambiguous: give more digits"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(time: i64) -> Snapshot {
        Snapshot {
            version: VERSION,
            time_ns: time,
            host: "h".into(),
            user: "u".into(),
            set: "s".into(),
            kind: SnapshotKind::Full,
            paths: vec!["/a".into()],
            tags: vec!["t".into()],
            parent: None,
            tree: BlobId([1; 32]),
            summary: Summary::default(),
        }
    }

    #[test]
    fn round_trip_and_resolve() {
        let key = MasterKey::generate();
        let (id, bytes) = sample(5).encode(&key);
        assert_eq!(Snapshot::decode(&bytes, &key, "s").unwrap(), sample(5));
        let all = vec![
            SnapshotEntry {
                id,
                snapshot: sample(5),
            },
            SnapshotEntry {
                id: SnapshotId([0xab; 32]),
                snapshot: sample(9),
            },
        ];
        let f = SnapshotFilter::default();
        assert_eq!(resolve(&all, "latest", &f).unwrap().snapshot.time_ns, 9);
        assert_eq!(resolve(&all, "abab", &f).unwrap().snapshot.time_ns, 9);
        assert!(resolve(&all, "ab", &f).is_err());
        assert!(resolve(&all, "zzzz", &f).is_err());
        let none = SnapshotFilter {
            host: Some("x".into()),
            ..Default::default()
        };
        assert!(resolve(&all, "latest", &none).is_err());
        // An id the filters leave out is refused, not taken.
        let e = resolve(&all, "abab", &none).unwrap_err().to_string();
        assert!(e.contains("does not match the filters"), "{e}");
        let h = SnapshotFilter {
            host: Some("h".into()),
            ..Default::default()
        };
        assert_eq!(resolve(&all, "abab", &h).unwrap().snapshot.time_ns, 9);
    }
}
