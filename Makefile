# The two commands of the README: `make run` (quickstart) and `make test` (whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/quickstart

.PHONY: setup system-deps run test lint firmware-test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# Debian packages the tests use (espeak-ng voices the KWS task; the ARM cross compiler, QEMU and
# clang build and run the firmware). Installs only what is missing, and only where it can (root).
system-deps:
	bash scripts/install-system-deps.sh

run: setup
	$(VENV)/bin/fedtiny run scenarios/quickstart.toml --out $(OUT)

# the quality gates first (seconds), then the suite
test: setup system-deps lint
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

firmware-test:
	$(MAKE) -C firmware test

clean:
	rm -rf $(VENV) runs .cache
