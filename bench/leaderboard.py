"""Leaderboards, built only from MLflow runs (never from hand-kept files).

For each method of a suite, the cells considered are the FINISHED cell runs whose config hash
equals the method's *current* config hash (so values computed with another extractor, sample
count or budget never share a column), latest run per seed. One row per method: mean ± std over
seeds, the seed count, and Δ (mean difference) vs the baseline row. Uncertainty
(:mod:`bench.stats`): the standard error of the mean from the seed spread (>= 2 seeds), the
metrics' within-cell sampling errors (``<key>_stderr``, 1 seed), or both combined; cells show
mean ± 95 % CI half-width and a Δ whose 95 % CI excludes 0 is marked ``*``. Renderers:
:mod:`bench.board_tables` (Markdown, CSV), :mod:`bench.board_terminal` (rich),
:mod:`bench.board_html` (self-contained HTML), :mod:`bench.board_export` (lm-eval-style JSON).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import registry, stats
from bench.board_tables import to_csv, to_markdown
from bench.context import results_dir
from bench.metrics.base import Column, all_columns
from bench.plan import config_hash
from bench.suite import Suite
from bench.tracking import TAG, Tracker

TIME_COLUMN = Column("cell time", higher_is_better=False, unit="s", kind="cost", short="time")
BREAKDOWN_COLUMNS = {  # where the cell time went (bench.cell_timing): descriptive, in the cost group
    "time_train_s": Column("train (s)", None, unit="s", group="cost", short="train"),
    "time_method_s": Column("method sampling/encoding (s)", None, unit="s", group="cost", short="method"),
    "time_instrument_s": Column("instrument forwards (s)", None, unit="s", group="cost", short="instr"),
    "time_metric_s": Column("metric arithmetic (s)", None, unit="s", group="cost", short="metric"),
    "time_harness_share": Column("harness share of cell time", None, group="cost", short="harness"),
}


@dataclass
class Row:
    method: str
    label: str
    baseline: bool
    config_hash: str
    seeds: list[int] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    per_seed: dict[str, list[float]] = field(default_factory=dict)  # metric key -> one value per seed
    reference: bool = False  # the "real vs real" floor row: no Δ, no claims, never sorted among methods
    noise: Any = None  # the suite's seed-noise model (bench.seed_noise): one-seed intervals include its SD

    def mean(self, key: str) -> float | None:
        v = self.per_seed.get(key) or []
        return statistics.fmean(v) if v else None

    def std(self, key: str) -> float | None:
        v = self.per_seed.get(key) or []
        return statistics.stdev(v) if len(v) > 1 else None

    def estimate(self, key: str) -> stats.Estimate | None:
        """Mean with its SE over seeds and/or within-cell sampling error (:func:`bench.stats.estimate`);
        one seed with a seed-noise model: sampling error + the model's between-seed SD."""
        values = self.per_seed.get(key) or []
        noise = None
        if len(values) == 1 and self.noise is not None and not self.reference:
            mn = self.noise.noise(key)
            if mn is not None:
                noise = (mn.at(float(values[0])), mn.df)
        return stats.estimate(values, self.per_seed.get(f"{key}_stderr"), noise, f"model:{key}")


