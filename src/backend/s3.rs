//! Repositories on S3-compatible object storage, through `opendal`.
//!
//! A repository at `s3://BUCKET/PREFIX` keeps the local layout as object
//! keys: `PREFIX/config`, `PREFIX/keys/<id>`, `PREFIX/packs/<2 hex>/<id>`,
//! `PREFIX/index/<id>`, `PREFIX/snapshots/<id>`, `PREFIX/locks/<id>`. No
//! key is both an object and a prefix of other keys, and keys use only
//! letters, digits and `/_.-`.
//!
//! How the backend contract is met on a store without rename:
//!
//! - **Atomic**: a single PUT, or a multipart upload completed at the end,
//!   makes an object visible whole or not at all.
//! - **Durable**: S3 acknowledges a PUT once the object is stored.
//! - **No overwrite needed**: names are content hashes; conditional writes
//!   are never used (some stores, such as Garage, accept `If-None-Match`
//!   and overwrite anyway). [`S3Backend::probe`] reports what the store
//!   does, for `init` to print.
//! - **Checked uploads**: every PUT and every part carries the CRC32C of
//!   its body, so a store that checks it refuses bytes changed on the way
//!   (`BadDigest`, a temporary error, see [`super::http`]). A store that
//!   refuses the header itself is sent uploads without it, with a warning
//!   (see `S3Backend::put`).
//! - **Errors are typed**: 404 is [`Error::NotFound`]; 5xx answers,
//!   timeouts and refused or reset connections are transient
//!   [`Error::Backend`] errors (retried by [`super::retry`]); 403, a
//!   missing bucket and other 4xx answers are permanent. Messages name the
//!   object and the endpoint; credentials are never part of them.
//!
//! The calls are blocking: each runs on a small internal tokio runtime, so
//! any number of the caller's threads can call at once. Every request,
//! whichever thread or transfer it belongs to, passes one [`Gate`]: at
//! most `connections` are in flight, each with its deadlines (see
//! [`super::http`]).

use std::fmt;
use std::future::IntoFuture;
use std::time::{Duration, SystemTime};

use opendal::services::S3;
use opendal::{ErrorKind, HttpTransporter, Operator};
use zeroize::Zeroizing;

use super::http::{Gate, GatedTransport, REFUSED};
use super::{Backend, Data, FileKind, Leftovers};
use crate::backend::local::kind_name;
use crate::error::{Error, Result};

mod uploads;

/// Packs larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 << 20;
/// Size of one part of a multipart upload or a parallel download.
pub const PART_SIZE: usize = 8 << 20;

