# The two commands (README): `make run` trains the default asset, `make test` lints and runs the tests.
# Both build the development .venv first when it is missing or older than the locks: the runtime pins
# (requirements.lock, all the product needs) plus the test-only pins (requirements-test.lock).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MLAGENTS := mlagents==1.1.0 mlagents-envs==1.1.0
export PATH := $(CURDIR)/$(BIN):$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export MLFLOW_EXPERIMENT_NAME ?= unity-mlagents
export PYTHONUNBUFFERED := 1

ASSET ?= nav
ARGS ?=

.PHONY: venv run test test-fast lint browser postgres bench bench-offline bench-learning schedule ui team-server lock clean

venv: $(STAMP)

$(STAMP): requirements.lock requirements-test.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-test.lock -c requirements.lock
	# mlagents 1.1.0 says Python <=3.10.12 but runs on 3.11 with the pins above (README: Dependencies).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python $(MLAGENTS)
	# Its protoc 3.x modules need pure-Python protobuf 3.20; rewritten, they load on compiled protobuf 4.
	$(BIN)/python scripts/upgrade_mlagents_protos.py
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -c 'import mlagents.trainers, mlagents_envs, mlflow, hydra, onnxruntime, torch; print("venv ready: torch", torch.__version__, "mlflow", mlflow.__version__)'
	touch $@

run: $(STAMP)
	$(BIN)/mlflow run . -P asset=$(ASSET) --env-manager local $(ARGS)

test: lint browser postgres
	$(BIN)/python -m pytest -q --durations=15 $(ARGS)

# The suite without the tests marked slow (real trainings; the command line, servers or a training in child
# processes); target: under 2 minutes on a quiet 2-core box (README: Layout): the loop to run while changing code.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=10 $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

# PostgreSQL server binaries for the team-store and shared-claims tests (Debian packages; the tests start
# their own server as an unprivileged user in a temp dir). Best effort, like the browser.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	  || echo "postgresql not installed: the team-store tests will skip"; }

# Headless Chromium for the MLflow UI test (Debian packages). Best effort: where it cannot be installed
# (no root, no apt), that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "chromium not installed: the MLflow UI test will skip"; }

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt -c requirements.lock
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python scripts/bench.py $(ARGS)
	$(BIN)/python scripts/bench_startup.py
	$(BIN)/python scripts/bench_profile.py --steps 40000
	$(BIN)/python scripts/bench_protocol.py --steps 500
	$(BIN)/python scripts/bench_scheduler.py
	$(BIN)/python scripts/bench_store.py
	$(BIN)/python scripts/bench_resume.py
	$(BIN)/python scripts/bench_ray.py

schedule: $(STAMP)
	$(BIN)/python scripts/cron_runner.py $(ARGS)

bench-offline: $(STAMP)
	$(BIN)/python scripts/bench_offline.py --seeds 0 1 2

# Every asset x applicable algorithm on its default config, 3 seeds, into bench/results.md (hours on 2 cores).
bench-learning: $(STAMP)
	$(BIN)/python scripts/bench_learning.py --seeds 0 1 2 $(ARGS)

# The store goes through the environment, not argv: a password in it stays out of `ps` and make's echo.
ui: $(STAMP)
	@$(BIN)/python -c "import os; from pipeline.redaction import redact_uri; print('mlflow ui on http://127.0.0.1:5000, store', redact_uri(os.environ['MLFLOW_TRACKING_URI']))"
	@MLFLOW_BACKEND_STORE_URI="$$MLFLOW_TRACKING_URI" $(BIN)/mlflow ui --host 127.0.0.1 --port 5000

# A team MLflow server to try multi-node runs on one box: PostgreSQL (Debian's packages, data in team-server/)
# + `mlflow server` with proxied artifacts on http://127.0.0.1:5001, until Ctrl-C (README: Beyond one machine).
team-server: $(STAMP) postgres
	$(BIN)/python -m pipeline.tracking.team_server --dir team-server --port 5001 $(ARGS)

# Test-only packages stay in requirements-test.lock (the names already there); everything else is runtime.
TEST_ONLY := $(shell sed -n 's/==.*//p' requirements-test.lock | paste -sd'|')
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(mlagents|mlagents-envs)==' > .freeze.tmp
	grep -v -i -E '^($(TEST_ONLY))==' .freeze.tmp > requirements.lock.new
	grep -i -E '^($(TEST_ONLY))==' .freeze.tmp > requirements-test.lock.new
	rm .freeze.tmp
	@echo "review requirements.lock.new and requirements-test.lock.new (keep the headers and the torch/setuptools comments), then move them over the locks"

clean:
	rm -rf $(VENV) results outputs multirun
