"""End-to-end: the smoke suite trains, logs, resumes, and never counts a failed cell."""
import pytest
from click.testing import CliRunner

from bench import board_tables, leaderboard
from bench.cli import main
from bench.errors import DatasetMissing
from bench.runner import run_suite
from bench.suite_file import load_suite
from bench.tracking import TAG, Tracker

from conftest import SUITES


@pytest.mark.slow
def test_smoke_suite_runs_resumes_and_builds_leaderboard(tracking_uri, cache, results_dir):
    suite = load_suite(SUITES / "smoke.yaml")
    outcomes, parent = run_suite(suite, tracking_uri=tracking_uri, cache=cache, progress=False)
    assert [o.status for o in outcomes] == ["finished", "finished"], [o.error for o in outcomes]
    tr = Tracker(tracking_uri)
    exp = tr.experiment_id("smoke")
    runs = tr.cell_runs(exp)
    assert len(runs) == 2
    r = runs[0]
    assert r.data.tags["mlflow.parentRunId"] == parent
    for key in ("ar_loss", "bits_per_image", "probe_k1", "cliff_position", "t_star"):
        assert key in r.data.metrics
    assert r.data.params["adapter"] in ("vq", "vcq")
    # where the cell's time went (bench.cell_timing): five exclusive parts that add up to cell_seconds
    parts = [r.data.metrics[f"time_{p}_s"] for p in ("train", "method", "instrument", "metric", "harness")]
    assert sum(parts) == pytest.approx(r.data.metrics["cell_seconds"], rel=1e-6)
    assert r.data.metrics["time_train_s"] > 0 and r.data.metrics["time_method_s"] > 0
    assert f"{TAG}version.torch" in r.data.tags

    # VCQ's first token carries log2(2) = 1 bit at most; the uniform one up to log2(16).
    board = leaderboard.build(suite, tr)
    assert {"time_train_s", "time_harness_share"} <= set(board.columns)
    rows = {x.method: x for x in board.rows}
    assert rows["vcq"].mean("entropy_first_token") <= 1.0 + 1e-9
    # N=600: log2 600 = 9.2 bits; uniform K=16: ceil(9.2/4) = 3; VCQ K_t = 2,4,8,16: 1+2+3+4 bits reach 9.2 at t=4
    assert rows["vq"].mean("t_star") == 3 and rows["vcq"].mean("t_star") == 4

    # A rerun skips finished cells and gives the same leaderboard.
    md1 = board_tables.to_markdown(leaderboard.build(suite, tr))
    again, _ = run_suite(suite, tracking_uri=tracking_uri, cache=cache, progress=False)
    assert [o.status for o in again] == ["skipped", "skipped"]
    assert board_tables.to_markdown(leaderboard.build(suite, tr)) == md1

    # --force recomputes one method; the cached weights make it the same numbers.
    forced, _ = run_suite(suite, methods=["vq"], force=True, tracking_uri=tracking_uri, cache=cache, progress=False)
    assert forced[0].status == "finished"
    assert forced[0].metrics["ar_loss"] == pytest.approx(rows["vq"].mean("ar_loss"), rel=1e-5)


def test_failed_metric_leaves_no_finished_row(tracking_uri, cache, results_dir, monkeypatch):
    from bench.metrics import ar_loss

    suite = load_suite(SUITES / "smoke.yaml")
    monkeypatch.setattr(ar_loss.ARLoss, "compute", lambda self, a, c, p: {"ar_loss": float("nan")})
    outcomes, _ = run_suite(suite, methods=["vq"], tracking_uri=tracking_uri, cache=cache, progress=False)
    assert outcomes[0].status == "failed" and "non-finite" in outcomes[0].error
    tr = Tracker(tracking_uri)
    exp = tr.experiment_id("smoke")
    assert tr.cell_runs(exp) == []
    failed = tr.cell_runs(exp, status="FAILED")
    assert len(failed) == 1 and "non-finite" in failed[0].data.tags[f"{TAG}error"]
    assert "ar_loss" not in failed[0].data.metrics  # NaN is never logged as a metric


def test_missing_dataset_fails_fast_naming_variable(monkeypatch):
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    suite = load_suite("imagenet256")
    with pytest.raises(DatasetMissing, match="IMAGENET_DIR"):
        run_suite(suite)
    r = CliRunner().invoke(main, ["run", "imagenet256"])
    assert r.exit_code == 2 and "IMAGENET_DIR" in r.output and "Traceback" not in r.output


def test_missing_fmnist_names_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_FMNIST_DIR", str(tmp_path))
    suite = load_suite(SUITES / "smoke.yaml")
    with pytest.raises(DatasetMissing, match="BENCH_FMNIST_DIR"):
        run_suite(suite)
