#!/usr/bin/env bash
# A standalone Flink cluster from the PyFlink package: one JobManager and one
# TaskManager with two slots, REST on 127.0.0.1:18081.
#   scripts/cluster.sh start|stop|submit [job options]|status
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY="$ROOT/.venv/bin/python"
FLINK_HOME=$("$PY" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')
SITE=$("$PY" -c 'import site; print(site.getsitepackages()[0])')
export FLINK_HOME
export FLINK_CONF_DIR="$ROOT/.run/flink/conf"
export FLINK_LOG_DIR="$ROOT/.run/flink/log"
# Thread mode embeds Python in the TaskManager: it must see the virtualenv.
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TZ=UTC

prepare() {
    mkdir -p "$FLINK_CONF_DIR" "$FLINK_LOG_DIR"
    # The package's own config.yaml (JVM module options and defaults), with
    # the project's settings laid over it.
    "$PY" - "$FLINK_HOME/conf/config.yaml" conf/flink-cluster.yaml "$PY" \
        > "$FLINK_CONF_DIR/config.yaml" <<'PYEOF'
import sys, yaml
def merge(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base
base = yaml.safe_load(open(sys.argv[1])) or {}
ours = yaml.safe_load(open(sys.argv[2]).read().replace("@PYTHON@", sys.argv[3]))
print(yaml.safe_dump(merge(base, ours), sort_keys=False))
PYEOF
    cp "$FLINK_HOME"/conf/log4j*.properties "$FLINK_HOME"/conf/logback*.xml "$FLINK_CONF_DIR/"
    echo "127.0.0.1:18081" > "$FLINK_CONF_DIR/masters"
    echo "127.0.0.1" > "$FLINK_CONF_DIR/workers"
    # Python jobs need flink-python on the cluster's class path.
    cp -n "$FLINK_HOME"/opt/flink-python-*.jar "$FLINK_HOME/lib/" 2>/dev/null || true
}

up() { curl -sf http://127.0.0.1:18081/overview >/dev/null 2>&1; }

case "${1:-status}" in
    start)
        if up; then echo "flink: already running"; exit 0; fi
        prepare
        "$FLINK_HOME/bin/jobmanager.sh" start >/dev/null
        "$FLINK_HOME/bin/taskmanager.sh" start >/dev/null
        for _ in $(seq 1 60); do
            slots=$(curl -sf http://127.0.0.1:18081/overview 2>/dev/null \
                | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["slots-total"])' 2>/dev/null || echo 0)
            [ "$slots" -ge 2 ] && { echo "flink: cluster up, REST 127.0.0.1:18081, $slots slots"; exit 0; }
            sleep 1
        done
        echo "flink: cluster did not come up; see $FLINK_LOG_DIR" >&2; exit 1 ;;
    stop)
        "$FLINK_HOME/bin/taskmanager.sh" stop-all >/dev/null 2>&1 || true
        "$FLINK_HOME/bin/jobmanager.sh" stop-all >/dev/null 2>&1 || true
        echo "flink: stopped" ;;
    submit)
        shift
        up || { echo "flink: no cluster; run scripts/cluster.sh start" >&2; exit 1; }
        "$FLINK_HOME/bin/flink" run -m 127.0.0.1:18081 -d \
            -pyexec "$PY" -pyclientexec "$PY" \
            --python "$ROOT/jobs/pipeline.py" "$@" ;;
    status)
        up && curl -sf http://127.0.0.1:18081/jobs/overview || echo "flink: down" ;;
    *) echo "usage: $0 start|stop|submit [job options]|status" >&2; exit 2 ;;
esac
