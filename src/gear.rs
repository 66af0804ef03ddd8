//! FastCDC's search for a cut point (the 2020 variant with normalisation
//! level 1, as the `fastcdc` crate's `v2020::FastCDC` cuts), in four lanes
//! where chunks are large.
//!
//! FastCDC's gear hash takes a byte at a time: `h = (h << 1) + gear[b]`,
//! and a cut falls at the first position whose hash has none of the
//! mask's bits set (the crate takes two bytes a step, with tables shifted
//! by one, which is the same hash). Each step waits on the one before.
//! But after 64 bytes the hash no longer depends on where it started:
//! every older byte has been shifted out. So where the average chunk is
//! [`LANES_FROM`] or more, the positions to search are cut into four
//! stretches, each hashed from 63 bytes before its start, and the four
//! chains run side by side; the first match is the earliest in the first
//! stretch that has one. Smaller chunks are searched in one chain, two
//! bytes a step with the two bytes' table entries added first, so that
//! the chain waits on a shift and an add per two bytes (a round of lanes
//! would mostly hash past so near a cut). The cut points are the
//! crate's, byte for byte (tested against it): changing them would
//! change which chunks two backups share.

use fastcdc::v2020;

use crate::chunker::ChunkerParams;

/// Bytes each lane hashes per round; a round looks at four times this.
/// Larger rounds spend less on the 63 bytes of lead-in a lane takes, and
/// more on what is hashed past the cut in the round that finds it.
const STRETCH: usize = 8 << 10;

/// The lanes hashed side by side.
const LANES: usize = 4;

/// The average chunk size from which the search runs in lanes. Below
/// it a cut is near enough that a round would mostly hash past it.
const LANES_FROM: usize = 128 << 10;

/// Bytes a lane hashes before its stretch so that its hash is exact there:
/// 63 makes all of it exact. (The masks' bits are below bit 48, which
/// depend only on the last 48 bytes, so fewer would do; 63 costs under 1%.)
const LEAD_IN: usize = 63;

/// What FastCDC's cut search needs of a repository's chunker parameters.
#[derive(Clone)]
pub struct Gear {
    table: [u64; 256],
    /// `table` shifted left by one: two bytes a step in [`Self::chain`].
    shifted: [u64; 256],
    /// The mask before the normalisation point (harder to match).
    mask_s: u64,
    /// The mask after it (easier).
    mask_l: u64,
    min: usize,
    avg: usize,
    max: usize,
}

impl Gear {
    /// The search for `p`'s cut points (which are valid: see
    /// [`ChunkerParams::validate`]).
    pub fn new(p: &ChunkerParams) -> Gear {
        let bits = v2020::logarithm2(p.avg) as usize;
        let (table, _) = v2020::get_gear_with_seed(p.seed);
        Gear {
            table: *table,
            shifted: table.map(|g| g << 1),
            mask_s: v2020::MASKS[bits + 1],
            mask_l: v2020::MASKS[bits - 1],
            min: p.min as usize,
            avg: p.avg as usize,
            max: p.max as usize,
        }
    }

    /// The length of the chunk that starts `data` (all of it when it is
    /// no longer than the minimum; 0 only when it is empty).
    pub fn cut(&self, data: &[u8]) -> usize {
        let len = data.len();
        if len <= self.min {
            return len;
        }
        let (end, center) = if len > self.max {
            (self.max, self.avg)
        } else {
            (len, self.avg.min(len))
        };
        // The crate hashes two bytes a step from the even byte at or
        // before the minimum, and stops at the even byte at or before the
        // normalisation point and the end: the last byte of an odd end is
        // never looked at.
        let from = self.min & !1;
        let (middle, stop) = (center & !1, end & !1);
        let data = &data[..stop];
        if let Some(at) = self.first_match(data, from, from, middle, self.mask_s) {
            return at;
        }
        self.first_match(data, from, middle.max(from), stop, self.mask_l)
            .unwrap_or(end)
    }

    /// The first position in `start..stop` whose hash, of the bytes from
    /// `origin` on, has none of `mask`'s bits set.
    fn first_match(
        &self,
        data: &[u8],
        origin: usize,
        start: usize,
        stop: usize,
        mask: u64,
    ) -> Option<usize> {
        let mut at = start;
        if self.avg >= LANES_FROM {
            while at + LANES * STRETCH <= stop {
                if let Some(found) = self.round(data, origin, at, mask) {
                    return Some(found);
                }
                at += LANES * STRETCH;
            }
        }
        if at >= stop {
            return None;
        }
        let h = self.hash(data, origin.max(at.saturating_sub(LEAD_IN)), at);
        self.chain(&data[..stop], at, h, mask)
    }

