"""Judging a generative model in representation space, without reconstruction (``srd-evaluate repr``).

Generated representation vectors R are compared with reference vectors (the featurised test split), block
by block of R (:meth:`srd.representation.Layout.blocks`, plus the whole EAD block and all of R):

* mean nearest-neighbour Euclidean distance generated -> reference (precision-like: is every generated
  vector near a real one?) and reference -> generated (recall-like: is every real vector near a generated
  one?), computed in row chunks so that 10,000 x 10,000 fits in memory;
* the mean (and max) over the block's coordinates of the 1-D Wasserstein distance between the generated
  and the reference marginals.

Distances are in the units of R as stored (SPEC section 2): EAD, d_min and lattice min-max scaled with the
statistics of one split (those of the generated file unless told otherwise), composition fractions and
n / n_max unscaled. Both sides are brought into the same scaling first (the scaling is exactly invertible).

From the decoded vectors (:func:`srd.representation.decode`): the fraction that decode (rejections counted
by reason), SMACT composition validity (:func:`srd.metrics.validity.composition_validity`), and the EMDs of
the number of distinct elements and of the density (g/cm^3, from the decoded lattice and composition) as
CDVAE computes them (:func:`srd.metrics.coverage.emd_metrics`: n_samples valid generated vectors per seed
against every reference vector).
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from ..representation import Decoded, Features, Layout, ScalingStats, decode, featurize
from ..representation.featurize import dataset_from_path
from ..representation.layout import DATASET_N_MAX
from ..utils import safe_torch_load
from .coverage import emd_metrics
from .validity import composition_validity, smact_version

__all__ = [
    "block_slices",
    "nearest_neighbour_distances",
    "block_metrics",
    "decoded_properties",
    "repr_metrics",
    "load_representations",
    "evaluate_representations",
    "markdown_table",
    "EMD_POOLS",
]

#: Which generated vectors the EMDs draw from: decoded and SMACT-valid (the R-space analogue of CDVAE's
#: valid crystals; structure validity needs positions), or every decoded vector.
EMD_POOLS = ("valid", "decoded")

_CRYSTAL_SUFFIXES = (".csv", ".csv.gz")


# ------------------------------------------------------------------------------------------------
# Distances in R
# ------------------------------------------------------------------------------------------------
def block_slices(layout: Layout) -> dict[str, slice]:
    """The blocks of R that are scored: the whole EAD block, each block of ``layout.blocks()``, and all."""
    out = {"ead": layout.ead}
    out.update({name: slice(a, b) for name, (a, b) in layout.blocks().items()})
    out["all"] = slice(0, layout.dim)
    return out


def nearest_neighbour_distances(
    a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, *, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from every row of ``a`` to its nearest row of ``b``, and from every row of ``b``
    to its nearest row of ``a`` (float64).

    Rows of ``a`` are processed ``chunk`` at a time (memory ~ chunk x len(b) doubles). The nearest
    neighbour is found from squared norms and one matrix product; its distance is then recomputed directly,
    so that identical rows are exactly 0 apart.
    """
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).double()
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).double()
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"nearest_neighbour_distances: need two 2-D arrays with the same number of columns, got "
            f"{list(a.shape)} and {list(b.shape)}"
        )
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"nearest_neighbour_distances: empty input ({len(a)} and {len(b)} rows)")
    if chunk < 1:
        raise ValueError(f"nearest_neighbour_distances: chunk must be >= 1, got {chunk}")
    bn = (b * b).sum(dim=1)
    a_to_b = torch.empty(len(a), dtype=torch.float64)
    best_b = torch.full((len(b),), float("inf"), dtype=torch.float64)
    arg_b = torch.zeros(len(b), dtype=torch.long)
    for s in range(0, len(a), chunk):
        block = a[s : s + chunk]
        d2 = (block * block).sum(dim=1)[:, None] + bn[None, :] - 2.0 * (block @ b.T)
        j = d2.argmin(dim=1)
        a_to_b[s : s + chunk] = (block - b[j]).norm(dim=1)
        col_min, col_arg = d2.min(dim=0)
        better = col_min < best_b
        best_b = torch.where(better, col_min, best_b)
        arg_b = torch.where(better, col_arg + s, arg_b)
    b_to_a = (b - a[arg_b]).norm(dim=1)
    return a_to_b.numpy(), b_to_a.numpy()


