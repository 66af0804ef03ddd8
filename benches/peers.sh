#!/usr/bin/env bash
# cairn against restic, rustic, borg and bupstash on the same data, one
# tool after another: init, first backup, no-change backup, backup after a
# nightly mutation, restore (checked byte for byte), the same restore from
# a cold repository, check with all data read, forget + gc, repository
# size. Peak RSS of every step comes from GNU
# time, wall time from the clock around it (to the millisecond); every step
# starts after a sync. Installs nothing: peers missing from PATH are skipped.
#
#   benches/peers.sh                 # full run: 20 000 small files + 2 GiB mix
#   BENCH_MIX_MIB=256 benches/peers.sh   # quick run
#
# Environment:
#   BENCH_DIR          work folder (default target/peers); datasets are kept
#                      there and reused while their parameters match
#   BENCH_SMALL_FILES  small source-like files (default 20000)
#   BENCH_MIX_MIB      size of the large-file mix in MiB (default 2048)
#   BENCH_TOOLS        tools to run (default "cairn restic rustic borg bupstash")
#   BENCH_RUNS         runs per tool; the report keeps each step's best (default 1)
#   BENCH_LABEL        conditions written next to the table (default "")
#   BENCH_DOCS         0 to leave docs/PERFORMANCE.md alone (default 1)
#   BENCH_PARTS        1 to also time each tool's first backup of every part
#                      of the dataset alone (small/, mix/data, mix/logs, ...),
#                      into a fresh repository each: where the first
#                      backup's time goes, by kind of data (default 0)
#   BORG_ENCRYPTION    borg's mode (default repokey-blake2)
#   BENCH_PREFAULT_MIB memory touched and freed right before each step that
#                      fills memory (default: the dataset's size + 1024; 0
#                      for none; see prefault)
#
# Results: $BENCH_DIR/results/peers.tsv and meta.json, rendered by
# benches/report.py into docs/PERFORMANCE.md between the peers markers.
#
# Put BENCH_DIR on a journaled filesystem. The steps delete trees of
# 20 000 files between them; ext4 without a journal (the root filesystem
# of the benchmark machines) then skips the inodes freed in the last
# minutes when it creates files, rescanning them for every new file, so
# restores there measured the harness's own deletions and moved 2x
# between runs. An ext4 image on a loop device works; give the loop
# device direct IO, or every write is cached twice (in the image's
# filesystem and in the root filesystem's cache of the image file) and
# the kernel's writeback of the image file takes a core's worth of CPU
# from whichever tool is writing:
#   truncate -s 60G /var/tmp/bench.img && mkfs.ext4 -q /var/tmp/bench.img
#   mount "$(losetup --direct-io=on -f --show /var/tmp/bench.img)" /mnt/bench
#   BENCH_DIR=/mnt/bench/peers benches/peers.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo_root="$(cd "$here/.." && pwd)"
cd "$repo_root"

BENCH_DIR="${BENCH_DIR:-$repo_root/target/peers}"
BENCH_SMALL_FILES="${BENCH_SMALL_FILES:-20000}"
BENCH_MIX_MIB="${BENCH_MIX_MIB:-2048}"
BENCH_TOOLS="${BENCH_TOOLS:-cairn restic rustic borg bupstash}"
BENCH_RUNS="${BENCH_RUNS:-1}"
BENCH_LABEL="${BENCH_LABEL:-}"
BENCH_DOCS="${BENCH_DOCS:-1}"
BENCH_PARTS="${BENCH_PARTS:-0}"
BORG_ENCRYPTION="${BORG_ENCRYPTION:-repokey-blake2}"
PASSWORD="peers-bench-password"
TIME=/usr/bin/time

