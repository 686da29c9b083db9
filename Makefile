# DeepMammo: every stage and experiment of the paper is a target here (`make help`).
#   make demo        synthetic DDSM archive -> cases -> LMDBs -> LevyNet (3 seeds) + GoogLeNet -> report
#   make test        install if needed, build real Caffe once, lint, run the tests
#   make levynet     one experiment: any configs/<name>.yaml is a target `make <name>`
#   make paper       every experiment with paper rows, then tables, figures and the report
#                    (on an archive you name: make paper CASES=data/cases/ddsm/cases.csv)
#   make classify    a trained run on new masses: make classify RUN=runs/levynet/latest INPUT=...
# Variables: ENGINE=torch|caffe DEVICE=cpu|cuda PRECISION=fp32|tf32|bf16 CASES=path/cases.csv
#            DATASETS=data/datasets
#            WEIGHTS_DIR=weights FROM_SCRATCH=1 SPLIT_MODE=paper|code AUG=code|paper|none
#            SEED=0 (the data seed: synthesis, split, augmentation)
#            SEEDS=1,2,3 (one run per training seed) DATA_SEEDS=0,1 (and per data seed)
#            OVERRIDES="epochs=2 seed=3" (config keys)
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
PRECISION ?= fp32# tf32 (CUDA) or bf16: faster, opt-in, marked in every table
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
AUG ?=# empty: each config's own; code: the authors' (original + 4 rotations, grey 132, centre 0.6)
GREY ?= full-range# 16 -> 8 bit mapping: full-range, window[:LO-HI] or od (DDSM optical density)

.SECONDARY:
.PHONY: help install caffe browser graphviz lint test bench demo paper table1 table2 table3 figures report \
        data-small-noaug data-large-noaug data-large-aug clean-venv evaluate

help:
	@grep -E '^[a-z0-9 -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 24
	@echo "Experiments (configs/<name>.yaml; make <name> [SEEDS=1,2,3] [OVERRIDES=\"key=value ...\"]):"
	@for e in $(EXPERIMENTS); do \
	  printf '  %-22s %s\n' "$$e" "$$(sed -n 's/^description:[[:space:]]*//p' configs/$$e.yaml)"; done

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

lint: $(STAMP) ## ruff: pyflakes, bugbear and import order (ruff.toml)
	$(PY) -m ruff check deepmammo tests scripts setup.py

graphviz: ## Debian's graphviz (the `dot` binary that caffe.draw and `deepmammo draw` call)
	@command -v dot >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends graphviz >/dev/null; }

test: $(STAMP) caffe browser graphviz lint ## run the test suite (real Caffe and Chromium are set up first)
	$(PY) -m pytest -q tests

# The tests marked neither caffe, subprocess nor browser (tests/conftest.py), the Caffe build
# hidden so that one needing it without the mark fails here too: no Caffe build, no apt.
.PHONY: test-fast
test-fast: $(STAMP) ## the tests that need no real Caffe, subprocess or browser: the edit-run loop
	DEEPMAMMO_CAFFE=hidden-by-make-test-fast $(PY) -m pytest -q \
	  -m "not caffe and not subprocess and not browser" tests

bench: $(STAMP) caffe ## benchmarks: data, sources, engine, training and classify figures (both engines)
	$(PY) -m deepmammo.sources.benchmark
	$(PY) scripts/bench_data.py
	$(PY) scripts/bench_engine.py
	$(PY) scripts/bench_train.py
	$(PY) scripts/bench_rng.py
	$(PY) scripts/bench_classify.py

clean-venv:
	rm -rf $(VENV)

# ---------------------------------------------------------------- data

$(SYNTH_DIR)/.done: | $(STAMP)
	$(DM) synth $(SYNTH_KIND) --out $(SYNTH_DIR) --patients $(SYNTH_PATIENTS) --seed $(SEED)
	@touch $@

data/cases/synth-$(SYNTH_KIND)-$(SYNTH_PATIENTS)-s$(SEED)/cases.csv: $(SYNTH_DIR)/.done
	$(DM) ingest $(SYNTH_KIND) $(SYNTH_DIR) --out $@

