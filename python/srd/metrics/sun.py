"""Beyond the CDVAE metrics: the S.U.N. rates (stable, unique, novel) of generated crystals.

The CDVAE protocol (validity, EMDs, coverage) never asks whether a generated crystal is new, or whether it
would survive a relaxation; MatterGen's S.U.N. rate does:

* :func:`uniqueness`: generated crystals grouped with pymatgen's StructureMatcher (MatterGen's settings,
  the pymatgen defaults ltol=0.2, stol=0.3, angle_tol=5); the first crystal of each group is unique.
* :func:`novelty`: a crystal is novel when no training crystal matches it.
* :func:`static_energies`, :func:`relax`: CHGNet energies per atom, before and after a FIRE relaxation
  (CHGNet is optional: ``pip install "srd[sun]"``).
* :func:`proxy_hull`, :func:`e_above_hull`: the energy above a convex hull built from reference crystals'
  **CHGNet** energies. This is a potential-based proxy hull, not the Materials Project DFT hull: its values
  are comparable between models scored against the same references, not with DFT E_hull figures.
* :func:`elemental_references`: CHGNet-relaxed elemental prototypes (fcc, bcc, hcp, simple cubic, diamond),
  the elemental references of the proxy hull for elements that the reference crystals hold no pure phase of.
* :func:`sun_rates`: the stable, unique, novel and S.U.N. fractions, all over every generated crystal.

Both matching steps first bucket crystals by reduced composition: StructureMatcher never matches crystals
of different reduced compositions (it scales volumes, and reduces to primitive cells, but does not change
stoichiometry), so bucketing loses no match and bounds the pairwise cost by the bucket sizes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..utils import atomic_write_text, cache_root, progress, sha256_file

if TYPE_CHECKING:  # annotations only: pymatgen's analysis modules load lazily
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

__all__ = [
    "MATCHER_SETTINGS",
    "HULL_LABEL",
    "STABLE_TOL",
    "METASTABLE_THRESHOLD",
    "MissingDependencyError",
    "make_matcher",
    "composition_key",
    "uniqueness",
    "novelty",
    "require_chgnet",
    "load_chgnet",
    "chgnet_version",
    "StaticEnergies",
    "RelaxResult",
    "static_energies",
    "relax",
    "reference_energies",
    "ELEMENT_PROTOTYPES",
    "NOBLE_GASES",
    "PROTOTYPE_NOTE",
    "ElementReference",
    "elemental_references",
    "prototype_cells",
    "ProxyHull",
    "proxy_hull",
    "missing_elements",
    "e_above_hull",
    "sun_rates",
    "read_crystals",
]

#: MatterGen's StructureMatcher settings (pymatgen's defaults): :func:`make_matcher`'s defaults.
MATCHER_SETTINGS = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0, "primitive_cell": True, "scale": True}

#: Written next to every E_hull figure: what the hull is and what it is not.
HULL_LABEL = (
    "proxy E_hull: energies above a convex hull of reference crystals' CHGNet energies (a machine-learned "
    "potential); not the Materials Project DFT hull"
)

#: A crystal on the hull computes as E_hull ~ 1e-12, not exactly 0: "stable" is E_hull <= this (eV/atom).
STABLE_TOL = 1e-6
#: Hulls over more elements than this are built per chemical system, lazily (ChemicalSystemHulls).
PLAIN_HULL_MAX_ELEMENTS = 8
#: The looser, usual "metastable" threshold (eV/atom): MatterGen's stability criterion.
METASTABLE_THRESHOLD = 0.1

_INSTALL_HINT = (
    'CHGNet is not installed; the energy part of the S.U.N. metrics needs it: pip install "srd[sun]"'
)


class MissingDependencyError(ImportError):
    """An optional dependency (CHGNet) is missing; the message says how to install it."""


# ------------------------------------------------------------------------------------------------
# Matching: uniqueness and novelty
# ------------------------------------------------------------------------------------------------
def make_matcher(
    ltol: float = MATCHER_SETTINGS["ltol"],
    stol: float = MATCHER_SETTINGS["stol"],
    angle_tol: float = MATCHER_SETTINGS["angle_tol"],
) -> StructureMatcher:
    """A StructureMatcher with MatterGen's settings (primitive cells, volumes scaled): a cell, its
    supercells and its translated or rotated copies all match."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(ltol=ltol, stol=stol, angle_tol=angle_tol, primitive_cell=True, scale=True)


