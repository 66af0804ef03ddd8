//! Snapshot manifests.
//!
//! `snapshots/<id>` is `"CAIRNSNP" | u32 version | sealed(Snapshot)` with
//! the 12-byte header as associated data; its name is the BLAKE3 hash of
//! the file. A snapshot is complete on its own: its root tree reaches every
//! blob it needs, whatever its kind.
//!
//! A file whose bytes do not decode is *damaged*: [`load_all`] sets it
//! apart by name ([`Snapshots::damaged`]) so that commands choosing among
//! snapshots go on with the others, while those that must see every
//! snapshot (gc) refuse with [`Snapshots::require_all`].

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileKind};
use crate::codec;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name, BlobId, SnapshotId};
use crate::tree::Name;

const MAGIC: &[u8; 8] = b"CAIRNSNP";
/// Format version of the snapshot files this cairn writes into a
/// repository of format 5 or later (see [`Snapshot::excludes`]); into an
/// older one it writes version 1, which the cairn that made it reads.
/// Both are read.
pub const VERSION: u32 = 2;

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
    /// The exclude patterns the backup was given (`--exclude`, and the
    /// lines of its exclude files), in order, as bytes: a mirror restore
    /// leaves what the target holds that they match, as it was not backed
    /// up. Version 2 on; empty in a snapshot of version 1, which does not
    /// record them.
    pub excludes: Vec<Name>,
    /// When the backup began by the clock, ns since the epoch: `time_ns`,
    /// unless `backup --time` recorded another. The next backup trusts a
    /// file unchanged only if it changed before this (see
    /// `BackupOptions::racy_window_ns`). Version 2 on; `time_ns` in a
    /// snapshot of version 1.
    pub started_ns: i64,
}

/// A snapshot of version 1: a [`Snapshot`] without its last two fields.
#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    version: u32,
    time_ns: i64,
    host: String,
    user: String,
    set: String,
    kind: SnapshotKind,
    paths: Vec<String>,
    tags: Vec<String>,
    parent: Option<SnapshotId>,
    tree: BlobId,
    summary: Summary,
}

impl Snapshot {
    /// The version of the snapshots a backup writes into a repository of
    /// format `repo_version`: 2 from format 5 on.
    pub fn version_for(repo_version: u32) -> u32 {
        if repo_version >= 5 {
            2
        } else {
            1
        }
    }

    /// The file bytes and the id they give, in the layout of
    /// `self.version` (version 1 leaves out what it cannot record).
    pub fn encode(&self, key: &MasterKey) -> (SnapshotId, Vec<u8>) {
        let version = self.version.clamp(1, VERSION);
        let mut out = codec::header(MAGIC, version);
        let aad = out.clone();
        let plain = if version == 1 {
            codec::encode(&SnapshotV1 {
                version: 1,
                time_ns: self.time_ns,
                host: self.host.clone(),
                user: self.user.clone(),
                set: self.set.clone(),
                kind: self.kind,
                paths: self.paths.clone(),
                tags: self.tags.clone(),
                parent: self.parent,
                tree: self.tree,
                summary: self.summary.clone(),
            })
        } else {
            codec::encode(self)
        };
        key.seal_into(&plain, &aad, &mut out);
        (SnapshotId(file_hash(&out)), out)
    }

