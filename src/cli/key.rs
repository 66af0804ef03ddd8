//! `cairn key`: exported keys (see [`crate::repo::export`]).

use crate::escape::Show;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use zeroize::Zeroizing;

use super::output::{self, outln};
use super::Context;
use crate::error::{Error, Result};
use crate::repo::export::{self, ExportedKey};

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write the repository's master key to FILE (created, mode 600), so
    /// that `--key-file FILE` (or CAIRN_KEY_FILE) opens the repository
    /// without a password and without the cost of deriving a key. Anyone
    /// who can read FILE can read and change every snapshot: keep it like
    /// the password. The password keeps working.
    Export {
        /// The file to create; an existing file is never overwritten.
        file: PathBuf,
    },
}

pub(super) fn run(ctx: &Context, cmd: KeyCommand) -> Result<u8> {
    match cmd {
        KeyCommand::Export { file } => {
            // Before the password is asked for.
            super::check_new_file(&file)?;
            let repo = ctx.open_uncached()?;
            let bytes = export::encode(&repo.config().repo_id, repo.key());
            super::write_new_private(&file, &bytes)?;
            // Made 0600; a filesystem that keeps no modes shows it as
            // its mount's.
            if let Ok(m) = std::fs::metadata(&file) {
                if m.permissions().mode() & 0o077 != 0 {
                    super::warn(&format!(
                        "{} is open to other users (mode {:o}): its filesystem keeps no modes \
                         (FAT or exFAT?); cairn refuses a key file so open, so copy it to a \
                         folder of yours before use (`install -m 600 {0} ~/cairn.key`), and \
                         keep the stick safe",
                        file.shown(),
                        m.permissions().mode() & 0o777
                    ));
                }
            }
            let printed = outln!(
                "exported the master key of repository {} to {}\n\
                 open it with --key-file {} (or CAIRN_KEY_FILE); anyone who can read that file \
                 can read and change every snapshot",
                &hex::encode(repo.config().repo_id)[..8],
                file.shown(),
                file.shown()
            );
            let done = format!("the key is exported to {}", file.shown());
            Ok(output::after_work(0, printed, &done))
        }
    }
}

/// Reads an exported key file, refusing one that others than its owner
/// can read or write (as ssh refuses such private keys).
pub(super) fn read_exported(path: &Path, what: &str) -> Result<ExportedKey> {
    let meta = std::fs::metadata(path).map_err(|e| Error::path("open key file", path, e))?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{what} is {}, not a key file: give the file `cairn key export` wrote",
            if meta.is_dir() {
                "a folder"
            } else {
                "no regular file"
            }
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Invalid(format!(
            "{what} is open to other users (mode {mode:o}): run `chmod 600 {0}`; on a \
             filesystem that keeps no modes (FAT or exFAT, as on a USB stick, where chmod \
             changes nothing) copy it to a folder of yours first (`install -m 600 {0} \
             ~/cairn.key`) and give the copy",
            path.shown()
        )));
    }
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| Error::path("read key file", path, e))?);
    export::decode(&bytes, what)
}
