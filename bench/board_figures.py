"""Suite-level figures built from a leaderboard (``(board, out_dir) -> list[Path]``, PNG).

* ``entropy_curves.png``: the entropy metric's per-position H_t (MLflow history ``entropy_bits``,
  step = position t) of every method, mean over seeds with min-max band.
* ``pareto_<score>.png``: each cost column vs the suite's first higher-is-better score
  (e.g. the PEFT suites' accuracy vs trainable params / s per step), one point per method with
  its 95 % CI bars; the Pareto front (better score at no more cost) joined by a line.

Both need the board's tracker (the rows' run ids); a board without rows or values gives none.
"""
from __future__ import annotations

from pathlib import Path

ENTROPY_KEY = "entropy_bits"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def entropy_curves(board, out_dir: Path) -> list[Path]:
    """Per-position conditional entropy H_t of each method (needs the ``entropy`` metric's history)."""
    if board.tracker is None or "cliff_position" not in board.columns:
        return []
    curves = {}
    for r in board.rows:
        per_seed = []
        for rid in r.run_ids:
            hist = board.tracker.client.get_metric_history(rid, ENTROPY_KEY)
            if hist:
                per_seed.append([m.value for m in sorted(hist, key=lambda m: m.step)])
        if per_seed:
            curves[r.method] = (r, per_seed)
    if not curves:
        return []
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for r, per_seed in curves.values():
        length = min(len(c) for c in per_seed)
        a = np.array([c[:length] for c in per_seed])
        t = np.arange(length)
        ax.plot(t, a.mean(0), marker="o", ms=3, label=f"{r.label}{' (baseline)' if r.baseline else ''} (n={len(a)})")
        if len(a) > 1:
            ax.fill_between(t, a.min(0), a.max(0), alpha=0.2)
    ax.set_xlabel("position t")
    ax.set_ylabel("H_t [bits] (descriptive)")
    ax.set_title(f"{board.suite.name}: per-position conditional entropy of train tokens", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out_dir) / "entropy_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def pareto(board, out_dir: Path) -> list[Path]:
    """Cost vs score panels (one per cost column) for the first score column with higher_is_better."""
    score = next((k for k, c in board.columns.items() if c.kind == "score" and c.higher_is_better), None)
    costs = [k for k, c in board.columns.items() if c.kind == "cost" and k != "cell_seconds"]
    if score is None or not costs:
        return []
    pts = {k: [(r, r.estimate(k), r.estimate(score)) for r in board.rows] for k in costs}
    costs = [k for k in costs if sum(1 for _, c, s in pts[k] if c and s) >= 2]
    if not costs:
        return []
    plt = _plt()
    n = len(costs)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 3.4), squeeze=False)
    for ax, k in zip(axes[0], costs):
        col = board.columns[k]
        good = [(r, c, s) for r, c, s in pts[k] if c and s]
        for r, c, s in good:
            ci = s.ci()
            yerr = None if ci is None else [[s.mean - ci[0]], [ci[1] - s.mean]]
            ax.errorbar([c.mean], [s.mean], yerr=yerr, marker="o", capsize=3, label=r.label)
        front, best = [], -float("inf")
        for r, c, s in sorted(good, key=lambda x: (x[1].mean, -x[2].mean)):
            if s.mean > best:
                front.append((c.mean, s.mean))
                best = s.mean
        ax.plot(*zip(*front), ls="--", color="grey", lw=1)
        if all(c.mean > 0 for _, c, _ in good):
            ax.set_xscale("log")
        ax.set_xlabel(f"{col.title}{f' [{col.unit}]' if col.unit else ''} ↓", fontsize=8)
        ax.set_ylabel(f"{board.columns[score].title} ↑", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(f"{board.suite.name}: cost vs {score} (Pareto front dashed)", fontsize=9)
    fig.tight_layout()
    path = Path(out_dir) / f"pareto_{score}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def suite_figures(board, out_dir: Path) -> list[Path]:
    """Every suite-level figure of this module that the board has data for."""
    return entropy_curves(board, out_dir) + pareto(board, out_dir)
