#!/usr/bin/env python3
"""Markdown tables from benchmark results, optionally written into a doc.

    report.py peers RESULTS_DIR [--criterion DIR] [--docs FILE]
    report.py micro [--criterion DIR] [--docs FILE]
    report.py index JSON [--docs FILE]

`peers` reads peers.tsv and meta.json written by benches/peers.sh; `micro`
reads criterion's target/criterion/**/new/{benchmark,estimates}.json;
`index` reads the JSON written by `cargo bench --bench index10m`. Each
prints its table and, with --docs, replaces the text between
`<!-- NAME:begin -->` and `<!-- NAME:end -->` in FILE.
"""

import argparse
import csv
import json
import os
import re
import sys

MIB = 1 << 20

STEPS = [
    ("init", "init"),
    ("first_backup", "first backup"),
    ("nochange_backup", "no-change backup"),
    ("mutated_backup", "backup after mutation"),
    ("restore", "restore"),
    ("restore_cold", "restore from a cold repository"),
    ("check", "check, all data read"),
    ("forget_gc", "forget + gc"),
]

# (ratio to the best peer, ratio to restic, strictly faster than the best)
TARGETS = {
    "first_backup": (0.5, None, False),
    "nochange_backup": (1.0, 0.2, True),
    "mutated_backup": (0.5, None, False),
    "restore": (0.3, None, False),
    "check": (0.5, None, False),
    "forget_gc": (1.0, 0.2, True),
}

PEERS = ["restic", "rustic", "borg", "bupstash"]


def replace_section(path, name, body):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = open(path).read()
    pat = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pat.search(text):
        sys.exit(f"{path}: markers {begin} ... {end} not found")
    text = pat.sub(lambda _: f"{begin}\n{body.rstrip()}\n{end}", text)
    open(path, "w").write(text)
    print(f"updated {path} ({name})", file=sys.stderr)


def fmt_secs(s):
    if s is None:
        return "–"
    if s < 1:
        return f"{s:.3f}"
    return f"{s:.2f}" if s < 10 else f"{s:.1f}"


def fmt_mib(kib):
    return "–" if kib is None else f"{kib / 1024:.0f}"


def fmt_size(b):
    if b is None:
        return "–"
    return f"{b / MIB:.0f} MiB" if b < 10 * (1 << 30) else f"{b / (1 << 30):.1f} GiB"


def fmt_cpu(c):
    if c is None:
        return "–"
    return f"{c:.2f}" if c < 10 else f"{c:.1f}"


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


# ---------------------------------------------------------------- criterion


def load_criterion(root):
    """{id: (median ns, throughput dict)} for every benchmark under root."""
    out = {}
    if not os.path.isdir(root):
        return out
    for d, _, files in os.walk(root):
        if os.path.basename(d) != "new" or "benchmark.json" not in files:
            continue
        bench = json.load(open(os.path.join(d, "benchmark.json")))
        est = json.load(open(os.path.join(d, "estimates.json")))
        out[bench["full_id"]] = (est["median"]["point_estimate"], bench.get("throughput"))
    return out


def rate(entry):
    """MiB/s for byte throughputs, elements/s for element throughputs."""
    ns, tp = entry
    if not tp:
        return None, ""
    if "Bytes" in tp:
        return tp["Bytes"] / (ns / 1e9) / MIB, "MiB/s"
    if "BytesDecimal" in tp:
        return tp["BytesDecimal"] / (ns / 1e9) / MIB, "MiB/s"
    return tp["Elements"] / (ns / 1e9), "/s"


def fmt_rate(v, unit):
    if v is None:
        return "–"
    if unit == "/s":
        return f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.0f} k/s"
    return f"{v:,.0f} MiB/s"


