"""Crystal structure prediction (CSP), DiffCSP's protocol: every test crystal's composition in, K structures
out, scored against the test crystal.

A test crystal counts as found @1 when its first generated structure matches it, and @K when any of its K
does, with StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3) (the settings of CDVAE's reconstruction and
DiffCSP's CSP metrics); RMSE is the mean over found crystals of the RMS distance of the first (@1) or the
best (@K) match. A crystal that got no prediction (an element the model never saw, too many atoms, a
failed reconstruction) is a miss. srd also reports ``ranked@1``: the one of the K whose reconstruction
loss is lowest (a choice that needs no ground truth), labelled as srd's own addition.

Plan file (OUT/csp_plan.json, written by ``srd-sample --compositions-from``): the reference, the rows
used, K, and per target its id, composition and the generated ids (or why it has none).
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ..structures import read_structures
from ..utils import read_json, write_json
from .recon import match_structures

__all__ = [
    "csp_targets",
    "make_plan",
    "plan_for_model",
    "PLAN_FILE",
    "evaluate_csp_folder",
    "evaluate_csp_pt",
    "csp_scores",
]

PLAN_FILE = "csp_plan.json"


def csp_targets(reference: str | os.PathLike, rows: list[int] | None = None) -> list[tuple[str, object]]:
    """(id, Structure or None) of the reference crystals (all, or the given 0-based rows)."""
    return [(r.id, r.structure) for r in read_structures(reference, rows=rows)]


def make_plan(
    targets,
    k: int,
    *,
    vocabulary: set[int] | None,
    n_max: int,
    reference: str,
    rows: list[int] | None,
    sample: dict | None,
) -> dict:
    """The CSP plan: K generated ids per usable target (crystal-major: gen index = j * K + s over the usable
    targets j), and the reason for every target that gets none."""
    from pymatgen.core import Element

    entries, j = [], 0
    for tid, s in targets:
        e = {"id": tid}
        if s is None:
            e["reason"] = "the reference crystal could not be read"
        else:
            comp = dict(Counter(int(z) for z in s.atomic_numbers))
            e["composition"] = {str(z): c for z, c in sorted(comp.items())}
            unseen = sorted(set(comp) - vocabulary) if vocabulary is not None else []
            if len(s) > n_max:
                e["reason"] = f"{len(s)} atoms > n_max = {n_max}"
            elif unseen:
                e["reason"] = "element(s) never in the training data: " + ", ".join(
                    Element.from_Z(z).symbol for z in unseen
                )
            else:
                e["gen_ids"] = [f"gen_{j * k + s_:06d}" for s_ in range(k)]
                j += 1
        entries.append(e)
    return {"reference": str(reference), "rows": rows, "sample": sample, "k": int(k), "targets": entries}


def plan_for_model(
    reference: str | os.PathLike, k: int, meta: dict, *, sample: int | None = None, sample_seed: int = 0
) -> tuple[dict, list[tuple[str, object]]]:
    """The CSP plan of a model (``meta``: its checkpoint metadata) for ``reference``: all its crystals, or
    a seeded random sample of ``sample`` rows (srd.reconstruction.job.sample_rows), K generated ids per
    crystal the model can take. Returns the plan and the (id, Structure) targets it was made from."""
    from ..diffusion import load_composition_model
    from ..reconstruction.job import SAMPLE_METHOD, sample_rows
    from ..structures import count_structures

    rows, sample_desc = None, None
    if sample is not None:
        population = count_structures(reference)
        rows = sample_rows(population, sample, sample_seed)
        sample_desc = {"n": sample, "seed": sample_seed, "population": population, "method": SAMPLE_METHOD}
    cmodel = load_composition_model(meta)
    targets = csp_targets(reference, rows)
    plan = make_plan(
        targets,
        k,
        vocabulary=set(cmodel.elements) if cmodel is not None else None,
        n_max=int(meta["n_max"]),
        reference=str(reference),
        rows=rows,
        sample=sample_desc,
    )
    return plan, targets


def plan_compositions(plan: dict) -> list[dict[int, int]]:
    """The compositions to generate, in gen-id order (K copies of each usable target's)."""
    out = []
    for e in plan["targets"]:
        if "gen_ids" in e:
            comp = {int(z): int(c) for z, c in e["composition"].items()}
            out += [comp] * len(e["gen_ids"])
    return out


def csp_scores(rms: list[list[float | None]], losses: list[list[float]] | None = None) -> dict:
    """Match rates and RMSEs from per-target lists of the K predictions' RMS distances (None = no match).

    A target with no predictions (empty list) is a miss everywhere."""
    n = len(rms)
    k = max((len(r) for r in rms), default=0)

    def rate(found: list[float | None]) -> dict:
        ok = [v for v in found if v is not None]
        return {
            "match_rate": 100.0 * len(ok) / n if n else 0.0,
            "rmse": float(np.mean(ok)) if ok else None,
            "n_matched": len(ok),
        }

    first = [r[0] if r else None for r in rms]
    best = [min((v for v in r if v is not None), default=None) for r in rms]
    out = {"n": n, "k": k, "at_1": rate(first), f"at_{k}": rate(best)}
    if losses is not None:
        ranked = []
        for r, lo in zip(rms, losses):
            if not r:
                ranked.append(None)
                continue
            finite = [x if x is not None and math.isfinite(x) else math.inf for x in lo]
            ranked.append(r[int(np.argmin(finite))])
        out["ranked_at_1"] = rate(ranked)
    return out


def _results_rows(out: Path) -> dict[str, dict]:
    path = out / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run srd-sample --compositions-from first (or let it finish)"
        )
    with path.open() as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def evaluate_csp_folder(out: str | os.PathLike, *, workers: int = 1, show_progress: bool = False) -> dict:
    """Score an ``srd-sample --compositions-from`` folder (its csp_plan.json, results.csv and cifs/)."""
    out = Path(out)
    plan = read_json(out / PLAN_FILE)
    if plan is None:
        raise FileNotFoundError(
            f"{out / PLAN_FILE} is missing: OUT must come from srd-sample --compositions-from"
        )
    rows = _results_rows(out)
    targets = csp_targets(plan["reference"], plan.get("rows"))
    if [t[0] for t in targets] != [e["id"] for e in plan["targets"]]:
        raise ValueError(f"{plan['reference']}: its crystals are not those of {out / PLAN_FILE}")
    preds, refs, owner = [], [], []
    for j, ((_, ref), e) in enumerate(zip(targets, plan["targets"])):
        for gid in e.get("gen_ids", []):
            row = rows.get(gid)
            cif = out / "cifs" / f"{gid}.cif"
            s = None
            if row is not None and row.get("status") == "ok" and cif.is_file():
                s = next(read_structures(cif)).structure
            preds.append(s)
            refs.append(ref)
            owner.append((j, float(row["loss"]) if row and row.get("loss") not in (None, "") else math.inf))
    matched = match_structures(preds, refs, workers=workers, show_progress=show_progress)["per_crystal"]
    rms: list[list[float | None]] = [[] for _ in targets]
    losses: list[list[float]] = [[] for _ in targets]
    for (j, loss), m in zip(owner, matched):
        rms[j].append(m["rms"])
        losses[j].append(loss)
    report = csp_scores(rms, losses)
    report.update(
        source=str(out),
        reference=plan["reference"],
        sample=plan.get("sample"),
        skipped=dict(Counter(e["reason"].split(":")[0] for e in plan["targets"] if "reason" in e)),
        per_target=[
            {"id": e["id"], "rms": r, "loss": lo, **({"reason": e["reason"]} if "reason" in e else {})}
            for e, r, lo in zip(plan["targets"], rms, losses)
        ],
    )
    return report


