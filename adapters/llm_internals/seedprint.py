"""SeedPrint(s): does a model descend from a given random initialisation? (arXiv:2509.26404, 2602.05927)

The test, as in the official SeedPrints code (read for facts; Sec. 3 of arXiv:2509.26404):

1. Random probe inputs shared by both models: token ids ~ Uniform[0, V) [N, T] from a fixed
   generator (:func:`probe_inputs`; the "token" input mode, which gives each model its own
   embedding table).
2. Features: the last-layer, last-position hidden state after the final norm, before the LM head
   (:func:`features`), float32 [N, D].
3. Identity dimensions: the bottom-k entries of the mean over samples (the most "unwilling"
   dimensions); ``coset`` intersects the base's and the target's bottom-k sets, ``base`` keeps the
   base's (:func:`identity_dims`).
4. Row-wise softmax(H[:, idx] / 10) of both models' selected columns (when k' = 1 the softmax is
   the constant 1 and τ undefined, so the raw column is used: a degenerate case the official code,
   with k = 400, never meets; here the coset of two bottom-16 sets often has 1-4 dimensions).
5. Per-dimension Kendall τ_j (scipy) between base and target across the N samples; τ̄ = mean_j τ_j.
6. Analytic null: sd(τ) = sqrt(2(2N+5) / (9N(N−1))), z = τ̄ / (sd / sqrt(k')); p from the normal
   tail (:func:`p_value`: ``greater`` = Φ̄(z), our default, uniform under H0 and directional;
   ``code`` = min(1, 2Φ̄(z)) as the official code; ``two-sided`` = 2Φ̄(|z|)).

The analytic null treats the k' columns as independent; they are not (selected by their means,
coupled by the softmax), so :func:`empirical_null` also pushes independent N(0, I) matrices and a
shuffled-sample-order control through the full pipeline.

Baselines: :func:`linear_cka` (representation similarity on the same inputs; Kornblith et al. 2019)
and :func:`weight_cosine` (white-box: cosine of the flattened parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import stats


def probe_inputs(n: int, seq: int, vocab: int, seed: int = 42) -> torch.Tensor:
    """int64 [n, seq] of ids ~ Uniform[0, vocab) from ``torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, vocab, (n, seq), generator=g)


@torch.no_grad()
def features(model: torch.nn.Module, ids: torch.Tensor, batch: int = 100) -> np.ndarray:
    """float32 [N, D]: ``model.model(ids).last_hidden_state[:, -1, :]`` (after the final norm)."""
    model.eval()
    out = []
    for i in range(0, len(ids), batch):
        out.append(model.model(input_ids=ids[i: i + batch]).last_hidden_state[:, -1, :].float())
    return torch.cat(out).numpy().astype(np.float32)


def identity_dims(h_base: np.ndarray, h_target: np.ndarray, k: int,
                  mode: Literal["coset", "base"] = "coset") -> np.ndarray:
    """Sorted indices (int64) of the identity dimensions: bottom-k of each model's mean over samples,
    intersected (``coset``) or the base's (``base``). May be empty (coset of unrelated models)."""
    if h_base.shape[1] != h_target.shape[1]:
        raise ValueError(f"identity_dims: feature widths differ ({h_base.shape[1]} vs {h_target.shape[1]})")
    k = min(k, h_base.shape[1])
    b = set(np.argsort(h_base.mean(0), kind="stable")[:k].tolist())
    if mode == "base":
        return np.array(sorted(b), dtype=np.int64)
    t = set(np.argsort(h_target.mean(0), kind="stable")[:k].tolist())
    return np.array(sorted(b & t), dtype=np.int64)


