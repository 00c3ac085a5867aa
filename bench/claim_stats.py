"""The statistics of one comparison of a claim or premise: its interval and verdict.

Called by :mod:`bench.claims` (which assembles premises, degenerate arms and A/A into a verdict) and
:mod:`bench.aa`.

Statistics (``test`` and ``level`` of the claim). Each comparison ``lhs OP rhs`` is read as a statement
about D = lhs - rhs, the difference of seed means; its two-sided ``level`` confidence interval is:

* ``welch``: the Welch-Satterthwaite t interval of the linear combination sum_i c_i mean_i (for two
  methods: Welch's unequal-variance t-test; the p-value of H0: D = 0 is reported). Needs a linear
  comparison (or ``|linear| OP constant``).
* ``permutation``: the exact two-sample permutation test of a difference of two methods' seed means
  (:func:`bench.stats.permutation_p`; ``k * (a - b) + c OP 0`` shifts a by c/k), exact level at any
  seed count; it gives a p-value, not an interval: supported/contradicted when p <= 1 - level, by the
  sign of the difference. Too few seeds to ever reach that p (3 vs 3: smallest p is 0.1) is
  inconclusive, saying so. Only for a comparison of two metric values (no equivalence ``|X| <= c``).
* ``bootstrap``: a percentile interval from 10,000 resamples of each (metric, method)'s seeds
  (independently, fixed RNG seed derived from the claim name), for any expression. Only from
  :data:`bench.stats.BOOTSTRAP_MIN_SEEDS` (30) seeds per method, where a simulated null holds its
  level; below, a linear comparison falls back to Welch (3 vs 3: the bootstrap calls a side ~20 %
  of the time at a nominal 5 %), a non-linear one is inconclusive.
* one seed of some method: the interval of the linear combination from each one-seed value's
  within-cell standard error (``<key>_stderr``) **and** the between-seed SD of the suite's measured
  seed-noise model (:mod:`bench.seed_noise`): ``SE^2 = se^2 + sd_seed^2`` per value, Satterthwaite
  t (basis "1 seed + seed-noise model (n seeds of m)"); a method with >= 2 seeds contributes its
  combined SE (:func:`bench.stats.estimate`). Without a current model the clause is *inconclusive:
  one seed, no seed-noise model*: the sampling error alone is not the between-seed spread (measured
  on the default suite: the one-seed sampling-only test decided 45 % of A/A pairs at a nominal 5 %).
  :class:`Context` ``sampling_only`` keeps that old test for the A/A "before" column only.

Verdict of a comparison ``D < 0`` (``>`` symmetric): *supported* if the interval lies below 0,
*contradicted* if it lies above 0, *inconclusive* if it contains 0 (overlap), or if some method has
no value (or, with one seed, no sampling error). An equivalence ``|X| <= c`` (c without metrics) is *supported* if
X's interval lies inside [-c, c], *contradicted* if it lies wholly outside, else inconclusive
(``|X| >= c`` the other way round). ``and``: contradicted if any part is, supported if all are;
``or``: supported if any part is, contradicted if all are; else inconclusive.
"""
from __future__ import annotations

import ast
import math
import statistics
from dataclasses import dataclass
from typing import Any

from bench.claim_grammar import ParsedAssertion, _evaluate, _form, _Form, _linear, _ref_index
from bench.stats import (BOOTSTRAP_MIN_SEEDS, combine, estimate, percentile_bootstrap, permutation_p, seeds_needed,
                         welch_interval, z_interval)

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
UNTESTABLE, DEGENERATE = "untestable here", "degenerate"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, UNTESTABLE, DEGENERATE)
HOLDS, FAILS, UNSETTLED = "holds", "fails", "not established"  # a premise's state
BOOTSTRAP_RESAMPLES = 10_000
MIN_SEEDS = 2
ONE_SEED = "1 seed: sampling uncertainty only"  # the old one-seed test (Context.sampling_only)
NO_MODEL = "1 seed: no seed-noise model"
ACROSS_SEEDS = "across seeds"
AA_MAX = 0.10  # a decided verdict whose test decides more A/A splits than this is not trusted


