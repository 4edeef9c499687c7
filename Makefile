# Two commands on a fresh machine:
#   make train   create .venv, install metods + metods-plugins, train and evaluate the Harlow recipe
#   make test    create/update the same .venv and run the whole test suite
.PHONY: setup train evaluate test test-fast benchmark lint docs

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RECIPE ?= recipes/harlow/metods.yaml
RUN_DIR ?= runs/harlow-metods

# torch is pinned in the same pip command as everything else: unpinned, pip may resolve a
# multi-GB CUDA build (see docs/install.md).
$(STAMP): pyproject.toml plugins/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "torch==2.13.0" -e ".[test,docs]" -e "./plugins[mujoco,metaworld]"
	touch $(STAMP)

setup: $(STAMP)

# A second `make train` continues the same run (a no-op once it is finished) instead of failing.
train: setup
	if [ -f $(RUN_DIR)/recipe.yaml ]; then $(BIN)/metods train --resume $(RUN_DIR); \
	else $(BIN)/metods train $(RECIPE) --run-dir $(RUN_DIR); fi
	$(BIN)/metods evaluate $(RUN_DIR)

evaluate: setup
	$(BIN)/metods evaluate $(RUN_DIR)

# The suite runs on TEST_WORKERS pytest-xdist workers (default 2: the CI machine's cores), one
# torch thread each, so the workers do not oversubscribe the cores (TEST_WORKERS=0: one process).
# The 20 slowest tests are listed at the end, so every CI log says where the suite's time goes
# (it must stay under 15 minutes on the CI machine).
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=20

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

benchmark: setup
	$(BIN)/python benchmarks/harlow_throughput.py
	$(BIN)/python benchmarks/env_stepping.py

# The site, into site/. --strict fails on a broken link or anchor and on any warning; the recipe
# reference must match the installed plugins' schemas (regenerate: python docs/gen_reference.py).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/python docs/gen_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check metods_core plugins tests benchmarks
	$(BIN)/mypy
