"""A tracking server for many writers: ``mlflow server`` on 127.0.0.1 with a PostgreSQL backend store.

sqlite (the embedded default) serialises writers on one file and suits one machine; a cluster's
workers point at this server instead (``--tracking-uri http://127.0.0.1:PORT`` or through an SSH
tunnel / a reverse proxy you run). :class:`PostgresCluster` creates a PostgreSQL data directory with
``initdb`` (trust authentication, bound to 127.0.0.1 only) and starts it with ``pg_ctl``; the server
refuses to run as root, so when this process is root the binaries run as the ``postgres`` system user
(``runuser -u postgres``), and the data directory belongs to that user. Artifacts go to a file root
served by the MLflow server (``--artifacts-destination``), so workers need no shared file system.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

PG_USER = "postgres"
DB_NAME = "mlflow"


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server binary (``initdb``, ``pg_ctl``): on PATH, else /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]), reverse=True)
    if cands:
        return cands[0]
    raise BenchError(f"PostgreSQL server binary {name!r} not found (PATH, /usr/lib/postgresql/*/bin): "
                     "install it with `apt-get install -y postgresql`")


def _as_pg_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", PG_USER, "--", *cmd]


@dataclass
class PostgresCluster:
    """A PostgreSQL cluster in ``datadir`` listening on 127.0.0.1:``port`` (socket in ``datadir``)."""

    datadir: Path
    port: int = 5433

    @property
    def uri(self) -> str:
        """SQLAlchemy URI of the MLflow database (psycopg2 driver)."""
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def _run(self, cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run(_as_pg_user(cmd), capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise BenchError(f"{' '.join(cmd[:2])} failed (exit {r.returncode}): "
                             f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or ['no output']}")
        return r

    def init(self) -> None:
        """``initdb`` the data directory unless it holds a cluster already."""
        if (self.datadir / "PG_VERSION").exists():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.datadir, PG_USER, PG_USER)
        os.chmod(self.datadir, 0o700)
        self._run([pg_bin("initdb"), "-D", str(self.datadir), "-A", "trust", "-U", PG_USER, "--no-sync",
                   "-E", "UTF8"])

    def running(self) -> bool:
        r = subprocess.run(_as_pg_user([pg_bin("pg_ctl"), "-D", str(self.datadir), "status"]), capture_output=True)
        return r.returncode == 0

    def start(self) -> "PostgresCluster":
        """Init if needed, start (waits until it accepts connections), create the ``mlflow`` database."""
        self.init()
        if not self.running():
            opts = f"-k {self.datadir} -p {self.port} -h 127.0.0.1 -c max_connections=200"
            self._run([pg_bin("pg_ctl"), "-D", str(self.datadir), "-o", opts, "-l", str(self.datadir / "server.log"),
                       "-w", "-t", "60", "start"])
        self._create_db()
        return self

    def _create_db(self) -> None:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DB_NAME}")
        conn.close()

    def stop(self) -> None:
        if self.running():
            self._run([pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"])


def mlflow_server_cmd(backend_uri: str, artifacts: Path, port: int, workers: int = 2) -> list[str]:
    """The ``mlflow server`` command line: 127.0.0.1 only, artifacts served from ``artifacts``."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
            "--artifacts-destination", artifacts.resolve().as_uri(), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers)]


def server_env() -> dict[str, str]:
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def wait_healthy(port: int, timeout: float = 180, proc: subprocess.Popen | None = None) -> None:
    """Wait until the server at 127.0.0.1:``port`` answers ``/health`` (BenchError on timeout or exit)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"mlflow server exited with status {proc.returncode} before it was up")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise BenchError(f"mlflow server on 127.0.0.1:{port} not up within {timeout:.0f}s")
