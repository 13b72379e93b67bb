"""CPU/CUDA parity of the fused kernels (skipped unless a GPU and the CUDA kernels are present).

The CUDA kernels must reproduce the CPU ops: the same pair set, the same skip rule, float64
accumulation, the same feature expressions; bitwise run-to-run determinism; the same nearest-pair
distances. Checked on real crystals of the three datasets and on adversarial cells, for float64
(tight) and float32 (against the float64 CPU result), for the forward, the backward with dense and
max/min-pooled (sparse) upstream gradients, autograd through srd.ead_batch, and torch.library.opcheck.

Without a GPU, tests/test_cuda_emulation.py runs the same CUDA sources through a host emulator
(csrc/cuda/selfcheck). `make gpu-check` builds srd against the machine's torch and runs this file.

Needs only torch, numpy and pytest (no pymatgen): the real crystals come from tests/data/crystals.pt
(written by tests/data/make_crystals.py), with the adversarial cells of tests/helpers.py.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

import srd
from oracle import min_distance_oracle

HAS_CUDA = torch.cuda.is_available() and srd.has_cuda_kernels()
pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and srd built with CUDA kernels")

CRYSTALS = Path(__file__).resolve().parent / "data" / "crystals.pt"


class Batch(NamedTuple):
    """A ragged batch of crystals as the ops take it."""

    positions: torch.Tensor  # [N, 3]
    numbers: torch.Tensor  # [N] int64
    cells: torch.Tensor  # [B, 3, 3]
    ptr: torch.Tensor  # [B + 1] int64

    @property
    def n_crystals(self) -> int:
        return int(self.cells.shape[0])


@cache
def _stored() -> dict:
    return torch.load(CRYSTALS, weights_only=True)


def stored_crystals(name: str, n: int | None = None) -> Batch:
    """The first n crystals (all: None) of a set of tests/data/crystals.pt, float64: the test split of a
    dataset (as stored, not Niggli-reduced) or "adversarial" (tests/helpers.py: adversarial_cells)."""
    d = _stored()[name]
    n = len(d["ptr"]) - 1 if n is None else n
    end = int(d["ptr"][n])
    return Batch(d["positions"][:end], d["numbers"][:end], d["cells"][:n], d["ptr"][: n + 1].clone())


DEFAULT = srd.EADParams()
GRIDS = {
    "default": DEFAULT,  # SPEC grid, skip_exponent 40 (windowed)
    "dense": DEFAULT.dense(),  # every term
    "separate-lmax1": srd.EADParams(
        etas=(1.0, 20.0, 90.0), mus=tuple(0.25 * k for k in range(24)), cutoff=8.0, l1="separate"
    ),
    "lmax0-nonuniform": srd.EADParams(
        etas=(2.0, 30.0),
        mus=(0.0, 0.3, 0.7, 1.6, 2.0, 3.5, 4.1, 5.0, 7.5),
        cutoff=9.0,
        lmax=0,
        skip_exponent=20.0,
    ),
    # 3 x 100 = 300 channels: two channels per thread in the forward
    "two-per-thread": srd.EADParams(
        etas=(1.0, 10.0, 40.0), mus=tuple(0.07 * k for k in range(100)), cutoff=7.5
    ),
}


def _args(p: srd.EADParams):
    return (
        list(p.etas),
        list(p.mus),
        float(p.cutoff),
        int(p.lmax),
        p.l1 == "cumulative",
        float(p.skip_exponent),
    )


def _rattle(batch: Batch, amount: float = 0.05, seed: int = 0) -> Batch:
    """Break the crystals' symmetry (otherwise most gradients cancel to ~0)."""
    g = torch.Generator().manual_seed(seed)
    pos = batch.positions + amount * torch.randn(
        batch.positions.shape, generator=g, dtype=batch.positions.dtype
    )
    return Batch(pos, batch.numbers, batch.cells, batch.ptr)


def _from_cells(cases) -> Batch:
    pos, num, cells, counts = [], [], [], []
    for _, cell, frac, z in cases:
        cell = np.asarray(cell, dtype=np.float64)
        pos.append(np.asarray(frac, dtype=np.float64) @ cell)
        num.extend(z)
        cells.append(cell)
        counts.append(len(z))
    ptr = np.concatenate([[0], np.cumsum(counts)])
    return Batch(
        torch.tensor(np.concatenate(pos)),
        torch.tensor(num, dtype=torch.int64),
        torch.tensor(np.stack(cells)),
        torch.tensor(ptr, dtype=torch.int64),
    )


