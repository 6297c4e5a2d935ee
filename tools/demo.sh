#!/usr/bin/env bash
# The run command: bootstrap, build, start Kafka + bedrock-sim + two workers, submit a few
# hundred jobs of mixed priority, print a summary, and stop everything it started.
#   AIQ_DEMO_JOBS=400  AIQ_DEMO_LATENCY_MS=50  AIQ_DEMO_INFLIGHT=10   (tunables)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${AIQ_BUILD_DIR:-$ROOT/build}"
JOBS="${AIQ_DEMO_JOBS:-400}"
LATENCY="${AIQ_DEMO_LATENCY_MS:-50}"
INFLIGHT="${AIQ_DEMO_INFLIGHT:-10}"
BROKERS="${AIQ_KAFKA_BROKERS:-127.0.0.1:9092}"
PREFIX="demo."
RUN_DIR="$ROOT/.demo"
AIQ_SCRIPT=demo
. "$ROOT/tools/lib.sh"

tools/bootstrap.sh
say "building"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAIQ_RDKAFKA_PREFIX="$(rdkafka_prefix)" \
    >/dev/null
cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null

mkdir -p "$RUN_DIR"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    "$BUILD/tools/admin/aiq-admin" -b "$BROKERS" --prefix "$PREFIX" topics delete --yes >/dev/null 2>&1 || true
    kafka_stop_if_started
}
trap cleanup EXIT

kafka_start_if_needed
export AIQ_KAFKA_BROKERS="$BROKERS" AIQ_KAFKA_TOPIC_PREFIX="$PREFIX"
"$BUILD/tools/admin/aiq-admin" topics delete --yes >/dev/null 2>&1 || true
"$BUILD/tools/admin/aiq-admin" topics create | sed 's/^/demo: topic /'

export AWS_ACCESS_KEY_ID=AKIDSIMULATOR AWS_SECRET_ACCESS_KEY=simulator-secret AWS_REGION=us-east-1
"$BUILD/tools/bedrock-sim/bedrock-sim" --port 0 --latency-ms "$LATENCY" \
    >"$RUN_DIR/sim.out" 2>"$RUN_DIR/sim.log" &
pids+=($!)
for _ in $(seq 50); do grep -q "listening on" "$RUN_DIR/sim.out" 2>/dev/null && break; sleep 0.1; done
SIM_URL="$(sed -n 's/.*listening on //p' "$RUN_DIR/sim.out")"
[ -n "$SIM_URL" ] || { say "bedrock-sim did not start"; cat "$RUN_DIR/sim.log"; exit 1; }
say "bedrock-sim at $SIM_URL (latency ${LATENCY} ms)"

for i in 1 2; do
    AIQ_WORKER_ID="demo-worker-$i" AIQ_KAFKA_GROUP_ID=aiq-demo AIQ_BEDROCK_ENDPOINT="$SIM_URL" \
        AIQ_WORKER_MAX_INFLIGHT="$INFLIGHT" "$BUILD/worker/aiq-worker" 2>"$RUN_DIR/worker$i.log" &
    pids+=($!)
done
say "2 workers started (max_inflight $INFLIGHT each; logs in .demo/)"
for _ in $(seq 300); do
    n=0
    for i in 1 2; do grep -q '"assigned [1-9]' "$RUN_DIR/worker$i.log" 2>/dev/null && n=$((n + 1)); done
    [ "$n" = 2 ] && break
    sleep 0.1
done
say "both workers joined consumer group aiq-demo"

# Little's law: with L the model latency and C jobs in flight per worker, 2 workers answer
# at most 2 * C / L jobs/s. The submitter's own figures include its producer's start and the
# wait for the last result, so a short run stays below the bound.
BOUND=$((2 * INFLIGHT * 1000 / LATENCY))
say "bound: 2 workers x $INFLIGHT in flight / $LATENCY ms model latency = $BOUND jobs/s"
make_jobs() { # $1 = round name: payloads differ per round, so no round is answered from the cache
    python3 - "$JOBS" "$1" <<'PY'
import json, sys
ops = ["vc-analysis", "content-generation", "business-framework", "persona-detection"]
prios = ["critical", "high", "normal", "normal", "low", "low", "low", "low"]
for i in range(int(sys.argv[1])):
    print(json.dumps({"operation": ops[i % 4], "priority": prios[i % len(prios)],
                      "persona": ["founder", "investor"][i % 2],
                      "payload": {"company": f"Company {i} ({sys.argv[2]})",
                                  "question": "What is the outlook?"}}))
PY
}
for round in cold warm; do
    if [ "$round" = cold ]; then
        say "round 1 (cold: the workers' first jobs): $JOBS jobs of mixed priority, waiting for every result"
    else
        say "round 2 (warm: the same workers again, new payloads): $JOBS jobs"
    fi
    make_jobs "$round" >"$RUN_DIR/jobs-$round.ndjson"
    "$BUILD/producer/aiq-submit" --summary --quiet --wait-timeout-ms 120000 "$RUN_DIR/jobs-$round.ndjson"
done
echo
say "model calls seen by bedrock-sim: $(curl -s "$SIM_URL/_sim/stats")"
say "stopping (workers drain on SIGTERM)"
