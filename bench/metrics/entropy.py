"""Per-position conditional entropy of token sequences and the Entropy Cliff (VCQ, arXiv 2605.06207).

Plug-in estimator over a prefix trie (the VCQ method note; the authors' sibling code computes the
same quantity): H_t = sum over distinct prefixes c of length t of (n_c / N) * H(next-token counts
under c), in bits, t = 0..L-1 (H_0 = H(z_0)). Once every prefix is unique H_t = 0 exactly.
The cliff position is the first t with H_t <= ``eps`` bits. Predicted: t* = ceil(log2 N / log2 K)
for a uniform codebook; in general the first t with sum_{s<t} log2 K_s >= log2 N.
"""
from __future__ import annotations

import math

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.registry import register_metric

if TYPE_CHECKING:
    import torch


def conditional_entropy_per_position(tokens: np.ndarray | torch.Tensor) -> np.ndarray:
    """tokens int [N, L] -> H_t in bits, float64 [L] (plug-in, prefix-trie grouping)."""
    z = np.asarray(tokens, dtype=np.int64)
    n, length = z.shape
    out = np.zeros(length)
    base = int(z.max()) + 1 if z.size else 1
    prefix_id = np.zeros(n, dtype=np.int64)  # id of each sequence's prefix z_<t (one node of the trie)
    for t in range(length):
        # One int64 key per (prefix, next token) pair: a 1D unique is far faster than unique(axis=0).
        _, pair_id, pair_counts = np.unique(prefix_id * base + z[:, t], return_inverse=True, return_counts=True)
        pair_id = pair_id.reshape(-1)
        first = np.unique(pair_id, return_index=True)[1]
        pair_prefix = prefix_id[first]
        prefix_tot = np.bincount(pair_prefix, weights=pair_counts)
        p_next = pair_counts / prefix_tot[pair_prefix]
        # H_t = sum_c (n_c/N) * H(next | c) = -(1/N) sum_pairs count * log2 p(next | c)
        out[t] = max(0.0, float(-(pair_counts * np.log2(p_next)).sum() / n))  # no -0.0
        prefix_id = pair_id
    return out


def entropy_stderr(tokens: np.ndarray) -> float:
    """Delta-method standard error (bits) of the plug-in entropy of one token column, int [N]:
    sqrt((sum_k p_k log2^2 p_k - H^2) / N) (Basharin 1959). Sampling error over the N images only;
    the plug-in estimator's downward bias (~(K_seen - 1) / (2 N ln 2) bits) is not in it."""
    _, counts = np.unique(np.asarray(tokens).reshape(-1), return_counts=True)
    p = counts / counts.sum()
    lp = np.log2(p)
    h = -(p * lp).sum()
    return float(np.sqrt(max(0.0, (p * lp * lp).sum() - h * h) / counts.sum()))


def predicted_cliff(codebook_sizes: list[int], n: int) -> int:
    """t* = the first t with sum_{s<t} log2 K_s >= log2 N (= ceil(log2 N / log2 K) for uniform K)."""
    bits, target = 0.0, math.log2(n)
    for t, k in enumerate(codebook_sizes):
        if bits >= target - 1e-12:
            return t
        bits += math.log2(k)
    return len(codebook_sizes)  # the whole sequence is needed (or not enough) to tell the N images apart


def cliff_position(h: np.ndarray, eps: float) -> int:
    """First t with H_t <= eps bits; L if the curve never drops that low."""
    idx = np.nonzero(h <= eps)[0]
    return int(idx[0]) if len(idx) else len(h)


class EntropyParams(MetricParams):
    n: int | None = Field(None, gt=0, description="first n train images (None = all)")
    eps: float = Field(0.5, ge=0, description="bits at or below which H_t counts as collapsed (next token nearly determined)")


@register_metric("entropy")
class PositionEntropy(Metric):
    """Per-position conditional entropy of train tokens, cliff position and predicted t*."""

    requires = ("tokenize",)
    Params = EntropyParams

    @classmethod
    def columns(cls, params):
        return {
            # descriptive statistics of the token distribution: neither higher nor lower is better
            "cliff_position": Column(f"entropy cliff t (H_t<={params.eps} bits)", None, "position", short="cliff"),
            "t_star": Column("predicted t*", None, "position", short="t*"),
            "entropy_first_token": Column("H_0", None, "bits", short="H0",
                                          uncertainty="delta method over train images (plug-in H_0)"),
        }

    def compute(self, adapter, ctx, params):
        train = ctx.dataset.train.head(params.n)
        tokens = adapter.encode(train.images)
        h = conditional_entropy_per_position(tokens)
        for t, v in enumerate(h.tolist()):
            ctx.log_metric("entropy_bits", v, t)
        sizes = adapter.codebook_sizes
        t_star = predicted_cliff(sizes, len(train))
        cliff = cliff_position(h, params.eps)
        self._plot(h, sizes, t_star, cliff, ctx)
        # cliff and t* are positions (t* is not even random): no stderr; H_0's is its delta-method SE
        return check_finite({"cliff_position": cliff, "t_star": t_star, "entropy_first_token": float(h[0]),
                             "entropy_first_token_stderr": entropy_stderr(np.asarray(tokens)[:, 0])}, "entropy")

    @staticmethod
    def _plot(h, sizes, t_star, cliff, ctx):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(len(h)), h, marker="o", label="H_t (train tokens)")
        ax.plot(range(len(sizes)), np.log2(sizes), ls=":", label="log2 K_t")
        ax.axvline(t_star, color="k", ls="--", label=f"predicted t*={t_star}")
        ax.axvline(cliff, color="r", ls="-.", alpha=0.6, label=f"cliff={cliff}")
        ax.set_xlabel("position t")
        ax.set_ylabel("bits")
        ax.set_title(f"{ctx.method.name} seed {ctx.seed}: per-position conditional entropy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        (ctx.artifact_dir / "plots").mkdir(parents=True, exist_ok=True)
        fig.savefig(ctx.artifact_dir / "plots" / "entropy.png", dpi=100)
        plt.close(fig)
