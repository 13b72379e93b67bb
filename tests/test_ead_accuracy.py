"""The fused EAD kernels against an independent float64 brute force (tests/oracle.py), on every device
(the ``device`` fixture: CPU, and CUDA where there is a GPU and srd has its kernels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import srd
from helpers import adversarial_cells, real_crystals
from oracle import ead_oracle

PARAMS = srd.EADParams()


def _tensors(structure, dtype=torch.float64, device="cpu"):
    return (
        torch.tensor(structure.cart_coords, dtype=dtype, device=device),
        torch.tensor(structure.atomic_numbers, device=device),
        torch.tensor(structure.lattice.matrix, dtype=dtype, device=device),
    )


def _oracle(pos, num, cell, params=PARAMS):
    return ead_oracle(
        pos.double().cpu().numpy(),
        num.cpu().numpy(),
        cell.double().cpu().numpy(),
        params.etas,
        params.mus,
        params.cutoff,
        params.lmax,
        params.l1 == "cumulative",
    )


def _assert_close(got, ref, rtol, floor):
    """|got - ref| <= rtol (|ref| + floor), elementwise; reports the worst entry. Tensors on any device."""
    if isinstance(got, torch.Tensor):
        got = got.detach().cpu().numpy()
    if isinstance(ref, torch.Tensor):
        ref = ref.detach().cpu().numpy()
    got = np.asarray(got, dtype=np.float64)
    err = np.abs(got - ref) / (np.abs(ref) + floor)
    i = np.unravel_index(int(err.argmax()), err.shape)
    assert err.max() <= rtol, (
        f"worst relative error {err.max():.3g} at {i}: got {got[i]!r}, oracle {ref[i]!r}"
    )


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24", "mp_20"])
def test_dense_float64_matches_oracle(dataset, device):
    """Every Gaussian term computed (skip_exponent = inf): agreement to ~1e-12 on every feature."""
    for s in real_crystals(dataset, 2):
        pos, num, cell = _tensors(s, device=device)
        got = srd.ead(pos, num, cell, params=PARAMS.dense())
        assert got.device.type == device
        _assert_close(got, _oracle(pos, num, cell), rtol=1e-9, floor=1e-300)


@pytest.mark.parametrize("case", adversarial_cells(), ids=lambda c: c[0])
def test_dense_float64_matches_oracle_adversarial(case, device):
    _, cell, frac, numbers = case
    cell = torch.tensor(cell, device=device)
    pos = torch.tensor(frac, device=device) @ cell
    num = torch.tensor(numbers, device=device)
    got = srd.ead(pos, num, cell, params=PARAMS.dense())
    _assert_close(got, _oracle(pos, num, cell), rtol=1e-9, floor=1e-300)
    # The default (skipping) path too, on the same cells.
    got = srd.ead(pos, num, cell)
    _assert_close(got, _oracle(pos, num, cell), rtol=2**-24, floor=1e-12)


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24", "mp_20"])
def test_skipping_stays_within_float32_rounding_of_dense(dataset, device):
    """Default skip_exponent = 40, computed in float64: every feature within float32 rounding (2^-24
    relative) of the dense sum, except features below 1e-12 (absolute), where the skipped terms
    (each < exp(-40) of its Gaussian's peak) are the whole value."""
    for s in real_crystals(dataset, 3):
        pos, num, cell = _tensors(s, device=device)
        fast = srd.ead(pos, num, cell)
        dense = srd.ead(pos, num, cell, params=PARAMS.dense())
        _assert_close(fast, dense, rtol=2**-24, floor=1e-12)


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24", "mp_20"])
def test_float32_matches_oracle(dataset, device):
    """float32 kernels against the float64 oracle evaluated at the same (float32-rounded) inputs."""
    for s in real_crystals(dataset, 2):
        pos, num, cell = _tensors(s, torch.float32, device)
        got = srd.ead(pos, num, cell)
        assert got.dtype == torch.float32
        got = got.double().cpu().numpy()
        ref = _oracle(pos, num, cell)
        rowmax = np.abs(ref).max(axis=1, keepdims=True)
        _assert_close(got, ref, rtol=5e-5, floor=1e-6 * rowmax)


def test_batch_equals_single_crystals(device):
    crystals = list(real_crystals("mp_20", 3)) + list(real_crystals("perov_5", 2))
    from srd.structures import Batch

    b = Batch.from_structures(crystals, device=device)
    batched = srd.ead_batch(b.positions, b.numbers, b.cells, b.ptr)
    for k, s in enumerate(crystals):
        single = srd.ead(*_tensors(s, device=device))
        torch.testing.assert_close(batched[b.ptr[k] : b.ptr[k + 1]], single, rtol=1e-12, atol=0)


@pytest.mark.parametrize("l1", ["cumulative", "separate"])
@pytest.mark.parametrize("lmax", [0, 1])
def test_grid_variants_match_reference(l1, lmax, device):
    """Other grids (non-uniform mus, lmax 0, the paper's 'separate' L=1) against backend='torch'."""
    params = srd.EADParams(etas=(2.0, 35.0), mus=(0.0, 0.7, 1.1, 2.5, 3.0, 4.4), cutoff=7.5, lmax=lmax, l1=l1)
    s = real_crystals("carbon_24", 1)[0]
    pos, num, cell = _tensors(s, device=device)
    got = srd.ead(pos, num, cell, params=params)
    # The reference on the CPU: backend="torch" builds its image shifts there (reference.image_shifts).
    ref = srd.ead(pos.cpu(), num.cpu(), cell.cpu(), params=params, backend="torch")
    assert got.shape == (len(s), params.n_features)
    _assert_close(got, ref, rtol=1e-10, floor=1e-12)
    oracle = _oracle(pos, num, cell, params)
    _assert_close(srd.ead(pos, num, cell, params=params.dense()), oracle, rtol=1e-10, floor=1e-300)


def test_min_distance_matches_oracle(device):
    from oracle import min_distance_oracle
    from srd.structures import Batch

    crystals = list(real_crystals("mp_20", 4)) + list(real_crystals("carbon_24", 2))
    b = Batch.from_structures(crystals, device=device)
    got = srd.min_distance(b.positions, b.cells, b.ptr).cpu()
    for k, s in enumerate(crystals):
        assert math.isclose(
            float(got[k]), min_distance_oracle(s.cart_coords, s.lattice.matrix), rel_tol=1e-12
        )
    for name, cell, frac, _ in adversarial_cells():
        cell = torch.tensor(cell, device=device)
        pos = torch.tensor(frac, device=device) @ cell
        ptr = torch.tensor([0, len(pos)], device=device)
        got = float(srd.min_distance(pos, cell[None], ptr)[0])
        assert math.isclose(got, min_distance_oracle(pos.cpu().numpy(), cell.cpu().numpy()), rel_tol=1e-12), (
            name
        )


def test_min_distance_gradient(device):
    s = real_crystals("mp_20", 1)[0]
    # Symmetric crystals have many closest pairs (a kink); a random displacement makes one unique.
    pos = torch.tensor(s.cart_coords) + 0.05 * torch.randn(len(s), 3, dtype=torch.float64)
    pos = pos.to(device).requires_grad_()
    cell = torch.tensor(s.lattice.matrix, device=device, requires_grad=True)
    ptr = torch.tensor([0, len(s)], device=device)
    assert torch.autograd.gradcheck(lambda p, c: srd.min_distance(p, c[None], ptr), (pos, cell))


def test_min_distance_one_atom_cells_never_miss(device):
    """Random one-atom cells: the self-image along the shortest vector is always found (a radius equal
    to that length used to lose it to rounding)."""
    g = torch.Generator().manual_seed(3)
    cells = torch.randn(2000, 3, 3, generator=g, dtype=torch.float64) * 2 + 3 * torch.eye(
        3, dtype=torch.float64
    )
    pos = torch.rand(2000, 3, generator=g, dtype=torch.float64)
    ptr = torch.arange(2001)
    index, _ = srd.nearest_pairs(pos.to(device), cells.to(device), ptr.to(device))
    assert bool((index >= 0).all())
    d = srd.min_distance(pos.to(device), cells.to(device), ptr.to(device)).cpu()
    from oracle import min_distance_oracle

    for k in range(0, 2000, 97):
        assert math.isclose(
            float(d[k]), min_distance_oracle(pos[k : k + 1].numpy(), cells[k].numpy()), rel_tol=1e-12
        )