    /// Decodes a snapshot file of any version this cairn reads.
    pub fn decode(bytes: &[u8], key: &MasterKey, what: &str) -> Result<Snapshot> {
        let version = codec::check_header(bytes, MAGIC, VERSION, what)?;
        let plain = key.open(&bytes[12..], &bytes[..12], what)?;
        let snap = if version == 1 {
            let v1: SnapshotV1 = codec::decode(&plain, what)?;
            Snapshot {
                version: v1.version,
                time_ns: v1.time_ns,
                host: v1.host,
                user: v1.user,
                set: v1.set,
                kind: v1.kind,
                paths: v1.paths,
                tags: v1.tags,
                parent: v1.parent,
                tree: v1.tree,
                summary: v1.summary,
                excludes: Vec::new(),
                started_ns: v1.time_ns,
            }
        } else {
            codec::decode(&plain, what)?
        };
        if snap.version != version {
            return Err(Error::corrupt(
                what,
                format!(
                    "snapshot version {} in a file of version {version}",
                    snap.version
                ),
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

impl SnapshotEntry {
    /// Where the snapshot stands among others, oldest first: by its time,
    /// then, between equal times (imports with the same `--time`), by
    /// when its backup began, so the one made last is the newest (it
    /// went by id until December 2026), then by id.
    pub fn order(&self) -> (i64, i64, SnapshotId) {
        (self.snapshot.time_ns, self.snapshot.started_ns, self.id)
    }
}

/// A file in `snapshots/` that does not decode as the snapshot its name
/// promises: a flipped bit, a truncated write, a file of a later format.
/// Nothing in it can be trusted, not even its time or set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedSnapshot {
    /// Its id (the file's name).
    pub id: SnapshotId,
    /// Why it does not decode.
    pub reason: String,
    /// Whether its read was refused for want of permission: not damage,
    /// but as unusable to this user (see [`Error::is_read_refused`]).
    pub refused: bool,
}

/// What to do about a snapshot file this user may not read.
const REFUSED_ADVICE: &str =
    "that is no damage: run cairn as a user who may read the whole repository";

impl DamagedSnapshot {
    /// A warning naming the file, what a command did about it
    /// (`consequence`), and what the operator can do.
    pub fn warning(&self, consequence: &str) -> String {
        if self.refused {
            return format!(
                "snapshot file snapshots/{} cannot be read by this user ({}): {consequence}; \
                 {REFUSED_ADVICE}",
                self.id, self.reason
            );
        }
        format!(
            "snapshot file snapshots/{} is damaged ({}): {consequence}; `cairn verify` checks \
             the repository, and `cairn forget {}` removes the file if no intact copy of it \
             can be put back",
            self.id,
            self.reason,
            self.id.short()
        )
    }
}

/// Every snapshot file, read leniently: those that decode, and apart the
/// names of those that do not.
#[derive(Clone, Debug, Default)]
pub struct Snapshots {
    /// The snapshots that decode, oldest first.
    pub good: Vec<SnapshotEntry>,
    /// The files that do not, by name.
    pub damaged: Vec<DamagedSnapshot>,
}

impl Snapshots {
    /// Every snapshot, or an error naming the first damaged file, for a
    /// command (`doing`, e.g. "collect garbage") that must see every
    /// snapshot: a snapshot it cannot read may hold the only references
    /// to data.
    pub fn require_all(self, doing: &str) -> Result<Vec<SnapshotEntry>> {
        self.check_complete(doing)?;
        Ok(self.good)
    }

    /// The error of [`Snapshots::require_all`], if any file is damaged.
    pub fn check_complete(&self, doing: &str) -> Result<()> {
        match self.damaged.first() {
            None => Ok(()),
            Some(d) if d.refused => Err(Error::Invalid(format!(
                "refusing to {doing}: snapshot file snapshots/{} cannot be read by this user \
                 ({}), and the data only it uses cannot be told; {REFUSED_ADVICE}",
                d.id, d.reason
            ))),
            Some(d) => Err(Error::Invalid(format!(
                "refusing to {doing}: snapshot file snapshots/{} is damaged ({}), and the data \
                 only it uses cannot be told; put back an intact copy of the file, or, if it \
                 is truly lost, remove it with `cairn forget {}` first{}",
                d.id,
                d.reason,
                d.id.short(),
                match self.damaged.len() {
                    1 => String::new(),
                    n => format!(" ({} more damaged: `cairn verify` names them)", n - 1),
                }
            ))),
        }
    }
}

/// What an id given to `forget` names: a snapshot, or a damaged file.
#[derive(Clone, Copy, Debug)]
pub enum Named<'a> {
    /// A snapshot that decodes.
    Good(&'a SnapshotEntry),
    /// A file that does not.
    Damaged(&'a DamagedSnapshot),
}

impl Snapshots {
    /// Resolves `spec` as [`resolve`] does among the good snapshots, and
    /// also as a full id or unique prefix of a damaged file's name: such a
    /// file cannot be resolved by what it holds, yet must be removable.
    /// A prefix that fits a damaged file and any other file is ambiguous.
    /// A damaged file is refused when filters are given, since its set,
    /// host and tags cannot be read to check them.
    pub fn resolve_named(&self, spec: &str, filter: &SnapshotFilter) -> Result<Named<'_>> {
        let lower = spec.to_ascii_lowercase();
        let is_prefix = (4..=64).contains(&lower.len())
            && lower.bytes().all(|b| b.is_ascii_hexdigit())
            && spec != "latest";
        let damaged: Vec<&DamagedSnapshot> = if is_prefix {
            self.damaged
                .iter()
                .filter(|d| d.id.to_hex().starts_with(&lower))
                .collect()
        } else {
            Vec::new()
        };
        let d = match damaged.as_slice() {
            [] => return resolve(&self.good, spec, filter).map(Named::Good),
            [d] => *d,
            _ => {
                return Err(Error::Invalid(format!(
                    "snapshot prefix {spec} is ambiguous: give more digits"
                )))
            }
        };
        if self.good.iter().any(|e| e.id.to_hex().starts_with(&lower)) {
            return Err(Error::Invalid(format!(
                "snapshot prefix {spec} is ambiguous: give more digits"
            )));
        }
        if !filter.is_empty() {
            return Err(Error::Invalid(format!(
                "snapshot file snapshots/{} is damaged: its set, host and tags cannot be read \
                 to check the filters given (--set, --host, --tag); name it without them",
                d.id
            )));
        }
        Ok(Named::Damaged(d))
    }
}

/// Every snapshot file. A file that does not decode (`Error::Corrupt`) is
/// set apart in `damaged`, and so is one that cannot be read for a
/// reason of its own (see [`unreadable`]): a read refused (permissions),
/// an IO error, something not a regular file, or a name still listed
/// but not found (a symlink to nothing, a copy's mount gone). Either way
/// it may hold the only references to data, so gc refuses while it is
/// there, and `forget <id>` removes it. A file listed but gone when
/// read, and gone from a second listing too, was removed meanwhile (a
/// `forget`, which a listing of snapshots does not wait for) and is left
/// out. A failure that says nothing about the file (listing, a remote
/// store's error, transient or not) stays an error.
pub fn load_all(backend: &dyn Backend, key: &MasterKey) -> Result<Snapshots> {
    let mut out = Snapshots::default();
    let first = backend.list(FileKind::Snapshot)?;
    let mut listed_again: Option<Vec<String>> = None;
    for name in &first {
        if !is_hex_name(name) {
            continue;
        }
        let id = SnapshotId::from_hex(name)?;
        if !load_into(backend, key, id, &mut out)? {
            let again = match &mut listed_again {
                Some(names) => names,
                None => listed_again.insert(backend.list(FileKind::Snapshot)?),
            };
            if again.contains(name) {
                out.damaged.push(DamagedSnapshot {
                    id,
                    reason: NOT_THERE.into(),
                    refused: false,
                });
            }
        }
    }
    // A name listed that was not there, and not listed again, was removed
    // meanwhile, or was never there: one answer of a remote listing
    // changed on its way names a snapshot that is not there in place of
    // one that is. The second listing's other names are read too, so such
    // a snapshot is not left out (gc would have deleted its data).
    if let Some(again) = listed_again {
        let first: std::collections::HashSet<&String> = first.iter().collect();
        for name in again
            .iter()
            .filter(|n| is_hex_name(n) && !first.contains(n))
        {
            // Not there: written and removed again meanwhile.
            load_into(backend, key, SnapshotId::from_hex(name)?, &mut out)?;
        }
    }
    out.good.sort_by_key(SnapshotEntry::order);
    out.damaged.sort_by_key(|d| d.id);
    Ok(out)
}

/// Reads snapshot `id` into `out`, among the good or the damaged ones;
/// false where the store has no file of that name, for the caller to
/// judge. An error that says nothing of the file (see [`unreadable`]) is
/// returned.
fn load_into(
    backend: &dyn Backend,
    key: &MasterKey,
    id: SnapshotId,
    out: &mut Snapshots,
) -> Result<bool> {
    match Snapshot::load(backend, key, &id) {
        Ok(snapshot) => out.good.push(SnapshotEntry { id, snapshot }),
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => match unreadable(&e) {
            Some(reason) => out.damaged.push(DamagedSnapshot {
                id,
                reason,
                refused: e.is_read_refused(),
            }),
            None => return Err(e),
        },
    }
    Ok(true)
}

/// Why a snapshot file listed twice was not found when read.
pub const NOT_THERE: &str =
    "listed, but there is no file to read: a symlink to nothing, or a file removed by hand";

/// Why a snapshot file could not be read, where the error is the file's
/// own: it does not decode (`Corrupt`), or the local filesystem refused
/// or failed to read it (`Io`: permission denied, an IO error; the
/// message names its path). `None` for errors that say nothing about the
/// file: a remote store's (a transient failure after the retries, denied
/// credentials), which another try or a fix elsewhere may mend, and which
/// would otherwise set apart every snapshot at once.
pub fn unreadable(e: &Error) -> Option<String> {
    match e {
        Error::Corrupt { detail, .. } => Some(detail.clone()),
        Error::Io { .. } => Some(e.to_string()),
        _ => None,
    }
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
    /// Whether it passes every snapshot.
    pub fn is_empty(&self) -> bool {
        self.set.is_none() && self.host.is_none() && self.tags.is_empty()
    }

    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.set.as_ref().is_none_or(|x| *x == s.set)
            && self.host.as_ref().is_none_or(|x| *x == s.host)
            && self.tags.iter().all(|t| s.tags.contains(t))
    }
}

/// Checks that `spec` can name a snapshot (`latest`, or 4 to 64 hex
/// digits of an id) without looking for one.
pub fn check_spec(spec: &str) -> Result<()> {
    let ok = spec == "latest"
        || ((4..=64).contains(&spec.len()) && spec.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{spec:?} is not a snapshot id: give `latest`, or at least 4 hex digits of an id"
    )))
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
            .ok_or_else(|| {
                Error::NotFound(if !filter.is_empty() {
                    "snapshot matching `latest` and the filters".into()
                } else if all.is_empty() {
                    "snapshot for `latest` (the repository holds none yet)".into()
                } else {
                    "snapshot for `latest`".into()
                })
            });
    }
    check_spec(spec)?;
    let lower = spec.to_ascii_lowercase();
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
        _ => {
            // The first few, with digits enough to tell them apart.
            let mut ids: Vec<String> = passed.iter().map(|e| e.id.to_hex()).collect();
            ids.sort();
            let shared = ids
                .windows(2)
                .map(|w| {
                    w[0].bytes()
                        .zip(w[1].bytes())
                        .take_while(|(a, b)| a == b)
                        .count()
                })
                .max()
                .unwrap_or(0);
            let digits = (shared + 1).clamp(8, 64);
            let mut fit: Vec<String> = ids
                .iter()
                .take(5)
                .map(|id| id[..digits].to_string())
                .collect();
            if passed.len() > 5 {
                fit.push(format!("and {} more", passed.len() - 5));
            }
            Err(Error::Invalid(format!(
                "snapshot prefix {spec} is ambiguous: it fits {} snapshots ({}); give more digits",
                passed.len(),
                fit.join(", ")
            )))
        }
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
            excludes: Vec::new(),
            started_ns: time,
        }
    }

    /// A file that does not decode is set apart, named, and only a
    /// command that needs every snapshot fails on it; a failure to read
    /// says nothing about the file and stays an error.
    #[test]
    fn damaged_files_are_set_apart() {
        use crate::backend::mem::MemBackend;
        let key = MasterKey::generate();
        let b = MemBackend::default();
        let (good, bytes) = sample(5).encode(&key);
        b.write(FileKind::Snapshot, &good.to_hex(), &bytes).unwrap();
        let (bad, mut bytes) = sample(9).encode(&key);
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        b.write(FileKind::Snapshot, &bad.to_hex(), &bytes).unwrap();

        let all = load_all(&b, &key).unwrap();
        assert_eq!(all.good.len(), 1);
        assert_eq!(all.good[0].id, good);
        assert_eq!(all.damaged.len(), 1);
        assert_eq!(all.damaged[0].id, bad);
        assert_eq!(all.damaged[0].reason, "content does not match its name");

        // Resolution: `latest` is the newest good one; the damaged file
        // by its name, unless filters ask what it cannot tell.
        let f = SnapshotFilter::default();
        let latest = all.resolve_named("latest", &f).unwrap();
        assert!(matches!(latest, Named::Good(e) if e.id == good));
        let named = all.resolve_named(&bad.short(), &f).unwrap();
        assert!(matches!(named, Named::Damaged(d) if d.id == bad));
        let host = SnapshotFilter {
            host: Some("h".into()),
            ..Default::default()
        };
        let e = all.resolve_named(&bad.short(), &host).unwrap_err();
        assert!(e.to_string().contains("cannot be read to check"), "{e}");
        assert!(all.resolve_named(&bad.to_hex()[..3], &f).is_err());

        let e = all.clone().require_all("collect garbage").unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with("refusing to collect garbage"), "{e}");
        assert!(e.contains(&format!("snapshots/{bad}")), "{e}");
        assert!(
            e.contains(&format!("`cairn forget {}`", bad.short())),
            "{e}"
        );

        b.fail_next(1, true);
        assert!(load_all(&b, &key).is_err());
    }

    /// Hooks whose first listing of snapshots names one more, `gone`,
    /// that is not there: a snapshot removed between listing and reading.
    struct Removed {
        gone: std::sync::Mutex<Option<String>>,
        /// Whether `gone` is listed every time (a dangling symlink).
        listed_always: bool,
    }

    impl crate::backend::testing::Hooks for Removed {
        fn listed(&self, _kind: FileKind, names: &mut Vec<String>) {
            let mut gone = self.gone.lock().unwrap();
            let name = if self.listed_always {
                gone.clone()
            } else {
                gone.take()
            };
            names.extend(name);
            names.sort();
        }
    }

    /// A snapshot removed after the listing named it is left out, not
    /// an error; one listed again but still not found is damaged.
    #[test]
    fn a_snapshot_removed_while_listed_is_left_out() {
        let key = MasterKey::generate();
        for listed_always in [false, true] {
            let b = crate::backend::testing::Hooked {
                inner: crate::backend::mem::MemBackend::default(),
                hooks: Removed {
                    gone: std::sync::Mutex::new(Some("00".repeat(32))),
                    listed_always,
                },
            };
            let (kept, bytes) = sample(5).encode(&key);
            b.write(FileKind::Snapshot, &kept.to_hex(), &bytes).unwrap();
            let all = load_all(&b, &key).unwrap();
            assert_eq!(all.good.len(), 1);
            assert_eq!(all.good[0].id, kept);
            if listed_always {
                assert_eq!(all.damaged.len(), 1);
                assert_eq!(all.damaged[0].id.to_hex(), "00".repeat(32));
                assert_eq!(all.damaged[0].reason, NOT_THERE);
                let e = all.check_complete("collect garbage").unwrap_err();
                assert!(e.to_string().contains("refusing"), "{e}");
            } else {
                assert!(all.damaged.is_empty());
            }
        }
    }

    /// Hooks that refuse to read one snapshot with `err`.
    struct Refused {
        name: String,
        err: fn() -> Error,
    }

    impl crate::backend::testing::Hooks for Refused {
        fn read(&self, _kind: FileKind, name: &str) -> Option<Result<crate::backend::Data>> {
            (name == self.name).then(|| Err((self.err)()))
        }
    }

    /// A snapshot file the filesystem refuses to read (permission denied,
    /// an IO error) is set apart as damaged with the error naming it, so
    /// the others are listed and gc refuses; a remote store's failure
    /// stays an error, whether or not it was transient.
    #[test]
    fn a_snapshot_that_cannot_be_read_is_set_apart_a_store_failure_is_not() {
        let key = MasterKey::generate();
        let denied = || {
            Error::path(
                "open",
                std::path::Path::new("/repo/snapshots/x"),
                std::io::Error::from_raw_os_error(libc::EACCES),
            )
        };
        fn remote(transient: bool) -> Error {
            Error::Backend {
                op: "read".into(),
                object: "snapshots/x".into(),
                endpoint: "e".into(),
                detail: "d".into(),
                transient,
            }
        }
        let cases: [(fn() -> Error, bool); 3] = [
            (denied, true),
            (|| remote(true), false),
            (|| remote(false), false),
        ];
        for (err, damaged) in cases {
            let b = crate::backend::testing::Hooked {
                inner: crate::backend::mem::MemBackend::default(),
                hooks: Refused {
                    name: String::new(),
                    err,
                },
            };
            let (kept, bytes) = sample(5).encode(&key);
            b.write(FileKind::Snapshot, &kept.to_hex(), &bytes).unwrap();
            let (refused, bytes) = sample(7).encode(&key);
            b.write(FileKind::Snapshot, &refused.to_hex(), &bytes)
                .unwrap();
            let b = crate::backend::testing::Hooked {
                inner: b.inner,
                hooks: Refused {
                    name: refused.to_hex(),
                    err,
                },
            };
            match load_all(&b, &key) {
                Ok(all) => {
                    assert!(damaged);
                    assert_eq!(all.good.len(), 1);
                    assert_eq!(all.damaged[0].id, refused);
                    assert!(
                        all.damaged[0].reason.contains("/repo/snapshots/x")
                            && all.damaged[0].reason.contains("Permission denied"),
                        "{:?}",
                        all.damaged
                    );
                }
                Err(e) => assert!(!damaged && matches!(e, Error::Backend { .. }), "{e}"),
            }
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
        // An ambiguous prefix names the snapshots it fits, with digits
        // enough to tell them apart.
        let mut other = [0xab; 32];
        other[10] = 0xcd;
        let mut two = all.clone();
        two.push(SnapshotEntry {
            id: SnapshotId(other),
            snapshot: sample(7),
        });
        let e = resolve(&two, "abab", &f).unwrap_err().to_string();
        assert!(e.contains("it fits 2 snapshots"), "{e}");
        assert!(e.contains(&format!("{}a", "ab".repeat(10))), "{e}");
        assert!(e.contains(&format!("{}c", "ab".repeat(10))), "{e}");
    }
}
