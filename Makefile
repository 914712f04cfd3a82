# kdlab: `make demo` and `make test` work from a fresh clone with nothing pre-installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format install clean bench

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/kdlab demo

lint: $(STAMP)
	$(BIN)/ruff check kdlab tests benchmarks experiments
	$(BIN)/ruff format --check kdlab tests benchmarks experiments
	$(BIN)/mypy kdlab

format: $(STAMP)
	$(BIN)/ruff check --fix kdlab tests benchmarks experiments
	$(BIN)/ruff format kdlab tests benchmarks experiments

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/step_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
