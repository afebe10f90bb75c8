# Two commands on a fresh machine: `make quickstart` and `make test`. Both set everything up first, idempotently.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup system-deps browser-deps quickstart test test-fast lint clean-quickstart

# Debian libraries for offscreen rendering (EGL through Mesa's llvmpipe); installed only where missing.
system-deps:
	@missing=""; for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglib2.0-0; do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# Debian's chromium for the browser test of `handmesh serve` (tests/test_serve.py drives it with playwright);
# installed only where missing. Where the package does not exist the test says so and is skipped.
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing Debian package: chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium ) \
	    || echo "could not install chromium: the browser test will be skipped"; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# fit/validate/test --help, built once here (they import Lightning and torch) and printed from the cache later
	$(PY) -c "from handmesh.commands.lightning import run_lightning as r; [r(n, ['--help']) for n in ('fit', 'validate', 'test')]" >/dev/null
	@rm -f $(VENV)/.installed-* && touch $@

setup: system-deps $(STAMP)

quickstart: setup
	$(PY) -m handmesh.quickstart

# The tests, then the linter (ruff, configured in pyproject.toml); either failing fails the target.
test: setup browser-deps
	$(PY) -m pytest -q
	$(PY) -m ruff check .

lint: setup
	$(PY) -m ruff check .

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean-quickstart:
	rm -rf runs/quickstart data/synthetic_freihand
