"""Seeded random samples for reconstruction: srd-reconstruct --sample N --sample-seed S (and the engine
reconstruct_input, and srd.experiments.recon_budget): deterministic for a seed, another seed draws other
rows, the rows and ids are saved (sample.json, summary.json), resume guards, and --sample with --limit is
an error. Tiny budget and a 12-row slice of data/perov_5/test.csv.gz."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import DATA
from srd.cli.reconstruct import main
from srd.reconstruction import SAMPLE_METHOD, reconstruct_input, sample_rows
from srd.structures import count_structures, read_structures

TINY = ["--budget", "tiny", "--quiet"]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The first 12 rows of the Perov-5 test split as a CSV (ids: material_id)."""
    path = tmp_path_factory.mktemp("split") / "perov_12.csv"
    pd.read_csv(DATA / "perov_5" / "test.csv.gz").head(12).to_csv(path, index=False)
    return path


def _ids(split):
    return pd.read_csv(split, dtype={"material_id": str})["material_id"].tolist()


def _json(path):
    return json.loads(path.read_text())


def test_sample_rows_is_seeded_uniform_without_replacement():
    a = sample_rows(3785, 50, 0)
    assert a == sample_rows(3785, 50, 0)  # deterministic for a seed
    assert a != sample_rows(3785, 50, 1)  # another seed, another sample
    assert a == sorted(set(a)) and len(a) == 50 and 0 <= a[0] and a[-1] < 3785  # file order, no repeats
    assert a == sorted(np.random.default_rng(0).choice(3785, size=50, replace=False).tolist())
    assert sample_rows(5, 5, 3) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"a sample of 6 crystals asked for, but the input holds only 5"):
        sample_rows(5, 6, 0)
    with pytest.raises(ValueError, match=r"sample seed: expected an integer >= 0, found -1"):
        sample_rows(5, 2, -1)


def test_read_structures_rows_keep_the_inputs_ids(split):
    ids = _ids(split)
    assert count_structures(split) == 12
    recs = list(read_structures(split, rows=[1, 7, 11]))
    assert [r.id for r in recs] == [ids[1], ids[7], ids[11]] and all(r.structure is not None for r in recs)
    with pytest.raises(ValueError, match=r"row\(s\) \[12\] out of range: the input holds 12 crystals"):
        list(read_structures(split, rows=[3, 12]))
    with pytest.raises(ValueError, match=r"give limit or rows, not both"):
        list(read_structures(split, limit=2, rows=[0]))


def test_cli_sample_is_saved_deterministic_and_seeded(split, tmp_path, capsys):
    ids = _ids(split)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main([str(split), "-o", str(a), "--sample", "4", "--sample-seed", "0", *TINY]) == 0
    out = capsys.readouterr().out
    assert "seeded sample of 4 of 12 crystals (sample seed 0)" in out and "sample.json" in out
    smp = _json(a / "sample.json")
    assert (smp["n"], smp["seed"], smp["population"], smp["method"]) == (4, 0, 12, SAMPLE_METHOD)
    assert smp["rows"] == sample_rows(12, 4, 0) and smp["ids"] == [ids[k] for k in smp["rows"]]
    summary = _json(a / "summary.json")
    assert (
        summary["sample"] == smp and summary["counts"]["input"] == 4 and summary["reconstruction"]["n"] == 4
    )
    assert summary["config"]["input"]["sample"] == {"n": 4, "seed": 0, "population": 12}
    results = pd.read_csv(a / "results.csv", dtype={"id": str})
    assert results["id"].tolist() == smp["ids"]  # in file order

    # The same seed into another folder: the same crystals; the default seed is 0.
    assert main([str(split), "-o", str(b), "--sample", "4", *TINY]) == 0
    assert _json(b / "sample.json") == smp
    # Another seed: other rows.
    assert main([str(split), "-o", str(c), "--sample", "4", "--sample-seed", "1", *TINY]) == 0
    other = _json(c / "sample.json")
    assert other["seed"] == 1 and other["rows"] == sample_rows(12, 4, 1) and other["rows"] != smp["rows"]
    assert other["ids"] == [ids[k] for k in other["rows"]]


