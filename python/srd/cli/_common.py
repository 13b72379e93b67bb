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

__all__ = ["run", "resolve_device", "seed_everything", "print_config", "HelpFormatter", "positive_int"]


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
