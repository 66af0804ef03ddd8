//! Raising a repository to the format this cairn writes.
//!
//! A repository keeps the format it was made with (FORMAT.md, "Versions"):
//! a backup into it writes only what the cairn that made it reads. An
//! upgrade rewrites the config alone, with this cairn's version and
//! everything else as it was (a version-1 repository's cipher,
//! XChaCha20-Poly1305, is then named, as versions 2 on name theirs). From
//! then on backups write what the newer versions add: index tables of one
//! kind each (version 3), large directories in parts (version 4) and
//! snapshots that record their backup's excludes (version 5).
//! Nothing stored is rewritten, as every version reads what the older ones
//! wrote; a cairn of an older format then refuses the repository by its
//! config's version rather than misread what it cannot.

use serde::Serialize;

use super::config::{self, Config};
use super::lock::LockGuard;
use super::Repository;
use crate::backend::FileKind;
use crate::error::{Error, Result};

/// What [`Repository::upgrade`] found and did.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Upgrade {
    /// The repository's format before.
    pub from: u32,
    /// Its format after (as before when it was current already).
    pub to: u32,
    /// Whether the config was rewritten (never in a dry run).
    pub upgraded: bool,
}

impl Repository {
    /// Raises the repository to [`config::VERSION`] (see the module docs),
    /// holding `lock`, which must be exclusive: no backup writes meanwhile
    /// under the old format's rules. The config is read again under the
    /// lock, and the lock confirmed right before the new one is written
    /// (one file, replaced whole). A dry run (under any lock) writes
    /// nothing.
    pub fn upgrade(&self, lock: &LockGuard, dry_run: bool) -> Result<Upgrade> {
        if !dry_run && !lock.is_exclusive() {
            return Err(Error::Invalid(
                "upgrading a repository needs the exclusive lock".into(),
            ));
        }
        if let Some(why) = &self.config_trouble {
            return Err(Error::Invalid(format!(
                "{why}, and an upgrade rewrites it: run `cairn repair config` first"
            )));
        }
        let current = Config::decode(&self.backend.read(FileKind::Config, "")?, &self.key)?;
        let from = current.version;
        if from >= config::VERSION {
            return Ok(Upgrade {
                from,
                to: from,
                upgraded: false,
            });
        }
        let to = config::VERSION;
        if dry_run {
            return Ok(Upgrade {
                from,
                to,
                upgraded: false,
            });
        }
        let raised = Config {
            version: to,
            ..current
        };
        let bytes = raised.encode(&self.key)?;
        // What is written must open as what was meant.
        if Config::decode(&bytes, &self.key)? != raised {
            return Err(Error::Invalid(
                "the upgraded config does not read back as written; nothing changed".into(),
            ));
        }
        lock.confirm("upgrade stopped before writing the config; nothing changed")?;
        self.backend.write(FileKind::Config, "", &bytes)?;
        crate::fault::point("upgrade-after-config-write");
        // Stopped before this, the copy is the older config until the
        // next command that writes (see `keep_config_copy`).
        self.backend
            .write(FileKind::Config, crate::backend::CONFIG_COPY, &bytes)?;
        Ok(Upgrade {
            from,
            to,
            upgraded: true,
        })
    }
}
