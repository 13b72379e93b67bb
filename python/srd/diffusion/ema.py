"""Exponential moving average of model weights (an option of SPEC section 4)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Shadow copy of a model's floating-point parameters and buffers.

    After each optimiser step, shadow <- d * shadow + (1 - d) * weights with
    d = min(decay, (1 + n) / (10 + n)) (n = number of updates so far): the warm-up keeps an early shadow
    from being dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.9995) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach(), 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the shadow weights into ``model`` (in place)."""
        state = model.state_dict()
        for k, v in self.shadow.items():
            state[k].copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, d: dict) -> None:
        missing = set(self.shadow) - set(d["shadow"])
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:5]}")
        self.decay = float(d["decay"])
        self.num_updates = int(d["num_updates"])
        for k in self.shadow:
            self.shadow[k].copy_(d["shadow"][k])
