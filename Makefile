# Everything a newcomer needs, from a fresh clone with only python3 and pip.
#   make test   set up .venv and run the test suite
#   make demo   set up .venv, run the pool-size scaling study (workpool bench --quick) and
#               trace a map with one slow task (examples/trace_straggler.py)
#   make bench  compare workpool with its peers, quick (BENCH_ARGS= for the full run)
#   make lint   ruff and mypy
# PYTHON and VENV pick another interpreter: make test PYTHON=python3.13 VENV=.venv-3.13

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: test demo bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/workpool bench --quick --plot bench.png
	@echo "The plot is in $(CURDIR)/bench.png"
	$(BIN)/python examples/trace_straggler.py .
	$(BIN)/workpool trace summary trace-ordered.json
	$(BIN)/workpool trace plot trace-ordered.json -o trace.png
	@echo "The timeline of one slow task in an ordered map is in $(CURDIR)/trace.png"

BENCH_ARGS ?= --quick
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python -m compileall -q src  # start-up is measured: do not time compiling
	$(BIN)/python -m benchmarks --json bench.json $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy

clean:
	rm -rf .venv .venv-* build dist .pytest_cache .mypy_cache .ruff_cache
