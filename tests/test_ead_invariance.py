"""Invariances of the per-atom EAD: translation, rotation, permutation, supercell; on every device (the
``device`` fixture: CPU, and CUDA where there is a GPU and srd has its kernels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import srd
from helpers import real_crystals


def _t(s, device="cpu"):
    return (
        torch.tensor(s.cart_coords, device=device),
        torch.tensor(s.atomic_numbers, device=device),
        torch.tensor(s.lattice.matrix, device=device),
    )


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max()))


def _rotation(seed=0):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return torch.tensor(q if np.linalg.det(q) > 0 else -q)


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24", "mp_20"])
def test_translation_and_wrapping(dataset, device):
    s = real_crystals(dataset, 1)[0]
    pos, num, cell = _t(s, device)
    ref = srd.ead(pos, num, cell)
    _close(srd.ead(pos + torch.tensor([0.37, -1.2, 5.9], dtype=pos.dtype, device=device), num, cell), ref)
    # Atoms moved by whole lattice vectors (unwrapped input) describe the same crystal.
    shift = torch.randint(-3, 4, (len(s), 3)).double().to(device) @ cell
    _close(srd.ead(pos + shift, num, cell), ref)


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24", "mp_20"])
def test_rotation(dataset, device):
    s = real_crystals(dataset, 1)[0]
    pos, num, cell = _t(s, device)
    rot = _rotation().to(device)
    _close(srd.ead(pos @ rot.T, num, cell @ rot.T), srd.ead(pos, num, cell))


@pytest.mark.parametrize("dataset", ["perov_5", "mp_20"])
def test_permutation(dataset, device):
    s = real_crystals(dataset, 1)[0]
    pos, num, cell = _t(s, device)
    perm = torch.randperm(len(s)).to(device)
    _close(srd.ead(pos[perm], num[perm], cell), srd.ead(pos, num, cell)[perm])


def test_supercell_and_lattice_basis(device):
    s = real_crystals("mp_20", 1)[0]
    pos, num, cell = _t(s, device)
    ref = srd.ead(pos, num, cell)
    sc = s.copy()
    sc.make_supercell([2, 1, 2])
    spos, snum, scell = _t(sc, device)
    got = srd.ead(spos, snum, scell)
    # Each supercell atom has the features of the original atom it copies.
    orig = [
        int(
            np.argmin(
                np.linalg.norm(
                    ((s.lattice.get_fractional_coords(p) - s.frac_coords + 0.5) % 1.0) - 0.5, axis=1
                )
            )
        )
        for p in sc.cart_coords
    ]
    _close(got, ref[orig])
    # A different (unimodular) basis of the same lattice gives the same crystal.
    m = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 2, 1]], dtype=torch.float64, device=device)
    _close(srd.ead(pos, num, m @ cell), ref)
