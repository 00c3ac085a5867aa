"""Suite-level figures built from a leaderboard (``(board, out_dir) -> list[Path]``, PNG).

* ``entropy_curves.png``: the entropy metric's per-position H_t (MLflow history ``entropy_bits``,
  step = position t) of every method, mean over seeds with min-max band.
* ``probe_vs_prefix_bits.png``: probe@k against the prefix capacity bits_k (:mod:`bench.probe_bits_plot`).
* ``reward_vs_nfe.png``, ``reward_vs_quality.png``: the few-step reward curves and Pareto plot (:mod:`bench.fewstep_plots`).

The PEFT suites' cost-vs-accuracy Pareto plots come from their adapters (``leaderboard_figures``,
:mod:`adapters.peft.pareto`) and the quality-vs-NFE plot from :mod:`bench.nfe_plot`; the HTML
report embeds all of ``board.figures``. Needs the board's tracker (the rows' run ids).
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


def suite_figures(board, out_dir: Path) -> list[Path]:
    """Every suite-level figure of this module (and :mod:`bench.probe_bits_plot`, :mod:`bench.fewstep_plots`)
    that the board has data for."""
    from bench.fewstep_plots import fewstep_figures
    from bench.probe_bits_plot import probe_vs_bits

    return entropy_curves(board, out_dir) + probe_vs_bits(board, out_dir) + fewstep_figures(board, out_dir)
