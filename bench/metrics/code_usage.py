"""Code usage of the first k tokens: effective codebook size (perplexity) and distinct codes.

Prologue (arXiv 2605.06137; method note "What would falsify it"): the method fails if the prologue
code usage collapses (perplexity near 1). With ``k`` = the adapter's prologue length (P = 4 in the
suites) this column shows the prologue's usage for prologue rows and the first k visual tokens' for
the baselines, so a collapse is visible on the leaderboard and not only in the run's logs.
Pooled over the k positions: perplexity = exp(H) of the pooled code histogram (1..sum of K_t).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.registry import register_metric


def usage(tokens: np.ndarray) -> tuple[float, int]:
    """tokens int [N, k] (ids >= 0) -> (perplexity exp(H) of the pooled histogram, distinct ids)."""
    z = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if z.size == 0 or (z < 0).any():
        raise ValueError("code_usage: tokens must be a non-empty array of non-negative ids")
    counts = np.bincount(z)
    p = counts[counts > 0] / z.size
    return float(np.exp(-(p * np.log(p)).sum())), int((counts > 0).sum())


class CodeUsageParams(MetricParams):
    k: int = Field(4, gt=0, description="pool the first k tokens of each sequence (the P prologue tokens for prologue)")
    n: int | None = Field(5000, gt=0, description="first n train images (None = all)")


@register_metric("code_usage")
class CodeUsage(Metric):
    """Perplexity and distinct codes of the first k tokens of the train images' token sequences."""

    requires = ("tokenize",)
    Params = CodeUsageParams

    @classmethod
    def columns(cls, params):
        return {  # descriptive: more usage is not better in itself (a collapse is the warning sign)
            "usage_perplexity": Column(f"code usage perplexity, first {params.k} tokens", None, "codes",
                                       short=f"ppl@{params.k}"),
            "usage_codes": Column(f"distinct codes, first {params.k} tokens", None, "codes", short=f"codes@{params.k}"),
        }

    def compute(self, adapter, ctx, params):
        tokens = adapter.encode(ctx.dataset.train.head(params.n).images)[:, :params.k]
        ppl, n_codes = usage(tokens.numpy())
        return check_finite({"usage_perplexity": ppl, "usage_codes": n_codes}, "code_usage")
