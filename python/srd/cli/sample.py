"""srd-sample: generate crystals with a trained model (diffusion in R space, decoding, reconstruction)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..generate import DEFAULT_BUDGET, sample_crystals
from ..pretrained import PRETRAINED, pretrained_path
from ..reconstruction import summary_line
from ._common import (
    HelpFormatter,
    add_quiet_arg,
    add_reconstruction_args,
    positive_int,
    reconstruct_config,
    run,
    template_library,
)

DESCRIPTION = """\
Sample new crystals from a model trained by srd-train:
  1. ancestral DDPM sampling (Algorithm 1) of N representation vectors R, or a K-step sampler;
  2. decoding of atom count, composition and lattice from each R (vectors that do not decode are
     recorded with the reason);
  3. reconstruction of the positions (srd-reconstruct's algorithm, every crystal batched).

OUT gets representations.pt (the sampled R, an srd feature file), cifs/*.cif, results.csv,
eval_gen.pt (CDVAE's layout, so the community's evaluators read it) and summary.json (rejections and
their reasons; seconds per crystal in diffusion and in reconstruction). Rerunning with the same OUT
reuses the samples and resumes the reconstruction. Evaluate with `srd-evaluate gen OUT --reference ...`.

The reconstruction budget is gen (<= 1,261 evaluations per crystal: template starts from the model's
training crystals, screened by their loss; the best start is kept as it is unless the search halves its
loss, since a generated vector is not exactly realisable and the descent would distort a right structure
to fit its noise; then snapped onto the space group found within 0.1 A when that does not raise the
loss) unless --budget NAME picks another (listed under
"reconstruction" below; --budget paper is the paper's Algorithm 2); flags given explicitly override
the budget's values. The template trials start from the model's training file (the run's config `data`)
when it is a CSV that exists here, or from --templates FILE.

A model trained with a *_cond config (and every --pretrained model) is factored: a composition model draws
each crystal's composition and atom count, and the diffusion model generates the EAD, d_min and lattice
blocks for it. Such a model also takes the composition: --formula SrTiO3 (with --formula-units K, or K
drawn by the composition model) or --chemical-system Li-Fe-O (compositions of exactly those elements,
drawn by the composition model); OUT/ranked.csv then lists the crystals by their reconstruction loss
(lowest first: the structure that realises its generated representation best) with their space groups.

examples:
  srd-sample --pretrained mp_20 -n 100 -o out
  srd-sample --pretrained mp_20 --formula NaCl -n 5 -o nacl
  srd-sample --pretrained perov_5 --chemical-system Sr-Ti-O -n 20 -o srtio
  srd-sample runs/perov/checkpoint.pt -n 32 -o samples --sampling-steps 100
  srd-sample runs/perov -n 1000 -o samples1k --trials 2 --hops 2 --steps 200
  srd-sample runs/perov -n 100 -o samples_fast --budget fast --composition nearest --dmin-weight 10
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srd-sample", description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="RUN/checkpoint.pt written by srd-train (or the RUN folder); or --pretrained",
    )
    p.add_argument(
        "--pretrained",
        metavar="NAME",
        help="a model shipped with srd instead of CHECKPOINT: "
        + "; ".join(f"{k}: {v}" for k, v in PRETRAINED.items()),
    )
    p.add_argument("--formula", help="generate crystals of this composition, e.g. SrTiO3 (factored models)")
    p.add_argument(
        "--formula-units",
        type=positive_int,
        help="formula units per cell for --formula (default: drawn in proportion to the composition model)",
    )
    p.add_argument(
        "--chemical-system",
        metavar="A-B-C",
        help="generate compositions of exactly these elements, e.g. Li-Fe-O (factored models)",
    )
    p.add_argument(
        "--compositions-from",
        metavar="REF",
        help="structure prediction (factored models): generate for the composition of every crystal of REF "
        "(CSV(.gz), CIF folder, extxyz); writes OUT/csp_plan.json for `srd-evaluate csp OUT`",
    )
    p.add_argument(
        "--samples-per-composition",
        type=positive_int,
        default=1,
        metavar="K",
        help="--compositions-from: structures per composition (DiffCSP reports K = 1 and 20)",
    )
    p.add_argument(
        "--sample",
        type=positive_int,
        metavar="N",
        help="--compositions-from: a seeded random sample of N of REF's crystals (srd-reconstruct's rows)",
    )
    p.add_argument("--sample-seed", type=int, default=0, metavar="S", help="seed of --sample")
    p.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance scale of a factored model (1: the conditional model alone; >1 "
        "follows the composition more strongly)",
    )
    p.add_argument(
        "--composition-temperature",
        type=float,
        default=1.0,
        help="temperature of the composition model's draws (<1: commoner compositions)",
    )
    p.add_argument(
        "-n",
        "--num-samples",
        type=positive_int,
        help="number of crystals to generate (required, except with --compositions-from)",
    )
    p.add_argument("-o", "--output", required=True, help="output folder (reused to resume)")
    p.add_argument(
        "--sampling-steps",
        type=positive_int,
        default=None,
        help="diffusion steps: default all T training steps (ancestral, the paper); K < T uses the "
        "respaced/DDIM sampler with K steps",
    )
    p.add_argument(
        "--eta",
        type=float,
        default=None,
        help="DDIM eta for K-step sampling (0 deterministic, 1 ancestral); default: the run's",
    )
    p.add_argument("--no-ema", action="store_true", help="sample with the trained weights, not their EMA")
    p.add_argument("--batch-size", type=positive_int, default=256, help="vectors per diffusion batch")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the diffusion sampler and of the reconstruction"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--no-reconstruct",
        action="store_true",
        help="stop after sampling and decoding (writes representations.pt and summary.json)",
    )
    add_reconstruction_args(p, default_budget=DEFAULT_BUDGET)
    p.add_argument(
        "--recon-batch-size", type=positive_int, default=64, help="crystals per reconstruction batch"
    )
    add_quiet_arg(p)
    return p


def _plan_compositions(args) -> list[dict[int, int]]:
    """Write OUT/csp_plan.json for --compositions-from and return the compositions to generate."""
    from ..diffusion import load_checkpoint
    from ..metrics import csp
    from ..utils import check_output_dir, write_json

    _, meta = load_checkpoint(args.checkpoint)
    plan, _ = csp.plan_for_model(
        args.compositions_from,
        args.samples_per_composition,
        meta,
        sample=args.sample,
        sample_seed=args.sample_seed,
    )
    out = check_output_dir(args.output, flag="-o/--output")
    write_json(out / csp.PLAN_FILE, plan)
    return csp.plan_compositions(plan)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.pretrained is None):
        parser.error("give CHECKPOINT or --pretrained NAME (one of them)")
    if args.pretrained is not None:
        try:
            args.checkpoint = str(pretrained_path(args.pretrained))
        except ValueError as err:
            parser.error(str(err))
    compositions = None
    if args.compositions_from is not None:
        if args.num_samples is not None or args.formula or args.chemical_system:
            parser.error(
                "--compositions-from sets the samples: do not give -n, --formula or --chemical-system"
            )
        compositions = _plan_compositions(args)
        args.num_samples = len(compositions)
        if not compositions:
            parser.error(f"--compositions-from {args.compositions_from}: no crystal the model can take")
    elif args.num_samples is None:
        parser.error("-n/--num-samples is required")
    elif args.sample is not None:
        parser.error("--sample is for --compositions-from")
    if args.composition_temperature <= 0:
        parser.error(f"--composition-temperature must be > 0, got {args.composition_temperature}")
    config = reconstruct_config(args)
    out = Path(args.output)
    summary = sample_crystals(
        args.checkpoint,
        args.num_samples,
        out,
        config=config,
        composition=args.composition,
        sampling_steps=args.sampling_steps,
        eta=args.eta,
        use_ema=not args.no_ema,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        reconstruct=not args.no_reconstruct,
        recon_batch_size=args.recon_batch_size,
        show_progress=not args.quiet,
        templates=template_library(args, show_progress=not args.quiet),
        formula=args.formula,
        formula_units=args.formula_units,
        chemical_system=args.chemical_system,
        guidance=args.guidance,
        composition_temperature=args.composition_temperature,
        compositions=compositions,
    )
    sampling = summary.get("sampling", {})
    if args.no_reconstruct:
        n_rej, n = sampling["rejected_at_decoding"], sampling["n_samples"]
        print(
            f"srd-sample: {n} vectors sampled ({sampling['seconds_diffusion_total']:.1f} s), {n_rej} rejected "
            f"at decoding; wrote {out / 'representations.pt'}"
        )
        return 0
    if summary:
        t = summary["timing"]
        print("srd-sample: " + summary_line(summary))
        print(
            f"  per crystal: {sampling['seconds_diffusion_per_crystal']:.4g} s diffusion + "
            f"{t['seconds_per_crystal_mean'] or 0:.4g} s reconstruction"
        )
        print(f"  wrote {out}/representations.pt, cifs/, results.csv, eval_gen.pt, summary.json")
        if args.formula or args.chemical_system:
            _write_ranked(out, show=not args.quiet)
    return 0


def _write_ranked(out: Path, *, show: bool) -> None:
    """OUT/ranked.csv: the reconstructed crystals by loss, lowest first (structure prediction's answer)."""
    import csv
    import math

    from ..utils import atomic_write_text

    with (out / "results.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("status") == "ok"]
    rows.sort(key=lambda r: float(r["loss"]) if r.get("loss") not in (None, "") else math.inf)
    cols = ["rank", "id", "file", "formula", "n_atoms", "loss", "spacegroup", "valid_cdvae"]
    lines = [",".join(cols)]
    for k, r in enumerate(rows, 1):
        lines.append(",".join([str(k)] + [str(r.get(c, "")).replace(",", ";") for c in cols[1:]]))
    atomic_write_text(out / "ranked.csv", "\n".join(lines) + "\n")
    if show:
        for r in rows[:5]:
            print(
                f"  {r['id']}: {r['formula']} ({r['n_atoms']} atoms), {r.get('spacegroup', '')}, loss {r['loss']}"
            )
    print(f"  wrote {out}/ranked.csv (by reconstruction loss)")


def entry() -> None:
    run(main, "srd-sample")


if __name__ == "__main__":
    entry()
