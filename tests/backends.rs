//! The backend conformance suite: one set of checks of the contract in
//! `src/backend/mod.rs`, run against every backend (local directory,
//! memory, S3 on a real server, and S3 behind the retry and cache wrappers).

mod common;
mod s3support;

use std::sync::Arc;

use cairn::backend::cache::{Cache, CachedBackend};
use cairn::backend::local::LocalBackend;
use cairn::backend::mem::MemBackend;
use cairn::backend::retry::{RetryBackend, RetryPolicy};
use cairn::backend::s3::{S3Backend, S3Options};
use cairn::backend::{Backend, Data, FileKind};
use s3support::*;
use zeroize::Zeroizing;

fn name(seed: u8) -> String {
    hex::encode([seed; 32])
}

/// Every backend must pass this.
fn conformance(b: &dyn Backend) {
    assert!(!b.exists().unwrap(), "{}: no repository yet", b.location());
    b.create().unwrap();
    b.create().unwrap(); // idempotent
    for kind in [
        FileKind::Key,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Lock,
    ] {
        assert!(b.list(kind).unwrap().is_empty(), "{kind:?} starts empty");
    }

    // Missing objects are NotFound, for every read.
    let missing = name(0xee);
    assert!(b.read(FileKind::Pack, &missing).unwrap_err().is_not_found());
    assert!(b.size(FileKind::Pack, &missing).unwrap_err().is_not_found());
    assert!(b
        .read_range(FileKind::Pack, &missing, 0, 4)
        .unwrap_err()
        .is_not_found());
    assert!(b.read(FileKind::Config, "").unwrap_err().is_not_found());

    // Whole writes, reads, ranges, sizes.
    let p = name(0xab);
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    b.write(FileKind::Pack, &p, &bytes).unwrap();
    assert_eq!(&*b.read(FileKind::Pack, &p).unwrap(), &bytes[..]);
    assert_eq!(b.size(FileKind::Pack, &p).unwrap(), bytes.len() as u64);
    assert_eq!(
        b.read_range(FileKind::Pack, &p, 1000, 5000).unwrap(),
        &bytes[1000..6000]
    );
    assert_eq!(b.read_range(FileKind::Pack, &p, 0, 0).unwrap(), b"");
    let tail = bytes.len() as u64 - 10;
    assert_eq!(
        b.read_range(FileKind::Pack, &p, tail, 10).unwrap(),
        &bytes[bytes.len() - 10..]
    );
    // A range past the end is an error, not short data.
    assert!(b.read_range(FileKind::Pack, &p, tail, 11).is_err());

    // Empty objects.
    let s = name(0x01);
    b.write(FileKind::Snapshot, &s, b"").unwrap();
    assert_eq!(&*b.read(FileKind::Snapshot, &s).unwrap(), b"");
    assert_eq!(b.size(FileKind::Snapshot, &s).unwrap(), 0);

    // Writing the same name again with the same bytes is harmless.
    b.write(FileKind::Pack, &p, &bytes).unwrap();
    assert_eq!(b.list(FileKind::Pack).unwrap(), vec![p.clone()]);

    // Kinds are separate namespaces; the config is not listed anywhere.
    b.write(FileKind::Index, &p, b"index").unwrap();
    assert_eq!(&*b.read(FileKind::Index, &p).unwrap(), b"index");
    assert_eq!(&*b.read(FileKind::Pack, &p).unwrap(), &bytes[..]);
    b.write(FileKind::Config, "", b"config").unwrap();
    assert!(b.exists().unwrap());
    assert_eq!(&*b.read(FileKind::Config, "").unwrap(), b"config");

    // Listing: many packs spread over prefixes.
    let mut names: Vec<String> = (0..40u8).map(|i| name(i.wrapping_mul(37))).collect();
    names.sort();
    names.dedup();
    for n in &names {
        b.write(FileKind::Pack, n, n.as_bytes()).unwrap();
    }
    let mut listed = b.list(FileKind::Pack).unwrap();
    listed.sort();
    let mut want = names.clone();
    want.push(p.clone());
    want.sort();
    want.dedup();
    assert_eq!(listed, want);
    // Listing with sizes agrees with listing and sizing one by one.
    let mut sized = b.list_sizes(FileKind::Pack).unwrap();
    sized.sort();
    let want_sized: Vec<(String, u64)> = want
        .iter()
        .map(|n| (n.clone(), b.size(FileKind::Pack, n).unwrap()))
        .collect();
    assert_eq!(sized, want_sized);
    assert_eq!(
        b.list_sizes(FileKind::Snapshot).unwrap(),
        vec![(s.clone(), 0)]
    );
    let mut snaps = b.list(FileKind::Snapshot).unwrap();
    snaps.sort();
    assert_eq!(snaps, vec![s.clone()]);

    // Names starting with '.' (temporary and probe objects) are readable
    // but never listed.
    for kind in [FileKind::Lock, FileKind::Pack] {
        let hidden = format!(".tmp-{}", name(0x77));
        b.write(kind, &hidden, b"hidden").unwrap();
        assert_eq!(&*b.read(kind, &hidden).unwrap(), b"hidden");
        let listed = b.list(kind).unwrap();
        assert!(
            !listed.iter().any(|n| n.starts_with('.')),
            "{}: {kind:?} listing shows a '.' name: {listed:?}",
            b.location()
        );
        b.remove(kind, &hidden).unwrap();
    }

    // Remove, twice.
    b.remove(FileKind::Pack, &p).unwrap();
    b.remove(FileKind::Pack, &p).unwrap();
    assert!(b.read(FileKind::Pack, &p).unwrap_err().is_not_found());
    assert!(!b.list(FileKind::Pack).unwrap().contains(&p));
    assert_eq!(&*b.read(FileKind::Index, &p).unwrap(), b"index");
    for n in &names {
        b.remove(FileKind::Pack, n).unwrap();
    }
    assert!(b.list(FileKind::Pack).unwrap().is_empty());
    b.probe().unwrap();
}