log() { printf '[peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=benches/settle.sh
. "$here/settle.sh"

[[ -x $TIME ]] || die "GNU time is missing (apt-get install time)"
command -v python3 >/dev/null || die "python3 is missing"

log "building cairn (release)"
cargo build --release --locked --quiet
CAIRN="$repo_root/target/release/cairn"

data="$BENCH_DIR/data"
results="$BENCH_DIR/results"
mkdir -p "$data" "$results"
stamp="small=$BENCH_SMALL_FILES mix=$BENCH_MIX_MIB gen=$(sha256sum "$here/gen.py" | cut -c1-16)"
if [[ ! -f $data/stamp || $(cat "$data/stamp") != "$stamp" ]]; then
  log "generating datasets ($stamp)"
  rm -rf "$data/v1" "$data/stamp"
  python3 "$here/gen.py" create "$data/v1" \
    --small-files "$BENCH_SMALL_FILES" --mix-mib "$BENCH_MIX_MIB"
  echo "$stamp" >"$data/stamp"
fi

# Reads every file under the given paths so the step starts from a warm
# page cache (this kernel drops pages left untouched for about a minute).
warm() {
  find "$@" -type f -print0 | xargs -0 -r cat >/dev/null
  find "$@" >/dev/null
}

# Drops the files under the given paths from the page cache (written back
# first), as a restore years later on another machine finds them: every
# file's clean pages, without root (`posix_fadvise(DONTNEED)` on each).
cold() {
  sync
  python3 - "$@" <<'EOF'
import os, sys
for top in sys.argv[1:]:
    for d, _, files in os.walk(top):
        for name in files:
            try:
                fd = os.open(os.path.join(d, name), os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
EOF
}

# Bytes a repository's files hold. cairn's space reserve (`reserve`:
# allocated, empty space kept for gc on a full filesystem) is left out:
# it holds no data, and the row compares what each tool stores.
repo_bytes() {
  local all reserve
  all=$(du -sb "$1" | cut -f1)
  reserve=$(stat -c %s "$1/reserve" 2>/dev/null || echo 0)
  echo $((all - reserve))
}

# Touches and frees BENCH_PREFAULT_MIB of memory (a file in /dev/shm).
# These machines are virtual and hand free memory back to the hypervisor
# within about a second (virtio-balloon free page reporting); the first
# touch of such a page then faults in the host, which made writing 2 GiB
# into the page cache take 2.1 s after a few seconds idle against 0.4 s
# right after freeing as much. Which steps paid it depended on timing, so
# restores moved 2.5-4.6 s from one to the next. Run right before the
# steps that fill the page cache or the heap with the dataset's size (a
# first backup, whose repository most tools write through the page cache;
# a restore; the folder's dd), it gives every tool memory the host has
# backed, as on a physical machine. Not before the short steps: the host
# takes back the freed memory in the following second, at a cost in CPU
# that doubled a 70 ms no-change backup.
prefault() {
  local mib=${BENCH_PREFAULT_MIB:-0} f=/dev/shm/cairn-bench-prefault
  ((mib > 0)) && [[ -d /dev/shm ]] || return 0
  dd if=/dev/zero of="$f" bs=1M count="$mib" status=none 2>/dev/null || true
  rm -f "$f"
}

tsv="$results/peers.tsv"
printf 'run\ttool\tstep\tsecs\tmax_rss_kib\tstatus\tcpu_secs\n' >"$tsv"

# measure RUN TOOL STEP CMD...: runs CMD under GNU time, appends a row.
measure() {
  local run=$1 tool=$2 step=$3
  shift 3
  local tf="$BENCH_DIR/work/time.out" out="$BENCH_DIR/work/$tool-$step.log" status=ok
  # Every step starts with nothing left to write back from the one before,
  # and those that fill memory with memory the hypervisor has backed.
  sync
  case $step in first_backup | restore | restore_cold | write | media_backup | part_*) prefault ;; esac
  local t0 t1
  t0=$(date +%s%N)
  if ! $TIME -f '%e %M %U %S' -o "$tf" bash -c '"$@"' _ "$@" >"$out" 2>&1; then
    status=failed
    log "$tool $step FAILED; last lines of $out:"
    tail -n 5 "$out" >&2
  fi
  t1=$(date +%s%N)
  read -r _ rss user sys < <(tail -n 1 "$tf")
  # Wall time to the millisecond (GNU time rounds to 10 ms); CPU time,
  # user and system, of the step and every process it waited for.
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$tool" "$step" "$secs" "$rss" "$status" "$cpu" >>"$tsv"
  log "$tool $step: ${secs}s, $((rss / 1024)) MiB${status/ok/}"
  [[ $status == ok ]]
}

record() { # record RUN TOOL KEY VALUE: a non-timed figure
  printf '%s\t%s\t%s\t%s\t\tok\t\n' "$1" "$2" "$3" "$4" >>"$tsv"
}

# The folder inside a restore target that holds small/ and mix/.
restored_root() {
  local d
  d="$(find "$1" -maxdepth 12 -type d -name small -prune -print | head -n 1)"
  [[ -n $d ]] && dirname "$d"
}

check_restore() { # check_restore RUN TOOL TARGET [KEY]
  local root key=${4:-restore_identical}
  root="$(restored_root "$3")" || true
  if [[ -n ${root:-} ]] && diff -r --no-dereference "$src" "$root" >"$BENCH_DIR/work/$2-diff.log" 2>&1; then
    record "$1" "$2" "$key" yes
  else
    log "$2 restore differs from the source (see $BENCH_DIR/work/$2-diff.log)"
    record "$1" "$2" "$key" no
  fi
}

# --- per-tool steps: each defines tool_init, tool_backup N, tool_restore DIR,
# tool_check, tool_forget; the repository is $repo, the source $src.

# cairn's steps after init open the repository with an exported key (as a
# nightly job would, and as bupstash always does); cairn_backup_password
# measures one no-change backup opened with the password instead.
cairn_env() { export CAIRN_PASSWORD=$PASSWORD CAIRN_KEY_FILE=$BENCH_DIR/work/cairn.key; }
cairn_init() {
  rm -f "$CAIRN_KEY_FILE"
  env -u CAIRN_KEY_FILE "$CAIRN" -r "$repo" init &&
    env -u CAIRN_KEY_FILE "$CAIRN" -r "$repo" key export "$CAIRN_KEY_FILE"
}
cairn_backup_password() { env -u CAIRN_KEY_FILE "$CAIRN" -r "$repo" backup "$src"; }
cairn_backup() { "$CAIRN" -r "$repo" backup "$src"; }
# --no-sync: the peers end a restore without waiting for the disk, and so
# does cairn here, for the same work; by default cairn waits (a syncfs of
# the target) so that a restore that succeeded survives a power cut.
cairn_restore() { "$CAIRN" -r "$repo" restore latest --no-sync --target "$1"; }
cairn_check() { "$CAIRN" -r "$repo" verify --read-data; }
cairn_forget() { "$CAIRN" -r "$repo" forget --keep-last 1 --gc; }
cairn_version() { "$CAIRN" --version; }

restic_env() { export RESTIC_PASSWORD=$PASSWORD RESTIC_REPOSITORY=$repo; }
restic_init() { restic init; }
restic_backup() { restic backup --host bench "$src"; }
restic_restore() { restic restore latest --target "$1"; }
restic_check() { restic check --read-data; }
restic_forget() { restic forget --keep-last 1 --prune; }
restic_version() { restic version; }

rustic_env() { export RUSTIC_PASSWORD=$PASSWORD RUSTIC_REPOSITORY=$repo; }
rustic_init() { rustic init; }
rustic_backup() { rustic backup --host bench "$src"; }
rustic_restore() { rustic restore latest "$1"; }
rustic_check() { rustic check --read-data; }
rustic_forget() { rustic forget --keep-last 1 --prune; }
rustic_version() { rustic --version; }

borg_env() {
  export BORG_PASSPHRASE=$PASSWORD BORG_REPO=$repo BORG_BASE_DIR=$BENCH_DIR/work/borg-base
}
borg_init() { borg init --encryption="$BORG_ENCRYPTION"; }
borg_backup() { borg create "::snap-$1" "$src"; }
borg_restore() { (cd "$1" && borg extract "::snap-3"); }
borg_check() { borg check --verify-data; }
borg_forget() { borg prune --keep-last 1 && borg compact; }
borg_version() { borg --version; }

bupstash_env() {
  export BUPSTASH_REPOSITORY=$repo BUPSTASH_KEY=$BENCH_DIR/work/bupstash.key
}
bupstash_init() {
  rm -f "$BUPSTASH_KEY"
  bupstash init && bupstash new-key -o "$BUPSTASH_KEY"
}
bupstash_backup() { bupstash put name=snap-$1 "$src"; }
bupstash_restore() { bupstash get name=snap-3 | tar -x -C "$1"; }
# bupstash has no check that reads all data: fetching the newest snapshot
# in full (decrypting and authenticating every chunk it uses) stands in.
bupstash_check() { bupstash get name=snap-3 >/dev/null; }
bupstash_forget() { bupstash rm --allow-many "name=snap-1 or name=snap-2" && bupstash gc; }
bupstash_version() { bupstash version; }

# GNU time runs each step in a fresh bash, which needs these.
export CAIRN PASSWORD BORG_ENCRYPTION BENCH_DIR
export -f cairn_env cairn_init cairn_backup cairn_backup_password cairn_restore cairn_check cairn_forget \
  restic_init restic_backup restic_restore restic_check restic_forget \
  rustic_init rustic_backup rustic_restore rustic_check rustic_forget \
  borg_init borg_backup borg_restore borg_check borg_forget \
  bupstash_init bupstash_backup bupstash_restore bupstash_check bupstash_forget

available() {
  case $1 in
  cairn) [[ -x $CAIRN ]] ;;
  *) command -v "$1" >/dev/null ;;
  esac
}

