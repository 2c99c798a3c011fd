# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test fuzz bench clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

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

## Install and run the whole test suite.
test: $(STAMP) chromium
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider

## A longer fuzzing run of every reader (same tests, bigger budget).
fuzz: $(STAMP)
	IMMUNOPROFILE_FUZZ_EXAMPLES=2000 $(BIN)/python -m pytest -q -k fuzz tests

bench: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/gate_vs_flowkit.py

clean:
	rm -rf $(VENV) demo_output
