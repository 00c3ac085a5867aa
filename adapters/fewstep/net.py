"""The family's one network: a small class-conditional MLP for 28x28 single-channel images
(rectified flow, v = eps - x0), with an optional zero-initialised control adapter (NCT).

The MLP predicts x0 and the velocity is ``v = (x - x0_hat) / s`` (``parameterisation: x0``, the
default): the flow convention's own identity ``x0 = x_s - s v`` (TDM-R1 note; Salimans & Ho,
arXiv 2202.00512, Sec. 4, for the x-parameterisation) read the other way. Why x0 and not a linear skip
``Linear(784, 784)(x) + MLP(x)`` or a U-Net: the MLP's head ``Linear(width, 784)`` can only produce
vectors in one fixed width-dimensional affine subspace. Predicting *v* with it (``parameterisation:
velocity``, the former network, kept to measure against) leaves every velocity in that subspace, so
the Euler sampler (x <- x - Delta v, sum Delta = 1) passes the starting noise's component outside it
to the image unchanged at any NFE, and the v-loss cannot fall below (784 - width) / 784. In the
out-of-span directions the optimal velocity is ``(x - m) / s`` (m the data's constant there): exactly
what the x0 form gives for any x0 in the span, at every s, while a fixed linear skip would need the
time-dependent gain 1 / s and a U-Net costs ~75x the MLP per evaluation on this CPU (below). With x0
the Jacobian dv/dx = (I - dx0/dx) / s has full rank 784, and the last Euler step (to s = 0) returns
x0_hat itself: the image lies in the head's span, no noise passes through. Images need no more than
width dimensions (Fashion-MNIST's first 256 principal components hold almost all of its variance).

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
S_MIN = 1e-4  # the x0 form divides by s; the sampler and the students never ask below ~0.03


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


PARAMETERISATIONS = ("x0", "velocity")


class VelocityNet(nn.Module):
    """784 -> width -> ``depth`` residual blocks -> 784; ~1.7 M parameters at width 256, depth 3.
    ``parameterisation``: ``x0`` (the head is x0_hat, v = (x - x0_hat) / s; full rank) or ``velocity``
    (the head is v; its span is width-dimensional: the former network)."""

    def __init__(self, num_classes: int = 10, width: int = 256, depth: int = 3, parameterisation: str = "x0"):
        super().__init__()
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}")
        self.num_classes, self.width, self.parameterisation = num_classes, width, parameterisation
        self.t_mlp = nn.Sequential(nn.Linear(64, width), nn.SiLU(), nn.Linear(width, width))
        self.y_emb = nn.Embedding(num_classes + 1, width)  # the last row is the null class
        self.inp = nn.Linear(PIXELS, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, PIXELS)

    def forward(self, x: torch.Tensor, s: torch.Tensor, y: torch.Tensor,
                inject: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Velocity [B, 1, 28, 28]; ``inject``: one [B, width] addition after each block, optionally
        followed by one [B, 784] addition to the head (x0_hat or v; the control adapter's outputs; zeros
        reproduce the plain network exactly). x0: ``v = (x - head) / s`` with s clamped at S_MIN."""
        out = self.head(x, s, y, inject)
        if self.parameterisation == "velocity":
            return out
        return (x - out) / s.clamp_min(S_MIN).view(-1, 1, 1, 1)

    def head(self, x: torch.Tensor, s: torch.Tensor, y: torch.Tensor,
             inject: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The head's output [B, 1, 28, 28]: x0_hat (``x0``) or v (``velocity``)."""
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