# A dataset variant is named for its crops' padding and its augmentation, e.g.
# proportional2-paper: crops padded proportional:2, training set augmented as the paper says.
# $(call pad_spec,proportional2) -> proportional:2
pad_spec = $(shell echo '$(1)' | sed -E 's/^([a-z]+)([0-9])/\1:\2/')
variant_augment = $(lastword $(subst -, ,$(1)))
variant_padding = $(patsubst %-$(call variant_augment,$(1)),%,$(1))

$(CROPS)/%/crops.csv: $(CASES) | $(STAMP)
	$(DM) crops $(CASES) --padding $(call pad_spec,$*) --out $(CROPS)/$*

# Splits live beside, not inside, the crops folders (a crops rebuild replaces its folder).
# The same seed gives every padding the same patients in each split.
$(DATASETS)/splits-%.csv: $(CROPS)/%/crops.csv
	$(DM) split $(CROPS)/$* --seed $(SEED) --mode $(SPLIT_MODE) --out $@

.SECONDEXPANSION:
$(DATASETS)/%/build.json: $$(DATASETS)/splits-$$(call variant_padding,$$*).csv
	$(DM) lmdb $(CROPS)/$(call variant_padding,$*) --splits $< \
	  --augment $(call variant_augment,$*) --seed $(SEED) --grey $(GREY) --out $(DATASETS)/$*

data-small-noaug: $(DATASETS)/fixed50-none/build.json ## fixed 50 px padding, no augmentation
data-large-noaug: $(DATASETS)/proportional2-none/build.json ## proportional (2x) padding, no augmentation
data-large-aug: $(DATASETS)/proportional2-$(or $(AUG),paper)/build.json ## proportional padding, the paper's 5x5 augmentation

# ---------------------------------------------------------------- experiments

