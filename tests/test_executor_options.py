"""Executor choice and local worker sizing (bench.executors): flags > suite executor: block > env > local."""
import pytest

from bench.errors import BenchError, SuiteError
from bench.executors import ExecutorOptions, choose, merged
from bench.executors import local
from bench.suite import ExecutorSpec
from bench.suite_file import load_suite


def test_choice_precedence(monkeypatch):
    monkeypatch.delenv("BENCH_EXECUTOR", raising=False)
    assert choose(None) == "local"
    monkeypatch.setenv("BENCH_EXECUTOR", "ray")
    assert choose(None) == "ray"
    assert choose(None, ExecutorSpec(name="slurm")) == "slurm"
    assert choose("local", ExecutorSpec(name="slurm")) == "local"
    monkeypatch.setenv("BENCH_EXECUTOR", "dask")
    with pytest.raises(BenchError, match="executor 'dask'.*local, ray, slurm"):
        choose(None)


def test_flags_win_over_the_suite_block():
    o = merged(ExecutorOptions(workers=3), ExecutorSpec(workers=2, partition="gpu", gpus_per_cell=1))
    assert (o.workers, o.partition, o.gpus_per_cell) == (3, "gpu", 1)


def test_worker_threads_never_oversubscribe(monkeypatch):
    monkeypatch.setattr(local, "cores", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [local.worker_threads(w) for w in (1, 2, 3, 4, 16, 32)] == [16, 8, 5, 4, 1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the caller's cap
    assert local.worker_threads(2) == 2
    env = local.worker_env(4, "1")
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "4" and env["CUDA_VISIBLE_DEVICES"] == "1"


def test_default_workers(monkeypatch):
    monkeypatch.setattr(local, "cores", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local.default_workers() == 2
    monkeypatch.setattr(local, "cores", lambda: 64)
    assert local.default_workers() == local.MAX_DEFAULT_WORKERS
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert local.default_workers() == 3  # one per GPU
    assert isinstance(local.make_local(ExecutorOptions(workers=1)), local.InlineExecutor)


def test_suite_executor_block_is_strict(tmp_path):
    p = tmp_path / "s.yaml"
    base = ("name: s\ndataset: {name: fmnist}\nmethods: [{name: vq, adapter: vq}]\nmetrics: [{name: ar_loss}]\n")
    p.write_text(base + "executor: {name: ray, cpus_per_cell: 2}\n")
    s = load_suite(str(p))
    assert s.executor.name == "ray" and s.executor.cpus_per_cell == 2
    p.write_text(base + "executor: {name: ray, cpus: 2}\n")
    with pytest.raises(SuiteError, match="executor.cpus"):
        load_suite(str(p))
