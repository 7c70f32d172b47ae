# The two commands: `make demo` runs the main job on the embedded default; `make test` runs the suite.
# Each creates .venv and installs what is missing. Torch goes first, pinned, so that pip takes
# the CPU build (or the CUDA one on a GPU machine) instead of resolving its own.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
DEMO_QUERY ?= skip rows that are already stored

.PHONY: demo test lint bench install chromium

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
	@command -v chromium >/dev/null || $(MAKE) --no-print-directory chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Debian's chromium renders `vectorize report` in the tests; without it that test is skipped.
chromium:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the report test"; \
		apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null; }; \
	else echo "chromium is missing and cannot be installed here (not root): the report test will be skipped"; fi

bench: $(VENV)/.installed
	$(BIN)/python bench/throughput.py
