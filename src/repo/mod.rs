//! Opening and creating repositories.
//!
//! A [`Repository`] is an opened repository: backend, master key and
//! config. Operations live in their own modules and take `&Repository`.

pub mod config;
mod dir;
pub mod export;
pub mod keys;
pub mod lock;
pub mod own;
pub mod rescue;
pub mod space;
pub mod upgrade;

use std::sync::{Arc, Mutex, RwLock};

use crate::backend::cache::{Cache, CachedBackend};
use crate::backend::{Backend, FileKind, CONFIG_COPY};
use crate::chunker::ChunkerParams;
use crate::crypto::{self, Cipher, MasterKey};
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name, BlobId, IndexId, PackId};
use crate::index::{IndexBuilder, IndexSet, IndexTable, Location};
use crate::pack;
use crate::snapshot;
use crate::tree::{EncodedTree, NodeKind, Tree};

pub use config::Config;
pub use dir::DirNodes;
pub use keys::KdfParams;

/// What to do where `config` and its copy are both damaged or gone.
const REBUILD: &str = "move `config` (and `config.copy`, where it is there) out of the \
                       repository (keep them) and run `cairn repair config --rebuild`, which \
                       makes a config anew from the password or an exported key";

/// Settings chosen at `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Minimum, average, maximum chunk size.
    pub chunk_sizes: (u32, u32, u32),
    /// zstd level; 0 disables compression.
    pub compression: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Password hashing cost.
    pub kdf: KdfParams,
    /// The cipher sealing the repository's data.
    pub cipher: Cipher,
}

impl InitOptions {
    /// Checks the settings as `init` would, before anything is asked
    /// for or written: chunk sizes, compression level, pack size and the
    /// password hashing cost.
    pub fn check(&self) -> Result<()> {
        self.config([0; 32], 0, 0)?;
        self.kdf.validate()
    }

