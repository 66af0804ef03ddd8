//! The HTTP transport under the S3 client: one gate over every request a
//! backend sends, and deadlines that turn a silent server into a transient
//! error.
//!
//! - **Gate**: a request takes one of `--connections` permits before it is
//!   sent and gives it back once its answer has been read to the end (or
//!   dropped). Every request goes through it — whole reads, ranged reads,
//!   the parts of a multipart upload, listings, deletes — so no matter how
//!   many threads call the backend, or how many parts one transfer splits
//!   into, at most `--connections` requests are in flight.
//! - **Deadlines, judged by progress**: once a request holds its permit,
//!   its body must keep going out, no pause longer than the timeout; once
//!   the body is out, the answer must begin within the timeout (plus 1 s
//!   per 256 KiB of the body, up to 4 MiB, for what the connection's
//!   buffers may still hold); the answer's body must not pause for longer
//!   than the timeout. An upload over a slow uplink thus takes as long as
//!   it needs, while one that stops moving fails. Waiting for a permit
//!   does not count. A missed deadline is a temporary error, which
//!   [`super::retry`] retries.
//!
//! - **Checksums refused or failed**: an upload carries a CRC32C of its
//!   body (`x-amz-checksum-crc32c`; `x-amz-checksum-algorithm` when a
//!   multipart upload begins). An answer of 400 or 501 to such a request is
//!   read here, where its S3 error code is at hand: `BadDigest` (or
//!   `XAmzContentChecksumMismatch`) means the store received other bytes
//!   than were sent, so the attempt failed on the way and the error is
//!   temporary; any other code is [`ErrorKind::Unsupported`] with
//!   [`REFUSED`] in its message, which [`super::s3`] takes as a store that
//!   may not know the header (and confirms before it stops sending it).
//!
//! The requests are sent with `reqwest` directly (not through opendal's
//! own transport) so that the request body can be handed out in frames
//! and the frames taken counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use opendal::{Buffer, ErrorKind, HttpBody, HttpTransport};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests in flight at once, shared by everything that holds a clone.
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    /// A gate letting `n` requests (at least one) through at a time.
    pub fn new(n: usize) -> Gate {
        Gate(Arc::new(Semaphore::new(n.max(1))))
    }

    /// Waits for a free slot; the slot is freed when the permit is dropped.
    pub async fn enter(&self) -> OwnedSemaphorePermit {
        self.0
            .clone()
            .acquire_owned()
            .await
            .expect("the gate's semaphore is never closed")
    }
}

/// The transport of the S3 client: `reqwest`, behind a [`Gate`] and with
/// deadlines judged by progress.
pub struct GatedTransport {
    client: reqwest::Client,
    gate: Gate,
    timeout: Duration,
}

impl GatedTransport {
    /// Sends with `client`, `gate` permitting, giving up on a request that
    /// makes no progress for `timeout`. A timeout past
    /// [`crate::LONGEST_WAIT`] (a century) is cut to it: the deadlines
    /// made by adding it to the clock must not overflow.
    pub fn new(client: reqwest::Client, gate: Gate, timeout: Duration) -> GatedTransport {
        GatedTransport {
            client,
            gate,
            timeout: timeout.min(crate::LONGEST_WAIT),
        }
    }
}

/// A temporary error for a request that got no answer in time.
fn silent(limit: Duration) -> opendal::Error {
    opendal::Error::new(
        ErrorKind::Unexpected,
        format!("no answer within {} s", limit.as_secs_f64()),
    )
    .set_temporary()
}

/// A temporary error for an upload whose body stopped going out.
fn stuck(limit: Duration, sent: u64, total: u64) -> opendal::Error {
    opendal::Error::new(
        ErrorKind::Unexpected,
        format!(
            "upload made no progress for {} s ({sent} of {total} bytes sent)",
            limit.as_secs_f64()
        ),
    )
    .set_temporary()
}