# (criterion id, what it is, ceiling id or None)
MICRO_ROWS = [
    ("chunker/fastcdc_default", "FastCDC cut points, 512K/1M/8M, 1 thread (cairn::gear)", None),
    ("chunker/fastcdc_crate", "the same cut points by the fastcdc crate's search, 1 thread", None),
    ("chunker/fastcdc_16k", "FastCDC cut points, 4K/16K/64K, 1 thread (cairn::gear)", None),
    ("chunker/fastcdc_crate_16k", "the same cut points by the fastcdc crate's search, 1 thread", None),
    ("hash/blob_id_1MiB", "keyed BLAKE3 blob ids of 1 MiB chunks, 1 thread", "limits/blake3_1thread"),
    ("chunk_hash/1thread", "FastCDC + keyed BLAKE3, 1 thread", "limits/blake3_1thread"),
    ("chunk_hash/2threads", "FastCDC + keyed BLAKE3, 2 threads", "limits/blake3_2threads"),
    ("compress/encode/text", "blob encode, source-like text (zstd 3)", "limits/zstd3_text_1thread"),
    ("compress/encode/random", "blob encode, incompressible (sampled, stored raw)", None),
    ("compress/decode/text", "blob decode, text", None),
    ("compress/decode/random", "blob decode, incompressible", None),
    ("seal/xaes-256-gcm", "encrypt 1 MiB blobs, XAES-256-GCM (what init chooses)", None),
    ("seal/xchacha20-poly1305", "encrypt 1 MiB blobs, XChaCha20-Poly1305", None),
    ("open/xaes-256-gcm", "decrypt 1 MiB blobs, XAES-256-GCM", None),
    ("open/xchacha20-poly1305", "decrypt 1 MiB blobs, XChaCha20-Poly1305", None),
    ("pack/write/text", "seal 1 MiB blobs into a pack, text", "limits/zstd3_text_1thread"),
    ("pack/write/random", "seal 1 MiB blobs into a pack, incompressible", None),
    ("pack/stream/text", "seal 1 MiB blobs into a pack streamed to a local folder, text", "limits/zstd3_text_1thread"),
    ("pack/stream/random", "seal 1 MiB blobs into a pack streamed to a local folder, incompressible", None),
    ("tree/encode_1000_nodes", "tree encode (nodes/s)", None),
    ("tree/decode_1000_nodes", "tree decode with checks (nodes/s)", None),
]

LIMIT_ROWS = [
    ("limits/blake3_1thread", "BLAKE3, 1 thread"),
    ("limits/blake3_2threads", "BLAKE3, 2 threads"),
    ("limits/zstd3_text_1thread", "zstd level 3 on source-like text, 1 thread"),
    ("limits/pagecache_read", "page-cache read (64 MiB file, 1 MiB reads)"),
    ("limits/pagecache_write", "page-cache write (64 MiB file, 1 MiB writes)"),
]


def conditions(path):
    """A line naming when a result file was written and under what load."""
    import datetime
    # A folder's own mtime changes only when entries are added or removed,
    # so for criterion's folder take the newest result file in it.
    stamp = os.path.getmtime(path)
    if os.path.isdir(path):
        for d, _, files in os.walk(path):
            for f in files:
                if f == "estimates.json":
                    stamp = max(stamp, os.path.getmtime(os.path.join(d, f)))
    when = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc)
    label = os.environ.get("BENCH_LABEL") or "conditions not stated"
    load = open("/proc/loadavg").read().split()[0]
    return (f"**Run:** {when:%Y-%m-%d %H:%M} UTC, {label}; load average "
            f"{load} when this table was written.\n\n")


