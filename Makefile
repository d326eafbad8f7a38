# mopro-bench: `make demo` and `make test` do all set-up themselves on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision to install; override e.g. `make setup TORCH="torch torchvision --index-url ..."` on GPU hosts
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.setup-done
DEMO_OUT ?= demo_out

.PHONY: setup setup-detection setup-browser demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/install_detectron2.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,detection]'
	bash scripts/install_detectron2.sh $(PY)
	@$(MAKE) --no-print-directory setup-browser
	@touch $@

# Chromium for tests/test_leaderboard_browser.py (the HTML leaderboard in a real headless browser). Installed from
# the distribution when missing and apt-get is usable as root; never fails set-up (without it that test is skipped).
BROWSERS := chromium chromium-browser google-chrome
setup-browser:
	@found=""; for b in $$MOPRO_BENCH_CHROMIUM $(BROWSERS); do command -v $$b >/dev/null 2>&1 && found=$$b && break; done; \
	if [ -n "$$found" ]; then echo "browser: $$found is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: installing chromium with apt-get (for the HTML leaderboard test)"; \
	  if (timeout 900 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq chromium) >/dev/null 2>&1; \
	  then echo "browser: chromium installed"; \
	  else echo "browser: apt-get could not install chromium; tests/test_leaderboard_browser.py will be skipped"; fi; \
	else echo "browser: no chromium and no root apt-get: tests/test_leaderboard_browser.py will be skipped" \
	  "(install chromium, or point MOPRO_BENCH_CHROMIUM at a Chrome/Chromium binary)"; fi

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
