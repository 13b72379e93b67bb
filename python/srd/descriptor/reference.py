"""Pure-PyTorch EAD descriptor: the test oracle and ``backend="torch"``.

Written for clarity, not speed: every neighbour pair within the cutoff is materialised, the Gaussians
of all pairs are a [pairs, channels] tensor, and gradients come from autograd. The fused kernels in
csrc/ must agree with it (tests/test_ead_*.py).
"""

from __future__ import annotations

import math

import torch

from .params import EADParams

__all__ = ["ead_batch_reference", "neighbor_pairs_reference", "image_shifts"]


def image_shifts(cell: torch.Tensor, radius: float, frac_span: float = 1.0) -> torch.Tensor:
    """Integer image vectors n (int64, [S, 3]) covering every image within ``radius``.

    A point at fractional offset df + n can be within ``radius`` only if |df_k + n_k| <= radius / h_k
    for every k, where h_k is the spacing of the lattice planes normal to the reciprocal vector k
    (h_k = V / |a_l x a_m|). With |df_k| < ``frac_span`` that bounds |n_k| <= ceil(radius / h_k + span).
    """
    h = cell.detach().double()
    vol = torch.linalg.det(h).abs()
    cross = torch.stack(
        [torch.linalg.cross(h[1], h[2]), torch.linalg.cross(h[2], h[0]), torch.linalg.cross(h[0], h[1])]
    )
    spacing = vol / cross.norm(dim=1)
    nmax = [int(math.ceil(radius / float(s) + frac_span)) for s in spacing]
    axes = [torch.arange(-m, m + 1, dtype=torch.int64) for m in nmax]
    return torch.cartesian_prod(*axes).reshape(-1, 3)


def neighbor_pairs_reference(
    positions: torch.Tensor, cell: torch.Tensor, radius: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All (i, j, n) with 0 < |pos_j + n @ cell - pos_i| <= radius for one crystal.

    Positions are wrapped into the cell first (so that the image box is small); the returned shifts are
    relative to the *unwrapped* input positions: d = pos[j] - pos[i] + shift @ cell.

    Returns:
        i [P], j [P] (int64) and shifts [P, 3] (int64).
    """
    pos = positions.detach()
    cell_d = cell.detach()
    frac = torch.linalg.solve(cell_d.T, pos.T).T  # pos = frac @ cell
    offset = torch.floor(frac)
    wrapped = pos - offset @ cell_d
    n = pos.shape[0]
    shifts = image_shifts(cell_d, radius)
    base = wrapped[None, :, :] - wrapped[:, None, :]  # [n(i), n(j), 3]
    img = shifts.to(pos.dtype) @ cell_d  # [S, 3]
    d = base[:, :, None, :] + img[None, None, :, :]  # [n, n, S, 3]
    r2 = (d * d).sum(-1)
    mask = (r2 <= radius * radius) & (r2 > 0)
    ii, jj, ss = torch.nonzero(mask, as_tuple=True)
    off = offset.to(torch.int64)
    total_shift = shifts[ss] + off[ii] - off[jj]
    del n
    return ii, jj, total_shift


def ead_batch_reference(
    positions: torch.Tensor,
    numbers: torch.Tensor,
    cells: torch.Tensor,
    ptr: torch.Tensor,
    *,
    params: EADParams,
    pair_chunk: int = 20000,
) -> torch.Tensor:
    """EAD features [N, n_features] of a ragged batch, in plain PyTorch (differentiable by autograd).

    Same contract as :func:`srd.ead_batch`. Terms with eta (r - mu)^2 > params.skip_exponent are dropped,
    exactly by that rule (the fused kernels drop a subset of them).
    """
    dtype = positions.dtype
    etas = torch.tensor(params.etas, dtype=dtype, device=positions.device)
    mus = torch.tensor(params.mus, dtype=dtype, device=positions.device)
    rc = float(params.cutoff)
    n_eta, n_mu = len(params.etas), len(params.mus)
    cumulative = 1.0 if params.l1 == "cumulative" else 0.0
    out = []
    for b in range(cells.shape[0]):
        s, e = int(ptr[b]), int(ptr[b + 1])
        pos, cell, z = positions[s:e], cells[b], numbers[s:e].to(dtype)
        n = e - s
        ii, jj, shift = neighbor_pairs_reference(pos, cell, rc)
        rho0 = pos.new_zeros((n, n_eta * n_mu))
        rhov = pos.new_zeros((n, 3, n_eta * n_mu))
        for c0 in range(0, ii.shape[0], pair_chunk):
            i, j, sh = ii[c0 : c0 + pair_chunk], jj[c0 : c0 + pair_chunk], shift[c0 : c0 + pair_chunk]
            d = pos[j] - pos[i] + sh.to(dtype) @ cell  # [P, 3], differentiable in pos and cell
            r = d.norm(dim=1)
            fc = 0.5 * (torch.cos(math.pi * r / rc) + 1.0)
            arg = etas[None, :, None] * (r[:, None, None] - mus[None, None, :]) ** 2  # [P, E, M]
            g = torch.exp(-arg)
            if math.isfinite(params.skip_exponent):
                g = torch.where(arg > params.skip_exponent, torch.zeros_like(g), g)
            w = (z[j] * fc)[:, None] * g.reshape(g.shape[0], -1)  # [P, C]
            rho0 = rho0.index_add(0, i, w)
            rhov = rhov.index_add(0, i, w[:, None, :] * d[:, :, None])
        f0 = rho0**2
        if params.lmax == 0:
            out.append(f0)
        else:
            f1 = (cumulative * rho0**2 + (rhov**2).sum(dim=1)) / rc**2
            out.append(torch.cat([f0, f1], dim=1))
    return torch.cat(out, dim=0)
