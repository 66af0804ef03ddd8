//! Repository locks.
//!
//! Writers that only add (backup) and readers (restore, verify, `ls`,
//! `cat`: see [`acquire_reader`]) take *shared* locks and run side by
//! side; writers that delete (gc, forget) take an *exclusive* lock. A lock
//! is a file `locks/<id>` holding a sealed [`LockInfo`]. To take a lock a
//! process writes its lock file, then lists the others: if any conflicts and
//! is not stale, it removes its own and waits or fails. Two processes racing
//! for conflicting locks both see each other and both back off; neither
//! needs conditional writes from the backend.
//!
//! A lock is stale when it has not been refreshed for [`STALE_AFTER`], or
//! when its process is gone and the reader can tell.
//!
//! Its age is judged by two clocks, and must pass [`STALE_AFTER`] by both:
//! the time in the lock (the holder's clock, read against the reader's)
//! and the store's own clock, the time the store says it wrote the lock
//! file against the time it says it wrote the reader's (a directory's
//! mtimes, an S3 listing's `LastModified`; [`Backend::list_times`]). So a
//! holder whose clock lags cannot have its live lock taken over early,
//! nor can a reader whose clock runs ahead; a wrong clock at most delays
//! taking over a lock that really is stale. A store that gives no times
//! leaves the lock's own time to decide.
//!
//! For the dead-pid rule, only a reader in the
//! lock's own pid namespace, on the same boot of the same host, can ask the
//! kernel about the lock's pid. The host name alone does not tell that: a
//! container run with the host's network (`docker run --network host`, a
//! Kubernetes hostNetwork pod) and cloned machines share a host name, not
//! their pids, and there a live holder's pid looks dead. So a lock records
//! its [`PidNamespace`] (the namespace's inode and the kernel's boot id),
//! and the dead-pid rule applies only when that matches the reader's own;
//! a lock without it (an older cairn's, or one written where `/proc` does
//! not tell), or with another, is stale by age alone. `cairn unlock`
//! follows the same rule, and a command that takes a lock removes the
//! locks of dead processes the rule finds, before a new process given
//! the same pid could make one hold again. Held locks are refreshed every
//! [`REFRESH_EVERY`] by a background thread, which replaces the lock file.
//!
//! A command taking a lock removes the stale locks that would conflict
//! with its own, rather than pass over them, and then waits [`SETTLE`]
//! before it goes on (see [`clear_the_way`]): a lock stale by its age may
//! still have a holder (a host whose clock lags, on a store whose file
//! times come from the writer's clock), and only a lock file found gone
//! stops it.
//!
//! Others may act on a stale lock (gc deletes the packs no index names), so
//! a holder must never rely on a lock that may have looked stale. The
//! [`LockGuard`] remembers when its last refresh succeeded; a writer calls
//! [`LockGuard::check`] as it goes and [`LockGuard::confirm`] before it
//! publishes anything others must see (an index table, a snapshot), and
//! [`LockGuard::after_publishing`] right after. A check reads the lock
//! file too once its last reading is [`RECONFIRM_EVERY`] old. Past
//! [`CONFIRM_AFTER`] without a successful refresh the holder re-reads its
//! lock file and refreshes it before going on; past [`EXPIRE_AFTER`], or
//! once its lock file is found removed (`cairn unlock --force`), the lock
//! is lost and every check fails: the operation stops without publishing.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileKind};
use crate::codec;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{file_hash, is_hex_name};

const MAGIC: &[u8; 8] = b"CAIRNLCK";
/// Format version of lock files.
pub const VERSION: u32 = 1;
/// [`LockInfo::version`] of what stands for a lock file of a newer cairn
/// (see [`LockInfo::is_of_a_newer_cairn`]); no lock file has it.
const NEWER: u32 = 0;
/// [`LockInfo::version`] of what stands for a lock file that cannot be
/// read (see [`LockInfo::is_unreadable`]); no lock file has it.
const UNREADABLE: u32 = u32::MAX;
/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a held lock is refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// A holder whose last successful refresh is older than this (half of
/// [`STALE_AFTER`]) confirms its lock file is still there, and refreshes
/// it, before going on.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(15 * 60);
/// A holder whose last successful refresh is older than this has lost its
/// lock: the 10 minutes left before [`STALE_AFTER`] allow for the time a
/// publishing write takes and, on stores that tell no file times, for
/// clocks that differ between hosts.
pub const EXPIRE_AFTER: Duration = Duration::from_secs(20 * 60);
/// A holder whose lock file was last read (or written) longer ago than
/// this reads it again at its next [`LockGuard::check`], so a holder whose
/// lock someone removed stops within this, plus the one operation it is
/// doing (storing a pack, deleting one), of the removal.
pub const RECONFIRM_EVERY: Duration = Duration::from_secs(10);
/// How long a command that removed a lock it judged stale by its age (or
/// `unlock --force` a live one) waits before it goes on: a holder that
/// in fact still runs (its clock and the store's file times far behind,
/// say) may have confirmed its lock just before the removal and be
/// writing an index table or a snapshot; one that is between writes
/// stops within [`RECONFIRM_EVERY`]. A minute lets either finish before
/// the remover lists what to keep, or deletes anything.
pub const SETTLE: Duration = Duration::from_secs(60);

/// What a lock file says.
///
/// On disk the pid namespace rides in the host string (`HOST [pid ns
/// INODE, boot BOOT_ID]`, docs/FORMAT.md), so the record keeps the layout
/// and version 1 that every cairn decodes: a new field or version would
/// make an older cairn skip the lock as undecodable and run beside it, and
/// a host string that is not its own keeps an older cairn from the
/// dead-pid rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "LockRecord", into = "LockRecord")]
pub struct LockInfo {
    /// Version of this structure ([`VERSION`]; 0 for a lock file of a
    /// newer cairn, see [`LockInfo::is_of_a_newer_cairn`]).
    pub version: u32,
    /// Host holding the lock.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// The pid namespace `pid` belongs to; `None` in the locks of older
    /// cairns and of systems without `/proc`.
    pub pid_namespace: Option<PidNamespace>,
    /// Last refresh, ns since the epoch.
    pub time_ns: i64,
    /// Exclusive (gc, forget) or shared (backup, and the readers).
    pub exclusive: bool,
    /// The command holding it.
    pub command: String,
}

/// A lock file's record as encoded: [`LockInfo`] with the pid namespace
/// folded into the host string.
#[derive(Serialize, Deserialize)]
struct LockRecord {
    version: u32,
    host: String,
    pid: u32,
    time_ns: i64,
    exclusive: bool,
    command: String,
}

impl From<LockInfo> for LockRecord {
    fn from(l: LockInfo) -> LockRecord {
        LockRecord {
            version: l.version,
            host: match &l.pid_namespace {
                Some(ns) => ns.tag(&l.host),
                None => l.host,
            },
            pid: l.pid,
            time_ns: l.time_ns,
            exclusive: l.exclusive,
            command: l.command,
        }
    }
}

impl From<LockRecord> for LockInfo {
    fn from(r: LockRecord) -> LockInfo {
        let (host, pid_namespace) = match PidNamespace::untag(&r.host) {
            Some((host, ns)) => (host.to_string(), Some(ns)),
            None => (r.host, None),
        };
        LockInfo {
            version: r.version,
            host,
            pid: r.pid,
            pid_namespace,
            time_ns: r.time_ns,
            exclusive: r.exclusive,
            command: r.command,
        }
    }
}

/// A pid namespace on one boot of one kernel: within it, and only there,
/// `kill(pid, 0)` tells whether a lock's process is alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidNamespace {
    /// The inode of `/proc/self/ns/pid` (`pid:[INODE]`), unique among the
    /// namespaces of one boot.
    pub inode: u64,
    /// `/proc/sys/kernel/random/boot_id`, random at every boot (and so
    /// different on a cloned machine): inodes repeat across boots.
    pub boot_id: String,
}

