"""CPU-only self-check of the srd CUDA kernels (for machines without a GPU).

1. ``--emulate`` (default): compiles the CUDA sources of the package (the host glue cuda/*_cuda.cuh and
   the device code cuda/*_kernels.cuh, unchanged) for the host through the thread-level emulator
   cuda_emulation.h (one fiber per CUDA thread, real barriers and warp shuffles), registers them as
   ``torch.ops.srd_emu.*`` and compares them with the CPU ops ``torch.ops.srd.*`` on real crystals
   (tests/data/crystals.pt) and adversarial cells: forward features and rho, backward gradients (dense
   and max/min-pooled upstream), nearest-pair distances (coincident atoms included). This checks the
   kernels' logic (pair enumeration, tiling, skip windows, prefix sums, reductions, indexing, launch
   shapes, buffers); it does not check the device's floating-point library or its memory model.
   tests/test_cuda_emulation.py runs the same checks under pytest (`make test`).
2. ``--resource-usage``: compiles ead_cuda.cu and neighbors_cuda.cu with nvcc for the given
   architectures and prints registers, spills, stack and static shared memory of every kernel.

Usage (from the repository root, with the package installed):
    .venv/bin/python csrc/cuda/selfcheck/selfcheck.py [--emulate] [--full] [--resource-usage] [--arch 80 90]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import NamedTuple

import torch

HERE = Path(__file__).resolve().parent
CSRC = HERE.parent.parent
ROOT = CSRC.parent
CRYSTALS = ROOT / "tests" / "data" / "crystals.pt"
DEFAULT_BUILD_DIR = ROOT / "build" / "cuda-emulator"


# ------------------------------------------------------------------------------------------------
# Building the emulator
# ------------------------------------------------------------------------------------------------
def compiler() -> str | None:
    """The C++ compiler for the emulator: $CXX, else c++ / g++ / clang++ on PATH (None: there is none)."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx) or (cxx if Path(cxx).exists() else None)
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _emulator_sources() -> list[Path]:
    """Every file the emulator build can include (common/ and cuda/, the emulator itself)."""
    return sorted(
        p
        for d in (CSRC / "common", CSRC / "cuda")
        for p in d.rglob("*")
        if p.suffix in {".h", ".cuh", ".cpp"}
    )


def _loaded() -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("srd_emu::ead_forward", "CPU")
    except RuntimeError:  # no such operator yet
        return False


BUILD_SECONDS: float | None = None  # compile time of the last build_emulator() that compiled (None: cached)


