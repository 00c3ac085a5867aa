"""Paper claims as tests: parse a suite's ``claims:``, evaluate them over seeds, give verdicts.

A claim's ``assert`` is a small expression over metrics of methods, e.g.::

    gfid(vcq) < gfid(vq)
    probe@10(vcq) > probe@10(vq)
    ar_loss(wartok) < ar_loss(vq) and |rfid(wartok) - rfid(vq)| <= tol

Grammar: ``metric(method)`` references (``probe@k`` means metric key ``probe_k{k}``; any other
name is a metric key as logged, e.g. ``gfid``, ``rfd_fmnist``, ``bits_per_image``), numbers,
``tol`` (the claim's ``tol``), ``+ - * /``, unary minus, ``|x|`` or ``abs(x)``, one comparison
``< <= > >=`` per clause, clauses joined with ``and`` / ``or`` (parentheses allowed). It is parsed
with :mod:`ast` against a whitelist (never ``eval``).

Statistics (``test`` and ``level`` of the claim). Each comparison ``lhs OP rhs`` is read as a statement
about D = lhs - rhs, the difference of seed means; its two-sided ``level`` confidence interval is:

* ``welch``: the Welch-Satterthwaite t interval of the linear combination sum_i c_i mean_i (for two
  methods: Welch's unequal-variance t-test; the p-value of H0: D = 0 is reported). Needs a linear
  comparison (or ``|linear| OP constant``).
* ``bootstrap``: a percentile interval from 10,000 resamples of each (metric, method)'s seeds
  (independently, fixed RNG seed derived from the claim name), for any expression.

Verdict of a comparison ``D < 0`` (``>`` symmetric): *supported* if the interval lies below 0,
*contradicted* if it lies above 0, *inconclusive* if it contains 0 (overlap), or if some method has
fewer than 2 seeds or no value. An equivalence ``|X| <= c`` (c without metrics) is *supported* if
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

import numpy as np

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
BOOTSTRAP_RESAMPLES = 10_000
MIN_SEEDS = 2

_REF = re.compile(r"(?<![A-Za-z0-9_@.])([A-Za-z_][A-Za-z0-9_]*(?:@[A-Za-z0-9_]+)?)\s*\(\s*([A-Za-z0-9_.-]+)\s*\)")
_ABS_BARS = re.compile(r"\|([^|]+)\|")
_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


class ClaimSyntaxError(ValueError):
    """A claim's assertion is not in the grammar (the message says what is wrong)."""


def metric_key(name: str) -> str:
    """``probe@10`` -> ``probe_k10`` (MLflow keys allow no '@'); other names unchanged."""
    if "@" in name:
        base, k = name.split("@", 1)
        if base != "probe":
            raise ClaimSyntaxError(f"'{name}': only probe@k uses '@' (write the metric key otherwise)")
        return f"probe_k{k}"
    return name


@dataclass(frozen=True)
class Ref:
    """One ``metric(method)`` reference of an assertion."""

    metric: str  # as written, e.g. probe@10
    key: str  # metric key, e.g. probe_k10
    method: str

    def __str__(self) -> str:
        return f"{self.metric}({self.method})"


@dataclass
class ParsedAssertion:
    text: str
    tree: ast.Expression
    refs: list[Ref]
    uses_tol: bool


MAX_ASSERTION_CHARS = 1000
MAX_DEPTH = 20  # nesting of operators, parentheses and abs() in one assertion
MAX_LITERAL = 1e12  # |number| written in an assertion
MAX_LITERAL_CHARS = 24