#[test]
fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&LocalBackend::new(dir.path().join("repo")));
}

#[test]
fn memory() {
    conformance(&MemBackend::default());
}

fn s3_options(server: &S3Server, bucket: &str, prefix: &str) -> S3Options {
    S3Options {
        bucket: bucket.into(),
        prefix: prefix.into(),
        endpoint: Some(server.endpoint()),
        region: "us-east-1".into(),
        virtual_host: false,
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(Zeroizing::new(SECRET_KEY.into())),
        session_token: None,
        connections: 4,
        timeout: std::time::Duration::from_secs(60),
    }
}

#[test]
fn s3_on_a_real_server() {
    let server = S3Server::start();
    let b = S3Backend::new(s3_options(&server, "conformance", "some/prefix")).unwrap();
    conformance(&b);
    // The layout on the server is the documented one.
    assert!(server
        .data()
        .join("conformance/some/prefix/config")
        .is_file());
    // The bucket's root needs no prefix either.
    let root = S3Backend::new(s3_options(&server, "conformance-root", "")).unwrap();
    conformance(&root);
}

#[test]
fn s3_behind_retry_and_cache() {
    let server = S3Server::start();
    let s3 = Arc::new(S3Backend::new(s3_options(&server, "wrapped", "r")).unwrap());
    let retry = Arc::new(RetryBackend::new(s3, RetryPolicy::default()));
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(cache_dir.path(), &[7; 32]).unwrap());
    conformance(&CachedBackend::new(retry, cache));
}

#[test]
fn s3_multipart_upload_of_a_large_pack() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut opts = s3_options(&server, "multipart", "r");
    opts.endpoint = Some(proxy.endpoint());
    let b = S3Backend::new(opts).unwrap();
    b.create().unwrap();
    let big = common::random_bytes(9, cairn::backend::s3::MULTIPART_THRESHOLD + 3_000_001);
    let n = name(0x42);
    proxy.clear_log();
    b.write(FileKind::Pack, &n, &big).unwrap();
    // Started, sent in 8 MiB parts, completed; never one PUT of the whole.
    let reqs = proxy.requests();
    let on_key = |r: &&Seen| r.target.contains(&n);
    let started = reqs
        .iter()
        .filter(on_key)
        .filter(|r| r.method == "POST" && r.target.contains("?uploads"))
        .count();
    let parts = reqs
        .iter()
        .filter(on_key)
        .filter(|r| r.method == "PUT" && r.target.contains("uploadId="))
        .count();
    let completed = reqs
        .iter()
        .filter(on_key)
        .filter(|r| r.method == "POST" && r.target.contains("uploadId="))
        .count();
    let whole = reqs
        .iter()
        .filter(on_key)
        .filter(|r| r.method == "PUT" && !r.target.contains('?'))
        .count();
    assert_eq!(
        (started, parts, completed, whole),
        (1, 3, 1, 0),
        "{reqs:#?}"
    );

    assert_eq!(b.size(FileKind::Pack, &n).unwrap(), big.len() as u64);
    assert!(*b.read(FileKind::Pack, &n).unwrap() == big[..]);
    proxy.clear_log();
    let at = 17 << 20;
    assert_eq!(
        b.read_range(FileKind::Pack, &n, at as u64, 1000).unwrap(),
        &big[at..at + 1000]
    );
    // A range read asks for those bytes only.
    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(
        reqs[0].range.as_deref(),
        Some(format!("bytes={}-{}", at, at + 999).as_str())
    );
    assert_eq!(reqs[0].answered, 1000);
}

