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

from ..utils import Terminated, check_output_dir, check_output_file, resolve_device

__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "Terminated",
    "install_sigterm_handler",
    "add_quiet_arg",
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
    "template_library",
    "add_templates_arg",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults in --help and keep the description's line breaks."""


def _int_at_least(low: int, expected: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``, refused as "expected <expected>, got ..." otherwise."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
        return v

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


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


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    """The one progress flag of every srd command: -q/--quiet (--no-progress is accepted as an alias).

    Progress bars go to stderr and are also off when stderr is not a terminal (see srd.utils.progress).
    """
    p.add_argument(
        "-q",
        "--quiet",
        "--no-progress",
        dest="quiet",
        action="store_true",
        default=False,
        help="no progress bars",
    )


def _tol(text: str) -> float | None:
    """--tol: a number, or none/off (no early stopping, e.g. to switch off a budget's)."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def budget_help() -> str:
    """The named reconstruction budgets, one per line with its description and flags (for --help texts)."""
    from ..reconstruction import PRESETS

    width = max(len(n) for n in PRESETS) + 2
    lines = []
    for name, pre in PRESETS.items():
        lines.append(f"  {name:<{width}}{pre.description}")
        lines.append(f"  {'':<{width}}= {' '.join(pre.flags())}")
    return "\n".join(lines)


def add_reconstruction_args(
    p: argparse.ArgumentParser, help_prefix: str = "", *, default_budget: str = "paper"
) -> None:
    """The flags of Algorithm 2 (and of decoding a representation), shared by srd-reconstruct and srd-sample.

    ``--budget NAME`` (default ``default_budget``) picks a named budget of :data:`srd.reconstruction.PRESETS`:
    its values are the defaults, and every flag given explicitly overrides them (the flags have no argparse
    default, so a flag that is not given is absent from the namespace). :func:`reconstruct_config` reads
    them back. The flags form one argument group whose --help text lists the budgets.
    """
    from ..reconstruction import PRESETS, ReconstructConfig
    from ..representation import COMPOSITION_DECODINGS

    if default_budget not in PRESETS:
        raise ValueError(f"unknown default budget {default_budget!r}; known: {', '.join(PRESETS)}")
    d = ReconstructConfig()
    in_budgets = {k for pre in PRESETS.values() for k in pre.values}
    h = help_prefix

    def default(field: str) -> str:
        """What a flag defaults to: the budget's value, or ReconstructConfig's when no budget sets it."""
        v = "none" if getattr(d, field) is None else getattr(d, field)
        if field in in_budgets:
            return f" (default: the budget's; {v} when a budget does not set it)"
        return f" (default: {v})"

    g = p.add_argument_group(
        "reconstruction",
        "--budget NAME sets every setting of the search; the flags below given explicitly override it\n"
        "(srd/presets/reconstruct.toml; in Python: srd.reconstruction.ReconstructConfig.preset(NAME)):\n"
        + budget_help(),
    )
    sup = argparse.SUPPRESS
    g.add_argument(
        "--budget",
        choices=list(PRESETS),
        default=default_budget,
        metavar="NAME",
        help=f"{h}named reconstruction budget, one of: {', '.join(PRESETS)} (listed above)",
    )
    g.add_argument(
        "--composition",
        choices=COMPOSITION_DECODINGS,
        default="largest-remainder",
        help=f"{h}how a representation's composition fractions become atom counts: largest-remainder (SPEC: "
        "renormalise, then largest-remainder rounding) or nearest (the counts nearest to n x fractions "
        "without renormalising; robust to noise spread over many elements)",
    )
    g.add_argument(
        "--trials", type=positive_int, default=sup, help=f"{h}random restarts per crystal" + default("trials")
    )
    g.add_argument(
        "--hops", type=positive_int, default=sup, help=f"{h}basin hops per trial" + default("hops")
    )
    g.add_argument(
        "--steps", type=positive_int, default=sup, help=f"{h}Adam steps per hop" + default("steps")
    )
    g.add_argument(
        "--lr", type=float, default=sup, help=f"{h}initial Adam learning rate (Angstrom)" + default("lr")
    )
    g.add_argument(
        "--plateau-factor",
        type=float,
        default=sup,
        help=f"{h}ReduceLROnPlateau factor (per trial)" + default("plateau_factor"),
    )
    g.add_argument(
        "--plateau-patience",
        type=int,
        default=sup,
        help=f"{h}ReduceLROnPlateau patience" + default("plateau_patience"),
    )
    g.add_argument(
        "--hop-size",
        type=float,
        default=sup,
        help=f"{h}hops move every coordinate by U[-hop_size, hop_size] Angstrom" + default("hop_size"),
    )
    g.add_argument(
        "--swap-prob",
        type=float,
        default=sup,
        help=f"{h}probability that a hop exchanges two atoms of different elements instead of displacing "
        "all atoms (0 = the paper's hops)" + default("swap_prob"),
    )
    g.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default=sup,
        help=f"{h}precision of the descent" + default("dtype"),
    )
    g.add_argument(
        "--tol",
        type=_tol,
        default=sup,
        help=f"{h}stop a crystal once one of its trials reaches this L1 loss (saves evaluations; crystals "
        "that never reach it are unaffected); 'none' switches a budget's early stopping off" + default("tol"),
    )
    g.add_argument(
        "--polish-steps",
        type=int,
        default=sup,
        help=f"{h}after the hops, refine every trial's best structure for this many steps and choose the "
        "winner after the polish (0 = the paper's selection)" + default("polish_steps"),
    )
    g.add_argument(
        "--polish-lr", type=float, default=sup, help=f"{h}learning rate of the polish" + default("polish_lr")
    )
    g.add_argument(
        "--polish-dtype",
        choices=["float32", "float64"],
        default=sup,
        help=f"{h}precision of the polish" + default("polish_dtype"),
    )
    g.add_argument(
        "--dmin-weight",
        type=float,
        default=sup,
        help=f"{h}weight of the d_min entry in the L1 loss relative to one pooled-EAD entry (the paper: 1); "
        "a larger weight keeps generated crystals from overlapping atoms" + default("dmin_weight"),
    )
    add_templates_arg(
        g,
        f"{h}(default: none; srd-sample: the model's training file, when it is a CSV that exists here)",
        default=sup,
    )
    g.add_argument(
        "--template-trials",
        type=int,
        default=sup,
        help=f"{h}how many of the trials (the first ones) start from --templates"
        + default("template_trials"),
    )
    g.add_argument(
        "--template-screen",
        type=int,
        default=sup,
        help=f"{h}score this many template candidates by their loss (one evaluation each) and start the "
        "template trials from the lowest (0: the closest cell shapes)" + default("template_screen"),
    )
    g.add_argument(
        "--template-hop-size",
        type=float,
        default=sup,
        help=f"{h}hop size of the template trials (Angstrom)" + default("template_hop_size"),
    )
    g.add_argument(
        "--symmetric-trials",
        type=int,
        default=sup,
        help=f"{h}how many of the trials (the last ones) start on the Wyckoff sites of a random space group "
        "that fits the decoded lattice and descend, and hop, inside that group (0 = uniform random starts, "
        "the paper's)" + default("symmetric_trials"),
    )
    g.add_argument(
        "--symmetric-hop-size",
        type=float,
        default=sup,
        help=f"{h}hop size of the symmetric trials (Angstrom; the displacement is projected onto the "
        "group)" + default("symmetric_hop_size"),
    )
    g.add_argument(
        "--symmetrize-tol",
        type=float,
        default=sup,
        help=f"{h}snap each crystal's best structure onto the space group spglib finds within this "
        "tolerance (Angstrom), polish it there and keep it only when its loss is not higher (0 = off)"
        + default("symmetrize_tol"),
    )
    g.add_argument(
        "--start-gain",
        type=float,
        default=sup,
        help=f"{h}keep the best template start itself unless the search brings its loss below this "
        "fraction of it (a generated target is not exactly realisable: the descent then distorts a "
        "right start to fit the noise; 0 = off)" + default("start_gain"),
    )


def add_templates_arg(p, default_help: str = "(default: none)", default=None) -> None:
    """--templates FILE[,FILE], the one definition of the flag (srd-reconstruct, srd-sample, the
    experiments); :func:`template_library` reads it."""
    p.add_argument(
        "--templates",
        default=default,
        metavar="FILE[,FILE]",
        help="training crystals (CDVAE-format CSV(.gz), comma-separated) that the template trials start "
        "from: crystals of the same atom count and element-count pattern, mapped into the decoded cell; "
        f"never the split being reconstructed {default_help}",
    )


def template_library(args: argparse.Namespace, show_progress: bool = False):
    """The TemplateLibrary of ``--templates`` (None when not given); a missing file is a usage error."""
    if getattr(args, "templates", None) is None:
        return None
    from ..reconstruction.templates import TemplateLibrary

    paths = [Path(p.strip()) for p in args.templates.split(",") if p.strip()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise FileNotFoundError(f"--templates: no such file: {', '.join(missing) or repr(args.templates)}")
    return TemplateLibrary.from_files(paths, show_progress=show_progress)


def reconstruct_config(args: argparse.Namespace):
    """The ReconstructConfig of the flags added by :func:`add_reconstruction_args` (and ``--seed``):
    the ``--budget`` preset, overridden by every flag given explicitly.

    Settings without a flag (plateau_threshold) keep the budget's value, else their defaults.
    """
    from ..reconstruction import ReconstructConfig

    names = [f.name for f in dataclasses.fields(ReconstructConfig)]
    overrides = {n: getattr(args, n) for n in names if hasattr(args, n)}
    return ReconstructConfig.preset(getattr(args, "budget", "paper"), **overrides)
