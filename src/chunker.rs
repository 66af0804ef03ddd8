//! Content-defined chunking with FastCDC (2020 variant, normalisation 1).
//!
//! Cut points depend only on content and on the repository's chunker
//! parameters, including a secret gear seed, so that they differ between
//! repositories (a weak defence against fingerprinting known files by
//! their chunk sizes: see DESIGN.md, "Encryption"). The search for a cut is
//! cairn's own ([`crate::gear`]), with the `fastcdc` crate's tables, masks and
//! cut points; parameters are validated here against the crate's limits.

use fastcdc::v2020;
use serde::{Deserialize, Serialize};
use std::io::Read;

use crate::error::{Error, Result};
use crate::gear::Gear;

/// Chunk size bounds and gear seed, recorded in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Minimum chunk size in bytes.
    pub min: u32,
    /// Target average chunk size in bytes.
    pub avg: u32,
    /// Maximum chunk size in bytes.
    pub max: u32,
    /// Secret value XOR-ed into the gear table.
    pub seed: u64,
}

impl ChunkerParams {
    /// The defaults: 512 KiB / 1 MiB / 8 MiB.
    pub fn with_sizes(min: u32, avg: u32, max: u32, seed: u64) -> Result<ChunkerParams> {
        let p = ChunkerParams {
            min,
            avg,
            max,
            seed,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the sizes against FastCDC's limits and each other.
    pub fn validate(&self) -> Result<()> {
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&self.min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&self.avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "chunk sizes min {} / avg {} / max {} are out of range \
                 (need {}..={} <= {}..={} <= {}..={} bytes)",
                self.min,
                self.avg,
                self.max,
                v2020::MINIMUM_MIN,
                v2020::MINIMUM_MAX,
                v2020::AVERAGE_MIN,
                v2020::AVERAGE_MAX,
                v2020::MAXIMUM_MIN,
                v2020::MAXIMUM_MAX
            )))
        }
    }

    /// Cut points of an in-memory buffer (e.g. a memory-mapped file), as
    /// `(offset, length)` pairs covering it exactly.
    pub fn chunks<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = (usize, usize)> + 'a {
        let gear = Gear::new(self);
        let mut at = 0;
        std::iter::from_fn(move || {
            let len = gear.cut(&data[at..]);
            (len > 0).then(|| {
                at += len;
                (at - len, len)
            })
        })
    }

    /// Chunks a stream to its end, handing each chunk to `sink` in order.
    ///
    /// `buf` is the only buffer: it grows, as far as the reads need, to a
    /// window of at most the maximum chunk size plus 1 MiB, and is meant
    /// to be reused across files, so a
    /// backup does not allocate (or fault in fresh pages) per chunk. The
    /// window is refilled in large reads; only the last, possibly
    /// incomplete chunk of a window is moved to its front, since every cut
    /// found before the window's end is final (FastCDC never looks past a
    /// cut point). Cut points are the same as [`Self::chunks`] on the whole
    /// input. Returns the number of bytes read.
    pub fn for_each_chunk<R: Read + ?Sized, E>(
        &self,
        reader: &mut R,
        buf: &mut Vec<u8>,
        mut sink: impl FnMut(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, ChunkError<E>> {
        self.for_each_chunk_sparse(&mut Dense(reader), buf, |chunk, _| sink(chunk))
    }

    /// [`Self::for_each_chunk`] of a source that may say where it holds
    /// zeros without their being read (a sparse file's holes, see
    /// [`SparseRead`]). Its cut points are those of the same bytes read,
    /// but a chunk whose bytes FastCDC would look at (all but its first
    /// `min`) lie in such zeros is cut without looking at them (FastCDC's
    /// cut there depends only on how many there are, worked out once on
    /// zeros), and `sink` is told when a chunk is all such zeros, so that
    /// it need not hash them. Chunks of a hole a maximum chunk long or
    /// more are handed out from a buffer of zeros without filling the
    /// window: a hole of 64 GiB costs a few milliseconds.
    pub fn for_each_chunk_sparse<R: SparseRead + ?Sized, E>(
        &self,
        reader: &mut R,
        buf: &mut Vec<u8>,
        mut sink: impl FnMut(&[u8], bool) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, ChunkError<E>> {
        let window = self.max as usize + (1 << 20);
        // Reads fill the window only this far, at first: a chunk is cut
        // within it nearly always (chunks average `avg`), and two reading
        // threads' windows of a maximum chunk each were a fifth of a
        // first backup's peak memory. It grows by an average chunk, for
        // the rest of the input, whenever one chunk runs past it. The cuts
        // do not depend on it: a chunk a refill leaves unfinished is
        // looked at again whole after the next read. The price is that
        // look again and the move of the unfinished chunk to the window's
        // front, once per reach instead of once per window.
        let first_reach = (4 * self.avg as usize).clamp(GROW_FROM, window);
        let mut reach = first_reach;
        if buf.len() > first_reach {
            // Grown by an earlier input's long chunks: given back.
            buf.truncate(first_reach);
            buf.shrink_to_fit();
        }
        // A source that stalls (a pipe) is chunked once this much has
        // arrived, rather than only when the window fills, so a slow
        // stream is stored as it comes; the bound keeps the rescanning of
        // a window's last chunk to at most once per that many bytes.
        let stall_after = (self.max as usize).max(1 << 20);
        let (mut filled, mut total, mut eof) = (0usize, 0u64, false);
        let mut fresh = 0usize;
        // Made at the first window to chunk: a small file needs none.
        let mut gear = None;
        // Ranges of the window known to be zeros (holes), in order, apart.
        let mut zeros = ZeroRuns::default();
        // Chunks of a long hole, handed out without filling the window.
        let mut zero_chunk: Vec<u8> = Vec::new();
        loop {
            // At a cut, with nothing but zeros pending: a hole that makes
            // them a maximum chunk or more is cut as zeros are, straight
            // from a buffer of zeros, so a hole of gigabytes costs a
            // system call and a lookup per chunk, not filling the window.
            let max = self.max as usize;
            while !eof && filled < max && (filled == 0 || zeros.covers(0, filled)) {
                let want = max - filled;
                let hole = reader.hole_ahead(want).map_err(ChunkError::Read)?;
                if hole < want {
                    if hole > 0 {
                        if buf.len() < filled + hole {
                            buf.resize((filled + hole).clamp(GROW_FROM, window), 0);
                        }
                        buf[filled..filled + hole].fill(0);
                        zeros.push(filled, filled + hole);
                        filled += hole;
                    }
                    break;
                }
                if zero_chunk.is_empty() {
                    zero_chunk = vec![0; max];
                }
                let len = self.zeros_cut(max);
                sink(&zero_chunk[..len], true).map_err(ChunkError::Sink)?;
                total += len as u64;
                // What is left of the maximum starts the next chunk.
                filled = max - len;
                zeros = ZeroRuns::default();
                if filled > 0 {
                    if buf.len() < filled {
                        buf.resize(filled.clamp(GROW_FROM, window), 0);
                    }
                    buf[..filled].fill(0);
                    zeros.push(0, filled);
                }
            }
            while !eof && filled < reach {
                // The window grows (zeroed, once per buffer) only as far
                // as reads reach: a buffer that only small files have
                // used holds a few pages, not the whole window.
                if filled == buf.len() {
                    let grown = (buf.len() * 4).clamp(GROW_FROM, reach);
                    buf.resize(grown, 0);
                }
                let room = buf.len().min(reach) - filled;
                let hole = reader.hole_ahead(room).map_err(ChunkError::Read)?;
                if hole > 0 {
                    let hole = hole.min(room);
                    buf[filled..filled + hole].fill(0);
                    zeros.push(filled, filled + hole);
                    filled += hole;
                    fresh += hole;
                    continue;
                }
                match reader.read(&mut buf[filled..filled + room]) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        zeros.find(buf, filled, filled + n);
                        filled += n;
                        fresh += n;
                        if n < room && fresh >= stall_after {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ChunkError::Read(e)),
                }
            }
            fresh = 0;
            if eof && filled <= self.min as usize {
                // What FastCDC cuts of so little: all of it, as one chunk
                // (none if empty), without setting up its gear tables, a
                // cost per file that showed in backups of small files.
                if filled > 0 {
                    sink(&buf[..filled], zeros.covers(0, filled)).map_err(ChunkError::Sink)?;
                }
                return Ok(total + filled as u64);
            }
            let gear = gear.get_or_insert_with(|| Gear::new(self));
            let (min, max) = (self.min as usize, self.max as usize);
            let mut done = 0;
            while done < filled {
                let left = filled - done;
                // FastCDC looks at a chunk's bytes from `min` on (from
                // the even byte at or before it, as it takes two at a
                // time), up to `max` or the input's end: all zeros, it
                // cuts where it cuts zeros of that length.
                let look = left.min(max);
                let from = done + min / 2 * 2;
                let len = if left > min && zeros.covers(from, done + look) {
                    self.zeros_cut(look)
                } else {
                    gear.cut(&buf[done..filled])
                };
                if len == 0 || (!eof && done + len == filled) {
                    break;
                }
                sink(&buf[done..done + len], zeros.covers(done, done + len))
                    .map_err(ChunkError::Sink)?;
                done += len;
            }
            total += done as u64;
            if eof {
                return Ok(total);
            }
            if done == 0 && filled >= reach {
                // One chunk runs past the reach (never past the window,
                // which holds a maximum chunk and more).
                reach = (reach + first_reach / 4).min(window);
            }
            buf.copy_within(done..filled, 0);
            filled -= done;
            zeros.shift(done);
        }
    }

    /// Where FastCDC cuts `len` zero bytes (at most the maximum chunk
    /// size): computed on zeros once per process for these parameters and
    /// length, since a sparse file's holes ask it for every chunk.
    fn zeros_cut(&self, len: usize) -> usize {
        type Cuts = Vec<(ChunkerParams, usize, usize)>;
        static CUTS: std::sync::Mutex<Cuts> = std::sync::Mutex::new(Vec::new());
        let known = |cuts: &Cuts| {
            cuts.iter()
                .find(|(p, l, _)| p == self && *l == len)
                .map(|c| c.2)
        };
        if let Some(cut) = CUTS.lock().ok().as_deref().and_then(known) {
            return cut;
        }
        let zeros = vec![0u8; len];
        let cut = self.chunks(&zeros).next().map_or(len, |(_, l)| l);
        if let Ok(mut cuts) = CUTS.lock() {
            // A few lengths a file's end asks for; bounded all the same.
            if cuts.len() >= 64 {
                cuts.clear();
            }
            cuts.push((*self, len, cut));
        }
        cut
    }
}

/// A source of bytes that may know where it holds zeros it need not read.
pub trait SparseRead: Read {
    /// How many of the next bytes, at most `most`, are zeros that need not
    /// be read (a hole of a sparse file): the source then counts them as
    /// read. 0 where the next bytes are to be read.
    fn hole_ahead(&mut self, most: usize) -> std::io::Result<usize>;
}

/// A source read as it comes, with no holes known.
struct Dense<'a, R: ?Sized>(&'a mut R);

