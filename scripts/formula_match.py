"""Does an srd-sample --formula folder hold a known structure? Each generated crystal of OUT is matched
against one reference crystal (``--id`` of ``--reference``) with the CSP matcher (srd.metrics.recon.
match_structures: StructureMatcher stol 0.5, angle_tol 10, ltol 0.3, volumes rescaled as pymatgen does by
default), and the matches are printed with each sample's atom count, density and loss.

  srd-sample --pretrained mp_20 --formula NaCl -n 10 -o nacl
  python scripts/formula_match.py nacl --reference data/mp_20/val.csv.gz --id mp-22862   # rock salt

Prints one JSON line: the number of samples, how many match, their atom counts, densities and losses.
"""

from __future__ import annotations

import argparse
import csv
import json
import warnings
from collections import Counter
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="an srd-sample output folder (results.csv and cifs/)")
    ap.add_argument("--reference", required=True, help="a CDVAE-format CSV holding the known structure")
    ap.add_argument("--id", required=True, help="the known structure's material_id in --reference")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from srd.metrics.recon import match_structures
    from srd.structures import read_structures

    ref = next((r.structure for r in read_structures(args.reference) if r.id == args.id), None)
    if ref is None:
        raise SystemExit(f"formula_match: {args.id!r} is not a readable crystal of {args.reference}")
    out = Path(args.out)
    with (out / "results.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    preds = [next(read_structures(out / r["file"])).structure for r in rows]
    matched = match_structures(preds, [ref] * len(preds))["per_crystal"]
    hits = [bool(m["matched"]) for m in matched]
    print(
        json.dumps(
            {
                "out": str(out),
                "reference": f"{args.reference}:{args.id}",
                "n": len(rows),
                "matched": sum(hits),
                "atom_counts": dict(sorted(Counter(len(s) for s in preds).items())),
                "matched_ids": [r["id"] for r, h in zip(rows, hits) if h],
                "density_g_cm3": [round(float(s.density), 2) for s in preds],
                "reference_density_g_cm3": round(float(ref.density), 2),
                "losses": [float(r["loss"]) for r in rows],
            }
        )
    )


if __name__ == "__main__":
    main()