/// Where and how to reach a bucket. `Debug` never shows the secret.
#[derive(Clone)]
pub struct S3Options {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix of the repository inside the bucket, without slashes at
    /// either end; empty for the bucket's root.
    pub prefix: String,
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`; `None` for AWS.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: String,
    /// Virtual-host addressing (`BUCKET.host`) instead of path style.
    pub virtual_host: bool,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<Zeroizing<String>>,
    /// Session token for temporary credentials.
    pub session_token: Option<Zeroizing<String>>,
    /// Requests in flight at once, over all threads and transfers (the
    /// parts of a multipart upload and ranged reads included).
    pub connections: usize,
    /// How long a request may go without progress before it fails as
    /// transient: no body bytes going out, no answer once the body is out
    /// (plus 1 s per 256 KiB of the body, up to 4 MiB), or a pause in the
    /// answer's body. See [`super::http`].
    pub timeout: Duration,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("virtual_host", &self.virtual_host)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "…"))
            .field("secret_access_key", &"…")
            .field("connections", &self.connections)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Splits `s3://BUCKET/PREFIX` into bucket and prefix, checking that both
/// use only characters every S3 implementation accepts in keys.
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Error::Invalid(format!("{url:?} is not an s3://BUCKET/PREFIX URL")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.'])
        && !bucket.contains("..")
        && bucket.parse::<std::net::Ipv4Addr>().is_err();
    if !bucket_ok {
        return Err(Error::Invalid(format!(
            "{bucket:?} is not a valid bucket name (3 to 63 lowercase letters, digits, '-' and '.', \
             not two '.' in a row, not an IP address)"
        )));
    }
    let prefix_ok = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b))
        && !prefix
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if !prefix.is_empty() && !prefix_ok {
        return Err(Error::Invalid(format!(
            "{prefix:?} is not a usable key prefix (letters, digits and /_.- only, no empty, . or .. parts)"
        )));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// Checks an endpoint URL (`--s3-endpoint`) before anything is sent to it:
/// `http://` or `https://` and a host, with no query or fragment; with
/// virtual-host addressing (`virtual_host`), which puts the bucket's name
/// in front of the host's, a host name rather than an IP address.
pub fn check_endpoint(endpoint: &str, virtual_host: bool) -> Result<()> {
    let shown = display_endpoint(endpoint);
    let bad = |why: &str| {
        Err(Error::Invalid(format!(
            "--s3-endpoint {shown:?} {why} (give one such as http://127.0.0.1:9000 or https://s3.example.com)"
        )))
    };
    if !endpoint.contains("://") {
        return bad("is not an http:// or https:// URL");
    }
    match url::Url::parse(endpoint) {
        Err(e) => bad(&format!("is not a URL: {e}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            bad("is not an http:// or https:// URL")
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => bad("names no host"),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            bad("has a query or fragment, which an endpoint cannot have")
        }
        // It was sent as `bucket.127.0.0.1`, refused as "invalid IPv4
        // address".
        Ok(u) if virtual_host && !matches!(u.host(), Some(url::Host::Domain(_))) => {
            Err(Error::Invalid(format!(
                "--s3-endpoint {shown:?} is an IP address, and --s3-virtual-host puts the \
                 bucket's name in front of the endpoint's host name: give the endpoint by a \
                 host name, or drop --s3-virtual-host for path-style addressing"
            )))
        }
        Ok(_) => Ok(()),
    }
}

/// The endpoint as requests reach it with virtual-host addressing, the
/// bucket's name in front of its host's (`http://bkt.minio:9000`), so
/// that an error names the host that was looked up.
fn virtual_host_endpoint(shown: &str, bucket: &str) -> String {
    match url::Url::parse(shown) {
        Ok(mut u) => match u.host_str().map(|h| format!("{bucket}.{h}")) {
            Some(host) if u.set_host(Some(&host)).is_ok() => {
                u.as_str().trim_end_matches('/').to_string()
            }
            _ => shown.to_string(),
        },
        Err(_) => shown.to_string(),
    }
}

/// Credentials shorter than this are not masked in messages: every
/// occurrence of their text is, and a key of a letter or two (a test
/// server's) turned "lookup" into "loo[key id]up". Real ones are far
/// longer (AWS: 20 and 40 characters).
const MASKED_FROM: usize = 6;

/// `msg` with the credentials of `opts` masked (see [`MASKED_FROM`]).
fn redact(opts: &S3Options, msg: &str) -> String {
    let mut out = msg.to_string();
    for (value, mask) in [
        (
            opts.secret_access_key.as_deref().map(String::as_str),
            "[secret]",
        ),
        (opts.session_token.as_deref().map(String::as_str), "[token]"),
        (opts.access_key_id.as_deref(), "[key id]"),
    ] {
        if let Some(v) = value.filter(|v| v.len() >= MASKED_FROM) {
            out = out.replace(v, mask);
        }
    }
    out
}

/// Removes user information (`user:password@`) from an endpoint URL so it
/// can be shown.
fn display_endpoint(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.as_str().trim_end_matches('/').to_string()
        }
        Err(_) => endpoint.to_string(),
    }
}

/// A repository in an S3 bucket. See the module docs.
pub struct S3Backend {
    /// Sends a CRC32C with every upload; every other request as well.
    op: Operator,
    /// Uploads without a checksum, once the store has refused them.
    unchecked: Operator,
    /// The store refuses upload checksums: upload with `unchecked`.
    refused: std::sync::atomic::AtomicBool,
    rt: tokio::runtime::Runtime,
    opts: S3Options,
    endpoint: String,
    gate: Gate,
    created_bucket: std::sync::atomic::AtomicBool,
}

impl S3Backend {
    /// The files of `kind`, named as the backend names them, with what the
    /// listing says of each.
    /// Every object under `kind`'s folder, at any depth, each with its
    /// path from the prefix (`snapshots/abcd…`).
    fn list_all(&self, kind: FileKind) -> Result<Vec<opendal::Entry>> {
        let dir = format!("{}/", kind.dir());
        let what = || format!("{dir} in s3://{}/{}", self.opts.bucket, self.opts.prefix);
        self.run("list", what, self.op.list_with(&dir).recursive(true))
    }

