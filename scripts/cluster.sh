#!/usr/bin/env bash
# A standalone Flink cluster from the PyFlink package: one JobManager and one
# TaskManager with two slots, REST on 127.0.0.1:18081.
#   scripts/cluster.sh start|stop|status
#   scripts/cluster.sh taskmanager          start one more TaskManager
#   scripts/cluster.sh submit [--from-savepoint PATH [--allow-non-restored-state]]
#                             [job options]
# A second, independent cluster (the fault-injection tests use one) is set by
# TXWATCH_FLINK_DIR (configuration, logs, pid files), TXWATCH_FLINK_REST_PORT,
# TXWATCH_FLINK_RPC_PORT and TXWATCH_FLINK_EXTRA_CONF (a YAML file laid over
# conf/flink-cluster.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY="$ROOT/.venv/bin/python"
FLINK_HOME=$("$PY" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')
SITE=$("$PY" -c 'import site; print(site.getsitepackages()[0])')
export FLINK_HOME
FLINK_DIR=${TXWATCH_FLINK_DIR:-$ROOT/.run/flink}
REST_PORT=${TXWATCH_FLINK_REST_PORT:-18081}
RPC_PORT=${TXWATCH_FLINK_RPC_PORT:-16123}
EXTRA_CONF=${TXWATCH_FLINK_EXTRA_CONF:-}
export FLINK_CONF_DIR="$FLINK_DIR/conf"
export FLINK_LOG_DIR="$FLINK_DIR/log"
export FLINK_PID_DIR="$FLINK_DIR/pid"
# Thread mode embeds Python in the TaskManager: it must see the virtualenv.
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TZ=UTC

prepare() {
    mkdir -p "$FLINK_CONF_DIR" "$FLINK_LOG_DIR" "$FLINK_PID_DIR"
    # The package's own config.yaml (JVM module options and defaults), with
    # the project's settings, then the extra file if any, laid over it.
    "$PY" - "$FLINK_HOME/conf/config.yaml" conf/flink-cluster.yaml "$PY" \
        "$REST_PORT" "$RPC_PORT" "$EXTRA_CONF" > "$FLINK_CONF_DIR/config.yaml" <<'PYEOF'
import sys, yaml
def merge(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base
conf, ours, python, rest_port, rpc_port, extra = sys.argv[1:7]
base = yaml.safe_load(open(conf)) or {}
merge(base, yaml.safe_load(open(ours).read().replace("@PYTHON@", python)))
merge(base, {"rest": {"port": int(rest_port)},
             "jobmanager": {"rpc": {"port": int(rpc_port)}}})
if extra:
    merge(base, yaml.safe_load(open(extra)) or {})
print(yaml.safe_dump(base, sort_keys=False))
PYEOF
    cp "$FLINK_HOME"/conf/log4j*.properties "$FLINK_HOME"/conf/logback*.xml "$FLINK_CONF_DIR/"
    echo "127.0.0.1:$REST_PORT" > "$FLINK_CONF_DIR/masters"
    echo "127.0.0.1" > "$FLINK_CONF_DIR/workers"
    # Python jobs need flink-python on the cluster's class path.
    cp -n "$FLINK_HOME"/opt/flink-python-*.jar "$FLINK_HOME/lib/" 2>/dev/null || true
}

REST="http://127.0.0.1:$REST_PORT"
up() { curl -sf "$REST/overview" >/dev/null 2>&1; }

case "${1:-status}" in
    start)
        if up; then echo "flink: already running"; exit 0; fi
        prepare
        "$FLINK_HOME/bin/jobmanager.sh" start >/dev/null
        "$FLINK_HOME/bin/taskmanager.sh" start >/dev/null
        for _ in $(seq 1 60); do
            slots=$(curl -sf "$REST/overview" 2>/dev/null \
                | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["slots-total"])' 2>/dev/null || echo 0)
            [ "$slots" -ge 2 ] && { echo "flink: cluster up, REST $REST, $slots slots"; exit 0; }
            sleep 1
        done
        echo "flink: cluster did not come up; see $FLINK_LOG_DIR" >&2; exit 1 ;;
    taskmanager)
        up || { echo "flink: no cluster; run scripts/cluster.sh start" >&2; exit 1; }
        "$FLINK_HOME/bin/taskmanager.sh" start >/dev/null
        echo "flink: TaskManager started" ;;
    stop)
        "$FLINK_HOME/bin/taskmanager.sh" stop-all >/dev/null 2>&1 || true
        "$FLINK_HOME/bin/jobmanager.sh" stop-all >/dev/null 2>&1 || true
        echo "flink: stopped" ;;
    submit)
        shift
        up || { echo "flink: no cluster; run scripts/cluster.sh start" >&2; exit 1; }
        restore=()
        if [ "${1:-}" = --from-savepoint ]; then restore=(-s "$2"); shift 2; fi
        # State of operators the new graph no longer has is dropped, not refused.
        if [ "${1:-}" = --allow-non-restored-state ]; then restore+=(-n); shift; fi
        "$FLINK_HOME/bin/flink" run -m "127.0.0.1:$REST_PORT" -d "${restore[@]}" \
            -pyexec "$PY" -pyclientexec "$PY" \
            --python "$ROOT/jobs/pipeline.py" "$@" ;;
    status)
        up && curl -sf "$REST/jobs/overview" || echo "flink: down" ;;
    *) echo "usage: $0 start|stop|status|taskmanager|submit [job options]" >&2; exit 2 ;;
esac
