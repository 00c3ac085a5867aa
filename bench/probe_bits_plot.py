"""The probe-accuracy-vs-prefix-bits figure of a suite with the ``probe`` metric.

One line per method: x = the prefix capacity bits_k = sum_{s<k} log2 K_s of the first k tokens
(column ``prefix_bits_k<k>``, mean over seeds), y = probe@k top-1 (``probe_k<k>``, mean ± std over
seeds), one point per k of the probe's ``ks``, annotated with k. At equal k two tokenizers with
different codebook schedules carry different bits; on this plot they are compared at equal capacity.
"""
from __future__ import annotations

import re
from pathlib import Path

PROBE_KEY = re.compile(r"^probe_k(?P<k>\d+|all)$")
FIGURE_NAME = "probe_vs_prefix_bits.png"


def probe_points(columns) -> list[tuple[str, str, str]]:
    """[(k, probe column, prefix-bits column), ...] for every probe@k whose bits column exists."""
    out = []
    for key in columns:
        m = PROBE_KEY.match(key)
        if m and f"prefix_bits_k{m['k']}" in columns:
            out.append((m["k"], key, f"prefix_bits_k{m['k']}"))
    return out


def probe_vs_bits(board, out_dir: Path) -> list[Path]:
    """Write ``probe_vs_prefix_bits.png`` into ``out_dir`` if the board has probe and bits columns."""
    points = probe_points(board.columns)
    if not points:
        return []
    lines = []
    for row in board.rows:
        pts = []
        for k, pkey, bkey in points:
            x, y = row.mean(bkey), row.mean(pkey)
            if x is not None and y is not None:
                pts.append((x, y, row.std(pkey) or 0.0, k))
        if pts:
            lines.append((row, sorted(pts)))
    if not lines:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for row, pts in lines:
        xs, ys, es, ks = zip(*pts)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3,
                    label=f"{row.label}{' (baseline)' if row.baseline else ''}")
        for x, y, k in zip(xs, ys, ks):
            ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.set_xlabel("prefix bits  sum_{s<k} log2 K_s  [bits]")
    ax.set_ylabel(f"{board.columns[points[0][1]].title.split(' (')[0].split('@')[0]}@k top-1 {board.columns[points[0][1]].arrow}")
    ax.set_title(f"{board.suite.name}: linear probe on the first k tokens vs their capacity", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out_dir) / FIGURE_NAME
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