    /// The config of a repository made with these settings, validated.
    fn config(&self, repo_id: [u8; 32], chunker_seed: u64, created_ns: i64) -> Result<Config> {
        let (min, avg, max) = self.chunk_sizes;
        let config = Config {
            version: config::VERSION,
            repo_id,
            chunker: ChunkerParams::with_sizes(min, avg, max, chunker_seed)?,
            compression: self.compression,
            pack_size: self.pack_size,
            created_ns,
            cipher: self.cipher,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Default for InitOptions {
    fn default() -> InitOptions {
        let c = ChunkerParams::default();
        InitOptions {
            chunk_sizes: (c.min, c.avg, c.max),
            compression: 3,
            pack_size: 16 << 20,
            kdf: KdfParams::default(),
            cipher: Cipher::DEFAULT,
        }
    }
}

/// The folders of the repository's data (`snapshots/`, `index/`,
/// `packs/`) that hold files a repository writes, and those the store
/// would not list (this user may not read them, or the store did not
/// answer), with the error: they may hold files too. Where the config is
/// missing they tell a repository that lost it from a place where none
/// was made (or only an interrupted `init` left a key file). A folder
/// that cannot be listed for another reason (an S3 bucket that does not
/// exist) counts as empty.
fn data_folders(backend: &dyn Backend) -> (Vec<&'static str>, Vec<(&'static str, Error)>) {
    let (mut used, mut unlisted) = (Vec::new(), Vec::new());
    for kind in [FileKind::Snapshot, FileKind::Index, FileKind::Pack] {
        match backend.list(kind) {
            Ok(names) if names.iter().any(|n| is_hex_name(n)) => used.push(kind.dir()),
            Ok(_) => {}
            Err(e) if e.is_store_unavailable() => unlisted.push((kind.dir(), e)),
            Err(_) => {}
        }
    }
    (used, unlisted)
}

/// What to do where no key file opens a repository with a password.
const NO_KEY_LEFT: &str = "no key file is left to open it: restore keys/ from a copy of the \
     repository, or open it with a key file `cairn key export` wrote (--key-file)";

/// The error for a place without a `config` whose data folders could not
/// be listed (`unlisted`): they may hold a repository's files, so there is
/// no advice to remove or make anything (removing keys/ would leave the
/// data no key, should `config` come back from a copy).
fn unlisted_data(backend: &dyn Backend, unlisted: &[(&str, Error)]) -> Error {
    let (dir, e) = &unlisted[0];
    Error::Invalid(format!(
        "{} has no config, and its folder {dir}/ could not be listed ({e}), so whether it \
         holds a repository's files cannot be told: run this as a user who may read the \
         whole folder (or once the store answers); remove nothing until then",
        backend.location()
    ))
}

/// The error for opening a place without a `config`: no repository
/// ([`Error::RepoMissing`], exit code 10), or where its data folders hold
/// files, a repository that lost its config, which only a copy of
/// `config` brings back (a new `init` there would not open the old data).
pub fn missing(backend: &dyn Backend) -> Error {
    let (used, unlisted) = data_folders(backend);
    if used.is_empty() && !unlisted.is_empty() {
        return unlisted_data(backend, &unlisted);
    }
    if used.is_empty() {
        // An `init` killed after its key file, before its config, leaves
        // only that: `init` then gives way to it (another may be running),
        // so "create one with `cairn init`" alone would go round in a
        // circle.
        let keys = backend
            .list(FileKind::Key)
            .map(|names| names.iter().filter(|n| is_hex_name(n)).count())
            .unwrap_or(0);
        if keys > 0 {
            return Error::RepoMissing(format!(
                "{}: keys/ holds {keys} key file(s) but there is no config, as an `init` \
                 that was interrupted (or is running now) leaves it; if none is running, \
                 remove keys/ and run `cairn init` again",
                backend.location()
            ));
        }
        // A folder of other files is a mistyped path more likely than a
        // place for a new repository, which `init` would refuse anyway.
        let foreign = backend.foreign_entries().unwrap_or_default();
        return Error::RepoMissing(if foreign.is_empty() {
            format!("{} (create one with `cairn init`)", backend.location())
        } else {
            format!(
                "{}: it holds other files ({}) and no repository's config; check the path \
                 (`cairn init` makes a repository only in a new or empty folder)",
                backend.location(),
                foreign.join(", ")
            )
        });
    }
    Error::corrupt(
        format!("repository {}", backend.location()),
        format!(
            "it has no config, though {}/ hold its files: a repository without its config; \
             restore `config` from a copy of the repository (`init` would not make one here), \
             or, where no copy is left, `cairn repair config --rebuild` makes one anew from \
             the password or an exported key",
            used.join("/, ")
        ),
    )
}

/// A config made anew for a repository that lost both `config` and
/// `config.copy` (`repair config --rebuild`), from its master key: the
/// first of `keys` (each a key, with the repository's id where an
/// exported key gave it) that opens a snapshot, with the cipher it opens
/// it with; the newest format (an upgrade rewrites only the config, so a
/// repository's files are all of formats the newest reads); the default
/// settings for the rest, with a new chunker seed, as the old one is
/// lost: backups from then on cut files elsewhere, and store their data
/// again rather than share it with what is stored (the snapshots stored
/// restore as ever). Written, with its copy, only where neither file is
/// there; refused where no key opens a snapshot (nothing would tell the
/// key, or the cipher, is this repository's).
pub fn rebuild_config(
    backend: &dyn Backend,
    keys: Vec<(MasterKey, Option<[u8; 32]>)>,
) -> Result<Config> {
    let mut names: Vec<String> = backend.list(FileKind::Snapshot)?;
    names.retain(|n| is_hex_name(n));
    names.sort();
    let mut found = None;
    'search: for name in names.iter().take(16) {
        let Ok(bytes) = backend.read(FileKind::Snapshot, name) else {
            continue;
        };
        for (key, id) in &keys {
            for cipher in [Cipher::Xaes256Gcm, Cipher::XChaCha20Poly1305] {
                let key = key.clone().with_cipher(cipher);
                if let Ok(snap) = snapshot::Snapshot::decode(&bytes, &key, "snapshot") {
                    found = Some((key, *id, snap.time_ns));
                    break 'search;
                }
            }
        }
    }
    let Some((key, id, time_ns)) = found else {
        return Err(Error::Invalid(
            "no snapshot opens with the key given (of the first 16, in name order): nothing \
             tells that it is this repository's, nor its cipher; no config written"
                .into(),
        ));
    };
    let opts = InitOptions {
        cipher: key.cipher(),
        ..InitOptions::default()
    };
    let config = opts.config(
        id.unwrap_or_else(crypto::random_bytes::<32>),
        u64::from_le_bytes(crypto::random_bytes::<8>()),
        time_ns,
    )?;
    let encoded = config.encode(&key)?;
    if backend.exists()? || backend.read(FileKind::Config, CONFIG_COPY).is_ok() {
        return Err(Error::Invalid(
            "a config appeared meanwhile; nothing written".into(),
        ));
    }
    backend.write(FileKind::Config, "", &encoded)?;
    backend.write(FileKind::Config, CONFIG_COPY, &encoded)?;
    Ok(config)
}

/// What was wrong with `config` where its copy opened the repository, for
/// the warning every command gives: the error up to the advice in it
/// (which is to restore a copy: the copy is what opened it).
fn config_trouble_text(e: &Error) -> String {
    let text = e.to_string();
    let cut = [";", " (restore `config`", ": restore `config`"]
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    text[..cut].to_string()
}

/// [`Config::peek`] of the repository's config `bytes`, with what to do
/// where its header is damaged: no key file opens a repository without
/// its config, so only a copy of it mends that.
fn peek_config(backend: &dyn Backend, bytes: &[u8]) -> Result<(u32, [u8; 32])> {
    Config::peek(bytes).map_err(|e| {
        let Error::Corrupt { detail, .. } = e else {
            return e;
        };
        let what = format!("config of {}", backend.location());
        let restore = format!(
            "restore `config` from a copy of the repository (no key file opens a repository \
             without it), or, with no copy left, {REBUILD}"
        );
        if bytes.is_empty() {
            return Error::corrupt(what, format!("it is empty; {restore}"));
        }
        // A header of the right kind whose version this cairn does not
        // read may be a newer cairn's.
        if bytes.starts_with(config::MAGIC) {
            return Error::corrupt(
                what,
                format!(
                    "{detail}; if no newer cairn has written to this repository, the config is \
                     damaged: {restore}"
                ),
            );
        }
        Error::corrupt(what, format!("{detail}, so it is damaged; {restore}"))
    })
}

/// The error for a config that no key the password opens
/// authenticates, each of `unopened` (name, key, the config's error with
/// it) being a key file the password opens, of `key_files` in `keys/`
/// (`damaged` naming those that could not be tried).
/// Either the config is damaged, or those key files hold another
/// repository's key; the repository's snapshots (or an index table) tell
/// which, where it has any. Removing a key file is suggested only where it
/// may be another repository's and is not the only way in.
fn config_refused(
    backend: &dyn Backend,
    key_files: usize,
    unopened: Vec<(String, MasterKey, Error)>,
    damaged: &[String],
) -> Error {
    let shown = unopened
        .iter()
        .map(|(n, ..)| &n[..8])
        .collect::<Vec<_>>()
        .join(", ");
    let others = key_files > unopened.len();
    let mut verdict = None;
    for (_, key, _) in &unopened {
        match opens_repository_files(backend, key) {
            Some(true) => {
                verdict = Some(true);
                break;
            }
            Some(false) => verdict = Some(false),
            None => {}
        }
    }
    let (what, detail) = match unopened.into_iter().next().map(|(.., e)| e) {
        Some(Error::Corrupt { what, detail }) => (what, detail),
        Some(other) => ("config".to_string(), other.to_string()),
        None => ("config".to_string(), "authentication failed".to_string()),
    };
    // A damaged key file may be the repository's own.
    let damaged = if damaged.is_empty() {
        String::new()
    } else {
        format!(
            " (damaged, and perhaps this repository's: {})",
            damaged.join("; ")
        )
    };
    match verdict {
        Some(true) => Error::Corrupt {
            what,
            detail: format!(
                "{detail}, with the key of key file(s) {shown}, which this password opens \
                 and which open this repository's other files: the config is damaged; \
                 restore `config` from a copy of the repository (the key files are not at \
                 fault), or, with no copy left, {REBUILD}"
            ),
        },
        Some(false) if others => Error::WrongKey(format!(
            "key file(s) {shown} in {} open with this password but hold another \
             repository's key (they open neither its config nor its other files), and no \
             other key file opens with it{damaged}; a key file of another repository can \
             be removed from keys/",
            backend.location()
        )),
        Some(false) => Error::WrongKey(format!(
            "every key file in {}/keys ({shown}) holds another repository's key (they open \
             neither its config nor its other files): restore keys/ from a copy of this \
             repository",
            backend.location()
        )),
        None if others => Error::Corrupt {
            what,
            detail: format!(
                "{detail}, with the key of every key file this password opens ({shown}); \
                 the repository holds nothing else to tell whether the config is damaged \
                 (restore it from a copy of the repository) or those key files are another \
                 repository's (one can be removed from keys/){damaged}"
            ),
        },
        None => Error::Corrupt {
            what,
            detail: format!(
                "{detail}, with the key of every key file in keys/ ({shown}): the config \
                 is damaged, or keys/ is another repository's; restore them from a copy of \
                 the repository (removing the key files would leave none)"
            ),
        },
    }
}

/// Whether `key` opens this repository's files other than the config: a
/// few snapshots (sealed with one of the two ciphers), or where there are
/// none, the smallest index table (whose MAC does not depend on the
/// cipher). `None` where there is nothing to try, or it cannot be read.
fn opens_repository_files(backend: &dyn Backend, key: &MasterKey) -> Option<bool> {
    let snapshots = backend.list(FileKind::Snapshot).ok()?;
    let mut tried = false;
    for name in snapshots.iter().filter(|n| is_hex_name(n)).take(3) {
        let Ok(bytes) = backend.read(FileKind::Snapshot, name) else {
            continue;
        };
        tried = true;
        let opens = [
            crypto::Cipher::Xaes256Gcm,
            crypto::Cipher::XChaCha20Poly1305,
        ]
        .into_iter()
        .any(|c| {
            snapshot::Snapshot::decode(&bytes, &key.clone().with_cipher(c), "snapshot").is_ok()
        });
        if opens {
            return Some(true);
        }
    }
    if tried {
        return Some(false);
    }
    let (name, _) = backend
        .list_sizes(FileKind::Index)
        .ok()?
        .into_iter()
        .filter(|(n, _)| is_hex_name(n))
        .min_by_key(|(_, size)| *size)?;
    let id = IndexId::from_hex(&name).ok()?;
    let table = IndexTable::parse(id, backend.read(FileKind::Index, &name).ok()?).ok()?;
    Some(table.check_mac(key).is_ok())
}

/// "index table 1a2b3c4d fails its MAC (damaged)", for one or more.
fn damaged_tables_text(ids: &[IndexId]) -> String {
    let names: Vec<String> = ids.iter().map(|id| id.short()).collect();
    match names.as_slice() {
        [one] => format!("index table {one} fails its MAC (damaged)"),
        _ => format!("index tables {} fail their MAC (damaged)", names.join(", ")),
    }
}

/// An open repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    /// The name of the key file the master key came from.
    key_file: String,
    config: Config,
    /// The mapped index, loaded on first use (see [`Repository::reload_index`]).
    index: RwLock<Option<Arc<IndexSet>>>,
    cache: Option<Arc<Cache>>,
    notes: Vec<String>,
    /// Why `config` did not open the repository, where its copy did (see
    /// [`Repository::open`]); `None` where `config` opened it.
    config_trouble: Option<String>,
    /// Damaged copies of blobs read around since the last
    /// [`Repository::take_read_around`] (see [`Repository::read_indexed`]).
    read_around: Mutex<Vec<ReadAround>>,
}

