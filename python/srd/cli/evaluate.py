"""srd-evaluate: score generated or reconstructed crystals with the community protocol (CDVAE's metrics).

srd-evaluate gen INPUT --reference data/mp_20/test.csv.gz [-o OUT] [--n-samples 1000]
srd-evaluate recon RECON_OUT --reference data/perov_5/test.csv.gz
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ._common import HelpFormatter, add_quiet_arg, check_output_dir, positive_int, run

__all__ = ["main", "entry", "build_parser"]

DATASETS = ("perov_5", "carbon_24", "mp_20")

GEN_DESCRIPTION = """\
Score generated crystals against a reference split (the test split) exactly as CDVAE's
scripts/compute_metrics.py does:

  comp. validity   SMACT charge neutrality + Pauling electronegativity test (single elements and
                   all-metal alloys are valid), over all samples
  struct. validity all interatomic distances >= 0.5 A and volume >= 0.1 A^3, over all samples
  EMD # elem.      Wasserstein distance of the number of distinct elements and of the density
  EMD density      (g/cm^3) between N random valid samples and the reference (mean +- std over seeds)
  COV-R / COV-P    coverage recall / precision from CrystalNN "ops" structure fingerprints and
                   standardised Magpie composition fingerprints, with CDVAE's thresholds (headline)
                   and the looser SyMat thresholds the StructRepDiff paper used (labelled)

