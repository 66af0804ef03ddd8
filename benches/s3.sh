#!/usr/bin/env bash
# Backup and restore throughput: local directory vs. a local S3 server
# (s3s-fs on 127.0.0.1, data on the same disk). Prints a Markdown table.
#
#   benches/s3.sh               # builds release, 256 MiB of data
#   SIZE_MB=64 CAIRN=target/debug/cairn benches/s3.sh
#
# The S3 row measures cairn's S3 path (signing, HTTP, multipart, range
# reads, cache) against a server on the same machine, so it shows the
# overhead of the protocol, not of a network.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-256}
if [ -z "${CAIRN:-}" ]; then
    cargo build --release --locked
    CAIRN=$PWD/target/release/cairn
fi
S3S=${CAIRN_S3S_FS:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
[ -x "$S3S" ] || { echo "needs s3s-fs: cargo install --locked s3s-fs --version 0.14.1 --features binary" >&2; exit 1; }

WORK=$(mktemp -d /tmp/cairn-s3-bench.XXXXXX)
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# Data: random files (incompressible, no duplicates) of 1–16 MiB.
mkdir -p "$WORK/src"
python3 - "$WORK/src" "$SIZE_MB" <<'PY'
import os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(7)
i = 0
while total > 0:
    n = min(total, rng.randint(1, 16) << 20)
    with open(os.path.join(root, f"f{i:04d}.bin"), "wb") as f:
        f.write(rng.randbytes(n))
    total -= n
    i += 1
PY
# The no-change backup is meant to find files written long before.
# shellcheck source=benches/settle.sh
. benches/settle.sh
settle

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/s3data"
"$S3S" --host 127.0.0.1 --port "$PORT" --access-key BENCHKEY --secret-key BENCHSECRET "$WORK/s3data" > "$WORK/s3s.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

export CAIRN_PASSWORD=bench AWS_ACCESS_KEY_ID=BENCHKEY AWS_SECRET_ACCESS_KEY=BENCHSECRET
export CAIRN_S3_ENDPOINT=http://127.0.0.1:$PORT CAIRN_CACHE_DIR=$WORK/cache

secs() { python3 -c 'import time; print(time.time())'; }
rate() { python3 -c "print(f'{$SIZE_MB / ($2 - $1):.0f}')"; }
measure() { # label repo
    local label=$1 repo=$2 t0 t1 t2 t3 t4 t5
    "$CAIRN" -r "$repo" init --kdf-memory-kib 1024 --kdf-iterations 1 > /dev/null
    t0=$(secs); "$CAIRN" -r "$repo" backup "$WORK/src" > /dev/null 2>&1; t1=$(secs)
    t2=$(secs); "$CAIRN" -r "$repo" backup "$WORK/src" > /dev/null 2>&1; t3=$(secs)
    rm -rf "$WORK/restore"
    t4=$(secs); "$CAIRN" -r "$repo" restore latest --no-sync --target "$WORK/restore" > /dev/null; t5=$(secs)
    cmp -s "$WORK/src/f0000.bin" "$WORK/restore$WORK/src/f0000.bin" || { echo "restore differs" >&2; exit 1; }
    printf '| %s | %s | %.2f s | %s |\n' "$label" "$(rate "$t0" "$t1")" "$(python3 -c "print($t3-$t2)")" "$(rate "$t4" "$t5")"
}

echo "$SIZE_MB MiB in $(ls "$WORK/src" | wc -l) files, $(nproc) cores, $(date -u +%F)"
echo
echo "| repository | backup MiB/s | no-change backup | restore MiB/s |"
echo "|---|---|---|---|"
measure "local directory" "$WORK/repo"
measure "S3 (s3s-fs on 127.0.0.1)" "s3://bench/repo"