@dataclass
class Context:
    """What verdicts are evaluated against, besides the rows.

    ``noise``: the suite's current seed-noise model (None: none, or refused; ``noise_note`` says which).
    ``sampling_only``: the old one-seed test (sampling error alone), kept for the A/A "before" column.
    ``aa``: compute each claim's A/A false-decision rate from the model's per-seed values.
    """

    noise: Any = None  # bench.seed_noise.SeedNoiseModel
    noise_note: str = "no seed-noise model"
    sampling_only: bool = False
    aa: bool = True


def _fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return str(x)
    return f"{x:.4g}" if x == 0 or 1e-3 <= abs(x) < 1e5 else f"{x:.3e}"


def _interval_welch(lin: tuple[dict[int, float], float], data: list[list[float]], level: float):
    coef, const = lin
    return welch_interval([(c, data[i]) for i, c in coef.items()], const, level)


def _interval_bootstrap(expr: ast.AST, data: list[list[float]], level: float, tol, seed: int):  # n >= BOOTSTRAP_MIN_SEEDS
    lo, hi, dist = percentile_bootstrap(data, lambda means: _evaluate(expr, means, tol), level, seed,
                                        BOOTSTRAP_RESAMPLES)
    est = float(_evaluate(expr, [statistics.fmean(x) for x in data], tol))
    return est, lo, hi, dist


def _decide(form: _Form, lo: float, hi: float, bound: float | None) -> str:
    if form.kind == "sign":
        if form.want_negative:
            ok, bad = (hi < 0 if form.strict else hi <= 0), (lo >= 0 if form.strict else lo > 0)
        else:
            ok, bad = (lo > 0 if form.strict else lo >= 0), (hi <= 0 if form.strict else hi < 0)
    else:
        c = bound
        inside = -c <= lo and hi <= c
        outside = lo > c or hi < -c
        ok, bad = (inside, outside) if form.within else (outside, inside)
    return SUPPORTED if ok else CONTRADICTED if bad else INCONCLUSIVE


def _identical_arms(cmp: ast.Compare, parsed: ParsedAssertion, samples) -> str | None:
    """Why the clause's arms are identical (every metric two of its methods share has bit-identical
    values on every seed), or None."""
    by_key: dict[str, list[str]] = {}
    for i in sorted({i for n in ast.walk(cmp) if (i := _ref_index(n)) is not None}):
        ref = parsed.refs[i]
        by_key.setdefault(ref.key, [])
        if ref.method not in by_key[ref.key]:
            by_key[ref.key].append(ref.method)
    shared = {k: ms for k, ms in by_key.items() if len(ms) > 1}
    if not shared:
        return None
    for key, ms in shared.items():
        vecs = [samples.get(m, {}).get(key) for m in ms]
        if not vecs[0] or any(v != vecs[0] for v in vecs[1:]):
            return None
    return "; ".join(f"{' and '.join(ms)} have bit-identical {k} on every seed ({len(samples[ms[0]][k])})"
                     for k, ms in shared.items())