/// Begins the message of an error for an upload whose checksum header the
/// store refused (an answer of 400 or 501 other than a bad digest).
pub const REFUSED: &str = "the store refused the upload's checksum header";

/// S3 error codes saying the body received is not the body whose checksum
/// (or hash) the request carries: the bytes changed on the way.
const DAMAGED: [&str; 2] = ["BadDigest", "XAmzContentChecksumMismatch"];

/// S3 error codes of an answer of 400 saying the body did not arrive
/// whole or in time (a stalled uplink): nothing to do with the checksum
/// header, and worth a retry, like any broken transfer.
const CUT_SHORT: [&str; 2] = ["RequestTimeout", "IncompleteBody"];

/// The text of the first `<tag>…</tag>` in an S3 XML error body, trimmed;
/// empty when there is none. A plain search, not an XML parser: the body
/// is the store's (or a proxy's), so anything may come, and nothing of it
/// is trusted beyond choosing the error.
pub fn xml_field<'a>(body: &'a str, tag: &str) -> &'a str {
    body.split_once(&format!("<{tag}>"))
        .and_then(|(_, r)| r.split_once(&format!("</{tag}>")))
        .map_or("", |(v, _)| v.trim())
}

/// The error for an answer of 400 or 501 to an upload that carried a
/// checksum: temporary when the store says the bytes did not match it,
/// [`REFUSED`] otherwise. The answer's body (a short XML error) is read
/// within `limit`; failing that, the error is temporary.
async fn checksum_answer(resp: reqwest::Response, limit: Duration) -> opendal::Error {
    let status = resp.status().as_u16();
    let text = match tokio::time::timeout(limit, resp.text()).await {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            return opendal::Error::new(ErrorKind::Unexpected, "read data from http response")
                .with_temporary(temporary(&e))
                .set_source(e.without_url())
        }
        Err(_) => return silent(limit),
    };
    checksum_error(status, &text)
}

/// The error for an answer of `status` (400 or 501) with the body `text`
/// to an upload that carried a checksum, once that body is read:
/// temporary when its S3 error code says the bytes did not match the
/// checksum or did not arrive whole, [`ErrorKind::Unsupported`] beginning
/// with [`REFUSED`] otherwise, whatever the body holds.
pub fn checksum_error(status: u16, text: &str) -> opendal::Error {
    let (code, message) = (xml_field(text, "Code"), xml_field(text, "Message"));
    if DAMAGED.contains(&code) {
        opendal::Error::new(
            ErrorKind::Unexpected,
            format!(
                "{code}: the store received other bytes than were sent \
                 (their CRC32C did not match), so they changed on the way: {message}"
            ),
        )
        .set_temporary()
    } else if CUT_SHORT.contains(&code) {
        opendal::Error::new(
            ErrorKind::Unexpected,
            format!("HTTP {status} {code}: the upload did not arrive whole: {message}"),
        )
        .set_temporary()
    } else {
        opendal::Error::new(
            ErrorKind::Unsupported,
            format!("{REFUSED}: HTTP {status} {code} {message}"),
        )
    }
}

/// Errors of the client that a retry may cure: the request could not be
/// sent, or its answer's body broke off.
fn temporary(e: &reqwest::Error) -> bool {
    e.is_request() || e.is_body() || e.is_decode() || e.is_connect() || e.is_timeout()
}

