//! An in-memory backend, for tests: it keeps the contract (whole-object
//! writes, typed errors) and can be told to fail the next operations.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use super::{Backend, Data, FileKind};
use crate::backend::local::kind_name;
use crate::error::{Error, Result};

type Files = BTreeMap<(String, String), Vec<u8>>;

/// Objects in a map. See the module docs.
#[derive(Default)]
pub struct MemBackend {
    files: Mutex<Files>,
    /// When each file was last written, by the (test's) store clock.
    written: Mutex<BTreeMap<(String, String), SystemTime>>,
    created: AtomicBool,
    fail: AtomicU64,
    fail_transient: AtomicBool,
    /// Writes and removals fail as on a read-only filesystem.
    read_only: AtomicBool,
    /// Removals fail with "permission denied" (append-only credentials).
    no_removal: AtomicBool,
    /// Reads to come whose answer has a byte changed (see
    /// [`MemBackend::garble_next_reads`]).
    garble: AtomicU64,
}

impl MemBackend {
    /// Makes the next `n` operations fail, transiently or for good.
    pub fn fail_next(&self, n: u64, transient: bool) {
        self.fail_transient.store(transient, Ordering::SeqCst);
        self.fail.store(n, Ordering::SeqCst);
    }

    /// Sets the time the store says `name` was last written, as a store
    /// whose clock differs from the host's would.
    pub fn set_written(&self, kind: FileKind, name: &str, time: SystemTime) {
        if let Ok(mut w) = self.written.lock() {
            w.insert(Self::key(kind, name), time);
        }
    }

    /// Makes every write and removal fail with EROFS, or stop failing.
    pub fn set_read_only(&self, on: bool) {
        self.read_only.store(on, Ordering::SeqCst);
    }

    /// Makes every removal fail with EACCES, or stop failing.
    pub fn set_no_removal(&self, on: bool) {
        self.no_removal.store(on, Ordering::SeqCst);
    }

    /// Changes the first byte of what the next `n` reads (whole or by
    /// range) hand back, as an answer changed on its way would be; the
    /// stored bytes stay as they are.
    pub fn garble_next_reads(&self, n: u64) {
        self.garble.store(n, Ordering::SeqCst);
    }

    fn garbled(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        let due = self
            .garble
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if due {
            if let Some(b) = bytes.first_mut() {
                *b ^= 0x20;
            }
        }
        bytes
    }

    /// How many injected failures are still to come.
    pub fn failures_left(&self) -> u64 {
        self.fail.load(Ordering::SeqCst)
    }

    fn check(&self, op: &str, object: &str) -> Result<()> {
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            return Err(Error::Backend {
                op: op.into(),
                object: object.into(),
                endpoint: "memory".into(),
                detail: "injected failure".into(),
                transient: self.fail_transient.load(Ordering::SeqCst),
            });
        }
        Ok(())
    }

    fn files(&self) -> Result<MutexGuard<'_, Files>> {
        self.files
            .lock()
            .map_err(|_| Error::Invalid("memory backend poisoned".into()))
    }

    fn key(kind: FileKind, name: &str) -> (String, String) {
        (kind.dir().to_string(), name.to_string())
    }

    fn what(kind: FileKind, name: &str) -> String {
        format!("{} {name}", kind_name(kind))
    }
}

impl Backend for MemBackend {
    fn location(&self) -> String {
        "memory".into()
    }
    fn exists(&self) -> Result<bool> {
        self.check("stat", "config")?;
        Ok(self.files()?.contains_key(&Self::key(FileKind::Config, "")))
    }
    fn create(&self) -> Result<()> {
        self.check("create", "memory")?;
        self.created.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        self.check("list", kind.dir())?;
        if kind == FileKind::Config {
            return Ok(Vec::new());
        }
        Ok(self
            .files()?
            .keys()
            .filter(|(d, n)| d == kind.dir() && !n.starts_with('.'))
            .map(|(_, n)| n.clone())
            .collect())
    }
    fn list_sizes(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        self.check("list", kind.dir())?;
        if kind == FileKind::Config {
            return Ok(Vec::new());
        }
        Ok(self
            .files()?
            .iter()
            .filter(|((d, n), _)| d == kind.dir() && !n.starts_with('.'))
            .map(|((_, n), v)| (n.clone(), v.len() as u64))
            .collect())
    }
    fn list_times(&self, kind: FileKind) -> Result<Vec<(String, Option<SystemTime>)>> {
        let names = self.list(kind)?;
        let written = self
            .written
            .lock()
            .map_err(|_| Error::Invalid("memory backend poisoned".into()))?;
        Ok(names
            .into_iter()
            .map(|n| {
                let time = written.get(&Self::key(kind, &n)).copied();
                (n, time)
            })
            .collect())
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.check("stat", &Self::what(kind, name))?;
        self.files()?
            .get(&Self::key(kind, name))
            .map(|v| v.len() as u64)
            .ok_or_else(|| Error::NotFound(Self::what(kind, name)))
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Data> {
        self.check("read", &Self::what(kind, name))?;
        self.files()?
            .get(&Self::key(kind, name))
            .map(|v| Data::Owned(self.garbled(v.clone())))
            .ok_or_else(|| Error::NotFound(Self::what(kind, name)))
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.check("read range of", &Self::what(kind, name))?;
        let files = self.files()?;
        let v = files
            .get(&Self::key(kind, name))
            .ok_or_else(|| Error::NotFound(Self::what(kind, name)))?;
        usize::try_from(offset)
            .ok()
            .and_then(|o| v.get(o..o.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                Error::corrupt(
                    Self::what(kind, name),
                    format!("truncated: wanted {len} bytes at offset {offset}"),
                )
            })
    }
    fn write(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        self.check("write", &Self::what(kind, name))?;
        if self.read_only.load(Ordering::SeqCst) {
            return Err(Error::io(
                format_args!("write {}", Self::what(kind, name)),
                std::io::Error::from_raw_os_error(libc::EROFS),
            ));
        }
        self.files()?.insert(Self::key(kind, name), bytes.to_vec());
        self.set_written(kind, name, SystemTime::now());
        Ok(())
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.check("remove", &Self::what(kind, name))?;
        for (on, errno) in [
            (&self.read_only, libc::EROFS),
            (&self.no_removal, libc::EACCES),
        ] {
            if on.load(Ordering::SeqCst) {
                return Err(Error::io(
                    format_args!("remove {}", Self::what(kind, name)),
                    std::io::Error::from_raw_os_error(errno),
                ));
            }
        }
        self.files()?.remove(&Self::key(kind, name));
        if let Ok(mut w) = self.written.lock() {
            w.remove(&Self::key(kind, name));
        }
        Ok(())
    }
    fn settle_removals(&self) -> Result<()> {
        Ok(())
    }
}
