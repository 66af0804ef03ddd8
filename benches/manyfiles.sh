#!/usr/bin/env bash
# Many files: first backup, no-change backup and restore of 200,000 tiny
# files, spread over 200 directories and all in one directory, by cairn
# and every peer found on PATH (restic, rustic, borg, bupstash), wall time
# and peak RSS. It shows what grows with the number of files: the peers
# table's 20,236 files do not.
#
#   benches/manyfiles.sh [--docs docs/PERFORMANCE.md]
#
# BENCH_DIR (default target/manyfiles) holds the data, the repositories
# and the restores; a tmpfs (e.g. /dev/shm/manyfiles) measures the tools
# rather than a disk. BENCH_FILES (default 200000) sets the count,
# BENCH_RUNS (default 1) the runs per step (the best is kept),
# BENCH_TOOLS (default: all found) which tools run. Installs nothing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo_root="$(cd "$here/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$repo_root/target/manyfiles}"
BENCH_FILES="${BENCH_FILES:-200000}"
BENCH_RUNS="${BENCH_RUNS:-1}"
BENCH_TOOLS="${BENCH_TOOLS:-cairn restic rustic borg bupstash}"
PASSWORD="manyfiles-bench-password"
TIME=/usr/bin/time
docs=""
[[ ${1:-} == --docs ]] && docs="${2:?--docs needs a file}"

log() { printf '[manyfiles %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=benches/settle.sh
. "$here/settle.sh"
[[ -x $TIME ]] || die "GNU time is missing (apt-get install time)"

log "building cairn (release)"
(cd "$repo_root" && cargo build --release --locked --quiet)
CAIRN="$repo_root/target/release/cairn"

data="$BENCH_DIR/data"
work="$BENCH_DIR/work"
mkdir -p "$data" "$work"
stamp="files=$BENCH_FILES v1"
if [[ ! -f $data/stamp || $(cat "$data/stamp") != "$stamp" ]]; then
  log "generating $BENCH_FILES files twice (200 directories; one directory)"
  rm -rf "$data/tree" "$data/flat" "$data/stamp"
  python3 - "$data" "$BENCH_FILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per = max(1, n // 200)
for i in range(n):
    d = os.path.join(root, "tree", "d%03d" % (i // per))
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "w") as f:
        f.write("tree file %d\n" % i)
os.makedirs(os.path.join(root, "flat"))
for i in range(n):
    with open(os.path.join(root, "flat", "f%06d" % i), "w") as f:
        f.write("flat file %d\n" % i)
EOF
  echo "$stamp" >"$data/stamp"
  settle
fi

tsv="$BENCH_DIR/manyfiles.tsv"
printf 'tool\tshape\tstep\tsecs\tmax_rss_kib\n' >"$tsv"

# measure TOOL SHAPE STEP CMD...: runs CMD under GNU time, appends a row.
measure() {
  local tool=$1 shape=$2 step=$3
  shift 3
  sync
  local t0 t1 rss
  t0=$(date +%s%N)
  $TIME -f '%M' -o "$work/time.out" bash -c '"$@"' _ "$@" >"$work/step.log" 2>&1 ||
    { tail -n 5 "$work/step.log" >&2; die "$tool $shape $step failed"; }
  t1=$(date +%s%N)
  rss=$(tail -n 1 "$work/time.out")
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$shape" "$step" "$secs" "$rss" >>"$tsv"
  log "$tool $shape $step: ${secs}s, $((rss / 1024)) MiB"
}

repo="$work/repo"
export CAIRN PASSWORD repo
export CAIRN_PASSWORD=$PASSWORD CAIRN_KEY_FILE=$work/cairn.key
export RESTIC_PASSWORD=$PASSWORD RESTIC_REPOSITORY=$repo
export RUSTIC_PASSWORD=$PASSWORD RUSTIC_REPOSITORY=$repo
export BORG_PASSPHRASE=$PASSWORD BORG_REPO=$repo BORG_BASE_DIR=$work/borg-base
export BUPSTASH_REPOSITORY=$repo BUPSTASH_KEY=$work/bupstash.key
export RESTIC_CACHE_DIR=$work/cache XDG_CACHE_HOME=$work/cache

init() {
  case $1 in
  cairn) rm -f "$CAIRN_KEY_FILE" && env -u CAIRN_KEY_FILE "$CAIRN" -r "$repo" init &&
    env -u CAIRN_KEY_FILE "$CAIRN" -r "$repo" key export "$CAIRN_KEY_FILE" ;;
  restic) restic init ;;
  rustic) rustic init ;;
  borg) borg init --encryption=repokey-blake2 ;;
  bupstash) rm -f "$BUPSTASH_KEY" && bupstash init && bupstash new-key -o "$BUPSTASH_KEY" ;;
  esac
}
backup() { # backup TOOL N SRC
  case $1 in
  cairn) "$CAIRN" -r "$repo" backup "$3" ;;
  restic) restic backup --host bench "$3" ;;
  rustic) rustic backup --host bench "$3" ;;
  borg) borg create "::snap-$2" "$3" ;;
  bupstash) bupstash put "name=snap-$2" "$3" ;;
  esac
}
restore() { # restore TOOL TARGET
  case $1 in
  cairn) "$CAIRN" -r "$repo" restore latest --no-sync --target "$2" ;; # as the peers: no wait for the disk
  restic) restic restore latest --target "$2" ;;
  rustic) rustic restore latest "$2" ;;
  borg) (cd "$2" && borg extract "::snap-2") ;;
  bupstash) bupstash get name=snap-2 | tar -x -C "$2" ;;
  esac
}
export -f init backup restore

