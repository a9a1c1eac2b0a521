# Set-up and entry points. Needs only python3, make and apt (root, or sudo when not root).
#   make run    create .venv, install jointcal, serve the app on the bundled demo field
#   make test   create .venv, install jointcal with its test extras and Debian's chromium, run pytest
# Installation steps are stamped in .venv/, so a second run starts at once.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5006
PYTEST_ARGS ?=
CHROMIUM := /usr/bin/chromium
SUDO := $(shell if [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi)
APT_INSTALL = $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y

.PHONY: run test venv clean-venv

run: $(VENV)/.installed-run
	@echo "jointcal app: http://$(HOST):$(PORT)/main   (Ctrl-C stops it)"
	$(BIN)/panel serve app/main.py --address $(HOST) --port $(PORT) \
		--allow-websocket-origin=$(HOST):$(PORT) --allow-websocket-origin=localhost:$(PORT)

# pytest exits 5 when it ran no test: that is a failure here, never a pass
test: $(VENV)/.installed-test $(CHROMIUM)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest ran no test" >&2; exit 1; fi; exit $$rc

venv: $(BIN)/python

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { $(SUDO) apt-get update && $(APT_INSTALL) python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed-run

# Debian's chromium drives the browser tests (Playwright's own browser downloads are not used)
$(CHROMIUM):
	$(SUDO) apt-get update
	$(APT_INSTALL) chromium

clean-venv:
	rm -rf $(VENV)
