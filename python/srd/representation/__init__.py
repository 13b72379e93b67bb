"""The crystal representation R (SPEC section 2): encoding, scaling, decoding, feature files.

R (704 values for the default grid), in this order:

    EAD block   [max over atoms (300) | min over atoms (300)] of the per-atom EAD features, / 1e6
    d_min       minimum interatomic distance over all periodic pairs (Angstrom)             1
    lattice     a, b, c (Angstrom), alpha, beta, gamma (radians)                            6
    composition atom fractions for Z = 1..96                                                96
    size        n / n_max                                                                   1

The 607 continuous values (EAD, d_min, lattice) are min-max scaled to [0, 1] with statistics of the
training split (:class:`ScalingStats`); composition and size are left as they are.

The package holds one module per concept: layout (blocks and constants), scaling, encode, decode,
features (the file format) and featurize (files -> features, with the cache).
"""

from __future__ import annotations

from .decode import (
    COMPOSITION_DECODINGS,
    Decoded,
    Rejected,
    decode,
    decoded_from_structures,
    largest_remainder,
    nearest_counts,
)
from .encode import encode_structures, pooled_ead, prepare_structure
from .features import FEATURE_VERSION, Features
from .featurize import cache_dir, dataset_from_path, featurize
from .layout import DATASET_N_MAX, EAD_SCALE, N_ELEMENTS, Layout
from .scaling import ScalingStats

__all__ = [
    "EAD_SCALE",
    "N_ELEMENTS",
    "DATASET_N_MAX",
    "Layout",
    "ScalingStats",
    "Decoded",
    "Rejected",
    "Features",
    "encode_structures",
    "decode",
    "largest_remainder",
    "nearest_counts",
    "COMPOSITION_DECODINGS",
    "decoded_from_structures",
    "featurize",
    "prepare_structure",
    "pooled_ead",
    "FEATURE_VERSION",
    "dataset_from_path",
    "cache_dir",
]
