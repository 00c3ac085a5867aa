"""The family's one network: a small class-conditional velocity MLP for 28x28 single-channel images
(rectified flow, v = eps - x0), with an optional zero-initialised control adapter (NCT).

An MLP, not a U-Net: on the 2-core CPU this harness targets a 3-level conv U-Net of width 32 cost
~150 MFLOP per image-evaluation (13 s per 1000 images under load), the MLP ~2 MFLOP, which is what
lets the teacher be sampled at 100 NFE on 5000 images.

Shapes: ``x`` float32 [B, 1, 28, 28] (data in [-1, 1]), ``s`` float32 [B] flow time in [0, 1]
(s = 1 pure noise), ``y`` int64 [B] class in [0, num_classes] where ``num_classes`` is the null
class (classifier-free guidance); returns the velocity float32 [B, 1, 28, 28].
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

PIXELS = 28 * 28


def time_embedding(s: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of 1000 s: float [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=s.dtype, device=s.device) / half)
    ang = 1000.0 * s[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], dim=1)


class Block(nn.Module):
    """Pre-LayerNorm residual MLP block with the (time, class) embedding as scale and shift."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mod = nn.Linear(width, 2 * width)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        scale, shift = self.mod(e).chunk(2, dim=1)
        return h + self.fc2(F.silu(self.fc1(self.norm(h) * (1 + scale) + shift)))


class VelocityNet(nn.Module):
    """784 -> width -> ``depth`` residual blocks -> 784; ~1.4 M parameters at width 256, depth 3."""

    def __init__(self, num_classes: int = 10, width: int = 256, depth: int = 3):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        self.t_mlp = nn.Sequential(nn.Linear(64, width), nn.SiLU(), nn.Linear(width, width))
        self.y_emb = nn.Embedding(num_classes + 1, width)  # the last row is the null class
        self.inp = nn.Linear(PIXELS, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, PIXELS)

    def forward(self, x: torch.Tensor, s: torch.Tensor, y: torch.Tensor,
                inject: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Velocity [B, 1, 28, 28]; ``inject``: one [B, width] addition after each block, optionally
        followed by one [B, 784] addition to the output (the control adapter's outputs; zeros reproduce
        the plain network exactly)."""
        e = F.silu(self.t_mlp(time_embedding(s, 64)) + self.y_emb(y))
        h = self.inp(x.reshape(len(x), PIXELS))
        for i, blk in enumerate(self.blocks):
            h = blk(h, e)
            if inject is not None:
                h = h + inject[i]
        out = self.out(F.silu(self.out_norm(h)))
        if inject is not None and len(inject) > len(self.blocks):
            out = out + inject[len(self.blocks)]
        return out.reshape(len(x), 1, 28, 28)


class ControlAdapter(nn.Module):
    """NCT's ControlNet-lite (arXiv 2506.19741, Sec. 3: a trainable branch joined by zero-initialised
    connections): an MLP on (control c [B, 1, 7, 7], the 4x4-pooled noise [B, 1, 7, 7]) whose
    zero-initialised output layers add [B, width] to each block of the frozen generator and, with
    ``output_skip``, [B, 784] to its velocity; at initialisation the adapted generator equals the
    frozen one bit for bit."""

    def __init__(self, gen_width: int, depth: int, width: int = 256, output_skip: bool = True):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(98, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.zero = nn.ModuleList([nn.Linear(width, gen_width) for _ in range(depth)]
                                  + ([nn.Linear(width, PIXELS)] if output_skip else []))
        for m in self.zero:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, c: torch.Tensor, z: torch.Tensor) -> list[torch.Tensor]:
        h = self.enc(torch.cat([c.reshape(len(c), 49), F.avg_pool2d(z, 4).reshape(len(z), 49)], 1))
        return [m(h) for m in self.zero]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
