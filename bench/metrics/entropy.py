"""Per-position conditional entropy of token sequences and the Entropy Cliff (VCQ, arXiv 2605.06207).

Plug-in estimator over a prefix trie (the VCQ method note; the authors' sibling code computes the
same quantity): H_t = sum over distinct prefixes c of length t of (n_c / N) * H(next-token counts
under c), in bits, t = 0..L-1 (H_0 = H(z_0)). Once every prefix is unique H_t = 0 exactly.

Outputs (all descriptive: no better/worse direction):

* ``cliff_position``: the first t with H_t <= ``eps`` bits, a *threshold crossing*: on a flat curve
  near ``eps`` it jumps (vcq's 0.53-1.26-bit curve: 16 at 0.5 bits, 13 at 0.6, 3 at 0.7). Kept,
  labelled as such, because the ci gate's baseline has it.
* ``cliff_frac``: the stable measure, :func:`bench.metrics.token_stats.cumulative_cliff`: the
  real-valued number of leading tokens whose H_t add up to ``cliff_frac`` (default 0.9) of
  ``entropy_auc``; it moves continuously with the curve.
* ``entropy_auc`` = sum_t H_t (bits): by the chain rule the plug-in entropy of the whole sequence,
  at most log2 N (reached when every train sequence is distinct).
* ``t_star``: the first t with sum_{s<t} log2 K_s >= log2 N (= ceil(log2 N / log2 K) for a uniform
  codebook). H_s = 0 for every s >= t means the prefixes z_<t already tell the sequences apart, which
  needs sum_{s<t} log2 K_s >= log2 N when the N train sequences are distinct: t* is the EARLIEST
  position from which H_t can stay at 0 (a cliff can come later, never earlier; duplicate
  sequences void the argument: they give H_t = 0 for any prefix).
* ``usage_eff_mean`` / ``usage_frac_mean``: mean over t of the effective codebook usage 2^{H(z_t)}
  (marginal entropy of position t; curve ``usage_eff`` with step = t) and of 2^{H(z_t)} / K_t.

Token ids outside [0, K_t) raise :class:`bench.metrics.token_stats.TokenIdError` (a ValueError).
"""
from __future__ import annotations

import math

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, model_serializer

from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.metrics.token_stats import check_token_ids, cumulative_cliff, effective_usage
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
    """t* = the first t with sum_{s<t} log2 K_s >= log2 N (= ceil(log2 N / log2 K) for uniform K).

    A lower bound on the position from which H_t stays 0: with less prefix capacity than log2 N bits
    some prefix is shared by several distinct sequences (if the N images give N distinct ones)."""
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


# cliff_frac at this value is left out of the resolved params (and so of the config hash), like
# float32 precision: runs and the ci baseline from before cliff_frac existed keep their identity.
# Another value is hashed. Do not change this constant (change the field's default instead).
UNHASHED_CLIFF_FRAC = 0.9


class EntropyParams(MetricParams):
    n: int | None = Field(None, gt=0, description="first n train images (None = all)")
    eps: float = Field(0.5, ge=0, description="bits at or below which H_t counts as collapsed (next token nearly "
                       "determined): the threshold of cliff_position")
    cliff_frac: float = Field(UNHASHED_CLIFF_FRAC, gt=0, lt=1, description="fraction of the total entropy sum_t H_t "
                              "that the first cliff_frac tokens carry (the stable cliff measure)")

    @model_serializer(mode="wrap")
    def _omit_unhashed_default(self, handler):
        out = handler(self)
        if self.cliff_frac == UNHASHED_CLIFF_FRAC:
            out.pop("cliff_frac", None)
        return out


@register_metric("entropy")
class PositionEntropy(Metric):
    """Per-position conditional entropy of train tokens, cliff position and predicted t*."""

    requires = ("tokenize",)
    Params = EntropyParams

    @classmethod
    def columns(cls, params):
        return {
            # descriptive statistics of the token distribution: neither higher nor lower is better
            "cliff_position": Column(f"entropy cliff t (threshold: first H_t<={params.eps} bits; jumps)", None,
                                     "position", short="cliff"),
            "cliff_frac": Column(f"entropy cliff x (tokens carrying {params.cliff_frac:g} of sum H_t)", None,
                                 "tokens", short="xcliff"),
            "t_star": Column("predicted t* (earliest possible cliff)", None, "position", short="t*"),
            "entropy_first_token": Column("H_0", None, "bits", short="H0",
                                          uncertainty="delta method over train images (plug-in H_0)"),
            "entropy_auc": Column("sum_t H_t (area under H_t)", None, "bits", short="sumH"),
            "usage_eff_mean": Column("effective codes per position (mean 2^H(z_t))", None, "codes", short="use"),
            "usage_frac_mean": Column("effective usage / K_t (mean over t)", None, "fraction", short="use/K"),
        }

    def compute(self, adapter, ctx, params):
        train = ctx.dataset.train.head(params.n)
        sizes = adapter.codebook_sizes
        tokens = check_token_ids(adapter.encode(train.images), sizes, f"entropy ({adapter.registry_name})")
        h = conditional_entropy_per_position(tokens)
        usage = effective_usage(tokens)
        for t, v in enumerate(h.tolist()):
            ctx.log_metric("entropy_bits", v, t)
        for t, v in enumerate(usage.tolist()):
            ctx.log_metric("usage_eff", v, t)
        ctx.log_param("entropy.cliff_frac", params.cliff_frac)
        t_star = predicted_cliff(sizes, len(train))
        cliff = cliff_position(h, params.eps)
        xcliff = cumulative_cliff(h, params.cliff_frac)
        self._plot(h, sizes, t_star, cliff, xcliff, ctx)
        # cliff and t* are positions (t* is not even random): no stderr; H_0's is its delta-method SE
        return check_finite({"cliff_position": cliff, "t_star": t_star, "entropy_first_token": float(h[0]),
                             "entropy_first_token_stderr": entropy_stderr(np.asarray(tokens)[:, 0]),
                             "cliff_frac": xcliff, "entropy_auc": float(h.sum()),
                             "usage_eff_mean": float(usage.mean()),
                             "usage_frac_mean": float((usage / np.asarray(sizes, dtype=np.float64)).mean())},
                            "entropy")

    @staticmethod
    def _plot(h, sizes, t_star, cliff, xcliff, ctx):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(len(h)), h, marker="o", label="H_t (train tokens)")
        ax.plot(range(len(sizes)), np.log2(sizes), ls=":", label="log2 K_t")
        ax.axvline(t_star, color="k", ls="--", label=f"t*={t_star} (earliest possible cliff)")
        ax.axvline(cliff, color="r", ls="-.", alpha=0.6, label=f"threshold cliff={cliff}")
        ax.axvline(xcliff, color="g", ls="-", alpha=0.6, label=f"cumulative cliff x={xcliff:.2f}")
        ax.set_xlabel("position t")
        ax.set_ylabel("bits")
        ax.set_title(f"{ctx.method.name} seed {ctx.seed}: per-position conditional entropy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        (ctx.artifact_dir / "plots").mkdir(parents=True, exist_ok=True)
        fig.savefig(ctx.artifact_dir / "plots" / "entropy.png", dpi=100)
        plt.close(fig)
