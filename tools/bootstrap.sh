#!/usr/bin/env bash
# Installs what building and testing aiq needs, and does nothing that is already done:
#   1. Debian packages (apt-get only for those missing; AIQ_BOOTSTRAP_SKIP_APT=1 skips this)
#   2. Python test requirements (tests/requirements.txt)
#   3. librdkafka 2.14.2, built once from Debian's source package into a cache directory
#      (tools/librdkafka.sh build; AIQ_BOOTSTRAP_SKIP_RDKAFKA=1 skips)
#   4. the Kafka broker jars, 4.2 and 3.9 (tools/kafka/kafka.sh fetch)
#   5. the deployment checkers (tools/deploy-tools.sh; AIQ_BOOTSTRAP_SKIP_DEPLOY_TOOLS=1 skips)
# Runs as root, or through sudo when not root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

AIQ_SCRIPT=bootstrap
. "$ROOT/tools/lib.sh"

PACKAGES=(
    build-essential cmake pkg-config
    librdkafka-dev libuv1-dev libcurl4-openssl-dev libjansson-dev liblmdb-dev
    libcmocka-dev libmicrohttpd-dev libssl-dev libzstd-dev
    liblz4-dev libsasl2-dev
    kafkacat clang-format curl openssl
    # librdkafka's own build (tools/librdkafka.sh; python3 below): zlib, and the keyring
    # apt checks the Debian source package against
    zlib1g-dev debian-archive-keyring
    # libFuzzer (clang-14 + its runtime in libclang-rt-14-dev) for tools/fuzz.sh; tools/valgrind.sh
    clang-14 libclang-rt-14-dev valgrind
)

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "not root and no sudo: cannot run $*"
    fi
}

installed() {
    dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'
}

# 1. Debian packages
if [ "${AIQ_BOOTSTRAP_SKIP_APT:-0}" = 1 ]; then
    say "apt: skipped (AIQ_BOOTSTRAP_SKIP_APT=1)"
else
    wanted=("${PACKAGES[@]}")
    # Java, Maven and pip only when the machine has none of its own.
    command -v java >/dev/null 2>&1 || wanted+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || wanted+=(maven)
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
        wanted+=(python3 python3-pip)
    fi
    missing=()
    for p in "${wanted[@]}"; do
        installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "apt: all ${#wanted[@]} packages present"
    else
        say "apt: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        say "apt: done"
    fi
fi

# 2. Python test requirements
REQ="$ROOT/tests/requirements.txt"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
pip_install() {
    PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install -q --root-user-action=ignore \
        -r "$REQ" "$@"
}
pip_log="$(mktemp)"
trap 'rm -f "$pip_log"' EXIT
if pip_install >"$pip_log" 2>&1; then
    say "pip: requirements of tests/requirements.txt satisfied"
elif grep -q 'externally-managed-environment' "$pip_log"; then
    if pip_install --break-system-packages >"$pip_log" 2>&1; then
        say "pip: requirements installed (--break-system-packages)"
    else
        cat "$pip_log" >&2
        die "pip install failed"
    fi
else
    cat "$pip_log" >&2
    die "pip install failed"
fi

# 3. A current librdkafka (Debian 12 has 2.0.2: no KIP-848, no SCRAM against Kafka 4.x)
if [ "${AIQ_BOOTSTRAP_SKIP_RDKAFKA:-0}" = 1 ]; then
    say "librdkafka: skipped (AIQ_BOOTSTRAP_SKIP_RDKAFKA=1)"
else
    tools/librdkafka.sh build
fi

# 4. Kafka broker jars: the default 4.2 and the 3.9 of the compatibility tests
tools/kafka/kafka.sh fetch
AIQ_KAFKA_VERSION=3.9.1 tools/kafka/kafka.sh fetch

# 5. Deployment checkers (docker-compose, helm, kubeconform), built from the Go module proxy
if [ "${AIQ_BOOTSTRAP_SKIP_DEPLOY_TOOLS:-0}" = 1 ]; then
    say "deploy tools: skipped (AIQ_BOOTSTRAP_SKIP_DEPLOY_TOOLS=1)"
else
    tools/deploy-tools.sh
fi
say "done"
