# The README's two commands: `make demo` (set up + main job) and `make test` (set up + tests).
# Each creates the local virtual environment .venv on first use (only python3 >= 3.11 needed).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.l0jax-installed

.PHONY: demo test test-all setup bench-env clean

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

# The PyTorch reference of the benchmarks (l0-python on the CPU torch 2.13.0 wheel) in .venv-l0-python.
bench-env:
	bash benchmarks/reference_env.sh

clean:
	rm -rf $(VENV) .pytest_cache
