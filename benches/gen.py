#!/usr/bin/env python3
"""Deterministic datasets for benches/peers.sh.

    gen.py create ROOT [--small-files N] [--mix-mib M] [--seed S]
    gen.py mutate ROOT [--seed S]

`create` writes ROOT/small (N source-like files, 100 per folder) and
ROOT/mix (about M MiB: partly compressible large files, incompressible
"media" files in mix/media, many medium logs, exact duplicates and copies
shifted by a few bytes). `mutate` is the nightly change: about 2% of the
files are edited, appended to, or replaced, 0.5% are deleted and 1% added.
The same arguments always produce the same bytes and names.
"""

import argparse
import os
import random
import sys

MIB = 1 << 20


def line_pool(rng, n=6000):
    words = (
        "fn let mut self return match impl struct pub use if else for in while "
        "Result Option Vec String u64 usize Error Ok Err Some None where async "
        "await move ref const static trait type enum mod crate super loop break"
    ).split()
    pool = []
    for _ in range(n):
        indent = " " * (4 * rng.randint(0, 3))
        body = " ".join(rng.choices(words, k=rng.randint(2, 10)))
        ident = "v%x" % rng.getrandbits(20)
        pool.append(f"{indent}{body} {ident};")
    return pool


def text(rng, pool, size):
    out = []
    total = 0
    while total < size:
        lines = rng.choices(pool, k=256)
        chunk = "\n".join(lines) + "\n"
        out.append(chunk)
        total += len(chunk)
    return "".join(out).encode()[:size]


def partly_compressible(rng, pool, size):
    """64 KiB blocks, each either random or text, about half and half."""
    blocks = []
    total = 0
    while total < size:
        n = min(64 * 1024, size - total)
        blocks.append(rng.randbytes(n) if rng.random() < 0.5 else text(rng, pool, n))
        total += n
    return b"".join(blocks)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def create(root, small_files, mix_mib, seed):
    rng = random.Random(seed)
    pool = line_pool(rng)
    header = text(rng, pool, 600)
    for i in range(small_files):
        d = os.path.join(root, "small", "d%03d" % (i // 1000), "e%02d" % (i // 100 % 10))
        size = int(rng.lognormvariate(8.0, 1.0)) + 64
        write(os.path.join(d, "f%05d.rs" % i), header + text(rng, pool, min(size, 256 * 1024)))

    budget = mix_mib * MIB
    made = []  # (path, size) of large originals, for duplicates and shifts

    def large(kind, share):
        nonlocal made
        target = int(budget * share)
        done = 0
        k = 0
        while done < target:
            size = min(rng.randint(4 * MIB, 96 * MIB), max(target - done, MIB))
            if kind == "media":
                path = os.path.join(root, "mix", "media", "m%03d.bin" % k)
                data = rng.randbytes(size)
            else:
                path = os.path.join(root, "mix", "data", "p%03d.dat" % k)
                data = partly_compressible(rng, pool, size)
            write(path, data)
            made.append((path, size))
            done += size
            k += 1

    large("data", 0.45)
    large("media", 0.20)

    # Logs: many medium text files.
    target = int(budget * 0.10)
    done = 0
    k = 0
    while done < target:
        size = rng.randint(64 * 1024, 2 * MIB)
        write(os.path.join(root, "mix", "logs", "l%02d" % (k // 50), "app%04d.log" % k),
              text(rng, pool, size))
        done += size
        k += 1

    # Exact duplicates and copies shifted by a few inserted bytes.
    originals = sorted(made)
    for kind, share in (("dup", 0.15), ("shift", 0.10)):
        target = int(budget * share)
        done = 0
        k = 0
        while done < target and originals:
            path, size = rng.choice(originals)
            with open(path, "rb") as f:
                data = f.read()
            if kind == "shift":
                at = rng.randint(0, len(data))
                data = data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]
            write(os.path.join(root, "mix", kind, "%s%03d%s" % (kind, k, os.path.splitext(path)[1])),
                  data)
            done += len(data)
            k += 1


def files_under(root):
    out = []
    for d, dirs, names in os.walk(root):
        dirs.sort()
        out.extend(os.path.join(d, n) for n in sorted(names))
    return sorted(out)


def mutate(root, seed):
    rng = random.Random(seed + 1)
    pool = line_pool(random.Random(seed))
    files = files_under(root)
    changed = rng.sample(files, max(1, len(files) * 2 // 100))
    for path in changed:
        size = os.path.getsize(path)
        how = rng.random()
        with open(path, "r+b") as f:
            if size > 4 * MIB and how < 0.6:
                # Overwrite a few scattered 64 KiB regions in place.
                for _ in range(3):
                    f.seek(rng.randrange(0, size - 65536))
                    f.write(rng.randbytes(65536))
            elif how < 0.8:
                f.seek(0, os.SEEK_END)
                f.write(text(rng, pool, min(max(size // 20, 200), MIB)))
            else:
                f.seek(rng.randrange(0, max(size, 1)))
                f.write(text(rng, pool, min(4096, size)))
    rest = sorted(set(files) - set(changed))
    for path in rng.sample(rest, len(files) // 200):
        os.remove(path)
    for i in range(len(files) // 100):
        write(os.path.join(root, "small", "new", "n%05d.rs" % i), text(rng, pool, rng.randint(200, 20000)))
    print(f"mutated {len(changed)} files, deleted {len(files) // 200}, added {len(files) // 100}",
          file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["create", "mutate"])
    ap.add_argument("root")
    ap.add_argument("--small-files", type=int, default=20000)
    ap.add_argument("--mix-mib", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args()
    if a.action == "create":
        create(a.root, a.small_files, a.mix_mib, a.seed)
    else:
        mutate(a.root, a.seed)


if __name__ == "__main__":
    main()
