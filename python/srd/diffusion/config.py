"""Typed, frozen training configuration: built-in defaults < TOML file < command-line flags.

A TOML file holds the top-level fields of :class:`TrainConfig` and one table per nested section::

    model = "unet1d"
    epochs = 2000
    batch_size = 64
    lr = 1e-4

    [diffusion]
    timesteps = 2000
    schedule = "cosine"

    [unet1d]
    dim = 64
    dim_mults = [1, 2, 4, 8]

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .denoisers import MODELS
from .gaussian import CONDITIONS, DATA_RANGES, VARIANCES
from .schedules import SCHEDULES

__all__ = [
    "DiffusionConfig",
    "UNet1DConfig",
    "MLPConfig",
    "TransformerConfig",
    "TrainConfig",
    "RESUMABLE_FIELDS",
    "load_toml",
    "config_diff",
    "CONFIGS_DIR",
    "packaged_configs",
    "config_path",
]


@dataclass(frozen=True)
class DiffusionConfig:
    """The DDPM.

    timesteps: T. schedule: "cosine" | "linear". data_range: "unit" (diffuse scaled R in [0, 1]) or
    "symmetric" (map to [-1, 1]). clip_x0: clip predicted x0 to the data range while sampling (default on,
    as in lucidrains' GaussianDiffusion1D, the code the paper used; off = the bare DDPM update, whose first
    steps amplify the network's error ~30x with the cosine schedule's beta_T = 0.999).
    variance: sigma_t^2 of ancestral sampling, "posterior" (beta~_t) or "beta" (beta_t).
    eta: default DDIM eta of the K-step sampler (0 deterministic, 1 respaced ancestral).
    condition: "none" (the paper: one model of all of R) or "composition" (the factored generator: the
    composition and size blocks are given, clean, and the model learns the other blocks for them; a
    composition model fitted on the same data supplies them when none is given). cond_drop: the fraction of
    training vectors whose condition is replaced by the null value (classifier-free guidance).
    """

    timesteps: int = 2000
    schedule: str = "cosine"
    data_range: str = "unit"
    clip_x0: bool = True
    variance: str = "posterior"
    eta: float = 0.0
    condition: str = "none"
    cond_drop: float = 0.1


@dataclass(frozen=True)
class UNet1DConfig:
    """The paper's 1-D U-Net (SPEC section 4)."""

    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    resnet_groups: int = 8
    attn_heads: int = 4
    attn_dim_head: int = 32


@dataclass(frozen=True)
class MLPConfig:
    """Residual MLP over the whole vector."""

    hidden: int = 512
    depth: int = 4
    mult: int = 2
    time_dim: int = 256
    dropout: float = 0.0