def _matcher_settings(matcher: StructureMatcher) -> dict:
    """The settings of a matcher, for the reports (any StructureMatcher, not only make_matcher's)."""
    out = {k: getattr(matcher, k, getattr(matcher, f"_{k}", None)) for k in ("ltol", "stol", "angle_tol")}
    out |= {k: getattr(matcher, f"_{a}", None) for k, a in (("primitive_cell",) * 2, ("scale",) * 2,
                                                           ("attempt_supercell", "supercell"))}  # fmt: skip
    return out


def composition_key(structure: Structure) -> str:
    """The bucket of a crystal: its reduced element composition (oxidation states ignored, so the bucket is
    never finer than what StructureMatcher can match)."""
    return structure.composition.element_composition.reduced_formula


def _fit(matcher: StructureMatcher, a: Structure, b: Structure) -> bool:
    """matcher.fit that treats a failure of pymatgen's matching (rare degenerate cells) as no match."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(matcher.fit(a, b))
    except Exception:  # noqa: BLE001 - a crystal pymatgen cannot compare matches nothing
        return False


def _first_match(matcher: StructureMatcher, s: Structure, candidates, pool) -> int | None:
    """The first index in ``candidates`` whose crystal ``pool[index]`` matches ``s``, else None."""
    return next((j for j in candidates if _fit(matcher, pool[j], s)), None)


def uniqueness(
    structures: Sequence[Structure | None],
    matcher: StructureMatcher | None = None,
    *,
    show_progress: bool = False,
) -> dict:
    """Group ``structures`` into sets of mutual duplicates.

    Each crystal is compared with the first crystal of every group of its composition bucket, in input
    order; it joins the first group it matches, else it starts a new group and is unique. An unreadable
    crystal (None) is never unique. Returns ``unique`` (per-crystal flags), ``group`` (per crystal: the
    index of its group's first crystal, -1 when unreadable), ``n``, ``n_unique``, ``rate`` (n_unique / n,
    over all crystals including unreadable ones) and the matcher ``settings``.
    """
    matcher = matcher or make_matcher()
    reps: dict[str, list[int]] = {}
    unique = [False] * len(structures)
    group = [-1] * len(structures)
    for i, s in enumerate(progress(structures, desc="uniqueness", unit="crystal", disable=not show_progress)):
        if s is None:
            continue
        bucket = reps.setdefault(composition_key(s), [])
        j = _first_match(matcher, s, bucket, structures)
        if j is None:
            bucket.append(i)
            unique[i] = True
        group[i] = i if j is None else j
    n = len(structures)
    n_unique = sum(unique)
    return {
        "unique": unique,
        "group": group,
        "n": n,
        "n_unique": n_unique,
        "rate": n_unique / n if n else math.nan,
        "settings": _matcher_settings(matcher),
    }


def novelty(
    structures: Sequence[Structure | None],
    train_structures: Sequence[Structure],
    matcher: StructureMatcher | None = None,
    *,
    show_progress: bool = False,
) -> dict:
    """A crystal is novel when no training crystal of its composition bucket matches it.

    An unreadable crystal (None) is not novel. Returns ``novel`` (per-crystal flags), ``match`` (per crystal:
    the index in ``train_structures`` of the first match, else -1), ``n``, ``n_novel``, ``rate`` (over all
    crystals), ``n_train`` and the matcher ``settings``.
    """
    matcher = matcher or make_matcher()
    buckets: dict[str, list[int]] = {}
    for j, t in enumerate(train_structures):
        if t is not None:
            buckets.setdefault(composition_key(t), []).append(j)
    novel = [False] * len(structures)
    match = [-1] * len(structures)
    for i, s in enumerate(progress(structures, desc="novelty", unit="crystal", disable=not show_progress)):
        if s is None:
            continue
        j = _first_match(matcher, s, buckets.get(composition_key(s), ()), train_structures)
        if j is None:
            novel[i] = True
        else:
            match[i] = j
    n = len(structures)
    n_novel = sum(novel)
    return {
        "novel": novel,
        "match": match,
        "n": n,
        "n_novel": n_novel,
        "rate": n_novel / n if n else math.nan,
        "n_train": sum(t is not None for t in train_structures),
        "settings": _matcher_settings(matcher),
    }


# ------------------------------------------------------------------------------------------------
# CHGNet energies (optional dependency)
# ------------------------------------------------------------------------------------------------
def require_chgnet():
    """Import and return the chgnet package, or raise :class:`MissingDependencyError` with the install hint."""
    try:
        import chgnet
    except ImportError:
        raise MissingDependencyError(_INSTALL_HINT) from None
    return chgnet


def chgnet_version() -> str:
    """The installed CHGNet package version (part of every energy cache key)."""
    return str(require_chgnet().__version__)


_MODELS: dict[str, Any] = {}


def load_chgnet(device: str = "cpu"):
    """The pretrained CHGNet (weights ship inside the wheel: no download), loaded once per device."""
    require_chgnet()
    if device not in _MODELS:
        from chgnet.model import CHGNet

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # its banner
            warnings.simplefilter("ignore")
            _MODELS[device] = CHGNet.load(verbose=False, use_device=device)
    return _MODELS[device]


@dataclass
class StaticEnergies:
    """CHGNet energies per atom (eV/atom; NaN where the prediction failed, and ``errors`` says why)."""

    e_per_atom: np.ndarray
    errors: list[str | None]


def _one_energy(model, s: Structure) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = float(np.asarray(model.predict_structure(s, task="e")["e"]))
    if not math.isfinite(e):
        raise ValueError(f"CHGNet returned a non-finite energy ({e})")
    return e


def static_energies(
    structures: Sequence[Structure | None],
    *,
    model=None,
    device: str = "cpu",
    show_progress: bool = False,
) -> StaticEnergies:
    """CHGNet's energy per atom of each crystal as given (no relaxation).

    One crystal at a time, so that a crystal CHGNet cannot handle (an isolated atom, an element outside its
    training set) records its reason and never fails the batch.
    """
    model = model or load_chgnet(device)
    e = np.full(len(structures), np.nan)
    errors: list[str | None] = [None] * len(structures)
    for i, s in enumerate(
        progress(structures, desc="CHGNet energies", unit="crystal", disable=not show_progress)
    ):
        if s is None:
            errors[i] = "unreadable crystal"
            continue
        try:
            e[i] = _one_energy(model, s)
        except Exception as err:  # noqa: BLE001 - recorded per crystal
            errors[i] = f"CHGNet static energy failed: {type(err).__name__}: {err}"
    return StaticEnergies(e, errors)


@dataclass
class RelaxResult:
    """One CHGNet relaxation. Energies are per atom (eV/atom); ``structure`` is the relaxed crystal (None when
    the relaxation failed, and ``error`` says why). ``converged``: the optimizer stopped before the step cap.
    ``trajectory``: (cell rows, Cartesian positions, total energy) per recorded step, when asked for."""

    structure: Structure | None
    e_initial: float = math.nan
    e_final: float = math.nan
    n_steps: int = 0
    converged: bool = False
    error: str | None = None
    trajectory: list[tuple[np.ndarray, np.ndarray, float]] = field(default_factory=list, repr=False)


def relax(
    structures: Sequence[Structure | None],
    *,
    fmax: float = 0.1,
    steps: int = 500,
    relax_cell: bool = True,
    model=None,
    device: str = "cpu",
    keep_trajectory: bool = False,
    show_progress: bool = False,
    on_result: Callable[[int, RelaxResult], None] | None = None,
) -> list[RelaxResult]:
    """Relax each crystal with CHGNet's StructOptimizer (ASE FIRE, cell relaxed by FrechetCellFilter) until
    the largest force is below ``fmax`` eV/A or ``steps`` steps were taken (the cap keeps a pathological
    generated crystal from running for ever).

    A failure (CHGNet or the optimizer raising, a non-finite energy) is recorded in that crystal's result
    with the reason; the batch goes on. ``on_result(i, result)`` is called after each crystal (srd-relax
    writes its files there, so an interrupted run keeps what it finished).
    """
    require_chgnet()
    from chgnet.model import StructOptimizer

    model = model or load_chgnet(device)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # "CHGNet will run on cpu"
        warnings.simplefilter("ignore")
        opt = StructOptimizer(model=model, optimizer_class="FIRE")
    results: list[RelaxResult] = []
    with _one_blas_thread():
        for i, s in enumerate(
            progress(structures, desc="CHGNet relax", unit="crystal", disable=not show_progress)
        ):
            results.append(_relax_one(opt, s, fmax, steps, relax_cell, keep_trajectory))
            if on_result is not None:
                on_result(i, results[-1])
    return results


def _one_blas_thread():
    """One BLAS thread while relaxing: the cell filter's 3x3 and 9x9 matrix functions (expm_frechet, logm) are
    far too small to gain from threads, and on a busy machine OpenBLAS's waiting threads made each step ~8x
    slower (measured: 15 s instead of 2 s for a 10-step relaxation of a one-atom cell)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, nothing is limited
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _relax_one(opt, s, fmax, steps, relax_cell, keep_trajectory) -> RelaxResult:
    if s is None:
        return RelaxResult(None, error="unreadable crystal")
    n = len(s)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = opt.relax(s.copy(), fmax=fmax, steps=steps, relax_cell=relax_cell, verbose=False)
    except Exception as err:  # noqa: BLE001 - recorded per crystal
        return RelaxResult(None, error=f"CHGNet relaxation failed: {type(err).__name__}: {err}")
    traj = out["trajectory"]
    energies = [float(e) for e in traj.energies]
    # The observer records the start, every step, and once more at the end: steps taken = records - 2.
    n_steps = max(len(energies) - 2, 0)
    res = RelaxResult(
        out["final_structure"],
        e_initial=energies[0] / n if energies else math.nan,
        e_final=energies[-1] / n if energies else math.nan,
        n_steps=n_steps,
        converged=n_steps < steps,
    )
    if not (math.isfinite(res.e_initial) and math.isfinite(res.e_final)):
        return RelaxResult(None, error="CHGNet relaxation gave a non-finite energy", n_steps=n_steps)
    if keep_trajectory:
        res.trajectory = [
            (np.asarray(c, dtype=float), np.asarray(p, dtype=float), float(e))
            for c, p, e in zip(traj.cells, traj.atom_positions, traj.energies)
        ]
    return res


