//! A real S3 server for the tests: `s3s-fs` (which checks signatures) on
//! 127.0.0.1, one per test, with its data in a temporary directory, plus a
//! small TCP proxy that logs requests, counts those in flight, and can
//! answer 500 or nothing at all for a while, and answer the listing of
//! incomplete multipart uploads, which s3s-fs lacks.
//!
//! The server binary is found through `CAIRN_S3S_FS`, `PATH` or
//! `~/.cargo/bin`. When it is missing the tests fail and say how to install
//! it (`./.ci/test` installs it).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const ACCESS_KEY: &str = "AKCAIRNTEST";
pub const SECRET_KEY: &str = "cairn-test-secret-Zq81Xv";

/// Where the s3s-fs binary is, or a panic explaining how to get it.
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_S3S_FS") {
        return PathBuf::from(p);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/s3s-fs"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the S3 tests need the s3s-fs server: install it with \
             `cargo install --locked s3s-fs --version 0.14.1 --features binary` \
             (./.ci/test does this), or point CAIRN_S3S_FS at the binary"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "s3s-fs did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running s3s-fs.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
}

impl S3Server {
    /// Starts a server with an empty store.
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let mut s = S3Server {
            child: None,
            port: free_port(),
            dir,
        };
        s.restart();
        s
    }

    /// The folder holding the buckets (`data/<bucket>/<key>`).
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (kill -9).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log");
        let child = Command::new(server_bin())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.data())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        wait_for_port(self.port);
    }

    /// Files stored under `bucket/prefix/sub` (recursively).
    pub fn objects(&self, bucket: &str, key_prefix: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.data().join(bucket).join(key_prefix)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy in front of a server. It forwards bytes unchanged (so
/// signatures stay valid) and follows the HTTP/1.1 exchanges on each
/// connection (one request at a time, as clients send them): it logs every
/// request (method, target, `Range` header, body bytes answered), counts the
/// requests in flight at once, and can be told to
///
/// - cut every open connection and answer the next connections with 500
///   ([`Proxy::fail_after`]);
/// - swallow the next requests and never answer them ([`Proxy::stall_next`]);
/// - change one byte of the body of the next uploads ([`Proxy::corrupt_puts`]).
pub struct Proxy {
    pub port: u16,
    state: Arc<ProxyState>,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, e.g. `/bucket/repo/config` or `/bucket?list-type=2&…`.
    pub target: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Body bytes of the answer passed back to the client.
    pub answered: u64,
}

impl Seen {
    /// A listing (`GET /bucket?list-type=…`, `GET /bucket?prefix=…`).
    pub fn is_list(&self) -> bool {
        self.method == "GET"
            && self
                .target
                .split_once('?')
                .is_some_and(|(_, q)| q.contains("list-type") || q.contains("prefix="))
    }
}

struct ProxyState {
    upstream: u16,
    /// Connections still to answer with 500.
    fail: AtomicU64,
    /// After this many bytes from clients, start failing `fail_then` connections.
    trip_at: AtomicU64,
    fail_then: AtomicU64,
    bytes: AtomicU64,
    answered_500: AtomicU64,
    /// Requests still to swallow without an answer.
    stall: AtomicU64,
    stalled: AtomicU64,
    /// PUT bodies still to damage, and what their target must contain.
    corrupt: AtomicU64,
    corrupt_target: Mutex<String>,
    corrupted: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    log: Mutex<Vec<Seen>>,
    live: Mutex<Vec<TcpStream>>,
    /// Where to list incomplete uploads from, and the most uploads a page
    /// of the listing holds (see [`Proxy::list_uploads`]).
    uploads: Mutex<Option<(PathBuf, usize)>>,
    /// GETs whose target holds this text, and how many of them still to
    /// pass before every one after is answered 500 (see
    /// [`Proxy::refuse_gets`]).
    refuse: Mutex<Option<(String, u64)>>,
}

/// The exchange under way on one connection.
struct Conn {
    /// A request has started and its answer has not ended.
    busy: AtomicBool,
    /// Its index in the log (usize::MAX until its head is complete).
    entry: AtomicUsize,
    /// It is a HEAD request (its answer has no body).
    head_only: AtomicBool,
}

impl Conn {
    /// The request is over: answered, or the connection closed.
    fn end(&self, st: &ProxyState) {
        if self.busy.swap(false, Ordering::SeqCst) {
            st.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(ProxyState {
            upstream,
            fail: AtomicU64::new(0),
            trip_at: AtomicU64::new(u64::MAX),
            fail_then: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            answered_500: AtomicU64::new(0),
            stall: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            corrupt_target: Mutex::new(String::new()),
            corrupted: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
            uploads: Mutex::new(None),
            refuse: Mutex::new(None),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(st, conn));
            }
        });
        Proxy { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Once clients have sent `bytes` more bytes, cut all connections and
    /// answer the next `n` connections with 500.
    pub fn fail_after(&self, bytes: u64, n: u64) {
        let now = self.state.bytes.load(Ordering::SeqCst);
        self.state.fail_then.store(n, Ordering::SeqCst);
        self.state.trip_at.store(now + bytes, Ordering::SeqCst);
    }

    /// Passes the next `after` GET requests whose target holds `target`,
    /// then answers every one after with 500 (the server never sees
    /// them), as a store that stopped answering for those objects would.
    pub fn refuse_gets(&self, target: &str, after: u64) {
        *self.state.refuse.lock().unwrap() = Some((target.to_string(), after));
    }

    /// How many bytes clients have sent through the proxy.
    pub fn sent(&self) -> u64 {
        self.state.bytes.load(Ordering::SeqCst)
    }

    /// Passes every connection and request on again, undoing
    /// [`Proxy::fail_after`] and [`Proxy::refuse_gets`].
    pub fn heal(&self) {
        self.state.trip_at.store(u64::MAX, Ordering::SeqCst);
        self.state.fail.store(0, Ordering::SeqCst);
        *self.state.refuse.lock().unwrap() = None;
    }

    /// How many connections were answered with 500.
    pub fn failures(&self) -> u64 {
        self.state.answered_500.load(Ordering::SeqCst)
    }

    /// The next `n` requests are read and never answered (nor passed on);
    /// their connections stay open until the client gives up.
    pub fn stall_next(&self, n: u64) {
        self.state.stall.store(n, Ordering::SeqCst);
    }

    /// How many requests were swallowed.
    pub fn stalled(&self) -> u64 {
        self.state.stalled.load(Ordering::SeqCst)
    }

    /// The first body byte of the next `n` PUT requests whose target
    /// contains `target` is changed on its way to the server (`u64::MAX`:
    /// every one from now on).
    pub fn corrupt_puts(&self, n: u64, target: &str) {
        *self.state.corrupt_target.lock().unwrap() = target.to_string();
        self.state.corrupt.store(n, Ordering::SeqCst);
    }

    /// How many request bodies were changed.
    pub fn corrupted(&self) -> u64 {
        self.state.corrupted.load(Ordering::SeqCst)
    }

    /// Answers `ListMultipartUploads` (`GET /BUCKET?uploads`) itself from
    /// what `server` holds, as S3 does, `page` uploads at most a page
    /// (`IsTruncated`, `NextKeyMarker`, `NextUploadIdMarker`), without
    /// passing it on: s3s-fs answers it with `501 NotImplemented`. The
    /// proxy does not check the request's signature. Every other request
    /// about uploads (`ListParts`, `AbortMultipartUpload`) goes to s3s-fs.
    pub fn list_uploads(&self, server: &S3Server, page: usize) {
        *self.state.uploads.lock().unwrap() = Some((server.data(), page.max(1)));
    }

    /// Forgets the request log and the highest number of requests in flight.
    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
        let now = self.state.in_flight.load(Ordering::SeqCst);
        self.state.max_in_flight.store(now, Ordering::SeqCst);
    }

    /// The requests seen since the last clear.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.log.lock().unwrap().clone()
    }

    /// The most requests in flight at once since the last clear.
    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Object downloads (GET requests without a query, so not listings)
    /// seen since the last clear whose target contains `text`.
    pub fn gets_containing(&self, text: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && !r.target.contains('?') && r.target.contains(text))
            .count()
    }

    /// Listings seen since the last clear.
    pub fn lists(&self) -> Vec<Seen> {
        self.requests().into_iter().filter(Seen::is_list).collect()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` in an HTTP head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Follows the answers on one connection: where each head ends and how
/// long its body is, so the end of each exchange is known.
#[derive(Default)]
struct Answers {
    head: Vec<u8>,
    body: Body,
}

#[derive(Default)]
enum Body {
    /// Reading a head.
    #[default]
    None,
    /// This many bytes to go.
    Length(u64),
    /// Chunked: the last bytes seen, to spot the final chunk.
    Chunked(Vec<u8>),
    /// Until the connection closes.
    ToClose,
}

impl Answers {
    /// Takes the next bytes from the server.
    fn feed(&mut self, mut data: &[u8], conn: &Conn, st: &ProxyState) {
        let count = |n: usize| {
            let i = conn.entry.load(Ordering::SeqCst);
            if let Some(e) = st.log.lock().unwrap().get_mut(i) {
                e.answered += n as u64;
            }
        };
        while !data.is_empty() {
            match &mut self.body {
                Body::Length(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    count(n);
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.body = Body::None;
                        conn.end(st);
                    }
                }
                Body::Chunked(tail) => {
                    count(data.len());
                    tail.extend_from_slice(data);
                    let keep = tail.len().saturating_sub(7);
                    tail.drain(..keep);
                    data = &[];
                    if tail.ends_with(b"\r\n0\r\n\r\n") || tail == b"0\r\n\r\n" {
                        self.body = Body::None;
                        conn.end(st);
                    }
                }
                Body::ToClose => {
                    count(data.len());
                    data = &[];
                }
                Body::None => {
                    self.head.extend_from_slice(data);
                    data = &[];
                    let Some(end) = find(&self.head, b"\r\n\r\n") else {
                        continue;
                    };
                    let rest = self.head.split_off(end + 4);
                    let head = String::from_utf8_lossy(&self.head).into_owned();
                    self.head.clear();
                    let status: u16 = head
                        .split(' ')
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let length = header(&head, "content-length").and_then(|v| v.parse().ok());
                    let chunked = header(&head, "transfer-encoding")
                        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
                    self.body = if (100..200).contains(&status) {
                        Body::None
                    } else if conn.head_only.load(Ordering::SeqCst)
                        || status == 204
                        || status == 304
                        || length == Some(0)
                    {
                        conn.end(st);
                        Body::None
                    } else if let Some(n) = length {
                        Body::Length(n)
                    } else if chunked {
                        Body::Chunked(Vec::new())
                    } else {
                        Body::ToClose
                    };
                    // The rest belongs to this answer's body.
                    if !rest.is_empty() {
                        self.feed(&rest, conn, st);
                    }
                }
            }
        }
    }
}

fn serve(st: Arc<ProxyState>, mut client: TcpStream) {
    if st.fail.load(Ordering::SeqCst) > 0 {
        st.fail.fetch_sub(1, Ordering::SeqCst);
        st.answered_500.fetch_add(1, Ordering::SeqCst);
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>injected</Message></Error>";
        let _ = write!(
            client,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", st.upstream)) else {
        return;
    };
    if let (Ok(a), Ok(b)) = (client.try_clone(), upstream.try_clone()) {
        let mut live = st.live.lock().unwrap();
        live.push(a);
        live.push(b);
    }
    let conn = Arc::new(Conn {
        busy: AtomicBool::new(false),
        entry: AtomicUsize::new(usize::MAX),
        head_only: AtomicBool::new(false),
    });
    let (mut c_read, mut u_write, mut c_answer) = (
        client.try_clone().expect("clone"),
        upstream.try_clone().expect("clone"),
        client.try_clone().expect("clone"),
    );
    let (st2, conn2) = (st.clone(), conn.clone());
    let up = std::thread::spawn(move || {
        let (st, conn) = (st2, conn2);
        let mut buf = vec![0u8; 64 << 10];
        // The head of the request under way, until it is complete: held
        // back from the server until then, so a request the proxy answers
        // itself never reaches it.
        let mut head: Option<Vec<u8>> = None;
        // Where in the bytes still to come the body byte to change is.
        let mut flip: Option<usize> = None;
        // Counts bytes from the client; true once the proxy was told to
        // cut connections at this point.
        let tripped = |n: usize| {
            let total = st.bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if total < st.trip_at.load(Ordering::SeqCst) {
                return false;
            }
            st.trip_at.store(u64::MAX, Ordering::SeqCst);
            st.fail
                .store(st.fail_then.load(Ordering::SeqCst), Ordering::SeqCst);
            for s in st.live.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
            true
        };
        loop {
            let n = match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !conn.busy.load(Ordering::SeqCst) {
                // The first bytes of a new request.
                conn.busy.store(true, Ordering::SeqCst);
                conn.entry.store(usize::MAX, Ordering::SeqCst);
                let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                st.max_in_flight.fetch_max(now, Ordering::SeqCst);
                head = Some(Vec::new());
                let stall = st
                    .stall
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| s.checked_sub(1));
                if stall.is_ok() {
                    st.stalled.fetch_add(1, Ordering::SeqCst);
                    // Swallow everything until the client hangs up.
                    while matches!(c_read.read(&mut buf), Ok(n) if n > 0) {}
                    break;
                }
            }
            // The head, once complete, goes out in place of this read.
            let mut whole_head = None;
            if let Some(mut h) = head.take() {
                h.extend_from_slice(&buf[..n]);
                let Some(end) = find(&h, b"\r\n\r\n") else {
                    head = Some(h);
                    if tripped(n) {
                        break;
                    }
                    continue;
                };
                let text = String::from_utf8_lossy(&h[..end]).into_owned();
                let mut line = text.split("\r\n").next().unwrap_or("").split(' ');
                let method = line.next().unwrap_or("").to_string();
                let target = line.next().unwrap_or("").to_string();
                conn.head_only.store(method == "HEAD", Ordering::SeqCst);
                let length: u64 = header(&text, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if method == "PUT"
                    && length > 0
                    && target.contains(st.corrupt_target.lock().unwrap().as_str())
                    && st
                        .corrupt
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                        .is_ok()
                {
                    st.corrupted.fetch_add(1, Ordering::SeqCst);
                    flip = Some(end + 4);
                }
                let refused = method == "GET"
                    && st
                        .refuse
                        .lock()
                        .unwrap()
                        .as_mut()
                        .is_some_and(|(text, pass)| {
                            target.contains(text.as_str())
                                && pass.checked_sub(1).map(|p| *pass = p).is_none()
                        });
                let listing = if refused {
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>injected</Message></Error>";
                    Some((
                        format!(
                            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        ),
                        body.to_string(),
                    ))
                } else {
                    (method == "GET")
                        .then(|| st.uploads.lock().unwrap().clone())
                        .flatten()
                        .and_then(|(data, page)| uploads_answer(&data, page, &target))
                };
                let mut log = st.log.lock().unwrap();
                log.push(Seen {
                    method,
                    target,
                    range: header(&text, "range").map(str::to_string),
                    answered: listing.as_ref().map_or(0, |(_, body)| body.len() as u64),
                });
                conn.entry.store(log.len() - 1, Ordering::SeqCst);
                drop(log);
                if let Some((head, body)) = listing {
                    // Answered here: the server never sees it.
                    conn.end(&st);
                    if c_answer.write_all(head.as_bytes()).is_err()
                        || c_answer.write_all(body.as_bytes()).is_err()
                    {
                        break;
                    }
                    continue;
                }
                whole_head = Some(h);
            }
            if tripped(n) {
                break;
            }
            let data: &mut [u8] = match &mut whole_head {
                Some(h) => h,
                None => &mut buf[..n],
            };
            match flip.take() {
                Some(at) if at < data.len() => data[at] ^= 0x20,
                Some(_) => flip = Some(0),
                None => {}
            }
            if u_write.write_all(data).is_err() {
                break;
            }
        }
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let mut answers = Answers::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match u_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Before the client sees the end of an answer (and may send its
        // next request), the exchange is over.
        answers.feed(&buf[..n], &conn, &st);
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = up.join();
    conn.end(&st);
}

/// A cairn repository in a bucket of a test server.
pub struct S3Repo {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: String,
    pub scratch: TempDir,
    pub retries: u32,
}

impl S3Repo {
    /// A repository URL on `server` (not yet initialised).
    pub fn new(server: &S3Server, bucket: &str) -> S3Repo {
        S3Repo {
            bucket: bucket.into(),
            prefix: "repo".into(),
            endpoint: server.endpoint(),
            scratch: tempfile::tempdir().expect("tempdir"),
            retries: 4,
        }
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.scratch.path().join("cache")
    }

    /// `cairn -r s3://… ARGS` with credentials, endpoint, cache and
    /// password in the environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = crate::common::cairn();
        c.arg("-r").arg(self.url()).args(args);
        c.env("CAIRN_PASSWORD", crate::common::PASSWORD)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("CAIRN_S3_ENDPOINT", &self.endpoint)
            .env("CAIRN_CACHE_DIR", self.cache_dir())
            .env("CAIRN_RETRIES", self.retries.to_string())
            .env_remove("AWS_REGION")
            .env_remove("AWS_SESSION_TOKEN");
        c
    }

    pub fn run(&self, args: &[&str]) -> crate::common::Out {
        crate::common::run(&mut self.cmd(args), None)
    }

    /// Starts `cairn backup --stdin --stdin-filename dump.sql` with `env`
    /// and its standard input, output and error piped; returns once its
    /// lock is on `server`.
    pub fn start_stdin_backup(&self, server: &S3Server, env: &[(&str, &str)]) -> Child {
        let mut c = self.cmd(&["backup", "--stdin", "--stdin-filename", "dump.sql"]);
        c.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        let locks = format!("{}/locks", self.prefix);
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.objects(&self.bucket, &locks).is_empty() {
            assert!(Instant::now() < deadline, "the backup took no lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

/// Waits for a backup started by [`S3Repo::start_stdin_backup`], its
/// standard input closed, and asserts it succeeded.
pub fn finish_backup(child: Child) {
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
}

/// An incomplete multipart upload s3s-fs holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PendingUpload {
    pub key: String,
    pub id: String,
    /// Bytes in its parts.
    pub bytes: u64,
}

/// The incomplete uploads into `bucket` s3s-fs keeps under `data`, by key
/// and id. s3s-fs keeps an upload as `.upload-ID.json` (the uploader), a
/// `.bucket-B.object-K.upload-ID.metadata.json` (B and K base64url) and
/// a `.upload_id-ID.part-N` per part, beside the buckets; completing or
/// aborting it removes them.
pub fn pending_uploads(data: &Path, bucket: &str) -> Vec<PendingUpload> {
    let names: Vec<String> = std::fs::read_dir(data)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in &names {
        let Some(rest) = name
            .strip_prefix(".bucket-")
            .and_then(|r| r.strip_suffix(".metadata.json"))
        else {
            continue;
        };
        let Some((b, rest)) = rest.split_once(".object-") else {
            continue;
        };
        let Some((k, id)) = rest.split_once(".upload-") else {
            continue;
        };
        if base64url(b).as_deref() != Some(bucket) || !names.contains(&format!(".upload-{id}.json"))
        {
            continue;
        }
        let Some(key) = base64url(k) else { continue };
        let part = format!(".upload_id-{id}.part-");
        let bytes = names
            .iter()
            .filter(|n| n.starts_with(&part))
            .filter_map(|n| std::fs::metadata(data.join(n)).ok())
            .map(|m| m.len())
            .sum();
        out.push(PendingUpload {
            key,
            id: id.to_string(),
            bytes,
        });
    }
    out.sort();
    out
}

/// Decodes unpadded base64url text.
fn base64url(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes a percent-encoded query component.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The answer (head, body) to a request for `target` if it is a
/// `ListMultipartUploads` (a GET of a bucket with `uploads` in its query),
/// from the uploads s3s-fs keeps under `data`, at most `page` of them.
fn uploads_answer(data: &Path, page: usize, target: &str) -> Option<(String, String)> {
    let (path, query) = target.split_once('?')?;
    let bucket = path.trim_matches('/');
    if bucket.is_empty() || bucket.contains('/') {
        return None;
    }
    let params: Vec<(String, String)> = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    param("uploads")?;
    let prefix = param("prefix").unwrap_or_default();
    let key_marker = param("key-marker").unwrap_or_default();
    let id_marker = param("upload-id-marker").unwrap_or_default();
    let max = param("max-uploads")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1000usize)
        .min(page);
    let after_marker = |u: &PendingUpload| {
        key_marker.is_empty()
            || u.key > key_marker
            || (u.key == key_marker && !id_marker.is_empty() && u.id > id_marker)
    };
    let all: Vec<PendingUpload> = pending_uploads(data, bucket)
        .into_iter()
        .filter(|u| u.key.starts_with(&prefix) && after_marker(u))
        .collect();
    let truncated = all.len() > max;
    let shown = &all[..all.len().min(max)];
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Bucket>{}</Bucket><KeyMarker>{}</KeyMarker><UploadIdMarker>{}</UploadIdMarker>",
        xml_escape(bucket),
        xml_escape(&key_marker),
        xml_escape(&id_marker)
    );
    if let (true, Some(last)) = (truncated, shown.last()) {
        body.push_str(&format!(
            "<NextKeyMarker>{}</NextKeyMarker><NextUploadIdMarker>{}</NextUploadIdMarker>",
            xml_escape(&last.key),
            xml_escape(&last.id)
        ));
    }
    body.push_str(&format!(
        "<Prefix>{}</Prefix><MaxUploads>{max}</MaxUploads><IsTruncated>{truncated}</IsTruncated>",
        xml_escape(&prefix)
    ));
    for u in shown {
        body.push_str(&format!(
            "<Upload><Key>{}</Key><UploadId>{}</UploadId>\
             <Initiator><ID>{ACCESS_KEY}</ID></Initiator>\
             <StorageClass>STANDARD</StorageClass>\
             <Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>",
            xml_escape(&u.key),
            xml_escape(&u.id)
        ));
    }
    body.push_str("</ListMultipartUploadsResult>");
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    Some((head, body))
}

impl S3Server {
    /// The incomplete multipart uploads into `bucket`.
    pub fn uploads(&self, bucket: &str) -> Vec<PendingUpload> {
        pending_uploads(&self.data(), bucket)
    }

    /// Starts a multipart upload of `key` into `bucket` with a real S3
    /// client (opendal, as cairn's), uploads `parts` parts of `part_size`
    /// bytes (5 MiB at least, as S3 requires) and never completes it: what a backup killed while it
    /// uploaded a large pack leaves. Returns once the server holds them.
    pub fn start_upload(&self, bucket: &str, key: &str, parts: usize, part_size: usize) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        opendal::install_default();
        let builder = opendal::services::S3::default()
            .root("/")
            .bucket(bucket)
            .endpoint(&self.endpoint())
            .region("us-east-1")
            .access_key_id(ACCESS_KEY)
            .secret_access_key(SECRET_KEY)
            .disable_config_load()
            .disable_ec2_metadata();
        let op = opendal::Operator::new(builder).expect("S3 client");
        let before = self.uploads(bucket);
        // The writer holds back two chunks: its chunking keeps the last
        // full one until more bytes come, and its multipart upload keeps
        // the last it was handed until the next (it might be the last
        // part). So of `parts + 2` chunks, `parts` go out; the upload
        // begins with the first of them.
        let writer = rt.block_on(async {
            let mut w = op
                .writer_with(key)
                .chunk(part_size)
                .concurrent(1)
                .await
                .expect("start the upload");
            for i in 0..parts + 2 {
                w.write(vec![i as u8; part_size]).await.expect("a part");
            }
            w
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.uploads(bucket);
            let done = now.iter().any(|u| {
                u.key == key && u.bytes == (parts * part_size) as u64 && !before.contains(u)
            });
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the upload of {key} did not reach the server: {now:?} {:?}",
                std::fs::read_dir(self.data())
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Dropped unfinished: neither completed nor aborted.
        drop(writer);
        drop(rt);
    }
}
