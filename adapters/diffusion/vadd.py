"""``vadd``: Variational Autoencoding Discrete Diffusion (Xie et al. 2025, arXiv 2505.17384).

The MDM's denoiser conditioned on a Gaussian latent z ~ N(0, I_d) by AdaLN modulation
(:class:`adapters.diffusion.model.Denoiser` with ``z_dim = d``), with a recognition model
r_phi(z | x0, M_t) (:class:`adapters.diffusion.model.Recognition`, it sees x0 *and* the mask, the
paper's Sec. 3 note that an x0-only encoder collapses). Trained jointly by the double ELBO (DELBO,
the VAE bound applied to log p(x0 | x_t) *inside* the time integral, so the KL is also weighted
by w(t)), with the KL weight lambda annealed 0 -> 1 (``budget.kl_anneal_frac``):

    L = E_{t, x_t, eps} [ w(t) * ( sum_{i: x_t^i = M} -log mu_theta^i(x_t, z)[x0^i] + lambda KL(r_phi || N(0, I)) ) ],
    z = m_phi + sigma_phi * eps.

Sampling (paper Algorithm 2): z from the prior, one denoiser call per step, no recognition model.
``sampler``: ``per_step`` draws a fresh z at every step (each transition marginalises its own z,
the model's ancestral sampler); ``per_trajectory`` draws one z per image for the whole chain
(a consistency-style heuristic that treats z as a global latent). Training does not depend on
it (same cache key), so both rows share the trained weights.

Likelihood: ``nll`` is the DELBO bound (nats); :meth:`nll_iw` an importance-weighted estimate of
the MDM ELBO of the z-marginal model, K samples of r per t (``IW-DELBO``): it replaces the inner
VAE bound by log (1/K) sum_k p(x0|x_t,z_k) p(z_k) / r(z_k | x0, M_t) (Burda et al. 2016).
"""
from __future__ import annotations

import math
import torch

from adapters.diffusion import process
from adapters.diffusion.common import SAMPLE_BATCH, DiffusionAdapter, tokens_of
from adapters.diffusion.model import Denoiser, NetConfig, Recognition, gaussian_kl, gaussian_log_prob
from adapters.diffusion.params import VADDParams
from bench.adapter import NLL
from bench.registry import register_adapter


def inner_terms(den: Denoiser, rec: Recognition, x0: torch.Tensor, x_t: torch.Tensor, mask: torch.Tensor,
                y: torch.Tensor | None, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimates of -log p(x0 | x_t) over the masked positions, float [B] nats each, from K draws of r:

    ``bound``: mean_k CE(z_k) + KL(r || p) (the VAE bound, analytic KL); ``iw``:
    -(logsumexp_k [-CE(z_k) + log p(z_k) - log r(z_k)] - log K). E[iw] <= E[bound] (Burda et al. 2016).
    """
    m, ls = rec(x0, mask)
    b = len(x0)
    eps = torch.randn(k, b, m.shape[-1], generator=gen)
    z = m + ls.exp() * eps  # [K, B, d]
    rep = lambda a: None if a is None else a.repeat(k, *[1] * (a.ndim - 1))  # noqa: E731
    ce = process.masked_nll(den(rep(x_t), rep(y), z.reshape(k * b, -1)), rep(x0), rep(mask)).view(k, b)
    log_w = -ce + gaussian_log_prob(z) - gaussian_log_prob(z, m, ls)
    iw = -(torch.logsumexp(log_w, 0) - math.log(k))
    return ce.mean(0) + gaussian_kl(m, ls), iw


@register_adapter("vadd")
class VADDAdapter(DiffusionAdapter):
    """MDM + Gaussian latent by AdaLN, recognition r(z | x0, M_t), DELBO with KL annealing."""

    Params = VADDParams
    anneals_kl = True

    @property
    def z_dim(self) -> int:  # type: ignore[override]
        return self.params.z_dim

    def build(self, cfg: NetConfig) -> dict[str, torch.nn.Module]:
        self.den, self.rec = Denoiser(cfg), Recognition(cfg)
        return {"denoiser": self.den, "recognition": self.rec}

    def loss(self, x0, y, kl_weight, gen, ignore_z: bool = False):
        """Per-image DELBO loss [B] (nats); ``ignore_z`` feeds no z to the denoiser (a test hook: with
        ``kl_weight = 0`` it is then exactly the MDM loss)."""
        sched = self.params.schedule
        t = process.sample_t(len(x0), gen)
        x_t, mask = process.forward_mask(x0, t, sched, self.mask_id, gen)
        m, ls = self.rec(x0, mask)
        z = m + ls.exp() * torch.randn(m.shape, generator=gen)
        ce = process.masked_nll(self.den(x_t, y, None if ignore_z else z), x0, mask)
        kl = gaussian_kl(m, ls)
        w = process.weight(t, sched)
        return w * (ce + kl_weight * kl), {"kl_nats": kl.mean(), "kl_weight": kl_weight}

    def train_key_extra(self) -> dict:
        return {"z_dim": self.params.z_dim}  # not the sampler: both samplers share the weights

    def chain_logits(self, x_t, y, k, state, gen):
        if self.params.sampler == "per_step" or "z" not in state:
            state["z"] = torch.randn(len(x_t), self.params.z_dim, generator=gen)
        return self.den(x_t, y, state["z"])

    def nelbo(self, x0, y, gen):
        return self.loss(x0, y, 1.0, gen)[0]

    # -- extra likelihood estimators (optional members read by the diffusion_nll metric) -----------
    @torch.no_grad()
    def nll_iw(self, images: torch.Tensor, labels: torch.Tensor, k: int) -> NLL:
        """IW-DELBO with K samples per t (nats per image, [B]); ``nll_t_samples`` stratified t per image.

        ``per_position`` is None; the DELBO bound from the *same* t, masks and z draws (common random
        numbers, so the pair differs only by the estimator) is kept in ``self.last_paired_bound`` [B].
        """
        x0, y = tokens_of(images, self.levels), self.labels(labels)
        gen = torch.Generator().manual_seed(12345)
        iw_tot, bound_tot = torch.zeros(len(x0)), torch.zeros(len(x0))
        chunk = max(1, SAMPLE_BATCH // k)
        for _ in range(self.params.nll_t_samples):
            for i in range(0, len(x0), chunk):
                xb, yb = x0[i: i + chunk], None if y is None else y[i: i + chunk]
                t = process.sample_t(len(xb), gen)
                x_t, mask = process.forward_mask(xb, t, self.params.schedule, self.mask_id, gen)
                bound, iw = inner_terms(self.den, self.rec, xb, x_t, mask, yb, k, gen)
                w = process.weight(t, self.params.schedule)
                iw_tot[i: i + chunk] += w * iw
                bound_tot[i: i + chunk] += w * bound
        self.last_paired_bound = bound_tot / self.params.nll_t_samples
        return NLL(iw_tot / self.params.nll_t_samples)

    @torch.no_grad()
    def kl_per_image(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """KL(r(z | x0, M_t) || N(0, I)) per image (nats, [B]) at one t ~ U(0, 1) per image (collapse watch)."""
        x0 = tokens_of(images, self.levels)
        gen = torch.Generator().manual_seed(54321)
        out = []
        for i in range(0, len(x0), SAMPLE_BATCH):
            xb = x0[i: i + SAMPLE_BATCH]
            _, mask = process.forward_mask(xb, process.sample_t(len(xb), gen), self.params.schedule, self.mask_id, gen)
            out.append(gaussian_kl(*self.rec(xb, mask)))
        return torch.cat(out)
