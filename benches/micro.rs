//! Micro-benchmarks of cairn's building blocks, next to this machine's
//! physical limits measured the same way.
//!
//! Groups (criterion ids `group/function`):
//! - `limits/*`: raw BLAKE3 on one and two threads, zstd at cairn's default
//!   level, page-cache read and write of a file: the ceilings.
//! - `chunker`, `hash`, `chunk_hash`, `compress`, `pack`: cairn's code on
//!   the same bytes, so each figure can be read against its ceiling.
//! - `index` (lookups per second) and `tree` (nodes per second).
//!
//! `cargo bench --bench micro` measures; `cargo test --all-targets` runs
//! each benchmark once on small inputs. `benches/report.py` turns the
//! results into the table in docs/PERFORMANCE.md.

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::Duration;

use cairn::backend::Data;
use cairn::chunker::ChunkerParams;
use cairn::compress;
use cairn::crypto::{Cipher, MasterKey};
use cairn::id::{BlobId, PackId};
use cairn::index::{IndexBuilder, IndexTable};
use cairn::pack::{self, BlobKind, PackEntry, PackWriter};
use cairn::tree::{Name, Node, NodeKind, Tree};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// cairn's default zstd level (`cairn init --compression`).
const LEVEL: i32 = 3;

/// True under `cargo bench`; false when `cargo test` runs each bench once.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Bytes per buffer: large enough for the default 1 MiB average chunk.
fn buf_len() -> usize {
    if measuring() {
        64 << 20
    } else {
        2 << 20
    }
}

