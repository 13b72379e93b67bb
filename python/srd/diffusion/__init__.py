"""Denoising diffusion in representation space (SPEC section 4).

* :mod:`.schedules`: cosine and linear beta schedules (float64, stored float32).
* :mod:`.gaussian`: :class:`GaussianDiffusion` (epsilon-prediction, MSE loss, ancestral and K-step samplers).
* :mod:`.unet1d`: the paper's 1-D U-Net; :mod:`.denoisers`: block-aware MLP and transformer denoisers.
* :mod:`.ema`, :mod:`.config`, :mod:`.trainer`: training (checkpoints, exact resume, torchrun).
* :func:`load_checkpoint`, :func:`sample_representations`: the sampling API.
"""

from __future__ import annotations

from .config import DiffusionConfig, MLPConfig, TrainConfig, TransformerConfig, UNet1DConfig
from .denoisers import MODELS, BlockTransformerDenoiser, MLPDenoiser, block_tokens, build_denoiser
from .ema import EMA
from .gaussian import GaussianDiffusion, respaced_timesteps
from .sampling import load_checkpoint, load_composition_model, sample_representations
from .schedules import cosine_betas, linear_betas, make_betas
from .trainer import CHECKPOINT_FORMAT, build_diffusion, check_run_dir, model_spec, setup_distributed, train
from .unet1d import UNet1D

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODELS",
    "BlockTransformerDenoiser",
    "DiffusionConfig",
    "EMA",
    "GaussianDiffusion",
    "MLPConfig",
    "MLPDenoiser",
    "TrainConfig",
    "TransformerConfig",
    "UNet1D",
    "UNet1DConfig",
    "block_tokens",
    "build_denoiser",
    "build_diffusion",
    "check_run_dir",
    "cosine_betas",
    "linear_betas",
    "load_checkpoint",
    "make_betas",
    "model_spec",
    "respaced_timesteps",
    "sample_representations",
    "load_composition_model",
    "setup_distributed",
    "train",
]
