#!/usr/bin/env bash
# Runs aiq's main path under valgrind memcheck and fails on any report: bedrock-sim, aiq-worker
# (start, ~50 jobs with cache hits, a DLQ record and fallbacks, SIGTERM drain, exit) and
# aiq-submit, each with --error-exitcode=99 and definite leaks counted as errors
# (tests/integration/test_valgrind.py; no suppressions are needed on this path).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

usage() {
    cat <<USAGE
usage: tools/valgrind.sh [--build-dir DIR] [--no-build]

Builds aiq with gcc and without sanitizers (valgrind and ASan do not mix) in DIR (default
\$AIQ_BUILD_DIR, else build), starts a local Kafka with tools/kafka/kafka.sh unless one is
running (AIQ_KAFKA_PORT, AIQ_KAFKA_CONTROLLER_PORT and AIQ_KAFKA_DIR pick its place;
AIQ_KAFKA_BROKERS defaults to 127.0.0.1:\$AIQ_KAFKA_PORT), and runs
tests/integration/test_valgrind.py with AIQ_VALGRIND=1. Takes a few minutes.

  --build-dir DIR  build to use
  --no-build       use the binaries in DIR as they are
  -h, --help       this text

Exit status: 0 no valgrind report, 1 a report or a failed check (the test prints the
valgrind log), 2 usage or build error.
USAGE
}

AIQ_SCRIPT=valgrind AIQ_DIE_STATUS=2
. "$ROOT/tools/lib.sh"

build_dir="${AIQ_BUILD_DIR:-$ROOT/build}"
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --build-dir) [ $# -ge 2 ] || die "--build-dir needs a value"; build_dir="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
command -v valgrind >/dev/null 2>&1 || die "valgrind not found: run tools/bootstrap.sh"
if grep -qsE '^AIQ_(SANITIZE|FUZZ):BOOL=ON' "$build_dir/CMakeCache.txt"; then
    die "$build_dir is a sanitizer build; valgrind needs a plain one (--build-dir DIR)"
fi
if [ "$build" = 1 ]; then
    cmake -S . -B "$build_dir" -DAIQ_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DAIQ_RDKAFKA_PREFIX="$(rdkafka_prefix)" >/dev/null ||
        die "configure failed"
    cmake --build "$build_dir" -j "$(nproc 2>/dev/null || echo 2)" \
        --target aiq-worker aiq-submit aiq-admin bedrock-sim >/dev/null || die "build failed"
fi

export AIQ_KAFKA_BROKERS="${AIQ_KAFKA_BROKERS:-127.0.0.1:${AIQ_KAFKA_PORT:-9092}}"
kafka_start_if_needed
trap kafka_stop_if_started EXIT

t0=$SECONDS
rc=0
AIQ_VALGRIND=1 AIQ_BUILD_DIR="$build_dir" python3 -m pytest -p no:cacheprovider -q -rs \
    tests/integration/test_valgrind.py || rc=$?
echo "valgrind: $([ "$rc" = 0 ] && echo "no reports" || echo FAILED) in $((SECONDS - t0)) s"
[ "$rc" = 0 ] || exit 1
