//! Shared helpers for the integration tests: running the real `cairn`
//! binary, generating deterministic data, and comparing directory trees
//! (content and metadata).

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// The password of every test repository.
pub const PASSWORD: &str = "correct horse battery staple";

/// Init arguments for fast tests: cheap key derivation, small chunks.
pub const FAST_INIT: &[&str] = &[
    "--kdf-memory-kib",
    "64",
    "--kdf-iterations",
    "1",
    "--chunk-min",
    "64K",
    "--chunk-avg",
    "256K",
    "--chunk-max",
    "1M",
];

/// Init arguments with cheap key derivation and the default chunk sizes.
pub const FAST_KDF_ONLY: &[&str] = &["--kdf-memory-kib", "64", "--kdf-iterations", "1"];

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

/// A `cairn` command with none of cairn's environment variables inherited
/// and standard input closed (so nothing ever prompts).
pub fn cairn() -> Command {
    let mut c = Command::new(bin());
    for var in [
        "CAIRN_REPO",
        "CAIRN_PASSWORD",
        "CAIRN_PASSWORD_FILE",
        "CAIRN_KEY_FILE",
        "CAIRN_CRASH_AT",
    ] {
        c.env_remove(var);
    }
    // Files a test wrote a moment before its first backup count as
    // unchanged in the next; `tests/kinds.rs` checks the real window.
    c.env("CAIRN_TEST_RACY_WINDOW_NS", "0");
    c.stdin(Stdio::null());
    c
}

/// Whether commands may run in a private mount namespace (`unshare -m`,
/// as root), where what they mount goes away with them.
pub fn mount_namespace() -> bool {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `outer` (`unshare …`, `nsenter …`), then `inner`'s program and
/// arguments after it, with `inner`'s environment settings and standard
/// input closed: `inner` run by a wrapper.
pub fn wrapping(mut outer: Command, inner: &Command) -> Command {
    outer
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(Stdio::null());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => outer.env(k, v),
            None => outer.env_remove(k),
        };
    }
    outer
}

/// The outcome of running the binary.
pub struct Out {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// Asserts the command succeeded; returns self.
    #[track_caller]
    pub fn success(self) -> Out {
        assert_eq!(self.code, 0, "command failed:\n{self}");
        self
    }

    /// Standard output parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

/// Runs `cmd`, feeding it `stdin` if given.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Out {
    try_run(cmd, stdin).expect("spawn cairn")
}

/// Like [`run`], but returns an error when the process cannot be started.
pub fn try_run(cmd: &mut Command, stdin: Option<&[u8]>) -> std::io::Result<Out> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn()?;
    let feeder = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let out = child.wait_with_output().expect("wait for cairn");
    if let Some(f) = feeder {
        f.join().expect("stdin feeder");
    }
    Ok(Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `cmd` as [`run`] does, without standard input, but kills it if
/// it has not ended after `secs` seconds: `None` then, so a test of
/// something that used to hang fails instead of waiting forever.
pub fn run_within(cmd: &mut Command, secs: u64) -> Option<Out> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cairn");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut out);
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cairn") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    status.map(|s| Out {
        code: s.code().unwrap_or(-1),
        stdout,
        stderr,
    })
}

/// A test repository in its own temporary directory, which also holds
/// whatever scratch directories the test asks for.
pub struct Repo {
    pub path: PathBuf,
    pub dir: TempDir,
}

impl Repo {
    /// A repository with small chunks and cheap key derivation.
    pub fn new() -> Repo {
        Repo::with_init_args(FAST_INIT)
    }

