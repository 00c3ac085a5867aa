"""Interval estimates and tests for the leaderboard and the claims, chosen by sample size.

Two sources of uncertainty reach the leaderboard:

* **seed spread**: the spread of a cell's value over training seeds (n = seeds, ddof=1);
* **sampling error**: the within-cell standard error over the evaluation items that a metric logs
  as ``<key>_stderr`` (test images, test tokens' images, questions, the images of an FD pair).

With one seed only the sampling error is known; with >= 2 seeds the standard error of the seed
mean combines both, conservatively, as ``SE^2 = s^2 / n + mean(se_i^2)`` (the seeds share the
evaluation items, so their sampling error does not average out; s^2 already carries part of it,
which makes this an upper bound). Tests, with their calibration (checked by simulation under the
null in tests/test_stats.py):

* ``welch_interval``: Welch-Satterthwaite t interval of a linear combination of seed means (few
  seeds: holds its level for normal data, the 3-vs-3 false-positive rate is <= 5 %);
* ``permutation_p``: exact two-sample permutation test of a mean difference (every relabelling up
  to 20,000, else a seeded Monte Carlo of 20,000): exact level, but 3 vs 3 has 20 relabellings, so
  it can never reach p < 0.1 (it then says so rather than a verdict);
* ``z_interval``: normal interval from item-level standard errors (one seed: sampling error only);
* ``percentile_bootstrap``: only from :data:`BOOTSTRAP_MIN_SEEDS` seeds per method on (below, its
  3-vs-3 false-positive rate is ~20 % at a nominal 5 %, measured).
"""
from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from typing import Sequence

import numpy as np

BOOTSTRAP_MIN_SEEDS = 30  # simulated null, 95 % percentile interval of a mean difference: n=20 -> 6.4 %, n=30 -> 5.3 %
PERMUTATION_EXACT_MAX = 20_000
SEED_SPREAD, SAMPLING, BOTH = "seed spread", "sampling error", "seed spread + sampling error"
MODEL, SAMPLING_MODEL = "seed-noise model", "sampling error + seed-noise model"  # one seed, sd from bench.seed_noise


def t_quantile(level: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df)) if math.isfinite(df) else float(stats.norm.ppf(0.5 + level / 2))


def welch_interval(terms: Sequence[tuple[float, Sequence[float]]], const: float = 0.0, level: float = 0.95):
    """Welch interval of ``const + sum_i c_i mean(x_i)`` for terms ``(c_i, x_i)``, each x_i >= 2 values.

    Returns ``(estimate, lo, hi, p, df)``: p is the two-sided p-value of H0: estimate = 0. A zero
    variance gives a point interval (p = 0 if the estimate differs from 0, else 1), df = inf.
    """
    from scipy import stats

    est, var, den = const, 0.0, 0.0
    for c, xs in terms:
        if c == 0:
            continue
        n, m, s2 = len(xs), statistics.fmean(xs), statistics.variance(xs)
        est += c * m
        v = c * c * s2 / n
        var += v
        den += v * v / (n - 1)
    if var == 0:
        return est, est, est, (0.0 if est != 0 else 1.0), math.inf
    df = var * var / den if den > 0 else math.inf
    se = math.sqrt(var)
    q = t_quantile(level, df)
    return est, est - q * se, est + q * se, float(2 * stats.t.sf(abs(est) / se, df)), df


def z_interval(est: float, se: float, level: float = 0.95) -> tuple[float, float, float]:
    """``(lo, hi, p)``: the normal interval est ± z se and the two-sided p of H0: 0 (se > 0)."""
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + level / 2))
    p = float(2 * stats.norm.sf(abs(est) / se)) if se > 0 else (0.0 if est else 1.0)
    return est - z * se, est + z * se, p


