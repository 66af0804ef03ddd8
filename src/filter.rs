//! Include and exclude patterns for backup and restore.
//!
//! Patterns are globs (`*`, `?`, `[...]`, `**`). A pattern without `/`
//! matches an entry's name anywhere in the tree (`*.log`, `node_modules`); a
//! pattern with `/` matches the entry's whole absolute path as it was backed
//! up (`/home/*/.cache`, `/srv/**/tmp`), where `*` does not cross `/` and
//! `**` does. A directory that matches takes everything beneath it along.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// A set of patterns.
#[derive(Clone, Debug)]
pub struct PathFilter {
    names: GlobSet,
    paths: GlobSet,
    empty: bool,
}

impl PathFilter {
    /// Compiles patterns; an error names the bad one.
    pub fn new(patterns: &[String]) -> Result<PathFilter> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let pat = p.trim_end_matches('/');
            let glob = GlobBuilder::new(if pat.is_empty() { "/" } else { pat })
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Invalid(format!("bad pattern {p:?}: {e}")))?;
            if pat.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Invalid(format!("bad patterns: {e}")))
        };
        Ok(PathFilter {
            names: build(names)?,
            paths: build(paths)?,
            empty: patterns.is_empty(),
        })
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Whether the entry at absolute `path` with final component `name`
    /// matches (not considering its ancestors).
    pub fn matches(&self, path: &str, name: &str) -> bool {
        !self.empty && (self.names.is_match(name) || self.paths.is_match(path))
    }
}

/// Reads patterns from an exclude file: one per line, `#` comments and
/// blank lines ignored, a byte-order mark at its start too.
pub fn read_pattern_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::path("read exclude file", path, e))?;
    Ok(patterns_in(&text))
}

fn patterns_in(text: &str) -> Vec<String> {
    text.strip_prefix('\u{feff}')
        .unwrap_or(text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let f =
            PathFilter::new(&["*.log".into(), "/srv/*/cache".into(), "/a/**/tmp".into()]).unwrap();
        assert!(f.matches("/x/y/z.log", "z.log"));
        assert!(!f.matches("/x/y/z.txt", "z.txt"));
        assert!(f.matches("/srv/app/cache", "cache"));
        assert!(!f.matches("/srv/app/sub/cache", "cache"));
        assert!(f.matches("/a/b/c/tmp", "tmp"));
        assert!(!PathFilter::new(&[]).unwrap().matches("/x", "x"));
        assert!(PathFilter::new(&["[".into()]).is_err());
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_pattern() {
        assert_eq!(
            patterns_in("\u{feff}*.tmp\r\n# note\n\n cache/ \n"),
            ["*.tmp", "cache/"]
        );
    }
}
