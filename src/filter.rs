//! Include and exclude patterns for backup and restore.
//!
//! Patterns are globs (`*`, `?`, `[...]`, `**`), where `*` does not cross
//! `/` and `**` does. Which part of an entry's path a pattern is matched
//! against depends on where its `/`s are:
//!
//! - no `/`: the entry's name, at any depth (`*.log`, `node_modules`);
//! - a leading `/`: the entry's whole absolute path as it was backed up,
//!   anchored at the snapshot's root (`/home/*/.cache`, `/srv/**/tmp`),
//!   also in a restore of part of a snapshot;
//! - a `/` elsewhere: the last components of the path, at any depth, as
//!   if it began with `**/` (`b/node_modules` matches
//!   `/x/y/b/node_modules`, not `/x/yb/node_modules`).
//!
//! A trailing `/` matches directories only (`cache/` leaves a file named
//! `cache` alone). A directory that matches takes everything beneath it
//! along.
//!
//! Names are bytes, and need not be UTF-8 (`caf\xe9`, written by a
//! system in Latin-1), nor need patterns: both are matched as the text
//! [`as_text`] makes of them, where each byte that is not part of UTF-8
//! stands for itself, so `caf\xe9` selects that name and not `caf\xe8`.

use crate::escape::Show;
use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// A set of patterns.
#[derive(Clone, Debug)]
pub struct PathFilter {
    /// Patterns matched against names, then against paths; each with the
    /// index of its pattern as given.
    names: Globs,
    paths: Globs,
    empty: bool,
}

/// Compiled globs, those matching anything apart from those matching
/// directories only.
#[derive(Clone, Debug)]
struct Globs {
    any: Sets,
    dirs: Sets,
}

impl Globs {
    fn build(any: Vec<(usize, Glob)>, dirs: Vec<(usize, Glob)>) -> Result<Globs> {
        Ok(Globs {
            any: Sets::build(&any)?,
            dirs: Sets::build(&dirs)?,
        })
    }

    fn is_match(&self, s: &str, is_dir: bool) -> bool {
        let c = Candidate::new(s);
        self.any.is_match(&c) || (is_dir && self.dirs.is_match(&c))
    }

    /// Adds to `out` the indices of the patterns matching `s`.
    fn matching(&self, s: &str, is_dir: bool, out: &mut Vec<usize>) {
        let c = Candidate::new(s);
        self.any.matching(&c, out);
        if is_dir {
            self.dirs.matching(&c, out);
        }
    }
}

/// Globs compiled in sets of at most [`PER_SET`], each glob with the
/// index of the pattern it came from. One set of all of thousands of
/// patterns (an exclude list a script wrote) outgrows what the regex
/// engine builds: 9,000 such patterns failed every backup and restore
/// with "bad patterns: error building NFA" until December 2026 (the
/// cliffs tester).
#[derive(Clone, Debug)]
struct Sets {
    sets: Vec<GlobSet>,
    of: Vec<usize>,
}

/// The most globs compiled into one [`GlobSet`].
const PER_SET: usize = 256;

impl Sets {
    fn build(globs: &[(usize, Glob)]) -> Result<Sets> {
        let set = |globs: &[(usize, Glob)]| {
            let mut b = GlobSetBuilder::new();
            for (_, g) in globs {
                b.add(g.clone());
            }
            b.build()
        };
        let mut sets = Vec::with_capacity(globs.len().div_ceil(PER_SET));
        for part in globs.chunks(PER_SET) {
            match set(part) {
                Ok(s) => sets.push(s),
                Err(e) => return Err(Error::Invalid(format!("bad patterns: {e}"))),
            }
        }
        Ok(Sets {
            sets,
            of: globs.iter().map(|(i, _)| *i).collect(),
        })
    }

    fn is_match(&self, c: &Candidate<'_>) -> bool {
        self.sets.iter().any(|s| s.is_match_candidate(c))
    }

