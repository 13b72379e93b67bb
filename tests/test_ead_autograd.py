"""Gradients of the EAD op: gradcheck (positions and cell), sparse upstream gradients, opcheck; on every
device (the ``device`` fixture: CPU, and CUDA where there is a GPU and srd has its kernels)."""

from __future__ import annotations

import math

import pytest
import torch

import srd
from helpers import real_crystals
from srd.representation import pooled_ead
from srd.structures import Batch

# A small grid so that finite differences stay cheap; dense so that the function is smooth.
SMALL = srd.EADParams(
    etas=(1.0, 20.0), mus=tuple(0.5 * k for k in range(10)), cutoff=6.0, skip_exponent=math.inf
)


def _random_crystal(n=3, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    cell = torch.tensor([[3.0, 0.2, 0.1], [0.5, 3.5, 0.3], [0.2, -0.4, 4.0]], dtype=torch.float64)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) @ cell
    num = torch.tensor([8, 22, 1, 6, 7][:n])
    return pos.to(device), num.to(device), cell.to(device)


@pytest.mark.parametrize("l1", ["cumulative", "separate"])
def test_gradcheck_positions_and_cell(l1, device):
    pos, num, cell = _random_crystal(device=device)
    params = srd.EADParams(SMALL.etas, SMALL.mus, SMALL.cutoff, 1, l1, math.inf)
    pos.requires_grad_()
    cell.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p, c: srd.ead(p, num, c, params=params), (pos, cell), eps=1e-6, atol=1e-5
    )


def test_gradcheck_default_grid_skipping(device):
    """The default grid and skip rule (recurrence path) still has exact gradients of what it computes."""
    pos, num, cell = _random_crystal(2, seed=3, device=device)
    pos.requires_grad_()
    cell.requires_grad_()

    def f(p, c):
        return srd.ead(p, num, c)[:, ::7]  # a subset of features keeps the Jacobian small

    assert torch.autograd.gradcheck(f, (pos, cell), eps=1e-6, atol=1e-4, rtol=1e-5)


def _perturbed_batch(dataset, n, dtype=torch.float64, device="cpu"):
    """Real crystals with atoms displaced by ~0.05 A: symmetric atoms would otherwise tie for the
    max/min of a feature, and which of them gets the gradient would be decided by rounding."""
    b = Batch.from_structures(real_crystals(dataset, n), dtype=dtype, device=device)
    g = torch.Generator().manual_seed(5)
    b.positions = b.positions + 0.05 * torch.randn(b.positions.shape, generator=g, dtype=torch.float64).to(
        device, dtype
    )
    return b


@pytest.mark.parametrize("dataset", ["perov_5", "mp_20"])
def test_gradients_match_reference_random_and_pooled(dataset, device):
    b = _perturbed_batch(dataset, 2, device=device)
    # The reference on the CPU: backend="torch" builds its image shifts there (reference.image_shifts).
    runs = (("native", device), ("torch", "cpu"))
    for upstream in ("random", "pooled"):
        grads = []
        for backend, dev in runs:
            pos = b.positions.to(dev).clone().requires_grad_()
            cells = b.cells.to(dev).clone().requires_grad_()
            ptr = b.ptr.to(dev)
            f = srd.ead_batch(pos, b.numbers.to(dev), cells, ptr, backend=backend)
            if upstream == "random":
                up = torch.randn(f.shape, generator=torch.Generator().manual_seed(1), dtype=f.dtype)
                loss = (f * up.to(dev)).sum()
            else:  # what reconstruction does: max/min pooling leaves most channels without gradient
                loss = pooled_ead(f, ptr).sum()
            grads.append([g.cpu() for g in torch.autograd.grad(loss, (pos, cells))])
        for got, ref in zip(*grads):
            torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10 * float(ref.abs().max()))


def test_float32_gradients_close_to_float64(device):
    b = _perturbed_batch("mp_20", 2, device=device)
    out = []
    for dtype in (torch.float32, torch.float64):
        pos = b.positions.to(dtype).requires_grad_()
        f = srd.ead_batch(pos, b.numbers, b.cells.to(dtype), b.ptr)
        (g,) = torch.autograd.grad(pooled_ead(f, b.ptr).sum(), pos)
        out.append(g.double())
    scale = float(out[1].abs().max())
    assert float((out[0] - out[1]).abs().max()) <= 1e-3 * scale


def test_opcheck(device):
    pos, num, cell = _random_crystal(3, device=device)
    ptr = torch.tensor([0, 3], device=device)
    args = (
        pos.requires_grad_(),
        num,
        cell[None].clone().requires_grad_(),
        ptr,
        list(SMALL.etas),
        list(SMALL.mus),
        SMALL.cutoff,
        1,
        True,
        SMALL.skip_exponent,
    )
    torch.library.opcheck(torch.ops.srd.ead_forward.default, args)
    f, rho = torch.ops.srd.ead_forward(*args)
    grad = torch.randn_like(f)
    torch.library.opcheck(
        torch.ops.srd.ead_backward.default,
        (
            grad,
            pos.detach(),
            num,
            cell[None],
            ptr,
            rho.detach(),
            list(SMALL.etas),
            list(SMALL.mus),
            SMALL.cutoff,
            1,
            True,
            SMALL.skip_exponent,
        ),
    )
    torch.library.opcheck(torch.ops.srd.nearest_pairs.default, (pos.detach(), cell[None], ptr))


def test_deterministic_and_thread_independent(device):
    b = Batch.from_structures(real_crystals("mp_20", 4), dtype=torch.float32, device=device)
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            pos = b.positions.clone().requires_grad_()
            f = srd.ead_batch(pos, b.numbers, b.cells, b.ptr)
            (g,) = torch.autograd.grad(pooled_ead(f, b.ptr).sum(), pos)
            results.append((f.detach(), g))
    finally:
        torch.set_num_threads(old)
    for f, g in results[1:]:
        assert torch.equal(f, results[0][0]) and torch.equal(g, results[0][1])