def _softmax_rows(x: np.ndarray, temp: float) -> np.ndarray:
    z = x.astype(np.float64) / temp
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def tau_sd(n: int) -> float:
    """Standard deviation of Kendall's τ of n independent pairs under H0."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))


def p_value(z: float, alternative: Literal["greater", "code", "two-sided"] = "greater") -> float:
    if alternative == "greater":
        return float(stats.norm.sf(z))
    if alternative == "two-sided":
        return float(min(1.0, 2 * stats.norm.sf(abs(z))))
    return float(min(1.0, 2 * stats.norm.sf(z)))


@dataclass
class Verdict:
    """One SeedPrint test: mean τ̄ over k' = ``n_dims`` dims, z, analytic p (1.0 when k' = 0)."""

    tau: float
    z: float
    p: float
    n_dims: int


def seedprint_test(h_base: np.ndarray, h_target: np.ndarray, k: int, mode: Literal["coset", "base"] = "coset",
                   temp: float = 10.0, alternative: Literal["greater", "code", "two-sided"] = "greater") -> Verdict:
    """The fingerprint test between feature matrices float [N, D] of base and target (same N rows =
    same probe inputs). Returns :class:`Verdict`; ValueError on mismatched N."""
    if h_base.shape[0] != h_target.shape[0]:
        raise ValueError(f"seedprint_test: {h_base.shape[0]} vs {h_target.shape[0]} samples (same probes needed)")
    idx = identity_dims(h_base, h_target, k, mode)
    if len(idx) == 0:
        return Verdict(0.0, 0.0, 1.0, 0)
    if len(idx) >= 2:
        a, b = _softmax_rows(h_base[:, idx], temp), _softmax_rows(h_target[:, idx], temp)
    else:  # softmax over one column is the constant 1: τ would be undefined, so use the raw values
        a, b = h_base[:, idx].astype(np.float64), h_target[:, idx].astype(np.float64)
    taus = []
    for j in range(len(idx)):
        t = stats.kendalltau(a[:, j], b[:, j]).statistic
        taus.append(0.0 if not np.isfinite(t) else float(t))
    tau = float(np.mean(taus))
    n = h_base.shape[0]
    z = tau / (tau_sd(n) / math.sqrt(len(idx)))
    return Verdict(tau, z, p_value(z, alternative), len(idx))


def empirical_null(n: int, d: int, k: int, trials: int, seed: int, mode="coset", temp=10.0,
                   alternative="greater", shuffle_of: tuple[np.ndarray, np.ndarray] | None = None) -> list[Verdict]:
    """Verdicts under H0 through the full pipeline: ``trials`` pairs of independent N(0, I) matrices
    [n, d] (``shuffle_of`` None), or the given (base, target) pair with the target's sample order
    permuted (the shuffled-order control). Deterministic given ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        if shuffle_of is None:
            a, b = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        else:
            a, b = shuffle_of[0], shuffle_of[1][rng.permutation(len(shuffle_of[1]))]
        out.append(seedprint_test(a, b, k, mode, temp, alternative))
    return out


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of x float [N, D1], y float [N, D2] (same rows), in [0, 1] (Kornblith et al. 2019)."""
    x = x.astype(np.float64) - x.mean(0)
    y = y.astype(np.float64) - y.mean(0)
    num = np.linalg.norm(y.T @ x) ** 2
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(num / den) if den > 0 else 0.0


def weight_cosine(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Cosine similarity of all same-named, same-shaped parameters of ``a`` and ``b``, flattened."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    names = [n for n in pa if n in pb and pa[n].shape == pb[n].shape]
    if not names:
        raise ValueError("weight_cosine: the models share no parameter of equal name and shape")
    va = torch.cat([pa[n].detach().flatten().double() for n in names])
    vb = torch.cat([pb[n].detach().flatten().double() for n in names])
    return float(torch.nn.functional.cosine_similarity(va, vb, dim=0))


def ks_uniform(pvals: list[float]) -> float:
    """p-value of the one-sample KS test of ``pvals`` against Uniform[0, 1]."""
    return float(stats.kstest(np.asarray(pvals), "uniform").pvalue)
