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
    from bench.suite import load_suite
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
