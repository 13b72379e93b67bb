"""Training loop of the representation-space DDPM: checkpoints, exact resume, logs, torchrun/DDP.

:class:`Trainer` holds the state of a run and its steps; :func:`train` builds one and runs it.

Reproducibility contract: a run resumed from any checkpoint follows the same loss curve, bit for bit (on
the same hardware and thread count), as the uninterrupted run with the same seed, because

* the data order of epoch e comes from ``DistributedSampler(seed=seed).set_epoch(e)`` (a generator seeded by
  seed + e), and a resumed run skips the batches of the interrupted epoch that were already used;
* the diffusion step t and the noise of optimiser step s on rank r come from a CPU generator seeded from
  (seed, rank, s), so no noise-generator state has to survive (the global RNG states are checkpointed too);
* the model, EMA and optimiser states and the running loss accumulator are checkpointed.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from ..representation import Features
from ..representation.layout import N_ELEMENTS, Layout
from ..utils import (
    Terminated,
    atomic_torch_save,
    atomic_write_text,
    progress,
    read_json,
    resolve_device,
    run_metadata,
    safe_torch_load,
    verify_checksum,
    with_checksum,
    write_json,
)
from .config import RESUMABLE_FIELDS, TrainConfig, config_diff
from .denoisers import block_tokens, build_denoiser
from .ema import EMA
from .gaussian import GaussianDiffusion

__all__ = [
    "CHECKPOINT_FORMAT",
    "LOG_COLUMNS",
    "TrainingDiverged",
    "read_checkpoint",
    "model_spec",
    "build_diffusion",
    "check_run_dir",
    "setup_distributed",
    "data_fingerprint",
    "Trainer",
    "train",
]

CHECKPOINT_FORMAT = "srd-diffusion-checkpoint"
CHECKPOINT_VERSION = 1
#: Epochs of the composition model's fit (the held-out NLL's best epoch is kept; Perov-5's is ~10).
COMPOSITION_EPOCHS = 20
LOG_COLUMNS = ("step", "epoch", "loss", "lr", "seconds")
#: The files srd-train writes into RUN (atomically, through hidden ``.<name>.<random>.tmp`` files).
RUN_FILES = ("checkpoint.pt", "config.json", "log.csv", "loss.png")
_STALE_TMP = re.compile(r"\.(" + "|".join(re.escape(n) for n in RUN_FILES) + r")\.[A-Za-z0-9_]+\.tmp")


class TrainingDiverged(RuntimeError):
    """The training loss (or the weights) became non-finite; no checkpoint was written with that state."""


# ------------------------------------------------------------------------------------------------
# Checkpoint files
# ------------------------------------------------------------------------------------------------
def _nonfinite_tensors(obj, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a (nested) state dict that hold NaN or inf."""
    bad = []
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            bad.append(prefix or "tensor")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += _nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            bad += _nonfinite_tensors(v, f"{prefix}.{i}" if prefix else str(i))
    return bad


def _name_some(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} tensors in all)" if len(names) > k else "")


def read_checkpoint(path: str | os.PathLike, *, optimizer: bool = False) -> dict:
    """Load an srd-train checkpoint and check it: format, checksum, finite weights (and optimiser state).

    Raises ValueError naming the file when it is not a checkpoint, is corrupted (checksum mismatch) or
    holds non-finite model / EMA weights (and, with ``optimizer``, a non-finite optimiser state).
    Checkpoints written before srd stored checksums load without the checksum test.
    """
    path = Path(path)
    ck = safe_torch_load(path, what="checkpoint")
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an srd diffusion checkpoint (written by srd-train)")
    verify_checksum(ck, str(path))
    parts = [("model", ck.get("model"))]
    if isinstance(ck.get("ema"), dict):
        parts.append(("ema", ck["ema"].get("shadow")))
    if optimizer:
        parts.append(("optimizer", ck.get("optimizer")))
    for what, state in parts:
        bad = _nonfinite_tensors(state)
        if bad:
            raise ValueError(
                f"{path}: the {what} weights are not finite (NaN or inf in {_name_some(bad)}) at step "
                f"{ck.get('step', '?')}; the checkpoint is unusable (the run diverged before srd checked "
                "for it). Train again, e.g. with a lower --lr"
            )
    return ck