    /// A repository created with these `cairn init` arguments.
    pub fn with_init_args(args: &[&str]) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("repo");
        let repo = Repo { path, dir };
        let mut all = vec!["init"];
        all.extend_from_slice(args);
        repo.run(&all).success();
        assert!(repo.path.join("config").is_file());
        repo
    }

    /// A fresh scratch directory path (not created) inside the test dir.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        assert!(!p.exists(), "scratch {name} used twice");
        p
    }

    /// `cairn -r REPO ARGS` with the password in the environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = cairn();
        c.arg("-r").arg(&self.path).args(args);
        c.env("CAIRN_PASSWORD", PASSWORD);
        c
    }

    /// Runs `cairn -r REPO ARGS`.
    pub fn run(&self, args: &[&str]) -> Out {
        run(&mut self.cmd(args), None)
    }

    /// Runs `cairn -r REPO ARGS` with `stdin` piped in.
    pub fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        run(&mut self.cmd(args), Some(stdin))
    }

    /// Backs up `paths` with `--json` plus `extra`; asserts success and
    /// returns the new snapshot record.
    #[track_caller]
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let mut c = self.cmd(&["backup", "--json"]);
        c.args(extra).args(paths);
        let out = run(&mut c, None).success();
        let v = out.json();
        assert!(v["id"].as_str().is_some_and(|s| s.len() == 64), "{out}");
        v
    }

    /// Backs up `src` dated a day ahead of the clock (a host whose clock
    /// was ahead; `CAIRN_TEST_CLOCK_AHEAD_NS`); returns the snapshot's id.
    #[track_caller]
    pub fn backup_dated_ahead(&self, src: &Path) -> String {
        let mut c = self.cmd(&["backup", "--json"]);
        c.env(
            "CAIRN_TEST_CLOCK_AHEAD_NS",
            (86_400i64 * 1_000_000_000).to_string(),
        )
        .arg(src);
        let out = run(&mut c, None).success();
        out.json()["id"].as_str().expect("an id").to_string()
    }

    /// Every snapshot, oldest first, from `cairn snapshots --json`.
    #[track_caller]
    pub fn snapshots(&self) -> Vec<Value> {
        self.run(&["snapshots", "--json"])
            .success()
            .json()
            .as_array()
            .expect("snapshots --json is an array")
            .clone()
    }

    /// Restores `spec` into `target` with extra arguments; returns the
    /// outcome without checking it.
    pub fn restore_out(&self, spec: &str, target: &Path, extra: &[&str]) -> Out {
        let mut c = self.cmd(&["restore", spec, "--target"]);
        c.arg(target).args(extra);
        run(&mut c, None)
    }

    /// Restores and asserts success.
    #[track_caller]
    pub fn restore(&self, spec: &str, target: &Path, extra: &[&str]) -> Out {
        self.restore_out(spec, target, extra).success()
    }

    /// Sum of the sizes of all files under the repository directory.
    pub fn size(&self) -> u64 {
        dir_size(&self.path)
    }
}

/// Sum of the sizes of all regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).expect("read repo dir") {
        let entry = entry.expect("dir entry");
        let md = entry.metadata().expect("metadata");
        if md.is_dir() {
            total += dir_size(&entry.path());
        } else {
            total += md.len();
        }
    }
    total
}

/// Where a restore into `target` puts the backed-up directory `src`.
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    let abs = fs::canonicalize(src).expect("canonicalize source");
    target.join(abs.strip_prefix("/").expect("absolute"))
}

/// `src` as the absolute path the snapshot records.
pub fn abs(src: &Path) -> String {
    fs::canonicalize(src)
        .expect("canonicalize")
        .to_str()
        .expect("test paths are UTF-8")
        .to_string()
}

/// A deterministic xorshift64* byte stream: incompressible, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Flips a bit in the length field of blob `id`'s entry in the index
/// table at `path` (FORMAT.md: blob id, pack number, offset, length, raw
/// length), leaving the table's MAC as it was, as damage on disk would;
/// checks the field held `length`. False if the table has no such entry.
pub fn damage_index_entry_length(path: &Path, id: &str, length: u64) -> bool {
    let id = hex::decode(id).expect("hex blob id");
    let mut bytes = fs::read(path).expect("read index table");
    let Some(at) = bytes.windows(32).position(|w| w == id) else {
        return false;
    };
    let field = at + 32 + 4 + 4;
    let stored = u32::from_le_bytes(bytes[field..field + 4].try_into().unwrap());
    assert_eq!(
        u64::from(stored),
        length,
        "entry layout as FORMAT.md gives it"
    );
    bytes[field..field + 4].copy_from_slice(&(stored ^ 0x10).to_le_bytes());
    fs::write(path, &bytes).expect("write index table");
    true
}