def micro_table(crit, root):
    lines = [conditions(root).rstrip(), "", "| machine limit | throughput |", "|---|---:|"]
    for cid, what in LIMIT_ROWS:
        if cid in crit:
            lines.append(f"| {what} | {fmt_rate(*rate(crit[cid]))} |")
    lines += ["", "| cairn code | throughput | ceiling | share of ceiling |", "|---|---:|---:|---:|"]
    for cid, what, ceiling in MICRO_ROWS:
        if cid not in crit:
            continue
        v, unit = rate(crit[cid])
        c = rate(crit[ceiling])[0] if ceiling and ceiling in crit else None
        share = f"{100 * v / c:.0f}%" if c else "–"
        lines.append(
            f"| {what} | {fmt_rate(v, unit)} | {fmt_rate(c, 'MiB/s') if c else '–'} | {share} |"
        )
    idx = sorted(k for k in crit if k.startswith("index/"))
    if idx:
        lines += ["", "| index table lookups (one thread) | rate |", "|---|---:|"]
        for k in idx:
            _, fn, n = k.split("/")
            lines.append(f"| `{fn}` in a table of {int(n):,} entries | {fmt_rate(*rate(crit[k]))} |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------- peers


def load_peers(results):
    best = {}  # (tool, step) -> (secs, rss)
    figures = {}  # (tool, key) -> value (last run wins)
    failed = set()
    cpu = {}  # (tool, step) -> least CPU seconds (user + system) of the runs
    with open(os.path.join(results, "peers.tsv")) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            tool, step = row["tool"], row["step"]
            if row["max_rss_kib"] == "":
                # A restore that differed in any run stays "no".
                if not (step.endswith("_identical") and figures.get((tool, step)) == "no"):
                    figures[(tool, step)] = row["secs"]
                continue
            if row["status"] != "ok":
                failed.add((tool, step))
                continue
            s, m = float(row["secs"]), int(row["max_rss_kib"])
            old = best.get((tool, step))
            best[(tool, step)] = (min(s, old[0]), min(m, old[1])) if old else (s, m)
            if row.get("cpu_secs"):  # results of harnesses before it have none
                c = float(row["cpu_secs"])
                cpu[(tool, step)] = min(c, cpu.get((tool, step), c))
    meta = json.load(open(os.path.join(results, "meta.json")))
    return best, figures, failed, meta, cpu


def peers_table(results, crit):
    best, figures, failed, meta, cpu = load_peers(results)
    tools = [t for t in ["cairn"] + PEERS if any(k[0] == t for k in best)]
    peers = [t for t in tools if t != "cairn"]
    ds = meta["dataset"]
    out = []
    label = meta.get("label") or "conditions not stated"
    out.append(f"**Run:** {meta['date']}, {label}.  ")
    out.append(
        f"**Machine:** {meta['cpu']}, {meta['cores']} cores, {meta['ram_gib']} GiB RAM, "
        f"Linux {meta['kernel']}"
        + (f", working folder on {' '.join(meta['fs'].split())}" if meta.get("fs") else "")
        + f"; load average before {meta['load'].split()[0]}, "
        f"after {meta.get('load_after', '?').split()[0]}.  "
    )
    out.append(
        f"**Data:** {ds['all']['files']:,} files, {fmt_size(ds['all']['bytes'])} "
        f"({ds['small']['files']:,} small source-like files, {fmt_size(ds['small']['bytes'])}; "
        f"mix of {ds['mix']['files']:,} files, {fmt_size(ds['mix']['bytes'])}, "
        f"of which {fmt_size(ds['media']['bytes'])} incompressible); "
        "mutation: 2% of files changed, 0.5% deleted, 1% added.  "
    )
    out.append("**Versions:** " + ", ".join(f"{t} `{v}`" for t, v in meta["versions"].items()) + ".")
    out.append("")
    out.append("Wall time in seconds / peak RSS in MiB (best of the runs for each step).")
    out.append("")
    hdr = "| step | " + " | ".join(tools) + " | cairn / best peer | target | met | RSS: cairn / leanest | met |"
    out.append(hdr)
    out.append("|---|" + "---:|" * len(tools) + "---:|---|---|---:|---|")
    for step, name in STEPS:
        cells = []
        for t in tools:
            v = best.get((t, step))
            if (t, step) in failed:
                cells.append("failed")
            else:
                cells.append(f"{fmt_secs(v[0])} / {fmt_mib(v[1])}" if v else "–")
        c = best.get(("cairn", step))
        pv = [(best[(p, step)], p) for p in peers if (p, step) in best]
        ratio = rss_ratio = None
        target = met = rss_met = "–"
        if c and pv:
            (bt, _), bp = min(pv, key=lambda x: x[0][0])
            lean = min(v[1] for v, _ in pv)
            ratio = c[0] / bt if bt > 0 else None
            rss_ratio = c[1] / lean
            rss_met = "yes" if rss_ratio <= 1.0 else "no"
            if step in TARGETS:
                lim, vs_restic, strict = TARGETS[step]
                target = (f"< 1× best" if strict else f"≤ {lim}× best") + (
                    f", ≤ {vs_restic}× restic" if vs_restic else "")
                ok = ratio is not None and (ratio < lim if strict else ratio <= lim)
                if vs_restic and ("restic", step) in best:
                    ok = ok and c[0] / best[("restic", step)][0] <= vs_restic
                met = "yes" if ok else "**no**"
            cells_ratio = f"{fmt_ratio(ratio)} ({bp})"
        else:
            cells_ratio = "–"
        out.append(
            f"| {name} | " + " | ".join(cells) + f" | {cells_ratio} | {target} | {met} | "
            f"{fmt_ratio(rss_ratio)} | {rss_met} |"
        )
    for key, name in (("repo_bytes_3snap", "repository size, 3 snapshots"),
                      ("repo_bytes_final", "repository size after forget + gc")):
        sizes = {t: int(figures[(t, key)]) for t in tools if (t, key) in figures}
        cells = [fmt_size(sizes.get(t)) for t in tools]
        ps = [sizes[p] for p in peers if p in sizes]
        if "cairn" in sizes and ps:
            r = sizes["cairn"] / min(ps)
            tail = f" | {fmt_ratio(r)} (smallest) | ≤ 1× smallest | {'yes' if r <= 1 else '**no**'} | | |"
        else:
            tail = " | – | | | | |"
        out.append(f"| {name} | " + " | ".join(cells) + tail)
    pw = best.get(("cairn", "nochange_backup_password"))
    if pw:
        out.append("")
        out.append(
            "cairn runs every step after `init` with an exported key (`cairn key export`, "
            "`CAIRN_KEY_FILE`), as a nightly job would and as bupstash always does. "
            f"Opened with its password instead, a no-change backup (after the mutation) took "
            f"{fmt_secs(pw[0])} s / {fmt_mib(pw[1])} MiB: the Argon2id derivation."
        )
    def identical(t):
        said = [figures.get((t, k)) for k in ("restore_identical", "restore_cold_identical")]
        said = [v for v in said if v is not None]
        return "?" if not said else ("yes" if all(v == "yes" for v in said) else "no")

    ident = [f"{t}: {identical(t)}" for t in tools]
    out.append("")
    out.append(
        "Restores (warm and cold) byte-identical to the source (`diff -r`): "
        + ", ".join(ident) + "."
    )
    if peers:
        out.append("")
        out.append("cairn / each peer, wall time:")
        out.append("")
        out.append("| step | " + " | ".join(peers) + " |")
        out.append("|---|" + "---:|" * len(peers))
        for step, name in STEPS:
            c = best.get(("cairn", step))
            cells = []
            for p in peers:
                v = best.get((p, step))
                cells.append(fmt_ratio(c[0] / v[0]) if c and v and v[0] > 0 else "–")
            out.append(f"| {name} | " + " | ".join(cells) + " |")

    if cpu and peers:
        out.append("")
        out.append(
            "CPU time in seconds, user + system (the least of the runs for each step), "
            "and cairn / the peer that used the least:"
        )
        out.append("")
        out.append("| step | " + " | ".join(tools) + " | cairn / least |")
        out.append("|---|" + "---:|" * len(tools) + "---:|")
        for step, name in STEPS:
            cells = [fmt_cpu(cpu.get((t, step))) for t in tools]
            c = cpu.get(("cairn", step))
            pv = [(cpu[(p, step)], p) for p in peers if (p, step) in cpu]
            least = min(pv) if pv else None
            r = (f"{fmt_ratio(c / least[0])} ({least[1]})"
                 if c is not None and least and least[0] > 0 else "–")
            out.append(f"| {name} | " + " | ".join(cells) + f" | {r} |")

    parts = parts_table(best, figures, failed, cpu, ds.get("parts", {}), tools)
    if parts:
        out.append("")
        out.extend(parts)

    # cairn against the machine's own limits.
    rows = []
    media = best.get(("cairn", "media_backup"))
    media_bytes = figures.get(("cairn", "media_bytes"))
    lim = crit.get("chunk_hash/2threads")
    if media and media_bytes:
        mbs = int(media_bytes) / media[0] / MIB
        l = rate(lim)[0] if lim else None
        rows.append(("first backup of incompressible data (mix/media)", mbs,
                     "FastCDC + BLAKE3, 2 threads", l, 0.7))
        direct = best.get(("folder", "write_direct"))
        direct_mib = figures.get(("folder", "write_direct_mib"))
        if direct and direct_mib and direct[0] > 0:
            # No target: what the folder takes of the bytes that backup
            # writes, the same way (direct IO, then fsync).
            rows.append(("first backup of incompressible data (mix/media)", mbs,
                         f"direct-IO write into the working folder ({int(direct_mib):,} MiB, "
                         "dd oflag=direct conv=fsync)", int(direct_mib) / direct[0], None))
    restore = best.get(("cairn", "restore"))
    pcw = crit.get("limits/pagecache_write")
    probe = best.get(("folder", "write"))
    probe_mib = figures.get(("folder", "write_mib"))
    if restore:
        b = ds["all"]["bytes"]
        if probe and probe_mib and probe[0] > 0:
            # The working folder's own write rate, measured in the run.
            rows.append(("restore of the whole dataset", b / restore[0] / MIB,
                         f"page-cache write into the working folder ({int(probe_mib):,} MiB, dd)",
                         int(probe_mib) / probe[0], 0.7))
        else:
            rows.append(("restore of the whole dataset", b / restore[0] / MIB,
                         "page-cache write", rate(pcw)[0] if pcw else None, 0.7))
    if rows:
        out.append("")
        out.append("cairn against this machine's limits (FastCDC + BLAKE3 from `cargo bench "
                   "--bench micro`; the working folder's write rates measured in this run):")
        out.append("")
        out.append("| cairn | MiB/s | limit | MiB/s | share | target | met |")
        out.append("|---|---:|---|---:|---:|---|---|")
        for what, v, lname, l, t in rows:
            share = v / l if l else None
            met = "–" if share is None or t is None else ("yes" if share >= t else "**no**")
            target = "–" if t is None else f"≥ {int(t * 100)}%"
            out.append(
                f"| {what} | {v:,.0f} | {lname} | {'–' if l is None else f'{l:,.0f}'} | "
                f"{'–' if share is None else f'{100 * share:.0f}%'} | {target} | {met} |"
            )
    if failed:
        out.append("")
        out.append("Failed steps (see the logs in the work folder): "
                   + ", ".join(f"{t} {s}" for t, s in sorted(failed)) + ".")
    return "\n".join(out) + "\n"


PARTS = ["small", "data", "logs", "media", "dup", "shift"]
PART_NAMES = {
    "small": "small/: source-like files",
    "data": "mix/data: half random, half text",
    "logs": "mix/logs: log text",
    "media": "mix/media: incompressible",
    "dup": "mix/dup: copies of mix/data files",
    "shift": "mix/shift: mix/data files with bytes inserted",
}


def parts_table(best, figures, failed, cpu, sizes, tools):
    """Lines of the first-backup-by-part tables (BENCH_PARTS=1), or []."""
    parts = [p for p in PARTS if any((t, "part_" + p) in best for t in tools)]
    if not parts:
        return []
    peers = [t for t in tools if t != "cairn"]
    out = ["First backup of each part of the dataset alone, into a fresh repository "
           "(`BENCH_PARTS=1`): wall time in seconds (best of the runs) and MiB stored, "
           "then CPU seconds (least of the runs). The parts of a whole first backup "
           "share one repository, so there dup/ and shift/ mostly deduplicate against "
           "data/; alone, each is stored in full.", ""]
    out.append("| part | " + " | ".join(tools) + " | cairn / best peer | stored: cairn / smallest |")
    out.append("|---|" + "---:|" * len(tools) + "---:|---:|")
    for p in parts:
        step = "part_" + p
        cells = []
        for t in tools:
            v, b = best.get((t, step)), figures.get((t, step + "_bytes"))
            if (t, step) in failed:
                cells.append("failed")
            else:
                cells.append(f"{fmt_secs(v[0])} s, {int(b) / MIB:.0f} MiB" if v and b else "–")
        c, cb = best.get(("cairn", step)), figures.get(("cairn", step + "_bytes"))
        pv = [(best[(q, step)][0], q) for q in peers if (q, step) in best]
        pb = [(int(figures[(q, step + "_bytes")]), q) for q in peers
              if (q, step + "_bytes") in figures]
        r = f"{fmt_ratio(c[0] / min(pv)[0])} ({min(pv)[1]})" if c and pv and min(pv)[0] > 0 else "–"
        rb = f"{fmt_ratio(int(cb) / min(pb)[0])} ({min(pb)[1]})" if cb and pb else "–"
        size = sizes.get(p)
        label = PART_NAMES[p] + (
            f" ({size['files']:,} files, {fmt_size(size['bytes'])})" if size else "")
        out.append(f"| {label} | " + " | ".join(cells) + f" | {r} | {rb} |")
    if cpu:
        out.append("")
        out.append("| part, CPU seconds | " + " | ".join(tools) + " | cairn / least |")
        out.append("|---|" + "---:|" * len(tools) + "---:|")
        for p in parts:
            step = "part_" + p
            cells = [fmt_cpu(cpu.get((t, step))) for t in tools]
            c = cpu.get(("cairn", step))
            pv = [(cpu[(q, step)], q) for q in peers if (q, step) in cpu]
            r = (f"{fmt_ratio(c / min(pv)[0])} ({min(pv)[1]})"
                 if c is not None and pv and min(pv)[0] > 0 else "–")
            out.append(f"| {p} | " + " | ".join(cells) + f" | {r} |")
    return out



# -------------------------------------------------------------------- index


def index_table(path):
    r = json.load(open(path))
    head = conditions(path)

    def mib(run, key):
        return f"{run[key] / 1024:.0f} MiB" if key in run else "–"

    def row(label, run):
        return f"| {label} | {run['secs']:.2f} s | {mib(run, 'max_rss_kib')} | {mib(run, 'max_anon_kib')} |"

    b, a = r["nochange_before"], r["nochange_after"]
    lines = [
        head + f"{r['entries_total']:,} index entries in {r['tables_total']} tables "
        f"({fmt_size(r['table_bytes'])} of synthetic tables in {r.get('synthetic_tables', 1)}, "
        f"written in {r['build_secs']:.1f} s).",
        "",
        "| opened with an exported key | wall time | peak RSS | of it anonymous |",
        "|---|---:|---:|---:|",
        row("no-change backup of 1,000 files, before the synthetic entries", b),
        row(f"the same, with {r['entries']:,} more entries", a),
    ]
    if "nochange_after_cold" in r:
        lines.append(row("the same, the index tables dropped from the page cache first",
                         r["nochange_after_cold"]))
    if "newfiles_after" in r:
        n = r["new_files"]
        lines += [
            row(f"backup of {n:,} new tiny files (a miss each), before the synthetic entries",
                r["newfiles_before"]),
            row(f"the same with {r['entries']:,} more entries (other files)", r["newfiles_after"]),
        ]
    if "gc_after" in r:
        lines += [
            row("gc before the synthetic entries (nothing to do)", r["gc_before"]),
            row(f"gc dropping the {r['entries']:,} synthetic entries (their packs do not exist)",
                r["gc_after"]),
        ]
    lines += [
        "",
        "| lookup in the index (one thread, random ids) | rate |",
        "|---|---:|",
        f"| hits, searching the tables (entries read with `pread`) | "
        f"{r['lookup_hits_per_sec'] / 1e6:.2f} M/s |",
        f"| misses, searching every table (the same) | {r['lookup_misses_per_sec'] / 1e6:.2f} M/s |",
    ]
    if "filter_bytes" in r:
        lines += [
            f"| misses through the filter of every id ({fmt_size(r['filter_bytes'])} in memory, "
            f"built after {r['filter_after_misses']:,} misses in {r['filter_build_secs']:.2f} s) | "
            f"{r['lookup_misses_per_sec_filter'] / 1e6:.2f} M/s |",
        ]
    if "lookup_hits_per_sec_directory" in r:
        lines += [
            f"| hits through the tables' directories ({fmt_size(r['directory_bytes'])} "
            f"in memory, built in {r['directory_build_secs']:.2f} s) | "
            f"{r['lookup_hits_per_sec_directory'] / 1e6:.2f} M/s |",
            f"| misses through the filter and the directories | "
            f"{r['lookup_misses_per_sec_directory'] / 1e6:.2f} M/s |",
        ]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["peers", "micro", "index"])
    ap.add_argument("path", nargs="?")
    ap.add_argument("--criterion", default=None)
    ap.add_argument("--docs", default=None)
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    crit_dir = a.criterion or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "criterion")
    crit = load_criterion(crit_dir)
    if a.what == "peers":
        body = peers_table(a.path, crit)
    elif a.what == "micro":
        body = micro_table(crit, crit_dir)
    else:
        body = index_table(a.path or os.path.join(root, "target", "bench-results", "index10m.json"))
    print(body)
    if a.docs:
        replace_section(a.docs, a.what, body)


if __name__ == "__main__":
    main()
