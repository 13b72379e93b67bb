"""srd-evaluate repr: R-space metrics of generated vectors, without reconstruction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from srd.cli.evaluate import main
from srd.descriptor import EADParams
from srd.metrics.repr_eval import (
    block_slices,
    check_compatible,
    evaluate_representations,
    load_representations,
    nearest_neighbour_distances,
    repr_metrics,
)
from srd.representation import Features, Layout, ScalingStats, featurize

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def perov_csv(perov_rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("repr") / "perov_5_rows.csv"
    perov_rows.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def perov_feats(perov_csv) -> Features:
    return featurize(perov_csv, dataset="perov_5", workers=1, show_progress=False)


def _copy(f: Features, R: torch.Tensor | None = None) -> Features:
    return Features(f.R.clone() if R is None else R, list(f.ids), f.stats, f.n_max, f.params, f.dataset)


def _synthetic(n_features: int, m: int = 6) -> Features:
    layout = Layout(n_features)
    n = layout.continuous.stop
    stats = ScalingStats(torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64), layout)
    params = EADParams(mus=tuple(0.2 * k for k in range(n_features // 6)))
    assert params.n_features == n_features
    R = torch.rand((m, layout.dim))
    return Features(R, [str(i) for i in range(m)], stats, 5, params, "perov_5")


def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(37, 5)), rng.normal(size=(23, 5))
    a2b, b2a = nearest_neighbour_distances(a, b, chunk=7)
    d = cdist(a, b)
    np.testing.assert_allclose(a2b, d.min(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b2a, d.min(axis=0), rtol=1e-12, atol=1e-12)
    # identical rows are exactly 0 apart (the distance is recomputed directly)
    a2a, _ = nearest_neighbour_distances(a * 1e3, a * 1e3, chunk=5)
    assert np.all(a2a == 0)


def test_self_comparison_is_zero(perov_feats):
    res = repr_metrics(perov_feats, _copy(perov_feats))
    assert set(res["blocks"]) == set(block_slices(perov_feats.layout))
    for name, b in res["blocks"].items():
        assert b["nn_gen_to_ref_mean"] == 0 and b["nn_ref_to_gen_mean"] == 0, name
        assert b["w1_mean"] == 0 and b["w1_max"] == 0, name
    assert res["emd"]["density"]["mean"] == 0 and res["emd"]["n_elements"]["mean"] == 0
    g = res["decoded"]["generated"]
    assert g["decoded_pct"] == 100 and g["comp_valid_pct"] == 100 and g["rejection_reasons"] == {}
    assert 3 <= g["density_mean"] <= 12  # perovskites, g/cm^3
    assert res["decoded"]["reference"] == g


def test_shifted_block_changes_only_that_block(perov_feats):
    layout = perov_feats.layout
    R = perov_feats.R.clone()
    R[:, layout.lattice] += 0.1
    res = repr_metrics(_copy(perov_feats, R), perov_feats)
    b = res["blocks"]
    assert b["lattice"]["w1_mean"] == pytest.approx(0.1, abs=1e-6)
    assert b["lattice"]["nn_gen_to_ref_mean"] > 0.01 and b["lattice"]["nn_ref_to_gen_mean"] > 0.01
    assert b["all"]["nn_gen_to_ref_mean"] > 0
    for name in ("ead", "ead_max", "ead_min", "dmin", "composition", "size"):
        assert b[name]["nn_gen_to_ref_mean"] == 0 and b[name]["w1_mean"] == 0, name
    assert res["emd"]["density"]["mean"] > 0  # larger cells: lower density
    assert res["emd"]["n_elements"]["mean"] == 0


def test_rejections_are_counted(perov_feats):
    R = perov_feats.R.clone()
    R[:3, perov_feats.layout.composition] = -1.0  # no element
    res = repr_metrics(_copy(perov_feats, R), perov_feats)
    g = res["decoded"]["generated"]
    assert g["n_decoded"] == len(R) - 3
    assert sum(g["rejection_reasons"].values()) == 3
    assert any("no element" in k for k in g["rejection_reasons"])
    assert res["blocks"]["composition"]["nn_gen_to_ref_mean"] > 0


def test_mismatched_dimensions_raise():
    a, b = _synthetic(300), _synthetic(12)
    with pytest.raises(ValueError, match=r"different R dimensions.*\[6, 704\].*\[6, 128\]"):
        check_compatible(a, b)
    with pytest.raises(ValueError, match="different R dimensions"):
        repr_metrics(a, b)
    c = _synthetic(300)
    c.n_max = 20
    with pytest.raises(ValueError, match="different n_max"):
        check_compatible(a, c)


def test_mismatched_grid_raises():
    a = _synthetic(300)
    other = EADParams(mus=tuple(0.1 * k for k in range(50)))
    b = Features(a.R.clone(), list(a.ids), a.stats, a.n_max, other, a.dataset)
    with pytest.raises(ValueError, match="different descriptor grids"):
        check_compatible(a, b)


def test_not_a_representations_file(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"a": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a representations file"):
        load_representations(bad)
    with pytest.raises(ValueError, match="representations.pt"):
        evaluate_representations(tmp_path, bad)
    txt = tmp_path / "x.txt"
    txt.write_text("")
    with pytest.raises(ValueError, match="expected a representations file"):
        evaluate_representations(txt, bad)


def test_other_statistics_are_rescaled(perov_feats):
    stats = perov_feats.stats
    wider = ScalingStats(stats.lo, stats.lo + 2.0 * (stats.hi - stats.lo), stats.layout)  # span x 2
    ref = Features(
        wider.scale(perov_feats.raw()).float(), list(perov_feats.ids), wider, 5, perov_feats.params, "perov_5"
    )
    res = repr_metrics(perov_feats, ref)
    assert res["blocks"]["all"]["nn_gen_to_ref_mean"] < 1e-5


def test_cli_writes_repr_json(perov_feats, perov_csv, tmp_path, capsys):
    run = tmp_path / "samples"
    run.mkdir()
    perov_feats.save(run / "representations.pt")
    out = tmp_path / "out"
    # GEN an srd-sample folder, REF crystals featurised here with GEN's statistics: the same R space
    code = main(["repr", str(run), "-r", str(perov_csv), "-o", str(out), "-q", "--workers", "1"])
    assert code == 0
    res = json.loads((out / "repr.json").read_text())
    assert res["scaling_statistics"] == "GEN's file"
    assert res["inputs"]["REF"]["kind"] == "crystals (featurised here)"
    assert res["blocks"]["all"]["nn_gen_to_ref_mean"] == 0 and res["blocks"]["ead"]["w1_mean"] == 0
    text = capsys.readouterr().out
    assert "| block | dim |" in text and "| lattice | 6 |" in text and "EMD density" in text
    # --subsample, and the default OUT of a folder GEN is the folder itself
    assert main(["repr", str(run), "-r", str(run / "representations.pt"), "--subsample", "5", "-q"]) == 0
    res = json.loads((run / "repr.json").read_text())
    assert res["n_generated"] == 5 and res["n_reference"] == 5


def test_cli_dimension_mismatch(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    _synthetic(300).save(a)
    _synthetic(12).save(b)
    with pytest.raises(ValueError, match=r"\[6, 704\].*\[6, 128\]"):
        main(["repr", str(a), "-r", str(b), "-o", str(tmp_path / "o"), "-q"])


def test_help_explains_every_flag(capsys):
    from srd.cli.evaluate import build_parser

    with pytest.raises(SystemExit) as exc:
        main(["repr", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    subparser = build_parser()._subparsers._group_actions[0].choices["repr"]
    for action in subparser._actions:
        for opt in action.option_strings:
            assert opt in text
        if action.option_strings and action.dest != "help":
            assert action.help, f"repr {action.option_strings} has no help text"