impl HttpTransport for GatedTransport {
    async fn fetch(&self, req: http::Request<Buffer>) -> opendal::Result<http::Response<HttpBody>> {
        let permit = self.gate.enter().await;
        let uri = req.uri().clone();
        let is_head = req.method() == http::Method::HEAD;
        let (parts, body) = req.into_parts();
        let url = reqwest::Url::parse(&uri.to_string()).map_err(|e| {
            opendal::Error::new(ErrorKind::Unexpected, "request url is invalid").set_source(e)
        })?;
        let progress = Arc::new(Progress::new(body.len() as u64));
        let checksummed = parts
            .headers
            .keys()
            .any(|k| k.as_str().starts_with("x-amz-checksum-"));
        let mut builder = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .version(parts.version);
        if !body.is_empty() {
            builder = builder.body(reqwest::Body::wrap(Paced {
                rest: body,
                current: Bytes::new(),
                progress: progress.clone(),
            }));
        }
        let send = builder.send();
        let resp = watch(send, &progress, self.timeout).await?.map_err(|e| {
            opendal::Error::new(ErrorKind::Unexpected, "send http request")
                .with_temporary(temporary(&e))
                .set_source(e.without_url())
        })?;
        if checksummed && matches!(resp.status().as_u16(), 400 | 501) {
            return Err(checksum_answer(resp, self.timeout).await);
        }
        let length = if is_head || opendal::raw::parse_content_encoding(resp.headers())?.is_some() {
            None
        } else {
            opendal::raw::parse_content_length(resp.headers())?
        };
        let mut out = http::Response::builder()
            .status(resp.status())
            .version(resp.version())
            .extension(uri);
        if let Some(h) = out.headers_mut() {
            h.extend(resp.headers().iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let stream = resp.bytes_stream().filter_map(|item| {
            std::future::ready(match item {
                Ok(b) if b.is_empty() => None,
                Ok(b) => Some(Ok(Buffer::from(b))),
                Err(e) => Some(Err(opendal::Error::new(
                    ErrorKind::Unexpected,
                    "read data from http response",
                )
                .with_temporary(temporary(&e))
                .set_source(e.without_url()))),
            })
        });
        let idle = self.timeout;
        let body = HttpBody::new(
            Box::new(Watched {
                stream: Box::new(stream),
                permit: Some(permit),
                idle,
                timer: Box::pin(tokio::time::sleep(idle)),
            }),
            length,
        );
        out.body(body)
            .map_err(|e| opendal::Error::new(ErrorKind::Unexpected, "build response").set_source(e))
    }
}

/// What a connection may still hold of a body it has taken whole: its
/// own buffer and the socket's, which the kernel grows to a few MiB on a
/// fast path.
const IN_BUFFERS: u64 = 4 << 20;

/// Waits for the answer to a request whose body reports to `progress`.
/// While the body goes out, it fails once `timeout` passes with no frame
/// taken by the connection, so a slow but steady upload never fails. Once
/// the body is taken whole, the answer must begin within `timeout` plus
/// 1 s per 256 KiB of what the buffers may still hold of it.
async fn watch<F: Future>(
    send: F,
    progress: &Progress,
    timeout: Duration,
) -> opendal::Result<F::Output> {
    let mut send = std::pin::pin!(send);
    let limit = || {
        let (sent, total) = progress.sent();
        if sent < total {
            timeout
        } else {
            timeout + Duration::from_secs(total.min(IN_BUFFERS) >> 18)
        }
    };
    loop {
        let deadline = progress.last() + limit();
        match tokio::time::timeout_at(deadline, send.as_mut()).await {
            Ok(answer) => return Ok(answer),
            Err(_) if progress.last() + limit() > tokio::time::Instant::now() => continue,
            Err(_) => {
                let (sent, total) = progress.sent();
                return Err(if sent < total {
                    stuck(timeout, sent, total)
                } else {
                    silent(limit())
                });
            }
        }
    }
}

/// Bytes of a request body taken by the connection, and when the last were.
struct Progress {
    start: std::time::Instant,
    /// Milliseconds from `start` to the last frame taken.
    last_ms: AtomicU64,
    sent: AtomicU64,
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            start: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            total,
        }
    }

    fn took(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start)
            + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn sent(&self) -> (u64, u64) {
        (self.sent.load(Ordering::Relaxed), self.total)
    }
}

/// Frames a request body is handed out in. The connection asks for the
/// next frame only once it has room for it (it buffers at most 16 frames
/// besides the socket's own buffer), so frames taken measure bytes
/// actually leaving, give or take those buffers.
const FRAME: usize = 16 << 10;

