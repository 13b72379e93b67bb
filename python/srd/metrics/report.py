"""Reports of a generation evaluation: metrics.json, metrics.md, per_crystal.csv and PNG figures."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..utils import atomic_write_bytes, atomic_write_text, run_metadata, write_json  # noqa: E402
from .crystals import CrystalSet  # noqa: E402
from .generation import GenerationResult  # noqa: E402
from .published import DATA_CEILING, METRIC_LABELS, PAPER_TABLE2  # noqa: E402

__all__ = [
    "write_generation_report",
    "metrics_markdown",
    "summary_table",
    "unreadable_summary",
    "plot_ead_pca",
    "plot_histograms",
    "plot_structures",
    "pooled_ead_features",
]

_DATASET_NAMES = {"perov_5": "Perov-5", "carbon_24": "Carbon-24", "mp_20": "MP-20"}


def _fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}f}"


def _pub(v) -> str:
    """A published number as published (no padding)."""
    return "—" if v is None else f"{v:g}"


def metrics_markdown(metrics: dict) -> str:
    """The paper's Table 2 layout: this run, the paper's row and the data ceiling of SPEC section 7."""
    ds = metrics.get("dataset")
    name = _DATASET_NAMES.get(ds or "", ds or "unknown dataset")
    t = metrics["table"]
    cov = metrics["coverage"]
    emd = metrics["emd"]
    has_symat = "cov_recall_symat" in t
    cdvae_label = "CDVAE thresholds" if "cdvae" in cov else "thresholds"
    head = list(METRIC_LABELS.values())
    head[4] = f"COV-R % ({cdvae_label})"
    head[5] = f"COV-P % ({cdvae_label})"
    if has_symat:
        head += ["COV-R % (SyMat thresholds)", "COV-P % (SyMat thresholds)"]
    lines = [f"# Generation metrics — {name}", ""]
    src = metrics.get("inputs", {})
    if src:
        lines += [f"- generated: `{src.get('generated')}` ({metrics['validity']['n_generated']} crystals)",
                  f"- reference: `{src.get('reference')}` ({metrics['n_reference']} crystals)"]  # fmt: skip
    if ds == "mp_20":
        lines.append("- MP-20: srd ships the complete val and test splits (data/mp_20, recovered) but only the first "
                     "2573 train rows; a model trained on train_PARTIAL + val is not the paper's training set, and "
                     "the data ceiling below was measured on the former partial val and test splits "
                     "(see data/README.md).")  # fmt: skip
    lines += [f"- SMACT {metrics['smact_version']}; EMDs over {emd['n_samples_used']} valid samples "
              f"(requested {emd['n_samples_requested']}), seeds {emd['seeds']} (mean ± std)", ""]  # fmt: skip
    lines.append("| | " + " | ".join(head) + " |")
    lines.append("|---" * (len(head) + 1) + "|")

    def emd_cell(key):
        m = emd[key]
        if m["mean"] is None:
            return "—"
        return f"{m['mean']:.4f} ± {m['std']:.4f}" if len(emd["seeds"]) > 1 else f"{m['mean']:.4f}"

    ours = [_fmt(t["comp_valid"], 2), _fmt(t["struct_valid"], 2), emd_cell("n_elements"), emd_cell("density"),
            _fmt(t["cov_recall"], 2), _fmt(t["cov_precision"], 2)]  # fmt: skip
    if has_symat:
        ours += [_fmt(t["cov_recall_symat"], 2), _fmt(t["cov_precision_symat"], 2)]
    lines.append("| **this run** | " + " | ".join(ours) + " |")
    paper = PAPER_TABLE2.get(ds or "")
    if paper:
        row = [_pub(paper[k]) for k in ("comp_valid", "struct_valid", "emd_n_elements", "emd_density")]
        row += ["—", "—"]
        if has_symat:
            row += [_pub(paper["cov_recall"]), _pub(paper["cov_precision"])]
        else:
            row[4:6] = [
                _pub(paper["cov_recall"]) + " (SyMat thr.)",
                _pub(paper["cov_precision"]) + " (SyMat thr.)",
            ]
        lines.append("| paper (StructRepDiff, Table 2) | " + " | ".join(row) + " |")
    ceil = DATA_CEILING.get(ds or "")
    if ceil:
        row = [
            _pub(ceil[k])
            for k in (
                "comp_valid",
                "struct_valid",
                "emd_n_elements",
                "emd_density",
                "cov_recall",
                "cov_precision",
            )
        ]
        if has_symat:
            row += ["—", "—"]
        lines.append(f"| data ceiling: real {ceil['label']} (SPEC §7) | " + " | ".join(row) + " |")
    lines += ["", "COV thresholds (structure, composition fingerprint distance):"]
    for label, c in cov.items():
        lines.append(f"- {label}: ({c['struct_cutoff']}, {c['comp_cutoff']}) — COV-R {c['cov_recall']:.2f} %, "
                     f"COV-P {c['cov_precision']:.2f} %, AMSD-R {c['amsd_recall']:.4f}, AMCD-R {c['amcd_recall']:.4f}")  # fmt: skip
    v = metrics["validity"]
    lines += ["", f"Samples: {v['n_generated']} generated, {v['n_readable']} readable, {v['n_fingerprinted']} "
              f"fingerprinted, {v['n_valid']} valid ({v['valid']:.2f} %). Reference: {metrics['n_reference']} crystals, "
              f"{metrics['n_reference_fingerprinted']} fingerprinted."]  # fmt: skip
    line = unreadable_summary(metrics)
    if line:
        lines += ["", line]
    fails = metrics.get("fingerprint_failures", {})
    for side in ("generated", "reference"):
        lst = fails.get(side) or []
        if lst:
            shown = ", ".join(f"`{f['id']}` ({f['stage']})" for f in lst[:20])
            more = f" and {len(lst) - 20} more (see metrics.json)" if len(lst) > 20 else ""
            lines.append(f"\nNot read or not fingerprinted ({side}): {shown}{more}.")
    devs = metrics.get("deviations_from_cdvae") or []
    if devs:
        lines += ["", "Where this differs from CDVAE's compute_metrics.py:"] + [f"- {d}" for d in devs]
    figs = metrics.get("figures") or []
    if figs:
        lines += ["", "Figures: " + ", ".join(f"[{f}]({f})" for f in figs)]
    return "\n".join(lines) + "\n"


def unreadable_summary(metrics: dict, *, examples: int = 3) -> str:
    """One line on the generated crystals that could not be read or built (counted invalid), with the
    first reasons; "" when there are none."""
    v = metrics["validity"]
    k = int(v.get("n_unreadable", 0))
    if not k:
        return ""
    shown = [e["error"] or e["id"] for e in (v.get("unreadable_examples") or [])[:examples]]
    more = "; ..." if k > len(shown) else ""
    return (
        f"Unreadable generated crystals: {k} of {v['n_generated']}, counted invalid (composition and structure) "
        f"and left out of coverage; first reasons: " + "; ".join(shown) + more
    )


def summary_table(metrics: dict) -> str:
    """A short plain-text summary for the terminal."""
    t = metrics["table"]
    rows = [("comp. validity %", _fmt(t["comp_valid"], 2)), ("struct. validity %", _fmt(t["struct_valid"], 2)),
            ("EMD # elem.", _fmt(t["emd_n_elements"], 4)), ("EMD density", _fmt(t["emd_density"], 4)),
            ("COV-R %", _fmt(t["cov_recall"], 2)), ("COV-P %", _fmt(t["cov_precision"], 2))]  # fmt: skip
    if "cov_recall_symat" in t:
        rows += [
            ("COV-R % (SyMat thr.)", _fmt(t["cov_recall_symat"], 2)),
            ("COV-P % (SyMat thr.)", _fmt(t["cov_precision_symat"], 2)),
        ]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------
def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _subset(indices: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    if len(indices) <= k:
        return indices
    return np.sort(np.random.RandomState(seed).choice(indices, k, replace=False))


def pooled_ead_features(cs: CrystalSet, indices, *, n_max: int) -> tuple[np.ndarray, int]:
    """Pooled EAD block (first 600 values of R, :func:`srd.representation.encode_structures`) of the given
    crystals; crystals that :func:`srd.representation.prepare_structure` rejects are skipped.
    Returns (features [k, 600], number skipped)."""
    from ..representation import encode_structures, prepare_structure

    prepared, skipped = [], 0
    for i in indices:
        s = cs.structure(int(i))
        if s is None:
            skipped += 1
            continue
        try:
            prepared.append(prepare_structure(s, n_max=n_max, niggli=True))
        except Exception:  # noqa: BLE001 - out of range for R, or a failing Niggli reduction
            skipped += 1
    if not prepared:
        return np.zeros((0, 600)), skipped
    r = encode_structures(prepared, n_max=n_max, params=None)
    return r[:, :600].numpy(), skipped


def plot_ead_pca(
    gen: CrystalSet, ref: CrystalSet, path: Path, *, n_max: int | None, max_points: int = 2000
) -> dict:
    """The paper's Fig. 5: PCA (2 components) of the pooled EAD of generated vs reference crystals."""
    from sklearn.decomposition import PCA

    if n_max is None:
        n_max = int(max(np.diff(gen.ptr).max(initial=1), np.diff(ref.ptr).max(initial=1)))
    gi = _subset(np.nonzero(gen.readable)[0], max_points)
    ri = _subset(np.nonzero(ref.readable)[0], max_points)
    xg, sg = pooled_ead_features(gen, gi, n_max=n_max)
    xr, sr = pooled_ead_features(ref, ri, n_max=n_max)
    info = {"n_generated": len(xg), "n_reference": len(xr), "skipped_generated": sg, "skipped_reference": sr}
    fig, ax = plt.subplots(figsize=(6, 5))
    if len(xg) + len(xr) >= 3:
        x = np.concatenate([xr, xg])
        mu, sd = x.mean(axis=0), x.std(axis=0)
        sd[sd == 0] = 1.0
        z = (x - mu) / sd
        pca = PCA(n_components=2, random_state=0).fit(z)
        p = pca.transform(z)
        ax.scatter(
            p[: len(xr), 0], p[: len(xr), 1], s=6, alpha=0.5, label=f"reference ({len(xr)})", color="tab:blue"
        )
        ax.scatter(
            p[len(xr) :, 0],
            p[len(xr) :, 1],
            s=6,
            alpha=0.5,
            label=f"generated ({len(xg)})",
            color="tab:orange",
        )
        ev = pca.explained_variance_ratio_
        ax.set_xlabel(f"PC1 ({100 * ev[0]:.1f} %)")
        ax.set_ylabel(f"PC2 ({100 * ev[1]:.1f} %)")
        ax.legend(loc="best", markerscale=3)
    else:
        ax.text(0.5, 0.5, "too few crystals for a PCA", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Pooled EAD (600 features, standardised), PCA")
    _save(fig, path)
    return info


def plot_histograms(gen: CrystalSet, ref: CrystalSet, density_path: Path, nelem_path: Path) -> None:
    """Histograms of density and of the number of distinct elements: valid generated vs reference."""
    gd, rd = gen.density[gen.valid], ref.density[ref.readable]
    gd, rd = gd[np.isfinite(gd)], rd[np.isfinite(rd)]
    fig, ax = plt.subplots(figsize=(6, 4))
    both = np.concatenate([gd, rd]) if len(gd) + len(rd) else np.array([0.0, 1.0])
    bins = np.linspace(np.percentile(both, 0.5), np.percentile(both, 99.5) + 1e-9, 50)
    ax.hist(rd, bins=bins, density=True, alpha=0.5, label=f"reference ({len(rd)})", color="tab:blue")
    if len(gd):
        ax.hist(
            gd, bins=bins, density=True, alpha=0.5, label=f"generated, valid ({len(gd)})", color="tab:orange"
        )
    ax.set_xlabel("density (g/cm³)")
    ax.set_ylabel("probability density")
    ax.legend()
    _save(fig, density_path)

    gn, rn = gen.n_elements[gen.valid], ref.n_elements[ref.readable]
    top = int(max(gn.max(initial=1), rn.max(initial=1)))
    edges = np.arange(0.5, top + 1.5)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(rn, bins=edges, density=True, alpha=0.5, label=f"reference ({len(rn)})", color="tab:blue")
    if len(gn):
        ax.hist(
            gn, bins=edges, density=True, alpha=0.5, label=f"generated, valid ({len(gn)})", color="tab:orange"
        )
    ax.set_xticks(np.arange(1, top + 1))
    ax.set_xlabel("number of distinct elements")
    ax.set_ylabel("fraction")
    ax.legend()
    _save(fig, nelem_path)


def plot_structures(cs: CrystalSet, path: Path, *, n: int = 6, title: str = "generated crystals") -> int:
    """A grid of crystals drawn as 3-D scatters of their atoms in the unit cell, cell edges included
    (valid crystals first). Returns the number drawn."""
    from pymatgen.core import Element

    order = list(np.nonzero(cs.valid)[0]) + list(np.nonzero(cs.readable & ~cs.valid)[0])
    picks = order[:n]
    cols = min(3, max(1, len(picks)))
    rows = max(1, math.ceil(len(picks) / cols))
    fig = plt.figure(figsize=(4 * cols, 4 * rows))
    cmap = plt.get_cmap("tab20")
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
    edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if np.abs(corners[a] - corners[b]).sum() == 1]
    for p, i in enumerate(picks):
        s = cs.structure(int(i))
        ax = fig.add_subplot(rows, cols, p + 1, projection="3d")
        lat = s.lattice.matrix
        cc = corners @ lat
        for a, b in edges:
            ax.plot(*zip(cc[a], cc[b]), color="0.4", lw=0.8)
        frac = np.mod(s.frac_coords, 1.0)
        xyz = frac @ lat
        zs = np.array(s.atomic_numbers)
        for z in sorted(set(zs.tolist())):
            m = zs == z
            ax.scatter(xyz[m, 0], xyz[m, 1], xyz[m, 2], s=60, color=cmap(z % 20), edgecolors="k", linewidths=0.3,
                       label=Element.from_Z(int(z)).symbol, depthshade=False)  # fmt: skip
        ax.set_title(
            f"{cs.ids[i]}: {s.composition.reduced_formula}" + ("" if cs.valid[i] else " (invalid)"),
            fontsize=9,
        )
        ax.legend(fontsize=7, loc="upper left")
        ax.set_axis_off()
    if not picks:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no readable crystal", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle(title)
    _save(fig, path)
    return len(picks)


