"""srd-reconstruct: representations -> crystals by batched basin hopping (the paper's Algorithm 2)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..reconstruction import reconstruct_input, summary_line
from ..representation import (
    DATASET_N_MAX,
)
from ._common import (
    HelpFormatter,
    add_quiet_arg,
    add_reconstruction_args,
    check_output_dir,
    positive_int,
    reconstruct_config,
    resolve_device,
    run,
)

DESCRIPTION = """\
Turn representation vectors back into crystals. The atom count, composition and lattice come from R;
positions are found by Adam + ReduceLROnPlateau on the L1 distance between the pooled EAD and d_min of
the trial structure and the target, restarted from random positions (trials) and perturbed from each
trial's best (hops). All trials of all crystals in a batch advance in one batched descriptor call per
step. The default budget is the paper's: 6 trials x 7 hops x 300 steps = 12,600 evaluations per crystal;
--budget NAME picks another named budget (listed under "reconstruction" below), and the flags given
explicitly override the budget's values.

INPUT is either
  * ground-truth crystals (a CSV(.gz) with a 'cif' column, a folder of .cif files, or extxyz): they are
    Niggli-reduced, featurised and reconstructed, and the match rate / RMSE against the originals is
    reported (the Table 1 protocol), or
  * a representations file written by srd-sample or srd-featurize (.pt): vectors are decoded (those that
    do not decode are recorded with the reason) and reconstructed.

OUT gets cifs/<id>.cif, results.csv, eval_recon.pt (CDVAE format) and summary.json. Rerunning with the
same OUT resumes: finished crystals are skipped. Scale out with
  torchrun --nproc-per-node K -m srd.cli.reconstruct INPUT -o OUT ...
(each rank takes every K-th crystal; rank 0 merges the results).

examples:
  srd-reconstruct data/perov_5/test.csv.gz -o out --limit 20
  srd-reconstruct data/perov_5/test.csv.gz -o out_fast --limit 100 --budget fast
  srd-reconstruct data/mp_20_partial/test.csv.gz -o out_mp --limit 100 --trials 2 --hops 3 --steps 200
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="srd-reconstruct", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    p.add_argument(
        "input",
        help="ground-truth crystals (CSV(.gz) with a 'cif' column, folder of .cif, extxyz) or a "
        "representations/feature file (.pt)",
    )
    p.add_argument("-o", "--output", required=True, help="output folder (created; reused to resume)")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--n-max",
        type=positive_int,
        default=None,
        help="largest atom count (ground-truth input; default from --dataset or the path)",
    )
    size.add_argument(
        "--dataset",
        choices=sorted(DATASET_N_MAX),
        default=None,
        help="benchmark name (sets n_max) for ground-truth input",
    )
    add_reconstruction_args(p, default_budget="paper")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="run seed; each crystal's generator is seeded by (seed, id), so results do not depend "
        "on batching or sharding",
    )
    p.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (under torchrun: the local GPU)"
    )
    p.add_argument(
        "--limit", type=positive_int, default=None, help="only the first LIMIT crystals of the input"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="crystals per batch (x trials replicas per descriptor call); results are written after "
        "every batch",
    )
    add_quiet_arg(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(f"no such input: {path}")
    check_output_dir(args.output, flag="-o/--output")
    import os

    device = args.device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and device in ("cuda", "auto"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    device = resolve_device(device)
    summary = reconstruct_input(
        path,
        args.output,
        config=reconstruct_config(args),
        n_max=args.n_max,
        dataset=args.dataset,
        composition=args.composition,
        limit=args.limit,
        batch_size=args.batch_size,
        device=device,
        show_progress=not args.quiet,
    )
    if summary:
        print("srd-reconstruct: " + summary_line(summary))
        print(f"  wrote {args.output}/cifs, results.csv, eval_recon.pt, summary.json")
    return 0


def entry() -> None:
    run(main, "srd-reconstruct")


if __name__ == "__main__":
    entry()
