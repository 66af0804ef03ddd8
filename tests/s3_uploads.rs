//! gc and the incomplete multipart uploads interrupted backups leave in a
//! bucket: it aborts the repository's (after a dry run that only reports
//! them), never another prefix's or another application's, and a store
//! that cannot list them gets a warning rather than a failed gc.

mod common;
mod s3support;

use std::io::Write;

use common::*;
use s3support::*;

const MIB: usize = 1 << 20;
/// The smallest part S3 (and the client) allows but the last.
const PART: usize = 5 * MIB;

/// A repository behind a proxy that answers the listing of uploads
/// (`page` uploads a page), initialised and holding one small snapshot.
fn repo_with_listing(server: &S3Server, proxy: &Proxy, bucket: &str, prefix: &str) -> S3Repo {
    proxy.list_uploads(server, 1);
    let mut repo = S3Repo::new(server, bucket);
    repo.prefix = prefix.into();
    repo.endpoint = proxy.endpoint();
    init_and_back_up(&repo);
    repo
}

fn init_and_back_up(repo: &S3Repo) {
    let mut args = vec!["init"];
    args.extend_from_slice(FAST_INIT);
    repo.run(&args).success();
    let src = repo.scratch.path().join("src");
    write_random(&src.join("a.bin"), 7, 100_000);
    let mut c = repo.cmd(&["backup"]);
    c.arg(&src);
    run(&mut c, None).success();
}

fn pack_key(prefix: &str, byte: &str) -> String {
    format!("{prefix}packs/{byte}/{}", byte.repeat(32))
}

fn keys(uploads: &[PendingUpload]) -> Vec<&str> {
    uploads.iter().map(|u| u.key.as_str()).collect()
}

#[test]
fn gc_aborts_the_repositorys_incomplete_uploads_and_no_others() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let repo = repo_with_listing(&server, &proxy, "mpu", "repo");
    let ours = [
        pack_key("repo/", "ab"),
        format!("repo/index/{}", "cd".repeat(32)),
    ];
    server.start_upload("mpu", &ours[0], 2, PART);
    server.start_upload("mpu", &ours[1], 1, PART);
    // A sibling whose name begins with the repository's.
    let sibling = pack_key("repo2/", "ef");
    server.start_upload("mpu", &sibling, 1, PART);
    assert_eq!(server.uploads("mpu").len(), 3);

    let dry = repo.run(&["gc", "--dry-run"]).success();
    assert!(
        dry.stdout
            .contains("would have: aborted 2 incomplete multipart uploads (15.0 MiB in parts)"),
        "{dry}"
    );
    assert_eq!(server.uploads("mpu").len(), 3, "a dry run aborts nothing");
    let json = repo.run(&["gc", "--dry-run", "--json"]).success().json();
    assert_eq!(json["uploads_aborted"], 2, "{json}");
    assert_eq!(json["upload_bytes"], 3 * PART as u64, "{json}");

    proxy.clear_log();
    let gc = repo.run(&["gc"]).success();
    assert!(
        gc.stdout
            .contains("aborted 2 incomplete multipart uploads (15.0 MiB in parts)"),
        "{gc}"
    );
    assert!(!gc.stdout.contains("would have: aborted"), "{gc}");
    assert_eq!(keys(&server.uploads("mpu")), [sibling.as_str()]);
    // The listing asked for the repository's prefix with its slash, page
    // by page (one upload a page), and only the repository's uploads were
    // aborted.
    let reqs = proxy.requests();
    let listings: Vec<_> = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.target.contains("uploads="))
        .collect();
    assert!(listings.len() >= 2, "{listings:#?}");
    assert!(
        listings.iter().all(|r| r.target.contains("prefix=repo%2F")),
        "{listings:#?}"
    );
    let aborts: Vec<_> = reqs
        .iter()
        .filter(|r| r.method == "DELETE" && r.target.contains("uploadId="))
        .collect();
    assert_eq!(aborts.len(), 2, "{aborts:#?}");
    assert!(
        aborts.iter().all(|r| r.target.starts_with("/mpu/repo/")),
        "{aborts:#?}"
    );

    let again = repo.run(&["gc"]).success();
    assert!(!again.stdout.contains("multipart"), "{again}");
    repo.run(&["verify"]).success();
}