impl PidNamespace {
    /// This process's pid namespace, or `None` when `/proc` does not tell
    /// it (not Linux, `/proc` not mounted or of another namespace).
    pub fn current() -> Option<&'static PidNamespace> {
        // A process never changes its own pid namespace (setns changes
        // its children's).
        static CURRENT: OnceLock<Option<PidNamespace>> = OnceLock::new();
        CURRENT.get_or_init(Self::read).as_ref()
    }

    fn read() -> Option<PidNamespace> {
        let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
        let inode = link
            .to_str()?
            .strip_prefix("pid:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let ns = PidNamespace {
            inode,
            boot_id: boot.trim().to_string(),
        };
        ns.is_valid().then_some(ns)
    }

    /// A boot id as the kernel writes it (a UUID): what keeps the tag
    /// unambiguous.
    fn is_valid(&self) -> bool {
        !self.boot_id.is_empty()
            && self
                .boot_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-')
    }

    /// `host` with this namespace appended, as a lock file stores it.
    fn tag(&self, host: &str) -> String {
        format!("{host} [pid ns {}, boot {}]", self.inode, self.boot_id)
    }

    /// Splits a stored host string into the host and its namespace;
    /// `None` unless it is exactly what [`PidNamespace::tag`] makes.
    fn untag(stored: &str) -> Option<(&str, PidNamespace)> {
        let (host, ns) = stored.strip_suffix(']')?.rsplit_once(" [pid ns ")?;
        let (inode, boot) = ns.split_once(", boot ")?;
        let ns = PidNamespace {
            inode: inode.parse().ok()?,
            boot_id: boot.to_string(),
        };
        (ns.is_valid() && ns.tag(host) == stored).then_some((host, ns))
    }
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
        let info: LockInfo = codec::decode(&plain, "lock")?;
        if info.version != VERSION {
            return Err(Error::corrupt(
                "lock",
                format!(
                    "record version {} is not supported (this cairn reads {VERSION}; a newer \
                     cairn may have written it)",
                    info.version
                ),
            ));
        }
        Ok(info)
    }

    /// If `bytes`, which [`Self::decode`] refused, are a lock file of a
    /// later format or record version (a lock a newer cairn holds, not
    /// what a crash or damage left), which version, in words.
    fn later_version(bytes: &[u8], key: &MasterKey) -> Option<String> {
        let version = bytes
            .get(8..12)
            .filter(|_| bytes.starts_with(MAGIC))
            .and_then(|v| v.try_into().ok())
            .map(u32::from_le_bytes)?;
        if version > VERSION {
            return Some(format!(
                "format version {version}; this cairn reads {VERSION}"
            ));
        }
        let plain = key.open(bytes.get(12..)?, &bytes[..12], "lock").ok()?;
        let record: LockRecord = codec::decode(&plain, "lock").ok()?;
        (version == VERSION && record.version > VERSION).then(|| {
            format!(
                "record version {}; this cairn reads {VERSION}",
                record.version
            )
        })
    }

    /// What stands for a lock file of a newer cairn, which cannot be read
    /// (see [`list_timed`]): an exclusive lock of no known process, as old as
    /// the store says the file is (`written_ns`), or, where it does not
    /// tell, refreshed just now.
    fn newer(why: String, written_ns: Option<i64>) -> LockInfo {
        LockInfo {
            version: NEWER,
            host: String::new(),
            pid: 0,
            pid_namespace: None,
            time_ns: written_ns.unwrap_or_else(crate::now_ns),
            exclusive: true,
            command: why,
        }
    }

    /// Whether this stands for a lock file of a newer cairn.
    pub fn is_of_a_newer_cairn(&self) -> bool {
        self.version == NEWER
    }

    /// What stands for a lock file the filesystem would not let be read
    /// (`why`, naming its path: permission denied, an IO error; see
    /// [`list_timed`]): an exclusive lock of no known process, as old as
    /// the store says the file is, as for a newer cairn's.
    fn unreadable(why: String, written_ns: Option<i64>) -> LockInfo {
        LockInfo {
            version: UNREADABLE,
            ..LockInfo::newer(why, written_ns)
        }
    }

    /// Whether this stands for a lock file that cannot be read.
    pub fn is_unreadable(&self) -> bool {
        self.version == UNREADABLE
    }

    /// Whether the lock no longer protects anything, as judged by a
    /// reader on `this_host` in pid namespace `this_ns`: not refreshed for
    /// [`STALE_AFTER`], or written in the reader's own pid namespace (on
    /// the same host and boot) by a process that is gone. Where the reader
    /// cannot tell the namespaces are the same, only age counts. Its age
    /// must pass [`STALE_AFTER`] both by its own time and, where the store
    /// tells it, by `store_age`: how long before the reader's own lock
    /// file the store wrote this one (see the module docs).
    pub fn is_stale(
        &self,
        this_host: &str,
        this_ns: Option<&PidNamespace>,
        store_age: Option<Duration>,
    ) -> bool {
        let age = crate::now_ns().saturating_sub(self.time_ns);
        if age > STALE_AFTER.as_nanos() as i64 && store_age.is_none_or(|a| a > STALE_AFTER) {
            return true;
        }
        self.is_of_the_dead(this_host, this_ns)
    }

    /// Whether this lock's process is gone: a process of this host, boot
    /// and pid namespace whose pid is not alive.
    fn is_of_the_dead(&self, this_host: &str, this_ns: Option<&PidNamespace>) -> bool {
        let ours =
            self.host == this_host && this_ns.is_some() && self.pid_namespace.as_ref() == this_ns;
        ours && !process_alive(self.pid)
    }

    /// One line describing the holder.
    pub fn describe(&self) -> String {
        if self.is_unreadable() {
            return format!(
                "a lock file that cannot be read ({}), written {}: taken as an exclusive \
                 lock, since it may be a gc's, until it is stale (30 minutes after its holder \
                 last wrote it); let this user read it (a repository shared with a group: \
                 `chmod g+r` by its owner), or, if no command holds it, remove it with `cairn \
                 unlock --force`",
                self.command,
                crate::format_time(self.time_ns)
            );
        }
        if self.is_of_a_newer_cairn() {
            return format!(
                "a lock file of a newer cairn ({}), written {}: taken as an exclusive lock \
                 until it is stale",
                self.command,
                crate::format_time(self.time_ns)
            );
        }
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

/// Whether process `pid` of this host runs. A zombie (killed, not yet
/// reaped by its parent, as under a container's PID 1 that reaps
/// nothing) does not: `kill(pid, 0)` finds it all the same, and until
/// December 2026 its lock held the repository until stale by age, with
/// `unlock` removing nothing.
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// Whether `/proc` says process `pid` is a zombie (state `Z`, or `X`,
/// dead); false where it says nothing.
fn is_zombie(pid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the command may hold spaces and parentheses,
    // the state follows the last `)`.
    let Some(end) = stat.iter().rposition(|&b| b == b')') else {
        return false;
    };
    matches!(stat.get(end + 2), Some(b'Z' | b'X'))
}

/// A held lock; released on drop. See the module docs for the checks a
/// holder makes before it publishes.
pub struct LockGuard {
    held: Arc<Held>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<thread::JoinHandle<()>>,
}

/// What the guard and its refresher thread share.
struct Held {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    /// The lock's description; `time_ns` is set at each refresh.
    info: LockInfo,
    knobs: crate::fault::LockKnobs,
    /// Under one mutex, so a refresh by the thread and one by a check
    /// never interleave.
    state: Mutex<HeldState>,
}

struct HeldState {
    /// The current lock file.
    name: String,
    /// The time written into it (wall clock, as others judge staleness).
    refreshed_ns: i64,
    /// The same moment on the monotonic clock, which does not jump when
    /// the wall clock is set back.
    refreshed: Instant,
    /// Added to the monotonic age until the next refresh (test knob
    /// `age`).
    backdate: Duration,
    /// When the lock file was last found intact, or written.
    read: Instant,
    /// Why the lock was lost, once it was: checks fail from then on.
    lost: Option<String>,
}

const REMOVED: &str = "lock lost: its lock file was removed (by `cairn unlock --force`, or by a \
                       command that took it for stale: is this host's clock, or the store's file \
                       times, far behind?)";
const DAMAGED: &str = "lock lost: its lock file no longer holds what this process wrote (emptied \
                       or damaged), so other commands ignore it";

impl HeldState {
    /// Time since the last successful refresh: the larger of the wall
    /// clock's (which runs on while a laptop is suspended) and the
    /// monotonic clock's.
    fn age(&self) -> Duration {
        let wall = crate::now_ns().saturating_sub(self.refreshed_ns).max(0) as u64;
        Duration::from_nanos(wall).max(self.refreshed.elapsed() + self.backdate)
    }

    /// Marks the lock lost if it is too old; returns why it is lost.
    fn expire(&mut self) -> Option<&str> {
        let age = self.age();
        if self.lost.is_none() && age >= EXPIRE_AFTER {
            self.lost = Some(format!(
                "lock expired: last refreshed {}m{:02}s ago (process paused or suspended, or \
                 the store unreachable?), so other commands may have treated it as stale",
                age.as_secs() / 60,
                age.as_secs() % 60
            ));
        }
        self.lost.as_deref()
    }
}

impl Held {
    fn state(&self) -> Result<MutexGuard<'_, HeldState>> {
        self.state
            .lock()
            .map_err(|_| Error::Invalid("lock refresher panicked".into()))
    }

    /// Reads the lock file; marks the lock lost if it is gone, or holds
    /// other bytes than those written (its name is their hash): a file
    /// emptied or torn is no lock to others ([`list_timed`]), so it is
    /// none to its holder either.
    fn confirm(&self, st: &mut HeldState) -> Result<()> {
        let why = match self.backend.read(FileKind::Lock, &st.name) {
            Ok(bytes) if hex::encode(file_hash(&bytes)) == st.name => {
                st.read = Instant::now();
                return Ok(());
            }
            Ok(_) => DAMAGED,
            Err(e) if e.is_not_found() => REMOVED,
            Err(e) => return Err(e),
        };
        st.lost = Some(why.into());
        Err(Error::LockLost(why.into()))
    }

    /// Replaces the lock file by one with the current time, once the old
    /// one is confirmed present: a lock file someone removed is not put
    /// back, the lock is lost.
    fn refresh(&self, st: &mut HeldState) -> Result<()> {
        self.confirm(st)?;
        if self.knobs.refresh_fails {
            return Err(Error::Invalid(
                "refresh refused (CAIRN_LOCK_TEST=refresh-fails)".into(),
            ));
        }
        let now = crate::now_ns();
        let fresh = LockInfo {
            time_ns: now.saturating_sub(self.knobs.clock_lag.as_nanos() as i64),
            ..self.info.clone()
        };
        let new = write_lock(&*self.backend, &self.key, &fresh)?;
        let old = std::mem::replace(&mut st.name, new);
        st.refreshed_ns = now;
        st.refreshed = Instant::now();
        st.read = st.refreshed;
        st.backdate = Duration::ZERO;
        if old != st.name {
            let _ = self.backend.remove(FileKind::Lock, &old);
        }
        Ok(())
    }

    /// See [`LockGuard::check`]; `read` also confirms the lock file is
    /// intact when the lock is fresh, which a check does anyway once the
    /// last reading is [`RECONFIRM_EVERY`] old.
    fn check(&self, read: bool, consequence: &str) -> Result<()> {
        let mut st = self.state()?;
        let fail = |why: &str| Error::LockLost(format!("{why}; {consequence}"));
        if let Some(why) = st.expire() {
            return Err(fail(why));
        }
        let age = st.age();
        if age >= CONFIRM_AFTER {
            return self.refresh(&mut st).map_err(|e| match e {
                Error::LockLost(why) => fail(&why),
                e => fail(&format!(
                    "lock not refreshed for {}m{:02}s, and refreshing it now failed: {e}",
                    age.as_secs() / 60,
                    age.as_secs() % 60
                )),
            });
        }
        if read || st.read.elapsed() >= RECONFIRM_EVERY {
            return match self.confirm(&mut st) {
                Err(Error::LockLost(why)) => Err(fail(&why)),
                // Any other failure to read is the store's: reported as
                // such where the caller asked for the reading, else tried
                // again at the next check.
                Err(e) if read => Err(e),
                _ => Ok(()),
            };
        }
        Ok(())
    }

    /// The refresher thread's loop: refresh every `every` until stopped
    /// or the lock is lost. A failed refresh is retried next time; the
    /// holder's checks notice if failures go on too long. An expired lock
    /// is not refreshed: that would hide that it may have looked stale.
    fn refresh_until(&self, stopped: mpsc::Receiver<()>, every: Duration) {
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
            let Ok(mut st) = self.state() else { return };
            if st.expire().is_some() {
                return;
            }
            let _ = self.refresh(&mut st);
        }
    }
}

