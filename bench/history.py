"""``bench history``: each headline metric of each method over the git commits of the runs in the store.

asv-style regression tracking from what is already logged: every cell run carries the commit it
ran at (tag ``bench.git_sha``, :mod:`bench.provenance`; ``-dirty`` when the work tree had changes).
Runs are grouped by commit and method (the method's name, not its config hash, so a method whose
config changed stays one line), averaged over seeds; commits are ordered by their first run's start
time. ``bench run --limit`` runs are left out (quick checks, never results). The gate's runs are in
its own store (``bench history SUITE --tracking-uri sqlite:///results/gate/<suite>/mlflow.db``), so
``bench gate --reuse`` keeps a history there too.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.tracking import TAG, Tracker


@dataclass
class History:
    """``values[metric][method][sha]`` = per-seed values at that commit; ``commits``: (sha, first start ms), in order."""

    suite: str
    metrics: list[str]
    methods: list[str]
    commits: list[tuple[str, int]]
    values: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)

    def mean(self, metric: str, method: str, sha: str) -> float | None:
        v = self.values.get(metric, {}).get(method, {}).get(sha)
        return sum(v) / len(v) if v else None


def headline_metrics(suite) -> list[str]:
    """The suite's columns that have a direction (higher or lower is better), in board order."""
    from bench.leaderboard import all_columns

    return [k for k, c in all_columns(suite).items() if c.higher_is_better is not None]


def collect(suite, tracker: Tracker, metrics: list[str] | None = None) -> History:
    metrics = list(metrics) if metrics else headline_metrics(suite)
    methods = [m.name for m in suite.methods]
    exp = tracker.experiment_id(suite.name, create=False)
    first: dict[str, int] = {}
    values: dict[str, dict[str, dict[str, list[float]]]] = {m: defaultdict(lambda: defaultdict(list)) for m in metrics}
    for run in (tracker.cell_runs(exp) if exp is not None else []):
        t = run.data.tags
        if t.get(f"{TAG}limit") or t.get(f"{TAG}method") not in methods:
            continue
        sha = t.get(f"{TAG}git_sha", "unknown")
        first[sha] = min(first.get(sha, run.info.start_time), run.info.start_time)
        for k in metrics:
            v = run.data.metrics.get(k)
            if v is not None and math.isfinite(v):
                values[k][t[f"{TAG}method"]][sha].append(v)
    commits = sorted(first.items(), key=lambda x: x[1])
    return History(suite.name, metrics, methods, commits, {k: {m: dict(s) for m, s in v.items()} for k, v in values.items()})


def _short(sha: str) -> str:
    return sha[:10] + ("-dirty" if sha.endswith("-dirty") else "")


def to_text(h: History) -> str:
    """One table per metric: a line per commit (oldest first), a column per method (seed mean, [n seeds])."""
    import time

    if not h.commits:
        return f"{h.suite}: no finished cell runs in this store"
    out = []
    for k in h.metrics:
        methods = [m for m in h.methods if h.values.get(k, {}).get(m)]
        if not methods:
            out.append(f"{k}: no values")
            continue
        head = ["commit", "first run"] + methods
        rows = []
        prev: dict[str, float] = {}
        for sha, ms in h.commits:
            cells = []
            for m in methods:
                v = h.mean(k, m, sha)
                if v is None:
                    cells.append("")
                    continue
                n = len(h.values[k][m][sha])
                moved = "" if m not in prev or prev[m] == v else (" ▲" if v > prev[m] else " ▼")
                cells.append(f"{v:.4g} [{n}]{moved}")
                prev[m] = v
            rows.append([_short(sha), time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))] + cells)
        widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
        fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
        out += [f"{k}  (seed mean [seeds]; ▲/▼ moved since the method's previous commit)", fmt(head),
                "  ".join("-" * w for w in widths), *map(fmt, rows), ""]
    return "\n".join(out).rstrip() + "\n"


def plot(h: History, path: Path) -> Path:
    """One panel per metric: each method's seed mean against the commits (matplotlib, Agg), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(h.metrics), 1)
    fig, axes = plt.subplots(n, 1, figsize=(max(6, 1.2 * len(h.commits) + 3), 2.6 * n), squeeze=False)
    labels = [_short(s) for s, _ in h.commits]
    for ax, k in zip(axes[:, 0], h.metrics):
        for m in h.methods:
            ys = [h.mean(k, m, s) for s, _ in h.commits]
            if any(y is not None for y in ys):
                xs = [i for i, y in enumerate(ys) if y is not None]
                ax.plot(xs, [ys[i] for i in xs], marker="o", label=m)
        ax.set_title(k, fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"{h.suite}: metrics over commits", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the gate's runs into a history store ------------------------------------------------------------
HISTORY_TAG = f"{TAG}history."
"""Tags a recorded run carries: ``source_run`` (its run id in the gate's store), ``source_store``,
``gate_verdict`` (PASS / FAIL of the gate run that compared it)."""
_DROPPED = ("mlflow.parentRunId", f"{TAG}lease.", f"{TAG}pid", f"{TAG}host")


def record(run_ids: list[str], src: Tracker, history_uri: str, suite_name: str, verdict: str) -> tuple[int, int]:
    """Copy the cell runs ``run_ids`` of ``src`` (the gate's own store, emptied with its work directory
    in CI) into the store at ``history_uri`` (a lasting sqlite file or a tracking server), experiment
    ``suite_name``: tags (commit, method, seed, config hash) and final metric values, with the original
    start and end times, so ``bench history SUITE --tracking-uri HISTORY_URI`` orders and tabulates
    them. Params and artefacts are not copied (the gate's store has them). A run already recorded
    (same source run id) is skipped, so ``bench gate --reuse`` never counts one run twice.
    Returns (recorded, already there)."""
    from mlflow.entities import Metric

    dst = Tracker(history_uri)
    exp = dst.experiment_id(suite_name)
    have = {r.data.tags.get(f"{HISTORY_TAG}source_run") for r in dst.cell_runs(exp)}
    copied = skipped = 0
    for rid in run_ids:
        if rid in have:
            skipped += 1
            continue
        run = src.client.get_run(rid)
        tags = {k: v for k, v in run.data.tags.items() if not k.startswith(_DROPPED)}
        tags |= {f"{HISTORY_TAG}source_run": rid, f"{HISTORY_TAG}source_store": src.uri,
                 f"{HISTORY_TAG}gate_verdict": verdict}
        new = dst.client.create_run(exp, start_time=run.info.start_time, run_name=run.info.run_name,
                                    tags=tags).info.run_id
        ts = run.info.end_time or run.info.start_time
        metrics = [Metric(k, float(v), ts, 0) for k, v in run.data.metrics.items()]
        for i in range(0, len(metrics), 500):
            dst.client.log_batch(new, metrics=metrics[i:i + 500])
        dst.client.set_terminated(new, status="FINISHED", end_time=run.info.end_time)
        copied += 1
    return copied, skipped
