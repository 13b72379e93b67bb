"""What the tests share that is not a fixture: paths, real and adversarial crystals, tiny training
inputs, and a runner for the command-line tools (fixtures are in conftest.py).

Only torch and numpy at import time: srd's pymatgen-based modules are imported inside the helpers that
use them, so that tests/test_cuda.py collects on a machine with only torch, numpy and pytest.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # annotations only (see the module docstring)
    from srd.diffusion.config import TrainConfig
    from srd.representation import Features


ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@cache
def real_crystals(dataset: str, n: int, split: str = "test"):
    """The first n crystals of a data/ split as pymatgen Structures (as stored, not Niggli-reduced).

    MP-20's train split is data/mp_20/train_PARTIAL.csv.gz (its first 2573 rows; see data/README.md)."""
    from srd.structures import read_structures

    path = {"perov_5": DATA / "perov_5", "carbon_24": DATA / "carbon_24", "mp_20": DATA / "mp_20"}[dataset]
    if dataset == "mp_20" and split == "train":
        split = "train_PARTIAL"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(r.structure for r in read_structures(path / f"{split}.csv.gz", limit=n))


def adversarial_cells():
    """(name, cell rows, fractional positions, atomic numbers): shapes that break naive image searches."""
    rng = np.random.default_rng(7)
    skewed = np.array([[3.0, 0.0, 0.0], [2.9, 0.8, 0.0], [2.8, 0.7, 0.6]])  # nearly flat, very oblique
    return [
        ("one-atom-small", np.eye(3) * 2.3, np.zeros((1, 3)), [29]),
        (
            "one-atom-triclinic",
            np.array([[2.5, 0.0, 0.0], [1.1, 2.2, 0.0], [0.4, 0.9, 2.1]]),
            np.zeros((1, 3)),
            [14],
        ),
        ("skewed", skewed, rng.random((3, 3)), [8, 22, 1]),
        (
            "long-thin",
            np.array([[1.9, 0.0, 0.0], [0.0, 2.1, 0.0], [0.3, 0.2, 31.0]]),
            rng.random((2, 3)),
            [6, 7],
        ),
        (
            "left-handed",
            np.array([[4.0, 0.1, 0.0], [0.0, -3.7, 0.2], [0.3, 0.0, 4.2]]),
            rng.random((4, 3)),
            [3, 9, 55, 83],
        ),
    ]


# ------------------------------------------------------------------------------------------------
# Tiny training inputs
# ------------------------------------------------------------------------------------------------
TINY_TOML = """\
model = "mlp"
batch_size = 8
lr = 1e-3
log_every = 1
device = "cpu"

[diffusion]
timesteps = 50

[mlp]
hidden = 32
depth = 1
"""


def synthetic_features(m: int = 64, *, seed: int = 0, n_modes: int = 4) -> Features:
    """A tiny stand-in for a feature file: m vectors of R drawn around a few modes, in [0, 1]."""
    from srd.descriptor import EADParams
    from srd.representation import Features, Layout, ScalingStats

    layout = Layout()
    g = torch.Generator().manual_seed(seed)
    modes = torch.rand((n_modes, layout.dim), generator=g)
    pick = torch.randint(0, n_modes, (m,), generator=g)
    R = (modes[pick] + 0.02 * torch.randn((m, layout.dim), generator=g)).clamp(0, 1)
    n_cont = layout.continuous.stop
    stats = ScalingStats(
        torch.zeros(n_cont, dtype=torch.float64), torch.ones(n_cont, dtype=torch.float64), layout
    )
    return Features(
        R=R.float(),
        ids=[f"x{i}" for i in range(m)],
        stats=stats,
        n_max=5,
        params=EADParams(),
        dataset="perov_5",
    )


def tiny_config(**kw) -> TrainConfig:
    from srd.diffusion.config import TrainConfig

    base = {
        "model": "mlp",
        "max_steps": 40,
        "batch_size": 8,
        "lr": 1e-3,
        "checkpoint_every": 1000,
        "log_every": 1,
        "device": "cpu",
        "ema_decay": 0.99,
        "diffusion": {"timesteps": 100},
        "mlp": {"hidden": 64, "depth": 2},
        "unet1d": {"dim": 8, "dim_mults": [1, 2, 4, 8], "attn_heads": 2, "attn_dim_head": 8},
        "transformer": {"d_model": 32, "depth": 1, "heads": 2},
    }
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return TrainConfig.from_dict(base)


def read_log(run: Path) -> list[dict]:
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def run_cli(
    module: str, *args: str, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` from the repository root (one thread, no progress bars)."""
    env = {**os.environ, "SRD_PROGRESS": "0", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


# ------------------------------------------------------------------------------------------------
# Devices
# ------------------------------------------------------------------------------------------------
#: The devices the op tests run on (the ``device`` fixture of conftest.py parametrises over them).
DEVICES = ("cpu", "cuda")


def device_skip_reason(device: str) -> str | None:
    """Why the op tests cannot run on ``device`` here (None: they can). srd is imported only to ask
    about CUDA, so that collecting the tests never needs it."""
    if device == "cpu":
        return None
    if device != "cuda":
        return f"srd has no kernels for {device}"
    if not torch.cuda.is_available():
        return "no CUDA device here (torch.cuda.is_available() is False)"
    from srd.descriptor.ops import has_cuda_kernels

    if not has_cuda_kernels():
        return "this build of srd has no CUDA kernels (compiled CPU-only; rebuild with SRD_WITH_CUDA=ON)"
    return None