def _evaluate_compare(cmp: ast.Compare, parsed: ParsedAssertion, samples, test: str, level: float,
                      tol: float | None, seed: int, ctx: Context | None = None) -> dict:
    ctx = ctx or Context()
    src = ast.unparse(cmp)
    used = sorted({i for n in ast.walk(cmp) if (i := _ref_index(n)) is not None})
    for i in used:
        src = src.replace(f"__ref{i}", str(parsed.refs[i]))
    data: list[list[float]] = [[] for _ in parsed.refs]
    described, problems, few = [], [], []
    for i in used:
        ref = parsed.refs[i]
        xs = samples.get(ref.method, {}).get(ref.key, [])
        data[i] = xs
        if not xs:
            problems.append(f"no values of {ref.key} for {ref.method} (method not run or metric not logged)")
            described.append(f"{ref}=— (n=0)")
            continue
        sd = f"±{_fmt(statistics.stdev(xs))}" if len(xs) > 1 else ""
        described.append(f"{ref}={_fmt(statistics.fmean(xs))}{sd} (n={len(xs)})")
        if len(xs) < MIN_SEEDS:
            few.append(str(ref))
    basis = ACROSS_SEEDS
    if few:
        basis = ONE_SEED if ctx.sampling_only else ctx.noise.label if ctx.noise is not None else NO_MODEL
    part = {"clause": src, "values": described, "basis": basis}
    if problems:
        part.update(verdict=INCONCLUSIVE, why="; ".join(problems),
                    detail=f"{src}: {'; '.join(described)}; {'; '.join(problems)}")
        return part
    same = _identical_arms(cmp, parsed, samples)
    if same:
        part.update(verdict=DEGENERATE, why=f"the arms are identical: {same}",
                    detail=f"{src}: {'; '.join(described)}; degenerate: the arms are identical ({same}): "
                           "the comparison cannot come out either way")
        return part
    try:
        if few:  # some method has one seed: its sampling error plus the seed-noise model's spread
            ses = [samples.get(parsed.refs[i].method, {}).get(parsed.refs[i].key + "_stderr", [])
                   if i in used else [] for i in range(len(parsed.refs))]
            if ctx.sampling_only:
                return _evaluate_sampling(cmp, parsed, data, ses, described, part, src, level, tol, few)
            if ctx.noise is None:
                why = (f"one seed ({', '.join(few)}), {ctx.noise_note}: the sampling error alone is not the "
                       "between-seed spread; run >= 2 seeds or measure the model")
                part.update(verdict=INCONCLUSIVE, why=why, detail=f"{src}: {'; '.join(described)}; {why}")
                return part
            return _evaluate_one_seed(cmp, parsed, data, ses, described, part, src, level, tol, few, ctx.noise)
        return _evaluate_stats(cmp, parsed, data, described, part, src, test, level, tol, seed)
    except (ZeroDivisionError, FloatingPointError, OverflowError, ValueError) as e:
        why = "division by zero" if isinstance(e, ZeroDivisionError) else f"{type(e).__name__}: {e}"
        part.update(verdict=INCONCLUSIVE, detail=f"{src}: {'; '.join(described)}; cannot evaluate ({why})")
        return part


def _evaluate_sampling(cmp, parsed, data, ses, described, part, src, level, tol, few) -> dict:
    """One seed (of some method): a normal interval of the linear combination from each value's
    within-cell standard error (``<key>_stderr``; >= 2 seeds: the combined SE of :func:`bench.stats.estimate`)."""
    form = _form(cmp)
    bound = float(_evaluate(form.bound, [], tol)) if form.kind == "equiv" else None
    lin = _linear(form.expr, tol)
    pct = f"{100 * level:g}%"
    head = f"{src}: {'; '.join(described)}; {ONE_SEED} ({', '.join(few)})"
    if lin is None:
        part.update(verdict=INCONCLUSIVE, detail=f"{head}; the expression is not linear in the metrics, "
                                                 "so one seed's sampling errors do not give its interval")
        return part
    coef, const = lin
    est, var, missing = const, 0.0, []
    for i, c in coef.items():
        if c == 0:
            continue
        e = estimate(data[i], ses[i] if len(ses[i]) == len(data[i]) else None)
        if e is None or e.se is None:
            missing.append(str(parsed.refs[i]))
            continue
        est += c * e.mean
        var += c * c * e.se ** 2
    if missing:
        part.update(verdict=INCONCLUSIVE, detail=f"{head}; no sampling uncertainty logged for {', '.join(missing)} "
                                                 "(the metric writes no <key>_stderr): run >= 2 seeds")
        return part
    se = math.sqrt(var)
    lo, hi, p = z_interval(est, se, level)
    verdict = _decide(form, lo, hi, bound)
    what = "difference (lhs - rhs)" if form.kind == "sign" else f"inner difference vs ±{_fmt(bound)}"
    part.update(verdict=verdict, estimate=est, ci=[lo, hi], level=level, se=se, p_value=p,
                detail=f"{head}; {what} {_fmt(est)} ± {_fmt(se)} (se), {pct} CI [{_fmt(lo)}, {_fmt(hi)}], "
                       f"z p={_fmt(p)} -> {verdict}")
    return part


