#!/usr/bin/env bash
# A local Apache Kafka broker for development and tests: KRaft mode, one node that is both
# broker and controller, on loopback only. Kafka 4.2 by default (pom.xml beside this script);
# 3.9 on request (AIQ_KAFKA_VERSION=3.9.1, pom-3.9.xml), for the compatibility tests. Jars
# come from Maven Central; Java, Maven, kcat and openssl come from Debian (tools/bootstrap.sh).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tools/kafka/kafka.sh COMMAND

  fetch    copy the broker jars into tools/kafka/lib/<version> (Maven; skipped when there)
  start    fetch if needed, format storage on first use, start the broker in the
           background and wait until it answers (exit 0 at once if one already answers)
  stop     stop the broker started by start (SIGTERM, then SIGKILL after 30 s)
  status   exit 0 and print a metadata summary if a broker answers, non-zero otherwise
  reset    stop, then delete the data dir
  version  print the Kafka version this environment selects
  help     this text

environment:
  AIQ_KAFKA_VERSION          broker version: one a pom*.xml here pins, or its major.minor
                             (default: pom.xml's, 4.2.x; 3.9.1 = pom-3.9.xml). Jars go to
                             tools/kafka/lib/<version>; a data dir keeps the version it was
                             formatted with and refuses another
  AIQ_KAFKA_DIR              data dir (default: <repo>/.kafka/<version>)
  AIQ_KAFKA_PORT             PLAINTEXT listener on 127.0.0.1 (default 9092)
  AIQ_KAFKA_CONTROLLER_PORT  CONTROLLER listener on 127.0.0.1 (default 9093)
  AIQ_KAFKA_START_TIMEOUT    seconds start waits for the broker (default 60)
  AIQ_KAFKA_HEAP_OPTS        JVM heap flags (default "-Xms256m -Xmx1g")
  AIQ_KAFKA_SASL_PORT        optional: also a SASL_PLAINTEXT listener on 127.0.0.1 with the
                             mechanisms PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (default: none)
  AIQ_KAFKA_SASL_USER        its user (default aiq); SCRAM credentials are stored in the
  AIQ_KAFKA_SASL_PASSWORD    cluster's metadata (password default aiq-secret)
  AIQ_KAFKA_CONSUMER_SESSION_MS    Kafka 4.x: the session of consumer-protocol (KIP-848) groups,
  AIQ_KAFKA_CONSUMER_HEARTBEAT_MS  and their heartbeat interval; the broker decides both for
                             its members (group.consumer.session.timeout.ms, default 45000,
                             whose minimum of 45000 is lowered with it; and
                             group.consumer.heartbeat.interval.ms, default 5000)
  AIQ_KAFKA_SSL_PORT         optional: also an SSL listener on 127.0.0.1 (default: none)
  AIQ_KAFKA_SASL_SSL_PORT    optional: also a SASL_SSL listener (same mechanisms and user as
                             SASL_PLAINTEXT) on 127.0.0.1 (default: none)
                             Either TLS listener makes start create, once per data dir, a CA
                             and a broker certificate for 127.0.0.1 and localhost with openssl:
                             clients trust <data dir>/tls/ca.pem (ssl.ca.location)
EOF
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

AIQ_SCRIPT=kafka
. "$ROOT/tools/lib.sh"

pom_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$1" | head -n1; }

# The pom pinning the asked-for version: its exact version or its major.minor (the pinned
# versions live in the poms only).
select_pom() {
    local want="${AIQ_KAFKA_VERSION:-}" pom v known=()
    if [ -z "$want" ]; then
        echo "$HERE/pom.xml"
        return 0
    fi
    for pom in "$HERE"/pom.xml "$HERE"/pom-*.xml; do
        v="$(pom_version "$pom")"
        known+=("$v")
        if [ "$v" = "$want" ] || [ "${v%.*}" = "$want" ]; then
            echo "$pom"
            return 0
        fi
    done
    die "no pom here pins Kafka $want (AIQ_KAFKA_VERSION); pinned: ${known[*]}"
}
POM="$(select_pom)"
KAFKA_VERSION="$(pom_version "$POM")"
[ -n "$KAFKA_VERSION" ] || die "no <kafka.version> in $POM"
KAFKA_MAJOR="${KAFKA_VERSION%%.*}"
LIB="$HERE/lib/$KAFKA_VERSION"
KAFKA_JAR="$LIB/kafka_2.13-$KAFKA_VERSION.jar"
DATA="${AIQ_KAFKA_DIR:-$ROOT/.kafka/$KAFKA_VERSION}"
VERSION_MARK="$DATA/kafka-version"
PORT="${AIQ_KAFKA_PORT:-9092}"
CPORT="${AIQ_KAFKA_CONTROLLER_PORT:-9093}"
BROKER="127.0.0.1:$PORT"
START_TIMEOUT="${AIQ_KAFKA_START_TIMEOUT:-60}"
SASL_PORT="${AIQ_KAFKA_SASL_PORT:-}"
SASL_USER="${AIQ_KAFKA_SASL_USER:-aiq}"
SASL_PASSWORD="${AIQ_KAFKA_SASL_PASSWORD:-aiq-secret}"
SSL_PORT="${AIQ_KAFKA_SSL_PORT:-}"
SASL_SSL_PORT="${AIQ_KAFKA_SASL_SSL_PORT:-}"
TLS="$DATA/tls"
CONSUMER_SESSION_MS="${AIQ_KAFKA_CONSUMER_SESSION_MS:-}"
CONSUMER_HEARTBEAT_MS="${AIQ_KAFKA_CONSUMER_HEARTBEAT_MS:-}"
SCRAM_MARK="$DATA/scram-users"
STOP_TIMEOUT=30
JAVA="${JAVA:-java}"
PIDFILE="$DATA/kafka.pid"
PROPS="$DATA/server.properties"
OUTLOG="$DATA/kafka.out"
# Kafka 4 logs through log4j2 (KIP-653), 3.9 through log4j 1 (reload4j).
if [ "$KAFKA_MAJOR" -ge 4 ]; then
    LOG_FLAG="-Dlog4j2.configurationFile=file:$DATA/log4j2.properties"
else
    LOG_FLAG="-Dlog4j.configuration=file:$DATA/log4j.properties"
fi

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
    say "fetching Kafka $KAFKA_VERSION jars with Maven ($(basename "$POM"))"
    # Copy into a scratch dir and rename, so an interrupted fetch never looks complete.
    local tmp="$LIB.tmp.$$" log
    log="$(mktemp)"
    mkdir -p "$(dirname "$LIB")"
    rm -rf "$tmp"
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
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

sasl_wanted() { [ -n "$SASL_PORT" ] || [ -n "$SASL_SSL_PORT" ]; }
tls_wanted() { [ -n "$SSL_PORT" ] || [ -n "$SASL_SSL_PORT" ]; }

# The optional SASL listeners (AIQ_KAFKA_SASL_PORT, AIQ_KAFKA_SASL_SSL_PORT) and TLS listeners
# (AIQ_KAFKA_SSL_PORT, AIQ_KAFKA_SASL_SSL_PORT): broker and controller keep talking PLAINTEXT
# among themselves; clients may log in with PLAIN or SCRAM-SHA-256/512.
security_settings() {
    if sasl_wanted; then
        local scram="org.apache.kafka.common.security.scram.ScramLoginModule required;" l
        echo "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
        for l in ${SASL_PORT:+sasl_plaintext} ${SASL_SSL_PORT:+sasl_ssl}; do
            cat <<EOF
listener.name.$l.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
listener.name.$l.scram-sha-256.sasl.jaas.config=$scram
listener.name.$l.scram-sha-512.sasl.jaas.config=$scram
EOF
        done
    fi
    if tls_wanted; then
        # A PEM keystore (key and chain in one file; the key unencrypted, readable by the
        # data dir's owner only) and no client certificates asked for.
        cat <<EOF
ssl.keystore.type=PEM
ssl.keystore.location=$TLS/broker.keystore.pem
ssl.client.auth=none
EOF
    fi
}

# A CA and a broker certificate for 127.0.0.1 and localhost, made once per data dir.
ensure_tls_material() {
    tls_wanted || return 0
    [ -s "$TLS/broker.keystore.pem" ] && [ -s "$TLS/ca.pem" ] && return 0
    command -v openssl >/dev/null 2>&1 || die "openssl not found (Debian package openssl)"
    say "creating a CA and a broker certificate in $TLS"
    local tmp="$TLS.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    chmod 700 "$tmp"
    if ! (
        cd "$tmp"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=aiq local test CA" \
            -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout broker.key -out broker.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >ext.cnf
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile ext.cnf -out broker.pem
        cat broker.key broker.pem ca.pem >broker.keystore.pem
        rm -f broker.csr ext.cnf ca.srl
    ) >"$DATA/openssl.out" 2>&1; then
        cat "$DATA/openssl.out" >&2
        rm -rf "$tmp"
        die "openssl could not create the TLS material"
    fi
    rm -rf "$TLS"
    mv "$tmp" "$TLS"
}

# A fingerprint of the SCRAM user and password, so a changed password is set again.
scram_fingerprint() { printf '%s:%s' "$SASL_USER" "$SASL_PASSWORD" | sha256sum | cut -d' ' -f1; }

# SCRAM users of a data dir formatted before the SASL listener was asked for (or with
# another password): set them through the running broker's PLAINTEXT listener.
ensure_scram_users() {
    sasl_wanted || return 0
    [ "$(cat "$SCRAM_MARK" 2>/dev/null)" = "$(scram_fingerprint)" ] && return 0
    say "setting the SCRAM-SHA-256/512 credentials of user $SASL_USER"
    local mech
    # One mechanism per request: Kafka refuses to alter one user twice in a request.
    for mech in SCRAM-SHA-256 SCRAM-SHA-512; do
        if ! "$JAVA" -Xmx256m -cp "$LIB/*" "$LOG_FLAG" kafka.admin.ConfigCommand --bootstrap-server "$BROKER" --alter --entity-type users \
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
    if [ -n "$SSL_PORT" ]; then
        listeners="$listeners,SSL://127.0.0.1:$SSL_PORT"
        map="$map,SSL:SSL"
    fi
    if [ -n "$SASL_SSL_PORT" ]; then
        listeners="$listeners,SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
        map="$map,SASL_SSL:SASL_SSL"
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
$(security_settings)
$(version_settings)
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
    write_log_config
}

# Settings only one major version knows.
version_settings() {
    [ "$KAFKA_MAJOR" -ge 4 ] || return 0
    # Share groups (KIP-932, GA in 4.2) keep their state in an internal topic whose defaults
    # (3 replicas, min.isr 2) one node cannot meet.
    cat <<'EOF'
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
    # KIP-848 groups: the broker, not the client, sets session and heartbeat. A session
    # below the broker's floor needs the floor lowered with it (likewise the heartbeat).
    if [ -n "$CONSUMER_SESSION_MS" ]; then
        echo "group.consumer.session.timeout.ms=$CONSUMER_SESSION_MS"
        [ "$CONSUMER_SESSION_MS" -ge 45000 ] \
            || echo "group.consumer.min.session.timeout.ms=$CONSUMER_SESSION_MS"
    fi
    if [ -n "$CONSUMER_HEARTBEAT_MS" ]; then
        echo "group.consumer.heartbeat.interval.ms=$CONSUMER_HEARTBEAT_MS"
        [ "$CONSUMER_HEARTBEAT_MS" -ge 5000 ] \
            || echo "group.consumer.min.heartbeat.interval.ms=$CONSUMER_HEARTBEAT_MS"
    fi
}

write_log_config() {
    if [ "$KAFKA_MAJOR" -ge 4 ]; then
        cat >"$DATA/log4j2.properties" <<'EOF'
# Written by tools/kafka/kafka.sh. Everything goes to stdout, which start sends to kafka.out.
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.netclient.name = org.apache.kafka.clients.NetworkClient
logger.netclient.level = WARN
EOF
        return 0
    fi
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

# A data dir keeps the version that formatted it (a dir without the mark predates 4.x here,
# when 3.9.1 was the only version): Kafka cannot go back a version, and going forward would
# keep the old cluster's feature levels (no KIP-848 groups), so another version is refused.
check_version_mark() {
    [ -f "$DATA/data/meta.properties" ] || return 0
    local had=3.9.1
    [ ! -f "$VERSION_MARK" ] || had="$(cat "$VERSION_MARK")"
    [ "$had" = "$KAFKA_VERSION" ] && return 0
    die "$DATA was formatted by Kafka $had, not $KAFKA_VERSION: use AIQ_KAFKA_VERSION=$had, another AIQ_KAFKA_DIR, or tools/kafka/kafka.sh reset (deletes its topics)"
}

cmd_start() {
    local v
    for v in "$CONSUMER_SESSION_MS" "$CONSUMER_HEARTBEAT_MS"; do
        [ -z "$v" ] || [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "not a number of milliseconds: '$v'"
    done
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
        check_version_mark
        cmd_fetch
        write_config
        ensure_tls_material
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
            if sasl_wanted; then
                # KRaft keeps SCRAM credentials in the metadata log: set them at format time.
                scram=(--add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]"
                    --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]")
            fi
            if ! "$JAVA" -Xmx256m -cp "$LIB/*" "$LOG_FLAG" kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" --ignore-formatted \
                ${scram[@]+"${scram[@]}"} >"$DATA/format.out" 2>&1; then
                cat "$DATA/format.out" >&2
                die "storage format failed"
            fi
            ! sasl_wanted || scram_fingerprint >"$SCRAM_MARK"
            echo "$KAFKA_VERSION" >"$VERSION_MARK"
        fi
        # shellcheck disable=SC2086  # word-split the JVM flags on purpose
        setsid "$JAVA" ${AIQ_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} \
            -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
            -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
            "$LOG_FLAG" -Dkafka.logs.dir="$DATA/logs" \
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
            [ -z "$SSL_PORT" ] || say "SSL listener on 127.0.0.1:$SSL_PORT (CA $TLS/ca.pem)"
            [ -z "$SASL_SSL_PORT" ] \
                || say "SASL_SSL listener on 127.0.0.1:$SASL_SSL_PORT (user $SASL_USER, CA $TLS/ca.pem)"
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
        say "up on $BROKER (Kafka $(cat "$VERSION_MARK" 2>/dev/null || echo '?'), pid $pid, data in $DATA)"
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
    version) echo "$KAFKA_VERSION" ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) echo "kafka: unknown command '$1'" >&2; usage >&2; exit 2 ;;
esac