def _energy_cache(*parts: str) -> tuple[str, Path]:
    """(key, path) of one energy cache file: the key is the sha256 of ``parts`` and the CHGNet version."""
    import hashlib

    key = hashlib.sha256(
        "|".join([*parts[:1], f"chgnet-{chgnet_version()}", *parts[1:]]).encode()
    ).hexdigest()
    return key, cache_root("chgnet_energies") / f"{key}.json"


def _read_energy_cache(cache: Path, key: str) -> dict | None:
    """The cache file's JSON when it is there, readable and of ``key``; None otherwise (a damaged cache is
    recomputed and overwritten)."""
    if not cache.is_file():
        return None
    try:
        d = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("key") == key else None


def _write_energy_cache(cache: Path, d: dict) -> None:
    """JSON (never pickle), written atomically."""
    atomic_write_text(cache, json.dumps(d) + "\n")


def reference_energies(
    path: str | os.PathLike,
    structures: Sequence[Structure | None],
    ids: Sequence[str],
    *,
    use_cache: bool = True,
    device: str = "cpu",
    show_progress: bool = False,
) -> tuple[StaticEnergies, dict]:
    """CHGNet static energies of a reference file's crystals, cached on disk.

    The reference crystals (MP's DFT-relaxed structures) are not relaxed again. The cache key is the sha256
    of the file, the CHGNet version and "static"; the cache is JSON (never pickle), written atomically, and
    checked against the crystal ids. Returns the energies and ``{"path", "hit"}`` of the cache.
    """
    key, cache = _energy_cache(sha256_file(path), "static")
    ids = [str(i) for i in ids]
    d = _read_energy_cache(cache, key) if use_cache else None
    if d is not None and d.get("ids") == ids:
        try:
            e = np.array([float(x) for x in d["e_per_atom"]], dtype=float)
            return StaticEnergies(e, list(d["errors"])), {"path": str(cache), "hit": True}
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache is recomputed and overwritten
    res = static_energies(structures, device=device, show_progress=show_progress)
    if use_cache:
        _write_energy_cache(cache, {
            "key": key,
            "source": str(path),
            "chgnet_version": chgnet_version(),
            "kind": "static",
            "ids": ids,
            "e_per_atom": [repr(float(x)) for x in res.e_per_atom],  # "nan" survives JSON
            "errors": res.errors,
        })  # fmt: skip
    return res, {"path": str(cache) if use_cache else None, "hit": False}