@dataclass
class Leaderboard:
    suite: Suite
    columns: dict[str, Column]
    rows: list[Row]
    claims: list = field(default_factory=list)  # bench.claims.ClaimVerdict
    premises: list = field(default_factory=list)  # bench.claims.PremiseVerdict
    noise_note: str = ""  # the seed-noise model in use, or why there is none
    figures: list[Path] = field(default_factory=list)
    tracker: Any = None  # the bench.tracking.Tracker the rows came from (HTML artifacts, run links)

    @property
    def baseline(self) -> Row | None:
        return next((r for r in self.rows if r.baseline), None)

    @property
    def methods(self) -> list[Row]:
        """The method rows (without the reference floor row)."""
        return [r for r in self.rows if not r.reference]

    def floor(self, key: str) -> float | None:
        """The real-vs-real floor of column ``key`` (None when the column has none)."""
        ref = next((r for r in self.rows if r.reference), None)
        return ref.mean(key) if ref else None

    def to_floor(self, row: Row, key: str) -> float | None:
        """``row``'s mean minus the real-vs-real floor of ``key`` (how far from "perfect" at this n)."""
        f, m = self.floor(key), row.mean(key)
        return None if f is None or m is None or row.reference else m - f

    def delta(self, row: Row, key: str) -> float | None:
        b = self.baseline
        if b is None or row is b or row.reference:
            return None
        m, bm = row.mean(key), b.mean(key)
        return None if m is None or bm is None else m - bm

    def delta_ci(self, row: Row, key: str, level: float = 0.95) -> tuple[float, float, float] | None:
        """(Δ, lo, hi) vs the baseline row from both rows' SEs (:func:`bench.stats.difference`)."""
        b = self.baseline
        if b is None or row is b or row.reference:
            return None
        return stats.difference(row.estimate(key), b.estimate(key), level)

    def significant(self, row: Row, key: str) -> bool:
        """Whether the 95 % CI of Δ excludes 0 (never for a descriptive column: it has no better side,
        and never when a side's interval lacks the between-seed spread: one seed without a seed-noise model)."""
        col = self.columns.get(key)
        b = self.baseline
        if b is None or row is b or row.reference:
            return False
        ea, eb = row.estimate(key), b.estimate(key)
        if ea is None or eb is None or not (ea.has_seed_noise and eb.has_seed_noise):
            return False
        d = self.delta_ci(row, key)
        return bool(d and not (col and col.descriptive) and (d[1] > 0 or d[2] < 0))

    def uncertainty_source(self) -> str:
        """What the ± of this board measures, over all its cells ('seed spread', 'sampling error', both)."""
        srcs = {e.source for r in self.rows for k in self.columns if (e := r.estimate(k)) and e.source}
        if not srcs:
            return "no uncertainty (1 seed and no within-cell sampling error logged)"
        return " / ".join(sorted(srcs))


def collect(suite: Suite, tracker: Tracker) -> list[Row]:
    """One :class:`Row` per suite method from the tracker's finished cell runs (latest per seed)."""
    registry.load_light()  # adapters and metrics are imported by name where needed (registry.get)
    exp = tracker.experiment_id(suite.name, create=False)
    rows = []
    for m in suite.methods:
        h = config_hash(suite, m)
        row = Row(m.name, m.label or m.name, m.baseline, h)
        if exp is not None:
            seen = set()
            for run in tracker.cell_runs(exp, h):  # newest first
                seed = int(run.data.tags[f"{TAG}seed"])
                if seed in seen:
                    continue
                seen.add(seed)
                row.seeds.append(seed)
                row.run_ids.append(run.info.run_id)
                for k, v in run.data.metrics.items():
                    row.per_seed.setdefault(k, []).append(v)
        order = sorted(range(len(row.seeds)), key=lambda i: row.seeds[i])
        row.seeds = [row.seeds[i] for i in order]
        row.run_ids = [row.run_ids[i] for i in order]
        rows.append(row)
    return rows


FLOOR_METHOD = "real vs real"


def floor_row(rows: list[Row], columns: dict[str, Column]) -> Row | None:
    """The reference row: for each column ``k`` with a logged ``<k>_floor`` (Fréchet family,
    :meth:`bench.metrics.frechet.FrechetMetric.floor`), the distance between two independent real
    sets at the same n and instrument; one value (the floor is the same in every cell that logs it)."""
    ref = Row(FLOOR_METHOD, "floor: n test vs n class-balanced train images, same instrument", False, "",
              reference=True)
    for k in columns:
        for suffix in ("", "_stderr"):
            src = next((r for r in rows if r.per_seed.get(f"{k}_floor{suffix}")), None)
            if src is not None:
                ref.per_seed[f"{k}{suffix}"] = [src.per_seed[f"{k}_floor{suffix}"][0]]
    if not ref.per_seed:
        return None
    ref.seeds = [0]
    return ref


