"""The fused EAD kernels against an independent float64 brute force (tests/oracle.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import srd
from helpers import adversarial_cells, real_crystals
from oracle import ead_oracle

PARAMS = srd.EADParams()


def _tensors(structure, dtype=torch.float64):
    return (
        torch.tensor(structure.cart_coords, dtype=dtype),
        torch.tensor(structure.atomic_numbers),
        torch.tensor(structure.lattice.matrix, dtype=dtype),
    )


def _oracle(pos, num, cell, params=PARAMS):
    return ead_oracle(
        pos.double().numpy(),
        num.numpy(),
        cell.double().numpy(),
        params.etas,
        params.mus,
        params.cutoff,
        params.lmax,
        params.l1 == "cumulative",
    )


def _assert_close(got, ref, rtol, floor):
    """|got - ref| <= rtol (|ref| + floor), elementwise; reports the worst entry."""
    got = np.asarray(got, dtype=np.float64)
    err = np.abs(got - ref) / (np.abs(ref) + floor)
    i = np.unravel_index(int(err.argmax()), err.shape)
    assert err.max() <= rtol, (
        f"worst relative error {err.max():.3g} at {i}: got {got[i]!r}, oracle {ref[i]!r}"
    )


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24", "mp_20"])
def test_dense_float64_matches_oracle(dataset):
    """Every Gaussian term computed (skip_exponent = inf): agreement to ~1e-12 on every feature."""
    for s in real_crystals(dataset, 2):
        pos, num, cell = _tensors(s)
        got = srd.ead(pos, num, cell, params=PARAMS.dense())
        _assert_close(got.numpy(), _oracle(pos, num, cell), rtol=1e-9, floor=1e-300)


@pytest.mark.parametrize("case", adversarial_cells(), ids=lambda c: c[0])
def test_dense_float64_matches_oracle_adversarial(case):
    _, cell, frac, numbers = case
    cell = torch.tensor(cell)
    pos = torch.tensor(frac) @ cell
    num = torch.tensor(numbers)
    got = srd.ead(pos, num, cell, params=PARAMS.dense())
    _assert_close(got.numpy(), _oracle(pos, num, cell), rtol=1e-9, floor=1e-300)
    # The default (skipping) path too, on the same cells.
    got = srd.ead(pos, num, cell)
    _assert_close(got.numpy(), _oracle(pos, num, cell), rtol=2**-24, floor=1e-12)


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24", "mp_20"])
def test_skipping_stays_within_float32_rounding_of_dense(dataset):
    """Default skip_exponent = 40, computed in float64: every feature within float32 rounding (2^-24
    relative) of the dense sum, except features below 1e-12 (absolute), where the skipped terms
    (each < exp(-40) of its Gaussian's peak) are the whole value."""
    for s in real_crystals(dataset, 3):
        pos, num, cell = _tensors(s)
        fast = srd.ead(pos, num, cell)
        dense = srd.ead(pos, num, cell, params=PARAMS.dense())
        _assert_close(fast.numpy(), dense.numpy(), rtol=2**-24, floor=1e-12)


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24", "mp_20"])
def test_float32_matches_oracle(dataset):
    """float32 kernels against the float64 oracle evaluated at the same (float32-rounded) inputs."""
    for s in real_crystals(dataset, 2):
        pos, num, cell = _tensors(s, torch.float32)
        got = srd.ead(pos, num, cell).double().numpy()
        ref = _oracle(pos, num, cell)
        rowmax = np.abs(ref).max(axis=1, keepdims=True)
        _assert_close(got, ref, rtol=5e-5, floor=1e-6 * rowmax)


def test_batch_equals_single_crystals():
    crystals = list(real_crystals("mp_20", 3)) + list(real_crystals("perov_5", 2))
    from srd.structures import Batch

    b = Batch.from_structures(crystals)
    batched = srd.ead_batch(b.positions, b.numbers, b.cells, b.ptr)
    for k, s in enumerate(crystals):
        single = srd.ead(*_tensors(s))
        torch.testing.assert_close(batched[b.ptr[k] : b.ptr[k + 1]], single, rtol=1e-12, atol=0)


@pytest.mark.parametrize("l1", ["cumulative", "separate"])
@pytest.mark.parametrize("lmax", [0, 1])
def test_grid_variants_match_reference(l1, lmax):
    """Other grids (non-uniform mus, lmax 0, the paper's 'separate' L=1) against backend='torch'."""
    params = srd.EADParams(etas=(2.0, 35.0), mus=(0.0, 0.7, 1.1, 2.5, 3.0, 4.4), cutoff=7.5, lmax=lmax, l1=l1)
    s = real_crystals("carbon_24", 1)[0]
    pos, num, cell = _tensors(s)
    got = srd.ead(pos, num, cell, params=params)
    ref = srd.ead(pos, num, cell, params=params, backend="torch")
    assert got.shape == (len(s), params.n_features)
    _assert_close(got.numpy(), ref.numpy(), rtol=1e-10, floor=1e-12)
    oracle = _oracle(pos, num, cell, params)
    _assert_close(srd.ead(pos, num, cell, params=params.dense()).numpy(), oracle, rtol=1e-10, floor=1e-300)


def test_min_distance_matches_oracle():
    from oracle import min_distance_oracle
    from srd.structures import Batch

    crystals = list(real_crystals("mp_20", 4)) + list(real_crystals("carbon_24", 2))
    b = Batch.from_structures(crystals)
    got = srd.min_distance(b.positions, b.cells, b.ptr)
    for k, s in enumerate(crystals):
        assert math.isclose(
            float(got[k]), min_distance_oracle(s.cart_coords, s.lattice.matrix), rel_tol=1e-12
        )
    for name, cell, frac, _ in adversarial_cells():
        cell = torch.tensor(cell)
        pos = torch.tensor(frac) @ cell
        ptr = torch.tensor([0, len(pos)])
        got = float(srd.min_distance(pos, cell[None], ptr)[0])
        assert math.isclose(got, min_distance_oracle(pos.numpy(), cell.numpy()), rel_tol=1e-12), name


def test_min_distance_gradient():
    s = real_crystals("mp_20", 1)[0]
    # Symmetric crystals have many closest pairs (a kink); a random displacement makes one unique.
    pos = (torch.tensor(s.cart_coords) + 0.05 * torch.randn(len(s), 3, dtype=torch.float64)).requires_grad_()
    cell = torch.tensor(s.lattice.matrix, requires_grad=True)
    ptr = torch.tensor([0, len(s)])
    assert torch.autograd.gradcheck(lambda p, c: srd.min_distance(p, c[None], ptr), (pos, cell))


def test_min_distance_one_atom_cells_never_miss():
    """Random one-atom cells: the self-image along the shortest vector is always found (a radius equal
    to that length used to lose it to rounding)."""
    g = torch.Generator().manual_seed(3)
    cells = torch.randn(2000, 3, 3, generator=g, dtype=torch.float64) * 2 + 3 * torch.eye(
        3, dtype=torch.float64
    )
    pos = torch.rand(2000, 3, generator=g, dtype=torch.float64)
    ptr = torch.arange(2001)
    index, _ = srd.nearest_pairs(pos, cells, ptr)
    assert bool((index >= 0).all())
    d = srd.min_distance(pos, cells, ptr)
    from oracle import min_distance_oracle

    for k in range(0, 2000, 97):
        assert math.isclose(
            float(d[k]), min_distance_oracle(pos[k : k + 1].numpy(), cells[k].numpy()), rel_tol=1e-12
        )
