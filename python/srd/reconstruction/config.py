"""The settings of Algorithm 2 (ReconstructConfig, validated all at once) and the named budgets, which
are data: presets.toml next to this module."""

from __future__ import annotations

import math
import numbers
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class ReconstructConfig:
    """Settings of Algorithm 2 (defaults: the paper's budget, 6 x 7 x 300 = 12,600 evaluations).

    Named budgets: :meth:`preset` (``ReconstructConfig.preset("fast", seed=1)``), listed in :data:`PRESETS`.
    Invalid settings raise one ValueError that lists every problem (field, what was expected, what was found).
    """

    trials: int = 6
    hops: int = 7
    steps: int = 300
    lr: float = 0.05
    plateau_factor: float = 0.8
    plateau_patience: int = 15
    plateau_threshold: float = 1e-4  # relative improvement that resets the patience (PyTorch default)
    hop_size: float = 1.0  # U[-hop_size, hop_size] Angstrom per coordinate
    swap_prob: float = 0.0  # probability that a hop exchanges two atoms of different elements instead
    seed: int = 0
    dtype: str = "float32"  # "float32" or "float64"
    tol: float | None = None  # stop a crystal once a trial's loss <= tol
    polish_steps: int = 0  # refine every trial's best structure before choosing
    polish_lr: float = 0.005
    polish_dtype: str = "float64"
    # Weight of the d_min entry in the L1 loss relative to one pooled-EAD entry (SPEC: 1, i.e. 1/601 of the
    # loss). Generated targets are not exactly realisable; with weight 1 the optimiser trades d_min away
    # for EAD agreement and can leave atoms overlapping. A larger weight keeps the target's d_min.
    dmin_weight: float = 1.0
    # Symmetric starts (srd.reconstruction.symmetry): this many of the trials (the last ones) start from
    # random positions on the Wyckoff sites of a space group that fits the decoded lattice (drawn by a
    # prior of group frequencies) and descend projected onto that group's invariant positions; their hops
    # are symmetric too, of symmetric_hop_size Angstrom. A trial whose groups cannot hold the composition
    # starts uniformly at random instead.
    symmetric_trials: int = 0
    # Template starts (srd.reconstruction.templates): this many of the trials (the first ones) start from
    # training crystals of the same atom count and element-count pattern, mapped into the decoded cell;
    # their hops are template_hop_size Angstrom. Needs a template library (reconstruct(templates=...),
    # --templates FILE); without one, or when no template fits, these trials start uniformly at random.
    template_trials: int = 0
    template_hop_size: float = 0.3
    # Score this many template candidates (closest cell shapes first) by their loss as they are, one
    # evaluation each, and start the template trials from the lowest (0: the closest cell shapes).
    template_screen: int = 0
    symmetric_hop_size: float = 0.3
    # Final symmetrisation: snap every trial's best structure onto the space group spglib finds within
    # symmetrize_tol Angstrom, polish it there (polish_steps, projected) and keep it only when its loss
    # is not higher than the unsymmetrised one.
    symmetrize_tol: float = 0.0
    # Keep the best template start itself unless the search lowers its loss below start_gain x its loss
    # (0 = off: always the search's result). A generated target is not exactly realisable: from a
    # template start of the right structure type the descent buys a few per cent of loss by distorting
    # the structure into a noise-fitting one (Perov-5: COV-P 12 % vs 80 % for the starts themselves),
    # while for a realisable target (a real crystal) it divides the loss by ~100.
    start_gain: float = 0.0

    def __post_init__(self):
        coerced, problems = _check_fields({f.name: getattr(self, f.name) for f in fields(self)})
        if not problems and self.symmetric_trials + self.template_trials > self.trials:
            problems.append(
                f"symmetric_trials + template_trials: expected at most trials = {self.trials}, found "
                f"{self.symmetric_trials} + {self.template_trials}"
            )
        if problems:
            raise ValueError("invalid ReconstructConfig: " + "; ".join(problems))
        for name, value in coerced.items():  # 1 -> 1.0, NumPy scalars -> Python numbers
            if value is not getattr(self, name):
                object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str | None = None) -> ReconstructConfig:
        """Build from a (possibly partial) mapping of fields (other fields keep their defaults).

        Unknown keys and invalid values raise one ValueError, prefixed by ``where``, listing every problem.
        """
        prefix = f"{where}: " if where else ""
        if not isinstance(d, Mapping):
            raise ValueError(f"{prefix}expected a table of ReconstructConfig fields, found {d!r}")
        names = [f.name for f in fields(cls)]
        problems = [f"unknown key {k!r} (known: {', '.join(names)})" for k in d if k not in names]
        given = {k: v for k, v in d.items() if k in names}
        problems += _check_fields(given)[1]
        if problems:
            raise ValueError(f"{prefix}invalid ReconstructConfig: " + "; ".join(problems))
        return cls(**given)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ReconstructConfig:
        """The config of the named budget ``name`` (see :data:`PRESETS`), with ``overrides`` of any fields."""
        return get_preset(name).config(**overrides)

    def replace(self, **changes: Any) -> ReconstructConfig:
        """A copy with fields changed (validated like the constructor)."""
        return ReconstructConfig.from_dict({**self.to_dict(), **changes}, where="ReconstructConfig.replace")

    @property
    def evaluations_per_crystal(self) -> int:
        """Descriptor evaluations per crystal at this budget, without early stopping (forward + backward;
        the template screen's forward-only evaluations count as whole ones, an upper bound)."""
        return self.trials * (self.hops * self.steps + self.polish_steps) + self.template_screen

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------
# Validation of ReconstructConfig: (kind, check, what is expected) per field
# ------------------------------------------------------------------------------------------------
_BAD = object()
_DTYPE_NAMES = ("float32", "float64")


