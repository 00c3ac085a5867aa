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
* one seed of some method (basis "1 seed: sampling uncertainty only"): the normal interval of the
  linear combination from the metrics' within-cell standard errors (``<key>_stderr``; a method with
  >= 2 seeds contributes its combined SE, :func:`bench.stats.estimate`); inconclusive, saying
  so, when a value has no logged stderr or the expression is not linear.

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


from bench.stats import (BOOTSTRAP_MIN_SEEDS, estimate, percentile_bootstrap, permutation_p, welch_interval,
                         z_interval)
from bench.claim_grammar import (ClaimSyntaxError, ParsedAssertion, Ref, _evaluate, _form, _Form, _linear,  # noqa: F401
                                 _ref_index, metric_key, parse_assertion, validate_assertion, welch_problem)

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
BOOTSTRAP_RESAMPLES = 10_000
MIN_SEEDS = 2
ONE_SEED = "1 seed: sampling uncertainty only"
ACROSS_SEEDS = "across seeds"


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
    basis: str = ""  # ACROSS_SEEDS, ONE_SEED, or both ("; "-joined) when the clauses differ

    def to_dict(self) -> dict:
        return asdict(self)


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


def _evaluate_compare(cmp: ast.Compare, parsed: ParsedAssertion, samples, test: str, level: float,
                      tol: float | None, seed: int) -> dict:
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
    part = {"clause": src, "values": described, "basis": ONE_SEED if few else ACROSS_SEEDS}
    if problems:
        part.update(verdict=INCONCLUSIVE, detail=f"{src}: {'; '.join(described)}; {'; '.join(problems)}")
        return part
    try:
        if few:  # some method has one seed: the within-cell sampling errors are all there is
            ses = [samples.get(parsed.refs[i].method, {}).get(parsed.refs[i].key + "_stderr", [])
                   if i in used else [] for i in range(len(parsed.refs))]
            return _evaluate_sampling(cmp, parsed, data, ses, described, part, src, level, tol, few)
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


def _evaluate_stats(cmp, parsed, data, described, part, src, test, level, tol, seed) -> dict:
    form = _form(cmp)
    bound = float(_evaluate(form.bound, [], tol)) if form.kind == "equiv" else None
    pct = f"{100 * level:g}%"
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
    if test == "welch":
        lin = _linear(form.expr, tol)
        est, lo, hi, p, df = _interval_welch(lin, data, level)
        # the p-value of H0: D = 0 answers the sign question only; equivalence is read off the interval
        stat = (f"Welch p={_fmt(p)}, df={_fmt(df)}" if form.kind == "sign" else f"Welch df={_fmt(df)}") + note
        part.update(p_value=p, df=df)
    else:
        est, lo, hi, dist = _interval_bootstrap(form.expr, data, level, tol, seed)
        stat = f"bootstrap ({BOOTSTRAP_RESAMPLES} resamples)"
    what = "difference (lhs - rhs)" if form.kind == "sign" else f"inner difference vs ±{_fmt(bound)}"
    if not all(math.isfinite(x) for x in (est, lo, hi) + ((bound,) if bound is not None else ())):
        part.update(verdict=INCONCLUSIVE, estimate=est, ci=[lo, hi], level=level,
                    detail=f"{src}: {'; '.join(described)}; {what} {_fmt(est)}, {pct} CI [{_fmt(lo)}, {_fmt(hi)}] "
                           "is not finite (division by zero?) -> inconclusive")
        return part
    verdict = _decide(form, lo, hi, bound)
    part.update(verdict=verdict, estimate=est, ci=[lo, hi], level=level,
                detail=f"{src}: {'; '.join(described)}; {what} {_fmt(est)}, {pct} CI [{_fmt(lo)}, {_fmt(hi)}], "
                       f"{stat} -> {verdict}")
    return part


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


def _combine(node: ast.AST, parsed, samples, test, level, tol, seed, parts: list) -> str:
    if isinstance(node, ast.BoolOp):
        vs = [_combine(v, parsed, samples, test, level, tol, seed, parts) for v in node.values]
        if isinstance(node.op, ast.And):
            return CONTRADICTED if CONTRADICTED in vs else SUPPORTED if all(v == SUPPORTED for v in vs) \
                else INCONCLUSIVE
        return SUPPORTED if SUPPORTED in vs else CONTRADICTED if all(v == CONTRADICTED for v in vs) \
            else INCONCLUSIVE
    part = _evaluate_compare(node, parsed, samples, test, level, tol, seed)
    parts.append(part)
    return part["verdict"]


