"""How close must a start be? Descend from the truth displaced by U[-s, s] Angstrom per coordinate.

For the first N crystals of a file, or of those a sampled run (--missed RUN: an srd-reconstruct or
decoder-oracle folder with sample.json) left above L1 1e-4, one descent (1 trial x 1 hop x STEPS
steps + 10 float64 polish, the descent of the fast budget) from the ground truth displaced by uniform noise
of each size s; prints the final L1 and whether StructureMatcher matches (m) or not (-).

    python scripts/basin_radius.py data/carbon_24/val.csv.gz --dataset carbon_24 -n 6 \
        --missed runs/oracle_carbon/recon_fast+sym
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("crystals", type=Path, help="CSV(.gz) with a 'cif' column")
    p.add_argument("--dataset", required=True, choices=("perov_5", "carbon_24", "mp_20"), help="sets n_max")
    p.add_argument("-n", type=int, default=6, help="the first N crystals (default 6)")
    p.add_argument("--sizes", default="0,0.1,0.2,0.3,0.5", help="displacement sizes in Angstrom")
    p.add_argument("--steps", type=int, default=190, help="descent steps (default 190)")
    p.add_argument("--seed", type=int, default=0, help="seed of the displacements")
    p.add_argument("--missed", type=Path, default=None, metavar="RUN",
                   help="only the crystals this sampled run of CRYSTALS left above L1 1e-4")  # fmt: skip
    args = p.parse_args()

    from pymatgen.core import Lattice

    from srd.descriptor import EADParams
    from srd.metrics.recon import match_one
    from srd.reconstruction import ReconstructConfig
    from srd.reconstruction.algorithm import reconstruct
    from srd.reconstruction.job import _items_from_truth
    from srd.representation import DATASET_N_MAX

    rows, limit = None, args.n
    if args.missed is not None:
        import csv
        import json

        sample = json.loads((args.missed / "sample.json").read_text())
        row_of = dict(zip(sample["ids"], sample["rows"]))
        with open(args.missed / "results.csv") as f:
            missed = [r["id"] for r in csv.DictReader(f) if r["loss"] and float(r["loss"]) > 1e-4]
        rows, limit = sorted(row_of[i] for i in missed)[: args.n], None
    items = _items_from_truth(args.crystals, DATASET_N_MAX[args.dataset], EADParams(), limit, False, rows)
    cfg = ReconstructConfig(trials=1, hops=1, steps=args.steps, polish_steps=10)
    rng = np.random.default_rng(args.seed)
    sizes = [float(x) for x in args.sizes.split(",")]
    print("id | atoms | " + " | ".join(f"{s} A" for s in sizes))
    for it in items:
        if it.truth is None:
            continue
        s = it.truth.get_sorted_structure(key=lambda site: site.specie.Z)  # reconstruction's atom order
        # ... and its cell frame (Lattice.from_parameters)
        frame = Lattice.from_parameters(*s.lattice.abc, *s.lattice.angles)
        cells = []
        for size in sizes:
            x = s.cart_coords + rng.uniform(-size, size, size=s.cart_coords.shape)
            x = frame.get_cartesian_coords(s.lattice.get_fractional_coords(x))
            r = reconstruct([it.target], [it.id], config=cfg, initial=[x])[0]
            cells.append(f"{r.loss:.1e} {'m' if match_one(r.structure, it.truth) is not None else '-'}")
        print(f"{it.id} | {len(s)} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