impl<R: Read + ?Sized> Read for Dense<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read + ?Sized> SparseRead for Dense<'_, R> {
    fn hole_ahead(&mut self, _most: usize) -> std::io::Result<usize> {
        Ok(0)
    }
}

/// The blocks in which [`ZeroRuns::find`] looks for zeros read.
const ZERO_BLOCK: usize = 64 << 10;

/// The ranges of a chunking window known to be zeros: in order, neither
/// touching nor overlapping (a range that meets the last is merged).
#[derive(Default)]
struct ZeroRuns(Vec<(usize, usize)>);

impl ZeroRuns {
    fn push(&mut self, start: usize, end: usize) {
        match self.0.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.0.push((start, end)),
        }
    }

    /// Adds the blocks of [`ZERO_BLOCK`] bytes of `buf[start..end]`, just
    /// read, that hold only zeros: a file of zeros written out (a disk
    /// image, a preallocated database) then chunks and hashes as a hole
    /// does. Other bytes cost a look at a block's first word.
    fn find(&mut self, buf: &[u8], start: usize, end: usize) {
        let mut at = start;
        while at + ZERO_BLOCK <= end {
            let block = &buf[at..at + ZERO_BLOCK];
            // ORed 512 bytes at a time, which the compiler vectorises.
            let zero = |c: &[u8]| c.iter().fold(0u8, |a, &b| a | b) == 0;
            if block[..8] == [0; 8] && block.chunks(512).all(zero) {
                self.push(at, at + ZERO_BLOCK);
            }
            at += ZERO_BLOCK;
        }
    }

    /// Whether `start..end` (not empty) lies within one range.
    fn covers(&self, start: usize, end: usize) -> bool {
        self.0.iter().any(|&(s, e)| s <= start && end <= e)
    }

    /// The window's first `by` bytes are gone, and the rest moved down.
    fn shift(&mut self, by: usize) {
        self.0.retain(|&(_, e)| e > by);
        for r in &mut self.0 {
            *r = (r.0.saturating_sub(by), r.1 - by);
        }
    }
}

