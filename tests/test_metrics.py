"""Tests of srd.metrics: the community protocol of CDVAE's compute_metrics.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from srd.metrics import (
    COMP_SCALER_MEANS,
    COMP_SCALER_STDS,
    FingerprintError,
    StructureFingerprinter,
    comp_scaler_transform,
    composition_validity,
    compute_coverage,
    emd_metrics,
    evaluate_file,
    evaluate_structures,
    generation_metrics,
    match_structures,
    reduced_composition,
    sample_valid_indices,
    smact_validity,
    smact_version,
    structure_validity,
)
from srd.structures import read_structures

DATA = Path(__file__).resolve().parents[1] / "data"
PEROV_TEST = DATA / "perov_5" / "test.csv.gz"
MP20_TEST = DATA / "mp_20" / "test.csv.gz"


def _nacl() -> Structure:
    return Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def perov() -> list[Structure]:
    return [r.structure for r in read_structures(PEROV_TEST, limit=12)]


# ------------------------------------------------------------------------------------------------
# Validity
# ------------------------------------------------------------------------------------------------
def test_smact_version_is_pinned():
    assert smact_version() == "2.2.1"


def test_composition_validity_cases():
    assert smact_validity([11, 17], [1, 1])  # NaCl
    assert not smact_validity([11, 17], [1, 2])  # NaCl2
    assert smact_validity(["Na", "Cl"], [1, 1])  # symbols work too
    assert composition_validity(_nacl())
    assert composition_validity([26, 26, 26])  # a pure element
    assert composition_validity([6] * 8)
    assert composition_validity([26, 28, 28, 28])  # FeNi3: all-metal alloy
    assert composition_validity([29, 30])  # CuZn
    assert not composition_validity([11, 17, 17])  # NaCl2 as atoms
    assert composition_validity([38, 22, 8, 8, 8])  # SrTiO3
    # CDVAE divides the counts by their gcd before the SMACT test
    assert reduced_composition([8, 8, 22, 22, 8, 8, 38, 38, 8, 8]) == ((8, 22, 38), (3, 1, 1))
    with pytest.raises(ValueError, match="one count per element"):
        smact_validity([11, 17], [1])


def test_structure_validity_cases():
    assert structure_validity(_nacl())
    close = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])  # 0.25 A apart
    assert not structure_validity(close)
    # across the periodic boundary: 0.2 A apart through the cell face
    wrap = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0.01, 0, 0], [0.97, 0, 0]])
    assert not structure_validity(wrap)
    tiny = Structure(Lattice.cubic(0.4), ["C"], [[0, 0, 0]])  # volume 0.064 A^3 < 0.1
    assert not structure_validity(tiny)
    # CDVAE does not test an atom against its own images (a = 0.45 A passes); the option does
    one = Structure(Lattice.tetragonal(0.45, 5.0), ["C"], [[0, 0, 0]])
    assert structure_validity(one)
    assert not structure_validity(one, include_self_images=True)


# ------------------------------------------------------------------------------------------------
# Fingerprints
# ------------------------------------------------------------------------------------------------
def test_comp_scaler_constants():
    assert len(COMP_SCALER_MEANS) == len(COMP_SCALER_STDS) == 132
    assert COMP_SCALER_MEANS[0] == pytest.approx(21.194441759304013)
    assert COMP_SCALER_MEANS[19] == pytest.approx(1817.2394155466848)
    assert COMP_SCALER_MEANS[-1] == pytest.approx(136.4664572257129)
    assert COMP_SCALER_STDS[49] == pytest.approx(0.10048913710210677)
    assert COMP_SCALER_STDS[-1] == pytest.approx(85.980205895116)
    # Magpie stats come in blocks of (min, max, range, mean, avg_dev, mode): over a data set the mean of
    # "range" is exactly mean(max) - mean(min), a check that no constant was mistyped or shifted
    m = np.array(COMP_SCALER_MEANS).reshape(22, 6)
    np.testing.assert_allclose(m[:, 2], m[:, 1] - m[:, 0], rtol=1e-9, atol=1e-9)
    x = np.array(COMP_SCALER_MEANS, dtype=float)
    x[3] = np.nan
    z = comp_scaler_transform(x[None])
    assert np.all(z == 0.0)  # the means map to 0 and NaN is replaced by 0
    with pytest.raises(ValueError, match="132"):
        comp_scaler_transform(np.zeros((2, 5)))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fast_fingerprint_matches_matminer(perov):
    fast = StructureFingerprinter()
    exact = StructureFingerprinter(exact=True)
    mp = [r.structure for r in read_structures(MP20_TEST, limit=6) if len(r.structure) <= 8][:2]
    for s in perov[:3] + mp:
        a = np.array([fast.site(s, i) for i in range(len(s))])
        b = np.array([exact.site(s, i) for i in range(len(s))])
        assert a.shape == b.shape == (len(s), 61)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)


def test_too_dense_crystal_is_not_fingerprinted():
    dense = Structure(Lattice.cubic(0.5), ["C", "C"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(FingerprintError, match="search sphere"):
        StructureFingerprinter()(dense)
    cs = evaluate_structures([dense, _nacl(), None], ids=["dense", "nacl", "missing"], show_progress=False)
    assert cs.fp_ok.tolist() == [False, True, False]
    assert cs.valid.tolist() == [False, True, False]
    assert {f["id"]: f["stage"] for f in cs.failures()} == {"dense": "fingerprint", "missing": "read"}


# ------------------------------------------------------------------------------------------------
# Properties, coverage, EMD
# ------------------------------------------------------------------------------------------------
def test_density_and_element_count_agree_with_pymatgen(perov):
    cs = evaluate_structures(perov[:4], fingerprints=False, show_progress=False)
    for i, s in enumerate(perov[:4]):
        assert cs.density[i] == pytest.approx(s.density, rel=1e-9)
        assert cs.n_elements[i] == len(s.composition.elements)
        rebuilt = cs.structure(i)
        assert rebuilt.composition == s.composition
        assert rebuilt.volume == pytest.approx(s.volume, rel=1e-9)


def test_set_against_itself_is_fully_covered(perov):
    good = [s for s in perov if composition_validity(s)][:8]
    gen = evaluate_structures(good, show_progress=False)
    ref = evaluate_structures(good, reference=True, show_progress=False)
    assert gen.valid.all() and ref.fp_ok.all()
    m = generation_metrics(gen, ref, dataset="perov_5", n_samples=5, seeds=[0, 1])
    for name in ("cdvae", "symat"):
        assert m["coverage"][name]["cov_recall"] == pytest.approx(100.0)
        assert m["coverage"][name]["cov_precision"] == pytest.approx(100.0)
    assert m["coverage"]["cdvae"]["struct_cutoff"] == 0.2 and m["coverage"]["symat"]["struct_cutoff"] == 0.8
    m = generation_metrics(gen, ref, dataset="perov_5", n_samples=100, seeds=[0])
    assert m["emd"]["n_samples_used"] == len(good)
    assert m["table"]["emd_density"] == pytest.approx(0.0, abs=1e-9)
    assert m["table"]["emd_n_elements"] == pytest.approx(0.0, abs=1e-12)
    assert m["table"]["comp_valid"] == 100.0 and m["table"]["struct_valid"] == 100.0


def test_coverage_counts_unfingerprinted_samples_in_precision():
    rng = np.random.default_rng(0)
    ref_s, ref_c = rng.random((5, 61)), rng.random((5, 132))
    cov = compute_coverage(
        ref_s[:4], ref_c[:4], ref_s, ref_c, struct_cutoff=0.01, comp_cutoff=0.01, num_gen_crystals=8
    )
    assert cov["cov_precision"] == pytest.approx(4 / 8)  # 4 fingerprinted hits out of 8 samples
    assert cov["cov_recall"] == pytest.approx(4 / 5)
    # recall needs BOTH the structure and the composition nearest neighbours within the cutoffs
    far = ref_c[:4] + 100.0
    cov = compute_coverage(ref_s[:4], far, ref_s, ref_c, struct_cutoff=0.01, comp_cutoff=0.01)
    assert cov["cov_recall"] == 0.0 and cov["cov_precision"] == 0.0


def test_emd_draw_is_cdvaes_seeded_choice():
    np.random.seed(3)  # noqa: NPY002 - CDVAE uses the legacy global generator
    expected = np.random.choice(50, 10, replace=False)  # noqa: NPY002
    np.testing.assert_array_equal(sample_valid_indices(50, 10, 3), expected)
    np.testing.assert_array_equal(sample_valid_indices(7, 10, 3), np.arange(7))
    e = emd_metrics(np.arange(50.0), np.ones(50), np.arange(50.0), np.ones(50), n_samples=50, seeds=[0, 1])
    assert e["density"]["mean"] == 0.0 and e["n_elements"]["std"] == 0.0
    assert emd_metrics(np.zeros(0), np.zeros(0), np.ones(3), np.ones(3))["density"]["mean"] is None


def test_reference_results_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SRD_CACHE_DIR", str(tmp_path / "cache"))
    ref = tmp_path / "ref.csv"
    pd.read_csv(PEROV_TEST).head(4).to_csv(ref, index=False)
    a = evaluate_file(ref, reference=True, show_progress=False)
    assert a.source["cache_hit"] is False and Path(a.source["cache"]).is_file()
    b = evaluate_file(ref, reference=True, show_progress=False)
    assert b.source["cache_hit"] is True
    np.testing.assert_array_equal(a.struct_fp, b.struct_fp)
    assert a.ids == b.ids and a.valid.tolist() == b.valid.tolist()
    # other bytes -> another key
    pd.read_csv(PEROV_TEST).head(3).to_csv(ref, index=False)
    c = evaluate_file(ref, reference=True, show_progress=False)
    assert c.source["cache_hit"] is False and len(c) == 3


# ------------------------------------------------------------------------------------------------
# Reconstruction
# ------------------------------------------------------------------------------------------------
def test_match_structures_on_perturbed_copies(perov):
    refs = perov[:4]
    rng = np.random.default_rng(0)
    preds = []
    for s in refs:
        noisy = s.cart_coords + rng.normal(scale=0.01, size=(len(s), 3))
        preds.append(Structure(s.lattice, s.species, noisy, coords_are_cartesian=True))
    preds[2] = None  # no prediction: a miss
    preds[3] = Structure(Lattice.cubic(7.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # wrong crystal
    res = match_structures(preds, refs)
    assert res["n"] == 4 and res["n_matched"] == 2
    assert res["match_rate"] == pytest.approx(50.0)
    assert [pc["matched"] for pc in res["per_crystal"]] == [True, True, False, False]
    assert res["per_crystal"][2]["rms"] is None
    assert 0 < res["rmse"] < 0.05
    assert res["rmse"] == pytest.approx(np.mean([pc["rms"] for pc in res["per_crystal"][:2]]))
    par = match_structures(preds, refs, workers=2)
    assert [pc["matched"] for pc in par["per_crystal"]] == [True, True, False, False]
    assert par["rmse"] == pytest.approx(res["rmse"])
    with pytest.raises(ValueError, match="aligned"):
        match_structures(preds[:2], refs)
    assert match_structures([None], refs[:1])["rmse"] is None
