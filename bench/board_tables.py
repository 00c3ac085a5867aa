"""The leaderboard as text tables: Markdown (``leaderboard.md``) and CSV (``leaderboard.csv``).

Cells read ``mean ± 95 % CI half-width (Δ ±x*)``; every value that came from a suite or a run is
escaped for its format (Markdown inline markup and block starts; CSV formulas).
"""
from __future__ import annotations

import csv
import html
import io
import math
import re
from typing import TYPE_CHECKING

from bench import stats
from bench.metrics.base import Column

if TYPE_CHECKING:
    from bench.leaderboard import Leaderboard, Row


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4g}"


def half_width(est: stats.Estimate | None, level: float = 0.95) -> float | None:
    ci = est.ci(level) if est else None
    return None if ci is None else (ci[1] - ci[0]) / 2


def _cell(board: Leaderboard, row: Row, key: str) -> str:
    """``mean ± 95 % CI half-width (Δ ±x*)``; ``*``: Δ's CI excludes 0."""
    e = row.estimate(key)
    if e is None:
        return "—"
    s = _fmt(e.mean)
    hw = half_width(e)
    if hw is not None:
        s += f" ± {_fmt(hw)}"
    d = board.delta(row, key)
    if d is not None:
        s += f" (Δ {'+' if d >= 0 else ''}{_fmt(d)}{'*' if board.significant(row, key) else ''})"
    return s


def _header(key: str, col: Column) -> str:
    return f"{col.title}{f' [{col.unit}]' if col.unit else ''}{' ' + col.arrow if col.arrow else ''}"


_MD_INLINE = re.compile(r"([\\`*_\[\]#!|~])")
_MD_BLOCK_START = re.compile(r"^(\s*)([-+=]|\d+[.)])")


def md_escape(text: object, one_line: bool = True) -> str:
    """``text`` as literal Markdown: ``& < >`` as HTML entities, Markdown punctuation backslashed.

    For user-provided strings (suite name and description, method names, claim names, papers,
    evidence): they render as typed, with no raw HTML, link, image or emphasis, and no ``|``
    ending a table cell. ``one_line`` folds newlines (a table cell); otherwise each line is kept
    and a line that would open a list, a heading underline or a block quote is escaped too.
    """
    s = _MD_INLINE.sub(r"\\\1", html.escape(str(text), quote=False))
    if one_line:
        return " ".join(s.split())
    return "\n".join(_MD_BLOCK_START.sub(_escape_marker, line) for line in s.splitlines())


def _escape_marker(m: re.Match) -> str:
    marker = m.group(2)
    return m.group(1) + (marker[:-1] + "\\" + marker[-1])  # "- x" -> "\- x", "1. x" -> "1\. x"


def _md_cell(text: str) -> str:
    """A harness-made string (column title) in a table cell: HTML and ``|`` escaped only."""
    return html.escape(text, quote=False).replace("|", "\\|")


def to_markdown(board: Leaderboard) -> str:
    b = board.baseline
    floor = next((r.method for r in board.rows if r.reference), None)
    lines = [f"## Leaderboard: {md_escape(board.suite.name)}", ""]
    if board.suite.description:
        lines += [md_escape(board.suite.description.strip(), one_line=False), ""]
    hdr = ["method", "seeds"] + [_md_cell(_header(k, c)) for k, c in board.columns.items()]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "|".join(["---"] * len(hdr)) + "|")
    for r in board.rows:
        name = f"{md_escape(r.method)}{' (baseline)' if r.baseline else ''}{' (floor)' if r.reference else ''}"
        cells = [name, "—" if r.reference else str(len(r.seeds))] + [_cell(board, r, k) for k in board.columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Values: mean ± 95% CI half-width ({md_escape(board.uncertainty_source())})"
              f"{'; Δ = mean difference vs ' + md_escape(b.method) + ', * where its 95% CI excludes 0' if b else ''}. "
              "↑ higher is better, ↓ lower is better, no arrow: descriptive statistic. "
              + (f"Row '{md_escape(floor)}': each distance between two independent real sets at the same n and instrument "
                 "(n first test vs n class-balanced train images): what a fresh real sample scores at this n (a perfect generator; a reconstruction can reach 0). "
                 if floor else "") +
              "Built from MLflow finished runs whose config hash matches the suite."]
    if board.premises:
        lines += ["", "### Premises", "", "| premise | assertion | state | basis | evidence |", "|---|---|---|---|---|"]
        for p in board.premises:
            lines.append(f"| {md_escape(p.name)} | {_md_code(p.assertion)} | **{md_escape(p.state)}** | "
                         f"{md_escape(p.basis)} | {md_escape(p.detail)} |")
    if board.claims:
        from bench.claims import aa_phrase

        lines += ["", "### Claims", "", f"One-seed basis: {md_escape(board.noise_note)}.", "",
                  "| claim | paper | assertion | verdict | basis | A/A | evidence |", "|---|---|---|---|---|---|---|"]
        for v in board.claims:
            lines.append(f"| {md_escape(v.name)} | {md_escape(v.paper)} | {_md_code(v.assertion)} | "
                         f"**{md_escape(v.verdict)}** | {md_escape(getattr(v, 'basis', ''))} | "
                         f"{md_escape(aa_phrase(v.aa)) if getattr(v, 'aa', None) else '—'} | {md_escape(v.detail)} |")
    return "\n".join(lines) + "\n"


def _md_code(text: str) -> str:
    """``text`` as an inline code span in a table cell (``|x|`` would end the cell; a backtick the span)."""
    s = " ".join(str(text).split()).replace("|", "\\|")
    return f"`` {s} ``" if "`" in s else f"`{s}`"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(x: object) -> object:
    """A CSV cell that spreadsheets do not run: a string starting with ``= + - @`` (or tab/CR) gets a
    leading ``'`` (OWASP CSV injection); numbers, including negative ones, are left as they are."""
    if isinstance(x, str) and x.startswith(_FORMULA_START):
        try:
            float(x)
            return x  # "-1.5" is a number, not a formula
        except ValueError:
            return "'" + x
    return x


def to_csv(board: Leaderboard) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    head = ["method", "label", "baseline", "n_seeds", "seeds", "config_hash"]
    for k in board.columns:
        head += [f"{k}_mean", f"{k}_std", f"{k}_se", f"{k}_delta", f"{k}_to_floor"]
    w.writerow([csv_safe(x) for x in head])
    for r in board.rows:
        line = [r.method, r.label, r.baseline, len(r.seeds), " ".join(map(str, r.seeds)), r.config_hash]
        for k in board.columns:
            e = r.estimate(k)
            line += [r.mean(k), r.std(k), e.se if e else None, board.delta(r, k), board.to_floor(r, k)]
        w.writerow(["" if x is None else csv_safe(x) for x in line])
    if board.claims:
        w.writerow([])
        w.writerow(["claim", "paper", "assertion", "verdict", "evidence"])
        for v in board.claims:
            w.writerow([csv_safe(x) for x in (v.name, v.paper, v.assertion, v.verdict, v.detail)])
    return buf.getvalue()
