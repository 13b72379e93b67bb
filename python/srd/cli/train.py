"""srd-train: train the representation-space DDPM on featurised crystals (SPEC section 4).

Writes RUN/checkpoint.pt (everything the sampler needs), RUN/log.csv and RUN/config.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    HelpFormatter,
    add_quiet_arg,
    check_output_dir,
    positive_int,
    print_config,
    run,
    seed_everything,
)

DESCRIPTION = """\
Train the StructRepDiff DDPM (epsilon-prediction, MSE loss) on the representation vectors R of a
training split, and write RUN/checkpoint.pt, RUN/log.csv (step, epoch, loss, lr, seconds) and
RUN/config.json.

Settings come from built-in defaults (the paper's: 1-D U-Net dim 64 x (1, 2, 4, 8), T = 2000 cosine
schedule, Adam lr 1e-4, batch 64, 2000 epochs), overridden by --config (a packaged config by name, listed
below, or a FILE.toml), overridden by the flags below. The resolved config is printed at start and saved with the run.

TRAIN is a CDVAE-format CSV(.gz) (featurised and cached; the scaling statistics are fitted on it) or an
srd features file (.pt from srd-featurize). Training splits shipped in data/ (data/README.md): Perov-5
data/perov_5/train.csv.gz (complete); MP-20 has only the first 2573 train rows
(data/mp_20/train_PARTIAL.csv.gz): train on train_PARTIAL + val (one file; data/README.md has the
command) and say so; Carbon-24 has no train split: train on data/carbon_24/val.csv.gz and say so.

Multi-process (DistributedDataParallel; gloo on CPU, nccl on GPU; --batch-size is the global batch):
    torchrun --nproc-per-node 2 -m srd.cli.train --data TRAIN --out RUN ...

An interrupted run (Ctrl-C or SIGTERM finishes the current step and saves a checkpoint) continues with
--resume and follows the same loss curve as an uninterrupted run.

Exit status: 0 done; 1 the training diverged (the loss became NaN / inf: the last good checkpoint is kept);
2 bad input (e.g. NaN in the training data, a corrupted feature file or checkpoint); 130 Ctrl-C;
143 SIGTERM.
"""

EPILOG = """\
packaged configs (--config NAME; the files are in srd/configs/, a copy is a starting point for your own):
{configs}

examples:
  srd-train --data data/perov_5/train.csv.gz --out runs/perov_5 --config perov_5
  srd-train --data data/perov_5/train.csv.gz --out runs/small --config small
  srd-train --data data/perov_5/train.csv.gz --out runs/small --config small --resume
  srd-train --data data/carbon_24/val.csv.gz --out runs/carbon_24 --config carbon_24   # no C-24 train split
  srd-train --data data/perov_5/train.csv.gz --out runs/mine --config my_config.toml
