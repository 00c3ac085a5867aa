"""The quality-vs-NFE figure of a suite whose sample metrics sweep the sampler's steps.

Columns ``<key>_nfe<s>`` (:func:`bench.metrics.frechet.sweep_key`) are grouped by ``<key>``: one
panel per metric, one line per method (mean ± std over seeds), x = the measured NFE
(``nfe_steps<s>``, mean over seeds; the asked steps where it was not logged), log scale.
"""
from __future__ import annotations

import re
from pathlib import Path

SWEEP_KEY = re.compile(r"^(?P<base>.+)_nfe(?P<steps>\d+)$")
FIGURE_NAME = "quality_vs_nfe.png"


def sweeps(columns) -> dict[str, list[tuple[int, str]]]:
    """Metric key -> [(steps, column key), ...] sorted by steps, for every swept column."""
    out: dict[str, list[tuple[int, str]]] = {}
    for key in columns:
        m = SWEEP_KEY.match(key)
        if m:
            out.setdefault(m["base"], []).append((int(m["steps"]), key))
    return {k: sorted(v) for k, v in out.items()}


def quality_vs_nfe(board, out_dir: Path) -> list[Path]:
    """Write ``quality_vs_nfe.png`` into ``out_dir`` if the board has swept columns; return its path(s)."""
    groups = sweeps(board.columns)
    if not groups:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.5), squeeze=False)
    for ax, (base, points) in zip(axes[0], groups.items()):
        col = board.columns[points[0][1]]
        for row in board.rows:
            xs, ys, es = [], [], []
            for steps, key in points:
                y = row.mean(key)
                if y is None:
                    continue
                xs.append(row.mean(f"nfe_steps{steps}") or steps)
                ys.append(y)
                es.append(row.std(key) or 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3,
                            label=f"{row.label}{' (baseline)' if row.baseline else ''}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE (measured)")
        ax.set_ylabel(f"{re.sub(r', NFE=[0-9]+', '', col.title)} {col.arrow}")
        ax.set_title(base, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{board.suite.name}: quality vs NFE", fontsize=10)
    fig.tight_layout()
    path = Path(out_dir) / FIGURE_NAME
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
