"""A resumable reconstruction job that writes an output folder (used by srd-reconstruct and srd-sample).

Layout of OUT:
    cifs/<file>.cif     one per reconstructed crystal; <file> is the id made safe and unique
                        (srd.structures.cif_file_names; results.csv's ``file`` column holds the mapping)
    parts/rank<r>.csv   rows finished by process r (torchrun shards crystals across ranks)
    results.csv         all rows, in input order (merged by rank 0 at the end)
    eval_recon.pt       CDVAE's layout (frac_coords, atom_types, lengths, angles, num_atoms; num_evals = 1);
                        ``eval_gen.pt`` instead when the job reconstructs generated samples
    summary.json        resolved config, package version, counts, timings, match rate / RMSE (ground truth)
    config.json         what a rerun must agree with to resume
    sample.json         only for a seeded random sample of the input (srd-reconstruct --sample N
                        --sample-seed S): N, S, the input's size, the sampled row indices and their ids

Every file is written atomically, after every batch; rerunning with the same OUT skips finished crystals,
so an interrupt loses at most the batch in flight.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Structure

from ..descriptor import EADParams
from ..representation import (
    DATASET_N_MAX,
    Decoded,
    Features,
    Rejected,
    dataset_from_path,
    decode,
    decoded_from_structures,
    prepare_structure,
)
from ..structures import cif_file_names, count_structures, read_structures, save_cdvae_pt, write_cif
from ..utils import (
    atomic_write_text,
    check_output_dir,
    progress,
    read_json,
    resolve_device,
    run_metadata,
    write_json,
)
from .algorithm import reconstruct
from .config import ReconstructConfig

__all__ = [
    "ReconItem",
    "run_job",
    "reconstruct_input",
    "summary_line",
    "sample_rows",
    "FIELDS",
    "SAMPLE_METHOD",
]

#: How srd draws a seeded random sample of an input's rows (recorded in sample.json).
SAMPLE_METHOD = (
    "numpy.random.default_rng(seed).choice(population, size=n, replace=False): uniform, without "
    "replacement, over the 0-based row indices of the input; sorted into input (file) order"
)

FIELDS = [
    "id",
    "file",
    "status",
    "formula",
    "n_atoms",
    "loss",
    "trial",
    "evaluations",
    "seconds",
    "matched",
    "rms",
    "valid_cdvae",
    "spacegroup",
    "reason",
]


def _space_group(structure) -> str:
    """The space group symbol spglib finds at symprec 0.1 A (CDVAE's and DiffCSP's habit), '' if it fails."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(structure, symprec=0.1)
        return f"{sga.get_space_group_symbol()} ({sga.get_space_group_number()})"
    except Exception:  # noqa: BLE001 - spglib fails on degenerate cells; the column is informative only
        return ""


@dataclass
class ReconItem:
    """One crystal to reconstruct: its target (None when R did not decode, with the reason) and, for the
    Table 1 protocol, the ground-truth structure. ``scored`` marks items of a ground-truth input: they count
    in the match rate even when their truth could not be read (as misses)."""

    id: str
    target: Decoded | None
    reason: str | None = None
    truth: Structure | None = None
    scored: bool = False

    def __post_init__(self) -> None:
        self.scored = self.scored or self.truth is not None  # a crystal with a truth is always scored


