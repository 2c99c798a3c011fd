# Two entry points that work on a fresh machine: `make demo` and `make test`.
#
# `make test` runs the suite twice:
#   .venv         the oldest supported stack (Python 3.11, pandas 2, anndata 0.12) plus the oracle
#                 libraries (FlowKit, FlowIO, FlowUtils; FlowKit caps pandas below 3): every test;
#   .venv-newest  the newest Python on the machine (3.13 here, via pyenv) with today's scverse stack
#                 (pandas 3, anndata >= 0.13), without the oracle libraries: every test not marked
#                 `oracle` (tests/conftest.py marks the tests that import an oracle library).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

NEWEST_PYTHON ?= $(shell sh scripts/newest-python)
VENV_NEW  ?= .venv-newest
BIN_NEW   := $(VENV_NEW)/bin
STAMP_NEW := $(VENV_NEW)/.installed

PYTEST := OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python -m pytest -q -p no:cacheprovider

.PHONY: venv venv-newest demo test test-oldest test-newest fuzz bench clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,oracles]'
	touch $(STAMP)

venv: $(STAMP)

$(STAMP_NEW): pyproject.toml
	@test -n "$(NEWEST_PYTHON)" || { echo "no Python >= 3.12 found (set NEWEST_PYTHON=/path/to/python3.13)"; exit 1; }
	$(NEWEST_PYTHON) -m venv $(VENV_NEW)
	$(BIN_NEW)/pip install --quiet --upgrade pip
	$(BIN_NEW)/pip install --quiet -e '.[dev]' 'pandas>=3' 'anndata>=0.13'
	touch $(STAMP_NEW)

venv-newest: $(STAMP_NEW)

## Run the bundled example trial end to end; prints where the outputs are.
demo: $(STAMP)
	$(BIN)/immunoprofile run pipelines/example_trial.yaml

# The report's browser test drives Debian's chromium (never a downloaded browser build).
CHROMIUM := $(shell command -v chromium 2>/dev/null)
chromium:
ifeq ($(CHROMIUM),)
	@echo "installing Debian's chromium for the report's browser test"
	@if [ "$$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null
endif

## Install and run the whole test suite, on the oldest and on the newest supported stack.
test: test-oldest test-newest

test-oldest: $(STAMP) chromium
	@echo "== oldest supported stack: $$($(BIN)/python -c 'import sys, pandas, anndata; print(f"Python {sys.version.split()[0]}, pandas {pandas.__version__}, anndata {anndata.__version__}")'), with the oracle libraries"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PYTEST)

test-newest: $(STAMP_NEW) chromium
	@echo "== newest stack: $$($(BIN_NEW)/python -c 'import sys, pandas, anndata; print(f"Python {sys.version.split()[0]}, pandas {pandas.__version__}, anndata {anndata.__version__}")'); oracle tests ran above"
	PATH="$(CURDIR)/$(BIN_NEW):$$PATH" $(PYTEST) -m "not oracle"

## A longer fuzzing run of every reader (same tests, bigger budget).
fuzz: $(STAMP)
	IMMUNOPROFILE_FUZZ_EXAMPLES=2000 $(BIN)/python -m pytest -q -k fuzz tests

bench: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/gate_vs_flowkit.py

clean:
	rm -rf $(VENV) $(VENV_NEW) demo_output
