#!/usr/bin/env bash
# A local Apache Kafka 3.9.x broker for development and tests: KRaft mode, one node that is
# both broker and controller, on loopback only. Its jars come from Maven Central (pom.xml
# beside this script); Java, Maven and kcat come from Debian (tools/bootstrap.sh).
# Kafka stays on 3.9.x: Debian's librdkafka 2.0.2 cannot run consumer groups against 4.x.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tools/kafka/kafka.sh COMMAND

  fetch    copy the broker jars into tools/kafka/lib (Maven; skipped when already there)
  start    fetch if needed, format storage on first use, start the broker in the
           background and wait until it answers (exit 0 at once if one already answers)
  stop     stop the broker started by start (SIGTERM, then SIGKILL after 30 s)
  status   exit 0 and print a metadata summary if a broker answers, non-zero otherwise
  reset    stop, then delete the data dir
  help     this text

environment:
  AIQ_KAFKA_DIR              data dir (default: <repo>/.kafka)
  AIQ_KAFKA_PORT             PLAINTEXT listener on 127.0.0.1 (default 9092)
  AIQ_KAFKA_CONTROLLER_PORT  CONTROLLER listener on 127.0.0.1 (default 9093)
  AIQ_KAFKA_START_TIMEOUT    seconds start waits for the broker (default 60)
  AIQ_KAFKA_HEAP_OPTS        JVM heap flags (default "-Xms256m -Xmx1g")
  AIQ_KAFKA_SASL_PORT        optional: also a SASL_PLAINTEXT listener on 127.0.0.1 with the
                             mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (default: none)
  AIQ_KAFKA_SASL_USER        its user (default aiq); SCRAM credentials are stored in the
  AIQ_KAFKA_SASL_PASSWORD    cluster's metadata (password default aiq-secret)
EOF
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/lib"
DATA="${AIQ_KAFKA_DIR:-$ROOT/.kafka}"
PORT="${AIQ_KAFKA_PORT:-9092}"
CPORT="${AIQ_KAFKA_CONTROLLER_PORT:-9093}"
BROKER="127.0.0.1:$PORT"
START_TIMEOUT="${AIQ_KAFKA_START_TIMEOUT:-60}"
SASL_PORT="${AIQ_KAFKA_SASL_PORT:-}"
SASL_USER="${AIQ_KAFKA_SASL_USER:-aiq}"
SASL_PASSWORD="${AIQ_KAFKA_SASL_PASSWORD:-aiq-secret}"
SCRAM_MARK="$DATA/scram-users"
STOP_TIMEOUT=30
JAVA="${JAVA:-java}"
PIDFILE="$DATA/kafka.pid"
PROPS="$DATA/server.properties"
OUTLOG="$DATA/kafka.out"

# The pinned version lives in pom.xml only.
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml" | head -n1)"
[ -n "$KAFKA_VERSION" ] || { echo "kafka: no <kafka.version> in $HERE/pom.xml" >&2; exit 1; }
KAFKA_JAR="$LIB/kafka_2.13-$KAFKA_VERSION.jar"

AIQ_SCRIPT=kafka
. "$ROOT/tools/lib.sh"

kcat_bin() {
    if command -v kcat >/dev/null 2>&1; then echo kcat
    elif command -v kafkacat >/dev/null 2>&1; then echo kafkacat
    else die "kcat not found (Debian package kafkacat; run tools/bootstrap.sh)"
    fi
}

# Cheap check first: is anything listening on the port? (kcat takes its full -m timeout
# to give up on a closed port.)
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# Prints the broker's metadata (kcat -L) and succeeds only if a broker answers on $BROKER
# and lists at least one broker.
metadata() {
    local out
    port_open || return 1
    out="$(timeout 10 "$(kcat_bin)" -L -b "$BROKER" -m 3 2>/dev/null)" || return 1
    grep -Eq '^ *[1-9][0-9]* brokers:' <<<"$out" || return 1
    printf '%s\n' "$out"
}
answers() { metadata >/dev/null; }

# The pid of the broker started from this data dir, if it is running.
running_pid() {
    local pid=""
    if [ -f "$PIDFILE" ]; then
        pid="$(cat "$PIDFILE" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
            && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $PROPS"; then
            echo "$pid"
            return 0
        fi
    fi
    # Pid file lost or stale: look for this data dir's broker by its exact command line.
    pid="$(pgrep -f "kafka\.Kafka $PROPS\$" 2>/dev/null | head -n1 || true)"
    [ -n "$pid" ] || return 1
    echo "$pid"
}

