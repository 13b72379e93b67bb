"""Gaussian diffusion (DDPM) with epsilon-prediction on fixed-length vectors (SPEC section 4).

Forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I); the network predicts the noise and is
trained with the MSE loss. Sampling:

* ancestral (DDPM, Ho et al. 2020, Algorithm "Sampling"; the StructRepDiff paper's Algorithm 1):
  x_T ~ N(0, I); for t = T..1: z ~ N(0, I) if t > 1 else 0,
  x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t)) + sigma_t z,
  with sigma_t^2 = beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) ("posterior", default) or beta_t ("beta").
  With ``clip_x0`` the predicted x_0 is clipped to the data range and the posterior mean
  c1 x0 + c2 x_t is used instead (identical to the formula above when nothing is clipped).
* K-step respaced sampling over K evenly spaced steps tau_K > ... > tau_1 of the T training steps
  (DDIM, Song et al. 2021): x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z,
  sigma = eta sqrt((1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev)). eta = 0 is deterministic DDIM;
  eta = 1 is the respaced ancestral sampler (the posterior of the respaced chain).

Data live in [0, 1] (scaled R); ``data_range="symmetric"`` maps them to [-1, 1] for the diffusion and back.
The schedule is computed in float64 and stored in float32 buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import progress as _progress
from .schedules import make_betas

__all__ = ["GaussianDiffusion", "respaced_timesteps", "DATA_RANGES", "VARIANCES"]

DATA_RANGES = ("unit", "symmetric")
VARIANCES = ("posterior", "beta")
CONDITIONS = ("none", "composition")
#: What a dropped condition reads as, in diffusion space: outside both data ranges, so that the denoiser
#: can tell "no condition" from any real composition (classifier-free guidance).
NULL_CONDITION = -2.0


def respaced_timesteps(timesteps: int, steps: int) -> list[int]:
    """K = ``steps`` evenly spaced step indices in 0..T-1, ascending, always including 0 and T-1."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"sampling steps must be in 1..{timesteps} (the training T), got {steps}")
    if steps == 1:
        return [timesteps - 1]
    idx = torch.linspace(0, timesteps - 1, steps, dtype=torch.float64).round().long().unique()
    return [int(i) for i in idx]


