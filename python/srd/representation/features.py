"""Feature files: scaled R with its ids, statistics and provenance, checksummed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from ..descriptor import EADParams
from ..utils import atomic_torch_save, run_metadata, safe_torch_load
from .layout import Layout
from .scaling import ScalingStats

#: Bump when the meaning of a feature file changes (part of the cache key).
FEATURE_VERSION = 2


# ------------------------------------------------------------------------------------------------
# Feature files and the featurisation cache
# ------------------------------------------------------------------------------------------------
@dataclass
class Features:
    """A featurised dataset: scaled R, ids, statistics, and everything needed to interpret them."""

    R: torch.Tensor  # [M, dim] float32, scaled
    ids: list[str]
    stats: ScalingStats
    n_max: int
    params: EADParams
    dataset: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: dict = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return self.stats.layout

    def raw(self) -> torch.Tensor:
        return self.stats.unscale(self.R)

    def to_dict(self) -> dict:
        return {
            "format": "srd-features",
            "feature_version": FEATURE_VERSION,
            "R": self.R,
            "ids": list(self.ids),
            "stats": self.stats.to_dict(),
            "n_max": int(self.n_max),
            "params": json.dumps(self.params.to_dict()),
            "dataset": self.dataset or "",
            "layout": {k: list(v) for k, v in self.layout.blocks().items()},
            "skipped": [[a, b] for a, b in self.skipped],
            "source": json.dumps(self.source),
            "meta": json.dumps(run_metadata()),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the feature file, with a checksum of its contents (checked by :meth:`load`)."""
        from ..utils import with_checksum

        atomic_torch_save(with_checksum(self.to_dict()), path)

    def check_finite(self, where: str = "features") -> None:
        """Raise ValueError naming the rows (index and id) and blocks of R that hold NaN or inf.

        Also refuses non-finite scaling statistics. A model trained on such values learns NaN.
        """
        blocks = self.layout.blocks()

        def block_names(cols: torch.Tensor) -> str:
            names = [n for n, (a, b) in blocks.items() if bool(((cols >= a) & (cols < b)).any())]
            return ", ".join(names) if names else "?"

        def kinds(vals: torch.Tensor) -> str:
            out = []
            if bool(torch.isnan(vals).any()):
                out.append("NaN")
            if bool(torch.isinf(vals).any()):
                out.append("inf")
            return "/".join(out)

        R = self.R
        bad = ~torch.isfinite(R)
        if bool(bad.any()):
            rows = torch.nonzero(bad.any(dim=1)).flatten()
            first = []
            for r in rows[:5].tolist():
                cols = torch.nonzero(bad[r]).flatten()
                rid = self.ids[r] if r < len(self.ids) else "?"
                first.append(
                    f"row {r} (id {rid!r}): {kinds(R[r, cols])} in block {block_names(cols)} "
                    f"(column{'s' if len(cols) > 1 else ''} {', '.join(map(str, cols[:4].tolist()))}"
                    f"{', ...' if len(cols) > 4 else ''})"
                )
            more = f"; ... and {len(rows) - 5} more" if len(rows) > 5 else ""
            raise ValueError(
                f"{where}: R holds non-finite values (NaN or inf) in {len(rows)} of {R.shape[0]} rows: "
                f"{'; '.join(first)}{more}. Drop these crystals or featurise again"
            )
        for name in ("lo", "hi"):
            v = getattr(self.stats, name)
            bad = ~torch.isfinite(v)
            if bool(bad.any()):
                cols = torch.nonzero(bad).flatten()
                raise ValueError(
                    f"{where}: the scaling statistics ({name}) hold non-finite values in block "
                    f"{block_names(cols)} (column{'s' if len(cols) > 1 else ''} "
                    f"{', '.join(map(str, cols[:4].tolist()))}{', ...' if len(cols) > 4 else ''}); "
                    "they were fitted on non-finite features. Featurise again"
                )

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "features") -> Features:
        from ..utils import verify_checksum

        if not isinstance(d, dict) or d.get("format") != "srd-features":
            raise ValueError(f"{where}: not an srd feature file (written by srd-featurize)")
        verify_checksum(d, where)
        try:
            params = EADParams.from_dict(json.loads(d["params"]))
            f = cls(
                R=torch.as_tensor(d["R"], dtype=torch.float32),
                ids=[str(x) for x in d["ids"]],
                stats=ScalingStats.from_dict(d["stats"]),
                n_max=int(d["n_max"]),
                params=params,
                dataset=d.get("dataset") or None,
                skipped=[(str(a), str(b)) for a, b in d.get("skipped", [])],
                source=json.loads(d.get("source", "{}")),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: malformed srd feature file ({err})") from None
        if f.R.dim() != 2 or f.R.shape[1] != f.layout.dim or f.R.shape[0] != len(f.ids):
            raise ValueError(
                f"{where}: R has shape {list(f.R.shape)} but {len(f.ids)} ids and dim {f.layout.dim}"
            )
        f.check_finite(where)
        return f

    @classmethod
    def load(cls, path: str | os.PathLike) -> Features:
        return cls.from_dict(safe_torch_load(path, what="feature file"), where=str(path))
