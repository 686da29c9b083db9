# DeepMammo: every stage and experiment of the paper is a target here (`make help`).
#   make demo        synthetic DDSM archive -> cases -> LMDBs -> LevyNet + GoogLeNet -> report
#   make test        install if needed, build real Caffe once, run the tests
#   make levynet     one experiment (also alexnet-noaug-small, ..., googlenet-deeper)
#   make paper       every experiment, then tables, figures and the report
# Variables: ENGINE=torch|caffe DEVICE=cpu|cuda CASES=path/cases.csv DATASETS=data/datasets
#            WEIGHTS_DIR=weights FROM_SCRATCH=1 SPLIT_MODE=paper|code AUG=paper|code|none
#            SEED=0 (the data seed: synthesis, split, augmentation; the training seed is the
#            config's `seed`, override with OVERRIDES="seed=2")
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DM := $(PY) -m deepmammo
# The CPU build of torch 2.13.0; setup.py's range admits it, so pip installs nothing newer.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

ENGINE ?= torch
DEVICE ?= cpu
SEED ?= 0
WEIGHTS_DIR ?= weights
FROM_SCRATCH ?= 0
export WEIGHTS_DIR FROM_SCRATCH

# The synthetic archive of the demo, and the cases table every dataset is built from.
SYNTH_KIND ?= ddsm
SYNTH_PATIENTS ?= 60
SYNTH_DIR := data/synth/$(SYNTH_KIND)-$(SYNTH_PATIENTS)-s$(SEED)
CASES ?= data/cases/synth-$(SYNTH_KIND)-$(SYNTH_PATIENTS)-s$(SEED)/cases.csv
# Datasets are kept apart per cases table (named by the folder that holds cases.csv) and per
# data seed (the split and the augmentation depend on it).
DATASETS ?= data/datasets/$(notdir $(patsubst %/,%,$(dir $(CASES))))/seed$(SEED)
CROPS := $(DATASETS)/crops
SPLIT_MODE ?= paper# code: the authors' file-level first-N split (patients may leak)
AUG ?= paper# code: the authors' augmentation (original + 4 rotations, grey 132, centre 0.6)
GREY ?= full-range# 16 -> 8 bit mapping: full-range, window[:LO-HI] or od (DDSM optical density)

.SECONDARY:
.PHONY: help install caffe browser test bench demo paper table1 table2 table3 figures report \
        data-small-noaug data-large-noaug data-large-aug clean-venv \
        levynet levynet-code alexnet-noaug-small alexnet-noaug-large alexnet-aug-large \
        googlenet-shallow googlenet-deeper

help:
	@grep -E '^[a-z0-9 -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 24

# ---------------------------------------------------------------- set-up

install: $(STAMP) ## create .venv and install deepmammo into it (fast when nothing changed)

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import torch' 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[test,caffe]'
	@touch $@

caffe: $(STAMP) ## build real BVLC Caffe (CPU, pycaffe) into ~/.cache/deepmammo, reused when present
	PYTHON=$(PY) bash scripts/build_caffe.sh

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser: ## headless Chromium for the report's browser test (Debian's package)
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test: $(STAMP) caffe browser ## run the test suite (real Caffe and Chromium are set up first)
	$(PY) -m pytest -q tests

bench: $(STAMP) caffe ## benchmarks: data, sources, engine and training figures (both engines)
	$(PY) -m deepmammo.sources.benchmark
	$(PY) scripts/bench_data.py
	$(PY) scripts/bench_engine.py
	$(PY) scripts/bench_train.py

clean-venv:
	rm -rf $(VENV)

# ---------------------------------------------------------------- data

$(SYNTH_DIR)/.done: | $(STAMP)
	$(DM) synth $(SYNTH_KIND) --out $(SYNTH_DIR) --patients $(SYNTH_PATIENTS) --seed $(SEED)
	@touch $@

data/cases/synth-$(SYNTH_KIND)-$(SYNTH_PATIENTS)-s$(SEED)/cases.csv: $(SYNTH_DIR)/.done
	$(DM) ingest $(SYNTH_KIND) $(SYNTH_DIR) --out $@

$(CROPS)/%/crops.csv: $(CASES)
	$(DM) crops $(CASES) --padding $(if $(filter small,$*),fixed:50,proportional:2) --out $(CROPS)/$*

# Splits live beside, not inside, the crops folders (a crops rebuild replaces its folder).
# The same seed gives both contexts the same patients in each split.
$(DATASETS)/splits-%.csv: $(CROPS)/%/crops.csv
	$(DM) split $(CROPS)/$* --seed $(SEED) --mode $(SPLIT_MODE) --out $@

# $(call dataset,variant,context,augment)
define dataset
$(DATASETS)/$(1)/build.json: $(DATASETS)/splits-$(2).csv
	$(DM) lmdb $(CROPS)/$(2) --splits $$< --augment $(3) --seed $(SEED) --grey $(GREY) --out $(DATASETS)/$(1)
endef
$(eval $(call dataset,small-noaug,small,none))
$(eval $(call dataset,large-noaug,large,none))
$(eval $(call dataset,large-aug,large,$(AUG)))

