#!/usr/bin/env python
"""Draw docs/pipeline.png, the README's picture of srd (matplotlib only)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

BOXES = [
    ("crystal\n(CIF / pymatgen)", 0.08, "#dde8f5"),
    ("R  (704 values)\npooled EAD (max | min), d_min,\nlattice, composition, n/n_max", 0.29, "#fde9c9"),
    ("DDPM in R space\n(1-D U-Net / block MLP,\n2000 cosine steps)", 0.50, "#e3f1dc"),
    ("decode n, composition,\nlattice from R", 0.71, "#fde9c9"),
    ("reconstruct positions:\nAdam + basin hopping through\nthe fused EAD op (C++/CUDA)", 0.92, "#dde8f5"),
]


def main() -> None:
    fig, ax = plt.subplots(figsize=(15, 2.6))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    w, h = 0.158, 0.62
    for text, x, color in BOXES:
        ax.add_patch(FancyBboxPatch((x - w / 2, 0.25), w, h, boxstyle="round,pad=0.01", fc=color, ec="#555"))
        ax.text(x, 0.25 + h / 2, text, ha="center", va="center", fontsize=8)
    labels = ["featurize", "train / sample", "generated R", ""]
    for (_, x0, _), (_, x1, _), lab in zip(BOXES, BOXES[1:], labels):
        ax.add_patch(
            FancyArrowPatch((x0 + w / 2, 0.56), (x1 - w / 2, 0.56), arrowstyle="-|>", mutation_scale=14)
        )
        ax.text((x0 + x1) / 2, 0.92, lab, ha="center", fontsize=8, color="#333")
    ax.text(
        0.5,
        0.06,
        "srd-featurize  ->  srd-train  ->  srd-sample (decode + reconstruct)  ->  srd-evaluate;  "
        "srd-reconstruct alone is the paper's Table 1",
        ha="center",
        fontsize=9,
        family="monospace",
    )
    out = Path(__file__).resolve().parents[1] / "docs" / "pipeline.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
