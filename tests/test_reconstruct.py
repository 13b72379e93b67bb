"""Reconstruction (Algorithm 2): convergence from a perturbed truth, determinism, batch independence,
resume, bad input, the named budgets (presets) and their flags, and the CLI end to end (including torchrun
on 2 CPU processes)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher

from helpers import DATA, ROOT, real_crystals
from srd.reconstruction import ReconstructConfig, reconstruct
from srd.representation import decoded_from_structures, prepare_structure

MATCHER = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)


def _targets(dataset, n, n_max, start=0):
    structs = [prepare_structure(s, n_max=n_max) for s in real_crystals(dataset, start + n)[start:]]
    return structs, decoded_from_structures(structs, n_max=n_max)


@pytest.mark.parametrize("dataset,n_max", [("perov_5", 5), ("mp_20", 20)])
def test_perturbed_truth_comes_back(dataset, n_max):
    structs, targets = _targets(dataset, 2, n_max)
    rng = np.random.default_rng(0)
    initial = []
    for s, t in zip(structs, targets):
        # decoded lattices are in the standard orientation of Lattice.from_parameters: express the truth there
        frac = s.frac_coords[np.argsort(s.atomic_numbers, kind="stable")]
        initial.append(frac @ t.lattice_matrix() + rng.uniform(-0.15, 0.15, size=(len(s), 3)))
    cfg = ReconstructConfig(trials=1, hops=1, steps=150, lr=0.01, dtype="float64")
    res = reconstruct(targets, ["a", "b"], config=cfg, initial=initial)
    for s, r in zip(structs, res):
        assert r.loss < 1e-4, r.loss
        rms = MATCHER.get_rms_dist(r.structure, s)
        assert rms is not None and rms[0] < 0.02, rms


def test_random_start_finds_a_perovskite():
    structs, targets = _targets("perov_5", 1, 5, start=1)  # TlRuO2F
    res = reconstruct(targets, ["x"], config=ReconstructConfig(trials=4, hops=2, steps=150))
    assert MATCHER.fit(res[0].structure, structs[0]), res[0].trial_losses


def test_seeded_and_independent_of_batching():
    _, targets = _targets("perov_5", 3, 5)
    cfg = ReconstructConfig(trials=2, hops=2, steps=20)
    keys = ["a", "b", "c"]
    full = reconstruct(targets, keys, config=cfg)
    again = reconstruct(targets, keys, config=cfg)
    alone = reconstruct(targets[1:2], keys[1:2], config=cfg)
    other_seed = reconstruct(targets, keys, config=ReconstructConfig(trials=2, hops=2, steps=20, seed=1))
    for x, y in zip(full, again):
        assert np.array_equal(x.structure.cart_coords, y.structure.cart_coords) and x.loss == y.loss
    assert np.array_equal(full[1].structure.cart_coords, alone[0].structure.cart_coords)
    assert full[1].loss == alone[0].loss
    assert not np.array_equal(full[0].structure.cart_coords, other_seed[0].structure.cart_coords)


def test_early_stopping_leaves_other_crystals_alone():
    _, targets = _targets("perov_5", 3, 5)
    keys = ["a", "b", "c"]
    base = ReconstructConfig(trials=2, hops=3, steps=40)
    plain = reconstruct(targets, keys, config=base)
    losses = sorted(r.loss for r in plain)
    tol = (losses[0] + losses[1]) / 2 if losses[0] < losses[1] else losses[0]
    stopped = reconstruct(targets, keys, config=ReconstructConfig(trials=2, hops=3, steps=40, tol=tol))
    for p, s in zip(plain, stopped):
        if min(p.trial_losses) > tol:  # never reached the tolerance: bit-identical
            assert np.array_equal(p.structure.cart_coords, s.structure.cart_coords) and p.loss == s.loss
        else:
            assert s.evaluations <= p.evaluations


def test_dmin_weight_keeps_the_targets_dmin():
    """A target whose d_min disagrees with its EAD (as generated ones can): the weight decides who wins."""
    structs, targets = _targets("perov_5", 1, 5)
    t = targets[0]
    want = float(t.target[-1]) - 1.0  # ask for atoms 1 A closer than the EAD block says
    target = t.target.clone()
    target[-1] = want
    bent = type(t)(t.n_atoms, t.numbers, t.lengths, t.angles, target)
    frac = structs[0].frac_coords[np.argsort(structs[0].atomic_numbers, kind="stable")]
    start = [frac @ t.lattice_matrix()]

    def dmin_after(weight):
        cfg = ReconstructConfig(trials=1, hops=1, steps=150, lr=0.01, dtype="float64", dmin_weight=weight)
        s = reconstruct([bent], ["x"], config=cfg, initial=start)[0].structure
        m = s.distance_matrix + np.eye(len(s)) * 99
        return float(m.min())

    plain, heavy = dmin_after(1.0), dmin_after(1000.0)
    assert abs(heavy - want) < 0.1, (heavy, want)
    assert abs(heavy - want) < abs(plain - want), (plain, heavy, want)
    with pytest.raises(ValueError, match=r"dmin_weight: expected a finite number >= 0, found -1"):
        ReconstructConfig(dmin_weight=-1)


def test_bad_input():
    _, targets = _targets("perov_5", 1, 5)
    with pytest.raises(ValueError, match=r"1 targets but 2 keys"):
        reconstruct(targets, ["a", "b"])
    bad = type(targets[0])(
        targets[0].n_atoms, targets[0].numbers, targets[0].lengths, targets[0].angles, targets[0].target[:10]
    )
    with pytest.raises(ValueError, match=r"target 0 \(a\) has \(10,\) values, expected \(601\)|expected 601"):
        reconstruct([bad], ["a"])
    with pytest.raises(
        ValueError, match=r"invalid ReconstructConfig: trials: expected an integer >= 1, found 0"
    ):
        ReconstructConfig(trials=0)
    with pytest.raises(ValueError, match=r"initial positions 0 have shape \(2, 3\), expected \(5, 3\)"):
        reconstruct(
            targets, ["a"], config=ReconstructConfig(trials=1, hops=1, steps=1), initial=[np.zeros((2, 3))]
        )


# ------------------------------------------------------------------------------------------------
# Validation and named budgets (presets/reconstruct.toml)
# ------------------------------------------------------------------------------------------------
def test_config_validation_lists_every_problem():
    with pytest.raises(ValueError) as exc:
        ReconstructConfig(trials=0, lr=-1.0, dtype="half", swap_prob=2.0, tol=float("nan"), polish_steps=-1)
    msg = str(exc.value)
    assert msg.startswith("invalid ReconstructConfig: ")
    for part in (
        "trials: expected an integer >= 1, found 0",
        "lr: expected a finite number > 0, found -1.0",
        "dtype: expected 'float32' or 'float64', found 'half'",
        "swap_prob: expected a number in [0, 1], found 2.0",
        "tol: expected None or a finite number >= 0, found nan",
        "polish_steps: expected an integer >= 0, found -1",
    ):
        assert part in msg, (part, msg)
    # wrong types are problems too; from_dict adds unknown keys to the same message
    with pytest.raises(ValueError) as exc:
        ReconstructConfig.from_dict({"trials": "6", "hops": True, "stepz": 3}, where="my.toml")
    msg = str(exc.value)
    assert msg.startswith("my.toml: invalid ReconstructConfig: ")
    assert "unknown key 'stepz'" in msg and "trials: expected an integer >= 1, found '6'" in msg
    assert "hops: expected an integer >= 1, found True" in msg
    # numbers are coerced to the field's type (TOML and NumPy values)
    cfg = ReconstructConfig(lr=1, trials=np.int64(2))
    assert type(cfg.lr) is float and type(cfg.trials) is int
    assert cfg.replace(seed=3) == ReconstructConfig(lr=1.0, trials=2, seed=3)


def test_presets_are_data_with_the_known_values():
    from srd.reconstruction import BUDGETS, PRESETS, PRESETS_FILE, preset

    assert PRESETS_FILE.is_file() and PRESETS_FILE.parent.parent.name == "srd"
    assert list(PRESETS)[:5] == ["paper", "paper+swap", "paper/10", "fast", "fast+sym"]
    assert all(p.description and "\n" not in p.description for p in PRESETS.values())
    assert ReconstructConfig.preset("paper") == ReconstructConfig()  # the paper's Algorithm 2 exactly
    assert ReconstructConfig.preset("paper").evaluations_per_crystal == 12600
    assert preset("paper+swap") == ReconstructConfig(swap_prob=0.5, tol=1e-4)
    assert preset("paper/10") == ReconstructConfig(trials=6, hops=2, steps=105)
    fast = ReconstructConfig(
        trials=6, hops=2, steps=95, polish_steps=10, tol=1e-4, template_trials=4, template_screen=60
    )
    assert preset("fast") == fast
    assert fast.evaluations_per_crystal == 1260  # the "a tenth of the paper's budget"
    assert preset("fast+sym") == fast.replace(symmetrize_tol=0.1)
    assert preset("gen") == fast.replace(symmetrize_tol=0.1, start_gain=0.5)  # srd-sample's default
    noscreen = ReconstructConfig(trials=6, hops=2, steps=100, polish_steps=10, tol=1e-4, template_trials=4)
    assert preset("fast/noscreen") == noscreen
    assert preset("fast/uniform") == noscreen.replace(template_trials=0)
    assert preset("fast/symmetric") == noscreen.replace(template_trials=0, symmetric_trials=4)
    assert preset("paper+templates") == ReconstructConfig(
        steps=290, polish_steps=50, tol=1e-4, template_trials=4
    )
    for name in ("paper+templates", "fast-630", "fast-2520"):
        assert (
            preset(name).evaluations_per_crystal
            <= {"paper+templates": 12600, "fast-630": 630, "fast-2520": 2520}[name]
        )
    fast_2k = ReconstructConfig(trials=3, hops=8, steps=100, tol=1e-4, swap_prob=0.5, polish_steps=50)
    assert preset("fast-2k") == fast_2k
    assert preset("fast-noswap") == fast_2k.replace(swap_prob=0.0)
    assert preset("tiny") == ReconstructConfig(trials=1, hops=1, steps=5)
    assert preset("fast", seed=7, trials=8) == fast.replace(seed=7, trials=8)
    assert BUDGETS["paper"] == ["--trials", "6", "--hops", "7", "--steps", "300"]
    assert BUDGETS["fast"][-2:] == ["--template-screen", "60"]
    with pytest.raises(ValueError, match=r"unknown reconstruction preset 'nope'; known: paper, paper\+swap"):
        preset("nope")
    with pytest.raises(ValueError, match=r"preset 'fast' with overrides: .*trials: expected an integer >= 1"):
        preset("fast", trials=0)


def test_bad_preset_file_lists_every_problem(tmp_path):
    from srd.reconstruction.config import _load_presets

    bad = tmp_path / "presets.toml"
    bad.write_text(
        '[a]\ndescription = "x"\ntrials = 0\n[b]\nhops = 2\n[c]\ndescription = "y"\nsteps = "many"\n'
    )
    with pytest.raises(ValueError) as exc:
        _load_presets(bad)
    msg = str(exc.value)
    assert "'a'" in msg and "trials: expected an integer >= 1, found 0" in msg
    assert "[b]: expected a one-line 'description'" in msg and "steps: expected an integer >= 1" in msg


def test_budget_flag_sets_defaults_and_flags_override(capsys):
    from srd.cli import sample as sample_cli
    from srd.cli._common import reconstruct_config
    from srd.cli.reconstruct import build_parser
    from srd.reconstruction import preset

    p = build_parser()
    base = ["in.csv", "-o", "out"]
    assert reconstruct_config(p.parse_args(base)) == preset("paper")  # srd-reconstruct's default budget
    args = p.parse_args([*base, "--budget", "fast", "--trials", "6", "--seed", "3"])
    assert reconstruct_config(args) == preset("fast", trials=6, seed=3)
    args = p.parse_args([*base, "--budget", "fast", "--tol", "none", "--swap-prob", "0"])
    assert reconstruct_config(args) == preset("fast", tol=None, swap_prob=0.0)
    assert reconstruct_config(p.parse_args([*base, "--trials", "2"])) == ReconstructConfig(trials=2)
    sp = sample_cli.build_parser()
    args = sp.parse_args(["run", "-n", "2", "-o", "out"])
    assert args.budget == sample_cli.DEFAULT_BUDGET == "gen" and reconstruct_config(args) == preset("gen")
    args = sp.parse_args(["run", "-n", "2", "-o", "out", "--budget", "tiny", "--dmin-weight", "10"])
    assert reconstruct_config(args) == preset("tiny", dmin_weight=10.0)
    # every preset equals its documented flags (presets.toml, --help) given on the command line
    from srd.reconstruction import PRESETS

    for name, pre in PRESETS.items():
        assert reconstruct_config(p.parse_args([*base, "--budget", "tiny", *pre.flags()])) == preset(name), (
            name
        )
    with pytest.raises(SystemExit):
        p.parse_args([*base, "--budget", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    out = capsys.readouterr().out
    from srd.reconstruction import PRESETS

    for name, pre in PRESETS.items():
        assert name in out and pre.description in out
    section = out.split("\nreconstruction:\n")[1]  # the last group of --help
    assert "--trials" in section and "(default: None)" not in section


def test_preset_values_reach_the_run(tmp_path):
    out = tmp_path / "out"
    args = [str(DATA / "perov_5" / "test.csv.gz"), "-o", str(out), "--limit", "1", "--budget", "tiny"]
    from srd.cli.reconstruct import main as reconstruct_main

    assert reconstruct_main([*args, "--steps", "3", "--quiet"]) == 0
    import json

    algo = json.loads((out / "summary.json").read_text())["config"]["algorithm"]
    assert (algo["trials"], algo["hops"], algo["steps"], algo["tol"]) == (1, 1, 3, None)


# ------------------------------------------------------------------------------------------------
# The CLI: outputs, resume, torchrun
# ------------------------------------------------------------------------------------------------
from srd.cli.reconstruct import main  # noqa: E402

FAST = ["--trials", "2", "--hops", "2", "--steps", "15", "--quiet"]


def _rows(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_cli_outputs_and_match_rate(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(DATA / "perov_5" / "test.csv.gz"), "-o", str(out), "--limit", "4", *FAST]) == 0
    text = capsys.readouterr().out
    assert "match rate" in text
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["3961", "11922", "6694", "3335"]
    assert all((out / "cifs" / f"{r['id']}.cif").is_file() for r in rows)
    data = torch.load(out / "eval_recon.pt", weights_only=True)
    assert data["num_atoms"].shape == (1, 4) and data["frac_coords"].shape == (1, 20, 3)
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["reconstructed"] == 4 and "match_rate" in summary["reconstruction"]
    assert summary["config"]["algorithm"]["trials"] == 2 and summary["config"]["srd_version"]


def test_cli_resume_gives_the_same_files(tmp_path, monkeypatch):
    args = [str(DATA / "perov_5" / "test.csv.gz"), "--limit", "4", "--batch-size", "2", *FAST]
    ref = tmp_path / "ref"
    assert main([*args[:1], "-o", str(ref), *args[1:]]) == 0
    # Interrupt the second batch of another run, then rerun it.
    import srd.reconstruction.job as job

    calls = {"n": 0}
    real = job.reconstruct

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "out"
    monkeypatch.setattr(job, "reconstruct", flaky)
    with pytest.raises(KeyboardInterrupt):
        main([*args[:1], "-o", str(out), *args[1:]])
    assert len(list((out / "cifs").glob("*.cif"))) == 2  # the finished batch was kept
    monkeypatch.setattr(job, "reconstruct", real)
    assert main([*args[:1], "-o", str(out), *args[1:]]) == 0
    for a, b in zip(_rows(ref), _rows(out)):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }
    for f in (ref / "cifs").glob("*.cif"):
        assert f.read_text() == (out / "cifs" / f.name).read_text()
    # A different configuration is refused instead of mixing results.
    with pytest.raises(ValueError, match=r"holds a run with a different configuration"):
        main(
            [
                str(DATA / "perov_5" / "test.csv.gz"),
                "-o",
                str(out),
                "--limit",
                "4",
                "--trials",
                "3",
                "--quiet",
            ]
        )


def test_cli_representations_input_with_rejections(tmp_path):
    from srd.representation import Features, featurize

    feats = featurize(
        DATA / "perov_5" / "test.csv.gz", limit=3, use_cache=False, show_progress=False, workers=1
    )
    R = feats.R.clone()
    R[1, feats.layout.composition] = -1.0  # no element: rejected at decoding
    Features(R, ["g0", "g1", "g2"], feats.stats, feats.n_max, feats.params, feats.dataset).save(
        tmp_path / "r.pt"
    )
    out = tmp_path / "out"
    assert main([str(tmp_path / "r.pt"), "-o", str(out), *FAST]) == 0
    rows = {r["id"]: r for r in _rows(out)}
    assert rows["g1"]["status"] == "rejected" and "no element" in rows["g1"]["reason"]
    assert rows["g0"]["status"] == "ok" and rows["g2"]["status"] == "ok"


def test_cli_torchrun_two_ranks(tmp_path):
    out = tmp_path / "dist"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29533",
        "-m",
        "srd.cli.reconstruct",
        str(DATA / "perov_5" / "test.csv.gz"),
        "-o",
        str(out),
        "--limit",
        "4",
        *FAST,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (out / "parts").glob("*.csv")) == ["rank0.csv", "rank1.csv"]
    single = tmp_path / "single"
    assert main([str(DATA / "perov_5" / "test.csv.gz"), "-o", str(single), "--limit", "4", *FAST]) == 0
    for a, b in zip(_rows(single), _rows(out)):
        assert a["id"] == b["id"] and a["loss"] == b["loss"]
