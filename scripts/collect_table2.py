"""Collect the Table 2 (generation) and CSP runs into docs/runs/table2.json: per run the metrics, the
uniqueness / novelty, the R-space summary, the per-crystal costs, the packaged model's sha256, the seed,
and for CSP the sampled test ids (the rows and ids come from each run's csp_plan.json).

    python scripts/collect_table2.py            # reads runs/table2/* and runs/csp/*

Entries already in docs/runs/table2.json whose run folders are not here are kept; a run that is here
replaces its entry.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(p: Path):
    return json.loads(p.read_text()) if p.is_file() else None


def main() -> None:
    dest = ROOT / "docs" / "runs" / "table2.json"
    # runs recorded by an earlier session whose folders are not on this machine stay as recorded
    out = _load(dest) or {}
    out = {"generation": dict(out.get("generation", {})), "csp": dict(out.get("csp", {}))}
    for run in sorted((ROOT / "runs" / "table2").glob("*")):
        m, s, sun = _load(run / "metrics.json"), _load(run / "summary.json"), _load(run / "sun.json")
        key = _load(run / "sampling.json")
        if not (m and s and key):
            continue
        out["generation"][run.name] = {
            "table": m["table"],
            "emd": {k: m["emd"][k] for k in ("density", "n_elements", "n_samples_used")},
            "unique_novel": sun["rates"] if sun else None,
            "matcher": sun["uniqueness"]["settings"] if sun else None,
            "sampling": s.get("sampling"),
            "reconstruction": s.get("timing"),
            "sample_key": key["key"],
            "git_commit": key.get("git_commit"),
            "git_dirty": key.get("git_dirty"),
        }
    for run in sorted((ROOT / "runs" / "csp").glob("*")):
        r, plan = _load(run / "csp.json"), _load(run / "csp_plan.json")
        if not (r and plan):
            continue
        k = r["k"]
        out["csp"][run.name] = {
            "n": r["n"],
            "k": k,
            "at_1": r["at_1"],
            f"at_{k}": r[f"at_{k}"],
            "ranked_at_1": r.get("ranked_at_1"),
            "skipped": r.get("skipped"),
            "sample": plan.get("sample"),
            "ids": [e["id"] for e in plan["targets"]],
            "git_commit": (r.get("run") or {}).get("git_commit"),
        }
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {dest}: {len(out['generation'])} generation runs, {len(out['csp'])} CSP runs")


if __name__ == "__main__":
    main()
