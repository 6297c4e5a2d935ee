#!/usr/bin/env bash
# Entry point of the Java Parallel Consumer peer (contract: bench/peers/README.md).
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: bench/peers/java/run.sh [--build-only] [--help]

Runs the aiq benchmark peer built on Confluent Parallel Consumer (Vert.x engine).
Builds target/aiq-peer-pc.jar with Maven first if it is missing (needs JDK 17 and mvn;
the first build downloads from Maven Central, later builds work offline).

Environment (see bench/peers/README.md): PEER_BROKERS, PEER_PREFIX, PEER_GROUP,
PEER_ENDPOINT, PEER_MAX_INFLIGHT, PEER_MODEL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION. PEER_JAVA_OPTS replaces the JVM flags below.

  --build-only   build the jar (if missing) and exit
  --help         this text
USAGE
}

build_only=0
for a in "$@"; do
    case "$a" in
        --help|-h) usage; exit 0 ;;
        --build-only) build_only=1 ;;
        *) echo "run.sh: unknown argument '$a' (see --help)" >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
jar="$here/target/aiq-peer-pc.jar"

as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "run.sh: need root or sudo to install $*" >&2; exit 1
    fi
}

# A JDK (javac) and Maven build the jar; tools/bootstrap.sh only guarantees a JRE.
ensure_build_tools() {
    local missing=()
    command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
    command -v mvn >/dev/null || missing+=(maven)
    [[ ${#missing[@]} == 0 ]] && return 0
    echo "run.sh: installing ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
}

# Rebuild when the jar is missing or older than the sources.
if [[ ! -f "$jar" ]] || [[ -n "$(find "$here/pom.xml" "$here/src" -newer "$jar" -print -quit)" ]]; then
    ensure_build_tools
    echo "run.sh: building $jar" >&2
    # Offline first (a warm ~/.m2 needs no network), then online; settings.xml sends every
    # repository to Maven Central.
    mvn_args=(-B -q -Dstyle.color=never -s "$here/settings.xml" -f "$here/pom.xml" package)
    mvn -o "${mvn_args[@]}" >/dev/null 2>&1 || mvn "${mvn_args[@]}" >&2
fi
[[ "$build_only" == 1 ]] && exit 0

# -Xmx1g as the brief fixes; -Xms64m so RSS reflects use, not a pre-touched heap. G1 is the JDK 17
# default collector for a server-class machine but the JVM picks Serial on < 2 CPUs or < 1792 MB,
# so it is named explicitly: the same collector on every bench host.
# shellcheck disable=SC2206
java_opts=(${PEER_JAVA_OPTS:--Xms64m -Xmx1g -XX:+UseG1GC})
exec java "${java_opts[@]}" -jar "$jar"