    fn matching(&self, c: &Candidate<'_>, out: &mut Vec<usize>) {
        for (k, set) in self.sets.iter().enumerate() {
            let of = &self.of[k * PER_SET..];
            out.extend(set.matches_candidate(c).into_iter().map(|i| of[i]));
        }
    }
}

/// `bytes` (a name, a path or a pattern) as the text globs are matched
/// against: UTF-8 as it is, and each byte that is not part of UTF-8
/// (always 0x80 or above) as a character of its own, U+10FF00 plus the
/// byte, from the end of the last private-use plane: a glob is text, and
/// a byte replaced by U+FFFD would match every other byte replaced so.
/// A name holding one of those 128 characters itself (no system or
/// alphabet assigns them) matches as the byte it stands for would. A
/// glob's `?` takes one byte of UTF-8 (globset matches bytes), so it
/// takes neither such a byte nor a character outside ASCII: `*` does.
/// Borrowed when `bytes` is UTF-8.
pub fn as_text(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(char::from_u32(0x10FF00 + u32::from(b)).expect("a private-use character"));
        }
    }
    Cow::Owned(out)
}

/// Whether `pattern` can match no path: it is empty, or has an empty
/// component between others (`a//b`). [`PathFilter::new`] refuses both.
pub fn matches_nothing(pattern: &[u8]) -> bool {
    let mut inner = pattern;
    while let Some(rest) = inner.strip_prefix(b"/") {
        inner = rest;
    }
    while let Some(rest) = inner.strip_suffix(b"/") {
        inner = rest;
    }
    pattern.is_empty() || inner.windows(2).any(|w| w == b"//")
}

impl PathFilter {
    /// Compiles patterns, which may hold any bytes (see [`as_text`]); an
    /// error names the bad one.
    pub fn new<P: AsRef<OsStr>>(patterns: &[P]) -> Result<PathFilter> {
        let (mut names, mut names_dirs) = (Vec::new(), Vec::new());
        let (mut paths, mut paths_dirs) = (Vec::new(), Vec::new());
        for (i, given) in patterns.iter().enumerate() {
            let given = given.as_ref();
            let p = as_text(given.as_bytes());
            // An empty argument (`--exclude "$X"` with X unset) names
            // nothing; one with an empty component (`a//b`) matches
            // nothing, as no path has one.
            if p.is_empty() {
                return Err(Error::Invalid(
                    "an empty pattern was given (is a variable in the command line unset?)".into(),
                ));
            }
            if matches_nothing(given.as_bytes()) {
                return Err(Error::Invalid(format!(
                    "pattern {given:?} has an empty component (`//`), which no path it is \
                     matched against has"
                )));
            }
            let dirs_only = p.ends_with('/') && p.len() > 1;
            let pat = p.trim_end_matches('/');
            // No path a pattern is matched against has a `.` or `..`
            // component: such a pattern (`./cache`, written as a shell
            // path) matched nothing, silently.
            if pat.split('/').any(|c| c == "." || c == "..") {
                return Err(Error::Invalid(format!(
                    "pattern {given:?} has a `.` or `..` component, which no path it is \
                     matched against has: patterns match the path as backed up, so write \
                     `cache` for a name at any depth, `a/cache` for a path's last \
                     components, or the whole absolute path starting with `/`"
                )));
            }
            let (on_path, glob) = if pat.is_empty() {
                (true, "/".to_string())
            } else if pat.starts_with('/') || pat.starts_with("**/") {
                (true, pat.to_string())
            } else if pat.contains('/') {
                (true, format!("**/{pat}"))
            } else {
                (false, pat.to_string())
            };
            // A name has no `/` for a wildcard to cross: matched against
            // names only, a pattern may let `*` match one, which lets the
            // set match `*.tmp` and plain names by extension and literal
            // lookups rather than a regex each (10,000 such patterns
            // took a backup to 96 MB and a second, until December 2026).
            let glob = GlobBuilder::new(&glob)
                .literal_separator(on_path)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Invalid(format!("bad pattern {given:?}: {e}")))?;
            match (on_path, dirs_only) {
                (false, false) => names.push((i, glob)),
                (false, true) => names_dirs.push((i, glob)),
                (true, false) => paths.push((i, glob)),
                (true, true) => paths_dirs.push((i, glob)),
            }
        }
        Ok(PathFilter {
            names: Globs::build(names, names_dirs)?,
            paths: Globs::build(paths, paths_dirs)?,
            empty: patterns.is_empty(),
        })
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Whether the entry at absolute `path` with final component `name`,
    /// a directory or not, matches (not considering its ancestors).
    pub fn matches(&self, path: &str, name: &str, is_dir: bool) -> bool {
        !self.empty && (self.names.is_match(name, is_dir) || self.paths.is_match(path, is_dir))
    }

