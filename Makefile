# The two commands: `make demo` runs the main job on the embedded default; `make test` runs the suite.
# Each creates .venv and installs what is missing. Torch goes first, pinned, so that pip takes
# the CPU build (or the CUDA one on a GPU machine) instead of resolving its own.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
DEMO_QUERY ?= skip rows that are already stored

.PHONY: demo test lint bench install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PIP) -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/vectorize run git:. --table vectorize_history
	$(BIN)/vectorize search "$(DEMO_QUERY)" --table vectorize_history -k 5

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .

test: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/throughput.py
