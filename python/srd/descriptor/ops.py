"""Typed wrappers around the ``torch.ops.srd`` kernels: the EAD descriptor and the nearest-pair search.

Units: positions and cells in Angstrom (Cartesian; cell rows are the lattice vectors a, b, c), atomic
numbers as integers. Bad input raises ``ValueError`` naming the argument, the offending row and what was
expected. Each check has one home:

* shapes, dtypes and devices of the tensors: the op itself (``check_structure_args`` in
  csrc/common/ead_grid.h, the same on every device and for every caller, direct ``torch.ops.srd`` calls
  included), raised as ``ValueError`` by ``TORCH_CHECK_VALUE``; the Python wrappers do not repeat them;
* what the op cannot say because the call never reaches it (an argument that is not a tensor, a device
  this build of srd has no kernels for): :func:`_check_tensors` and :func:`_check_kernels`, on every call;
* the values (finite positions and cells, non-singular cells, no empty crystal, ptr from 0 to N, atomic
  numbers in 1..118, the image-search bound): :func:`validate_batch`, behind ``check=``.
"""

from __future__ import annotations

import torch

from .. import _C  # noqa: F401  (loads the library: registers torch.ops.srd.*)
from .params import EADParams

__all__ = [
    "ead",
    "ead_batch",
    "min_distance",
    "nearest_pairs",
    "has_cuda_kernels",
    "validate_batch",
]

_DEFAULT_PARAMS = EADParams()
_BACKENDS = ("native", "torch")


def has_cuda_kernels() -> bool:
    """True when this build of srd contains the CUDA kernels (independent of a GPU being present)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("srd::ead_forward", "CUDA")


# ------------------------------------------------------------------------------------------------
# Input checks (see the module docstring for which check lives where)
# ------------------------------------------------------------------------------------------------
def _check_tensors(op: str, **named) -> None:
    """Every argument is a tensor (the dispatcher would raise a RuntimeError without the row)."""
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


def _check_kernels(op: str, *tensors: torch.Tensor) -> None:
    """This build of srd has kernels for the tensors' devices (the dispatcher picks the CUDA kernel as
    soon as one tensor is on CUDA; whether the devices agree is the op's own check)."""
    types = {t.device.type for t in tensors}
    if "cuda" in types and not has_cuda_kernels():
        raise ValueError(
            f"{op}: got CUDA tensors but this build of srd has no CUDA kernels "
            "(it was compiled CPU-only; rebuild with a CUDA torch and nvcc, SRD_WITH_CUDA=ON)"
        )
    other = sorted(types - {"cpu", "cuda", "meta"})
    if other:
        raise ValueError(f"{op}: unsupported device {other[0]} (srd has CPU and CUDA kernels)")


def _as_int64(numbers: torch.Tensor) -> torch.Tensor:
    """Atomic numbers of any integer dtype as the int64 the op takes (other dtypes go to the op as they
    are, and it refuses them)."""
    dt = numbers.dtype
    if dt == torch.int64 or dt.is_floating_point or dt.is_complex or dt == torch.bool:
        return numbers
    return numbers.to(torch.int64)


def _first_bad_row(mask: torch.Tensor) -> int:
    return int(torch.nonzero(mask.reshape(mask.shape[0], -1).any(dim=1))[0, 0])


def _values_checkable(positions, numbers, cells, ptr) -> bool:
    """Precondition of the value checks: the layout they index (positions [N, 3], numbers [N], cells
    [B, 3, 3], ptr [B + 1] int64). Never stricter than the op's own argument check (every input the op
    accepts passes), so input that fails it is refused by the op, with the op's message: the value checks
    are skipped rather than reporting a layout problem a second time."""
    n = positions.shape[0] if positions.dim() == 2 else -1
    return (
        positions.dim() == 2
        and positions.shape[1] == 3
        and cells.dim() == 3
        and tuple(cells.shape[1:]) == (3, 3)
        and tuple(ptr.shape) == (cells.shape[0] + 1,)
        and ptr.dtype == torch.int64
        and (numbers is None or tuple(numbers.shape) == (n,))
    )


