# mopro-bench: `make demo` and `make test` do all set-up themselves on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision to install; override e.g. `make setup TORCH="torch torchvision --index-url ..."` on GPU hosts
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.setup-done
DEMO_OUT ?= demo_out

.PHONY: setup setup-detection demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/install_detectron2.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,detection]'
	bash scripts/install_detectron2.sh $(PY)
	@touch $@

setup-detection: setup
	bash scripts/install_detectron2.sh $(PY) --force

demo: setup
	$(VENV)/bin/mopro-bench demo --out $(DEMO_OUT)

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache *.egg-info
