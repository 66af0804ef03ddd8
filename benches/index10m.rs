//! The index at scale: a repository with 10 million index entries.
//!
//! Builds a real repository with the `cairn` binary, backs up a small tree,
//! then adds synthetic index tables (entries naming packs that do not exist:
//! nothing reads them unless asked for those ids) straight through the
//! backend, and measures
//! - peak RSS and wall time of a no-change backup of the small tree, and
//!   of a backup of 100,000 new tiny files (each a chunk no table holds),
//!   before and after the synthetic entries are added (the no-change
//!   backup once more with the tables dropped from the page cache), and
//! - lookups per second in the index, random hits and misses: searching
//!   every table (reading entries with `pread`, before any table has its
//!   directory), through the filter of every id the set builds
//!   once misses make it pay (and how long that takes), and through the
//!   tables' directories of id prefixes (as gc, verify and a large restore
//!   look up), and
//! - peak RSS, peak anonymous memory and wall time of a `gc` that drops
//!   the synthetic entries (their packs do not exist), so that it reads
//!   every entry: tables are merged as they stream, so its anonymous
//!   memory stays flat while the mapped tables' pages show in RSS.
//!
//! ```text
//! cargo bench --bench index10m -- [--entries N] [--tables T] [--out FILE]
//! ```
//! `--keep DIR` builds the repository (`DIR/repo`, source `DIR/src`) in
//! DIR and leaves it there for further study. Defaults: 10 000 000 entries
//! in 16 tables (as many as compaction leaves), results as JSON in
//! `target/bench-results/index10m.json` (read by `benches/report.py`).
//! Under `cargo test` it runs once with 20 000 entries as a smoke test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::backend::local::LocalBackend;
use cairn::backend::FileKind;
use cairn::id::{BlobId, PackId};
use cairn::index::{IndexBuilder, IndexSet};
use cairn::pack::{BlobKind, PackEntry};
use cairn::Repository;

const PASSWORD: &str = "index-bench";
/// Entries per synthetic pack (about a 32 MiB pack of 8 KiB chunks).
const PER_PACK: u64 = 4096;

struct Args {
    entries: u64,
    tables: u64,
    out: PathBuf,
    keep: Option<PathBuf>,
    measuring: bool,
}

fn parse_args() -> Args {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let measuring = raw.iter().any(|a| a == "--bench");
    let mut args = Args {
        entries: if measuring { 10_000_000 } else { 20_000 },
        tables: 16,
        out: target_dir().join("bench-results").join("index10m.json"),
        keep: None,
        measuring,
    };
    let mut it = raw.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--entries" => args.entries = parse_count(&value()),
            "--tables" => args.tables = parse_count(&value()).max(1),
            "--out" => args.out = PathBuf::from(value()),
            "--keep" => args.keep = Some(PathBuf::from(value())),
            _ => {}
        }
    }
    if !measuring {
        args.out = std::env::temp_dir().join("cairn-index10m-smoke.json");
    }
    args
}

/// `10000000`, `10_000_000`, `10M` or `500k`.
fn parse_count(s: &str) -> u64 {
    let t = s.replace('_', "").to_ascii_lowercase();
    let (num, mult) = match t.strip_suffix('m') {
        Some(n) => (n.to_string(), 1_000_000),
        None => match t.strip_suffix('k') {
            Some(n) => (n.to_string(), 1_000),
            None => (t.clone(), 1),
        },
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .unwrap_or_else(|_| panic!("{s:?} is not a count like 10M"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Id of synthetic entry `i`: deterministic, uniformly spread.
fn entry_id(i: u64, salt: u64) -> BlobId {
    let mut h = blake3::Hasher::new();
    h.update(&i.to_le_bytes());
    h.update(&salt.to_le_bytes());
    BlobId(*h.finalize().as_bytes())
}

/// Wall time and peak RSS (KiB) of one run of the cairn binary.
struct Run {
    secs: f64,
    max_rss_kib: i64,
}

/// A [`Run`] polled as it ran, with its peak anonymous memory (KiB): RSS
/// also counts the pages of mapped index tables and packs (page cache,
/// which a fault maps a whole large folio of at a time on recent kernels).
struct Polled {
    run: Run,
    max_anon_kib: i64,
}

impl Polled {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "secs": self.run.secs,
            "max_rss_kib": self.run.max_rss_kib,
            "max_anon_kib": self.max_anon_kib,
        })
    }

    /// "0.03 s / 24 MiB (3 MiB anonymous)"
    fn show(&self) -> String {
        format!(
            "{:.2} s / {} MiB ({} MiB anonymous)",
            self.run.secs,
            self.run.max_rss_kib / 1024,
            self.max_anon_kib / 1024
        )
    }
}

/// Runs the cairn binary under GNU time. Its peak RSS is not read with
/// `wait4` from here: Linux counts the resident set a child inherits before
/// `exec`, and this process is large once it has built the tables.
fn cairn(repo: &Path, args: &[&str]) -> Run {
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let started = Instant::now();
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(report.path())
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("CAIRN_PASSWORD", PASSWORD)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run cairn under /usr/bin/time (apt-get install time)");
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "cairn {args:?} failed: {status}");
    let text = std::fs::read_to_string(report.path()).expect("time report");
    let max_rss_kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected time report {text:?}"));
    Run { secs, max_rss_kib }
}

