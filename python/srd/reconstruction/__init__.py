"""Stage 3, reconstruction: representation vectors back into crystals (SPEC section 3, Algorithm 2).

``config`` holds the settings and the named budgets (``presets.toml``); ``algorithm`` the batched basin
hopping; ``job`` the resumable, sharded output folder that srd-reconstruct and srd-sample write.
"""

from __future__ import annotations

from .algorithm import ReconstructResult, crystal_seed, reconstruct
from .config import BUDGETS, PRESETS, PRESETS_FILE, Preset, ReconstructConfig, get_preset, preset
from .job import FIELDS, SAMPLE_METHOD, ReconItem, reconstruct_input, run_job, sample_rows, summary_line

__all__ = [
    "BUDGETS",
    "FIELDS",
    "PRESETS",
    "PRESETS_FILE",
    "SAMPLE_METHOD",
    "Preset",
    "ReconItem",
    "ReconstructConfig",
    "ReconstructResult",
    "crystal_seed",
    "get_preset",
    "preset",
    "reconstruct",
    "reconstruct_input",
    "run_job",
    "sample_rows",
    "summary_line",
]
