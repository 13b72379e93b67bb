"""Collect reconstruction run folders (srd-reconstruct / recon_budget outputs) into one JSON record.

Each folder contributes its budget's ReconstructConfig, the template files, the sample (seed, rows,
ids), the scores, and the git commit of the code that produced it (from its config.json), so a table
in docs/ can say exactly which code and which crystals each number came from.

    python scripts/collect_runs.py docs/runs/table1_seeded.json runs/t1_mp20_s200/fast_uniform ... \\
        --about "what these runs are"
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def record(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    summ = json.loads((folder / "summary.json").read_text())
    inp = Path(cfg["input"]["path"])
    rec = summ.get("reconstruction") or {}
    return {
        "folder": folder.name,
        "dataset_split": os.path.relpath(inp, Path.cwd()) if inp.is_absolute() else str(inp),
        "algorithm": cfg["algorithm"],
        "templates": [os.path.relpath(t["path"], Path.cwd()) for t in cfg.get("templates", [])],
        "sample": {k: v for k, v in summ.get("sample", {}).items() if k != "input"},
        "match_rate": rec.get("match_rate"),
        "rmse": rec.get("rmse"),
        "match_rate_cdvae_strict": rec.get("match_rate_cdvae_strict"),
        "evaluations_per_crystal_mean": summ["timing"]["evaluations_per_crystal_mean"],
        "seconds_per_crystal_mean": summ["timing"]["seconds_per_crystal_mean"],
        "git_commit": cfg.get("git_commit"),
        "git_dirty": cfg.get("git_dirty"),  # None: not recorded (runs before it was)
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the JSON file to write")
    p.add_argument("folders", nargs="+", help="run folders (each with config.json and summary.json)")
    p.add_argument("--about", default="", help="a sentence on what the runs are, stored with them")
    p.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="FOLDER=TEXT",
        help="what code ran in FOLDER when its git_commit alone does not say (e.g. a working-tree change, "
        "later committed); stored as the run's 'code' (repeatable)",
    )
    args = p.parse_args()
    notes = dict(c.split("=", 1) for c in args.code)
    runs = [record(Path(f)) for f in args.folders]
    for f, r in zip(args.folders, runs):
        if f in notes:
            r["code"] = notes[f]
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps({"about": args.about, "runs": runs}, indent=1) + "\n")
    tmp.replace(args.out)
    for r in runs:
        print(f"{r['dataset_split']:28s} {r['folder']:22s} {r['match_rate']:6.2f} %  {r['git_commit'][:7]}")


if __name__ == "__main__":
    main()