def _remove_stale_temps(out: Path, log) -> None:
    """Delete the ``.<name>.<random>.tmp`` files an interrupted atomic write (e.g. SIGKILL) left in RUN."""
    if not out.is_dir():
        return
    for f in sorted(out.iterdir()):
        if _STALE_TMP.fullmatch(f.name) and f.is_file():
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                log(f"removed {f}, a temporary file left by an interrupted save")


def _last_logged_loss(path: Path, until: int) -> float:
    """The loss of the last row of log.csv at or before step ``until`` (nan when there is none)."""
    last = math.nan
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines()[1:]:
            with contextlib.suppress(ValueError, IndexError):
                cols = line.split(",")
                if int(cols[0]) <= until:
                    last = float(cols[2])
    return last


# ------------------------------------------------------------------------------------------------
# Model construction
# ------------------------------------------------------------------------------------------------
def model_spec(config: TrainConfig, *, length: int, blocks: dict, ead_row: int) -> dict:
    """The plain-typed description of the denoiser (saved in checkpoints; see ``build_denoiser``).

    Args:
        length: L, the length of R.
        blocks: ``Layout.blocks()`` of R.
        ead_row: values per (L, eta) row of the EAD blocks (the number of mu centres).
    """
    name = config.model
    if name == "unet1d":
        c = config.unet1d
        kwargs = {
            "dim": c.dim,
            "dim_mults": list(c.dim_mults),
            "resnet_groups": c.resnet_groups,
            "attn_heads": c.attn_heads,
            "attn_dim_head": c.attn_dim_head,
        }
    elif name == "mlp":
        c = config.mlp
        kwargs = {
            "hidden": c.hidden,
            "depth": c.depth,
            "mult": c.mult,
            "time_dim": c.time_dim,
            "dropout": c.dropout,
        }
    else:
        c = config.transformer
        segs = block_tokens(blocks, ead_row=c.ead_row or ead_row)
        kwargs = {
            "segments": [list(s) for s in segs],
            "d_model": c.d_model,
            "depth": c.depth,
            "heads": c.heads,
            "mlp_ratio": c.mlp_ratio,
            "time_dim": c.time_dim,
            "dropout": c.dropout,
        }
    return {"name": name, "length": int(length), "kwargs": kwargs}


def build_diffusion(config: TrainConfig | dict, spec: dict, *, seed: int | None = None) -> GaussianDiffusion:
    """The denoiser of ``spec`` inside a :class:`GaussianDiffusion` configured by ``config.diffusion``.

    ``seed`` fixes the initial weights without touching the global RNG.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config, where="checkpoint config")
    d = config.diffusion
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = build_denoiser(spec)
    return GaussianDiffusion(
        model,
        length=int(spec["length"]),
        timesteps=d.timesteps,
        schedule=d.schedule,
        data_range=d.data_range,
        clip_x0=d.clip_x0,
        variance=d.variance,
        cond_mask=condition_mask(d.condition, int(spec["length"])),
    )


def condition_mask(condition: str, length: int) -> torch.Tensor | None:
    """The given entries of R for ``diffusion.condition`` (None for "none"): "composition" gives the
    composition and size blocks (the factored generator p(composition, size) x p(rest | composition, size))."""
    if condition == "none":
        return None
    if condition != "composition":
        raise ValueError(f"unknown diffusion.condition {condition!r}")
    layout = Layout(n_features=(length - 8 - N_ELEMENTS) // 2)
    if layout.dim != length:
        raise ValueError(f"R of length {length} has no composition block of the srd layout")
    mask = torch.zeros(length, dtype=torch.bool)
    mask[layout.composition] = True
    mask[layout.size] = True
    return mask


def data_fingerprint(R: torch.Tensor) -> str:
    """sha256 of the training vectors (float32 bytes): a resumed run must train on the same data."""
    return hashlib.sha256(R.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


def _plain_meta() -> dict:
    """run_metadata() with plain str values (torch.__version__ is a str subclass weights_only refuses)."""
    return {k: (str(v) if isinstance(v, str) else v) for k, v in run_metadata().items()}


def _derived_seed(*parts: object) -> int:
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


# ------------------------------------------------------------------------------------------------
# Run directory
# ------------------------------------------------------------------------------------------------
def check_run_dir(out: str | os.PathLike, config: TrainConfig, *, resume: bool) -> Path | None:
    """Refuse to clobber an existing run; return the checkpoint to resume from (or None to start fresh).

    Without ``resume``, a folder that already holds a run (config.json or checkpoint.pt) is an error. With
    ``resume``, the run's config must match except for :data:`RESUMABLE_FIELDS`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder")
    ckpt, cfg_file = out / "checkpoint.pt", out / "config.json"
    old = None
    if ckpt.is_file():
        old = read_checkpoint(ckpt).get("config")
    elif cfg_file.is_file():
        with contextlib.suppress(ValueError, KeyError, OSError):
            old = read_json(cfg_file)["config"]
    if old is None and not ckpt.is_file() and not cfg_file.is_file():
        return None
    new = config.to_dict()
    if not resume:
        diff = config_diff(old or {}, new, ignore={"device"})
        if diff:
            raise FileExistsError(
                f"{out} already holds a training run with a different config ({'; '.join(diff[:6])}); "
                "use another --out, delete the folder, or pass --resume to continue that run"
            )
        raise FileExistsError(
            f"{out} already holds a training run with this config; pass --resume to continue it, "
            "or use another --out / delete the folder to start over"
        )
    diff = config_diff(old or {}, new, ignore=RESUMABLE_FIELDS)
    if diff:
        raise ValueError(
            f"--resume: {out} was trained with a different config; only {', '.join(sorted(RESUMABLE_FIELDS))} may "
            f"change on resume. Differences: {'; '.join(diff)}"
        )
    return ckpt if ckpt.is_file() else None