# ------------------------------------------------------------------------------------------------
# Elemental references: CHGNet-relaxed prototypes
# ------------------------------------------------------------------------------------------------
#: The elemental crystal structures tried by :func:`elemental_references` (``ase.build.bulk`` names).
ELEMENT_PROTOTYPES = ("fcc", "bcc", "hcp", "sc", "diamond")
#: No solid prototype is relaxed for these: CHGNet has no van der Waals binding to hold their crystals.
NOBLE_GASES = frozenset({"He", "Ne", "Ar", "Kr", "Xe", "Rn", "Og"})
#: :func:`elemental_references`' relaxation: force threshold (eV/A) and step cap.
PROTOTYPE_FMAX = 0.05
PROTOTYPE_STEPS = 300
#: Bump when the prototype cells (lattice guesses) change: part of the cache key.
_PROTOTYPE_VERSION = "1"

#: Added to a proxy hull's label when prototypes stand in for missing elemental references.
PROTOTYPE_NOTE = (
    "elemental references for elements with no elemental crystal among the reference crystals are "
    "CHGNet-relaxed prototypes (the lowest of fcc, bcc, hcp, simple cubic, diamond)"
)


@dataclass
class ElementReference:
    """The lowest-energy CHGNet-relaxed prototype of one element. ``e_per_atom`` (eV/atom) is NaN and
    ``prototype``/``structure`` are None when no prototype gave an energy (``error`` says why).
    ``energies``: relaxed energy per atom of each prototype that relaxed; ``errors``: why the others failed;
    ``converged``: per prototype, whether FIRE stopped before the step cap; ``cached``: read from the cache."""

    element: str
    e_per_atom: float = math.nan
    prototype: str | None = None
    structure: Structure | None = None
    energies: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    converged: dict[str, bool] = field(default_factory=dict)
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.prototype is not None and math.isfinite(self.e_per_atom)

    def summary(self) -> dict:
        """The JSON-able record (sun.json)."""
        return {
            "prototype": self.prototype,
            "e_per_atom": self.e_per_atom if self.ok else None,
            "energies": self.energies,
            "converged": self.converged,
            "errors": self.errors,
            "error": self.error,
            "cached": self.cached,
        }