    /// The first position from `at` (even, as is the data's length) to
    /// the end of `data` whose hash has none of `mask`'s bits set, `h`
    /// being the hash before `at`: one chain, two bytes a step. The step
    /// adds the two bytes' table entries to the hash shifted by two, so
    /// the chain waits on a shift and an add per two bytes; the first
    /// byte's hash, shifted by one, is tested against the mask shifted
    /// by one (the masks' top bits are clear), as the crate does.
    fn chain(&self, data: &[u8], at: usize, mut h: u64, mask: u64) -> Option<usize> {
        let mask_shifted = mask << 1;
        for (n, pair) in data[at..].chunks_exact(2).enumerate() {
            let first = self.shifted[pair[0] as usize];
            let both = first.wrapping_add(self.table[pair[1] as usize]);
            let before = h << 2;
            if before.wrapping_add(first) & mask_shifted == 0 {
                return Some(at + 2 * n);
            }
            h = before.wrapping_add(both);
            if h & mask == 0 {
                return Some(at + 2 * n + 1);
            }
        }
        None
    }

    /// The hash of `data[from..to]`, from zero.
    fn hash(&self, data: &[u8], from: usize, to: usize) -> u64 {
        data[from..to]
            .iter()
            .fold(0u64, |h, &b| (h << 1).wrapping_add(self.table[b as usize]))
    }

    /// One round of [`Self::first_match`]: the four stretches from `at`.
    fn round(&self, data: &[u8], origin: usize, at: usize, mask: u64) -> Option<usize> {
        let starts: [usize; LANES] = std::array::from_fn(|k| at + k * STRETCH);
        let lead = |s: usize| self.hash(data, origin.max(s.saturating_sub(LEAD_IN)), s);
        let [mut h0, mut h1, mut h2, mut h3] = starts.map(lead);
        // One slice, the lanes at fixed offsets in it: one register
        // addresses all four, and bounds are known.
        let block: &[u8; LANES * STRETCH] = data[at..at + LANES * STRETCH]
            .try_into()
            .expect("a round's bytes");
        let t = &self.table;
        let mut hit = None;
        // Each lane's test is its own branch, taken only at a match, and
        // two bytes a lane are taken per turn of the loop: the loop is
        // bound by how many instructions a byte takes, not by the chains.
        macro_rules! step {
            ($i:expr) => {
                let i = $i;
                h0 = (h0 << 1).wrapping_add(t[block[i] as usize]);
                h1 = (h1 << 1).wrapping_add(t[block[i + STRETCH] as usize]);
                h2 = (h2 << 1).wrapping_add(t[block[i + 2 * STRETCH] as usize]);
                h3 = (h3 << 1).wrapping_add(t[block[i + 3 * STRETCH] as usize]);
                if h0 & mask == 0 || h1 & mask == 0 || h2 & mask == 0 || h3 & mask == 0 {
                    hit = Some(i);
                    break;
                }
            };
        }
        for i in (0..STRETCH).step_by(2) {
            step!(i);
            step!(i + 1);
        }
        let i = hit?;
        Some(self.settle(data, &starts, i, [h0, h1, h2, h3], mask))
    }