def test_rerun_resumes_the_same_sample_and_refuses_another(split, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(split), "-o", str(out), "--sample", "3", "--sample-seed", "2", *TINY]
    assert main(args) == 0
    before = (out / "results.csv").read_text()
    assert main(args) == 0  # same settings: resumes (nothing left to do), same results
    assert (out / "results.csv").read_text() == before
    for other in (
        ["--sample", "3", "--sample-seed", "3"],
        ["--sample", "4", "--sample-seed", "2"],
        ["--limit", "3"],
    ):
        with pytest.raises(ValueError, match=r"holds a run with a different configuration or input.*sample"):
            main([str(split), "-o", str(out), *other, *TINY])
    assert _json(out / "sample.json")["seed"] == 2  # the refused reruns left it alone
    # A sample.json that disagrees with the draw (e.g. edited, or another numpy) is refused too.
    smp = _json(out / "sample.json")
    (out / "sample.json").write_text(json.dumps({**smp, "rows": [0, 1, 2]}))
    with pytest.raises(ValueError, match=r"holds a run on a different sample of the input"):
        main(args)


def test_sample_and_limit_are_mutually_exclusive(split, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(split), "-o", str(tmp_path / "x"), "--sample", "2", "--limit", "2", *TINY])
    assert exc.value.code == 2
    assert "argument --limit: not allowed with argument --sample" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(split), "-o", str(tmp_path / "x"), "--sample-seed", "1", *TINY])
    assert exc.value.code == 2 and "--sample-seed needs --sample N" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"sample \(--sample\) and limit \(--limit\) are mutually exclusive"):
        reconstruct_input(split, tmp_path / "y", limit=2, sample=2)
    with pytest.raises(ValueError, match=r"--sample 13: .*perov_12.csv holds only 12 crystals"):
        main([str(split), "-o", str(tmp_path / "z"), "--sample", "13", *TINY])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    from srd.experiments.recon_budget import main as budget_main

    with pytest.raises(SystemExit) as exc:
        budget_main([str(split), "--sample", "2", "--limit", "2", "--budgets", "tiny"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_help_explains_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # help wraps with the terminal width
    assert "--sample N" in text and "--sample-seed S" in text and "OUT/sample.json" in text
    assert "independent of the search's" in text and "default_rng(S)" in text


def test_representations_input_sample(tmp_path):
    from srd.representation import featurize

    feats = featurize(
        DATA / "perov_5" / "test.csv.gz", limit=6, use_cache=False, show_progress=False, workers=1
    )
    feats.save(tmp_path / "r.pt")
    out = tmp_path / "out"
    assert main([str(tmp_path / "r.pt"), "-o", str(out), "--sample", "2", "--sample-seed", "5", *TINY]) == 0
    smp = _json(out / "sample.json")
    assert smp["population"] == 6 and smp["ids"] == [feats.ids[k] for k in sample_rows(6, 2, 5)]


def test_recon_budget_sample(split, tmp_path, capsys):
    from srd.experiments.recon_budget import main as budget_main

    out = tmp_path / "budgets"
    args = [
        str(split),
        "--sample",
        "3",
        "--sample-seed",
        "4",
        "--budgets",
        "tiny",
        "--out",
        str(out),
        "--quiet",
    ]
    assert budget_main(args) == 0
    text = capsys.readouterr().out
    assert "(seeded sample of 3 (seed 4) of 12 crystals), run seed 0:" in text and "first 3" not in text
    assert "| tiny |" in text
    smp = _json(out / "tiny" / "sample.json")
    assert (smp["n"], smp["seed"], smp["rows"]) == (3, 4, sample_rows(12, 3, 4))