def _finite(x) -> bool:
    return math.isfinite(x)


_FIELD_RULES: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    "trials": ("int", lambda v: v >= 1, "an integer >= 1"),
    "hops": ("int", lambda v: v >= 1, "an integer >= 1"),
    "steps": ("int", lambda v: v >= 1, "an integer >= 1"),
    "lr": ("float", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "plateau_factor": ("float", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "plateau_patience": ("int", lambda v: v >= 0, "an integer >= 0"),
    "plateau_threshold": ("float", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "hop_size": ("float", lambda v: _finite(v) and v >= 0, "a finite number >= 0 (Angstrom)"),
    "swap_prob": ("float", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "seed": ("int", lambda v: True, "an integer"),
    "dtype": ("str", lambda v: v in _DTYPE_NAMES, "'float32' or 'float64'"),
    "tol": ("float|None", lambda v: v is None or (_finite(v) and v >= 0), "None or a finite number >= 0"),
    "polish_steps": ("int", lambda v: v >= 0, "an integer >= 0"),
    "polish_lr": ("float", lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "polish_dtype": ("str", lambda v: v in _DTYPE_NAMES, "'float32' or 'float64'"),
    "dmin_weight": ("float", lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "symmetric_trials": ("int", lambda v: v >= 0, "an integer >= 0 (at most trials)"),
    "template_trials": ("int", lambda v: v >= 0, "an integer >= 0 (at most trials)"),
    "template_hop_size": ("float", lambda v: _finite(v) and v >= 0, "a finite number >= 0 (Angstrom)"),
    "template_screen": ("int", lambda v: v >= 0, "an integer >= 0"),
    "symmetric_hop_size": ("float", lambda v: _finite(v) and v >= 0, "a finite number >= 0 (Angstrom)"),
    "symmetrize_tol": (
        "float",
        lambda v: _finite(v) and 0 <= v <= 1,
        "a number in [0, 1] (Angstrom; 0 = off)",
    ),
    "start_gain": ("float", lambda v: 0 <= v <= 1, "a number in [0, 1] (0 = off)"),
}


assert list(_FIELD_RULES) == [f.name for f in fields(ReconstructConfig)], "every field needs a rule"


def _check_fields(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the values coerced to Python types, one "field: expected ..., found ..." line per problem)."""
    coerced, problems = {}, []
    for name, value in values.items():
        kind, ok, expected = _FIELD_RULES[name]
        v = _coerce(value, kind)
        if v is _BAD or not ok(v):
            problems.append(f"{name}: expected {expected}, found {value!r}")
        else:
            coerced[name] = v
    return coerced, problems


def _coerce(value: Any, kind: str) -> Any:
    """``value`` as a Python int / float / str (ints are numbers too), or _BAD when it has the wrong type."""
    if kind == "float|None":
        if value is None:
            return None
        kind = "float"
    if isinstance(value, bool):
        return _BAD
    if kind == "int":
        return int(value) if isinstance(value, numbers.Integral) else _BAD
    if kind == "float":
        return float(value) if isinstance(value, numbers.Real) else _BAD
    return value if isinstance(value, str) else _BAD


# ------------------------------------------------------------------------------------------------
# Named budgets (presets/reconstruct.toml)
# ------------------------------------------------------------------------------------------------
#: The data file of the named budgets, shipped inside the package.
PRESETS_FILE = Path(__file__).resolve().parent / "presets.toml"


@dataclass(frozen=True)
class Preset:
    """A named reconstruction budget: a description and the ReconstructConfig fields it sets."""

    name: str
    description: str
    values: Mapping[str, Any]  # the fields the budget sets, in file order; the others keep their defaults

    def config(self, **overrides: Any) -> ReconstructConfig:
        """The budget's ReconstructConfig, with ``overrides`` of any fields."""
        where = f"reconstruction preset {self.name!r}" + (" with overrides" if overrides else "")
        return ReconstructConfig.from_dict({**self.values, **overrides}, where=where)

    def flags(self) -> list[str]:
        """The budget as srd-reconstruct / srd-sample flags (e.g. ``--trials 6 --hops 7 --steps 300``)."""
        out = []
        for k, v in self.values.items():
            out += [f"--{k.replace('_', '-')}", f"{v:g}" if isinstance(v, float) else str(v)]
        return out


def _load_presets(path: Path = PRESETS_FILE) -> dict[str, Preset]:
    """Read and validate every budget of ``path`` (one ValueError listing all problems)."""
    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML: {err}") from None
    presets, problems = {}, []
    for name, table in data.items():
        if not isinstance(table, dict):
            problems.append(f"{name}: expected a table, found {table!r}")
            continue
        values = {k: v for k, v in table.items() if k != "description"}
        description = table.get("description")
        if not isinstance(description, str) or not description.strip():
            problems.append(f"[{name}]: expected a one-line 'description' string, found {description!r}")
        p = Preset(name, str(description), MappingProxyType(values))
        try:
            p.config()
        except ValueError as err:
            problems.append(str(err))
            continue
        presets[name] = p
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return presets


#: The named budgets (name -> :class:`Preset`), in the order of presets/reconstruct.toml.
PRESETS: Mapping[str, Preset] = MappingProxyType(_load_presets())

#: The named budgets as srd-reconstruct / srd-sample flags (derived from :data:`PRESETS`).
BUDGETS: dict[str, list[str]] = {name: p.flags() for name, p in PRESETS.items()}


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``; ValueError listing the known names otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown reconstruction preset {name!r}; known: {', '.join(PRESETS)}") from None


def preset(name: str, **overrides: Any) -> ReconstructConfig:
    """The ReconstructConfig of the named budget ``name`` with ``overrides`` (``preset("fast", seed=1)``)."""
    return get_preset(name).config(**overrides)