@cache
def _batches() -> dict[str, Batch]:
    out = {
        "mp_20": stored_crystals("mp_20", 4),
        "carbon_24": stored_crystals("carbon_24", 3),
        "perov_5": stored_crystals("perov_5", 3),
        "adversarial": stored_crystals("adversarial"),
    }
    extra = [
        # very skewed triclinic cell (plane spacings far below the vector lengths)
        (
            "very-skewed",
            [[5.0, 0.0, 0.0], [4.9, 0.45, 0.0], [4.8, 0.4, 0.35]],
            np.random.default_rng(3).random((3, 3)),
            [8, 26, 1],
        ),
        # one atom in a cell far smaller than the cutoff (thousands of self-images)
        ("tiny-one-atom", [[1.2, 0.0, 0.0], [0.1, 1.3, 0.0], [0.2, -0.1, 1.1]], np.zeros((1, 3)), [6]),
        # positions far outside the cell (wrapping offsets enter the cell gradient)
        (
            "unwrapped",
            [[4.0, 0.0, 0.0], [0.0, 4.5, 0.0], [0.5, 0.0, 5.0]],
            [[3.2, -2.7, 5.1], [-0.5, 0.25, -4.0]],
            [14, 8],
        ),
    ]
    out["extra"] = _from_cells(extra)
    return out


BATCH_NAMES = ["mp_20", "carbon_24", "perov_5", "adversarial", "extra"]


def _cuda(b: Batch, dtype) -> Batch:
    return Batch(b.positions.to("cuda", dtype), b.numbers.cuda(), b.cells.to("cuda", dtype), b.ptr.cuda())


def _assert_close(name, got, ref, rtol, atol_rel, per_column=True):
    """|got - ref| <= rtol |ref| + atol_rel * scale, scale = max |ref| per last-axis column (or overall)."""
    got = got.detach().double().cpu()
    ref = ref.detach().double().cpu()
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert bool(torch.isfinite(got).all()), f"{name}: non-finite values"
    if per_column and ref.dim() >= 2:
        scale = ref.abs().reshape(-1, ref.shape[-1]).amax(dim=0)
    else:
        scale = ref.abs().max()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    tol = rtol * ref.abs() + atol_rel * scale
    ratio = (got - ref).abs() / tol
    worst = int(ratio.argmax())
    idx = np.unravel_index(worst, tuple(ref.shape))
    assert ratio.max() <= 1, (
        f"{name}: worst error {(got - ref).abs().reshape(-1)[worst].item():.3e} at {idx} "
        f"(got {got[idx].item()!r}, cpu {ref[idx].item()!r}, tolerance {tol[idx].item():.3e})"
    )


def _upstreams(features: torch.Tensor, ptr: torch.Tensor) -> dict[str, torch.Tensor]:
    """A dense random upstream gradient and the sparse one of max + min pooling per crystal."""
    g = torch.Generator().manual_seed(1)
    dense = torch.randn(features.shape, generator=g, dtype=torch.float64)
    sparse = torch.zeros(features.shape, dtype=torch.float64)
    f = features.detach().double().cpu()
    for b in range(ptr.shape[0] - 1):
        s, e = int(ptr[b]), int(ptr[b + 1])
        blk = f[s:e]
        sparse[s:e].scatter_add_(0, blk.argmax(0, keepdim=True), torch.ones_like(blk[:1]))
        sparse[s:e].scatter_add_(0, blk.argmin(0, keepdim=True), torch.ones_like(blk[:1]))
    return {"random": dense, "maxmin": sparse}


# ------------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("name", BATCH_NAMES)
def test_forward_float64(name, grid):
    b, p = _batches()[name], GRIDS[grid]
    f_cpu, r_cpu = torch.ops.srd.ead_forward(b.positions, b.numbers, b.cells, b.ptr, *_args(p))
    c = _cuda(b, torch.float64)
    f_gpu, r_gpu = torch.ops.srd.ead_forward(c.positions, c.numbers, c.cells, c.ptr, *_args(p))
    assert f_gpu.device.type == "cuda" and f_gpu.dtype == torch.float64
    _assert_close(f"{name}/{grid} features", f_gpu, f_cpu, 1e-10, 1e-12)
    # rho_x,y,z cancel for symmetric sites: absolute tolerance relative to the channel's scale
    _assert_close(f"{name}/{grid} rho", r_gpu, r_cpu, 1e-10, 1e-10)


