"""`bench history`: a planted change of a metric between two commits shows in the table and the plot."""
from __future__ import annotations

from click.testing import CliRunner

from conftest import SUITES


def _run(tracker, exp, method, seed, sha, value, t):
    from bench.tracking import TAG

    rid = tracker.start(exp, f"{method}-s{seed}", {f"{TAG}kind": "cell", f"{TAG}method": method, f"{TAG}seed": seed,
                                                    f"{TAG}config_hash": "h", f"{TAG}git_sha": sha})
    tracker.log_metrics(rid, {"ar_loss": value, "bits_per_image": 10 * value})
    tracker.end(rid, "FINISHED")
    return rid


def test_history_shows_a_planted_change_across_two_commits(tmp_path, tracking_uri, results_dir):
    from bench import history
    from bench.cli import main
    from bench.suite_file import load_suite
    from bench.tracking import TAG, Tracker

    tr = Tracker(tracking_uri)
    exp = tr.experiment_id("smoke")
    old, new = "a" * 40, "b" * 40
    for seed, v in ((0, 2.0), (1, 2.2)):
        _run(tr, exp, "vq", seed, old, v, 0)
        _run(tr, exp, "vcq", seed, old, 1.8, 0)
    for seed in (0, 1):
        _run(tr, exp, "vq", seed, new, 1.5, 1)  # the planted change: vq's AR loss falls at commit b
        _run(tr, exp, "vcq", seed, new, 1.8, 1)
    limited = _run(tr, exp, "vq", 0, new, 99.0, 2)
    tr.client.set_tag(limited, f"{TAG}limit", "5")  # a --limit run is never history
    h = history.collect(load_suite(SUITES / "smoke.yaml"), tr, ["ar_loss"])
    assert [s for s, _ in h.commits] == [old, new]
    assert h.mean("ar_loss", "vq", old) == 2.1 and h.mean("ar_loss", "vq", new) == 1.5
    out = tmp_path / "h.png"
    r = CliRunner().invoke(main, ["history", str(SUITES / "smoke.yaml"), "--metric", "ar_loss", "--plot", str(out),
                                  "--tracking-uri", tracking_uri])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    row_old = next(line for line in lines if line.startswith("aaaaaaaaaa"))
    row_new = next(line for line in lines if line.startswith("bbbbbbbbbb"))
    assert "2.1 [2]" in row_old and "1.8 [2]" in row_old
    assert "1.5 [2] ▼" in row_new and "1.8 [2]" in row_new and "▲" not in row_new and "99" not in r.output
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    r = CliRunner().invoke(main, ["history", str(SUITES / "smoke.yaml"), "--tracking-uri", tracking_uri])
    assert r.exit_code == 0 and "bits_per_image" in r.output and "ar_loss" in r.output, r.output


def test_gate_runs_recorded_in_a_history_store_once_each(tmp_path, tracking_uri, results_dir):
    """:func:`bench.history.record` copies a gate store's compared cells (tags, final metrics, start
    times) into a lasting store: a second gate run's cells add a commit, a run recorded twice counts once,
    and ``bench history`` on the history store shows the move."""
    from bench import history
    from bench.suite_file import load_suite
    from bench.tracking import TAG, Tracker

    gate_a, gate_b = (Tracker(f"sqlite:///{tmp_path / n}.db") for n in ("gate_a", "gate_b"))
    hist_uri = f"sqlite:///{tmp_path / 'history.db'}"
    a = [_run(gate_a, gate_a.experiment_id("smoke"), "vq", s, "a" * 40, 2.0, 0) for s in (0, 1)]
    assert history.record(a, gate_a, hist_uri, "smoke", "PASS") == (2, 0)
    assert history.record(a, gate_a, hist_uri, "smoke", "PASS") == (0, 2)  # --reuse: the same runs again
    b = [_run(gate_b, gate_b.experiment_id("smoke"), "vq", s, "b" * 40, 1.5, 0) for s in (0, 1)]
    assert history.record(b, gate_b, hist_uri, "smoke", "FAIL") == (2, 0)
    h = history.collect(load_suite(SUITES / "smoke.yaml"), Tracker(hist_uri), ["ar_loss"])
    assert [s for s, _ in h.commits] == ["a" * 40, "b" * 40]
    assert h.mean("ar_loss", "vq", "a" * 40) == 2.0 and h.mean("ar_loss", "vq", "b" * 40) == 1.5
    runs = Tracker(hist_uri).cell_runs(Tracker(hist_uri).experiment_id("smoke", create=False))
    assert len(runs) == 4 and {r.data.tags[f"{TAG}history.gate_verdict"] for r in runs} == {"PASS", "FAIL"}
    src = gate_a.client.get_run(a[0])
    copy = next(r for r in runs if r.data.tags[f"{TAG}history.source_run"] == a[0])
    assert copy.info.start_time == src.info.start_time and copy.data.metrics == src.data.metrics
    assert f"{TAG}pid" not in copy.data.tags
