"""Composition and structure validity, exactly as CDVAE's ``scripts/eval_utils.py`` defines them.

* Composition validity (:func:`smact_validity`): SMACT charge neutrality with the Pauling
  electronegativity test; a single element and an all-metal alloy count as valid.
* Structure validity (:func:`structure_validity`): the smallest distance between two *different* atoms
  (minimum-image convention, pymatgen's ``distance_matrix``) is at least 0.5 A and the cell volume is at
  least 0.1 A^3. As in CDVAE, an atom's distance to its own periodic images is not tested (the diagonal
  of the distance matrix is padded); ``include_self_images=True`` tests it as well.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Sequence

import numpy as np
from pymatgen.core import Element, Structure

__all__ = [
    "smact_version",
    "smact_validity",
    "reduced_composition",
    "composition_validity",
    "structure_validity",
]


def smact_version() -> str:
    """The installed SMACT version (composition validity depends on its oxidation-state tables)."""
    from importlib.metadata import version

    return version("smact")


def _symbol(z: int | str) -> str:
    return z if isinstance(z, str) else Element.from_Z(int(z)).symbol


@functools.lru_cache(maxsize=65536)
def _smact_validity_cached(
    symbols: tuple[str, ...], counts: tuple[int, ...], use_pauling_test: bool, include_alloys: bool
) -> bool:
    import smact
    from smact.screening import pauling_test

    space = smact.element_dictionary(symbols)
    smact_elems = [e[1] for e in space.items()]
    electronegs = [e.pauling_eneg for e in smact_elems]
    ox_combos = [e.oxidation_states for e in smact_elems]
    if len(set(symbols)) == 1:
        return True
    if include_alloys and all(s in smact.metals for s in symbols):
        return True
    threshold = int(np.max(counts))
    stoichs = [(c,) for c in counts]
    for ox_states in itertools.product(*ox_combos):
        cn_e, cn_r = smact.neutral_ratios(ox_states, stoichs=stoichs, threshold=threshold)
        if not cn_e:
            continue
        if use_pauling_test:
            try:
                electroneg_ok = pauling_test(ox_states, electronegs)
            except TypeError:  # no electronegativity data: assume it is fine (as CDVAE)
                electroneg_ok = True
        else:
            electroneg_ok = True
        # CDVAE collects (symbols, ox_states, ratio) for every ratio and returns True when any exists.
        if electroneg_ok and len(cn_r) > 0:
            return True
    return False


def smact_validity(
    elements: Sequence[int | str],
    counts: Sequence[int],
    use_pauling_test: bool = True,
    include_alloys: bool = True,
) -> bool:
    """CDVAE's ``smact_validity``: is this composition charge-neutral for some oxidation states?

    Args:
        elements: the distinct elements (atomic numbers or symbols), in CDVAE's order (ascending Z).
        counts: the number of atoms of each element, divided by their gcd (see :func:`reduced_composition`).
        use_pauling_test: also require the oxidation states to pass SMACT's Pauling electronegativity test
            (a missing electronegativity passes, as in CDVAE).
        include_alloys: a composition of metals only is valid.

    The result is the same as CDVAE's (the search stops at the first valid oxidation-state combination
    instead of collecting all of them); results are memoised per composition.
    """
    if len(elements) != len(counts) or len(elements) == 0:
        raise ValueError(
            f"smact_validity: need one count per element, got {list(elements)} and {list(counts)}"
        )
    symbols = tuple(_symbol(z) for z in elements)
    return _smact_validity_cached(
        symbols, tuple(int(c) for c in counts), bool(use_pauling_test), bool(include_alloys)
    )


def reduced_composition(atomic_numbers: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(elements sorted by Z, counts divided by their gcd), as CDVAE's ``Crystal.get_composition``."""
    counter = Counter(int(z) for z in atomic_numbers)
    if not counter:
        raise ValueError("reduced_composition: no atoms")
    elems = tuple(sorted(counter))
    counts = np.array([counter[z] for z in elems])
    counts = counts // np.gcd.reduce(counts)
    return elems, tuple(int(c) for c in counts)


def composition_validity(structure_or_numbers: Structure | Sequence[int]) -> bool:
    """SMACT composition validity of a crystal (or of a list of atomic numbers), as CDVAE computes it.

    An element that SMACT does not know (no data) makes the composition invalid.
    """
    numbers = (
        structure_or_numbers.atomic_numbers
        if isinstance(structure_or_numbers, Structure)
        else structure_or_numbers
    )
    elems, counts = reduced_composition(numbers)
    try:
        return smact_validity(elems, counts)
    except (KeyError, NameError, ValueError):
        return False


def structure_validity(
    structure: Structure, cutoff: float = 0.5, min_volume: float = 0.1, include_self_images: bool = False
) -> bool:
    """CDVAE's ``structure_validity``: all interatomic distances >= ``cutoff`` (A), volume >= ``min_volume``.

    Distances are pymatgen's minimum-image distances between different sites; with
    ``include_self_images`` the shortest lattice translation (an atom's distance to its own image) must
    also be >= ``cutoff`` (CDVAE does not test it). A crystal with non-finite coordinates or lattice is not
    valid.
    """
    if not np.isfinite(structure.volume) or structure.volume < min_volume:
        return False
    # pymatgen reports 1e50 for every distance to an atom with NaN coordinates (which would pass): a crystal
    # with non-finite coordinates or lattice is never valid (CDVAE's script would count it valid).
    if not (np.isfinite(structure.lattice.matrix).all() and np.isfinite(structure.frac_coords).all()):
        return False
    dist = np.array(structure.distance_matrix, dtype=float)
    if include_self_images:
        lat = structure.lattice
        self_min = min(float(np.linalg.norm(v)) for v in lat.get_lll_reduced_lattice().matrix)
        np.fill_diagonal(dist, self_min)
    else:
        dist = dist + np.diag(np.full(dist.shape[0], cutoff + 10.0))
    return bool(dist.min() >= cutoff)
