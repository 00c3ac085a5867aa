"""Statistics of discrete token sequences (numpy only; no torch): the pieces of the ``entropy``
and ``probe`` metrics that go beyond the per-position conditional entropy H_t.

* :func:`check_token_ids`: token t must lie in [0, K_t) (the :class:`bench.adapter.Tokenizer`
  contract); a negative or too-large id silently gives wrong counts otherwise.
* :func:`cumulative_cliff`: a cliff position that does not jump (VCQ, arXiv 2605.06207, Entropy
  Cliff): the real-valued number of leading tokens whose conditional entropies add up to a
  fraction of the sequence's total plug-in entropy.
* :func:`effective_usage`: 2^{H(z_t)} per position, the marginal (not conditional) entropy.
* :func:`prefix_label_information`: plug-in I(y; z_<k) from the same prefix grouping as H_t.
* :func:`prefix_bits`: the prefix capacity sum_{s<k} log2 K_s.
"""
from __future__ import annotations

import math

import numpy as np

from bench.errors import MetricError


class TokenIdError(MetricError, ValueError):
    """A token id outside [0, K_t) for its position t (a ValueError and a one-line MetricError)."""


def check_token_ids(tokens, codebook_sizes: list[int], where: str) -> np.ndarray:
    """tokens int [N, L] -> the same as int64 ndarray; :class:`TokenIdError` naming the first bad
    position t and value unless every token satisfies 0 <= z_t < K_t (``codebook_sizes``, length L)."""
    z = np.asarray(tokens, dtype=np.int64)
    if z.ndim != 2 or z.shape[1] != len(codebook_sizes):
        raise TokenIdError(f"{where}: tokens of shape {tuple(z.shape)}, expected [N, {len(codebook_sizes)}] "
                           f"(one column per codebook size K_t)")
    k = np.asarray(codebook_sizes, dtype=np.int64)
    bad = (z < 0) | (z >= k[None, :])
    if bad.any():
        i, t = (int(a[0]) for a in np.nonzero(bad))
        raise TokenIdError(f"{where}: token id {int(z[i, t])} at position t={t} (sequence {i}) is outside "
                           f"[0, K_t={int(k[t])}): the tokenizer's encode breaks its codebook_sizes contract")
    return z


def prefix_groups(z: np.ndarray) -> list[np.ndarray]:
    """tokens int64 [N, L] -> ids[k] int64 [N] for k = 0..L: sequences share ids[k][i] iff they share
    the prefix z_<k (ids[0] is all zeros). The grouping :func:`conditional_entropy_per_position` uses."""
    n, length = z.shape
    ids = [np.zeros(n, dtype=np.int64)]
    for t in range(length):
        base = int(z[:, t].max()) + 1 if n else 1
        ids.append(np.unique(ids[-1] * base + z[:, t], return_inverse=True)[1].reshape(-1).astype(np.int64))
    return ids


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return max(0.0, float(-(p * np.log2(p)).sum()))


def conditional_label_entropy(group: np.ndarray, labels: np.ndarray) -> float:
    """Plug-in H(y | g) in bits: sum over groups c of (n_c / N) * H(labels within c).
    group: dense ids int64 [N] (0..R-1, as :func:`prefix_groups` gives), labels int64 [N] >= 0."""
    c = int(labels.max()) + 1
    pairs, cnt = np.unique(group * c + labels, return_counts=True)
    g_tot = np.bincount(group)
    return max(0.0, float(-(cnt * np.log2(cnt / g_tot[pairs // c])).sum() / len(group)))


def prefix_label_information(tokens: np.ndarray, labels, ks: list[int]) -> dict[int, dict[str, float]]:
    """Plug-in mutual information I(y; z_<k) = H(y) - H(y | z_<k) in bits, for each k in ``ks``.

    tokens int64 [N, L] (already checked), labels int [N]; k in 1..L. Per k: ``mi`` (bits, in
    [0, H(y)]), ``groups`` (distinct prefixes of length k) and ``bias`` (the first-order
    Miller-Madow bias of the plug-in estimate, (R_yz - R_y - R_z + 1) / (2 N ln 2) bits, R = the
    occupied cells; it is positive: plug-in MI over-estimates). Once every prefix is unique the
    plug-in value is H(y) whatever the tokens mean: read it next to ``groups`` / N.
    """
    z = np.asarray(tokens, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != len(z):
        raise ValueError(f"{len(y)} labels for {len(z)} token sequences")
    if len(y) == 0 or y.min() < 0:
        raise ValueError("labels must be a non-empty array of class ids >= 0")
    n = len(y)
    h_y = _entropy_bits(np.bincount(y))
    r_y = int((np.bincount(y) > 0).sum())
    ids = prefix_groups(z)
    out = {}
    for k in ks:
        g = ids[k]
        r_z = int(g.max()) + 1 if n else 0
        r_yz = len(np.unique(g * (int(y.max()) + 1) + y))
        out[k] = {"mi": max(0.0, h_y - conditional_label_entropy(g, y)), "groups": float(r_z),
                  "bias": (r_yz - r_y - r_z + 1) / (2 * n * math.log(2))}
    return out


def prefix_bits(codebook_sizes: list[int], k: int) -> float:
    """Prefix capacity sum_{s<k} log2 K_s in bits (k clipped to L)."""
    return float(sum(math.log2(s) for s in codebook_sizes[:k]))


def cumulative_cliff(h: np.ndarray, frac: float) -> float:
    """The real-valued x in [0, L] where C(x) = frac * C(L), C(t) = sum_{s<t} H_s linearly
    interpolated between integers: the number of leading tokens that carry ``frac`` of the total
    plug-in entropy sum_t H_t. It moves continuously with the curve (no threshold to cross: a
    small change of one H_t moves it by about that change / H at the crossing). 0.0 when the total
    is 0 (every sequence identical). h float [L] >= 0 bits, frac in (0, 1)."""
    h = np.asarray(h, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(h)])
    target = frac * c[-1]
    if c[-1] <= 0:
        return 0.0
    t = int(np.searchsorted(c, target, side="left"))  # first integer with C(t) >= target
    if t == 0:
        return 0.0
    return float(t - 1 + (target - c[t - 1]) / h[t - 1])


def effective_usage(z: np.ndarray) -> np.ndarray:
    """tokens int64 [N, L] -> 2^{H(z_t)} per position, float64 [L], in [1, K_t]: the number of
    equally used codes with the same marginal entropy (plug-in)."""
    return np.array([2.0 ** _entropy_bits(np.bincount(z[:, t])) for t in range(z.shape[1])])
