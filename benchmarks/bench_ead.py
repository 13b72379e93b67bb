"""EAD kernel timings (pytest-benchmark; run with `make bench`).

For batches of 64 crystals of Perov-5, Carbon-24 and MP-20 (the first rows of each test split), float32:
forward and forward+backward (the reconstruction loss: L1 on max/min-pooled features) through the fused
kernels, side by side with the same crystals through the dense-PyTorch image box + autograd
(benchmarks/dense_box.py). benchmarks/report.py turns the saved JSON into ratios and pairs/s.
Also: forward+backward per 20-atom MP-20 crystal on one core (the issue's 2 ms target).
"""

from __future__ import annotations

import sys
import warnings
from functools import cache
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import srd  # noqa: E402
from dense_box import ead_dense_box  # noqa: E402
from srd.descriptor.reference import neighbor_pairs_reference  # noqa: E402
from srd.representation import pooled_ead  # noqa: E402
from srd.structures import Batch, read_structures  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
FILES = {
    "perov_5": DATA / "perov_5/test.csv.gz",
    "carbon_24": DATA / "carbon_24/test.csv.gz",
    "mp_20": DATA / "mp_20/test.csv.gz",
}
PARAMS = srd.EADParams()


@cache
def crystals(dataset: str, n: int = 64, n_atoms: int | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = []
        for rec in read_structures(FILES[dataset], limit=2000):
            if rec.structure is not None and (n_atoms is None or len(rec.structure) == n_atoms):
                out.append(rec.structure)
            if len(out) == n:
                break
    return tuple(out)


@cache
def pair_count(dataset: str, n_atoms: int | None = None) -> int:
    """Neighbour pairs within the cutoff (all images), summed over the benchmark crystals."""
    total = 0
    for s in crystals(dataset, 64 if n_atoms is None else 16, n_atoms):
        i, _, _ = neighbor_pairs_reference(
            torch.tensor(s.cart_coords), torch.tensor(s.lattice.matrix), PARAMS.cutoff
        )
        total += len(i)
    return total


def _native_fwd(b):
    with torch.no_grad():
        return srd.ead_batch(b.positions, b.numbers, b.cells, b.ptr)


def _native_fwd_bwd(b):
    pos = b.positions.detach().requires_grad_()
    f = srd.ead_batch(pos, b.numbers, b.cells, b.ptr)
    pooled_ead(f, b.ptr).abs().sum().backward()
    return pos.grad


def _dense_fwd(structs):
    with torch.no_grad():
        for s in structs:
            ead_dense_box(
                torch.tensor(s.cart_coords, dtype=torch.float32),
                torch.tensor(s.atomic_numbers),
                torch.tensor(s.lattice.matrix, dtype=torch.float32),
                PARAMS,
            )


def _dense_fwd_bwd(structs):
    for s in structs:
        pos = torch.tensor(s.cart_coords, dtype=torch.float32, requires_grad=True)
        f = ead_dense_box(
            pos, torch.tensor(s.atomic_numbers), torch.tensor(s.lattice.matrix, dtype=torch.float32), PARAMS
        )
        torch.cat([f.max(0).values, f.min(0).values]).abs().sum().backward()


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24", "mp_20"])
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("impl", ["native", "dense"])
def test_ead_batch64(benchmark, dataset, mode, impl):
    structs = crystals(dataset)
    b = Batch.from_structures(structs, dtype=torch.float32)
    benchmark.extra_info.update(
        dataset=dataset,
        mode=mode,
        impl=impl,
        crystals=len(structs),
        atoms=int(b.positions.shape[0]),
        pairs=pair_count(dataset),
        threads=torch.get_num_threads(),
    )
    if impl == "native":
        fn = (lambda: _native_fwd(b)) if mode == "fwd" else (lambda: _native_fwd_bwd(b))
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    else:
        fn = (lambda: _dense_fwd(structs)) if mode == "fwd" else (lambda: _dense_fwd_bwd(structs))
        benchmark.pedantic(fn, rounds=1, iterations=1)


def test_ead_mp20_20atoms_one_core(benchmark):
    """Forward+backward per 20-atom MP-20 crystal on one core (16 such crystals per call)."""
    structs = crystals("mp_20", 16, 20)
    b = Batch.from_structures(structs, dtype=torch.float32)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        benchmark.extra_info.update(
            dataset="mp_20",
            mode="fwd_bwd",
            impl="native-1core-20atoms",
            crystals=len(structs),
            atoms=int(b.positions.shape[0]),
            pairs=pair_count("mp_20", 20),
            threads=1,
        )
        benchmark.pedantic(lambda: _native_fwd_bwd(b), rounds=10, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(old)
