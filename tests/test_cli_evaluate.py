"""Tests of the srd-evaluate command (gen and recon)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Structure

from srd.cli.evaluate import build_parser, main
from srd.structures import parse_cif, write_cif

DATA = Path(__file__).resolve().parents[1] / "data"
PEROV_TEST = DATA / "perov_5" / "test.csv.gz"
FIGURES = ("ead_pca.png", "density_hist.png", "n_elements_hist.png", "structures.png")


pytestmark = pytest.mark.usefixtures("isolated_cache")


def _cif_folder(root: Path, rows: pd.DataFrame) -> Path:
    for mid, cif in zip(rows["material_id"].astype(str), rows["cif"]):
        write_cif(root / "cifs" / f"{mid}.cif", parse_cif(cif))
    return root


def test_gen_on_cif_folder_against_itself(tmp_path, perov_rows, capsys):
    ref = tmp_path / "ref.csv"
    perov_rows.to_csv(ref, index=False)
    gen = _cif_folder(tmp_path / "samples", perov_rows)
    out = tmp_path / "eval"
    code = main(["gen", str(gen), "--reference", str(ref), "--dataset", "perov_5", "-o", str(out),
                 "--n-samples", "10", "--seeds", "0,1", "--workers", "2", "-q"])  # fmt: skip
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["validity"]["n_generated"] == 20
    assert m["smact_version"] == "2.2.1"
    assert m["run"]["srd_version"]
    assert m["settings"]["seeds"] == [0, 1] and m["settings"]["n_samples"] == 10
    assert m["coverage"]["cdvae"]["struct_cutoff"] == 0.2 and m["coverage"]["cdvae"]["comp_cutoff"] == 4.0
    assert m["coverage"]["symat"]["struct_cutoff"] == 0.8 and m["coverage"]["symat"]["comp_cutoff"] == 6.0
    assert m["table"]["cov_recall"] == pytest.approx(100.0) and m["table"]["cov_precision"] == pytest.approx(
        100.0
    )
    assert m["table"]["comp_valid"] == 100.0 and m["table"]["struct_valid"] == 100.0
    assert m["emd"]["n_samples_used"] == 10 and len(m["emd"]["density"]["per_seed"]) == 2
    assert m["fingerprint_failures"] == {"generated": [], "reference": []}
    md = (out / "metrics.md").read_text()
    for text in ("comp. validity", "struct. validity", "# elem.", "density", "COV-R", "COV-P", "SyMat",
                 "paper (StructRepDiff, Table 2)", "data ceiling", "98.17"):  # fmt: skip
        assert text in md
    for f in FIGURES:
        assert (out / f).stat().st_size > 1000
    assert len((out / "per_crystal.csv").read_text().splitlines()) == 21
    printed = capsys.readouterr().out
    assert "COV-R" in printed and "metrics.json" in printed


def test_gen_reads_a_cdvae_eval_gen_pt(tmp_path, perov_rows):
    rows = perov_rows.head(5)
    structs = [parse_cif(c) for c in rows["cif"]]
    # CDVAE's eval_gen.pt layout, written by hand: a leading num_evals dimension of 1
    data = {
        "frac_coords": torch.tensor(np.concatenate([s.frac_coords for s in structs]), dtype=torch.float32)[
            None
        ],
        "atom_types": torch.tensor(np.concatenate([s.atomic_numbers for s in structs]), dtype=torch.int64)[
            None
        ],
        "lengths": torch.tensor([s.lattice.abc for s in structs], dtype=torch.float32)[None],
        "angles": torch.tensor([s.lattice.angles for s in structs], dtype=torch.float32)[None],
        "num_atoms": torch.tensor([len(s) for s in structs], dtype=torch.int64)[None],
    }
    assert data["frac_coords"].shape == (1, 25, 3) and data["num_atoms"].shape == (1, 5)
    pt = tmp_path / "eval_gen.pt"
    torch.save(data, pt)
    ref = tmp_path / "ref.csv"
    perov_rows.to_csv(ref, index=False)
    code = main(["gen", str(pt), "--reference", str(ref), "--dataset", "perov_5", "--n-samples", "5", "--seeds", "0",
                 "--workers", "1", "--no-plots", "-q"])  # fmt: skip
    assert code == 0
    out = tmp_path / "eval_gen_metrics"  # default OUT for a file input
    m = json.loads((out / "metrics.json").read_text())
    assert m["validity"]["n_generated"] == 5 and m["validity"]["n_valid"] == 5
    assert m["table"]["cov_precision"] == pytest.approx(100.0)
    assert m["table"]["cov_recall"] >= 25.0 - 1e-9  # at least the 5 reference crystals it was made from
    assert not any((out / f).exists() for f in FIGURES)


def test_recon_matches_by_id(tmp_path, perov_rows, capsys):
    ref = tmp_path / "ref.csv"
    perov_rows.to_csv(ref, index=False)
    out = tmp_path / "recon"
    ids = perov_rows["material_id"].astype(str).tolist()[:5]
    rng = np.random.default_rng(1)
    for k, mid in enumerate(ids[:4]):
        s = parse_cif(perov_rows["cif"].iloc[k])
        if k == 3:  # a wrong reconstruction: all atoms moved far
            s.translate_sites([0, 1], [0.25, 0.1, 0.3], frac_coords=True)
        else:
            s = Structure(s.lattice, s.species, s.cart_coords + rng.normal(scale=0.01, size=(len(s), 3)),
                          coords_are_cartesian=True)  # fmt: skip
        write_cif(out / "cifs" / f"{mid}.cif", s)
    pd.DataFrame({"id": ids, "loss": np.zeros(5)}).to_csv(out / "results.csv", index=False)  # ids[4]: no CIF
    assert main(["recon", str(out), "--reference", str(ref), "--workers", "1", "-q"]) == 0
    res = json.loads((out / "recon_metrics.json").read_text())
    assert res["n"] == 5
    matched = {pc["id"]: pc["matched"] for pc in res["per_crystal"]}
    assert matched[ids[0]] and matched[ids[1]] and matched[ids[2]] and not matched[ids[4]]
    assert res["match_rate"] == pytest.approx(100.0 * res["n_matched"] / 5)
    assert res["n_predictions_missing_or_unreadable"] == 1
    assert res["rmse"] is not None and res["rmse"] < 0.1
    assert "cdvae_protocol" in res and res["cdvae_protocol"]["match_rate"] <= res["match_rate"]
    assert "match rate" in capsys.readouterr().out


def test_help_explains_every_flag(capsys):
    parser = build_parser()
    for sub in ("gen", "recon"):
        with pytest.raises(SystemExit) as exc:
            main([sub, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        subparser = parser._subparsers._group_actions[0].choices[sub]
        for action in subparser._actions:
            for opt in action.option_strings:
                assert opt in text
            if action.option_strings and action.dest != "help":
                assert action.help, f"{sub} {action.option_strings} has no help text"


def test_user_errors_are_value_errors(tmp_path, perov_rows):
    gen = _cif_folder(tmp_path / "g", perov_rows.head(2))
    with pytest.raises(FileNotFoundError, match="--reference"):
        main(["gen", str(gen), "--reference", str(tmp_path / "nope.csv")])
    ref = tmp_path / "ref.csv"
    perov_rows.head(2).to_csv(ref, index=False)
    with pytest.raises(ValueError, match="--dataset"):
        main(["gen", str(gen), "--reference", str(ref)])
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.csv").write_text("id\nnot-an-id\n")
    with pytest.raises(ValueError, match="not in the reference"):
        main(["recon", str(tmp_path / "r"), "--reference", str(ref)])
    with pytest.raises(SystemExit):
        main(["gen", str(gen), "--reference", str(ref), "--seeds", "a,b"])
