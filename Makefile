# Two commands set everything up on a fresh machine:
#   make demo   -> creates .venv, installs hftransfer, fine-tunes EfficientNet-Lite0 on scikit-learn digits
#   make test   -> creates .venv, installs hftransfer + test deps, runs unit + integration tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.14.1 / torchvision 0.29.1 are the builds this project pins (served from the local wheel cache here).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: install lint demo test test-unit test-integration test-slow bench-quick bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

lint: install
	$(PY) -m ruff check .

demo: install
	$(VENV)/bin/hftransfer train recipes/configs/demo_digits.yaml

test: install
	$(PY) -m pytest -m "not slow and not gpu"

test-unit: install
	$(PY) -m pytest -m "not integration and not slow and not gpu"

test-integration: install
	$(PY) -m pytest -m "integration and not slow"

test-slow: install
	$(PY) -m pytest -m "slow"

bench-quick: install
	$(PY) bench/run.py --mode quick

bench: install
	$(PY) bench/run.py --mode full

# On a CUDA machine: gpu tests, bf16/fp16 runs of every recipe config, 2-GPU DDP (bench/results/gpu_check/).
gpu-check: install
	PYTHON=$(PY) bash bench/gpu_check.sh

clean:
	rm -rf outputs .pytest_cache
