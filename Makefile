# echo-batch task runner. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.DEFAULT_GOAL := help
.PHONY: help install run-flow test lint format bench clean

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

bench: install ## Benchmarks: geometry per image, engine vs plain fp32 loop, flow overhead/memory/end to end
	mkdir -p benchmarks/results
	$(BIN)/python benchmarks/bench_geometry.py
	$(BIN)/python benchmarks/bench_engine.py --json benchmarks/results/engine-$$(date +%F)-$$(hostname).json
	$(BIN)/python benchmarks/bench_flow.py --json benchmarks/results/flow-$$(date +%F)-$$(hostname).json

format: install ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