/// A request body handed out a frame at a time, reporting each to its
/// [`Progress`].
struct Paced {
    rest: Buffer,
    current: Bytes,
    progress: Arc<Progress>,
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        while self.current.is_empty() {
            match Iterator::next(&mut self.rest) {
                Some(b) => self.current = b,
                None => return Poll::Ready(None),
            }
        }
        let n = self.current.len().min(FRAME);
        let frame = self.current.split_to(n);
        self.progress.took(n);
        Poll::Ready(Some(Ok(http_body::Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.current.is_empty() && self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact((self.current.len() + self.rest.len()) as u64)
    }
}

type BodyStream = Box<dyn Stream<Item = opendal::Result<Buffer>> + Send + Sync + Unpin>;

/// A response body that holds its request's permit until it ends and fails
/// when it stalls.
struct Watched {
    stream: BodyStream,
    permit: Option<OwnedSemaphorePermit>,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Stream for Watched {
    type Item = opendal::Result<Buffer>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.stream).poll_next(cx) {
            Poll::Ready(Some(item)) => {
                let next = tokio::time::Instant::now() + self.idle;
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                self.permit = None;
                Poll::Ready(None)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.permit = None;
                    Poll::Ready(Some(Err(silent(self.idle))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_n_at_a_time() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = Gate::new(2);
            let a = gate.enter().await;
            let b = gate.enter().await;
            assert_eq!(gate.0.available_permits(), 0, "a third request waits");
            drop(a);
            assert_eq!(gate.0.available_permits(), 1, "a slot is free again");
            let _c = gate.enter().await;
            drop(b);
            assert_eq!(Gate::new(0).0.available_permits(), 1, "never zero");
        });
    }

    use crate::backend::s3::{S3Backend, S3Options};
    use crate::backend::{Backend, FileKind};
    use crate::error::Error;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    /// Reads a request's head from `conn`: the head, lowercased, and its
    /// `Content-Length` (0 without one); `None` once the peer is gone.
    fn read_head(conn: &mut std::net::TcpStream) -> Option<(String, usize)> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).unwrap_or(0) == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Some((head, len))
    }

    /// A one-request S3 endpoint on 127.0.0.1 with a small receive buffer
    /// and Ethernet-sized segments (so the client's bytes wait for it, not
    /// in a send buffer sized for loopback's 64 KiB segments): it reads the
    /// request's head, then hands its body to `body`, which reads it at the
    /// pace under test and says whether to answer 200.
    fn endpoint(
        body: impl FnOnce(&mut std::net::TcpStream, usize) -> bool + Send + 'static,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        for (level, option, value) in [
            (libc::SOL_SOCKET, libc::SO_RCVBUF, 16 << 10),
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG, 1400),
        ] {
            let value: libc::c_int = value;
            // SAFETY: sets an int option on a socket this function owns.
            unsafe {
                libc::setsockopt(
                    listener.as_raw_fd(),
                    level,
                    option,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let Some((_, len)) = read_head(&mut conn) else {
                return;
            };
            if body(&mut conn, len) {
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
            // Hold the connection until the client is done with it.
            let _ = conn.read(&mut [0u8; 1]);
        });
        format!("http://127.0.0.1:{port}")
    }

    fn backend(endpoint: String, timeout: Duration) -> S3Backend {
        S3Backend::new(S3Options {
            bucket: "bucket".into(),
            prefix: String::new(),
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
            virtual_host: false,
            access_key_id: Some("id".into()),
            secret_access_key: Some(zeroize::Zeroizing::new("secret".into())),
            session_token: None,
            connections: 1,
            timeout,
        })
        .unwrap()
    }

    #[test]
    fn a_slow_steady_upload_is_not_cut_off() {
        // 4 MiB read at 160 KiB/s takes 25.6 s, past the 20 s that 4 s +
        // 1 s per 256 KiB would give the whole request: the body keeps
        // moving, so the upload succeeds. (On loopback the socket takes
        // the body in lumps of a few hundred KiB, hence a timeout of 4 s
        // rather than 1 s.)
        let got = Arc::new(AtomicU64::new(0));
        let seen = got.clone();
        let url = endpoint(move |conn, len| {
            let mut buf = vec![0u8; 16 << 10];
            let mut left = len;
            while left > 0 {
                let want = left.min(buf.len());
                let n = conn.read(&mut buf[..want]).unwrap();
                assert!(n > 0, "the client hung up");
                left -= n;
                seen.fetch_add(n as u64, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1000 * n as u64 / (160 << 10)));
            }
            true
        });
        let bytes = vec![7u8; 4 << 20];
        backend(url, Duration::from_secs(4))
            .write(FileKind::Pack, &"ab".repeat(32), &bytes)
            .expect("a slow but steady upload succeeds");
        assert_eq!(got.load(Ordering::SeqCst), bytes.len() as u64);
    }

