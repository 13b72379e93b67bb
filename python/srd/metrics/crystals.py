"""Per-crystal evaluation (CDVAE's ``Crystal`` class): validity, density, element count, fingerprints.

Every crystal goes through :func:`evaluate_one`, in parallel worker processes (a 'fork' pool) when
``workers > 1``; the results of a whole file are a :class:`CrystalSet` of plain arrays, which is what
is cached on disk for reference files.

How crystals are built, as CDVAE's ``compute_metrics.py`` builds them:

* generated crystals: ``Structure(Lattice.from_parameters(lengths, angles), types, frac_coords)``: the
  lattice is rebuilt from its parameters, nothing is reduced (:func:`srd.structures.canonicalize` with
  ``niggli=False``);
* reference (test) crystals: CDVAE's evaluator reads them back from the processed dataset, i.e. after
  ``build_crystal(cif, niggli=True, primitive=False)``: Niggli-reduced, lattice rebuilt from its
  parameters (``canonicalize(niggli=True)``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from ..structures import Record, canonicalize, read_raw_items, record_from_raw_item
from ..utils import atomic_torch_save, cache_root, pool_worker_init, progress, safe_torch_load, sha256_file
from .fingerprints import (
    COMP_FP_DIM,
    STRUCT_FP_DIM,
    FingerprintError,
    StructureFingerprinter,
    composition_fingerprint,
    fingerprint_settings,
)
from .validity import composition_validity, structure_validity

__all__ = [
    "CrystalSet",
    "evaluate_one",
    "evaluate_items",
    "evaluate_structures",
    "evaluate_file",
    "metrics_cache_dir",
]

#: Bump when the meaning of a cached CrystalSet changes.
CRYSTALSET_VERSION = 1


@dataclass
class CrystalSet:
    """Per-crystal results of one input, as arrays (index i = i-th input crystal, in input order).

    ``readable`` is False for a crystal that could not be read or built (``errors`` says why); such a
    crystal counts as invalid and unfingerprinted. ``fp_ok`` is False where the fingerprints could not be
    computed (``fp_errors`` says why). Structures are kept compactly (lattice, numbers, frac coords).
    """

    ids: list[str]
    readable: np.ndarray  # [M] bool
    errors: list[str]  # "" when readable
    comp_valid: np.ndarray  # [M] bool
    struct_valid: np.ndarray  # [M] bool
    valid: np.ndarray  # [M] bool: comp & struct & fingerprinted (CDVAE's Crystal.valid)
    density: np.ndarray  # [M] g/cm^3, NaN when unreadable
    n_elements: np.ndarray  # [M] int, 0 when unreadable
    fp_ok: np.ndarray  # [M] bool
    fp_errors: list[str]
    struct_fp: np.ndarray  # [M, 61], NaN rows where not fp_ok
    comp_fp: np.ndarray  # [M, 132] (may hold NaN where Magpie lacks data)
    lattices: np.ndarray  # [M, 3, 3]
    numbers: np.ndarray  # [sum n] int64
    frac: np.ndarray  # [sum n, 3]
    ptr: np.ndarray  # [M + 1]
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def structure(self, i: int) -> Structure | None:
        """The (canonicalised) structure of crystal i, or None when it was not readable."""
        if not self.readable[i]:
            return None
        a, b = int(self.ptr[i]), int(self.ptr[i + 1])
        return Structure(
            Lattice(self.lattices[i]), self.numbers[a:b].tolist(), self.frac[a:b], coords_are_cartesian=False
        )

    def failures(self) -> list[dict]:
        """Crystals that could not be read or fingerprinted: [{"id", "stage", "error"}]."""
        out = []
        for i, rid in enumerate(self.ids):
            if not self.readable[i]:
                out.append({"id": rid, "stage": "read", "error": self.errors[i]})
            elif not self.fp_ok[i]:
                out.append({"id": rid, "stage": "fingerprint", "error": self.fp_errors[i]})
        return out

    # ---- (de)serialisation: tensors, lists of strings and a JSON string only (weights_only loading) ----
    def to_dict(self) -> dict:
        return {
            "version": CRYSTALSET_VERSION,
            "ids": list(self.ids),
            "errors": list(self.errors),
            "fp_errors": list(self.fp_errors),
            "source": json.dumps(self.source, default=str),
            **{
                k: torch.from_numpy(np.ascontiguousarray(getattr(self, k)))
                for k in ("readable", "comp_valid", "struct_valid", "valid", "density", "n_elements", "fp_ok",
                          "struct_fp", "comp_fp", "lattices", "numbers", "frac", "ptr")
            },
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "crystal set") -> CrystalSet:
        if not isinstance(d, dict) or d.get("version") != CRYSTALSET_VERSION:
            raise ValueError(f"{where}: not a srd crystal-set file of version {CRYSTALSET_VERSION}")
        arr = {k: v.numpy() for k, v in d.items() if isinstance(v, torch.Tensor)}
        return cls(
            ids=list(d["ids"]), errors=list(d["errors"]), fp_errors=list(d["fp_errors"]),
            source=json.loads(d["source"]), **arr,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# One crystal
# ------------------------------------------------------------------------------------------------
_FINGERPRINTER: StructureFingerprinter | None = None
_FP_OPTIONS: dict = {}


def _fingerprinter(exact: bool, max_sphere_sites: int) -> StructureFingerprinter:
    global _FINGERPRINTER, _FP_OPTIONS
    opts = {"exact": exact, "max_sphere_sites": max_sphere_sites}
    if _FINGERPRINTER is None or _FP_OPTIONS != opts:
        _FINGERPRINTER = StructureFingerprinter(**opts)
        _FP_OPTIONS = opts
    return _FINGERPRINTER


def _finite(s: Structure) -> bool:
    return bool(np.isfinite(s.lattice.matrix).all() and np.isfinite(s.frac_coords).all())


def evaluate_one(record: Record, *, reference: bool, fingerprints: bool = True, exact: bool = False,
                 max_sphere_sites: int = 20000) -> dict:  # fmt: skip
    """Evaluate one crystal like CDVAE's ``Crystal``: a dict of plain values (see :class:`CrystalSet`).

    ``reference=True`` Niggli-reduces the crystal first (CDVAE's processed test set); a generated crystal
    only has its lattice rebuilt from its parameters.
    """
    out = {
        "id": record.id, "readable": False, "error": record.error or "", "comp_valid": False, "struct_valid": False,
        "valid": False, "density": math.nan, "n_elements": 0, "fp_ok": False, "fp_error": "",
        "struct_fp": None, "comp_fp": None, "lattice": np.zeros((3, 3)), "numbers": np.zeros(0, dtype=np.int64),
        "frac": np.zeros((0, 3)),
    }  # fmt: skip
    if record.structure is None:
        out["error"] = out["error"] or "unreadable"
        return out
    if not _finite(record.structure):
        out["error"] = f"{record.id}: non-finite lattice or coordinates"
        return out
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = canonicalize(record.structure, niggli=reference)
    except Exception as err:  # noqa: BLE001 - e.g. a Niggli reduction failing on a degenerate cell
        out["error"] = f"{record.id}: cannot build the crystal ({type(err).__name__}: {str(err)[:200]})"
        return out
    if not _finite(s):
        out["error"] = f"{record.id}: cannot build the crystal (non-finite lattice or coordinates)"
        return out
    out.update(readable=True, error="", lattice=np.asarray(s.lattice.matrix, dtype=float),
               numbers=np.asarray(s.atomic_numbers, dtype=np.int64), frac=np.asarray(s.frac_coords, dtype=float))  # fmt: skip
    # CDVAE: a lattice of volume < 0.1 A^3 is "not constructed" and so structurally invalid.
    constructed = bool(math.isfinite(s.volume) and s.volume >= 0.1)
    out["comp_valid"] = bool(composition_validity(s.atomic_numbers))
    out["struct_valid"] = bool(constructed and structure_validity(s))
    out["n_elements"] = len(set(s.species))
    out["density"] = float(s.density) if s.volume > 0 else math.nan
    if fingerprints:
        try:
            comp_fp = composition_fingerprint(s.atomic_numbers)
            struct_fp = _fingerprinter(exact, max_sphere_sites)(s)
            out.update(fp_ok=True, struct_fp=struct_fp, comp_fp=comp_fp)
        except FingerprintError as err:
            out["fp_error"] = str(err)
        except Exception as err:  # noqa: BLE001 - CDVAE: any failure -> no fingerprint, crystal invalid
            out["fp_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    out["valid"] = bool(out["comp_valid"] and out["struct_valid"] and (out["fp_ok"] or not fingerprints))
    return out


def _warm_up(exact: bool, max_sphere_sites: int) -> None:
    """Load matminer, SMACT and their data tables once in this process, before worker processes are
    forked from it (each worker would otherwise spend seconds importing and loading them)."""
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    composition_validity(nacl.atomic_numbers)
    composition_fingerprint(nacl.atomic_numbers)
    _fingerprinter(exact, max_sphere_sites)(nacl)


def _evaluate_item(args) -> dict:
    item, kwargs = args
    rec = item if isinstance(item, Record) else record_from_raw_item(item)
    return evaluate_one(rec, **kwargs)


def _collect(rows: list[dict], source: dict) -> CrystalSet:
    m = len(rows)
    struct_fp = np.full((m, STRUCT_FP_DIM), np.nan)
    comp_fp = np.full((m, COMP_FP_DIM), np.nan)
    for i, r in enumerate(rows):
        if r["fp_ok"]:
            struct_fp[i] = r["struct_fp"]
            comp_fp[i] = r["comp_fp"]
    counts = [len(r["numbers"]) for r in rows]
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return CrystalSet(
        ids=[str(r["id"]) for r in rows],
        readable=np.array([r["readable"] for r in rows], dtype=bool),
        errors=[r["error"] for r in rows],
        comp_valid=np.array([r["comp_valid"] for r in rows], dtype=bool),
        struct_valid=np.array([r["struct_valid"] for r in rows], dtype=bool),
        valid=np.array([r["valid"] for r in rows], dtype=bool),
        density=np.array([r["density"] for r in rows], dtype=float),
        n_elements=np.array([r["n_elements"] for r in rows], dtype=np.int64),
        fp_ok=np.array([r["fp_ok"] for r in rows], dtype=bool),
        fp_errors=[r["fp_error"] for r in rows],
        struct_fp=struct_fp,
        comp_fp=comp_fp,
        lattices=np.stack([r["lattice"] for r in rows]) if rows else np.zeros((0, 3, 3)),
        numbers=np.concatenate([r["numbers"] for r in rows]) if rows else np.zeros(0, dtype=np.int64),
        frac=np.concatenate([r["frac"] for r in rows]) if rows else np.zeros((0, 3)),
        ptr=ptr,
        source=source,
    )


def evaluate_items(items: Sequence, *, reference: bool, workers: int = 1, fingerprints: bool = True,
                   exact: bool = False, max_sphere_sites: int = 20000, desc: str = "evaluate",
                   show_progress: bool = True, source: dict | None = None) -> CrystalSet:  # fmt: skip
    """Evaluate Records or raw items of :func:`srd.structures.read_raw_items` (parsed in the workers)."""
    kwargs = {
        "reference": reference,
        "fingerprints": fingerprints,
        "exact": exact,
        "max_sphere_sites": max_sphere_sites,
    }
    tasks = [(it, kwargs) for it in items]
    if fingerprints:
        _warm_up(exact, max_sphere_sites)
    bar = progress(total=len(tasks), desc=desc, unit="crystal", disable=not show_progress)
    rows: list[dict] = []
    try:
        if workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                rows.append(_evaluate_item(t))
                bar.update(1)
        else:
            import multiprocessing as mp

            chunk = max(1, min(16, len(tasks) // (workers * 8) or 1))
            with mp.get_context("fork").Pool(workers, initializer=pool_worker_init) as pool:
                for r in pool.imap(_evaluate_item, tasks, chunksize=chunk):
                    rows.append(r)
                    bar.update(1)
    finally:
        bar.close()
    return _collect(rows, source or {})


def evaluate_structures(structures: Sequence[Structure | None], *, reference: bool = False, ids: Sequence[str] | None = None,
                        **kwargs) -> CrystalSet:  # fmt: skip
    """Evaluate in-memory structures (None = a crystal that could not be produced)."""
    ids = [str(i) for i in range(len(structures))] if ids is None else [str(i) for i in ids]
    if len(ids) != len(structures):
        raise ValueError(f"evaluate_structures: {len(ids)} ids for {len(structures)} structures")
    recs = [Record(i, s, None if s is not None else "no structure") for i, s in zip(ids, structures)]
    return evaluate_items(recs, reference=reference, **kwargs)


# ------------------------------------------------------------------------------------------------
# Files, with an on-disk cache
# ------------------------------------------------------------------------------------------------
def metrics_cache_dir() -> Path:
    """Where evaluated reference sets are cached: $SRD_CACHE_DIR/fingerprints, else ~/.cache/srd/fingerprints."""
    return cache_root("fingerprints")


def evaluate_file(path: str | os.PathLike, *, reference: bool, workers: int = 1, use_cache: bool = True,
                  exact: bool = False, max_sphere_sites: int = 20000, show_progress: bool = True,
                  limit: int | None = None, items: Sequence | None = None) -> CrystalSet:  # fmt: skip
    """Evaluate every crystal of a file or folder (any kind :func:`srd.structures.read_structures` reads).

    With ``use_cache`` the result is cached under :func:`metrics_cache_dir`, keyed by the sha256 of the
    file bytes, the fingerprint settings, the reference/generated canonicalisation and ``limit``.
    ``items``: the crystals of ``path`` already read with :func:`srd.structures.read_raw_items` (so that a
    malformed input is refused before anything else is computed); read here when None.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    settings = {
        "fingerprints": fingerprint_settings(exact, max_sphere_sites),
        "smact": _smact_version(),
        "reference": reference,
        "limit": limit,
        "crystalset": CRYSTALSET_VERSION,
    }
    digest = sha256_file(path)
    key = hashlib.sha256((digest + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:32]
    cached = metrics_cache_dir() / f"{key}.pt"
    if use_cache and cached.is_file():
        try:
            cs = CrystalSet.from_dict(safe_torch_load(cached, what="fingerprint cache"), where=str(cached))
            cs.source["cache"] = str(cached)
            cs.source["cache_hit"] = True
            return cs
        except (ValueError, KeyError, TypeError):
            pass  # a stale or damaged cache entry is recomputed
    items = read_raw_items(path, limit=limit) if items is None else list(items)
    if not items:
        raise ValueError(f"{path}: no crystals found")
    source = {"path": str(path), "sha256": digest, "settings": settings, "cache_hit": False}
    cs = evaluate_items(items, reference=reference, workers=workers, exact=exact, max_sphere_sites=max_sphere_sites,
                        desc="reference" if reference else "generated", show_progress=show_progress, source=source)  # fmt: skip
    if use_cache:
        try:
            atomic_torch_save(cs.to_dict(), cached)
            cs.source["cache"] = str(cached)
        except OSError:
            pass  # a read-only cache is not an error
    return cs


def _smact_version() -> str:
    from .validity import smact_version

    return smact_version()