def evaluate_csp_pt(
    path: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    rows: list[int] | None = None,
    workers: int = 1,
    show_progress: bool = False,
) -> dict:
    """Score another tool's CDVAE/DiffCSP-format file (``num_evals`` predictions per test crystal, in the
    reference's order) against ``reference`` (its crystals, or the given rows of it)."""
    from ..structures import cdvae_num_evals, load_cdvae_pt

    targets = csp_targets(reference, rows)
    k = cdvae_num_evals(path)
    rms: list[list[float | None]] = [[] for _ in targets]
    for ev in range(k):
        crystals = load_cdvae_pt(path, eval_index=ev)
        if rows is not None:
            crystals = [crystals[r] for r in rows]
        if len(crystals) != len(targets):
            raise ValueError(
                f"{path}: {len(crystals)} crystals in eval {ev}, the reference has {len(targets)}"
            )
        preds = [c if not isinstance(c, str) else None for c in crystals]
        refs = [t[1] for t in targets]
        m = match_structures(preds, refs, workers=workers, show_progress=show_progress)["per_crystal"]
        for j, x in enumerate(m):
            rms[j].append(x["rms"])
    report = csp_scores(rms)
    report.update(source=str(path), reference=str(reference))
    return report


def write_report(report: dict, out: Path) -> Path:
    path = out / "csp.json"
    write_json(path, report)
    return path
