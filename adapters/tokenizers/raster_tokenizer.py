"""The 2D raster VQ tokenizer (``tokenizer.kind: raster2d``) and the tokenizer factory of the vq family.

Prologue-Post (arXiv 2605.06137, method note "Variants" and "Small-scale recipe") freezes a
pretrained *2D* tokenizer, whose visual tokens are the patch grid in raster order, and adds the
prologue path on top; the family's default tokenizer is the 1D learned-query one
(:class:`adapters.tokenizers.vq_tokenizer.VQTokenizer`). This module gives the 2D option with the
same quantiser (cosine VQ, STE, commitment loss, per-position codebook sizes K_t), the same
``encode``/``decode``/``features`` interface and the same training loss, so vq, vcq, wartok and
prologue can all use it by setting ``tokenizer.kind: raster2d``.

Architecture (a CPU-sized choice, the paper's 2D tokenizer is a ViT over 16x16 patches):
- **Encoder, local by construction**: the image is cut into ``patch`` x ``patch`` crops (a
  (resolution/patch)^2 grid, L = grid^2 tokens; 28x28 with patch 7 -> 4x4 = 16 tokens); each crop
  goes through the same small conv net (two 3x3 convs with zero padding *inside the crop*, GELU,
  then an MLP to ``width``), so token t depends on patch t only and raster order is spatial order.
- **Decoder, global**: a Transformer over the L code vectors (+ learned 2D positions, flattened in
  raster order), each output mapped to its own patch's pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adapters.tokenizers.params import TokenizerConfig
from adapters.tokenizers.vq_tokenizer import VQTokenizer


class RasterVQTokenizer(VQTokenizer):
    """Images float [B, C, H, W] in [-1, 1] <-> tokens int64 [B, L = (H/patch)^2], token t = patch t (raster)."""

    def build_networks(self, cfg: TokenizerConfig, channels: int, n_patch: int, w: int) -> None:
        if cfg.length != n_patch:
            raise ValueError(f"tokenizer.length: kind raster2d with patch {cfg.patch} on {self.resolution}x"
                             f"{self.resolution} images has {self.grid}x{self.grid} = {n_patch} tokens, got "
                             f"length {cfg.length}; set tokenizer.length: {n_patch}")
        p, h = cfg.patch, max(w // 2, 1)
        self.patch_net = nn.Sequential(
            nn.Conv2d(channels, h, 3, padding=1), nn.GELU(), nn.Conv2d(h, h, 3, padding=1), nn.GELU(),
            nn.Flatten(), nn.Linear(h * p * p, w), nn.GELU(), nn.Linear(w, w))
        self.to_code = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, cfg.code_dim))
        self.add_quantiser(cfg)
        self.from_code = nn.Linear(cfg.code_dim, w)
        self.dec_pos = nn.Parameter(torch.randn(1, n_patch, w) * 0.02)
        self.decoder = self.stack(w)
        self.patch_out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, channels * p * p))

    @property
    def feature_length(self) -> int:
        return self.cfg.length

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, L, C, p, p], patches in raster order (row-major over the grid)."""
        b, c, p, g = len(x), self.channels, self.cfg.patch, self.grid
        return x.view(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c, p, p)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x float [B, C, H, W] in [-1, 1] -> per-patch features float [B, L, width] (patch t only)."""
        pt = self.patches(x)
        b, n = pt.shape[:2]
        return self.patch_net(pt.flatten(0, 1)).view(b, n, -1)

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """x float [B, C, H, W] in [-1, 1] -> l2-normalised latents z float [B, L, d]."""
        return F.normalize(self.to_code(self.features(x)), dim=-1)

    def decode_codes(self, q: torch.Tensor) -> torch.Tensor:
        """Code vectors [B, L, d] -> images float [B, C, H, W] (unclamped, ~[-1, 1])."""
        b, p, g = len(q), self.cfg.patch, self.grid
        h = self.patch_out(self.decoder(self.from_code(q) + self.dec_pos))  # [B, L, C*p*p]
        h = h.view(b, g, g, self.channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return h.reshape(b, self.channels, g * p, g * p)


TOKENIZERS: dict[str, type[VQTokenizer]] = {"query1d": VQTokenizer, "raster2d": RasterVQTokenizer}


def make_tokenizer(cfg: TokenizerConfig, codebook_sizes: list[int], channels: int, resolution: int,
                   quantiser=None) -> VQTokenizer:
    """The tokenizer of ``cfg.kind`` (query1d: :class:`VQTokenizer`; raster2d: :class:`RasterVQTokenizer`),
    with ``quantiser`` (a :class:`adapters.tokenizers.vq_tokenizer.Quantiser`) or the cosine codebook (None)."""
    return TOKENIZERS[cfg.kind](cfg, codebook_sizes, channels, resolution, quantiser)
