#!/usr/bin/env bash
# Installs everything txwatch needs on a fresh Debian 12 machine, from the
# package registries only: PostgreSQL (Debian), the Python environment (PyPI),
# the Kafka broker and the Flink connector jars (Maven Central).
# Safe to run again: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN="$ROOT/.run"
mkdir -p "$RUN"

step() { printf '\n== %s\n' "$*"; }

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql postgresql-contrib)
# Headless Chromium renders the HTML report in its test.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    step "Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import pyflink, txwatch' 2>/dev/null; then
    step "Python environment (.venv)"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
fi

fetch_jars() {  # pom, destination
    local pom=$1 dest=$2
    if [ -f "$dest/.complete" ] && [ "$dest/.complete" -nt "$pom" ]; then return; fi
    step "Maven Central: $(basename "$pom") -> ${dest#$ROOT/}"
    rm -rf "$dest" && mkdir -p "$dest"
    mvn -q -B -f "$pom" dependency:copy-dependencies \
        -DoutputDirectory="$dest" -DincludeScope=runtime
    touch "$dest/.complete"
}
fetch_jars conf/maven/connectors.xml "$RUN/jars"
fetch_jars conf/maven/kafka.xml "$RUN/kafka/libs"
# Flink's own distribution already carries connector-base; keep one copy.
rm -f "$RUN"/jars/flink-connector-base-*.jar

if [ ! -f "$RUN/secrets.env" ]; then
    step "database passwords (.run/secrets.env, never committed)"
    umask 077
    {
        echo "TXWATCH_ADMIN_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
        echo "TXWATCH_WRITER_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
        echo "TXWATCH_ANALYST_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    } > "$RUN/secrets.env"
fi
echo "setup complete"
