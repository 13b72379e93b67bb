"""CPU-only self-check of the srd CUDA kernels (for machines without a GPU).

1. ``--emulate`` (default): compiles the device code (cuda/*_kernels.cuh) for the host through the
   thread-level emulator cuda_emulation.h (one std::thread per CUDA thread, real barriers and warp
   shuffles), registers it as ``torch.ops.srd_emu.*`` and compares it with the CPU ops
   ``torch.ops.srd.*`` on real and adversarial crystals: forward features and rho, backward gradients
   (dense and max/min-pooled upstream), nearest-pair distances, and bitwise run-to-run determinism.
   This checks the kernels' logic (pair enumeration, tiling, skip windows, prefix sums, reductions,
   indexing); it does not check the device's floating-point library or its memory model.
2. ``--resource-usage``: compiles ead_cuda.cu and neighbors_cuda.cu with nvcc for the given
   architectures and prints registers, spills, stack and static shared memory of every kernel.

Usage (from the repository root, with the package installed):
    .venv/bin/python csrc/cuda/selfcheck/selfcheck.py [--emulate] [--resource-usage] [--arch 80 90]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CSRC = HERE.parent.parent
ROOT = CSRC.parent


# ------------------------------------------------------------------------------------------------
# Emulation
# ------------------------------------------------------------------------------------------------
def build_emulator(verbose: bool = False) -> None:
    from torch.utils.cpp_extension import load

    build_dir = Path(tempfile.gettempdir()) / "srd_cuda_emu_build"
    build_dir.mkdir(exist_ok=True)
    load(
        name="srd_cuda_emu",
        sources=[str(HERE / "emulation_ops.cpp")],
        extra_include_paths=[str(CSRC)],
        extra_cflags=["-O2", "-std=c++20", "-pthread", "-Wno-unknown-pragmas"],
        extra_ldflags=["-pthread"],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=verbose,
    )


def _crystals(max_atoms: int):
    """A few real crystals of each dataset plus adversarial cells, as (name, Batch)."""
    import srd  # noqa: F401
    from srd.structures import Batch, read_structures

    out = []
    for ds, limit in (("mp_20_partial", 3), ("carbon_24", 2), ("perov_5", 2)):
        path = ROOT / "data" / ds / "test.csv.gz"
        if not path.exists():
            continue
        recs = [r for r in read_structures(path, limit=limit) if r.structure is not None]
        recs = [r for r in recs if len(r.structure) <= max_atoms]
        if recs:
            out.append((ds, Batch.from_structures([r.structure for r in recs])))
    gen = torch.Generator().manual_seed(0)

    def batch(cells, counts, numbers=None):
        cells = torch.tensor(cells, dtype=torch.float64)
        pos, num = [], []
        for b, n in enumerate(counts):
            f = torch.rand(n, 3, generator=gen, dtype=torch.float64)
            pos.append(f @ cells[b])
            num.append(torch.randint(1, 90, (n,), generator=gen) if numbers is None else torch.tensor(numbers[b]))
        ptr = torch.tensor([0] + list(torch.tensor(counts).cumsum(0)), dtype=torch.int64)
        return Batch(torch.cat(pos), torch.cat(num).to(torch.int64), cells, ptr)

    skewed = [[4.0, 0.0, 0.0], [3.7, 1.1, 0.0], [3.5, 0.9, 0.8]]  # very skewed triclinic cell
    tiny = [[1.1, 0.0, 0.0], [0.0, 1.3, 0.0], [0.2, 0.1, 1.2]]  # one atom, far smaller than rc
    ortho = [[5.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 7.0]]
    out.append(("skewed+tiny+ortho", batch([skewed, tiny, ortho], [3, 1, 4])))
    # positions far outside the cell (wrapping offsets), and a crystal with two atoms at the same place
    b = batch([ortho], [3])
    b.positions[0] += torch.tensor([11.0, -23.0, 40.0], dtype=torch.float64)
    b.positions[2] = b.positions[1]
    out.append(("unwrapped+coincident", b))
    return out


def _close(name, got, ref, rtol, atol_rel, report):
    got, ref = got.double(), ref.double()
    scale = ref.abs().max().item() if ref.numel() else 0.0
    atol = atol_rel * (scale if scale > 0 else 1.0)
    err = (got - ref).abs()
    bad = err > atol + rtol * ref.abs()
    worst = (err / (atol + rtol * ref.abs())).max().item() if ref.numel() else 0.0
    ok = not bool(bad.any()) and bool(torch.isfinite(got).all())
    report.append((ok, f"{name}: max|err| = {err.max().item() if err.numel() else 0:.3e} "
                       f"(scale {scale:.3e}, worst/tol = {worst:.3f})"))
    return ok


def run_emulation(quick: bool) -> bool:
    import srd

    build_emulator()
    params = [
        # name, etas, mus, cutoff, lmax, cumulative, skip
        ("small-dense", (1.0, 20.0), tuple(0.5 * k for k in range(10)), 6.0, 1, True, math.inf),
        ("small-skip-separate", (1.0, 20.0, 90.0), tuple(0.4 * k for k in range(14)), 6.0, 1, False, 40.0),
        ("nonuniform-lmax0", (2.0, 30.0), (0.0, 0.3, 0.7, 1.6, 2.0, 3.5, 4.1, 5.0), 5.5, 0, True, 20.0),
        # 300 channels: two per thread in the forward
        ("two-per-thread", (1.0, 10.0, 40.0), tuple(0.05 * k for k in range(100)), 5.0, 1, True, 40.0),
        # the largest grid the CUDA kernels take: 16 x 128 = 2048 channels, eight per thread
        ("largest", tuple(1.0 + 6.0 * k for k in range(16)), tuple(0.04 * k for k in range(128)), 4.5, 1, True, 40.0),
    ]
    if not quick:
        p = srd.EADParams()
        params.append(("default", p.etas, p.mus, p.cutoff, p.lmax, True, p.skip_exponent))
    report: list[tuple[bool, str]] = []
    crystals = _crystals(max_atoms=8 if quick else 12)
    for cname, b in crystals:
        for dtype in (torch.float64, torch.float32):
            pos = b.positions.to(dtype)
            cel = b.cells.to(dtype)
            # nearest pairs
            ic, sc = torch.ops.srd.nearest_pairs(pos, cel, b.ptr)
            ie, se = torch.ops.srd_emu.nearest_pairs(pos, cel, b.ptr)

            def dist(i, s, pos=pos, cel=cel):
                d = pos.double()[i[:, 1]] - pos.double()[i[:, 0]] + torch.einsum("bk,bkl->bl", s.double(), cel.double())
                return d.norm(dim=1)

            # (the CPU op can miss the self-image of a one-atom cell by rounding and report index -1)
            found = ic[:, 0] >= 0
            report.append((bool((ie[:, 0] >= 0).all()), f"{cname} {dtype} nearest_pairs found a pair everywhere"))
            _close(f"{cname} {dtype} nearest_pairs distance", dist(ie, se)[found], dist(ic[found], sc[found]), 1e-12, 0,
                   report)
            report.append((bool((ie[:, 0] <= ie[:, 1]).all()), f"{cname} {dtype} nearest_pairs i <= j"))
            same = bool((ie == ic).all() and (se == sc).all())
            report.append((True, f"{cname} {dtype} nearest_pairs same pair as CPU: {same}"))
            for pname, etas, mus, rc, lmax, cum, skip in params:
                args = (list(etas), list(mus), rc, lmax, cum, skip)
                # CPU reference in float64 on the same (rounded) inputs
                f_ref, r_ref = torch.ops.srd.ead_forward(pos.double(), b.numbers, cel.double(), b.ptr, *args)
                f_emu, r_emu = torch.ops.srd_emu.ead_forward(pos, b.numbers, cel, b.ptr, *args)
                tol = (1e-10, 1e-12) if dtype == torch.float64 else (1e-4, 1e-5)
                tag = f"{cname} {dtype} {pname}"
                _close(f"{tag} features", f_emu, f_ref, *tol, report)
                _close(f"{tag} rho", r_emu, r_ref, tol[0], 1e-9 if dtype == torch.float64 else 1e-4, report)
                f_emu2, r_emu2 = torch.ops.srd_emu.ead_forward(pos, b.numbers, cel, b.ptr, *args)
                report.append((bool(torch.equal(f_emu, f_emu2) and torch.equal(r_emu, r_emu2)),
                               f"{tag} forward bitwise deterministic"))
                # backward: dense random upstream and a max/min-pooled (sparse) upstream
                g = torch.Generator().manual_seed(1)
                upstreams = {"random": torch.randn(f_ref.shape, generator=g, dtype=torch.float64)}
                sparse = torch.zeros_like(f_ref)
                for k in range(b.n_crystals):
                    s, e = int(b.ptr[k]), int(b.ptr[k + 1])
                    blk = f_ref[s:e]
                    sparse[s:e].scatter_(0, blk.argmax(0, keepdim=True), 1.0)
                    sparse[s:e].scatter_add_(0, blk.argmin(0, keepdim=True), torch.ones_like(blk[:1]))
                upstreams["maxmin"] = sparse
                for uname, gf in upstreams.items():
                    gp_ref, gc_ref = torch.ops.srd.ead_backward(gf, pos.double(), b.numbers, cel.double(), b.ptr,
                                                                r_ref, *args)
                    gp, gc = torch.ops.srd_emu.ead_backward(gf.to(dtype), pos, b.numbers, cel, b.ptr, r_emu, *args)
                    btol = (1e-9, 1e-9) if dtype == torch.float64 else (1e-3, 1e-3)
                    _close(f"{tag} grad positions ({uname})", gp, gp_ref, *btol, report)
                    _close(f"{tag} grad cells ({uname})", gc, gc_ref, *btol, report)
                    gp2, gc2 = torch.ops.srd_emu.ead_backward(gf.to(dtype), pos, b.numbers, cel, b.ptr, r_emu,
                                                              *args)
                    report.append((bool(torch.equal(gp, gp2) and torch.equal(gc, gc2)),
                                   f"{tag} backward ({uname}) bitwise deterministic"))
            print(f"  done: {cname} {dtype}", flush=True)
    n_bad = 0
    for ok, line in report:
        if not ok:
            n_bad += 1
        print(("ok   " if ok else "FAIL ") + line)
    print(f"emulation: {len(report) - n_bad} ok, {n_bad} failed")
    return n_bad == 0


# ------------------------------------------------------------------------------------------------
# Resource usage
# ------------------------------------------------------------------------------------------------
def resource_usage(archs: list[str]) -> None:
    nvcc = os.environ.get("NVCC", "/usr/local/cuda/bin/nvcc")
    tdir = Path(torch.__file__).parent
    py_inc = sysconfig.get_paths()["include"]
    try:
        import pybind11

        pb_inc = ["-isystem", pybind11.get_include()]
    except ImportError:
        pb_inc = []
    incs = ["-I", str(CSRC), "-isystem", str(tdir / "include"), "-isystem",
            str(tdir / "include/torch/csrc/api/include"), "-isystem", py_inc, *pb_inc]
    for src in ("ead_cuda.cu", "neighbors_cuda.cu"):
        for arch in archs:
            cmd = [nvcc, "-std=c++20", "--expt-relaxed-constexpr", "-O3", "-DNDEBUG",
                   f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
                   f"--generate-code=arch=compute_{arch},code=sm_{arch}", "--resource-usage", *incs,
                   "-x", "cu", "-c", str(HERE.parent / src), "-o", os.devnull]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr)
                raise SystemExit(f"nvcc failed on {src} for sm_{arch}")
            print(f"== {src}  sm_{arch}")
            name = None
            for line in res.stderr.splitlines():
                m = re.search(r"Function properties for (\S+)", line) or re.search(r"Compiling entry function '(\S+)'", line)
                if m:
                    name = m.group(1)
                    continue
                m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
                if m and name:
                    stack, spill_st, spill_ld = m.groups()
                m = re.search(r"Used (\d+) registers.*?(?:(\d+) bytes smem)?", line)
                if m and name and "registers" in line:
                    smem = re.search(r"(\d+) bytes smem", line)
                    short = _demangle_short(name)
                    print(f"  {short:58s} regs {m.group(1):>4}  stack {stack:>3} B  spills {spill_st}/{spill_ld} B"
                          f"  static smem {smem.group(1) if smem else 0} B")
                    name = None


def _demangle_short(name: str) -> str:
    try:
        out = subprocess.run(["c++filt", name], capture_output=True, text=True).stdout.strip()
    except OSError:
        return name
    out = re.sub(r"srd::gpu::\(anonymous namespace\)::", "", out)
    out = out.replace("srd::DeviceGrid", "Grid").replace("DeviceBatch", "Batch")
    out = re.sub(r"\(.*\)$", "", out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emulate", action="store_true", help="run the emulated kernels against the CPU ops")
    ap.add_argument("--full", action="store_true", help="also the default (SPEC) grid: slower")
    ap.add_argument("--resource-usage", action="store_true", help="nvcc registers/spills per kernel")
    ap.add_argument("--arch", nargs="+", default=["80", "90"], help="compute capabilities for --resource-usage")
    args = ap.parse_args(argv)
    if not args.emulate and not args.resource_usage:
        args.emulate = True
    ok = True
    if args.resource_usage:
        resource_usage(args.arch)
    if args.emulate:
        ok = run_emulation(quick=not args.full)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
