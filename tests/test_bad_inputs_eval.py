"""Malformed CDVAE-format files (eval_gen.pt / eval_recon.pt) and unreadable crystals in srd-evaluate gen.

A file that is not internally consistent is refused with a ValueError naming the file and the key (exit
status 2 from the console script) before anything is scored; a crystal whose own values are unusable
(NaN coordinates, an impossible lattice) is one unreadable crystal, counted invalid, while the other
crystals score as usual.
"""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from srd.cli import evaluate as evaluate_cli
from srd.metrics import evaluate_structures, structure_validity
from srd.structures import load_cdvae_pt, parse_cif, read_structures, save_cdvae_pt

N_CRYSTALS = 5  # perov_5 crystals have 5 atoms each: 25 atoms


@pytest.fixture
def crystals(perov_rows):  # noqa: F811
    return [parse_cif(c) for c in perov_rows["cif"].head(N_CRYSTALS)]


@pytest.fixture
def reference(tmp_path, perov_rows):  # noqa: F811
    ref = tmp_path / "ref.csv"
    perov_rows.head(N_CRYSTALS).to_csv(ref, index=False)
    return ref


pytestmark = pytest.mark.usefixtures("isolated_cache")


def _write(tmp_path, crystals, mutate=None, name="eval_gen.pt"):
    """A CDVAE-format file of ``crystals`` (written by srd, num_evals = 1), changed by ``mutate(dict)``."""
    pt = tmp_path / name
    save_cdvae_pt(pt, crystals)
    if mutate is not None:
        data = torch.load(pt, weights_only=True)
        data = mutate(data)
        torch.save(data, pt)
    return pt


def _set(key, fn):
    def mutate(d):
        d[key] = fn(d[key])
        return d

    return mutate


def _zero_count(d):
    counts = d["num_atoms"].clone()
    counts[0, 0] += counts[0, 1]  # keeps sum(num_atoms) == len(atom_types)
    counts[0, 1] = 0
    d["num_atoms"] = counts
    return d


def _atom_type(value):
    def fn(t):
        t = t.clone()
        t[0, 3] = value
        return t

    return fn


def _one_hot(t, with_eval_dim):
    z = t[0]
    oh = torch.nn.functional.one_hot(z - 1, 100).float()  # [N, 100], as some tools write
    return oh[None] if with_eval_dim else oh


def _drop_eval_dim(d):
    return {k: v[0] for k, v in d.items()}


#: (case, mutation, message fragment): every file-level inconsistency of the brief.
BAD_FILES = [
    ("num_atoms sum", _set("num_atoms", lambda t: t + torch.tensor([[1, 0, 0, 0, 0]])),
     "num_atoms sums to 26 atoms but atom_types holds 25; expected sum(num_atoms) == len(atom_types)"),
    ("num_atoms sum, frac_coords", _set("frac_coords", lambda t: t[:, :-1]),
     "num_atoms sums to 25 atoms but frac_coords holds 24"),
    ("lengths short", _set("lengths", lambda t: t[:, :-1]),
     "lengths has 4 rows but num_atoms lists 5 crystals; expected one row of lengths per crystal"),
    ("angles count", _set("angles", lambda t: torch.cat([t, t[:, :2]], dim=1)),
     "angles has 7 rows but num_atoms lists 5 crystals"),
    ("one-hot, no eval dim", lambda d: {**_drop_eval_dim(d), "atom_types": _one_hot(d["atom_types"], False)},
     "atom_types has shape [25, 100]; expected atomic numbers [N]"),
    ("one-hot, eval dim", _set("atom_types", lambda t: _one_hot(t, True)),
     "atom_types has shape [1, 25, 100]; expected atomic numbers [N]"),
    ("one-hot ints, eval dim elsewhere", _set("atom_types", lambda t: _one_hot(t, False).long()),
     "atom_types has shape [25, 100]; expected atomic numbers [N]"),
    ("atom type 0", _set("atom_types", _atom_type(0)),
     "atom_types[3] = 0 (crystal 0) is not an atomic number 1..118"),
    ("atom type 200", _set("atom_types", _atom_type(200)),
     "atom_types[3] = 200 (crystal 0) is not an atomic number 1..118"),
    ("fractional atom type", _set("atom_types", lambda t: _atom_type(8.5)(t.double())),
     "atom_types must hold integer atomic numbers; found 8.5 at atom_types[3]"),
    ("zero num_atoms", _zero_count, "num_atoms[1] = 0: crystal 1 must have at least one atom (expected num_atoms >= 1"),
    ("negative num_atoms", _set("num_atoms", lambda t: t * torch.tensor([[2, 1, 1, -1, 1]])),
     "num_atoms[3] = -5: crystal 3 must have at least one atom"),
    ("fractional num_atoms", _set("num_atoms", lambda t: t.double() + torch.tensor([[0.5, -0.5, 0, 0, 0]])),
     "num_atoms must hold integer atom counts; found 5.5 at num_atoms[0]"),
    ("missing key", lambda d: {k: v for k, v in d.items() if k != "angles"},
     "not a CDVAE-format file; missing key(s) ['angles']"),
    ("not a dict", lambda d: [d["frac_coords"], d["atom_types"]],
     "not a CDVAE-format file; expected a dict with keys ['frac_coords', 'atom_types', 'lengths', 'angles', "
     "'num_atoms'], found a list"),
    ("num_evals differ", _set("frac_coords", lambda t: torch.cat([t, t])),
     "frac_coords has shape [2, 25, 3], i.e. num_evals = 2; expected num_evals = 1 as in num_atoms [1, 5]"),
    ("eval dim on one key only", _set("num_atoms", lambda t: t[0]),
     "frac_coords has shape [1, 25, 3]; expected [N, 3] (without a num_evals dimension, as num_atoms [5])"),
    ("num_atoms rank", _set("num_atoms", lambda t: t[..., None]),
     "num_atoms has shape [1, 5, 1]; expected [num_evals, B] or [B]"),
    ("frac_coords width", _set("frac_coords", lambda t: t[..., :2]),
     "frac_coords has shape [1, 25, 2]; expected [num_evals, N, 3] (3 values per row)"),
    ("strings", lambda d: {**d, "lengths": "5.0 5.0 5.0"}, "lengths is not a numeric array"),
]  # fmt: skip


