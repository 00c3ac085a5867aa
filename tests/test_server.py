"""`bench server` as a user runs it (`make mlflow-server`): PostgreSQL + an MLflow server on 127.0.0.1
that an MLflow client logs a run to; a signal stops both, and no PostgreSQL or MLflow process is left."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from loopback import answers, free_port

REPO = Path(__file__).resolve().parent.parent


_free_port, _answers = free_port, answers  # tests/loopback.py


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _postgres_binaries() -> str | None:
    """None when initdb and pg_ctl are found, else why not."""
    from bench.errors import BenchError
    from bench.server import pg_bin

    try:
        pg_bin("initdb"), pg_bin("pg_ctl")
    except BenchError as e:
        return str(e)
    return None


# SIGINT to the process group: Ctrl-C in the terminal running `make mlflow-server`. `bench ui` is tested with
# SIGTERM (tests/test_safety.py); both go through one handler, bench.ui_server.serve, tested with both signals
# in tests/test_ui_serve.py, so each server (35-45 s to start here) starts once.
@pytest.mark.parametrize("sig", [signal.SIGINT], ids=["SIGINT"])
def test_bench_server_serves_an_mlflow_client_and_stops_cleanly(sig):
    missing = _postgres_binaries()
    if missing:
        pytest.skip(f"PostgreSQL server binaries absent ({missing}); .ci/run installs them as root")
    import mlflow
    import psutil

    from bench.server import wait_healthy

    d = Path(tempfile.mkdtemp(prefix="bench-server-test-"))
    d.chmod(0o755)  # when run as root the cluster runs as the postgres user, which must reach its data directory
    port, pg_port = _free_port(), _free_port()
    log = d / "server.out"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "--results-dir", str(d / "res"), "server",
                             "--port", str(port), "--pg-port", str(pg_port), "--workers", "1"],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    pidfile = d / "res" / "postgres" / "postmaster.pid"
    kids: set[int] = set()
    postmaster = None
    try:
        try:
            wait_healthy(port, timeout=240, proc=proc)  # 25-45 s on 2 shared cores (initdb, migrations)
        except Exception as e:
            pytest.fail(f"bench server did not come up: {e}\n--- its output ---\n{log.read_text()[-3000:]}")
        kids = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}  # mlflow server, uvicorn
        postmaster = int(pidfile.read_text().split()[0])
        assert kids and _alive(postmaster)
        banner = log.read_text()
        assert f"MLflow server at http://127.0.0.1:{port}" in banner and f"127.0.0.1:{pg_port}/mlflow" in banner

        client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        eid = client.create_experiment("server-smoke")
        run = client.create_run(eid)
        client.log_metric(run.info.run_id, "loss", 0.25, step=3)
        note = d / "note.txt"
        note.write_text("artifact through the server")
        client.log_artifact(run.info.run_id, str(note))
        client.set_terminated(run.info.run_id)

        back = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{port}").get_run(run.info.run_id)
        assert back.info.experiment_id == eid and back.info.status == "FINISHED"
        assert back.data.metrics == {"loss": 0.25}
        assert [(m.value, m.step) for m in client.get_metric_history(run.info.run_id, "loss")] == [(0.25, 3)]
        assert list((d / "res" / "server-artifacts").rglob("note.txt")), "the server stores the artifact"

        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # what the terminal does on Ctrl-C
        else:
            proc.send_signal(sig)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 15
        while (left := [p for p in kids | {postmaster} if _alive(p)]) or _answers(port) or _answers(pg_port):
            assert time.monotonic() < deadline, (f"left behind: processes {left}, port {port} open={_answers(port)}, "
                                                 f"PostgreSQL port {pg_port} open={_answers(pg_port)}")
            time.sleep(0.2)
        assert not pidfile.exists(), "PostgreSQL was not shut down cleanly"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for p in kids:  # never leave a server behind, even when the test fails
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if postmaster is None and pidfile.exists():
            postmaster = int(pidfile.read_text().split()[0])
        if postmaster is not None and _alive(postmaster):
            os.kill(postmaster, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
        shutil.rmtree(d, ignore_errors=True)
