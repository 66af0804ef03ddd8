//! The built `cairn` binary itself: how it is linked.

#![cfg(all(target_os = "linux", target_pointer_width = "64"))]

use std::process::Command;

const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_RELASZ: u64 = 8;
const DT_RELR: u64 = 36;

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The (tag, value) pairs of a little-endian ELF64 file's dynamic section.
fn dynamic_entries(elf: &[u8]) -> Vec<(u64, u64)> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    let (phoff, phentsize, phnum) = (
        u64_at(elf, 0x20) as usize,
        u16_at(elf, 0x36),
        u16_at(elf, 0x38),
    );
    let dynamic = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == PT_DYNAMIC)
        .expect("a dynamically linked binary has PT_DYNAMIC");
    let (offset, size) = (
        u64_at(elf, dynamic + 8) as usize,
        u64_at(elf, dynamic + 32) as usize,
    );
    elf[offset..offset + size]
        .chunks_exact(16)
        .map(|e| (u64_at(e, 0), u64_at(e, 8)))
        .take_while(|&(tag, _)| tag != DT_NULL)
        .collect()
}

/// build.rs links the binary with packed relative relocations when the
/// toolchain supports them (and says so with `cfg(cairn_relr)`): then the
/// loader finds a `DT_RELR` table and only a few classic relocations,
/// instead of half a megabyte of them to read at every start.
#[test]
fn relative_relocations_are_packed_when_the_toolchain_can() {
    let exe = env!("CARGO_BIN_EXE_cairn");
    let entries = dynamic_entries(&std::fs::read(exe).unwrap());
    let relr = entries.iter().any(|&(tag, _)| tag == DT_RELR);
    let rela_bytes = entries
        .iter()
        .find(|&&(tag, _)| tag == DT_RELASZ)
        .map_or(0, |&(_, v)| v);
    if cfg!(cairn_relr) {
        assert!(relr, "build.rs asked for DT_RELR but {exe} has none");
        assert!(
            rela_bytes < 64 * 1024,
            "{exe} still has {rela_bytes} bytes of RELA relocations"
        );
    } else {
        assert!(!relr, "{exe} has DT_RELR although build.rs did not ask");
    }
    let out = Command::new(exe).arg("--version").output().unwrap();
    assert!(out.status.success(), "{exe} --version failed: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cairn "));
}
