"""Shared fixtures: isolated MLflow stores and caches, offline environment, one torch thread."""
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `bench` subprocesses the tests start: one thread each, as in-process (below); under pytest-xdist the
# cores are already shared by the test workers
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tests are tiny; extra threads only add contention on 2 shared cores

SUITES = Path(__file__).parent / "suites"


@pytest.fixture
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def cache(tmp_path):
    from bench.context import Cache

    return Cache(tmp_path / "cache")


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """Redirect results/ (leaderboards, cache, default store) into a temp dir."""
    import bench.context

    d = tmp_path / "results"
    monkeypatch.setattr(bench.context, "RESULTS_DIR", d)  # bench.context.results_dir() returns it
    return d
