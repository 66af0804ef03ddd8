//! The crate's error type and the exit codes it maps to.
//!
//! Every error names what it is about (a path, an object id, a pack) so an
//! operator can act on it. The mapping to process exit codes lives here and
//! nowhere else:
//!
//! | code | meaning                                         |
//! |------|-------------------------------------------------|
//! | 0    | success                                         |
//! | 1    | error (anything not listed below)               |
//! | 2    | usage error (clap exits with it while parsing)  |
//! | 3    | backup finished, but some files could not be read, or its stream was empty |
//! | 10   | repository missing                              |
//! | 11   | repository locked                               |
//! | 12   | wrong password, or a key file of another repository |

use crate::escape::Show;
use std::fmt;
use std::io;
use std::path::Path;

/// Exit code: generic error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: a bad or missing argument, or options that cannot go
/// together, as the argument parser's own refusals.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the backup was written but some files could not be read,
/// or it read around damage in the repository (see `BackupResult`), or
/// the stream it backed up was empty.
pub const EXIT_PARTIAL: u8 = 3;
/// Exit code: no repository at the given location.
pub const EXIT_REPO_MISSING: u8 = 10;
/// Exit code: the repository is locked by another process.
pub const EXIT_LOCKED: u8 = 11;
/// Exit code: no key of the repository opens with the given password, or
/// an exported key file belongs to another repository.
pub const EXIT_WRONG_PASSWORD: u8 = 12;

