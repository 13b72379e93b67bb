"""Min-max scaling of the continuous block of R, fitted on a training split."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .layout import Layout


# ------------------------------------------------------------------------------------------------
# Scaling
# ------------------------------------------------------------------------------------------------
@dataclass
class ScalingStats:
    """Min-max statistics of the continuous block, fitted on a training split.

    scale(x) = (x - lo) / span with span = hi - lo, or 1 where a column is (nearly) constant: the cubic angles
    of Perov-5, and EAD columns whose values over the whole split are below 1e-8 (in units of EAD / 1e6;
    e.g. eta = 90 at mu = 0, ~1e-36), which a min-max scaling would blow up into noise of order 100 on
    other splits. Either way the scaling stays exactly invertible.
    """

    #: columns whose spread is below this are treated as constant
    MIN_SPAN = 1e-8

    lo: torch.Tensor  # [n_cont] float64
    hi: torch.Tensor  # [n_cont] float64
    layout: Layout = field(default_factory=Layout)

    @property
    def span(self) -> torch.Tensor:
        span = self.hi - self.lo
        return torch.where(
            span > torch.clamp(1e-12 * self.hi.abs(), min=self.MIN_SPAN), span, torch.ones_like(span)
        )

    @classmethod
    def fit(cls, raw: torch.Tensor, layout: Layout) -> ScalingStats:
        if raw.dim() != 2 or raw.shape[1] != layout.dim or raw.shape[0] == 0:
            raise ValueError(
                f"ScalingStats.fit: expected raw R of shape [M > 0, {layout.dim}], got {list(raw.shape)}"
            )
        cont = raw[:, layout.continuous].double()
        return cls(cont.min(dim=0).values, cont.max(dim=0).values, layout)

    def scale(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw R -> scaled R (float64)."""
        out = raw.double().clone()
        sl = self.layout.continuous
        out[:, sl] = (out[:, sl] - self.lo.to(out.device)) / self.span.to(out.device)
        return out

    def unscale(self, scaled: torch.Tensor) -> torch.Tensor:
        """Scaled R -> raw R (float64); the exact inverse of :meth:`scale`."""
        out = scaled.double().clone()
        sl = self.layout.continuous
        out[:, sl] = out[:, sl] * self.span.to(out.device) + self.lo.to(out.device)
        return out

    def to_dict(self) -> dict:
        return {"lo": self.lo.clone(), "hi": self.hi.clone(), "n_features": self.layout.n_features}

    @classmethod
    def from_dict(cls, d: dict) -> ScalingStats:
        try:
            lo, hi = (
                torch.as_tensor(d["lo"], dtype=torch.float64),
                torch.as_tensor(d["hi"], dtype=torch.float64),
            )
            layout = Layout(int(d["n_features"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed scaling statistics (need lo, hi, n_features): {err}") from None
        n = layout.continuous.stop
        if lo.shape != (n,) or hi.shape != (n,):
            raise ValueError(
                f"malformed scaling statistics: lo/hi must have {n} values, got {list(lo.shape)}, {list(hi.shape)}"
            )
        return cls(lo, hi, layout)
