"""Reconstruction cost at the paper's budget (6 trials x 7 hops x 300 steps = 12,600 evaluations/crystal).

Times a short slice of Algorithm 2 (16 test crystals, 6 trials, 1 hop of 20 steps: every trial of every
crystal batched in one descriptor call per step, exactly as srd-reconstruct runs) and reports the
seconds per crystal scaled to the full budget (benchmarks/report.py). The 16 crystals are the first rows of
each test split (for MP-20 the same crystals in the complete split and the former partial one).
"""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import pytest

from srd.reconstruction import ReconstructConfig, reconstruct
from srd.representation import DATASET_N_MAX, decoded_from_structures, prepare_structure
from srd.structures import read_structures

DATA = Path(__file__).resolve().parents[1] / "data"
FILES = {
    "perov_5": DATA / "perov_5/test.csv.gz",
    "carbon_24": DATA / "carbon_24/test.csv.gz",
    "mp_20": DATA / "mp_20/test.csv.gz",
}
PAPER = ReconstructConfig.preset("paper")  # 6 x 7 x 300 = 12,600 evaluations per crystal
N_CRYSTALS, STEPS, PAPER_EVALS = 16, 20, PAPER.evaluations_per_crystal


@cache
def targets(dataset: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n_max = DATASET_N_MAX[dataset]
        structs = [
            prepare_structure(r.structure, n_max=n_max)
            for r in read_structures(FILES[dataset], limit=N_CRYSTALS)
        ]
        return decoded_from_structures(structs, n_max=n_max), sum(len(s) for s in structs)


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24", "mp_20"])
def test_reconstruct_paper_budget_slice(benchmark, dataset):
    tg, atoms = targets(dataset)
    cfg = PAPER.replace(hops=1, steps=STEPS)  # the paper's trials, one hop of STEPS steps
    keys = [str(k) for k in range(len(tg))]
    benchmark.extra_info.update(
        kind="reconstruct",
        dataset=dataset,
        crystals=len(tg),
        atoms=atoms,
        evaluations_per_crystal=cfg.evaluations_per_crystal,
        scale_to_paper=PAPER_EVALS / cfg.evaluations_per_crystal,
    )
    benchmark.pedantic(lambda: reconstruct(tg, keys, config=cfg), rounds=3, iterations=1, warmup_rounds=1)