    /// Where a round's first match is, given that some lane matched at
    /// offset `i` of its stretch (the hashes there being `h`): the first
    /// lane that matched there, unless a lane before it matches later in
    /// its own stretch, which is earlier in the data.
    fn settle(
        &self,
        data: &[u8],
        starts: &[usize; LANES],
        i: usize,
        h: [u64; LANES],
        mask: u64,
    ) -> usize {
        let first = (0..LANES)
            .find(|&k| h[k] & mask == 0)
            .expect("a lane matched");
        for k in 0..first {
            let mut hk = h[k];
            let rest = &data[starts[k] + i + 1..starts[k] + STRETCH];
            for (j, &b) in rest.iter().enumerate() {
                hk = (hk << 1).wrapping_add(self.table[b as usize]);
                if hk & mask == 0 {
                    return starts[k] + i + 1 + j;
                }
            }
        }
        starts[first] + i
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The crate's cut of the chunk starting `data`.
    fn crate_cut(p: &ChunkerParams, data: &[u8]) -> usize {
        v2020::FastCDC::with_level_and_seed(
            data,
            p.min,
            p.avg,
            p.max,
            v2020::Normalization::Level1,
            p.seed,
        )
        .next()
        .map_or(0, |c| c.length)
    }

    /// `n` bytes of xorshift noise from the seed `x` (not zero).
    pub(crate) fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The masks' top bits are clear, so a hash taken a byte at a time
    /// matches where the crate's, of two bytes a step with tables shifted
    /// by one, does; and its shifted table is the table shifted.
    #[test]
    fn the_hash_is_the_crates() {
        assert!(v2020::MASKS.iter().all(|m| m >> 62 == 0));
        for seed in [0, 1, u64::MAX, 0x8000_0000_0000_0001] {
            let (g, gl) = v2020::get_gear_with_seed(seed);
            assert!((0..256).all(|i| gl[i] == g[i] << 1), "seed {seed}");
        }
    }

    /// Every cut, at every start, over data with few or many matches, for
    /// sizes where rounds, stretches and the normalisation point fall
    /// anywhere, odd and even: the crate's.
    #[test]
    fn cuts_are_the_crates() {
        let params = [
            (64, 256, 1024, 0),
            (64, 256, 1024, 9),
            (65, 300, 1031, 5),
            (4096, 16384, 65536, 42),
            (4097, 16385, 65537, 7),
            (8191, 32768, 262_143, 3),
            // In lanes from here (an average of `LANES_FROM` or more).
            (65_536, 131_072, 1 << 20, 13),
            (100_001, 200_003, 600_007, 17),
            (64, 1 << 18, 1 << 20, 19),
            (1 << 19, 1 << 20, 1 << 23, 11),
        ];
        let inputs: Vec<Vec<u8>> = vec![
            noise(3 << 20, 1),
            // Few distinct bytes: long runs without a match, then many.
            noise(1 << 20, 2).iter().map(|b| b & 3).collect(),
            vec![0; 300_000],
            (0..400_000u32).map(|i| (i % 251) as u8).collect(),
        ];
        for &(min, avg, max, seed) in &params {
            let p = ChunkerParams::with_sizes(min, avg, max, seed).unwrap();
            let gear = Gear::new(&p);
            for (n, data) in inputs.iter().enumerate() {
                let mut at = 0;
                let mut cuts = 0;
                while at < data.len() && cuts < 400 {
                    let want = crate_cut(&p, &data[at..]);
                    assert_eq!(gear.cut(&data[at..]), want, "{p:?} input {n} at {at}");
                    at += want;
                    cuts += 1;
                }
                // Ends of every length about the sizes that matter.
                for end in [min, min + 1, avg - 1, avg, avg + 1, max - 1, max, max + 1] {
                    for len in [end as usize, end as usize + 4 * STRETCH + 3] {
                        let d = &data[..len.min(data.len())];
                        assert_eq!(gear.cut(d), crate_cut(&p, d), "{p:?} input {n} len {len}");
                    }
                }
            }
        }
    }

    /// Random sizes, seeds and data, with matches made likely.
    #[test]
    fn random_cuts_are_the_crates() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..80 {
            // Every other round at sizes searched in lanes.
            let scale = if round % 2 == 0 { 1 } else { 64 };
            let min = 64 + (next() % 5000) as u32 * scale;
            let avg = (min.max(256) + (next() % 20_000) as u32 * scale).max(if scale > 1 {
                LANES_FROM as u32
            } else {
                0
            });
            let max = avg.max(1024) + (next() % 100_000) as u32 * scale;
            let p = ChunkerParams::with_sizes(min, avg, max, next()).unwrap();
            let gear = Gear::new(&p);
            let bits = 1 + next() % 8;
            let len = (200_000 + (next() % 100_000) as usize) * if scale > 1 { 8 } else { 1 };
            let data: Vec<u8> = noise(len, next())
                .iter()
                .map(|b| b & ((1u16 << bits) - 1) as u8)
                .collect();
            let mut at = 0;
            while at < data.len() {
                let want = crate_cut(&p, &data[at..]);
                assert_eq!(gear.cut(&data[at..]), want, "round {round}, {p:?}, at {at}");
                at += want;
            }
        }
    }
}
