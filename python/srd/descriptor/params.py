"""Descriptor parameters (SPEC section 1)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["EADParams"]


def _default_mus() -> tuple[float, ...]:
    # 0, 0.2, ..., 9.8 Angstrom: 50 centres (what gives the paper's 704-long R; see SPEC section 1).
    return tuple(round(0.2 * k, 10) for k in range(50))


@dataclass(frozen=True)
class EADParams:
    """Grid of the Embedded Atom Density descriptor.

    Attributes:
        etas: Gaussian widths eta in 1/Angstrom^2 (default 1, 20, 90).
        mus: Gaussian centres mu in Angstrom, strictly ascending (default 0, 0.2, ..., 9.8).
        cutoff: cutoff radius r_c in Angstrom (default 20); f_c(r) = 0.5 (cos(pi r / r_c) + 1).
        lmax: 0 (rho0^2 only) or 1 (also the L=1 feature). Features per atom: (lmax+1)*len(etas)*len(mus).
        l1: "cumulative" (L=1 = (rho0^2 + |rho_vec|^2)/r_c^2, the authors' code; default) or
            "separate" (|rho_vec|^2/r_c^2, the paper's eq. 2).
        skip_exponent: Gaussian terms exp(-eta (r-mu)^2) with eta (r-mu)^2 > skip_exponent are skipped
            (default 40, i.e. terms below exp(-40) of the peak). ``math.inf`` computes every term (dense).
            The default stays within float32 rounding of the dense sum (tests/test_ead_accuracy.py).
    """

    etas: tuple[float, ...] = (1.0, 20.0, 90.0)
    mus: tuple[float, ...] = field(default_factory=_default_mus)
    cutoff: float = 20.0
    lmax: int = 1
    l1: str = "cumulative"
    skip_exponent: float = 40.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "etas", tuple(float(e) for e in self.etas))
        object.__setattr__(self, "mus", tuple(float(m) for m in self.mus))
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(f"EADParams.{p}" for p in problems))

    def problems(self) -> list[str]:
        """Every problem of the grid (field, expected, found), as TrainConfig and ReconstructConfig report
        theirs: all at once, not the first only."""
        out = []
        if not self.etas or any(not math.isfinite(e) or e <= 0 for e in self.etas):
            out.append(f"etas must be a non-empty list of finite numbers > 0, got {list(self.etas)}")
        if not self.mus or any(not math.isfinite(m) for m in self.mus):
            out.append(f"mus must be a non-empty list of finite numbers, got {list(self.mus)}")
        elif any(b <= a for a, b in zip(self.mus, self.mus[1:])):
            out.append("mus must be strictly ascending")
        if not math.isfinite(self.cutoff) or self.cutoff <= 0:
            out.append(f"cutoff must be a finite number > 0 (Angstrom), got {self.cutoff}")
        if self.lmax not in (0, 1):
            out.append(f"lmax must be 0 or 1, got {self.lmax}")
        if self.l1 not in ("cumulative", "separate"):
            out.append(f"l1 must be 'cumulative' or 'separate', got {self.l1!r}")
        if not self.skip_exponent > 0:
            out.append(f"skip_exponent must be > 0 (or math.inf), got {self.skip_exponent}")
        return out

    @property
    def n_channels(self) -> int:
        """Number of (eta, mu) channels."""
        return len(self.etas) * len(self.mus)

    @property
    def n_features(self) -> int:
        """Features per atom: (lmax + 1) * len(etas) * len(mus) (300 for the default grid)."""
        return (self.lmax + 1) * self.n_channels

    @property
    def reach(self) -> float:
        """Distance (Angstrom) beyond which a pair contributes nothing: min(cutoff, max mu + the skip
        half-width of the narrowest Gaussian), as the kernels compute it (EADGrid::reach)."""
        if not math.isfinite(self.skip_exponent):
            return self.cutoff
        return min(self.cutoff, max(self.mus) + math.sqrt(self.skip_exponent / min(self.etas)))

    def op_args(self) -> tuple:
        """The grid as the trailing arguments of ``torch.ops.srd.ead_forward`` / ``ead_backward``:
        (etas, mus, cutoff, lmax, cumulative, skip_exponent)."""
        return (
            list(self.etas),
            list(self.mus),
            float(self.cutoff),
            int(self.lmax),
            self.l1 == "cumulative",
            float(self.skip_exponent),
        )

    def dense(self) -> EADParams:
        """The same grid with every Gaussian term computed (no skipping)."""
        return EADParams(self.etas, self.mus, self.cutoff, self.lmax, self.l1, math.inf)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["etas"], d["mus"] = list(self.etas), list(self.mus)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EADParams:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})