def validate_batch(
    positions: torch.Tensor,
    numbers: torch.Tensor | None,
    cells: torch.Tensor,
    ptr: torch.Tensor,
    *,
    op: str = "srd.ead_batch",
    radius: float | torch.Tensor | None = None,
    single: bool = False,
) -> None:
    """Check the values of a ragged batch; raise ValueError naming the argument, the row and what was
    expected.

    Finite positions and cells, non-singular cells, at least one atom per crystal, ptr from 0 to N,
    atomic numbers in 1..118 (``numbers`` None: not checked). The layout (shapes, dtypes, devices) is the
    op's to check: a batch whose layout the value checks cannot index is left to the op (see
    :func:`_values_checkable`), and meta tensors (no values) pass.

    ``radius`` (Angstrom, the descriptor's reach): also refuse crystals whose periodic-image search within
    it would be unreasonable (:data:`MAX_NEIGHBOURS_PER_ATOM`, the kernels' bound, checked on every device).
    ``single``: the batch is the one crystal of :func:`ead` (messages then name ``cell``, not ``cells[0]``).
    """

    def cell(b: int) -> str:
        return "cell" if single else f"cells[{b}]"

    named = {"positions": positions, "cells": cells, "ptr": ptr}
    if numbers is not None:
        named["numbers"] = numbers
    _check_tensors(op, **named)
    if not _values_checkable(positions, numbers, cells, ptr):
        return
    if any(t.device.type == "meta" for t in named.values()):
        return
    n = positions.shape[0]
    if cells.shape[0] == 0 or n == 0:
        raise ValueError(f"{op}: the batch is empty (got {n} atoms in {cells.shape[0]} crystals)")
    if int(ptr[0]) != 0 or int(ptr[-1]) != n:
        raise ValueError(
            f"{op}: ptr must start at 0 and end at N = {n}, got ptr[0] = {int(ptr[0])}, ptr[-1] = {int(ptr[-1])}"
        )
    counts = ptr[1:] - ptr[:-1]
    if bool((counts <= 0).any()):
        b = _first_bad_row(counts <= 0)
        raise ValueError(
            f"{op}: crystal {b} is empty (ptr[{b}] = ptr[{b + 1}] = {int(ptr[b])}); every crystal needs at least one atom"
        )
    bad = ~torch.isfinite(positions)
    if bool(bad.any()):
        i = _first_bad_row(bad)
        raise ValueError(f"{op}: positions[{i}] is not finite: {positions[i].tolist()}")
    bad = ~torch.isfinite(cells)
    if bool(bad.any()):
        b = _first_bad_row(bad)
        raise ValueError(f"{op}: {cell(b)} is not finite: {cells[b].tolist()}")
    det = torch.linalg.det(cells.double())
    scale = cells.double().norm(dim=2).prod(dim=1)
    singular = det.abs() <= 1e-10 * scale
    if bool(singular.any()):
        b = _first_bad_row(singular)
        raise ValueError(
            f"{op}: {cell(b)} is singular (determinant {float(det[b]):.3g}); its rows must be three "
            "linearly independent lattice vectors"
        )
    if radius is not None:
        _check_image_bound(cells.double(), det.abs(), counts, radius, op, cell)
    if numbers is not None:
        out = (numbers < 1) | (numbers > 118)
        if bool(out.any()):
            i = _first_bad_row(out)
            raise ValueError(f"{op}: numbers[{i}] = {int(numbers[i])} is not an atomic number in 1..118")


#: The neighbour-search bound of the kernels (kMaxNeighboursPerAtom in csrc/common/ead_math.h): atoms x
#: prod_k (2 radius / plane spacing_k + 2) periodic images per atom at most.
MAX_NEIGHBOURS_PER_ATOM = 4e6


def _check_image_bound(
    cells: torch.Tensor, volume: torch.Tensor, counts: torch.Tensor, radius, op: str, cell
):
    """Refuse the first crystal whose image search within ``radius`` (a number or one per crystal) is
    beyond the kernels' bound."""
    radius = torch.as_tensor(radius, dtype=torch.float64, device=cells.device).expand(cells.shape[0])
    faces = torch.stack(
        [
            torch.linalg.cross(cells[:, 1], cells[:, 2]),
            torch.linalg.cross(cells[:, 2], cells[:, 0]),
            torch.linalg.cross(cells[:, 0], cells[:, 1]),
        ],
        dim=1,
    )
    spacing = volume[:, None] / faces.norm(dim=2)  # [B, 3] distances between lattice planes
    bound = counts.to(spacing) * (2 * radius[:, None] / spacing + 2).prod(dim=1)
    over = bound > MAX_NEIGHBOURS_PER_ATOM
    if bool(over.any()):
        b = _first_bad_row(over)
        sp = ", ".join(f"{float(x):.4g}" for x in spacing[b])
        raise ValueError(
            f"{op}: {cell(b)} is too small or too flat for a {float(radius[b]):.4g} Angstrom neighbour search: plane "
            f"spacings {sp} Angstrom, volume {float(volume[b]):.4g} Angstrom^3 for {int(counts[b])} atoms give up "
            f"to {float(bound[b]):.3g} periodic neighbours per atom (the limit is {MAX_NEIGHBOURS_PER_ATOM:.0e}); "
            "the cell is degenerate or unphysically dense"
        )