@pytest.mark.parametrize("case, mutate, message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_inconsistent_file_is_refused_naming_file_and_key(tmp_path, crystals, case, mutate, message):
    pt = _write(tmp_path, crystals, mutate)
    with pytest.raises(ValueError) as exc:
        load_cdvae_pt(pt)
    text = str(exc.value)
    assert text.startswith(f"{pt}: "), text
    assert message in text
    # the same validation wherever a CDVAE file is read
    with pytest.raises(ValueError, match="^" + str(pt).replace("\\", "\\\\")):
        list(read_structures(pt))


CLI_CASES = ["num_atoms sum", "lengths short", "angles count", "one-hot, no eval dim", "atom type 200",
             "zero num_atoms", "missing key", "not a dict"]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_inconsistent_file_with_exit_2(tmp_path, crystals, reference, case, monkeypatch, capsys):
    _, mutate, message = next(c for c in BAD_FILES if c[0] == case)
    pt = _write(tmp_path, crystals, mutate)
    out = tmp_path / "eval"
    argv = ["gen", str(pt), "--reference", str(reference), "--dataset", "perov_5", "-o", str(out),
            "--workers", "1", "--no-plots", "-q"]  # fmt: skip
    with pytest.raises(ValueError, match="num_atoms|lengths|angles|atom_types|CDVAE") as exc:
        evaluate_cli.main(argv)
    assert message in str(exc.value)
    # the console script turns it into one line on stderr and exit status 2, and scores nothing
    monkeypatch.setattr(sys, "argv", ["srd-evaluate", *argv])
    with pytest.raises(SystemExit) as stop:
        evaluate_cli.entry()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("srd-evaluate: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_generated_file_is_validated_before_the_reference_is_read(tmp_path, crystals):
    pt = _write(tmp_path, crystals, BAD_FILES[0][1])
    ref = tmp_path / "ref_without_cif.csv"
    ref.write_text("material_id,formula\nx,NaCl\n")  # reading it would fail with "needs a 'cif' column"
    with pytest.raises(ValueError, match="num_atoms sums to 26 atoms"):
        evaluate_cli.main(["gen", str(pt), "--reference", str(ref), "--dataset", "perov_5", "-q"])


def test_eval_index_out_of_range(tmp_path, crystals):
    pt = _write(tmp_path, crystals)
    assert len(load_cdvae_pt(pt, eval_index=0)) == N_CRYSTALS
    with pytest.raises(ValueError, match=r"eval_index 1 is out of range; the file holds num_evals = 1"):
        load_cdvae_pt(pt, eval_index=1)
    flat = _write(tmp_path, crystals, _drop_eval_dim, name="flat.pt")
    with pytest.raises(ValueError, match="eval_index 1 is out of range; the file has no num_evals dimension"):
        load_cdvae_pt(flat, eval_index=1)


def test_second_evaluation_is_read(tmp_path, crystals):
    def two_evals(d):
        second = save_and_load(tmp_path, crystals[::-1])
        return {k: torch.cat([d[k], second[k]]) for k in d}

    pt = _write(tmp_path, crystals, two_evals)
    first, second = load_cdvae_pt(pt, eval_index=0), load_cdvae_pt(pt, eval_index=1)
    assert [s.composition for s in first] == [s.composition for s in crystals]
    assert [s.composition for s in second] == [s.composition for s in crystals[::-1]]


def save_and_load(tmp_path, structures):
    p = tmp_path / "other.pt"
    save_cdvae_pt(p, structures)
    return torch.load(p, weights_only=True)


def test_file_without_eval_dim_and_integral_float_types_read_like_cdvae_files(tmp_path, crystals):
    def flat_float_types(d):
        d = _drop_eval_dim(d)
        d["atom_types"] = d["atom_types"].double()  # 8.0, 22.0, ...: integral, unambiguous
        return d

    ref = load_cdvae_pt(_write(tmp_path, crystals, name="ref.pt"))
    got = load_cdvae_pt(_write(tmp_path, crystals, flat_float_types))
    assert len(got) == N_CRYSTALS
    for a, b, s in zip(got, ref, crystals):
        assert a.atomic_numbers == b.atomic_numbers == s.atomic_numbers
        assert np.allclose(a.lattice.abc, s.lattice.abc, atol=1e-4)
        assert np.allclose(a.frac_coords, b.frac_coords)


def test_size_limit_is_checked_before_crystals_are_built(tmp_path, crystals, monkeypatch):
    import srd.structures as st

    pt = _write(tmp_path, crystals)
    monkeypatch.setattr(st, "MAX_CDVAE_ATOMS", 24)
    monkeypatch.setattr(st, "structure_from_arrays", lambda *a: pytest.fail("built a crystal"))
    with pytest.raises(ValueError, match="25 atoms in 5 crystals exceed the limits of 24 atoms"):
        load_cdvae_pt(pt)


def _crystal(b, key, value):
    def mutate(d):
        t = d[key].clone()
        if key == "frac_coords":
            t[0, 5 * b + 1] = value  # an atom of crystal b (5 atoms each)
        else:
            t[0, b] = value
        d[key] = t
        return d

    return mutate


BAD_CRYSTALS = [
    ("frac_coords", torch.tensor([float("nan"), 0.1, 0.2]), "non-finite frac_coords"),
    ("frac_coords", torch.tensor([float("inf"), 0.1, 0.2]), "non-finite frac_coords"),
    ("lengths", torch.tensor([float("nan"), 4.0, 4.0]), "non-finite lattice lengths [nan, 4.0, 4.0]"),
    ("lengths", torch.tensor([-4.0, 4.0, 4.0]), "lattice lengths [-4.0, 4.0, 4.0] are not positive"),
    ("angles", torch.tensor([90.0, float("inf"), 90.0]), "non-finite lattice angles [90.0, inf, 90.0]"),
    ("angles", torch.tensor([10.0, 10.0, 170.0]), "lattice angles [10.0, 10.0, 170.0] (degrees) do not make a "
     "cell of positive volume"),
    ("angles", torch.tensor([0.0, 90.0, 90.0]), "lattice angles [0.0, 90.0, 90.0] (degrees) do not make a cell "
     "of positive volume"),
    ("angles", torch.tensor([90.0, 90.0, 180.0]), "lattice angles [90.0, 90.0, 180.0] (degrees) do not make a "
     "cell of positive volume"),
]  # fmt: skip


@pytest.mark.parametrize(
    "key, value, reason", BAD_CRYSTALS, ids=[f"{k}-{v.tolist()}" for k, v, _ in BAD_CRYSTALS]
)
def test_bad_crystal_is_one_invalid_entry(tmp_path, crystals, key, value, reason):
    got = load_cdvae_pt(_write(tmp_path, crystals, _crystal(2, key, value)))
    assert len(got) == N_CRYSTALS
    assert got[2] == f"invalid crystal ({reason})"
    for i in (0, 1, 3, 4):
        assert isinstance(got[i], Structure) and got[i].composition == crystals[i].composition
        assert np.allclose(got[i].frac_coords, crystals[i].frac_coords, atol=1e-6)
    records = list(read_structures(tmp_path / "eval_gen.pt"))
    assert records[2].error == f"eval_gen.pt crystal 2: invalid crystal ({reason})"
    assert [r.structure is not None for r in records] == [True, True, False, True, True]


def test_save_cdvae_pt_round_trip_keeps_placeholders_aligned(tmp_path, crystals):
    pt = tmp_path / "eval_recon.pt"
    save_cdvae_pt(pt, [crystals[0], None, crystals[2], None])
    got = load_cdvae_pt(pt)
    assert len(got) == 4
    assert got[1] == got[3] == "invalid crystal (lattice lengths [0.0, 0.0, 0.0] are not positive)"
    assert got[0].composition == crystals[0].composition and got[2].composition == crystals[2].composition
    assert np.allclose(got[2].lattice.abc, crystals[2].lattice.abc, atol=1e-4)
    save_cdvae_pt(tmp_path / "empty.pt", [])
    assert load_cdvae_pt(tmp_path / "empty.pt") == []


def test_nan_structures_are_never_valid():
    nan = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [float("nan"), 0.5, 0.5]])
    assert not structure_validity(nan)
    ok = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cs = evaluate_structures([ok, nan], fingerprints=False, workers=1, show_progress=False)
    assert cs.readable.tolist() == [True, False]
    assert cs.comp_valid.tolist() == [True, False] and cs.struct_valid.tolist() == [True, False]
    assert "non-finite lattice or coordinates" in cs.errors[1]


