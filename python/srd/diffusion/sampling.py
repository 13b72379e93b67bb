"""Loading trained checkpoints and sampling scaled R vectors (what ``srd-sample`` calls)."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch

from ..descriptor import EADParams
from ..representation import ScalingStats
from .config import TrainConfig
from .gaussian import GaussianDiffusion
from .trainer import build_diffusion, read_checkpoint

__all__ = ["load_checkpoint", "load_composition_model", "sample_representations"]


def load_composition_model(meta: dict):
    """The checkpoint's p(composition, size) (a :class:`CompositionModel`), or None (unconditional runs)."""
    d = meta.get("composition_model")
    if d is None:
        return None
    from .composition import CompositionModel

    try:
        return CompositionModel.from_dict(d)
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{meta.get('path', 'checkpoint')}: malformed composition model ({err})") from None


def load_checkpoint(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[GaussianDiffusion, dict]:
    """Load RUN/checkpoint.pt (or a RUN folder) for sampling.

    The checkpoint's checksum and the finiteness of its weights are checked first (ValueError naming the
    file when it is corrupted or holds NaN / inf weights).

    Returns:
        (diffusion, meta): the :class:`GaussianDiffusion` with the trained (non-EMA) weights on ``device``,
        in eval mode; and a dict with every checkpoint entry except the optimiser and RNG states
        (``config``, ``model_spec``, ``stats``, ``dataset``, ``n_max``, ``params``, ``layout``, ``dim``,
        ``step``, ``epoch``, ``ema`` (the EMA state or None), ``data``, ``meta``, ...), plus
        ``train_config`` (a :class:`TrainConfig`), ``scaling_stats`` (a :class:`ScalingStats`),
        ``ead_params`` (an :class:`EADParams`) and ``path``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    ck = read_checkpoint(path)  # format, checksum (corrupted bytes are refused), finite weights
    try:
        config = TrainConfig.from_dict(ck["config"], where=f"{path}: config")
        diffusion = build_diffusion(config, ck["model_spec"])
        diffusion.model.load_state_dict(ck["model"])
        meta = {k: v for k, v in ck.items() if k not in ("model", "optimizer", "rng")}
        meta["train_config"] = config
        meta["scaling_stats"] = ScalingStats.from_dict(ck["stats"])
        meta["ead_params"] = EADParams.from_dict(ck["params"])
        meta["path"] = str(path)
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(
            f"{path}: malformed srd diffusion checkpoint ({type(err).__name__}: {err})"
        ) from None
    diffusion.to(device).eval()
    return diffusion, meta


def sample_representations(
    ckpt_or_loaded: str | os.PathLike | tuple[GaussianDiffusion, dict],
    n: int,
    *,
    sampling_steps: int | None = None,
    eta: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
    use_ema: bool = True,
    clip_x0: bool | None = None,
    progress: bool = True,
    compositions: list[dict[int, int]] | None = None,
    guidance: float = 1.0,
    composition_temperature: float = 1.0,
) -> torch.Tensor:
    """Sample n scaled R vectors from a trained model.

    Args:
        ckpt_or_loaded: a checkpoint path (or RUN folder) or the result of :func:`load_checkpoint`.
        n: number of vectors.
        sampling_steps: None (or T): ancestral sampling over all T training steps (the paper's Algorithm 1);
            K < T: the K-step respaced sampler (DDIM with ``eta``).
        eta: DDIM eta for K < T (0 deterministic, 1 respaced ancestral); None: the run's
            ``diffusion.eta`` (0 by default).
        batch_size: vectors per batch.
        seed: the same seed (and batch_size) gives identical samples.
        device: where the network runs.
        use_ema: use the EMA weights when the checkpoint has them (a warning when it has none).
        clip_x0: clip the predicted x0 to the data range at every step (None: the run's
            ``diffusion.clip_x0``).
        progress: progress bar over batches.
        compositions: for a conditional (factored) model, the n cell compositions (Z -> count) to generate
            structures for; None: drawn from the checkpoint's composition model (seeded by ``seed``, at
            ``composition_temperature``). Ignored by unconditional models (ValueError if given).
        guidance: classifier-free guidance scale of a conditional model (1: plain conditional).

    Returns:
        [n, L] float32 on the CPU, in the [0, 1] space of ``Features.R`` (invert with the checkpoint's
        scaling statistics, e.g. :func:`srd.representation.decode`).
    """
    if n < 0:
        raise ValueError(f"number of samples must be >= 0, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(ckpt_or_loaded, tuple):
        diffusion, meta = ckpt_or_loaded
    else:
        diffusion, meta = load_checkpoint(ckpt_or_loaded, device=device)
    T = diffusion.num_timesteps
    if sampling_steps is not None and not 1 <= sampling_steps <= T:
        raise ValueError(f"sampling_steps must be in 1..{T} (the training T), got {sampling_steps}")
    steps = None if sampling_steps in (None, T) else int(sampling_steps)
    if eta is None:
        eta = float(meta["train_config"].diffusion.eta) if "train_config" in meta else 0.0
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    device = torch.device(device)
    model = diffusion
    if use_ema:
        if meta.get("ema") is not None:
            model = copy.deepcopy(diffusion)
            model.model.load_state_dict(meta["ema"]["shadow"], strict=False)
        elif not meta.get("pretrained"):  # a packaged model's weights are its EMA weights already
            warnings.warn("checkpoint has no EMA weights; sampling with the trained weights", stacklevel=2)
    model = model.to(device).eval()
    L = model.length
    cond_all = None
    if model.conditional:
        from .composition import composition_block

        if compositions is None:
            cmodel = load_composition_model(meta)
            if cmodel is None:
                raise ValueError(f"{meta.get('path')}: a conditional model without a composition model")
            gc = torch.Generator().manual_seed(int(seed) + 7919)  # apart from the diffusion noise
            compositions = cmodel.sample(n, generator=gc, temperature=composition_temperature)
        if len(compositions) != n:
            raise ValueError(f"{len(compositions)} compositions given for {n} samples")
        cond_all = composition_block(compositions, int(meta["n_max"]))
    elif compositions is not None:
        raise ValueError(
            f"{meta.get('path')}: this model was trained without conditioning (diffusion.condition = none), "
            "so it cannot take a composition; train one with --config NAME_cond"
        )
    g = torch.Generator().manual_seed(int(seed))
    out = torch.empty((n, L), dtype=torch.float32)
    from ..utils import progress as _progress

    bar = _progress(total=n, desc="sample", unit="vector", disable=not progress)
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        cond = None if cond_all is None else cond_all[start : start + m]
        x = model.sample(
            m, steps=steps, eta=eta, generator=g, device=device, clip_x0=clip_x0, cond=cond, guidance=guidance
        )
        out[start : start + m] = x.float().cpu()
        bar.update(m)
    bar.close()
    return out