@pytest.mark.parametrize("grid", ["default", "dense", "separate-lmax1"])
@pytest.mark.parametrize("name", BATCH_NAMES)
def test_forward_float32(name, grid):
    b, p = _batches()[name], GRIDS[grid]
    c = _cuda(b, torch.float32)
    # float64 CPU reference on exactly the float32 inputs
    f_cpu, r_cpu = torch.ops.srd.ead_forward(
        c.positions.double().cpu(), b.numbers, c.cells.double().cpu(), b.ptr, *_args(p)
    )
    f_gpu, r_gpu = torch.ops.srd.ead_forward(c.positions, c.numbers, c.cells, c.ptr, *_args(p))
    assert f_gpu.dtype == torch.float32
    _assert_close(f"{name}/{grid} features float32", f_gpu, f_cpu, 1e-4, 1e-5)
    _assert_close(f"{name}/{grid} rho float32", r_gpu, r_cpu, 1e-4, 1e-4)


def test_forward_through_public_api():
    b = _batches()["mp_20"]
    c = _cuda(b, torch.float64)
    _assert_close(
        "ead_batch",
        srd.ead_batch(c.positions, c.numbers, c.cells, c.ptr),
        srd.ead_batch(b.positions, b.numbers, b.cells, b.ptr),
        1e-10,
        1e-12,
    )


# ------------------------------------------------------------------------------------------------
# Backward
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", ["default", "dense", "separate-lmax1", "lmax0-nonuniform", "two-per-thread"])
@pytest.mark.parametrize("name", BATCH_NAMES)
def test_backward_float64(name, grid):
    b, p = _rattle(_batches()[name]), GRIDS[grid]
    f_cpu, r_cpu = torch.ops.srd.ead_forward(b.positions, b.numbers, b.cells, b.ptr, *_args(p))
    c = _cuda(b, torch.float64)
    _, r_gpu = torch.ops.srd.ead_forward(c.positions, c.numbers, c.cells, c.ptr, *_args(p))
    for kind, up in _upstreams(f_cpu, b.ptr).items():
        gp_cpu, gc_cpu = torch.ops.srd.ead_backward(
            up, b.positions, b.numbers, b.cells, b.ptr, r_cpu, *_args(p)
        )
        gp, gc = torch.ops.srd.ead_backward(
            up.cuda(), c.positions, c.numbers, c.cells, c.ptr, r_gpu, *_args(p)
        )
        _assert_close(f"{name}/{grid}/{kind} grad positions", gp, gp_cpu, 1e-9, 1e-10, per_column=False)
        _assert_close(f"{name}/{grid}/{kind} grad cells", gc, gc_cpu, 1e-9, 1e-10, per_column=False)


@pytest.mark.parametrize("name", BATCH_NAMES)
def test_backward_float32(name):
    b, p = _rattle(_batches()[name]), DEFAULT
    c = _cuda(b, torch.float32)
    pos64, cel64 = c.positions.double().cpu(), c.cells.double().cpu()
    f_cpu, r_cpu = torch.ops.srd.ead_forward(pos64, b.numbers, cel64, b.ptr, *_args(p))
    _, r_gpu = torch.ops.srd.ead_forward(c.positions, c.numbers, c.cells, c.ptr, *_args(p))
    for kind, up in _upstreams(f_cpu, b.ptr).items():
        gp_cpu, gc_cpu = torch.ops.srd.ead_backward(up, pos64, b.numbers, cel64, b.ptr, r_cpu, *_args(p))
        gp, gc = torch.ops.srd.ead_backward(
            up.float().cuda(), c.positions, c.numbers, c.cells, c.ptr, r_gpu, *_args(p)
        )
        assert gp.dtype == torch.float32 and gc.dtype == torch.float32
        _assert_close(f"{name}/{kind} grad positions float32", gp, gp_cpu, 1e-3, 1e-4, per_column=False)
        _assert_close(f"{name}/{kind} grad cells float32", gc, gc_cpu, 1e-3, 1e-4, per_column=False)


