"""srd-sample: generate crystals with a trained model (diffusion in R space, decoding, reconstruction)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..recon_job import ReconItem, run_job, summary_line
from ..reconstruct import ReconstructConfig
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

The reconstruction budget is the paper's unless --budget NAME picks another (listed under
"reconstruction" below); flags given explicitly override the budget's values.

examples:
  srd-sample runs/perov/checkpoint.pt -n 32 -o samples --sampling-steps 100
  srd-sample runs/perov -n 1000 -o samples1k --trials 2 --hops 2 --steps 200
  srd-sample runs/perov -n 100 -o samples_fast --budget fast --composition nearest --dmin-weight 10
"""


#: srd-sample's reconstruction budget when --budget is not given (the paper's Algorithm 2).
DEFAULT_BUDGET = "paper"


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
    add_reconstruction_args(p, default_budget=DEFAULT_BUDGET)
    p.add_argument(
        "--recon-batch-size", type=positive_int, default=64, help="crystals per reconstruction batch"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def sample_crystals(
    checkpoint: str | Path,
    num_samples: int,
    output: str | Path,
    *,
    config: ReconstructConfig | None = None,
    composition: str = "largest-remainder",
    sampling_steps: int | None = None,
    eta: float | None = None,
    use_ema: bool = True,
    batch_size: int = 256,
    seed: int = 0,
    device="auto",
    reconstruct: bool = True,
    recon_batch_size: int = 64,
    show_progress: bool = True,
) -> dict:
    """srd-sample as a function: sample ``num_samples`` R vectors from ``checkpoint`` (a RUN folder or its
    checkpoint.pt), decode them with ``composition`` and (with ``reconstruct``) reconstruct them with
    ``config`` (default: ``ReconstructConfig.preset(DEFAULT_BUDGET, seed=seed)``) into ``output``.

    Rerunning with the same ``output`` reuses the samples and resumes the reconstruction.

    Returns:
        The summary written to ``output``/summary.json (its "sampling" entry: the diffusion side).
    """
    from collections import Counter

    from ..diffusion import load_checkpoint, sample_representations

    config = config or ReconstructConfig.preset(DEFAULT_BUDGET, seed=seed)
    device = resolve_device(device) if isinstance(device, str | None) else device
    out = check_output_dir(output, flag="-o/--output")
    ckpt = Path(checkpoint)
    ckpt_file = ckpt / "checkpoint.pt" if ckpt.is_dir() else ckpt
    loaded = load_checkpoint(ckpt_file, device=device)
    meta = loaded[1]
    sample_key = {
        "checkpoint_sha256": sha256_file(ckpt_file),
        "n": num_samples,
        "seed": seed,
        "sampling_steps": sampling_steps,
        "eta": eta,
        "ema": use_ema,
        "batch_size": batch_size,
    }
    reps_path = out / "representations.pt"
    key_path = out / "sampling.json"
    if reps_path.is_file() and key_path.is_file() and read_json(key_path).get("key") == sample_key:
        feats = Features.load(reps_path)
        t_diffusion = float(read_json(key_path).get("seconds", 0.0))
        if show_progress:
            print(f"srd-sample: reusing the {len(feats.ids)} samples in {reps_path}")
    else:
        t0 = time.perf_counter()
        R = sample_representations(
            loaded,
            num_samples,
            sampling_steps=sampling_steps,
            eta=eta,
            batch_size=batch_size,
            seed=seed,
            device=device,
            use_ema=use_ema,
            progress=show_progress,
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

    decoded = decode(feats.R.double(), feats.stats, feats.n_max, composition)
    items = [
        ReconItem(i, None, d.reason) if isinstance(d, Rejected) else ReconItem(i, d)
        for i, d in zip(feats.ids, decoded)
    ]
    n_rej = sum(it.target is None for it in items)
    sampling = {
        "checkpoint": str(ckpt_file),
        "dataset": feats.dataset,
        "n_samples": len(items),
        "sampling_steps": sampling_steps or int(meta["train_config"].diffusion.timesteps),
        "composition_decoding": composition,
        "rejected_at_decoding": n_rej,
        "seconds_diffusion_total": round(t_diffusion, 3),
        "seconds_diffusion_per_crystal": round(t_diffusion / max(len(items), 1), 5),
        "device": str(device),
    }
    if not reconstruct:
        summary = {
            "sampling": sampling,
            "rejection_reasons": dict(Counter(it.reason for it in items if it.target is None)),
            **run_metadata(),
        }
        write_json(out / "summary.json", summary)
        return summary
    return run_job(
        items,
        out,
        config=config,
        params=feats.params,
        input_desc={
            "path": str(reps_path.resolve()),
            "kind": "generated",
            "composition": composition,
            **sample_key,
        },
        batch_size=recon_batch_size,
        device=device,
        gen_mode=True,
        show_progress=show_progress,
        extra_summary={"sampling": sampling},
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    return 0


def entry() -> None:
    run(main, "srd-sample")


if __name__ == "__main__":
    entry()
