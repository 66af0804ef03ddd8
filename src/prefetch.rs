//! Reading packs ahead of the workers that decode them.
//!
//! A restore or `verify --read-data` hands its packs (or pieces of them)
//! to workers in a fixed order, through a shared counter. On a cold
//! repository each worker would otherwise wait for the disk whenever it
//! maps its next pack, with only the kernel's read-ahead (often 128 KiB)
//! in flight. A prefetcher thread walks the same order and asks the store
//! to read each span in ([`Backend::prefetch`]) while the workers are busy
//! with the spans before it, staying at most [`AHEAD`] bytes ahead of
//! them, so the bytes wait in the page cache, not in this process.
//!
//! [`Backend::prefetch`]: crate::backend::Backend::prefetch

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;

use crate::backend::{Backend, FileKind};

/// How far the prefetcher reads ahead of the spans workers have taken:
/// four packs of the default size, about a tenth of a second of two
/// cores' work on cached packs.
pub const AHEAD: u64 = 64 << 20;

/// The bytes of a pack that blobs at `extents` (offset and length each)
/// lie in: from the first one's start to the last one's end.
pub fn span(extents: impl IntoIterator<Item = (u32, u32)>) -> Range<u64> {
    extents
        .into_iter()
        .map(|(offset, length)| u64::from(offset)..u64::from(offset) + u64::from(length))
        .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
        .unwrap_or(0..0)
}

/// What the prefetcher does next, given that spans `..fetched` are
/// fetched or skipped and spans `..taken` taken by workers (`before[k]`
/// is the length of spans `..k`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Read span `k` in.
    Fetch(usize),
    /// Wait for workers to take more: the spans after them fetched
    /// already fill `ahead`.
    Wait,
    /// Every span is taken or fetched.
    Done,
}

/// The next [`Step`]: the first span neither fetched nor taken, unless
/// reading it would put more than `ahead` bytes between the taken spans
/// and the end of it (the first untaken span is read however long it is).
pub(crate) fn step(before: &[u64], fetched: usize, taken: usize, ahead: u64) -> Step {
    let spans = before.len() - 1;
    let taken = taken.min(spans);
    let k = fetched.max(taken);
    if k == spans {
        Step::Done
    } else if k > taken && before[k + 1] - before[taken] > ahead {
        Step::Wait
    } else {
        Step::Fetch(k)
    }
}

/// The order in which workers take spans of files (a restore's pieces,
/// the packs `verify --read-data` reads), with a prefetcher reading the
/// spans after theirs in ahead of them.
pub struct Queue<'a> {
    backend: &'a dyn Backend,
    kind: FileKind,
    /// File names and byte ranges, in the order workers take them.
    spans: Vec<(String, Range<u64>)>,
    /// Spans taken by workers (it counts past the end as they finish).
    next: AtomicUsize,
    /// The prefetcher's thread, set before any worker starts.
    prefetcher: OnceLock<Thread>,
}

impl<'a> Queue<'a> {
    /// Spans of files of `kind` on `backend`, for workers to take in
    /// this order.
    pub fn new(backend: &'a dyn Backend, kind: FileKind, spans: Vec<(String, Range<u64>)>) -> Self {
        Queue {
            backend,
            kind,
            spans,
            next: AtomicUsize::new(0),
            prefetcher: OnceLock::new(),
        }
    }

    /// Starts the prefetcher on a thread of `scope`, keeping at most
    /// `ahead` bytes read in beyond the spans taken; call it before
    /// starting the workers. With fewer than two spans it does nothing.
    pub fn start<'scope, 'env: 'scope>(
        &'env self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        ahead: u64,
    ) {
        // A single span is taken at once: nothing to read ahead of.
        if self.spans.len() < 2 {
            return;
        }
        let thread = scope.spawn(move || self.run(ahead)).thread().clone();
        let _ = self.prefetcher.set(thread);
    }

    /// A worker's hold on the queue, through which it takes spans (see
    /// [`Taker`]).
    pub fn taker(&self) -> Taker<'_, 'a> {
        Taker(self)
    }

    /// The index of the span for the calling worker to take next; the
    /// spans are used up once it reaches their number.
    fn take(&self) -> usize {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.wake();
        i
    }

    /// Ends the queue: every later take finds the spans used up, and the
    /// prefetcher stops.
    fn end(&self) {
        self.next.store(usize::MAX / 2, Ordering::Relaxed);
        self.wake();
    }

    fn wake(&self) {
        if let Some(t) = self.prefetcher.get() {
            t.unpark();
        }
    }

    fn run(&self, ahead: u64) {
        let mut before = Vec::with_capacity(self.spans.len() + 1);
        before.push(0u64);
        for (_, r) in &self.spans {
            before.push(before[before.len() - 1] + r.end.saturating_sub(r.start));
        }
        let mut fetched = 0;
        loop {
            match step(&before, fetched, self.next.load(Ordering::Relaxed), ahead) {
                Step::Done => return,
                // A worker taking a span unparks this thread; a wake-up
                // without one only runs the loop once more.
                Step::Wait => std::thread::park(),
                Step::Fetch(k) => {
                    let (name, range) = &self.spans[k];
                    self.backend.prefetch(self.kind, name, range.clone());
                    fetched = k + 1;
                }
            }
        }
    }
}

/// A worker's hold on a [`Queue`]. Dropping it ends the queue: a worker
/// is done only once every span is taken, and one that stops before
/// (an error that ends the whole operation, a panic) must not leave the
/// prefetcher waiting for takes that will never come, nor the scope
/// waiting for the prefetcher. The other workers then take nothing more.
pub struct Taker<'q, 'a>(&'q Queue<'a>);

