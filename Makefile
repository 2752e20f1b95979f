# Two commands on a fresh clone: `make run` (venv, install, demo job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# Where torch comes from. Empty: the configured package index (on these machines it serves a CPU build).
# On a plain PyPI Linux machine, torch==2.13.0 from PyPI is the CUDA build (multi-GB); for a CPU-only
# machine use: make run TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
# Reinstall when any shipped file changes: the strict editable install links files, so a new module
# only appears after a reinstall.
SOURCES := pyproject.toml $(shell find orchestrator launchers conf -type f \( -name '*.py' -o -name '*.yaml' \) 2>/dev/null)

.PHONY: install install-dev run test test-fast lint mlflow docs clean

# torch first, pinned: with 2.13.0 in place, the package's `torch>=2.4` installs nothing more, so a
# CPU machine never pulls the multi-GB CUDA wheels (a GPU machine gets the CUDA build of 2.13.0).
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade "pip>=23" "setuptools>=68" wheel
	$(BIN)/pip install torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	touch $@

# editable_mode=strict: Hydra only discovers the launcher plugin from a strict editable install.
$(VENV)/.installed: $(VENV)/.torch $(SOURCES)
	$(BIN)/pip install --no-build-isolation -e . --config-settings editable_mode=strict
	touch $@

# the dev extra (test tools), the sweep extra (the Optuna sweeper) and the export extra (ONNX export and
# ONNX Runtime), which the tests use, on top; it reinstalls the package too, so it tracks the sources itself
$(VENV)/.installed-dev: $(VENV)/.torch $(SOURCES)
	$(BIN)/pip install --no-build-isolation -e ".[dev,sweep,export]" --config-settings editable_mode=strict
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/orchestrator train

# two pytest workers (pytest-xdist), a module's tests on one worker (they share its fixtures): most tests
# wait on processes (Ray, servers, restarts), so two sessions side by side use the 2 cores better (three
# were no faster here: 24 min of pytest either way)
test: install-dev lint
	$(BIN)/python -m pytest -n 2 --dist loadfile

# the in-process tier for quick iterations: no Ray cluster, no server, no CLI process (tests marked slow);
# two workers, as it grew past 3 minutes on one
test-fast: install-dev
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not gpu and not slow"

# the checks that keep the code as it is: ruff's lint and format (configured in pyproject.toml) and mypy
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# a local MLflow tracking server on http://127.0.0.1:5000 until Ctrl-C, over the store that `make run` and
# `orchestrator train` write by default (./mlflow.db, artifacts in ./mlartifacts), so it shows those runs;
# jobs can also log to it with tracking.uri=http://127.0.0.1:5000. More: make mlflow MLFLOW_ARGS="--port 5001"
mlflow: install
	$(BIN)/orchestrator mlflow-server --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--artifacts-destination $(CURDIR)/mlartifacts $(MLFLOW_ARGS)

# the manual in docs/ as a site in site/; strict: a broken link or anchor fails the build
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build *.egg-info outputs multirun site
