"""Why "lowest loss wins" picked a wrong structure for Perov-5 test crystal 0 (TiOsNOF), and what fixes it.

Measures, for one crystal of a ground-truth split (default: the first row of data/perov_5/test.csv.gz):

1. the loss (reconstruction L1 on pooled EAD / 1e6 and d_min) of the *exact* truth with two elements'
   sites exchanged (default O and F), without any relaxation: how far apart the two labelings are in R;
2. the loss reached from starts within +-A Angstrom of the truth (float32 and float64): how deep and how
   wide the true basin is;
3. the six trial losses at the paper's budget (6 x 7 x 300; --budget NAME for another named budget)
   without and with swap hops, and whether the chosen structure matches the truth (CDVAE's
   StructureMatcher).

    python -m srd.experiments.swap_basin                       # TiOsNOF, O <-> F
    python -m srd.experiments.swap_basin --row 5 --swap O,N
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cli._common import positive_int, run
from ..reconstruction import PRESETS

PROG = "python -m srd.experiments.swap_basin"


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--input",
        default="data/perov_5/test.csv.gz",
        help="ground-truth CSV(.gz) (default: the checkout's Perov-5 test split)",
    )
    p.add_argument("--row", type=int, default=0, help="row of the crystal in INPUT (default 0)")
    p.add_argument("--n-max", type=positive_int, default=5, help="largest atom count (default 5, Perov-5)")
    p.add_argument("--swap", default="O,F", help="two element symbols whose sites to exchange (default O,F)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the noise and of the reconstruction (default 0)"
    )
    p.add_argument(
        "--amplitudes",
        type=_floats,
        default=[0.05, 0.2, 0.5, 1.0],
        help="part 2: noise amplitudes A in Angstrom, comma-separated (default 0.05,0.2,0.5,1.0)",
    )
    p.add_argument(
        "--descent-steps", type=positive_int, default=300, help="part 2: steps of each descent (default 300)"
    )
    p.add_argument(
        "--budget",
        choices=list(PRESETS),
        default="paper",
        metavar="NAME",
        help=f"part 3: the reconstruction budget, one of {', '.join(PRESETS)} (default paper); its swap "
        "probability is replaced by 0 and 0.5",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("ignore")

    from ..metrics import match_structures
    from ..reconstruction import ReconstructConfig, reconstruct
    from ..representation import decoded_from_structures, prepare_structure
    from ..structures import read_structures

    if not Path(args.input).is_file():
        raise FileNotFoundError(f"--input {args.input}: no such file (run from a checkout, or pass --input)")
    try:
        a, b = args.swap.split(",")
    except ValueError:
        raise ValueError(f"--swap {args.swap}: expected two element symbols, e.g. O,F") from None
    records = list(read_structures(args.input, limit=args.row + 1))
    if len(records) <= args.row:
        raise ValueError(f"--row {args.row}: {args.input} has only {len(records)} crystals")
    rec = records[args.row]
    if rec.structure is None:
        raise ValueError(f"--row {args.row}: crystal {rec.id} could not be read ({rec.error})")
    s = prepare_structure(rec.structure, n_max=args.n_max)
    print(f"crystal {rec.id}: {s.composition.formula}, exchanging the sites of {a} and {b}")
    symbols = {x.specie.symbol for x in s}
    missing = [e for e in (a, b) if e not in symbols]
    if missing:
        raise ValueError(
            f"--swap {args.swap}: {rec.id} has no {', '.join(missing)} (it has {', '.join(sorted(symbols))})"
        )
    ia = next(i for i, x in enumerate(s) if x.specie.symbol == a)
    ib = next(i for i, x in enumerate(s) if x.specie.symbol == b)
    sw = s.copy()
    sw.replace(ia, b, coords=s[ia].frac_coords)
    sw.replace(ib, a, coords=s[ib].frac_coords)
    t, t_sw = decoded_from_structures([s, sw], n_max=args.n_max)
    exact = float((t.target - t_sw.target).abs().mean())
    print(f"1. loss of the exact truth with {a} and {b} exchanged (no relaxation): {exact:.3e}")

    order = np.argsort([x.specie.Z for x in s], kind="stable")  # reconstruction orders atoms by Z
    truth = s.cart_coords[order]
    rng = np.random.default_rng(args.seed)
    print(f"2. one {args.descent_steps}-step descent from the truth plus U[-A, A] Angstrom noise:")
    for amp in args.amplitudes:
        row = []
        for dt in ("float32", "float64"):
            cfg = ReconstructConfig(trials=1, hops=1, steps=args.descent_steps, dtype=dt)
            r = reconstruct([t], ["x"], config=cfg, initial=[truth + rng.uniform(-amp, amp, truth.shape)])[0]
            row.append(f"{dt} {r.loss:.2e}")
        print(f"   A = {amp:4.2f}: " + ", ".join(row))

    base = ReconstructConfig.preset(args.budget, seed=args.seed)
    label = "the paper's budget" if args.budget == "paper" else f"the {args.budget} budget"
    print(
        f"3. {label} ({base.trials} trials x {base.hops} hops x {base.steps} steps), {base.dtype}, seed {args.seed}"
    )
    for swap in (0.0, 0.5):
        cfg = base.replace(swap_prob=swap)
        r = reconstruct([t], [str(rec.id)], config=cfg)[0]
        m = match_structures([r.structure], [s])
        losses = ", ".join(f"{x:.1e}" for x in sorted(r.trial_losses))
        verdict = f"match (rms {m['rmse']:.4f})" if m["match_rate"] > 0 else "NOT a match"
        print(f"   swap-prob {swap}: trial losses [{losses}] -> chosen {r.loss:.2e}: {verdict}")
    return 0


if __name__ == "__main__":
    run(main, PROG)
