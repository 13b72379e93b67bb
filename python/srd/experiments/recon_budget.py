"""Match rate versus reconstruction budget (README, Table 1 "beyond the paper").

Reconstructs the first N crystals of a ground-truth split (--limit N, default 20), or a seeded uniform
random sample of N of them (--sample N --sample-seed S, as `srd-reconstruct --sample` draws it: the same
crystals for every budget, saved in each run's sample.json), with several named budgets
(srd.reconstruction.PRESETS, as `srd-reconstruct --budget NAME` does), each into its own folder (so a rerun
resumes), and prints a Markdown table: match rate, RMSE, mean evaluations and CPU seconds per crystal.
The first rows of a split are not a fair sample (MP-20's first rows are small, simple cells).

    python -m srd.experiments.recon_budget data/perov_5/test.csv.gz --limit 100 --out runs/budget_perov
    python -m srd.experiments.recon_budget data/carbon_24/test.csv.gz --limit 50 --budgets paper,fast
    python -m srd.experiments.recon_budget data/mp_20/test.csv.gz --sample 50 --sample-seed 0 --budgets fast
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ..cli._common import (
    add_templates_arg,
    budget_help,
    non_negative_int,
    positive_int,
    run,
    template_library,
)
from ..reconstruction import PRESETS, get_preset

PROG = "python -m srd.experiments.recon_budget"


def _budgets(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown budget(s) {', '.join(unknown) or repr(text)}; known: {', '.join(PRESETS)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        epilog="budgets (srd/presets/reconstruct.toml):\n" + budget_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="ground-truth split (CSV(.gz) with a 'cif' column)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="the first N crystals (default 20 when --sample is not given)",
    )
    which.add_argument(
        "--sample",
        type=positive_int,
        default=None,
        metavar="N",
        help="a seeded uniform random sample of N crystals instead of the first ones (not with --limit)",
    )
    p.add_argument(
        "--sample-seed",
        type=non_negative_int,
        default=0,
        metavar="S",
        help="seed of the --sample draw, independent of the run seed --seed (default 0)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="parent folder of the runs (default runs/budget_<dataset>_<split>_<limit>, or "
        "..._sample<N>_seed<S> with --sample)",
    )
    p.add_argument(
        "--budgets",
        type=_budgets,
        default=_budgets("paper,paper/10,fast"),
        help=f"comma-separated budget names, from: {', '.join(PRESETS)} (default paper,paper/10,fast)",
    )
    add_templates_arg(p)
    p.add_argument("--batch-size", type=positive_int, default=32, help="crystals per batch (default 32)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def budget_table(
    split: Path, limit: int | None, seed: int, rows: Sequence[tuple], *, sample: dict | None = None
) -> str:
    """The Markdown table of (budget, match rate, RMSE, n, evaluations, seconds, flags) rows; ``sample``
    (n, seed, population of a seeded random sample) replaces "first ``limit``" in the header."""
    which = (
        f"seeded sample of {sample['n']} (seed {sample['seed']}) of {sample['population']} crystals"
        if sample
        else f"first {limit} crystals"
    )
    lines = [
        f"{split} ({which}), run seed {seed}:",
        "",
        "| budget | match rate (%) | RMSE | crystals | evaluations / crystal | s / crystal | flags |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, mr, rmse, n, ev, sec, flags in rows:
        rmse_s = "—" if rmse is None else f"{rmse:.4f}"
        lines.append(f"| {name} | {mr:.2f} | {rmse_s} | {n} | {ev:.0f} | {sec:.2f} | `{flags}` |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from ..reconstruction import reconstruct_input

    args = build_parser().parse_args(argv)
    split = Path(args.input)
    if not split.is_file():
        raise FileNotFoundError(f"no such input: {split}")
    if args.sample is None and args.limit is None:
        args.limit = 20
    which = f"sample{args.sample}_seed{args.sample_seed}" if args.sample else str(args.limit)
    out = Path(args.out or f"runs/budget_{split.parent.name}_{split.name.split('.')[0]}_{which}")
    library = template_library(args, show_progress=not args.quiet)
    rows, sample = [], None
    for name in args.budgets:
        folder = out / name.replace("/", "_")
        reconstruct_input(
            split,
            folder,
            config=get_preset(name).config(seed=args.seed),
            limit=args.limit,
            sample=args.sample,
            sample_seed=args.sample_seed,
            batch_size=args.batch_size,
            device=args.device,
            show_progress=not args.quiet,
            templates=library,
        )
        s = json.loads((folder / "summary.json").read_text())
        rec, t = s["reconstruction"], s["timing"]
        sample = s.get("sample")
        rows.append(
            (
                name,
                rec["match_rate"],
                rec["rmse"],
                rec["n"],
                t["evaluations_per_crystal_mean"],
                t["seconds_per_crystal_mean"],
                " ".join(PRESETS[name].flags()),
            )
        )
    print("\n" + budget_table(split, args.limit, args.seed, rows, sample=sample))
    return 0


if __name__ == "__main__":
    run(main, PROG)
