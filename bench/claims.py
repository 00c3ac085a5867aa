"""Paper claims as tests: evaluate a suite's ``claims:`` over seeds and give verdicts.

The expression grammar and its parser live in :mod:`bench.claim_grammar` (re-exported here).

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

Before the statistics (:func:`evaluate_claim`): a clause whose arms have bit-identical values on
every seed is **degenerate: the arms are identical** (an ablation that leaves the model as it was);
a claim that ``needs:`` a premise that is not established (:func:`evaluate_premises`: a premise is
evaluated like a claim; *holds* = supported) is **untestable here**, naming the premise and its
value; with a seed-noise model, a decided claim whose A/A false-decision rate (:mod:`bench.aa`: the
same test on the model's method against itself with other seeds) exceeds :data:`AA_MAX` at the
claim's seed count is reported inconclusive, saying so. Each interval part carries its minimum
detectable difference (``mde``: the CI half-width) and, for an inconclusive sign comparison, about how
many seeds per arm would detect the observed difference (``seeds_needed``).

Verdict of a comparison ``D < 0`` (``>`` symmetric): *supported* if the interval lies below 0,
*contradicted* if it lies above 0, *inconclusive* if it contains 0 (overlap), or if some method has
no value (or, with one seed, no sampling error). An equivalence ``|X| <= c`` (c without metrics) is *supported* if
X's interval lies inside [-c, c], *contradicted* if it lies wholly outside, else inconclusive
(``|X| >= c`` the other way round). ``and``: contradicted if any part is, supported if all are;
``or``: supported if any part is, contradicted if all are; else inconclusive.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable


from bench.stats import (BOOTSTRAP_MIN_SEEDS, combine, estimate, percentile_bootstrap, permutation_p, seeds_needed,
                         welch_interval, z_interval)
from bench.claim_grammar import (ClaimSyntaxError, ParsedAssertion, Ref, _evaluate, _form, _Form, _linear,  # noqa: F401
                                 _ref_index, metric_key, parse_assertion, validate_assertion, welch_problem)

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


def context_for(suite: Any) -> Context:
    """The suite's :class:`Context`: its seed-noise model when current (:func:`bench.seed_noise.load_for`)."""
    from bench.seed_noise import load_for

    if not hasattr(suite, "name") or not hasattr(suite, "methods"):
        return Context()  # a suite-like object without an identity: no model can describe it
    model, note = load_for(suite)
    return Context(noise=model, noise_note=note)


# -- evaluation --------------------------------------------------------------------------------
@dataclass
class ClaimVerdict:
    """What the leaderboard shows under its table (and ``bench claims`` prints)."""

    name: str
    paper: str
    assertion: str
    verdict: str
    detail: str
    test: str = "welch"
    level: float = 0.95
    paper_numbers: dict = field(default_factory=dict)
    parts: list[dict] = field(default_factory=list)
    basis: str = ""  # ACROSS_SEEDS, the seed-noise model's label, NO_MODEL ("; "-joined when the clauses differ)
    needs: list[str] = field(default_factory=list)
    blocked_by: list[dict] = field(default_factory=list)  # the needed premises that are not established
    aa: dict | None = None  # bench.aa.AAResult.to_dict() at this claim's seed count, when measurable
    statistical_verdict: str = ""  # what the test alone said (before premises, degeneracy and A/A)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PremiseVerdict:
    """A premise's state (``holds`` / ``fails`` / ``not established``) with its evidence."""

    name: str
    assertion: str
    state: str
    detail: str
    parts: list[dict] = field(default_factory=list)
    basis: str = ""
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def value(self) -> str:
        """The premise's values and interval in one line (what an untestable claim quotes)."""
        bits = []
        for p in self.parts:
            v = "; ".join(p.get("values", []))
            if "ci" in p:
                v += f"; estimate {_fmt(p.get('estimate'))}, CI [{_fmt(p['ci'][0])}, {_fmt(p['ci'][1])}]"
            elif p.get("why"):
                v += f"; {p['why']}"
            bits.append(v)
        return " — ".join(bits)


