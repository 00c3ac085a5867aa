"""The leaderboard in a terminal: a ``rich`` table that fits the console width (default 120).

One line per method; short column ids (``Column.short``, else the key) with a legend below
(full title with its instrument and n, unit, what the ± measures); each cell is
``mean ±h`` (h = 95 % CI half-width, :mod:`bench.stats`) and, for a non-baseline row, ``Δ`` vs the
baseline, coloured green (better) / red (worse) only where its 95 % CI excludes 0 and only for
scores and costs (descriptive statistics are never coloured). Columns that do not fit are listed
under the table (``wide`` prints every column, ``columns`` selects). The claims follow as a
compact list with their verdicts.
"""
from __future__ import annotations

import io
import math
from typing import Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.metrics.base import COST, DESCRIPTIVE, GROUPS
from bench.suite import Suite  # noqa: F401 - for type readers

VERDICT_STYLE = {"supported": "bold green", "contradicted": "bold red", "inconclusive": "yellow",
                 "untestable here": "magenta", "degenerate": "magenta"}
PREMISE_STYLE = {"holds": "green", "fails": "bold red", "not established": "yellow"}
KIND_ORDER = {"score": 0, COST: 1, DESCRIPTIVE: 2}


def num(x: float | None, digits: int = 4) -> str:
    """Compact number: ``digits`` significant figures, scientific outside [1e-3, 1e5)."""
    if x is None or not math.isfinite(x):
        return "—"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{max(1, digits - 2)}e}"
    return f"{x:.{digits}g}"


def short_id(key: str, col) -> str:
    return col.short or key


def header(key: str, col) -> str:
    return short_id(key, col) + (col.arrow or "")


def cell(board, row, key: str) -> Text:
    """``mean ±h Δd`` as rich Text; Δ coloured only where significant (scores and costs)."""
    from bench.board_tables import half_width

    e = row.estimate(key)
    if e is None:
        return Text("—", style="dim")
    hw = half_width(e)
    t = Text(num(e.mean) + (f"±{num(hw, 2)}" if hw is not None else ""))
    d = board.delta(row, key)
    if d is not None:
        col = board.columns[key]
        style = "dim"
        if board.significant(row, key):
            better = (d > 0) == bool(col.higher_is_better)
            style = "green" if better else "red"
        t.append(f" Δ{'+' if d >= 0 else ''}{num(d, 2)}{'*' if board.significant(row, key) else ''}", style=style)
    return t


def ordered_keys(board) -> list[str]:
    """Columns by group (quality, likelihood, representation, cost, descriptive), suite order within."""
    keys = list(board.columns)
    return sorted(keys, key=lambda k: (GROUPS.index(board.columns[k].group), keys.index(k)))


def _width(texts: Iterable[str]) -> int:
    return max((len(t) for t in texts), default=1)


def claim_keys(suite) -> list[str]:
    """The metric keys the suite's claims and premises are about (in order of appearance)."""
    from bench.claim_grammar import ClaimSyntaxError, parse_assertion

    out: list[str] = []
    for c in [*getattr(suite, "premises", []), *getattr(suite, "claims", [])]:
        try:
            out += [r.key for r in parse_assertion(c.assert_).refs]
        except (ClaimSyntaxError, AttributeError):
            continue
    return list(dict.fromkeys(out))


