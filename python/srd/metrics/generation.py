"""Generation metrics of the community protocol (CDVAE's ``GenEval``), end to end.

All validity and coverage numbers are percentages; EMDs are in g/cm^3 (density) and elements.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from ..structures import read_raw_items
from .coverage import coverage_from_distances, emd_metrics, nearest_distances
from .crystals import CrystalSet, evaluate_file, evaluate_structures
from .published import COV_THRESHOLDS, DATA_CEILING, PAPER_TABLE2
from .validity import smact_version

__all__ = [
    "GenerationResult",
    "generation_metrics",
    "evaluate_generation",
    "resolve_input",
    "DEVIATIONS_FROM_CDVAE",
]

#: Where srd's numbers can differ from what CDVAE's script would print, and why (written to metrics.json).
DEVIATIONS_FROM_CDVAE = [
    "EMDs use all valid samples when fewer than n_samples are valid (CDVAE raises an exception).",
    "EMDs are averaged over several seeds (np.random.RandomState(seed).choice); CDVAE draws once from the "
    "unseeded global NumPy generator.",
    "A crystal that cannot be read or built (unreadable CIF; in a CDVAE-format .pt: non-finite frac_coords, "
    "lengths or angles, non-positive lengths, angles of no positive-volume cell) counts as a sample that is "
    "invalid in composition and structure and has no fingerprint, so it is left out of the coverage distances "
    "but stays in the COV-P denominator (CDVAE would still test its composition, and counts a crystal with "
    "NaN coordinates as structurally valid).",
    "A CDVAE-format .pt that is not internally consistent (sum(num_atoms) != len(atom_types), fewer lengths or "
    "angles than crystals, atom types that are not atomic numbers 1..118, ...) is refused with an error "
    "(CDVAE asserts on some of these and silently misreads others).",
    "Reference crystals without fingerprints are left out of coverage and listed (CDVAE would crash).",
    "Crystals so dense that CrystalNN's 7 A search sphere would hold more than max_sphere_sites atoms are not "
    "fingerprinted (listed as failures; only crystals with overlapping atoms can be that dense).",
    "CrystalNN order parameters are computed by srd's vectorised implementation of pymatgen's formulas; they "
    "equal matminer's to floating-point rounding (use --exact-fingerprints for matminer itself).",
]


#: How many unreadable generated crystals metrics.json names in validity.unreadable_examples (all of them
#: are listed under fingerprint_failures).
N_UNREADABLE_EXAMPLES = 5


@dataclass
class GenerationResult:
    """The metrics dict plus the per-crystal results of both sides (for reports and plots)."""

    metrics: dict
    generated: CrystalSet
    reference: CrystalSet


def _pct(x) -> float:
    return 100.0 * float(x)


def generation_metrics(
    gen: CrystalSet,
    ref: CrystalSet,
    *,
    dataset: str | None,
    n_samples: int = 1000,
    seeds: Sequence[int] = (0, 1, 2),
    cov_thresholds: dict[str, tuple[float, float]] | None = None,
) -> dict:
    """Validity, EMDs and coverage of generated crystals ``gen`` against reference crystals ``ref``.

    Args:
        dataset: perov_5, carbon_24 or mp_20 (selects the COV thresholds); may be None when
            ``cov_thresholds`` is given.
        cov_thresholds: {label: (structure cutoff, composition cutoff)}; default: CDVAE's ("cdvae") and
            the SyMat ones the paper used ("symat") for ``dataset``.
    """
    if len(gen) == 0:
        raise ValueError("generation_metrics: no generated crystals")
    if cov_thresholds is None:
        if dataset not in COV_THRESHOLDS["cdvae"]:
            raise ValueError(
                f"unknown dataset {dataset!r}: COV thresholds exist for {sorted(COV_THRESHOLDS['cdvae'])}; "
                "pass --dataset or explicit --cov-cutoffs"
            )
        cov_thresholds = {name: table[dataset] for name, table in COV_THRESHOLDS.items()}
    n = len(gen)
    valid = gen.valid
    unreadable = np.flatnonzero(~gen.readable)
    emd = emd_metrics(
        gen.density[valid], gen.n_elements[valid],
        ref.density[ref.readable], ref.n_elements[ref.readable],
        n_samples=n_samples, seeds=seeds,
    )  # fmt: skip
    coverage = {}
    ref_ok = ref.fp_ok
    if not ref_ok.any():
        raise ValueError("no reference crystal could be fingerprinted; coverage is undefined")
    dist = nearest_distances(
        gen.struct_fp[gen.fp_ok], gen.comp_fp[gen.fp_ok], ref.struct_fp[ref_ok], ref.comp_fp[ref_ok]
    )
    for name, (sc, cc) in cov_thresholds.items():
        cov = coverage_from_distances(dist, struct_cutoff=sc, comp_cutoff=cc, num_gen_crystals=n)
        coverage[name] = {
            "struct_cutoff": sc,
            "comp_cutoff": cc,
            "cov_recall": _pct(cov["cov_recall"]),
            "cov_precision": _pct(cov["cov_precision"]),
            **{k: cov[k] for k in ("amsd_recall", "amsd_precision", "amcd_recall", "amcd_precision")},
        }
    head = coverage.get("cdvae") or next(iter(coverage.values()))
    table = {
        "comp_valid": _pct(gen.comp_valid.mean()),
        "struct_valid": _pct(gen.struct_valid.mean()),
        "emd_n_elements": emd["n_elements"]["mean"],
        "emd_density": emd["density"]["mean"],
        "cov_recall": head["cov_recall"],
        "cov_precision": head["cov_precision"],
    }
    if "symat" in coverage and "cdvae" in coverage:
        table["cov_recall_symat"] = coverage["symat"]["cov_recall"]
        table["cov_precision_symat"] = coverage["symat"]["cov_precision"]
    return {
        "dataset": dataset,
        "units": "validity and coverage in percent; EMD density in g/cm^3, EMD # elements in elements",
        "table": table,
        "validity": {
            "comp_valid": table["comp_valid"],
            "struct_valid": table["struct_valid"],
            "valid": _pct(valid.mean()),
            "n_generated": n,
            "n_readable": int(gen.readable.sum()),
            "n_unreadable": len(unreadable),
            "unreadable_examples": [
                {"id": gen.ids[i], "error": gen.errors[i]} for i in unreadable[:N_UNREADABLE_EXAMPLES]
            ],
            "n_fingerprinted": int(gen.fp_ok.sum()),
            "n_valid": int(valid.sum()),
        },
        "emd": emd,
        "coverage": coverage,
        "n_reference": len(ref),
        "n_reference_readable": int(ref.readable.sum()),
        "n_reference_fingerprinted": int(ref_ok.sum()),
        "paper_table2": PAPER_TABLE2.get(dataset or ""),
        "data_ceiling": DATA_CEILING.get(dataset or ""),
        "smact_version": smact_version(),
    }


def evaluate_generation(
    generated: str | os.PathLike | Sequence[Structure | None],
    reference: str | os.PathLike,
    *,
    dataset: str | None = None,
    n_samples: int = 1000,
    seeds: Sequence[int] = (0, 1, 2),
    workers: int | None = None,
    use_cache: bool = True,
    exact_fingerprints: bool = False,
    max_sphere_sites: int = 20000,
    cov_thresholds: dict[str, tuple[float, float]] | None = None,
    show_progress: bool = True,
) -> GenerationResult:
    """Score generated crystals (a path, or in-memory structures) against a reference CSV(.gz).

    The reference's per-crystal results (fingerprints included) are cached on disk; see
    :func:`srd.metrics.crystals.evaluate_file`.
    """
    from ..representation import dataset_from_path

    workers = workers if workers is not None else (os.cpu_count() or 1)
    dataset = dataset or dataset_from_path(reference)
    common = {
        "workers": workers,
        "exact": exact_fingerprints,
        "max_sphere_sites": max_sphere_sites,
        "show_progress": show_progress,
    }
    if isinstance(generated, str | os.PathLike):
        # Read (and so validate) the generated crystals before the reference is evaluated: a malformed
        # input (e.g. an inconsistent CDVAE-format .pt) is refused before anything is computed.
        gen_path = resolve_input(generated)
        gen_items = read_raw_items(gen_path)
        if not gen_items:
            raise ValueError(f"{gen_path}: no crystals found")
        ref = evaluate_file(reference, reference=True, use_cache=use_cache, **common)
        gen = evaluate_file(gen_path, reference=False, use_cache=False, items=gen_items, **common)
    else:
        ref = evaluate_file(reference, reference=True, use_cache=use_cache, **common)
        gen = evaluate_structures(list(generated), reference=False, desc="generated", **common)
    metrics = generation_metrics(
        gen, ref, dataset=dataset, n_samples=n_samples, seeds=seeds, cov_thresholds=cov_thresholds
    )
    metrics["fingerprint_failures"] = {"generated": gen.failures(), "reference": ref.failures()}
    metrics["reference_cache"] = {"path": ref.source.get("cache"), "hit": bool(ref.source.get("cache_hit"))}
    metrics["deviations_from_cdvae"] = list(DEVIATIONS_FROM_CDVAE)
    metrics["settings"] = {
        "n_samples": int(n_samples),
        "seeds": [int(s) for s in seeds],
        "workers": workers,
        "exact_fingerprints": exact_fingerprints,
        "max_sphere_sites": max_sphere_sites,
        "reference_sha256": ref.source.get("sha256"),
        "fingerprints": ref.source.get("settings", {}).get("fingerprints"),
    }
    return GenerationResult(metrics, gen, ref)


def resolve_input(path: str | os.PathLike) -> Path:
    """The crystals of an input path: a folder holding a ``cifs/`` subfolder means that subfolder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir() and (path / "cifs").is_dir():
        return path / "cifs"
    return path
