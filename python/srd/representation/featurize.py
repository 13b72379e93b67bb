"""Featurising a file or folder of crystals: parsing in worker processes, encoding, the cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..descriptor import EADParams
from ..structures import (
    MAX_SITES,
    Record,
    read_structures,
)
from ..utils import cache_root, pool_worker_init, progress, sha256_file
from .encode import encode_structures, prepare_structure
from .features import FEATURE_VERSION, Features
from .layout import DATASET_N_MAX, Layout
from .scaling import ScalingStats


def dataset_from_path(path: str | os.PathLike) -> str | None:
    """Guess the benchmark (perov_5, carbon_24, mp_20) from a path like data/perov_5/test.csv.gz."""
    parts = [p.lower() for p in Path(path).parts]
    for name in DATASET_N_MAX:
        if any(p == name or p.startswith(name + "_") or p.startswith(name + ".") for p in parts):
            return name
    return None


def cache_dir() -> Path:
    """Where featurised inputs are cached: $SRD_CACHE_DIR/features, else ~/.cache/srd/features."""
    return cache_root("features")


def _cache_key(
    path: Path, *, n_max: int, params: EADParams, niggli: bool, stats: ScalingStats | None, limit
) -> str:
    h = hashlib.sha256()
    h.update(sha256_file(path).encode())
    h.update(json.dumps(params.to_dict(), default=str).encode())
    h.update(f"n_max={n_max};niggli={niggli};limit={limit};v={FEATURE_VERSION}".encode())
    if stats is not None:
        h.update(stats.lo.numpy().tobytes())
        h.update(stats.hi.numpy().tobytes())
    return h.hexdigest()[:32]


def _prepare_one(args):
    rec, n_max, niggli = args
    if rec.structure is None:
        return rec
    try:
        return Record(rec.id, prepare_structure(rec.structure, n_max=n_max, niggli=niggli, where=f"{rec.id}"))
    except ValueError as err:
        return Record(rec.id, None, str(err))
    except Exception as err:  # noqa: BLE001 - e.g. a Niggli reduction that fails on a degenerate cell
        return Record(rec.id, None, f"{rec.id}: cannot canonicalise ({type(err).__name__}: {err})")


def _read_and_prepare(
    path: Path, *, n_max: int, niggli: bool, limit: int | None, workers: int, show_progress: bool
):
    """Parse and canonicalise every crystal (in parallel worker processes when workers > 1)."""
    records = list(read_structures(path, limit=limit)) if workers <= 1 else None
    if records is not None:
        it = (_prepare_one((r, n_max, niggli)) for r in records)
        return list(progress(it, total=len(records), desc="parse", unit="crystal", disable=not show_progress))
    import multiprocessing as mp

    from ..structures import read_raw_items

    items = read_raw_items(path, limit=limit)
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=pool_worker_init) as pool:
        it = pool.imap(_parse_and_prepare_item, [(it_, n_max, niggli) for it_ in items], chunksize=32)
        return list(progress(it, total=len(items), desc="parse", unit="crystal", disable=not show_progress))


def _parse_and_prepare_item(args):
    from ..structures import record_from_raw_item

    item, n_max, niggli = args
    return _prepare_one((record_from_raw_item(item), n_max, niggli))


def featurize(
    path: str | os.PathLike,
    *,
    n_max: int | None = None,
    dataset: str | None = None,
    stats: ScalingStats | None = None,
    params: EADParams | None = None,
    niggli: bool = True,
    limit: int | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
) -> Features:
    """Featurise every crystal of ``path`` (see :func:`srd.structures.read_structures` for the kinds).

    Args:
        n_max: largest atom count (the size entry is n / n_max); default: from ``dataset``, else the
            input's largest crystal.
        dataset: perov_5, carbon_24 or mp_20 (sets n_max); guessed from the path when not given.
        stats: scaling statistics to apply (e.g. those of the training split); default: fitted here.
        limit: only the first ``limit`` crystals.
        workers: processes for CIF parsing (default: all cores).
        use_cache: reuse a cached result for the same input bytes, grid, n_max, stats and limit.

    Crystals that fail to parse, have an element beyond Z = 96 or more than n_max atoms are skipped and
    listed in ``Features.skipped`` as (id, reason).
    """
    path = Path(path)
    params = params or EADParams()
    dataset = dataset or dataset_from_path(path)
    inferred = False
    if n_max is None and dataset is not None:
        if dataset not in DATASET_N_MAX:
            raise ValueError(f"featurize: unknown dataset {dataset!r}; known: {sorted(DATASET_N_MAX)}")
        n_max = DATASET_N_MAX[dataset]
    elif n_max is None:
        # Neither given: the input's own largest crystal (fine for a training split; pass the training
        # split's n_max for other splits so that the size entries agree).
        inferred = True
    if n_max is not None and n_max < 1:
        raise ValueError(f"featurize: n_max must be >= 1, got {n_max}")
    key = _cache_key(
        path,
        n_max=n_max if not inferred else "inferred",
        params=params,
        niggli=niggli,
        stats=stats,
        limit=limit,
    )
    cached = cache_dir() / f"{key}.pt"
    if use_cache and cached.is_file():
        try:
            feats = Features.load(cached)
            feats.source["cache"] = str(cached)
            return feats
        except ValueError:
            pass  # a stale or damaged cache entry is recomputed
    workers = workers if workers is not None else (os.cpu_count() or 1)
    records = _read_and_prepare(
        path,
        n_max=MAX_SITES if inferred else n_max,
        niggli=niggli,
        limit=limit,
        workers=workers,
        show_progress=show_progress,
    )
    good = [r for r in records if r.structure is not None]
    if inferred and good:
        n_max = max(len(r.structure) for r in good)
    skipped = [(r.id, r.error or "unknown error") for r in records if r.structure is None]
    if not good:
        raise ValueError(
            f"featurize: no usable crystal in {path} ({len(skipped)} skipped; first: {skipped[:1]})"
        )
    raw = encode_structures(
        [r.structure for r in good],
        n_max=n_max,
        params=params,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    layout = Layout(params.n_features)
    # A crystal whose representation is not finite is skipped (named), never passed on.
    finite = torch.isfinite(raw).all(dim=1)
    if not bool(finite.all()):
        for k in torch.nonzero(~finite).flatten().tolist():
            skipped.append((good[k].id, f"{good[k].id}: non-finite values in its representation R"))
        good = [r for r, ok in zip(good, finite.tolist()) if ok]
        raw = raw[finite]
        if not good:
            raise ValueError(f"featurize: no usable crystal in {path} (every representation is non-finite)")
    fitted = stats is None
    stats = stats if stats is not None else ScalingStats.fit(raw, layout)
    feats = Features(
        R=stats.scale(raw).float(),
        ids=[r.id for r in good],
        stats=stats,
        n_max=n_max,
        params=params,
        dataset=dataset,
        skipped=skipped,
        source={
            "path": str(path),
            "n_input": len(records),
            "n_ok": len(good),
            "n_skipped": len(skipped),
            "stats": "fitted on this input" if fitted else "given",
            "niggli": niggli,
            "limit": limit,
            "n_max": "the largest crystal of this input" if inferred else "given",
        },
    )
    if use_cache:
        try:
            feats.save(cached)
        except OSError:
            pass  # a read-only cache is not an error
    return feats
