"""The decoder oracle: how much generation quality reconstruction alone costs.

Real crystals stand in for a perfect diffusion model: a seeded sample of a val split is featurised and
reconstructed from its own R (srd-reconstruct with a named budget, as srd-sample would decode generated
vectors), then scored with srd-evaluate's generation metrics (CDVAE's protocol, COV at CDVAE's thresholds
and at the paper's looser SyMat thresholds) against the test split, beside the same crystals as they are.
A decoder that loses nothing gives the same coverage for both.

    python -m srd.experiments.decoder_oracle data/perov_5/val.csv.gz data/perov_5/test.csv.gz \\
        --sample 300 --templates data/perov_5/train.csv.gz --out runs/oracle_perov
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ..cli._common import (
    add_quiet_arg,
    add_templates_arg,
    budget_help,
    non_negative_int,
    positive_int,
    run,
    template_library,
)
from ..generate import DEFAULT_BUDGET
from ..reconstruction import PRESETS, get_preset

PROG = "python -m srd.experiments.decoder_oracle"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        epilog="budgets (srd/reconstruction/presets.toml):\n" + budget_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("crystals", help="the real crystals (a val split: CSV(.gz) with a 'cif' column)")
    p.add_argument("reference", help="the test split the generation metrics compare with")
    p.add_argument("--sample", type=positive_int, default=300, help="seeded sample size (default 300)")
    p.add_argument("--sample-seed", type=non_negative_int, default=0, help="seed of the sample (default 0)")
    p.add_argument(
        "--budget",
        choices=list(PRESETS),
        default=DEFAULT_BUDGET,
        metavar="NAME",
        help=f"reconstruction budget (default {DEFAULT_BUDGET}, srd-sample's)",
    )
    add_templates_arg(p)
    p.add_argument("--dataset", default=None, help="benchmark name (default: from the path)")
    p.add_argument("--out", required=True, help="output folder (resumes)")
    p.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="crystals per batch (default 32)")
    add_quiet_arg(p)
    return p


def oracle_table(rows: dict[str, dict], header: str) -> str:
    """The Markdown table of the oracle's rows (validity and COV in percent)."""
    lines = [
        header,
        "",
        "| crystals | match to truth % | comp. valid % | struct. valid % | COV-R % | COV-P % | COV-R / COV-P % (SyMat thresholds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        t = r["table"]
        mr = "—" if r.get("match_rate") is None else f"{r['match_rate']:.2f}"
        lines.append(
            f"| {name} | {mr} | {t['comp_valid']:.2f} | {t['struct_valid']:.2f} | {t['cov_recall']:.2f} | "
            f"{t['cov_precision']:.2f} | {t.get('cov_recall_symat', float('nan')):.2f} / "
            f"{t.get('cov_precision_symat', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from ..metrics.generation import evaluate_generation
    from ..reconstruction import reconstruct_input
    from ..representation import dataset_from_path
    from ..structures import read_structures

    args = build_parser().parse_args(argv)
    crystals, reference = Path(args.crystals), Path(args.reference)
    for p in (crystals, reference):
        if not p.is_file():
            raise FileNotFoundError(f"no such input: {p}")
    dataset = args.dataset or dataset_from_path(reference)
    out = Path(args.out)
    recon = out / f"recon_{args.budget.replace('/', '_')}"
    summary = reconstruct_input(
        crystals,
        recon,
        config=get_preset(args.budget).config(seed=args.seed),
        sample=args.sample,
        sample_seed=args.sample_seed,
        batch_size=args.batch_size,
        show_progress=not args.quiet,
        templates=template_library(args, show_progress=not args.quiet),
    )
    rows_ = json.loads((recon / "sample.json").read_text())["rows"]
    truth = [r.structure for r in read_structures(crystals, rows=rows_)]
    results = {}
    for name, gen in (("real (unreconstructed)", truth), (f"reconstructed ({args.budget})", recon)):
        res = evaluate_generation(
            gen, reference, dataset=dataset, n_samples=len(truth), show_progress=not args.quiet
        )
        results[name] = {"table": res.metrics["table"], "valid": res.metrics["validity"]["valid"]}
    results[f"reconstructed ({args.budget})"]["match_rate"] = summary["reconstruction"]["match_rate"]
    header = (
        f"{crystals} (seeded sample of {args.sample}, seed {args.sample_seed}) against {reference}; "
        f"budget {args.budget}; COV at CDVAE's thresholds (SyMat's beside)"
    )
    table = oracle_table(results, header)
    (out / "oracle.json").write_text(json.dumps({"header": header, "results": results}, indent=1) + "\n")
    (out / "oracle.md").write_text(table + "\n")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    run(main, PROG)