def permutation_p(a: Sequence[float], b: Sequence[float], seed: int = 0) -> tuple[float, int]:
    """Two-sided permutation p-value of mean(a) - mean(b) = 0; returns ``(p, relabellings)``.

    Exact (every split of the pooled values) when there are at most :data:`PERMUTATION_EXACT_MAX`
    splits, else a seeded Monte Carlo with that many (p includes the observed split). The smallest
    attainable p is 1/relabellings... for 3 vs 3: 2/20 = 0.1.
    """
    x = np.asarray(list(a) + list(b), dtype=float)
    na, n = len(a), len(a) + len(b)
    obs = abs(np.mean(a) - np.mean(b))
    total = math.comb(n, na)
    tot_sum = x.sum()
    if total <= PERMUTATION_EXACT_MAX:
        idx = np.array(list(itertools.combinations(range(n), na)))
        sa = x[idx].sum(1)
        count = len(idx)
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((PERMUTATION_EXACT_MAX - 1, n)), axis=1)[:, :na]
        sa = np.concatenate([[np.sum(a)], x[perms].sum(1)])
        count = len(sa)
    diffs = np.abs(sa / na - (tot_sum - sa) / (n - na))
    p = float(np.mean(diffs >= obs - 1e-12 * max(1.0, obs)))
    return p, int(min(total, count))


