"""Shared fixtures: devices, seeding, real crystals from data/, adversarial cells."""

from __future__ import annotations

import os
import random
import sys
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
sys.path.insert(0, str(Path(__file__).parent))  # tests/oracle.py

# Feature caches of the tests never touch the user's ~/.cache.
os.environ.setdefault("SRD_CACHE_DIR", str(ROOT / "build" / "test-cache"))
os.environ.setdefault("SRD_PROGRESS", "0")

import srd  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and srd.has_cuda_kernels() else [])


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - libraries under test use the global state
    torch.manual_seed(0)
    yield


@cache
def real_crystals(dataset: str, n: int, split: str = "test"):
    """The first n crystals of a data/ split as pymatgen Structures (as stored, not Niggli-reduced)."""
    from srd.structures import read_structures

    path = {"perov_5": DATA / "perov_5", "carbon_24": DATA / "carbon_24", "mp_20": DATA / "mp_20_partial"}[
        dataset
    ]
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
