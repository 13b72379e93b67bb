"""Where each block of R lives (SPEC section 2), and the constants of R."""

from __future__ import annotations

from dataclasses import dataclass

#: The EAD block of R is divided by this (SPEC section 2).
EAD_SCALE = 1e6
#: Composition block covers Z = 1..96 (H..Cm).
N_ELEMENTS = 96
#: Largest number of atoms per crystal of each benchmark (the size entry of R is n / n_max).
DATASET_N_MAX = {"perov_5": 5, "carbon_24": 24, "mp_20": 20}


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where each block of R lives, for a descriptor with ``n_features`` per-atom features."""

    n_features: int = 300

    @property
    def ead(self) -> slice:
        return slice(0, 2 * self.n_features)

    @property
    def ead_max(self) -> slice:
        return slice(0, self.n_features)

    @property
    def ead_min(self) -> slice:
        return slice(self.n_features, 2 * self.n_features)

    @property
    def dmin(self) -> int:
        return 2 * self.n_features

    @property
    def lattice(self) -> slice:
        return slice(2 * self.n_features + 1, 2 * self.n_features + 7)

    @property
    def continuous(self) -> slice:
        """EAD, d_min and lattice: the min-max scaled part."""
        return slice(0, 2 * self.n_features + 7)

    @property
    def target(self) -> slice:
        """EAD and d_min: what reconstruction matches."""
        return slice(0, 2 * self.n_features + 1)

    @property
    def composition(self) -> slice:
        s = 2 * self.n_features + 7
        return slice(s, s + N_ELEMENTS)

    @property
    def size(self) -> int:
        return 2 * self.n_features + 7 + N_ELEMENTS

    @property
    def dim(self) -> int:
        return 2 * self.n_features + 8 + N_ELEMENTS

    def blocks(self) -> dict[str, tuple[int, int]]:
        """Named [start, stop) ranges of every block (saved in feature files and checkpoints)."""
        return {
            "ead_max": (self.ead_max.start, self.ead_max.stop),
            "ead_min": (self.ead_min.start, self.ead_min.stop),
            "dmin": (self.dmin, self.dmin + 1),
            "lattice": (self.lattice.start, self.lattice.stop),
            "composition": (self.composition.start, self.composition.stop),
            "size": (self.size, self.size + 1),
        }