def _dist():
    """(rank, world size) under torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: Sequence[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def sample_rows(population: int, n: int, seed: int) -> list[int]:
    """A seeded uniform random sample of ``n`` of the row indices 0 .. population-1, without replacement,
    in increasing (file) order (see SAMPLE_METHOD)."""
    if n < 1:
        raise ValueError(f"sample size: expected a positive integer, found {n}")
    if seed < 0:
        raise ValueError(f"sample seed: expected an integer >= 0, found {seed}")
    if n > population:
        raise ValueError(f"a sample of {n} crystals asked for, but the input holds only {population}")
    picked = np.random.default_rng(seed).choice(population, size=n, replace=False)
    return sorted(int(k) for k in picked)


def _check_config(out: Path, resolved: dict, rank: int, world: int) -> None:
    cfg_path = out / "config.json"
    if cfg_path.is_file():
        old = read_json(cfg_path)
        if old.get("algorithm") != resolved["algorithm"] or old.get("input") != resolved["input"]:
            old_in, new_in = old.get("input") or {}, resolved["input"]
            differ = sorted(k for k in set(old_in) | set(new_in) if old_in.get(k) != new_in.get(k))
            what = f"; input settings that differ: {', '.join(differ)}" if differ else ""
            raise ValueError(
                f"{out} holds a run with a different configuration or input (see {cfg_path}{what}); "
                "use another output folder, or the same settings to resume it"
            )
    elif rank == 0:
        write_json(cfg_path, resolved)
    _barrier(world)


def _check_sample(out: Path, sample: dict, rank: int, world: int) -> None:
    """sample.json: written by the first run; a rerun (resume) must draw exactly the same rows and ids."""
    path = out / "sample.json"
    if path.is_file():
        old = read_json(path)
        if old.get("rows") != sample["rows"] or old.get("ids") != sample["ids"]:
            raise ValueError(
                f"{out} holds a run on a different sample of the input (see {path}: "
                f"{old.get('n')} rows, seed {old.get('seed')}); use another output folder"
            )
    elif rank == 0:
        write_json(path, sample)
    _barrier(world)


def run_job(
    items: Sequence[ReconItem],
    out: str | os.PathLike,
    *,
    config: ReconstructConfig,
    params: EADParams,
    input_desc: dict,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    gen_mode: bool = False,
    show_progress: bool = True,
    extra_summary: dict | None = None,
    sample: dict | None = None,
    templates=None,
) -> dict:
    """Reconstruct every item with a target, write OUT, and return the summary (rank 0) or {} (other ranks).

    ``sample`` (the items are a seeded random sample of the input: n, seed, population, method, rows, ids) is
    written to OUT/sample.json and summary.json; a rerun into OUT must have the same sample.

    ``templates`` (a :class:`~srd.reconstruction.templates.TemplateLibrary`): the training crystals that
    ``config.template_trials`` start from; its files and their sha256 are part of the run's settings."""
    out = Path(out)
    rank, world = _dist()
    (out / "cifs").mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = [k for k, v in Counter(ids).items() if v > 1][:3]
        raise ValueError(f"crystal ids must be unique (they name the CIF files); repeated: {dup}")
    files = dict(zip(ids, cif_file_names(ids)))
    resolved = {
        "algorithm": config.to_dict(),
        "params": params.to_dict(),
        "input": input_desc,
        "batch_size": batch_size,
        **({"templates": templates.provenance()} if templates is not None else {}),
        "device": str(device),
        "world_size": world,
        **run_metadata(),
    }
    _check_config(out, resolved, rank, world)
    if sample is not None:
        _check_sample(out, sample, rank, world)
        extra_summary = {**(extra_summary or {}), "sample": sample}

    done: set[str] = {r["id"] for r in _read_rows(out / "results.csv")}
    for part in sorted((out / "parts").glob("rank*.csv")):
        done |= {r["id"] for r in _read_rows(part)}
    my_part = out / "parts" / f"rank{rank}.csv"
    my_rows = _read_rows(my_part)
    todo = [
        it for k, it in enumerate(items) if k % world == rank and it.id not in done and it.target is not None
    ]
    # Similar sizes in a batch keep the replica batches regular; results do not depend on batching.
    todo.sort(key=lambda it: (it.target.n_atoms, ids.index(it.id)))
    if rank == 0 and show_progress:
        n_skip = sum(it.id in done for it in items)
        print(
            f"srd-reconstruct: {len(items)} crystals, {n_skip} already finished, {len(todo)} to do on this rank "
            f"({world} rank{'s' if world > 1 else ''}); {config.evaluations_per_crystal} descriptor evaluations "
            f"per crystal at most",
            flush=True,
        )

    if config.template_trials > 0 and templates is None and rank == 0:
        print(
            f"srd-reconstruct: warning: the budget has {config.template_trials} template trials but no "
            "template library was given (--templates TRAIN.csv); they start uniformly at random",
            file=sys.stderr,
            flush=True,
        )
    from ..metrics.recon import match_one
    from ..metrics.validity import composition_validity, structure_validity

    steps_per_batch = config.hops * config.steps + config.polish_steps
    n_batches = math.ceil(len(todo) / batch_size) if todo else 0
    bar = progress(
        total=n_batches * steps_per_batch,
        desc=f"reconstruct (rank {rank})",
        unit="step",
        disable=not show_progress,
    )
    t_start = time.perf_counter()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        results = reconstruct(
            [it.target for it in batch],
            [it.id for it in batch],
            config=config,
            params=params,
            device=device,
            progress=bar.update,
            templates=templates,
        )
        for it, res in zip(batch, results):
            write_cif(out / "cifs" / files[it.id], res.structure)
            rms = match_one(res.structure, it.truth) if it.truth is not None else None
            valid = composition_validity(res.structure) and structure_validity(res.structure)
            my_rows.append(
                {
                    "id": it.id,
                    "file": f"cifs/{files[it.id]}",
                    "status": "ok",
                    "formula": res.structure.composition.reduced_formula,
                    "n_atoms": len(res.structure),
                    "loss": f"{res.loss:.6g}",
                    "trial": res.trial,
                    "evaluations": res.evaluations,
                    "seconds": f"{res.seconds:.4g}",
                    "matched": "" if it.truth is None else int(rms is not None),
                    "rms": "" if rms is None else f"{rms:.6g}",
                    "valid_cdvae": int(bool(valid)),
                    "spacegroup": _space_group(res.structure),
                    "reason": "",
                }
            )
        _write_rows(my_part, my_rows)
        bar.set_postfix(crystals=f"{min(start + batch_size, len(todo))}/{len(todo)}")
    bar.close()
    elapsed = time.perf_counter() - t_start
    _barrier(world)
    if rank != 0:
        return {}
    return _merge(out, items, files, resolved, elapsed, gen_mode, extra_summary or {})