def _samples(rows: Iterable[Any]) -> dict[str, dict[str, list[float]]]:
    """Rows (objects with .method and .per_seed, or a {method: {key: [values]}} dict) -> lookup."""
    if isinstance(rows, dict):
        return {m: {k: [float(x) for x in v] for k, v in d.items()} for m, d in rows.items()}
    return {r.method: {k: [float(x) for x in v] for k, v in r.per_seed.items()} for r in rows}


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


def _combine(node: ast.AST, parsed, samples, test, level, tol, seed, parts: list, ctx: Context | None = None) -> str:
    if isinstance(node, ast.BoolOp):
        vs = [_combine(v, parsed, samples, test, level, tol, seed, parts, ctx) for v in node.values]
        if DEGENERATE in vs:
            return DEGENERATE
        if isinstance(node.op, ast.And):
            return CONTRADICTED if CONTRADICTED in vs else SUPPORTED if all(v == SUPPORTED for v in vs) \
                else INCONCLUSIVE
        return SUPPORTED if SUPPORTED in vs else CONTRADICTED if all(v == CONTRADICTED for v in vs) \
            else INCONCLUSIVE
    part = _evaluate_compare(node, parsed, samples, test, level, tol, seed, ctx)
    parts.append(part)
    return part["verdict"]


def _claim_seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def evaluate_statement(spec: Any, samples: dict, ctx: Context | None = None) -> tuple[str, list[dict]]:
    """The test alone: ``(verdict, parts)`` of a claim's or premise's assertion over ``samples``
    ({method: {key: [values per seed]}})."""
    parsed = parse_assertion(spec.assert_)
    parts: list[dict] = []
    verdict = _combine(parsed.tree.body, parsed, samples, spec.test, spec.level, spec.tol, _claim_seed(spec.name),
                       parts, ctx)
    return verdict, parts


def _basis(parts: list[dict]) -> str:
    return "; ".join(dict.fromkeys(p.get("basis", ACROSS_SEEDS) for p in parts))


def evaluate_premises(suite: Any, rows: Iterable[Any], ctx: Context | None = None) -> list[PremiseVerdict]:
    """Each of the suite's premises: *holds* (its test supports it), *fails* (contradicts it) or *not
    established* (inconclusive: too few seeds, no seed-noise model, missing values, an interval across the bound)."""
    samples = _samples(rows)
    out = []
    for p in getattr(suite, "premises", []) or []:
        verdict, parts = evaluate_statement(p, samples, ctx)
        state = HOLDS if verdict == SUPPORTED else FAILS if verdict == CONTRADICTED else UNSETTLED
        out.append(PremiseVerdict(p.name, p.assert_, state, " — ".join(x["detail"] for x in parts), parts,
                                  _basis(parts), p.note))
    return out


def evaluate_claim(claim: Any, rows: Iterable[Any], ctx: Context | None = None,
                   premises: list[PremiseVerdict] | None = None) -> ClaimVerdict:
    """Evaluate one :class:`bench.suite.ClaimSpec` over the rows' per-seed values.

    ``ctx`` defaults to no seed-noise model (one-seed clauses are then inconclusive); ``premises``
    are the suite's evaluated premises (:func:`evaluate_premises`) that the claim's ``needs`` name.
    """
    ctx = ctx or Context()
    samples = _samples(rows)
    verdict, parts = evaluate_statement(claim, samples, ctx)
    statistical = verdict
    detail = " — ".join(p["detail"] for p in parts)  # no '|': the detail sits in a markdown table cell
    needs = list(getattr(claim, "needs", []) or [])
    by_name = {p.name: p for p in premises or []}
    blocked = [by_name.get(n) for n in needs if n not in by_name or by_name[n].state != HOLDS]
    blocked_doc = [{"name": n, "state": by_name[n].state if n in by_name else "not evaluated",
                    "value": by_name[n].value if n in by_name else ""} for n in needs
                   if n not in by_name or by_name[n].state != HOLDS]
    aa = None
    if ctx.aa and ctx.noise is not None and verdict != DEGENERATE:
        from bench.aa import claim_rate

        res = claim_rate(claim, ctx.noise, _per_arm(claim, samples), ctx)
        aa = res.to_dict() if res is not None else None
    if verdict == DEGENERATE:
        pass  # the arms are identical: nothing else to say
    elif blocked:
        verdict = UNTESTABLE
        detail = "untestable here: " + "; ".join(f"premise {b['name']} {b['state']} ({b['value']})"
                                                 for b in blocked_doc) + " — test: " + detail
    elif aa is not None and aa.get("rate") is not None and aa["rate"] > AA_MAX and verdict in (SUPPORTED, CONTRADICTED):
        verdict = INCONCLUSIVE
        detail += (f" — not decided: this test's A/A false-decision rate is {100 * aa['rate']:.0f} % "
                   f"(> {100 * AA_MAX:.0f} %) at {aa['per_arm']} seed(s) per arm ({aa['splits']} splits)")
    if claim.paper_numbers:
        detail += " — paper: " + ", ".join(f"{k}={v}" for k, v in claim.paper_numbers.items())
    return ClaimVerdict(claim.name, claim.paper, claim.assert_, verdict, detail, claim.test, claim.level,
                        dict(claim.paper_numbers), parts, _basis(parts), needs, blocked_doc, aa, statistical)


