"""An independent float64 brute-force EAD for the tests (NumPy, no code shared with srd).

For every centre atom, every atom of a generous box of periodic images is visited; nothing is skipped
(every Gaussian term is computed), so this is the "dense sum" the fast kernels are compared with.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def image_box(cell: np.ndarray, cutoff: float) -> np.ndarray:
    """All integer translations n with |n_k| <= ceil(cutoff / spacing_k) + 1 (a superset of what matters)."""
    vol = abs(np.linalg.det(cell))
    spacing = [vol / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
    reach = [math.ceil(cutoff / s) + 1 for s in spacing]
    return np.array(list(itertools.product(*[range(-m, m + 1) for m in reach])), dtype=np.float64)


def ead_oracle(positions, numbers, cell, etas, mus, cutoff, lmax=1, cumulative=True) -> np.ndarray:
    """EAD features [n, (lmax+1) * len(etas) * len(mus)] of one crystal, float64, by brute force."""
    pos = np.asarray(positions, dtype=np.float64)
    z = np.asarray(numbers, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    etas = np.asarray(etas, dtype=np.float64)
    mus = np.asarray(mus, dtype=np.float64)
    shifts = image_box(cell, cutoff) @ cell  # [S, 3]
    n = len(pos)
    out = []
    for i in range(n):
        d = (pos[None, :, :] + shifts[:, None, :] - pos[i][None, None, :]).reshape(-1, 3)  # [S*n, 3]
        zj = np.tile(z, len(shifts))
        r = np.linalg.norm(d, axis=1)
        keep = (r > 0) & (r <= cutoff)
        d, r, zj = d[keep], r[keep], zj[keep]
        fc = 0.5 * (np.cos(np.pi * r / cutoff) + 1.0)
        g = np.exp(-etas[None, :, None] * (r[:, None, None] - mus[None, None, :]) ** 2).reshape(len(r), -1)
        w = (zj * fc)[:, None] * g  # [P, C]
        rho0 = w.sum(axis=0)
        rhov = np.einsum("pc,pk->kc", w, d)
        f = [rho0**2]
        if lmax >= 1:
            f.append(((1.0 if cumulative else 0.0) * rho0**2 + (rhov**2).sum(axis=0)) / cutoff**2)
        out.append(np.concatenate(f))
    return np.stack(out)


def min_distance_oracle(positions, cell) -> float:
    pos = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    radius = min(np.linalg.norm(cell, axis=1))
    shifts = image_box(cell, radius) @ cell
    d = pos[None, :, None, :] + shifts[None, None, :, :] - pos[:, None, None, :]
    r = np.linalg.norm(d, axis=-1)
    return float(r[r > 0].min())