def percentile_bootstrap(data: Sequence[Sequence[float]], fn, level: float, seed: int, resamples: int = 10_000):
    """Percentile interval of ``fn(list of resampled means)`` (each sample resampled independently).

    Returns ``(lo, hi, distribution)``. Calibrated only with >= :data:`BOOTSTRAP_MIN_SEEDS` values per sample.
    """
    rng = np.random.default_rng(seed)
    means = []
    for xs in data:
        arr = np.asarray(xs, dtype=float)
        if len(arr) == 0:
            means.append(np.full(resamples, np.nan))
            continue
        means.append(arr[rng.integers(0, len(arr), size=(resamples, len(arr)))].mean(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.asarray(fn(means), dtype=float) * np.ones(resamples)
    lo, hi = np.nanquantile(dist, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi), dist


def bootstrap_stderr(values: np.ndarray, statistic, resamples: int, seed: int) -> float | None:
    """Seeded bootstrap standard error (ddof=1) of ``statistic(values[idx])`` over items (axis 0)."""
    if resamples < 2 or len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    out = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(resamples)]
    return float(np.std(out, ddof=1))


def satterthwaite(parts: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variance components ``(variance, df)``
    (df = inf for a known variance, e.g. a sampling error over thousands of items)."""
    total = sum(v for v, _ in parts)
    den = sum(v * v / df for v, df in parts if v > 0 and math.isfinite(df))
    if total <= 0 or den <= 0:
        return math.inf
    return total * total / den


@dataclass(frozen=True)
class Estimate:
    """A cell mean with its standard error and what the error measures (``source``; None: unknown).

    ``df``: degrees of freedom of ``se`` (None: seeds - 1, or a normal interval with one seed).
    ``parts``: the variance components ``(per-seed variance, df, sampling variance)`` the SE came from
    (:func:`seeds_needed` scales the first by the seed count).
    """

    mean: float
    se: float | None
    n_seeds: int
    source: str | None
    df: float | None = None
    seed_var: float | None = None  # variance of ONE seed's value around the method's mean (s^2 or sd_model^2)
    seed_df: float | None = None
    sampling_var: float = 0.0  # mean(se_i^2): does not shrink with more seeds
    seed_source: str | None = None  # one estimate shared by several terms (a seed-noise model's key): its df counts once

    @property
    def dof(self) -> float:
        if self.df is not None:
            return self.df
        return self.n_seeds - 1 if self.n_seeds > 1 else math.inf

    def ci(self, level: float = 0.95) -> tuple[float, float] | None:
        """Normal (1 seed, sampling error only), t (df = seeds - 1) or Satterthwaite-t (one seed with a
        seed-noise model) interval of the mean; None without an se."""
        if self.se is None:
            return None
        q = t_quantile(level, self.dof)
        return self.mean - q * self.se, self.mean + q * self.se

    @property
    def has_seed_noise(self) -> bool:
        """Whether the SE includes the between-seed spread (>= 2 seeds, or one seed with a model)."""
        return self.seed_var is not None


def estimate(values: Sequence[float], stderrs: Sequence[float] | None = None,
             noise: tuple[float, float] | None = None, noise_source: str | None = None) -> Estimate | None:
    """Mean over seeds with its SE: seed spread (>= 2 seeds), sampling error (per-seed ``stderrs``,
    all present), or both combined (``SE^2 = s^2/n + mean(se_i^2)``). With one seed and ``noise`` =
    ``(sd_seed, df)`` from a seed-noise model: ``SE^2 = se^2 + sd_seed^2``, Satterthwaite df.
    None without values."""
    vals = [float(v) for v in values]
    if not vals:
        return None
    n = len(vals)
    m = statistics.fmean(vals)
    ses = [float(s) for s in stderrs] if stderrs is not None and len(stderrs) == n else None
    s2 = statistics.variance(vals) if n > 1 else None
    samp = statistics.fmean([s * s for s in ses]) if ses else None
    if s2 is not None:
        spread = s2 / n
        if samp is not None:
            return Estimate(m, math.sqrt(spread + samp), n, BOTH,
                            satterthwaite([(spread, n - 1), (samp, math.inf)]), s2, n - 1, samp)
        return Estimate(m, math.sqrt(spread), n, SEED_SPREAD, None, s2, n - 1, 0.0)
    if noise is not None:
        sd, df = noise
        var = sd * sd + (samp or 0.0)
        return Estimate(m, math.sqrt(var), 1, SAMPLING_MODEL if samp is not None else MODEL,
                        satterthwaite([(sd * sd, df), (samp or 0.0, math.inf)]), sd * sd, df, samp or 0.0,
                        noise_source)
    if samp is not None:
        return Estimate(m, math.sqrt(samp), n, SAMPLING, None, None, None, samp)
    return Estimate(m, None, n, None)


def combine(terms: Sequence[tuple[float, Estimate]], const: float = 0.0, level: float = 0.95):
    """Interval of ``const + sum_i c_i mean_i`` from independent :class:`Estimate` s: ``(est, lo, hi, se,
    df, p)``, Satterthwaite df over every variance component; None when a term has no SE."""
    from scipy import stats

    est, parts, shared = const, [], {}
    for c, e in terms:
        if c == 0:
            continue
        if e is None or e.se is None:
            return None
        est += c * e.mean
        if e.seed_var is not None:
            v, df = c * c * e.seed_var / e.n_seeds, e.seed_df if e.seed_df is not None else math.inf
            if e.seed_source is not None:  # the same estimated SD in several terms: one component, its own df
                acc = shared.setdefault(e.seed_source, [0.0, df])
                acc[0] += v
            else:
                parts.append((v, df))
        parts.append((c * c * e.sampling_var, math.inf))
    parts += [(v, df) for v, df in shared.values()]
    var = sum(v for v, _ in parts)
    if var <= 0:
        return est, est, est, 0.0, math.inf, (0.0 if est != 0 else 1.0)
    se, df = math.sqrt(var), satterthwaite(parts)
    q = t_quantile(level, df)
    p = float(2 * (stats.t.sf(abs(est) / se, df) if math.isfinite(df) else stats.norm.sf(abs(est) / se)))
    return est, est - q * se, est + q * se, se, df, p


def seeds_needed(terms: Sequence[tuple[float, Estimate]], effect: float, level: float = 0.95,
                 max_seeds: int = 1000) -> int | None:
    """About how many seeds per arm would give an interval of half-width below ``|effect|`` with the
    same per-seed spread and sampling errors (50 % power at the observed effect); None when no seed
    count up to ``max_seeds`` would (the sampling error alone is too large, or there is no spread)."""
    if not effect or not math.isfinite(effect):
        return None
    comps = [(c * c * (e.seed_var or 0.0), e.seed_df or math.inf, c * c * e.sampling_var)
             for c, e in terms if c != 0 and e is not None]
    if not comps or any(e is None or e.seed_var is None for c, e in terms if c != 0):
        return None
    for n in range(2, max_seeds + 1):
        parts = [(v / n, n - 1) for v, _, _ in comps] + [(s, math.inf) for _, _, s in comps]
        var = sum(v for v, _ in parts)
        if var > 0 and t_quantile(level, satterthwaite(parts)) * math.sqrt(var) < abs(effect):
            return n
    return None


def difference(a: Estimate | None, b: Estimate | None, level: float = 0.95):
    """``(delta, lo, hi)`` of a.mean - b.mean (interval from the two SEs, Satterthwaite df over their
    variance components), or None when either has no SE."""
    if a is None or b is None or a.se is None or b.se is None:
        return None
    r = combine([(1.0, a), (-1.0, b)], 0.0, level)
    if r is None:
        return None
    d, lo, hi = r[0], r[1], r[2]
    return d, lo, hi
