# Schakel: every target sets itself up (a local .venv with the project and its dev tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck layers unit bench schemas vectors clean

## demo: embedded NATS, the hub and simulated partners playing scenario 1
demo: $(STAMP)
	$(BIN)/schakel demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## test: lint, type-check, check the layering and run the whole test suite
test: lint typecheck layers unit

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest

## bench: envelope crypto beside raw libsodium; the hub beside a bare JetStream relay; the adapter beside the SDK
bench: $(STAMP)
	$(BIN)/python bench/envelope.py
	$(BIN)/python bench/endtoend.py
	$(BIN)/python bench/adapter.py

## schemas / vectors: regenerate the committed JSON Schemas and known-answer vectors
schemas: $(STAMP)
	$(BIN)/python -m schakel.contracts.schema

vectors: $(STAMP)
	$(BIN)/python -m schakel.keys.vectors

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