"""


def _epilog() -> str:
    from ..diffusion.config import packaged_configs

    configs = packaged_configs()
    width = max((len(n) for n in configs), default=0) + 2
    return EPILOG.format(configs="\n".join(f"  {n:<{width}}{d}" for n, d in configs.items()))


def build_parser() -> argparse.ArgumentParser:
    # argument_default=SUPPRESS: an option that is not given is absent (so it does not override the config
    # file), and --help does not print "(default: None)"; the help texts name the built-in defaults.
    p = argparse.ArgumentParser(
        prog="srd-train",
        description=DESCRIPTION,
        epilog=_epilog(),
        formatter_class=HelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "--data", required=True, metavar="TRAIN", help="training split: CDVAE CSV(.gz) or srd features .pt"
    )
    p.add_argument(
        "--out", required=True, metavar="RUN", help="run folder (created; an existing run needs --resume)"
    )
    p.add_argument(
        "--config",
        metavar="NAME|FILE.toml",
        help="a packaged config by name (listed below, e.g. small, perov_5_cpu) or a TOML config file; "
        "flags override it",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, help="passes over the training data (default 2000)")
    length.add_argument("--max-steps", type=positive_int, help="stop after this many optimiser steps instead")
    p.add_argument(
        "--max-minutes", type=float, metavar="M", help="also stop (with a checkpoint) after M minutes"
    )
    p.add_argument("--batch-size", type=positive_int, help="global batch size (default 64)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-4)")
    p.add_argument("--seed", type=int, help="seed of the weights, data order and noise (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument(
        "--model", choices=("unet1d", "mlp", "transformer"), help="denoiser (default unet1d, the paper's)"
    )
    p.add_argument(
        "--checkpoint-every", type=positive_int, metavar="N", help="write RUN/checkpoint.pt every N steps"
    )
    p.add_argument(
        "--log-every", type=positive_int, metavar="N", help="append the mean loss to log.csv every N steps"
    )
    p.add_argument(
        "--dataset",
        choices=("perov_5", "carbon_24", "mp_20"),
        help="dataset of a CSV (sets n_max; default: from the path)",
    )
    p.add_argument(
        "--n-max", type=positive_int, help="largest atom count of a CSV (default: from the dataset)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in RUN from its checkpoint (a RUN without one starts fresh)",
    )
    add_quiet_arg(p)
    return p


def resolve_config(args: argparse.Namespace):
    """defaults < --config file < flags."""
    from ..diffusion.config import TrainConfig, config_path, load_toml

    config_file = getattr(args, "config", None)
    if config_file:
        config_file = config_path(config_file)  # a file, or a packaged config by name
    base = load_toml(config_file) if config_file else {}
    cfg = TrainConfig.from_dict(base, where=str(config_file or "config"))
    changes = {}
    for flag, field in [
        ("max_minutes", "max_minutes"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("seed", "seed"),
        ("device", "device"),
        ("model", "model"),
        ("checkpoint_every", "checkpoint_every"),
        ("log_every", "log_every"),
        ("dataset", "dataset"),
        ("n_max", "n_max"),
    ]:
        v = getattr(args, flag, None)
        if v is not None:
            changes[field] = v
    if getattr(args, "epochs", None) is not None:
        changes.update(epochs=args.epochs, max_steps=0)
    if getattr(args, "max_steps", None) is not None:
        changes["max_steps"] = args.max_steps
    changes["data"] = str(Path(args.data).resolve())
    return cfg.replace(**changes)


def load_training_features(config, *, rank: int = 0, world: int = 1, show_progress: bool = True):
    """Features of config.data: a .pt feature file, or a CSV featurised (and cached) by rank 0 first."""
    from ..representation import DATASET_N_MAX, Features, featurize

    path = Path(config.data)
    if not path.exists():
        raise FileNotFoundError(f"--data: training file not found: {path}")
    if path.suffix == ".pt":
        feats = Features.load(path)
        if config.n_max and config.n_max != feats.n_max:
            raise ValueError(
                f"--n-max {config.n_max} differs from the n_max {feats.n_max} of the feature file {path}"
            )
        if config.dataset and feats.dataset and config.dataset != feats.dataset:
            raise ValueError(
                f"--dataset {config.dataset} differs from the dataset {feats.dataset!r} of {path}"
            )
        if config.dataset and not feats.dataset:
            feats.dataset = config.dataset
        return feats
    if config.dataset and config.n_max and DATASET_N_MAX.get(config.dataset, config.n_max) != config.n_max:
        print(f"note: --n-max {config.n_max} overrides the n_max of {config.dataset}", file=sys.stderr)

    def go():
        feats = featurize(
            path,
            dataset=config.dataset or None,
            n_max=config.n_max or None,
            use_cache=True,
            show_progress=show_progress and rank == 0,
        )
        feats.check_finite(f"--data {path} (featurised)")
        return feats

    if world == 1:
        return go()
    import torch.distributed as dist

    if rank == 0:
        feats = go()
        dist.barrier()
    else:
        dist.barrier()
        feats = go()  # from the cache rank 0 wrote
    return feats


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resume = getattr(args, "resume", False)
    no_progress = getattr(args, "quiet", False)
    import torch.distributed as dist

    from ..diffusion.trainer import TrainingDiverged, check_run_dir, setup_distributed, train

    config = resolve_config(args)
    rank, world, device = setup_distributed(config.device)
    try:
        if rank == 0:
            print_config("srd-train", config)
        check_output_dir(args.out, flag="--out", create=False)
        check_run_dir(args.out, config, resume=resume)
        seed_everything(config.seed + rank)
        feats = load_training_features(config, rank=rank, world=world, show_progress=not no_progress)
        try:
            summary = train(
                config,
                feats,
                args.out,
                resume=resume,
                device=device,
                show_progress=False if no_progress else None,
            )
        except TrainingDiverged as err:
            if rank == 0:
                print(f"srd-train: error: {err}", file=sys.stderr)
            return EXIT_FAILED
        if rank == 0:
            from ..diffusion.plot import plot_loss

            png = plot_loss(args.out)
            print(
                f"srd-train: {summary['step']} steps, last loss {summary['loss']:.5f}, "
                f"{summary['seconds']:.1f} s; checkpoint {summary['checkpoint']}"
                + (f"; loss curve {png}" if png else ""),
                file=sys.stderr,
            )
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return EXIT_OK


def entry() -> None:
    run(main, "srd-train")


if __name__ == "__main__":
    entry()