    /// Adds to `out` the indices (in the order given to [`PathFilter::new`])
    /// of the patterns the entry matches, as [`PathFilter::matches`] decides.
    pub fn matching(&self, path: &str, name: &str, is_dir: bool, out: &mut Vec<usize>) {
        self.names.matching(name, is_dir, out);
        self.paths.matching(path, is_dir, out);
    }

    /// [`PathFilter::matches`] of a path and name as bytes, UTF-8 or not.
    pub fn matches_bytes(&self, path: &[u8], name: &[u8], is_dir: bool) -> bool {
        !self.empty && self.matches(&as_text(path), &as_text(name), is_dir)
    }

    /// [`PathFilter::matching`] of a path and name as bytes, UTF-8 or not.
    pub fn matching_bytes(&self, path: &[u8], name: &[u8], is_dir: bool, out: &mut Vec<usize>) {
        self.matching(&as_text(path), &as_text(name), is_dir, out);
    }
}

/// Reads patterns from an exclude file: one per line, `#` comments and
/// blank lines ignored, a byte-order mark at its start too.
///
/// A file that cannot be read is a usage error (exit 2): it is named on
/// the command line, and is read before the repository is opened.
pub fn read_pattern_file(path: &std::path::Path) -> Result<Vec<OsString>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Usage(format!("read exclude file {}: {e}", path.shown())))?;
    refuse_utf16(&bytes, path)?;
    let lines = patterns_in(&bytes);
    // Each checked alone, so that a bad one is named with its line.
    for (n, p) in &lines {
        if let Err(e) = PathFilter::new(std::slice::from_ref(p)) {
            return Err(Error::Usage(format!(
                "exclude file {}, line {n}: {e}",
                path.shown()
            )));
        }
    }
    Ok(lines.into_iter().map(|(_, p)| p).collect())
}

/// The patterns of a pattern file's bytes, each with its line number
/// (from 1): one a line, trimmed of ASCII white space (and a line's
/// `\r`), blank lines and lines beginning with `#` left out, a UTF-8 byte
/// order mark at the start dropped. A space or tab that a `\` takes as
/// itself (`name\ `) is kept at the end, as the glob reads it. A line
/// need not be UTF-8: it names a path's bytes.
fn patterns_in(bytes: &[u8]) -> Vec<(usize, OsString)> {
    bytes
        .strip_prefix("\u{feff}".as_bytes())
        .unwrap_or(bytes)
        .split(|&b| b == b'\n')
        .map(trim_pattern)
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with(b"#"))
        .map(|(i, l)| (i + 1, OsStr::from_bytes(l).to_os_string()))
        .collect()
}

/// `line` without the white space about it, but for a space or tab at its
/// end that an odd run of `\` before it escapes.
fn trim_pattern(line: &[u8]) -> &[u8] {
    let start = line.len() - line.trim_ascii_start().len();
    let trimmed = line.trim_ascii();
    let end = start + trimmed.len();
    let escapes = trimmed.iter().rev().take_while(|&&b| b == b'\\').count();
    match line.get(end) {
        Some(b' ' | b'\t') if escapes % 2 == 1 => &line[start..=end],
        _ => trimmed,
    }
}

