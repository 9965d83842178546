# Two commands set everything up on a fresh machine:
#   make demo   -> creates .venv, installs hftransfer, fine-tunes EfficientNet-Lite0 on scikit-learn digits
#   make test   -> creates .venv, installs hftransfer + test deps, runs the quick tier (before each commit)
# The second tier (child processes, compiling, real data, packaged weights, hub server, trackers, DeepSpeed):
#   make test-integration; both tiers: make test-all. CI (.ci/run) runs lint and both tiers, no test twice.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.14.1 / torchvision 0.29.1 are the builds this project pins (served from the local wheel cache here).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: install install-test-extras lint demo test test-integration test-all bench-quick bench gpu-check clean
.PHONY: docs docs-serve

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The second tier's extras (trackers, DeepSpeed): installed once, beside dev.
install-test-extras: $(VENV)/.test-extras

$(VENV)/.test-extras: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,test-extras]"
	touch $@

lint: install
	$(PY) -m ruff check .

demo: install
	$(VENV)/bin/hftransfer train recipes/configs/demo_digits.yaml

# Quick tier: in-process, tiny models; every module and every registered method/objective at least once.
test: install
	$(PY) -m pytest -m "not integration and not slow and not gpu"

# Second tier: everything else except GPU tests, on TEST_WORKERS pytest-xdist workers with one torch thread each (two
# torch processes with a thread per core each slow each other down many times). --dist loadfile keeps a test file on
# one worker, so its module fixtures (the hub's seeded repos) are built once.
TEST_WORKERS ?= 2
test-integration: install-test-extras
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "(integration or slow) and not gpu" -n $(TEST_WORKERS) --dist loadfile

test-all: install-test-extras
	$(PY) -m pytest -m "not gpu"

bench-quick: install
	$(PY) bench/run.py --mode quick

bench: install
	$(PY) bench/run.py --mode full

# On a CUDA machine: gpu tests, bf16/fp16 runs of every recipe config, 2-GPU DDP (bench/results/gpu_check/).
gpu-check: install
	PYTHON=$(PY) bash bench/gpu_check.sh

# The documentation site (mkdocs.yml, docs/): --strict fails on a broken link, reference or generated page.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:
	rm -rf outputs .pytest_cache
