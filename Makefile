# The two commands a new machine needs: `make run` and `make test`. Everything else follows.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-cluster bench lint check services clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "hookpipe needs Python 3.11 or newer (PYTHON=$(PYTHON))")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

services:
	@./scripts/ensure-services.sh

var/dev.env:
	@./scripts/dev-env.sh

## run: the whole pipeline on this machine (ingress on :8080, workers, SQLite ledger in var/)
run: $(STAMP) services var/dev.env
	@set -a; . ./var/dev.env; set +a; $(BIN)/hookpipe topology declare && exec $(BIN)/hookpipe run

## test: the test suite, against the local RabbitMQ and PostgreSQL, and the failover tests against
## a 3-node cluster they start (loadgroup: both on one xdist worker, so one cluster boots); then,
## alone, the tests that compare latencies (marker timing), which the others' load would skew
test: $(STAMP)
	@./scripts/ensure-services.sh --postgres
	$(BIN)/pytest -q -n 3 --dist loadgroup -m "not timing"
	$(BIN)/pytest -q -m timing

## test-cluster: the failover tests alone (kill -9 and graceful stop of the connected node)
test-cluster: $(STAMP)
	@./scripts/ensure-services.sh --postgres
	$(BIN)/pytest -q -m cluster

## bench: speed and memory, as ratios to ceilings measured in the same run
bench: $(STAMP)
	@./scripts/ensure-services.sh --postgres
	$(BIN)/python -m bench

## lint: ruff, mypy --strict (package, tests and bench), yamllint over deploy/, and every
## manifest of deploy/ against the Kubernetes schemas and KEDA's structure (deploy/check_manifests.py)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@./scripts/typecheck-tree.sh
	$(BIN)/mypy
	$(BIN)/yamllint -d "{extends: relaxed, rules: {line-length: {max: 120}}}" deploy/
	$(BIN)/python deploy/check_manifests.py

clean:
	rm -rf $(VENV) var/ledger.sqlite3* .pytest_cache .mypy_cache .ruff_cache
