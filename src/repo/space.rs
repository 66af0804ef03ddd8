//! Room for maintenance on a full filesystem.
//!
//! A backup that fills the repository's filesystem fails and publishes
//! nothing; what frees space again, `forget` and `gc`, must write too: a
//! lock file, gc's new index table, the packs it repacks. With not a byte
//! free they could not start, and the only way out would be deleting
//! repository files by hand. So a local repository keeps a file,
//! `reserve`, whose blocks are allocated and hold nothing: the size of
//! the index and a pack ([`wanted`]). Backups never use it. A command
//! whose lock cannot be written for want of space gives it back
//! ([`release`]), as does one that frees space, once it holds the
//! exclusive lock, where the filesystem has less than that free
//! ([`release_if_short`]); commands that write top it up again at the
//! end where the space is there ([`replenish`]), or to the least worth
//! having (the index and 256 KiB) where only that is. Stores without a size
//! limit (object stores) keep none.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::FileKind;
use crate::error::Result;
use crate::repo::Repository;

/// The bytes of reserve this process gave back (see [`replenish`]).
static RELEASED: AtomicU64 = AtomicU64::new(0);

/// The size the reserve should have: room for gc to write an index as
/// large as the whole index is now, and a pack's worth more for lock
/// files and slack. Repacking needs more; gc leaves it for later where
/// the room is not there (see [`crate::gc::fit_to_space`]).
pub fn wanted(repo: &Repository) -> Result<u64> {
    Ok(u64::from(repo.config().pack_size) + index_bytes(repo)?)
}

/// The bytes of the repository's index tables.
fn index_bytes(repo: &Repository) -> Result<u64> {
    Ok(repo
        .backend()
        .list_sizes(FileKind::Index)?
        .iter()
        .map(|(_, n)| n)
        .sum())
}

/// Slack beside the index in the least reserve (see [`least`]): lock
/// files, a snapshot file's removal, the filesystem's own blocks.
const LEAST_SLACK: u64 = 256 << 10;

/// The least reserve worth setting aside where [`wanted`] does not fit:
/// room for what `forget` and a gc that only deletes write (their locks,
/// and an index as large as the whole index is now), without a pack to
/// repack into. A filesystem smaller than a pack beside the repository
/// then still keeps `forget` and `gc` from being locked out once full.
fn least(repo: &Repository, wanted: u64) -> Result<u64> {
    Ok(wanted.min(index_bytes(repo)? + LEAST_SLACK))
}

/// Gives the reserve back; returns its bytes (0 where there was none).
/// Called where a command's lock could not be written for want of
/// space.
pub fn release(repo: &Repository) -> Result<u64> {
    let backend = repo.backend();
    match backend.reserve()? {
        Some(held) if held > 0 => {
            backend.set_reserve(0)?;
            RELEASED.fetch_add(held, Ordering::Relaxed);
            Ok(held)
        }
        _ => Ok(0),
    }
}

/// Gives the reserve back where the store has less than [`wanted`] free;
/// returns the bytes given back (0 when none were). Called by a command
/// that frees space once it holds the exclusive lock, so that no backup
/// running beside it takes the space meant for it.
pub fn release_if_short(repo: &Repository) -> Result<u64> {
    let backend = repo.backend();
    match (backend.reserve()?, backend.free_space()?) {
        (Some(held), Some(free)) if held > 0 && free < wanted(repo)? => {
            backend.set_reserve(0)?;
            RELEASED.fetch_add(held, Ordering::Relaxed);
            Ok(held)
        }
        _ => Ok(0),
    }
}

/// What [`replenish`] left.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserve {
    /// The reserve is whole, or the store keeps none.
    Whole,
    /// The filesystem has `free` bytes more, too few to set aside
    /// `wanted`, of which `held` are (as much as there was room for).
    Short { held: u64, wanted: u64, free: u64 },
}

/// Grows the reserve to [`wanted`] where the store has the space free.
pub fn replenish(repo: &Repository) -> Result<Reserve> {
    let backend = repo.backend();
    let Some(held) = backend.reserve()? else {
        return Ok(Reserve::Whole);
    };
    let wanted = wanted(repo)?;
    if held >= wanted {
        return Ok(Reserve::Whole);
    }
    let Some(free) = backend.free_space()? else {
        return Ok(Reserve::Whole);
    };
    if free >= wanted - held {
        match backend.set_reserve(wanted) {
            Ok(()) => return Ok(Reserve::Whole),
            // The filesystem's own blocks, or others writing meanwhile,
            // took what it said was free.
            Err(e) if e.is_storage_full() => {}
            Err(e) => return Err(e),
        }
    }
    // Short of the whole: what this process gave back is set aside again
    // as far as the filesystem has it, but for a sixteenth of that (256
    // KiB at most, so that a reserve set aside again night after night
    // on a full filesystem hardly shrinks) left for the filesystem's own
    // blocks.
    // A command that gave the reserve back on a full filesystem and freed
    // nothing then leaves the next one about what it had; dropping it left
    // the next none, as whatever wrote meanwhile took the space. Space it
    // did not give back is not taken.
    let free = backend.free_space()?.unwrap_or(free);
    let released = RELEASED.load(Ordering::Relaxed);
    let spare = free - (free / 16).min(256 << 10);
    let mut some = held + released.min(spare);
    // A reserve short of the least worth having (none at `init` on a
    // small filesystem) grows to it where the room is there: until
    // December 2026 such a filesystem kept none, and once full, forget
    // and gc could not take their locks.
    let least = least(repo, wanted)?;
    if some < least && least - held <= spare {
        some = least;
    }
    if some > held && backend.set_reserve(some).is_ok() {
        let free = backend.free_space()?.unwrap_or(0);
        return Ok(Reserve::Short {
            held: some,
            wanted,
            free,
        });
    }
    Ok(Reserve::Short { held, wanted, free })
}