/// A blob a read found damaged in one pack, or could not read there at
/// all, and read from its copy in another (see
/// [`Repository::take_read_around`]). Its `Display` is the warning to
/// give: the blob, the refused copy's pack and why, the copy read, and,
/// for damage, what mends the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAround {
    /// The blob.
    pub id: BlobId,
    /// The pack holding the copy refused: damaged, or not read at all
    /// (see `unread`).
    pub damaged: PackId,
    /// Why that copy was refused.
    pub why: String,
    /// The pack of the copy read.
    pub read: PackId,
    /// Whether the refused copy could not be read at all (an error of
    /// the store, such as "Permission denied"), rather than read and
    /// found damaged. Nothing says that pack is damaged then, so there
    /// is no advice to drop it from the index.
    pub unread: bool,
}

impl std::fmt::Display for ReadAround {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unread {
            return write!(
                f,
                "blob {}: pack {} could not be read ({}); read from its other copy in pack {}",
                self.id.short(),
                self.damaged.short(),
                self.why,
                self.read.short()
            );
        }
        write!(
            f,
            "blob {} in pack {} is damaged ({}); read from its other copy in pack {}; \
             `cairn repair index --read-data` drops the damaged copy from the index",
            self.id.short(),
            self.damaged.short(),
            self.why,
            self.read.short()
        )
    }
}

/// `arounds` as warnings, one per damaged pack (see
/// [`Repository::take_read_around_said`]).
fn said_by_pack(arounds: Vec<ReadAround>) -> Vec<String> {
    let mut by_pack: Vec<((PackId, bool), Vec<ReadAround>)> = Vec::new();
    for around in arounds {
        let key = (around.damaged, around.unread);
        match by_pack.iter_mut().find(|(k, _)| *k == key) {
            Some((_, all)) => all.push(around),
            None => by_pack.push((key, vec![around])),
        }
    }
    by_pack
        .into_iter()
        .map(|((pack, unread), all)| match &all[..] {
            [one] => one.to_string(),
            [first, ..] => {
                let mut read: Vec<String> = all.iter().map(|a| a.read.short()).collect();
                read.sort();
                read.dedup();
                if unread {
                    return format!(
                        "pack {} could not be read ({}); {} of its blobs were read from their \
                         other copies in pack(s) {}",
                        pack.short(),
                        first.why,
                        all.len(),
                        read.join(", ")
                    );
                }
                format!(
                    "{} blobs in pack {} are damaged (first: blob {}, {}); read from their \
                     other copies in pack(s) {}; `cairn repair index --read-data` drops \
                     the damaged copies from the index",
                    all.len(),
                    pack.short(),
                    first.id.short(),
                    first.why,
                    read.join(", ")
                )
            }
            [] => String::new(),
        })
        .collect()
}

