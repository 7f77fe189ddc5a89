# `make up` installs and runs the whole service on embedded parts; `make test` runs every check.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SKILLFOUNDRY_HOST ?= 127.0.0.1
SKILLFOUNDRY_PORT ?= 8000

.PHONY: install up test lint typecheck pytest bench clean

# The CPU build of torch is pinned and installed first: an unpinned torch pulls a CUDA build of several GB.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet -e clients/python
	touch $(STAMP)

install: $(STAMP)

up: install
	HF_HUB_OFFLINE=1 $(BIN)/skillfoundry up --host $(SKILLFOUNDRY_HOST) --port $(SKILLFOUNDRY_PORT)

lint: install
	$(BIN)/ruff check app tests migrations clients
	$(BIN)/ruff format --check app tests migrations clients

typecheck: install
	$(BIN)/mypy

pytest: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test: lint typecheck pytest

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/skillfoundry bench ingest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