def _merge(
    out: Path,
    items: Sequence[ReconItem],
    files: dict[str, str],
    resolved: dict,
    elapsed: float,
    gen_mode: bool,
    extra: dict,
) -> dict:
    rows = {r["id"]: r for r in _read_rows(out / "results.csv")}
    for part in sorted((out / "parts").glob("rank*.csv")):
        rows.update({r["id"]: r for r in _read_rows(part)})
    ordered, structures = [], []
    for it in items:
        if it.id in rows:
            row = rows[it.id]
            row["file"] = f"cifs/{files[it.id]}"  # rows of runs before the file column get it too
            ordered.append(row)
            path = out / "cifs" / files[it.id]
            recs = list(read_structures(path)) if path.is_file() else []
            structures.append(recs[0].structure if recs and recs[0].structure is not None else None)
        else:
            reason = it.reason or "not reconstructed"
            ordered.append(
                {
                    "id": it.id,
                    "status": "rejected" if it.target is None else "missing",
                    "reason": reason,
                    "matched": 0 if it.scored else "",
                }
            )
            structures.append(None)
    _write_rows(out / "results.csv", ordered)
    save_cdvae_pt(out / ("eval_gen.pt" if gen_mode else "eval_recon.pt"), structures)

    ok = [r for r in ordered if r.get("status") == "ok"]
    seconds = [float(r["seconds"]) for r in ok if r.get("seconds")]
    evals = [int(r["evaluations"]) for r in ok if r.get("evaluations")]
    summary = {
        "config": resolved,
        "counts": {
            "input": len(items),
            "reconstructed": len(ok),
            "rejected": sum(r.get("status") == "rejected" for r in ordered),
            "missing": sum(r.get("status") == "missing" for r in ordered),
        },
        "rejection_reasons": dict(Counter(r["reason"] for r in ordered if r.get("status") == "rejected")),
        "timing": {
            "seconds_this_run": round(elapsed, 2),
            "seconds_per_crystal_mean": round(sum(seconds) / len(seconds), 4) if seconds else None,
            "evaluations_per_crystal_mean": round(sum(evals) / len(evals), 1) if evals else None,
        },
    }
    # Every crystal of a ground-truth input counts: unreadable or rejected ones are misses.
    with_truth = [r for r, it in zip(ordered, items) if it.scored]
    if with_truth:
        matched = [r for r in with_truth if str(r.get("matched")) == "1"]
        rms = [float(r["rms"]) for r in matched if r.get("rms")]
        strict = [r for r in matched if str(r.get("valid_cdvae")) == "1"]
        strict_rms = [float(r["rms"]) for r in strict if r.get("rms")]
        summary["reconstruction"] = {
            "n": len(with_truth),
            "match_rate": 100.0 * len(matched) / len(with_truth),
            "rmse": sum(rms) / len(rms) if rms else None,
            "protocol": "StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3) against the Niggli-reduced ground "
            "truth; match rate over all input crystals (unreadable or failed ones count as misses); "
            "RMSE = mean get_rms_dist()[0] over matched crystals (SPEC section 5, the paper's Table 1)",
            "match_rate_cdvae_strict": 100.0 * len(strict) / len(with_truth),
            "rmse_cdvae_strict": sum(strict_rms) / len(strict_rms) if strict_rms else None,
            "cdvae_strict_note": "CDVAE's RecEval also requires the prediction to be valid (SMACT composition and "
            "distances >= 0.5 A); ground truths with a SMACT-invalid composition can never count",
        }
    summary.update(extra)
    write_json(out / "summary.json", summary)
    return summary


