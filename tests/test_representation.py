"""The representation R: invariances, exact decoding of n / composition / lattice, scaling, decoding rules."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from helpers import DATA, real_crystals
from srd.representation import (
    EAD_SCALE,
    Decoded,
    Layout,
    Rejected,
    ScalingStats,
    decode,
    encode_structures,
    largest_remainder,
    nearest_counts,
    prepare_structure,
)
from srd.structures import read_structures

LAYOUT = Layout()


def _encode(structures, n_max, **kw):
    return encode_structures([prepare_structure(s, n_max=n_max) for s in structures], n_max=n_max, **kw)


def test_layout_is_the_papers_704():
    assert LAYOUT.dim == 704
    blocks = LAYOUT.blocks()
    assert blocks["ead_max"] == (0, 300) and blocks["ead_min"] == (300, 600) and blocks["dmin"] == (600, 601)
    assert (
        blocks["lattice"] == (601, 607)
        and blocks["composition"] == (607, 703)
        and blocks["size"] == (703, 704)
    )


@pytest.mark.parametrize("dataset,n_max", [("perov_5", 5), ("carbon_24", 24), ("mp_20", 20)])
def test_invariance_rotation_translation_permutation(dataset, n_max):
    s = real_crystals(dataset, 1)[0]
    ref = _encode([s], n_max)
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    moved = Structure(
        Lattice(s.lattice.matrix @ q.T),
        s.species,
        s.cart_coords @ q.T + rng.normal(size=3),
        coords_are_cartesian=True,
    )
    perm = rng.permutation(len(s))
    moved = Structure(moved.lattice, [moved.species[k] for k in perm], moved.frac_coords[perm])
    got = _encode([moved], n_max)
    # pymatgen's Niggli reduction of the rotated cell agrees to ~1e-7 relative (its own arithmetic).
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-10)


def test_encode_blocks_are_what_they_say():
    s = real_crystals("mp_20", 1)[0]
    prepared = prepare_structure(s, n_max=20)
    r = _encode([s], 20)[0]
    assert math.isclose(
        float(r[LAYOUT.dmin]),
        min(prepared.distance_matrix[np.triu_indices(len(s), 1)].min(), min(prepared.lattice.abc)),
        rel_tol=1e-9,
    )
    lat = r[LAYOUT.lattice].numpy()
    np.testing.assert_allclose(lat[:3], prepared.lattice.abc, rtol=1e-12)
    np.testing.assert_allclose(np.degrees(lat[3:]), prepared.lattice.angles, rtol=1e-12)
    assert math.isclose(float(r[LAYOUT.size]), len(s) / 20)
    comp = r[LAYOUT.composition]
    assert math.isclose(float(comp.sum()), 1.0, rel_tol=1e-12)
    for el, amt in s.composition.items():
        assert math.isclose(float(comp[el.Z - 1]), amt / len(s), rel_tol=1e-12)
    assert float(r[LAYOUT.ead].abs().max()) > 0 and float(r[LAYOUT.ead].max()) < 1e6 / EAD_SCALE * 1e6


SPLITS = sorted(DATA.glob("*/*.csv.gz"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SPLITS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_decode_encode_recovers_every_crystal_of_every_split(path: Path):
    """decode(encode(crystal)) gives back n, the composition and the (Niggli) lattice of every crystal."""
    n_max = {"perov_5": 5, "carbon_24": 24, "mp_20": 20}[path.parent.name]
    from srd.representation.featurize import _read_and_prepare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = _read_and_prepare(
            path, n_max=n_max, niggli=True, limit=None, workers=2, show_progress=False
        )
    assert all(r.structure is not None for r in records), [r.error for r in records if r.structure is None][
        :3
    ]
    prepared = [r.structure for r in records]
    raw = encode_structures(prepared, n_max=n_max, with_ead=False)
    stats = ScalingStats.fit(raw, LAYOUT)
    scaled = stats.scale(raw).float()  # as stored in feature files
    for k, (s, d) in enumerate(zip(prepared, decode(scaled.double(), stats, n_max))):
        assert isinstance(d, Decoded), f"row {k}: {d}"
        assert d.n_atoms == len(s), f"row {k}"
        assert d.numbers == sorted(s.atomic_numbers), f"row {k}"
        np.testing.assert_allclose(d.lengths, s.lattice.abc, rtol=1e-5, err_msg=f"row {k}")
        np.testing.assert_allclose(d.angles, s.lattice.angles, rtol=1e-5, atol=1e-4, err_msg=f"row {k}")
    # In float64 (before the float32 storage) the lattice comes back to rounding.
    for s, d in zip(prepared[:200], decode(stats.scale(raw)[:200], stats, n_max)):
        np.testing.assert_allclose(d.lengths, s.lattice.abc, rtol=1e-12)
        np.testing.assert_allclose(d.angles, s.lattice.angles, rtol=1e-12)


def test_scaling_round_trip_and_range():
    raw = _encode(list(real_crystals("mp_20", 6)), 20)
    stats = ScalingStats.fit(raw, LAYOUT)
    scaled = stats.scale(raw)
    cont = scaled[:, LAYOUT.continuous]
    assert float(cont.min()) >= 0 and float(cont.max()) <= 1 + 1e-12
    torch.testing.assert_close(stats.unscale(scaled), raw, rtol=1e-13, atol=1e-13)
    # Constant columns (e.g. all-cubic angles) stay exactly invertible.
    raw2 = _encode(list(real_crystals("perov_5", 6)), 5)
    stats2 = ScalingStats.fit(raw2, LAYOUT)
    torch.testing.assert_close(stats2.unscale(stats2.scale(raw2)), raw2, rtol=1e-13, atol=1e-13)
    assert ScalingStats.from_dict(stats.to_dict()).lo.equal(stats.lo)


def test_largest_remainder():
    assert largest_remainder(np.array([0.5, 0.5]), 3).tolist() == [2, 1]  # tie -> lower Z
    assert largest_remainder(np.array([0.2, 0.2, 0.6]), 5).tolist() == [1, 1, 3]
    assert largest_remainder(np.array([1 / 3, 1 / 3, 1 / 3]), 4).sum() == 4
    assert largest_remainder(np.array([0.9, 0.1, 0.0]), 1).tolist() == [1, 0, 0]


def test_nearest_counts():
    rng = np.random.default_rng(0)
    # Fractions that sum to 1: the same answer as largest remainder.
    for _ in range(200):
        n = int(rng.integers(1, 25))
        f = rng.dirichlet(np.ones(6))
        assert nearest_counts(f, n).tolist() == largest_remainder(f, n).tolist()
    # Spread noise: renormalising lets a noise element take a seat; the projection does not.
    f = np.array([0.6, 0.2, 0.2] + [0.08] * 5)  # ABX3 plus 0.4 of noise over five elements
    assert largest_remainder(f, 5).tolist() == [2, 1, 1, 1, 0, 0, 0, 0]  # noise takes one of O's seats
    assert nearest_counts(f, 5).tolist() == [3, 1, 1, 0, 0, 0, 0, 0]
    # It is the exact minimiser of sum (c - n f)^2 over all count vectors summing to n (brute force).
    import itertools

    for _ in range(50):
        f = rng.random(4) * 0.6
        n = 4
        best = min(
            (c for c in itertools.product(range(n + 1), repeat=4) if sum(c) == n),
            key=lambda c: (float(((np.array(c) - n * f) ** 2).sum()), tuple(-x for x in c)),
        )
        got = nearest_counts(f, n)
        assert np.isclose(((got - n * f) ** 2).sum(), ((np.array(best) - n * f) ** 2).sum())


def test_decode_composition_nearest():
    stats = ScalingStats(torch.zeros(607, dtype=torch.float64), torch.ones(607, dtype=torch.float64), LAYOUT)
    comp = {8: 0.6, 22: 0.2, 38: 0.2, 1: 0.1, 3: 0.1, 5: 0.1, 7: 0.1}
    v = _vector(stats, size=1.0, comp=comp)
    assert decode(v, stats, 5, "nearest")[0].numbers == [8, 8, 8, 22, 38]
    assert decode(v, stats, 5)[0].numbers == [1, 8, 8, 22, 38]  # SPEC's rule: H (noise) takes O's seat
    with pytest.raises(ValueError, match="composition must be one of"):
        decode(v, stats, 5, "round")


def _vector(stats, *, size, comp: dict, lattice=(4.0, 4.0, 4.0, 90.0, 90.0, 90.0)):
    raw = torch.zeros(1, LAYOUT.dim, dtype=torch.float64)
    raw[0, LAYOUT.size] = size
    for z, f in comp.items():
        raw[0, LAYOUT.composition.start + z - 1] = f
    raw[0, LAYOUT.lattice] = torch.tensor([*lattice[:3], *(math.radians(a) for a in lattice[3:])])
    return stats.scale(raw)


def test_decoding_rules():
    stats = ScalingStats(torch.zeros(607, dtype=torch.float64), torch.ones(607, dtype=torch.float64), LAYOUT)
    # n rounds, is clamped to [1, n_max]; negative fractions are dropped, the rest renormalised.
    d = decode(_vector(stats, size=0.42, comp={8: 0.55, 22: 0.30, 1: -0.2}), stats, 5)[0]
    assert isinstance(d, Decoded) and d.n_atoms == 2 and d.numbers == [8, 22]
    d = decode(_vector(stats, size=-0.3, comp={6: 1.0}), stats, 24)[0]
    assert d.n_atoms == 1 and d.numbers == [6]  # n rounds to 0 -> clamped to 1
    d = decode(_vector(stats, size=7.0, comp={6: 1.0}), stats, 24)[0]
    assert d.n_atoms == 24
    # No element / impossible lattice / non-finite: rejected with a reason.
    r = decode(_vector(stats, size=0.5, comp={8: -0.1}), stats, 5)[0]
    assert isinstance(r, Rejected) and "no element" in r.reason
    r = decode(_vector(stats, size=0.5, comp={8: 1.0}, lattice=(4, 4, 4, 120, 120, 120)), stats, 5)[0]
    assert isinstance(r, Rejected) and "positive volume" in r.reason
    r = decode(_vector(stats, size=0.5, comp={8: 1.0}, lattice=(-1, 4, 4, 90, 90, 90)), stats, 5)[0]
    assert isinstance(r, Rejected) and "non-positive lattice length" in r.reason
    v = _vector(stats, size=0.5, comp={8: 1.0})
    v[0, 3] = math.nan
    assert isinstance(decode(v, stats, 5)[0], Rejected)
    with pytest.raises(ValueError, match=r"decode: expected R of shape \[M, 704\], got \[1, 5\]"):
        decode(torch.zeros(1, 5), stats, 5)


def test_prepare_rejects_out_of_range():
    s = real_crystals("mp_20", 1)[0]
    with pytest.raises(ValueError, match=r"atoms exceed n_max = 2"):
        prepare_structure(s, n_max=2, where="x")
    heavy = Structure(Lattice.cubic(4.0), ["Bk", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"element Bk \(Z = 97\) is beyond Z = 96"):
        prepare_structure(heavy, n_max=5)


def test_read_structures_kinds(tmp_path):
    recs = list(read_structures(DATA / "perov_5" / "test.csv.gz", limit=3))
    assert [r.id for r in recs] == [str(x) for x in (3961, 4213, 4405)] or all(r.structure for r in recs)
    folder = tmp_path / "cifs"
    folder.mkdir()
    for r in recs:
        r.structure.to(filename=str(folder / f"{r.id}.cif"))
    (folder / "broken.cif").write_text("data_x\n_cell_length_a 3\nloop_\n_atom_site_label\nnonsense")
    got = {r.id: r for r in read_structures(folder)}
    assert got["broken"].structure is None and "unreadable CIF" in got["broken"].error
    assert sum(r.structure is not None for r in got.values()) == 3
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    write(tmp_path / "x.extxyz", [AseAtomsAdaptor.get_atoms(r.structure) for r in recs], format="extxyz")
    ext = list(read_structures(tmp_path / "x.extxyz"))
    assert len(ext) == 3 and all(r.structure is not None for r in ext)
    assert ext[0].structure.composition == recs[0].structure.composition