def _radii(symbol: str) -> tuple[float, float]:
    """(atomic, covalent) radius in A from pymatgen, each falling back on the other and then on 1.5 A."""
    from pymatgen.core import Element

    el = Element(symbol)
    with warnings.catch_warnings():  # "No data available for atomic_radius_calculated"
        warnings.simplefilter("ignore")
        atomic = el.atomic_radius or el.atomic_radius_calculated
    try:
        from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

        covalent = CovalentRadius.radius.get(symbol)
    except ImportError:
        covalent = None
    atomic = float(atomic or covalent or 1.5)
    return atomic, float(covalent or atomic)


def prototype_cells(symbol: str, prototypes: Sequence[str] = ELEMENT_PROTOTYPES) -> dict[str, Structure]:
    """The primitive cells of ``symbol``'s prototypes, before relaxation. Lattice constants are guessed from
    pymatgen's radii: nearest-neighbour distance d = 2 x atomic radius (fcc a = d sqrt 2, bcc a = 2d/sqrt 3,
    hcp a = d with the ideal c/a = sqrt(8/3), sc a = d) or 2 x covalent radius (diamond a = 4d/sqrt 3)."""
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    atomic, covalent = _radii(symbol)
    d, dc = 2 * atomic, 2 * covalent
    makers = {
        "fcc": lambda: bulk(symbol, "fcc", a=d * math.sqrt(2)),
        "bcc": lambda: bulk(symbol, "bcc", a=2 * d / math.sqrt(3)),
        "hcp": lambda: bulk(symbol, "hcp", a=d, c=d * math.sqrt(8 / 3)),
        "sc": lambda: bulk(symbol, "sc", a=d),
        "diamond": lambda: bulk(symbol, "diamond", a=4 * dc / math.sqrt(3)),
    }
    unknown = sorted(set(prototypes) - set(makers))
    if unknown:
        raise ValueError(f"unknown elemental prototype(s) {unknown}; known: {list(makers)}")
    return {p: AseAtomsAdaptor.get_structure(makers[p]()) for p in prototypes}


def _plain(structure: Structure) -> Structure:
    """The structure without site properties (CHGNet's magmoms): lattice, species, positions."""
    from pymatgen.core import Structure

    return Structure(structure.lattice, structure.species, structure.frac_coords)


