//! Retrying transient backend failures with exponential backoff.
//!
//! [`RetryBackend`] wraps any backend. An operation failing with a
//! transient error ([`Error::is_transient`]: 5xx answers, timeouts,
//! refused or reset connections) is tried again after a delay that doubles
//! from [`RetryPolicy::base`] up to [`RetryPolicy::max_delay`], with up to
//! 50% random jitter so that parallel writers do not retry in lockstep.
//! Permanent errors (not found, access denied, corrupt data) return at
//! once. Every operation of the contract is idempotent (writes put the
//! same bytes under the same name, removing twice is harmless), so
//! retrying never changes the outcome.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Backend, Data, FileKind};
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name};

/// How often and how patiently to retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included; 1 disables retries.
    pub attempts: u32,
    /// Delay before the first retry.
    pub base: Duration,
    /// Largest delay between two tries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Ten tries over about a minute and a half.
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `n` (1-based), without jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max_delay)
    }
}

/// `data` as the test knob [`crate::fault::garble_read`] leaves it (a map
/// garbled is copied first).
fn garbled(kind: FileKind, data: Data) -> Data {
    if !crate::fault::garbling() {
        return data;
    }
    let mut bytes = data.to_vec();
    crate::fault::garble_read(kind.dir(), &mut bytes);
    Data::Owned(bytes)
}

/// Tries in all of a file read whole whose bytes do not hash to its name
/// (see [`RetryBackend::read_checked`]).
pub const REREADS: u32 = 3;

/// `first`, or, where the store is remote (`remote`) and `first` failed
/// as `again_if` says, what `again` gives, up to [`REREADS`] tries in
/// all: the first that succeeds, else the last failure. Bytes changed on
/// their way from a remote store (over plain HTTP, through a faulty
/// proxy: a download carries no checksum cairn can check) read as damage,
/// and would be reported, and acted on, as damage in the store.
pub fn reread<T>(
    remote: bool,
    first: Result<T>,
    again_if: impl Fn(&Error) -> bool,
    mut again: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut outcome = first;
    if remote {
        for _ in 1..REREADS {
            match &outcome {
                Err(e) if again_if(e) => outcome = again(),
                _ => break,
            }
        }
    }
    outcome
}

/// Called before each retry with the error, the retry number and the delay.
pub type RetryHook = Box<dyn Fn(&Error, u32, Duration) + Send + Sync>;

/// A backend that retries transient failures of another. See the module docs.
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    policy: RetryPolicy,
    hook: Option<RetryHook>,
}

impl RetryBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>, policy: RetryPolicy) -> RetryBackend {
        RetryBackend {
            inner,
            policy,
            hook: None,
        }
    }

    /// Calls `hook` before every retry (to tell the user).
    pub fn with_hook(mut self, hook: RetryHook) -> RetryBackend {
        self.hook = Some(hook);
        self
    }

    /// A file read whole by `read`, checked where its name is the BLAKE3
    /// hash of its bytes (every file but the config and its copy): bytes
    /// that do not hash to it are read again, up to [`REREADS`] tries in
    /// all, as an answer changed on its way (over plain HTTP, through a
    /// faulty proxy: a download carries no checksum cairn can check)
    /// would otherwise be reported, and acted on, as damage in the store.
    /// The last bytes read are returned whatever they hash to: the
    /// callers check them and tell damage that stays.
    fn read_checked(&self, name: &str, read: impl Fn() -> Result<Data>) -> Result<Data> {
        let mut data = self.retry(&read)?;
        if !is_hex_name(name) {
            return Ok(data);
        }
        for _ in 1..REREADS {
            if hex::encode(file_hash(&data)) == name {
                break;
            }
            data = self.retry(&read)?;
        }
        Ok(data)
    }

    fn retry<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut n = 0;
        loop {
            match f() {
                Err(e) if e.is_transient() && n + 1 < self.policy.attempts => {
                    n += 1;
                    let base = self.policy.delay(n);
                    let jitter = u64::from(crate::crypto::random_bytes::<1>()[0]);
                    let delay = base + base.mul_f64(jitter as f64 / 512.0);
                    if let Some(h) = &self.hook {
                        h(&e, n, delay);
                    }
                    std::thread::sleep(delay);
                }
                other => return other,
            }
        }
    }
}

