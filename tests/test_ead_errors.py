"""Bad input raises ValueError naming the argument, the row and what was expected.

Shapes, dtypes and devices are the op's own check (csrc/common/ead_grid.h: check_structure_args), so the
wrappers raise the op's messages; the values are checked in Python (srd.descriptor.ops.validate_batch).
Both on every device (the ``device`` fixture).
"""

from __future__ import annotations

import math

import pytest
import torch

import srd
from helpers import device_skip_reason

POS = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
NUM = torch.tensor([8, 22])
CELL = torch.eye(3, dtype=torch.float64) * 4.0
PTR = torch.tensor([0, 2])


def _on(device):
    return POS.to(device), NUM.to(device), CELL.to(device), PTR.to(device)


def test_shapes_and_dtypes(device):
    pos, num, cell, ptr = _on(device)
    with pytest.raises(ValueError, match=r"srd.ead: positions must have shape \[N, 3\], got \[2\]"):
        srd.ead(pos[:, 0], num, cell)
    with pytest.raises(ValueError, match=r"srd.ead: cell must have shape \[3, 3\], got \[3, 2\]"):
        srd.ead(pos, num, cell[:, :2])
    with pytest.raises(ValueError, match=r"positions must be float32 or float64, got Long"):
        srd.ead(pos.long(), num, cell)
    with pytest.raises(ValueError, match=r"cells must have the dtype of positions \(Double\), got Float"):
        srd.ead_batch(pos, num, cell[None].float(), ptr)
    with pytest.raises(ValueError, match=r"numbers must have shape \[N\] = \[2\], got \[3\]"):
        srd.ead(pos, torch.tensor([1, 2, 3], device=device), cell)
    with pytest.raises(ValueError, match=r"numbers must be int64, got Float"):
        srd.ead(pos, num.float(), cell)
    with pytest.raises(ValueError, match=r"ptr must have shape \[B \+ 1\] = \[2\], got \[3\]"):
        srd.ead_batch(pos, num, cell[None], torch.tensor([0, 1, 2], device=device))
    with pytest.raises(ValueError, match=r"ptr must be int64, got Int"):
        srd.ead_batch(pos, num, cell[None], ptr.int())
    with pytest.raises(
        ValueError, match=r"srd.nearest_pairs: cells must have shape \[B, 3, 3\], got \[3, 3\]"
    ):
        srd.nearest_pairs(pos, cell, ptr)
    with pytest.raises(ValueError, match=r"srd.ead_batch: positions must be a torch.Tensor, got list"):
        srd.ead_batch(POS.tolist(), num, cell[None], ptr)
    with pytest.raises(ValueError, match=r"srd.ead: cell must be a torch.Tensor, got list"):
        srd.ead(pos, num, CELL.tolist())


_BAD_LAYOUTS = {
    "positions [N]": lambda p, n, c, r: (p[:, 0], n, c, r),
    "positions int64": lambda p, n, c, r: (p.long(), n, c, r),
    "cells [3, 3]": lambda p, n, c, r: (p, n, c[0], r),
    "cells float32": lambda p, n, c, r: (p, n, c.float(), r),
    "numbers [N + 1]": lambda p, n, c, r: (p, torch.cat([n, n[:1]]), c, r),
    "numbers float": lambda p, n, c, r: (p, n.double(), c, r),
    "ptr [B + 2]": lambda p, n, c, r: (p, n, c, torch.cat([r, r[-1:]])),
    "ptr int32": lambda p, n, c, r: (p, n, c, r.int()),
}


@pytest.mark.parametrize("case", list(_BAD_LAYOUTS))
def test_layout_messages_are_the_ops(case, device):
    """One definition of every layout message: the wrapper raises exactly what the op raises."""
    pos, num, cell, ptr = _BAD_LAYOUTS[case](*_on(device)[:2], CELL[None].to(device), PTR.to(device))
    with pytest.raises(ValueError) as direct:
        torch.ops.srd.ead_forward(pos, num, cell, ptr, *srd.EADParams().op_args())
    with pytest.raises(ValueError) as wrapped:
        srd.ead_batch(pos, num, cell, ptr)
    assert str(wrapped.value) == str(direct.value)


def test_any_integer_dtype_of_numbers(device):
    pos, num, cell, ptr = _on(device)
    ref = srd.ead_batch(pos, num, cell[None], ptr)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        for check in (True, False):
            got = srd.ead_batch(pos, num.to(dtype), cell[None], ptr, check=check)
            assert torch.equal(got, ref), (dtype, check)


