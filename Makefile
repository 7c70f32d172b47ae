# The two commands: `make demo` runs the main job on the embedded default; `make test` runs the suite.
# Each creates .venv and installs what is missing. Torch goes first, pinned, so that pip takes
# the CPU build (or the CUDA one on a GPU machine) instead of resolving its own.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
DEMO_QUERY ?= skip rows that are already stored
# Test processes, a file each at a time, each with its own Ray, Postgres and models: the suite's
# tests wait on processes they start for much of their time, so two keep a 2-core machine busy.
TEST_WORKERS ?= 2

.PHONY: demo test lint bench install chromium
.NOTPARALLEL:  # two installs into one .venv at once (make -j demo test) would break it

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip compiles each package's modules one file after another; compileall does it on every core.
define install_with
	$(PIP) --no-compile "$(TORCH_SPEC)"
	$(PIP) --no-compile -e "$(1)"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null || true  # a few files of packages are not Python 3
endef

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(call install_with,.)
	touch $@

# one resolution for the project and its test tools where neither is installed yet
$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(if $(wildcard $(VENV)/.installed),$(PIP) -e ".[test]",$(call install_with,.[test]))
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/vectorize run git:. --table vectorize_history
	$(BIN)/vectorize search "$(DEMO_QUERY)" --table vectorize_history -k 5

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .

test: $(VENV)/.test-installed
	@command -v chromium >/dev/null || $(MAKE) --no-print-directory chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Debian's chromium renders `vectorize report` in the tests; without it that test is skipped.
chromium:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the report test"; \
		apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null; }; \
	else echo "chromium is missing and cannot be installed here (not root): the report test will be skipped"; fi

bench: $(VENV)/.installed
	$(BIN)/python bench/throughput.py
