"""Reconstruction metrics (CDVAE's ``RecEval``): StructureMatcher match rate and RMS distance."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from ..utils import pool_worker_init, progress

__all__ = ["MATCHER_SETTINGS", "match_structures", "match_one", "evaluate_reconstruction"]

#: CDVAE's StructureMatcher settings.
MATCHER_SETTINGS = {"stol": 0.5, "angle_tol": 10, "ltol": 0.3}

_PAIRS: tuple[Sequence, Sequence] | None = None  # set before forking the worker pool


def match_one(pred: Structure | None, ref: Structure, matcher=None) -> float | None:
    """RMS distance (``get_rms_dist()[0]``) of ``pred`` to ``ref``, or None when they do not match.

    A missing prediction and any matcher exception count as no match (as in CDVAE).
    """
    if pred is None:
        return None
    if matcher is None:
        from pymatgen.analysis.structure_matcher import StructureMatcher

        matcher = StructureMatcher(**MATCHER_SETTINGS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rms = matcher.get_rms_dist(pred, ref)
    except Exception:  # noqa: BLE001 - CDVAE: an exception is a miss
        return None
    if rms is None:
        return None
    value = float(rms[0])
    return value if math.isfinite(value) else None


def _match_index(i: int) -> float | None:
    preds, refs = _PAIRS  # type: ignore[misc]
    return match_one(preds[i], refs[i])


def match_structures(
    preds: Sequence[Structure | None],
    refs: Sequence[Structure],
    workers: int = 1,
    *,
    show_progress: bool = False,
) -> dict:
    """Match every prediction to its reference with StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3).

    Args:
        preds: the predicted crystals, aligned with ``refs``; None = no prediction (a miss).
        refs: the reference crystals.
        workers: processes for matching (a 'fork' pool when > 1).

    Returns:
        {"match_rate": percent of refs matched, "rmse": mean RMS distance over the matched ones (None when
        nothing matched), "n": len(refs), "n_matched", "per_crystal": [{"matched": bool, "rms": float|None}]}.
    """
    global _PAIRS
    if len(preds) != len(refs):
        raise ValueError(
            f"match_structures: {len(preds)} predictions for {len(refs)} references (must be aligned)"
        )
    for i, r in enumerate(refs):
        if not isinstance(r, Structure):
            raise ValueError(
                f"match_structures: reference {i} is {type(r).__name__}, expected a pymatgen Structure"
            )
    n = len(refs)
    bar = progress(total=n, desc="match", unit="crystal", disable=not show_progress)
    rms: list[float | None] = []
    try:
        if workers <= 1 or n <= 1:
            from pymatgen.analysis.structure_matcher import StructureMatcher

            matcher = StructureMatcher(**MATCHER_SETTINGS)
            for p, r in zip(preds, refs):
                rms.append(match_one(p, r, matcher))
                bar.update(1)
        else:
            import multiprocessing as mp

            _PAIRS = (list(preds), list(refs))
            try:
                with mp.get_context("fork").Pool(workers, initializer=pool_worker_init) as pool:
                    for v in pool.imap(
                        _match_index, range(n), chunksize=max(1, min(32, n // (workers * 8) or 1))
                    ):
                        rms.append(v)
                        bar.update(1)
            finally:
                _PAIRS = None
    finally:
        bar.close()
    matched = [v for v in rms if v is not None]
    return {
        "match_rate": 100.0 * len(matched) / n if n else 0.0,
        "rmse": float(np.mean(matched)) if matched else None,
        "n": n,
        "n_matched": len(matched),
        "per_crystal": [{"matched": v is not None, "rms": v} for v in rms],
    }


def _reference_table(reference) -> dict[str, tuple[str, str]]:
    """{id: (cif text, where)} of a CDVAE-format CSV(.gz); ids = material_id, else the row number."""
    from ..structures import read_csv_table

    df = read_csv_table(reference)
    has_id = "material_id" in df.columns
    ids = df["material_id"].astype(str).tolist() if has_id else [str(i) for i in range(len(df))]
    cifs = df["cif"].tolist()
    table: dict[str, tuple[str, str]] = {}
    for row, (rid, cif) in enumerate(zip(ids, cifs)):
        if rid in table:
            raise ValueError(
                f"{reference}: id {rid!r} appears more than once (rows {table[rid][1]} and {row})"
            )
        table[rid] = (cif, f"{Path(reference).name} row {row}")
    return table


def evaluate_reconstruction(out_dir, reference, *, workers: int = 1, show_progress: bool = False) -> dict:
    """Score a srd-reconstruct output folder (``cifs/*.cif`` + ``results.csv``) against a reference CSV.

    Every id of results.csv (or, without it, every ``cifs/*.cif``, id = file stem) is matched to the
    reference crystal with the same id (``material_id`` column, else the row number). The CIF of an id is
    results.csv's ``file`` column (srd-reconstruct's id -> file mapping); results.csv files written before
    that column existed map ids with :func:`srd.structures.cif_file_names`, as srd-reconstruct did. A
    missing or unreadable CIF is a miss.

    Returns :func:`match_structures`'s dict (per_crystal entries gain "id" and "pred_valid") plus
    "cdvae_protocol": the match rate when, as in CDVAE's ``RecEval``, a prediction that is not valid
    (SMACT composition or structure validity) also counts as a miss.
    """
    import pandas as pd

    from ..structures import StructureReadError, canonicalize, cif_file_names, parse_cif
    from .validity import composition_validity, structure_validity

    out_dir = Path(out_dir)
    cif_dir = out_dir / "cifs"
    if not out_dir.is_dir():
        raise FileNotFoundError(f"no such folder: {out_dir}")
    results = out_dir / "results.csv"
    if results.is_file():
        df = pd.read_csv(results, dtype={"id": str})
        if "id" not in df.columns:
            raise ValueError(f"{results}: expected an 'id' column, found {list(df.columns)}")
        ids = df["id"].astype(str).tolist()
        if "file" in df.columns:
            files = [out_dir / str(f) if isinstance(f, str) and f else None for f in df["file"].tolist()]
        else:
            files = [cif_dir / name for name in cif_file_names(ids)]
        id_source = str(results)
    elif cif_dir.is_dir():
        paths = sorted(cif_dir.glob("*.cif"))
        ids = [f.stem for f in paths]
        files = list(paths)
        id_source = f"{cif_dir}/*.cif (no results.csv)"
    else:
        raise ValueError(f"{out_dir}: expected results.csv and/or a cifs/ folder written by srd-reconstruct")
    if not ids:
        raise ValueError(f"{id_source}: no crystals to evaluate")
    table = _reference_table(reference)
    missing = [i for i in ids if i not in table]
    if missing:
        raise ValueError(
            f"{len(missing)} id(s) of {id_source} are not in the reference {reference} (ids = material_id column, "
            f"else the row number); first: {missing[:5]}"
        )
    preds: list[Structure | None] = []
    refs: list[Structure] = []
    pred_errors: list[str | None] = []
    valid: list[bool] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rid, f in zip(
            progress(ids, desc="read", unit="crystal", disable=not show_progress), files, strict=True
        ):
            cif, where = table[rid]
            try:
                refs.append(canonicalize(parse_cif(cif, where=where), niggli=True))
            except StructureReadError as err:
                raise ValueError(f"reference crystal {rid!r} cannot be read: {err}") from None
            pred = None
            err_msg = None
            if f is None:
                err_msg = "no CIF (not reconstructed)"
            elif not f.is_file():
                err_msg = f"missing {f}"
            else:
                try:
                    pred = canonicalize(parse_cif(f.read_text(errors="replace"), where=f.name), niggli=False)
                except StructureReadError as err:
                    err_msg = str(err)
            preds.append(pred)
            pred_errors.append(err_msg)
            valid.append(
                pred is not None
                and pred.volume >= 0.1
                and composition_validity(pred.atomic_numbers)
                and structure_validity(pred)
            )
    res = match_structures(preds, refs, workers=workers, show_progress=show_progress)
    for k, pc in enumerate(res["per_crystal"]):
        pc["id"] = ids[k]
        pc["pred_valid"] = bool(valid[k])
        if pred_errors[k]:
            pc["error"] = pred_errors[k]
    cdvae = [pc["rms"] for pc in res["per_crystal"] if pc["matched"] and pc["pred_valid"]]
    res["cdvae_protocol"] = {
        "description": "CDVAE RecEval: predictions that fail SMACT composition or structure validity count as misses",
        "match_rate": 100.0 * len(cdvae) / len(ids),
        "rmse": float(np.mean(cdvae)) if cdvae else None,
        "n_matched": len(cdvae),
    }
    res["n_predictions_missing_or_unreadable"] = sum(p is None for p in preds)
    res["n_predictions_valid"] = int(sum(valid))
    res["ids_from"] = id_source
    res["matcher"] = dict(MATCHER_SETTINGS)
    return res
