"""A/A calibration: a claim's test run on one method against itself, with other seeds.

Every arm of the claim (each distinct method it names) is given the values of the *same* method
(the seed-noise model's, :mod:`bench.seed_noise`, or the baseline's runs in the store) at disjoint
seeds, ``per_arm`` seeds each, for every such split the seeds allow (ordered: arm 1 gets seeds S1,
arm 2 S2, ...; at most :data:`MAX_SPLITS`, a seeded sample beyond). Under that null every arm has
the same expected value mu (estimated by the mean over all the method's seeds), so a clause
``lhs OP rhs`` has the known expectation ``E = D(mu, ..., mu)`` (0 for a plain ``a < b``;
``-0.25 mu`` for ``a < 1.25 * b``); a split is a **false decision** when some clause's interval
excludes its E (for a permutation test: p <= 1 - level on the unshifted samples). A 95 % test
should give about 5 %; :data:`bench.claims.AA_MAX` (10 %) is the line above which a decided verdict
is reported inconclusive on the board.

``bench aa SUITE`` prints the table for every claim at one seed per arm with the old sampling-only
test ("before") and with the seed-noise model, and at the suite's seed count.
"""
from __future__ import annotations

import ast
import itertools
import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any

MAX_SPLITS = 2000


@dataclass
class AAResult:
    claim: str
    per_arm: int
    arms: int
    splits: int
    decided: int
    mode: str  # "model" | "sampling only" | "across seeds"
    why: str | None = None  # why not measurable

    @property
    def rate(self) -> float | None:
        return self.decided / self.splits if self.splits else None

    def to_dict(self) -> dict:
        return {**asdict(self), "rate": self.rate}


def splits(n: int, arms: int, per_arm: int, cap: int = MAX_SPLITS, seed: int = 0) -> list[tuple[tuple[int, ...], ...]]:
    """Ordered assignments of disjoint ``per_arm``-subsets of ``range(n)`` to ``arms`` arms."""
    if arms * per_arm > n or arms < 1 or per_arm < 1:
        return []

    def rec(left: tuple[int, ...], k: int):
        if k == 0:
            yield ()
            return
        for sub in itertools.combinations(left, per_arm):
            rest = tuple(x for x in left if x not in sub)
            for tail in rec(rest, k - 1):
                yield (sub,) + tail

    total = math.perm(n, arms * per_arm) // (math.factorial(per_arm) ** arms)
    if total <= cap:
        return list(rec(tuple(range(n)), arms))
    rng = random.Random(seed)
    out = set()
    while len(out) < cap:
        idx = list(range(n))
        rng.shuffle(idx)
        out.add(tuple(tuple(sorted(idx[a * per_arm:(a + 1) * per_arm])) for a in range(arms)))
    return sorted(out)


def claim_rate(claim: Any, source: Any, per_arm: int, ctx: Any, sampling_only: bool | None = None) -> AAResult | None:
    """The A/A false-decision rate of ``claim``'s test at ``per_arm`` seeds per arm, on ``source``'s
    per-seed values (a :class:`bench.seed_noise.SeedNoiseModel`, or a ``{key: [values]}`` dict with
    ``<key>_stderr`` lists); one-seed clauses use ``ctx``'s model (or, with ``sampling_only``, the old
    sampling-error-only test). None when the claim names no metric at all."""
    from bench.claim_grammar import _form, parse_assertion
    from bench.claim_stats import Context, _evaluate_compare, two_sample
    from bench.claim_grammar import _evaluate
    from bench.stats import permutation_p

    values = dict(source) if isinstance(source, dict) else source.values()
    parsed = parse_assertion(claim.assert_)
    arms = sorted({r.method for r in parsed.refs})
    sampling_only = ctx.sampling_only if sampling_only is None else sampling_only
    inner = Context(noise=ctx.noise, noise_note=ctx.noise_note, sampling_only=sampling_only, aa=False)
    mode = "across seeds" if per_arm > 1 else "sampling only" if sampling_only else "model"
    missing = sorted({r.key for r in parsed.refs if not values.get(r.key)})
    if missing:
        return AAResult(claim.name, per_arm, len(arms), 0, 0, mode, f"the measured method does not log {missing}")
    n = min(len(values[r.key]) for r in parsed.refs)
    if any(not all(math.isfinite(x) for x in values[r.key]) for r in parsed.refs):
        return AAResult(claim.name, per_arm, len(arms), 0, 0, mode, "a measured value is not finite")
    cases = splits(n, len(arms), per_arm)
    if not cases:
        return AAResult(claim.name, per_arm, len(arms), 0, 0, mode,
                        f"{len(arms)} arm(s) x {per_arm} seed(s) need {len(arms) * per_arm} seeds; the model has {n}")
    mu = [statistics.fmean(values[r.key][:n]) for r in parsed.refs]
    clauses = [node for node in ast.walk(parsed.tree) if isinstance(node, ast.Compare)]
    seed = 0
    decided = 0
    for case in cases:
        samples: dict[str, dict[str, list[float]]] = {}
        for arm, idx in zip(arms, case):
            d = samples.setdefault(arm, {})
            for r in parsed.refs:
                for k in (r.key, f"{r.key}_stderr"):
                    if values.get(k) and len(values[k]) >= n:
                        d[k] = [float(values[k][i]) for i in idx]
        false = False
        for cmp in clauses:
            part = _evaluate_compare(cmp, parsed, samples, claim.test, claim.level, claim.tol, seed, inner)
            form = _form(cmp)
            if "ci" in part:
                try:
                    expected = float(_evaluate(form.expr, mu, claim.tol))
                except (ZeroDivisionError, FloatingPointError, OverflowError, ValueError):
                    continue
                lo, hi = part["ci"]
                if math.isfinite(expected) and not (lo <= expected <= hi):
                    false = True
            elif claim.test == "permutation" and "p_value" in part and per_arm > 1:
                ts = two_sample(form, claim.tol)
                if ts is None:
                    continue
                i, j = ts[0], ts[1]
                a = samples[parsed.refs[i].method][parsed.refs[i].key]
                b = samples[parsed.refs[j].method][parsed.refs[j].key]
                p_min = (2 if len(a) == len(b) else 1) / math.comb(len(a) + len(b), len(a))
                p, _ = permutation_p(a, b, seed)
                if p_min <= 1 - claim.level and p <= 1 - claim.level:
                    false = True
        decided += false
    return AAResult(claim.name, per_arm, len(arms), len(cases), decided, mode)


def table(suite: Any, source: Any, ctx: Any, per_arms: list[int]) -> list[dict]:
    """One row per claim: its A/A rate at one seed per arm (sampling only = the old test; with the model)
    and at each of ``per_arms`` (> 1: the claim's own multi-seed test)."""
    rows = []
    for c in suite.claims:
        row = {"claim": c.name, "assert": c.assert_, "results": {}}
        row["results"]["1 seed, sampling only"] = claim_rate(c, source, 1, ctx, sampling_only=True)
        if ctx.noise is not None:
            row["results"]["1 seed + seed-noise model"] = claim_rate(c, source, 1, ctx, sampling_only=False)
        for k in per_arms:
            if k > 1:
                row["results"][f"{k} seeds per arm"] = claim_rate(c, source, k, ctx)
        rows.append(row)
    return rows
