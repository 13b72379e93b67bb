"""Shared fixtures: seeding, one torch thread, isolated caches, tiny training inputs, real crystals, the
op devices (``device``).

Helpers that are not fixtures (paths, crystals, synthetic features, run_cli) are in tests/helpers.py;
pyproject.toml puts tests/ on sys.path, so test modules ``from helpers import ...``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import DATA, DEVICES, ROOT, TINY_TOML, device_skip_reason

# Feature caches of the tests never touch the user's ~/.cache.
os.environ.setdefault("SRD_CACHE_DIR", str(ROOT / "build" / "test-cache"))
os.environ.setdefault("SRD_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - libraries under test use the global state
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster, and far faster on a busy machine (no OpenMP spinning).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A fresh $SRD_CACHE_DIR for one test."""
    monkeypatch.setenv("SRD_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_toml(tmp_path_factory) -> Path:
    """A tiny srd-train config file (helpers.TINY_TOML)."""
    p = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    p.write_text(TINY_TOML)
    return p


@pytest.fixture(scope="module")
def feats_file(tmp_path_factory) -> Path:
    """A 32-vector srd feature file of uniform random R (dataset perov_5, n_max 5)."""
    from srd.descriptor import EADParams
    from srd.representation import Features, Layout, ScalingStats

    layout = Layout()
    g = torch.Generator().manual_seed(0)
    R = torch.rand((32, layout.dim), generator=g)
    n = layout.continuous.stop
    stats = ScalingStats(torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64), layout)
    f = Features(
        R=R, ids=[str(i) for i in range(32)], stats=stats, n_max=5, params=EADParams(), dataset="perov_5"
    )
    path = tmp_path_factory.mktemp("feats") / "train.pt"
    f.save(path)
    return path


@pytest.fixture(scope="module")
def perov_rows():
    """20 Perov-5 test crystals whose compositions are SMACT-valid (so a self-comparison is exact)."""
    import pandas as pd

    from srd.metrics.validity import composition_validity
    from srd.structures import parse_cif

    df = pd.read_csv(DATA / "perov_5" / "test.csv.gz").head(60)
    keep = [i for i in range(len(df)) if composition_validity(parse_cif(df["cif"].iloc[i]))]
    return df.iloc[keep[:20]].reset_index(drop=True)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each device srd has kernels for (helpers.DEVICES): op tests that take it run unchanged on "cpu"
    and on "cuda"; a device this machine or build lacks is skipped with the reason."""
    reason = device_skip_reason(request.param)
    if reason is not None:
        pytest.skip(reason)
    return request.param