def _gather(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a.gather(0, t)[:, None]


class GaussianDiffusion(nn.Module):
    """A DDPM around an epsilon-predicting denoiser ``model(x [B, L], t [B] int64) -> [B, L]``.

    Args:
        model: the denoiser.
        length: L, the vector length.
        timesteps: T (2000 in the paper).
        schedule: "cosine" (paper) or "linear".
        data_range: "unit" (diffuse the [0, 1] data as they are; default) or "symmetric" (map to [-1, 1]).
        clip_x0: clip the predicted x_0 to the data range during sampling (off here: the bare DDPM update;
            training configs turn it on by default).
        variance: sigma_t^2 of the ancestral sampler, "posterior" (beta~_t) or "beta" (beta_t).
        cond_mask: None (every entry is diffused), or a bool [L] mask of the *given* entries (the
            composition and size blocks of the factored generator): those entries are never noised, the
            loss ignores them, and sampling holds them at the condition it is given. A training row whose
            ``drop`` flag is set sees them as :data:`NULL_CONDITION` instead (classifier-free guidance).

    ``forward(x0, t, noise, drop=None)`` returns the training loss (used through DistributedDataParallel).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        length: int,
        timesteps: int = 2000,
        schedule: str = "cosine",
        data_range: str = "unit",
        clip_x0: bool = False,
        variance: str = "posterior",
        cond_mask: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if data_range not in DATA_RANGES:
            raise ValueError(f"data_range must be one of {DATA_RANGES}, got {data_range!r}")
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
        self.model = model
        self.length = int(length)
        self.data_range = data_range
        self.clip_x0 = bool(clip_x0)
        self.variance = variance
        self.schedule = schedule

        betas = make_betas(schedule, timesteps)  # float64
        self.num_timesteps = int(betas.shape[0])
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, dim=0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        #: float64 copy of abar on the CPU, for the coefficients of the K-step sampler.
        self.alphas_cumprod64 = abar.clone()
        buffers = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
            "sqrt_recip_alphas": alphas.rsqrt(),
            "eps_coef": betas / (1.0 - abar).sqrt(),  # beta_t / sqrt(1 - abar_t)
            "sqrt_recip_alphas_cumprod": abar.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1.0).sqrt(),
            "posterior_variance": post_var,
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
            "sigma_posterior": post_var.sqrt(),
            "sigma_beta": betas.sqrt(),
        }
        for name, val in buffers.items():
            self.register_buffer(name, val.to(torch.float32), persistent=False)
        if cond_mask is not None:
            cond_mask = torch.as_tensor(cond_mask, dtype=torch.bool)
            if cond_mask.shape != (self.length,) or not bool(cond_mask.any()):
                raise ValueError(f"cond_mask must be a non-empty bool mask of length {self.length}")
            self.register_buffer("cond_mask", cond_mask, persistent=False)
        else:
            self.cond_mask = None

    @property
    def conditional(self) -> bool:
        return self.cond_mask is not None

    def _hold(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """x with its given entries set to ``cond`` (diffusion space; None: the null condition)."""
        if self.cond_mask is None:
            return x
        x = x.clone()
        x[:, self.cond_mask] = NULL_CONDITION if cond is None else cond
        return x

    def _eps(
        self, x: torch.Tensor, tt: torch.Tensor, cond: torch.Tensor | None, guidance: float
    ) -> torch.Tensor:
        """The denoiser's noise prediction, with the condition held and classifier-free guidance
        eps_null + w (eps_cond - eps_null) when ``guidance`` w != 1."""
        if self.cond_mask is None:
            return self.model(x, tt)
        eps = self.model(self._hold(x, cond), tt)
        if guidance != 1.0:
            eps_null = self.model(self._hold(x, None), tt)
            eps = eps_null + guidance * (eps - eps_null)
        return eps

    # -------------------------------------------------------------------------------------------- data
    @property
    def bounds(self) -> tuple[float, float]:
        """The data range in diffusion space: (0, 1) or (-1, 1)."""
        return (0.0, 1.0) if self.data_range == "unit" else (-1.0, 1.0)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled R in [0, 1] -> diffusion space."""
        return x if self.data_range == "unit" else x * 2.0 - 1.0

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Diffusion space -> scaled R in [0, 1]."""
        return x if self.data_range == "unit" else (x + 1.0) * 0.5

    # ------------------------------------------------------------------------------------ training
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, in diffusion space; x0, noise [B, L], t [B] int64."""
        return (
            _gather(self.sqrt_alphas_cumprod, t) * x0 + _gather(self.sqrt_one_minus_alphas_cumprod, t) * noise
        )

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        return (
            _gather(self.sqrt_recip_alphas_cumprod, t) * x_t
            - _gather(self.sqrt_recipm1_alphas_cumprod, t) * eps
        )

    def loss(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        *,
        drop: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """Epsilon-prediction MSE of data x0 [B, L] (scaled R, [0, 1] space) at steps t [B] with noise [B, L].

        With a ``cond_mask``: the given entries are clean (or null where ``drop`` [B] bool is set) and left
        out of the loss. Returns a scalar (``reduction="mean"``) or the per-sample mean [B].
        """
        x0n = self.normalize(x0)
        x_t = self.q_sample(x0n, t, noise)
        if self.cond_mask is not None:
            given = x0n[:, self.cond_mask]
            if drop is not None:
                given = torch.where(drop[:, None], torch.full_like(given, NULL_CONDITION), given)
            x_t = x_t.clone()
            x_t[:, self.cond_mask] = given
        err = F.mse_loss(self.model(x_t, t), noise, reduction="none")
        if self.cond_mask is not None:
            err = err[:, ~self.cond_mask]
        return err.mean() if reduction == "mean" else err.mean(dim=1)

    def forward(
        self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.loss(x0, t, noise, drop=drop)

    # ------------------------------------------------------------------------------------ sampling
    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        lo, hi = self.bounds
        return x0.clamp(lo, hi)

    @torch.no_grad()
    def p_sample(
        self,
        x: torch.Tensor,
        t: int,
        z: torch.Tensor | None,
        *,
        clip_x0: bool | None = None,
        cond: torch.Tensor | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1} (t is the 0-based step index); z: the step's N(0, I) noise;
        cond: the given entries (diffusion space) of a conditional model."""
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = self._eps(x, tt, cond, guidance)
        if self.clip_x0 if clip_x0 is None else clip_x0:
            x0 = self._clip(self.predict_x0(x, tt, eps))
            mean = _gather(self.posterior_mean_coef1, tt) * x0 + _gather(self.posterior_mean_coef2, tt) * x
        else:
            mean = _gather(self.sqrt_recip_alphas, tt) * (x - _gather(self.eps_coef, tt) * eps)
        if t == 0 or z is None:
            return mean
        sigma = self.sigma_posterior if self.variance == "posterior" else self.sigma_beta
        return mean + _gather(sigma, tt) * z

    @torch.no_grad()
    def ddim_step(
        self,
        x: torch.Tensor,
        t: int,
        t_prev: int,
        z: torch.Tensor | None,
        *,
        eta: float,
        clip_x0: bool | None = None,
        cond: torch.Tensor | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """One K-step sampler step from step index t to t_prev (< t; -1 = the end: return the x0 prediction)."""
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = self._eps(x, tt, cond, guidance)
        x0 = self.predict_x0(x, tt, eps)
        if self.clip_x0 if clip_x0 is None else clip_x0:
            x0 = self._clip(x0)
            eps = (x - _gather(self.sqrt_alphas_cumprod, tt) * x0) / _gather(
                self.sqrt_one_minus_alphas_cumprod, tt
            )
        if t_prev < 0:
            return x0
        a_t = float(self.alphas_cumprod64[t])
        a_prev = float(self.alphas_cumprod64[t_prev])
        sigma = eta * ((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)) ** 0.5
        c = max(1.0 - a_prev - sigma**2, 0.0) ** 0.5
        out = x0 * a_prev**0.5 + c * eps
        if sigma > 0 and z is not None:
            out = out + sigma * z
        return out

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        steps: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        clip_x0: bool | None = None,
        show_progress: bool = False,
        cond: torch.Tensor | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """Draw n vectors.

        Args:
            n: number of samples.
            steps: None: ancestral sampling over all T steps (Algorithm 1); K (1..T): the K-step sampler.
            eta: DDIM eta of the K-step sampler (0 deterministic, 1 respaced ancestral). Ignored for K = None.
            generator: CPU generator for the initial and per-step noise (drawn on the CPU, so a seed gives the
                same noise on every device).
            device: where the model runs (default: where its parameters are).
            clip_x0: clip the predicted x0 to the data range (None: the value given at construction).
            cond: a conditional model's given entries, [n, cond_mask.sum()] in the [0, 1] space of scaled R
                (required for a conditional model; they come out exactly as given).
            guidance: classifier-free guidance scale w (1: the conditional model alone; 0: unconditional).

        Returns:
            [n, L] float32 samples on ``device``, in the [0, 1] space of scaled R (values are not clipped).
        """
        if device is None:
            device = next(self.model.parameters()).device
        device = torch.device(device)
        T, L = self.num_timesteps, self.length

        def noise() -> torch.Tensor:
            return torch.randn((n, L), generator=generator, dtype=torch.float32).to(device)

        if self.cond_mask is not None:
            k = int(self.cond_mask.sum())
            if cond is None or tuple(cond.shape) != (n, k):
                got = None if cond is None else list(cond.shape)
                raise ValueError(f"a conditional model needs cond of shape [{n}, {k}], got {got}")
            cond = self.normalize(cond.to(device=device, dtype=torch.float32))
        elif cond is not None:
            raise ValueError("cond given to an unconditional model")
        kw = {"clip_x0": clip_x0, "cond": cond, "guidance": float(guidance)}
        x = noise()
        if steps is None:
            for t in _progress(
                range(T - 1, -1, -1), total=T, desc="sample", unit="step", disable=not show_progress
            ):
                x = self.p_sample(x, t, noise() if t > 0 else None, **kw)
        else:
            ts = respaced_timesteps(T, int(steps))
            pairs = list(zip(reversed(ts), [*reversed(ts[:-1]), -1]))
            for t, t_prev in _progress(
                pairs, total=len(pairs), desc="sample", unit="step", disable=not show_progress
            ):
                z = noise() if (eta > 0 and t_prev >= 0) else None
                x = self.ddim_step(x, t, t_prev, z, eta=eta, **kw)
        if self.cond_mask is not None:
            x = self._hold(x, cond)  # the given blocks come out exactly as given
        return self.unnormalize(x)