def _evaluate_one_seed(cmp, parsed, data, ses, described, part, src, level, tol, few, model) -> dict:
    """Some method has one seed: each one-seed value's SE is ``sqrt(se^2 + sd_seed^2)`` with the
    seed-noise model's SD (Satterthwaite t over the model's and the multi-seed terms' df)."""
    form = _form(cmp)
    bound = float(_evaluate(form.bound, [], tol)) if form.kind == "equiv" else None
    lin = _linear(form.expr, tol)
    head = f"{src}: {'; '.join(described)}; {model.label}"
    if lin is None:
        why = "the expression is not linear in the metrics, so one seed's errors do not give its interval"
        part.update(verdict=INCONCLUSIVE, why=why, detail=f"{head}; {why}")
        return part
    coef, const = lin
    terms, missing = [], []
    for i, c in coef.items():
        if c == 0:
            continue
        ref = parsed.refs[i]
        se_i = ses[i] if len(ses[i]) == len(data[i]) else None
        noise = None
        if len(data[i]) == 1:
            mn = model.noise(ref.key)
            if mn is None:
                missing.append(f"{ref} (the seed-noise model has no {ref.key})")
                continue
            noise = (mn.at(data[i][0]), mn.df)
        terms.append((c, estimate(data[i], se_i, noise, f"model:{ref.key}")))
    if missing:
        why = f"no seed-noise SD for {', '.join(missing)}: re-measure the model with this metric, or run >= 2 seeds"
        part.update(verdict=INCONCLUSIVE, why=why, detail=f"{head}; {why}")
        return part
    est, lo, hi, se, df, p = combine(terms, const, level)
    return _finish(part, form, bound, est, lo, hi, level, head, f"t p={_fmt(p)}, df={_fmt(df)}", terms,
                   se=se, p_value=p, df=df)


def _finish(part, form, bound, est, lo, hi, level, head, stat, terms=None, **extra) -> dict:
    """Decide from the interval and record it with its minimum detectable difference (the half-width)
    and, for an inconclusive sign comparison, the seeds per arm that would detect the estimate."""
    pct = f"{100 * level:g}%"
    what = "difference (lhs - rhs)" if form.kind == "sign" else f"inner difference vs ±{_fmt(bound)}"
    if not all(math.isfinite(x) for x in (est, lo, hi) + ((bound,) if bound is not None else ())):
        part.update(verdict=INCONCLUSIVE, estimate=est, ci=[lo, hi], level=level, why="interval not finite",
                    detail=f"{head}; {what} {_fmt(est)}, {pct} CI [{_fmt(lo)}, {_fmt(hi)}] "
                           "is not finite (division by zero?) -> inconclusive")
        return part
    verdict = _decide(form, lo, hi, bound)
    mde = (hi - lo) / 2
    more = f"; detectable |difference| >= {_fmt(mde)} (CI half-width)"
    need = None
    if verdict == INCONCLUSIVE and form.kind == "sign" and terms:
        need = seeds_needed(terms, est, level)
        more += (f"; ~{need} seeds per arm would detect {_fmt(est)}" if need else
                 f"; no seed count up to 1000 would detect {_fmt(est)} (sampling error or no spread)")
    part.update(verdict=verdict, estimate=est, ci=[lo, hi], level=level, mde=mde, seeds_needed=need, **extra,
                detail=f"{head}; {what} {_fmt(est)}, {pct} CI [{_fmt(lo)}, {_fmt(hi)}], {stat} -> {verdict}{more}")
    return part


