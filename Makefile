# veil: every target CI calls lives here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: setup models test lint sample clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[server,triton,dev]'
	touch $@

setup: $(VENV)/.installed

models: setup
	$(PY) -m veil.server.weights fetch

test: setup models
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check client server tests
	$(VENV)/bin/ruff format --check client server tests

clean:
	rm -rf $(VENV) build *.egg-info