/// Sets the length field of blob `id`'s entry in the index table at
/// `path` to `length`, leaving the table's MAC as it was, as damage on
/// disk would. False if the table has no such entry.
pub fn set_index_entry_length(path: &Path, id: &str, length: u32) -> bool {
    let id = hex::decode(id).expect("hex blob id");
    let mut bytes = fs::read(path).expect("read index table");
    let Some(at) = bytes.windows(32).position(|w| w == id) else {
        return false;
    };
    let field = at + 32 + 4 + 4;
    bytes[field..field + 4].copy_from_slice(&length.to_le_bytes());
    fs::write(path, &bytes).expect("write index table");
    true
}

/// Writes `len` pseudo-random bytes from `seed` to `path`.
pub fn write_random(path: &Path, seed: u64, len: usize) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create parent");
    }
    fs::write(path, random_bytes(seed, len)).expect("write file");
}

/// Writes `data` to `path`, creating parents.
pub fn write(path: &Path, data: impl AsRef<[u8]>) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create parent");
    }
    fs::write(path, data).expect("write file");
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in path")
}

/// Sets atime and mtime of `path` (not following symlinks).
pub fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsecs as libc::c_long,
    };
    let c = cpath(path);
    // SAFETY: valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Sets the permission bits of `path` (not a symlink).
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `cmd` with its address space limited to `bytes` (`RLIMIT_AS`), so
/// that a command that would allocate more fails instead.
pub fn with_memory_limit(cmd: Command, bytes: u64) -> Command {
    with_limit(cmd, libc::RLIMIT_AS, bytes)
}

/// `cmd` with its open-file limit, soft and hard, at `files`.
pub fn with_file_limit(cmd: Command, files: u64) -> Command {
    with_limit(cmd, libc::RLIMIT_NOFILE, files)
}

/// `cmd` with the resource limit `resource` at `value`, soft and hard.
fn with_limit(mut cmd: Command, resource: libc::__rlimit_resource_t, value: u64) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if libc::setrlimit(resource, &l) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// Creates a FIFO.
pub fn mkfifo(path: &Path, mode: u32) {
    let c = cpath(path);
    // SAFETY: valid C string.
    let r = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    assert_eq!(r, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What an entry is, with its content.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    File { len: u64, hash: String },
    Dir,
    Symlink(Vec<u8>),
    Fifo,
    Other(u32),
}

/// Everything compared about one entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits (0 for symlinks, whose mode Linux fixes).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    /// For regular files: the link count.
    pub nlink: Option<u64>,
    /// For files with several links: the first path (in walk order) that
    /// shares the inode, so link structure is compared, not inode numbers.
    pub link_group: Option<PathBuf>,
    /// Extended attributes (user namespace), sorted.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Relative path (the root is "") → entry.
pub type Manifest = BTreeMap<PathBuf, Entry>;

/// Records the content and metadata of every entry under `root`,
/// including `root` itself as "".
pub fn manifest(root: &Path) -> Manifest {
    let mut out = Manifest::new();
    let mut inodes = HashMap::new();
    walk(root, Path::new(""), &mut out, &mut inodes);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut Manifest, inodes: &mut HashMap<(u64, u64), PathBuf>) {
    let path = root.join(rel);
    let md =
        fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let ft = md.file_type();
    let kind = if ft.is_file() {
        let mut f = fs::File::open(&path).expect("open file");
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).expect("read file");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Kind::File {
            len: md.len(),
            hash: h.finalize().to_hex().to_string(),
        }
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink(
            fs::read_link(&path)
                .expect("readlink")
                .into_os_string()
                .into_encoded_bytes(),
        )
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Other(md.mode() & libc::S_IFMT)
    };
    let link_group = if ft.is_file() && md.nlink() > 1 {
        Some(
            inodes
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.to_path_buf())
                .clone(),
        )
    } else {
        None
    };
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = if ft.is_symlink() {
        Vec::new()
    } else {
        xattr::list(&path)
            .map(|names| {
                names
                    .filter(|n| n.as_bytes().starts_with(b"user."))
                    .filter_map(|n| {
                        let v = xattr::get(&path, &n).ok().flatten()?;
                        Some((n.as_bytes().to_vec(), v))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    xattrs.sort();
    out.insert(
        rel.to_path_buf(),
        Entry {
            kind,
            mode: if ft.is_symlink() {
                0
            } else {
                md.mode() & 0o7777
            },
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
            nlink: ft.is_file().then(|| md.nlink()),
            link_group,
            xattrs,
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&path)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            walk(root, &rel.join(name), out, inodes);
        }
    }
}

/// Asserts two manifests are equal, listing every difference.
#[track_caller]
pub fn assert_manifests_eq(expected: &Manifest, actual: &Manifest, what: &str) {
    let mut diffs = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => diffs.push(format!("missing: {p:?} ({e:?})")),
            Some(a) if a != e => diffs.push(format!(
                "differs: {p:?}\n    expected {e:?}\n    actual   {a:?}"
            )),
            Some(_) => {}
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            diffs.push(format!("unexpected: {p:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} difference(s):\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// Asserts `actual` is identical to `expected`, root directory included.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    assert_manifests_eq(
        &manifest(expected),
        &manifest(actual),
        &format!("{} vs {}", expected.display(), actual.display()),
    );
}

/// Like [`assert_same_tree`] but ignores the two root directories' own
/// metadata (for restores into a fresh target of a subpath).
#[track_caller]
pub fn assert_same_contents(expected: &Path, actual: &Path) {
    let mut e = manifest(expected);
    let mut a = manifest(actual);
    e.remove(Path::new(""));
    a.remove(Path::new(""));
    assert_manifests_eq(
        &e,
        &a,
        &format!("{} vs {}", expected.display(), actual.display()),
    );
}

/// Temporary files a restore left under `root` (`.cairn-restore-*`).
pub fn restore_leftovers(root: &Path) -> Vec<PathBuf> {
    list_paths(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b".cairn-restore-"))
        })
        .collect()
}

/// Relative paths of every entry under `root` (root excluded), sorted.
pub fn list_paths(root: &Path) -> Vec<PathBuf> {
    manifest(root)
        .into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// The snapshot ids (full hex) in `snaps`.
pub fn ids(snaps: &[Value]) -> Vec<String> {
    snaps
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// A file name as an OsStr from raw bytes.
pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Copies the folder `from` to `to`: files, folders, and symlinks as
/// symlinks; anything else is a panic.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &dest);
        } else if kind.is_file() {
            fs::copy(entry.path(), &dest).unwrap();
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &dest).unwrap();
        } else {
            // A FIFO, socket or device: opening one to copy it could wait
            // forever.
            panic!(
                "copy_dir: {} is not a file, folder or symlink",
                entry.path().display()
            );
        }
    }
}

