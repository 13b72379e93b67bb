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
	$(PY) -m pip install --no-build-isolation -e ".[test,sun]"
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
	$(VENV)/bin/clang-format --dry-run -Werror $(CXX_SOURCES)

clean:
	rm -rf build $(VENV) .pytest_cache .benchmarks

# ---- C++/CUDA format (.clang-format; the pinned clang-format comes with the `test` extra) ----------
CXX_SOURCES = $(shell find csrc -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) | sort)

.PHONY: format-cxx gpu-check
format-cxx: setup
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)

# ---- The GPU check, on a machine with an NVIDIA GPU (no network): builds srd against that machine's
# torch (pip install --no-build-isolation --no-deps -e .), runs tests/test_cuda.py and prints CUDA kernel
# timings (scripts/gpu_check.sh). Fails with a clear message without a GPU. The Python whose torch is used:
# GPU_PYTHON (default: .venv's when there is one, else $(PYTHON)).
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	PYTHON="$(GPU_PYTHON)" bash scripts/gpu_check.sh
