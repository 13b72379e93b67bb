"""Crystal-generation metrics of the community protocol (CDVAE's ``scripts/compute_metrics.py``).

* :func:`match_structures`: reconstruction match rate and RMSE (StructureMatcher stol=0.5, angle_tol=10,
  ltol=0.3);
* :func:`evaluate_generation`: composition validity (SMACT), structure validity, EMD of density and of the
  number of elements, COV-R / COV-P from CrystalNN and Magpie fingerprints, with CDVAE's and SyMat's
  thresholds; :func:`write_generation_report` writes metrics.json, metrics.md and figures.

The plotting module (``srd.metrics.report``) is imported lazily so that importing srd.metrics does not
import matplotlib.
"""

from __future__ import annotations

from .comp_scaler import COMP_SCALER_MEANS, COMP_SCALER_STDS, comp_scaler_transform
from .coverage import compute_coverage, emd_metrics, sample_valid_indices
from .crystals import CrystalSet, evaluate_file, evaluate_one, evaluate_structures, metrics_cache_dir
from .fingerprints import (
    FingerprintError,
    StructureFingerprinter,
    composition_fingerprint,
    fingerprint_settings,
)
from .generation import (
    DEVIATIONS_FROM_CDVAE,
    GenerationResult,
    evaluate_generation,
    generation_metrics,
    resolve_input,
)
from .published import COV_THRESHOLDS, DATA_CEILING, PAPER_TABLE2
from .recon import MATCHER_SETTINGS, evaluate_reconstruction, match_structures
from .validity import (
    composition_validity,
    reduced_composition,
    smact_validity,
    smact_version,
    structure_validity,
)

__all__ = [
    "COMP_SCALER_MEANS",
    "COMP_SCALER_STDS",
    "COV_THRESHOLDS",
    "CrystalSet",
    "DATA_CEILING",
    "DEVIATIONS_FROM_CDVAE",
    "FingerprintError",
    "GenerationResult",
    "MATCHER_SETTINGS",
    "PAPER_TABLE2",
    "StructureFingerprinter",
    "comp_scaler_transform",
    "composition_fingerprint",
    "composition_validity",
    "compute_coverage",
    "emd_metrics",
    "evaluate_file",
    "evaluate_generation",
    "evaluate_one",
    "evaluate_reconstruction",
    "evaluate_structures",
    "fingerprint_settings",
    "generation_metrics",
    "match_structures",
    "metrics_cache_dir",
    "reduced_composition",
    "resolve_input",
    "sample_valid_indices",
    "smact_validity",
    "smact_version",
    "structure_validity",
    "write_generation_report",
]


def __getattr__(name):
    if name == "write_generation_report":
        from .report import write_generation_report

        return write_generation_report
    raise AttributeError(f"module 'srd.metrics' has no attribute {name!r}")
