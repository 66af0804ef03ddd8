//! A directory's listing for the backup walk: its entries' names in byte
//! order, the order of a tree's nodes.
//!
//! The names are held end to end in one buffer, with four bytes more a
//! name for where each ends (a directory entry of the standard library,
//! with its name copied out, cost about 100 bytes a name). Past
//! [`RUN_BYTES`] the names gathered so far are sorted and spilled as a
//! run to an unnamed temporary file (see [`crate::mmap::spool_file`]),
//! and the runs are merged as the walk takes the names: a directory of
//! any number of entries costs the walk a bounded amount of memory. The
//! runs hold nothing the source folder does not show to anyone who can
//! list it, go with their descriptors, and are readable by this user
//! alone.

use crate::escape::Show;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::{CStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use crate::names::NameList;

/// Bytes of names (and, per name, eight bytes of bookkeeping) gathered in
/// memory before they are spilled as a sorted run: about 350,000 names
/// of 16 bytes.
pub(super) const RUN_BYTES: usize = 8 << 20;

/// Read buffer of each spilled run while they are merged.
const RUN_BUFFER: usize = 16 << 10;

/// A directory's names as they are listed; [`Listing::sorted`] gives
/// them in order.
pub(super) struct Listing {
    gathered: NameList,
    runs: Vec<File>,
    len: usize,
    /// Spill past this footprint; `usize::MAX` once a spill failed (the
    /// rest then stays in memory, as a listing would without runs).
    run_bytes: usize,
}

impl Listing {
    /// An empty listing.
    pub(super) fn new() -> Listing {
        Listing {
            gathered: NameList::default(),
            runs: Vec::new(),
            len: 0,
            run_bytes: crate::fault::listing_run().unwrap_or(RUN_BYTES),
        }
    }

    /// Lists the open folder `dir` (whose path, for reports, is `path`)
    /// through its descriptor, never by path: a folder swapped for a
    /// symlink since it was opened is not followed. `report` hears of
    /// what the listing could not read, and is called only when entries
    /// are left out: the listing ended early.
    pub(super) fn read(
        dir: BorrowedFd<'_>,
        path: &Path,
        report: &dyn Fn(String),
    ) -> io::Result<Listing> {
        let mut stream = Stream::open(dir)?;
        let mut listing = Listing::new();
        let fail_after = crate::fault::list_fails(path).then_some(1);
        loop {
            if fail_after.is_some_and(|n| listing.len() >= n) {
                let e = io::Error::from_raw_os_error(libc::EIO);
                report(format!(
                    "{}: cannot list: {e}{}",
                    path.shown(),
                    super::STORED_CUT_SHORT
                ));
                break;
            }
            let name = match stream.next() {
                Ok(Some(name)) => name,
                Ok(None) => break,
                Err(e) => {
                    report(format!(
                        "{}: cannot list: {e}{}",
                        path.shown(),
                        super::STORED_CUT_SHORT
                    ));
                    break;
                }
            };
            if name == b"." || name == b".." {
                continue;
            }
            if !listing.push(name) {
                report(format!(
                    "{}: cannot list: 4 GiB of names and no temporary folder to \
                     spill them to{}",
                    path.shown(),
                    super::STORED_CUT_SHORT
                ));
                break;
            }
        }
        Ok(listing)
    }

    /// Adds `name`; false, and nothing added, when memory holds 4 GiB of
    /// names and they cannot be spilled.
    pub(super) fn push(&mut self, name: &[u8]) -> bool {
        if !self.gathered.push(name) {
            // Four gigabytes of names must spill.
            self.spill();
            if !self.gathered.push(name) {
                return false;
            }
        }
        self.len += 1;
        // The names, and per name its end and its place in the order.
        if self.gathered.bytes() + 8 * self.gathered.len() >= self.run_bytes {
            self.spill();
        }
        true
    }

    /// How many names it holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// How many runs it spilled.
    #[cfg(test)]
    fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Writes the gathered names, sorted, to a run of their own.
    fn spill(&mut self) {
        if self.gathered.is_empty() {
            return;
        }
        match self.write_run() {
            Ok(run) => {
                self.runs.push(run);
                self.gathered.clear();
            }
            Err(_) => self.run_bytes = usize::MAX,
        }
    }

    fn write_run(&self) -> io::Result<File> {
        let mut run = BufWriter::with_capacity(RUN_BUFFER, crate::mmap::spool_file()?);
        for i in self.gathered.order() {
            let name = self.gathered.name(i as usize);
            let len = u16::try_from(name.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a name of 64 KiB"))?;
            run.write_all(&len.to_le_bytes())?;
            run.write_all(name)?;
        }
        let mut file = run.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(file)
    }

    /// The names in byte order. A run that cannot be read back ends the
    /// listing there, and `report` hears why.
    pub(super) fn sorted(self, report: &dyn Fn(String)) -> Sorted<'_> {
        let gathered = self.gathered;
        let order = gathered.order();
        let mut sorted = Sorted {
            gathered,
            order: order.into_iter(),
            runs: self
                .runs
                .into_iter()
                .map(|f| BufReader::with_capacity(RUN_BUFFER, f))
                .collect(),
            heads: BinaryHeap::new(),
            report,
            failed: false,
        };
        if !sorted.runs.is_empty() {
            // Every source's first name goes on the heap; the gathered
            // names are the source numbered after the runs.
            for src in 0..=sorted.runs.len() {
                sorted.refill(src);
            }
        }
        sorted
    }
}

/// A directory stream (`fdopendir`) of a folder opened for reading
/// through a descriptor of it (a walk's handle, or, for a mirror's
/// removals, the folder being emptied).
pub(crate) struct Stream(std::ptr::NonNull<libc::DIR>);

impl Stream {
    pub(crate) fn open(dir: BorrowedFd<'_>) -> io::Result<Stream> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: "." is NUL-terminated; the descriptor is borrowed, so
        // open for the call.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), c".".as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a directory descriptor owned here; the stream
        // takes it over when made.
        match std::ptr::NonNull::new(unsafe { libc::fdopendir(fd) }) {
            Some(stream) => Ok(Stream(stream)),
            None => {
                let e = io::Error::last_os_error();
                // SAFETY: `fd` is still owned here, and closed once.
                unsafe { libc::close(fd) };
                Err(e)
            }
        }
    }

    /// The next entry's name, `None` at the end.
    pub(crate) fn next(&mut self) -> io::Result<Option<&[u8]>> {
        // SAFETY: `readdir` tells its end from an error by `errno` alone,
        // so it is cleared first; the stream is open until dropped; the
        // entry it returns is valid until the next call on the stream,
        // which the name's borrow of `self` rules out.
        unsafe {
            *libc::__errno_location() = 0;
            let entry = libc::readdir(self.0.as_ptr());
            if entry.is_null() {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(0) => Ok(None),
                    _ => Err(e),
                };
            }
            Ok(Some(CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes()))
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: the stream is open and closed once, here.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

/// A [`Listing`]'s names in byte order.
pub(super) struct Sorted<'r> {
    gathered: NameList,
    order: std::vec::IntoIter<u32>,
    runs: Vec<BufReader<File>>,
    /// With runs: each source's next name, least first.
    heads: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    report: &'r dyn Fn(String),
    failed: bool,
}

impl Sorted<'_> {
    /// Puts source `src`'s next name on the heap, if it has one.
    fn refill(&mut self, src: usize) {
        let next = match self.runs.get_mut(src) {
            Some(run) => match read_name(run) {
                Ok(name) => name,
                Err(e) => {
                    (self.report)(format!(
                        "a spilled run of a directory's listing cannot be read back, \
                         the directory's remaining entries are left out: {e}"
                    ));
                    self.failed = true;
                    None
                }
            },
            None => self
                .order
                .next()
                .map(|i| self.gathered.name(i as usize).to_vec()),
        };
        if let Some(name) = next {
            self.heads.push(Reverse((name, src)));
        }
    }
}

/// The next name of a run: its length in two bytes, then its bytes;
/// `None` at the run's end.
fn read_name(run: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match run.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut name = vec![0u8; u16::from_le_bytes(len) as usize];
    run.read_exact(&mut name)?;
    Ok(Some(name))
}

impl Iterator for Sorted<'_> {
    type Item = OsString;

    /// A name listed twice (an entry renamed over or made again while
    /// the directory was listed, which some filesystems then list under
    /// both offsets) is given once: a tree holds each name once.
    fn next(&mut self) -> Option<OsString> {
        if self.failed {
            return None;
        }
        if self.runs.is_empty() {
            let i = self.order.next()? as usize;
            while let Some(&j) = self.order.as_slice().first() {
                if self.gathered.name(j as usize) != self.gathered.name(i) {
                    break;
                }
                self.order.next();
            }
            return Some(OsString::from_vec(self.gathered.name(i).to_vec()));
        }
        let Reverse((name, src)) = self.heads.pop()?;
        self.refill(src);
        // The same name again, from this run or another, is next on the
        // heap.
        while let Some(Reverse((next, _))) = self.heads.peek() {
            if *next != name {
                break;
            }
            let Some(Reverse((_, src))) = self.heads.pop() else {
                break;
            };
            self.refill(src);
        }
        Some(OsString::from_vec(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<Vec<u8>> {
        // Scrambled, of lengths 1 to 40, some sharing long prefixes.
        (0..n)
            .map(|i| {
                let k = (i * 7919) % n;
                let mut name = format!("{k:x}").into_bytes();
                name.resize(1 + (k * 31) % 40, b'a' + (k % 26) as u8);
                name.extend_from_slice(format!("-{k}").as_bytes());
                name
            })
            .collect()
    }

    fn listed(names: &[Vec<u8>], run_bytes: usize) -> (Vec<Vec<u8>>, usize) {
        let mut l = Listing::new();
        l.run_bytes = run_bytes;
        for n in names {
            assert!(l.push(n));
        }
        assert_eq!(l.len(), names.len());
        let runs = l.runs();
        let out = l
            .sorted(&|m| panic!("unexpected report: {m}"))
            .map(OsString::into_vec)
            .collect();
        (out, runs)
    }

    #[test]
    fn names_come_back_in_byte_order() {
        let names = names(5000);
        let mut want = names.clone();
        want.sort();
        let (got, runs) = listed(&names, RUN_BYTES);
        assert_eq!(runs, 0, "a small listing stays in memory");
        assert_eq!(got, want);
    }

    #[test]
    fn spilled_runs_merge_in_byte_order() {
        let names = names(5000);
        let mut want = names.clone();
        want.sort();
        // About 4 KiB a run: a dozen or more runs and a remainder.
        let (got, runs) = listed(&names, 4096);
        assert!(runs > 10, "{runs} runs");
        assert_eq!(got, want);
        // Every name its own run.
        let (got, runs) = listed(&names[..300], 1);
        assert_eq!(runs, 300);
        assert_eq!(got, {
            let mut w = names[..300].to_vec();
            w.sort();
            w
        });
    }

    /// A name listed twice comes back once, from memory and from runs
    /// (the same run or two).
    #[test]
    fn a_name_listed_twice_comes_back_once() {
        let names: Vec<Vec<u8>> = ["b", "a", "b"].map(|n| n.as_bytes().to_vec()).to_vec();
        let want = [b"a".to_vec(), b"b".to_vec()];
        for run_bytes in [RUN_BYTES, 20, 16, 1] {
            let (got, runs) = listed(&names, run_bytes);
            assert_eq!(got, want, "{runs} runs");
        }
        assert_eq!(listed(&names, 1).1, 3, "a run a name");
        assert_eq!(listed(&names, 20).1, 1, "both in one run");
        assert_eq!(listed(&names, 16).1, 1, "one in a run, one in memory");
        let mut many = names.clone();
        many.extend(["c", "b", "a", "c"].map(|n| n.as_bytes().to_vec()));
        for run_bytes in [RUN_BYTES, 20, 1] {
            let (got, _) = listed(&many, run_bytes);
            assert_eq!(got, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        }
    }

    #[test]
    fn a_listing_of_nothing_is_empty() {
        let (got, runs) = listed(&[], 1);
        assert!(got.is_empty());
        assert_eq!(runs, 0);
    }

    #[test]
    fn a_run_cut_short_ends_the_listing_with_a_report() {
        let mut l = Listing::new();
        l.run_bytes = 64;
        for n in names(100) {
            assert!(l.push(&n));
        }
        assert!(l.runs() > 1);
        // The first run loses its last bytes, as a short read would.
        let len = l.runs[0].metadata().unwrap().len();
        l.runs[0].set_len(len - 1).unwrap();
        let reports = std::sync::Mutex::new(Vec::new());
        let report = |m: String| reports.lock().unwrap().push(m);
        let got: Vec<OsString> = l.sorted(&report).collect();
        assert!(got.len() < 100, "{} names", got.len());
        let reports = reports.into_inner().unwrap();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(reports[0].contains("cannot be read back"), "{reports:?}");
    }
}
