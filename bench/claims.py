"""Paper claims as tests: evaluate a suite's ``claims:`` over seeds and give verdicts.

The expression grammar and its parser live in :mod:`bench.claim_grammar` (re-exported here).

The statistics of one comparison (Welch, permutation, bootstrap, one seed with the seed-noise
model) live in :mod:`bench.claim_stats`.

Before the statistics (:func:`evaluate_claim`): a clause whose arms have bit-identical values on
every seed is **degenerate: the arms are identical** (an ablation that leaves the model as it was);
a claim that ``needs:`` a premise that is not established (:func:`evaluate_premises`: a premise is
evaluated like a claim; *holds* = supported) is **untestable here**, naming the premise and its
value; with a seed-noise model, a decided claim whose A/A false-decision rate (:mod:`bench.aa`: the
same test on the model's method against itself with other seeds) exceeds :data:`AA_MAX` at the
claim's seed count is reported inconclusive, saying so. Each interval part carries its minimum
detectable difference (``mde``: the CI half-width) and, for an inconclusive sign comparison, about how
many seeds per arm would detect the observed difference (``seeds_needed``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable


from bench.claim_grammar import ClaimSyntaxError, _ref_index, parse_assertion, welch_problem, zero_divisors
from bench.claim_stats import (ACROSS_SEEDS, CONTRADICTED, DEGENERATE, FAILS, HOLDS, INCONCLUSIVE, SUPPORTED,
                               UNSETTLED, UNTESTABLE, VERDICTS, AA_MAX, Context, _evaluate_compare, _fmt,
                               permutation_problem)

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
    elif zeros := zero_divisors(parsed, c.tol):
        problems.append(f"{where}.assert: division by zero: {', '.join(zeros)} is 0"
                        + (f" with tol {c.tol}" if c.tol is not None else "") + f" in {c.assert_!r}")
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
