"""srd-reconstruct: representations -> crystals by batched basin hopping (the paper's Algorithm 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..recon_job import ReconItem, run_job, summary_line
from ..reconstruct import ReconstructConfig
from ..representation import (
    COMPOSITION_DECODINGS,
    DATASET_N_MAX,
    Features,
    Rejected,
    dataset_from_path,
    decode,
    decoded_from_structures,
    prepare_structure,
)
from ..structures import read_structures
from ._common import HelpFormatter, positive_int, resolve_device, run

DESCRIPTION = """\
Turn representation vectors back into crystals. The atom count, composition and lattice come from R;
positions are found by Adam + ReduceLROnPlateau on the L1 distance between the pooled EAD and d_min of
the trial structure and the target, restarted from random positions (trials) and perturbed from each
trial's best (hops). All trials of all crystals in a batch advance in one batched descriptor call per
step. Defaults are the paper's budget: 6 trials x 7 hops x 300 steps = 12,600 evaluations per crystal.

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
  srd-reconstruct data/mp_20_partial/test.csv.gz -o out_mp --limit 100 --trials 2 --hops 3 --steps 200
"""


def build_parser() -> argparse.ArgumentParser:
    d = ReconstructConfig()
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
    p.add_argument(
        "--composition",
        choices=COMPOSITION_DECODINGS,
        default="largest-remainder",
        help="how a representations file's composition fractions become atom counts: largest-remainder (SPEC: "
        "renormalise, then largest-remainder rounding) or nearest (the counts nearest to n x fractions "
        "without renormalising; robust to noise spread over many elements)",
    )
    p.add_argument("--trials", type=positive_int, default=d.trials, help="random restarts per crystal")
    p.add_argument("--hops", type=positive_int, default=d.hops, help="basin hops per trial")
    p.add_argument("--steps", type=positive_int, default=d.steps, help="Adam steps per hop")
    p.add_argument("--lr", type=float, default=d.lr, help="initial Adam learning rate (Angstrom)")
    p.add_argument(
        "--plateau-factor", type=float, default=d.plateau_factor, help="ReduceLROnPlateau factor (per trial)"
    )
    p.add_argument(
        "--plateau-patience", type=int, default=d.plateau_patience, help="ReduceLROnPlateau patience"
    )
    p.add_argument(
        "--hop-size",
        type=float,
        default=d.hop_size,
        help="hops move every coordinate by U[-hop_size, hop_size] Angstrom",
    )
    p.add_argument(
        "--swap-prob",
        type=float,
        default=d.swap_prob,
        help="probability that a hop exchanges two atoms of different elements instead of displacing "
        "all atoms (0 = the paper's hops)",
    )
    p.add_argument(
        "--dtype", choices=["float32", "float64"], default=d.dtype, help="precision of the descent"
    )
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        help="stop a crystal once one of its trials reaches this L1 loss (saves evaluations; crystals "
        "that never reach it are unaffected)",
    )
    p.add_argument(
        "--polish-steps",
        type=int,
        default=d.polish_steps,
        help="after the hops, refine every trial's best structure for this many steps and choose the "
        "winner after the polish (0 = the paper's selection)",
    )
    p.add_argument("--polish-lr", type=float, default=d.polish_lr, help="learning rate of the polish")
    p.add_argument(
        "--polish-dtype",
        choices=["float32", "float64"],
        default=d.polish_dtype,
        help="precision of the polish",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
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
    p.add_argument(
        "--dmin-weight",
        type=float,
        default=d.dmin_weight,
        help="weight of the d_min entry in the L1 loss relative to one pooled-EAD entry (the paper: 1); "
        "a larger weight keeps generated crystals from overlapping atoms",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _items_from_truth(path: Path, n_max: int, params, limit, show_progress) -> list[ReconItem]:
    items, good = [], []
    for rec in read_structures(path, limit=limit):
        if rec.structure is None:
            items.append(ReconItem(rec.id, None, rec.error))
            continue
        try:
            s = prepare_structure(rec.structure, n_max=n_max, where=rec.id)
        except ValueError as err:
            items.append(ReconItem(rec.id, None, str(err)))
            continue
        items.append(ReconItem(rec.id, None, None, s))
        good.append(len(items) - 1)
    targets = decoded_from_structures(
        [items[k].truth for k in good], n_max=n_max, params=params, show_progress=show_progress
    )
    for k, t in zip(good, targets):
        items[k].target = t
    return items


def _items_from_features(path: Path, limit, composition: str) -> tuple[list[ReconItem], Features]:
    feats = Features.load(path)
    R, ids = feats.R[:limit], feats.ids[:limit]
    items = []
    for rid, d in zip(ids, decode(R.double(), feats.stats, feats.n_max, composition)):
        items.append(ReconItem(rid, None, d.reason) if isinstance(d, Rejected) else ReconItem(rid, d))
    return items, feats


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(f"no such input: {path}")
    import os

    device = args.device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and device in ("cuda", "auto"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    device = resolve_device(device)
    config = ReconstructConfig(
        trials=args.trials,
        hops=args.hops,
        steps=args.steps,
        lr=args.lr,
        plateau_factor=args.plateau_factor,
        plateau_patience=args.plateau_patience,
        hop_size=args.hop_size,
        swap_prob=args.swap_prob,
        seed=args.seed,
        dtype=args.dtype,
        tol=args.tol,
        polish_steps=args.polish_steps,
        dmin_weight=args.dmin_weight,
        polish_lr=args.polish_lr,
        polish_dtype=args.polish_dtype,
    )
    show = not args.quiet
    if path.suffix == ".pt":
        items, feats = _items_from_features(path, args.limit, args.composition)
        params = feats.params
        desc = {
            "path": str(path.resolve()),
            "kind": "representations",
            "limit": args.limit,
            "composition": args.composition,
        }
    else:
        from ..params import EADParams

        dataset = args.dataset or dataset_from_path(path)
        n_max = args.n_max or (DATASET_N_MAX.get(dataset) if dataset else None)
        if n_max is None:
            raise ValueError(
                f"cannot tell n_max for {path}; pass --n-max N or --dataset perov_5|carbon_24|mp_20"
            )
        params = EADParams()
        items = _items_from_truth(path, n_max, params, args.limit, show)
        desc = {
            "path": str(path.resolve()),
            "kind": "ground truth",
            "n_max": n_max,
            "dataset": dataset,
            "limit": args.limit,
        }
    summary = run_job(
        items,
        args.output,
        config=config,
        params=params,
        input_desc=desc,
        batch_size=args.batch_size,
        device=device,
        show_progress=show,
    )
    if summary:
        print("srd-reconstruct: " + summary_line(summary))
        print(f"  wrote {args.output}/cifs, results.csv, eval_recon.pt, summary.json")
    return 0


def entry() -> None:
    run(main, "srd-reconstruct")


if __name__ == "__main__":
    sys.exit(main())