/// A repository nested under this one's prefix (`repo/sub`, which `init`
/// accepts) runs its own backups: their uploads are not this gc's to
/// abort, nor are uploads at a place no name of this repository's gives
/// (deeper in a folder, in another pack folder). Before, gc aborted every
/// upload under `repo/`, and so the nested repository's running backup.
#[test]
fn gc_spares_the_uploads_of_a_repository_nested_under_its_prefix() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let repo = repo_with_listing(&server, &proxy, "nested", "repo");
    let ours = pack_key("repo/", "ab");
    server.start_upload("nested", &ours, 1, PART);
    let theirs = [
        pack_key("repo/sub/", "cd"),
        format!("repo/sub/index/{}", "ef".repeat(32)),
        pack_key("repo/packs/sub/", "ab"),
        format!("repo/packs/cd/{}", "ab".repeat(32)),
        format!("repo/index/old/{}", "ef".repeat(32)),
    ];
    for key in &theirs {
        server.start_upload("nested", key, 1, PART);
    }
    let gc = repo.run(&["gc"]).success();
    assert!(
        gc.stdout
            .contains("aborted 1 incomplete multipart uploads (5.0 MiB in parts)"),
        "{gc}"
    );
    let mut left = keys(&server.uploads("nested"))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    left.sort();
    let mut expected = theirs.to_vec();
    expected.sort();
    assert_eq!(left, expected);
}

#[test]
fn gc_at_the_bucket_root_aborts_only_the_repositorys_folders() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let repo = repo_with_listing(&server, &proxy, "shared", "");
    let ours = pack_key("", "ab");
    server.start_upload("shared", &ours, 1, PART);
    // Another application's uploads in the same bucket, one in a folder
    // whose name begins with one of the repository's.
    let theirs = ["photos/2026/big.raw", "packs-old/archive.tar"];
    for key in theirs {
        server.start_upload("shared", key, 1, PART);
    }
    let gc = repo.run(&["gc"]).success();
    assert!(
        gc.stdout
            .contains("aborted 1 incomplete multipart uploads (5.0 MiB in parts)"),
        "{gc}"
    );
    let mut left = keys(&server.uploads("shared"))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    left.sort();
    assert_eq!(left, ["packs-old/archive.tar", "photos/2026/big.raw"]);
}

#[test]
fn a_store_that_cannot_list_uploads_gets_a_warning_not_a_failed_gc() {
    // s3s-fs itself answers the listing of uploads with 501 NotImplemented.
    let server = S3Server::start();
    let repo = S3Repo::new(&server, "no-listing");
    init_and_back_up(&repo);
    let key = pack_key("repo/", "ab");
    server.start_upload("no-listing", &key, 1, PART);
    for args in [&["gc", "--dry-run"][..], &["gc"][..]] {
        let gc = repo.run(args);
        assert_eq!(gc.code, 0, "{gc}");
        assert!(
            gc.stderr.contains("warning: s3://no-listing/repo at ")
                && gc
                    .stderr
                    .contains("incomplete multipart uploads not listed: the store does not offer it (HTTP 501 NotImplemented)")
                && gc.stderr.contains("AbortIncompleteMultipartUpload"),
            "{gc}"
        );
        assert!(!gc.stdout.contains("aborted"), "{gc}");
    }
    assert_eq!(keys(&server.uploads("no-listing")), [key.as_str()]);
}

#[test]
fn a_dry_run_beside_a_running_backup_does_not_count_its_uploads_as_garbage() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let repo = repo_with_listing(&server, &proxy, "busy", "repo");
    let key = pack_key("repo/", "ab");
    server.start_upload("busy", &key, 1, PART);
    // A backup of standard input that is still reading it holds a lock.
    let mut child = repo.start_stdin_backup(&server, &[]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"some rows\n").unwrap();
    let dry = repo.run(&["gc", "--dry-run"]).success();
    assert!(
        dry.stdout
            .contains("1 incomplete multipart uploads (a backup may be writing them): not aborted"),
        "{dry}"
    );
    assert!(!dry.stdout.contains("would have: aborted"), "{dry}");
    drop(stdin);
    finish_backup(child);
    assert_eq!(keys(&server.uploads("busy")), [key.as_str()]);
    // With the backup done, gc aborts it.
    let gc = repo.run(&["gc"]).success();
    assert!(
        gc.stdout.contains("aborted 1 incomplete multipart uploads"),
        "{gc}"
    );
    assert!(server.uploads("busy").is_empty());
}
