"""S.U.N. metrics (srd.metrics.sun, srd-evaluate sun): uniqueness, novelty, CHGNet energies and the proxy hull,
on crystals whose answers are known (duplicates by construction, copies of training crystals, a hull that
contains the crystal)."""

from __future__ import annotations

import json
import math
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from helpers import real_crystals

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")


def _rocksalt(a: float = 5.64, species=("Na", "Cl")):
    """The primitive rock-salt cell (2 atoms) of lattice constant ``a``."""
    from pymatgen.core import Lattice, Structure

    conv = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])
    return conv.get_primitive_structure()


def _translated(s, shift=(0.13, 0.21, 0.05)):
    t = s.copy()
    t.translate_sites(list(range(len(t))), shift)
    return t


def _elemental(symbol: str, a: float):
    """A one-atom simple-cubic crystal: an elemental reference for a hull."""
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(a), [symbol], [[0, 0, 0]])


def _csv(path, structures, ids=None):
    from pymatgen.io.cif import CifWriter

    ids = ids or [f"c{i}" for i in range(len(structures))]
    cifs = [str(CifWriter(s)) for s in structures]
    pd.DataFrame({"material_id": ids, "cif": cifs}).to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------------
# Uniqueness and novelty
# ------------------------------------------------------------------------------------------------
def test_a_cell_its_supercell_and_a_translated_copy_count_once():
    from srd.metrics.sun import uniqueness

    nacl = _rocksalt()
    kcl = _rocksalt(6.3, ("K", "Cl"))
    strained = _rocksalt(5.64 * 1.02)  # a 2% larger cell: the matcher scales volumes, so still a duplicate
    res = uniqueness([nacl, nacl * (2, 1, 1), _translated(nacl), kcl, None, strained])
    assert res["unique"] == [True, False, False, True, False, False]
    assert res["group"] == [0, 0, 0, 3, -1, 0]
    assert res["n_unique"] == 2 and res["rate"] == pytest.approx(2 / 6)  # unreadable crystals count in n
    assert (
        res["settings"]["ltol"] == 0.2
        and res["settings"]["stol"] == 0.3
        and res["settings"]["angle_tol"] == 5
    )


