//! Reading the packs a restore needs: mapped whole from a local store,
//! or only the ranges holding wanted blobs from a remote one.

use super::*;

/// Gaps between needed blobs up to this size are fetched rather than split
/// into another request.
pub(super) const RANGE_GAP: u64 = 1 << 20;

/// The bytes of a pack that a restore needs: the whole file (local
/// backends map it), or, on remote stores, only the ranges holding the
/// wanted blobs, neighbours merged into one request.
pub(super) enum PackBytes {
    Whole(Data),
    Ranges(Vec<(u64, Vec<u8>)>),
}

impl PackBytes {
    /// Fetches what `blobs` (sorted by offset) need of `pack`.
    pub(super) fn fetch(
        backend: &dyn crate::backend::Backend,
        pack: &PackId,
        blobs: &[(BlobId, Location)],
    ) -> Result<PackBytes> {
        let name = pack.to_hex();
        if !backend.prefers_ranges() {
            return backend.read(FileKind::Pack, &name).map(PackBytes::Whole);
        }
        // Each span, start and end, with the ranges of the blobs it holds.
        type Span = (u64, u64, Vec<(u64, u64)>);
        let mut spans: Vec<Span> = Vec::new();
        for (_, loc) in blobs {
            let (start, end) = (
                u64::from(loc.offset),
                u64::from(loc.offset) + u64::from(loc.length),
            );
            match spans.last_mut() {
                Some(last) if start <= last.1 + RANGE_GAP => {
                    last.1 = last.1.max(end);
                    last.2.push((start, end));
                }
                _ => spans.push((start, end, vec![(start, end)])),
            }
        }
        let mut out = Vec::with_capacity(spans.len());
        for (start, end, members) in spans {
            match backend.read_range(FileKind::Pack, &name, start, (end - start) as usize) {
                Ok(bytes) => out.push((start, bytes)),
                // A span the store would not hand over whole, for a reason
                // that is not the store's (a pack cut short within it): each
                // of its blobs alone, so that those the pack still holds are
                // read, as a local store's map of the whole pack holds them.
                // Until December 2026 the span failed whole, and the intact
                // blobs before the cut with it.
                Err(e)
                    if members.len() > 1
                        && !e.is_transient()
                        && !e.is_not_found()
                        && !e.is_read_refused() =>
                {
                    let before = out.len();
                    for (start, end) in members {
                        let one = (end - start) as usize;
                        if let Ok(bytes) = backend.read_range(FileKind::Pack, &name, start, one) {
                            out.push((start, bytes));
                        }
                    }
                    if out.len() == before {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(PackBytes::Ranges(out))
    }

    /// The bytes of `range` of the pack, if fetched and present.
    pub(super) fn get(&self, range: std::ops::Range<usize>) -> Option<&[u8]> {
        match self {
            PackBytes::Whole(d) => d.get(range),
            PackBytes::Ranges(r) => {
                let offset = range.start as u64;
                let i = r
                    .partition_point(|(start, _)| *start <= offset)
                    .checked_sub(1)?;
                let (start, bytes) = &r[i];
                let at = (offset - start) as usize;
                bytes.get(at..at.checked_add(range.len())?)
            }
        }
    }
}
