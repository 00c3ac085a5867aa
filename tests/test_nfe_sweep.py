"""NFE as a sweep: a test sampler added by one adapter file and one suite runs end to end; the
per-NFE keys, the measured NFE, the MLflow history and the leaderboard columns and plot."""
import pytest

import nfe_denoiser  # noqa: F401  (registers test-denoiser: the one adapter file)
from bench import board_tables, leaderboard
from bench.runner import run_suite
from bench.suite_file import load_suite
from bench.tracking import Tracker

from conftest import SUITES

STEPS = [1, 2, 4, 8]


@pytest.mark.slow
def test_sweep_suite_logs_per_nfe_measured_nfe_and_leaderboard(tracking_uri, cache, results_dir):
    suite = load_suite(SUITES / "nfe_sweep.yaml")
    outcomes, _ = run_suite(suite, tracking_uri=tracking_uri, cache=cache, progress=False)
    assert [o.status for o in outcomes] == ["finished", "finished"], [o.error for o in outcomes]
    by = {o.method: o for o in outcomes}
    for o in outcomes:
        assert set(o.metrics) == ({f"gfd_fmnist_nfe{s}" for s in STEPS} | {f"nfe_steps{s}" for s in STEPS}
                                  | {f"gfd_fmnist_nfe{s}_stderr" for s in STEPS}  # bootstrap stderr per NFE
                                  | {"gfd_fmnist_floor", "gfd_fmnist_floor_stderr"})  # the NFE-independent floor
        fd = [o.metrics[f"gfd_fmnist_nfe{s}"] for s in STEPS]
        assert fd == sorted(fd, reverse=True) and fd[-1] < 0.5 * fd[0]  # quality improves with steps
    # measured, not declared: the fast method wastes one network call per step
    assert [by["slow"].metrics[f"nfe_steps{s}"] for s in STEPS] == STEPS
    assert [by["fast"].metrics[f"nfe_steps{s}"] for s in STEPS] == [2 * s for s in STEPS]

    tr = Tracker(tracking_uri)
    hist = tr.client.get_metric_history(by["fast"].run_id, "gfd_fmnist")  # quality vs NFE, step = measured NFE
    assert sorted(m.step for m in hist) == [2 * s for s in STEPS]
    assert {m.step: m.value for m in hist}[16] == by["fast"].metrics["gfd_fmnist_nfe8"]
    nfe = tr.client.get_metric_history(by["slow"].run_id, "nfe")
    assert sorted((m.step, m.value) for m in nfe) == [(s, float(s)) for s in STEPS]
    assert "gfd_fmnist.steps" in tr.client.get_run(by["slow"].run_id).data.params

    board = leaderboard.build(suite, tr)
    for s in STEPS:
        assert board.columns[f"gfd_fmnist_nfe{s}"].title == f"gFD (fmnist-cnn-v1, n=200, NFE={s})"
        assert f"nfe_steps{s}" in board.columns
    assert "gfd_fmnist" not in board.columns
    md = board_tables.to_markdown(board)
    assert all(f"NFE={s})" in md for s in STEPS)
    assert board.claims[0].assertion.startswith("gfd_fmnist_nfe2(fast)")  # claims name per-NFE keys
    paths = leaderboard.write(board, results_dir / "nfe_sweep")
    assert (results_dir / "nfe_sweep" / "quality_vs_nfe.png").stat().st_size > 0
    assert "quality_vs_nfe.png" in paths["html"].read_text()


def test_suite_without_sweep_has_no_plot(tmp_path):
    from types import SimpleNamespace

    from bench.metrics.base import Column
    from bench.nfe_plot import quality_vs_nfe

    board = SimpleNamespace(columns={"gfd_fmnist": Column("gFD", False)}, rows=[], suite=SimpleNamespace(name="x"))
    assert quality_vs_nfe(board, tmp_path) == [] and not list(tmp_path.iterdir())
