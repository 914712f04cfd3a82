# kdlab: `make demo` and `make test` work from a fresh clone with nothing pre-installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format install clean bench test-vision gpu-check

# The optional `vision` extra (timm and torchvision models by name) and `turbo` (simplejpeg decoding) in a venv of
# its own: torch 2.14.1 and torchvision 0.29.1 (a CUDA build, ~5.5 GB, runs on the CPU) instead of the core's
# torch 2.13.0.
VISION := .venv-vision

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

$(VISION)/.installed: pyproject.toml
	test -x $(VISION)/bin/python || $(PYTHON) -m venv $(VISION)
	$(VISION)/bin/python -m pip install -q --upgrade pip
	$(VISION)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(VISION)/bin/python -m pip install -q -e '.[dev,vision,turbo]'
	touch $@

test-vision: $(VISION)/.installed
	$(VISION)/bin/python -m pytest tests/test_vision_models.py tests/test_bring_your_own.py tests/test_decode_turbo.py \
		tests/test_device_decode.py

# On a CUDA machine: the device tests and the throughput table into gpu-check/ (benchmarks/gpu_check.sh).
gpu-check:
	bash benchmarks/gpu_check.sh --device cuda --out gpu-check

bench: $(STAMP)
	$(BIN)/python benchmarks/step_throughput.py

clean:
	rm -rf $(VENV) $(VISION) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
