#!/usr/bin/env bash
# Where cairn's time goes: `perf` samples of a first backup, a restore and
# a verify --read-data of the peer dataset (benches/peers.sh generates it),
# as a markdown table of the hottest functions per step.
#
#   benches/profile.sh [--docs docs/PERFORMANCE.md]
#
# Needs `perf` (where `perf stat -e instructions true` works). BENCH_DIR as
# for peers.sh. With --docs, writes between the profile markers.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
BENCH_DIR="${BENCH_DIR:-$PWD/target/peers}"
src="$BENCH_DIR/data/v1"
[[ -d $src ]] || { echo "no dataset at $src: run benches/peers.sh first" >&2; exit 1; }
perf stat -e instructions true >/dev/null 2>&1 || { echo "perf does not work here" >&2; exit 1; }
cargo build --release --locked --quiet
cairn="$PWD/target/release/cairn"
w="$BENCH_DIR/profile"
rm -rf "$w"
mkdir -p "$w"
export CAIRN_PASSWORD=profile
"$cairn" -r "$w/repo" init >/dev/null
out="$w/profile.md"
warm() { find "$1" -type f -print0 | xargs -0 -r cat >/dev/null; }
# As in peers.sh: memory the hypervisor has backed for the steps that fill
# memory (BENCH_PREFAULT_MIB, default the dataset's size + 1024; 0 for none).
prefault_mib=${BENCH_PREFAULT_MIB:-$(($(du -sm --apparent-size "$src" | cut -f1) + 1024))}
prefault() {
  ((prefault_mib > 0)) && [[ -d /dev/shm ]] || return 0
  dd if=/dev/zero of=/dev/shm/cairn-profile-prefault bs=1M count="$prefault_mib" status=none || true
  rm -f /dev/shm/cairn-profile-prefault
}

profile() { # profile NAME INPUT CMD...: perf stat + perf record of one step
  local name=$1 input=$2
  shift 2
  rm -rf "$w/restore"
  warm "$input"
  sync
  [[ $name == verify* ]] || prefault
  /usr/bin/time -f '%e %U %S' -o "$w/$name.time" \
    perf record -q -F 499 -o "$w/$name.data" -- "$@" >/dev/null 2>&1
  python3 - "$name" "$w/$name.time" >>"$out" <<'PY'
import sys
name = sys.argv[1]
wall, user, system = map(float, open(sys.argv[2]).read().split()[-3:])
print(f"**{name}**: {wall:.2f} s wall under perf record, {user + system:.2f} s of CPU "
      f"({(user + system) / wall:.2f} cores busy on average).\n")
PY
  {
    echo "| self % | function | shared object |"
    echo "|---:|---|---|"
    perf report -i "$w/$name.data" --stdio --no-children --sort symbol,dso 2>/dev/null |
      awk '/^ +[0-9.]+%/ && n < 12 {
        n++; sym = $3; for (i = 4; i <= NF - 3; i++) sym = sym " " $i
        gsub(/\|/, "\\|", sym); printf "| %s | `%s` | %s |\n", $1, substr(sym, 1, 90), $(NF - 2) }'
    echo
  } >>"$out"
}

{
  echo "perf samples at 499 Hz on $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores," \
    "$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1 /proc/loadavg);" \
    "dataset $(du -sh --apparent-size "$src" | cut -f1) in $(find "$src" -type f | wc -l) files."
  echo
} >"$out"
profile "first backup" "$src" "$cairn" -r "$w/repo" backup "$src"
profile "restore" "$w/repo" "$cairn" -r "$w/repo" restore latest --no-sync --target "$w/restore"
profile "verify --read-data" "$w/repo" "$cairn" -r "$w/repo" verify --read-data
cat "$out"
if [[ ${1:-} == --docs ]]; then
  python3 - "$2" "$out" <<'PY'
import re, sys
doc, body = sys.argv[1], open(sys.argv[2]).read().rstrip()
t = open(doc).read()
b, e = "<!-- profile:begin -->", "<!-- profile:end -->"
t = re.sub(re.escape(b) + ".*?" + re.escape(e), lambda _: f"{b}\n{body}\n{e}", t, flags=re.S)
open(doc, "w").write(t)
PY
fi
rm -rf "$w/restore" "$w/repo"