def select_columns(board, width: int = 120, wide: bool = False, columns: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(shown keys, hidden keys): ``columns`` if given (unknown ids raise ValueError), everything
    with ``wide``, else greedily (the suite's ``leaderboard.terminal`` keys first, then by group order)
    while the table stays within ``width``; the columns the suite's claims and premises use are always
    shown (after ``leaderboard.terminal``), even past ``width``."""
    keys = ordered_keys(board)
    if columns:
        by_id = {short_id(k, board.columns[k]): k for k in keys} | {k: k for k in keys}
        bad = [c for c in columns if c not in by_id]
        if bad:
            raise ValueError(f"--columns: unknown column(s) {bad}; known: {[short_id(k, board.columns[k]) for k in keys]}")
        shown = [by_id[c] for c in columns]
        return shown, [k for k in keys if k not in shown]
    if wide:
        return keys, []
    first = [k for k in (getattr(getattr(board.suite, "leaderboard", None), "terminal", None) or []) if k in keys]
    claimed = [k for k in claim_keys(board.suite) if k in keys and k not in first]
    first += claimed
    keys = first + [k for k in keys if k not in first]  # leaderboard.terminal, then the claims' columns
    used = _width([r.method + (" (b)" if r.baseline else "") for r in board.rows] + ["method"]) + 3 + 5  # + seeds
    shown, hidden = [], []
    for k in keys:
        w = _width([header(k, board.columns[k])] + [cell(board, r, k).plain for r in board.rows]) + 3
        if k in claimed:  # a claim's column is always shown, however narrow the terminal
            shown.append(k)
            used += w
        elif used + w <= width - 1 and not hidden:
            shown.append(k)
            used += w
        else:
            hidden.append(k)
    return shown, hidden


def table(board, shown: list[str]) -> Table:
    t = Table(title=f"{board.suite.name} leaderboard", title_justify="left", header_style="bold",
              pad_edge=False, expand=False, show_lines=False)
    t.add_column("method", no_wrap=True, overflow="ellipsis", max_width=24)
    t.add_column("n", justify="right", no_wrap=True)
    for k in shown:
        t.add_column(header(k, board.columns[k]), justify="right", no_wrap=True)
    for r in board.rows:
        name = Text(r.method + (" (b)" if r.baseline else ""), style="bold" if r.baseline else ("dim" if r.reference else ""))
        t.add_row(name, "—" if r.reference else str(len(r.seeds)), *[cell(board, r, k) for k in shown])
    return t


def legend_lines(board, shown: list[str], hidden: list[str]) -> list[Text]:
    lines = []
    for k in shown:
        c = board.columns[k]
        ns = sorted({len(r.per_seed.get(k) or []) for r in board.methods} - {0})
        bits = [c.title + (f" [{c.unit}]" if c.unit else ""), c.group + (f" ({c.kind})" if c.kind not in ("score", c.group) else ""),
                f"{'/'.join(map(str, ns)) or '0'} seed(s)", c.uncertainty and f"± {c.uncertainty}"]
        lines.append(Text.assemble((f"  {header(k, c)}", "bold"), ": " + " · ".join(b for b in bits if b)))
    src = board.uncertainty_source()
    b = board.baseline
    lines.append(Text(f"  ± = 95% CI half-width ({src}); Δ vs baseline {b.method if b else '(none)'}"
                      " (b), * = its 95% CI excludes 0; no arrow = descriptive, never coloured", style="dim"))
    if any(r.reference for r in board.rows):
        lines.append(Text("  real vs real = the floor: the same distance between n test and n class-balanced train "
                          "images (same instrument); the gap to it is in the CSV/JSON (to_floor)", style="dim"))
    if hidden:
        ids = ", ".join(short_id(k, board.columns[k]) for k in hidden)
        lines.append(Text(f"  {len(hidden)} more column(s): {ids} (--wide shows all, --columns a,b selects)", style="dim"))
    return lines


def premise_lines(board) -> list[Text]:
    out = []
    for p in board.premises:
        ev = "; ".join(f"{num(x.get('estimate'), 3)} [{num(x['ci'][0], 3)}, {num(x['ci'][1], 3)}]" if "ci" in x
                       else x.get("why", "") for x in p.parts)
        out.append(Text.assemble((f"  {p.state.upper():<16}", PREMISE_STYLE.get(p.state, "")), (p.name, "bold"),
                                 f": {p.assertion} — {p.basis}; {ev}"))
    return out


def claim_lines(board) -> list[Text]:
    from bench.claim_stats import AA_MAX

    out = []
    for v in board.claims:
        parts = [p for p in v.parts if "ci" in p]
        ev = "; ".join(f"{num(p.get('estimate'), 3)} [{num(p['ci'][0], 3)}, {num(p['ci'][1], 3)}]"
                       + (f" mde {num(p['mde'], 2)}" if p.get("mde") is not None else "")
                       + (f", ~{p['seeds_needed']} seeds/arm" if p.get("seeds_needed") else "") for p in parts)
        if not parts:
            ev = next((p["why"] for p in v.parts if p.get("why")), v.parts[0]["detail"].split("; ")[-1] if v.parts else v.detail)
        if getattr(v, "blocked_by", None):
            ev = "needs " + ", ".join(f"{b['name']} ({b['state']})" for b in v.blocked_by) + "; test: " + ev
        aa = getattr(v, "aa", None)
        if aa and aa.get("rate") is not None:
            ev += f"; A/A {100 * aa['rate']:.0f}%" + (" > 10%: not decided" if aa["rate"] > AA_MAX and getattr(
                v, "statistical_verdict", "") in ("supported", "contradicted") else "")
        out.append(Text.assemble((f"  {v.verdict.upper():<16}", VERDICT_STYLE.get(v.verdict, "")),
                                 (v.name, "bold"), f": {v.assertion} — {getattr(v, 'basis', '') or ''}"
                                 f"{'; ' if getattr(v, 'basis', '') else ''}{ev}"))
    return out


def render(board, width: int = 120, wide: bool = False, columns: list[str] | None = None,
           console: Console | None = None) -> Console:
    """Print the board to ``console`` (default: a new one of ``width`` columns); returns the console."""
    console = console or Console(width=width)
    shown, hidden = select_columns(board, console.width, wide, columns)
    console.print(table(board, shown))
    for line in legend_lines(board, shown, hidden):
        console.print(line)
    if board.premises:
        console.print(Text("premises (a claim that needs one that does not hold is untestable here)", style="bold"))
        for line in premise_lines(board):
            console.print(line)
    if board.claims:
        console.print(Text(f"claims (one-seed basis: {board.noise_note})", style="bold"))
        for line in claim_lines(board):
            console.print(line)
    return console


def to_text(board, width: int = 120, wide: bool = False, columns: list[str] | None = None) -> str:
    """The rendering as plain text (recorded from a ``width``-column console, no colour codes)."""
    con = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    render(board, width, wide, columns, con)
    return con.export_text()