def elemental_references(
    elements: Sequence[str],
    *,
    model=None,
    device: str = "cpu",
    prototypes: Sequence[str] | None = None,
    fmax: float = PROTOTYPE_FMAX,
    steps: int = PROTOTYPE_STEPS,
    use_cache: bool = True,
    show_progress: bool = False,
) -> dict[str, ElementReference]:
    """Elemental references from prototypes: every prototype of each element (default
    :data:`ELEMENT_PROTOTYPES`, see :func:`prototype_cells`) is relaxed with CHGNet (cell relaxed, FIRE,
    ``fmax``, at most ``steps`` steps; an unconverged relaxation still counts, its energy being that of a
    real configuration) and the lowest energy per atom is kept.

    A failed prototype is recorded in ``errors``; an element none of whose prototypes relaxed (one CHGNet
    cannot handle), and a noble gas (:data:`NOBLE_GASES`, never relaxed), has ``ok`` False and ``error``:
    leave it out of the hull. Each element is cached on its own (JSON, atomic writes, in
    ``cache_root("chgnet_energies")``), keyed by the element, the CHGNet version, the prototypes and the
    relaxation settings. Returns one :class:`ElementReference` per distinct element asked for.
    """
    from pymatgen.core import Element, Structure

    protos = tuple(ELEMENT_PROTOTYPES if prototypes is None else prototypes)
    out: dict[str, ElementReference] = {}
    todo = []
    for el in dict.fromkeys(str(e) for e in elements):
        try:
            Element(el)
        except ValueError:
            out[el] = ElementReference(el, error=f"not an element: {el!r}")
            continue
        if el in NOBLE_GASES:
            out[el] = ElementReference(
                el, error="noble gas: no solid prototype (CHGNet has no van der Waals binding)"
            )
            continue
        key, cache = _energy_cache(f"element-prototypes-v{_PROTOTYPE_VERSION}", el, ",".join(protos),
                                   f"fmax={fmax!r}", f"steps={steps}")  # fmt: skip
        d = _read_energy_cache(cache, key) if use_cache else None
        if d is not None:
            try:
                ref = ElementReference(
                    el,
                    e_per_atom=float(d["e_per_atom"]),
                    prototype=d["prototype"],
                    structure=Structure.from_dict(d["structure"]) if d["structure"] else None,
                    energies={k: float(v) for k, v in d["energies"].items()},
                    errors=dict(d["errors"]),
                    converged={k: bool(v) for k, v in d["converged"].items()},
                    error=d["error"],
                    cached=True,
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # a damaged cache is recomputed and overwritten
            else:
                out[el] = ref
                continue
        todo.append((el, key, cache))
    if not todo:
        return {el: out[el] for el in dict.fromkeys(str(e) for e in elements)}

    model = model or load_chgnet(device)
    bar = progress(total=len(todo) * len(protos), desc="elemental prototypes", unit="relaxation",
                   disable=not show_progress)  # fmt: skip
    for el, key, cache in todo:
        ref = ElementReference(el)
        best = None
        for name, cell in prototype_cells(el, protos).items():
            (r,) = relax([cell], fmax=fmax, steps=steps, relax_cell=True, model=model)
            bar.update(1)
            if r.structure is None:
                ref.errors[name] = r.error or "relaxation failed"
                continue
            ref.energies[name] = r.e_final
            ref.converged[name] = r.converged
            if best is None or r.e_final < best[1]:
                best = (name, r.e_final, r.structure)
        if best is None:
            ref.error = "no prototype relaxed: " + "; ".join(f"{k}: {v}" for k, v in ref.errors.items())
        else:
            ref.prototype, ref.e_per_atom, ref.structure = best[0], best[1], _plain(best[2])
        if use_cache:
            _write_energy_cache(cache, {
                "key": key,
                "kind": "element-prototypes",
                "element": el,
                "chgnet_version": chgnet_version(),
                "prototypes": list(protos),
                "fmax": fmax,
                "steps": steps,
                "e_per_atom": repr(float(ref.e_per_atom)),  # "nan" survives JSON
                "prototype": ref.prototype,
                "structure": ref.structure.as_dict() if ref.structure is not None else None,
                "energies": ref.energies,
                "converged": ref.converged,
                "errors": ref.errors,
                "error": ref.error,
            })  # fmt: skip
        out[el] = ref
    bar.close()
    return {el: out[el] for el in dict.fromkeys(str(e) for e in elements)}


# ------------------------------------------------------------------------------------------------
# Proxy hull
# ------------------------------------------------------------------------------------------------
class ChemicalSystemHulls:
    """The convex hull of many entries, built lazily per chemical system: E_hull of a composition depends
    only on the entries whose elements all lie in its chemical system, so one small PhaseDiagram per system
    asked about (cached) gives exactly the global hull's value. One PhaseDiagram over a dataset's ~90
    elements never finishes, and even pymatgen's PatchedPhaseDiagram builds every subsystem the entries
    span up front (it did not finish in 10 minutes on MP-20's 11,620 references); this builds only those
    the generated crystals need."""

    def __init__(self, entries) -> None:
        self.entries = list(entries)
        self._systems = [frozenset(str(el) for el in e.composition.elements) for e in self.entries]
        self._cache: dict[frozenset[str], PhaseDiagram] = {}

    def diagram_for(self, elements) -> PhaseDiagram:
        from pymatgen.analysis.phase_diagram import PhaseDiagram

        key = frozenset(str(el) for el in elements)
        if key not in self._cache:
            sub = [e for e, sysm in zip(self.entries, self._systems) if sysm <= key]
            self._cache[key] = PhaseDiagram(sub)
        return self._cache[key]

    def get_decomp_and_e_above_hull(self, entry, allow_negative: bool = False):
        return self.diagram_for(entry.composition.elements).get_decomp_and_e_above_hull(
            entry, allow_negative=allow_negative
        )


@dataclass
class ProxyHull:
    """A pymatgen PhaseDiagram of reference crystals' CHGNet energies (see :data:`HULL_LABEL`)."""

    diagram: PhaseDiagram | ChemicalSystemHulls
    elements: frozenset[str]
    n_entries: int
    #: Reference crystals left out, with the reason (no energy; an element with no elemental reference).
    dropped: list[tuple[int, str]]
    label: str = HULL_LABEL
    #: Elements whose elemental reference is a CHGNet-relaxed prototype: element -> prototype name.
    prototypes: dict[str, str] = field(default_factory=dict)


def proxy_hull(
    reference_structures: Sequence[Structure | None],
    energies: Sequence[float],
    element_references: Mapping[str, ElementReference] | None = None,
) -> ProxyHull:
    """The convex hull of the reference crystals: one PDEntry per crystal, composition = the crystal's,
    total energy = e_per_atom * n_atoms (CHGNet's), a potential-based proxy of the DFT hull.

    A PhaseDiagram needs an elemental entry for each of its elements. ``element_references``
    (:func:`elemental_references`) supply one for each element that no reference crystal is a pure phase of
    (those the reference crystals have are kept, the prototypes of these elements ignored; failed ones are
    ignored); the label then says so. Compounds that still contain an element with no elemental reference
    are dropped (and listed); crystals whose elements the hull then lacks get NaN from :func:`e_above_hull`.
    """
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    if len(reference_structures) != len(energies):
        raise ValueError(
            f"proxy_hull: {len(reference_structures)} reference crystals but {len(energies)} energies"
        )
    dropped: list[tuple[int, str]] = []
    candidates = []
    for i, (s, e) in enumerate(zip(reference_structures, energies)):
        if s is None:
            dropped.append((i, "unreadable crystal"))
        elif not math.isfinite(float(e)):
            dropped.append((i, "no CHGNet energy"))
        else:
            candidates.append((i, s.composition.element_composition, float(e) * s.composition.num_atoms))
    elemental = {str(c.elements[0]) for _, c, _ in candidates if len(c.elements) == 1}
    entries = []
    prototypes: dict[str, str] = {}
    for el, ref in sorted((element_references or {}).items()):
        if el not in elemental and ref.ok:
            entries.append(PDEntry(Composition(el), ref.e_per_atom, name=f"{el} ({ref.prototype} prototype)"))
            prototypes[el] = str(ref.prototype)
    elemental |= set(prototypes)
    for i, comp, etot in candidates:
        missing = sorted({str(el) for el in comp.elements} - elemental)
        if missing:
            dropped.append((i, f"no elemental reference for {', '.join(missing)}"))
        else:
            entries.append(PDEntry(comp, etot, name=comp.reduced_formula))
    if not entries:
        raise ValueError("proxy_hull: no reference crystal with an energy and elemental references")
    dropped.sort()
    label = f"{HULL_LABEL}; {PROTOTYPE_NOTE}" if prototypes else HULL_LABEL
    # One convex hull over a whole dataset's chemistry (MP-20: ~90 elements) is a qhull in ~90 dimensions,
    # which never finishes: above PLAIN_HULL_MAX_ELEMENTS the hull is built per chemical system, lazily
    # (ChemicalSystemHulls), with the same E_hull. Small systems keep the plain PhaseDiagram.
    n_elements = len({el for e in entries for el in e.composition.elements})
    diagram = PhaseDiagram(entries) if n_elements <= PLAIN_HULL_MAX_ELEMENTS else ChemicalSystemHulls(entries)
    return ProxyHull(diagram, frozenset(elemental), len(entries), dropped, label, prototypes)


def missing_elements(
    reference_structures: Sequence[Structure | None],
    energies: Sequence[float],
    others: Sequence[Structure | None] = (),
) -> list[str]:
    """The elements of the reference crystals and of ``others`` (the generated crystals) that no reference
    crystal with a finite energy is a pure phase of: those :func:`elemental_references` should supply."""
    have, wanted = set(), set()
    for s, e in zip(reference_structures, energies):
        if s is None:
            continue
        els = {str(el) for el in s.composition.element_composition.elements}
        wanted |= els
        if len(els) == 1 and math.isfinite(float(e)):
            have |= els
    for s in others:
        if s is not None:
            wanted |= {str(el) for el in s.composition.element_composition.elements}
    return sorted(wanted - have)


def e_above_hull(structure: Structure, energy_per_atom: float, hull: ProxyHull) -> tuple[float, str | None]:
    """(E_hull in eV/atom, None), or (NaN, reason) when the energy is missing or the hull lacks one of the
    crystal's elements. Negative values (below the proxy hull) are kept: they count as stable."""
    from pymatgen.analysis.phase_diagram import PDEntry

    if structure is None:
        return math.nan, "unreadable crystal"
    if not math.isfinite(float(energy_per_atom)):
        return math.nan, "no energy"
    comp = structure.composition.element_composition
    missing = sorted({str(el) for el in comp.elements} - hull.elements)
    if missing:
        return math.nan, f"the proxy hull has no reference for {', '.join(missing)}"
    entry = PDEntry(comp, float(energy_per_atom) * comp.num_atoms)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, e = hull.diagram.get_decomp_and_e_above_hull(entry, allow_negative=True)
    except Exception as err:  # noqa: BLE001 - recorded per crystal
        return math.nan, f"hull decomposition failed: {type(err).__name__}: {err}"
    if e is None or not math.isfinite(float(e)):
        return math.nan, "hull decomposition failed"
    return float(e), None


# ------------------------------------------------------------------------------------------------
# Rates
# ------------------------------------------------------------------------------------------------
def sun_rates(
    unique: Sequence[bool],
    novel: Sequence[bool],
    e_hull: Sequence[float] | None = None,
    *,
    threshold: float = METASTABLE_THRESHOLD,
) -> dict:
    """The S.U.N. fractions, every one over all generated crystals (unreadable ones and those without an
    E_hull count as neither stable nor S.U.N.).

    ``stable`` is E_hull <= 0 (within :data:`STABLE_TOL`), ``metastable`` E_hull <= ``threshold``; S.U.N. is
    stable and unique and novel, S.U.N.(threshold) the same with the looser criterion. Without ``e_hull``
    only the unique, novel and unique-and-novel rates are given (the others are None).
    """
    n = len(unique)
    if len(novel) != n or (e_hull is not None and len(e_hull) != n):
        raise ValueError("sun_rates: unique, novel and e_hull must have one entry per generated crystal")
    u = np.asarray(unique, dtype=bool)
    v = np.asarray(novel, dtype=bool)

    def rate(mask):
        return float(mask.sum() / n) if n else math.nan

    out: dict[str, Any] = {
        "n": n,
        "unique": rate(u),
        "novel": rate(v),
        "unique_novel": rate(u & v),
        "stable": None,
        f"stable_{threshold:g}": None,
        "sun": None,
        f"sun_{threshold:g}": None,
        "n_with_e_hull": None,
        "stable_tol": STABLE_TOL,
        "metastable_threshold": threshold,
    }
    if e_hull is not None:
        e = np.asarray(e_hull, dtype=float)
        ok = np.isfinite(e)
        stable = ok & (np.where(ok, e, np.inf) <= STABLE_TOL)
        meta = ok & (np.where(ok, e, np.inf) <= threshold)
        out.update({
            "stable": rate(stable),
            f"stable_{threshold:g}": rate(meta),
            "sun": rate(stable & u & v),
            f"sun_{threshold:g}": rate(meta & u & v),
            "n_with_e_hull": int(ok.sum()),
        })  # fmt: skip
    return out


def read_crystals(
    path: str | os.PathLike, *, what: str, rows: Sequence[int] | None = None
) -> tuple[list[str], list, list[str | None]]:
    """(ids, structures or None, errors) of every crystal of a file or folder (srd.structures formats), or
    only of the row indices ``rows``.

    A file with no readable crystal at all is refused, naming the file and its first error."""
    from ..structures import read_structures

    ids, structures, errors = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in read_structures(Path(path), rows=rows):
            ids.append(r.id)
            structures.append(r.structure)
            errors.append(r.error)
    if not any(s is not None for s in structures):
        first = next((e for e in errors if e), "it holds no crystal")
        raise ValueError(f"{what} {path}: no readable crystal ({first})")
    return ids, structures, errors