def block_metrics(
    gen: torch.Tensor, ref: torch.Tensor, layout: Layout, *, chunk: int = 1024
) -> dict[str, dict]:
    """Per block of R: nearest-neighbour distances both ways and the mean 1-D Wasserstein distance of the
    block's coordinates. ``gen`` and ``ref`` are scaled R in the same scaling."""
    gen = gen.double()
    ref = ref.double()
    g_np, r_np = gen.numpy(), ref.numpy()
    w1 = np.array([wasserstein_distance(g_np[:, k], r_np[:, k]) for k in range(layout.dim)])
    out = {}
    for name, sl in block_slices(layout).items():
        g2r, r2g = nearest_neighbour_distances(gen[:, sl], ref[:, sl], chunk=chunk)
        w = w1[sl]
        out[name] = {
            "columns": [sl.start, sl.stop],
            "dim": sl.stop - sl.start,
            "nn_gen_to_ref_mean": float(g2r.mean()),
            "nn_gen_to_ref_median": float(np.median(g2r)),
            "nn_ref_to_gen_mean": float(r2g.mean()),
            "nn_ref_to_gen_median": float(np.median(r2g)),
            "w1_mean": float(w.mean()),
            "w1_max": float(w.max()),
            "w1_argmax_column": int(sl.start + int(np.argmax(w))),
        }
    return out


# ------------------------------------------------------------------------------------------------
# Decoded properties
# ------------------------------------------------------------------------------------------------
@functools.cache
def _atomic_masses() -> np.ndarray:
    from pymatgen.core import Element

    return np.array([0.0] + [float(Element.from_Z(z).atomic_mass) for z in range(1, 119)])


@functools.cache
def _amu_per_a3_to_g_per_cm3() -> float:
    """pymatgen's conversion (Structure.density): amu / A^3 -> g / cm^3."""
    from pymatgen.core.units import Length, Mass

    return float(Mass(1.0, "amu").to("g")) / float(Length(1.0, "ang").to("cm")) ** 3


def _reason_kind(reason: str) -> str:
    """A rejection reason without its numbers (so that reasons can be counted)."""
    reason = re.sub(r"\[[^\]]*\]", "[...]", reason)
    return re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "#", reason)


def decoded_properties(feats: Features, composition: str = "largest-remainder") -> dict:
    """Decode every vector of ``feats``: which decode, why the others do not, and per decoded vector its
    number of distinct elements, density (g/cm^3) and SMACT composition validity (arrays of len(feats.ids),
    NaN / 0 / False where a vector does not decode)."""
    decoded = decode(feats.R.double(), feats.stats, feats.n_max, composition)
    m = len(decoded)
    ok = np.zeros(m, dtype=bool)
    n_elements = np.zeros(m, dtype=np.int64)
    density = np.full(m, np.nan)
    comp_valid = np.zeros(m, dtype=bool)
    reasons: Counter = Counter()
    masses = _atomic_masses()
    factor = _amu_per_a3_to_g_per_cm3()
    for i, d in enumerate(decoded):
        if not isinstance(d, Decoded):
            reasons[_reason_kind(d.reason)] += 1
            continue
        ok[i] = True
        n_elements[i] = len(set(d.numbers))
        volume = abs(float(np.linalg.det(d.lattice_matrix())))
        density[i] = float(masses[d.numbers].sum()) / volume * factor
        comp_valid[i] = composition_validity(d.numbers)
    return {
        "decoded": ok,
        "n_elements": n_elements,
        "density": density,
        "comp_valid": comp_valid,
        "rejection_reasons": dict(reasons.most_common()),
    }


def _decoded_summary(p: dict) -> dict:
    ok = p["decoded"]
    m = len(ok)
    return {
        "n": m,
        "n_decoded": int(ok.sum()),
        "decoded_pct": 100.0 * float(ok.mean()),
        "rejection_reasons": p["rejection_reasons"],
        "comp_valid_pct": 100.0 * float(p["comp_valid"].mean()),
        "comp_valid_pct_of_decoded": 100.0 * float(p["comp_valid"][ok].mean()) if ok.any() else None,
        "n_elements_mean": float(p["n_elements"][ok].mean()) if ok.any() else None,
        "density_mean": float(np.mean(p["density"][ok])) if ok.any() else None,
    }


