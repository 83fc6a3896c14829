#!/usr/bin/env bash
# Starts and stops the project's own Kafka broker (KRaft) and PostgreSQL
# server, both on 127.0.0.1, with their data under .run/.
#   scripts/services.sh start|stop|status [kafka|postgres]
# A second, independent pair (the fault-injection tests use one) is set by
# TXWATCH_STATE_DIR (data and logs), TXWATCH_KAFKA_PORT,
# TXWATCH_KAFKA_CONTROLLER_PORT and TXWATCH_PG_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN="$ROOT/.run"
STATE=${TXWATCH_STATE_DIR:-$RUN}
KAFKA_LIBS="$RUN/kafka/libs"
KAFKA_HOME="$STATE/kafka"
KAFKA_PORT=${TXWATCH_KAFKA_PORT:-19092}
CONTROLLER_PORT=${TXWATCH_KAFKA_CONTROLLER_PORT:-19093}
PG_DATA="$STATE/pg/data"
PG_PORT=${TXWATCH_PG_PORT:-15432}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
set -a; [ -f "$RUN/secrets.env" ] && . "$RUN/secrets.env"; set +a

wait_port() {  # port, seconds
    for _ in $(seq 1 "$2"); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 1
    done
    return 1
}

kafka_java() {
    java -Xms256m -Xmx1g -Dkafka.logs.dir="$KAFKA_HOME/logs" \
        -Dlog4j2.configurationFile="$ROOT/conf/kafka/log4j2.properties" \
        -cp "$KAFKA_LIBS/*" "$@"
}

start_kafka() {
    if wait_port "$KAFKA_PORT" 1; then echo "kafka: already running"; return; fi
    mkdir -p "$KAFKA_HOME/logs" "$KAFKA_HOME/data"
    sed -e "s#@LOG_DIR@#$KAFKA_HOME/data#" -e "s#@PORT@#$KAFKA_PORT#g" \
        -e "s#@CONTROLLER_PORT@#$CONTROLLER_PORT#g" \
        conf/kafka/server.properties > "$KAFKA_HOME/server.properties"
    if [ ! -f "$KAFKA_HOME/data/meta.properties" ]; then
        local cluster
        cluster=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
        kafka_java kafka.tools.StorageTool format -t "$cluster" \
            -c "$KAFKA_HOME/server.properties" --standalone >/dev/null 2>&1
    fi
    nohup java -Xms512m -Xmx1g -Dkafka.logs.dir="$KAFKA_HOME/logs" \
        -Dlog4j2.configurationFile="$ROOT/conf/kafka/log4j2.properties" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_HOME/server.properties" \
        > "$KAFKA_HOME/logs/stdout.log" 2>&1 &
    echo $! > "$KAFKA_HOME/pid"
    if ! wait_port "$KAFKA_PORT" 90; then
        echo "kafka: did not open 127.0.0.1:$KAFKA_PORT; see $KAFKA_HOME/logs" >&2
        tail -n 20 "$KAFKA_HOME/logs/stdout.log" >&2
        exit 1
    fi
    echo "kafka: listening on 127.0.0.1:$KAFKA_PORT (KRaft)"
}

stop_kafka() {
    if [ -f "$KAFKA_HOME/pid" ] && kill -0 "$(cat "$KAFKA_HOME/pid")" 2>/dev/null; then
        kill "$(cat "$KAFKA_HOME/pid")"
        for _ in $(seq 1 30); do kill -0 "$(cat "$KAFKA_HOME/pid")" 2>/dev/null || break; sleep 1; done
    fi
    rm -f "$KAFKA_HOME/pid"
    echo "kafka: stopped"
}

as_postgres() { runuser -u postgres -- "$@"; }

start_postgres() {
    if wait_port "$PG_PORT" 1; then echo "postgres: already running"; return; fi
    : "${TXWATCH_ADMIN_PASSWORD:?run make setup first: it writes .run/secrets.env}"
    mkdir -p "$STATE/pg"
    chown postgres:postgres "$STATE/pg"
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        local pwfile
        pwfile=$(mktemp) && chmod 644 "$pwfile"
        printf '%s\n' "$TXWATCH_ADMIN_PASSWORD" > "$pwfile"
        as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" \
            --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
        rm -f "$pwfile"
    fi
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$STATE/pg/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k /tmp -c fsync=off -c synchronous_commit=off -c max_connections=100 -c shared_buffers=256MB" >/dev/null
    echo "postgres: listening on 127.0.0.1:$PG_PORT"
}

stop_postgres() {
    if [ -f "$PG_DATA/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null || true
    fi
    echo "postgres: stopped"
}

status() {
    wait_port "$KAFKA_PORT" 1 && echo "kafka: up" || echo "kafka: down"
    wait_port "$PG_PORT" 1 && echo "postgres: up" || echo "postgres: down"
}

action=${1:-status}
which=${2:-all}
case "$action" in
    start)
        [ "$which" = postgres ] || start_kafka
        [ "$which" = kafka ] || start_postgres ;;
    stop)
        [ "$which" = postgres ] || stop_kafka
        [ "$which" = kafka ] || stop_postgres ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status [kafka|postgres]" >&2; exit 2 ;;
esac