def summary_line(summary: dict) -> str:
    c = summary["counts"]
    line = f"{c['reconstructed']}/{c['input']} reconstructed"
    if c["rejected"]:
        # ground truth: the input could not be read or was refused (reasons in results.csv); generated or
        # representation input: the vector did not decode
        kind = "unreadable or refused" if summary.get("reconstruction") else "rejected at decoding"
        line += f", {c['rejected']} {kind}"
    rec = summary.get("reconstruction")
    if rec:
        rmse = "n/a" if rec["rmse"] is None else f"{rec['rmse']:.4f}"
        n_unusable = rec["n"] - c["reconstructed"]
        line += (
            f"; match rate {rec['match_rate']:.2f} % (RMSE {rmse}) over all {rec['n']} input crystals"
            + (f" ({n_unusable} unreadable or not reconstructed count as misses)" if n_unusable else "")
            + f" [CDVAE strict: {rec['match_rate_cdvae_strict']:.2f} %]"
        )
    t = summary["timing"]
    if t["seconds_per_crystal_mean"] is not None:
        line += f"; {t['seconds_per_crystal_mean']:.3g} s and {t['evaluations_per_crystal_mean']:.0f} evaluations per crystal"
    return line


# ------------------------------------------------------------------------------------------------
# Inputs of srd-reconstruct
# ------------------------------------------------------------------------------------------------
def _items_from_truth(
    path: Path, n_max: int | None, params, limit, show_progress, rows=None
) -> list[ReconItem]:
    """Ground-truth crystals as items (Niggli-reduced, their own R as the target); ``n_max`` None: the
    largest readable crystal sets it. ``rows``: only those rows of the input."""
    items, good = [], []
    records = list(read_structures(path, limit=limit, rows=rows))
    if n_max is None:
        n_max = max((len(r.structure) for r in records if r.structure is not None), default=1)
    for rec in records:
        if rec.structure is None:
            items.append(ReconItem(rec.id, None, rec.error, scored=True))
            continue
        try:
            s = prepare_structure(rec.structure, n_max=n_max, where=rec.id)
        except ValueError as err:
            items.append(ReconItem(rec.id, None, str(err), scored=True))
            continue
        items.append(ReconItem(rec.id, None, None, s))
        good.append(len(items) - 1)
    if not good:
        return items
    targets = decoded_from_structures(
        [items[k].truth for k in good], n_max=n_max, params=params, show_progress=show_progress
    )
    for k, t in zip(good, targets):
        items[k].target = t
    return items


def _items_from_features(
    path: Path, limit, composition: str, feats: Features | None = None, rows=None
) -> tuple[list[ReconItem], Features]:
    feats = feats if feats is not None else Features.load(path)
    if rows is None:
        R, ids = feats.R[:limit], feats.ids[:limit]
    else:
        R, ids = feats.R[list(rows)], [feats.ids[k] for k in rows]
    items = []
    for rid, d in zip(ids, decode(R.double(), feats.stats, feats.n_max, composition)):
        items.append(ReconItem(rid, None, d.reason) if isinstance(d, Rejected) else ReconItem(rid, d))
    return items, feats


