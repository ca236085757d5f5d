# echo-batch task runner. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.DEFAULT_GOAL := help
.PHONY: help install run-flow test lint format bench bench-quick clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install torch (CPU) and echo-batch with dev extras (idempotent)

DATA ?= examples/camus224-test
OUT ?= results

run-flow: install ## Measure a cohort: make run-flow [DATA=folder] [OUT=folder] (default: bundled sample -> results/)
	$(BIN)/echo-batch run "$(DATA)" --out "$(OUT)"

test: install ## Run the test suite
	$(BIN)/python -m pytest

lint: install ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

BENCH_QUICK_DIR ?= build/bench-quick

bench: install ## Benchmark suite (~15 min, quiet machine): results JSON/MD in benchmarks/results, README table
	$(BIN)/python benchmarks/suite.py
	$(BIN)/python benchmarks/perf_table.py --write-readme

bench-quick: install ## Benchmark suite in ~2 min into build/bench-quick (not committed); prints the table
	$(BIN)/python benchmarks/suite.py --quick --out $(BENCH_QUICK_DIR)
	$(BIN)/python benchmarks/perf_table.py --results-dir $(BENCH_QUICK_DIR)

format: install ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