/// A filesystem mounted at a path only the commands run through
/// [`PrivateMount::cmd`] see: in a private mount namespace (`unshare -m`,
/// as root) that a holding process keeps. A test that cannot make one
/// fails, saying so: it would check nothing.
pub struct PrivateMount {
    holder: Child,
    pub at: PathBuf,
    /// The loop device an image is mounted from, detached on drop.
    loop_dev: Option<String>,
}

impl PrivateMount {
    /// A tmpfs of `bytes`.
    pub fn tmpfs(at: &Path, bytes: u64) -> PrivateMount {
        PrivateMount::with_args(
            at,
            "mount -t tmpfs -o size=\"$1\" tmpfs \"$2\" && echo mounted",
            "true",
            &[&bytes.to_string(), &at.to_string_lossy()],
        )
    }

    /// A tmpfs of `bytes` that holds at most `inodes` files and folders,
    /// its root among them.
    pub fn tmpfs_inodes(at: &Path, bytes: u64, inodes: u64) -> PrivateMount {
        PrivateMount::with_args(
            at,
            "mount -t tmpfs -o size=\"$1\",nr_inodes=\"$3\" tmpfs \"$2\" && echo mounted",
            "true",
            &[
                &bytes.to_string(),
                &at.to_string_lossy(),
                &inodes.to_string(),
            ],
        )
    }

    /// A ramfs, which refuses direct IO (`O_DIRECT`) at open and has no
    /// size limit.
    pub fn ramfs(at: &Path) -> PrivateMount {
        PrivateMount::with_args(
            at,
            "mount -t ramfs ramfs \"$1\" && echo mounted",
            "true",
            &[&at.to_string_lossy()],
        )
    }

