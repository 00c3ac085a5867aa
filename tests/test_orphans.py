"""A `bench run` killed with SIGKILL mid-cell leaves nothing a later run mistakes for live work (issues 12, 17).

The killed driver's pool worker notices that its driver is gone and ends its cell KILLED (releasing
the cell's lease) and exits within seconds, so the next `bench run` of the suite neither skips nor waits
on it: it runs the cell again, closes the dead driver's suite run as FAILED with the reason and removes
its pool's temp directory; the leaderboard counts only the finished run; `bench doctor` finds nothing left. Real processes: the first `bench run` is killed with SIGKILL
inside its only cell.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""Tests only: an adapter that blocks inside its cell while $ORPHAN_MARKER is set, and a constant metric."""
import os
import pathlib
import time

from bench.adapter import Adapter
from bench.metrics.base import Column, Metric
from bench.registry import register_adapter, register_metric


@register_adapter("orphan_sleeper")
class Sleeper(Adapter):
    """Does nothing; with $ORPHAN_MARKER set it touches that file and sleeps (to be killed)."""

    def prepare(self, ctx):
        marker = os.environ.get("ORPHAN_MARKER")
        if marker:
            pathlib.Path(marker).touch()
            time.sleep(300)


@register_metric("orphan_const")
class Const(Metric):
    """1.0."""

    @classmethod
    def columns(cls, params):
        return {"const": Column("const", True)}

    def compute(self, adapter, ctx, params):
        return {"const": 1.0}
'''

SUITE = """\
name: orphans
dataset: {name: fmnist, n_train: 20, n_test: 20}
seeds: [0]
plugins: [orphan_plugin]
methods:
  - {name: sleeper, adapter: orphan_sleeper, baseline: true}
metrics:
  - {name: orphan_const}
"""


@pytest.mark.slow
def test_sigkilled_run_is_rerun_and_closed_by_the_next_run(tmp_path):
    from bench.data.fmnist import fmnist_dir
    from bench.errors import DatasetMissing

    try:
        fmnist_dir(None)
    except DatasetMissing as e:
        pytest.skip(str(e))
    (tmp_path / "orphan_plugin.py").write_text(PLUGIN)
    suite = tmp_path / "orphans.yaml"
    suite.write_text(SUITE)
    res = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "BENCH_RESULTS_DIR": str(res),
           "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    bench = [sys.executable, "-m", "bench.cli"]
    marker = tmp_path / "inside-the-cell"

    # 1. a run killed with SIGKILL inside its cell
    p = subprocess.Popen([*bench, "run", str(suite), "--no-progress"], cwd=REPO, env={**env, "ORPHAN_MARKER": str(marker)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), p.communicate(timeout=30)[0] if p.poll() is not None else "never reached the cell"
    import psutil

    workers = psutil.Process(p.pid).children(recursive=True)
    assert workers, "the driver has no worker processes"
    pool_dirs = list(Path(tempfile.gettempdir()).glob(f"bench-pool-{p.pid}-*"))
    assert pool_dirs, "no pool directory named after the driver"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    t0 = time.monotonic()
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"workers outlived their driver by 15 s: {alive}"
    assert time.monotonic() - t0 < 10  # within a few seconds (the kernel's parent-death signal)

    from bench.tracking import TAG, Tracker

    uri = f"sqlite:///{res / 'mlflow.db'}"
    t = Tracker(uri)
    exp = t.experiment_id("orphans", create=False)
    deadline = time.monotonic() + 60  # the orphaned worker ends its cell KILLED within seconds
    while time.monotonic() < deadline:
        cells = t.client.search_runs([exp], f"tags.`{TAG}kind` = 'cell'")
        if cells and all(c.info.status != "RUNNING" for c in cells):
            break
        time.sleep(0.5)
    assert [c.info.status for c in cells] == ["KILLED"], [c.info.status for c in cells]
    orphans = t.client.search_runs([exp], "attributes.status = 'RUNNING'")
    assert [r.data.tags[f"{TAG}kind"] for r in orphans] == ["suite"]  # the dead driver's own run

    # 2. the next run of the suite is neither skipped nor stuck: it runs the cell again and finishes
    r = subprocess.run([*bench, "run", str(suite), "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-> skipped" not in r.stderr and "sleeper seed=0: finished" in r.stderr, r.stderr
    finished = t.cell_runs(exp)
    assert len(finished) == 1 and finished[0].data.metrics["const"] == 1.0
    assert "sleeper" in r.stdout  # the leaderboard row, from the finished run

    # 3. that run closed the dead driver's suite run as FAILED with the reason, and removed its pool directory
    for o in orphans:
        run = t.client.get_run(o.info.run_id)
        assert run.info.status == "FAILED"
        assert f"process {p.pid}" in run.data.tags[f"{TAG}error"] and "gone" in run.data.tags[f"{TAG}error"]
    assert t.client.search_runs([exp], "attributes.status = 'RUNNING'") == []
    assert not any(d.exists() for d in pool_dirs), pool_dirs
    assert not list(Path(tempfile.gettempdir()).glob(f"bench-pool-{p.pid}-*"))
    d = subprocess.run([*bench, "doctor"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert "STALE" not in d.stdout and d.returncode == 0, d.stdout + d.stderr
