#!/usr/bin/env bash
# `make gpu-check`: the GPU check in one command, for a machine with an NVIDIA GPU (no network needed).
#   1. preflight: a CUDA GPU visible to torch, nvcc, the build chain (scripts/gpu_check.py preflight);
#   2. build srd against this machine's own torch, for this GPU's architecture only:
#        pip install --no-build-isolation --no-deps --no-index -e .
#   3. the CPU/CUDA parity tests: pytest tests/test_cuda.py;
#   4. CUDA kernel timings (scripts/gpu_check.py timings).
# Fails with a clear message (exit 2) when no GPU is present. PYTHON selects the interpreter whose torch
# is used (default: python3); extra pip arguments can be given in GPU_CHECK_PIP_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
t0=$SECONDS
phase() { echo; echo "== gpu-check: $1 ($((SECONDS - t0)) s)"; }

phase "preflight"
out="$("$PY" scripts/gpu_check.py preflight)"
echo "$out"
arch="$(tail -n 1 <<<"$out")"
export "${arch?}"           # SRD_CUDA_ARCH_LIST=<major.minor of this GPU>
export SRD_WITH_CUDA=ON     # a missing piece of the CUDA build is an error, not a CPU-only build

phase "build (${arch}) against $("$PY" -c 'import torch; print("torch", torch.__version__)')"
# shellcheck disable=SC2086
"$PY" -m pip install --no-build-isolation --no-deps --no-index ${GPU_CHECK_PIP_ARGS:-} -e . \
  || { echo "gpu-check: building srd failed (see above)" >&2; exit 1; }
"$PY" -c 'import srd, sys; sys.exit(0 if srd.has_cuda_kernels() else "gpu-check: the build has no CUDA kernels")'

phase "tests/test_cuda.py"
# (-o addopts: the project's addopts need pytest-benchmark, which the GPU machine may not have)
"$PY" -m pytest -q -o addopts="-ra" -p no:cacheprovider tests/test_cuda.py

phase "timings"
"$PY" scripts/gpu_check.py timings

phase "done"