@pytest.mark.parametrize("name", ["mp_20", "extra"])
def test_autograd_pooled_loss(name):
    """The SPEC pooling (max and min over the atoms of each crystal) through autograd on both devices."""
    b = _rattle(_batches()[name])
    grads = {}
    for dev in ("cpu", "cuda"):
        pos = b.positions.to(dev).clone().requires_grad_()
        cel = b.cells.to(dev).clone().requires_grad_()
        f = srd.ead_batch(pos, b.numbers.to(dev), cel, b.ptr.to(dev))
        loss = 0
        for k in range(b.n_crystals):
            s, e = int(b.ptr[k]), int(b.ptr[k + 1])
            loss = loss + f[s:e].max(0).values.sum() / 1e6 + f[s:e].min(0).values.sum() / 1e6
        grads[dev] = torch.autograd.grad(loss, (pos, cel))
    _assert_close(f"{name} pooled d/dpos", grads["cuda"][0], grads["cpu"][0], 1e-9, 1e-10, per_column=False)
    _assert_close(f"{name} pooled d/dcell", grads["cuda"][1], grads["cpu"][1], 1e-9, 1e-10, per_column=False)


def test_backward_zero_upstream_is_zero():
    b = _batches()["perov_5"]
    c = _cuda(b, torch.float64)
    f, r = torch.ops.srd.ead_forward(c.positions, c.numbers, c.cells, c.ptr, *_args(DEFAULT))
    gp, gc = torch.ops.srd.ead_backward(
        torch.zeros_like(f), c.positions, c.numbers, c.cells, c.ptr, r, *_args(DEFAULT)
    )
    assert bool((gp == 0).all()) and bool((gc == 0).all())


