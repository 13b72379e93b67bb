"""The training loss curve of a run folder as a PNG (RUN/loss.png), written at the end of srd-train."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..utils import atomic_write_bytes


def plot_loss(run: str | Path, out: str | Path | None = None, window: int = 50) -> Path | None:
    """Plot RUN/log.csv (loss per logged step, raw and smoothed by a running mean) to ``out``.

    Returns the written path, or None when the log has no rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    run = Path(run)
    with open(run / "log.csv", newline="") as fh:
        rows = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(fh)]
    if not rows:
        return None
    steps, loss = (np.array(x) for x in zip(*rows))
    k = max(1, min(window, len(loss)))
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, loss, lw=0.5, alpha=0.35, color="tab:blue", label="loss (logged steps)")
    ax.plot(steps[k - 1 :], smooth, lw=1.5, color="tab:blue", label=f"running mean of {k}")
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("epsilon MSE")
    ax.set_title(f"srd-train: {run.name}")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    out = Path(out) if out else run / "loss.png"
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return out