impl Backend for RetryBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn exists(&self) -> Result<bool> {
        self.retry(|| self.inner.exists())
    }
    fn create(&self) -> Result<()> {
        self.retry(|| self.inner.create())
    }
    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        self.retry(|| self.inner.list(kind))
    }
    fn list_sizes(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        self.retry(|| self.inner.list_sizes(kind))
    }
    fn misplaced_packs(&self) -> Result<Vec<(String, String)>> {
        self.inner.misplaced_packs()
    }
    fn place_pack(&self, place: &str) -> Result<bool> {
        self.inner.place_pack(place)
    }
    fn exchange_pack(&self, place: &str) -> Result<bool> {
        self.inner.exchange_pack(place)
    }
    fn missing_folders(&self) -> Result<Vec<&'static str>> {
        self.inner.missing_folders()
    }
    fn strays(&self, kind: FileKind) -> Result<Vec<Vec<u8>>> {
        self.retry(|| self.inner.strays(kind))
    }
    fn not_files(&self, kind: FileKind) -> Result<Vec<(String, &'static str)>> {
        self.retry(|| self.inner.not_files(kind))
    }
    fn list_times(&self, kind: FileKind) -> Result<Vec<(String, Option<SystemTime>)>> {
        self.retry(|| self.inner.list_times(kind))
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.retry(|| self.inner.size(kind, name))
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Data> {
        self.read_checked(name, || {
            self.inner.read(kind, name).map(|d| garbled(kind, d))
        })
    }
    fn read_listed(&self, kind: FileKind, name: &str, size: u64) -> Result<Data> {
        self.read_checked(name, || {
            self.inner
                .read_listed(kind, name, size)
                .map(|d| garbled(kind, d))
        })
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.retry(|| {
            let mut bytes = self.inner.read_range(kind, name, offset, len)?;
            crate::fault::garble_read(kind.dir(), &mut bytes);
            Ok(bytes)
        })
    }
    fn write(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        self.retry(|| self.inner.write(kind, name, bytes))
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.retry(|| self.inner.remove(kind, name))
    }
    fn settle_removals(&self) -> Result<()> {
        self.retry(|| self.inner.settle_removals())
    }
    fn remove_leftovers(
        &self,
        before: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<super::Leftovers> {
        self.retry(|| self.inner.remove_leftovers(before, dry_run))
    }
    fn prefetch(&self, kind: FileKind, name: &str, range: std::ops::Range<u64>) {
        self.inner.prefetch(kind, name, range)
    }
    fn prefers_ranges(&self) -> bool {
        self.inner.prefers_ranges()
    }
    fn local_folder(&self) -> Option<&std::path::Path> {
        self.inner.local_folder()
    }
    fn free_space(&self) -> Result<Option<u64>> {
        self.inner.free_space()
    }
    fn free_inodes(&self) -> Result<Option<u64>> {
        self.inner.free_inodes()
    }
    fn reserve(&self) -> Result<Option<u64>> {
        self.inner.reserve()
    }
    fn set_reserve(&self, bytes: u64) -> Result<()> {
        self.inner.set_reserve(bytes)
    }
    fn probe(&self) -> Result<Vec<String>> {
        self.retry(|| self.inner.probe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::MemBackend;

    #[test]
    fn reread_tries_again_only_where_asked_and_remote() {
        let bad = || Err::<u32, _>(Error::corrupt("blob", "does not authenticate"));
        let corrupt = |e: &Error| matches!(e, Error::Corrupt { .. });
        let tries = std::cell::Cell::new(0);
        let count = |r: Result<u32>| {
            tries.set(tries.get() + 1);
            r
        };
        // Damage that stays: REREADS tries in all, the last error kept.
        assert!(reread(true, bad(), corrupt, || count(bad())).is_err());
        assert_eq!(tries.replace(0), REREADS - 1);
        // The second read good.
        assert_eq!(reread(true, bad(), corrupt, || count(Ok(7))).unwrap(), 7);
        assert_eq!(tries.replace(0), 1);
        // Local stores, successes, and errors not asked about: no reread.
        assert!(reread(false, bad(), corrupt, || count(Ok(7))).is_err());
        assert_eq!(reread(true, Ok(1), corrupt, || count(Ok(7))).unwrap(), 1);
        let gone = || Err::<u32, _>(Error::NotFound("pack".into()));
        assert!(reread(true, gone(), corrupt, || count(Ok(7))).is_err());
        assert_eq!(tries.get(), 0);
    }

    fn fast(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_millis(250));
        assert_eq!(p.delay(2), Duration::from_millis(500));
        assert_eq!(p.delay(40), Duration::from_secs(20));
    }

    #[test]
    fn rides_out_transient_failures() {
        let mem = Arc::new(MemBackend::default());
        mem.fail_next(3, true);
        let b = RetryBackend::new(mem.clone(), fast(5));
        b.write(FileKind::Snapshot, "aa", b"x").unwrap();
        assert_eq!(&*b.read(FileKind::Snapshot, "aa").unwrap(), b"x");
    }

    #[test]
    fn gives_up_after_the_last_attempt() {
        let mem = Arc::new(MemBackend::default());
        mem.fail_next(10, true);
        let b = RetryBackend::new(mem.clone(), fast(3));
        let e = b.write(FileKind::Snapshot, "aa", b"x").unwrap_err();
        assert!(e.is_transient());
        assert_eq!(mem.failures_left(), 7);
    }

    #[test]
    fn a_file_read_whole_that_does_not_hash_to_its_name_is_read_again() {
        let mem = Arc::new(MemBackend::default());
        let b = RetryBackend::new(mem.clone(), fast(5));
        let name = hex::encode(file_hash(b"snapshot bytes"));
        b.write(FileKind::Snapshot, &name, b"snapshot bytes")
            .unwrap();
        mem.garble_next_reads(REREADS as u64 - 1);
        assert_eq!(
            &*b.read(FileKind::Snapshot, &name).unwrap(),
            b"snapshot bytes"
        );
        // Changed on every try: handed back as read, for the caller to
        // tell as damage.
        mem.garble_next_reads(REREADS as u64);
        assert_eq!(
            &*b.read(FileKind::Snapshot, &name).unwrap(),
            b"Snapshot bytes"
        );
        // A name that is no hash (the config) is not read again.
        b.write(FileKind::Config, "config", b"config").unwrap();
        mem.garble_next_reads(1);
        assert_eq!(&*b.read(FileKind::Config, "config").unwrap(), b"Config");
    }

    #[test]
    fn never_retries_permanent_errors() {
        let mem = Arc::new(MemBackend::default());
        mem.fail_next(2, false);
        let b = RetryBackend::new(mem.clone(), fast(5));
        assert!(!b
            .write(FileKind::Snapshot, "aa", b"x")
            .unwrap_err()
            .is_transient());
        assert_eq!(mem.failures_left(), 1);
        let e = b.read(FileKind::Snapshot, "zz");
        assert!(e.is_err());
        assert!(b.read(FileKind::Snapshot, "zz").unwrap_err().is_not_found());
    }
}
