"""Figures of the LLM-internals family (PNG via matplotlib's Agg backend).

Per cell, into ``ctx.artifact_dir / "plots"``: the attention map with the sink
(:func:`attention_map`), the cell's loss curve (:func:`loss_curve`), the variance profile
(:func:`variance_profile_plot`) and SeedPrint's p-value matrix (:func:`pvalue_matrix`). Per
leaderboard: the training-loss curves of every row (mean over seeds, read from MLflow)
(:func:`board_loss_curves`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def attention_map(attn_mean, alpha0, path: Path, title: str) -> Path:
    """attn_mean float [L, T, T] (mean over sequences and heads), alpha0 float [L, H] -> PNG, one panel a layer."""
    plt = _plt()
    L = attn_mean.shape[0]
    fig, axes = plt.subplots(1, L, figsize=(3.0 * L, 3.2), squeeze=False)
    for l, ax in enumerate(axes[0]):
        ax.imshow(np.asarray(attn_mean[l]), cmap="viridis", vmin=0, vmax=float(attn_mean[l].max()))
        ax.set_title(f"layer {l}: α0 mean {float(alpha0[l].mean()):.2f}, max {float(alpha0[l].max()):.2f}", fontsize=7)
        ax.set_xlabel("key position", fontsize=7)
        ax.set_ylabel("query position", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curve(history: list[float], val: dict[int, float], path: Path, title: str, target: float | None = None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(1, len(history) + 1), history, lw=0.8, label="train loss")
    if val:
        s = sorted(val)
        ax.plot(s, [val[k] for k in s], "o-", ms=3, label="val loss")
    if target is not None:
        ax.axhline(target, color="grey", ls=":", lw=0.8, label=f"target {target:g}")
    ax.set_xlabel("step")
    ax.set_ylabel("nats / byte")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def variance_profile_plot(profiles: dict[str, "np.ndarray"], path: Path, title: str) -> Path:
    """profiles: label -> float [L, T] (v_t at the o_proj input) -> PNG (log scale, one line a layer)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(profiles), figsize=(4.2 * len(profiles), 3.0), squeeze=False)
    for ax, (lab, prof) in zip(axes[0], profiles.items()):
        prof = np.asarray(prof)
        for l in range(prof.shape[0]):
            ax.plot(prof[l], lw=0.9, label=f"layer {l}")
        ax.set_yscale("log")
        ax.set_xlabel("position t")
        ax.set_ylabel("mean per-entry variance")
        ax.set_title(lab, fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pvalue_matrix(p: "np.ndarray", labels: list[str], path: Path, title: str) -> Path:
    """p float [M, M] -> heat map of log10 p (clipped at 1e-30), annotated."""
    plt = _plt()
    lp = np.log10(np.clip(np.asarray(p, dtype=float), 1e-30, 1.0))
    m = len(labels)
    fig, ax = plt.subplots(figsize=(0.55 * m + 2.5, 0.55 * m + 1.8))
    im = ax.imshow(lp, cmap="magma", vmin=-30, vmax=0)
    ax.set_xticks(range(m), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(m), labels, fontsize=6)
    for i in range(m):
        for j in range(m):
            if i != j:
                ax.text(j, i, f"{lp[i, j]:.0f}", ha="center", va="center", fontsize=5,
                        color="white" if lp[i, j] < -15 else "black")
    fig.colorbar(im, ax=ax, label="log10 p (SeedPrint)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def board_loss_curves(board, out_dir: Path) -> list[Path]:
    """Training-loss curves of every row with a ``train_loss`` history (mean over its seeds' runs)."""
    rows = [r for r in board.rows if r.run_ids]
    if not rows:
        return []
    try:
        from bench.tracking import Tracker

        client = Tracker().client
    except Exception:  # noqa: BLE001 - no store, no figure
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = 0
    for r in rows:
        curves, xs = [], None
        for rid in r.run_ids:
            try:
                h = client.get_metric_history(rid, "train_loss")
            except Exception:  # noqa: BLE001
                continue
            if h:
                d = {m.step: m.value for m in h}
                curves.append([d[s] for s in sorted(d)])
                xs = xs if xs is not None and len(xs) <= len(d) else sorted(d)
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = np.mean([c[:n] for c in curves], axis=0)
        k = max(1, n // 50)
        smooth = np.convolve(mean, np.ones(k) / k, mode="valid")
        ax.plot(np.asarray(xs[:n])[k - 1:], smooth, lw=1.0, label=f"{r.label} ({len(curves)} seeds)")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return []
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("train loss, nats/byte (running mean)")
    ax.set_title(f"{board.suite.name}: training loss of every arm", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "loss_curves_all_arms.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