impl Repository {
    /// Creates a repository; fails if one exists at the location.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: &InitOptions,
    ) -> Result<Repository> {
        if backend.exists()? {
            return Err(Error::Invalid(format!(
                "there is already a repository at {}",
                backend.location()
            )));
        }
        // A folder holding config.copy and no config holds a repository
        // whose config is lost (it opens from the copy), or someone's file
        // of that name: no place for a new repository either way (until
        // December 2026 init wrote its own copy over that file).
        if backend.read(FileKind::Config, CONFIG_COPY).is_ok() {
            return Err(Error::Invalid(format!(
                "{} holds config.copy and no config: a repository whose config is lost, \
                 which opens from that copy (`cairn repair config` writes config back), or a \
                 file of that name; init makes a repository only in a new or empty folder",
                backend.location()
            )));
        }
        // A new config among old data would make a repository that opens
        // none of it, with the old key files taken for another `init`'s;
        // so would one beside folders that could not be listed, whose key
        // files the advice below would have removed.
        let (used, unlisted) = data_folders(backend.as_ref());
        if used.is_empty() && !unlisted.is_empty() {
            return Err(unlisted_data(backend.as_ref(), &unlisted));
        }
        if !used.is_empty() {
            return Err(Error::Invalid(format!(
                "{} holds a repository without its config ({}/ hold files, and `config` is \
                 missing): restore `config` from a copy of the repository rather than making \
                 a new one here",
                backend.location(),
                used.join("/, ")
            )));
        }
        let foreign = backend.foreign_entries()?;
        if !foreign.is_empty() {
            return Err(Error::Invalid(format!(
                "{} is not empty (it holds {}): a repository needs a folder of its own; \
                 give a new or empty folder",
                backend.location(),
                foreign.join(", ")
            )));
        }
        let config = opts.config(
            crypto::random_bytes::<32>(),
            u64::from_le_bytes(crypto::random_bytes::<8>()),
            crate::now_ns(),
        )?;
        let key = MasterKey::generate().with_cipher(config.cipher);
        let encoded = config.encode(&key)?;
        let keyfile = keys::encode(&key, password, opts.kdf)?;
        let init_at_work = |mut others: Vec<String>| {
            others.sort();
            let shown: Vec<&str> = others.iter().map(|n| &n[..8]).collect();
            format!(
                "another `init` is creating a repository at {} at the same time (key file(s) {} \
                 and no config yet, and no other files): this one gave way; run `init` again \
                 once that one has finished, or, if none is running (an `init` was \
                 interrupted), remove those key files from keys/ first",
                backend.location(),
                shown.join(", ")
            )
        };
        // Said before the folders are made, which a refusal would leave
        // behind, empty (the claims below still settle two `init`s at
        // once).
        let mut before: Vec<String> = backend.list(FileKind::Key).unwrap_or_default();
        before.retain(|n| is_hex_name(n));
        if !before.is_empty() {
            return Err(Error::Invalid(init_at_work(before)));
        }
        backend.create()?;
        let notes = backend.probe()?;
        let key_name = hex::encode(file_hash(&keyfile));
        // The key file is this `init`'s claim on the place; the config,
        // written last, makes the repository exist. Two `init`s at once
        // both write a claim before they list the claims, so on a store
        // whose listings show completed writes at least one of them sees
        // the other's, and a claimant that sees another gives way: at most
        // one goes on to write a config (both may give way; then `init` is
        // run again). No conditional write is needed.
        backend.write(FileKind::Key, &key_name, &keyfile)?;
        let give_way = |why: String| {
            let _ = backend.remove(FileKind::Key, &key_name);
            Err(Error::Invalid(why))
        };
        let mut others: Vec<String> = backend.list(FileKind::Key)?;
        others.retain(|n| is_hex_name(n) && *n != key_name);
        if !others.is_empty() {
            return give_way(init_at_work(others));
        }
        if backend.exists()? {
            return give_way(format!(
                "there is already a repository at {} (another `init` finished first)",
                backend.location()
            ));
        }
        if let Err(e) = backend.write(FileKind::Config, "", &encoded) {
            // No config: the claim goes too, or the next `init` would
            // take it for another one's at work (a full disk, say). A
            // config that landed though its write reported an error keeps
            // the key that opens it.
            if !backend.exists().unwrap_or(true) {
                let _ = backend.remove(FileKind::Key, &key_name);
            }
            return Err(e);
        }
        // Its copy, for a config lost or damaged later; one not written
        // now (a full disk) is by the next command that writes.
        let _ = backend.write(FileKind::Config, CONFIG_COPY, &encoded);
        Ok(Repository {
            backend,
            key,
            key_file: key_name,
            config,
            index: RwLock::new(None),
            cache: None,
            notes,
            config_trouble: None,
            read_around: Mutex::new(Vec::new()),
        })
    }

    /// Opens the repository with `password`: from `config`, or, where
    /// that is missing or does not open it, from `config.copy` (see
    /// [`Repository::through_copy`]).
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        Self::through_copy(backend, |b, name| Self::open_from(b, password, name))
    }

    /// `open(backend, "")`, the repository opened from `config`; where
    /// that fails for any reason but a wrong password or an outage (the
    /// config missing, unreadable, damaged, or opened by no key that opens
    /// the rest), `open(backend, CONFIG_COPY)`, from the
    /// copy of it every command that writes keeps (see
    /// [`Repository::keep_config_copy`]), noting why (see
    /// [`Repository::config_trouble`]). Until December 2026 a config lost
    /// or damaged (160 bytes, one bad sector) left intact data that
    /// nothing could read.
    fn through_copy(
        backend: Arc<dyn Backend>,
        open: impl Fn(Arc<dyn Backend>, &str) -> Result<Repository>,
    ) -> Result<Repository> {
        let e = match open(backend.clone(), "") {
            Ok(repo) => return Ok(repo),
            Err(e) => e,
        };
        // A wrong password is the password's, and an outage the store's:
        // the copy would meet the same. Anything else may be the
        // config's: missing, damaged, unreadable (a disk's read error,
        // which is what a bad sector mostly gives).
        if matches!(e, Error::WrongPassword { .. }) || e.is_transient() {
            return Err(e);
        }
        // A config changed on its way reads as damaged: read again before
        // the copy is taken for it.
        let remote = backend.prefers_ranges();
        let e = match crate::backend::retry::reread(
            remote,
            Err(e),
            |_| true,
            || open(backend.clone(), ""),
        ) {
            Ok(repo) => return Ok(repo),
            Err(e) => e,
        };
        let copy = match backend.read(FileKind::Config, CONFIG_COPY) {
            Ok(copy) => copy,
            // `config` damaged (or a folder in its place) and no copy to
            // read instead: said with what is left to do (it was the bare
            // damage, "a folder, not a regular file").
            Err(c) if matches!(e, Error::Corrupt { .. }) && !e.to_string().contains(REBUILD) => {
                let copy = if c.is_not_found() {
                    "config.copy is missing".to_string()
                } else {
                    format!("config.copy cannot be read either ({c})")
                };
                return Err(Error::Advised {
                    error: Box::new(e),
                    advice: format!(
                        "{copy}: restore `config` from a copy of the repository, or, with no \
                         copy left, {REBUILD}"
                    ),
                });
            }
            Err(_) => return Err(e),
        };
        let missing = !backend.exists().unwrap_or(true);
        // The format `config`'s header names, where it has one: past this
        // cairn's it is a newer cairn's config, not damage, and a copy of
        // another format than it names is stale (an upgrade stopped
        // between the two writes): neither copy is a way round.
        if let Ok(main) = backend.read(FileKind::Config, "") {
            if main.len() >= 12 && main[..8] == config::MAGIC[..] {
                let named = u32::from_le_bytes(main[8..12].try_into().expect("4 bytes"));
                let copied = Config::peek(&copy).map(|(v, _)| v).ok();
                if named > config::VERSION || copied != Some(named) {
                    // Which a changed byte of the header also gives: then
                    // the copy is what mends it, by hand, as no command
                    // may take a newer cairn's config for damage.
                    return Err(match copied {
                        Some(v) => Error::Advised {
                            error: Box::new(e),
                            advice: format!(
                                "config.copy is of format {v}, and is not read in its place; \
                                 if no other cairn has upgraded this repository, config's \
                                 header is damaged, and `cp config.copy config` (or the \
                                 object, on S3) mends it"
                            ),
                        },
                        None => e,
                    });
                }
            }
        }
        match open(backend, CONFIG_COPY) {
            Ok(mut repo) => {
                repo.config_trouble = Some(if missing {
                    "config is missing".into()
                } else {
                    config_trouble_text(&e)
                });
                Ok(repo)
            }
            // With `config` missing or unreadable, the copy is what tried
            // the password or the key: its refusal is the answer (it was
            // "a repository without its config", exit 1, for a mistyped
            // password).
            Err(c @ Error::WrongPassword { .. }) => Err(c),
            Err(c @ Error::WrongKey(_)) if missing || !matches!(e, Error::Corrupt { .. }) => Err(c),
            // The copy no better: what `config` said.
            Err(_) => Err(e),
        }
    }

    /// Opens the repository with `password` from its config file `name`
    /// (`""`, or [`CONFIG_COPY`]).
    fn open_from(backend: Arc<dyn Backend>, password: &[u8], name: &str) -> Result<Repository> {
        if name.is_empty() && !backend.exists()? {
            return Err(missing(backend.as_ref()));
        }
        let mut names: Vec<String> = backend.list(FileKind::Key)?;
        names.retain(|n| is_hex_name(n));
        names.sort();
        if names.is_empty() {
            return Err(Error::corrupt(
                format!("repository {}", backend.location()),
                format!("keys/ holds no key file; {NO_KEY_LEFT}"),
            ));
        }
        let config_bytes = backend.read(FileKind::Config, name)?;
        // A config whose header cairn cannot read (damage there, or the
        // format of a newer cairn) is said as it is, before any key file
        // is tried: none of them is at fault, whatever the password.
        peek_config(backend.as_ref(), &config_bytes)?;
        let mut found = None;
        let mut damaged = Vec::new();
        // Key files are tried cheapest first (Argon2id memory times
        // passes, then name), so that one asking for much more work than
        // the others, planted by anyone who can write to keys/, delays an
        // open only when the password opens no cheaper one.
        let mut candidates = Vec::new();
        for name in &names {
            let bytes = match backend.read(FileKind::Key, name) {
                Ok(bytes) => bytes,
                // Refused before decoding (not a regular file, larger
                // than any key file): damaged as one that does not decode.
                Err(e @ Error::Corrupt { .. }) => {
                    damaged.push(format!("key {}: {e}", &name[..8]));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A key file is named by its hash: one whose bytes changed
            // would only fail to open, and look like a wrong password.
            if hex::encode(file_hash(&bytes)) != *name {
                damaged.push(format!(
                    "key {}: its content does not match its name",
                    &name[..8]
                ));
                continue;
            }
            match keys::info(&bytes) {
                Ok(info) => candidates.push((info.params.cost(), name, bytes)),
                Err(e) => damaged.push(format!("key {}: {e}", &name[..8])),
            }
        }
        candidates.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        // Key files that this password opens but whose key the config
        // does not authenticate with: another repository's, with the same
        // password (folders merged, `keys/` restored from elsewhere), or
        // this one's with the config damaged. The search goes on past
        // them.
        let mut unopened = Vec::new();
        // Past a cheaper key file the password did not open, one asking
        // for far more than cairn's own settings is said before it is
        // tried: a mistyped password then waits on it, and keys/ should
        // hold no such file nobody made.
        let costly = KdfParams::default().cost().saturating_mul(16);
        for (i, (cost, name, bytes)) in candidates.into_iter().enumerate() {
            if i > 0 && cost > costly {
                if let Ok(info) = keys::info(&bytes) {
                    crate::eprint_line(format_args!(
                        "note: trying key file {}, whose key derivation asks for {} of memory \
                         and {} passes: this may take long (if no one here made such a key, \
                         someone else wrote it into keys/)",
                        &name[..8],
                        crate::human_bytes(u64::from(info.params.memory_kib) * 1024),
                        info.params.iterations
                    ));
                }
            }
            match keys::decode(&bytes, password) {
                Ok(Some(key)) => match Config::decode(&config_bytes, &key) {
                    Ok(config) => {
                        found = Some((key, name.clone(), config));
                        break;
                    }
                    // Authentic, so the key is this repository's and the
                    // error is the config's own.
                    Err(e) if Config::authenticates(&config_bytes, &key) => return Err(e),
                    Err(e) => unopened.push((name.clone(), key, e)),
                },
                Ok(None) => {}
                Err(e) => damaged.push(format!("key {}: {e}", &name[..8])),
            }
        }
        let Some((key, key_file, config)) = found else {
            if !unopened.is_empty() {
                return Err(config_refused(
                    backend.as_ref(),
                    names.len(),
                    unopened,
                    &damaged,
                ));
            }
            if damaged.len() == names.len() {
                return Err(Error::corrupt(
                    format!("repository {}", backend.location()),
                    format!("{}; {NO_KEY_LEFT}", damaged.join("; ")),
                ));
            }
            if !damaged.is_empty() {
                return Err(Error::WrongPassword {
                    location: format!(
                        "{} (or the password is right and opens a key file that is damaged \
                         or could not be tried: {})",
                        backend.location(),
                        damaged.join("; ")
                    ),
                    from: None,
                });
            }
            return Err(Error::WrongPassword {
                location: backend.location(),
                from: None,
            });
        };
        Ok(Repository {
            backend,
            key: key.with_cipher(config.cipher),
            key_file,
            config,
            index: RwLock::new(None),
            cache: None,
            notes: Vec::new(),
            config_trouble: None,
            read_around: Mutex::new(Vec::new()),
        })
    }

    /// Opens the repository with an exported master key (see
    /// [`export`]) instead of a password: no key derivation. `what`
    /// names the key's file in errors. A key exported from another
    /// repository, or one the config does not authenticate with, is
    /// [`Error::WrongKey`].
    pub fn open_exported(
        backend: Arc<dyn Backend>,
        exported: export::ExportedKey,
        what: &str,
    ) -> Result<Repository> {
        Self::through_copy(backend, |b, name| {
            Self::open_exported_from(b, exported.clone(), what, name)
        })
    }

    /// [`Repository::open_exported`] from the config file `name`.
    fn open_exported_from(
        backend: Arc<dyn Backend>,
        exported: export::ExportedKey,
        what: &str,
        name: &str,
    ) -> Result<Repository> {
        if name.is_empty() && !backend.exists()? {
            return Err(missing(backend.as_ref()));
        }
        let bytes = backend.read(FileKind::Config, name)?;
        let (_, repo_id) = peek_config(backend.as_ref(), &bytes)?;
        if repo_id != exported.repo_id {
            return Err(Error::WrongKey(format!(
                "{what} holds the key of repository {}, not of the repository at {} ({})",
                &hex::encode(exported.repo_id)[..8],
                backend.location(),
                &hex::encode(repo_id)[..8],
            )));
        }
        let config = Config::decode(&bytes, &exported.key).map_err(|_| {
            Error::WrongKey(format!(
                "{what} names repository {} but its key does not open the config at {}: the \
                 config may be damaged (restore `config` from a copy of the repository; if \
                 the password does not open it either, that is so), or the key file is not \
                 this repository's",
                &hex::encode(repo_id)[..8],
                backend.location(),
            ))
        })?;
        Ok(Repository {
            backend,
            key: exported.key.with_cipher(config.cipher),
            key_file: String::new(),
            config,
            index: RwLock::new(None),
            cache: None,
            notes: Vec::new(),
            config_trouble: None,
            read_around: Mutex::new(Vec::new()),
        })
    }

    /// Reads index tables, snapshots and tree packs through a local cache
    /// under `root` (see [`crate::backend::cache`]). Call before the first
    /// operation.
    pub fn with_cache(self, root: &std::path::Path) -> Result<Repository> {
        let cache = Cache::open(root, &self.config.repo_id)?;
        Ok(self.using_cache(cache))
    }

    /// Reads through `cache`, opened for this repository (see
    /// [`Repository::with_cache`]).
    pub fn using_cache(mut self, cache: Cache) -> Repository {
        let cache = Arc::new(cache);
        self.backend = Arc::new(CachedBackend::new(self.backend, cache.clone()));
        self.index = RwLock::new(None);
        self.cache = Some(cache);
        self
    }

    /// What `init` found out about the store (see [`Backend::probe`]);
    /// empty for an opened repository.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Where `config.copy` opened the repository, `config` not (see
    /// [`Repository::open`]), what was wrong and what mends it: damage
    /// every command warns of, a backup counts (exit 3), `verify` counts,
    /// and `repair config` mends.
    pub fn config_trouble(&self) -> Option<String> {
        self.config_trouble.as_deref().map(|why| {
            // Something else in its place (a folder) must go first: the
            // repair, told to write config back, failed on it.
            let first = if why.contains(", not a regular file") {
                "move what is at `config` out of the repository, then "
            } else {
                ""
            };
            format!(
                "the repository's config could not be used ({why}); its copy, config.copy, \
                 opened the repository: {first}`cairn repair config` writes config back from it"
            )
        })
    }

    /// Makes `config.copy` the bytes of `config`, where it is missing or
    /// differs (a repository made before the copy was kept, an `upgrade`
    /// stopped between the two writes); true when it wrote it. Called by
    /// the commands that write. A repository opened from the copy keeps
    /// it as it is: `config` is the damaged one.
    pub fn keep_config_copy(&self) -> Result<bool> {
        if self.config_trouble.is_some() {
            return Ok(false);
        }
        let bytes = self.backend.read(FileKind::Config, "")?;
        // Only what opens as this repository's config is copied.
        if Config::decode(&bytes, &self.key)? != self.config {
            return Ok(false);
        }
        match self.backend.read(FileKind::Config, CONFIG_COPY) {
            Ok(copy) if *copy == *bytes => Ok(false),
            _ => {
                self.backend.write(FileKind::Config, CONFIG_COPY, &bytes)?;
                Ok(true)
            }
        }
    }

    /// Writes `config` again from `config.copy`, for a repository that
    /// was opened from the copy (`repair config`); false, and nothing
    /// written, for one `config` itself opened.
    pub fn config_from_copy(&self) -> Result<bool> {
        if self.config_trouble.is_none() {
            return Ok(false);
        }
        let copy = self.backend.read(FileKind::Config, CONFIG_COPY)?;
        if Config::decode(&copy, &self.key)? != self.config {
            return Err(Error::Invalid(
                "config.copy changed since the repository was opened; nothing written".into(),
            ));
        }
        self.backend.write(FileKind::Config, "", &copy)?;
        Ok(true)
    }

    /// What reads found damaged and read from another copy since the last
    /// call, each once, for the command to warn of (a read that
    /// succeeds around damage says nothing itself): the blob, the damaged
    /// copy's pack and why, the copy read, and what mends the index.
    pub fn take_read_around(&self) -> Vec<ReadAround> {
        self.read_around
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// [`Repository::take_read_around`] as warnings, one per damaged pack:
    /// a pack that cannot be read at all (a FIFO in its place) made one
    /// line per blob of it.
    pub fn take_read_around_said(&self) -> Vec<String> {
        said_by_pack(self.take_read_around())
    }

    /// The cache, when one is in use.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_deref()
    }

    /// The packs the store lists, with their sizes. With a cache, its
    /// copies of tree packs the store no longer lists are dropped, but for
    /// those the index names (see [`Cache::retain_packs`]); an index that
    /// cannot be read spares them all.
    pub fn pack_sizes(&self) -> Result<Vec<(String, u64)>> {
        let listed = self.backend.list_sizes(FileKind::Pack)?;
        if let (Some(cache), Ok(index)) = (&self.cache, self.index()) {
            let names: Vec<String> = listed.iter().map(|(n, _)| n.clone()).collect();
            let named = index.named_packs();
            cache.retain_packs(&names, &|name| {
                PackId::from_hex(name).is_ok_and(|p| named.contains(&p))
            });
        }
        Ok(listed)
    }

    /// Writes a finished pack (commits a streamed one); a tree pack is
    /// also kept in the cache.
    pub fn store_pack(&self, pack: &mut pack::FinishedPack) -> Result<()> {
        let name = pack.id.to_hex();
        if let Some(sink) = pack.sink.take() {
            return sink.commit(&name);
        }
        self.backend.write(FileKind::Pack, &name, &pack.bytes)?;
        if let (Some(c), pack::BlobKind::Tree) = (&self.cache, pack.header.kind) {
            c.put(FileKind::Pack, &name, &pack.bytes);
        }
        Ok(())
    }

    /// Records the packs an interrupted operation already stored, so the
    /// next run does not upload their blobs again: writes an index table
    /// naming them, or, when the store cannot be reached, keeps the table
    /// in the cache for [`Repository::adopt_pending`]. Returns the number
    /// of packs recorded either way.
    pub fn salvage_index(&self, builder: IndexBuilder) -> usize {
        let packs = builder.pack_count();
        if packs == 0 {
            return 0;
        }
        let mut kept = true;
        for (id, bytes) in builder.finish(&self.key, self.config.index_version()) {
            let name = id.to_hex();
            kept &= self.backend.write(FileKind::Index, &name, &bytes).is_ok()
                || self
                    .cache
                    .as_ref()
                    .is_some_and(|c| c.put_pending(&name, &bytes).is_ok());
        }
        if kept {
            packs
        } else {
            0
        }
    }

    /// Uploads the index tables an interrupted run kept in the cache, once
    /// every pack they name is confirmed present in the store (packs
    /// first, index second, as always); tables naming a missing pack are
    /// dropped. Returns the number of packs made usable again. Call before
    /// the index is first used.
    pub fn adopt_pending(&self) -> Result<usize> {
        let Some(cache) = &self.cache else {
            return Ok(0);
        };
        let mut adopted = 0;
        for (name, bytes) in cache.pending() {
            let table = IndexId::from_hex(&name).and_then(|id| {
                let t = IndexTable::parse(id, crate::backend::Data::Owned(bytes.clone()))?;
                t.check(&self.key)?;
                Ok(t)
            });
            let Ok(table) = table else {
                cache.remove_pending(&name);
                continue;
            };
            let mut present = true;
            for n in 0..table.pack_count() {
                let (pack, _) = table.pack(n)?;
                match self.backend.size(FileKind::Pack, &pack.to_hex()) {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => present = false,
                    Err(e) => return Err(e),
                }
            }
            if present {
                self.backend.write(FileKind::Index, &name, &bytes)?;
                adopted += table.pack_count();
            }
            cache.remove_pending(&name);
        }
        Ok(adopted)
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// A shared handle on the backend.
    pub fn backend_arc(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// The master key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The name of the key file in `keys/` that gave the master key;
    /// empty when an exported key opened the repository.
    pub fn key_file(&self) -> &str {
        &self.key_file
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The index, mapped on first use (and again after
    /// [`Repository::reload_index`]).
    pub fn index(&self) -> Result<Arc<IndexSet>> {
        if let Some(i) = self.index.read().ok().and_then(|i| i.clone()) {
            return Ok(i);
        }
        let loaded = Arc::new(IndexSet::load(&*self.backend)?);
        let mut slot = self
            .index
            .write()
            .map_err(|_| Error::Invalid("a thread panicked while loading the index".into()))?;
        Ok(slot.get_or_insert(loaded).clone())
    }

    /// Forgets the mapped index, so its next use maps the tables as they
    /// are then: called after this repository writes or removes index
    /// tables (a backup, a compaction, gc), so that a `Repository` kept for
    /// several operations sees what the earlier ones stored. Holders of
    /// the old index keep a consistent view of it.
    pub fn reload_index(&self) {
        if let Ok(mut slot) = self.index.write() {
            *slot = None;
        }
    }

    /// Maps the index like [`Repository::index`], but leaves out tables
    /// that cannot be parsed instead of failing, and returns those with
    /// why (see [`IndexSet::load_lenient`]). Returns nothing when the
    /// index was already loaded, so call it before any other use.
    pub fn index_lenient(&self) -> Result<Vec<(IndexId, Error)>> {
        if self.index.read().map(|i| i.is_some()).unwrap_or(false) {
            return Ok(Vec::new());
        }
        let (loaded, damaged) = IndexSet::load_lenient(&*self.backend)?;
        if let Ok(mut slot) = self.index.write() {
            slot.get_or_insert(Arc::new(loaded));
        }
        Ok(damaged)
    }

    /// Maps the index leniently ([`Repository::index_lenient`]) for a
    /// command that can read around a table that cannot be parsed, and
    /// returns a warning for each one left out, naming it and `cairn
    /// repair index`, with what the command does about what only it
    /// indexes (`consequence`). For commands that only read (restore,
    /// `ls`, `cat`) and for backup, which then stores that data again;
    /// never for one that deletes (gc), which would take what only the
    /// table indexes for garbage.
    pub fn index_reading_around(&self, consequence: &str) -> Result<Vec<String>> {
        Ok(self
            .index_lenient()?
            .into_iter()
            .map(|(_, e)| {
                format!(
                    "{e}: left out, so what only it indexes {consequence}: `cairn repair \
                     index` rebuilds the index from the packs"
                )
            })
            .collect())
    }

    /// Where a blob is stored, or a not-found error naming it.
    pub fn locate(&self, id: &BlobId) -> Result<Location> {
        self.index()?.locate(id)
    }

    /// Where a blob read as `kind` is stored (see
    /// [`IndexSet::locate_kind`]), or a not-found error naming it.
    pub fn locate_kind(&self, id: &BlobId, kind: pack::BlobKind) -> Result<Location> {
        self.index()?.locate_kind(id, kind)
    }

    /// Reads, authenticates and decodes one blob.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        self.read_indexed(id, self.locate(id)?)
    }

    /// Reads, authenticates and decodes a tree blob: only the index
    /// tables of trees are searched for it.
    pub fn read_tree_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        self.read_indexed(id, self.locate_kind(id, pack::BlobKind::Tree)?)
    }

    /// Where else than in the packs `gone` (found missing by a read) the
    /// index places `id`, read as `kind`: a blob whose pack was lost may
    /// have been stored again (`repair snapshots` stores a tree it needs
    /// anew), and the entry naming the lost pack may be the one a lookup
    /// finds first. Asked only once a read found a pack missing, so reads
    /// that succeed cost nothing more.
    pub fn locate_elsewhere(
        &self,
        id: &BlobId,
        kind: pack::BlobKind,
        gone: &[PackId],
    ) -> Result<Option<Location>> {
        self.index()?
            .locate_kind_where(id, kind, &|p| !gone.contains(p))
    }

    /// `e`, from reading a blob where the index places it, naming the
    /// index's damage where a table fails its MAC (see
    /// [`IndexSet::damaged_tables`]): the blob's entry may be what is
    /// damaged, and the pack intact. Other errors pass as they are.
    pub fn blame_index(&self, e: Error) -> Error {
        let Error::Corrupt { what, detail } = e else {
            return e;
        };
        let damaged = match self.index() {
            Ok(index) => index.damaged_tables(&self.key).to_vec(),
            Err(_) => Vec::new(),
        };
        if damaged.is_empty() {
            return Error::Corrupt { what, detail };
        }
        Error::Corrupt {
            what,
            detail: format!(
                "{detail}; but {}, so the place it gives may be wrong and the pack intact: \
                 run `cairn repair index`, which rebuilds the index from the packs, and try again",
                damaged_tables_text(&damaged)
            ),
        }
    }

    /// Refuses to go on `doing` while a folder of the layout is gone: gc
    /// would take every pack for unused without `snapshots/`, every blob
    /// without `index/`; a backup would write its snapshot into a new,
    /// empty `snapshots/`, after which nothing would tell the folder was
    /// ever lost, and the next gc would delete every pack the lost
    /// snapshots used.
    pub fn require_whole_layout(&self, doing: &str) -> Result<()> {
        // No command takes anything of keys/ for gone: a repository opened
        // without it (with an exported key) only lacks the way in by
        // password, which opening says (and `verify` counts as damage).
        let mut missing = self.backend.missing_folders()?;
        missing.retain(|d| *d != FileKind::Key.dir());
        if missing.is_empty() {
            return Ok(());
        }
        let folders: Vec<String> = missing.iter().map(|d| format!("{d}/")).collect();
        let one = folders.len() == 1;
        // The index is the one folder the rest of the repository holds
        // again: each pack's header lists its blobs.
        let rebuilt = if missing.contains(&FileKind::Index.dir()) {
            "; with no copy of index/, `cairn repair index` rebuilds it from the packs"
        } else {
            ""
        };
        Err(Error::Invalid(format!(
            "refusing to {doing}: the repository's folder{} {} {} missing (left out by a copy \
             or a sync?), and {doing} would take what {} held for gone; put {} back from a \
             copy of the repository{rebuilt}",
            if one { "" } else { "s" },
            folders.join(", "),
            if one { "is" } else { "are" },
            if one { "it" } else { "they" },
            if one { "it" } else { "them" },
        )))
    }

    /// Refuses to go on `doing` (a command that decides by the index's
    /// entries what to delete or to drop) while a table fails its MAC:
    /// its entries may place blobs in the wrong packs, so that packs in
    /// use look unused, and blobs intact look damaged.
    pub fn require_sound_index(&self, doing: &str) -> Result<()> {
        let index = self.index()?;
        let damaged = index.damaged_tables(&self.key);
        if damaged.is_empty() {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "refusing to {doing}: {}, and entries there may place blobs in the wrong packs; \
             `cairn repair index` rebuilds the index from the packs",
            damaged_tables_text(damaged)
        )))
    }

    /// Reads `id` at `loc`, or, if that pack is missing or holds it
    /// damaged, where else the index places it (see
    /// [`Repository::locate_elsewhere`]): a blob stored twice, by backups
    /// storing the same new data side by side, or again after its pack
    /// was lost. A copy read around damage is noted for
    /// [`Repository::take_read_around`]. When no copy can be read, the
    /// error is the first damaged copy's, else names the first pack found
    /// missing.
    fn read_indexed(&self, id: &BlobId, mut loc: Location) -> Result<Vec<u8>> {
        let mut gone = Vec::new();
        // The first copy that failed, and why.
        let mut failed: Option<(PackId, Error)> = None;
        loop {
            let e = match self.read_located(id, loc) {
                Ok(plain) => {
                    if let Some((pack, e)) = failed {
                        self.note_read_around(id, &pack, &e, &loc.pack);
                    }
                    return Ok(plain);
                }
                Err(e) if e.is_not_found() => None,
                // An outage (retries spent) is the store's, not this
                // copy's: every other copy would wait it out again.
                Err(e) if e.is_transient() => return Err(self.blame_index(e)),
                // Damaged, or a pack that cannot be read at all (a file
                // this user may not read, a disk's read error, a folder in
                // its place): the blob from wherever else it is indexed,
                // as a restore does for data. Until December 2026 only
                // damage was read around, and `ls` or a restore failed
                // on a tree whose pack could not be read though another
                // copy could.
                Err(e) => Some(e),
            };
            gone.push(loc.pack);
            if let Some(e) = e {
                failed.get_or_insert((loc.pack, e));
            }
            match self.locate_elsewhere(id, loc.kind, &gone)? {
                Some(next) => loc = next,
                None => {
                    return Err(match failed {
                        Some((_, e)) => self.blame_index(e),
                        // The index names the pack, so a missing one is
                        // damage to the index or a deleted pack: say what
                        // tells which, and what mends the index.
                        None => missing_pack(id, &gone[0]),
                    });
                }
            }
        }
    }

    /// Notes that blob `id`, damaged in pack `damaged` or not read there
    /// (`e`), was read from its copy in pack `read` (see
    /// [`Repository::take_read_around`]).
    fn note_read_around(&self, id: &BlobId, damaged: &PackId, e: &Error, read: &PackId) {
        let (why, unread) = match e {
            Error::Corrupt { detail, .. } => (detail.clone(), false),
            e => (e.to_string(), true),
        };
        let around = ReadAround {
            id: *id,
            damaged: *damaged,
            why,
            read: *read,
            unread,
        };
        if let Ok(mut r) = self.read_around.lock() {
            if !r.contains(&around) {
                r.push(around);
            }
        }
    }

    /// Reads `id` at `loc`; a missing pack is a not-found error.
    pub(crate) fn read_located(&self, id: &BlobId, loc: Location) -> Result<Vec<u8>> {
        let what = format!("blob {} in pack {}", id.short(), loc.pack.short());
        if let (Some(cache), pack::BlobKind::Tree) = (&self.cache, loc.kind) {
            let name = loc.pack.to_hex();
            let whole = cache.tree_pack(
                &name,
                || self.backend.size(FileKind::Pack, &name),
                || self.backend.read(FileKind::Pack, &name),
            )?;
            let end = loc.offset as usize + loc.length as usize;
            let sealed = whole
                .get(loc.offset as usize..end)
                .ok_or_else(|| Error::corrupt(&what, "lies past the end of its pack"))?;
            return pack::open_blob(&self.key, id, sealed, loc.raw_length, &what);
        }
        self.read_located_in_store(id, loc)
    }

    /// Reads `id` at `loc` from the store itself, never from the cache (a
    /// tree pack the cache holds may be intact where the store's copy is
    /// not): for a command about to delete another copy on the strength
    /// of this one (gc). A missing pack is a not-found error.
    pub(crate) fn read_located_in_store(&self, id: &BlobId, loc: Location) -> Result<Vec<u8>> {
        let what = format!("blob {} in pack {}", id.short(), loc.pack.short());
        let read = || {
            self.backend.read_range(
                FileKind::Pack,
                &loc.pack.to_hex(),
                u64::from(loc.offset),
                loc.length as usize,
            )
        };
        let open = || pack::open_blob(&self.key, id, &read()?, loc.raw_length, &what);
        // Read again before the blob is held damaged.
        crate::backend::retry::reread(
            self.backend.prefers_ranges(),
            open(),
            |e| matches!(e, Error::Corrupt { .. }),
            open,
        )
    }

    /// Reads and decodes a tree of nodes (a directory stored in parts is
    /// read with [`Repository::dir_nodes`]).
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_tree_blob(id)?;
        Tree::decode(&bytes, &format!("tree {}", id.short()))
    }

    /// What `path` (`/`-separated, relative to the root tree `root`) names
    /// in a snapshot: a directory's nodes and its path, or, for anything
    /// else, that one node and the path of its directory. For a path
    /// whose names need not be UTF-8, see [`Repository::tree_at_bytes`].
    pub fn tree_at(&self, root: &BlobId, path: &str) -> Result<(DirNodes<'_>, String)> {
        let (dir, at) = self.tree_at_bytes(root, path.as_bytes())?;
        // Made of `path`'s own components: UTF-8 as it is.
        Ok((dir, String::from_utf8_lossy(&at).into_owned()))
    }

    /// [`Repository::tree_at`] of a path of bytes, as names are: each
    /// component is compared with the names byte for byte, UTF-8 or not.
    pub fn tree_at_bytes(&self, root: &BlobId, path: &[u8]) -> Result<(DirNodes<'_>, Vec<u8>)> {
        let mut dir = self.dir_nodes(root)?;
        let mut at = Vec::new();
        let comps: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        // `a/f/` (or `a/f/.`) names a folder, as it does to a shell: a
        // file there is not what was asked for.
        let folder_asked = path.ends_with(b"/") || path.ends_with(b"/.");
        let named = |at: &[u8], comp: &[u8]| {
            use crate::escape::Show;
            format!("{}/{}", at.shown(), comp.shown())
        };
        for (i, comp) in comps.iter().enumerate() {
            let node = dir
                .find(|n| n.as_ref().map_or(true, |n| n.name.0 == *comp))
                .ok_or_else(|| {
                    // The path asked for too, where a folder on the way to
                    // it is what is missing.
                    let way = if i + 1 < comps.len() {
                        format!(", on the way to {},", crate::escape::Show::shown(path))
                    } else {
                        String::new()
                    };
                    Error::NotFound(format!("path {} in the snapshot{way}", named(&at, comp)))
                })??;
            match &node.kind {
                NodeKind::Dir { subtree } => {
                    dir = self.dir_nodes(subtree)?;
                    at.push(b'/');
                    at.extend_from_slice(comp);
                }
                _ if i + 1 == comps.len() && !folder_asked => {
                    let one = EncodedTree::from_tree(&Tree::new(vec![node]));
                    return Ok((DirNodes::of_tree(self, one), at));
                }
                _ => {
                    let what = match &node.kind {
                        NodeKind::File { .. } => "a file",
                        NodeKind::Symlink { .. } => "a symlink",
                        _ => "a special file",
                    };
                    let beneath = if i + 1 == comps.len() {
                        "the path asked for ends in `/`, which names a folder"
                    } else {
                        "nothing lies beneath it"
                    };
                    return Err(Error::Invalid(format!(
                        "{} in the snapshot is {what}, not a folder: {beneath} (asked for {})",
                        named(&at, comp),
                        crate::escape::Show::shown(path)
                    )));
                }
            }
        }
        Ok((dir, at))
    }

    /// Every snapshot file: those that decode, oldest first, and apart
    /// those that do not (see [`snapshot::Snapshots`]).
    pub fn snapshots(&self) -> Result<snapshot::Snapshots> {
        snapshot::load_all(&*self.backend, &self.key)
    }
}

