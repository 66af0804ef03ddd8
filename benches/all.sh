#!/usr/bin/env bash
# Every benchmark, then docs/PERFORMANCE.md regenerated from the results:
# micro-benchmarks and machine limits, the 10 M entry index, the peer
# comparison (which reads the machine limits), the profile, and the many-files
# table (200,000 small files, in a tmpfs where there is one); last, the S3
# row (backup and restore against a local s3s-fs next to a local directory),
# printed as a table.
#
#   BENCH_LABEL="idle machine, best of 3" BENCH_RUNS=3 benches/all.sh
#
# Takes the same environment as benches/peers.sh; INDEX_ENTRIES (default
# 10M) sizes the index benchmark; BENCH_PROFILE=0 skips the profile;
# BENCH_MANY=0 skips the many-files table; BENCH_S3=0 skips the S3 row
# (which needs s3s-fs; SIZE_MB sizes it).
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
if [[ ${BENCH_MANY:-1} == 1 ]]; then
  many_dir=target/manyfiles
  [[ -d /dev/shm ]] && many_dir=/dev/shm/cairn-manyfiles
  BENCH_DIR=$many_dir BENCH_RUNS=${BENCH_RUNS:-1} benches/manyfiles.sh --docs "$docs"
  rm -rf "$many_dir"
fi
if [[ ${BENCH_S3:-1} == 1 ]]; then
  benches/s3.sh
fi
