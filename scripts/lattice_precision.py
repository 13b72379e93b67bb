"""How precisely a conditional model's generated lattices fit their compositions, in R space (no
reconstruction): the diagnosis behind the NaCl structure-prediction miss (docs/results.md, "Why MP-20
structure prediction misses").

For a seeded random sample of a test split, each crystal's composition goes into a packaged (or trained)
conditional model; the decoded cell of the generated vector is compared with the test crystal's own cell:
|log(V_gen / V_true)| (0.1 is a 10 % volume error) and the mean error of the sorted cell lengths.

  python scripts/lattice_precision.py mp_20 --sample 100 --seed 0 [--sampling-steps 200] [--guidance 1]
  python scripts/lattice_precision.py runs/mp_20_cond/checkpoint.pt --test data/mp_20/test.csv.gz ...

Writes a JSON line to stdout (and to --out when given) with the seed and the sampled ids.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a packaged model name (perov_5, mp_20, carbon_24) or a checkpoint.pt")
    ap.add_argument("--test", help="the split whose compositions go in (default data/NAME/test.csv.gz)")
    ap.add_argument("--sample", type=int, default=100, help="how many test crystals (seeded random sample)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the test sample and of the sampler")
    ap.add_argument("--sampling-steps", type=int, default=200, help="DDIM steps (the model's T: ancestral)")
    ap.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from srd.diffusion import load_checkpoint, sample_representations
    from srd.metrics.csp import plan_compositions, plan_for_model
    from srd.pretrained import PRETRAINED, pretrained_path
    from srd.representation import Decoded, decode

    path = pretrained_path(args.model) if args.model in PRETRAINED else Path(args.model)
    test = args.test or f"data/{args.model}/test.csv.gz"
    loaded = load_checkpoint(path)
    meta = loaded[1]
    # the seeded sample and the plan of srd-sample --compositions-from (a target the model cannot take,
    # an unseen element or too many atoms, gets no sample and is counted as skipped)
    plan, targets = plan_for_model(test, 1, meta, sample=args.sample, sample_seed=args.seed)
    rows = plan["rows"]
    usable = [s for (_, s), e in zip(targets, plan["targets"]) if "gen_ids" in e]
    t0 = time.perf_counter()
    R = sample_representations(
        loaded,
        len(usable),
        sampling_steps=args.sampling_steps,
        seed=args.seed,
        compositions=plan_compositions(plan),
        guidance=args.guidance,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    vol_err, len_err = [], []
    for s, d in zip(usable, decode(R.double(), meta["scaling_stats"], int(meta["n_max"]))):
        if not isinstance(d, Decoded):
            continue
        vol_err.append(abs(np.log(abs(np.linalg.det(d.lattice_matrix())) / s.volume)))
        len_err.append(float(np.abs(np.sort(d.lengths) - np.sort(s.lattice.abc)).mean()))
    v = np.array(vol_err)
    out = {
        "model": str(path),
        "test": test,
        "n": len(rows),
        "skipped": len(rows) - len(usable),
        "decoded": len(v),
        "seed": args.seed,
        "sampling_steps": args.sampling_steps,
        "guidance": args.guidance,
        "median_abs_log_volume_ratio": round(float(np.median(v)), 4),
        "volume_within_10pct": round(float((v < 0.1).mean()), 4),
        "median_length_error_A": round(float(np.median(len_err)), 4),
        "seconds_diffusion": round(seconds, 1),
        "sample": plan["sample"],
        "ids": [tid for tid, _ in targets],
    }
    text = json.dumps(out)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
