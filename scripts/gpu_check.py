"""Helpers of `make gpu-check` (scripts/gpu_check.sh): the preflight and the CUDA kernel timings.

    python scripts/gpu_check.py preflight   # exit 2 with a clear message unless a CUDA GPU and a build chain are here
    python scripts/gpu_check.py timings     # CUDA timings of the installed srd (needs the GPU)
    python scripts/gpu_check.py timings --device cpu   # a smoke run of the timing code without a GPU

Timings (CUDA events, median of several runs after a warm-up), on the real crystals of
tests/data/crystals.pt (64 per dataset, no pymatgen needed), default EAD grid:
  * ead forward and forward+backward (loss: L1 of the max/min-pooled features), batch of 64 crystals per
    dataset, float32 and float64, with the CPU op's time for reference;
  * one reconstruction step as srd-reconstruct runs it: 16 crystals x 6 trials batched, forward of the
    pooled features and d_min, backward, and the position update (float32).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRYSTALS = ROOT / "tests" / "data" / "crystals.pt"


def _fail(msg: str) -> None:
    print(f"gpu-check: {msg}", file=sys.stderr)
    raise SystemExit(2)


def preflight() -> None:
    try:
        import torch
    except ImportError:
        _fail(
            f"{sys.executable} has no torch; choose the Python with `make gpu-check GPU_PYTHON=/path/to/python`"
        )
    if not torch.version.cuda:
        _fail(
            f"torch {torch.__version__} of {sys.executable} is a CPU build: the CUDA kernels cannot be built "
            "(choose another Python with `make gpu-check GPU_PYTHON=/path/to/python`)"
        )
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        smi = shutil.which("nvidia-smi")
        extra = ""
        if smi:
            res = subprocess.run([smi, "-L"], capture_output=True, text=True)
            extra = f"; nvidia-smi -L says: {(res.stdout or res.stderr).strip() or '(nothing)'}"
        else:
            extra = "; nvidia-smi is not installed"
        _fail(
            "no CUDA GPU is visible to torch "
            f"(torch {torch.__version__}, CUDA {torch.version.cuda}, torch.cuda.is_available() = "
            f"{torch.cuda.is_available()}{extra}). Run `make gpu-check` on a machine with an NVIDIA GPU."
        )
    nvcc = None
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            nvcc = str(Path(home) / "bin" / "nvcc")
            break
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        _fail("nvcc was not found (set CUDA_HOME or put nvcc on PATH): the CUDA kernels cannot be built")
    missing = []
    for mod in ("scikit_build_core", "pybind11", "pytest", "numpy"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        _fail(
            f"{sys.executable} lacks {', '.join(missing)} (needed to build srd and run the tests; "
            "there is no network here to install them)"
        )
    if shutil.which("cmake") is None:
        try:
            import cmake  # noqa: F401
        except ImportError:
            _fail("cmake (>= 3.18) is not installed: scikit-build-core needs it to build srd")
    cc = torch.cuda.get_device_capability(0)
    print(
        f"gpu-check: {torch.cuda.get_device_name(0)} (compute capability {cc[0]}.{cc[1]}), "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, nvcc {nvcc}"
    )
    # the architecture list for the build: only this GPU's (shell-readable on the last line)
    print(f"SRD_CUDA_ARCH_LIST={cc[0]}.{cc[1]}")


# ------------------------------------------------------------------------------------------------
# Timings
# ------------------------------------------------------------------------------------------------
def _cuda_ms(fn, reps: int = 10, warmup: int = 3) -> float:
    import torch

    if not torch.cuda.is_available():  # (--device cpu smoke run)
        return _cpu_ms(fn, reps=1)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _cpu_ms(fn, reps: int = 2) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return min(times)


def _pooled(features, ptr):
    """Max and min over the atoms of each crystal, [B, 2F] (srd.representation.pooled_ead without pymatgen)."""
    import torch

    counts = ptr[1:] - ptr[:-1]
    seg = torch.repeat_interleave(torch.arange(len(counts), device=features.device), counts)
    idx = seg[:, None].expand(-1, features.shape[1])
    shape = (len(counts), features.shape[1])
    mx = features.new_full(shape, -torch.inf).scatter_reduce(0, idx, features, "amax")
    mn = features.new_full(shape, torch.inf).scatter_reduce(0, idx, features, "amin")
    return torch.cat([mx, mn], dim=1)


def timings(device: str = "cuda") -> None:
    import torch

    import srd

    if device == "cuda" and not (torch.cuda.is_available() and srd.has_cuda_kernels()):
        _fail("timings need a CUDA GPU and srd built with CUDA kernels")
    data = torch.load(CRYSTALS, weights_only=True)
    params = srd.EADParams()
    dev = torch.device(device)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke run)"
    print(
        f"\nEAD kernel timings on {name} (default grid: {params.n_channels} channels, "
        f"cutoff {params.cutoff} A; median of 10 CUDA-event timings; CPU: best of 2, "
        f"{torch.get_num_threads()} threads)"
    )
    print(
        f"{'dataset':<10} {'dtype':<8} {'crystals':>8} {'atoms':>6}  {'fwd ms':>8} {'fwd+bwd ms':>11}  "
        f"{'CPU fwd+bwd ms':>15}"
    )
    for ds in ("perov_5", "carbon_24", "mp_20"):
        d = data[ds]
        ptr = d["ptr"]
        for dtype in (torch.float32, torch.float64):
            pos = d["positions"].to(dev, dtype)
            cel = d["cells"].to(dev, dtype)
            num, ptr_d = d["numbers"].to(dev), ptr.to(dev)

            def fwd(pos=pos, cel=cel, num=num, ptr_d=ptr_d):
                with torch.no_grad():
                    srd.ead_batch(pos, num, cel, ptr_d, params=params, check=False)

            def fwd_bwd(pos=pos, cel=cel, num=num, ptr_d=ptr_d):
                x = pos.detach().requires_grad_()
                f = srd.ead_batch(x, num, cel, ptr_d, params=params, check=False)
                (_pooled(f, ptr_d).abs().sum() / 1e6).backward()

            cpu = (pos.cpu(), cel.cpu(), num.cpu(), ptr)
            cpu_ms = _cpu_ms(lambda cpu=cpu: fwd_bwd(*cpu))
            print(
                f"{ds:<10} {str(dtype).split('.')[-1]:<8} {len(ptr) - 1:>8} {int(ptr[-1]):>6}  "
                f"{_cuda_ms(fwd):>8.2f} {_cuda_ms(fwd_bwd):>11.2f}  {cpu_ms:>15.1f}",
                flush=True,
            )

    print(
        "\nOne reconstruction step (16 crystals x 6 trials in one batch, float32: pooled EAD + d_min, "
        "L1 loss, backward, position update)"
    )
    trials, n_targets = 6, 16
    for ds in ("perov_5", "carbon_24", "mp_20"):
        d = data[ds]
        ptr = d["ptr"][: n_targets + 1]
        counts = (ptr[1:] - ptr[:-1]).repeat_interleave(trials)
        rep_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).to(dev)
        atoms = [torch.arange(int(ptr[k]), int(ptr[k + 1])) for k in range(n_targets) for _ in range(trials)]
        atoms = torch.cat(atoms)
        num = d["numbers"][atoms].to(dev)
        cel = d["cells"][:n_targets].repeat_interleave(trials, 0).to(dev, torch.float32)
        true_pos = d["positions"][atoms].to(dev, torch.float32)
        with torch.no_grad():
            target = torch.cat(
                [
                    _pooled(srd.ead_batch(true_pos, num, cel, rep_ptr, params=params), rep_ptr) / 1e6,
                    srd.min_distance(true_pos, cel, rep_ptr)[:, None],
                ],
                dim=1,
            )
        g = torch.Generator(device=dev).manual_seed(0)
        pos = true_pos + 0.3 * torch.randn(true_pos.shape, generator=g, device=dev)

        def step(pos=pos, num=num, cel=cel, rep_ptr=rep_ptr, target=target):
            x = pos.detach().requires_grad_()
            f = srd.ead_batch(x, num, cel, rep_ptr, params=params, check=False)
            pred = torch.cat(
                [_pooled(f, rep_ptr) / 1e6, srd.min_distance(x, cel, rep_ptr, check=False)[:, None]], dim=1
            )
            loss = (pred - target).abs().mean(dim=1)
            (grad,) = torch.autograd.grad(loss.sum(), x)
            pos.sub_(1e-3 * grad.sign())

        print(
            f"  {ds:<10} {n_targets * trials} replicas, {int(rep_ptr[-1])} atoms: {_cuda_ms(step):.2f} ms/step",
            flush=True,
        )


def main(argv: list[str]) -> int:
    if argv == ["preflight"]:
        preflight()
    elif argv[:1] == ["timings"] and argv[1:] in ([], ["--device", "cuda"], ["--device", "cpu"]):
        timings(argv[2] if len(argv) == 3 else "cuda")
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