cmd_fetch() {
    if [ -f "$KAFKA_JAR" ]; then
        say "jars for Kafka $KAFKA_VERSION already in ${LIB#"$ROOT"/}"
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found (Debian package maven; run tools/bootstrap.sh)"
    say "fetching Kafka $KAFKA_VERSION jars with Maven"
    # Copy into a scratch dir and rename, so an interrupted fetch never looks complete.
    local tmp="$HERE/lib.tmp.$$" log
    log="$(mktemp)"
    rm -rf "$tmp"
    if ! mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" >"$log" 2>&1 || [ ! -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]; then
        tail -n 40 "$log" >&2
        rm -rf "$tmp" "$log"
        die "maven could not fetch the Kafka jars"
    fi
    rm -f "$log"
    rm -rf "$LIB"
    mv "$tmp" "$LIB"
    say "$(find "$LIB" -name '*.jar' | wc -l) jars in ${LIB#"$ROOT"/}"
}

# The optional SASL listener (AIQ_KAFKA_SASL_PORT): broker and controller keep talking
# PLAINTEXT among themselves; clients may log in with PLAIN or SCRAM-SHA-256/512.
sasl_settings() {
    [ -n "$SASL_PORT" ] || return 0
    local scram="org.apache.kafka.common.security.scram.ScramLoginModule required;"
    cat <<EOF
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=$scram
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$scram
EOF
}

# A fingerprint of the SCRAM user and password, so a changed password is set again.
scram_fingerprint() { printf '%s:%s' "$SASL_USER" "$SASL_PASSWORD" | sha256sum | cut -d' ' -f1; }

# SCRAM users of a data dir formatted before the SASL listener was asked for (or with
# another password): set them through the running broker's PLAINTEXT listener.
ensure_scram_users() {
    [ -n "$SASL_PORT" ] || return 0
    [ "$(cat "$SCRAM_MARK" 2>/dev/null)" = "$(scram_fingerprint)" ] && return 0
    say "setting the SCRAM-SHA-256/512 credentials of user $SASL_USER"
    local mech
    # One mechanism per request: Kafka refuses to alter one user twice in a request.
    for mech in SCRAM-SHA-256 SCRAM-SHA-512; do
        if ! "$JAVA" -Xmx256m -cp "$LIB/*" -Dlog4j.configuration="file:$DATA/log4j.properties" \
            kafka.admin.ConfigCommand --bootstrap-server "$BROKER" --alter --entity-type users \
            --entity-name "$SASL_USER" --add-config "$mech=[password=$SASL_PASSWORD]" \
            >"$DATA/scram.out" 2>&1; then
            grep -v '^\s' "$DATA/scram.out" | tail -n 5 >&2
            die "could not set the $mech credentials"
        fi
    done
    scram_fingerprint >"$SCRAM_MARK"
}

write_config() {
    mkdir -p "$DATA/logs" "$DATA/data"
    local listeners="PLAINTEXT://127.0.0.1:$PORT" map="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if [ -n "$SASL_PORT" ]; then
        listeners="$listeners,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
        map="$map,SASL_PLAINTEXT:SASL_PLAINTEXT"
    fi
    cat >"$PROPS" <<EOF
# Written by tools/kafka/kafka.sh on every start; edits here are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=$listeners,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=$listeners
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$map
$(sasl_settings)
log.dirs=$DATA/data
num.partitions=6
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
EOF
    cat >"$DATA/log4j.properties" <<'EOF'
# Written by tools/kafka/kafka.sh. Everything goes to stdout, which start sends to kafka.out.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.clients.NetworkClient=WARN
EOF
}

log_tail() {
    [ -f "$OUTLOG" ] || return 0
    if grep -qE '^\[[^]]*\] (ERROR|FATAL) ' "$OUTLOG"; then
        echo "kafka: errors in $OUTLOG:" >&2
        grep -E '^\[[^]]*\] (ERROR|FATAL) ' "$OUTLOG" | tail -n 5 | cut -c1-400 >&2
    fi
    echo "kafka: last lines of $OUTLOG:" >&2
    tail -n 15 "$OUTLOG" | cut -c1-400 >&2
}