run_tool() { # run_tool RUN TOOL
  local run=$1 tool=$2 w="$BENCH_DIR/work"
  rm -rf "$w/$tool"
  mkdir -p "$w/$tool/restore" "$w/cache-$tool"
  export XDG_CACHE_HOME="$w/cache-$tool" XDG_CONFIG_HOME="$w/config-$tool"
  rm -rf "$XDG_CACHE_HOME"/* "$XDG_CONFIG_HOME" "$w/borg-base"
  export repo="$w/$tool/repo" src="$w/$tool/src"
  log "run $run: $tool: copying the dataset"
  cp -a "$data/v1" "$src"
  settle
  "${tool}_env"

  measure "$run" "$tool" init "${tool}_init" || return 0
  warm "$src"
  measure "$run" "$tool" first_backup "${tool}_backup" 1 || return 0
  warm "$src"
  measure "$run" "$tool" nochange_backup "${tool}_backup" 2 || return 0
  python3 "$here/gen.py" mutate "$src" 2>/dev/null
  warm "$src"
  measure "$run" "$tool" mutated_backup "${tool}_backup" 3 || return 0
  record "$run" "$tool" repo_bytes_3snap "$(repo_bytes "$repo")"
  if [[ $tool == cairn ]]; then
    # A fourth snapshot, of unchanged files: restore and forget then work
    # on the same data as for the other tools.
    warm "$src"
    measure "$run" "$tool" nochange_backup_password cairn_backup_password || return 0
  fi
  warm "$repo"
  measure "$run" "$tool" restore "${tool}_restore" "$w/$tool/restore" && check_restore "$run" "$tool" "$w/$tool/restore"
  rm -rf "$w/$tool/restore"
  # Again with the repository and the tool's cache out of the page cache.
  mkdir -p "$w/$tool/restore"
  cold "$repo" "$XDG_CACHE_HOME"
  measure "$run" "$tool" restore_cold "${tool}_restore" "$w/$tool/restore" &&
    check_restore "$run" "$tool" "$w/$tool/restore" restore_cold_identical
  rm -rf "$w/$tool/restore"
  warm "$repo"
  measure "$run" "$tool" check "${tool}_check" || true
  warm "$repo"
  measure "$run" "$tool" forget_gc "${tool}_forget" || true
  record "$run" "$tool" repo_bytes_final "$(repo_bytes "$repo")"
  rm -rf "$w/$tool"
  trim
}

# Hands the blocks of what a tool wrote and the harness deleted back to
# the device. On a loop device (see docs/PERFORMANCE.md, "Rerunning") the
# image file otherwise keeps them: one run left it about 50 GB larger and
# filled the filesystem holding it. Needs root and a device that discards;
# elsewhere it does nothing. Runs between tools, never inside a step.
trim() {
  command -v fstrim >/dev/null || return 0
  fstrim "$(df --output=target "$BENCH_DIR" | tail -n 1)" 2>/dev/null || true
}

# The machine-limit row for the incompressible-data target: cairn's first
# backup of mix/media alone. Right before it, the folder's own rate for
# what that backup does with the bytes: as many written with direct IO
# and fsynced (step "write_direct" of the pseudo-tool "folder").
run_media() { # run_media RUN
  local w="$BENCH_DIR/work"
  export repo="$w/media-repo" src="$data/v1/mix/media"
  rm -rf "$repo"
  cairn_env
  measure "$1" cairn init_media cairn_init || return 0
  export media_mib=$(($(du -sb --apparent-size "$src" | cut -f1) / 1048576))
  if measure "$1" folder write_direct write_direct_probe; then
    record "$1" folder write_direct_mib "$media_mib"
  fi
  rm -f "$w/write-probe"
  warm "$src"
  measure "$1" cairn media_backup cairn_backup || return 0
  record "$1" cairn media_bytes "$(du -sb --apparent-size "$src" | cut -f1)"
  rm -rf "$repo"
  trim
}
# The first backup of each part of the dataset alone, into a fresh
# repository (steps "part_small", "part_data", ...; the bytes stored as
# "part_small_bytes", ...): which kinds of data a tool's first backup
# spends its time on. Backs up the dataset itself, which it only reads.
PARTS="small mix/data mix/logs mix/media mix/dup mix/shift"
run_parts() { # run_parts RUN TOOL
  local run=$1 tool=$2 w="$BENCH_DIR/work" part step
  for part in $PARTS; do
    step=part_${part##*/}
    rm -rf "$w/$tool" "$w/cache-$tool" "$w/config-$tool" "$w/borg-base"
    mkdir -p "$w/$tool" "$w/cache-$tool"
    export XDG_CACHE_HOME="$w/cache-$tool" XDG_CONFIG_HOME="$w/config-$tool"
    export repo="$w/$tool/repo" src="$data/v1/$part"
    "${tool}_env"
    if ! "${tool}_init" >"$w/$tool-$step-init.log" 2>&1; then
      log "$tool init for $step FAILED (see $w/$tool-$step-init.log)"
      continue
    fi
    warm "$src"
    if measure "$run" "$tool" "$step" "${tool}_backup" 1; then
      record "$run" "$tool" "${step}_bytes" "$(repo_bytes "$repo")"
    fi
  done
  rm -rf "$w/$tool"
  trim
}

