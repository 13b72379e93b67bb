"""The straightforward way to compute the EAD, for the benchmarks: a box of periodic images through
PyTorch autograd, as the method's authors computed it. Every (atom, image atom) distance of the box is a
tensor entry and every Gaussian of every entry is materialised ([n, n * images, channels])."""

from __future__ import annotations

import math

import torch

from srd.descriptor.reference import image_shifts


def ead_dense_box(positions, numbers, cell, params) -> torch.Tensor:
    """Per-atom EAD [n, n_features] of one crystal; differentiable in positions and cell."""
    rc = params.cutoff
    shifts = image_shifts(cell.detach(), rc).to(positions.dtype)  # [S, 3]
    images = (positions[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3)  # [S*n, 3]
    z = numbers.to(positions.dtype).repeat(shifts.shape[0])
    d = images[None, :, :] - positions[:, None, :]  # [n, S*n, 3]
    r2 = (d * d).sum(-1)
    inside = (r2 > 1e-12) & (r2 <= rc * rc)
    r = torch.sqrt(torch.where(inside, r2, torch.ones_like(r2)))  # no sqrt(0) in the graph
    fc = torch.where(inside, 0.5 * (torch.cos(math.pi * r / rc) + 1.0), torch.zeros_like(r))
    etas = torch.tensor(params.etas, dtype=positions.dtype)
    mus = torch.tensor(params.mus, dtype=positions.dtype)
    g = torch.exp(-etas[:, None] * (r[..., None, None] - mus) ** 2).flatten(-2)  # [n, S*n, C]
    w = (z * fc)[..., None] * g
    rho0 = w.sum(1)
    rhov = torch.einsum("nsc,nsk->nkc", w, d)
    f0 = rho0**2
    f1 = ((1.0 if params.l1 == "cumulative" else 0.0) * rho0**2 + (rhov**2).sum(1)) / rc**2
    return torch.cat([f0, f1], dim=1)
