"""Writes tests/data/crystals.pt: real crystals of the three datasets of data/ as plain tensors.

The CUDA tests (tests/test_cuda.py, tests/test_cuda_emulation.py) and the GPU check
(scripts/gpu_check.py) read this file with ``torch.load(weights_only=True)``, so they need neither
pymatgen nor the CSV files. For each dataset: the first 64 crystals of its test split, as stored (not
Niggli-reduced), in the order of the file; and the adversarial cells of tests/helpers.py
(adversarial_cells: positions = fractional @ cell in float64):

    {"mp_20" | "carbon_24" | "perov_5" | "adversarial":
         {"positions": float64 [N, 3] (Cartesian, Angstrom), "numbers": int64 [N],
          "cells": float64 [B, 3, 3] (rows = lattice vectors), "ptr": int64 [B + 1], "ids": [B] str},
     "source": str}

Run once from the repository root (needs pymatgen, i.e. the package's dependencies):
    .venv/bin/python tests/data/make_crystals.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from srd.structures import Batch, read_structures

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import adversarial_cells  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "crystals.pt"
DATASETS = {"mp_20": "mp_20", "carbon_24": "carbon_24", "perov_5": "perov_5"}
PER_DATASET = 64


def main() -> None:
    out: dict = {
        "source": f"first {PER_DATASET} crystals of data/<dataset>/test.csv.gz (tests/data/make_crystals.py)"
    }
    for key, folder in DATASETS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recs = list(read_structures(ROOT / "data" / folder / "test.csv.gz", limit=PER_DATASET))
        bad = [r.id for r in recs if r.structure is None]
        if bad:
            raise SystemExit(f"{folder}: unreadable crystals {bad}")
        b = Batch.from_structures([r.structure for r in recs], dtype=torch.float64)
        out[key] = {
            "positions": b.positions.contiguous(),
            "numbers": b.numbers.contiguous(),
            "cells": b.cells.contiguous(),
            "ptr": b.ptr.contiguous(),
            "ids": [str(r.id) for r in recs],
        }
        print(f"{key}: {len(recs)} crystals, {int(b.ptr[-1])} atoms")
    cases = adversarial_cells()
    cells = [np.asarray(cell, dtype=np.float64) for _, cell, _, _ in cases]
    pos = [
        np.asarray(frac, dtype=np.float64) @ cell for (_, _, frac, _), cell in zip(cases, cells, strict=True)
    ]
    counts = [len(z) for *_, z in cases]
    out["adversarial"] = {
        "positions": torch.tensor(np.concatenate(pos)),
        "numbers": torch.tensor([z for *_, zs in cases for z in zs], dtype=torch.int64),
        "cells": torch.tensor(np.stack(cells)),
        "ptr": torch.tensor(np.concatenate([[0], np.cumsum(counts)]), dtype=torch.int64),
        "ids": [name for name, *_ in cases],
    }
    print(f"adversarial: {len(cases)} cells ({', '.join(out['adversarial']['ids'])})")
    torch.save(out, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
