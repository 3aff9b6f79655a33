# `make run`: install into .venv and start the service with sample data (embedded PostgreSQL
# unless DATABASE_URL is set). `make test`: lint and the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run install install-dev test lint migrate seed worker bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"

run: install
	$(BIN)/python -m app serve --host $(HOST) --port $(PORT)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

migrate: install
	$(BIN)/python -m app migrate

seed: install
	$(BIN)/python -m app seed

worker: install
	$(BIN)/python -m app worker

bench: install-dev
	$(BIN)/python bench/api_load.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