    fn list_entries(&self, kind: FileKind) -> Result<Vec<(String, opendal::Metadata)>> {
        if kind == FileKind::Config {
            return Ok(Vec::new());
        }
        let entries = self.list_all(kind)?;
        // Only objects at the place the name gives (`packs/ab/abcd…`,
        // `snapshots/abcd…`): an object of the same name deeper down, or
        // in another pack folder (another repository nested under this
        // prefix, a copy put aside in a sub-folder), is not this
        // repository's, and taken for one it could be neither read nor
        // removed under its name, failing every listing of its kind.
        // (`strays` names those under `snapshots/`, where gc must not
        // pass over them.)
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let path = e.path().trim_start_matches('/');
                let name = path.rsplit('/').next()?;
                (!name.is_empty() && !name.starts_with('.') && path == Self::key(kind, name))
                    .then(|| (name.to_string(), e.metadata().clone()))
            })
            .collect())
    }

    /// Connects (lazily: no request is sent until the first operation).
    pub fn new(opts: S3Options) -> Result<S3Backend> {
        let endpoint = opts
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", opts.region));
        let shown = display_endpoint(&endpoint);
        // Found before anything is sent: a usage error, as the other S3
        // settings' are.
        let (Some(id), Some(secret)) = (&opts.access_key_id, &opts.secret_access_key) else {
            return Err(Error::Usage(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            ));
        };
        let root = if opts.prefix.is_empty() {
            "/".to_string()
        } else {
            format!("/{}/", opts.prefix)
        };
        let gate = Gate::new(opts.connections);
        let transport = GatedTransport::new(reqwest::Client::new(), gate.clone(), opts.timeout);
        let transport = HttpTransporter::new(transport);
        opendal::install_default();
        let operator = |checksum: bool| {
            let mut builder = S3::default()
                .root(&root)
                .bucket(&opts.bucket)
                .endpoint(&endpoint)
                .region(&opts.region)
                .access_key_id(id)
                .secret_access_key(secret)
                .disable_config_load()
                .disable_ec2_metadata();
            if let Some(token) = &opts.session_token {
                builder = builder.session_token(token);
            }
            if opts.virtual_host {
                builder = builder.enable_virtual_host_style();
            }
            if checksum {
                builder = builder.checksum_algorithm("crc32c");
            }
            let op = Operator::new(builder)
                .map_err(|e| Error::Invalid(format!("S3 settings for {shown}: {}", e.message())))?;
            let ctx = op.context().with_http_transport(transport.clone());
            Ok::<_, Error>(op.with_context(ctx))
        };
        let op = operator(true)?;
        let unchecked = operator(false)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .on_thread_start(block_sigpipe)
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the S3 client runtime", e))?;
        Ok(S3Backend {
            op,
            unchecked,
            refused: Default::default(),
            rt,
            endpoint: if opts.virtual_host {
                virtual_host_endpoint(&shown, &opts.bucket)
            } else {
                shown
            },
            opts,
            gate,
            created_bucket: Default::default(),
        })
    }

    /// The endpoint as shown in messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn key(kind: FileKind, name: &str) -> String {
        match kind {
            FileKind::Config => super::config_name(name),
            FileKind::Pack => format!("packs/{}/{name}", name.get(..2).unwrap_or("xx")),
            _ => format!("{}/{name}", kind.dir()),
        }
    }

    fn object(&self, kind: FileKind, name: &str) -> String {
        match kind {
            FileKind::Config => format!("s3://{}/{}", self.opts.bucket, self.full_key(kind, name)),
            _ => format!("{} {name}", kind_name(kind)),
        }
    }

    fn full_key(&self, kind: FileKind, name: &str) -> String {
        if self.opts.prefix.is_empty() {
            Self::key(kind, name)
        } else {
            format!("{}/{}", self.opts.prefix, Self::key(kind, name))
        }
    }

    /// Removes anything credential-like from a message from the client.
    fn redact(&self, msg: &str) -> String {
        redact(&self.opts, msg)
    }

    fn map_err(&self, op: &str, object: String, e: opendal::Error) -> Error {
        let (detail, transient) = match e.kind() {
            ErrorKind::NotFound => return Error::NotFound(object),
            // A signature the server refuses for its time is refused as
            // access is: said as what it is, so that a host whose clock
            // is off is not sent to check its credentials. A HEAD has no
            // body to name the error: the server's `Date` tells.
            ErrorKind::PermissionDenied if clock_skew(&e.to_string()).is_some() => {
                let skew = clock_skew(&e.to_string()).unwrap_or_default();
                let off = match skew.unsigned_abs() / 60 {
                    0 => "too far from the server's".to_string(),
                    m => format!(
                        "{m} minutes {} the server's",
                        if skew < 0 { "behind" } else { "ahead of" }
                    ),
                };
                (
                    format!(
                        "access denied: this host's clock is {off}, and S3 refuses requests \
                         signed at a time that far off (RequestTimeTooSkewed); set the clock \
                         right (NTP)"
                    ),
                    false,
                )
            }
            ErrorKind::PermissionDenied => (
                "access denied (check the credentials and the bucket's policy)".to_string(),
                false,
            ),
            ErrorKind::ConfigInvalid if e.to_string().contains("NoSuchBucket") => {
                (format!("bucket {} does not exist", self.opts.bucket), false)
            }
            ErrorKind::RangeNotSatisfied => {
                return Error::corrupt(object, "truncated: the range lies past its end")
            }
            _ => (self.redact(&describe(&e)), e.is_temporary()),
        };
        Error::Backend {
            op: op.into(),
            object,
            endpoint: self.endpoint.clone(),
            detail,
            transient,
        }
    }

    /// Runs one operation on the runtime. Its requests have deadlines (see
    /// [`super::http`]); the operation as a whole has none, since it may
    /// wait for the gate behind other threads' transfers.
    fn run<T>(
        &self,
        op: &str,
        object: impl FnOnce() -> String,
        fut: impl IntoFuture<Output = opendal::Result<T>>,
    ) -> Result<T> {
        self.rt
            .block_on(fut.into_future())
            .map_err(|e| self.map_err(op, object(), e))
    }

    /// A whole object; an index table of `known` bytes (from a listing,
    /// or asked for) beyond [`crate::index::SPOOL_FROM`] is spooled to a
    /// temporary file rather than held in memory.
    /// A file of a kind with a limit ([`FileKind::max_len`]) larger than
    /// it, as `known` tells, is refused unread.
    fn read_known(&self, kind: FileKind, name: &str, known: Option<u64>) -> Result<Data> {
        let key = Self::key(kind, name);
        let what = || self.object(kind, name);
        if let (Some(max), Some(len)) = (kind.max_len(), known) {
            if len > max {
                return Err(super::oversize(kind, what(), len));
            }
        }
        if let Some(len) = known.filter(|&n| n > crate::index::SPOOL_FROM as u64) {
            return self.read_spooled(kind, name, len);
        }
        let buf = if kind == FileKind::Pack {
            self.run(
                "read",
                what,
                self.op
                    .read_with(&key)
                    .chunk(PART_SIZE)
                    .concurrent(self.opts.connections.max(1)),
            )?
        } else {
            self.run("read", what, self.op.read(&key))?
        };
        if known.is_some_and(|n| n != buf.len() as u64) {
            return Err(Error::corrupt(what(), "changed while it was read"));
        }
        Ok(Data::Owned(buf.to_vec()))
    }

    /// Reads a large object (an index table of more than
    /// [`crate::index::SPOOL_FROM`] bytes) a part at a time into a
    /// temporary file and maps it, so it is never held in memory whole.
    fn read_spooled(&self, kind: FileKind, name: &str, len: u64) -> Result<Data> {
        use std::io::Write;
        let what = || self.object(kind, name);
        let tmp = std::env::temp_dir();
        let mut file = crate::mmap::spool_file()
            .map_err(|e| Error::path("create download spool in", &tmp, e))?;
        let mut offset = 0;
        while offset < len {
            let part = (len - offset).min(PART_SIZE as u64) as usize;
            let bytes = self.read_range(kind, name, offset, part)?;
            file.write_all(&bytes)
                .map_err(|e| Error::path("write download spool in", &tmp, e))?;
            offset += part as u64;
        }
        // Kept open, as a local table is (see `IndexTable::find`).
        let map = crate::mmap::Map::keeping(file, &tmp)?;
        if map.len() as u64 != len {
            return Err(Error::corrupt(what(), "changed while it was read"));
        }
        Ok(Data::Mapped(map))
    }

    /// The bucket and credentials as `rusty-s3` signs with them, for the
    /// requests opendal's S3 service cannot send (creating the bucket,
    /// listing and aborting multipart uploads); `None` without credentials.
    fn signer(&self) -> Result<Option<(rusty_s3::Bucket, rusty_s3::Credentials)>> {
        let (Some(id), Some(secret)) = (&self.opts.access_key_id, &self.opts.secret_access_key)
        else {
            return Ok(None);
        };
        let endpoint = url::Url::parse(
            self.opts
                .endpoint
                .as_deref()
                .unwrap_or(&format!("https://s3.{}.amazonaws.com", self.opts.region)),
        )
        .map_err(|e| Error::Invalid(format!("endpoint {}: {e}", self.endpoint)))?;
        let style = if self.opts.virtual_host {
            rusty_s3::UrlStyle::VirtualHost
        } else {
            rusty_s3::UrlStyle::Path
        };
        let bucket = rusty_s3::Bucket::new(
            endpoint,
            style,
            self.opts.bucket.clone(),
            self.opts.region.clone(),
        )
        .map_err(|e| Error::Invalid(format!("endpoint {}: {e}", self.endpoint)))?;
        let creds = match &self.opts.session_token {
            Some(t) => rusty_s3::Credentials::new_with_token(id, secret.as_str(), t.as_str()),
            None => rusty_s3::Credentials::new(id, secret.as_str()),
        };
        Ok(Some((bucket, creds)))
    }

    /// Sends one request to a presigned `url` with `reqwest`, through the
    /// gate, and reads its answer within the timeout: the status and the
    /// body, or why there was none (a message without the URL, which holds
    /// the signature).
    fn send_signed(
        &self,
        method: reqwest::Method,
        url: &url::Url,
        body: String,
    ) -> std::result::Result<(u16, String), String> {
        let limit = self.opts.timeout;
        self.rt.block_on(async {
            let _permit = self.gate.enter().await;
            let client = reqwest::Client::new();
            let exchange = async {
                let resp = client
                    .request(method, url.as_str())
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                let status = resp.status().as_u16();
                let text = resp.text().await.map_err(|e| e.without_url().to_string())?;
                Ok::<_, String>((status, text))
            };
            tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| format!("no answer within {} s", limit.as_secs_f64()))?
        })
    }

    /// Creates the bucket if it is missing and the credentials allow it.
    /// Returns a note for the user when it was created.
    ///
    /// opendal's S3 service has no way to create a bucket, so this one
    /// request is signed with `rusty-s3` (a presigned URL, the credentials
    /// in its query only) and sent with `reqwest`, through the same gate.
    fn create_bucket(&self) -> Result<Option<String>> {
        let Some((bucket, creds)) = self.signer()? else {
            return Ok(None);
        };
        use rusty_s3::S3Action;
        let url =
            rusty_s3::actions::CreateBucket::new(&bucket, &creds).sign(Duration::from_secs(300));
        let body = if self.opts.region == "us-east-1" {
            String::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.opts.region
            )
        };
        let what = format!("bucket {}", self.opts.bucket);
        let answer = self.send_signed(reqwest::Method::PUT, &url, body);
        match answer {
            Ok((200..=299, _)) => Ok(Some(format!("created bucket {}", self.opts.bucket))),
            Ok((409, text)) if text.contains("BucketAlreadyOwnedByYou") => Ok(None),
            Ok((status, text)) => {
                // Not created: fine if the bucket is there and usable.
                match self.run("list", || what.clone(), self.op.list("keys/")) {
                    Ok(_) => Ok(None),
                    Err(_) => Err(Error::Backend {
                        op: "create".into(),
                        object: what,
                        endpoint: self.endpoint.clone(),
                        detail: format!(
                            "the bucket is missing or unusable and could not be created: HTTP {status} {}",
                            s3_code(&text)
                        ),
                        transient: false,
                    }),
                }
            }
            Err(detail) => Err(Error::Backend {
                op: "create".into(),
                object: what,
                endpoint: self.endpoint.clone(),
                detail: self.redact(&detail),
                transient: true,
            }),
        }
    }

    /// Uploads `bytes` as `key` with their CRC32C, so that the store
    /// refuses bytes changed on the way (a temporary error, retried by
    /// [`super::retry`]). A store that refuses the checksum header itself
    /// (an answer other than a bad digest, twice) is sent uploads without
    /// it from then on, with a warning: it does not check what it stores.
    fn put(&self, key: &str, bytes: &[u8], what: impl Fn() -> String) -> Result<()> {
        use std::sync::atomic::Ordering;
        let fail = |e| self.map_err("write", what(), e);
        if !self.refused.load(Ordering::Relaxed) {
            // The refusal's status and S3 code ("HTTP 400 InvalidArgument"),
            // if it is one.
            let refusal = |r: &opendal::Result<()>| -> Option<String> {
                let e = r.as_ref().err()?;
                let rest = e.message().strip_prefix(REFUSED)?.strip_prefix(':')?;
                (e.kind() == ErrorKind::Unsupported).then(|| {
                    rest.split_whitespace()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
            };
            let first = self.rt.block_on(self.upload(&self.op, key, bytes));
            let Some(code) = refusal(&first) else {
                return first.map_err(fail);
            };
            // Once more, so that one odd answer does not turn checks off:
            // refused the same way.
            let again = self.rt.block_on(self.upload(&self.op, key, bytes));
            if refusal(&again).as_ref() != Some(&code) {
                return again.map_err(fail);
            }
            self.rt
                .block_on(self.upload(&self.unchecked, key, bytes))
                .map_err(fail)?;
            if !self.refused.swap(true, Ordering::Relaxed) {
                let detail = first.err().map(|e| e.message().to_string());
                crate::eprint_line(format_args!(
                    "warning: {} at {} does not check uploads ({}); uploading without \
                     a checksum, so bytes changed on the way are found only by \
                     `verify --read-data`",
                    self.opts.bucket,
                    self.endpoint,
                    detail.unwrap_or_default()
                ));
            }
            return Ok(());
        }
        self.rt
            .block_on(self.upload(&self.unchecked, key, bytes))
            .map_err(fail)
    }

    /// One upload through `op`: a single PUT, or a multipart upload for
    /// more than [`MULTIPART_THRESHOLD`] bytes.
    async fn upload(&self, op: &Operator, key: &str, bytes: &[u8]) -> opendal::Result<()> {
        if bytes.len() <= MULTIPART_THRESHOLD {
            op.write(key, bytes.to_vec()).await?;
            return Ok(());
        }
        let mut w = op
            .writer_with(key)
            .chunk(PART_SIZE)
            .concurrent(self.opts.connections.max(1))
            .await?;
        let done = async {
            // A part at a time: the bytes may be a large mapped file
            // (an index table spooled by a merge), never copied whole;
            // at most `connections` parts are in flight.
            for part in bytes.chunks(PART_SIZE) {
                w.write(part.to_vec()).await?;
            }
            w.close().await
        }
        .await;
        if done.is_err() {
            let _ = w.abort().await;
        }
        done.map(|_| ())
    }

    /// Tries what the store does with the operations cairn relies on and
    /// with the ones it avoids, and describes it, one line each. Fails if
    /// a relied-on operation (write, read, range read, list, delete)
    /// misbehaves.
    pub fn probe(&self) -> Result<Vec<String>> {
        let name = format!(".probe-{}", hex::encode(crate::crypto::random_bytes::<8>()));
        let key = Self::key(FileKind::Lock, &name);
        let what = || format!("probe object {}", self.full_key(FileKind::Lock, &name));
        let mut notes = vec![format!(
            "store: S3 at {}, bucket {}, {} addressing",
            self.endpoint,
            self.opts.bucket,
            if self.opts.virtual_host {
                "virtual-host"
            } else {
                "path-style"
            }
        )];
        if self
            .created_bucket
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            notes.push(format!("created bucket {}", self.opts.bucket));
        }
        let first = b"cairn probe: first".to_vec();
        self.put(&key, &first, what)?;
        let second = b"cairn probe: second".to_vec();
        let refused = self.refused.load(std::sync::atomic::Ordering::Relaxed);
        let uploader = if refused { &self.unchecked } else { &self.op };
        let cond = self.rt.block_on(
            uploader
                .write_with(&key, second.clone())
                .if_not_exists(true)
                .into_future(),
        );
        let now = self.run("read", what, self.op.read(&key))?.to_vec();
        notes.push(match (cond, now == first) {
            (Err(e), true) if e.kind() == ErrorKind::ConditionNotMatch => {
                "conditional writes: honoured (cairn does not rely on them)".into()
            }
            (Ok(_), false) => {
                "conditional writes: ignored, the object was overwritten (cairn does not rely on them)"
                    .into()
            }
            (Err(_), true) => "conditional writes: refused (cairn does not rely on them)".into(),
            _ => "conditional writes: inconsistent answers (cairn does not rely on them)".into(),
        });
        notes.push(if refused {
            "upload checksums: refused by the store, so it cannot refuse bytes changed on the way"
                .into()
        } else {
            "upload checksums: a CRC32C with every upload and part (a store that checks refuses bytes changed on the way)".into()
        });
        let range = self.run("read range of", what, self.op.read_with(&key).range(6..11))?;
        if range.to_vec() != now[6..11] {
            return Err(Error::Invalid(format!(
                "{} at {} answers range reads with the wrong bytes; cairn needs them",
                self.opts.bucket, self.endpoint
            )));
        }
        notes.push("range reads: yes (restore fetches only the chunks it needs)".into());
        let listed = self.run("list", what, self.op.list("locks/"))?;
        let seen = listed.iter().any(|e| e.path().ends_with(&name));
        notes.push(format!(
            "listing after write: {}",
            if seen {
                "consistent"
            } else {
                "delayed (new objects appear late)"
            }
        ));
        self.run("remove", what, self.op.delete(&key))?;
        notes.push(format!(
            "multipart uploads: for packs over {} MiB, in {} MiB parts",
            MULTIPART_THRESHOLD >> 20,
            PART_SIZE >> 20
        ));
        Ok(notes)
    }
}