def _per_crystal(out):
    with open(out / "per_crystal.csv") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def test_cli_counts_a_nan_crystal_invalid_and_scores_the_others_normally(
    tmp_path, crystals, reference, capsys
):
    args = ["--reference", str(reference), "--dataset", "perov_5", "--n-samples", "4", "--seeds", "0",
            "--workers", "1", "--no-plots", "-q"]  # fmt: skip
    clean = _write(tmp_path, crystals, name="clean.pt")
    assert evaluate_cli.main(["gen", str(clean), "-o", str(tmp_path / "clean"), *args]) == 0
    capsys.readouterr()
    bad = _write(tmp_path, crystals, _crystal(2, "frac_coords", torch.tensor([float("nan"), 0.1, 0.2])))
    assert evaluate_cli.main(["gen", str(bad), "-o", str(tmp_path / "bad"), *args]) == 0
    printed = capsys.readouterr().out

    m0 = json.loads((tmp_path / "clean" / "metrics.json").read_text())
    m = json.loads((tmp_path / "bad" / "metrics.json").read_text())
    assert m0["validity"]["n_valid"] == 5 and m0["validity"]["n_unreadable"] == 0
    v = m["validity"]
    assert (v["n_generated"], v["n_readable"], v["n_unreadable"], v["n_valid"]) == (5, 4, 1, 4)
    assert v["comp_valid"] == pytest.approx(80.0) and v["struct_valid"] == pytest.approx(80.0)
    why = "eval_gen.pt crystal 2: invalid crystal (non-finite frac_coords)"
    assert v["unreadable_examples"] == [{"id": "2", "error": why}]
    assert m["fingerprint_failures"]["generated"] == [{"id": "2", "stage": "read", "error": why}]
    # coverage: crystal 2 has no fingerprint (its reference twin is not covered) but stays in COV-P's denominator
    t0, t = m0["table"], m["table"]
    assert (t0["cov_recall"], t0["cov_precision"]) == (pytest.approx(100.0), pytest.approx(100.0))
    assert (t["cov_recall"], t["cov_precision"]) == (pytest.approx(80.0), pytest.approx(80.0))
    # the four other crystals score exactly as in the clean file
    rows0, rows = _per_crystal(tmp_path / "clean"), _per_crystal(tmp_path / "bad")
    for i in ("0", "1", "3", "4"):
        assert rows[i] == rows0[i]
    assert (rows["2"]["readable"], rows["2"]["comp_valid"], rows["2"]["struct_valid"], rows["2"]["valid"]) == (
        "0", "0", "0", "0")  # fmt: skip
    assert rows["2"]["error"] == why
    # the EMDs draw from the 4 valid crystals only
    assert m["emd"]["n_samples_used"] == 4
    assert np.isfinite(m["table"]["emd_density"]) and np.isfinite(m["table"]["emd_n_elements"])
    # the report says how many were unreadable and why
    md = (tmp_path / "bad" / "metrics.md").read_text()
    assert "Unreadable generated crystals: 1 of 5, counted invalid" in md and "non-finite frac_coords" in md
    assert "Unreadable generated crystals" not in (tmp_path / "clean" / "metrics.md").read_text()
    assert "Unreadable generated crystals: 1 of 5" in printed and "crystal 2: invalid crystal" in printed