    /// An exFAT filesystem of `bytes`, as on a USB stick: names that
    /// differ only in case are one name there. It needs `mkfs.exfat`
    /// (exfatprogs), `mount.exfat-fuse` (exfat-fuse) and a loop device.
    pub fn exfat(at: &Path, bytes: u64) -> PrivateMount {
        PrivateMount::image(
            at,
            bytes,
            "mkfs.exfat \"$3\" >/dev/null",
            "mount.exfat-fuse \"$dev\" \"$2\" 2>/dev/null",
        )
    }

    /// An ext4 filesystem of `bytes` with inodes of 128 bytes, which keep
    /// times in whole seconds (as ext3 and some NFS servers do). It needs
    /// `mkfs.ext4` and a loop device.
    pub fn ext4_whole_seconds(at: &Path, bytes: u64) -> PrivateMount {
        PrivateMount::image(
            at,
            bytes,
            "mkfs.ext4 -q -I 128 \"$3\" >/dev/null 2>&1",
            "mount \"$dev\" \"$2\"",
        )
    }

    /// A filesystem made by `mkfs` in an image of `bytes` beside `at`, and
    /// mounted at `at` from a loop device by `mount` (shell commands: `$2`
    /// is `at`, `$3` the image, `$dev` the loop device).
    fn image(at: &Path, bytes: u64, mkfs: &str, mount: &str) -> PrivateMount {
        let image = at.with_extension("img");
        let script = format!(
            "truncate -s \"$1\" \"$3\" && {mkfs} \
             && dev=$(losetup -f --show \"$3\") \
             && {{ {mount} || {{ losetup -d \"$dev\"; exit 1; }}; }} \
             && echo \"mounted $dev\""
        );
        let m = PrivateMount::with_args(
            at,
            &script,
            "umount \"$2\"; losetup -d \"$dev\"",
            &[
                &bytes.to_string(),
                &at.to_string_lossy(),
                &image.to_string_lossy(),
            ],
        );
        // The loop device holds it open.
        let _ = fs::remove_file(&image);
        m
    }

    /// The mounted filesystem's root as this process reaches it: through
    /// the holder's root (`/proc/PID/root`), whose paths take the mounts
    /// of its namespace.
    pub fn reached_from_here(&self) -> PathBuf {
        let at = self.at.strip_prefix("/").unwrap_or(&self.at);
        PathBuf::from(format!("/proc/{}/root", self.holder.id())).join(at)
    }

    /// Runs `script` (with `args` as `$1`, `$2`, …) in a new mount
    /// namespace; it mounts and prints `mounted` and, for an image, the
    /// loop device. The namespace's holder runs `cleanup` after ten
    /// minutes, should the test be killed before it drops the mount.
    fn with_args(at: &Path, script: &str, cleanup: &str, args: &[&str]) -> PrivateMount {
        use std::os::unix::process::CommandExt;
        fs::create_dir_all(at).unwrap();
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!("{script} && {{ sleep 600; {cleanup}; }}"))
            .arg("sh")
            .args(args)
            // A group of its own, so that its `sleep`, which holds the
            // namespace (and its mounts) too, is killed with it.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut words = line.split_whitespace();
        if words.next() != Some("mounted") {
            kill_group(&holder);
            let out = holder.wait_with_output().unwrap();
            panic!(
                "no filesystem to test on: mounting one in a private mount namespace \
                 (unshare -m, as root) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        PrivateMount {
            holder,
            at: at.to_path_buf(),
            loop_dev: words.next().map(str::to_string),
        }
    }

    /// `cmd` run where the filesystem is mounted.
    pub fn cmd(&self, cmd: &Command) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["--target", &self.holder.id().to_string(), "--mount", "--"]);
        wrapping(c, cmd)
    }

    /// Runs `cmd` where the filesystem is mounted.
    pub fn run(&self, cmd: &Command) -> Out {
        run(&mut self.cmd(cmd), None)
    }

    /// Runs `sh -c script` where the filesystem is mounted, asserting
    /// success; returns its standard output.
    #[track_caller]
    pub fn sh(&self, script: &str) -> String {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        let out = self.run(&c);
        assert_eq!(out.code, 0, "{script}: {out}");
        out.stdout
    }

    /// Copies `from` (a folder outside) to `to` (inside), keeping modes.
    pub fn copy_in(&self, from: &Path, to: &Path) {
        let mut c = Command::new("cp");
        c.arg("-a").arg(from).arg(to);
        let out = self.run(&c);
        assert_eq!(out.code, 0, "cp -a into the mounted filesystem: {out}");
    }
}

