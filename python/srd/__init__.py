"""srd: StructRepDiff — crystal generation by diffusion in an Embedded-Atom-Density representation space.

The fused EAD descriptor (C++/CUDA, ``torch.ops.srd``) is exposed as :func:`ead` / :func:`ead_batch`;
the pure-PyTorch reference is ``backend="torch"``.
"""

from __future__ import annotations

import torch  # noqa: F401  (must be imported before the extension)

from . import _C  # noqa: F401
from .descriptor import EADParams, ead, ead_batch, has_cuda_kernels, min_distance, nearest_pairs

__version__ = "0.1.0"

__all__ = [
    "EADParams",
    "__version__",
    "ead",
    "ead_batch",
    "has_cuda_kernels",
    "min_distance",
    "nearest_pairs",
]