# ------------------------------------------------------------------------------------------------
# Distributed
# ------------------------------------------------------------------------------------------------
def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1).

    Returns (rank, world_size, device): nccl and cuda:LOCAL_RANK on GPUs, gloo on the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------------------------------
# RNG state (plain types only, for weights_only checkpoints)
# ------------------------------------------------------------------------------------------------
def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 - the global state is what we save
    py = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": [py[0], list(py[1]), py[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np_state = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    np.random.set_state(np_state)  # noqa: NPY002
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):
            torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------
# Logging
# ------------------------------------------------------------------------------------------------
def _open_log(path: Path, *, keep_until: int | None):
    """log.csv in append mode; rows after ``keep_until`` (the resumed step) are dropped; fresh: new file."""
    header = ",".join(LOG_COLUMNS)
    lines = [header]
    if keep_until is not None and path.is_file():
        for line in path.read_text().splitlines()[1:]:
            with contextlib.suppress(ValueError, IndexError):
                if int(line.split(",")[0]) <= keep_until:
                    lines.append(line)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path.open("a", buffering=1)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional: skipped silently when it does not import
        return None
    try:
        return SummaryWriter(log_dir=str(out / "tensorboard"))
    except Exception:  # noqa: BLE001
        return None


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
class Trainer:
    """One training run of the DDPM on ``features.R``: its state and the steps that advance it.

    ``Trainer(...)`` checks RUN = ``out`` (:func:`check_run_dir`), removes stale temporary files, builds the
    model, EMA, optimiser and data sampler and, when resuming, restores the state from ``out/checkpoint.pt``;
    nothing is written yet. :meth:`fit` writes config.json and log.csv and trains until the last step, a
    signal or the time limit (see :func:`train`, which is ``Trainer(...).fit()``).

    Runs data-parallel when torch.distributed is initialised (see :func:`setup_distributed`): each rank
    trains on its DistributedSampler shard with batch_size / world_size vectors per step; only rank 0
    writes files.

    The training state, what :meth:`state_dict` checkpoints (see the module docstring for why a resumed run
    follows the same loss curve):

    * ``step``: optimiser steps taken; ``epoch``, ``batch_in_epoch``: where the next batch comes from;
    * ``loss_sum``, ``loss_count``: the loss accumulator of the current log interval; ``last_loss``: the
      loss of the last log row;
    * ``seconds``: training time of the earlier sessions of the run (:meth:`seconds_now` adds this one's);
    * the model, EMA and optimiser states and the global RNG states.

    Args:
        config: the resolved configuration.
        features: the training vectors (``features.R`` [M, L] float32 in [0, 1]) and their metadata.
        out: the run folder.
        device: where to train (default: ``config.device`` resolved).
        resume: continue from ``out/checkpoint.pt`` when it exists.
        log: ``log(str)`` for messages (default: print to stderr on rank 0).
    """

    def __init__(
        self,
        config: TrainConfig,
        features: Features,
        out: str | os.PathLike,
        *,
        device: torch.device | str | None = None,
        resume: bool = False,
        log=None,
    ) -> None:
        self.rank, self.world = _dist_info()
        self.is_main = self.rank == 0
        self.log = log if log is not None else self._print_on_main
        self.config, self.features, self.out = config, features, Path(out)
        self.device = torch.device(device) if device is not None else resolve_device(config.device)
        resume_from = check_run_dir(self.out, config, resume=resume)
        if self.is_main:
            _remove_stale_temps(self.out, self.log)
        if self.world > 1:
            dist.barrier()  # every rank has checked the folder before rank 0 writes into it

        R = features.R
        M, L = R.shape
        layout = features.layout
        if L != layout.dim:
            raise ValueError(f"features: R has {L} columns but the layout has {layout.dim}")
        if M < 1:
            raise ValueError("features: no training vectors")
        features.check_finite(f"training data {config.data or ''}".strip())
        if config.batch_size % self.world:
            raise ValueError(
                f"batch_size {config.batch_size} is not divisible by the {self.world} torchrun processes"
            )
        self.dim = int(L)
        self.per_rank = config.batch_size // self.world
        fingerprint = data_fingerprint(R)
        self.spec = model_spec(config, length=L, blocks=layout.blocks(), ead_row=len(features.params.mus))

        self.diffusion = build_diffusion(config, self.spec, seed=config.seed).to(self.device)
        self.model = self.diffusion.model
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=config.lr,
            betas=tuple(config.adam_betas),
            weight_decay=config.weight_decay,
        )
        self.ema = EMA(self.model, decay=config.ema_decay) if config.ema else None

        self.sampler = DistributedSampler(
            range(M), num_replicas=self.world, rank=self.rank, shuffle=True, seed=config.seed, drop_last=False
        )
        self.batches_per_epoch = math.ceil(len(self.sampler) / self.per_rank)
        self.total_steps = (
            config.max_steps if config.max_steps > 0 else config.epochs * self.batches_per_epoch
        )
        self.time_limit = config.max_minutes * 60.0 if config.max_minutes > 0 else math.inf

        self.step, self.epoch, self.batch_in_epoch, self.seconds = 0, 0, 0, 0.0
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loss_count = 0
        self.last_loss = math.nan
        self.resumed_from: int | None = None  # the step resumed from
        #: The factored generator's p(composition, size) (CompositionModel.to_dict() + its fit report), or None.
        self.composition: dict | None = None
        if resume_from is not None:
            self._resume(resume_from, fingerprint)
        if self.diffusion.conditional and self.composition is None:
            self.composition = self._fit_composition_model()

        self.meta = {
            "config": config.to_dict(),
            "model_spec": self.spec,
            "dataset": features.dataset or "",
            "n_max": int(features.n_max),
            "data": {"path": config.data, "n": int(M), "sha256": fingerprint},
            "world_size": self.world,
            "n_parameters": sum(p.numel() for p in self.model.parameters()),
            "total_steps": self.total_steps,
            "batches_per_epoch": self.batches_per_epoch,
            "meta": _plain_meta(),
        }
        self._last_good: int | None = self.resumed_from  # step of the last checkpoint written (or resumed)
        self._last_epoch = self.epoch  # epoch of the last step taken
        # Set up by fit():
        self._t0: float | None = None
        self._forward: torch.nn.Module = self.diffusion  # the DDP wrapper when distributed
        self._data: torch.Tensor | None = None
        self._logf = self._tb = self._bar = None
        self._stop, self._stop_signal, self._timed_out = False, None, False

    def _print_on_main(self, msg: str) -> None:
        if self.is_main:
            print(msg, file=sys.stderr)

    def _fit_composition_model(self) -> dict:
        """Fit p(composition, size) on the training vectors' composition and size blocks (deterministic in
        the seed; a minute or two on a CPU)."""
        from .composition import compositions_from_R, fit_composition_model

        comps = compositions_from_R(self.features.R, self.features.layout, int(self.features.n_max))
        t0 = time.perf_counter()
        model, report = fit_composition_model(
            comps, int(self.features.n_max), epochs=COMPOSITION_EPOCHS, seed=self.config.seed
        )
        report["seconds"] = round(time.perf_counter() - t0, 1)
        self.log(
            f"composition model: {report['vocabulary']} elements, held-out NLL "
            f"{report['best_holdout_nll']:.3f} nats per composition ({report['seconds']} s)"
        )
        return {**model.to_dict(), "report": report}

    # -- checkpoints ---------------------------------------------------------------------------------
    def _resume(self, path: Path, fingerprint: str) -> None:
        ck = read_checkpoint(path, optimizer=True)
        if ck["data"]["sha256"] != fingerprint:
            raise ValueError(
                f"--resume: the training data differ from those of {path} "
                f"({ck['data']['n']} vectors from {ck['data']['path']!r}; now {len(self.features.R)} "
                f"from {self.config.data!r})"
            )
        if ck.get("world_size", 1) != self.world:
            self.log(
                f"note: resuming a run trained with {ck.get('world_size', 1)} processes on {self.world}; "
                "the data shards (and so the loss curve) change from here on"
            )
        self.load_state_dict(ck)
        self.resumed_from = self.step
        if not math.isfinite(self.last_loss):  # a checkpoint of an older srd: the last row of log.csv
            self.last_loss = _last_logged_loss(self.out / "log.csv", self.step)
        self.log(
            f"resuming {self.out} from step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})"
        )

    def load_state_dict(self, ck: dict) -> None:
        """Restore the training state from a checkpoint dict (see :func:`read_checkpoint`), RNG states
        included. A checkpoint without EMA weights (of a run trained without EMA) restarts the EMA from the
        restored weights."""
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.ema is not None:
            if ck.get("ema") is not None:
                self.ema.load_state_dict(ck["ema"])
            else:
                self.ema = EMA(self.model, decay=self.config.ema_decay)
        self.step, self.epoch, self.batch_in_epoch = (
            int(ck["step"]),
            int(ck["epoch"]),
            int(ck["batch_in_epoch"]),
        )
        self.seconds = float(ck["seconds"])
        self.loss_sum.fill_(float(ck["loss_sum"]))
        self.loss_count = int(ck["loss_count"])
        _set_rng_state(ck["rng"])
        self.last_loss = float(ck.get("last_loss", math.nan))  # what a finished run resumed reports
        self.composition = ck.get("composition_model")

    def state_dict(self) -> dict:
        """The checkpoint of the current state: what checkpoint.pt holds, less its checksum."""
        features = self.features
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "loss_sum": float(self.loss_sum),
            "loss_count": self.loss_count,
            "last_loss": float(self.last_loss),
            "seconds": self.seconds_now(),
            "rng": _rng_state(),
            "config": self.config.to_dict(),
            "model_spec": self.spec,
            "stats": features.stats.to_dict(),
            "dataset": features.dataset or "",
            "n_max": int(features.n_max),
            "params": features.params.to_dict(),
            "layout": {k: list(v) for k, v in features.layout.blocks().items()},
            "dim": self.dim,
            "data": self.meta["data"],
            "world_size": self.world,
            "meta": _plain_meta(),
            "composition_model": self.composition,
        }

    def save_checkpoint(self) -> None:
        """Write ``out/checkpoint.pt`` (rank 0, atomically, with a checksum) of the current state.

        Raises TrainingDiverged, writing nothing, when the model or EMA weights are not finite. Every rank
        checks (the weights are the same on all), so that all stop together.
        """
        bad = _nonfinite_tensors(self.model.state_dict()) + _nonfinite_tensors(
            self.ema.state_dict()["shadow"] if self.ema is not None else {}
        )
        if bad:
            raise TrainingDiverged(
                f"training diverged: the model weights became non-finite (NaN or inf in {_name_some(bad)}) "
                f"by step {self.step}; this state was not saved. {self._last_good_text()}"
            )
        if not self.is_main:
            return
        atomic_torch_save(with_checksum(self.state_dict()), self.out / "checkpoint.pt")
        self._last_good = self.step

    def _last_good_text(self) -> str:
        advice = "train again (in a new --out) with a lower --lr or grad_clip > 0"
        if self._last_good is None:
            return f"No checkpoint had been written yet; {advice}"
        return (
            f"The last good checkpoint, {self.out / 'checkpoint.pt'} (step {self._last_good}), was kept; "
            f"{advice}"
        )

    # -- time, log ----------------------------------------------------------------------------------
    def seconds_now(self) -> float:
        """Training seconds of the run so far: the earlier sessions' plus this one's (since fit started)."""
        if self._t0 is None:
            return self.seconds
        return self.seconds + (time.perf_counter() - self._t0)

    def log_row(self, *, partial: bool = False) -> None:
        """End the current log interval: set ``last_loss`` to its mean loss and write its log.csv row.

        The accumulator is reset, except for a ``partial`` interval (cut short by the time limit): it is
        kept (and checkpointed), so that a resumed run logs the same interval means as an uninterrupted
        one; a partial row is not sent to tensorboard or the progress bar. Only rank 0 writes.
        """
        self.last_loss = float(self.loss_sum) / max(self.loss_count, 1)
        if not partial:
            self.loss_sum.zero_()
            self.loss_count = 0
        if not self.is_main:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        self._logf.write(
            f"{self.step},{self._last_epoch},{self.last_loss:.8g},{lr:.6g},{self.seconds_now():.3f}\n"
        )
        if not partial:
            if self._tb is not None:
                self._tb.add_scalar("train/loss", self.last_loss, self.step)
            self._bar.set_postfix(loss=f"{self.last_loss:.4f}", epoch=self._last_epoch)

    # -- the loop -----------------------------------------------------------------------------------
    def _noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The diffusion steps t [n], noise [n, L] and (conditional models) condition-dropout flags [n] of
        the next optimiser step on this rank: drawn from a CPU generator seeded from (seed, rank, step), so
        that a resumed run draws the same."""
        g = torch.Generator().manual_seed(_derived_seed(self.config.seed, "noise", self.rank, self.step))
        t = torch.randint(0, self.diffusion.num_timesteps, (n,), generator=g).to(self.device)
        noise = torch.randn((n, self.dim), generator=g).to(self.device)
        drop = None
        if self.diffusion.conditional:
            drop = (torch.rand(n, generator=g) < self.config.diffusion.cond_drop).to(self.device)
        return t, noise, drop

    def train_step(self, x0: torch.Tensor, *, epoch: int) -> None:
        """One optimiser step on the batch ``x0`` (of epoch ``epoch``); its loss joins the accumulator.

        Raises TrainingDiverged, before the step is taken, when the loss (averaged over the ranks) is not
        finite.
        """
        t, noise, drop = self._noise(len(x0))
        loss = self._forward(x0, t, noise) if drop is None else self._forward(x0, t, noise, drop)
        lv = loss.detach().double()
        if self.world > 1:
            dist.all_reduce(lv)  # every rank sees the same mean, so all stop together below
            lv = lv / self.world
        if not math.isfinite(float(lv)):
            raise TrainingDiverged(
                f"training diverged: the loss became non-finite ({float(lv)}) at step {self.step + 1} "
                f"(epoch {epoch}); the step was not taken and this state was not saved. "
                + self._last_good_text()
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.loss_sum += lv
        self.loss_count += 1
        self.step += 1
        self._last_epoch = epoch

    def run_epoch(self, epoch: int, start: int = 0) -> int:
        """Train on batches ``start``, ``start + 1``, ... of epoch ``epoch`` (called by :meth:`fit`).

        Stops at the end of the epoch, at the last step, or after the step in which a signal arrived or the
        time limit passed; logs and checkpoints on the way. Returns the index of the next batch.
        """
        config, bpe, total = self.config, self.batches_per_epoch, self.total_steps
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        b = start
        while b < bpe and self.step < total and not self._stop:
            idx = order[b * self.per_rank : (b + 1) * self.per_rank].to(self.device)
            self.train_step(self._data[idx], epoch=epoch)
            b += 1
            self.epoch, self.batch_in_epoch = (epoch, b) if b < bpe else (epoch + 1, 0)
            if self.step % config.log_every == 0 or self.step == total:
                self.log_row()
            if self.step % config.checkpoint_every == 0 and self.step < total:
                self.save_checkpoint()
            self._bar.update(1)
            if self.time_limit < math.inf and (self.world == 1 or self.step % 10 == 0):
                self._timed_out = _agree(self.seconds_now() >= self.time_limit, self.world, self.device)
                self._stop = self._stop or self._timed_out
        return b

    def _on_signal(self, signum, frame) -> None:
        """SIGINT / SIGTERM: finish the current step, save, then stop; a second signal stops at once."""
        if self._stop:
            if signum == signal.SIGTERM:
                raise Terminated(f"signal {signum}")
            raise KeyboardInterrupt
        self._stop = True
        self._stop_signal = signum

    def _open_outputs(self) -> None:
        """Rank 0: write config.json, open log.csv (dropping rows after a resumed step) and tensorboard."""
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "config.json", self.meta)
        self._logf = _open_log(
            self.out / "log.csv", keep_until=self.step if self.resumed_from is not None else None
        )
        self._tb = _tensorboard(self.out)

    def fit(self, *, show_progress: bool | None = None) -> dict:
        """Train to the last step (or a signal, or the time limit) and write the final checkpoint (once per
        Trainer).

        SIGINT / SIGTERM (single process, main thread) finish the current step, checkpoint, then raise
        KeyboardInterrupt / :class:`srd.utils.Terminated`; the time limit checkpoints and returns.

        Args:
            show_progress: progress bar (None: srd.utils.progress's default).

        Returns:
            Summary dict: step, epoch, loss (last logged), seconds, checkpoint (path), resumed_from (step).
        """
        config, features, total = self.config, self.features, self.total_steps
        self._open_outputs()
        self.log(
            f"training {config.model} ({self.meta['n_parameters']:,} parameters) on {len(features.R)} vectors "
            f"x {self.dim} [{features.dataset or 'unknown dataset'}, n_max {features.n_max}], {self.world} "
            f"process(es) on {self.device}, {self.batches_per_epoch} steps/epoch, {total} steps"
        )
        self._t0 = time.perf_counter()
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self._forward = DistributedDataParallel(
                self.diffusion,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
            )
        self._data = features.R.to(self.device)

        old_handlers = {}
        if self.world == 1 and self.is_main and _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        self._bar = progress(
            total=total,
            initial=self.step,
            desc=f"train {config.model}",
            unit="step",
            disable=(not self.is_main) or (None if show_progress is None else not show_progress),
        )
        try:
            self.diffusion.train()
            epoch, b = self.epoch, self.batch_in_epoch
            while self.step < total and not self._stop:
                b = self.run_epoch(epoch, b)
                if b >= self.batches_per_epoch:
                    epoch, b = epoch + 1, 0
            if self._timed_out and self.step < total and self.step % config.log_every:
                self.log_row(partial=True)  # the interval cut short, before stopping
            self.save_checkpoint()
            if self._stop_signal is not None and self.step < total:  # a signal wins over a time limit
                if self._stop_signal == signal.SIGTERM:
                    self.log(
                        f"terminated (SIGTERM) at step {self.step}; checkpoint saved, --resume continues"
                    )
                    raise Terminated(f"signal {signal.SIGTERM}")
                self.log(f"interrupted at step {self.step}; checkpoint saved, --resume continues")
                raise KeyboardInterrupt
            if self._timed_out:
                self.log(
                    f"time limit of {config.max_minutes:g} min reached at step {self.step}; checkpoint saved"
                )
        finally:
            self._bar.close()
            for sig, handler in old_handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
            if self._logf is not None:
                self._logf.close()
            if self._tb is not None:
                self._tb.close()
        if self.world > 1:
            dist.barrier()
        return {
            "step": self.step,
            "epoch": self.epoch,
            "loss": self.last_loss,
            "seconds": self.seconds_now(),
            "checkpoint": str(self.out / "checkpoint.pt"),
            "resumed_from": self.resumed_from,
        }


def train(
    config: TrainConfig,
    features: Features,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    device: torch.device | str | None = None,
    show_progress: bool | None = None,
    log=None,
) -> dict:
    """Train a DDPM on ``features.R`` and write RUN = ``out``: checkpoint.pt, log.csv, config.json.

    Runs data-parallel when torch.distributed is initialised (see :func:`setup_distributed`): each rank
    trains on its DistributedSampler shard with batch_size / world_size vectors per step; only rank 0
    writes files. ``Trainer(config, features, out, ...).fit()`` (see :class:`Trainer`).

    Args:
        config: the resolved configuration.
        features: the training vectors (``features.R`` [M, L] float32 in [0, 1]) and their metadata.
        out: the run folder.
        resume: continue from ``out/checkpoint.pt`` when it exists.
        device: where to train (default: ``config.device`` resolved).
        show_progress: progress bar (None: srd.utils.progress's default).
        log: ``log(str)`` for messages (default: print to stderr on rank 0).

    Returns:
        Summary dict: step, epoch, loss (last logged), seconds, checkpoint (path), resumed_from (step).
    """
    trainer = Trainer(config, features, out, device=device, resume=resume, log=log)
    return trainer.fit(show_progress=show_progress)


def _agree(mine: bool, world: int, device: torch.device) -> bool:
    """True on every rank when any rank says True (so that all ranks stop after the same step)."""
    if world <= 1:
        return mine
    flag = torch.tensor([1.0 if mine else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