impl Drop for PrivateMount {
    fn drop(&mut self) {
        if let Some(dev) = &self.loop_dev {
            // A FUSE filesystem's daemon ends with its mount; the loop
            // device outlives the namespace unless detached.
            let mut umount = Command::new("umount");
            umount.arg(&self.at);
            let _ = self.cmd(&umount).output();
            let _ = Command::new("losetup").args(["-d", dev]).output();
        }
        kill_group(&self.holder);
        let _ = self.holder.wait();
        let _ = fs::remove_dir(&self.at);
    }
}

/// Kills `child`'s process group (a [`PrivateMount`]'s holder and its
/// `sleep`: killed alone, the shell left the `sleep` holding the
/// namespace and its mounts for ten minutes after the test).
fn kill_group(child: &Child) {
    // SAFETY: kill has no memory effects; the group is the child's own.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    }
}

/// The uid and gid of `nobody`, whom root's tests run commands as.
pub const NOBODY: u32 = 65534;

/// Gives `p` (and, `recursive`ly, what is beneath it) to user and group
/// `id`.
pub fn give_to(p: &Path, id: u32, recursive: bool) {
    let mut c = Command::new("chown");
    if recursive {
        c.arg("-R");
    }
    let ok = c.arg(format!("{id}:{id}")).arg(p).status().unwrap();
    assert!(ok.success(), "chown {}", p.display());
}

/// Makes `c` run as `nobody`, without supplementary groups (the test
/// runs as root).
pub fn as_nobody(c: &mut Command) {
    as_user(c, NOBODY);
}

/// Makes `c` run as user and group `id`, without supplementary groups.
pub fn as_user(c: &mut Command, id: u32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setgroups, setgid and setuid are async-signal-safe and
    // touch only the child.
    unsafe {
        c.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(id) != 0
                || libc::setuid(id) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes everything under `dir` readable (and its folders searchable) by
/// every user, for a test that runs a command as another.
pub fn readable_by_all(dir: &Path) {
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .expect("run chmod");
    assert!(status.success(), "chmod -R a+rX {}", dir.display());
}

/// Makes a chain of `depth` folders named `a` in `root` (which exists),
/// with a file `f` holding `content` at its bottom: each made and opened
/// from its parent's descriptor, as paths that deep are longer than the
/// kernel takes.
pub fn make_chain(root: &Path, depth: usize, content: &[u8]) {
    make_chain_of(root, c"a", depth, content)
}

/// [`make_chain`] of folders named `name`.
pub fn make_chain_of(root: &Path, name: &std::ffi::CStr, depth: usize, content: &[u8]) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut dir = fs::File::open(root).map(OwnedFd::from).unwrap();
    for _ in 0..depth {
        // SAFETY: `dir` is open and `name` NUL-terminated.
        let fd = unsafe {
            assert_eq!(libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755), 0);
            libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_DIRECTORY)
        };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: a descriptor just opened, owned from here on.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    // SAFETY: as above.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c"f".as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o644,
        )
    };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let mut f = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::Write::write_all(&mut f, content).unwrap();
}

/// How many folders named `a` are chained in `root`, and what the file
/// `f` at the bottom holds (read as [`make_chain`] made it).
pub fn read_chain(root: &Path) -> (usize, Vec<u8>) {
    read_chain_of(root, c"a")
}

/// [`read_chain`] of folders named `name`.
pub fn read_chain_of(root: &Path, name: &std::ffi::CStr) -> (usize, Vec<u8>) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut dir = fs::File::open(root).map(OwnedFd::from).unwrap();
    let mut depth = 0;
    loop {
        // SAFETY: `dir` is open and the name NUL-terminated.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_DIRECTORY) };
        if fd < 0 {
            break;
        }
        // SAFETY: a descriptor just opened, owned from here on.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
        depth += 1;
    }
    // SAFETY: as above.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c"f".as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let mut f = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut content).unwrap();
    (depth, content)
}
