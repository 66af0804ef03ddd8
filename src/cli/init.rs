//! `cairn init` and `cairn unlock`.

use crate::escape::Show;
use clap::Args;

use super::output::{self, outln};
use super::Context;
use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::repo::{lock, InitOptions, KdfParams, Repository};

/// Parses a size like `512K`, `1M`, `8MiB` or a plain byte count.
pub fn parse_size(s: &str) -> std::result::Result<u32, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let too_large = || format!("{s:?} is too large (at most 4G - 1 bytes)");
    if num.is_empty() {
        return Err(format!("{s:?} is not a size like 512K or 8M"));
    }
    // All digits: a number that does not parse has too many of them.
    let n: u64 = num.parse().map_err(|_| too_large())?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}")),
    };
    n.checked_mul(mult)
        .and_then(|bytes| u32::try_from(bytes).ok())
        .ok_or_else(too_large)
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Minimum chunk size.
    #[arg(long, default_value = "512K", value_parser = parse_size)]
    chunk_min: u32,
    /// Average chunk size.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    chunk_avg: u32,
    /// Maximum chunk size.
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    chunk_max: u32,
    /// zstd compression level: 1..=22, or -7..=-1 for zstd's faster
    /// levels; 0 stores data uncompressed.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    compression: i32,
    /// Target pack file size.
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pack_size: u32,
    /// Argon2id memory in KiB for deriving the key from the password.
    #[arg(long, default_value_t = KdfParams::default().memory_kib)]
    kdf_memory_kib: u32,
    /// Argon2id passes over that memory.
    #[arg(long, default_value_t = KdfParams::default().iterations)]
    kdf_iterations: u32,
    /// Cipher sealing the repository's data: xaes-256-gcm (fastest on CPUs
    /// with AES instructions) or xchacha20-poly1305 (fastest without them).
    #[arg(long, default_value = Cipher::DEFAULT.name())]
    cipher: Cipher,
}

pub(super) fn run_init(ctx: &Context, a: InitArgs) -> Result<u8> {
    // An exported key opens a repository that exists; `init` makes a new
    // key, sealed with a password. Taking the flag silently would leave
    // the user believing the key file opens what was made.
    if let Some(f) = ctx.key_file_flag() {
        return Err(Error::Usage(format!(
            "--key-file {}: init makes a new repository, whose key is sealed with a \
             password; export it afterwards with `cairn key export FILE`",
            f.shown()
        )));
    }
    // The variable is often set for every command (in a profile, a
    // job's environment); `init` has no use for it, and says so rather
    // than leave the user believing it opens what is made.
    if let Some(f) = ctx.key_file() {
        super::warn(&format!(
            "CAIRN_KEY_FILE ({}) is left aside: init makes a new repository, whose key is \
             sealed with a password; export it afterwards with `cairn key export FILE`",
            f.shown()
        ));
    }
    let opts = InitOptions {
        chunk_sizes: (a.chunk_min, a.chunk_avg, a.chunk_max),
        compression: a.compression,
        pack_size: a.pack_size,
        kdf: KdfParams {
            memory_kib: a.kdf_memory_kib,
            iterations: a.kdf_iterations,
            lanes: 1,
        },
        cipher: a.cipher,
    };
    // Settings are checked before the password is asked for: a bad one
    // is a usage error (exit 2).
    opts.check().map_err(Error::into_usage)?;
    let backend = ctx.backend()?;
    let pw = ctx.password(true)?;
    let repo = Repository::init(backend.clone(), &pw.bytes, &opts)?;
    // Said on a nearly full disk: forget and gc would find no room set
    // aside once the disk fills.
    super::top_up_reserve(&repo, true);
    let id = &hex::encode(repo.config().repo_id)[..8];
    let printed = (|| {
        outln!(
            "created repository {id} at {} (data sealed with {})",
            backend.location(),
            repo.config().cipher.name()
        )?;
        for note in repo.notes() {
            outln!("  {note}")?;
        }
        outln!("keep the password safe: without it the data cannot be read")
    })();
    Ok(output::after_work(
        0,
        printed,
        &format!("repository {id} is created at {}", backend.location()),
    ))
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Also remove locks that are not stale (of processes still running),
    /// and lock files that hold no lock (empty, torn, or sealed with
    /// another key), which every command ignores.
    #[arg(long)]
    force: bool,
}