/// Everything that can go wrong in cairn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is no repository at the location (and what to do).
    #[error("no repository at {0}")]
    RepoMissing(String),
    /// Another process holds a conflicting lock.
    #[error("repository is locked: {0}")]
    Locked(String),
    /// A held lock can no longer be relied on (removed by someone else, or
    /// not refreshed for so long that others may have treated it as
    /// stale); the operation stopped. The message says what was left
    /// undone.
    #[error("{0}")]
    LockLost(String),
    /// No key file opened with the password. `from` says where the
    /// password came from (`CAIRN_PASSWORD`, `--password-file FILE`),
    /// where the caller knows.
    #[error(
        "wrong password{}: no key in {location} opens with it",
        from.as_ref().map(|f| format!(" (from {f})")).unwrap_or_default()
    )]
    WrongPassword {
        location: String,
        from: Option<String>,
    },
    /// An exported key file does not open the repository.
    #[error("wrong key file: {0}")]
    WrongKey(String),
    /// Stored bytes failed to decode or authenticate.
    #[error("{what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    /// A named object, snapshot or path does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The command whose output a stream backup stored did not succeed
    /// (`status` says how it ended: "exited with status 1", "was killed
    /// by signal 9 (SIGKILL)"); no snapshot was written.
    #[error(
        "`{command}` {status}: no snapshot written (the data stored from its output is \
         left for `cairn gc`)"
    )]
    ProducerFailed { command: String, status: String },
    /// The user asked for something impossible or ambiguous.
    #[error("{0}")]
    Invalid(String),
    /// An error, and what to do about it on a line of its own.
    #[error("{error}\n{advice}")]
    Advised { error: Box<Error>, advice: String },
    /// The command line itself is wrong (see [`EXIT_USAGE`]): found before
    /// the repository is opened.
    #[error("{0}")]
    Usage(String),
    /// A storage service failed an operation on an object. `transient`
    /// failures (5xx answers, timeouts, refused or reset connections) may
    /// succeed when retried; the others (denied, invalid request, missing
    /// bucket) will not. The message names the operation, the object and
    /// the endpoint, never credentials.
    #[error("{op} {object} at {endpoint}: {detail}")]
    Backend {
        op: String,
        object: String,
        endpoint: String,
        detail: String,
        transient: bool,
    },
    /// An operating-system error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::RepoMissing(_) => EXIT_REPO_MISSING,
            Error::Locked(_) => EXIT_LOCKED,
            Error::WrongPassword { .. } | Error::WrongKey(_) => EXIT_WRONG_PASSWORD,
            Error::Usage(_) => EXIT_USAGE,
            Error::Advised { error, .. } => error.exit_code(),
            _ => EXIT_ERROR,
        }
    }

    /// This error as a usage error (exit 2) where it is an
    /// [`Error::Invalid`]: for a value of the command line checked by
    /// code that other callers share. Other errors pass as they are.
    pub fn into_usage(self) -> Error {
        match self {
            Error::Invalid(m) => Error::Usage(m),
            e => e,
        }
    }

    /// A corruption error about `what`.
    pub fn corrupt(what: impl fmt::Display, detail: impl fmt::Display) -> Error {
        Error::Corrupt {
            what: what.to_string(),
            detail: detail.to_string(),
        }
    }

    /// An IO error with a description of the operation.
    pub fn io(context: impl fmt::Display, source: io::Error) -> Error {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    /// An IO error about a path.
    pub fn path(op: &str, path: &Path, source: io::Error) -> Error {
        Error::io(format_args!("{op} {}", path.shown()), source)
    }

    /// True for a failure that may go away when the operation is retried.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Backend {
                transient: true,
                ..
            }
        )
    }

    /// True when the store refused a read for want of permission (a file
    /// of a local repository this user may not read, credentials that
    /// may not read an object): not damage, and not for a command to act
    /// on as such.
    pub fn is_read_refused(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::EACCES) | Some(libc::EPERM)
                )
            }
            Error::Backend {
                detail, transient, ..
            } => !transient && detail.starts_with("access denied"),
            _ => false,
        }
    }

    /// True when the store could not hand over what was asked for, for a
    /// reason that says nothing about the repository's contents: it did
    /// not answer ([`Error::is_transient`]) or refused the read
    /// ([`Error::is_read_refused`]). A walk of the trees stops at such an
    /// error rather than take every tree after for damaged.
    pub fn is_store_unavailable(&self) -> bool {
        self.is_transient() || self.is_read_refused()
    }

    /// `self`, where the store could not hand over what was asked for
    /// ([`Error::is_store_unavailable`]), with advice saying it is not
    /// damage, what the command did (`done`: "verify stopped", "nothing
    /// is changed") and what to do; any other error as it is.
    pub fn unless_store_unavailable(self, done: &str) -> Error {
        let advice = if self.is_transient() {
            format!(
                "{done}: the store did not answer, which is not damage; run it again once the \
                 store answers"
            )
        } else if let (true, Error::Backend { detail, .. }) = (self.is_read_refused(), &self) {
            // A remote store's refusal is the credentials', the bucket's
            // policy's or the clock's, whichever user of this host runs it.
            let mend = if detail.contains("RequestTimeTooSkewed") {
                "set this host's clock right (NTP)"
            } else {
                "check the credentials and the bucket's policy"
            };
            format!("{done}: the store refused a read (access denied), which is not damage; {mend}")
        } else if self.is_read_refused() {
            format!(
                "{done}: the store refused a read (no permission), which is not damage; run it \
                 as a user who may read the whole repository"
            )
        } else {
            return self;
        };
        Error::Advised {
            error: Box::new(self),
            advice,
        }
    }

    /// True when the underlying cause is a full filesystem ("no space
    /// left on device", or a disk quota reached).
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => is_full(source),
            _ => false,
        }
    }

    /// True when the store refused a write it will always refuse: a
    /// read-only filesystem, no permission to write there, a filesystem
    /// that does not create files (some FUSE ones), or credentials that
    /// may only read.
    pub fn is_write_refused(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EROFS)
                    | Some(libc::EACCES)
                    | Some(libc::EPERM)
                    | Some(libc::ENOSYS)
                    | Some(libc::EOPNOTSUPP)
            ),
            Error::Backend {
                detail, transient, ..
            } => !transient && detail.starts_with("access denied"),
            _ => false,
        }
    }

    /// True when the store refused a write because its filesystem is
    /// mounted read-only (`EROFS`), which no user may write to.
    pub fn is_read_only_filesystem(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.raw_os_error() == Some(libc::EROFS),
            _ => false,
        }
    }

    /// True when the underlying cause is "no such file or object".
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound(_) => true,
            Error::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Whether `e` says the filesystem is out of room: "no space left on
/// device" (bytes or inodes), or a disk quota reached.
pub fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}