def build_emulator(build_dir: str | os.PathLike | None = None, *, verbose: bool = False) -> Path:
    """Compiles emulation_ops.cpp into a shared library and loads it (torch.ops.srd_emu.*).

    The library is cached in ``build_dir`` (default build/cuda-emulator) under a name hashed from the
    sources, the command line, the compiler and torch, so a second call (or run) only loads it.
    Raises RuntimeError with the compiler's output when the build fails.
    """
    global BUILD_SECONDS
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found ($CXX, c++, g++ or clang++) to build the CUDA emulator")
    build_dir = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    torch_dir = Path(torch.__file__).resolve().parent
    torch_lib = torch_dir / "lib"
    include_paths = [torch_dir / "include", torch_dir / "include" / "torch" / "csrc" / "api" / "include"]
    flags = [
        "-std=c++20",
        "-O2",
        "-fPIC",
        "-shared",
        "-Wall",
        "-Wno-unknown-pragmas",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        f"-I{CSRC}",
        *[arg for p in include_paths for arg in ("-isystem", str(p))],
    ]
    libs = [f"-L{torch_lib}", "-lc10", "-ltorch_cpu", "-ltorch", f"-Wl,-rpath,{torch_lib}"]
    h = hashlib.sha256()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    for part in (cxx, version, torch.__version__, *flags, *libs):
        h.update(part.encode() + b"\0")
    for src in _emulator_sources():
        h.update(str(src.relative_to(CSRC)).encode() + b"\0" + src.read_bytes() + b"\0")
    so = build_dir / f"srd_cuda_emu_{h.hexdigest()[:16]}.so"
    if _loaded():
        return so
    BUILD_SECONDS = None
    if not so.exists():
        build_dir.mkdir(parents=True, exist_ok=True)
        tmp = so.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cxx, *flags, str(HERE / "emulation_ops.cpp"), *libs, "-o", str(tmp)]
        if verbose:
            print(" ".join(cmd), flush=True)
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"building the CUDA emulator failed:\n{' '.join(cmd)}\n{res.stderr[-20000:]}")
        BUILD_SECONDS = time.perf_counter() - t0
        os.replace(tmp, so)
        # keep the three most recent builds (e.g. of other branches), drop older ones
        builds = sorted(build_dir.glob("srd_cuda_emu_*.so"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in builds[3:]:
            old.unlink(missing_ok=True)
    torch.ops.load_library(str(so))
    return so


# ------------------------------------------------------------------------------------------------
# Crystals and grids
# ------------------------------------------------------------------------------------------------
class Crystals(NamedTuple):
    """A ragged batch as the ops take it (float64 geometry)."""

    positions: torch.Tensor  # [N, 3]
    numbers: torch.Tensor  # [N] int64
    cells: torch.Tensor  # [B, 3, 3]
    ptr: torch.Tensor  # [B + 1] int64

    @property
    def n_crystals(self) -> int:
        return int(self.cells.shape[0])


def load_crystals(path: str | os.PathLike = CRYSTALS) -> dict[str, Crystals]:
    """The real crystals of tests/data/crystals.pt (tests/data/make_crystals.py), by dataset."""
    data = torch.load(path, weights_only=True)
    return {
        k: Crystals(v["positions"], v["numbers"], v["cells"], v["ptr"])
        for k, v in data.items()
        if isinstance(v, dict)
    }


def first_crystals(b: Crystals, n: int, max_atoms: int | None = None) -> Crystals:
    """The first n crystals of b with at most max_atoms atoms each."""
    keep = []
    for k in range(b.n_crystals):
        s, e = int(b.ptr[k]), int(b.ptr[k + 1])
        if max_atoms is None or e - s <= max_atoms:
            keep.append(k)
        if len(keep) == n:
            break
    return concat([slice_crystal(b, k) for k in keep])


def slice_crystal(b: Crystals, k: int) -> Crystals:
    s, e = int(b.ptr[k]), int(b.ptr[k + 1])
    return Crystals(b.positions[s:e], b.numbers[s:e], b.cells[k : k + 1], torch.tensor([0, e - s]))


def concat(parts: list[Crystals]) -> Crystals:
    counts = torch.tensor([int(p.ptr[-1]) for p in parts], dtype=torch.int64)
    return Crystals(
        torch.cat([p.positions for p in parts]),
        torch.cat([p.numbers for p in parts]),
        torch.cat([p.cells for p in parts]),
        torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]),
    )


def from_fractional(cells, fractional, numbers) -> Crystals:
    """A batch from per-crystal cells, fractional positions and atomic numbers (lists)."""
    parts = []
    for cell, frac, z in zip(cells, fractional, numbers, strict=True):
        cell = torch.as_tensor(cell, dtype=torch.float64)
        pos = torch.as_tensor(frac, dtype=torch.float64).reshape(-1, 3) @ cell
        parts.append(
            Crystals(pos, torch.as_tensor(z, dtype=torch.int64), cell[None], torch.tensor([0, len(z)]))
        )
    return concat(parts)


