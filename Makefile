# fnrun_nb developer commands.  `make demo` and `make test` work on a fresh machine
# with only Python 3.10+ and make: each creates .venv when missing and reinstalls
# when pyproject.toml is newer than its last install.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# protoc version used to generate fnrun_nb/_proto; tests/test_proto_generated.py
# regenerates with the same pin and diffs.
GRPC_TOOLS := grpcio-tools==1.85.1

.PHONY: demo test bench bench-quick proto soak lab notebooks binder-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[test]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/python notebooks/demo.py

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest

# The whole suite (as `make test`, notebooks included) on a busy machine: STRESS_HOGS
# CPU-bound processes run beside pytest, started first and stopped however it ends
# (failure, Ctrl-C, SIGTERM); the exit status is pytest's.  STRESS_ARGS replaces the
# pytest arguments, e.g. make test-stress STRESS_ARGS='tests/test_faults.py -x'.
STRESS_HOGS ?= 2
STRESS_ARGS ?=
.PHONY: test-stress
test-stress: $(VENV)/.test-installed
	$(BIN)/python tests/stress_load.py --hogs $(STRESS_HOGS) -- $(BIN)/python -m pytest $(STRESS_ARGS)

bench: $(VENV)/.test-installed
	$(BIN)/python -m benchmarks

bench-quick: $(VENV)/.test-installed
	$(BIN)/python -m benchmarks --quick

# The full fault-injection soak (20,000 calls, 2% faults); `make test` runs 2,000.
soak: $(VENV)/.test-installed
	$(BIN)/python tests/soak.py --calls 20000

proto: $(VENV)/.test-installed
	$(PIP) install --quiet '$(GRPC_TOOLS)'
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=fnrun_nb/_proto \
		--pyi_out=fnrun_nb/_proto proto/fnrun.proto

# Re-execute every notebook in place after an intended change of its output.
notebooks: $(VENV)/.test-installed
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=300 notebooks/*.ipynb

# JupyterLab on the notebooks.
lab: $(VENV)/.test-installed
	cd notebooks && ../$(BIN)/jupyter lab

# The floors of pyproject.toml, tested: a second environment with the oldest version
# each dependency allows (pinned in OLDEST_PINS, which tests/test_floors.py holds equal
# to the floors), rebuilt from scratch when either file changes, runs the tests of
# what those dependencies serve: batches, analysis, storage, plots, protocol, CLI,
# magics, widgets and Dask.  The core's process tests depend on none of them, the
# notebooks' nbval outputs are the newest versions' reprs, and the browser test is
# about the page; `make test` runs those.  OLDEST_PYTHON must be 3.10 or 3.11 (the
# oldest pins have no wheels for newer Pythons).
OLDEST_VENV   := .venv-oldest
OLDEST_PINS   := tests/oldest-constraints.txt
OLDEST_PYTHON ?= $(PYTHON)
OLDEST_TESTS  := tests/test_floors.py tests/test_batch.py tests/test_batch_failures.py \
	tests/test_analysis.py tests/test_drift.py tests/test_storage.py tests/test_plot.py \
	tests/test_comparison.py tests/test_versus.py tests/test_display.py \
	tests/test_protocol.py tests/test_handler_sdk.py tests/test_golden_host.py \
	tests/test_cli.py tests/test_magic_args.py tests/test_magics_shell.py \
	tests/test_magics_kernel.py tests/test_widgets.py tests/test_monitor_kernel.py \
	tests/test_dask.py tests/test_analysis_dask.py tests/test_resources.py

.PHONY: test-oldest clean-oldest

$(OLDEST_VENV)/.installed: pyproject.toml $(OLDEST_PINS)
	@$(OLDEST_PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(None if v in ((3, 10), (3, 11)) \
		else "test-oldest: the oldest pins have no wheels for Python %d.%d: set OLDEST_PYTHON=python3.11" % v)'
	rm -rf $(OLDEST_VENV)
	$(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -c $(OLDEST_PINS) -e '.[test]'
	touch $@

test-oldest: $(OLDEST_VENV)/.installed
	FNRUN_NB_OLDEST=1 $(OLDEST_VENV)/bin/python -m pytest $(OLDEST_TESTS)

clean: clean-oldest
clean-oldest:
	rm -rf $(OLDEST_VENV)

# Simulate the Binder build: a fresh environment from binder/ only, then nbval.  The
# environment is made with the Python that binder/runtime.txt names (python-X.Y), as
# repo2docker would; BINDER_PYTHON overrides the interpreter, whose version must match.
BINDER_VENV := .binder-venv
BINDER_PYTHON_VERSION := $(shell sed -n 's/^python-\([0-9][0-9]*\.[0-9][0-9]*\)$$/\1/p' binder/runtime.txt)
BINDER_PYTHON ?= python$(BINDER_PYTHON_VERSION)
binder-check:
	@test -n "$(BINDER_PYTHON_VERSION)" || { \
		echo "binder-check: binder/runtime.txt must read python-X.Y (e.g. python-3.11)" >&2; exit 1; }
	@command -v $(BINDER_PYTHON) >/dev/null || { \
		echo "binder-check: binder/runtime.txt asks for Python $(BINDER_PYTHON_VERSION)," \
			"but $(BINDER_PYTHON) is not on PATH (install it, or set BINDER_PYTHON)" >&2; exit 1; }
	@$(BINDER_PYTHON) -c 'import sys; have = "%d.%d" % sys.version_info[:2]; \
		sys.exit(None if have == "$(BINDER_PYTHON_VERSION)" else \
		"binder-check: binder/runtime.txt asks for Python $(BINDER_PYTHON_VERSION), $(BINDER_PYTHON) is " + have)'
	rm -rf $(BINDER_VENV)
	$(BINDER_PYTHON) -m venv $(BINDER_VENV)
	$(BINDER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BINDER_VENV)/bin/python -m pip install --quiet -r binder/requirements.txt
	PATH="$(CURDIR)/$(BINDER_VENV)/bin:$$PATH" bash binder/postBuild
	PATH="$(CURDIR)/$(BINDER_VENV)/bin:$$PATH" $(BINDER_VENV)/bin/python -m pytest -p no:cacheprovider \
		--nbval --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks

clean:
	rm -rf $(VENV) $(BINDER_VENV) .pytest_cache build *.egg-info
