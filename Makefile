# The README's two commands: `make demo` (set up + main job) and `make test` (set up + tests).
# Each creates the local virtual environment .venv on first use (only python3 >= 3.11 needed).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.l0jax-installed

.PHONY: demo test test-all fuzz setup bench-env clean docs lint typecheck

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[test,demo]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/l0jax demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -m ""

# The property tests (tests/properties) with hypothesis's long profile: many more, freshly drawn examples
# per test (the default profile, part of `make test`, draws a few fixed ones). Failures are kept in
# .hypothesis/ and replayed first on the next run.
fuzz: $(STAMP)
	L0JAX_HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/python -m pytest tests/properties

# The documentation site (Sphinx; every page and notebook is executed) into docs/_build/html, warnings
# as errors. `make docs SPHINXOPTS="-D nb_execution_mode=off"` skips the execution (a quick look at the prose).
DOCS_STAMP := $(VENV)/.l0jax-docs-installed
LINT_STAMP := $(VENV)/.l0jax-lint-installed
SPHINXOPTS ?=

$(DOCS_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install -q -e ".[test,demo,docs]"
	touch $@

$(LINT_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install -q -e ".[test,demo,lint]"
	touch $@

docs: $(DOCS_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/sphinx-build -W --keep-going -b html $(SPHINXOPTS) docs docs/_build/html

lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(LINT_STAMP)
	$(VENV)/bin/pyright

# The PyTorch reference of the benchmarks (l0-python on the CPU torch 2.13.0 wheel) in .venv-l0-python.
bench-env:
	bash benchmarks/reference_env.sh

clean:
	rm -rf $(VENV) .pytest_cache docs/_build docs/api/_generated docs/notebooks
