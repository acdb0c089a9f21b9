# RadPilot developer and CI entry points.
#   make setup   Debian packages (as root), .venv with radpilot[test], the native store receiver, OHIF viewer
#   make run     setup, a synthetic sample study imported, then `radpilot serve`
#   make test    setup, then pytest on PYTEST_WORKERS (2) workers (PYTEST_ARGS passed through; fails when pytest fails)
#   make lint    ruff (lint + formatter check), mypy on the typed seams, import-linter layers
#   make sample  write the synthetic CT study into SAMPLE_DIR
#   make bench   benchmarks/run_all.py

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

APT_PACKAGES := orthanc orthanc-dicomweb dcmtk libdcmtk-dev g++ redis-server postgresql chromium dicom3tools docker-compose systemd poppler-utils fonts-dejavu-core rsyslog rsyslog-gnutls espeak-ng fonts-nanum
PYTHON_BOOT  := $(shell command -v python3.11 || command -v python3)
VENV         := .venv
VENV_PY      := $(VENV)/bin/python
VENV_STAMP   := $(VENV)/.radpilot-installed
DATA_DIR     ?= .radpilot
SAMPLE_DIR   ?= $(DATA_DIR)/sample
PYTEST_ARGS  ?=
# Two pytest-xdist workers, a test file each at a time: most integration tests wait on their peers
# (Orthanc, PostgreSQL, Chromium), so two overlap well even on 2 cores. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
PYTEST_STATUS_FILE ?=

.PHONY: help setup system-packages venv native ohif sample run test lint bench

help:
	@sed -n 's/^#   //p' Makefile

setup: system-packages venv native ohif

# Install missing Debian packages when root; otherwise only say what is missing.
# npm (for OHIF) and python3-venv (for .venv) are added only when absent.
system-packages:
	@if ! command -v dpkg-query >/dev/null; then \
	    echo "setup: not a Debian system; install by hand: $(APT_PACKAGES)" >&2; exit 0; fi; \
	missing=""; \
	for pkg in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; \
	done; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	[ -n "$(PYTHON_BOOT)" ] || missing="$$missing python3 python3-venv"; \
	[ -z "$(PYTHON_BOOT)" ] || "$(PYTHON_BOOT)" -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	    echo "setup: missing Debian packages:$$missing (run 'make setup' as root to install them)" >&2; exit 0; fi; \
	echo "setup: installing Debian packages:$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -q; \
	apt-get install -y -q --no-install-recommends $$missing

venv: $(VENV_STAMP)

$(VENV_PY):
	@test -n "$(PYTHON_BOOT)" || { echo "setup: no python3.11 or python3 found" >&2; exit 1; }
	$(PYTHON_BOOT) -m venv $(VENV)

$(VENV_STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install -q -e '.[test]'
	touch $@

# C-STORE on dcmtk's network layer (settings.dicom_store_port); skipped with a message when g++ or libdcmtk-dev is missing.
native: $(VENV_STAMP)
	scripts/build_native.sh $(VENV_PY)

ohif:
	scripts/install_ohif.sh

sample: | $(VENV_STAMP)
	@if [ -e "$(SAMPLE_DIR)" ]; then echo "sample: $(SAMPLE_DIR) exists"; else \
	    $(VENV_PY) scripts/make_sample_study.py "$(SAMPLE_DIR).tmp" && mv "$(SAMPLE_DIR).tmp" "$(SAMPLE_DIR)"; fi

run: setup sample
	RADPILOT_DATA_DIR=$(DATA_DIR) $(VENV)/bin/radpilot import --data-dir $(DATA_DIR) $(SAMPLE_DIR)
	exec $(VENV)/bin/radpilot serve --data-dir $(DATA_DIR)

# make itself exits 2 when pytest fails; pytest's own status is printed and, when
# PYTEST_STATUS_FILE is set, written there (.ci/run uses that to tell "no tests" apart).
test: setup
	@status=0; $(VENV_PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS) || status=$$?; \
	if [ -n "$(PYTEST_STATUS_FILE)" ]; then echo "$$status" > "$(PYTEST_STATUS_FILE)"; fi; \
	if [ "$$status" != 0 ]; then echo "make test: pytest exited with status $$status" >&2; fi; \
	exit "$$status"

LINT_PATHS := radpilot tests benchmarks scripts training

lint: system-packages venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

bench: setup
	$(VENV_PY) benchmarks/run_all.py
