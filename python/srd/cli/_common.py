"""What every srd command shares: error handling, device selection, seeding, config printing."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "Terminated",
    "install_sigterm_handler",
    "check_output_dir",
    "check_output_file",
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


#: Exit statuses shared by every srd command.
EXIT_OK = 0
#: The job ran and failed (e.g. the training loss became non-finite).
EXIT_FAILED = 1
#: Bad input or arguments, or nothing usable in the input: a one-line error, no traceback.
EXIT_USAGE = 2
#: Ctrl-C (SIGINT), 128 + 2: finished work was saved.
EXIT_INTERRUPTED = 130
#: SIGTERM (what schedulers and ``timeout`` send), 128 + 15: finished work was saved, like Ctrl-C.
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """Raised on SIGTERM. A subclass of KeyboardInterrupt, so every ``except KeyboardInterrupt`` that saves
    finished work on Ctrl-C does the same on SIGTERM."""


def _raise_terminated(signum, frame):
    raise Terminated(f"signal {signum}")


def install_sigterm_handler() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (no-op elsewhere)."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def run(main: Callable[[Sequence[str] | None], int], prog: str) -> None:
    """Entry-point wrapper: user errors become one clear line and exit status 2, not a traceback.

    SIGTERM is handled like Ctrl-C (finished work saved), with exit status 143 instead of 130.
    """
    install_sigterm_handler()
    try:
        code = main(None)
    except Terminated:
        print(
            f"{prog}: terminated (SIGTERM); finished work was saved and a rerun resumes it", file=sys.stderr
        )
        code = EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished work was saved and a rerun resumes it", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        code = EXIT_USAGE
    sys.exit(code)


def check_output_dir(path, *, flag: str = "-o/--out", create: bool = True) -> Path:
    """Check, before any work, that ``path`` is (or can be created as) a writable folder; return it.

    With ``create`` the folder is created (a probe file checks that it is writable); without, nothing is
    written: a missing folder's nearest existing parent must be a writable folder. Raises ValueError
    naming the flag when the path is a file, or cannot be created or written.
    """
    import os
    import tempfile

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a folder")
    if not create:
        parent = path
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise ValueError(f"{flag} {path}: cannot create the folder ({parent} is not a folder)")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {path}: {parent} is not writable")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot create the folder ({err.strerror or err})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".srd-write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{flag} {path}: the folder is not writable ({err.strerror or err})") from None
    return path


def check_output_file(path, *, flag: str = "-o/--output") -> Path:
    """Check, before any work, that ``path`` can be written as a file (not a folder; its folder writable)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; expected a file name")
    check_output_dir(path.parent if str(path.parent) else Path("."), flag=f"{flag} {path}: its folder")
    return path


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
