"""``vae``: the one-step control of the VADD comparison: VADD's networks without diffusion.

A conditional VAE (Kingma & Welling 2014, arXiv 1312.6114) whose decoder is the VADD denoiser
evaluated at x_t = all masked (so it has exactly VADD's parameters and AdaLN latent path) and
whose encoder is VADD's recognition model seeing the whole x0 (mask bits all 1). Loss: the
negative ELBO -log p(x0 | z) + lambda KL with the same annealing as VADD; a mean-field
(factorised) decoder, as VADD's at one step. If VADD's one-step samples beat the MDM's, this
row says how much of it a plain VAE of the same size already gets without any diffusion.

``sampler`` (inherited) is unused. Sampling spends exactly one decoder call whatever ``steps`` is asked (the measured NFE is 1);
the likelihood is the ELBO bound (nats) and an IW estimate (Burda et al. 2016, ``nll_iw``).
"""
from __future__ import annotations

import torch

from adapters.diffusion import process
from adapters.diffusion.common import SAMPLE_BATCH, tokens_of
from adapters.diffusion.model import gaussian_kl
from adapters.diffusion.vadd import VADDAdapter, inner_terms
from bench.adapter import NLL, count_nfe
from bench.registry import register_adapter


@register_adapter("vae")
class VAEAdapter(VADDAdapter):
    """VADD's networks at t = 1 only: a conditional VAE with a factorised decoder (1 NFE)."""

    def _all_masked(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.ones_like(x0, dtype=torch.bool)
        return x0.masked_fill(mask, self.mask_id), mask

    def loss(self, x0, y, kl_weight, gen, ignore_z: bool = False):
        x_t, mask = self._all_masked(x0)
        m, ls = self.rec(x0, mask)
        z = m + ls.exp() * torch.randn(m.shape, generator=gen)
        ce = process.masked_nll(self.den(x_t, y, z), x0, mask)
        kl = gaussian_kl(m, ls)
        return ce + kl_weight * kl, {"kl_nats": kl.mean(), "kl_weight": kl_weight}

    def train_key_extra(self) -> dict:
        return {"z_dim": self.params.z_dim, "model": "vae"}

    def draw(self, b, y, steps, gen):
        z = torch.randn(b, self.params.z_dim, generator=gen)
        count_nfe(b)
        logits = self.den(torch.full((b, self.n_tokens), self.mask_id, dtype=torch.long), y, z)
        return process.reverse_step(torch.full((b, self.n_tokens), self.mask_id, dtype=torch.long), logits, 1.0, 0.0,
                                    self.params.schedule, self.mask_id, gen)  # s = 0: every position drawn

    def nelbo(self, x0, y, gen):
        return self.loss(x0, y, 1.0, gen)[0]

    @torch.no_grad()
    def nll_iw(self, images: torch.Tensor, labels: torch.Tensor, k: int) -> NLL:
        """IW-ELBO with K samples (nats per image, [B])."""
        x0, y = tokens_of(images, self.levels), self.labels(labels)
        gen = torch.Generator().manual_seed(12345)
        chunk = max(1, SAMPLE_BATCH // k)
        bounds, out = [], []
        for i in range(0, len(x0), chunk):
            xb, yb = x0[i: i + chunk], None if y is None else y[i: i + chunk]
            x_t, mask = self._all_masked(xb)
            bound, iw = inner_terms(self.den, self.rec, xb, x_t, mask, yb, k, gen)
            bounds.append(bound)
            out.append(iw)
        self.last_paired_bound = torch.cat(bounds)  # the ELBO from the same z draws (see VADDAdapter.nll_iw)
        return NLL(torch.cat(out))

    @torch.no_grad()
    def kl_per_image(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """KL(r(z | x0) || N(0, I)) per image (nats, [B])."""
        x0 = tokens_of(images, self.levels)
        out = []
        for i in range(0, len(x0), SAMPLE_BATCH):
            xb = x0[i: i + SAMPLE_BATCH]
            out.append(gaussian_kl(*self.rec(xb, self._all_masked(xb)[1])))
        return torch.cat(out)
