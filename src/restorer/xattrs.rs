//! Extended attributes on restore: the snapshot's set on every entry, and
//! on an entry the target held before the restore, those it lacks removed.
//!
//! What is removed is what a backup records whoever runs it: `user.*`,
//! POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`) and
//! file capabilities (`security.capability`). A stale ACL or capability
//! left on a file the restore kept in place would grant what the snapshot
//! does not. `trusted.*` is left alone (an ordinary user's backup cannot
//! list it, so its absence from a snapshot says nothing), and so are the
//! other `security.*` names (labels the system's security modules set) and
//! other `system.*` names.

use crate::escape::Show;
use std::io;

use super::*;

/// Failures to set attributes the target refuses as a whole, told once.
#[derive(Default)]
pub(super) struct Refused {
    /// Entries with at least one attribute (or, for the modes, a mode
    /// bit) refused.
    pub(super) entries: u64,
    /// The first: its path, what was refused and the error.
    pub(super) first: Option<String>,
}

/// Whether a restore removes `name` from an existing entry whose node
/// lacks it (see the module's comment).
pub(super) fn removable(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || matches!(
            name,
            b"system.posix_acl_access" | b"system.posix_acl_default" | b"security.capability"
        )
}

impl Executor<'_> {
    /// Gives the entry at `path` (`file` open on it, or else reached as
    /// `by_path`, not followed) `node`'s extended attributes. One the
    /// target refuses as a whole (its filesystem has none, or, for an
    /// ordinary user, a namespace only root may write) is counted and
    /// told once at the end; any other failure is the entry's error.
    pub(super) fn set_xattrs(
        &self,
        path: &Path,
        node: &Node,
        file: Option<&fs::File>,
        by_path: &Path,
    ) {
        let mut refused = None;
        for x in &node.xattrs {
            let name = OsStr::from_bytes(&x.name.0);
            let r = match file {
                _ if crate::fault::xattr_fails(name) => {
                    Err(io::Error::from_raw_os_error(libc::ENOSPC))
                }
                Some(f) => xattr::FileExt::set_xattr(f, name, &x.value.0),
                None => xattr::set(by_path, name, &x.value.0),
            };
            match r {
                Ok(()) => {}
                Err(e) if self.refuses_xattrs(&e) => {
                    refused
                        .get_or_insert_with(|| format!("{}: {}: {e}", path.shown(), name.shown()));
                }
                Err(e) => self.xattr_failed(
                    path,
                    format!(
                        "cannot set extended attribute {} ({} bytes): {e}",
                        name.shown(),
                        x.value.0.len()
                    ),
                ),
            }
        }
        if let Some(why) = refused {
            if let Ok(mut r) = self.xattrs_refused.lock() {
                r.entries += 1;
                r.first.get_or_insert(why);
            }
        }
    }

    /// Removes from an entry the target held before this restore the
    /// extended attributes of [`removable`] names that `node` lacks.
    /// Symlinks are left alone: none of those names can be on one.
    pub(super) fn drop_stale_xattrs(&self, path: &Path, node: &Node, file: Option<&fs::File>) {
        if matches!(node.kind, NodeKind::Symlink { .. }) {
            return;
        }
        let at = match file {
            Some(_) => None,
            None => match self.beneath.at(path) {
                Ok(at) => Some(at),
                Err(e) => return self.fail(path, format!("cannot list extended attributes: {e}")),
            },
        };
        let by_path = at.as_deref().unwrap_or(path);
        let listed = match file {
            Some(f) => xattr::FileExt::list_xattr(f),
            None => xattr::list(by_path),
        };
        let names = match listed {
            Ok(names) => names,
            // A target without attributes has none to remove.
            Err(e) if self.refuses_xattrs(&e) => return,
            Err(e) => {
                return self.fail(path, format!("cannot list extended attributes: {e}"));
            }
        };
        for name in names {
            let bytes = name.as_bytes();
            if !removable(bytes) || node.xattrs.iter().any(|x| x.name.0 == bytes) {
                continue;
            }
            let r = match file {
                Some(f) => xattr::FileExt::remove_xattr(f, &name),
                None => xattr::remove(by_path, &name),
            };
            match r {
                Ok(()) => {}
                // Gone meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
                Err(e) => self.xattr_failed(
                    path,
                    format!(
                        "cannot remove extended attribute {}, which the snapshot's entry \
                         lacks: {e}",
                        name.shown()
                    ),
                ),
            }
        }
    }

    /// Whether `e`, met setting or listing an attribute, says the target
    /// takes none of its kind.
    fn refuses_xattrs(&self, e: &io::Error) -> bool {
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => true,
            Some(libc::EPERM) => !self.root,
            _ => false,
        }
    }

    /// Counts and tells an attribute's failure as the entry's error (an
    /// `error:` line, as every failure the final count includes; it was a
    /// warning's until December 2026). Not through [`Self::fail`]: "no
    /// space" from an attribute means it does not fit beside the entry's
    /// others (ext4 keeps them in one block), not that the target is
    /// full, and must not stop the restore.
    fn xattr_failed(&self, path: &Path, why: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        (self.error)(&format!("{}: {why}", path.shown()));
    }

    /// The warning for attributes the target refused, if it refused any.
    pub(super) fn xattrs_refused_warning(&self) -> Option<(u64, String)> {
        let r = self.xattrs_refused.lock().ok()?;
        let first = r.first.as_ref()?;
        Some((
            r.entries,
            format!(
                "extended attributes of {} entr{} not restored: the target refuses them \
                 (the first: {first})",
                r.entries,
                if r.entries == 1 { "y" } else { "ies" }
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::removable;

    #[test]
    fn only_names_every_backup_records_are_removed() {
        for name in [
            &b"user.a"[..],
            b"user.",
            b"system.posix_acl_access",
            b"system.posix_acl_default",
            b"security.capability",
        ] {
            assert!(removable(name), "{}", String::from_utf8_lossy(name));
        }
        for name in [
            &b"trusted.overlay.opaque"[..],
            b"security.selinux",
            b"security.ima",
            b"system.nfs4_acl",
            b"system.posix_acl_access2",
            b"users.a",
            b"user",
        ] {
            assert!(!removable(name), "{}", String::from_utf8_lossy(name));
        }
    }
}
