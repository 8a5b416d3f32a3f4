# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Each installs what it needs: system prerequisites, a virtualenv in .venv, and the package with its extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install stack-up stack-down lint typecheck bench clean

$(STAMP): pyproject.toml
	./scripts/install-prereqs
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job: start the real local stack and run costplane end to end on synthetic traffic.
demo: $(STAMP)
	$(BIN)/costplane demo

## The test suite against the real stack (started if it is not running).
test: $(STAMP)
	./scripts/install-prereqs --test
	$(BIN)/costplane dev up
	$(BIN)/python -m pytest

stack-up: $(STAMP)
	$(BIN)/costplane dev up

stack-down: $(STAMP)
	$(BIN)/costplane dev down

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	PATH=$(BIN):$$PATH ./scripts/typecheck

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
