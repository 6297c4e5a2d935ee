#!/usr/bin/env bash
# Installs what the benchmark harness needs beyond tools/bootstrap.sh: matplotlib for the
# plots and the Python peer's dependencies. Idempotent: pip skips what is already there.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: bench/setup.sh [--help]

Installs the pinned Python packages of bench/requirements.txt (matplotlib) and
bench/peers/python/requirements.txt (aiokafka, aiohttp, botocore) with python3 -m pip.
Run tools/bootstrap.sh first (compiler, librdkafka, Kafka, test requirements).
The Java peer (bench/peers/java) installs itself from its run.sh.
USAGE
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) echo "bench/setup.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
reqs=(-r "$HERE/requirements.txt" -r "$HERE/peers/python/requirements.txt")
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

pip_install() {
    PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install -q --root-user-action=ignore \
        "${reqs[@]}" "$@"
}

if pip_install >"$log" 2>&1; then
    echo "bench/setup.sh: bench requirements satisfied"
elif grep -q 'externally-managed-environment' "$log" &&
    pip_install --break-system-packages >"$log" 2>&1; then
    echo "bench/setup.sh: bench requirements installed (--break-system-packages)"
else
    cat "$log" >&2
    echo "bench/setup.sh: pip install failed" >&2
    exit 1
fi
