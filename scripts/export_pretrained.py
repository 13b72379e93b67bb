"""Write a packaged pretrained model (python/srd/pretrained/NAME.pt) from a training run.

    python scripts/export_pretrained.py runs/perov_5_cond perov_5 --templates data/perov_5/train.csv.gz \
        --command "srd-train --data data/perov_5/train.csv.gz --out runs/perov_5_cond --config perov_5_cond"

Keeps what sampling needs: the EMA weights (as float16), the composition model, statistics, parameters and
config; drops the optimiser and RNG states. The template files are stored as repository-relative paths.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from srd.diffusion.trainer import read_checkpoint
from srd.utils import atomic_torch_save, with_checksum


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the srd-train RUN folder")
    p.add_argument("name", help="the packaged name (perov_5, mp_20, carbon_24)")
    p.add_argument("--templates", nargs="+", required=True, help="repository-relative training CSVs")
    p.add_argument("--command", required=True, help="the srd-train command that trained it")
    p.add_argument("--data-note", default="", help="what the training data are")
    args = p.parse_args()
    ck = read_checkpoint(Path(args.run) / "checkpoint.pt")
    if ck.get("ema") is None:
        raise SystemExit("the run has no EMA weights")
    shadow = ck["ema"]["shadow"]
    weights = {k: shadow.get(k, v) for k, v in ck["model"].items()}  # EMA weights, the model's buffers
    weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    config = dict(ck["config"])
    config["data"] = " + ".join(args.templates)
    out = {k: v for k, v in ck.items() if k not in ("model", "ema", "optimizer", "rng", "checksum")}
    out.update(
        model=weights,
        ema=None,
        config=config,
        templates=list(args.templates),
        pretrained={
            "name": args.name,
            "command": args.command,
            "data": args.data_note or config["data"],
            "steps": int(ck["step"]),
            "minutes": round(float(ck["seconds"]) / 60, 1),
            "trained_on": ck.get("meta", {}),
            "weights": "EMA, float16",
        },
    )
    dest = Path(__file__).resolve().parents[1] / "python" / "srd" / "pretrained" / f"{args.name}.pt"
    atomic_torch_save(with_checksum(out), dest)
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB; step {ck['step']})")


if __name__ == "__main__":
    main()
