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


_TRACKING_URI_AT_START = os.environ.get("MLFLOW_TRACKING_URI")


def _reset_tracking_uri():
    if _TRACKING_URI_AT_START is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = _TRACKING_URI_AT_START


@pytest.fixture(autouse=True)
def _no_tracking_uri_leaks():
    """MLflow's ``set_tracking_uri`` (which ``bench.tracking.Tracker`` calls) also sets the process's
    ``MLFLOW_TRACKING_URI``; reset it to the session's value before and after each test, so neither a
    test's store nor a module fixture's becomes another test's default (under pytest-xdist the next
    test on this worker is from any module)."""
    _reset_tracking_uri()
    yield
    _reset_tracking_uri()


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


# Under pytest-xdist the suite's wall time is bounded by its longest tests: start them first, so the short
# ones fill the cores around them instead of a long test starting last. The `slow` marker, then the modules
# whose tests start real processes (engines, servers, torchrun, kill tests); the order within a group is kept.
_PROCESS_MODULES = ("test_orphans", "test_executors", "test_store_races", "test_distributed_fid", "test_server",
                    "test_leases", "test_safety", "test_plugins", "test_ui_serve")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        if item.get_closest_marker("slow") is not None:
            return 0
        return 1 if item.module.__name__.rsplit(".", 1)[-1] in _PROCESS_MODULES else 2

    items.sort(key=rank)  # stable
