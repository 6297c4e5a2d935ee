#!/usr/bin/env bash
# The test command: bootstrap, build (warnings are errors), unit tests (plain and under
# ASan+UBSan), then the integration tests against a real local Kafka and bedrock-sim, as a
# matrix of librdkafka and Kafka versions:
#   librdkafka 2.14.2 (tools/librdkafka.sh) + Kafka 4.2   the full suite, classic groups
#   librdkafka 2.14.2 + Kafka 4.2, group.protocol=consumer the KIP-848 rebalance tests
#   librdkafka 2.0.2 (Debian 12) + Kafka 4.2               compatibility subset
#   librdkafka 2.0.2 + Kafka 3.9                           compatibility subset
# (subset: e2e, rebalance, DLQ, SASL), then the fault scenarios (tests/system).
#   tools/test.sh              everything
#   AIQ_TEST_SANITIZE=0 ...    skip the sanitizer build
#   AIQ_TEST_INTEGRATION=0 ... unit tests only
#   AIQ_TEST_MATRIX=0 ...      skip the KIP-848 and librdkafka 2.0.2 runs
#   AIQ_TEST_RDKAFKA=system    build the main run against the system librdkafka instead
#   AIQ_TEST_FUZZ_SECONDS=N    seconds per fuzz target (default 20; 0 skips)
#   AIQ_VALGRIND=0 ...         skip the valgrind run of the worker's main path
#   AIQ_TEST_SYSTEM=0 ...      skip the fault scenarios (tests/system, quick sizes, ~3 min)
#   AIQ_TEST_KAFKA39_PORT=P    port of the Kafka 3.9 broker of the matrix (default 9392; its
#                              controller P+1, data in .kafka/test-3.9.1)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
AIQ_SCRIPT=test
. "$ROOT/tools/lib.sh"
BUILD="${AIQ_BUILD_DIR:-$ROOT/build}"
BUILD_OLD="$BUILD-rdkafka-system"
JOBS="$(nproc 2>/dev/null || echo 2)"
step() { printf '\n== %s ==\n' "$*"; }
pytest_q() { python3 -m pytest -p no:cacheprovider -q "$@"; }

# The KIP-848 group session on the test brokers: the broker decides it for consumer-protocol
# groups (default 45 s); 10 s matches the worker's classic kafka.session_timeout_ms, so the
# same tests run under both protocols in comparable time.
export AIQ_KAFKA_CONSUMER_SESSION_MS="${AIQ_KAFKA_CONSUMER_SESSION_MS:-10000}"
export AIQ_KAFKA_CONSUMER_HEARTBEAT_MS="${AIQ_KAFKA_CONSUMER_HEARTBEAT_MS:-2000}"

# The compatibility subset: the paths where the librdkafka and broker versions matter.
COMPAT_TESTS=(tests/integration/test_e2e.py tests/integration/test_rebalance.py
    tests/integration/test_dlq.py tests/integration/test_kafka_sasl.py
    tests/integration/test_group_protocol.py)
# The KIP-848 run: group joins, crashes (static and dynamic members) and leaves.
# Static members restarted after a SIGKILL wait for the broker's session under KIP-848
# (test_group_protocol.py), so the crash scenario runs with dynamic members here.
KIP848_TESTS=(tests/integration/test_e2e.py tests/integration/test_rebalance.py
    tests/integration/test_group_protocol.py
    "tests/integration/test_consumer_scenarios.py::test_scenario_crash[dynamic]"
    tests/integration/test_consumer_scenarios.py::test_scenario_rebalance)

step "bootstrap"
tools/bootstrap.sh

step "lint"
tools/lint.sh

rdk_prefix=""
if [ "${AIQ_TEST_RDKAFKA:-built}" != system ]; then
    rdk_prefix="$(tools/librdkafka.sh prefix)" # fails when bootstrap could not build it
fi
step "build ($BUILD, librdkafka ${rdk_prefix:-of the system})"
cmake -S . -B "$BUILD" -DAIQ_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DAIQ_RDKAFKA_PREFIX="$rdk_prefix" >/dev/null
cmake --build "$BUILD" -j "$JOBS"

step "unit tests"
ctest --test-dir "$BUILD" -L unit --output-on-failure

if [ "${AIQ_TEST_SANITIZE:-1}" = 1 ]; then
    step "unit tests under ASan+UBSan"
    cmake -S . -B "$BUILD-asan" -DAIQ_WERROR=ON -DAIQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
        -DAIQ_RDKAFKA_PREFIX="$rdk_prefix" >/dev/null
    cmake --build "$BUILD-asan" -j "$JOBS"
    ASAN_OPTIONS=detect_leaks=1 ctest --test-dir "$BUILD-asan" -L unit --output-on-failure
fi

