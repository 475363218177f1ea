# The two fresh-machine commands: `make demo` (the main job) and `make test` (the whole suite).
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test lint typecheck bench bench-smoke docs system-deps venv clean collector

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages for the integration tests: installed when missing and running as root.
system-deps:
	@bash scripts/install-system-deps.sh

# KEEP=1 leaves the service running after the demo so the operator's page can be opened.
demo: venv
	$(BIN)/python -m examples.demo $(if $(KEEP),--serve,)

# The test Collector (collector/, Go): built once into a cache keyed by its sources' hash
# (cold: minutes, downloads the Go modules; warm: instant). Without Go only CI fails here;
# locally the Collector tests then skip.
collector:
	@bash scripts/build-collector.sh >/dev/null || [ "$$CI" != "true" ]

test: venv system-deps collector
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

bench: venv system-deps
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.sim_drift --write

bench-smoke: venv system-deps
	$(BIN)/python -m benchmarks --quick

docs: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_docs.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
