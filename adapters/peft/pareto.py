"""Pareto plots of accuracy against each cost, for the leaderboard (peft ``method_comparison`` style).

One PNG, ``pareto_<suite>.png``, with one panel per cost column that the rows carry
(trainable params, adapter layers, adapter bytes, s/step, train time, peak memory, train FLOPs):
each method is a point at its mean over seeds with ±1 std error bars on both axes, and the
Pareto front (no other method is both cheaper and more accurate) is drawn as a step line.
Called through :meth:`adapters.peft.adapter_base.PeftAdapter.leaderboard_figures`.
"""
from __future__ import annotations

from pathlib import Path

ACC = "accuracy"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (minimise x = cost, maximise y = accuracy), by cost."""
    idx = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in idx:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_figures(board, out_dir: Path) -> list[Path]:
    from bench.metrics.peft_cost import COLUMNS

    rows = [r for r in board.rows if r.mean(ACC) is not None]
    costs = [k for k in COLUMNS if any(r.mean(k) is not None for r in rows)]
    if not rows or not costs:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(costs)
    cols = min(4, n)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.0 * cols, 3.4 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, costs):
        col = COLUMNS[key]
        pts = []
        for j, r in enumerate(rows):
            x, y = r.mean(key), r.mean(ACC)
            if x is None:
                continue
            pts.append((x, y, r))
            ax.errorbar(x, y, xerr=r.std(key) or 0.0, yerr=r.std(ACC) or 0.0, fmt="o", capsize=3,
                        color=colors[j % len(colors)], label=r.label)
            ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = pareto_front([(x, y) for x, y, _ in pts])
        if len(front) > 1:
            fx = [pts[i][0] for i in front]
            fy = [pts[i][1] for i in front]
            ax.step(fx, fy, where="post", color="k", alpha=0.4, lw=1, label="Pareto front")
        ax.set_xlabel(f"{col.title}{f' [{col.unit}]' if col.unit else ''} ↓")
        ax.set_ylabel("accuracy ↑")
        xs = [p[0] for p in pts]
        if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        else:
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"{board.suite.name}: accuracy vs cost (mean ± std over seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"pareto_{board.suite.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
