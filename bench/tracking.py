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
from bench.locks import file_lock, hostname, store_lock_path  # noqa: E402

TAG = "bench."


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo>/results/mlflow.db`` (absolute)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = results_dir()
    root.mkdir(parents=True, exist_ok=True)
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
        mlflow.set_tracking_uri(self.uri)
        if self.uri.startswith("sqlite:///"):
            # The client opens the store, which creates its tables and runs MLflow's schema migrations
            # when the file is new; two processes doing that at once break it. One at a time, on <db>.lock.
            importlib.import_module("mlflow.store.tracking.sqlalchemy_store")  # seconds: not under the lock

            with file_lock(store_lock_path(self.uri)):
                self.client = MlflowClient(tracking_uri=self.uri)
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