/// Refuses a pattern file in UTF-16 (as Windows editors save "Unicode"),
/// whose every other byte is 0: no path holds a 0 byte, so its patterns
/// would match nothing and exclude nothing, without a word.
fn refuse_utf16(bytes: &[u8], path: &std::path::Path) -> Result<()> {
    let utf32 = bytes.starts_with(&[0xff, 0xfe, 0, 0]) || bytes.starts_with(&[0, 0, 0xfe, 0xff]);
    let bom = bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]);
    if utf32 || bom || bytes.contains(&0) {
        return Err(Error::Usage(format!(
            "exclude file {}: {}: no path holds a 0 byte, so its patterns would match \
             nothing; save it as UTF-8",
            path.shown(),
            if utf32 {
                "is UTF-32 (it begins with a UTF-32 byte-order mark)"
            } else if bom {
                "is UTF-16 (it begins with a UTF-16 byte-order mark)"
            } else {
                "holds 0 bytes (UTF-16?)"
            }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> PathFilter {
        PathFilter::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_and_paths() {
        let f = filter(&["*.log", "/srv/*/cache", "/a/**/tmp"]);
        assert!(f.matches("/x/y/z.log", "z.log", false));
        assert!(!f.matches("/x/y/z.txt", "z.txt", false));
        assert!(f.matches("/srv/app/cache", "cache", false));
        assert!(!f.matches("/srv/app/sub/cache", "cache", false));
        assert!(!f.matches("/x/srv/app/cache", "cache", false));
        assert!(f.matches("/a/b/c/tmp", "tmp", false));
        assert!(!PathFilter::new::<&str>(&[])
            .unwrap()
            .matches("/x", "x", true));
        assert!(PathFilter::new(&["["]).is_err());
    }

    #[test]
    fn pattern_lines_keep_an_escaped_space_at_their_end() {
        let got: Vec<_> = patterns_in(b"  logs \t\r\ntrail\\ \r\ntab\\\t \neven\\\\ \n#c\n\n")
            .into_iter()
            .map(|(n, p)| (n, p.as_bytes().to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                (1, b"logs".to_vec()),
                (2, b"trail\\ ".to_vec()),
                (3, b"tab\\\t".to_vec()),
                (4, b"even\\\\".to_vec()),
            ]
        );
        let f = PathFilter::new(&[OsStr::from_bytes(&got[1].1)]).unwrap();
        assert!(f.matches("/x/trail ", "trail ", false));
        assert!(!f.matches("/x/trail", "trail", false));
    }

    /// A pattern with a `.` or `..` component, which no path matched has,
    /// is refused, naming it, rather than matching nothing.
    #[test]
    fn dot_components_are_refused() {
        for bad in ["./x/keep.txt", "a/../b", "/srv/./app", ".", "../x", "x/./"] {
            let e = PathFilter::new(&[bad]).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
            assert!(e.contains("`.` or `..` component"), "{bad}: {e}");
        }
        for good in [".*", "..x", "x.", ".cache/", "a/.git", "/srv/.hidden"] {
            assert!(PathFilter::new(&[good]).is_ok(), "{good}");
        }
    }

    /// A `/` that does not start the pattern makes it match the path's
    /// last components, at any depth, whole components only.
    #[test]
    fn a_relative_path_matches_at_any_depth() {
        let f = filter(&["b/node_modules", "src/b/*"]);
        for (path, want) in [
            ("/x/y/b/node_modules", true),
            ("/b/node_modules", true),
            ("/x/yb/node_modules", false),
            ("/x/b/node_modules/sub", false),
            ("/x/node_modules", false),
            ("/p/src/b/f.c", true),
            ("/p/src/b/c/f.c", false),
            ("/p/src/b", false),
        ] {
            let name = path.rsplit('/').next().unwrap();
            assert_eq!(f.matches(path, name, false), want, "{path}");
        }
        assert!(filter(&["**/b/c"]).matches("/a/b/c", "c", false));
        assert!(filter(&["a/**/c"]).matches("/x/a/b/b/c", "c", false));
    }

    /// A trailing `/` matches directories only, by name or by path.
    #[test]
    fn a_trailing_slash_matches_directories_only() {
        let f = filter(&["cache/", "/srv/tmp/", "b/out/"]);
        for (path, name) in [
            ("/x/cache", "cache"),
            ("/srv/tmp", "tmp"),
            ("/y/b/out", "out"),
        ] {
            assert!(f.matches(path, name, true), "{path}");
            assert!(!f.matches(path, name, false), "{path}");
        }
        assert!(filter(&["cache"]).matches("/x/cache", "cache", false));
    }

    /// Which patterns match, by their index as given.
    /// Thousands of patterns (an exclude list a script wrote) build, and
    /// each matches and is named by its index as one of a few would be.
    #[test]
    fn thousands_of_patterns_build_and_match() {
        let patterns: Vec<String> = (0..9000)
            .map(|i| format!("dir{i}/sub*/x?{i}"))
            .chain(["/top/**".to_string(), "*.tmp/".to_string()])
            .collect();
        let f = PathFilter::new(&patterns).unwrap();
        let mut out = Vec::new();
        f.matching("/a/dir8500/sub1/xy8500", "xy8500", false, &mut out);
        assert_eq!(out, [8500]);
        assert!(f.matches("/a/dir0/subz/xq0", "xq0", false));
        assert!(!f.matches("/a/dir1/subz/xq0", "xq0", false));
        out.clear();
        f.matching("/top/b.tmp", "b.tmp", true, &mut out);
        out.sort();
        assert_eq!(out, [9000, 9001]);
        assert!(!f.matches("/b.tmp", "b.tmp", false), "a directory pattern");
    }

    #[test]
    fn matching_names_the_patterns() {
        let f = filter(&["*.c", "/x/**", "d/", "y/*.c"]);
        let mut out = Vec::new();
        f.matching("/x/y/z.c", "z.c", false, &mut out);
        out.sort();
        assert_eq!(out, [0, 1, 3]);
        out.clear();
        f.matching("/q/d", "d", true, &mut out);
        assert_eq!(out, [2]);
    }

    /// Patterns and names that are not UTF-8 match byte for byte: a byte
    /// that is no UTF-8 matches itself only, and `*` takes it.
    #[test]
    fn names_and_patterns_that_are_not_utf8_match_byte_for_byte() {
        let f = PathFilter::new(&[
            OsStr::from_bytes(b"caf\xe9"),
            OsStr::from_bytes(b"/top/d\xff*/x"),
        ])
        .unwrap();
        assert!(f.matches_bytes(b"/a/caf\xe9", b"caf\xe9", false));
        assert!(!f.matches_bytes(b"/a/caf\xe8", b"caf\xe8", false));
        assert!(!f.matches_bytes("/a/caf\u{fffd}".as_bytes(), "caf\u{fffd}".as_bytes(), false));
        assert!(!f.matches_bytes("/a/café".as_bytes(), "café".as_bytes(), false));
        assert!(f.matches_bytes(b"/top/d\xff\xfe/x", b"x", false));
        assert!(!f.matches_bytes(b"/top/d\xfe/x", b"x", false));
        assert!(filter(&["*.txt"]).matches_bytes(b"/\xff.txt", b"\xff.txt", false));
        assert_eq!(as_text(b"plain"), Cow::Borrowed("plain"));
        let err = PathFilter::new(&[OsStr::from_bytes(b"[\xe9")]).unwrap_err();
        assert!(err.to_string().contains(r"[\xE9"), "{err}");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_pattern() {
        assert_eq!(
            patterns_in("\u{feff}*.tmp\r\n# note\n\n cache/ \n".as_bytes()),
            [(1, "*.tmp".into()), (4, "cache/".into())]
        );
        // A line names a path's bytes, UTF-8 or not.
        assert_eq!(
            patterns_in(b"caf\xe9/\n"),
            [(1, OsStr::from_bytes(b"caf\xe9/").to_os_string())]
        );
    }
}
