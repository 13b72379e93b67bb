"""srd-reconstruct: representations -> crystals by batched basin hopping (the paper's Algorithm 2)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..recon_job import ReconItem, run_job, summary_line
from ..reconstruct import ReconstructConfig
from ..representation import (
    DATASET_N_MAX,
    Features,
    Rejected,
    dataset_from_path,
    decode,
    decoded_from_structures,
    prepare_structure,
)
from ..structures import read_structures
from ._common import (
    HelpFormatter,
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _items_from_truth(path: Path, n_max: int, params, limit, show_progress) -> list[ReconItem]:
    items, good = [], []
    for rec in read_structures(path, limit=limit):
        if rec.structure is None:
            items.append(ReconItem(rec.id, None, rec.error, scored=True))
            continue
        try:
            s = prepare_structure(rec.structure, n_max=n_max, where=rec.id)
        except ValueError as err:
            items.append(ReconItem(rec.id, None, str(err), scored=True))
            continue
        items.append(ReconItem(rec.id, None, None, s, scored=True))
        good.append(len(items) - 1)
    if not good:
        return items
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


def reconstruct_input(
    input: str | Path,
    output: str | Path,
    *,
    config: ReconstructConfig | None = None,
    n_max: int | None = None,
    dataset: str | None = None,
    composition: str = "largest-remainder",
    limit: int | None = None,
    batch_size: int = 64,
    device="cpu",
    show_progress: bool = True,
) -> dict:
    """srd-reconstruct as a function: reconstruct the crystals of ``input`` into the folder ``output``.

    ``input`` is ground truth (CSV(.gz) with a 'cif' column, folder of .cif, extxyz: featurised, then
    reconstructed and scored, the Table 1 protocol) or a representations file (.pt: decoded with
    ``composition``, then reconstructed). ``config`` defaults to the paper's budget
    (``ReconstructConfig.preset("paper")``). Rerunning with the same ``output`` resumes.

    Returns:
        The summary written to ``output``/summary.json (rank 0 under torchrun; {} on other ranks).
    """
    path = Path(input)
    if not path.exists():
        raise FileNotFoundError(f"no such input: {path}")
    check_output_dir(output, flag="-o/--output")
    config = config or ReconstructConfig.preset("paper")
    device = resolve_device(device) if isinstance(device, str) else device
    if path.suffix == ".pt":
        items, feats = _items_from_features(path, limit, composition)
        params = feats.params
        desc = {
            "path": str(path.resolve()),
            "kind": "representations",
            "limit": limit,
            "composition": composition,
        }
    else:
        from ..params import EADParams

        dataset = dataset or dataset_from_path(path)
        n_max = n_max or (DATASET_N_MAX.get(dataset) if dataset else None)
        if n_max is None:
            raise ValueError(
                f"cannot tell n_max for {path}; pass --n-max N or --dataset perov_5|carbon_24|mp_20"
            )
        params = EADParams()
        items = _items_from_truth(path, n_max, params, limit, show_progress)
        desc = {
            "path": str(path.resolve()),
            "kind": "ground truth",
            "n_max": n_max,
            "dataset": dataset,
            "limit": limit,
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
    )


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