/// Blocks SIGPIPE on the calling (runtime) thread: a server closing a
/// connection while a runtime thread writes to it must be an `EPIPE`
/// error (retried), not the death of the process. The `cairn` binary
/// ignores SIGPIPE altogether, but a program using this crate may keep
/// the default action; SIGPIPE raised by a write goes to the writing
/// thread, and the connections live on these threads.
fn block_sigpipe() {
    // SAFETY: sigemptyset/sigaddset initialise a local set; pthread_sigmask
    // changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The error code of an S3 XML error body (the text of its first
/// `<Code>…</Code>`, untrimmed), or empty: a plain search of whatever
/// the store answered, shown in the error of a bucket not created.
pub fn s3_code(body: &str) -> String {
    body.split_once("<Code>")
        .and_then(|(_, r)| r.split_once("</Code>"))
        .map(|(c, _)| c.to_string())
        .unwrap_or_default()
}

/// A one-line description of a client error: its kind, message and the
/// innermost cause (connection refused, reset, …).
fn describe(e: &opendal::Error) -> String {
    let mut msg = if e.message().trim().is_empty() {
        // An answer without a body (a proxy's 503, say) leaves the
        // message empty: its status is in the error's context, which
        // its text shows (`response: Parts { status: 503, … }`).
        let full = e.to_string();
        let status = full.split_once("status: ").map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        });
        match status {
            Some(code) if !code.is_empty() => {
                format!("{}: HTTP {code} without a body", e.kind())
            }
            _ => format!("{}: {full}", e.kind()),
        }
    } else {
        format!("{}: {}", e.kind(), e.message())
    };
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = src {
        last = Some(s.to_string());
        src = s.source();
    }
    if let Some(l) = last {
        msg.push_str(": ");
        msg.push_str(&l);
    }
    if e.is_temporary() {
        msg.push_str(" (temporary)");
    }
    msg
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        let mut s = format!("s3://{}", self.opts.bucket);
        if !self.opts.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.opts.prefix);
        }
        format!("{s} at {}", self.endpoint)
    }

    fn exists(&self) -> Result<bool> {
        let what = || self.object(FileKind::Config, "");
        match self.run("stat", what, self.op.stat("config")) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(Error::Backend { detail, .. }) if detail.contains("does not exist") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn create(&self) -> Result<()> {
        if self.create_bucket()?.is_some() {
            self.created_bucket
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        Ok(self
            .list_sizes(kind)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    fn strays(&self, kind: FileKind) -> Result<Vec<Vec<u8>>> {
        // Packs lie in fan-out folders, which the names say nothing of:
        // the default (names that are no id) for them.
        if matches!(kind, FileKind::Config | FileKind::Pack) {
            return Ok(super::not_ids(self.list(kind)?));
        }
        // Elsewhere every object but one at `dir/<id>`: one put aside in a
        // "sub-folder" (`snapshots/old/<id>`, `snapshots/old/.<id>`) is as
        // much a snapshot moved out of readers' sight as a local file
        // moved into a folder, and no repository nests under another's
        // `snapshots/`. Each is named by its path below the folder. (cairn
        // writes no temporary objects: an upload is whole or absent.)
        let dir = format!("{}/", kind.dir());
        let mut out: Vec<Vec<u8>> = self
            .list_all(kind)?
            .into_iter()
            .filter_map(|e| {
                let path = e.path().trim_start_matches('/');
                let below = path.strip_prefix(&dir)?;
                let name = below.rsplit('/').next()?;
                let stray = below.contains('/') || !crate::id::is_hex_name(name);
                (!name.is_empty() && stray).then(|| below.as_bytes().to_vec())
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn list_sizes(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        // ListObjectsV2 gives each object's size with its key.
        let listed = self.list_entries(kind)?;
        Ok(listed
            .into_iter()
            .map(|(name, meta)| (name, meta.content_length()))
            .collect())
    }

    fn list_times(&self, kind: FileKind) -> Result<Vec<(String, Option<SystemTime>)>> {
        // And its `LastModified`, by the store's clock.
        let listed = self.list_entries(kind)?;
        Ok(listed
            .into_iter()
            .map(|(name, meta)| (name, meta.last_modified().map(SystemTime::from)))
            .collect())
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let key = Self::key(kind, name);
        let meta = self.run("stat", || self.object(kind, name), self.op.stat(&key))?;
        Ok(meta.content_length())
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Data> {
        // An index table's size decides whether it is spooled; that of a
        // file read whole into memory, whether it is read at all.
        let known = if kind == FileKind::Index || kind.max_len().is_some() {
            let what = || self.object(kind, name);
            let key = Self::key(kind, name);
            Some(self.run("stat", what, self.op.stat(&key))?.content_length())
        } else {
            None
        };
        self.read_known(kind, name, known)
    }

    fn read_listed(&self, kind: FileKind, name: &str, size: u64) -> Result<Data> {
        self.read_known(kind, name, Some(size))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let key = Self::key(kind, name);
        let end = offset + len as u64;
        let buf = match self.run(
            "read range of",
            || self.object(kind, name),
            self.op.read_with(&key).range(offset..end),
        ) {
            Ok(buf) => buf,
            // An answer shorter than the range (the client's "reader got
            // too little data"): an object cut short within the range,
            // where its size says so, is damage, as a range past its end
            // is; it was a store's error, and a restore read no other copy.
            Err(e @ Error::Backend { .. }) if !e.is_transient() => {
                return Err(match self.size(kind, name) {
                    Ok(size) if size < end => Error::corrupt(
                        self.object(kind, name),
                        format!("truncated: {size} bytes, where the range read ends at byte {end}"),
                    ),
                    _ => e,
                });
            }
            Err(e) => return Err(e),
        };
        if buf.len() != len {
            return Err(Error::corrupt(
                self.object(kind, name),
                format!("truncated: wanted {len} bytes at offset {offset}"),
            ));
        }
        Ok(buf.to_vec())
    }

    fn write(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        self.put(&Self::key(kind, name), bytes, || self.object(kind, name))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let key = Self::key(kind, name);
        self.run("remove", || self.object(kind, name), self.op.delete(&key))
    }
    /// A DELETE that returned is durable.
    fn settle_removals(&self) -> Result<()> {
        Ok(())
    }

    fn prefers_ranges(&self) -> bool {
        true
    }

    fn probe(&self) -> Result<Vec<String>> {
        S3Backend::probe(self)
    }

    /// Nothing is written under a temporary name; an interrupted multipart
    /// upload is aborted (see [`uploads`]), whatever its age.
    fn remove_leftovers(&self, before: std::time::SystemTime, dry_run: bool) -> Result<Leftovers> {
        let _ = before;
        self.remove_uploads(dry_run)
    }
}

/// How far this host's clock is from the server's, in seconds (negative:
/// behind), where a refused request's error shows the server's `Date`
/// header and the two differ by more than five minutes (S3 refuses a
/// signature fifteen minutes off); `None` otherwise. A GET's refusal
/// names `RequestTimeTooSkewed` in its body: taken as skew even without
/// a date.
fn clock_skew(error: &str) -> Option<i64> {
    let server = error
        .split("\"date\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok());
    let Some(server) = server else {
        return error.contains("RequestTimeTooSkewed").then_some(0);
    };
    let skew = chrono::Utc::now().timestamp() - server.timestamp();
    (skew.abs() > 300 || error.contains("RequestTimeTooSkewed")).then_some(skew)
}

#[cfg(test)]
mod tests {
    /// A refusal whose server `Date` is twenty minutes ahead of this
    /// host's clock is skew (this host behind), one a minute off is not,
    /// and a body naming `RequestTimeTooSkewed` is, date or none.
    #[test]
    fn a_refusal_tells_clock_skew_by_the_servers_date() {
        let at = |secs: i64| {
            let t = chrono::Utc::now() + chrono::Duration::seconds(secs);
            format!(
                "PermissionDenied (permanent) at stat, context: {{ response: Parts {{ status: \
                 403, headers: {{\"content-type\": \"application/xml\", \"date\": \"{}\"}} }} }}",
                t.to_rfc2822().replace("+0000", "GMT")
            )
        };
        let skew = clock_skew(&at(1200)).expect("skew");
        assert!((-1260..=-1140).contains(&skew), "{skew}");
        assert_eq!(clock_skew(&at(60)), None);
        assert_eq!(clock_skew("403 <Code>RequestTimeTooSkewed</Code>"), Some(0));
        assert_eq!(clock_skew("403 AccessDenied"), None);
    }

    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://bkt/a/b/").unwrap(),
            ("bkt".into(), "a/b".into())
        );
        assert_eq!(parse_url("s3://bkt").unwrap(), ("bkt".into(), "".into()));
        assert!(parse_url("s3://B/x").is_err());
        assert!(parse_url("s3://bkt/a//b").is_err());
        assert!(parse_url("s3://bkt/a/../b").is_err());
        assert!(parse_url("s3://bkt/a b").is_err());
        assert!(parse_url("/local/path").is_err());
        assert!(parse_url("s3://bkt..a/x").is_err());
        assert!(parse_url("s3://192.168.5.4/x").is_err());
        assert!(parse_url("s3://a.b.c/x").is_ok());
    }

    #[test]
    fn endpoints() {
        for ok in [
            "http://127.0.0.1:9000",
            "https://s3.example.com/",
            "http://k:s@minio:9000",
        ] {
            assert!(check_endpoint(ok, false).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("127.0.0.1:9000", "is not an http"),
            ("minio", "is not an http"),
            ("ftp://host", "is not an http"),
            ("http://", "is not a URL"),
            ("http://h/?a=b", "query"),
            ("http://h a", "is not a URL"),
        ] {
            let e = check_endpoint(bad, false).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // A secret in the URL is not shown.
        let e = check_endpoint("ftp://key:secret@h", false)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    /// Options of bucket `b` with these credentials.
    fn with_credentials(key: &str, secret: &str, token: Option<&str>) -> S3Options {
        S3Options {
            bucket: "b".into(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            virtual_host: false,
            access_key_id: Some(key.into()),
            secret_access_key: Some(Zeroizing::new(secret.into())),
            session_token: token.map(|t| Zeroizing::new(t.into())),
            connections: 4,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn credentials_are_masked_unless_too_short_to_be_real() {
        let opts = with_credentials("k", "a-secret-4711", Some("token-of-the-session"));
        let msg = "lookup failed: a-secret-4711 token-of-the-session k";
        assert_eq!(redact(&opts, msg), "lookup failed: [secret] [token] k");
    }

    #[test]
    fn virtual_host_addressing_needs_a_host_name() {
        for ip in ["http://127.0.0.1:9000", "https://[::1]:9000"] {
            assert!(check_endpoint(ip, false).is_ok(), "{ip}");
            let e = check_endpoint(ip, true).unwrap_err().to_string();
            assert!(e.contains("is an IP address"), "{ip}: {e}");
        }
        assert!(check_endpoint("http://minio:9000", true).is_ok());
        assert_eq!(
            virtual_host_endpoint("http://minio:9000", "bkt"),
            "http://bkt.minio:9000"
        );
        assert_eq!(
            virtual_host_endpoint("https://s3.example.com", "b"),
            "https://b.s3.example.com"
        );
    }

    #[test]
    fn endpoint_hides_user_info() {
        assert_eq!(
            display_endpoint("http://key:secret@127.0.0.1:9000/"),
            "http://127.0.0.1:9000"
        );
    }

    #[test]
    fn debug_hides_secret() {
        let o = with_credentials("AKIDSHOWN", "very-secret", None);
        let d = format!("{o:?}");
        assert!(
            !d.contains("very-secret") && !d.contains("AKIDSHOWN"),
            "{d}"
        );
    }
}