impl Taker<'_, '_> {
    /// The index of the span to take next; the spans are used up once it
    /// reaches their number.
    pub fn take(&self) -> usize {
        self.0.take()
    }
}

impl Drop for Taker<'_, '_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twenty spans of ten bytes, of packs `p00` to `p19`.
    fn twenty_spans() -> Vec<(String, Range<u64>)> {
        (0..20).map(|i| (format!("p{i:02}"), 0..10)).collect()
    }

    fn before(lens: &[u64]) -> Vec<u64> {
        let mut b = vec![0];
        for l in lens {
            b.push(b[b.len() - 1] + l);
        }
        b
    }

    #[test]
    fn a_span_covers_its_blobs_in_any_order() {
        assert_eq!(span([(100, 10), (0, 20), (50, 5)]), 0..110);
        assert_eq!(span([(7, 3)]), 7..10);
        assert_eq!(span([]), 0..0);
    }

    #[test]
    fn reads_ahead_within_its_budget_and_skips_what_workers_took() {
        let b = before(&[10, 10, 10, 40, 10]);
        // Nothing taken: the first spans, up to 25 bytes.
        assert_eq!(step(&b, 0, 0, 25), Step::Fetch(0));
        assert_eq!(step(&b, 1, 0, 25), Step::Fetch(1));
        assert_eq!(step(&b, 2, 0, 25), Step::Wait);
        // One taken: the third fits again.
        assert_eq!(step(&b, 2, 1, 25), Step::Fetch(2));
        assert_eq!(step(&b, 3, 1, 25), Step::Wait);
        // The first untaken span is read however long it is.
        assert_eq!(step(&b, 3, 3, 25), Step::Fetch(3));
        assert_eq!(step(&b, 4, 3, 25), Step::Wait);
        // Spans workers took before it came to them are skipped.
        assert_eq!(step(&b, 1, 4, 25), Step::Fetch(4));
        assert_eq!(step(&b, 5, 4, 25), Step::Done);
        // Workers count past the end as they finish.
        assert_eq!(step(&b, 2, 7, 25), Step::Done);
        assert_eq!(step(&before(&[]), 0, 0, 25), Step::Done);
    }

    /// Hooks recording the spans prefetched and, for each, how many
    /// spans workers had taken by then.
    #[derive(Default)]
    struct Seen(std::sync::Mutex<Vec<(String, Range<u64>)>>);

    impl crate::backend::testing::Hooks for Seen {
        fn prefetch(&self, _kind: FileKind, name: &str, range: &Range<u64>) {
            self.0
                .lock()
                .unwrap()
                .push((name.to_string(), range.clone()));
        }
    }

    #[test]
    fn a_queue_keeps_its_budget_ahead_of_the_workers_and_ends_with_them() {
        let backend = crate::backend::testing::Hooked {
            inner: crate::backend::mem::MemBackend::default(),
            hooks: Seen::default(),
        };
        let spans = twenty_spans();
        let seen = || backend.hooks.0.lock().unwrap().len();
        let queue = Queue::new(&backend, FileKind::Pack, spans.clone());
        let taker = queue.taker();
        std::thread::scope(|s| {
            queue.start(s, 30);
            // One worker: it takes span `i` once the prefetcher has read
            // the three spans from `i` on, all its budget allows.
            for i in 0..20usize {
                let want = (i + 3).min(20);
                let waited = std::time::Instant::now();
                while seen() < want {
                    assert!(waited.elapsed().as_secs() < 10, "stuck at {}", seen());
                    std::thread::yield_now();
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
                assert_eq!(seen(), want, "read past its budget");
                assert_eq!(taker.take(), i);
            }
            // The last take ends the prefetcher, and with it the scope.
            assert_eq!(taker.take(), 20);
        });
        assert_eq!(*backend.hooks.0.lock().unwrap(), spans);
    }

    #[test]
    fn a_queue_of_no_spans_only_counts() {
        let backend = crate::backend::mem::MemBackend::default();
        let queue = Queue::new(&backend, FileKind::Pack, Vec::new());
        std::thread::scope(|s| queue.start(s, 30));
        let taker = queue.taker();
        assert_eq!((taker.take(), taker.take()), (0, 1));
        assert!(queue.prefetcher.get().is_none());
    }

    /// A worker that panics ends the queue: the prefetcher, waiting for
    /// takes, stops, and the panic comes out of the scope.
    #[test]
    fn a_worker_that_panics_ends_the_queue() {
        let backend = crate::backend::mem::MemBackend::default();
        let spans = twenty_spans();
        let queue = Queue::new(&backend, FileKind::Pack, spans);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::thread::scope(|s| {
                queue.start(s, 30);
                s.spawn(|| {
                    let taker = queue.taker();
                    assert_eq!(taker.take(), 0);
                    panic!("a worker's bug");
                });
            })
        }));
        assert!(outcome.is_err());
        assert!(queue.taker().take() >= 20);
    }

    /// A worker that stops early (an error ending the operation) ends the
    /// queue too, and the scope with it.
    #[test]
    fn a_worker_that_stops_early_ends_the_queue() {
        let backend = crate::backend::mem::MemBackend::default();
        let spans = twenty_spans();
        let queue = Queue::new(&backend, FileKind::Pack, spans);
        std::thread::scope(|s| {
            queue.start(s, 30);
            let taker = queue.taker();
            assert_eq!(taker.take(), 0);
        });
        assert!(queue.taker().take() >= 20);
    }
}