data-small-noaug: $(DATASETS)/small-noaug/build.json ## fixed 50 px padding, no augmentation
data-large-noaug: $(DATASETS)/large-noaug/build.json ## proportional (2x) padding, no augmentation
data-large-aug: $(DATASETS)/large-aug/build.json ## proportional padding, the paper's 5x5 augmentation

# ---------------------------------------------------------------- experiments

# $(call experiment,name,dataset variant): train into runs/<name>/<timestamp>/, then evaluate
# every snapshot on validation and (with the validation-chosen threshold) on test.
define experiment
$(1): $(DATASETS)/$(2)/build.json
	$(DM) experiment configs/$(1).yaml dataset=$(DATASETS)/$(2) \
	  --engine $(ENGINE) --device $(DEVICE) $(OVERRIDES)
	$(MAKE) --no-print-directory evaluate RUN=runs/$(1)/latest DATA=$(DATASETS)/$(2)
endef
$(eval $(call experiment,levynet,large-aug))
$(eval $(call experiment,levynet-code,large-aug))
$(eval $(call experiment,alexnet-noaug-small,small-noaug))
$(eval $(call experiment,alexnet-noaug-large,large-noaug))
$(eval $(call experiment,alexnet-aug-large,large-aug))
$(eval $(call experiment,googlenet-shallow,large-aug))
$(eval $(call experiment,googlenet-deeper,large-aug))
levynet: ## LevyNet from scratch (Tables 2, 3)
alexnet-noaug-small: ## AlexNet, fixed padding, no augmentation (Table 1)
alexnet-noaug-large: ## AlexNet, proportional padding, no augmentation (Table 1, Figure 3)
alexnet-aug-large: ## AlexNet, proportional padding, augmented (Tables 2, 3, Figures 2, 3)
googlenet-shallow: ## GoogLeNet, Shallow training (Tables 2, 3, Figure 4)
googlenet-deeper: ## GoogLeNet, Deeper training (Tables 2, 3, Figures 2, 4)

evaluate: ## evaluate every snapshot of RUN (a run folder) on DATA's val and test LMDBs
	$(DM) eval --model $(RUN)/deploy.prototxt --snapshots '$(RUN)/*_iter_*.caffemodel' \
	  --lmdb $(DATA)/val_lmdb --train-val $(RUN)/train_val.prototxt \
	  --out $(RUN)/eval/val.json --engine $(ENGINE) $(if $(filter cuda,$(DEVICE)),--gpu 0)
	$(DM) eval --model $(RUN)/deploy.prototxt --snapshots '$(RUN)/*_iter_*.caffemodel' \
	  --lmdb $(DATA)/test_lmdb --train-val $(RUN)/train_val.prototxt \
	  --out $(RUN)/eval/test.json --val-results $(RUN)/eval/val.json --threshold val \
	  --engine $(ENGINE) $(if $(filter cuda,$(DEVICE)),--gpu 0)

# ---------------------------------------------------------------- tables, figures, report

REPORT ?= paper
table1 table2 table3: $(STAMP) ## the paper's tables beside ours (Markdown + CSV in reports/tables)
	$(DM) tables --runs runs --table $@ --out reports/tables

figures: $(STAMP) ## Figures 1-6 and ROC curves (PNG + PDF in reports/figures)
	$(DM) figures --runs runs --out reports/figures

report: $(STAMP) ## reports/$(REPORT)/index.html: tables, figures, provenance, beyond the paper
	$(DM) report --runs runs --name $(REPORT) --ensembles --fusion --tsne

paper: levynet alexnet-noaug-small alexnet-noaug-large alexnet-aug-large googlenet-shallow googlenet-deeper ## every experiment, then the tables, figures and report
	$(MAKE) --no-print-directory table1 table2 table3 figures report

# ---------------------------------------------------------------- the demo

demo: $(STAMP) ## the whole path on a small synthetic archive, in minutes on a CPU
	$(MAKE) --no-print-directory data-large-aug
	$(DM) experiment configs/demo-levynet.yaml dataset=$(DATASETS)/large-aug --engine $(ENGINE) --device $(DEVICE)
	$(MAKE) --no-print-directory evaluate RUN=runs/demo-levynet/latest DATA=$(DATASETS)/large-aug
	$(DM) experiment configs/demo-googlenet.yaml dataset=$(DATASETS)/large-aug --engine $(ENGINE) --device $(DEVICE)
	$(MAKE) --no-print-directory evaluate RUN=runs/demo-googlenet/latest DATA=$(DATASETS)/large-aug
	$(DM) report --runs runs --name demo --alias demo-levynet=levynet --alias demo-googlenet=googlenet-deeper

# ---------------- fuzzing (issue 12)
FUZZ_MUTANTS ?= 5000
FUZZ_SEED ?= 0
.PHONY: fuzz
fuzz: $(STAMP) ## long fuzz campaign: every reader, FUZZ_MUTANTS mutants each, outcomes per reader
	$(PY) scripts/fuzz_campaign.py --mutants $(FUZZ_MUTANTS) --seed $(FUZZ_SEED)
	DEEPMAMMO_FUZZ_EXAMPLES=2000 $(PY) -m pytest -q tests/test_fuzz_readers.py
