#!/usr/bin/env bash
# A 3-node Garage cluster on loopback, and cairn backing up into it and
# restoring from it while one node is stopped. Not part of CI (Garage takes
# long to build); run by hand:
#
#   cargo install --locked garage        # 2.5.0
#   cargo build                          # or set CAIRN=/path/to/cairn
#   tests/garage/three-nodes.sh
#
# Needs curl (the nodes' /health tells when the cluster is ready). Everything
# lives in a temporary folder (kept with KEEP=1) and every
# process the script starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
CAIRN=${CAIRN:-$PWD/target/debug/cairn}
GARAGE=${GARAGE:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
[ -x "$GARAGE" ] || { echo "garage not found: cargo install --locked garage" >&2; exit 1; }
[ -x "$CAIRN" ] || { echo "cairn not found at $CAIRN: run cargo build" >&2; exit 1; }
command -v curl > /dev/null || { echo "needs curl (to ask the nodes' /health)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/cairn-garage.XXXXXX)
declare -a PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
# Node i: RPC 39i1, S3 API 39i0, admin 39i3 (i = 1, 2, 3).
write_config() { # node, peers
    local n=$1 peers=$2
    cat > "$WORK/n$n.toml" <<TOML
metadata_dir = "$WORK/n$n/meta"
data_dir = "$WORK/n$n/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:39${n}1"
rpc_public_addr = "127.0.0.1:39${n}1"
rpc_secret = "$SECRET"
bootstrap_peers = [$peers]

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:39${n}0"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:39${n}3"
TOML
}
start_node() { # node
    "$GARAGE" -c "$WORK/n$1.toml" server > "$WORK/n$1.log" 2>&1 &
    PIDS[$1]=$!
    for _ in $(seq 100); do
        "$GARAGE" -c "$WORK/n$1.toml" node id -q > /dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "node $1 did not start; see $WORK/n$1.log" >&2
    exit 1
}
g() { "$GARAGE" -c "$WORK/n1.toml" "$@"; }
# Waits (up to 90 s) until node $1's admin API /health says the cluster is
# $2: "fully operational" (every node up, the layout known everywhere) or
# "degraded" (a node seen down, every partition still has its quorum).
wait_health() { # node, state
    local n=$1 want=$2 said=""
    for _ in $(seq 450); do
        said=$(curl -s "http://127.0.0.1:39${n}3/health" || true)
        case "$want:$said" in
            "fully operational:Garage is fully operational"*) return 0 ;;
            "degraded:Garage is operational but some storage nodes are unavailable"*) return 0 ;;
        esac
        sleep 0.2
    done
    echo "node $n is not $want after 90 s; /health says: ${said:-nothing}" >&2
    exit 1
}

step "three nodes, each knowing only itself at first"
for n in 1 2 3; do mkdir -p "$WORK/n$n"; write_config $n ""; start_node $n; done
declare -a IDS=()
for n in 1 2 3; do IDS[$n]=$("$GARAGE" -c "$WORK/n$n.toml" node id -q); done
printf '  %s\n' "${IDS[@]:1}"

step "every peer listed in every config, and connected"
PEERS=$(printf '"%s", ' "${IDS[1]}" "${IDS[2]}" "${IDS[3]}"); PEERS=${PEERS%, }
for n in 1 2 3; do write_config $n "$PEERS"; done
for n in 2 3; do g node connect "${IDS[$n]}"; done

step "layout: one zone per node, 3 copies"
for n in 1 2 3; do g layout assign "${IDS[$n]%@*}" -z "dc$n" -c 1G; done
g layout apply --version 1
# The layout reaches the other nodes a moment later; until every node has
# it, requests can fail for want of quorum.
for n in 1 2 3; do wait_health $n "fully operational"; done
g status

step "a key allowed to create buckets"
KEYINFO=$(g key create cairn-key)
export AWS_ACCESS_KEY_ID=$(echo "$KEYINFO" | awk '/Key ID/ {print $NF}')
export AWS_SECRET_ACCESS_KEY=$(echo "$KEYINFO" | awk '/Secret key/ {print $NF}')
g key allow --create-bucket cairn-key > /dev/null
export CAIRN_S3_ENDPOINT=http://127.0.0.1:3910 AWS_REGION=garage
export CAIRN_PASSWORD=garage-walkthrough CAIRN_CACHE_DIR=$WORK/cache
REPO=s3://cairn-backups/host1

step "cairn init (creates the bucket) and a first backup"
mkdir -p "$WORK/src/docs"
head -c 5000000 /dev/urandom > "$WORK/src/docs/big.bin"
echo "hello, cluster" > "$WORK/src/docs/note.txt"
"$CAIRN" -r $REPO init --kdf-memory-kib 1024 --kdf-iterations 1
"$CAIRN" -r $REPO backup "$WORK/src"

step "stop node 3; back up a change and restore everything"
kill "${PIDS[3]}"; wait "${PIDS[3]}" 2>/dev/null || true
wait_health 1 "degraded"
curl -s http://127.0.0.1:3913/health | head -1
head -c 2000000 /dev/urandom > "$WORK/src/docs/new.bin"
"$CAIRN" -r $REPO backup "$WORK/src"
"$CAIRN" -r $REPO snapshots
"$CAIRN" -r $REPO restore latest --target "$WORK/restore"
diff -r "$WORK/src" "$WORK/restore$WORK/src"
"$CAIRN" -r $REPO verify --read-data

step "node 3 back; the cluster catches up"
start_node 3
wait_health 3 "fully operational"
"$CAIRN" -r $REPO verify
echo
echo "OK: backup and restore worked with one of three Garage nodes stopped"
