"""The few-step reward figures of a suite with the ``reward_nfe`` metric (embedded in the HTML leaderboard).

* ``reward_vs_nfe.png``: one panel per reward (in-domain first, then out-of-domain), one line per
  method, x = measured NFE (``nfe_steps<s>``, the asked steps where absent), log scale; error bars =
  the 95 % CI of :meth:`bench.leaderboard.Row.estimate`, cut at the reward's range (the y axis is that
  range); one legend under the panels. Methods with their own NFE list
  (``method_steps``, e.g. the multi-step teacher) are drawn dashed, with a dotted horizontal line at
  their value at their largest NFE: the reference a few-step student is read against (TDM-R1,
  arXiv 2603.07700, compares 4-NFE students with 80-100-NFE bases).
* ``reward_vs_quality.png``: per in-domain reward, x = ``fd_bank_nfe<s>`` (FD vs test, lower is
  better; needs ``fewstep_quality``), y = the reward at the same NFE, one point per (method, NFE) labelled
  with the NFE, and the Pareto front over all points (no other point is at least as good in both and
  better in one) as a black dashed line: a reward gain bought with quality sits off the front.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _specs(board) -> list[Any]:
    from bench.metrics.reward_nfe import RewardNFEParams

    return [RewardNFEParams.model_validate(m.params) for m in board.suite.metrics if m.name == "reward_nfe"]


def _points(row, base: str, steps: list[int]) -> list[tuple[int, float, float, float]]:
    """[(steps, x = measured NFE, y = mean, 95 % CI half-width or 0)] of ``<base>_nfe<s>`` where the row has it."""
    out = []
    for s in steps:
        est = row.estimate(f"{base}_nfe{s}")
        if est is None:
            continue
        ci = est.ci()
        out.append((s, row.mean(f"nfe_steps{s}") or float(s), est.mean, (ci[1] - est.mean) if ci else 0.0))
    return out


def clipped_errors(pts: list[tuple[int, float, float, float]], lo: float, hi: float) -> list[list[float]]:
    """Asymmetric error bars [[below], [above]] of ``pts`` (from :func:`_points`) cut at the reward's range
    [lo, hi] (a binary reward's CI over 3 seeds can reach past 0 and 1; the reward cannot)."""
    return [[min(e, m - lo) if lo > float("-inf") else e for _, _, m, e in pts],
            [min(e, hi - m) if hi < float("inf") else e for _, _, m, e in pts]]


def _legend_below(fig, ax, n_panels: int) -> None:
    """One legend for the whole figure under the panels (the curves stay visible); the figure grows by
    0.3 in per legend row."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        fig.tight_layout()
        return
    ncol = max(1, min(len(handles), max(2, n_panels)))
    rows = -(-len(handles) // ncol)
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h + 0.3 * rows)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, min(0.6, 0.05 * rows + 0.02), 1, 1))


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[tuple[float, float]]:
    """The non-dominated (x, y) points, x lower-is-better, y higher- (or lower-) is better, sorted by x."""
    sign = 1.0 if higher_is_better else -1.0
    front = [p for p in points if not any((q[0] <= p[0] and sign * q[1] >= sign * p[1]) and q != p for q in points)]
    return sorted(set(front))


def reward_vs_nfe(board, out_dir: Path) -> list[Path]:
    """Write ``reward_vs_nfe.png`` if the suite has a ``reward_nfe`` metric with values; return its path(s)."""
    from bench.metrics.reward_nfe import RewardAtNFE, all_steps
    from bench.rewards import get_reward

    specs = _specs(board)
    panels = [(name, domain, p) for p in specs for name, _, domain in RewardAtNFE.rewards(p)]
    if not panels or not any(_points(r, f"reward_{n}", all_steps(p)) for n, _, p in panels for r in board.rows):
        return []
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (name, domain, p) in zip(axes[0], panels):
        lo, hi = get_reward(name).range
        for row in board.rows:
            pts = _points(row, f"reward_{name}", all_steps(p))
            if not pts:
                continue
            ref = row.method in p.method_steps
            line = ax.errorbar([q[1] for q in pts], [q[2] for q in pts], yerr=clipped_errors(pts, lo, hi), marker="o",
                               capsize=3, linestyle="--" if ref else "-", mfc="none" if ref else None,
                               label=f"{row.label}{' (baseline)' if row.baseline else ''}{' (reference)' if ref else ''}")
            if ref:
                ax.axhline(pts[-1][2], linestyle=":", color=line[0].get_color(), linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE (measured)")
        ax.set_ylabel(f"reward {name} ({domain})")
        ax.set_title(f"reward_{name} (bank n={p.n})", fontsize=9)
        if lo > float("-inf") and hi < float("inf"):
            pad = 0.03 * (hi - lo)
            ax.set_ylim(lo - pad, hi + pad)
    fig.suptitle(f"{board.suite.name}: reward vs NFE", fontsize=10)
    _legend_below(fig, axes[0][0], len(panels))
    path = Path(out_dir) / "reward_vs_nfe.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def reward_vs_quality(board, out_dir: Path) -> list[Path]:
    """Write ``reward_vs_quality.png`` (the Pareto plot) if the board has rewards and ``fd_bank`` values."""
    from bench.metrics.reward_nfe import all_steps
    from bench.rewards import get_reward

    specs = [p for p in _specs(board) if any(k.startswith("fd_bank_nfe") for k in board.columns)]
    if not specs:
        return []
    plt = _plt()
    fig, axes = plt.subplots(1, len(specs), figsize=(max(11.0, 6.5 * len(specs)), 4.0), squeeze=False)
    drawn = False
    for ax, p in zip(axes[0], specs):
        every = []
        for row in board.rows:
            pts = [(s, row.mean(f"fd_bank_nfe{s}"), row.mean(f"reward_{p.reward}_nfe{s}")) for s in all_steps(p)]
            pts = [q for q in pts if q[1] is not None and q[2] is not None]
            if not pts:
                continue
            ref = row.method in p.method_steps
            line = ax.plot([q[1] for q in pts], [q[2] for q in pts], marker="o", linestyle="--" if ref else "-",
                           mfc="none" if ref else None, label=f"{row.label}{' (baseline)' if row.baseline else ''}")
            for s, x, y in pts:
                ax.annotate(str(s), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7,
                            color=line[0].get_color())
            every += [(x, y) for _, x, y in pts]
        if every:
            drawn = True
            front = pareto_front(every, get_reward(p.reward).higher_is_better)
            ax.plot([q[0] for q in front], [q[1] for q in front], color="0.35", linestyle="--", linewidth=2.5,
                    alpha=0.45, zorder=0, label="Pareto front")
            xs = [q[0] for q in every]
            if min(xs) > 0 and max(xs) > 10 * min(xs):  # FD spans orders of magnitude across NFEs
                ax.set_xscale("log")
        ax.set_xlabel("FD vs test (fmnist-cnn-v1) ↓")
        ax.set_ylabel(f"reward {p.reward} (in-domain) {'↑' if get_reward(p.reward).higher_is_better else '↓'}")
        ax.set_title(f"reward vs quality (labels: sampler steps; bank n={p.n})", fontsize=9)
    if not drawn:
        plt.close(fig)
        return []
    fig.suptitle(f"{board.suite.name}: reward vs quality", fontsize=10)
    _legend_below(fig, axes[0][0], len(specs))
    path = Path(out_dir) / "reward_vs_quality.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def fewstep_figures(board, out_dir: Path) -> list[Path]:
    """Both figures, each when the board has data for it."""
    return reward_vs_nfe(board, out_dir) + reward_vs_quality(board, out_dir)
