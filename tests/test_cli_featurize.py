"""srd-featurize end to end: summary, skips with reasons, statistics reuse, cache."""

from __future__ import annotations

import gzip

import pandas as pd
import torch

from helpers import DATA
from srd.cli.featurize import main
from srd.representation import Features
from srd.structures import read_structures


def _small_csv(tmp_path, n=6):
    df = pd.read_csv(DATA / "mp_20" / "test.csv.gz", nrows=n)
    bad = df.iloc[:3].copy()
    bad.loc[bad.index[0], "cif"] = "data_broken\n_cell_length_a 4\n loop_ nonsense"
    bad.loc[bad.index[0], "material_id"] = "broken-1"
    bad.loc[bad.index[1], "cif"] = ""
    bad.loc[bad.index[1], "material_id"] = "empty-2"
    # An element beyond Z = 96: rewrite a binary's symbols.
    cif = df.iloc[3]["cif"]
    el = cif.split("_chemical_formula_sum")[1].split("'")[1].split()[0].rstrip("0123456789")
    bad.loc[bad.index[2], "cif"] = (
        cif.replace(f" {el} ", " Cf ").replace(f"{el}0", "Cf0").replace(f"{el}1", "Cf1")
    )
    bad.loc[bad.index[2], "material_id"] = "heavy-3"
    out = pd.concat([df, bad])
    path = tmp_path / "mixed.csv.gz"
    with gzip.open(path, "wt") as f:
        out.to_csv(f, index=False)
    return path, len(out)


def test_featurize_reports_and_skips(tmp_path, capsys):
    path, n = _small_csv(tmp_path)
    out = tmp_path / "f.pt"
    assert main([str(path), "-o", str(out), "--n-max", "20", "--quiet", "--no-cache", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    f = Features.load(out)
    skipped = dict(f.skipped)
    assert "broken-1" in skipped and "unreadable CIF" in skipped["broken-1"]
    assert "empty-2" in skipped and "empty CIF" in skipped["empty-2"]
    assert "heavy-3" in skipped and "beyond Z = 96" in skipped["heavy-3"], skipped
    assert len(f.ids) + len(f.skipped) == n
    assert f"{n} crystals read" in text and f"{len(f.skipped)} skipped" in text
    assert f.R.shape == (len(f.ids), 704) and f.R.dtype == torch.float32
    # weights_only loading is enough
    assert isinstance(torch.load(out, weights_only=True), dict)


def test_featurize_stats_reuse_and_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SRD_CACHE_DIR", str(tmp_path / "cache"))
    train = tmp_path / "train.pt"
    test = tmp_path / "test.pt"
    src = DATA / "perov_5" / "val.csv.gz"
    assert main([str(src), "-o", str(train), "--limit", "40", "--quiet", "--workers", "1"]) == 0
    assert (
        main(
            [
                str(DATA / "perov_5" / "test.csv.gz"),
                "-o",
                str(test),
                "--limit",
                "30",
                "--stats",
                str(train),
                "--quiet",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    a, b = Features.load(train), Features.load(test)
    assert a.n_max == b.n_max == 5 and a.dataset == "perov_5"
    assert torch.equal(a.stats.lo, b.stats.lo) and torch.equal(a.stats.hi, b.stats.hi)
    capsys.readouterr()
    assert main([str(src), "-o", str(tmp_path / "again.pt"), "--limit", "40", "--quiet"]) == 0
    assert "(from cache)" in capsys.readouterr().out
    assert torch.equal(Features.load(tmp_path / "again.pt").R, a.R)


def test_featurize_infers_n_max_from_the_input(tmp_path):
    cifs = tmp_path / "cifs"
    cifs.mkdir()
    df = pd.read_csv(DATA / "mp_20" / "test.csv.gz", nrows=6)
    for k, c in enumerate(df.cif):
        (cifs / f"{k}.cif").write_text(c)
    # Neither --n-max nor --dataset (nor a dataset name in the path): the largest crystal of the input.
    assert main([str(cifs), "-o", str(tmp_path / "x.pt"), "--quiet", "--no-cache"]) == 0
    f = Features.load(tmp_path / "x.pt")
    largest = max(len(r.structure) for r in read_structures(cifs))
    assert f.n_max == largest and f.source["n_max"] == "the largest crystal of this input"
    assert float(f.raw()[:, f.layout.size].max()) == 1.0
    assert main([str(cifs), "-o", str(tmp_path / "y.pt"), "--n-max", "20", "--quiet", "--no-cache"]) == 0
    assert Features.load(tmp_path / "y.pt").n_max == 20
