"""The networks of the discrete-diffusion family, nanoGPT-style: small, plain, one file.

* :class:`Denoiser` -- the x0-predictor mu_theta(x_t, y[, z]) of a masked diffusion model
  (MDLM, arXiv 2406.07524 Sec. 3.2): one-hot(x_t) over V + 1 symbols (the last = mask M),
  flattened -> ``depth`` hidden layers (Linear, LayerNorm, SiLU) -> logits [B, N, V] over the
  clean values. No time input: with the absorbing state the x0-posterior does not depend on t
  (MDLM Sec. 3.2, "time-independent"). The class label y is added to the first hidden layer.
  With ``z_dim > 0`` each hidden LayerNorm is modulated AdaLN-style by the Gaussian latent z
  (VADD, arXiv 2505.17384 Sec. 3: ``LN(h) * (1 + scale(z)) + shift(z)``), the modulation
  zero-initialised (DiT's adaLN-Zero) so at init z changes nothing;
  the input layer is a Linear on one-hot(x_t) computed as an embedding sum (:class:`OneHotLinear`).
* :class:`Recognition` -- VADD's r_phi(z | x0, M_t): reads one-hot(x0) and the mask bits
  M_t = 1[x_t = M] (not a second sequence, per the paper's note), returns (m, log sigma).

The VAE control (:mod:`adapters.diffusion.vae`) is these two networks with x_t all masked:
same parameter count, no diffusion.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -8.0, 4.0  # clamp of the recognition model's log sigma (vadd.md probe)


@dataclass(frozen=True)
class NetConfig:
    """Sizes: N tokens, V values (+1 mask id), ``width`` hidden units, ``depth`` hidden layers,
    ``num_classes`` labels (0 = unconditional), ``z_dim`` latent size (0 = no latent, an MDM)."""

    n_tokens: int = 784
    vocab: int = 2
    width: int = 512
    depth: int = 2
    num_classes: int = 10
    z_dim: int = 0

    @property
    def mask_id(self) -> int:
        return self.vocab


class OneHotLinear(nn.Module):
    """``Linear(one_hot(x, k).flatten(1))`` computed as a sum of embedding rows (same function and
    parameter count, k times fewer multiply-adds): x int64 [B, N] in [0, k) -> float [B, width]."""

    def __init__(self, n_tokens: int, k: int, width: int):
        super().__init__()
        self.k = k
        self.weight = nn.EmbeddingBag(n_tokens * k, width, mode="sum")
        nn.init.uniform_(self.weight.weight, -1 / (n_tokens * k) ** 0.5, 1 / (n_tokens * k) ** 0.5)  # nn.Linear's
        self.bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("offset", torch.arange(n_tokens) * k, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight(x + self.offset) + self.bias


class Denoiser(nn.Module):
    """mu_theta: x_t int64 [B, N] in [0, V] (V = mask), y int64 [B] or None, z float [B, d] or None
    -> logits float32 [B, N, V]. ``z=None`` with ``z_dim > 0`` skips the modulation (z ignored)."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.inp = OneHotLinear(cfg.n_tokens, cfg.vocab + 1, w)
        self.label = nn.Embedding(cfg.num_classes, w) if cfg.num_classes else None
        self.hidden = nn.ModuleList([nn.Linear(w, w) for _ in range(cfg.depth - 1)])
        self.norms = nn.ModuleList([nn.LayerNorm(w, elementwise_affine=cfg.z_dim == 0) for _ in range(cfg.depth)])
        if cfg.z_dim:  # per layer: z -> (shift, scale); adaLN-Zero init
            self.ada = nn.ModuleList([nn.Linear(cfg.z_dim, 2 * w) for _ in range(cfg.depth)])
            for m in self.ada:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        self.out = nn.Linear(w, cfg.n_tokens * cfg.vocab)

    def forward(self, x_t: torch.Tensor, y: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.cfg
        h = self.inp(x_t)
        if self.label is not None and y is not None:
            h = h + self.label(y)
        for i, norm in enumerate(self.norms):
            if i > 0:
                h = self.hidden[i - 1](h)
            h = norm(h)
            if cfg.z_dim and z is not None:
                shift, scale = self.ada[i](z).chunk(2, dim=-1)
                h = h * (1 + scale) + shift
            h = F.silu(h)
        return self.out(h).view(len(x_t), cfg.n_tokens, cfg.vocab)


class Recognition(nn.Module):
    """r_phi(z | x0, M_t): x0 int64 [B, N] in [0, V), mask bool [B, N] -> (m, log sigma), float [B, d] each."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.inp = OneHotLinear(cfg.n_tokens, cfg.vocab, w)  # one-hot(x0) part of the input layer
        self.mask_in = nn.Linear(cfg.n_tokens, w, bias=False)  # the mask-bit part
        layers: list[nn.Module] = [nn.LayerNorm(w), nn.SiLU()]
        for _ in range(cfg.depth - 1):
            layers += [nn.Linear(w, w), nn.LayerNorm(w), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(w, 2 * cfg.z_dim)

    def forward(self, x0: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inp(x0) + self.mask_in(mask.float())  # = Linear(concat(one-hot(x0), M_t))
        m, log_sigma = self.head(self.body(h)).chunk(2, dim=-1)
        return m, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


def gaussian_kl(m: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(m, sigma^2) || N(0, I)) in nats, summed over the last dim: float [B, d] -> [B]."""
    return 0.5 * (m.pow(2) + (2 * log_sigma).exp() - 1 - 2 * log_sigma).sum(-1)


def gaussian_log_prob(z: torch.Tensor, m: torch.Tensor | None = None, log_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """log N(z; m, diag sigma^2) in nats (standard normal when m is None): float [..., d] -> [...]."""
    if m is None:
        return -0.5 * (z.pow(2) + torch.log(torch.tensor(2 * torch.pi))).sum(-1)
    return (-0.5 * ((z - m) / log_sigma.exp()).pow(2) - log_sigma - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