def parse_assertion(text: str) -> ParsedAssertion:
    """Parse and whitelist-check an assertion; raise :class:`ClaimSyntaxError` saying why not.

    Refused before parsing: more than :data:`MAX_ASSERTION_CHARS` characters or
    :data:`MAX_DEPTH` open parentheses/bars at once, numbers longer than :data:`MAX_LITERAL_CHARS`
    characters; after: nesting deeper than :data:`MAX_DEPTH`, |number| > :data:`MAX_LITERAL`,
    division by a literal zero.
    """
    if not isinstance(text, str) or not text.strip():
        raise ClaimSyntaxError("empty assertion")
    if len(text) > MAX_ASSERTION_CHARS:
        raise ClaimSyntaxError(f"assertion of {len(text)} characters (at most {MAX_ASSERTION_CHARS}); split the claim")
    depth = deepest = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        deepest = max(deepest, depth)
    if deepest + text.count("|") // 2 > MAX_DEPTH:
        raise ClaimSyntaxError(f"assertion nested too deeply (at most {MAX_DEPTH} levels) in {text[:60]!r}...")
    for lit in re.findall(r"(?<![A-Za-z_@])\d[\d_.eE+-]*", text):
        if len(lit) > MAX_LITERAL_CHARS:
            raise ClaimSyntaxError(f"number {lit[:20]}... of {len(lit)} characters; write at most "
                                   f"{MAX_LITERAL_CHARS} characters, |x| <= {MAX_LITERAL:g}")
    if text.count("|") % 2:
        raise ClaimSyntaxError(f"unbalanced '|' in {text!r}")
    skel = _ABS_BARS.sub(lambda m: f"abs({m.group(1)})", text.strip())
    refs: list[Ref] = []

    def sub(m: re.Match) -> str:
        name, method = m.group(1), m.group(2)
        if name == "abs":
            return m.group(0)
        ref = Ref(name, metric_key(name), method)
        if ref not in refs:
            refs.append(ref)
        return f"__ref{refs.index(ref)}"

    skel = _REF.sub(sub, skel)
    try:
        tree = ast.parse(skel, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ClaimSyntaxError(f"cannot parse {text!r}; expected e.g. 'gfid(a) < gfid(b)' or "
                               "'|rfid(a) - rfid(b)| <= tol', clauses joined with 'and'") from None
    uses_tol = False

    def check(node: ast.AST, top: bool, depth: int = 0) -> None:
        nonlocal uses_tol
        if depth > 2 * MAX_DEPTH:
            raise ClaimSyntaxError(f"assertion nested too deeply (at most {MAX_DEPTH} levels) in {text[:60]!r}...")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value == 0:
            raise ClaimSyntaxError(f"division by zero in {text!r}")
        if isinstance(node, ast.BoolOp) and isinstance(node.op, (ast.And, ast.Or)):
            if not top:
                raise ClaimSyntaxError(f"'and'/'or' inside an arithmetic expression in {text!r}")
            for v in node.values:
                check(v, True, depth + 1)
        elif isinstance(node, ast.Compare):
            if not top:
                raise ClaimSyntaxError(f"a comparison nested inside an expression in {text!r}")
            if len(node.ops) != 1 or type(node.ops[0]) not in _OPS:
                raise ClaimSyntaxError(f"use exactly one of < <= > >= per clause in {text!r} (no chains, no ==)")
            check(node.left, False, depth + 1)
            check(node.comparators[0], False, depth + 1)
        elif top:
            raise ClaimSyntaxError(f"{text!r} (or one of its 'and' clauses) is not a comparison")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            check(node.left, False, depth + 1)
            check(node.right, False, depth + 1)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            check(node.operand, False, depth + 1)
        elif isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id == "abs" and len(node.args) == 1
                    and not node.keywords):
                raise ClaimSyntaxError(f"only metric(method) and abs(x) calls are allowed in {text!r}")
            check(node.args[0], False, depth + 1)
        elif isinstance(node, ast.Name):
            if node.id == "tol":
                uses_tol = True
            elif not re.fullmatch(r"__ref\d+", node.id):
                raise ClaimSyntaxError(f"unknown name {node.id!r} in {text!r}; write metric(method), a number or tol")
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            if not abs(node.value) <= MAX_LITERAL:
                raise ClaimSyntaxError(f"number {node.value:g} in {text!r} is beyond ±{MAX_LITERAL:g}")
        else:
            raise ClaimSyntaxError(f"{type(node).__name__} is not allowed in {text!r}")

    check(tree.body, True)
    if not refs:
        raise ClaimSyntaxError(f"{text!r} references no metric(method)")
    return ParsedAssertion(text, tree, refs, uses_tol)


