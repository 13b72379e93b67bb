"""Denoisers that treat R's blocks as what they are, and the model factory.

The 1-D U-Net (:mod:`.unet1d`) convolves across R as if it were a signal, although neighbouring entries
can be unrelated quantities (the last EAD value next to d_min next to the lattice lengths). The models
here do not assume any locality:

* :class:`MLPDenoiser`: a residual MLP over the whole vector (every entry sees every other from layer 1),
  with the time step entering every block as a FiLM scale/shift, plus a time-dependent per-entry gain on
  the input (a skip path, like the U-Net's full-resolution skip).
* :class:`BlockTransformerDenoiser`: a transformer over *block tokens*: each EAD pooling block is split into
  one token per (L, eta) row of the mu grid (50 values by default: 12 tokens), and d_min, the lattice, the
  composition and the size are one token each (16 tokens for the default R). Every token has its own input
  projection and output head; a learned token embedding says which block a token is; the time step
  modulates every layer (adaLN-Zero, as in DiT); the same time-dependent input gain as the MLP's is added.

:func:`build_denoiser` makes any of the three from a plain-typed spec (saved in checkpoints).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .unet1d import SinusoidalTimeEmbedding, UNet1D

__all__ = ["MLPDenoiser", "BlockTransformerDenoiser", "block_tokens", "build_denoiser", "MODELS"]

MODELS = ("unet1d", "mlp", "transformer")


def _time_mlp(embed_dim: int, time_dim: int) -> nn.Module:
    return nn.Sequential(
        SinusoidalTimeEmbedding(embed_dim),
        nn.Linear(embed_dim, time_dim),
        nn.GELU(),
        nn.Linear(time_dim, time_dim),
    )


# ------------------------------------------------------------------------------------------------
# Residual MLP
# ------------------------------------------------------------------------------------------------
class _MLPBlock(nn.Module):
    def __init__(self, hidden: int, time_dim: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = nn.Linear(time_dim, 2 * hidden)
        self.fc1 = nn.Linear(hidden, mult * hidden)
        self.fc2 = nn.Linear(mult * hidden, hidden)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(temb).chunk(2, dim=-1)
        h = self.norm(x) * (1 + scale) + shift
        return x + self.fc2(self.drop(F.silu(self.fc1(h))))


class MLPDenoiser(nn.Module):
    """Residual MLP epsilon-predictor.

    Args:
        length: L, the length of R.
        hidden: width of the residual stream.
        depth: number of residual blocks (LayerNorm -> FiLM(time) -> Linear(mult * hidden) -> SiLU -> Linear).
            The output adds g(t) * x (a per-entry gain computed from the time embedding, initialised to 1).
        mult: expansion of the inner layer of each block.
        time_dim: width of the time-embedding MLP.
        dropout: dropout inside the blocks.

    forward(x [B, L] float32, t [B] int64) -> predicted noise [B, L] float32.
    """

    def __init__(
        self,
        length: int,
        *,
        hidden: int = 512,
        depth: int = 4,
        mult: int = 2,
        time_dim: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if min(length, hidden, depth, mult, time_dim) < 1:
            raise ValueError(
                f"MLPDenoiser: sizes must be >= 1, got length={length} hidden={hidden} depth={depth}"
            )
        self.length = length
        self.time_mlp = _time_mlp(min(time_dim, 128) // 2 * 2, time_dim)
        self.inp = nn.Linear(length, hidden)
        self.blocks = nn.ModuleList(_MLPBlock(hidden, time_dim, mult, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, length)
        # A time-dependent per-entry gain on the input: the noise is (mostly) x_t itself at high noise
        # levels, and a hidden width below L could not pass x_t through the residual stream.
        self.skip = nn.Linear(time_dim, length)
        nn.init.zeros_(self.skip.weight)
        nn.init.ones_(self.skip.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.length:
            raise ValueError(f"MLPDenoiser: expected x of shape [B, {self.length}], got {list(x.shape)}")
        temb = self.time_mlp(t)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(self.out_norm(h)) + self.skip(temb) * x


# ------------------------------------------------------------------------------------------------
# Transformer over block tokens
# ------------------------------------------------------------------------------------------------
def block_tokens(blocks: Mapping[str, Sequence[int]], *, ead_row: int | None = 50) -> list[tuple[int, int]]:
    """Split R into token segments [start, stop): EAD blocks into rows of ``ead_row``, the rest whole.

    Args:
        blocks: named [start, stop) ranges (``Layout.blocks()``), covering 0..L without gaps.
        ead_row: values per EAD token (the number of mu centres, 50 by default); None or 0: one token per
            EAD block.

    Returns:
        The segments in order of position.
    """
    segs: list[tuple[int, int]] = []
    for name, (start, stop) in sorted(blocks.items(), key=lambda kv: kv[1][0]):
        start, stop = int(start), int(stop)
        if name.startswith("ead") and ead_row:
            if (stop - start) % ead_row:
                raise ValueError(
                    f"block_tokens: block {name} ({stop - start} values) is not a multiple of ead_row={ead_row}"
                )
            segs += [(s, s + ead_row) for s in range(start, stop, ead_row)]
        else:
            segs.append((start, stop))
    pos = 0
    for s, e in segs:
        if s != pos or e <= s:
            raise ValueError(f"block_tokens: blocks must tile 0..L without gaps or overlaps; got {segs}")
        pos = e
    return segs


class _GroupedLinear(nn.Module):
    """Per-token linear maps between token slots and the model width, batched over tokens of equal size."""

    def __init__(self, segments: Sequence[tuple[int, int]], d_model: int, *, to_tokens: bool) -> None:
        super().__init__()
        self.to_tokens = to_tokens
        self.n_tokens = len(segments)
        self.length = segments[-1][1]
        sizes = sorted({e - s for s, e in segments})
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for k, size in enumerate(sizes):
            members = [i for i, (s, e) in enumerate(segments) if e - s == size]
            idx = torch.tensor(
                [list(range(segments[i][0], segments[i][1])) for i in members], dtype=torch.long
            )
            self.register_buffer(f"idx{k}", idx, persistent=False)  # [g, size] positions in R
            self.register_buffer(f"tok{k}", torch.tensor(members, dtype=torch.long), persistent=False)
            fan_in = size if to_tokens else d_model
            bound = 1 / math.sqrt(fan_in)
            shape = (len(members), size, d_model) if to_tokens else (len(members), d_model, size)
            self.weights.append(nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))
            bshape = (len(members), d_model) if to_tokens else (len(members), size)
            self.biases.append(nn.Parameter(torch.empty(bshape).uniform_(-bound, bound)))
        self.n_groups = len(sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.to_tokens:  # x [B, L] -> [B, n_tokens, d]
            out = x.new_empty(x.shape[0], self.n_tokens, self.weights[0].shape[-1])
            for k in range(self.n_groups):
                idx, tok = getattr(self, f"idx{k}"), getattr(self, f"tok{k}")
                out[:, tok] = torch.einsum("bgs,gsd->bgd", x[:, idx], self.weights[k]) + self.biases[k]
            return out
        out = x.new_empty(x.shape[0], self.length)  # x [B, n_tokens, d] -> [B, L]
        for k in range(self.n_groups):
            idx, tok = getattr(self, f"idx{k}"), getattr(self, f"tok{k}")
            y = torch.einsum("bgd,gds->bgs", x[:, tok], self.weights[k]) + self.biases[k]
            out[:, idx.reshape(-1)] = y.reshape(x.shape[0], -1)
        return out


class _DiTBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, mlp_ratio: float, time_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=False)
        hidden = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_model)
        )
        self.ada = nn.Linear(time_dim, 6 * d_model)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        s1, c1, g1, s2, c2, g2 = self.ada(temb)[:, None, :].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + c1) + s1
        x = x + g1 * self.attn(h, h, h, need_weights=False)[0]
        h = self.norm2(x) * (1 + c2) + s2
        return x + g2 * self.mlp(h)


class BlockTransformerDenoiser(nn.Module):
    """Transformer epsilon-predictor over block tokens of R (see :func:`block_tokens`).

    Args:
        segments: token segments [start, stop) tiling 0..L.
        d_model, depth, heads, mlp_ratio: transformer sizes.
        time_dim: width of the time-embedding MLP (conditions every layer through adaLN-Zero).
        dropout: attention and MLP dropout.

    forward(x [B, L] float32, t [B] int64) -> predicted noise [B, L] float32.
    """

    def __init__(
        self,
        segments: Sequence[Sequence[int]],
        *,
        d_model: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        time_dim: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        segs = [(int(s), int(e)) for s, e in segments]
        if not segs or d_model % heads:
            raise ValueError(
                f"BlockTransformerDenoiser: need segments and d_model % heads == 0 (d_model={d_model}, heads={heads})"
            )
        self.length = segs[-1][1]
        self.embed = _GroupedLinear(segs, d_model, to_tokens=True)
        self.token_emb = nn.Parameter(torch.randn(1, len(segs), d_model) * 0.02)
        self.time_mlp = _time_mlp(min(time_dim, 128) // 2 * 2, time_dim)
        self.blocks = nn.ModuleList(
            _DiTBlock(d_model, heads, mlp_ratio, time_dim, dropout) for _ in range(depth)
        )
        self.final_norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.final_ada = nn.Linear(time_dim, 2 * d_model)
        nn.init.zeros_(self.final_ada.weight)
        nn.init.zeros_(self.final_ada.bias)
        self.head = _GroupedLinear(segs, d_model, to_tokens=False)
        # time-dependent per-entry gain on the input (see MLPDenoiser): passes x_t through at high noise
        self.skip = nn.Linear(time_dim, self.length)
        nn.init.zeros_(self.skip.weight)
        nn.init.ones_(self.skip.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.length:
            raise ValueError(
                f"BlockTransformerDenoiser: expected x of shape [B, {self.length}], got {list(x.shape)}"
            )
        temb = F.silu(self.time_mlp(t))
        h = self.embed(x) + self.token_emb
        for block in self.blocks:
            h = block(h, temb)
        shift, scale = self.final_ada(temb)[:, None, :].chunk(2, dim=-1)
        return self.head(self.final_norm(h) * (1 + scale) + shift) + self.skip(temb) * x


# ------------------------------------------------------------------------------------------------
# Factory
# ------------------------------------------------------------------------------------------------
def build_denoiser(spec: Mapping) -> nn.Module:
    """Build a denoiser from a plain spec ``{"name": "unet1d"|"mlp"|"transformer", "length": L, "kwargs": {...}}``.

    For the transformer, ``kwargs["segments"]`` holds the token segments (see :func:`block_tokens`).
    """
    name = spec.get("name")
    length = int(spec["length"])
    kwargs = dict(spec.get("kwargs", {}))
    if name == "unet1d":
        return UNet1D(length, **kwargs)
    if name == "mlp":
        return MLPDenoiser(length, **kwargs)
    if name == "transformer":
        segments = kwargs.pop("segments")
        if int(segments[-1][1]) != length:
            raise ValueError(
                f"transformer spec: segments end at {segments[-1][1]}, but R has length {length}"
            )
        return BlockTransformerDenoiser(segments, **kwargs)
    raise ValueError(f"unknown denoiser {name!r}; known: {', '.join(MODELS)}")
