"""The 1-D U-Net denoiser of the paper (SPEC section 4).

The architecture is the one of lucidrains' ``Unet1D`` (denoising-diffusion-pytorch), which StructRepDiff
used: R is treated as a signal of 1 channel x L values.

    init conv (k = 7) -> dim channels
    down stages (dim * dim_mults): 2 ResNet blocks (weight-standardised conv + GroupNorm + SiLU, time
        scale/shift), residual pre-norm linear attention, stride-2 downsampling (no downsampling after the
        last stage)
    middle: ResNet block, residual pre-norm full attention, ResNet block
    up stages mirror the down stages with skip connections (concatenation)
    final ResNet block on [x, initial features] -> 1x1 conv to 1 channel

The time step goes through a sinusoidal embedding of width ``dim`` and an MLP of width 4 * dim.
A length that is not a multiple of 2^(stages - 1) (704 is, 705 is not) is zero-padded on the right and
cropped back after the network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet1D", "SinusoidalTimeEmbedding"]


class SinusoidalTimeEmbedding(nn.Module):
    """t [B] (any real dtype) -> [B, dim] float32: [sin(t w_k), cos(t w_k)], w_k = 10000^(-k / (dim/2 - 1))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalTimeEmbedding: dim must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -scale)
        arg = t.float()[:, None] * freqs[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class WSConv1d(nn.Conv1d):
    """Conv1d with weight standardisation (Qiao et al. 2019): each output filter has zero mean, unit variance."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        w = self.weight
        mean = w.mean(dim=(1, 2), keepdim=True)
        var = w.var(dim=(1, 2), keepdim=True, unbiased=False)
        w = (w - mean) * var.clamp(min=eps).rsqrt()
        return F.conv1d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ChannelRMSNorm(nn.Module):
    """RMS normalisation over channels of [B, C, L] with a learned per-channel gain."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.gain * (x.shape[1] ** 0.5)


class _ConvBlock(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, groups: int) -> None:
        super().__init__()
        self.conv = WSConv1d(dim_in, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)

    def forward(
        self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResnetBlock(nn.Module):
    """Two conv blocks; the time embedding scales and shifts the first one; 1x1 conv on the residual path."""

    def __init__(self, dim_in: int, dim_out: int, *, time_dim: int, groups: int = 8) -> None:
        super().__init__()
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * dim_out))
        self.block1 = _ConvBlock(dim_in, dim_out, groups)
        self.block2 = _ConvBlock(dim_out, dim_out, groups)
        self.skip = nn.Conv1d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.time(temb)[:, :, None].chunk(2, dim=1)
        h = self.block1(x, (scale, shift))
        return self.block2(h) + self.skip(x)


class LinearAttention(nn.Module):
    """Linear attention (softmax over features for q, over positions for k), O(L) in the length."""

    def __init__(self, dim: int, *, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv1d(dim, 3 * hidden, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv1d(hidden, dim, 1), ChannelRMSNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, n) for t in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(b, -1, n))


class Attention(nn.Module):
    """Full (softmax) self-attention over positions."""

    def __init__(self, dim: int, *, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        hidden = heads * dim_head
        self.to_qkv = nn.Conv1d(dim, 3 * hidden, 1, bias=False)
        self.to_out = nn.Conv1d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, n).transpose(-1, -2) for t in self.to_qkv(x).chunk(3, dim=1))
        out = F.scaled_dot_product_attention(q, k, v)  # [b, h, n, d]
        return self.to_out(out.transpose(-1, -2).reshape(b, -1, n))


class PreNormResidual(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm, self.fn = ChannelRMSNorm(dim), fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) + x


def _downsample(dim_in: int, dim_out: int) -> nn.Module:
    return nn.Conv1d(dim_in, dim_out, 4, 2, 1)


def _upsample(dim_in: int, dim_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(dim_in, dim_out, 3, padding=1)
    )