def _per_arm(claim: Any, samples: dict) -> int:
    """The claim's seed count per arm: the fewest seeds among its methods (at least 1)."""
    parsed = parse_assertion(claim.assert_)
    ns = [len(samples.get(r.method, {}).get(r.key, [])) for r in parsed.refs]
    ns = [n for n in ns if n]
    return max(1, min(ns)) if ns else 1


def evaluate_claims(suite: Any, rows: Iterable[Any], ctx: Context | None = None,
                    premises: list[PremiseVerdict] | None = None) -> list[ClaimVerdict]:
    """Verdicts of every claim of ``suite`` (what :func:`bench.leaderboard.build` shows); ``ctx``
    defaults to the suite's own (:func:`context_for`), ``premises`` to :func:`evaluate_premises`."""
    rows = list(rows)
    ctx = ctx if ctx is not None else context_for(suite)
    premises = premises if premises is not None else evaluate_premises(suite, rows, ctx)
    return [evaluate_claim(c, rows, ctx, premises) for c in suite.claims]


# -- validation (called from bench.plan.load / check) ------------------------------------------
def check_claims(suite: Any, metric_keys: Iterable[str], hashes: dict[str, str] | None = None) -> list[str]:
    """Problems (``claims[i].field: message``, ``premises[i]...``) with the suite's claims and premises:
    unknown methods/metric keys, tol, tests; with ``hashes`` ({method: config hash}) a claim comparing
    two methods that resolve to the same config hash (identical arms: it cannot come out either way)."""
    keys = set(metric_keys)
    methods = [m.name for m in suite.methods]
    problems = []
    for section, items in (("premises", list(getattr(suite, "premises", []) or [])), ("claims", list(suite.claims))):
        seen = set()
        for i, c in enumerate(items):
            if c.name in seen:
                problems.append(f"{section}[{i}].name: duplicate {section[:-1]} name {c.name!r}")
            seen.add(c.name)
            problems += _statement_problems(f"{section}[{i}]", c, methods, keys, hashes)
    return problems


