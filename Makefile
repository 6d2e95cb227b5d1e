# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-python bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/stress run configs/default.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

# The kernel's tests on its plain-Python path (the same source, uncompiled).
test-python: $(STAMP)
	STRESS_DISABLE_NUMBA=1 $(BIN)/python -m pytest -q tests/exchange

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_kernel.py
	$(BIN)/python benchmarks/bench_generators.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_run.py
	$(BIN)/python benchmarks/bench_memory.py

clean:
	rm -rf $(VENV) results
	find stress -name '*.nb[ic]' -delete  # numba's cache, stale after kernel edits
