"""The CUDA kernels without a GPU: their CPU emulation against the CPU ops (runs in `make test`).

csrc/cuda/selfcheck compiles the CUDA sources of the package unchanged (the host glue
cuda/*_cuda.cuh and the device code cuda/*_kernels.cuh) with the host compiler, on a thread-level
emulator of the CUDA features they use (cuda_emulation.h: one fiber per CUDA thread, real barriers
and warp shuffles), as ``torch.ops.srd_emu.*``. This test compares that with ``torch.ops.srd.*`` on
the CPU: forward features and rho, backward gradients (dense and max/min-pooled upstream) and
nearest pairs, on real crystals of the three datasets (tests/data/crystals.pt) and adversarial cells,
in float64 and float32, on small grids that cover every kernel path and on the default (SPEC) grid
(20 Angstrom cutoff: many pair tiles per centre). It checks the kernels' logic, not
the device's floating-point library or memory model: tests/test_cuda.py does that on a GPU.

The emulator is built once into build/cuda-emulator (about 30 s on two cores) and reused while the
sources do not change. Skipped only when there is no C++ compiler.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from functools import cache
from pathlib import Path

import pytest
import torch

import srd  # noqa: F401  (torch.ops.srd: the CPU reference)

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "srd_cuda_selfcheck", ROOT / "csrc/cuda/selfcheck/selfcheck.py"
)
selfcheck = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = selfcheck
_spec.loader.exec_module(selfcheck)

SETS = [name for name, *_ in selfcheck.REAL_SETS] + ["skewed+tiny+ortho", "unwrapped+coincident"]
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@pytest.fixture(scope="module")
def emulator():
    if selfcheck.compiler() is None:
        pytest.skip("no C++ compiler ($CXX, c++, g++ or clang++) to build the CUDA emulator")
    t0 = time.perf_counter()
    so = selfcheck.build_emulator()
    took = selfcheck.BUILD_SECONDS
    print(
        f"\nCUDA emulator {so.name}: "
        + (f"compiled in {took:.0f} s" if took else "cached")
        + f" (ready after {time.perf_counter() - t0:.1f} s)"
    )
    return so


@cache
def _sets() -> dict:
    sets = selfcheck.crystal_sets()
    assert list(sets) == SETS
    return sets


@cache
def _grids() -> dict:
    return selfcheck.grids()


def _assert_all(report):
    bad = [line for ok, line in report if not ok]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("grid", selfcheck.GRID_NAMES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", SETS)
def test_ead_forward_backward(emulator, name, dtype, grid):
    _assert_all(selfcheck.check_ead(name, _sets()[name], DTYPES[dtype], _grids()[grid], grid))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", SETS)
def test_nearest_pairs(emulator, name, dtype):
    _assert_all(selfcheck.check_nearest(name, _sets()[name], DTYPES[dtype]))


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_coincident_atoms_give_zero_distance(emulator, dtype):
    """Two atoms at one place: d_min = 0 on both back ends (the descriptor skips that zero vector)."""
    b = _sets()["unwrapped+coincident"]
    pos, cel = b.positions.to(DTYPES[dtype]), b.cells.to(DTYPES[dtype])
    assert torch.equal(pos[1], pos[2])  # crystal 0 holds atoms 0..2
    for op in (torch.ops.srd.nearest_pairs, torch.ops.srd_emu.nearest_pairs):
        index, shifts = op(pos, cel, b.ptr)
        d = selfcheck.pair_distances(pos, cel, index, shifts)
        assert index[0].tolist() == [1, 2] and float(d[0]) == 0.0, (op, index, d)
        assert float(d[1]) > 0.0


def test_schemas_are_shared(emulator):
    for op in ("ead_forward", "ead_backward", "nearest_pairs"):
        ours = str(getattr(torch.ops.srd, op).default._schema)
        emu = str(getattr(torch.ops.srd_emu, op).default._schema)
        assert emu == ours.replace("srd::", "srd_emu::", 1)


def test_host_glue_checks(emulator):
    """The CUDA ops' own argument checks (grid limits, backward arguments) run in the emulator too."""
    b = _sets()["perov_5"]
    args = (b.positions, b.numbers, b.cells, b.ptr)
    with pytest.raises(ValueError, match=r"the CUDA kernels support at most 16 etas, got 17"):
        torch.ops.srd_emu.ead_forward(*args, [1.0] * 17, [0.0], 5.0, 1, True, 40.0)
    with pytest.raises(ValueError, match=r"the CUDA kernels support at most 128 mus, got 129"):
        torch.ops.srd_emu.ead_forward(*args, [1.0], [0.1 * k for k in range(129)], 5.0, 1, True, 40.0)
    grid = selfcheck.GRIDS["small-dense"].args()
    f, rho = torch.ops.srd_emu.ead_forward(*args, *grid)
    for backward in (torch.ops.srd.ead_backward, torch.ops.srd_emu.ead_backward):
        with pytest.raises(ValueError, match=r"srd.ead_backward: grad_features must have shape"):
            backward(f[:, :-1], *args, rho, *grid)
        with pytest.raises(ValueError, match=r"srd.ead_backward: rho must have shape"):
            backward(f, *args, rho[:, :1], *grid)
    # zero upstream gradient: zero gradients, exactly
    gp, gc = torch.ops.srd_emu.ead_backward(torch.zeros_like(f), *args, rho, *grid)
    assert bool((gp == 0).all()) and bool((gc == 0).all())
