# srd — the two commands a user needs are `make demo` and `make test`; both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The torch installed when the venv has none: the one pinned default, overridable from the environment
# (e.g. SRD_TORCH_SPEC="torch==2.13.0" for a small CPU-only build without CUDA kernels).
SRD_TORCH_SPEC ?= torch==2.14.1
BUILD_STAMP := $(VENV)/.srd-built
SOURCES := $(shell find csrc -type f) CMakeLists.txt pyproject.toml

.PHONY: setup test demo bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(BUILD_STAMP): $(PY) $(SOURCES)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(SRD_TORCH_SPEC)"
	$(PY) -m pip install "scikit-build-core>=0.10" "pybind11>=2.12"
	$(PY) -m pip install --no-build-isolation -e ".[test]"
	@touch $@

setup: $(BUILD_STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) -m srd.demo

bench: setup
	$(PY) -m pytest benchmarks -q --benchmark-enable --benchmark-only --benchmark-columns=min,median,rounds --benchmark-json=build/bench.json
	$(PY) benchmarks/report.py

lint: setup
	$(VENV)/bin/ruff check python tests benchmarks scripts
	$(VENV)/bin/ruff format --check python tests benchmarks scripts

clean:
	rm -rf build $(VENV) .pytest_cache .benchmarks