/// An index table larger than 8 MiB is uploaded in parts and read back in
/// ranges of at most 8 MiB into a mapped temporary file, never in one
/// answer held in memory; a small one is one GET.
#[test]
fn s3_large_index_tables_are_read_in_parts_into_a_map() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let mut opts = s3_options(&server, "bigindex", "r");
    opts.endpoint = Some(proxy.endpoint());
    let b = S3Backend::new(opts).unwrap();
    b.create().unwrap();
    let big = common::random_bytes(5, cairn::backend::s3::MULTIPART_THRESHOLD + 1_234_567);
    let n = name(0x51);
    b.write(FileKind::Index, &n, &big).unwrap();
    proxy.clear_log();
    let data = b.read(FileKind::Index, &n).unwrap();
    assert!(matches!(data, Data::Mapped(_)), "read into memory");
    assert!(*data == big[..]);
    let gets: Vec<Option<String>> = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.target.contains(&n))
        .map(|r| r.range.clone())
        .collect();
    let part = 8 << 20;
    let want: Vec<Option<String>> = (0..big.len())
        .step_by(part)
        .map(|at| Some(format!("bytes={}-{}", at, (at + part).min(big.len()) - 1)))
        .collect();
    assert_eq!(gets, want);

    let small = common::random_bytes(6, 100_000);
    let s = name(0x52);
    b.write(FileKind::Index, &s, &small).unwrap();
    proxy.clear_log();
    assert!(*b.read(FileKind::Index, &s).unwrap() == small[..]);
    let gets = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.target.contains(&s))
        .count();
    assert_eq!(gets, 1);
}

/// A file fetched into the cache is served from the cache's map from
/// then on, not from the downloaded copy in memory.
#[test]
fn a_fetched_index_table_is_served_from_the_cache_map() {
    let mem = Arc::new(MemBackend::default());
    let bytes = common::random_bytes(3, 50_000);
    let n = hex::encode(cairn::id::file_hash(&bytes));
    mem.write(FileKind::Index, &n, &bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(dir.path(), &[9; 32]).unwrap());
    let b = CachedBackend::new(mem, cache.clone());
    let d = b.read(FileKind::Index, &n).unwrap();
    assert!(matches!(d, Data::Shared(_)), "served from memory");
    assert!(*d == bytes[..]);
    assert!(cache.get(FileKind::Index, &n).is_some());
}

#[test]
fn s3_requests_in_flight_never_exceed_connections() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let load = |connections: usize, bucket: &str| {
        let mut opts = s3_options(&server, bucket, "r");
        opts.endpoint = Some(proxy.endpoint());
        opts.connections = connections;
        let b = S3Backend::new(opts).unwrap();
        b.create().unwrap();
        let big = common::random_bytes(3, cairn::backend::s3::MULTIPART_THRESHOLD + 1);
        proxy.clear_log();
        // Six threads, each a multipart upload (3 parts), a chunked
        // download of it and small writes and range reads.
        std::thread::scope(|s| {
            for t in 0..6u8 {
                let (b, big) = (&b, &big);
                s.spawn(move || {
                    let n = name(0x10 + t);
                    b.write(FileKind::Pack, &n, big).unwrap();
                    assert!(*b.read(FileKind::Pack, &n).unwrap() == big[..]);
                    for i in 0..4u8 {
                        let small = name(0x80 + t * 8 + i);
                        b.write(FileKind::Index, &small, &big[..1000]).unwrap();
                        let r = b.read_range(FileKind::Pack, &n, 5000, 100).unwrap();
                        assert_eq!(r, &big[5000..5100]);
                    }
                });
            }
        });
        assert!(proxy.requests().len() > 6 * 12);
        proxy.max_in_flight()
    };
    let limited = load(2, "two");
    assert!(
        limited <= 2,
        "{limited} requests in flight with 2 connections"
    );
    // The same work without that limit does run more at once, so the proxy
    // would have seen it.
    let wide = load(12, "twelve");
    assert!(wide > 2, "{wide} requests in flight with 12 connections");
}

#[test]
fn s3_errors_are_typed_and_never_show_the_secret() {
    let server = S3Server::start();
    let mut opts = s3_options(&server, "typed", "r");
    let good = S3Backend::new(opts.clone()).unwrap();
    good.create().unwrap();
    opts.secret_access_key = Some(Zeroizing::new("wrong-secret-9f8e7d".into()));
    let bad = S3Backend::new(opts).unwrap();
    let e = bad.write(FileKind::Pack, &name(1), b"x").unwrap_err();
    let msg = e.to_string();
    assert!(!e.is_transient(), "a refused signature is permanent: {msg}");
    assert!(msg.contains(&server.endpoint()), "{msg}");
    assert!(msg.contains(&name(1)), "the error names the object: {msg}");
    assert!(
        !msg.contains("wrong-secret-9f8e7d") && !msg.contains(ACCESS_KEY),
        "{msg}"
    );

    // A server that is not there: transient, naming the endpoint.
    let mut gone = S3Server::start();
    let b = S3Backend::new(s3_options(&gone, "typed", "r")).unwrap();
    gone.stop();
    let e = b.read(FileKind::Snapshot, &name(2)).unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains(&gone.endpoint()), "{e}");
}
