#!/usr/bin/env bash
# Memory does not grow with topic backlog: RSS of one worker while N jobs wait in Kafka.
#   bench/backlog_rss.sh [JOBS] [SECONDS]        (defaults 1000000 and 30)
# Needs a build (build/) and a running broker (tools/kafka/kafka.sh start). It queues JOBS
# low-priority jobs, runs a worker against a slow bedrock-sim (1 s per call, max_inflight
# 10) so almost everything keeps waiting, and samples the worker's RSS every second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${AIQ_BUILD_DIR:-$ROOT/build}"
JOBS="${1:-1000000}"
SECS="${2:-30}"
export AIQ_KAFKA_BROKERS="${AIQ_KAFKA_BROKERS:-127.0.0.1:9092}"
export AIQ_KAFKA_TOPIC_PREFIX="bench-rss-$$."
TMP="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$BUILD/tools/admin/aiq-admin" topics delete --yes >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

"$BUILD/tools/admin/aiq-admin" topics create >/dev/null
echo "backlog_rss: queueing $JOBS low-priority jobs"
python3 - "$JOBS" >"$TMP/jobs.ndjson" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    print(json.dumps({"id": f"rss-{i}", "operation": "vc-analysis", "priority": "low",
                      "payload": {"company": f"Company {i}", "q": "What is the outlook?"}}))
PY
start=$(date +%s%N)
"$BUILD/producer/aiq-submit" -q "$TMP/jobs.ndjson"
echo "backlog_rss: submitted in $(( ($(date +%s%N) - start) / 1000000 )) ms"

"$BUILD/tools/bedrock-sim/bedrock-sim" --port 0 --latency-ms 1000 >"$TMP/sim.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$TMP/sim.out" && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=AKIDSIMULATOR AWS_SECRET_ACCESS_KEY=simulator-secret
AIQ_BEDROCK_ENDPOINT="$(sed -n 's/.*listening on //p' "$TMP/sim.out")" \
    AIQ_KAFKA_GROUP_ID="bench-rss-$$" AIQ_WORKER_MAX_INFLIGHT=10 \
    "$BUILD/worker/aiq-worker" 2>"$TMP/worker.log" &
wpid=$!
pids+=($wpid)
echo "backlog_rss: sampling worker RSS for $SECS s (KiB)"
: >"$TMP/rss"
for s in $(seq "$SECS"); do
    sleep 1
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$wpid/status")
    echo "$rss" >>"$TMP/rss"
    printf '  t=%2ds rss=%s\n' "$s" "$rss"
done
sort -n "$TMP/rss" | awk -v jobs="$JOBS" '{a[NR]=$1} END {
    printf "backlog_rss: jobs waiting=%d  rss min=%d KiB  median=%d KiB  max=%d KiB\n",
           jobs, a[1], a[int((NR+1)/2)], a[NR] }'
echo "backlog_rss: first sample $(head -1 "$TMP/rss") KiB, last $(tail -1 "$TMP/rss") KiB"
