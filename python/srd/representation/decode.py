"""R -> what it fixes directly (atom count, composition, lattice) and the target of reconstruction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pymatgen.core import Structure

from ..descriptor import EADParams
from ..structures import (
    cell_problem,
)
from .encode import encode_structures
from .layout import N_ELEMENTS, Layout
from .scaling import ScalingStats


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------
@dataclass
class Decoded:
    """What R fixes directly: atom count, composition, lattice; plus the target of reconstruction."""

    n_atoms: int
    numbers: list[int]  # atomic numbers, sorted ascending, len == n_atoms
    lengths: tuple[float, float, float]  # Angstrom
    angles: tuple[float, float, float]  # degrees
    target: torch.Tensor  # raw [EAD / 1e6 (2F), d_min] float64

    @property
    def formula(self) -> str:
        from pymatgen.core import Composition, Element

        return Composition(
            {Element.from_Z(z): self.numbers.count(z) for z in set(self.numbers)}
        ).reduced_formula

    def lattice_matrix(self) -> np.ndarray:
        from pymatgen.core import Lattice

        return Lattice.from_parameters(*self.lengths, *self.angles).matrix


@dataclass
class Rejected:
    """A vector that does not decode to a crystal, and why."""

    reason: str


def decoded_from_structures(
    structures: Sequence[Structure],
    *,
    n_max: int,
    params: EADParams | None = None,
    show_progress: bool = False,
) -> list[Decoded]:
    """Ground-truth reconstruction targets: what :func:`decode` would give for these (prepared) crystals,
    taken exactly from the structures (the Table 1 protocol reconstructs from the true R)."""
    params = params or EADParams()
    layout = Layout(params.n_features)
    raw = encode_structures(structures, n_max=n_max, params=params, show_progress=show_progress)
    return [
        Decoded(
            len(s),
            sorted(s.atomic_numbers),
            tuple(float(x) for x in s.lattice.abc),
            tuple(float(x) for x in s.lattice.angles),
            raw[k, layout.target].clone(),
        )
        for k, s in enumerate(structures)
    ]


def largest_remainder(fractions: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to n, proportional to ``fractions`` (>= 0, sum > 0), by largest remainder.

    Ties go to the lower index (lower Z), so the result is deterministic.
    """
    f = np.asarray(fractions, dtype=np.float64)
    quota = f / f.sum() * n
    counts = np.floor(quota + 1e-9).astype(np.int64)
    left = n - int(counts.sum())
    if left > 0:
        rem = quota - counts
        order = np.lexsort((np.arange(len(f)), -rem))  # largest remainder first, then lower index
        counts[order[:left]] += 1
    return counts


def nearest_counts(fractions: np.ndarray, n: int) -> np.ndarray:
    """Integer counts c >= 0 summing to n that minimise sum_z (c_z - n * f_z)^2, *without* renormalising f.

    This is the composition block of the nearest decodable R. It equals largest-remainder rounding when
    the fractions sum to 1, but differs for generated vectors whose fractions carry a spread of small
    positive noise over many elements (clipping x0 to the data range makes that noise one-sided):
    renormalising shrinks the real fractions and lets the noise win seats, while the projection gives a
    seat to an element only where its own quota earns it. Greedy is exact for this separable convex
    problem (adding an atom to z costs 2 (c_z - q_z) + 1); ties go to the lower Z.
    """
    q = np.asarray(fractions, dtype=np.float64) * n
    counts = np.zeros(len(q), dtype=np.int64)
    for _ in range(n):
        counts[int(np.argmax(q - counts))] += 1
    return counts


COMPOSITION_DECODINGS = ("largest-remainder", "nearest")


def _lattice_problem(lengths: np.ndarray, angles_deg: np.ndarray) -> str | None:
    if not np.all(np.isfinite(lengths)) or not np.all(np.isfinite(angles_deg)):
        return "non-finite lattice parameters"
    if np.any(lengths <= 0):
        return f"non-positive lattice length {lengths.round(4).tolist()}"
    if np.any(angles_deg <= 0) or np.any(angles_deg >= 180):
        return f"lattice angle outside (0, 180) degrees: {angles_deg.round(3).tolist()}"
    a, b, c = np.radians(angles_deg)
    # Gram determinant > 0  <=>  the three vectors span a cell of positive volume.
    g = 1 - np.cos(a) ** 2 - np.cos(b) ** 2 - np.cos(c) ** 2 + 2 * np.cos(a) * np.cos(b) * np.cos(c)
    if g <= 1e-8:
        return f"angles {angles_deg.round(3).tolist()} do not form a cell of positive volume"
    return None


def decode(
    scaled: torch.Tensor, stats: ScalingStats, n_max: int, composition: str = "largest-remainder"
) -> list[Decoded | Rejected]:
    """Decode (generated) scaled R vectors into atom count, composition and lattice (SPEC section 2).

    n = clamp(round(size * n_max), 1, n_max); negative fractions -> 0, then counts summing to n, by
    ``composition``: "largest-remainder" (SPEC: renormalise, largest-remainder rounding) or "nearest"
    (:func:`nearest_counts`, the nearest composition without renormalising). A vector with no positive
    fraction or an impossible lattice is rejected.
    """
    if composition not in COMPOSITION_DECODINGS:
        raise ValueError(f"decode: composition must be one of {COMPOSITION_DECODINGS}, got {composition!r}")
    layout = stats.layout
    if scaled.dim() != 2 or scaled.shape[1] != layout.dim:
        raise ValueError(f"decode: expected R of shape [M, {layout.dim}], got {list(scaled.shape)}")
    raw = stats.unscale(scaled.detach().cpu())
    out: list[Decoded | Rejected] = []
    for row in raw:
        if not bool(torch.isfinite(row).all()):
            out.append(Rejected("non-finite values in R"))
            continue
        size = float(row[layout.size])
        n = int(min(max(round(size * n_max), 1), n_max))
        frac = np.clip(row[layout.composition].numpy(), 0.0, None)
        if frac.sum() <= 0:
            out.append(Rejected("no element: every composition fraction is <= 0"))
            continue
        counts = largest_remainder(frac, n) if composition == "largest-remainder" else nearest_counts(frac, n)
        numbers = [z + 1 for z in range(N_ELEMENTS) for _ in range(int(counts[z]))]
        lat = row[layout.lattice].numpy()
        lengths, angles = lat[:3], np.degrees(lat[3:])
        problem = _lattice_problem(lengths, angles)
        if problem is None:
            from pymatgen.core import Lattice

            problem = cell_problem(Lattice.from_parameters(*lengths, *angles).matrix, n)
        if problem:
            out.append(Rejected(problem))
            continue
        out.append(
            Decoded(
                n,
                numbers,
                tuple(float(x) for x in lengths),
                tuple(float(x) for x in angles),
                row[layout.target].clone(),
            )
        )
    return out
