"""MLflow tracking: an embedded sqlite store under ``results/`` by default, any URI on request.

Layout: one experiment per suite; one parent run per ``bench run`` (tag ``bench.kind=suite``);
one child run per (method, seed) cell (tag ``bench.kind=cell``). Cells are found again by the
tags ``bench.config_hash`` and ``bench.seed``, which is how a rerun resumes. Every run carries the
tags ``bench.pid`` and ``bench.host`` of the process that started it (``bench doctor``).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

# Telemetry makes a DNS lookup at import time; the harness never talks to the network.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import mlflow  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from bench.context import results_dir  # noqa: E402
from bench.errors import BenchError, disk_full, free_space  # noqa: E402
from bench.locks import file_lock, hostname, store_lock_path  # noqa: E402

TAG = "bench."

SCHEMES = ("sqlite:///", "http://", "https://", "postgresql://", "postgresql+psycopg2://", "mysql://",
           "mysql+pymysql://", "databricks")
"""Tracking URIs the harness accepts; anything else is refused before MLflow sees it."""
CONNECT_TIMEOUT_S = 5.0
"""A tracking server that does not accept a TCP connection within this is reported unreachable."""
SQLITE_MAGIC = b"SQLite format 3\x00"


def check_uri(uri: str, what: str = "--tracking-uri") -> None:
    """Refuse a tracking URI the harness cannot use, with one message, before any work.

    Unknown schemes; an http(s) server that does not accept a connection within
    :data:`CONNECT_TIMEOUT_S` (MLflow itself would retry for minutes); a sqlite path whose
    directory is missing or which is not a regular file. ``what``: the option the message names."""
    if not uri.startswith(SCHEMES):
        raise BenchError(f"{what} {uri!r}: unknown scheme; use sqlite:///<absolute path>.db, "
                         "http(s)://host:port (an MLflow server) or postgresql://...")
    if uri.startswith(("http://", "https://")):
        import socket
        from urllib.parse import urlsplit

        u = urlsplit(uri)
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise BenchError(f"{what} {uri!r}: not a valid port") from None
        if not u.hostname:
            raise BenchError(f"{what} {uri!r}: no host")
        try:
            socket.create_connection((u.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as e:
            raise BenchError(f"tracking server {uri} is unreachable ({e.strerror or e}, waited at most "
                             f"{CONNECT_TIMEOUT_S:g} s); start it (`bench server`) or give another {what}") from None
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if path.exists() and not path.is_file():
            raise BenchError(f"store {path}: not a regular file; give a path to an sqlite file")


def sqlite_problem(path: Path) -> str | None:
    """Why the sqlite file at ``path`` is not a usable store (empty, not sqlite, damaged), or None.

    Read-only: the file is never modified (sqlite opened with ``mode=ro``)."""
    import sqlite3

    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    if not head:
        return "empty file (0 bytes): not an MLflow store (a creation that failed?); remove it and the next command creates the store"
    if head != SQLITE_MAGIC:
        return "not an sqlite database (wrong header); move it away and the next command creates a new store"
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            ok = con.execute("PRAGMA quick_check").fetchone()
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        finally:
            con.close()
    except sqlite3.Error as e:
        return f"a damaged sqlite database ({e}); restore it from a backup or move it away"
    if ok is None or ok[0] != "ok":
        return f"a damaged sqlite database (quick_check: {ok[0] if ok else '?'}); restore it from a backup or move it away"
    if "alembic_version" not in tables or "runs" not in tables:
        return "an sqlite database without MLflow's tables (a half-made store?); move it away and the next command creates the store"
    return None


def _disk_error(e: BaseException, where: Path) -> BenchError | None:
    """A full disk (ENOSPC, sqlite's "database or disk is full") as one clear error naming the directory."""
    if disk_full(e) is None:
        return None
    free = free_space(where)
    return BenchError(f"no space left on the device of {where} ({free}); the MLflow store needs a few MB "
                      "(a new store about 1 MB, each run a few kB): free some space and run again")


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo>/results/mlflow.db`` (absolute)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = results_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        err = _disk_error(e, root.parent)
        raise err or BenchError(f"results directory {root}: cannot create it ({e.strerror or e}); "
                                "give a writable one with --results-dir / BENCH_RESULTS_DIR") from None
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def artifact_root(uri: str) -> str:
    """Where experiments created by the harness store artifacts: beside a sqlite file, else results/."""
    if uri.startswith("sqlite:///"):
        base = Path(uri.removeprefix("sqlite:///")).parent
    else:
        base = results_dir()
    return (base / "mlartifacts").resolve().as_uri()


class Tracker:
    """Thin wrapper over :class:`MlflowClient` for the harness's run layout."""

    def __init__(self, tracking_uri: str | None = None):
        self.uri = tracking_uri or default_tracking_uri()
        check_uri(self.uri)
        mlflow.set_tracking_uri(self.uri)
        if self.uri.startswith("sqlite:///"):
            # The client opens the store, which creates its tables and runs MLflow's schema migrations
            # when the file is new; two processes doing that at once break it. One at a time, on <db>.lock.
            importlib.import_module("mlflow.store.tracking.sqlalchemy_store")  # seconds: not under the lock
            path = Path(self.uri.removeprefix("sqlite:///"))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with file_lock(store_lock_path(self.uri)):
                    if not path.exists():
                        _create_store(path)
                    else:
                        why = sqlite_problem(path)
                        if why:
                            raise BenchError(f"store {path}: {why} (`bench doctor` reports it)")
                    self.client = MlflowClient(tracking_uri=self.uri)
            except BenchError:
                raise
            except Exception as e:  # noqa: BLE001 - a full disk in any layer (OSError, sqlite, SQLAlchemy, MLflow)
                err = _disk_error(e, path.parent)
                if err is None:
                    raise
                raise err from None
        else:
            self.client = MlflowClient(tracking_uri=self.uri)

    def experiment_id(self, suite_name: str, create: bool = True) -> str | None:
        exp = self.client.get_experiment_by_name(suite_name)
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        # a tracking server (http) chooses the location itself: its served artifact root, shared by all workers
        loc = None if self.uri.startswith(("http://", "https://")) else f"{artifact_root(self.uri)}/{suite_name}"
        try:
            return self.client.create_experiment(suite_name, artifact_location=loc)
        except MlflowException:
            exp = self.client.get_experiment_by_name(suite_name)  # another process created it first
            if exp is None:
                raise
            return exp.experiment_id

    def cell_runs(self, experiment_id: str, config_hash: str | None = None, status: str | None = "FINISHED") -> list[Run]:
        """Cell runs of an experiment (newest first), optionally of one config hash and status."""
        clauses = [f"tags.`{TAG}kind` = 'cell'"]
        if config_hash:
            clauses.append(f"tags.`{TAG}config_hash` = '{config_hash}'")
        if status:
            clauses.append(f"attributes.status = '{status}'")
        return list(
            self.client.search_runs(
                [experiment_id], " and ".join(clauses), order_by=["attributes.start_time DESC"], max_results=50000
            )
        )

    def finished_cell(self, experiment_id: str, config_hash: str, seed: int) -> Run | None:
        for r in self.cell_runs(experiment_id, config_hash):
            if r.data.tags.get(f"{TAG}seed") == str(seed):
                return r
        return None

    def start(self, experiment_id: str, name: str, tags: dict[str, Any], parent_id: str | None = None) -> str:
        t = {k: str(v) for k, v in tags.items()}
        # who runs it: `bench doctor` marks a RUNNING run FAILED when this process is gone
        t.setdefault(f"{TAG}pid", str(os.getpid()))
        t.setdefault(f"{TAG}host", hostname())
        if parent_id:
            t["mlflow.parentRunId"] = parent_id
        return self.client.create_run(experiment_id, run_name=name, tags=t).info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric
        import time

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def _create_store(path: Path) -> None:
    """Create and migrate a new sqlite store all or nothing: built as a temporary file beside
    ``path`` and renamed into place only when complete, so a failure (a full disk, a kill) never
    leaves a half-made store behind (the temporary is removed)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
    tmp.unlink(missing_ok=True)
    try:
        MlflowClient(tracking_uri=f"sqlite:///{tmp}")
        os.replace(tmp, path)
    except BaseException:
        for p in (tmp, tmp.with_name(tmp.name + "-journal")):
            p.unlink(missing_ok=True)
        raise


def open_existing(tracking_uri: str | None, suite_name: str) -> "Tracker":
    """A :class:`Tracker` on a store that already holds runs of ``suite_name``; else :class:`BenchError`
    (nothing is created: reading a leaderboard never makes an empty store)."""
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise BenchError(f"suite {suite_name!r} has no runs: the store {uri.removeprefix('sqlite:///')} does not exist "
                         f"yet; run `bench run {suite_name}` first")
    tracker = Tracker(uri)
    if tracker.experiment_id(suite_name, create=False) is None:
        raise BenchError(f"suite {suite_name!r} has no runs in the store {uri}; run `bench run {suite_name}` first")
    return tracker


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> ``{"a.b.0.c": value}`` for MLflow params."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, (list, tuple)) and any(isinstance(x, (dict, list)) for x in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        out[prefix] = d
    return out