def adversarial_crystals() -> list[tuple[str, Crystals]]:
    """Cells that break naive image searches, positions far outside the cell, coincident atoms."""
    gen = torch.Generator().manual_seed(0)

    def rand(n):
        return torch.rand(n, 3, generator=gen, dtype=torch.float64)

    skewed = [[4.0, 0.0, 0.0], [3.7, 1.1, 0.0], [3.5, 0.9, 0.8]]  # very skewed triclinic cell
    tiny = [[1.1, 0.0, 0.0], [0.0, 1.3, 0.0], [0.2, 0.1, 1.2]]  # one atom, far smaller than rc
    ortho = [[5.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 7.0]]
    shapes = from_fractional(
        [skewed, tiny, ortho], [rand(3), rand(1), rand(4)], [[8, 22, 1], [6], [3, 9, 55, 83]]
    )
    # positions far outside the cell (wrapping offsets enter the cell gradient), and a crystal with
    # two atoms at the same place (d_min = 0; the descriptor skips the zero vector)
    odd = from_fractional([ortho, skewed], [rand(3), rand(2)], [[14, 8, 1], [26, 7]])
    pos = odd.positions.clone()
    pos[0] += torch.tensor([11.0, -23.0, 40.0], dtype=torch.float64)
    pos[2] = pos[1]
    odd = odd._replace(positions=pos)
    return [("skewed+tiny+ortho", shapes), ("unwrapped+coincident", odd)]


# (name, real dataset, number of crystals, max atoms per crystal) of the real crystal sets
REAL_SETS = [("mp_20", "mp_20", 3, 8), ("carbon_24", "carbon_24", 2, 8), ("perov_5", "perov_5", 2, 8)]


def crystal_sets(max_atoms: int | None = None) -> dict[str, Crystals]:
    """The crystal sets of the self-check: a few small real crystals per dataset, then the adversarial ones."""
    real = load_crystals()
    out = {}
    for name, ds, n, cap in REAL_SETS:
        out[name] = first_crystals(real[ds], n, max_atoms if max_atoms is not None else cap)
    out.update(adversarial_crystals())
    return out


class Grid(NamedTuple):
    etas: tuple
    mus: tuple
    cutoff: float
    lmax: int
    cumulative: bool
    skip: float

    def args(self):
        return (
            list(self.etas),
            list(self.mus),
            float(self.cutoff),
            int(self.lmax),
            bool(self.cumulative),
            float(self.skip),
        )


# Small grids and cutoffs keep the emulation fast; together they cover the kernels' paths: dense and
# windowed, cumulative and separate L=1, lmax 0, a non-uniform grid, two and eight channels per thread
# and the backward's > 48 kB shared memory. grids() adds the default (SPEC) grid, whose 20 Angstrom
# cutoff fills many pair tiles per centre.
GRIDS = {
    "small-dense": Grid((1.0, 20.0), tuple(0.5 * k for k in range(10)), 6.0, 1, True, math.inf),
    "small-skip-separate": Grid((1.0, 20.0, 90.0), tuple(0.4 * k for k in range(14)), 6.0, 1, False, 40.0),
    "nonuniform-lmax0": Grid((2.0, 30.0), (0.0, 0.3, 0.7, 1.6, 2.0, 3.5, 4.1, 5.0), 5.5, 0, True, 20.0),
    # 300 channels: two per thread in the forward
    "two-per-thread": Grid((1.0, 10.0, 40.0), tuple(0.05 * k for k in range(100)), 5.0, 1, True, 40.0),
    # the largest grid the CUDA kernels take: 16 x 128 = 2048 channels, eight per thread
    "largest": Grid(
        tuple(1.0 + 6.0 * k for k in range(16)), tuple(0.04 * k for k in range(128)), 4.5, 1, True, 40.0
    ),
}


def default_grid() -> Grid:
    import srd

    p = srd.EADParams()
    return Grid(tuple(p.etas), tuple(p.mus), p.cutoff, p.lmax, p.l1 == "cumulative", p.skip_exponent)


GRID_NAMES = [*GRIDS, "default"]


def grids() -> dict[str, Grid]:
    """Every grid of the self-check: GRIDS and the default (SPEC) grid."""
    return {**GRIDS, "default": default_grid()}


# ------------------------------------------------------------------------------------------------
# Checks (each returns [(ok, line)])
# ------------------------------------------------------------------------------------------------
def _close(name, got, ref, rtol, atol_rel):
    """|got - ref| <= atol_rel * max|ref| + rtol |ref| everywhere, and got finite."""
    got, ref = got.double(), ref.double()
    scale = ref.abs().max().item() if ref.numel() else 0.0
    atol = atol_rel * (scale if scale > 0 else 1.0)
    err = (got - ref).abs()
    tol = atol + rtol * ref.abs()
    worst = (err / tol).max().item() if ref.numel() else 0.0
    ok = bool((err <= tol).all()) and bool(torch.isfinite(got).all()) and got.shape == ref.shape
    return ok, (
        f"{name}: max|err| = {err.max().item() if err.numel() else 0:.3e} (scale {scale:.3e}, worst/tol = {worst:.3f})"
    )