fn write_lock(backend: &dyn Backend, key: &MasterKey, info: &LockInfo) -> Result<String> {
    let bytes = info.encode(key);
    let name = hex::encode(file_hash(&bytes));
    backend.write(FileKind::Lock, &name, &bytes)?;
    Ok(name)
}

/// Writes a lock file as a holder would, without holding anything or
/// refreshing it (for tests that need a lock of a given age or owner).
/// Returns its name.
pub fn write_info(backend: &dyn Backend, key: &MasterKey, info: &LockInfo) -> Result<String> {
    write_lock(backend, key, info)
}

/// Every lock in the repository with its name. See [`list_timed`].
pub fn list(backend: &dyn Backend, key: &MasterKey) -> Result<Vec<(String, LockInfo)>> {
    Ok(list_timed(backend, key)?
        .into_iter()
        .map(|l| (l.name, l.info))
        .collect())
}

/// A lock file as listed.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The file's name.
    pub name: String,
    /// What it says.
    pub info: LockInfo,
    /// When the store wrote it, by the store's clock, if it tells.
    pub written: Option<SystemTime>,
}

/// Every lock in the repository with its name and the time the store
/// wrote it.
///
/// A lock file of a later format or record version, which this cairn
/// cannot read, stands as an exclusive lock of no known process
/// ([`LockInfo::is_of_a_newer_cairn`]), as old as the store says the file is:
/// skipping it would have gc run beside the backup of a newer cairn on
/// another host, and remove what that backup is storing. Such a lock
/// holds until it is stale by the store's time, or, on a store that
/// tells no times, until `cairn unlock --force` removes it. So does a
/// lock file the local filesystem will not let be read (permission
/// denied in a repository shared with a group, an IO error): it may be
/// a live gc's lock, which a backup must not run beside, and it says
/// nothing else ([`LockInfo::is_unreadable`]). Any other file that does
/// not decode (empty or torn, as a crash can leave a lock file; sealed
/// with another key; not a regular file, or larger than any lock, which
/// reads refuse unread) is no lock.
///
/// A holder refreshes its lock by writing the new file before removing
/// the old one, so a lock listed but gone when read was refreshed (or
/// released) in between, and its new file, if any, is in a new listing.
/// Taking the listing as it was would hide a live lock from whoever is
/// deciding whether to go ahead (gc deciding whether a backup runs), so
/// the locks are listed again, up to [`LIST_TRIES`] times.
pub fn list_timed(backend: &dyn Backend, key: &MasterKey) -> Result<Vec<Listed>> {
    Ok(list_all(backend, key)?.0)
}

/// The names of the lock files that hold no lock: they do not decode
/// (empty, torn, or sealed with another repository's key) and are not of
/// a newer cairn. Every command passes over them; `verify` names them.
pub fn not_locks(backend: &dyn Backend, key: &MasterKey) -> Result<Vec<String>> {
    Ok(list_all(backend, key)?.1)
}

