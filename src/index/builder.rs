//! Building one index table from pack headers.

use super::*;

/// Builds one index table from pack headers.
#[derive(Clone, Default)]
pub struct IndexBuilder {
    packs: Vec<(PackId, BlobKind)>,
    numbers: crate::id::IdMap<PackId, u32>,
    /// The pack number [`IndexBuilder::add_entry`] used last.
    last: u32,
    entries: Vec<(BlobId, u32, u32, u32, u32)>,
}

impl IndexBuilder {
    /// The number of `pack` in the table's pack list, added if new.
    pub(super) fn number(&mut self, pack: PackId, kind: BlobKind) -> u32 {
        let next = self.packs.len() as u32;
        let n = *self.numbers.entry(pack).or_insert(next);
        if n == next {
            self.packs.push((pack, kind));
        }
        n
    }

    /// Adds one blob of a pack.
    pub fn add_entry(&mut self, pack: PackId, kind: BlobKind, e: PackEntry) {
        // Entries come pack by pack more often than not.
        let n = match self.packs.get(self.last as usize) {
            Some((p, _)) if *p == pack => self.last,
            _ => self.number(pack, kind),
        };
        self.last = n;
        self.entries
            .push((e.id, n, e.offset, e.length, e.raw_length));
    }

    /// Adds every blob of a pack.
    pub fn add_pack(&mut self, pack: PackId, kind: BlobKind, entries: &[PackEntry]) {
        let n = self.number(pack, kind);
        self.entries.extend(
            entries
                .iter()
                .map(|e| (e.id, n, e.offset, e.length, e.raw_length)),
        );
    }

    /// Number of packs added.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Number of entries added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sorts the entries by blob id, as tables hold them.
    fn sort(&mut self) {
        // Entries added from tables come in sorted runs, which a stable
        // sort merges rather than sorts; ids mostly differ in their
        // first word.
        let word = |id: &BlobId| u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
        self.entries
            .sort_by(|a, b| word(&a.0).cmp(&word(&b.0)).then_with(|| a.0.cmp(&b.0)));
    }

    /// Moves every entry of a blob another entry here holds too (a blob
    /// stored in more than one pack) into a builder of its own, and
    /// returns it: a table holds one entry per blob, so each further copy
    /// goes into another table, and none is dropped unread (`repair
    /// index` kept one copy of each such blob, whichever pack's id was
    /// lower, and left the other pack unindexed, for gc to delete).
    pub fn split_duplicates(&mut self) -> IndexBuilder {
        self.sort();
        let mut dups = IndexBuilder::default();
        let mut kept = Vec::with_capacity(self.entries.len());
        let mut last: Option<BlobId> = None;
        for e in self.entries.drain(..) {
            if last == Some(e.0) {
                let (pack, kind) = self.packs[e.1 as usize];
                let n = dups.number(pack, kind);
                dups.entries.push((e.0, n, e.2, e.3, e.4));
            } else {
                last = Some(e.0);
                kept.push(e);
            }
        }
        self.entries = kept;
        dups
    }

    /// Encodes the tables (sorted, duplicates dropped) in format
    /// `version` (see [`VERSION`]): in version 2 one of the tree packs'
    /// blobs, then one of the data packs', each only if it has any; in
    /// version 1 one of both, if there are any. Returns their names and
    /// bytes.
    pub fn finish(mut self, key: &MasterKey, version: u32) -> Vec<(IndexId, Vec<u8>)> {
        self.sort();
        let kinds: &[Option<BlobKind>] = if version >= 2 {
            &[Some(BlobKind::Tree), Some(BlobKind::Data)]
        } else {
            &[None]
        };
        kinds
            .iter()
            .filter_map(|kind| self.encode(version, *kind, key))
            .collect()
    }

    /// The table of the blobs of `kind`'s packs (of every pack for
    /// `None`), if there are any.
    fn encode(
        &self,
        version: u32,
        kind: Option<BlobKind>,
        key: &MasterKey,
    ) -> Option<(IndexId, Vec<u8>)> {
        // Each pack's number in this table, u32::MAX for the other kind's.
        let mut numbers = vec![u32::MAX; self.packs.len()];
        let mut packs = Vec::new();
        for (n, (id, k)) in self.packs.iter().enumerate() {
            if kind.is_none_or(|kind| kind == *k) {
                numbers[n] = packs.len() as u32;
                packs.push((*id, *k));
            }
        }
        let mut last: Option<&BlobId> = None;
        let entries: Vec<_> = self
            .entries
            .iter()
            .filter(|e| numbers[e.1 as usize] != u32::MAX)
            .filter(|e| last.replace(&e.0) != Some(&e.0))
            .collect();
        if entries.is_empty() {
            return None;
        }
        let mut out =
            Vec::with_capacity(HEAD + packs.len() * PACK_REC + entries.len() * ENTRY_REC + MAC_LEN);
        out.extend_from_slice(&head_record(version, packs.len(), entries.len() as u64));
        for (id, kind) in &packs {
            out.extend_from_slice(&pack_record(id, *kind));
        }
        for &&(id, pack, off, len, raw) in &entries {
            out.extend_from_slice(&entry_record(&id, [numbers[pack as usize], off, len, raw]));
        }
        let mac = key.mac(&out);
        out.extend_from_slice(&mac);
        Some((IndexId(file_hash(&out)), out))
    }
}