def test_a_distorted_crystal_of_the_same_composition_is_a_new_group():
    """Same composition and bucket, but a CsCl-type arrangement: not a rock-salt duplicate."""
    from pymatgen.core import Lattice, Structure

    from srd.metrics.sun import uniqueness

    cscl_type = Structure(Lattice.cubic(3.4), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert uniqueness([_rocksalt(), cscl_type])["unique"] == [True, True]


def test_copies_of_training_crystals_are_not_novel_and_a_distinct_crystal_is():
    from srd.metrics.sun import novelty

    train = list(real_crystals("mp_20", 8, "train"))
    assert all(t.composition.reduced_formula != "NaCl" for t in train)
    gen = [_translated(train[0]), train[3] * (1, 1, 2), train[5].copy(), _rocksalt()]
    res = novelty(gen, train)
    assert res["novel"] == [False, False, False, True]
    assert res["match"] == [0, 3, 5, -1]
    assert res["rate"] == pytest.approx(0.25) and res["n_train"] == 8
    assert novelty(gen[:3], train)["rate"] == 0.0


def test_tighter_matcher_settings_are_honoured():
    """A 0.05 A rattle matches with the default stol, and no longer with a tiny one."""
    from srd.metrics.sun import make_matcher, uniqueness

    nacl = _rocksalt() * (2, 2, 2)
    rattled = nacl.copy()
    rattled.perturb(0.05)
    assert uniqueness([nacl, rattled])["unique"] == [True, False]
    res = uniqueness([nacl, rattled], make_matcher(stol=0.001))
    assert res["unique"] == [True, True] and res["settings"]["stol"] == 0.001


# ------------------------------------------------------------------------------------------------
# Proxy hull and rates (no CHGNet needed: the energies are given)
# ------------------------------------------------------------------------------------------------
def test_a_crystal_on_a_hull_that_contains_it_has_e_hull_zero_and_one_above_it_its_height():
    from srd.metrics.sun import HULL_LABEL, e_above_hull, proxy_hull

    nacl, na, cl = _rocksalt(), _elemental("Na", 3.0), _elemental("Cl", 3.5)
    hull = proxy_hull([nacl, na, cl], [-3.5, -1.0, -1.5])
    assert "not the Materials Project DFT hull" in hull.label == HULL_LABEL
    assert e_above_hull(nacl, -3.5, hull) == (pytest.approx(0.0, abs=1e-9), None)
    assert e_above_hull(nacl * (2, 1, 1), -3.3, hull)[0] == pytest.approx(0.2)
    # below the hull: negative, kept (it counts as stable)
    assert e_above_hull(nacl, -3.6, hull)[0] == pytest.approx(-0.1)
    # an elemental crystal above its reference
    assert e_above_hull(na, -0.75, hull)[0] == pytest.approx(0.25)


def test_a_hull_over_many_elements_is_built_per_subsystem_with_the_same_e_hull(monkeypatch):
    """A dataset's hull spans ~90 elements, where one PhaseDiagram never finishes: above
    PLAIN_HULL_MAX_ELEMENTS the hull is built per chemical system (lazily), with the plain hull's E_hull."""
    from srd.metrics import sun

    nacl, na, cl = _rocksalt(), _elemental("Na", 3.0), _elemental("Cl", 3.5)
    plain = sun.proxy_hull([nacl, na, cl], [-3.5, -1.0, -1.5])
    monkeypatch.setattr(sun, "PLAIN_HULL_MAX_ELEMENTS", 1)
    patched = sun.proxy_hull([nacl, na, cl], [-3.5, -1.0, -1.5])
    assert type(patched.diagram).__name__ == "ChemicalSystemHulls" != type(plain.diagram).__name__
    for e in (-3.3, -3.5, -3.6):
        assert sun.e_above_hull(nacl, e, patched)[0] == pytest.approx(sun.e_above_hull(nacl, e, plain)[0])
    for e in (-0.5, -1.0):  # an element's hull is its own system's
        assert sun.e_above_hull(na, e, patched)[0] == pytest.approx(sun.e_above_hull(na, e, plain)[0])


def test_elements_the_hull_lacks_give_nan_with_a_reason():
    from srd.metrics.sun import e_above_hull, proxy_hull

    kcl = _rocksalt(6.3, ("K", "Cl"))
    # KCl is a reference too, but with no elemental K it cannot enter the hull: dropped, with the reason
    hull = proxy_hull(
        [_rocksalt(), _elemental("Na", 3.0), _elemental("Cl", 3.5), kcl], [-3.5, -1.0, -1.5, -3.0]
    )
    assert hull.n_entries == 3 and hull.dropped == [(3, "no elemental reference for K")]
    e, why = e_above_hull(kcl, -3.0, hull)
    assert math.isnan(e) and "K" in why and "proxy hull" in why
    e, why = e_above_hull(_rocksalt(), math.nan, hull)
    assert math.isnan(e) and why == "no energy"


def test_sun_rates_are_fractions_of_all_generated_crystals():
    from srd.metrics.sun import sun_rates

    unique = [True, True, True, False, True]
    novel = [True, False, True, True, True]
    e_hull = [0.0, -0.2, 0.05, 0.0, math.nan]
    r = sun_rates(unique, novel, e_hull)
    assert r["unique"] == 0.8 and r["novel"] == 0.8 and r["unique_novel"] == 0.6
    assert r["stable"] == pytest.approx(3 / 5) and r["stable_0.1"] == pytest.approx(4 / 5)
    assert r["sun"] == pytest.approx(1 / 5)  # only crystal 0 is stable, unique and novel
    assert r["sun_0.1"] == pytest.approx(2 / 5)  # crystals 0 and 2
    assert r["n_with_e_hull"] == 4
    no_hull = sun_rates(unique, novel)
    assert no_hull["sun"] is None and no_hull["stable"] is None and no_hull["unique_novel"] == 0.6


def test_missing_chgnet_says_how_to_install_it(monkeypatch):
    from srd.metrics import sun

    monkeypatch.setitem(sys.modules, "chgnet", None)  # import chgnet -> ImportError
    with pytest.raises(sun.MissingDependencyError, match=r'pip install "srd\[sun\]"'):
        sun.static_energies([_rocksalt()])


# ------------------------------------------------------------------------------------------------
# CHGNet
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chgnet_model():
    pytest.importorskip("chgnet")
    from srd.metrics.sun import load_chgnet

    return load_chgnet("cpu")


def test_chgnet_static_energy_puts_nacl_on_its_own_hull(chgnet_model):
    from srd.metrics.sun import e_above_hull, proxy_hull, static_energies

    crystals = [_rocksalt(), _elemental("Na", 3.0), _elemental("Cl", 3.5), _elemental("Og", 4.0)]
    st = static_energies(crystals, model=chgnet_model)
    assert np.all(np.isfinite(st.e_per_atom[:3])) and st.errors[:3] == [None, None, None]
    assert st.e_per_atom[0] < -3  # NaCl is strongly bound (CHGNet: about -3.67 eV/atom)
    # element 118 is outside CHGNet's elements: recorded, the batch goes on
    assert math.isnan(st.e_per_atom[3]) and st.errors[3].startswith("CHGNet static energy failed")
    hull = proxy_hull(crystals[:3], st.e_per_atom[:3])
    e, why = e_above_hull(crystals[0], st.e_per_atom[0], hull)
    assert why is None and e == pytest.approx(0.0, abs=1e-6)


def test_a_rattled_rock_salt_relaxes_back(chgnet_model):
    from srd.metrics.sun import make_matcher, relax

    ideal = _rocksalt()
    rattled = ideal * (2, 1, 1)
    rattled.perturb(0.1)  # every atom moved by 0.1 A
    r_ok, r_none, r_bad = relax([rattled, None, _elemental("Og", 4.0)], model=chgnet_model, steps=100)
    assert r_ok.error is None and r_ok.converged and 0 < r_ok.n_steps < 100
    assert r_ok.e_final < r_ok.e_initial
    assert make_matcher().fit(r_ok.structure, ideal)
    assert r_none.structure is None and r_none.error == "unreadable crystal"
    assert r_bad.structure is None and r_bad.error.startswith("CHGNet relaxation failed")


def test_the_step_cap_is_honoured_and_flagged(chgnet_model):
    from srd.metrics.sun import relax

    rattled = _rocksalt() * (2, 1, 1)
    rattled.perturb(0.3)
    (r,) = relax([rattled], model=chgnet_model, steps=2, fmax=1e-6, keep_trajectory=True)
    assert r.n_steps == 2 and not r.converged and r.error is None
    assert len(r.trajectory) == 4  # start, two steps, final record
    cell, pos, e = r.trajectory[0]
    assert cell.shape == (3, 3) and pos.shape == (4, 3) and e / 4 == pytest.approx(r.e_initial)


@pytest.fixture(scope="module")
def mo_references(chgnet_model, tmp_path_factory):
    """Mo (fcc and bcc only, to keep it short), a noble gas and an element CHGNet lacks; and their cache."""
    from srd.metrics.sun import elemental_references

    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SRD_CACHE_DIR", str(cache))
        refs = elemental_references(["Mo", "Ar", "Cm", "Mo"], model=chgnet_model, prototypes=("fcc", "bcc"))
    return refs, cache


def test_elemental_prototypes_pick_the_lowest_relaxed_energy_and_record_failures(mo_references):
    refs, _ = mo_references
    assert list(refs) == ["Mo", "Ar", "Cm"]
    mo = refs["Mo"]
    # bcc Mo is well established; CHGNet puts it ~0.16 eV/atom below fcc (the margin asserted is far smaller)
    assert mo.ok and mo.prototype == "bcc" and mo.energies["fcc"] > mo.energies["bcc"] + 0.05
    assert mo.e_per_atom == mo.energies["bcc"] and all(mo.converged.values()) and not mo.errors
    assert mo.structure.composition.reduced_formula == "Mo" and not mo.structure.site_properties
    # the relaxed bcc cell: conventional a = 2/sqrt(3) x the primitive's (experiment: 3.15 A)
    assert 2.9 < mo.structure.lattice.abc[0] * 2 / math.sqrt(3) < 3.4
    assert not refs["Ar"].ok and refs["Ar"].error.startswith("noble gas") and not refs["Ar"].energies
    og = refs["Cm"]  # beyond CHGNet's 94 elements
    assert not og.ok and set(og.errors) == {"fcc", "bcc"} and og.error.startswith("no prototype relaxed")
    assert all(e.startswith("CHGNet relaxation failed") for e in og.errors.values())


def test_elemental_prototypes_are_cached_per_element(mo_references, monkeypatch):
    from srd.metrics import sun

    refs, cache = mo_references
    assert len(list(cache.glob("chgnet_energies/*.json"))) == 2  # Mo and Cm (noble gases are never relaxed)
    monkeypatch.setenv("SRD_CACHE_DIR", str(cache))

    def no_relax(*a, **k):
        raise RuntimeError("relaxed again")

    monkeypatch.setattr(sun, "relax", no_relax)
    again = sun.elemental_references(["Cm", "Mo"], prototypes=("fcc", "bcc"))
    assert again["Mo"].cached and again["Cm"].cached and not again["Cm"].ok
    assert again["Mo"].e_per_atom == refs["Mo"].e_per_atom and again["Mo"].energies == refs["Mo"].energies
    assert again["Mo"].structure.matches(refs["Mo"].structure)
    with pytest.raises(RuntimeError, match="relaxed again"):  # other prototypes: another cache entry
        sun.elemental_references(["Mo"], prototypes=("bcc",))


def test_a_prototype_gives_compounds_of_an_element_missing_from_ref_an_e_hull(mo_references):
    from srd.metrics.sun import PROTOTYPE_NOTE, e_above_hull, missing_elements, proxy_hull

    refs, _ = mo_references
    nacl, na, cl = _rocksalt(), _elemental("Na", 3.0), _elemental("Cl", 3.5)
    mocl = _rocksalt(4.6, ("Mo", "Cl"))
    ref, energies = [nacl, na, cl, _rocksalt(6.3, ("K", "Cl"))], [-3.5, -1.0, -1.5, -3.0]
    assert missing_elements(ref, energies, [mocl, None]) == ["K", "Mo"]
    hull = proxy_hull(ref, energies, refs)
    assert hull.prototypes == {"Mo": "bcc"} and "Mo" in hull.elements and "Ar" not in hull.elements
    assert hull.dropped == [(3, "no elemental reference for K")]
    assert "not the Materials Project DFT hull" in hull.label and PROTOTYPE_NOTE in hull.label
    e_mo = refs["Mo"].e_per_atom
    assert e_above_hull(mocl, (e_mo - 1.5) / 2 + 0.2, hull) == (pytest.approx(0.2), None)
    # an element the reference crystals have keeps its crystal: the prototype is ignored
    hull_na = proxy_hull([nacl, na, cl], [-3.5, -1.0, -1.5], {"Na": refs["Mo"]})
    assert hull_na.prototypes == {} and hull_na.label == proxy_hull([na], [-1.0]).label


# ------------------------------------------------------------------------------------------------
# srd-evaluate sun
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sun_inputs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sun")
    train = list(real_crystals("mp_20", 6, "train"))
    train_csv = _csv(tmp_path / "train.csv", train, [f"t{i}" for i in range(6)])
    nacl = _rocksalt()
    gen = [nacl, nacl * (1, 2, 1), _translated(train[1]), _rocksalt(6.3, ("K", "Cl"))]
    gen_csv = _csv(tmp_path / "gen.csv", gen, ["nacl", "nacl_super", "train_copy", "kcl"])
    return gen_csv, train_csv


def test_cli_reports_uniqueness_and_novelty(sun_inputs, tmp_path, capsys):
    from srd.cli.evaluate import main

    gen_csv, train_csv = sun_inputs
    out = tmp_path / "eval"
    assert main(["sun", str(gen_csv), "--train", str(train_csv), "-o", str(out), "-q"]) == 0
    m = json.loads((out / "sun.json").read_text())
    assert m["rates"]["unique"] == 0.75 and m["rates"]["novel"] == 0.75 and m["rates"]["unique_novel"] == 0.5
    assert m["rates"]["sun"] is None and m["hull"] is None
    assert m["uniqueness"]["settings"]["angle_tol"] == 5
    df = pd.read_csv(out / "sun.csv")
    assert list(df.columns) == [
        "id",
        "formula",
        "unique",
        "novel",
        "e_per_atom",
        "e_hull",
        "relaxed",
        "failure",
    ]
    assert df["unique"].tolist() == [True, False, True, True]
    assert df["novel"].tolist() == [True, True, False, True]
    assert not (out / "e_hull.png").exists()
    assert "unique %" in capsys.readouterr().out


def test_cli_sample_scores_the_seeded_rows_and_records_them(sun_inputs, tmp_path):
    from srd.cli.evaluate import main
    from srd.reconstruction.job import sample_rows

    gen_csv, train_csv = sun_inputs
    out = tmp_path / "eval_sample"
    assert main(["sun", str(gen_csv), "--train", str(train_csv), "-o", str(out), "--sample", "2",
                 "--sample-seed", "3", "-q"]) == 0  # fmt: skip
    m = json.loads((out / "sun.json").read_text())
    rows = sample_rows(4, 2, 3)
    names = ["nacl", "nacl_super", "train_copy", "kcl"]
    assert m["sample"]["rows"] == rows and m["sample"]["ids"] == [names[k] for k in rows]
    assert m["n_generated"] == 2 and pd.read_csv(out / "sun.csv")["id"].tolist() == [names[k] for k in rows]


def test_cli_unreadable_crystal_is_reported_with_its_row(sun_inputs, tmp_path):
    from srd.cli.evaluate import main

    src, train_csv = sun_inputs
    df = pd.read_csv(src)
    df.loc[len(df)] = ["broken", "data_x\n_cell_length_a 3\n"]
    gen_csv = tmp_path / "gen.csv"
    df.to_csv(gen_csv, index=False)
    out = tmp_path / "eval"
    assert main(["sun", str(gen_csv), "--train", str(train_csv), "-o", str(out), "-q"]) == 0
    row = pd.read_csv(out / "sun.csv").iloc[-1]
    assert row["id"] == "broken" and "gen.csv" in row["failure"]
    assert not row["unique"] and not row["novel"]
    assert json.loads((out / "sun.json").read_text())["n_unreadable"] == 1


def test_cli_bad_inputs_are_refused_clearly(sun_inputs, tmp_path, monkeypatch):
    from srd.cli.evaluate import main

    gen_csv, train_csv = sun_inputs
    with pytest.raises(FileNotFoundError, match="--train not found"):
        main(["sun", str(gen_csv), "--train", str(tmp_path / "nope.csv"), "-q"])
    junk = tmp_path / "junk.csv"
    junk.write_text("material_id,cif\na,not a cif\n")
    with pytest.raises(ValueError, match="junk.csv: no readable crystal"):
        main(["sun", str(gen_csv), "--train", str(junk), "-q"])
    monkeypatch.setitem(sys.modules, "chgnet", None)
    with pytest.raises(ValueError, match=r'pip install "srd\[sun\]"'):
        main(["sun", str(gen_csv), "--train", str(train_csv), "--hull", str(train_csv), "-q"])


def test_cli_hull_gives_e_hull_and_caches_the_reference_energies(sun_inputs, tmp_path, chgnet_model):
    from srd.cli.evaluate import main

    gen_csv, train_csv = sun_inputs
    ref = _csv(tmp_path / "ref.csv", [_rocksalt(), _elemental("Na", 3.0), _elemental("Cl", 3.5)])
    out = tmp_path / "eval"
    args = ["sun", str(gen_csv), "--train", str(train_csv), "--hull", str(ref), "-o", str(out), "-q",
            "--no-element-prototypes"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
        m = json.loads((out / "sun.json").read_text())
        assert m["hull"]["cache"][0]["hit"] is False
        assert main(args) == 0
    m = json.loads((out / "sun.json").read_text())
    assert m["hull"]["cache"][0]["hit"] is True and "proxy" in m["hull"]["label"]
    assert m["hull"]["element_prototypes"] == {"enabled": False, "used": {}}
    assert "prototype" not in m["hull"]["label"]
    df = pd.read_csv(out / "sun.csv")
    # NaCl and its supercell are the hull's own NaCl: E_hull 0, stable; the others lack hull elements
    assert df["e_hull"].iloc[:2].abs().max() < 1e-5
    assert df["e_hull"].iloc[2:].isna().all() and df["failure"].iloc[3].startswith("the proxy hull has no")
    assert m["rates"]["stable"] == 0.5 and m["rates"]["sun"] == 0.25  # only the first NaCl is unique
    assert (out / "e_hull.png").stat().st_size > 0


def test_cli_relax_uses_the_relaxed_energies(sun_inputs, tmp_path, chgnet_model):
    from srd.cli.evaluate import main

    gen_csv, train_csv = sun_inputs
    ref = _csv(tmp_path / "ref.csv", [_rocksalt(), _elemental("Na", 3.0), _elemental("Cl", 3.5)])
    out = tmp_path / "eval"
    args = ["sun", str(gen_csv), "--train", str(train_csv), "--hull", str(ref), "--relax", "--steps", "5",
            "-o", str(out), "-q", "--no-element-prototypes"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    df = pd.read_csv(out / "sun.csv")
    assert {"e_per_atom_initial", "relax_steps", "converged"} <= set(df.columns)
    assert df["relaxed"].all() and (df["relax_steps"] <= 5).all()
    assert (df["e_per_atom"] <= df["e_per_atom_initial"] + 1e-4).all()  # FIRE never ends far uphill
    m = json.loads((out / "sun.json").read_text())
    assert m["energies"]["kind"] == "relaxed" and m["energies"]["n_relaxed"] == 4
    # the relaxed NaCl may sit slightly below the hull built from the unrelaxed reference: still stable
    assert df["e_hull"].iloc[0] <= 1e-5


def test_cli_element_prototypes_stand_in_for_an_element_missing_from_ref(tmp_path, chgnet_model, monkeypatch):
    """No elemental K among REF: a CHGNet-relaxed K prototype (only bcc here, to keep the test short) lets KCl
    have an E_hull; sun.json says which element got which prototype."""
    from srd.cli.evaluate import main
    from srd.metrics import sun

    monkeypatch.setattr(sun, "ELEMENT_PROTOTYPES", ("bcc",))
    train_csv = _csv(tmp_path / "train.csv", [_elemental("Na", 3.0)])
    gen_csv = _csv(tmp_path / "gen.csv", [_rocksalt(), _rocksalt(6.3, ("K", "Cl"))], ["nacl", "kcl"])
    ref = _csv(tmp_path / "ref.csv", [_rocksalt(), _elemental("Na", 3.0), _elemental("Cl", 3.5)])
    out = tmp_path / "eval"
    args = [
        "sun",
        str(gen_csv),
        "--train",
        str(train_csv),
        "--hull",
        str(ref),
        "-o",
        str(out),
        "-q",
        "--no-plots",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    m = json.loads((out / "sun.json").read_text())
    info = m["hull"]["element_prototypes"]
    assert info["enabled"] and info["requested"] == ["K"] and info["used"] == {"K": "bcc"}
    assert info["elements"]["K"]["prototype"] == "bcc" and info["elements"]["K"]["e_per_atom"] < 0
    assert "not the Materials Project DFT hull" in m["hull"]["label"] and "prototypes" in m["hull"]["label"]
    assert "K" in m["hull"]["elements"]
    df = pd.read_csv(out / "sun.csv")
    assert np.isfinite(df["e_hull"]).all() and df["e_hull"].iloc[0] == pytest.approx(0.0, abs=1e-5)


# ------------------------------------------------------------------------------------------------
# srd-relax
# ------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:No Pauling electronegativity")
def test_srd_relax_writes_cifs_energies_trajectories_and_resumes(tmp_path, chgnet_model, capsys):
    from ase.io import read

    from srd.cli.relax import main
    from srd.metrics.sun import make_matcher
    from srd.structures import parse_cif

    rattled = _rocksalt() * (2, 1, 1)
    rattled.perturb(0.1)
    inp = _csv(tmp_path / "in.csv", [rattled, _elemental("Og", 4.0)], ["nacl", "og"])
    out = tmp_path / "relaxed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([str(inp), "-o", str(out), "--steps", "100", "-q"]) == 0
    df = pd.read_csv(out / "energies.csv")
    assert df["id"].tolist() == ["nacl", "og"]
    nacl = df.iloc[0]
    assert nacl["converged"] and nacl["e_per_atom"] < nacl["e_per_atom_initial"]
    assert make_matcher().fit(parse_cif((out / "cifs" / "nacl.cif").read_text()), _rocksalt())
    frames = read(out / "trajectories" / "nacl.extxyz", index=":")
    assert len(frames) == nacl["steps"] + 2
    assert frames[-1].get_potential_energy() / 4 == pytest.approx(nacl["e_per_atom"], abs=1e-5)
    assert (
        df.iloc[1]["failure"].startswith("CHGNet relaxation failed")
        and not (out / "cifs" / "og.cif").exists()
    )
    capsys.readouterr()
    assert main([str(inp), "-o", str(out), "-q"]) == 0  # a rerun skips what is done
    assert "2 already done, 0 to relax" in capsys.readouterr().out
    assert pd.read_csv(out / "energies.csv").equals(df)