# ------------------------------------------------------------------------------------------------
# Both together
# ------------------------------------------------------------------------------------------------
def _grid(params) -> tuple:
    return (tuple(params.etas), tuple(params.mus), float(params.cutoff), int(params.lmax), str(params.l1))


def check_compatible(gen: Features, ref: Features, *, gen_name: str = "GEN", ref_name: str = "REF") -> None:
    """Raise ValueError (naming both sides) when GEN and REF do not live in one R space."""
    gs, rs = list(gen.R.shape), list(ref.R.shape)
    if gen.layout.dim != ref.layout.dim or gen.R.shape[1] != ref.R.shape[1]:
        raise ValueError(
            f"GEN and REF have different R dimensions: {gen_name} R has shape {gs} "
            f"({gen.layout.n_features} EAD features per atom), {ref_name} R has shape {rs} "
            f"({ref.layout.n_features} EAD features per atom); featurise both with the same descriptor grid"
        )
    if _grid(gen.params) != _grid(ref.params):
        raise ValueError(
            f"GEN and REF use different descriptor grids (R shapes {gs} and {rs}): {gen_name}: "
            f"{gen.params.to_dict()}; {ref_name}: {ref.params.to_dict()}; featurise both with the same grid"
        )
    if int(gen.n_max) != int(ref.n_max):
        raise ValueError(
            f"GEN and REF use different n_max (the size entry of R is n / n_max): {gen_name} n_max = "
            f"{gen.n_max}, {ref_name} n_max = {ref.n_max}; featurise REF with --n-max {gen.n_max}"
        )


def _same_stats(a: ScalingStats, b: ScalingStats) -> bool:
    return bool(torch.equal(a.lo, b.lo) and torch.equal(a.hi, b.hi))


def rescaled(feats: Features, stats: ScalingStats) -> Features:
    """``feats`` with its R expressed in the scaling ``stats`` (exact: unscale, then scale)."""
    if _same_stats(feats.stats, stats):
        return feats
    R = stats.scale(feats.stats.unscale(feats.R.double()))
    return Features(
        R.float(), feats.ids, stats, feats.n_max, feats.params, feats.dataset, feats.skipped,
        {**feats.source, "rescaled": "to the common scaling statistics"},
    )  # fmt: skip


def repr_metrics(
    gen: Features,
    ref: Features,
    *,
    composition: str = "largest-remainder",
    n_samples: int = 1000,
    seeds: Sequence[int] = (0, 1, 2),
    emd_pool: str = "valid",
    chunk: int = 1024,
) -> dict:
    """Every R-space metric of generated vectors ``gen`` against reference vectors ``ref`` (same R space:
    see :func:`check_compatible`; ``ref`` is rescaled to ``gen``'s statistics when they differ)."""
    if emd_pool not in EMD_POOLS:
        raise ValueError(f"repr_metrics: emd_pool must be one of {EMD_POOLS}, got {emd_pool!r}")
    check_compatible(gen, ref)
    if len(gen.ids) == 0 or len(ref.ids) == 0:
        raise ValueError(f"repr_metrics: empty input ({len(gen.ids)} generated, {len(ref.ids)} reference)")
    ref = rescaled(ref, gen.stats)
    blocks = block_metrics(gen.R, ref.R, gen.layout, chunk=chunk)
    pg = decoded_properties(gen, composition)
    pr = decoded_properties(ref, composition)
    pool = pg["decoded"] & (pg["comp_valid"] if emd_pool == "valid" else True)
    rok = pr["decoded"]
    emd = emd_metrics(
        pg["density"][pool], pg["n_elements"][pool], pr["density"][rok], pr["n_elements"][rok],
        n_samples=n_samples, seeds=seeds,
    )  # fmt: skip
    return {
        "units": "distances and W1 in the units of R as stored (EAD, d_min, lattice min-max scaled with one "
        "set of statistics, see scaling_statistics; composition fractions and n / n_max unscaled); validity "
        "and decoded in percent; EMD density in g/cm^3, EMD # elements in elements",
        "n_generated": len(gen.ids),
        "n_reference": len(ref.ids),
        "n_max": int(gen.n_max),
        "dim": gen.layout.dim,
        "blocks": blocks,
        "decoded": {"generated": _decoded_summary(pg), "reference": _decoded_summary(pr)},
        "emd": {**emd, "pool": emd_pool},
        "settings": {
            "composition_decoding": composition,
            "n_samples": int(n_samples),
            "seeds": [int(s) for s in seeds],
            "emd_pool": emd_pool,
            "chunk": int(chunk),
        },
        "smact_version": smact_version(),
    }


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
def input_kind(path: str | os.PathLike, *, what: str) -> str:
    """ "features" (an srd feature file, or a folder holding representations.pt) or "crystals" (CSV)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.is_dir():
        if not (path / "representations.pt").is_file():
            raise ValueError(
                f"{what} {path}: a folder must hold representations.pt (an srd-sample output folder)"
            )
        return "features"
    name = path.name.lower()
    if name.endswith(".pt"):
        return "features"
    if name.endswith(_CRYSTAL_SUFFIXES):
        return "crystals"
    raise ValueError(
        f"{what} {path}: expected a representations file (.pt written by srd-featurize or srd-sample), an "
        "srd-sample output folder, or a CSV(.gz) with a 'cif' column"
    )


def load_representations(path: str | os.PathLike, *, what: str = "GEN") -> Features:
    """An srd feature file (.pt), or the representations.pt of an srd-sample output folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "representations.pt"
    data = safe_torch_load(path, what=f"{what} representations file")
    if not isinstance(data, dict) or data.get("format") != "srd-features":
        kind = "an srd-train checkpoint" if isinstance(data, dict) and "stats" in data else "something else"
        raise ValueError(
            f"{what} {path}: not a representations file (an srd feature file written by srd-featurize, or "
            f"srd-sample's representations.pt); it is {kind}"
        )
    return Features.from_dict(data, where=f"{what} {path}")


