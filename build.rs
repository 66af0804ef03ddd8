//! Links the `cairn` binary with packed relative relocations (`DT_RELR`)
//! where the toolchain and C library support them.
//!
//! A position-independent Rust binary carries one 24-byte relocation per
//! pointer in its read-only data (vtables, panic locations, string tables):
//! half a megabyte that the dynamic loader reads at every start, on top of
//! the pages it patches. Packed, they take a few kilobytes, and every
//! command starts about a megabyte smaller (DESIGN.md, "Modules").
//!
//! The flag needs GNU ld ≥ 2.38 or lld and, at run time, glibc ≥ 2.36
//! (the linker then records a `GLIBC_ABI_DT_RELR` version dependency, so an
//! older loader refuses the binary by name rather than misbehaving). It is
//! used only when a probe link with the configured linker succeeds without
//! a warning. `CAIRN_NO_RELR=1` turns it off, for a binary that must run on
//! an older C library than the one it is built against.

use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CAIRN_NO_RELR");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    println!("cargo:rustc-check-cfg=cfg(cairn_relr)");
    if packs_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        println!("cargo:rustc-cfg=cairn_relr");
    }
}

fn packs_relocations() -> bool {
    let var = |k: &str| env::var(k).unwrap_or_default();
    if var("CAIRN_NO_RELR") == "1"
        || var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("TARGET") != var("HOST")
    {
        return false;
    }
    let out = PathBuf::from(var("OUT_DIR"));
    let source = out.join("relr_probe.c");
    if std::fs::write(&source, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    let linker = env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    let probe = Command::new(linker)
        .arg(&source)
        .arg("-o")
        .arg(out.join("relr_probe"))
        .args([
            "-pie",
            "-fPIE",
            "-Wl,-z,pack-relative-relocs",
            "-Wl,--fatal-warnings",
        ])
        .stdin(Stdio::null())
        .output();
    matches!(probe, Ok(o) if o.status.success() && o.stderr.is_empty())
}