/// Deterministic xorshift bytes: incompressible.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Deterministic source-like text: compresses about 3–4× with zstd -3.
fn text_bytes(n: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "fn", "let", "mut", "self", "return", "match", "impl", "struct", "pub", "use", "if",
        "else", "for", "in", "while", "Result", "Option", "Vec", "String", "u64", "=>", "{", "}",
        ";",
    ];
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 64);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = WORDS[(x % WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        // Identifiers with a random suffix keep it from compressing too well.
        if x & 0x30 == 0 {
            out.extend_from_slice(format!("_{:x}", (x >> 20) & 0xfff).as_bytes());
        }
        out.push(if x & 0x700 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(n);
    out
}

/// A fixed key so runs are comparable.
fn key() -> MasterKey {
    MasterKey::from_bytes([7; 64])
}

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

/// The machine's ceilings: BLAKE3, zstd, page cache.
fn limits(c: &mut Criterion) {
    let rnd = random_bytes(buf_len(), 1);
    let text = text_bytes(buf_len(), 2);
    let mut g = c.benchmark_group("limits");
    configure(&mut g);
    g.throughput(Throughput::Bytes(rnd.len() as u64));
    g.bench_function("blake3_1thread", |b| {
        b.iter(|| blake3::hash(black_box(&rnd)))
    });
    g.bench_function("blake3_2threads", |b| {
        let (lo, hi) = rnd.split_at(rnd.len() / 2);
        b.iter(|| {
            std::thread::scope(|s| {
                let t = s.spawn(|| blake3::hash(black_box(hi)));
                let a = blake3::hash(black_box(lo));
                (a, t.join().expect("hash thread"))
            })
        })
    });
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("zstd3_text_1thread", |b| {
        let mut z = zstd::bulk::Compressor::new(LEVEL).expect("zstd");
        b.iter(|| {
            text.chunks(1 << 20)
                .map(|c| z.compress(black_box(c)).expect("zstd").len())
                .sum::<usize>()
        })
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pagecache");
    std::fs::write(&path, &rnd).expect("write");
    g.throughput(Throughput::Bytes(rnd.len() as u64));
    g.bench_function("pagecache_read", |b| {
        let mut buf = vec![0u8; 1 << 20];
        b.iter(|| {
            let mut f = std::fs::File::open(&path).expect("open");
            let mut n = 0;
            loop {
                let k = f.read(&mut buf).expect("read");
                if k == 0 {
                    break n;
                }
                n += k;
            }
        })
    });
    g.bench_function("pagecache_write", |b| {
        let out = dir.path().join("written");
        b.iter(|| {
            let mut f = std::fs::File::create(&out).expect("create");
            for c in rnd.chunks(1 << 20) {
                f.write_all(c).expect("write");
            }
        })
    });
    g.finish();
}

/// FastCDC cut points at the default parameters, and with BLAKE3 on top.
fn chunker(c: &mut Criterion) {
    let rnd = random_bytes(buf_len(), 3);
    let p = ChunkerParams::with_sizes(512 << 10, 1 << 20, 8 << 20, 0x5eed).expect("params");
    let k = key();
    let mut g = c.benchmark_group("chunker");
    configure(&mut g);
    g.throughput(Throughput::Bytes(rnd.len() as u64));
    g.bench_function("fastcdc_default", |b| {
        b.iter(|| p.chunks(black_box(&rnd)).count())
    });
    // The `fastcdc` crate's own search, whose cut points cairn's repeats
    // (`cairn::gear`): what cairn's search gains over it, at the default
    // sizes (in lanes) and at small ones (one chain).
    let small = ChunkerParams::with_sizes(4 << 10, 16 << 10, 64 << 10, 0x5eed).expect("params");
    let with_crate = |p: &ChunkerParams| {
        fastcdc::v2020::FastCDC::with_level_and_seed(
            black_box(&rnd),
            p.min,
            p.avg,
            p.max,
            fastcdc::v2020::Normalization::Level1,
            p.seed,
        )
        .count()
    };
    g.bench_function("fastcdc_crate", |b| b.iter(|| with_crate(&p)));
    g.bench_function("fastcdc_16k", |b| {
        b.iter(|| small.chunks(black_box(&rnd)).count())
    });
    g.bench_function("fastcdc_crate_16k", |b| b.iter(|| with_crate(&small)));
    g.finish();

    let mut g = c.benchmark_group("chunk_hash");
    configure(&mut g);
    g.throughput(Throughput::Bytes(rnd.len() as u64));
    g.bench_function("1thread", |b| {
        b.iter(|| {
            p.chunks(&rnd)
                .map(|(o, l)| k.blob_id(&rnd[o..o + l]))
                .last()
        })
    });
    g.bench_function("2threads", |b| {
        let (lo, hi) = rnd.split_at(rnd.len() / 2);
        let work = |d: &[u8]| p.chunks(d).map(|(o, l)| k.blob_id(&d[o..o + l])).last();
        b.iter(|| {
            std::thread::scope(|s| {
                let t = s.spawn(|| work(hi));
                let a = work(lo);
                (a, t.join().expect("chunk thread"))
            })
        })
    });
    g.finish();
}

/// Keyed BLAKE3 blob ids of 1 MiB chunks.
fn hash(c: &mut Criterion) {
    let rnd = random_bytes(buf_len(), 4);
    let k = key();
    let mut g = c.benchmark_group("hash");
    configure(&mut g);
    g.throughput(Throughput::Bytes(rnd.len() as u64));
    g.bench_function("blob_id_1MiB", |b| {
        b.iter(|| {
            rnd.chunks(1 << 20)
                .map(|c| k.blob_id(c).0[0])
                .fold(0u8, |a, b| a ^ b)
        })
    });
    g.finish();
}

/// Blob encoding (sampled zstd or raw), both directions.
fn compression(c: &mut Criterion) {
    let rnd = random_bytes(buf_len(), 5);
    let text = text_bytes(buf_len(), 6);
    let mut g = c.benchmark_group("compress");
    configure(&mut g);
    for (name, data) in [("text", &text), ("random", &rnd)] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::new("encode", name), data, |b, d| {
            let mut out = Vec::new();
            b.iter(|| {
                d.chunks(1 << 20)
                    .map(|c| {
                        compress::encode_into(c, LEVEL, &mut out);
                        out.len()
                    })
                    .sum::<usize>()
            })
        });
        let encoded: Vec<(Vec<u8>, usize)> = data
            .chunks(1 << 20)
            .map(|c| {
                let mut out = Vec::new();
                compress::encode_into(c, LEVEL, &mut out);
                (out, c.len())
            })
            .collect();
        g.bench_with_input(BenchmarkId::new("decode", name), &encoded, |b, e| {
            b.iter(|| {
                e.iter()
                    .map(|(c, n)| compress::decode(c, *n, "bench").expect("decode").len())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

/// Seals `data` as 1 MiB blobs into `w`, as a backup's sealers do.
fn seal_into_pack(k: &MasterKey, data: &[u8], sealed: &mut Vec<u8>, w: &mut PackWriter) {
    for c in data.chunks(1 << 20) {
        let id = k.blob_id(c);
        let sealed = pack::seal_blob(k, c, LEVEL, sealed);
        w.add_sealed(id, sealed, c.len() as u32).unwrap();
    }
}

/// Encrypting and authenticating 1 MiB blobs with each cipher a
/// repository may name (the AEAD alone: no compression, no pack).
fn ciphers(c: &mut Criterion) {
    let data = random_bytes(buf_len(), 11);
    let mut g = c.benchmark_group("seal");
    configure(&mut g);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for cipher in [Cipher::Xaes256Gcm, Cipher::XChaCha20Poly1305] {
        let k = key().with_cipher(cipher);
        g.bench_with_input(BenchmarkId::from_parameter(cipher.name()), &data, |b, d| {
            let mut sealed = Vec::with_capacity((1 << 20) + 64);
            b.iter(|| {
                d.chunks(1 << 20)
                    .map(|c| {
                        sealed.clear();
                        k.seal_into(c, b"", &mut sealed);
                        sealed.len()
                    })
                    .sum::<usize>()
            })
        });
    }
    g.finish();

    // Opening, as restore, verify and gc do: from the sealed bytes (a
    // mapped pack) into a reused buffer.
    let mut g = c.benchmark_group("open");
    configure(&mut g);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for cipher in [Cipher::Xaes256Gcm, Cipher::XChaCha20Poly1305] {
        let k = key().with_cipher(cipher);
        let sealed: Vec<Vec<u8>> = data.chunks(1 << 20).map(|c| k.seal(c, b"")).collect();
        g.bench_with_input(
            BenchmarkId::from_parameter(cipher.name()),
            &sealed,
            |b, s| {
                let mut out = Vec::with_capacity(1 << 20);
                b.iter(|| {
                    s.iter()
                        .map(|c| {
                            k.open_into(c, b"", "blob", &mut out).expect("opens");
                            out.len()
                        })
                        .sum::<usize>()
                })
            },
        );
    }
    g.finish();
}

/// Sealing 1 MiB blobs into packs built in memory, as for a remote store
/// or a tree pack, and finishing them (no IO).
fn packs(c: &mut Criterion) {
    let rnd = random_bytes(buf_len(), 7);
    let text = text_bytes(buf_len(), 8);
    let k = key();
    let mut g = c.benchmark_group("pack");
    configure(&mut g);
    for (name, data) in [("text", &text), ("random", &rnd)] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::new("write", name), data, |b, d| {
            let mut sealed = Vec::new();
            b.iter(|| {
                let mut w = PackWriter::new(BlobKind::Data);
                seal_into_pack(&k, d, &mut sealed, &mut w);
                w.finish(&k).unwrap().bytes.len()
            })
        });
    }
    g.finish();
}

/// Sealing 1 MiB blobs into a pack streamed to a local folder, as a backup
/// stores data packs: pieces written with direct IO by the sink's thread,
/// then the file fsynced and renamed into place (and removed again, so
/// the folder does not grow). The folder is the system's temporary one.
fn pack_stream(c: &mut Criterion) {
    use cairn::backend::local::LocalBackend;
    use cairn::backend::{Backend, FileKind};
    let rnd = random_bytes(buf_len(), 9);
    let text = text_bytes(buf_len(), 10);
    let k = key();
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().unwrap();
    let mut g = c.benchmark_group("pack");
    configure(&mut g);
    for (name, data) in [("text", &text), ("random", &rnd)] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::new("stream", name), data, |b, d| {
            let mut sealed = Vec::new();
            b.iter(|| {
                let sink = backend.pack_sink().unwrap().expect("a local sink");
                let mut w = PackWriter::streaming(BlobKind::Data, sink).unwrap();
                seal_into_pack(&k, d, &mut sealed, &mut w);
                let mut p = w.finish(&k).unwrap();
                let name = p.id.to_hex();
                p.sink.take().expect("streamed").commit(&name).unwrap();
                backend.remove(FileKind::Pack, &name).unwrap();
            })
        });
    }
    g.finish();
}

/// Ids of entry `i`: deterministic and uniformly spread.
fn entry_id(i: u64, salt: u64) -> BlobId {
    let mut h = blake3::Hasher::new();
    h.update(&i.to_le_bytes());
    h.update(&salt.to_le_bytes());
    BlobId(*h.finalize().as_bytes())
}

/// Lookups in one mapped-style table, hits and misses, without and with
/// the table's directory.
fn index(c: &mut Criterion) {
    let n: u64 = if measuring() { 1_000_000 } else { 10_000 };
    let k = key();
    let mut b = IndexBuilder::default();
    let per_pack = 4096;
    for p in 0..n.div_ceil(per_pack) {
        let entries: Vec<PackEntry> = (p * per_pack..((p + 1) * per_pack).min(n))
            .map(|i| PackEntry {
                id: entry_id(i, 0),
                offset: 12 + (i % per_pack) as u32 * 1000,
                length: 1000,
                raw_length: 960,
            })
            .collect();
        b.add_pack(
            PackId(*blake3::hash(&p.to_le_bytes()).as_bytes()),
            BlobKind::Data,
            &entries,
        );
    }
    let (id, bytes) = b.finish(&k, cairn::index::VERSION).remove(0);
    let table = IndexTable::parse(id, Data::Owned(bytes.clone())).expect("table");
    // The same table with the directory gc's mark and restore's
    // planning build (DESIGN.md, "Index without RAM").
    let with_dir = IndexTable::parse(id, Data::Owned(bytes)).expect("table");
    with_dir.build_directory();
    let probes = 4096u64;
    let hits: Vec<BlobId> = (0..probes).map(|i| entry_id(i * 7919 % n, 0)).collect();
    let misses: Vec<BlobId> = (0..probes).map(|i| entry_id(i, 1)).collect();
    let mut g = c.benchmark_group("index");
    configure(&mut g);
    g.throughput(Throughput::Elements(probes));
    g.bench_function(BenchmarkId::new("find_hit", n), |bch| {
        bch.iter(|| hits.iter().filter(|h| table.find(h).is_some()).count())
    });
    g.bench_function(BenchmarkId::new("find_miss", n), |bch| {
        bch.iter(|| misses.iter().filter(|h| table.find(h).is_some()).count())
    });
    g.bench_function(BenchmarkId::new("find_hit_directory", n), |bch| {
        bch.iter(|| hits.iter().filter(|h| with_dir.find(h).is_some()).count())
    });
    g.bench_function(BenchmarkId::new("find_miss_directory", n), |bch| {
        bch.iter(|| misses.iter().filter(|h| with_dir.find(h).is_some()).count())
    });
    g.bench_function(BenchmarkId::new("location_hit", n), |bch| {
        bch.iter(|| {
            hits.iter()
                .filter_map(|h| table.find(h))
                .map(|i| u64::from(table.location_at(i).expect("location").1.offset))
                .sum::<u64>()
        })
    });
    g.finish();
}

/// A directory of source files as a backup would record it.
fn sample_tree(files: usize) -> Tree {
    let nodes = (0..files)
        .map(|i| Node {
            name: Name(format!("module_{i:05}.rs").into_bytes()),
            kind: NodeKind::File {
                chunks: vec![entry_id(i as u64, 2)],
            },
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            user: "builder".into(),
            group: "builder".into(),
            mtime_ns: 1_764_000_000_000_000_000 + i as i64,
            ctime_ns: 1_764_000_000_000_000_000 + i as i64,
            size: 4000 + i as u64,
            dev: 64769,
            inode: 1_000_000 + i as u64,
            nlink: 1,
            xattrs: Vec::new(),
        })
        .collect();
    Tree::new(nodes)
}

/// Tree encoding and validating decode.
fn trees(c: &mut Criterion) {
    let files = 1000;
    let tree = sample_tree(files);
    let bytes = tree.encode();
    let mut g = c.benchmark_group("tree");
    configure(&mut g);
    g.throughput(Throughput::Elements(files as u64));
    g.bench_function("encode_1000_nodes", |b| {
        b.iter(|| black_box(&tree).encode().len())
    });
    g.bench_function("decode_1000_nodes", |b| {
        b.iter(|| {
            Tree::decode(black_box(&bytes), "bench")
                .expect("tree")
                .nodes
                .len()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    limits,
    chunker,
    hash,
    compression,
    ciphers,
    packs,
    pack_stream,
    index,
    trees
);
criterion_main!(benches);
