#!/usr/bin/env bash
# Measures what SigV4 signing costs aiq (issue #4 item 8): CPU per signature with and without
# the derived-key cache, and client CPU per keep-alive POST through the curl-multi client
# against bedrock-sim (unsigned, signed-uncached, signed-cached). Medians of 5 runs.
# Usage: bench/sigv4_cost.sh [BUILD_DIR] [extra sigv4_cost options, e.g. --window 16]
set -euo pipefail
AIQ_SCRIPT=sigv4_cost.sh AIQ_DIE_STATUS=2
. "$(dirname "${BASH_SOURCE[0]}")/../tools/lib.sh"
build=${1:-build}
shift || true
sim_bin=$build/tools/bedrock-sim/bedrock-sim
bench_bin=$build/bench/sigv4_cost
for b in "$sim_bin" "$bench_bin"; do
    [ -x "$b" ] || die "$b not built (cmake --build $build)"
done
log=$(mktemp)
"$sim_bin" --port 0 --latency-ms 0 >"$log" 2>/dev/null &
sim=$!
trap 'kill $sim 2>/dev/null; wait $sim 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 50); do
    grep -q "listening on" "$log" && break
    sleep 0.1
done
url=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -1)
[ -n "$url" ] || AIQ_DIE_STATUS=1 die "bedrock-sim did not start"
echo "# $(uname -m), $(nproc) cores, $(openssl version | cut -d' ' -f1-2), $(curl --version | head -1 | cut -d' ' -f1-2)"
"$bench_bin" --sim "$url" --requests 20000 --runs 5 "$@"
