#!/usr/bin/env bash
# The test command: bootstrap, build (warnings are errors), unit tests (plain and under
# ASan+UBSan), then the integration tests against a real local Kafka and bedrock-sim.
#   tools/test.sh              everything
#   AIQ_TEST_SANITIZE=0 ...    skip the sanitizer build
#   AIQ_TEST_INTEGRATION=0 ... unit tests only
#   AIQ_TEST_FUZZ_SECONDS=N    seconds per fuzz target (default 20; 0 skips)
#   AIQ_VALGRIND=0 ...         skip the valgrind run of the worker's main path
#   AIQ_TEST_SYSTEM=0 ...      skip the fault scenarios (tests/system, quick sizes, ~3 min)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${AIQ_BUILD_DIR:-$ROOT/build}"
JOBS="$(nproc 2>/dev/null || echo 2)"
step() { printf '\n== %s ==\n' "$*"; }
AIQ_SCRIPT=test
. "$ROOT/tools/lib.sh"

step "bootstrap"
tools/bootstrap.sh

step "lint"
tools/lint.sh

step "build ($BUILD)"
cmake -S . -B "$BUILD" -DAIQ_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "$JOBS"

step "unit tests"
ctest --test-dir "$BUILD" -L unit --output-on-failure

if [ "${AIQ_TEST_SANITIZE:-1}" = 1 ]; then
    step "unit tests under ASan+UBSan"
    cmake -S . -B "$BUILD-asan" -DAIQ_WERROR=ON -DAIQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
    cmake --build "$BUILD-asan" -j "$JOBS"
    ASAN_OPTIONS=detect_leaks=1 ctest --test-dir "$BUILD-asan" -L unit --output-on-failure
fi

if [ "${AIQ_TEST_FUZZ_SECONDS:-20}" != 0 ]; then
    step "fuzzers (libFuzzer, ${AIQ_TEST_FUZZ_SECONDS:-20} s per target; longer: tools/fuzz.sh all 600)"
    tools/fuzz.sh --build-dir "$BUILD-fuzz" all "${AIQ_TEST_FUZZ_SECONDS:-20}"
fi

if [ "${AIQ_TEST_INTEGRATION:-1}" = 1 ]; then
    step "integration tests (real Kafka, bedrock-sim)"
    kafka_start_if_needed
    trap kafka_stop_if_started EXIT
    # AIQ_VALGRIND=1: test_valgrind.py runs the worker's main path under valgrind too.
    AIQ_VALGRIND="${AIQ_VALGRIND:-1}" AIQ_BUILD_DIR="$BUILD" \
        python3 -m pytest -p no:cacheprovider -q tests/integration
    if [ "${AIQ_TEST_SANITIZE:-1}" = 1 ]; then
        step "integration tests with ASan+UBSan binaries (worker, sim, CLIs)"
        # A sanitizer report makes the process exit non-zero, which these tests assert.
        AIQ_BUILD_DIR="$BUILD-asan" python3 -m pytest -p no:cacheprovider -q \
            tests/integration/test_e2e.py tests/integration/test_dlq.py \
            tests/integration/test_admin_http.py tests/integration/test_rebalance.py \
            tests/integration/test_cache.py tests/integration/test_credentials.py \
            tests/integration/test_alerts.py tests/integration/test_metrics.py \
            tests/integration/test_resilience.py -k "not storm"
    fi
fi

if [ "${AIQ_TEST_SYSTEM:-1}" = 1 ]; then
    step "fault scenarios, quick sizes (full sizes: tests/system/run.py all)"
    # run.py starts its own broker (AIQ_SYSTEM_KAFKA_PORT, default 19092): one scenario
    # restarts it, so it must not be the one the integration tests used.
    AIQ_BUILD_DIR="$BUILD" python3 -m pytest -p no:cacheprovider -q tests/system
fi
