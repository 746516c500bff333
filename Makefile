# Switchyard — `make run` starts the whole stack, `make test` runs the suite.
# Every variable below can be overridden from the environment or the command line.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# pytest-xdist workers ("auto" = one per core).
PYTEST_WORKERS ?= auto
PYTEST_ARGS ?=

# Addresses of the `make run` stack (read by Procfile and `manage.py bootstrap`).
export SWITCHYARD_VAR_DIR ?= $(CURDIR)/var
export SWITCHYARD_WEB_BIND ?= 127.0.0.1
export SWITCHYARD_WEB_PORT ?= 8000
export SWITCHYARD_NODE_NAME ?= local
export SWITCHYARD_NODE_HTTP ?= 127.0.0.1:8080
export SWITCHYARD_NODE_HTTPS ?= 127.0.0.1:8443
export SWITCHYARD_NODE_ADMIN ?= 127.0.0.1:9901
export SWITCHYARD_CONTROL_PLANE_URL ?= ws://127.0.0.1:$(SWITCHYARD_WEB_PORT)/ws/dataplane/
export SWITCHYARD_DEMO_BIND ?= 127.0.0.1
export SWITCHYARD_DEMO_PORT ?= 8081
export SWITCHYARD_DEMO_HOST ?= demo.localhost

.PHONY: run test venv deps test-deps bootstrap clean-venv

run: deps
	$(PY) manage.py bootstrap
	@echo "Starting Switchyard: dashboard http://$(SWITCHYARD_WEB_BIND):$(SWITCHYARD_WEB_PORT)/ , proxy http://$(SWITCHYARD_NODE_HTTP)/ (Ctrl-C stops everything)"
	exec $(VENV)/bin/honcho -f Procfile start

bootstrap: deps
	$(PY) manage.py bootstrap

test: test-deps
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

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