def test_values(device):
    pos, num, cell, ptr = _on(device)
    bad = pos.clone()
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"positions\[1\] is not finite"):
        srd.ead(bad, num, cell)
    with pytest.raises(ValueError, match=r"srd.ead: cell is not finite"):
        srd.ead(pos, num, cell * math.inf)
    flat = cell.clone()
    flat[2] = flat[0] + flat[1]
    with pytest.raises(ValueError, match=r"srd.ead: cell is singular"):
        srd.ead(pos, num, flat)
    with pytest.raises(ValueError, match=r"numbers\[1\] = 119 is not an atomic number in 1..118"):
        srd.ead(pos, torch.tensor([8, 119], device=device), cell)
    with pytest.raises(ValueError, match=r"numbers\[0\] = 0 is not an atomic number in 1..118"):
        srd.ead(pos, torch.tensor([0, 8], device=device), cell)
    with pytest.raises(ValueError, match=r"the batch is empty"):
        srd.ead(pos[:0], num[:0], cell)
    cells = torch.stack([cell, cell])
    with pytest.raises(ValueError, match=r"crystal 0 is empty \(ptr\[0\] = ptr\[1\] = 0\)"):
        srd.ead_batch(pos, num, cells, torch.tensor([0, 0, 2], device=device))
    with pytest.raises(ValueError, match=r"cells\[1\] is singular"):
        srd.ead_batch(pos, num, torch.stack([cell, cell * 0]), torch.tensor([0, 1, 2], device=device))
    with pytest.raises(ValueError, match=r"ptr must start at 0 and end at N = 2"):
        srd.ead_batch(pos, num, cell[None], torch.tensor([0, 3], device=device))
    with pytest.raises(ValueError, match=r"srd.nearest_pairs: positions\[1\] is not finite"):
        srd.nearest_pairs(bad, cell[None], ptr)
    with pytest.raises(ValueError, match=r"srd.nearest_pairs: cells\[0\] is singular"):
        srd.min_distance(pos, flat[None], ptr)


def test_value_checks_leave_the_layout_to_the_op():
    """validate_batch checks values only: a batch it cannot index passes it, and the op refuses it."""
    from srd.descriptor import validate_batch

    bad_ptr = torch.tensor([0, 1, 2])  # [B + 2]
    assert validate_batch(POS, NUM, CELL[None], bad_ptr) is None
    with pytest.raises(ValueError, match=r"ptr must have shape \[B \+ 1\] = \[2\], got \[3\]"):
        srd.ead_batch(POS, NUM, CELL[None], bad_ptr)


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
    reason = device_skip_reason("cuda")
    if reason is not None:
        pytest.skip(f"{reason} (see test_cuda_tensor_without_cuda_kernels)")
    with pytest.raises(ValueError, match=r"srd.ead: numbers is on cpu but positions is on cuda"):
        srd.ead(POS.cuda(), NUM, CELL.cuda())
    with pytest.raises(ValueError, match=r"srd.ead: cells is on cpu but positions is on cuda"):
        srd.ead_batch(POS.cuda(), NUM.cuda(), CELL[None], PTR.cuda())
    with pytest.raises(ValueError, match=r"srd.nearest_pairs: ptr is on cpu but positions is on cuda"):
        srd.nearest_pairs(POS.cuda(), CELL[None].cuda(), PTR)


def test_cuda_tensor_without_cuda_kernels(monkeypatch):
    """A CUDA tensor on a build without CUDA kernels gets a message that says so (with check=False too)."""
    from srd.descriptor import ops

    monkeypatch.setattr(ops, "has_cuda_kernels", lambda: False)

    # Meta tensors that report a CUDA device: the device check runs before any data is read.
    pos = torch.empty((2, 3), dtype=torch.float64, device="meta")
    num = torch.empty(2, dtype=torch.int64, device="meta")
    cells = torch.empty((1, 3, 3), dtype=torch.float64, device="meta")
    ptr = torch.empty(2, dtype=torch.int64, device="meta")
    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: torch.device("cuda")))
    message = r"got CUDA tensors but this build of srd has no CUDA kernels"
    for check in (True, False):
        with pytest.raises(ValueError, match=r"srd.ead_batch: " + message):
            srd.ead_batch(pos, num, cells, ptr, check=check)
        with pytest.raises(ValueError, match=r"srd.nearest_pairs: " + message):
            srd.nearest_pairs(pos, cells, ptr, check=check)