# -- expression helpers ------------------------------------------------------------------------
def _ref_index(node: ast.AST) -> int | None:
    if isinstance(node, ast.Name) and node.id.startswith("__ref"):
        return int(node.id[5:])
    return None


def _has_refs(node: ast.AST) -> bool:
    return any(_ref_index(n) is not None for n in ast.walk(node))


def _evaluate(node: ast.AST, values: list, tol: float | None):
    """Evaluate an arithmetic node; ``values[i]`` (float or numpy array) stands for ref i."""
    i = _ref_index(node)
    if i is not None:
        return values[i]
    if isinstance(node, ast.Name):  # tol
        if tol is None:
            raise ClaimSyntaxError("the assertion uses 'tol' but the claim gives no tol")
        return tol
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.UnaryOp):
        v = _evaluate(node.operand, values, tol)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Call):
        return np.abs(_evaluate(node.args[0], values, tol))
    a, b = _evaluate(node.left, values, tol), _evaluate(node.right, values, tol)
    op = node.op
    return a + b if isinstance(op, ast.Add) else a - b if isinstance(op, ast.Sub) else a * b \
        if isinstance(op, ast.Mult) else a / b


def _linear(node: ast.AST, tol: float | None) -> tuple[dict[int, float], float] | None:
    """Coefficients {ref: c} and constant if ``node`` is linear in the refs, else None."""
    i = _ref_index(node)
    if i is not None:
        return {i: 1.0}, 0.0
    if not _has_refs(node):
        try:
            return {}, float(_evaluate(node, [], tol))
        except ClaimSyntaxError:
            return {}, float("nan")
    if isinstance(node, ast.UnaryOp):
        inner = _linear(node.operand, tol)
        if inner is None:
            return None
        s = -1.0 if isinstance(node.op, ast.USub) else 1.0
        return {k: s * v for k, v in inner[0].items()}, s * inner[1]
    if isinstance(node, ast.BinOp):
        a, b = _linear(node.left, tol), _linear(node.right, tol)
        if a is None or b is None:
            return None
        if isinstance(node.op, (ast.Add, ast.Sub)):
            s = 1.0 if isinstance(node.op, ast.Add) else -1.0
            co = dict(a[0])
            for k, v in b[0].items():
                co[k] = co.get(k, 0.0) + s * v
            return co, a[1] + s * b[1]
        if isinstance(node.op, ast.Mult) and (not a[0] or not b[0]):
            (lin, c) = (b, a[1]) if not a[0] else (a, b[1])
            return {k: c * v for k, v in lin[0].items()}, c * lin[1]
        if isinstance(node.op, ast.Div) and not b[0]:
            if b[1] == 0:
                return {k: math.nan for k in a[0]}, math.nan
            return {k: v / b[1] for k, v in a[0].items()}, a[1] / b[1]
    return None


@dataclass
class _Form:
    """A comparison read as a statement about an interval."""

    kind: str  # "sign": D = lhs - rhs, want D<0 or D>0 ; "equiv": |X| vs c
    want_negative: bool = False  # sign: D < 0 wanted
    within: bool = True  # equiv: |X| <= c wanted (False: |X| >= c)
    strict: bool = False
    expr: ast.AST | None = None  # D (sign) or X (equiv)
    bound: ast.AST | None = None  # c (equiv)


def _form(cmp: ast.Compare) -> _Form:
    op = type(cmp.ops[0])
    lhs, rhs = cmp.left, cmp.comparators[0]
    less = op in (ast.Lt, ast.LtE)
    strict = op in (ast.Lt, ast.Gt)
    # |X| OP c or c OP |X| with c free of metrics: an equivalence (or non-equivalence) statement.
    for absn, other, abs_on_left in ((lhs, rhs, True), (rhs, lhs, False)):
        if isinstance(absn, ast.Call) and not _has_refs(other) and _has_refs(absn):
            within = less if abs_on_left else not less
            return _Form("equiv", within=within, strict=strict, expr=absn.args[0], bound=other)
    d = ast.BinOp(left=lhs, op=ast.Sub(), right=rhs)
    return _Form("sign", want_negative=less, strict=strict, expr=d)