def _check_params(params: EADParams | None, op: str) -> EADParams:
    if params is None:
        return _DEFAULT_PARAMS
    if not isinstance(params, EADParams):
        raise ValueError(f"{op}: params must be an srd.EADParams, got {type(params).__name__}")
    return params


def _check_backend(backend: str, op: str) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"{op}: backend must be one of {_BACKENDS}, got {backend!r}")
    return backend


# ------------------------------------------------------------------------------------------------
# The descriptor
# ------------------------------------------------------------------------------------------------
def ead_batch(
    positions: torch.Tensor,
    numbers: torch.Tensor,
    cells: torch.Tensor,
    ptr: torch.Tensor,
    *,
    params: EADParams | None = None,
    backend: str = "native",
    check: bool = True,
) -> torch.Tensor:
    """EAD features of every atom of a ragged batch of crystals.

    Args:
        positions: [N, 3] float32/float64 Cartesian positions (Angstrom); differentiable.
        numbers: [N] integer atomic numbers (1..118); any integer dtype (passed to the op as int64).
        cells: [B, 3, 3] lattice vectors as rows (Angstrom), same dtype as positions; differentiable.
        ptr: [B + 1] int64 offsets: the atoms of crystal b are positions[ptr[b]:ptr[b + 1]].
        params: descriptor grid (default: SPEC section 1).
        backend: "native" (fused C++/CUDA kernels) or "torch" (pure PyTorch reference, the test oracle; it
            never reaches the op, so nothing checks the shapes, dtypes and devices it is given).
        check: validate the values of the inputs (:func:`validate_batch`: finite, non-singular cells, atomic
            numbers, ptr, the image-search bound). Hot loops that validated a batch once and only move
            positions (reconstruction) pass False; shapes, dtypes and devices are always checked, by the op
            itself.

    Returns:
        [N, (lmax + 1) * len(etas) * len(mus)] features laid out [L][eta][mu] (mu fastest); [N, 300]
        for the default grid. Gradients flow to positions and cells.
    """
    _check_tensors("srd.ead_batch", positions=positions, numbers=numbers, cells=cells, ptr=ptr)
    return _ead_batch(
        positions, numbers, cells, ptr, params, backend, check, op="srd.ead_batch", single=False
    )


def _ead_batch(
    positions, numbers, cells, ptr, params, backend, check, *, op: str, single: bool
) -> torch.Tensor:
    """ead_batch / ead once the arguments are known to be tensors."""
    params = _check_params(params, op)
    _check_backend(backend, op)
    _check_kernels(op, positions, numbers, cells, ptr)
    numbers = _as_int64(numbers)
    if check:
        validate_batch(positions, numbers, cells, ptr, op=op, radius=params.reach, single=single)
    if backend == "torch":
        from .reference import ead_batch_reference

        return ead_batch_reference(positions, numbers, cells, ptr, params=params)
    features, _ = torch.ops.srd.ead_forward(positions, numbers, cells, ptr, *params.op_args())
    return features


def ead(
    positions: torch.Tensor,
    numbers: torch.Tensor,
    cell: torch.Tensor,
    *,
    params: EADParams | None = None,
    backend: str = "native",
) -> torch.Tensor:
    """EAD features of every atom of one crystal.

    Args:
        positions: [n, 3] Cartesian positions (Angstrom).
        numbers: [n] integer atomic numbers.
        cell: [3, 3] lattice vectors as rows (Angstrom).
        params, backend: as in :func:`ead_batch`.

    Returns:
        [n, n_features] (300 for the default grid).
    """
    _check_tensors("srd.ead", positions=positions, numbers=numbers, cell=cell)
    # The one argument the op does not see as given: it gets cell[None] as its cells.
    if cell.shape != (3, 3):
        raise ValueError(f"srd.ead: cell must have shape [3, 3], got {list(cell.shape)}")
    n = positions.shape[0] if positions.dim() > 0 else 0  # the op refuses positions of the wrong shape
    ptr = torch.tensor([0, n], dtype=torch.int64, device=positions.device)
    return _ead_batch(
        positions, numbers, cell.unsqueeze(0), ptr, params, backend, True, op="srd.ead", single=True
    )


