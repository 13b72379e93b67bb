"""Compare denoisers (the paper's 1-D U-Net vs block-aware models) under the same small CPU budget.

Each variant is trained with ``srd.diffusion.train`` for the same budget (``--minutes`` of CPU time of one
thread by default: the number of steps is set from a short calibration of each model's CPU seconds per
step, so that other jobs on a shared machine do not bias the comparison; ``--budget wall`` uses wall-clock
time instead) on the training split, then judged by proxies that need no evaluation tool:

* held-out loss: the epsilon-MSE on test vectors at a few fixed diffusion steps (same noise for every model);
* samples (K-step sampler, with and without clipping x0): the fraction that ``srd.representation.decode``
  accepts, the fraction whose decoded atom counts follow a pattern seen in training (for Perov-5: 5 atoms as
  1+1+3, 1+1+1+2, 1+1+1+1+1, 1+2+2 or 2+3), the fraction with 90-degree angles (all Perov-5 cells), the mean
  per-dimension Wasserstein-1 distance between generated and test R (overall and per block), next to the
  same distance between an equally large subsample of the training split and the test split (the floor).

The training split defaults to Perov-5's train split (recovered, see data/README.md); the development run
described in docs/results.md trained on val (--train data/perov_5/val.csv.gz), before train was recovered.

    python -m srd.experiments.compare_denoisers --minutes 10 --out runs/compare
    python -m srd.experiments.compare_denoisers --variants mlp,mlp@1e-3 --out runs/compare   # name@lr: other lr
    python -m srd.experiments.compare_denoisers --report --out runs/compare                   # table only
    python -m srd.experiments.compare_denoisers --steps 200 --limit 500 --out runs/quick      # fixed steps

Each variant's results go to OUT/results_<variant>.json (so variants can run as parallel processes into the
same OUT); the table covers every results file in OUT.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from ..cli._common import HelpFormatter, positive_int, run
from ..diffusion import (
    TrainConfig,
    build_diffusion,
    load_checkpoint,
    model_spec,
    sample_representations,
    train,
)
from ..representation import Features, Rejected, decode, featurize

PROG = "python -m srd.experiments.compare_denoisers"

VARIANTS = {
    "unet1d": {"model": "unet1d"},  # the paper's size: dim 64, mults (1, 2, 4, 8)
    "unet1d_d16": {"model": "unet1d", "unet1d": {"dim": 16}},
    "mlp": {"model": "mlp"},
    "transformer": {"model": "transformer"},
}
HELD_OUT_STEPS = (10, 100, 500, 1000, 1500)


def held_out_loss(
    diffusion, R: torch.Tensor, *, steps=HELD_OUT_STEPS, seed: int = 123, batch: int = 256
) -> dict:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(R.shape, generator=g)
    out = {}
    with torch.no_grad():
        for t in steps:
            losses = []
            for s in range(0, len(R), batch):
                x0, eps = R[s : s + batch], noise[s : s + batch]
                tt = torch.full((len(x0),), t, dtype=torch.long)
                losses.append(diffusion.loss(x0, tt, eps, reduction="none"))
            out[str(t)] = float(torch.cat(losses).mean())
    out["mean"] = float(np.mean([out[str(t)] for t in steps]))
    return out


def w1(a: torch.Tensor, b: torch.Tensor, blocks: dict) -> dict:
    # Values are clipped to [-1, 2] first: a few EAD columns are ~1e-30 in the training split, so their
    # min-max scaling maps some test vectors to values in the hundreds, which would swamp the mean.
    a, b = a.double().clamp(-1, 2).numpy(), b.double().clamp(-1, 2).numpy()
    per_dim = np.array([wasserstein_distance(a[:, j], b[:, j]) for j in range(a.shape[1])])
    out = {"all": float(per_dim.mean())}
    for name, (s, e) in blocks.items():
        out[name] = float(per_dim[s:e].mean())
    return out


def count_pattern(d) -> tuple[int, ...]:
    return tuple(sorted(Counter(d.numbers).values()))


def decode_stats(samples: torch.Tensor, feats: Features, patterns: set) -> dict:
    dec = decode(samples, feats.stats, feats.n_max)
    ok = [d for d in dec if not isinstance(d, Rejected)]
    reasons = Counter(d.reason.split(":")[0].split(" [")[0][:60] for d in dec if isinstance(d, Rejected))
    pattern = sum(1 for d in ok if count_pattern(d) in patterns)
    cubic = sum(1 for d in ok if all(abs(a - 90.0) < 2.0 for a in d.angles))
    return {
        "accepted": len(ok) / max(len(dec), 1),
        "pattern": pattern / max(len(dec), 1),
        "angles_90": cubic / max(len(dec), 1),
        "rejected_reasons": dict(reasons.most_common(4)),
    }


def cpu_seconds_per_step(
    cfg: TrainConfig, feats: Features, *, min_cpu: float = 10.0, max_steps: int = 30
) -> float:
    """CPU seconds of one training step of ``cfg``'s model (after 2 warm-up steps), on this thread."""
    spec = model_spec(
        cfg, length=feats.R.shape[1], blocks=feats.layout.blocks(), ead_row=len(feats.params.mus)
    )
    d = build_diffusion(cfg, spec, seed=0)
    opt = torch.optim.Adam(d.model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(0)
    T = d.num_timesteps

    def step():
        idx = torch.randint(0, len(feats.R), (cfg.batch_size,), generator=g)
        t = torch.randint(0, T, (cfg.batch_size,), generator=g)
        loss = d(feats.R[idx], t, torch.randn((cfg.batch_size, feats.R.shape[1]), generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    step()
    n, t0 = 0, time.process_time()
    while n < max_steps and (time.process_time() - t0) < min_cpu:
        step()
        n += 1
    return (time.process_time() - t0) / n


def print_table(out: Path) -> None:
    files = sorted(out.glob("results_*.json"))
    if not files:
        print(f"no results_*.json in {out}", file=sys.stderr)
        return
    variants, floor = {}, {}
    for f in files:
        r = json.loads(f.read_text())
        variants.update(r["variants"])
        floor.update(r["floor_train_vs_test"])
    print(
        f"\n{'variant':<24} {'params':>9} {'steps':>6} {'epochs':>6} {'cpu min':>7} {'heldout':>8} {'accept':>7} "
        f"{'pattern':>7} {'90deg':>6} {'W1 all':>8} {'W1 ead':>8} {'W1 comp':>8} {'W1 lat':>8} {'s/vec':>7}"
    )

    def row(label, r, d, w, extra=""):
        ead = (w["ead_max"] + w["ead_min"]) / 2
        print(
            f"{label:<24} {r.get('parameters', ''):>9} {r.get('steps', ''):>6} {r.get('epochs', ''):>6} "
            f"{r.get('cpu', ''):>7} {r.get('heldout', ''):>8} {d['accepted']:>7.3f} {d['pattern']:>7.3f} "
            f"{d['angles_90']:>6.3f} {w['all']:>8.4f} {ead:>8.4f} {w['composition']:>8.4f} {w['lattice']:>8.4f} {extra}"
        )

    for name, r in variants.items():
        for key in ("noclip", "clip"):
            s_ = r[key]
            info = {
                "parameters": r["parameters"],
                "steps": r["steps"],
                "epochs": f"{r['epochs']:.1f}",
                "cpu": f"{r.get('train_cpu_seconds', float('nan')) / 60:.1f}",
                "heldout": f"{r['held_out_loss']['mean']:.4f}",
            }
            row(
                f"{name}/{key}",
                info,
                s_["decode"],
                s_["w1"],
                f"{s_['sample_seconds_per_vector']:7.3f}  n={r['n_samples']}",
            )
    for n, f in sorted(floor.items(), key=lambda kv: int(kv[0])):
        row("train vs test", {}, f["decode"], f["w1"], f"        n={n}")
    print("\nheld-out loss per diffusion step (epsilon-MSE on test vectors):")
    for name, r in variants.items():
        print(f"  {name:<22} " + "  ".join(f"t={k}: {v:.4f}" for k, v in r["held_out_loss"].items()))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument(
        "--train", default="data/perov_5/train.csv.gz", help="training split (CSV or srd features .pt)"
    )
    ap.add_argument("--test", default="data/perov_5/test.csv.gz", help="held-out split (CSV or .pt)")
    ap.add_argument("--dataset", default="perov_5", help="dataset of the CSVs (sets n_max)")
    ap.add_argument("--out", default="runs/compare_denoisers", help="output folder (runs and results.json)")
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}"
    )
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per variant")
    ap.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="train every variant for exactly this many steps instead (no calibration; --minutes ignored)",
    )
    ap.add_argument(
        "--limit", type=positive_int, default=None, help="only the first N crystals of --train and --test"
    )
    ap.add_argument(
        "--budget", choices=("cpu", "wall"), default="cpu", help="count CPU time (default) or wall time"
    )
    ap.add_argument("--report", action="store_true", help="only print the table of the results in --out")
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (name@lr overrides it)")
    ap.add_argument("--batch-size", type=positive_int, default=64, help="training batch size")
    ap.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the weights")
    ap.add_argument("--n-samples", type=positive_int, default=500, help="samples per variant")
    ap.add_argument("--sampling-steps", type=int, default=100, help="K of the K-step sampler")
    ap.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 deterministic, 1 respaced ancestral)")
    ap.add_argument("--held-out", type=int, default=256, help="test vectors for the held-out loss")
    ap.add_argument("--slow-model-samples", type=int, default=64, help="samples for the paper-size U-Net")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    ap.add_argument("--seed", type=int, default=0, help="seed of the weights, data order, noise and samples")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v.partition("@")[0] not in VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)} (name@lr)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.report:
        print_table(out)
        return 0
    for flag, path in (("--train", args.train), ("--test", args.test)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{flag} {path}: no such file (run from a checkout, or pass {flag})")
    out.mkdir(parents=True, exist_ok=True)

    def load(path, stats=None):
        if str(path).endswith(".pt"):
            f = Features.load(path)
            if args.limit:
                f = Features(f.R[: args.limit], f.ids[: args.limit], f.stats, f.n_max, f.params, f.dataset)
            return f
        return featurize(
            path, dataset=args.dataset, stats=stats, limit=args.limit, use_cache=True, show_progress=False
        )

    tr = load(args.train)
    te = load(args.test, stats=tr.stats)
    if not torch.equal(te.stats.lo, tr.stats.lo) or not torch.equal(te.stats.hi, tr.stats.hi):
        raise ValueError("the test features must be scaled with the training split's statistics")
    blocks = tr.layout.blocks()
    patterns = {count_pattern(d) for d in decode(tr.R, tr.stats, tr.n_max) if not isinstance(d, Rejected)}
    g = torch.Generator().manual_seed(args.seed)
    held = te.R[torch.randperm(len(te.R), generator=g)[: args.held_out]]
    floor = {}
    for n in sorted({args.n_samples, args.slow_model_samples}):
        sub = tr.R[torch.randperm(len(tr.R), generator=g)[:n]]
        floor[str(n)] = {"w1": w1(sub, te.R, blocks), "decode": decode_stats(sub, tr, patterns)}
    print(f"train {args.train}: {len(tr.R)} vectors; test {args.test}: {len(te.R)}", file=sys.stderr)
    results = {"args": vars(args), "floor_train_vs_test": floor}

    for name in args.variants.split(","):
        base, _, lr = name.partition("@")
        spec = VARIANTS[base]
        cfg = TrainConfig.from_dict(
            {
                **spec,
                "epochs": 1_000_000,
                "max_minutes": args.minutes if args.budget == "wall" else 0.0,
                "batch_size": args.batch_size,
                "lr": float(lr) if lr else args.lr,
                "ema_decay": args.ema_decay,
                "seed": args.seed,
                "checkpoint_every": 500,
                "log_every": 50,
                "device": "cpu",
                "data": str(args.train),
            }
        )
        run = out / name
        cpu_per_step = None
        if args.steps:
            cfg = cfg.replace(max_steps=args.steps)
        elif args.budget == "cpu":
            cpu_per_step = cpu_seconds_per_step(cfg, tr)
            cfg = cfg.replace(max_steps=max(1, int(args.minutes * 60 / cpu_per_step)))
            print(f"{name}: {cpu_per_step:.3f} CPU s/step -> {cfg.max_steps} steps", file=sys.stderr)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        summary = train(cfg, tr, run, resume=True, show_progress=False)
        train_cpu, train_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        diffusion, meta = load_checkpoint(run)
        n_params = sum(p.numel() for p in diffusion.model.parameters())
        t0 = time.perf_counter()
        dm = diffusion
        if meta.get("ema") is not None:
            import copy

            dm = copy.deepcopy(diffusion)
            dm.model.load_state_dict(meta["ema"]["shadow"], strict=False)
        loss = held_out_loss(dm.eval(), held)
        t_loss = time.perf_counter() - t0
        n = args.slow_model_samples if (base == "unet1d") else args.n_samples
        res = {
            "steps": summary["step"],
            "epochs": summary["step"] * args.batch_size / len(tr.R),
            "train_seconds": summary["seconds"],
            "train_cpu_seconds": train_cpu,
            "train_wall_seconds_this_call": train_wall,
            "calibrated_cpu_seconds_per_step": cpu_per_step,
            "lr": cfg.lr,
            "parameters": n_params,
            "held_out_loss": loss,
            "held_out_eval_seconds": t_loss,
            "n_samples": n,
        }
        for clip in (False, True):
            t0 = time.perf_counter()
            samples = sample_representations(
                (diffusion, meta),
                n,
                sampling_steps=args.sampling_steps,
                eta=args.eta,
                seed=args.seed,
                clip_x0=clip,
                progress=False,
            )
            res["clip" if clip else "noclip"] = {
                "sample_seconds_per_vector": (time.perf_counter() - t0) / max(n, 1),
                "decode": decode_stats(samples, tr, patterns),
                "w1": w1(samples, te.R, blocks),
                "finite": float(torch.isfinite(samples).all(dim=1).float().mean()),
            }
        print(json.dumps({name: res}), file=sys.stderr)
        one = {**results, "variants": {name: res}}
        (out / f"results_{name}.json").write_text(json.dumps(one, indent=2) + "\n")
    print_table(out)
    return 0


if __name__ == "__main__":
    run(main, PROG)
