# txwatch: every task starts here. `make demo` and `make test` set up a fresh
# machine on their own (virtualenv, jars, Kafka, PostgreSQL), then run.

SHELL := /bin/bash
PY := .venv/bin/python
WITH_SECRETS := set -a && . .run/secrets.env && set +a &&
PYTEST_ARGS ?=

.PHONY: setup services stop status demo test test-unit test-integration bench chaos \
        lint format train cluster-start cluster-stop submit clean

setup:
	bash scripts/setup.sh

services: setup
	bash scripts/services.sh start
	$(WITH_SECRETS) $(PY) -m txwatch.cli db --partitions-from 2018-04-01 --partitions-to 2018-08-15
	$(WITH_SECRETS) $(PY) -m txwatch.cli topics

stop:
	-bash scripts/cluster.sh stop
	bash scripts/services.sh stop

status:
	bash scripts/services.sh status

demo: services
	$(WITH_SECRETS) $(PY) -m txwatch.cli demo

train: setup
	$(WITH_SECRETS) $(PY) -m txwatch.cli train

test: services
	$(WITH_SECRETS) $(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: services
	$(WITH_SECRETS) $(PY) -m pytest tests/integration $(PYTEST_ARGS)

bench: services
	$(WITH_SECRETS) $(PY) -m bench.run

chaos: services
	$(WITH_SECRETS) $(PY) -m pytest -s tests/integration/test_chaos.py tests/integration/test_state.py $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff format .

cluster-start: setup
	bash scripts/cluster.sh start

cluster-stop:
	bash scripts/cluster.sh stop

# Submit the job to the standalone Flink cluster at parallelism 2.
submit: services cluster-start
	$(WITH_SECRETS) bash scripts/cluster.sh submit --parallelism 2

clean: stop
	rm -rf .run .venv