def reconstruct_input(
    input: str | Path,
    output: str | Path,
    *,
    config: ReconstructConfig | None = None,
    n_max: int | None = None,
    dataset: str | None = None,
    composition: str = "largest-remainder",
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
    batch_size: int = 64,
    device="cpu",
    show_progress: bool = True,
    templates=None,
) -> dict:
    """srd-reconstruct as a function: reconstruct the crystals of ``input`` into the folder ``output``.

    ``input`` is ground truth (CSV(.gz) with a 'cif' column, folder of .cif, extxyz: featurised, then
    reconstructed and scored, the Table 1 protocol) or a representations file (.pt: decoded with
    ``composition``, then reconstructed). ``config`` defaults to the paper's budget
    (``ReconstructConfig.preset("paper")``). Rerunning with the same ``output`` resumes.

    ``limit`` takes the first crystals of the input; ``sample`` (mutually exclusive with ``limit``) a seeded
    uniform random sample of that many crystals, drawn with ``sample_seed`` (:func:`sample_rows`) and
    reconstructed in input order. The sample (n, seed, row indices, ids) is saved in ``output``/sample.json
    and summary.json; a rerun into ``output`` with other sample settings is refused.

    Returns:
        The summary written to ``output``/summary.json (rank 0 under torchrun; {} on other ranks).
    """
    path = Path(input)
    if not path.exists():
        raise FileNotFoundError(f"no such input: {path}")
    if sample is not None and limit is not None:
        raise ValueError(
            "sample (--sample) and limit (--limit) are mutually exclusive: limit takes the first crystals of "
            "the input, sample a seeded random sample of it"
        )
    check_output_dir(output, flag="-o/--output")
    config = config or ReconstructConfig.preset("paper")
    device = resolve_device(device) if isinstance(device, str) else device
    rows, feats = None, None
    if path.suffix == ".pt":
        feats = Features.load(path)
        population = len(feats.ids)
    else:
        population = count_structures(path) if sample is not None else None
    if sample is not None:
        if sample > population:
            raise ValueError(f"--sample {sample}: {path} holds only {population} crystals")
        rows = sample_rows(population, sample, sample_seed)
    if path.suffix == ".pt":
        items, feats = _items_from_features(path, limit, composition, feats, rows)
        params = feats.params
        desc = {
            "path": str(path.resolve()),
            "kind": "representations",
            "limit": limit,
            "composition": composition,
        }
    else:
        dataset = dataset or dataset_from_path(path)
        n_max = n_max or (DATASET_N_MAX.get(dataset) if dataset else None)
        params = EADParams()
        items = _items_from_truth(path, n_max, params, limit, show_progress, rows)
        if n_max is None:  # neither given: the input's own largest crystal
            n_max = max((len(it.truth) for it in items if it.truth is not None), default=1)
        desc = {
            "path": str(path.resolve()),
            "kind": "ground truth",
            "n_max": n_max,
            "dataset": dataset,
            "limit": limit,
        }
    sample_info = None
    if rows is not None:
        # In config.json too (only when sampling, so that folders of earlier runs still resume): a rerun with
        # other sample settings, or on an input of another size, is refused.
        desc["sample"] = {"n": sample, "seed": sample_seed, "population": population}
        sample_info = {
            "n": sample,
            "seed": sample_seed,
            "population": population,
            "input": str(path.resolve()),
            "method": SAMPLE_METHOD,
            "rows": rows,
            "ids": [it.id for it in items],
        }
    usable = [it for it in items if it.target is not None]
    if not usable:
        reasons = [f"{it.id}: {it.reason}" for it in items[:3]]
        raise ValueError(
            f"no usable crystal in {path}: {len(items)} read, none can be reconstructed; first: {reasons}"
        )
    return run_job(
        items,
        output,
        config=config,
        params=params,
        input_desc=desc,
        batch_size=batch_size,
        device=device,
        show_progress=show_progress,
        sample=sample_info,
        templates=templates,
    )
