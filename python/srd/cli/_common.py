"""What every srd command shares: error handling, device selection, seeding, config printing."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "run",
    "resolve_device",
    "seed_everything",
    "print_config",
    "HelpFormatter",
    "positive_int",
    "add_reconstruction_args",
    "reconstruct_config",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults in --help and keep the description's line breaks."""


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def resolve_device(name: str | None) -> torch.device:
    """'auto' (or None) -> cuda if available else cpu; anything else is validated."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - libraries (pymatgen, matminer) use the global state
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def print_config(name: str, config) -> None:
    """Print the resolved configuration at the start of a command (to stderr)."""
    d = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    print(f"{name} config: {json.dumps(d, default=str)}", file=sys.stderr)


def run(main: Callable[[Sequence[str] | None], int], prog: str) -> None:
    """Entry-point wrapper: user errors become one clear line and exit status 2, not a traceback."""
    try:
        code = main(None)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished work was saved and a rerun resumes it", file=sys.stderr)
        code = 130
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)


def add_reconstruction_args(p: argparse.ArgumentParser, help_prefix: str = "") -> None:
    """The flags of Algorithm 2 (and of decoding a representation), shared by srd-reconstruct and srd-sample.

    Defaults come from :class:`srd.reconstruct.ReconstructConfig`; :func:`reconstruct_config` reads them back.
    """
    from ..reconstruct import ReconstructConfig
    from ..representation import COMPOSITION_DECODINGS

    d = ReconstructConfig()
    h = help_prefix
    p.add_argument(
        "--composition",
        choices=COMPOSITION_DECODINGS,
        default="largest-remainder",
        help=f"{h}how a representation's composition fractions become atom counts: largest-remainder (SPEC: "
        "renormalise, then largest-remainder rounding) or nearest (the counts nearest to n x fractions "
        "without renormalising; robust to noise spread over many elements)",
    )
    p.add_argument("--trials", type=positive_int, default=d.trials, help=f"{h}random restarts per crystal")
    p.add_argument("--hops", type=positive_int, default=d.hops, help=f"{h}basin hops per trial")
    p.add_argument("--steps", type=positive_int, default=d.steps, help=f"{h}Adam steps per hop")
    p.add_argument("--lr", type=float, default=d.lr, help=f"{h}initial Adam learning rate (Angstrom)")
    p.add_argument(
        "--plateau-factor",
        type=float,
        default=d.plateau_factor,
        help=f"{h}ReduceLROnPlateau factor (per trial)",
    )
    p.add_argument(
        "--plateau-patience", type=int, default=d.plateau_patience, help=f"{h}ReduceLROnPlateau patience"
    )
    p.add_argument(
        "--hop-size",
        type=float,
        default=d.hop_size,
        help=f"{h}hops move every coordinate by U[-hop_size, hop_size] Angstrom",
    )
    p.add_argument(
        "--swap-prob",
        type=float,
        default=d.swap_prob,
        help=f"{h}probability that a hop exchanges two atoms of different elements instead of displacing "
        "all atoms (0 = the paper's hops)",
    )
    p.add_argument(
        "--dtype", choices=["float32", "float64"], default=d.dtype, help=f"{h}precision of the descent"
    )
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        help=f"{h}stop a crystal once one of its trials reaches this L1 loss (saves evaluations; crystals "
        "that never reach it are unaffected)",
    )
    p.add_argument(
        "--polish-steps",
        type=int,
        default=d.polish_steps,
        help=f"{h}after the hops, refine every trial's best structure for this many steps and choose the "
        "winner after the polish (0 = the paper's selection)",
    )
    p.add_argument("--polish-lr", type=float, default=d.polish_lr, help=f"{h}learning rate of the polish")
    p.add_argument(
        "--polish-dtype",
        choices=["float32", "float64"],
        default=d.polish_dtype,
        help=f"{h}precision of the polish",
    )
    p.add_argument(
        "--dmin-weight",
        type=float,
        default=d.dmin_weight,
        help=f"{h}weight of the d_min entry in the L1 loss relative to one pooled-EAD entry (the paper: 1); "
        "a larger weight keeps generated crystals from overlapping atoms",
    )


def reconstruct_config(args: argparse.Namespace):
    """The ReconstructConfig of the flags added by :func:`add_reconstruction_args` (and ``--seed``).

    Settings without a flag (plateau_threshold) keep their defaults.
    """
    from ..reconstruct import ReconstructConfig

    names = [f.name for f in dataclasses.fields(ReconstructConfig)]
    return ReconstructConfig(**{n: getattr(args, n) for n in names if hasattr(args, n)})
