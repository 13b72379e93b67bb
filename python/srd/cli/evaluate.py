"""srd-evaluate: score generated or reconstructed crystals with the community protocol (CDVAE's metrics).

srd-evaluate gen INPUT --reference data/mp_20/test.csv.gz [-o OUT] [--n-samples 1000]
srd-evaluate recon RECON_OUT --reference data/perov_5/test.csv.gz
srd-evaluate sun GEN --train data/mp_20/train.csv.gz [--hull REF ...] [--relax] [-o OUT]
srd-evaluate repr GEN --reference REF [-o OUT]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ._common import HelpFormatter, add_quiet_arg, check_output_dir, positive_int, run

#: StructureMatcher defaults of `sun` (srd.metrics.sun.MATCHER_SETTINGS; repeated so that --help does not
#: import pymatgen).
MATCHER_DEFAULTS = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}

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


SUN_DESCRIPTION = """\
S.U.N. rates of generated crystals (MatterGen's metric), every rate over all generated crystals:

  unique   the first crystal of each group of StructureMatcher duplicates among the generated ones
  novel    no training crystal (all TRAIN files) matches it
  stable   E_hull <= 0 eV/atom (and, reported beside it, E_hull <= --threshold) on a proxy hull
  S.U.N.   stable and unique and novel

StructureMatcher settings: ltol 0.2, stol 0.3, angle_tol 5 (MatterGen's, pymatgen's defaults), primitive
cells, volumes scaled; crystals are bucketed by reduced composition first. Uniqueness and novelty are those of
the crystals as generated.

E_hull needs --hull (and CHGNet: pip install "srd[sun]"): the hull is built from the REF crystals' CHGNet
static energies (cached in $SRD_CACHE_DIR/chgnet_energies or ~/.cache/srd/chgnet_energies). It is a
potential-based PROXY hull, not the Materials Project DFT hull. Generated crystals get static CHGNet
energies, or relaxed ones with --relax. An element of the REF or GEN crystals that no REF crystal is a pure
phase of gets an elemental reference from CHGNet-relaxed prototypes (the lowest of fcc, bcc, hcp, simple
cubic and diamond; cached per element; not for noble gases; --no-element-prototypes turns this off); a crystal
whose elements the hull still lacks gets no E_hull (the reason is in sun.csv). Writes OUT/sun.json, OUT/sun.csv (one row per crystal) and OUT/e_hull.png."""


REPR_DESCRIPTION = """\
Judge generated representation vectors R in R space, without reconstruction: GEN against REF (the
featurised test split), per block of R (ead = ead_max + ead_min, dmin, lattice, composition, size, and
all of R):

  NN gen->ref   mean Euclidean distance from each generated vector to its nearest reference vector
                (precision-like)
  NN ref->gen   mean distance from each reference vector to its nearest generated vector (recall-like)
  W1            mean (and max) over the block's coordinates of the 1-D Wasserstein distance between the
                generated and the reference marginals

in the units of R as stored (SPEC section 2: EAD, d_min and lattice min-max scaled, composition
fractions and n / n_max unscaled). From the decoded vectors (srd.representation.decode): the fraction
that decode (rejections counted by reason), SMACT composition validity (over all vectors), and the EMD
of the number of elements and of the density (g/cm^3, from the decoded lattice and composition), as
CDVAE computes them: N valid (decoded, SMACT-valid) generated vectors per seed against every reference
vector; mean +- std over the seeds.

GEN and REF are representations files (.pt written by srd-featurize, or srd-sample's representations.pt;
an srd-sample output folder means its representations.pt) or crystals, a CSV(.gz) with a 'cif' column,
which are featurised here (srd-featurize's featurisation and cache). Scaling statistics: --stats, else
GEN's file, else REF's, else fitted on REF; a representations file with other statistics is rescaled
into them exactly. Both sides must have the same descriptor grid and n_max. Writes OUT/repr.json and
prints the tables.

examples:
  srd-evaluate repr samples/ --reference data/perov_5/test.csv.gz
  srd-evaluate repr data/perov_5/val.csv.gz -r data/perov_5/test.csv.gz -o ceiling --subsample 500"""


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


CSP_DESCRIPTION = """\
Crystal structure prediction, DiffCSP's protocol: each test crystal's composition is given, K structures
are generated for it (srd-sample --compositions-from TEST.csv --samples-per-composition K), and the test
crystal is found @1 when its first structure matches it and @K when any of its K does, with
StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3). RMSE: the mean RMS distance (normalised by
(V / n)^(1/3), pymatgen's) of the first / best match over the found crystals. A crystal with no prediction
(an element the model never saw, a failed reconstruction) is a miss. srd also reports "lowest-loss of K":
the one of the K with the lowest reconstruction loss (no ground truth used), srd's own addition.
Another tool's CDVAE/DiffCSP-format .pt (num_evals predictions per crystal, in the test split's order) is
scored the same way with --reference. Writes csp.json into OUT (or next to the .pt).

examples:
  srd-sample --pretrained mp_20 --compositions-from data/mp_20/test.csv.gz --sample 1000 --sample-seed 0 -o csp1
  srd-evaluate csp csp1
  srd-evaluate csp diffcsp_eval_diff.pt --reference data/mp_20/test.csv.gz
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="srd-evaluate",
        description="Evaluate generated (gen) or reconstructed (recon) crystals with the CDVAE community protocol, "
        "or generated crystals' S.U.N. rates (sun: stable, unique, novel), or generated representation "
        "vectors in R space without reconstruction (repr).",
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{gen,recon,sun,repr}")

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

    c = sub.add_parser("csp", help="structure prediction (DiffCSP's protocol): match rate @1 and @K, RMSE",
                       description=CSP_DESCRIPTION, formatter_class=HelpFormatter)  # fmt: skip
    c.add_argument("input", metavar="OUT",
                   help="a folder written by srd-sample --compositions-from, or another tool's CDVAE/DiffCSP-format "
                   ".pt (num_evals predictions per crystal, in REF's order; needs --reference)")  # fmt: skip
    c.add_argument("--reference", "-r", metavar="REF",
                   help="for a .pt: the test split it predicts (CSV(.gz)); a folder names its own")  # fmt: skip
    c.add_argument("--sample", type=positive_int, metavar="N",
                   help="for a .pt: score a seeded random sample of N of REF's crystals (srd-reconstruct's rows)")  # fmt: skip
    c.add_argument("--sample-seed", type=int, default=0, metavar="S", help="seed of --sample")
    c.add_argument(
        "--workers", type=positive_int, default=os.cpu_count() or 1, help="worker processes for matching"
    )
    add_quiet_arg(c)

    s = sub.add_parser("sun", help="S.U.N. rates: unique, novel and (with --hull) stable on a CHGNet proxy hull",
                       description=SUN_DESCRIPTION, formatter_class=HelpFormatter)  # fmt: skip
    s.add_argument("input", metavar="GEN", help="generated crystals: folder (with cifs/ or *.cif), CSV(.gz) with a "
                   "'cif' column, or CDVAE-format eval_gen.pt")  # fmt: skip
    s.add_argument("--train", "-t", nargs="+", required=True, metavar="TRAIN",
                   help="training crystals (CSV(.gz) with a 'cif' column, or any GEN format): novelty is measured "
                   "against all of them together")  # fmt: skip
    s.add_argument("--hull", nargs="+", default=None, metavar="REF",
                   help="reference crystals whose CHGNet static energies build the proxy convex hull (they need "
                   "elemental phases); computes E_hull and the stable and S.U.N. rates (needs srd[sun])")  # fmt: skip
    s.add_argument("--relax", action="store_true",
                   help="relax the generated crystals with CHGNet (FIRE) first and use the relaxed energies "
                   "(needs srd[sun]); uniqueness and novelty stay those of the crystals as generated")  # fmt: skip
    s.add_argument("-o", "--out", default=None, metavar="OUT",
                   help="output folder; default: GEN itself when it is a folder, else GEN's name + '_metrics'")  # fmt: skip
    s.add_argument("--ltol", type=float, default=MATCHER_DEFAULTS["ltol"],
                   help="StructureMatcher fractional length tolerance")  # fmt: skip
    s.add_argument("--stol", type=float, default=MATCHER_DEFAULTS["stol"],
                   help="StructureMatcher site tolerance (fraction of the average free length per atom)")  # fmt: skip
    s.add_argument("--angle-tol", type=float, default=MATCHER_DEFAULTS["angle_tol"],
                   help="StructureMatcher angle tolerance (degrees)")  # fmt: skip
    s.add_argument(
        "--fmax", type=float, default=0.1, help="--relax: stop when every force is below this (eV/A)"
    )
    s.add_argument("--steps", type=positive_int, default=500,
                   help="--relax: at most this many FIRE steps per crystal (unconverged ones are kept, flagged)")  # fmt: skip
    s.add_argument("--threshold", type=float, default=0.1,
                   help="the looser stability criterion E_hull <= THRESHOLD (eV/atom), reported beside E_hull <= 0")  # fmt: skip
    s.add_argument("--device", default="cpu", help="CHGNet device: cpu, cuda, cuda:N or auto")
    s.add_argument("--no-cache", action="store_true",
                   help="recompute the --hull references' CHGNet energies and elemental prototypes (and do not "
                   "cache them)")  # fmt: skip
    s.add_argument("--no-element-prototypes", action="store_true",
                   help="do not stand in CHGNet-relaxed elemental prototypes for elements with no elemental "
                   "REF crystal (compounds of such elements then leave the hull)")  # fmt: skip
    s.add_argument("--no-plots", action="store_true", help="skip the E_hull histogram")
    s.add_argument("--sample", type=positive_int, default=None, metavar="N",
                   help="score a seeded uniform random sample of N crystals of GEN (numpy "
                   "default_rng(S).choice over its rows, as srd-reconstruct --sample; rows and ids in sun.json)")  # fmt: skip
    s.add_argument("--sample-seed", type=int, default=0, metavar="S", help="the seed of --sample")
    add_quiet_arg(s)

    e = sub.add_parser("repr", help="R-space metrics of generated representation vectors (no reconstruction)",
                       description=REPR_DESCRIPTION, formatter_class=HelpFormatter)  # fmt: skip
    e.add_argument("input", metavar="GEN", help="generated vectors: a representations file (.pt), an srd-sample "
                   "output folder (its representations.pt), or crystals in a CSV(.gz) with a 'cif' column")  # fmt: skip
    e.add_argument("--reference", "-r", required=True, metavar="REF",
                   help="reference: a representations file (.pt) or crystals in a CSV(.gz) (the test split)")  # fmt: skip
    e.add_argument("-o", "--out", default=None, metavar="OUT",
                   help="output folder for repr.json; default: GEN itself when it is a folder, else GEN's name + "
                   "'_metrics'")  # fmt: skip
    e.add_argument("--stats", default=None, metavar="FILE",
                   help="scaling statistics of the common R space (a feature file or an srd-train checkpoint); "
                   "default: GEN's file, else REF's, else fitted on REF")  # fmt: skip
    size = e.add_mutually_exclusive_group()
    size.add_argument("--dataset", choices=DATASETS, default=None,
                      help="sets n_max when both inputs are CSVs (default: guessed from the paths)")  # fmt: skip
    size.add_argument("--n-max", type=positive_int, default=None,
                      help="n_max when both inputs are CSVs whose paths name no dataset")  # fmt: skip
    e.add_argument("--composition", choices=("largest-remainder", "nearest"), default="largest-remainder",
                   help="how decoding turns composition fractions into atom counts (srd-sample's --composition)")  # fmt: skip
    e.add_argument("--n-samples", type=positive_int, default=1000,
                   help="generated vectors drawn (without replacement) for the EMDs; all of the pool when fewer")  # fmt: skip
    e.add_argument("--seeds", type=_seeds, default=[0, 1, 2], metavar="S1,S2,...",
                   help="seeds of the EMD draws; mean and std over them are reported")  # fmt: skip
    e.add_argument("--emd-pool", choices=("valid", "decoded"), default="valid",
                   help="generated vectors the EMDs draw from: decoded and SMACT-valid (CDVAE's valid samples, "
                   "less structure validity, which needs positions) or every decoded vector")  # fmt: skip
    e.add_argument("--subsample", type=positive_int, default=None, metavar="N",
                   help="score N randomly chosen vectors (crystals) of each side, drawn without replacement "
                   "with numpy default_rng(--seed) before featurising; default: all")  # fmt: skip
    e.add_argument("--seed", type=int, default=0, help="seed of --subsample")
    e.add_argument("--chunk", type=positive_int, default=1024,
                   help="generated rows per block of the nearest-neighbour distance matrix (memory ~ CHUNK x "
                   "len(REF) doubles)")  # fmt: skip
    e.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="processes for CIF parsing when an input is a CSV")  # fmt: skip
    e.add_argument("--no-cache", action="store_true",
                   help="featurise CSV inputs afresh (neither read nor write the featurisation cache)")  # fmt: skip
    add_quiet_arg(e)
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


