"""Stage 1, the descriptor: the EAD features of every atom and the nearest-pair search, as torch ops.

``ops`` wraps the fused C++/CUDA kernels (``torch.ops.srd.*``, registered by ``srd._C``) with input
validation and autograd; ``reference`` is the pure-PyTorch implementation (the test oracle and
``backend="torch"``); ``params`` is the grid (SPEC section 1). Needs torch and numpy only (no pymatgen).
"""

from __future__ import annotations

from .ops import (
    MAX_NEIGHBOURS_PER_ATOM,
    ead,
    ead_batch,
    has_cuda_kernels,
    min_distance,
    nearest_pairs,
    validate_batch,
)
from .params import EADParams

__all__ = [
    "EADParams",
    "MAX_NEIGHBOURS_PER_ATOM",
    "ead",
    "ead_batch",
    "has_cuda_kernels",
    "min_distance",
    "nearest_pairs",
    "validate_batch",
]
