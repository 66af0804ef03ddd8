//! A blocked Bloom filter of blob ids, kept in memory: the writer's filter
//! over the tables it wrote during a backup, and an index set's filter
//! over every table once misses make it pay ([`super::IndexSet::contains`]).

use crate::id::BlobId;

/// A blocked Bloom filter of blob ids: 16 bits an id, one cache line a
/// lookup, under 1% false positives at capacity. Ids are keyed hashes,
/// so their own bits serve as the hash functions; were they not uniform,
/// only the share of false positives would grow, never a miss.
#[derive(Default)]
pub struct IdFilter {
    blocks: Vec<[u64; 8]>,
}

impl IdFilter {
    /// Bits set per id, each chosen by 9 bits of the id's second word.
    const PROBES: u32 = 6;

    /// A filter for `ids` ids: `ids` × 16 bits, in whole 64-byte blocks.
    pub fn with_capacity(ids: usize) -> IdFilter {
        IdFilter {
            blocks: vec![[0; 8]; (ids * 16).div_ceil(512).max(1)],
        }
    }

    /// How many ids it holds at under 1% false positives.
    pub fn capacity(&self) -> usize {
        self.blocks.len() * 512 / 16
    }

    /// Bytes of memory it holds.
    pub fn bytes(&self) -> usize {
        self.blocks.len() * 64
    }

    /// The id's block (its first word scaled to the block count, so any
    /// count of blocks spreads evenly) and the word its bits come from.
    fn block_and_bits(&self, id: &BlobId) -> (usize, u64) {
        let word = |at: usize| u64::from_le_bytes(id.0[at..at + 8].try_into().expect("8 bytes"));
        let block = ((word(0) as u128 * self.blocks.len() as u128) >> 64) as usize;
        (block, word(8))
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: &BlobId) {
        let (block, bits) = self.block_and_bits(id);
        let Some(b) = self.blocks.get_mut(block) else {
            return;
        };
        for k in 0..Self::PROBES {
            let bit = (bits >> (9 * k)) & 511;
            b[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
    }

    /// False if `id` was never added; true if it was, and for under 1% of
    /// other ids while at most [`IdFilter::capacity`] were added.
    pub fn may_contain(&self, id: &BlobId) -> bool {
        let (block, bits) = self.block_and_bits(id);
        let Some(b) = self.blocks.get(block) else {
            return false;
        };
        (0..Self::PROBES).all(|k| {
            let bit = (bits >> (9 * k)) & 511;
            b[(bit >> 6) as usize] & (1 << (bit & 63)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_ids(n: usize) -> Vec<BlobId> {
        use rand::RngCore;
        let mut rng = rand::thread_rng();
        (0..n)
            .map(|_| {
                let mut b = [0u8; 32];
                rng.fill_bytes(&mut b);
                BlobId(b)
            })
            .collect()
    }

    #[test]
    fn the_id_filter_never_misses_and_rarely_says_maybe() {
        let empty = IdFilter::default();
        assert!(!empty.may_contain(&random_ids(1)[0]));
        // 100,000 is not a whole number of blocks' worth: the last block
        // must be reachable, and none past it.
        let mut filter = IdFilter::with_capacity(100_000);
        assert!(filter.capacity() >= 100_000);
        assert!(filter.capacity() < 100_000 + 32);
        assert_eq!(filter.bytes(), filter.capacity() * 2);
        let ids = random_ids(filter.capacity());
        ids.iter().for_each(|i| filter.insert(i));
        assert!(ids.iter().all(|i| filter.may_contain(i)));
        let maybe = random_ids(100_000)
            .iter()
            .filter(|i| filter.may_contain(i))
            .count();
        assert!(maybe < 1_000, "{maybe} of 100,000 other ids said maybe");
    }

    #[test]
    fn ids_spread_over_every_block() {
        let filter = IdFilter::with_capacity(100_000);
        let mut used = vec![false; filter.blocks.len()];
        for id in random_ids(200_000) {
            used[filter.block_and_bits(&id).0] = true;
        }
        assert!(used.iter().all(|&u| u), "a block no id reaches");
    }
}