/// Bytes [`ChunkerParams::for_each_chunk`] first makes room for in an
/// empty buffer; it grows four times over whenever reads fill it.
const GROW_FROM: usize = 64 << 10;

/// Why [`ChunkerParams::for_each_chunk`] stopped.
#[derive(Debug)]
pub enum ChunkError<E> {
    /// Reading the input failed.
    Read(std::io::Error),
    /// The sink returned an error.
    Sink(E),
}

impl Default for ChunkerParams {
    fn default() -> ChunkerParams {
        ChunkerParams {
            min: 512 * 1024,
            avg: 1024 * 1024,
            max: 8 * 1024 * 1024,
            seed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        crate::gear::tests::noise(n, 0x9e3779b97f4a7c15)
    }

    #[test]
    fn cuts_cover_input_and_respect_bounds() {
        let p = ChunkerParams::with_sizes(4096, 16384, 65536, 1).unwrap();
        // Four times the streaming window (maximum + 1 MiB), so chunks
        // straddle refills.
        let d = data(4 << 20);
        let cuts: Vec<_> = p.chunks(&d).collect();
        let mut pos = 0;
        for (i, &(off, len)) in cuts.iter().enumerate() {
            assert_eq!(off, pos);
            assert!(len <= 65536);
            if i + 1 < cuts.len() {
                assert!(len >= 4096);
            }
            pos += len;
        }
        assert_eq!(pos, d.len());
        let whole: Vec<&[u8]> = cuts.iter().map(|&(o, l)| &d[o..o + l]).collect();
        for step in [1000, 65536, 1 << 20] {
            let mut reader = Trickle(&d, step);
            let mut streamed = Vec::new();
            let n = p
                .for_each_chunk(&mut reader, &mut Vec::new(), |c| {
                    streamed.push(c.to_vec());
                    Ok::<_, ()>(())
                })
                .unwrap();
            assert_eq!(n, d.len() as u64);
            assert_eq!(streamed, whole, "reads of {step} bytes");
        }
    }

    /// The buffer grows only as far as reads reach: inputs of a few KiB
    /// leave it at its first size; a long one grows it to four average
    /// chunks, not the window, unless a chunk runs past that, when it
    /// grows as far as that chunk needs, within the window; the next
    /// input gives that back; and a grown buffer, reused, cuts as a fresh
    /// one does, whatever the reads return.
    #[test]
    fn the_window_grows_only_as_reads_need_it() {
        let p = ChunkerParams::with_sizes(16 << 10, 64 << 10, 1 << 20, 3).unwrap();
        let reach = 4 * (64 << 10);
        let window = (1 << 20) + (1 << 20);
        let noise = data(3 << 20);
        // Noise, then bytes FastCDC never cuts: maximum chunks.
        let mut long = data(1 << 20);
        long.extend(std::iter::repeat_n(0x5a, 3 << 20));
        long.extend(data(1 << 20));
        let want = |input: &[u8]| -> Vec<Vec<u8>> {
            p.chunks(input)
                .map(|(o, l)| input[o..o + l].to_vec())
                .collect()
        };
        let cut = |input: &[u8], buf: &mut Vec<u8>, step: usize| -> Vec<Vec<u8>> {
            let mut got = Vec::new();
            p.for_each_chunk(&mut Trickle(input, step), buf, |c| {
                got.push(c.to_vec());
                Ok::<(), ()>(())
            })
            .unwrap();
            got
        };
        assert!(
            want(&long).iter().any(|c| c.len() == 1 << 20),
            "the long input has chunks of the maximum"
        );
        let mut buf = Vec::new();
        for len in [10, 5_000, 40_000] {
            let input = &noise[..len];
            assert_eq!(cut(input, &mut buf, usize::MAX), want(input), "{len} bytes");
        }
        assert_eq!(buf.len(), GROW_FROM);
        assert_eq!(cut(&noise, &mut buf, usize::MAX), want(&noise));
        assert_eq!(buf.len(), reach, "four average chunks");
        assert_eq!(cut(&long, &mut buf, usize::MAX), want(&long));
        assert!(
            buf.len() > 1 << 20 && buf.len() <= window,
            "past a maximum chunk, within the window (maximum + 1 MiB): {}",
            buf.len()
        );
        assert_eq!(
            cut(&noise[..5_000], &mut buf, usize::MAX),
            want(&noise[..5_000])
        );
        assert_eq!(buf.len(), reach, "given back");
        for step in [1000, 100_000, usize::MAX] {
            for from in [7, 1 << 20] {
                let (n, l) = (&noise[from..], &long[from..]);
                assert_eq!(
                    cut(n, &mut buf, step),
                    want(n),
                    "noise from {from}, reads of {step}"
                );
                assert_eq!(
                    cut(l, &mut buf, step),
                    want(l),
                    "long from {from}, reads of {step}"
                );
            }
        }
    }

    /// A reader returning at most `.1` bytes per call.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Inputs about the minimum chunk size, which streaming cuts without
    /// FastCDC, come out as `chunks` cuts them.
    #[test]
    fn inputs_about_the_minimum_size_cut_as_fastcdc_cuts_them() {
        let p = ChunkerParams::with_sizes(4096, 16384, 65536, 7).unwrap();
        let d = data(3 * 4096);
        for len in [0, 1, 100, 4095, 4096, 4097, 8191, 8192, 8193, 12288] {
            let input = &d[..len];
            let want: Vec<Vec<u8>> = p
                .chunks(input)
                .map(|(o, l)| input[o..o + l].to_vec())
                .collect();
            let mut got = Vec::new();
            let n = p
                .for_each_chunk(&mut &input[..], &mut Vec::new(), |c| {
                    got.push(c.to_vec());
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert_eq!(n, len as u64);
            assert_eq!(got, want, "input of {len} bytes");
        }
    }

    /// A source whose `holes` (ranges of zeros in `data`) are told, not
    /// read: reads stop at a hole's start, and never return its bytes.
    struct Holey<'a> {
        data: &'a [u8],
        holes: &'a [(usize, usize)],
        at: usize,
        step: usize,
    }

    impl Read for Holey<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let next_hole = (self.holes.iter())
                .map(|h| h.0)
                .find(|&s| s >= self.at)
                .unwrap_or(self.data.len());
            assert!(
                !self.holes.iter().any(|h| h.0 <= self.at && self.at < h.1),
                "read at {} inside a hole",
                self.at
            );
            let n = (next_hole - self.at).min(out.len()).min(self.step);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl SparseRead for Holey<'_> {
        fn hole_ahead(&mut self, most: usize) -> std::io::Result<usize> {
            let hole = self.holes.iter().find(|h| h.0 <= self.at && self.at < h.1);
            let n = hole.map_or(0, |h| (h.1 - self.at).min(most));
            self.at += n;
            Ok(n)
        }
    }

    /// Holes told rather than read give the cut points of the same bytes
    /// read, with seeds whose gear hash cuts zeros only at the maximum and
    /// one that cuts them at once; a chunk wholly in a hole is said to be
    /// zeros, and no other is.
    #[test]
    fn holes_told_cut_as_the_same_zeros_read() {
        let (avg, max) = (16384, 65536);
        // Whose gear value for a zero byte is 0: zeros cut at once.
        let zero_gear = v2020::get_gear_with_seed(1).0[0] ^ 1;
        let d = data(2 << 20);
        let hole_sets: [&[(usize, usize)]; 8] = [
            &[(0, 300_000)],
            &[(100_000, 101_000), (200_000, 500_000), (900_000, 1 << 20)],
            &[(5, 4096 + 7), (70_000, 70_000 + 65536 * 3 + 1)],
            &[(10_000, 20_000), (20_000 + 4096, 800_000)],
            &[(0, 1 << 20)],
            // The first chunk's bytes FastCDC looks at begin with data.
            &[(4096 + 50, 300_000)],
            &[(4097, 300_000)],
            // A window's last chunk of zeros then data, before a long
            // hole: the window is chunked where a read stops short at a
            // hole past 1 MiB.
            &[(1_000_000, 1_048_600), (1_048_700, 1_600_000)],
        ];
        // An odd minimum: FastCDC starts looking at the byte before it.
        for (min, seed) in [(4096, 1), (4096, 7), (4096, zero_gear), (4097, zero_gear)] {
            let p = ChunkerParams::with_sizes(min, avg, max, seed).unwrap();
            for (n, holes) in hole_sets.iter().enumerate() {
                let mut input = d.clone();
                for &(a, b) in *holes {
                    input[a..b].fill(0);
                }
                let want: Vec<&[u8]> = p.chunks(&input).map(|(o, l)| &input[o..o + l]).collect();
                for step in [1000, 1 << 20] {
                    let mut src = Holey {
                        data: &input,
                        holes,
                        at: 0,
                        step,
                    };
                    let mut got = Vec::new();
                    let mut at = 0;
                    let total = p
                        .for_each_chunk_sparse(&mut src, &mut vec![1u8; 7], |c, zeros| {
                            let inside = holes.iter().any(|h| h.0 <= at && at + c.len() <= h.1);
                            assert_eq!(zeros, inside, "seed {seed}, set {n}, chunk at {at}");
                            got.push(c.to_vec());
                            at += c.len();
                            Ok::<_, ()>(())
                        })
                        .unwrap();
                    assert_eq!(total, input.len() as u64);
                    assert_eq!(got, want, "seed {seed}, hole set {n}, reads of {step}");
                    // The same zeros read, not told: found in what is read.
                    let mut got = Vec::new();
                    let mut found = 0;
                    let mut reader = Trickle(&input, step);
                    p.for_each_chunk_sparse(
                        &mut Dense(&mut reader),
                        &mut Vec::new(),
                        |c, zeros| {
                            assert!(!zeros || c.iter().all(|&b| b == 0), "seed {seed}, set {n}");
                            found += usize::from(zeros) * c.len();
                            got.push(c.to_vec());
                            Ok::<_, ()>(())
                        },
                    )
                    .unwrap();
                    assert_eq!(got, want, "seed {seed}, hole set {n} read, reads of {step}");
                    if n == 4 && step == 1 << 20 {
                        assert!(found > 0, "no zeros found in a file of zeros");
                    }
                }
            }
        }
        // The seed that cuts zeros at once does cut within a hole.
        let p = ChunkerParams::with_sizes(4096, avg, max, zero_gear).unwrap();
        assert!(p.chunks(&vec![0; 200_000]).next().unwrap().1 < max as usize);
    }

    /// Zeros read are found a whole block at a time, and no further.
    #[test]
    fn zeros_read_are_found_in_whole_blocks() {
        let mut buf = data(5 * ZERO_BLOCK);
        buf[ZERO_BLOCK..3 * ZERO_BLOCK].fill(0);
        // A run of zeros not filling a block, and one a byte short.
        buf[3 * ZERO_BLOCK + 7..4 * ZERO_BLOCK].fill(0);
        buf[4 * ZERO_BLOCK..5 * ZERO_BLOCK - 1].fill(0);
        let mut runs = ZeroRuns::default();
        runs.find(&buf, 0, buf.len());
        assert_eq!(runs.0, [(ZERO_BLOCK, 3 * ZERO_BLOCK)]);
        // Only what was just read is looked at, from where it begins.
        let mut runs = ZeroRuns::default();
        runs.find(&buf, 100, buf.len());
        let (a, b) = (ZERO_BLOCK + 100, 3 * ZERO_BLOCK + 100);
        assert_eq!(runs.0, [(a, a + ZERO_BLOCK), (b, b + ZERO_BLOCK)]);
        let mut runs = ZeroRuns::default();
        runs.find(&buf, 0, 3 * ZERO_BLOCK - 1);
        assert_eq!(runs.0, [(ZERO_BLOCK, 2 * ZERO_BLOCK)]);
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let p = ChunkerParams::default();
        let mut calls = 0;
        let n = p
            .for_each_chunk(&mut &[][..], &mut Vec::new(), |_| {
                calls += 1;
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!((n, calls), (0, 0));
    }

    #[test]
    fn golden_cut_points() {
        // Pins the chunker: changing these changes dedup across versions.
        let p = ChunkerParams::with_sizes(4096, 16384, 65536, 42).unwrap();
        let d = data(200_000);
        let lens: Vec<usize> = p.chunks(&d).map(|c| c.1).collect();
        assert_eq!(
            lens,
            [5005, 23988, 8844, 29154, 17674, 24349, 41194, 19386, 19688, 7862, 2856]
        );
        let again: Vec<usize> = p.chunks(&d).map(|c| c.1).collect();
        assert_eq!(lens, again);
        let other_seed = ChunkerParams::with_sizes(4096, 16384, 65536, 43).unwrap();
        assert_ne!(lens, other_seed.chunks(&d).map(|c| c.1).collect::<Vec<_>>());
    }

    #[test]
    fn shifted_content_realigns() {
        let p = ChunkerParams::with_sizes(4096, 16384, 65536, 7).unwrap();
        let d = data(1 << 20);
        let mut shifted = vec![0xAA];
        shifted.extend_from_slice(&d);
        let a: std::collections::HashSet<&[u8]> = p.chunks(&d).map(|(o, l)| &d[o..o + l]).collect();
        let b: Vec<&[u8]> = p
            .chunks(&shifted)
            .map(|(o, l)| &shifted[o..o + l])
            .collect();
        let shared = b.iter().filter(|c| a.contains(*c)).count();
        assert!(
            shared + 3 >= b.len(),
            "only {shared} of {} chunks shared",
            b.len()
        );
    }

    #[test]
    fn bad_sizes_are_errors_not_panics() {
        assert!(ChunkerParams::with_sizes(1, 2, 3, 0).is_err());
        assert!(ChunkerParams::with_sizes(8192, 4096, 65536, 0).is_err());
        assert!(ChunkerParams::with_sizes(4096, 8192, 1 << 30, 0).is_err());
        ChunkerParams::default().validate().unwrap();
    }
}