INPUT is a folder with a cifs/ subfolder, a folder of .cif files, a CSV(.gz) with a 'cif' column, or a
CDVAE-format eval_gen.pt (checked for internal consistency first: an inconsistent file is refused with
exit status 2; a crystal with non-finite or impossible values is unreadable and counts as invalid, and the
report says how many and why). Writes OUT/metrics.json, OUT/metrics.md (the paper's Table 2 layout with the
paper's row and the data ceiling beside ours), OUT/per_crystal.csv and OUT/*.png. The reference's
fingerprints are cached ($SRD_CACHE_DIR/fingerprints or ~/.cache/srd/fingerprints)."""

RECON_DESCRIPTION = """\
Score a srd-reconstruct output folder (cifs/<id>.cif and results.csv) against the reference crystals with
the same ids (material_id column of REF, else the row number): pymatgen StructureMatcher(stol=0.5,
angle_tol=10, ltol=0.3); match rate over all crystals of results.csv (a missing or unreadable CIF is a
miss); RMSE = mean RMS distance over matched crystals. Also reports CDVAE's RecEval variant, where an
invalid prediction counts as a miss. Writes OUT/recon_metrics.json."""


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2; got {text!r}"
        ) from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


def _cutoffs(text: str) -> tuple[float, float]:
    try:
        s, c = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STRUCT,COMP such as 0.4,10; got {text!r}") from None
    if not (s > 0 and c > 0):
        raise argparse.ArgumentTypeError(f"cutoffs must be positive, got {text!r}")
    return s, c


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="srd-evaluate",
        description="Evaluate generated (gen) or reconstructed (recon) crystals with the CDVAE community protocol.",
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{gen,recon}")

    g = sub.add_parser("gen", help="generation metrics (validity, EMDs, COV-R/COV-P)", description=GEN_DESCRIPTION,
                       formatter_class=HelpFormatter)  # fmt: skip
    g.add_argument("input", metavar="INPUT", help="generated crystals: folder (with cifs/ or *.cif), CSV(.gz) with a "
                   "'cif' column, or CDVAE-format eval_gen.pt")  # fmt: skip
    g.add_argument("--reference", "-r", required=True, metavar="REF",
                   help="reference crystals (the test split), a CDVAE-format CSV(.gz)")  # fmt: skip
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help="benchmark that sets the COV thresholds and n_max; default: guessed from the REF path")  # fmt: skip
    g.add_argument("-o", "--out", default=None, metavar="OUT",
                   help="output folder; default: INPUT itself when it is a folder, else INPUT's name + '_metrics'")  # fmt: skip
    g.add_argument("--n-samples", type=positive_int, default=1000,
                   help="valid samples drawn (without replacement) for the EMDs; all valid ones when fewer")  # fmt: skip
    g.add_argument("--seeds", type=_seeds, default=[0, 1, 2], metavar="S1,S2,...",
                   help="seeds of the EMD draws; mean and std over them are reported")  # fmt: skip
    g.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="worker processes for parsing and fingerprinting")  # fmt: skip
    g.add_argument("--cov-cutoffs", type=_cutoffs, default=None, metavar="STRUCT,COMP",
                   help="custom COV thresholds instead of the dataset's CDVAE and SyMat ones")  # fmt: skip
    g.add_argument(
        "--no-cache", action="store_true", help="recompute the reference fingerprints (and do not cache them)"
    )
    g.add_argument("--exact-fingerprints", action="store_true",
                   help="run matminer's CrystalNNFingerprint itself (about 3x slower; same values to rounding)")  # fmt: skip
    g.add_argument("--max-sphere-sites", type=positive_int, default=20000,
                   help="do not fingerprint crystals so dense that CrystalNN's 7 A sphere would hold more atoms")  # fmt: skip
    g.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    g.add_argument("--plot-samples", type=positive_int, default=2000,
                   help="at most this many crystals per side in the EAD PCA figure")  # fmt: skip
    add_quiet_arg(g)

    r = sub.add_parser("recon", help="reconstruction match rate and RMSE", description=RECON_DESCRIPTION,
                       formatter_class=HelpFormatter)  # fmt: skip
    r.add_argument(
        "out", metavar="OUT", help="folder written by srd-reconstruct (cifs/<id>.cif and results.csv)"
    )
    r.add_argument("--reference", "-r", required=True, metavar="REF",
                   help="reference crystals, a CDVAE-format CSV(.gz); ids = material_id column, else the row number")  # fmt: skip
    r.add_argument(
        "--workers", type=positive_int, default=os.cpu_count() or 1, help="worker processes for matching"
    )
    add_quiet_arg(r)
    return p


def _default_out(inp: Path) -> Path:
    if inp.is_dir():
        return inp
    name = inp.name
    for suffix in (".csv.gz", ".csv", ".pt", ".cif", ".extxyz", ".xyz"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return inp.parent / f"{name}_metrics"


def _gen(args) -> int:
    from ..metrics import evaluate_generation, resolve_input
    from ..metrics.report import summary_table, unreadable_summary, write_generation_report
    from ..representation import dataset_from_path

    inp = Path(args.input)
    ref = Path(args.reference)
    if not inp.exists():
        raise FileNotFoundError(f"INPUT not found: {inp}")
    if not ref.is_file():
        raise FileNotFoundError(f"--reference not found: {ref}")
    if not ref.name.lower().endswith((".csv", ".csv.gz")):
        raise ValueError(f"--reference {ref}: expected a CDVAE-format CSV(.gz) with a 'cif' column")
    dataset = args.dataset or dataset_from_path(ref)
    if dataset is None and args.cov_cutoffs is None:
        raise ValueError(
            f"cannot tell the dataset from --reference {ref}; pass --dataset perov_5|carbon_24|mp_20 "
            "(it sets the COV thresholds) or --cov-cutoffs STRUCT,COMP"
        )
    out = check_output_dir(Path(args.out) if args.out else _default_out(inp), flag="-o/--out", create=False)
    crystals = resolve_input(inp)
    t0 = time.time()
    res = evaluate_generation(
        crystals, ref, dataset=dataset, n_samples=args.n_samples, seeds=args.seeds, workers=args.workers,
        use_cache=not args.no_cache, exact_fingerprints=args.exact_fingerprints,
        max_sphere_sites=args.max_sphere_sites,
        cov_thresholds={"custom": args.cov_cutoffs} if args.cov_cutoffs else None, show_progress=not args.quiet,
    )  # fmt: skip
    res.metrics["seconds"] = round(time.time() - t0, 2)
    write_generation_report(
        res, out, inputs={"generated": str(crystals), "reference": str(ref)}, plots=not args.no_plots,
        plot_samples=args.plot_samples,
    )  # fmt: skip
    m = res.metrics
    v = m["validity"]
    print(f"srd-evaluate gen: {v['n_generated']} generated crystals ({v['n_valid']} valid) vs {m['n_reference']} "
          f"reference crystals [{dataset or 'custom thresholds'}], {m['seconds']:.0f} s")  # fmt: skip
    print(summary_table(m))
    if v.get("n_unreadable"):
        print(f"  {unreadable_summary(m)}")
    fails = m["fingerprint_failures"]
    if fails["generated"] or fails["reference"]:
        print(f"  not read/fingerprinted: {len(fails['generated'])} generated, {len(fails['reference'])} reference "
              "(listed in metrics.json)")  # fmt: skip
    print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}" + ("" if args.no_plots else " and figures"))
    return 0


def _recon(args) -> int:
    from ..metrics import evaluate_reconstruction
    from ..utils import run_metadata, write_json

    out = Path(args.out)
    if out.is_dir():
        check_output_dir(out, flag="OUT", create=False)  # recon_metrics.json is written into it
    ref = Path(args.reference)
    if not ref.is_file():
        raise FileNotFoundError(f"--reference not found: {ref}")
    if not ref.name.lower().endswith((".csv", ".csv.gz")):
        raise ValueError(f"--reference {ref}: expected a CDVAE-format CSV(.gz) with a 'cif' column")
    t0 = time.time()
    res = evaluate_reconstruction(out, ref, workers=args.workers, show_progress=not args.quiet)
    res["reference"] = str(ref)
    res["seconds"] = round(time.time() - t0, 2)
    res["run"] = run_metadata()
    write_json(out / "recon_metrics.json", res)
    rmse = "—" if res["rmse"] is None else f"{res['rmse']:.4f}"
    c = res["cdvae_protocol"]
    crmse = "—" if c["rmse"] is None else f"{c['rmse']:.4f}"
    print(f"srd-evaluate recon: {res['n']} crystals, {res['n_matched']} matched "
          f"({res['n_predictions_missing_or_unreadable']} predictions missing or unreadable)")  # fmt: skip
    print(f"  match rate %          {res['match_rate']:.2f}")
    print(f"  RMSE                  {rmse}")
    print(f"  match rate % (CDVAE RecEval, invalid = miss)  {c['match_rate']:.2f}   RMSE {crmse}")
    print(f"wrote {out / 'recon_metrics.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run srd-evaluate with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "gen":
        return _gen(args)
    return _recon(args)


def entry() -> None:
    """Console-script entry point."""
    run(main, "srd-evaluate")


if __name__ == "__main__":  # pragma: no cover
    entry()
