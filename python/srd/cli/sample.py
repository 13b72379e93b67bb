"""srd-sample: generate crystals with a trained model (diffusion in R space, decoding, reconstruction)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..recon_job import ReconItem, run_job, summary_line
from ..representation import Features, Rejected, decode
from ..utils import read_json, run_metadata, sha256_file, write_json
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
Sample new crystals from a model trained by srd-train:
  1. ancestral DDPM sampling (Algorithm 1) of N representation vectors R, or a K-step sampler;
  2. decoding of atom count, composition and lattice from each R (vectors that do not decode are
     recorded with the reason);
  3. reconstruction of the positions (srd-reconstruct's algorithm, every crystal batched).

OUT gets representations.pt (the sampled R, an srd feature file), cifs/*.cif, results.csv,
eval_gen.pt (CDVAE's layout, so the community's evaluators read it) and summary.json (rejections and
their reasons; seconds per crystal in diffusion and in reconstruction). Rerunning with the same OUT
reuses the samples and resumes the reconstruction. Evaluate with `srd-evaluate gen OUT --reference ...`.

examples:
  srd-sample runs/perov/checkpoint.pt -n 32 -o samples --sampling-steps 100
  srd-sample runs/perov -n 1000 -o samples1k --trials 2 --hops 2 --steps 200
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srd-sample", description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", help="RUN/checkpoint.pt written by srd-train (or the RUN folder)")
    p.add_argument(
        "-n", "--num-samples", type=positive_int, required=True, help="number of crystals to generate"
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
    add_reconstruction_args(p, help_prefix="reconstruction: ")
    p.add_argument(
        "--recon-batch-size", type=positive_int, default=64, help="crystals per reconstruction batch"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..diffusion import load_checkpoint, sample_representations

    device = resolve_device(args.device)
    out = check_output_dir(args.output, flag="-o/--output")
    ckpt = Path(args.checkpoint)
    ckpt_file = ckpt / "checkpoint.pt" if ckpt.is_dir() else ckpt
    loaded = load_checkpoint(ckpt_file, device=device)
    meta = loaded[1]
    sample_key = {
        "checkpoint_sha256": sha256_file(ckpt_file),
        "n": args.num_samples,
        "seed": args.seed,
        "sampling_steps": args.sampling_steps,
        "eta": args.eta,
        "ema": not args.no_ema,
        "batch_size": args.batch_size,
    }
    reps_path = out / "representations.pt"
    key_path = out / "sampling.json"
    if reps_path.is_file() and key_path.is_file() and read_json(key_path).get("key") == sample_key:
        feats = Features.load(reps_path)
        t_diffusion = float(read_json(key_path).get("seconds", 0.0))
        if not args.quiet:
            print(f"srd-sample: reusing the {len(feats.ids)} samples in {reps_path}")
    else:
        t0 = time.perf_counter()
        R = sample_representations(
            loaded,
            args.num_samples,
            sampling_steps=args.sampling_steps,
            eta=args.eta,
            batch_size=args.batch_size,
            seed=args.seed,
            device=device,
            use_ema=not args.no_ema,
            progress=not args.quiet,
        )
        t_diffusion = time.perf_counter() - t0
        bad = ~torch.isfinite(R).all(dim=1)
        if bool(bad.any()):
            raise ValueError(
                f"the model in {ckpt_file} produced non-finite vectors for {int(bad.sum())} of {len(R)} samples "
                f"(first: sample {int(torch.nonzero(bad)[0, 0])}); the checkpoint's weights are finite, so the "
                "sampler diverged: try --sampling-steps with more steps or the EMA weights"
            )
        feats = Features(
            R,
            [f"gen_{k:06d}" for k in range(len(R))],
            meta["scaling_stats"],
            int(meta["n_max"]),
            meta["ead_params"],
            meta.get("dataset") or None,
            source={"checkpoint": str(ckpt_file), "sampled": True},
        )
        feats.save(reps_path)
        write_json(key_path, {"key": sample_key, "seconds": t_diffusion, **run_metadata()})

    decoded = decode(feats.R.double(), feats.stats, feats.n_max, args.composition)
    items = [
        ReconItem(i, None, d.reason) if isinstance(d, Rejected) else ReconItem(i, d)
        for i, d in zip(feats.ids, decoded)
    ]
    n_rej = sum(it.target is None for it in items)
    sampling = {
        "checkpoint": str(ckpt_file),
        "dataset": feats.dataset,
        "n_samples": len(items),
        "sampling_steps": args.sampling_steps or int(meta["train_config"].diffusion.timesteps),
        "composition_decoding": args.composition,
        "rejected_at_decoding": n_rej,
        "seconds_diffusion_total": round(t_diffusion, 3),
        "seconds_diffusion_per_crystal": round(t_diffusion / max(len(items), 1), 5),
        "device": str(device),
    }
    if args.no_reconstruct:
        from collections import Counter

        write_json(
            out / "summary.json",
            {
                "sampling": sampling,
                "rejection_reasons": dict(Counter(it.reason for it in items if it.target is None)),
                **run_metadata(),
            },
        )
        print(
            f"srd-sample: {len(items)} vectors sampled ({t_diffusion:.1f} s), {n_rej} rejected at decoding; "
            f"wrote {reps_path}"
        )
        return 0
    config = reconstruct_config(args)
    summary = run_job(
        items,
        out,
        config=config,
        params=feats.params,
        input_desc={
            "path": str(reps_path.resolve()),
            "kind": "generated",
            "composition": args.composition,
            **sample_key,
        },
        batch_size=args.recon_batch_size,
        device=device,
        gen_mode=True,
        show_progress=not args.quiet,
        extra_summary={"sampling": sampling},
    )
    if summary:
        t = summary["timing"]
        print("srd-sample: " + summary_line(summary))
        print(
            f"  per crystal: {sampling['seconds_diffusion_per_crystal']:.4g} s diffusion + "
            f"{t['seconds_per_crystal_mean'] or 0:.4g} s reconstruction"
        )
        print(f"  wrote {out}/representations.pt, cifs/, results.csv, eval_gen.pt, summary.json")
    return 0


def entry() -> None:
    run(main, "srd-sample")


if __name__ == "__main__":
    entry()
