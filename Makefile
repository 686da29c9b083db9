# DeepMammo: every stage and experiment is a target here.
#   make demo      synthetic archive -> LMDBs -> training -> evaluation -> report
#   make test      install if needed, then the test suite (builds real Caffe on first use)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch 2.13.0; setup.py's range admits it, so pip installs nothing newer.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test caffe clean-venv help

help:
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

install: $(STAMP) ## create .venv and install deepmammo into it (fast when nothing changed)

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import torch' 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[test,caffe]'
	@touch $@

caffe: $(STAMP) ## build real BVLC Caffe (CPU, pycaffe) into ~/.cache/deepmammo, reused when present
	PYTHON=$(PY) bash scripts/build_caffe.sh

test: $(STAMP) caffe ## run the test suite (real Caffe is built first: cross-check tests need it)
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