def _statement_problems(where: str, c: Any, methods: list[str], keys: set[str], hashes: dict | None) -> list[str]:
    problems = []
    try:
        parsed = parse_assertion(c.assert_)
    except ClaimSyntaxError as e:
        return [f"{where}.assert: {e}"]
    for ref in parsed.refs:
        if ref.method not in methods:
            problems.append(f"{where}.assert: unknown method {ref.method!r} in {c.assert_!r}; "
                            f"the suite's methods: {methods}")
        if ref.key not in keys:
            problems.append(f"{where}.assert: unknown metric {ref.metric!r} (key {ref.key!r}) in "
                            f"{c.assert_!r}; the suite's metric keys: {sorted(keys)}")
    if parsed.uses_tol and c.tol is None:
        problems.append(f"{where}.tol: the assertion uses 'tol' but the {where.split('[')[0][:-1]} gives no tol")
    if c.tol is not None and not math.isfinite(c.tol):
        problems.append(f"{where}.tol: {c.tol} is not a finite number")
    elif c.tol == 0 and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
                            and any(isinstance(x, ast.Name) and x.id == "tol" for x in ast.walk(n.right))
                            for n in ast.walk(parsed.tree)):
        problems.append(f"{where}.tol: the assertion divides by tol, which is 0; give a tol > 0")
    if c.test in ("welch", "permutation"):
        why = (welch_problem if c.test == "welch" else permutation_problem)(parsed, c.tol if c.tol is not None else 0.0)
        if why:
            problems.append(f"{where}.test: {why}")
    if hashes:
        for node in ast.walk(parsed.tree):
            if not isinstance(node, ast.Compare):
                continue
            by_key: dict[str, set[str]] = {}
            for i in {i for n in ast.walk(node) if (i := _ref_index(n)) is not None}:
                by_key.setdefault(parsed.refs[i].key, set()).add(parsed.refs[i].method)
            for key, ms in by_key.items():
                hs = {hashes.get(m) for m in ms}
                if len(ms) > 1 and len(hs) == 1 and None not in hs:
                    problems.append(f"{where}.assert: {' and '.join(sorted(ms))} resolve to the same config hash "
                                    f"{hs.pop()} (identical arms: {key} cannot differ); compare methods that differ")
    return problems


# -- reporting ---------------------------------------------------------------------------------
def to_json(verdicts: list[ClaimVerdict]) -> str:
    return json.dumps([v.to_dict() for v in verdicts], indent=2, default=float)


def to_text(verdicts: list[ClaimVerdict], premises: list[PremiseVerdict] | None = None) -> str:
    lines = []
    for p in premises or []:
        lines.append(f"[premise {p.state.upper()}] {p.name}: {p.assertion}")
        for part in p.parts:
            lines.append(f"    {part['detail']}")
    for v in verdicts:
        lines.append(f"[{v.verdict.upper():>15}] {v.name} ({v.paper}): {v.assertion}")
        for b in v.blocked_by:
            lines.append(f"    untestable here: premise {b['name']} {b['state']}: {b['value']}")
        for p in v.parts:
            lines.append(f"    {p['detail']}")
        if v.aa is not None:
            lines.append(f"    A/A: {aa_phrase(v.aa)}")
        if v.paper_numbers:
            lines.append("    paper: " + ", ".join(f"{k}={x}" for k, x in v.paper_numbers.items()))
    counts = {s: sum(v.verdict == s for v in verdicts) for s in VERDICTS}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n or s in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)))
    return "\n".join(lines)


def aa_phrase(aa: dict) -> str:
    """``aa`` (:meth:`bench.aa.AAResult.to_dict`) as words."""
    if aa.get("rate") is None:
        return f"not measurable ({aa.get('why')})"
    flag = " (above 10 %: not calibrated here)" if aa["rate"] > AA_MAX else ""
    return (f"false-decision rate {100 * aa['rate']:.0f} % over {aa['splits']} splits of the seed-noise model's "
            f"seeds, {aa['per_arm']} seed(s) per arm{flag}")


def log_verdicts(tracker: Any, run_id: str, verdicts: list[ClaimVerdict], out_dir: Path,
                 premises: list[PremiseVerdict] | None = None) -> Path:
    """Write ``claims.json`` (and ``premises.json`` when the suite has premises) to ``out_dir`` and log
    them, one tag per claim and premise and the counts, to ``run_id``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "claims.json"
    path.write_text(to_json(verdicts))
    tracker.client.log_artifact(run_id, str(path), artifact_path="leaderboard")
    if premises:
        ppath = out_dir / "premises.json"
        ppath.write_text(json.dumps([p.to_dict() for p in premises], indent=2, default=float))
        tracker.client.log_artifact(run_id, str(ppath), artifact_path="leaderboard")
    for v in verdicts:
        tag = re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", v.name)[:200]
        tracker.client.set_tag(run_id, f"bench.claim.{tag}", v.verdict)
    for p in premises or []:
        tracker.client.set_tag(run_id, f"bench.premise.{p.name[:200]}", p.state)
    counts = {f"claims_{s.replace(' ', '_')}": float(sum(v.verdict == s for v in verdicts)) for s in VERDICTS}
    tracker.log_metrics(run_id, counts)
    return path