/// [`list_timed`], and the names of the lock files that hold no lock
/// (they do not decode, and are not of a newer cairn).
fn list_all(backend: &dyn Backend, key: &MasterKey) -> Result<(Vec<Listed>, Vec<String>)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        let mut vanished = false;
        for (name, written) in backend.list_times(FileKind::Lock)? {
            if !is_hex_name(&name) {
                continue;
            }
            match backend.read(FileKind::Lock, &name) {
                Ok(bytes) => {
                    let info = match LockInfo::decode(&bytes, key) {
                        Ok(info) => info,
                        // Empty or torn (what a crash can leave of a lock
                        // file, which is not fsynced: DESIGN.md, "Locks"),
                        // or sealed with another key: no lock.
                        Err(_) => match LockInfo::later_version(&bytes, key) {
                            Some(why) => {
                                let written_ns = written
                                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                                    .and_then(|d| i64::try_from(d.as_nanos()).ok());
                                LockInfo::newer(why, written_ns)
                            }
                            None => {
                                unreadable.push(name);
                                continue;
                            }
                        },
                    };
                    out.push(Listed {
                        name,
                        info,
                        written,
                    });
                }
                Err(e) if e.is_not_found() => vanished = true,
                // No lock file either: what a read refuses before
                // decoding (a symlink to a FIFO or device, a file larger
                // than any lock).
                Err(Error::Corrupt { .. }) => continue,
                Err(e @ Error::Io { .. }) => {
                    let written_ns = written
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .and_then(|d| i64::try_from(d.as_nanos()).ok());
                    out.push(Listed {
                        name,
                        info: LockInfo::unreadable(e.to_string(), written_ns),
                        written,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if !vanished || tries >= LIST_TRIES {
            return Ok((out, unreadable));
        }
    }
}

/// How a reader judges the locks of a listing: from its host and pid
/// namespace, and against the store's clock as the time the store wrote
/// the reader's own lock file (`mine`), listed with the others.
struct Judge {
    host: String,
    ns: Option<&'static PidNamespace>,
    store_now: Option<SystemTime>,
}

impl Judge {
    fn new(listed: &[Listed], mine: &str) -> Judge {
        Judge {
            host: crate::hostname(),
            ns: PidNamespace::current(),
            store_now: listed
                .iter()
                .find(|l| l.name == mine)
                .and_then(|l| l.written),
        }
    }

    /// How long before the reader's lock the store wrote `lock`; zero
    /// for one written after it.
    fn store_age(&self, lock: &Listed) -> Option<Duration> {
        let (now, written) = (self.store_now?, lock.written?);
        Some(now.duration_since(written).unwrap_or_default())
    }

    fn is_stale(&self, lock: &Listed) -> bool {
        lock.info
            .is_stale(&self.host, self.ns, self.store_age(lock))
    }

    /// [`LockInfo::describe`], noting a clock that differs from this
    /// host's by minutes: the reason such a lock is not taken over when
    /// its time says it is old.
    fn describe(&self, lock: &Listed) -> String {
        let mut out = lock.info.describe();
        if let Some(store_age) = self.store_age(lock) {
            let age = crate::now_ns().saturating_sub(lock.info.time_ns);
            let skew = age.saturating_sub(store_age.as_nanos() as i64) / 1_000_000_000;
            if skew.abs() >= 5 * 60 {
                let side = if skew > 0 { "behind" } else { "ahead of" };
                out.push_str(&format!(
                    "; that host's clock is about {} {side} this host's, as the store's \
                     times of the lock files tell",
                    about(skew.unsigned_abs())
                ));
                // A lock file copied (or restored) since is dated anew by
                // the store, as if its host's clock lagged.
                if skew > 0 {
                    out.push_str(
                        ", or the lock file was copied since (a copy of the repository that \
                         did not keep file times dates it anew); a lock whose process is \
                         known to be gone is removed by `cairn unlock --force`",
                    );
                }
            }
        }
        out
    }
}

/// `secs` as a reader takes it in: minutes below two hours, hours below
/// two days, days beyond ("1322749 minutes" said nothing at a glance).
fn about(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s < 2 * 3600 => ((s + 30) / 60, "minute"),
        s if s < 2 * 86_400 => ((s + 1800) / 3600, "hour"),
        s => ((s + 43_200) / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// How many times [`list`] lists the locks while some vanish as it reads.
const LIST_TRIES: usize = 5;

/// Takes a lock, waiting up to `wait` for conflicting holders to finish.
pub fn acquire(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    exclusive: bool,
    command: &str,
    wait: Duration,
) -> Result<LockGuard> {
    let knobs = crate::fault::lock_knobs().clone();
    match acquire_with(backend, key, exclusive, command, wait, knobs, false)? {
        Acquired::Held(guard) => Ok(guard),
        Acquired::Unwritable(e) => Err(e),
    }
}

/// The commands that take a shared lock only to read (see
/// [`acquire_reader`]): they add nothing to the repository.
pub const READERS: [&str; 4] = ["restore", "verify", "ls", "cat"];

/// What a command that only reads holds: its shared lock, or, where the
/// store refuses the lock file's write for good, nothing, with that error.
pub enum Acquired {
    Held(LockGuard),
    /// The write was refused (a read-only filesystem or credentials, no
    /// permission, a full disk), and no holder of an exclusive lock, one
    /// that removes data, was found: the reader may go on unprotected.
    Unwritable(Error),
}

/// A shared lock for a command that only reads (restore, verify, `ls`,
/// `cat`), so that gc cannot remove what it reads. Where the store
/// refuses the lock file's first write for good (as a restore from a
/// read-only disk or with read-only credentials finds it; or a full disk,
/// whose space reserve only commands that free space may use), the locks
/// there are still read: while a live exclusive lock is held the reader
/// waits or is refused as it would be, and otherwise it goes on without
/// one ([`Acquired::Unwritable`]). Any failure after its lock file was
/// written is an error, as for every lock.
pub fn acquire_reader(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    command: &str,
    wait: Duration,
) -> Result<Acquired> {
    let knobs = crate::fault::lock_knobs().clone();
    acquire_with(backend, key, false, command, wait, knobs, true)
}

fn acquire_with(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    exclusive: bool,
    command: &str,
    wait: Duration,
    knobs: crate::fault::LockKnobs,
    reader: bool,
) -> Result<Acquired> {
    let lag = knobs.clock_lag.as_nanos() as i64;
    let info = |now: i64| LockInfo {
        version: VERSION,
        host: crate::hostname(),
        pid: std::process::id(),
        pid_namespace: PidNamespace::current().cloned(),
        time_ns: now.saturating_sub(lag),
        exclusive,
        command: command.to_string(),
    };
    // A wait past `LONGEST_WAIT` (a century) is one without end, and must
    // not overflow the clock.
    let deadline = Instant::now() + wait.min(crate::LONGEST_WAIT);
    let mut announced = false;
    loop {
        let now = crate::now_ns().saturating_sub(knobs.age.as_nanos() as i64);
        let written = Instant::now();
        let mine = match write_lock(&*backend, key, &info(now)) {
            Ok(mine) => mine,
            Err(e) if reader && (e.is_write_refused() || e.is_storage_full()) => {
                // No lock of its own: judged by the locks' own times.
                let listed = list_timed(&*backend, key)?;
                let judge = Judge::new(&listed, "");
                let Some(holder) = listed
                    .iter()
                    .find(|other| other.info.exclusive && !judge.is_stale(other))
                else {
                    return Ok(Acquired::Unwritable(e));
                };
                let holder = judge.describe(holder);
                wait_for(&holder, deadline, &mut announced, "wait with --lock-wait")?;
                continue;
            }
            Err(e) if e.is_write_refused() => {
                let advice = write_refused(
                    &*backend,
                    &e,
                    &format!("{command} needs to write (its lock first)"),
                    "; commands that only read (snapshots, ls, cat, restore, verify, dry runs) \
                     run without writing",
                );
                return Err(Error::Advised {
                    error: Box::new(e),
                    advice,
                });
            }
            Err(e) => return Err(e),
        };
        let holder = match clear_the_way(&*backend, key, exclusive, &mine, &knobs) {
            Ok(None) => {
                let every = knobs.refresh_every.unwrap_or(REFRESH_EVERY);
                let held = Arc::new(Held {
                    backend,
                    key: key.clone(),
                    info: info(now),
                    state: Mutex::new(HeldState {
                        name: mine,
                        refreshed_ns: now,
                        refreshed: written,
                        backdate: knobs.age,
                        read: written,
                        lost: None,
                    }),
                    knobs,
                });
                let (stop, stopped) = mpsc::channel::<()>();
                let h = held.clone();
                let spawned = thread::Builder::new()
                    .name("lock".into())
                    .spawn(move || h.refresh_until(stopped, every));
                // As a guard without a refresher, it would expire under
                // its holder: refused, its lock file removed.
                let refresher = match spawned {
                    Ok(refresher) => refresher,
                    Err(e) => {
                        let _ = held.backend.remove(FileKind::Lock, &held.state()?.name);
                        return Err(Error::io(
                            "start the thread that keeps the lock fresh (the system refused \
                             it: raise the limit on processes or on memory, `ulimit -u`, \
                             `ulimit -v`)",
                            e,
                        ));
                    }
                };
                return Ok(Acquired::Held(LockGuard {
                    held,
                    stop: Some(stop),
                    refresher: Some(refresher),
                }));
            }
            Ok(Some(holder)) => holder,
            Err(e) => {
                let _ = backend.remove(FileKind::Lock, &mine);
                return Err(e);
            }
        };
        if let Err(e) = backend.remove(FileKind::Lock, &mine) {
            // Refused either way; its own lock, left, goes stale in time.
            return Err(Error::Locked(format!(
                "{holder}; this {command}'s own lock file could not be removed ({e}) and is stale \
                 after {} minutes",
                STALE_AFTER.as_secs() / 60
            )));
        }
        let hint = format!(
            "{}; a lock goes stale {} minutes after its holder last refreshed it, and then \
             `cairn unlock` removes it (at once where its process is gone from this host); \
             `cairn unlock --force` removes one that is not stale, once you know its holder \
             no longer runs",
            if wait.is_zero() {
                "wait with --lock-wait".to_string()
            } else {
                format!("waited {}", humantime_secs(wait))
            },
            STALE_AFTER.as_secs() / 60
        );
        wait_for(&holder, deadline, &mut announced, &hint)?;
    }
}

/// With its own lock file `mine` written, lists the others and returns
/// the holder of a live lock that conflicts with it (described), if any.
/// Otherwise it removes the locks that would conflict but are stale
/// before it lets its caller go on, and the locks of dead processes here
/// (see [`remove_dead`]).
///
/// A lock stale by its age is removed, not passed over: its holder may
/// still run (a host whose clock lags, on a store whose file times come
/// from the writer's clock, looks 40 minutes old while it backs up), and
/// only a lock file found gone makes such a holder stop before it
/// publishes (an index table naming packs a gc deleted, a snapshot naming
/// blobs). Then it waits [`SETTLE`] (a holder that confirmed its lock just
/// before the removal finishes the write it confirmed it for; one between
/// writes finds its lock gone) and lists the locks again: whatever its
/// caller then reads of the repository includes what such a holder
/// published. A lock that shows up stale again (a refresh that raced the
/// removal) is removed again, up to [`LIST_TRIES`] times; past that it
/// is taken for a live holder.
fn clear_the_way(
    backend: &dyn Backend,
    key: &MasterKey,
    exclusive: bool,
    mine: &str,
    knobs: &crate::fault::LockKnobs,
) -> Result<Option<String>> {
    let host = crate::hostname();
    let ns = PidNamespace::current();
    let mut round = 0;
    loop {
        let listed = list_timed(backend, key)?;
        let judge = Judge::new(&listed, mine);
        let conflicts = |l: &&Listed| l.name != mine && (exclusive || l.info.exclusive);
        if let Some(holder) = listed.iter().filter(conflicts).find(|l| !judge.is_stale(l)) {
            return Ok(Some(judge.describe(holder)));
        }
        remove_dead(backend, &listed, mine);
        // Every conflicting lock left is stale.
        let stale: Vec<&Listed> = listed
            .iter()
            .filter(conflicts)
            .filter(|l| !l.info.is_of_the_dead(&host, ns))
            .collect();
        let Some(first) = stale.first() else {
            return Ok(None);
        };
        if round == LIST_TRIES {
            return Ok(Some(format!(
                "{} (stale, yet a new stale lock came each time one was removed)",
                judge.describe(first)
            )));
        }
        for lock in &stale {
            remove_stale_lock(backend, lock, &judge.describe(lock))?;
        }
        settle(knobs);
        round += 1;
    }
}

/// Removes the locks of `listed` whose processes are gone (this host,
/// boot and pid namespace; not `mine`): stale at once, but only while
/// their pids stay unused: once a new process has one, its lock would
/// hold again, refusing commands until it is old. Their processes
/// cannot be relying on them, so nobody waits for them to notice. Each
/// removed is said, as a stale one is (until December 2026 without a
/// word): a nightly job hears that the one before it was killed.
fn remove_dead(backend: &dyn Backend, listed: &[Listed], mine: &str) {
    let host = crate::hostname();
    let ns = PidNamespace::current();
    for dead in listed
        .iter()
        .filter(|l| l.name != mine && l.info.is_of_the_dead(&host, ns))
    {
        if backend.remove(FileKind::Lock, &dead.name).is_ok() {
            crate::eprint_line(format_args!(
                "note: removed the {}: its process is gone (killed, or its host restarted) \
                 without removing it",
                crate::escape::escape_controls(&dead.info.describe())
            ));
        }
    }
}

/// Removes a lock taken for stale (`what` describes it), saying so; one
/// already gone is fine.
fn remove_stale_lock(backend: &dyn Backend, lock: &Listed, what: &str) -> Result<()> {
    match backend.remove(FileKind::Lock, &lock.name) {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => {
            return Err(Error::Locked(format!(
                "{what}: stale, but its lock file could not be removed ({e}), and a holder \
                 that still runs would not notice it is passed over"
            )))
        }
    }
    crate::eprint_line(format_args!(
        "removed a stale lock: {}",
        crate::escape::escape_controls(what)
    ));
    Ok(())
}

/// Waits [`SETTLE`] (or the `settle` test knob) after removing a lock
/// whose holder may still run, saying so.
fn settle(knobs: &crate::fault::LockKnobs) {
    // The library's own tests do not wait a minute for every stale lock.
    let wait = knobs
        .settle
        .unwrap_or(if cfg!(test) { Duration::ZERO } else { SETTLE });
    crate::eprint_line(format_args!(
        "waiting {}s before going on, in case the holder of a lock taken for stale still runs \
         (it stops once it finds its lock file gone)",
        wait.as_secs()
    ));
    thread::sleep(wait);
}

/// A shared lock as a process suspended for `age` holds it on waking:
/// expired once `age` passes [`EXPIRE_AFTER`] (for tests of what a
/// holder does then).
#[cfg(test)]
pub(crate) fn acquire_aged(backend: Arc<dyn Backend>, key: &MasterKey, age: Duration) -> LockGuard {
    let knobs = crate::fault::LockKnobs {
        age,
        ..crate::fault::LockKnobs::default()
    };
    match acquire_with(backend, key, false, "backup", Duration::ZERO, knobs, false) {
        Ok(Acquired::Held(guard)) => guard,
        _ => panic!("no lock"),
    }
}

/// Refuses, naming `holder` (and `hint`), once `deadline` has passed;
/// until then says once that it waits for the holder, and sleeps a while
/// before the next try.
fn wait_for(holder: &str, deadline: Instant, announced: &mut bool, hint: &str) -> Result<()> {
    if Instant::now() >= deadline {
        return Err(Error::Locked(format!("{holder} ({hint})")));
    }
    if !*announced {
        crate::eprint_line(format_args!(
            "waiting for the repository: {}",
            crate::escape::escape_controls(holder)
        ));
        *announced = true;
    }
    thread::sleep(
        Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
    );
    Ok(())
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("command", &self.held.info.command)
            .field("exclusive", &self.held.info.exclusive)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// A guard that holds no lock file, for a command that writes nothing
    /// (a dry run) where the store refused its lock file for good
    /// ([`Acquired::Unwritable`], with `why`): every check and
    /// confirmation fails, naming `why`, so nothing can be written under
    /// it, and [`LockGuard::others`] lists every live lock.
    pub fn unheld(backend: Arc<dyn Backend>, key: &MasterKey, command: &str, why: &Error) -> Self {
        let now = crate::now_ns();
        LockGuard {
            held: Arc::new(Held {
                backend,
                key: key.clone(),
                info: LockInfo {
                    version: VERSION,
                    host: crate::hostname(),
                    pid: std::process::id(),
                    pid_namespace: PidNamespace::current().cloned(),
                    time_ns: now,
                    exclusive: false,
                    command: command.to_string(),
                },
                knobs: crate::fault::LockKnobs::default(),
                state: Mutex::new(HeldState {
                    name: String::new(),
                    refreshed_ns: now,
                    refreshed: Instant::now(),
                    backdate: Duration::ZERO,
                    read: Instant::now(),
                    lost: Some(format!(
                        "no lock is held: the store refused the lock file ({why})"
                    )),
                }),
            }),
            stop: None,
            refresher: None,
        }
    }

    /// Fails if the lock can no longer be relied on: lost, or not
    /// refreshed for [`EXPIRE_AFTER`]. Past [`CONFIRM_AFTER`] it confirms
    /// the lock file and refreshes it first, failing if it cannot;
    /// otherwise it costs no IO, so it can be called often (a backup calls
    /// it for every pack). `consequence` ends the error message: what was
    /// left undone.
    pub fn check(&self, consequence: &str) -> Result<()> {
        self.held.check(false, consequence)
    }

    /// Like [`LockGuard::check`], and also reads the lock file to confirm
    /// nobody removed it. Call right before writing what others must see.
    pub fn confirm(&self, consequence: &str) -> Result<()> {
        self.held.check(true, consequence)
    }

    /// Confirms the lock again right after publishing `names` (files of
    /// `kind`) under a confirmation made just before; where it was lost
    /// in between, removes them again and fails. A lock removed by a
    /// command that took it for stale while the write was under way (one
    /// slower than that command's [`SETTLE`]) may have let that command
    /// read the repository without them and delete what they name. A
    /// store that cannot be reached now leaves them: the lock was
    /// confirmed before they were written.
    pub fn after_publishing(
        &self,
        kind: FileKind,
        names: &[String],
        consequence: &str,
    ) -> Result<()> {
        match self.confirm(consequence) {
            Err(e @ Error::LockLost(_)) => {
                for name in names {
                    let _ = self.held.backend.remove(kind, name);
                }
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// Whether the lock is known lost (its file found removed, or not
    /// refreshed for [`EXPIRE_AFTER`]); no IO. Unlike a failed check, this
    /// is not true merely because the store could not be reached.
    pub fn is_lost(&self) -> bool {
        self.held
            .state
            .lock()
            .map_or(true, |mut st| st.expire().is_some())
    }

    /// Whether this is an exclusive lock.
    pub fn is_exclusive(&self) -> bool {
        self.held.info.exclusive
    }

    /// The locks of others that are not stale: holders that may be
    /// writing right now.
    pub fn others(&self) -> Result<Vec<LockInfo>> {
        let mine = self.held.state()?.name.clone();
        // Its lock was written at the last refresh, up to
        // [`REFRESH_EVERY`] ago: the store's clock is taken to be that
        // much behind, which can only make others' locks look younger.
        let listed = list_timed(&*self.held.backend, &self.held.key)?;
        let judge = Judge::new(&listed, &mine);
        Ok(listed
            .iter()
            .filter(|l| l.name != mine && !judge.is_stale(l))
            .map(|l| l.info.clone())
            .collect())
    }

    /// Whether others hold live locks of commands that write (not
    /// [`READERS`]): a backup among them may be writing packs no index
    /// table names yet.
    pub fn others_writing(&self) -> Result<bool> {
        Ok(self
            .others()?
            .iter()
            .any(|l| !READERS.contains(&l.command.as_str())))
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        if let Ok(st) = self.held.state.lock() {
            // None for a guard that holds no lock file.
            if !st.name.is_empty() {
                let _ = self.held.backend.remove(FileKind::Lock, &st.name);
            }
        }
    }
}

/// What `cairn unlock` found.
#[derive(Debug, Default)]
pub struct Unlocked {
    /// The locks removed.
    pub removed: Vec<LockInfo>,
    /// The locks left, not stale: their holders may run.
    pub left: Vec<LockInfo>,
    /// The lock files that hold no lock (torn, sealed with another key,
    /// and with `force`, empty): removed with `force`, else only named.
    /// Every command ignores them, so nothing else ever removes them.
    pub unreadable: Vec<String>,
    /// Empty lock files, removed without `force` too: all a power cut
    /// leaves of a lock file written just before it (lock files are not
    /// synced, see DESIGN.md, "Locks"), one more after each, which only
    /// `--force` removed until December 2026.
    pub empty: Vec<String>,
}

/// Removes stale locks (all locks, and the lock files that hold none,
/// with `force`); returns what was removed and found.
/// A lock is stale here as it is to [`acquire`]: a live holder's lock in
/// another pid namespace is left until it is old. To read the store's
/// clock, it writes a shared lock of its own for the while (which
/// conflicts with no backup), and removes it. Having removed a lock
/// whose holder may still run (any but the dead processes' of this
/// host), it waits [`SETTLE`] before it returns, as a command taking a
/// lock does, so that a gc run next sees what such a holder published
/// under the lock it confirmed just before.
pub fn remove_locks(backend: &dyn Backend, key: &MasterKey, force: bool) -> Result<Unlocked> {
    // No lock file at all: nothing to judge or remove, so nothing is
    // written (a repository mounted read-only, which has none to remove,
    // says so rather than failing on the lock of unlock's own).
    if !backend
        .list(FileKind::Lock)?
        .iter()
        .any(|name| is_hex_name(name))
    {
        return Ok(Unlocked::default());
    }
    let probe = LockInfo {
        version: VERSION,
        host: crate::hostname(),
        pid: std::process::id(),
        pid_namespace: PidNamespace::current().cloned(),
        time_ns: crate::now_ns(),
        exclusive: false,
        command: "unlock".into(),
    };
    let mine = write_lock(backend, key, &probe).map_err(|e| {
        if !e.is_write_refused() {
            return e;
        }
        let advice = write_refused(
            backend,
            &e,
            "unlock needs to write (a lock of its own first, and the removals)",
            "",
        );
        Error::Advised {
            error: Box::new(e),
            advice,
        }
    })?;
    let removed = remove_stale(backend, key, force, &mine);
    backend.remove(FileKind::Lock, &mine)?;
    removed
}

/// What to do about a write the store refused (see
/// [`Error::is_write_refused`]) where `needs` ("gc needs to write (its lock
/// first)") says what the command had to write, `also` what may be added:
/// a filesystem mounted read-only refuses every user, so the advice is
/// not to run as another.
fn write_refused(backend: &dyn Backend, e: &Error, needs: &str, also: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    // A repository of this user's that they made read-only (`chmod -R
    // a-w`): running as another user is no way on.
    let location = backend.location();
    let euid = crate::fsmeta::euid();
    // The folder that refused the write is this user's (a `chown` of the
    // repository's top folder alone leaves the others another's).
    let own = match e {
        Error::Io { context, .. } => {
            euid != 0
                && context
                    .split_once(' ')
                    .and_then(|(_, path)| std::path::Path::new(path).parent().map(|p| p.to_owned()))
                    .is_some_and(|folder| std::fs::metadata(folder).is_ok_and(|m| m.uid() == euid))
        }
        _ => false,
    };
    if e.is_read_only_filesystem() {
        format!(
            "the repository's filesystem is mounted read-only, and {needs}: remount it \
             read-write{also}"
        )
    } else if own {
        format!(
            "this user owns the repository but may not write to it (its files or folders \
             are read-only), and {needs}: `chmod -R u+w {}` gives write access back{also}",
            // Not taken for an option.
            shell_quoted(&if location.starts_with('-') {
                format!("./{location}")
            } else {
                location.clone()
            })
        )
    } else {
        format!(
            "this user may not write to the repository, and {needs}: run it as a user who \
             may{also}"
        )
    }
}

/// `text` as one word for a shell: quoted where it holds anything but
/// letters, digits and `/._-+,:@%`.
fn shell_quoted(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn remove_stale(
    backend: &dyn Backend,
    key: &MasterKey,
    force: bool,
    mine: &str,
) -> Result<Unlocked> {
    let (listed, mut unreadable) = list_all(backend, key)?;
    let mut empty = Vec::new();
    if !force {
        (empty, unreadable) = unreadable
            .into_iter()
            .partition(|name| backend.size(FileKind::Lock, name).is_ok_and(|n| n == 0));
    }
    for name in if force { &unreadable } else { &empty } {
        match backend.remove(FileKind::Lock, name) {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    }
    let judge = Judge::new(&listed, mine);
    let (host, ns) = (crate::hostname(), PidNamespace::current());
    let (mut removed, mut left) = (Vec::new(), Vec::new());
    let mut maybe_live = false;
    for lock in listed.iter().filter(|l| l.name != mine) {
        if force || judge.is_stale(lock) {
            match backend.remove(FileKind::Lock, &lock.name) {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
            maybe_live |= !lock.info.is_of_the_dead(&host, ns);
            removed.push(lock.info.clone());
        } else {
            left.push(lock.info.clone());
        }
    }
    if maybe_live {
        settle(crate::fault::lock_knobs());
    }
    Ok(Unlocked {
        removed,
        left,
        unreadable,
        empty,
    })
}

/// `d` as a short text for messages: "90 s", "5 min", "2 h".
fn humantime_secs(d: Duration) -> String {
    let s = d.as_secs();
    if d >= crate::LONGEST_WAIT {
        "without end".to_string()
    } else if s >= 3600 && s % 3600 == 0 {
        format!("{} h", s / 3600)
    } else if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::MemBackend;

    #[test]
    fn shell_quoted_words_paste_as_one() {
        assert_eq!(shell_quoted("/srv/repo-1"), "/srv/repo-1");
        assert_eq!(shell_quoted("u 3"), "'u 3'");
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
        assert_eq!(shell_quoted(""), "''");
    }
    use crate::fault::LockKnobs;

    /// Hooks that refuse to read every lock file but the caller's own
    /// (those written through them), as a filesystem refuses a lock file
    /// of another user that is not readable to this one.
    struct Denied {
        own: Mutex<Vec<String>>,
    }

    impl crate::backend::testing::Hooks for Denied {
        fn read(&self, kind: FileKind, name: &str) -> Option<Result<crate::backend::Data>> {
            let own = self.own.lock().unwrap().iter().any(|n| n == name);
            (kind == FileKind::Lock && !own).then(|| {
                Err(Error::path(
                    "open",
                    std::path::Path::new(&format!("/repo/locks/{name}")),
                    std::io::Error::from_raw_os_error(libc::EACCES),
                ))
            })
        }
        fn write(&self, _kind: FileKind, name: &str) -> Option<Result<()>> {
            self.own.lock().unwrap().push(name.to_string());
            None
        }
    }

    /// A lock file that cannot be read (permission denied) may be a live
    /// gc's: it holds as an exclusive lock against shared and exclusive
    /// commands alike, with a message naming the file and what to do,
    /// until the store's time of it says it is stale.
    #[test]
    fn a_lock_file_that_cannot_be_read_holds_as_an_exclusive_lock_until_stale() {
        let key = MasterKey::generate();
        let mem = MemBackend::default();
        let name = "cd".repeat(32);
        mem.write(FileKind::Lock, &name, b"someone else's").unwrap();
        let backend = Arc::new(crate::backend::testing::Hooked {
            inner: mem,
            hooks: Denied {
                own: Mutex::new(Vec::new()),
            },
        });
        for (exclusive, command) in [(true, "gc"), (false, "backup")] {
            let err = acquire(backend.clone(), &key, exclusive, command, Duration::ZERO)
                .err()
                .unwrap_or_else(|| panic!("{command} ran beside it"));
            assert!(matches!(err, Error::Locked(_)), "{err}");
            let err = err.to_string();
            assert!(err.contains("a lock file that cannot be read"), "{err}");
            assert!(err.contains(&format!("/repo/locks/{name}")), "{err}");
            assert!(err.contains("Permission denied"), "{err}");
            assert!(err.contains("`cairn unlock --force`"), "{err}");
        }
        backend.inner.set_written(
            FileKind::Lock,
            &name,
            SystemTime::now() - STALE_AFTER - Duration::from_secs(60),
        );
        drop(acquire(backend.clone(), &key, false, "backup", Duration::ZERO).unwrap());
    }

    fn take(backend: &Arc<MemBackend>, key: &MasterKey, knobs: LockKnobs) -> LockGuard {
        match acquire_with(
            backend.clone(),
            key,
            false,
            "backup",
            Duration::ZERO,
            knobs,
            false,
        ) {
            Ok(Acquired::Held(guard)) => guard,
            _ => panic!("no lock"),
        }
    }

    fn aged(secs: u64) -> LockKnobs {
        LockKnobs {
            age: Duration::from_secs(secs),
            ..LockKnobs::default()
        }
    }

    /// The one lock file in the repository.
    fn only_lock(backend: &MemBackend, key: &MasterKey) -> (String, LockInfo) {
        let mut all = list(backend, key).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        all.pop().unwrap()
    }

    #[test]
    fn a_fresh_lock_passes_until_its_file_is_removed() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let guard = take(&backend, &key, LockKnobs::default());
        guard.check("x").unwrap();
        guard.confirm("x").unwrap();
        let (name, _) = only_lock(&backend, &key);
        backend.remove(FileKind::Lock, &name).unwrap();
        // Without reading, a fresh lock cannot notice; confirming does.
        guard.check("x").unwrap();
        let err = guard.confirm("nothing published").unwrap_err().to_string();
        assert!(
            err.contains("lock lost") && err.contains("unlock --force"),
            "{err}"
        );
        assert!(err.ends_with("; nothing published"), "{err}");
        // Lost for good: even the cheap check fails now.
        assert!(guard
            .check("x")
            .unwrap_err()
            .to_string()
            .contains("lock lost"));
    }

    #[test]
    fn an_unreachable_store_fails_the_confirmation_but_loses_nothing() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let guard = take(&backend, &key, LockKnobs::default());
        backend.fail_next(1, true);
        let err = guard.confirm("x").unwrap_err();
        assert!(err.is_transient(), "the store's own error: {err}");
        assert!(!guard.is_lost());
        guard.confirm("x").unwrap();
        let (name, _) = only_lock(&backend, &key);
        backend.remove(FileKind::Lock, &name).unwrap();
        assert!(guard.confirm("x").is_err());
        assert!(guard.is_lost());
    }

    #[test]
    fn an_old_lock_is_confirmed_and_refreshed_before_going_on() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let guard = take(&backend, &key, aged(16 * 60));
        let (before, old) = only_lock(&backend, &key);
        assert!(crate::now_ns() - old.time_ns >= 16 * 60 * 1_000_000_000);
        guard.check("x").unwrap();
        let (after, new) = only_lock(&backend, &key);
        assert_ne!(before, after, "the lock file was replaced");
        assert!(crate::now_ns() - new.time_ns < 60 * 1_000_000_000);
        // Fresh now: the next check does no IO and passes.
        guard.check("x").unwrap();
        assert_eq!(only_lock(&backend, &key).0, after);
        drop(guard);
        assert!(list(&*backend, &key).unwrap().is_empty());
    }

    #[test]
    fn an_old_lock_that_cannot_be_refreshed_fails_the_check() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let knobs = LockKnobs {
            refresh_fails: true,
            ..aged(16 * 60)
        };
        let guard = take(&backend, &key, knobs);
        let err = guard.check("nothing published").unwrap_err().to_string();
        assert!(
            err.contains("lock not refreshed for 16m") && err.contains("refresh refused"),
            "{err}"
        );
        // An old lock whose file is gone is lost, refresh or not.
        let (name, _) = only_lock(&backend, &key);
        backend.remove(FileKind::Lock, &name).unwrap();
        let err = guard.check("x").unwrap_err().to_string();
        assert!(err.contains("lock lost"), "{err}");
    }

    #[test]
    fn an_expired_lock_fails_and_is_not_refreshed() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let guard = take(&backend, &key, aged(21 * 60));
        let (name, _) = only_lock(&backend, &key);
        let err = guard.check("nothing published").unwrap_err().to_string();
        assert!(
            err.starts_with("lock expired: last refreshed 21m") && err.contains("stale"),
            "{err}"
        );
        assert!(guard.confirm("x").is_err());
        assert_eq!(only_lock(&backend, &key).0, name, "not refreshed");
    }

    #[test]
    fn the_refresher_advances_the_lock_and_never_restores_a_removed_one() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let knobs = LockKnobs {
            refresh_every: Some(Duration::from_millis(10)),
            ..LockKnobs::default()
        };
        let guard = take(&backend, &key, knobs);
        let (_, info) = only_lock(&backend, &key);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let locks = list(&*backend, &key).unwrap();
            if locks.iter().any(|(_, i)| i.time_ns > info.time_ns) {
                break;
            }
            assert!(Instant::now() < deadline, "the lock was never refreshed");
            thread::sleep(Duration::from_millis(5));
        }
        // Remove the lock file (again, should a refresh have replaced it in
        // between): the holder learns it lost the lock, and the refresher
        // does not write it back.
        while guard.check("x").is_ok() {
            for (name, _) in list(&*backend, &key).unwrap() {
                backend.remove(FileKind::Lock, &name).unwrap();
            }
            assert!(Instant::now() < deadline, "the loss went unnoticed");
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(50));
        assert!(list(&*backend, &key).unwrap().is_empty());
    }

    /// Makes the holder's last reading of its lock file
    /// [`RECONFIRM_EVERY`] old.
    fn unread_for_a_while(guard: &LockGuard) {
        let mut st = guard.held.state().unwrap();
        st.read = Instant::now()
            .checked_sub(RECONFIRM_EVERY)
            .expect("the monotonic clock is past RECONFIRM_EVERY");
    }

    /// A check reads the lock file once its last reading is
    /// [`RECONFIRM_EVERY`] old, so a holder whose lock was removed stops
    /// within that of the removal, not only at its next publication.
    #[test]
    fn a_check_reads_the_lock_file_every_few_seconds() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let guard = take(&backend, &key, LockKnobs::default());
        let (name, _) = only_lock(&backend, &key);
        backend.remove(FileKind::Lock, &name).unwrap();
        guard.check("x").unwrap();
        unread_for_a_while(&guard);
        let err = guard.check("x").unwrap_err().to_string();
        assert!(err.contains("lock lost"), "{err}");
        // A store that fails that reading fails no check.
        let guard = take(&backend, &key, LockKnobs::default());
        unread_for_a_while(&guard);
        backend.fail_next(1, true);
        guard.check("x").unwrap();
        assert!(!guard.is_lost());
    }

    /// The mirror of a live backup's lock taken for stale: a gc on a host
    /// whose clock (and the store's file times) lag 40 minutes holds a
    /// lock a backup elsewhere takes for stale. The backup removes it
    /// before going on, and waits; the gc, at its next check, finds its
    /// lock gone and stops deleting.
    #[test]
    fn a_live_gc_whose_lock_looks_stale_stops_once_a_backup_passes_it_over() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let lagging = LockKnobs {
            clock_lag: Duration::from_secs(40 * 60),
            ..LockKnobs::default()
        };
        let gc = match acquire_with(
            backend.clone(),
            &key,
            true,
            "gc",
            Duration::ZERO,
            lagging,
            false,
        ) {
            Ok(Acquired::Held(guard)) => guard,
            _ => panic!("no lock for gc"),
        };
        let (name, info) = only_lock(&backend, &key);
        assert!(crate::now_ns() - info.time_ns > 39 * 60 * 1_000_000_000);
        // Its own clock agrees with itself: the lock is fresh to gc.
        gc.confirm("x").unwrap();
        backend.set_written(
            FileKind::Lock,
            &name,
            SystemTime::now() - Duration::from_secs(40 * 60),
        );
        let backup = take(&backend, &key, LockKnobs::default());
        assert_eq!(only_lock(&backend, &key).1.command, "backup");
        unread_for_a_while(&gc);
        let err = gc.check("gc stopped part way").unwrap_err().to_string();
        assert!(err.contains("lock lost"), "{err}");
        drop(backup);
    }

    /// A lock removed while its holder wrote what it confirmed it for
    /// (the write slower than the remover's settling) makes the holder
    /// take the write back; a store that fails the second confirmation
    /// leaves it.
    #[test]
    fn what_was_published_as_the_lock_was_lost_is_taken_back() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let guard = take(&backend, &key, LockKnobs::default());
        let names = ["ab".repeat(32)];
        backend.write(FileKind::Snapshot, &names[0], b"s").unwrap();
        backend.fail_next(1, true);
        guard
            .after_publishing(FileKind::Snapshot, &names, "x")
            .unwrap();
        guard
            .after_publishing(FileKind::Snapshot, &names, "x")
            .unwrap();
        assert_eq!(backend.list(FileKind::Snapshot).unwrap().len(), 1);
        let (lock, _) = only_lock(&backend, &key);
        backend.remove(FileKind::Lock, &lock).unwrap();
        let err = guard
            .after_publishing(FileKind::Snapshot, &names, "taken back")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lock lost") && err.ends_with("taken back"),
            "{err}"
        );
        assert!(backend.list(FileKind::Snapshot).unwrap().is_empty());
    }

    /// A holder's lock file emptied or torn is no lock to others, who
    /// ignore it: to its holder it is lost too.
    #[test]
    fn a_lock_file_emptied_or_torn_is_lost_to_its_holder() {
        let mut torn = codec::header(MAGIC, VERSION);
        torn.extend_from_slice(b"torn");
        for bytes in [Vec::new(), torn] {
            let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
            let guard = take(&backend, &key, LockKnobs::default());
            let (name, _) = only_lock(&backend, &key);
            backend.write(FileKind::Lock, &name, &bytes).unwrap();
            let err = guard.confirm("nothing published").unwrap_err().to_string();
            assert!(
                err.contains("no longer holds what this process wrote"),
                "{err}"
            );
            assert!(guard.is_lost());
        }
    }

    /// A pid above any pid_max: no process has it, here or anywhere.
    const NO_SUCH_PID: u32 = 0x3fff_fff0;

    fn here() -> &'static PidNamespace {
        PidNamespace::current().expect("/proc tells this process's pid namespace")
    }

    /// Writes a fresh lock of this host, with a pid that does not exist
    /// here, from the pid namespace `ns`: exclusive if held by `gc`.
    fn dead_pid_lock(backend: &MemBackend, key: &MasterKey, ns: Option<PidNamespace>, by: &str) {
        let info = LockInfo {
            version: VERSION,
            host: crate::hostname(),
            pid: NO_SUCH_PID,
            pid_namespace: ns,
            time_ns: crate::now_ns(),
            exclusive: by == "gc",
            command: by.into(),
        };
        write_info(backend, key, &info).unwrap();
        assert_eq!(only_lock(backend, key).1, info);
    }

    /// The same host name does not mean the same pids: a container run
    /// with the host's network, or a cloned machine, holds a lock whose pid
    /// is not alive here. Such a lock, and one of an older cairn that
    /// recorded no namespace, holds until it is old, both ways (a gc
    /// beside a backup's lock, a backup beside a gc's); `unlock` leaves
    /// it, and a holder lists it among the others.
    #[test]
    fn a_fresh_lock_of_this_host_from_elsewhere_holds_though_its_pid_is_not_ours() {
        let other_ns = PidNamespace {
            inode: here().inode ^ 1,
            ..here().clone()
        };
        let other_boot = PidNamespace {
            boot_id: "00000000-0000-4000-8000-000000000000".into(),
            ..here().clone()
        };
        for ns in [None, Some(other_ns), Some(other_boot)] {
            for (held, kind, taking) in [("backup", "shared", "gc"), ("gc", "exclusive", "backup")]
            {
                let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
                dead_pid_lock(&backend, &key, ns.clone(), held);
                let err = acquire(
                    backend.clone(),
                    &key,
                    taking == "gc",
                    taking,
                    Duration::ZERO,
                )
                .err()
                .unwrap_or_else(|| panic!("{ns:?} {held}: a live holder's lock taken"));
                assert!(matches!(err, Error::Locked(_)), "{ns:?}: {err}");
                let err = err.to_string();
                let holder = format!(
                    "{kind} lock held by `{held}` (pid {NO_SUCH_PID} on {}) since",
                    crate::hostname()
                );
                assert!(err.contains(&holder), "{ns:?}: {err}");
                assert!(remove_locks(&*backend, &key, false)
                    .unwrap()
                    .removed
                    .is_empty());
                assert_eq!(list(&*backend, &key).unwrap().len(), 1, "{ns:?}");
            }
            // Beside another shared lock a backup runs, and counts it in.
            let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
            dead_pid_lock(&backend, &key, ns.clone(), "backup");
            let guard = acquire(backend.clone(), &key, false, "backup", Duration::ZERO).unwrap();
            assert_eq!(guard.others().unwrap().len(), 1, "{ns:?}");
        }
    }

    /// A lock file of a later format or record version holds as an
    /// exclusive lock, against gc and backup alike, naming why it cannot
    /// be read;
    /// `unlock` leaves it while fresh and `unlock --force` removes it;
    /// once the store says it is older than [`STALE_AFTER`] it is stale.
    #[test]
    fn a_lock_file_of_a_newer_cairn_holds_until_it_is_stale() {
        let key = MasterKey::generate();
        let later = {
            let mut b = codec::header(MAGIC, VERSION + 1);
            b.extend_from_slice(&[0; 40]);
            b
        };
        // A backup's lock from elsewhere, of record version `version`.
        let record = |version| LockInfo {
            version,
            host: "elsewhere".into(),
            pid: 7,
            pid_namespace: None,
            time_ns: crate::now_ns(),
            exclusive: false,
            command: "backup".into(),
        };
        let newer_record = record(VERSION + 1).encode(&key);
        let other_key = record(VERSION).encode(&MasterKey::generate());
        let name = "ab".repeat(32);
        for (what, bytes, why) in [
            (
                "a later format",
                later,
                "(format version 2; this cairn reads 1)",
            ),
            (
                "a later record",
                newer_record,
                "(record version 2; this cairn reads 1)",
            ),
        ] {
            let backend = Arc::new(MemBackend::default());
            backend.write(FileKind::Lock, &name, &bytes).unwrap();
            for (exclusive, command) in [(true, "gc"), (false, "backup")] {
                let err = acquire(backend.clone(), &key, exclusive, command, Duration::ZERO)
                    .err()
                    .unwrap_or_else(|| panic!("{what}: {command} ran beside it"));
                assert!(matches!(err, Error::Locked(_)), "{what}: {err}");
                let err = err.to_string();
                assert!(
                    err.contains("a lock file of a newer cairn ("),
                    "{what}: {err}"
                );
                assert!(err.contains(why), "{what}: {err}");
            }
            assert!(remove_locks(&*backend, &key, false)
                .unwrap()
                .removed
                .is_empty());
            backend.set_written(
                FileKind::Lock,
                &name,
                SystemTime::now() - STALE_AFTER - Duration::from_secs(60),
            );
            let guard = acquire(backend.clone(), &key, true, "gc", Duration::ZERO)
                .unwrap_or_else(|e| panic!("{what}: stale, yet {e}"));
            drop(guard);
            // Taken for stale, it was removed.
            assert!(backend.list(FileKind::Lock).unwrap().is_empty(), "{what}");
            backend.write(FileKind::Lock, &name, &bytes).unwrap();
            let removed = remove_locks(&*backend, &key, true).unwrap().removed;
            assert_eq!(removed.len(), 1, "{what}");
            assert!(removed[0].is_of_a_newer_cairn(), "{what}");
            assert!(backend.list(FileKind::Lock).unwrap().is_empty(), "{what}");
        }
        // What a crash leaves of a lock file (empty, torn), and one of
        // another key, are no locks.
        let mut torn = codec::header(MAGIC, VERSION);
        torn.extend_from_slice(b"torn");
        for bytes in [&b""[..], &[0; 120], &torn, &other_key] {
            let backend = Arc::new(MemBackend::default());
            backend.write(FileKind::Lock, &name, bytes).unwrap();
            acquire(backend.clone(), &key, true, "gc", Duration::ZERO).unwrap();
        }
    }

    /// A zombie (exited, not yet reaped) is no live holder; a running
    /// process is.
    #[test]
    fn a_zombie_process_is_not_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(process_alive(pid));
        // SAFETY: signals the child this test started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        // Dead once the kernel has taken it down; not reaped until `wait`.
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(!process_alive(pid), "a killed, unreaped child is dead");
        assert!(is_zombie(pid as libc::pid_t));
        child.wait().unwrap();
        assert!(process_alive(std::process::id()));
    }

    /// In this very pid namespace a dead pid is a dead holder: its lock is
    /// taken over at once, and removed by whoever takes a lock (so that a
    /// new process given the pid cannot make it hold again) or by
    /// `unlock`.
    #[test]
    fn a_lock_of_a_dead_process_in_this_namespace_is_stale_at_once() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        dead_pid_lock(&backend, &key, Some(here().clone()), "backup");
        let guard = acquire(backend.clone(), &key, true, "gc", Duration::ZERO).unwrap();
        assert!(guard.others().unwrap().is_empty());
        assert_eq!(
            list(&*backend, &key).unwrap().len(),
            1,
            "the dead lock is gone"
        );
        drop(guard);
        assert!(list(&*backend, &key).unwrap().is_empty());
        dead_pid_lock(&backend, &key, Some(here().clone()), "backup");
        let removed = remove_locks(&*backend, &key, false).unwrap().removed;
        assert_eq!(removed.len(), 1);
        assert!(list(&*backend, &key).unwrap().is_empty());
        // A reader removes it too.
        dead_pid_lock(&backend, &key, Some(here().clone()), "gc");
        let guard = acquire_reader(backend.clone(), &key, "restore", Duration::ZERO).unwrap();
        assert_eq!(
            list(&*backend, &key).unwrap().len(),
            1,
            "the dead lock is gone"
        );
        drop(guard);
        // And a backup goes ahead beside a dead gc's lock.
        dead_pid_lock(&backend, &key, Some(here().clone()), "gc");
        let guard = acquire(backend.clone(), &key, false, "backup", Duration::ZERO).unwrap();
        assert!(guard.others().unwrap().is_empty());
    }

    /// A lock's age counts by its own time and by the store's clock, and
    /// it is stale only when both say it is old. A holder whose clock lags
    /// 40 minutes writes a lock that looks 40 minutes old by its time but
    /// that the store wrote a moment ago: it holds, and the refusal says
    /// why. A lock the store wrote 40 minutes ago whose time says it is
    /// fresh (the holder's clock ahead) holds too. Old by both, it is
    /// stale: taken over, listed by nobody, removed by `unlock`.
    #[test]
    fn a_lock_is_old_only_when_its_time_and_the_store_s_clock_agree() {
        let forty = Duration::from_secs(40 * 60);
        // The holder: alive (this test's pid), seen from another pid
        // namespace, so that only age can make it stale.
        let lock = |time_ns: i64| LockInfo {
            version: VERSION,
            host: crate::hostname(),
            pid: std::process::id(),
            pid_namespace: None,
            time_ns,
            exclusive: true,
            command: "gc".into(),
        };
        let old_ns = crate::now_ns() - forty.as_nanos() as i64;
        let long_ago = SystemTime::now() - forty;
        for (time_ns, written, stale) in [
            (old_ns, None, false),
            (crate::now_ns(), Some(long_ago), false),
            (old_ns, Some(long_ago), true),
        ] {
            let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
            let name = write_info(&*backend, &key, &lock(time_ns)).unwrap();
            if let Some(t) = written {
                backend.set_written(FileKind::Lock, &name, t);
            }
            let case = format!("time {time_ns}, written {written:?}");
            let taken = acquire(backend.clone(), &key, false, "backup", Duration::ZERO);
            match taken {
                Ok(guard) => {
                    assert!(stale, "{case}: a live lock taken over");
                    assert!(guard.others().unwrap().is_empty(), "{case}");
                    drop(guard);
                    // Removed by the backup that took it over; `unlock`
                    // removes one too.
                    assert!(list(&*backend, &key).unwrap().is_empty(), "{case}");
                    let name = write_info(&*backend, &key, &lock(time_ns)).unwrap();
                    backend.set_written(FileKind::Lock, &name, long_ago);
                    assert_eq!(
                        remove_locks(&*backend, &key, false).unwrap().removed.len(),
                        1
                    );
                    assert!(list(&*backend, &key).unwrap().is_empty(), "{case}");
                }
                Err(err) => {
                    assert!(!stale, "{case}: a stale lock held: {err}");
                    let err = err.to_string();
                    assert!(err.contains("exclusive lock held by `gc`"), "{err}");
                    let lags = "that host's clock is about 40 minutes behind this host's";
                    let ahead = "that host's clock is about 40 minutes ahead of this host's";
                    let expect = if written.is_none() { lags } else { ahead };
                    assert!(err.contains(expect), "{case}: {err}");
                    // A lag may be a copy's, which says so.
                    assert_eq!(
                        err.contains("or the lock file was copied since"),
                        written.is_none(),
                        "{case}: {err}"
                    );
                    assert!(remove_locks(&*backend, &key, false)
                        .unwrap()
                        .removed
                        .is_empty());
                    assert_eq!(list(&*backend, &key).unwrap().len(), 1, "{case}");
                }
            }
        }
    }

    #[test]
    fn a_clock_difference_is_said_in_a_unit_read_at_a_glance() {
        for (secs, said) in [
            (300, "5 minutes"),
            (60 * 119, "119 minutes"),
            (2 * 3600, "2 hours"),
            (47 * 3600, "47 hours"),
            (2 * 86_400, "2 days"),
            (1_322_749 * 60, "919 days"),
            (86_400 + 1, "24 hours"),
        ] {
            assert_eq!(about(secs), said, "{secs}");
        }
        assert_eq!(about(60), "1 minute");
    }

    /// The v1 record as cairns before the pid namespace decode it.
    #[derive(Deserialize)]
    struct OlderLockInfo {
        version: u32,
        host: String,
        pid: u32,
        time_ns: i64,
        exclusive: bool,
        command: String,
    }

    /// A lock this cairn writes is one an older cairn decodes (it skips
    /// what it cannot) and whose host it does not take for its own, so it
    /// judges it by age alone; this cairn reads the namespace back.
    #[test]
    fn a_lock_with_its_namespace_is_a_version_1_record_older_cairns_keep() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let guard = acquire(backend.clone(), &key, false, "backup", Duration::ZERO).unwrap();
        let (name, info) = only_lock(&backend, &key);
        assert_eq!(info.host, crate::hostname());
        assert_eq!(info.pid_namespace.as_ref(), Some(here()));
        let bytes = backend.read(FileKind::Lock, &name).unwrap();
        codec::check_header(&bytes, MAGIC, 1, "lock").unwrap();
        let plain = key.open(&bytes[12..], &bytes[..12], "lock").unwrap();
        let older: OlderLockInfo = codec::decode(&plain, "lock").unwrap();
        assert_eq!(
            (older.version, older.pid, older.time_ns, older.exclusive),
            (1, std::process::id(), info.time_ns, false)
        );
        assert_eq!(older.command, "backup");
        let ns = here();
        assert_eq!(
            older.host,
            format!(
                "{} [pid ns {}, boot {}]",
                crate::hostname(),
                ns.inode,
                ns.boot_id
            )
        );
        assert_ne!(older.host, crate::hostname());
        drop(guard);
    }

    #[test]
    fn only_an_exact_namespace_tag_is_read_as_one() {
        let ns = PidNamespace {
            inode: 4026531836,
            boot_id: "f151b0d6-7e50-4683-bc62-71b0e2acbcb2".into(),
        };
        let tagged = ns.tag("a [pid ns 1, boot 2]");
        assert_eq!(
            PidNamespace::untag(&tagged),
            Some(("a [pid ns 1, boot 2]", ns))
        );
        for plain in [
            "host",
            "",
            "h [pid ns 1, boot ]",
            "h [pid ns 01, boot ab]",
            "h [pid ns +1, boot ab]",
            "h [pid ns 1, boot a b]",
            "h [pid ns 1, boot ab] ",
            "h [pid ns 1, boot ab]]",
            "h [pid ns x, boot ab]",
        ] {
            assert_eq!(PidNamespace::untag(plain), None, "{plain:?}");
            let info = LockInfo {
                version: VERSION,
                host: plain.into(),
                pid: 1,
                pid_namespace: None,
                time_ns: 1,
                exclusive: false,
                command: "c".into(),
            };
            let back: LockInfo = codec::decode(&codec::encode(&info), "lock").unwrap();
            assert_eq!(back, info);
        }
    }

    /// A lock refreshed between the listing and the read of its old file
    /// is found under its new name: listing it as gone would let gc go
    /// ahead beside the backup holding it.
    #[test]
    fn a_lock_refreshed_while_listed_is_still_found() {
        use crate::backend::local::LocalBackend;
        use crate::backend::testing::{Hooked, Hooks};
        use std::sync::atomic::{AtomicBool, Ordering};

        struct RefreshOnRead {
            store: LocalBackend,
            key: MasterKey,
            old: String,
            fresh: LockInfo,
            done: AtomicBool,
        }
        impl Hooks for RefreshOnRead {
            fn read(&self, kind: FileKind, name: &str) -> Option<Result<crate::backend::Data>> {
                if kind == FileKind::Lock
                    && name == self.old
                    && !self.done.swap(true, Ordering::SeqCst)
                {
                    // What a holder's refresh does: the new file, then
                    // the old one removed.
                    write_info(&self.store, &self.key, &self.fresh).unwrap();
                    self.store.remove(FileKind::Lock, &self.old).unwrap();
                }
                None
            }
        }

        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let store = LocalBackend::new(dir.path());
        store.create().unwrap();
        let info = LockInfo {
            version: VERSION,
            host: "h".into(),
            pid: 7,
            pid_namespace: None,
            time_ns: 1,
            exclusive: false,
            command: "backup".into(),
        };
        let old = write_info(&store, &key, &info).unwrap();
        let fresh = LockInfo {
            time_ns: 2,
            ..info.clone()
        };
        let backend = Hooked {
            inner: LocalBackend::new(dir.path()),
            hooks: RefreshOnRead {
                store,
                key: key.clone(),
                old: old.clone(),
                fresh,
                done: AtomicBool::new(false),
            },
        };
        let found = list(&backend, &key).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_ne!(found[0].0, old);
        assert_eq!(found[0].1.time_ns, 2);
    }

    /// A reader on a store that refuses its lock's write goes on without
    /// one unless a live exclusive lock is there; one whose lock is
    /// written but cannot be removed after a conflict is refused, never
    /// let through unprotected.
    #[test]
    fn readers_of_unwritable_stores_still_respect_exclusive_locks() {
        let (backend, key) = (Arc::new(MemBackend::default()), MasterKey::generate());
        let read = |backend: &Arc<MemBackend>| {
            acquire_reader(backend.clone(), &key, "restore", Duration::ZERO)
        };
        // Writable: a shared lock is held.
        assert!(matches!(read(&backend), Ok(Acquired::Held(_))));

        // Read-only, a backup's shared lock there: on without a lock.
        let backup = take(&backend, &key, LockKnobs::default());
        backend.set_read_only(true);
        match read(&backend) {
            Ok(Acquired::Unwritable(e)) => assert!(e.is_write_refused(), "{e}"),
            _ => panic!("expected to go on without a lock"),
        }
        backend.set_read_only(false);
        drop(backup);

        // Read-only, a gc's exclusive lock there: refused, naming it.
        let gc = match acquire_with(
            backend.clone(),
            &key,
            true,
            "gc",
            Duration::ZERO,
            LockKnobs::default(),
            false,
        ) {
            Ok(Acquired::Held(guard)) => guard,
            _ => panic!("no lock for gc"),
        };
        backend.set_read_only(true);
        match read(&backend) {
            Err(Error::Locked(why)) => assert!(why.contains("`gc`"), "{why}"),
            _ => panic!("expected a refusal while gc holds its lock"),
        }
        backend.set_read_only(false);

        // The lock written, its removal after the conflict refused: a
        // refusal too, saying its own lock file is left.
        backend.set_no_removal(true);
        match read(&backend) {
            Err(Error::Locked(why)) => {
                assert!(why.contains("could not be removed"), "{why}")
            }
            _ => panic!("expected a refusal"),
        }
        backend.set_no_removal(false);
        drop(gc);
    }
}
