#!/usr/bin/env bash
# Every benchmark, then docs/PERFORMANCE.md regenerated from the results:
# micro-benchmarks and machine limits, the 10 M entry index, the peer
# comparison (which reads the machine limits), and the profile; last, the
# S3 row (backup and restore against a local s3s-fs next to a local
# directory), printed as a table.
#
#   BENCH_LABEL="idle machine, best of 3" BENCH_RUNS=3 benches/all.sh
#
# Takes the same environment as benches/peers.sh; INDEX_ENTRIES (default
# 10M) sizes the index benchmark; BENCH_PROFILE=0 skips the profile;
# BENCH_S3=0 skips the S3 row (which needs s3s-fs; SIZE_MB sizes it).
set -euo pipefail
cd "$(dirname "$0")/.."
docs=docs/PERFORMANCE.md
cargo bench --locked --bench micro
benches/report.py micro --docs "$docs"
cargo bench --locked --bench index10m -- --entries "${INDEX_ENTRIES:-10M}"
benches/report.py index --docs "$docs"
benches/peers.sh
if [[ ${BENCH_PROFILE:-1} == 1 ]]; then
  benches/profile.sh --docs "$docs"
fi
if [[ ${BENCH_S3:-1} == 1 ]]; then
  benches/s3.sh
fi