def welch_problem(parsed: ParsedAssertion, tol: float | None) -> str | None:
    """Why Welch cannot evaluate this assertion (None if it can)."""
    for node in ast.walk(parsed.tree):
        if isinstance(node, ast.Compare):
            f = _form(node)
            if _linear(f.expr, tol) is None:
                return (f"the Welch test needs comparisons linear in the metrics (or |linear| <= constant); "
                        f"use test: bootstrap for {ast.unparse(node)!r}")
    return None


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
    from scipy import stats

    coef, const = lin
    est, var, den = const, 0.0, 0.0
    for i, c in coef.items():
        if c == 0:
            continue
        xs = data[i]
        n, m, s2 = len(xs), statistics.fmean(xs), statistics.variance(xs)
        est += c * m
        v = c * c * s2 / n
        var += v
        den += v * v / (n - 1)
    if var == 0:
        return est, est, est, (0.0 if est != 0 else 1.0), math.inf
    df = var * var / den if den > 0 else math.inf
    se = math.sqrt(var)
    q = stats.t.ppf(0.5 + level / 2, df)
    p = 2 * stats.t.sf(abs(est) / se, df)
    return est, est - q * se, est + q * se, float(p), df


def _interval_bootstrap(expr: ast.AST, data: list[list[float]], level: float, tol, seed: int):
    rng = np.random.default_rng(seed)
    boots = []
    for xs in data:
        a = np.asarray(xs, dtype=float)
        if len(a) == 0:
            boots.append(np.full(BOOTSTRAP_RESAMPLES, np.nan))
            continue
        idx = rng.integers(0, len(a), size=(BOOTSTRAP_RESAMPLES, len(a)))
        boots.append(a[idx].mean(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.asarray(_evaluate(expr, boots, tol), dtype=float) * np.ones(BOOTSTRAP_RESAMPLES)
    est = float(_evaluate(expr, [statistics.fmean(x) for x in data], tol))
    lo, hi = np.nanquantile(dist, [0.5 - level / 2, 0.5 + level / 2])
    return est, float(lo), float(hi), dist


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
    if few:
        problems.append(f"too few seeds for {', '.join(few)} (need >= {MIN_SEEDS} per method)")
    part = {"clause": src, "values": described}
    if problems:
        part.update(verdict=INCONCLUSIVE, detail=f"{src}: {'; '.join(described)}; {'; '.join(problems)}")
        return part
    try:
        return _evaluate_stats(cmp, parsed, data, described, part, src, test, level, tol, seed)
    except (ZeroDivisionError, FloatingPointError, OverflowError, ValueError) as e:
        why = "division by zero" if isinstance(e, ZeroDivisionError) else f"{type(e).__name__}: {e}"
        part.update(verdict=INCONCLUSIVE, detail=f"{src}: {'; '.join(described)}; cannot evaluate ({why})")
        return part


def _evaluate_stats(cmp, parsed, data, described, part, src, test, level, tol, seed) -> dict:
    form = _form(cmp)
    bound = float(_evaluate(form.bound, [], tol)) if form.kind == "equiv" else None
    pct = f"{100 * level:g}%"
    if test == "welch":
        lin = _linear(form.expr, tol)
        est, lo, hi, p, df = _interval_welch(lin, data, level)
        # the p-value of H0: D = 0 answers the sign question only; equivalence is read off the interval
        stat = f"Welch p={_fmt(p)}, df={_fmt(df)}" if form.kind == "sign" else f"Welch df={_fmt(df)}"
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
    return ClaimVerdict(claim.name, claim.paper, claim.assert_, verdict, detail, claim.test, claim.level,
                        dict(claim.paper_numbers), parts)


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
        if c.test == "welch":
            why = welch_problem(parsed, c.tol if c.tol is not None else 0.0)
            if why:
                problems.append(f"claims[{i}].test: {why}")
    return problems


def validate_assertion(text: str) -> str:
    """pydantic field validator body: raise ValueError (with the reason) if ``text`` does not parse."""
    parse_assertion(text)
    return text


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
