"""The main job (`make demo`) in miniature: every step runs and the report is written."""

from __future__ import annotations

import json

from srd.demo import main


def test_demo_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--tiny", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## 1. Reconstruction (Table 1 protocol)" in report and "paper (StructRepDiff, Table 1)" in report
    assert "srd-reconstruct" in report and "srd-train" in report and "srd-sample" in report
    assert (out / "recon" / "summary.json").is_file() and (out / "samples" / "eval_gen.pt").is_file()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics  # the evaluation ran
    assert "report:" in capsys.readouterr().out
    # A rerun resumes (every step finds its outputs) and rewrites the report.
    assert main(["--tiny", "--out", str(out)]) == 0
