//! Reading packs in full, on every core: each blob authenticated,
//! decompressed and re-hashed, and each index entry naming a pack read
//! compared with that pack's own header.

use super::*;

/// What reading every pack found: the blobs that fail to authenticate,
/// decompress or re-hash, and the packs that could not be read at all.
#[derive(Debug, Default)]
pub struct BadBlobs {
    /// Each bad copy, as (blob, the pack holding it), with why it fails.
    pub bad: HashMap<(BlobId, PackId), String>,
    /// Packs whose read failed (a timeout after every retry, a refused
    /// read), with the error: none of their blobs was checked.
    pub unread: Vec<(PackId, String)>,
    /// Packs whose content does not match their name though their header
    /// and every blob in them authenticate (renamed by hand, or their
    /// contents swapped): intact, under another name.
    pub misnamed: Vec<PackId>,
    /// Every pack read whose bytes do not hash to its name: damaged, or
    /// misnamed. A host's cache may hold an intact copy of one.
    pub not_their_hash: Vec<PackId>,
}

/// Reads every pack, as `verify --read-data` does, and returns what it
/// found bad. For `repair snapshots --read-data` and `repair index
/// --read-data`.
pub fn bad_blobs(repo: &Repository, workers: usize) -> Result<BadBlobs> {
    let mut packs = HashMap::new();
    for (name, size) in repo.backend().list_sizes(FileKind::Pack)? {
        if is_hex_name(&name) {
            packs.insert(PackId::from_hex(&name)?, size);
        }
    }
    let mut report = VerifyReport::default();
    let read = read_packs(repo, &packs, Subset::All, 0, workers, false, &mut report)?;
    Ok(BadBlobs {
        bad: read.bad,
        unread: read.unread,
        misnamed: read.misnamed,
        not_their_hash: read.not_their_hash,
    })
}

/// What [`read_packs`] found.
pub(super) struct PacksRead {
    /// The bad (blob, pack) pairs, with why each fails.
    pub bad: HashMap<(BlobId, PackId), String>,
    /// Packs that could not be read, with the error.
    pub unread: Vec<(PackId, String)>,
    /// Packs intact under another name (see [`BadBlobs::misnamed`]).
    pub misnamed: Vec<PackId>,
    /// Packs whose bytes do not hash to their name.
    pub not_their_hash: Vec<PackId>,
}

/// What mends a damaged copy of a tree that an index entry names: a
/// backup stores a folder's tree again only where the folder is as it was
/// (its entries and their metadata), which a changed source is not.
const DAMAGED_TREE_MENDS: &str = "`cairn repair index --read-data` drops it from the index; \
     a backup then stores the folder's tree again only where the folder is unchanged since, \
     and `cairn repair snapshots` writes copies of the snapshots using it without what is lost";

/// What mends a damaged copy of a blob that an index entry names.
const DAMAGED_BLOB_MENDS: &str = "`cairn repair index --read-data` drops it from the index, \
     and the next backup then stores its content again where the source still has it \
     (mending every snapshot that uses it)";

