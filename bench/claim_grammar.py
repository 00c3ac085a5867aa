"""The claim grammar: parse and check a suite claim's ``assert`` (evaluated by :mod:`bench.claims`).

A claim's ``assert`` is a small expression over metrics of methods, e.g.::

    gfid(vcq) < gfid(vq)
    probe@10(vcq) > probe@10(vq)
    ar_loss(wartok) < ar_loss(vq) and |rfid(wartok) - rfid(vq)| <= tol

Grammar: ``metric(method)`` references (``probe@k`` means metric key ``probe_k{k}``; any other
name is a metric key as logged, e.g. ``gfid``, ``rfd_fmnist``, ``bits_per_image``), numbers,
``tol`` (the claim's ``tol``), ``+ - * /``, unary minus, ``|x|`` or ``abs(x)``, one comparison
``< <= > >=`` per clause, clauses joined with ``and`` / ``or`` (parentheses allowed). It is parsed
with :mod:`ast` against a whitelist (never ``eval``), with limits on length, depth and literals.
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass

import numpy as np


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
    if isinstance(op, ast.Div) and not isinstance(b, np.ndarray) and b == 0:
        return math.nan if not isinstance(a, np.ndarray) else np.full_like(a, math.nan, dtype=float)  # undefined
    return a + b if isinstance(op, ast.Add) else a - b if isinstance(op, ast.Sub) else a * b \
        if isinstance(op, ast.Mult) else a / b


def zero_divisors(parsed: "ParsedAssertion", tol: float | None) -> list[str]:
    """Divisors without metric values that evaluate to 0 (``1 / (1 - 1)``, ``x / (tol - 0.5)`` with tol 0.5)."""
    out = []
    for n in ast.walk(parsed.tree):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and not _has_refs(n.right):
            try:
                v = _evaluate(n.right, [], tol)
            except ClaimSyntaxError:
                continue  # tol missing: reported on its own
            if v == 0 or (isinstance(v, float) and math.isnan(v)):
                out.append(ast.unparse(n.right))
    return out


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


def validate_assertion(text: str) -> str:
    """pydantic field validator body: raise ValueError (with the reason) if ``text`` does not parse."""
    parse_assertion(text)
    return text