/// How [`missing_pack`]'s error goes on after the pack's id, which a
/// restore recognises to sum such failures up once, with their remedy.
pub(crate) const PACK_NOT_THERE: &str = ", which does not exist (a damaged index or a deleted \
     pack: `cairn verify` tells which, `cairn repair index` rebuilds the index from the packs)";

/// The error for a blob whose pack, as the index names it, does not exist:
/// damage to the index or a deleted pack, with what tells which and what
/// mends the index.
pub fn missing_pack(id: &BlobId, pack: &PackId) -> Error {
    Error::corrupt(
        "the repository",
        format!(
            "the index puts blob {} in pack {pack}{PACK_NOT_THERE}",
            id.short()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blobs read around one damaged pack are said in one line, with the
    /// count, the first, and the packs read instead; one alone as itself.
    #[test]
    fn read_arounds_are_said_once_per_damaged_pack() {
        let pack = |b: u8| PackId([b; 32]);
        let around = |id: u8, damaged: u8, read: u8| ReadAround {
            id: BlobId([id; 32]),
            damaged: pack(damaged),
            why: "authentication failed".into(),
            read: pack(read),
            unread: false,
        };
        let unread = |id: u8, refused: u8, read: u8| ReadAround {
            why: "Permission denied".into(),
            unread: true,
            ..around(id, refused, read)
        };
        let said = said_by_pack(vec![
            around(1, 0xaa, 0xbb),
            around(2, 0xaa, 0xcc),
            around(3, 0xdd, 0xbb),
            unread(5, 0xee, 0xbb),
            around(4, 0xaa, 0xbb),
            unread(6, 0xee, 0xcc),
            unread(7, 0xdd, 0xcc),
        ]);
        assert_eq!(said.len(), 4, "{said:?}");
        assert!(
            said[0].starts_with("3 blobs in pack aaaaaaaa are damaged (first: blob 01010101")
                && said[0].contains("other copies in pack(s) bbbbbbbb, cccccccc"),
            "{said:?}"
        );
        assert_eq!(said[1], around(3, 0xdd, 0xbb).to_string());
        // A pack that could not be read is not called damaged, and no
        // repair is advised for it.
        assert_eq!(
            said[2],
            "pack eeeeeeee could not be read (Permission denied); 2 of its blobs were read \
             from their other copies in pack(s) bbbbbbbb, cccccccc"
        );
        assert_eq!(
            said[3],
            "blob 07070707: pack dddddddd could not be read (Permission denied); read from its \
             other copy in pack cccccccc"
        );
    }
}
