"""Crystals -> raw R: the checks and canonicalisation before encoding, pooled EAD, encoding."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pymatgen.core import Structure

from ..descriptor import EADParams, ead_batch, min_distance
from ..structures import (
    Batch,
    canonicalize,
    cell_problem,
    close_pair_problem,
)
from ..utils import progress
from .layout import EAD_SCALE, N_ELEMENTS, Layout


# ------------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------------
def prepare_structure(
    structure: Structure, *, n_max: int, niggli: bool = True, where: str = "crystal"
) -> Structure:
    """Check that a crystal can be represented and apply CDVAE's canonicalisation (Niggli reduction).

    Raises ValueError with the reason when the crystal is out of range (too many atoms, Z > 96) or
    unphysical (a volume per atom, cell height or interatomic distance below the floors of
    :mod:`srd.structures`: ``MIN_VOLUME_PER_ATOM``, ``MIN_CELL_HEIGHT``, ``MIN_PAIR_DISTANCE``).
    """
    if len(structure) == 0:
        raise ValueError(f"{where}: the structure has no atoms")
    if len(structure) > n_max:
        raise ValueError(f"{where}: {len(structure)} atoms exceed n_max = {n_max}")
    zmax = max(structure.atomic_numbers)
    if zmax > N_ELEMENTS:
        el = [sp for sp in structure.species if sp.Z == zmax][0]
        raise ValueError(
            f"{where}: element {el} (Z = {zmax}) is beyond Z = {N_ELEMENTS}, the composition block of R"
        )
    # Volume first (Niggli reduction of a degenerate cell is itself unreliable), heights of the cell used.
    problem = cell_problem(structure.lattice.matrix, len(structure))
    if problem is None:
        structure = canonicalize(structure, niggli=niggli) if niggli else structure
        problem = cell_problem(structure.lattice.matrix, len(structure)) or close_pair_problem(structure)
    if problem:
        raise ValueError(f"{where}: {problem}")
    return structure


def pooled_ead(features: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """[max over atoms | min over atoms] of per-atom features, per crystal: [B, 2 F] (differentiable)."""
    counts = (ptr[1:] - ptr[:-1]).tolist()
    if len(set(counts)) == 1:  # equal sizes (e.g. all restarts of one crystal): one reshape, no loop
        f = features.reshape(len(counts), counts[0], -1)
        return torch.cat([f.max(dim=1).values, f.min(dim=1).values], dim=1)
    lengths = ptr[1:] - ptr[:-1]
    return torch.cat(
        [
            torch.segment_reduce(features, "max", lengths=lengths, axis=0),
            torch.segment_reduce(features, "min", lengths=lengths, axis=0),
        ],
        dim=1,
    )


def encode_structures(
    structures: Sequence[Structure],
    *,
    n_max: int,
    params: EADParams | None = None,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float64,
    show_progress: bool = False,
    with_ead: bool = True,
) -> torch.Tensor:
    """Raw (unscaled) R of already-prepared structures: [M, layout.dim] float64.

    The structures are used as given (call :func:`prepare_structure` first for CDVAE's Niggli
    canonicalisation). ``with_ead=False`` leaves the EAD block and d_min at zero (for checks of the
    other blocks that need no descriptor).
    """
    params = params or EADParams()
    layout = Layout(params.n_features)
    out = torch.zeros((len(structures), layout.dim), dtype=torch.float64)
    bar = progress(total=len(structures), desc="featurize", unit="crystal", disable=not show_progress)
    for start in range(0, len(structures), batch_size):
        chunk = structures[start : start + batch_size]
        rows = out[start : start + len(chunk)]
        if with_ead:
            b = Batch.from_structures(chunk, dtype=dtype)
            with torch.no_grad():
                feats = ead_batch(b.positions, b.numbers, b.cells, b.ptr, params=params)
                rows[:, layout.ead] = pooled_ead(feats, b.ptr).double() / EAD_SCALE
                rows[:, layout.dmin] = min_distance(b.positions, b.cells, b.ptr).double()
        for k, s in enumerate(chunk):
            lat = s.lattice
            rows[k, layout.lattice] = torch.tensor(
                [*lat.abc, *(math.radians(a) for a in lat.angles)], dtype=torch.float64
            )
            comp = rows[k, layout.composition]
            for z in s.atomic_numbers:
                comp[z - 1] += 1.0
            comp /= len(s)
            rows[k, layout.size] = len(s) / n_max
        bar.update(len(chunk))
    bar.close()
    return out
