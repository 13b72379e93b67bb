"""The experiments behind README claims (srd.experiments.*), run as modules: --help and a tiny run each."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from helpers import DATA, ROOT

TEST = DATA / "perov_5" / "test.csv.gz"
VAL = DATA / "perov_5" / "val.csv.gz"


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # compare_denoisers sets the thread count


@pytest.mark.parametrize("name", ["recon_budget", "swap_basin", "compare_denoisers", "decoder_oracle"])
def test_help(name, capsys):
    import importlib

    mod = importlib.import_module(f"srd.experiments.{name}")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"python -m srd.experiments.{name}" in out


def test_runs_as_a_module_from_another_folder(tmp_path):
    """`python -m srd.experiments.recon_budget` works from any folder; a missing input is one clear line."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "srd.experiments.recon_budget",
            "data/perov_5/test.csv.gz",
            "--budgets",
            "tiny",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: no such input: data/perov_5/test.csv.gz" in proc.stderr and "Traceback" not in proc.stderr


def test_recon_budget(tmp_path, capsys):
    from srd.experiments.recon_budget import main

    out = tmp_path / "budgets"
    assert main([str(TEST), "--limit", "2", "--budgets", "tiny", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "| budget | match rate (%) |" in text and "| tiny |" in text
    assert "`--trials 1 --hops 1 --steps 5`" in text
    summary = json.loads((out / "tiny" / "summary.json").read_text())
    assert summary["counts"]["reconstructed"] == 2 and summary["config"]["algorithm"]["steps"] == 5
    with pytest.raises(SystemExit):
        main([str(TEST), "--budgets", "nope"])
    assert "unknown budget(s) nope; known: paper" in capsys.readouterr().err


def test_decoder_oracle(tmp_path, capsys):
    import pandas as pd

    from srd.experiments.decoder_oracle import main

    reference = tmp_path / "reference.csv"
    pd.read_csv(TEST, nrows=20).to_csv(reference, index=False)
    out = tmp_path / "oracle"
    args = [str(VAL), str(reference), "--dataset", "perov_5", "--sample", "4", "--budget", "tiny"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "| real (unreconstructed) |" in text and "| reconstructed (tiny) |" in text
    assert "seeded sample of 4, seed 0" in text
    saved = json.loads((out / "oracle.json").read_text())
    real = saved["results"]["real (unreconstructed)"]["table"]
    assert real["comp_valid"] == 100.0  # real perovskites are charge-balanced
    sample = json.loads((out / "recon_tiny" / "sample.json").read_text())
    assert len(sample["ids"]) == 4 and sample["seed"] == 0


def test_swap_basin(capsys):
    from srd.experiments.swap_basin import main

    args = ["--input", str(TEST), "--budget", "tiny", "--descent-steps", "3", "--amplitudes", "0.05"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "crystal 3961: Ti1 Os1 N1 O1 F1, exchanging the sites of O and F" in text
    assert "1. loss of the exact truth with O and F exchanged" in text
    assert "A = 0.05: float32" in text and "3. the tiny budget (1 trials x 1 hops x 5 steps)" in text
    assert text.count("swap-prob") == 2
    with pytest.raises(ValueError, match="has no Cl"):
        main(["--input", str(TEST), "--swap", "O,Cl", "--budget", "tiny", "--descent-steps", "1"])


def test_compare_denoisers(tmp_path, capsys):
    from srd.experiments.compare_denoisers import main

    out = tmp_path / "compare"
    tiny = ["--train", str(VAL), "--test", str(TEST), "--limit", "24", "--out", str(out)]
    sizes = ["--steps", "2", "--batch-size", "8", "--n-samples", "4", "--slow-model-samples", "2"]
    sizes += ["--sampling-steps", "2", "--held-out", "4", "--threads", "1"]
    assert main([*tiny, *sizes, "--variants", "mlp"]) == 0
    res = json.loads((out / "results_mlp.json").read_text())["variants"]["mlp"]
    assert res["steps"] == 2 and res["n_samples"] == 4 and set(res["held_out_loss"]) >= {"10", "mean"}
    assert 0 <= res["clip"]["decode"]["accepted"] <= 1
    capsys.readouterr()
    assert main(["--report", "--out", str(out)]) == 0
    assert "mlp/clip" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown bogus"):
        main([*tiny, "--variants", "bogus"])


def test_scripts_folder_has_no_experiments():
    """The experiments live in the package; scripts/ keeps only repository tools."""
    for name in ("compare_denoisers.py", "recon_budget.py", "swap_basin.py"):
        assert not (ROOT / "scripts" / name).exists()
