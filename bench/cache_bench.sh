#!/usr/bin/env bash
# Measures the LMDB response cache (issue #5): put rate, lookup latency p50/p99 of hits and
# misses, hits per second on one core, compression ratio of model-answer-like bodies, and
# the cost of a job's cache key. Defaults to 10^6 entries (about 1 GB of disk, ~1 min).
# Usage: bench/cache_bench.sh [BUILD_DIR] [--entries N] [--lookups M]
#        bench/cache_bench.sh build --entries 20000 --lookups 200000     (short, for CI)
set -euo pipefail
AIQ_SCRIPT=cache_bench.sh AIQ_DIE_STATUS=2
. "$(dirname "${BASH_SOURCE[0]}")/../tools/lib.sh"
build=${1:-build}
shift || true
bin=$build/bench/cache_bench
[ -x "$bin" ] || die "$bin not built (cmake --build $build)"
dir=$(mktemp -d "${TMPDIR:-/tmp}/aiq-cache-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "# $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), lmdb $(pkg-config --modversion lmdb 2>/dev/null || echo '?'), zstd $(pkg-config --modversion libzstd 2>/dev/null || echo '?')"
"$bin" --dir "$dir" "$@"