def _evaluate_stats(cmp, parsed, data, described, part, src, test, level, tol, seed) -> dict:
    form = _form(cmp)
    bound = float(_evaluate(form.bound, [], tol)) if form.kind == "equiv" else None
    note = ""
    if test == "bootstrap" and min(len(x) for x in data if x) < BOOTSTRAP_MIN_SEEDS:
        # the percentile bootstrap is anti-conservative at few seeds (3 vs 3: ~20 % false positives at 5 %)
        if _linear(form.expr, tol) is None:
            part.update(verdict=INCONCLUSIVE, detail=f"{src}: {'; '.join(described)}; the bootstrap is not calibrated "
                        f"below {BOOTSTRAP_MIN_SEEDS} seeds per method and the expression is not linear (no Welch)")
            return part
        test, note = "welch", f" (bootstrap not calibrated below {BOOTSTRAP_MIN_SEEDS} seeds: Welch used)"
    if test == "permutation":
        return _evaluate_permutation(form, data, described, part, src, level, tol, seed)
    terms = None
    if test == "welch":
        lin = _linear(form.expr, tol)
        est, lo, hi, p, df = _interval_welch(lin, data, level)
        # the p-value of H0: D = 0 answers the sign question only; equivalence is read off the interval
        stat = (f"Welch p={_fmt(p)}, df={_fmt(df)}" if form.kind == "sign" else f"Welch df={_fmt(df)}") + note
        part.update(p_value=p, df=df)
        terms = [(c, estimate(data[i])) for i, c in lin[0].items() if c != 0]
    else:
        est, lo, hi, dist = _interval_bootstrap(form.expr, data, level, tol, seed)
        stat = f"bootstrap ({BOOTSTRAP_RESAMPLES} resamples)"
    return _finish(part, form, bound, est, lo, hi, level, f"{src}: {'; '.join(described)}", stat, terms)


def two_sample(form: _Form, tol: float | None) -> tuple[int, int, float, float] | None:
    """``(i, j, k, c)`` when the comparison's D is ``k * (ref_i - ref_j) + c`` with k > 0, else None."""
    if form.kind != "sign":
        return None
    lin = _linear(form.expr, tol)
    if lin is None:
        return None
    nz = {i: c for i, c in lin[0].items() if c != 0}
    if len(nz) != 2:
        return None
    (i, ci), (j, cj) = sorted(nz.items())
    if not (math.isfinite(ci) and math.isclose(ci, -cj, rel_tol=1e-12)):
        return None
    return (i, j, ci, lin[1]) if ci > 0 else (j, i, cj, lin[1])


def permutation_problem(parsed: ParsedAssertion, tol: float | None) -> str | None:
    """Why the permutation test cannot evaluate this assertion (None if it can)."""
    for node in ast.walk(parsed.tree):
        if isinstance(node, ast.Compare) and two_sample(_form(node), tol) is None:
            src = ast.unparse(node)
            for i, ref in enumerate(parsed.refs):
                src = src.replace(f"__ref{i}", str(ref))
            return (f"the permutation test compares two metric values (k*(a - b) + c < 0 and the like, no |X| <= c); "
                    f"use test: welch or bootstrap for {src!r}")
    return None


def _evaluate_permutation(form, data, described, part, src, level, tol, seed) -> dict:
    head = f"{src}: {'; '.join(described)}"
    ts = two_sample(form, tol)
    if ts is None:
        part.update(verdict=INCONCLUSIVE, detail=f"{head}; the permutation test needs a comparison of two metric "
                                                 "values (no equivalence, no non-linear expression)")
        return part
    i, j, k, const = ts
    a, b = [x + const / k for x in data[i]], list(data[j])
    est = k * (statistics.fmean(a) - statistics.fmean(b))
    p, count = permutation_p(a, b, seed)
    alpha = 1 - level
    p_min = (2 if len(a) == len(b) else 1) / math.comb(len(a) + len(b), len(a))
    stat = f"permutation p={_fmt(p)} ({count} relabellings, {len(a)} vs {len(b)} seeds)"
    part.update(estimate=est, p_value=p, level=level, relabellings=count)
    if p_min > alpha:
        part.update(verdict=INCONCLUSIVE, detail=f"{head}; difference (lhs - rhs) {_fmt(est)}, {stat}: the smallest "
                    f"attainable p is {_fmt(p_min)} > {_fmt(alpha)}, so no verdict at this level: run more seeds")
        return part
    if p > alpha or est == 0:
        verdict = INCONCLUSIVE
    else:
        verdict = SUPPORTED if (est < 0) == form.want_negative else CONTRADICTED
    part.update(verdict=verdict, detail=f"{head}; difference (lhs - rhs) {_fmt(est)}, {stat}, "
                                        f"reject at p <= {_fmt(alpha)} -> {verdict}")
    return part