/// `n` tiny files of distinct contents (`salt` keeps two sets apart), in
/// folders of 1,000: each is a chunk of its own that no table holds, so a
/// backup of them looks up `n` ids and misses every one.
fn make_new_files(root: &Path, salt: &str, n: u64) {
    for i in 0..n {
        let dir = root.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).expect("mkdir");
        }
        std::fs::write(dir.join(format!("f{i:06}")), format!("{salt} file {i}\n"))
            .expect("write file");
    }
}

/// Misses a second while every table is searched (the misses before the
/// set's filter is built), the seconds the miss that builds it takes, and
/// misses a second through the filter; `probes` are ids no table holds,
/// more than [`IndexSet::filter_after`].
fn miss_rates(index: &IndexSet, probes: &[BlobId], min: Duration) -> (f64, f64, f64) {
    let searched = index.filter_after() - 1;
    assert!(
        probes.len() > searched,
        "too few probes to reach the filter"
    );
    assert_eq!(index.filter_bytes(), 0, "filter built before its misses");
    let started = Instant::now();
    for p in &probes[..searched] {
        assert!(!index.contains(p), "lookup of {p:?}");
    }
    let plain = searched as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    assert!(!index.contains(&probes[searched]));
    let build = started.elapsed().as_secs_f64();
    // (In the small smoke test a table's lookups get it a directory
    // before the misses get the set a filter.)
    let first = &index.tables()[0];
    if searched < first.len() / 16 {
        assert_eq!(first.directory_bytes(), 0, "a directory before its lookups");
    }
    assert!(index.filter_bytes() > 0, "no filter after its misses");
    (plain, build, rate(index, probes, false, min))
}

/// A small source-like tree: 20 folders of 50 files.
fn make_tree(root: &Path) {
    for d in 0..20 {
        let dir = root.join(format!("pkg{d:02}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..50 {
            let body: String = (0..(f * 37 % 200 + 10))
                .map(|l| format!("let v{l} = {d} * {f} + {l};\n"))
                .collect();
            std::fs::write(dir.join(format!("m{f:02}.rs")), body).expect("write");
        }
    }
}

/// Writes `entries` synthetic entries as `tables` index tables.
fn add_synthetic(repo: &Repository, entries: u64, tables: u64) -> (f64, u64) {
    let started = Instant::now();
    let per_table = entries.div_ceil(tables);
    let mut bytes_written = 0u64;
    for t in 0..tables {
        let (lo, hi) = (t * per_table, ((t + 1) * per_table).min(entries));
        let mut b = IndexBuilder::default();
        let mut i = lo;
        while i < hi {
            let end = (i + PER_PACK).min(hi);
            let blobs: Vec<PackEntry> = (i..end)
                .map(|j| PackEntry {
                    id: entry_id(j, 0),
                    offset: 12 + (j - i) as u32 * 8232,
                    length: 8232,
                    raw_length: 8192,
                })
                .collect();
            let pack = PackId(*blake3::hash(&(i / PER_PACK).to_le_bytes()).as_bytes());
            b.add_pack(pack, BlobKind::Data, &blobs);
            i = end;
        }
        let (id, bytes) = b
            .finish(repo.key(), repo.config().index_version())
            .remove(0);
        bytes_written += bytes.len() as u64;
        repo.backend()
            .write(FileKind::Index, &id.to_hex(), &bytes)
            .expect("write index table");
    }
    (started.elapsed().as_secs_f64(), bytes_written)
}

/// Drops the repository's index tables from the page cache (synced
/// first), as the kernel drops pages left untouched: lookups then read
/// a table back a page at a time, instead of finding it in the large
/// folios it was written into, a whole one of which a fault maps.
fn evict_index(repo: &Path) {
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(repo.join("index")).expect("index folder") {
        let file = std::fs::File::open(entry.expect("index entry").path()).expect("open table");
        file.sync_all().expect("sync table");
        // SAFETY: `file` is open; the advice touches no memory of ours.
        let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0, "posix_fadvise");
    }
}