write_direct_probe() {
  dd if=/dev/zero of="$BENCH_DIR/work/write-probe" bs=1M count="$media_mib" \
    oflag=direct conv=fsync status=none
}
export -f write_direct_probe

mkdir -p "$BENCH_DIR/work"
tools=()
for t in $BENCH_TOOLS; do
  if available "$t"; then tools+=("$t"); else log "$t not on PATH: skipped"; fi
done

python3 - "$results/meta.json" "$data/v1" "$BENCH_LABEL" "${tools[@]}" <<'EOF'
import json, os, platform, subprocess, sys, datetime
out, root, label, tools = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
def tree(p):
    n = b = 0
    for d, _, fs in os.walk(p):
        for f in fs:
            n += 1
            b += os.lstat(os.path.join(d, f)).st_size
    return {"files": n, "bytes": b}
versions = {}
for t in tools:
    cmd = {"cairn": "target/release/cairn --version", "restic": "restic version",
           "rustic": "rustic --version", "borg": "borg --version",
           "bupstash": "bupstash version"}[t]
    versions[t] = sh(cmd).splitlines()[0] if sh(cmd) else "?"
versions["cairn"] = versions.get("cairn", "?") + " (" + sh("git rev-parse --short HEAD") + ")"
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "label": label,
    "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
    "cores": os.cpu_count(),
    "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    "kernel": platform.release(),
    "fs": sh(f"findmnt -no FSTYPE,SOURCE -T {root}"),
    "load": sh("cat /proc/loadavg"),
    "versions": versions,
    "dataset": {"all": tree(root), "small": tree(os.path.join(root, "small")),
                "mix": tree(os.path.join(root, "mix")),
                "media": tree(os.path.join(root, "mix", "media")),
                "parts": {p.split("/")[-1]: tree(os.path.join(root, p)) for p in
                          ("small", "mix/data", "mix/logs", "mix/media", "mix/dup", "mix/shift")}},
}
json.dump(meta, open(out, "w"), indent=2)
EOF

