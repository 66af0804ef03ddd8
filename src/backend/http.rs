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
//! - **Deadlines**: once a request holds its permit, its answer must begin
//!   within the timeout plus 1 s per 256 KiB sent, and the body must not
//!   pause for longer than the timeout. Waiting for a permit does not count.
//!   A missed deadline is a temporary error, which [`super::retry`] retries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use opendal::{Buffer, ErrorKind, HttpBody, HttpTransport, HttpTransporter};
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

/// Wraps the default transport with a [`Gate`] and deadlines.
pub struct GatedTransport {
    inner: HttpTransporter,
    gate: Gate,
    timeout: Duration,
}

impl GatedTransport {
    /// Sends through `inner`, `gate` permitting, giving up on a server that
    /// is silent for `timeout`.
    pub fn new(inner: HttpTransporter, gate: Gate, timeout: Duration) -> GatedTransport {
        GatedTransport {
            inner,
            gate,
            timeout,
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

impl HttpTransport for GatedTransport {
    async fn fetch(&self, req: http::Request<Buffer>) -> opendal::Result<http::Response<HttpBody>> {
        let permit = self.gate.enter().await;
        let sent = req.body().len() as u64;
        let limit = self.timeout + Duration::from_secs(sent >> 18);
        let resp = tokio::time::timeout(limit, self.inner.fetch(req))
            .await
            .map_err(|_| silent(limit))??;
        let idle = self.timeout;
        Ok(resp.map(|body| {
            body.map_inner(|stream| {
                Box::new(Watched {
                    stream,
                    permit: Some(permit),
                    idle,
                    timer: Box::pin(tokio::time::sleep(idle)),
                })
            })
        }))
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
}
