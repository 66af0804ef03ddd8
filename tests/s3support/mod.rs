//! A real S3 server for the tests: `s3s-fs` (which checks signatures) on
//! 127.0.0.1, one per test, with its data in a temporary directory, plus a
//! small TCP proxy that can log requests and answer 500 for a while.
//!
//! The server binary is found through `CAIRN_S3S_FS`, `PATH` or
//! `~/.cargo/bin`. When it is missing the tests fail and say how to install
//! it (`./.ci/test` installs it).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
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
/// signatures stay valid), counts `GET` requests for keys containing a
/// given text, and can be told to cut every open connection and answer
/// the next connections with HTTP 500.
pub struct Proxy {
    pub port: u16,
    state: Arc<ProxyState>,
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
    log: Mutex<Vec<u8>>,
    live: Mutex<Vec<TcpStream>>,
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
            log: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
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

    /// How many connections were answered with 500.
    pub fn failures(&self) -> u64 {
        self.state.answered_500.load(Ordering::SeqCst)
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
    }

    /// Object downloads (GET requests without a query, so not listings)
    /// seen since the last clear whose request line contains `text`.
    pub fn gets_containing(&self, text: &str) -> usize {
        let log = self.state.log.lock().unwrap();
        let hay = String::from_utf8_lossy(&log);
        hay.match_indices("GET /")
            .filter(|(i, _)| {
                let line = hay[*i..].split("\r\n").next().unwrap_or("");
                let target = line.split(' ').nth(1).unwrap_or("");
                target.contains(text) && !target.contains('?')
            })
            .count()
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
    let (mut c_read, mut u_write) = (
        client.try_clone().expect("clone"),
        upstream.try_clone().expect("clone"),
    );
    let st2 = st.clone();
    let up = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Log request heads only (bounded): enough to see GET lines.
            if let Ok(mut log) = st2.log.lock() {
                if buf[..n.min(8)].starts_with(b"GET ") || n < 4096 {
                    log.extend_from_slice(&buf[..n.min(2048)]);
                    log.extend_from_slice(b"\r\n");
                }
            }
            let total = st2.bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if total >= st2.trip_at.load(Ordering::SeqCst) {
                st2.trip_at.store(u64::MAX, Ordering::SeqCst);
                st2.fail
                    .store(st2.fail_then.load(Ordering::SeqCst), Ordering::SeqCst);
                for s in st2.live.lock().unwrap().drain(..) {
                    let _ = s.shutdown(Shutdown::Both);
                }
                break;
            }
            if u_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match u_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = up.join();
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
}
