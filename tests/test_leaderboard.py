"""Leaderboard aggregation from a temporary MLflow store (synthetic runs with known values)."""
import statistics

import pytest

from bench import board_tables, leaderboard
from bench.runner import config_hash
from bench.suite_file import load_suite
from bench.tracking import TAG, Tracker

from conftest import SUITES


def _log_cell(tracker, exp, suite, method, seed, values, status="FINISHED", chash=None):
    m = suite.method(method)
    tags = {f"{TAG}kind": "cell", f"{TAG}method": method, f"{TAG}seed": seed,
            f"{TAG}config_hash": chash or config_hash(suite, m), f"{TAG}baseline": str(m.baseline).lower()}
    run = tracker.start(exp, f"{method}-{seed}", tags)
    tracker.log_metrics(run, values)
    tracker.end(run, status)
    return run


def test_mean_std_delta_and_filters(tracking_uri, results_dir):
    suite = load_suite(SUITES / "smoke.yaml")
    tr = Tracker(tracking_uri)
    exp = tr.experiment_id(suite.name)
    _log_cell(tr, exp, suite, "vq", 0, {"ar_loss": 99.0})  # superseded by the later seed-0 run below
    _log_cell(tr, exp, suite, "vq", 0, {"ar_loss": 2.0, "bits_per_image": 10.0})
    _log_cell(tr, exp, suite, "vq", 1, {"ar_loss": 3.0, "bits_per_image": 12.0})
    _log_cell(tr, exp, suite, "vq", 2, {"ar_loss": 50.0}, status="FAILED")  # not a finished row
    _log_cell(tr, exp, suite, "vcq", 0, {"ar_loss": 1.0, "bits_per_image": 5.0})
    _log_cell(tr, exp, suite, "vcq", 1, {"ar_loss": 7.0}, chash="0000")  # another config: never mixed in

    board = leaderboard.build(suite, tr)
    rows = {r.method: r for r in board.rows}
    assert rows["vq"].seeds == [0, 1]
    assert rows["vq"].mean("ar_loss") == pytest.approx(2.5)
    assert rows["vq"].std("ar_loss") == pytest.approx(statistics.stdev([2.0, 3.0]))
    assert rows["vcq"].seeds == [0] and rows["vcq"].std("ar_loss") is None
    assert board.delta(rows["vcq"], "ar_loss") == pytest.approx(1.0 - 2.5)
    assert board.delta(rows["vq"], "ar_loss") is None
    # sorted by bits_per_image (lower is better): vcq first
    assert [r.method for r in board.rows] == ["vcq", "vq"]

    paths = leaderboard.write(board)
    md = paths["md"].read_text()
    assert "| vq (baseline) | 2 | 2.5 ± 6.353 |" in md  # 95% t half-width, df=1: 12.71 x 0.7071 / sqrt(2)
    assert "(Δ -1.5)" in md
    assert "NLL (test) [bits/image] ↓" in md
    csv = paths["csv"].read_text().splitlines()
    assert csv[0].startswith("method,label,baseline,n_seeds")
    assert "leaderboard" in paths["html"].read_text() and paths["json"].is_file()
    assert paths["md"].parent == results_dir / "smoke"


def test_empty_store_gives_rows_without_values(tracking_uri, results_dir):
    suite = load_suite(SUITES / "smoke.yaml")
    board = leaderboard.build(suite, Tracker(tracking_uri))
    assert all(not r.seeds for r in board.rows)
    assert "—" in board_tables.to_markdown(board)
