# One entry point for set-up, running and checking. Everything installs into .venv.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install run test lint check format bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install  ## start the service on the embedded SQLite store
	$(BIN)/agent-ledger serve

test: install  ## every test: unit, integration (PostgreSQL), end-to-end
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install  ## formatting, lint, types and the layer contract
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .agent-ledger .mypy_cache .ruff_cache .pytest_cache
