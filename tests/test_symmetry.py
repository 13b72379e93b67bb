"""Symmetric starts, the symmetry projector and the final symmetrisation (srd.reconstruction.symmetry)."""

import numpy as np
import pytest
import torch

from helpers import DATA

sym = pytest.importorskip("srd.reconstruction.symmetry")


def _fcc_primitive(a=5.0):
    from pymatgen.core import Lattice

    return Lattice.from_parameters(a / 2**0.5, a / 2**0.5, a / 2**0.5, 60, 60, 60).matrix


def _orthorhombic():
    from pymatgen.core import Lattice

    return Lattice.from_parameters(5.1, 6.3, 7.7, 90, 90, 90).matrix


def test_lattice_groups_of_a_primitive_fcc_cell_include_fm3m_by_its_name():
    groups = sym.lattice_groups(_fcc_primitive())
    fm3m = [g for g in groups if g.number == 225]
    assert fm3m, "Fm-3m must fit a primitive fcc cell"
    assert fm3m[0].order == 48  # the point group; the centring is the primitive cell's own lattice
    # every operation is a lattice symmetry: integer rotations that keep the metric
    lat = _fcc_primitive()
    metric = lat @ lat.T
    for g in groups:
        assert np.allclose(g.rot, np.rint(g.rot))
        assert np.allclose(np.einsum("gji,jk,gkl->gil", g.rot, metric, g.rot), metric, atol=1e-6)


@pytest.mark.parametrize("lattice", [_fcc_primitive(), _orthorhombic()], ids=["fcc", "orthorhombic"])
@pytest.mark.parametrize("numbers", [[8, 8, 8, 22], [3, 3, 8, 8, 8, 8, 25, 25]], ids=["TiO3", "Li2Mn2O4"])
def test_a_symmetric_start_has_the_composition_lies_in_the_cell_and_is_symmetric(lattice, numbers):
    rng = np.random.default_rng(0)
    start = None
    for _ in range(5):
        start = sym.choose_start(lattice, numbers, rng, min_dist=1.0)
        if start is not None:
            break
    assert start is not None
    frac, group, src = start
    assert frac.shape == (len(numbers), 3)
    assert np.all((frac >= 0) & (frac < 1))
    # invariant under its group: every operation maps every atom onto an atom of the same element
    assert sym.site_permutations(group, frac, numbers) is not None
    assert src.shape == (group.order, len(numbers))
    for row in src:
        assert sorted(row.tolist()) == list(range(len(numbers)))
        assert [numbers[i] for i in row] == numbers
    # no two atoms closer than min_dist
    assert sym._min_periodic_distance(frac, frac, lattice, distinct=True) >= 1.0 - 1e-9


def test_the_projector_is_a_projection_onto_invariant_positions():
    lattice = _orthorhombic()
    numbers = [8] * 4 + [12] * 4
    rng = np.random.default_rng(1)
    frac, group, src = sym.choose_start(lattice, numbers, rng, min_dist=1.0)
    cell = torch.tensor(lattice).expand(len(numbers), 3, 3)
    proj = sym.SymmetryProjector([(0, group, src)], torch.float64, "cpu")
    pos = torch.tensor(frac @ lattice) + 0.2 * torch.randn(len(numbers), 3, dtype=torch.float64)
    proj.project_(pos, cell)
    once = pos.clone()
    proj.project_(pos, cell)
    assert torch.allclose(pos, once, atol=1e-10)
    f = pos.numpy() @ np.linalg.inv(lattice)
    assert sym.site_permutations(group, np.mod(f, 1.0), numbers, tol=1e-8) is not None


def _perov_targets(n):
    import pandas as pd
    from pymatgen.core import Structure

    from srd.representation import decoded_from_structures

    df = pd.read_csv(DATA / "perov_5" / "test.csv.gz", nrows=n)
    structures = [Structure.from_str(c, "cif") for c in df.cif]
    return structures, decoded_from_structures(structures, n_max=5), [str(x) for x in df.material_id]


def test_symmetrisation_never_raises_the_loss_it_reports(one_thread):
    from srd.reconstruction import ReconstructConfig
    from srd.reconstruction.algorithm import reconstruct

    _, targets, keys = _perov_targets(4)
    base = ReconstructConfig.preset("fast")
    plain = reconstruct(targets, keys, config=base)
    snapped = reconstruct(targets, keys, config=base.replace(symmetrize_tol=0.2))
    for p, s in zip(plain, snapped):
        assert s.loss <= p.loss
        assert s.evaluations >= p.evaluations
    assert any(s.symmetrized for s in snapped)  # at least one perovskite snaps onto a group


def test_symmetric_trials_are_reproducible_and_leave_the_uniform_trials_alone(one_thread):
    from srd.reconstruction import ReconstructConfig
    from srd.reconstruction.algorithm import reconstruct

    _, targets, keys = _perov_targets(2)
    base = ReconstructConfig(trials=3, hops=1, steps=20)
    plain = reconstruct(targets, keys, config=base)
    a = reconstruct(targets, keys, config=base.replace(symmetric_trials=1))
    b = reconstruct(targets, keys, config=base.replace(symmetric_trials=1))
    for p, x, y in zip(plain, a, b):
        assert x.trial_losses == y.trial_losses
        assert x.trial_losses[:2] == p.trial_losses[:2]  # the uniform trials are untouched, bit for bit


def test_symmetric_trials_cannot_exceed_trials():
    from srd.reconstruction import ReconstructConfig

    with pytest.raises(
        ValueError, match=r"symmetric_trials \+ template_trials: expected at most trials = 2, found 3 \+ 0"
    ):
        ReconstructConfig(trials=2, symmetric_trials=3)
