"""Why COV-P drops through reconstruction: the decoder oracle's crystals, one by one.

For every crystal of a decoder-oracle run (python -m srd.experiments.decoder_oracle) whose truth counts for
COV-P at CDVAE's thresholds and whose reconstruction does not, print its final loss, whether
StructureMatcher matched it to the truth (and the RMS), the precision distances (nearest test crystal's
CrystalNN structure fingerprint) of the truth and of the reconstruction, and the fingerprint distance
between the two.

    python scripts/oracle_precision.py data/carbon_24/val.csv.gz data/carbon_24/test.csv.gz \\
        runs/oracle_carbon/recon_fast+sym carbon_24
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("crystals", help="the oracle's real crystals (the val split it sampled)")
    p.add_argument("reference", help="the test split COV is measured against")
    p.add_argument("recon", type=Path, help="the oracle's reconstruction folder (recon_<budget>)")
    p.add_argument("dataset", help="perov_5, mp_20 or carbon_24 (CDVAE's COV thresholds)")
    args = p.parse_args()

    from pymatgen.core import Structure

    from srd.metrics.coverage import nearest_distances
    from srd.metrics.crystals import evaluate_file, evaluate_structures
    from srd.metrics.published import COV_THRESHOLDS
    from srd.structures import read_structures

    rows = json.loads((args.recon / "sample.json").read_text())["rows"]
    truth = list(read_structures(args.crystals, rows=rows))
    res = {r["id"]: r for r in csv.DictReader(open(args.recon / "results.csv"))}
    recon = [
        Structure.from_file(args.recon / res[t.id]["file"]) if res[t.id]["file"] else None for t in truth
    ]
    ref = evaluate_file(args.reference, reference=True)
    real = evaluate_structures([t.structure for t in truth])
    rec = evaluate_structures(recon)
    sc, cc = COV_THRESHOLDS["cdvae"][args.dataset]

    def precision_distances(cs):
        d = nearest_distances(
            cs.struct_fp[cs.fp_ok], cs.comp_fp[cs.fp_ok], ref.struct_fp[ref.fp_ok], ref.comp_fp[ref.fp_ok]
        )
        s, c = np.full(len(cs), np.inf), np.full(len(cs), np.inf)
        s[cs.fp_ok], c[cs.fp_ok] = d["struct_precision"], d["comp_precision"]
        return s, c

    rs, rc = precision_distances(real)
    hs, hc = precision_distances(rec)
    real_ok, rec_ok = (rs <= sc) & (rc <= cc), (hs <= sc) & (hc <= cc)
    fp = np.linalg.norm(real.struct_fp - rec.struct_fp, axis=1)
    print(
        f"CDVAE cutoffs struct {sc}, comp {cc}: COV-P real {100 * real_ok.mean():.2f} %, reconstructed {100 * rec_ok.mean():.2f} %"
    )
    print("id | formula | loss | matched | rms | struct dist. real | reconstructed | fingerprint real-recon")
    lost = [i for i in range(len(truth)) if real_ok[i] and not rec_ok[i]]
    for i in lost:
        r = res[truth[i].id]
        print(
            f"{truth[i].id} | {r['formula']} | {r['loss']} | {r['matched']} | {r['rms'] or '-'} | {rs[i]:.3f} | {hs[i]:.3f} | {fp[i]:.3f}"
        )
    losses = [float(res[truth[i].id]["loss"]) for i in lost]
    if lost:
        print(f"{len(lost)} crystals lose precision; their final loss {min(losses):.2e} to {max(losses):.2e}")
    matched = [res[t.id]["matched"] == "1" for t in truth]
    print(
        f"median fingerprint distance real-reconstructed over matched crystals: {np.nanmedian(fp[matched]):.4f}"
    )


if __name__ == "__main__":
    main()