/// Lookups per second over `probes`, repeated for at least `min` time.
fn rate(index: &IndexSet, probes: &[BlobId], want_hit: bool, min: Duration) -> f64 {
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < min || done == 0 {
        for p in probes {
            let found = index.lookup(p).expect("lookup").is_some();
            assert_eq!(found, want_hit, "lookup of {p:?}");
        }
        done += probes.len() as u64;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

/// Hits a second over one pass of `probes`, each of which is indexed.
fn rate_once(index: &IndexSet, probes: &[BlobId]) -> f64 {
    let started = Instant::now();
    for p in probes {
        assert!(
            index.lookup(p).expect("lookup").is_some(),
            "lookup of {p:?}"
        );
    }
    probes.len() as f64 / started.elapsed().as_secs_f64()
}

/// Wall time, peak RSS and peak anonymous memory (KiB) of one run of the
/// cairn binary opened with the key file `key`, read from
/// `/proc/<pid>/status` as it runs (in a tight loop for its first 50 ms, so
/// a short run is seen too, then every 2 ms): RSS counts the pages of
/// mapped index tables and packs (page cache), `RssAnon` the process's own
/// memory. (The kernel's peak RSS from `wait4` would not do: a child
/// spawned with `posix_spawn` shares this process's memory until it
/// executes cairn and inherits its high-water mark.)
fn cairn_polled(repo: &Path, key: &Path, args: &[&str]) -> Polled {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("CAIRN_KEY_FILE", key)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run cairn");
    let status_path = format!("/proc/{}/status", child.id());
    let (mut hwm, mut anon) = (0i64, 0i64);
    let field = |text: &str, name: &str| -> Option<i64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            hwm = hwm.max(field(&text, "VmHWM:").unwrap_or(0));
            anon = anon.max(field(&text, "RssAnon:").unwrap_or(0));
        }
        if let Some(status) = child.try_wait().expect("wait for cairn") {
            break status;
        }
        if started.elapsed() > Duration::from_millis(50) {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "cairn {args:?} failed: {status}");
    Polled {
        run: Run {
            secs,
            max_rss_kib: hwm,
        },
        max_anon_kib: anon,
    }
}

fn main() {
    let args = parse_args();
    let work = tempfile::Builder::new()
        .prefix("cairn-index10m-")
        .tempdir_in(target_dir())
        .or_else(|_| tempfile::tempdir())
        .expect("work folder");
    let base = args
        .keep
        .clone()
        .unwrap_or_else(|| work.path().to_path_buf());
    let repo_dir = base.join("repo");
    let src = base.join("src");
    make_tree(&src);
    // A backup reads again, once, a file changed shortly before its
    // parent snapshot began (two seconds, a tick of its clock, plus the
    // kernel's writeback delay: README, "Snapshot kinds"): the tree waits
    // out that window, as a nightly job's files would have, so the
    // backups after the first find it unchanged. The smoke run under
    // `cargo test` measures nothing, and does not wait.
    if args.measuring {
        let window = cairn::archiver::racy_window_ns().unsigned_abs();
        std::thread::sleep(std::time::Duration::from_nanos(window + 100_000_000));
    }
    let src_arg = src.to_str().expect("utf-8 path");
    let new_files = if args.measuring { 100_000 } else { 500 };
    let new_before = base.join("new-before");
    let new_after = base.join("new-after");

    eprintln!(
        "index10m: {} entries in {} table(s)",
        args.entries, args.tables
    );
    cairn(&repo_dir, &["init"]);
    // Measured runs open with an exported key: Argon2id's 19 MiB would
    // hide what the command itself holds.
    let key = base.join("key");
    let _ = std::fs::remove_file(&key);
    cairn(
        &repo_dir,
        &["key", "export", key.to_str().expect("utf-8 path")],
    );
    let polled = |args: &[&str]| cairn_polled(&repo_dir, &key, args);
    let new_before_arg = new_before.to_str().expect("utf-8 path");
    let new_after_arg = new_after.to_str().expect("utf-8 path");
    cairn(&repo_dir, &["backup", src_arg]);
    let before = polled(&["backup", src_arg]);
    make_new_files(&new_before, "before", new_files);
    let new_before_run = polled(&["backup", new_before_arg]);
    let gc_before = polled(&["gc"]);

    let repo = Repository::open(Arc::new(LocalBackend::new(&repo_dir)), PASSWORD.as_bytes())
        .expect("open repository");
    let (build_secs, table_bytes) = add_synthetic(&repo, args.entries, args.tables);
    drop(repo);
    let after = polled(&["backup", src_arg]);
    make_new_files(&new_after, "after", new_files);
    let new_after_run = polled(&["backup", new_after_arg]);
    evict_index(&repo_dir);
    let after_cold = polled(&["backup", src_arg]);
    // Back into the page cache for the lookup rates, as every table was
    // before the eviction.
    for entry in std::fs::read_dir(repo_dir.join("index")).expect("index folder") {
        std::fs::read(entry.expect("index entry").path()).expect("read table");
    }

    let backend = LocalBackend::new(&repo_dir);
    let index = IndexSet::load(&backend).expect("load index");
    let n_probes = if args.measuring { 1 << 20 } else { 1 << 12 };
    let mut x = 0x2545f4914f6cdd1du64;
    let hits: Vec<BlobId> = (0..n_probes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            entry_id(x % args.entries, 0)
        })
        .collect();
    let n_misses = n_probes.max(index.filter_after() as u64 + 1);
    let misses: Vec<BlobId> = (0..n_misses).map(|i| entry_id(i, 1)).collect();
    let min = if args.measuring {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(10)
    };
    // Hits read the tables' entries with `pread` until a table has had a
    // lookup per 16 entries and gets its directory: the largest table,
    // searched first, is searched on every hit, and on every miss before
    // the filter is built, measured next.
    let first = &index.tables()[0];
    let before_directory = (first.len() / 16).saturating_sub(index.filter_after() + 1);
    let hit_rate = rate_once(&index, &hits[..before_directory.min(hits.len())]);
    let (miss_rate, filter_secs, miss_rate_filter) = miss_rates(&index, &misses, min);
    let filter_bytes = index.filter_bytes();
    // As gc's mark, verify and a large restore look up: through each
    // table's directory of id prefixes, built first.
    // The misses' false positives have made the filled tables build
    // theirs already (see `IndexTable::find`): the build is timed in a
    // fresh set.
    let fresh = IndexSet::load(&backend).expect("load index");
    let started = Instant::now();
    fresh.build_directories(usize::MAX);
    let directory_secs = started.elapsed().as_secs_f64();
    drop(fresh);
    index.build_directories(usize::MAX);
    let directory_bytes = index.directory_bytes();
    let hit_rate_dir = rate(&index, &hits, true, min);
    let miss_rate_dir = rate(&index, &misses, false, min);
    let tables = index.tables().len();
    let filter_after = index.filter_after();
    let entries_total = index.len();
    drop(index);
    let gc_after = polled(&["gc"]);
    let left = IndexSet::load(&backend).expect("load index").len();
    assert!(
        left < entries_total - args.entries as usize + 1,
        "gc left {left} index entries"
    );

    let json = serde_json::json!({
        "entries": args.entries,
        "synthetic_tables": args.tables,
        "tables_total": tables,
        "entries_total": entries_total,
        "table_bytes": table_bytes,
        "build_secs": build_secs,
        "nochange_before": before.json(),
        "nochange_after": after.json(),
        "nochange_after_cold": after_cold.json(),
        "gc_before": gc_before.json(),
        "gc_after": gc_after.json(),
        "lookup_hits_per_sec": hit_rate,
        "lookup_misses_per_sec": miss_rate,
        "filter_after_misses": filter_after,
        "filter_build_secs": filter_secs,
        "filter_bytes": filter_bytes,
        "lookup_misses_per_sec_filter": miss_rate_filter,
        "new_files": new_files,
        "newfiles_before": new_before_run.json(),
        "newfiles_after": new_after_run.json(),
        "directory_build_secs": directory_secs,
        "directory_bytes": directory_bytes,
        "lookup_hits_per_sec_directory": hit_rate_dir,
        "lookup_misses_per_sec_directory": miss_rate_dir,
        "probes": n_probes,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).expect("results folder");
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .expect("write results");
    println!(
        "index entries            {} in {} table(s), {:.0} MiB of tables, built in {:.1} s",
        entries_total,
        tables,
        table_bytes as f64 / (1 << 20) as f64,
        build_secs
    );
    println!(
        "no-change backup         before {}, after {}, tables evicted {}",
        before.show(),
        after.show(),
        after_cold.show()
    );
    println!(
        "backup of {new_files} new files  before {}, after {}",
        new_before_run.show(),
        new_after_run.show()
    );
    println!(
        "lookups                  {:.2} M hits/s, {:.2} M misses/s searching every table (one thread)",
        hit_rate / 1e6,
        miss_rate / 1e6
    );
    println!(
        "with the filter          {:.2} M misses/s ({:.1} MiB, built after {} misses in {:.2} s)",
        miss_rate_filter / 1e6,
        filter_bytes as f64 / (1 << 20) as f64,
        filter_after,
        filter_secs
    );
    println!(
        "with directories         {:.2} M hits/s, {:.2} M misses/s ({:.1} MiB, built in {:.2} s)",
        hit_rate_dir / 1e6,
        miss_rate_dir / 1e6,
        directory_bytes as f64 / (1 << 20) as f64,
        directory_secs
    );
    println!(
        "gc                       before {} (nothing to do), dropping the synthetic entries {}",
        gc_before.show(),
        gc_after.show()
    );
    println!("results                  {}", args.out.display());
}