# ------------------------------------------------------------------------------------------------
# Nearest pairs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", BATCH_NAMES)
def test_nearest_pairs(name, dtype):
    b = _batches()[name]
    c = _cuda(b, dtype)
    pos, cel = c.positions.cpu(), c.cells.cpu()
    i_gpu, s_gpu = torch.ops.srd.nearest_pairs(c.positions, c.cells, c.ptr)
    assert i_gpu.dtype == torch.int64 and s_gpu.dtype == torch.int64
    i_gpu, s_gpu = i_gpu.cpu(), s_gpu.cpu()
    assert bool((i_gpu[:, 0] <= i_gpu[:, 1]).all())
    for k in range(b.n_crystals):  # both atoms of the pair belong to the crystal
        assert int(b.ptr[k]) <= int(i_gpu[k, 0]) and int(i_gpu[k, 1]) < int(b.ptr[k + 1])

    def dist(i, s):
        d = (
            pos.double()[i[:, 1]]
            - pos.double()[i[:, 0]]
            + torch.einsum("bk,bkl->bl", s.double(), cel.double())
        )
        return d.norm(dim=1)

    # The independent brute force (tests/oracle.py) on exactly these inputs.
    oracle = torch.tensor(
        [
            min_distance_oracle(
                pos[int(b.ptr[k]) : int(b.ptr[k + 1])].double().numpy(), cel[k].double().numpy()
            )
            for k in range(b.n_crystals)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(dist(i_gpu, s_gpu), oracle, rtol=1e-12, atol=0)
    # The CPU op's pair has the same length wherever it found one. (The CPU search radius is
    # sqrt(|a|^2)^2, which can round below |a|^2 and lose the self-image along the shortest lattice
    # vector of a one-atom cell, leaving index -1; the CUDA search radius is inflated by 64 ulp.)
    i_cpu, s_cpu = torch.ops.srd.nearest_pairs(pos, cel, b.ptr)
    found = i_cpu[:, 0] >= 0
    torch.testing.assert_close(
        dist(i_gpu, s_gpu)[found], dist(i_cpu[found], s_cpu[found]), rtol=1e-12, atol=0
    )
    # min_distance end to end (the differentiable distance is recomputed in Python)
    torch.testing.assert_close(
        srd.min_distance(c.positions, c.cells, c.ptr).cpu().double(),
        oracle,
        rtol=1e-6 if dtype == torch.float32 else 1e-12,
        atol=0,
    )


# ------------------------------------------------------------------------------------------------
# Determinism and batch independence
# ------------------------------------------------------------------------------------------------
def test_bitwise_deterministic():
    b = _rattle(_batches()["mp_20"])
    c = _cuda(b, torch.float64)
    args = _args(DEFAULT)
    f1, r1 = torch.ops.srd.ead_forward(c.positions, c.numbers, c.cells, c.ptr, *args)
    f2, r2 = torch.ops.srd.ead_forward(c.positions, c.numbers, c.cells, c.ptr, *args)
    assert torch.equal(f1, f2) and torch.equal(r1, r2)
    for up in _upstreams(f1, b.ptr).values():
        g1 = torch.ops.srd.ead_backward(up.cuda(), c.positions, c.numbers, c.cells, c.ptr, r1, *args)
        g2 = torch.ops.srd.ead_backward(up.cuda(), c.positions, c.numbers, c.cells, c.ptr, r1, *args)
        assert torch.equal(g1[0], g2[0]) and torch.equal(g1[1], g2[1])
    n1 = torch.ops.srd.nearest_pairs(c.positions, c.cells, c.ptr)
    n2 = torch.ops.srd.nearest_pairs(c.positions, c.cells, c.ptr)
    assert torch.equal(n1[0], n2[0]) and torch.equal(n1[1], n2[1])


def test_batch_independent_bitwise():
    """A crystal's features do not depend on the rest of the batch (no cross-crystal reductions)."""
    b = _cuda(_batches()["carbon_24"], torch.float64)
    args = _args(DEFAULT)
    f_all, _ = torch.ops.srd.ead_forward(b.positions, b.numbers, b.cells, b.ptr, *args)
    for k in range(b.n_crystals):
        s, e = int(b.ptr[k]), int(b.ptr[k + 1])
        ptr = torch.tensor([0, e - s], dtype=torch.int64, device="cuda")
        f_one, _ = torch.ops.srd.ead_forward(b.positions[s:e], b.numbers[s:e], b.cells[k : k + 1], ptr, *args)
        assert torch.equal(f_one, f_all[s:e])


# ------------------------------------------------------------------------------------------------
# Largest grids, limits, edge cases, opcheck
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_largest_grid(dtype):
    """16 etas x 128 mus = 2048 channels: 8 channels per thread; > 48 kB shared memory in the backward."""
    p = srd.EADParams(
        etas=tuple(1.0 + 6.0 * k for k in range(16)), mus=tuple(0.04 * k for k in range(128)), cutoff=5.5
    )
    b = _rattle(_batches()["perov_5"])
    c = _cuda(b, dtype)
    pos64, cel64 = c.positions.double().cpu(), c.cells.double().cpu()
    f_cpu, r_cpu = torch.ops.srd.ead_forward(pos64, b.numbers, cel64, b.ptr, *_args(p))
    f_gpu, r_gpu = torch.ops.srd.ead_forward(c.positions, c.numbers, c.cells, c.ptr, *_args(p))
    tol = (1e-10, 1e-12) if dtype == torch.float64 else (1e-4, 1e-5)
    _assert_close("largest grid features", f_gpu, f_cpu, *tol)
    up = _upstreams(f_cpu, b.ptr)["random"]
    gp_cpu, gc_cpu = torch.ops.srd.ead_backward(up, pos64, b.numbers, cel64, b.ptr, r_cpu, *_args(p))
    gp, gc = torch.ops.srd.ead_backward(
        up.to("cuda", dtype), c.positions, c.numbers, c.cells, c.ptr, r_gpu, *_args(p)
    )
    btol = (1e-9, 1e-10) if dtype == torch.float64 else (1e-3, 1e-4)
    _assert_close("largest grid grad positions", gp, gp_cpu, *btol, per_column=False)
    _assert_close("largest grid grad cells", gc, gc_cpu, *btol, per_column=False)


def test_grid_limits_have_clear_messages():
    c = _cuda(_batches()["perov_5"], torch.float64)
    with pytest.raises(ValueError, match=r"the CUDA kernels support at most 16 etas, got 17"):
        torch.ops.srd.ead_forward(
            c.positions, c.numbers, c.cells, c.ptr, [1.0] * 17, [0.0], 5.0, 1, True, 40.0
        )
    with pytest.raises(ValueError, match=r"the CUDA kernels support at most 128 mus, got 129"):
        torch.ops.srd.ead_forward(
            c.positions, c.numbers, c.cells, c.ptr, [1.0], [0.1 * k for k in range(129)], 5.0, 1, True, 40.0
        )
    with pytest.raises(ValueError, match=r"cutoff must be a finite number > 0"):
        torch.ops.srd.ead_forward(c.positions, c.numbers, c.cells, c.ptr, [1.0], [0.0], -1.0, 1, True, 40.0)


def test_mixed_devices_are_refused():
    b = _batches()["perov_5"]
    with pytest.raises(ValueError, match=r"cells is on cpu but positions is on cuda"):
        torch.ops.srd.ead_forward(
            b.positions.cuda(), b.numbers.cuda(), b.cells, b.ptr.cuda(), *_args(DEFAULT)
        )


def test_empty_batch():
    pos = torch.zeros((0, 3), dtype=torch.float64, device="cuda")
    num = torch.zeros(0, dtype=torch.int64, device="cuda")
    cel = torch.zeros((0, 3, 3), dtype=torch.float64, device="cuda")
    ptr = torch.zeros(1, dtype=torch.int64, device="cuda")
    f, r = torch.ops.srd.ead_forward(pos, num, cel, ptr, *_args(DEFAULT))
    assert f.shape == (0, DEFAULT.n_features) and r.shape == (0, 4, DEFAULT.n_channels)
    i, s = torch.ops.srd.nearest_pairs(pos, cel, ptr)
    assert i.shape == (0, 2) and s.shape == (0, 3)


def test_invalid_crystal_gives_nan_not_a_crash():
    """Value checks belong to the Python wrapper; the raw op flags a singular cell with NaN (no sync)."""
    b = _batches()["perov_5"]
    cells = b.cells.clone()
    cells[1] = 0.0
    c = Batch(b.positions.cuda(), b.numbers.cuda(), cells.cuda(), b.ptr.cuda())
    f, _ = torch.ops.srd.ead_forward(c.positions, c.numbers, c.cells, c.ptr, *_args(DEFAULT))
    s, e = int(b.ptr[1]), int(b.ptr[2])
    f = f.cpu()
    assert bool(torch.isnan(f[s:e]).all())
    assert bool(torch.isfinite(f[:s]).all()) and bool(torch.isfinite(f[e:]).all())
    i, _ = torch.ops.srd.nearest_pairs(c.positions, c.cells, c.ptr)
    assert i[1].tolist() == [-1, -1]
    with pytest.raises(ValueError, match=r"singular"):
        srd.ead_batch(c.positions, c.numbers, c.cells, c.ptr)


def test_opcheck():
    b = _rattle(_batches()["perov_5"])
    c = _cuda(b, torch.float64)
    p = GRIDS["separate-lmax1"]
    args = (c.positions, c.numbers, c.cells, c.ptr, *_args(p))
    torch.library.opcheck(torch.ops.srd.ead_forward.default, args)
    f, r = torch.ops.srd.ead_forward(*args)
    up = torch.randn_like(f)
    torch.library.opcheck(
        torch.ops.srd.ead_backward.default, (up, c.positions, c.numbers, c.cells, c.ptr, r, *_args(p))
    )
    torch.library.opcheck(torch.ops.srd.nearest_pairs.default, (c.positions, c.cells, c.ptr))
    # with gradients required (autograd registration on the CUDA key)
    pos = c.positions.clone().requires_grad_()
    cel = c.cells.clone().requires_grad_()
    torch.library.opcheck(torch.ops.srd.ead_forward.default, (pos, c.numbers, cel, c.ptr, *_args(p)))


def test_gradcheck_float64():
    p = srd.EADParams(
        etas=(1.0, 20.0), mus=tuple(0.5 * k for k in range(10)), cutoff=6.0, skip_exponent=math.inf
    )
    cell = torch.tensor(
        [[3.0, 0.2, 0.1], [0.5, 3.5, 0.3], [0.2, -0.4, 4.0]],
        dtype=torch.float64,
        device="cuda",
        requires_grad=True,
    )
    g = torch.Generator().manual_seed(0)
    pos = (torch.rand(3, 3, generator=g, dtype=torch.float64).cuda() @ cell.detach()).requires_grad_()
    num = torch.tensor([8, 22, 1], device="cuda")
    assert torch.autograd.gradcheck(
        lambda x, h: srd.ead(x, num, h, params=p), (pos, cell), eps=1e-6, atol=1e-5, rtol=1e-6
    )
