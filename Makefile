# mslora-mm: `make demo` trains + evaluates the embedded demo, `make test` runs the tests.
# Both install everything into $(VENV) first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
# CI (CI=true) also runs the end-to-end tests marked `slow`.
PYTEST_MARKERS ?= $(if $(CI),,-m "not slow")

.PHONY: setup test test-all demo
setup: $(VENV)/.mslora-installed

$(VENV)/.mslora-installed: setup.py requirements/build.txt requirements/runtime.txt requirements/tests.txt requirements/peft.txt tools/setup_env.sh
	bash tools/setup_env.sh $(VENV)
	touch $@

test: setup
	$(PY) -m pytest tests $(PYTEST_MARKERS) -q -ra --durations=25

test-all: setup
	$(PY) -m pytest tests -q -ra

demo: setup
	$(PY) tools/demo.py