def _subsample_rows(m: int, n: int | None, seed: int) -> np.ndarray | None:
    if n is None or n >= m:
        return None
    return np.sort(np.random.default_rng(seed).choice(m, size=n, replace=False))


def _featurize_csv(path: Path, *, subsample, seed, tmp: Path, **kw) -> Features:
    if subsample is None:
        return featurize(path, **kw)
    import pandas as pd

    df = pd.read_csv(path)
    idx = _subsample_rows(len(df), subsample, seed)
    if idx is None:
        return featurize(path, **kw)
    sub = tmp / f"{path.name.split('.')[0]}_sample{subsample}_seed{seed}.csv"
    df.iloc[idx].to_csv(sub, index=False)
    feats = featurize(sub, **kw)
    feats.source["path"] = str(path)
    feats.source["subsample"] = {"n": int(subsample), "seed": int(seed), "of": len(df)}
    return feats


def evaluate_representations(
    generated: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    stats: ScalingStats | None = None,
    n_max: int | None = None,
    dataset: str | None = None,
    subsample: int | None = None,
    seed: int = 0,
    use_cache: bool = True,
    workers: int | None = None,
    show_progress: bool = False,
    **metric_kw,
) -> dict:
    """Load or featurise both sides into one R space, then :func:`repr_metrics`.

    Scaling statistics: ``stats`` when given, else GEN's (a representations file), else REF's, else fitted
    on REF. n_max: from a representations file, else ``n_max``, else ``dataset``, else guessed from the
    paths. CSV inputs are featurised with the package's featurisation (and its cache). ``subsample`` draws
    that many rows of each side without replacement (``np.random.default_rng(seed)``, drawn afresh for
    each side) before featurising.
    """
    gen_path, ref_path = Path(generated), Path(reference)
    kinds = {"GEN": input_kind(gen_path, what="GEN"), "REF": input_kind(ref_path, what="REF")}
    paths = {"GEN": gen_path, "REF": ref_path}
    loaded = {k: load_representations(paths[k], what=k) for k in kinds if kinds[k] == "features"}
    if len(loaded) == 2:
        check_compatible(loaded["GEN"], loaded["REF"], gen_name=f"GEN {gen_path}", ref_name=f"REF {ref_path}")
    first = loaded.get("GEN") or loaded.get("REF")
    stats_source = "given (--stats)" if stats is not None else None
    if stats is None and first is not None:
        stats = first.stats
        stats_source = "GEN's file" if "GEN" in loaded else "REF's file"
    params = first.params if first is not None else None
    if first is not None:
        if n_max is not None and int(n_max) != int(first.n_max):
            raise ValueError(
                f"--n-max {n_max} disagrees with the representations file's n_max = {first.n_max}"
            )
        n_max = first.n_max
    if n_max is None:
        dataset = dataset or dataset_from_path(ref_path) or dataset_from_path(gen_path)
        if dataset is None:
            raise ValueError(
                "cannot tell n_max (the size entry of R is n / n_max) from CSV inputs whose path names no "
                "dataset: pass --dataset or --n-max"
            )
        n_max = DATASET_N_MAX[dataset]
    feats: dict[str, Features] = {}
    with tempfile.TemporaryDirectory(prefix="srd-repr-") as tmp:
        for k in ("REF", "GEN"):  # REF first: when nothing carries statistics, they are fitted on REF
            if k in loaded:
                f = loaded[k]
                idx = _subsample_rows(len(f.ids), subsample, seed)
                if idx is not None:
                    t = torch.as_tensor(idx)
                    f = Features(f.R[t], [f.ids[i] for i in idx], f.stats, f.n_max, f.params, f.dataset,
                                 f.skipped, {**f.source, "subsample": {"n": int(subsample), "seed": int(seed),
                                                                       "of": len(f.ids)}})  # fmt: skip
                feats[k] = f
                continue
            feats[k] = _featurize_csv(
                paths[k], subsample=subsample, seed=seed, tmp=Path(tmp), n_max=n_max,
                dataset=dataset or dataset_from_path(paths[k]), stats=stats, params=params,
                use_cache=use_cache, workers=workers, show_progress=show_progress,
            )  # fmt: skip
            if stats is None:
                stats, stats_source = feats[k].stats, "fitted on REF"
            params = params or feats[k].params
    gen, ref = feats["GEN"], rescaled(feats["REF"], stats)
    gen = rescaled(gen, stats)
    check_compatible(gen, ref, gen_name=f"GEN {gen_path}", ref_name=f"REF {ref_path}")
    res = repr_metrics(gen, ref, **metric_kw)
    res["inputs"] = {
        k: {
            "path": str(paths[k]),
            "kind": "representations file" if kinds[k] == "features" else "crystals (featurised here)",
            "n": len(f.ids),
            "n_skipped_at_featurisation": len(f.skipped) if kinds[k] == "crystals" else None,
            "cache": f.source.get("cache"),
            "subsample": f.source.get("subsample"),
        }
        for k, f in (("GEN", gen), ("REF", ref))
    }
    res["scaling_statistics"] = stats_source
    res["dataset"] = gen.dataset or ref.dataset or dataset
    return res


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
def _f(x, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def markdown_table(res: dict) -> str:
    """The per-block distances and the decoded metrics, as two Markdown tables."""
    lines = [
        "| block | dim | NN gen→ref | NN ref→gen | mean W1 | max W1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, b in res["blocks"].items():
        lines.append(
            f"| {name} | {b['dim']} | {_f(b['nn_gen_to_ref_mean'])} | {_f(b['nn_ref_to_gen_mean'])} | "
            f"{_f(b['w1_mean'])} | {_f(b['w1_max'])} |"
        )
    g, r = res["decoded"]["generated"], res["decoded"]["reference"]
    e = res["emd"]

    def emd(k):
        v = e[k]
        return "—" if v["mean"] is None else f"{v['mean']:.4g} ± {v['std']:.2g}"

    lines += [
        "",
        "| decoded | generated | reference |",
        "|---|---|---|",
        f"| vectors | {g['n']} | {r['n']} |",
        f"| decoded % | {g['decoded_pct']:.2f} | {r['decoded_pct']:.2f} |",
        f"| comp. valid % (SMACT, of all) | {g['comp_valid_pct']:.2f} | {r['comp_valid_pct']:.2f} |",
        f"| mean # elements | {_f(g['n_elements_mean'])} | {_f(r['n_elements_mean'])} |",
        f"| mean density (g/cm³) | {_f(g['density_mean'])} | {_f(r['density_mean'])} |",
        f"| EMD # elements | {emd('n_elements')} | |",
        f"| EMD density (g/cm³) | {emd('density')} | |",
    ]
    foot = (
        f"EMDs: {e['n_samples_used']} of {e['n_valid']} generated vectors ({e['pool']}) per seed "
        f"{e['seeds']} vs all decoded reference vectors."
    )
    if g["rejection_reasons"]:
        foot += " Rejected: " + "; ".join(f"{k}: {v}" for k, v in g["rejection_reasons"].items()) + "."
    return "\n".join(lines) + "\n\n" + foot
