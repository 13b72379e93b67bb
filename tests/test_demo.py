"""The main job (`make demo`) in miniature: every step runs and the report is written."""

from __future__ import annotations

import json

import pytest

from helpers import DATA
from srd.demo import main


def test_demo_tiny(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    monkeypatch.chdir(tmp_path)  # data and configs do not depend on the current folder
    args = ["--tiny", "--out", str(out), "--data-dir", str(DATA)]
    assert main(args) == 0
    report = (out / "report.md").read_text()
    assert "## 1. Reconstruction (Table 1 protocol)" in report and "paper (StructRepDiff, Table 1)" in report
    assert "srd-reconstruct" in report and "srd-train" in report and "srd-sample" in report
    assert "--budget tiny" in report and "--config small" in report  # the equivalent commands
    assert (out / "recon" / "summary.json").is_file() and (out / "samples" / "eval_gen.pt").is_file()
    assert (out / "run" / "loss.png").is_file()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics  # the evaluation ran
    algo = json.loads((out / "samples" / "summary.json").read_text())["config"]["algorithm"]
    assert (algo["trials"], algo["steps"], algo["dmin_weight"]) == (1, 5, 10.0)
    assert "report:" in capsys.readouterr().out
    # A rerun resumes (every step finds its outputs) and rewrites the report.
    assert main(args) == 0
    assert "2/4 train (already done)" in (out / "report.md").read_text()


def test_demo_without_data_says_where_to_find_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ here
    with pytest.raises(FileNotFoundError, match=r"data/perov_5/test.csv.gz not found: .*--data-dir"):
        main(["--tiny", "--out", str(tmp_path / "demo")])
    assert not (tmp_path / "demo").exists()  # nothing written before the check
