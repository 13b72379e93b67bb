"""Diffusion benchmarks (pytest-benchmark): training steps per second and sampling seconds per crystal.

    pytest benchmarks/bench_diffusion.py --benchmark-enable -p no:randomly

(skipped without --benchmark-enable). Models: the paper's U-Net (dim 64, mults 1,2,4,8) and the block-aware
MLP and transformer at their default sizes, on R of length 704. Training: one Adam step (forward, backward,
update) at batch 64. Sampling: one denoising step at batch 256, reported in ``extra_info`` as seconds per
crystal for the full T = 2000 ancestral sampler (2000 steps) and for K-step samplers (K steps), diffusion
only (no decoding or reconstruction). Runs on the GPU when there is one, else on the CPU, where
``extra_info`` also has CPU-time figures (``cpu_*``: process CPU seconds, which other jobs on a shared
machine do not inflate; set OMP_NUM_THREADS to choose the threads).
"""

from __future__ import annotations

import time

import pytest
import torch

from srd.diffusion import GaussianDiffusion, block_tokens, build_denoiser
from srd.representation import Layout

L = 704
T = 2000
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _spec(name: str) -> dict:
    kwargs = (
        {"segments": [list(s) for s in block_tokens(Layout().blocks(), ead_row=50)]}
        if name == "transformer"
        else {}
    )
    return {"name": name, "length": L, "kwargs": kwargs}


def _diffusion(name: str) -> GaussianDiffusion:
    torch.manual_seed(0)
    return GaussianDiffusion(build_denoiser(_spec(name)), length=L, timesteps=T).to(DEVICE)


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _cpu_seconds(fn, n: int = 1) -> float:
    """CPU seconds of this process per call of fn (on a shared CPU, wall time also counts other jobs)."""
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


@pytest.fixture
def enabled(benchmark):
    if benchmark.disabled:
        pytest.skip("benchmarks run only with --benchmark-enable")
    return benchmark


@pytest.mark.parametrize("name", ["unet1d", "mlp", "transformer"])
def test_train_step_batch64(enabled, name):
    benchmark = enabled
    d = _diffusion(name)
    opt = torch.optim.Adam(d.model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((64, L), generator=g).to(DEVICE)
    t = torch.randint(0, T, (64,), generator=g).to(DEVICE)
    noise = torch.randn((64, L), generator=g).to(DEVICE)

    def step():
        loss = d(x0, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync()

    rounds = 2 if (name == "unet1d" and DEVICE.type == "cpu") else 10
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1, iterations=1)
    info = {"model": name, "device": str(DEVICE), "threads": torch.get_num_threads()}
    info["parameters"] = sum(p.numel() for p in d.model.parameters())
    info["steps_per_s"] = 1.0 / benchmark.stats.stats.mean
    if DEVICE.type == "cpu":
        info["cpu_s_per_step"] = _cpu_seconds(step, 1 if name == "unet1d" else 5)
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("name", ["unet1d", "mlp", "transformer"])
def test_sampling_step_batch256(enabled, name):
    benchmark = enabled
    d = _diffusion(name).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn((256, L), generator=g).to(DEVICE)
    z = torch.randn((256, L), generator=g).to(DEVICE)

    def step():
        d.p_sample(x, 1000, z)
        _sync()

    rounds = 2 if (name == "unet1d" and DEVICE.type == "cpu") else 10
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1, iterations=1)
    info = {"model": name, "device": str(DEVICE), "threads": torch.get_num_threads()}
    per_step = {"wall": benchmark.stats.stats.mean / 256}  # seconds per crystal and denoising step
    if DEVICE.type == "cpu":
        per_step["cpu"] = _cpu_seconds(step, 1 if name == "unet1d" else 5) / 256
    for kind, v in per_step.items():
        info[f"{kind}_s_per_crystal_ancestral_T2000"] = v * T
        for k in (200, 100, 50):
            info[f"{kind}_s_per_crystal_K{k}"] = v * k
    benchmark.extra_info.update(info)


def test_sampling_k50_end_to_end_mlp(enabled):
    """A whole K = 50 DDIM run (batch 256) of the MLP, to check the per-step extrapolation."""
    benchmark = enabled
    d = _diffusion("mlp").eval()

    def run():
        d.sample(256, steps=50, generator=torch.Generator().manual_seed(0), device=DEVICE)
        _sync()

    benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    benchmark.extra_info.update(device=str(DEVICE), s_per_crystal_K50=benchmark.stats.stats.mean / 256)
