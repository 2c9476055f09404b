# One entry point for set-up, running and checking. Everything installs into .venv.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install browser run test test-unit test-integration test-e2e lint check format bench clean

$(BIN)/.installed: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet -e ./clients/python
	touch $@

# the dashboard tests' headless browser: Debian's Chromium (Playwright's own download fails here)
AGENT_LEDGER_TEST_CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(AGENT_LEDGER_TEST_CHROMIUM):
	@command -v apt-get >/dev/null || { echo "make: the dashboard tests need Chromium at $@:" \
		"install it, or set AGENT_LEDGER_TEST_CHROMIUM to one" >&2; exit 1; }
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
	@test -x $@ || { echo "make: chromium was installed but $@ is still missing" >&2; exit 1; }

install: $(BIN)/.installed

browser: $(AGENT_LEDGER_TEST_CHROMIUM)  ## the headless Chromium of the dashboard tests

run: install  ## start the service on the embedded SQLite store
	$(BIN)/agent-ledger serve

# Each tier is one pytest run, timed against its budget on 2 cores (scripts/test_tiers.py);
# PYTEST_ARGS go to every run (`--junitxml=FILE` gets one report of the three tiers).
TIERS := $(BIN)/python scripts/test_tiers.py

test: install browser  ## every tier in turn: unit, integration (PostgreSQL), end-to-end
	$(TIERS) unit integration e2e -- $(PYTEST_ARGS)

test-unit: install  ## no database, in-memory and embedded SQLite: budget 60 s
	$(TIERS) unit -- $(PYTEST_ARGS)

test-integration: install  ## PostgreSQL (and SQLite beside it): budget 4 min
	$(TIERS) integration -- $(PYTEST_ARGS)

test-e2e: install browser  ## the agent-ledger command over HTTP, WebSocket, a browser: budget 3 min
	$(TIERS) e2e -- $(PYTEST_ARGS)

lint: install  ## formatting, lint, types and the layer contract
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	cd clients/python && ../../$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .agent-ledger .mypy_cache .ruff_cache .pytest_cache build *.egg-info
