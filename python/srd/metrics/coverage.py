"""COV-R / COV-P (CDVAE's ``compute_cov``) and the Wasserstein distances (EMD) of density and # elements.

Coverage, as CDVAE computes it:

* generated side: ALL samples, valid or not; the ones without fingerprints are dropped from the distance
  matrices but stay in the COV-P denominator (``num_gen_crystals`` counts every sample);
* reference side: every reference crystal (srd drops reference crystals that could not be fingerprinted,
  where CDVAE would crash, and lists them);
* composition fingerprints standardised with CDVAE's fixed scaler, Euclidean distances;
* COV-R = fraction of reference crystals with a generated crystal within both cutoffs (nearest neighbour
  in structure and nearest neighbour in composition taken separately, as CDVAE does);
  COV-P = fraction of generated crystals with a reference crystal within both cutoffs.

EMD: ``scipy.stats.wasserstein_distance`` between ``n_samples`` valid generated crystals drawn without
replacement (``np.random.RandomState(seed).choice``, i.e. CDVAE's ``np.random.choice`` after
``np.random.seed(seed)``) and all reference crystals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance

from .comp_scaler import comp_scaler_transform

__all__ = [
    "compute_coverage",
    "nearest_distances",
    "coverage_from_distances",
    "sample_valid_indices",
    "emd_metrics",
]


def nearest_distances(
    gen_struct_fps: np.ndarray,
    gen_comp_fps: np.ndarray,
    ref_struct_fps: np.ndarray,
    ref_comp_fps: np.ndarray,
    *,
    chunk: int = 2048,
) -> dict[str, np.ndarray]:
    """Nearest-neighbour Euclidean distances between generated and reference fingerprints (composition
    fingerprints standardised with CDVAE's scaler), computed in row chunks to bound memory.

    Returns struct_recall / comp_recall (per reference crystal: distance to the nearest generated one) and
    struct_precision / comp_precision (per generated crystal: distance to the nearest reference one).
    """
    gen_struct_fps = np.asarray(gen_struct_fps, dtype=float).reshape(len(gen_struct_fps), -1)
    ref_struct_fps = np.asarray(ref_struct_fps, dtype=float).reshape(len(ref_struct_fps), -1)
    if len(gen_struct_fps) != len(gen_comp_fps) or len(ref_struct_fps) != len(ref_comp_fps):
        raise ValueError("coverage: structure and composition fingerprints must have the same rows")
    gen_comp = comp_scaler_transform(np.asarray(gen_comp_fps, dtype=float).reshape(len(gen_comp_fps), -1))
    ref_comp = comp_scaler_transform(np.asarray(ref_comp_fps, dtype=float).reshape(len(ref_comp_fps), -1))
    n_ref = len(ref_struct_fps)
    s_rec = np.full(n_ref, np.inf)
    c_rec = np.full(n_ref, np.inf)
    s_prec, c_prec = [], []
    for a in range(0, len(gen_struct_fps), chunk):
        ds = cdist(gen_struct_fps[a : a + chunk], ref_struct_fps)
        dc = cdist(gen_comp[a : a + chunk], ref_comp)
        s_prec.append(ds.min(axis=1))
        c_prec.append(dc.min(axis=1))
        np.minimum(s_rec, ds.min(axis=0), out=s_rec)
        np.minimum(c_rec, dc.min(axis=0), out=c_rec)
    empty = np.zeros(0)
    return {
        "struct_recall": s_rec,
        "comp_recall": c_rec,
        "struct_precision": np.concatenate(s_prec) if s_prec else empty,
        "comp_precision": np.concatenate(c_prec) if c_prec else empty,
    }


def coverage_from_distances(dist: dict[str, np.ndarray], *, struct_cutoff: float, comp_cutoff: float,
                            num_gen_crystals: int) -> dict:  # fmt: skip
    """COV-R, COV-P (fractions) and mean nearest-neighbour distances from :func:`nearest_distances`."""
    if num_gen_crystals <= 0:
        raise ValueError("coverage: no generated crystals")
    if len(dist["struct_precision"]) == 0:  # nothing could be fingerprinted: nothing is covered
        nan = float("nan")
        return {"cov_recall": 0.0, "cov_precision": 0.0, "amsd_recall": nan, "amsd_precision": nan,
                "amcd_recall": nan, "amcd_precision": nan}  # fmt: skip
    rec = np.logical_and(dist["struct_recall"] <= struct_cutoff, dist["comp_recall"] <= comp_cutoff)
    prec = np.logical_and(dist["struct_precision"] <= struct_cutoff, dist["comp_precision"] <= comp_cutoff)
    return {
        "cov_recall": float(np.mean(rec)),
        "cov_precision": float(np.sum(prec) / num_gen_crystals),
        "amsd_recall": float(np.mean(dist["struct_recall"])),
        "amsd_precision": float(np.mean(dist["struct_precision"])),
        "amcd_recall": float(np.mean(dist["comp_recall"])),
        "amcd_precision": float(np.mean(dist["comp_precision"])),
    }


def compute_coverage(
    gen_struct_fps: np.ndarray,
    gen_comp_fps: np.ndarray,
    ref_struct_fps: np.ndarray,
    ref_comp_fps: np.ndarray,
    *,
    struct_cutoff: float,
    comp_cutoff: float,
    num_gen_crystals: int | None = None,
) -> dict:
    """CDVAE's ``compute_cov`` on fingerprints that exist (rows of generated crystals without fingerprints
    already removed; ``num_gen_crystals`` = the number of generated crystals before that removal).

    Returns fractions in [0, 1]: cov_recall, cov_precision, and the mean nearest-neighbour distances
    amsd_recall/amsd_precision (structure) and amcd_recall/amcd_precision (composition).
    """
    if len(ref_struct_fps) == 0:
        raise ValueError("compute_coverage: no reference crystal has fingerprints")
    n_gen = len(gen_struct_fps) if num_gen_crystals is None else int(num_gen_crystals)
    dist = nearest_distances(gen_struct_fps, gen_comp_fps, ref_struct_fps, ref_comp_fps)
    return coverage_from_distances(
        dist, struct_cutoff=struct_cutoff, comp_cutoff=comp_cutoff, num_gen_crystals=n_gen
    )


def sample_valid_indices(n_valid: int, n_samples: int, seed: int) -> np.ndarray:
    """Indices of ``n_samples`` of ``n_valid`` valid crystals, without replacement (CDVAE's draw).

    When fewer than ``n_samples`` crystals are valid, all of them are used (CDVAE raises instead).
    """
    if n_valid <= n_samples:
        return np.arange(n_valid)
    return np.random.RandomState(seed).choice(n_valid, n_samples, replace=False)


def emd_metrics(
    gen_density: np.ndarray,
    gen_n_elements: np.ndarray,
    ref_density: np.ndarray,
    ref_n_elements: np.ndarray,
    *,
    n_samples: int = 1000,
    seeds: Sequence[int] = (0, 1, 2),
) -> dict:
    """EMD of density and of the number of distinct elements: per seed, mean and (population) std.

    ``gen_*`` are the properties of the VALID generated crystals, in input order; the reference arrays
    hold every reference crystal.
    """
    gen_density = np.asarray(gen_density, dtype=float)
    gen_n_elements = np.asarray(gen_n_elements, dtype=float)
    ref_density = np.asarray(ref_density, dtype=float)
    ref_n_elements = np.asarray(ref_n_elements, dtype=float)
    if len(seeds) == 0:
        raise ValueError("emd_metrics: give at least one seed")
    n_valid = len(gen_density)
    out = {"n_valid": n_valid, "n_samples_requested": int(n_samples), "n_samples_used": min(n_valid, int(n_samples)),
           "seeds": [int(s) for s in seeds]}  # fmt: skip
    if n_valid == 0:
        for k in ("density", "n_elements"):
            out[k] = {"mean": None, "std": None, "per_seed": [None] * len(seeds)}
        return out
    per = {"density": [], "n_elements": []}
    for seed in seeds:
        idx = sample_valid_indices(n_valid, n_samples, int(seed))
        per["density"].append(float(wasserstein_distance(gen_density[idx], ref_density)))
        per["n_elements"].append(float(wasserstein_distance(gen_n_elements[idx], ref_n_elements)))
    for k, v in per.items():
        out[k] = {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_seed": v}
    return out
