# `make up` installs and runs the whole service on embedded parts; `make test` runs every check.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SKILLFOUNDRY_HOST ?= 127.0.0.1
SKILLFOUNDRY_PORT ?= 8000

.PHONY: install up test lint typecheck pytest bench clean chromium

# The CPU build of torch is pinned and installed first: an unpinned torch pulls a CUDA build of several GB.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet -e 'clients/python[mcp]'
	touch $(STAMP)

install: $(STAMP)

up: install
	HF_HUB_OFFLINE=1 $(BIN)/skillfoundry up --host $(SKILLFOUNDRY_HOST) --port $(SKILLFOUNDRY_PORT)

lint: install
	$(BIN)/ruff check app tests migrations clients
	$(BIN)/ruff format --check app tests migrations clients

typecheck: install
	$(BIN)/mypy

# The admin UI's browser tests drive Debian's Chromium (Playwright never downloads a browser here).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y --no-install-recommends chromium; \
	  elif sudo -n true 2>/dev/null; then sudo -n apt-get update -qq && sudo -n apt-get install -y --no-install-recommends chromium; \
	  else echo "$(CHROMIUM) is missing: run 'apt-get install chromium' as root (the admin UI's browser tests need it)" >&2; exit 1; fi; }

pytest: install chromium
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test: lint typecheck pytest

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/skillfoundry bench ingest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