    #[test]
    fn an_upload_that_stops_moving_fails() {
        // The server takes 64 KiB of the body and then reads no more.
        let url = endpoint(|conn, _| {
            let mut buf = vec![0u8; 64 << 10];
            let _ = conn.read_exact(&mut buf);
            std::thread::sleep(Duration::from_secs(30));
            false
        });
        let bytes = vec![7u8; 4 << 20];
        let err = backend(url, Duration::from_secs(1))
            .write(FileKind::Pack, &"ab".repeat(32), &bytes)
            .expect_err("a stalled upload fails");
        match err {
            Error::Backend {
                detail, transient, ..
            } => {
                assert!(transient, "a stall is retried: {detail}");
                assert!(detail.contains("made no progress for 1 s"), "{detail}");
            }
            e => panic!("not a backend error: {e}"),
        }
    }

    /// An answer of 503 without a body (a proxy's, a load balancer's)
    /// says nothing of itself: the error names its status all the same.
    #[test]
    fn an_error_answer_without_a_body_is_named_by_its_status() {
        let url = endpoint(|conn, _| {
            let _ =
                conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
            false
        });
        let err = backend(url, Duration::from_secs(10))
            .read(FileKind::Snapshot, &"ab".repeat(32))
            .expect_err("a 503 is no object");
        match err {
            Error::Backend {
                detail, transient, ..
            } => {
                assert!(transient, "a 503 is retried: {detail}");
                assert!(detail.contains("HTTP 503 without a body"), "{detail}");
            }
            e => panic!("not a backend error: {e}"),
        }
    }

    /// An S3 endpoint on 127.0.0.1 answering every upload that carries a
    /// checksum header with HTTP 400 and S3 error `code`, and every other
    /// request with 200. Counts the uploads with and without a checksum.
    fn refusing(code: &'static str) -> (String, Arc<[AtomicU64; 2]>) {
        refusing_in_turn(vec![code])
    }

