# tools/lib.sh — what the shell scripts of tools/ (and bench/) share: messages prefixed with
# the script's name, and a local broker started only when none answers. Source it after
# setting AIQ_SCRIPT (the prefix) and, for die, optionally AIQ_DIE_STATUS (default 1):
#   AIQ_SCRIPT=demo; . "$ROOT/tools/lib.sh"
# Not a script of its own: it defines functions and changes nothing else.

AIQ_LIB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf '%s: %s\n' "${AIQ_SCRIPT:-aiq}" "$*"; }
die() {
    printf '%s: %s\n' "${AIQ_SCRIPT:-aiq}" "$*" >&2
    exit "${AIQ_DIE_STATUS:-1}"
}

# Starts tools/kafka/kafka.sh's broker unless one answers already (AIQ_KAFKA_PORT and the
# other kafka.sh variables apply), and remembers whether it did: kafka_stop_if_started then
# stops only a broker this script started, never a shared one.
aiq_started_kafka=0
kafka_start_if_needed() {
    if ! "$AIQ_LIB_ROOT/tools/kafka/kafka.sh" status >/dev/null 2>&1; then
        "$AIQ_LIB_ROOT/tools/kafka/kafka.sh" start
        aiq_started_kafka=1
    fi
}
kafka_stop_if_started() {
    if [ "$aiq_started_kafka" = 1 ]; then "$AIQ_LIB_ROOT/tools/kafka/kafka.sh" stop; fi
}

# The librdkafka prefix tools/librdkafka.sh built (empty when there is none: the system's
# then). Every build of tools/ configures with it (-DAIQ_RDKAFKA_PREFIX), so one build tree
# never flips between two librdkafkas.
rdkafka_prefix() { "$AIQ_LIB_ROOT/tools/librdkafka.sh" prefix 2>/dev/null || true; }