# The working folder's own write rate, the ceiling of every restore into
# it: one file of the dataset's size written through the page cache (as
# restores write), recorded as step "write" of the pseudo-tool "folder".
dataset_mib=$(($(du -sb --apparent-size "$data/v1" | cut -f1) / 1048576))
write_probe() {
  dd if=/dev/zero of="$BENCH_DIR/work/write-probe" bs=1M count="$dataset_mib" status=none
}
export dataset_mib
BENCH_PREFAULT_MIB="${BENCH_PREFAULT_MIB:-$((dataset_mib + 1024))}"
export -f write_probe

for ((run = 1; run <= BENCH_RUNS; run++)); do
  measure "$run" folder write write_probe || true
  rm -f "$BENCH_DIR/work/write-probe"
  record "$run" folder write_mib "$dataset_mib"
  for t in "${tools[@]}"; do
    run_tool "$run" "$t"
  done
  if [[ " ${tools[*]} " == *" cairn "* ]]; then run_media "$run"; fi
  if [[ $BENCH_PARTS == 1 ]]; then
    for t in "${tools[@]}"; do
      run_parts "$run" "$t"
    done
  fi
done
python3 - "$results/meta.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
m["load_after"] = open("/proc/loadavg").read().strip()
json.dump(m, open(sys.argv[1], "w"), indent=2)
EOF

if [[ $BENCH_DOCS == 1 ]]; then
  python3 "$here/report.py" peers "$results" --docs "$repo_root/docs/PERFORMANCE.md"
else
  python3 "$here/report.py" peers "$results"
fi