class UNet1D(nn.Module):
    """1-D U-Net epsilon-predictor on vectors of length ``length``.

    Args:
        length: L, the length of R (704 for the default grid).
        dim: channels of the first stage (64 in the paper).
        dim_mults: channel multipliers per stage ((1, 2, 4, 8) in the paper).
        resnet_groups: GroupNorm groups (8).
        attn_heads, attn_dim_head: heads x width of the (linear and full) attention layers (4 x 32).

    forward(x [B, L] float32, t [B] int64 diffusion step index 0..T-1) -> predicted noise [B, L] float32.
    """

    def __init__(
        self,
        length: int,
        *,
        dim: int = 64,
        dim_mults: tuple[int, ...] | list[int] = (1, 2, 4, 8),
        resnet_groups: int = 8,
        attn_heads: int = 4,
        attn_dim_head: int = 32,
    ) -> None:
        super().__init__()
        dim_mults = tuple(int(m) for m in dim_mults)
        if length < 1 or dim < 1 or not dim_mults or any(m < 1 for m in dim_mults):
            raise ValueError(f"UNet1D: bad sizes length={length}, dim={dim}, dim_mults={dim_mults}")
        if any((dim * m) % resnet_groups for m in dim_mults):
            raise ValueError(
                f"UNet1D: every stage width dim*mult must be divisible by resnet_groups={resnet_groups}"
            )
        self.length = length
        self.multiple = 2 ** (len(dim_mults) - 1)
        self.padded = -(-length // self.multiple) * self.multiple
        time_dim = 4 * dim
        attn = {"heads": attn_heads, "dim_head": attn_dim_head}

        self.init_conv = nn.Conv1d(1, dim, 7, padding=3)
        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(dim), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim)
        )
        dims = [dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))

        def resnet(a: int, b: int) -> ResnetBlock:
            return ResnetBlock(a, b, time_dim=time_dim, groups=resnet_groups)

        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        resnet(d_in, d_in),
                        resnet(d_in, d_in),
                        PreNormResidual(d_in, LinearAttention(d_in, **attn)),
                        nn.Conv1d(d_in, d_out, 3, padding=1) if last else _downsample(d_in, d_out),
                    ]
                )
            )
        mid = dims[-1]
        self.mid_block1 = resnet(mid, mid)
        self.mid_attn = PreNormResidual(mid, Attention(mid, **attn))
        self.mid_block2 = resnet(mid, mid)
        self.ups = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            last = i == len(in_out) - 1
            self.ups.append(
                nn.ModuleList(
                    [
                        resnet(d_out + d_in, d_out),
                        resnet(d_out + d_in, d_out),
                        PreNormResidual(d_out, LinearAttention(d_out, **attn)),
                        nn.Conv1d(d_out, d_in, 3, padding=1) if last else _upsample(d_out, d_in),
                    ]
                )
            )
        self.final_block = resnet(2 * dim, dim)
        self.final_conv = nn.Conv1d(dim, 1, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.length:
            raise ValueError(f"UNet1D: expected x of shape [B, {self.length}], got {list(x.shape)}")
        h = x[:, None, :]
        if self.padded != self.length:
            h = F.pad(h, (0, self.padded - self.length))
        h = self.init_conv(h)
        r = h.clone()
        temb = self.time_mlp(t)
        skips = []
        for block1, block2, attn, down in self.downs:
            h = block1(h, temb)
            skips.append(h)
            h = attn(block2(h, temb))
            skips.append(h)
            h = down(h)
        h = self.mid_block2(self.mid_attn(self.mid_block1(h, temb)), temb)
        for block1, block2, attn, up in self.ups:
            h = block1(torch.cat([h, skips.pop()], dim=1), temb)
            h = attn(block2(torch.cat([h, skips.pop()], dim=1), temb))
            h = up(h)
        h = self.final_block(torch.cat([h, r], dim=1), temb)
        return self.final_conv(h)[:, 0, : self.length]