cmd_start() {
    if answers; then
        say "a broker already answers on $BROKER"
        return 0
    fi
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found (run tools/bootstrap.sh)"
    kcat_bin >/dev/null
    local pid t0
    t0="$(date +%s)"
    if pid="$(running_pid)"; then
        say "broker (pid $pid) is running but not answering yet; waiting"
    else
        rm -f "$PIDFILE"
        cmd_fetch
        write_config
        if [ ! -f "$DATA/data/meta.properties" ]; then
            local cluster_id
            # A Kafka Uuid: 16 random bytes in URL-safe base64 without padding. Never one that
            # starts with '-' (1 in 64): kafka-storage would parse it as an option and fail,
            # which is why Kafka's own Uuid.randomUuid() avoids them too.
            cluster_id="-"
            while [ "${cluster_id#-}" != "$cluster_id" ]; do
                cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
            done
            say "formatting storage in ${DATA} (cluster $cluster_id)"
            local scram=()
            if [ -n "$SASL_PORT" ]; then
                # KRaft keeps SCRAM credentials in the metadata log: set them at format time.
                scram=(--add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]"
                    --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]")
            fi
            if ! "$JAVA" -Xmx256m -cp "$LIB/*" \
                -Dlog4j.configuration="file:$DATA/log4j.properties" \
                kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" --ignore-formatted \
                ${scram[@]+"${scram[@]}"} >"$DATA/format.out" 2>&1; then
                cat "$DATA/format.out" >&2
                die "storage format failed"
            fi
            [ -z "$SASL_PORT" ] || scram_fingerprint >"$SCRAM_MARK"
        fi
        # shellcheck disable=SC2086  # word-split the JVM flags on purpose
        setsid "$JAVA" ${AIQ_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} \
            -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
            -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
            -Dlog4j.configuration="file:$DATA/log4j.properties" -Dkafka.logs.dir="$DATA/logs" \
            -cp "$LIB/*" kafka.Kafka "$PROPS" \
            </dev/null >>"$OUTLOG" 2>&1 &
        pid=$!
        echo "$pid" >"$PIDFILE"
        say "started Kafka $KAFKA_VERSION (pid $pid), logs in $OUTLOG"
    fi
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log_tail
            rm -f "$PIDFILE"
            die "the broker exited before it answered"
        fi
        if answers; then
            say "up on $BROKER after $(($(date +%s) - t0)) s"
            ensure_scram_users
            [ -z "$SASL_PORT" ] || say "SASL_PLAINTEXT listener on 127.0.0.1:$SASL_PORT (user $SASL_USER)"
            return 0
        fi
        if [ $(($(date +%s) - t0)) -ge "$START_TIMEOUT" ]; then
            log_tail
            die "no answer on $BROKER after ${START_TIMEOUT} s (broker pid $pid left running; tools/kafka/kafka.sh stop)"
        fi
        sleep 1
    done
}

cmd_stop() {
    local pid i
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        if answers; then
            say "not stopped: the broker on $BROKER was not started from $DATA"
        else
            say "not running"
        fi
        return 0
    fi
    say "stopping broker (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "still running after ${STOP_TIMEOUT} s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$PIDFILE"
    say "stopped"
}

cmd_status() {
    local md pid brokers topics
    if ! md="$(metadata)"; then
        say "no broker answers on $BROKER"
        return 1
    fi
    brokers="$(grep -Eo '^ *[0-9]+ brokers:' <<<"$md" | grep -Eo '[0-9]+' || echo '?')"
    topics="$(grep -Eo '^ *[0-9]+ topics:' <<<"$md" | grep -Eo '[0-9]+' || echo '?')"
    if pid="$(running_pid)"; then
        say "up on $BROKER (pid $pid, data in $DATA)"
    else
        say "up on $BROKER (not started from $DATA)"
    fi
    say "$brokers broker(s), $topics topic(s)"
    grep -E '^ *topic "' <<<"$md" | sed -E 's/^ *topic "([^"]*)" with ([0-9]+) partitions:.*/kafka:   \1 (\2 partitions)/' || true
}

cmd_reset() {
    cmd_stop
    if [ -d "$DATA" ]; then
        # Refuse to delete a directory that does not look like ours.
        if [ -n "$(ls -A "$DATA")" ] && [ ! -f "$PROPS" ] && [ ! -d "$DATA/data" ]; then
            die "refusing to delete $DATA: it does not look like a kafka.sh data dir"
        fi
        rm -rf "$DATA"
        say "deleted $DATA"
    else
        say "no data dir at $DATA"
    fi
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) echo "kafka: unknown command '$1'" >&2; usage >&2; exit 2 ;;
esac
