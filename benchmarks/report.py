"""Print the benchmark results of `make bench` as tables with ratios (reads build/bench.json)."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

PATH = Path(
    sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "build" / "bench.json"
)


def main() -> int:
    if not PATH.is_file():
        print(f"no benchmark results at {PATH}; run `make bench`")
        return 1
    data = json.loads(PATH.read_text())
    rows = {}
    other = []
    feat = []
    recon = []
    for b in data["benchmarks"]:
        x = b.get("extra_info", {})
        if x.get("kind") == "reconstruct":
            recon.append((x, b["stats"]["min"]))
        elif x.get("kind") == "featurize":
            feat.append((x, b["stats"]["min"]))
        elif "impl" in x and "dataset" in x:
            rows[(x["dataset"], x["mode"], x["impl"])] = (b["stats"]["min"], x)
        else:
            other.append(b)
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", platform.processor())
    print(
        f"\nEAD kernels, float32, batches of 64 test crystals; machine: {cpu}, torch {torch.__version__}, "
        f"{rows and next(iter(rows.values()))[1].get('threads')} threads"
    )
    print("| dataset | mode | fused (ms/batch) | dense PyTorch (ms/batch) | speed-up | fused pairs/s |")
    print("|---|---|---|---|---|---|")
    for ds in ("perov_5", "carbon_24", "mp_20"):
        for mode in ("fwd", "fwd_bwd"):
            if (ds, mode, "native") not in rows:
                continue
            t, x = rows[(ds, mode, "native")]
            d = rows.get((ds, mode, "dense"))
            dense = f"{1e3 * d[0]:.0f}" if d else "-"
            ratio = f"{d[0] / t:.0f}x" if d else "-"
            print(
                f"| {ds} | {mode.replace('_', '+')} | {1e3 * t:.1f} | {dense} | {ratio} | {x['pairs'] / t:.3g} |"
            )
    one = rows.get(("mp_20", "fwd_bwd", "native-1core-20atoms"))
    if one:
        t, x = one
        print(
            f"\nforward+backward per 20-atom MP-20 crystal, one core: {1e3 * t / x['crystals']:.2f} ms "
            f"({x['pairs'] / x['crystals']:.0f} pairs within 20 A per crystal)"
        )
    if recon:
        print(
            "\nreconstruction at the paper's budget (12,600 evaluations per crystal), scaled from a timed slice:"
        )
        print("| dataset | crystals batched | mean atoms | s / crystal at the paper's budget |")
        print("|---|---|---|---|")
        for x, t in recon:
            per = t * x["scale_to_paper"] / x["crystals"]
            print(f"| {x['dataset']} | {x['crystals']} | {x['atoms'] / x['crystals']:.1f} | {per:.1f} |")
    if feat:
        print("\nsrd-featurize of whole test splits (cache off, parsing included):")
        print("| split | crystals | seconds | crystals/s |")
        print("|---|---|---|---|")
        for x, t in feat:
            print(f"| {x['dataset']} test | {x['crystals']} | {t:.1f} | {x['crystals'] / t:.0f} |")
    if other:
        print("\nother benchmarks (min seconds):")
        for b in other:
            print(f"  {b['name']}: {b['stats']['min']:.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
