"""The two causal interventions of arXiv:2605.06611 that move a sink to a chosen position k.

1. :func:`self_only_mask` -- edit the additive 4-D attention mask of every layer so that query row
   ``k`` may attend only to key ``k``. Token k is then "unaggregated" like token 0 (its attention
   output is a single value vector), which the paper predicts makes it a variance outlier and a
   new sink.
2. :func:`amplify_variance` -- at layer ``layer``, replace o_proj's input at position k by
   μ + λ (o_k − μ), λ > 1, with μ the mean of o_proj's input over the batch and all positions at
   that layer (the paper does not say what μ is averaged over; this is our choice). The control
   ``mode="rescale"`` applies the plain rescale λ·o_k, which the paper reports does *not* create a
   sink (the norm alone is not the cause).

Both are context managers installing hooks (removed on exit); the model's weights are untouched.
The effect is read with :func:`adapters.llm_internals.internals.alpha_k` at position k.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Literal

import torch

from adapters.llm_internals.models import attention_modules


def self_only_rows(mask: torch.Tensor, k: int) -> torch.Tensor:
    """A copy of an additive mask float [B, 1|H, T, T] whose row ``k`` allows only column ``k``."""
    m = mask.clone()
    neg = torch.finfo(m.dtype).min
    m[..., k, :] = neg
    m[..., k, k] = 0.0
    return m


@contextmanager
def self_only_mask(model: torch.nn.Module, k: int):
    """Inside the block, position ``k`` attends only to itself in every layer (eager attention).

    ValueError at forward time if a layer gets no materialised 4-D float mask (sdpa/flash paths
    may pass None; load the model with eager attention).
    """
    handles = []

    def pre(mod, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None or not torch.is_tensor(mask) or mask.ndim != 4 or not mask.dtype.is_floating_point:
            raise ValueError("self_only_mask: expected a 4-D additive float attention mask (eager attention)")
        if not 0 <= k < mask.shape[-1]:
            raise ValueError(f"self_only_mask: k={k} outside [0, {mask.shape[-1]})")
        kwargs["attention_mask"] = self_only_rows(mask, k)
        return args, kwargs

    for attn in attention_modules(model):
        handles.append(attn.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def amplify_variance(model: torch.nn.Module, layer: int, k: int, lam: float,
                     mode: Literal["variance", "rescale"] = "variance"):
    """Inside the block, o_proj's input at position ``k`` of layer ``layer`` becomes
    μ + λ(o_k − μ) (``variance``) or λ·o_k (``rescale``, the control)."""
    attn = attention_modules(model)[layer]

    def pre(mod, args):
        x = args[0]
        if not 0 <= k < x.shape[1]:
            raise ValueError(f"amplify_variance: k={k} outside [0, {x.shape[1]})")
        y = x.clone()
        if mode == "variance":
            mu = x.mean(dim=(0, 1), keepdim=True)[:, 0]  # [1, D]: over batch and positions
            y[:, k] = mu + lam * (x[:, k] - mu)
        else:
            y[:, k] = lam * x[:, k]
        return (y, *args[1:])

    h = attn.o_proj.register_forward_pre_hook(pre)  # after any head-norm hook: acts on o_proj's input
    try:
        yield
    finally:
        h.remove()
