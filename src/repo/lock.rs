//! Repository locks.
//!
//! Writers that only add (backup) take *shared* locks and run side by
//! side; writers that delete (gc, forget) take an *exclusive* lock. A lock
//! is a file `locks/<id>` holding a sealed [`LockInfo`]. To take a lock a
//! process writes its lock file, then lists the others: if any conflicts and
//! is not stale, it removes its own and waits or fails. Two processes racing
//! for conflicting locks both see each other and both back off; neither
//! needs conditional writes from the backend.
//!
//! A lock is stale when its process is gone (same host) or it has not been
//! refreshed for [`STALE_AFTER`]. Held locks are refreshed every
//! [`REFRESH_EVERY`] by a background thread, which replaces the lock file.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileKind};
use crate::codec;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name};

const MAGIC: &[u8; 8] = b"CAIRNLCK";
/// Format version of lock files.
pub const VERSION: u32 = 1;
/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a held lock is refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// What a lock file says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Version of this structure.
    pub version: u32,
    /// Host holding the lock.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Last refresh, ns since the epoch.
    pub time_ns: i64,
    /// Exclusive (gc, forget) or shared (backup).
    pub exclusive: bool,
    /// The command holding it.
    pub command: String,
}

impl LockInfo {
    fn encode(&self, key: &MasterKey) -> Vec<u8> {
        let mut out = codec::header(MAGIC, VERSION);
        let aad = out.clone();
        key.seal_into(&codec::encode(self), &aad, &mut out);
        out
    }

    /// Decodes a lock file.
    pub fn decode(bytes: &[u8], key: &MasterKey) -> Result<LockInfo> {
        codec::check_header(bytes, MAGIC, VERSION, "lock")?;
        let plain = key.open(&bytes[12..], &bytes[..12], "lock")?;
        codec::decode(&plain, "lock")
    }

    /// Whether the lock no longer protects anything.
    pub fn is_stale(&self, this_host: &str) -> bool {
        let age = crate::now_ns().saturating_sub(self.time_ns);
        if age > STALE_AFTER.as_nanos() as i64 {
            return true;
        }
        self.host == this_host && !process_alive(self.pid)
    }

    /// One line describing the holder.
    pub fn describe(&self) -> String {
        format!(
            "{} lock held by `{}` (pid {} on {}) since {}",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.command,
            self.pid,
            self.host,
            crate::format_time(self.time_ns)
        )
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A held lock; released on drop.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<thread::JoinHandle<()>>,
}

fn write_lock(backend: &dyn Backend, key: &MasterKey, info: &LockInfo) -> Result<String> {
    let bytes = info.encode(key);
    let name = hex::encode(file_hash(&bytes));
    backend.write(FileKind::Lock, &name, &bytes)?;
    Ok(name)
}

/// Every lock in the repository with its name; undecodable ones are skipped.
pub fn list(backend: &dyn Backend, key: &MasterKey) -> Result<Vec<(String, LockInfo)>> {
    let mut out = Vec::new();
    for name in backend.list(FileKind::Lock)? {
        if !is_hex_name(&name) {
            continue;
        }
        match backend.read(FileKind::Lock, &name) {
            Ok(bytes) => {
                if let Ok(info) = LockInfo::decode(&bytes, key) {
                    out.push((name, info));
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Takes a lock, waiting up to `wait` for conflicting holders to finish.
pub fn acquire(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    exclusive: bool,
    command: &str,
    wait: Duration,
) -> Result<LockGuard> {
    let host = crate::hostname();
    let info = |now| LockInfo {
        version: VERSION,
        host: host.clone(),
        pid: std::process::id(),
        time_ns: now,
        exclusive,
        command: command.to_string(),
    };
    let deadline = Instant::now() + wait;
    let mut announced = false;
    loop {
        let mine = write_lock(&*backend, key, &info(crate::now_ns()))?;
        let conflict = list(&*backend, key)?.into_iter().find(|(name, other)| {
            *name != mine && (exclusive || other.exclusive) && !other.is_stale(&host)
        });
        let Some((_, holder)) = conflict else {
            let name = Arc::new(Mutex::new(mine));
            let (stop, stopped) = mpsc::channel::<()>();
            let (b, n, k, i) = (backend.clone(), name.clone(), key.clone(), info(0));
            let refresher = thread::spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH_EVERY)
                {
                    let fresh = LockInfo {
                        time_ns: crate::now_ns(),
                        ..i.clone()
                    };
                    if let Ok(new_name) = write_lock(&*b, &k, &fresh) {
                        let Ok(mut cur) = n.lock() else { return };
                        let old = std::mem::replace(&mut *cur, new_name);
                        let _ = b.remove(FileKind::Lock, &old);
                    }
                }
            });
            return Ok(LockGuard {
                backend,
                name,
                stop: Some(stop),
                refresher: Some(refresher),
            });
        };
        backend.remove(FileKind::Lock, &mine)?;
        if Instant::now() >= deadline {
            return Err(Error::Locked(format!(
                "{} (wait with --lock-wait, or remove stale locks with `cairn unlock`)",
                holder.describe()
            )));
        }
        if !announced {
            eprintln!("waiting for the repository: {}", holder.describe());
            announced = true;
        }
        thread::sleep(
            Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        if let Ok(name) = self.name.lock() {
            let _ = self.backend.remove(FileKind::Lock, &name);
        }
    }
}

/// Removes stale locks (all locks with `force`); returns what was removed.
pub fn remove_locks(backend: &dyn Backend, key: &MasterKey, force: bool) -> Result<Vec<LockInfo>> {
    let host = crate::hostname();
    let mut removed = Vec::new();
    for (name, info) in list(backend, key)? {
        if force || info.is_stale(&host) {
            backend.remove(FileKind::Lock, &name)?;
            removed.push(info);
        }
    }
    Ok(removed)
}