# ------------------------------------------------------------------------------------------------
# Minimum interatomic distance
# ------------------------------------------------------------------------------------------------
def nearest_pairs(
    positions: torch.Tensor, cells: torch.Tensor, ptr: torch.Tensor, *, check: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest pair of every crystal over all periodic images (integer search, no gradient).

    Returns:
        index [B, 2] int64 global atom ids (i, j) and shifts [B, 3] int64 with
        d = positions[j] - positions[i] + shifts @ cells[b] the shortest interatomic vector.
    """
    op = "srd.nearest_pairs"
    _check_tensors(op, positions=positions, cells=cells, ptr=ptr)
    _check_kernels(op, positions, cells, ptr)
    if check:
        # No image bound here: the search radius is the shortest cell vector, so its cost does not grow as
        # a cell shrinks (tiny cells cost the same as large ones of their shape) and the CPU ranges are
        # exact even for very oblique cells; srd.structures.cell_problem refuses degenerate input cells.
        validate_batch(positions, None, cells, ptr, op=op)
    return torch.ops.srd.nearest_pairs(positions.detach(), cells.detach(), ptr)


def min_distance(
    positions: torch.Tensor, cells: torch.Tensor, ptr: torch.Tensor, *, check: bool = True
) -> torch.Tensor:
    """Minimum interatomic distance d_min of every crystal (Angstrom), differentiable: [B].

    Self-images count (a one-atom cell gives its shortest lattice vector).
    """
    index, shifts = nearest_pairs(positions, cells, ptr, check=check)
    d = (
        positions[index[:, 1]]
        - positions[index[:, 0]]
        + torch.einsum("bk,bkl->bl", shifts.to(cells.dtype), cells)
    )
    return d.norm(dim=1)


# ------------------------------------------------------------------------------------------------
# Fake kernels and autograd (torch.library)
# ------------------------------------------------------------------------------------------------
@torch.library.register_fake("srd::ead_forward")
def _ead_forward_fake(positions, numbers, cells, ptr, etas, mus, cutoff, lmax, cumulative, skip_exponent):
    n = positions.shape[0]
    channels = len(etas) * len(mus)
    features = positions.new_empty((n, (lmax + 1) * channels))
    rho = positions.new_empty((n, 4 if lmax >= 1 else 1, channels))
    return features, rho


@torch.library.register_fake("srd::ead_backward")
def _ead_backward_fake(
    grad_features, positions, numbers, cells, ptr, rho, etas, mus, cutoff, lmax, cumulative, skip_exponent
):
    return torch.empty_like(positions), torch.empty_like(cells)


@torch.library.register_fake("srd::nearest_pairs")
def _nearest_pairs_fake(positions, cells, ptr):
    b = cells.shape[0]
    return (
        positions.new_empty((b, 2), dtype=torch.int64),
        positions.new_empty((b, 3), dtype=torch.int64),
    )


def _ead_setup_context(ctx, inputs, output):
    positions, numbers, cells, ptr, etas, mus, cutoff, lmax, cumulative, skip_exponent = inputs
    _, rho = output
    ctx.mark_non_differentiable(rho)
    ctx.save_for_backward(positions, numbers, cells, ptr, rho)
    ctx.grid = (etas, mus, cutoff, lmax, cumulative, skip_exponent)


def _ead_backward(ctx, grad_features, grad_rho):
    positions, numbers, cells, ptr, rho = ctx.saved_tensors
    grad_positions = grad_cells = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:
        if grad_features is None:
            grad_features = torch.zeros(
                (positions.shape[0], (ctx.grid[3] + 1) * len(ctx.grid[0]) * len(ctx.grid[1])),
                dtype=positions.dtype,
                device=positions.device,
            )
        gp, gc = torch.ops.srd.ead_backward(grad_features, positions, numbers, cells, ptr, rho, *ctx.grid)
        grad_positions = gp if ctx.needs_input_grad[0] else None
        grad_cells = gc if ctx.needs_input_grad[2] else None
    return grad_positions, None, grad_cells, None, None, None, None, None, None, None


torch.library.register_autograd("srd::ead_forward", _ead_backward, setup_context=_ead_setup_context)
