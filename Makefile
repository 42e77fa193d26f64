# Two commands for a new user: `make demo` (set up, run the main job) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint demo clean

$(BIN)/mood-vqad: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/mood-vqad

lint: setup
	$(BIN)/ruff check mood_vqad tests scripts docker
	$(BIN)/ruff format --check mood_vqad tests scripts docker

test: lint
	$(BIN)/pytest -m "not network"

demo: setup
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) out demo