    /// [`refusing`] with the S3 error codes of `codes` in turn, one per
    /// upload that carries a checksum.
    fn refusing_in_turn(codes: Vec<&'static str>) -> (String, Arc<[AtomicU64; 2]>) {
        let codes: Arc<[&'static str]> = codes.into();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let counts = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (seen, codes) = (seen.clone(), codes.clone());
                std::thread::spawn(move || loop {
                    let Some((head, len)) = read_head(&mut conn) else {
                        return;
                    };
                    let mut body = vec![0u8; len];
                    if conn.read_exact(&mut body).is_err() {
                        return;
                    }
                    let checked = head.contains("x-amz-checksum-");
                    let n = seen[usize::from(checked)].fetch_add(1, Ordering::SeqCst);
                    let answer = if checked {
                        let code = codes[n as usize % codes.len()];
                        let xml = format!(
                            "<?xml version=\"1.0\"?><Error><Code>{code}</Code>\
                             <Message>test</Message></Error>"
                        );
                        format!(
                            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\n\
                             Content-Length: {}\r\n\r\n{xml}",
                            xml.len()
                        )
                    } else {
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
                    };
                    if conn.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                });
            }
        });
        (format!("http://127.0.0.1:{port}"), counts)
    }

    #[test]
    fn a_store_refusing_the_checksum_header_gets_uploads_without_it() {
        let (url, seen) = refusing("InvalidArgument");
        let b = backend(url, Duration::from_secs(10));
        b.write(FileKind::Pack, &"ab".repeat(32), b"pack bytes")
            .expect("the upload is sent again without a checksum");
        let counts = || seen.each_ref().map(|n| n.load(Ordering::SeqCst));
        assert_eq!(counts(), [1, 2], "refused twice, then sent without");
        b.write(FileKind::Pack, &"cd".repeat(32), b"more bytes")
            .expect("later uploads carry no checksum");
        assert_eq!(counts(), [2, 2], "the store is asked once");
    }

    /// Two refusals that differ (a proxy's answer, then the store's) are
    /// not one store refusing the header twice: the upload fails, and
    /// later uploads still carry their checksum.
    #[test]
    fn refusals_that_differ_never_turn_checksums_off() {
        let (url, seen) = refusing_in_turn(vec!["InvalidArgument", "NotImplemented"]);
        let b = backend(url, Duration::from_secs(10));
        let err = b
            .write(FileKind::Pack, &"ab".repeat(32), b"pack bytes")
            .expect_err("the store never took it");
        match err {
            Error::Backend { detail, .. } => {
                assert!(
                    detail.contains("NotImplemented"),
                    "the second answer: {detail}"
                )
            }
            e => panic!("not a backend error: {e}"),
        }
        let counts = || seen.each_ref().map(|n| n.load(Ordering::SeqCst));
        assert_eq!(counts(), [0, 2], "refused twice, never sent unchecked");
        let _ = b.write(FileKind::Pack, &"cd".repeat(32), b"more bytes");
        assert_eq!(counts()[0], 0, "later uploads still carry the checksum");
        assert!(counts()[1] > 2, "later uploads are sent");
    }

    /// S3 answers 400 `RequestTimeout` to an upload that stalled: a
    /// broken transfer, retried with its checksum, never taken for a store
    /// refusing the checksum header (which turned checksums off for every
    /// later upload of the process).
    #[test]
    fn an_upload_cut_short_never_turns_checksums_off() {
        for code in CUT_SHORT {
            let (url, seen) = refusing(code);
            let err = backend(url, Duration::from_secs(10))
                .write(FileKind::Pack, &"ab".repeat(32), b"pack bytes")
                .expect_err("the store never took it");
            match err {
                Error::Backend {
                    detail, transient, ..
                } => {
                    assert!(transient, "{code} is retried: {detail}");
                    assert!(detail.contains(code), "{detail}");
                    assert!(!detail.contains(REFUSED), "{detail}");
                }
                e => panic!("not a backend error: {e}"),
            }
            assert_eq!(seen[0].load(Ordering::SeqCst), 0, "{code}: sent unchecked");
        }
    }

    #[test]
    fn a_bad_digest_never_turns_checksums_off() {
        let (url, seen) = refusing("BadDigest");
        let err = backend(url, Duration::from_secs(10))
            .write(FileKind::Pack, &"ab".repeat(32), b"pack bytes")
            .expect_err("bytes changed on the way are not stored");
        match err {
            Error::Backend {
                detail, transient, ..
            } => {
                assert!(transient, "a bad digest is retried: {detail}");
                assert!(detail.contains("BadDigest"), "{detail}");
                assert!(detail.contains("changed on the way"), "{detail}");
            }
            e => panic!("not a backend error: {e}"),
        }
        assert_eq!(seen[0].load(Ordering::SeqCst), 0, "nothing sent unchecked");
        assert_eq!(seen[1].load(Ordering::SeqCst), 1);
    }
}
