//! The folders cairn itself keeps: the local repository being used and
//! the metadata cache folder of the repository in use. A backup never
//! stores them, and a restore never writes into them or removes them.

use crate::escape::Show;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::repo::Repository;

/// A device and inode number: what tells a folder apart wherever it is
/// reached from (a bind mount, a symlinked parent).
type Ident = (u64, u64);

/// The local repository in use and the repository's metadata cache
/// folder, each by device and inode, so that a walk knows them wherever
/// it meets them. A repository under the folder backed up (the default
/// one lives in the home directory) would otherwise store itself: its new
/// packs, sealed under random nonces, never deduplicate, so each backup
/// would store the last one's packs again. A restore into a folder
/// holding it would write over its files, or, mirroring a snapshot that
/// lacks them, remove them.
pub struct Own {
    /// Each folder: its identity, its real path, and what it is.
    folders: Vec<(Ident, PathBuf, &'static str)>,
    /// What holds each folder, so that removing it would take the folder
    /// along: every directory above it (by identity, so reached through
    /// any path), and every symlink on the path the repository was
    /// given by (removing or replacing one would cut this process off
    /// from its repository). Each with the index of the folder it holds.
    holders: Vec<(Ident, usize)>,
}

impl Own {
    /// The folders `repo` uses; those that do not exist are left out.
    pub fn of(repo: &Repository) -> Own {
        let candidates = [
            (repo.backend().local_folder(), "the repository"),
            (
                repo.cache().map(|c| c.dir()),
                "the repository's metadata cache",
            ),
        ];
        let mut own = Own {
            folders: Vec::new(),
            holders: Vec::new(),
        };
        for (given, what) in candidates {
            let Some(given) = given else { continue };
            let Ok(real) = std::fs::canonicalize(given) else {
                continue;
            };
            let Ok(md) = std::fs::metadata(&real) else {
                continue;
            };
            let at = own.folders.len();
            own.folders.push(((md.dev(), md.ino()), real.clone(), what));
            for dir in real.ancestors().skip(1) {
                if let Ok(md) = std::fs::metadata(dir) {
                    own.holders.push(((md.dev(), md.ino()), at));
                }
            }
            if let Ok(given) = std::path::absolute(given) {
                for link in given.ancestors() {
                    match std::fs::symlink_metadata(link) {
                        Ok(md) if md.file_type().is_symlink() => {
                            own.holders.push(((md.dev(), md.ino()), at));
                        }
                        _ => {}
                    }
                }
            }
        }
        own
    }

    /// What the folder of device `dev` and inode `ino` is, if it is one
    /// of these.
    pub fn find(&self, dev: u64, ino: u64) -> Option<(&Path, &'static str)> {
        self.folders
            .iter()
            .find(|(id, _, _)| *id == (dev, ino))
            .map(|(_, path, what)| (path.as_path(), *what))
    }

    /// The folder of these that the entry of device `dev` and inode `ino`
    /// (an `lstat`'s: a symlink is itself) is, or holds: removing or
    /// replacing it would take the folder along.
    pub fn is_or_holds(&self, dev: u64, ino: u64) -> Option<(&Path, &'static str)> {
        self.find(dev, ino).or_else(|| {
            let (_, at) = self.holders.iter().find(|(id, _)| *id == (dev, ino))?;
            let (_, path, what) = &self.folders[*at];
            Some((path.as_path(), *what))
        })
    }

    /// Refuses `path`, given to back up, if it is one of these folders or
    /// lies in one. A symlink given is backed up as the link: only where
    /// it is counts, not what it points to.
    pub fn check_given(&self, path: &Path) -> Result<()> {
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let at = if is_link {
            path.parent().unwrap_or(path)
        } else {
            path
        };
        match self.containing(at) {
            Some((folder, what)) => Err(Error::Invalid(format!(
                "{} is in {what} ({}): a backup never stores its own repository or cache",
                path.shown(),
                folder.shown()
            ))),
            None => Ok(()),
        }
    }

    /// The folder of these that `path` is, or lies in: judged where it
    /// really is (the deepest existing ancestor resolved, what follows
    /// it, not made yet, taken as written: a `..` there leaves what was
    /// just named, as making the folders would), each directory above it
    /// by identity.
    pub fn containing(&self, path: &Path) -> Option<(&Path, &'static str)> {
        use std::path::Component;
        let path = std::path::absolute(path).ok()?;
        let parts: Vec<Component> = path.components().collect();
        let (mut real, rest) = (0..=parts.len()).rev().find_map(|n| {
            let prefix: PathBuf = parts[..n].iter().collect();
            Some((std::fs::canonicalize(prefix).ok()?, &parts[n..]))
        })?;
        for part in rest {
            match part {
                Component::ParentDir => {
                    real.pop();
                }
                Component::Normal(name) => real.push(name),
                _ => {}
            }
        }
        real.ancestors().find_map(|dir| {
            let md = std::fs::metadata(dir).ok()?;
            self.find(md.dev(), md.ino())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_of(folder: &Path, link: Option<&Path>) -> Own {
        let real = std::fs::canonicalize(folder).unwrap();
        let md = std::fs::metadata(&real).unwrap();
        let mut own = Own {
            folders: vec![((md.dev(), md.ino()), real.clone(), "the repository")],
            holders: Vec::new(),
        };
        for dir in real.ancestors().skip(1) {
            let md = std::fs::metadata(dir).unwrap();
            own.holders.push(((md.dev(), md.ino()), 0));
        }
        if let Some(link) = link {
            let md = std::fs::symlink_metadata(link).unwrap();
            own.holders.push(((md.dev(), md.ino()), 0));
        }
        own
    }

    #[test]
    fn a_path_is_judged_by_where_it_really_is() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("a/repo");
        std::fs::create_dir_all(repo.join("packs")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&repo, &link).unwrap();
        let own = own_of(&repo, None);
        // In it: itself, below it, below it through a symlink, below it
        // through folders not made yet and `..`.
        for p in [
            repo.clone(),
            repo.join("packs"),
            repo.join("new/folder"),
            link.join("data"),
            repo.join("packs/none/../x"),
            dir.path().join("a/new/../repo/sub"),
        ] {
            assert!(own.containing(&p).is_some(), "{}", p.shown());
        }
        // Not in it: beside it, above it.
        for p in [
            dir.path().join("a"),
            dir.path().join("a/other/x"),
            repo.join("new/../../elsewhere"),
        ] {
            assert!(own.containing(&p).is_none(), "{}", p.shown());
        }
        // A symlink given to back up is stored as the link, where it is.
        assert!(own.check_given(&link).is_ok());
        assert!(own.check_given(&repo.join("packs")).is_err());
    }

    #[test]
    fn what_holds_the_folder_is_known_by_identity() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("a/b/repo");
        std::fs::create_dir_all(&repo).unwrap();
        let link = dir.path().join("to-b");
        std::os::unix::fs::symlink(dir.path().join("a/b"), &link).unwrap();
        let own = own_of(&repo, Some(&link));
        let id = |p: &Path| {
            let md = std::fs::symlink_metadata(p).unwrap();
            (md.dev(), md.ino())
        };
        for p in [
            repo.clone(),
            dir.path().join("a/b"),
            dir.path().join("a"),
            link.clone(),
        ] {
            let (dev, ino) = id(&p);
            assert!(own.is_or_holds(dev, ino).is_some(), "{}", p.shown());
        }
        std::fs::create_dir_all(dir.path().join("a/c")).unwrap();
        let (dev, ino) = id(&dir.path().join("a/c"));
        assert!(own.is_or_holds(dev, ino).is_none());
    }
}