# Every configs/<name>.yaml but defaults.yaml and weights.yaml is an experiment, and a target:
# it builds the dataset variant the config names (padding:, augment:) if missing, trains into
# runs/<name>/<timestamp>/ and evaluates every snapshot on validation and test.
EXPERIMENTS := $(sort $(filter-out defaults weights,$(basename $(notdir $(wildcard configs/*.yaml)))))
PAPER_EXPERIMENTS := $(sort $(filter-out defaults,$(basename $(notdir \
                       $(shell grep -l '^paper:' configs/*.yaml)))))
# Each experiment's dataset variant and augmentation (AUG= replaces the augmentation of the
# experiments that augment) are the package's answer: `deepmammo experiment-info --make` writes
# variant.<name> and augment.<name> into build/make/, which make includes for the experiments
# it is asked to make (installing the package first when there is none).
EXPERIMENT_INFO := build/make/aug-$(or $(AUG),config)
EXPERIMENT_GOALS := $(filter $(EXPERIMENTS),$(MAKECMDGOALS)) \
                    $(if $(filter paper,$(MAKECMDGOALS)),$(PAPER_EXPERIMENTS))

# The paper's experiments train on an archive the user names (CASES=, or DATASETS=): without
# one they stop here, before any data is built, instead of filling the paper's tables from the
# demo's synthetic archive. SYNTHETIC=1 trains them on it anyway (their tables say so).
PAPER_GOALS := paper $(PAPER_EXPERIMENTS)
empty :=
indent := $(empty)  $(empty)
ifneq ($(filter $(PAPER_GOALS),$(MAKECMDGOALS)),)
ifeq ($(origin CASES)$(origin DATASETS)$(SYNTHETIC),filefile)
$(info make $(firstword $(filter $(PAPER_GOALS),$(MAKECMDGOALS))): no archive named; the paper's tables come from a mammography archive, not the demo's synthetic one.)
$(info Reproducing the paper (README.md), first step: get DDSM or CBIS-DDSM and make its cases table:)
$(info $(indent)deepmammo ingest ddsm PATH/TO/DDSM --out data/cases/ddsm/cases.csv        # USF DDSM: .ics/.LJPEG/.OVERLAY)
$(info $(indent)deepmammo ingest cbis PATH/TO/CBIS-DDSM --out data/cases/cbis/cases.csv   # CBIS-DDSM: DICOM + CSV)
$(info then: make paper CASES=data/cases/ddsm/cases.csv   (SYNTHETIC=1: the synthetic archive anyway))
$(error no archive named (CASES=path/to/cases.csv))
endif
endif

include $(patsubst %,$(EXPERIMENT_INFO)/%.mk,$(sort $(EXPERIMENT_GOALS)))
ifeq ($(MAKE_RESTARTS),)
# (asked once per make: a config dated in the future would be asked again and again)
$(EXPERIMENT_INFO)/%.mk: configs/%.yaml configs/defaults.yaml | $(PY)
	@mkdir -p $(@D)
	@$(DM) experiment-info $< $(if $(AUG),--aug $(AUG)) --field variant --field augment --make \
	  > $@.tmp && mv $@.tmp $@ || { rm -f $@.tmp; exit 1; }
DRY_RUN := $(findstring n,$(firstword -$(MAKEFLAGS)))
$(PY): # (a dry run installs nothing: it stops here)
	$(if $(DRY_RUN),@echo "make -n: the experiments' dataset variants come from the package; \
	  make install first" >&2; exit 2,$(MAKE) --no-print-directory $(STAMP))
endif

.PHONY: $(EXPERIMENTS)
ifeq ($(DATA_SEEDS),)
$(EXPERIMENTS): %: $$(DATASETS)/$$(variant.$$*)/build.json | $(STAMP)
	$(DM) experiment --engine $(ENGINE) --device $(DEVICE) --evaluate configs/$@.yaml \
	  dataset=$(DATASETS)/$(variant.$@) augment=$(augment.$@) \
	  data_seed=$(SEED) precision=$(PRECISION) $(if $(SEEDS),seeds=$(SEEDS)) $(OVERRIDES)
else
# DATA_SEEDS=0,1,2: the experiment once per data seed (its own split and augmentation; with the
# synthetic default CASES, its own archive), each with SEEDS, all in one repeat group.
REPEAT_STAMP := $(shell date +%Y%m%d-%H%M%S)
$(EXPERIMENTS): %: | $(STAMP)
	for s in $(subst $(comma), ,$(DATA_SEEDS)); do \
	  $(MAKE) --no-print-directory $@ SEED=$$s DATA_SEEDS= \
	    OVERRIDES='$(OVERRIDES) repeat_group=$@/$(REPEAT_STAMP)' || exit $$?; done
endif
comma := ,

evaluate: ## evaluate every snapshot of RUN (a run folder) on DATA's val and test LMDBs
	$(DM) eval-run $(RUN) $(if $(DATA),--dataset $(DATA)) --engine $(ENGINE) \
	  --precision $(PRECISION) $(if $(filter cuda,$(DEVICE)),--gpu 0)

# ---------------------------------------------------------------- a trained run, put to use
.PHONY: classify export model-card
OUT ?=
# (a usage error installs nothing: the venv is a prerequisite only once RUN is named)
classify: $(if $(and $(RUN),$(INPUT)),$(STAMP)) ## classify INPUT (a mammogram + CLASSIFY_ARGS="--mask M", a cases CSV, a crops folder) with RUN
	@test -n "$(RUN)" -a -n "$(INPUT)" || { echo "usage: make classify RUN=runs/<experiment>/latest INPUT=<mammogram, cases CSV or crops folder> [CLASSIFY_ARGS=\"--mask M.png\"] [OUT=results.csv]"; exit 2; }
	$(DM) classify $(RUN) $(INPUT) --engine $(ENGINE) $(if $(filter cuda,$(DEVICE)),--gpu 0) \
	  $(if $(OUT),--out $(OUT)) $(CLASSIFY_ARGS)

export: $(if $(RUN),$(STAMP)) ## RUN's chosen snapshot to ONNX and TorchScript (checked on its test records) + model card
	@test -n "$(RUN)" || { echo "usage: make export RUN=runs/<experiment>/latest [OUT=stem]"; exit 2; }
	$(DM) export $(RUN) $(if $(OUT),--out $(OUT))

model-card: $(if $(RUN),$(STAMP)) ## RUN/model-card.md: data, training, metrics with intervals, calibration, limits
	@test -n "$(RUN)" || { echo "usage: make model-card RUN=runs/<experiment>/latest"; exit 2; }
	$(DM) model-card $(RUN)

# ---------------------------------------------------------------- tables, figures, report

REPORT ?= paper
table1 table2 table3: $(STAMP) ## the paper's tables beside ours (Markdown + CSV in reports/tables)
	$(DM) tables --runs runs --table $@ --out reports/tables

figures: $(STAMP) ## Figures 1-6 and ROC curves (PNG + PDF in reports/figures)
	$(DM) figures --runs runs --out reports/figures

report: $(STAMP) ## reports/$(REPORT)/index.html: tables, figures, provenance, beyond the paper
	$(DM) report --runs runs --name $(REPORT) --ensembles --fusion --tsne

paper: $(PAPER_EXPERIMENTS) ## every experiment with paper rows, then the tables, figures and report
	$(MAKE) --no-print-directory table1 table2 table3 figures report

# ---------------------------------------------------------------- the demo

DEMO_SEEDS ?= 1,2,3
demo: $(STAMP) ## the whole path on a small synthetic archive, in minutes on a CPU
	$(MAKE) --no-print-directory demo-levynet SEEDS=$(DEMO_SEEDS)
	$(MAKE) --no-print-directory demo-googlenet
	$(DM) report --runs runs --name demo --alias demo-levynet=levynet \
	  --alias demo-googlenet=googlenet-deeper --compare googlenet-deeper:levynet

# ---------------- beyond the paper (repeats, comparisons, external validation)
.PHONY: compare external
PAIRS ?=# extra comparisons for `make compare`, e.g. PAIRS="demo-googlenet:demo-levynet"
compare: $(STAMP) ## the paper's pairwise claims tested (DeLong, McNemar, patient bootstrap) -> reports/compare
	$(DM) compare --runs runs --out reports/compare $(foreach p,$(PAIRS),--pair $(p))

# External validation: build a dataset from another archive's cases table with the run's grey
# mapping (e.g. make data-large-noaug CASES=data/cases/mias/cases.csv GREY=full-range), then
#   make external RUN=runs/levynet/latest EXTERNAL=data/datasets/mias/seed0/proportional2-none
EXTERNAL_SPLITS ?= test
EXTERNAL_NAME ?= $(subst /,-,$(patsubst data/datasets/%,%,$(patsubst %/,%,$(EXTERNAL))))
external: $(STAMP) ## score RUN on EXTERNAL (another archive's dataset) with RUN's own mean and grey mapping
	@test -n "$(RUN)" -a -n "$(EXTERNAL)" || \
	  { echo "usage: make external RUN=runs/<experiment>/latest EXTERNAL=<dataset folder>"; exit 2; }
	$(DM) eval-run $(RUN) --dataset $(EXTERNAL) --external $(EXTERNAL_NAME) \
	  --splits $(EXTERNAL_SPLITS) --engine $(ENGINE) $(if $(filter cuda,$(DEVICE)),--gpu 0)

# ---------------------------------------------------------------- paper-scale timing
# Each experiment of `make paper` timed for a slice on a synthetic dataset of the paper's size
# (written once under data/bench/), projected to the full run: img/s, GPU memory, minutes.
# DEVICE=cuda for the GPU; PRECISION=fp32|tf32|bf16; BENCH_PAPER_ARGS="--iters 100" etc.
# (BENCH_PAPER_ARGS=--baseline: the reference, a per-blob update and each loss read back at once)
bench-paper: $(STAMP) ## time every paper experiment for a slice, project the full paper's minutes
	$(PY) scripts/bench_paper.py --device $(DEVICE) --precision $(PRECISION) \
	  --out reports/bench-paper-$(DEVICE)-$(PRECISION)$(if $(findstring --baseline,$(BENCH_PAPER_ARGS)),-baseline).json \
	  $(BENCH_PAPER_ARGS)
.PHONY: bench-paper

# ---------------- fuzzing
FUZZ_MUTANTS ?= 5000
FUZZ_SEED ?= 0
.PHONY: fuzz
fuzz: $(STAMP) ## long fuzz campaign: every reader, FUZZ_MUTANTS mutants each, outcomes per reader
	$(PY) scripts/fuzz_campaign.py --mutants $(FUZZ_MUTANTS) --seed $(FUZZ_SEED)
	DEEPMAMMO_FUZZ_EXAMPLES=2000 $(PY) -m pytest -q tests/test_fuzz_readers.py
