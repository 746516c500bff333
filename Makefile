# Switchyard — `make run` starts the whole stack, `make test` runs the suite.
# Every variable below can be overridden from the environment or the command line.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# pytest-xdist workers ("auto" = one per core).
PYTEST_WORKERS ?= auto
PYTEST_ARGS ?=

# Addresses and ports of the `make run` stack come from the environment with defaults
# in the Procfile and in `manage.py bootstrap` (see README.md, "Environment variables"),
# e.g.  SWITCHYARD_WEB_PORT=9000 SWITCHYARD_NODE_HTTP=127.0.0.1:9080 make run

.PHONY: run test lint venv deps test-deps bootstrap clean-venv bench

run: deps
	$(PY) manage.py bootstrap
	@echo "Starting Switchyard; a line 'Switchyard is ready: ...' says when the dashboard and the proxy are up (Ctrl-C stops everything)"
	exec $(VENV)/bin/honcho -f Procfile start

bootstrap: deps
	$(PY) manage.py bootstrap

# The import contracts first (seconds): a layer or cycle broken fails the run.
test: test-deps
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# ruff, then the import contracts (layers of the control-plane apps, no import cycles, a
# data plane free of Django), both configured in pyproject.toml. Both always run; lint
# fails if either finds something.
lint: test-deps
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/lint-imports --no-cache --no-logo || status=1; \
	exit $$status

# Benchmarks side by side with nginx and HAProxy (bench/README.md); e.g. BENCH_ARGS=--quick
BENCH_ARGS ?=
bench: test-deps
	$(PY) -m bench $(BENCH_ARGS)

venv: $(VENV)/bin/python

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Switchyard needs Python 3.11+, found " + sys.version)'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Reinstall only when the requirement files change (stamp files inside the venv).
deps: $(VENV)/.requirements.stamp
$(VENV)/.requirements.stamp: requirements.txt | $(VENV)/bin/python
	$(PIP) install -r requirements.txt
	@touch $@

test-deps: $(VENV)/.requirements-test.stamp
$(VENV)/.requirements-test.stamp: requirements.txt requirements-test.txt | $(VENV)/bin/python
	$(PIP) install -r requirements.txt -r requirements-test.txt
	@touch $(VENV)/.requirements.stamp $@

clean-venv:
	rm -rf $(VENV)