def pair_distances(positions, cells, index, shifts) -> torch.Tensor:
    """|pos_j - pos_i + s @ H| of the pair (i, j, s) of every crystal (float64)."""
    d = (
        positions.double()[index[:, 1]]
        - positions.double()[index[:, 0]]
        + torch.einsum("bk,bkl->bl", shifts.double(), cells.double())
    )
    return d.norm(dim=1)


def check_nearest(name: str, b: Crystals, dtype) -> list[tuple[bool, str]]:
    pos, cel = b.positions.to(dtype), b.cells.to(dtype)
    ic, sc = torch.ops.srd.nearest_pairs(pos, cel, b.ptr)
    ie, se = torch.ops.srd_emu.nearest_pairs(pos, cel, b.ptr)
    out = [(bool((ie[:, 0] >= 0).all()), f"{name} {dtype} nearest_pairs found a pair everywhere")]
    # (the CPU op can miss the self-image of a one-atom cell by rounding and report index -1)
    found = ic[:, 0] >= 0
    if bool((ie[:, 0] >= 0).all()):
        out.append(
            _close(
                f"{name} {dtype} nearest_pairs distance",
                pair_distances(pos, cel, ie, se)[found],
                pair_distances(pos, cel, ic[found], sc[found]),
                1e-12,
                0.0,
            )
        )
    out.append((bool((ie[:, 0] <= ie[:, 1]).all()), f"{name} {dtype} nearest_pairs i <= j"))
    in_crystal = all(
        int(b.ptr[k]) <= int(ie[k, 0]) and int(ie[k, 1]) < int(b.ptr[k + 1]) for k in range(b.n_crystals)
    )
    out.append((in_crystal, f"{name} {dtype} nearest_pairs pair inside its crystal"))
    return out


def _upstreams(f_ref: torch.Tensor, ptr: torch.Tensor) -> dict[str, torch.Tensor]:
    """A dense random upstream gradient and the sparse one of max + min pooling per crystal."""
    g = torch.Generator().manual_seed(1)
    sparse = torch.zeros_like(f_ref)
    for k in range(ptr.numel() - 1):
        s, e = int(ptr[k]), int(ptr[k + 1])
        blk = f_ref[s:e]
        sparse[s:e].scatter_add_(0, blk.argmax(0, keepdim=True), torch.ones_like(blk[:1]))
        sparse[s:e].scatter_add_(0, blk.argmin(0, keepdim=True), torch.ones_like(blk[:1]))
    return {"random": torch.randn(f_ref.shape, generator=g, dtype=torch.float64), "maxmin": sparse}


def check_ead(name: str, b: Crystals, dtype, grid: Grid, grid_name: str = "") -> list[tuple[bool, str]]:
    """Emulated forward and backward in ``dtype`` against the float64 CPU ops on the same (rounded) inputs."""
    args = grid.args()
    pos, cel = b.positions.to(dtype), b.cells.to(dtype)
    f_ref, r_ref = torch.ops.srd.ead_forward(pos.double(), b.numbers, cel.double(), b.ptr, *args)
    f_emu, r_emu = torch.ops.srd_emu.ead_forward(pos, b.numbers, cel, b.ptr, *args)
    f64 = dtype == torch.float64
    tag = f"{name} {dtype} {grid_name}"
    out = [
        (f_emu.dtype == dtype and r_emu.dtype == dtype, f"{tag} output dtype"),
        _close(f"{tag} features", f_emu, f_ref, *((1e-10, 1e-12) if f64 else (1e-4, 1e-5))),
        _close(f"{tag} rho", r_emu, r_ref, *((1e-10, 1e-9) if f64 else (1e-4, 1e-4))),
    ]
    for uname, gf in _upstreams(f_ref, b.ptr).items():
        gp_ref, gc_ref = torch.ops.srd.ead_backward(
            gf, pos.double(), b.numbers, cel.double(), b.ptr, r_ref, *args
        )
        gp, gc = torch.ops.srd_emu.ead_backward(gf.to(dtype), pos, b.numbers, cel, b.ptr, r_emu, *args)
        btol = (1e-9, 1e-9) if f64 else (1e-3, 1e-3)
        out.append(_close(f"{tag} grad positions ({uname})", gp, gp_ref, *btol))
        out.append(_close(f"{tag} grad cells ({uname})", gc, gc_ref, *btol))
    return out


