"""Pretrained models that ship inside the package (issue 15): ``srd-sample --pretrained NAME``.

Each ``NAME.pt`` is an srd-train checkpoint reduced to what sampling needs: the EMA weights (stored as
float16, loaded into float32), the composition model, the scaling statistics and descriptor parameters,
the training config, and ``pretrained`` (how it was trained: command, data, steps, minutes, machine).
``scripts/export_pretrained.py RUN NAME`` writes one from a training run.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PRETRAINED", "pretrained_path", "resolve_data_path"]

_HERE = Path(__file__).resolve().parent

#: name -> what it was trained on (the file's ``pretrained`` entry has the details).
PRETRAINED = {
    "perov_5": "Perov-5, the complete train split (11,356 crystals)",
    "mp_20": "MP-20, train_PARTIAL + val (11,620 crystals; the full train split is not here)",
    "carbon_24": "Carbon-24, the val split (2,032 crystals; no train split is here)",
}


def pretrained_path(name: str) -> Path:
    """The packaged checkpoint of ``name`` (ValueError listing the names when unknown or not shipped)."""
    if name not in PRETRAINED:
        raise ValueError(f"--pretrained {name!r}: unknown; the packaged models are {', '.join(PRETRAINED)}")
    path = _HERE / f"{name}.pt"
    if not path.is_file():
        raise ValueError(f"--pretrained {name!r}: {path} is missing from this installation")
    return path


def resolve_data_path(path: str) -> Path | None:
    """A repository-relative data path (e.g. data/perov_5/train.csv.gz) as it is here: relative to the
    working directory, else to the source tree srd was installed from; None when neither has it."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_absolute():
        repo = _HERE.parents[2] / p  # python/srd/pretrained -> the repository root (editable installs)
        if repo.is_file():
            return repo
    return None