def _fmt_rate(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _sun_plot(e_hull, out: Path, threshold: float) -> None:
    """Histogram of the finite E_hull values, labelled as a CHGNet proxy hull."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..utils import atomic_write_bytes

    e = np.asarray(e_hull, dtype=float)
    e = e[np.isfinite(e)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(e, bins=min(60, max(10, len(e) // 5)), color="tab:blue", alpha=0.8)
    ax.axvline(0.0, color="k", lw=1, label="E_hull = 0")
    ax.axvline(threshold, color="tab:red", lw=1, ls="--", label=f"E_hull = {threshold:g}")
    ax.set_xlabel("E_hull (eV/atom), CHGNet proxy hull (not the MP DFT hull)")
    ax.set_ylabel("crystals")
    ax.set_title(f"{len(e)} generated crystals with an E_hull")
    ax.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(out / "e_hull.png", buf.getvalue())


def _sun(args) -> int:
    import math

    import pandas as pd

    from ..metrics import resolve_input, sun
    from ..utils import atomic_write_text, resolve_device, run_metadata, write_json

    inp = Path(args.input)
    if not inp.exists():
        raise FileNotFoundError(f"GEN not found: {inp}")
    for flag, paths in (("--train", args.train), ("--hull", args.hull or [])):
        for f in paths:
            if not Path(f).exists():
                raise FileNotFoundError(f"{flag} not found: {f}")
    energies_wanted = bool(args.hull or args.relax)
    device = "cpu"
    if energies_wanted:
        try:
            sun.require_chgnet()
        except sun.MissingDependencyError as err:
            raise ValueError(str(err)) from None
        device = str(resolve_device(args.device))
    for name in ("ltol", "stol", "angle_tol"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    out = check_output_dir(Path(args.out) if args.out else _default_out(inp), flag="-o/--out", create=False)
    show = not args.quiet
    t0 = time.time()

    gen_path = resolve_input(inp)
    sample = None
    if args.sample is not None:
        from ..reconstruction.job import SAMPLE_METHOD, sample_rows
        from ..structures import count_structures

        population = count_structures(gen_path)
        rows = sample_rows(population, args.sample, args.sample_seed)
        sample = {"n": args.sample, "seed": args.sample_seed, "population": population, "method": SAMPLE_METHOD,
                  "rows": rows}  # fmt: skip
    ids, gen, read_errors = sun.read_crystals(gen_path, what="GEN", rows=sample["rows"] if sample else None)
    if sample:
        sample["ids"] = ids
    train, n_train_unreadable = [], 0
    for f in args.train:
        _, structures, _ = sun.read_crystals(f, what="--train")
        train += [s for s in structures if s is not None]
        n_train_unreadable += sum(s is None for s in structures)
    matcher = sun.make_matcher(args.ltol, args.stol, args.angle_tol)
    uni = sun.uniqueness(gen, matcher, show_progress=show)
    nov = sun.novelty(gen, train, matcher, show_progress=show)

    n = len(gen)
    e_pa = [math.nan] * n
    e_init = [math.nan] * n
    e_hull = [math.nan] * n
    relaxed = [False] * n
    steps = [None] * n
    converged = [None] * n
    reasons: list[list[str]] = [[e] if e else [] for e in read_errors]
    energy_info = None
    hull_info = None
    if args.relax:
        results = sun.relax(gen, fmax=args.fmax, steps=args.steps, device=device, show_progress=show)
        for i, r in enumerate(results):
            if r.structure is not None:
                e_pa[i], e_init[i], relaxed[i] = r.e_final, r.e_initial, True
                steps[i], converged[i] = r.n_steps, r.converged
            elif gen[i] is not None:
                reasons[i].append(r.error or "relaxation failed")
        energy_info = {"kind": "relaxed", "optimizer": "FIRE (CHGNet StructOptimizer, FrechetCellFilter)",
                       "fmax": args.fmax, "steps": args.steps, "n_relaxed": sum(relaxed),
                       "n_converged": sum(bool(c) for c in converged)}  # fmt: skip
    elif args.hull:
        st = sun.static_energies(gen, device=device, show_progress=show)
        for i in range(n):
            e_pa[i] = float(st.e_per_atom[i])
            if st.errors[i] and gen[i] is not None:
                reasons[i].append(st.errors[i])
        energy_info = {"kind": "static"}
    if energy_info is not None:
        energy_info.update({"model": "CHGNet (pretrained)", "chgnet_version": sun.chgnet_version(),
                            "device": device, "n_with_energy": sum(math.isfinite(x) for x in e_pa)})  # fmt: skip
    if args.hull:
        ref_structures, ref_energies, caches = [], [], []
        for f in args.hull:
            rids, rs, _ = sun.read_crystals(f, what="--hull")
            res, cache = sun.reference_energies(f, rs, rids, use_cache=not args.no_cache, device=device,
                                                show_progress=show)  # fmt: skip
            ref_structures += rs
            ref_energies += [float(x) for x in res.e_per_atom]
            caches.append({"file": str(f), **cache})
        prototype_info = {"enabled": not args.no_element_prototypes}
        element_refs = None
        if not args.no_element_prototypes:
            wanted = sun.missing_elements(ref_structures, ref_energies, gen)
            element_refs = sun.elemental_references(wanted, device=device, use_cache=not args.no_cache,
                                                    show_progress=show)  # fmt: skip
            prototype_info.update({
                "note": sun.PROTOTYPE_NOTE, "prototypes": list(sun.ELEMENT_PROTOTYPES),
                "fmax": sun.PROTOTYPE_FMAX, "steps": sun.PROTOTYPE_STEPS, "requested": wanted,
                "elements": {el: r.summary() for el, r in element_refs.items() if r.ok},
                "failed": {el: r.error for el, r in element_refs.items() if not r.ok},
            })  # fmt: skip
        hull = sun.proxy_hull(ref_structures, ref_energies, element_refs)
        prototype_info["used"] = hull.prototypes
        for i in range(n):
            if gen[i] is None or not math.isfinite(e_pa[i]):
                continue
            e_hull[i], why = sun.e_above_hull(gen[i], e_pa[i], hull)
            if why:
                reasons[i].append(why)
        hull_info = {"label": hull.label, "references": [str(f) for f in args.hull],
                     "n_reference_crystals": len(ref_structures), "n_entries": hull.n_entries,
                     "n_dropped": len(hull.dropped), "elements": sorted(hull.elements),
                     "reference_energies": "CHGNet static energies of the crystals as given", "cache": caches,
                     "element_prototypes": prototype_info}  # fmt: skip
    rates = sun.sun_rates(
        uni["unique"], nov["novel"], e_hull if args.hull else None, threshold=args.threshold
    )

    rows = {
        "id": ids,
        "formula": ["" if s is None else s.composition.reduced_formula for s in gen],
        "unique": uni["unique"],
        "novel": nov["novel"],
        "e_per_atom": e_pa,
        "e_hull": e_hull,
        "relaxed": relaxed,
    }
    if args.relax:
        rows.update({"e_per_atom_initial": e_init, "relax_steps": steps, "converged": converged})
    rows["failure"] = ["; ".join(r) for r in reasons]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sun.csv", pd.DataFrame(rows).to_csv(index=False))
    plotted = bool(args.hull) and not args.no_plots and any(math.isfinite(x) for x in e_hull)
    if plotted:
        _sun_plot(e_hull, out, args.threshold)
    res = {
        "rates": rates,
        "n_generated": n,
        "n_unreadable": sum(s is None for s in gen),
        "uniqueness": {k: uni[k] for k in ("n_unique", "rate", "settings")},
        "novelty": {k: nov[k] for k in ("n_novel", "rate", "n_train", "settings")}
        | {"n_train_unreadable": n_train_unreadable},
        "matched_structures": "as generated (not the relaxed ones)",
        "energies": energy_info,
        "hull": hull_info,
        "inputs": {"generated": str(gen_path), "train": [str(f) for f in args.train]},
        "sample": sample,
        "seconds": round(time.time() - t0, 2),
        "run": run_metadata(),
    }
    write_json(out / "sun.json", res)

    print(f"srd-evaluate sun: {n} generated crystals ({res['n_unreadable']} unreadable) vs {nov['n_train']} "
          f"training crystals, {res['seconds']:.0f} s")  # fmt: skip
    thr = f"{args.threshold:g}"
    print(f"  unique %                    {_fmt_rate(rates['unique'])}")
    print(f"  novel %                     {_fmt_rate(rates['novel'])}")
    print(f"  unique & novel %            {_fmt_rate(rates['unique_novel'])}")
    if args.hull:
        print(f"  stable % (E_hull <= 0)      {_fmt_rate(rates['stable'])}")
        print(f"  stable % (E_hull <= {thr})    {_fmt_rate(rates[f'stable_{thr}'])}")
        print(f"  S.U.N. %                    {_fmt_rate(rates['sun'])}")
        print(f"  S.U.N. % (E_hull <= {thr})    {_fmt_rate(rates[f'sun_{thr}'])}")
        print(f"  ({rates['n_with_e_hull']} crystals with an E_hull; {hull.label})")
        if hull.prototypes:
            used = ", ".join(f"{el} {p}" for el, p in hull.prototypes.items())
            print(f"  elemental prototypes stood in for: {used}")
    written = [out / "sun.json", out / "sun.csv"] + ([out / "e_hull.png"] if plotted else [])
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


def _repr(args) -> int:
    from ..metrics.repr_eval import evaluate_representations, input_kind, markdown_table
    from ..utils import run_metadata, write_json
    from .featurize import load_stats

    inp = Path(args.input)
    input_kind(inp, what="GEN")
    input_kind(args.reference, what="REF")
    out = check_output_dir(Path(args.out) if args.out else _default_out(inp), flag="-o/--out", create=False)
    stats = None
    if args.stats:
        stats = load_stats(args.stats)[0]
    t0 = time.time()
    res = evaluate_representations(
        inp, args.reference, stats=stats, n_max=args.n_max, dataset=args.dataset, subsample=args.subsample,
        seed=args.seed, use_cache=not args.no_cache, workers=args.workers, show_progress=not args.quiet,
        composition=args.composition, n_samples=args.n_samples, seeds=args.seeds, emd_pool=args.emd_pool,
        chunk=args.chunk,
    )  # fmt: skip
    if args.stats:
        res["scaling_statistics"] = f"given (--stats {args.stats})"
    res["seconds"] = round(time.time() - t0, 2)
    res["run"] = run_metadata()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "repr.json", res)
    sub = f", subsample {args.subsample} (seed {args.seed})" if args.subsample else ""
    print(f"srd-evaluate repr: {res['n_generated']} generated vs {res['n_reference']} reference vectors "
          f"(R dim {res['dim']}, n_max {res['n_max']}{sub}; scaling statistics: {res['scaling_statistics']}), "
          f"{res['seconds']:.0f} s")  # fmt: skip
    print(markdown_table(res))
    print(f"wrote {out / 'repr.json'}")
    return 0


def _csp(args) -> int:
    from ..metrics import csp
    from ..metrics.recon import MATCHER_SETTINGS
    from ..utils import run_metadata

    inp = Path(args.input)
    if not inp.exists():
        raise FileNotFoundError(f"OUT not found: {inp}")
    if inp.is_dir():
        if args.reference or args.sample:
            raise ValueError(
                "--reference/--sample are for a .pt; a folder's csp_plan.json names its reference"
            )
        report = csp.evaluate_csp_folder(inp, workers=args.workers, show_progress=not args.quiet)
        out = inp
    else:
        if not args.reference:
            raise ValueError(f"{inp} is a file: give --reference TEST.csv (the split it predicts, in order)")
        rows = None
        if args.sample:
            from ..reconstruction.job import sample_rows
            from ..structures import count_structures

            rows = sample_rows(count_structures(args.reference), args.sample, args.sample_seed)
        report = csp.evaluate_csp_pt(inp, args.reference, rows=rows, workers=args.workers,
                                     show_progress=not args.quiet)  # fmt: skip
        out = inp.parent
    report.update(matcher=dict(MATCHER_SETTINGS), run=run_metadata())
    path = csp.write_report(report, out)
    k = report["k"]
    line = f"srd-evaluate csp: {report['n']} crystals; match @1 {report['at_1']['match_rate']:.2f} %"
    if report["at_1"]["rmse"] is not None:
        line += f" (RMSE {report['at_1']['rmse']:.4f})"
    if k > 1:
        line += f", @{k} {report[f'at_{k}']['match_rate']:.2f} %"
        if report[f"at_{k}"]["rmse"] is not None:
            line += f" (RMSE {report[f'at_{k}']['rmse']:.4f})"
    if "ranked_at_1" in report and k > 1:
        line += f", lowest-loss of {k} {report['ranked_at_1']['match_rate']:.2f} %"
    print(line)
    if report.get("skipped"):
        print(f"  no prediction (counted as misses): {report['skipped']}")
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run srd-evaluate with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "gen":
        return _gen(args)
    if args.command == "sun":
        return _sun(args)
    if args.command == "repr":
        return _repr(args)
    if args.command == "csp":
        return _csp(args)
    return _recon(args)


def entry() -> None:
    """Console-script entry point."""
    run(main, "srd-evaluate")


if __name__ == "__main__":  # pragma: no cover
    entry()
