"""`make demo`: srd end to end on Perov-5 (shipped in data/), on a CPU, in about a quarter of an hour.

1. Reconstruction (the paper's Table 1 protocol): 20 test crystals -> R -> crystals; match rate.
2. Training: a small denoiser for a fixed number of steps on Perov-5's train split (11,356 crystals,
   recovered; see data/README.md).
3. Generation: 32 samples -> decoded -> reconstructed.
4. Evaluation against the test split (CDVAE's protocol), and a report: OUT/report.md.

The Perov-5 splits are read from --data-dir (default ./data: run it from a checkout of the srd repository,
or point --data-dir at a folder holding perov_5/test.csv.gz and perov_5/train.csv.gz); the training config
and the reconstruction budgets come with the package. Every step calls the package's Python API; the
report lists the equivalent commands, so each number can be reproduced. Everything is seeded. Rerunning
resumes where a previous run stopped.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from .cli._common import HelpFormatter, budget_help, run
from .reconstruction import PRESETS, ReconstructConfig

#: The files the demo reads, relative to --data-dir.
TEST_SPLIT = "perov_5/test.csv.gz"
TRAIN_SPLIT = "perov_5/train.csv.gz"  # complete, recovered from DiffCSP's copy (data/README.md)


def _data(data_dir: Path, rel: str) -> Path:
    p = Path(data_dir) / rel
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} not found: the demo reads the Perov-5 splits from --data-dir (default ./data, the data/ "
            f"folder of a checkout of the srd repository: run it from there, or pass --data-dir DIR with "
            f"DIR/{TEST_SPLIT} and DIR/{TRAIN_SPLIT})"
        )
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m srd.demo",
        description=__doc__,
        epilog="reconstruction budgets (--recon NAME):\n" + budget_help(),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument(
        "--data-dir",
        default="data",
        help=f"folder holding {TEST_SPLIT} and {TRAIN_SPLIT} (the checkout's data/)",
    )
    p.add_argument("--n-recon", type=int, default=20, help="test crystals to reconstruct (Table 1 protocol)")
    p.add_argument(
        "--config",
        default="small",
        help="training config: a packaged name (srd-train --help) or a .toml file",
    )
    p.add_argument("--train-steps", type=int, default=2000, help="training steps of the small model")
    p.add_argument("--n-samples", type=int, default=32, help="crystals to generate")
    p.add_argument("--sampling-steps", type=int, default=200, help="diffusion sampler steps (of T = 2000)")
    p.add_argument(
        "--recon",
        default="fast",
        choices=list(PRESETS),
        metavar="NAME",
        help="reconstruction budget (listed below): 'paper' = 6 trials x 7 hops x 300 steps; 'fast' = srd's "
        "default (early stopping + swap hops; see README, Table 1)",
    )
    p.add_argument(
        "--reference-limit",
        type=int,
        default=None,
        help="evaluate against only the first N test crystals (for quick checks)",
    )
    p.add_argument("--tiny", action="store_true", help="minimal sizes everywhere (what the CI test runs)")
    p.add_argument("--seed", type=int, default=0, help="seed of every step")
    return p


def _cmd(*words) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def _step(title: str, cmd: str, log: list[dict], fn) -> float:
    """Run one step (``fn()``), print its title and equivalent command, and log both with the time taken."""
    print(f"\n=== {title}\n$ {cmd}", flush=True)
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    log.append({"step": title, "command": cmd, "seconds": round(seconds, 1)})
    return seconds


#: How generated R are reconstructed: generated vectors are not exactly realisable, so decode the nearest
#: composition and keep the sampled d_min (README, Table 2) instead of the paper's renormalised rounding and
#: d_min weight 1.
GEN_COMPOSITION = "nearest"
GEN_DMIN_WEIGHT = 10.0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .cli._common import seed_everything
    from .diffusion import TrainConfig, train
    from .diffusion.config import config_path, load_toml
    from .diffusion.plot import plot_loss
    from .generate import sample_crystals
    from .metrics import evaluate_generation, resolve_input
    from .metrics.report import summary_table, write_generation_report
    from .reconstruction import reconstruct_input
    from .representation import featurize

    data_dir = Path(args.data_dir)
    test = _data(data_dir, TEST_SPLIT)
    train_split = _data(data_dir, TRAIN_SPLIT)
    config_file = config_path(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.n_recon, args.train_steps, args.n_samples, args.sampling_steps = 2, 20, 4, 10
        args.reference_limit = args.reference_limit or 40
    reference = test
    if args.reference_limit:
        import pandas as pd

        reference = out / f"reference_first{args.reference_limit}.csv"
        pd.read_csv(test, nrows=args.reference_limit).to_csv(reference, index=False)
    budget = "tiny" if args.tiny else args.recon
    show = not args.tiny
    quiet = ["--quiet"] if args.tiny else []
    log: list[dict] = []
    t_start = time.perf_counter()

    # 1. Reconstruction of ground-truth crystals (the Table 1 protocol).
    recon_config = ReconstructConfig.preset(budget, seed=args.seed)
    # Budgets with template trials start them from the training split's crystals (never the test split).
    templates, template_args = None, []
    if recon_config.template_trials > 0:
        from .reconstruction.templates import TemplateLibrary

        templates = TemplateLibrary.from_files([train_split], show_progress=show)
        template_args = ["--templates", train_split]
    recon_cmd = _cmd("srd-reconstruct", test, "-o", out / "recon", "--limit", args.n_recon, "--seed", args.seed,
                     "--budget", budget, *template_args, *quiet)  # fmt: skip
    _step(
        "1/4 reconstruct Perov-5 test crystals from their representations (Table 1 protocol)",
        recon_cmd,
        log,
        lambda: reconstruct_input(
            test,
            out / "recon",
            config=recon_config,
            limit=args.n_recon,
            device="cpu",
            show_progress=show,
            templates=templates,
        ),
    )

    # 2. Training (defaults < the packaged config < what the demo sets, as srd-train resolves them).
    train_config = TrainConfig.from_dict(load_toml(config_file), where=str(config_file)).replace(
        max_steps=args.train_steps, seed=args.seed, device="cpu", data=str(train_split.resolve())
    )
    train_cmd = _cmd("srd-train", "--data", train_split, "--out", out / "run", "--config", args.config,
                     "--max-steps", args.train_steps, "--seed", args.seed, "--device", "cpu", "--resume",
                     *quiet)  # fmt: skip

    def do_train():
        seed_everything(train_config.seed)
        feats = featurize(train_split, dataset=train_config.dataset or None, n_max=train_config.n_max or None,
                          use_cache=True, show_progress=show)  # fmt: skip
        feats.check_finite(f"{train_split} (featurised)")
        summary = train(train_config, feats, out / "run", resume=True, device="cpu",
                        show_progress=None if show else False)  # fmt: skip
        plot_loss(out / "run")
        print(f"trained {summary['step']} steps, last loss {summary['loss']:.5f}, {summary['seconds']:.1f} s")

    if _trained_steps(out / "run") >= args.train_steps:  # finished before: keep the checkpoint (and samples)
        log.append({"step": "2/4 train (already done)", "command": train_cmd, "seconds": 0})
    else:
        _step(
            "2/4 train a small denoiser on the training split (Perov-5 train)",
            train_cmd,
            log,
            do_train,
        )

    # 3. Generation: sample R, decode, reconstruct.
    gen_config = ReconstructConfig.preset(budget, seed=args.seed, dmin_weight=GEN_DMIN_WEIGHT)
    sample_cmd = _cmd("srd-sample", out / "run", "-n", args.n_samples, "-o", out / "samples", "--sampling-steps",
                      args.sampling_steps, "--seed", args.seed, "--device", "cpu", "--budget", budget,
                      "--composition", GEN_COMPOSITION, "--dmin-weight", f"{GEN_DMIN_WEIGHT:g}",
                      *template_args, *quiet)  # fmt: skip
    _step(
        "3/4 generate crystals: sample R, decode, reconstruct",
        sample_cmd,
        log,
        lambda: sample_crystals(
            out / "run",
            args.n_samples,
            out / "samples",
            config=gen_config,
            composition=GEN_COMPOSITION,
            sampling_steps=args.sampling_steps,
            seed=args.seed,
            device="cpu",
            show_progress=show,
            templates=templates,
        ),
    )

    # 4. Evaluation (CDVAE's protocol) against the test split.
    def do_evaluate():
        crystals = resolve_input(out / "samples")
        t0 = time.time()
        res = evaluate_generation(
            crystals, reference, dataset="perov_5", n_samples=args.n_samples, show_progress=show
        )
        res.metrics["seconds"] = round(time.time() - t0, 2)
        write_generation_report(
            res, out / "eval", inputs={"generated": str(crystals), "reference": str(reference)}
        )
        print(summary_table(res.metrics))

    eval_cmd = _cmd("srd-evaluate", "gen", out / "samples", "--reference", reference, "--dataset", "perov_5",
                    "-o", out / "eval", "--n-samples", args.n_samples, *quiet)  # fmt: skip
    _step(
        "4/4 evaluate the generated crystals against the test split (CDVAE's protocol)",
        eval_cmd,
        log,
        do_evaluate,
    )

    total = time.perf_counter() - t_start
    report = write_report(out, log, total, args)
    print(f"\nsrd demo finished in {total / 60:.1f} min; report: {report}")
    return 0


def _trained_steps(run: Path) -> int:
    from .utils import safe_torch_load

    ckpt = run / "checkpoint.pt"
    if not ckpt.is_file():
        return 0
    try:
        return int(safe_torch_load(ckpt).get("step", 0))
    except (ValueError, AttributeError):
        return 0


def _fmt(v, digits=2):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def write_report(out: Path, log: list[dict], total: float, args) -> Path:
    """OUT/report.md: what ran, the numbers next to the paper's, the figures."""
    from .utils import atomic_write_text, run_metadata

    recon = json.loads((out / "recon" / "summary.json").read_text())
    samples = json.loads((out / "samples" / "summary.json").read_text())
    metrics_md = (out / "eval" / "metrics.md").read_text() if (out / "eval" / "metrics.md").is_file() else ""
    rec = recon.get("reconstruction", {})
    meta = run_metadata()
    lines = [
        "# srd demo report",
        "",
        f"Perov-5, on this machine's CPU; total {total / 60:.1f} min; srd {meta['srd_version']} "
        f"(commit {meta['git_commit'] or 'n/a'}), torch {meta['torch_version']}.",
        "",
        "**Data caveat:** the model trains on the complete Perov-5 *train* split (11,356 crystals, recovered "
        "from DiffCSP's copy: genuine rows, see data/README.md) for a few minutes on a CPU instead of 2000 "
        "epochs on a GPU. The numbers below show the pipeline working, not the method's ceiling.",
        "",
        "## 1. Reconstruction (Table 1 protocol)",
        "",
        "| | match rate (%) | RMSE | crystals | evaluations / crystal | seconds / crystal |",
        "|---|---|---|---|---|---|",
        f"| srd (this run) | {_fmt(rec.get('match_rate'))} | {_fmt(rec.get('rmse'), 4)} | {rec.get('n')} | "
        f"{_fmt(recon['timing'].get('evaluations_per_crystal_mean'), 0)} | "
        f"{_fmt(recon['timing'].get('seconds_per_crystal_mean'), 2)} |",
        "| paper (StructRepDiff, Table 1) | 100.00 | 0.024 | 3,785 | 12,600 | — |",
        "| CDVAE (paper's Table 1) | 97.51 | — | 3,785 | — | — |",
        "",
        f"CDVAE's stricter variant (the prediction must also be valid: SMACT composition, distances >= 0.5 A): {_fmt(rec.get('match_rate_cdvae_strict'))} %.",
        "",
        "## 2–4. Generation",
        "",
        f"{samples['counts']['input']} samples; {samples['counts']['rejected']} rejected at decoding; "
        f"{samples['sampling']['sampling_steps']} diffusion steps; "
        f"{_fmt(samples['sampling']['seconds_diffusion_per_crystal'], 3)} s diffusion and "
        f"{_fmt(samples['timing'].get('seconds_per_crystal_mean'), 2)} s reconstruction per crystal.",
        "",
        metrics_md,
        "",
        "## Figures",
        "",
    ]
    for png in sorted((out / "eval").glob("*.png")):
        lines.append(f"![{png.stem}](eval/{png.name})")
        lines.append("")
    lines += ["## Commands (run in this order; each resumes when rerun)", ""]
    for entry in log:
        lines.append(f"- {entry['step']} ({entry['seconds']} s):  \n  `{entry['command']}`")
    lines.append("")
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


if __name__ == "__main__":
    run(main, "srd demo")
