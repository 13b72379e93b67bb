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
    non_negative_int,
    positive_int,
    reconstruct_config,
    resolve_device,
    run,
    template_library,
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

Which crystals: all of INPUT, the first ones (--limit N), or a seeded uniform random sample of N of
them (--sample N, drawn with --sample-seed S: numpy.random.default_rng(S).choice over the row indices,
without replacement, reconstructed in file order). The first rows of a split are not a fair sample (e.g.
MP-20's first rows are small, simple cells): report --sample numbers for subsets.

OUT gets cifs/<id>.cif, results.csv, eval_recon.pt (CDVAE format) and summary.json; with --sample also
sample.json (N, S, the input's size, the sampled row indices and ids; summary.json repeats it). Rerunning
with the same OUT resumes: finished crystals are skipped; a rerun with another configuration, --limit or
sample (N, S) is refused. Scale out with
  torchrun --nproc-per-node K -m srd.cli.reconstruct INPUT -o OUT ...
(each rank takes every K-th crystal; rank 0 merges the results).

examples:
  srd-reconstruct data/perov_5/test.csv.gz -o out --limit 20
  srd-reconstruct data/perov_5/test.csv.gz -o out_fast --limit 100 --budget fast --templates data/perov_5/train.csv.gz
  srd-reconstruct data/mp_20/test.csv.gz -o out_mp --sample 50 --sample-seed 0 --budget fast --templates data/mp_20/train_PARTIAL.csv.gz,data/mp_20/val.csv.gz
  srd-reconstruct data/mp_20/test.csv.gz -o out_mp2 --limit 100 --trials 2 --hops 3 --steps 200
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
        help="run seed (of the search); each crystal's generator is seeded by (seed, id), so results do "
        "not depend on batching or sharding; the sample of --sample has its own seed, --sample-seed",
    )
    p.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (under torchrun: the local GPU)"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--limit", type=positive_int, default=None, help="only the first LIMIT crystals of the input"
    )
    which.add_argument(
        "--sample",
        type=positive_int,
        default=None,
        metavar="N",
        help="a seeded uniform random sample of N crystals of the input (without replacement, in file "
        "order; not with --limit); the row indices and ids are saved in OUT/sample.json",
    )
    p.add_argument(
        "--sample-seed",
        type=non_negative_int,
        default=argparse.SUPPRESS,  # absent unless given: --sample-seed without --sample is an error
        metavar="S",
        help="seed of the --sample draw (numpy.random.default_rng(S)); independent of the search's "
        "--seed (default: 0)",
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
    parser = build_parser()
    args = parser.parse_args(argv)
    sample_seed = getattr(args, "sample_seed", None)
    if sample_seed is not None and args.sample is None:
        parser.error("--sample-seed needs --sample N (it seeds the random sample of the input)")
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
        sample=args.sample,
        sample_seed=0 if sample_seed is None else sample_seed,
        batch_size=args.batch_size,
        device=device,
        show_progress=not args.quiet,
        templates=template_library(args, show_progress=not args.quiet),
    )
    if summary:
        print("srd-reconstruct: " + summary_line(summary))
        if "sample" in summary:
            smp = summary["sample"]
            print(
                f"  seeded sample of {smp['n']} of {smp['population']} crystals (sample seed {smp['seed']}); "
                f"rows and ids in {args.output}/sample.json"
            )
        wrote = "cifs, results.csv, eval_recon.pt, summary.json" + (
            ", sample.json" if "sample" in summary else ""
        )
        print(f"  wrote {args.output}/{wrote}")
    return 0


def entry() -> None:
    run(main, "srd-reconstruct")


if __name__ == "__main__":
    entry()
