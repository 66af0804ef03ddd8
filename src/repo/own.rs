//! The folders cairn itself keeps: the local repository being used and
//! the metadata cache in use. A backup never stores them, and a restore
//! never writes into them or removes them.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::repo::Repository;

/// The local repository in use and the metadata cache in use (all of it:
/// it holds only cairn's copies of repositories' metadata, and a
/// `CACHEDIR.TAG`), each by device and inode, so that a walk knows them
/// wherever it meets them (through a bind mount or a symlinked parent
/// too). A repository under the folder backed up (the default one lives
/// in the home directory) would otherwise store itself: its new packs,
/// sealed under random nonces, never deduplicate, so each backup would
/// store the last one's packs again. A restore into a folder holding it
/// would write over its files, or, mirroring a snapshot that lacks them,
/// remove them.
pub struct Own {
    folders: Vec<(u64, u64, PathBuf, &'static str)>,
}

impl Own {
    /// The folders `repo` uses; those that do not exist are left out.
    pub fn of(repo: &Repository) -> Own {
        use std::os::unix::fs::MetadataExt;
        let candidates = [
            (repo.backend().local_folder(), "the repository"),
            (
                repo.cache().and_then(|c| c.dir().parent()),
                "cairn's metadata cache",
            ),
        ];
        let folders = candidates
            .into_iter()
            .filter_map(|(path, what)| {
                let path = std::fs::canonicalize(path?).ok()?;
                let md = std::fs::metadata(&path).ok()?;
                Some((md.dev(), md.ino(), path, what))
            })
            .collect();
        Own { folders }
    }

    /// What the folder of device `dev` and inode `ino` is, if it is one
    /// of these.
    pub fn find(&self, dev: u64, ino: u64) -> Option<(&Path, &'static str)> {
        self.folders
            .iter()
            .find(|(d, i, _, _)| (*d, *i) == (dev, ino))
            .map(|(_, _, path, what)| (path.as_path(), *what))
    }

    /// Refuses `path`, given to back up, if it is one of these folders or
    /// lies in one.
    pub fn check_given(&self, path: &Path) -> Result<()> {
        match self.containing(path) {
            Some((folder, what)) => Err(Error::Invalid(format!(
                "{} is in {what} ({}): a backup never stores its own repository or cache",
                path.display(),
                folder.display()
            ))),
            None => Ok(()),
        }
    }

    /// The folder of these that `path` is, or lies in (by its existing
    /// ancestors, symlinks followed).
    pub fn containing(&self, path: &Path) -> Option<(&Path, &'static str)> {
        use std::os::unix::fs::MetadataExt;
        path.ancestors().find_map(|dir| {
            let md = std::fs::metadata(dir).ok()?;
            self.find(md.dev(), md.ino())
        })
    }
}

impl Own {
    /// The first of these folders that lies at `path` or below it (a
    /// mirror's removal of `path` would take it along). `path` is
    /// compared as given: make it canonical first.
    pub fn within(&self, path: &Path) -> Option<(&Path, &'static str)> {
        self.folders
            .iter()
            .find(|(_, _, folder, _)| folder.starts_with(path))
            .map(|(_, _, folder, what)| (folder.as_path(), *what))
    }
}
