"""Training loop of the representation-space DDPM: checkpoints, exact resume, logs, torchrun/DDP.

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
from ..utils import (
    atomic_torch_save,
    progress,
    read_json,
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
    "train",
]

CHECKPOINT_FORMAT = "srd-diffusion-checkpoint"
CHECKPOINT_VERSION = 1
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
    )


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
    from ..cli._common import resolve_device

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
    from ..utils import atomic_write_text

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
    writes files.

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
    from ..cli._common import resolve_device

    rank, world = _dist_info()
    is_main = rank == 0
    if log is None:

        def log(msg: str) -> None:
            if is_main:
                print(msg, file=sys.stderr)

    from ..cli._common import Terminated

    out = Path(out)
    device = torch.device(device) if device is not None else resolve_device(config.device)
    resume_from = check_run_dir(out, config, resume=resume)
    if is_main:
        _remove_stale_temps(out, log)
    if world > 1:
        dist.barrier()  # every rank has checked the folder before rank 0 writes into it

    R = features.R
    M, L = R.shape
    layout = features.layout
    if L != layout.dim:
        raise ValueError(f"features: R has {L} columns but the layout has {layout.dim}")
    if M < 1:
        raise ValueError("features: no training vectors")
    features.check_finite(f"training data {config.data or ''}".strip())
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {world} torchrun processes")
    per_rank = config.batch_size // world
    fingerprint = data_fingerprint(R)
    spec = model_spec(config, length=L, blocks=layout.blocks(), ead_row=len(features.params.mus))

    diffusion = build_diffusion(config, spec, seed=config.seed).to(device)
    model = diffusion.model
    opt = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=tuple(config.adam_betas), weight_decay=config.weight_decay
    )
    ema = EMA(model, decay=config.ema_decay) if config.ema else None

    sampler = DistributedSampler(
        range(M), num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=False
    )
    shard_len = len(sampler)
    batches_per_epoch = math.ceil(shard_len / per_rank)
    total = config.max_steps if config.max_steps > 0 else config.epochs * batches_per_epoch

    step, epoch, batch_in_epoch, seconds = 0, 0, 0, 0.0
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    loss_count = 0
    resumed_step = None
    last_loss = float("nan")
    if resume_from is not None:
        ck = read_checkpoint(resume_from, optimizer=True)
        if ck["data"]["sha256"] != fingerprint:
            raise ValueError(
                f"--resume: the training data differ from those of {resume_from} "
                f"({ck['data']['n']} vectors from {ck['data']['path']!r}; now {M} from {config.data!r})"
            )
        if ck.get("world_size", 1) != world:
            log(
                f"note: resuming a run trained with {ck.get('world_size', 1)} processes on {world}; "
                "the data shards (and so the loss curve) change from here on"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ema is not None:
            if ck.get("ema") is not None:
                ema.load_state_dict(ck["ema"])
            else:
                ema = EMA(model, decay=config.ema_decay)
        step, epoch, batch_in_epoch = int(ck["step"]), int(ck["epoch"]), int(ck["batch_in_epoch"])
        seconds = float(ck["seconds"])
        loss_sum.fill_(float(ck["loss_sum"]))
        loss_count = int(ck["loss_count"])
        _set_rng_state(ck["rng"])
        resumed_step = step
        last_loss = float(ck.get("last_loss", math.nan))  # what a finished run resumed reports
        if not math.isfinite(last_loss):  # a checkpoint of an older srd: the last row of log.csv
            last_loss = _last_logged_loss(out / "log.csv", step)
        log(f"resuming {out} from step {step} (epoch {epoch}, batch {batch_in_epoch})")
        del ck

    meta = {
        "config": config.to_dict(),
        "model_spec": spec,
        "dataset": features.dataset or "",
        "n_max": int(features.n_max),
        "data": {"path": config.data, "n": int(M), "sha256": fingerprint},
        "world_size": world,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "total_steps": total,
        "batches_per_epoch": batches_per_epoch,
        "meta": _plain_meta(),
    }
    logf = tb = None
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", meta)
        logf = _open_log(out / "log.csv", keep_until=step if resume_from is not None else None)
        tb = _tensorboard(out)
    log(
        f"training {config.model} ({meta['n_parameters']:,} parameters) on {M} vectors x {L} "
        f"[{features.dataset or 'unknown dataset'}, n_max {features.n_max}], {world} process(es) on {device}, "
        f"{batches_per_epoch} steps/epoch, {total} steps"
    )

    last_good = {"step": resumed_step}  # step of the last checkpoint written (or resumed from)

    def checkpoint(next_epoch: int, next_batch: int) -> None:
        # Every rank checks (the weights are the same on all), so that all stop together.
        bad = _nonfinite_tensors(model.state_dict()) + _nonfinite_tensors(
            ema.state_dict()["shadow"] if ema is not None else {}
        )
        if bad:
            raise TrainingDiverged(
                f"training diverged: the model weights became non-finite (NaN or inf in {_name_some(bad)}) "
                f"by step {step}; this state was not saved. {last_good_text()}"
            )
        if not is_main:
            return
        atomic_torch_save(
            with_checksum(
                {
                    "format": CHECKPOINT_FORMAT,
                    "format_version": CHECKPOINT_VERSION,
                    "model": model.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "optimizer": opt.state_dict(),
                    "step": step,
                    "epoch": next_epoch,
                    "batch_in_epoch": next_batch,
                    "loss_sum": float(loss_sum),
                    "loss_count": loss_count,
                    "last_loss": float(last_loss),
                    "seconds": seconds_now(),
                    "rng": _rng_state(),
                    "config": config.to_dict(),
                    "model_spec": spec,
                    "stats": features.stats.to_dict(),
                    "dataset": features.dataset or "",
                    "n_max": int(features.n_max),
                    "params": features.params.to_dict(),
                    "layout": {k: list(v) for k, v in layout.blocks().items()},
                    "dim": int(L),
                    "data": meta["data"],
                    "world_size": world,
                    "meta": _plain_meta(),
                }
            ),
            out / "checkpoint.pt",
        )
        last_good["step"] = step

    def last_good_text() -> str:
        advice = "train again (in a new --out) with a lower --lr or grad_clip > 0"
        if last_good["step"] is None:
            return f"No checkpoint had been written yet; {advice}"
        return (
            f"The last good checkpoint, {out / 'checkpoint.pt'} (step {last_good['step']}), was kept; "
            f"{advice}"
        )

    t0 = time.perf_counter()

    def seconds_now() -> float:
        return seconds + (time.perf_counter() - t0)

    ddp_model = diffusion
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            diffusion, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    data = R.to(device)
    T = diffusion.num_timesteps

    stop = {"flag": False, "signal": None}
    old_handlers = {}
    if world == 1 and is_main and _in_main_thread():

        def _on_signal(signum, frame):  # SIGINT / SIGTERM: finish the current step, save, then stop
            if stop["flag"]:  # a second signal stops at once
                if signum == signal.SIGTERM:
                    raise Terminated(f"signal {signum}")
                raise KeyboardInterrupt
            stop["flag"] = True
            stop["signal"] = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, _on_signal)

    bar = progress(
        total=total,
        initial=step,
        desc=f"train {config.model}",
        unit="step",
        disable=(not is_main) or (None if show_progress is None else not show_progress),
    )
    ended_at = (epoch, batch_in_epoch)
    time_limit = config.max_minutes * 60.0 if config.max_minutes > 0 else math.inf
    timed_out = False
    last_epoch = epoch
    try:
        diffusion.train()
        while step < total and not stop["flag"]:
            sampler.set_epoch(epoch)
            order = torch.tensor(list(iter(sampler)), dtype=torch.long)
            b = batch_in_epoch
            while b < batches_per_epoch and step < total and not stop["flag"]:
                idx = order[b * per_rank : (b + 1) * per_rank].to(device)
                x0 = data[idx]
                g = torch.Generator().manual_seed(_derived_seed(config.seed, "noise", rank, step))
                t = torch.randint(0, T, (len(idx),), generator=g).to(device)
                noise = torch.randn((len(idx), L), generator=g).to(device)
                loss = ddp_model(x0, t, noise)
                lv = loss.detach().double()
                if world > 1:
                    dist.all_reduce(lv)  # every rank sees the same mean, so all stop together below
                    lv = lv / world
                if not math.isfinite(float(lv)):
                    raise TrainingDiverged(
                        f"training diverged: the loss became non-finite ({float(lv)}) at step {step + 1} "
                        f"(epoch {epoch}); the step was not taken and this state was not saved. "
                        + last_good_text()
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
                if ema is not None:
                    ema.update(model)
                loss_sum += lv
                loss_count += 1
                step += 1
                b += 1
                ended_at = (epoch, b) if b < batches_per_epoch else (epoch + 1, 0)
                last_epoch = epoch
                if step % config.log_every == 0 or step == total:
                    last_loss = float(loss_sum) / max(loss_count, 1)
                    loss_sum.zero_()
                    loss_count = 0
                    if is_main:
                        lr = opt.param_groups[0]["lr"]
                        logf.write(f"{step},{epoch},{last_loss:.8g},{lr:.6g},{seconds_now():.3f}\n")
                        if tb is not None:
                            tb.add_scalar("train/loss", last_loss, step)
                        bar.set_postfix(loss=f"{last_loss:.4f}", epoch=epoch)
                if step % config.checkpoint_every == 0 and step < total:
                    checkpoint(*ended_at)
                bar.update(1)
                if time_limit < math.inf and (world == 1 or step % 10 == 0):
                    timed_out = _agree(seconds_now() >= time_limit, world, device)
                    stop["flag"] = stop["flag"] or timed_out
            if b >= batches_per_epoch:
                epoch += 1
                batch_in_epoch = 0
            else:
                batch_in_epoch = b
        if timed_out and step < total and step % config.log_every:
            # Log the partial interval before stopping, but keep the accumulator (it is checkpointed): a
            # resumed run then logs the same interval means as an uninterrupted one.
            last_loss = float(loss_sum) / max(loss_count, 1)
            if is_main:
                lr = opt.param_groups[0]["lr"]
                logf.write(f"{step},{last_epoch},{last_loss:.8g},{lr:.6g},{seconds_now():.3f}\n")
        checkpoint(*ended_at)
        if stop["signal"] is not None and step < total:  # a signal wins over a time limit of the same step
            if stop["signal"] == signal.SIGTERM:
                log(f"terminated (SIGTERM) at step {step}; checkpoint saved, --resume continues")
                raise Terminated(f"signal {signal.SIGTERM}")
            log(f"interrupted at step {step}; checkpoint saved, --resume continues")
            raise KeyboardInterrupt
        if timed_out:
            log(f"time limit of {config.max_minutes:g} min reached at step {step}; checkpoint saved")
    finally:
        bar.close()
        for sig, handler in old_handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
        if logf is not None:
            logf.close()
        if tb is not None:
            tb.close()
    if world > 1:
        dist.barrier()
    return {
        "step": step,
        "epoch": ended_at[0],
        "loss": last_loss,
        "seconds": seconds_now(),
        "checkpoint": str(out / "checkpoint.pt"),
        "resumed_from": resumed_step,
    }


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