def evaluate_claim(claim: Any, rows: Iterable[Any]) -> ClaimVerdict:
    """Evaluate one :class:`bench.suite.ClaimSpec` over the rows' per-seed values."""
    parsed = parse_assertion(claim.assert_)
    seed = int(hashlib.sha256(claim.name.encode()).hexdigest()[:8], 16)
    parts: list[dict] = []
    verdict = _combine(parsed.tree.body, parsed, _samples(rows), claim.test, claim.level, claim.tol, seed, parts)
    detail = " — ".join(p["detail"] for p in parts)  # no '|': the detail sits in a markdown table cell
    if claim.paper_numbers:
        detail += " — paper: " + ", ".join(f"{k}={v}" for k, v in claim.paper_numbers.items())
    basis = "; ".join(dict.fromkeys(p.get("basis", ACROSS_SEEDS) for p in parts))
    return ClaimVerdict(claim.name, claim.paper, claim.assert_, verdict, detail, claim.test, claim.level,
                        dict(claim.paper_numbers), parts, basis)


def evaluate_claims(suite: Any, rows: Iterable[Any]) -> list[ClaimVerdict]:
    """Verdicts of every claim of ``suite`` (what :func:`bench.leaderboard.build` shows)."""
    rows = list(rows)
    return [evaluate_claim(c, rows) for c in suite.claims]


# -- validation (called from bench.plan.load / check) ------------------------------------------
def check_claims(suite: Any, metric_keys: Iterable[str]) -> list[str]:
    """Problems (``claims[i].field: message``) with the suite's claims: unknown methods/metric keys, ..."""
    keys = set(metric_keys)
    methods = [m.name for m in suite.methods]
    problems, seen = [], set()
    for i, c in enumerate(suite.claims):
        if c.name in seen:
            problems.append(f"claims[{i}].name: duplicate claim name {c.name!r}")
        seen.add(c.name)
        try:
            parsed = parse_assertion(c.assert_)
        except ClaimSyntaxError as e:
            problems.append(f"claims[{i}].assert: {e}")
            continue
        for ref in parsed.refs:
            if ref.method not in methods:
                problems.append(f"claims[{i}].assert: unknown method {ref.method!r} in {c.assert_!r}; "
                                f"the suite's methods: {methods}")
            if ref.key not in keys:
                problems.append(f"claims[{i}].assert: unknown metric {ref.metric!r} (key {ref.key!r}) in "
                                f"{c.assert_!r}; the suite's metric keys: {sorted(keys)}")
        if parsed.uses_tol and c.tol is None:
            problems.append(f"claims[{i}].tol: the assertion uses 'tol' but the claim gives no tol")
        if c.tol is not None and not math.isfinite(c.tol):
            problems.append(f"claims[{i}].tol: {c.tol} is not a finite number")
        elif c.tol == 0 and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
                                and any(isinstance(x, ast.Name) and x.id == "tol" for x in ast.walk(n.right))
                                for n in ast.walk(parsed.tree)):
            problems.append(f"claims[{i}].tol: the assertion divides by tol, which is 0; give a tol > 0")
        if c.test in ("welch", "permutation"):
            why = (welch_problem if c.test == "welch" else permutation_problem)(parsed, c.tol if c.tol is not None else 0.0)
            if why:
                problems.append(f"claims[{i}].test: {why}")
    return problems



# -- reporting ---------------------------------------------------------------------------------
def to_json(verdicts: list[ClaimVerdict]) -> str:
    return json.dumps([v.to_dict() for v in verdicts], indent=2, default=float)


def to_text(verdicts: list[ClaimVerdict]) -> str:
    lines = []
    for v in verdicts:
        lines.append(f"[{v.verdict.upper():>12}] {v.name} ({v.paper}): {v.assertion}")
        for p in v.parts:
            lines.append(f"    {p['detail']}")
        if v.paper_numbers:
            lines.append("    paper: " + ", ".join(f"{k}={x}" for k, x in v.paper_numbers.items()))
    counts = {s: sum(v.verdict == s for v in verdicts) for s in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def log_verdicts(tracker: Any, run_id: str, verdicts: list[ClaimVerdict], out_dir: Path) -> Path:
    """Write ``claims.json`` to ``out_dir`` and log it, one tag per claim and the counts, to ``run_id``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "claims.json"
    path.write_text(to_json(verdicts))
    tracker.client.log_artifact(run_id, str(path), artifact_path="leaderboard")
    for v in verdicts:
        tag = re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", v.name)[:200]
        tracker.client.set_tag(run_id, f"bench.claim.{tag}", v.verdict)
    counts = {f"claims_{s}": float(sum(v.verdict == s for v in verdicts))
              for s in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)}
    tracker.log_metrics(run_id, counts)
    return path