for tool in $BENCH_TOOLS; do
  [[ $tool == cairn ]] || command -v "$tool" >/dev/null || { log "$tool not found, skipped"; continue; }
  for shape in tree flat; do
    src="$data/$shape"
    for run in $(seq "$BENCH_RUNS"); do
      rm -rf "$repo" "$work/cache" "$work/borg-base" "$work/target"
      init "$tool" >/dev/null 2>&1 || die "$tool init failed"
      find "$src" >/dev/null
      measure "$tool" "$shape" first_backup backup "$tool" 1 "$src"
      measure "$tool" "$shape" nochange_backup backup "$tool" 2 "$src"
      mkdir -p "$work/target"
      measure "$tool" "$shape" restore restore "$tool" "$work/target"
      # Where the restore put the folder: beneath its path as backed up,
      # or (bupstash) straight into the target.
      got="$(find "$work/target" -type d -name "$shape" -print -quit)"
      got="${got:-$work/target}"
      diff -r "$src" "$got" >/dev/null || die "$tool restored $shape differently"
    done
  done
done
rm -rf "$repo" "$work/target"

python3 - "$tsv" "$docs" "$BENCH_FILES" "$BENCH_DIR" <<'EOF'
import collections, datetime, os, re, subprocess, sys
tsv, docs, files, where = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
best = {}
tools = []
for line in open(tsv).read().splitlines()[1:]:
    tool, shape, step, secs, rss = line.split("\t")
    if tool not in tools:
        tools.append(tool)
    key = (shape, step, tool)
    secs, rss = float(secs), int(rss)
    old = best.get(key)
    best[key] = (min(secs, old[0]), min(rss, old[1])) if old else (secs, rss)
fs = subprocess.run(["df", "-T", where], capture_output=True, text=True).stdout.split("\n")[1].split()[1]
load = os.getloadavg()[0]
out = [
    f"**Run:** {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, best of the runs; "
    f"{files:,} files of 12–17 bytes each, in 200 directories (`tree`) and in one "
    f"directory (`flat`); working folder on {fs}; load average {load:.2f} at the end.",
    "",
    "Wall time in seconds / peak RSS in MiB.",
    "",
    "| shape | step | " + " | ".join(tools) + " |",
    "|---|---|" + "---:|" * len(tools),
]
names = {"first_backup": "first backup", "nochange_backup": "no-change backup", "restore": "restore"}
for shape in ["tree", "flat"]:
    for step in ["first_backup", "nochange_backup", "restore"]:
        cells = []
        for t in tools:
            v = best.get((shape, step, t))
            cells.append(f"{v[0]:.2f} / {v[1] / 1024:.0f}" if v else "–")
        out.append(f"| {shape} | {names[step]} | " + " | ".join(cells) + " |")
table = "\n".join(out) + "\n"
print(table)
if docs:
    text = open(docs).read()
    new = re.sub(r"(<!-- many:begin -->\n).*?(<!-- many:end -->)",
                 lambda m: m.group(1) + table + m.group(2), text, flags=re.S)
    if new == text and "<!-- many:begin -->" not in text:
        sys.exit("no <!-- many:begin --> marker in " + docs)
    open(docs, "w").write(new)
EOF
