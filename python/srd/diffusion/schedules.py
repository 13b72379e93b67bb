"""Noise schedules of the DDPM (SPEC section 4): computed in float64, handed out as float32.

A schedule is the sequence beta_1..beta_T of per-step noise variances; alpha_t = 1 - beta_t and
alpha_bar_t = prod_{s <= t} alpha_s. Index 0 of every tensor is diffusion step t = 1.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SCHEDULES", "cosine_betas", "linear_betas", "make_betas", "BETA_MAX"]

#: Betas are clipped at this value (Nichol & Dhariwal 2021), so that alpha_t > 0 at the last steps.
BETA_MAX = 0.999


def cosine_betas(timesteps: int, *, s: float = 0.008, max_beta: float = BETA_MAX) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021): alpha_bar(t) = cos^2(((t/T) + s) / (1 + s) * pi/2) / f(0).

    beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped to [0, max_beta].

    Returns:
        [timesteps] float64 betas.
    """
    if timesteps < 1:
        raise ValueError(f"cosine schedule: timesteps must be >= 1, got {timesteps}")
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    f = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = f / f[0]
    betas = 1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0.0, max_beta)


def linear_betas(timesteps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear schedule of Ho et al. (2020), rescaled so that T steps cover the same total noise as T = 1000.

    beta goes linearly from beta_start * 1000/T to beta_end * 1000/T.

    Returns:
        [timesteps] float64 betas.
    """
    if timesteps < 1:
        raise ValueError(f"linear schedule: timesteps must be >= 1, got {timesteps}")
    scale = 1000.0 / timesteps
    return torch.linspace(beta_start * scale, min(beta_end * scale, BETA_MAX), timesteps, dtype=torch.float64)


SCHEDULES = {"cosine": cosine_betas, "linear": linear_betas}


def make_betas(name: str, timesteps: int) -> torch.Tensor:
    """Betas of the named schedule (``cosine`` or ``linear``): [timesteps] float64."""
    try:
        fn = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown noise schedule {name!r}; known: {sorted(SCHEDULES)}") from None
    return fn(timesteps)