def _per_crystal_csv(cs: CrystalSet) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "readable", "comp_valid", "struct_valid", "fingerprinted", "valid", "n_atoms", "n_elements",
                "density", "error"])  # fmt: skip
    counts = np.diff(cs.ptr)
    for i, rid in enumerate(cs.ids):
        err = cs.errors[i] or cs.fp_errors[i]
        dens = "" if not math.isfinite(cs.density[i]) else f"{cs.density[i]:.6g}"
        w.writerow([rid, int(cs.readable[i]), int(cs.comp_valid[i]), int(cs.struct_valid[i]), int(cs.fp_ok[i]),
                    int(cs.valid[i]), int(counts[i]), int(cs.n_elements[i]), dens, err])  # fmt: skip
    return buf.getvalue()


def write_generation_report(
    result: GenerationResult,
    out_dir: str | os.PathLike,
    *,
    inputs: dict | None = None,
    plots: bool = True,
    plot_samples: int = 2000,
    n_render: int = 6,
) -> list[Path]:
    """Write metrics.json, metrics.md, per_crystal.csv and (with ``plots``) ead_pca.png,
    density_hist.png, n_elements_hist.png and structures.png into ``out_dir``. Returns the paths."""
    from ..representation import DATASET_N_MAX

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = dict(result.metrics)
    m["inputs"] = inputs or {}
    written: list[Path] = []
    figures: list[str] = []
    if plots:
        ds = m.get("dataset")
        pca_info = plot_ead_pca(result.generated, result.reference, out / "ead_pca.png",
                                n_max=DATASET_N_MAX.get(ds) if ds else None, max_points=plot_samples)  # fmt: skip
        m["ead_pca"] = pca_info
        plot_histograms(
            result.generated, result.reference, out / "density_hist.png", out / "n_elements_hist.png"
        )
        plot_structures(result.generated, out / "structures.png", n=n_render)
        figures = ["ead_pca.png", "density_hist.png", "n_elements_hist.png", "structures.png"]
        written += [out / f for f in figures]
    m["figures"] = figures
    m["run"] = run_metadata()
    write_json(out / "metrics.json", m)
    atomic_write_text(out / "metrics.md", metrics_markdown(m))
    atomic_write_text(out / "per_crystal.csv", _per_crystal_csv(result.generated))
    written = [out / "metrics.json", out / "metrics.md", out / "per_crystal.csv"] + written
    return written
