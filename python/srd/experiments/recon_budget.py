#!/usr/bin/env python
"""Match rate versus reconstruction budget (README, Table 1 "beyond the paper").

Runs srd-reconstruct on the first N crystals of a split with several budgets, each into its own
folder (so a rerun resumes), and prints a Markdown table: match rate, RMSE, mean evaluations and CPU
seconds per crystal.

    python scripts/recon_budget.py data/perov_5/test.csv.gz --limit 100 --out runs/budget_perov
    python scripts/recon_budget.py data/carbon_24/test.csv.gz --limit 50 --budgets paper,fast
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from srd.cli.reconstruct import main as reconstruct_main
from srd.reconstruct import BUDGETS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="ground-truth split (CSV(.gz) with a 'cif' column)")
    p.add_argument("--limit", type=int, default=20, help="first N crystals")
    p.add_argument("--out", default=None, help="parent folder of the runs (default runs/budget_<split>)")
    p.add_argument(
        "--budgets", default="paper,paper/10,fast", help=f"comma-separated, from {sorted(BUDGETS)}"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    split = Path(args.input)
    out = Path(args.out or f"runs/budget_{split.parent.name}_{split.name.split('.')[0]}_{args.limit}")
    rows = []
    for name in args.budgets.split(","):
        folder = out / name.replace("/", "_")
        reconstruct_main(
            [
                str(split),
                "-o",
                str(folder),
                "--limit",
                str(args.limit),
                "--seed",
                str(args.seed),
                "--batch-size",
                str(args.batch_size),
                *BUDGETS[name],
            ]
        )
        s = json.loads((folder / "summary.json").read_text())
        rec, t = s["reconstruction"], s["timing"]
        rows.append(
            (
                name,
                rec["match_rate"],
                rec["rmse"],
                rec["n"],
                t["evaluations_per_crystal_mean"],
                t["seconds_per_crystal_mean"],
                " ".join(BUDGETS[name]),
            )
        )
    print(f"\n{split} (first {args.limit} crystals), seed {args.seed}:\n")
    print("| budget | match rate (%) | RMSE | crystals | evaluations / crystal | s / crystal | flags |")
    print("|---|---|---|---|---|---|---|")
    for name, mr, rmse, n, ev, sec, flags in rows:
        rmse_s = "—" if rmse is None else f"{rmse:.4f}"
        print(f"| {name} | {mr:.2f} | {rmse_s} | {n} | {ev:.0f} | {sec:.2f} | `{flags}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
