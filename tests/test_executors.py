"""Executors on real engines (bench.executors): racing drivers and workers on one store, kill -9, Ray, Slurm.

The suite is tests/suites/exec_toy.yaml (3 methods x 2 seeds of a synthetic linear fit, ~1 s each,
plugin tests/plugins/genbench_exec_toy.py). Process tests start real ``bench run`` drivers; their
time is mostly Python start-up (importing torch, MLflow and the adapters).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.tracking import TAG, Tracker

REPO = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).parent / "plugins"
SUITE = Path(__file__).parent / "suites" / "exec_toy.yaml"
N_CELLS = 6
FIGURES = Path(os.environ.get("BENCH_TEST_FIGURES", "")) if os.environ.get("BENCH_TEST_FIGURES") else None


def _env(**extra):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "OMP_NUM_THREADS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


def _driver(tmp: Path, name: str, uri: str, *args, env=None) -> subprocess.Popen:
    log = open(tmp / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "--results-dir", str(tmp / name), "run", *args,
                             "--tracking-uri", uri, "--no-progress"], cwd=REPO, env=env or _env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _cells(uri: str, suite: str = "exec_toy"):
    t = Tracker(uri)
    exp = t.experiment_id(suite, create=False)
    runs = t.client.search_runs([exp], f"tags.`{TAG}kind` = 'cell'", max_results=5000)
    return t, runs


def _report(name: str, **figures) -> None:
    print(f"\n[figures] {name}: {json.dumps(figures)}")
    if FIGURES:
        FIGURES.mkdir(parents=True, exist_ok=True)
        (FIGURES / f"{name}.json").write_text(json.dumps(figures, indent=1))


def _race(tmp: Path, uri: str, label: str) -> None:
    """Driver A with 4 pool workers and driver B with 2 race over the same 6 cells. Every started cell
    waits until all 6 cells have started (toy plugin's ``$GENBENCH_TOY_HOLD``, at most 240 s), so workers
    of both drivers hold cells at the same moment whichever driver's pool starts first; the test checks
    that overlap on the runs' own start/end times (param ``toy_driver`` names the driver)."""
    suite = tmp / "exec_toy.yaml"
    suite.write_text(SUITE.read_text())
    markers = tmp / "markers"
    markers.mkdir()
    hold = {"GENBENCH_TOY_MARKERS": str(markers), "GENBENCH_TOY_HOLD": f"{N_CELLS}:240"}
    t0 = time.monotonic()
    a = _driver(tmp, "A", uri, str(suite), "--workers", "4", "--allow-oversubscribe",  # more workers than cores
                env=_env(GENBENCH_TOY_DRIVER="A", **hold))
    b = _driver(tmp, "B", uri, str(suite), "--workers", "2", env=_env(GENBENCH_TOY_DRIVER="B", **hold))
    rc = [p.wait(timeout=900) for p in (a, b)]
    logs = {n: (tmp / f"{n}.log").read_text() for n in "AB"}
    assert rc == [0, 0], "\n".join(v[-4000:] for v in logs.values())
    locked = sum(v.count("database is locked") for v in logs.values())
    t, runs = _cells(uri)
    fin = Counter((r.data.tags[f"{TAG}config_hash"], r.data.tags[f"{TAG}seed"]) for r in runs
                  if r.info.status == "FINISHED")
    status = Counter(r.info.status for r in runs)
    lost = sum(r.data.tags.get("bench.lease.lost") == "true" for r in runs)
    spans = {n: [(r.info.start_time / 1000, r.info.end_time / 1000) for r in runs
                 if r.info.status == "FINISHED" and r.data.params.get("toy_driver") == n] for n in "AB"}
    # the longest time during which a cell run of A and one of B were both open (0: they never overlapped)
    overlap = max((min(ea, eb) - max(sa, sb) for sa, ea in spans["A"] for sb, eb in spans["B"]), default=0.0)
    _report(f"race-{label}", workers="4 (driver A) + 2 (driver B)", cells=N_CELLS, finished_cells=len(fin),
            duplicate_finished=sum(v - 1 for v in fin.values()), lock_errors=locked, runs=dict(status),
            lost_race_claims=lost, seconds=round(time.monotonic() - t0, 1),
            cells_finished_by={n: len(v) for n, v in spans.items()}, overlap_s=round(max(overlap, 0.0), 1),
            cells_run={n: v.count(": running (config") for n, v in logs.items()},
            found_leased={n: sum("leased by run" in ln and "-> skipped" in ln for ln in v.splitlines())
                          for n, v in logs.items()},
            found_finished={n: sum(": finished run" in ln and "-> skipped" in ln for ln in v.splitlines())
                            for n, v in logs.items()})
    assert locked == 0
    assert len(fin) == N_CELLS and set(fin.values()) == {1}  # every cell finished exactly once
    assert status["RUNNING"] == 0
    assert all(r.data.tags.get("bench.lease.lost") == "true" for r in runs if r.info.status == "FAILED")
    assert spans["A"] and spans["B"], f"one driver ran no cell, so nothing raced: {spans}"
    assert overlap > 0, f"the drivers' cell runs never overlapped in time: {spans}"


@pytest.mark.slow
def test_four_workers_and_a_racing_driver_on_sqlite(tmp_path):
    _race(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", "sqlite")


@pytest.fixture(scope="module")
def mlflow_server():
    """A PostgreSQL cluster (as the postgres user) + mlflow server on 127.0.0.1, in a temp dir."""
    from bench.errors import BenchError
    from bench.server import PostgresCluster, mlflow_server_cmd, server_env, wait_healthy

    d = Path(tempfile.mkdtemp(prefix="bench-pg-test-"))
    d.chmod(0o755)  # the postgres user must reach its data directory
    pg = PostgresCluster(d / "pg", _free_port())
    try:
        pg.start()
    except (BenchError, OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot start PostgreSQL here ({e}); on Debian: apt-get install -y postgresql")
    port = _free_port()
    (d / "art").mkdir()
    proc = subprocess.Popen(mlflow_server_cmd(pg.uri, d / "art", port, workers=2), env=server_env(),
                            stdout=open(d / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        pg.stop()
        import shutil

        shutil.rmtree(d, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_four_workers_and_a_racing_driver_on_a_postgres_mlflow_server(tmp_path, mlflow_server):
    _race(tmp_path, mlflow_server, "postgres-server")


KILL_SUITE = """\
name: exec_kill
plugins: [genbench_exec_toy]
dataset: {name: toy_regression}
seeds: [0]
methods:
  - {name: a, adapter: toy_linear, baseline: true, params: {lr: 0.05}}
  - {name: b, adapter: toy_linear, params: {lr: 0.02}}
metrics:
  - {name: toy_fit, params: {steps: 60, sleep_s: 0.15}}
"""


def _wait(pred, timeout=300, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _steps(t: Tracker, run_id: str) -> int:
    return len(t.client.get_metric_history(run_id, "toy_step_loss"))


@pytest.mark.slow
def test_kill_9_of_a_worker_mid_cell(tmp_path):
    """kill -9 of a pool worker mid-cell: the same driver runs the cell again; the dead run ends FAILED."""
    suite = tmp_path / "exec_kill.yaml"
    suite.write_text(KILL_SUITE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    markers = tmp_path / "markers"
    markers.mkdir()
    d = _driver(tmp_path, "A", uri, str(suite), "--workers", "2", "--lease-timeout", "20",
                env=_env(GENBENCH_TOY_MARKERS=str(markers)))
    marker = _wait(lambda: next(markers.glob("a-s0.*"), None), what="cell a-s0 to start")
    pid = int(marker.suffix[1:])
    t = Tracker(uri)
    exp = t.experiment_id("exec_kill")

    def running_a():
        rs = t.client.search_runs([exp], f"tags.`{TAG}method` = 'a' and attributes.status = 'RUNNING'")
        return rs[0] if rs and _steps(t, rs[0].info.run_id) >= 5 else None

    dead = _wait(running_a, what="cell a-s0 to log 5 steps").info.run_id
    logged = _steps(t, dead)
    os.kill(pid, signal.SIGKILL)
    t_kill = time.time()
    assert d.wait(timeout=600) == 0, (tmp_path / "A.log").read_text()[-4000:]
    old = t.client.get_run(dead)
    assert old.info.status == "FAILED" and f"pid {pid}" in old.data.tags[f"{TAG}error"]
    assert "is gone" in old.data.tags[f"{TAG}error"]
    assert _steps(t, dead) >= logged  # nothing it logged is lost
    fin = t.client.search_runs([exp], f"tags.`{TAG}method` = 'a' and attributes.status = 'FINISHED'")
    assert len(fin) == 1 and fin[0].info.run_id != dead and _steps(t, fin[0].info.run_id) == 60
    assert "submitted again" in (tmp_path / "A.log").read_text()
    _report("kill-worker", workers=2, cells=2, killed_after_steps=logged,
            recovery_s=round(fin[0].info.end_time / 1000 - t_kill, 1), dead_run_status=old.info.status,
            dead_run_reason=old.data.tags[f"{TAG}error"], finished_runs_of_cell=len(fin))


@pytest.mark.slow
def test_kill_9_of_the_driver_then_rerun(tmp_path):
    """kill -9 of a one-worker driver (the cell runs in it): the rerun takes the dead lease over at once."""
    suite = tmp_path / "exec_kill.yaml"
    suite.write_text(KILL_SUITE.replace("  - {name: b, adapter: toy_linear, params: {lr: 0.02}}\n", ""))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    markers = tmp_path / "markers"
    markers.mkdir()
    d = _driver(tmp_path, "A", uri, str(suite), "--workers", "1", env=_env(GENBENCH_TOY_MARKERS=str(markers)))
    _wait(lambda: next(markers.glob("a-s0.*"), None), what="cell a-s0 to start")
    t = Tracker(uri)
    exp = t.experiment_id("exec_kill")
    rs = _wait(lambda: [r for r in t.client.search_runs([exp], f"tags.`{TAG}kind` = 'cell'")
                        if _steps(t, r.info.run_id) >= 5], what="5 steps")
    dead = rs[0].info.run_id
    os.killpg(d.pid, signal.SIGKILL)
    d.wait()
    t_kill = time.time()
    assert t.client.get_run(dead).info.status == "RUNNING"  # what kill -9 leaves behind
    r = _driver(tmp_path, "B", uri, str(suite), "--workers", "1")
    assert r.wait(timeout=600) == 0, (tmp_path / "B.log").read_text()[-4000:]
    old = t.client.get_run(dead)
    assert old.info.status == "FAILED" and "is gone" in old.data.tags[f"{TAG}error"]
    assert _steps(t, dead) >= 5
    fin = t.client.search_runs([exp], f"tags.`{TAG}kind` = 'cell' and attributes.status = 'FINISHED'")
    assert len(fin) == 1
    _report("kill-driver-rerun", workers=1, cells=1, recovery_s_incl_restart=round(fin[0].info.end_time / 1000 - t_kill, 1),
            dead_run_reason=old.data.tags[f"{TAG}error"])


@pytest.mark.slow
def test_kill_9_on_another_host_lease_expires_and_another_driver_takes_over(tmp_path):
    """Driver A runs as host "node-a" (a sitecustomize fakes socket.gethostname), so driver B on this host
    cannot see that A's worker died: after ``kill -9`` of A (driver and worker) B waits until the lease's
    heartbeat is older than the lease timeout (8 s), ends the stale run FAILED with the reason, runs the cell."""
    suite = tmp_path / "exec_kill.yaml"
    suite.write_text(KILL_SUITE.replace("  - {name: b, adapter: toy_linear, params: {lr: 0.02}}\n", ""))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    markers, fake_host = tmp_path / "markers", tmp_path / "fakehost"
    markers.mkdir()
    fake_host.mkdir()
    (fake_host / "sitecustomize.py").write_text("import socket\nsocket.gethostname = lambda: 'node-a'\n")
    env_a = _env(GENBENCH_TOY_MARKERS=str(markers))
    env_a["PYTHONPATH"] = os.pathsep.join([str(fake_host), env_a["PYTHONPATH"]])
    d = _driver(tmp_path, "A", uri, str(suite), "--workers", "1", "--lease-timeout", "8", env=env_a)
    _wait(lambda: next(markers.glob("a-s0.*"), None), what="cell a-s0 to start")
    t = Tracker(uri)
    exp = t.experiment_id("exec_kill")
    rs = _wait(lambda: [r for r in t.client.search_runs([exp], f"tags.`{TAG}kind` = 'cell'")
                        if _steps(t, r.info.run_id) >= 5], what="5 steps")
    dead = rs[0].info.run_id
    assert t.client.get_run(dead).data.tags[f"{TAG}host"] == "node-a"
    os.killpg(d.pid, signal.SIGKILL)
    d.wait()
    t_kill = time.time()
    logged = _steps(t, dead)
    b = _driver(tmp_path, "B", uri, str(suite), "--workers", "1", "--lease-timeout", "8")
    assert b.wait(timeout=600) == 0, (tmp_path / "B.log").read_text()[-4000:]
    old = t.client.get_run(dead)
    reason = old.data.tags[f"{TAG}error"]
    assert old.info.status == "FAILED" and "no heartbeat for" in reason and "node-a" in reason, reason
    assert _steps(t, dead) >= logged  # nothing it logged is lost
    fin = t.client.search_runs([exp], f"tags.`{TAG}kind` = 'cell' and attributes.status = 'FINISHED'")
    assert len(fin) == 1 and fin[0].info.run_id != dead and _steps(t, fin[0].info.run_id) == 60
    took_over = old.info.end_time / 1000 - t_kill
    assert took_over >= 8 - 2.5  # it did wait for the heartbeat to age (last beat up to 2 s before the kill)
    _report("kill-other-host-lease-expiry", workers=1, cells=1, lease_timeout_s=8, killed_after_steps=logged,
            takeover_s_after_kill=round(took_over, 1),
            recovery_s_incl_restart=round(fin[0].info.end_time / 1000 - t_kill, 1), dead_run_reason=reason)


def _metrics(uri: str, suite: str = "exec_toy") -> dict:
    _, runs = _cells(uri, suite)
    return {(r.data.tags[f"{TAG}method"], r.data.tags[f"{TAG}seed"]): r.data.metrics["toy_loss"]
            for r in runs if r.info.status == "FINISHED"}


@pytest.fixture
def toy_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(PLUGINS)]))


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path, toy_plugin, results_dir):
    pytest.importorskip("ray")
    from bench.executors import ExecutorOptions
    from bench.executors.driver import run_plan
    from bench.plan import resolve

    plan = resolve(str(SUITE), ["a", "b"], [0, 1])
    local_uri, ray_uri = f"sqlite:///{tmp_path / 'local.db'}", f"sqlite:///{tmp_path / 'ray.db'}"
    out, _ = run_plan(plan, "local", ExecutorOptions(workers=1), local_uri, progress=False)
    assert [o.status for o in out] == ["finished"] * 4
    t0 = time.monotonic()
    # Ray in its own driver process: an in-process ray.init leaves Ray's threads in pytest after
    # ray.shutdown, and later CPU-bound tests then ran minutes at 100 % system time.
    d = _driver(tmp_path, "ray", ray_uri, str(SUITE), "--methods", "a,b", "--seeds", "0,1",
                "--executor", "ray", "--cpus-per-cell", "1")
    assert d.wait(timeout=600) == 0, (tmp_path / "ray.log").read_text()[-3000:]
    local, ray_ = _metrics(local_uri), _metrics(ray_uri)
    assert len(local) == 4 and ray_ == local  # the same numbers, cell by cell
    _t, runs = _cells(ray_uri)
    assert len({r.data.tags[f"{TAG}pid"] for r in runs}) >= 1 and not {str(os.getpid()), str(d.pid)} & {
        r.data.tags[f"{TAG}pid"] for r in runs}  # ran in Ray worker processes, not in the driver
    _report("ray", cells=4, seconds=round(time.monotonic() - t0, 1), equal_to_local=True)


@pytest.mark.slow
def test_slurm_executor_through_submitit_local(tmp_path, toy_plugin, results_dir):
    pytest.importorskip("submitit")
    from bench.executors import ExecutorOptions
    from bench.executors.driver import run_plan
    from bench.plan import resolve

    plan = resolve(str(SUITE), ["a"], [0])
    uri = f"sqlite:///{tmp_path / 'slurm.db'}"
    out, parent = run_plan(plan, "slurm", ExecutorOptions(slurm_cluster="local", time_min=5,
                                                          folder=str(tmp_path / "jobs")), uri, progress=False)
    assert [o.status for o in out] == ["finished"]
    local_uri = f"sqlite:///{tmp_path / 'local.db'}"
    run_plan(plan, "local", ExecutorOptions(workers=1), local_uri, progress=False)
    assert _metrics(uri) == _metrics(local_uri) and len(_metrics(uri)) == 1
    assert list((tmp_path / "jobs").glob("*_result.pkl"))  # it went through submitit's job files


def test_driver_waits_for_a_foreign_lease_then_takes_it_over(tmp_path, toy_plugin, results_dir, monkeypatch):
    """A cell leased by a worker on another host: the driver waits; once the heartbeat is older than
    the lease timeout it takes the cell over (the foreign run ends FAILED with the reason) and runs it."""
    from bench import leases
    from bench.executors import ExecutorOptions
    from bench.executors.driver import run_plan
    from bench.plan import resolve

    monkeypatch.setenv("BENCH_LEASE_TIMEOUT", "4")  # restored after the test (run_plan sets it for the run)
    plan = resolve(str(SUITE), ["a"], [0])
    spec = plan.cells[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t = Tracker(uri)
    exp = t.experiment_id("exec_toy")
    foreign = t.start(exp, "a-s0", {f"{TAG}kind": "cell", f"{TAG}config_hash": spec.config_hash, f"{TAG}seed": 0,
                                    f"{TAG}method": "a", f"{TAG}host": "node-elsewhere", f"{TAG}pid": 4242,
                                    leases.STATE: leases.HELD, leases.HEARTBEAT: f"{time.time():.3f}"})
    t0 = time.monotonic()
    out, _ = run_plan(plan, "local", ExecutorOptions(workers=1), uri, progress=False, lease_timeout_s=4,
                      check_s=0.5)
    waited = time.monotonic() - t0
    assert [o.status for o in out] == ["finished"] and out[0].run_id != foreign
    old = t.client.get_run(foreign)
    assert old.info.status == "FAILED" and "no heartbeat for" in old.data.tags[f"{TAG}error"]
    assert "node-elsewhere" in old.data.tags[f"{TAG}error"]
    assert waited >= 3  # it did wait for the lease to expire
