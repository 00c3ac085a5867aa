"""wAR-Tok figures (arXiv 2605.06148): the per-run TVC view and the suite-level AR-loss / reconstruction frontier.

* :func:`plot_tvc` -- ``plots/tvc.png`` of one cell: the reconstruction curve (TVC condition (i))
  and the prior-consistency gap ``wartok_tvc_kl`` with the auxiliary ARs' CEs (condition (ii)).
* :func:`ar_loss_vs_recon` -- ``wartok_frontier.png`` from a leaderboard (``(board, out_dir) ->
  list[Path]``, called through :meth:`WARTokAdapter.leaderboard_figures`): one point per row
  (mean over seeds, with min-max bars when there are several), y = ``ar_loss`` (nats/token on
  test tokens), x = reconstruction MSE from one source for all points: ``recon_mse`` (a ``recon``
  metric) when every row has it, else ``tokenizer_recon_mse`` (logged by wartok) and, for a row
  without it (vq), the ``base_tokenizer_recon_mse`` that a wartok run logged for the vq start whose
  ``base_tokenizer_cache_key`` equals this row's ``tokenizer_cache_key`` (the same tokenizer and
  images, so the same number). The x-axis label names the source. A lower-left point is better on both
  axes; a lower AR loss bought with a higher MSE is the trivial route the method note warns about.
"""
from __future__ import annotations

import statistics
from pathlib import Path

BASE_KEY = "base_tokenizer_recon_mse"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tvc(history: dict, path: Path) -> Path | None:
    """Write the TVC view of one training (``history``: key -> [(step, value)]) to ``path``; None if no data."""
    if not history.get("wartok_tvc_kl"):
        return None
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    for k in ("tokenizer_rec_loss", "finetune_rec_loss"):
        if history.get(k):
            s, v = zip(*history[k])
            ax[0].plot(s, v, label=k)
    ax[0].set_xlabel("step of the joint training")
    ax[0].set_title("(i) reconstruction")
    ax[0].legend(fontsize=7)
    for k in ("wartok_tvc_kl", "wartok_tracker_ce", "wartok_target_ce", "wartok_fresh_prior_ce"):
        if history.get(k):
            s, v = zip(*history[k])
            ax[1].plot(s, v, label=k, marker="o" if k == "wartok_fresh_prior_ce" else None)
    ax[1].set_xlabel("step of the joint training")
    ax[1].set_title("(ii) prior consistency [nats/token]")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _run_params(board, run_id: str) -> dict:
    try:
        return dict(board.tracker.client.get_run(run_id).data.params)
    except Exception:  # a row without a readable run simply gets no fallback
        return {}


def frontier_points(board) -> tuple[list[tuple], str]:
    """([(row, recon MSE per seed, ar_loss per seed)], the x source) for the rows that have both.

    One source for every point, never mixed: ``recon_mse`` when every row with an ``ar_loss`` has it,
    else the adapters' train-image MSE (``tokenizer_recon_mse``, or the vq start's
    ``base_tokenizer_recon_mse`` matched by tokenizer cache key).
    """
    rows = [r for r in board.rows if r.per_seed.get("ar_loss")]
    if rows and all(r.per_seed.get("recon_mse") for r in rows):
        return [(r, r.per_seed["recon_mse"], r.per_seed["ar_loss"]) for r in rows], "recon_mse"
    base_by_key: dict[str, list[float]] = {}
    if board.tracker is not None:
        for r in board.rows:
            for rid, v in zip(r.run_ids, r.per_seed.get(BASE_KEY) or []):
                key = _run_params(board, rid).get("base_tokenizer_cache_key")
                if key:
                    base_by_key.setdefault(key, []).append(v)
    points = []
    for r in rows:
        xs = r.per_seed.get("tokenizer_recon_mse") or []
        if not xs and base_by_key:
            xs = [x for rid in r.run_ids
                  for x in base_by_key.get(_run_params(board, rid).get("tokenizer_cache_key"), [])[:1]]
        if xs:
            points.append((r, xs, r.per_seed["ar_loss"]))
    return points, "tokenizer_recon_mse"


def ar_loss_vs_recon(board, out_dir: Path) -> list[Path]:
    """``wartok_frontier.png``: AR loss (y) against reconstruction MSE (x), one point per row; [] without data."""
    points, source = frontier_points(board)
    if not points:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for r, xs, ys in points:
        x, y = statistics.fmean(xs), statistics.fmean(ys)
        xerr = [[x - min(xs)], [max(xs) - x]] if len(xs) > 1 else None
        yerr = [[y - min(ys)], [max(ys) - y]] if len(ys) > 1 else None
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, marker="s" if r.baseline else "o", ms=6, capsize=3,
                    label=f"{r.label}{' (baseline)' if r.baseline else ''} (n={len(ys)})")
    ax.set_xlabel("reconstruction MSE, pixels in [0, 1] (" + ("recon_mse" if source == "recon_mse" else
                  "train images: tokenizer_recon_mse") + ")", fontsize=8)
    ax.set_ylabel("AR loss [nats/token] (lower is better)")
    ax.set_title(f"{board.suite.name}: AR loss vs reconstruction (lower-left is better)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "wartok_frontier.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
