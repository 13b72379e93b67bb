"""srd-featurize: crystals -> representation vectors R (a feature file for srd-train / srd-reconstruct)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..representation import DATASET_N_MAX, Features, ScalingStats, featurize
from ..utils import safe_torch_load
from ._common import HelpFormatter, add_quiet_arg, check_output_file, positive_int, run

DESCRIPTION = """\
Featurise crystals into StructRepDiff representation vectors R (SPEC section 2): pooled EAD (max and min
over atoms, / 1e6), minimum interatomic distance, lattice a, b, c, alpha, beta, gamma, composition
fractions (Z = 1..96) and n / n_max, with the continuous part min-max scaled.

Crystals are Niggli-reduced first, as CDVAE's preprocessing does. Crystals that cannot be read, contain
an element beyond Z = 96 or have more than n_max atoms are skipped and listed (one bad row never stops a
run). Results are cached by a hash of the input bytes and the descriptor parameters
($SRD_CACHE_DIR/features, default ~/.cache/srd/features), so srd-train and srd-reconstruct reuse them.

examples:
  srd-featurize data/perov_5/train.csv.gz -o perov_train.pt              # fits the scaling statistics
  srd-featurize data/perov_5/test.csv.gz -o perov_test.pt --stats perov_train.pt
  srd-featurize my_cifs/ -o mine.pt --n-max 20
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srd-featurize", description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument(
        "input",
        help="a CSV(.gz) with a 'cif' column (CDVAE format), a folder of .cif files, a .cif, "
        "or an extxyz file",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="the feature file to write (.pt, loadable with torch.load(weights_only=True))",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--n-max",
        type=positive_int,
        default=None,
        help="largest number of atoms per crystal (the size entry of R is n / n_max); larger crystals "
        "are skipped",
    )
    size.add_argument(
        "--dataset",
        choices=sorted(DATASET_N_MAX),
        default=None,
        help="benchmark name, which sets n_max (perov_5: 5, carbon_24: 24, mp_20: 20); guessed from the "
        "input path when neither this nor --n-max is given",
    )
    p.add_argument(
        "--stats",
        default=None,
        help="take the min-max scaling statistics from this file (a feature file or an srd-train "
        "checkpoint) instead of fitting them on the input; use the training split's statistics for "
        "test splits",
    )
    p.add_argument(
        "--limit", type=positive_int, default=None, help="only the first LIMIT crystals of the input"
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="crystals per descriptor call")
    p.add_argument(
        "--workers", type=positive_int, default=None, help="processes for CIF parsing (default: all cores)"
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the featurisation cache")
    p.add_argument(
        "--no-niggli", action="store_true", help="do not Niggli-reduce (not CDVAE's preprocessing)"
    )
    add_quiet_arg(p)
    return p


def load_stats(path: str | Path) -> tuple[ScalingStats, int | None, str | None]:
    """Scaling statistics (and n_max, dataset) from a feature file or an srd-train checkpoint."""
    data = safe_torch_load(path, what="statistics file")
    if isinstance(data, dict) and data.get("format") == "srd-features":
        f = Features.from_dict(data, where=str(path))
        return f.stats, f.n_max, f.dataset
    if isinstance(data, dict) and "stats" in data:
        return ScalingStats.from_dict(data["stats"]), data.get("n_max"), data.get("dataset") or None
    raise ValueError(
        f"--stats {path}: neither an srd feature file nor an srd-train checkpoint (no 'stats' entry)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_output_file(args.output, flag="-o/--output")
    stats = n_max_from_stats = dataset_from_stats = None
    if args.stats:
        stats, n_max_from_stats, dataset_from_stats = load_stats(args.stats)
    n_max = args.n_max or (None if args.dataset else n_max_from_stats)
    dataset = args.dataset or (dataset_from_stats if n_max is None else None)
    t0 = time.perf_counter()
    feats = featurize(
        args.input,
        n_max=n_max,
        dataset=dataset,
        stats=stats,
        niggli=not args.no_niggli,
        limit=args.limit,
        batch_size=args.batch_size,
        workers=args.workers,
        use_cache=not args.no_cache,
        show_progress=not args.quiet,
    )
    feats.save(args.output)
    seconds = time.perf_counter() - t0
    src = feats.source
    cached = " (from cache)" if "cache" in src else ""
    print(
        f"srd-featurize: {src.get('n_input', len(feats.ids) + len(feats.skipped))} crystals read from {args.input}, "
        f"{len(feats.ids)} featurised, {len(feats.skipped)} skipped{cached}; n_max = {feats.n_max}, "
        f"R has {feats.layout.dim} values; scaling statistics {src.get('stats', '')}; {seconds:.1f} s"
    )
    if feats.skipped:
        reasons = Counter(_reason_kind(reason) for _, reason in feats.skipped)
        print("  skipped by reason: " + ", ".join(f"{k}: {v}" for k, v in reasons.most_common()))
        for rid, reason in feats.skipped[:10]:
            print(f"  - {reason}" if rid in reason else f"  - {rid}: {reason}")
        if len(feats.skipped) > 10:
            print(
                f"  ... and {len(feats.skipped) - 10} more (all listed in the output file's 'skipped' entry)"
            )
    print(f"  wrote {args.output}")
    return 0


def _reason_kind(reason: str) -> str:
    for key, label in (
        ("exceed n_max", "too many atoms"),
        ("beyond Z", "element beyond Z = 96"),
        ("unreadable CIF", "unreadable CIF"),
        ("partial occupancies", "disordered sites"),
        ("exceeds the limit", "file too large"),
        ("empty CIF", "empty CIF"),
        ("no atom sites", "no atoms"),
        ("lists no atoms", "no atoms"),
        ("volume per atom", "cell too small for its atoms"),
        ("degenerate cell", "degenerate cell"),
        ("lattice is singular", "degenerate cell"),
        ("coincident atoms", "atoms too close"),
        ("overlapping atoms", "atoms too close"),
        ("truncated", "truncated frame"),
    ):
        if key in reason:
            return label
    return "other"


def entry() -> None:
    run(main, "srd-featurize")


if __name__ == "__main__":
    entry()