/// Reads the selected packs in parallel; returns the bad (blob, pack)
/// pairs and the packs it could not read, or the store's error once it
/// stops answering (a transient error, retries spent). Each bad copy is an error of its
/// pack, naming what mends it. With `check_index`, every index entry
/// naming a pack read is compared with that pack's header, and each that
/// differs (the blob not listed there, or at another offset, length, raw
/// length or kind) is an error of its table: a restore reads where the
/// index says. A bad copy that no index entry names (one `repair index
/// --read-data` dropped) is then only a warning: nothing reads it, and gc
/// removes it with the rest of the pack's unused bytes.
pub(super) fn read_packs(
    repo: &Repository,
    packs: &HashMap<PackId, u64>,
    subset: Subset,
    day: u64,
    workers: usize,
    check_index: bool,
    report: &mut VerifyReport,
) -> Result<PacksRead> {
    let mut todo: Vec<PackId> = packs
        .keys()
        .filter(|p| subset.contains(p, day))
        .copied()
        .collect();
    todo.sort();
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        workers
    };
    let blobs = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let bad: Mutex<HashMap<(BlobId, PackId), String>> = Mutex::new(HashMap::new());
    let errors: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    let warnings: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    let unread: Mutex<Vec<(PackId, String)>> = Mutex::new(Vec::new());
    let misnamed_packs: Mutex<Vec<PackId>> = Mutex::new(Vec::new());
    let not_their_hash: Mutex<Vec<PackId>> = Mutex::new(Vec::new());
    // A store that does not answer (a transient error, retries spent)
    // ends the reading: every pack after would wait for it in turn, and
    // none of them is damaged for it.
    let outage: Mutex<Option<Error>> = Mutex::new(None);
    let index = repo.index()?;
    // Another host's cache may hold a pack of trees damaged here.
    let remote = repo.backend().prefers_ranges();
    // The index entries naming each pack to read, as (table, entry): 8
    // bytes an entry, their locations read again from the mapped tables
    // as each pack is checked.
    let mut indexed: HashMap<PackId, Vec<(u32, u32)>> = HashMap::new();
    if check_index {
        let wanted: HashSet<&PackId> = todo.iter().collect();
        for (t, table) in index.tables().iter().enumerate() {
            for j in 0..table.len() {
                if let Ok((_, loc)) = table.location_at(j) {
                    if wanted.contains(&loc.pack) {
                        indexed
                            .entry(loc.pack)
                            .or_default()
                            .push((t as u32, j as u32));
                    }
                }
            }
        }
    }
    // Packs mapped from files are read in ahead of the workers (see
    // `crate::prefetch`).
    let spans = if repo.backend().prefers_ranges() {
        Vec::new()
    } else {
        todo.iter().map(|p| (p.to_hex(), 0..packs[p])).collect()
    };
    let queue = crate::prefetch::Queue::new(repo.backend(), FileKind::Pack, spans);
    std::thread::scope(|s| {
        queue.start(s, crate::prefetch::AHEAD);
        for _ in 0..workers {
            s.spawn(|| {
                let taker = queue.taker();
                while let Some(pack_id) = todo.get(taker.take()) {
                    let what = format!("pack {}", pack_id.short());
                    let data = match repo.backend().read(FileKind::Pack, &pack_id.to_hex()) {
                        Ok(d) => d,
                        // Dropping the taker ends the queue for every worker.
                        Err(e) if e.is_store_unavailable() => {
                            if let Ok(mut o) = outage.lock() {
                                o.get_or_insert(e);
                            }
                            break;
                        }
                        // No pack's bytes at all (a symlink to a device
                        // or a FIFO in its place): every blob the index
                        // places in it is lost, as in a pack cut to
                        // nothing, not left unchecked.
                        Err(e @ Error::Corrupt { .. }) => {
                            if let Ok(mut v) = errors.lock() {
                                v.push(problem(&what, e.to_string()));
                            }
                            let why = e.to_string();
                            let placed = index.tables().iter().flat_map(|t| {
                                (0..t.len()).filter_map(move |j| t.location_at(j).ok())
                            });
                            if let Ok(mut b) = bad.lock() {
                                for (id, _) in placed.filter(|(_, l)| l.pack == *pack_id) {
                                    b.insert((id, *pack_id), why.clone());
                                }
                            }
                            continue;
                        }
                        Err(e) => {
                            if let Ok(mut v) = errors.lock() {
                                v.push(problem(&what, e.to_string()));
                            }
                            if let Ok(mut v) = unread.lock() {
                                v.push((*pack_id, e.to_string()));
                            }
                            continue;
                        }
                    };
                    if let crate::backend::Data::Mapped(m) = &data {
                        m.advise_sequential();
                    }
                    bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    // The bad copies, with why, and whether each is a
                    // tree's: as the pack's header says, or without one,
                    // the index entry placing it here.
                    let mut local_bad: Vec<(BlobId, String, bool)> = Vec::new();
                    // Blobs an index entry places in this pack, with
                    // `check_index`: a bad copy none names is read by nothing.
                    let named_here: Option<HashSet<BlobId>> = check_index.then(|| {
                        indexed
                            .get(pack_id)
                            .map_or(&[][..], Vec::as_slice)
                            .iter()
                            .filter_map(|&(t, j)| {
                                let table = index.tables().get(t as usize)?;
                                table.location_at(j as usize).ok().map(|(id, _)| id)
                            })
                            .collect()
                    });
                    let misnamed = file_hash(&data) != pack_id.0;
                    if misnamed {
                        if let Ok(mut n) = not_their_hash.lock() {
                            n.push(*pack_id);
                        }
                    }
                    let mut header_read = false;
                    // Without a header: the entries placing a blob here.
                    let mut placed = 0usize;
                    let mut trees_placed = false;
                    match pack::decode_header(&data, repo.key(), &what) {
                        Ok(header) => {
                            header_read = true;
                            let of_trees = header.kind == pack::BlobKind::Tree;
                            for e in &header.entries {
                                let at = e.offset as usize;
                                let sealed = &data[at..at + e.length as usize];
                                blobs.fetch_add(1, Ordering::Relaxed);
                                if let Err(err) = pack::open_blob_with(
                                    repo.key(),
                                    &e.id,
                                    sealed,
                                    e.raw_length,
                                    &what,
                                    |_| (),
                                ) {
                                    local_bad.push((e.id, err.to_string(), of_trees));
                                }
                            }
                            let (wrong, unread_here) = index_mismatches(
                                &index,
                                pack_id,
                                &header,
                                indexed.get(pack_id).map_or(&[], Vec::as_slice),
                            );
                            if !wrong.is_empty() {
                                if let Ok(mut v) = errors.lock() {
                                    v.extend(wrong);
                                }
                            }
                            // Named as damage to the files using them (the
                            // table's problem is said above).
                            if let Ok(mut b) = bad.lock() {
                                for (id, why) in unread_here {
                                    b.entry((id, *pack_id)).or_insert(why);
                                }
                            }
                        }
                        Err(err) => {
                            // Without a header, check each blob the index places here.
                            for t in index.tables() {
                                for j in 0..t.len() {
                                    let Ok((id, loc)) = t.location_at(j) else {
                                        continue;
                                    };
                                    if loc.pack != *pack_id {
                                        continue;
                                    }
                                    let end = loc.offset as usize + loc.length as usize;
                                    let ok = end <= data.len()
                                        && pack::open_blob_with(
                                            repo.key(),
                                            &id,
                                            &data[loc.offset as usize..end],
                                            loc.raw_length,
                                            &what,
                                            |_| (),
                                        )
                                        .is_ok();
                                    blobs.fetch_add(1, Ordering::Relaxed);
                                    placed += 1;
                                    trees_placed |= loc.kind == pack::BlobKind::Tree;
                                    if !ok {
                                        local_bad.push((
                                            id,
                                            "unreadable".into(),
                                            loc.kind == pack::BlobKind::Tree,
                                        ));
                                    }
                                }
                            }
                            let mends = if placed > 0 {
                                let elsewhere = match trees_placed && remote {
                                    true => super::TREES_ELSEWHERE,
                                    false => "",
                                };
                                format!(
                                    "`cairn repair index` writes the pack again from the blobs \
                                     the index places in it{elsewhere}"
                                )
                            } else {
                                "no index entry names a blob in it, so nothing reads it, and \
                                 `cairn gc` removes it"
                                    .to_string()
                            };
                            // Of a pack nothing reads, a warning, as for the
                            // damaged copies no entry names.
                            let list = if placed > 0 { &errors } else { &warnings };
                            if let Ok(mut v) = list.lock() {
                                v.push(problem(
                                    &what,
                                    format!("header unreadable: {err}; {mends}"),
                                ));
                            }
                        }
                    }
                    let named = |id: &BlobId| named_here.as_ref().is_none_or(|n| n.contains(id));
                    if misnamed {
                        // Damage found only in copies nothing reads (as
                        // `repair index --read-data` leaves them) changes
                        // the pack's hash too, and is no more than they are.
                        let unread_only = (header_read
                            && !local_bad.is_empty()
                            && local_bad.iter().all(|(id, ..)| !named(id)))
                            || (!header_read && placed == 0);
                        // Every blob opens: the pack is intact, under
                        // another name than its content's.
                        let intact = header_read && local_bad.is_empty();
                        if intact {
                            if let Ok(mut m) = misnamed_packs.lock() {
                                m.push(*pack_id);
                            }
                        }
                        let (list, message) = if intact {
                            (
                                &errors,
                                "content does not match its name, though its header and every \
                                 blob in it authenticate (renamed, or its content swapped with \
                                 another pack's?); `cairn repair index --read-data` copies its \
                                 blobs into a pack named by its content, and removes it",
                            )
                        } else if unread_only && !header_read {
                            (
                                &warnings,
                                "content does not match its name: no index entry names a \
                                 blob in it",
                            )
                        } else if unread_only {
                            (
                                &warnings,
                                "content does not match its name: the damage lies in blobs no \
                                 index entry names",
                            )
                        } else {
                            (&errors, "content does not match its name (damaged)")
                        };
                        if let Ok(mut v) = list.lock() {
                            v.push(problem(&what, message));
                        }
                    }
                    if !local_bad.is_empty() {
                        for (id, why, of_trees) in &local_bad {
                            let (list, message) = if named(id) {
                                let mends = if *of_trees {
                                    DAMAGED_TREE_MENDS
                                } else {
                                    DAMAGED_BLOB_MENDS
                                };
                                let kind = if *of_trees { "tree" } else { "blob" };
                                // Another host's cache may hold it intact.
                                let elsewhere = match *of_trees && remote {
                                    true => super::TREES_ELSEWHERE,
                                    false => "",
                                };
                                let m = format!("{kind} {}: {why}; {mends}{elsewhere}", id.short());
                                (&errors, m)
                            } else {
                                let m = format!(
                                    "blob {}: {why}; no index entry names this copy, so \
                                     nothing reads it, and `cairn gc` removes it once it \
                                     rewrites the pack (until then `cairn repair index` \
                                     without --read-data indexes it again)",
                                    id.short()
                                );
                                (&warnings, m)
                            };
                            if let Ok(mut v) = list.lock() {
                                v.push(problem(&what, message));
                            }
                        }
                        if let Ok(mut b) = bad.lock() {
                            for (id, why, _) in local_bad {
                                b.insert((id, *pack_id), why);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = outage.into_inner().ok().flatten() {
        return Err(e);
    }
    report.packs_read = todo.len();
    report.blobs_read = blobs.into_inner();
    report.bytes_read = bytes.into_inner();
    report
        .errors
        .extend(errors.into_inner().unwrap_or_default());
    report
        .warnings
        .extend(warnings.into_inner().unwrap_or_default());
    Ok(PacksRead {
        bad: bad.into_inner().unwrap_or_default(),
        unread: unread.into_inner().unwrap_or_default(),
        misnamed: misnamed_packs.into_inner().unwrap_or_default(),
        not_their_hash: not_their_hash.into_inner().unwrap_or_default(),
    })
}

/// The index entries of `pack` (`entries`, as (table, entry) in `index`)
/// that its `header` contradicts, as problems of their tables naming
/// what mends them, and each such blob with why: a read where the index
/// puts it fails (the pack holds other content than the index says, as
/// one overwritten by another does), so the files using it are damaged.
fn index_mismatches(
    index: &crate::index::IndexSet,
    pack: &PackId,
    header: &pack::PackHeader,
    entries: &[(u32, u32)],
) -> (Vec<Problem>, Vec<(BlobId, String)>) {
    let mut unread = Vec::new();
    if entries.is_empty() {
        return (Vec::new(), unread);
    }
    let listed: HashMap<BlobId, &pack::PackEntry> =
        header.entries.iter().map(|e| (e.id, e)).collect();
    let place = |kind: pack::BlobKind, offset: u32, length: u32, raw: u32| {
        format!("{kind:?} blob at offset {offset}, {length} bytes ({raw} plain)")
    };
    let mut out = Vec::new();
    for &(t, j) in entries {
        let Some(table) = index.tables().get(t as usize) else {
            continue;
        };
        let Ok((id, loc)) = table.location_at(j as usize) else {
            continue;
        };
        let indexed = place(loc.kind, loc.offset, loc.length, loc.raw_length);
        let why = match listed.get(&id) {
            None => {
                format!("the index puts it there ({indexed}), the pack's header does not list it")
            }
            Some(e) => {
                let own = place(header.kind, e.offset, e.length, e.raw_length);
                if own == indexed {
                    continue;
                }
                format!("the index says {indexed}, the pack's header {own}")
            }
        };
        unread.push((id, format!("not where the index puts it: {why}")));
        out.push(problem(
            format!("index {}", table.id().short()),
            format!(
                "entry of blob {} in pack {}: {why}; `cairn repair index` rebuilds the index \
                 from the packs",
                id.short(),
                pack.short()
            ),
        ));
    }
    (out, unread)
}