if [ "${AIQ_TEST_FUZZ_SECONDS:-20}" != 0 ]; then
    step "fuzzers (libFuzzer, ${AIQ_TEST_FUZZ_SECONDS:-20} s per target; longer: tools/fuzz.sh all 600)"
    tools/fuzz.sh --build-dir "$BUILD-fuzz" all "${AIQ_TEST_FUZZ_SECONDS:-20}"
fi

matrix=0
[ "${AIQ_TEST_MATRIX:-1}" = 1 ] && [ -n "$rdk_prefix" ] && matrix=1
if [ "$matrix" = 1 ]; then
    step "build against the system librdkafka ($BUILD_OLD)"
    cmake -S . -B "$BUILD_OLD" -DAIQ_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DAIQ_RDKAFKA_PREFIX= >/dev/null
    cmake --build "$BUILD_OLD" -j "$JOBS"
    ctest --test-dir "$BUILD_OLD" -L unit --output-on-failure
fi

# Brokers this script started; stopped on exit.
started=()
stop_brokers() {
    local spec
    for spec in ${started[@]+"${started[@]}"}; do
        env $spec tools/kafka/kafka.sh stop || true
    done
}
trap stop_brokers EXIT
# Starts the broker of the environment in $1 ("VAR=value ...") unless one answers there.
broker_up() {
    # shellcheck disable=SC2086  # $1 is a list of VAR=value words
    if ! env $1 tools/kafka/kafka.sh status >/dev/null 2>&1; then
        env $1 tools/kafka/kafka.sh start
        started+=("$1")
    else
        say "using the broker that already answers ($1)"
    fi
}
rdkafka_of() { "$1/worker/aiq-worker" --version | sed -n 's/.*(librdkafka \(.*\))/\1/p'; }

if [ "${AIQ_TEST_INTEGRATION:-1}" = 1 ]; then
    kafka_default="AIQ_KAFKA_VERSION=$(tools/kafka/kafka.sh version)"
    broker_up "$kafka_default"
    step "integration tests (librdkafka $(rdkafka_of "$BUILD"), Kafka $(tools/kafka/kafka.sh version), real bedrock-sim)"
    # AIQ_VALGRIND=1: test_valgrind.py runs the worker's main path under valgrind too.
    AIQ_VALGRIND="${AIQ_VALGRIND:-1}" AIQ_BUILD_DIR="$BUILD" pytest_q tests/integration
    if [ "${AIQ_TEST_SANITIZE:-1}" = 1 ]; then
        step "integration tests with ASan+UBSan binaries (worker, sim, CLIs)"
        # A sanitizer report makes the process exit non-zero, which these tests assert.
        AIQ_BUILD_DIR="$BUILD-asan" pytest_q \
            tests/integration/test_e2e.py tests/integration/test_dlq.py \
            tests/integration/test_admin_http.py tests/integration/test_rebalance.py \
            tests/integration/test_cache.py tests/integration/test_credentials.py \
            tests/integration/test_alerts.py tests/integration/test_metrics.py \
            tests/integration/test_resilience.py -k "not storm"
    fi
    if [ "$matrix" = 1 ]; then
        step "KIP-848: kafka.group_protocol=consumer (librdkafka $(rdkafka_of "$BUILD"), Kafka $(tools/kafka/kafka.sh version))"
        AIQ_KAFKA_GROUP_PROTOCOL=consumer AIQ_BUILD_DIR="$BUILD" pytest_q "${KIP848_TESTS[@]}"

        step "compatibility: librdkafka $(rdkafka_of "$BUILD_OLD") + Kafka $(tools/kafka/kafka.sh version)"
        AIQ_BUILD_DIR="$BUILD_OLD" pytest_q "${COMPAT_TESTS[@]}"

        p39="${AIQ_TEST_KAFKA39_PORT:-9392}"
        kafka39="AIQ_KAFKA_VERSION=3.9.1 AIQ_KAFKA_PORT=$p39 AIQ_KAFKA_CONTROLLER_PORT=$((p39 + 1)) AIQ_KAFKA_DIR=$ROOT/.kafka/test-3.9.1"
        broker_up "$kafka39"
        step "compatibility: librdkafka $(rdkafka_of "$BUILD_OLD") + Kafka 3.9.1"
        AIQ_KAFKA_VERSION=3.9.1 AIQ_KAFKA_BROKERS="127.0.0.1:$p39" AIQ_BUILD_DIR="$BUILD_OLD" \
            pytest_q "${COMPAT_TESTS[@]}"
    fi
fi

if [ "${AIQ_TEST_SYSTEM:-1}" = 1 ]; then
    step "fault scenarios, quick sizes (full sizes: tests/system/run.py all)"
    # run.py starts its own broker (AIQ_SYSTEM_KAFKA_PORT, default 19092): one scenario
    # restarts it, so it must not be the one the integration tests used.
    AIQ_BUILD_DIR="$BUILD" pytest_q tests/system
fi