def run_emulation(full: bool) -> bool:
    t0 = time.perf_counter()
    so = build_emulator(verbose=True)
    took = f"compiled in {BUILD_SECONDS:.1f} s" if BUILD_SECONDS else "cached"
    print(f"emulator: {so} ({took})", flush=True)
    all_grids = grids()
    report: list[tuple[bool, str]] = []
    for cname, b in crystal_sets(max_atoms=12 if full else None).items():
        for dtype in (torch.float64, torch.float32):
            report += check_nearest(cname, b, dtype)
            for gname, grid in all_grids.items():
                report += check_ead(cname, b, dtype, grid, gname)
            print(f"  done: {cname} {dtype} ({time.perf_counter() - t0:.0f} s)", flush=True)
    n_bad = 0
    for ok, line in report:
        n_bad += not ok
        print(("ok   " if ok else "FAIL ") + line)
    print(f"emulation: {len(report) - n_bad} ok, {n_bad} failed in {time.perf_counter() - t0:.0f} s")
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
    incs = [
        "-I",
        str(CSRC),
        "-isystem",
        str(tdir / "include"),
        "-isystem",
        str(tdir / "include/torch/csrc/api/include"),
        "-isystem",
        py_inc,
        *pb_inc,
    ]
    for src in ("ead_cuda.cu", "neighbors_cuda.cu"):
        for arch in archs:
            cmd = [
                nvcc,
                "-std=c++20",
                "--expt-relaxed-constexpr",
                "-O3",
                "-DNDEBUG",
                f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
                f"--generate-code=arch=compute_{arch},code=sm_{arch}",
                "--resource-usage",
                *incs,
                "-x",
                "cu",
                "-c",
                str(HERE.parent / src),
                "-o",
                os.devnull,
            ]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr)
                raise SystemExit(f"nvcc failed on {src} for sm_{arch}")
            print(f"== {src}  sm_{arch}")
            name = None
            stack = spill_st = spill_ld = "?"
            for line in res.stderr.splitlines():
                m = re.search(r"Function properties for (\S+)", line) or re.search(
                    r"Compiling entry function '(\S+)'", line
                )
                if m:
                    name = m.group(1)
                    continue
                m = re.search(
                    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line
                )
                if m and name:
                    stack, spill_st, spill_ld = m.groups()
                m = re.search(r"Used (\d+) registers", line)
                if m and name:
                    smem = re.search(r"(\d+) bytes smem", line)
                    short = _demangle_short(name)
                    print(
                        f"  {short:58s} regs {m.group(1):>4}  stack {stack:>3} B  spills {spill_st}/{spill_ld} B"
                        f"  static smem {smem.group(1) if smem else 0} B"
                    )
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
    ap.add_argument(
        "--full", action="store_true", help="real crystals of up to 12 atoms (default: 8): slower"
    )
    ap.add_argument("--resource-usage", action="store_true", help="nvcc registers/spills per kernel")
    ap.add_argument(
        "--arch", nargs="+", default=["80", "90"], help="compute capabilities for --resource-usage"
    )
    args = ap.parse_args(argv)
    if not args.emulate and not args.resource_usage:
        args.emulate = True
    ok = True
    if args.resource_usage:
        resource_usage(args.arch)
    if args.emulate:
        import srd  # noqa: F401  (torch.ops.srd: the CPU reference)

        ok = run_emulation(full=args.full)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