def build(suite: Suite, tracker: Tracker) -> Leaderboard:
    """Collect rows, order them by the suite's ``leaderboard.sort_by``, evaluate its claims."""
    cols = all_columns(suite)
    if suite.leaderboard.columns:
        unknown = [c for c in suite.leaderboard.columns if c not in cols and c != "cell_seconds"]
        if unknown:
            from bench.errors import SuiteError

            raise SuiteError(f"{suite.source}: leaderboard.columns: unknown column(s) {unknown}; known: {list(cols)}")
        cols = {k: cols.get(k, TIME_COLUMN) for k in suite.leaderboard.columns}
    else:
        cols["cell_seconds"] = TIME_COLUMN
    bad = [c for c in (suite.leaderboard.terminal or []) if c not in cols]
    if bad:
        from bench.errors import SuiteError

        raise SuiteError(f"{suite.source}: leaderboard.terminal: unknown column(s) {bad}; known: {list(cols)}")
    rows = collect(suite, tracker)
    if not suite.leaderboard.columns:  # the time breakdown, where the runs logged one (older runs did not)
        cols.update({k: c for k, c in BREAKDOWN_COLUMNS.items() if any(k in r.per_seed for r in rows)})
    from bench.claims import context_for

    ctx = context_for(suite)
    for r in rows:
        r.noise = ctx.noise
    key = suite.leaderboard.sort_by
    if key:
        sign = -1 if (cols.get(key) and cols[key].higher_is_better) else 1
        rows.sort(key=lambda r: (r.mean(key) is None, sign * (r.mean(key) or 0.0)))
    floor = floor_row(rows, cols)
    board = Leaderboard(suite, cols, rows + ([floor] if floor else []), tracker=tracker, noise_note=ctx.noise_note)
    if suite.claims or suite.premises:
        from bench.claims import evaluate_claims, evaluate_premises

        board.premises = evaluate_premises(suite, rows, ctx)
        board.claims = evaluate_claims(suite, rows, ctx, board.premises)
    return board


def make_figures(board: Leaderboard, out_dir: Path) -> list[Path]:
    """Figures contributed by adapter classes: an optional classmethod
    ``leaderboard_figures(board, out_dir) -> list[Path]`` (called once per adapter class), and the
    quality-vs-NFE plot of a suite with an NFE sweep (:mod:`bench.nfe_plot`), the entropy curves
    of :mod:`bench.board_figures` (PEFT Pareto plots come from the PEFT adapters' hook)."""
    figs: list[Path] = []
    seen = set()
    for m in board.suite.methods:
        cls = registry.get(registry.ADAPTERS, "adapter", m.adapter)
        fn = getattr(cls, "leaderboard_figures", None)
        if fn is None or fn.__func__ in seen:
            continue
        seen.add(fn.__func__)
        figs += list(fn(board, out_dir) or [])
    from bench.board_figures import suite_figures
    from bench.nfe_plot import quality_vs_nfe

    return figs + quality_vs_nfe(board, out_dir) + suite_figures(board, out_dir)  # each when it has data


def write(board: Leaderboard, out_dir: Path | None = None, formats=("md", "csv", "html", "json")) -> dict[str, Path]:
    """Write ``leaderboard.{md,csv,html,json}`` (and figures) to ``results/<suite>/``; return the paths.
    ``json``: :func:`bench.board_export.to_json` (lm-eval-style results)."""
    from bench.context import under_results

    out_dir = out_dir or under_results(results_dir() / board.suite.name, f"suite {board.suite.name!r}: leaderboard directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    board.figures = make_figures(board, out_dir)
    paths = {}
    for fmt in formats:
        p = out_dir / f"leaderboard.{fmt}"
        from bench.board_export import to_json
        from bench.board_html import render as render_html

        content = {"md": to_markdown, "csv": to_csv, "json": to_json, "html": render_html}[fmt](board)
        p.write_text(content)
        paths[fmt] = p
    return paths