pub(super) fn run_unlock(ctx: &Context, a: UnlockArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let found = super::on_reserve_if_full(&repo, || {
        lock::remove_locks(repo.backend(), repo.key(), a.force)
    })?;
    super::top_up_reserve(&repo, true);
    let removed = &found.removed;
    let printed = (|| {
        for l in removed {
            outln!("removed {}", crate::escape::escape_controls(&l.describe()))?;
        }
        // Said, so that "0 lock(s) removed" never reads as "none held".
        for l in &found.left {
            outln!(
                "left {}: not stale, its process may still run; `cairn unlock --force` \
                 removes it once you know it does not",
                crate::escape::escape_controls(&l.describe())
            )?;
        }
        const NO_LOCK: &str = "which holds no lock (it does not decode: empty, torn, or sealed \
                               with another key)";
        for name in &found.unreadable {
            if a.force {
                outln!("removed lock file locks/{name}, {NO_LOCK}")?;
            } else {
                outln!(
                    "left lock file locks/{name}, {NO_LOCK}: every command ignores it; \
                     `cairn unlock --force` removes it"
                )?;
            }
        }
        for name in &found.empty {
            outln!(
                "removed lock file locks/{name}, which is empty (what a crash leaves of a lock \
                 file written just before it)"
            )?;
        }
        let none_held = found.empty.len() + if a.force { found.unreadable.len() } else { 0 };
        if none_held > 0 {
            outln!(
                "{} lock(s) removed, and {none_held} lock file(s) that held none",
                removed.len(),
            )
        } else {
            outln!("{} lock(s) removed", removed.len())
        }
    })();
    Ok(output::after_work(
        0,
        printed,
        &format!("{} lock(s) are removed", removed.len()),
    ))
}

#[derive(Args, Debug)]
pub struct UpgradeArgs {
    /// Say what would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the outcome as JSON: {"from", "to", "upgraded", "dry_run"}.
    #[arg(long)]
    json: bool,
}

/// What the formats after `from` add, in a sentence's words.
fn format_additions(from: u32) -> String {
    let mut added = Vec::new();
    if from < 3 {
        added.push("index tables of one kind each (format 3)");
    }
    if from < 4 {
        added.push("large directories stored in parts (format 4)");
    }
    if from < 5 {
        added.push("snapshots that record their backup's excludes, which a mirror restore leaves (format 5)");
    }
    match added.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

pub(super) fn run_upgrade(ctx: &Context, a: UpgradeArgs) -> Result<u8> {
    let repo = ctx.open()?;
    // Already of the newest format, there is nothing to write: it runs as
    // its dry run does, so a read-only repository says "nothing to do"
    // (it was refused, exit 1, for want of a lock it did not need).
    let writes = !a.dry_run && repo.config().version < crate::repo::config::VERSION;
    // Its exclusive lock gives the space reserve back on a nearly full
    // disk: set aside again after, as gc does (until December 2026 it
    // stayed gone until the next backup).
    super::keeping_reserve(&repo, !writes, || upgrade_command(ctx, &repo, &a, writes))
}

fn upgrade_command(
    ctx: &Context,
    repo: &crate::repo::Repository,
    a: &UpgradeArgs,
    writes: bool,
) -> Result<u8> {
    let lock = if writes {
        super::lock_repo(ctx, repo, true, "upgrade")?
    } else if a.dry_run {
        super::dry_run_lock(ctx, repo, "upgrade")?
    } else {
        // Nothing to write: the config read at opening says so, and no
        // lock is needed to read it again.
        let why = Error::Invalid("the repository is of the newest format".into());
        crate::repo::lock::LockGuard::unheld(repo.backend_arc(), repo.key(), "upgrade", &why)
    };
    let u = repo.upgrade(&lock, !writes)?;
    let printed = print_upgrade(repo, &u, a);
    if u.upgraded {
        let done = format!("the repository is upgraded to format {}", u.to);
        return Ok(output::after_work(0, printed, &done));
    }
    output::read_only(0, printed)
}

/// Prints what `upgrade` did or would do.
fn print_upgrade(
    repo: &crate::repo::Repository,
    u: &crate::repo::upgrade::Upgrade,
    a: &UpgradeArgs,
) -> Result<()> {
    if a.json {
        #[derive(serde::Serialize)]
        struct Report<'a> {
            #[serde(flatten)]
            upgrade: &'a crate::repo::upgrade::Upgrade,
            dry_run: bool,
        }
        let report = Report {
            upgrade: u,
            dry_run: a.dry_run,
        };
        return outln!("{}", super::json(&report));
    }
    let id = &hex::encode(repo.config().repo_id)[..8];
    if u.from == u.to {
        outln!(
            "repository {id} is at format {}, the newest this cairn writes: nothing to do",
            u.from
        )
    } else {
        outln!(
            "{} repository {id} from format {} to {}: backups from now on write {}; \
             nothing stored is rewritten; a cairn that writes format {} or older can no \
             longer open it",
            if u.upgraded {
                "upgraded"
            } else {
                "would upgrade"
            },
            u.from,
            u.to,
            format_additions(u.from),
            u.from
        )
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("4095"), Ok(4095));
        assert_eq!(parse_size("3g"), Ok(3 << 30));
        // Sizes whose bytes pass u64 must not wrap round to small ones.
        for big in [
            "4G",
            "17179869184K",
            "18014398509481985K",
            "99999999999999999999",
        ] {
            let e = parse_size(big).unwrap_err();
            assert!(e.contains("too large"), "{big}: {e}");
        }
        for bad in ["", "K", "1T", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