@dataclass(frozen=True)
class TransformerConfig:
    """Transformer over block tokens; ead_row: values per EAD token (0 = the number of mu centres)."""

    d_model: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    time_dim: int = 256
    dropout: float = 0.0
    ead_row: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    model: "unet1d" | "mlp" | "transformer". epochs: passes over the data (ignored when max_steps > 0).
    max_steps: stop after this many optimiser steps (0: use epochs). max_minutes: also stop (with a
    checkpoint) after this much training time (0: no limit; a resumed run counts its earlier time). batch_size: global batch (split over
    torchrun processes). grad_clip: max gradient norm (0: off). ema / ema_decay: keep an EMA of the
    weights (used for sampling). checkpoint_every / log_every: in optimiser steps. device: cpu, cuda,
    cuda:N or auto. data: the training file. dataset / n_max: passed to featurisation of a CSV ("" / 0:
    inferred from the path).
    """

    model: str = "unet1d"
    epochs: int = 2000
    max_steps: int = 0
    max_minutes: float = 0.0
    batch_size: int = 64
    lr: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema: bool = True
    ema_decay: float = 0.9995
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    device: str = "auto"
    data: str = ""
    dataset: str = ""
    n_max: int = 0
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    unet1d: UNet1DConfig = field(default_factory=UNet1DConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.model not in MODELS:
            problems.append(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "n_max", "seed"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_minutes < 0:
            problems.append(f"max_minutes must be >= 0, got {self.max_minutes}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            problems.append(f"adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            problems.append("weight_decay and grad_clip must be >= 0")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        d = self.diffusion
        if d.timesteps < 1:
            problems.append(f"diffusion.timesteps must be >= 1, got {d.timesteps}")
        if d.schedule not in SCHEDULES:
            problems.append(f"diffusion.schedule must be one of {sorted(SCHEDULES)}, got {d.schedule!r}")
        if d.data_range not in DATA_RANGES:
            problems.append(f"diffusion.data_range must be one of {DATA_RANGES}, got {d.data_range!r}")
        if d.variance not in VARIANCES:
            problems.append(f"diffusion.variance must be one of {VARIANCES}, got {d.variance!r}")
        if not 0 <= d.eta <= 1:
            problems.append(f"diffusion.eta must be in [0, 1], got {d.eta}")
        if d.condition not in CONDITIONS:
            problems.append(f"diffusion.condition must be one of {CONDITIONS}, got {d.condition!r}")
        if not 0.0 <= d.cond_drop < 1.0:
            problems.append(f"diffusion.cond_drop must be in [0, 1), got {d.cond_drop}")
        if self.transformer.d_model % self.transformer.heads:
            problems.append("transformer.d_model must be divisible by transformer.heads")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    # ---------------------------------------------------------------------------------------- I/O
    def to_dict(self) -> dict:
        """Plain types only (lists for tuples): fit for JSON, TOML and weights_only checkpoints."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "config") -> TrainConfig:
        """Build from a (possibly partial) nested dict; unknown keys and wrong types raise ValueError."""
        return _build(cls, d, where)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields changed (``diffusion`` etc. take dicts of their fields or instances)."""
        merged = self.to_dict()
        for k, v in changes.items():
            if dataclasses.is_dataclass(v):
                v = _plain(dataclasses.asdict(v))
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
        return TrainConfig.from_dict(merged, where="config")


#: Fields that may change when a run is resumed (run length, bookkeeping, hardware, how the data are
#: found); the data themselves are checked by their hash.
RESUMABLE_FIELDS = frozenset(
    {
        "epochs",
        "max_steps",
        "max_minutes",
        "checkpoint_every",
        "log_every",
        "device",
        "data",
        "dataset",
        "n_max",
    }
)


def config_diff(
    a: dict, b: dict, *, ignore: frozenset[str] | set[str] = frozenset(), prefix: str = ""
) -> list[str]:
    """Dotted names of the fields where two config dicts differ (``ignore``: top-level names to skip)."""
    out = []
    for k in sorted(set(a) | set(b)):
        if not prefix and k in ignore:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, prefix=f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def load_toml(path: str | Path) -> dict:
    """Read a TOML config file into a dict (ValueError with the file name on a syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None


#: The training configs shipped inside the package (``srd-train --config NAME`` finds them by name).
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def packaged_configs() -> dict[str, str]:
    """Name -> one-line description (the file's first comment line) of every packaged training config."""
    out = {}
    for path in sorted(CONFIGS_DIR.glob("*.toml")):
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        out[path.stem] = first[0].lstrip("#").strip() if first and first[0].startswith("#") else ""
    return out


def config_path(name_or_path: str | Path) -> Path:
    """The TOML file of a training config: an existing file path as given, else a packaged config by name
    (``small``, ``perov_5_cpu``; ``small.toml`` works too). FileNotFoundError naming the packaged configs
    otherwise."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    name = text[: -len(".toml")] if text.endswith(".toml") else text
    packaged = CONFIGS_DIR / f"{name}.toml"
    if "/" not in text and "\\" not in text and packaged.is_file():
        return packaged
    names = ", ".join(packaged_configs()) or "none"
    raise FileNotFoundError(
        f"config {text!r}: no such file, and not the name of a packaged config (packaged: {names})"
    )


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        elem = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, elem, where) for v in value)
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType):
        raise TypeError("unions are not used in TrainConfig")
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp}")


def _build(cls: type, d: dict, where: str):
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a table, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}: {k}") for k, v in d.items()}
    return cls(**kwargs)
