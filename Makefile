# mslora-mm: `make demo` trains + evaluates the embedded demo, `make test` runs the tests.
# Both install everything into $(VENV) first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
# CI (CI=true, 1 or yes; CI=false is not CI) also runs the end-to-end tests
# marked `slow`, and a missing data folder or tool fails instead of skipping
IS_CI := $(filter true 1 yes TRUE True YES,$(CI))
PYTEST_MARKERS ?= $(if $(IS_CI),,-m "not slow")
# test files run in parallel, one file per worker at a time (most tests start
# tool processes) in collection order (the longest first: tests/conftest.py;
# xdist would reorder them by test count); as many workers as cores, at most 4
# (tools/cores.sh: the affinity's CPUs, capped by a cgroup quota)
PYTEST_WORKERS ?= -n $(shell n=$$(sh tools/cores.sh); echo $$(( n < 4 ? n : 4 ))) --dist loadfile --no-loadscope-reorder

.PHONY: setup test test-all demo
setup: $(VENV)/.mslora-installed

$(VENV)/.mslora-installed: setup.py requirements.txt $(wildcard requirements/*.txt) tools/setup_env.sh
	bash tools/setup_env.sh $(VENV)
	touch $@

test: setup
	$(PY) -m pytest tests $(PYTEST_MARKERS) $(PYTEST_WORKERS) -q -ra --durations=25

test-all: setup
	$(PY) -m pytest tests $(PYTEST_WORKERS) -q -ra

demo: setup
	$(PY) tools/demo.py
