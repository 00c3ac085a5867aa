"""Sink and internals diagnostics of a decoder LM, per layer and head (arXiv:2605.06611; Gu et al. 2024).

All functions are forward-only (no gradients) on int64 inputs [B, T]; the model must run eager
attention (its ``self_attn`` modules return the attention weights).

* **Attention mass on position k** (Gu et al., "When Attention Sink Emerges in Language Models",
  arXiv:2410.10781, Sec. 3): α_k^{l,h} = mean over sequences of (1/(T−k)) Σ_{i≥k} A^{l,h}_{i,k}
  (0-based; queries at or after k). :func:`sink_stats` returns α_k as float [L, H].
* **Sink rate** Sink_k^ε = (1/(L·H)) Σ_{l,h} 1[α_k^{l,h} > ε], ε = 0.3 in Gu et al.
* **First-token variance ratio** at the o_proj input (arXiv:2605.06611, "variance discrepancy"):
  per layer, the variance across sequences of each entry of o_proj's input at position t, averaged
  over entries, gives v_t; ratio = v_0 / mean_{t≥1} v_t (1 = no outlier). With head-wise RMSNorm
  the o_proj input is the normalised head output.
* **Dimension disparity** DomRatio(h) = max_j |h_j| / ((1/d) Σ_k |h_k|) of the first token's
  residual stream after each layer (raw residual, before any norm), mean over sequences.
* **Effective rank** (Roy & Vetterli 2007): exp(entropy(σ / Σσ)) of the singular values σ of a
  layer's hidden states stacked over sequences and positions ([B·T, d]), centred (the mean
  vector is removed: otherwise one common direction dominates; the paper does not say), per layer.
* **RMS ratio** at the o_proj input: E‖o_0‖² / mean_{t≥1} E‖o_t‖² (what head-wise RMSNorm fixes
  to 1 before its gain, by construction), per layer.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from adapters.llm_internals.models import attention_modules


def alpha_k(attn: torch.Tensor, k: int = 0) -> torch.Tensor:
    """Attention mass on key position ``k``: attn float [B, H, T, T] (rows = queries, sum to 1) -> [H].

    α_k^h = mean_b (1/(T−k)) Σ_{i=k}^{T−1} A_{b,h,i,k}. ValueError if k is not in [0, T).
    """
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"alpha_k: expected attention [B, H, T, T], got {tuple(attn.shape)}")
    T = attn.shape[-1]
    if not 0 <= k < T:
        raise ValueError(f"alpha_k: position k={k} is outside [0, {T})")
    return attn[:, :, k:, k].float().mean(dim=(0, 2))


def sink_rate(alpha: torch.Tensor, eps: float = 0.3) -> float:
    """Share of (layer, head) entries of ``alpha`` (any shape, e.g. [L, H]) strictly above ``eps``."""
    return float((alpha > eps).float().mean())


@contextmanager
def capture(model: torch.nn.Module, attention: bool = True, o_proj_in: bool = True):
    """Record, during forwards inside the block, each layer's attention weights and o_proj input.

    Yields a dict ``{"attn": [L tensors float [B, H, T, T]], "o_in": [L tensors float [B, T, H·d_k]]}``
    (one entry per layer per forward). The o_proj hook runs after any head-norm pre-hook, so it
    sees what o_proj actually receives.
    """
    rec: dict[str, list] = {"attn": [], "o_in": []}
    handles = []
    for attn in attention_modules(model):
        if attention:
            def fwd(mod, args, out):
                w = out[1] if isinstance(out, tuple) and len(out) > 1 else None
                if w is None:
                    raise RuntimeError("capture: the attention module returned no weights; load the model with "
                                       "attn_implementation='eager'")
                rec["attn"].append(w.detach().float())
            handles.append(attn.register_forward_hook(fwd))
        if o_proj_in:
            def pre(mod, args):
                rec["o_in"].append(args[0].detach().float())
            handles.append(attn.o_proj.register_forward_pre_hook(pre))
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


@dataclass
class Internals:
    """Per-layer / per-head diagnostics of one model on one batch (see the module docstring)."""

    alpha0: torch.Tensor  # float [L, H], attention mass on position 0
    var_profile: torch.Tensor  # float [L, T], v_t at the o_proj input
    dom_ratio: torch.Tensor  # float [L], DomRatio of the first token's residual after each layer
    eff_rank: torch.Tensor  # float [L], effective rank of each layer's output hidden states
    attn_mean: torch.Tensor  # float [L, T, T], attention averaged over sequences and heads (for maps)
    sq_profile: torch.Tensor  # float [L, T], mean squared entry of the o_proj input by position

    @property
    def var_ratio(self) -> torch.Tensor:
        """float [L]: v_0 / mean_{t>=1} v_t per layer."""
        return self.var_profile[:, 0] / self.var_profile[:, 1:].mean(1)

    @property
    def rms_ratio(self) -> torch.Tensor:
        """float [L]: E||o_0||^2 / mean_{t>=1} E||o_t||^2 per layer."""
        return self.sq_profile[:, 0] / self.sq_profile[:, 1:].mean(1)


def variance_profile(o_in: torch.Tensor) -> torch.Tensor:
    """o float [B, T, D] -> v float [T]: per-entry variance across the B sequences, averaged over D."""
    return o_in.var(dim=0, unbiased=True).mean(-1)


def dom_ratio(h: torch.Tensor) -> torch.Tensor:
    """h float [..., d] -> DomRatio float [...] = max_j |h_j| / mean_k |h_k|."""
    a = h.abs().float()
    return a.amax(-1) / a.mean(-1).clamp_min(1e-12)


def effective_rank(x: torch.Tensor) -> float:
    """Roy & Vetterli effective rank of x float [n, d], centred over rows: exp(H(p)), p = σ / Σσ."""
    x = x.double()
    s = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = s / s.sum().clamp_min(1e-300)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def measure(model: torch.nn.Module, attn_ids: torch.Tensor, var_ids: torch.Tensor | None = None) -> Internals:
    """Diagnostics of ``model`` (eval mode): attention / DomRatio / effective rank on ``attn_ids``
    int64 [B, T], the variance profile on ``var_ids`` (default ``attn_ids``; random tokens remove
    any BOS effect)."""
    model.eval()
    hs: list[torch.Tensor] = []

    def keep(mod, args, out):  # a decoder layer's output: the raw residual stream [B, T, d]
        hs.append((out[0] if isinstance(out, tuple) else out).detach().float())

    handles = [layer.register_forward_hook(keep) for layer in model.model.layers]
    try:
        with capture(model, attention=True, o_proj_in=var_ids is None) as rec:
            model.model(input_ids=attn_ids)
    finally:
        for h in handles:
            h.remove()
    alpha0 = torch.stack([alpha_k(a, 0) for a in rec["attn"]])
    attn_mean = torch.stack([a.mean(dim=(0, 1)) for a in rec["attn"]])
    dom = torch.stack([dom_ratio(h[:, 0, :]).mean() for h in hs])
    erank = torch.tensor([effective_rank(h.reshape(-1, h.shape[-1])) for h in hs])
    if var_ids is None:
        o_in = rec["o_in"]
    else:
        with capture(model, attention=False, o_proj_in=True) as rec2:
            model.model(input_ids=var_ids)
        o_in = rec2["o_in"]
    prof = torch.stack([variance_profile(o) for o in o_in])
    sq = torch.stack([o.pow(2).mean(dim=(0, 2)) for o in o_in])
    return Internals(alpha0.cpu(), prof.cpu(), dom.cpu(), erank.cpu(), attn_mean.cpu(), sq.cpu())
