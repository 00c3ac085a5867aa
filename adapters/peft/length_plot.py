"""Accuracy vs input length and vs prefix size, Prefix-Tuning against Prefix-Tuning+.

One PNG, ``length_<suite>.png``, two panels, from the leaderboard rows (mean ± std over seeds):

* left:  accuracy vs ``input_filler_tokens`` (filler tokens read before every prompt,
  :mod:`adapters.peft.input_length`), one line per (adapter, prefix size) with >= 2 lengths;
* right: accuracy vs trainable parameters at the task's own input length (filler 0), one line
  per adapter with >= 2 sizes (Prefix-Tuning's prefix length p = params / (L * 2 * kv_dim)).

Rows of other adapters are drawn only when they have a length sweep themselves. Called through
:meth:`adapters.peft.adapter_base.PeftAdapter.leaderboard_figures`; returns [] without a sweep.
"""
from __future__ import annotations

from pathlib import Path

ACC = "accuracy"
NAMES = {"prefix_tuning": "Prefix-Tuning", "prefix_tuning_plus": "Prefix-Tuning+", "lora": "LoRA"}


def sweep_points(board) -> tuple[dict, dict]:
    """({(adapter, size): [(filler, mean, std)]}, {adapter: [(params, mean, std)]}), sorted by x."""
    specs = {m.name: m for m in board.suite.methods}
    by_len: dict[tuple, list] = {}
    by_size: dict[str, list] = {}
    for r in board.rows:
        m = specs.get(r.method)
        y = r.mean(ACC)
        if m is None or y is None:
            continue
        p = m.params
        fill = int(p.get("input_filler_tokens", 0) or 0)
        size = p.get("num_virtual_tokens") or p.get("match_params") or p.get("rank")
        by_len.setdefault((m.adapter, size), []).append((fill, y, r.std(ACC) or 0.0))
        if fill == 0 and m.adapter in ("prefix_tuning", "prefix_tuning_plus") and r.mean("trainable_params"):
            by_size.setdefault(m.adapter, []).append((r.mean("trainable_params"), y, r.std(ACC) or 0.0))
    by_len = {k: sorted(v) for k, v in by_len.items() if len({x for x, _, _ in v}) >= 2}
    by_size = {k: sorted(v) for k, v in by_size.items() if len(v) >= 2}
    return by_len, by_size


def length_figures(board, out_dir: Path) -> list[Path]:
    by_len, by_size = sweep_points(board)
    if not by_len and not by_size:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    for (adapter, size), pts in by_len.items():
        x, y, e = zip(*pts)
        a.errorbar(x, y, yerr=e, marker="o", capsize=3, label=f"{NAMES.get(adapter, adapter)} ({size})")
    a.set_xlabel("filler tokens before every prompt")
    a.set_ylabel("accuracy ↑")
    a.set_title("accuracy vs input length", fontsize=9)
    for adapter, pts in by_size.items():
        x, y, e = zip(*pts)
        b.errorbar(x, y, yerr=e, marker="s", capsize=3, label=NAMES.get(adapter, adapter))
    b.set_xscale("log")
    b.set_xlabel("trainable parameters (prefix size)")
    b.set_title("accuracy vs prefix size (own input length)", fontsize=9)
    for ax in (a, b):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{board.suite.name}: Prefix-Tuning vs Prefix-Tuning+ (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"length_{board.suite.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
