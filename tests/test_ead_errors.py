"""Bad input raises ValueError naming the argument, the row and what was expected."""

from __future__ import annotations

import math

import pytest
import torch

import srd

POS = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
NUM = torch.tensor([8, 22])
CELL = torch.eye(3, dtype=torch.float64) * 4.0
PTR = torch.tensor([0, 2])


def test_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"srd.ead: positions must have shape \[n, 3\], got \[2\]"):
        srd.ead(torch.zeros(2, dtype=torch.float64), NUM, CELL)
    with pytest.raises(ValueError, match=r"srd.ead: cell must have shape \[3, 3\], got \[3, 2\]"):
        srd.ead(POS, NUM, CELL[:, :2])
    with pytest.raises(ValueError, match=r"positions must be float32 or float64, got torch.int64"):
        srd.ead(POS.long(), NUM, CELL)
    with pytest.raises(
        ValueError, match=r"cells must have the dtype of positions \(torch.float64\), got torch.float32"
    ):
        srd.ead_batch(POS, NUM, CELL[None].float(), PTR)
    with pytest.raises(ValueError, match=r"numbers must have shape \[N\] = \[2\], got \[3\]"):
        srd.ead(POS, torch.tensor([1, 2, 3]), CELL)
    with pytest.raises(
        ValueError, match=r"numbers must be an integer tensor \(atomic numbers\), got torch.float32"
    ):
        srd.ead(POS, NUM.float(), CELL)
    with pytest.raises(ValueError, match=r"ptr must have shape \[B \+ 1\] = \[2\], got \[3\]"):
        srd.ead_batch(POS, NUM, CELL[None], torch.tensor([0, 1, 2]))


def test_values():
    bad = POS.clone()
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"positions\[1\] is not finite"):
        srd.ead(bad, NUM, CELL)
    with pytest.raises(ValueError, match=r"srd.ead: cell is not finite"):
        srd.ead(POS, NUM, CELL * math.inf)
    flat = CELL.clone()
    flat[2] = flat[0] + flat[1]
    with pytest.raises(ValueError, match=r"srd.ead: cell is singular"):
        srd.ead(POS, NUM, flat)
    with pytest.raises(ValueError, match=r"numbers\[1\] = 119 is not an atomic number in 1..118"):
        srd.ead(POS, torch.tensor([8, 119]), CELL)
    with pytest.raises(ValueError, match=r"numbers\[0\] = 0 is not an atomic number in 1..118"):
        srd.ead(POS, torch.tensor([0, 8]), CELL)
    with pytest.raises(ValueError, match=r"the batch is empty"):
        srd.ead(POS[:0], NUM[:0], CELL)
    cells = torch.stack([CELL, CELL])
    with pytest.raises(ValueError, match=r"crystal 0 is empty \(ptr\[0\] = ptr\[1\] = 0\)"):
        srd.ead_batch(POS, NUM, cells, torch.tensor([0, 0, 2]))
    with pytest.raises(ValueError, match=r"cells\[1\] is singular"):
        srd.ead_batch(POS, NUM, torch.stack([CELL, CELL * 0]), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"ptr must start at 0 and end at N = 2"):
        srd.ead_batch(POS, NUM, CELL[None], torch.tensor([0, 3]))


def test_params_and_backend():
    with pytest.raises(ValueError, match=r"EADParams.cutoff must be a finite number > 0 \(Angstrom\), got 0"):
        srd.EADParams(cutoff=0)
    with pytest.raises(
        ValueError, match=r"EADParams.cutoff must be a finite number > 0 \(Angstrom\), got -3"
    ):
        srd.EADParams(cutoff=-3)
    with pytest.raises(ValueError, match=r"EADParams.l1 must be 'cumulative' or 'separate'"):
        srd.EADParams(l1="both")
    with pytest.raises(ValueError, match=r"EADParams.mus must be strictly ascending"):
        srd.EADParams(mus=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"backend must be one of \('native', 'torch'\), got 'fast'"):
        srd.ead(POS, NUM, CELL, backend="fast")
    with pytest.raises(ValueError, match=r"params must be an srd.EADParams, got dict"):
        srd.ead(POS, NUM, CELL, params={"cutoff": 5.0})
    # The op boundary checks too (direct torch.ops calls bypass the Python wrapper).
    with pytest.raises(ValueError, match=r"cutoff must be a finite number > 0"):
        torch.ops.srd.ead_forward(POS, NUM, CELL[None], PTR, [1.0], [0.0], -1.0, 1, True, 40.0)


def test_devices():
    if srd.has_cuda_kernels() and torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"all tensors must be on one device"):
            srd.ead(POS.cuda(), NUM, CELL.cuda())
    else:
        pytest.skip("needs a GPU and the CUDA kernels (see test_cuda_tensor_without_cuda_kernels)")


def test_cuda_tensor_without_cuda_kernels(monkeypatch):
    """A CUDA tensor on a build without CUDA kernels gets a message that says so."""
    from srd.descriptor import ops

    monkeypatch.setattr(ops, "has_cuda_kernels", lambda: False)

    # Meta tensors that report a CUDA device: the device check runs before any data is read.
    pos = torch.empty((2, 3), dtype=torch.float64, device="meta")
    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: torch.device("cuda")))
    with pytest.raises(ValueError, match=r"got CUDA tensors but this build of srd has no CUDA kernels"):
        ops.validate_batch(
            pos,
            None,
            torch.empty((1, 3, 3), dtype=torch.float64, device="meta"),
            torch.empty(2, dtype=torch.int64, device="meta"),
        )
